/*
 * Purpose: tests of daemon/queue/ctl_proto.c, the control protocol both ends
 * include: every answer the daemon formats parses back to what it said at
 * the client (status with relay names that hold commas, answers, batch
 * lines, the end of a batch), requests are parsed as the table of verbs
 * says, and a text never breaks a line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/queue/ctl_proto.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define ID	      "0123456789ABCDEF0123"

static void ctl_proto_status_round_trip(void **state)
{
	(void)state;
	struct ctl_status st, back;
	memset(&st, 0, sizeof(st));
	st.pid = 4242;
	snprintf(st.version, sizeof(st.version), "1.2.3");
	st.queued = 17;
	st.sessions = 3;
	st.stopping = true;
	st.n_relays = 2;
	snprintf(st.relays[0].name, sizeof(st.relays[0].name), "primary");
	st.relays[0].sessions = 2;
	st.relays[0].limit = 4;
	st.relays[0].max_sessions = 4;
	snprintf(st.relays[1].name, sizeof(st.relays[1].name), "odd,name,with,commas");
	st.relays[1].sessions = 1;
	st.relays[1].paused_s = 300;
	st.relays[1].limit = 1;
	st.relays[1].max_sessions = 8;
	struct buf b = BUF_INIT;
	ctl_put_status(&b, &st);
	assert_string_equal(b.data, "ok queued=17 sessions=3 stopping=1 pid=4242 version=1.2.3 "
				    "relay=primary,2,0,4,4 relay=odd,name,with,commas,1,300,1,8\n");
	b.data[b.len - 1] = '\0';
	assert_int_equal(ctl_parse_status(b.data, &back), 0);
	assert_int_equal(back.pid, 4242);
	assert_string_equal(back.version, "1.2.3");
	assert_int_equal(back.queued, 17);
	assert_int_equal(back.sessions, 3);
	assert_true(back.stopping);
	assert_int_equal(back.n_relays, 2);
	assert_string_equal(back.relays[1].name, "odd,name,with,commas");
	assert_int_equal(back.relays[1].paused_s, 300);
	assert_int_equal(back.relays[1].max_sessions, 8);
	assert_int_equal(ctl_parse_status("error unknown command", &back), -1);
	/* A newer daemon's extra field, a short relay field: skipped. */
	assert_int_equal(ctl_parse_status("ok queued=1 future=x relay=a,1", &back), 0);
	assert_int_equal(back.queued, 1);
	assert_int_equal(back.n_relays, 0);
	buf_deinit(&b);
}

static void ctl_proto_answers_round_trip(void **state)
{
	(void)state;
	struct buf b = BUF_INIT;
	const char *text;
	ctl_put_answer(&b, SPOOL_OP_BUSY, "%s is being sent\nright now", ID);
	assert_string_equal(b.data, "busy " ID " is being sent right now\n");
	b.data[b.len - 1] = '\0';
	assert_int_equal(ctl_parse_answer(b.data, &text), SPOOL_OP_BUSY);
	assert_string_equal(text, ID " is being sent right now");
	assert_int_equal(ctl_parse_answer("ok", &text), SPOOL_OP_OK);
	assert_string_equal(text, "");
	assert_int_equal(ctl_parse_answer("okay then", &text), SPOOL_OP_PENDING);
	buf_deinit(&b);
}

