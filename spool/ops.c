/*
 * Purpose: the operators' commands on messages (retry, hold, release,
 * delete, requeue, purge) as the spool sees them: what each may do from
 * which state (one table, spool_op_plan, for the daemon's control socket
 * and for pickupctl working on the spool directly), and their batched
 * execution.
 * Owns: nothing; the items belong to the caller.
 * Invariants: every state change is a spool_move/spool_env_write/spool_remove
 * or their batched forms (spool/batch.c), durable before it returns; a state
 * a command does not apply to is refused with a reason, never acted on.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "spool/spool.h"

const char *const spool_op_names[SPOOL_N_OPS] = {"retry",  "hold",    "release",
						 "delete", "requeue", "purge"};

int spool_op_from_name(const char *name)
{
	for (int i = 0; i < SPOOL_N_OPS; i++)
		if (strcmp(name, spool_op_names[i]) == 0)
			return i;
	return -1;
}

const char *spool_op_done(enum spool_op op)
{
	static const char *const done[SPOOL_N_OPS] = {"moved to queue", "held",	    "released",
						      "deleted",	"requeued", "purged"};
	return done[op];
}

void spool_op_set(struct spool_op_item *it, enum spool_op_result r, const char *fmt, ...)
{
	struct buf b = BUF_INIT;
	va_list ap;
	va_start(ap, fmt);
	buf_vprintf(&b, fmt, ap);
	va_end(ap);
	free(it->text);
	it->text = b.data ? b.data : xstrdup("");
	it->result = r;
}

void spool_op_item_deinit(struct spool_op_item *it)
{
	free(it->text);
	it->text = NULL;
}

int spool_locate(struct spool *sp, const char *id)
{
	struct stat st;
	for (int s = 0; s < SPOOL_N_STATES; s++)
		if (fstatat(sp->state_fd[s], id, &st, AT_SYMLINK_NOFOLLOW) == 0)
			return s;
	errno = ENOENT;
	return -1;
}

int spool_requeue(struct spool *sp, const char *id, struct buf *why)
{
	struct spool_env e;
	struct buf reason = BUF_INIT;
	int rc = -1;
	if (spool_env_read(sp, SPOOL_BADMAIL, id, &e, &reason) < 0) {
		buf_printf(why, "%s: %s", id, reason.data ? reason.data : strerror(errno));
		buf_deinit(&reason);
		return -1;
	}
	if (e.sender == NULL || e.n_rcpts == 0) {
		buf_printf(why,
			   "%s was refused at pickup (%s): it has no usable envelope; fix the file "
			   "and drop it into the pickup folder again",
			   id, e.reason ? e.reason : "no reason recorded");
		goto out;
	}
	size_t n = 0;
	for (size_t i = 0; i < e.n_rcpts; i++) {
		if (e.rcpts[i].status != RCPT_SENT) {
			e.rcpts[i].status = RCPT_PENDING;
			n++;
		}
	}
	if (n == 0) {
		buf_printf(why, "%s has no recipient left to send to", id);
		goto out;
	}
	free(e.reason);
	e.reason = NULL;
	e.attempts = 0;
	e.next_ms = 0;
	/* Rewritten where it is, then one rename: a crash leaves it in one place. */
	if (spool_env_write(sp, SPOOL_BADMAIL, &e) < 0 ||
	    spool_move(sp, id, SPOOL_BADMAIL, SPOOL_QUEUE) < 0) {
		buf_printf(why, "%s: cannot requeue: %s", id, strerror(errno));
		goto out;
	}
	rc = 0;
out:
	spool_env_deinit(&e);
	buf_deinit(&reason);
	return rc;
}

static void plan_move(struct spool_op_item *it, enum spool_state to)
{
	it->act = SPOOL_ACT_MOVE;
	it->to = to;
}

