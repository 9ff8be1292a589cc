/*
 * Purpose: sessions per relay, dispatch of due messages to them, and acting
 * on what the failure policy (policy.c) decides: recording each outcome,
 * pausing relays.
 * Owns: the session list, deliveries in flight; a reference to each relay's
 * SSL_CTX and to the configuration its settings are in, and one more to both
 * for each session (what a reload replaces is freed when the last session
 * opened with it ends).
 * Invariants: the spool work of a delivery (loading it before the
 * transaction, recording its outcome after) runs on the thread pool, never
 * on the loop thread; a delivery's outcome is written to the spool before
 * its log lines say so and before it is scheduled again; neither protocol
 * code (smtpc) nor this file decides retry or bounce: policy.c does (as
 * Postfix's smtp_trouble.c); relays are used in the order configured, the
 * next one only while an earlier one is paused; a relay is paused only
 * when no session to it works (a connection refused beside working
 * sessions lowers its concurrency limit instead); an AUTH pause lasts only
 * while the credentials are unchanged and no reload or flush came; no
 * transaction starts on a read-only spool, and each is marked in the spool
 * (spool_mark_sending) before it is; a message loaded for a session that
 * can no longer send it goes back to the schedule unmarked.
 */
#include "daemon/delivery/relay.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "daemon/delivery/bounce.h"
#include "daemon/smtp/credprobe.h"
#include "daemon/delivery/policy.h"
#include "daemon/delivery/sched.h"
#include "daemon/smtp/secret.h"

struct relay;

struct session {
	struct relay *relay;
	struct smtpc *smtpc;
	struct delivery *d;	     /* the message being loaded for it, or its transaction */
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
	struct delivery *rm_head, *rm_tail;
	size_t rm_waiting;
	unsigned rm_running;
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
	struct delivery *rm_next; /* in the pool's removal list */
};

#define RELAY_CRED_CHECK_MS 1000 /* a paused relay's password file is looked at this often */
#define DEFER_BATCH	    1000

/* ---- recording outcomes (thread pool) ------------------------------------------------ */

static void delivery_free(struct delivery *d)
{
	smtpc_txn_deinit(&d->txn);
	spool_env_deinit(&d->env);
	policy_outcome_deinit(&d->out);
	free(d->load_why);
	free(d->defer_why);
	free(d);
}

static void maybe_closed(struct relay_pool *pool);

/* Each job of a delivery's ends here: the pool, stopping, may have no more
 * work in flight (d may be freed by its done). */
static void delivery_done_cb(struct job *j)
{
	struct delivery *d = (struct delivery *)j;
	struct relay_pool *pool = d->pool;
	d->done(j);
	maybe_closed(pool);
}

static void delivery_job(struct delivery *d, job_fn fn, job_fn done)
{
	d->done = done;
	job_submit(d->pool->pd, &d->job, fn, delivery_done_cb);
}

static void record_fn(struct job *j)
{
	struct delivery *d = (struct delivery *)j;
	struct spool *sp = &j->pd->spool;
	int r = 0;
	switch (d->out.action) {
	case POLICY_REMOVE:
		r = spool_remove(sp, d->env.id, SPOOL_QUEUE);
		break;
	case POLICY_DEFER:
		if (d->out.warn &&
		    bounce_queue(sp, j->cfg, &d->env, BOUNCE_DELAYED, pickupd_now_ms(),
				 d->bounce_due, d->bounce_id) < 0) {
			d->bounce_err = errno;
			d->env.delay_warned = false; /* try again at the next attempt */
		}
		r = spool_env_write(sp, SPOOL_QUEUE, &d->env);
		if (r == 0)
			r = spool_move(sp, d->env.id, SPOOL_QUEUE, SPOOL_DEFERRED);
		break;
	case POLICY_BADMAIL:
		/* The notification first: once the original is in badmail
		 * nothing would send it any more. */
		if (d->out.bounce &&
		    bounce_queue(sp, j->cfg, &d->env, BOUNCE_FAILED, pickupd_now_ms(),
				 d->bounce_due, d->bounce_id) < 0)
			d->bounce_err = errno;
		r = spool_env_write(sp, SPOOL_QUEUE, &d->env);
		if (r == 0)
			r = spool_move(sp, d->env.id, SPOOL_QUEUE, SPOOL_BADMAIL);
		break;
	}
	d->err = r < 0 ? errno : 0;
}

static void log_lines(const char *text)
{
	const char *p = text;
	while (p && *p) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);
		const char *w = strstr(p, ": warning: ");
		if (w && (size_t)(w - p) < n) {
			/* log_warn says "warning: " itself: "ID: the text", not
			 * "warning: ID: warning: the text". */
			size_t id = (size_t)(w - p), skip = id + strlen(": warning: ");
			log_svc(LOG_LVL_WARN, "smtp", "%.*s: %.*s", (int)id, p, (int)(n - skip),
				p + skip);
		} else
			log_svc(LOG_LVL_INFO, "smtp", "%.*s", (int)n, p);
		p = nl ? nl + 1 : NULL;
	}
}

/* The metrics of a recorded attempt: writers' mail and notifications apart. */
static void count_outcome(struct pickupd_stats *st, const struct delivery *d)
{
	const struct policy_outcome *o = &d->out;
	st->sent_bytes += d->txn.bytes_sent;
	if (bounce_is_notification(&d->env)) {
		st->dsn_sent += o->n_sent;
		st->dsn_deferred += o->n_deferred;
		st->dsn_failed += o->n_failed;
	} else {
		st->delivered += o->n_sent;
		st->deferred += o->n_deferred;
		st->bounced += o->n_failed;
		for (size_t i = 0; i < o->n_sent; i++)
			pickupd_stats_delay(st, (double)(d->done_ms - d->env.arrival_ms) / 1000.0);
	}
	if (o->warn && d->bounce_err == 0 && o->action == POLICY_DEFER)
		st->dsn_created[BOUNCE_DELAYED]++;
	if (o->bounce && d->bounce_err == 0 && o->action == POLICY_BADMAIL)
		st->dsn_created[BOUNCE_FAILED]++;
}

