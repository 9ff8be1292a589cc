/* Shared inside spool/ only. */
#ifndef PICKUPD_SPOOL_INT_H
#define PICKUPD_SPOOL_INT_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

struct spool;

/* Writes a new file durably (O_EXCL, write, fsync, close); with mtime_ms > 0
 * the file's mtime is set to it (the next-attempt time, readable by stat
 * alone at start-up, as Postfix's qmgr does). 0 or -1 (errno). */
int spool__write_file(int dir_fd, const char *name, const char *data, size_t len, int64_t mtime_ms);
/* Reads a whole small regular file into out (at most max bytes), never
 * blocking on a FIFO (EINVAL). 0 or -1 (errno). */
int spool__read_all(int dir_fd, const char *name, size_t max, struct buf *out);

/* The first EROFS (errno of a failed write) makes the spool read-only, with
 * one log line; keeps errno. Every write path calls it on failure. */
void spool__note_error(struct spool *s);
/* Removes data/<id>.from (if any) along with the content it belongs to:
 * the data/ fsync that makes the removal durable covers it. */
void spool__drop_record(struct spool *s, const char *id);
/* -1 with EROFS once the spool is read-only. */
int spool__check_writable(struct spool *s);

/*
 * Test hook at each step of each transition. With PICKUPD_SPOOL_CRASH=STEP[:N]
 * in the environment, the N-th time (default 1st) STEP is reached the process
 * is killed with SIGKILL; with PICKUPD_SPOOL_FAIL=STEP:ERRNO the step fails
 * with that errno. Returns 0 normally, -1 (errno set) for an injected failure.
 */
int spool__hook(const char *step);
/* Tests only: forget the settings read from the environment, so that a
 * forked child can set new ones. Not thread-safe. */
void spool__hook_reset(void);

#endif
