/*
 * Purpose: unit tests for daemon/smtp/conn (TCP + TLS over OpenSSL memory BIOs)
 * against a peer in the test: a loopback listener, and for TLS an OpenSSL
 * server on memory BIOs with a certificate made at test time (OpenSSL API,
 * for 127.0.0.1 only). Connect, write and drain, read, EOF, connection
 * refused, the phase timer, STARTTLS and implicit TLS handshakes with data
 * both ways, a name the certificate does not hold, an untrusted certificate.
 * No event comes from inside a conn_* call (SSL_new or SSL_write failing, a
 * name the resolver refuses at once): it comes on the next loop iteration.
 */
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
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
#include "daemon/smtp/conn.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- a certificate for 127.0.0.1, made once ------------------------------------------- */

static EVP_PKEY *key;
static X509 *cert;
static char ca_path[] = "/tmp/conntest-ca.XXXXXX";

static int make_cert(void **state)
{
	(void)state;
	key = EVP_EC_gen("P-256");
	cert = X509_new();
	if (key == NULL || cert == NULL)
		return -1;
	X509_set_version(cert, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
	X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
	X509_gmtime_adj(X509_getm_notAfter(cert), 86400);
	X509_NAME *name = X509_get_subject_name(cert);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"pickupd test",
				   -1, -1, 0);
	X509_set_issuer_name(cert, name);
	X509_set_pubkey(cert, key);
	X509V3_CTX v3;
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, cert, cert, NULL, NULL, 0);
	static const struct {
		int nid;
		const char *value;
	} exts[] = {
	    {NID_subject_alt_name, "IP:127.0.0.1"},
	    {NID_basic_constraints, "critical,CA:TRUE"},
	};
	for (size_t i = 0; i < ARRAY_SIZE(exts); i++) {
		X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, exts[i].nid, exts[i].value);
		if (ext == NULL)
			return -1;
		X509_add_ext(cert, ext, -1);
		X509_EXTENSION_free(ext);
	}
	if (X509_sign(cert, key, EVP_sha256()) == 0)
		return -1;
	int fd = mkstemp(ca_path);
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (f == NULL || PEM_write_X509(f, cert) != 1)
		return -1;
	fclose(f);
	return 0;
}

static int free_cert(void **state)
{
	(void)state;
	unlink(ca_path);
	X509_free(cert);
	EVP_PKEY_free(key);
	return 0;
}

/* ---- the peer ----------------------------------------------------------------------------- */

struct t {
	uv_loop_t loop;
	uv_tcp_t listener, peer;
	bool peer_open;
	unsigned port;
	/* the peer's TLS, when it speaks it (from the first byte) */
	SSL_CTX *sctx;
	SSL *ssl;
	BIO *rbio, *wbio;
	struct buf got;	    /* plaintext the peer received */
	const char *answer; /* written (plaintext) once `expect` has arrived */
	const char *expect;
	bool close_after; /* then close */
	/* the conn's side */
	struct conn *c;
	unsigned events[CONN_EV_CLOSED + 1];
	struct buf in; /* what DATA events brought */
	bool write_on_connect;
	enum conn_error_class err_class;
	char err[512];
	int timeout_ms_after_connect;
	bool stop_on_connect; /* uv_stop at CONNECTED: the test calls from outside the loop */
	bool in_call;	      /* the test is inside a conn_* call */
	unsigned sync_events; /* events that came from inside one */
};

static void write_done_cb(uv_write_t *w, int status)
{
	(void)status;
	free(w);
}

static void peer_raw_write(struct t *t, const void *data, size_t len)
{
	struct {
		uv_write_t w;
		char data[];
	} *wr = malloc(sizeof(*wr) + len);
	memcpy(wr->data, data, len);
	uv_buf_t b = uv_buf_init(wr->data, (unsigned)len);
	uv_write(&wr->w, (uv_stream_t *)&t->peer, &b, 1, write_done_cb);
}

