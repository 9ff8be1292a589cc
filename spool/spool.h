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
 *   - data/<id> without any envelope is a claim in progress: re-ingested,
 *     from the folder its claim record names: data/<id>.from, or the line
 *     of <id> in data/<base>.batch, the record of a batch of claims (a
 *     record data/<id>.copy means the original is still in its folder:
 *     dropped);
 *   - an envelope without data/<id> is a message whose removal was cut short
 *     (content is always removed first, durably): the envelope is dropped.
 */
#ifndef PICKUPD_SPOOL_H
#define PICKUPD_SPOOL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

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
	/* Not in the file: [verbatim_from, verbatim_to) of the content goes to
	 * the wire unchanged (common/wire.h, wire_clean), as ingest's scan of a
	 * large message found; carried to delivery by its handoff, so that the
	 * run is sent unread. Both 0 when not known. */
	uint64_t verbatim_from, verbatim_to;
};

/* Group commit state of one directory (spool.c). */
struct spool_dirsync;

/* Finished envelopes kept for reuse (spool/spare.c), at most: enough for a
 * burst of thousands to make no envelope inode (32 KiB here, an inode and a
 * block each in tmp/, kept across the daemon's restarts). */
#define SPOOL_SPARES_MAX 4096

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
	/* Pickup folders whose fsync is owed (spool_claim_commit_data), and the
	 * lock that lets one spool_settle_folders run at a time. */
	pthread_mutex_t owed_lock, settle_lock;
	struct spool_dirsync *owed;
	int readonly;	 /* atomic: set at the first EROFS; state changes stop */
	mode_t env_mode; /* of the envelopes it writes: SPOOL_FILE_MODE less the umask */
	/* Batch claim records in use (spool/claimrec.c): a hash table by
	 * the block's first ID, under rec_lock. */
	pthread_mutex_t rec_lock;
	struct spool_batchrec **recs;
	size_t recs_size, n_recs;
	bool recs_known; /* recovery ran: every record in use is in recs */
	/* The syncer thread, started by the first early claim
	 * (spool_claim.data_early): it runs data/'s group commit on request. */
	pthread_mutex_t syncer_lock;
	pthread_cond_t syncer_cv;
	pthread_t syncer;
	bool syncer_started, syncer_want, syncer_stop;
	/* Finished envelopes kept in tmp/ for reuse (spool/spare.c): their
	 * numbers, under spare_lock; n_retiring are being renamed there. */
	pthread_mutex_t spare_lock;
	uint64_t spares[SPOOL_SPARES_MAX]; /* pid << 32 | number, from the name */
	unsigned n_spares, n_retiring, spare_seq;
	bool spares_kept; /* recovered here: spool_close leaves them for the next */
};

extern const char *const spool_state_names[SPOOL_N_STATES];
extern const char *const spool_rcpt_status_names[4];

/* Creates the state directories if needed and opens them. 0 or -1 (errno). */
int spool_open(struct spool *s, const char *dir);
void spool_close(struct spool *s);
/* How many finished envelopes wait in tmp/ for reuse (tests). */
unsigned spool_spares(struct spool *s);
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
 * A new message's first envelope, into queue/, not made durable (written over
 * a spare when there is one: spool/spare.c): only for a
 * message whose content is durable in data/<id> and whose envelope is derived
 * from that content alone (a fresh claim: every recipient pending, no
 * attempt). A crash that loses it leaves data/<id> without an envelope, which
 * recovery re-ingests; one that tears it (power loss before writeback) is
 * found by spool_env_torn when the message is loaded, and re-ingested too;
 * both as from the folder of the claim record, which is kept for that
 * (spool_claim.keep_record; never for a copy, whose original goes). Saves
 * the envelope's fsync and queue/'s. 0 or -1 (errno).
 */
int spool_env_create_lazy(struct spool *s, const struct spool_env *e);
/* True when the envelope file exists but was never completely written
 * (empty, a NUL, or no final "end" line), holds an envelope of another ID,
 * or one whole text followed by more after its "end" line: what a lost
 * writeback leaves (the last two: old blocks under the new name). Such a
 * first envelope is never acted on: its content is ingested again. */
