/*
 * ctl: the daemon's control socket, and the queue operations pickupctl
 * shares with it.
 *
 * Protocol: a unix stream socket ([control] socket, mode 0660). A client
 * writes one request line, the daemon answers one line, and the client may
 * send another or close:
 *
 *   status                  ok queued=N due=N sessions=N stopping=0|1 pid=N
 *                              version=V [relay=NAME,SESSIONS,PAUSED_SECONDS]...
 *   flush                   ok N deferred message(s) scheduled now
 *   retry|hold|release|delete|requeue ID
 *                           ok TEXT | error TEXT | busy TEXT
 *
 * "busy" means the message is in a transaction right now (its envelope is in
 * queue/ and a session or the delivery record owns it): the daemon refuses
 * rather than pull the envelope from under the session; the client may ask
 * again once the transaction has ended (pickupctl does, for a few seconds).
 * Owner of struct ctl: main.c.
 */
#ifndef PICKUPD_CTL_H
#define PICKUPD_CTL_H

#include <stdbool.h>

#include "common/buf.h"
#include "spool/spool.h"

#define CTL_MAX_LINE 512

struct pickupd;

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
/* Shutdown: stops listening, closes clients once their request is done. */
void ctl_stop(struct ctl *c);
/* True when every handle is closed and no operation is in flight. */
bool ctl_idle(const struct ctl *c);
void ctl_free(struct ctl *c);

#endif
