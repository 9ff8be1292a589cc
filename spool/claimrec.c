/*
 * Purpose: the claim record of a batch of claims, data/<base>.batch: one
 * small file, written and fsynced once before the batch's first rename, in
 * place of one symbolic link (one new inode, one unlink) per claim; reading
 * it for recovery; and its lifetime.
 * Owns: the files data/<base>.batch and the table of those in use (struct
 * spool's recs, under rec_lock): per record, which of its claims still
 * depend on it.
 * Invariants: a batch's IDs are one aligned block of SPOOL_BATCH_MAX IDs
 * reserved for it alone (spool__new_block), so the record of any ID is found
 * from the ID: data/<the block's first ID>.batch; the record is durable,
 * name included, before any claim of the batch is renamed; a claim's bit is
 * set before its rename and cleared when its claim is undone, its envelope
 * is durable or its content is removed; the file goes when the batch is
 * over and no bit is left (a record of an earlier run is taken over by
 * recovery with the bits of the IDs that still need it, or goes at once).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/esc.h"
#include "spool/spool.h"
#include "spool/spool_int.h"

/* One record in use. Owner: the spool's table. */
struct spool_batchrec {
	char base[SPOOL_ID_LEN + 1];
	uint32_t dep; /* bit per slot: that claim still depends on the record */
	bool open;    /* the batch is still claiming: keep it even with dep 0 */
	struct spool_batchrec *next;
};

_Static_assert(SPOOL_BATCH_MAX <= 32, "dep has one bit per slot");

/* The counter digits of an ID: the last three (see spool_new_id). */
#define SEQ_OFF (SPOOL_ID_LEN - 3)

static unsigned seq_of(const char *id)
{
	unsigned v = 0;
	for (int i = SEQ_OFF; i < SPOOL_ID_LEN; i++)
		v = v << 4 | (unsigned)(id[i] <= '9' ? id[i] - '0' : id[i] - 'A' + 10);
	return v;
}

static void with_seq(const char *id, unsigned seq, char out[SPOOL_ID_LEN + 1])
{
	memcpy(out, id, SEQ_OFF);
	snprintf(out + SEQ_OFF, 4, "%03X", seq & 0xfff);
}

void spool__batchrec_slot_id(const char *base, size_t slot, char id_r[SPOOL_ID_LEN + 1])
{
	with_seq(base, seq_of(base) + (unsigned)slot, id_r);
}

/* The record name of the block id belongs to, and its slot there. */
static unsigned block_of(const char *id, char name_r[SPOOL_ID_LEN + 8])
{
	unsigned seq = seq_of(id);
	with_seq(id, seq & ~(unsigned)(SPOOL_BATCH_MAX - 1), name_r);
	memcpy(name_r + SPOOL_ID_LEN, ".batch", 7);
	return seq & (SPOOL_BATCH_MAX - 1);
}

bool spool__batchrec_name(const char *name, char base_r[SPOOL_ID_LEN + 1])
{
	if (strlen(name) != SPOOL_ID_LEN + 6 || strcmp(name + SPOOL_ID_LEN, ".batch") != 0)
		return false;
	memcpy(base_r, name, SPOOL_ID_LEN);
	base_r[SPOOL_ID_LEN] = '\0';
	return spool_id_valid(base_r) && (seq_of(base_r) & (SPOOL_BATCH_MAX - 1)) == 0;
}

/* ---- the table of records in use -------------------------------------------------- */

static size_t bucket_of(const struct spool *s, const char *base)
{
	size_t h = 2166136261u;
	for (int i = 0; i < SPOOL_ID_LEN; i++)
		h = (h ^ (unsigned char)base[i]) * 16777619u;
	return h & (s->recs_size - 1);
}

/* Under rec_lock. */
static struct spool_batchrec **find(struct spool *s, const char *base)
{
	if (s->recs_size == 0)
		return NULL;
	for (struct spool_batchrec **pp = &s->recs[bucket_of(s, base)]; *pp; pp = &(*pp)->next)
		if (memcmp((*pp)->base, base, SPOOL_ID_LEN) == 0)
			return pp;
	return NULL;
}

