/*
 * Purpose: the SMTP client state machine: greeting, EHLO, STARTTLS, EHLO
 * again, AUTH, then transactions (RSET, MAIL, RCPT..., DATA pipelined when
 * offered), content streamed from disk (or, for a small fresh message,
 * from memory) through the wire filter, QUIT.
 * The one SMTP engine: the relay pool's sessions and pickupctl test-relay's
 * probe (set-up, then QUIT at READY, each step shown through the trace hook).
 * Owns: its conn, the reply parser, the content read buffer, the
 * password_command runner (cmdrun.c) while it runs.
 * Invariants: every state change goes through set_state(), so the trace
 * sees each; no secret reaches the trace or the log (send_cmd() hides AUTH
 * arguments); "send on entering a state" (enter()) is kept apart from
 * "interpret the reply" (on_reply()); every command line passes through
 * send_cmd(), which refuses CR, LF and NUL; no byte may follow the last
 * reply that is due (replies_due(): after the STARTTLS 220 none at all),
 * else the transaction is a protocol error, never a bounce; "may be
 * delivered twice" only when the dot reached the peer and no reply came;
 * no event reaches the owner from inside smtpc_send, smtpc_quit or
 * smtpc_abort: a transaction cut short by the session's end is settled at
 * once and reported DONE when the conn has closed, just before CLOSED; the
 * first chunk of content is read while the envelope commands are answered,
 * and sent on DATA's 354; a read that outlives its transaction is dropped
 * and closes that transaction's descriptor; the session frees itself only
 * after its conn closed and no file read is in flight.
 */
#include "daemon/smtp/smtpc.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/log.h"
#include "daemon/smtp/cmdrun.h"

enum timeout_kind {
	TO_NONE,
	TO_CONNECT,
	TO_GREETING,
	TO_COMMAND,
	TO_DATA,
	TO_BLOCK,
	TO_DONE,
	TO_IDLE
};

/* Postfix xfer_states[]-style table: what a failure in each state risks. */
static const struct {
	const char *name;
	enum timeout_kind timeout;
	const char *risk;
} states[] = {
    [SMTPC_ST_CONNECT] = {"connecting", TO_CONNECT, NULL},
    [SMTPC_ST_GREETING] = {"receiving the initial server greeting", TO_GREETING, NULL},
    [SMTPC_ST_EHLO] = {"sending EHLO", TO_COMMAND, NULL},
    [SMTPC_ST_HELO] = {"sending HELO", TO_COMMAND, NULL},
    [SMTPC_ST_STARTTLS] = {"sending STARTTLS", TO_COMMAND, NULL},
    [SMTPC_ST_TLS] = {"TLS handshake", TO_COMMAND, NULL},
    [SMTPC_ST_EHLO_TLS] = {"sending EHLO after STARTTLS", TO_COMMAND, NULL},
    [SMTPC_ST_SECRET_CMD] = {"running password_command", TO_COMMAND, NULL},
    [SMTPC_ST_AUTH] = {"authenticating", TO_COMMAND, NULL},
    [SMTPC_ST_AUTH_LOGIN_USER] = {"sending the AUTH LOGIN user name", TO_COMMAND, NULL},
    [SMTPC_ST_AUTH_LOGIN_PASS] = {"sending the AUTH LOGIN password", TO_COMMAND, NULL},
    [SMTPC_ST_AUTH_XOAUTH2_ERR] = {"ending a failed XOAUTH2 exchange", TO_COMMAND, NULL},
    [SMTPC_ST_READY] = {"idle", TO_IDLE, NULL},
    [SMTPC_ST_ENVELOPE] = {"sending the envelope", TO_COMMAND, NULL},
    [SMTPC_ST_BODY] = {"sending message content", TO_BLOCK, NULL},
    [SMTPC_ST_DOT] = {"sending end of data", TO_DONE, "message may be delivered twice"},
    [SMTPC_ST_QUIT] = {"sending QUIT", TO_COMMAND, NULL},
    [SMTPC_ST_CLOSED] = {"closed", TO_NONE, NULL},
};

const char *const smtpc_class_names[] = {"ok",	 "connection", "tls",	   "protocol",
					 "auth", "temporary",  "permanent"};

/* One command whose reply is still to come (pipelined in order). */
enum cmd_kind { CMD_RSET, CMD_MAIL, CMD_RCPT, CMD_DATA };
struct pending_cmd {
	enum cmd_kind kind;
	size_t rcpt; /* index into env->rcpts for CMD_RCPT */
};

/* Each chunk of content is one thread-pool job: 128 KiB halves the
 * hand-offs of 64 KiB, and 4 sessions stay under 8 MiB RSS with 1 MiB
 * messages (256 KiB: 8.9 MiB, the chunk and its copy in the write). */
#define READ_CHUNK (128 * 1024)

struct smtpc {
	uv_loop_t *loop;
	const struct config_relay *relay;
	char *helo_name;
	SSL_CTX *ssl_ctx;
	char *secret;
	struct conn *conn; /* NULL once it reported CONN_EV_CLOSED (and is freed) */
	char peer[128];	   /* its peer, kept for the owner's last questions */
	enum smtpc_state state;
	struct smtp_reply_parser parser;
	struct smtp_caps caps;
	bool esmtp;
	unsigned messages; /* transactions started on this session */
	bool need_rset;
	smtpc_cb cb;
	void *arg;
	enum smtpc_class error_class;
	enum smtpc_state error_state;
	struct buf error;
	smtpc_trace_cb trace;
	bool probe;
	bool closing;
	bool conn_closed;
	/* the transaction */
	struct smtpc_txn *txn;
	struct pending_cmd *cmds;
	size_t n_cmds, cmd_next;
	/* The next one, pipelined behind txn's final dot: its envelope
	 * commands are sent, their replies come after the dot's. */
	struct smtpc_txn *next;
	struct pending_cmd *next_cmds;
	size_t next_n_cmds;
	bool next_held;	  /* given after the dot went: it waits for the dot's reply */
	bool next_failed; /* smtpc_fail_held on it: the session ends once it is txn */
	bool gathering;	  /* write_dot asks for the next: its envelope joins the dot */
	size_t n_accepted;
	bool mail_ok;
	bool data_ok;
	struct wire_edit *edits;
	size_t n_edits;
	struct wire_filter filter;
	uv_fs_t read_req;
	bool read_pending;
	unsigned read_txn; /* the transaction (s->messages) the pending read is for */
	int read_fd;	   /* an ended transaction's content, closed when its read is back */
	bool read_eof;
	bool chunk_early;  /* the first chunk came before DATA's 354: sent on it */
	ssize_t chunk_len; /* with chunk_early: the read's result */
	int64_t read_off;
	char *chunk;
	struct buf out;
	uint64_t data_size; /* of the content: EOF without another read */
	/* The run of the content ingest found clean (env->verbatim_*), sent
	 * as it is: raw while read_off is in it, the filter moved past it. */
	uint64_t raw_from, raw_to;
	bool raw;
	uint64_t dot_end;  /* the stream position just past the final dot (conn_acked) */
	bool replies_seen; /* a reply arrived in this transaction */
	bool answered;	   /* a well-formed reply answered the final dot (or the body) */
	/* password_command */
	struct cmdrun *cmd; /* running; the session waits for its end to free itself */
	struct buf cmd_out;
	bool token_retried; /* XOAUTH2: the command was run again once after a refusal */
};

