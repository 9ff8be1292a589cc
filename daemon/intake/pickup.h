/*
 * pickup: one watched pickup folder. An inotify descriptor on a uv_poll_t
 * (IN_CLOSE_WRITE | IN_MOVED_TO; libuv's own watcher reports neither
 * close-write nor overflow), full rescans at start, on overflow and every
 * rescan_interval, and a bounded number of ingest jobs in flight.
 * Owner: main.c.
 */
#ifndef PICKUPD_PICKUP_H
#define PICKUPD_PICKUP_H

#include "common/config.h"
#include "daemon/core/pickupd.h"

struct handoff;

/* A file of the folder is now message id in the spool's queue/ (durably):
 * the owner schedules it, with h (core/handoff.h; NULL when there is none),
 * which becomes the owner's. */
typedef void (*pickup_queued_cb)(void *arg, const char *id, struct handoff *h);

/* cfg: one of pd->cfg's [pickup] sections; the folder holds a reference to
 * pd->cfg until pickup_free (or pickup_reconfigure). */
struct pickup *pickup_new(struct pickupd *pd, const struct config_pickup *cfg,
			  pickup_queued_cb queued_cb, void *arg, struct buf *errors);
/* Starts watching and runs the first scan. */
void pickup_start(struct pickup *p);
/* Stops claiming (after pickup_start): closes the handles; jobs in flight
 * finish, then cb(arg) runs, once. */
void pickup_close(struct pickup *p, pickupd_closed_cb cb, void *arg);
void pickup_free(struct pickup *p);
/* Ingestion resumes after a pause (disk full). */
void pickup_resume(struct pickup *p);
/* A reload kept this folder (same dir): its section is now cfg, one of
 * conf's (match, settle_time, limits, dot_stuffed... apply to the files
 * taken from now on); the folder holds a reference to conf instead. */
void pickup_reconfigure(struct pickup *p, struct config *conf, const struct config_pickup *cfg);

#endif