static void record_done(struct job *j)
{
	struct delivery *d = (struct delivery *)j;
	struct relay_pool *pool = d->pool;
	struct pickupd *pd = j->pd;
	pool->records_in_flight--;
	if (d->err == EROFS) {
		/* Not tried again here: pickupd stops (main.c), and the restart
		 * sends it from queue/, where its mark says it was being sent. */
		log_warn("%s: the outcome cannot be recorded (read-only spool); the "
			 "message stays queued and may be delivered twice",
			 d->env.id);
	} else if (d->err) {
		/* The outcome is not on disk: the old envelope stays in queue/, so
		 * after a restart the message is tried again. */
		log_error("%s: cannot record the delivery result: %s; the message stays queued and "
			  "may be delivered again",
			  d->env.id, strerror(d->err));
		sched_add(pd->sched, d->env.id, SPOOL_QUEUE, pickupd_now_ms() + 60000);
	} else {
		log_lines(d->out.log.data);
		count_outcome(&pd->stats, d);
		switch (d->out.action) {
		case POLICY_REMOVE:
			log_svc(LOG_LVL_INFO, "qmgr", "%s: removed", d->env.id);
			pool->cbs.removed(pool->cbs.arg); /* ingestion may wait for this space */
			break;
		case POLICY_DEFER:
			sched_add(pd->sched, d->env.id, SPOOL_DEFERRED, d->env.next_ms);
			if (d->out.warn && d->bounce_err == 0) {
				log_svc(LOG_LVL_INFO, "bounce", "%s: sender delay notification: %s",
					d->env.id, d->bounce_id);
				sched_add(pd->sched, d->bounce_id,
					  d->bounce_due > pickupd_now_ms() ? SPOOL_DEFERRED
									   : SPOOL_QUEUE,
					  d->bounce_due);
			} else if (d->out.warn) {
				log_svc(LOG_LVL_ERR, "bounce",
					"%s: cannot create the delay notification: %s", d->env.id,
					strerror(d->bounce_err));
			}
			break;
		case POLICY_BADMAIL:
			if (d->out.bounce && d->bounce_err == 0) {
				log_svc(LOG_LVL_INFO, "bounce",
					"%s: sender non-delivery notification: %s", d->env.id,
					d->bounce_id);
				sched_add(pd->sched, d->bounce_id,
					  d->bounce_due > pickupd_now_ms() ? SPOOL_DEFERRED
									   : SPOOL_QUEUE,
					  d->bounce_due);
			} else if (d->out.bounce) {
				log_svc(LOG_LVL_ERR, "bounce",
					"%s: cannot create the non-delivery notification: %s",
					d->env.id, strerror(d->bounce_err));
			}
			log_svc(LOG_LVL_WARN, "qmgr", "%s: moved to badmail: %s", d->env.id,
				d->env.reason);
			break;
		}
	}
	delivery_free(d);
	relay_pool_wake(pool);
}

/* ---- removals in batches ------------------------------------------------------------ */

#define REMOVE_BATCH 64
#define REMOVE_JOBS  4

/* Deliveries whose message is done, removed by one pool job. */
struct removal_batch {
	struct job job;
	struct relay_pool *pool;
	struct delivery *d[REMOVE_BATCH];
	size_t n;
};

static void removal_fn(struct job *j)
{
	struct removal_batch *b = (struct removal_batch *)j;
	char *ids[REMOVE_BATCH];
	int errs[REMOVE_BATCH];
	for (size_t i = 0; i < b->n; i++)
		ids[i] = b->d[i]->env.id;
	/* spool_remove for each, one fsync of data/ for all; an EROFS here
	 * marks the spool read-only as spool_remove would (main.c stops). */
	spool_remove_many(&j->pd->spool, ids, b->n, SPOOL_QUEUE, errs);
	for (size_t i = 0; i < b->n; i++)
		b->d[i]->err = errs[i];
}

static void removal_pump(struct relay_pool *pool);

static void removal_done(struct job *j)
{
	struct removal_batch *b = (struct removal_batch *)j;
	struct relay_pool *pool = b->pool;
	pool->rm_running--;
	for (size_t i = 0; i < b->n; i++) {
		b->d[i]->job.pd = j->pd;
		record_done(&b->d[i]->job);
	}
	free(b);
	removal_pump(pool);
	maybe_closed(pool);
}

static void removal_pump(struct relay_pool *pool)
{
	while (pool->rm_head && pool->rm_running < REMOVE_JOBS &&
	       (pool->rm_running == 0 || pool->rm_waiting >= REMOVE_BATCH)) {
		struct removal_batch *b = xcalloc(1, sizeof(*b));
		b->pool = pool;
		while (b->n < REMOVE_BATCH && pool->rm_head) {
			struct delivery *d = pool->rm_head;
			pool->rm_head = d->rm_next;
			b->d[b->n++] = d;
		}
		if (pool->rm_head == NULL)
			pool->rm_tail = NULL;
		pool->rm_waiting -= b->n;
		pool->rm_running++;
		job_submit(pool->pd, &b->job, removal_fn, removal_done);
	}
}

/* A delivered message is removed with the others done meanwhile. */
static void removal_add(struct relay_pool *pool, struct delivery *d)
{
	d->rm_next = NULL;
	if (pool->rm_tail)
		pool->rm_tail->rm_next = d;
	else
		pool->rm_head = d;
	pool->rm_tail = d;
	pool->rm_waiting++;
	removal_pump(pool);
}

/* Bounces are spaced out (rate_limit per minute) so a broken relay cannot
 * cause a storm; none is dropped, later ones just wait in deferred/. */
