/*
 * Purpose: pickupd's entry point: options, configuration, spool recovery
 * (claims finished from their recorded folder, messages that may arrive
 * twice named), the event loop, signals (SIGTERM/SIGINT graceful stop,
 * SIGHUP reload), the stop with status 1 once the spool is read-only,
 * sd_notify.
 * Owns: the struct pickupd and every module instance.
 * Invariants: recovery finishes before READY=1 and before any file is
 * claimed; the loop is closed with uv_loop_close() == 0 (every handle closed).
 */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "common/log.h"
#include "daemon/admin/ctl.h"
#include "daemon/intake/ingest.h"
#include "daemon/admin/metrics.h"
#include "daemon/intake/pickup.h"
#include "daemon/core/pickupd.h"
#include "daemon/pickupd/preflight.h"
#include "daemon/delivery/relay.h"
#include "daemon/core/handoff.h"
#include "daemon/delivery/sched.h"
#include "daemon/intake/pace.h"
#include "daemon/intake/space.h"

#define DEFAULT_CONFIG "/etc/pickupd/pickupd.conf"

static void usage(FILE *f)
{
	fprintf(f, "usage: pickupd [-c FILE] [--check-config]\n"
		   "       pickupd --version\n"
		   "config: -c FILE, else $PICKUPD_CONFIG, else " DEFAULT_CONFIG "\n");
}

/* Logs each "FILE:LINE: message" line of errs on a line of its own. */
static void log_lines(void (*log_fn)(const char *, ...), const char *prefix, const char *errs)
{
	const char *p = errs;
	while (p && *p) {
		const char *nl = strchr(p, '\n');
		int n = nl ? (int)(nl - p) : (int)strlen(p);
		if (n)
			log_fn("%s%.*s", prefix, n, p);
		p = nl ? nl + 1 : NULL;
	}
}

/* [general] log_level and [log]: at start-up and at each reload. */
static void set_logging(const struct config *cfg)
{
	const char *lvl = cfg->general.log_level;
	log_set_syslog(cfg->log.syslog);
	if (lvl == NULL || strcmp(lvl, "info") == 0)
		log_set_level(LOG_LVL_INFO);
	else if (strcmp(lvl, "debug") == 0)
		log_set_level(LOG_LVL_DEBUG);
	else if (strcmp(lvl, "warning") == 0)
		log_set_level(LOG_LVL_WARN);
	else if (strcmp(lvl, "error") == 0)
		log_set_level(LOG_LVL_ERR);
}

/*
 * The configuration and every check of it against the machine (preflight):
 * the same steps for --check-config, start-up and reload, so that the check
 * passes exactly the configurations the daemon accepts. NULL with the
 * "FILE:LINE: message" lines in errs; warnings are logged with prefix (at
 * start-up, after the configuration's logging is applied).
 */
static struct config *load_config(const char *path, struct buf *errs, const char *prefix,
				  bool start)
{
	struct buf warns = BUF_INIT;
	struct config *cfg = config_load(path, errs);
	if (cfg && preflight_run(cfg, errs, &warns) < 0) {
		config_free(cfg);
		cfg = NULL;
	}
	if (cfg)
		config_hostname_warning(cfg, &warns);
	if (cfg && start)
		set_logging(cfg); /* its warnings go where the daemon logs */
	log_lines(log_warn, prefix, warns.data);
	buf_deinit(&warns);
	if (cfg == NULL && errs->len == 0)
		buf_puts(errs, "invalid configuration\n");
	return cfg;
}

static int check_config(const char *path)
{
	struct buf errs = BUF_INIT;
	struct config *cfg = load_config(path, &errs, "", false);
	if (cfg == NULL) {
		fputs(errs.data, stdout);
		buf_deinit(&errs);
		return 1;
	}
	printf("%s: configuration is valid\n", path);
	config_free(cfg);
	buf_deinit(&errs);
	return 0;
}

static void close_signal(uv_signal_t *s)
{
	if (!uv_is_closing((uv_handle_t *)s))
		uv_close((uv_handle_t *)s, NULL);
}

/* Once every part has stopped and no torn envelope's recovery is in flight,
 * close the remaining handles so the loop ends by itself. */
