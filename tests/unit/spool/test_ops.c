/*
 * Purpose: tests of spool/ops.c: the preconditions of the operators'
 * commands, row by row (command x state -> act, destination or refusal),
 * what "ALL" selects (spool_op_applies, which reads the same table), and
 * the names the protocol and the logs use.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "spool/spool.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define ID	      "0123456789ABCDEF0123"

static const struct row {
	enum spool_op op;
	int from; /* -1: in no state */
	enum spool_op_act act;
	int to;			     /* SPOOL_ACT_MOVE only */
	enum spool_op_result result; /* PENDING when there is an act */
	const char *text;	     /* the refusal, NULL with an act */
} rows[] = {
    {SPOOL_OP_RETRY, SPOOL_QUEUE, SPOOL_ACT_NONE, 0, SPOOL_OP_OK,
     ID " is already due or being sent"},
    {SPOOL_OP_RETRY, SPOOL_DEFERRED, SPOOL_ACT_MOVE, SPOOL_QUEUE, SPOOL_OP_PENDING, NULL},
    {SPOOL_OP_RETRY, SPOOL_HOLD, SPOOL_ACT_NONE, 0, SPOOL_OP_FAILED, ID " is in hold; use release"},
    {SPOOL_OP_RETRY, SPOOL_BADMAIL, SPOOL_ACT_NONE, 0, SPOOL_OP_FAILED,
     ID " is in badmail; use requeue"},
    {SPOOL_OP_HOLD, SPOOL_QUEUE, SPOOL_ACT_MOVE, SPOOL_HOLD, SPOOL_OP_PENDING, NULL},
    {SPOOL_OP_HOLD, SPOOL_DEFERRED, SPOOL_ACT_MOVE, SPOOL_HOLD, SPOOL_OP_PENDING, NULL},
    {SPOOL_OP_HOLD, SPOOL_HOLD, SPOOL_ACT_NONE, 0, SPOOL_OP_FAILED,
     ID " is in hold, not queue or deferred"},
    {SPOOL_OP_HOLD, SPOOL_BADMAIL, SPOOL_ACT_NONE, 0, SPOOL_OP_FAILED,
     ID " is in badmail, not queue or deferred"},
    {SPOOL_OP_RELEASE, SPOOL_HOLD, SPOOL_ACT_MOVE, SPOOL_QUEUE, SPOOL_OP_PENDING, NULL},
    {SPOOL_OP_RELEASE, SPOOL_QUEUE, SPOOL_ACT_NONE, 0, SPOOL_OP_FAILED,
     ID " is in queue, not hold"},
    {SPOOL_OP_RELEASE, SPOOL_DEFERRED, SPOOL_ACT_NONE, 0, SPOOL_OP_FAILED,
     ID " is in deferred, not hold"},
    {SPOOL_OP_RELEASE, SPOOL_BADMAIL, SPOOL_ACT_NONE, 0, SPOOL_OP_FAILED,
     ID " is in badmail, not hold"},
    {SPOOL_OP_DELETE, SPOOL_QUEUE, SPOOL_ACT_REMOVE, 0, SPOOL_OP_PENDING, NULL},
    {SPOOL_OP_DELETE, SPOOL_DEFERRED, SPOOL_ACT_REMOVE, 0, SPOOL_OP_PENDING, NULL},
    {SPOOL_OP_DELETE, SPOOL_HOLD, SPOOL_ACT_REMOVE, 0, SPOOL_OP_PENDING, NULL},
    {SPOOL_OP_DELETE, SPOOL_BADMAIL, SPOOL_ACT_REMOVE, 0, SPOOL_OP_PENDING, NULL},
    {SPOOL_OP_REQUEUE, SPOOL_BADMAIL, SPOOL_ACT_REQUEUE, 0, SPOOL_OP_PENDING, NULL},
    {SPOOL_OP_REQUEUE, SPOOL_DEFERRED, SPOOL_ACT_NONE, 0, SPOOL_OP_FAILED,
     ID " is in deferred, not badmail"},
    {SPOOL_OP_PURGE, SPOOL_BADMAIL, SPOOL_ACT_REMOVE, 0, SPOOL_OP_PENDING, NULL},
    {SPOOL_OP_PURGE, SPOOL_HOLD, SPOOL_ACT_NONE, 0, SPOOL_OP_FAILED, ID " is in hold, not badmail"},
    {SPOOL_OP_HOLD, -1, SPOOL_ACT_NONE, 0, SPOOL_OP_FAILED, "no message " ID},
    {SPOOL_OP_DELETE, -1, SPOOL_ACT_NONE, 0, SPOOL_OP_FAILED, "no message " ID},
};

static void spool_ops_plan_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(rows); i++) {
		const struct row *r = &rows[i];
		struct spool_op_item it;
		memset(&it, 0, sizeof(it));
		memcpy(it.id, ID, SPOOL_ID_LEN + 1);
		it.from = r->from;
		spool_op_plan(r->op, &it);
		print_message("row %zu: %s from %d\n", i, spool_op_names[r->op], r->from);
		assert_int_equal(it.act, r->act);
		assert_int_equal(it.result, r->result);
		if (r->act == SPOOL_ACT_MOVE)
			assert_int_equal(it.to, r->to);
		if (r->text)
			assert_string_equal(it.text, r->text);
		else
			assert_null(it.text);
		/* ALL selects exactly the states with an act. */
		if (r->from >= 0)
			assert_int_equal(spool_op_applies(r->op, (enum spool_state)r->from),
					 r->act != SPOOL_ACT_NONE);
		spool_op_item_deinit(&it);
	}
}

static void spool_ops_names_round_trip(void **state)
{
	(void)state;
	for (int op = 0; op < SPOOL_N_OPS; op++) {
		assert_int_equal(spool_op_from_name(spool_op_names[op]), op);
		assert_non_null(spool_op_done((enum spool_op)op));
	}
	assert_int_equal(spool_op_from_name("flush"), -1);
	assert_int_equal(spool_op_from_name(""), -1);
	assert_string_equal(spool_op_done(SPOOL_OP_HOLD), "held");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(spool_ops_plan_table),
	    cmocka_unit_test(spool_ops_names_round_trip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
