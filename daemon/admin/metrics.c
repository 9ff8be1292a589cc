/*
 * Purpose: the Prometheus endpoint (see metrics.h): a tiny HTTP/1.0 server
 * on the loop, one request per connection, answered and closed.
 * Owns: the listener (listener.c: the uv_tcp_t, the connections, the sweep
 * that drops slow clients), each connection's mclient and its scrape jobs
 * (which count the state directories, badmail's entries and bytes, and
 * each pickup folder's stuck files, read-only, with the configuration in
 * force when the scrape began).
 * Invariants: a connection is held while its scrape job is in flight, so it
 * is closed and freed only after the job; the response is built on the loop
 * from counters the loop owns plus the directory counts the job made.
 */
#include "daemon/admin/metrics.h"

#include <errno.h>
#include <netdb.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "daemon/delivery/bounce.h"
#include "daemon/queue/ctl_spool.h"
#include "daemon/admin/listener.h"
#include "daemon/core/pickupd.h"
#include "daemon/delivery/relay.h"

#define METRICS_MAX_REQUEST	  4096
#define METRICS_CLIENT_TIMEOUT_MS 10000
#define METRICS_MAX_CLIENTS	  64
#define METRICS_MAX_RELAYS	  64

/* The metrics' data of one connection (lconn_data). */
struct mclient {
	struct metrics *m;
	struct lconn *conn;
};

struct metrics {
	struct pickupd *pd;
	struct listener *listener;
	pickupd_closed_cb closed_cb; /* metrics_close's, until it is called */
	void *closed_arg;
};

/* A scrape: counts the state directories on the thread pool, for the
 * [pickup] folders of the configuration in force then (job.cfg). */
struct scrape {
	struct job job; /* first */
	struct mclient *cl;
	size_t counts[SPOOL_N_STATES];
	bool counted[SPOOL_N_STATES];
	int64_t oldest_ms; /* arrival encoded in the oldest queue/deferred ID; 0 = none */
	bool badmail_counted;
	size_t badmail_entries;
	uint64_t badmail_bytes;
	struct ctl_stuck *stuck; /* one per cfg->pickups */
};

int metrics_addrs(const char *listen, struct sockaddr_storage *v, size_t max, struct buf *errors)
{
	struct config_listen l;
	const char *expected;
	size_t n = 0;
	memset(v, 0, max * sizeof(*v));
	if (config_parse_listen(listen, &l, &expected) < 0) {
		buf_printf(errors, "[metrics] listen = %s: expected %s\n", listen, expected);
		return -1;
	}
	switch (l.kind) {
	case LISTEN_IPV4:
		if (uv_ip4_addr(l.host, (int)l.port, (struct sockaddr_in *)&v[n]) == 0)
			n++;
		break;
	case LISTEN_IPV6:
		if (uv_ip6_addr(l.host, (int)l.port, (struct sockaddr_in6 *)&v[n]) == 0)
			n++;
		break;
	case LISTEN_ALL:
		/* [::] takes IPv4 too (dual stack); 0.0.0.0 where IPv6 is off. */
		uv_ip6_addr("::", (int)l.port, (struct sockaddr_in6 *)&v[n++]);
		if (n < max)
			uv_ip4_addr("0.0.0.0", (int)l.port, (struct sockaddr_in *)&v[n++]);
		break;
	case LISTEN_NAME: {
		/* The first address, as Go's and Python's listeners take it. */
		struct addrinfo hints, *res = NULL;
		memset(&hints, 0, sizeof(hints));
		hints.ai_family = AF_UNSPEC;
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_ADDRCONFIG;
		int r = getaddrinfo(l.host, NULL, &hints, &res);
		if (r != 0 || res == NULL) {
			buf_printf(errors, "[metrics] listen = %s: cannot resolve %s: %s\n", listen,
				   l.host, r ? gai_strerror(r) : "no address");
			return -1;
		}
		memcpy(&v[n], res->ai_addr, res->ai_addrlen);
		if (v[n].ss_family == AF_INET)
			((struct sockaddr_in *)&v[n])->sin_port = htons((uint16_t)l.port);
		else
			((struct sockaddr_in6 *)&v[n])->sin6_port = htons((uint16_t)l.port);
		n++;
		freeaddrinfo(res);
		break;
	}
	}
	if (n == 0) {
		buf_printf(errors, "[metrics] listen = %s: not an address\n", listen);
		return -1;
	}
	return (int)n;
}

