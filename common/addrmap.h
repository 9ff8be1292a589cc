/*
 * addrmap: what this machine's local names in an envelope become before they
 * reach a smarthost ([submit] root_alias and origin_domain; nullmailer's
 * adminaddr, dma's masquerading). Pure apart from addrmap_init's gethostname().
 *
 * The rule, for the envelope sender and each recipient (never the null sender):
 *   local     = no '@' (cron's "root"), or a domain that names this machine
 *               (ASCII case ignored): [general] hostname, gethostname(),
 *               "localhost", "localhost.localdomain".
 *   1. root_alias (recipients only): a local address whose local part is
 *      root, postmaster or mailer-daemon (any case) becomes root_alias.
 *   2. origin_domain (sender and recipients): any other local address
 *      becomes local-part@origin_domain.
 *   3. otherwise the address is kept; one without '@' stays unusable.
 * Header fields are not rewritten.
 * Owner: the caller (embedded); it points into the strings it was given.
 */
#ifndef PICKUPD_ADDRMAP_H
#define PICKUPD_ADDRMAP_H

#include <stdbool.h>

struct addrmap {
	const char *root_alias;	   /* NULL = root stays root */
	const char *origin_domain; /* NULL = local addresses keep their domain */
	const char *hosts[5];	   /* this machine's names, NULL-terminated */
	char sys_host[256];	   /* gethostname() */
};

/* Empty strings count as unset. hostname is [general] hostname (may be NULL). */
void addrmap_init(struct addrmap *m, const char *root_alias, const char *origin_domain,
		  const char *hostname);
/* Whether either rule is set (else addrmap_apply never changes anything). */
bool addrmap_active(const struct addrmap *m);
/*
 * Applies the rule to addr (an addr-spec, or a bare local part). Returns 1 with
 * a new string in *out_r, 0 when addr is kept as it is, -1 when addr has no
 * '@' and no rule qualifies it.
 */
int addrmap_apply(const struct addrmap *m, const char *addr, bool recipient, char **out_r);

#endif
