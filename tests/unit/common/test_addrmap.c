/* addrmap: the [submit] rule, row by row. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/addrmap.h"

static void addrmap_rule(void **state)
{
	(void)state;
	static const struct {
		const char *alias, *domain, *in;
		bool rcpt;
		int r;
		const char *out;
	} cases[] = {
	    {"ops@example.com", "example.com", "root", true, 1, "ops@example.com"},
	    {"ops@example.com", "example.com", "ROOT@vm", true, 1, "ops@example.com"},
	    {"ops@example.com", "example.com", "postmaster@localhost", true, 1, "ops@example.com"},
	    {"ops@example.com", "example.com", "mailer-daemon", true, 1, "ops@example.com"},
	    {"ops@example.com", "example.com", "root", false, 1, "root@example.com"},
	    {"ops@example.com", "example.com", "bob", true, 1, "bob@example.com"},
	    {"ops@example.com", "example.com", "bob@VM", false, 1, "bob@example.com"},
	    {"ops@example.com", "example.com", "root@other.org", true, 0, NULL},
	    {"ops@example.com", "example.com", "", false, 0, NULL},
	    {"ops@example.com", NULL, "bob", true, -1, NULL},
	    {"ops@example.com", NULL, "bob@vm", true, 0, NULL},
	    {"ops@example.com", NULL, "root", false, -1, NULL},
	    {NULL, "example.com", "root@vm", true, 1, "root@example.com"},
	    {NULL, NULL, "root", true, -1, NULL},
	    {NULL, NULL, "root@vm", true, 0, NULL},
	    {"", "", "root@vm", true, 0, NULL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct addrmap m;
		char *out = NULL;
		addrmap_init(&m, cases[i].alias, cases[i].domain, "vm");
		int r = addrmap_apply(&m, cases[i].in, cases[i].rcpt, &out);
		if (r != cases[i].r)
			fail_msg("case %zu (%s): %d, expected %d", i, cases[i].in, r, cases[i].r);
		if (cases[i].out)
			assert_string_equal(out, cases[i].out);
		else
			assert_null(out);
		/* Applying twice gives what applying once gives. */
		if (out) {
			char *again = NULL;
			if (addrmap_apply(&m, out, cases[i].rcpt, &again) > 0)
				assert_string_equal(again, out);
			free(again);
		}
		free(out);
	}
}

/* gethostname()'s name is this host too. */
static void addrmap_system_hostname(void **state)
{
	(void)state;
	char host[256], addr[300];
	struct addrmap m;
	char *out = NULL;
	assert_int_equal(gethostname(host, sizeof(host)), 0);
	snprintf(addr, sizeof(addr), "cron@%s", host);
	addrmap_init(&m, NULL, "example.com", "configured.example.net");
	assert_int_equal(addrmap_apply(&m, addr, false, &out), 1);
	assert_string_equal(out, "cron@example.com");
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(addrmap_rule),
	    cmocka_unit_test(addrmap_system_hostname),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
