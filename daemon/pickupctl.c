/*
 * Purpose: pickupctl, the operator's tool: inspect the queue (status, list,
 * summary, show) from the spool alone, and steer it (flush, retry, hold,
 * release, delete, requeue, purge; one ID, several, ALL [STATE], or IDs on
 * stdin) through the daemon's control socket when it runs, or on the spool
 * directly when it does not; test-relay checks a relay by hand. --json on
 * every command (schema: README, pickupctl section; ctl.h), through jansson.
 * Owns: nothing long-lived; one spool handle for the run.
 * Invariants: the spool is changed directly only while holding the spool
 * lock the daemon holds for its whole life (see ctl.c), so pickupctl never
 * moves a file under a running, starting or stopping daemon; every change it
 * makes itself is recorded in <spool>/operator-actions for the daemon's log.
 * Read-only commands take no lock and never write. Run as root, it first
 * becomes the owner of the spool, so the files it writes stay readable by
 * the daemon. JSON strings are always valid UTF-8: a byte that is not part
 * of a valid UTF-8 sequence is replaced by U+FFFD.
 * Exit status: 0 done, 1 failed (no such message, wrong state, I/O error;
 * for several IDs: any of them), 2 usage or configuration error, 3 status:
 * pickupd is not running, 75 busy (try again later).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <jansson.h>
#include <poll.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/config.h"
#include "common/esc.h"
#include "common/log.h"
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
#define EXIT_NOT_RUNNING  3
#define EXIT_BUSY	  75
#define REPLY_WIDTH	  70
#define TOP_REASONS	  5
#define SHOW_HEADER_LINES 30
#define BATCH_MAX	  20000 /* IDs per control-socket round trip */
#define N_BUCKETS	  10	/* summary: under 5, 10, ... 1280 minutes, then 1280+ */

static bool json;
static int64_t busy_wait_ms = 10000; /* --wait: how long "busy" is waited out */

static void usage(FILE *f)
{
	/* One line per command: test_docs.py reads the commands from here. */
	fprintf(f,
		"usage: pickupctl [-c FILE] COMMAND [ARGS] [--json] [--wait SECONDS]\n"
		"commands:\n"
		"  status                  daemon, counts, oldest, why messages wait, stuck files\n"
		"  list [--state STATE] [--older-than AGE] [--to DOMAIN]  messages, header, total\n"
		"  summary [--state STATE]  messages per recipient domain and age, as qshape\n"
		"  show ID                 envelope and first header lines of one message\n"
		"  flush                   make every deferred message due now\n"
		"  retry IDS               make deferred messages due now\n"
		"  hold IDS | release IDS  park messages / let them go again\n"
		"  delete IDS              remove messages (content and envelope)\n"
		"  requeue IDS             put badmail messages back into the queue\n"
		"  purge [--older-than AGE]  remove badmail older than AGE, else [badmail] keep\n"
		"  test-relay [NAME]       connect, EHLO, STARTTLS, AUTH, QUIT, showing each step\n"
		"STATE: a state directory (queue|deferred|hold|badmail)\n"
		"IDS: queue IDs, ALL, ALL STATE (delete ALL deferred), or - (IDs on stdin, one\n"
		"     per line; lines starting with '-', like list's header, are skipped)\n"
		"AGE: a duration such as 30s 15m 2h 7d\n"
		"--json: one JSON document on stdout (schema: README, pickupctl section)\n"
		"--wait: how long a busy message or a starting daemon is waited for (10)\n"
		"config: -c FILE, else $PICKUPD_CONFIG, else /etc/pickupd/pickupd.conf\n"
		"exit: 0 done, 1 failed (any one ID), 2 usage, 3 status: pickupd not running,\n"
		"      75 busy (try again)\n");
}

/* ---- JSON output ------------------------------------------------------------------------ */

/* A JSON string of outside text (file names, addresses, server replies):
 * jansson takes only valid UTF-8, so each byte that is not part of a valid
 * sequence becomes U+FFFD, as pickupctl has always written it. NULL -> null. */
static json_t *jstr(const char *s)
{
	if (s == NULL)
		return json_null();
	struct buf b = BUF_INIT;
	const unsigned char *p = (const unsigned char *)s, *end = p + strlen(s);
	while (*p) {
		size_t n = esc_utf8_len(p, (size_t)(end - p));
		if (n == 0) {
			buf_puts(&b, "\xef\xbf\xbd");
			p++;
		} else {
			buf_append(&b, p, n);
			p += n;
		}
	}
	json_t *j = json_stringn(b.data ? b.data : "", b.len);
	buf_deinit(&b);
	return j ? j : json_null();
}

/* ISO 8601 UTC with milliseconds, or null for 0. */
static json_t *jtime(int64_t ms)
{
	if (ms <= 0)
		return json_null();
	char out[40];
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, sizeof(out), "%Y-%m-%dT%H:%M:%S", &tm);
	return json_sprintf("%s.%03dZ", out, (int)(ms % 1000));
}

static json_t *jsize(uint64_t n)
{
	return json_integer((json_int_t)n);
}

/* Prints the document on one line and frees it. */
static void jprint(json_t *doc)
{
	json_dumpf(doc, stdout, JSON_COMPACT | JSON_REAL_PRECISION(10));
	fputc('\n', stdout);
	json_decref(doc);
}

/* ---- text helpers ------------------------------------------------------------------------ */

