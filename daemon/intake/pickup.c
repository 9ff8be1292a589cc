/*
 * Purpose: watching one pickup folder and feeding its files to ingest jobs.
 * Owns: the folder's descriptor, the inotify descriptor and its uv_poll_t,
 * the rescan and retry timers, and the candidate table (one entry per file
 * name known and not yet taken).
 * Invariants: events are hints; a full rescan finds everything an event
 * could have said; a name is in at most one of {ready FIFO, waiting, in
 * flight}; at most MAX_BATCHES ingest jobs of at most BATCH_FILES files at a
 * time, so 20,000 files dropped at once cost a bounded amount of memory; a
 * ready file is submitted at once (a batch is what is ready, never waited
 * for); the folder's settings are those of the configuration it started
 * with (a reference).
 */
#include "daemon/intake/pickup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "common/log.h"
#include "common/match.h"
#include "daemon/intake/ingest.h"
#include "daemon/intake/pace.h"
#include "daemon/intake/space.h"

#define MAX_BATCHES	4  /* ingest jobs at a time per folder */
#define BATCH_FILES	32 /* files per job: their claims share two fsyncs */
#define ERROR_RETRY_MS	5000
#define ENOSPC_CHECK_MS 2000
#define BUSY_WARN_MS	(5 * 60 * 1000)

/* C_PARKED: not ours to take (a directory); only a new event about the name
 * looks at it again, rescans do not. */
enum cand_where { C_NONE, C_READY, C_WAITING, C_IN_FLIGHT, C_PARKED };

struct cand {
	char *name;
	enum cand_where where;
	bool again;	    /* an event came while in flight */
	bool event;	    /* IN_MOVED_TO/IN_CLOSE_WRITE since last taken: no settle_time */
	bool error_logged;  /* permission problems are logged once per file */
	bool busy_logged;   /* "still being written" is logged once per file */
	int64_t busy_since; /* first NOT_READY of the current wait; 0 = none */
	uint64_t ready_ms;  /* uv_now when it joined the ready FIFO (pace_hold) */
	/* Its last claim failed after its offer was taken (it may have been
	 * sent): not offered again, so that a failing disk sends it once more
	 * at most. */
	bool no_offer;
	int64_t not_before;
	struct cand *hnext; /* hash chain */
	struct cand *next;  /* FIFO or waiting list */
};

struct pickup {
	struct pickupd *pd;
	const struct config_pickup *cfg; /* in conf */
	struct config *conf;		 /* a reference: kept while the folder is watched */
	int dir_fd;
	struct spool_dirsync *dir_sync; /* claims share the folder's fsyncs */
	int ino_fd;
	uv_poll_t poll;
	uv_timer_t rescan_timer;
	uv_timer_t retry_timer;
	int handles_open;
	bool stopping;
	unsigned in_flight;	    /* files */
	unsigned batches;	    /* ingest jobs */
	pickup_queued_cb queued_cb; /* given by the owner: hands a queued message on */
	void *queued_arg;
	pickupd_closed_cb closed_cb; /* pickup_close's, until it is called */
	void *closed_arg;
	struct cand **table;
	size_t table_size, n_cands;
	struct cand *ready_head, *ready_tail;
	struct cand *waiting;
};

static size_t hash_name(const char *s)
{
	size_t h = 5381;
	while (*s)
		h = h * 33 + (unsigned char)*s++;
	return h;
}

static struct cand *cand_find(struct pickup *p, const char *name)
{
	for (struct cand *c = p->table[hash_name(name) & (p->table_size - 1)]; c; c = c->hnext)
		if (strcmp(c->name, name) == 0)
			return c;
	return NULL;
}

static void table_grow(struct pickup *p)
{
	size_t nsize = p->table_size * 2;
	struct cand **nt = xcalloc(nsize, sizeof(*nt));
	for (size_t i = 0; i < p->table_size; i++) {
		struct cand *c = p->table[i];
		while (c) {
			struct cand *nx = c->hnext;
			size_t b = hash_name(c->name) & (nsize - 1);
			c->hnext = nt[b];
			nt[b] = c;
			c = nx;
		}
	}
	free(p->table);
	p->table = nt;
	p->table_size = nsize;
}

