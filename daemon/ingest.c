/*
 * Purpose: validation, claim and envelope derivation of one pickup file, on
 * a thread-pool thread (it fsyncs, and runs libmagic on what does not start
 * like a message).
 * Owns: nothing beyond the job; the spool owns every path it touches.
 * Invariants: the file is opened without following links and without
 * blocking; nothing is claimed while a writer may still be at work (flock,
 * lease; settle time unless an event said it is complete); once claimed, the file ends as a queued
 * message or in badmail with a reason, or, when the envelope cannot be written, it is put back
 * where it was found. Nothing is deleted.
 */
#include "daemon/ingest.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/msg.h"
#include "daemon/relay.h"
#include "daemon/sched.h"

#define SNIFF_BYTES 8192

void ingest_job_free(struct ingest_job *ij)
{
	free(ij->name);
	free(ij->reason);
	free(ij->sender);
	free(ij);
}

static void set_reason(struct ingest_job *ij, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_reason(struct ingest_job *ij, const char *fmt, ...)
{
	struct buf b = BUF_INIT;
	va_list ap;
	va_start(ap, fmt);
	buf_vprintf(&b, fmt, ap);
	va_end(ap);
	free(ij->reason);
	ij->reason = buf_steal(&b);
}

static const char *file_kind(mode_t m)
{
	if (S_ISFIFO(m))
		return "a FIFO";
	if (S_ISSOCK(m))
		return "a socket";
	if (S_ISCHR(m) || S_ISBLK(m))
		return "a device";
	if (S_ISLNK(m))
		return "a symbolic link";
	return "not a regular file";
}

/*
 * 1 when another process has the file open for writing, 0 when nobody has,
 * -1 when we cannot tell. A read lease (fcntl F_SETLEASE F_RDLCK) is refused
 * with EAGAIN exactly then; it is released at once. Taking one needs the
 * file's owner or CAP_LEASE, and some file systems (NFS, SMB) have none: then
 * the flock and settle_time checks are all there is. A writer opening the
 * file in the microseconds the lease is held would break it, which signals
 * us: F_SETSIG selects SIGURG, whose default action is to ignore it.
 */
static int open_for_writing(int fd)
{
	if (fcntl(fd, F_SETSIG, SIGURG) < 0)
		return -1;
	if (fcntl(fd, F_SETLEASE, F_RDLCK) < 0)
		return errno == EAGAIN ? 1 : -1;
	fcntl(fd, F_SETLEASE, F_UNLCK);
	return 0;
}

/* Writes the badmail envelope for a claimed file (reason already set). */
static void refuse_claimed(struct ingest_job *ij, struct spool_env *env)
{
	struct spool *sp = &ij->job.pd->spool;
	memcpy(env->id, ij->id, sizeof(env->id));
	if (env->arrival_ms == 0)
		env->arrival_ms = ij->now_ms;
	if (env->origin_pickup == NULL)
		env->origin_pickup = xstrdup(ij->pickup->name);
	if (env->origin_file == NULL)
		env->origin_file = xstrdup(ij->name);
	env->size = ij->size;
	free(env->reason);
	env->reason = xstrdup(ij->reason);
	if (spool_env_write(sp, SPOOL_BADMAIL, env) < 0) {
		/* The content is in data/ without an envelope: recovery
		 * re-ingests it at the next start, so it is not lost. */
		ij->err = errno;
		ij->result = errno == ENOSPC ? INGEST_NOSPACE : INGEST_ERROR;
		set_reason(ij, "cannot write badmail envelope: %s", strerror(errno));
		return;
	}
	ij->result = INGEST_REFUSED;
}

/* Claims an entry that is not a regular file (or is a hard link) by renaming
 * the entry itself, without reading through it, then refuses it. */
static void refuse_entry(struct ingest_job *ij)
{
	struct spool *sp = &ij->job.pd->spool;
	struct spool_env env;
	memset(&env, 0, sizeof(env));
	spool_new_id(sp, ij->id);
	if (renameat2(ij->dir_fd, ij->name, sp->data_fd, ij->id, RENAME_NOREPLACE) < 0) {
		ij->err = errno;
		ij->result = errno == ENOENT ? INGEST_GONE : INGEST_ERROR;
		return;
	}
	if (spool_fsync_dir(sp->data_fd) < 0 || spool_fsync_dir(ij->dir_fd) < 0) {
		ij->err = errno;
		ij->result = INGEST_ERROR;
		return;
	}
	refuse_claimed(ij, &env);
	spool_env_deinit(&env);
}

/* True when buf holds a byte >= 0x80; eight bytes at a time. */
static bool has_8bit(const char *buf, size_t n)
{
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t w;
		memcpy(&w, buf + i, 8);
		if (w & 0x8080808080808080ULL)
			return true;
	}
	for (; i < n; i++)
		if ((unsigned char)buf[i] >= 0x80)
			return true;
	return false;
}