bool spool_env_torn(struct spool *s, enum spool_state state, const char *id);
/* Reads and parses an envelope. -1 with errno (ENOENT...) or with a reason
 * when the file is corrupt (errno EBADMSG). */
int spool_env_read(struct spool *s, enum spool_state state, const char *id, struct spool_env *e_r,
		   struct buf *reason);
/* One state change: rename between state directories, both fsynced. */
int spool_move(struct spool *s, const char *id, enum spool_state from, enum spool_state to);
/* A rename between states without fsync, for moves whose loss in a crash is
 * harmless (deferred -> queue when an attempt starts: either place is fine).
 * Otherwise as spool_move: refused with EROFS once the spool is read-only,
 * its failure noted (spool__note_error), its step hooked ("nosync-rename"). */
int spool_move_nosync(struct spool *s, const char *id, enum spool_state from, enum spool_state to);
/* Unlinks an envelope alone, keeping the content, for a message that is to
 * be ingested again from it: data/<id> without an envelope is what recovery
 * re-ingests. Undoes the envelope of a claim whose commit failed, and drops
 * a torn first envelope (spool_env_torn). Not fsynced: an envelope that
 * comes back after a crash is the state before the call. ENOENT counts as
 * done. 0 or -1 (errno). */
int spool_env_drop(struct spool *s, enum spool_state state, const char *id);
/* Finishes a message: unlinks the content (durably: that is the record that
 * the message is done), then the envelope (kept in tmp/ as a spare for the
 * next new envelope while there are few: spool/spare.c). */
int spool_remove(struct spool *s, const char *id, enum spool_state state);

/* Writes new content (a message pickupd makes itself) durably into data/
 * under a new ID; the caller then writes its envelope. 0 or -1 (errno). */
int spool_data_create(struct spool *s, const char *data, size_t len, char id_r[SPOOL_ID_LEN + 1]);

/* Removes the content of a message that never got an envelope (a
 * spool_data_create whose envelope could not be written), so that recovery
 * does not take it for a claim cut short. Not fsynced; keeps errno (it is
 * called on a failure path). */
void spool_data_discard(struct spool *s, const char *id);

/* Opens the content read-only, without blocking (never a FIFO or device:
 * EINVAL); -1 with errno. */
int spool_data_open(struct spool *s, const char *id);

/* A claim between spool_claim and spool_claim_done/undo. Owner: the caller. */
struct spool_claim {
	char id[SPOOL_ID_LEN + 1];
	int dir_fd;	  /* the folder the file came from */
	const char *name; /* its name there (the caller's string) */
	bool copied;	  /* EXDEV: copied into data/; the original is still there */
	bool recorded;	  /* a claim record (origin) is in data/ */
	/* Set by the caller when the envelope was written by
	 * spool_env_create_lazy: spool_claim_done then leaves the record, which
	 * goes with the content (spool_remove), so that a lost or torn first
	 * envelope is ingested again as from its folder. */
	bool keep_record;
	/* spool_claim_lone with early: data/'s fsync was started at the
	 * rename (data_ticketed, with its ticket data_need/data_failures). */
	bool data_early;
	bool data_ticketed;
	uint64_t data_need, data_failures;
	/* spool_claim_lone_unsynced: the content's fsync is left to
	 * spool_claim_sync (cleared once it is done). */
	bool sync_deferred;
	/* spool_claim_mark_sending: the content's mode before the mark, put
	 * back with the file should the claim be undone. */
	bool content_marked;
	mode_t content_mode;
};

/*
 * Claims a file: renames dir_fd/name to data/<new id> without replacing
 * anything, fsyncs the content and data/. When the pickup folder is on
 * another filesystem (EXDEV) the content is copied through tmp/ and made
 * durable instead; the original stays until spool_claim_done. fd is an open
 * descriptor of the file (used for fsync and the copy), or -1 for an entry
 * that is not read (no fsync, no copy). With pickup set, a claim record
 * ("[pickup NAME]" and the file name, file defaulting to name) is made
 * durable along with the claim: recovery uses it for a claim cut short. A
 * failure after the rename puts the file back. 0 or -1 (errno).
 */
