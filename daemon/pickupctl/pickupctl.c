/*
 * Purpose: pickupctl, the operator's tool: inspect the queue (status, list,
 * summary, show) from the spool alone, and steer it (flush, retry, hold,
 * release, delete, requeue, purge; one ID, several, ALL [STATE], or IDs on
 * stdin) through the daemon's control socket when it runs, or on the spool
 * directly when it does not; test-relay checks a relay by hand. --json on
 * every command (schema: README, pickupctl section; ctl_json.h), through jansson.
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
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/config.h"
#include "common/esc.h"
#include "common/log.h"
#include "daemon/queue/ctl_client.h"
#include "daemon/listing/ctl_json.h"
#include "daemon/listing/ctl_list.h"
#include "daemon/queue/ctl_proto.h"
#include "daemon/queue/ctl_spool.h"
#include "spool/spool.h"

#if defined(__has_include)
#if __has_include("daemon/pickupctl/testrelay.h")
#include "daemon/pickupctl/testrelay.h"
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

/* ---- text helpers ------------------------------------------------------------------------ */

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

/* Each line of err on stderr, after "pickupctl: "; err is freed. */
static void print_errors(struct buf *err)
{
	for (char *line = err->data, *nl; line && (nl = strchr(line, '\n')); line = nl + 1)
		fprintf(stderr, "pickupctl: %.*s\n", (int)(nl - line), line);
	buf_deinit(err);
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
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

/* The same operations as ctl.c, on the spool directly (daemon down, lock
 * held); each change recorded for the daemon's log. */
static void steer_direct(struct spool *sp, enum spool_op cmd, struct spool_op_item *items, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (items[i].result != SPOOL_OP_PENDING)
			continue;
		items[i].from = spool_locate(sp, items[i].id);
		spool_op_plan(cmd, &items[i]);
		if (items[i].result != SPOOL_OP_PENDING)
			items[i].act = SPOOL_ACT_NONE;
	}
	spool_op_apply(sp, cmd, items, n);
	struct buf audit = BUF_INIT, what = BUF_INIT;
	for (size_t i = 0; i < n; i++) {
		if (items[i].act == SPOOL_ACT_NONE || items[i].result != SPOOL_OP_OK)
			continue;
		buf_clear(&what);
		buf_printf(&what, "%s: %s (was in %s)", items[i].id, spool_op_done(cmd),
			   spool_state_names[items[i].from]);
		audit_line(&audit, what.data);
		items[i].act = SPOOL_ACT_NONE; /* done: a later round must not redo it */
	}
	audit_record(sp, &audit);
	buf_deinit(&audit);
	buf_deinit(&what);
}

/* Through the daemon when it answers (one round trip per BATCH_MAX IDs),
 * else on the spool under its lock; "busy" answers and a daemon starting or
 * stopping are waited out for --wait. Sets every item's result. */
