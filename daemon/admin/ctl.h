/*
 * ctl: the daemon's control socket, and the queue operations pickupctl
 * shares with it.
 *
 * The protocol (requests, answers, batches, the status line) is written
 * once in ctl_proto.h, which this server and the clients (ctl_client.c)
 * include. Each ID of a command is planned on the loop (spool_op_plan: the
 * same preconditions pickupctl applies on the spool directly), and the whole
 * batch is applied in one thread-pool job with one directory fsync per group
 * (spool_op_apply).
 * Owner of struct ctl: main.c.
 */
#ifndef PICKUPD_CTL_H
#define PICKUPD_CTL_H

#include <stdbool.h>

#include "common/buf.h"
#include "daemon/core/pickupd.h"
#include "spool/spool.h"

/* Takes the daemon's exclusive flock(2) on the spool directory, held until
 * exit; pickupctl works on the spool directly only when it can take it.
 * Called before recovery. Waits a few seconds for a pickupctl that holds it
 * for one operation; -1 with a line in errors when another holds it. */
int ctl_lock_spool(struct spool *sp, struct buf *errors);
/* What can be checked of [control] socket before binding it: set, short
 * enough for sun_path, in an existing directory (or made_dir, which start-up
 * creates first: the spool). -1 with a line in errors. */
int ctl_check_path(const char *path, const char *made_dir, struct buf *errors);
/* Binds the socket (replacing a stale one that nobody answers on) and
 * listens. NULL with a line in errors when it cannot. */
struct ctl *ctl_start(struct pickupd *pd, struct buf *errors);
/* Shutdown: stops listening, closes clients once their request is done;
 * when every handle is closed and no operation is in flight, cb(arg) runs,
 * once. */
void ctl_close(struct ctl *c, pickupd_closed_cb cb, void *arg);
void ctl_free(struct ctl *c);

#endif
