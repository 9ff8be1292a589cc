/*
 * Purpose: the failure policy (as Postfix's smtp_trouble.c): what a
 * transaction's result means for each recipient, for the message and for
 * the sender; the retry schedule; how long a failing relay rests, when its
 * concurrency limit moves, how often paused credentials are looked at.
 * Owns: nothing; every function is pure (inputs are arguments, results are
 * returned or written into the caller's structs).
 * Invariants: no I/O, no clock, no random(), no libuv, no global state: the
 * same inputs always give the same outcome (tests/unit/delivery/test_policy.c
 * holds it to a table). Failures are classified once, here: only permanent
 * replies and expiry fail a recipient, and never under soft_bounce; a
 * temporary_reply match makes a permanent reply temporary; a recipient
 * already sent or failed is never touched again; a message whose sender is
 * <> is never bounced. Each recipient's log line is built in one function
 * (log_rcpt).
 */
#include "daemon/delivery/policy.h"

#include <stdlib.h>
#include <string.h>

#include "daemon/delivery/bounce.h"

int64_t policy_retry_delay_ms(const struct config_retry *r, unsigned attempt, unsigned random)
{
	if (r->n_schedule == 0)
		return 60000;
	size_t i = attempt == 0 ? 0 : attempt - 1;
	if (i >= r->n_schedule)
		i = r->n_schedule - 1;
	int64_t base = (int64_t)r->schedule_ms[i];
	/* Jitter spreads retries of messages deferred together. */
	int64_t span = base * (int64_t)r->jitter_percent / 100;
	if (span > 0)
		base += (int64_t)(random % (uint64_t)(span + 1));
	return base;
}

static bool reply_overridden_temporary(const struct config_retry *cfg, const char *reply)
{
	for (size_t i = 0; reply && i < cfg->n_temporary_replies; i++)
		if (strncmp(reply, cfg->temporary_replies[i], strlen(cfg->temporary_replies[i])) ==
		    0)
			return true;
	return false;
}

static const char *status_word(enum spool_rcpt_status st)
{
	return st == RCPT_SENT ? "sent" : st == RCPT_FAILED ? "bounced" : "deferred";
}

/* The per-recipient line, the only place it is built, with Postfix smtp(8)'s
 * fields in its order so that its tools (pflogsumm) read it:
 * "ID: to=<a@b>, relay=host[ip]:port, delay=T, delays=a/b/c/d, dsn=X.Y.Z,
 * status=sent (reply), relay_name=NAME". delays= splits delay: a, before
 * the queue (0: arrival is the claim into the queue); b, in the queue until
 * this attempt, less c; c, connection setup (connect, TLS, AUTH) that this
 * attempt waited for; d, the transaction. */
static void log_rcpt(struct buf *log, const struct spool_env *env, const char *addr,
		     const struct policy_where *w, int64_t now, enum spool_rcpt_status st,
		     const char *reply)
{
	static const int klass[] = {[RCPT_SENT] = 2, [RCPT_FAILED] = 5};
	char dsn[40];
	int64_t queued = w->dispatch_ms > env->arrival_ms ? w->dispatch_ms - env->arrival_ms : 0;
	int64_t setup = w->setup_ms < queued ? w->setup_ms : queued;
	int64_t sending = now > w->dispatch_ms ? now - w->dispatch_ms : 0;
	bounce_status(reply, klass[st] ? klass[st] : 4, dsn, sizeof(dsn));
	buf_printf(log,
		   "%s: to=<%s>, relay=%s, delay=%.2f, delays=0/%.2f/%.2f/%.2f, dsn=%s, "
		   "status=%s (%s), relay_name=%s\n",
		   env->id, addr, w->peer, (double)(now - env->arrival_ms) / 1000.0,
		   (double)(queued - setup) / 1000.0, (double)setup / 1000.0,
		   (double)sending / 1000.0, dsn, status_word(st), reply ? reply : "",
		   w->relay_name);
}

/* Turns the transaction's results into recipient statuses, the action and
 * the log lines. One place decides; see DESIGN.md "Delivery semantics". */
void policy_decide(const struct config_retry *retry, const struct config_bounce *bounce,
		   const struct spool_env *env, const struct smtpc_txn *t,
		   const struct policy_where *where, int64_t now, unsigned random,
		   struct policy_outcome *out)
{
	double delay = (double)(now - env->arrival_ms) / 1000.0;
	size_t n_deferred = 0, n_failed = 0;
	const char *first_failure = NULL;

	memset(out, 0, sizeof(*out));
	buf_init(&out->log);
	out->n_rcpts = env->n_rcpts;
	out->rcpt = xcalloc(env->n_rcpts ? env->n_rcpts : 1, sizeof(*out->rcpt));
	/* Every outcome is one attempt, whatever it leads to: a message that
	 * goes to badmail (partly delivered or not) shows how many it had. */
	out->attempts = env->attempts + 1;

