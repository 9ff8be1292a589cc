/*
 * ctl_spool: what the control socket (ctl.c), the metrics and pickupctl
 * read from the spool and the pickup folders for operators (badmail ages,
 * stuck pickup files). Synchronous; the daemon runs them on its thread
 * pool. The commands on messages themselves are spool/ops.c's.
 */
#ifndef PICKUPD_CTL_SPOOL_H
#define PICKUPD_CTL_SPOOL_H

#include <stdint.h>

#include "common/buf.h"
#include "common/config.h"
#include "spool/spool.h"

/* ---- badmail retention ------------------------------------------------------------------- */

/* A badmail entry: since when (the envelope's ctime: the rename or write
 * that put it there) and its content's size. */
struct ctl_badmail {
	char id[SPOOL_ID_LEN + 1];
	int64_t since_ms;
	uint64_t bytes;
};
/* Every badmail entry, unsorted. 0 or -1 (errno). */
int ctl_spool_badmail(struct spool *sp, struct ctl_badmail **v_r, size_t *n_r);

/* ---- stuck pickup files ------------------------------------------------------------------ */

/*
 * Files that stay in a pickup folder: unreadable (pickupd cannot open them),
 * unmatched (not taken by `match`, or a writer's temp file left old), old
 * (a candidate, readable, unclaimed for ctl_stuck_age_ms: a writer holds
 * it, or pickupd is not running), not_regular (a directory named like a
 * message). A few names per reason are kept as examples.
 */
enum ctl_stuck_reason { STUCK_UNREADABLE, STUCK_UNMATCHED, STUCK_OLD, STUCK_NOT_REGULAR, STUCK_N };
extern const char *const ctl_stuck_names[STUCK_N];
#define CTL_STUCK_EXAMPLES 3
struct ctl_stuck {
	size_t count[STUCK_N];
	char *examples[STUCK_N][CTL_STUCK_EXAMPLES];
	int err; /* errno when the folder cannot be read; 0 */
};
/* How long a file may stay before it counts as stuck: 5 minutes, or more
 * when settle_time and rescans take longer. */
int64_t ctl_stuck_age_ms(const struct config_pickup *pk);
/* Scans pk->dir. Always fills r (r->err says when the folder is unreadable). */
void ctl_spool_stuck(const struct config_pickup *pk, int64_t now_ms, struct ctl_stuck *r);
void ctl_stuck_deinit(struct ctl_stuck *r);

#endif