/* Under rec_lock. */
static void insert(struct spool *s, const char *base, uint32_t dep, bool open)
{
	if (s->n_recs >= s->recs_size) {
		size_t nsize = s->recs_size ? s->recs_size * 2 : 64;
		struct spool_batchrec **nt = xcalloc(nsize, sizeof(*nt));
		size_t old = s->recs_size;
		struct spool_batchrec **ot = s->recs;
		s->recs = nt;
		s->recs_size = nsize;
		for (size_t i = 0; i < old; i++)
			for (struct spool_batchrec *r = ot[i], *nx; r; r = nx) {
				nx = r->next;
				size_t b = bucket_of(s, r->base);
				r->next = nt[b];
				nt[b] = r;
			}
		free(ot);
	}
	struct spool_batchrec *r = xcalloc(1, sizeof(*r));
	memcpy(r->base, base, SPOOL_ID_LEN + 1);
	r->dep = dep;
	r->open = open;
	size_t b = bucket_of(s, base);
	r->next = s->recs[b];
	s->recs[b] = r;
	s->n_recs++;
}

void spool__batchrec_init(struct spool *s)
{
	pthread_mutex_init(&s->rec_lock, NULL);
}

void spool__batchrec_deinit(struct spool *s)
{
	for (size_t i = 0; i < s->recs_size; i++)
		for (struct spool_batchrec *r = s->recs[i], *nx; r; r = nx) {
			nx = r->next;
			free(r);
		}
	free(s->recs);
	s->recs = NULL;
	s->recs_size = s->n_recs = 0;
	pthread_mutex_destroy(&s->rec_lock);
}

/* No claim depends on the record any more: it goes. Not fsynced: one that
 * comes back after a crash is dropped by recovery (none of its IDs needs it). */
static void record_unlink(struct spool *s, const char *base)
{
	char name[SPOOL_ID_LEN + 8];
	int saved = errno;
	block_of(base, name);
	if (spool__hook("batch-record-drop") == 0)
		unlinkat(s->data_fd, name, 0);
	errno = saved;
}

/* Clears or sets id's bit; with close, ends the batch. True when id's block
 * has a record in use (then id has no record of its own). */
static bool update(struct spool *s, const char *id, bool set, bool close)
{
	char name[SPOOL_ID_LEN + 8];
	unsigned slot = block_of(id, name);
	bool gone = false;
	pthread_mutex_lock(&s->rec_lock);
	struct spool_batchrec **pp = find(s, name);
	struct spool_batchrec *r = pp ? *pp : NULL;
	if (r) {
		if (set)
			r->dep |= 1u << slot;
		else if (!close)
			r->dep &= ~(1u << slot);
		if (close)
			r->open = false;
		if (r->dep == 0 && !r->open) {
			*pp = r->next;
			s->n_recs--;
			free(r);
			gone = true;
		}
	}
	pthread_mutex_unlock(&s->rec_lock);
	if (gone)
		record_unlink(s, name);
	return r != NULL;
}

bool spool__batchrec_mark(struct spool *s, const char *id)
{
	return update(s, id, true, false);
}

/*
 * A process that did not run recovery (pickupctl acting while the daemon is
 * down) knows no record in use: id's block may have one on disk all the
 * same. It goes when no ID of the block has content any more (a record
 * kept longer is harmless: the next recovery decides again).
 */
