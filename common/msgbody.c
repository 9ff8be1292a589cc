/*
 * Purpose: the whole-content checks of a pickup file in one streaming pass
 * (msgbody.h): NUL and 8-bit bytes, lone "." lines of dot-stuffed files, the
 * outermost multipart's close delimiter.
 * Owns: nothing; the state is the caller's struct.
 * Invariants: the state carried between chunks is O(1) (a prefix of the
 * current line no longer than the close delimiter, flags and counters), so
 * the result does not depend on how the content is split, and memory does
 * not grow with the message. Reasons never echo input bytes. Only a line
 * starting with '.' (stuffed files) or '-' (the close delimiter) can change
 * a result, until a "." line is seen: other lines are skipped whole, a block
 * of octets at a time (skip_lines), and only counted.
 */
#include "common/msgbody.h"

#include "common/bytemask.h"

#include <stdio.h>
#include <string.h>

void msgbody_init(struct msgbody *b, const struct msg_info *info, bool dot_stuffed)
{
	memset(b, 0, sizeof(*b));
	b->body_start = info->header_end;
	b->dot_stuffed = dot_stuffed;
	if (info->mime_boundary[0] != '\0')
		b->delim_len =
		    (size_t)snprintf(b->delim, sizeof(b->delim), "--%s--", info->mime_boundary);
	b->mime_closed = b->delim_len == 0;
	b->nul_at = -1;
	b->dot_off = -1;
	b->line = 1;
}

/* Adds k bytes (no LF) to the current line: the first ones to the prefix;
 * past it, only whether they could still be transport padding (SP, HT, and
 * the CR of a CRLF) matters. */
static void add_bytes(struct msgbody *b, const char *s, size_t k)
{
	size_t cap = b->delim_len ? b->delim_len : 1, i = 0;

	if (k == 0)
		return;
	for (; i < k && b->line_len < cap; i++)
		b->prefix[b->line_len++] = s[i];
	b->line_len += k - i;
	if (b->delim_len > 0 && !b->mime_closed) {
		for (; i < k && !b->tail_bad; i++) {
			if (b->tail_cr || (s[i] != ' ' && s[i] != '\t' && s[i] != '\r'))
				b->tail_bad = true;
			b->tail_cr = s[i] == '\r';
		}
	}
	b->last_cr = s[k - 1] == '\r';
}

/* The current line is complete (eol: it ended with LF; else the file ended). */
static void end_line(struct msgbody *b, bool eol)
{
	size_t content = b->line_len - (eol && b->last_cr ? 1 : 0);

	if (b->line_start >= b->body_start) {
		if (b->dot_stuffed && b->dot_off < 0 && content == 1 && b->prefix[0] == '.') {
			b->dot_off = (int64_t)b->line_start;
			b->dot_line = b->line;
		} else if (b->dot_off >= 0 && content > 0) {
			b->dot_premature = true;
		}
		if (!b->mime_closed && content >= b->delim_len && !b->tail_bad &&
		    memcmp(b->prefix, b->delim, b->delim_len) == 0)
			b->mime_closed = true;
	}
	b->line++;
	b->line_len = 0;
	b->tail_bad = b->tail_cr = b->last_cr = false;
}

/* Whether p[0..n) holds an octet >= 0x80: OR-ed a block at a time and
 * tested once per block (a byte loop that stopped at the first one cost more
 * than all the rest of the scan). */
static bool has_8bit(const char *p, size_t n)
{
	size_t i = 0;
	for (; n - i >= 64; i += 64) {
		uint64_t w[8], acc = 0;
		memcpy(w, p + i, sizeof(w));
		for (int k = 0; k < 8; k++)
			acc |= w[k];
		if (acc & 0x8080808080808080ULL)
			return true;
	}
	for (; i < n; i++)
		if ((unsigned char)p[i] >= 0x80)
			return true;
	return false;
}

