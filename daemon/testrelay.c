/*
 * Purpose: `pickupctl test-relay`: a step-by-step check of one relay with
 * the daemon's own transport (conn.c) and reply parser, printing the
 * server's words at each step and a hint at the first failure.
 * Owns: its libuv loop, the conn, the SSL_CTX, the secret (wiped after use).
 * Invariants: secrets are never printed (AUTH lines are shown as hidden);
 * plaintext buffered after the STARTTLS 220 fails the check, as in smtpc;
 * every step is bounded by the relay's timeouts (capped at 60 s).
 */
#include "daemon/testrelay.h"
#include "daemon/secret.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "common/smtp_reply.h"
#include "daemon/conn.h"

enum step {
	S_CONNECT,
	S_BANNER,
	S_EHLO,
	S_STARTTLS,
	S_TLS,
	S_EHLO2,
	S_AUTH,
	S_AUTH_LOGIN_USER,
	S_AUTH_LOGIN_PASS,
	S_AUTH_XOAUTH2_ERR,
	S_QUIT,
	S_DONE
};

static const char *const step_names[] = {"connect", "banner", "EHLO", "STARTTLS", "TLS",  "EHLO",
					 "AUTH",    "AUTH",   "AUTH", "AUTH",	  "QUIT", "done"};

struct tr {
	const struct config *cfg;
	const struct config_relay *r;
	FILE *out;
	struct conn *conn;
	SSL_CTX *ctx;
	struct smtp_reply_parser parser;
	struct smtp_caps caps;
	enum step step;
	char *secret;
	unsigned mech;
	int rc;
	bool failed;
	bool closed;
};

static uint64_t cap(uint64_t ms)
{
	return ms == 0 || ms > 60000 ? 60000 : ms;
}

static void wipe(struct tr *t)
{
	if (t->secret) {
		OPENSSL_cleanse(t->secret, strlen(t->secret));
		free(t->secret);
		t->secret = NULL;
	}
}

static char *b64(const void *data, size_t len)
{
	char *o = xmalloc(4 * ((len + 2) / 3) + 1);
	EVP_EncodeBlock((unsigned char *)o, data, (int)len);
	return o;
}

static void finish(struct tr *t)
{
	conn_close(t->conn);
}