/* ---- clients --------------------------------------------------------------------------- */

static void respond(struct mclient *cl, const char *status, const char *body, size_t body_len)
{
	struct buf b = BUF_INIT;
	buf_printf(&b,
		   "HTTP/1.0 %s\r\n"
		   "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
		   "Content-Length: %zu\r\n"
		   "Connection: close\r\n"
		   "\r\n",
		   status, body_len);
	buf_append(&b, body, body_len);
	lconn_write_close(cl->conn, b.data, b.len);
	buf_deinit(&b);
}

/* A Prometheus label value: backslash, double quote and newline escaped. */
static void put_label(struct buf *b, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			buf_printf(b, "\\%c", *v);
		else if (*v == '\n')
			buf_puts(b, "\\n");
		else
			buf_putc(b, *v);
	}
}

static void metric_head(struct buf *b, const char *name, const char *type, const char *help)
{
	buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The plain counters of struct pickupd_stats. */
static const struct {
	const char *name;
	const char *help;
	size_t off;
} counters[] = {
    {"pickupd_messages_received_total", "Messages queued from a pickup folder.",
     offsetof(struct pickupd_stats, received)},
    {"pickupd_messages_refused_total", "Pickup files refused and moved to badmail.",
     offsetof(struct pickupd_stats, refused)},
    {"pickupd_recipients_delivered_total",
     "Recipients of writers' mail accepted by a relay (notifications apart).",
     offsetof(struct pickupd_stats, delivered)},
    {"pickupd_recipients_deferred_total",
     "Recipient deliveries of writers' mail deferred (each attempt).",
     offsetof(struct pickupd_stats, deferred)},
    {"pickupd_recipients_bounced_total", "Recipients of writers' mail failed for good.",
     offsetof(struct pickupd_stats, bounced)},
    {"pickupd_dsn_sent_total", "Delivery status notifications accepted by a relay.",
     offsetof(struct pickupd_stats, dsn_sent)},
    {"pickupd_dsn_deferred_total", "Delivery status notification deferrals.",
     offsetof(struct pickupd_stats, dsn_deferred)},
    {"pickupd_dsn_failed_total",
     "Delivery status notifications failed for good (moved to badmail).",
     offsetof(struct pickupd_stats, dsn_failed)},
    {"pickupd_sent_bytes_total",
     "Message bytes written to relays after DATA, failed transactions included.",
     offsetof(struct pickupd_stats, sent_bytes)},
    {"pickupd_sessions_opened_total", "SMTP sessions started.",
     offsetof(struct pickupd_stats, sessions_opened)},
    {"pickupd_badmail_expired_total", "Badmail entries removed by [badmail] keep.",
     offsetof(struct pickupd_stats, badmail_expired)},
};

/* One line of a metric with a relay label (and maybe one more label). */
static void relay_line(struct buf *b, const char *name, const char *relay, const char *label,
		       const char *value)
{
	buf_printf(b, "%s{relay=\"", name);
	put_label(b, relay);
	if (label)
		buf_printf(b, "\",%s=\"%s", label, value);
	buf_puts(b, "\"} ");
}

/* Names follow Prometheus' conventions: pickupd_, what is counted, the unit
 * (_seconds, _bytes), and _total for counters. config/grafana and
 * config/prometheus use them; test_metrics.py checks that every name they use
 * is served. */
static void build_body(struct metrics *m, const struct scrape *sc, struct buf *b)
{
	struct pickupd *pd = m->pd;
	const struct pickupd_stats *st = &pd->stats;
	int64_t now = pickupd_now_ms();

	metric_head(b, "pickupd_up", "gauge", "1 while pickupd runs.");
	buf_puts(b, "pickupd_up 1\n");
	metric_head(b, "pickupd_queue_messages", "gauge", "Messages per spool state directory.");
	for (int s = 0; s < SPOOL_N_STATES; s++)
		if (sc->counted[s])
			buf_printf(b, "pickupd_queue_messages{state=\"%s\"} %zu\n",
				   spool_state_names[s], sc->counts[s]);
	metric_head(b, "pickupd_queue_oldest_message_age_seconds", "gauge",
		    "Age of the oldest message in queue or deferred (0 when none).");
	buf_printf(b, "pickupd_queue_oldest_message_age_seconds %.3f\n",
		   sc->oldest_ms && now > sc->oldest_ms ? (double)(now - sc->oldest_ms) / 1000.0
							: 0.0);
	for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++) {
		metric_head(b, counters[i].name, "counter", counters[i].help);
		buf_printf(
		    b, "%s %llu\n", counters[i].name,
		    (unsigned long long)*(const uint64_t *)((const char *)st + counters[i].off));
	}
	metric_head(b, "pickupd_dsn_created_total", "counter",
		    "Delivery status notifications queued to senders, by type.");
	buf_printf(b, "pickupd_dsn_created_total{type=\"failure\"} %llu\n",
		   (unsigned long long)st->dsn_created[BOUNCE_FAILED]);
	buf_printf(b, "pickupd_dsn_created_total{type=\"delay\"} %llu\n",
		   (unsigned long long)st->dsn_created[BOUNCE_DELAYED]);
	metric_head(b, "pickupd_delivery_delay_seconds", "histogram",
		    "Arrival to acceptance by a relay, per recipient of writers' mail.");
	uint64_t cum = 0;
	for (int i = 0; i < PICKUPD_DELAY_BUCKETS; i++) {
		cum += st->delay_count[i];
		buf_printf(b, "pickupd_delivery_delay_seconds_bucket{le=\"%g\"} %llu\n",
			   pickupd_delay_buckets[i], (unsigned long long)cum);
	}
	cum += st->delay_over;
	buf_printf(b, "pickupd_delivery_delay_seconds_bucket{le=\"+Inf\"} %llu\n",
		   (unsigned long long)cum);
	buf_printf(b, "pickupd_delivery_delay_seconds_sum %.3f\n", st->delay_sum);
	buf_printf(b, "pickupd_delivery_delay_seconds_count %llu\n", (unsigned long long)cum);

	if (sc->badmail_counted) {
		metric_head(b, "pickupd_badmail_entries", "gauge",
			    "Entries in badmail/ (failed for good or refused at pickup).");
		buf_printf(b, "pickupd_badmail_entries %zu\n", sc->badmail_entries);
		metric_head(b, "pickupd_badmail_bytes", "gauge",
			    "Content bytes of the entries in badmail/.");
		buf_printf(b, "pickupd_badmail_bytes %llu\n",
			   (unsigned long long)sc->badmail_bytes);
	}
	metric_head(b, "pickupd_pickup_stuck_files", "gauge",
		    "Files that stay in a pickup folder, by reason (see pickupctl status).");
	for (size_t i = 0; sc->stuck && i < sc->job.cfg->n_pickups; i++) {
		for (int r = 0; r < STUCK_N; r++) {
			buf_puts(b, "pickupd_pickup_stuck_files{pickup=\"");
			put_label(b, sc->job.cfg->pickups[i].name);
			buf_printf(b, "\",reason=\"%s\"} %zu\n", ctl_stuck_names[r],
				   sc->stuck[i].count[r]);
		}
	}

	struct relay_info info[METRICS_MAX_RELAYS];
	size_t n = relay_pool_info(pd->pool, info, METRICS_MAX_RELAYS);
	unsigned sessions = 0;
	if (n > METRICS_MAX_RELAYS)
		n = METRICS_MAX_RELAYS;
	for (size_t i = 0; i < n; i++)
		sessions += info[i].sessions;
	metric_head(b, "pickupd_sessions_open", "gauge", "SMTP sessions open or opening.");
	buf_printf(b, "pickupd_sessions_open %u\n", sessions);
	metric_head(b, "pickupd_relay_sessions", "gauge", "SMTP sessions per relay.");
	for (size_t i = 0; i < n; i++) {
		relay_line(b, "pickupd_relay_sessions", info[i].name, NULL, NULL);
		buf_printf(b, "%u\n", info[i].sessions);
	}
	metric_head(b, "pickupd_relay_paused", "gauge",
		    "1 while a relay is paused after failures.");
	for (size_t i = 0; i < n; i++) {
		relay_line(b, "pickupd_relay_paused", info[i].name, NULL, NULL);
		buf_printf(b, "%d\n", info[i].paused_until_ms > now ? 1 : 0);
	}
	metric_head(b, "pickupd_relay_concurrency_limit", "gauge",
		    "Sessions a relay may have now: max_sessions, or fewer while its server "
		    "refuses extra connections.");
	for (size_t i = 0; i < n; i++) {
		relay_line(b, "pickupd_relay_concurrency_limit", info[i].name, NULL, NULL);
		buf_printf(b, "%u\n", info[i].limit);
	}
	metric_head(b, "pickupd_relay_session_failures_total", "counter",
		    "SMTP sessions that failed before they could send, by relay and class "
		    "(connection, tls, protocol, auth, temporary, permanent).");
	for (size_t i = 0; i < n; i++)
		for (int c = SMTPC_OK + 1; c < RELAY_N_CLASSES; c++) {
			relay_line(b, "pickupd_relay_session_failures_total", info[i].name, "class",
				   smtpc_class_names[c]);
			buf_printf(b, "%llu\n", (unsigned long long)info[i].setup_failures[c]);
		}
}

