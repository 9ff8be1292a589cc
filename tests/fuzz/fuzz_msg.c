/*
 * Purpose: libFuzzer target for common/msg.c. Runs msg_scan on arbitrary
 * bytes, complete and as a prefix, with small limits taken from the input,
 * and msg_parse_address_list, msg_parse_date and msg_msgid_valid on the same
 * bytes, and the whole-content checks (msgbody.h) fed in two chunks split at
 * an input-chosen point; asserts the msg.h invariants: skips sorted,
 * disjoint, merged, within [0, header_end]; renames sorted, disjoint from the
 * skips, their values inside their fields; every address passes
 * msg_addr_valid and holds no CR, LF or NUL; the recipient limit holds; a
 * parsed date lies in years 1900-9999 and survives msg_format_date; msgbody's
 * verdict does not depend on the split and equals the plain model's
 * (tests/fuzz/msgbody_ref.h); one-line reasons. ASan checks that
 * everything is freed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/msg.h"
#include "common/msgbody.h"
#include "tests/fuzz/msgbody_ref.h"

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

/* The body checks give the same verdict whether fed whole or in two chunks. */
static void check_body(const char *data, size_t len, const struct msg_info *info, bool stuffed)
{
	struct msgbody a, b;
	struct buf ra = BUF_INIT, rb = BUF_INIT;
	size_t split = len ? (unsigned char)data[len - 1] % (len + 1) : 0;

	msgbody_init(&a, info, stuffed);
	msgbody_feed(&a, data, len);
	msgbody_init(&b, info, stuffed);
	msgbody_feed(&b, data, split);
	msgbody_feed(&b, data + split, len - split);
	int r1 = msgbody_finish(&a, &ra), r2 = msgbody_finish(&b, &rb);
	if (r1 != r2 || a.dot_off != b.dot_off || a.eightbit != b.eightbit ||
	    (r1 != 0 && strcmp(ra.data, rb.data) != 0))
		abort();
	if (r1 != 0)
		check_reason(&ra);
	if (a.dot_off >= 0 && ((uint64_t)a.dot_off < info->header_end || (size_t)a.dot_off >= len ||
			       data[a.dot_off] != '.'))
		abort();
	/* The same results as the plain model, which skips no line. */
	struct msgbody_ref m;
	msgbody_reference(data, len, info->header_end, info->mime_boundary, stuffed, &m);
	if (a.nul_at != m.nul_at || a.eightbit != m.eightbit || a.dot_off != m.dot_off ||
	    a.dot_premature != m.dot_premature || a.mime_closed != m.mime_closed ||
	    (a.dot_off >= 0 && a.dot_line != m.dot_line))
		abort();
	buf_deinit(&ra);
	buf_deinit(&rb);
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
	prev_end = 0;
	for (size_t i = 0; i < info.n_renames; i++) {
		const struct msg_range *r = &info.renames[i].field, *v = &info.renames[i].value;
		if (r->len == 0 || r->off < prev_end || r->off + r->len > info.header_end ||
		    v->off <= r->off || v->off + v->len > r->off + r->len)
			abort();
		for (size_t k = 0; k < info.n_skips; k++)
			if (r->off < info.skips[k].off + info.skips[k].len &&
			    info.skips[k].off < r->off + r->len)
				abort();
		prev_end = r->off + r->len;
	}
	if (strlen(info.mime_boundary) > MSG_MAX_BOUNDARY)
		abort();
	if (at_eof)
		check_body(data, len, &info, opts->max_recipients & 1);
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
	struct msg_scan_opts opts = {.max_header_size = size ? 64 + (size_t)data[0] * 16 : 64,
				     .max_recipients = size > 1 ? data[1] % 8 : 3,
				     .exact_local_part = size > 2 && (data[2] & 1)};

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

	int64_t t;
	if (msg_parse_date(in, size, &t) == 0) {
		/* 1900-01-01 minus the widest zone, 9999-12-31 plus it */
		if (t < INT64_C(-2208988800) - 100 * 3600 || t > INT64_C(253402300799) + 100 * 3600)
			abort();
		if (t >= 0 && t <= INT64_C(253402300799)) {
			struct buf b = BUF_INIT;
			int64_t back;
			msg_format_date(t, &b);
			if (msg_parse_date(b.data, b.len, &back) != 0 || back != t)
				abort();
			buf_deinit(&b);
		}
	}
	(void)msg_msgid_valid(in, size);
	return 0;
}
