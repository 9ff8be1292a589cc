/*
 * Purpose: unit tests for daemon/delivery/bounce: the RFC 3464 multipart/report
 * structure (three parts, boundaries, CRLF lines), per-recipient Status and
 * Diagnostic-Code, the RFC 3463 mapping (row by row), the delay warning form,
 * hostile server replies and addresses that try to inject header lines, and
 * bounce_queue writing the report from <> into a throw-away spool.
 */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/buf.h"
#include "common/msg.h"
#include "daemon/delivery/bounce.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define HOST	      "mx.example.net"
#define BID	      "00000000000000000042"
#define NOW_MS	      ((int64_t)1700000000000)

/* An envelope with one recipient per (status, reply) pair. */
static void make_env(struct spool_env *e, const char *sender, size_t n,
		     const enum spool_rcpt_status *st, const char *const *replies)
{
	memset(e, 0, sizeof(*e));
	memcpy(e->id, "00000000000000000001", SPOOL_ID_LEN);
	e->arrival_ms = NOW_MS - 3600 * 1000;
	e->sender = xstrdup(sender);
	for (size_t i = 0; i < n; i++) {
		char addr[64];
		snprintf(addr, sizeof(addr), "rcpt%zu@example.org", i);
		spool_env_add_rcpt(e, addr, NULL);
		e->rcpts[i].status = st[i];
		e->rcpts[i].reply = replies[i] ? xstrdup(replies[i]) : NULL;
	}
}

static char *build_until(const struct spool_env *e, enum bounce_kind kind, int64_t until_ms,
			 const char *headers)
{
	struct buf out = BUF_INIT;
	bounce_build(e, kind, HOST, BID, NOW_MS, until_ms, headers, headers ? strlen(headers) : 0,
		     &out);
	return buf_steal(&out);
}

static char *build(const struct spool_env *e, enum bounce_kind kind, const char *headers)
{
	return build_until(e, kind, 0, headers);
}

/* Every line ends in CRLF; no CR or LF stands anywhere else. */
static void assert_crlf_lines(const char *s)
{
	for (const char *p = s; *p; p++) {
		if (*p == '\r')
			assert_int_equal(p[1], '\n');
		if (*p == '\n')
			assert_true(p > s && p[-1] == '\r');
	}
	size_t n = strlen(s);
	assert_true(n >= 2 && s[n - 2] == '\r' && s[n - 1] == '\n');
}

/* Whether some line of s starts with prefix. */
static bool has_line(const char *s, const char *prefix)
{
	size_t n = strlen(prefix);
	for (const char *p = s; p; p = strstr(p, "\r\n"), p = p ? p + 2 : NULL)
		if (strncmp(p, prefix, n) == 0)
			return true;
	return false;
}

static size_t count_lines(const char *s, const char *prefix)
{
	size_t k = 0, n = strlen(prefix);
	for (const char *p = s; p; p = strstr(p, "\r\n"), p = p ? p + 2 : NULL)
		if (strncmp(p, prefix, n) == 0)
			k++;
	return k;
}

/* The body part that follows the part header "Content-Type: type", up to
 * the next boundary line (a copy). */
static char *part(const char *s, const char *type)
{
	char key[128];
	snprintf(key, sizeof(key), "\r\nContent-Type: %s\r\n", type);
	const char *p = strstr(s, key);
	if (p == NULL)
		return NULL;
	p = strstr(p, "\r\n\r\n");
	assert_non_null(p);
	p += 4;
	const char *end = strstr(p, "\r\n--" BID "/" HOST);
	assert_non_null(end);
	return xstrndup(p, (size_t)(end - p)); /* the CRLF before "--" is the delimiter's */
}

/* The value of "Field: " in the n-th recipient block of a delivery-status part. */
static char *field(const char *ds, size_t n, const char *name)
{
	const char *p = ds;
	for (size_t i = 0; i <= n; i++) {
		p = strstr(p, "\r\n\r\nFinal-Recipient: ");
		if (p == NULL)
			return NULL;
		p += 4;
	}
	const char *end = strstr(p, "\r\n\r\n");
	char key[64];
	snprintf(key, sizeof(key), "\r\n%s: ", name);
	const char *f = strstr(p - 2, key);
	if (f == NULL || (end && f > end))
		return NULL;
	f += strlen(key);
	return xstrndup(f, strcspn(f, "\r"));
}

