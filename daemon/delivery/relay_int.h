/*
 * Shared inside the relay module only (relay.c: the session pool and
 * dispatch; record.c: the load and record jobs and bounce pacing). Owner of
 * every struct here: the pool (relay.c), but for struct delivery, which
 * record.c creates and frees.
 */
#ifndef PICKUPD_RELAY_INT_H
#define PICKUPD_RELAY_INT_H

#include "daemon/delivery/policy.h"
#include "daemon/delivery/relay.h"
#include "daemon/delivery/sched.h"
#include "daemon/smtp/credprobe.h"
#include "daemon/smtp/secret.h"

struct relay;

struct session {
	struct relay *relay;
	struct smtpc *smtpc;
	struct delivery *d;	     /* the message being loaded for it, or its transaction */
	struct delivery *d_next;     /* the next, loaded or sent behind d's final dot */
	bool ready;		     /* reached READY at least once */
	bool setup_told;	     /* a delivery's delays= has counted the setup time */
	int64_t opened_ms, ready_ms; /* connection setup, for delays= */
	unsigned gen;		     /* the relay's settings generation it was opened with */
	unsigned char secret_fp[SECRET_FP_LEN]; /* of the password file it was opened with */
	/* References to what smtpc was given (settings, TLS context), dropped
	 * once it has closed: a reload may replace the relay's meanwhile. */
	struct config *conf;
	SSL_CTX *ssl_ctx;
	struct session *next;
};

struct relay {
	struct relay_pool *pool;
	const struct config_relay *cfg; /* in conf */
	struct config *conf;		/* a reference */
	SSL_CTX *ssl_ctx;		/* a reference; NULL when tls = none */
	struct session *sessions;
	unsigned n_sessions;
	unsigned n_connecting;
	unsigned failures; /* consecutive sessions that failed before READY */
	uint64_t setup_failures[RELAY_N_CLASSES]; /* sessions that never became ready, by class */
	int64_t paused_until_ms;
	int64_t next_send_ms; /* rate_limit: messages evenly spaced */
	bool retired;	      /* removed by a reload: finishes, takes no new work */
	unsigned gen;	      /* bumped by a reload: older sessions take no new work */
	struct relay *next_retired;
	/* Concurrency feedback (policy_relay_lowers_limit): a connection
	 * refused while sessions work lowers the limit to those sessions;
	 * POLICY_GROW_AFTER deliveries raise it by one again. */
	unsigned limit;		  /* sessions allowed now; 0 = max_sessions */
	unsigned limit_successes; /* deliveries since the limit last changed */
	/* AUTH pause: ends when the credentials change (or reload, flush). */
	bool auth_paused;
	unsigned auth_failures;		      /* in a row: spaces the command probes */
	unsigned char auth_fp[SECRET_FP_LEN]; /* the refused file, or the command's output */
	bool auth_fp_set;		      /* (a command's: after its first probe) */
	struct credprobe *probe;	      /* password_command running, or NULL */
	int64_t probe_at_ms, probe_deadline_ms;
};

/* Deliveries waiting for a batch job, first in first out (record.c). */
struct delivery_list {
	struct delivery *head, *tail;
	size_t n;
};

struct relay_pool {
	struct pickupd *pd;
	struct relay_pool_cbs cbs; /* given by the owner */
	struct relay **relays;
	size_t n_relays;
	struct relay *retired;	/* relays a reload removed, until their sessions end */
	int64_t next_bounce_ms; /* [bounce] rate_limit */
	uv_timer_t pause_timer;
	uv_timer_t cred_timer; /* looks at AUTH-paused relays' credentials */
	unsigned probes_in_flight;
	unsigned loads_in_flight;
	unsigned records_in_flight;
	/* Removals waiting for a removal job: one job at a time while fewer
	 * than a batch wait, so that those arriving meanwhile share its fsync of
	 * data/; more (up to REMOVE_JOBS) when a full batch waits, so the list
	 * cannot grow while jobs wait behind ingest in the pool's queue. */
	struct delivery_list rm;
	unsigned rm_running;
	/* Marks waiting for the mark job (one at a time; record.c). */
	struct delivery_list mk;
	bool mk_running;
	bool stopping;
	bool closed_timer;
	int timers_open;
	pickupd_closed_cb closed_cb; /* relay_pool_close's, until it is called */
	void *closed_arg;
};

