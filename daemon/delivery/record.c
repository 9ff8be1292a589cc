/*
 * Purpose: the spool work of a delivery, as thread-pool jobs: loading a due
 * message before its transaction (a fresh one from what ingest handed
 * over, core/handoff.h, whose being-sent marks go in batches; the others
 * from the spool), or putting it back unsent; recording what the failure
 * policy (policy.c) decides after it (removals in batches that share one
 * fsync of data/), and spacing out notifications (the [bounce] rate_limit).
 * Owns: each struct delivery, from relay__delivery_new until the done of
 * its last job frees it, with the handoff it took; the removal and mark
 * batches and the pool's lists of deliveries waiting for them; the
 * pool's bounce pacing (next_bounce_ms) and its counts of loads and records
 * in flight.
 * Invariants: the spool work of a delivery (loading it before the
 * transaction, recording its outcome after) runs on the thread pool, never
 * on the loop thread; a delivery's outcome is written to the spool before
 * its log lines say so and before it is scheduled again; this file does not
 * decide retry or bounce: policy.c does; no transaction starts on a
 * read-only spool, and each is marked in the spool (spool_mark_sending)
 * before it is; a message loaded for a session that can no longer send it
 * goes back to the schedule unmarked; the done of every job ends in
 * relay__maybe_closed, so that a closing pool sees its last job end.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "daemon/core/handoff.h"
#include "daemon/delivery/bounce.h"
#include "daemon/delivery/policy.h"
#include "daemon/delivery/relay_int.h"
#include "daemon/delivery/sched.h"

/* ---- recording outcomes (thread pool) ------------------------------------------------ */

void relay__delivery_free(struct delivery *d)
{
	smtpc_txn_deinit(&d->txn);
	spool_env_deinit(&d->env);
	policy_outcome_deinit(&d->out);
	free(d->load_why);
	free(d->defer_why);
	free(d->read_content);
	handoff_free(d->handoff);
	free(d);
}

/* Each job of a delivery's ends here: the pool, stopping, may have no more
 * work in flight (d may be freed by its done). */
static void delivery_done_cb(struct job *j)
{
	struct delivery *d = (struct delivery *)j;
	struct relay_pool *pool = d->pool;
	d->done(j);
	relay__maybe_closed(pool);
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
		if (d->txn.bytes_unread > 0)
			log_debug("%s: %llu of %llu octets sent from the page cache (sendfile)",
				  d->env.id, (unsigned long long)d->txn.bytes_unread,
				  (unsigned long long)d->txn.bytes_sent);
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
	relay__delivery_free(d);
	relay_pool_wake(pool);
}

/* ---- removals in batches ------------------------------------------------------------ */

#define DELIVERY_BATCH 64
#define REMOVE_JOBS    4

/* Deliveries that one pool job works for: whose message is done, removed
 * together; or, before their dots, marked together. */
struct delivery_batch {
	struct job job;
	struct relay_pool *pool;
	struct delivery *d[DELIVERY_BATCH];
	size_t n;
};

static void removal_fn(struct job *j)
{
	struct delivery_batch *b = (struct delivery_batch *)j;
	char *ids[DELIVERY_BATCH];
	int errs[DELIVERY_BATCH];
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
	struct delivery_batch *b = (struct delivery_batch *)j;
	struct relay_pool *pool = b->pool;
	pool->rm_running--;
	for (size_t i = 0; i < b->n; i++) {
		b->d[i]->job.pd = j->pd;
		record_done(&b->d[i]->job);
	}
	free(b);
	removal_pump(pool);
	relay__maybe_closed(pool);
}

static void list_push(struct delivery_list *l, struct delivery *d)
{
	d->next = NULL;
	if (l->tail)
		l->tail->next = d;
	else
		l->head = d;
	l->tail = d;
	l->n++;
}

static struct delivery *list_pop(struct delivery_list *l)
{
	struct delivery *d = l->head;
	if (d == NULL)
		return NULL;
	l->head = d->next;
	if (l->head == NULL)
		l->tail = NULL;
	l->n--;
	return d;
}

