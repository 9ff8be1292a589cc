/*
 * Purpose: libFuzzer target for spool/envelope.c. Parses arbitrary bytes as
 * an envelope file; a refusal must come with a one-line reason; an accepted
 * envelope must format to text that parses again, and formatting is then
 * stable: format(parse(format(parse(x)))) == format(parse(x)). The text
 * holds no control character but the line ends, and with any one byte of it
 * changed it is refused (the version 2 checksum). Seeds hold both versions
 * (version 1 is still read). ASan checks that everything is freed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "spool/spool.h"

static void check_reason(const struct buf *reason)
{
	if (reason->data == NULL || reason->len == 0 || strlen(reason->data) != reason->len)
		abort();
	for (size_t i = 0; i < reason->len; i++)
		if ((unsigned char)reason->data[i] < 0x20 || (unsigned char)reason->data[i] == 0x7f)
			abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct spool_env e, e2;
	struct buf reason = BUF_INIT, t1 = BUF_INIT, t2 = BUF_INIT;

	if (spool_env_parse((const char *)data, size, &e, &reason) < 0) {
		check_reason(&reason);
		buf_deinit(&reason);
		return 0;
	}
	if (!spool_id_valid(e.id))
		abort();
	spool_env_format(&e, &t1);
	for (size_t i = 0; i < t1.len; i++) {
		unsigned char c = (unsigned char)t1.data[i];
		if ((c < 0x20 && c != '\n') || c == 0x7f)
			abort();
	}
	if (spool_env_parse(t1.data, t1.len, &e2, &reason) < 0)
		abort();
	spool_env_format(&e2, &t2);
	if (t1.len != t2.len || memcmp(t1.data, t2.data, t1.len) != 0)
		abort();
	/* One changed byte, anywhere the input chooses, must not parse. */
	size_t at = size % t2.len;
	t2.data[at] ^= (char)(1u << (size % 8));
	struct spool_env e3;
	if (spool_env_parse(t2.data, t2.len, &e3, NULL) == 0)
		abort();
	if (e2.n_rcpts != e.n_rcpts || e2.n_edits != e.n_edits || e2.attempts != e.attempts ||
	    e2.next_ms != e.next_ms || strcmp(e2.id, e.id) != 0)
		abort();
	spool_env_deinit(&e);
	spool_env_deinit(&e2);
	buf_deinit(&reason);
	buf_deinit(&t1);
	buf_deinit(&t2);
	return 0;
}