static void peer_flush(struct t *t)
{
	char tmp[16384];
	int n;
	while ((n = BIO_read(t->wbio, tmp, sizeof(tmp))) > 0)
		peer_raw_write(t, tmp, (size_t)n);
}

static void peer_write(struct t *t, const char *s)
{
	if (t->ssl) {
		SSL_write(t->ssl, s, (int)strlen(s));
		peer_flush(t);
	} else {
		peer_raw_write(t, s, strlen(s));
	}
}

static void close_peer(struct t *t)
{
	if (t->peer_open) {
		t->peer_open = false;
		uv_close((uv_handle_t *)&t->peer, NULL);
	}
}

static void shutdown_cb(uv_shutdown_t *req, int status)
{
	struct t *t = req->data;
	(void)status;
	free(req);
	close_peer(t);
}

/* Closes after what was written has gone (uv_close alone would cancel it). */
static void finish_peer(struct t *t)
{
	uv_shutdown_t *req = malloc(sizeof(*req));
	req->data = t;
	if (uv_shutdown(req, (uv_stream_t *)&t->peer, shutdown_cb) < 0) {
		free(req);
		close_peer(t);
	}
}

static void peer_got(struct t *t)
{
	if (t->expect && strstr(t->got.data ? t->got.data : "", t->expect)) {
		t->expect = NULL;
		if (t->answer)
			peer_write(t, t->answer);
		if (t->close_after) {
			if (t->ssl) {
				SSL_shutdown(t->ssl);
				peer_flush(t);
			}
			finish_peer(t);
		}
	}
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	(void)h;
	b->base = malloc(suggested);
	b->len = suggested;
}

static void peer_read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	struct t *t = st->data;
	if (n < 0) {
		close_peer(t);
	} else if (n > 0 && t->ssl == NULL) {
		buf_append(&t->got, b->base, (size_t)n);
		peer_got(t);
	} else if (n > 0) {
		BIO_write(t->rbio, b->base, (int)n);
		if (!SSL_is_init_finished(t->ssl)) {
			SSL_do_handshake(t->ssl);
			peer_flush(t);
		}
		char tmp[4096];
		int k;
		while ((k = SSL_read(t->ssl, tmp, sizeof(tmp))) > 0)
			buf_append(&t->got, tmp, (size_t)k);
		peer_flush(t);
		peer_got(t);
	}
	free(b->base);
}

static void accept_cb(uv_stream_t *l, int status)
{
	struct t *t = l->data;
	assert_int_equal(status, 0);
	uv_tcp_init(&t->loop, &t->peer);
	t->peer.data = t;
	assert_int_equal(uv_accept(l, (uv_stream_t *)&t->peer), 0);
	t->peer_open = true;
	if (t->sctx) {
		t->ssl = SSL_new(t->sctx);
		t->rbio = BIO_new(BIO_s_mem());
		t->wbio = BIO_new(BIO_s_mem());
		SSL_set_bio(t->ssl, t->rbio, t->wbio);
		SSL_set_accept_state(t->ssl);
	}
	uv_read_start((uv_stream_t *)&t->peer, alloc_cb, peer_read_cb);
	uv_close((uv_handle_t *)&t->listener, NULL);
}

static void listen_on(struct t *t, bool tls)
{
	struct sockaddr_in sa;
	int namelen = sizeof(sa);
	uv_ip4_addr("127.0.0.1", 0, &sa);
	uv_tcp_init(&t->loop, &t->listener);
	t->listener.data = t;
	assert_int_equal(uv_tcp_bind(&t->listener, (struct sockaddr *)&sa, 0), 0);
	assert_int_equal(uv_listen((uv_stream_t *)&t->listener, 1, accept_cb), 0);
	uv_tcp_getsockname(&t->listener, (struct sockaddr *)&sa, &namelen);
	t->port = ntohs(sa.sin_port);
	if (tls) {
		t->sctx = SSL_CTX_new(TLS_server_method());
		assert_int_equal(SSL_CTX_use_certificate(t->sctx, cert), 1);
		assert_int_equal(SSL_CTX_use_PrivateKey(t->sctx, key), 1);
	}
}

