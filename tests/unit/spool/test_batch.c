/*
 * Purpose: tests of spool/batch.c (spool_move_many, spool_remove_many) and
 * spool/audit.c: per-ID results (a missing ID fails alone), an injected
 * directory fsync failure fails every ID it covered, and crash tests that
 * SIGKILL a child at each step of a batch, then recover and check that
 * every message is whole in exactly one state, or gone with its content.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "spool/spool.h"
#include "spool/spool_int.h"
#include "tests/unit/spool/spool_fixture.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define N_MSGS	      4

struct fixture {
	char dir[64];
	struct spool sp;
	char ids[N_MSGS][SPOOL_ID_LEN + 1];
	char *idp[N_MSGS];
};

/* N_MSGS messages in deferred/, as the relay leaves them. */
static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/batchtest.XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	char sdir[128];
	snprintf(sdir, sizeof(sdir), "%s/spool", f->dir);
	if (spool_open(&f->sp, sdir) < 0)
		return -1;
	for (int i = 0; i < N_MSGS; i++) {
		struct spool_env e;
		memset(&e, 0, sizeof(e));
		spool_new_id(&f->sp, f->ids[i]);
		f->idp[i] = f->ids[i];
		memcpy(e.id, f->ids[i], sizeof(e.id));
		e.arrival_ms = 1732350000123;
		e.size = 15;
		e.sender = xstrdup("a@example.org");
		spool_env_add_rcpt(&e, "b@example.net", NULL);
		if (spool__write_file(f->sp.data_fd, e.id, "From: a\r\n\r\nhi\r\n", 15, 0) < 0 ||
		    spool_env_write(&f->sp, SPOOL_DEFERRED, &e) < 0)
			return -1;
		spool_env_deinit(&e);
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	set_hook(NULL, NULL);
	spool_close(&f->sp);
	nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* Bit per state holding id. */
static unsigned states_of(struct spool *sp, const char *id)
{
	unsigned mask = 0;
	for (int i = 0; i < SPOOL_N_STATES; i++)
		if (exists_in(sp->state_fd[i], id))
			mask |= 1u << i;
	return mask;
}

static void spool_batch_move_reports_each_id(void **state)
{
	struct fixture *f = *state;
	char *ids[N_MSGS + 1];
	int errs[N_MSGS + 1];
	char missing[] = "00000000000000000000";
	for (int i = 0; i < N_MSGS; i++)
		ids[i] = f->ids[i];
	ids[N_MSGS] = missing;
	assert_int_equal(spool_move_many(&f->sp, ids, N_MSGS + 1, SPOOL_DEFERRED, SPOOL_HOLD, errs),
			 N_MSGS);
	for (int i = 0; i < N_MSGS; i++) {
		assert_int_equal(errs[i], 0);
		assert_int_equal(states_of(&f->sp, f->ids[i]), 1u << SPOOL_HOLD);
	}
	assert_int_equal(errs[N_MSGS], ENOENT);
}

static void spool_batch_remove_takes_content_first(void **state)
{
	struct fixture *f = *state;
	int errs[N_MSGS];
	assert_int_equal(spool_remove_many(&f->sp, f->idp, N_MSGS, SPOOL_DEFERRED, errs), N_MSGS);
	for (int i = 0; i < N_MSGS; i++) {
		assert_int_equal(errs[i], 0);
		assert_int_equal(states_of(&f->sp, f->ids[i]), 0);
		assert_false(exists_in(f->sp.data_fd, f->ids[i]));
	}
}

static void spool_batch_fsync_failure_fails_all(void **state)
{
	struct fixture *f = *state;
	int errs[N_MSGS];
	set_hook("PICKUPD_SPOOL_FAIL", "dir-fsync:5");
	assert_int_equal(spool_move_many(&f->sp, f->idp, N_MSGS, SPOOL_DEFERRED, SPOOL_HOLD, errs),
			 0);
	for (int i = 0; i < N_MSGS; i++)
		assert_int_equal(errs[i], EIO);
	set_hook("PICKUPD_SPOOL_FAIL", "remove-datasync:5");
	assert_int_equal(spool_remove_many(&f->sp, f->idp, N_MSGS, SPOOL_HOLD, errs), 0);
	for (int i = 0; i < N_MSGS; i++) {
		assert_int_equal(errs[i], EIO);
		/* The envelope stays when the content's removal is not durable. */
		assert_int_equal(states_of(&f->sp, f->ids[i]), 1u << SPOOL_HOLD);
	}
	set_hook(NULL, NULL);
}

static void spool_audit_append_read_clear(void **state)
{
	struct fixture *f = *state;
	struct buf b = BUF_INIT;
	assert_int_equal(spool_audit_read(&f->sp, &b), 0);
	assert_int_equal(b.len, 0);
	assert_int_equal(spool_audit_append(&f->sp, "a: held\n", 8), 0);
	assert_int_equal(spool_audit_append(&f->sp, "b: deleted\n", 11), 0);
	assert_int_equal(spool_audit_read(&f->sp, &b), 0);
	assert_string_equal(b.data, "a: held\nb: deleted\n");
	assert_int_equal(spool_audit_clear(&f->sp), 0);
	buf_clear(&b);
	assert_int_equal(spool_audit_read(&f->sp, &b), 0);
	assert_int_equal(b.len, 0);
	buf_deinit(&b);
}

/* ---- crash tests -------------------------------------------------------------------- */

static const struct {
	bool remove;
	const char *step;
} crashes[] = {
    {false, "move-rename:3"},
    {false, "move-dirsync"},
    {false, "dir-fsync:1"},
    {false, "move-srcsync"},
    {false, NULL},
    {true, "remove-data:3"},
    {true, "remove-datasync"},
    {true, "dir-fsync"},
    {true, "remove-env:3"},
    {true, NULL},
};

static void spool_batch_crash_at_each_step(void **state)
{
	(void)state;
	for (size_t c = 0; c < ARRAY_SIZE(crashes); c++) {
		void *fx;
		assert_int_equal(setup(&fx), 0);
		struct fixture *f = fx;
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			int errs[N_MSGS];
			set_hook("PICKUPD_SPOOL_CRASH", crashes[c].step);
			size_t ok =
			    crashes[c].remove
				? spool_remove_many(&f->sp, f->idp, N_MSGS, SPOOL_DEFERRED, errs)
				: spool_move_many(&f->sp, f->idp, N_MSGS, SPOOL_DEFERRED,
						  SPOOL_HOLD, errs);
			_exit(ok == N_MSGS ? 0 : 1);
		}
		int status;
		assert_int_equal(waitpid(pid, &status, 0), pid);
		if (crashes[c].step)
			assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
		else
			assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		struct spool_recovery rec;
		assert_int_equal(spool_recover(&f->sp, &rec), 0);
		assert_int_equal(rec.n_orphans, 0);
		spool_recovery_deinit(&rec);
		for (int i = 0; i < N_MSGS; i++) {
			unsigned mask = states_of(&f->sp, f->ids[i]);
			bool data = exists_in(f->sp.data_fd, f->ids[i]);
			if (crashes[c].remove) {
				/* Whole in deferred/, or gone with its content. */
				assert_true(mask == 0 || mask == 1u << SPOOL_DEFERRED);
				assert_int_equal(data, mask != 0);
				if (!crashes[c].step)
					assert_int_equal(mask, 0);
			} else {
				assert_true(data);
				assert_true(mask == 1u << SPOOL_DEFERRED ||
					    mask == 1u << SPOOL_HOLD);
				if (!crashes[c].step)
					assert_int_equal(mask, 1u << SPOOL_HOLD);
			}
		}
		teardown(&fx);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(spool_batch_move_reports_each_id, setup, teardown),
	    cmocka_unit_test_setup_teardown(spool_batch_remove_takes_content_first, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(spool_batch_fsync_failure_fails_all, setup, teardown),
	    cmocka_unit_test_setup_teardown(spool_audit_append_read_clear, setup, teardown),
	    cmocka_unit_test(spool_batch_crash_at_each_step),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