/* ---- structure ---------------------------------------------------------------------- */

static void bounce_report_structure(void **state)
{
	(void)state;
	static const enum spool_rcpt_status st[] = {RCPT_FAILED, RCPT_SENT, RCPT_DEFERRED,
						    RCPT_FAILED};
	static const char *const replies[] = {"550 5.1.1 no such user", "250 2.0.0 ok",
					      "451 4.3.0 try later", "552 5.2.2 mailbox full"};
	struct spool_env e;
	make_env(&e, "app@example.com", ARRAY_SIZE(st), st, replies);
	char *s = build(&e, BOUNCE_FAILED,
			"From: app@example.com\r\nTo: rcpt0@example.org\r\nSubject: hi\r\n");
	assert_crlf_lines(s);
	/* The message's own header section. */
	assert_true(has_line(s, "From: Mail Delivery System <MAILER-DAEMON@" HOST ">"));
	assert_true(has_line(s, "To: <app@example.com>"));
	assert_true(has_line(s, "Subject: Undelivered Mail Returned to Sender"));
	assert_true(has_line(s, "Auto-Submitted: auto-replied"));
	assert_true(has_line(s, "MIME-Version: 1.0"));
	assert_true(has_line(s, "Message-ID: <" BID ".dsn@" HOST ">"));
	assert_true(has_line(s, "Content-Type: multipart/report; report-type=delivery-status;"));
	assert_true(has_line(s, "\tboundary=\"" BID "/" HOST "\""));
	/* Three parts in RFC 3464's order, then the closing boundary last. */
	const char *t = strstr(s, "Content-Type: text/plain");
	const char *d = strstr(s, "Content-Type: message/delivery-status");
	const char *h = strstr(s, "Content-Type: text/rfc822-headers");
	assert_true(t && d && h && t < d && d < h);
	assert_int_equal(count_lines(s, "--" BID "/" HOST "\r\n"), 3);
	size_t len = strlen(s);
	const char *close = "\r\n--" BID "/" HOST "--\r\n";
	assert_string_equal(s + len - strlen(close), close);
	/* Per-message fields, then one block per failed recipient only. */
	char *ds = part(s, "message/delivery-status");
	assert_non_null(ds);
	assert_true(has_line(ds, "Reporting-MTA: dns; " HOST));
	assert_true(has_line(ds, "Arrival-Date: "));
	assert_true(has_line(ds, "X-Pickupd-Queue-ID: 00000000000000000001"));
	assert_int_equal(count_lines(ds, "Final-Recipient: "), 2);
	assert_int_equal(count_lines(ds, "Action: failed"), 2);
	assert_false(has_line(ds, "Will-Retry-Until: "));
	char *v = field(ds, 0, "Final-Recipient");
	assert_string_equal(v, "rfc822; rcpt0@example.org");
	free(v);
	v = field(ds, 1, "Final-Recipient");
	assert_string_equal(v, "rfc822; rcpt3@example.org");
	free(v);
	/* The words name only the failed recipients, with the server's reply. */
	char *txt = part(s, "text/plain; charset=utf-8");
	assert_non_null(txt);
	assert_true(has_line(txt, "<rcpt0@example.org>: 550 5.1.1 no such user"));
	assert_true(has_line(txt, "<rcpt3@example.org>: 552 5.2.2 mailbox full"));
	assert_null(strstr(txt, "rcpt1@"));
	assert_null(strstr(txt, "rcpt2@"));
	/* The original's headers, never its body. */
	char *hd = part(s, "text/rfc822-headers");
	assert_string_equal(hd, "From: app@example.com\r\nTo: rcpt0@example.org\r\nSubject: "
				"hi\r\n");
	free(hd);
	free(txt);
	free(ds);
	free(s);
	spool_env_deinit(&e);
}

static void bounce_without_headers_has_two_parts(void **state)
{
	(void)state;
	static const enum spool_rcpt_status st[] = {RCPT_FAILED};
	static const char *const replies[] = {NULL};
	struct spool_env e;
	make_env(&e, "app@example.com", 1, st, replies);
	char *s = build(&e, BOUNCE_FAILED, NULL);
	assert_crlf_lines(s);
	assert_null(strstr(s, "text/rfc822-headers"));
	assert_int_equal(count_lines(s, "--" BID "/" HOST "\r\n"), 2);
	char *ds = part(s, "message/delivery-status");
	char *v = field(ds, 0, "Diagnostic-Code");
	assert_string_equal(v, "X-pickupd; unknown");
	free(v);
	v = field(ds, 0, "Status");
	assert_string_equal(v, "5.0.0");
	free(v);
	free(ds);
	free(s);
	spool_env_deinit(&e);
}