static struct cand *cand_add(struct pickup *p, const char *name)
{
	if (p->n_cands >= p->table_size)
		table_grow(p);
	struct cand *c = xcalloc(1, sizeof(*c));
	c->name = xstrdup(name);
	size_t b = hash_name(name) & (p->table_size - 1);
	c->hnext = p->table[b];
	p->table[b] = c;
	p->n_cands++;
	return c;
}

static void cand_remove(struct pickup *p, struct cand *c)
{
	for (struct cand **pp = &p->table[hash_name(c->name) & (p->table_size - 1)]; *pp;
	     pp = &(*pp)->hnext) {
		if (*pp == c) {
			*pp = c->hnext;
			break;
		}
	}
	p->n_cands--;
	free(c->name);
	free(c);
}

static void ready_push(struct pickup *p, struct cand *c)
{
	c->where = C_READY;
	c->ready_ms = uv_now(p->pd->loop);
	c->next = NULL;
	if (p->ready_tail)
		p->ready_tail->next = c;
	else
		p->ready_head = c;
	p->ready_tail = c;
}

static void waiting_remove(struct pickup *p, struct cand *c)
{
	for (struct cand **pp = &p->waiting; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	c->where = C_NONE;
}

static void retry_cb(uv_timer_t *t);

static void arm_retry(struct pickup *p, int64_t when)
{
	if (p->stopping)
		return;
	int64_t wait = when - pickupd_now_ms();
	if (wait < 0)
		wait = 0;
	if (uv_is_active((uv_handle_t *)&p->retry_timer) &&
	    uv_timer_get_due_in(&p->retry_timer) <= (uint64_t)wait)
		return;
	uv_timer_start(&p->retry_timer, retry_cb, (uint64_t)wait, 0);
}

static void waiting_push(struct pickup *p, struct cand *c, int64_t not_before)
{
	c->where = C_WAITING;
	c->not_before = not_before;
	c->next = p->waiting;
	p->waiting = c;
	arm_retry(p, not_before);
}

static void pump(struct pickup *p);

/* A file name was seen (event or scan). */
static void note(struct pickup *p, const char *name, bool finished)
{
	if (p->stopping || !match_name(p->cfg->match, name))
		return;
	struct cand *c = cand_find(p, name);
	if (c == NULL)
		c = cand_add(p, name);
	if (finished)
		c->event = true;
	switch (c->where) {
	case C_NONE:
		ready_push(p, c);
		break;
	case C_WAITING:
		/* A writer closed it, or someone changed its owner or mode
		 * (a permission problem fixed): no need to wait for the timer. */
		if (finished || c->error_logged) {
			waiting_remove(p, c);
			ready_push(p, c);
		}
		break;
	case C_PARKED:
		if (finished)
			ready_push(p, c);
		break;
	case C_IN_FLIGHT:
		c->again = true;
		break;
	case C_READY:
		break;
	}
}

static void rescan(struct pickup *p)
{
	int fd = dup(p->dir_fd);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (d == NULL) {
		log_error("pickup %s: cannot read %s: %s", p->cfg->name, p->cfg->dir,
			  strerror(errno));
		if (fd >= 0)
			close(fd);
		return;
	}
	rewinddir(d);
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		if (de->d_type == DT_REG || de->d_type == DT_UNKNOWN || de->d_type == DT_LNK ||
		    de->d_type == DT_DIR || de->d_type == DT_FIFO || de->d_type == DT_SOCK ||
		    de->d_type == DT_CHR || de->d_type == DT_BLK)
			note(p, de->d_name, false);
	closedir(d);
	pump(p);
}

static void batch_done(struct job *j);

static void pump(struct pickup *p)
{
	struct pickupd *pd = p->pd;
	while (!p->stopping && !pd->enospc && p->batches < MAX_BATCHES && p->ready_head &&
	       !pace_hold(pd, p->ready_head->ready_ms)) {
		struct ingest_batch *b = xcalloc(1, sizeof(*b));
		b->owner = p;
		b->dir_fd = p->dir_fd;
		b->dir_sync = p->dir_sync;
		b->items = xcalloc(BATCH_FILES, sizeof(*b->items));
		while (b->n < BATCH_FILES && p->ready_head) {
			struct cand *c = p->ready_head;
			p->ready_head = c->next;
			if (p->ready_head == NULL)
				p->ready_tail = NULL;
			c->where = C_IN_FLIGHT;
			c->again = false;
			struct ingest_job *ij = xcalloc(1, sizeof(*ij));
			ij->owner = p;
			ij->pickup = p->cfg;
			ij->dir_fd = p->dir_fd;
			ij->dir_sync = p->dir_sync;
			ij->name = xstrdup(c->name);
			ij->hostname = pd->cfg->general.hostname;
			ij->submit = &pd->cfg->submit;
			ij->now_ms = pickupd_now_ms();
			ij->finished = c->event;
			ij->no_offer = c->no_offer;
			c->event = false;
			b->items[b->n++] = ij;
		}
		p->in_flight += (unsigned)b->n;
		p->batches++;
		job_submit(pd, &b->job, ingest_run_batch, batch_done);
	}
}

/* Closing, with no job in flight and every handle closed: tell the owner, once. */
static void maybe_closed(struct pickup *p)
{
	pickupd_closed_cb cb = p->closed_cb;
	if (cb == NULL || p->in_flight || p->batches || p->handles_open)
		return;
	p->closed_cb = NULL;
	cb(p->closed_arg);
}

/* One file's outcome, on the loop thread. */
static void file_done(struct ingest_job *ij)
{
	struct pickup *p = ij->owner;
	struct pickupd *pd = p->pd;
	struct cand *c = cand_find(p, ij->name);
	int64_t now = pickupd_now_ms();
	bool keep = false;

	p->in_flight--;
	/* An offer taken by delivery (handoff.h): its transaction goes on (or
	 * ends unsent) with what this job came to. */
	bool taken = ij->offer.taker != NULL;
	if (ij->result != INGEST_QUEUED)
		handoff_offer_done(pd, &ij->offer, false);
	if (c && taken && ij->result != INGEST_QUEUED)
		c->no_offer = true;
	switch (ij->result) {
	case INGEST_QUEUED:
		/* Opens with "uid=" as Postfix's pickup line does: what pflogsumm
		 * counts as received. */
		log_svc(LOG_LVL_INFO, "pickup",
			"%s: uid=%u, pickup=%s, file=%s, from=<%s>, nrcpt=%zu, size=%llu", ij->id,
			ij->uid, p->cfg->name, ij->name, ij->sender, ij->n_rcpts,
			(unsigned long long)ij->size);
		pd->stats.received++;
		handoff_offer_done(pd, &ij->offer, true);
		if (!taken)
			p->queued_cb(p->queued_arg, ij->id, ij->handoff);
		else
			handoff_free(ij->handoff);
		ij->handoff = NULL;
		break;
	case INGEST_REFUSED:
		pd->stats.refused++;
		log_svc(LOG_LVL_WARN, "pickup",
			"%s: pickup=%s, file=%s, refused: %s; moved to badmail", ij->id,
			p->cfg->name, ij->name, ij->reason);
		break;
	case INGEST_GONE:
		break;
	case INGEST_SKIPPED:
		if (c && !c->again) {
			keep = true;
			if (!c->error_logged)
				log_warn("pickup %s: %s/%s: %s", p->cfg->name, p->cfg->dir,
					 ij->name, ij->reason);
			c->error_logged = true;
			c->where = C_PARKED;
		}
		break;
	case INGEST_NOT_READY:
		keep = true;
		log_debug("pickup %s: %s not ready: %s", p->cfg->name, ij->name, ij->reason);
		if (c && c->busy_since == 0)
			c->busy_since = now;
		if (c && !c->busy_logged && now - c->busy_since >= BUSY_WARN_MS) {
			/* A writer that never finishes (a leaked handle) would
			 * otherwise hold a message back without a word. */
			log_warn("pickup %s: %s/%s is still not complete after %lld s (%s); "
				 "waiting",
				 p->cfg->name, p->cfg->dir, ij->name,
				 (long long)((now - c->busy_since) / 1000), ij->reason);
			c->busy_logged = true;
		}
		if (c && !p->stopping)
			waiting_push(p, c, now + ij->retry_after_ms);
		break;
	case INGEST_ERROR:
		keep = true;
		if (c && ij->err == EROFS) {
			/* The spool said it once; the daemon is stopping. */
		} else if (c && !c->error_logged) {
			log_error("pickup %s: %s/%s: %s; it stays and is tried again", p->cfg->name,
				  p->cfg->dir, ij->name,
				  ij->reason ? ij->reason : strerror(ij->err));
			c->error_logged = true;
		} else if (c) {
			log_debug("pickup %s: %s/%s still cannot be taken: %s", p->cfg->name,
				  p->cfg->dir, ij->name,
				  ij->reason ? ij->reason : strerror(ij->err));
		}
		if (c && !p->stopping)
			waiting_push(p, c, now + ERROR_RETRY_MS);
		break;
	case INGEST_NOSPACE:
		keep = true;
		space_pause(pd, ij->size); /* resumes by itself (space.c) */
		if (c && !p->stopping)
			waiting_push(p, c, now + ENOSPC_CHECK_MS);
		break;
	}
	if (c && !keep) {
		if (c->again && !p->stopping) {
			c->where = C_NONE;
			note(p, c->name, true);
		} else {
			cand_remove(p, c);
		}
	} else if (c && p->stopping && c->where == C_IN_FLIGHT) {
		c->where = C_NONE;
	}
	if (c && keep && ij->result != INGEST_NOT_READY)
		c->busy_since = 0;
	ingest_job_free(ij);
}

static void batch_done(struct job *j)
{
	struct ingest_batch *b = (struct ingest_batch *)j;
	struct pickup *p = b->owner;
	p->batches--;
	for (size_t i = 0; i < b->n; i++)
		file_done(b->items[i]);
	free(b->items);
	free(b);
	pump(p);
	maybe_closed(p);
}

static void retry_cb(uv_timer_t *t)
{
	struct pickup *p = t->data;
	int64_t now = pickupd_now_ms(), next = 0;
	for (struct cand **pp = &p->waiting; *pp;) {
		struct cand *c = *pp;
		if (c->not_before <= now) {
			*pp = c->next;
			ready_push(p, c);
			continue;
		}
		if (next == 0 || c->not_before < next)
			next = c->not_before;
		pp = &c->next;
	}
	if (next)
		arm_retry(p, next);
	pump(p);
}

static void rescan_cb(uv_timer_t *t)
{
	rescan(t->data);
}

/* Files that could not be taken are tried again now, not at their timer. */
static void retry_errors(struct pickup *p)
{
	for (struct cand **pp = &p->waiting; *pp;) {
		struct cand *c = *pp;
		if (c->error_logged) {
			*pp = c->next;
			ready_push(p, c);
			continue;
		}
		pp = &c->next;
	}
}

static void poll_cb(uv_poll_t *h, int status, int events)
{
	struct pickup *p = h->data;
	char evbuf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
	bool overflow = false;
	if (status < 0)
		return;
	for (;;) {
		ssize_t n = read(p->ino_fd, evbuf, sizeof(evbuf));
		if (n <= 0)
			break;
		for (char *q = evbuf; q < evbuf + n;) {
			struct inotify_event *ev = (struct inotify_event *)q;
			if (ev->mask & IN_Q_OVERFLOW)
				overflow = true;
			else if (ev->len && (ev->mask & (IN_CLOSE_WRITE | IN_MOVED_TO)))
				note(p, ev->name, true);
			else if (ev->len && (ev->mask & IN_ATTRIB))
				note(p, ev->name, false);
			else if (ev->mask & IN_ATTRIB)
				retry_errors(p); /* the folder's owner or mode changed */
			if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF))
				log_error(
				    "pickup %s: folder %s was removed or moved; watching stops "
				    "until restart",
				    p->cfg->name, p->cfg->dir);
			q += sizeof(*ev) + ev->len;
		}
		/* Room was left for the largest event: none was waiting. The
		 * poll is level-triggered, so one that came since wakes us
		 * again; a read to EAGAIN here would be one more system call
		 * per wake-up, and files usually come one per wake-up. */
		if ((size_t)n <= sizeof(evbuf) - sizeof(struct inotify_event) - NAME_MAX - 1)
			break;
	}
	if (overflow) {
		/* Events were lost: only a full scan knows what is there. */
		log_info("pickup %s: inotify queue overflowed; rescanning", p->cfg->name);
		rescan(p);
		return;
	}
	pump(p);
}

