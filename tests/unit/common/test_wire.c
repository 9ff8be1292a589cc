/*
 * Purpose: unit tests for the wire filter (common/wire.h).
 * Every table case is checked one-shot, split in two at every position,
 * byte by byte and in 3-byte chunks: all must give the same expected bytes,
 * and every output must satisfy the DATA invariants (wire_ref_check() in
 * tests/fuzz/wire_ref.h). Random inputs are checked against that file's
 * reference model, which has no fast path.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/wire.h"
#include "tests/fuzz/wire_ref.h"
#include "tests/unit/common/body_gen.h"

#define NOSTAT UINT64_MAX

struct split_run {
	struct buf out;
	struct wire_filter f;
};

/* Feeds in[0..len) as chunks: first `split` bytes, then pieces of `chunk`
 * bytes (0 = the rest at once). */
static void run_split(struct split_run *r, const char *in, size_t len, const struct wire_edit *e,
		      size_t n_e, bool stuffed, size_t split, size_t chunk)
{
	buf_init(&r->out);
	wire_filter_init(&r->f, e, n_e, stuffed);
	if (split > len)
		split = len;
	wire_filter_feed(&r->f, in, split, &r->out);
	size_t off = split;
	while (off < len) {
		size_t n = chunk == 0 || chunk > len - off ? len - off : chunk;
		wire_filter_feed(&r->f, in + off, n, &r->out);
		off += n;
	}
	wire_filter_finish(&r->f, &r->out);
}

struct wcase {
	const char *name;
	const char *in;
	bool stuffed;
	const struct wire_edit *edits;
	size_t n_edits;
	const char *want;
	uint64_t stray_cr, folded, eightbit;
};

static void check_case(const struct wcase *c)
{
	size_t len = strlen(c->in);
	size_t want_len = strlen(c->want);
	struct split_run r;

	/* split == len is the one-shot run. */
	for (size_t split = 0; split <= len; split++) {
		for (size_t chunk = 0; chunk <= 3; chunk += 1) {
			if (chunk == 2)
				continue;
			run_split(&r, c->in, len, c->edits, c->n_edits, c->stuffed, split, chunk);
			if (r.out.len != want_len || memcmp(r.out.data, c->want, want_len) != 0)
				fail_msg("%s: split %zu chunk %zu: got \"%s\"", c->name, split,
					 chunk, r.out.data);
			wire_ref_check(r.out.data, r.out.len);
			if (c->stray_cr != NOSTAT)
				assert_int_equal(r.f.stray_cr, c->stray_cr);
			if (c->folded != NOSTAT)
				assert_int_equal(r.f.lines_folded, c->folded);
			if (c->eightbit != NOSTAT)
				assert_int_equal(r.f.eightbit, c->eightbit);
			buf_deinit(&r.out);
		}
	}
}

