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
#include "daemon/pickupd.h"

/* cfg: one of pd->cfg's [pickup] sections; the folder holds a reference to
 * pd->cfg until pickup_free. */
struct pickup *pickup_new(struct pickupd *pd, const struct config_pickup *cfg, struct buf *errors);
/* Starts watching and runs the first scan. */
void pickup_start(struct pickup *p);
/* Stops claiming: closes the handles; jobs in flight finish. */
void pickup_stop(struct pickup *p);
bool pickup_idle(const struct pickup *p);
void pickup_free(struct pickup *p);
/* Ingestion resumes after a pause (disk full). */
void pickup_resume(struct pickup *p);

#endif
