/*
 * spool: the on-disk queue. A directory is a state and a rename is a
 * transition. Plain POSIX, synchronous, no libuv: the daemon runs the calls
 * that fsync on libuv's thread pool; pickupctl uses them directly.
 *
 *   <spool>/data/<id>       message content, never moved while queued
 *   <spool>/queue/<id>      envelope: ready to send (or being sent)
 *   <spool>/deferred/<id>   envelope: waiting for its next attempt
 *   <spool>/hold/<id>       envelope: held by an operator
 *   <spool>/badmail/<id>    envelope with a "reason" line: failed for good or
 *                           refused at pickup (the content stays in data/<id>)
 *   <spool>/tmp/            work in progress; cleaned at start-up
 *
 * Invariants (checked by recovery):
 *   - an envelope exists in at most one state directory;
 *   - data/<id> without any envelope is a claim in progress: re-ingested;
 *   - an envelope without data/<id> is a message whose removal was cut short
 *     (content is always removed first, durably): the envelope is dropped.
 */
#ifndef PICKUPD_SPOOL_H
#define PICKUPD_SPOOL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define SPOOL_ID_LEN 20

enum spool_state {
	SPOOL_QUEUE,
	SPOOL_DEFERRED,
	SPOOL_HOLD,
	SPOOL_BADMAIL,
	SPOOL_N_STATES,
};

enum spool_rcpt_status { RCPT_PENDING, RCPT_SENT, RCPT_DEFERRED, RCPT_FAILED };

struct spool_rcpt {
	char *addr;   /* addr-spec, never holds CR/LF/NUL */
	char *params; /* ESMTP RCPT parameters (NOTIFY=, ORCPT=) or NULL */
	enum spool_rcpt_status status;
	char *reply; /* last server reply summary or our own reason; NULL if none */
};

/* An edit applied to the content on the way to the wire (see common/wire.h). */
struct spool_edit {
	uint64_t offset;
	uint64_t skip;
	char *insert; /* one header line without its CRLF, or NULL */
};

/* The envelope file, in memory. Owner: whoever filled it (spool_env_deinit). */
struct spool_env {
	char id[SPOOL_ID_LEN + 1];
	int64_t arrival_ms; /* when the file was claimed */
	int64_t next_ms;    /* next attempt; 0 = now */
	unsigned attempts;
	uint64_t size;	     /* content bytes */
	char *origin_pickup; /* [pickup NAME] the file came from */
	char *origin_file;   /* its name in that folder */
	bool dot_stuffed;    /* content is dot-stuffed (IIS-era writer) */
	bool eightbit;	     /* content has 8-bit bytes: BODY=8BITMIME */
	bool smtputf8;	     /* addresses need SMTPUTF8 */
	char *sender;	     /* "" = null sender <> */
	char *sender_params; /* RET=, ENVID= or NULL */
	struct spool_rcpt *rcpts;
	size_t n_rcpts;
	struct spool_edit *edits;
	size_t n_edits;
	char *reason;	   /* why it is in badmail/, or NULL */
	bool delay_warned; /* the sender was told the message is delayed */
};

/* Group commit state of one directory (spool.c). */
struct spool_dirsync;

struct spool {
	char *dir;
	int dir_fd;
	int data_fd;
	int tmp_fd;
	int state_fd[SPOOL_N_STATES];
	unsigned pid;
	pthread_mutex_t id_lock; /* IDs are made on several pool threads */
	bool id_lock_init;
	uint32_t seq;
	int64_t last_ms;
	/* One per state directory, then data/ and tmp/: concurrent transitions
	 * share one directory fsync (see spool_fsync_dir_shared). */
	struct spool_dirsync *dsync;
	int readonly; /* atomic: set at the first EROFS; state changes stop */
};

extern const char *const spool_state_names[SPOOL_N_STATES];
extern const char *const spool_rcpt_status_names[4];

/* Creates the state directories if needed and opens them. 0 or -1 (errno). */
int spool_open(struct spool *s, const char *dir);
void spool_close(struct spool *s);
/* "queue" -> SPOOL_QUEUE; -1 when unknown. */
int spool_state_from_name(const char *name);