/* Looks at one piece of the content at offset off: 1 when it holds a NUL
 * (offset in *nul_at_r), else 0. */
static int scan_piece(const char *buf, size_t n, uint64_t off, int64_t *nul_at_r, bool *eightbit_r)
{
	const char *z = memchr(buf, '\0', n);
	if (z) {
		*nul_at_r = (int64_t)(off + (uint64_t)(z - buf));
		return 1;
	}
	if (!*eightbit_r)
		*eightbit_r = has_8bit(buf, n);
	return 0;
}

/* Scans the whole content for NUL bytes and 8-bit bytes in one pass: the
 * head already read, then the rest from the file. 0, or -1 on a read error. */
static int scan_content(int fd, const char *head, size_t got, uint64_t size, int64_t *nul_at_r,
			bool *eightbit_r)
{
	char chunk[65536];
	uint64_t off = got;
	*nul_at_r = -1;
	*eightbit_r = false;
	if (scan_piece(head, got, 0, nul_at_r, eightbit_r))
		return 0;
	while (off < size) {
		ssize_t n = pread(fd, chunk, sizeof(chunk), (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0)
			break;
		if (scan_piece(chunk, (size_t)n, off, nul_at_r, eightbit_r))
			return 0;
		off += (uint64_t)n;
	}
	return 0;
}

/* Adds an edit, merging it with one at the same offset (edits stay sorted). */
static void add_edit(struct spool_env *env, uint64_t off, uint64_t skip, const char *insert)
{
	for (size_t i = 0; i < env->n_edits; i++) {
		struct spool_edit *e = &env->edits[i];
		if (e->offset != off)
			continue;
		e->skip += skip;
		if (insert) {
			if (e->insert) {
				struct buf b = BUF_INIT;
				buf_printf(&b, "%s\r\n%s", e->insert, insert);
				free(e->insert);
				e->insert = buf_steal(&b);
			} else {
				e->insert = xstrdup(insert);
			}
		}
		return;
	}
	spool_env_add_edit(env, off, skip, insert);
	/* keep sorted by offset */
	for (size_t i = env->n_edits - 1; i > 0 && env->edits[i - 1].offset > env->edits[i].offset;
	     i--) {
		struct spool_edit t = env->edits[i];
		env->edits[i] = env->edits[i - 1];
		env->edits[i - 1] = t;
	}
}

/* The envelope of a valid message: addresses from msg_scan, and the header
 * fixes recorded as edits applied on the wire, so the body is never copied. */
static void build_envelope(struct ingest_job *ij, const struct msg_info *info, const char *head,
			   size_t head_len, bool eightbit, struct spool_env *env)
{
	struct buf line = BUF_INIT;
	struct buf date = BUF_INIT;
	memcpy(env->id, ij->id, sizeof(env->id));
	env->arrival_ms = ij->now_ms;
	env->size = ij->size;
	env->origin_pickup = xstrdup(ij->pickup->name);
	env->origin_file = xstrdup(ij->name);
	env->dot_stuffed = ij->pickup->dot_stuffed;
	env->eightbit = eightbit;
	env->smtputf8 = info->needs_smtputf8;
	env->sender = xstrdup(info->sender.addr);
	env->sender_params = info->sender.params ? xstrdup(info->sender.params) : NULL;
	for (size_t i = 0; i < info->n_rcpts; i++)
		spool_env_add_rcpt(env, info->rcpts[i].addr, info->rcpts[i].params);

	for (size_t i = 0; i < info->n_skips; i++)
		add_edit(env, info->skips[i].off, info->skips[i].len, NULL);

	msg_format_date(ij->now_ms / 1000, &date);
	buf_printf(&line, "Received: from pickup (folder %s) by %s (pickupd) id %s; %s",
		   ij->pickup->name, ij->hostname, ij->id, date.data);
	add_edit(env, info->headers_start, 0, line.data);

	/* Missing fields go at the end of the header section. */
	uint64_t end = info->header_end;
	bool need_newline = false;
	if (info->has_body_separator) {
		end = info->header_end - 1; /* the empty line's LF */
		if (end > 0 && head[end - 1] == '\r')
			end--;
	} else if (head_len > 0 && head[head_len - 1] != '\n') {
		need_newline = true; /* headers-only file without a final line end */
	}
	buf_clear(&line);
	if (need_newline)
		buf_puts(&line, "\r\n");
	size_t mark = line.len;
	if (!info->has_date)
		buf_printf(&line, "%sDate: %s", line.len > mark ? "\r\n" : "", date.data);
	if (!info->has_message_id)
		buf_printf(&line, "%sMessage-ID: <%s.pickupd@%s>", line.len > mark ? "\r\n" : "",
			   ij->id, ij->hostname);
	if (info->needs_undisclosed)
		buf_printf(&line, "%sTo: undisclosed-recipients:;", line.len > mark ? "\r\n" : "");
	if (line.len > mark)
		add_edit(env, end, 0, line.data + (need_newline ? 0 : 0));
	buf_deinit(&line);
	buf_deinit(&date);
}

/*
 * The cheap structural check that spares libmagic for almost every file: the
 * first line is a header field (RFC 5322 field-name, then ':'; X-Sender: and
 * X-Receiver: envelope lines are header fields too) and the head holds no
 * NUL. No binary format libmagic names starts like that; whatever does not
 * is asked about.
 */
static bool plainly_message(const char *head, size_t n)
{
	size_t i = 0;
	while (i < n && head[i] >= 33 && head[i] <= 126 && head[i] != ':')
		i++;
	return i > 0 && i < n && head[i] == ':' && memchr(head, '\0', n) == NULL;
}

/* The libmagic verdict on the first bytes: NULL when it looks like text. */
static const char *sniff_binary(struct pickupd *pd, const char *head, size_t n, char *mime,
				size_t mime_len)
{
	const char *m;
	uv_mutex_lock(&pd->magic_lock);
	m = magic_buffer(pd->magic, head, n < SNIFF_BYTES ? n : SNIFF_BYTES);
	snprintf(mime, mime_len, "%s", m ? m : "unknown");
	uv_mutex_unlock(&pd->magic_lock);
	/* A coarse filter only: valid messages can look like text/plain. A
	 * type it could not name (octet-stream: a NUL, a control character) is
	 * left to our own checks, whose reasons say more ("NUL byte at offset
	 * 60", "control character in address ..."). */
	if (strncmp(mime, "text/", 5) == 0 || strncmp(mime, "message/", 8) == 0 ||
	    strcmp(mime, "application/octet-stream") == 0)
		return NULL;
	return mime;
}

void ingest_run(struct job *j)
{
	struct ingest_job *ij = (struct ingest_job *)j;
	struct pickupd *pd = j->pd;
	const struct config_pickup *pk = ij->pickup;
	struct spool_env env;
	struct msg_info info;
	struct buf reason = BUF_INIT;
	char *head = NULL;
	bool have_info = false;
	struct stat st;
	int fd;

	memset(&env, 0, sizeof(env));
	memset(&info, 0, sizeof(info));
	/* Look before opening: opening a device can have effects of its own
	 * (a tape rewinds), and a FIFO or socket is never a message. */
	if (fstatat(ij->dir_fd, ij->name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		fd = -1;
		if (errno == ENOENT) {
			ij->result = INGEST_GONE;
		} else {
			ij->err = errno;
			ij->result = INGEST_ERROR;
			set_reason(ij, "cannot stat: %s", strerror(errno));
		}
		goto out;
	}
	if (S_ISDIR(st.st_mode)) {
		ij->result = INGEST_SKIPPED;
		set_reason(ij, "a directory is not a message; it is left alone");
		fd = -1;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		set_reason(ij, "%s is refused", file_kind(st.st_mode));
		fd = -1;
		refuse_entry(ij);
		goto out;
	}
	fd =
	    openat(ij->dir_fd, ij->name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		if (errno == ENOENT) {
			ij->result = INGEST_GONE;
		} else if (errno == ELOOP || errno == ENXIO || errno == EOPNOTSUPP) {
			/* Replaced since we looked: look again next time. */
			ij->result = INGEST_NOT_READY;
			ij->retry_after_ms = 0;
			set_reason(ij, "replaced while being looked at");
		} else {
			ij->err = errno;
			ij->result = INGEST_ERROR;
			set_reason(ij, "cannot open: %s", strerror(errno));
		}
		goto out;
	}
	/* The same checks on what was opened (the name may have changed hands). */
	if (fstat(fd, &st) < 0) {
		ij->err = errno;
		ij->result = INGEST_ERROR;
		set_reason(ij, "cannot stat: %s", strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		ij->result = INGEST_NOT_READY;
		ij->retry_after_ms = 0;
		set_reason(ij, "replaced while being looked at");
		goto out;
	}
	if (st.st_nlink != 1) {
		/* Another name for some other file: never read through it. */
		set_reason(ij, "a hard link (%lu links) is refused", (unsigned long)st.st_nlink);
		close(fd);
		fd = -1;
		refuse_entry(ij);
		goto out;
	}
	/* Content found in data/ at recovery was claimed complete before the
	 * crash: the writer checks are for pickup folders only. */
	bool recovering = ij->dir_fd == pd->spool.data_fd;
	/* .NET on Linux holds LOCK_SH while it writes. */
	if (!recovering && flock(fd, LOCK_EX | LOCK_NB) < 0) {
		ij->result = INGEST_NOT_READY;
		ij->retry_after_ms = pk->settle_time_ms > 1000 ? (int64_t)pk->settle_time_ms : 1000;
		set_reason(ij, "a writer holds a lock on it");
		goto out;
	}
	/* Writers without a lock: a read lease is granted only when nobody has
	 * the file open for writing. */
	int writers = recovering ? 0 : open_for_writing(fd);
	if (writers > 0) {
		ij->result = INGEST_NOT_READY;
		ij->retry_after_ms = pk->settle_time_ms > 500 ? (int64_t)pk->settle_time_ms : 500;
		set_reason(ij, "another process has it open for writing");
		goto out;
	}
	/* settle_time is for files seen by a rescan (no event: NFS, SMB, start-up,
	 * overflow) or found busy before; a file renamed in or closed by its last
	 * writer, with no lock and no writer left (the lease told), is complete. */
	int64_t mtime_ms = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
	int64_t age = ij->now_ms - mtime_ms;
	bool complete = ij->finished && writers == 0;
	if (!recovering && !complete && pk->settle_time_ms && age < (int64_t)pk->settle_time_ms) {
		ij->result = INGEST_NOT_READY;
		ij->retry_after_ms = (int64_t)pk->settle_time_ms - (age > 0 ? age : 0);
		set_reason(ij, "modified %lld ms ago (settle_time)", (long long)age);
		goto out;
	}
	ij->size = (uint64_t)st.st_size;

	size_t want = pk->max_header_size + 4096;
	if ((uint64_t)want > ij->size)
		want = (size_t)ij->size;
	head = xmalloc(want + 1);
	ssize_t got = want ? pread(fd, head, want, 0) : 0;
	if (got < 0) {
		ij->err = errno;
		ij->result = INGEST_ERROR;
		set_reason(ij, "cannot read: %s", strerror(errno));
		goto out;
	}
	/* From here on the file is ours: queued, or in badmail with a reason. */
	if ((ij->batch ? spool_claim_batched(&pd->spool, ij->dir_fd, ij->name, fd, ij->id)
		       : spool_claim_group(&pd->spool, ij->dir_fd, ij->dir_sync, ij->name, fd,
					   ij->id)) < 0) {
		ij->err = errno;
		ij->result = errno == ENOENT   ? INGEST_GONE
			     : errno == ENOSPC ? INGEST_NOSPACE
					       : INGEST_ERROR;
		set_reason(ij, "cannot claim: %s", strerror(errno));
		goto out;
	}
	ij->claimed = true;
	char mime[128];
	int64_t nul_at;
	bool eightbit;
	if (ij->size == 0) {
		set_reason(ij, "empty file");
	} else if (ij->size > pk->max_message_size) {
		set_reason(ij, "message of %llu bytes is over max_message_size (%llu)",
			   (unsigned long long)ij->size, (unsigned long long)pk->max_message_size);
	} else if (!plainly_message(head, (size_t)got) &&
		   sniff_binary(pd, head, (size_t)got, mime, sizeof(mime))) {
		set_reason(ij, "binary file (%s)", mime);
	} else if (scan_content(fd, head, (size_t)got, ij->size, &nul_at, &eightbit) < 0) {
		set_reason(ij, "read error: %s", strerror(errno));
	} else if (nul_at >= 0) {
		set_reason(ij, "NUL byte at offset %lld", (long long)nul_at);
	} else {
		struct msg_scan_opts opts = {.max_header_size = pk->max_header_size,
					     .max_recipients = pk->max_recipients};
		if (msg_scan(head, (size_t)got, (uint64_t)got >= ij->size, &opts, &info, &reason) <
		    0) {
			set_reason(ij, "%s", reason.len ? reason.data : "not a message");
		} else {
			have_info = true;
			build_envelope(ij, &info, head, (size_t)got, eightbit, &env);
			/* Not fsynced: the content is durable and this envelope is
			 * derived from it alone (see spool_env_create_lazy). */
			if (spool_env_create_lazy(&pd->spool, &env) < 0) {
				int e = errno;
				/* Put it back where it was found: nothing is lost. */
				if (renameat2(pd->spool.data_fd, ij->id, ij->dir_fd, ij->name,
					      RENAME_NOREPLACE) == 0)
					spool_fsync_dir(ij->dir_fd);
				ij->err = e;
				ij->result = e == ENOSPC ? INGEST_NOSPACE : INGEST_ERROR;
				set_reason(ij, "cannot write the envelope: %s", strerror(e));
				goto out;
			}
			ij->result = INGEST_QUEUED;
			ij->sender = xstrdup(info.sender.addr);
			ij->n_rcpts = info.n_rcpts;
			goto out;
		}
	}
	refuse_claimed(ij, &env);
out:
	if (fd >= 0)
		close(fd);
	if (have_info)
		msg_info_deinit(&info);
	spool_env_deinit(&env);
	buf_deinit(&reason);
	free(head);
}

void ingest_run_batch(struct job *j)
{
	struct ingest_batch *b = (struct ingest_batch *)j;
	bool claimed = false;
	for (size_t i = 0; i < b->n; i++) {
		struct ingest_job *ij = b->items[i];
		ij->job.pd = j->pd;
		ij->batch = true;
		ingest_run(&ij->job);
		claimed |= ij->claimed;
	}
	if (!claimed || spool_claim_commit(&j->pd->spool, b->dir_fd, b->dir_sync) == 0)
		return;
	/* Not durable: nothing may act on these claims now. What they left in
	 * the spool is found again at the next start (recovery). */
	int e = errno;
	for (size_t i = 0; i < b->n; i++) {
		struct ingest_job *ij = b->items[i];
		if (!ij->claimed)
			continue;
		ij->err = e;
		ij->result = e == ENOSPC ? INGEST_NOSPACE : INGEST_ERROR;
		set_reason(ij,
			   "cannot make the claim durable: %s; it stays in the spool until the "
			   "next start",
			   strerror(e));
	}
}

/* A torn envelope's message, ingested again from its content. */
static void recover_done(struct job *j)
{
	struct ingest_job *ij = (struct ingest_job *)j;
	struct pickupd *pd = j->pd;
	if (ij->result == INGEST_QUEUED) {
		log_info("%s: recovered content of %s (its envelope was never completely "
			 "written)",
			 ij->id, ij->name);
		sched_add(pd->sched, ij->id, SPOOL_QUEUE, 0);
		relay_pool_wake(pd->pool);
	} else if (ij->result == INGEST_REFUSED) {
		pd->stats.refused++;
		log_warn("%s: recovered content of %s refused: %s; moved to badmail", ij->id,
			 ij->name, ij->reason);
	} else {
		log_error("%s: cannot recover content: %s; it is tried again at the next start",
			  ij->name, ij->reason ? ij->reason : strerror(ij->err));
	}
	ingest_job_free(ij);
}

void ingest_recover(struct pickupd *pd, const char *id)
{
	/* The torn envelope goes first: data/<id> without one is what recovery
	 * re-ingests if we are cut short now. */
	if (unlinkat(pd->spool.state_fd[SPOOL_QUEUE], id, 0) < 0 && errno != ENOENT) {
		log_error("%s: cannot remove its torn envelope: %s", id, strerror(errno));
		return;
	}
	struct ingest_job *ij = xcalloc(1, sizeof(*ij));
	ij->pickup = &pd->cfg->pickups[0];
	ij->dir_fd = pd->spool.data_fd;
	ij->name = xstrdup(id);
	ij->hostname = pd->cfg->general.hostname;
	ij->now_ms = pickupd_now_ms();
	job_submit(pd, &ij->job, ingest_run, recover_done);
}
