/*
 * Purpose: validation, claim and envelope derivation of one pickup file, on
 * a thread-pool thread (it fsyncs, and runs libmagic on what does not start
 * like a message).
 * Owns: nothing beyond the job; the spool owns every path it touches.
 * Invariants: the file is opened without following links and without
 * blocking; nothing is claimed while a writer may still be at work (flock,
 * lease; settle time unless an event said it is complete); once claimed, the
 * file ends as a queued message or in badmail with a reason, or, when the
 * envelope cannot be written or a batch's claims cannot be made durable, it
 * is put back where it was found at once (a copy is dropped, its original
 * never left). Nothing is deleted. The claim records its folder (recovery),
 * before its rename: a batch of BATCH_RECORD_MIN files or more shares one
 * record (spool_claim_batch_begin), written before the first claim; the
 * record of a message queued with a lazy envelope stays with it.
 */
#include "daemon/intake/ingest.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/addrmap.h"
#include "common/log.h"
#include "common/msg.h"
#include "common/msgbody.h"
#include "common/wire.h"
#include "daemon/core/handoff.h"

#define SNIFF_BYTES 8192
/* A batch this large shares one claim record: one new file and one fsync
 * for the batch, in place of a symbolic link (a new inode, later an unlink)
 * per file. A lone file keeps its link: the record's fsync would add a disk
 * flush to the time it takes to be sent. */
#define BATCH_RECORD_MIN 2
/* Whole small contents a batch keeps for delivery while its fsyncs run. */
#define BATCH_HEAD_BUDGET (128 * 1024)
/* Claims whose contents are fsynced together: up to this many bytes (all
 * of a batch of small messages), so that large ones are not all held back
 * until the last is flushed (delivery takes each as it is queued). */
#define SYNC_GROUP_BYTES (512 * 1024)