/* ---- the conn's owner ------------------------------------------------------------------ */

static SSL_CTX *client_ctx(bool verify)
{
	struct buf why = BUF_INIT;
	SSL_CTX *ctx = conn_tls_ctx_new(verify, ca_path, NULL, NULL, &why);
	if (ctx == NULL)
		fail_msg("conn_tls_ctx_new: %s", why.data);
	buf_deinit(&why);
	return ctx;
}

static SSL_CTX *starttls_ctx;

static void conn_cb(struct conn *c, enum conn_event ev, void *arg)
{
	struct t *t = arg;
	t->events[ev]++;
	if (t->in_call)
		t->sync_events++;
	switch (ev) {
	case CONN_EV_CONNECTED:
		if (t->stop_on_connect) {
			uv_stop(&t->loop);
			break;
		}
		if (starttls_ctx) {
			conn_start_tls(c, starttls_ctx);
			break;
		}
		if (t->timeout_ms_after_connect) {
			conn_set_timeout(c, (uint64_t)t->timeout_ms_after_connect);
			break;
		}
		/* fall through */
	case CONN_EV_TLS_READY:
		if (t->write_on_connect)
			conn_write(c, "ping\r\n", 6);
		break;
	case CONN_EV_DATA:
		buf_append(&t->in, c->in.data, c->in.len);
		buf_consume(&c->in, c->in.len);
		break;
	case CONN_EV_DRAINED:
		break;
	case CONN_EV_TIMEOUT:
	case CONN_EV_EOF:
		conn_close(c);
		break;
	case CONN_EV_ERROR:
		t->err_class = c->error_class;
		snprintf(t->err, sizeof(t->err), "%s", c->error.len ? c->error.data : "");
		conn_close(c);
		break;
	case CONN_EV_CLOSED:
		t->c = NULL;
		close_peer(t);
		if (!uv_is_closing((uv_handle_t *)&t->listener))
			uv_close((uv_handle_t *)&t->listener, NULL);
		break;
	}
}

static void t_init(struct t *t)
{
	memset(t, 0, sizeof(*t));
	assert_int_equal(uv_loop_init(&t->loop), 0);
	starttls_ctx = NULL;
}

/* Runs the loop to its end: the conn closed, every handle gone. */
static void t_finish(struct t *t)
{
	uv_run(&t->loop, UV_RUN_DEFAULT);
	assert_null(t->c);
	assert_int_equal(t->events[CONN_EV_CLOSED], 1);
	assert_int_equal(uv_loop_close(&t->loop), 0);
	if (t->ssl)
		SSL_free(t->ssl);
	SSL_CTX_free(t->sctx);
}

static void t_run(struct t *t, const char *host, SSL_CTX *implicit)
{
	t->c = conn_new(&t->loop, conn_cb, t);
	conn_connect(t->c, host, t->port, 60000, implicit);
	t_finish(t);
}

static void t_deinit(struct t *t)
{
	buf_deinit(&t->got);
	buf_deinit(&t->in);
}

/* ---- TCP ----------------------------------------------------------------------------------- */

/* write, drained, the answer read, then the peer's close seen as EOF */
static void conn_tcp_write_read_eof(void **state)
{
	(void)state;
	struct t t;
	t_init(&t);
	listen_on(&t, false);
	t.write_on_connect = true;
	t.expect = "ping\r\n";
	t.answer = "pong\r\n";
	t.close_after = true;
	t_run(&t, "127.0.0.1", NULL);
	assert_int_equal(t.events[CONN_EV_CONNECTED], 1);
	assert_true(t.events[CONN_EV_DRAINED] >= 1);
	assert_int_equal(t.events[CONN_EV_EOF], 1);
	assert_int_equal(t.events[CONN_EV_ERROR], 0);
	assert_string_equal(t.got.data, "ping\r\n");
	assert_string_equal(t.in.data, "pong\r\n");
	t_deinit(&t);
}