/*
 * From p[0], the start of a line whose first octet is neither c1 nor c2
 * (so the line cannot matter), skips whole lines, a block at a time: returns
 * the offset of the first line start whose first octet is c1 or c2, or n
 * (then a line starts at n if p[n-1] is an LF, else the last line goes on
 * into the next chunk). *lfs_r: the LFs before the returned offset.
 */
static size_t skip_lines(const char *p, size_t n, char c1, char c2, uint64_t *lfs_r)
{
	uint64_t lfs = 0, after_lf = 0; /* 1: the octet before the block is an LF */
	size_t i = 0;
	for (; n - i >= BYTEMASK_BLOCK; i += BYTEMASK_BLOCK) {
		struct bytemask_block blk;
		bytemask_load(&blk, p + i);
		uint64_t lf = bytemask_eq(&blk, '\n');
		uint64_t hit =
		    (lf << 1 | after_lf) & (bytemask_eq(&blk, c1) | bytemask_eq(&blk, c2));
		if (hit) {
			unsigned s = bytemask_first(hit);
			*lfs_r = lfs + bytemask_count(lf & ((1ULL << s) - 1));
			return i + s;
		}
		lfs += bytemask_count(lf);
		after_lf = lf >> (BYTEMASK_BLOCK - 1);
	}
	for (; i < n; i++) {
		if (after_lf && (p[i] == c1 || p[i] == c2))
			break;
		after_lf = p[i] == '\n';
		lfs += after_lf;
	}
	*lfs_r = lfs;
	return i;
}

void msgbody_feed(struct msgbody *b, const char *p, size_t n)
{
	uint64_t base = b->off;

	if (b->nul_at < 0) {
		const char *z = memchr(p, '\0', n);
		if (z != NULL)
			b->nul_at = (int64_t)(base + (uint64_t)(z - p));
	}
	if (!b->eightbit)
		b->eightbit = has_8bit(p, n);
	/* The line checks: only lines starting with '.' (stuffed) or '-' (the
	 * close delimiter) can matter, until a "." line is seen (then any
	 * non-empty line after it does). Other lines are skipped whole. */
	for (size_t i = 0; i < n && (b->dot_stuffed || !b->mime_closed);) {
		if (b->in_dull) {
			const char *nl = memchr(p + i, '\n', n - i);
			if (nl == NULL)
				break;
			b->in_dull = false;
			b->line++;
			i = (size_t)(nl - p) + 1;
			b->line_start = base + i;
			continue;
		}
		char c1 = b->dot_stuffed ? '.' : '-', c2 = b->mime_closed ? c1 : '-';
		if (b->line_len == 0 && b->dot_off < 0 && p[i] != c1 && p[i] != c2) {
			uint64_t lfs;
			size_t j = i + skip_lines(p + i, n - i, c1, c2, &lfs);
			b->line += lfs;
			if (p[j - 1] == '\n')
				b->line_start = base + j;
			else
				b->in_dull = true; /* j == n */
			i = j;
			continue;
		}
		const char *nl = memchr(p + i, '\n', n - i);
		size_t end = nl != NULL ? (size_t)(nl - p) : n;
		add_bytes(b, p + i, end - i);
		if (nl == NULL)
			break;
		end_line(b, true);
		i = end + 1;
		b->line_start = base + i;
	}
	b->off = base + n;
}

int msgbody_finish(struct msgbody *b, struct buf *reason)
{
	if (b->line_len > 0)
		end_line(b, false);
	if (b->nul_at >= 0) {
		buf_printf(reason, "NUL byte at offset %lld", (long long)b->nul_at);
		return -1;
	}
	if (b->dot_premature) {
		buf_printf(reason, "premature end-of-data marker ('.' line) at line %llu",
			   (unsigned long long)b->dot_line);
		return -1;
	}
	if (!b->mime_closed) {
		buf_puts(reason, "truncated MIME (no closing boundary)");
		return -1;
	}
	return 0;
}
