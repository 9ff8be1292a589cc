/*
 * Purpose: queue operations that the daemon's control socket (ctl.c) and
 * pickupctl (on the spool directly, daemon down) both perform.
 * Owns: nothing. Plain spool calls, no libuv, so pickupctl links only this.
 * Invariants: every state change is one spool_move/spool_env_write, durable
 * before it returns.
 */
#include "daemon/ctl_spool.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int ctl_spool_locate(struct spool *sp, const char *id)
{
	struct stat st;
	for (int s = 0; s < SPOOL_N_STATES; s++)
		if (fstatat(sp->state_fd[s], id, &st, AT_SYMLINK_NOFOLLOW) == 0)
			return s;
	errno = ENOENT;
	return -1;
}

int ctl_spool_requeue(struct spool *sp, const char *id, struct buf *why)
{
	struct spool_env e;
	struct buf reason = BUF_INIT;
	int rc = -1;
	if (spool_env_read(sp, SPOOL_BADMAIL, id, &e, &reason) < 0) {
		buf_printf(why, "%s: %s", id, reason.data ? reason.data : strerror(errno));
		buf_deinit(&reason);
		return -1;
	}
	if (e.sender == NULL || e.n_rcpts == 0) {
		buf_printf(why,
			   "%s was refused at pickup (%s): it has no usable envelope; fix the file "
			   "and drop it into the pickup folder again",
			   id, e.reason ? e.reason : "no reason recorded");
		goto out;
	}
	size_t n = 0;
	for (size_t i = 0; i < e.n_rcpts; i++) {
		if (e.rcpts[i].status != RCPT_SENT) {
			e.rcpts[i].status = RCPT_PENDING;
			n++;
		}
	}
	if (n == 0) {
		buf_printf(why, "%s has no recipient left to send to", id);
		goto out;
	}
	free(e.reason);
	e.reason = NULL;
	e.attempts = 0;
	e.next_ms = 0;
	/* Rewritten where it is, then one rename: a crash leaves it in one place. */
	if (spool_env_write(sp, SPOOL_BADMAIL, &e) < 0 ||
	    spool_move(sp, id, SPOOL_BADMAIL, SPOOL_QUEUE) < 0) {
		buf_printf(why, "%s: cannot requeue: %s", id, strerror(errno));
		goto out;
	}
	rc = 0;
out:
	spool_env_deinit(&e);
	buf_deinit(&reason);
	return rc;
}
