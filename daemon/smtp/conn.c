/*
 * Purpose: TCP + TLS transport for SMTP sessions.
 * Owns: the uv_tcp_t, the phase timer, the SSL object and its two memory BIOs.
 * Invariants: conn_pump() is the only caller of SSL_do_handshake, SSL_read and
 * SSL_write's output path; each write request owns its bytes; memory is freed
 * only after every handle's close callback ran; events are never reported
 * from inside a call the owner made (in_call: they wait for the idle handle
 * `defer`, so the owner's code around the call never runs re-entered); an
 * error is the last event before CLOSED; a failed write is reported only
 * after the read side has delivered what the peer sent before it went away.
 */
#include "daemon/smtp/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/sockios.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>

#include "common/log.h"

struct write_req {
	uv_write_t req;
	struct conn *c;
	size_t len;
	char data[];
};

static void conn_pump(struct conn *c);
static void try_next_addr(struct conn *c);
static void maybe_free(struct conn *c);
static void close_tcp_for_retry(struct conn *c);

static void defer_cb(uv_idle_t *h);

/* Reports ev on the next loop iteration (emit filters it then). */
static void emit_later(struct conn *c, enum conn_event ev)
{
	c->deferred |= 1u << ev;
	uv_idle_start(&c->defer, defer_cb);
}

/* Reports ev to the owner; from inside a call the owner made (or behind an
 * event already waiting), on the next loop iteration instead. Once closing
 * only CLOSED goes out, and once an error is known only ERROR and CLOSED. */
static void emit(struct conn *c, enum conn_event ev)
{
	if (c->closing && ev != CONN_EV_CLOSED)
		return;
	if (c->error_class != CONN_ERR_NONE && ev != CONN_EV_ERROR && ev != CONN_EV_CLOSED)
		return;
	if (ev != CONN_EV_CLOSED && (c->in_call || c->deferred)) {
		emit_later(c, ev);
		return;
	}
	c->cb(c, ev, c->arg);
}

static void defer_cb(uv_idle_t *h)
{
	struct conn *c = h->data;
	unsigned evs = c->deferred;
	c->deferred = 0;
	uv_idle_stop(h);
	for (int ev = CONN_EV_CONNECTED; ev < CONN_EV_CLOSED; ev++)
		if (evs & (1u << ev))
			emit(c, (enum conn_event)ev);
}