/* ---- Status and Diagnostic-Code: RFC 3463 ---------------------------------------------- */

static const struct {
	const char *reply;
	enum bounce_kind kind;
	const char *status;
	const char *diag;
} status_rows[] = {
    /* the server's enhanced code, with the kind's class */
    {"550 5.1.1 no such user", BOUNCE_FAILED, "5.1.1", "smtp; 550 5.1.1 no such user"},
    {"552 5.2.2", BOUNCE_FAILED, "5.2.2", "smtp; 552 5.2.2"},
    {"550 5.1.10 null MX", BOUNCE_FAILED, "5.1.10", "smtp; 550 5.1.10 null MX"},
    {"554 5.7.123 policy", BOUNCE_FAILED, "5.7.123", "smtp; 554 5.7.123 policy"},
    {"450 4.2.2 over quota", BOUNCE_FAILED, "5.2.2", "smtp; 450 4.2.2 over quota"},
    {"451 4.4.1 no answer", BOUNCE_DELAYED, "4.4.1", "smtp; 451 4.4.1 no answer"},
    {"550 5.1.1 x", BOUNCE_DELAYED, "4.1.1", "smtp; 550 5.1.1 x"},
    /* no (valid) enhanced code: the kind's default */
    {"554 DT:SPM spam", BOUNCE_FAILED, "5.0.0", "smtp; 554 DT:SPM spam"},
    {"550 5.1234.1 x", BOUNCE_FAILED, "5.0.0", "smtp; 550 5.1234.1 x"},
    {"550 5.1.1x", BOUNCE_FAILED, "5.0.0", "smtp; 550 5.1.1x"},
    {"550 2.0.0 odd", BOUNCE_FAILED, "5.0.0", "smtp; 550 2.0.0 odd"},
    /* signs and blanks are no digits (sscanf's %d took them) */
    {"550 5.-1.1 x", BOUNCE_FAILED, "5.0.0", "smtp; 550 5.-1.1 x"},
    {"550 5.+1.-0 x", BOUNCE_FAILED, "5.0.0", "smtp; 550 5.+1.-0 x"},
    {"550 5. 1. 1 x", BOUNCE_FAILED, "5.0.0", "smtp; 550 5. 1. 1 x"},
    {"550 5.1.", BOUNCE_FAILED, "5.0.0", "smtp; 550 5.1."},
    {"421 closing", BOUNCE_DELAYED, "4.0.0", "smtp; 421 closing"},
    /* pickupd's own reasons, by their openings */
    {"message expired after 432000 s in the queue; last reply: 451 4.3.0 busy", BOUNCE_FAILED,
     "5.4.7", "X-pickupd; message expired after 432000 s in the queue; last reply: 451 4.3.0 busy"},
    {"message size 90000000 exceeds the size limit 1000 of server x", BOUNCE_FAILED, "5.3.4",
     "X-pickupd; message size 90000000 exceeds the size limit 1000 of server x"},
    {"the message has UTF-8 addresses and server x does not offer SMTPUTF8", BOUNCE_FAILED, "5.6.7",
     "X-pickupd; the message has UTF-8 addresses and server x does not offer SMTPUTF8"},
    {"the message has 8-bit content and server x does not offer 8BITMIME", BOUNCE_FAILED, "5.6.3",
     "X-pickupd; the message has 8-bit content and server x does not offer 8BITMIME"},
    {"sender address holds a control character", BOUNCE_FAILED, "5.1.7",
     "X-pickupd; sender address holds a control character"},
    {"recipient address holds a control character", BOUNCE_FAILED, "5.1.3",
     "X-pickupd; recipient address holds a control character"},
    {"something else", BOUNCE_FAILED, "5.0.0", "X-pickupd; something else"},
    {NULL, BOUNCE_DELAYED, "4.0.0", "X-pickupd; unknown"},
};