static void conn_connect_refused(void **state)
{
	(void)state;
	struct t t;
	t_init(&t);
	listen_on(&t, false);
	uv_close((uv_handle_t *)&t.listener, NULL); /* nobody listens on that port any more */
	uv_run(&t.loop, UV_RUN_NOWAIT);
	t_run(&t, "127.0.0.1", NULL);
	assert_int_equal(t.events[CONN_EV_CONNECTED], 0);
	assert_int_equal(t.events[CONN_EV_ERROR], 1);
	assert_int_equal(t.err_class, CONN_ERR_CONNECT);
	char want[64];
	snprintf(want, sizeof(want), "connect to 127.0.0.1:%u failed: ", t.port);
	assert_non_null(strstr(t.err, want));
	t_deinit(&t);
}

/* The phase timer fires when the peer stays silent. */
static void conn_phase_timeout(void **state)
{
	(void)state;
	struct t t;
	t_init(&t);
	listen_on(&t, false);
	t.timeout_ms_after_connect = 20;
	t_run(&t, "127.0.0.1", NULL);
	assert_int_equal(t.events[CONN_EV_CONNECTED], 1);
	assert_int_equal(t.events[CONN_EV_TIMEOUT], 1);
	assert_int_equal(t.events[CONN_EV_ERROR], 0);
	t_deinit(&t);
}

/* ---- TLS ----------------------------------------------------------------------------------- */

static void conn_starttls_handshake_and_data(void **state)
{
	(void)state;
	struct t t;
	t_init(&t);
	listen_on(&t, true);
	starttls_ctx = client_ctx(true);
	t.write_on_connect = true;
	t.expect = "ping\r\n";
	t.answer = "pong\r\n";
	t.close_after = true;
	t_run(&t, "127.0.0.1", NULL);
	assert_int_equal(t.events[CONN_EV_TLS_READY], 1);
	assert_int_equal(t.events[CONN_EV_ERROR], 0);
	assert_string_equal(t.got.data, "ping\r\n");
	assert_string_equal(t.in.data, "pong\r\n"); /* decrypted */
	assert_int_equal(t.events[CONN_EV_EOF], 1); /* close_notify */
	SSL_CTX_free(starttls_ctx);
	t_deinit(&t);
}

static void conn_implicit_tls(void **state)
{
	(void)state;
	struct t t;
	t_init(&t);
	listen_on(&t, true);
	SSL_CTX *ctx = client_ctx(true);
	t.write_on_connect = true;
	t.expect = "ping\r\n";
	t.answer = "pong\r\n";
	t.close_after = true;
	t_run(&t, "127.0.0.1", ctx);
	assert_int_equal(t.events[CONN_EV_CONNECTED], 1); /* after the handshake */
	assert_int_equal(t.events[CONN_EV_TLS_READY], 0);
	assert_string_equal(t.in.data, "pong\r\n");
	SSL_CTX_free(ctx);
	t_deinit(&t);
}

/* The certificate names 127.0.0.1 only: "localhost" is refused though it
 * is the same address, and a CA we do not trust is refused with verify on. */
static void conn_tls_verification_failures(void **state)
{
	(void)state;
	static const struct {
		const char *host;
		bool trust;
		const char *why;
	} rows[] = {
	    {"localhost", true, "certificate verification failed: "},
	    {"127.0.0.1", false, "certificate verification failed: "},
	};
	for (size_t i = 0; i < ARRAY_SIZE(rows); i++) {
		struct t t;
		t_init(&t);
		listen_on(&t, true);
		struct buf why = BUF_INIT;
		/* Not trusted: verify against the system store, which lacks our CA. */
		starttls_ctx = rows[i].trust ? client_ctx(true)
					     : conn_tls_ctx_new(true, NULL, NULL, NULL, &why);
		assert_non_null(starttls_ctx);
		t_run(&t, rows[i].host, NULL);
		assert_int_equal(t.events[CONN_EV_TLS_READY], 0);
		assert_int_equal(t.events[CONN_EV_ERROR], 1);
		assert_int_equal(t.err_class, CONN_ERR_TLS);
		print_message("%s: %s\n", rows[i].host, t.err);
		assert_non_null(strstr(t.err, rows[i].why));
		SSL_CTX_free(starttls_ctx);
		buf_deinit(&why);
		t_deinit(&t);
	}
}

