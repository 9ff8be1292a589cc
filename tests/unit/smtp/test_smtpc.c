/*
 * Purpose: unit tests for daemon/smtp/smtpc, the SMTP client state machine, with
 * a scripted peer: a loopback listener in the test reads what the session
 * sends (each command line is checked against the script), and the script's
 * replies are fed to the session through its conn's event callback, cut
 * where the test says: whole, or every 1, 2, 5 bytes (a reply cut at every
 * byte), several replies in one feed (merged segments), and bytes where no
 * reply is due (a protocol error, or a TLS error after the STARTTLS 220).
 * Each scenario is a row: the script, then what the session reported per
 * recipient, for the transaction, and when it closed. In every scenario no
 * event may come from inside smtpc_send, smtpc_quit or smtpc_abort; an abort
 * in the middle of a transaction reports it DONE on the next loop iteration.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/buf.h"
#include "daemon/smtp/smtpc.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_STEPS     16

/* One command the session must send (a prefix of its line; "." is the end
 * of data) and the bytes fed back when it arrives ("" = none yet: a later
 * step answers for it, as a pipelining server does). */
struct step {
	const char *expect;
	const char *reply;
};

struct scenario {
	const char *name;
	enum tls_mode tls;
	const char *user, *secret;
	enum auth_mode auth;
	const char *greeting; /* written on the socket */
	const char *sender;   /* NULL: s@example.org */
	size_t n_txns;	      /* transactions to send (the last one's results are checked) */
	const char *rcpts[3];
	bool merged_only; /* surplus bytes: only meaningful fed in one piece */
	struct step steps[MAX_STEPS];
	const char *want_rcpts; /* "a=ok/250 b=permanent/550" ("?" after a non-final one) */
	const char *want_txn;	/* class of the last transaction */
	const char *want_close; /* class when the session closed */
	const char *want_error; /* a part of its error text, or NULL */
};

#define EHLO_PIPE "250-mx.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 1000000\r\n"
#define EHLO_BARE "250-mx.example\r\n250 8BITMIME\r\n"
#define GREET	  "220 mx.example ESMTP\r\n"