int spool_claim(struct spool *s, int dir_fd, const char *name, int fd, const char *pickup,
		const char *file, struct spool_claim *c_r);
/* The envelope of the claim is durable: removes the original of a copy
 * (-1 with errno when it cannot: ENOENT when another instance took it; the
 * caller then removes the message) and the claim record. */
int spool_claim_done(struct spool *s, struct spool_claim *c);
/* No envelope could be written: the file goes back where it was found (a
 * copy is dropped), at once. -1 when even that fails: the content then stays
 * in data/ with its record, and recovery finishes the claim. */
int spool_claim_undo(struct spool *s, struct spool_claim *c);

/*
 * Marks a queued envelope as in a transaction, just before it is sent: the
 * owner-execute bit of queue/<id> (Postfix marks queue files with mode bits
 * too). Not fsynced, so it costs no disk flush: a kill -9 always leaves it (the
 * kernel has it), a power loss may lose it. Recording the outcome rewrites or
 * removes the envelope, which clears it; an envelope still marked at recovery
 * was cut off between sending and recording, so it may be delivered twice.
 * Also the last check that the spool is writable before a transaction
 * starts: -1 with EROFS when it is not (or errno).
 */
int spool_mark_sending(struct spool *s, const char *id);
/* The same for an envelope this process has just written into queue/
 * (spool_env_write, spool_env_create_lazy) and not changed since: its mode
 * is known, so it is set without looking (no fstatat). */
int spool_mark_sending_new(struct spool *s, const char *id);
/* Clears that mark when the transaction never started after all (the
 * message goes back to the schedule unsent). Not fsynced either. */
int spool_unmark_sending(struct spool *s, const char *id);
/* The same mark on a claim's content (fd, mode its mode), for a message that
 * may be sent before its claim is complete (no envelope yet): content left
 * without an envelope at recovery and so marked is named with maybe_sent.
 * Undoing the claim puts the mode back. */
int spool_claim_mark_sending(struct spool_claim *c, int fd, mode_t mode);

/* spool_claim with the folder's fsync shared among concurrent claims from
 * it (group commit, see spool_fsync_dir_group); dir_sync NULL: its own. */
int spool_claim_group(struct spool *s, int dir_fd, struct spool_dirsync *dir_sync, const char *name,
		      int fd, const char *pickup, const char *file, struct spool_claim *c_r);

/*
 * Group commit of a batch of claims from one folder: spool_claim_batched
 * makes the record, renames and fsyncs the content only (a failure there
 * puts the file back at once, as spool_claim); one spool_claim_commit then
 * makes data/ and the folder durable for every claim of the batch. Until it
 * returns 0 nothing may depend on those claims (a message is not sent, its
 * pickup file not reported gone); when it fails, the caller undoes each
 * (its envelope removed, then spool_claim_undo). A copy (EXDEV) is durable
 * at once and needs no commit. 0 or -1 (errno).
 */
int spool_claim_batched(struct spool *s, int dir_fd, const char *name, int fd, const char *pickup,
			const char *file, struct spool_claim *c_r);
int spool_claim_commit(struct spool *s, int dir_fd, struct spool_dirsync *dir_sync);
/* spool_claim_batched for a batch of one file; with early, data/'s fsync
 * starts as soon as the file is renamed, on the spool's syncer thread, while
 * this thread fsyncs the content (the two flushes overlap: the latency path),
 * and spool_claim_commit_data_for(.., c_r) waits for it instead of making
 * one of its own. */
int spool_claim_lone(struct spool *s, int dir_fd, const char *name, int fd, const char *pickup,
		     const char *file, bool early, struct spool_claim *c_r);