/* "2024-11-23 10:00:00" local time, or "-" for 0. */
static const char *fmt_time(int64_t ms, char *out, size_t size)
{
	if (ms <= 0) {
		snprintf(out, size, "-");
		return out;
	}
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	localtime_r(&t, &tm);
	strftime(out, size, "%Y-%m-%d %H:%M:%S", &tm);
	return out;
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

/* Outside text for a terminal, escaped as in the log (common/esc.h), cut
 * after width bytes at a character boundary (with "..." when cut). */
static void put_short(FILE *f, const char *s, size_t width)
{
	struct buf b = BUF_INIT;
	if (s)
		esc_append(&b, s, strlen(s));
	size_t n = b.len;
	if (n > width) {
		n = width;
		while (n > 0 && ((unsigned char)b.data[n] & 0xc0) == 0x80)
			n--;
		for (size_t k = n > 3 ? n - 3 : 0; k < n; k++)
			if (b.data[k] == '\\')
				n = k; /* not half an escape either */
	}
	if (n)
		fwrite(b.data, 1, n, f);
	if (n < b.len)
		fputs("...", f);
	buf_deinit(&b);
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

/* The reply to show for a message: its reason (badmail), else the last
 * reply of a recipient still waiting, else any recipient's reply. */
static const char *last_reply(const struct spool_env *e)
{
	const char *any = NULL;
	if (e->reason)
		return e->reason;
	for (size_t i = e->n_rcpts; i-- > 0;) {
		if (e->rcpts[i].reply && e->rcpts[i].status != RCPT_SENT)
			return e->rcpts[i].reply;
		if (e->rcpts[i].reply && any == NULL)
			any = e->rcpts[i].reply;
	}
	return any;
}

/* ---- the control socket and steering ----------------------------------------------------- */

static char operator_who[128] = "unknown"; /* "uid 1000 (alice)", before any setuid */

static void set_operator_who(void)
{
	uid_t uid = getuid();
	struct passwd *pw = getpwuid(uid);
	snprintf(operator_who, sizeof(operator_who), "uid %u (%s)", (unsigned)uid,
		 pw && pw->pw_name ? pw->pw_name : "?");
}

/* One line of <spool>/operator-actions, in the daemon's log format: the
 * queue ID (or the action) first, then when and by whom. */
static void audit_line(struct buf *out, const char *what)
{
	char when[40];
	time_t t = time(NULL);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	buf_printf(out, "%s by operator while pickupd was not running (pickupctl at %s, %s)\n",
		   what, when, operator_who);
}

/* Records what was done on the spool for the daemon to log at its next start. */
static void audit_record(struct spool *sp, const struct buf *lines)
{
	if (lines->len && spool_audit_append(sp, lines->data, lines->len) < 0)
		fprintf(
		    stderr,
		    "pickupctl: cannot record the actions in %s/operator-actions (%s): pickupd's "
		    "log will not show them\n",
		    sp->dir, strerror(errno));
}

/* Connects to the control socket: 1 connected (fd_r), 0 no daemon listens
 * (no socket, or a stale one), -1 error (err). */
static int ctl_connect(const char *path, int *fd_r, struct buf *err)
{
	struct sockaddr_un sa;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		buf_printf(err, "control socket path too long: %s", path);
		return -1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path));
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		buf_printf(err, "socket: %s", strerror(errno));
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		close(fd);
		if (e == ENOENT || e == ECONNREFUSED)
			return 0;
		buf_printf(err, "cannot reach pickupd at %s: %s", path, strerror(e));
		return -1;
	}
	*fd_r = fd;
	return 1;
}

static int send_all(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Reads from fd into resp until done(resp) says the answer is complete,
 * with a deadline that each byte received pushes back. 0 or -1 (err). */
static int read_answer(int fd, struct buf *resp, bool (*done)(const struct buf *), int64_t idle_ms,
		       struct buf *err)
{
	int64_t deadline = now_ms() + idle_ms;
	while (!done(resp)) {
		int64_t left = deadline - now_ms();
		struct pollfd pfd = {fd, POLLIN, 0};
		if (left <= 0 || poll(&pfd, 1, (int)left) == 0) {
			buf_printf(err, "pickupd did not answer");
			return -1;
		}
		char chunk[65536];
		ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			buf_printf(err, "pickupd closed the control connection without answering");
			return -1;
		}
		buf_append(resp, chunk, (size_t)n);
		deadline = now_ms() + idle_ms;
	}
	return 0;
}

static bool one_line(const struct buf *b)
{
	return b->len && memchr(b->data, '\n', b->len) != NULL;
}

/* Sends one request line and reads the answer line into resp.
 * 1: answered; 0: no daemon listens (no socket, or a stale one); -1: error. */