static void maybe_stopped(struct pickupd *pd)
{
	if (!pd->stopping || pd->parts_open || pd->recovers_in_flight)
		return;
	sched_stop(pd->sched);
	if (!uv_is_closing((uv_handle_t *)&pd->ro_check))
		uv_close((uv_handle_t *)&pd->ro_check, NULL);
	if (!uv_is_closing((uv_handle_t *)&pd->log_flusher))
		uv_close((uv_handle_t *)&pd->log_flusher, NULL);
	handoff_offers_close(pd);
	if (!uv_is_closing((uv_handle_t *)&pd->space_timer))
		uv_close((uv_handle_t *)&pd->space_timer, NULL);
	if (!uv_is_closing((uv_handle_t *)&pd->pace_timer))
		uv_close((uv_handle_t *)&pd->pace_timer, NULL);
	close_signal(&pd->sig_term);
	close_signal(&pd->sig_int);
	close_signal(&pd->sig_hup);
	if (!uv_is_closing((uv_handle_t *)&pd->watchdog))
		uv_close((uv_handle_t *)&pd->watchdog, NULL);
	if (!uv_is_closing((uv_handle_t *)&pd->shutdown_timer))
		uv_close((uv_handle_t *)&pd->shutdown_timer, NULL);
}

/* One part (a pickup folder, the relay pool, the control socket, metrics)
 * has stopped. */
static void part_closed_cb(void *arg)
{
	struct pickupd *pd = arg;
	pd->parts_open--;
	maybe_stopped(pd);
}

static void shutdown_deadline_cb(uv_timer_t *t)
{
	struct pickupd *pd = t->data;
	log_warn("shutdown deadline passed; aborting transactions in flight (they stay queued)");
	relay_pool_abort(pd->pool);
}

static void stop(struct pickupd *pd, const char *why)
{
	if (pd->stopping)
		return;
	pd->stopping = true;
	log_info("stopping (%s)", why);
	pickupd_notify("STOPPING=1");
	/* Counted before the first close: none calls back from within. */
	pd->parts_open = pd->n_pickups + 1 + (pd->ctl != NULL) + (pd->metrics != NULL);
	for (size_t i = 0; i < pd->n_pickups; i++)
		pickup_close(pd->pickups[i], part_closed_cb, pd);
	relay_pool_close(pd->pool, part_closed_cb, pd);
	if (pd->ctl)
		ctl_close(pd->ctl, part_closed_cb, pd);
	if (pd->metrics)
		metrics_close(pd->metrics, part_closed_cb, pd);
	uv_timer_start(&pd->shutdown_timer, shutdown_deadline_cb,
		       pd->cfg->spool.shutdown_timeout_ms, 0);
	uv_unref((uv_handle_t *)&pd->shutdown_timer);
}

static bool same_str(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") == 0;
}

/*
 * SIGHUP: a new configuration applies to what starts after it (new
 * sessions, the next retry decision, log level); an invalid one is refused
 * with its FILE:LINE errors and the running one kept. The replaced one is
 * freed when its last holder (a session, a job, a retired relay, the pickup
 * folders) drops its reference.
 */
static void reload(struct pickupd *pd)
{
	struct buf errs = BUF_INIT;
	struct config *cfg = load_config(pd->cfg->path, &errs, "reload: ", false);
	if (cfg == NULL) {
		log_lines(log_error, "reload refused: ", errs.data);
		log_error("reload refused; keeping the running configuration");
		goto out;
	}
	if (!same_str(cfg->spool.dir, pd->cfg->spool.dir)) {
		log_error("reload refused: [spool] dir cannot change without a restart");
		config_free(cfg);
		goto out;
	}
	if (relay_pool_reload(pd->pool, cfg, &errs) < 0) {
		log_lines(log_error, "reload refused: ", errs.data);
		config_free(cfg);
		goto out;
	}
	bool pickups_same = cfg->n_pickups == pd->cfg->n_pickups;
	for (size_t i = 0; pickups_same && i < cfg->n_pickups; i++)
		pickups_same = same_str(cfg->pickups[i].dir, pd->cfg->pickups[i].dir);
	if (!pickups_same)
		log_warn("reload: [pickup] folders added, removed or moved take effect at the next "
			 "restart; the running folders keep their settings");
	else
		for (size_t i = 0; i < cfg->n_pickups; i++)
			pickup_reconfigure(pd->pickups[i], cfg, &cfg->pickups[i]);
	config_free(pd->cfg);
	pd->cfg = cfg;
	set_logging(cfg);
	log_info("reloaded %s: %zu relay(s)", cfg->path, cfg->n_relays);
	relay_pool_wake(pd->pool);
out:
	buf_deinit(&errs);
}