/* spool_claim_lone (early) up to the rename: the content's fsync is left to
 * spool_claim_sync, which must come before anything but reading depends on
 * the claim (the caller may read and parse the content meanwhile, and start
 * a transaction that waits for the claim before its final dot). A copy
 * (EXDEV) is durable at once, as ever. */
int spool_claim_lone_unsynced(struct spool *s, int dir_fd, const char *name, int fd,
			      const char *pickup, const char *file, struct spool_claim *c_r);
/* The content's fsync of a spool_claim_lone_unsynced claim (none for any
 * other): a failure puts the file back at once, as a claim cut short is. 0
 * or -1 (errno). */
int spool_claim_sync(struct spool *s, struct spool_claim *c, int fd);
/* spool_claim_sync for n claims whose fsync was left for later (their
 * contents open on fds[i]), the flushes together (spool_fsync_many): errs[i]
 * is 0, or the errno of a claim that failed and was put back. */
void spool_claims_sync(struct spool *s, struct spool_claim *const *cs, const int *fds, size_t n,
		       int *errs);
/* fsync(2) of fds[0..n), all in flight together (Linux AIO; one by one where
 * it is not available): errs[i] = 0 or errno. Any thread. */
void spool_fsync_many(const int *fds, size_t n, int *errs);

/*
 * One claim record for a batch of claims from one folder, instead of one
 * symbolic link per claim: data/<base>.batch, a line per claim "ID TAB
 * PICKUP TAB FILE" (escaped as in envelopes: common/esc.h), the IDs a block
 * reserved for the batch.
 * spool_claim_batch_begin writes and fsyncs it (one fsync for the batch),
 * for files[0..n) (n <= SPOOL_BATCH_MAX) of [pickup NAME] pickup; the
 * strings are the caller's and must live until spool_claim_batch_end.
 * spool_claim_in_batch is spool_claim_batched for files[slot] under the
 * slot's ID with that record (a symbolic link and a new ID should the ID be
 * taken, or when begin failed). spool_claim_batch_end, once the batch's
 * claims are committed or undone, lets the record go as soon as no claim of
 * it needs it any more (at once when none does). 0 or -1 (errno).
 */
#define SPOOL_BATCH_MAX 32
struct spool_claim_batch {
	char base[SPOOL_ID_LEN + 1]; /* the block's first ID; "" when there is no record */
	const char *pickup;
	const char *const *files;
	size_t n;
};
int spool_claim_batch_begin(struct spool *s, const char *pickup, const char *const *files, size_t n,
			    struct spool_claim_batch *b_r);
int spool_claim_in_batch(struct spool *s, const struct spool_claim_batch *b, size_t slot,
			 int dir_fd, const char *name, int fd, struct spool_claim *c_r);
/* spool_claim_in_batch and spool_claim_batched with the content's fsync
 * left to spool_claims_sync (or spool_claim_sync), so that a batch's
 * flushes go together; nothing but reading may depend on such a claim
 * before. */
int spool_claim_in_batch_unsynced(struct spool *s, const struct spool_claim_batch *b, size_t slot,
				  int dir_fd, const char *name, int fd, struct spool_claim *c_r);
int spool_claim_batched_unsynced(struct spool *s, int dir_fd, const char *name, int fd,
				 const char *pickup, const char *file, struct spool_claim *c_r);
void spool_claim_batch_end(struct spool *s, struct spool_claim_batch *b);
/*
 * spool_claim_commit with the folder's fsync left owed: data/ is made durable
 * (the claims' messages may be sent), and the folder (open on dir_fd, which
 * stays open until spool_folder_forget) is fsynced by the next
 * spool_settle_folders, which every removal of content runs first: content
 * never leaves data/ before the name it had in its folder is durably gone.
 * With dir_sync NULL, spool_claim_commit. 0 or -1 (errno).
 */
int spool_claim_commit_data(struct spool *s, int dir_fd, struct spool_dirsync *dir_sync);
/* The same, for claims of which c (NULL: none) asked for data/'s fsync
 * early (data_early): its fsync is waited for, not made again. */