static void ctl_proto_batch_round_trip(void **state)
{
	(void)state;
	struct buf b = BUF_INIT;
	struct spool_op_item it;
	memset(&it, 0, sizeof(it));
	memcpy(it.id, ID, sizeof(it.id));
	spool_op_set(&it, SPOOL_OP_FAILED, "%s is in hold,\r\nnot badmail", ID);
	ctl_put_item(&b, &it);
	assert_false(ctl_batch_answered(b.data, b.len));
	ctl_put_end(&b, 0, 1, 0);
	assert_true(ctl_batch_answered(b.data, b.len));
	assert_false(ctl_batch_answered(b.data, b.len - 1));
	char *nl = strchr(b.data, '\n');
	*nl = '\0';
	enum spool_op_result r;
	char id[SPOOL_ID_LEN + 1];
	const char *text;
	assert_int_equal(ctl_parse_item(b.data, &r, id, &text), 1);
	assert_int_equal(r, SPOOL_OP_FAILED);
	assert_string_equal(id, ID);
	assert_string_equal(text, ID " is in hold,  not badmail");
	assert_int_equal(ctl_parse_item(nl + 1, &r, id, &text), 0);
	assert_int_equal(ctl_parse_item("error batch needs a command", &r, id, &text), -1);
	/* A refusal of the request itself ends the answer; an item does not. */
	const char *refused = "error batch needs a count of IDs (at most 100000)\n";
	assert_true(ctl_batch_answered(refused, strlen(refused)));
	const char *item = "error " ID " no message\n";
	assert_false(ctl_batch_answered(item, strlen(item)));
	spool_op_item_deinit(&it);
	buf_deinit(&b);
	ctl_put_batch_head(&b, SPOOL_OP_PURGE, 2);
	ctl_put_id(&b, ID);
	assert_string_equal(b.data, "batch purge 2\n" ID "\n");
	buf_deinit(&b);
}

static const struct req_row {
	const char *line;
	int rc;
	enum ctl_verb verb;
	enum spool_op op;
	const char *id_or_error;
	size_t count;
} req_rows[] = {
    {"status", 0, CTL_STATUS, 0, NULL, 0},
    {"flush", 0, CTL_FLUSH, 0, NULL, 0},
    {"hold " ID, 0, CTL_ONE, SPOOL_OP_HOLD, ID, 0},
    {"requeue\tX", 0, CTL_ONE, SPOOL_OP_REQUEUE, "X", 0},
    {"delete", 0, CTL_ONE, SPOOL_OP_DELETE, NULL, 0},
    {"batch purge 12", 0, CTL_BATCH, SPOOL_OP_PURGE, NULL, 12},
    {"batch hold 0", 0, CTL_BATCH, SPOOL_OP_HOLD, NULL, 0},
    {"", -1, 0, 0, "empty request", 0},
    {"purge " ID, -1, 0, 0, "unknown command", 0},
    {"frobnicate", -1, 0, 0, "unknown command", 0},
    {"hold a b", -1, 0, 0, "too many arguments", 0},
    {"batch hold 1 2", -1, 0, 0, "too many arguments", 0},
    {"batch flush 1", -1, 0, 0, "batch needs a command: retry|hold|release|delete|requeue|purge",
     0},
    {"batch hold", -1, 0, 0, "batch needs a count of IDs (at most 100000)", 0},
    {"batch hold 100001", -1, 0, 0, "batch needs a count of IDs (at most 100000)", 0},
    {"batch hold 5x", -1, 0, 0, "batch needs a count of IDs (at most 100000)", 0},
};

static void ctl_proto_requests_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(req_rows); i++) {
		const struct req_row *r = &req_rows[i];
		char line[128];
		struct ctl_request rq;
		const char *error = NULL;
		snprintf(line, sizeof(line), "%s", r->line);
		print_message("row %zu: %s\n", i, r->line);
		assert_int_equal(ctl_parse_request(line, &rq, &error), r->rc);
		if (r->rc < 0) {
			assert_string_equal(error, r->id_or_error);
			continue;
		}
		assert_int_equal(rq.verb, r->verb);
		if (r->verb == CTL_ONE || r->verb == CTL_BATCH)
			assert_int_equal(rq.op, r->op);
		if (r->verb == CTL_ONE && r->id_or_error)
			assert_string_equal(rq.id, r->id_or_error);
		else
			assert_null(rq.id);
		assert_int_equal(rq.count, r->count);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(ctl_proto_status_round_trip),
	    cmocka_unit_test(ctl_proto_answers_round_trip),
	    cmocka_unit_test(ctl_proto_batch_round_trip),
	    cmocka_unit_test(ctl_proto_requests_table),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
