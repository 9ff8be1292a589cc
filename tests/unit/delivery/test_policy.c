/*
 * Purpose: unit tests for daemon/delivery/policy: the failure policy row by row.
 * Each row of `rows` is one attempt: the envelope before it (sender, each
 * recipient's status, attempts, age), the transaction's result (its class
 * and reply, each recipient's result, "may be delivered twice") and the
 * configuration (soft_bounce, temporary_reply, max_age, [bounce]); and what
 * it must come to: the action, each recipient's status, the next attempt,
 * the bounce and delay-warning flags, the badmail reason and the key log
 * text. Then the relay pauses, the concurrency steps and the probe spacing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/buf.h"
#include "daemon/delivery/policy.h"

#define SEC  1000LL
#define MIN  (60 * SEC)
#define HOUR (60 * MIN)
#define DAY  (24 * HOUR)
#define NOW  1700000000000LL
#define NONE (-1)

#define ID    "20231114221320AB12CD"
#define RELAY "relay.test[192.0.2.1]:587"
/* Loaded 250 ms before NOW on a session whose setup took 100 ms: the log's
 * delays= is 0/(age - 0.35)/0.10/0.25. */
static const struct policy_where WHERE = {
    .peer = RELAY, .relay_name = "primary", .dispatch_ms = NOW - 250, .setup_ms = 100};

/*
 * Recipients, one letter each.
 * init (status before): P pending, D deferred, S sent, F failed.
 * res (this transaction's result for it): O 250 accepted, T 450 busy,
 *   X 550 no such user, Z 554 DT:SPM (a provider's spam verdict), . sent to
 *   but no final answer (the transaction's class applies), - not tried.
 * after (status after): the init letters.
 */
struct row {
	const char *name;
	const char *sender; /* NULL: "app@example.com"; "" is <> */
	const char *init, *res;
	enum smtpc_class cls; /* the transaction's; SMTPC_OK when the recipients decide */
	const char *reply;    /* the transaction's */
	bool twice;	      /* lost after the final dot */
	unsigned attempts;    /* before this one */
	int64_t age;	      /* now - arrival */
	unsigned rnd;
	/* configuration (defaults: schedule 1m 5m 15m, jitter 10 %, max_age 5d,
	 * bounces on, no delay warning) */
	bool soft_bounce, no_max_age, bounce_off, warned;
	int64_t delay_warning;
	const char *temporary_reply;
	/* expected */
	enum policy_action action;
	const char *after;
	int64_t next; /* from now, POLICY_DEFER; NONE otherwise */
	bool bounce, warn;
	const char *reason; /* substring of the badmail reason, or NULL (none) */
	const char *log[4]; /* substrings the log must have */
	const char *nolog;  /* a substring it must not have */
	unsigned log_lines; /* how many lines */
};

