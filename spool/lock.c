/*
 * Purpose: the spool lock, the one rule that keeps pickupd and pickupctl
 * from changing the spool at the same time (the protocol is in spool.h).
 * Owns: the flock(2) on the spool directory's descriptor (s->dir_fd).
 * Invariants: the lock is exclusive and never blocks the caller for longer
 * than it asked (LOCK_NB, retried on a short sleep); it belongs to the open
 * directory, so it ends with spool_close or the process, whichever is first.
 */
#include <errno.h>
#include <sys/file.h>
#include <time.h>

#include "spool/spool.h"

#define LOCK_RETRY_MS 50

int spool_lock(struct spool *s, int wait_ms)
{
	for (int waited = 0;; waited += LOCK_RETRY_MS) {
		if (flock(s->dir_fd, LOCK_EX | LOCK_NB) == 0)
			return 0;
		if (errno != EWOULDBLOCK || waited >= wait_ms)
			return -1;
		struct timespec ts = {0, LOCK_RETRY_MS * 1000000L};
		nanosleep(&ts, NULL);
	}
}

void spool_unlock(struct spool *s)
{
	flock(s->dir_fd, LOCK_UN);
}
