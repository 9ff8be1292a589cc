/*
 * ctl_spool: the queue operations shared by the control socket (ctl.c) and
 * pickupctl, and what both read from the spool and the pickup folders for
 * operators (badmail ages, stuck pickup files). Synchronous; the daemon runs
 * them on its thread pool.
 */
#ifndef PICKUPD_CTL_SPOOL_H
#define PICKUPD_CTL_SPOOL_H

#include <stdint.h>

#include "common/buf.h"
#include "common/config.h"
#include "spool/spool.h"

/* Where the envelope of id is, or -1 (errno ENOENT) when it is in no state
 * directory. */
int ctl_spool_locate(struct spool *sp, const char *id);
/*
 * Puts a badmail message back into queue/: recipients not yet sent become
 * pending, attempts start again, the reason is cleared; written durably in
 * badmail/ first, then renamed into queue/. Refuses (with a reason) a file
 * refused at pickup, which has no usable envelope: such a file is fixed and
 * dropped into the pickup folder again. 0, or -1 with why appended.
 */
int ctl_spool_requeue(struct spool *sp, const char *id, struct buf *why);

/* ---- commands over many IDs ------------------------------------------------------------ */

/* purge is delete restricted to badmail/ (an entry requeued meanwhile stays). */
enum ctl_cmd { CTL_RETRY, CTL_HOLD, CTL_RELEASE, CTL_DELETE, CTL_REQUEUE, CTL_PURGE, CTL_N_CMDS };
extern const char *const ctl_cmd_names[CTL_N_CMDS];
/* -1 when unknown. */
int ctl_cmd_from_name(const char *name);

enum ctl_act { CTL_ACT_NONE, CTL_ACT_MOVE, CTL_ACT_REMOVE, CTL_ACT_REQUEUE };
enum ctl_result { CTL_PENDING, CTL_OK, CTL_FAILED, CTL_BUSY };
extern const char *const ctl_result_names[4]; /* "pending" "ok" "error" "busy" */

/* One ID of a command. Owner: the batch that holds it (ctl_item_deinit). */
struct ctl_item {
	char id[SPOOL_ID_LEN + 1];
	int from; /* state it was found in; -1 = in none */
	enum ctl_act act;
	enum spool_state to; /* CTL_ACT_MOVE */
	enum ctl_result result;
	char *text; /* one line: "ID held", "ID is in hold, not badmail" */
};
void ctl_item_set(struct ctl_item *it, enum ctl_result r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void ctl_item_deinit(struct ctl_item *it);

/*
 * Decides from it->from what cmd does to the message: an act to perform
 * (result stays CTL_PENDING), or a final result with its text (wrong state,
 * no such message, nothing to do). A deferred message's retry is a move to
 * queue/; the daemon reschedules it in memory instead.
 */
void ctl_spool_plan(enum ctl_cmd cmd, struct ctl_item *it);
/*
 * Performs the pending acts on the spool, batched so that each directory is
 * fsynced once per (act, from, to) group; sets each result and text.
 */
void ctl_spool_apply(struct spool *sp, enum ctl_cmd cmd, struct ctl_item *items, size_t n);
/* The past participle of cmd for texts and logs: "held", "deleted", ... */
const char *ctl_cmd_done(enum ctl_cmd cmd);

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
