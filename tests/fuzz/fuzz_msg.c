/*
 * Purpose: libFuzzer target for common/msg.c. Runs msg_scan on arbitrary
 * bytes, complete and as a prefix, with small limits taken from the input,
 * and msg_parse_address_list on the same bytes; asserts the msg.h
 * invariants: skips sorted, disjoint, merged, within [0, header_end]; every
 * address passes msg_addr_valid and holds no CR, LF or NUL; the recipient
 * limit holds; one-line reasons. ASan checks that everything is freed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/msg.h"

static void check_addr(const struct msg_addr *a, bool may_be_null)
{
	if (msg_addr_valid(a->addr) != 0 || strpbrk(a->addr, "\r\n") != NULL)
		abort();
	if (!may_be_null && a->addr[0] == '\0')
		abort();
	if (a->params != NULL && (a->params[0] == '\0' || strpbrk(a->params, "\r\n\t") != NULL))
		abort();
}

static void check_reason(const struct buf *reason)
{
	if (reason->data == NULL || reason->len == 0 || strlen(reason->data) != reason->len)
		abort();
	for (size_t i = 0; i < reason->len; i++)
		if ((unsigned char)reason->data[i] < 0x20 || (unsigned char)reason->data[i] >= 0x7f)
			abort();
}

static void scan_once(const char *data, size_t len, bool at_eof, const struct msg_scan_opts *opts)
{
	struct msg_info info;
	struct buf reason = BUF_INIT;

	if (msg_scan(data, len, at_eof, opts, &info, &reason) != 0) {
		check_reason(&reason);
		buf_deinit(&reason);
		return;
	}
	if (reason.len != 0 || info.header_end > len || info.headers_start > info.header_end)
		abort();
	if (opts->max_header_size && info.header_end > opts->max_header_size)
		abort();
	size_t prev_end = 0;
	for (size_t i = 0; i < info.n_skips; i++) {
		const struct msg_range *r = &info.skips[i];
		if (r->len == 0 || (i > 0 && r->off <= prev_end) ||
		    r->off + r->len > info.header_end)
			abort();
		prev_end = r->off + r->len;
	}
	check_addr(&info.sender, true);
	if (info.n_rcpts == 0 || (opts->max_recipients && info.n_rcpts > opts->max_recipients))
		abort();
	for (size_t i = 0; i < info.n_rcpts; i++)
		check_addr(&info.rcpts[i], false);
	msg_info_deinit(&info);
	buf_deinit(&reason);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	/* Small limits so the limit paths are reached; derived from the input so
	 * the fuzzer can steer them. */
	struct msg_scan_opts opts = {size ? 64 + (size_t)data[0] * 16 : 64,
				     size > 1 ? data[1] % 8 : 3};

	scan_once(in, size, true, &opts);
	scan_once(in, size, false, &opts);
	scan_once(in, size / 2, false, &opts);
	opts.max_header_size = 0; /* no limit */
	opts.max_recipients = 0;
	scan_once(in, size, true, &opts);

	struct msg_addr *list = NULL;
	size_t n = 0;
	struct buf reason = BUF_INIT;
	if (msg_parse_address_list(in, size, &list, &n, &reason) != 0)
		check_reason(&reason);
	for (size_t i = 0; i < n; i++) {
		check_addr(&list[i], false);
		free(list[i].addr);
	}
	free(list);
	buf_deinit(&reason);
	return 0;
}
