/*
 * Purpose: unit tests of the pickup folder's candidate names
 * (pickup_name_matches): which names a writer may use for temp files and
 * which are taken.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "daemon/pickup.h"

/* Defined by main.c, which the test does not link. */
void pickupd_check_stopped(struct pickupd *pd)
{
	(void)pd;
}

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
    {"*", "eml1234.TMP", false}, /* ... but never *.tmp */
    {"*", "x.PART", false},
    {"*", ".x", false},
    {"*.txt", "a.TXT", true},
};

static void pickup_name_matches_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		bool got = pickup_name_matches(cases[i].glob, cases[i].name);
		if (got != cases[i].match)
			fail_msg("glob %s name %s: got %d", cases[i].glob, cases[i].name, got);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(pickup_name_matches_table),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