static const struct row rows[] = {
    /* ---- failure class of the whole transaction, one recipient, first attempt ---- */
    {.name = "accepted",
     .init = "P",
     .res = "O",
     .age = SEC,
     .action = POLICY_REMOVE,
     .after = "S",
     .next = NONE,
     .log = {ID ": to=<r0@example.org>, relay=" RELAY
		", delay=1.00, delays=0/0.65/0.10/0.25, dsn=2.0.0, "
		"status=sent (250 2.0.0 ok), relay_name=primary\n"},
     .log_lines = 1},
    {.name = "CONN defers",
     .init = "P",
     .res = ".",
     .cls = SMTPC_CONN,
     .reply = "connect to relay.test: Connection refused",
     .age = SEC,
     .action = POLICY_DEFER,
     .after = "D",
     .next = MIN,
     .log = {"to=<r0@example.org>, relay=" RELAY
	     ", delay=1.00, delays=0/0.65/0.10/0.25, dsn=4.0.0, status=deferred (connect to "
	     "relay.test: Connection refused), relay_name=primary\n"},
     .log_lines = 1},
    {.name = "CONN without words",
     .init = "P",
     .res = ".",
     .cls = SMTPC_CONN,
     .age = SEC,
     .action = POLICY_DEFER,
     .after = "D",
     .next = MIN,
     .log = {"status=deferred (lost connection with the relay)"},
     .log_lines = 1},
    {.name = "no final answer counts as CONN",
     .init = "P",
     .res = ".",
     .cls = SMTPC_OK,
     .age = SEC,
     .action = POLICY_DEFER,
     .after = "D",
     .next = MIN,
     .log = {"status=deferred (lost connection with the relay)"},
     .log_lines = 1},
    {.name = "TLS defers",
     .init = "P",
     .res = "-",
     .cls = SMTPC_TLS,
     .reply = "STARTTLS required but not offered",
     .age = SEC,
     .action = POLICY_DEFER,
     .after = "D",
     .next = MIN,
     .log = {"status=deferred (STARTTLS required but not offered)"},
     .log_lines = 1},
    {.name = "AUTH (535) defers, never bounces",
     .init = "PP",
     .res = "--",
     .cls = SMTPC_AUTH,
     .reply = "535 5.7.8 authentication failed",
     .age = SEC,
     .action = POLICY_DEFER,
     .after = "DD",
     .next = MIN,
     .log = {"to=<r0@example.org>", "to=<r1@example.org>",
	     "status=deferred (535 5.7.8 authentication failed)"},
     .log_lines = 2},
    {.name = "PROTO defers",
     .init = "P",
     .res = ".",
     .cls = SMTPC_PROTO,
     .reply = "malformed reply",
     .age = SEC,
     .action = POLICY_DEFER,
     .after = "D",
     .next = MIN,
     .log = {"status=deferred (malformed reply)"},
     .log_lines = 1},
    {.name = "TEMP defers",
     .init = "P",
     .res = ".",
     .cls = SMTPC_TEMP,
     .reply = "421 4.3.2 shutting down",
     .age = SEC,
     .action = POLICY_DEFER,
     .after = "D",
     .next = MIN,
     .log = {"status=deferred (421 4.3.2 shutting down)"},
     .log_lines = 1},
    {.name = "PERM fails and bounces",
     .init = "P",
     .res = ".",
     .cls = SMTPC_PERM,
     .reply = "552 5.3.4 message too big",
     .age = SEC,
     .action = POLICY_BADMAIL,
     .after = "F",
     .next = NONE,
     .bounce = true,
     .reason = "delivery failed for 1 recipient(s) after 1 attempt(s): 552 5.3.4 message too big",
     .log = {"status=bounced (552 5.3.4 message too big)"},
     .log_lines = 1},

    /* ---- per-recipient mixes: a refused recipient never fails the others ---- */
    {.name = "sent, busy, unknown",
     .init = "PPP",
     .res = "OTX",
     .age = 2 * SEC,
     .action = POLICY_DEFER,
     .after = "SDF",
     .next = MIN,
     .log = {"to=<r0@example.org>, relay=" RELAY
	     ", delay=2.00, delays=0/1.65/0.10/0.25, dsn=2.0.0, status=sent (250 2.0.0 ok)",
	     "to=<r1@example.org>, relay=" RELAY
	     ", delay=2.00, delays=0/1.65/0.10/0.25, dsn=4.2.1, status=deferred (450 4.2.1 "
	     "mailbox busy)",
	     "to=<r2@example.org>, relay=" RELAY
	     ", delay=2.00, delays=0/1.65/0.10/0.25, dsn=5.1.1, status=bounced (550 5.1.1 no "
	     "such user)"},
     .log_lines = 3},
    {.name = "sent, sent, unknown",
     .init = "PPP",
     .res = "OOX",
     .age = SEC,
     .action = POLICY_BADMAIL,
     .after = "SSF",
     .next = NONE,
     .bounce = true,
     .reason = "delivery failed for 1 recipient(s) after 1 attempt(s): 550 5.1.1 no such user",
     .log_lines = 3},
    {.name = "sent, sent, busy",
     .init = "PPP",
     .res = "OOT",
     .age = SEC,
     .action = POLICY_DEFER,
     .after = "SSD",
     .next = MIN,
     .log_lines = 3},
    {.name = "all unknown",
     .init = "PPP",
     .res = "XXX",
     .age = SEC,
     .action = POLICY_BADMAIL,
     .after = "FFF",
     .next = NONE,
     .bounce = true,
     .reason = "delivery failed for 3 recipient(s)",
     .log_lines = 3},
    {.name = "lost after the first recipient",
     .init = "PPP",
     .res = "O..",
     .cls = SMTPC_CONN,
     .reply = "lost connection with relay.test",
     .age = SEC,
     .action = POLICY_DEFER,
     .after = "SDD",
     .next = MIN,
     .log_lines = 3},
    {.name = "done recipients are never touched again",
     .init = "SPF",
     .res = "XOX",
     .attempts = 2,
     .age = HOUR,
     .action = POLICY_BADMAIL,
     .after = "SSF",
     .next = NONE,
     .bounce = true,
     .reason = "delivery failed for 1 recipient(s) after 3 attempt(s): 550 5.1.1 earlier refusal",
     .log = {"to=<r1@example.org>, relay=" RELAY
	     ", delay=3600.00, delays=0/3599.65/0.10/0.25, dsn=2.0.0, "
	     "status=sent"},
     .nolog = "to=<r0@",
     .log_lines = 1},
    {.name = "deferred recipient goes at last",
     .init = "SD",
     .res = "-O",
     .attempts = 3,
     .age = HOUR,
     .action = POLICY_REMOVE,
     .after = "SS",
     .next = NONE,
     .log_lines = 1},
    {.name = "nothing left to try",
     .init = "S",
     .res = "-",
     .cls = SMTPC_CONN,
     .age = SEC,
     .action = POLICY_REMOVE,
     .after = "S",
     .next = NONE,
     .log_lines = 0},

    /* ---- attempts: the schedule's steps, the last one repeating, jitter ---- */
    {.name = "second attempt",
     .init = "P",
     .res = "T",
     .attempts = 1,
     .age = 2 * MIN,
     .action = POLICY_DEFER,
     .after = "D",
     .next = 5 * MIN,
     .log_lines = 1},
    {.name = "third attempt",
     .init = "D",
     .res = "T",
     .attempts = 2,
     .age = 10 * MIN,
     .action = POLICY_DEFER,
     .after = "D",
     .next = 15 * MIN,
     .log_lines = 1},
    {.name = "the last step repeats",
     .init = "D",
     .res = "T",
     .attempts = 9,
     .age = 5 * HOUR,
     .action = POLICY_DEFER,
     .after = "D",
     .next = 15 * MIN,
     .log_lines = 1},
    {.name = "jitter",
     .init = "P",
     .res = "T",
     .age = SEC,
     .rnd = 12345,
     .action = POLICY_DEFER,
     .after = "D",
     .next = MIN + 12345 % 6001,
     .log_lines = 1},
    {.name = "jitter at most 10 %",
     .init = "P",
     .res = "T",
     .age = SEC,
     .rnd = 6000,
     .action = POLICY_DEFER,
     .after = "D",
     .next = MIN + 6000,
     .log_lines = 1},

    /* ---- max_age: expiry fails what is still deferred ---- */
    {.name = "expired",
     .init = "D",
     .res = "T",
     .attempts = 40,
     .age = 5 * DAY,
     .action = POLICY_BADMAIL,
     .after = "F",
     .next = NONE,
     .bounce = true,
     .reason = "delivery failed for 1 recipient(s) after 41 attempt(s): message expired after "
	       "432000 s in the queue; last reply: 450 4.2.1 mailbox busy",
     .log = {"status=bounced (message expired after 432000 s in the queue; last reply: 450 "
	     "4.2.1 mailbox busy)"},
     .log_lines = 1},
    {.name = "not yet expired",
     .init = "D",
     .res = "T",
     .attempts = 40,
     .age = 5 * DAY - 1,
     .action = POLICY_DEFER,
     .after = "D",
     .next = 15 * MIN,
     .log_lines = 1},
    {.name = "max_age 0 never expires",
     .init = "D",
     .res = ".",
     .cls = SMTPC_CONN,
     .attempts = 40,
     .age = 30 * DAY,
     .no_max_age = true,
     .action = POLICY_DEFER,
     .after = "D",
     .next = 15 * MIN,
     .log_lines = 1},
    {.name = "expired beside a sent one",
     .init = "PD",
     .res = "OT",
     .attempts = 5,
     .age = 6 * DAY,
     .action = POLICY_BADMAIL,
     .after = "SF",
     .next = NONE,
     .bounce = true,
     .reason = "delivery failed for 1 recipient(s) after 6 attempt(s): message expired",
     .log = {"to=<r0@example.org>", "status=sent", "to=<r1@example.org>",
	     "status=bounced (message expired after 518400 s"},
     .log_lines = 2},

    /* ---- null sender: never bounced, badmail ---- */
    {.name = "<> refused: badmail, not bounced",
     .sender = "",
     .init = "P",
     .res = "X",
     .age = SEC,
     .action = POLICY_BADMAIL,
     .after = "F",
     .next = NONE,
     .bounce = false,
     .reason = "delivery failed for 1 recipient(s)",
     .log = {"status=bounced (550 5.1.1 no such user), relay_name=primary\n",
	     ID ": not bounced: the sender is <>\n"},
     .log_lines = 2},
    {.name = "<> expired: badmail, not bounced",
     .sender = "",
     .init = "D",
     .res = ".",
     .cls = SMTPC_CONN,
     .attempts = 10,
     .age = 5 * DAY,
     .action = POLICY_BADMAIL,
     .after = "F",
     .next = NONE,
     .bounce = false,
     .reason = "message expired",
     .log = {"not bounced: the sender is <>"},
     .log_lines = 2},
    {.name = "<> delayed: no warning",
     .sender = "",
     .init = "P",
     .res = "T",
     .age = 5 * HOUR,
     .delay_warning = 4 * HOUR,
     .action = POLICY_DEFER,
     .after = "D",
     .next = MIN,
     .warn = false,
     .log_lines = 1},
    {.name = "bounces off",
     .init = "P",
     .res = "X",
     .age = SEC,
     .bounce_off = true,
     .action = POLICY_BADMAIL,
     .after = "F",
     .next = NONE,
     .bounce = false,
     .reason = "delivery failed",
     .nolog = "not bounced",
     .log_lines = 1},

    /* ---- may be delivered twice ---- */
    {.name = "lost after the final dot",
     .init = "P",
     .res = ".",
     .cls = SMTPC_CONN,
     .reply = "lost connection with relay.test after end of data",
     .twice = true,
     .age = SEC,
     .action = POLICY_DEFER,
     .after = "D",
     .next = MIN,
     .log = {"status=deferred (lost connection with relay.test after end of data), "
	     "relay_name=primary\n",
	     ID ": warning: connection lost after the end of data; the message may be "
		"delivered twice\n"},
     .log_lines = 2},
    {.name = "lost before the final dot",
     .init = "P",
     .res = ".",
     .cls = SMTPC_CONN,
     .reply = "lost connection with relay.test",
     .age = SEC,
     .action = POLICY_DEFER,
     .after = "D",
     .next = MIN,
     .nolog = "delivered twice",
     .log_lines = 1},
    {.name = "twice, then <> refused",
     .sender = "",
     .init = "P",
     .res = "X",
     .twice = true,
     .age = SEC,
     .action = POLICY_BADMAIL,
     .after = "F",
     .next = NONE,
     .log = {"may be delivered twice\n" ID ": not bounced: the sender is <>\n"},
     .log_lines = 3},

    /* ---- soft_bounce: permanent failures and expiry defer ---- */
    {.name = "soft_bounce: refused defers",
     .init = "P",
     .res = "X",
     .age = SEC,
     .soft_bounce = true,
     .action = POLICY_DEFER,
     .after = "D",
     .next = MIN,
     .bounce = false,
     .log = {"status=deferred (550 5.1.1 no such user)"},
     .log_lines = 1},
    {.name = "soft_bounce: PERM transaction defers",
     .init = "PP",
     .res = "..",
     .cls = SMTPC_PERM,
     .reply = "554 5.7.1 rejected",
     .age = SEC,
     .soft_bounce = true,
     .action = POLICY_DEFER,
     .after = "DD",
     .next = MIN,
     .log_lines = 2},
    {.name = "soft_bounce: no expiry",
     .init = "D",
     .res = "T",
     .attempts = 40,
     .age = 6 * DAY,
     .soft_bounce = true,
     .action = POLICY_DEFER,
     .after = "D",
     .next = 15 * MIN,
     .log_lines = 1},
    {.name = "soft_bounce: mix",
     .init = "PP",
     .res = "OX",
     .age = SEC,
     .soft_bounce = true,
     .action = POLICY_DEFER,
     .after = "SD",
     .next = MIN,
     .log_lines = 2},

    /* ---- temporary_reply: a permanent reply read as temporary ---- */
    {.name = "temporary_reply matches",
     .init = "P",
     .res = "Z",
     .age = SEC,
     .temporary_reply = "554 DT:SPM",
     .action = POLICY_DEFER,
     .after = "D",
     .next = MIN,
     .log = {"status=deferred (554 DT:SPM spam suspected)"},
     .log_lines = 1},
    {.name = "temporary_reply other replies",
     .init = "PP",
     .res = "ZX",
     .age = SEC,
     .temporary_reply = "554 DT:SPM",
     .action = POLICY_DEFER,
     .after = "DF",
     .next = MIN,
     .log_lines = 2},
    {.name = "no temporary_reply",
     .init = "P",
     .res = "Z",
     .age = SEC,
     .action = POLICY_BADMAIL,
     .after = "F",
     .next = NONE,
     .bounce = true,
     .log_lines = 1},
    {.name = "temporary_reply, still expires",
     .init = "D",
     .res = "Z",
     .attempts = 20,
     .age = 5 * DAY,
     .temporary_reply = "554 DT:SPM",
     .action = POLICY_BADMAIL,
     .after = "F",
     .next = NONE,
     .bounce = true,
     .reason = "message expired after 432000 s in the queue; last reply: 554 DT:SPM",
     .log_lines = 1},

    /* ---- delay warning ---- */
    {.name = "delay warning due",
     .init = "P",
     .res = "T",
     .attempts = 6,
     .age = 5 * HOUR,
     .delay_warning = 4 * HOUR,
     .action = POLICY_DEFER,
     .after = "D",
     .next = 15 * MIN,
     .warn = true,
     .log_lines = 1},
    {.name = "delay warning at the exact age",
     .init = "P",
     .res = "T",
     .age = 4 * HOUR,
     .delay_warning = 4 * HOUR,
     .action = POLICY_DEFER,
     .after = "D",
     .next = MIN,
     .warn = true,
     .log_lines = 1},
    {.name = "delay warning once",
     .init = "D",
     .res = "T",
     .age = 5 * HOUR,
     .warned = true,
     .delay_warning = 4 * HOUR,
     .action = POLICY_DEFER,
     .after = "D",
     .next = MIN,
     .warn = false,
     .log_lines = 1},
    {.name = "delay warning not yet",
     .init = "P",
     .res = "T",
     .age = 3 * HOUR,
     .delay_warning = 4 * HOUR,
     .action = POLICY_DEFER,
     .after = "D",
     .next = MIN,
     .warn = false,
     .log_lines = 1},
    {.name = "delay warning off",
     .init = "P",
     .res = "T",
     .age = 5 * DAY - 1,
     .action = POLICY_DEFER,
     .after = "D",
     .next = MIN,
     .warn = false,
     .log_lines = 1},
    {.name = "delay warning, bounces off",
     .init = "P",
     .res = "T",
     .age = 5 * HOUR,
     .delay_warning = 4 * HOUR,
     .bounce_off = true,
     .action = POLICY_DEFER,
     .after = "D",
     .next = MIN,
     .warn = false,
     .log_lines = 1},
    {.name = "delay warning, but failed",
     .init = "P",
     .res = "X",
     .age = 5 * HOUR,
     .delay_warning = 4 * HOUR,
     .action = POLICY_BADMAIL,
     .after = "F",
     .next = NONE,
     .bounce = true,
     .warn = false,
     .log_lines = 1},
    {.name = "delay warning beside a sent one",
     .init = "PP",
     .res = "OT",
     .age = 5 * HOUR,
     .delay_warning = 4 * HOUR,
     .action = POLICY_DEFER,
     .after = "SD",
     .next = MIN,
     .warn = true,
     .log_lines = 2},
    {.name = "delay warning, soft_bounce",
     .init = "P",
     .res = "X",
     .age = 5 * HOUR,
     .delay_warning = 4 * HOUR,
     .soft_bounce = true,
     .action = POLICY_DEFER,
     .after = "D",
     .next = MIN,
     .warn = true,
     .log_lines = 1},
};

