/*
 * Purpose: pickupctl, the operator's tool: inspect the queue (status, list,
 * show) from the spool alone, and steer it (flush, retry, hold, release,
 * delete, requeue) through the daemon's control socket when it runs, or on
 * the spool directly when it does not; test-relay checks a relay by hand.
 * Owns: nothing long-lived; one spool handle for the run.
 * Invariants: the spool is changed directly only while holding the spool
 * lock the daemon holds for its whole life (see ctl.c), so pickupctl never
 * moves a file under a running, starting or stopping daemon. Read-only
 * commands take no lock and never write. Run as root, it first becomes the
 * owner of the spool, so the files it writes stay readable by the daemon.
 * Exit status: 0 done, 1 failed (no such message, wrong state, I/O error),
 * 2 usage or configuration error, 75 busy (try again later).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/config.h"
#include "common/esc.h"
#include "common/log.h"
#include "daemon/ctl_client.h"
#include "daemon/ctl_list.h"
#include "daemon/ctl_spool.h"
#include "spool/spool.h"

#if defined(__has_include)
#if __has_include("daemon/testrelay.h")
#include "daemon/testrelay.h"
#define HAVE_TESTRELAY 1
#endif
#endif

#define EXIT_FAIL	  1
#define EXIT_USAGE	  2
#define EXIT_BUSY	  75
#define REPLY_WIDTH	  70
#define TOP_REASONS	  5
#define SHOW_HEADER_LINES 30

static bool json;
static int64_t busy_wait_ms = 10000; /* --wait: how long "busy" is waited out */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: pickupctl [-c FILE] COMMAND [--json] [--wait SECONDS]\n"
		"commands:\n"
		"  status                 counts per state, oldest message, why messages wait\n"
		"  list [--state STATE]   one line per message (queue|deferred|hold|badmail)\n"
		"  show ID                envelope and first header lines of one message\n"
		"  flush                  make every deferred message due now\n"
		"  retry ID               make one deferred message due now\n"
		"  hold ID | release ID   park a message / let it go again\n"
		"  delete ID              remove a message (content and envelope)\n"
		"  requeue ID             put a badmail message back into the queue\n"
		"  test-relay [NAME]      connect, EHLO, STARTTLS, AUTH, QUIT, showing each step\n"
		"--wait: how long a busy message or a starting daemon is waited for (10)\n"
		"config: -c FILE, else $PICKUPD_CONFIG, else /etc/pickupd/pickupd.conf\n");
}

/* ---- JSON output ------------------------------------------------------------------------ */

/* A JSON string: quotes, backslash and control characters escaped, invalid
 * UTF-8 replaced by U+FFFD, so the output always parses. NULL -> null. */
static void json_str(FILE *f, const char *s)
{
	if (s == NULL) {
		fputs("null", f);
		return;
	}
	const unsigned char *p = (const unsigned char *)s, *end = p + strlen(s);
	fputc('"', f);
	while (*p) {
		unsigned c = *p;
		if (c == '"' || c == '\\') {
			fprintf(f, "\\%c", c);
			p++;
		} else if (c == '\n') {
			fputs("\\n", f);
			p++;
		} else if (c == '\t') {
			fputs("\\t", f);
			p++;
		} else if (c < 0x20 || c == 0x7f) {
			fprintf(f, "\\u%04x", c);
			p++;
		} else {
			size_t n = esc_utf8_len(p, (size_t)(end - p));
			if (n == 0) {
				fputs("\\ufffd", f);
				p++;
			} else {
				fwrite(p, 1, n, f);
				p += n;
			}
		}
	}
	fputc('"', f);
}

static void json_key(FILE *f, bool *first, const char *key)
{
	if (!*first)
		fputc(',', f);
	*first = false;
	json_str(f, key);
	fputc(':', f);
}

/* ---- text helpers ------------------------------------------------------------------------ */

