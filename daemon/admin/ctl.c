/*
 * Purpose: the control socket (protocol: ctl_proto.h): pickupctl's
 * mutating commands (one ID, or batches of many) and status, applied through
 * the daemon so that its in-memory schedule stays right; badmail retention
 * ([badmail] keep, on a timer); and, at start-up, the logging of operator
 * actions pickupctl took on the spool while the daemon was down.
 * Owns: the listener (listener.c) and each connection's ctl_client, the
 * batches in flight on the thread pool, the badmail expiry timer, and the
 * spool lock for the daemon's lifetime (spool_lock; pickupctl takes it to
 * work on the spool directly, so it never does while a daemon runs, starts
 * or stops).
 * Invariants: an envelope in queue/ that the schedule does not hold belongs
 * to a session, a delivery record or an ingest job: it is never moved
 * (hold/delete answer "busy"); every other message a command touches is taken
 * out of the schedule first and put back (or not) when the spool says where
 * it ended up; one operation per ID at a time (single operations, batches and
 * badmail expiry alike); a client's connection is held (lconn_hold) while
 * its batch is in flight, so it is closed and freed only after the answer.
 */
#include "daemon/admin/ctl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "daemon/queue/ctl_client.h"
#include "daemon/queue/ctl_proto.h"
#include "daemon/queue/ctl_spool.h"
#include "daemon/admin/listener.h"
#include "daemon/core/pickupd.h"
#include "daemon/delivery/relay.h"
#include "daemon/delivery/sched.h"

#define CTL_LOCK_WAIT_MS 5000
#define EXPIRE_MIN_MS	 1000
#define EXPIRE_MAX_MS	 (3600 * 1000)

struct ctl_batch;

/* The ctl's data of one connection (lconn_data). */
struct ctl_client {
	struct ctl *ctl;
	struct lconn *conn;
	bool op_pending;	      /* a thread-pool operation will answer */
	struct ctl_batch *collecting; /* "batch CMD N": IDs still to read */
};

struct ctl {
	struct pickupd *pd;
	struct listener *listener;
	char *path;
	bool stopping;
	struct ctl_batch *batches; /* in flight on the thread pool */
	uv_timer_t expire_timer;   /* badmail retention */
	bool expire_closed;
	bool expire_running;	     /* a listing or an expiry batch is in flight */
	pickupd_closed_cb closed_cb; /* ctl_close's, until it is called */
	void *closed_arg;
};

static bool ctl_idle(const struct ctl *c)
{
	return listener_idle(c->listener) && c->expire_closed && c->batches == NULL &&
	       !c->expire_running;
}

/* Closing, and the last handle closed and operation done: tell the owner, once. */
static void maybe_closed(struct ctl *c)
{
	pickupd_closed_cb cb = c->closed_cb;
	if (cb == NULL || !ctl_idle(c))
		return;
	c->closed_cb = NULL;
	cb(c->closed_arg);
}

/*
 * Many IDs, one command: planned on the loop (spool_op_plan, schedule
 * checks), applied in one thread-pool job (spool_op_apply), answered in
 * one write. client == NULL: badmail expiry. Owner: the ctl, until done.
 */
struct ctl_batch {
	struct job job; /* first */
	struct ctl *ctl;
	struct ctl_client *client;
	enum spool_op cmd;
	struct spool_op_item *items; /* sorted by ID once planned */
	size_t n, expected;
	bool one; /* "CMD ID": answered with one line, not a batch answer */
	struct ctl_batch *next;
};

/* ---- replies --------------------------------------------------------------------------- */

/* Queues bytes for the client; nothing once it is closing. */
static void send_out(struct ctl_client *cl, const struct buf *b)
{
	lconn_write(cl->conn, b->data, b->len);
}