void spool_op_plan(enum spool_op op, struct spool_op_item *it)
{
	it->act = SPOOL_ACT_NONE;
	it->result = SPOOL_OP_PENDING;
	if (it->from < 0) {
		spool_op_set(it, SPOOL_OP_FAILED, "no message %s", it->id);
		return;
	}
	const char *where = spool_state_names[it->from];
	switch (op) {
	case SPOOL_OP_RETRY:
		if (it->from == SPOOL_QUEUE)
			spool_op_set(it, SPOOL_OP_OK, "%s is already due or being sent", it->id);
		else if (it->from == SPOOL_DEFERRED)
			plan_move(it, SPOOL_QUEUE);
		else
			spool_op_set(it, SPOOL_OP_FAILED, "%s is in %s; use %s", it->id, where,
				     it->from == SPOOL_HOLD ? "release" : "requeue");
		break;
	case SPOOL_OP_HOLD:
		if (it->from == SPOOL_QUEUE || it->from == SPOOL_DEFERRED)
			plan_move(it, SPOOL_HOLD);
		else
			spool_op_set(it, SPOOL_OP_FAILED, "%s is in %s, not queue or deferred",
				     it->id, where);
		break;
	case SPOOL_OP_RELEASE:
		if (it->from == SPOOL_HOLD)
			plan_move(it, SPOOL_QUEUE);
		else
			spool_op_set(it, SPOOL_OP_FAILED, "%s is in %s, not hold", it->id, where);
		break;
	case SPOOL_OP_DELETE:
		it->act = SPOOL_ACT_REMOVE;
		break;
	case SPOOL_OP_REQUEUE:
	case SPOOL_OP_PURGE:
		if (it->from == SPOOL_BADMAIL)
			it->act = op == SPOOL_OP_PURGE ? SPOOL_ACT_REMOVE : SPOOL_ACT_REQUEUE;
		else
			spool_op_set(it, SPOOL_OP_FAILED, "%s is in %s, not badmail", it->id,
				     where);
		break;
	case SPOOL_N_OPS:
		break;
	}
}

bool spool_op_applies(enum spool_op op, enum spool_state st)
{
	struct spool_op_item it;
	memset(&it, 0, sizeof(it));
	it.from = (int)st;
	spool_op_plan(op, &it);
	spool_op_item_deinit(&it);
	return it.act != SPOOL_ACT_NONE;
}

/* Runs one group (same act, from and to) through the batched spool calls. */
static void apply_group(struct spool *sp, enum spool_op op, struct spool_op_item **group, size_t n)
{
	char **ids = xcalloc(n, sizeof(*ids));
	int *errs = xcalloc(n, sizeof(*errs));
	for (size_t i = 0; i < n; i++)
		ids[i] = group[i]->id;
	if (group[0]->act == SPOOL_ACT_MOVE)
		spool_move_many(sp, ids, n, (enum spool_state)group[0]->from, group[0]->to, errs);
	else
		spool_remove_many(sp, ids, n, (enum spool_state)group[0]->from, errs);
	for (size_t i = 0; i < n; i++) {
		if (errs[i] == 0)
			spool_op_set(group[i], SPOOL_OP_OK, "%s %s", group[i]->id,
				     spool_op_done(op));
		else
			spool_op_set(group[i], SPOOL_OP_FAILED, "%s: cannot %s: %s", group[i]->id,
				     spool_op_names[op], strerror(errs[i]));
	}
	free(ids);
	free(errs);
}

void spool_op_apply(struct spool *sp, enum spool_op op, struct spool_op_item *items, size_t n)
{
	struct spool_op_item **group = xcalloc(n ? n : 1, sizeof(*group));
	for (int from = 0; from < SPOOL_N_STATES; from++) {
		for (int to = 0; to <= SPOOL_N_STATES; to++) {
			/* to == SPOOL_N_STATES: the removals from `from`. */
			size_t k = 0;
			for (size_t i = 0; i < n; i++) {
				struct spool_op_item *it = &items[i];
				if (it->result != SPOOL_OP_PENDING || it->from != from)
					continue;
				if (to < SPOOL_N_STATES
					? it->act == SPOOL_ACT_MOVE && (int)it->to == to
					: it->act == SPOOL_ACT_REMOVE)
					group[k++] = it;
			}
			if (k)
				apply_group(sp, op, group, k);
		}
	}
	free(group);
	for (size_t i = 0; i < n; i++) {
		struct spool_op_item *it = &items[i];
		if (it->result != SPOOL_OP_PENDING || it->act != SPOOL_ACT_REQUEUE)
			continue;
		struct buf why = BUF_INIT;
		if (spool_requeue(sp, it->id, &why) == 0)
			spool_op_set(it, SPOOL_OP_OK, "%s requeued", it->id);
		else
			spool_op_set(it, SPOOL_OP_FAILED, "%s",
				     why.data ? why.data : "cannot requeue");
		buf_deinit(&why);
	}
}
