/*
 * Purpose: unit tests of the whole-content checks (common/msgbody.h). Each
 * case is a file (scanned with msg_scan for its header end and boundary),
 * fed whole, split in two at every position and byte by byte: all must give
 * the same verdict, reason and trailing "." offset.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/msgbody.h"
#include "tests/fuzz/msgbody_ref.h"
#include "tests/unit/common/body_gen.h"

#define HDR	"From: a@example.com\r\nTo: b@example.com\r\n"
#define MIME(b) HDR "Content-Type: multipart/mixed; boundary=\"" b "\"\r\n\r\n"

struct bcase {
	const char *name;
	const char *in;
	bool stuffed;
	const char *err; /* the reason; NULL = accepted */
	int64_t dot_off; /* accepted: offset of the trailing "." line, or -1 */
	bool eightbit;
};

static const struct bcase cases[] = {
    {"plain", HDR "\r\nbody\r\n", false, NULL, -1, false},
    {"eightbit", HDR "\r\nb\xc3\xa9\r\n", false, NULL, -1, true},
    {"nul in body", HDR "\r\nab\0c\r\n", false, "NUL byte at offset 44", -1, false},
    /* dot_stuffed: a lone "." line */
    {"raw dot line is content", HDR "\r\na\r\n.\r\nb\r\n", false, NULL, -1, false},
    {"stuffed trailing dot", HDR "\r\na\r\n.\r\n", true, NULL, 45, false},
    {"stuffed trailing dot no eol", HDR "\r\na\r\n.", true, NULL, 45, false},
    {"stuffed trailing dot lf", HDR "\r\na\n.\n", true, NULL, 44, false},
    {"stuffed dot then empty lines", HDR "\r\na\r\n.\r\n\r\n\n", true, NULL, 45, false},
    {"stuffed dot first body line", HDR "\r\n.\r\n", true, NULL, 42, false},
    {"stuffed premature", HDR "\r\na\r\n.\r\nafter\r\n", true,
     "premature end-of-data marker ('.' line) at line 5", -1, false},
    {"stuffed two dots", HDR "\r\na\r\n.\r\n.\r\n", true,
     "premature end-of-data marker ('.' line) at line 5", -1, false},
    {"stuffed dot then space", HDR "\r\n.\r\n \r\n", true,
     "premature end-of-data marker ('.' line) at line 4", -1, false},
    {"stuffed doubled dot is content", HDR "\r\n..\r\nx\r\n", true, NULL, -1, false},
    {"stuffed dot cr is content", HDR "\r\n.\rx\r\n.\r", true, NULL, -1, false},
    {"stuffed dot space is content", HDR "\r\n. \r\nx\r\n", true, NULL, -1, false},
    /* MIME: the outermost close delimiter */
    {"mime closed", MIME("b1") "pre\r\n--b1\r\n\r\nx\r\n--b1--\r\nepilogue\r\n", false, NULL, -1,
     false},
    {"mime closed no eol", MIME("b1") "--b1\r\n\r\nx\r\n--b1--", false, NULL, -1, false},
    {"mime closed padding", MIME("b1") "--b1\r\n\r\nx\r\n--b1-- \t\r\n", false, NULL, -1, false},
    {"mime closed lf", MIME("b1") "--b1\n\nx\n--b1--\n", false, NULL, -1, false},
    {"mime truncated", MIME("b1") "--b1\r\n\r\nx\r\n", false,
     "truncated MIME (no closing boundary)", -1, false},
    {"mime only open delimiters", MIME("b1") "--b1\r\n\r\nx\r\n--b1\r\n\r\ny\r\n", false,
     "truncated MIME (no closing boundary)", -1, false},
    {"mime delimiter not at line start", MIME("b1") "--b1\r\n\r\nx --b1--\r\n", false,
     "truncated MIME (no closing boundary)", -1, false},
    {"mime delimiter with junk after", MIME("b1") "--b1\r\n\r\nx\r\n--b1--x\r\n", false,
     "truncated MIME (no closing boundary)", -1, false},
    {"mime delimiter cr inside padding", MIME("b1") "--b1\r\n\r\nx\r\n--b1--\r \r\n", false,
     "truncated MIME (no closing boundary)", -1, false},
    {"mime boundary case matters", MIME("b1") "--b1\r\n\r\nx\r\n--B1--\r\n", false,
     "truncated MIME (no closing boundary)", -1, false},
    {"mime headers only", HDR "Content-Type: multipart/mixed; boundary=b1\r\n", false,
     "truncated MIME (no closing boundary)", -1, false},
    {"mime inner unclosed outer closed",
     MIME("out") "--out\r\nContent-Type: multipart/alternative; boundary=in\r\n\r\n"
		 "--in\r\n\r\nx\r\n--out--\r\n",
     false, NULL, -1, false},
    {"mime inner closed outer not",
     MIME("out") "--out\r\nContent-Type: multipart/alternative; boundary=in\r\n\r\n"
		 "--in\r\n\r\nx\r\n--in--\r\n",
     false, "truncated MIME (no closing boundary)", -1, false},
    {"mime stuffed closed then dot", MIME("b") "--b\r\n\r\nx\r\n--b--\r\n.\r\n", true, NULL, 104,
     false},
    {"nul reported first", MIME("b") "--b\r\n\0\r\n", true, "NUL byte at offset 92", -1, false},
};

