/*
 * Purpose: the escaping of outside text described in esc.h.
 * Invariants: the output is valid UTF-8 without control characters, and
 * undoing each "\xHH" gives back the input exactly.
 */
#include "common/esc.h"

#include <stdbool.h>
#include <string.h>

size_t esc_utf8_len(const unsigned char *s, size_t n)
{
	unsigned c = s[0];
	size_t len;
	unsigned min;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		len = 2, min = 0x80;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3, min = 0x800;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4, min = 0x10000;
	else
		return 0;
	if (len > n)
		return 0;
	unsigned v = c & (0x7f >> len);
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		v = v << 6 | (s[i] & 0x3f);
	}
	if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
		return 0;
	return len;
}

/* Code points that are valid UTF-8 yet steer a terminal or a reader: C1
 * controls (U+0080..U+009F; some terminals act on them), line and paragraph
 * separators, and the bidirectional overrides that make a name read as
 * another ("Trojan Source"). */
static int misleading(unsigned v)
{
	return (v >= 0x80 && v <= 0x9f) || v == 0x2028 || v == 0x2029 ||
	       (v >= 0x200e && v <= 0x200f) || (v >= 0x202a && v <= 0x202e) ||
	       (v >= 0x2066 && v <= 0x2069);
}

static unsigned decode(const unsigned char *s, size_t len)
{
	if (len == 1)
		return s[0];
	unsigned v = s[0] & (0x7f >> len);
	for (size_t i = 1; i < len; i++)
		v = v << 6 | (s[i] & 0x3f);
	return v;
}

/* The escaped form of the character at s into out[16]; returns its length
 * and sets *used_r to the input bytes it stands for. */
static size_t esc_next(const unsigned char *s, size_t n, char out[16], size_t *used_r)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t len = esc_utf8_len(s, n);
	bool raw =
	    len > 0 && !misleading(decode(s, len)) && s[0] >= 0x20 && s[0] != 0x7f && s[0] != '\\';
	if (raw) {
		memcpy(out, s, len);
		*used_r = len;
		return len;
	}
	if (len == 0)
		len = 1; /* an invalid sequence: one byte at a time */
	for (size_t i = 0; i < len; i++) {
		out[4 * i] = '\\';
		out[4 * i + 1] = 'x';
		out[4 * i + 2] = hex[s[i] >> 4];
		out[4 * i + 3] = hex[s[i] & 15];
	}
	*used_r = len;
	return 4 * len;
}

void esc_append(struct buf *out, const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	char tmp[16];
	size_t used;
	while (len > 0) {
		buf_append(out, tmp, esc_next(p, len, tmp, &used));
		p += used;
		len -= used;
	}
}

size_t esc_copy(char *dst, size_t cap, const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	char tmp[16];
	size_t used, o = 0;
	if (cap == 0)
		return 0;
	while (len > 0) {
		size_t m = esc_next(p, len, tmp, &used);
		if (o + m >= cap)
			break;
		memcpy(dst + o, tmp, m);
		o += m;
		p += used;
		len -= used;
	}
	dst[o] = '\0';
	return o;
}
