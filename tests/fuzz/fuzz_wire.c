/*
 * Purpose: libFuzzer target for the wire filter (common/wire.h).
 * Input layout, all derived deterministically from the fuzz bytes:
 *   byte 0: bit 0 = input_dot_stuffed, bits 1-3 = number of edits (0-7);
 *   per edit: offset delta from the previous edit's end, skip, insert length
 *     (one byte each), then the insert text;
 *   then a count of chunk sizes (0-7) and the sizes (one byte each, 0 = an
 *     empty feed), used cyclically; the rest is the message body.
 * Checks: the wire.h invariants on the output, chunked output == one-shot
 * output, and both equal a simple whole-buffer reference model (so
 * un-stuffing and unfolding the output gives back the normalised input).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/wire.h"

#define MAX_EDITS 8

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "fuzz_wire: %s:%d: %s\n", __FILE__, __LINE__, #cond);      \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

struct stats {
	uint64_t stray_cr, lines_folded, eightbit;
};

/* The wire.h invariants. */
static void check_wire(const char *p, size_t n)
{
	if (n == 3) {
		CHECK(memcmp(p, ".\r\n", 3) == 0);
		return;
	}
	CHECK(n >= 5 && memcmp(p + n - 5, "\r\n.\r\n", 5) == 0);
	size_t line = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\r') {
			CHECK(i + 1 < n && p[i + 1] == '\n');
		} else if (p[i] == '\n') {
			CHECK(i > 0 && p[i - 1] == '\r');
			size_t len = i - 1 - line;
			CHECK(len <= WIRE_MAX_LINE);
			if (i + 1 < n && len > 0 && p[line] == '.')
				CHECK(len >= 2 && p[line + 1] == '.');
			line = i + 1;
		}
	}
	CHECK(memmem(p, n, "\r\n.\r\n", 5) == p + n - 5);
}

/* Reference: one line at a time over the whole logical stream. */
static void ref_line(const char *l, size_t n, bool terminated, struct buf *out, struct stats *st)
{
	if (n == 0) {
		if (terminated)
			buf_append(out, "\r\n", 2);
		return;
	}
	size_t col = 0;
	if (l[0] == '.') {
		buf_putc(out, '.');
		col = 1;
	}
	for (size_t i = 0; i < n; i++) {
		if (col == WIRE_MAX_LINE) {
			buf_append(out, "\r\n ", 3);
			col = 1;
			st->lines_folded++;
		}
		buf_putc(out, l[i]);
		col++;
		st->eightbit += (unsigned char)l[i] >= 0x80;
	}
	buf_append(out, "\r\n", 2);
}

static void reference(const char *body, size_t len, const struct wire_edit *e, size_t n_e,
		      bool stuffed, struct buf *out, struct stats *st)
{
	/* Build the logical stream, remembering which bytes came from input. */
	struct buf lb = BUF_INIT, org = BUF_INIT, line = BUF_INIT;
	size_t pos = 0;
	for (size_t k = 0; k < n_e; k++) {
		size_t off = e[k].offset < len ? (size_t)e[k].offset : len;
		CHECK(off >= pos);
		buf_append(&lb, body + pos, off - pos);
		for (size_t i = pos; i < off; i++)
			buf_putc(&org, 1);
		buf_append(&lb, e[k].insert, e[k].insert_len);
		for (size_t i = 0; i < e[k].insert_len; i++)
			buf_putc(&org, 0);
		pos = e[k].offset + e[k].skip < len ? (size_t)(e[k].offset + e[k].skip) : len;
	}
	buf_append(&lb, body + pos, len - pos);
	for (size_t i = pos; i < len; i++)
		buf_putc(&org, 1);

	memset(st, 0, sizeof(*st));
	size_t i = 0, n = lb.len;
	const char *s = lb.data;
	while (i < n) {
		bool terminated = false;
		buf_clear(&line);
		if (stuffed && s[i] == '.' && org.data[i])
			i++;
		while (i < n) {
			if (s[i] == '\n') {
				i++;
				terminated = true;
				break;
			}
			if (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n') {
				i += 2;
				terminated = true;
				break;
			}
			if (s[i] == '\r') {
				buf_putc(&line, ' ');
				st->stray_cr++;
			} else {
				buf_putc(&line, s[i]);
			}
			i++;
		}
		ref_line(line.data, line.len, terminated, out, st);
	}
	buf_append(out, ".\r\n", 3);
	buf_deinit(&lb);
	buf_deinit(&org);
	buf_deinit(&line);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wire_edit edits[MAX_EDITS];
	size_t n_e = 0, p = 0;
	if (size < 1)
		return 0;
	bool stuffed = data[0] & 1;
	size_t want_e = (data[0] >> 1) & 7;
	p = 1;
	uint64_t end = 0;
	while (n_e < want_e && p + 3 <= size) {
		size_t ins_len = data[p + 2] % 48;
		if (p + 3 + ins_len > size)
			break;
		edits[n_e].offset = end + data[p];
		edits[n_e].skip = data[p + 1] % 64;
		edits[n_e].insert = ins_len ? (const char *)data + p + 3 : NULL;
		edits[n_e].insert_len = ins_len;
		end = edits[n_e].offset + edits[n_e].skip;
		n_e++;
		p += 3 + ins_len;
	}
	size_t n_chunks = 0;
	const uint8_t *chunks = NULL;
	if (p < size) {
		n_chunks = data[p] % 8;
		p++;
		if (n_chunks > size - p)
			n_chunks = size - p;
		chunks = data + p;
		p += n_chunks;
	}
	const char *body = (const char *)data + p;
	size_t len = size - p;

	struct buf one = BUF_INIT, chunked = BUF_INIT, ref = BUF_INIT;
	struct wire_filter f1, f2;
	wire_filter_init(&f1, edits, n_e, stuffed);
	wire_filter_feed(&f1, body, len, &one);
	wire_filter_finish(&f1, &one);
	check_wire(one.data, one.len);

	wire_filter_init(&f2, edits, n_e, stuffed);
	size_t off = 0, c = 0, empty_run = 0;
	while (off < len) {
		size_t sz = n_chunks ? chunks[c++ % n_chunks] : 1;
		if (sz == 0 && ++empty_run > n_chunks)
			sz = 1; /* all sizes zero: make progress */
		if (sz > 0)
			empty_run = 0;
		if (sz > len - off)
			sz = len - off;
		wire_filter_feed(&f2, body + off, sz, &chunked);
		off += sz;
	}
	wire_filter_finish(&f2, &chunked);
	CHECK(chunked.len == one.len && memcmp(chunked.data, one.data, one.len) == 0);
	CHECK(f1.stray_cr == f2.stray_cr && f1.lines_folded == f2.lines_folded &&
	      f1.eightbit == f2.eightbit);

	struct stats st;
	reference(body, len, edits, n_e, stuffed, &ref, &st);
	CHECK(ref.len == one.len && memcmp(ref.data, one.data, one.len) == 0);
	CHECK(st.stray_cr == f1.stray_cr && st.lines_folded == f1.lines_folded &&
	      st.eightbit == f1.eightbit);

	buf_deinit(&one);
	buf_deinit(&chunked);
	buf_deinit(&ref);
	return 0;
}