static void check_cases(const struct wcase *cases, size_t n)
{
	for (size_t i = 0; i < n; i++)
		check_case(&cases[i]);
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

static void wire_line_endings(void **state)
{
	static const struct wcase cases[] = {
	    {"crlf", "a\r\nb\r\n", false, NULL, 0, "a\r\nb\r\n.\r\n", 0, 0, 0},
	    {"lf", "a\nb\n", false, NULL, 0, "a\r\nb\r\n.\r\n", 0, 0, 0},
	    {"mixed", "a\r\nb\nc\r\n\n", false, NULL, 0, "a\r\nb\r\nc\r\n\r\n.\r\n", 0, 0, 0},
	    {"lone cr", "a\rb\r\n", false, NULL, 0, "a b\r\n.\r\n", 1, 0, 0},
	    {"cr cr lf", "a\r\r\nb", false, NULL, 0, "a \r\nb\r\n.\r\n", 1, 0, 0},
	    {"cr at end", "a\r", false, NULL, 0, "a \r\n.\r\n", 1, 0, 0},
	    {"only cr", "\r", false, NULL, 0, " \r\n.\r\n", 1, 0, 0},
	    {"no trailing newline", "abc", false, NULL, 0, "abc\r\n.\r\n", 0, 0, 0},
	    {"empty", "", false, NULL, 0, ".\r\n", 0, 0, 0},
	    {"empty line", "\n", false, NULL, 0, "\r\n.\r\n", 0, 0, 0},
	    {"eightbit", "\xc3\xa9t\xc3\xa9\n", false, NULL, 0, "\xc3\xa9t\xc3\xa9\r\n.\r\n", 0, 0,
	     4},
	};
	check_cases(cases, N(cases));
}

/* SMTP smuggling (SEC Consult 2023, lettre RUSTSEC-2026-0561, Dovecot
 * CVE-2026-33604): no non-standard end-of-data may survive, and a dot after a
 * bare LF or CR is still stuffed or no longer at a line start. */
static void wire_smuggling(void **state)
{
	static const struct wcase cases[] = {
	    {"lf.lf", "x\n.\nMAIL FROM:<a@b>\n", false, NULL, 0,
	     "x\r\n..\r\nMAIL FROM:<a@b>\r\n.\r\n", 0, 0, 0},
	    {"lf.crlf", "x\n.\r\nRSET\r\n", false, NULL, 0, "x\r\n..\r\nRSET\r\n.\r\n", 0, 0, 0},
	    {"crlf.cr", "x\r\n.\rRSET\r\n", false, NULL, 0, "x\r\n.. RSET\r\n.\r\n", 1, 0, 0},
	    {"cr.crlf", "x\r.\r\nRSET", false, NULL, 0, "x .\r\nRSET\r\n.\r\n", 1, 0, 0},
	    {"cr.cr", "x\r.\rRSET\r\n", false, NULL, 0, "x . RSET\r\n.\r\n", 2, 0, 0},
	    {"crlf.crcrlf", "x\r\n.\r\r\nQUIT\r\n", false, NULL, 0, "x\r\n.. \r\nQUIT\r\n.\r\n", 1,
	     0, 0},
	    {"lf.cr", "x\n.\ry", false, NULL, 0, "x\r\n.. y\r\n.\r\n", 1, 0, 0},
	    {"lf at start", "\n.\n", false, NULL, 0, "\r\n..\r\n.\r\n", 0, 0, 0},
	    {"dot first", ".\r\n", false, NULL, 0, "..\r\n.\r\n", 0, 0, 0},
	    {"dot last", "x\r\n.", false, NULL, 0, "x\r\n..\r\n.\r\n", 0, 0, 0},
	    {"terminator inside", "a\r\n.\r\nMAIL FROM:<e@v>\r\n", false, NULL, 0,
	     "a\r\n..\r\nMAIL FROM:<e@v>\r\n.\r\n", 0, 0, 0},
	    {"stuffed mode lf.lf", "x\n..\n.\n", true, NULL, 0, "x\r\n..\r\n\r\n.\r\n", 0, 0, 0},
	};
	check_cases(cases, N(cases));
}

static void wire_dot_stuffing(void **state)
{
	static const struct wcase cases[] = {
	    {"leading dots", ".a\r\n..b\r\nc.\r\n", false, NULL, 0, "..a\r\n...b\r\nc.\r\n.\r\n", 0,
	     0, 0},
	    /* .NET Framework / IIS pickup files are already stuffed. */
	    {"stuffed input", "..x\r\n.y\r\n.\r\nz\r\n", true, NULL, 0,
	     "..x\r\ny\r\n\r\nz\r\n.\r\n", 0, 0, 0},
	    {"stuffed triple", "...x\n", true, NULL, 0, "...x\r\n.\r\n", 0, 0, 0},
	    {"stuffed only dot", ".", true, NULL, 0, ".\r\n", 0, 0, 0},
	    {"stuffed dot mid-line", "a.b\r\n", true, NULL, 0, "a.b\r\n.\r\n", 0, 0, 0},
	    {"stuffed after lone cr", "a\r.b\r\n", true, NULL, 0, "a .b\r\n.\r\n", 1, 0, 0},
	};
	check_cases(cases, N(cases));
}

/* RFC 5321 4.5.3.1.6 / RFC 5322 2.1.1: 998 octets + CRLF; longer lines
 * are broken with CRLF SP as Postfix does. */
static void wire_folding(void **state)
{
	char *l998 = xmalloc(998 + 2 + 1);
	memset(l998, 'a', 998);
	strcpy(l998 + 998, "\r\n");
	char *want998 = xmalloc(998 + 5 + 1);
	memcpy(want998, l998, 1000);
	strcpy(want998 + 1000, ".\r\n");

	char *l999 = xmalloc(999 + 1 + 1);
	memset(l999, 'b', 999);
	strcpy(l999 + 999, "\n");
	char *want999 = xmalloc(999 + 8 + 1);
	memset(want999, 'b', 998);
	strcpy(want999 + 998, "\r\n b\r\n.\r\n");

	/* '.' + 997 octets: the stuffing dot makes 999. */
	char *ldot = xstrdup(l998);
	ldot[0] = '.';
	char *wantdot = xmalloc(1 + 998 + 8 + 1);
	wantdot[0] = '.';
	wantdot[1] = '.';
	memset(wantdot + 2, 'a', 996);
	strcpy(wantdot + 998, "\r\n a\r\n.\r\n");

	struct wcase cases[] = {
	    {"998", l998, false, NULL, 0, want998, 0, 0, 0},
	    {"999", l999, false, NULL, 0, want999, 0, 1, 0},
	    {"dot 998", ldot, false, NULL, 0, wantdot, 0, 1, 0},
	};
	check_cases(cases, N(cases));
	free(l998);
	free(want998);
	free(l999);
	free(want999);
	free(ldot);
	free(wantdot);
}

/* A 3000-octet line: every piece <= 998, and removing the folds gives the
 * line back. Checked one-shot and at every split point. */
static void wire_fold_long_line(void **state)
{
	size_t n = 3000;
	char *in = xmalloc(n + 2);
	for (size_t i = 0; i < n; i++)
		in[i] = (char)('a' + i % 26);
	memcpy(in + n, "\r\n", 2);

	struct split_run one;
	run_split(&one, in, n + 2, NULL, 0, false, n + 2, 0);
	wire_ref_check(one.out.data, one.out.len);
	assert_int_equal(one.f.lines_folded, 3); /* 998 + 997 + 997 + 8 */

	struct buf unfolded = BUF_INIT;
	for (size_t i = 0; i < one.out.len; i++) {
		if (i + 2 < one.out.len && memcmp(one.out.data + i, "\r\n ", 3) == 0)
			i += 2;
		else
			buf_putc(&unfolded, one.out.data[i]);
	}
	assert_int_equal(unfolded.len, n + 5);
	assert_memory_equal(unfolded.data, in, n + 2);
	buf_deinit(&unfolded);

	for (size_t split = 0; split < n + 2; split += 7) {
		struct split_run r;
		run_split(&r, in, n + 2, NULL, 0, false, split, 0);
		assert_int_equal(r.out.len, one.out.len);
		assert_memory_equal(r.out.data, one.out.data, one.out.len);
		buf_deinit(&r.out);
	}
	buf_deinit(&one.out);
	free(in);
}

#define INS(off, s, sk)                                                                            \
	{                                                                                          \
		(off), (s), sizeof(s) - 1, (sk)                                                    \
	}
#define SKIP(off, sk)                                                                              \
	{                                                                                          \
		(off), NULL, 0, (sk)                                                               \
	}

static void wire_edits(void **state)
{
	/* The envelope block is 15 + 17 = 32 octets. */
	static const char xs[] = "X-Sender: a@b\r\nX-Receiver: c@d\r\nFrom: a@b\r\n\r\nbody\r\n";
	static const struct wire_edit e_xs[] = {SKIP(0, 32)};

	static const char bcc[] = "From: a@b\r\nBcc: secret@x,\r\n y@z\r\nSubject: s\r\n\r\nb\r\n";
	static const struct wire_edit e_bcc[] = {SKIP(11, 22)};

	static const char hdr[] = "From: a@b\nSubject: s\n\nbody\n";
	static const struct wire_edit e_hdr[] = {
	    INS(0, "Received: from x by y; Mon, 1 Jan 2024 00:00:00 +0000\r\n", 0),
	    INS(21, "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n", 0),
	    INS(21, "Message-ID: <1@y>\r\n", 0),
	};

	static const struct wire_edit e_end[] = {INS(3, "b\r\n", 0)};
	static const struct wire_edit e_lfins[] = {INS(0, "A: 1\nB: .2\n.C\n", 0)};
	/* A CR before a skipped range pairs with the LF after it. */
	static const struct wire_edit e_crskip[] = {SKIP(2, 2)};
	/* An insert starting with LF completes a CR pending at the end. */
	static const struct wire_edit e_crins[] = {INS(2, "\nz\r\n", 0)};
	/* Skip then un-stuff: after the skipped line we are at a line start. */
	static const struct wire_edit e_stf[] = {SKIP(0, 8)};
	/* Inserted text is never un-stuffed. */
	static const struct wire_edit e_stfins[] = {INS(0, ".R: 1\r\n", 0)};
	/* Skip past the end and an edit beyond it: the insert still happens. */
	static const struct wire_edit e_past[] = {SKIP(2, 100), INS(200, "T: 1\r\n", 0)};
	/* Everything skipped. */
	static const struct wire_edit e_all[] = {SKIP(0, 3)};
	/* Adjacent skips and an insert at a skip end. */
	static const struct wire_edit e_adj[] = {SKIP(0, 2), INS(2, "I\r\n", 2), SKIP(4, 2)};

	static const struct wcase cases[] = {
	    {"x-sender block", xs, false, e_xs, N(e_xs), "From: a@b\r\n\r\nbody\r\n.\r\n", 0, 0, 0},
	    {"bcc folded", bcc, false, e_bcc, N(e_bcc), "From: a@b\r\nSubject: s\r\n\r\nb\r\n.\r\n",
	     0, 0, 0},
	    {"received date msgid", hdr, false, e_hdr, N(e_hdr),
	     "Received: from x by y; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
	     "From: a@b\r\nSubject: s\r\n"
	     "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <1@y>\r\n"
	     "\r\nbody\r\n.\r\n",
	     0, 0, 0},
	    {"insert at end", "a\r\n", false, e_end, N(e_end), "a\r\nb\r\n.\r\n", 0, 0, 0},
	    {"insert normalised", "x\n", false, e_lfins, N(e_lfins),
	     "A: 1\r\nB: .2\r\n..C\r\nx\r\n.\r\n", 0, 0, 0},
	    {"cr skip lf", "a\rXX\nb", false, e_crskip, N(e_crskip), "a\r\nb\r\n.\r\n", 0, 0, 0},
	    {"cr then insert lf", "a\r", false, e_crins, N(e_crins), "a\r\nz\r\n.\r\n", 0, 0, 0},
	    {"skip then unstuff", "X: 1234\n..a\n.b\n", true, e_stf, N(e_stf), "..a\r\nb\r\n.\r\n",
	     0, 0, 0},
	    {"insert not unstuffed", "..a\r\n", true, e_stfins, N(e_stfins),
	     "..R: 1\r\n..a\r\n.\r\n", 0, 0, 0},
	    {"skip past end", "abcdef", false, e_past, N(e_past), "abT: 1\r\n.\r\n", 0, 0, 0},
	    {"all skipped", "a\r\n", false, e_all, N(e_all), ".\r\n", 0, 0, 0},
	    {"adjacent", "aabbccdd\n", false, e_adj, N(e_adj), "I\r\ndd\r\n.\r\n", 0, 0, 0},
	};
	check_cases(cases, N(cases));
}

/* Chunking does not matter on a mixed input with edits; checked against the
 * one-shot output for every pair of split points (three chunks). */
static void wire_split_equivalence(void **state)
{
	static const char in[] = "X-Sender: a\r\n.To: b\n\r\r\nBcc: c\r\n..x\r.\n\xff\xfe y\r";
	static const struct wire_edit e[] = {
	    INS(0, "R: 1\r\n", 13),
	    INS(22, ".\n", 0),
	    SKIP(25, 9),
	    INS(sizeof(in) - 1, "\nEnd\r", 0),
	};
	size_t len = sizeof(in) - 1;

	for (int stuffed = 0; stuffed <= 1; stuffed++) {
		struct split_run one;
		run_split(&one, in, len, e, N(e), stuffed, len, 0);
		wire_ref_check(one.out.data, one.out.len);
		for (size_t a = 0; a <= len; a++) {
			for (size_t b = a; b <= len; b++) {
				struct buf out = BUF_INIT;
				struct wire_filter f;
				wire_filter_init(&f, e, N(e), stuffed);
				wire_filter_feed(&f, in, a, &out);
				wire_filter_feed(&f, in + a, b - a, &out);
				wire_filter_feed(&f, in + b, len - b, &out);
				wire_filter_finish(&f, &out);
				assert_int_equal(out.len, one.out.len);
				assert_memory_equal(out.data, one.out.data, out.len);
				assert_int_equal(f.stray_cr, one.f.stray_cr);
				assert_int_equal(f.eightbit, one.f.eightbit);
				buf_deinit(&out);
			}
		}
		buf_deinit(&one.out);
	}
}

/* Differential: random message-like inputs with random edits, fed one-shot
 * and in random chunks (some chunks passed through wire_filter_verbatim
 * first, as smtpc does), must all give the reference model's bytes and
 * statistics (tests/fuzz/wire_ref.h, which has no fast path). */
static void wire_random_differential(void **state)
{
	static const char *const inserts[] = {
	    "Received: by x\r\n", "A: .b\n", ".\r\n", "\r", "\nX", NULL};
	uint64_t seed = 0x9e3779b97f4a7c15ULL;
	for (int iter = 0; iter < 400; iter++) {
		struct buf in = BUF_INIT, ref = BUF_INIT, one = BUF_INIT, chunked = BUF_INIT;
		gen_body(&seed, &in, gen_below(&seed, 4) == 0 ? 40000 : gen_below(&seed, 3000),
			 "b");
		bool stuffed = gen_below(&seed, 3) == 0;
		struct wire_edit e[4];
		size_t n_e = gen_below(&seed, 5);
		uint64_t at = 0;
		for (size_t k = 0; k < n_e; k++) {
			const char *ins = inserts[gen_below(&seed, 6)];
			e[k].offset = at + gen_below(&seed, in.len / 4 + 2);
			e[k].skip = gen_below(&seed, 3) == 0 ? gen_below(&seed, 40) : 0;
			e[k].insert = ins;
			e[k].insert_len = ins ? strlen(ins) : 0;
			at = e[k].offset + e[k].skip;
		}
		struct wire_ref_stats st;
		wire_reference(in.data, in.len, e, n_e, stuffed, &ref, &st);

		struct wire_filter f1, f2;
		wire_filter_init(&f1, e, n_e, stuffed);
		wire_filter_feed(&f1, in.data, in.len, &one);
		wire_filter_finish(&f1, &one);
		wire_filter_init(&f2, e, n_e, stuffed);
		for (size_t off = 0; off < in.len;) {
			size_t n = 1 + gen_below(&seed, gen_below(&seed, 2) ? 64 : 20000);
			if (n > in.len - off)
				n = in.len - off;
			size_t k =
			    gen_below(&seed, 2) ? wire_filter_verbatim(&f2, in.data + off, n) : 0;
			assert_true(k <= n);
			assert_memory_equal(in.data + off, ref.data + chunked.len, k);
			buf_append(&chunked, in.data + off, k);
			wire_filter_feed(&f2, in.data + off + k, n - k, &chunked);
			off += n;
		}
		wire_filter_finish(&f2, &chunked);
		wire_ref_check(one.data, one.len);
		if (one.len != ref.len || memcmp(one.data, ref.data, ref.len) != 0)
			fail_msg("iteration %d: one-shot output differs from the reference", iter);
		if (chunked.len != ref.len || memcmp(chunked.data, ref.data, ref.len) != 0)
			fail_msg("iteration %d: chunked output differs from the reference", iter);
		assert_int_equal(f1.stray_cr, st.stray_cr);
		assert_int_equal(f1.lines_folded, st.lines_folded);
		assert_int_equal(f1.eightbit, st.eightbit);
		assert_int_equal(f2.stray_cr, st.stray_cr);
		assert_int_equal(f2.lines_folded, st.lines_folded);
		assert_int_equal(f2.eightbit, st.eightbit);
		buf_deinit(&in);
		buf_deinit(&ref);
		buf_deinit(&one);
		buf_deinit(&chunked);
	}
}

/* The verbatim prefix: plain CRLF text passes whole; it stops before what
 * the filter changes, and where an edit is due. */
static void wire_verbatim_prefix(void **state)
{
	static const struct {
		const char *in;
		size_t col; /* octets already on the output line */
		size_t want;
	} cases[] = {
	    {"ab\r\ncd\r\n", 0, 8},
	    {"ab\r\ncd", 0, 6},			  /* a partial line passes too */
	    {"ab\r\n.cd\r\n", 0, 4},		  /* a dot to stuff */
	    {".ab\r\n", 3, 5},			  /* not at a line start */
	    {"ab\ncd\r\n", 0, 2},		  /* a bare LF */
	    {"ab\rcd\r\n", 0, 2},		  /* a stray CR */
	    {"ab\r", 0, 2},			  /* its LF may be in the next chunk */
	    {"abcdefghij", WIRE_MAX_LINE - 4, 4}, /* a fold */
	    {"ab\r\nxyz", WIRE_MAX_LINE - 2, 7},  /* the line ends in time */
	};
	for (size_t i = 0; i < N(cases); i++) {
		/* Also after a long stretch that the block scan takes (when the
		 * case starts a line). */
		for (size_t pad = 0; pad <= (cases[i].col ? 0 : 20); pad += 10) {
			struct buf in = BUF_INIT;
			for (size_t k = 0; k < pad; k++)
				buf_puts(&in, "01234567\r\n");
			size_t lead = in.len;
			buf_puts(&in, cases[i].in);
			struct wire_filter f;
			wire_filter_init(&f, NULL, 0, false);
			f.out_col = cases[i].col;
			f.at_line_start = f.out_col == 0;
			size_t k = wire_filter_verbatim(&f, in.data, in.len);
			if (k != lead + cases[i].want)
				fail_msg("case %zu pad %zu: took %zu", i, pad, k);
			buf_deinit(&in);
		}
	}
	/* An edit due now: nothing; one ahead: up to it. */
	static const struct wire_edit e[] = {INS(4, "X: 1\r\n", 0)};
	struct wire_filter f;
	wire_filter_init(&f, e, 1, false);
	assert_int_equal(wire_filter_verbatim(&f, "ab\r\ncd\r\n", 8), 4);
	assert_int_equal(wire_filter_verbatim(&f, "cd\r\n", 4), 0);
}

/* wire_clean: the run of whole verbatim lines from a line start, the same
 * whether fed whole, byte by byte or split anywhere in two. */
static void wire_clean_runs(void **state)
{
	static const struct {
		const char *in;
		size_t from, want_to;
	} cases[] = {
	    {"ab\r\ncd\r\n", 0, 8},
	    {"ab\r\ncd", 0, 4},		/* a last line without its end is not taken */
	    {"ab\r\n.cd\r\n", 0, 4},	/* a dot to stuff */
	    {"ab\r\ncd\nef\r\n", 0, 4}, /* a bare LF */
	    {"ab\r\nc\rd\r\n", 0, 4},	/* a stray CR */
	    {"ab\r", 0, 0},
	    {"X: y\nab\r\n", 5, 9}, /* what is before from is not looked at */
	    {"ab\r\n", 9, 9},	    /* from past the end */
	};
	for (size_t i = 0; i < N(cases); i++) {
		size_t len = strlen(cases[i].in);
		struct wire_clean w;
		wire_clean_init(&w, cases[i].from);
		wire_clean_feed(&w, cases[i].in, len);
		if (w.to != cases[i].want_to)
			fail_msg("case %zu: to %llu", i, (unsigned long long)w.to);
		wire_clean_init(&w, cases[i].from);
		for (size_t k = 0; k < len; k++)
			wire_clean_feed(&w, cases[i].in + k, 1);
		assert_int_equal(w.to, cases[i].want_to);
		for (size_t cut = 0; cut <= len; cut++) {
			wire_clean_init(&w, cases[i].from);
			wire_clean_feed(&w, cases[i].in, cut);
			wire_clean_feed(&w, cases[i].in + cut, len - cut);
			assert_int_equal(w.to, cases[i].want_to);
		}
	}
	/* Lines of 998 octets pass; one of 999 would be folded. */
	for (size_t n = 997; n <= 999; n++) {
		struct buf in = BUF_INIT;
		buf_puts(&in, "ab\r\n");
		for (size_t k = 0; k < n; k++)
			buf_putc(&in, 'x');
		buf_puts(&in, "\r\n");
		struct wire_clean w;
		wire_clean_init(&w, 0);
		wire_clean_feed(&w, in.data, in.len);
		assert_int_equal(w.to, n <= WIRE_MAX_LINE ? in.len : 4);
		buf_deinit(&in);
	}
}

/* wire_filter_pass: only from a line start with nothing pending, and not
 * over an edit; after it the filter goes on as if it had been fed the run. */
static void wire_pass(void **state)
{
	static const struct wire_edit e[] = {INS(6, "X: 1\r\n", 0)};
	struct wire_filter f;
	struct buf out = BUF_INIT;
	wire_filter_init(&f, e, 1, false);
	wire_filter_feed(&f, "ab", 2, &out);
	assert_false(wire_filter_pass(&f, 2)); /* mid-line */
	wire_filter_feed(&f, "\r", 1, &out);
	assert_false(wire_filter_pass(&f, 2)); /* a CR pending */
	wire_filter_feed(&f, "\n", 1, &out);
	assert_false(wire_filter_pass(&f, 4)); /* the insert at 6 */
	assert_true(wire_filter_pass(&f, 2));  /* up to it */
	buf_puts(&out, "\r\n");		       /* the run, sent by the caller */
	wire_filter_feed(&f, "cd\r\n", 4, &out);
	wire_filter_finish(&f, &out);
	assert_string_equal(out.data, "ab\r\n\r\nX: 1\r\ncd\r\n.\r\n");
	buf_deinit(&out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(wire_line_endings),
	    cmocka_unit_test(wire_smuggling),
	    cmocka_unit_test(wire_dot_stuffing),
	    cmocka_unit_test(wire_folding),
	    cmocka_unit_test(wire_fold_long_line),
	    cmocka_unit_test(wire_edits),
	    cmocka_unit_test(wire_split_equivalence),
	    cmocka_unit_test(wire_random_differential),
	    cmocka_unit_test(wire_verbatim_prefix),
	    cmocka_unit_test(wire_clean_runs),
	    cmocka_unit_test(wire_pass),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