/* What loading a due message came to (load_fn, on the thread pool). */
enum load_result {
	LOAD_OK,	  /* queued, marked, its content open: it can be sent */
	LOAD_NONE,	  /* gone meanwhile, or the spool is read-only: nothing to do */
	LOAD_MOVE_FAILED, /* deferred/ -> queue/ failed (err) */
	LOAD_CORRUPT,	  /* the envelope is damaged (why); moved to badmail */
	LOAD_TORN,	  /* a lazy first envelope never completely written (why) */
	LOAD_UNREADABLE,  /* the envelope cannot be read now (why) */
	LOAD_NO_CONTENT,  /* the content cannot be opened (err); moved to badmail */
	LOAD_MARK_FAILED, /* the being-sent mark cannot be set (err) */
};

/* One message from dispatch until its outcome is on disk. */
struct delivery {
	struct job job; /* the load, then the record */
	job_fn done;	/* the job's own done (delivery_job) */
	struct relay_pool *pool;
	struct session *s;	    /* the session it is loaded for; NULL once that closed */
	struct sched_item item;	    /* what was due */
	struct handoff *handoff;    /* a fresh message's envelope from ingest, or NULL */
	char *read_content;	    /* a small content load_fn read whole (not a handoff's) */
	enum load_result loaded;    /* set by load_fn */
	char *load_why;		    /* LOAD_CORRUPT, LOAD_TORN, LOAD_UNREADABLE: the reason */
	bool defer;		    /* no relay can take it (defer_due): record defer_cls */
	enum smtpc_class defer_cls; /* with the reply defer_why */
	char *defer_why;
	struct spool_env env;
	struct smtpc_txn txn;
	char peer[160];
	char relay_name[64];	   /* the [relay NAME] section, or "none" */
	int64_t dispatch_ms;	   /* loaded for this attempt */
	int64_t setup_ms;	   /* connection setup this attempt waited for (delays= c) */
	int64_t done_ms;	   /* the attempt's outcome was known */
	struct policy_outcome out; /* what the attempt comes to (policy.c) */
	int64_t bounce_due;	   /* when the notification goes (bounces are rate limited) */
	char bounce_id[SPOOL_ID_LEN + 1];
	int bounce_err;
	int err;
	/* Sent straight from its handoff: the mark job runs beside the
	 * transaction (the final dot waits for it); a transaction that ended
	 * before it (ended) goes on when it is back. */
	bool marking;
	bool ended;
	/* Taken from an offer (handoff.h): its record waits for the ingest
	 * job (claim_pending); discard: its claim never completed, so it ends
	 * unrecorded. */
	bool claim_pending;
	bool discard;
	struct handoff_offer *offer;
	struct delivery *next; /* in a pool's delivery_list (one at a time) */
};

/* record.c: a delivery's load and record jobs. */

/* A delivery for due item it; relay_name "none" until a session takes it. */
struct delivery *relay__delivery_new(struct relay_pool *pool, const struct sched_item *it);
/* Starts loading a due message on the thread pool, for session s (NULL:
 * for defer_due); load_done goes on from there. */
void relay__delivery_load(struct delivery *d, struct session *s);
/* Decides what the attempt comes to, then records it (thread pool). */
void relay__record(struct delivery *d);
/* A delivery's transaction has ended (SMTPC_EV_DONE) and nothing of it is in
 * flight: sent again (a stale session) or recorded. r is the relay it went
 * to, NULL once its session may be gone (only for one that ended before its
 * dot: it cannot count as delivered). */
void relay__delivery_ended(struct delivery *d, struct relay *r);
void relay__delivery_free(struct delivery *d);

/* relay.c: the session pool. */

/* Outcomes waiting to be recorded (records_in_flight) at which sessions take
 * no more work: delivery can outpace the spool's removals (a drain from a
 * large queue, whose directories make unlinks dear), and each waiting one
 * holds its delivery in memory and its message in queue/, to be sent again
 * after a crash. About 1.5 KiB each. */
#define RECORDS_MAX 1024

/* A ready session of the first relay that may send now with nothing to do,
 * or NULL. */
struct session *relay__idle_session(struct relay_pool *pool);
/* s may be given another message; otherwise it should QUIT. */
bool relay__session_takes_work(const struct session *s);
/* s has no transaction: the next message, or QUIT. */
void relay__session_idle(struct session *s);
/* d is loaded or sent for s: its transaction, or the next behind it. */
void relay__session_attach(struct session *s, struct delivery *d);
/* d, loaded for s, is no longer its (load_done; it may be sent again). */
void relay__session_detach(struct session *s, struct delivery *d);
/* Closing, and nothing in flight any more: close the timers; their close
 * callback tells the owner. */
void relay__maybe_closed(struct relay_pool *pool);

#endif