/* ISO 8601 UTC for JSON. */
static void json_time(FILE *f, int64_t ms)
{
	if (ms <= 0) {
		fputs("null", f);
		return;
	}
	char out[40];
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, sizeof(out), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(f, "\"%s.%03dZ\"", out, (int)(ms % 1000));
}

static void fmt_age(int64_t ms, char *out, size_t size)
{
	int64_t s = ms / 1000;
	if (s < 60)
		snprintf(out, size, "%llds", (long long)s);
	else if (s < 3600)
		snprintf(out, size, "%lldm %llds", (long long)(s / 60), (long long)(s % 60));
	else if (s < 86400)
		snprintf(out, size, "%lldh %lldm", (long long)(s / 3600),
			 (long long)(s % 3600 / 60));
	else
		snprintf(out, size, "%lldd %lldh", (long long)(s / 86400),
			 (long long)(s % 86400 / 3600));
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* ---- status ------------------------------------------------------------------------------ */

struct reason_count {
	char *reply;
	size_t messages;
};

static int cmp_reason(const void *a, const void *b)
{
	const struct reason_count *x = a, *y = b;
	if (x->messages != y->messages)
		return x->messages < y->messages ? 1 : -1;
	return strcmp(x->reply, y->reply);
}

/* Parses "ok key=value ..." from the daemon's status. */
struct daemon_status {
	bool running;
	long pid;
	char version[32];
	size_t queued;
	unsigned sessions;
	bool stopping;
	struct {
		char name[128];
		unsigned sessions;
		long paused_s;
		unsigned limit, max_sessions;
	} relays[64];
	size_t n_relays;
};

static void parse_daemon_status(char *line, struct daemon_status *ds)
{
	char *save = NULL;
	ds->running = true;
	for (char *tok = strtok_r(line, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
		char *eq = strchr(tok, '=');
		if (eq == NULL)
			continue;
		*eq = '\0';
		const char *v = eq + 1;
		if (strcmp(tok, "queued") == 0)
			ds->queued = (size_t)strtoull(v, NULL, 10);
		else if (strcmp(tok, "sessions") == 0)
			ds->sessions = (unsigned)strtoul(v, NULL, 10);
		else if (strcmp(tok, "stopping") == 0)
			ds->stopping = strcmp(v, "1") == 0;
		else if (strcmp(tok, "pid") == 0)
			ds->pid = strtol(v, NULL, 10);
		else if (strcmp(tok, "version") == 0)
			snprintf(ds->version, sizeof(ds->version), "%s", v);
		else if (strcmp(tok, "relay") == 0 && ds->n_relays < 64) {
			/* NAME,SESSIONS,PAUSED,LIMIT,MAX: the name is everything
			 * before the fourth comma from the end. */
			char *f[4];
			size_t k;
			for (k = 0; k < 4; k++) {
				f[3 - k] = strrchr(v, ',');
				if (f[3 - k] == NULL)
					break;
				*f[3 - k]++ = '\0';
			}
			if (k < 4)
				continue;
			snprintf(ds->relays[ds->n_relays].name, sizeof(ds->relays[0].name), "%s",
				 v);
			ds->relays[ds->n_relays].sessions = (unsigned)strtoul(f[0], NULL, 10);
			ds->relays[ds->n_relays].paused_s = strtol(f[1], NULL, 10);
			ds->relays[ds->n_relays].limit = (unsigned)strtoul(f[2], NULL, 10);
			ds->relays[ds->n_relays].max_sessions = (unsigned)strtoul(f[3], NULL, 10);
			ds->n_relays++;
		}
	}
}

static int cmd_status(const struct config *cfg, struct spool *sp)
{
	struct daemon_status ds;
	struct buf resp = BUF_INIT, err = BUF_INIT;
	memset(&ds, 0, sizeof(ds));
	int r = ctl_client_request(cfg->control.socket, "status", &resp, &err);
	if (r > 0 && strncmp(resp.data, "ok ", 3) == 0)
		parse_daemon_status(resp.data + 3, &ds);

	size_t counts[SPOOL_N_STATES] = {0};
	int64_t oldest = 0;
	char oldest_id[SPOOL_ID_LEN + 1] = "";
	struct reason_count *reasons = NULL;
	size_t n_reasons = 0;
	int64_t now = now_ms();
	int rc = 0;

	for (int s = 0; s < SPOOL_N_STATES; s++) {
		char **ids;
		size_t n;
		if (spool_list(sp, (enum spool_state)s, &ids, &n) < 0) {
			fprintf(stderr, "pickupctl: cannot list %s/%s: %s\n", sp->dir,
				spool_state_names[s], strerror(errno));
			rc = EXIT_FAIL;
			continue;
		}
		counts[s] = n;
		for (size_t i = 0; i < n && (s == SPOOL_QUEUE || s == SPOOL_DEFERRED); i++) {
			struct spool_env e;
			if (spool_env_read(sp, (enum spool_state)s, ids[i], &e, NULL) < 0)
				continue; /* gone meanwhile, or corrupt: list shows it */
			if (oldest == 0 || e.arrival_ms < oldest) {
				oldest = e.arrival_ms;
				memcpy(oldest_id, e.id, sizeof(oldest_id));
			}
			/* Each distinct reply counts once per message. */
			for (size_t k = 0; s == SPOOL_DEFERRED && k < e.n_rcpts; k++) {
				const char *rep = e.rcpts[k].reply;
				if (e.rcpts[k].status != RCPT_DEFERRED || rep == NULL)
					continue;
				bool dup = false;
				for (size_t q = 0; q < k && !dup; q++)
					dup = e.rcpts[q].status == RCPT_DEFERRED &&
					      e.rcpts[q].reply &&
					      strcmp(e.rcpts[q].reply, rep) == 0;
				if (dup)
					continue;
				size_t j;
				for (j = 0; j < n_reasons; j++)
					if (strcmp(reasons[j].reply, rep) == 0)
						break;
				if (j == n_reasons) {
					reasons =
					    xrealloc(reasons, (n_reasons + 1) * sizeof(*reasons));
					reasons[n_reasons].reply = xstrdup(rep);
					reasons[n_reasons].messages = 0;
					n_reasons++;
				}
				reasons[j].messages++;
			}
			spool_env_deinit(&e);
		}
		spool_list_free(ids, n);
	}
	if (n_reasons > 1)
		qsort(reasons, n_reasons, sizeof(*reasons), cmp_reason);
	size_t shown = n_reasons < TOP_REASONS ? n_reasons : TOP_REASONS;

	if (json) {
		bool first = true;
		printf("{");
		json_key(stdout, &first, "daemon");
		printf("{\"running\":%s", ds.running ? "true" : "false");
		if (ds.running) {
			printf(",\"pid\":%ld,\"version\":", ds.pid);
			json_str(stdout, ds.version);
			printf(",\"stopping\":%s,\"scheduled\":%zu,\"sessions\":%u,\"relays\":[",
			       ds.stopping ? "true" : "false", ds.queued, ds.sessions);
			for (size_t i = 0; i < ds.n_relays; i++) {
				printf("%s{\"name\":", i ? "," : "");
				json_str(stdout, ds.relays[i].name);
				printf(",\"sessions\":%u,\"paused\":%s,\"paused_seconds\":%ld,"
				       "\"concurrency_limit\":%u,\"max_sessions\":%u}",
				       ds.relays[i].sessions,
				       ds.relays[i].paused_s ? "true" : "false",
				       ds.relays[i].paused_s, ds.relays[i].limit,
				       ds.relays[i].max_sessions);
			}
			printf("]");
		}
		printf("}");
		json_key(stdout, &first, "counts");
		printf("{");
		for (int s = 0; s < SPOOL_N_STATES; s++)
			printf("%s\"%s\":%zu", s ? "," : "", spool_state_names[s], counts[s]);
		printf("}");
		json_key(stdout, &first, "oldest_id");
		json_str(stdout, oldest ? oldest_id : NULL);
		json_key(stdout, &first, "oldest_age_seconds");
		if (oldest)
			printf("%.3f", (double)(now > oldest ? now - oldest : 0) / 1000.0);
		else
			printf("null");
		json_key(stdout, &first, "deferred_reasons");
		printf("[");
		for (size_t i = 0; i < shown; i++) {
			printf("%s{\"reply\":", i ? "," : "");
			json_str(stdout, reasons[i].reply);
			printf(",\"messages\":%zu}", reasons[i].messages);
		}
		printf("]}\n");
	} else {
		if (ds.running) {
			printf("pickupd: running (pid %ld, version %s%s), %u session(s) open, %zu "
			       "message(s) scheduled\n",
			       ds.pid, ds.version, ds.stopping ? ", stopping" : "", ds.sessions,
			       ds.queued);
			for (size_t i = 0; i < ds.n_relays; i++) {
				printf("relay %s: %u session(s), concurrency limit %u of %u",
				       ds.relays[i].name, ds.relays[i].sessions, ds.relays[i].limit,
				       ds.relays[i].max_sessions);
				if (ds.relays[i].paused_s)
					printf(", paused for %ld s more", ds.relays[i].paused_s);
				printf("\n");
			}
		} else {
			printf("pickupd: not running (no answer on %s)%s%s\n", cfg->control.socket,
			       err.len ? ": " : "", err.len ? err.data : "");
		}
		for (int s = 0; s < SPOOL_N_STATES; s++)
			printf("%-9s %zu\n", spool_state_names[s], counts[s]);
		if (oldest) {
			char age[64];
			fmt_age(now > oldest ? now - oldest : 0, age, sizeof(age));
			printf("oldest message: %s (%s)\n", age, oldest_id);
		}
		if (shown) {
			printf("deferred by last reply:\n");
			for (size_t i = 0; i < shown; i++) {
				printf("%7zu  ", reasons[i].messages);
				ctl_list_put_short(stdout, reasons[i].reply, REPLY_WIDTH);
				printf("\n");
			}
			if (n_reasons > shown)
				printf("    ... and %zu other replies\n", n_reasons - shown);
		}
	}
	for (size_t i = 0; i < n_reasons; i++)
		free(reasons[i].reply);
	free(reasons);
	buf_deinit(&resp);
	buf_deinit(&err);
	return rc;
}

/* ---- list and show ----------------------------------------------------------------------- */

static void json_env(FILE *f, const struct spool_env *e, enum spool_state st)
{
	bool first = true;
	fputc('{', f);
	json_key(f, &first, "id");
	json_str(f, e->id);
	json_key(f, &first, "state");
	json_str(f, spool_state_names[st]);
	json_key(f, &first, "arrival");
	json_time(f, e->arrival_ms);
	json_key(f, &first, "size");
	fprintf(f, "%" PRIu64, e->size);
	json_key(f, &first, "sender");
	json_str(f, e->sender);
	json_key(f, &first, "recipients");
	fputc('[', f);
	for (size_t i = 0; i < e->n_rcpts; i++) {
		bool rf = true;
		fputs(i ? ",{" : "{", f);
		json_key(f, &rf, "address");
		json_str(f, e->rcpts[i].addr);
		json_key(f, &rf, "status");
		json_str(f, spool_rcpt_status_names[e->rcpts[i].status]);
		json_key(f, &rf, "reply");
		json_str(f, e->rcpts[i].reply);
		fputc('}', f);
	}
	fputc(']', f);
	json_key(f, &first, "attempts");
	fprintf(f, "%u", e->attempts);
	json_key(f, &first, "next_attempt");
	json_time(f, st == SPOOL_DEFERRED ? e->next_ms : 0);
	json_key(f, &first, "last_reply");
	json_str(f, ctl_list_last_reply(e));
	json_key(f, &first, "reason");
	json_str(f, e->reason);
	json_key(f, &first, "pickup");
	json_str(f, e->origin_pickup);
	json_key(f, &first, "file");
	json_str(f, e->origin_file);
}

/* One message of the JSON list (ctl_list_fn); arg counts those printed. */
static void json_list_cb(void *arg, enum spool_state st, const char *id, const struct spool_env *e,
			 const char *why)
{
	size_t *shown = arg;
	if ((*shown)++)
		printf(",");
	if (e) {
		json_env(stdout, e, st);
		printf("}");
		return;
	}
	printf("{\"id\":");
	json_str(stdout, id);
	printf(",\"state\":\"%s\",\"error\":", spool_state_names[st]);
	json_str(stdout, why);
	printf("}");
}

static int cmd_list(struct spool *sp, const char *state)
{
	int only = -1;
	size_t shown = 0;
	struct buf err = BUF_INIT;
	long r;
	if (state) {
		only = spool_state_from_name(state);
		if (only < 0) {
			fprintf(stderr,
				"pickupctl: unknown state %s (queue|deferred|hold|badmail)\n",
				state);
			return EXIT_USAGE;
		}
	}
	if (json) {
		printf("[");
		r = ctl_list_each(sp, only, json_list_cb, &shown, &err);
		printf("]\n");
	} else {
		r = ctl_list_text(sp, only, stdout, &err);
	}
	if (err.len) {
		fflush(stdout);
		for (char *line = err.data, *nl; (nl = strchr(line, '\n')); line = nl + 1)
			fprintf(stderr, "pickupctl: %.*s\n", (int)(nl - line), line);
	}
	buf_deinit(&err);
	return r < 0 ? EXIT_FAIL : 0;
}

/* The first header lines of the content, up to the blank line; NULL, or
 * why the content cannot be read. */
static const char *read_headers(struct spool *sp, const char *id, char ***lines_r, size_t *n_r)
{
	*lines_r = NULL;
	*n_r = 0;
	int fd = spool_data_open(sp, id);
	if (fd < 0)
		return errno == EINVAL ? "not a regular file (refused at pickup); not read"
				       : strerror(errno);
	FILE *f = fdopen(fd, "r");
	if (f == NULL) {
		int e = errno;
		close(fd);
		return strerror(e);
	}
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	while (*n_r < SHOW_HEADER_LINES && (len = getline(&line, &cap, f)) > 0) {
		while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = '\0';
		if (len == 0)
			break;
		if (len > 200)
			line[200] = '\0';
		*lines_r = xrealloc(*lines_r, (*n_r + 1) * sizeof(char *));
		(*lines_r)[(*n_r)++] = xstrdup(line);
	}
	free(line);
	fclose(f);
	return NULL;
}

static int cmd_show(struct spool *sp, const char *id)
{
	int st = ctl_spool_locate(sp, id);
	if (st < 0) {
		fprintf(stderr, "pickupctl: no message %s\n", id);
		return EXIT_FAIL;
	}
	struct spool_env e;
	struct buf why = BUF_INIT;
	if (spool_env_read(sp, (enum spool_state)st, id, &e, &why) < 0) {
		fprintf(stderr, "pickupctl: %s (in %s): %s\n", id, spool_state_names[st],
			why.data ? why.data : strerror(errno));
		buf_deinit(&why);
		return EXIT_FAIL;
	}
	buf_deinit(&why);
	char **lines;
	size_t n_lines;
	const char *unread = read_headers(sp, id, &lines, &n_lines);
	if (json) {
		json_env(stdout, &e, (enum spool_state)st);
		printf(",\"headers\":[");
		for (size_t i = 0; i < n_lines; i++) {
			if (i)
				printf(",");
			json_str(stdout, lines[i]);
		}
		printf("],\"content_error\":");
		json_str(stdout, unread);
		printf("}\n");
	} else {
		char t[32];
		printf("id:           %s\n", e.id);
		printf("state:        %s\n", spool_state_names[st]);
		printf("arrival:      %s\n", ctl_list_fmt_time(e.arrival_ms, t, sizeof(t)));
		printf("size:         %" PRIu64 "\n", e.size);
		printf("from pickup:  %s, file ", e.origin_pickup ? e.origin_pickup : "-");
		ctl_list_put_short(stdout, e.origin_file ? e.origin_file : "-", 200);
		printf("\nsender:       <");
		ctl_list_put_short(stdout, e.sender ? e.sender : "", 200);
		printf(">\nattempts:     %u\n", e.attempts);
		if (st == SPOOL_DEFERRED)
			printf("next attempt: %s\n", ctl_list_fmt_time(e.next_ms, t, sizeof(t)));
		if (e.reason) {
			printf("reason:       ");
			ctl_list_put_short(stdout, e.reason, 500);
			printf("\n");
		}
		for (size_t i = 0; i < e.n_rcpts; i++) {
			printf("recipient:    <");
			ctl_list_put_short(stdout, e.rcpts[i].addr, 200);
			printf("> %s", spool_rcpt_status_names[e.rcpts[i].status]);
			if (e.rcpts[i].reply) {
				printf(": ");
				ctl_list_put_short(stdout, e.rcpts[i].reply, 500);
			}
			printf("\n");
		}
		if (unread)
			printf("content:      %s\n", unread);
		else
			printf("content (first header lines):\n");
		for (size_t i = 0; i < n_lines; i++) {
			printf("  ");
			ctl_list_put_short(stdout, lines[i], 200);
			printf("\n");
		}
	}
	for (size_t i = 0; i < n_lines; i++)
		free(lines[i]);
	free(lines);
	spool_env_deinit(&e);
	return 0;
}

/* ---- steering ---------------------------------------------------------------------------- */

/* The same operations as ctl.c, on the spool directly (daemon down, lock held). */
static int direct(struct spool *sp, const char *cmd, const char *id, struct buf *out)
{
	if (strcmp(cmd, "flush") == 0) {
		char **ids;
		size_t n, moved = 0;
		if (spool_list(sp, SPOOL_DEFERRED, &ids, &n) < 0) {
			buf_printf(out, "cannot list deferred: %s", strerror(errno));
			return EXIT_FAIL;
		}
		for (size_t i = 0; i < n; i++)
			if (spool_move(sp, ids[i], SPOOL_DEFERRED, SPOOL_QUEUE) == 0)
				moved++;
		spool_list_free(ids, n);
		buf_printf(out, "%zu deferred message(s) moved to queue", moved);
		log_info("flush by operator: %zu deferred message(s) moved to queue", moved);
		return 0;
	}
	int st = ctl_spool_locate(sp, id);
	if (st < 0) {
		buf_printf(out, "no message %s", id);
		return EXIT_FAIL;
	}
	const char *where = spool_state_names[st];
	int r;
	if (strcmp(cmd, "retry") == 0) {
		if (st == SPOOL_QUEUE) {
			buf_printf(out, "%s is already due", id);
			return 0;
		}
		if (st != SPOOL_DEFERRED) {
			buf_printf(out, "%s is in %s; use %s", id, where,
				   st == SPOOL_HOLD ? "release" : "requeue");
			return EXIT_FAIL;
		}
		r = spool_move(sp, id, SPOOL_DEFERRED, SPOOL_QUEUE);
	} else if (strcmp(cmd, "hold") == 0) {
		if (st != SPOOL_QUEUE && st != SPOOL_DEFERRED) {
			buf_printf(out, "%s is in %s, not queue or deferred", id, where);
			return EXIT_FAIL;
		}
		r = spool_move(sp, id, (enum spool_state)st, SPOOL_HOLD);
	} else if (strcmp(cmd, "release") == 0) {
		if (st != SPOOL_HOLD) {
			buf_printf(out, "%s is in %s, not hold", id, where);
			return EXIT_FAIL;
		}
		r = spool_move(sp, id, SPOOL_HOLD, SPOOL_QUEUE);
	} else if (strcmp(cmd, "delete") == 0) {
		r = spool_remove(sp, id, (enum spool_state)st);
	} else { /* requeue */
		if (st != SPOOL_BADMAIL) {
			buf_printf(out, "%s is in %s, not badmail", id, where);
			return EXIT_FAIL;
		}
		if (ctl_spool_requeue(sp, id, out) < 0)
			return EXIT_FAIL;
		r = 0;
	}
	if (r < 0) {
		buf_printf(out, "%s: cannot %s: %s", id, cmd, strerror(errno));
		return EXIT_FAIL;
	}
	static const struct {
		const char *cmd, *done;
	} words[] = {{"retry", "moved to queue"},
		     {"hold", "held"},
		     {"release", "released"},
		     {"delete", "deleted"},
		     {"requeue", "requeued"}};
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
		if (strcmp(cmd, words[i].cmd) == 0) {
			buf_printf(out, "%s %s", id, words[i].done);
			log_info("%s: %s by operator (was in %s; pickupd not running)", id,
				 words[i].done, where);
		}
	}
	return 0;
}

/* Through the daemon when it answers, else on the spool under its lock;
 * "busy" answers and a daemon starting or stopping are waited out a little. */
static int cmd_steer(const struct config *cfg, struct spool *sp, const char *cmd, const char *id)
{
	struct buf line = BUF_INIT, resp = BUF_INIT, err = BUF_INIT, out = BUF_INIT;
	int64_t deadline = now_ms() + busy_wait_ms;
	int rc;
	buf_printf(&line, "%s%s%s", cmd, id ? " " : "", id ? id : "");
	for (;;) {
		buf_clear(&err);
		int r = ctl_client_request(cfg->control.socket, line.data, &resp, &err);
		if (r < 0) {
			fprintf(stderr, "pickupctl: %s\n", err.data);
			rc = EXIT_FAIL;
			break;
		}
		if (r > 0) {
			if (strncmp(resp.data, "ok", 2) == 0) {
				printf("%s\n", resp.data[2] ? resp.data + 3 : "done");
				rc = 0;
				break;
			}
			if (strncmp(resp.data, "busy ", 5) == 0 && now_ms() < deadline) {
				sleep_ms(200);
				continue;
			}
			bool busy = strncmp(resp.data, "busy ", 5) == 0;
			const char *text = strchr(resp.data, ' ');
			fprintf(stderr, "pickupctl: %s\n", text ? text + 1 : resp.data);
			rc = busy ? EXIT_BUSY : EXIT_FAIL;
			break;
		}
		/* No daemon answers: work on the spool if none holds it. */
		if (flock(sp->dir_fd, LOCK_EX | LOCK_NB) == 0) {
			rc = direct(sp, cmd, id, &out);
			flock(sp->dir_fd, LOCK_UN);
			fprintf(rc ? stderr : stdout, "%s%s\n", rc ? "pickupctl: " : "", out.data);
			break;
		}
		if (errno != EWOULDBLOCK) {
			fprintf(stderr, "pickupctl: cannot lock the spool %s: %s\n", sp->dir,
				strerror(errno));
			rc = EXIT_FAIL;
			break;
		}
		if (now_ms() >= deadline) {
			fprintf(stderr,
				"pickupctl: pickupd holds the spool but does not answer on %s "
				"(starting "
				"or stopping?); try again\n",
				cfg->control.socket);
			rc = EXIT_BUSY;
			break;
		}
		sleep_ms(200);
	}
	buf_deinit(&line);
	buf_deinit(&resp);
	buf_deinit(&err);
	buf_deinit(&out);
	return rc;
}

/* Run as root: become the spool's owner, so files written stay the daemon's. */
static int drop_to_spool_owner(const char *dir)
{
	struct stat st;
	if (geteuid() != 0 || stat(dir, &st) < 0 || st.st_uid == 0)
		return 0;
	if (setgroups(0, NULL) < 0 || setgid(st.st_gid) < 0 || setuid(st.st_uid) < 0) {
		fprintf(stderr, "pickupctl: cannot become the owner of %s: %s\n", dir,
			strerror(errno));
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"json", no_argument, NULL, 'j'},
	    {"state", required_argument, NULL, 's'},
	    {"wait", required_argument, NULL, 'w'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	const char *path = NULL, *state = NULL;
	int ch;
	log_set_ident("pickupctl");
	while ((ch = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'j':
			json = true;
			break;
		case 's':
			state = optarg;
			break;
		case 'w': {
			char *end;
			double v = strtod(optarg, &end);
			if (*end || v < 0 || v > 86400) {
				fprintf(stderr, "pickupctl: --wait takes seconds\n");
				return EXIT_USAGE;
			}
			busy_wait_ms = (int64_t)(v * 1000);
			break;
		}
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("pickupctl %s\n", PICKUPD_VERSION);
			return 0;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	const char *cmd = argv[optind];
	const char *arg = optind + 1 < argc ? argv[optind + 1] : NULL;
	if (optind + 2 < argc) {
		fprintf(stderr, "pickupctl: too many arguments\n");
		return EXIT_USAGE;
	}
	bool needs_id = strcmp(cmd, "show") == 0 || strcmp(cmd, "retry") == 0 ||
			strcmp(cmd, "hold") == 0 || strcmp(cmd, "release") == 0 ||
			strcmp(cmd, "delete") == 0 || strcmp(cmd, "requeue") == 0;
	bool no_arg =
	    strcmp(cmd, "status") == 0 || strcmp(cmd, "list") == 0 || strcmp(cmd, "flush") == 0;
	if (!needs_id && !no_arg && strcmp(cmd, "test-relay") != 0) {
		fprintf(stderr, "pickupctl: unknown command %s\n", cmd);
		usage(stderr);
		return EXIT_USAGE;
	}
	if ((needs_id && arg == NULL) || (no_arg && arg != NULL)) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (needs_id && !spool_id_valid(arg)) {
		fprintf(stderr, "pickupctl: not a queue ID: %s (20 hexadecimal digits)\n", arg);
		return EXIT_FAIL;
	}
	if (state && strcmp(cmd, "list") != 0) {
		fprintf(stderr, "pickupctl: --state goes with list\n");
		return EXIT_USAGE;
	}
	if (path == NULL)
		path = getenv("PICKUPD_CONFIG");
	if (path == NULL || *path == '\0')
		path = "/etc/pickupd/pickupd.conf";

	struct buf errs = BUF_INIT;
	struct config *cfg = config_load(path, &errs);
	if (cfg == NULL) {
		fputs(errs.data ? errs.data : "invalid configuration\n", stderr);
		buf_deinit(&errs);
		return EXIT_USAGE;
	}
	buf_deinit(&errs);

	int rc;
	if (strcmp(cmd, "test-relay") == 0) {
#ifdef HAVE_TESTRELAY
		rc = testrelay_run(cfg, arg, stdout);
#else
		fprintf(stderr, "pickupctl: test-relay is not available in this build\n");
		rc = EXIT_USAGE;
#endif
		config_free(cfg);
		return rc;
	}

	struct spool sp;
	if (drop_to_spool_owner(cfg->spool.dir) < 0) {
		config_free(cfg);
		return EXIT_FAIL;
	}
	if (spool_open(&sp, cfg->spool.dir) < 0) {
		fprintf(stderr, "pickupctl: cannot open spool %s: %s\n", cfg->spool.dir,
			strerror(errno));
		config_free(cfg);
		return EXIT_FAIL;
	}
	if (strcmp(cmd, "status") == 0)
		rc = cmd_status(cfg, &sp);
	else if (strcmp(cmd, "list") == 0)
		rc = cmd_list(&sp, state);
	else if (strcmp(cmd, "show") == 0)
		rc = cmd_show(&sp, arg);
	else
		rc = cmd_steer(cfg, &sp, cmd, arg);
	fflush(stdout);
	spool_close(&sp);
	config_free(cfg);
	return rc;
}
