/*
 * Purpose: tests of spool/syncmany.c (spool_fsync_many): every descriptor
 * gets its own answer, in its own slot, whether Linux AIO took it or the
 * fsync(2) fallback did; AIO is used where the kernel offers it.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "spool/spool.h"

#define N 70 /* more than one AIO chunk (64) */

static long aio_nr(void)
{
	long n = -1;
	FILE *f = fopen("/proc/sys/fs/aio-nr", "r");
	if (f) {
		if (fscanf(f, "%ld", &n) != 1)
			n = -1;
		fclose(f);
	}
	return n;
}

static int new_file(char *dir, int i)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/f%d", dir, i);
	int fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "content\n", 8), 8);
	unlink(path);
	return fd;
}

/* Regular files, dirty: all fsynced (0), in one call of two chunks; the
 * thread's AIO context is made (aio-nr grows) where the kernel has AIO. */
static void fsync_many_files(void **state)
{
	(void)state;
	char dir[] = "/tmp/pickupd-syncmany-XXXXXX";
	assert_non_null(mkdtemp(dir));
	int fds[N], errs[N];
	for (int i = 0; i < N; i++) {
		fds[i] = new_file(dir, i);
		errs[i] = -1;
	}
	long before = aio_nr();
	spool_fsync_many(fds, N, errs);
	long after = aio_nr();
	for (int i = 0; i < N; i++) {
		assert_int_equal(errs[i], 0);
		close(fds[i]);
	}
	if (before >= 0 && getenv("PICKUPD_TEST_NO_AIO") == NULL)
		assert_true(after > before);
	rmdir(dir);
}

/* A descriptor without fsync (a pipe: AIO refuses it at submission, so the
 * kernel takes only those before it) gets EINVAL in its own slot; the files
 * around it, before (by AIO) and after (by fsync(2)), get 0. */
static void fsync_many_mixed(void **state)
{
	(void)state;
	char dir[] = "/tmp/pickupd-syncmany-XXXXXX";
	assert_non_null(mkdtemp(dir));
	int p[2];
	assert_int_equal(pipe(p), 0);
	int fds[5], errs[5];
	fds[0] = new_file(dir, 0);
	fds[1] = new_file(dir, 1);
	fds[2] = p[0];
	fds[3] = new_file(dir, 3);
	fds[4] = -1; /* closed: EBADF */
	spool_fsync_many(fds, 5, errs);
	assert_int_equal(errs[0], 0);
	assert_int_equal(errs[1], 0);
	assert_int_equal(errs[2], EINVAL);
	assert_int_equal(errs[3], 0);
	assert_int_equal(errs[4], EBADF);
	/* One alone goes by fsync(2). */
	spool_fsync_many(&fds[2], 1, errs);
	assert_int_equal(errs[0], EINVAL);
	spool_fsync_many(NULL, 0, NULL);
	for (int i = 0; i < 4; i++)
		close(fds[i]);
	close(p[1]);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(fsync_many_files),
	    cmocka_unit_test(fsync_many_mixed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