static const struct scenario scenarios[] = {
    {.name = "pipelined transaction, an outcome per recipient",
     .tls = TLS_MODE_NONE,
     .greeting = GREET,
     .n_txns = 1,
     .rcpts = {"a@example.org", "b@example.org", "c@example.org"},
     .steps = {{"EHLO client.example", EHLO_PIPE},
	       {"MAIL FROM:<s@example.org> SIZE=", ""},
	       {"RCPT TO:<a@example.org>", ""},
	       {"RCPT TO:<b@example.org>", ""},
	       {"RCPT TO:<c@example.org>", ""},
	       {"DATA", "250 2.1.0 ok\r\n250 2.1.5 ok\r\n451 4.2.0 later\r\n550 5.1.1 no such "
			"user\r\n354 go\r\n"},
	       {".", "250 2.0.0 queued\r\n"},
	       {"QUIT", "221 bye\r\n"}},
     .want_rcpts = "a=ok/250 b=temporary/451 c=permanent/550",
     .want_txn = "ok",
     .want_close = "ok"},
    {.name = "one command at a time without PIPELINING",
     .tls = TLS_MODE_NONE,
     .greeting = GREET,
     .n_txns = 1,
     .rcpts = {"a@example.org", "b@example.org"},
     .steps = {{"EHLO ", EHLO_BARE},
	       {"MAIL FROM:<s@example.org>", "250 ok\r\n"},
	       {"RCPT TO:<a@example.org>", "250 ok\r\n"},
	       {"RCPT TO:<b@example.org>", "550 5.1.1 no\r\n"},
	       {"DATA", "354 go\r\n"},
	       {".", "250 queued\r\n"},
	       {"QUIT", "221 bye\r\n"}},
     .want_rcpts = "a=ok/250 b=permanent/550",
     .want_txn = "ok",
     .want_close = "ok"},
    {.name = "HELO after EHLO is not recognised",
     .tls = TLS_MODE_NONE,
     .greeting = GREET,
     .n_txns = 1,
     .rcpts = {"a@example.org"},
     .steps = {{"EHLO ", "502 5.5.1 unrecognized\r\n"},
	       {"HELO client.example", "250 hi\r\n"},
	       {"MAIL FROM:<s@example.org>", "250 ok\r\n"},
	       {"RCPT TO:<a@example.org>", "250 ok\r\n"},
	       {"DATA", "354 go\r\n"},
	       {".", "250 queued\r\n"},
	       {"QUIT", "221 bye\r\n"}},
     .want_rcpts = "a=ok/250",
     .want_txn = "ok",
     .want_close = "ok"},
    {.name = "AUTH PLAIN",
     .tls = TLS_MODE_NONE,
     .user = "u",
     .secret = "p",
     .auth = AUTH_MODE_AUTO,
     .greeting = GREET,
     .n_txns = 1,
     .rcpts = {"a@example.org"},
     .steps = {{"EHLO ", "250-mx\r\n250 AUTH PLAIN LOGIN\r\n"},
	       {"AUTH PLAIN AHUAcA==", "235 2.7.0 ok\r\n"},
	       {"MAIL FROM:<s@example.org>", "250 ok\r\n"},
	       {"RCPT TO:<a@example.org>", "250 ok\r\n"},
	       {"DATA", "354 go\r\n"},
	       {".", "250 queued\r\n"},
	       {"QUIT", "221 bye\r\n"}},
     .want_rcpts = "a=ok/250",
     .want_txn = "ok",
     .want_close = "ok"},
    {.name = "AUTH LOGIN",
     .tls = TLS_MODE_NONE,
     .user = "u",
     .secret = "p",
     .auth = AUTH_MODE_LOGIN,
     .greeting = GREET,
     .steps = {{"EHLO ", "250-mx\r\n250 AUTH LOGIN\r\n"},
	       {"AUTH LOGIN", "334 VXNlcm5hbWU6\r\n"},
	       {"dQ==", "334 UGFzc3dvcmQ6\r\n"},
	       {"cA==", "235 ok\r\n"},
	       {"QUIT", "221 bye\r\n"}},
     .want_close = "ok"},
    {.name = "AUTH XOAUTH2",
     .tls = TLS_MODE_NONE,
     .user = "u",
     .secret = "p",
     .auth = AUTH_MODE_XOAUTH2,
     .greeting = GREET,
     .steps = {{"EHLO ", "250-mx\r\n250 AUTH XOAUTH2\r\n"},
	       {"AUTH XOAUTH2 dXNlcj11AWF1dGg9QmVhcmVyIHABAQ==", "235 ok\r\n"},
	       {"QUIT", "221 bye\r\n"}},
     .want_close = "ok"},
    {.name = "AUTH refused: leave with QUIT",
     .tls = TLS_MODE_NONE,
     .user = "u",
     .secret = "p",
     .greeting = GREET,
     .steps = {{"EHLO ", "250-mx\r\n250 AUTH PLAIN\r\n"},
	       {"AUTH PLAIN ", "535 5.7.8 bad credentials\r\n"},
	       {"QUIT", "221 bye\r\n"}},
     .want_close = "auth",
     .want_error = "authentication failed: 535 5.7.8 bad credentials"},
    {.name = "RSET before the second transaction",
     .tls = TLS_MODE_NONE,
     .greeting = GREET,
     .n_txns = 2,
     .rcpts = {"a@example.org"},
     .steps = {{"EHLO ", EHLO_PIPE},
	       {"MAIL FROM:", ""},
	       {"RCPT TO:<a@example.org>", ""},
	       {"DATA", "250 ok\r\n250 ok\r\n354 go\r\n"},
	       {".", "250 one\r\n"},
	       {"RSET", ""},
	       {"MAIL FROM:", ""},
	       {"RCPT TO:<a@example.org>", ""},
	       {"DATA", "250 reset\r\n250 ok\r\n250 ok\r\n354 go\r\n"},
	       {".", "250 two\r\n"},
	       {"QUIT", "221 bye\r\n"}},
     .want_rcpts = "a=ok/250",
     .want_txn = "ok",
     .want_close = "ok"},
    {.name = "DATA refused: the accepted recipients share its reply",
     .tls = TLS_MODE_NONE,
     .greeting = GREET,
     .n_txns = 1,
     .rcpts = {"a@example.org", "b@example.org"},
     .steps = {{"EHLO ", EHLO_PIPE},
	       {"MAIL FROM:", ""},
	       {"RCPT TO:<a@example.org>", ""},
	       {"RCPT TO:<b@example.org>", ""},
	       {"DATA", "250 ok\r\n250 ok\r\n250 ok\r\n554 5.7.1 no data for you\r\n"},
	       {"QUIT", "221 bye\r\n"}},
     .want_rcpts = "a=permanent/554 b=permanent/554",
     .want_txn = "ok",
     .want_close = "ok"},
    {.name = "every recipient refused: no content",
     .tls = TLS_MODE_NONE,
     .greeting = GREET,
     .n_txns = 1,
     .rcpts = {"a@example.org", "b@example.org"},
     .steps = {{"EHLO ", EHLO_PIPE},
	       {"MAIL FROM:", ""},
	       {"RCPT TO:<a@example.org>", ""},
	       {"RCPT TO:<b@example.org>", ""},
	       {"DATA", "250 ok\r\n550 5.1.1 a\r\n450 4.2.1 b\r\n503 5.5.1 no recipients\r\n"},
	       {"QUIT", "221 bye\r\n"}},
     .want_rcpts = "a=permanent/550 b=temporary/450",
     .want_txn = "ok",
     .want_close = "ok"},
    {.name = "MAIL refused: the recipients share its reply",
     .tls = TLS_MODE_NONE,
     .greeting = GREET,
     .n_txns = 1,
     .rcpts = {"a@example.org"},
     .steps = {{"EHLO ", EHLO_PIPE},
	       {"MAIL FROM:", ""},
	       {"RCPT TO:<a@example.org>", ""},
	       {"DATA", "452 4.3.1 full\r\n503 5.5.1 no mail\r\n503 5.5.1 no mail\r\n"},
	       {"QUIT", "221 bye\r\n"}},
     .want_rcpts = "a=temporary/503",
     .want_txn = "temporary",
     .want_close = "ok"},
    {.name = "end of data deferred",
     .tls = TLS_MODE_NONE,
     .greeting = GREET,
     .n_txns = 1,
     .rcpts = {"a@example.org"},
     .steps = {{"EHLO ", EHLO_PIPE},
	       {"MAIL FROM:", ""},
	       {"RCPT TO:<a@example.org>", ""},
	       {"DATA", "250 ok\r\n250 ok\r\n354 go\r\n"},
	       {".", "451 4.3.0 try later\r\n"},
	       {"QUIT", "221 bye\r\n"}},
     .want_rcpts = "a=temporary/451",
     .want_txn = "ok",
     .want_close = "ok"},
    {.name = "421 in the envelope: the session ends, the transaction defers",
     .tls = TLS_MODE_NONE,
     .greeting = GREET,
     .n_txns = 1,
     .rcpts = {"a@example.org"},
     .steps = {{"EHLO ", EHLO_PIPE},
	       {"MAIL FROM:", ""},
	       {"RCPT TO:<a@example.org>", ""},
	       {"DATA", "421 4.3.2 shutting down\r\n"}},
     .want_rcpts = "a=ok/0?",
     .want_txn = "temporary",
     .want_close = "temporary",
     .want_error = "server closing the session: 421 4.3.2 shutting down"},
    {.name = "greeting refused (5xx): the session, not the message; leave with QUIT",
     .tls = TLS_MODE_NONE,
     .greeting = "554 5.3.2 go away\r\n",
     .steps = {{"QUIT", "221 bye\r\n"}},
     .want_close = "connection",
     .want_error = "server greeting: 554 5.3.2 go away"},
    {.name = "STARTTLS required and not offered",
     .tls = TLS_MODE_STARTTLS,
     .greeting = GREET,
     .steps = {{"EHLO ", EHLO_BARE}, {"QUIT", "221 bye\r\n"}},
     .want_close = "tls",
     .want_error = "does not offer STARTTLS"},
    /* merged segments with surplus bytes */
    {.name = "bytes after the EHLO reply",
     .tls = TLS_MODE_NONE,
     .greeting = GREET,
     .merged_only = true,
     .steps = {{"EHLO ", EHLO_BARE "250 extra\r\n"}},
     .want_close = "protocol",
     .want_error = "server sent 11 bytes more than its reply while sending EHLO"},
    {.name = "bytes after the STARTTLS 220",
     .tls = TLS_MODE_STARTTLS,
     .greeting = GREET,
     .merged_only = true,
     .steps = {{"EHLO ", "250-mx\r\n250 STARTTLS\r\n"}, {"STARTTLS", "220 go\r\n250 evil\r\n"}},
     .want_close = "tls",
     .want_error = "possible injection"},
    {.name = "bytes after the last pipelined reply: every answer is doubtful",
     .tls = TLS_MODE_NONE,
     .greeting = GREET,
     .n_txns = 1,
     .merged_only = true,
     .rcpts = {"a@example.org", "b@example.org"},
     .steps = {{"EHLO ", EHLO_PIPE},
	       {"MAIL FROM:", ""},
	       {"RCPT TO:<a@example.org>", ""},
	       {"RCPT TO:<b@example.org>", ""},
	       {"DATA", "250 ok\r\n250 ok\r\n550 5.1.1 b\r\n554 no\r\n250 extra\r\n"}},
     .want_rcpts = "a=ok/250? b=permanent/550?",
     .want_txn = "protocol",
     .want_close = "protocol",
     .want_error = "more than its reply"},
};

