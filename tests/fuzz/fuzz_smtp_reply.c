/*
 * Purpose: libFuzzer target for common/smtp_reply. The first input byte picks
 * how the rest is cut into chunks (sizes drawn from a generator seeded by the
 * data); the rest is what a hostile server sends. Checks the reply invariants,
 * that chunking never changes the outcome (compared with a one-shot parse), and
 * that a reset parser carries on after an error. Summary and EHLO keyword
 * parsing run on every reply.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/smtp_reply.h"

#define CHECK(x)                                                                                   \
	do {                                                                                       \
		if (!(x))                                                                          \
			abort();                                                                   \
	} while (0)

static void check_reply(const struct smtp_reply *r, struct buf *log)
{
	CHECK(r->code >= 200 && r->code <= 599);
	CHECK(r->text != NULL);
	CHECK(strchr(r->text, '\r') == NULL);
	CHECK(r->n_lines >= 1 && r->n_lines <= SMTP_REPLY_MAX_LINES);
	CHECK(r->enh_class == 0 || r->enh_class == r->code / 100);

	struct buf s = BUF_INIT;
	smtp_reply_summary(r, &s);
	for (size_t i = 0; i < s.len; i++)
		CHECK((unsigned char)s.data[i] >= 0x20 && s.data[i] != 0x7f);
	buf_deinit(&s);

	struct smtp_caps caps;
	smtp_caps_parse(r, &caps);
	CHECK(caps.size_present || caps.size == 0);

	buf_printf(log, "%d %d.%d.%d %zu ", r->code, r->enh_class, r->enh_subject, r->enh_detail,
		   r->n_lines);
	buf_puts(log, r->text);
	buf_putc(log, '\0');
}

/* xorshift32: chunk sizes that depend only on the input. */
static uint32_t next(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

/*
 * Feeds data and records every reply in log. With chunked, pieces of random
 * size (up to max_chunk) are fed; otherwise all at once. Stops at the first
 * error and returns its offset-independent message (NULL when none).
 */
static const char *feed(const uint8_t *data, size_t len, bool chunked, uint32_t seed,
			size_t max_chunk, struct buf *log, bool *pending_r, size_t *err_off_r)
{
	struct smtp_reply_parser p;
	const char *error = NULL;
	size_t off = 0;
	uint32_t st = seed | 1;

	smtp_reply_parser_init(&p);
	while (off < len) {
		size_t end = chunked ? off + 1 + next(&st) % max_chunk : len;
		if (end > len)
			end = len;
		while (off < end) {
			struct smtp_reply r;
			const char *err = NULL;
			size_t used = SIZE_MAX;
			int rc = smtp_reply_parse(&p, (const char *)data + off, end - off, &used,
						  &r, &err);
			CHECK(used <= end - off);
			off += used;
			if (rc == 1) {
				CHECK(used > 0);
				check_reply(&r, log);
				smtp_reply_deinit(&r);
			} else if (rc == 0) {
				CHECK(off == end);
			} else {
				CHECK(rc == -1 && err != NULL);
				/* sticky until reset */
				CHECK(smtp_reply_parse(&p, "250 ok\r\n", 8, &used, &r, &err) == -1);
				error = err;
				goto out;
			}
		}
	}
out:
	*pending_r = smtp_reply_parser_pending(&p);
	*err_off_r = off;
	smtp_reply_parser_deinit(&p);
	return error;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t max_chunks[] = {1, 2, 3, 7, 16, 64, 512, 8192};
	if (size < 1)
		return 0;
	uint8_t ctl = data[0];
	data++;
	size--;

	struct buf whole = BUF_INIT, pieces = BUF_INIT;
	bool pend_w, pend_p;
	size_t off_w, off_p;
	const char *err_w = feed(data, size, false, 0, 1, &whole, &pend_w, &off_w);
	const char *err_p = feed(data, size, true, ctl * 2654435761u,
				 max_chunks[ctl % (sizeof(max_chunks) / sizeof(max_chunks[0]))],
				 &pieces, &pend_p, &off_p);

	/* Splitting never changes what is parsed. */
	CHECK(whole.len == pieces.len &&
	      (whole.len == 0 || memcmp(whole.data, pieces.data, whole.len) == 0));
	CHECK((err_w == NULL) == (err_p == NULL));
	if (err_w != NULL)
		CHECK(strcmp(err_w, err_p) == 0);
	else
		CHECK(pend_w == pend_p);

	/* After an error, a reset parser goes on with the bytes that were not used. */
	if (err_w != NULL && off_w < size) {
		struct buf again = BUF_INIT;
		bool pend;
		size_t off;
		feed(data + off_w, size - off_w, true, ctl, 64, &again, &pend, &off);
		buf_deinit(&again);
	}
	buf_deinit(&whole);
	buf_deinit(&pieces);
	return 0;
}
