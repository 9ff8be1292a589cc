/*
 * ctl_proto: the control socket protocol, written once for both ends: the
 * daemon (ctl.c) formats answers and parses requests with it, the clients
 * (ctl_client.c: pickupctl, pickupd-sendmail -q) format requests and parse
 * answers with it. No I/O here.
 *
 * A unix stream socket ([control] socket, mode 0660). A client writes one
 * request line, the daemon answers, and the client may send another or
 * close. TEXT is one line for people (a newline inside becomes a space).
 *
 *   status                   ok queued=N sessions=N stopping=0|1 pid=N version=V
 *                               [relay=NAME,SESSIONS,PAUSED,LIMIT,MAX]...
 *                            (PAUSED: seconds the relay stays paused, 0 = not;
 *                            LIMIT: its concurrency limit now, MAX: max_sessions;
 *                            NAME may hold commas: it ends at the fourth comma
 *                            from the end)
 *   flush                    ok N deferred message(s) scheduled now
 *   CMD ID                   ok TEXT | error TEXT | busy TEXT
 *                            CMD: retry|hold|release|delete|requeue
 *
 * Batches (pickupctl's several IDs, ALL, stdin, purge): one round trip for
 * up to CTL_MAX_BATCH IDs. The request is a line, then COUNT lines of one ID:
 *
 *   batch CMD COUNT          CMD: retry|hold|release|delete|requeue|purge
 *   ID
 *   ...
 *
 * and the answer one line per distinct ID (sorted by ID), then a last line:
 *
 *   ok|error|busy ID TEXT
 *   end OK FAILED BUSY
 *
 * or, when the request line itself is refused, a single "error TEXT" (which
 * never starts with a queue ID). purge is delete for badmail entries only.
 * What each command may do from which state: spool_op_plan (spool/ops.c).
 *
 * Anything else is answered "error TEXT". "busy" means the message is in a
 * transaction right now (its envelope is in queue/ and a session or the
 * delivery record owns it), another operation on it is in flight, or the
 * daemon is stopping: the client may ask again later (pickupctl does, for
 * --wait seconds).
 */
#ifndef PICKUPD_CTL_PROTO_H
#define PICKUPD_CTL_PROTO_H

#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"
#include "spool/spool.h"

#define CTL_MAX_LINE   512    /* a request line, newline included */
#define CTL_MAX_BATCH  100000 /* IDs in one batch request */
#define CTL_MAX_RELAYS 64     /* relays in one status answer */

/* The answer words, indexed by enum spool_op_result: "pending" is never sent. */
extern const char *const ctl_result_names[4]; /* "pending" "ok" "error" "busy" */

/* ---- requests (daemon side: parse) ------------------------------------------------------ */

enum ctl_verb { CTL_STATUS, CTL_FLUSH, CTL_ONE, CTL_BATCH };
struct ctl_request {
	enum ctl_verb verb;
	enum spool_op op; /* CTL_ONE, CTL_BATCH */
	const char *id;	  /* CTL_ONE: the argument as sent (NULL: none); unchecked */
	size_t count;	  /* CTL_BATCH: ID lines that follow */
};
/*
 * Parses one request line (no newline), tokenising it in place. 0, or -1
 * with the text of the error answer in *error_r.
 */
int ctl_parse_request(char *line, struct ctl_request *rq, const char **error_r);

/* ---- requests (client side: format) ----------------------------------------------------- */

/* "batch CMD COUNT\n"; then ctl_put_id for each ID. */
void ctl_put_batch_head(struct buf *out, enum spool_op op, size_t count);
void ctl_put_id(struct buf *out, const char *id);

/* ---- answers (daemon side: format) ------------------------------------------------------ */

/* "ok|error|busy TEXT\n". */
void ctl_put_answer(struct buf *out, enum spool_op_result r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* One batch line "ok|error|busy ID TEXT\n". */
void ctl_put_item(struct buf *out, const struct spool_op_item *it);
/* "end OK FAILED BUSY\n". */
void ctl_put_end(struct buf *out, size_t ok, size_t failed, size_t busy);

/* ---- answers (client side: parse) ------------------------------------------------------- */

/* "ok TEXT": the result (SPOOL_OP_PENDING when the word is none of the
 * three) and the text after the word ("" when none). */
enum spool_op_result ctl_parse_answer(const char *line, const char **text_r);
/* True once data holds a whole batch answer: its "end" line, or a first
 * line that refuses the request itself. */
bool ctl_batch_answered(const char *data, size_t len);
/*
 * One line of a batch answer, without its newline: 1 an item (result, id,
 * text), 0 the "end" line, -1 neither.
 */
int ctl_parse_item(const char *line, enum spool_op_result *r, char id[SPOOL_ID_LEN + 1],
		   const char **text_r);

/* ---- status ----------------------------------------------------------------------------- */

struct ctl_status {
	long pid;
	char version[32];
	size_t queued; /* messages the schedule holds */
	unsigned sessions;
	bool stopping;
	struct ctl_relay_status {
		char name[128];
		unsigned sessions;
		long paused_s;
		unsigned limit, max_sessions;
	} relays[CTL_MAX_RELAYS];
	size_t n_relays;
};
/* The status answer line, newline included. */
void ctl_put_status(struct buf *out, const struct ctl_status *st);
/* Parses a status answer line: 0, or -1 when it is not "ok ...". Unknown
 * fields are skipped (a newer daemon may add some). */
int ctl_parse_status(const char *line, struct ctl_status *st);

#endif
