/*
 * ctl: the daemon's control socket, and the queue operations pickupctl
 * shares with it.
 *
 * Protocol: a unix stream socket ([control] socket, mode 0660). A client
 * writes one request line, the daemon answers one line, and the client may
 * send another or close:
 *
 *   status                  ok queued=N due=N sessions=N stopping=0|1 pid=N
 *                              version=V [relay=NAME,SESSIONS,PAUSED_SECONDS]...
 *   flush                   ok N deferred message(s) scheduled now
 *   retry|hold|release|delete|requeue ID
 *                           ok TEXT | error TEXT | busy TEXT
 *
 * Batches (pickupctl's several IDs, ALL, stdin, purge): one round trip for
 * up to 100,000 IDs. The request is a line, then COUNT lines of one ID each:
 *
 *   batch retry|hold|release|delete|requeue|purge COUNT
 *   ID
 *   ...
 *
 * and the answer one line per distinct ID (sorted by ID), then a last line:
 *
 *   ok|error|busy ID TEXT
 *   end OK FAILED BUSY
 *
 * or, when the request line itself is refused, a single "error TEXT". purge
 * is delete for badmail entries only. Each ID is planned on the loop
 * (ctl_spool_plan: the same preconditions pickupctl applies on the spool
 * directly), and the whole batch is applied in one thread-pool job with one
 * directory fsync per group (spool_move_many, spool_remove_many).
 *
 * "busy" means the message is in a transaction right now (its envelope is in
 * queue/ and a session or the delivery record owns it), or another operation
 * on it is in flight: the daemon refuses rather than pull the envelope from
 * under the session; the client may ask again once the transaction has ended
 * (pickupctl does, for --wait seconds).
 *
 * pickupctl --json (one document on stdout per run; strings are UTF-8, a
 * byte that is not part of valid UTF-8 becomes U+FFFD; times are ISO 8601
 * UTC "2026-11-23T10:00:00.123Z" or null):
 *   status   {"daemon": {"running": bool, and when running: "pid", "version",
 *             "stopping", "scheduled", "sessions", "relays": [{"name",
 *             "sessions", "paused", "paused_seconds"}]}, "counts": {STATE: N},
 *             "oldest_id", "oldest_age_seconds", "deferred_reasons": [{"reply",
 *             "messages"}], "pickup_stuck": [{"pickup", "dir", "error",
 *             "stuck_after_seconds", "files", "reasons": {"unreadable"|
 *             "unmatched"|"old"|"not_regular": {"count", "examples": [NAME]}}}]}
 *   list     [MESSAGE] where MESSAGE is {"id", "state", "arrival", "size",
 *             "sender", "recipients": [{"address", "status", "reply"}],
 *             "attempts", "next_attempt", "last_reply", "reason", "pickup",
 *             "file"}, or {"id", "state", "error"} for an unreadable envelope
 *   show     MESSAGE plus "headers": [LINE]
 *   summary  {"state": STATE|null, "bucket_minutes": [5, ..., 1280], "total":
 *             ROW, "domains": [ROW]} where ROW is {"domain", "total",
 *             "buckets": [N x 10]} (the last bucket: older than 1280 minutes)
 *   retry, hold, release, delete, requeue, purge
 *            {"command", "via": "daemon"|"spool", "results": [{"id", "result":
 *             "ok"|"error"|"busy", "message"}], "ok", "failed", "busy"}; purge
 *             adds "older_than_seconds" and "bytes" (content removed)
 *   flush    {"command": "flush", "via", "result", "message", "messages"}
 *   test-relay {"command": "test-relay", "relay", "ok", "exit_status",
 *             "transcript": [LINE]}
 * Owner of struct ctl: main.c.
 */
#ifndef PICKUPD_CTL_H
#define PICKUPD_CTL_H

#include <stdbool.h>

#include "common/buf.h"
#include "daemon/core/pickupd.h"
#include "spool/spool.h"

#define CTL_MAX_LINE 512

/* Takes the daemon's exclusive flock(2) on the spool directory, held until
 * exit; pickupctl works on the spool directly only when it can take it.
 * Called before recovery. Waits a few seconds for a pickupctl that holds it
 * for one operation; -1 with a line in errors when another holds it. */
int ctl_lock_spool(struct spool *sp, struct buf *errors);
/* What can be checked of [control] socket before binding it: set, short
 * enough for sun_path, in an existing directory (or made_dir, which start-up
 * creates first: the spool). -1 with a line in errors. */
int ctl_check_path(const char *path, const char *made_dir, struct buf *errors);
/* Binds the socket (replacing a stale one that nobody answers on) and
 * listens. NULL with a line in errors when it cannot. */
struct ctl *ctl_start(struct pickupd *pd, struct buf *errors);
/* Shutdown: stops listening, closes clients once their request is done;
 * when every handle is closed and no operation is in flight, cb(arg) runs,
 * once. */
void ctl_close(struct ctl *c, pickupd_closed_cb cb, void *arg);
void ctl_free(struct ctl *c);

#endif
