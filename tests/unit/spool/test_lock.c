/*
 * Purpose: tests of spool/lock.c, the protocol pickupd and pickupctl share
 * (spool.h): one holder at a time across processes and open spools, a try
 * that fails at once with EWOULDBLOCK, a wait that ends when the holder
 * lets go or dies, and the lock gone with spool_unlock or spool_close.
 */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "spool/spool.h"
#include "tests/unit/spool/spool_fixture.h"

struct fixture {
	char dir[64];
	char sdir[96];
	struct spool sp;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/locktest.XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	snprintf(f->sdir, sizeof(f->sdir), "%s/spool", f->dir);
	if (spool_open(&f->sp, f->sdir) < 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	spool_close(&f->sp);
	nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Two opens of one spool (pickupd and pickupctl): one holder at a time. */
static void spool_lock_excludes_another_open(void **state)
{
	struct fixture *f = *state;
	struct spool other;
	assert_int_equal(spool_open(&other, f->sdir), 0);
	assert_int_equal(spool_lock(&f->sp, 0), 0);
	assert_int_equal(spool_lock(&other, 0), -1);
	assert_int_equal(errno, EWOULDBLOCK);
	/* A bounded wait gives up after about that long, never much sooner. */
	int64_t t0 = mono_ms();
	assert_int_equal(spool_lock(&other, 150), -1);
	assert_int_equal(errno, EWOULDBLOCK);
	assert_true(mono_ms() - t0 >= 100);
	spool_unlock(&f->sp);
	assert_int_equal(spool_lock(&other, 0), 0);
	assert_int_equal(spool_lock(&f->sp, 0), -1);
	/* Closing the spool lets go of the lock too. */
	spool_close(&other);
	assert_int_equal(spool_lock(&f->sp, 0), 0);
	spool_unlock(&f->sp);
}

/* A waiting taker (pickupd starting while pickupctl works, or while the
 * previous daemon stops) gets the lock as soon as the holder lets go. */
static void spool_lock_wait_ends_when_holder_exits(void **state)
{
	struct fixture *f = *state;
	int held[2], go[2];
	assert_int_equal(pipe(held), 0);
	assert_int_equal(pipe(go), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct spool mine;
		char c = 'x';
		if (spool_open(&mine, f->sdir) < 0 || spool_lock(&mine, 0) < 0)
			_exit(1);
		if (write(held[1], &c, 1) != 1 || read(go[0], &c, 1) != 1)
			_exit(1);
		_exit(0); /* the kernel drops the lock */
	}
	char c;
	assert_int_equal(read(held[0], &c, 1), 1);
	assert_int_equal(spool_lock(&f->sp, 0), -1);
	assert_int_equal(errno, EWOULDBLOCK);
	assert_int_equal(write(go[1], &c, 1), 1);
	assert_int_equal(spool_lock(&f->sp, 60000), 0);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	spool_unlock(&f->sp);
	close(held[0]);
	close(held[1]);
	close(go[0]);
	close(go[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(spool_lock_excludes_another_open, setup, teardown),
	    cmocka_unit_test_setup_teardown(spool_lock_wait_ends_when_holder_exits, setup,
					    teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
