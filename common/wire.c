/*
 * Purpose: turn message bytes from disk into SMTP DATA content (wire.h).
 * Owns: nothing; the edit list belongs to the caller.
 * Invariants: the filter is a function of the "logical stream", i.e. the input
 * with skip ranges removed and insert texts spliced in. All state carried
 * between chunks is O(1) (pending_cr, at_line_start, out_col, edit cursor), so
 * output does not depend on how the input is split. Every line end emitted is
 * CRLF; every content byte goes through put_run(), which stuffs a leading '.'
 * and folds at WIRE_MAX_LINE, or lies in a verbatim run (verbatim(): the
 * octets the filter would copy unchanged, which holds no '.' at a line start,
 * no line over WIRE_MAX_LINE and only CRLF line ends), so no output line can
 * be ".\r\n" before the end. The verbatim runs are the fast path (most of a
 * message is plain CRLF text); tests/fuzz/wire_ref.h is the model they are
 * checked against.
 */
#include "common/wire.h"

#include "common/bytemask.h"

#include <string.h>

void wire_filter_init(struct wire_filter *f, const struct wire_edit *edits, size_t n_edits,
		      bool input_dot_stuffed)
{
	memset(f, 0, sizeof(*f));
	f->edits = edits;
	f->n_edits = n_edits;
	f->input_dot_stuffed = input_dot_stuffed;
	f->at_line_start = true;
}

/* Octets >= 0x80 in p[0..n), eight at a time. */
static uint64_t count_8bit(const char *p, size_t n)
{
	uint64_t c = 0;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t w;
		memcpy(&w, p + i, 8);
		/* One bit per high octet, summed by a multiply (no popcnt call). */
		uint64_t hi = (w >> 7) & 0x0101010101010101ULL;
		c += (hi * 0x0101010101010101ULL) >> 56;
	}
	for (; i < n; i++)
		c += (unsigned char)p[i] >= 0x80;
	return c;
}

/* Length of the run of octets before the first CR or LF (memchr is
 * vectorised; a byte loop here was a fifth of the daemon's CPU on 1 MiB
 * messages). */
static size_t run_len(const char *p, size_t n)
{
	const char *lf = memchr(p, '\n', n);
	size_t lim = lf ? (size_t)(lf - p) : n;
	const char *cr = memchr(p, '\r', lim);
	return cr ? (size_t)(cr - p) : lim;
}

/*
 * The verbatim rule, one octet at a time: the longest prefix of p[0..n)
 * that put_text() emits unchanged, when *col octets are on the output line
 * and no CR is pending. It stops before a '.' at a line start (stuffed, or
 * un-stuffed), before an octet that would be folded, before a CR whose LF is
 * not the next octet within p (a stray CR, or one whose LF may be in the next
 * chunk) and before a bare LF (it gains a CR). A CRLF is taken whole.
 * Scanning stops once lim octets are taken (a CRLF may take lim + 1).
 */
static size_t verbatim_bytes(const char *p, size_t n, size_t lim, size_t *col, uint64_t *eightbit)
{
	size_t i = 0, c = *col;
	while (i < lim && i < n) {
		unsigned char ch = (unsigned char)p[i];
		if (ch == '\r') {
			if (i + 1 >= n || p[i + 1] != '\n')
				break;
			i += 2;
			c = 0;
			continue;
		}
		if (ch == '\n' || (c == 0 && ch == '.') || c >= WIRE_MAX_LINE)
			break;
		*eightbit += ch >= 0x80;
		c++;
		i++;
	}
	*col = c;
	return i;
}

/*
 * verbatim_bytes(), a block of 64 octets at a time: text in CRLF lines costs
 * a few instructions per block instead of per octet. From bit masks of the
 * block's CR, LF, '.' and high octets: an LF not after a CR, a CR not before
 * an LF (one in the last lane is judged by the octet after the block, and
 * then both are taken) and a '.' at a line start are stops. The first line
 * must fit (lines starting inside a block are shorter than it), else the
 * block is left to verbatim_bytes(), which stops where a fold goes.
 */