static void fail(struct conn *c, enum conn_error_class cls, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail(struct conn *c, enum conn_error_class cls, const char *fmt, ...)
{
	if (c->closing || c->error_class != CONN_ERR_NONE)
		return;
	va_list ap;
	va_start(ap, fmt);
	buf_clear(&c->error);
	buf_vprintf(&c->error, fmt, ap);
	va_end(ap);
	c->error_class = cls;
	emit(c, CONN_EV_ERROR);
}

static void openssl_errors(struct buf *out)
{
	unsigned long e;
	char tmp[256];
	while ((e = ERR_get_error()) != 0) {
		ERR_error_string_n(e, tmp, sizeof(tmp));
		/* After "what failed: " no separator: it read ": ; error:..." */
		if (out->len && out->data[out->len - 1] != ' ')
			buf_puts(out, "; ");
		buf_puts(out, tmp);
	}
}

struct conn *conn_new(uv_loop_t *loop, conn_event_cb cb, void *arg)
{
	struct conn *c = xcalloc(1, sizeof(*c));
	c->loop = loop;
	c->cb = cb;
	c->arg = arg;
	uv_timer_init(loop, &c->timer);
	c->timer.data = c;
	uv_idle_init(loop, &c->defer);
	c->defer.data = c;
	c->handles_open = 2;
	return c;
}

/* One address failed: "ip: why" joins the list the connect error shows
 * after "connect to host:port failed: " (just "why" when the host is that
 * address, so it is not said twice). */
static void addr_failed(struct conn *c, const char *why)
{
	if (c->error.len)
		buf_puts(&c->error, "; ");
	if (strcmp(c->addr, c->host) != 0)
		buf_printf(&c->error, "%s: ", c->addr);
	buf_puts(&c->error, why);
}

static void timer_cb(uv_timer_t *t)
{
	struct conn *c = t->data;
	if (c->connecting) {
		/* connect_timeout is per address: go on with the next one. */
		c->connecting = false;
		addr_failed(c, "connection timed out");
		close_tcp_for_retry(c);
		return;
	}
	emit(c, CONN_EV_TIMEOUT);
}

void conn_set_timeout(struct conn *c, uint64_t ms)
{
	if (c->closing)
		return;
	uv_timer_stop(&c->timer);
	if (ms)
		uv_timer_start(&c->timer, timer_cb, ms, 0);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	static char slab[65536]; /* one loop thread: one read at a time */
	(void)h;
	(void)suggested;
	*b = uv_buf_init(slab, sizeof(slab));
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct conn *c = s->data;
	if (n == 0 || c->closing)
		return;
	if (n < 0) {
		if (c->write_error.len) {
			/* Everything the peer said is delivered: now the write. */
			fail(c, CONN_ERR_IO, "%s", c->write_error.data);
			return;
		}
		if (n == UV_EOF) {
			if (c->handshaking)
				fail(c, CONN_ERR_TLS, "connection closed during TLS handshake");
			else
				emit(c, CONN_EV_EOF);
		} else {
			fail(c, CONN_ERR_IO, "read error: %s", uv_strerror((int)n));
		}
		return;
	}
	if (c->ssl) {
		BIO_write(c->rbio, b->base, (int)n);
		conn_pump(c);
		return;
	}
	buf_append(&c->in, b->base, (size_t)n);
	emit(c, CONN_EV_DATA);
}

/* The peer reset or closed the connection under a write. What it said
 * before (a 5xx in the middle of the content, smtp-sink -A) may still wait
 * in the receive queue: the read side delivers it, then reports this error
 * when it meets the end (read_cb); the phase timer bounds the wait. */
static void write_failed(struct conn *c, int status)
{
	if (c->write_error.len == 0)
		buf_printf(&c->write_error, "write error: %s", uv_strerror(status));
}

static void write_cb(uv_write_t *req, int status)
{
	struct write_req *w = (struct write_req *)req;
	struct conn *c = w->c;
	free(w);
	c->writes_pending--;
	if (c->closing)
		return;
	if (status < 0) {
		write_failed(c, status);
		return;
	}
	if (c->writes_pending == 0)
		emit(c, CONN_EV_DRAINED);
}

static void raw_write(struct conn *c, const void *data, size_t len)
{
	if (len == 0 || c->closing || !c->tcp_open || c->write_error.len)
		return;
	c->wire_out += len;
	/* Straight to the socket while nothing is queued before it: no copy
	 * of the bytes (a 128 KiB body chunk) and no allocation; only what the
	 * socket cannot take now is queued. */
	if (c->writes_pending == 0) {
		uv_buf_t now = uv_buf_init((char *)data, (unsigned)len);
		int n = uv_try_write((uv_stream_t *)&c->tcp, &now, 1);
		if (n == (int)len) {
			/* Drained already: said as write_cb would, after this call. */
			emit_later(c, CONN_EV_DRAINED);
			return;
		}
		if (n < 0 && n != UV_EAGAIN) {
			write_failed(c, n);
			return;
		}
		if (n > 0) {
			data = (const char *)data + n;
			len -= (size_t)n;
		}
	}
	struct write_req *w = xmalloc(sizeof(*w) + len);
	w->c = c;
	w->len = len;
	memcpy(w->data, data, len);
	uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
	int r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, write_cb);
	if (r < 0) {
		free(w);
		write_failed(c, r);
		return;
	}
	c->writes_pending++;
}

/* Moves what OpenSSL wants to send onto the socket. */
static void flush_wbio(struct conn *c)
{
	char tmp[16384];
	int n;
	while ((n = BIO_read(c->wbio, tmp, sizeof(tmp))) > 0)
		raw_write(c, tmp, (size_t)n);
}

static void tls_describe(struct conn *c)
{
	const char *cipher = SSL_get_cipher_name(c->ssl);
	snprintf(c->tls_info, sizeof(c->tls_info), "%s with cipher %s", SSL_get_version(c->ssl),
		 cipher ? cipher : "?");
}