static int ctl_request(const char *path, const char *line, struct buf *resp, struct buf *err)
{
	int fd;
	int r = ctl_connect(path, &fd, err);
	if (r <= 0)
		return r;
	buf_clear(resp);
	if (send_all(fd, line, strlen(line)) < 0 || send_all(fd, "\n", 1) < 0) {
		buf_printf(err, "cannot talk to pickupd at %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	r = read_answer(fd, resp, one_line, 30000, err);
	close(fd);
	if (r < 0)
		return -1;
	char *nl = memchr(resp->data, '\n', resp->len);
	*nl = '\0';
	resp->len = (size_t)(nl - resp->data);
	return 1;
}

/* "ID " at p: an answer line about one message. */
static bool id_first(const char *p, size_t len)
{
	char id[SPOOL_ID_LEN + 1];
	if (len < SPOOL_ID_LEN + 1 || p[SPOOL_ID_LEN] != ' ')
		return false;
	memcpy(id, p, SPOOL_ID_LEN);
	id[SPOOL_ID_LEN] = '\0';
	return spool_id_valid(id);
}

/* A batch answer is complete with its "end OK FAILED BUSY" line, or with a
 * first line that refuses the request itself ("error TEXT", no ID). */
static bool batch_answered(const struct buf *b)
{
	const char *nl = b->len ? memchr(b->data, '\n', b->len) : NULL;
	if (nl == NULL)
		return false;
	if (strncmp(b->data, "error ", 6) == 0 &&
	    !id_first(b->data + 6, (size_t)(nl - b->data) - 6))
		return true;
	if (b->data[b->len - 1] != '\n')
		return false;
	size_t start = b->len - 1;
	while (start > 0 && b->data[start - 1] != '\n')
		start--;
	return strncmp(b->data + start, "end ", 4) == 0;
}

static int cmp_item_ptr(const void *a, const void *b)
{
	return strcmp((*(struct ctl_item *const *)a)->id, (*(struct ctl_item *const *)b)->id);
}

/*
 * One round trip: "batch CMD N", the N IDs, then one answer line per ID
 * ("ok|error|busy ID TEXT") and "end". todo is sorted by ID. 1 answered,
 * 0 no daemon listens, -1 error (err).
 */
static int ctl_batch(const char *path, enum ctl_cmd cmd, struct ctl_item **todo, size_t n,
		     struct buf *err)
{
	int fd;
	int r = ctl_connect(path, &fd, err);
	if (r <= 0)
		return r;
	struct buf req = BUF_INIT, resp = BUF_INIT;
	buf_printf(&req, "batch %s %zu\n", ctl_cmd_names[cmd], n);
	for (size_t i = 0; i < n; i++)
		buf_printf(&req, "%s\n", todo[i]->id);
	if (send_all(fd, req.data, req.len) < 0) {
		buf_printf(err, "cannot talk to pickupd at %s: %s", path, strerror(errno));
		r = -1;
	} else if (read_answer(fd, &resp, batch_answered, 60000, err) < 0) {
		r = -1;
	}
	close(fd);
	for (char *p = resp.data; r > 0 && p && *p;) {
		char *nl = strchr(p, '\n');
		*nl = '\0';
		char *sp1 = strchr(p, ' ');
		if (strncmp(p, "end ", 4) == 0)
			break;
		int res = -1;
		for (int k = CTL_OK; k <= CTL_BUSY && sp1; k++)
			if ((size_t)(sp1 - p) == strlen(ctl_result_names[k]) &&
			    strncmp(p, ctl_result_names[k], (size_t)(sp1 - p)) == 0)
				res = k;
		struct ctl_item key, *kp = &key, **hit = NULL;
		if (res >= 0 && strlen(sp1 + 1) >= SPOOL_ID_LEN) {
			memcpy(key.id, sp1 + 1, SPOOL_ID_LEN);
			key.id[SPOOL_ID_LEN] = '\0';
			hit = bsearch(&kp, todo, n, sizeof(*todo), cmp_item_ptr);
		}
		if (hit == NULL) {
			buf_printf(err, "pickupd answered: %s", p);
			r = -1;
			break;
		}
		const char *text = sp1 + 1 + SPOOL_ID_LEN;
		ctl_item_set(*hit, (enum ctl_result)res, "%s", *text == ' ' ? text + 1 : text);
		p = nl + 1;
	}
	for (size_t i = 0; r > 0 && i < n; i++)
		if (todo[i]->result == CTL_PENDING)
			ctl_item_set(todo[i], CTL_FAILED, "%s: pickupd gave no answer",
				     todo[i]->id);
	buf_deinit(&req);
	buf_deinit(&resp);
	return r;
}

/* The same operations as ctl.c, on the spool directly (daemon down, lock
 * held); each change recorded for the daemon's log. */
static void steer_direct(struct spool *sp, enum ctl_cmd cmd, struct ctl_item *items, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (items[i].result != CTL_PENDING)
			continue;
		items[i].from = ctl_spool_locate(sp, items[i].id);
		ctl_spool_plan(cmd, &items[i]);
		if (items[i].result != CTL_PENDING)
			items[i].act = CTL_ACT_NONE;
	}
	ctl_spool_apply(sp, cmd, items, n);
	struct buf audit = BUF_INIT, what = BUF_INIT;
	for (size_t i = 0; i < n; i++) {
		if (items[i].act == CTL_ACT_NONE || items[i].result != CTL_OK)
			continue;
		buf_clear(&what);
		buf_printf(&what, "%s: %s (was in %s)", items[i].id, ctl_cmd_done(cmd),
			   spool_state_names[items[i].from]);
		audit_line(&audit, what.data);
		items[i].act = CTL_ACT_NONE; /* done: a later round must not redo it */
	}
	audit_record(sp, &audit);
	buf_deinit(&audit);
	buf_deinit(&what);
}

/* Through the daemon when it answers (one round trip per BATCH_MAX IDs),
 * else on the spool under its lock; "busy" answers and a daemon starting or
 * stopping are waited out for --wait. Sets every item's result. */
static void steer(const struct config *cfg, struct spool *sp, enum ctl_cmd cmd,
		  struct ctl_item *items, size_t n, const char **via_r)
{
	struct ctl_item **todo = xcalloc(n ? n : 1, sizeof(*todo));
	struct buf err = BUF_INIT;
	int64_t deadline = now_ms() + busy_wait_ms;
	*via_r = "daemon";
	for (;;) {
		size_t k = 0;
		for (size_t i = 0; i < n; i++)
			if (items[i].result == CTL_PENDING)
				todo[k++] = &items[i];
		if (k == 0)
			break;
		int r = 1;
		buf_clear(&err);
		for (size_t off = 0; off < k && r > 0; off += BATCH_MAX)
			r = ctl_batch(cfg->control.socket, cmd, todo + off,
				      k - off < BATCH_MAX ? k - off : BATCH_MAX, &err);
		if (r < 0) {
			for (size_t i = 0; i < k; i++)
				if (todo[i]->result == CTL_PENDING)
					ctl_item_set(todo[i], CTL_FAILED, "%s", err.data);
			break;
		}
		if (r > 0) {
			bool busy = false;
			for (size_t i = 0; i < k; i++)
				busy |= todo[i]->result == CTL_BUSY;
			if (!busy || now_ms() >= deadline)
				break;
			sleep_ms(200);
			for (size_t i = 0; i < k; i++)
				if (todo[i]->result == CTL_BUSY)
					todo[i]->result = CTL_PENDING;
			continue;
		}
		/* No daemon answers: work on the spool if none holds it. */
		if (flock(sp->dir_fd, LOCK_EX | LOCK_NB) == 0) {
			*via_r = "spool";
			steer_direct(sp, cmd, items, n);
			flock(sp->dir_fd, LOCK_UN);
			break;
		}
		int e = errno;
		if (e != EWOULDBLOCK || now_ms() >= deadline) {
			for (size_t i = 0; i < k; i++) {
				if (e != EWOULDBLOCK)
					ctl_item_set(todo[i], CTL_FAILED,
						     "cannot lock the spool %s: %s", sp->dir,
						     strerror(e));
				else
					ctl_item_set(
					    todo[i], CTL_BUSY,
					    "pickupd holds the spool but does not answer on "
					    "%s (starting or stopping?); try again",
					    cfg->control.socket);
			}
			break;
		}
		sleep_ms(200);
	}
	free(todo);
	buf_deinit(&err);
}

/* Prints each ID's result (or the JSON document with extra's fields) and
 * returns the exit status: 0, 75 when only busy ones failed, else 1. */
static int report(enum ctl_cmd cmd, const char *via, struct ctl_item *items, size_t n,
		  json_t *extra)
{
	size_t count[4] = {0};
	json_t *results = json ? json_array() : NULL;
	for (size_t i = 0; i < n; i++) {
		const struct ctl_item *it = &items[i];
		count[it->result]++;
		if (json) {
			json_array_append_new(
			    results,
			    json_pack("{s:o,s:s,s:o}", "id",
				      it->id[0] ? json_string(it->id) : json_null(), "result",
				      ctl_result_names[it->result], "message", jstr(it->text)));
		} else if (it->result == CTL_OK) {
			put_short(stdout, it->text, 500);
			printf("\n");
		} else {
			fflush(stdout);
			fprintf(stderr, "pickupctl: ");
			put_short(stderr, it->text, 500);
			fprintf(stderr, "\n");
		}
	}
	if (json) {
		json_t *doc =
		    json_pack("{s:s,s:s,s:o,s:I,s:I,s:I}", "command", ctl_cmd_names[cmd], "via",
			      via, "results", results, "ok", (json_int_t)count[CTL_OK], "failed",
			      (json_int_t)count[CTL_FAILED], "busy", (json_int_t)count[CTL_BUSY]);
		if (extra)
			json_object_update(doc, extra);
		jprint(doc);
	} else if (n != 1) {
		printf("%zu of %zu message(s): %s", count[CTL_OK], n, ctl_cmd_done(cmd));
		if (count[CTL_FAILED] || count[CTL_BUSY])
			printf("; %zu failed, %zu busy", count[CTL_FAILED], count[CTL_BUSY]);
		printf("\n");
	}
	json_decref(extra);
	if (count[CTL_FAILED])
		return EXIT_FAIL;
	return count[CTL_BUSY] ? EXIT_BUSY : 0;
}

static void add_item(struct ctl_item **v, size_t *n, size_t *cap, const char *id)
{
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 64;
		*v = xrealloc(*v, *cap * sizeof(**v));
	}
	struct ctl_item *it = &(*v)[(*n)++];
	memset(it, 0, sizeof(*it));
	it->from = -1;
	if (spool_id_valid(id)) {
		memcpy(it->id, id, SPOOL_ID_LEN + 1);
	} else {
		struct buf b = BUF_INIT;
		buf_append(&b, id, strnlen(id, 80));
		ctl_item_set(it, CTL_FAILED, "not a queue ID: %s (20 hexadecimal digits)", b.data);
		buf_deinit(&b);
	}
}