static void bounce_status_mapping(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(status_rows); i++) {
		enum spool_rcpt_status st =
		    status_rows[i].kind == BOUNCE_FAILED ? RCPT_FAILED : RCPT_DEFERRED;
		const char *reply = status_rows[i].reply;
		struct spool_env e;
		make_env(&e, "app@example.com", 1, &st, &reply);
		char *s = build(&e, status_rows[i].kind, NULL);
		char *ds = part(s, "message/delivery-status");
		char *status = field(ds, 0, "Status");
		char *diag = field(ds, 0, "Diagnostic-Code");
		print_message("row %zu: %s\n", i, reply ? reply : "(null)");
		assert_non_null(status);
		assert_string_equal(status, status_rows[i].status);
		assert_string_equal(diag, status_rows[i].diag);
		free(status);
		free(diag);
		free(ds);
		free(s);
		spool_env_deinit(&e);
	}
}

/* The log's dsn= for each outcome: the reply's code only within its own
 * class (a 2xx code says nothing about a failure, nor the reverse). */
static void bounce_status_of_outcomes(void **state)
{
	static const struct {
		const char *reply;
		int klass;
		const char *want;
	} rows[] = {
	    {"250 2.0.0 Ok: queued as 1A2B3C", 2, "2.0.0"},
	    {"250 2.1.5 ok", 2, "2.1.5"},
	    {"250 ok", 2, "2.0.0"},
	    {NULL, 2, "2.0.0"},
	    {"550 2.1.5 odd", 5, "5.0.0"},
	    {"250 5.1.1 odd", 2, "2.0.0"},
	    {"451 4.3.0 try later", 4, "4.3.0"},
	    {"550 5.1.1 no such user", 4, "4.1.1"},
	    {"message expired after 5 s in the queue; last reply: none", 5, "5.4.7"},
	};
	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(rows); i++) {
		char out[40];
		bounce_status(rows[i].reply, rows[i].klass, out, sizeof(out));
		print_message("row %zu: %s\n", i, rows[i].reply ? rows[i].reply : "(null)");
		assert_string_equal(out, rows[i].want);
	}
}

/* ---- the delay warning ------------------------------------------------------------------- */

static void bounce_delay_warning_form(void **state)
{
	(void)state;
	static const enum spool_rcpt_status st[] = {RCPT_DEFERRED, RCPT_FAILED, RCPT_SENT};
	static const char *const replies[] = {"451 4.7.1 greylisted", "550 5.1.1 gone", "250 ok"};
	struct spool_env e;
	make_env(&e, "app@example.com", ARRAY_SIZE(st), st, replies);
	char *s = build(&e, BOUNCE_DELAYED, NULL);
	assert_crlf_lines(s);
	assert_true(has_line(s, "Subject: Delayed Mail (still being retried)"));
	char *txt = part(s, "text/plain; charset=utf-8");
	assert_non_null(strstr(txt, "pickupd keeps trying; you do not need to send it again."));
	assert_true(has_line(txt, "<rcpt0@example.org>: 451 4.7.1 greylisted"));
	assert_null(strstr(txt, "rcpt1@"));
	char *ds = part(s, "message/delivery-status");
	assert_int_equal(count_lines(ds, "Final-Recipient: "), 1);
	char *v = field(ds, 0, "Action");
	assert_string_equal(v, "delayed");
	free(v);
	v = field(ds, 0, "Status");
	assert_string_equal(v, "4.7.1");
	free(v);
	free(ds);
	free(txt);
	free(s);
	spool_env_deinit(&e);
}

/* Will-Retry-Until says when pickupd gives up (arrival + max_age), not when
 * it tries next (RFC 3464 2.3.9); without an end (soft_bounce) there is none. */
static void bounce_delay_warning_retry_until(void **state)
{
	(void)state;
	enum spool_rcpt_status st = RCPT_DEFERRED;
	const char *reply = "451 4.3.0 later";
	struct spool_env e;
	make_env(&e, "app@example.com", 1, &st, &reply);
	e.next_ms = NOW_MS + 15 * 60 * 1000; /* next attempt */
	int64_t until = e.arrival_ms + (int64_t)5 * 86400 * 1000;
	struct buf want = BUF_INIT;
	msg_format_date(until / 1000, &want);
	char *s = build_until(&e, BOUNCE_DELAYED, until, NULL);
	char *ds = part(s, "message/delivery-status");
	char *v = field(ds, 0, "Will-Retry-Until");
	assert_non_null(v);
	assert_string_equal(v, want.data);
	free(v);
	free(ds);
	free(s);
	s = build_until(&e, BOUNCE_DELAYED, 0, NULL);
	assert_null(strstr(s, "Will-Retry-Until"));
	free(s);
	buf_deinit(&want);
	spool_env_deinit(&e);
}

