/*
 * Purpose: tests of common/log's pure parts: the syslog file header written
 * before each stderr line (what pflogsumm parses), and sd-daemon's check
 * that $JOURNAL_STREAM names the stream open on stderr; and the loop
 * thread's gathered lines (log_batch_start, log_flush) on a pipe.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/log.h"
#include "common/log_int.h"

static void log_header_rfc3339(void **state)
{
	static const struct {
		const char *tz;
		const char *service;
		const char *want;
	} cases[] = {
	    {"UTC0", "smtp", "2024-05-01T12:00:00.012345+00:00 host pickupd/smtp[42]: "},
	    {"UTC0", NULL, "2024-05-01T12:00:00.012345+00:00 host pickupd[42]: "},
	    {"CET-1CEST,M3.5.0,M10.5.0/3", "qmgr",
	     "2024-05-01T14:00:00.012345+02:00 host pickupd/qmgr[42]: "},
	    {"<-0330>3:30", "pickup", "2024-05-01T08:30:00.012345-03:30 host pickupd/pickup[42]: "},
	};
	struct timeval tv = {.tv_sec = 1714564800, .tv_usec = 12345}; /* 12:00:00 UTC */
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[128];
		setenv("TZ", cases[i].tz, 1);
		tzset();
		size_t n =
		    log__header(out, sizeof(out), &tv, "host", "pickupd", cases[i].service, 42);
		assert_string_equal(out, cases[i].want);
		assert_int_equal(n, strlen(cases[i].want));
	}
	/* Cut, never overrun. */
	char small[16];
	assert_int_equal(log__header(small, sizeof(small), &tv, "host", "pickupd", NULL, 42), 15);
	assert_int_equal(strlen(small), 15);
}

static void log_journal_stream(void **state)
{
	char path[] = "/tmp/test_log.XXXXXX";
	int fd = mkstemp(path);
	struct stat st;
	char env[64];
	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	snprintf(env, sizeof(env), "%llu:%llu", (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino);
	assert_true(log__journal_stream(env, fd));
	/* Another file (stderr redirected since journald set it), or garbage. */
	snprintf(env, sizeof(env), "%llu:%llu", (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino + 1);
	assert_false(log__journal_stream(env, fd));
	snprintf(env, sizeof(env), "%llu:%llux", (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino);
	assert_false(log__journal_stream(env, fd));
	assert_false(log__journal_stream("", fd));
	assert_false(log__journal_stream(NULL, fd));
	assert_false(log__journal_stream("1:2", -1));
	close(fd);
	unlink(path);
}

static size_t drain(int fd, char *out, size_t cap)
{
	size_t n = 0;
	for (;;) {
		ssize_t r = read(fd, out + n, cap - 1 - n);
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	out[n] = '\0';
	return n;
}

static void *other_thread(void *arg)
{
	(void)arg;
	log_info("from another thread");
	return NULL;
}

static void log_batch(void **state)
{
	(void)state;
	int p[2];
	assert_int_equal(pipe(p), 0);
	assert_int_equal(fcntl(p[0], F_SETFL, O_NONBLOCK), 0);
	int saved = dup(STDERR_FILENO);
	assert_true(saved >= 0);
	assert_int_equal(dup2(p[1], STDERR_FILENO), STDERR_FILENO);
	static char got[1 << 16];
	log_set_tool("t");
	log_batch_start();

	/* Gathered until the flush, then written in order. */
	log_info("one");
	log_info("two");
	assert_int_equal(drain(p[0], got, sizeof(got)), 0);
	/* Another thread's line is not held back by the loop thread's. */
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, other_thread, NULL), 0);
	pthread_join(th, NULL);
	drain(p[0], got, sizeof(got));
	assert_string_equal(got, "t: from another thread\n");
	log_flush();
	drain(p[0], got, sizeof(got));
	assert_string_equal(got, "t: one\nt: two\n");
	log_flush(); /* nothing left: writes nothing */
	assert_int_equal(drain(p[0], got, sizeof(got)), 0);

	/* A warning goes out at once, after the lines gathered before it. */
	log_info("three");
	log_warn("four");
	drain(p[0], got, sizeof(got));
	assert_string_equal(got, "t: three\nt: warning: four\n");

	/* More than a buffer's worth: earlier lines are written as it fills,
	 * none is lost or reordered. */
	size_t want = 0;
	static char expect[1 << 16];
	for (int i = 0; i < 400; i++) {
		log_info("line %03d of a burst", i);
		want += (size_t)snprintf(expect + want, sizeof(expect) - want,
					 "t: line %03d of a burst\n", i);
	}
	size_t early = drain(p[0], got, sizeof(got));
	assert_true(early > 0 && early < want);
	log_flush();
	drain(p[0], got + early, sizeof(got) - early);
	assert_string_equal(got, expect);

	assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
	close(saved);
	close(p[0]);
	close(p[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(log_header_rfc3339),
	    cmocka_unit_test(log_journal_stream),
	    cmocka_unit_test(log_batch),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