/* The arrival time a queue ID encodes (its first 12 hex digits, ms). */
static int64_t id_ms(const char *id)
{
	int64_t v = 0;
	for (int i = 0; i < 12; i++) {
		char c = id[i];
		v = v * 16 + (c <= '9' ? c - '0' : c - 'A' + 10);
	}
	return v;
}

/* Badmail entries and their bytes; files stuck in each pickup folder. */
static void scrape_operator(struct scrape *sc, struct spool *sp)
{
	struct ctl_badmail *v;
	size_t n;
	if (ctl_spool_badmail(sp, &v, &n) == 0) {
		sc->badmail_counted = true;
		sc->badmail_entries = n;
		for (size_t i = 0; i < n; i++)
			sc->badmail_bytes += v[i].bytes;
		free(v);
	}
	int64_t now = pickupd_now_ms();
	sc->stuck =
	    xcalloc(sc->job.cfg->n_pickups ? sc->job.cfg->n_pickups : 1, sizeof(*sc->stuck));
	for (size_t i = 0; i < sc->job.cfg->n_pickups; i++)
		ctl_spool_stuck(&sc->job.cfg->pickups[i], now, &sc->stuck[i]);
}

static void scrape_fn(struct job *j)
{
	struct scrape *sc = (struct scrape *)j;
	struct spool *sp = &j->pd->spool;
	scrape_operator(sc, sp);
	for (int s = 0; s < SPOOL_N_STATES; s++) {
		char **ids;
		size_t n;
		if (spool_list(sp, (enum spool_state)s, &ids, &n) < 0)
			continue;
		sc->counts[s] = n;
		sc->counted[s] = true;
		if ((s == SPOOL_QUEUE || s == SPOOL_DEFERRED) && n) {
			int64_t ms = id_ms(ids[0]); /* sorted: the oldest first */
			if (sc->oldest_ms == 0 || ms < sc->oldest_ms)
				sc->oldest_ms = ms;
		}
		spool_list_free(ids, n);
	}
}