/* Drives the TLS state machine after bytes arrived or were queued. */
static void conn_pump(struct conn *c)
{
	if (c->closing || c->ssl == NULL)
		return;
	if (c->handshaking) {
		ERR_clear_error();
		int r = SSL_do_handshake(c->ssl);
		flush_wbio(c);
		if (r == 1) {
			c->handshaking = false;
			c->tls_up = true;
			tls_describe(c);
			emit(c, c->implicit_tls ? CONN_EV_CONNECTED : CONN_EV_TLS_READY);
		} else {
			int err = SSL_get_error(c->ssl, r);
			if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
				struct buf why = BUF_INIT;
				long v = SSL_get_verify_result(c->ssl);
				if (v != X509_V_OK)
					buf_printf(&why, "certificate verification failed: %s",
						   X509_verify_cert_error_string(v));
				else
					openssl_errors(&why);
				fail(c, CONN_ERR_TLS, "TLS handshake failed: %s",
				     why.len ? why.data : "protocol error");
				buf_deinit(&why);
				return;
			}
		}
		if (c->handshaking || c->closing)
			return;
	}
	/* Application data. */
	bool got = false;
	for (;;) {
		char tmp[16384];
		ERR_clear_error();
		int n = SSL_read(c->ssl, tmp, sizeof(tmp));
		if (n > 0) {
			buf_append(&c->in, tmp, (size_t)n);
			got = true;
			continue;
		}
		int err = SSL_get_error(c->ssl, n);
		if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
			break;
		if (err == SSL_ERROR_ZERO_RETURN) {
			flush_wbio(c);
			if (got)
				emit(c, CONN_EV_DATA);
			emit(c, CONN_EV_EOF);
			return;
		}
		struct buf why = BUF_INIT;
		openssl_errors(&why);
		fail(c, CONN_ERR_TLS, "TLS read failed: %s", why.len ? why.data : "protocol error");
		buf_deinit(&why);
		return;
	}
	flush_wbio(c);
	if (got)
		emit(c, CONN_EV_DATA);
}

static void start_reading(struct conn *c)
{
	if (!c->reading) {
		uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
		c->reading = true;
	}
}

static int tls_setup(struct conn *c, SSL_CTX *ctx)
{
	c->ssl_ctx = ctx;
	c->ssl = SSL_new(ctx);
	if (c->ssl == NULL)
		return -1;
	c->rbio = BIO_new(BIO_s_mem());
	c->wbio = BIO_new(BIO_s_mem());
	BIO_set_mem_eof_return(c->rbio, -1);
	BIO_set_mem_eof_return(c->wbio, -1);
	SSL_set_bio(c->ssl, c->rbio, c->wbio);
	SSL_set_connect_state(c->ssl);
	/* The peer must be the relay we were told: name or address. */
	struct in6_addr a6;
	struct in_addr a4;
	X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
	if (inet_pton(AF_INET, c->host, &a4) == 1 || inet_pton(AF_INET6, c->host, &a6) == 1) {
		X509_VERIFY_PARAM_set1_ip_asc(vp, c->host);
	} else {
		SSL_set_tlsext_host_name(c->ssl, c->host);
		X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		X509_VERIFY_PARAM_set1_host(vp, c->host, 0);
	}
	c->handshaking = true;
	return 0;
}

void conn_start_tls(struct conn *c, SSL_CTX *ctx)
{
	c->in_call = true;
	if (tls_setup(c, ctx) < 0)
		fail(c, CONN_ERR_TLS, "cannot create TLS session");
	else
		conn_pump(c);
	c->in_call = false;
}

static void connect_cb(uv_connect_t *req, int status)
{
	struct conn *c = req->data;
	if (c->closing || !c->connecting)
		return; /* closed, or given up by the connect timer */
	c->connecting = false;
	if (status < 0) {
		addr_failed(c, uv_strerror(status));
		/* Try the next address on a fresh handle, once this one is closed. */
		close_tcp_for_retry(c);
		return;
	}
	buf_clear(&c->error);
	start_reading(c);
	if (c->ssl_ctx && c->implicit_tls) {
		if (tls_setup(c, c->ssl_ctx) < 0) {
			fail(c, CONN_ERR_TLS, "cannot create TLS session");
			return;
		}
		conn_pump(c);
		return;
	}
	emit(c, CONN_EV_CONNECTED);
}