static size_t verbatim(const char *p, size_t n, size_t *col_r, uint64_t *eightbit)
{
	const size_t B = BYTEMASK_BLOCK;
	size_t i = 0, col = *col_r;
	while (n - i > B) {
		struct bytemask_block blk;
		bytemask_load(&blk, p + i);
		uint64_t cr = bytemask_eq(&blk, '\r'), lf = bytemask_eq(&blk, '\n');
		uint64_t ev = cr | lf;
		size_t first = ev ? bytemask_first(ev) : B;
		if (col + first > WIRE_MAX_LINE) {
			size_t k = verbatim_bytes(p + i, n - i, B, &col, eightbit);
			i += k;
			if (k < B)
				goto done; /* the stop is in this block */
			continue;
		}
		uint64_t starts = lf << 1 | (col == 0);
		uint64_t bad = (lf & ~(cr << 1)) | (cr & ~(lf >> 1) & ~(1ULL << (B - 1)));
		if (starts)
			bad |= bytemask_eq(&blk, '.') & starts;
		bool tail_crlf = cr >> (B - 1);
		if (tail_crlf && p[i + B] != '\n')
			bad |= 1ULL << (B - 1);
		uint64_t hi = bytemask_8bit(&blk);
		if (bad) {
			/* Take what is before the first bad octet. */
			unsigned s = bytemask_first(bad);
			uint64_t below = (1ULL << s) - 1, evb = ev & below;
			*eightbit += bytemask_count(hi & below);
			col = evb ? s - 1 - bytemask_last(evb) : col + s;
			i += s;
			goto done;
		}
		if (hi)
			*eightbit += bytemask_count(hi);
		/* The octets after the last CR or LF (a CR in the last lane has
		 * its LF taken with it: none). */
		col = ev ? B - 1 - bytemask_last(ev) : col + B;
		i += tail_crlf ? B + 1 : B;
	}
	i += verbatim_bytes(p + i, n - i, n - i, &col, eightbit);
done:
	*col_r = col;
	return i;
}

/* Emits n content octets (no CR, no LF): RFC 5321 4.5.2 stuffing of a
 * leading '.', and a CRLF SP fold whenever the line would exceed 998 octets. */
static void put_run(struct wire_filter *f, const char *p, size_t n, struct buf *out)
{
	f->at_line_start = false;
	while (n > 0) {
		if (f->out_col == 0 && p[0] == '.') {
			buf_putc(out, '.');
			f->out_col = 1;
		}
		if (f->out_col >= WIRE_MAX_LINE) {
			buf_append(out, "\r\n ", 3);
			f->out_col = 1;
			f->lines_folded++;
		}
		size_t k = WIRE_MAX_LINE - f->out_col;
		if (k > n)
			k = n;
		f->eightbit += count_8bit(p, k);
		buf_append(out, p, k);
		f->out_col += k;
		p += k;
		n -= k;
	}
}

static void end_line(struct wire_filter *f, struct buf *out)
{
	buf_append(out, "\r\n", 2);
	f->out_col = 0;
	f->at_line_start = true;
}

/* A CR not followed by LF is not a line end anywhere we accept: it becomes a
 * space (Postfix cleanup_replace_stray_cr_lf), so "\r.\r" cannot smuggle. */
static void stray_cr(struct wire_filter *f, struct buf *out)
{
	f->stray_cr++;
	put_run(f, " ", 1, out);
}

/* Takes the verbatim prefix of p[0..n) (no CR pending): the filter state
 * moves over it as if it had been emitted octet by octet. */
static size_t take_verbatim(struct wire_filter *f, const char *p, size_t n)
{
	size_t k = verbatim(p, n, &f->out_col, &f->eightbit);
	if (k > 0)
		f->at_line_start = p[k - 1] == '\n';
	return k;
}

/* Feeds n bytes of the logical stream. Only input bytes are un-stuffed:
 * inserted text is ours and never dot-stuffed. */
static void put_text(struct wire_filter *f, const char *p, size_t n, bool from_input,
		     struct buf *out)
{
	size_t i = 0;

	while (i < n) {
		if (!f->pending_cr) {
			/* Most of a message passes unchanged: copied in one go. */
			size_t k = take_verbatim(f, p + i, n - i);
			buf_append(out, p + i, k);
			i += k;
			if (i == n)
				break;
		}
		char c = p[i];

		if (f->pending_cr) {
			f->pending_cr = false;
			if (c == '\n') {
				end_line(f, out);
				i++;
				continue;
			}
			stray_cr(f, out);
		}
		if (c == '\r') {
			f->pending_cr = true;
			i++;
			continue;
		}
		if (c == '\n') {
			end_line(f, out);
			i++;
			continue;
		}
		if (f->at_line_start && from_input && f->input_dot_stuffed && c == '.') {
			/* Undo the producer's stuffing: "..x" -> ".x", "." -> "". */
			f->at_line_start = false;
			i++;
			continue;
		}
		size_t j = i + 1 + run_len(p + i + 1, n - i - 1);
		put_run(f, p + i, j - i, out);
		i = j;
	}
}

