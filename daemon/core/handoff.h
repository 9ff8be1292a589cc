/*
 * handoff: what ingest built for a message it has just queued (the envelope,
 * and the whole content when it is small), handed to delivery in memory so
 * that sending a fresh message reads and parses nothing again. The files in
 * queue/ and data/ stay the truth: a handoff is a copy of them, used once,
 * for the message's first load; messages loaded later (deferred, recovered,
 * or over the budget) read the files. All handoffs alive share one byte
 * budget (HANDOFF_BUDGET), so memory stays bounded however many are queued.
 * Owner: the ingest job, then the schedule (sched_add_handoff), then the
 * delivery that takes it.
 */
#ifndef PICKUPD_HANDOFF_H
#define PICKUPD_HANDOFF_H

#include <stddef.h>

#include "daemon/core/pickupd.h"

/* Bytes all handoffs may hold together (envelopes and contents). */
#define HANDOFF_BUDGET (512 * 1024)
/* A content larger than this is read from data/ when it is sent. */
#define HANDOFF_MAX_CONTENT (64 * 1024)

struct handoff {
	struct pickupd *pd; /* whose budget it is charged to */
	size_t charge;	    /* bytes charged */
	struct spool_env env;
	char *content; /* the whole content, or NULL: read it from data/ */
	size_t content_len;
	struct handoff *next; /* in the schedule's table */
};

/* Any thread. A handoff holding *env (moved: *env is left empty) when the
 * budget has room for it, else NULL (*env untouched). content, when not
 * NULL, points at a buffer from xmalloc with the whole content (len bytes):
 * taken over too (set to NULL) when it is small and the budget has room. */
struct handoff *handoff_new(struct pickupd *pd, struct spool_env *env, char **content, size_t len);
/* Any thread; NULL is fine. Gives its bytes back to the budget. */
void handoff_free(struct handoff *h);
/* Gives the content back to the budget early (the transaction that used it
 * is over); the envelope stays. */
void handoff_drop_content(struct handoff *h);

#endif
