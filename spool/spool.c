/*
 * Purpose: the on-disk queue: paths, IDs, durable writes and transitions,
 * group commit of directory fsyncs, listing and recovery.
 * Owns: every path under the spool directory and every rename in it (the
 * spare envelopes' in tmp/: spool/spare.c); the
 * per-directory sync generations (struct spool_dirsync); the claim records
 * (data/<id>.from|.copy; a batch's data/<base>.batch is spool/claimrec.c's)
 * and the being-sent mark (owner-execute bit).
 * Invariants: each transition is made durable (fsync of the file and of the
 * directories involved) before the call returns success (the one exception,
 * spool_env_create_lazy, writes what recovery can derive again from durable
 * content): a shared directory
 * fsync covers a caller only if it started after the caller's rename/unlink;
 * content is removed before its envelope, so an envelope without content
 * means "done"; a claim record is made before the content enters data/ and
 * removed only after the envelope is durable (a lazy first envelope's
 * record stays until the content is removed, with it); content leaves data/
 * only after the folder it was claimed from has fsynced its name away (a
 * folder fsync owed by spool_claim_commit_data is made by
 * spool_settle_folders first); after the first EROFS (seen
 * by any write) no state change is attempted.
 */
#include "spool/spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/log.h"
#include "spool/spool_int.h"

/* Of every file spool writes (less the umask). */
#define SPOOL_FILE_MODE 0640

/*
 * Group commit of one directory. Generations number directory fsyncs in the
 * order they start, and at most one runs at a time: callers that arrive while
 * one runs wait for it, and the first of them then starts one that covers
 * them all (each fsync is a device cache flush on the VM's journal-less ext4,
 * and concurrent ones share flushes only partly, so one per batch is what
 * saves them). Right after its rename a caller takes a ticket: the generation
 * the next fsync to start will have. An fsync of that generation or later
 * started after the rename, so its success covers it. A failed fsync fails
 * every caller whose ticket was taken before it finished (it may have eaten
 * their error report: fsyncgate), and the directory is reopened.
 */
struct spool_dirsync {
	pthread_mutex_t lock;
	pthread_cond_t done;
	uint64_t started;  /* last generation begun */
	uint64_t max_done; /* highest generation finished */
	uint64_t failures; /* fsyncs that failed so far */
	int failed_err;
	bool running; /* an fsync of this directory is in flight */
	/* A pickup folder whose fsync is owed (spool_claim_commit_data): one
	 * covering owed_ticket must finish before any content leaves data/.
	 * Under the spool's owed_lock; owed_next links the spool's list. */
	bool owed;
	struct dirsync_ticket {
		uint64_t need;
		uint64_t failures;
	} owed_ticket;
	int owed_fd; /* the folder's descriptor (a reopen keeps its number) */
	struct spool_dirsync *owed_next;
};

const char *const spool_state_names[SPOOL_N_STATES] = {"queue", "deferred", "hold", "badmail"};

static int open_subdir(int dir_fd, const char *name)
{
	if (mkdirat(dir_fd, name, 0750) < 0 && errno != EEXIST)
		return -1;
	return openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

int spool_open(struct spool *s, const char *dir)
{
	memset(s, 0, sizeof(*s));
	s->dir_fd = s->data_fd = s->tmp_fd = -1;
	for (int i = 0; i < SPOOL_N_STATES; i++)
		s->state_fd[i] = -1;
	if (mkdir(dir, 0750) < 0 && errno != EEXIST)
		return -1;
	s->dir = xstrdup(dir);
	s->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->dir_fd < 0)
		goto fail;
	if ((s->data_fd = open_subdir(s->dir_fd, "data")) < 0)
		goto fail;
	if ((s->tmp_fd = open_subdir(s->dir_fd, "tmp")) < 0)
		goto fail;
	for (int i = 0; i < SPOOL_N_STATES; i++)
		if ((s->state_fd[i] = open_subdir(s->dir_fd, spool_state_names[i])) < 0)
			goto fail;
	/* Make the directories themselves durable before anything goes in them. */
	if (spool_fsync_dir(s->dir_fd) < 0)
		goto fail;
	s->pid = (unsigned)getpid();
	/* The mode write_file gives a new envelope (spool_mark_sending_new). */
	mode_t um = umask(0077);
	umask(um);
	s->env_mode = (mode_t)(SPOOL_FILE_MODE & ~um);
	pthread_mutex_init(&s->id_lock, NULL);
	s->id_lock_init = true;
	s->dsync = xcalloc(SPOOL_N_DIRS, sizeof(*s->dsync));
	for (int i = 0; i < SPOOL_N_DIRS; i++) {
		pthread_mutex_init(&s->dsync[i].lock, NULL);
		pthread_cond_init(&s->dsync[i].done, NULL);
	}
	pthread_mutex_init(&s->owed_lock, NULL);
	pthread_mutex_init(&s->settle_lock, NULL);
	pthread_mutex_init(&s->syncer_lock, NULL);
	pthread_cond_init(&s->syncer_cv, NULL);
	spool__batchrec_init(s);
	spool__spares_init(s);
	return 0;
fail:;
	int saved = errno;
	spool_close(s);
	errno = saved;
	return -1;
}

static void syncer_stop(struct spool *s);

void spool_close(struct spool *s)
{
	if (s->dsync) {
		syncer_stop(s);		 /* before the descriptors it fsyncs */
		spool__spares_deinit(s); /* while tmp/ is open */
	}
	if (s->dir_fd >= 0)
		close(s->dir_fd);
	if (s->data_fd >= 0)
		close(s->data_fd);
	if (s->tmp_fd >= 0)
		close(s->tmp_fd);
	for (int i = 0; i < SPOOL_N_STATES; i++)
		if (s->state_fd[i] >= 0)
			close(s->state_fd[i]);
	free(s->dir);
	if (s->id_lock_init)
		pthread_mutex_destroy(&s->id_lock);
	if (s->dsync) {
		pthread_mutex_destroy(&s->owed_lock);
		pthread_mutex_destroy(&s->settle_lock);
		pthread_mutex_destroy(&s->syncer_lock);
		pthread_cond_destroy(&s->syncer_cv);
		spool__batchrec_deinit(s);
		for (int i = 0; i < SPOOL_N_DIRS; i++) {
			pthread_mutex_destroy(&s->dsync[i].lock);
			pthread_cond_destroy(&s->dsync[i].done);
		}
		free(s->dsync);
	}
	memset(s, 0, sizeof(*s));
	s->dir_fd = s->data_fd = s->tmp_fd = -1;
	for (int i = 0; i < SPOOL_N_STATES; i++)
		s->state_fd[i] = -1;
}

int spool_state_from_name(const char *name)
{
	for (int i = 0; i < SPOOL_N_STATES; i++)
		if (strcmp(name, spool_state_names[i]) == 0)
			return i;
	return -1;
}

static int64_t now_ms(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* 12 hex digits of milliseconds (sortable until the year 10889), 5 of the
 * process ID and 3 of a per-millisecond counter. */
void spool_new_id(struct spool *s, char id_r[SPOOL_ID_LEN + 1])
{
	int64_t ms = now_ms();
	pthread_mutex_lock(&s->id_lock);
	if (ms <= s->last_ms) {
		/* Same millisecond or a clock step back: keep IDs increasing. */
		if (++s->seq > 0xfff) {
			s->seq = 0;
			s->last_ms++;
		}
		ms = s->last_ms;
	} else {
		s->seq = 0;
		s->last_ms = ms;
	}
	snprintf(id_r, SPOOL_ID_LEN + 1, "%012llX%05X%03X",
		 (unsigned long long)ms & 0xffffffffffffULL, s->pid & 0xfffff, s->seq);
	pthread_mutex_unlock(&s->id_lock);
}

/* A block of SPOOL_BATCH_MAX IDs for one batch's claim record: the counter
 * jumps to the next multiple of SPOOL_BATCH_MAX (the next millisecond when
 * this one has no whole block left), and no other ID of this process falls
 * in the block. */
void spool__new_block(struct spool *s, char base_r[SPOOL_ID_LEN + 1])
{
	const uint32_t span = SPOOL_BATCH_MAX;
	int64_t ms = now_ms();
	uint32_t seq = 0;
	pthread_mutex_lock(&s->id_lock);
	if (ms <= s->last_ms) {
		seq = (s->seq + span) & ~(span - 1);
		if (seq + span - 1 > 0xfff) {
			seq = 0;
			s->last_ms++;
		}
		ms = s->last_ms;
	} else {
		s->last_ms = ms;
	}
	s->seq = seq + span - 1;
	snprintf(base_r, SPOOL_ID_LEN + 1, "%012llX%05X%03X",
		 (unsigned long long)ms & 0xffffffffffffULL, s->pid & 0xfffff, seq);
	pthread_mutex_unlock(&s->id_lock);
}

bool spool_id_valid(const char *id)
{
	size_t i;
	for (i = 0; id[i]; i++)
		if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'A' && id[i] <= 'F')))
			return false;
	return i == SPOOL_ID_LEN;
}

