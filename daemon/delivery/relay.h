/*
 * relay: the relay session pool. Sessions to each [relay NAME] (up to
 * max_sessions, reused for max_messages_per_session) pull due messages from
 * the schedule (fewer while the server refuses extra connections:
 * concurrency feedback); each transaction's per-recipient results go
 * through the failure policy (policy.h), and what it decides is recorded
 * durably in the spool before anything else happens to the message.
 * Owner: main.c.
 */
#ifndef PICKUPD_RELAY_H
#define PICKUPD_RELAY_H

#include <stdbool.h>

#include "daemon/core/pickupd.h"
#include "daemon/smtp/smtpc.h"

/* What the pool hands to its owner (main.c wires them). */
struct relay_pool_cbs {
	/* A message left the spool for good (its last recipient done): the
	 * disk has room it did not have before. */
	void (*removed)(void *arg);
	/* Message id's envelope in queue/ is torn (a lazy first envelope never
	 * completely written): its content is to be ingested again. */
	void (*torn)(void *arg, const char *id);
	/* A message's handoff content was taken for sending, or released
	 * once it was sent: ingestion may be waiting for that room
	 * (intake/pace.c). */
	void (*handoff_progress)(void *arg);
	void *arg;
};

struct relay_pool *relay_pool_new(struct pickupd *pd, const struct relay_pool_cbs *cbs,
				  struct buf *errors);
void relay_pool_free(struct relay_pool *pool);
/* SIGHUP: relays of the new configuration (kept by name: sessions and
 * state stay; new settings apply to new sessions; removed ones finish their
 * transaction and quit). -1 with errors when a new relay cannot be set up:
 * the running relays are kept then. The pool takes references to cfg. */
int relay_pool_reload(struct relay_pool *pool, struct config *cfg, struct buf *errors);
/* Something may have become due: give work to sessions, open more if allowed. */
void relay_pool_wake(struct relay_pool *pool);
struct handoff_offer;
/* Loop thread, pd->offer_take and pd->offer_done (daemon/core/handoff.h): a
 * message offered before its claim is durable is sent at once when a
 * session is idle and nothing else is due, its final dot held; once the
 * ingest job is over it goes (queued, marked) or the transaction ends unsent
 * and unrecorded (not queued). */
bool relay_pool_take_offer(struct pickupd *pd, struct handoff_offer *o);
void relay_pool_offer_done(struct pickupd *pd, struct handoff_offer *o, bool queued);
/* Ends every relay's pause now (pickupctl flush: the operator fixed the
 * cause); why goes to the log. Wakes the pool. */
void relay_pool_unpause(struct relay_pool *pool, const char *why);
/* Shutdown: QUIT idle sessions, let busy ones finish; once no session,
 * load, record or probe is left, closes the pool's handles, then cb(arg)
 * runs, once. */
void relay_pool_close(struct relay_pool *pool, pickupd_closed_cb cb, void *arg);
/* Shutdown deadline passed: abort what is still in flight (it stays queued). */
void relay_pool_abort(struct relay_pool *pool);

#define RELAY_N_CLASSES (SMTPC_PERM + 1)

/* What pickupctl status and the metrics show of one relay. */
struct relay_info {
	const char *name;
	unsigned sessions;	 /* open or opening */
	int64_t paused_until_ms; /* 0 or in the past: not paused */
	unsigned limit;		 /* sessions allowed now (concurrency feedback) */
	unsigned max_sessions;	 /* the configured ceiling */
	/* Sessions that failed before they could send, by enum smtpc_class
	 * (RELAY_N_CLASSES entries; [SMTPC_OK] stays 0). */
	const uint64_t *setup_failures;
};
/* Fills up to max entries in configured order; returns the number of relays. */
size_t relay_pool_info(const struct relay_pool *pool, struct relay_info *out, size_t max);

/* What a [relay] section needs from the machine, checked as start-up,
 * reload and --check-config all check it (preflight.c): its TLS files load
 * (the context is kept in *ctx_r when ctx_r is not NULL) and its secret file
 * is safe to read. -1 with lines in errors. */
int relay_prepare(const struct config_relay *cfg, SSL_CTX **ctx_r, struct buf *errors);

#endif
