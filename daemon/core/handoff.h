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
#define HANDOFF_BUDGET (1024 * 1024)
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
/*
 * An offer: a lone file's message, handed to delivery by its ingest job
 * before its claim is durable (the latency path), so that the transaction
 * runs while the content is flushed; its content is marked first (recovery
 * names it as one that may arrive twice), and its outcome is recorded once
 * the job is over (handoff_offer_done). Embedded in the ingest job. The job posts it
 * once (pool thread); the loop takes it (delivery starts the transaction at
 * once on an idle session) or leaves it; the job then closes it, and knows
 * from that whether it was taken: a taken message's envelope is written
 * marked as being sent, since the transaction is already under way.
 */
enum { OFFER_OPEN, OFFER_TAKEN, OFFER_CLOSED };
struct handoff_offer {
	struct handoff
	    *h;	      /* a copy of the envelope and the whole content; the taker's once taken */
	int state;    /* OFFER_*, atomic: taken by the loop or closed by the job, first wins */
	bool posted;  /* in pd's list of offers, not yet looked at */
	void *taker;  /* the loop's, once taken */
	int mark_err; /* set by the job: the mark failed (errno) */
	struct handoff_offer *next;
};

/* Pool thread: o->h set; the loop looks at it soon (pd->offer_take). */
void handoff_offer_post(struct pickupd *pd, struct handoff_offer *o);
/* Pool thread, once the claim is durable: true when nobody took it (it can
 * no longer be), false when the loop did. */
bool handoff_offer_close(struct handoff_offer *o);
/* Loop thread: true when the offer was still open (now taken). */
bool handoff_offer_take(struct handoff_offer *o);
/* Loop thread, when the job is over: an offer not looked at yet is
 * forgotten; one taken is finished (pd->offer_done, queued: the claim and
 * the envelope are complete, else the message was not queued). */
void handoff_offer_done(struct pickupd *pd, struct handoff_offer *o, bool queued);
/* Loop thread: start (at start-up) and close (stopping) the offers' wake-up. */
void handoff_offers_start(struct pickupd *pd);
void handoff_offers_close(struct pickupd *pd);

/* Any thread; NULL is fine. Gives its bytes back to the budget. */
void handoff_free(struct handoff *h);
/* Gives the content back to the budget early (the transaction that used it
 * is over); the envelope stays. */
void handoff_drop_content(struct handoff *h);

#endif