/* The states ALL means for cmd: where it can apply. */
static bool all_includes(enum ctl_cmd cmd, int s)
{
	switch (cmd) {
	case CTL_RETRY:
		return s == SPOOL_DEFERRED;
	case CTL_HOLD:
		return s == SPOOL_QUEUE || s == SPOOL_DEFERRED;
	case CTL_RELEASE:
		return s == SPOOL_HOLD;
	case CTL_REQUEUE:
	case CTL_PURGE:
		return s == SPOOL_BADMAIL;
	default:
		return true;
	}
}

static int cmp_items(const void *a, const void *b)
{
	return strcmp(((const struct ctl_item *)a)->id, ((const struct ctl_item *)b)->id);
}

/* IDS: several IDs, ALL, ALL STATE, or - (stdin). Sorted, each once. 0, or
 * an exit status after a message. */
static int gather_ids(struct spool *sp, enum ctl_cmd cmd, char **args, int nargs,
		      struct ctl_item **items_r, size_t *n_r)
{
	struct ctl_item *v = NULL;
	size_t n = 0, cap = 0;
	*items_r = NULL;
	*n_r = 0;
	if (nargs == 0) {
		fprintf(stderr, "pickupctl: %s needs queue IDs, ALL [STATE], or - (stdin)\n",
			ctl_cmd_names[cmd]);
		return EXIT_USAGE;
	}
	if (strcmp(args[0], "ALL") == 0) {
		int only = -1;
		if (nargs > 2 || (nargs == 2 && (only = spool_state_from_name(args[1])) < 0)) {
			fprintf(stderr,
				"pickupctl: ALL takes one state (queue|deferred|hold|badmail)\n");
			return EXIT_USAGE;
		}
		for (int s = 0; s < SPOOL_N_STATES; s++) {
			char **ids;
			size_t k;
			if (only >= 0 ? s != only : !all_includes(cmd, s))
				continue;
			if (spool_list(sp, (enum spool_state)s, &ids, &k) < 0) {
				fprintf(stderr, "pickupctl: cannot list %s: %s\n",
					spool_state_names[s], strerror(errno));
				free(v);
				return EXIT_FAIL;
			}
			for (size_t i = 0; i < k; i++)
				add_item(&v, &n, &cap, ids[i]);
			spool_list_free(ids, k);
		}
	} else if (strcmp(args[0], "-") == 0 && nargs == 1) {
		char *line = NULL;
		size_t lcap = 0;
		while (getline(&line, &lcap, stdin) > 0) {
			char *p = line + strspn(line, " \t");
			p[strcspn(p, " \t\r\n")] = '\0';
			if (*p && *p != '-') /* list's header and total start with '-' */
				add_item(&v, &n, &cap, p);
		}
		free(line);
	} else {
		for (int i = 0; i < nargs; i++) {
			if (strcmp(args[i], "ALL") == 0 || strcmp(args[i], "-") == 0) {
				fprintf(stderr,
					"pickupctl: %s goes alone (IDs, ALL [STATE], or -)\n",
					args[i]);
				free(v);
				return EXIT_USAGE;
			}
			add_item(&v, &n, &cap, args[i]);
		}
	}
	if (n > 1)
		qsort(v, n, sizeof(*v), cmp_items);
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (k && v[i].id[0] && strcmp(v[k - 1].id, v[i].id) == 0)
			continue;
		v[k++] = v[i];
	}
	*items_r = v;
	*n_r = k;
	return 0;
}

static void items_free(struct ctl_item *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		ctl_item_deinit(&v[i]);
	free(v);
}

static int cmd_ids(const struct config *cfg, struct spool *sp, enum ctl_cmd cmd, char **args,
		   int nargs)
{
	struct ctl_item *items;
	size_t n;
	int rc = gather_ids(sp, cmd, args, nargs, &items, &n);
	if (rc)
		return rc;
	const char *via = "daemon";
	steer(cfg, sp, cmd, items, n, &via);
	rc = report(cmd, via, items, n, NULL);
	items_free(items, n);
	return rc;
}

/* purge: badmail entries older than AGE (older_ms), else than [badmail] keep. */
static int cmd_purge(const struct config *cfg, struct spool *sp, int64_t older_ms)
{
	if (older_ms < 0) {
		if (cfg->badmail.keep_ms == 0) {
			fprintf(stderr, "pickupctl: [badmail] keep = 0 keeps badmail forever; give "
					"--older-than AGE (0 for every entry)\n");
			return EXIT_USAGE;
		}
		older_ms = (int64_t)cfg->badmail.keep_ms;
	}
	struct ctl_badmail *bm;
	size_t nb;
	if (ctl_spool_badmail(sp, &bm, &nb) < 0) {
		fprintf(stderr, "pickupctl: cannot list %s/badmail: %s\n", sp->dir,
			strerror(errno));
		return EXIT_FAIL;
	}
	int64_t cutoff = now_ms() - older_ms;
	struct ctl_item *items = xcalloc(nb ? nb : 1, sizeof(*items));
	size_t n = 0;
	for (size_t i = 0; i < nb; i++) {
		if (older_ms && bm[i].since_ms > cutoff)
			continue;
		memcpy(items[n].id, bm[i].id, SPOOL_ID_LEN + 1);
		items[n].from = -1;
		n++;
	}
	qsort(items, n, sizeof(*items), cmp_items);
	const char *via = "daemon";
	steer(cfg, sp, CTL_PURGE, items, n, &via);
	uint64_t bytes = 0;
	for (size_t i = 0; i < n; i++) {
		if (items[i].result != CTL_OK)
			continue;
		for (size_t k = 0; k < nb; k++)
			if (strcmp(bm[k].id, items[i].id) == 0)
				bytes += bm[k].bytes;
	}
	if (!json && n == 0)
		printf("no badmail entry is older than %lld s\n", (long long)(older_ms / 1000));
	int rc = report(CTL_PURGE, via, items, n,
			json_pack("{s:I,s:I}", "older_than_seconds", (json_int_t)(older_ms / 1000),
				  "bytes", (json_int_t)bytes));
	items_free(items, n);
	free(bm);
	return rc;
}

