/*
 * listener: one small stream server on the loop, for the control socket
 * (ctl.c, unix) and the metrics endpoint (metrics.c, TCP): accept, read into
 * a bounded buffer, hand the bytes to the owner, write answers, close.
 *
 * A connection may be held while a thread-pool job works for it
 * (lconn_hold): reading stops, and a close asked for meanwhile (the peer
 * left, the listener stops, lconn_close) waits until lconn_release. Owner of
 * struct listener: its creator, who calls listener_stop and, once
 * listener_idle, listener_free. Each struct lconn belongs to the listener.
 */
#ifndef PICKUPD_LISTENER_H
#define PICKUPD_LISTENER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <uv.h>

#include "common/buf.h"

struct listener;
struct lconn;

struct listener_ops {
	/*
	 * Bytes arrived: lconn_input holds what is not consumed yet. When the
	 * buffer is full after this returns and the connection still reads,
	 * the listener closes it: answer before that ("line too long").
	 */
	void (*read_cb)(struct lconn *c, void *arg);
	/* The connection is closed for good (uv close callback); it and its
	 * lconn_data are freed right after: free what that data points to.
	 * May be NULL. */
	void (*close_cb)(struct lconn *c, void *arg);
	/* While stopping, each time one more handle or connection has closed:
	 * the owner looks whether everything is idle now. May be NULL. */
	void (*stopped_cb)(void *arg);
};

struct listener_limits {
	size_t max_request; /* input buffer of a connection, bytes */
	unsigned max_conns; /* more are accepted and closed at once; 0 = no limit */
	int64_t timeout_ms; /* a connection not answered by then is dropped; 0 = never */
	size_t data_size;   /* the owner's data of each connection (lconn_data), zeroed */
};

/*
 * Listens on a unix socket at path, created with mode (no moment in which
 * others may connect). The path must not exist (the owner clears a stale
 * one). NULL with "what: error" in errors.
 */
struct listener *listener_unix(uv_loop_t *loop, const char *path, mode_t mode,
			       const struct listener_limits *lim, const struct listener_ops *ops,
			       void *arg, const char *what, struct buf *errors);
/*
 * Listens on the first of addrs[0..n) whose address family the host has
 * (the next is tried only on EAFNOSUPPORT). NULL with "what: error" in errors.
 */
struct listener *listener_tcp(uv_loop_t *loop, const struct sockaddr_storage *addrs, int n,
			      const struct listener_limits *lim, const struct listener_ops *ops,
			      void *arg, const char *what, struct buf *errors);
/* The bound address (TCP). 0 or a libuv error. */
int listener_sockname(const struct listener *l, struct sockaddr_storage *ss);
/* Stops accepting and closes every connection (a held one once released). */
void listener_stop(struct listener *l);
/* True once stopped and every handle and connection is closed. */
bool listener_idle(const struct listener *l);
void listener_free(struct listener *l);

/* The owner's data of the connection (listener_limits.data_size bytes). */
void *lconn_data(const struct lconn *c);
/* The bytes read and not yet consumed; *full_r when the buffer is full. */
char *lconn_input(struct lconn *c, size_t *len_r, bool *full_r);
/* Drops the first n bytes of the input. */
void lconn_consume(struct lconn *c, size_t n);
/* Sends a copy of data; nothing once the connection is closing. */
void lconn_write(struct lconn *c, const char *data, size_t len);
/* Sends a copy of data, then closes: the answer that ends the connection. */
void lconn_write_close(struct lconn *c, const char *data, size_t len);
/* Closes now, or when the job that holds it is released. */
void lconn_close(struct lconn *c);
/* A job works for the connection: reading stops, closing waits. */
void lconn_hold(struct lconn *c);
/*
 * The job ended. False when the connection is now closing (the peer left,
 * the listener stops, or a close was asked for): the owner writes nothing
 * more. True: reading goes on; the owner handles input it already has.
 */
bool lconn_release(struct lconn *c);
/* True while closing, or when a close waits for the job to end. */
bool lconn_closing(const struct lconn *c);

#endif