/* Refused by smtpc before it reaches the wire, from inside smtpc_send. */
static const struct scenario bad_sender = {
    .name = "a control character in the sender: the transaction fails, not synchronously",
    .tls = TLS_MODE_NONE,
    .greeting = GREET,
    .sender = "s\r\nRCPT TO:<x@example.org>",
    .n_txns = 1,
    .rcpts = {"a@example.org"},
    .steps = {{"EHLO ", EHLO_PIPE}},
    .want_rcpts = "",
    .want_txn = "permanent",
    .want_close = "protocol",
    .want_error = "control character"};

/* ---- the scripted peer ------------------------------------------------------------------ */

struct run {
	uv_loop_t loop;
	uv_tcp_t listener, peer;
	bool peer_open;
	struct config_relay relay;
	const struct scenario *sc;
	size_t chunk; /* 0: each reply in one feed */
	size_t n_steps, step;
	struct buf line;
	bool in_body;
	struct smtpc *s;
	struct spool_env env;
	struct smtpc_txn txn;
	bool txn_busy;
	size_t txns_sent, txns_done;
	struct buf rcpts; /* the last transaction's results */
	enum smtpc_class txn_cls;
	bool closed;
	enum smtpc_class close_cls;
	char *close_error;
	const char *stop_at;  /* a command the peer does not answer: uv_stop instead */
	bool in_call;	      /* the owner is inside smtpc_send/quit/abort */
	unsigned sync_events; /* events that came from inside one */
};