/* flush: one request through the daemon, or every deferred envelope moved
 * to queue/ on the spool directly. */
static int cmd_flush(const struct config *cfg, struct spool *sp)
{
	struct buf resp = BUF_INIT, err = BUF_INIT, out = BUF_INIT;
	int64_t deadline = now_ms() + busy_wait_ms;
	const char *via = "daemon";
	size_t moved = 0;
	int rc;
	for (;;) {
		buf_clear(&err);
		int r = ctl_request(cfg->control.socket, "flush", &resp, &err);
		if (r < 0) {
			buf_printf(&out, "%s", err.data);
			rc = EXIT_FAIL;
			break;
		}
		if (r > 0) {
			bool busy = strncmp(resp.data, "busy ", 5) == 0;
			if (busy && now_ms() < deadline) {
				sleep_ms(200);
				continue;
			}
			const char *text = strchr(resp.data, ' ');
			buf_printf(&out, "%s", text ? text + 1 : "done");
			rc = strncmp(resp.data, "ok", 2) == 0 ? 0 : busy ? EXIT_BUSY : EXIT_FAIL;
			if (rc == 0)
				moved = (size_t)strtoull(out.data, NULL, 10);
			break;
		}
		if (flock(sp->dir_fd, LOCK_EX | LOCK_NB) == 0) {
			char **ids;
			size_t n;
			via = "spool";
			rc = 0;
			if (spool_list(sp, SPOOL_DEFERRED, &ids, &n) < 0) {
				buf_printf(&out, "cannot list deferred: %s", strerror(errno));
				rc = EXIT_FAIL;
			} else {
				int *errs = xcalloc(n ? n : 1, sizeof(*errs));
				moved =
				    spool_move_many(sp, ids, n, SPOOL_DEFERRED, SPOOL_QUEUE, errs);
				free(errs);
				spool_list_free(ids, n);
				buf_printf(&out, "%zu deferred message(s) moved to queue", moved);
				struct buf audit = BUF_INIT, what = BUF_INIT;
				buf_printf(&what, "flush: %zu deferred message(s) moved to queue",
					   moved);
				audit_line(&audit, what.data);
				audit_record(sp, &audit);
				buf_deinit(&audit);
				buf_deinit(&what);
			}
			flock(sp->dir_fd, LOCK_UN);
			break;
		}
		if (errno != EWOULDBLOCK || now_ms() >= deadline) {
			buf_printf(&out,
				   "pickupd holds the spool but does not answer on %s (starting or "
				   "stopping?); try again",
				   cfg->control.socket);
			rc = EXIT_BUSY;
			break;
		}
		sleep_ms(200);
	}
	if (json)
		jprint(json_pack("{s:s,s:s,s:s,s:o,s:I}", "command", "flush", "via", via, "result",
				 rc == 0	   ? "ok"
				 : rc == EXIT_BUSY ? "busy"
						   : "error",
				 "message", jstr(out.data), "messages", (json_int_t)moved));
	else
		fprintf(rc ? stderr : stdout, "%s%s\n", rc ? "pickupctl: " : "", out.data);
	buf_deinit(&resp);
	buf_deinit(&err);
	buf_deinit(&out);
	return rc;
}