int spool_fsync_dir(int fd)
{
	return fsync(fd);
}

static const char *dir_name(int which)
{
	return which == SPOOL_DIR_DATA	? "data"
	       : which == SPOOL_DIR_TMP ? "tmp"
					: spool_state_names[which];
}

static int *dir_fd_of(struct spool *s, int which)
{
	return which == SPOOL_DIR_DATA	? &s->data_fd
	       : which == SPOOL_DIR_TMP ? &s->tmp_fd
					: &s->state_fd[which];
}

bool spool_readonly(struct spool *s)
{
	return atomic_load((_Atomic int *)&s->readonly) != 0;
}

/* Looks at a failed call's errno: the first EROFS stops state changes, with
 * one log line. Every write to the spool passes its failure through here, so
 * that the daemon (which watches spool_readonly) stops whichever write met
 * it first. Keeps errno. */
void spool__note_error(struct spool *s)
{
	int e = errno;
	if (e == EROFS && atomic_exchange((_Atomic int *)&s->readonly, 1) == 0)
		log_error("spool %s: the file system is read-only (EROFS); no state change is "
			  "made any more and no transaction is started: pickupd ends what is in "
			  "flight and exits; repair the file system, a restart delivers the rest",
			  s->dir);
	errno = e;
}

/* Fails at once when the spool is known to be read-only. */
int spool__check_writable(struct spool *s)
{
	if (spool_readonly(s)) {
		errno = EROFS;
		return -1;
	}
	return 0;
}

/* After a failed fsync the descriptor's error has been reported and a second
 * fsync on it would say "ok" for pages that were lost: put a fresh open of the
 * directory on the same descriptor number (dup2 is atomic for other threads). */
static void reopen_dir(struct spool *s, int which)
{
	int fd = openat(s->dir_fd, dir_name(which), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return;
	dup2(fd, *dir_fd_of(s, which));
	close(fd);
}

static struct dirsync_ticket ticket_of(struct spool_dirsync *d)
{
	struct dirsync_ticket t;
	pthread_mutex_lock(&d->lock);
	t.need = d->started + 1;
	t.failures = d->failures;
	pthread_mutex_unlock(&d->lock);
	return t;
}

static struct dirsync_ticket dir_ticket(struct spool *s, int which)
{
	return ticket_of(&s->dsync[which]);
}

/* Reopens a directory outside the spool after a failed fsync, on the same
 * descriptor number (see reopen_dir). */
static void reopen_fd(int fd)
{
	int nfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (nfd < 0)
		return;
	dup2(nfd, fd);
	close(nfd);
}

/* The group commit itself: which is a spool directory, or -1 for the
 * directory open on *fdp (a pickup folder). */
static int group_commit(struct spool *s, struct spool_dirsync *d, int which, int *fdp,
			struct dirsync_ticket t)
{
	int err = 0;

	pthread_mutex_lock(&d->lock);
	while (d->max_done < t.need) {
		if (d->running) {
			/* It covers this caller (started >= need), or it started
			 * before the caller's rename: then the caller leads the next. */
			pthread_cond_wait(&d->done, &d->lock);
			continue;
		}
		uint64_t gen = ++d->started;
		d->running = true;
		pthread_mutex_unlock(&d->lock);
		int r = spool__hook("dir-fsync");
		if (r == 0)
			r = fsync(*fdp);
		int e = r < 0 ? errno : 0;
		if (r < 0 && e != EROFS) {
			if (which >= 0)
				reopen_dir(s, which);
			else
				reopen_fd(*fdp);
		}
		pthread_mutex_lock(&d->lock);
		d->running = false;
		if (r < 0) {
			d->failures++;
			d->failed_err = e;
		}
		if (gen > d->max_done)
			d->max_done = gen;
		pthread_cond_broadcast(&d->done);
	}
	if (d->failures != t.failures)
		err = d->failed_err;
	pthread_mutex_unlock(&d->lock);
	if (err) {
		errno = err;
		spool__note_error(s);
		return -1;
	}
	return 0;
}

static int dir_commit(struct spool *s, int which, struct dirsync_ticket t)
{
	return group_commit(s, &s->dsync[which], which, dir_fd_of(s, which), t);
}

struct spool_dirsync *spool_dirsync_new(void)
{
	struct spool_dirsync *d = xcalloc(1, sizeof(*d));
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->done, NULL);
	return d;
}

void spool_dirsync_free(struct spool_dirsync *d)
{
	if (d == NULL)
		return;
	pthread_mutex_destroy(&d->lock);
	pthread_cond_destroy(&d->done);
	free(d);
}

int spool_fsync_dir_group(struct spool *s, struct spool_dirsync *d, int *fdp)
{
	if (d == NULL)
		return spool_fsync_dir(*fdp);
	return group_commit(s, d, -1, fdp, ticket_of(d));
}

/*
 * The folder's fsync owed by a batch of claims. Its renames out of the folder
 * are already durable in data/: what the folder's fsync adds is that the name
 * cannot come back after a power loss. That matters once the content goes
 * (a name coming back then would name a freed inode), so spool_settle_folders
 * runs before every removal of content; until then a name that came back
 * would only be claimed twice, which the send itself already risks.
 */
int spool_claim_commit_data(struct spool *s, int dir_fd, struct spool_dirsync *d)
{
	return spool_claim_commit_data_for(s, dir_fd, d, NULL);
}

int spool_claim_commit_data_for(struct spool *s, int dir_fd, struct spool_dirsync *d,
				const struct spool_claim *c)
{
	int r = spool__hook("claim-commit-data");
	if (r == 0 && c && c->data_ticketed) {
		struct dirsync_ticket early = {c->data_need, c->data_failures};
		r = dir_commit(s, SPOOL_DIR_DATA, early);
	} else if (r == 0) {
		r = spool_fsync_dir_shared(s, SPOOL_DIR_DATA);
	}
	if (r < 0) {
		spool__note_error(s);
		return -1;
	}
	if (d == NULL) {
		if (spool__hook("claim-commit-folder") < 0 || spool_fsync_dir(dir_fd) < 0) {
			spool__note_error(s);
			return -1;
		}
		return 0;
	}
	struct dirsync_ticket t = ticket_of(d);
	pthread_mutex_lock(&s->owed_lock);
	if (!d->owed) {
		/* The earliest failure count: a failure after it may have eaten
		 * this batch's renames. */
		d->owed_ticket.failures = t.failures;
		d->owed_next = s->owed;
		s->owed = d;
		d->owed = true;
	}
	d->owed_ticket.need = t.need;
	d->owed_fd = dir_fd;
	pthread_mutex_unlock(&s->owed_lock);
	return 0;
}

/*
 * The syncer: data/'s fsync for a lone claim starts as soon as its rename is
 * made, on this thread, while the claiming thread fsyncs the content: the
 * two flushes overlap instead of following each other (about 0.2 ms of the
 * time from drop to send here). It adds no crash state: from the rename on,
 * the kernel may write data/'s entry back at any moment anyway, and nothing
 * acts on the claim before both fsyncs are done (spool_claim_commit_data_for
 * waits for this one by its ticket, and sees its failure in the group's
 * failure count).
 */