static void write_done_cb(uv_write_t *w, int status)
{
	(void)status;
	free(w);
}

static void peer_closed_cb(uv_handle_t *h)
{
	(void)h;
}

static void close_peer(struct run *r)
{
	if (r->peer_open) {
		r->peer_open = false;
		uv_close((uv_handle_t *)&r->peer, peer_closed_cb);
	}
}

/* Feeds reply bytes to the session as its conn would, in pieces of r->chunk. */
static void feed(struct run *r, const char *bytes)
{
	size_t len = strlen(bytes), step = r->chunk ? r->chunk : len;
	for (size_t off = 0; off < len; off += step) {
		struct conn *c = r->s ? smtpc_conn(r->s) : NULL;
		if (c == NULL || c->closing)
			return;
		buf_append(&c->in, bytes + off, len - off < step ? len - off : step);
		c->cb(c, CONN_EV_DATA, c->arg);
	}
}

static void on_line(struct run *r, const char *line)
{
	if (r->in_body && strcmp(line, ".") != 0)
		return;
	print_message("  > %s\n", line);
	assert_true(r->step < r->n_steps);
	const struct step *st = &r->sc->steps[r->step++];
	if (strncmp(line, st->expect, strlen(st->expect)) != 0)
		fail_msg("%s: expected \"%s\", got \"%s\"", r->sc->name, st->expect, line);
	r->in_body = false;
	if (r->stop_at && strcmp(st->expect, r->stop_at) == 0) {
		uv_stop(&r->loop);
		return;
	}
	feed(r, st->reply);
	if (strncmp(st->reply, "354", 3) == 0 || strstr(st->reply, "\n354 "))
		r->in_body = true;
	if (strcmp(st->expect, "QUIT") == 0)
		close_peer(r);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	(void)h;
	b->base = malloc(suggested);
	b->len = suggested;
}

