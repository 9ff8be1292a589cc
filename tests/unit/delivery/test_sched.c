/*
 * Purpose: unit tests for daemon/delivery/sched: the min-heap order (due time, then
 * queue ID), due now against due later, push back, removal, make_due, many
 * entries (with the array shrinking as it empties), and the timer: it calls
 * the due callback for the earliest entry, moves when an earlier entry comes,
 * and an entry that is already due never waits for a timer. No assertion is
 * about how long anything took; a broken timer shows as a test that never
 * ends (ctest's timeout).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/core/handoff.h"
#include "daemon/core/pickupd.h"
#include "daemon/delivery/sched.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define HOUR_MS	      (3600 * 1000)

struct fixture {
	uv_loop_t loop;
	struct sched *s;
	unsigned due_calls;
	/* what the due callback does: pop one entry, or all due ones */
	bool pop_one;
	struct sched_item popped[16];
	size_t n_popped;
	size_t stop_after; /* stop the schedule once this many are popped (0: never) */
};

static void due_cb(void *arg)
{
	struct fixture *f = arg;
	struct sched_item it;
	f->due_calls++;
	while (f->n_popped < ARRAY_SIZE(f->popped) && sched_pop_due(f->s, &it)) {
		f->popped[f->n_popped++] = it;
		if (f->pop_one)
			break;
	}
	if (f->stop_after && f->n_popped >= f->stop_after)
		sched_stop(f->s);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	if (f == NULL || uv_loop_init(&f->loop) != 0)
		return -1;
	f->s = sched_new(&f->loop, due_cb, f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	sched_stop(f->s);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	int rc = uv_loop_close(&f->loop); /* 0: every handle was closed */
	sched_free(f->s);
	free(f);
	return rc == 0 ? 0 : -1;
}

/* A queue ID of the right length (sched copies SPOOL_ID_LEN bytes). */
static void make_id(char id[SPOOL_ID_LEN + 1], const char *tag)
{
	snprintf(id, SPOOL_ID_LEN + 1, "%-*s", SPOOL_ID_LEN, tag);
	for (char *p = id; *p; p++)
		if (*p == ' ')
			*p = '0';
}

static void add(struct sched *s, const char *tag, enum spool_state st, int64_t due_ms)
{
	char id[SPOOL_ID_LEN + 1];
	make_id(id, tag);
	sched_add(s, id, st, due_ms);
}

static void assert_popped(struct sched *s, const char *tag)
{
	char id[SPOOL_ID_LEN + 1];
	struct sched_item it;
	make_id(id, tag);
	assert_true(sched_pop_due(s, &it));
	assert_string_equal(it.id, id);
}

/* ---- the heap --------------------------------------------------------------------------- */

static void sched_heap_order(void **state)
{
	struct fixture *f = *state;
	int64_t now = pickupd_now_ms();
	/* Added out of order; equal due times go by queue ID (arrival order). */
	static const struct {
		const char *tag;
		int64_t ago_ms;
	} rows[] = {
	    {"E", 10}, {"B", 500}, {"D", 10}, {"A", 900}, {"C", 100}, {"F", 0}, {"G", 0},
	};
	static const char *const expected[] = {"A", "B", "C", "D", "E", "F", "G"};
	for (size_t i = 0; i < ARRAY_SIZE(rows); i++)
		add(f->s, rows[i].tag, SPOOL_QUEUE, now - rows[i].ago_ms);
	assert_int_equal(sched_size(f->s), ARRAY_SIZE(rows));
	for (size_t i = 0; i < ARRAY_SIZE(expected); i++)
		assert_popped(f->s, expected[i]);
	struct sched_item it;
	assert_false(sched_pop_due(f->s, &it));
	assert_int_equal(sched_size(f->s), 0);
}

static void sched_due_now_and_later(void **state)
{
	struct fixture *f = *state;
	int64_t now = pickupd_now_ms();
	struct sched_item it;
	assert_false(sched_has_due(f->s));
	add(f->s, "LATER", SPOOL_DEFERRED, now + HOUR_MS);
	assert_false(sched_has_due(f->s));
	assert_false(sched_pop_due(f->s, &it));
	add(f->s, "ZERO", SPOOL_QUEUE, 0); /* 0 means now */
	add(f->s, "PAST", SPOOL_DEFERRED, now - 1000);
	assert_true(sched_has_due(f->s));
	assert_popped(f->s, "ZERO");
	assert_true(sched_pop_due(f->s, &it));
	assert_int_equal(it.state, SPOOL_DEFERRED);
	assert_int_equal(it.due_ms, now - 1000);
	assert_false(sched_has_due(f->s));
	assert_false(sched_pop_due(f->s, &it));
	assert_int_equal(sched_size(f->s), 1);
}

static void sched_push_back_keeps_the_item(void **state)
{
	struct fixture *f = *state;
	struct sched_item it, again;
	add(f->s, "ONE", SPOOL_DEFERRED, 5);
	add(f->s, "TWO", SPOOL_QUEUE, 7);
	assert_true(sched_pop_due(f->s, &it));
	sched_push_back(f->s, &it);
	assert_int_equal(sched_size(f->s), 2);
	assert_true(sched_pop_due(f->s, &again));
	assert_memory_equal(&it, &again, sizeof(it));
}

static void sched_remove_every_entry_of_an_id(void **state)
{
	struct fixture *f = *state;
	static const struct {
		const char *tag;
		int64_t due;
	} rows[] = {{"X", 30}, {"A", 10}, {"X", 5}, {"B", 20}, {"X", 40}, {"C", 25}};
	for (size_t i = 0; i < ARRAY_SIZE(rows); i++)
		add(f->s, rows[i].tag, SPOOL_QUEUE, rows[i].due);
	char id[SPOOL_ID_LEN + 1];
	make_id(id, "X");
	assert_int_equal(sched_remove(f->s, id), 3);
	assert_int_equal(sched_remove(f->s, id), 0);
	make_id(id, "NOSUCH");
	assert_int_equal(sched_remove(f->s, id), 0);
	assert_int_equal(sched_size(f->s), 3);
	/* The heap order survived the holes. */
	assert_popped(f->s, "A");
	assert_popped(f->s, "B");
	assert_popped(f->s, "C");
	assert_int_equal(sched_size(f->s), 0);
}

/* A handoff for id with a content of len bytes; NULL when the budget is spent. */
static struct handoff *new_handoff(struct pickupd *pd, const char *id, size_t len)
{
	struct spool_env env;
	memset(&env, 0, sizeof(env));
	memcpy(env.id, id, sizeof(env.id));
	env.sender = strdup("a@example.org");
	spool_env_add_rcpt(&env, "b@example.org", NULL);
	char *content = len ? calloc(1, len) : NULL;
	struct handoff *h = handoff_new(pd, &env, &content, len);
	free(content); /* NULL when taken over */
	spool_env_deinit(&env);
	return h;
}

/* A handoff is taken once, goes with sched_remove and sched_free, and all of
 * them together stay within their budget, which they give back. */
static void sched_handoffs_kept_taken_dropped(void **state)
{
	struct fixture *f = *state;
	struct pickupd pd;
	memset(&pd, 0, sizeof(pd));
	char a[SPOOL_ID_LEN + 1], b[SPOOL_ID_LEN + 1], c[SPOOL_ID_LEN + 1];
	make_id(a, "A");
	make_id(b, "B");
	make_id(c, "C");
	struct handoff *ha = new_handoff(&pd, a, 2048);
	assert_non_null(ha);
	assert_non_null(ha->content);
	assert_string_equal(ha->env.sender, "a@example.org");
	sched_add_handoff(f->s, a, SPOOL_QUEUE, 0, ha);
	sched_add_handoff(f->s, b, SPOOL_QUEUE, 0, new_handoff(&pd, b, 0));
	sched_add_handoff(f->s, c, SPOOL_QUEUE, 0, NULL);
	assert_int_equal(sched_handoffs(f->s), 2);
	assert_true(pd.handoff_bytes > 2048);
	assert_ptr_equal(sched_take_handoff(f->s, a), ha);
	assert_null(sched_take_handoff(f->s, a));
	assert_null(sched_take_handoff(f->s, c));
	handoff_drop_content(ha);
	assert_null(ha->content);
	handoff_free(ha);
	assert_int_equal(sched_remove(f->s, b), 1);
	assert_int_equal(sched_handoffs(f->s), 0);
	assert_int_equal(pd.handoff_bytes, 0);

	/* Over the budget: contents first, then envelopes are refused. */
	size_t n = 0, with_content = 0;
	for (;; n++) {
		char id[SPOOL_ID_LEN + 1];
		char tag[16];
		snprintf(tag, sizeof(tag), "M%zuX", n); /* no two alike once padded */
		make_id(id, tag);
		struct handoff *h = new_handoff(&pd, id, HANDOFF_MAX_CONTENT);
		if (h == NULL)
			break;
		with_content += h->content != NULL;
		assert_true(pd.handoff_bytes <= HANDOFF_BUDGET);
		sched_add_handoff(f->s, id, SPOOL_QUEUE, 0, h);
	}
	assert_true(with_content > 0 && with_content < HANDOFF_BUDGET / HANDOFF_MAX_CONTENT + 1);
	assert_true(n > with_content);
	/* A content over the limit is never kept. */
	char big_id[SPOOL_ID_LEN + 1];
	make_id(big_id, "BIG");
	assert_null(sched_take_handoff(f->s, big_id));
	/* teardown's sched_free frees them: ASan would name a leak */
}

static void sched_make_due_by_state(void **state)
{
	struct fixture *f = *state;
	int64_t later = pickupd_now_ms() + HOUR_MS;
	add(f->s, "D1", SPOOL_DEFERRED, later + 2);
	add(f->s, "Q1", SPOOL_QUEUE, later);
	add(f->s, "D2", SPOOL_DEFERRED, later + 1);
	add(f->s, "D0", SPOOL_DEFERRED, 0); /* due already: not counted */
	assert_int_equal(sched_make_due(f->s, SPOOL_DEFERRED), 2);
	assert_int_equal(sched_make_due(f->s, SPOOL_DEFERRED), 0);
	assert_int_equal(sched_make_due(f->s, SPOOL_HOLD), 0);
	assert_popped(f->s, "D0");
	assert_popped(f->s, "D1");
	assert_popped(f->s, "D2");
	struct sched_item it;
	assert_false(sched_pop_due(f->s, &it)); /* the queue entry is not touched */
	assert_int_equal(sched_size(f->s), 1);
}

static void sched_many_entries(void **state)
{
	struct fixture *f = *state;
	enum { N = 50000 };
	int64_t now = pickupd_now_ms();
	srand(42);
	for (unsigned i = 0; i < N; i++) {
		char tag[16];
		snprintf(tag, sizeof(tag), "%u", (unsigned)rand());
		/* many equal times, so the ID order is exercised too */
		add(f->s, tag, (enum spool_state)(i % 2), now - 1 - rand() % 1000);
	}
	assert_int_equal(sched_size(f->s), N);
	struct sched_item prev, it;
	size_t n = 0;
	while (sched_pop_due(f->s, &it)) {
		if (n > 0)
			assert_true(prev.due_ms < it.due_ms ||
				    (prev.due_ms == it.due_ms && strcmp(prev.id, it.id) <= 0));
		prev = it;
		n++;
		/* Interleaved removals and additions keep the order. */
		if (n == N / 2) {
			sched_remove(f->s, it.id);
			add(f->s, "LATE", SPOOL_QUEUE, now + HOUR_MS);
		}
	}
	assert_int_equal(sched_size(f->s), 1);
	assert_true(n >= N / 2);
}

/* ---- the timer --------------------------------------------------------------------------- */

/* The earliest of several future entries fires first, the one an hour
 * ahead not at all; the loop ends because the callback stops the timer. */
static void sched_timer_fires_for_the_earliest(void **state)
{
	struct fixture *f = *state;
	int64_t now = pickupd_now_ms();
	add(f->s, "HOUR", SPOOL_DEFERRED, now + HOUR_MS);
	add(f->s, "SECOND", SPOOL_DEFERRED, now + 60);
	add(f->s, "FIRST", SPOOL_DEFERRED, now + 20);
	f->stop_after = 2;
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(f->n_popped, 2);
	char id[SPOOL_ID_LEN + 1];
	make_id(id, "FIRST");
	assert_string_equal(f->popped[0].id, id);
	make_id(id, "SECOND");
	assert_string_equal(f->popped[1].id, id);
	/* Each pop happened once its time had come, by the wall clock. */
	assert_true(f->popped[1].due_ms <= pickupd_now_ms());
	assert_int_equal(sched_size(f->s), 1);
}

/* An entry added ahead of the armed one moves the timer to it: with the
 * timer left an hour away, this test would hang. */
static void sched_timer_moves_to_a_new_earliest(void **state)
{
	struct fixture *f = *state;
	int64_t now = pickupd_now_ms();
	add(f->s, "HOUR", SPOOL_QUEUE, now + HOUR_MS);
	uv_run(&f->loop, UV_RUN_NOWAIT);
	add(f->s, "SOON", SPOOL_QUEUE, now + 30);
	f->stop_after = 1;
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(f->n_popped, 1);
	char id[SPOOL_ID_LEN + 1];
	make_id(id, "SOON");
	assert_string_equal(f->popped[0].id, id);
}

/* Entries that are due already are handed out on the loop's next turn,
 * one after the other, without blocking: UV_RUN_NOWAIT never waits for a
 * timer, so an entry that waited for one would not come out. */
static void sched_due_entries_never_wait_for_the_timer(void **state)
{
	struct fixture *f = *state;
	int64_t now = pickupd_now_ms();
	add(f->s, "HOUR", SPOOL_QUEUE, now + HOUR_MS);
	add(f->s, "A", SPOOL_QUEUE, 0);
	add(f->s, "B", SPOOL_DEFERRED, now - 5);
	add(f->s, "C", SPOOL_QUEUE, now - 5);
	assert_int_equal(f->due_calls, 0); /* never from inside sched_add */
	f->pop_one = true;
	for (int i = 0; i < 20 && f->n_popped < 3; i++)
		uv_run(&f->loop, UV_RUN_NOWAIT);
	assert_int_equal(f->n_popped, 3);
	char id[SPOOL_ID_LEN + 1];
	make_id(id, "A");
	assert_string_equal(f->popped[0].id, id);
	make_id(id, "B");
	assert_string_equal(f->popped[1].id, id);
	make_id(id, "C");
	assert_string_equal(f->popped[2].id, id);
	/* The hour-ahead entry stays, and nothing more is handed out. */
	unsigned calls = f->due_calls;
	uv_run(&f->loop, UV_RUN_NOWAIT);
	assert_int_equal(f->due_calls, calls);
	assert_int_equal(sched_size(f->s), 1);
}

/* make_due (pickupctl flush) wakes the callback without waiting for the
 * entries' old times. */
static void sched_make_due_wakes_at_once(void **state)
{
	struct fixture *f = *state;
	int64_t later = pickupd_now_ms() + HOUR_MS;
	add(f->s, "D1", SPOOL_DEFERRED, later);
	add(f->s, "D2", SPOOL_DEFERRED, later + 1);
	uv_run(&f->loop, UV_RUN_NOWAIT);
	assert_int_equal(f->due_calls, 0);
	assert_int_equal(sched_make_due(f->s, SPOOL_DEFERRED), 2);
	for (int i = 0; i < 20 && f->n_popped < 2; i++)
		uv_run(&f->loop, UV_RUN_NOWAIT);
	assert_int_equal(f->n_popped, 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(sched_heap_order, setup, teardown),
	    cmocka_unit_test_setup_teardown(sched_due_now_and_later, setup, teardown),
	    cmocka_unit_test_setup_teardown(sched_push_back_keeps_the_item, setup, teardown),
	    cmocka_unit_test_setup_teardown(sched_remove_every_entry_of_an_id, setup, teardown),
	    cmocka_unit_test_setup_teardown(sched_make_due_by_state, setup, teardown),
	    cmocka_unit_test_setup_teardown(sched_handoffs_kept_taken_dropped, setup, teardown),
	    cmocka_unit_test_setup_teardown(sched_many_entries, setup, teardown),
	    cmocka_unit_test_setup_teardown(sched_timer_fires_for_the_earliest, setup, teardown),
	    cmocka_unit_test_setup_teardown(sched_timer_moves_to_a_new_earliest, setup, teardown),
	    cmocka_unit_test_setup_teardown(sched_due_entries_never_wait_for_the_timer, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(sched_make_due_wakes_at_once, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