static void signal_cb(uv_signal_t *h, int signum)
{
	struct pickupd *pd = h->data;
	if (signum == SIGHUP) {
		reload(pd);
		return;
	}
	stop(pd, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* A pickup folder queued a message: due now. */
static void message_queued_cb(void *arg, const char *id, struct handoff *h)
{
	struct pickupd *pd = arg;
	sched_add_handoff(pd->sched, id, SPOOL_QUEUE, 0, h);
	relay_pool_wake(pd->pool);
}

/* Delivery took or released a handoff's content: ingestion may be waiting. */
static void handoff_progress_cb(void *arg)
{
	pace_progress(arg);
}

/* Delivery removed a message: ingestion may be waiting for that room. */
static void message_removed_cb(void *arg)
{
	space_check(arg);
}

/* A torn envelope's content, queued again (id) or not (NULL). */
static void recovered_cb(void *arg, const char *id)
{
	struct pickupd *pd = arg;
	pd->recovers_in_flight--;
	if (id)
		message_queued_cb(pd, id, NULL);
	maybe_stopped(pd);
}

/* Delivery met a torn envelope: its content is ingested again. */
static void envelope_torn_cb(void *arg, const char *id)
{
	struct pickupd *pd = arg;
	pd->recovers_in_flight++;
	ingest_recover(pd, id, recovered_cb, pd);
}

/* The schedule's earliest entry is due: sessions take it. */
static void schedule_due_cb(void *arg)
{
	struct pickupd *pd = arg;
	relay_pool_wake(pd->pool);
}

static void watchdog_cb(uv_timer_t *t)
{
	(void)t;
	pickupd_notify("WATCHDOG=1");
}

static void log_flusher_cb(uv_prepare_t *h)
{
	(void)h;
	log_flush();
}

/* EROFS: the spool said so once; no transaction is started whose outcome
 * cannot be recorded. What is in flight ends as at SIGTERM, then the exit
 * status hands over to systemd's restart policy (and StartLimitBurst). */
static void ro_check_cb(uv_check_t *h)
{
	struct pickupd *pd = h->data;
	if (pd->stopping || !spool_readonly(&pd->spool))
		return;
	pd->exit_status = EXIT_FAILURE; /* pickupd(8): 1, "a read-only file system" */
	pickupd_notify("STATUS=spool read-only, stopping");
	stop(pd, "the spool is read-only");
}

/* Orphaned content (a claim cut short): parse it again as if just picked up,
 * as from the folder its claim record names. */
static void reingest_orphans(struct pickupd *pd, struct spool_recovery *rec)
{
	for (size_t i = 0; i < rec->n_orphans; i++) {
		struct ingest_job ij;
		memset(&ij, 0, sizeof(ij));
		ij.job.pd = pd;
		ij.pickup = ingest_origin_pickup(pd, rec->orphan_pickups[i], rec->orphans[i]);
		ij.origin_file = rec->orphan_files[i];
		ij.dir_fd = pd->spool.data_fd;
		ij.name = xstrdup(rec->orphans[i]);
		ij.hostname = pd->cfg->general.hostname;
		ij.submit = &pd->cfg->submit;
		ij.now_ms = pickupd_now_ms();
		/* Re-claiming renames data/ID to a new ID in data/. */
		ingest_run(&ij.job);
		if (ij.result == INGEST_QUEUED) {
			/* load_schedule finds it in queue/: scheduling it here too
			 * would send it twice. */
			log_info(
			    "%s: recovered content of %s (claim cut short): pickup=%s, file=%s",
			    ij.id, ij.name, ij.pickup->name,
			    ij.origin_file ? ij.origin_file : ij.name);
		} else if (ij.result == INGEST_REFUSED) {
			log_warn("%s: recovered content of %s refused: %s; moved to badmail", ij.id,
				 ij.name, ij.reason);
		} else {
			log_error("%s: cannot recover content: %s", ij.name,
				  ij.reason ? ij.reason : strerror(ij.err));
		}
		free(ij.name);
		free(ij.reason);
		free(ij.sender);
		handoff_free(ij.handoff); /* load_schedule reads queue/ */
	}
}

static int load_schedule(struct pickupd *pd)
{
	static const enum spool_state states[] = {SPOOL_QUEUE, SPOOL_DEFERRED};
	for (size_t s = 0; s < 2; s++) {
		struct spool_entry *v;
		size_t n;
		if (spool_scan(&pd->spool, states[s], &v, &n) < 0)
			return -1;
		for (size_t i = 0; i < n; i++)
			sched_add(pd->sched, v[i].id, states[s],
				  states[s] == SPOOL_QUEUE ? 0 : v[i].due_ms);
		free(v);
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"check-config", no_argument, NULL, 'C'},
	    {"version", no_argument, NULL, 'V'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *path = NULL;
	bool check = false;
	int ch;
	while ((ch = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'C':
			check = true;
			break;
		case 'V':
			printf("pickupd %s\n", PICKUPD_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	/* The same default as pickupctl and pickupd-sendmail. */
	if (path == NULL)
		path = getenv("PICKUPD_CONFIG");
	if (path == NULL || *path == '\0')
		path = DEFAULT_CONFIG;
	if (check)
		return check_config(path);

	struct pickupd pd;
	struct buf errs = BUF_INIT;
	memset(&pd, 0, sizeof(pd));
	pd.cfg = load_config(path, &errs, "", true);
	if (pd.cfg == NULL) {
		log_lines(log_error, "", errs.data);
		buf_deinit(&errs);
		fatal("cannot start");
	}
	/* A core dump would hold relay secrets. */
	prctl(PR_SET_DUMPABLE, 0);
	signal(SIGPIPE, SIG_IGN);
	/* What a claim's read lease sends when a writer opens the file while
	 * it is held (ingest.c, open_for_writing). */
	signal(SIGIO, SIG_IGN);
	srandom((unsigned)getpid() ^ (unsigned)pickupd_now_ms());

	if (spool_open(&pd.spool, pd.cfg->spool.dir) < 0)
		fatal("cannot open spool %s: %s", pd.cfg->spool.dir, strerror(errno));
	if (ctl_lock_spool(&pd.spool, &errs) < 0) {
		log_lines(log_error, "", errs.data);
		fatal("cannot start");
	}
	pd.magic = magic_open(MAGIC_MIME_TYPE | MAGIC_NO_CHECK_COMPRESS);
	if (pd.magic == NULL || magic_load(pd.magic, NULL) != 0)
		fatal("cannot load the libmagic database: %s",
		      pd.magic ? magic_error(pd.magic) : "out of memory");
	uv_mutex_init(&pd.magic_lock);

	/* Up to 8 ingest jobs per folder plus delivery records share libuv's
	 * pool (4 threads by default); fsync latency, not CPU, bounds them. */
	if (getenv("UV_THREADPOOL_SIZE") == NULL)
		setenv("UV_THREADPOOL_SIZE", "8", 0);
	/* Each pool thread would grow a malloc arena of its own to what one
	 * batch of claims holds at once (envelopes built while their fsyncs
	 * run), and keep it: eight of those were a MiB of peak RSS. Two
	 * arenas shared by all threads keep it to what is in use. */
	mallopt(M_ARENA_MAX, 2);
	pd.loop = uv_default_loop();
	pd.sched = sched_new(pd.loop, schedule_due_cb, &pd);
	const struct relay_pool_cbs pool_cbs = {message_removed_cb, envelope_torn_cb,
						handoff_progress_cb, &pd};
	pd.pool = relay_pool_new(&pd, &pool_cbs, &errs);
	pd.offer_take = relay_pool_take_offer;
	pd.offer_done = relay_pool_offer_done;
	handoff_offers_start(&pd);
	pd.n_pickups = pd.cfg->n_pickups;
	pd.pickups = xcalloc(pd.n_pickups, sizeof(*pd.pickups));
	for (size_t i = 0; i < pd.n_pickups; i++)
		pd.pickups[i] = pickup_new(&pd, &pd.cfg->pickups[i], message_queued_cb, &pd, &errs);
	if (errs.len) {
		log_lines(log_error, "", errs.data);
		fatal("cannot start");
	}

	/* Recovery before anything is claimed or sent. */
	struct spool_recovery rec;
	if (spool_recover(&pd.spool, &rec) < 0)
		fatal("spool recovery failed in %s: %s", pd.cfg->spool.dir, strerror(errno));
	if (rec.tmp_cleaned || rec.duplicates || rec.dangling_envelopes || rec.n_orphans ||
	    rec.copies_dropped)
		log_info("recovery: %zu temporary files removed, %zu duplicate envelopes resolved, "
			 "%zu finished envelopes dropped, %zu claims to finish, %zu copies dropped "
			 "(originals still in their folders)",
			 rec.tmp_cleaned, rec.duplicates, rec.dangling_envelopes, rec.n_orphans,
			 rec.copies_dropped);
	if (rec.spares_kept)
		log_info("recovery: %zu spare envelopes kept from the last run (tmp/)",
			 rec.spares_kept);
	/* At-least-once: these were cut off between sending and recording. */
	for (size_t i = 0; i < rec.n_maybe_sent; i++)
		log_warn("%s: it was being sent when pickupd stopped without recording "
			 "the outcome; the message may be delivered twice",
			 rec.maybe_sent[i]);
	reingest_orphans(&pd, &rec);
	spool_recovery_deinit(&rec);
	if (load_schedule(&pd) < 0)
		fatal("cannot read the queue in %s: %s", pd.cfg->spool.dir, strerror(errno));
	pd.ctl = ctl_start(&pd, &errs);
	pd.metrics = metrics_start(&pd, &errs);
	if (pd.ctl == NULL || errs.len) {
		log_lines(log_error, "", errs.data);
		fatal("cannot start");
	}

	uv_signal_init(pd.loop, &pd.sig_term);
	uv_signal_init(pd.loop, &pd.sig_int);
	uv_signal_init(pd.loop, &pd.sig_hup);
	pd.sig_term.data = pd.sig_int.data = pd.sig_hup.data = &pd;
	uv_signal_start(&pd.sig_term, signal_cb, SIGTERM);
	uv_signal_start(&pd.sig_int, signal_cb, SIGINT);
	uv_signal_start(&pd.sig_hup, signal_cb, SIGHUP);
	uv_timer_init(pd.loop, &pd.watchdog);
	uv_timer_init(pd.loop, &pd.shutdown_timer);
	pd.shutdown_timer.data = &pd;
	space_init(&pd);
	pace_init(&pd);
	uv_check_init(pd.loop, &pd.ro_check);
	pd.ro_check.data = &pd;
	uv_check_start(&pd.ro_check, ro_check_cb);
	/* Prepare handles run just before the loop waits: the lines of a turn
	 * are written then, together. */
	uv_prepare_init(pd.loop, &pd.log_flusher);
	uv_prepare_start(&pd.log_flusher, log_flusher_cb);
	log_batch_start();
	const char *wd = getenv("WATCHDOG_USEC");
	if (wd && atoll(wd) > 0) {
		uint64_t ms = (uint64_t)atoll(wd) / 2000;
		uv_timer_start(&pd.watchdog, watchdog_cb, ms ? ms : 1, ms ? ms : 1);
	}

	for (size_t i = 0; i < pd.n_pickups; i++)
		pickup_start(pd.pickups[i]);
	relay_pool_wake(pd.pool);
	log_info("ready (version %s, %zu pickup folder(s), %zu relay(s), %zu message(s) queued)",
		 PICKUPD_VERSION, pd.n_pickups, pd.cfg->n_relays, sched_size(pd.sched));
	pickupd_notify("READY=1\nSTATUS=running");

	uv_run(pd.loop, UV_RUN_DEFAULT);

	int rc = uv_loop_close(pd.loop);
	if (rc != 0) {
		/* A handle left open is a bug; say so rather than hide it. */
		log_error("event loop closed with handles still open: %s", uv_strerror(rc));
	}
	for (size_t i = 0; i < pd.n_pickups; i++)
		pickup_free(pd.pickups[i]);
	free(pd.pickups);
	relay_pool_free(pd.pool);
	ctl_free(pd.ctl);
	metrics_free(pd.metrics);
	sched_free(pd.sched);
	magic_close(pd.magic);
	uv_mutex_destroy(&pd.magic_lock);
	spool_close(&pd.spool);
	config_free(pd.cfg);
	buf_deinit(&errs);
	uv_library_shutdown();
	log_info("stopped");
	log_flush();
	if (pd.exit_status)
		return pd.exit_status;
	return rc == 0 ? 0 : 1;
}