/* A new queue ID: sortable by arrival (milliseconds since the epoch, then
 * the process and a counter), unique across processes, safe as a file name.
 * Uniqueness on disk is finally decided by RENAME_NOREPLACE/O_EXCL. */
void spool_new_id(struct spool *s, char id_r[SPOOL_ID_LEN + 1]);
bool spool_id_valid(const char *id);

/* The envelope text format (versioned); parse refuses anything torn or odd. */
void spool_env_format(const struct spool_env *e, struct buf *out);
int spool_env_parse(const char *text, size_t len, struct spool_env *e_r, struct buf *reason);
void spool_env_deinit(struct spool_env *e);
void spool_env_add_rcpt(struct spool_env *e, const char *addr, const char *params);
void spool_env_add_edit(struct spool_env *e, uint64_t offset, uint64_t skip, const char *insert);
/* Counts recipients with the given status. */
size_t spool_env_count(const struct spool_env *e, enum spool_rcpt_status st);

/*
 * Writes the envelope durably into a state directory: temp file in tmp/,
 * fsync, rename, fsync of the state directory. The file's mtime is set to
 * e->next_ms when that is set. Replaces an envelope of the
 * same ID in that state. 0 or -1 (errno; an fsync error is not retried).
 */
int spool_env_write(struct spool *s, enum spool_state state, const struct spool_env *e);
/*
 * A new message's first envelope, into queue/, not made durable: only for a
 * message whose content is durable in data/<id> and whose envelope is derived
 * from that content alone (a fresh claim: every recipient pending, no
 * attempt). A crash that loses it leaves data/<id> without an envelope, which
 * recovery re-ingests; one that tears it (power loss before writeback) is
 * found by spool_env_torn when the message is loaded, and re-ingested too.
 * Saves the envelope's fsync and queue/'s. 0 or -1 (errno).
 */
int spool_env_create_lazy(struct spool *s, const struct spool_env *e);
/* True when the envelope file exists but was never completely written
 * (empty, a NUL, or no final "end" line): what a lost writeback leaves. */
bool spool_env_torn(struct spool *s, enum spool_state state, const char *id);
/* Reads and parses an envelope. -1 with errno (ENOENT...) or with a reason
 * when the file is corrupt (errno EBADMSG). */
int spool_env_read(struct spool *s, enum spool_state state, const char *id, struct spool_env *e_r,
		   struct buf *reason);
/* One state change: rename between state directories, both fsynced. */
int spool_move(struct spool *s, const char *id, enum spool_state from, enum spool_state to);
/* A rename between states without fsync, for moves whose loss in a crash is
 * harmless (deferred -> queue when an attempt starts: either place is fine). */
int spool_move_nosync(struct spool *s, const char *id, enum spool_state from, enum spool_state to);
/* Finishes a message: unlinks the content (durably: that is the record that
 * the message is done), then the envelope. */
int spool_remove(struct spool *s, const char *id, enum spool_state state);

/* spool_remove for n messages in one state sharing one fsync of data/:
 * errs[i] is 0 or the errno of message i. 0 when all succeeded, else -1. */
int spool_remove_batch(struct spool *s, const char (*ids)[SPOOL_ID_LEN + 1], size_t n,
		       enum spool_state state, int *errs);

/* Writes new content (a message pickupd makes itself) durably into data/
 * under a new ID; the caller then writes its envelope. 0 or -1 (errno). */
int spool_data_create(struct spool *s, const char *data, size_t len, char id_r[SPOOL_ID_LEN + 1]);

/* Opens the content read-only; -1 with errno. */
int spool_data_open(struct spool *s, const char *id);

/*
 * Claims a file: renames dir_fd/name to data/<new id> without replacing
 * anything, fsyncs the content and data/. When the pickup folder is on
 * another filesystem (EXDEV) the content is copied through tmp/ and made
 * durable first, then the original is unlinked. fd is an open descriptor of
 * the file (used for fsync and the copy). 0 or -1 (errno).
 */