static enum spool_rcpt_status status_of(char c)
{
	switch (c) {
	case 'S':
		return RCPT_SENT;
	case 'D':
		return RCPT_DEFERRED;
	case 'F':
		return RCPT_FAILED;
	default:
		return RCPT_PENDING;
	}
}

static char letter_of(enum spool_rcpt_status st)
{
	return st == RCPT_SENT ? 'S' : st == RCPT_DEFERRED ? 'D' : st == RCPT_FAILED ? 'F' : 'P';
}

/* The inputs of a row, built. */
struct fixture {
	struct config_retry retry;
	struct config_bounce bounce;
	uint64_t schedule[3];
	char *temporary[1];
	struct spool_env env;
	struct smtpc_txn txn;
};

static void fixture_init(struct fixture *f, const struct row *w)
{
	memset(f, 0, sizeof(*f));
	f->schedule[0] = MIN;
	f->schedule[1] = 5 * MIN;
	f->schedule[2] = 15 * MIN;
	f->retry.schedule_ms = f->schedule;
	f->retry.n_schedule = 3;
	f->retry.jitter_percent = 10;
	f->retry.max_age_ms = w->no_max_age ? 0 : 5 * DAY;
	f->retry.soft_bounce = w->soft_bounce;
	if (w->temporary_reply) {
		f->temporary[0] = (char *)w->temporary_reply;
		f->retry.temporary_replies = f->temporary;
		f->retry.n_temporary_replies = 1;
	}
	f->bounce.enabled = !w->bounce_off;
	f->bounce.delay_warning_ms = (uint64_t)w->delay_warning;
	f->bounce.rate_limit = 60;

	struct spool_env *e = &f->env;
	memcpy(e->id, ID, sizeof(e->id));
	e->arrival_ms = NOW - w->age;
	e->next_ms = 12345; /* kept unless deferred */
	e->attempts = w->attempts;
	e->sender = xstrdup(w->sender ? w->sender : "app@example.com");
	e->delay_warned = w->warned;
	size_t n = strlen(w->init);
	assert_int_equal(strlen(w->res), n);
	assert_int_equal(strlen(w->after), n);
	for (size_t i = 0; i < n; i++) {
		char addr[64];
		snprintf(addr, sizeof(addr), "r%zu@example.org", i);
		spool_env_add_rcpt(e, addr, NULL);
		e->rcpts[i].status = status_of(w->init[i]);
		if (w->init[i] == 'F')
			e->rcpts[i].reply = xstrdup("550 5.1.1 earlier refusal");
		else if (w->init[i] == 'D')
			e->rcpts[i].reply = xstrdup("450 4.2.1 earlier");
	}

	struct smtpc_txn *t = &f->txn;
	t->env = e;
	t->cls = w->cls;
	t->reply = w->reply ? xstrdup(w->reply) : NULL;
	t->maybe_delivered = w->twice;
	t->rcpt = xcalloc(n ? n : 1, sizeof(*t->rcpt));
	for (size_t i = 0; i < n; i++) {
		struct smtpc_rcpt_result *r = &t->rcpt[i];
		r->tried = w->res[i] != '-';
		r->final = w->res[i] != '-' && w->res[i] != '.';
		switch (w->res[i]) {
		case 'O':
			r->cls = SMTPC_OK, r->code = 250, r->reply = xstrdup("250 2.0.0 ok");
			break;
		case 'T':
			r->cls = SMTPC_TEMP, r->code = 450,
			r->reply = xstrdup("450 4.2.1 mailbox busy");
			break;
		case 'X':
			r->cls = SMTPC_PERM, r->code = 550,
			r->reply = xstrdup("550 5.1.1 no such user");
			break;
		case 'Z':
			r->cls = SMTPC_PERM, r->code = 554,
			r->reply = xstrdup("554 DT:SPM spam suspected");
			break;
		}
	}
}