/* test-relay with --json: the transcript, line by line, and the outcome. */
static int cmd_test_relay(const struct config *cfg, const char *name)
{
#ifdef HAVE_TESTRELAY
	if (!json)
		return testrelay_run(cfg, name, stdout);
	char *text = NULL;
	size_t len = 0;
	FILE *mem = open_memstream(&text, &len);
	if (mem == NULL) {
		fprintf(stderr, "pickupctl: %s\n", strerror(errno));
		return EXIT_FAIL;
	}
	int rc = testrelay_run(cfg, name, mem);
	fclose(mem);
	json_t *lines = json_array();
	for (char *p = text; p && *p;) {
		char *nl = strchr(p, '\n');
		if (nl)
			*nl = '\0';
		json_array_append_new(lines, jstr(p));
		p = nl ? nl + 1 : NULL;
	}
	free(text);
	jprint(json_pack("{s:s,s:o,s:b,s:i,s:o}", "command", "test-relay", "relay", jstr(name),
			 "ok", rc == 0, "exit_status", rc, "transcript", lines));
	return rc;
#else
	(void)cfg;
	(void)name;
	fprintf(stderr, "pickupctl: test-relay is not available in this build\n");
	return EXIT_USAGE;
#endif
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

/* Files that stay in each pickup folder (ctl_spool_stuck). */
static json_t *stuck_report(const struct config *cfg, bool print)
{
	json_t *arr = json_array();
	int64_t now = now_ms();
	for (size_t i = 0; i < cfg->n_pickups; i++) {
		const struct config_pickup *pk = &cfg->pickups[i];
		struct ctl_stuck r;
		ctl_spool_stuck(pk, now, &r);
		size_t total = 0;
		for (int k = 0; k < STUCK_N; k++)
			total += r.count[k];
		json_t *reasons = json_object();
		for (int k = 0; k < STUCK_N; k++) {
			json_t *ex = json_array();
			for (size_t e = 0; e < r.count[k] && e < CTL_STUCK_EXAMPLES; e++)
				json_array_append_new(ex, jstr(r.examples[k][e]));
			json_object_set_new(reasons, ctl_stuck_names[k],
					    json_pack("{s:I,s:o}", "count", (json_int_t)r.count[k],
						      "examples", ex));
		}
		json_array_append_new(
		    arr,
		    json_pack("{s:o,s:o,s:o,s:I,s:I,s:o}", "pickup", jstr(pk->name), "dir",
			      jstr(pk->dir), "error", r.err ? jstr(strerror(r.err)) : json_null(),
			      "stuck_after_seconds", (json_int_t)(ctl_stuck_age_ms(pk) / 1000),
			      "files", (json_int_t)total, "reasons", reasons));
		if (print && r.err) {
			printf("pickup %s: cannot read %s: %s\n", pk->name, pk->dir,
			       strerror(r.err));
		} else if (print && total) {
			printf("pickup %s: %zu file(s) stay in %s:", pk->name, total, pk->dir);
			const char *sep = " ";
			for (int k = 0; k < STUCK_N; k++) {
				if (!r.count[k])
					continue;
				printf("%s%zu %s (", sep, r.count[k], ctl_stuck_names[k]);
				for (size_t e = 0; e < r.count[k] && e < CTL_STUCK_EXAMPLES; e++) {
					printf("%s", e ? ", " : "");
					put_short(stdout, r.examples[k][e], 60);
				}
				printf("%s)", r.count[k] > CTL_STUCK_EXAMPLES ? ", ..." : "");
				sep = "; ";
			}
			printf("\n");
		}
		ctl_stuck_deinit(&r);
	}
	return arr;
}

static int cmd_status(const struct config *cfg, struct spool *sp)
{
	struct daemon_status ds;
	struct buf resp = BUF_INIT, err = BUF_INIT;
	memset(&ds, 0, sizeof(ds));
	int r = ctl_request(cfg->control.socket, "status", &resp, &err);
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
		json_t *d = json_pack("{s:b}", "running", ds.running);
		if (ds.running) {
			json_t *relays = json_array();
			for (size_t i = 0; i < ds.n_relays; i++)
				json_array_append_new(
				    relays,
				    json_pack("{s:o,s:i,s:b,s:I,s:i,s:i}", "name",
					      jstr(ds.relays[i].name), "sessions",
					      (int)ds.relays[i].sessions, "paused",
					      ds.relays[i].paused_s != 0, "paused_seconds",
					      (json_int_t)ds.relays[i].paused_s,
					      "concurrency_limit", (int)ds.relays[i].limit,
					      "max_sessions", (int)ds.relays[i].max_sessions));
			json_object_set_new(d, "pid", json_integer(ds.pid));
			json_object_set_new(d, "version", jstr(ds.version));
			json_object_set_new(d, "stopping", json_boolean(ds.stopping));
			json_object_set_new(d, "scheduled", jsize(ds.queued));
			json_object_set_new(d, "sessions", json_integer(ds.sessions));
			json_object_set_new(d, "relays", relays);
		}
		json_t *c = json_object();
		for (int s = 0; s < SPOOL_N_STATES; s++)
			json_object_set_new(c, spool_state_names[s], jsize(counts[s]));
		json_t *rs = json_array();
		for (size_t i = 0; i < shown; i++)
			json_array_append_new(rs, json_pack("{s:o,s:I}", "reply",
							    jstr(reasons[i].reply), "messages",
							    (json_int_t)reasons[i].messages));
		jprint(json_pack("{s:o,s:o,s:o,s:o,s:o,s:o}", "daemon", d, "counts", c, "oldest_id",
				 oldest ? jstr(oldest_id) : json_null(), "oldest_age_seconds",
				 oldest
				     ? json_real((double)(now > oldest ? now - oldest : 0) / 1000.0)
				     : json_null(),
				 "deferred_reasons", rs, "pickup_stuck", stuck_report(cfg, false)));
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
				put_short(stdout, reasons[i].reply, REPLY_WIDTH);
				printf("\n");
			}
			if (n_reasons > shown)
				printf("    ... and %zu other replies\n", n_reasons - shown);
		}
		json_decref(stuck_report(cfg, true));
	}
	for (size_t i = 0; i < n_reasons; i++)
		free(reasons[i].reply);
	free(reasons);
	buf_deinit(&resp);
	buf_deinit(&err);
	if (rc == 0 && !ds.running)
		rc = EXIT_NOT_RUNNING;
	return rc;
}

/* ---- list, summary and show -------------------------------------------------------------- */

static json_t *json_env(const struct spool_env *e, enum spool_state st)
{
	json_t *rcpts = json_array();
	for (size_t i = 0; i < e->n_rcpts; i++)
		json_array_append_new(rcpts, json_pack("{s:o,s:s,s:o}", "address",
						       jstr(e->rcpts[i].addr), "status",
						       spool_rcpt_status_names[e->rcpts[i].status],
						       "reply", jstr(e->rcpts[i].reply)));
	return json_pack("{s:o,s:s,s:o,s:o,s:o,s:o,s:I,s:o,s:o,s:o,s:o,s:o}", "id", jstr(e->id),
			 "state", spool_state_names[st], "arrival", jtime(e->arrival_ms), "size",
			 jsize(e->size), "sender", jstr(e->sender), "recipients", rcpts, "attempts",
			 (json_int_t)e->attempts, "next_attempt",
			 jtime(st == SPOOL_DEFERRED ? e->next_ms : 0), "last_reply",
			 jstr(last_reply(e)), "reason", jstr(e->reason), "pickup",
			 jstr(e->origin_pickup), "file", jstr(e->origin_file));
}

static void text_line(const struct spool_env *e, enum spool_state st)
{
	char t1[32], t2[32];
	printf("%s %-8s %s %8" PRIu64 " <", e->id, spool_state_names[st],
	       fmt_time(e->arrival_ms, t1, sizeof(t1)), e->size);
	put_short(stdout, e->sender ? e->sender : "", 80);
	printf(">");
	for (size_t i = 0; i < e->n_rcpts; i++) {
		printf("%s<", i ? ", " : " -> ");
		put_short(stdout, e->rcpts[i].addr, 80);
		printf("> %s", spool_rcpt_status_names[e->rcpts[i].status]);
	}
	if (st == SPOOL_DEFERRED)
		printf("; next %s", fmt_time(e->next_ms, t2, sizeof(t2)));
	const char *rep = last_reply(e);
	if (rep) {
		printf("; ");
		put_short(stdout, rep, REPLY_WIDTH);
	}
	printf("\n");
}

/* What list and summary select: a state (or all), an age, a domain. */
struct filter {
	int state;	    /* -1 = all */
	int64_t older_ms;   /* arrival at least this long ago; 0 = any */
	const char *domain; /* a recipient in this domain (no case); NULL = any */
	int64_t now;
};

static const char *domain_of(const char *addr)
{
	const char *at = addr ? strrchr(addr, '@') : NULL;
	return at ? at + 1 : "";
}

static bool selected(const struct filter *f, const struct spool_env *e)
{
	if (f->older_ms && e->arrival_ms > f->now - f->older_ms)
		return false;
	if (f->domain == NULL)
		return true;
	for (size_t i = 0; i < e->n_rcpts; i++)
		if (strcasecmp(domain_of(e->rcpts[i].addr), f->domain) == 0)
			return true;
	return false;
}

/* Calls fn for each readable envelope the filter selects, in state order,
 * then ID (arrival) order; bad(...) for each one that cannot be read. */