int spool_claim(struct spool *s, int dir_fd, const char *name, int fd, char id_r[SPOOL_ID_LEN + 1]);

/* spool_claim with the folder's fsync shared among concurrent claims from
 * it (group commit, see spool_fsync_dir_group); dir_sync NULL: its own. */
int spool_claim_group(struct spool *s, int dir_fd, struct spool_dirsync *dir_sync, const char *name,
		      int fd, char id_r[SPOOL_ID_LEN + 1]);

/*
 * Group commit of a batch of claims from one folder: spool_claim_batched
 * renames and fsyncs the content only; one spool_claim_commit then makes
 * data/ and the folder durable for every claim of the batch. Until it
 * returns 0 nothing may depend on those claims (a message is not sent, its
 * pickup file not reported gone). 0 or -1 (errno).
 */
int spool_claim_batched(struct spool *s, int dir_fd, const char *name, int fd,
			char id_r[SPOOL_ID_LEN + 1]);
int spool_claim_commit(struct spool *s, int dir_fd, struct spool_dirsync *dir_sync);

/* Lists IDs in a state directory (sorted). The caller frees the array and strings. */
int spool_list(struct spool *s, enum spool_state state, char ***ids_r, size_t *n_r);
void spool_list_free(char **ids, size_t n);

/* Lists a state directory with each envelope's mtime, which holds its next
 * attempt time (see spool_env_write); no envelope is opened. Unsorted. */
struct spool_entry {
	char id[SPOOL_ID_LEN + 1];
	int64_t due_ms;
};
int spool_scan(struct spool *s, enum spool_state state, struct spool_entry **entries_r,
	       size_t *n_r);

/* fsync of a directory descriptor; also used by the daemon for the pickup folder. */
int spool_fsync_dir(int fd);

/*
 * Group commit: makes every rename or unlink this thread already did in
 * state directory `which` (or SPOOL_DIR_DATA, SPOOL_DIR_TMP) durable.
 * Callers on several threads share fsyncs: any fsync of that directory that
 * started after the call covers it. One runs at a time per directory: a
 * caller waits for the one in flight, and the first waiter then starts one
 * for everybody who arrived meanwhile. An fsync error fails every caller
 * whose call began before it finished, and is never retried on the same
 * descriptor (the directory is reopened). 0 or -1 (errno).
 */
#define SPOOL_DIR_DATA SPOOL_N_STATES
#define SPOOL_DIR_TMP  (SPOOL_N_STATES + 1)
#define SPOOL_N_DIRS   (SPOOL_N_STATES + 2)
int spool_fsync_dir_shared(struct spool *s, int which);

/* Group commit for a directory outside the spool (a pickup folder), with
 * the same rules as spool_fsync_dir_shared: makes every rename or unlink the
 * calling thread already did in the directory open on *fdp durable. *fdp may
 * be replaced by a fresh open of the same directory after a failed fsync.
 * With d NULL, a plain fsync. 0 or -1 (errno). */
struct spool_dirsync *spool_dirsync_new(void);
void spool_dirsync_free(struct spool_dirsync *d);
int spool_fsync_dir_group(struct spool *s, struct spool_dirsync *d, int *fdp);

/* True once the spool's file system answered EROFS: every state change then
 * fails at once with EROFS (one log line says so); a restart clears it. */
bool spool_readonly(struct spool *s);

/*
 * Recovery, run once before the daemon reports ready: cleans tmp/, drops
 * envelopes that exist in two states (keeps the furthest along), drops
 * envelopes whose content is gone (removal was cut short), and reports
 * content files with no envelope (claims cut short) for re-ingestion.
 */
struct spool_recovery {
	size_t tmp_cleaned;
	size_t duplicates;
	size_t dangling_envelopes;
	char **orphans; /* data IDs with no envelope */
	size_t n_orphans;
	size_t counts[SPOOL_N_STATES];
};
int spool_recover(struct spool *s, struct spool_recovery *r);
void spool_recovery_deinit(struct spool_recovery *r);

#endif