static void peer_read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	struct run *r = st->data;
	if (n < 0) {
		close_peer(r);
	} else if (n > 0) {
		buf_append(&r->line, b->base, (size_t)n);
		char *nl;
		while (r->peer_open && r->line.len &&
		       (nl = memchr(r->line.data, '\n', r->line.len)) != NULL) {
			size_t len = (size_t)(nl - r->line.data) + 1;
			assert_true(len >= 2 && nl[-1] == '\r'); /* commands end in CRLF */
			char *text = xstrndup(r->line.data, len - 2);
			buf_consume(&r->line, len);
			on_line(r, text);
			free(text);
		}
	}
	free(b->base);
}

static void accept_cb(uv_stream_t *l, int status)
{
	struct run *r = l->data;
	assert_int_equal(status, 0);
	uv_tcp_init(&r->loop, &r->peer);
	r->peer.data = r;
	assert_int_equal(uv_accept(l, (uv_stream_t *)&r->peer), 0);
	r->peer_open = true;
	uv_read_start((uv_stream_t *)&r->peer, alloc_cb, peer_read_cb);
	uv_write_t *w = malloc(sizeof(*w));
	uv_buf_t b = uv_buf_init((char *)r->sc->greeting, (unsigned)strlen(r->sc->greeting));
	uv_write(w, (uv_stream_t *)&r->peer, &b, 1, write_done_cb);
	uv_close((uv_handle_t *)&r->listener, NULL); /* one session */
}

/* ---- the session's owner ---------------------------------------------------------------- */

static int content_fd(void)
{
	static const char body[] = "Subject: t\r\n\r\nbody\r\n.dot\r\n";
	char path[] = "/tmp/smtpctest.XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(write(fd, body, sizeof(body) - 1), (ssize_t)sizeof(body) - 1);
	return fd;
}

static void send_next(struct run *r)
{
	for (size_t i = 0; i < r->env.n_rcpts; i++)
		r->env.rcpts[i].status = RCPT_PENDING;
	smtpc_txn_init(&r->txn, &r->env, content_fd());
	r->txn_busy = true;
	r->txns_sent++;
	r->in_call = true;
	smtpc_send(r->s, &r->txn);
	r->in_call = false;
}

static void quit(struct run *r, struct smtpc *s)
{
	r->in_call = true;
	smtpc_quit(s);
	r->in_call = false;
}