int spool_claim_commit_data_for(struct spool *s, int dir_fd, struct spool_dirsync *dir_sync,
				const struct spool_claim *c);
/* Makes every owed folder fsync (see spool_claim_commit_data). 0 or -1
 * (errno; the folder stays owed and is fsynced again, freshly opened). */
int spool_settle_folders(struct spool *s);
/* Before a folder's descriptor is closed or its dir_sync freed: makes its
 * owed fsync, if any, and forgets the folder. 0 or -1 (errno). */
int spool_folder_forget(struct spool *s, struct spool_dirsync *dir_sync);

/* The [pickup NAME] and file name the claim record of data/<id> holds
 * (malloc'ed), or -1 with both NULL when there is none. */
int spool_claim_origin(struct spool *s, const char *id, char **pickup_r, char **file_r);

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

/* What stat(2) tells of one message, no file opened: when its envelope
 * entered its state (ctime, which the rename sets), its next attempt (mtime,
 * see spool_env_write: only a deferred envelope's is meaningful) and the
 * size of its content (0 when there is none). 0 or -1 (errno: ENOENT when
 * the envelope is not in that state). */
struct spool_stat {
	int64_t since_ms;
	int64_t due_ms;
	uint64_t bytes;
};
int spool_stat(struct spool *s, enum spool_state state, const char *id, struct spool_stat *st_r);

/*
 * The spool lock (spool/lock.c): an exclusive flock(2) on the spool
 * directory. Only its holder changes the spool, and one process at most
 * holds it:
 *   - pickupd takes it at start-up, waiting a few seconds for a pickupctl
 *     command or a stopping daemon to let go, and holds it for its lifetime
 *     (the kernel drops it however the process ends);
 *   - pickupctl's mutating commands go through a running daemon (its
 *     control socket); only when none answers does pickupctl take the lock,
 *     without waiting, for one command, then drop it. EWOULDBLOCK then means
 *     a daemon holds the spool but does not answer yet (starting or
 *     stopping): try again;
 *   - readers (mailq, pickupctl list/show/status) take no lock;
 *   - <spool>/operator-actions is appended to only under the lock.
 * spool_lock tries for up to wait_ms (0: once). 0, or -1 with errno
 * (EWOULDBLOCK: still held by another). spool_unlock lets it go.
 */
int spool_lock(struct spool *s, int wait_ms);
void spool_unlock(struct spool *s);

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
 * envelopes whose content is gone (removal was cut short), drops copies
 * whose original is still in its folder, reports content files with no
 * envelope (claims cut short) for re-ingestion with their claim records, and
 * the queued messages that were being sent (they may arrive twice).
 */
struct spool_recovery {
	size_t tmp_cleaned;
	size_t spares_kept; /* spare envelopes taken back from the last run */
	size_t duplicates;
	size_t dangling_envelopes;
	size_t copies_dropped; /* claims by copy cut short: the original is still there */
	char **orphans;	       /* data IDs with no envelope */
	char **orphan_pickups; /* the [pickup NAME] each came from, NULL if unknown */
	char **orphan_files;   /* its file name there, NULL if unknown */
	size_t n_orphans;
	/* IDs that were in a transaction: queued (spool_mark_sending), or
	 * orphans whose claim was cut short (spool_claim_mark_sending) */
	char **maybe_sent;
	size_t n_maybe_sent;
	size_t counts[SPOOL_N_STATES];
};
int spool_recover(struct spool *s, struct spool_recovery *r);
void spool_recovery_deinit(struct spool_recovery *r);

/*
 * Batches for operators' commands over many messages (delete ALL, purge):
 * the steps and hooks of spool_move and spool_remove, each directory
 * fsynced once for the whole batch. err_r[i] is set to 0 or the errno of
 * ids[i] (a failed directory fsync fails every ID it was to cover). Return
 * how many succeeded. Callers bound n (pickupctl sends a few thousand).
 */
size_t spool_move_many(struct spool *s, char *const *ids, size_t n, enum spool_state from,
		       enum spool_state to, int *err_r);