static void removal_pump(struct relay_pool *pool)
{
	while (pool->rm.n && pool->rm_running < REMOVE_JOBS &&
	       (pool->rm_running == 0 || pool->rm.n >= DELIVERY_BATCH)) {
		struct delivery_batch *b = xcalloc(1, sizeof(*b));
		b->pool = pool;
		while (b->n < DELIVERY_BATCH && pool->rm.n)
			b->d[b->n++] = list_pop(&pool->rm);
		pool->rm_running++;
		job_submit(pool->pd, &b->job, removal_fn, removal_done);
	}
}

/* A delivered message is removed with the others done meanwhile. */
static void removal_add(struct relay_pool *pool, struct delivery *d)
{
	list_push(&pool->rm, d);
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
void relay__record(struct delivery *d)
{
	struct relay_pool *pool = d->pool;
	const struct config *cfg = pool->pd->cfg;
	int64_t now = pickupd_now_ms();
	struct policy_where where = {.peer = d->peer,
				     .relay_name = d->relay_name,
				     .dispatch_ms = d->dispatch_ms,
				     .setup_ms = d->setup_ms};
	d->done_ms = now;
	/* The transaction is over: its content's budget is free for others. */
	d->txn.content = NULL;
	if (d->handoff && d->handoff->content) {
		handoff_drop_content(d->handoff);
		pool->cbs.handoff_progress(pool->cbs.arg);
	}
	free(d->read_content);
	d->read_content = NULL;
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

/* ---- loading due messages (thread pool) ---------------------------------------- */

/* The envelope of a due message, moved into queue/ when it was deferred.
 * 0, or -1 with d->loaded saying why (LOAD_NONE: nothing to do). */
static int load_envelope(struct delivery *d, struct spool *sp, struct buf *why)
{
	const struct sched_item *it = &d->item;
	if (d->handoff) {
		/* A fresh message: queue/ holds what ingest handed over. */
		d->env = d->handoff->env;
		memset(&d->handoff->env, 0, sizeof(d->handoff->env));
		return 0;
	}
	if (it->state == SPOOL_DEFERRED) {
		/* No fsync: after a crash it is in one of the two, both fine. */
		if (spool_move_nosync(sp, it->id, SPOOL_DEFERRED, SPOOL_QUEUE) < 0) {
			d->err = errno;
			if (errno != ENOENT && errno != EROFS)
				d->loaded = LOAD_MOVE_FAILED;
			return -1;
		}
	} else if (it->state != SPOOL_QUEUE) {
		return -1;
	}
	if (spool_env_read(sp, SPOOL_QUEUE, it->id, &d->env, why) < 0) {
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
		d->load_why = buf_steal(why);
		return -1;
	}
	return 0;
}

/* A small content (at most HANDOFF_MAX_CONTENT, as a handoff's) is read
 * whole here, in the load job: the session then sends it from memory, not
 * one thread-pool read after another (each a wake-up of a pool thread and
 * then of the loop). Anything else, or a short read, stays on the
 * descriptor, read by the session as before. */
static void read_small(struct delivery *d)
{
	struct stat st;
	int fd = d->txn.data_fd;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
	    st.st_size > HANDOFF_MAX_CONTENT)
		return;
	size_t len = (size_t)st.st_size, got = 0;
	char *p = xmalloc(len);
	while (got < len) {
		ssize_t n = pread(fd, p + got, len - got, (off_t)got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	if (got != len) {
		free(p);
		return;
	}
	d->read_content = p;
	d->txn.content = p;
	d->txn.content_len = len;
	close(fd);
	d->txn.data_fd = -1;
}

/* Loads a due message for sending (thread pool): moves it into queue/,
 * reads its envelope (unless ingest handed it over), opens its content and
 * marks it as being sent. Logs nothing and touches no loop state: load_done
 * does. */
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
	if (load_envelope(d, sp, &why) < 0)
		goto out;
	/* A small fresh message's content came with its handoff. */
	bool in_memory = d->handoff && d->handoff->content;
	int fd = in_memory ? -1 : spool_data_open(sp, it->id);
	if (fd < 0 && !in_memory) {
		d->err = errno;
		d->loaded = LOAD_NO_CONTENT;
		free(d->env.reason);
		d->env.reason = xstrdup("content file missing or unreadable");
		spool_env_write(sp, SPOOL_QUEUE, &d->env);
		spool_move(sp, it->id, SPOOL_QUEUE, SPOOL_BADMAIL);
		goto out;
	}
	/* Marked before it is sent, so that recovery can name it if the outcome
	 * never gets recorded; also the last check that it can be. A handed
	 * over envelope is as ingest wrote it: its mode is known. */
	if ((d->handoff ? spool_mark_sending_new(sp, it->id) : spool_mark_sending(sp, it->id)) <
	    0) {
		d->err = errno;
		if (errno != EROFS && errno != ENOENT)
			d->loaded = LOAD_MARK_FAILED;
		if (fd >= 0)
			close(fd);
		goto out;
	}
	smtpc_txn_init(&d->txn, &d->env, fd);
	if (in_memory) {
		d->txn.content = d->handoff->content;
		d->txn.content_len = d->handoff->content_len;
	} else {
		read_small(d);
	}
	d->loaded = LOAD_OK;
out:
	buf_deinit(&why);
}

static void log_active(struct delivery *d);
static bool start_send(struct delivery *d, struct session *s);

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
	relay__delivery_free(d);
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

static void load_done(struct job *j)
{
	struct delivery *d = (struct delivery *)j;
	struct relay_pool *pool = d->pool;
	struct pickupd *pd = j->pd;
	struct session *s = d->s;
	const char *id = d->item.id;

	pool->loads_in_flight--;
	if (s)
		relay__session_detach(s, d);
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
	if (d->loaded == LOAD_OK)
		log_active(d);
	if (d->loaded != LOAD_OK) {
		relay__delivery_free(d);
		if (s) {
			s->relay->next_send_ms = 0; /* nothing was sent */
			relay__session_idle(s);
		}
		return;
	}
	if (d->defer) {
		d->txn.cls = d->defer_cls;
		d->txn.reply = d->defer_why;
		d->defer_why = NULL;
		relay__record(d);
		return;
	}
	if (s == NULL || !relay__session_takes_work(s)) {
		unload(d);
		if (s && s->d == NULL)
			smtpc_quit(s->smtpc);
		return;
	}
	start_send(d, s);
}

/* A loaded message becomes active (d->loaded is LOAD_OK). */
static void log_active(struct delivery *d)
{
	d->dispatch_ms = pickupd_now_ms();
	log_debug("%s: loaded from %s", d->item.id,
		  d->handoff == NULL
		      ? (d->read_content ? "the spool (content read whole)" : "the spool")
		  : d->read_content ? "memory (envelope; content read whole from the spool)"
		  : d->txn.content  ? "memory (envelope and content)"
				    : "memory (envelope; content from the spool)");
	/* Postfix's qmgr line as a message becomes active: pflogsumm takes
	 * the size and the sender's domain from it. */
	log_svc(LOG_LVL_INFO, "qmgr", "%s: from=<%s>, size=%llu, nrcpt=%zu (queue active)",
		d->item.id, d->env.sender, (unsigned long long)d->env.size, d->env.n_rcpts);
}

/* Sends a loaded message on s, which takes work; false when it was not sent
 * (the server cannot take it: recorded as refused). */
static bool start_send(struct delivery *d, struct session *s)
{
	char why[256];
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
		relay__record(d);
		relay__session_idle(s);
		return false;
	}
	relay__session_attach(s, d);
	smtpc_send(s->smtpc, &d->txn);
	return true;
}

/* ---- sending straight from a handoff --------------------------------------------- */

/* Messages sent straight from their handoffs are marked by one pool job
 * (a delivery_batch): under load the marks asked for while one job runs
 * share the next, so that a message costs no pool round trip of its own (a
 * job is four futex calls and a wake-up of the loop). */
static void mark_batch_fn(struct job *j)
{
	struct delivery_batch *b = (struct delivery_batch *)j;
	struct spool *sp = &j->pd->spool;
	for (size_t i = 0; i < b->n; i++) {
		struct delivery *d = b->d[i];
		d->err = 0;
		if (spool_readonly(sp))
			d->err = EROFS;
		else if (spool_mark_sending_new(sp, d->env.id) < 0)
			d->err = errno;
	}
}

/* What held a delivery's dot, or its record, is done (mark_err: its mark
 * failed, errno): the dot goes, or the transaction ends without it; one over
 * (refused, or the session went, or its reply is in) goes on to its record. */
static void dot_gate_done(struct delivery *d, int mark_err)
{
	struct relay_pool *pool = d->pool;
	if (mark_err && d->txn.dot_sent)
		/* An offer's dot does not wait (relay_pool_take_offer): too
		 * late to hold it; recovery would not name this one. */
		log_error("%s: cannot mark the envelope as being sent: %s; should pickupd stop "
			  "before the outcome is recorded, the message may be delivered twice "
			  "unnamed",
			  d->env.id, strerror(mark_err));
	if (d->ended) {
		relay__delivery_ended(d, NULL); /* may free d */
		relay_pool_wake(pool);
	} else if (mark_err && !d->txn.dot_sent) {
		char why[160];
		snprintf(why, sizeof(why), "cannot mark the envelope as being sent: %s",
			 strerror(mark_err));
		log_error("%s: %s", d->env.id, why);
		smtpc_fail_held(d->s->smtpc, &d->txn, why);
	} else {
		smtpc_release_dot(d->s->smtpc, &d->txn);
	}
}

static void mark_pump(struct relay_pool *pool);

static void mark_batch_done(struct job *j)
{
	struct delivery_batch *b = (struct delivery_batch *)j;
	struct relay_pool *pool = b->pool;
	for (size_t i = 0; i < b->n; i++) {
		struct delivery *d = b->d[i];
		pool->loads_in_flight--;
		d->marking = false;
		/* May free d; a dot that goes may bring the session's next
		 * message, whose mark waits for the next job. */
		dot_gate_done(d, d->err);
	}
	free(b);
	pool->mk_running = false;
	mark_pump(pool);
	relay__maybe_closed(pool);
}

/* One mark job at a time: those asked for meanwhile wait for the next. */
static void mark_pump(struct relay_pool *pool)
{
	if (pool->mk_running || pool->mk.n == 0)
		return;
	struct delivery_batch *b = xcalloc(1, sizeof(*b));
	b->pool = pool;
	while (b->n < DELIVERY_BATCH && pool->mk.n)
		b->d[b->n++] = list_pop(&pool->mk);
	pool->mk_running = true;
	job_submit(pool->pd, &b->job, mark_batch_fn, mark_batch_done);
}

/* A fresh message's transaction from what its handoff holds (envelope and
 * whole content), its final dot held. */
static void txn_from_handoff(struct delivery *d)
{
	d->env = d->handoff->env;
	memset(&d->handoff->env, 0, sizeof(d->handoff->env));
	smtpc_txn_init(&d->txn, &d->env, -1);
	d->txn.content = d->handoff->content;
	d->txn.content_len = d->handoff->content_len;
	d->txn.dot_held = true;
	d->loaded = LOAD_OK;
}

bool relay_pool_take_offer(struct pickupd *pd, struct handoff_offer *o)
{
	struct relay_pool *pool = pd->pool;
	char why[256];
	if (pool->stopping || o->h == NULL || sched_has_due(pd->sched))
		return false;
	struct session *s = relay__idle_session(pool);
	/* What the server cannot take goes the usual way, and is recorded. */
	if (s == NULL || smtpc_check_capable(s->smtpc, &o->h->env, why, sizeof(why)) ||
	    !handoff_offer_take(o))
		return false;
	struct sched_item it = {.state = SPOOL_QUEUE};
	snprintf(it.id, sizeof(it.id), "%s", o->h->env.id);
	struct delivery *d = relay__delivery_new(pool, &it);
	handoff_free(d->handoff); /* none: it is not in the schedule */
	d->handoff = o->h;
	o->h = NULL;
	o->taker = d;
	d->offer = o;
	d->s = s;
	txn_from_handoff(d);
	/* The dot does not wait for the claim's flush: the ingest job marked
	 * the content before it offered it (recovery names such a message as
	 * one that may arrive twice), and the outcome is recorded once the
	 * claim is complete (claim_pending). */
	d->txn.dot_held = false;
	d->claim_pending = true;
	pool->loads_in_flight++; /* until the job is over */
	start_send(d, s);
	return true;
}

void relay_pool_offer_done(struct pickupd *pd, struct handoff_offer *o, bool queued)
{
	struct relay_pool *pool = pd->pool;
	struct delivery *d = o->taker;
	pool->loads_in_flight--;
	d->claim_pending = false;
	d->offer = NULL;
	if (!queued) {
		/* Put back, refused or gone: the spool holds nothing of it to
		 * send or record. When the dot went, the server may have it,
		 * and the file is taken again. */
		if (d->txn.dot_sent)
			log_warn("%s: its claim was not completed after the message was sent; the "
				 "file is taken again and the message may be delivered twice",
				 d->env.id);
		if (d->ended) {
			relay__delivery_free(d);
		} else {
			d->discard = true;
			if (!d->txn.dot_sent)
				smtpc_fail_held(d->s->smtpc, &d->txn,
						"its claim was not completed");
		}
		relay__maybe_closed(pool);
		return;
	}
	/* The qmgr line after the pickup line, as for any message. */
	log_active(d);
	dot_gate_done(d, o->mark_err);
	relay__maybe_closed(pool);
}

/* A fresh message whose envelope and content came with its handoff needs
 * no disk to be sent: it goes at once, and the one disk step, its mark,
 * runs on the thread pool beside the envelope commands. Its final dot waits
 * for the mark (dot_held), so that a message the server may have taken is
 * always marked, as when load_fn marks first. */
static bool send_from_handoff(struct delivery *d, struct session *s)
{
	struct relay_pool *pool = d->pool;
	if (d->handoff == NULL || d->handoff->content == NULL || spool_readonly(&pool->pd->spool))
		return false;
	txn_from_handoff(d);
	log_active(d);
	pool->cbs.handoff_progress(pool->cbs.arg);
	if (!start_send(d, s))
		return true; /* recorded as refused, never marked */
	d->marking = true;
	pool->loads_in_flight++;
	list_push(&pool->mk, d);
	mark_pump(pool);
	return true;
}

struct delivery *relay__delivery_new(struct relay_pool *pool, const struct sched_item *it)
{
	struct delivery *d = xcalloc(1, sizeof(*d));
	d->pool = pool;
	d->item = *it;
	if (it->state == SPOOL_QUEUE)
		d->handoff = sched_take_handoff(pool->pd->sched, it->id);
	d->txn.data_fd = -1; /* until smtpc_txn_init */
	snprintf(d->relay_name, sizeof(d->relay_name), "none");
	return d;
}

/* Starts loading a due message on the thread pool, for session s (NULL:
 * for defer_due); load_done goes on from there. */
void relay__delivery_load(struct delivery *d, struct session *s)
{
	d->s = s;
	if (s && send_from_handoff(d, s))
		return;
	if (s)
		relay__session_attach(s, d);
	d->pool->loads_in_flight++;
	delivery_job(d, load_fn, load_done);
}