static void fixture_deinit(struct fixture *f)
{
	for (size_t i = 0; i < f->env.n_rcpts; i++)
		free(f->txn.rcpt[i].reply);
	free(f->txn.rcpt);
	free(f->txn.reply);
	spool_env_deinit(&f->env);
}

static unsigned count_lines(const char *s)
{
	unsigned n = 0;
	for (; s && *s; s++)
		n += *s == '\n';
	return n;
}

static void decide(struct fixture *f, const struct row *w, struct policy_outcome *o)
{
	policy_decide(&f->retry, &f->bounce, &f->env, &f->txn, &WHERE, NOW, w->rnd, o);
}

/* Prints the row's name when an assertion fails. */
#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond))                                                                       \
			fail_msg("row \"%s\": %s", w->name, #cond);                                \
	} while (0)

static void policy_decides_each_row(void **state)
{
	(void)state;
	for (size_t k = 0; k < sizeof(rows) / sizeof(rows[0]); k++) {
		const struct row *w = &rows[k];
		struct fixture f;
		struct policy_outcome o;
		fixture_init(&f, w);
		decide(&f, w, &o);
		const char *log = o.log.data ? o.log.data : "";

		CHECK(o.action == w->action);
		char after[16] = {0};
		for (size_t i = 0; i < o.n_rcpts; i++)
			after[i] = letter_of(o.rcpt[i].status);
		if (strcmp(after, w->after) != 0)
			fail_msg("row \"%s\": statuses %s, expected %s", w->name, after, w->after);
		for (size_t i = 0; i < o.n_rcpts; i++) {
			bool waiting = w->init[i] == 'P' || w->init[i] == 'D';
			CHECK(o.rcpt[i].attempted == waiting);
			CHECK(waiting ? o.rcpt[i].reply != NULL : o.rcpt[i].reply == NULL);
		}
		CHECK(o.attempts == w->attempts + 1);
		if (w->next == NONE)
			CHECK(o.next_ms == 0);
		else if (o.next_ms != NOW + w->next)
			fail_msg("row \"%s\": next attempt in %lld ms, expected %lld", w->name,
				 (long long)(o.next_ms - NOW), (long long)w->next);
		CHECK(o.bounce == w->bounce);
		CHECK(o.warn == w->warn);
		if (w->action == POLICY_BADMAIL) {
			CHECK(o.reason != NULL);
			if (w->reason && strstr(o.reason, w->reason) == NULL)
				fail_msg("row \"%s\": reason \"%s\" lacks \"%s\"", w->name,
					 o.reason, w->reason);
		} else {
			CHECK(o.reason == NULL);
		}
		for (size_t i = 0; i < 4 && w->log[i]; i++)
			if (strstr(log, w->log[i]) == NULL)
				fail_msg("row \"%s\": log lacks \"%s\":\n%s", w->name, w->log[i],
					 log);
		if (w->nolog && strstr(log, w->nolog))
			fail_msg("row \"%s\": log has \"%s\":\n%s", w->name, w->nolog, log);
		if (count_lines(log) != w->log_lines)
			fail_msg("row \"%s\": %u log lines, expected %u:\n%s", w->name,
				 count_lines(log), w->log_lines, log);
		/* Every line names the message first. */
		for (const char *p = log; *p; p = strchr(p, '\n') + 1)
			CHECK(strncmp(p, ID ": ", strlen(ID ": ")) == 0);
		/* The counters count the recipients of this attempt. */
		size_t sent = 0, deferred = 0, failed = 0;
		for (size_t i = 0; i < o.n_rcpts; i++) {
			if (!o.rcpt[i].attempted)
				continue;
			sent += o.rcpt[i].status == RCPT_SENT;
			deferred += o.rcpt[i].status == RCPT_DEFERRED;
			failed += o.rcpt[i].status == RCPT_FAILED;
		}
		CHECK(o.n_sent == sent && o.n_deferred == deferred && o.n_failed == failed);

		/* Pure: the same inputs give the same outcome, and the envelope
		 * is left as it was. */
		struct policy_outcome again;
		decide(&f, w, &again);
		CHECK(again.action == o.action && again.next_ms == o.next_ms);
		CHECK(strcmp(again.log.data ? again.log.data : "", log) == 0);
		for (size_t i = 0; i < f.env.n_rcpts; i++)
			CHECK(f.env.rcpts[i].status == status_of(w->init[i]));
		CHECK(f.env.attempts == w->attempts && f.env.next_ms == 12345);
		policy_outcome_deinit(&again);
		policy_outcome_deinit(&o);
		fixture_deinit(&f);
	}
}