static void reply(struct ctl_client *cl, enum spool_op_result r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void reply(struct ctl_client *cl, enum spool_op_result r, const char *fmt, ...)
{
	struct buf b = BUF_INIT, text = BUF_INIT;
	va_list ap;
	va_start(ap, fmt);
	buf_vprintf(&text, fmt, ap);
	va_end(ap);
	ctl_put_answer(&b, r, "%s", text.data ? text.data : "");
	send_out(cl, &b);
	buf_deinit(&b);
	buf_deinit(&text);
}

/* ---- clients --------------------------------------------------------------------------- */

static void batch_free(struct ctl_batch *b)
{
	for (size_t i = 0; i < b->n; i++)
		spool_op_item_deinit(&b->items[i]);
	free(b->items);
	free(b);
}

static void client_close(struct ctl_client *cl)
{
	lconn_close(cl->conn);
}

/* Puts a message back into the schedule after an operation that failed,
 * according to where its envelope is now. */
static void resched(struct ctl *c, const char *id)
{
	struct pickupd *pd = c->pd;
	struct spool_stat st;
	int s = spool_locate(&pd->spool, id);
	if (s == SPOOL_QUEUE) {
		sched_remove(pd->sched, id);
		sched_add(pd->sched, id, SPOOL_QUEUE, 0);
	} else if (s == SPOOL_DEFERRED && spool_stat(&pd->spool, SPOOL_DEFERRED, id, &st) == 0) {
		sched_remove(pd->sched, id);
		sched_add(pd->sched, id, SPOOL_DEFERRED, st.due_ms);
	} else {
		return;
	}
	relay_pool_wake(pd->pool);
}

static void process(struct ctl_client *cl);

static int cmp_item(const void *a, const void *b)
{
	return strcmp(((const struct spool_op_item *)a)->id, ((const struct spool_op_item *)b)->id);
}

static bool id_busy(const struct ctl *c, const char *id)
{
	struct spool_op_item key;
	memcpy(key.id, id, SPOOL_ID_LEN + 1);
	for (const struct ctl_batch *b = c->batches; b; b = b->next) {
		/* act is set on the loop before the job and never changed by it. */
		const struct spool_op_item *it =
		    bsearch(&key, b->items, b->n, sizeof(*it), cmp_item);
		if (it && it->act != SPOOL_ACT_NONE)
			return true;
	}
	return false;
}

static void cmd_status(struct ctl_client *cl)
{
	struct pickupd *pd = cl->ctl->pd;
	struct relay_info info[CTL_MAX_RELAYS];
	struct ctl_status st;
	int64_t now = pickupd_now_ms();
	memset(&st, 0, sizeof(st));
	st.n_relays = relay_pool_info(pd->pool, info, CTL_MAX_RELAYS);
	if (st.n_relays > CTL_MAX_RELAYS)
		st.n_relays = CTL_MAX_RELAYS;
	for (size_t i = 0; i < st.n_relays; i++) {
		struct ctl_relay_status *rs = &st.relays[i];
		int64_t paused = info[i].paused_until_ms > now ? info[i].paused_until_ms - now : 0;
		st.sessions += info[i].sessions;
		snprintf(rs->name, sizeof(rs->name), "%s", info[i].name);
		rs->sessions = info[i].sessions;
		rs->paused_s = (long)((paused + 999) / 1000);
		rs->limit = info[i].limit;
		rs->max_sessions = info[i].max_sessions;
	}
	st.queued = sched_size(pd->sched);
	st.stopping = pd->stopping;
	st.pid = (long)getpid();
	snprintf(st.version, sizeof(st.version), "%s", PICKUPD_VERSION);
	struct buf b = BUF_INIT;
	ctl_put_status(&b, &st);
	send_out(cl, &b);
	buf_deinit(&b);
}

static void cmd_flush(struct ctl_client *cl)
{
	struct pickupd *pd = cl->ctl->pd;
	size_t n = sched_make_due(pd->sched, SPOOL_DEFERRED);
	relay_pool_unpause(pd->pool, "flush by operator"); /* wakes the pool */
	log_info("flush by operator: %zu deferred message(s) scheduled now", n);
	reply(cl, SPOOL_OP_OK, "%zu deferred message(s) scheduled now", n);
}

/* ---- batches --------------------------------------------------------------------------- */

/* Sends every item's line and the closing "end OK FAILED BUSY" in one
 * write; a single "CMD ID" gets its one answer line. */
static void batch_reply(struct ctl_client *cl, const struct ctl_batch *b)
{
	size_t count[4] = {0};
	struct buf out = BUF_INIT;
	if (b->one) {
		ctl_put_answer(&out, b->items[0].result, "%s", b->items[0].text);
	} else {
		for (size_t i = 0; i < b->n; i++) {
			count[b->items[i].result]++;
			ctl_put_item(&out, &b->items[i]);
		}
		ctl_put_end(&out, count[SPOOL_OP_OK], count[SPOOL_OP_FAILED], count[SPOOL_OP_BUSY]);
	}
	send_out(cl, &out);
	buf_deinit(&out);
}

/* The batch of cl is answered: on to its next request, unless it is closing. */
static void client_resume(struct ctl_client *cl)
{
	cl->op_pending = false;
	if (lconn_release(cl->conn))
		process(cl);
}

static void batch_fn(struct job *j)
{
	struct ctl_batch *b = (struct ctl_batch *)j;
	spool_op_apply(&j->pd->spool, b->cmd, b->items, b->n);
}

static void expire_done_log(struct ctl *c, const struct spool_op_item *it);

static void batch_done(struct job *j)
{
	struct ctl_batch *b = (struct ctl_batch *)j;
	struct ctl *c = b->ctl;
	struct pickupd *pd = c->pd;
	bool wake = false;

	for (struct ctl_batch **pp = &c->batches; *pp; pp = &(*pp)->next) {
		if (*pp == b) {
			*pp = b->next;
			break;
		}
	}
	for (size_t i = 0; i < b->n; i++) {
		struct spool_op_item *it = &b->items[i];
		if (it->act == SPOOL_ACT_NONE)
			continue; /* answered on the loop */
		const char *was = spool_state_names[it->from];
		if (it->result != SPOOL_OP_OK) {
			log_warn("%s", it->text);
			resched(c, it->id);
			continue;
		}
		if (b->client == NULL) {
			expire_done_log(c, it);
			continue;
		}
		switch (b->cmd) {
		case SPOOL_OP_HOLD:
			log_info("%s: held by operator (was in %s)", it->id, was);
			break;
		case SPOOL_OP_DELETE:
		case SPOOL_OP_PURGE:
			log_info("%s: deleted by operator (was in %s%s)", it->id, was,
				 b->cmd == SPOOL_OP_PURGE ? ", purge" : "");
			break;
		case SPOOL_OP_RELEASE:
		case SPOOL_OP_REQUEUE:
		case SPOOL_OP_RETRY:
			log_info("%s: %s by operator; scheduled now", it->id,
				 b->cmd == SPOOL_OP_RELEASE ? "released"
				 : b->cmd == SPOOL_OP_RETRY ? "moved to queue"
							    : "requeued from badmail");
			sched_remove(pd->sched, it->id);
			sched_add(pd->sched, it->id, SPOOL_QUEUE, 0);
			wake = true;
			break;
		case SPOOL_N_OPS:
			break;
		}
	}
	if (wake)
		relay_pool_wake(pd->pool);
	struct ctl_client *cl = b->client;
	if (cl == NULL) {
		c->expire_running = false;
		batch_free(b);
		maybe_closed(c);
		return;
	}
	batch_reply(cl, b);
	batch_free(b);
	client_resume(cl);
}

/*
 * Plans every ID on the loop, where the schedule is: wrong states and
 * retries of deferred messages are answered at once; messages in a
 * transaction are busy; the rest leave the schedule and go to the pool.
 * True when a job was submitted.
 */
static bool batch_start(struct ctl *c, struct ctl_batch *b)
{
	struct pickupd *pd = c->pd;
	bool wake = false, work = false;
	if (b->n > 1)
		qsort(b->items, b->n, sizeof(*b->items), cmp_item);
	/* An ID listed twice is answered once. */
	size_t k = 0;
	for (size_t i = 0; i < b->n; i++) {
		if (k && strcmp(b->items[k - 1].id, b->items[i].id) == 0) {
			spool_op_item_deinit(&b->items[i]);
			continue;
		}
		b->items[k++] = b->items[i];
	}
	b->n = k;
	for (size_t i = 0; i < b->n; i++) {
		struct spool_op_item *it = &b->items[i];
		if (it->result != SPOOL_OP_PENDING)
			continue; /* not a queue ID */
		if (c->stopping || pd->stopping) {
			spool_op_set(it, SPOOL_OP_BUSY,
				     "pickupd is stopping; try again when it has stopped");
			continue;
		}
		if (id_busy(c, it->id)) {
			spool_op_set(it, SPOOL_OP_BUSY,
				     "%s: another operation on it is in progress", it->id);
			continue;
		}
		it->from = spool_locate(&pd->spool, it->id);
		spool_op_plan(b->cmd, it);
		if (it->result != SPOOL_OP_PENDING)
			continue;
		if (b->cmd == SPOOL_OP_RETRY && it->from == SPOOL_DEFERRED) {
			/* The schedule's business alone: due now, no file moves. */
			it->act = SPOOL_ACT_NONE;
			sched_remove(pd->sched, it->id);
			sched_add(pd->sched, it->id, SPOOL_DEFERRED, 0);
			log_info("%s: retry by operator; scheduled now", it->id);
			spool_op_set(it, SPOOL_OP_OK, "%s scheduled now", it->id);
			wake = true;
			continue;
		}
		if (it->from == SPOOL_QUEUE && sched_remove(pd->sched, it->id) == 0) {
			/* Not in the schedule: a session or a record job owns it. */
			it->act = SPOOL_ACT_NONE;
			spool_op_set(it, SPOOL_OP_BUSY,
				     "%s is being sent right now; try again when the transaction "
				     "ends",
				     it->id);
			continue;
		}
		if (it->from == SPOOL_DEFERRED)
			sched_remove(pd->sched, it->id);
		work = true;
	}
	if (wake)
		relay_pool_wake(pd->pool);
	if (!work)
		return false;
	b->next = c->batches;
	c->batches = b;
	job_submit(pd, &b->job, batch_fn, batch_done);
	return true;
}

static struct ctl_batch *batch_new(struct ctl_client *cl, enum spool_op op, size_t n)
{
	struct ctl_batch *b = xcalloc(1, sizeof(*b));
	b->ctl = cl->ctl;
	b->client = cl;
	b->cmd = op;
	b->expected = n;
	b->items = xcalloc(n ? n : 1, sizeof(*b->items));
	return b;
}

/* One ID line of batch b; starts it when it is complete. */
static void batch_line(struct ctl_client *cl, struct ctl_batch *b, const char *line)
{
	if (b->n < b->expected) {
		struct spool_op_item *it = &b->items[b->n++];
		it->from = -1;
		if (spool_id_valid(line))
			memcpy(it->id, line, SPOOL_ID_LEN + 1);
		else
			spool_op_set(it, SPOOL_OP_FAILED, "not a queue ID (20 hexadecimal digits)");
	}
	if (b->n < b->expected)
		return;
	cl->collecting = NULL;
	if (batch_start(cl->ctl, b)) {
		cl->op_pending = true;
		lconn_hold(cl->conn);
		return;
	}
	batch_reply(cl, b);
	batch_free(b);
}

/* ---- badmail retention ----------------------------------------------------------------- */

/* Lists badmail/ with each entry's age on the pool; the loop then plans the
 * expired ones as a batch without a client. */
struct expire_scan {
	struct job job; /* first */
	struct ctl *ctl;
	int64_t cutoff_ms; /* entries that entered badmail before this expire */
	struct ctl_badmail *v;
	size_t n;
};

static void fmt_keep(uint64_t ms, char *out, size_t size)
{
	if (ms % 86400000 == 0)
		snprintf(out, size, "%llud", (unsigned long long)(ms / 86400000));
	else if (ms % 3600000 == 0)
		snprintf(out, size, "%lluh", (unsigned long long)(ms / 3600000));
	else if (ms % 60000 == 0)
		snprintf(out, size, "%llum", (unsigned long long)(ms / 60000));
	else
		snprintf(out, size, "%.3gs", (double)ms / 1000.0);
}

static void expire_done_log(struct ctl *c, const struct spool_op_item *it)
{
	char keep[32];
	fmt_keep(c->pd->cfg->badmail.keep_ms, keep, sizeof(keep));
	c->pd->stats.badmail_expired++;
	log_info("%s: removed from badmail, content included: older than [badmail] keep = %s",
		 it->id, keep);
}

static void expire_scan_fn(struct job *j)
{
	struct expire_scan *es = (struct expire_scan *)j;
	if (ctl_spool_badmail(&j->pd->spool, &es->v, &es->n) < 0)
		log_error("cannot list %s/badmail: %s", j->pd->spool.dir, strerror(errno));
}

static void expire_scan_done(struct job *j)
{
	struct expire_scan *es = (struct expire_scan *)j;
	struct ctl *c = es->ctl;
	struct ctl_batch *b = xcalloc(1, sizeof(*b));
	b->ctl = c;
	b->cmd = SPOOL_OP_PURGE;
	b->items = xcalloc(es->n ? es->n : 1, sizeof(*b->items));
	for (size_t i = 0; i < es->n; i++) {
		if (es->v[i].since_ms >= es->cutoff_ms)
			continue;
		memcpy(b->items[b->n].id, es->v[i].id, SPOOL_ID_LEN + 1);
		b->items[b->n].from = -1;
		b->n++;
	}
	b->expected = b->n;
	free(es->v);
	free(es);
	if (b->n == 0 || !batch_start(c, b)) {
		/* Nothing expired, or every one busy: the next tick looks again. */
		batch_free(b);
		c->expire_running = false;
		maybe_closed(c);
	}
}

/* How often badmail is looked at: a tenth of keep, between a second and
 * an hour, so an entry stays at most 10 % (or an hour) longer than keep. */
static uint64_t expire_every(uint64_t keep)
{
	uint64_t every = keep / 10;
	if (every < EXPIRE_MIN_MS)
		every = EXPIRE_MIN_MS;
	if (every > EXPIRE_MAX_MS || keep == 0)
		every = EXPIRE_MAX_MS;
	return every;
}

static void expire_timer_cb(uv_timer_t *t)
{
	struct ctl *c = t->data;
	struct pickupd *pd = c->pd;
	uint64_t keep = pd->cfg->badmail.keep_ms; /* a reload may change it */
	uint64_t every = expire_every(keep);
	/* A new repeat set from the callback would apply only after the next
	 * (old) interval: start again instead. */
	if (every != uv_timer_get_repeat(t))
		uv_timer_start(t, expire_timer_cb, every, every);
	if (keep == 0 || c->expire_running || c->stopping || pd->stopping)
		return;
	struct expire_scan *es = xcalloc(1, sizeof(*es));
	es->ctl = c;
	es->cutoff_ms = pickupd_now_ms() - (int64_t)keep;
	c->expire_running = true;
	job_submit(pd, &es->job, expire_scan_fn, expire_scan_done);
}

static void expire_close_cb(uv_handle_t *h)
{
	struct ctl *c = h->data;
	c->expire_closed = true;
	maybe_closed(c);
}

/* Logs what pickupctl did on the spool while no daemon ran (spool/audit.c),
 * then forgets it. Start-up only: the file is small and the loop not yet
 * running. */
static void replay_audit(struct spool *sp)
{
	struct buf text = BUF_INIT;
	if (spool_audit_read(sp, &text) < 0) {
		log_error("cannot read %s/operator-actions: %s", sp->dir, strerror(errno));
		return;
	}
	size_t n = 0;
	for (char *p = text.data; p && *p;) {
		char *nl = strchr(p, '\n');
		if (nl)
			*nl = '\0';
		for (char *q = p; *q; q++)
			if ((unsigned char)*q < 0x20 || *q == 0x7f)
				*q = '?';
		if (*p) {
			log_info("%s", p);
			n++;
		}
		p = nl ? nl + 1 : NULL;
	}
	if (n && spool_audit_clear(sp) < 0)
		log_error("cannot remove %s/operator-actions: %s (its lines will be logged again)",
			  sp->dir, strerror(errno));
	buf_deinit(&text);
}

static void handle_line(struct ctl_client *cl, char *line)
{
	struct ctl *c = cl->ctl;
	struct ctl_request rq;
	const char *error;
	if (ctl_parse_request(line, &rq, &error) < 0) {
		reply(cl, SPOOL_OP_FAILED, "%s", error);
		return;
	}
	switch (rq.verb) {
	case CTL_STATUS:
		cmd_status(cl);
		return;
	case CTL_BATCH:
		/* The next rq.count lines are IDs (batch_line). */
		cl->collecting = batch_new(cl, rq.op, rq.count);
		return;
	case CTL_FLUSH:
	case CTL_ONE:
		break;
	}
	if (c->stopping || c->pd->stopping) {
		reply(cl, SPOOL_OP_BUSY, "pickupd is stopping; try again when it has stopped");
		return;
	}
	if (rq.verb == CTL_FLUSH) {
		cmd_flush(cl);
		return;
	}
	if (rq.id == NULL || !spool_id_valid(rq.id)) {
		reply(cl, SPOOL_OP_FAILED, "%s needs a queue ID (20 hexadecimal digits)",
		      spool_op_names[rq.op]);
		return;
	}
	/* One ID is a batch of one, answered with one line. */
	struct ctl_batch *b = batch_new(cl, rq.op, 1);
	b->one = true;
	batch_line(cl, b, rq.id);
}

/* Handles complete lines in the input, one operation at a time. */
static void process(struct ctl_client *cl)
{
	size_t len;
	bool full;
	char *in = lconn_input(cl->conn, &len, &full);
	while (!cl->op_pending && !lconn_closing(cl->conn)) {
		char *nl = memchr(in, '\n', len);
		if (nl == NULL)
			break;
		char line[CTL_MAX_LINE];
		size_t n = (size_t)(nl - in);
		memcpy(line, in, n);
		line[n] = '\0';
		if (n && line[n - 1] == '\r')
			line[n - 1] = '\0';
		lconn_consume(cl->conn, n + 1);
		in = lconn_input(cl->conn, &len, &full);
		if (cl->collecting) {
			batch_line(cl, cl->collecting, line);
			continue;
		}
		if (memchr(line, '\0', n ? n - 1 : 0) != NULL) {
			reply(cl, SPOOL_OP_FAILED, "NUL byte in request");
			continue;
		}
		handle_line(cl, line);
	}
	if (full && !cl->op_pending && !lconn_closing(cl->conn)) {
		reply(cl, SPOOL_OP_FAILED, "request line too long");
		client_close(cl);
	}
}

static void read_cb(struct lconn *conn, void *arg)
{
	struct ctl_client *cl = lconn_data(conn);
	cl->ctl = arg;
	cl->conn = conn;
	process(cl);
}

static void close_cb(struct lconn *conn, void *arg)
{
	struct ctl_client *cl = lconn_data(conn);
	(void)arg;
	if (cl->collecting)
		batch_free(cl->collecting);
}

static void stopped_cb(void *arg)
{
	struct ctl *c = arg;
	maybe_closed(c);
}

/* ---- lifecycle ------------------------------------------------------------------------- */

int ctl_lock_spool(struct spool *sp, struct buf *errors)
{
	if (spool_lock(sp, CTL_LOCK_WAIT_MS) == 0)
		return 0;
	buf_printf(errors, "spool %s is locked by another process (another pickupd?): %s\n",
		   sp->dir, strerror(errno));
	return -1;
}

int ctl_check_path(const char *path, const char *made_dir, struct buf *errors)
{
	struct sockaddr_un sa;
	struct stat st;
	if (path == NULL || *path == '\0') {
		buf_printf(errors, "[control] socket is not set\n");
		return -1;
	}
	if (strlen(path) >= sizeof(sa.sun_path)) {
		buf_printf(errors, "control socket %s: path longer than %zu bytes\n", path,
			   sizeof(sa.sun_path) - 1);
		return -1;
	}
	const char *slash = strrchr(path, '/');
	char *dir = slash && slash != path ? xstrndup(path, (size_t)(slash - path))
					   : xstrdup(slash ? "/" : ".");
	int rc = 0;
	if (made_dir && strcmp(dir, made_dir) == 0) {
		/* Made by start-up before the socket is bound. */
	} else if (stat(dir, &st) < 0) {
		buf_printf(errors, "control socket %s: directory %s: %s\n", path, dir,
			   strerror(errno));
		rc = -1;
	} else if (!S_ISDIR(st.st_mode)) {
		buf_printf(errors, "control socket %s: %s is not a directory\n", path, dir);
		rc = -1;
	}
	free(dir);
	return rc;
}

/* Removes a socket file left by a daemon that died, never a live one. */
static int clear_stale(const char *path, struct buf *errors)
{
	struct stat st;
	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		buf_printf(errors, "control socket %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (!S_ISSOCK(st.st_mode)) {
		buf_printf(errors, "control socket %s: exists and is not a socket\n", path);
		return -1;
	}
	int fd;
	struct buf why = BUF_INIT;
	int r = ctl_client_connect(path, &fd, &why);
	if (r > 0) {
		close(fd);
		buf_printf(errors, "control socket %s: another pickupd answers on it\n", path);
		return -1;
	}
	if (r < 0) {
		buf_printf(errors, "control socket %s: %s\n", path, why.data);
		buf_deinit(&why);
		return -1;
	}
	if (unlink(path) < 0 && errno != ENOENT) {
		buf_printf(errors, "control socket %s: cannot remove the stale socket: %s\n", path,
			   strerror(errno));
		return -1;
	}
	log_info("removed stale control socket %s", path);
	return 0;
}

struct ctl *ctl_start(struct pickupd *pd, struct buf *errors)
{
	static const struct listener_ops ops = {read_cb, close_cb, stopped_cb};
	const struct listener_limits lim = {CTL_MAX_LINE, 0, 0, sizeof(struct ctl_client)};
	const char *path = pd->cfg->control.socket;
	if (ctl_check_path(path, NULL, errors) < 0 || clear_stale(path, errors) < 0)
		return NULL;
	struct ctl *c = xcalloc(1, sizeof(*c));
	struct buf what = BUF_INIT;
	c->pd = pd;
	c->path = xstrdup(path);
	buf_printf(&what, "control socket %s", path);
	c->listener = listener_unix(pd->loop, path, 0660, &lim, &ops, c, what.data, errors);
	buf_deinit(&what);
	if (c->listener == NULL) {
		free(c->path);
		free(c);
		return NULL;
	}
	log_debug("control socket %s listening", path);
	replay_audit(&pd->spool);
	/* Badmail retention: at start-up, then on the timer. */
	uv_timer_init(pd->loop, &c->expire_timer);
	c->expire_timer.data = c;
	uv_timer_start(&c->expire_timer, expire_timer_cb, 0,
		       expire_every(pd->cfg->badmail.keep_ms));
	return c;
}

void ctl_close(struct ctl *c, pickupd_closed_cb cb, void *arg)
{
	if (c->stopping)
		return;
	c->stopping = true;
	c->closed_cb = cb;
	c->closed_arg = arg;
	/* Gone from the file system first: pickupctl then waits for the spool
	 * lock, which the daemon keeps until it exits. */
	unlink(c->path);
	listener_stop(c->listener);
	uv_close((uv_handle_t *)&c->expire_timer, expire_close_cb);
}

void ctl_free(struct ctl *c)
{
	if (c == NULL)
		return;
	listener_free(c->listener);
	free(c->path);
	free(c);
}
