/*
 * ctl_spool: the queue operations shared by the control socket (ctl.c) and
 * pickupctl. Synchronous; the daemon runs them on its thread pool.
 */
#ifndef PICKUPD_CTL_SPOOL_H
#define PICKUPD_CTL_SPOOL_H

#include "common/buf.h"
#include "spool/spool.h"

/* Where the envelope of id is, or -1 (errno ENOENT) when it is in no state
 * directory. */
int ctl_spool_locate(struct spool *sp, const char *id);
/*
 * Puts a badmail message back into queue/: recipients not yet sent become
 * pending, attempts start again, the reason is cleared; written durably in
 * badmail/ first, then renamed into queue/. Refuses (with a reason) a file
 * refused at pickup, which has no usable envelope: such a file is fixed and
 * dropped into the pickup folder again. 0, or -1 with why appended.
 */
int ctl_spool_requeue(struct spool *sp, const char *id, struct buf *why);

#endif
