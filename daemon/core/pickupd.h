/*
 * The daemon's shared context. Owner: main.c; every module gets a pointer.
 * Only the loop thread touches it, except what thread-pool jobs are given.
 */
#ifndef PICKUPD_PICKUPD_H
#define PICKUPD_PICKUPD_H

#include <magic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "common/config.h"
#include "spool/spool.h"

struct sched;
struct relay_pool;
struct pickup;
struct ctl;
struct metrics;

/* Counters since start, shown by the metrics endpoint. Loop thread only. */
/* Delivery delay histogram buckets, seconds (metrics.c prints them). */
#define PICKUPD_DELAY_BUCKETS 10
extern const double pickupd_delay_buckets[PICKUPD_DELAY_BUCKETS];

/* Counters for the metrics endpoint; only the loop thread touches them. Mail
 * from writers and the notifications pickupd makes (DSNs) are counted apart. */
struct pickupd_stats {
	uint64_t received;	  /* messages queued from a pickup folder (pickup.c) */
	uint64_t delivered;	  /* recipients accepted by a relay (relay.c, record_done) */
	uint64_t deferred;	  /* recipient deferrals recorded (relay.c, record_done) */
	uint64_t bounced;	  /* recipients failed for good (relay.c, record_done) */
	uint64_t refused;	  /* pickup files refused into badmail (pickup.c, ingest done) */
	uint64_t dsn_created[2];  /* notifications queued, by enum bounce_kind (relay.c) */
	uint64_t dsn_sent;	  /* notifications accepted by a relay */
	uint64_t dsn_deferred;	  /* notification deferrals */
	uint64_t dsn_failed;	  /* notifications failed for good (to badmail) */
	uint64_t sent_bytes;	  /* message bytes written in DATA, every transaction */
	uint64_t sessions_opened; /* SMTP sessions started (relay.c) */
	uint64_t badmail_expired; /* badmail entries removed by [badmail] keep (ctl.c) */
	/* Arrival to delivery of each recipient of writers' mail. */
	uint64_t delay_count[PICKUPD_DELAY_BUCKETS]; /* not cumulative: one bucket each */
	uint64_t delay_over;			     /* above the last bucket */
	double delay_sum;
};

/* Counts one delivered recipient's delay in the histogram. */
void pickupd_stats_delay(struct pickupd_stats *st, double seconds);

struct pickupd {
	uv_loop_t *loop;
	struct config *cfg; /* the running configuration: one reference (reload swaps it) */
	struct spool spool;
	magic_t magic;
	uv_mutex_t magic_lock; /* a magic_t is not thread-safe */
	struct sched *sched;
	struct relay_pool *pool;
	struct pickup **pickups;
	size_t n_pickups;
	struct ctl *ctl;	 /* control socket (ctl.c) */
	struct metrics *metrics; /* Prometheus endpoint (metrics.c), NULL when off */
	struct pickupd_stats stats;
	bool stopping;
	size_t parts_open;	     /* while stopping: parts whose close has not called back */
	unsigned recovers_in_flight; /* ingest_recover jobs (main.c) */
	bool enospc;		     /* ingestion paused: the spool's disk is full */
	size_t handoff_bytes;	     /* held by handoffs (handoff.c); atomic, any thread */
	uint64_t enospc_need;	     /* bytes of the largest file that did not fit */
	uv_timer_t space_timer;	     /* re-checks the free space while paused (space.c) */
	/* Ingestion paced to delivery (intake/pace.c). */
	bool pace_held;
	uint64_t pace_progress_ms; /* uv_now of the last handoff released */
	uv_timer_t pace_timer;
	uv_check_t ro_check;	  /* stops the daemon once the spool is read-only */
	uv_prepare_t log_flusher; /* writes the turn's gathered log lines (log.h) */
	/* Offers of messages before their claim is durable (handoff.h). */
	uv_async_t offer_async;
	uv_mutex_t offer_lock;
	struct handoff_offer *offers;
	bool offers_open;
	/* Set by main: delivery's side of the offers. take: true when it
	 * started a transaction (handoff_offer_take said yes); done: the job
	 * is over. */
	bool (*offer_take)(struct pickupd *pd, struct handoff_offer *o);
	void (*offer_done)(struct pickupd *pd, struct handoff_offer *o, bool queued);
	int exit_status; /* non-zero: why main exits with an error */
	uv_signal_t sig_term, sig_int, sig_hup;
	uv_timer_t watchdog;
	uv_timer_t shutdown_timer;
	uint64_t watchdog_usec;
};

/* Milliseconds since the epoch (wall clock: what envelopes record). */
int64_t pickupd_now_ms(void);
/* sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET, if set. */
void pickupd_notify(const char *state);
/* A part's close (pickup_close, relay_pool_close, ctl_close, metrics_close)
 * calls this once it has fully stopped: its work finished, its handles closed
 * (as uv_close's callback; never from within the close call itself). */
typedef void (*pickupd_closed_cb)(void *arg);

/* Thread-pool jobs: fn runs on a pool thread, done on the loop thread. A job
 * holds a reference to the configuration it was submitted under (cfg), which
 * fn reads instead of pd->cfg (a reload may replace that meanwhile); it is
 * dropped after done. */
struct job;
typedef void (*job_fn)(struct job *j);
struct job {
	uv_work_t work;
	struct pickupd *pd;
	struct config *cfg;
	job_fn fn;
	job_fn done;
};
void job_submit(struct pickupd *pd, struct job *j, job_fn fn, job_fn done);

#endif
