/*
 * policy: the failure policy, as Postfix keeps it in smtp_trouble.c. What a
 * transaction's result means for each recipient (sent / deferred / failed),
 * for the message (removed, deferred until when, or to badmail, with or
 * without a notification to the sender), and for the relay (how long it is
 * paused). Pure functions: every input is an argument (configuration, the
 * envelope, the result, the clock, a random number); no I/O, no libuv, no
 * global state. relay.c acts on what they decide.
 */
#ifndef PICKUPD_POLICY_H
#define PICKUPD_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/config.h"
#include "daemon/smtp/smtpc_result.h"
#include "spool/spool.h"

enum policy_action {
	POLICY_REMOVE,	/* every recipient is done and none failed: the message goes */
	POLICY_DEFER,	/* some recipient waits for another attempt (next_ms) */
	POLICY_BADMAIL, /* nothing left to try and some recipient failed for good */
};

/* One recipient after this attempt. */
struct policy_rcpt {
	bool attempted; /* it was waiting (pending or deferred) and so part of this attempt */
	enum spool_rcpt_status status; /* new status; the envelope's when not attempted */
	char *reply;		       /* new last reply (attempted only); owned */
};

/* What one attempt comes to. Owner: the caller (policy_outcome_deinit). */
struct policy_outcome {
	enum policy_action action;
	struct policy_rcpt *rcpt; /* one per envelope recipient, in its order */
	size_t n_rcpts;
	unsigned attempts; /* the envelope's attempt count, this attempt included */
	int64_t next_ms;   /* POLICY_DEFER: when the next attempt is due */
	char *reason;	   /* POLICY_BADMAIL: the envelope's badmail reason; owned */
	bool bounce;	   /* POLICY_BADMAIL: send the sender a non-delivery notification */
	bool warn;	   /* POLICY_DEFER: send the sender a delay notification (once) */
	size_t n_sent, n_deferred, n_failed; /* recipients of this attempt, for the counters */
	struct buf log; /* lines ("ID: text\n"), to be logged once the outcome is recorded */
};

/* Where and when the attempt ran, for its log lines. */
struct policy_where {
	const char *peer;	/* relay=: host[ip]:port */
	const char *relay_name; /* relay_name=: the [relay NAME] section, or "none" */
	int64_t dispatch_ms;	/* the message was loaded for this attempt */
	int64_t setup_ms;	/* connection setup this attempt waited for */
};

/*
 * Decides one attempt. env: the envelope as it was before the attempt;
 * txn: the transaction's results (txn->rcpt has env->n_rcpts entries, or
 * is NULL when no transaction happened: then txn->cls and txn->reply apply
 * to every waiting recipient); where: the relay and times for the log lines;
 * now: the wall clock in ms; random: any number, for the retry jitter.
 */
void policy_decide(const struct config_retry *retry, const struct config_bounce *bounce,
		   const struct spool_env *env, const struct smtpc_txn *txn,
		   const struct policy_where *where, int64_t now, unsigned random,
		   struct policy_outcome *out);
/* Writes the outcome into the envelope (statuses, replies, attempts, next
 * attempt, reason, delay_warned), moving the strings out of o. */
void policy_apply(struct policy_outcome *o, struct spool_env *env);
void policy_outcome_deinit(struct policy_outcome *o);

/* The retry step: when the attempt-th retry is due (attempt >= 1), from
 * [retry] schedule (its last step repeats) with jitter_percent of jitter. */
int64_t policy_retry_delay_ms(const struct config_retry *r, unsigned attempt, unsigned random);

/* ---- relays -------------------------------------------------------------------------- */

/* How long the credentials are left alone after the server refused them. */
#define POLICY_AUTH_PAUSE_MS (10 * 60 * 1000)

/* A session ended before it was ever usable and none to its relay works:
 * how long the relay rests. failures: such sessions in a row, this one
 * included (the pause doubles from 1 s up to 5 min). */
struct policy_pause {
	int64_t ms;
	/* 535 (class AUTH): the same credentials again would only lock the
	 * account, so the pause also ends only when they change. */
	bool until_credentials_change;
};
struct policy_pause policy_relay_pause(enum smtpc_class cls, unsigned failures);

/* Concurrency feedback, as Postfix's per-destination concurrency: a
 * connection refused (CONN, or a 4xx greeting) while `working` sessions to
 * the relay work means the server limits connections per client; the limit
 * comes down to those sessions instead of pausing the relay. */
bool policy_relay_lowers_limit(enum smtpc_class cls, unsigned working);
/* After this many deliveries at a lowered limit one more session is tried:
 * each try may cost one refused connection. */
#define POLICY_GROW_AFTER 50
/* The limit one step up from limit (0 = max_sessions, no limit any more). */
unsigned policy_relay_raise_limit(unsigned limit, unsigned max_sessions);

/* When a password_command is run again to see whether its output changed,
 * after auth_failures refusals in a row: from 5 s, doubled for each, at most
 * 5 min, so a command that prints a new token on every run cannot make the
 * relay hammer the server. */
int64_t policy_probe_delay_ms(unsigned auth_failures);

#endif