static void try_next_addr(struct conn *c)
{
	while (c->ai_next) {
		struct addrinfo *ai = c->ai_next;
		c->ai_next = ai->ai_next;
		char ip[INET6_ADDRSTRLEN] = "?";
		if (ai->ai_family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, ip,
				  sizeof(ip));
		else if (ai->ai_family == AF_INET6)
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, ip,
				  sizeof(ip));
		else
			continue;
		snprintf(c->peer, sizeof(c->peer), "%s[%s]:%u", c->host, ip, c->port);
		snprintf(c->addr, sizeof(c->addr), "%s", ip);
		uv_tcp_init(c->loop, &c->tcp);
		/* Writes are gathered already (whole command groups, content
		 * chunks): Nagle would only hold a lone final dot behind the
		 * unacknowledged body until the peer's delayed ACK (40 ms). */
		uv_tcp_nodelay(&c->tcp, 1);
		c->tcp.data = c;
		c->tcp_open = true;
		c->handles_open++;
		c->connect_req.data = c;
		c->connecting = true;
		conn_set_timeout(c, c->timeout_ms);
		int r = uv_tcp_connect(&c->connect_req, &c->tcp, ai->ai_addr, connect_cb);
		if (r < 0) {
			c->connecting = false;
			addr_failed(c, uv_strerror(r));
			close_tcp_for_retry(c);
		}
		return;
	}
	char *why = xstrdup(c->error.len ? c->error.data : "no usable address");
	buf_clear(&c->error);
	fail(c, CONN_ERR_CONNECT, "connect to %s:%u failed: %s", c->host, c->port, why);
	free(why);
}

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct conn *c = req->data;
	c->gai_pending = false;
	if (c->closing) {
		uv_freeaddrinfo(res);
		maybe_free(c);
		return;
	}
	if (status < 0) {
		fail(c, CONN_ERR_CONNECT, "cannot resolve %s: %s", c->host, uv_strerror(status));
		return;
	}
	c->ai_list = res;
	c->ai_next = res;
	try_next_addr(c);
}

void conn_connect(struct conn *c, const char *host, unsigned port, uint64_t timeout_ms,
		  SSL_CTX *implicit_tls_ctx)
{
	char portstr[16];
	struct addrinfo hints;
	c->host = xstrdup(host);
	c->port = port;
	snprintf(c->peer, sizeof(c->peer), "%s:%u", host, port);
	c->ssl_ctx = implicit_tls_ctx;
	c->implicit_tls = implicit_tls_ctx != NULL;
	c->timeout_ms = timeout_ms;
	snprintf(portstr, sizeof(portstr), "%u", port);
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	c->gai.data = c;
	conn_set_timeout(c, timeout_ms);
	c->in_call = true;
	int r = uv_getaddrinfo(c->loop, &c->gai, gai_cb, host, portstr, &hints);
	if (r < 0)
		fail(c, CONN_ERR_CONNECT, "cannot resolve %s: %s", host, uv_strerror(r));
	else
		c->gai_pending = true;
	c->in_call = false;
}

void conn_write(struct conn *c, const void *data, size_t len)
{
	if (c->closing || len == 0)
		return;
	if (c->ssl == NULL) {
		raw_write(c, data, len); /* a failure waits for the read side */
		return;
	}
	c->in_call = true;
	ERR_clear_error();
	if (SSL_write(c->ssl, data, (int)len) <= 0)
		fail(c, CONN_ERR_TLS, "TLS write failed");
	else
		flush_wbio(c);
	c->in_call = false;
}

size_t conn_sendfile(struct conn *c, int fd, uint64_t off, size_t len)
{
	static bool unsupported; /* sendfile(2) refused: never tried again */
	uv_os_fd_t sock;
	if (unsupported || c->ssl != NULL || len == 0 || c->closing || !c->tcp_open ||
	    c->write_error.len || c->writes_pending > 0 ||
	    uv_fileno((uv_handle_t *)&c->tcp, &sock) != 0)
		return 0;
	off_t o = (off_t)off;
	ssize_t n;
	do
		n = sendfile(sock, fd, &o, len);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		if (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)
			unsupported = true;
		else if (errno != EAGAIN)
			write_failed(c, -errno);
		return 0;
	}
	c->wire_out += (uint64_t)n;
	if ((size_t)n == len)
		emit_later(c, CONN_EV_DRAINED); /* as raw_write says it */
	return (size_t)n;
}