static int64_t bounce_slot(struct relay_pool *pool, const struct config_bounce *b, int64_t now)
{
	if (b->rate_limit == 0)
		return 0;
	int64_t spacing = 60000 / (int64_t)b->rate_limit;
	int64_t due = pool->next_bounce_ms > now ? pool->next_bounce_ms : now;
	pool->next_bounce_ms = due + spacing;
	return due > now ? due : 0;
}

/* Decides what the attempt comes to, then records it (thread pool). */
static void record(struct delivery *d)
{
	struct relay_pool *pool = d->pool;
	const struct config *cfg = pool->pd->cfg;
	int64_t now = pickupd_now_ms();
	struct policy_where where = {.peer = d->peer,
				     .relay_name = d->relay_name,
				     .dispatch_ms = d->dispatch_ms,
				     .setup_ms = d->setup_ms};
	d->done_ms = now;
	policy_decide(&cfg->retry, &cfg->bounce, &d->env, &d->txn, &where, now, (unsigned)random(),
		      &d->out);
	policy_apply(&d->out, &d->env);
	if (d->out.warn || d->out.bounce)
		d->bounce_due = bounce_slot(pool, &cfg->bounce, now);
	pool->records_in_flight++;
	if (d->out.action == POLICY_REMOVE)
		removal_add(pool, d);
	else
		delivery_job(d, record_fn, record_done);
}

/* ---- dispatch ----------------------------------------------------------------------- */

/* Loads a due message for sending (thread pool): moves it into queue/,
 * reads its envelope, opens its content and marks it as being sent. Logs
 * nothing and touches no loop state: load_done does. */
static void load_fn(struct job *j)
{
	struct delivery *d = (struct delivery *)j;
	struct spool *sp = &j->pd->spool;
	const struct sched_item *it = &d->item;
	struct buf why = BUF_INIT;

	d->loaded = LOAD_NONE;
	/* No transaction whose outcome cannot be recorded: it stays where it
	 * is for the next start (main.c stops the daemon). */
	if (spool_readonly(sp))
		goto out;
	if (it->state == SPOOL_DEFERRED) {
		/* No fsync: after a crash it is in one of the two, both fine. */
		if (spool_move_nosync(sp, it->id, SPOOL_DEFERRED, SPOOL_QUEUE) < 0) {
			d->err = errno;
			if (errno != ENOENT && errno != EROFS)
				d->loaded = LOAD_MOVE_FAILED;
			goto out;
		}
	} else if (it->state != SPOOL_QUEUE) {
		goto out;
	}
	if (spool_env_read(sp, SPOOL_QUEUE, it->id, &d->env, &why) < 0) {
		if (errno == EBADMSG && it->state == SPOOL_QUEUE &&
		    spool_env_torn(sp, SPOOL_QUEUE, it->id)) {
			/* A first envelope whose writeback a crash lost: the
			 * content is durable and says it all again. */
			d->loaded = LOAD_TORN;
		} else if (errno == EBADMSG) {
			/* Quarantined where operators look, the rest keeps flowing. */
			d->loaded = LOAD_CORRUPT;
			spool_move(sp, it->id, SPOOL_QUEUE, SPOOL_BADMAIL);
		} else if (errno != ENOENT) {
			d->loaded = LOAD_UNREADABLE;
		}
		d->load_why = buf_steal(&why);
		goto out;
	}
	int fd = spool_data_open(sp, it->id);
	if (fd < 0) {
		d->err = errno;
		d->loaded = LOAD_NO_CONTENT;
		free(d->env.reason);
		d->env.reason = xstrdup("content file missing or unreadable");
		spool_env_write(sp, SPOOL_QUEUE, &d->env);
		spool_move(sp, it->id, SPOOL_QUEUE, SPOOL_BADMAIL);
		goto out;
	}
	/* Marked before it is sent, so that recovery can name it if the outcome
	 * never gets recorded; also the last check that it can be. */
	if (spool_mark_sending(sp, it->id) < 0) {
		d->err = errno;
		if (errno != EROFS && errno != ENOENT)
			d->loaded = LOAD_MARK_FAILED;
		close(fd);
		goto out;
	}
	smtpc_txn_init(&d->txn, &d->env, fd);
	d->loaded = LOAD_OK;
out:
	buf_deinit(&why);
}

static void unload_fn(struct job *j)
{
	struct delivery *d = (struct delivery *)j;
	spool_unmark_sending(&j->pd->spool, d->env.id);
}

static void unload_done(struct job *j)
{
	struct delivery *d = (struct delivery *)j;
	struct relay_pool *pool = d->pool;
	pool->loads_in_flight--;
	if (!pool->stopping)
		sched_add(pool->pd->sched, d->env.id, SPOOL_QUEUE, 0);
	delivery_free(d);
	relay_pool_wake(pool);
}

/* A message loaded for a session that closed, or was outdated by a reload,
 * or while pickupd began to stop: it goes back unsent, without its mark,
 * so that recovery does not take it for one that may have been sent. */
static void unload(struct delivery *d)
{
	d->pool->loads_in_flight++;
	delivery_job(d, unload_fn, unload_done);
}

static bool dispatch(struct session *s);

/* s may be given another message; otherwise it should QUIT. */
static bool session_takes_work(const struct session *s)
{
	const struct relay *r = s->relay;
	return !r->pool->stopping && !r->retired && s->gen == r->gen &&
	       smtpc_messages(s->smtpc) < r->cfg->max_messages_per_session;
}

/* s has no transaction: the next message, or QUIT. */
static void session_idle(struct session *s)
{
	if (!session_takes_work(s))
		smtpc_quit(s->smtpc);
	else if (!dispatch(s))
		relay_pool_wake(s->relay->pool); /* maybe another relay or later work */
}