/* Prints the failure of the current step and a hint, then closes. */
static void failf(struct tr *t, const char *hint, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void failf(struct tr *t, const char *hint, const char *fmt, ...)
{
	if (t->failed)
		return;
	t->failed = true;
	t->rc = 1;
	va_list ap;
	va_start(ap, fmt);
	fprintf(t->out, "%-9s FAILED: ", step_names[t->step]);
	vfprintf(t->out, fmt, ap);
	fputc('\n', t->out);
	va_end(ap);
	if (hint)
		fprintf(t->out, "hint:     %s\n", hint);
	finish(t);
}

static void say(struct tr *t, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void say(struct tr *t, const char *what, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(t->out, "%-9s ", what);
	vfprintf(t->out, fmt, ap);
	fputc('\n', t->out);
	va_end(ap);
	fflush(t->out);
}

static void send_line(struct tr *t, bool hidden, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void send_line(struct tr *t, bool hidden, const char *fmt, ...)
{
	struct buf b = BUF_INIT;
	va_list ap;
	va_start(ap, fmt);
	buf_vprintf(&b, fmt, ap);
	va_end(ap);
	if (strpbrk(b.data, "\r\n") == NULL) {
		fprintf(t->out, "  > %s\n", hidden ? "(credentials hidden)" : b.data);
		buf_puts(&b, "\r\n");
		conn_write(t->conn, b.data, b.len);
	}
	OPENSSL_cleanse(b.data, b.len);
	buf_deinit(&b);
}

static void reply_lines(struct tr *t, const struct smtp_reply *r)
{
	const char *p = r->text;
	for (size_t i = 0; i < r->n_lines; i++) {
		const char *nl = strchr(p, '\n');
		int n = nl ? (int)(nl - p) : (int)strlen(p);
		fprintf(t->out, "  < %d%c%.*s\n", r->code, i + 1 < r->n_lines ? '-' : ' ', n, p);
		p = nl ? nl + 1 : p + n;
	}
}

static void go(struct tr *t, enum step s)
{
	t->step = s;
	conn_set_timeout(t->conn,
			 cap(s == S_BANNER ? t->r->greeting_timeout_ms : t->r->command_timeout_ms));
	switch (s) {
	case S_EHLO:
	case S_EHLO2:
		send_line(t, false, "EHLO %s",
			  t->cfg->general.hostname ? t->cfg->general.hostname : "localhost");
		break;
	case S_STARTTLS:
		send_line(t, false, "STARTTLS");
		break;
	case S_QUIT:
		send_line(t, false, "QUIT");
		break;
	case S_AUTH: {
		const char *user = t->r->user;
		const char *pw = t->secret ? t->secret : "";
		unsigned m = t->r->auth == AUTH_MODE_PLAIN	? SMTP_AUTH_PLAIN
			     : t->r->auth == AUTH_MODE_LOGIN	? SMTP_AUTH_LOGIN
			     : t->r->auth == AUTH_MODE_XOAUTH2	? SMTP_AUTH_XOAUTH2
			     : (t->caps.auth & SMTP_AUTH_PLAIN) ? SMTP_AUTH_PLAIN
			     : (t->caps.auth & SMTP_AUTH_LOGIN) ? SMTP_AUTH_LOGIN
								: 0;
		t->mech = m;
		if (m == 0) {
			failf(t,
			      "the server offers no AUTH mechanism pickupd supports (PLAIN, LOGIN, "
			      "XOAUTH2); set auth = in the relay section if it hides one",
			      "no usable AUTH mechanism offered");
			return;
		}
		if (m == SMTP_AUTH_PLAIN) {
			struct buf raw = BUF_INIT;
			buf_append(&raw, "", 1);
			buf_puts(&raw, user);
			buf_append(&raw, "", 1);
			buf_puts(&raw, pw);
			char *enc = b64(raw.data, raw.len);
			send_line(t, true, "AUTH PLAIN %s", enc);
			OPENSSL_cleanse(raw.data, raw.len);
			OPENSSL_cleanse(enc, strlen(enc));
			buf_deinit(&raw);
			free(enc);
		} else if (m == SMTP_AUTH_LOGIN) {
			send_line(t, false, "AUTH LOGIN");
		} else {
			struct buf raw = BUF_INIT;
			buf_printf(&raw, "user=%s\001auth=Bearer %s\001\001", user, pw);
			char *enc = b64(raw.data, raw.len);
			send_line(t, true, "AUTH XOAUTH2 %s", enc);
			OPENSSL_cleanse(raw.data, raw.len);
			OPENSSL_cleanse(enc, strlen(enc));
			buf_deinit(&raw);
			free(enc);
		}
		break;
	}
	default:
		break;
	}
}

static const char *auth_hint =
    "credentials refused: check user and the secret (providers such as Gmail, QQ and 163 "
    "want an app password or authorization code, not the account password; XOAUTH2 wants "
    "a fresh access token from password_command)";

static void after_ehlo(struct tr *t)
{
	bool tls = t->conn->tls_up;
	if (t->r->tls == TLS_MODE_STARTTLS && !tls) {
		if (!t->caps.starttls) {
			failf(t,
			      "TLS is required (tls = starttls) and this server does not offer it; "
			      "if the port expects TLS from the first byte, use tls = implicit",
			      "the server does not offer STARTTLS");
			return;
		}
		go(t, S_STARTTLS);
		return;
	}
	if (t->r->user && *t->r->user) {
		if (!tls && !t->r->allow_plaintext_auth) {
			failf(t,
			      "credentials are never sent without TLS unless allow_plaintext_auth "
			      "= yes",
			      "refusing to authenticate without TLS");
			return;
		}
		go(t, S_AUTH);
		return;
	}
	say(t, "AUTH", "skipped (no user configured)");
	go(t, S_QUIT);
}

static void on_reply(struct tr *t, const struct smtp_reply *r)
{
	reply_lines(t, r);
	switch (t->step) {
	case S_BANNER:
		if (r->code != 220) {
			failf(t,
			      r->code == 421 || r->code == 554
				  ? "the server refuses connections now"
				  : NULL,
			      "greeting %d", r->code);
			return;
		}
		go(t, S_EHLO);
		return;
	case S_EHLO:
	case S_EHLO2:
		if (r->code != 250) {
			failf(t, NULL, "EHLO refused (%d)", r->code);
			return;
		}
		memset(&t->caps, 0, sizeof(t->caps));
		smtp_caps_parse(r, &t->caps);
		after_ehlo(t);
		return;
	case S_STARTTLS:
		if (r->code != 220) {
			failf(t,
			      "the server refused to start TLS; mail would wait, never go in "
			      "plaintext",
			      "STARTTLS refused (%d)", r->code);
			return;
		}
		if (t->conn->in.len > 0 || smtp_reply_parser_pending(&t->parser)) {
			failf(t,
			      "something between pickupd and the server injects data (a broken "
			      "proxy or an attack)",
			      "the server sent data after its STARTTLS reply");
			return;
		}
		t->step = S_TLS;
		conn_set_timeout(t->conn, cap(t->r->command_timeout_ms));
		conn_start_tls(t->conn, t->ctx);
		return;
	case S_AUTH:
		if (r->code == 235) {
			wipe(t);
			say(t, "AUTH", "ok");
			go(t, S_QUIT);
			return;
		}
		if (r->code == 334 && t->mech == SMTP_AUTH_LOGIN) {
			t->step = S_AUTH_LOGIN_USER;
			char *enc = b64(t->r->user, strlen(t->r->user));
			send_line(t, true, "%s", enc);
			free(enc);
			return;
		}
		if (r->code == 334) {
			t->step = S_AUTH_XOAUTH2_ERR;
			send_line(t, false, "%s", "");
			return;
		}
		failf(t, r->code == 535 || r->code == 534 ? auth_hint : NULL, "AUTH refused (%d)",
		      r->code);
		return;
	case S_AUTH_LOGIN_USER: {
		if (r->code != 334) {
			failf(t, auth_hint, "AUTH LOGIN refused (%d)", r->code);
			return;
		}
		t->step = S_AUTH_LOGIN_PASS;
		const char *pw = t->secret ? t->secret : "";
		char *enc = b64(pw, strlen(pw));
		send_line(t, true, "%s", enc);
		OPENSSL_cleanse(enc, strlen(enc));
		free(enc);
		return;
	}
	case S_AUTH_LOGIN_PASS:
	case S_AUTH_XOAUTH2_ERR:
		if (r->code == 235) {
			wipe(t);
			say(t, "AUTH", "ok");
			go(t, S_QUIT);
			return;
		}
		failf(t, auth_hint, "AUTH refused (%d)", r->code);
		return;
	case S_QUIT:
		t->step = S_DONE;
		say(t, "result", t->rc == 0 ? "ok: every step passed" : "failed");
		finish(t);
		return;
	default:
		failf(t, NULL, "unexpected reply %d", r->code);
		return;
	}
}

static void on_data(struct tr *t)
{
	while (!t->failed && t->step != S_DONE && t->conn->in.len > 0) {
		struct smtp_reply r;
		size_t used = 0;
		const char *err = NULL;
		int rc = smtp_reply_parse(&t->parser, t->conn->in.data, t->conn->in.len, &used, &r,
					  &err);
		buf_consume(&t->conn->in, used);
		if (rc < 0) {
			bool banner = t->step == S_BANNER;
			failf(
			    t,
			    banner && t->r->tls == TLS_MODE_STARTTLS
				? "this does not look like SMTP; if the port expects TLS from the "
				  "first byte (465), use tls = implicit"
				: NULL,
			    "malformed reply: %s", err ? err : "?");
			return;
		}
		if (rc == 0)
			return;
		on_reply(t, &r);
		smtp_reply_deinit(&r);
		if (t->step == S_TLS)
			return;
	}
}

static const char *tls_hint(const struct tr *t, const char *why)
{
	if (strstr(why, "mismatch"))
		return "name mismatch: the certificate does not name the configured host; set host "
		       "to a name the certificate lists (not an alias or an address)";
	if (strstr(why, "expired"))
		return "the server's certificate has expired";
	if (strstr(why, "self-signed") || strstr(why, "self signed") ||
	    strstr(why, "unable to get local issuer"))
		return "the certificate is not signed by a trusted CA: set ca_file to the CA that "
		       "signed it";
	if (t->r->tls == TLS_MODE_IMPLICIT &&
	    (strstr(why, "wrong version number") || strstr(why, "packet length") ||
	     strstr(why, "record layer") || strstr(why, "closed") || strstr(why, "unexpected")))
		return "the server does not speak TLS on this port; if it sends a plaintext banner "
		       "(587, 25), use tls = starttls";
	return NULL;
}

static void conn_cb(struct conn *c, enum conn_event ev, void *arg)
{
	struct tr *t = arg;
	struct buf info = BUF_INIT;
	switch (ev) {
	case CONN_EV_CONNECTED:
		say(t, "connect", "ok: %s%s%s", c->peer, c->tls_up ? ", " : "",
		    c->tls_up ? c->tls_info : "");
		if (c->tls_up) {
			conn_describe_cert(c, &info);
			say(t, "cert", "%s", info.data);
		}
		go(t, S_BANNER);
		break;
	case CONN_EV_TLS_READY:
		conn_describe_cert(c, &info);
		say(t, "TLS", "ok: %s", c->tls_info);
		say(t, "cert", "%s", info.data);
		go(t, S_EHLO2);
		break;
	case CONN_EV_DATA:
		on_data(t);
		break;
	case CONN_EV_DRAINED:
		break;
	case CONN_EV_TIMEOUT:
		failf(t,
		      t->step == S_BANNER && t->r->tls == TLS_MODE_STARTTLS
			  ? "the server sent nothing: if the port expects TLS from the first byte "
			    "(465), use tls = implicit"
			  : NULL,
		      "timeout: no answer from the server");
		break;
	case CONN_EV_EOF:
		failf(t,
		      t->step == S_BANNER && t->r->tls == TLS_MODE_STARTTLS
			  ? "if the port expects TLS from the first byte (465), use tls = implicit"
			  : NULL,
		      "connection closed by the server");
		break;
	case CONN_EV_ERROR: {
		const char *why = c->error.len ? c->error.data : "connection error";
		if (t->step == S_CONNECT && c->error_class == CONN_ERR_TLS)
			t->step = S_TLS;
		failf(t, tls_hint(t, why), "%s", why);
		break;
	}
	case CONN_EV_CLOSED:
		t->closed = true;
		break;
	}
	buf_deinit(&info);
}

/* The secret as the daemon would get it; password_command runs here
 * synchronously (a command-line tool, not the daemon's loop). */
static char *get_secret(const struct config_relay *r, struct buf *why)
{
	if (r->password_command && *r->password_command) {
		FILE *p = popen(r->password_command, "r");
		if (p == NULL) {
			buf_printf(why, "cannot run password_command");
			return NULL;
		}
		char tmp[4096];
		size_t n = fread(tmp, 1, sizeof(tmp) - 1, p);
		int st = pclose(p);
		while (n > 0 && (tmp[n - 1] == '\n' || tmp[n - 1] == '\r'))
			n--;
		char *s = st == 0 && n > 0 ? xstrndup(tmp, n) : NULL;
		OPENSSL_cleanse(tmp, sizeof(tmp));
		if (s == NULL)
			buf_printf(why, "password_command failed (status %d)", st);
		return s;
	}
	return secret_read_file(r, why);
}

int testrelay_run(const struct config *cfg, const char *relay_name, FILE *out)
{
	const struct config_relay *r = relay_name      ? config_find_relay(cfg, relay_name)
				       : cfg->n_relays ? &cfg->relays[0]
						       : NULL;
	if (r == NULL) {
		fprintf(out, "no relay %s in the configuration\n", relay_name ? relay_name : "");
		return 2;
	}
	struct tr t;
	memset(&t, 0, sizeof(t));
	t.cfg = cfg;
	t.r = r;
	t.out = out;
	fprintf(out, "relay %s: %s port %u, tls = %s%s%s\n", r->name, r->host, r->port,
		r->tls == TLS_MODE_STARTTLS   ? "starttls"
		: r->tls == TLS_MODE_IMPLICIT ? "implicit"
					      : "none",
		r->user ? ", user " : "", r->user ? r->user : "");
	struct buf why = BUF_INIT;
	if (r->tls != TLS_MODE_NONE) {
		t.ctx =
		    conn_tls_ctx_new(r->tls_verify, r->ca_file, r->cert_file, r->key_file, &why);
		if (t.ctx == NULL) {
			fprintf(out, "%-9s FAILED: %s\n", "TLS", why.data);
			buf_deinit(&why);
			return 1;
		}
	}
	if (r->user && *r->user) {
		t.secret = get_secret(r, &why);
		if (t.secret == NULL) {
			fprintf(out, "%-9s FAILED: %s\n", "secret", why.data);
			buf_deinit(&why);
			if (t.ctx)
				SSL_CTX_free(t.ctx);
			return 1;
		}
	}
	buf_deinit(&why);
	uv_loop_t loop;
	uv_loop_init(&loop);
	smtp_reply_parser_init(&t.parser);
	t.conn = conn_new(&loop, conn_cb, &t);
	t.step = S_CONNECT;
	conn_connect(t.conn, r->host, r->port, cap(r->connect_timeout_ms),
		     r->tls == TLS_MODE_IMPLICIT ? t.ctx : NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	smtp_reply_parser_deinit(&t.parser);
	wipe(&t);
	if (t.ctx)
		SSL_CTX_free(t.ctx);
	if (!t.failed && t.step != S_DONE) {
		fprintf(out, "result    FAILED: session ended early\n");
		t.rc = 1;
	}
	return t.rc;
}
