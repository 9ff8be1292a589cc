/*
 * Purpose: the relay session pool: sessions per relay, dispatch of due
 * messages to them (each loaded and recorded by record.c's jobs), rate
 * limits, concurrency feedback, pauses and reload.
 * Owns: the relays and their session lists; the pause and credential
 * timers; a reference to each relay's SSL_CTX and to the configuration its
 * settings are in, and one more to both for each session (what a reload
 * replaces is freed when the last session opened with it ends).
 * Invariants: no spool work runs here: record.c's jobs load each message
 * before its transaction and record its outcome after, on the thread pool;
 * neither protocol code (smtpc) nor this file decides retry or bounce:
 * policy.c does (as Postfix's smtp_trouble.c); relays are used in the order
 * configured, the next one only while an earlier one is paused; a relay is
 * paused only when no session to it works (a connection refused beside
 * working sessions lowers its concurrency limit instead); an AUTH pause
 * lasts only while the credentials are unchanged and no reload or flush
 * came; the pool reports closed only once no session, load, record or probe
 * is left.
 */
#include "daemon/delivery/relay.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "daemon/smtp/credprobe.h"
#include "daemon/delivery/policy.h"
#include "daemon/delivery/relay_int.h"
#include "daemon/delivery/sched.h"
#include "daemon/smtp/secret.h"

#define RELAY_CRED_CHECK_MS 1000 /* a paused relay's password file is looked at this often */
#define DEFER_BATCH	    1000

/* ---- dispatch ----------------------------------------------------------------------- */

static bool dispatch(struct session *s);

/* s may be given another message; otherwise it should QUIT. */
bool relay__session_takes_work(const struct session *s)
{
	const struct relay *r = s->relay;
	return !r->pool->stopping && !r->retired && s->gen == r->gen &&
	       smtpc_messages(s->smtpc) < r->cfg->max_messages_per_session;
}

/* s has no transaction: the next message, or QUIT. (With one, its DONE
 * decides: a next that could not go leaves it as it was.) */
void relay__session_idle(struct session *s)
{
	if (s->d != NULL)
		return;
	if (!relay__session_takes_work(s))
		smtpc_quit(s->smtpc);
	else if (!dispatch(s))
		relay_pool_wake(s->relay->pool); /* maybe another relay or later work */
}

void relay__session_attach(struct session *s, struct delivery *d)
{
	if (s->d == NULL || s->d == d)
		s->d = d;
	else
		s->d_next = d;
}

void relay__session_detach(struct session *s, struct delivery *d)
{
	if (s->d == d)
		s->d = NULL;
	else if (s->d_next == d)
		s->d_next = NULL;
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
	/* record_done wakes the pool as the backlog shrinks. */
	if (pool->stopping || pool->records_in_flight >= RECORDS_MAX || !sched_has_due(pd->sched) ||
	    !relay_may_send(s->relay, pickupd_now_ms()) || !sched_pop_due(pd->sched, &it))
		return false;
	relay__delivery_load(relay__delivery_new(pool, &it), s);
	return true;
}

/* Defers due messages when no relay can take them, so each records why. */
static void defer_due(struct relay_pool *pool, enum smtpc_class cls, const char *why,
		      const char *peer, const char *relay_name)
{
	struct sched_item it;
	for (int n = 0; n < DEFER_BATCH && sched_pop_due(pool->pd->sched, &it); n++) {
		struct delivery *d = relay__delivery_new(pool, &it);
		snprintf(d->peer, sizeof(d->peer), "%s", peer);
		snprintf(d->relay_name, sizeof(d->relay_name), "%s", relay_name);
		d->defer = true;
		d->defer_cls = cls;
		d->defer_why = xstrdup(why);
		relay__delivery_load(d, NULL);
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
	relay__maybe_closed(pool);
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

/* Waiting for its transaction's final reply, with room for the next
 * behind it (RFC 2920): a message due now goes at once, without waiting
 * for the reply or opening a session. */
static bool session_pipelines(const struct session *s)
{
	return s->ready && s->d_next == NULL && s->gen == s->relay->gen &&
	       smtpc_takes_next(s->smtpc) && relay__session_takes_work(s);
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
	case SMTPC_EV_NEXT:
		/* The next due message goes behind this one's dot. */
		if (session_pipelines(s))
			dispatch(s);
		break;
	case SMTPC_EV_DONE: {
		struct delivery *d = s->d;
		s->d = s->d_next; /* DONE comes for each in turn */
		s->d_next = NULL;
		if (d && d->discard) {
			relay__delivery_free(d); /* its claim never completed */
		} else if (d && (d->marking || d->claim_pending)) {
			/* Before its mark or claim is done: mark_batch_done or
			 * relay_pool_offer_done records it, without the relay,
			 * whose success counts now (an offer's dot does not
			 * wait for its claim). */
			if (d->txn.cls == SMTPC_OK && !d->txn.session_stale)
				relay_delivered(r);
			d->ended = true;
			d->s = NULL;
		} else if (d) {
			relay__delivery_ended(d, r);
		}
		if (s->d == NULL && smtpc_idle(c)) {
			if (!relay__session_takes_work(s))
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
		if (s->d_next)
			s->d_next->s = NULL;
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
			relay__maybe_closed(pool);
		else
			relay_pool_wake(pool);
		break;
	}
	}
}

/* Ready, of its relay's generation, with no transaction and none loading. */
static bool session_waiting(const struct session *s)
{
	return s->ready && s->d == NULL && s->gen == s->relay->gen && smtpc_idle(s->smtpc);
}

struct session *relay__idle_session(struct relay_pool *pool)
{
	int64_t now = pickupd_now_ms();
	if (pool->records_in_flight >= RECORDS_MAX)
		return NULL;
	for (size_t i = 0; i < pool->n_relays; i++) {
		struct relay *r = pool->relays[i];
		if (relay_paused(r, now))
			continue;
		if (r->retired || r->cfg->rate_limit)
			return NULL;
		for (struct session *s = r->sessions; s; s = s->next)
			if (session_waiting(s) && relay__session_takes_work(s))
				return s;
		return NULL; /* later relays only while this one is paused */
	}
	return NULL;
}

void relay__delivery_ended(struct delivery *d, struct relay *r)
{
	if (d->txn.session_stale) {
		/* An idle session the server had dropped: nothing was
		 * attempted, so no attempt is counted; it goes again now. */
		log_debug("%s: session to %s was stale; sending again", d->env.id, d->peer);
		sched_add(d->pool->pd->sched, d->env.id, SPOOL_QUEUE, 0);
		relay__delivery_free(d);
		return;
	}
	if (d->txn.cls == SMTPC_OK && r)
		relay_delivered(r);
	relay__record(d);
}

void relay_pool_wake(struct relay_pool *pool)
{
	struct pickupd *pd = pool->pd;
	int64_t now = pickupd_now_ms();
	if (pool->stopping || pool->records_in_flight >= RECORDS_MAX)
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
			if (session_waiting(s) || session_pipelines(s))
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
	relay__maybe_closed(pool);
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
void relay__maybe_closed(struct relay_pool *pool)
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
