/* Shared inside spool/ only. */
#ifndef PICKUPD_SPOOL_INT_H
#define PICKUPD_SPOOL_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "spool/spool.h"

struct spool;

/* Writes a new file durably (O_EXCL, write, fsync, close); with mtime_ms > 0
 * the file's mtime is set to it (the next-attempt time, readable by stat
 * alone at start-up, as Postfix's qmgr does). 0 or -1 (errno). */
int spool__write_file(int dir_fd, const char *name, const char *data, size_t len, int64_t mtime_ms);
/* The same, with the crash-test step sync_hook before its fsync. */
int spool__write_new(int dir_fd, const char *name, const char *data, size_t len,
		     const char *sync_hook);
/* With mtime_ms > 0, sets fd's mtime (and atime) to it. 0 or -1 (errno). */
int spool__set_mtime(int fd, int64_t mtime_ms);
/* A file cut short goes: closes fd (if >= 0) and unlinks dir_fd's name,
 * keeping errno. */
void spool__discard(int fd, int dir_fd, const char *name);
/* Reads a whole small regular file into out (at most max bytes), never
 * blocking on a FIFO (EINVAL). 0 or -1 (errno). */
int spool__read_all(int dir_fd, const char *name, size_t max, struct buf *out);

/* Undoes esc_append (common/esc.h), the escaping of outside text in spool
 * files: a malloc'ed string, or -1 on a bad escape or a raw control
 * character. */
int spool__unescape(const char *s, size_t len, char **out_r);

/* The first EROFS (errno of a failed write) makes the spool read-only, with
 * one log line; keeps errno. Every write path calls it on failure. */
void spool__note_error(struct spool *s);
/* Removes id's claim record (data/<id>.from, or its bit in its batch's
 * record) along with the content it belongs to: the data/ fsync that makes
 * the removal durable covers it. */
void spool__drop_record(struct spool *s, const char *id);
/*
 * Batch claim records (spool/claimrec.c). new_block reserves a block of
 * SPOOL_BATCH_MAX IDs whose first has the low counter bits 0 (spool.c);
 * slot_id is the ID of a slot; name parses "<base>.batch". mark/drop set and
 * clear a claim's bit in the record of its block; they return false when
 * the block has no record in use (the ID's record, if any, is a symbolic
 * link). adopt: recovery found a record of an earlier run, needed by the
 * slots of dep (0: removed). read: the pickup and file name of id's line.
 */
void spool__new_block(struct spool *s, char base_r[SPOOL_ID_LEN + 1]);
void spool__batchrec_slot_id(const char *base, size_t slot, char id_r[SPOOL_ID_LEN + 1]);
bool spool__batchrec_name(const char *name, char base_r[SPOOL_ID_LEN + 1]);
bool spool__batchrec_mark(struct spool *s, const char *id);
bool spool__batchrec_drop(struct spool *s, const char *id);
void spool__batchrec_adopt(struct spool *s, const char *base, uint32_t dep);
int spool__batchrec_read(struct spool *s, const char *id, char **pickup_r, char **file_r);
void spool__batchrec_init(struct spool *s);
void spool__batchrec_deinit(struct spool *s);

/*
 * Spare envelopes (spool/spare.c). retire: dir_fd's name (a finished
 * envelope) goes: renamed into tmp/ as a spare while there are fewer than
 * SPOOL_SPARES_MAX, else unlinked; ENOENT counts as done; 0 or -1 (errno).
 * install: writes data over a spare (mode, length, mtime_ms > 0 as
 * spool__write_file; not fsynced) and renames it to to_name, never
 * replacing: 0; 1 when there is no spare; -1 (errno) when that failed, the
 * spare dropped: the caller makes a new file instead.
 */
void spool__spares_init(struct spool *s);
void spool__spares_deinit(struct spool *s);
/* Recovery: takes tmp/'s name back as a spare if it is one (a regular file
 * with one link, named as spares are, room in the pool). */
bool spool__spare_adopt(struct spool *s, const char *name);
int spool__env_retire(struct spool *s, int dir_fd, const char *name);
int spool__spare_install(struct spool *s, const char *data, size_t len, int64_t mtime_ms, int to_fd,
			 const char *to_name);

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