typedef void (*env_fn)(void *arg, const struct spool_env *e, enum spool_state st);
typedef void (*bad_fn)(void *arg, const char *id, enum spool_state st, const char *why);
static int each_env(struct spool *sp, const struct filter *f, env_fn fn, bad_fn bad, void *arg)
{
	int rc = 0;
	for (int s = 0; s < SPOOL_N_STATES; s++) {
		char **ids;
		size_t n;
		if (f->state >= 0 && s != f->state)
			continue;
		if (spool_list(sp, (enum spool_state)s, &ids, &n) < 0) {
			fprintf(stderr, "pickupctl: cannot list %s: %s\n", spool_state_names[s],
				strerror(errno));
			rc = EXIT_FAIL;
			continue;
		}
		for (size_t i = 0; i < n; i++) {
			struct spool_env e;
			struct buf why = BUF_INIT;
			if (spool_env_read(sp, (enum spool_state)s, ids[i], &e, &why) < 0) {
				/* Gone meanwhile is not worth a line; a filter cannot
				 * look into a corrupt one, so it shows only unfiltered. */
				if (errno != ENOENT && bad && !f->older_ms && !f->domain)
					bad(arg, ids[i], (enum spool_state)s, why.data);
			} else {
				if (selected(f, &e))
					fn(arg, &e, (enum spool_state)s);
				spool_env_deinit(&e);
			}
			buf_deinit(&why);
		}
		spool_list_free(ids, n);
	}
	return rc;
}

struct list_acc {
	json_t *arr;
	size_t messages;
	uint64_t bytes;
};

static void list_env(void *arg, const struct spool_env *e, enum spool_state st)
{
	struct list_acc *a = arg;
	a->messages++;
	a->bytes += e->size;
	if (json)
		json_array_append_new(a->arr, json_env(e, st));
	else
		text_line(e, st);
}

static void list_bad(void *arg, const char *id, enum spool_state st, const char *why)
{
	struct list_acc *a = arg;
	a->messages++;
	if (json) {
		json_array_append_new(a->arr, json_pack("{s:o,s:s,s:o}", "id", jstr(id), "state",
							spool_state_names[st], "error", jstr(why)));
	} else {
		printf("%s %-8s ", id, spool_state_names[st]);
		put_short(stdout, why, 120);
		printf("\n");
	}
}

static int cmd_list(struct spool *sp, const struct filter *f)
{
	struct list_acc a = {json ? json_array() : NULL, 0, 0};
	if (!json)
		printf("%-20s %-8s %-19s %8s %s\n", "-Queue ID-", "-State-", "-Arrival-", "-Size-",
		       "-Sender -> Recipients; next attempt; last reply-");
	int rc = each_env(sp, f, list_env, list_bad, &a);
	if (json)
		jprint(a.arr);
	else if (a.messages == 0)
		printf("-- 0 Kbytes in 0 Requests. (the queue is empty)\n");
	else
		printf("-- %" PRIu64 " Kbytes in %zu Request%s.\n", (a.bytes + 1023) / 1024,
		       a.messages, a.messages == 1 ? "" : "s");
	return rc;
}

/* summary: qshape's table, recipient domain x age since arrival. */
static const int bucket_minutes[N_BUCKETS - 1] = {5, 10, 20, 40, 80, 160, 320, 640, 1280};

struct shape_row {
	char *domain; /* lower case */
	size_t total, b[N_BUCKETS];
};

struct shape {
	struct shape_row total;
	struct shape_row *rows;
	size_t n;
	int64_t now;
};

static size_t bucket_of(int64_t age_ms)
{
	int64_t min = age_ms / 60000;
	for (size_t i = 0; i < N_BUCKETS - 1; i++)
		if (min < bucket_minutes[i])
			return i;
	return N_BUCKETS - 1;
}

static void shape_env(void *arg, const struct spool_env *e, enum spool_state st)
{
	struct shape *sh = arg;
	(void)st;
	size_t bk = bucket_of(sh->now > e->arrival_ms ? sh->now - e->arrival_ms : 0);
	sh->total.total++;
	sh->total.b[bk]++;
	/* Once per domain per message, for the recipients not yet sent. */
	for (size_t i = 0; i < e->n_rcpts; i++) {
		if (e->rcpts[i].status == RCPT_SENT)
			continue;
		const char *dom = domain_of(e->rcpts[i].addr);
		bool seen = false;
		for (size_t k = 0; k < i && !seen; k++)
			seen = e->rcpts[k].status != RCPT_SENT &&
			       strcasecmp(domain_of(e->rcpts[k].addr), dom) == 0;
		if (seen)
			continue;
		size_t r;
		for (r = 0; r < sh->n; r++)
			if (strcasecmp(sh->rows[r].domain, dom) == 0)
				break;
		if (r == sh->n) {
			sh->rows = xrealloc(sh->rows, (sh->n + 1) * sizeof(*sh->rows));
			memset(&sh->rows[r], 0, sizeof(sh->rows[r]));
			sh->rows[r].domain = xstrdup(dom);
			for (char *p = sh->rows[r].domain; *p; p++)
				if (*p >= 'A' && *p <= 'Z')
					*p = (char)(*p - 'A' + 'a');
			sh->n++;
		}
		sh->rows[r].total++;
		sh->rows[r].b[bk]++;
	}
}

static int cmp_row(const void *a, const void *b)
{
	const struct shape_row *x = a, *y = b;
	if (x->total != y->total)
		return x->total < y->total ? 1 : -1;
	return strcmp(x->domain, y->domain);
}

static json_t *json_row(const struct shape_row *r)
{
	json_t *b = json_array();
	for (size_t i = 0; i < N_BUCKETS; i++)
		json_array_append_new(b, jsize(r->b[i]));
	return json_pack("{s:o,s:I,s:o}", "domain", r->domain ? jstr(r->domain) : json_null(),
			 "total", (json_int_t)r->total, "buckets", b);
}

static void text_row(const char *name, const struct shape_row *r, int width)
{
	printf("%*.*s %6zu", width, width, name, r->total);
	for (size_t i = 0; i < N_BUCKETS; i++)
		printf(" %5zu", r->b[i]);
	printf("\n");
}