struct pickup *pickup_new(struct pickupd *pd, const struct config_pickup *cfg,
			  pickup_queued_cb queued_cb, void *arg, struct buf *errors)
{
	struct pickup *p = xcalloc(1, sizeof(*p));
	p->pd = pd;
	p->cfg = cfg;
	p->queued_cb = queued_cb;
	p->queued_arg = arg;
	/* Until a reload with the same folders moves it to the new one
	 * (pickup_reconfigure); new or removed folders take a restart. */
	p->conf = config_ref(pd->cfg);
	p->ino_fd = -1;
	p->dir_sync = spool_dirsync_new();
	p->table_size = 1024;
	p->table = xcalloc(p->table_size, sizeof(*p->table));
	p->dir_fd = open(cfg->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (p->dir_fd < 0) {
		buf_printf(errors, "pickup %s: cannot open %s: %s\n", cfg->name, cfg->dir,
			   strerror(errno));
		goto fail;
	}
	p->ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (p->ino_fd < 0 || inotify_add_watch(p->ino_fd, cfg->dir,
					       IN_CLOSE_WRITE | IN_MOVED_TO | IN_ATTRIB |
						   IN_DELETE_SELF | IN_MOVE_SELF) < 0) {
		buf_printf(errors, "pickup %s: cannot watch %s: %s\n", cfg->name, cfg->dir,
			   strerror(errno));
		goto fail;
	}
	if (faccessat(p->dir_fd, ".", W_OK, AT_EACCESS) < 0)
		log_warn("pickup %s: folder %s is not writable by pickupd: files cannot be claimed "
			 "until this is fixed",
			 cfg->name, cfg->dir);
	return p;
fail:
	pickup_free(p);
	return NULL;
}

void pickup_start(struct pickup *p)
{
	uv_loop_t *loop = p->pd->loop;
	uv_poll_init(loop, &p->poll, p->ino_fd);
	uv_timer_init(loop, &p->rescan_timer);
	uv_timer_init(loop, &p->retry_timer);
	p->poll.data = p->rescan_timer.data = p->retry_timer.data = p;
	p->handles_open = 3;
	uv_poll_start(&p->poll, UV_READABLE, poll_cb);
	if (p->cfg->rescan_interval_ms)
		uv_timer_start(&p->rescan_timer, rescan_cb, p->cfg->rescan_interval_ms,
			       p->cfg->rescan_interval_ms);
	rescan(p);
}

static void handle_closed_cb(uv_handle_t *h)
{
	struct pickup *p = h->data;
	p->handles_open--;
	maybe_closed(p);
}

void pickup_close(struct pickup *p, pickupd_closed_cb cb, void *arg)
{
	if (p->stopping)
		return;
	p->stopping = true;
	p->closed_cb = cb;
	p->closed_arg = arg;
	uv_close((uv_handle_t *)&p->poll, handle_closed_cb);
	uv_close((uv_handle_t *)&p->rescan_timer, handle_closed_cb);
	uv_close((uv_handle_t *)&p->retry_timer, handle_closed_cb);
}

void pickup_resume(struct pickup *p)
{
	pump(p);
}

void pickup_reconfigure(struct pickup *p, struct config *conf, const struct config_pickup *cfg)
{
	/* Jobs in flight keep the section they started with: each holds a
	 * reference to the configuration current when it was submitted, which
	 * is p->conf then (main.c swaps both at a reload). */
	bool rescan_changed = cfg->rescan_interval_ms != p->cfg->rescan_interval_ms;
	config_ref(conf);
	config_free(p->conf);
	p->conf = conf;
	p->cfg = cfg;
	if (p->stopping || !rescan_changed)
		return;
	uv_timer_stop(&p->rescan_timer);
	if (cfg->rescan_interval_ms)
		uv_timer_start(&p->rescan_timer, rescan_cb, cfg->rescan_interval_ms,
			       cfg->rescan_interval_ms);
}

void pickup_free(struct pickup *p)
{
	for (size_t i = 0; i < p->table_size; i++) {
		struct cand *c = p->table[i];
		while (c) {
			struct cand *nx = c->hnext;
			free(c->name);
			free(c);
			c = nx;
		}
	}
	free(p->table);
	if (p->ino_fd >= 0)
		close(p->ino_fd);
	/* Claims' folder fsync still owed (spool_claim_commit_data): made now,
	 * while the descriptor is open. */
	if (spool_folder_forget(&p->pd->spool, p->dir_sync) < 0)
		log_warn("pickup %s: cannot fsync the folder: %s", p->cfg->dir, strerror(errno));
	if (p->dir_fd >= 0)
		close(p->dir_fd);
	spool_dirsync_free(p->dir_sync);
	config_free(p->conf);
	free(p);
}