/* policy_apply writes the outcome into the envelope; what was not part of
 * the attempt keeps its status and reply. */
static void policy_apply_writes_the_envelope(void **state)
{
	(void)state;
	static const struct row defer = {.name = "apply defer",
					 .init = "SPP",
					 .res = "-OT",
					 .attempts = 2,
					 .age = 5 * HOUR,
					 .delay_warning = 4 * HOUR,
					 .after = "SSD"};
	static const struct row fail = {
	    .name = "apply badmail", .init = "FP", .res = "-X", .age = SEC, .after = "FF"};
	struct fixture f;
	struct policy_outcome o;

	fixture_init(&f, &defer);
	f.env.rcpts[0].reply = xstrdup("250 2.0.0 earlier");
	decide(&f, &defer, &o);
	policy_apply(&o, &f.env);
	assert_int_equal(f.env.rcpts[0].status, RCPT_SENT);
	assert_string_equal(f.env.rcpts[0].reply, "250 2.0.0 earlier");
	assert_int_equal(f.env.rcpts[1].status, RCPT_SENT);
	assert_string_equal(f.env.rcpts[1].reply, "250 2.0.0 ok");
	assert_int_equal(f.env.rcpts[2].status, RCPT_DEFERRED);
	assert_string_equal(f.env.rcpts[2].reply, "450 4.2.1 mailbox busy");
	assert_int_equal(f.env.attempts, 3);
	assert_int_equal(f.env.next_ms, NOW + 15 * MIN);
	assert_true(f.env.delay_warned);
	assert_null(f.env.reason);
	policy_outcome_deinit(&o);
	fixture_deinit(&f);

	fixture_init(&f, &fail);
	decide(&f, &fail, &o);
	policy_apply(&o, &f.env);
	assert_int_equal(f.env.rcpts[0].status, RCPT_FAILED);
	assert_string_equal(f.env.rcpts[0].reply, "550 5.1.1 earlier refusal");
	assert_int_equal(f.env.rcpts[1].status, RCPT_FAILED);
	assert_int_equal(f.env.attempts, 1);
	assert_int_equal(f.env.next_ms, 12345);
	assert_false(f.env.delay_warned);
	assert_string_equal(f.env.reason, "delivery failed for 2 recipient(s) after 1 attempt(s): "
					  "550 5.1.1 earlier refusal");
	policy_outcome_deinit(&o);
	fixture_deinit(&f);
}

