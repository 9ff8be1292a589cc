/*
 * Purpose: tests of common/crc32c.c against the published check value of
 * CRC-32C (RFC 3720 B.4) and its incremental use.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/crc32c.h"

static void crc32c_check_values(void **state)
{
	(void)state;
	static const unsigned char zeros[32];
	assert_int_equal(crc32c_update(0, "", 0), 0);
	assert_int_equal(crc32c_update(0, "123456789", 9), 0xE3069283u);
	/* RFC 3720 B.4: 32 bytes of zeros. */
	assert_int_equal(crc32c_update(0, zeros, sizeof(zeros)), 0x8A9136AAu);
}

static void crc32c_incremental_equals_whole(void **state)
{
	(void)state;
	const char *s = "pickupd-envelope 2\nid 0193A1B2C3D4E0012A00\n";
	size_t n = strlen(s);
	for (size_t cut = 0; cut <= n; cut++)
		assert_int_equal(crc32c_update(crc32c_update(0, s, cut), s + cut, n - cut),
				 crc32c_update(0, s, n));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(crc32c_check_values),
	    cmocka_unit_test(crc32c_incremental_equals_whole),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
