/*
 * ctl_client: one request to the daemon's control socket (ctl.c), as
 * pickupctl and pickupd-sendmail -q send it. Blocking, bounded by a timeout.
 */
#ifndef PICKUPD_CTL_CLIENT_H
#define PICKUPD_CTL_CLIENT_H

#include "common/buf.h"

/*
 * Sends one request line to the socket at path and reads the answer line
 * (without its newline) into resp. 1: answered; 0: no daemon listens (no
 * socket, or a stale one); -1: error, with why in err.
 */
int ctl_client_request(const char *path, const char *line, struct buf *resp, struct buf *err);

#endif
