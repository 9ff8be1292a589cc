/*
 * smtpc: one SMTP client session to one relay (RFC 5321, 3207 STARTTLS,
 * 4954 AUTH, 2920 PIPELINING, 1870 SIZE, 6152 8BITMIME, 6531 SMTPUTF8,
 * 3461 DSN). It reports what the server said, classified; it never decides
 * retry or bounce (that is policy.c, the failure policy).
 * Owner: the relay pool, or pickupctl test-relay (a probe: set-up only,
 * traced). The session frees itself after reporting SMTPC_EV_CLOSED; the
 * owner must not touch it afterwards.
 */
#ifndef PICKUPD_SMTPC_H
#define PICKUPD_SMTPC_H

#include <stdbool.h>
#include <uv.h>

#include "common/config.h"
#include "common/smtp_reply.h"
#include "common/wire.h"
#include "daemon/smtp/conn.h"
#include "daemon/smtp/smtpc_result.h"
#include "spool/spool.h"

/* The session's states, in the order set-up goes through them. */
enum smtpc_state {
	SMTPC_ST_CONNECT,
	SMTPC_ST_GREETING,
	SMTPC_ST_EHLO,
	SMTPC_ST_HELO,
	SMTPC_ST_STARTTLS,
	SMTPC_ST_TLS,
	SMTPC_ST_EHLO_TLS,
	SMTPC_ST_SECRET_CMD,
	SMTPC_ST_AUTH,
	SMTPC_ST_AUTH_LOGIN_USER,
	SMTPC_ST_AUTH_LOGIN_PASS,
	SMTPC_ST_AUTH_XOAUTH2_ERR,
	SMTPC_ST_READY,
	SMTPC_ST_ENVELOPE,
	SMTPC_ST_BODY,
	SMTPC_ST_DOT,
	SMTPC_ST_QUIT,
	SMTPC_ST_CLOSED,
};

enum smtpc_event {
	SMTPC_EV_READY,	 /* idle and usable: smtpc_send or smtpc_quit */
	SMTPC_EV_DONE,	 /* the oldest transaction finished; results in the txn */
	SMTPC_EV_NEXT,	 /* its final dot is written: smtpc_send may pipeline the next */
	SMTPC_EV_CLOSED, /* gone; error_class/error say why when it failed */
};

struct smtpc;
typedef void (*smtpc_cb)(struct smtpc *s, enum smtpc_event ev, void *arg);

/* What the trace hook is told, as it happens. */
enum smtpc_trace_kind {
	SMTPC_TRACE_STATE, /* the session entered ev->state */
	SMTPC_TRACE_SENT,  /* ev->line was sent (no CRLF); secrets shown as "<hidden>" */
	SMTPC_TRACE_REPLY, /* ev->reply came, whole */
};
struct smtpc_trace_ev {
	enum smtpc_trace_kind kind;
	enum smtpc_state state; /* the session's state (for STATE: the new one) */
	const char *line;
	const struct smtp_reply *reply;
};
/* An observer: it may ask the session (smtpc_peer, smtpc_conn, ...), never
 * call smtpc_send/quit/abort. It is called from within smtpc's work, which
 * includes smtpc_quit and smtpc_abort. */
typedef void (*smtpc_trace_cb)(const struct smtpc *s, const struct smtpc_trace_ev *ev, void *arg);

struct smtpc_params {
	/* relay and ssl_ctx are kept by pointer: the owner keeps both alive
	 * (relay.c holds references) until SMTPC_EV_CLOSED has been reported. */
	const struct config_relay *relay;
	const char *helo_name;
	SSL_CTX *ssl_ctx;     /* NULL when tls = none */
	char *secret;	      /* password or token, moved into the session, wiped after use */
	smtpc_trace_cb trace; /* NULL = none; called with smtpc_new's arg */
	bool probe;	      /* set-up only: QUIT on reaching READY, which is never reported */
};

struct smtpc *smtpc_new(uv_loop_t *loop, const struct smtpc_params *p, smtpc_cb cb, void *arg);
/* Why this session's server cannot take the message (SIZE, SMTPUTF8,
 * 8BITMIME), written into why; NULL when it can. Check before smtpc_send. */
const char *smtpc_check_capable(const struct smtpc *s, const struct spool_env *env, char *why,
				size_t len);
/* Starts a transaction on an idle session, or on one that smtpc_takes_next:
 * given from within SMTPC_EV_NEXT, its envelope commands go behind the final
 * dot, in the same write (RFC 2920 3.1: content may open a group), their
 * replies after the dot's; given later, it starts once the dot's reply is
 * in. DONE comes for each transaction in turn. Results come with
 * SMTPC_EV_DONE, never synchronously. */
void smtpc_send(struct smtpc *s, struct smtpc_txn *txn);
/* Whether a next transaction may be pipelined now (smtpc_send). */
bool smtpc_takes_next(const struct smtpc *s);
/* QUIT and close (idle), or abort (busy: the transaction is reported DONE
 * with SMTPC_CONN, then the session CLOSED, both after the call returned). */
void smtpc_quit(struct smtpc *s);
void smtpc_abort(struct smtpc *s, const char *why);
/* For a transaction t sent with dot_held: the dot may go now (at once if the
 * content has all been taken; an in-memory content waits with it, to go in
 * the same write). */
void smtpc_release_dot(struct smtpc *s, struct smtpc_txn *t);
/* For a transaction t sent with dot_held, whose owner could not finish its
 * own step: it ends without its dot as a temporary failure (why), and the
 * session is dropped, as DATA cannot end cleanly (a pipelined t: once the
 * transaction before it has its reply); DONE and CLOSED follow as for
 * smtpc_abort. */
void smtpc_fail_held(struct smtpc *s, struct smtpc_txn *t, const char *why);

const char *smtpc_peer(const struct smtpc *s);
enum smtpc_class smtpc_error_class(const struct smtpc *s);
const char *smtpc_error(const struct smtpc *s);
/* The state the session was in when its error came (which step failed). */
enum smtpc_state smtpc_error_state(const struct smtpc *s);
/* The connection, for what it knows (tls_up, tls_info, the certificate);
 * NULL once it has closed. */
struct conn *smtpc_conn(const struct smtpc *s);
unsigned smtpc_messages(const struct smtpc *s);
bool smtpc_idle(const struct smtpc *s);

/* Result helpers */
void smtpc_txn_init(struct smtpc_txn *t, struct spool_env *env, int data_fd);
void smtpc_txn_deinit(struct smtpc_txn *t);

/* Maps a reply code to a class: 2xx OK, 4xx TEMP, 5xx PERM, else PROTO. */
enum smtpc_class smtpc_classify_code(int code);

#endif