void ingest_job_free(struct ingest_job *ij)
{
	free(ij->name);
	free(ij->origin_buf);
	free(ij->reason);
	free(ij->sender);
	handoff_free(ij->handoff);
	handoff_free(ij->offer.h);
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
 * file in the microseconds the lease is held would break it, which sends us
 * SIGIO (whose default action ends the process): main.c ignores it for the
 * process, rather than an F_SETSIG redirecting it per file.
 */
static int open_for_writing(int fd)
{
	if (fcntl(fd, F_SETLEASE, F_RDLCK) < 0)
		return errno == EAGAIN ? 1 : -1;
	fcntl(fd, F_SETLEASE, F_UNLCK);
	return 0;
}

/* The name the file had in its folder (the data/ ID when recovery finishes
 * a claim whose record is gone). */
static const char *origin_file(const struct ingest_job *ij)
{
	return ij->origin_file ? ij->origin_file : ij->name;
}

static int claim_failed(struct ingest_job *ij)
{
	ij->err = errno;
	ij->result = errno == ENOENT			  ? INGEST_GONE
		     : errno == ENOSPC || errno == EDQUOT ? INGEST_NOSPACE
							  : INGEST_ERROR;
	set_reason(ij, "cannot claim: %s", strerror(errno));
	return -1;
}

/* A lone file from a pickup folder (the latency path) is offered to
 * delivery before its claim is durable (handoff.h); recovery's are not. */
static bool offers(const struct ingest_job *ij)
{
	return ij->early && !ij->no_offer && ij->rec == NULL &&
	       ij->dir_fd != ij->job.pd->spool.data_fd;
}

/* Claims the file, with a claim record naming its folder. In a batch the
 * directory fsyncs wait for the batch's commit (ingest_run_batch). */
static int claim(struct ingest_job *ij, int fd, struct spool_claim *c)
{
	struct spool *sp = &ij->job.pd->spool;
	/* A batch's contents are fsynced together once all are claimed
	 * (ingest_run_batch). */
	int r = ij->rec ? spool_claim_in_batch_unsynced(sp, ij->rec, ij->slot, ij->dir_fd, ij->name,
							fd, c)
		: offers(ij) ? spool_claim_lone_unsynced(sp, ij->dir_fd, ij->name, fd,
							 ij->pickup->name, origin_file(ij), c)
		: ij->batch && ij->early
		    ? spool_claim_lone(sp, ij->dir_fd, ij->name, fd, ij->pickup->name,
				       origin_file(ij), ij->early, c)
		: ij->batch ? spool_claim_batched_unsynced(sp, ij->dir_fd, ij->name, fd,
							   ij->pickup->name, origin_file(ij), c)
			    : spool_claim_group(sp, ij->dir_fd, ij->dir_sync, ij->name, fd,
						ij->pickup->name, origin_file(ij), c);
	if (r < 0)
		return claim_failed(ij);
	memcpy(ij->id, c->id, sizeof(ij->id));
	ij->claimed = ij->batch && !c->copied;
	return 0;
}

/* A whole small message, parsed, whose claim is not yet durable: offered
 * to delivery (a copy: the job goes on with its own), which may send it at
 * once and records its outcome once this job is over. Its content (fd, of
 * mode) is marked as being sent first: recovery names it should the claim
 * be cut short after the server took it. */
static void offer(struct ingest_job *ij, const struct spool_env *env, const char *head, size_t len,
		  int fd, mode_t mode)
{
	struct pickupd *pd = ij->job.pd;
	struct buf text = BUF_INIT;
	struct spool_env copy;
	spool_env_format(env, &text);
	int r = spool_env_parse(text.data, text.len, &copy, NULL);
	buf_deinit(&text);
	if (r < 0)
		return;
	char *content = xmalloc(len);
	memcpy(content, head, len);
	struct handoff *h = handoff_new(pd, &copy, &content, len);
	free(content); /* NULL when the handoff took it */
	spool_env_deinit(&copy);
	if (h == NULL || h->content == NULL || spool_claim_mark_sending(&ij->claim, fd, mode) < 0) {
		handoff_free(h); /* no room in the budget, or no mark: the usual way */
		return;
	}
	ij->offer.h = h;
	handoff_offer_post(pd, &ij->offer);
}

/* The claim's envelope is durable in state st: the claim is complete. When
 * the original of a copy cannot be removed, the file is not ours after all
 * (another instance took it, or the folder is not writable): the message
 * is removed again and the file left where it is. */
static int claim_done(struct ingest_job *ij, struct spool_claim *c, enum spool_state st)
{
	struct spool *sp = &ij->job.pd->spool;
	if (spool_claim_done(sp, c) == 0)
		return 0;
	int e = errno;
	spool_remove(sp, c->id, st);
	ij->err = e;
	ij->result = e == ENOENT ? INGEST_GONE : INGEST_ERROR;
	set_reason(ij, "cannot remove the original after copying it: %s", strerror(e));
	return -1;
}

/* No envelope could be written (errno e): the claim is rolled back at once,
 * so the file is back in its folder, visible, and taken again later. */
static void claim_undo(struct ingest_job *ij, struct spool_claim *c, const char *what, int e)
{
	struct spool *sp = &ij->job.pd->spool;
	ij->err = e;
	ij->result = e == ENOSPC || e == EDQUOT ? INGEST_NOSPACE : INGEST_ERROR;
	set_reason(ij, "cannot write the %s: %s", what, strerror(e));
	ij->claimed = false; /* nothing for the batch's commit to cover */
	if (spool_claim_undo(sp, c) < 0)
		log_error("%s: pickup=%s, file=%s: cannot write the %s (%s) nor put the file back "
			  "(%s); its content stays in %s/data/%s and is taken again at the next "
			  "start",
			  c->id, ij->pickup->name, origin_file(ij), what, strerror(e),
			  strerror(errno), sp->dir, c->id);
}

/* Writes the badmail envelope for a claimed file (reason already set). */
static void refuse_claimed(struct ingest_job *ij, struct spool_claim *c, struct spool_env *env)
{
	struct spool *sp = &ij->job.pd->spool;
	memcpy(env->id, ij->id, sizeof(env->id));
	if (env->arrival_ms == 0)
		env->arrival_ms = ij->now_ms;
	if (env->origin_pickup == NULL)
		env->origin_pickup = xstrdup(ij->pickup->name);
	if (env->origin_file == NULL)
		env->origin_file = xstrdup(origin_file(ij));
	env->size = ij->size;
	free(env->reason);
	env->reason = xstrdup(ij->reason);
	if (spool_env_write(sp, SPOOL_BADMAIL, env) < 0) {
		claim_undo(ij, c, "badmail envelope", errno);
		return;
	}
	if (claim_done(ij, c, SPOOL_BADMAIL) == 0)
		ij->result = INGEST_REFUSED;
}

/* Claims an entry that is not a regular file (or is a hard link) by renaming
 * the entry itself, without reading through it, then refuses it. */
static void refuse_entry(struct ingest_job *ij)
{
	struct spool_env env;
	memset(&env, 0, sizeof(env));
	if (claim(ij, -1, &ij->claim) < 0)
		return;
	refuse_claimed(ij, &ij->claim, &env);
	spool_env_deinit(&env);
}

/* Runs the whole-content checks (common/msgbody.h) over the file in one
 * pass of bounded reads: head[0..got) is its start, already read (all of a
 * small message), so only what follows it is read. The same pass finds the
 * run that can be sent unread (wc, unless NULL). 0, or -1 on a read error. */
static int scan_content(int fd, uint64_t size, const char *head, size_t got, struct msgbody *mb,
			struct wire_clean *wc)
{
	char chunk[65536];
	uint64_t off = got;
	msgbody_feed(mb, head, got);
	if (wc)
		wire_clean_feed(wc, head, got);
	while (off < size) {
		ssize_t n = pread(fd, chunk, sizeof(chunk), (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0)
			break;
		msgbody_feed(mb, chunk, (size_t)n);
		if (wc)
			wire_clean_feed(wc, chunk, (size_t)n);
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
			   size_t head_len, const struct msgbody *mb, struct spool_env *env)
{
	struct buf line = BUF_INIT;
	struct buf date = BUF_INIT;
	memcpy(env->id, ij->id, sizeof(env->id));
	env->arrival_ms = ij->now_ms;
	env->size = ij->size;
	env->origin_pickup = xstrdup(ij->pickup->name);
	env->origin_file = xstrdup(origin_file(ij));
	env->dot_stuffed = ij->pickup->dot_stuffed;
	env->eightbit = mb->eightbit;
	env->smtputf8 = info->needs_smtputf8;
	env->sender = xstrdup(info->sender.addr);
	env->sender_params = info->sender.params ? xstrdup(info->sender.params) : NULL;
	for (size_t i = 0; i < info->n_rcpts; i++)
		spool_env_add_rcpt(env, info->rcpts[i].addr, info->rcpts[i].params);

	for (size_t i = 0; i < info->n_skips; i++)
		add_edit(env, info->skips[i].off, info->skips[i].len, NULL);
	/* A stuffed file's final "." line is its end-of-data marker, not content. */
	if (mb->dot_off >= 0)
		add_edit(env, (uint64_t)mb->dot_off, ij->size - (uint64_t)mb->dot_off, NULL);

	msg_format_date(ij->now_ms / 1000, &date);
	buf_printf(&line, "Received: from pickup (folder %s) by %s (pickupd) id %s; %s",
		   ij->pickup->name, ij->hostname, ij->id, date.data);
	add_edit(env, info->headers_start, 0, line.data);
	/* An invalid Date:/Message-ID: keeps its value under an X-Original- name
	 * (after Received:, whose insert it may share an offset with). */
	for (size_t i = 0; i < info->n_renames; i++) {
		const struct msg_rename *r = &info->renames[i];
		buf_clear(&line);
		buf_printf(&line, "%s:%.*s", r->to, (int)r->value.len, head + r->value.off);
		add_edit(env, r->field.off, r->field.len, line.data);
	}

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

/*
 * Up to the claim's content fsync: looks, opens, checks, claims, classifies
 * and parses; ij->stage says what ingest_finish has left to do once the
 * content is durable (the file stays open on ij->fd until then).
 */
static void ingest_prepare(struct ingest_job *ij)
{
	struct pickupd *pd = ij->job.pd;
	const struct config_pickup *pk = ij->pickup;
	struct spool_env *env = &ij->env;
	struct msg_info info;
	struct buf reason = BUF_INIT;
	char *head = NULL;
	bool have_info = false;
	struct stat st;
	int fd;

	ij->stage = INGEST_STAGE_OVER;
	ij->fd = -1;
	memset(env, 0, sizeof(*env));
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
	ij->uid = (unsigned)st.st_uid; /* the writer, as Postfix's pickup logs it */

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
	/* From here on the file is ours: queued, or in badmail with a reason,
	 * or (no envelope could be written) back in its folder. */
	struct spool_claim *claimed = &ij->claim;
	if (claim(ij, fd, claimed) < 0)
		goto out;
	char mime[128];
	struct msgbody mb;
	struct msg_scan_opts opts = {.max_header_size = pk->max_header_size,
				     .max_recipients = pk->max_recipients,
				     .exact_local_part = pk->rcpt_dedup == RCPT_DEDUP_EXACT};
	struct addrmap map;
	addrmap_init(&map, ij->submit ? ij->submit->root_alias : NULL,
		     ij->submit ? ij->submit->origin_domain : NULL, ij->hostname);
	if (addrmap_active(&map))
		opts.map = &map;
	if (ij->size == 0) {
		set_reason(ij, "empty file");
	} else if (ij->size > pk->max_message_size) {
		set_reason(ij, "message of %llu bytes is over max_message_size (%llu)",
			   (unsigned long long)ij->size, (unsigned long long)pk->max_message_size);
	} else if (!plainly_message(head, (size_t)got) &&
		   sniff_binary(pd, head, (size_t)got, mime, sizeof(mime))) {
		set_reason(ij, "binary file (%s)", mime);
	} else if (msg_scan(head, (size_t)got, (uint64_t)got >= ij->size, &opts, &info, &reason) <
		   0) {
		set_reason(ij, "%s", reason.len ? reason.data : "not a message");
	} else {
		have_info = true;
		msgbody_init(&mb, &info, pk->dot_stuffed);
		/* A message read from data/ when sent: its body's clean run
		 * goes unread then (smtpc.c, sendfile on a plaintext session). */
		struct wire_clean wc;
		bool large = ij->size > HANDOFF_MAX_CONTENT;
		wire_clean_init(&wc, info.header_end);
		if (scan_content(fd, ij->size, head, (size_t)got, &mb, large ? &wc : NULL) < 0) {
			set_reason(ij, "read error: %s", strerror(errno));
		} else if (msgbody_finish(&mb, &reason) < 0) {
			set_reason(ij, "%s", reason.data);
		} else {
			build_envelope(ij, &info, head, (size_t)got, &mb, env);
			if (large && wc.to > wc.from) {
				env->verbatim_from = wc.from;
				env->verbatim_to = wc.to;
			}
			if (offers(ij) && claimed->sync_deferred && (uint64_t)got == ij->size &&
			    (size_t)got <= HANDOFF_MAX_CONTENT)
				offer(ij, env, head, (size_t)got, fd, st.st_mode);
			ij->stage = INGEST_STAGE_QUEUE;
			ij->sender = xstrdup(info.sender.addr);
			ij->n_rcpts = info.n_rcpts;
			goto keep;
		}
	}
	ij->stage = INGEST_STAGE_REFUSE;
keep:
	ij->fd = fd;
	ij->got = (size_t)got;
	fd = -1;
	/* Kept for delivery only when it is the whole of a small message. */
	if ((uint64_t)got == ij->size && (size_t)got <= HANDOFF_MAX_CONTENT) {
		ij->head = head;
		head = NULL;
	}
out:
	if (fd >= 0)
		close(fd);
	if (have_info)
		msg_info_deinit(&info);
	buf_deinit(&reason);
	free(head);
}

/* The claim's content is durable (or sync_err, an errno, says it could not
 * be made so, and the claim was put back): the envelope, in queue/ or in
 * badmail/, completes it. */
static void ingest_finish(struct ingest_job *ij, int sync_err)
{
	struct pickupd *pd = ij->job.pd;
	struct spool_claim *claimed = &ij->claim;
	struct spool_env *env = &ij->env;
	if (ij->stage != INGEST_STAGE_OVER && sync_err) {
		ij->claimed = false;
		errno = sync_err;
		claim_failed(ij);
	} else if (ij->stage == INGEST_STAGE_QUEUE) {
		/* A moved claim's first envelope is not fsynced: the content
		 * is durable and the envelope derived from it alone, and the
		 * claim record stays to say where it came from (see
		 * spool_env_create_lazy). A copy's original goes at
		 * claim_done, so its envelope must be durable first. */
		claimed->keep_record = !claimed->copied && claimed->recorded;
		if ((claimed->keep_record ? spool_env_create_lazy(&pd->spool, env)
					  : spool_env_write(&pd->spool, SPOOL_QUEUE, env)) < 0) {
			claimed->keep_record = false;
			claim_undo(ij, claimed, "envelope", errno);
			goto out;
		}
		/* Taken: its transaction is under way (its outcome waits for
		 * this job); marked as being sent, as a load marks. */
		if (!handoff_offer_close(&ij->offer) &&
		    spool_mark_sending_new(&pd->spool, env->id) < 0)
			ij->offer.mark_err = errno ? errno : EIO;
		if (claim_done(ij, claimed, SPOOL_QUEUE) < 0)
			goto out;
		ij->result = INGEST_QUEUED;
		/* Delivery takes what was built here, and a small file's bytes
		 * read whole, without reading them again. */
		ij->handoff = handoff_new(pd, env, ij->head ? &ij->head : NULL, ij->got);
	} else if (ij->stage == INGEST_STAGE_REFUSE) {
		refuse_claimed(ij, claimed, env);
	}
out:
	if (ij->result != INGEST_QUEUED) {
		free(ij->sender);
		ij->sender = NULL;
	}
	if (ij->fd >= 0)
		close(ij->fd);
	ij->fd = -1;
	spool_env_deinit(env);
	free(ij->head);
	ij->head = NULL;
	ij->stage = INGEST_STAGE_OVER;
}

void ingest_run(struct job *j)
{
	struct ingest_job *ij = (struct ingest_job *)j;
	ingest_prepare(ij);
	int err = 0;
	if (ij->stage != INGEST_STAGE_OVER &&
	    spool_claim_sync(&j->pd->spool, &ij->claim, ij->fd) < 0)
		err = errno;
	ingest_finish(ij, err);
}

/* The batch's claims could not be made durable (errno e): each is undone at
 * once, as a claim cut short is, so that nothing acts on it: its envelope
 * goes, then the file goes back to its folder. */
static void batch_undo(struct ingest_job *ij, int e)
{
	struct spool *sp = &ij->job.pd->spool;
	if (ij->result == INGEST_QUEUED || ij->result == INGEST_REFUSED) {
		enum spool_state st = ij->result == INGEST_QUEUED ? SPOOL_QUEUE : SPOOL_BADMAIL;
		if (spool_env_drop(sp, st, ij->id) < 0) {
			/* Left for recovery, which finds both envelope and content. */
			log_error("%s: cannot undo a claim whose commit failed: %s", ij->id,
				  strerror(errno));
			ij->err = e;
			ij->result = INGEST_ERROR;
			set_reason(ij, "cannot make the claim durable: %s", strerror(e));
			return;
		}
	}
	ij->claim.keep_record = false;
	claim_undo(ij, &ij->claim, "claim's directory entries", e);
	log_warn("%s: pickup=%s, file=%s: the claim cannot be made durable (%s); undone, the file "
		 "is taken again later",
		 ij->id, ij->pickup->name, origin_file(ij), strerror(e));
}

/* The batch's claim record, for its first SPOOL_BATCH_MAX files. When it
 * cannot be made, each claim makes its own (and meets the same trouble, if
 * it lasts, which it then reports). */
static void batch_record(struct ingest_batch *b, struct spool *sp)
{
	size_t n = b->n < SPOOL_BATCH_MAX ? b->n : SPOOL_BATCH_MAX;
	b->files = xcalloc(n, sizeof(*b->files));
	for (size_t i = 0; i < n; i++)
		b->files[i] = origin_file(b->items[i]);
	if (spool_claim_batch_begin(sp, b->items[0]->pickup->name, b->files, n, &b->rec) < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		b->items[i]->rec = &b->rec;
		b->items[i]->slot = i;
	}
}

/* Whether ij's claim waits for its content's fsync. */
static bool sync_owed(const struct ingest_job *ij)
{
	return ij->stage != INGEST_STAGE_OVER && ij->claim.sync_deferred;
}

/* The claims of items [from, to) of a batch, prepared: their contents'
 * fsyncs all in flight at once, so that the block layer merges their
 * flushes (spool_claims_sync), then each finished. Whether one was claimed. */
static bool sync_group(struct ingest_batch *b, size_t from, size_t to)
{
	struct spool *sp = &b->job.pd->spool;
	size_t n = to - from, k = 0;
	bool claimed = false;
	struct spool_claim **cs = xcalloc(n, sizeof(*cs));
	int *fds = xcalloc(n, sizeof(*fds)), *errs = xcalloc(n, sizeof(*errs));
	for (size_t i = from; i < to; i++) {
		if (!sync_owed(b->items[i]))
			continue;
		cs[k] = &b->items[i]->claim;
		fds[k++] = b->items[i]->fd;
	}
	spool_claims_sync(sp, cs, fds, k, errs);
	for (size_t i = from, m = 0; i < to; i++) {
		struct ingest_job *ij = b->items[i];
		/* The claims synced are cs[0..k), in the items' order. */
		ingest_finish(ij, m < k && cs[m] == &ij->claim ? errs[m++] : 0);
		claimed |= ij->claimed;
	}
	free(cs);
	free(fds);
	free(errs);
	return claimed;
}

void ingest_run_batch(struct job *j)
{
	struct ingest_batch *b = (struct ingest_batch *)j;
	struct spool *sp = &j->pd->spool;
	bool claimed = false;
	size_t kept = 0;
	uint64_t group = 0;
	if (b->n >= BATCH_RECORD_MIN)
		batch_record(b, sp);
	for (size_t i = 0, start = 0; i < b->n; i++) {
		struct ingest_job *ij = b->items[i];
		ij->job.pd = j->pd;
		ij->batch = true;
		/* A lone file (the latency path): data/'s fsync overlaps the
		 * content's; a bigger batch shares one at its end. */
		ij->early = b->n == 1;
		ingest_prepare(ij);
		/* What waits for the group's fsyncs stays small: past the
		 * budget a content is read from data/ when it is sent. */
		if (ij->head && kept + ij->got > BATCH_HEAD_BUDGET) {
			free(ij->head);
			ij->head = NULL;
		}
		kept += ij->head ? ij->got : 0;
		group += ij->stage != INGEST_STAGE_OVER ? ij->size : 0;
		if (group >= SYNC_GROUP_BYTES || i + 1 == b->n) {
			claimed |= sync_group(b, start, i + 1);
			start = i + 1;
			group = kept = 0;
		}
	}
	/* The folder's fsync is left to the first removal of content: the
	 * messages may be sent as soon as their content is durable in data/. */
	if (claimed && spool_claim_commit_data_for(sp, b->dir_fd, b->dir_sync,
						   b->n == 1 ? &b->items[0]->claim : NULL) < 0) {
		int e = errno;
		for (size_t i = 0; i < b->n; i++)
			if (b->items[i]->claimed)
				batch_undo(b->items[i], e);
	}
	for (size_t i = 0; i < b->n; i++)
		b->items[i]->rec = NULL;
	spool_claim_batch_end(sp, &b->rec);
	free(b->files);
	b->files = NULL;
}

const struct config_pickup *ingest_origin_pickup(struct pickupd *pd, const char *name,
						 const char *id)
{
	for (size_t i = 0; name && i < pd->cfg->n_pickups; i++)
		if (strcmp(pd->cfg->pickups[i].name, name) == 0)
			return &pd->cfg->pickups[i];
	if (name)
		log_warn("%s: recovered content came from [pickup %s], which is no longer "
			 "configured; taken as from [pickup %s]",
			 id, name, pd->cfg->pickups[0].name);
	return &pd->cfg->pickups[0];
}

/* A torn envelope's message, ingested again from its content. */
static void recover_done(struct job *j)
{
	struct ingest_job *ij = (struct ingest_job *)j;
	struct pickupd *pd = j->pd;
	if (ij->result == INGEST_QUEUED) {
		log_info("%s: recovered content of %s (its envelope was never completely "
			 "written): pickup=%s, file=%s",
			 ij->id, ij->name, ij->pickup->name, origin_file(ij));
	} else if (ij->result == INGEST_REFUSED) {
		pd->stats.refused++;
		log_warn("%s: recovered content of %s refused: %s; moved to badmail", ij->id,
			 ij->name, ij->reason);
	} else {
		log_error("%s: cannot recover content: %s; it is tried again at the next start",
			  ij->name, ij->reason ? ij->reason : strerror(ij->err));
	}
	ij->recovered_cb(ij->owner, ij->result == INGEST_QUEUED ? ij->id : NULL);
	ingest_job_free(ij);
}

void ingest_recover(struct pickupd *pd, const char *id, ingest_recovered_cb cb, void *arg)
{
	/* The torn envelope goes first: data/<id> without one is what recovery
	 * re-ingests (from the folder its claim record names) if we are cut
	 * short now. */
	if (spool_env_drop(&pd->spool, SPOOL_QUEUE, id) < 0) {
		log_error("%s: cannot remove its torn envelope: %s", id, strerror(errno));
		return;
	}
	struct ingest_job *ij = xcalloc(1, sizeof(*ij));
	ij->owner = arg;
	ij->recovered_cb = cb;
	char *pickup = NULL;
	spool_claim_origin(&pd->spool, id, &pickup, &ij->origin_buf);
	ij->pickup = ingest_origin_pickup(pd, pickup, id);
	free(pickup);
	ij->origin_file = ij->origin_buf;
	ij->dir_fd = pd->spool.data_fd;
	ij->name = xstrdup(id);
	ij->hostname = pd->cfg->general.hostname;
	ij->submit = &pd->cfg->submit;
	ij->now_ms = pickupd_now_ms();
	job_submit(pd, &ij->job, ingest_run, recover_done);
}
