/*
 * Purpose: tests of spool/claimrec.c, the claim record of a batch of claims
 * (data/<base>.batch): the batch's IDs form one block that no other ID
 * shares; the record names each claim's folder and file name exactly (any
 * byte but '/' and NUL); it goes when no claim needs it any more, at run
 * time and at recovery; recovery reads it for claims cut short; and crash
 * tests that SIGKILL a child at each step of a batch (record, claims, lazy
 * envelopes, commit, removal), then recover and check that each file is in
 * exactly one place and that its record names its folder while it is
 * claimed.
 */
#include <dirent.h>
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

struct fixture {
	char dir[64];
	char sdir[128];
	struct spool sp;
	int pickup_fd;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/claimrectest.XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	char pickup[96];
	snprintf(pickup, sizeof(pickup), "%s/pickup", f->dir);
	mkdir(pickup, 0750);
	f->pickup_fd = open(pickup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	snprintf(f->sdir, sizeof(f->sdir), "%s/spool", f->dir);
	if (f->pickup_fd < 0 || spool_open(&f->sp, f->sdir) < 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	set_hook(NULL, NULL);
	spool_close(&f->sp);
	close(f->pickup_fd);
	nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* Names in data/ ending in suffix. */
static size_t count_suffix(int dir_fd, const char *suffix)
{
	DIR *d = fdopendir(dup(dir_fd));
	struct dirent *de;
	size_t c = 0, n = strlen(suffix);
	rewinddir(d);
	while ((de = readdir(d)) != NULL) {
		size_t len = strlen(de->d_name);
		c += len > n && strcmp(de->d_name + len - n, suffix) == 0;
	}
	closedir(d);
	return c;
}

static void make_env(struct spool_env *e, const char *id)
{
	memset(e, 0, sizeof(*e));
	memcpy(e->id, id, SPOOL_ID_LEN + 1);
	e->arrival_ms = 1732350000123;
	e->size = 5;
	e->sender = xstrdup("alice@example.org");
	spool_env_add_rcpt(e, "bob@example.net", NULL);
}

/* File names as writers make them: anything but '/' and NUL. */
static const char *const names[] = {
    "plain.eml",
    "sp ace %25 %zz\n\t\r.eml",
    "\xff\xfe\x7f bin.eml",
    "\xc3\xbcn\xc3\xaf.eml",
};
#define N_FILES ARRAY_SIZE(names)

static void drop_files(struct fixture *f)
{
	for (size_t i = 0; i < N_FILES; i++)
		assert_int_equal(spool__write_file(f->pickup_fd, names[i], "hello", 5, 0), 0);
}

/* Claims slot i of the batch as ingest does. */
static int claim_slot(struct fixture *f, struct spool_claim_batch *b, size_t i,
		      struct spool_claim *c)
{
	int fd = openat(f->pickup_fd, names[i], O_RDONLY);
	int r = spool_claim_in_batch(&f->sp, b, i, f->pickup_fd, names[i], fd, c);
	if (fd >= 0)
		close(fd);
	return r;
}

/* A claim queued with a lazy first envelope, its record kept (ingest.c). */
static int queue_lazy(struct spool *sp, struct spool_claim *c)
{
	struct spool_env e;
	make_env(&e, c->id);
	c->keep_record = true;
	int r = spool_env_create_lazy(sp, &e);
	spool_env_deinit(&e);
	return r < 0 ? r : spool_claim_done(sp, c);
}

static void origin_is(struct spool *sp, const char *id, const char *file)
{
	char *pk = NULL, *fl = NULL;
	if (spool_claim_origin(sp, id, &pk, &fl) < 0)
		fail_msg("%s: no claim record", id);
	assert_string_equal(pk, "second");
	assert_string_equal(fl, file);
	free(pk);
	free(fl);
}

static unsigned seq_of(const char *id)
{
	return (unsigned)strtoul(id + SPOOL_ID_LEN - 3, NULL, 16);
}

/* ---- IDs ---------------------------------------------------------------------------- */

static void spool_claimrec_block_is_the_batchs_alone(void **state)
{
	struct fixture *f = *state;
	char before[SPOOL_ID_LEN + 1], base[SPOOL_ID_LEN + 1], base2[SPOOL_ID_LEN + 1];
	char after[SPOOL_ID_LEN + 1], slot[SPOOL_ID_LEN + 1];
	for (int round = 0; round < 300; round++) {
		spool_new_id(&f->sp, before);
		spool__new_block(&f->sp, base);
		spool__new_block(&f->sp, base2);
		spool_new_id(&f->sp, after);
		assert_true(spool_id_valid(base));
		assert_int_equal(seq_of(base) % SPOOL_BATCH_MAX, 0);
		assert_int_equal(seq_of(base2) % SPOOL_BATCH_MAX, 0);
		spool__batchrec_slot_id(base, SPOOL_BATCH_MAX - 1, slot);
		assert_true(spool_id_valid(slot));
		/* Increasing, and nothing else inside a block. */
		assert_true(memcmp(before, base, SPOOL_ID_LEN) < 0);
		assert_true(memcmp(slot, base2, SPOOL_ID_LEN) < 0);
		spool__batchrec_slot_id(base2, SPOOL_BATCH_MAX - 1, slot);
		assert_true(memcmp(slot, after, SPOOL_ID_LEN) < 0);
	}
}

/* ---- the record --------------------------------------------------------------------- */

/* One line per file, with its folder and exact name; one file, no links. */
static void spool_claimrec_names_each_claim(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = &f->sp;
	struct spool_claim_batch b;
	struct spool_claim c[N_FILES];
	drop_files(f);
	assert_int_equal(spool_claim_batch_begin(sp, "second", names, N_FILES, &b), 0);
	char name[SPOOL_ID_LEN + 8];
	snprintf(name, sizeof(name), "%s.batch", b.base);
	struct buf text = BUF_INIT;
	assert_int_equal(spool__read_all(sp->data_fd, name, 1 << 20, &text), 0);
	size_t lines = 0;
	for (size_t i = 0; i < text.len; i++)
		lines += text.data[i] == '\n';
	assert_int_equal(lines, N_FILES);
	buf_deinit(&text);
	for (size_t i = 0; i < N_FILES; i++) {
		assert_int_equal(claim_slot(f, &b, i, &c[i]), 0);
		assert_true(c[i].recorded);
		char want[SPOOL_ID_LEN + 1];
		spool__batchrec_slot_id(b.base, i, want);
		assert_string_equal(c[i].id, want);
		assert_int_equal(queue_lazy(sp, &c[i]), 0);
	}
	assert_int_equal(spool_claim_commit_data(sp, f->pickup_fd, NULL), 0);
	spool_claim_batch_end(sp, &b);
	for (size_t i = 0; i < N_FILES; i++)
		origin_is(sp, c[i].id, names[i]);
	assert_int_equal(count_suffix(sp->data_fd, ".from"), 0);
	assert_int_equal(count_suffix(sp->data_fd, ".batch"), 1);
}

/* The record goes when the last claim that needs it no longer does: its
 * envelope durable, its content removed, its claim undone or refused. */
static void spool_claimrec_goes_with_its_last_claim(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = &f->sp;
	struct spool_claim_batch b;
	struct spool_claim c[N_FILES];
	struct spool_env e;
	drop_files(f);
	assert_int_equal(spool_claim_batch_begin(sp, "second", names, N_FILES, &b), 0);
	char rec[SPOOL_ID_LEN + 8];
	snprintf(rec, sizeof(rec), "%s.batch", b.base);
	/* 0 and 1 queued lazily, 2 refused (a durable badmail envelope), 3
	 * undone (back in the folder). */
	for (size_t i = 0; i < N_FILES; i++)
		assert_int_equal(claim_slot(f, &b, i, &c[i]), 0);
	assert_int_equal(queue_lazy(sp, &c[0]), 0);
	assert_int_equal(queue_lazy(sp, &c[1]), 0);
	make_env(&e, c[2].id);
	e.reason = xstrdup("refused");
	assert_int_equal(spool_env_write(sp, SPOOL_BADMAIL, &e), 0);
	spool_env_deinit(&e);
	assert_int_equal(spool_claim_done(sp, &c[2]), 0);
	assert_int_equal(spool_claim_undo(sp, &c[3]), 0);
	assert_true(exists_in(f->pickup_fd, names[3]));
	spool_claim_batch_end(sp, &b);
	assert_true(exists_in(sp->data_fd, rec));
	/* A deferral rewrites 0's envelope durably; 1's content goes. */
	make_env(&e, c[0].id);
	e.attempts = 1;
	assert_int_equal(spool_env_write(sp, SPOOL_QUEUE, &e), 0);
	spool_env_deinit(&e);
	assert_true(exists_in(sp->data_fd, rec));
	assert_int_equal(spool_remove(sp, c[1].id, SPOOL_QUEUE), 0);
	assert_false(exists_in(sp->data_fd, rec));
	/* Dropped twice (removal after a durable rewrite): nothing else goes. */
	assert_int_equal(spool_remove(sp, c[0].id, SPOOL_QUEUE), 0);
	assert_true(exists_in(sp->data_fd, c[2].id));

	/* A batch none of whose files was claimed: gone at its end. */
	assert_int_equal(spool_claim_batch_begin(sp, "second", names, 2, &b), 0);
	snprintf(rec, sizeof(rec), "%s.batch", b.base);
	assert_true(exists_in(sp->data_fd, rec));
	spool_claim_batch_end(sp, &b);
	assert_false(exists_in(sp->data_fd, rec));
}

/* When the record cannot be made, each claim makes its own link. */
static void spool_claimrec_failure_falls_back_to_links(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = &f->sp;
	struct spool_claim_batch b;
	struct spool_claim c;
	drop_files(f);
	set_hook("PICKUPD_SPOOL_FAIL", "batch-record-fsync:5");
	assert_int_equal(spool_claim_batch_begin(sp, "second", names, N_FILES, &b), -1);
	assert_int_equal(errno, EIO);
	set_hook(NULL, NULL);
	assert_int_equal(count_suffix(sp->data_fd, ".batch"), 0);
	assert_int_equal(claim_slot(f, &b, 1, &c), 0);
	assert_int_equal(count_suffix(sp->data_fd, ".from"), 1);
	origin_is(sp, c.id, names[1]);
	spool_claim_batch_end(sp, &b);
}

/* A record of an earlier run: recovery reads it for a claim cut short, keeps
 * it while a claim needs it and drops it with the last; one no claim needs
 * goes at once; the old per-claim links are still read. */
static void spool_claimrec_recovery_reads_and_drops(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = &f->sp;
	struct spool_claim_batch b;
	struct spool_claim c[3];
	struct spool_env e;
	drop_files(f);
	assert_int_equal(spool_claim_batch_begin(sp, "second", names, N_FILES, &b), 0);
	char rec[SPOOL_ID_LEN + 8];
	snprintf(rec, sizeof(rec), "%s.batch", b.base);
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(claim_slot(f, &b, i, &c[i]), 0);
	assert_int_equal(queue_lazy(sp, &c[0]), 0); /* 0 queued */
	/* 1: cut short before its envelope; 2: deferred (durable). */
	make_env(&e, c[2].id);
	assert_int_equal(spool_env_write(sp, SPOOL_DEFERRED, &e), 0);
	spool_env_deinit(&e);
	assert_int_equal(spool_claim_done(sp, &c[2]), 0);
	/* A second batch that claimed nothing, also cut short. */
	struct spool_claim_batch b2;
	assert_int_equal(spool_claim_batch_begin(sp, "second", names, 2, &b2), 0);
	char rec2[SPOOL_ID_LEN + 8];
	snprintf(rec2, sizeof(rec2), "%s.batch", b2.base);
	/* An old single claim's link, cut short too. */
	char old[SPOOL_ID_LEN + 1], link[SPOOL_ID_LEN + 8];
	spool_new_id(sp, old);
	assert_int_equal(spool__write_file(sp->data_fd, old, "hello", 5, 0), 0);
	snprintf(link, sizeof(link), "%s.from", old);
	assert_int_equal(symlinkat("second/old.eml", sp->data_fd, link), 0);

	/* The next run: a fresh spool handle, nothing in memory. */
	struct spool sp2;
	struct spool_recovery r;
	assert_int_equal(spool_open(&sp2, f->sdir), 0);
	assert_int_equal(spool_recover(&sp2, &r), 0);
	assert_int_equal(r.n_orphans, 2);
	for (size_t i = 0; i < r.n_orphans; i++) {
		assert_string_equal(r.orphan_pickups[i], "second");
		if (strcmp(r.orphans[i], old) == 0)
			assert_string_equal(r.orphan_files[i], "old.eml");
		else
			assert_string_equal(r.orphan_files[i], names[1]);
	}
	spool_recovery_deinit(&r);
	assert_true(exists_in(sp2.data_fd, rec));
	assert_false(exists_in(sp2.data_fd, rec2));
	origin_is(&sp2, c[0].id, names[0]);
	/* 0's content goes: 1 still needs the record. */
	assert_int_equal(spool_remove(&sp2, c[0].id, SPOOL_QUEUE), 0);
	assert_true(exists_in(sp2.data_fd, rec));
	/* 1's claim is finished as recovery does (a new ID, the old record
	 * replaced): the record goes. */
	int fd = openat(sp2.data_fd, c[1].id, O_RDONLY);
	struct spool_claim again;
	assert_int_equal(spool_claim(&sp2, sp2.data_fd, c[1].id, fd, "second", names[1], &again),
			 0);
	close(fd);
	assert_false(exists_in(sp2.data_fd, rec));
	origin_is(&sp2, again.id, names[1]);
	spool_close(&sp2);
	spool_claim_batch_end(sp, &b);
	spool_claim_batch_end(sp, &b2);
}

/* pickupctl acting while the daemon is down ran no recovery: removing the
 * messages of a batch still lets the record go with the last of them. */
static void spool_claimrec_goes_without_recovery(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = &f->sp;
	struct spool_claim_batch b;
	struct spool_claim c[2];
	drop_files(f);
	assert_int_equal(spool_claim_batch_begin(sp, "second", names, 2, &b), 0);
	char rec[SPOOL_ID_LEN + 8];
	snprintf(rec, sizeof(rec), "%s.batch", b.base);
	for (size_t i = 0; i < 2; i++) {
		assert_int_equal(claim_slot(f, &b, i, &c[i]), 0);
		assert_int_equal(queue_lazy(sp, &c[i]), 0);
	}
	spool_claim_batch_end(sp, &b);
	struct spool other;
	assert_int_equal(spool_open(&other, f->sdir), 0);
	assert_int_equal(spool_remove(&other, c[0].id, SPOOL_QUEUE), 0);
	assert_true(exists_in(other.data_fd, rec));
	assert_int_equal(spool_remove(&other, c[1].id, SPOOL_QUEUE), 0);
	assert_false(exists_in(other.data_fd, rec));
	spool_close(&other);
}

/* ---- crash tests -------------------------------------------------------------------- */

enum op {
	OP_BATCH, /* ingest_run_batch: record, claims, lazy envelopes, commit */
	OP_SEND	  /* and then the removal of all three, as after their send */
};

#define N_CRASH 3

static const struct {
	enum op op;
	const char *step;
} crashes[] = {
    {OP_BATCH, "batch-record-write"}, {OP_BATCH, "batch-record-fsync"},
    {OP_BATCH, "claim-rename:1"},     {OP_BATCH, "claim-rename:2"},
    {OP_BATCH, "claim-fsync:3"},      {OP_BATCH, "lazy-env-write:2"},
    {OP_BATCH, "lazy-env-rename:3"},  {OP_BATCH, "claim-commit-data"},
    {OP_BATCH, "dir-fsync:1"},	      {OP_BATCH, NULL},
    {OP_SEND, "claim-commit-folder"}, {OP_SEND, "remove-data:2"},
    {OP_SEND, "batch-record-drop"},   {OP_SEND, "remove-datasync"},
    {OP_SEND, "remove-env:3"},	      {OP_SEND, NULL},
};

static void crash_child(struct fixture *f, enum op op)
{
	struct spool *sp = &f->sp;
	struct spool_claim_batch b;
	struct spool_claim c[N_CRASH];
	struct spool_dirsync *ds = spool_dirsync_new();
	int r = spool_claim_batch_begin(sp, "second", names, N_CRASH, &b);
	for (size_t i = 0; r == 0 && i < N_CRASH; i++) {
		r = claim_slot(f, &b, i, &c[i]);
		if (r == 0)
			r = queue_lazy(sp, &c[i]);
	}
	if (r == 0)
		r = spool_claim_commit_data(sp, f->pickup_fd, ds);
	spool_claim_batch_end(sp, &b);
	if (r == 0 && op == OP_SEND) {
		char *ids[N_CRASH];
		int errs[N_CRASH];
		for (size_t i = 0; i < N_CRASH; i++)
			ids[i] = c[i].id;
		r = spool_remove_many(sp, ids, N_CRASH, SPOOL_QUEUE, errs) == N_CRASH ? 0 : -1;
		if (r == 0)
			r = spool_folder_forget(sp, ds);
	}
	_exit(r == 0 ? 0 : 1);
}

/* Which of names[0..N_CRASH) file is; -1 if none. */
static int file_index(const char *file)
{
	for (size_t i = 0; i < N_CRASH; i++)
		if (strcmp(file, names[i]) == 0)
			return (int)i;
	return -1;
}

static void spool_claimrec_crash_at_each_step(void **state)
{
	(void)state;
	for (size_t k = 0; k < ARRAY_SIZE(crashes); k++) {
		void *fx;
		assert_int_equal(setup(&fx), 0);
		struct fixture *f = fx;
		struct spool *sp = &f->sp;
		const char *step = crashes[k].step;
		drop_files(f);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			set_hook("PICKUPD_SPOOL_CRASH", step);
			crash_child(f, crashes[k].op);
		}
		int status;
		assert_int_equal(waitpid(pid, &status, 0), pid);
		if (step && !(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL))
			fail_msg("case %zu (%s): child not killed (status %d)", k, step, status);
		if (!step)
			assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

		struct spool_recovery rec;
		assert_int_equal(spool_recover(sp, &rec), 0);
		/* Each file in exactly one place: its folder, content for
		 * ingest, or queued (or, once removal began, gone); while it is
		 * claimed, its record names its folder and name. */
		unsigned where[N_CRASH] = {0};
		for (size_t i = 0; i < N_CRASH; i++)
			where[i] += exists_in(f->pickup_fd, names[i]);
		for (size_t i = 0; i < rec.n_orphans; i++) {
			if (rec.orphan_pickups[i] == NULL)
				fail_msg("case %zu (%s): orphan %s has no record", k, step,
					 rec.orphans[i]);
			assert_string_equal(rec.orphan_pickups[i], "second");
			int x = file_index(rec.orphan_files[i]);
			assert_true(x >= 0);
			where[x]++;
		}
		char **q;
		size_t n_q;
		assert_int_equal(spool_list(sp, SPOOL_QUEUE, &q, &n_q), 0);
		for (size_t i = 0; i < n_q; i++) {
			char *pk = NULL, *fl = NULL;
			if (spool_claim_origin(sp, q[i], &pk, &fl) < 0)
				fail_msg("case %zu (%s): queued %s has no record", k, step, q[i]);
			assert_string_equal(pk, "second");
			int x = file_index(fl);
			assert_true(x >= 0);
			where[x]++;
			free(pk);
			free(fl);
		}
		size_t placed = 0;
		for (size_t i = 0; i < N_CRASH; i++) {
			if (crashes[k].op == OP_BATCH)
				assert_int_equal(where[i], 1);
			else
				assert_true(where[i] <= 1);
			placed += where[i] && !exists_in(f->pickup_fd, names[i]);
		}
		if (!step && crashes[k].op == OP_SEND)
			assert_int_equal(placed, 0);
		/* The record is there exactly while a claim needs it; no links. */
		assert_int_equal(count_suffix(sp->data_fd, ".batch"), placed ? 1 : 0);
		assert_int_equal(count_suffix(sp->data_fd, ".from"), 0);
		spool_list_free(q, n_q);
		spool_recovery_deinit(&rec);
		teardown(&fx);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(spool_claimrec_block_is_the_batchs_alone, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(spool_claimrec_names_each_claim, setup, teardown),
	    cmocka_unit_test_setup_teardown(spool_claimrec_goes_with_its_last_claim, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(spool_claimrec_failure_falls_back_to_links, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(spool_claimrec_recovery_reads_and_drops, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(spool_claimrec_goes_without_recovery, setup, teardown),
	    cmocka_unit_test(spool_claimrec_crash_at_each_step),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