static void record(struct run *r)
{
	buf_clear(&r->rcpts);
	for (size_t i = 0; i < r->env.n_rcpts; i++) {
		const struct smtpc_rcpt_result *rr = &r->txn.rcpt[i];
		if (!rr->tried)
			continue;
		buf_printf(&r->rcpts, "%s%c=%s/%d%s", r->rcpts.len ? " " : "",
			   r->env.rcpts[i].addr[0], smtpc_class_names[rr->cls], rr->code,
			   rr->final ? "" : "?");
	}
	r->txn_cls = r->txn.cls;
	smtpc_txn_deinit(&r->txn);
	r->txn_busy = false;
	r->txns_done++;
}

static void session_cb(struct smtpc *s, enum smtpc_event ev, void *arg)
{
	struct run *r = arg;
	if (r->in_call)
		r->sync_events++;
	switch (ev) {
	case SMTPC_EV_READY:
		if (r->txns_sent < r->sc->n_txns)
			send_next(r);
		else
			quit(r, s);
		break;
	case SMTPC_EV_NEXT:
		break; /* one transaction at a time here */
	case SMTPC_EV_DONE:
		record(r);
		if (r->txns_sent < r->sc->n_txns && smtpc_idle(s))
			send_next(r);
		else
			quit(r, s);
		break;
	case SMTPC_EV_CLOSED:
		r->closed = true;
		r->close_cls = smtpc_error_class(s);
		r->close_error = xstrdup(smtpc_error(s));
		r->s = NULL;
		close_peer(r);
		if (!uv_is_closing((uv_handle_t *)&r->listener))
			uv_close((uv_handle_t *)&r->listener, NULL);
		break;
	}
}

/* Listens, starts the session and runs the loop until it ends (or the
 * peer stops it at r->stop_at). */
static void run_start(struct run *r, const struct scenario *sc, size_t chunk)
{
	/* r is zeroed by the caller, which may have set stop_at. */
	r->sc = sc;
	r->chunk = chunk;
	while (r->n_steps < MAX_STEPS && sc->steps[r->n_steps].expect)
		r->n_steps++;
	print_message("%s (pieces of %zu)\n", sc->name, chunk);
	assert_int_equal(uv_loop_init(&r->loop), 0);

	struct sockaddr_in sa;
	int namelen = sizeof(sa);
	uv_ip4_addr("127.0.0.1", 0, &sa);
	uv_tcp_init(&r->loop, &r->listener);
	r->listener.data = r;
	assert_int_equal(uv_tcp_bind(&r->listener, (struct sockaddr *)&sa, 0), 0);
	assert_int_equal(uv_listen((uv_stream_t *)&r->listener, 1, accept_cb), 0);
	uv_tcp_getsockname(&r->listener, (struct sockaddr *)&sa, &namelen);

	r->relay.name = (char *)"test";
	r->relay.host = (char *)"127.0.0.1";
	r->relay.port = ntohs(sa.sin_port);
	r->relay.tls = sc->tls;
	r->relay.user = (char *)sc->user;
	r->relay.auth = sc->auth;
	r->relay.allow_plaintext_auth = true;
	r->relay.max_messages_per_session = 100;
	/* Generous: no scenario waits for a timeout. */
	r->relay.idle_timeout_ms = r->relay.connect_timeout_ms = r->relay.greeting_timeout_ms =
	    r->relay.command_timeout_ms = r->relay.data_timeout_ms =
		r->relay.data_block_timeout_ms = r->relay.data_done_timeout_ms = 60000;

	memset(&r->env, 0, sizeof(r->env));
	memcpy(r->env.id, "00000000000000000001", SPOOL_ID_LEN);
	r->env.sender = xstrdup(sc->sender ? sc->sender : "s@example.org");
	r->env.size = 26;
	for (size_t i = 0; i < ARRAY_SIZE(sc->rcpts) && sc->rcpts[i]; i++)
		spool_env_add_rcpt(&r->env, sc->rcpts[i], NULL);

	struct smtpc_params p = {.relay = &r->relay,
				 .helo_name = "client.example",
				 .ssl_ctx = NULL,
				 .secret = sc->secret ? xstrdup(sc->secret) : NULL};
	r->s = smtpc_new(&r->loop, &p, session_cb, r);
	uv_run(&r->loop, UV_RUN_DEFAULT);
}

