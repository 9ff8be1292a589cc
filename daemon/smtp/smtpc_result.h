/*
 * smtpc_result: what an SMTP session reports about a transaction, without
 * the session: the failure class, each recipient's result, the transaction.
 * No libuv here, so the failure policy (policy.c) and its unit tests read
 * results without the session machinery. Owner of a txn: the relay.
 */
#ifndef PICKUPD_SMTPC_RESULT_H
#define PICKUPD_SMTPC_RESULT_H

#include <stdbool.h>
#include <stdint.h>

#include "spool/spool.h"

/* What kind of failure (STYLE.md: CONN, TLS, PROTO, AUTH, TEMP, PERM). */
enum smtpc_class {
	SMTPC_OK,
	SMTPC_CONN,  /* connect, lost connection, timeout */
	SMTPC_TLS,   /* TLS required and not had */
	SMTPC_PROTO, /* the server broke the protocol */
	SMTPC_AUTH,  /* credentials refused (535) or AUTH impossible */
	SMTPC_TEMP,  /* 4xx */
	SMTPC_PERM,  /* 5xx, or the message needs what the server lacks */
};

extern const char *const smtpc_class_names[];

struct smtpc_rcpt_result {
	bool tried; /* this recipient was part of the transaction */
	bool final; /* its outcome is known; otherwise the transaction's class applies */
	enum smtpc_class cls;
	int code;
	char *reply; /* summary "550 5.1.1 no such user" */
};

/* One message transaction. Owner: the relay; smtpc fills the results. */
struct smtpc_txn {
	struct spool_env *env; /* recipients with status pending/deferred are sent */
	int data_fd;	       /* content; smtpc closes it when the transaction ends */
	/* Or the whole content in memory (data_fd unused), kept by the owner
	 * until SMTPC_EV_DONE. */
	const char *content;
	size_t content_len;
	const char *force_sender; /* NULL = env->sender */
	/* The final dot waits for smtpc_release_dot (the owner has a step of
	 * its own to finish before the server may take the message). */
	bool dot_held;
	/* results */
	struct smtpc_rcpt_result *rcpt; /* env->n_rcpts entries */
	enum smtpc_class cls;		/* SMTPC_OK when the per-recipient results decide */
	char *reply;			/* why the whole transaction failed */
	bool maybe_delivered;		/* lost after the final dot */
	bool dot_sent;			/* the final dot went: the server may have the message */
	bool session_stale; /* a reused session was gone before its first reply (the RSET
			       probe): nothing was attempted, the message may go again now */
	uint64_t bytes_sent;
	uint64_t bytes_unread; /* of them, sent from the page cache (sendfile) */
};

#endif
