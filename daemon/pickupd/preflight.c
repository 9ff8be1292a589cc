/*
 * Purpose: the checks of preflight.h: the spool and pickup folders exist,
 * each relay's TLS files load and its secret file is safe (relay_prepare,
 * the very function start-up builds relays with), [metrics] listen resolves
 * (metrics_addrs, the listener's own), [control] socket can be placed, and
 * application users can read the config for pickupd-sendmail.
 * Owns: nothing; what it opens it closes.
 * Invariants: no side effect: nothing is created, bound, locked or written.
 * What only a running daemon meets (the spool lock, a port in use, another
 * pickupd on the control socket) is left to start-up.
 */
#include "daemon/pickupd/preflight.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/admin/ctl.h"
#include "daemon/admin/metrics.h"
#include "daemon/delivery/relay.h"

/* Each line of what as "PATH[:LINE]: line" in out. */
static void put_lines(struct buf *out, const char *path, int line, const char *what)
{
	const char *p = what;
	while (p && *p) {
		const char *nl = strchr(p, '\n');
		int n = nl ? (int)(nl - p) : (int)strlen(p);
		if (n) {
			if (line > 0)
				buf_printf(out, "%s:%d: %.*s\n", path, line, n, p);
			else
				buf_printf(out, "%s: %.*s\n", path, n, p);
		}
		p = nl ? nl + 1 : NULL;
	}
}

/* A directory that must exist; writable too when write is set. */
static void check_dir(struct buf *why, const char *what, const char *dir, bool write)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		buf_printf(why, "%s %s: %s\n", what, dir, strerror(errno));
		return;
	}
	if (write && faccessat(fd, ".", W_OK | X_OK, AT_EACCESS) < 0)
		buf_printf(why, "%s %s: not writable by uid %u: %s\n", what, dir,
			   (unsigned)geteuid(), strerror(errno));
	close(fd);
}

/* The spool: spool_open makes the directory itself when its parent exists. */
static void check_spool(struct buf *why, const char *dir)
{
	struct stat st;
	if (stat(dir, &st) == 0 || errno != ENOENT) {
		/* Not "writable": its state directories may be made beforehand. */
		check_dir(why, "[spool] dir", dir, false);
		return;
	}
	const char *slash = strrchr(dir, '/');
	char *parent = xstrndup(dir, slash && slash != dir ? (size_t)(slash - dir) : 1);
	struct buf inner = BUF_INIT;
	check_dir(&inner, "cannot be made: its parent", parent, true);
	if (inner.len)
		buf_printf(why, "[spool] dir %s %s", dir, inner.data);
	buf_deinit(&inner);
	free(parent);
}

int preflight_run(const struct config *cfg, struct buf *errors, struct buf *warnings)
{
	struct buf why = BUF_INIT;
	size_t before = errors->len;

	check_spool(&why, cfg->spool.dir);
	put_lines(errors, cfg->path, 0, why.data);
	buf_clear(&why);
	for (size_t i = 0; i < cfg->n_pickups; i++) {
		const struct config_pickup *p = &cfg->pickups[i];
		buf_printf(&why, "[pickup %s] dir", p->name);
		struct buf line = BUF_INIT;
		check_dir(&line, why.data, p->dir, false);
		put_lines(errors, cfg->path, p->line, line.data);
		buf_deinit(&line);
		buf_clear(&why);
	}
	for (size_t i = 0; i < cfg->n_relays; i++) {
		relay_prepare(&cfg->relays[i], NULL, &why);
		put_lines(errors, cfg->path, cfg->relays[i].line, why.data);
		buf_clear(&why);
	}
	if (cfg->metrics.listen && *cfg->metrics.listen) {
		struct sockaddr_storage ss[2];
		metrics_addrs(cfg->metrics.listen, ss, 2, &why);
		put_lines(errors, cfg->path, 0, why.data);
		buf_clear(&why);
	}
	ctl_check_path(cfg->control.socket, cfg->spool.dir, &why);
	put_lines(errors, cfg->path, 0, why.data);
	buf_clear(&why);

	/* pickupd-sendmail runs as the application's user and reads this file
	 * for the pickup folder: it holds no secret, so others may read it. */
	struct stat st;
	if (stat(cfg->path, &st) == 0 && !(st.st_mode & S_IROTH)) {
		buf_printf(&why,
			   "mode %03o: application users cannot read it, so pickupd-sendmail "
			   "fails for them; it holds no secrets: chmod 644 %s",
			   (unsigned)(st.st_mode & 0777), cfg->path);
		put_lines(warnings, cfg->path, 0, why.data);
	}
	buf_deinit(&why);
	return errors->len > before ? -1 : 0;
}