/* An empty schedule still waits a minute; jitter 0 is exact. */
static void policy_retry_delay_edges(void **state)
{
	(void)state;
	uint64_t steps[2] = {30 * SEC, 2 * MIN};
	struct config_retry r = {.schedule_ms = steps, .n_schedule = 2, .jitter_percent = 0};
	assert_int_equal(policy_retry_delay_ms(&r, 0, 999), 30 * SEC);
	assert_int_equal(policy_retry_delay_ms(&r, 1, 999), 30 * SEC);
	assert_int_equal(policy_retry_delay_ms(&r, 2, 999), 2 * MIN);
	assert_int_equal(policy_retry_delay_ms(&r, 100, 999), 2 * MIN);
	r.jitter_percent = 50;
	assert_int_equal(policy_retry_delay_ms(&r, 2, 60000), 3 * MIN);
	assert_int_equal(policy_retry_delay_ms(&r, 2, 60001), 2 * MIN);
	r.n_schedule = 0;
	assert_int_equal(policy_retry_delay_ms(&r, 3, 999), MIN);
}

/* A relay whose sessions fail before they are usable: the pause doubles
 * from 1 s to 5 min; 535 pauses 10 min and until the credentials change. */
static void policy_relay_pause_table(void **state)
{
	(void)state;
	static const struct {
		enum smtpc_class cls;
		unsigned failures;
		int64_t ms;
		bool creds;
	} t[] = {
	    {SMTPC_CONN, 1, SEC, false},	{SMTPC_CONN, 2, 2 * SEC, false},
	    {SMTPC_TLS, 5, 16 * SEC, false},	{SMTPC_PROTO, 9, 256 * SEC, false},
	    {SMTPC_TEMP, 10, 5 * MIN, false},	{SMTPC_PERM, 3, 4 * SEC, false},
	    {SMTPC_CONN, 1000, 5 * MIN, false}, {SMTPC_AUTH, 1, 10 * MIN, true},
	    {SMTPC_AUTH, 50, 10 * MIN, true},
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct policy_pause p = policy_relay_pause(t[i].cls, t[i].failures);
		if (p.ms != t[i].ms || p.until_credentials_change != t[i].creds)
			fail_msg("%s after %u: %lld ms%s", smtpc_class_names[t[i].cls],
				 t[i].failures, (long long)p.ms,
				 p.until_credentials_change ? " (credentials)" : "");
	}
}