/* ---- DSN parameters (RFC 3461) -------------------------------------------------------- */

static const struct {
	const char *sender_params, *rcpt_params;
	const char *envid, *orcpt; /* NULL: no such field */
} param_rows[] = {
    {"RET=HDRS ENVID=inv1001", "NOTIFY=FAILURE ORCPT=rfc822;a@example.org", "inv1001",
     "rfc822;a@example.org"},
    /* a parameter after ENVID is not part of it */
    {"ENVID=inv1002 RET=FULL", "ORCPT=rfc822;b@example.org NOTIFY=FAILURE,DELAY", "inv1002",
     "rfc822;b@example.org"},
    {"envid=low", "orcpt=rfc822;c@example.org", "low", "rfc822;c@example.org"},
    /* a longer keyword that ends in ENVID/ORCPT is another parameter */
    {"XENVID=no RET=HDRS", "XORCPT=rfc822;x@example.org", NULL, NULL},
    {NULL, NULL, NULL, NULL},
};

static void bounce_dsn_parameters(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(param_rows); i++) {
		enum spool_rcpt_status st = RCPT_FAILED;
		const char *reply = "550 5.1.1 no";
		struct spool_env e;
		make_env(&e, "app@example.com", 1, &st, &reply);
		e.sender_params =
		    param_rows[i].sender_params ? xstrdup(param_rows[i].sender_params) : NULL;
		e.rcpts[0].params =
		    param_rows[i].rcpt_params ? xstrdup(param_rows[i].rcpt_params) : NULL;
		char *s = build(&e, BOUNCE_FAILED, NULL);
		char *ds = part(s, "message/delivery-status");
		print_message("row %zu\n", i);
		const char *f = strstr(ds, "Original-Envelope-Id: ");
		if (param_rows[i].envid) {
			assert_non_null(f);
			f += strlen("Original-Envelope-Id: ");
			assert_int_equal(strcspn(f, "\r"), strlen(param_rows[i].envid));
			assert_memory_equal(f, param_rows[i].envid, strlen(param_rows[i].envid));
		} else {
			assert_null(f);
		}
		char *v = field(ds, 0, "Original-Recipient");
		if (param_rows[i].orcpt)
			assert_string_equal(v, param_rows[i].orcpt);
		else
			assert_null(v);
		free(v);
		free(ds);
		free(s);
		spool_env_deinit(&e);
	}
}

/* ---- hostile input ------------------------------------------------------------------------ */

/* A reply is the server's text: whatever it holds, it stays on its line. */
static void bounce_hostile_reply_cannot_inject(void **state)
{
	(void)state;
	static const char *const hostile[] = {
	    "550 5.1.1 x\r\nBcc: victim@example.net",
	    "550 5.1.1 x\nContent-Type: text/html",
	    "550 5.1.1 x\r\n\r\n--" BID "/" HOST "--\r\nInjected: yes",
	    "550 x\rX-Injected: yes",
	    "550 5.1.1 \x1b[31mred\x7f\x01",
	};
	for (size_t i = 0; i < ARRAY_SIZE(hostile); i++) {
		enum spool_rcpt_status st = RCPT_FAILED;
		struct spool_env e;
		make_env(&e, "app@example.com", 1, &st, &hostile[i]);
		char *s = build(&e, BOUNCE_FAILED, NULL);
		assert_crlf_lines(s);
		assert_false(has_line(s, "Bcc:"));
		assert_false(has_line(s, "Content-Type: text/html"));
		assert_false(has_line(s, "Injected:"));
		assert_false(has_line(s, "X-Injected:"));
		assert_int_equal(count_lines(s, "--" BID "/" HOST "--"), 1);
		for (const char *p = s; *p; p++) {
			unsigned char c = (unsigned char)*p;
			assert_true(c >= 0x20 || c == '\r' || c == '\n' || c == '\t');
			assert_true(c != 0x7f);
		}
		free(s);
		spool_env_deinit(&e);
	}
}

/* Addresses hold no CR/LF by the spool's contract; the report does not
 * rely on it (an envelope's \\x0D escape decodes to CR). */
