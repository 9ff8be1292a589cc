/*
 * Purpose: unit tests of the pickup folder's candidate names (common/match.h):
 * which names a writer may use for temp files and which are taken, when a
 * glob names temp files itself, and which globs can never match.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/match.h"

static const struct {
	const char *glob, *name;
	bool match;
} cases[] = {
    {"*.eml", "3f2504e0-4f89-11d3-9a0c-0305e82c3301.eml", true},
    {"*.eml", "UPPER.EML", true}, /* case-insensitive */
    {"*.eml", "mixed.Eml", true},
    {"*.eml", ".hidden.eml", false}, /* dotfiles are writers' temp files */
    {"*.eml", ".sendmail.1.2.3.tmp", false},
    {"*.eml", "job.tmp", false},
    {"*.eml", "job.eml.part", false},
    {"*.eml", "job.eml.tmp", false},
    {"*.eml", "job.txt", false},
    {"*.eml", "eml", false},
    {"*", "email.txt", true},	 /* IIS took any name: match = * */
    {"*", "eml1234.TMP", false}, /* ... but not temp names it does not name */
    {"*", "x.PART", false},
    {"*", ".x", false},
    {"*.txt", "a.TXT", true},
    /* A glob that names the temp suffix itself takes those files. */
    {"*.tmp", "php1A2B.tmp", true}, /* PHP tempnam() */
    {"*.tmp", "EML1234.TMP", true},
    {"eml*.TMP", "eml1234.tmp", true},
    {"*.tmp", ".php1A2B.tmp", false}, /* still no dotfile */
    {"*.tmp", "x.eml", false},
    {"*.part", "upload.part", true},
    {"*.[tT][mM][pP]", "a.tmp", true}, /* brackets admitting only the suffix */
    {"*[.]tmp", "a.tmp", true},
    {"*.tm[p]", "a.TMP", true},
    {"*.eml.tmp", "a.eml.tmp", true},
    {"*.t?p", "a.tmp", false}, /* "?" does not name it */
    {"*.t?p", "a.tap", true},
    {"*.tm[pt]", "a.tmp", false},
    {"*.tm[pt]", "a.tmt", true},
    {"*.tmp*", "a.tmp", false},
    {"*.tmp", "a.part", false},
    /* Dotfiles: only a glob starting with a literal '.' takes them. */
    {".*.eml", ".job.eml", true},
    {"[.]*.eml", ".job.eml", false},
    {"?job.eml", ".job.eml", false},
};

static void match_name_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		bool got = match_name(cases[i].glob, cases[i].name);
		if (got != cases[i].match)
			fail_msg("glob %s name %s: got %d", cases[i].glob, cases[i].name, got);
	}
}

/* --check-config refuses exactly the globs that can never match a name. */
static void match_check_table(void **state)
{
	static const struct {
		const char *glob;
		bool ok;
	} checks[] = {
	    {"*.eml", true},
	    {"*", true},
	    {"*.tmp", true},
	    {"*.part", true},
	    {"*.tm[p]", true},
	    {"*.tm[pt]", true},
	    {"*.t?p", true},
	    {".*", true},
	    {".x", true},
	    {"[abc", true}, /* unclosed: a literal '[' */
	    {"\\*.eml", true},
	    {"[!a]", true},
	    {"x[.]y", true},
	    {".", false},
	    {"..", false},
	    {"[.]eml", false}, /* a leading '.' needs a literal '.' */
	    {"?eml", true},
	    {"a/b", false},
	    {"[[:digit:]]*.eml", true},
	    {"[!\x01-\x7f\x80-\xff]", false}, /* admits no byte */
	};
	char long_glob[300];
	memset(long_glob, 'x', sizeof(long_glob) - 2);
	long_glob[sizeof(long_glob) - 2] = '*';
	long_glob[sizeof(long_glob) - 1] = '\0';
	(void)state;
	for (size_t i = 0; i < sizeof(checks) / sizeof(checks[0]); i++) {
		const char *why = match_check(checks[i].glob);
		if ((why == NULL) != checks[i].ok)
			fail_msg("glob %s: %s", checks[i].glob, why ? why : "accepted");
	}
	assert_non_null(match_check(long_glob)); /* over NAME_MAX */
	long_glob[200] = '\0';
	assert_null(match_check(long_glob));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(match_name_table),
	    cmocka_unit_test(match_check_table),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