/* Concurrency feedback: a refused connection beside working sessions lowers
 * the limit (only CONN or a 4xx greeting); it grows back one at a time. */
static void policy_relay_limit_table(void **state)
{
	(void)state;
	assert_true(policy_relay_lowers_limit(SMTPC_CONN, 1));
	assert_true(policy_relay_lowers_limit(SMTPC_TEMP, 3));
	assert_false(policy_relay_lowers_limit(SMTPC_CONN, 0));
	assert_false(policy_relay_lowers_limit(SMTPC_TEMP, 0));
	assert_false(policy_relay_lowers_limit(SMTPC_TLS, 2));
	assert_false(policy_relay_lowers_limit(SMTPC_AUTH, 2));
	assert_false(policy_relay_lowers_limit(SMTPC_PROTO, 2));
	assert_false(policy_relay_lowers_limit(SMTPC_PERM, 2));
	assert_int_equal(policy_relay_raise_limit(1, 4), 2);
	assert_int_equal(policy_relay_raise_limit(2, 4), 3);
	assert_int_equal(policy_relay_raise_limit(3, 4), 0); /* back to max_sessions */
	assert_int_equal(policy_relay_raise_limit(1, 2), 0);
}

/* password_command probes while the credentials are paused: 5 s doubled for
 * each refusal in a row, at most 5 min. */
static void policy_probe_delay_table(void **state)
{
	(void)state;
	static const int64_t want[] = {5 * SEC,	 5 * SEC,   10 * SEC, 20 * SEC, 40 * SEC,
				       80 * SEC, 160 * SEC, 5 * MIN,  5 * MIN,	5 * MIN};
	for (unsigned i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		if (policy_probe_delay_ms(i) != want[i])
			fail_msg("after %u refusals: %lld ms", i,
				 (long long)policy_probe_delay_ms(i));
	assert_int_equal(policy_probe_delay_ms(1000), 5 * MIN);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(policy_decides_each_row),
	    cmocka_unit_test(policy_apply_writes_the_envelope),
	    cmocka_unit_test(policy_retry_delay_edges),
	    cmocka_unit_test(policy_relay_pause_table),
	    cmocka_unit_test(policy_relay_limit_table),
	    cmocka_unit_test(policy_probe_delay_table),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
