/*
 * Purpose: tests of spool/: queue IDs (unique across processes, collisions
 * decided by RENAME_NOREPLACE), the envelope format (round trip, each kind
 * of corruption refused with a reason), each transition, group commit under
 * concurrency, injected fsync/EIO/EROFS failures, recovery, and crash tests
 * that SIGKILL a child at each step of each transition, then recover and
 * check the invariants: nothing lost, nothing half-visible, no message in
 * two states.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
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

/* ---- helpers ------------------------------------------------------------------------ */

struct fixture {
	char dir[64];
	char pickup[96];
	struct spool sp;
	int pickup_fd;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/spooltest.XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	snprintf(f->pickup, sizeof(f->pickup), "%s/pickup", f->dir);
	mkdir(f->pickup, 0750);
	f->pickup_fd = open(f->pickup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char sdir[128];
	snprintf(sdir, sizeof(sdir), "%s/spool", f->dir);
	if (spool_open(&f->sp, sdir) < 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	spool_close(&f->sp);
	close(f->pickup_fd);
	nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* Sets (or clears, with NULL) a fault-injection variable for this process. */
static void make_env(struct spool_env *e, const char *id)
{
	memset(e, 0, sizeof(*e));
	memcpy(e->id, id, SPOOL_ID_LEN + 1);
	e->arrival_ms = 1732350000123;
	e->size = 42;
	e->origin_pickup = xstrdup("default");
	e->origin_file = xstrdup("a b\\c\t.eml");
	e->sender = xstrdup("alice@example.org");
	e->sender_params = xstrdup("RET=HDRS ENVID=x");
	spool_env_add_edit(e, 0, 30, NULL);
	spool_env_add_edit(e, 30, 0, "Received: from pickup\x01 by host");
	spool_env_add_rcpt(e, "bob@example.net", "NOTIFY=FAILURE");
	spool_env_add_rcpt(e, "carol@example.net", NULL);
	e->rcpts[1].status = RCPT_DEFERRED;
	e->rcpts[1].reply = xstrdup("451 4.3.0 try later\r\n");
}

/* Claims a file the way ingest does, without a claim record, and completes
 * the claim (as if its envelope were written). */
static int claim_file(struct spool *sp, int dir_fd, const char *name, int fd,
		      char id_r[SPOOL_ID_LEN + 1])
{
	struct spool_claim c;
	if (spool_claim(sp, dir_fd, name, fd, NULL, NULL, &c) < 0)
		return -1;
	memcpy(id_r, c.id, SPOOL_ID_LEN + 1);
	return spool_claim_done(sp, &c);
}

static size_t count_files(int dir_fd)
{
	int fd = dup(dir_fd);
	DIR *d = fdopendir(fd);
	struct dirent *de;
	size_t c = 0;
	rewinddir(d);
	while ((de = readdir(d)) != NULL)
		c += de->d_name[0] != '.';
	closedir(d);
	return c;
}

/* A message in the spool the way ingest leaves it: content + queue envelope. */
static void queue_message(struct spool *sp, char id[SPOOL_ID_LEN + 1])
{
	struct spool_env e;
	spool_new_id(sp, id);
	assert_int_equal(spool__write_file(sp->data_fd, id, "From: a\r\n\r\nhi\r\n", 15, 0), 0);
	make_env(&e, id);
	assert_int_equal(spool_env_write(sp, SPOOL_QUEUE, &e), 0);
	spool_env_deinit(&e);
}

/* ---- IDs ---------------------------------------------------------------------------- */

#define ID_PROCS 4
#define ID_EACH	 20000

static int cmp_id(const void *a, const void *b)
{
	return memcmp(a, b, SPOOL_ID_LEN);
}

/* Several processes (as several pickupd instances on one host) make IDs at
 * the same time: all are valid, each process's are increasing, none repeats. */
static void spool_ids_unique_across_processes(void **state)
{
	struct fixture *f = *state;
	char path[ID_PROCS][128];
	for (int p = 0; p < ID_PROCS; p++) {
		snprintf(path[p], sizeof(path[p]), "%s/ids.%d", f->dir, p);
		if (fork() == 0) {
			struct spool sp;
			FILE *out = fopen(path[p], "w");
			if (out == NULL || spool_open(&sp, f->sp.dir) < 0)
				_exit(1);
			char prev[SPOOL_ID_LEN + 1] = "";
			for (int i = 0; i < ID_EACH; i++) {
				char id[SPOOL_ID_LEN + 1];
				spool_new_id(&sp, id);
				if (!spool_id_valid(id) || strcmp(id, prev) <= 0)
					_exit(2);
				memcpy(prev, id, sizeof(id));
				fwrite(id, 1, SPOOL_ID_LEN, out);
			}
			spool_close(&sp);
			_exit(fclose(out) == 0 ? 0 : 3);
		}
	}
	for (int p = 0; p < ID_PROCS; p++) {
		int status;
		wait(&status);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	size_t total = (size_t)ID_PROCS * ID_EACH * SPOOL_ID_LEN, got = 0;
	char *all = malloc(total);
	for (int p = 0; p < ID_PROCS; p++) {
		FILE *in = fopen(path[p], "r");
		assert_non_null(in);
		got += fread(all + got, 1, total - got, in);
		fclose(in);
	}
	assert_int_equal(got, total);
	qsort(all, (size_t)ID_PROCS * ID_EACH, SPOOL_ID_LEN, cmp_id);
	for (size_t i = 1; i < (size_t)ID_PROCS * ID_EACH; i++)
		assert_true(
		    memcmp(all + (i - 1) * SPOOL_ID_LEN, all + i * SPOOL_ID_LEN, SPOOL_ID_LEN) < 0);
	free(all);
}

/* More than 4096 IDs in one millisecond, or a clock step back: still increasing. */
static void spool_ids_increase_past_counter_and_clock_step(void **state)
{
	struct fixture *f = *state;
	char prev[SPOOL_ID_LEN + 1], id[SPOOL_ID_LEN + 1];
	f->sp.last_ms = (int64_t)1 << 46; /* far in the future: the clock "went back" */
	spool_new_id(&f->sp, prev);
	for (int i = 0; i < 10000; i++) {
		spool_new_id(&f->sp, id);
		assert_true(strcmp(id, prev) > 0);
		memcpy(prev, id, sizeof(id));
	}
}

/* When the name is taken anyway (another instance, a restart with the same
 * PID in the same millisecond), RENAME_NOREPLACE refuses and the claim takes
 * the next ID; the existing file is untouched. */
static void spool_claim_collision_takes_next_id(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = &f->sp;
	char predicted[SPOOL_ID_LEN + 1], id[SPOOL_ID_LEN + 1];
	int64_t future = (int64_t)1 << 45;

	sp->last_ms = future;
	sp->seq = 0;
	spool_new_id(sp, predicted); /* seq 1 */
	sp->last_ms = future;
	sp->seq = 0;
	assert_int_equal(spool__write_file(sp->data_fd, predicted, "other", 5, 0), 0);
	assert_int_equal(spool__write_file(f->pickup_fd, "m.eml", "mine", 4, 0), 0);
	int fd = openat(f->pickup_fd, "m.eml", O_RDONLY);
	assert_int_equal(claim_file(sp, f->pickup_fd, "m.eml", fd, id), 0);
	close(fd);
	assert_string_not_equal(id, predicted);
	struct buf b = BUF_INIT;
	assert_int_equal(spool__read_all(sp->data_fd, predicted, 100, &b), 0);
	assert_memory_equal(b.data, "other", 5);
	buf_clear(&b);
	assert_int_equal(spool__read_all(sp->data_fd, id, 100, &b), 0);
	assert_memory_equal(b.data, "mine", 4);
	buf_deinit(&b);
	assert_false(exists_in(f->pickup_fd, "m.eml"));
}

/* ---- envelope format ---------------------------------------------------------------- */

static void spool_env_round_trip(void **state)
{
	(void)state;
	struct spool_env e, p;
	struct buf t1 = BUF_INIT, t2 = BUF_INIT, why = BUF_INIT;
	make_env(&e, "0193A1B2C3D4E0012A00");
	e.next_ms = 1732350999000;
	e.attempts = 3;
	e.eightbit = e.smtputf8 = e.dot_stuffed = true;
	e.reason = xstrdup("no \\ reason\n");
	spool_env_format(&e, &t1);
	/* Greppable: one field per line, control characters escaped. */
	assert_non_null(
	    strstr(t1.data, "\nrcpt pending <bob@example.net>\nparams NOTIFY=FAILURE\n"));
	assert_non_null(strstr(t1.data, "\nfile a b\\x5Cc\\x09.eml\n"));
	assert_int_equal(spool_env_parse(t1.data, t1.len, &p, &why), 0);
	assert_string_equal(p.id, e.id);
	assert_int_equal(p.next_ms, e.next_ms);
	assert_int_equal(p.attempts, 3);
	assert_true(p.eightbit && p.smtputf8 && p.dot_stuffed);
	assert_string_equal(p.origin_file, e.origin_file);
	assert_string_equal(p.sender_params, e.sender_params);
	assert_int_equal(p.n_rcpts, 2);
	assert_int_equal(p.rcpts[1].status, RCPT_DEFERRED);
	assert_string_equal(p.rcpts[1].reply, e.rcpts[1].reply);
	assert_null(p.rcpts[1].params);
	assert_int_equal(p.n_edits, 2);
	assert_string_equal(p.edits[1].insert, e.edits[1].insert);
	assert_string_equal(p.reason, e.reason);
	spool_env_format(&p, &t2);
	assert_int_equal(t1.len, t2.len);
	assert_memory_equal(t1.data, t2.data, t1.len);
	/* The null sender. */
	free(p.sender);
	p.sender = xstrdup("");
	buf_clear(&t2);
	spool_env_format(&p, &t2);
	assert_non_null(strstr(t2.data, "\nsender <>\n"));
	spool_env_deinit(&p);
	assert_int_equal(spool_env_parse(t2.data, t2.len, &p, &why), 0);
	assert_string_equal(p.sender, "");
	spool_env_deinit(&p);
	spool_env_deinit(&e);
	buf_deinit(&t1);
	buf_deinit(&t2);
	buf_deinit(&why);
}

#define GOOD_HEAD "pickupd-envelope 1\nid 0193A1B2C3D4E0012A00\narrival 1\nsender <a@b>\n"

static const struct {
	const char *name;
	const char *text;
	const char *reason;
} corrupt[] = {
    {"empty", "", "empty file"},
    {"torn mid-line", GOOD_HEAD "rcpt pending <x@y", "not terminated (torn"},
    {"torn at a line end", GOOD_HEAD "rcpt pending <x@y>\n", "no \"end\" line"},
    {"other version", "pickupd-envelope 3\nend\n", "not a version 1 or 2"},
    {"v2 without checksum",
     "pickupd-envelope 2\nid 0193A1B2C3D4E0012A00\narrival 1\nsender <a@b>\nend\n",
     "no checksum line"},
    {"v2 bad checksum",
     "pickupd-envelope 2\nid 0193A1B2C3D4E0012A00\narrival 1\nsender <a@b>\n"
     "crc32c 00000000\nend\n",
     "checksum mismatch"},
    {"v2 lower-case checksum", "pickupd-envelope 2\ncrc32c 5a0c33e1\nend\n", "bad value"},
    {"checksum in v1", GOOD_HEAD "crc32c 00000000\nend\n", "unknown field"},
    {"unknown key", GOOD_HEAD "colour blue\nend\n", "unknown field"},
    {"bad escape", GOOD_HEAD "reason a\\q\nend\n", "bad value"},
    {"lower-case escape", GOOD_HEAD "reason a\\x0a\nend\n", "bad value"},
    {"escaped NUL", GOOD_HEAD "reason a\\x00\nend\n", "bad value"},
    {"short escape", GOOD_HEAD "reason a\\x4\nend\n", "bad value"},
    {"control char", GOOD_HEAD "reason a\tb\nend\n", "bad value"},
    {"CR", GOOD_HEAD "reason ab\r\nend\n", "bad value"},
    {"data after end", GOOD_HEAD "end\nrcpt pending <x@y>\n", "data after \"end\""},
    {"blank after end", GOOD_HEAD "end\n\n", "data after \"end\""},
    {"no value", GOOD_HEAD "attempts\nend\n", "line without a value"},
    {"bad number", GOOD_HEAD "attempts 1x\nend\n", "bad value"},
    {"huge number", GOOD_HEAD "size 99999999999999999999\nend\n", "bad value"},
    {"bad id", "pickupd-envelope 1\nid 0193a1b2c3d4e0012a00\nend\n", "bad value"},
    {"no id", "pickupd-envelope 1\narrival 1\nsender <a@b>\nend\n", "missing id"},
    {"no sender", "pickupd-envelope 1\nid 0193A1B2C3D4E0012A00\narrival 1\nend\n",
     "missing sender"},
    {"two senders", GOOD_HEAD "sender <c@d>\nend\n", "bad value"},
    {"params orphan", "pickupd-envelope 1\nparams X\nend\n", "bad value"},
    {"reply without rcpt", GOOD_HEAD "reply 250 ok\nend\n", "bad value"},
    {"bad status", GOOD_HEAD "rcpt sending <x@y>\nend\n", "bad value"},
    {"empty rcpt", GOOD_HEAD "rcpt pending <>\nend\n", "bad value"},
    {"edits out of order", GOOD_HEAD "edit 10 5\nedit 12 0\nend\n", "edits out of order"},
    {"bad yes/no", GOOD_HEAD "smtputf8 maybe\nend\n", "bad value"},
};

static void spool_env_refuses_corruption(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(corrupt); i++) {
		struct spool_env e;
		struct buf why = BUF_INIT;
		int r = spool_env_parse(corrupt[i].text, strlen(corrupt[i].text), &e, &why);
		if (r == 0 || why.data == NULL || strstr(why.data, corrupt[i].reason) == NULL)
			print_error("case \"%s\": r=%d reason=%s\n", corrupt[i].name, r,
				    why.data ? why.data : "(none)");
		assert_int_equal(r, -1);
		assert_non_null(strstr(why.data, corrupt[i].reason));
		assert_non_null(strstr(why.data, "corrupt envelope"));
		buf_deinit(&why);
	}
	/* The good head itself parses: the cases above fail for their own reason. */
	struct spool_env e;
	assert_int_equal(spool_env_parse(GOOD_HEAD "end\n", strlen(GOOD_HEAD "end\n"), &e, NULL),
			 0);
	spool_env_deinit(&e);
}

/* Version 2 carries a CRC-32C: a flipped bit anywhere, even one that leaves
 * every field well-formed (user@example.com -> user@example.coi), is refused,
 * and the reason says so when the structure itself still holds. */
static void spool_env_checksum_catches_every_bit_flip(void **state)
{
	(void)state;
	struct spool_env e, p;
	struct buf t = BUF_INIT, why = BUF_INIT;
	make_env(&e, "0193A1B2C3D4E0012A00");
	free(e.rcpts[0].addr);
	e.rcpts[0].addr = xstrdup("user@example.com");
	spool_env_format(&e, &t);
	assert_true(strncmp(t.data, "pickupd-envelope 2\n", 19) == 0);
	assert_non_null(strstr(t.data, "\ncrc32c "));
	for (size_t i = 0; i < t.len; i++) {
		for (int bit = 0; bit < 8; bit++) {
			t.data[i] ^= (char)(1 << bit);
			int r = spool_env_parse(t.data, t.len, &p, NULL);
			if (r == 0)
				print_error("flip of bit %d at offset %zu accepted\n", bit, i);
			assert_int_equal(r, -1);
			t.data[i] ^= (char)(1 << bit);
		}
	}
	/* The very case of the field report. */
	char *at = strstr(t.data, "example.com>");
	assert_non_null(at);
	at[10] = 'i';
	assert_int_equal(spool_env_parse(t.data, t.len, &p, &why), -1);
	assert_non_null(strstr(why.data, "checksum mismatch"));
	at[10] = 'm';
	assert_int_equal(spool_env_parse(t.data, t.len, &p, NULL), 0);
	assert_string_equal(p.rcpts[0].addr, "user@example.com");
	spool_env_deinit(&p);
	spool_env_deinit(&e);
	buf_deinit(&t);
	buf_deinit(&why);
}

/* Envelopes written before version 2 are still read. */
static void spool_env_reads_version_1(void **state)
{
	(void)state;
	static const char v1[] = "pickupd-envelope 1\nid 0193A1B2C3D4E0012A00\narrival 1\n"
				 "attempts 2\nsender <a@b>\nrcpt pending <c@d>\nend\n";
	struct spool_env p;
	assert_int_equal(spool_env_parse(v1, strlen(v1), &p, NULL), 0);
	assert_int_equal(p.attempts, 2);
	assert_string_equal(p.rcpts[0].addr, "c@d");
	spool_env_deinit(&p);
}

/* Every proper prefix of a valid envelope (a torn write) is refused. */
static void spool_env_refuses_every_prefix(void **state)
{
	(void)state;
	struct spool_env e, p;
	struct buf t = BUF_INIT;
	make_env(&e, "0193A1B2C3D4E0012A00");
	spool_env_format(&e, &t);
	for (size_t n = 0; n < t.len; n++)
		assert_int_equal(spool_env_parse(t.data, n, &p, NULL), -1);
	assert_int_equal(spool_env_parse(t.data, t.len, &p, NULL), 0);
	spool_env_deinit(&p);
	spool_env_deinit(&e);
	buf_deinit(&t);
}

/* ---- transitions -------------------------------------------------------------------- */

static void spool_env_write_is_durable_and_readable(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = &f->sp;
	char id[SPOOL_ID_LEN + 1];
	struct spool_env e, r;
	struct buf why = BUF_INIT;
	spool_new_id(sp, id);
	make_env(&e, id);
	e.next_ms = 1900000000123;
	assert_int_equal(spool_env_write(sp, SPOOL_DEFERRED, &e), 0);
	assert_int_equal(count_files(sp->tmp_fd), 0);
	struct stat st;
	assert_int_equal(fstatat(sp->state_fd[SPOOL_DEFERRED], id, &st, 0), 0);
	assert_int_equal(st.st_mtim.tv_sec, 1900000000);
	assert_int_equal(spool_env_read(sp, SPOOL_DEFERRED, id, &r, &why), 0);
	assert_int_equal(r.next_ms, e.next_ms);
	spool_env_deinit(&r);
	/* Rewriting replaces it. */
	e.attempts = 7;
	assert_int_equal(spool_env_write(sp, SPOOL_DEFERRED, &e), 0);
	assert_int_equal(spool_env_read(sp, SPOOL_DEFERRED, id, &r, &why), 0);
	assert_int_equal(r.attempts, 7);
	spool_env_deinit(&r);
	/* scan reports the mtime without opening the file. */
	struct spool_entry *v;
	size_t n;
	assert_int_equal(spool_scan(sp, SPOOL_DEFERRED, &v, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(v[0].id, id);
	assert_int_equal(v[0].due_ms, 1900000000123);
	free(v);
	/* A file holding another ID is refused. */
	assert_int_equal(renameat(sp->state_fd[SPOOL_DEFERRED], id, sp->state_fd[SPOOL_DEFERRED],
				  "0000000000000000000A"),
			 0);
	buf_clear(&why);
	assert_int_equal(spool_env_read(sp, SPOOL_DEFERRED, "0000000000000000000A", &r, &why), -1);
	assert_int_equal(errno, EBADMSG);
	spool_env_deinit(&e);
	buf_deinit(&why);
}

static void spool_move_and_list(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = &f->sp;
	char a[SPOOL_ID_LEN + 1], b[SPOOL_ID_LEN + 1];
	queue_message(sp, a);
	queue_message(sp, b);
	assert_int_equal(spool_move(sp, a, SPOOL_QUEUE, SPOOL_HOLD), 0);
	assert_int_equal(spool_move(sp, a, SPOOL_HOLD, SPOOL_HOLD), 0);
	assert_false(exists_in(sp->state_fd[SPOOL_QUEUE], a));
	assert_true(exists_in(sp->state_fd[SPOOL_HOLD], a));
	assert_int_equal(spool_move(sp, a, SPOOL_QUEUE, SPOOL_DEFERRED), -1);
	assert_int_equal(errno, ENOENT);
	char **ids;
	size_t n;
	assert_int_equal(spool_list(sp, SPOOL_QUEUE, &ids, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(ids[0], b);
	spool_list_free(ids, n);
	assert_int_equal(spool_move(sp, b, SPOOL_QUEUE, SPOOL_BADMAIL), 0);
	assert_int_equal(spool_move(sp, a, SPOOL_HOLD, SPOOL_QUEUE), 0);
	struct spool_recovery rec;
	assert_int_equal(spool_recover(sp, &rec), 0);
	assert_int_equal(rec.counts[SPOOL_QUEUE], 1);
	assert_int_equal(rec.counts[SPOOL_BADMAIL], 1);
	assert_int_equal(rec.counts[SPOOL_HOLD], 0);
	spool_recovery_deinit(&rec);
}

static void spool_remove_content_first(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = &f->sp;
	char id[SPOOL_ID_LEN + 1];
	queue_message(sp, id);
	assert_int_equal(spool_remove(sp, id, SPOOL_QUEUE), 0);
	assert_false(exists_in(sp->data_fd, id));
	assert_false(exists_in(sp->state_fd[SPOOL_QUEUE], id));
	/* Removing again is not an error (a retry after a cut-short removal). */
	assert_int_equal(spool_remove(sp, id, SPOOL_QUEUE), 0);
}

static void spool_claim_moves_the_file(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = &f->sp;
	char id[SPOOL_ID_LEN + 1];
	assert_int_equal(spool__write_file(f->pickup_fd, "x.eml", "hello", 5, 0), 0);
	int fd = openat(f->pickup_fd, "x.eml", O_RDONLY);
	assert_int_equal(claim_file(sp, f->pickup_fd, "x.eml", fd, id), 0);
	close(fd);
	assert_true(spool_id_valid(id));
	assert_false(exists_in(f->pickup_fd, "x.eml"));
	assert_true(exists_in(sp->data_fd, id));
	/* Gone meanwhile: ENOENT, nothing made. */
	assert_int_equal(claim_file(sp, f->pickup_fd, "x.eml", -1, id), -1);
	assert_int_equal(errno, ENOENT);
}

/* A claim whose envelope cannot be written is undone at once: the file is
 * back under its name, no content and no record stay in data/. */
static void spool_claim_undo_puts_the_file_back(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = &f->sp;
	struct spool_claim c;
	char link[SPOOL_ID_LEN + 8], target[64];
	assert_int_equal(spool__write_file(f->pickup_fd, "u.eml", "hello", 5, 0), 0);
	int fd = openat(f->pickup_fd, "u.eml", O_RDONLY);
	assert_int_equal(spool_claim(sp, f->pickup_fd, "u.eml", fd, "second", NULL, &c), 0);
	close(fd);
	assert_false(c.copied);
	assert_false(exists_in(f->pickup_fd, "u.eml"));
	snprintf(link, sizeof(link), "%s.from", c.id);
	ssize_t n = readlinkat(sp->data_fd, link, target, sizeof(target) - 1);
	assert_true(n > 0);
	target[n] = '\0';
	assert_string_equal(target, "second/u.eml");
	assert_int_equal(spool_claim_undo(sp, &c), 0);
	assert_true(exists_in(f->pickup_fd, "u.eml"));
	assert_false(exists_in(sp->data_fd, c.id));
	assert_false(exists_in(sp->data_fd, link));
	/* Claimed again and finished: the record goes, the content stays. */
	fd = openat(f->pickup_fd, "u.eml", O_RDONLY);
	assert_int_equal(spool_claim(sp, f->pickup_fd, "u.eml", fd, "second", NULL, &c), 0);
	close(fd);
	assert_int_equal(spool_claim_done(sp, &c), 0);
	snprintf(link, sizeof(link), "%s.from", c.id);
	assert_false(exists_in(sp->data_fd, link));
	assert_true(exists_in(sp->data_fd, c.id));
}

/* Across file systems (EXDEV) the content is copied and the original stays
 * until the envelope is durable: undo drops the copy, done removes the
 * original. Needs /dev/shm on another file system than /tmp. */
static void spool_claim_copy_keeps_the_original_until_done(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = &f->sp;
	struct stat a, b;
	char dir[] = "/dev/shm/spooltest.XXXXXX";
	if (stat("/dev/shm", &a) < 0 || fstat(sp->data_fd, &b) < 0 || a.st_dev == b.st_dev ||
	    mkdtemp(dir) == NULL)
		skip();
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct spool_claim c;
	assert_int_equal(spool__write_file(dfd, "x.eml", "hello", 5, 0), 0);
	int fd = openat(dfd, "x.eml", O_RDONLY);
	assert_int_equal(spool_claim(sp, dfd, "x.eml", fd, "default", NULL, &c), 0);
	assert_true(c.copied);
	assert_true(exists_in(dfd, "x.eml"));
	assert_true(exists_in(sp->data_fd, c.id));
	assert_int_equal(spool_claim_undo(sp, &c), 0);
	assert_true(exists_in(dfd, "x.eml"));
	assert_false(exists_in(sp->data_fd, c.id));
	assert_int_equal(spool_claim(sp, dfd, "x.eml", fd, "default", NULL, &c), 0);
	assert_int_equal(spool_claim_done(sp, &c), 0);
	assert_false(exists_in(dfd, "x.eml"));
	assert_true(exists_in(sp->data_fd, c.id));
	struct buf t = BUF_INIT;
	assert_int_equal(spool__read_all(sp->data_fd, c.id, 100, &t), 0);
	assert_memory_equal(t.data, "hello", 5);
	buf_deinit(&t);
	assert_int_equal(count_files(sp->data_fd), 1); /* no record left */
	close(fd);
	close(dfd);
	rmdir(dir);
}

/* ---- group commit ------------------------------------------------------------------- */

#define GC_THREADS 8
#define GC_EACH	   40

static void *gc_worker(void *arg)
{
	struct spool *sp = arg;
	for (int i = 0; i < GC_EACH; i++) {
		char id[SPOOL_ID_LEN + 1];
		struct spool_env e;
		spool_new_id(sp, id);
		if (spool__write_file(sp->data_fd, id, "x", 1, 0) < 0)
			return (void *)1;
		make_env(&e, id);
		int r = spool_env_write(sp, SPOOL_QUEUE, &e);
		spool_env_deinit(&e);
		if (r < 0 || spool_move(sp, id, SPOOL_QUEUE, SPOOL_DEFERRED) < 0)
			return (void *)1;
		if (i % 2 && spool_remove(sp, id, SPOOL_DEFERRED) < 0)
			return (void *)1;
	}
	return NULL;
}

/* Many threads, as the daemon's pool: every transition succeeds and lands. */
static void spool_group_commit_concurrent(void **state)
{
	struct fixture *f = *state;
	pthread_t th[GC_THREADS];
	for (int i = 0; i < GC_THREADS; i++)
		pthread_create(&th[i], NULL, gc_worker, &f->sp);
	for (int i = 0; i < GC_THREADS; i++) {
		void *r;
		pthread_join(th[i], &r);
		assert_null(r);
	}
	assert_int_equal(count_files(f->sp.state_fd[SPOOL_DEFERRED]), GC_THREADS * GC_EACH / 2);
	assert_int_equal(count_files(f->sp.state_fd[SPOOL_QUEUE]), 0);
	assert_int_equal(count_files(f->sp.data_fd), GC_THREADS * GC_EACH / 2);
	/* The removed envelopes kept for reuse (the bound is not reached). */
	assert_true(GC_THREADS * GC_EACH / 2 < SPOOL_SPARES_MAX);
	assert_int_equal(spool_spares(&f->sp), GC_THREADS * GC_EACH / 2);
	assert_int_equal(count_files(f->sp.tmp_fd), GC_THREADS * GC_EACH / 2);
}

struct claim_run {
	struct spool *sp;
	int pickup_fd;
	struct spool_dirsync *ds;
	atomic_int next;
};

static void *claim_worker(void *arg)
{
	struct claim_run *cr = arg;
	for (int i; (i = atomic_fetch_add(&cr->next, 1)) < GC_THREADS * GC_EACH;) {
		char name[32];
		snprintf(name, sizeof(name), "m%d.eml", i);
		int fd = openat(cr->pickup_fd, name, O_RDONLY);
		struct spool_claim c;
		int r = spool_claim_group(cr->sp, cr->pickup_fd, cr->ds, name, fd, NULL, NULL, &c);
		close(fd);
		if (r < 0)
			return (void *)1;
	}
	return NULL;
}

/* Claims from one folder on many threads through the folder's group commit:
 * every claim lands, none is lost or doubled. */
static void spool_claim_group_shares_folder_fsyncs(void **state)
{
	struct fixture *f = *state;
	struct claim_run cr = {.sp = &f->sp, .pickup_fd = f->pickup_fd};
	cr.ds = spool_dirsync_new();
	atomic_init(&cr.next, 0);
	for (int i = 0; i < GC_THREADS * GC_EACH; i++) {
		char name[32];
		snprintf(name, sizeof(name), "m%d.eml", i);
		assert_int_equal(spool__write_file(f->pickup_fd, name, "x", 1, 0), 0);
	}
	pthread_t th[GC_THREADS];
	for (int i = 0; i < GC_THREADS; i++)
		pthread_create(&th[i], NULL, claim_worker, &cr);
	for (int i = 0; i < GC_THREADS; i++) {
		void *r;
		pthread_join(th[i], &r);
		assert_null(r);
	}
	assert_int_equal(count_files(f->pickup_fd), 0);
	assert_int_equal(count_files(f->sp.data_fd), GC_THREADS * GC_EACH);
	spool_dirsync_free(cr.ds);
}

static void *fail_worker(void *arg)
{
	struct spool *sp = arg;
	char id[SPOOL_ID_LEN + 1];
	struct spool_env e;
	spool_new_id(sp, id);
	make_env(&e, id);
	int r = spool_env_write(sp, SPOOL_QUEUE, &e);
	spool_env_deinit(&e);
	return (void *)(intptr_t)(r < 0 ? errno : 0);
}

/* A failing directory fsync fails every caller it may have covered, and the
 * directory keeps working afterwards (reopened, not retried). */
static void spool_dir_fsync_error_fails_callers(void **state)
{
	struct fixture *f = *state;
	pthread_t th[GC_THREADS];
	set_hook("PICKUPD_SPOOL_FAIL", "dir-fsync:5");
	for (int i = 0; i < GC_THREADS; i++)
		pthread_create(&th[i], NULL, fail_worker, &f->sp);
	for (int i = 0; i < GC_THREADS; i++) {
		void *r;
		pthread_join(th[i], &r);
		assert_int_equal((intptr_t)r, EIO);
	}
	set_hook(NULL, NULL);
	void *r = fail_worker(&f->sp);
	assert_null(r);
	assert_false(spool_readonly(&f->sp));
}

/* A first envelope written lazily reads back; a torn one (what a lost
 * writeback leaves) is told apart from a whole one. */
static void spool_env_lazy_and_torn(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = &f->sp;
	char id[SPOOL_ID_LEN + 1];
	struct spool_env e, back;
	spool_new_id(sp, id);
	make_env(&e, id);
	assert_int_equal(spool_env_create_lazy(sp, &e), 0);
	assert_int_equal(spool_env_create_lazy(sp, &e), -1); /* never replaces */
	assert_int_equal(errno, EEXIST);
	assert_int_equal(count_files(sp->tmp_fd), 0);
	assert_int_equal(spool_env_read(sp, SPOOL_QUEUE, id, &back, NULL), 0);
	assert_string_equal(back.sender, e.sender);
	spool_env_deinit(&back);
	assert_false(spool_env_torn(sp, SPOOL_QUEUE, id));
	struct buf text = BUF_INIT;
	spool_env_format(&e, &text);
	static const size_t cut[] = {0, 1, 20, 0};
	for (size_t i = 0; i < ARRAY_SIZE(cut); i++) {
		size_t n = i == ARRAY_SIZE(cut) - 1 ? text.len - 1 : cut[i];
		assert_int_equal(unlinkat(sp->state_fd[SPOOL_QUEUE], id, 0), 0);
		assert_int_equal(spool__write_file(sp->state_fd[SPOOL_QUEUE], id, text.data, n, 0),
				 0);
		assert_true(spool_env_torn(sp, SPOOL_QUEUE, id));
	}
	/* Zeros where the text should be (blocks allocated, data never written). */
	memset(text.data, 0, text.len);
	assert_int_equal(unlinkat(sp->state_fd[SPOOL_QUEUE], id, 0), 0);
	assert_int_equal(spool__write_file(sp->state_fd[SPOOL_QUEUE], id, text.data, text.len, 0),
			 0);
	assert_true(spool_env_torn(sp, SPOOL_QUEUE, id));
	buf_deinit(&text);
	spool_env_deinit(&e);
}

/* Old blocks under a new envelope's name (a crash before the writeback of a
 * file that got a freed envelope's blocks, or a reused one): a whole,
 * checksummed envelope of another ID, or the new text followed by an old
 * one's tail. Never read as the message's envelope, and torn (its content
 * is ingested again), not corrupt (quarantined); a damaged field of the
 * right ID stays corrupt. */
static void spool_env_torn_when_stale(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = &f->sp;
	char id[SPOOL_ID_LEN + 1], other[SPOOL_ID_LEN + 1];
	struct spool_env e, o, back;
	struct buf mine = BUF_INIT, old = BUF_INIT, why = BUF_INIT;
	spool_new_id(sp, other);
	spool_new_id(sp, id);
	make_env(&e, id);
	make_env(&o, other);
	free(o.rcpts[0].addr);
	o.rcpts[0].addr = xstrdup("someone.else@example.com");
	spool_env_add_rcpt(&o, "and.another@example.com", NULL); /* longer than mine */
	spool_env_format(&e, &mine);
	spool_env_format(&o, &old);
	assert_true(old.len > mine.len);

	int q = sp->state_fd[SPOOL_QUEUE];
	assert_int_equal(spool__write_file(q, id, old.data, old.len, 0), 0);
	assert_int_equal(spool_env_read(sp, SPOOL_QUEUE, id, &back, &why), -1);
	assert_int_equal(errno, EBADMSG);
	assert_non_null(strstr(why.data, other));
	assert_true(spool_env_torn(sp, SPOOL_QUEUE, id));

	/* The new text over the old, at the old size. */
	memcpy(old.data, mine.data, mine.len);
	assert_int_equal(unlinkat(q, id, 0), 0);
	assert_int_equal(spool__write_file(q, id, old.data, old.len, 0), 0);
	assert_int_equal(spool_env_read(sp, SPOOL_QUEUE, id, &back, NULL), -1);
	assert_true(spool_env_torn(sp, SPOOL_QUEUE, id));

	/* Damage to a field of its own: corrupt, as before. */
	char *at = strstr(mine.data, "bob@");
	at[0] = 'r';
	assert_int_equal(unlinkat(q, id, 0), 0);
	assert_int_equal(spool__write_file(q, id, mine.data, mine.len, 0), 0);
	assert_int_equal(spool_env_read(sp, SPOOL_QUEUE, id, &back, NULL), -1);
	assert_int_equal(errno, EBADMSG);
	assert_false(spool_env_torn(sp, SPOOL_QUEUE, id));
	buf_deinit(&mine);
	buf_deinit(&old);
	buf_deinit(&why);
	spool_env_deinit(&e);
	spool_env_deinit(&o);
}

/* ---- spare envelopes (spool/spare.c) ------------------------------------------------ */

static ino_t inode_of(int dir_fd, const char *name, mode_t *mode_r, off_t *size_r)
{
	struct stat st;
	assert_int_equal(fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW), 0);
	if (mode_r)
		*mode_r = st.st_mode & 07777;
	if (size_r)
		*size_r = st.st_size;
	return st.st_ino;
}

/* A sent message (marked, then removed) leaves its envelope as a spare; the
 * next lazy first envelope is written over it: the same inode, the text
 * read back whole at its own length (the old one was longer), the mode of
 * a new file (never the being-sent mark), nothing left in tmp/. */
static void spool_spare_reused_by_lazy_envelope(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = &f->sp;
	char old[SPOOL_ID_LEN + 1], id[SPOOL_ID_LEN + 1];
	struct spool_env e, back;
	queue_message(sp, old);
	assert_int_equal(spool_mark_sending(sp, old), 0);
	ino_t ino = inode_of(sp->state_fd[SPOOL_QUEUE], old, NULL, NULL);
	assert_int_equal(spool_remove(sp, old, SPOOL_QUEUE), 0);
	assert_false(exists_in(sp->state_fd[SPOOL_QUEUE], old));
	assert_int_equal(spool_spares(sp), 1);
	assert_int_equal(count_files(sp->tmp_fd), 1);

	spool_new_id(sp, id);
	memset(&e, 0, sizeof(e));
	memcpy(e.id, id, sizeof(e.id));
	e.arrival_ms = 1732350000999;
	e.sender = xstrdup("a@b.example");
	spool_env_add_rcpt(&e, "c@d.example", NULL);
	struct buf text = BUF_INIT;
	spool_env_format(&e, &text);
	assert_int_equal(spool_env_create_lazy(sp, &e), 0);
	mode_t mode;
	off_t size;
	assert_int_equal(inode_of(sp->state_fd[SPOOL_QUEUE], id, &mode, &size), ino);
	assert_int_equal(mode, sp->env_mode);
	assert_int_equal(size, (off_t)text.len);
	assert_int_equal(spool_spares(sp), 0);
	assert_int_equal(count_files(sp->tmp_fd), 0);
	assert_int_equal(spool_env_read(sp, SPOOL_QUEUE, id, &back, NULL), 0);
	assert_string_equal(back.rcpts[0].addr, "c@d.example");
	assert_int_equal(back.n_rcpts, 1);
	spool_env_deinit(&back);
	assert_false(spool_env_torn(sp, SPOOL_QUEUE, id));
	/* Without a spare: a new file, as before. */
	spool_env_deinit(&e);
	make_env(&e, id);
	spool_new_id(sp, e.id);
	assert_int_equal(spool_env_create_lazy(sp, &e), 0);
	assert_true(inode_of(sp->state_fd[SPOOL_QUEUE], e.id, NULL, NULL) != ino);
	buf_deinit(&text);
	spool_env_deinit(&e);
}

/* At most SPOOL_SPARES_MAX spares (the rest are unlinked, as before), and
 * none outlives the spool: spool_close unlinks them. */
static void spool_spares_bounded(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = &f->sp;
	char *ids[SPOOL_SPARES_MAX + 3];
	int errs[SPOOL_SPARES_MAX + 3];
	for (size_t i = 0; i < ARRAY_SIZE(ids); i++) {
		ids[i] = malloc(SPOOL_ID_LEN + 1);
		queue_message(sp, ids[i]);
	}
	/* Through both removal paths. */
	assert_int_equal(spool_remove(sp, ids[0], SPOOL_QUEUE), 0);
	assert_int_equal(spool_remove_many(sp, ids + 1, ARRAY_SIZE(ids) - 1, SPOOL_QUEUE, errs),
			 ARRAY_SIZE(ids) - 1);
	assert_int_equal(count_files(sp->state_fd[SPOOL_QUEUE]), 0);
	assert_int_equal(count_files(sp->data_fd), 0);
	assert_int_equal(spool_spares(sp), SPOOL_SPARES_MAX);
	assert_int_equal(count_files(sp->tmp_fd), SPOOL_SPARES_MAX);
	char sdir[128];
	snprintf(sdir, sizeof(sdir), "%s/spool", f->dir);
	spool_close(sp);
	assert_int_equal(spool_open(sp, sdir), 0);
	assert_int_equal(count_files(sp->tmp_fd), 0);
	for (size_t i = 0; i < ARRAY_SIZE(ids); i++)
		free(ids[i]);
}

/* The process that recovered the spool (the daemon) keeps its spares at
 * spool_close; the next recovery takes them back (their inodes reused, not
 * counted as cleaned) and still removes the rest of tmp/: other files, and
 * what is named as a spare but is not a plain file of one link. Without a
 * recovery (pickupctl), spool_close unlinks its own. */
static ino_t spare_inode(struct spool *sp, unsigned i)
{
	char name[64];
	snprintf(name, sizeof(name), "%u.%u.spare", (unsigned)(sp->spares[i] >> 32),
		 (unsigned)sp->spares[i]);
	return inode_of(sp->tmp_fd, name, NULL, NULL);
}

static int cmp_ino(const void *a, const void *b)
{
	ino_t x = *(const ino_t *)a, y = *(const ino_t *)b;
	return x < y ? -1 : x > y;
}

static void spool_spares_kept_across_restarts(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = &f->sp;
	struct spool_recovery rec;
	char ids[3][SPOOL_ID_LEN + 1];
	int errs[3];
	char *idp[3] = {ids[0], ids[1], ids[2]};
	assert_int_equal(spool_recover(sp, &rec), 0);
	spool_recovery_deinit(&rec);
	for (int i = 0; i < 3; i++)
		queue_message(sp, ids[i]);
	assert_int_equal(spool_remove_many(sp, idp, 3, SPOOL_QUEUE, errs), 3);
	assert_int_equal(spool_spares(sp), 3);
	ino_t before[3], after[3];
	for (unsigned i = 0; i < 3; i++)
		before[i] = spare_inode(sp, i);
	char first[64];
	snprintf(first, sizeof(first), "%u.%u.spare", sp->pid, (unsigned)sp->spares[0]);
	char sdir[128];
	snprintf(sdir, sizeof(sdir), "%s/spool", f->dir);
	spool_close(sp);

	assert_int_equal(spool_open(sp, sdir), 0);
	assert_int_equal(count_files(sp->tmp_fd), 3);
	/* Not spares: work in progress, a symbolic link and a directory named
	 * as spares, a name this code does not give. */
	assert_int_equal(spool__write_file(sp->tmp_fd, "X.env", "x", 1, 0), 0);
	assert_int_equal(symlinkat(first, sp->tmp_fd, "9.9.spare"), 0);
	assert_int_equal(mkdirat(sp->tmp_fd, "8.8.spare", 0700), 0);
	assert_int_equal(spool__write_file(sp->tmp_fd, "07.1.spare", "x", 1, 0), 0);
	assert_int_equal(spool_recover(sp, &rec), 0);
	assert_int_equal(rec.spares_kept, 3);
	assert_int_equal(rec.tmp_cleaned, 3); /* X.env, 07.1.spare, the link */
	spool_recovery_deinit(&rec);
	assert_int_equal(spool_spares(sp), 3);
	for (unsigned i = 0; i < 3; i++)
		after[i] = spare_inode(sp, i);
	qsort(before, 3, sizeof(ino_t), cmp_ino);
	qsort(after, 3, sizeof(ino_t), cmp_ino);
	assert_memory_equal(before, after, sizeof(before));
	assert_int_equal(unlinkat(sp->tmp_fd, "8.8.spare", AT_REMOVEDIR), 0);

	/* A new envelope is written over a kept one. */
	struct spool_env e;
	char id[SPOOL_ID_LEN + 1];
	spool_new_id(sp, id);
	make_env(&e, id);
	ino_t top = spare_inode(sp, 2);
	assert_int_equal(spool_env_create_lazy(sp, &e), 0);
	assert_int_equal(inode_of(sp->state_fd[SPOOL_QUEUE], id, NULL, NULL), top);
	assert_int_equal(spool_spares(sp), 2);
	spool_env_deinit(&e);

	/* Kept again at close, taken again at the next recovery. */
	spool_close(sp);
	assert_int_equal(spool_open(sp, sdir), 0);
	assert_int_equal(spool_recover(sp, &rec), 0);
	assert_int_equal(rec.spares_kept, 2);
	assert_int_equal(rec.tmp_cleaned, 0);
	spool_recovery_deinit(&rec);
}

/* A spare that cannot be used is dropped and a new file made: a failed step
 * (injected), and a file that is not the spool's alone (an operator's hard
 * link in queue/), which is never written through. */
static void spool_spare_failure_falls_back(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = &f->sp;
	char old[SPOOL_ID_LEN + 1], id[SPOOL_ID_LEN + 1];
	struct spool_env e;
	for (int round = 0; round < 2; round++) {
		queue_message(sp, old);
		if (round == 0)
			set_hook("PICKUPD_SPOOL_FAIL", "lazy-spare-write:EIO");
		else
			assert_int_equal(
			    linkat(sp->state_fd[SPOOL_QUEUE], old, f->pickup_fd, "keep", 0), 0);
		ino_t ino = inode_of(sp->state_fd[SPOOL_QUEUE], old, NULL, NULL);
		/* Kept alive: a freed inode's number may come back at once. */
		int hold = openat(sp->state_fd[SPOOL_QUEUE], old, O_RDONLY | O_CLOEXEC);
		assert_true(hold >= 0);
		assert_int_equal(spool_remove(sp, old, SPOOL_QUEUE), 0);
		assert_int_equal(spool_spares(sp), 1);
		spool_new_id(sp, id);
		make_env(&e, id);
		assert_int_equal(spool_env_create_lazy(sp, &e), 0);
		set_hook(NULL, NULL);
		spool_env_deinit(&e);
		assert_true(inode_of(sp->state_fd[SPOOL_QUEUE], id, NULL, NULL) != ino);
		close(hold);
		assert_int_equal(spool_spares(sp), 0);
		assert_int_equal(count_files(sp->tmp_fd), 0);
		assert_int_equal(spool_env_read(sp, SPOOL_QUEUE, id, &e, NULL), 0);
		spool_env_deinit(&e);
	}
	/* The hard link's other name still holds the old envelope. */
	struct buf text = BUF_INIT;
	assert_int_equal(spool__read_all(f->pickup_fd, "keep", 1 << 20, &text), 0);
	assert_non_null(strstr(text.data, old));
	buf_deinit(&text);
}

/* The crash that recycling adds: a reused envelope renamed to its new name,
 * its new text never written back, so the name holds the old message's
 * envelope, whole. Torn, never read as the new message's: the new message's
 * envelope is dropped and recovery hands its content back for ingest, from
 * the folder its claim record names. */
static void spool_spare_old_text_is_torn(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = &f->sp;
	char old[SPOOL_ID_LEN + 1];
	struct spool_env e, back;
	struct buf old_text = BUF_INIT;
	queue_message(sp, old);
	assert_int_equal(spool__read_all(sp->state_fd[SPOOL_QUEUE], old, 1 << 20, &old_text), 0);
	assert_int_equal(spool_remove(sp, old, SPOOL_QUEUE), 0);
	assert_int_equal(spool_spares(sp), 1);
	/* A claim as ingest makes it: the record stays with the content. */
	assert_int_equal(spool__write_file(f->pickup_fd, "n.eml", "x", 1, 0), 0);
	int fd = openat(f->pickup_fd, "n.eml", O_RDONLY);
	struct spool_claim cl;
	assert_int_equal(spool_claim(sp, f->pickup_fd, "n.eml", fd, "second", NULL, &cl), 0);
	close(fd);
	cl.keep_record = true;
	make_env(&e, cl.id);
	assert_int_equal(spool_env_create_lazy(sp, &e), 0);
	spool_env_deinit(&e);
	assert_int_equal(spool_claim_done(sp, &cl), 0);
	assert_int_equal(spool_spares(sp), 0);
	/* What the disk holds after the crash: the old bytes under the new name. */
	int q = sp->state_fd[SPOOL_QUEUE];
	fd = openat(q, cl.id, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, old_text.data, old_text.len), (ssize_t)old_text.len);
	close(fd);
	assert_int_equal(spool_env_read(sp, SPOOL_QUEUE, cl.id, &back, NULL), -1);
	assert_int_equal(errno, EBADMSG);
	assert_true(spool_env_torn(sp, SPOOL_QUEUE, cl.id));
	/* What the daemon does with a torn one (ingest_recover), then a crash. */
	assert_int_equal(spool_env_drop(sp, SPOOL_QUEUE, cl.id), 0);
	spool_close(sp);
	char sdir[128];
	snprintf(sdir, sizeof(sdir), "%s/spool", f->dir);
	assert_int_equal(spool_open(sp, sdir), 0);
	struct spool_recovery rec;
	assert_int_equal(spool_recover(sp, &rec), 0);
	assert_int_equal(rec.n_orphans, 1);
	assert_string_equal(rec.orphans[0], cl.id);
	assert_string_equal(rec.orphan_pickups[0], "second");
	assert_string_equal(rec.orphan_files[0], "n.eml");
	assert_int_equal(count_files(q), 0);
	spool_recovery_deinit(&rec);
	buf_deinit(&old_text);
}

/* ---- injected errors ---------------------------------------------------------------- */

static void spool_file_fsync_error_leaves_nothing(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = &f->sp;
	char id[SPOOL_ID_LEN + 1];
	struct spool_env e;
	spool_new_id(sp, id);
	make_env(&e, id);
	set_hook("PICKUPD_SPOOL_FAIL", "write-fsync:5");
	assert_int_equal(spool_env_write(sp, SPOOL_QUEUE, &e), -1);
	assert_int_equal(errno, EIO);
	set_hook("PICKUPD_SPOOL_FAIL", "write-fsync:28");
	assert_int_equal(spool_env_write(sp, SPOOL_QUEUE, &e), -1);
	assert_int_equal(errno, ENOSPC);
	set_hook(NULL, NULL);
	assert_false(exists_in(sp->state_fd[SPOOL_QUEUE], id));
	assert_int_equal(count_files(sp->tmp_fd), 0);
	assert_false(spool_readonly(sp));
	assert_int_equal(spool_env_write(sp, SPOOL_QUEUE, &e), 0);
	spool_env_deinit(&e);
}

/* EROFS stops every later state change at once, without touching the disk. */
static void spool_erofs_stops_state_changes(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = &f->sp;
	char id[SPOOL_ID_LEN + 1], id2[SPOOL_ID_LEN + 1];
	queue_message(sp, id);
	set_hook("PICKUPD_SPOOL_FAIL", "move-rename:30");
	assert_int_equal(spool_move(sp, id, SPOOL_QUEUE, SPOOL_DEFERRED), -1);
	assert_int_equal(errno, EROFS);
	set_hook(NULL, NULL);
	assert_true(spool_readonly(sp));
	assert_int_equal(spool_move(sp, id, SPOOL_QUEUE, SPOOL_DEFERRED), -1);
	assert_int_equal(errno, EROFS);
	assert_int_equal(spool_remove(sp, id, SPOOL_QUEUE), -1);
	assert_int_equal(errno, EROFS);
	struct spool_env e;
	spool_new_id(sp, id2);
	make_env(&e, id2);
	assert_int_equal(spool_env_write(sp, SPOOL_QUEUE, &e), -1);
	assert_int_equal(errno, EROFS);
	spool_env_deinit(&e);
	assert_true(exists_in(sp->state_fd[SPOOL_QUEUE], id));
	assert_true(exists_in(sp->data_fd, id));
}

/* The unsynced move that starts an attempt has spool_move's checks: its
 * step is hooked, its EROFS latches the spool read-only, and once it is, the
 * move is refused without touching the disk. */
static void spool_move_nosync_latches_erofs(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = &f->sp;
	char id[SPOOL_ID_LEN + 1];
	queue_message(sp, id);
	assert_int_equal(spool_move(sp, id, SPOOL_QUEUE, SPOOL_DEFERRED), 0);
	set_hook("PICKUPD_SPOOL_FAIL", "nosync-rename:30");
	assert_int_equal(spool_move_nosync(sp, id, SPOOL_DEFERRED, SPOOL_QUEUE), -1);
	assert_int_equal(errno, EROFS);
	set_hook(NULL, NULL);
	assert_true(spool_readonly(sp));
	assert_int_equal(spool_move_nosync(sp, id, SPOOL_DEFERRED, SPOOL_QUEUE), -1);
	assert_int_equal(errno, EROFS);
	assert_true(exists_in(sp->state_fd[SPOOL_DEFERRED], id));
	assert_false(exists_in(sp->state_fd[SPOOL_QUEUE], id));
}

/* spool_stat reads what the envelope's inode holds; spool_env_drop leaves
 * content that recovery re-ingests; spool_data_discard removes content that
 * has no envelope and keeps the caller's errno. */
static void spool_stat_drop_and_discard(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = &f->sp;
	char id[SPOOL_ID_LEN + 1];
	struct spool_stat st;
	struct spool_env e;
	queue_message(sp, id);
	assert_int_equal(spool_env_read(sp, SPOOL_QUEUE, id, &e, NULL), 0);
	e.next_ms = 1900000000123;
	assert_int_equal(spool_env_write(sp, SPOOL_DEFERRED, &e), 0);
	spool_env_deinit(&e);
	assert_int_equal(spool_stat(sp, SPOOL_DEFERRED, id, &st), 0);
	assert_int_equal(st.due_ms, 1900000000123);
	assert_int_equal(st.bytes, 15);
	assert_true(st.since_ms > 1700000000000);
	assert_int_equal(spool_env_drop(sp, SPOOL_DEFERRED, id), 0);
	assert_int_equal(spool_stat(sp, SPOOL_DEFERRED, id, &st), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(spool_env_drop(sp, SPOOL_DEFERRED, id), 0); /* gone: done */

	assert_int_equal(spool_env_drop(sp, SPOOL_QUEUE, id), 0);
	assert_true(exists_in(sp->data_fd, id));
	struct spool_recovery rec;
	assert_int_equal(spool_recover(sp, &rec), 0);
	assert_int_equal(rec.n_orphans, 1);
	assert_string_equal(rec.orphans[0], id);
	spool_recovery_deinit(&rec);

	errno = ENOSPC;
	spool_data_discard(sp, id);
	assert_int_equal(errno, ENOSPC);
	assert_false(exists_in(sp->data_fd, id));
}

/* ---- recovery ----------------------------------------------------------------------- */

static void spool_recover_resolves_leftovers(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = &f->sp;
	char a[SPOOL_ID_LEN + 1], b[SPOOL_ID_LEN + 1], c[SPOOL_ID_LEN + 1], d[SPOOL_ID_LEN + 1];
	queue_message(sp, a); /* in queue and deferred: deferred wins */
	assert_int_equal(linkat(sp->state_fd[SPOOL_QUEUE], a, sp->state_fd[SPOOL_DEFERRED], a, 0),
			 0);
	queue_message(sp, b); /* envelope without content: finished */
	assert_int_equal(unlinkat(sp->data_fd, b, 0), 0);
	spool_new_id(sp, c); /* content without envelope: a claim cut short */
	assert_int_equal(spool__write_file(sp->data_fd, c, "x", 1, 0), 0);
	queue_message(sp, d); /* in hold and queue: hold wins */
	assert_int_equal(linkat(sp->state_fd[SPOOL_QUEUE], d, sp->state_fd[SPOOL_HOLD], d, 0), 0);
	assert_int_equal(spool__write_file(sp->tmp_fd, "junk.env", "x", 1, 0), 0);
	assert_int_equal(spool__write_file(sp->state_fd[SPOOL_QUEUE], "README", "x", 1, 0), 0);

	struct spool_recovery rec;
	assert_int_equal(spool_recover(sp, &rec), 0);
	assert_int_equal(rec.tmp_cleaned, 1);
	assert_int_equal(rec.duplicates, 2);
	assert_int_equal(rec.dangling_envelopes, 1);
	assert_int_equal(rec.n_orphans, 1);
	assert_string_equal(rec.orphans[0], c);
	assert_int_equal(rec.counts[SPOOL_DEFERRED], 1);
	assert_int_equal(rec.counts[SPOOL_HOLD], 1);
	assert_int_equal(rec.counts[SPOOL_QUEUE], 0);
	spool_recovery_deinit(&rec);
	assert_false(exists_in(sp->state_fd[SPOOL_QUEUE], a));
	assert_true(exists_in(sp->state_fd[SPOOL_DEFERRED], a));
	assert_false(exists_in(sp->state_fd[SPOOL_QUEUE], b));
	assert_false(exists_in(sp->state_fd[SPOOL_QUEUE], d));
	assert_true(exists_in(sp->state_fd[SPOOL_HOLD], d));
	assert_true(exists_in(sp->state_fd[SPOOL_QUEUE], "README")); /* not ours: left alone */
	assert_int_equal(count_files(sp->tmp_fd), 0);
}

/* Claim records and the being-sent mark, as recovery reads them. */
static void spool_recover_reads_records_and_marks(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = &f->sp;
	char sent[SPOOL_ID_LEN + 1], idle[SPOOL_ID_LEN + 1], done[SPOOL_ID_LEN + 1];
	char link[SPOOL_ID_LEN + 8];
	struct spool_claim moved, copied;
	queue_message(sp, sent);
	assert_int_equal(spool_mark_sending(sp, sent), 0);
	queue_message(sp, idle);
	queue_message(sp, done); /* a finished claim whose record was left */
	assert_int_equal(spool_move(sp, done, SPOOL_QUEUE, SPOOL_DEFERRED), 0);
	snprintf(link, sizeof(link), "%s.from", done);
	assert_int_equal(symlinkat("default/d.eml", sp->data_fd, link), 0);
	/* A claim cut short: content and record, no envelope. */
	assert_int_equal(spool__write_file(f->pickup_fd, "m.eml", "x", 1, 0), 0);
	int fd = openat(f->pickup_fd, "m.eml", O_RDONLY);
	assert_int_equal(spool_claim(sp, f->pickup_fd, "m.eml", fd, "second", NULL, &moved), 0);
	close(fd);
	/* A copy cut short (made by hand: the original is still there). */
	spool_new_id(sp, copied.id);
	assert_int_equal(spool__write_file(sp->data_fd, copied.id, "y", 1, 0), 0);
	snprintf(link, sizeof(link), "%s.copy", copied.id);
	assert_int_equal(symlinkat("default/c.eml", sp->data_fd, link), 0);

	struct spool_recovery rec;
	assert_int_equal(spool_recover(sp, &rec), 0);
	assert_int_equal(rec.n_maybe_sent, 1);
	assert_string_equal(rec.maybe_sent[0], sent);
	assert_int_equal(rec.n_orphans, 1);
	assert_string_equal(rec.orphans[0], moved.id);
	assert_string_equal(rec.orphan_pickups[0], "second");
	assert_string_equal(rec.orphan_files[0], "m.eml");
	assert_int_equal(rec.copies_dropped, 1);
	spool_recovery_deinit(&rec);
	assert_false(exists_in(sp->data_fd, copied.id));
	assert_false(exists_in(sp->data_fd, link));
	snprintf(link, sizeof(link), "%s.from", done);
	assert_false(exists_in(sp->data_fd, link));
	snprintf(link, sizeof(link), "%s.from", moved.id);
	assert_true(exists_in(sp->data_fd, link)); /* until its claim is finished */
	/* A transaction that never started after all: no mark left. */
	assert_int_equal(spool_mark_sending(sp, idle), 0);
	assert_int_equal(spool_unmark_sending(sp, idle), 0);
	/* Rewriting the envelope (recording an outcome) clears the mark. */
	struct spool_env e;
	make_env(&e, sent);
	assert_int_equal(spool_env_write(sp, SPOOL_QUEUE, &e), 0);
	spool_env_deinit(&e);
	assert_int_equal(spool_recover(sp, &rec), 0);
	assert_int_equal(rec.n_maybe_sent, 0);
	spool_recovery_deinit(&rec);
}

/* The mark on a claim's content (spool_claim_mark_sending): content left
 * without its envelope and so marked is named at recovery; an unmarked one
 * is not; undoing a marked claim puts the file back with its own mode. */
static void spool_claim_mark_sending_content(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = &f->sp;
	struct spool_claim marked, plain, undone;
	const char *names[3] = {"a.eml", "b.eml", "c.eml"};
	struct spool_claim *cs[3] = {&marked, &plain, &undone};
	for (int i = 0; i < 3; i++) {
		assert_int_equal(spool__write_file(f->pickup_fd, names[i], "x", 1, 0), 0);
		assert_int_equal(fchmodat(f->pickup_fd, names[i], 0604, 0), 0);
		int fd = openat(f->pickup_fd, names[i], O_RDONLY);
		assert_int_equal(spool_claim_lone_unsynced(sp, f->pickup_fd, names[i], fd, "second",
							   NULL, cs[i]),
				 0);
		if (cs[i] != &plain)
			assert_int_equal(spool_claim_mark_sending(cs[i], fd, 0604), 0);
		assert_int_equal(spool_claim_sync(sp, cs[i], fd), 0);
		close(fd);
	}
	struct stat st;
	assert_int_equal(fstatat(sp->data_fd, marked.id, &st, 0), 0);
	assert_int_equal(st.st_mode & 07777, 0704);
	assert_int_equal(spool_claim_undo(sp, &undone), 0);
	assert_int_equal(fstatat(f->pickup_fd, "c.eml", &st, 0), 0);
	assert_int_equal(st.st_mode & 07777, 0604);

	struct spool_recovery rec;
	assert_int_equal(spool_recover(sp, &rec), 0);
	assert_int_equal(rec.n_orphans, 2);
	assert_int_equal(rec.n_maybe_sent, 1);
	assert_string_equal(rec.maybe_sent[0], marked.id);
	spool_recovery_deinit(&rec);
}

/* The mark set without looking at a fresh envelope (spool_mark_sending_new)
 * is the one spool_mark_sending sets, lazy envelope or durable, and
 * recovery reads it alike. */
static void spool_mark_sending_new_same_mode(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = &f->sp;
	char looked[SPOOL_ID_LEN + 1], durable[SPOOL_ID_LEN + 1], lazy[SPOOL_ID_LEN + 1];
	queue_message(sp, looked);
	queue_message(sp, durable);
	struct spool_env e;
	spool_new_id(sp, lazy);
	assert_int_equal(spool__write_file(sp->data_fd, lazy, "From: a\r\n\r\nhi\r\n", 15, 0), 0);
	make_env(&e, lazy);
	assert_int_equal(spool_env_create_lazy(sp, &e), 0);
	spool_env_deinit(&e);
	assert_int_equal(spool_mark_sending(sp, looked), 0);
	assert_int_equal(spool_mark_sending_new(sp, durable), 0);
	assert_int_equal(spool_mark_sending_new(sp, lazy), 0);
	struct stat a, b, c;
	assert_int_equal(fstatat(sp->state_fd[SPOOL_QUEUE], looked, &a, 0), 0);
	assert_int_equal(fstatat(sp->state_fd[SPOOL_QUEUE], durable, &b, 0), 0);
	assert_int_equal(fstatat(sp->state_fd[SPOOL_QUEUE], lazy, &c, 0), 0);
	assert_int_equal(a.st_mode, b.st_mode);
	assert_int_equal(a.st_mode, c.st_mode);
	assert_true(a.st_mode & S_IXUSR);
	errno = 0;
	assert_int_equal(spool_mark_sending_new(sp, "NOSUCHID000000000000"), -1);
	assert_int_equal(errno, ENOENT);
	struct spool_recovery rec;
	assert_int_equal(spool_recover(sp, &rec), 0);
	assert_int_equal(rec.n_maybe_sent, 3);
	spool_recovery_deinit(&rec);
}

/* A lone claim with early: data/'s fsync runs on the syncer thread from the
 * rename on; the commit waits for that fsync by its ticket, and a failure of
 * it fails the commit (the caller then undoes the claim). */
static void spool_claim_lone_early_sync(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = &f->sp;
	struct spool_claim cl;
	assert_int_equal(spool__write_file(f->pickup_fd, "c.eml", "x", 1, 0), 0);
	int fd = openat(f->pickup_fd, "c.eml", O_RDONLY);
	assert_int_equal(spool_claim_lone(sp, f->pickup_fd, "c.eml", fd, "second", NULL, true, &cl),
			 0);
	assert_true(cl.data_ticketed);
	assert_int_equal(spool_claim_commit_data_for(sp, f->pickup_fd, NULL, &cl), 0);
	assert_true(exists_in(sp->data_fd, cl.id));
	close(fd);

	/* Without early, no ticket: the commit makes its own fsync. */
	assert_int_equal(spool__write_file(f->pickup_fd, "d.eml", "x", 1, 0), 0);
	fd = openat(f->pickup_fd, "d.eml", O_RDONLY);
	assert_int_equal(
	    spool_claim_lone(sp, f->pickup_fd, "d.eml", fd, "second", NULL, false, &cl), 0);
	assert_false(cl.data_ticketed);
	assert_int_equal(spool_claim_commit_data_for(sp, f->pickup_fd, NULL, &cl), 0);
	close(fd);

	/* The syncer's fsync fails: so does the commit, and the undo puts the
	 * file back. */
	assert_int_equal(spool__write_file(f->pickup_fd, "e.eml", "x", 1, 0), 0);
	fd = openat(f->pickup_fd, "e.eml", O_RDONLY);
	set_hook("PICKUPD_SPOOL_FAIL", "dir-fsync");
	assert_int_equal(spool_claim_lone(sp, f->pickup_fd, "e.eml", fd, "second", NULL, true, &cl),
			 0);
	assert_true(cl.data_ticketed);
	assert_int_equal(spool_claim_commit_data_for(sp, f->pickup_fd, NULL, &cl), -1);
	assert_int_equal(errno, EIO);
	set_hook(NULL, NULL);
	assert_int_equal(spool_claim_undo(sp, &cl), 0);
	assert_true(exists_in(f->pickup_fd, "e.eml"));
	assert_false(exists_in(sp->data_fd, cl.id));
	close(fd);
}

/* A claim committed with the folder's fsync owed (spool_claim_commit_data):
 * when that fsync fails, no content leaves data/ (the message stays queued);
 * once it succeeds, the removal goes through. */
static void spool_removal_waits_for_the_owed_folder_fsync(void **state)
{
	struct fixture *f = *state;
	struct spool *sp = &f->sp;
	assert_int_equal(spool__write_file(f->pickup_fd, "c.eml", "x", 1, 0), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		set_hook("PICKUPD_SPOOL_FAIL", "claim-commit-folder");
		struct spool_dirsync *ds = spool_dirsync_new();
		struct spool_env e;
		struct spool_claim cl;
		int fd = openat(f->pickup_fd, "c.eml", O_RDONLY);
		int ok =
		    spool_claim_batched(sp, f->pickup_fd, "c.eml", fd, "second", NULL, &cl) == 0;
		make_env(&e, cl.id);
		cl.keep_record = true;
		ok = ok && spool_env_create_lazy(sp, &e) == 0 && spool_claim_done(sp, &cl) == 0 &&
		     spool_claim_commit_data(sp, f->pickup_fd, ds) == 0;
		spool_env_deinit(&e);
		char *ids[1] = {cl.id};
		int errs[1];
		/* The folder's fsync fails: nothing is removed, the error says why. */
		ok = ok && spool_remove_many(sp, ids, 1, SPOOL_QUEUE, errs) == 0 &&
		     errs[0] == EIO && exists_in(sp->data_fd, cl.id) &&
		     exists_in(sp->state_fd[SPOOL_QUEUE], cl.id);
		ok =
		    ok && spool_remove(sp, cl.id, SPOOL_QUEUE) < 0 && exists_in(sp->data_fd, cl.id);
		_exit(ok ? 0 : 1);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* Without the fault, in this process: the owed fsync, then the removal. */
	struct spool_dirsync *ds = spool_dirsync_new();
	struct spool_claim cl;
	assert_int_equal(spool__write_file(f->pickup_fd, "d.eml", "x", 1, 0), 0);
	int fd = openat(f->pickup_fd, "d.eml", O_RDONLY);
	assert_int_equal(spool_claim_batched(sp, f->pickup_fd, "d.eml", fd, "second", NULL, &cl),
			 0);
	close(fd);
	assert_int_equal(spool_claim_done(sp, &cl), 0);
	assert_int_equal(spool_claim_commit_data(sp, f->pickup_fd, ds), 0);
	assert_non_null(sp->owed);
	assert_int_equal(spool_remove(sp, cl.id, SPOOL_QUEUE), 0);
	assert_null(sp->owed);
	assert_false(exists_in(sp->data_fd, cl.id));
	assert_int_equal(spool_folder_forget(sp, ds), 0);
	spool_dirsync_free(ds);
}

/* ---- crash tests -------------------------------------------------------------------- */

enum op {
	OP_WRITE_NEW,
	OP_LAZY_NEW,
	OP_LAZY_REUSE,
	OP_REWRITE,
	OP_MOVE,
	OP_REMOVE,
	OP_REMOVE_BATCH,
	OP_CLAIM,
	OP_CLAIM_GROUP,
	OP_CLAIM_BATCH,
	OP_CLAIM_LONE,
	OP_CLAIM_UNSYNCED,
	OP_INGEST_LAZY,
	OP_INGEST_SEND,
	OP_DEFER,
	OP_MOVE_NOSYNC,
	OP_ENV_DROP
};

static const struct {
	enum op op;
	const char *step; /* PICKUPD_SPOOL_CRASH value; NULL = no crash */
} crashes[] = {
    {OP_WRITE_NEW, "write-fsync"},
    {OP_WRITE_NEW, "env-rename"},
    {OP_WRITE_NEW, "env-dirsync"},
    {OP_WRITE_NEW, "dir-fsync"},
    {OP_WRITE_NEW, NULL},
    {OP_LAZY_NEW, "lazy-env-write"},
    {OP_LAZY_NEW, "lazy-env-rename"},
    {OP_LAZY_NEW, NULL},
    {OP_LAZY_REUSE, "remove-env"},
    {OP_LAZY_REUSE, "lazy-spare-write"},
    {OP_LAZY_REUSE, "lazy-spare-rename"},
    {OP_LAZY_REUSE, NULL},
    {OP_REWRITE, "write-fsync"},
    {OP_REWRITE, "env-rename"},
    {OP_REWRITE, "env-dirsync"},
    {OP_REWRITE, NULL},
    {OP_MOVE, "move-rename"},
    {OP_MOVE, "move-dirsync"},
    {OP_MOVE, "dir-fsync:1"},
    {OP_MOVE, "move-srcsync"},
    {OP_MOVE, "dir-fsync:2"},
    {OP_MOVE, NULL},
    {OP_REMOVE, "remove-data"},
    {OP_REMOVE, "remove-datasync"},
    {OP_REMOVE, "dir-fsync"},
    {OP_REMOVE, "remove-env"},
    {OP_REMOVE, NULL},
    {OP_REMOVE_BATCH, "remove-data"},
    {OP_REMOVE_BATCH, "remove-datasync"},
    {OP_REMOVE_BATCH, "dir-fsync"},
    {OP_REMOVE_BATCH, "remove-env"},
    {OP_REMOVE_BATCH, NULL},
    {OP_CLAIM, "claim-rename"},
    {OP_CLAIM, "claim-fsync"},
    {OP_CLAIM, "claim-dirsync"},
    {OP_CLAIM, "dir-fsync"},
    {OP_CLAIM, NULL},
    {OP_CLAIM_GROUP, "claim-fsync"},
    {OP_CLAIM_GROUP, "claim-dirsync"},
    {OP_CLAIM_GROUP, "dir-fsync:1"}, /* data/ */
    {OP_CLAIM_GROUP, "dir-fsync:2"}, /* the pickup folder's group commit */
    {OP_CLAIM_GROUP, NULL},
    {OP_CLAIM_BATCH, "claim-fsync"},
    {OP_CLAIM_BATCH, "claim-commit-data"},
    {OP_CLAIM_BATCH, "claim-commit-folder"},
    {OP_CLAIM_BATCH, "dir-fsync:1"},
    {OP_CLAIM_BATCH, "dir-fsync:2"},
    {OP_CLAIM_BATCH, NULL},
    {OP_CLAIM_LONE, "claim-early-sync"},
    {OP_CLAIM_LONE, "claim-fsync"},
    {OP_CLAIM_LONE, "dir-fsync:1"},
    {OP_CLAIM_LONE, "claim-commit-data"},
    {OP_CLAIM_LONE, NULL},
    /* The latency path: the content's fsync after the file was read and
     * offered to delivery (spool_claim_sync). */
    {OP_CLAIM_UNSYNCED, "claim-rename"},
    {OP_CLAIM_UNSYNCED, "claim-early-sync"},
    {OP_CLAIM_UNSYNCED, "claim-fsync"},
    {OP_CLAIM_UNSYNCED, "claim-commit-data"},
    {OP_CLAIM_UNSYNCED, NULL},
    {OP_INGEST_LAZY, "claim-rename"},
    {OP_INGEST_LAZY, "claim-fsync"},
    {OP_INGEST_LAZY, "lazy-env-write"},
    {OP_INGEST_LAZY, "lazy-env-rename"},
    {OP_INGEST_LAZY, "claim-commit-data"},
    {OP_INGEST_LAZY, "claim-commit-folder"},
    {OP_INGEST_LAZY, "dir-fsync:1"},
    {OP_INGEST_LAZY, "dir-fsync:2"},
    {OP_INGEST_LAZY, NULL},
    /* The folder's fsync owed by the commit, made by the removal first. */
    {OP_INGEST_SEND, "claim-commit-data"},
    {OP_INGEST_SEND, "dir-fsync:1"}, /* data/ */
    {OP_INGEST_SEND, "claim-commit-folder"},
    {OP_INGEST_SEND, "dir-fsync:2"}, /* the folder, owed */
    {OP_INGEST_SEND, "remove-data"},
    {OP_INGEST_SEND, "remove-datasync"},
    {OP_INGEST_SEND, "remove-env"},
    {OP_INGEST_SEND, NULL},
    {OP_DEFER, "write-fsync"},
    {OP_DEFER, "env-rename"},
    {OP_DEFER, "env-dirsync"},
    {OP_DEFER, "move-rename"},
    {OP_DEFER, "move-dirsync"},
    {OP_DEFER, "move-srcsync"},
    {OP_DEFER, "dir-fsync:3"},
    {OP_DEFER, NULL},
    {OP_MOVE_NOSYNC, "nosync-rename"},
    {OP_MOVE_NOSYNC, NULL},
    {OP_ENV_DROP, "env-drop"},
    {OP_ENV_DROP, NULL},
};

/* What the child does: one transition, as the daemon does it. */
static void crash_child(struct fixture *f, enum op op, const char *id)
{
	struct spool *sp = &f->sp;
	struct spool_env e;
	int r = 0;
	switch (op) {
	case OP_WRITE_NEW:
	case OP_REWRITE:
		make_env(&e, id);
		e.attempts = 9;
		r = spool_env_write(sp, SPOOL_QUEUE, &e);
		spool_env_deinit(&e);
		break;
	case OP_LAZY_NEW:
	case OP_LAZY_REUSE:
		if (op == OP_LAZY_REUSE) {
			/* A sent message's envelope becomes the spare it uses. */
			char done[SPOOL_ID_LEN + 1];
			queue_message(sp, done);
			if (spool_mark_sending(sp, done) < 0 ||
			    spool_remove(sp, done, SPOOL_QUEUE) < 0)
				_exit(1);
		}
		make_env(&e, id);
		r = spool_env_create_lazy(sp, &e);
		spool_env_deinit(&e);
		break;
	case OP_MOVE:
		r = spool_move(sp, id, SPOOL_QUEUE, SPOOL_DEFERRED);
		break;
	case OP_REMOVE:
		r = spool_remove(sp, id, SPOOL_QUEUE);
		break;
	case OP_REMOVE_BATCH: {
		/* The message, and one whose removal was already done. */
		char mine[SPOOL_ID_LEN + 1], other[SPOOL_ID_LEN + 1];
		char *ids[2] = {mine, other};
		int errs[2];
		memcpy(mine, id, sizeof(mine));
		spool_new_id(sp, other);
		r = spool_remove_many(sp, ids, 2, SPOOL_QUEUE, errs) == 2 ? 0 : -1;
		break;
	}
	case OP_CLAIM: {
		int fd = openat(f->pickup_fd, "c.eml", O_RDONLY);
		struct spool_claim cl;
		r = spool_claim(sp, f->pickup_fd, "c.eml", fd, "second", NULL, &cl);

		break;
	}
	case OP_CLAIM_BATCH: {
		struct spool_dirsync *ds = spool_dirsync_new();
		int fd = openat(f->pickup_fd, "c.eml", O_RDONLY);
		struct spool_claim cl;
		r = spool_claim_batched(sp, f->pickup_fd, "c.eml", fd, "second", NULL, &cl);
		if (r == 0)
			r = spool_claim_commit(sp, f->pickup_fd, ds);
		spool_dirsync_free(ds);
		break;
	}
	case OP_CLAIM_LONE: {
		/* A batch of one file: data/'s fsync starts at the rename, on the
		 * syncer thread, beside the content's. */
		int fd = openat(f->pickup_fd, "c.eml", O_RDONLY);
		struct spool_claim cl;
		r = spool_claim_lone(sp, f->pickup_fd, "c.eml", fd, "second", NULL, true, &cl);
		if (r == 0)
			r = spool_claim_commit_data_for(sp, f->pickup_fd, NULL, &cl);
		break;
	}
	case OP_CLAIM_UNSYNCED: {
		int fd = openat(f->pickup_fd, "c.eml", O_RDONLY);
		struct spool_claim cl;
		r = spool_claim_lone_unsynced(sp, f->pickup_fd, "c.eml", fd, "second", NULL, &cl);
		if (r == 0)
			r = spool_claim_sync(sp, &cl, fd);
		if (r == 0)
			r = spool_claim_commit_data_for(sp, f->pickup_fd, NULL, &cl);
		break;
	}
	case OP_INGEST_LAZY:
	case OP_INGEST_SEND: {
		/* What a batch of daemon/intake/ingest.c does for one file: batched claim,
		 * lazy first envelope, claim done (record kept), commit; with
		 * OP_INGEST_SEND the folder's fsync is left owed
		 * (spool_claim_commit_data) and, once the message was sent,
		 * relay.c's removal batch makes it first. */
		struct spool_dirsync *ds = spool_dirsync_new();
		int fd = openat(f->pickup_fd, "c.eml", O_RDONLY);
		struct spool_claim cl;
		r = spool_claim_batched(sp, f->pickup_fd, "c.eml", fd, "second", NULL, &cl);
		if (r == 0) {
			make_env(&e, cl.id);
			cl.keep_record = true;
			r = spool_env_create_lazy(sp, &e);
			spool_env_deinit(&e);
		}
		if (r == 0)
			r = spool_claim_done(sp, &cl);
		if (r == 0 && op == OP_INGEST_LAZY)
			r = spool_claim_commit(sp, f->pickup_fd, ds);
		if (r == 0 && op == OP_INGEST_SEND) {
			char *ids[1] = {cl.id};
			int errs[1];
			r = spool_claim_commit_data(sp, f->pickup_fd, ds);
			if (r == 0)
				r = spool_remove_many(sp, ids, 1, SPOOL_QUEUE, errs) == 1 ? 0 : -1;
			if (r == 0)
				r = spool_folder_forget(sp, ds);
		}
		spool_dirsync_free(ds);
		break;
	}
	case OP_CLAIM_GROUP: {
		struct spool_dirsync *ds = spool_dirsync_new();
		int fd = openat(f->pickup_fd, "c.eml", O_RDONLY);
		struct spool_claim cl;
		r = spool_claim_group(sp, f->pickup_fd, ds, "c.eml", fd, "second", NULL, &cl);
		spool_dirsync_free(ds);
		break;
	}
	case OP_DEFER: /* relay.c record_fn, POLICY_DEFER */
		make_env(&e, id);
		e.attempts = 9;
		r = spool_env_write(sp, SPOOL_QUEUE, &e);
		if (r == 0)
			r = spool_move(sp, id, SPOOL_QUEUE, SPOOL_DEFERRED);
		spool_env_deinit(&e);
		break;
	case OP_MOVE_NOSYNC: /* relay.c load_fn: a deferred message's attempt */
		r = spool_move_nosync(sp, id, SPOOL_DEFERRED, SPOOL_QUEUE);
		break;
	case OP_ENV_DROP: /* ingest.c: a claim undone, a torn envelope dropped */
		r = spool_env_drop(sp, SPOOL_QUEUE, id);
		break;
	}
	_exit(r == 0 ? 0 : 1);
}

/* The states (bit per state) holding id, checking each envelope parses. */
static unsigned states_of(struct spool *sp, const char *id, unsigned *attempts_r)
{
	unsigned mask = 0;
	for (int i = 0; i < SPOOL_N_STATES; i++) {
		if (!exists_in(sp->state_fd[i], id))
			continue;
		struct spool_env e;
		struct buf why = BUF_INIT;
		if (spool_env_read(sp, (enum spool_state)i, id, &e, &why) < 0)
			fail_msg("%s in %s is half-visible: %s", id, spool_state_names[i],
				 why.data);
		*attempts_r = e.attempts;
		spool_env_deinit(&e);
		buf_deinit(&why);
		mask |= 1u << i;
	}
	return mask;
}

static void spool_crash_at_each_step(void **state)
{
	(void)state;
	for (size_t c = 0; c < ARRAY_SIZE(crashes); c++) {
		void *fx;
		assert_int_equal(setup(&fx), 0);
		struct fixture *f = fx;
		struct spool *sp = &f->sp;
		char id[SPOOL_ID_LEN + 1];
		enum op op = crashes[c].op;
		const char *step = crashes[c].step;

		/* Before: what the transition starts from. */
		if (op == OP_WRITE_NEW || op == OP_LAZY_NEW || op == OP_LAZY_REUSE) {
			spool_new_id(sp, id);
			assert_int_equal(spool__write_file(sp->data_fd, id, "x", 1, 0), 0);
		} else if (op == OP_CLAIM || op == OP_CLAIM_GROUP || op == OP_CLAIM_BATCH ||
			   op == OP_CLAIM_LONE || op == OP_CLAIM_UNSYNCED || op == OP_INGEST_LAZY ||
			   op == OP_INGEST_SEND) {
			assert_int_equal(spool__write_file(f->pickup_fd, "c.eml", "x", 1, 0), 0);
			id[0] = '\0';
		} else {
			queue_message(sp, id);
			if (op == OP_MOVE_NOSYNC)
				assert_int_equal(spool_move(sp, id, SPOOL_QUEUE, SPOOL_DEFERRED),
						 0);
		}
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			set_hook("PICKUPD_SPOOL_CRASH", step);
			crash_child(f, op, id);
		}
		int status;
		assert_int_equal(waitpid(pid, &status, 0), pid);
		if (step) {
			/* The step was reached: the child died there. */
			if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL))
				fail_msg("case %zu (%s): child not killed (status %d)", c, step,
					 status);
		} else {
			assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		}

		struct spool_recovery rec;
		assert_int_equal(spool_recover(sp, &rec), 0);
		/* Nothing left in tmp/ but spare envelopes, taken back. */
		assert_int_equal(count_files(sp->tmp_fd), rec.spares_kept);
		unsigned attempts = 0;
		unsigned mask = id[0] ? states_of(sp, id, &attempts) : 0;
		bool data = id[0] && exists_in(sp->data_fd, id);
		/* Never in two states. */
		assert_true((mask & (mask - 1)) == 0);
		switch (op) {
		case OP_WRITE_NEW:
		case OP_LAZY_NEW:
		case OP_LAZY_REUSE:
			/* Queued, or content alone that recovery hands back for ingest;
			 * a finished message's envelope gone with its content. */
			assert_int_equal(count_files(sp->state_fd[SPOOL_QUEUE]), mask != 0);
			assert_int_equal(count_files(sp->data_fd), 1);
			assert_true(data);
			if (mask == 0) {
				assert_int_equal(rec.n_orphans, 1);
				assert_string_equal(rec.orphans[0], id);
			} else {
				assert_int_equal(mask, 1u << SPOOL_QUEUE);
				assert_int_equal(rec.n_orphans, 0);
			}
			if (!step)
				assert_int_equal(mask, 1u << SPOOL_QUEUE);
			break;
		case OP_REWRITE:
			/* The old envelope or the new one, whole. */
			assert_true(data);
			assert_int_equal(mask, 1u << SPOOL_QUEUE);
			assert_true(attempts == 0 || attempts == 9);
			if (!step)
				assert_int_equal(attempts, 9);
			break;
		case OP_MOVE:
		case OP_DEFER:
			assert_true(data);
			assert_true(mask == 1u << SPOOL_QUEUE || mask == 1u << SPOOL_DEFERRED);
			if (mask == 1u << SPOOL_DEFERRED)
				assert_int_equal(attempts, op == OP_DEFER ? 9 : 0);
			if (!step)
				assert_int_equal(mask, 1u << SPOOL_DEFERRED);
			assert_int_equal(rec.n_orphans, 0);
			break;
		case OP_REMOVE:
		case OP_REMOVE_BATCH:
			/* All there, or all gone: never content without envelope. */
			assert_true((mask == 1u << SPOOL_QUEUE && data) || (mask == 0 && !data));
			if (!step)
				assert_true(mask == 0 && !data);
			assert_int_equal(rec.n_orphans, 0);
			break;
		case OP_CLAIM:
		case OP_CLAIM_GROUP:
		case OP_CLAIM_BATCH:
		case OP_CLAIM_LONE:
		case OP_CLAIM_UNSYNCED: {
			/* In the pickup folder or claimed (content for ingest): exactly one. */
			bool in_pickup = exists_in(f->pickup_fd, "c.eml");
			assert_true(in_pickup != (rec.n_orphans == 1));
			assert_true(rec.n_orphans <= 1);
			if (!step)
				assert_false(in_pickup);
			/* Its claim record says where it came from. */
			if (rec.n_orphans) {
				assert_string_equal(rec.orphan_pickups[0], "second");
				assert_string_equal(rec.orphan_files[0], "c.eml");
			}
			break;
		}
		case OP_INGEST_LAZY: {
			/* In the folder, content for ingest, or queued: exactly one,
			 * and the claim record names its folder while it is claimed. */
			bool in_pickup = exists_in(f->pickup_fd, "c.eml");
			char **q;
			size_t n_q;
			assert_int_equal(spool_list(sp, SPOOL_QUEUE, &q, &n_q), 0);
			assert_int_equal((in_pickup ? 1 : 0) + rec.n_orphans + n_q, 1);
			if (!step)
				assert_int_equal(n_q, 1);
			if (rec.n_orphans) {
				assert_string_equal(rec.orphan_pickups[0], "second");
				assert_string_equal(rec.orphan_files[0], "c.eml");
			}
			if (n_q) {
				char *pk, *file;
				assert_int_equal(spool_claim_origin(sp, q[0], &pk, &file), 0);
				assert_string_equal(pk, "second");
				assert_string_equal(file, "c.eml");
				free(pk);
				free(file);
			}
			spool_list_free(q, n_q);
			break;
		}
		case OP_MOVE_NOSYNC:
			/* Either place is fine: the attempt starts again from it. */
			assert_true(data);
			assert_true(mask == 1u << SPOOL_QUEUE || mask == 1u << SPOOL_DEFERRED);
			if (!step)
				assert_int_equal(mask, 1u << SPOOL_QUEUE);
			assert_int_equal(rec.n_orphans, 0);
			break;
		case OP_ENV_DROP:
			/* Queued still, or content alone that recovery re-ingests. */
			assert_true(data);
			assert_true(mask == 1u << SPOOL_QUEUE || mask == 0);
			assert_int_equal(rec.n_orphans, mask == 0 ? 1 : 0);
			if (!step)
				assert_int_equal(mask, 0);
			break;
		case OP_INGEST_SEND: {
			/* In the folder, content for ingest, queued (content and
			 * envelope), or gone for good: never two of these. */
			bool in_pickup = exists_in(f->pickup_fd, "c.eml");
			char **q;
			size_t n_q;
			assert_int_equal(spool_list(sp, SPOOL_QUEUE, &q, &n_q), 0);
			assert_true((in_pickup ? 1 : 0) + rec.n_orphans + n_q <= 1);
			assert_int_equal(count_files(sp->data_fd), rec.n_orphans + n_q ? 2 : 0);
			if (!step)
				assert_int_equal((in_pickup ? 1 : 0) + rec.n_orphans + n_q, 0);
			spool_list_free(q, n_q);
			break;
		}
		}
		spool_recovery_deinit(&rec);
		teardown(&fx);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(spool_claim_lone_early_sync, setup, teardown),
	    cmocka_unit_test_setup_teardown(spool_removal_waits_for_the_owed_folder_fsync, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(spool_ids_unique_across_processes, setup, teardown),
	    cmocka_unit_test_setup_teardown(spool_ids_increase_past_counter_and_clock_step, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(spool_claim_collision_takes_next_id, setup, teardown),
	    cmocka_unit_test(spool_env_round_trip),
	    cmocka_unit_test(spool_env_refuses_corruption),
	    cmocka_unit_test(spool_env_refuses_every_prefix),
	    cmocka_unit_test(spool_env_checksum_catches_every_bit_flip),
	    cmocka_unit_test(spool_env_reads_version_1),
	    cmocka_unit_test_setup_teardown(spool_env_write_is_durable_and_readable, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(spool_move_and_list, setup, teardown),
	    cmocka_unit_test_setup_teardown(spool_remove_content_first, setup, teardown),
	    cmocka_unit_test_setup_teardown(spool_claim_moves_the_file, setup, teardown),
	    cmocka_unit_test_setup_teardown(spool_group_commit_concurrent, setup, teardown),
	    cmocka_unit_test_setup_teardown(spool_claim_group_shares_folder_fsyncs, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(spool_env_lazy_and_torn, setup, teardown),
	    cmocka_unit_test_setup_teardown(spool_env_torn_when_stale, setup, teardown),
	    cmocka_unit_test_setup_teardown(spool_spare_reused_by_lazy_envelope, setup, teardown),
	    cmocka_unit_test_setup_teardown(spool_spares_bounded, setup, teardown),
	    cmocka_unit_test_setup_teardown(spool_spares_kept_across_restarts, setup, teardown),
	    cmocka_unit_test_setup_teardown(spool_spare_failure_falls_back, setup, teardown),
	    cmocka_unit_test_setup_teardown(spool_spare_old_text_is_torn, setup, teardown),
	    cmocka_unit_test_setup_teardown(spool_dir_fsync_error_fails_callers, setup, teardown),
	    cmocka_unit_test_setup_teardown(spool_file_fsync_error_leaves_nothing, setup, teardown),
	    cmocka_unit_test_setup_teardown(spool_erofs_stops_state_changes, setup, teardown),
	    cmocka_unit_test_setup_teardown(spool_move_nosync_latches_erofs, setup, teardown),
	    cmocka_unit_test_setup_teardown(spool_stat_drop_and_discard, setup, teardown),
	    cmocka_unit_test_setup_teardown(spool_recover_resolves_leftovers, setup, teardown),
	    cmocka_unit_test_setup_teardown(spool_recover_reads_records_and_marks, setup, teardown),
	    cmocka_unit_test_setup_teardown(spool_claim_mark_sending_content, setup, teardown),
	    cmocka_unit_test_setup_teardown(spool_mark_sending_new_same_mode, setup, teardown),
	    cmocka_unit_test_setup_teardown(spool_claim_undo_puts_the_file_back, setup, teardown),
	    cmocka_unit_test_setup_teardown(spool_claim_copy_keeps_the_original_until_done, setup,
					    teardown),
	    cmocka_unit_test(spool_crash_at_each_step),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
