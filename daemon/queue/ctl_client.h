/*
 * ctl_client: the client end of the control socket (protocol: ctl_proto.h),
 * as pickupctl and pickupd-sendmail -q use it. Blocking, each answer bounded
 * by a timeout that every byte received pushes back.
 */
#ifndef PICKUPD_CTL_CLIENT_H
#define PICKUPD_CTL_CLIENT_H

#include "common/buf.h"
#include "spool/spool.h"

/*
 * Connects to the socket at path: 1 connected (*fd_r, close it), 0 no
 * daemon listens (no socket, or a stale one nobody answers on), -1 error
 * (err). Also how the daemon tells a stale socket from a live one.
 */
int ctl_client_connect(const char *path, int *fd_r, struct buf *err);
/*
 * Sends one request line to the socket at path and reads the answer line
 * (without its newline) into resp. 1: answered; 0: no daemon listens (no
 * socket, or a stale one); -1: error, with why in err.
 */
int ctl_client_request(const char *path, const char *line, struct buf *resp, struct buf *err);
/*
 * One batch round trip ("batch OP N", the N IDs; one answer line per ID,
 * then "end"): sets the result and text of each of todo[0..n), which is
 * sorted by ID; an ID the daemon did not answer for fails. 1 answered,
 * 0 no daemon listens, -1 error (err; the items stay as they were).
 */
int ctl_client_batch(const char *path, enum spool_op op, struct spool_op_item **todo, size_t n,
		     struct buf *err);

#endif