size_t spool_remove_many(struct spool *s, char *const *ids, size_t n, enum spool_state state,
			 int *err_r);

/*
 * Operators' commands on messages (spool/ops.c). What a command may do from
 * which state is decided here once, for the daemon's control socket and
 * pickupctl alike:
 *   retry    deferred -> queue; queue: nothing to do (ok); hold, badmail: refused
 *   hold     queue, deferred -> hold
 *   release  hold -> queue
 *   delete   any state: content and envelope removed
 *   requeue  badmail -> queue, recipients not sent made pending again
 *   purge    badmail: removed (delete restricted to badmail/)
 */
enum spool_op {
	SPOOL_OP_RETRY,
	SPOOL_OP_HOLD,
	SPOOL_OP_RELEASE,
	SPOOL_OP_DELETE,
	SPOOL_OP_REQUEUE,
	SPOOL_OP_PURGE,
	SPOOL_N_OPS
};
extern const char *const spool_op_names[SPOOL_N_OPS];
/* -1 when unknown. */
int spool_op_from_name(const char *name);
/* The past participle for texts and logs: "held", "deleted", ... */
const char *spool_op_done(enum spool_op op);

enum spool_op_act { SPOOL_ACT_NONE, SPOOL_ACT_MOVE, SPOOL_ACT_REMOVE, SPOOL_ACT_REQUEUE };
/* BUSY: another actor owns the message right now (the daemon's sessions). */
enum spool_op_result { SPOOL_OP_PENDING, SPOOL_OP_OK, SPOOL_OP_FAILED, SPOOL_OP_BUSY };

/* One message of a command. Owner: the batch that holds it (spool_op_item_deinit). */
struct spool_op_item {
	char id[SPOOL_ID_LEN + 1];
	int from; /* state it was found in; -1 = in none */
	enum spool_op_act act;
	enum spool_state to; /* SPOOL_ACT_MOVE */
	enum spool_op_result result;
	char *text; /* one line: "ID held", "ID is in hold, not badmail" */
};
void spool_op_set(struct spool_op_item *it, enum spool_op_result r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void spool_op_item_deinit(struct spool_op_item *it);

/* Where the envelope of id is, or -1 (errno ENOENT) when in no state directory. */
int spool_locate(struct spool *s, const char *id);
/*
 * Decides from it->from what op does to the message: an act to perform
 * (result stays SPOOL_OP_PENDING), or a final result with its text (wrong
 * state, no such message, nothing to do). A deferred message's retry is a
 * move to queue/; the daemon reschedules it in memory instead.
 */
void spool_op_plan(enum spool_op op, struct spool_op_item *it);
/* True when op acts on a message in st (what "ALL" selects). */
bool spool_op_applies(enum spool_op op, enum spool_state st);
/*
 * Performs the pending acts, batched so that each directory is fsynced once
 * per (act, from, to) group; sets each result and text.
 */
void spool_op_apply(struct spool *s, enum spool_op op, struct spool_op_item *items, size_t n);
/*
 * Puts a badmail message back into queue/: recipients not yet sent become
 * pending, attempts start again, the reason is cleared; written durably in
 * badmail/ first, then renamed into queue/. Refuses (with a reason) a file
 * refused at pickup, which has no usable envelope: such a file is fixed and
 * dropped into the pickup folder again. 0, or -1 with why appended.
 */
int spool_requeue(struct spool *s, const char *id, struct buf *why);

/*
 * <spool>/operator-actions: what pickupctl did to the spool while pickupd
 * was not running, one line per action, for the daemon to log at its next
 * start (spool/audit.c). Append only under the spool lock; fsynced.
 * read: the pending text (empty, not an error, when there is none).
 * clear: removes it, once logged. 0 or -1 (errno).
 */
int spool_audit_append(struct spool *s, const char *text, size_t len);
int spool_audit_read(struct spool *s, struct buf *out);
int spool_audit_clear(struct spool *s);

#endif