static void load_done(struct job *j)
{
	struct delivery *d = (struct delivery *)j;
	struct relay_pool *pool = d->pool;
	struct pickupd *pd = j->pd;
	struct session *s = d->s;
	const char *id = d->item.id;
	char why[256];

	pool->loads_in_flight--;
	if (s)
		s->d = NULL;
	switch (d->loaded) {
	case LOAD_OK:
	case LOAD_NONE:
		break;
	case LOAD_MOVE_FAILED:
		log_error("%s: cannot move to queue: %s", id, strerror(d->err));
		break;
	case LOAD_CORRUPT:
		log_error("%s: %s; moved to badmail", id, d->load_why);
		break;
	case LOAD_TORN:
		log_warn("%s: envelope torn (%s); ingesting the content again", id, d->load_why);
		pool->cbs.torn(pool->cbs.arg, id);
		break;
	case LOAD_UNREADABLE:
		log_error("%s: %s", id, d->load_why);
		sched_add(pd->sched, id, SPOOL_QUEUE, pickupd_now_ms() + 60000);
		break;
	case LOAD_NO_CONTENT:
		log_error("%s: cannot open the content: %s; moved to badmail", id,
			  strerror(d->err));
		break;
	case LOAD_MARK_FAILED:
		log_error("%s: cannot mark the envelope as being sent: %s; tried again in a minute",
			  id, strerror(d->err));
		sched_add(pd->sched, id, SPOOL_QUEUE, pickupd_now_ms() + 60000);
		break;
	}
	if (d->loaded == LOAD_OK) {
		d->dispatch_ms = pickupd_now_ms();
		/* Postfix's qmgr line as a message becomes active: pflogsumm takes
		 * the size and the sender's domain from it. */
		log_svc(LOG_LVL_INFO, "qmgr", "%s: from=<%s>, size=%llu, nrcpt=%zu (queue active)",
			id, d->env.sender, (unsigned long long)d->env.size, d->env.n_rcpts);
	}
	if (d->loaded != LOAD_OK) {
		delivery_free(d);
		if (s) {
			s->relay->next_send_ms = 0; /* nothing was sent */
			session_idle(s);
		}
		return;
	}
	if (d->defer) {
		d->txn.cls = d->defer_cls;
		d->txn.reply = d->defer_why;
		d->defer_why = NULL;
		record(d);
		return;
	}
	if (s == NULL || !session_takes_work(s)) {
		unload(d);
		if (s)
			smtpc_quit(s->smtpc);
		return;
	}
	snprintf(d->peer, sizeof(d->peer), "%s", smtpc_peer(s->smtpc));
	snprintf(d->relay_name, sizeof(d->relay_name), "%s", s->relay->cfg->name);
	if (!s->setup_told) {
		s->setup_told = true;
		d->setup_ms = s->ready_ms - s->opened_ms;
	}
	if (s->relay->cfg->force_sender)
		d->txn.force_sender = s->relay->cfg->force_sender;
	if (smtpc_check_capable(s->smtpc, &d->env, why, sizeof(why))) {
		d->txn.cls = SMTPC_PERM;
		d->txn.reply = xstrdup(why);
		record(d);
		session_idle(s);
		return;
	}
	s->d = d;
	smtpc_send(s->smtpc, &d->txn);
}

static struct delivery *delivery_new(struct relay_pool *pool, const struct sched_item *it)
{
	struct delivery *d = xcalloc(1, sizeof(*d));
	d->pool = pool;
	d->item = *it;
	d->txn.data_fd = -1; /* until smtpc_txn_init */
	snprintf(d->relay_name, sizeof(d->relay_name), "none");
	return d;
}

/* Starts loading a due message on the thread pool, for session s (NULL:
 * for defer_due); load_done goes on from there. */
static void delivery_load(struct delivery *d, struct session *s)
{
	d->s = s;
	if (s)
		s->d = d;
	d->pool->loads_in_flight++;
	delivery_job(d, load_fn, load_done);
}

static bool relay_paused(const struct relay *r, int64_t now)
{
	return r->paused_until_ms > now;
}

static void arm_pause_timer(struct relay_pool *pool, int64_t until);
static void cred_timer_cb(uv_timer_t *t);
static void probe_done_cb(struct credprobe *p, bool ok, const unsigned char *fp, void *arg);

/* rate_limit: messages per minute, evenly spaced. True when one may go now. */
static bool relay_may_send(struct relay *r, int64_t now)
{
	if (r->cfg->rate_limit == 0)
		return true;
	if (r->next_send_ms > now) {
		arm_pause_timer(r->pool, r->next_send_ms);
		return false;
	}
	r->next_send_ms = now + 60000 / (int64_t)r->cfg->rate_limit;
	return true;
}

/* Gives the session the next due message (loaded on the thread pool, then
 * sent by load_done); false when there is none. */
static bool dispatch(struct session *s)
{
	struct relay_pool *pool = s->relay->pool;
	struct pickupd *pd = pool->pd;
	struct sched_item it;

	if (s->relay->retired || s->gen != s->relay->gen)
		return false;
	if (pool->stopping || !sched_has_due(pd->sched) ||
	    !relay_may_send(s->relay, pickupd_now_ms()) || !sched_pop_due(pd->sched, &it))
		return false;
	delivery_load(delivery_new(pool, &it), s);
	return true;
}

/* Defers due messages when no relay can take them, so each records why. */
static void defer_due(struct relay_pool *pool, enum smtpc_class cls, const char *why,
		      const char *peer, const char *relay_name)
{
	struct sched_item it;
	for (int n = 0; n < DEFER_BATCH && sched_pop_due(pool->pd->sched, &it); n++) {
		struct delivery *d = delivery_new(pool, &it);
		snprintf(d->peer, sizeof(d->peer), "%s", peer);
		snprintf(d->relay_name, sizeof(d->relay_name), "%s", relay_name);
		d->defer = true;
		d->defer_cls = cls;
		d->defer_why = xstrdup(why);
		delivery_load(d, NULL);
	}
}

