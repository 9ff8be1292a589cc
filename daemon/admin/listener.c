/*
 * Purpose: the stream server the control socket and the metrics endpoint
 * share (listener.h): bind (unix or TCP), accept within a connection limit,
 * read into each connection's bounded buffer, write answers, close, drop
 * connections that are not answered in time.
 * Owns: the listening handle, the sweep timer (only with a timeout), every
 * connection's handle, buffer and pending writes.
 * Invariants: a connection's memory is freed only in its close callback,
 * after the owner's close_cb; a held connection is never closed (a close
 * waits for lconn_release); a write request owns a copy of its bytes; the
 * listener is freed by its owner once idle, or by itself, in its last close
 * callback, when it could not start.
 */
#include "daemon/admin/listener.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

union lhandle {
	uv_handle_t handle;
	uv_stream_t stream;
	uv_pipe_t pipe;
	uv_tcp_t tcp;
};

struct lconn {
	struct listener *l;
	union lhandle h;
	void *data;	   /* the owner's: listener_limits.data_size bytes */
	uint64_t accepted; /* uv_now */
	bool held;	   /* a job works for it */
	bool want_close;   /* closes once released */
	bool closing;	   /* uv_close called */
	bool answered;	   /* lconn_write_close: the timeout no longer applies */
	struct lconn *prev, *next;
	size_t in_len;
	char in[];
};

struct listener {
	uv_loop_t *loop;
	bool is_unix;
	union lhandle server;
	uv_timer_t sweep;
	unsigned handles_open; /* server, and sweep when there is a timeout */
	bool stopping;
	bool failed; /* could not start: the last close callback frees it */
	struct listener_limits lim;
	struct listener_ops ops;
	void *arg;
	struct lconn *conns;
	unsigned n_conns;
};

struct lwrite {
	uv_write_t req;
	struct lconn *c;
	bool close_after;
	char data[];
};

static void stopped(struct listener *l)
{
	if (l->stopping && l->ops.stopped_cb)
		l->ops.stopped_cb(l->arg);
}

/* ---- connections -------------------------------------------------------------------------- */

static void conn_close_cb(uv_handle_t *h)
{
	struct lconn *c = h->data;
	struct listener *l = c->l;
	if (l->ops.close_cb)
		l->ops.close_cb(c, l->arg);
	free(c->data);
	if (c->prev)
		c->prev->next = c->next;
	else
		l->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	l->n_conns--;
	free(c);
	stopped(l);
}

void lconn_close(struct lconn *c)
{
	if (c->held) {
		c->want_close = true;
		return;
	}
	if (c->closing)
		return;
	c->closing = true;
	uv_close(&c->h.handle, conn_close_cb);
}

bool lconn_closing(const struct lconn *c)
{
	return c->closing || c->want_close;
}

static void write_cb(uv_write_t *req, int status)
{
	struct lwrite *w = (struct lwrite *)req;
	(void)status; /* a client that left is not our problem */
	if (w->close_after)
		lconn_close(w->c);
	free(w);
}

static void conn_write(struct lconn *c, const char *data, size_t len, bool close_after)
{
	if (c->closing)
		return;
	struct lwrite *w = xmalloc(sizeof(*w) + len);
	w->c = c;
	w->close_after = close_after;
	memcpy(w->data, data, len);
	uv_buf_t ub = uv_buf_init(w->data, (unsigned)len);
	if (uv_write(&w->req, &c->h.stream, &ub, 1, write_cb) < 0) {
		free(w);
		if (close_after)
			lconn_close(c);
	}
}

void lconn_write(struct lconn *c, const char *data, size_t len)
{
	if (len)
		conn_write(c, data, len, false);
}

void lconn_write_close(struct lconn *c, const char *data, size_t len)
{
	if (c->closing || c->answered)
		return;
	c->answered = true;
	uv_read_stop(&c->h.stream);
	conn_write(c, data, len, true);
}

void *lconn_data(const struct lconn *c)
{
	return c->data;
}

char *lconn_input(struct lconn *c, size_t *len_r, bool *full_r)
{
	*len_r = c->in_len;
	if (full_r)
		*full_r = c->in_len == c->l->lim.max_request;
	return c->in;
}

void lconn_consume(struct lconn *c, size_t n)
{
	if (n > c->in_len)
		n = c->in_len;
	c->in_len -= n;
	memmove(c->in, c->in + n, c->in_len);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct lconn *c = h->data;
	(void)suggested;
	*b = uv_buf_init(c->in + c->in_len, (unsigned)(c->l->lim.max_request - c->in_len));
}

static bool reading(const struct lconn *c)
{
	return !c->closing && !c->held && !c->want_close && !c->answered;
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct lconn *c = s->data;
	struct listener *l = c->l;
	(void)b;
	if (n < 0) {
		lconn_close(c);
		return;
	}
	c->in_len += (size_t)n;
	l->ops.read_cb(c, l->arg);
	/* The owner could not use a full buffer: nothing more can be read. */
	if (reading(c) && c->in_len == l->lim.max_request)
		lconn_close(c);
}

void lconn_hold(struct lconn *c)
{
	c->held = true;
	uv_read_stop(&c->h.stream);
}

bool lconn_release(struct lconn *c)
{
	c->held = false;
	if (c->want_close || c->l->stopping) {
		lconn_close(c);
		return false;
	}
	if (c->closing)
		return false;
	if (!c->answered)
		uv_read_start(&c->h.stream, alloc_cb, read_cb);
	return true;
}

