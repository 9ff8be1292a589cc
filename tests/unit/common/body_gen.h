/*
 * Purpose: random message-like content for the differential tests of the
 * body scanners (test_wire.c, test_msgbody.c): lines of random length and
 * ending, biased towards what the scanners treat specially ('.' and "--b--"
 * lines, bare CR and LF, lines near the 998-octet fold, 8-bit and NUL
 * octets) and long plain stretches (their block-at-a-time fast paths).
 * Deterministic: a xorshift generator seeded by the test.
 */
#ifndef PICKUPD_TESTS_BODY_GEN_H
#define PICKUPD_TESTS_BODY_GEN_H

#include <stdint.h>
#include <string.h>

#include "common/buf.h"

static uint64_t gen_next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static size_t gen_below(uint64_t *s, size_t n)
{
	return n ? (size_t)(gen_next(s) % n) : 0;
}

static void gen_text(uint64_t *s, struct buf *out, size_t len)
{
	for (size_t i = 0; i < len; i++)
		buf_putc(out, gen_below(s, 40) == 0 ? (char)0xc3 : (char)('a' + gen_below(s, 26)));
}

/* Appends about `target` octets; boundary names the "--b--" lines. */
static void gen_body(uint64_t *s, struct buf *out, size_t target, const char *boundary)
{
	static const char nasty[] = "\r\n.- \t\x80"
				    "ab";
	size_t stop = out->len + target;
	while (out->len < stop) {
		switch (gen_below(s, 16)) {
		case 0:
			buf_putc(out, '.');
			break;
		case 1:
			buf_puts(out, "..");
			gen_text(s, out, gen_below(s, 10));
			break;
		case 2:
			buf_printf(out, "--%s--", boundary);
			for (size_t k = gen_below(s, 3); k > 0; k--)
				buf_putc(out, " \t\rx"[gen_below(s, 4)]);
			break;
		case 3:
			buf_printf(out, "--%s", boundary);
			break;
		case 4:
			gen_text(s, out, 960 + gen_below(s, 80));
			break;
		case 5:
			gen_text(s, out, gen_below(s, 3000));
			break;
		case 6:
			for (size_t k = gen_below(s, 80); k > 0; k--)
				buf_putc(out, nasty[gen_below(s, sizeof(nasty) - 1)]);
			break;
		case 7:
			if (gen_below(s, 8) == 0)
				buf_append(out, "a\0b", 3);
			break;
		default:
			gen_text(s, out, gen_below(s, 100));
			break;
		}
		size_t e = gen_below(s, 20);
		buf_puts(out, e < 13   ? "\r\n"
			      : e < 17 ? "\n"
			      : e < 18 ? "\r"
			      : e < 19 ? "\r\r\n"
				       : "");
	}
}

#endif