/* ---- pauses and concurrency feedback ------------------------------------------------- */

/* The relay authenticates with a secret file (not a password_command). */
static bool relay_uses_file(const struct relay *r)
{
	return r->cfg->user && *r->cfg->user &&
	       !(r->cfg->password_command && *r->cfg->password_command);
}

static unsigned relay_limit(const struct relay *r)
{
	unsigned max = r->cfg->max_sessions;
	return r->limit && r->limit < max ? r->limit : max;
}

/* Sessions to r that reached READY and are still open, but for except. */
static unsigned healthy_sessions(const struct relay *r, const struct session *except)
{
	unsigned n = 0;
	for (const struct session *s = r->sessions; s; s = s->next)
		n += s != except && s->ready;
	return n;
}

/* A connection refused (421 greeting, reset, refused) while `working`
 * sessions to the relay work: the server limits connections per client.
 * Keep to the sessions that work; nothing waits or is deferred for it. */
static void relay_lower_limit(struct relay *r, unsigned working, struct smtpc *c)
{
	r->limit = working;
	r->limit_successes = 0;
	log_info("relay %s: connection refused while %u session(s) work: %s (%s); concurrency "
		 "limit %u of %u",
		 r->cfg->name, working, smtpc_error(c), smtpc_class_names[smtpc_error_class(c)],
		 relay_limit(r), r->cfg->max_sessions);
}

/* A transaction went through: after enough of them, try one more session. */
static void relay_delivered(struct relay *r)
{
	if (r->limit == 0 || ++r->limit_successes < POLICY_GROW_AFTER)
		return;
	r->limit_successes = 0;
	r->limit = policy_relay_raise_limit(r->limit, r->cfg->max_sessions);
	log_info("relay %s: concurrency limit raised to %u of %u", r->cfg->name, relay_limit(r),
		 r->cfg->max_sessions);
}

static void relay_cancel_probe(struct relay *r)
{
	if (r->probe) {
		credprobe_cancel(r->probe); /* its callback finds no relay */
		r->probe = NULL;
	}
}

/* Runs the relay's password_command to fingerprint its output. */
static void relay_start_probe(struct relay *r)
{
	struct relay_pool *pool = r->pool;
	r->probe_deadline_ms = pickupd_now_ms() + (int64_t)r->cfg->command_timeout_ms;
	r->probe = credprobe_start(pool->pd->loop, r->cfg->password_command, probe_done_cb, pool);
	pool->probes_in_flight++;
}

/* Credentials refused (or the secret unreadable): pause until the pause
 * ends or the credentials change. fp: the secret file's fingerprint then;
 * NULL for a password_command, whose output is fingerprinted from now on. */
static void relay_pause_auth(struct relay *r, const unsigned char *fp)
{
	struct relay_pool *pool = r->pool;
	int64_t now = pickupd_now_ms();
	r->paused_until_ms = now + POLICY_AUTH_PAUSE_MS;
	r->auth_paused = true;
	r->auth_failures++;
	r->auth_fp_set = fp != NULL;
	if (fp)
		memcpy(r->auth_fp, fp, SECRET_FP_LEN);
	relay_cancel_probe(r);
	arm_pause_timer(pool, r->paused_until_ms);
	if (pool->stopping || pool->closed_timer)
		return;
	/* A command's output right now is what a later one is compared with:
	 * as close as can be to what the refused session used. */
	if (fp == NULL && r->cfg->password_command && *r->cfg->password_command)
		relay_start_probe(r);
	if (!uv_is_active((uv_handle_t *)&pool->cred_timer))
		uv_timer_start(&pool->cred_timer, cred_timer_cb, RELAY_CRED_CHECK_MS,
			       RELAY_CRED_CHECK_MS);
}

/* Ends a pause early (credentials changed, reload, flush); false when the
 * relay was not paused. */
static bool relay_unpause(struct relay *r, const char *why)
{
	bool was = relay_paused(r, pickupd_now_ms());
	r->paused_until_ms = 0;
	r->failures = 0;
	r->auth_paused = false;
	relay_cancel_probe(r);
	if (was)
		log_info("relay %s: pause ended: %s", r->cfg->name, why);
	return was;
}

void relay_pool_unpause(struct relay_pool *pool, const char *why)
{
	for (size_t i = 0; i < pool->n_relays; i++)
		relay_unpause(pool->relays[i], why);
	relay_pool_wake(pool);
}

static void probe_done_cb(struct credprobe *p, bool ok, const unsigned char *fp, void *arg)
{
	struct relay_pool *pool = arg;
	int64_t now = pickupd_now_ms();
	pool->probes_in_flight--;
	for (size_t i = 0; i < pool->n_relays; i++) {
		struct relay *r = pool->relays[i];
		if (r->probe != p)
			continue;
		r->probe = NULL;
		r->probe_at_ms = now + policy_probe_delay_ms(r->auth_failures);
		if (!ok || !r->auth_paused)
			break;
		if (!r->auth_fp_set) {
			memcpy(r->auth_fp, fp, SECRET_FP_LEN);
			r->auth_fp_set = true;
		} else if (memcmp(r->auth_fp, fp, SECRET_FP_LEN) != 0 &&
			   relay_unpause(r, "password_command prints something new")) {
			relay_pool_wake(pool);
		}
		break;
	}
	maybe_closed(pool);
}

/* Every RELAY_CRED_CHECK_MS while a relay is paused for its credentials:
 * has the operator changed them? */