static void connection_cb(uv_stream_t *server, int status)
{
	struct listener *l = server->data;
	if (status < 0 || l->stopping)
		return;
	struct lconn *c = xcalloc(1, sizeof(*c) + l->lim.max_request);
	c->l = l;
	c->accepted = uv_now(l->loop);
	c->data = l->lim.data_size ? xcalloc(1, l->lim.data_size) : NULL;
	if (l->is_unix)
		uv_pipe_init(l->loop, &c->h.pipe, 0);
	else
		uv_tcp_init(l->loop, &c->h.tcp);
	c->h.handle.data = c;
	c->next = l->conns;
	if (l->conns)
		l->conns->prev = c;
	l->conns = c;
	l->n_conns++;
	if (uv_accept(server, &c->h.stream) < 0 ||
	    (l->lim.max_conns && l->n_conns > l->lim.max_conns)) {
		lconn_close(c);
		return;
	}
	uv_read_start(&c->h.stream, alloc_cb, read_cb);
}

/* Drops connections that never finished their request. */
static void sweep_cb(uv_timer_t *t)
{
	struct listener *l = t->data;
	uint64_t now = uv_now(l->loop);
	for (struct lconn *c = l->conns; c; c = c->next)
		if (!c->answered && !c->held && now - c->accepted > (uint64_t)l->lim.timeout_ms)
			lconn_close(c);
}

/* ---- the listener ------------------------------------------------------------------------- */

static void handle_close_cb(uv_handle_t *h)
{
	struct listener *l = h->data;
	if (--l->handles_open == 0 && l->failed) {
		free(l);
		return;
	}
	stopped(l);
}

static struct listener *listener_new(uv_loop_t *loop, bool is_unix,
				     const struct listener_limits *lim,
				     const struct listener_ops *ops, void *arg)
{
	struct listener *l = xcalloc(1, sizeof(*l));
	l->loop = loop;
	l->is_unix = is_unix;
	l->lim = *lim;
	l->ops = *ops;
	l->arg = arg;
	if (is_unix)
		uv_pipe_init(loop, &l->server.pipe, 0);
	else
		uv_tcp_init(loop, &l->server.tcp);
	l->server.handle.data = l;
	l->handles_open = 1;
	if (lim->timeout_ms > 0) {
		uv_timer_init(loop, &l->sweep);
		l->sweep.data = l;
		l->handles_open++;
	}
	return l;
}

/* Listens, or closes everything (freed in the close callbacks): NULL. */
static struct listener *listener_go(struct listener *l, int r, const char *what, struct buf *errors)
{
	if (r == 0)
		r = uv_listen(&l->server.stream, 64, connection_cb);
	if (r < 0) {
		buf_printf(errors, "%s: %s\n", what, uv_strerror(r));
		l->failed = true;
		uv_close(&l->server.handle, handle_close_cb);
		if (l->lim.timeout_ms > 0)
			uv_close((uv_handle_t *)&l->sweep, handle_close_cb);
		return NULL;
	}
	if (l->lim.timeout_ms > 0) {
		uint64_t every = (uint64_t)l->lim.timeout_ms / 2;
		uv_timer_start(&l->sweep, sweep_cb, every, every);
		uv_unref((uv_handle_t *)&l->sweep);
	}
	return l;
}

struct listener *listener_unix(uv_loop_t *loop, const char *path, mode_t mode,
			       const struct listener_limits *lim, const struct listener_ops *ops,
			       void *arg, const char *what, struct buf *errors)
{
	struct listener *l = listener_new(loop, true, lim, ops, arg);
	/* Created with its mode from the start: no moment in which others may connect. */
	mode_t old = umask(~mode & 0777);
	int r = uv_pipe_bind(&l->server.pipe, path);
	umask(old);
	if (r == 0 && chmod(path, mode) < 0)
		r = uv_translate_sys_error(errno);
	return listener_go(l, r, what, errors);
}

struct listener *listener_tcp(uv_loop_t *loop, const struct sockaddr_storage *addrs, int n,
			      const struct listener_limits *lim, const struct listener_ops *ops,
			      void *arg, const char *what, struct buf *errors)
{
	struct listener *l = listener_new(loop, false, lim, ops, arg);
	int r = UV_EAFNOSUPPORT;
	/* The next address only when the family is missing: a socket exists
	 * otherwise, and it cannot change its family. */
	for (int i = 0; i < n && r == UV_EAFNOSUPPORT; i++)
		r = uv_tcp_bind(&l->server.tcp, (const struct sockaddr *)&addrs[i], 0);
	return listener_go(l, r, what, errors);
}

int listener_sockname(const struct listener *l, struct sockaddr_storage *ss)
{
	int len = sizeof(*ss);
	memset(ss, 0, sizeof(*ss));
	if (l->is_unix)
		return UV_EINVAL;
	return uv_tcp_getsockname(&l->server.tcp, (struct sockaddr *)ss, &len);
}

void listener_stop(struct listener *l)
{
	if (l == NULL || l->stopping)
		return;
	l->stopping = true;
	uv_close(&l->server.handle, handle_close_cb);
	if (l->lim.timeout_ms > 0)
		uv_close((uv_handle_t *)&l->sweep, handle_close_cb);
	for (struct lconn *c = l->conns; c; c = c->next)
		lconn_close(c);
}

bool listener_idle(const struct listener *l)
{
	return l == NULL || (l->stopping && l->handles_open == 0 && l->conns == NULL);
}

void listener_free(struct listener *l)
{
	free(l);
}
