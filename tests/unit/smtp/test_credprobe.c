/*
 * Purpose: unit tests for daemon/credprobe and the password_command runner
 * under it (cmdrun): the fingerprint covers the output and the exit status;
 * the callback never comes from inside credprobe_start or credprobe_cancel;
 * a cancel ends the helpers the command started (its process group), also
 * when they ignore SIGTERM.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/buf.h"
#include "daemon/smtp/credprobe.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

struct t {
	uv_loop_t loop;
	struct credprobe *p;
	bool in_call;	/* the test is inside credprobe_start/cancel */
	unsigned calls; /* callbacks */
	unsigned sync;	/* callbacks from inside a call */
	bool ok;
	unsigned char fp[SECRET_FP_LEN];
};

static void probe_cb(struct credprobe *p, bool ok, const unsigned char *fp, void *arg)
{
	struct t *t = arg;
	assert_ptr_equal(p, t->p);
	t->calls++;
	if (t->in_call)
		t->sync++;
	t->ok = ok;
	if (ok)
		memcpy(t->fp, fp, SECRET_FP_LEN);
	t->p = NULL;
}

static void start(struct t *t, const char *cmd)
{
	memset(t, 0, sizeof(*t));
	assert_int_equal(uv_loop_init(&t->loop), 0);
	t->in_call = true;
	t->p = credprobe_start(&t->loop, cmd, probe_cb, t);
	t->in_call = false;
	assert_non_null(t->p);
}

static void finish(struct t *t)
{
	uv_run(&t->loop, UV_RUN_DEFAULT);
	assert_int_equal(t->calls, 1);
	assert_int_equal(t->sync, 0);
	assert_int_equal(uv_loop_close(&t->loop), 0);
}

/* Runs cmd to its end; false when it did not run to its end. */
static bool fingerprint(const char *cmd, unsigned char *fp)
{
	struct t t;
	start(&t, cmd);
	finish(&t);
	memcpy(fp, t.fp, SECRET_FP_LEN);
	return t.ok;
}

static void credprobe_fingerprints(void **state)
{
	(void)state;
	static const struct {
		const char *a, *b;
		bool same;
	} rows[] = {
	    {"echo token-1", "echo token-1", true},
	    {"echo token-1", "echo token-2", false},
	    {"echo token-1", "echo token-1; exit 3", false}, /* the status counts */
	    {"printf ''", "exit 1", false},
	};
	for (size_t i = 0; i < ARRAY_SIZE(rows); i++) {
		unsigned char fa[SECRET_FP_LEN], fb[SECRET_FP_LEN];
		assert_true(fingerprint(rows[i].a, fa));
		assert_true(fingerprint(rows[i].b, fb));
		assert_int_equal(memcmp(fa, fb, SECRET_FP_LEN) == 0, rows[i].same);
	}
}

/* A process that exited and was not reaped (it may be re-parented to a
 * pid 1 that never reaps) counts as gone. */
static bool process_gone(pid_t pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return errno == ENOENT;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	const char *paren = strrchr(buf, ')'); /* "pid (comm) S ..." */
	return paren && (paren[2] == 'Z' || paren[2] == 'X');
}

/* The command starts a helper that would outlive the shell (a background
 * sleep, holding stdout); cancel must end both, and the callback follows. */
static void credprobe_cancel_ends_process_group(void **state)
{
	(void)state;
	static const char *const prefixes[] = {
	    "",		      /* SIGTERM ends it */
	    "trap '' TERM; ", /* it ignores SIGTERM (so does the helper): SIGKILL */
	};
	for (size_t i = 0; i < ARRAY_SIZE(prefixes); i++) {
		char pidfile[] = "/tmp/credprobetest.XXXXXX";
		int fd = mkstemp(pidfile);
		assert_true(fd >= 0);
		char cmd[256];
		snprintf(cmd, sizeof(cmd), "%ssleep 60 & echo $! >%s; wait", prefixes[i], pidfile);
		struct t t;
		start(&t, cmd);
		/* Wait for the helper's pid, with a generous bound (the command
		 * runs whether the loop does or not). */
		pid_t helper = 0;
		for (int n = 0; n < 2000 && helper == 0; n++) {
			char buf[32] = "";
			ssize_t k = pread(fd, buf, sizeof(buf) - 1, 0);
			if (k > 0 && buf[k - 1] == '\n')
				helper = (pid_t)atoi(buf);
			else
				usleep(10000);
		}
		close(fd);
		unlink(pidfile);
		assert_true(helper > 0);
		assert_false(process_gone(helper));
		t.in_call = true;
		credprobe_cancel(t.p);
		t.in_call = false;
		assert_int_equal(t.calls, 0);
		finish(&t);
		assert_false(t.ok);
		bool gone = false;
		for (int n = 0; n < 1000 && !gone; n++) {
			gone = process_gone(helper);
			if (!gone)
				usleep(10000);
		}
		if (!gone)
			kill(helper, SIGKILL); /* leave nothing behind */
		assert_true(gone);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(credprobe_fingerprints),
	    cmocka_unit_test(credprobe_cancel_ends_process_group),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
