/*
 * Purpose: libFuzzer target for the wire filter (common/wire.h).
 * Input layout, all derived deterministically from the fuzz bytes:
 *   byte 0: bit 0 = input_dot_stuffed, bits 1-3 = number of edits (0-7),
 *     bit 4 = the chunked run passes each chunk's wire_filter_verbatim
 *     prefix through itself, as smtpc does, and feeds the rest;
 *   per edit: offset delta from the previous edit's end, skip, insert length
 *     (one byte each), then the insert text;
 *   then a count of chunk sizes (0-7) and the sizes (one byte each, 0 = an
 *     empty feed), used cyclically; the rest is the message body.
 *   bits 5-7 of byte 0: the line (its start: after that many LFs) from
 *     which wire_clean looks for a run to pass unread (as smtpc does with a
 *     large message's, found by ingest).
 * Checks: the wire.h invariants on the output, chunked output (with or
 * without the verbatim pass-through) == one-shot output, and both equal a
 * simple whole-buffer reference model (tests/fuzz/wire_ref.h: un-stuffing
 * and unfolding the output gives back the normalised input); wire_clean's
 * run is the same however the input is split, and sending it raw
 * (wire_filter_pass) gives the one-shot output too.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/wire.h"
#include "tests/fuzz/wire_ref.h"

#define MAX_EDITS 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wire_edit edits[MAX_EDITS];
	size_t n_e = 0, p = 0;
	if (size < 1)
		return 0;
	bool stuffed = data[0] & 1, pass = data[0] & 0x10;
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
	wire_ref_check(one.data, one.len);

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
		size_t k = pass ? wire_filter_verbatim(&f2, body + off, sz) : 0;
		buf_append(&chunked, body + off, k);
		wire_filter_feed(&f2, body + off + k, sz - k, &chunked);
		off += sz;
	}
	wire_filter_finish(&f2, &chunked);
	REF_CHECK(chunked.len == one.len && memcmp(chunked.data, one.data, one.len) == 0);
	REF_CHECK(f1.stray_cr == f2.stray_cr && f1.lines_folded == f2.lines_folded &&
		  f1.eightbit == f2.eightbit);

	/* The run wire_clean finds from a line start, fed in the chunks above
	 * and one-shot; then sent raw between filtered parts. */
	uint64_t from = 0;
	for (unsigned lfs = data[0] >> 5; lfs > 0 && from < len; lfs--) {
		const char *nl = memchr(body + from, '\n', len - from);
		from = nl ? (uint64_t)(nl - body) + 1 : len;
	}
	struct wire_clean w1, w2;
	wire_clean_init(&w1, from);
	wire_clean_feed(&w1, body, len);
	wire_clean_init(&w2, from);
	for (size_t o = 0, ci = 0; o < len;) {
		size_t sz = n_chunks && chunks[ci % n_chunks] ? chunks[ci % n_chunks] : 1;
		ci++;
		if (sz > len - o)
			sz = len - o;
		wire_clean_feed(&w2, body + o, sz);
		o += sz;
	}
	REF_CHECK(w1.from == from && w1.to >= from && w1.to <= len && w1.to == w2.to);
	REF_CHECK(w1.to == from || (body[w1.to - 1] == '\n' && body[w1.to - 2] == '\r'));
	struct buf raw = BUF_INIT;
	struct wire_filter f3;
	wire_filter_init(&f3, edits, n_e, stuffed);
	wire_filter_feed(&f3, body, from, &raw);
	if (w1.to > from && wire_filter_pass(&f3, w1.to - from)) {
		buf_append(&raw, body + from, w1.to - from);
		wire_filter_feed(&f3, body + w1.to, len - w1.to, &raw);
	} else {
		wire_filter_feed(&f3, body + from, len - from, &raw);
	}
	wire_filter_finish(&f3, &raw);
	REF_CHECK(raw.len == one.len && memcmp(raw.data, one.data, one.len) == 0);
	buf_deinit(&raw);

	struct wire_ref_stats st;
	wire_reference(body, len, edits, n_e, stuffed, &ref, &st);
	REF_CHECK(ref.len == one.len && memcmp(ref.data, one.data, one.len) == 0);
	REF_CHECK(st.stray_cr == f1.stray_cr && st.lines_folded == f1.lines_folded &&
		  st.eightbit == f1.eightbit);

	buf_deinit(&one);
	buf_deinit(&chunked);
	buf_deinit(&ref);
	return 0;
}