static void cred_timer_cb(uv_timer_t *t)
{
	struct relay_pool *pool = t->data;
	int64_t now = pickupd_now_ms();
	bool waiting = false, woke = false;
	for (size_t i = 0; i < pool->n_relays; i++) {
		struct relay *r = pool->relays[i];
		if (r->auth_paused && !relay_paused(r, now)) {
			r->auth_paused = false; /* the pause ran out by itself */
			relay_cancel_probe(r);
		}
		if (!r->auth_paused)
			continue;
		waiting = true;
		if (relay_uses_file(r)) {
			unsigned char fp[SECRET_FP_LEN];
			secret_file_fingerprint(r->cfg, fp);
			if (memcmp(fp, r->auth_fp, sizeof(fp)) != 0)
				woke |= relay_unpause(r, "the secret file changed");
		} else if (r->probe) {
			if (now >= r->probe_deadline_ms)
				relay_cancel_probe(r); /* hung: try again later */
		} else if (now >= r->probe_at_ms && r->cfg->password_command) {
			relay_start_probe(r);
		}
	}
	if (!waiting)
		uv_timer_stop(t);
	if (woke)
		relay_pool_wake(pool);
}

static void session_cb(struct smtpc *c, enum smtpc_event ev, void *arg);

static void open_session(struct relay *r)
{
	struct relay_pool *pool = r->pool;
	struct smtpc_params p;
	struct buf reason = BUF_INIT;
	memset(&p, 0, sizeof(p));
	p.relay = r->cfg;
	p.helo_name = pool->pd->cfg->general.hostname;
	unsigned char fp[SECRET_FP_LEN];
	bool file = relay_uses_file(r);
	if (file) /* before reading: a change in between is seen, not missed */
		secret_file_fingerprint(r->cfg, fp);
	if (r->cfg->user && *r->cfg->user) {
		p.secret = secret_for_session(r->cfg, &reason);
		if (p.secret == NULL) {
			log_error("%s; relay paused until the file changes", reason.data);
			relay_pause_auth(r, file ? fp : NULL);
			buf_deinit(&reason);
			return;
		}
	}
	struct session *s = xcalloc(1, sizeof(*s));
	if (file)
		memcpy(s->secret_fp, fp, sizeof(fp));
	s->relay = r;
	s->opened_ms = pickupd_now_ms();
	s->gen = r->gen;
	s->conf = config_ref(r->conf);
	if (r->ssl_ctx) {
		SSL_CTX_up_ref(r->ssl_ctx);
		s->ssl_ctx = p.ssl_ctx = r->ssl_ctx;
	}
	s->next = r->sessions;
	r->sessions = s;
	r->n_sessions++;
	r->n_connecting++;
	pool->pd->stats.sessions_opened++;
	s->smtpc = smtpc_new(pool->pd->loop, &p, session_cb, s);
	buf_deinit(&reason);
}

static void relay_free(struct relay *r)
{
	relay_cancel_probe(r);
	SSL_CTX_free(r->ssl_ctx);
	config_free(r->conf);
	free(r);
}

/* After SMTPC_EV_CLOSED: the smtpc no longer uses what it was given. */
static void session_free(struct session *s)
{
	SSL_CTX_free(s->ssl_ctx);
	config_free(s->conf);
	free(s);
}

static void session_unlink(struct session *s)
{
	struct relay *r = s->relay;
	for (struct session **pp = &r->sessions; *pp; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	}
	r->n_sessions--;
	if (!s->ready)
		r->n_connecting--;
	if (r->retired && r->n_sessions == 0) {
		struct relay_pool *pool = r->pool;
		for (struct relay **pp = &pool->retired; *pp; pp = &(*pp)->next_retired) {
			if (*pp == r) {
				*pp = r->next_retired;
				break;
			}
		}
		relay_free(r);
	}
}

static void pause_timer_cb(uv_timer_t *t)
{
	relay_pool_wake(t->data);
}

static void arm_pause_timer(struct relay_pool *pool, int64_t until)
{
	if (pool->stopping || pool->closed_timer)
		return;
	int64_t wait = until - pickupd_now_ms();
	if (wait < 0)
		wait = 0;
	uint64_t due = uv_timer_get_due_in(&pool->pause_timer);
	if (uv_is_active((uv_handle_t *)&pool->pause_timer) && due <= (uint64_t)wait)
		return;
	uv_timer_start(&pool->pause_timer, pause_timer_cb, (uint64_t)wait, 0);
}

/* A session ended before it was ever usable, and none to the relay works:
 * the relay is failing. */
static void relay_failed(struct relay *r, const struct session *s)
{
	struct relay_pool *pool = r->pool;
	struct smtpc *c = s->smtpc;
	int64_t now = pickupd_now_ms();
	enum smtpc_class cls = smtpc_error_class(c);
	struct policy_pause pause = policy_relay_pause(cls, ++r->failures);
	if (pause.until_credentials_change) {
		log_warn("relay %s: %s (%s); paused for %.0f s or until its credentials change",
			 r->cfg->name, smtpc_error(c), smtpc_class_names[cls],
			 (double)pause.ms / 1000.0);
		relay_pause_auth(r, relay_uses_file(r) ? s->secret_fp : NULL);
	} else {
		r->paused_until_ms = now + pause.ms;
		log_warn("relay %s: %s (%s); paused for %.0f s", r->cfg->name, smtpc_error(c),
			 smtpc_class_names[cls], (double)pause.ms / 1000.0);
		arm_pause_timer(pool, r->paused_until_ms);
	}
	/* When every relay is paused, the due messages record why and wait. */
	for (size_t i = 0; i < pool->n_relays; i++)
		if (!relay_paused(pool->relays[i], now))
			return;
	defer_due(pool, cls, smtpc_error(c), smtpc_peer(c), r->cfg->name);
}