	for (size_t i = 0; i < env->n_rcpts; i++) {
		const struct spool_rcpt *r = &env->rcpts[i];
		const struct smtpc_rcpt_result *rr = t->rcpt ? &t->rcpt[i] : NULL;
		struct policy_rcpt *o = &out->rcpt[i];
		enum smtpc_class cls;
		const char *reply;
		o->status = r->status;
		/* The recipients this attempt was for: the ones not yet done. */
		if (r->status != RCPT_PENDING && r->status != RCPT_DEFERRED)
			continue;
		o->attempted = true;
		if (rr && rr->tried && rr->final) {
			cls = rr->cls;
			reply = rr->reply;
		} else {
			cls = t->cls != SMTPC_OK ? t->cls : SMTPC_CONN;
			reply = t->reply ? t->reply : "lost connection with the relay";
		}
		if (cls == SMTPC_OK)
			o->status = RCPT_SENT;
		else if (cls == SMTPC_PERM && !retry->soft_bounce &&
			 !reply_overridden_temporary(retry, reply))
			o->status = RCPT_FAILED;
		else
			o->status = RCPT_DEFERRED;
		o->reply = xstrdup(reply ? reply : "");
	}
	/* Expiry: a recipient still deferred past max_age fails for good. */
	bool expired = retry->max_age_ms && now - env->arrival_ms >= (int64_t)retry->max_age_ms;
	for (size_t i = 0; i < env->n_rcpts; i++) {
		struct policy_rcpt *o = &out->rcpt[i];
		const char *reply = o->attempted ? o->reply : env->rcpts[i].reply;
		if (o->attempted && o->status == RCPT_DEFERRED && expired && !retry->soft_bounce) {
			struct buf why = BUF_INIT;
			buf_printf(&why,
				   "message expired after %.0f s in the queue; last reply: %s",
				   delay, o->reply);
			free(o->reply);
			reply = o->reply = buf_steal(&why);
			o->status = RCPT_FAILED;
		}
		n_deferred += o->status == RCPT_DEFERRED;
		if (o->status == RCPT_FAILED) {
			n_failed++;
			if (first_failure == NULL)
				first_failure = reply;
		}
	}
	/* Log lines for the recipients of this attempt. */
	for (size_t i = 0; i < env->n_rcpts; i++) {
		const struct policy_rcpt *o = &out->rcpt[i];
		if (!o->attempted)
			continue;
		out->n_sent += o->status == RCPT_SENT;
		out->n_deferred += o->status == RCPT_DEFERRED;
		out->n_failed += o->status == RCPT_FAILED;
		log_rcpt(&out->log, env, env->rcpts[i].addr, where, now, o->status, o->reply);
	}
	if (t->maybe_delivered)
		buf_printf(&out->log,
			   "%s: warning: connection lost after the end of data; the message may be "
			   "delivered twice\n",
			   env->id);
	if (n_deferred) {
		out->action = POLICY_DEFER;
		out->next_ms = now + policy_retry_delay_ms(retry, out->attempts, random);
		/* A "still trying" notice, once per message. */
		out->warn = bounce->enabled && bounce->delay_warning_ms && !env->delay_warned &&
			    env->sender[0] != '\0' &&
			    now - env->arrival_ms >= (int64_t)bounce->delay_warning_ms;
	} else if (n_failed) {
		struct buf why = BUF_INIT;
		out->action = POLICY_BADMAIL;
		buf_printf(&why, "delivery failed for %zu recipient(s) after %u attempt(s): %s",
			   n_failed, out->attempts, first_failure ? first_failure : "");
		out->reason = buf_steal(&why);
		if (env->sender[0] == '\0')
			buf_printf(&out->log, "%s: not bounced: the sender is <>\n", env->id);
		else
			out->bounce = bounce->enabled;
	} else {
		out->action = POLICY_REMOVE;
	}
}

void policy_apply(struct policy_outcome *o, struct spool_env *env)
{
	for (size_t i = 0; i < env->n_rcpts && i < o->n_rcpts; i++) {
		struct policy_rcpt *pr = &o->rcpt[i];
		if (!pr->attempted)
			continue;
		env->rcpts[i].status = pr->status;
		free(env->rcpts[i].reply);
		env->rcpts[i].reply = pr->reply;
		pr->reply = NULL;
	}
	env->attempts = o->attempts;
	if (o->action == POLICY_DEFER)
		env->next_ms = o->next_ms;
	if (o->warn)
		env->delay_warned = true;
	if (o->action == POLICY_BADMAIL) {
		free(env->reason);
		env->reason = o->reason;
		o->reason = NULL;
	}
}

void policy_outcome_deinit(struct policy_outcome *o)
{
	for (size_t i = 0; i < o->n_rcpts; i++)
		free(o->rcpt[i].reply);
	free(o->rcpt);
	free(o->reason);
	buf_deinit(&o->log);
	memset(o, 0, sizeof(*o));
}

/* ---- relays -------------------------------------------------------------------------- */

#define RELAY_MAX_PAUSE_MS   (5 * 60 * 1000)
#define RELAY_PROBE_FIRST_MS 5000
#define RELAY_PROBE_MAX_MS   (5 * 60 * 1000)

struct policy_pause policy_relay_pause(enum smtpc_class cls, unsigned failures)
{
	struct policy_pause p = {0, false};
	if (cls == SMTPC_AUTH) {
		p.ms = POLICY_AUTH_PAUSE_MS;
		p.until_credentials_change = true;
		return p;
	}
	unsigned shift = failures > 9 ? 9 : failures ? failures - 1 : 0;
	p.ms = 1000LL << shift;
	if (p.ms > RELAY_MAX_PAUSE_MS)
		p.ms = RELAY_MAX_PAUSE_MS;
	return p;
}

bool policy_relay_lowers_limit(enum smtpc_class cls, unsigned working)
{
	return (cls == SMTPC_CONN || cls == SMTPC_TEMP) && working > 0;
}

unsigned policy_relay_raise_limit(unsigned limit, unsigned max_sessions)
{
	return limit + 1 >= max_sessions ? 0 : limit + 1;
}

int64_t policy_probe_delay_ms(unsigned auth_failures)
{
	unsigned shift = auth_failures > 7 ? 6 : auth_failures ? auth_failures - 1 : 0;
	int64_t d = (int64_t)RELAY_PROBE_FIRST_MS << shift;
	return d > RELAY_PROBE_MAX_MS ? RELAY_PROBE_MAX_MS : d;
}