static void bounce_hostile_address_cannot_inject(void **state)
{
	(void)state;
	enum spool_rcpt_status st = RCPT_FAILED;
	const char *reply = "550 5.1.1 no";
	struct spool_env e;
	make_env(&e, "app@example.com\r\nBcc: victim@example.net", 1, &st, &reply);
	free(e.rcpts[0].addr);
	e.rcpts[0].addr = xstrdup("r@example.org\r\nX-Injected: yes\nAction: delivered");
	char *s = build(&e, BOUNCE_FAILED, NULL);
	assert_crlf_lines(s);
	assert_false(has_line(s, "Bcc:"));
	assert_false(has_line(s, "X-Injected:"));
	assert_false(has_line(s, "Action: delivered"));
	assert_true(has_line(s, "To: <app@example.com??Bcc: victim@example.net>"));
	assert_true(has_line(s, "Final-Recipient: rfc822; r@example.org??X-Injected: yes?Action: "
				"delivered"));
	free(s);
	spool_env_deinit(&e);
}

/* ---- bounce_queue ---------------------------------------------------------------------- */

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* The report goes from <> to the sender, into queue/ (or deferred/ when
 * rate limited); a message from <> is never reported on. */
static void bounce_queue_from_null_sender_to_sender(void **state)
{
	(void)state;
	char dir[] = "/tmp/bouncetest.XXXXXX";
	assert_non_null(mkdtemp(dir));
	struct spool sp;
	assert_int_equal(spool_open(&sp, dir), 0);
	struct config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.general.hostname = (char *)HOST;
	cfg.retry.max_age_ms = 86400 * 1000;
	enum spool_rcpt_status st = RCPT_FAILED;
	const char *reply = "550 5.1.1 no";
	struct spool_env e, b;
	char id[SPOOL_ID_LEN + 1];
	make_env(&e, "app@example.com", 1, &st, &reply);
	int64_t now = NOW_MS;

	assert_int_equal(bounce_queue(&sp, &cfg, &e, BOUNCE_FAILED, now, 0, id), 0);
	struct buf why = BUF_INIT;
	assert_int_equal(spool_env_read(&sp, SPOOL_QUEUE, id, &b, &why), 0);
	assert_string_equal(b.sender, "");
	assert_int_equal(b.n_rcpts, 1);
	assert_string_equal(b.rcpts[0].addr, "app@example.com");
	assert_string_equal(b.origin_pickup, "bounce");
	spool_env_deinit(&b);

	/* rate limited: waits in deferred/ */
	assert_int_equal(bounce_queue(&sp, &cfg, &e, BOUNCE_DELAYED, now, now + 60000, id), 0);
	assert_int_equal(spool_env_read(&sp, SPOOL_DEFERRED, id, &b, &why), 0);
	assert_int_equal(b.next_ms, now + 60000);
	assert_string_equal(b.origin_pickup, "delay-notice");
	spool_env_deinit(&b);

	/* from <>: refused, nothing written */
	free(e.sender);
	e.sender = xstrdup("");
	char **ids;
	size_t n_before, n_after;
	assert_int_equal(spool_list(&sp, SPOOL_QUEUE, &ids, &n_before), 0);
	spool_list_free(ids, n_before);
	errno = 0;
	assert_int_equal(bounce_queue(&sp, &cfg, &e, BOUNCE_FAILED, now, 0, id), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(spool_list(&sp, SPOOL_QUEUE, &ids, &n_after), 0);
	spool_list_free(ids, n_after);
	assert_int_equal(n_after, n_before);

	buf_deinit(&why);
	spool_env_deinit(&e);
	spool_close(&sp);
	nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(bounce_report_structure),
	    cmocka_unit_test(bounce_without_headers_has_two_parts),
	    cmocka_unit_test(bounce_status_mapping),
	    cmocka_unit_test(bounce_status_of_outcomes),
	    cmocka_unit_test(bounce_delay_warning_form),
	    cmocka_unit_test(bounce_delay_warning_retry_until),
	    cmocka_unit_test(bounce_dsn_parameters),
	    cmocka_unit_test(bounce_hostile_reply_cannot_inject),
	    cmocka_unit_test(bounce_hostile_address_cannot_inject),
	    cmocka_unit_test(bounce_queue_from_null_sender_to_sender),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
