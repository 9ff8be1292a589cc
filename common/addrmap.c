/*
 * Purpose: the [submit] rewrite of local envelope addresses (root_alias,
 * origin_domain), as one pure function the daemon's envelope derivation uses
 * for every pickup file (common/addrmap.h states the rule).
 * Owns: nothing; struct addrmap points into its caller's strings.
 * Invariants: a rewritten address is local-part@origin_domain or root_alias,
 * both checked at config time, so what comes out is as valid as what went in;
 * applying the map twice gives what applying it once gives.
 */
#include "common/addrmap.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/buf.h"

static const char *nonempty(const char *s)
{
	return s && s[0] ? s : NULL;
}

void addrmap_init(struct addrmap *m, const char *root_alias, const char *origin_domain,
		  const char *hostname)
{
	size_t n = 0;
	memset(m, 0, sizeof(*m));
	m->root_alias = nonempty(root_alias);
	m->origin_domain = nonempty(origin_domain);
	if (nonempty(hostname))
		m->hosts[n++] = hostname;
	/* Only an active map compares hosts: an inactive one (every pickup
	 * file) skips the uname(2) a message would otherwise cost. */
	if (addrmap_active(m) && gethostname(m->sys_host, sizeof(m->sys_host) - 1) == 0 &&
	    m->sys_host[0])
		m->hosts[n++] = m->sys_host;
	m->hosts[n++] = "localhost";
	m->hosts[n++] = "localhost.localdomain";
}

bool addrmap_active(const struct addrmap *m)
{
	return m->root_alias != NULL || m->origin_domain != NULL;
}

/* The '@' that separates local part and domain: the last one (a quoted local
 * part may hold others). */
static const char *domain_at(const char *addr)
{
	return strrchr(addr, '@');
}

static bool is_local(const struct addrmap *m, const char *addr)
{
	const char *at = domain_at(addr);
	if (at == NULL)
		return true;
	for (size_t i = 0; m->hosts[i]; i++)
		if (strcasecmp(at + 1, m->hosts[i]) == 0)
			return true;
	return false;
}

static bool is_admin(const char *local, size_t len)
{
	static const char *const names[] = {"root", "postmaster", "mailer-daemon"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (len == strlen(names[i]) && strncasecmp(local, names[i], len) == 0)
			return true;
	return false;
}

int addrmap_apply(const struct addrmap *m, const char *addr, bool recipient, char **out_r)
{
	*out_r = NULL;
	if (addr[0] == '\0' || !is_local(m, addr))
		return 0;
	const char *at = domain_at(addr);
	size_t local_len = at ? (size_t)(at - addr) : strlen(addr);
	if (recipient && m->root_alias && is_admin(addr, local_len)) {
		*out_r = xstrdup(m->root_alias);
		return 1;
	}
	if (m->origin_domain) {
		struct buf b = BUF_INIT;
		buf_printf(&b, "%.*s@%s", (int)local_len, addr, m->origin_domain);
		*out_r = buf_steal(&b);
		return 1;
	}
	return at ? 0 : -1;
}