static void session_cb(struct smtpc *c, enum smtpc_event ev, void *arg)
{
	struct session *s = arg;
	struct relay *r = s->relay;
	struct relay_pool *pool = r->pool;

	switch (ev) {
	case SMTPC_EV_READY:
		if (!s->ready) {
			s->ready = true;
			s->ready_ms = pickupd_now_ms();
			r->n_connecting--;
			r->failures = 0;
			r->paused_until_ms = 0;
			r->auth_failures = 0;
			r->auth_paused = false;
			relay_cancel_probe(r);
			log_debug("relay %s: session to %s ready", r->cfg->name, smtpc_peer(c));
		}
		if (pool->stopping || r->retired || s->gen != r->gen)
			smtpc_quit(c);
		else if (!dispatch(s))
			relay_pool_wake(pool); /* maybe another relay or later work */
		break;
	case SMTPC_EV_DONE: {
		struct delivery *d = s->d;
		s->d = NULL;
		if (d && d->txn.session_stale) {
			/* An idle session the server had dropped: nothing was
			 * attempted, so no attempt is counted; it goes again now. */
			log_debug("%s: session to %s was stale; sending again", d->env.id,
				  smtpc_peer(c));
			sched_add(pool->pd->sched, d->env.id, SPOOL_QUEUE, 0);
			delivery_free(d);
		} else if (d) {
			if (d->txn.cls == SMTPC_OK)
				relay_delivered(r);
			record(d);
		}
		if (smtpc_idle(c)) {
			if (!session_takes_work(s))
				smtpc_quit(c);
			else
				dispatch(s);
		}
		break;
	}
	case SMTPC_EV_CLOSED: {
		bool was_ready = s->ready;
		if (s->d) /* being loaded: load_done finds no session */
			s->d->s = NULL;
		bool stopping = pool->stopping;
		enum smtpc_class cls = smtpc_error_class(c);
		unsigned working = healthy_sessions(r, s);
		if (!was_ready && cls != SMTPC_OK && !stopping)
			r->setup_failures[cls]++;
		if (!was_ready && cls != SMTPC_OK && !stopping && !r->retired) {
			if (policy_relay_lowers_limit(cls, working))
				relay_lower_limit(r, working, c);
			else
				relay_failed(r, s);
		} else if (was_ready && cls != SMTPC_OK)
			log_info("relay %s: session to %s closed: %s", r->cfg->name, smtpc_peer(c),
				 smtpc_error(c));
		session_unlink(s); /* may free a retired relay */
		session_free(s);
		if (stopping)
			maybe_closed(pool);
		else
			relay_pool_wake(pool);
		break;
	}
	}
}

void relay_pool_wake(struct relay_pool *pool)
{
	struct pickupd *pd = pool->pd;
	int64_t now = pickupd_now_ms();
	if (pool->stopping)
		return;
	for (size_t i = 0; i < pool->n_relays; i++) {
		struct relay *r = pool->relays[i];
		if (relay_paused(r, now)) {
			arm_pause_timer(pool, r->paused_until_ms);
			continue;
		}
		for (struct session *s = r->sessions; s; s = s->next) {
			if (!sched_has_due(pd->sched))
				break;
			if (s->ready && s->d == NULL && s->gen == r->gen && smtpc_idle(s->smtpc))
				dispatch(s);
		}
		/* One new session at a time: each that comes up pulls work and
		 * wakes the pool again, so sessions ramp up while work waits. */
		if (sched_has_due(pd->sched) && r->n_sessions < relay_limit(r) &&
		    r->n_connecting == 0 && (r->cfg->rate_limit == 0 || r->next_send_ms <= now))
			open_session(r);
		break; /* later relays only while this one is paused */
	}
}

int relay_prepare(const struct config_relay *cfg, SSL_CTX **ctx_r, struct buf *errors)
{
	bool ok = true;
	if (ctx_r)
		*ctx_r = NULL;
	if (cfg->tls != TLS_MODE_NONE) {
		struct buf why = BUF_INIT;
		SSL_CTX *ctx = conn_tls_ctx_new(cfg->tls_verify, cfg->ca_file, cfg->cert_file,
						cfg->key_file, &why);
		if (ctx == NULL) {
			buf_printf(errors, "relay %s: %s\n", cfg->name, why.data);
			ok = false;
		} else if (ctx_r) {
			*ctx_r = ctx;
		} else {
			SSL_CTX_free(ctx);
		}
		buf_deinit(&why);
	}
	if (cfg->user && *cfg->user && cfg->password_command == NULL) {
		/* Refuse at start a secret others could read or replace. */
		struct buf why = BUF_INIT;
		char *secret = secret_for_session(cfg, &why);
		if (secret == NULL) {
			buf_printf(errors, "%s\n", why.data);
			ok = false;
		} else {
			OPENSSL_cleanse(secret, strlen(secret));
		}
		free(secret);
		buf_deinit(&why);
	}
	if (!ok && ctx_r && *ctx_r) {
		SSL_CTX_free(*ctx_r);
		*ctx_r = NULL;
	}
	return ok ? 0 : -1;
}

/* A relay object for a [relay] section of conf (it takes a reference);
 * NULL with errors appended. */
static struct relay *relay_new(struct relay_pool *pool, struct config *conf,
			       const struct config_relay *cfg, struct buf *errors)
{
	struct relay *r = xcalloc(1, sizeof(*r));
	r->pool = pool;
	r->cfg = cfg;
	r->conf = config_ref(conf);
	if (relay_prepare(cfg, &r->ssl_ctx, errors) < 0) {
		relay_free(r);
		return NULL;
	}
	return r;
}

struct relay_pool *relay_pool_new(struct pickupd *pd, const struct relay_pool_cbs *cbs,
				  struct buf *errors)
{
	struct relay_pool *pool = xcalloc(1, sizeof(*pool));
	pool->pd = pd;
	pool->cbs = *cbs;
	uv_timer_init(pd->loop, &pool->pause_timer);
	pool->pause_timer.data = pool;
	uv_timer_init(pd->loop, &pool->cred_timer);
	pool->cred_timer.data = pool;
	pool->relays = xcalloc(pd->cfg->n_relays, sizeof(*pool->relays));
	for (size_t i = 0; i < pd->cfg->n_relays; i++) {
		struct relay *r = relay_new(pool, pd->cfg, &pd->cfg->relays[i], errors);
		if (r)
			pool->relays[pool->n_relays++] = r;
	}
	return pool;
}