/* Checks what the session reported against the scenario, and frees. */
static void run_check(struct run *r)
{
	const struct scenario *sc = r->sc;
	assert_true(r->closed);
	assert_int_equal(r->sync_events, 0);
	assert_int_equal(r->step, r->n_steps); /* every scripted command came */
	assert_int_equal(r->txns_done, sc->n_txns);
	if (sc->want_rcpts) {
		assert_string_equal(r->rcpts.data ? r->rcpts.data : "", sc->want_rcpts);
		assert_string_equal(smtpc_class_names[r->txn_cls], sc->want_txn);
	}
	assert_string_equal(smtpc_class_names[r->close_cls], sc->want_close);
	if (sc->want_error && strstr(r->close_error, sc->want_error) == NULL)
		fail_msg("%s: error \"%s\" lacks \"%s\"", sc->name, r->close_error, sc->want_error);
	assert_int_equal(uv_loop_close(&r->loop), 0);
	free(r->close_error);
	buf_deinit(&r->line);
	buf_deinit(&r->rcpts);
	spool_env_deinit(&r->env);
}

static void run_scenario(const struct scenario *sc, size_t chunk)
{
	struct run r = {0};
	run_start(&r, sc, chunk);
	run_check(&r);
}

/* Every scenario with each reply fed whole. */
static void smtpc_scripted_sessions(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(scenarios); i++)
		run_scenario(&scenarios[i], 0);
}

/* The same, each reply cut at every byte, then in pieces of 2 and 5: the
 * outcome never depends on where the reads end. */
static void smtpc_split_replies(void **state)
{
	(void)state;
	static const size_t chunks[] = {1, 2, 5};
	for (size_t c = 0; c < ARRAY_SIZE(chunks); c++)
		for (size_t i = 0; i < ARRAY_SIZE(scenarios); i++)
			if (!scenarios[i].merged_only)
				run_scenario(&scenarios[i], chunks[c]);
}

static void smtpc_bad_sender_not_synchronous(void **state)
{
	(void)state;
	run_scenario(&bad_sender, 0);
}

/* smtpc_abort while the envelope waits for its replies: the call returns
 * before any event; the next loop iteration brings DONE, then CLOSED. */
static void smtpc_abort_reports_done_later(void **state)
{
	(void)state;
	static const struct scenario sc = {
	    .name = "abort in the middle of the transaction",
	    .tls = TLS_MODE_NONE,
	    .greeting = GREET,
	    .n_txns = 1,
	    .rcpts = {"a@example.org"},
	    .steps = {{"EHLO ", EHLO_PIPE},
		      {"MAIL FROM:", ""},
		      {"RCPT TO:<a@example.org>", ""},
		      {"DATA", "250 ok\r\n250 ok\r\n354 go\r\n"}},
	    .want_rcpts = "a=ok/0?", /* no outcome of its own: the transaction's */
	    .want_txn = "connection",
	    .want_close = "connection",
	    .want_error = "aborted by the test"};
	struct run r = {.stop_at = "DATA"};
	run_start(&r, &sc, 0);
	assert_int_equal(r.txns_sent, 1);
	assert_int_equal(r.txns_done, 0);
	r.step = r.n_steps; /* the rest of the script is not wanted */
	r.in_call = true;
	smtpc_abort(r.s, "aborted by the test");
	r.in_call = false;
	assert_int_equal(r.sync_events, 0);
	assert_int_equal(r.txns_done, 0);
	assert_false(r.closed);
	uv_run(&r.loop, UV_RUN_NOWAIT);
	assert_int_equal(r.txns_done, 1);
	uv_run(&r.loop, UV_RUN_DEFAULT);
	run_check(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(smtpc_scripted_sessions),
	    cmocka_unit_test(smtpc_split_replies),
	    cmocka_unit_test(smtpc_bad_sender_not_synchronous),
	    cmocka_unit_test(smtpc_abort_reports_done_later),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