/* ---- events never come from inside the owner's call ---------------------------------- */

/* Connects to the plain listener and returns with the loop stopped at
 * CONNECTED, so that the test's next call is made from outside the loop. */
static void connect_and_stop(struct t *t)
{
	listen_on(t, false);
	t->stop_on_connect = true;
	t->c = conn_new(&t->loop, conn_cb, t);
	conn_connect(t->c, "127.0.0.1", t->port, 60000, NULL);
	uv_run(&t->loop, UV_RUN_DEFAULT);
	assert_int_equal(t->events[CONN_EV_CONNECTED], 1);
	assert_non_null(t->c);
}

/* The call returned without an event; one loop iteration brings the ERROR. */
static void assert_error_next_iteration(struct t *t, enum conn_error_class cls, const char *why)
{
	assert_int_equal(t->sync_events, 0);
	assert_int_equal(t->events[CONN_EV_ERROR], 0);
	uv_run(&t->loop, UV_RUN_NOWAIT);
	assert_int_equal(t->events[CONN_EV_ERROR], 1);
	assert_int_equal(t->err_class, cls);
	assert_non_null(strstr(t->err, why));
	t_finish(t);
	assert_int_equal(t->sync_events, 0);
}

/* SSL_new fails (no context): conn_start_tls returns first. */
static void conn_start_tls_failure_not_synchronous(void **state)
{
	(void)state;
	struct t t;
	t_init(&t);
	connect_and_stop(&t);
	t.in_call = true;
	conn_start_tls(t.c, NULL);
	t.in_call = false;
	assert_error_next_iteration(&t, CONN_ERR_TLS, "cannot create TLS session");
	t_deinit(&t);
}

/* SSL_write fails (the handshake has not finished): conn_write returns first. */
static void conn_tls_write_failure_not_synchronous(void **state)
{
	(void)state;
	struct t t;
	t_init(&t);
	connect_and_stop(&t);
	SSL_CTX *ctx = client_ctx(true);
	t.in_call = true;
	conn_start_tls(t.c, ctx);
	conn_write(t.c, "ping\r\n", 6);
	t.in_call = false;
	assert_error_next_iteration(&t, CONN_ERR_TLS, "TLS write failed");
	SSL_CTX_free(ctx);
	t_deinit(&t);
}

/* A name libuv refuses before resolving (not valid UTF-8): conn_connect
 * returns first, and the error comes whatever the phase timer says. */
static void conn_resolve_refused_not_synchronous(void **state)
{
	(void)state;
	struct t t;
	t_init(&t);
	listen_on(&t, false); /* unused: CLOSED closes it */
	t.c = conn_new(&t.loop, conn_cb, &t);
	t.in_call = true;
	conn_connect(t.c, "\xff\xfe.example", 25, 60000, NULL);
	conn_set_timeout(t.c, 0);
	t.in_call = false;
	assert_error_next_iteration(&t, CONN_ERR_CONNECT, "cannot resolve ");
	t_deinit(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(conn_tcp_write_read_eof),
	    cmocka_unit_test(conn_connect_refused),
	    cmocka_unit_test(conn_phase_timeout),
	    cmocka_unit_test(conn_starttls_handshake_and_data),
	    cmocka_unit_test(conn_implicit_tls),
	    cmocka_unit_test(conn_tls_verification_failures),
	    cmocka_unit_test(conn_start_tls_failure_not_synchronous),
	    cmocka_unit_test(conn_tls_write_failure_not_synchronous),
	    cmocka_unit_test(conn_resolve_refused_not_synchronous),
	};
	return cmocka_run_group_tests(tests, make_cert, free_cert);
}