static void enter(struct smtpc *s, enum smtpc_state st);
static void session_fail(struct smtpc *s, enum smtpc_class cls, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

const char *smtpc_peer(const struct smtpc *s)
{
	return s->conn ? s->conn->peer : s->peer[0] ? s->peer : s->relay->host;
}

enum smtpc_class smtpc_error_class(const struct smtpc *s)
{
	return s->error_class;
}

enum smtpc_state smtpc_error_state(const struct smtpc *s)
{
	return s->error_state;
}

struct conn *smtpc_conn(const struct smtpc *s)
{
	return s->conn;
}

const char *smtpc_error(const struct smtpc *s)
{
	return s->error.len ? s->error.data : "";
}

unsigned smtpc_messages(const struct smtpc *s)
{
	return s->messages;
}

bool smtpc_idle(const struct smtpc *s)
{
	return s->state == SMTPC_ST_READY && !s->closing;
}

enum smtpc_class smtpc_classify_code(int code)
{
	if (code >= 200 && code < 400)
		return SMTPC_OK;
	if (code >= 400 && code < 500)
		return SMTPC_TEMP;
	if (code >= 500 && code < 600)
		return SMTPC_PERM;
	return SMTPC_PROTO;
}

void smtpc_txn_init(struct smtpc_txn *t, struct spool_env *env, int data_fd)
{
	memset(t, 0, sizeof(*t));
	t->env = env;
	t->data_fd = data_fd;
	t->rcpt = xcalloc(env->n_rcpts ? env->n_rcpts : 1, sizeof(*t->rcpt));
}

void smtpc_txn_deinit(struct smtpc_txn *t)
{
	if (t->rcpt)
		for (size_t i = 0; i < t->env->n_rcpts; i++)
			free(t->rcpt[i].reply);
	free(t->rcpt);
	free(t->reply);
	if (t->data_fd >= 0)
		close(t->data_fd);
	memset(t, 0, sizeof(*t));
	t->data_fd = -1;
}

static uint64_t timeout_ms(const struct smtpc *s, enum timeout_kind k)
{
	const struct config_relay *r = s->relay;
	switch (k) {
	case TO_CONNECT:
		return r->connect_timeout_ms;
	case TO_GREETING:
		return r->greeting_timeout_ms;
	case TO_COMMAND:
		return r->command_timeout_ms;
	case TO_DATA:
		return r->data_timeout_ms;
	case TO_BLOCK:
		return r->data_block_timeout_ms;
	case TO_DONE:
		return r->data_done_timeout_ms;
	case TO_IDLE:
		return r->idle_timeout_ms;
	case TO_NONE:
		break;
	}
	return 0;
}

static void trace(struct smtpc *s, enum smtpc_trace_kind kind, const char *line,
		  const struct smtp_reply *r)
{
	if (s->trace == NULL)
		return;
	struct smtpc_trace_ev ev = {.kind = kind, .state = s->state, .line = line, .reply = r};
	s->trace(s, &ev, s->arg);
}

/* Every state change goes through here, so the trace sees each one. */
static void set_state(struct smtpc *s, enum smtpc_state st)
{
	if (s->state == st)
		return;
	s->state = st;
	trace(s, SMTPC_TRACE_STATE, NULL, NULL);
}

static void emit(struct smtpc *s, enum smtpc_event ev)
{
	s->cb(s, ev, s->arg);
}

/* Every command goes through here: a CR, LF or NUL would let data become a command. */
static int send_cmd(struct smtpc *s, struct buf *batch, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int send_cmd(struct smtpc *s, struct buf *batch, const char *fmt, ...)
{
	struct buf line = BUF_INIT;
	va_list ap;
	va_start(ap, fmt);
	buf_vprintf(&line, fmt, ap);
	va_end(ap);
	for (size_t i = 0; i < line.len; i++) {
		if (line.data[i] == '\r' || line.data[i] == '\n' || line.data[i] == '\0') {
			OPENSSL_cleanse(line.data, line.len);
			buf_deinit(&line);
			return -1;
		}
	}
	bool login = s->state == SMTPC_ST_AUTH_LOGIN_USER || s->state == SMTPC_ST_AUTH_LOGIN_PASS;
	if (strncmp(line.data, "AUTH", 4) == 0 || login)
		log_debug("%s: > AUTH ... (hidden)", smtpc_peer(s));
	else
		log_debug("%s: > %s", smtpc_peer(s), line.data);
	if (s->trace) {
		/* "AUTH PLAIN <hidden>": the mechanism shows, what follows it never. */
		const char *sp =
		    strncmp(line.data, "AUTH ", 5) == 0 ? strchr(line.data + 5, ' ') : NULL;
		struct buf shown = BUF_INIT;
		if (login)
			buf_puts(&shown, "<hidden>");
		else if (sp)
			buf_printf(&shown, "%.*s <hidden>", (int)(sp - line.data), line.data);
		else
			buf_puts(&shown, line.data);
		trace(s, SMTPC_TRACE_SENT, shown.data, NULL);
		buf_deinit(&shown);
	}
	buf_puts(&line, "\r\n");
	if (batch)
		buf_append(batch, line.data, line.len);
	else
		conn_write(s->conn, line.data, line.len);
	OPENSSL_cleanse(line.data, line.len);
	buf_deinit(&line);
	return 0;
}

static void wipe_secret(struct smtpc *s)
{
	if (s->secret) {
		OPENSSL_cleanse(s->secret, strlen(s->secret));
		free(s->secret);
		s->secret = NULL;
	}
}

static char *b64(const void *data, size_t len)
{
	char *out = xmalloc(4 * ((len + 2) / 3) + 1);
	EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	return out;
}

/* Whether ending the session now risks a duplicate (states[].risk): only
 * when no reply answered, and the peer's TCP acknowledged every byte up to
 * the final dot (a next envelope may follow it). Bytes it never got include
 * the dot: then the message cannot have been taken and a retry is clean (a
 * body cut mid-way). */
static bool at_risk(struct smtpc *s)
{
	return states[s->state].risk != NULL && !s->answered &&
	       (s->conn == NULL || conn_acked(s->conn) >= s->dot_end);
}

static void set_error(struct smtpc *s, enum smtpc_class cls, const char *fmt, va_list ap)
{
	if (s->error_class != SMTPC_OK)
		return;
	s->error_class = cls;
	s->error_state = s->state;
	buf_clear(&s->error);
	buf_vprintf(&s->error, fmt, ap);
}

/* Ends a transaction in progress with a whole-transaction class. */
static void txn_fail(struct smtpc *s, enum smtpc_class cls, const char *why)
{
	struct smtpc_txn *t = s->txn;
	if (t == NULL)
		return;
	if (t->cls == SMTPC_OK) {
		t->cls = cls;
		free(t->reply);
		t->reply = xstrdup(why);
	}
	if (at_risk(s))
		t->maybe_delivered = true;
}

static void start_content(struct smtpc *s);
static void begin_envelope(struct smtpc *s);
static void start_envelope(struct smtpc *s);

/* The next transaction becomes the current one: its envelope's replies
 * follow (pipelined), or it starts now (held). */
static void promote_next(struct smtpc *s)
{
	bool held = s->next_held;
	s->txn = s->next;
	s->next = NULL;
	s->next_held = false;
	s->cmds = s->next_cmds;
	s->n_cmds = s->next_n_cmds;
	s->next_cmds = NULL;
	s->next_n_cmds = 0;
	if (s->next_failed) {
		/* Failed while it waited (smtpc_fail_held): now that the one
		 * before it has its reply, the session can be dropped. */
		begin_envelope(s);
		s->replies_seen = true; /* it failed of itself: not a stale session */
		session_fail(s, SMTPC_CONN, "%s", s->txn->reply ? s->txn->reply : "failed");
		return;
	}
	if (held)
		start_envelope(s);
	else
		begin_envelope(s);
	if (!s->closing && s->state == SMTPC_ST_ENVELOPE)
		start_content(s);
}

/* The session has closed with a pipelined transaction still waiting: it
 * ends as the session did, though nothing of it can have been taken. */
static void fail_next(struct smtpc *s)
{
	struct smtpc_txn *t = s->next;
	s->next = NULL;
	free(s->next_cmds);
	s->next_cmds = NULL;
	s->next_n_cmds = 0;
	if (t->cls == SMTPC_OK) {
		t->cls = s->error_class != SMTPC_OK ? s->error_class : SMTPC_CONN;
		free(t->reply);
		t->reply = xstrdup(s->error.len ? s->error.data : "session closed");
		/* The one before it never had its reply: this one is not why
		 * the session ended, and goes again now (relay__delivery_ended). */
		t->session_stale = true;
	}
	s->txn = t;
}

static void finish_txn(struct smtpc *s)
{
	struct smtpc_txn *t = s->txn;
	if (t == NULL)
		return;
	s->txn = NULL;
	free(s->cmds);
	s->cmds = NULL;
	s->n_cmds = s->cmd_next = 0;
	for (size_t i = 0; i < s->n_edits; i++)
		free((char *)s->edits[i].insert);
	free(s->edits);
	s->edits = NULL;
	s->n_edits = 0;
	if (t->data_fd >= 0) {
		/* A read still in flight may use the descriptor: it closes it. */
		if (s->read_pending)
			s->read_fd = t->data_fd;
		else
			close(t->data_fd);
		t->data_fd = -1;
	}
	if (s->next && !s->closing)
		promote_next(s);
	emit(s, SMTPC_EV_DONE);
}

static void maybe_free(struct smtpc *s)
{
	if (!s->conn_closed || s->read_pending || s->cmd != NULL)
		return;
	s->state = SMTPC_ST_CLOSED;
	emit(s, SMTPC_EV_CLOSED);
	smtp_reply_parser_deinit(&s->parser);
	wipe_secret(s);
	buf_deinit(&s->error);
	buf_deinit(&s->out);
	free(s->next_cmds);
	OPENSSL_cleanse(s->cmd_out.data, s->cmd_out.len);
	buf_deinit(&s->cmd_out);
	free(s->chunk);
	free(s->helo_name);
	free(s);
}

static void close_session(struct smtpc *s)
{
	if (s->closing)
		return;
	s->closing = true;
	if (s->cmd)
		cmdrun_cancel(s->cmd); /* its whole process group */
	if (s->txn && s->state == SMTPC_ST_ENVELOPE && !s->replies_seen && s->messages > 1)
		s->txn->session_stale = true;
	/* Settled now (what is at risk depends on what the peer has
	 * acknowledged), reported when the conn has closed: this may be a
	 * call the owner made, which must return first. */
	txn_fail(s, s->error_class != SMTPC_OK ? s->error_class : SMTPC_CONN,
		 s->error.len ? s->error.data : "session closed");
	conn_close(s->conn);
}

static void session_fail(struct smtpc *s, enum smtpc_class cls, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	set_error(s, cls, fmt, ap);
	va_end(ap);
	/* The error names the phase already ("timeout while ..."). */
	if (at_risk(s))
		log_warn("%s: %s: %s", smtpc_peer(s), smtpc_error(s), states[s->state].risk);
	close_session(s);
}

/* Ends a session that failed while the server waits for our next command
 * (a refusal during set-up, or a decision of ours): it leaves with QUIT
 * (RFC 5321 4.1.1.10) instead of dropping the connection. */
static void session_leave(struct smtpc *s, enum smtpc_class cls, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void session_leave(struct smtpc *s, enum smtpc_class cls, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	set_error(s, cls, fmt, ap);
	va_end(ap);
	enter(s, SMTPC_ST_QUIT);
}

/* A reply ends the session: "what: reply" becomes the error; with quit the
 * session leaves politely (session_leave), else it drops (session_fail). */
static void session_end_reply(struct smtpc *s, enum smtpc_class cls, const struct smtp_reply *r,
			      const char *what, bool quit)
{
	struct buf sum = BUF_INIT;
	smtp_reply_summary(r, &sum);
	if (quit)
		session_leave(s, cls, "%s: %s", what, sum.data);
	else
		session_fail(s, cls, "%s: %s", what, sum.data);
	buf_deinit(&sum);
}

/* ---- transaction: envelope ---------------------------------------------------------- */

static bool rcpt_wanted(const struct spool_rcpt *r)
{
	return r->status == RCPT_PENDING || r->status == RCPT_DEFERRED;
}

/* final: the outcome for this recipient is known (refused now, or accepted
 * after the final dot); a recipient without a final outcome takes the
 * transaction's. */
static void set_rcpt(struct smtpc_rcpt_result *rr, enum smtpc_class cls, int code, const char *why,
		     bool final)
{
	rr->final = final;
	rr->cls = cls;
	rr->code = code;
	free(rr->reply);
	rr->reply = xstrdup(why);
}

/* Builds the wire edits from the envelope: header lines get their CRLF here. */
static void build_edits(struct smtpc *s, const struct spool_env *env)
{
	s->edits = xcalloc(env->n_edits ? env->n_edits : 1, sizeof(*s->edits));
	s->n_edits = env->n_edits;
	for (size_t i = 0; i < env->n_edits; i++) {
		struct wire_edit *we = &s->edits[i];
		we->offset = env->edits[i].offset;
		we->skip = env->edits[i].skip;
		if (env->edits[i].insert) {
			struct buf b = BUF_INIT;
			buf_printf(&b, "%s\r\n", env->edits[i].insert);
			we->insert_len = b.len;
			we->insert = buf_steal(&b);
		}
	}
}

/* t's envelope commands into batch, their kinds into *cmds_r (*n_r of
 * them); -1 (nothing to send) when the sender would break the command. */
static int build_envelope(struct smtpc *s, struct smtpc_txn *t, bool rset, struct buf *batch,
			  struct pending_cmd **cmds_r, size_t *n_r)
{
	struct spool_env *env = t->env;
	const char *sender = t->force_sender ? t->force_sender : env->sender;
	struct buf params = BUF_INIT;
	struct pending_cmd *cmds = xcalloc(env->n_rcpts + 3, sizeof(*cmds));
	size_t n = 0;

	if (rset) {
		cmds[n++].kind = CMD_RSET;
		send_cmd(s, batch, "RSET");
	}
	if (s->caps.size_present)
		buf_printf(&params, " SIZE=%llu", (unsigned long long)env->size);
	if (env->eightbit)
		buf_puts(&params, " BODY=8BITMIME");
	if (env->smtputf8)
		buf_puts(&params, " SMTPUTF8");
	if (s->caps.dsn && env->sender_params && !t->force_sender)
		buf_printf(&params, " %s", env->sender_params);
	cmds[n++].kind = CMD_MAIL;
	int rc = send_cmd(s, batch, "MAIL FROM:<%s>%s", sender, params.len ? params.data : "");
	buf_deinit(&params);
	if (rc < 0) {
		free(cmds);
		return -1;
	}
	for (size_t i = 0; i < env->n_rcpts; i++) {
		if (!rcpt_wanted(&env->rcpts[i]))
			continue;
		t->rcpt[i].tried = true;
		const char *rp = s->caps.dsn && env->rcpts[i].params ? env->rcpts[i].params : NULL;
		if (send_cmd(s, batch, "RCPT TO:<%s>%s%s", env->rcpts[i].addr, rp ? " " : "",
			     rp ? rp : "") < 0) {
			set_rcpt(&t->rcpt[i], SMTPC_PERM, 0,
				 "recipient address holds a control character", true);
			continue;
		}
		cmds[n].kind = CMD_RCPT;
		cmds[n++].rcpt = i;
	}
	cmds[n++].kind = CMD_DATA;
	send_cmd(s, batch, "DATA");
	*cmds_r = cmds;
	*n_r = n;
	return 0;
}

/* txn's envelope is on its way: its replies are awaited. */
static void begin_envelope(struct smtpc *s)
{
	s->cmd_next = 0;
	s->n_accepted = 0;
	s->replies_seen = false;
	s->mail_ok = s->data_ok = false;
	s->need_rset = true;
	set_state(s, SMTPC_ST_ENVELOPE);
	conn_set_timeout(s->conn, timeout_ms(s, TO_COMMAND));
}

static void start_envelope(struct smtpc *s)
{
	struct buf batch = BUF_INIT;
	if (build_envelope(s, s->txn, s->need_rset, &batch, &s->cmds, &s->n_cmds) < 0) {
		/* Ingest validated it; never let it reach the wire anyway. */
		txn_fail(s, SMTPC_PERM, "sender address holds a control character");
		buf_deinit(&batch);
		session_fail(s, SMTPC_PROTO, "refused to send a command with a control character");
		return;
	}
	begin_envelope(s);
	if (s->caps.pipelining) {
		conn_write(s->conn, batch.data, batch.len);
	} else {
		/* One command at a time: send the first, the rest follow each reply. */
		const char *nl = strstr(batch.data, "\r\n");
		conn_write(s->conn, batch.data, (size_t)(nl - batch.data) + 2);
		buf_consume(&batch, (size_t)(nl - batch.data) + 2);
		buf_deinit(&s->out);
		s->out = batch;
		buf_init(&batch);
	}
	buf_deinit(&batch);
}

/* A transaction pipelined behind the final dot (given within write_dot's
 * SMTPC_EV_NEXT): its envelope joins the dot's write (no RSET: the dot's
 * reply ends the transaction before it, whatever it says). */
static void queue_envelope(struct smtpc *s, struct smtpc_txn *t)
{
	struct buf batch = BUF_INIT;
	s->next = t;
	s->next_failed = false;
	s->next_cmds = NULL;
	s->next_n_cmds = 0;
	if (build_envelope(s, t, false, &batch, &s->next_cmds, &s->next_n_cmds) < 0) {
		t->cls = SMTPC_PERM;
		t->reply = xstrdup("sender address holds a control character");
		s->next_failed = true; /* as start_envelope: the session ends */
	} else {
		buf_append(&s->out, batch.data, batch.len); /* write_dot sends it */
	}
	buf_deinit(&batch);
}

const char *smtpc_check_capable(const struct smtpc *s, const struct spool_env *env, char *why,
				size_t len)
{
	/* What the message needs and the server lacks is a permanent failure
	 * named as such, never a guess. The openings are what bounce.c maps to
	 * RFC 3463 status codes. */
	if (s->caps.size_present && s->caps.size && env->size > s->caps.size) {
		snprintf(why, len, "message size %llu exceeds the size limit %llu of server %s",
			 (unsigned long long)env->size, (unsigned long long)s->caps.size,
			 smtpc_peer(s));
		return why;
	}
	if (env->smtputf8 && !s->caps.smtputf8) {
		snprintf(why, len,
			 "the message has UTF-8 addresses and server %s does not offer SMTPUTF8",
			 smtpc_peer(s));
		return why;
	}
	if (env->eightbit && !s->caps.eightbitmime) {
		snprintf(why, len,
			 "the message has 8-bit content and server %s does not offer 8BITMIME",
			 smtpc_peer(s));
		return why;
	}
	return NULL;
}

/* Without PIPELINING the queued commands in s->out go one per reply. */
static void send_next_unpipelined(struct smtpc *s)
{
	if (s->caps.pipelining || s->out.len == 0)
		return;
	const char *nl = strstr(s->out.data, "\r\n");
	if (nl == NULL)
		return;
	size_t n = (size_t)(nl - s->out.data) + 2;
	conn_write(s->conn, s->out.data, n);
	buf_consume(&s->out, n);
}

static void read_next_chunk(struct smtpc *s);

/* Adds an edit, kept sorted; an edit at the same offset that only inserts
 * takes the new one's text after its own. False when it would overlap. */
static bool add_edit(struct smtpc *s, uint64_t off, uint64_t skip, const char *text)
{
	size_t i = 0;
	while (i < s->n_edits && s->edits[i].offset < off)
		i++;
	if (i > 0 && s->edits[i - 1].offset + s->edits[i - 1].skip > off)
		return false;
	if (i < s->n_edits && s->edits[i].offset == off) {
		struct wire_edit *e = &s->edits[i];
		if (e->skip != 0 && skip != 0)
			return false;
		if (i + 1 < s->n_edits && off + skip + e->skip > s->edits[i + 1].offset)
			return false;
		struct buf b = BUF_INIT;
		if (e->insert)
			buf_append(&b, e->insert, e->insert_len);
		buf_printf(&b, "%s\r\n", text);
		free((char *)e->insert);
		e->insert_len = b.len;
		e->insert = buf_steal(&b);
		e->skip += skip;
		return true;
	}
	if (i < s->n_edits && off + skip > s->edits[i].offset)
		return false;
	s->edits = xrealloc(s->edits, (s->n_edits + 1) * sizeof(*s->edits));
	memmove(&s->edits[i + 1], &s->edits[i], (s->n_edits - i) * sizeof(*s->edits));
	s->n_edits++;
	struct buf b = BUF_INIT;
	buf_printf(&b, "%s\r\n", text);
	s->edits[i].offset = off;
	s->edits[i].skip = skip;
	s->edits[i].insert_len = b.len;
	s->edits[i].insert = buf_steal(&b);
	return true;
}

static bool in_skip(const struct smtpc *s, uint64_t off)
{
	for (size_t i = 0; i < s->n_edits; i++)
		if (off >= s->edits[i].offset && off < s->edits[i].offset + s->edits[i].skip)
			return true;
	return false;
}

/* force_from = yes: the From: field (with its folded lines) is replaced by
 * one naming the forced sender, found by scanning the header section in the
 * first chunk of content (at send time, so the spool format is unchanged).
 * Without a From: field one is added at the end of the header section. */
static void force_from_edit(struct smtpc *s, const char *data, size_t len)
{
	struct buf from = BUF_INIT;
	buf_printf(&from, "From: <%s>", s->txn->force_sender);
	size_t p = 0;
	bool done = false;
	if (len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0)
		p = 3;
	while (p < len && !done) {
		const char *nl = memchr(data + p, '\n', len - p);
		if (nl == NULL)
			break; /* header section longer than the chunk: leave it */
		size_t end = (size_t)(nl - data) + 1;
		size_t linelen = end - p;
		if (linelen == 1 || (linelen == 2 && data[p] == '\r')) {
			/* the empty line: no From: field */
			if (!in_skip(s, p))
				add_edit(s, p, 0, from.data);
			done = true;
			break;
		}
		size_t k = 0;
		while (p + k < end && k < 4 && (data[p + k] | 0x20) == "from"[k])
			k++;
		size_t c = p + k;
		while (k == 4 && c < end && (data[c] == ' ' || data[c] == '\t'))
			c++;
		if (k == 4 && c < end && data[c] == ':' && !in_skip(s, p)) {
			/* The field runs on through continuation lines. */
			size_t fend = end;
			while (fend < len && (data[fend] == ' ' || data[fend] == '\t')) {
				const char *n2 = memchr(data + fend, '\n', len - fend);
				if (n2 == NULL) {
					fend = 0;
					break;
				}
				fend = (size_t)(n2 - data) + 1;
			}
			if (fend != 0 && fend < len)
				add_edit(s, p, fend - p, from.data);
			done = true;
			break;
		}
		p = end;
	}
	if (!done)
		log_warn(
		    "%s: force_from: no end of the header section in the first %zu bytes; From: "
		    "left unchanged",
		    smtpc_peer(s), len);
	buf_deinit(&from);
	/* Nothing has been fed yet: restart the filter on the new edit list. */
	wire_filter_init(&s->filter, s->edits, s->n_edits, s->txn->env->dot_stuffed);
}

/* Writes what the wire filter put out, counted as sent. */
static void write_out(struct smtpc *s)
{
	s->txn->bytes_sent += s->out.len;
	conn_write(s->conn, s->out.data, s->out.len);
	buf_clear(&s->out);
}

/* The end of data is in s->out, after what is left of the content: it goes,
 * and the session waits for its reply. The owner may pipeline the next
 * transaction first (SMTPC_EV_NEXT): its envelope goes in the same write, a
 * group the server reads, and answers, at once (in two writes, a server
 * with Nagle's algorithm on would hold its second answer until our delayed
 * ACK, 40 ms). dot_end, where the dot ends on the wire, is exact but for a
 * TLS record that also holds the next envelope: there it counts the dot's
 * plaintext octets, at or before the record's end, so a session lost then
 * may be taken for one at risk, never the reverse. */
static void write_dot(struct smtpc *s)
{
	size_t dot_len = s->out.len;
	uint64_t before = s->conn->wire_out;
	s->txn->bytes_sent += dot_len;
	s->txn->dot_sent = true;
	set_state(s, SMTPC_ST_DOT);
	conn_set_timeout(s->conn, timeout_ms(s, TO_DONE));
	s->gathering = true;
	if (smtpc_takes_next(s))
		emit(s, SMTPC_EV_NEXT);
	s->gathering = false;
	conn_write(s->conn, s->out.data, s->out.len);
	if (!conn_plain(s->conn) && s->out.len == dot_len)
		s->dot_end = s->conn->wire_out;
	else
		s->dot_end = before + dot_len;
	buf_clear(&s->out);
}

/* How many of the next n content bytes lie on this side of the clean
 * run's next boundary. */
static size_t content_span(const struct smtpc *s, size_t n)
{
	uint64_t off = (uint64_t)s->read_off;
	uint64_t bound = s->raw ? s->raw_to : s->raw_from;
	if (bound > off && bound - off < n)
		return (size_t)(bound - off);
	return n;
}

/* m content bytes have gone: at the clean run's start the filter is moved
 * past it (if it agrees: it is at a line start with no edit due), at its
 * end the filter takes over again. */
static void content_sent(struct smtpc *s, size_t m)
{
	s->read_off += (int64_t)m;
	uint64_t off = (uint64_t)s->read_off;
	if (s->raw && off == s->raw_to) {
		s->raw = false;
	} else if (!s->raw && off == s->raw_from && s->raw_from < s->raw_to) {
		s->raw = wire_filter_pass(&s->filter, s->raw_to - s->raw_from);
		if (!s->raw)
			s->raw_to = s->raw_from; /* all of it through the filter */
	}
}

/* Sends content bytes (the next n from read_off) through the wire filter,
 * or as they are in the clean run; after the last, the end of data, and the
 * wait for the final reply. */
static void send_content(struct smtpc *s, const char *data, size_t n)
{
	buf_clear(&s->out);
	if (s->read_off == 0 && n > 0 && s->relay->force_from && s->txn->force_sender)
		force_from_edit(s, data, n);
	bool last = n == 0; /* a read at the end of the file */
	/* A content held in memory (all of it, at most HANDOFF_MAX_CONTENT)
	 * whose dot waits for its mark is kept until the dot goes with it:
	 * one write, and one read at the server, instead of two. */
	bool keep = s->txn->dot_held && s->txn->content != NULL;
	while (n > 0) {
		size_t m = content_span(s, n), k = m;
		if (s->out.len > 0 && !keep)
			write_out(s); /* in order */
		/* What the filter would copy unchanged is sent from the data. */
		if (!s->raw)
			k = wire_filter_verbatim(&s->filter, data, m);
		if (keep) {
			buf_append(&s->out, data, k);
		} else {
			conn_write(s->conn, data, k);
			s->txn->bytes_sent += k;
		}
		if (!s->raw)
			wire_filter_feed(&s->filter, data + k, m - k, &s->out);
		content_sent(s, m);
		data += m;
		n -= m;
	}
	/* The content file is never written while queued: its size tells
	 * where it ends, which saves a read per message. */
	if (last || (uint64_t)s->read_off >= s->data_size)
		s->read_eof = true;
	if (s->read_eof && !s->txn->dot_held) {
		wire_filter_finish(&s->filter, &s->out);
		write_dot(s);
		return;
	}
	if (!keep)
		write_out(s);
	conn_set_timeout(s->conn, timeout_ms(s, TO_BLOCK));
	/* The next chunk is read once this one has drained (CONN_EV_DRAINED),
	 * so memory stays bounded whatever the message size. With the dot
	 * held, the session waits in SMTPC_ST_BODY (a body cut there cannot
	 * have been taken) until smtpc_release_dot. */
}

/* A chunk read from the content file (n bytes, or an error), in SMTPC_ST_BODY. */
static void chunk_read(struct smtpc *s, ssize_t n)
{
	if (n < 0) {
		/* Our own disk failed: the message waits, the session cannot
		 * end this DATA cleanly, so it is dropped. */
		txn_fail(s, SMTPC_TEMP, "cannot read the queued content");
		session_fail(s, SMTPC_CONN, "read error on queued content: %s",
			     uv_strerror((int)n));
		return;
	}
	send_content(s, s->chunk, (size_t)n);
}

/* The current transaction's chunk is in (n bytes, or an error). */
static void chunk_in(struct smtpc *s, ssize_t n)
{
	if (s->state == SMTPC_ST_ENVELOPE) {
		/* Read while the envelope's replies come: kept for the 354. */
		s->chunk_early = true;
		s->chunk_len = n;
		return;
	}
	if (s->state == SMTPC_ST_BODY)
		chunk_read(s, n);
}

static void read_cb(uv_fs_t *req)
{
	struct smtpc *s = req->data;
	ssize_t n = req->result;
	uv_fs_req_cleanup(req);
	s->read_pending = false;
	if (s->read_fd >= 0) {
		close(s->read_fd);
		s->read_fd = -1;
	}
	if (s->closing) {
		if (s->conn_closed)
			maybe_free(s);
		return;
	}
	if (s->txn == NULL || s->read_txn != s->messages) {
		/* An ended transaction's: the current one's first read waited. */
		read_next_chunk(s);
		return;
	}
	chunk_in(s, n);
}

/* The size of the next read: a chunk, but on a plaintext connection one
 * that ends where the clean run starts (sendfile sends the run unread). */
static size_t chunk_want(const struct smtpc *s)
{
	uint64_t off = (uint64_t)s->read_off;
	if (conn_plain(s->conn) && off < s->raw_from && s->raw_from - off < READ_CHUNK)
		return (size_t)(s->raw_from - off);
	return READ_CHUNK;
}

/* A read that never waits for the disk (RWF_NOWAIT): -1 when the page
 * cache does not hold the data, or the kernel cannot say (then never asked
 * again). */
static ssize_t read_nowait(int fd, void *buf, size_t len, uint64_t off)
{
	static bool unsupported;
	if (unsupported)
		return -1;
	struct iovec v = {.iov_base = buf, .iov_len = len};
	ssize_t n = preadv2(fd, &v, 1, (off_t)off, RWF_NOWAIT);
	if (n < 0 && (errno == EOPNOTSUPP || errno == EINVAL || errno == ENOSYS))
		unsupported = true;
	return n;
}

/* Reads the next chunk here on the loop if the page cache holds it (a
 * message just taken in, usually), which saves two thread switches per
 * chunk; -1 if it would have to wait for the disk (or the kernel cannot
 * say), and the pool reads it. */
static ssize_t read_cached(struct smtpc *s)
{
	return read_nowait(s->txn->data_fd, s->chunk, chunk_want(s), (uint64_t)s->read_off);
}

/* Whether the page cache holds data_fd's [off, off + len): sendfile would
 * wait for the disk on the loop otherwise. A fresh message's content was
 * read whole at ingest, so its pages age together: the first and the last
 * of the part stand for the rest (two one-octet reads that never wait). */
static bool cached(int fd, uint64_t off, size_t len)
{
	char b;
	return read_nowait(fd, &b, 1, off) == 1 && read_nowait(fd, &b, 1, off + len - 1) == 1;
}

/* In the clean run, the next part goes from the page cache to the socket
 * (conn_sendfile), if the cache holds it. true when all of it went (DRAINED
 * brings the next), or the content has ended; false when the socket took
 * less, or none was sent: the rest is read (on the thread pool if it is not
 * cached) and sent the usual way. */
static bool sendfile_next(struct smtpc *s)
{
	uint64_t left = s->raw_to - (uint64_t)s->read_off;
	size_t len = left < READ_CHUNK ? (size_t)left : READ_CHUNK;
	if (!conn_plain(s->conn) || !cached(s->txn->data_fd, (uint64_t)s->read_off, len))
		return false;
	size_t k = conn_sendfile(s->conn, s->txn->data_fd, (uint64_t)s->read_off, len);
	s->txn->bytes_sent += k;
	s->txn->bytes_unread += k;
	content_sent(s, k);
	if (k < len)
		return false;
	if ((uint64_t)s->read_off >= s->data_size)
		send_content(s, NULL, 0); /* the end of data, unless the dot is held */
	else
		conn_set_timeout(s->conn, timeout_ms(s, TO_BLOCK));
	return true;
}

/* Reads the transaction's next chunk of content on the thread pool: the
 * first as soon as the envelope is sent, the others as the last drained. */
static void read_next_chunk(struct smtpc *s)
{
	if (s->read_pending || s->read_eof || s->chunk_early || s->txn == NULL ||
	    s->txn->content != NULL || (s->state != SMTPC_ST_ENVELOPE && s->state != SMTPC_ST_BODY))
		return;
	if (s->raw && sendfile_next(s))
		return;
	ssize_t n = read_cached(s);
	if (n >= 0) {
		chunk_in(s, n);
		return;
	}
	uv_buf_t b = uv_buf_init(s->chunk, (unsigned)chunk_want(s));
	s->read_req.data = s;
	int r = uv_fs_read(s->loop, &s->read_req, s->txn->data_fd, &b, 1, s->read_off, read_cb);
	if (r < 0) {
		txn_fail(s, SMTPC_TEMP, "cannot read the queued content");
		session_fail(s, SMTPC_CONN, "read error on queued content: %s", uv_strerror(r));
		return;
	}
	s->read_pending = true;
	s->read_txn = s->messages;
}

/* A new transaction's content: in memory, or its first chunk read from
 * disk while the envelope commands are answered. */
static void start_content(struct smtpc *s)
{
	struct smtpc_txn *t = s->txn;
	s->read_off = 0;
	s->read_eof = false;
	s->chunk_early = false;
	s->raw = false;
	s->raw_from = s->raw_to = 0;
	if (t->content) {
		s->data_size = t->content_len;
		return;
	}
	if (s->chunk == NULL)
		s->chunk = xmalloc(READ_CHUNK);
	struct stat st;
	s->data_size = fstat(t->data_fd, &st) == 0 ? (uint64_t)st.st_size : UINT64_MAX;
	/* Only a file's content has a clean run worth sending unread. */
	const struct spool_env *env = t->env;
	if (env->verbatim_from > 0 && env->verbatim_from < env->verbatim_to &&
	    env->verbatim_to <= s->data_size) {
		s->raw_from = env->verbatim_from;
		s->raw_to = env->verbatim_to;
	}
	read_next_chunk(s);
}

/* In SMTPC_ST_BODY: the content that is ready goes (in memory, or the
 * chunk read before the 354), else the next chunk is read. */
static void body_next(struct smtpc *s)
{
	if (s->txn->content) {
		if (s->read_off == 0 && !s->read_eof)
			send_content(s, s->txn->content, s->txn->content_len);
	} else if (s->chunk_early) {
		s->chunk_early = false;
		chunk_read(s, s->chunk_len);
	} else {
		read_next_chunk(s); /* unless one is on its way */
	}
}

/* DATA's 354: the content follows once the bytes that came with the 354
 * are read (on_data), so that a reply among them is taken for what it is,
 * a reply before the end of data, as when the content is read from disk. */
static void start_body(struct smtpc *s)
{
	set_state(s, SMTPC_ST_BODY);
	s->answered = false;
	build_edits(s, s->txn->env);
	wire_filter_init(&s->filter, s->edits, s->n_edits, s->txn->env->dot_stuffed);
	conn_set_timeout(s->conn, timeout_ms(s, TO_BLOCK));
}

/* All envelope replies are in: the transaction goes on to content or ends. */
static void envelope_done(struct smtpc *s)
{
	struct smtpc_txn *t = s->txn;
	if (!s->data_ok) {
		/* DATA refused (or MAIL/all RCPTs): recipients accepted so far share that reply. */
		set_state(s, SMTPC_ST_READY);
		finish_txn(s);
		if (!s->closing && s->state == SMTPC_ST_READY)
			conn_set_timeout(s->conn, timeout_ms(s, TO_IDLE));
		return;
	}
	if (s->n_accepted == 0) {
		/* 354 with no accepted recipient: a broken server; ending DATA
		 * with an empty message would be worse than dropping the session. */
		txn_fail(s, SMTPC_PROTO, "server accepted DATA without any recipient");
		session_fail(s, SMTPC_PROTO, "server accepted DATA without any recipient");
		return;
	}
	(void)t;
	start_body(s);
}

static void on_envelope_reply(struct smtpc *s, const struct smtp_reply *r)
{
	struct smtpc_txn *t = s->txn;
	struct pending_cmd *c = &s->cmds[s->cmd_next++];
	struct buf sum = BUF_INIT;
	enum smtpc_class cls = smtpc_classify_code(r->code);
	smtp_reply_summary(r, &sum);

	switch (c->kind) {
	case CMD_RSET:
		if (cls != SMTPC_OK) {
			buf_deinit(&sum);
			session_end_reply(s, SMTPC_PROTO, r, "RSET refused", false);
			return;
		}
		break;
	case CMD_MAIL:
		s->mail_ok = cls == SMTPC_OK;
		if (!s->mail_ok) {
			txn_fail(s, cls == SMTPC_OK ? SMTPC_PROTO : cls, sum.data);
			if (!s->caps.pipelining) {
				/* Nothing more to say in this transaction. */
				for (size_t i = 0; i < t->env->n_rcpts; i++)
					if (t->rcpt[i].tried && !t->rcpt[i].final)
						set_rcpt(&t->rcpt[i], t->cls, r->code, t->reply,
							 true);
				buf_clear(&s->out);
				s->cmd_next = s->n_cmds;
			}
		}
		break;
	case CMD_RCPT:
		if (!s->mail_ok) {
			/* The MAIL reply decides: recipients share it. */
			set_rcpt(&t->rcpt[c->rcpt], t->cls, r->code, t->reply, true);
		} else if (cls == SMTPC_OK) {
			set_rcpt(&t->rcpt[c->rcpt], SMTPC_OK, r->code, sum.data, false);
			s->n_accepted++;
		} else {
			set_rcpt(&t->rcpt[c->rcpt], cls, r->code, sum.data, true);
		}
		if (!s->caps.pipelining && s->cmd_next == s->n_cmds - 1 && s->n_accepted == 0) {
			/* Every recipient refused: no DATA. */
			buf_clear(&s->out);
			s->cmd_next = s->n_cmds;
		}
		break;
	case CMD_DATA:
		if (r->code == 354) {
			s->data_ok = true;
		} else if (s->mail_ok && s->n_accepted > 0) {
			/* A refused DATA applies to the recipients of this transaction. */
			for (size_t i = 0; i < t->env->n_rcpts; i++)
				if (t->rcpt[i].tried && !t->rcpt[i].final)
					set_rcpt(&t->rcpt[i], cls == SMTPC_OK ? SMTPC_PROTO : cls,
						 r->code, sum.data, true);
			s->n_accepted = 0;
		}
		break;
	}
	buf_deinit(&sum);
	if (s->cmd_next < s->n_cmds) {
		/* RFC 5321 4.5.3.2: the DATA reply has its own (shorter) limit. */
		conn_set_timeout(
		    s->conn,
		    timeout_ms(s, s->cmds[s->cmd_next].kind == CMD_DATA ? TO_DATA : TO_COMMAND));
		send_next_unpipelined(s);
		return;
	}
	envelope_done(s);
}

static void on_final_reply(struct smtpc *s, const struct smtp_reply *r)
{
	struct smtpc_txn *t = s->txn;
	struct buf sum = BUF_INIT;
	enum smtpc_class cls = smtpc_classify_code(r->code);
	smtp_reply_summary(r, &sum);
	for (size_t i = 0; i < t->env->n_rcpts; i++)
		if (t->rcpt[i].tried && !t->rcpt[i].final)
			set_rcpt(&t->rcpt[i],
				 cls == SMTPC_OK || cls == SMTPC_TEMP || cls == SMTPC_PERM
				     ? cls
				     : SMTPC_PROTO,
				 r->code, sum.data, true);
	buf_deinit(&sum);
	set_state(s, SMTPC_ST_READY);
	finish_txn(s);
	if (!s->closing && s->state == SMTPC_ST_READY)
		conn_set_timeout(s->conn, timeout_ms(s, TO_IDLE));
}

/* A complete reply before our final dot (smtp-sink -A): the server ended
 * the transaction and its code decides, as at the end of data: 5xx fails,
 * 4xx defers. A success before the dot makes no sense (protocol error).
 * Half a message is in the stream: the session cannot go on. */
static void on_early_reply(struct smtpc *s, const struct smtp_reply *r)
{
	struct smtpc_txn *t = s->txn;
	struct buf sum = BUF_INIT;
	enum smtpc_class cls = smtpc_classify_code(r->code);
	if (cls == SMTPC_OK)
		cls = SMTPC_PROTO;
	smtp_reply_summary(r, &sum);
	s->answered = true;
	/* A protocol error is the transaction's (its words, not a "250"). */
	for (size_t i = 0; i < t->env->n_rcpts && cls != SMTPC_PROTO; i++)
		if (t->rcpt[i].tried && !t->rcpt[i].final)
			set_rcpt(&t->rcpt[i], cls, r->code, sum.data, true);
	session_fail(s, cls, "reply before the end of data: %s", sum.data);
	buf_deinit(&sum);
}

/* ---- password_command: a secret or access token printed by a program ------------------ */

#define CMD_MAX_OUTPUT 16384

static void cmd_out_cb(const char *data, size_t len, void *arg)
{
	struct smtpc *s = arg;
	if (s->cmd_out.len <= CMD_MAX_OUTPUT)
		buf_append(&s->cmd_out, data, len);
}

static void cmd_done_cb(const struct cmdrun_result *res, void *arg)
{
	struct smtpc *s = arg;
	s->cmd = NULL;
	if (s->closing) {
		maybe_free(s);
		return;
	}
	if (s->state != SMTPC_ST_SECRET_CMD)
		return;
	if (res->spawn_error) {
		session_leave(s, SMTPC_AUTH, "cannot run password_command: %s",
			      uv_strerror(res->spawn_error));
		return;
	}
	size_t n = s->cmd_out.len;
	while (n > 0 && (s->cmd_out.data[n - 1] == '\n' || s->cmd_out.data[n - 1] == '\r'))
		n--;
	if (res->status != 0 || res->signal != 0 || n == 0 || memchr(s->cmd_out.data, '\n', n) ||
	    memchr(s->cmd_out.data, '\0', n)) {
		/* What it printed may be a secret: never in the log. */
		session_leave(s, SMTPC_AUTH,
			      "password_command failed (exit status %lld, signal %d, %s)",
			      (long long)res->status, res->signal,
			      n == 0				? "no output"
			      : s->cmd_out.len > CMD_MAX_OUTPUT ? "output too long"
								: "output of one line expected");
		return;
	}
	wipe_secret(s);
	s->secret = xstrndup(s->cmd_out.data, n);
	OPENSSL_cleanse(s->cmd_out.data, s->cmd_out.len);
	buf_clear(&s->cmd_out);
	enter(s, SMTPC_ST_AUTH);
}

/* Runs password_command (cmdrun.c): the loop never waits for it. The phase
 * timer (command_timeout) bounds it. */
static void run_secret_cmd(struct smtpc *s)
{
	set_state(s, SMTPC_ST_SECRET_CMD);
	conn_set_timeout(s->conn, timeout_ms(s, TO_COMMAND));
	OPENSSL_cleanse(s->cmd_out.data, s->cmd_out.len);
	buf_clear(&s->cmd_out);
	s->cmd = cmdrun_start(s->loop, s->relay->password_command, cmd_out_cb, cmd_done_cb, s);
}

/* ---- session set-up ----------------------------------------------------------------- */

static bool auth_wanted(const struct smtpc *s)
{
	return s->relay->user != NULL && *s->relay->user;
}

static unsigned pick_mech(const struct smtpc *s)
{
	switch (s->relay->auth) {
	case AUTH_MODE_PLAIN:
		return SMTP_AUTH_PLAIN;
	case AUTH_MODE_LOGIN:
		return SMTP_AUTH_LOGIN;
	case AUTH_MODE_XOAUTH2:
		return SMTP_AUTH_XOAUTH2;
	case AUTH_MODE_AUTO:
		break;
	}
	if (s->caps.auth & SMTP_AUTH_PLAIN)
		return SMTP_AUTH_PLAIN;
	if (s->caps.auth & SMTP_AUTH_LOGIN)
		return SMTP_AUTH_LOGIN;
	return 0;
}

/* An access token refused (typically expired): run password_command once
 * more and authenticate again on the same session. */
static bool token_refresh(struct smtpc *s)
{
	if (s->token_retried || s->relay->password_command == NULL || !*s->relay->password_command)
		return false;
	s->token_retried = true;
	log_info("%s: access token refused; running password_command again", smtpc_peer(s));
	run_secret_cmd(s);
	return true;
}

static void after_ehlo(struct smtpc *s)
{
	bool tls_now = s->conn->tls_up;
	if (s->relay->tls == TLS_MODE_STARTTLS && !tls_now) {
		if (!s->caps.starttls) {
			session_leave(
			    s, SMTPC_TLS,
			    "TLS is required (tls = starttls) and the server does not offer "
			    "STARTTLS; not sending in plaintext");
			return;
		}
		enter(s, SMTPC_ST_STARTTLS);
		return;
	}
	if (auth_wanted(s)) {
		if (!tls_now && !s->relay->allow_plaintext_auth) {
			session_leave(
			    s, SMTPC_AUTH,
			    "refusing to send credentials without TLS (allow_plaintext_auth = no)");
			return;
		}
		if (s->relay->password_command && *s->relay->password_command)
			run_secret_cmd(s);
		else
			enter(s, SMTPC_ST_AUTH);
		return;
	}
	enter(s, SMTPC_ST_READY);
}

static void enter(struct smtpc *s, enum smtpc_state st)
{
	set_state(s, st);
	conn_set_timeout(s->conn, timeout_ms(s, states[st].timeout));
	switch (st) {
	case SMTPC_ST_EHLO:
	case SMTPC_ST_EHLO_TLS:
		send_cmd(s, NULL, "EHLO %s", s->helo_name);
		break;
	case SMTPC_ST_HELO:
		send_cmd(s, NULL, "HELO %s", s->helo_name);
		break;
	case SMTPC_ST_STARTTLS:
		send_cmd(s, NULL, "STARTTLS");
		break;
	case SMTPC_ST_AUTH: {
		unsigned mech = pick_mech(s);
		const char *user = s->relay->user;
		const char *secret = s->secret ? s->secret : "";
		if (mech == 0 || (s->relay->auth == AUTH_MODE_AUTO && !(s->caps.auth & mech))) {
			session_leave(s, SMTPC_AUTH,
				      "no usable AUTH mechanism offered by the server");
			return;
		}
		if (mech == SMTP_AUTH_PLAIN) {
			size_t ul = strlen(user), pl = strlen(secret);
			char *raw = xmalloc(ul + pl + 2);
			raw[0] = '\0';
			memcpy(raw + 1, user, ul);
			raw[1 + ul] = '\0';
			memcpy(raw + 2 + ul, secret, pl);
			char *enc = b64(raw, ul + pl + 2);
			send_cmd(s, NULL, "AUTH PLAIN %s", enc);
			OPENSSL_cleanse(raw, ul + pl + 2);
			OPENSSL_cleanse(enc, strlen(enc));
			free(raw);
			free(enc);
			wipe_secret(s);
		} else if (mech == SMTP_AUTH_LOGIN) {
			send_cmd(s, NULL, "AUTH LOGIN");
		} else {
			struct buf raw = BUF_INIT;
			buf_printf(&raw, "user=%s\001auth=Bearer %s\001\001", user, secret);
			char *enc = b64(raw.data, raw.len);
			send_cmd(s, NULL, "AUTH XOAUTH2 %s", enc);
			OPENSSL_cleanse(raw.data, raw.len);
			OPENSSL_cleanse(enc, strlen(enc));
			buf_deinit(&raw);
			free(enc);
			wipe_secret(s);
		}
		break;
	}
	case SMTPC_ST_READY:
		if (s->probe)
			enter(s, SMTPC_ST_QUIT); /* set-up passed; no transaction */
		else
			emit(s, SMTPC_EV_READY);
		break;
	case SMTPC_ST_QUIT:
		send_cmd(s, NULL, "QUIT");
		break;
	default:
		break;
	}
}

static void on_reply(struct smtpc *s, const struct smtp_reply *r)
{
	enum smtpc_class cls = smtpc_classify_code(r->code);
	switch (s->state) {
	case SMTPC_ST_GREETING:
		if (r->code != 220) {
			/* A 5xx greeting refuses this client, not a message
			 * (RFC 5321 3.1: "no SMTP service here", a block
			 * list, too many connections): a connection failure
			 * that defers and tries the next relay, as Postfix's
			 * smtp_skip_5xx_greeting does, never a bounce. 421:
			 * the server is going away, no QUIT. */
			if (cls == SMTPC_PERM)
				cls = SMTPC_CONN;
			session_end_reply(s, cls == SMTPC_OK ? SMTPC_PROTO : cls, r,
					  "server greeting", r->code != 421);
			return;
		}
		enter(s, SMTPC_ST_EHLO);
		return;
	case SMTPC_ST_EHLO:
	case SMTPC_ST_EHLO_TLS:
		if (cls != SMTPC_OK) {
			if (s->state == SMTPC_ST_EHLO && r->code >= 500 && r->code <= 502 &&
			    s->relay->tls == TLS_MODE_NONE && !auth_wanted(s)) {
				enter(s, SMTPC_ST_HELO); /* an SMTP-only server */
				return;
			}
			session_end_reply(s, cls, r, "EHLO refused", true);
			return;
		}
		s->esmtp = true;
		smtp_caps_parse(r, &s->caps);
		after_ehlo(s);
		return;
	case SMTPC_ST_HELO:
		if (cls != SMTPC_OK) {
			session_end_reply(s, cls, r, "HELO refused", true);
			return;
		}
		memset(&s->caps, 0, sizeof(s->caps));
		enter(s, SMTPC_ST_READY);
		return;
	case SMTPC_ST_STARTTLS:
		if (r->code != 220) {
			session_end_reply(s, SMTPC_TLS, r, "STARTTLS refused", true);
			return;
		}
		/* Bytes after the 220 were refused in on_data (desync). */
		set_state(s, SMTPC_ST_TLS);
		conn_set_timeout(s->conn, timeout_ms(s, TO_COMMAND));
		conn_start_tls(s->conn, s->ssl_ctx);
		return;
	case SMTPC_ST_AUTH:
		if (r->code == 235) {
			enter(s, SMTPC_ST_READY);
			return;
		}
		if (r->code == 334 && s->relay->auth != AUTH_MODE_XOAUTH2 &&
		    pick_mech(s) == SMTP_AUTH_LOGIN) {
			set_state(s, SMTPC_ST_AUTH_LOGIN_USER);
			char *enc = b64(s->relay->user, strlen(s->relay->user));
			send_cmd(s, NULL, "%s", enc);
			free(enc);
			return;
		}
		if (r->code == 334) {
			/* XOAUTH2 error challenge: an empty line gets the final reply. */
			set_state(s, SMTPC_ST_AUTH_XOAUTH2_ERR);
			send_cmd(s, NULL, "%s", "");
			return;
		}
		if (r->code == 535 && pick_mech(s) == SMTP_AUTH_XOAUTH2 && token_refresh(s))
			return;
		session_end_reply(s,
				  r->code >= 500 || r->code == 454 ? SMTPC_AUTH
				  : cls == SMTPC_OK		   ? SMTPC_PROTO
								   : cls,
				  r, "authentication failed", true);
		return;
	case SMTPC_ST_AUTH_LOGIN_USER:
		if (r->code != 334) {
			session_end_reply(s, SMTPC_AUTH, r, "authentication failed", true);
			return;
		}
		set_state(s, SMTPC_ST_AUTH_LOGIN_PASS);
		{
			const char *secret = s->secret ? s->secret : "";
			char *enc = b64(secret, strlen(secret));
			send_cmd(s, NULL, "%s", enc);
			OPENSSL_cleanse(enc, strlen(enc));
			free(enc);
			wipe_secret(s);
		}
		return;
	case SMTPC_ST_AUTH_LOGIN_PASS:
	case SMTPC_ST_AUTH_XOAUTH2_ERR:
		if (r->code == 235) {
			enter(s, SMTPC_ST_READY);
			return;
		}
		if (s->state == SMTPC_ST_AUTH_XOAUTH2_ERR && token_refresh(s))
			return;
		session_end_reply(s, SMTPC_AUTH, r, "authentication failed", true);
		return;
	case SMTPC_ST_ENVELOPE:
		on_envelope_reply(s, r);
		return;
	case SMTPC_ST_DOT:
		on_final_reply(s, r);
		return;
	case SMTPC_ST_BODY:
		on_early_reply(s, r);
		return;
	case SMTPC_ST_QUIT:
		close_session(s);
		return;
	case SMTPC_ST_READY:
		/* An unsolicited reply, typically "421 timeout" on an idle session. */
		session_end_reply(s, cls == SMTPC_OK ? SMTPC_PROTO : cls, r, "unexpected reply",
				  false);
		return;
	default:
		session_end_reply(s, SMTPC_PROTO, r, "unexpected reply", false);
		return;
	}
}

/* Replies the server owes for what was sent, counting r, the one being
 * read. Without PIPELINING one command is in flight. From DATA's 354 on,
 * the end-of-data reply may come before the dot (a server that gives up on
 * the message, smtp-sink -A). */
static size_t replies_due(const struct smtpc *s, const struct smtp_reply *r)
{
	switch (s->state) {
	case SMTPC_ST_ENVELOPE: {
		size_t due = s->caps.pipelining ? s->n_cmds - s->cmd_next : 1;
		if (s->cmds[s->cmd_next].kind == CMD_DATA && r->code == 354)
			due++;
		return due;
	}
	case SMTPC_ST_DOT:
		return 1 + (s->next ? s->next_n_cmds : 0);
	case SMTPC_ST_CONNECT:
	case SMTPC_ST_TLS:
	case SMTPC_ST_SECRET_CMD:
	case SMTPC_ST_READY:
	case SMTPC_ST_CLOSED:
		return 0;
	default:
		return 1;
	}
}

/* Bytes after the last reply that is due: a server out of step (or an
 * injection). Read as replies, they would shift every later reply onto the
 * wrong command, so nothing this transaction was told can be trusted: every
 * recipient answered by the server takes the protocol error (deferred,
 * never bounced). */
static void desync(struct smtpc *s, size_t extra)
{
	if (s->state == SMTPC_ST_STARTTLS) {
		/* Sent before TLS, they would be taken as if protected
		 * (CVE-2021-22947 class). */
		session_fail(s, SMTPC_TLS,
			     "server sent data after its STARTTLS reply (possible injection)");
		return;
	}
	if (s->txn) {
		for (size_t i = 0; i < s->txn->env->n_rcpts; i++)
			if (s->txn->rcpt[i].code != 0) /* 0: refused by us, never sent */
				s->txn->rcpt[i].final = false;
		s->txn->cls = SMTPC_OK; /* txn_fail sets the protocol error */
	}
	session_fail(s, SMTPC_PROTO, "server sent %zu bytes more than its reply while %s", extra,
		     states[s->state].name);
}

static void on_data(struct smtpc *s)
{
	while (!s->closing && s->conn->in.len > 0) {
		struct smtp_reply r;
		size_t used = 0;
		const char *err = NULL;
		int rc = smtp_reply_parse(&s->parser, s->conn->in.data, s->conn->in.len, &used, &r,
					  &err);
		buf_consume(&s->conn->in, used);
		if (rc < 0) {
			session_fail(s, SMTPC_PROTO, "malformed reply: %s", err ? err : "?");
			return;
		}
		if (rc == 0)
			break;
		if (log_debug_enabled()) {
			struct buf sum = BUF_INIT;
			smtp_reply_summary(&r, &sum);
			log_debug("%s: < %s", smtpc_peer(s), sum.data);
			buf_deinit(&sum);
		}
		trace(s, SMTPC_TRACE_REPLY, NULL, &r);
		if (s->state == SMTPC_ST_ENVELOPE)
			s->replies_seen = true;
		if (s->conn->in.len > 0 && replies_due(s, &r) == 1 && s->state != SMTPC_ST_QUIT) {
			desync(s, s->conn->in.len);
			smtp_reply_deinit(&r);
			return;
		}
		/* 421 in any phase: the server is closing the session. */
		if (r.code == 421 && s->state != SMTPC_ST_QUIT && s->state != SMTPC_ST_GREETING) {
			struct buf sum = BUF_INIT;
			smtp_reply_summary(&r, &sum);
			s->answered = true; /* after the dot: a reply, not a lost connection */
			txn_fail(s, SMTPC_TEMP, sum.data);
			session_fail(s, SMTPC_TEMP, "server closing the session: %s", sum.data);
			buf_deinit(&sum);
			smtp_reply_deinit(&r);
			return;
		}
		on_reply(s, &r);
		smtp_reply_deinit(&r);
		if (s->state == SMTPC_ST_TLS)
			return; /* what follows is TLS; checked in SMTPC_ST_STARTTLS */
	}
	/* The 354 came (start_body) and nothing else was said with it. */
	if (!s->closing && s->state == SMTPC_ST_BODY && s->read_off == 0)
		body_next(s);
}

static void conn_cb(struct conn *c, enum conn_event ev, void *arg)
{
	struct smtpc *s = arg;
	switch (ev) {
	case CONN_EV_CONNECTED:
		enter(s, SMTPC_ST_GREETING);
		break;
	case CONN_EV_TLS_READY:
		/* Everything learned before TLS is forgotten (RFC 3207 4.2). */
		memset(&s->caps, 0, sizeof(s->caps));
		enter(s, SMTPC_ST_EHLO_TLS);
		break;
	case CONN_EV_DATA:
		on_data(s);
		break;
	case CONN_EV_DRAINED:
		if (s->state == SMTPC_ST_BODY)
			body_next(s);
		break;
	case CONN_EV_TIMEOUT:
		if (s->state == SMTPC_ST_READY) {
			/* idle_timeout: say goodbye politely. */
			enter(s, SMTPC_ST_QUIT);
			break;
		}
		session_fail(s, SMTPC_CONN, "timeout while %s", states[s->state].name);
		break;
	case CONN_EV_EOF:
		if (s->state == SMTPC_ST_QUIT) {
			close_session(s);
			break;
		}
		session_fail(s, s->state == SMTPC_ST_TLS ? SMTPC_TLS : SMTPC_CONN,
			     "connection closed by the server while %s", states[s->state].name);
		break;
	case CONN_EV_ERROR: {
		const char *why = c->error.len ? c->error.data : "connection error";
		enum smtpc_class cls = c->error_class == CONN_ERR_TLS ? SMTPC_TLS : SMTPC_CONN;
		/* Connect and handshake errors say where they happened; a read or
		 * write error later gets the phase, like a timeout or EOF does. */
		if (s->state == SMTPC_ST_CONNECT || s->state == SMTPC_ST_TLS)
			session_fail(s, cls, "%s", why);
		else
			session_fail(s, cls, "%s while %s", why, states[s->state].name);
		break;
	}
	case CONN_EV_CLOSED:
		s->conn_closed = true;
		s->closing = true;
		finish_txn(s); /* settled by close_session */
		if (s->next) {
			fail_next(s);
			finish_txn(s);
		}
		/* The conn frees itself after this event; the session may live
		 * on (a file read in flight) and still be asked its peer. */
		snprintf(s->peer, sizeof(s->peer), "%s", c->peer);
		s->conn = NULL;
		maybe_free(s);
		break;
	}
}

struct smtpc *smtpc_new(uv_loop_t *loop, const struct smtpc_params *p, smtpc_cb cb, void *arg)
{
	struct smtpc *s = xcalloc(1, sizeof(*s));
	s->loop = loop;
	s->relay = p->relay;
	s->helo_name = xstrdup(p->helo_name);
	s->ssl_ctx = p->ssl_ctx;
	s->secret = p->secret;
	s->trace = p->trace;
	s->probe = p->probe;
	s->cb = cb;
	s->arg = arg;
	s->read_fd = -1;
	smtp_reply_parser_init(&s->parser);
	s->conn = conn_new(loop, conn_cb, s);
	s->state = SMTPC_ST_CONNECT;
	conn_connect(s->conn, p->relay->host, p->relay->port, p->relay->connect_timeout_ms,
		     p->relay->tls == TLS_MODE_IMPLICIT ? p->ssl_ctx : NULL);
	return s;
}

bool smtpc_takes_next(const struct smtpc *s)
{
	return s->state == SMTPC_ST_DOT && s->caps.pipelining && !s->closing && !s->probe &&
	       s->next == NULL && s->conn != NULL;
}

void smtpc_send(struct smtpc *s, struct smtpc_txn *txn)
{
	s->messages++;
	for (size_t i = 0; i < txn->env->n_rcpts; i++)
		txn->rcpt[i].tried = txn->rcpt[i].final = false;
	if (s->state == SMTPC_ST_DOT && s->next == NULL) {
		if (s->gathering) {
			queue_envelope(s, txn);
		} else {
			/* Its envelope apart from the dot would be answered apart,
			 * and held by a server's Nagle until our delayed ACK. */
			s->next = txn;
			s->next_held = true;
			s->next_failed = false;
		}
		return;
	}
	s->txn = txn;
	start_envelope(s);
	if (!s->closing && s->state == SMTPC_ST_ENVELOPE)
		start_content(s);
}

void smtpc_quit(struct smtpc *s)
{
	if (s->closing)
		return;
	if (s->state == SMTPC_ST_READY) {
		enter(s, SMTPC_ST_QUIT);
		return;
	}
	smtpc_abort(s, "session closed by pickupd");
}

void smtpc_release_dot(struct smtpc *s, struct smtpc_txn *t)
{
	if (t == NULL || !t->dot_held)
		return;
	t->dot_held = false;
	if (t != s->txn || s->closing || s->state != SMTPC_ST_BODY || !s->read_eof)
		return; /* the content's end sends it */
	wire_filter_finish(&s->filter, &s->out);
	write_dot(s);
}

void smtpc_fail_held(struct smtpc *s, struct smtpc_txn *t, const char *why)
{
	if (s->closing)
		return;
	if (t == s->next) {
		if (t->cls == SMTPC_OK) {
			t->cls = SMTPC_TEMP;
			free(t->reply);
			t->reply = xstrdup(why);
		}
		s->next_failed = true; /* promote_next ends the session */
		return;
	}
	if (t != s->txn)
		return;
	txn_fail(s, SMTPC_TEMP, why);
	session_fail(s, SMTPC_CONN, "%s", why);
}

void smtpc_abort(struct smtpc *s, const char *why)
{
	if (s->closing)
		return;
	session_fail(s, SMTPC_CONN, "%s", why);
}