static int cmd_summary(struct spool *sp, const struct filter *f)
{
	struct shape sh;
	memset(&sh, 0, sizeof(sh));
	sh.now = f->now;
	int rc = each_env(sp, f, shape_env, NULL, &sh);
	if (sh.n > 1)
		qsort(sh.rows, sh.n, sizeof(*sh.rows), cmp_row);
	if (json) {
		json_t *mins = json_array(), *rows = json_array();
		for (size_t i = 0; i < N_BUCKETS - 1; i++)
			json_array_append_new(mins, json_integer(bucket_minutes[i]));
		for (size_t i = 0; i < sh.n; i++)
			json_array_append_new(rows, json_row(&sh.rows[i]));
		jprint(json_pack(
		    "{s:o,s:o,s:o,s:o}", "state",
		    f->state >= 0 ? json_string(spool_state_names[f->state]) : json_null(),
		    "bucket_minutes", mins, "total", json_row(&sh.total), "domains", rows));
	} else {
		int width = 22;
		for (size_t i = 0; i < sh.n; i++)
			if ((int)strlen(sh.rows[i].domain) > width &&
			    strlen(sh.rows[i].domain) < 60)
				width = (int)strlen(sh.rows[i].domain);
		printf("%*s %6s", width, "", "T");
		for (size_t i = 0; i < N_BUCKETS - 1; i++)
			printf(" %5d", bucket_minutes[i]);
		printf(" %5s\n", "1280+");
		text_row("TOTAL", &sh.total, width);
		for (size_t i = 0; i < sh.n; i++) {
			/* Outside text: control characters never reach the terminal. */
			for (char *p = sh.rows[i].domain; *p; p++)
				if ((unsigned char)*p < 0x20 || *p == 0x7f)
					*p = '?';
			text_row(sh.rows[i].domain, &sh.rows[i], width);
		}
	}
	for (size_t i = 0; i < sh.n; i++)
		free(sh.rows[i].domain);
	free(sh.rows);
	return rc;
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
		json_t *doc = json_env(&e, (enum spool_state)st), *h = json_array();
		for (size_t i = 0; i < n_lines; i++)
			json_array_append_new(h, jstr(lines[i]));
		json_object_set_new(doc, "headers", h);
		json_object_set_new(doc, "content_error", jstr(unread));
		jprint(doc);
	} else {
		char t[32];
		printf("id:           %s\n", e.id);
		printf("state:        %s\n", spool_state_names[st]);
		printf("arrival:      %s\n", fmt_time(e.arrival_ms, t, sizeof(t)));
		printf("size:         %" PRIu64 "\n", e.size);
		printf("from pickup:  %s, file ", e.origin_pickup ? e.origin_pickup : "-");
		put_short(stdout, e.origin_file ? e.origin_file : "-", 200);
		printf("\nsender:       <");
		put_short(stdout, e.sender ? e.sender : "", 200);
		printf(">\nattempts:     %u\n", e.attempts);
		if (st == SPOOL_DEFERRED)
			printf("next attempt: %s\n", fmt_time(e.next_ms, t, sizeof(t)));
		if (e.reason) {
			printf("reason:       ");
			put_short(stdout, e.reason, 500);
			printf("\n");
		}
		for (size_t i = 0; i < e.n_rcpts; i++) {
			printf("recipient:    <");
			put_short(stdout, e.rcpts[i].addr, 200);
			printf("> %s", spool_rcpt_status_names[e.rcpts[i].status]);
			if (e.rcpts[i].reply) {
				printf(": ");
				put_short(stdout, e.rcpts[i].reply, 500);
			}
			printf("\n");
		}
		if (unread)
			printf("content:      %s\n", unread);
		else
			printf("content (first header lines):\n");
		for (size_t i = 0; i < n_lines; i++) {
			printf("  ");
			put_short(stdout, lines[i], 200);
			printf("\n");
		}
	}
	for (size_t i = 0; i < n_lines; i++)
		free(lines[i]);
	free(lines);
	spool_env_deinit(&e);
	return 0;
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
	    {"older-than", required_argument, NULL, 'o'},
	    {"to", required_argument, NULL, 't'},
	    {"wait", required_argument, NULL, 'w'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	const char *path = NULL, *state = NULL, *to = NULL;
	int64_t older_ms = -1;
	int ch;
	log_set_tool("pickupctl");
	set_operator_who();
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
		case 'o': {
			uint64_t ms;
			if (config_parse_duration(optarg, &ms) < 0 ||
			    ms > (uint64_t)INT64_MAX / 2) {
				fprintf(stderr,
					"pickupctl: --older-than takes a duration (30s 15m 2h "
					"7d)\n");
				return EXIT_USAGE;
			}
			older_ms = (int64_t)ms;
			break;
		}
		case 't':
			to = optarg;
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
	char **args = argv + optind + 1;
	int nargs = argc - optind - 1;
	int steer_cmd = ctl_cmd_from_name(cmd);
	bool is_purge = strcmp(cmd, "purge") == 0;
	bool no_arg = strcmp(cmd, "status") == 0 || strcmp(cmd, "list") == 0 ||
		      strcmp(cmd, "summary") == 0 || strcmp(cmd, "flush") == 0 || is_purge;
	bool one_arg = strcmp(cmd, "show") == 0;
	bool test_relay = strcmp(cmd, "test-relay") == 0;
	if (!no_arg && !one_arg && !test_relay && steer_cmd < 0) {
		fprintf(stderr, "pickupctl: unknown command %s\n", cmd);
		usage(stderr);
		return EXIT_USAGE;
	}
	if ((no_arg && nargs != 0) || (one_arg && nargs != 1) || (test_relay && nargs > 1)) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (one_arg && !spool_id_valid(args[0])) {
		fprintf(stderr, "pickupctl: not a queue ID: %s (20 hexadecimal digits)\n", args[0]);
		return EXIT_FAIL;
	}
	bool lists = strcmp(cmd, "list") == 0 || strcmp(cmd, "summary") == 0;
	if (state && !lists) {
		fprintf(stderr, "pickupctl: --state goes with list and summary\n");
		return EXIT_USAGE;
	}
	if (to && strcmp(cmd, "list") != 0) {
		fprintf(stderr, "pickupctl: --to goes with list\n");
		return EXIT_USAGE;
	}
	if (older_ms >= 0 && strcmp(cmd, "list") != 0 && !is_purge) {
		fprintf(stderr, "pickupctl: --older-than goes with list and purge\n");
		return EXIT_USAGE;
	}
	struct filter flt = {-1, older_ms > 0 ? older_ms : 0, to, now_ms()};
	if (state && (flt.state = spool_state_from_name(state)) < 0) {
		fprintf(stderr, "pickupctl: unknown state %s (queue|deferred|hold|badmail)\n",
			state);
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
	if (test_relay) {
		rc = cmd_test_relay(cfg, nargs ? args[0] : NULL);
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
		rc = cmd_list(&sp, &flt);
	else if (strcmp(cmd, "summary") == 0)
		rc = cmd_summary(&sp, &flt);
	else if (one_arg)
		rc = cmd_show(&sp, args[0]);
	else if (strcmp(cmd, "flush") == 0)
		rc = cmd_flush(cfg, &sp);
	else if (is_purge)
		rc = cmd_purge(cfg, &sp, older_ms);
	else
		rc = cmd_ids(cfg, &sp, (enum ctl_cmd)steer_cmd, args, nargs);
	fflush(stdout);
	spool_close(&sp);
	config_free(cfg);
	return rc;
}
