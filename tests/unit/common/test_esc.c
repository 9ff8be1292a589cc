/*
 * Purpose: tests of common/esc: the one escaping of outside text for log
 * lines and envelope files, table-driven, and that it can be undone.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/esc.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define S(lit)	      lit, sizeof(lit) - 1

static const struct {
	const char *in;
	size_t len;
	const char *out;
} cases[] = {
    {S("plain name.eml"), "plain name.eml"},
    {S("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7"), "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7"},
    {S("a\x1b[31mred"), "a\\x1B[31mred"},
    {S("cr\rlf\ntab\tnul"), "cr\\x0Dlf\\x0Atab\\x09nul"},
    {S("nul\0byte"), "nul\\x00byte"},
    {S("del\x7f"), "del\\x7F"},
    {S("back\\slash"), "back\\x5Cslash"},
    {S("bad\xff\xfe"), "bad\\xFF\\xFE"},
    {S("cut\xc3"), "cut\\xC3"},
    {S("overlong\xc0\xaf"), "overlong\\xC0\\xAF"},
    {S("surrogate\xed\xa0\x80"), "surrogate\\xED\\xA0\\x80"},
    {S("c1 csi\xc2\x9b"), "c1 csi\\xC2\\x9B"},
    {S("rlo\xe2\x80\xaegpj.exe"), "rlo\\xE2\\x80\\xAEgpj.exe"},
    {S("ls\xe2\x80\xa8"), "ls\\xE2\\x80\\xA8"},
    {S("nbsp\xc2\xa0ok"), "nbsp\xc2\xa0ok"},
};

static void esc_table(void **state)
{
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct buf b = BUF_INIT;
		esc_append(&b, cases[i].in, cases[i].len);
		if (strcmp(b.data ? b.data : "", cases[i].out) != 0)
			print_error("case %zu: got '%s', want '%s'\n", i, b.data, cases[i].out);
		assert_string_equal(b.data ? b.data : "", cases[i].out);
		char fixed[256];
		assert_int_equal(esc_copy(fixed, sizeof(fixed), cases[i].in, cases[i].len), b.len);
		assert_string_equal(fixed, b.data);
		buf_deinit(&b);
	}
}

static int hexval(char c)
{
	return c <= '9' ? c - '0' : c - 'A' + 10;
}

/* Every byte value, alone and in pairs, escapes to printable text that
 * undoes to the input. */
static void esc_reversible(void **state)
{
	for (unsigned a = 0; a < 256; a++) {
		for (unsigned c = 0; c < 256; c += 17) {
			char in[3] = {(char)a, (char)c, 'x'};
			struct buf b = BUF_INIT, back = BUF_INIT;
			esc_append(&b, in, sizeof(in));
			for (size_t i = 0; i < b.len; i++) {
				unsigned char ch = (unsigned char)b.data[i];
				assert_true(ch >= 0x20 && ch != 0x7f);
				if (ch == '\\') {
					assert_true(b.data[i + 1] == 'x');
					buf_putc(&back, (char)(hexval(b.data[i + 2]) << 4 |
							       hexval(b.data[i + 3])));
					i += 3;
				} else {
					buf_putc(&back, (char)ch);
				}
			}
			assert_int_equal(back.len, sizeof(in));
			assert_memory_equal(back.data, in, sizeof(in));
			buf_deinit(&b);
			buf_deinit(&back);
		}
	}
}

/* A short destination cuts at a character, never inside an escape. */
static void esc_copy_cuts_whole(void **state)
{
	char out[8];
	assert_int_equal(esc_copy(out, sizeof(out),
				  "ab\x1b"
				  "cd",
				  5),
			 7);
	assert_string_equal(out, "ab\\x1Bc");
	assert_int_equal(esc_copy(out, 5,
				  "ab\x1b"
				  "cd",
				  5),
			 2);
	assert_string_equal(out, "ab");
	assert_int_equal(esc_copy(out, 4, "\xe2\x82\xac\xe2\x82\xac", 6), 3);
	assert_string_equal(out, "\xe2\x82\xac");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(esc_table),
	    cmocka_unit_test(esc_reversible),
	    cmocka_unit_test(esc_copy_cuts_whole),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