int relay_pool_reload(struct relay_pool *pool, struct config *cfg, struct buf *errors)
{
	size_t n = cfg->n_relays;
	struct relay **fresh = xcalloc(n, sizeof(*fresh));
	/* Build everything first: a bad new relay leaves the running set alone. */
	for (size_t i = 0; i < n; i++) {
		fresh[i] = relay_new(pool, cfg, &cfg->relays[i], errors);
		if (fresh[i] == NULL) {
			for (size_t k = 0; k < i; k++)
				relay_free(fresh[k]);
			free(fresh);
			return -1;
		}
	}
	/* A relay kept by name keeps its sessions and state; new settings apply
	 * to new sessions (a session holds the settings it started with). */
	for (size_t i = 0; i < n; i++) {
		for (size_t k = 0; k < pool->n_relays; k++) {
			struct relay *old = pool->relays[k];
			if (old == NULL || strcmp(old->cfg->name, cfg->relays[i].name) != 0)
				continue;
			/* The new settings and context move into the old relay;
			 * its sessions hold their own references to the old ones. */
			SSL_CTX_free(old->ssl_ctx);
			old->ssl_ctx = fresh[i]->ssl_ctx;
			fresh[i]->ssl_ctx = NULL;
			relay_free(fresh[i]);
			config_free(old->conf);
			old->conf = config_ref(cfg);
			old->cfg = &cfg->relays[i];
			/* Open sessions carry the old settings: idle ones quit now,
			 * busy ones after their transaction. */
			old->gen++;
			for (struct session *se = old->sessions; se; se = se->next)
				if (se->d == NULL && se->ready)
					smtpc_quit(se->smtpc);
			/* The operator may have fixed what paused it. */
			relay_unpause(old, "configuration reloaded");
			fresh[i] = old;
			pool->relays[k] = NULL;
			break;
		}
	}
	/* Relays no longer configured finish what they do, then go. */
	for (size_t k = 0; k < pool->n_relays; k++) {
		struct relay *old = pool->relays[k];
		if (old == NULL)
			continue;
		old->retired = true;
		relay_cancel_probe(old);
		if (old->n_sessions == 0) {
			relay_free(old);
			continue;
		}
		old->next_retired = pool->retired;
		pool->retired = old;
		for (struct session *s = old->sessions; s; s = s->next)
			if (s->d == NULL)
				smtpc_quit(s->smtpc);
	}
	free(pool->relays);
	pool->relays = fresh;
	pool->n_relays = n;
	return 0;
}

static void for_each_session(struct relay_pool *pool, void (*fn)(struct session *s))
{
	for (size_t i = 0; i < pool->n_relays; i++)
		for (struct session *s = pool->relays[i]->sessions, *nx; s; s = nx) {
			nx = s->next;
			fn(s);
		}
	for (struct relay *r = pool->retired; r; r = r->next_retired)
		for (struct session *s = r->sessions, *nx; s; s = nx) {
			nx = s->next;
			fn(s);
		}
}

static void quit_if_idle(struct session *s)
{
	if (s->d == NULL)
		smtpc_quit(s->smtpc);
}

static void abort_session(struct session *s)
{
	smtpc_abort(s->smtpc, "pickupd is shutting down");
}

void relay_pool_close(struct relay_pool *pool, pickupd_closed_cb cb, void *arg)
{
	if (pool->stopping)
		return;
	pool->stopping = true;
	pool->closed_cb = cb;
	pool->closed_arg = arg;
	uv_timer_stop(&pool->pause_timer);
	uv_timer_stop(&pool->cred_timer);
	for (size_t i = 0; i < pool->n_relays; i++)
		relay_cancel_probe(pool->relays[i]);
	for_each_session(pool, quit_if_idle);
	maybe_closed(pool);
}

void relay_pool_abort(struct relay_pool *pool)
{
	for_each_session(pool, abort_session);
}

static bool relay_pool_idle(const struct relay_pool *pool)
{
	if (pool->loads_in_flight || pool->records_in_flight || pool->probes_in_flight ||
	    pool->retired)
		return false;
	for (size_t i = 0; i < pool->n_relays; i++)
		if (pool->relays[i]->n_sessions)
			return false;
	return true;
}

size_t relay_pool_info(const struct relay_pool *pool, struct relay_info *out, size_t max)
{
	for (size_t i = 0; i < pool->n_relays && i < max; i++) {
		out[i].name = pool->relays[i]->cfg->name;
		out[i].sessions = pool->relays[i]->n_sessions;
		out[i].paused_until_ms = pool->relays[i]->paused_until_ms;
		out[i].limit = relay_limit(pool->relays[i]);
		out[i].max_sessions = pool->relays[i]->cfg->max_sessions;
		out[i].setup_failures = pool->relays[i]->setup_failures;
	}
	return pool->n_relays;
}

static void timer_closed_cb(uv_handle_t *h)
{
	struct relay_pool *pool = h->data;
	pickupd_closed_cb cb = pool->closed_cb;
	if (--pool->timers_open)
		return;
	pool->closed_cb = NULL;
	cb(pool->closed_arg);
}

/* Closing, and nothing in flight any more: close the timers; their close
 * callback tells the owner. */
static void maybe_closed(struct relay_pool *pool)
{
	if (!pool->stopping || pool->closed_timer || !relay_pool_idle(pool))
		return;
	pool->closed_timer = true;
	pool->timers_open = 2;
	uv_close((uv_handle_t *)&pool->pause_timer, timer_closed_cb);
	uv_close((uv_handle_t *)&pool->cred_timer, timer_closed_cb);
}

void relay_pool_free(struct relay_pool *pool)
{
	for (size_t i = 0; i < pool->n_relays; i++)
		relay_free(pool->relays[i]);
	free(pool->relays);
	free(pool);
}