static void scrape_done(struct job *j)
{
	struct scrape *sc = (struct scrape *)j;
	struct mclient *cl = sc->cl;
	if (lconn_release(cl->conn)) {
		struct buf body = BUF_INIT;
		build_body(cl->m, sc, &body);
		respond(cl, "200 OK", body.data, body.len);
		buf_deinit(&body);
	}
	for (size_t i = 0; sc->stuck && i < sc->job.cfg->n_pickups; i++)
		ctl_stuck_deinit(&sc->stuck[i]);
	free(sc->stuck);
	free(sc);
}

/* Looks at the request once its head is complete. */
static void handle_request(struct mclient *cl, const char *in, size_t in_len)
{
	char *line_end = memchr(in, '\n', in_len);
	size_t n = (size_t)(line_end - in);
	char line[256];
	if (n >= sizeof(line)) {
		respond(cl, "414 URI Too Long", "request line too long\n", 22);
		return;
	}
	memcpy(line, in, n);
	line[n] = '\0';
	char *save = NULL;
	char *method = strtok_r(line, " \r", &save);
	char *target = method ? strtok_r(NULL, " \r", &save) : NULL;
	if (method == NULL || target == NULL) {
		respond(cl, "400 Bad Request", "bad request\n", 12);
		return;
	}
	if (strcmp(method, "GET") != 0) {
		respond(cl, "405 Method Not Allowed", "only GET\n", 9);
		return;
	}
	if (strcmp(target, "/metrics") != 0 && strncmp(target, "/metrics?", 9) != 0) {
		respond(cl, "404 Not Found", "try /metrics\n", 13);
		return;
	}
	struct scrape *sc = xcalloc(1, sizeof(*sc));
	sc->cl = cl;
	lconn_hold(cl->conn);
	job_submit(cl->m->pd, &sc->job, scrape_fn, scrape_done);
}

