/*
 * Purpose: `pickupctl test-relay`: the daemon's own SMTP engine (smtpc, as
 * a probe that QUITs once set-up is done) against one relay, printing each
 * step with the server's words, the certificate, and at the first failure
 * the failure class and a hint.
 * Owns: its libuv loop, the SSL_CTX, a copy of the relay's settings with
 * the set-up timeouts capped at 60 s.
 * Invariants: no SMTP is spoken here: every byte on the wire is smtpc's, so
 * the check and the daemon take the same path through every server; the
 * secret is read as the daemon reads it (secret_for_session, and smtpc runs
 * password_command) and never printed (the trace hides it); the loop is
 * closed empty.
 */
#include "daemon/pickupctl/testrelay.h"

#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "daemon/smtp/conn.h"
#include "daemon/smtp/secret.h"
#include "daemon/smtp/smtpc.h"

struct tr {
	const struct config_relay *r;
	FILE *out;
	enum smtpc_state state; /* as the trace last told */
	int last_code;		/* of the last reply before QUIT */
	bool ready;		/* set-up passed: the probe reached READY */
	bool closed;
	enum smtpc_class cls;
	enum smtpc_state err_state;
	char *error;
};

static uint64_t cap(uint64_t ms)
{
	return ms == 0 || ms > 60000 ? 60000 : ms;
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

static void say_cert(struct tr *t, struct conn *c)
{
	struct buf info = BUF_INIT;
	conn_describe_cert(c, &info);
	say(t, "cert", "%s", info.data ? info.data : "");
	buf_deinit(&info);
}

static bool auth_state(enum smtpc_state st)
{
	return st >= SMTPC_ST_AUTH && st <= SMTPC_ST_AUTH_XOAUTH2_ERR;
}

/* A state change is a step done: say what it showed. */
static void on_state(struct tr *t, const struct smtpc *s, enum smtpc_state now)
{
	struct conn *c = smtpc_conn(s);
	enum smtpc_state was = t->state;
	t->state = now;
	if (was == SMTPC_ST_CONNECT && now == SMTPC_ST_GREETING && c) {
		say(t, "connect", "ok: %s%s%s", c->peer, c->tls_up ? ", " : "",
		    c->tls_up ? c->tls_info : "");
		if (c->tls_up)
			say_cert(t, c);
	} else if (was == SMTPC_ST_TLS && now == SMTPC_ST_EHLO_TLS && c) {
		say(t, "TLS", "ok: %s", c->tls_info);
		say_cert(t, c);
	} else if (now == SMTPC_ST_HELO) {
		say(t, "EHLO", "refused: the server speaks SMTP without extensions; HELO instead");
	} else if (now == SMTPC_ST_SECRET_CMD) {
		say(t, "secret",
		    auth_state(was) ? "access token refused: running password_command again"
				    : "running password_command");
	} else if (now == SMTPC_ST_READY) {
		t->ready = true;
		if (auth_state(was))
			say(t, "AUTH", "ok");
		else
			say(t, "AUTH", "skipped (no user configured)");
	}
}

static void trace_cb(const struct smtpc *s, const struct smtpc_trace_ev *ev, void *arg)
{
	struct tr *t = arg;
	switch (ev->kind) {
	case SMTPC_TRACE_SENT:
		fprintf(t->out, "  > %s\n", ev->line);
		break;
	case SMTPC_TRACE_REPLY:
		reply_lines(t, ev->reply);
		if (ev->state != SMTPC_ST_QUIT) /* the reply that decided, not QUIT's */
			t->last_code = ev->reply->code;
		break;
	case SMTPC_TRACE_STATE:
		on_state(t, s, ev->state);
		break;
	}
	fflush(t->out);
}

static void session_cb(struct smtpc *s, enum smtpc_event ev, void *arg)
{
	struct tr *t = arg;
	if (ev != SMTPC_EV_CLOSED)
		return; /* a probe reports nothing else */
	t->closed = true;
	t->cls = smtpc_error_class(s);
	t->err_state = smtpc_error_state(s);
	t->error = xstrdup(smtpc_error(s));
}

/* The step a failure belongs to, as the operator knows the steps. */
static const char *step_label(enum smtpc_state st, enum smtpc_class cls)
{
	if (cls == SMTPC_TLS && st != SMTPC_ST_CONNECT && st != SMTPC_ST_TLS)
		return "STARTTLS";
	if (cls == SMTPC_AUTH && st != SMTPC_ST_SECRET_CMD)
		return "AUTH";
	switch (st) {
	case SMTPC_ST_CONNECT:
		return cls == SMTPC_TLS ? "TLS" : "connect";
	case SMTPC_ST_GREETING:
		return "banner";
	case SMTPC_ST_EHLO:
	case SMTPC_ST_EHLO_TLS:
		return "EHLO";
	case SMTPC_ST_HELO:
		return "HELO";
	case SMTPC_ST_TLS:
		return "TLS";
	case SMTPC_ST_SECRET_CMD:
		return "secret";
	case SMTPC_ST_QUIT:
		return "QUIT";
	default:
		return auth_state(st) ? "AUTH" : "session";
	}
}

static const char *tls_hint(const struct tr *t)
{
	const char *why = t->error;
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

/* What the operator may do about the failure; NULL when the server's words
 * say it all. */
static const char *hint(const struct tr *t)
{
	bool starttls = t->r->tls == TLS_MODE_STARTTLS;
	switch (t->err_state) {
	case SMTPC_ST_CONNECT:
	case SMTPC_ST_TLS:
		return t->cls == SMTPC_TLS ? tls_hint(t) : NULL;
	case SMTPC_ST_GREETING:
		/* A refusing reply (a 5xx one is classed as a connection
		 * failure), not a timeout or a closed connection. */
		if (t->cls == SMTPC_TEMP || strncmp(t->error, "server greeting:", 16) == 0)
			return "the server refuses connections now";
		if (starttls)
			return "if the port expects TLS from the first byte (465), use tls = "
			       "implicit";
		return NULL;
	case SMTPC_ST_EHLO:
	case SMTPC_ST_EHLO_TLS:
		if (t->cls == SMTPC_TLS)
			return "TLS is required (tls = starttls) and this server does not offer "
			       "it; if the port expects TLS from the first byte, use tls = "
			       "implicit";
		if (t->cls == SMTPC_AUTH)
			return "credentials are never sent without TLS unless allow_plaintext_auth "
			       "= yes";
		return NULL;
	case SMTPC_ST_STARTTLS:
		if (strstr(t->error, "injection"))
			return "something between pickupd and the server injects data (a broken "
			       "proxy or an attack)";
		return "the server refused to start TLS; mail would wait, never go in plaintext";
	case SMTPC_ST_SECRET_CMD:
		return "password_command must print the secret or access token on one line and "
		       "exit 0 within command_timeout";
	default:
		break;
	}
	if (t->cls != SMTPC_AUTH)
		return NULL;
	if (strstr(t->error, "no usable AUTH mechanism"))
		return "the server offers no AUTH mechanism pickupd supports (PLAIN, LOGIN, "
		       "XOAUTH2); set auth = in the relay section if it hides one";
	if (t->last_code >= 500)
		return "credentials refused: check user and the secret (providers such as Gmail, "
		       "QQ and 163 want an app password or authorization code, not the account "
		       "password; XOAUTH2 wants a fresh access token from password_command)";
	return NULL;
}

/* Prints the outcome; 0 when set-up passed, as the daemon would go on to send. */
static int report(struct tr *t)
{
	if (t->ready) {
		if (t->cls != SMTPC_OK)
			say(t, "QUIT", "%s (after every step passed)", t->error);
		say(t, "result", "ok: every step passed");
		return 0;
	}
	if (!t->closed || t->cls == SMTPC_OK) {
		say(t, "result", "FAILED: session ended early");
		return 1;
	}
	fprintf(t->out, "%-9s FAILED: %s\n", step_label(t->err_state, t->cls), t->error);
	const char *h = hint(t);
	if (h)
		fprintf(t->out, "hint:     %s\n", h);
	say(t, "result", "FAILED (%s)", smtpc_class_names[t->cls]);
	return 1;
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
	fprintf(out, "relay %s: %s port %u, tls = %s%s%s\n", r->name, r->host, r->port,
		r->tls == TLS_MODE_STARTTLS   ? "starttls"
		: r->tls == TLS_MODE_IMPLICIT ? "implicit"
					      : "none",
		r->user ? ", user " : "", r->user ? r->user : "");
	/* Set up as relay.c does for a session: the same TLS context and secret. */
	struct smtpc_params p;
	memset(&p, 0, sizeof(p));
	struct buf why = BUF_INIT;
	if (r->tls != TLS_MODE_NONE) {
		p.ssl_ctx =
		    conn_tls_ctx_new(r->tls_verify, r->ca_file, r->cert_file, r->key_file, &why);
		if (p.ssl_ctx == NULL) {
			fprintf(out, "%-9s FAILED: %s\n", "TLS", why.data);
			buf_deinit(&why);
			return 1;
		}
	}
	if (r->user && *r->user) {
		p.secret = secret_for_session(r, &why);
		if (p.secret == NULL) {
			fprintf(out, "%-9s FAILED: %s\n", "secret", why.data);
			buf_deinit(&why);
			if (p.ssl_ctx)
				SSL_CTX_free(p.ssl_ctx);
			return 1;
		}
	}
	buf_deinit(&why);
	/* An operator waits at the terminal: no step longer than a minute. */
	struct config_relay capped = *r;
	capped.connect_timeout_ms = cap(r->connect_timeout_ms);
	capped.greeting_timeout_ms = cap(r->greeting_timeout_ms);
	capped.command_timeout_ms = cap(r->command_timeout_ms);
	p.relay = &capped;
	p.helo_name = cfg->general.hostname ? cfg->general.hostname : "localhost";
	p.trace = trace_cb;
	p.probe = true;

	struct tr t;
	memset(&t, 0, sizeof(t));
	t.r = r;
	t.out = out;
	t.state = SMTPC_ST_CONNECT;
	uv_loop_t loop;
	uv_loop_init(&loop);
	smtpc_new(&loop, &p, session_cb, &t);
	uv_run(&loop, UV_RUN_DEFAULT);
	int closed = uv_loop_close(&loop);
	if (p.ssl_ctx)
		SSL_CTX_free(p.ssl_ctx);
	int rc = report(&t);
	free(t.error);
	return closed == 0 ? rc : 1;
}