static void steer(const struct config *cfg, struct spool *sp, enum spool_op cmd,
		  struct spool_op_item *items, size_t n, const char **via_r)
{
	struct spool_op_item **todo = xcalloc(n ? n : 1, sizeof(*todo));
	struct buf err = BUF_INIT;
	int64_t deadline = now_ms() + busy_wait_ms;
	*via_r = "daemon";
	for (;;) {
		size_t k = 0;
		for (size_t i = 0; i < n; i++)
			if (items[i].result == SPOOL_OP_PENDING)
				todo[k++] = &items[i];
		if (k == 0)
			break;
		int r = 1;
		buf_clear(&err);
		for (size_t off = 0; off < k && r > 0; off += BATCH_MAX)
			r = ctl_client_batch(cfg->control.socket, cmd, todo + off,
					     k - off < BATCH_MAX ? k - off : BATCH_MAX, &err);
		if (r < 0) {
			for (size_t i = 0; i < k; i++)
				if (todo[i]->result == SPOOL_OP_PENDING)
					spool_op_set(todo[i], SPOOL_OP_FAILED, "%s", err.data);
			break;
		}
		if (r > 0) {
			bool busy = false;
			for (size_t i = 0; i < k; i++)
				busy |= todo[i]->result == SPOOL_OP_BUSY;
			if (!busy || now_ms() >= deadline)
				break;
			sleep_ms(200);
			for (size_t i = 0; i < k; i++)
				if (todo[i]->result == SPOOL_OP_BUSY)
					todo[i]->result = SPOOL_OP_PENDING;
			continue;
		}
		/* No daemon answers: work on the spool if none holds it. */
		if (spool_lock(sp, 0) == 0) {
			*via_r = "spool";
			steer_direct(sp, cmd, items, n);
			spool_unlock(sp);
			break;
		}
		int e = errno;
		if (e != EWOULDBLOCK || now_ms() >= deadline) {
			for (size_t i = 0; i < k; i++) {
				if (e != EWOULDBLOCK)
					spool_op_set(todo[i], SPOOL_OP_FAILED,
						     "cannot lock the spool %s: %s", sp->dir,
						     strerror(e));
				else
					spool_op_set(
					    todo[i], SPOOL_OP_BUSY,
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
static int report(enum spool_op cmd, const char *via, struct spool_op_item *items, size_t n,
		  json_t *extra)
{
	size_t count[4] = {0};
	json_t *results = json ? json_array() : NULL;
	for (size_t i = 0; i < n; i++) {
		const struct spool_op_item *it = &items[i];
		count[it->result]++;
		if (json) {
			json_array_append_new(
			    results, json_pack("{s:o,s:s,s:o}", "id",
					       it->id[0] ? json_string(it->id) : json_null(),
					       "result", ctl_result_names[it->result], "message",
					       ctl_json_str(it->text)));
		} else if (it->result == SPOOL_OP_OK) {
			ctl_list_put_short(stdout, it->text, 500);
			printf("\n");
		} else {
			fflush(stdout);
			fprintf(stderr, "pickupctl: ");
			ctl_list_put_short(stderr, it->text, 500);
			fprintf(stderr, "\n");
		}
	}
	if (json) {
		json_t *doc = json_pack(
		    "{s:s,s:s,s:o,s:I,s:I,s:I}", "command", spool_op_names[cmd], "via", via,
		    "results", results, "ok", (json_int_t)count[SPOOL_OP_OK], "failed",
		    (json_int_t)count[SPOOL_OP_FAILED], "busy", (json_int_t)count[SPOOL_OP_BUSY]);
		if (extra)
			json_object_update(doc, extra);
		ctl_json_print(stdout, doc);
	} else if (n != 1) {
		printf("%zu of %zu message(s): %s", count[SPOOL_OP_OK], n, spool_op_done(cmd));
		if (count[SPOOL_OP_FAILED] || count[SPOOL_OP_BUSY])
			printf("; %zu failed, %zu busy", count[SPOOL_OP_FAILED],
			       count[SPOOL_OP_BUSY]);
		printf("\n");
	}
	json_decref(extra);
	if (count[SPOOL_OP_FAILED])
		return EXIT_FAIL;
	return count[SPOOL_OP_BUSY] ? EXIT_BUSY : 0;
}

static void add_item(struct spool_op_item **v, size_t *n, size_t *cap, const char *id)
{
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 64;
		*v = xrealloc(*v, *cap * sizeof(**v));
	}
	struct spool_op_item *it = &(*v)[(*n)++];
	memset(it, 0, sizeof(*it));
	it->from = -1;
	if (spool_id_valid(id)) {
		memcpy(it->id, id, SPOOL_ID_LEN + 1);
	} else {
		struct buf b = BUF_INIT;
		buf_append(&b, id, strnlen(id, 80));
		spool_op_set(it, SPOOL_OP_FAILED, "not a queue ID: %s (20 hexadecimal digits)",
			     b.data);
		buf_deinit(&b);
	}
}

static int cmp_items(const void *a, const void *b)
{
	return strcmp(((const struct spool_op_item *)a)->id, ((const struct spool_op_item *)b)->id);
}

/* IDS: several IDs, ALL, ALL STATE, or - (stdin). Sorted, each once. 0, or
 * an exit status after a message. */
static int gather_ids(struct spool *sp, enum spool_op cmd, char **args, int nargs,
		      struct spool_op_item **items_r, size_t *n_r)
{
	struct spool_op_item *v = NULL;
	size_t n = 0, cap = 0;
	*items_r = NULL;
	*n_r = 0;
	if (nargs == 0) {
		fprintf(stderr, "pickupctl: %s needs queue IDs, ALL [STATE], or - (stdin)\n",
			spool_op_names[cmd]);
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
			if (only >= 0 ? s != only : !spool_op_applies(cmd, (enum spool_state)s))
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

static void items_free(struct spool_op_item *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		spool_op_item_deinit(&v[i]);
	free(v);
}

static int cmd_ids(const struct config *cfg, struct spool *sp, enum spool_op cmd, char **args,
		   int nargs)
{
	struct spool_op_item *items;
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
	struct spool_op_item *items = xcalloc(nb ? nb : 1, sizeof(*items));
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
	steer(cfg, sp, SPOOL_OP_PURGE, items, n, &via);
	uint64_t bytes = 0;
	for (size_t i = 0; i < n; i++) {
		if (items[i].result != SPOOL_OP_OK)
			continue;
		for (size_t k = 0; k < nb; k++)
			if (strcmp(bm[k].id, items[i].id) == 0)
				bytes += bm[k].bytes;
	}
	if (!json && n == 0)
		printf("no badmail entry is older than %lld s\n", (long long)(older_ms / 1000));
	int rc = report(SPOOL_OP_PURGE, via, items, n,
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
		int r = ctl_client_request(cfg->control.socket, "flush", &resp, &err);
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
		if (spool_lock(sp, 0) == 0) {
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
			spool_unlock(sp);
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
		ctl_json_print(stdout, json_pack("{s:s,s:s,s:s,s:o,s:I}", "command", "flush", "via",
						 via, "result",
						 rc == 0	   ? "ok"
						 : rc == EXIT_BUSY ? "busy"
								   : "error",
						 "message", ctl_json_str(out.data), "messages",
						 (json_int_t)moved));
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
		json_array_append_new(lines, ctl_json_str(p));
		p = nl ? nl + 1 : NULL;
	}
	free(text);
	ctl_json_print(stdout, json_pack("{s:s,s:o,s:b,s:i,s:o}", "command", "test-relay", "relay",
					 ctl_json_str(name), "ok", rc == 0, "exit_status", rc,
					 "transcript", lines));
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
				json_array_append_new(ex, ctl_json_str(r.examples[k][e]));
			json_object_set_new(reasons, ctl_stuck_names[k],
					    json_pack("{s:I,s:o}", "count", (json_int_t)r.count[k],
						      "examples", ex));
		}
		json_array_append_new(
		    arr, json_pack("{s:o,s:o,s:o,s:I,s:I,s:o}", "pickup", ctl_json_str(pk->name),
				   "dir", ctl_json_str(pk->dir), "error",
				   r.err ? ctl_json_str(strerror(r.err)) : json_null(),
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
					ctl_list_put_short(stdout, r.examples[k][e], 60);
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
	struct ctl_status ds;
	memset(&ds, 0, sizeof(ds));
	struct buf resp = BUF_INIT, err = BUF_INIT;
	int r = ctl_client_request(cfg->control.socket, "status", &resp, &err);
	bool running = r > 0 && ctl_parse_status(resp.data, &ds) == 0;

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
		json_t *d = json_pack("{s:b}", "running", running);
		if (running) {
			json_t *relays = json_array();
			for (size_t i = 0; i < ds.n_relays; i++)
				json_array_append_new(
				    relays,
				    json_pack("{s:o,s:i,s:b,s:I,s:i,s:i}", "name",
					      ctl_json_str(ds.relays[i].name), "sessions",
					      (int)ds.relays[i].sessions, "paused",
					      ds.relays[i].paused_s != 0, "paused_seconds",
					      (json_int_t)ds.relays[i].paused_s,
					      "concurrency_limit", (int)ds.relays[i].limit,
					      "max_sessions", (int)ds.relays[i].max_sessions));
			json_object_set_new(d, "pid", json_integer(ds.pid));
			json_object_set_new(d, "version", ctl_json_str(ds.version));
			json_object_set_new(d, "stopping", json_boolean(ds.stopping));
			json_object_set_new(d, "scheduled", json_integer((json_int_t)ds.queued));
			json_object_set_new(d, "sessions", json_integer(ds.sessions));
			json_object_set_new(d, "relays", relays);
		}
		json_t *c = json_object();
		for (int s = 0; s < SPOOL_N_STATES; s++)
			json_object_set_new(c, spool_state_names[s],
					    json_integer((json_int_t)counts[s]));
		json_t *rs = json_array();
		for (size_t i = 0; i < shown; i++)
			json_array_append_new(
			    rs, json_pack("{s:o,s:I}", "reply", ctl_json_str(reasons[i].reply),
					  "messages", (json_int_t)reasons[i].messages));
		ctl_json_print(
		    stdout,
		    json_pack("{s:o,s:o,s:o,s:o,s:o,s:o}", "daemon", d, "counts", c, "oldest_id",
			      oldest ? ctl_json_str(oldest_id) : json_null(), "oldest_age_seconds",
			      oldest ? json_real((double)(now > oldest ? now - oldest : 0) / 1000.0)
				     : json_null(),
			      "deferred_reasons", rs, "pickup_stuck", stuck_report(cfg, false)));
	} else {
		if (running) {
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
		json_decref(stuck_report(cfg, true));
	}
	for (size_t i = 0; i < n_reasons; i++)
		free(reasons[i].reply);
	free(reasons);
	buf_deinit(&resp);
	buf_deinit(&err);
	if (rc == 0 && !running)
		rc = EXIT_NOT_RUNNING;
	return rc;
}

/* ---- list, summary and show -------------------------------------------------------------- */

/* ctl_list_each with its errors on stderr: 0 or EXIT_FAIL. */
static int list_each(struct spool *sp, const struct ctl_filter *f, ctl_list_fn fn, void *arg)
{
	struct buf err = BUF_INIT;
	long n = ctl_list_each(sp, f, fn, arg, &err);
	print_errors(&err);
	return n < 0 ? EXIT_FAIL : 0;
}

static int cmd_list(struct spool *sp, const struct ctl_filter *f)
{
	struct buf err = BUF_INIT;
	long n = ctl_list_print(sp, f, json, stdout, &err);
	fflush(stdout);
	print_errors(&err);
	return n < 0 ? EXIT_FAIL : 0;
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

static void shape_env(void *arg, enum spool_state st, const char *id, const struct spool_env *e,
		      const char *why)
{
	struct shape *sh = arg;
	(void)st;
	(void)id;
	(void)why;
	if (e == NULL)
		return; /* unreadable: list shows it */
	size_t bk = bucket_of(sh->now > e->arrival_ms ? sh->now - e->arrival_ms : 0);
	sh->total.total++;
	sh->total.b[bk]++;
	/* Once per domain per message, for the recipients not yet sent. */
	for (size_t i = 0; i < e->n_rcpts; i++) {
		if (e->rcpts[i].status == RCPT_SENT)
			continue;
		const char *dom = ctl_list_domain(e->rcpts[i].addr);
		bool seen = false;
		for (size_t k = 0; k < i && !seen; k++)
			seen = e->rcpts[k].status != RCPT_SENT &&
			       strcasecmp(ctl_list_domain(e->rcpts[k].addr), dom) == 0;
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
		json_array_append_new(b, json_integer((json_int_t)r->b[i]));
	return json_pack("{s:o,s:I,s:o}", "domain",
			 r->domain ? ctl_json_str(r->domain) : json_null(), "total",
			 (json_int_t)r->total, "buckets", b);
}

static void text_row(const char *name, const struct shape_row *r, int width)
{
	printf("%*.*s %6zu", width, width, name, r->total);
	for (size_t i = 0; i < N_BUCKETS; i++)
		printf(" %5zu", r->b[i]);
	printf("\n");
}

static int cmd_summary(struct spool *sp, const struct ctl_filter *f)
{
	struct shape sh;
	memset(&sh, 0, sizeof(sh));
	sh.now = f->now_ms;
	int rc = list_each(sp, f, shape_env, &sh);
	if (sh.n > 1)
		qsort(sh.rows, sh.n, sizeof(*sh.rows), cmp_row);
	if (json) {
		json_t *mins = json_array(), *rows = json_array();
		for (size_t i = 0; i < N_BUCKETS - 1; i++)
			json_array_append_new(mins, json_integer(bucket_minutes[i]));
		for (size_t i = 0; i < sh.n; i++)
			json_array_append_new(rows, json_row(&sh.rows[i]));
		ctl_json_print(stdout,
			       json_pack("{s:o,s:o,s:o,s:o}", "state",
					 f->state >= 0 ? json_string(spool_state_names[f->state])
						       : json_null(),
					 "bucket_minutes", mins, "total", json_row(&sh.total),
					 "domains", rows));
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
	int st = spool_locate(sp, id);
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
		json_t *doc = ctl_json_env(&e, (enum spool_state)st), *h = json_array();
		for (size_t i = 0; i < n_lines; i++)
			json_array_append_new(h, ctl_json_str(lines[i]));
		json_object_set_new(doc, "headers", h);
		json_object_set_new(doc, "content_error", ctl_json_str(unread));
		ctl_json_print(stdout, doc);
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
	int steer_cmd = spool_op_from_name(cmd);
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
	struct ctl_filter flt = {-1, older_ms > 0 ? older_ms : 0, to, now_ms()};
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
		rc = cmd_ids(cfg, &sp, (enum spool_op)steer_cmd, args, nargs);
	fflush(stdout);
	spool_close(&sp);
	config_free(cfg);
	return rc;
}
