/*
 * conn: one outbound TCP connection with optional TLS over OpenSSL memory
 * BIOs, reporting to its owner through one event callback (OpenSMTPD ioev).
 * Owner: the smtpc session that created it. The conn frees itself after it
 * has reported CONN_EV_CLOSED; the owner must not touch it afterwards.
 * Events never come from inside a conn_* call: one that arises there (a
 * failed SSL_new or SSL_write, a name the resolver refuses at once) is
 * reported on the next loop iteration. CONN_EV_ERROR is the last event
 * before CLOSED.
 */
#ifndef PICKUPD_CONN_H
#define PICKUPD_CONN_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "common/buf.h"

enum conn_event {
	CONN_EV_CONNECTED, /* TCP is up (for implicit TLS: after the handshake) */
	CONN_EV_TLS_READY, /* the handshake started by conn_start_tls finished */
	CONN_EV_DATA,	   /* new plaintext in conn->in */
	CONN_EV_DRAINED,   /* everything written so far has gone to the kernel */
	CONN_EV_TIMEOUT,   /* the phase timer fired */
	CONN_EV_EOF,	   /* the peer closed */
	CONN_EV_ERROR,	   /* conn->error says what */
	CONN_EV_CLOSED,	   /* after conn_close: last event */
};

enum conn_error_class { CONN_ERR_NONE, CONN_ERR_CONNECT, CONN_ERR_TLS, CONN_ERR_IO };

struct conn;
typedef void (*conn_event_cb)(struct conn *c, enum conn_event ev, void *arg);

struct conn {
	uv_loop_t *loop;
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_idle_t defer; /* reports events that arose inside a call the owner made */
	uv_getaddrinfo_t gai;
	uv_connect_t connect_req;
	struct addrinfo *ai_list, *ai_next;
	char *host;
	unsigned port;
	char peer[128];		     /* "host[ip]:port" for logs once connected */
	char addr[INET6_ADDRSTRLEN]; /* the address being tried */
	SSL_CTX *ssl_ctx;	     /* not owned */
	SSL *ssl;
	BIO *rbio; /* network -> OpenSSL */
	BIO *wbio; /* OpenSSL -> network */
	bool implicit_tls;
	bool handshaking;
	bool tls_up;
	bool tcp_open;
	bool reading;
	bool closing;
	bool freed;
	bool gai_pending;
	bool connecting;   /* a uv_tcp_connect is in flight (the timer bounds it) */
	bool in_call;	   /* inside conn_connect/start_tls/write: events wait for `defer` */
	unsigned deferred; /* events (1 << enum conn_event) waiting for `defer` */
	int handles_open;  /* tcp, timer and defer, freed when all are closed */
	unsigned writes_pending;
	uint64_t wire_out;	/* bytes given to the socket (TLS: as records), queued or not */
	uint64_t timeout_ms;	/* connect timeout, per address */
	struct buf in;		/* plaintext from the peer, consumed by the owner */
	struct buf write_error; /* a failed write, reported after the peer's last words */
	enum conn_error_class error_class;
	struct buf error;
	char tls_info[256]; /* protocol, cipher, verify result */
	conn_event_cb cb;
	void *arg;
};

struct conn *conn_new(uv_loop_t *loop, conn_event_cb cb, void *arg);
/* Resolves host, tries every address in order. With ssl_ctx set, TLS starts
 * at once (implicit TLS) and CONNECTED is reported after the handshake. */
void conn_connect(struct conn *c, const char *host, unsigned port, uint64_t timeout_ms,
		  SSL_CTX *implicit_tls_ctx);
/* Starts TLS on the open connection (STARTTLS); reports TLS_READY or ERROR. */
void conn_start_tls(struct conn *c, SSL_CTX *ctx);
void conn_write(struct conn *c, const void *data, size_t len);
/* Sends up to len bytes of file fd from off straight from the page cache
 * (sendfile: no copy through our memory), on a plaintext connection with
 * nothing queued before them. Returns the bytes the socket took; DRAINED
 * follows only when that is all of len. 0 when nothing went (TLS, writes
 * queued, the socket full, sendfile refused for this file, or a write
 * error, which the read side reports as for conn_write): the caller writes
 * them the usual way. Blocks if the pages must come from the disk, so the
 * caller makes sure the page cache holds them. */
size_t conn_sendfile(struct conn *c, int fd, uint64_t off, size_t len);
/* No TLS on it (now): conn_sendfile may send. */
static inline bool conn_plain(const struct conn *c)
{
	return c->ssl == NULL;
}
/* Bytes written that the peer's TCP has not acknowledged yet: still queued
 * in libuv or in the kernel's send queue (SIOCOUTQ, which keeps its count
 * after a reset). 0 when all arrived, or when it cannot be known. */
size_t conn_unacked(struct conn *c);
/* Of the bytes given to the socket so far (wire_out), how many the peer's
 * TCP has acknowledged: a position in the stream. */
uint64_t conn_acked(struct conn *c);
/* Restarts the phase timer (0 = none). */
void conn_set_timeout(struct conn *c, uint64_t ms);
/* Closes (idempotent). CLOSED is reported asynchronously. */
void conn_close(struct conn *c);
/* The verified peer certificate's subject, issuer, expiry (for test-relay). */
void conn_describe_cert(struct conn *c, struct buf *out);

/* An SSL_CTX for a relay: TLS 1.2+, peer verification on unless verify is
 * false, CA file or system store, optional client certificate. NULL with a
 * reason appended on error. */
SSL_CTX *conn_tls_ctx_new(bool verify, const char *ca_file, const char *cert_file,
			  const char *key_file, struct buf *reason);

#endif