size_t conn_unacked(struct conn *c)
{
	uv_os_fd_t fd;
	int outq = 0;
	if (!c->tcp_open)
		return 0;
	size_t n = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
	if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0 && ioctl(fd, SIOCOUTQ, &outq) == 0 &&
	    outq > 0)
		n += (size_t)outq;
	return n;
}

uint64_t conn_acked(struct conn *c)
{
	size_t n = conn_unacked(c);
	return n < c->wire_out ? c->wire_out - n : 0;
}

static void free_conn(struct conn *c)
{
	if (c->ssl)
		SSL_free(c->ssl); /* frees both BIOs */
	if (c->ai_list)
		uv_freeaddrinfo(c->ai_list);
	buf_deinit(&c->in);
	buf_deinit(&c->error);
	buf_deinit(&c->write_error);
	free(c->host);
	free(c);
}

/* The last of the handles and the resolver request gone: report and free. */
static void maybe_free(struct conn *c)
{
	if (!c->closing || c->handles_open > 0 || c->gai_pending || c->freed)
		return;
	c->freed = true;
	c->cb(c, CONN_EV_CLOSED, c->arg);
	free_conn(c);
}

static void handle_closed_cb(uv_handle_t *h)
{
	struct conn *c = h->data;
	c->handles_open--;
	maybe_free(c);
}

static void tcp_retry_closed_cb(uv_handle_t *h)
{
	struct conn *c = h->data;
	c->handles_open--;
	if (c->closing)
		maybe_free(c);
	else
		try_next_addr(c);
}

static void close_tcp_for_retry(struct conn *c)
{
	c->tcp_open = false;
	c->reading = false;
	uv_close((uv_handle_t *)&c->tcp, tcp_retry_closed_cb);
}

void conn_close(struct conn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	if (c->gai_pending)
		uv_cancel((uv_req_t *)&c->gai); /* gai_cb still runs, with UV_ECANCELED */
	uv_timer_stop(&c->timer);
	uv_close((uv_handle_t *)&c->timer, handle_closed_cb);
	c->deferred = 0;
	uv_close((uv_handle_t *)&c->defer, handle_closed_cb);
	if (c->tcp_open) {
		c->tcp_open = false;
		uv_close((uv_handle_t *)&c->tcp, handle_closed_cb);
	}
}

void conn_describe_cert(struct conn *c, struct buf *out)
{
	if (c->ssl == NULL) {
		buf_puts(out, "no TLS");
		return;
	}
	X509 *cert = SSL_get1_peer_certificate(c->ssl);
	if (cert == NULL) {
		buf_puts(out, "no certificate");
		return;
	}
	char subj[256], iss[256];
	X509_NAME_oneline(X509_get_subject_name(cert), subj, sizeof(subj));
	X509_NAME_oneline(X509_get_issuer_name(cert), iss, sizeof(iss));
	BIO *b = BIO_new(BIO_s_mem());
	ASN1_TIME_print(b, X509_get0_notAfter(cert));
	char exp[64] = "";
	int n = BIO_read(b, exp, sizeof(exp) - 1);
	exp[n > 0 ? n : 0] = '\0';
	BIO_free(b);
	long v = SSL_get_verify_result(c->ssl);
	buf_printf(out, "subject=%s, issuer=%s, expires=%s, verify=%s", subj, iss, exp,
		   v == X509_V_OK ? "ok" : X509_verify_cert_error_string(v));
	X509_free(cert);
}

SSL_CTX *conn_tls_ctx_new(bool verify, const char *ca_file, const char *cert_file,
			  const char *key_file, struct buf *reason)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL)
		goto fail;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (verify) {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
		if (ca_file && *ca_file) {
			if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
				buf_printf(reason, "cannot load ca_file %s: ", ca_file);
				goto fail;
			}
		} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
			buf_puts(reason, "cannot load the system CA store: ");
			goto fail;
		}
	} else {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	}
	if (cert_file && *cert_file) {
		if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1 ||
		    SSL_CTX_use_PrivateKey_file(ctx, key_file && *key_file ? key_file : cert_file,
						SSL_FILETYPE_PEM) != 1) {
			buf_printf(reason, "cannot load client certificate %s: ", cert_file);
			goto fail;
		}
	}
	return ctx;
fail:
	openssl_errors(reason);
	SSL_CTX_free(ctx);
	return NULL;
}