/* Applies every edit due at the current input offset, stopping after one
 * that starts a skip. An edit lying inside an earlier skip range (invalid)
 * is applied where that range ends, so the result is still deterministic. */
static void apply_due_edits(struct wire_filter *f, struct buf *out)
{
	while (f->skipping == 0 && f->next_edit < f->n_edits &&
	       f->edits[f->next_edit].offset <= f->in_off) {
		const struct wire_edit *e = &f->edits[f->next_edit++];
		if (e->insert != NULL && e->insert_len > 0)
			put_text(f, e->insert, e->insert_len, false, out);
		f->skipping = e->skip;
	}
}

void wire_filter_feed(struct wire_filter *f, const char *in, size_t len, struct buf *out)
{
	for (;;) {
		if (f->skipping > 0) {
			size_t n = f->skipping < len ? (size_t)f->skipping : len;
			in += n;
			len -= n;
			f->in_off += n;
			f->skipping -= n;
			if (f->skipping > 0)
				return; /* chunk used up inside a skip range */
		}
		apply_due_edits(f, out);
		if (f->skipping > 0)
			continue;
		if (len == 0)
			return;
		size_t n = len;
		if (f->next_edit < f->n_edits && f->edits[f->next_edit].offset - f->in_off < n)
			n = (size_t)(f->edits[f->next_edit].offset - f->in_off);
		put_text(f, in, n, true, out);
		in += n;
		len -= n;
		f->in_off += n;
	}
}

size_t wire_filter_verbatim(struct wire_filter *f, const char *in, size_t len)
{
	if (f->pending_cr || f->skipping > 0)
		return 0;
	if (f->next_edit < f->n_edits) {
		uint64_t at = f->edits[f->next_edit].offset;
		if (at <= f->in_off)
			return 0; /* an edit is due: only wire_filter_feed applies it */
		if (at - f->in_off < len)
			len = (size_t)(at - f->in_off);
	}
	size_t k = take_verbatim(f, in, len);
	f->in_off += k;
	return k;
}

bool wire_filter_pass(struct wire_filter *f, uint64_t n)
{
	if (f->pending_cr || f->skipping > 0 || !f->at_line_start || f->out_col != 0)
		return false;
	/* An edit at in_off itself has been applied (by the feed that ended
	 * there) unless it is still next. */
	if (f->next_edit < f->n_edits && f->edits[f->next_edit].offset < f->in_off + n)
		return false;
	f->in_off += n;
	return true;
}

void wire_clean_init(struct wire_clean *w, uint64_t from)
{
	memset(w, 0, sizeof(*w));
	w->from = w->to = from;
}

void wire_clean_feed(struct wire_clean *w, const char *p, size_t n)
{
	uint64_t base = w->off;
	w->off += n;
	if (w->done || w->off <= w->from)
		return;
	size_t i = base < w->from ? (size_t)(w->from - base) : 0;
	if (w->pending_cr) {
		w->pending_cr = false;
		if (p[i] != '\n') {
			w->done = true;
			return;
		}
		i++;
		w->col = 0;
		w->to = base + i;
	}
	size_t before = w->col;
	uint64_t eightbit = 0;
	size_t k = verbatim(p + i, n - i, &w->col, &eightbit);
	/* A line end was taken iff the column went back: col octets follow it. */
	if (w->col < before + k)
		w->to = base + i + k - w->col;
	i += k;
	if (i == n)
		return;
	if (i + 1 == n && p[i] == '\r')
		w->pending_cr = true; /* its LF may start the next chunk */
	else
		w->done = true;
}

void wire_filter_finish(struct wire_filter *f, struct buf *out)
{
	/* Edits at (or, defensively, beyond) the end: inserts still happen;
	 * there is nothing left to skip. */
	f->skipping = 0;
	while (f->next_edit < f->n_edits) {
		const struct wire_edit *e = &f->edits[f->next_edit++];
		if (e->insert != NULL && e->insert_len > 0)
			put_text(f, e->insert, e->insert_len, false, out);
	}
	if (f->pending_cr) {
		f->pending_cr = false;
		stray_cr(f, out);
	}
	/* RFC 5321 4.1.1.4: content not ending in CRLF gets one. An empty
	 * message is just the terminator. */
	if (f->out_col > 0)
		end_line(f, out);
	buf_append(out, ".\r\n", 3);
}