static bool drop_unknown(struct spool *s, const char *id)
{
	char name[SPOOL_ID_LEN + 8], slot_id[SPOOL_ID_LEN + 1];
	struct stat st;
	block_of(id, name);
	if (fstatat(s->data_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return false; /* a record of its own, if any */
	name[SPOOL_ID_LEN] = '\0';
	for (size_t slot = 0; slot < SPOOL_BATCH_MAX; slot++) {
		spool__batchrec_slot_id(name, slot, slot_id);
		if (fstatat(s->data_fd, slot_id, &st, AT_SYMLINK_NOFOLLOW) == 0)
			return true;
	}
	record_unlink(s, name);
	return true;
}

bool spool__batchrec_drop(struct spool *s, const char *id)
{
	int saved = errno;
	bool known = update(s, id, false, false) || (!s->recs_known && drop_unknown(s, id));
	errno = saved;
	return known;
}

void spool__batchrec_adopt(struct spool *s, const char *base, uint32_t dep)
{
	if (dep == 0) {
		record_unlink(s, base);
		return;
	}
	pthread_mutex_lock(&s->rec_lock);
	if (find(s, base) == NULL)
		insert(s, base, dep, false);
	pthread_mutex_unlock(&s->rec_lock);
}

/* ---- the file -------------------------------------------------------------------- */

/* A field of a line: escaped as in the envelope (common/esc.h), which
 * turns a tab or a line end into \xHH, so tabs can separate fields. */
static void put_field(struct buf *b, const char *s)
{
	buf_putc(b, '\t');
	esc_append(b, s, strlen(s));
}

int spool_claim_batch_begin(struct spool *s, const char *pickup, const char *const *files, size_t n,
			    struct spool_claim_batch *b_r)
{
	struct buf text = BUF_INIT;
	char base[SPOOL_ID_LEN + 1], name[SPOOL_ID_LEN + 8];
	int ret = -1;

	memset(b_r, 0, sizeof(*b_r));
	b_r->pickup = pickup;
	b_r->files = files;
	b_r->n = n;
	if (n == 0 || n > SPOOL_BATCH_MAX) {
		errno = EINVAL;
		return -1;
	}
	if (spool__check_writable(s) < 0)
		return -1;
	for (int tries = 0; tries < 16; tries++) {
		spool__new_block(s, base);
		buf_clear(&text);
		for (size_t i = 0; i < n; i++) {
			char id[SPOOL_ID_LEN + 1];
			spool__batchrec_slot_id(base, i, id);
			buf_puts(&text, id);
			put_field(&text, pickup);
			put_field(&text, files[i]);
			buf_putc(&text, '\n');
		}
		block_of(base, name);
		/* Durable, name and all, before any rename of the batch: an
		 * fsync of a new file writes its parent directory's entry too
		 * (ext4 with or without a journal, XFS, btrfs), and the
		 * renames come after it returns. */
		if (spool__hook("batch-record-write") < 0)
			goto out;
		if (spool__write_new(s->data_fd, name, text.data, text.len, "batch-record-fsync") ==
		    0) {
			ret = 0;
			break;
		}
		if (errno != EEXIST)
			goto out; /* EEXIST: another process had the same block */
	}
	if (ret < 0) {
		errno = EEXIST;
		goto out;
	}
	memcpy(b_r->base, base, sizeof(base));
	pthread_mutex_lock(&s->rec_lock);
	insert(s, base, 0, true);
	pthread_mutex_unlock(&s->rec_lock);
out:
	if (ret < 0)
		spool__note_error(s);
	buf_deinit(&text);
	return ret;
}

void spool_claim_batch_end(struct spool *s, struct spool_claim_batch *b)
{
	if (b->base[0])
		update(s, b->base, false, true);
	b->base[0] = '\0';
}

int spool__batchrec_read(struct spool *s, const char *id, char **pickup_r, char **file_r)
{
	char name[SPOOL_ID_LEN + 8];
	struct buf text = BUF_INIT;
	int ret = -1;
	block_of(id, name);
	if (spool__read_all(s->data_fd, name, 1 << 20, &text) < 0)
		goto out;
	for (const char *p = text.data, *end = p + text.len; p && p < end;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL)
			break; /* torn: never the line of a claim that was renamed */
		const char *t1 = p + SPOOL_ID_LEN;
		if (nl - p > SPOOL_ID_LEN + 1 && memcmp(p, id, SPOOL_ID_LEN) == 0 && *t1 == '\t') {
			const char *t2 = memchr(t1 + 1, '\t', (size_t)(nl - t1 - 1));
			char *pk = NULL, *file = NULL;
			if (t2 && spool__unescape(t1 + 1, (size_t)(t2 - t1 - 1), &pk) == 0 &&
			    spool__unescape(t2 + 1, (size_t)(nl - t2 - 1), &file) == 0 && *pk &&
			    *file && strchr(file, '/') == NULL) {
				*pickup_r = pk;
				*file_r = file;
				ret = 0;
				goto out;
			}
			free(pk);
			free(file);
			break;
		}
		p = nl + 1;
	}
	errno = ENOENT;
out:
	buf_deinit(&text);
	return ret;
}