struct result {
	int r;
	struct buf reason;
	int64_t dot_off;
	bool eightbit;
};

/* Feeds in[0..len) as: [0, split), then chunks of `chunk` bytes (0 = the rest). */
static void run(const struct bcase *c, size_t len, size_t split, size_t chunk, struct result *res)
{
	struct msg_scan_opts opts = {.max_header_size = 65536, .max_recipients = 100};
	struct msg_info info;
	struct buf why = BUF_INIT;
	struct msgbody b;

	if (msg_scan(c->in, len, true, &opts, &info, &why) != 0)
		fail_msg("%s: msg_scan: %s", c->name, why.data);
	msgbody_init(&b, &info, c->stuffed);
	msgbody_feed(&b, c->in, split);
	for (size_t off = split; off < len;) {
		size_t n = chunk == 0 || chunk > len - off ? len - off : chunk;
		msgbody_feed(&b, c->in + off, n);
		off += n;
	}
	buf_init(&res->reason);
	buf_puts(&res->reason, "");
	res->r = msgbody_finish(&b, &res->reason);
	res->dot_off = b.dot_off;
	res->eightbit = b.eightbit;
	msg_info_deinit(&info);
	buf_deinit(&why);
}

static void msgbody_table(void **state)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct bcase *c = &cases[i];
		/* strlen stops at an embedded NUL: count up to the last byte written. */
		size_t len = strlen(c->in);
		if (strstr(c->name, "nul") != NULL)
			len += 1 + strlen(c->in + len + 1);
		for (size_t split = 0; split <= len; split++) {
			for (size_t chunk = 0; chunk <= 1; chunk++) {
				struct result r;
				run(c, len, split, chunk, &r);
				if (c->err == NULL && r.r != 0)
					fail_msg("%s (split %zu): refused: %s", c->name, split,
						 r.reason.data);
				if (c->err != NULL && (r.r != -1 || strcmp(r.reason.data, c->err)))
					fail_msg("%s (split %zu): got '%s'", c->name, split,
						 r.reason.data);
				if (c->err == NULL && r.dot_off != c->dot_off)
					fail_msg("%s (split %zu): dot_off %lld", c->name, split,
						 (long long)r.dot_off);
				if (c->err == NULL && r.eightbit != c->eightbit)
					fail_msg("%s: eightbit %d", c->name, r.eightbit);
				buf_deinit(&r.reason);
			}
		}
	}
}

/* Memory does not grow with the content: a 3 MB body in 64 KiB chunks with
 * one line longer than a chunk, the close delimiter in the last bytes. */