static bool head_complete(const char *in, size_t len)
{
	for (size_t i = 0; i + 1 < len; i++) {
		if (in[i] != '\n')
			continue;
		if (in[i + 1] == '\n' || (i + 2 < len && in[i + 1] == '\r' && in[i + 2] == '\n'))
			return true;
	}
	return false;
}

static void read_cb(struct lconn *conn, void *arg)
{
	struct mclient *cl = lconn_data(conn);
	size_t len;
	bool full;
	char *in = lconn_input(conn, &len, &full);
	cl->m = arg;
	cl->conn = conn;
	if (head_complete(in, len))
		handle_request(cl, in, len);
	else if (full)
		respond(cl, "431 Request Header Fields Too Large", "request too large\n", 18);
}

/* Called by the listener only once it is stopping: when the last handle
 * has closed, tell the owner, once. */
static void stopped_cb(void *arg)
{
	struct metrics *m = arg;
	pickupd_closed_cb cb = m->closed_cb;
	if (cb == NULL || !listener_idle(m->listener))
		return;
	m->closed_cb = NULL;
	cb(m->closed_arg);
}

/* ---- lifecycle ------------------------------------------------------------------------- */

struct metrics *metrics_start(struct pickupd *pd, struct buf *errors)
{
	static const struct listener_ops ops = {read_cb, NULL, stopped_cb};
	const struct listener_limits lim = {METRICS_MAX_REQUEST, METRICS_MAX_CLIENTS,
					    METRICS_CLIENT_TIMEOUT_MS, sizeof(struct mclient)};
	const char *listen = pd->cfg->metrics.listen;
	struct sockaddr_storage ss[2];
	if (listen == NULL || *listen == '\0')
		return NULL;
	int n = metrics_addrs(listen, ss, 2, errors);
	if (n < 0)
		return NULL;
	struct metrics *m = xcalloc(1, sizeof(*m));
	struct buf what = BUF_INIT;
	m->pd = pd;
	buf_printf(&what, "[metrics] listen = %s", listen);
	m->listener = listener_tcp(pd->loop, ss, n, &lim, &ops, m, what.data, errors);
	buf_deinit(&what);
	if (m->listener == NULL) {
		free(m);
		return NULL;
	}
	struct sockaddr_storage bound;
	char ip[64] = "?";
	if (listener_sockname(m->listener, &bound) == 0)
		uv_ip_name((struct sockaddr *)&bound, ip, sizeof(ip));
	log_info("metrics on http://%s%s%s:%u/metrics (listen = %s)",
		 bound.ss_family == AF_INET6 ? "[" : "", ip, bound.ss_family == AF_INET6 ? "]" : "",
		 (unsigned)ntohs(((struct sockaddr_in *)&bound)->sin_port), listen);
	return m;
}

void metrics_close(struct metrics *m, pickupd_closed_cb cb, void *arg)
{
	m->closed_cb = cb;
	m->closed_arg = arg;
	listener_stop(m->listener);
}

void metrics_free(struct metrics *m)
{
	if (m == NULL)
		return;
	listener_free(m->listener);
	free(m);
}