static void *syncer_main(void *arg)
{
	struct spool *s = arg;
	pthread_mutex_lock(&s->syncer_lock);
	for (;;) {
		while (!s->syncer_want && !s->syncer_stop)
			pthread_cond_wait(&s->syncer_cv, &s->syncer_lock);
		if (s->syncer_stop)
			break;
		s->syncer_want = false;
		pthread_mutex_unlock(&s->syncer_lock);
		(void)dir_commit(s, SPOOL_DIR_DATA, dir_ticket(s, SPOOL_DIR_DATA));
		pthread_mutex_lock(&s->syncer_lock);
	}
	pthread_mutex_unlock(&s->syncer_lock);
	return NULL;
}

/* Asks for a data/ fsync that covers every rename made so far: true, or
 * false when there is no syncer (the caller makes its own). */
static bool syncer_kick(struct spool *s)
{
	bool ok = true;
	pthread_mutex_lock(&s->syncer_lock);
	if (!s->syncer_started && !s->syncer_stop)
		s->syncer_started = pthread_create(&s->syncer, NULL, syncer_main, s) == 0;
	if (s->syncer_started) {
		s->syncer_want = true;
		pthread_cond_signal(&s->syncer_cv);
	} else {
		ok = false;
	}
	pthread_mutex_unlock(&s->syncer_lock);
	return ok;
}

static void syncer_stop(struct spool *s)
{
	pthread_mutex_lock(&s->syncer_lock);
	s->syncer_stop = true;
	pthread_cond_signal(&s->syncer_cv);
	bool started = s->syncer_started;
	pthread_mutex_unlock(&s->syncer_lock);
	if (started)
		pthread_join(s->syncer, NULL);
}

/* Right after a claim's rename: data/'s fsync is started early when the
 * caller asked for it, with the ticket taken before the start, so that
 * the fsync started covers the rename. */
static void claim_sync_early(struct spool *s, struct spool_claim *c)
{
	if (!c->data_early || s->dsync == NULL)
		return;
	struct dirsync_ticket t = dir_ticket(s, SPOOL_DIR_DATA);
	if (spool__hook("claim-early-sync") < 0 || !syncer_kick(s))
		return;
	c->data_need = t.need;
	c->data_failures = t.failures;
	c->data_ticketed = true;
}

int spool_settle_folders(struct spool *s)
{
	int ret = 0, err = 0;
	pthread_mutex_lock(&s->settle_lock);
	for (;;) {
		/* One at a time, under settle_lock: spool_folder_forget waits for
		 * it, so the folder's descriptor and sync state stay valid. */
		pthread_mutex_lock(&s->owed_lock);
		struct spool_dirsync *d = s->owed;
		struct dirsync_ticket t = {0, 0};
		int fd = -1;
		if (d) {
			t = d->owed_ticket;
			fd = d->owed_fd;
		}
		pthread_mutex_unlock(&s->owed_lock);
		if (d == NULL)
			break;
		int r = spool__hook("claim-commit-folder");
		if (r == 0)
			r = group_commit(s, d, -1, &fd, t);
		pthread_mutex_lock(&s->owed_lock);
		if (r < 0) {
			/* Still owed, by a fresh fsync of the reopened folder. */
			err = errno;
			ret = -1;
			struct dirsync_ticket nt = ticket_of(d);
			d->owed_ticket = nt;
		} else if (d->owed_ticket.need <= t.need) {
			for (struct spool_dirsync **pp = &s->owed; *pp; pp = &(*pp)->owed_next)
				if (*pp == d) {
					*pp = d->owed_next;
					break;
				}
			d->owed = false;
		}
		pthread_mutex_unlock(&s->owed_lock);
		if (r < 0)
			break;
	}
	pthread_mutex_unlock(&s->settle_lock);
	if (ret < 0) {
		errno = err;
		spool__note_error(s);
	}
	return ret;
}

int spool_folder_forget(struct spool *s, struct spool_dirsync *d)
{
	if (d == NULL)
		return 0;
	int r = 0;
	pthread_mutex_lock(&s->settle_lock);
	pthread_mutex_lock(&s->owed_lock);
	bool owed = d->owed;
	struct dirsync_ticket t = d->owed_ticket;
	int fd = d->owed_fd;
	for (struct spool_dirsync **pp = &s->owed; *pp; pp = &(*pp)->owed_next)
		if (*pp == d) {
			*pp = d->owed_next;
			break;
		}
	d->owed = false;
	pthread_mutex_unlock(&s->owed_lock);
	if (owed)
		r = group_commit(s, d, -1, &fd, t);
	pthread_mutex_unlock(&s->settle_lock);
	return r;
}

int spool_fsync_dir_shared(struct spool *s, int which)
{
	return dir_commit(s, which, dir_ticket(s, which));
}

/* Writes a new file (O_EXCL); with a sync_hook, makes it durable (that
 * crash-test step, then fsync). */