static void msgbody_large(void **state)
{
	static const char head[] = MIME("=_big") "--=_big\r\n\r\n";
	struct msg_scan_opts opts = {.max_header_size = 65536, .max_recipients = 100};
	struct msg_info info;
	struct buf why = BUF_INIT, reason = BUF_INIT;
	struct msgbody b;
	char chunk[65536];

	assert_int_equal(msg_scan(head, sizeof(head) - 1, false, &opts, &info, &why), 0);
	for (int closed = 0; closed <= 1; closed++) {
		msgbody_init(&b, &info, false);
		msgbody_feed(&b, head, sizeof(head) - 1);
		memset(chunk, 'y', sizeof(chunk));
		for (int i = 0; i < 48; i++) {
			chunk[sizeof(chunk) - 1] = i % 3 == 0 ? 'y' : '\n';
			msgbody_feed(&b, chunk, sizeof(chunk));
		}
		if (closed)
			msgbody_feed(&b, "\r\n--=_big--\r\n", 13);
		buf_clear(&reason);
		assert_int_equal(msgbody_finish(&b, &reason), closed ? 0 : -1);
	}
	msg_info_deinit(&info);
	buf_deinit(&why);
	buf_deinit(&reason);
}

/* Differential: random message-like content (lines skipped whole by the
 * fast path next to ones that matter), fed whole and in random chunks, gives
 * the reference model's results (tests/fuzz/msgbody_ref.h: every line
 * looked at, no skipping). */
static void msgbody_random_differential(void **state)
{
	static const char *const boundaries[] = {"", "b", "=_Part_0.1"};
	uint64_t seed = 0x2545f4914f6cdd1dULL;
	for (int iter = 0; iter < 600; iter++) {
		const char *bnd = boundaries[gen_below(&seed, 3)];
		struct buf in = BUF_INIT;
		gen_body(&seed, &in, gen_below(&seed, 4) == 0 ? 40000 : gen_below(&seed, 3000),
			 bnd[0] ? bnd : "b");
		struct msg_info info;
		memset(&info, 0, sizeof(info));
		info.header_end = gen_below(&seed, in.len / 8 + 1);
		strcpy(info.mime_boundary, bnd);
		bool stuffed = gen_below(&seed, 2);
		struct msgbody_ref want;
		msgbody_reference(in.data, in.len, info.header_end, bnd, stuffed, &want);

		for (int how = 0; how < 2; how++) {
			struct msgbody b;
			struct buf reason = BUF_INIT;
			msgbody_init(&b, &info, stuffed);
			for (size_t off = 0; off < in.len;) {
				size_t n =
				    how == 0
					? in.len
					: 1 + gen_below(&seed, gen_below(&seed, 2) ? 40 : 9000);
				if (n > in.len - off)
					n = in.len - off;
				msgbody_feed(&b, in.data + off, n);
				off += n;
			}
			int r = msgbody_finish(&b, &reason);
			if (b.nul_at != want.nul_at || b.eightbit != want.eightbit ||
			    b.dot_off != want.dot_off || b.dot_premature != want.dot_premature ||
			    (b.dot_off >= 0 && b.dot_line != want.dot_line) ||
			    b.mime_closed != want.mime_closed)
				fail_msg("iteration %d (%s): nul %lld/%lld 8bit %d/%d dot "
					 "%lld/%lld line "
					 "%llu/%llu premature %d/%d mime %d/%d",
					 iter, how ? "chunks" : "whole", (long long)b.nul_at,
					 (long long)want.nul_at, b.eightbit, want.eightbit,
					 (long long)b.dot_off, (long long)want.dot_off,
					 (unsigned long long)b.dot_line,
					 (unsigned long long)want.dot_line, b.dot_premature,
					 want.dot_premature, b.mime_closed, want.mime_closed);
			assert_int_equal(
			    r,
			    want.nul_at >= 0 || want.dot_premature || !want.mime_closed ? -1 : 0);
			buf_deinit(&reason);
		}
		buf_deinit(&in);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(msgbody_table),
	    cmocka_unit_test(msgbody_large),
	    cmocka_unit_test(msgbody_random_differential),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
