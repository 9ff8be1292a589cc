/*
 * Purpose: a plain model of the wire filter (common/wire.h), shared by its
 * fuzz target and unit tests: the invariants every output must satisfy
 * (check_wire) and the expected output of a whole input, built one line at a
 * time over the whole logical stream with no state carried between chunks
 * and no fast path (wire_reference). Checks abort() with the failed
 * condition, which libFuzzer and cmocka both report.
 */
#ifndef PICKUPD_TESTS_WIRE_REF_H
#define PICKUPD_TESTS_WIRE_REF_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/wire.h"

#define REF_CHECK(cond)                                                                            \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "wire_ref: %s:%d: %s\n", __FILE__, __LINE__, #cond);       \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

struct wire_ref_stats {
	uint64_t stray_cr, lines_folded, eightbit;
};

/* The wire.h invariants. */
static void wire_ref_check(const char *p, size_t n)
{
	if (n == 3) {
		REF_CHECK(memcmp(p, ".\r\n", 3) == 0);
		return;
	}
	REF_CHECK(n >= 5 && memcmp(p + n - 5, "\r\n.\r\n", 5) == 0);
	size_t line = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\r') {
			REF_CHECK(i + 1 < n && p[i + 1] == '\n');
		} else if (p[i] == '\n') {
			REF_CHECK(i > 0 && p[i - 1] == '\r');
			size_t len = i - 1 - line;
			REF_CHECK(len <= WIRE_MAX_LINE);
			if (i + 1 < n && len > 0 && p[line] == '.')
				REF_CHECK(len >= 2 && p[line + 1] == '.');
			line = i + 1;
		}
	}
	REF_CHECK(memmem(p, n, "\r\n.\r\n", 5) == p + n - 5);
}

/* Reference: one line at a time over the whole logical stream. */
static void wire_ref_line(const char *l, size_t n, bool terminated, struct buf *out,
			  struct wire_ref_stats *st)
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

static void wire_reference(const char *body, size_t len, const struct wire_edit *e, size_t n_e,
			   bool stuffed, struct buf *out, struct wire_ref_stats *st)
{
	/* Build the logical stream, remembering which bytes came from input. */
	struct buf lb = BUF_INIT, org = BUF_INIT, line = BUF_INIT;
	size_t pos = 0;
	for (size_t k = 0; k < n_e; k++) {
		size_t off = e[k].offset < len ? (size_t)e[k].offset : len;
		REF_CHECK(off >= pos);
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
		wire_ref_line(line.data, line.len, terminated, out, st);
	}
	buf_append(out, ".\r\n", 3);
	buf_deinit(&lb);
	buf_deinit(&org);
	buf_deinit(&line);
}

#endif