static int write_file(int dir_fd, const char *name, const char *data, size_t len, int64_t mtime_ms,
		      const char *sync_hook)
{
	int fd = openat(dir_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, SPOOL_FILE_MODE);
	if (fd < 0)
		return -1;
	size_t off = 0;
	while (off < len) {
		ssize_t n = write(fd, data + off, len - off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		off += (size_t)n;
	}
	if (spool__set_mtime(fd, mtime_ms) < 0)
		goto fail;
	if (sync_hook && (spool__hook(sync_hook) < 0 || fsync(fd) < 0))
		goto fail;
	if (close(fd) < 0) {
		fd = -1;
		goto fail;
	}
	return 0;
fail:
	spool__discard(fd, dir_fd, name);
	return -1;
}

int spool__set_mtime(int fd, int64_t mtime_ms)
{
	if (mtime_ms <= 0)
		return 0;
	struct timespec ts[2];
	ts[0].tv_sec = ts[1].tv_sec = mtime_ms / 1000;
	ts[0].tv_nsec = ts[1].tv_nsec = (mtime_ms % 1000) * 1000000;
	return futimens(fd, ts);
}

void spool__discard(int fd, int dir_fd, const char *name)
{
	int saved = errno;
	if (fd >= 0)
		close(fd);
	unlinkat(dir_fd, name, 0);
	errno = saved;
}

int spool__write_file(int dir_fd, const char *name, const char *data, size_t len, int64_t mtime_ms)
{
	return write_file(dir_fd, name, data, len, mtime_ms, "write-fsync");
}

int spool__write_new(int dir_fd, const char *name, const char *data, size_t len,
		     const char *sync_hook)
{
	return write_file(dir_fd, name, data, len, 0, sync_hook);
}

int spool_env_create_lazy(struct spool *s, const struct spool_env *e)
{
	struct buf text = BUF_INIT;
	char tmp[SPOOL_ID_LEN + 16];
	int ret = -1;

	if (spool__check_writable(s) < 0)
		return -1;
	spool_env_format(e, &text);
	/* Over a finished envelope when there is one: no new inode. Its old
	 * text may come back under this name after a crash (it is not
	 * fsynced), which spool_env_torn knows by its id line. A failure drops
	 * the spare and makes a new file. */
	if (spool__spare_install(s, text.data, text.len, e->next_ms, s->state_fd[SPOOL_QUEUE],
				 e->id) == 0) {
		ret = 0;
		goto out;
	}
	snprintf(tmp, sizeof(tmp), "%s.env", e->id);
	/* A leftover of a killed attempt is in the way only if an ID came
	 * back, which cannot happen: O_EXCL says so if it does. */
	if (spool__hook("lazy-env-write") < 0 ||
	    write_file(s->tmp_fd, tmp, text.data, text.len, e->next_ms, NULL) < 0)
		goto out;
	if (spool__hook("lazy-env-rename") < 0 ||
	    renameat2(s->tmp_fd, tmp, s->state_fd[SPOOL_QUEUE], e->id, RENAME_NOREPLACE) < 0) {
		int saved = errno;
		unlinkat(s->tmp_fd, tmp, 0);
		errno = saved;
		goto out;
	}
	ret = 0;
out:
	if (ret < 0)
		spool__note_error(s);
	buf_deinit(&text);
	return ret;
}

/* Whether text (a whole file ending in "end\n") is stale: an envelope of
 * another ID (blocks of a freed envelope under a new file's name: a crash
 * before the new text's writeback, on a file system without a journal that
 * orders data before metadata), or a whole text followed by the tail of a
 * longer old one (the new text landed, the new size did not). */
static bool env_stale(const char *text, size_t len, const char *id)
{
	/* "end" alone on a line ends an envelope; no field's value holds it. */
	const char *first_end = memmem(text, len, "\nend\n", 5);
	if (first_end && first_end + 5 != text + len)
		return true;
	struct spool_env e;
	if (spool_env_parse(text, len, &e, NULL) < 0)
		return false;
	bool other = strcmp(e.id, id) != 0;
	spool_env_deinit(&e);
	return other;
}

bool spool_env_torn(struct spool *s, enum spool_state state, const char *id)
{
	struct buf text = BUF_INIT;
	bool torn = false;
	if (spool__read_all(s->state_fd[state], id, 64 << 20, &text) == 0)
		torn = text.len < 4 || memchr(text.data, '\0', text.len) != NULL ||
		       memcmp(text.data + text.len - 4, "end\n", 4) != 0 ||
		       env_stale(text.data, text.len, id);
	buf_deinit(&text);
	return torn;
}

int spool_env_drop(struct spool *s, enum spool_state state, const char *id)
{
	if (spool__hook("env-drop") < 0 ||
	    (unlinkat(s->state_fd[state], id, 0) < 0 && errno != ENOENT)) {
		spool__note_error(s);
		return -1;
	}
	return 0;
}

int spool_env_write(struct spool *s, enum spool_state state, const struct spool_env *e)
{
	struct buf text = BUF_INIT;
	char tmp[SPOOL_ID_LEN + 16];
	int ret = -1;

	if (spool__check_writable(s) < 0)
		return -1;
	spool_env_format(e, &text);
	snprintf(tmp, sizeof(tmp), "%s.env", e->id);
	if (spool__write_file(s->tmp_fd, tmp, text.data, text.len, e->next_ms) < 0) {
		if (errno != EEXIST)
			goto out;
		unlinkat(s->tmp_fd, tmp, 0); /* a leftover of a killed attempt */
		if (spool__write_file(s->tmp_fd, tmp, text.data, text.len, e->next_ms) < 0)
			goto out;
	}
	/* A new envelope or a replacement? A failure after the rename undoes a
	 * new one (nothing changed, as the caller is told); a replacement stays,
	 * since the old text is gone either way. */
	bool replaced = false;
	int r = spool__hook("env-rename");
	if (r == 0) {
		r = renameat2(s->tmp_fd, tmp, s->state_fd[state], e->id, RENAME_NOREPLACE);
		if (r < 0 && errno == EEXIST) {
			replaced = true;
			r = renameat(s->tmp_fd, tmp, s->state_fd[state], e->id);
		}
	}
	if (r < 0) {
		int saved = errno;
		unlinkat(s->tmp_fd, tmp, 0);
		errno = saved;
		goto out;
	}
	struct dirsync_ticket t = dir_ticket(s, (int)state);
	if (spool__hook("env-dirsync") < 0 || dir_commit(s, (int)state, t) < 0) {
		int saved = errno;
		if (!replaced)
			unlinkat(s->state_fd[state], e->id, 0);
		errno = saved;
		goto out;
	}
	/* A durable envelope says where the message came from: a claim record
	 * kept for a lazy first one is no longer needed. */
	if (replaced)
		spool__drop_record(s, e->id);
	ret = 0;
out:
	if (ret < 0)
		spool__note_error(s);
	buf_deinit(&text);
	return ret;
}

/*
 * Opens a spool file for reading. A FIFO or device refused at pickup stays in
 * data/ as what it is (badmail keeps the original), so a plain open() could
 * hang an operator command or a pool thread on it, or act on a device: look
 * before opening, never block or follow, and check what was opened.
 * -1 with errno EINVAL for anything but a regular file.
 */
static int open_regular(int dir_fd, const char *name)
{
	struct stat st;
	if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -1;
	if (!S_ISREG(st.st_mode)) {
		errno = EINVAL;
		return -1;
	}
	int fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		int saved = S_ISREG(st.st_mode) ? errno : EINVAL;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

int spool__read_all(int dir_fd, const char *name, size_t max, struct buf *out)
{
	int fd = open_regular(dir_fd, name);
	if (fd < 0)
		return -1;
	for (;;) {
		buf_reserve(out, 4096);
		ssize_t n = read(fd, out->data + out->len, 4096);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int saved = errno;
			close(fd);
			errno = saved;
			return -1;
		}
		if (n == 0)
			break;
		out->len += (size_t)n;
		out->data[out->len] = '\0';
		if (out->len > max) {
			close(fd);
			errno = EFBIG;
			return -1;
		}
	}
	close(fd);
	return 0;
}

int spool_env_read(struct spool *s, enum spool_state state, const char *id, struct spool_env *e_r,
		   struct buf *reason)
{
	struct buf text = BUF_INIT;
	int ret = -1;

	memset(e_r, 0, sizeof(*e_r));
	if (spool__read_all(s->state_fd[state], id, 64 << 20, &text) < 0) {
		if (reason)
			buf_printf(reason, "cannot read envelope: %s", strerror(errno));
		goto out;
	}
	if (spool_env_parse(text.data ? text.data : "", text.len, e_r, reason) < 0) {
		errno = EBADMSG;
		goto out;
	}
	if (strcmp(e_r->id, id) != 0) {
		if (reason)
			buf_printf(reason, "envelope file %s holds ID %s", id, e_r->id);
		spool_env_deinit(e_r);
		errno = EBADMSG;
		goto out;
	}
	ret = 0;
out:
	buf_deinit(&text);
	return ret;
}

int spool_move(struct spool *s, const char *id, enum spool_state from, enum spool_state to)
{
	if (from == to)
		return 0;
	if (spool__check_writable(s) < 0)
		return -1;
	if (spool__hook("move-rename") < 0 ||
	    renameat(s->state_fd[from], id, s->state_fd[to], id) < 0)
		goto fail;
	struct dirsync_ticket t_to = dir_ticket(s, (int)to);
	struct dirsync_ticket t_from = dir_ticket(s, (int)from);
	/* The destination first: once it is durable the message cannot be lost;
	 * a stale source entry after a crash is resolved by recovery. The source
	 * too before success: recovery prefers hold/ and badmail/, so a stale
	 * entry there would undo a release or a requeue. */
	if (spool__hook("move-dirsync") < 0 || dir_commit(s, (int)to, t_to) < 0)
		goto fail;
	if (spool__hook("move-srcsync") < 0 || dir_commit(s, (int)from, t_from) < 0)
		goto fail;
	return 0;
fail:
	spool__note_error(s);
	return -1;
}

int spool_remove(struct spool *s, const char *id, enum spool_state state)
{
	if (spool__check_writable(s) < 0 || spool_settle_folders(s) < 0)
		return -1;
	if (spool__hook("remove-data") < 0 || (unlinkat(s->data_fd, id, 0) < 0 && errno != ENOENT))
		goto fail;
	spool__drop_record(s, id);
	if (spool__hook("remove-datasync") < 0 || spool_fsync_dir_shared(s, SPOOL_DIR_DATA) < 0)
		goto fail;
	if (spool__hook("remove-env") < 0 || spool__env_retire(s, s->state_fd[state], id) < 0)
		goto fail;
	/* Not fsynced: an envelope that comes back after a crash has no content
	 * and recovery drops it. */
	return 0;
fail:
	spool__note_error(s);
	return -1;
}

/* The owner-execute bit of queue/<id>: set while a transaction runs. */
static int set_sending_mark(struct spool *s, const char *id, bool on)
{
	struct stat st;
	if (spool__check_writable(s) < 0)
		return -1;
	if (fstatat(s->state_fd[SPOOL_QUEUE], id, &st, AT_SYMLINK_NOFOLLOW) < 0)
		goto fail;
	mode_t mode = on ? (st.st_mode & 07777) | S_IXUSR : (st.st_mode & 07777) & ~(mode_t)S_IXUSR;
	if (fchmodat(s->state_fd[SPOOL_QUEUE], id, mode, 0) < 0)
		goto fail;
	return 0;
fail:
	spool__note_error(s);
	return -1;
}

int spool_mark_sending(struct spool *s, const char *id)
{
	return set_sending_mark(s, id, true);
}

int spool_mark_sending_new(struct spool *s, const char *id)
{
	if (spool__check_writable(s) < 0)
		return -1;
	if (fchmodat(s->state_fd[SPOOL_QUEUE], id, s->env_mode | S_IXUSR, 0) < 0) {
		spool__note_error(s);
		return -1;
	}
	return 0;
}

int spool_unmark_sending(struct spool *s, const char *id)
{
	return set_sending_mark(s, id, false);
}

int spool_claim_mark_sending(struct spool_claim *c, int fd, mode_t mode)
{
	if (fchmod(fd, (mode & 07777) | S_IXUSR) < 0)
		return -1;
	c->content_marked = true;
	c->content_mode = mode & 07777;
	return 0;
}

int spool_data_open(struct spool *s, const char *id)
{
	return open_regular(s->data_fd, id);
}

static int copy_fd(int in, int out)
{
	char chunk[65536];
	off_t off = 0;
	for (;;) {
		ssize_t n = pread(in, chunk, sizeof(chunk), off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0)
			return 0;
		for (ssize_t w = 0; w < n;) {
			ssize_t m = write(out, chunk + w, (size_t)(n - w));
			if (m < 0) {
				if (errno == EINTR)
					continue;
				return -1;
			}
			w += m;
		}
		off += n;
	}
}

/*
 * The claim record says which folder a claim came from and under which name,
 * for recovery of a claim cut short (the folder's dot_stuffed and settings
 * apply to its content). It is made before the content arrives in data/ and
 * goes once the envelope (which says the same) is durable, or with the
 * content. Two kinds:
 *   - a symbolic link data/<id>.from (content moved in) or data/<id>.copy
 *     (content copied in, the original still in its folder) whose target is
 *     "<pickup name>/<file name>": a single claim, and a copy. The data/
 *     fsync that makes the claim durable is meant to make it durable too (a
 *     journal commit does; on ext4 without a journal it writes the
 *     directory, not necessarily the new link's inode);
 *   - the record of a batch of moved claims, data/<base>.batch
 *     (spool/claimrec.c): one file with a line per claim, "<id> TAB <pickup>
 *     TAB <file>" (escaped as in envelopes), fsynced once before the batch's
 *     first rename, and found from the ID alone: the batch's IDs are one
 *     aligned block whose first ID is <base>. It saves a new inode and an
 *     unlink per claim.
 */
static const char *const record_kinds[2] = {"from", "copy"};

static void record_name(const char *id, bool copied, char out[SPOOL_ID_LEN + 8])
{
	snprintf(out, SPOOL_ID_LEN + 8, "%s.%s", id, record_kinds[copied]);
}

static int record_make(struct spool *s, const struct spool_claim *c, const char *pickup,
		       const char *file)
{
	char link[SPOOL_ID_LEN + 8];
	struct buf target = BUF_INIT;
	record_name(c->id, c->copied, link);
	buf_printf(&target, "%s/%s", pickup, file);
	int r = symlinkat(target.data, s->data_fd, link);
	buf_deinit(&target);
	return r;
}

static void link_drop(struct spool *s, const char *id, bool copied)
{
	char link[SPOOL_ID_LEN + 8];
	record_name(id, copied, link);
	int saved = errno;
	unlinkat(s->data_fd, link, 0);
	errno = saved;
}

static void record_drop(struct spool *s, const char *id, bool copied)
{
	if (copied || !spool__batchrec_drop(s, id))
		link_drop(s, id, copied); /* else its batch's record: no link of its own */
}

void spool__drop_record(struct spool *s, const char *id)
{
	record_drop(s, id, false);
}

static void read_record(struct spool *s, const char *id, char **pickup_r, char **file_r);

/* EXDEV: copy through tmp/, make it durable, move it into data/. The
 * original stays until the envelope is durable (spool_claim_done). */
static int claim_copy(struct spool *s, int fd, struct spool_claim *c)
{
	char tmp[SPOOL_ID_LEN + 16];
	snprintf(tmp, sizeof(tmp), "%s.claim", c->id);
	int out = openat(s->tmp_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (out < 0)
		return -1;
	if (copy_fd(fd, out) < 0 || fsync(out) < 0) {
		int saved = errno;
		close(out);
		unlinkat(s->tmp_fd, tmp, 0);
		errno = saved;
		return -1;
	}
	close(out);
	if (renameat2(s->tmp_fd, tmp, s->data_fd, c->id, RENAME_NOREPLACE) < 0) {
		int saved = errno;
		unlinkat(s->tmp_fd, tmp, 0);
		errno = saved;
		return -1;
	}
	if (spool_fsync_dir_shared(s, SPOOL_DIR_DATA) < 0) {
		int saved = errno;
		unlinkat(s->data_fd, c->id, 0);
		errno = saved;
		return -1;
	}
	return 0;
}

/* Puts a moved file back under its name (the claim is undone): 0, or 1 when
 * it is back but that may not be durable (a failed fsync: the record stays,
 * for recovery should the content come back in data/), or -1 (errno). */
static int unclaim_move(struct spool *s, const struct spool_claim *c)
{
	/* Back with its writer's mode (on our own data/: a failure is the
	 * spool's, and recovery finishes the claim). */
	if (c->content_marked && fchmodat(s->data_fd, c->id, c->content_mode, 0) < 0)
		return -1;
	if (renameat2(s->data_fd, c->id, c->dir_fd, c->name, RENAME_NOREPLACE) < 0)
		return -1;
	if (spool_fsync_dir(c->dir_fd) < 0 || spool_fsync_dir_shared(s, SPOOL_DIR_DATA) < 0)
		return 1;
	return 0;
}

/* batched: the data/ and folder fsyncs are left to spool_claim_commit (a
 * copy is made durable at once all the same: it is not renamed). With rec,
 * the first try takes slot's ID, recorded in the batch's record. */
/* A claim whose content could not be made durable goes back at once. */
static int claim_cut_short(struct spool *s, struct spool_claim *c)
{
	int saved = errno;
	if (unclaim_move(s, c) == 0 && c->recorded)
		record_drop(s, c->id, false);
	errno = saved;
	return -1;
}

static int claim(struct spool *s, int dir_fd, struct spool_dirsync *dir_sync, const char *name,
		 int fd, const char *pickup, const char *file, bool batched,
		 const struct spool_claim_batch *rec, size_t slot, bool early, bool unsynced,
		 struct spool_claim *c)
{
	memset(c, 0, sizeof(*c));
	c->data_early = early && batched;
	c->dir_fd = dir_fd;
	c->name = name;
	for (int tries = 0; tries < 16; tries++) {
		c->copied = false;
		c->recorded = false;
		if (rec && rec->base[0] && tries == 0) {
			spool__batchrec_slot_id(rec->base, slot, c->id);
			c->recorded = spool__batchrec_mark(s, c->id);
		}
		if (!c->recorded) {
			spool_new_id(s, c->id);
			if (pickup) {
				if (record_make(s, c, pickup, file ? file : name) < 0) {
					if (errno == EEXIST)
						continue; /* another process made the same ID */
					return -1;
				}
				c->recorded = true;
			}
		}
		if (spool__hook("claim-rename") < 0)
			goto fail;
		if (renameat2(dir_fd, name, s->data_fd, c->id, RENAME_NOREPLACE) == 0) {
			/* The writer may never have fsynced: make the content durable
			 * before anything depends on it. */
			claim_sync_early(s, c);
			if (unsynced && fd >= 0) {
				c->sync_deferred = true; /* spool_claim_sync */
				return 0;
			}
			if (spool__hook("claim-fsync") < 0 || (fd >= 0 && fsync(fd) < 0) ||
			    (!batched && (spool__hook("claim-dirsync") < 0 ||
					  spool_fsync_dir_shared(s, SPOOL_DIR_DATA) < 0 ||
					  spool_fsync_dir_group(s, dir_sync, &dir_fd) < 0)))
				/* Cut short: put it back at once, not at the next start. */
				return claim_cut_short(s, c);
			/* A claim finished by recovery: the old record is replaced. */
			if (dir_fd == s->data_fd)
				record_drop(s, name, false);
			return 0;
		}
		if (errno == EEXIST) {
			/* Another process made the same ID: the name decides. */
			if (c->recorded)
				record_drop(s, c->id, false);
			continue;
		}
		if (errno == EXDEV && fd >= 0) {
			if (c->recorded) {
				record_drop(s, c->id, false);
				c->copied = true;
				if (record_make(s, c, pickup, file ? file : name) < 0) {
					c->recorded = false;
					return -1;
				}
			}
			c->copied = true;
			if (claim_copy(s, fd, c) < 0)
				goto fail;
			return 0;
		}
		goto fail;
	}
	errno = EEXIST;
	return -1;
fail:
	if (c->recorded)
		record_drop(s, c->id, c->copied);
	return -1;
}

int spool_claim(struct spool *s, int dir_fd, const char *name, int fd, const char *pickup,
		const char *file, struct spool_claim *c_r)
{
	return spool_claim_group(s, dir_fd, NULL, name, fd, pickup, file, c_r);
}

int spool_claim_group(struct spool *s, int dir_fd, struct spool_dirsync *dir_sync, const char *name,
		      int fd, const char *pickup, const char *file, struct spool_claim *c_r)
{
	if (spool__check_writable(s) < 0)
		return -1;
	if (claim(s, dir_fd, dir_sync, name, fd, pickup, file, false, NULL, 0, false, false, c_r) <
	    0) {
		spool__note_error(s);
		return -1;
	}
	return 0;
}

int spool_claim_batched(struct spool *s, int dir_fd, const char *name, int fd, const char *pickup,
			const char *file, struct spool_claim *c_r)
{
	return spool_claim_lone(s, dir_fd, name, fd, pickup, file, false, c_r);
}

static int claim_lone(struct spool *s, int dir_fd, const char *name, int fd, const char *pickup,
		      const char *file, bool early, bool unsynced, struct spool_claim *c_r)
{
	if (spool__check_writable(s) < 0)
		return -1;
	if (claim(s, dir_fd, NULL, name, fd, pickup, file, true, NULL, 0, early, unsynced, c_r) <
	    0) {
		spool__note_error(s);
		return -1;
	}
	return 0;
}

int spool_claim_lone(struct spool *s, int dir_fd, const char *name, int fd, const char *pickup,
		     const char *file, bool early, struct spool_claim *c_r)
{
	return claim_lone(s, dir_fd, name, fd, pickup, file, early, false, c_r);
}

int spool_claim_lone_unsynced(struct spool *s, int dir_fd, const char *name, int fd,
			      const char *pickup, const char *file, struct spool_claim *c_r)
{
	return claim_lone(s, dir_fd, name, fd, pickup, file, true, true, c_r);
}

static int claim_in_batch(struct spool *s, const struct spool_claim_batch *b, size_t slot,
			  int dir_fd, const char *name, int fd, bool unsynced,
			  struct spool_claim *c_r)
{
	if (spool__check_writable(s) < 0)
		return -1;
	if (claim(s, dir_fd, NULL, name, fd, b->pickup, b->files[slot], true, b, slot, false,
		  unsynced, c_r) < 0) {
		spool__note_error(s);
		return -1;
	}
	return 0;
}

void spool_claims_sync(struct spool *s, struct spool_claim *const *cs, const int *fds, size_t n,
		       int *errs)
{
	/* The crash and fault steps of each claim's fsync first, then the
	 * fsyncs together, then the step after them all. */
	int *hook = xcalloc(n ? n : 1, sizeof(*hook));
	for (size_t i = 0; i < n; i++)
		hook[i] = spool__hook("claim-fsync") < 0 ? errno : 0;
	spool_fsync_many(fds, n, errs);
	int after = n > 1 && spool__hook("claim-fsync-many") < 0 ? errno : 0;
	for (size_t i = 0; i < n; i++) {
		cs[i]->sync_deferred = false;
		errs[i] = hook[i] ? hook[i] : errs[i] ? errs[i] : after;
		if (errs[i]) {
			claim_cut_short(s, cs[i]);
			errno = errs[i];
			spool__note_error(s);
		}
	}
	free(hook);
}

int spool_claim_sync(struct spool *s, struct spool_claim *c, int fd)
{
	int err = 0;
	if (c->sync_deferred)
		spool_claims_sync(s, &c, &fd, 1, &err);
	errno = err;
	return err ? -1 : 0;
}

int spool_claim_in_batch(struct spool *s, const struct spool_claim_batch *b, size_t slot,
			 int dir_fd, const char *name, int fd, struct spool_claim *c_r)
{
	return claim_in_batch(s, b, slot, dir_fd, name, fd, false, c_r);
}

int spool_claim_in_batch_unsynced(struct spool *s, const struct spool_claim_batch *b, size_t slot,
				  int dir_fd, const char *name, int fd, struct spool_claim *c_r)
{
	return claim_in_batch(s, b, slot, dir_fd, name, fd, true, c_r);
}

int spool_claim_batched_unsynced(struct spool *s, int dir_fd, const char *name, int fd,
				 const char *pickup, const char *file, struct spool_claim *c_r)
{
	return claim_lone(s, dir_fd, name, fd, pickup, file, false, true, c_r);
}

int spool_claim_commit(struct spool *s, int dir_fd, struct spool_dirsync *dir_sync)
{
	if (spool__hook("claim-commit-data") < 0 || spool_fsync_dir_shared(s, SPOOL_DIR_DATA) < 0)
		goto fail;
	if (spool__hook("claim-commit-folder") < 0 ||
	    spool_fsync_dir_group(s, dir_sync, &dir_fd) < 0)
		goto fail;
	return 0;
fail:
	spool__note_error(s);
	return -1;
}

int spool_claim_done(struct spool *s, struct spool_claim *c)
{
	if (c->copied) {
		/* Only now may the original go: a crash before this leaves a
		 * duplicate claim, never a loss. */
		if (spool__hook("claim-unlink") < 0 || unlinkat(c->dir_fd, c->name, 0) < 0) {
			spool__note_error(s);
			return -1;
		}
		spool_fsync_dir(c->dir_fd); /* if it comes back, it comes back as a duplicate */
	}
	/* A lazy first envelope may still be lost or torn: the record stays
	 * with the content (spool_remove drops both). */
	if (c->recorded && !c->keep_record)
		record_drop(s, c->id, c->copied);
	return 0;
}

int spool_claim_undo(struct spool *s, struct spool_claim *c)
{
	int r;
	if (c->copied) {
		/* The original never left its folder: drop the copy. */
		r = unlinkat(s->data_fd, c->id, 0) < 0 && errno != ENOENT ? -1 : 0;
		if (r == 0)
			r = spool_fsync_dir_shared(s, SPOOL_DIR_DATA);
	} else {
		r = unclaim_move(s, c);
	}
	if (r < 0) {
		/* It stays in data/ with its record: recovery finishes it. */
		spool__note_error(s);
		return -1;
	}
	if (c->recorded && r == 0)
		record_drop(s, c->id, c->copied);
	return 0;
}

int spool_claim_origin(struct spool *s, const char *id, char **pickup_r, char **file_r)
{
	*pickup_r = *file_r = NULL;
	read_record(s, id, pickup_r, file_r);
	return *pickup_r ? 0 : -1;
}

/* A readdir stream over a directory descriptor we keep open: on a duplicate,
 * rewound, so each listing starts at the beginning. */
static DIR *dir_stream(int dir_fd)
{
	int fd = dup(dir_fd);
	if (fd < 0)
		return NULL;
	DIR *d = fdopendir(fd);
	if (d == NULL) {
		close(fd);
		return NULL;
	}
	rewinddir(d);
	return d;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int list_fd(int dir_fd, bool ids_only, char ***ids_r, size_t *n_r)
{
	DIR *d = dir_stream(dir_fd);
	if (d == NULL)
		return -1;
	char **ids = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (ids_only && !spool_id_valid(de->d_name))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			ids = xrealloc(ids, cap * sizeof(*ids));
		}
		ids[n++] = xstrdup(de->d_name);
	}
	closedir(d);
	if (n > 1)
		qsort(ids, n, sizeof(*ids), cmp_str);
	*ids_r = ids;
	*n_r = n;
	return 0;
}

int spool_list(struct spool *s, enum spool_state state, char ***ids_r, size_t *n_r)
{
	return list_fd(s->state_fd[state], true, ids_r, n_r);
}

static int64_t ts_ms(struct timespec ts)
{
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int spool_scan(struct spool *s, enum spool_state state, struct spool_entry **entries_r, size_t *n_r)
{
	DIR *d = dir_stream(s->state_fd[state]);
	if (d == NULL)
		return -1;
	struct spool_entry *v = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		struct stat st;
		if (!spool_id_valid(de->d_name))
			continue;
		if (fstatat(s->state_fd[state], de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue; /* gone meanwhile */
		if (n == cap) {
			cap = cap ? cap * 2 : 1024;
			v = xrealloc(v, cap * sizeof(*v));
		}
		memcpy(v[n].id, de->d_name, SPOOL_ID_LEN + 1);
		v[n].due_ms = ts_ms(st.st_mtim);
		n++;
	}
	closedir(d);
	*entries_r = v;
	*n_r = n;
	return 0;
}

int spool_stat(struct spool *s, enum spool_state state, const char *id, struct spool_stat *st_r)
{
	struct stat st;
	if (fstatat(s->state_fd[state], id, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -1;
	st_r->since_ms = ts_ms(st.st_ctim);
	st_r->due_ms = ts_ms(st.st_mtim);
	st_r->bytes =
	    fstatat(s->data_fd, id, &st, AT_SYMLINK_NOFOLLOW) == 0 ? (uint64_t)st.st_size : 0;
	return 0;
}

void spool_list_free(char **ids, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(ids[i]);
	free(ids);
}

/* An ID as a number, for recovery: 16 bytes instead of a string, compared
 * without strcmp (the order is the same: fixed-length upper-case hex). */
struct idkey {
	uint64_t hi; /* first 16 hex digits */
	uint32_t lo; /* last 4 */
	uint32_t unused;
};

static int hexdigit(char c)
{
	return c <= '9' ? c - '0' : c - 'A' + 10;
}

static struct idkey key_of(const char *id)
{
	struct idkey k = {0, 0, 0};
	for (int i = 0; i < 16; i++)
		k.hi = k.hi << 4 | (uint64_t)hexdigit(id[i]);
	for (int i = 16; i < SPOOL_ID_LEN; i++)
		k.lo = k.lo << 4 | (uint32_t)hexdigit(id[i]);
	return k;
}

static void id_of(struct idkey k, char id_r[SPOOL_ID_LEN + 1])
{
	snprintf(id_r, SPOOL_ID_LEN + 1, "%016llX%04X", (unsigned long long)k.hi, k.lo & 0xffff);
}

static int cmp_key(const void *a, const void *b)
{
	const struct idkey *x = a, *y = b;
	if (x->hi != y->hi)
		return x->hi < y->hi ? -1 : 1;
	return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* The valid IDs in a directory, as sorted keys. */
static int list_keys(int dir_fd, struct idkey **v_r, size_t *n_r)
{
	DIR *d = dir_stream(dir_fd);
	if (d == NULL)
		return -1;
	struct idkey *v = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (!spool_id_valid(de->d_name))
			continue;
		if (n == cap) {
			cap = cap ? cap + cap / 2 : 1024;
			v = xrealloc(v, cap * sizeof(*v));
		}
		v[n++] = key_of(de->d_name);
	}
	closedir(d);
	if (n > 1)
		qsort(v, n, sizeof(*v), cmp_key);
	*v_r = v;
	*n_r = n;
	return 0;
}

static bool has_key(const struct idkey *v, size_t n, const struct idkey *k)
{
	return n && bsearch(k, v, n, sizeof(*v), cmp_key) != NULL;
}

/* The claim records in data/ as sorted keys: [0] "<ID>.from", [1]
 * "<ID>.copy", [2] "<base>.batch" (the base ID). */
#define N_RECORD_KINDS 3
static int list_records(int dir_fd, struct idkey *v_r[N_RECORD_KINDS], size_t n_r[N_RECORD_KINDS])
{
	DIR *d = dir_stream(dir_fd);
	if (d == NULL)
		return -1;
	size_t cap[N_RECORD_KINDS] = {0, 0, 0};
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		char id[SPOOL_ID_LEN + 1];
		int kind = -1;
		if (spool__batchrec_name(de->d_name, id)) {
			kind = 2;
		} else if (strlen(de->d_name) == SPOOL_ID_LEN + 5 &&
			   de->d_name[SPOOL_ID_LEN] == '.') {
			memcpy(id, de->d_name, SPOOL_ID_LEN);
			id[SPOOL_ID_LEN] = '\0';
			for (int k = 0; k < 2; k++)
				if (strcmp(de->d_name + SPOOL_ID_LEN + 1, record_kinds[k]) == 0)
					kind = k;
		}
		if (kind < 0 || !spool_id_valid(id))
			continue;
		if (n_r[kind] == cap[kind]) {
			cap[kind] = cap[kind] ? cap[kind] * 2 : 64;
			v_r[kind] = xrealloc(v_r[kind], cap[kind] * sizeof(**v_r));
		}
		v_r[kind][n_r[kind]++] = key_of(id);
	}
	closedir(d);
	for (int kind = 0; kind < N_RECORD_KINDS; kind++)
		if (n_r[kind] > 1)
			qsort(v_r[kind], n_r[kind], sizeof(**v_r), cmp_key);
	return 0;
}

/* Reads id's claim record: data/<id>.from ("<pickup>/<file>"), else its line
 * in its batch's record. Leaves both NULL when there is none readable. */
static void read_record(struct spool *s, const char *id, char **pickup_r, char **file_r)
{
	char link[SPOOL_ID_LEN + 8], target[4096];
	record_name(id, false, link);
	ssize_t n = readlinkat(s->data_fd, link, target, sizeof(target) - 1);
	if (n <= 0) {
		spool__batchrec_read(s, id, pickup_r, file_r);
		return;
	}
	target[n] = '\0';
	char *slash = strchr(target, '/');
	if (slash == NULL || slash == target || slash[1] == '\0')
		return;
	*slash = '\0';
	*pickup_r = xstrdup(target);
	*file_r = xstrdup(slash + 1);
}

/* Whether the claim record of k is still needed: its content is there and
 * its envelope is not one written durably (deferred/, badmail/); one in
 * queue/ or hold/ may be a lazy first one (spool_env_create_lazy) that a
 * power loss tears later, and content without an envelope is a claim that
 * recovery finishes. */
static bool record_needed(const struct idkey *k, const struct idkey *data, size_t n_data,
			  struct idkey *const st[SPOOL_N_STATES], const size_t n_st[SPOOL_N_STATES])
{
	return has_key(data, n_data, k) && !has_key(st[SPOOL_DEFERRED], n_st[SPOOL_DEFERRED], k) &&
	       !has_key(st[SPOOL_BADMAIL], n_st[SPOOL_BADMAIL], k);
}

/* The being-sent mark (owner-execute bit) of dir_fd/<k>: an envelope's in
 * queue/ (spool_mark_sending), a claim's content in data/
 * (spool_claim_mark_sending). */
static bool was_being_sent(int dir_fd, const struct idkey *k)
{
	char id[SPOOL_ID_LEN + 1];
	struct stat st;
	id_of(*k, id);
	return fstatat(dir_fd, id, &st, AT_SYMLINK_NOFOLLOW) == 0 && (st.st_mode & S_IXUSR);
}

static void push_id(char ***v, size_t *n, const struct idkey *k)
{
	if (*n % 64 == 0)
		*v = xrealloc(*v, (*n + 64) * sizeof(char *));
	char *id = xmalloc(SPOOL_ID_LEN + 1);
	id_of(*k, id);
	(*v)[(*n)++] = id;
}

int spool_recover(struct spool *s, struct spool_recovery *r)
{
	char **tmp = NULL;
	struct idkey *data = NULL, *st[SPOOL_N_STATES] = {0}, *rec[N_RECORD_KINDS] = {0};
	size_t n_tmp = 0, n_data = 0, n_st[SPOOL_N_STATES] = {0}, n_rec[N_RECORD_KINDS] = {0};
	int ret = -1;

	memset(r, 0, sizeof(*r));
	if (spool__check_writable(s) < 0)
		return -1;
	if (list_fd(s->tmp_fd, false, &tmp, &n_tmp) < 0)
		goto out;
	for (size_t i = 0; i < n_tmp; i++) {
		if (spool__spare_adopt(s, tmp[i])) {
			r->spares_kept++;
			continue;
		}
		if (unlinkat(s->tmp_fd, tmp[i], 0) == 0)
			r->tmp_cleaned++;
		else if (errno == EROFS)
			goto out; /* a read-only spool: nothing can be done */
	}
	if (r->tmp_cleaned && spool_fsync_dir(s->tmp_fd) < 0)
		goto out;
	s->spares_kept = true; /* this process owns tmp/ now: its spares outlive it */
	if (list_records(s->data_fd, rec, n_rec) < 0)
		goto out;

	for (int i = 0; i < SPOOL_N_STATES; i++)
		if (list_keys(s->state_fd[i], &st[i], &n_st[i]) < 0)
			goto out;
	if (list_keys(s->data_fd, &data, &n_data) < 0)
		goto out;

	/* An envelope in two states: a move cut short after the rename into the
	 * later state was durable but before the earlier entry was gone. The
	 * order hold > badmail > deferred > queue keeps the operator's and the
	 * final decisions. The arrays are never changed, so bsearch stays valid. */
	static const enum spool_state order[] = {SPOOL_HOLD, SPOOL_BADMAIL, SPOOL_DEFERRED,
						 SPOOL_QUEUE};
	for (int a = 0; a < SPOOL_N_STATES; a++) {
		enum spool_state st_a = order[a];
		for (size_t i = 0; i < n_st[st_a]; i++) {
			const struct idkey *k = &st[st_a][i];
			bool dup = false;
			for (int b = 0; b < a && !dup; b++)
				dup = has_key(st[order[b]], n_st[order[b]], k);
			if (dup || !has_key(data, n_data, k)) {
				/* No content: it was removed first, so the message was finished. */
				char id[SPOOL_ID_LEN + 1];
				id_of(*k, id);
				if (unlinkat(s->state_fd[st_a], id, 0) < 0 && errno != ENOENT)
					goto out;
				if (dup)
					r->duplicates++;
				else
					r->dangling_envelopes++;
				continue;
			}
			r->counts[st_a]++;
			if (st_a == SPOOL_QUEUE && was_being_sent(s->state_fd[SPOOL_QUEUE], k))
				push_id(&r->maybe_sent, &r->n_maybe_sent, k);
		}
	}
	for (size_t j = 0; j < n_data; j++) {
		bool found = false;
		for (int i = 0; i < SPOOL_N_STATES && !found; i++)
			found = has_key(st[i], n_st[i], &data[j]);
		if (found)
			continue;
		char id[SPOOL_ID_LEN + 1];
		id_of(data[j], id);
		if (has_key(rec[1], n_rec[1], &data[j])) {
			/* Copied, and the original never left its folder: it is
			 * claimed again from there. */
			if (unlinkat(s->data_fd, id, 0) < 0 && errno != ENOENT)
				goto out;
			r->copies_dropped++;
			continue;
		}
		if (r->n_orphans % 64 == 0) {
			size_t cap = r->n_orphans + 64;
			r->orphans = xrealloc(r->orphans, cap * sizeof(char *));
			r->orphan_pickups = xrealloc(r->orphan_pickups, cap * sizeof(char *));
			r->orphan_files = xrealloc(r->orphan_files, cap * sizeof(char *));
		}
		if (was_being_sent(s->data_fd, &data[j]))
			push_id(&r->maybe_sent, &r->n_maybe_sent, &data[j]);
		r->orphan_pickups[r->n_orphans] = r->orphan_files[r->n_orphans] = NULL;
		read_record(s, id, &r->orphan_pickups[r->n_orphans],
			    &r->orphan_files[r->n_orphans]);
		r->orphans[r->n_orphans++] = xstrdup(id);
	}
	/* Records of finished claims go: the content is gone, or the envelope
	 * was written durably (deferred/, badmail/). Those of the orphans stay
	 * until their claim is finished, and those of messages in queue/ or
	 * hold/ until their content goes: their envelope may be a lazy first one
	 * (spool_env_create_lazy) that a power loss tears later. */
	for (int kind = 0; kind < 2; kind++) {
		for (size_t j = 0; j < n_rec[kind]; j++) {
			char id[SPOOL_ID_LEN + 1];
			id_of(rec[kind][j], id);
			if (kind == 1 || !record_needed(&rec[kind][j], data, n_data, st, n_st))
				link_drop(s, id, kind == 1);
		}
	}
	/* A batch's record, by the same rule for each ID of its block: kept,
	 * with the IDs that need it, until the last of them no longer does. */
	for (size_t j = 0; j < n_rec[2]; j++) {
		char base[SPOOL_ID_LEN + 1];
		uint32_t dep = 0;
		for (uint32_t slot = 0; slot < SPOOL_BATCH_MAX; slot++) {
			struct idkey k = rec[2][j];
			k.lo += slot; /* the base's low counter bits are 0 */
			if (record_needed(&k, data, n_data, st, n_st))
				dep |= 1u << slot;
		}
		id_of(rec[2][j], base);
		spool__batchrec_adopt(s, base, dep);
	}
	s->recs_known = true;
	/* What the next run decides from is durable too (cheap: a few fsyncs),
	 * including renames the last run left unsynced. */
	for (int i = 0; i < SPOOL_N_DIRS; i++)
		if (i != SPOOL_DIR_TMP && spool_fsync_dir(*dir_fd_of(s, i)) < 0)
			goto out;
	ret = 0;
out:
	if (ret < 0)
		spool__note_error(s);
	spool_list_free(tmp, n_tmp);
	free(data);
	for (int kind = 0; kind < N_RECORD_KINDS; kind++)
		free(rec[kind]);
	for (int i = 0; i < SPOOL_N_STATES; i++)
		free(st[i]);
	return ret;
}

void spool_recovery_deinit(struct spool_recovery *r)
{
	for (size_t i = 0; i < r->n_orphans; i++) {
		free(r->orphan_pickups[i]);
		free(r->orphan_files[i]);
	}
	free(r->orphan_pickups);
	free(r->orphan_files);
	spool_list_free(r->orphans, r->n_orphans);
	spool_list_free(r->maybe_sent, r->n_maybe_sent);
	memset(r, 0, sizeof(*r));
}
