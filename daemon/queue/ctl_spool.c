/*
 * Purpose: queue operations that the daemon's control socket (ctl.c) and
 * pickupctl (on the spool directly, daemon down) both perform: the plan of
 * a command for a message in a given state (one table of preconditions for
 * both paths), its batched execution, badmail ages, and the scan of pickup
 * folders for files that stay.
 * Owns: nothing. Plain spool calls, no libuv, so pickupctl links only this.
 * Invariants: every state change is a spool_move/spool_env_write/spool_remove
 * or their batched forms, durable before it returns; the pickup folders are
 * only read (no open of a file for reading, no lock taken).
 */
#include "daemon/queue/ctl_spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/match.h"

int ctl_spool_locate(struct spool *sp, const char *id)
{
	struct stat st;
	for (int s = 0; s < SPOOL_N_STATES; s++)
		if (fstatat(sp->state_fd[s], id, &st, AT_SYMLINK_NOFOLLOW) == 0)
			return s;
	errno = ENOENT;
	return -1;
}

int ctl_spool_requeue(struct spool *sp, const char *id, struct buf *why)
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

/* ---- commands over many IDs ------------------------------------------------------------ */

const char *const ctl_cmd_names[CTL_N_CMDS] = {"retry",	 "hold",    "release",
					       "delete", "requeue", "purge"};
const char *const ctl_result_names[4] = {"pending", "ok", "error", "busy"};

int ctl_cmd_from_name(const char *name)
{
	for (int i = 0; i < CTL_N_CMDS; i++)
		if (strcmp(name, ctl_cmd_names[i]) == 0)
			return i;
	return -1;
}

const char *ctl_cmd_done(enum ctl_cmd cmd)
{
	static const char *const done[CTL_N_CMDS] = {"moved to queue", "held",	   "released",
						     "deleted",	       "requeued", "purged"};
	return done[cmd];
}

void ctl_item_set(struct ctl_item *it, enum ctl_result r, const char *fmt, ...)
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

void ctl_item_deinit(struct ctl_item *it)
{
	free(it->text);
	it->text = NULL;
}

static void plan_move(struct ctl_item *it, enum spool_state to)
{
	it->act = CTL_ACT_MOVE;
	it->to = to;
}

void ctl_spool_plan(enum ctl_cmd cmd, struct ctl_item *it)
{
	it->act = CTL_ACT_NONE;
	it->result = CTL_PENDING;
	if (it->from < 0) {
		ctl_item_set(it, CTL_FAILED, "no message %s", it->id);
		return;
	}
	const char *where = spool_state_names[it->from];
	switch (cmd) {
	case CTL_RETRY:
		if (it->from == SPOOL_QUEUE)
			ctl_item_set(it, CTL_OK, "%s is already due or being sent", it->id);
		else if (it->from == SPOOL_DEFERRED)
			plan_move(it, SPOOL_QUEUE);
		else
			ctl_item_set(it, CTL_FAILED, "%s is in %s; use %s", it->id, where,
				     it->from == SPOOL_HOLD ? "release" : "requeue");
		break;
	case CTL_HOLD:
		if (it->from == SPOOL_QUEUE || it->from == SPOOL_DEFERRED)
			plan_move(it, SPOOL_HOLD);
		else
			ctl_item_set(it, CTL_FAILED, "%s is in %s, not queue or deferred", it->id,
				     where);
		break;
	case CTL_RELEASE:
		if (it->from == SPOOL_HOLD)
			plan_move(it, SPOOL_QUEUE);
		else
			ctl_item_set(it, CTL_FAILED, "%s is in %s, not hold", it->id, where);
		break;
	case CTL_DELETE:
		it->act = CTL_ACT_REMOVE;
		break;
	case CTL_REQUEUE:
	case CTL_PURGE:
		if (it->from == SPOOL_BADMAIL)
			it->act = cmd == CTL_PURGE ? CTL_ACT_REMOVE : CTL_ACT_REQUEUE;
		else
			ctl_item_set(it, CTL_FAILED, "%s is in %s, not badmail", it->id, where);
		break;
	case CTL_N_CMDS:
		break;
	}
}

/* Runs one group (same act, from and to) through the batched spool calls. */
static void apply_group(struct spool *sp, enum ctl_cmd cmd, struct ctl_item **group, size_t n)
{
	char **ids = xcalloc(n, sizeof(*ids));
	int *errs = xcalloc(n, sizeof(*errs));
	for (size_t i = 0; i < n; i++)
		ids[i] = group[i]->id;
	if (group[0]->act == CTL_ACT_MOVE)
		spool_move_many(sp, ids, n, (enum spool_state)group[0]->from, group[0]->to, errs);
	else
		spool_remove_many(sp, ids, n, (enum spool_state)group[0]->from, errs);
	for (size_t i = 0; i < n; i++) {
		if (errs[i] == 0)
			ctl_item_set(group[i], CTL_OK, "%s %s", group[i]->id, ctl_cmd_done(cmd));
		else
			ctl_item_set(group[i], CTL_FAILED, "%s: cannot %s: %s", group[i]->id,
				     ctl_cmd_names[cmd], strerror(errs[i]));
	}
	free(ids);
	free(errs);
}

void ctl_spool_apply(struct spool *sp, enum ctl_cmd cmd, struct ctl_item *items, size_t n)
{
	struct ctl_item **group = xcalloc(n ? n : 1, sizeof(*group));
	for (int from = 0; from < SPOOL_N_STATES; from++) {
		for (int to = 0; to <= SPOOL_N_STATES; to++) {
			/* to == SPOOL_N_STATES: the removals from `from`. */
			size_t k = 0;
			for (size_t i = 0; i < n; i++) {
				struct ctl_item *it = &items[i];
				if (it->result != CTL_PENDING || it->from != from)
					continue;
				if (to < SPOOL_N_STATES
					? it->act == CTL_ACT_MOVE && (int)it->to == to
					: it->act == CTL_ACT_REMOVE)
					group[k++] = it;
			}
			if (k)
				apply_group(sp, cmd, group, k);
		}
	}
	free(group);
	for (size_t i = 0; i < n; i++) {
		struct ctl_item *it = &items[i];
		if (it->result != CTL_PENDING || it->act != CTL_ACT_REQUEUE)
			continue;
		struct buf why = BUF_INIT;
		if (ctl_spool_requeue(sp, it->id, &why) == 0)
			ctl_item_set(it, CTL_OK, "%s requeued", it->id);
		else
			ctl_item_set(it, CTL_FAILED, "%s", why.data ? why.data : "cannot requeue");
		buf_deinit(&why);
	}
}

/* ---- badmail retention ------------------------------------------------------------------- */

static int64_t ts_ms(struct timespec ts)
{
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ctl_spool_badmail(struct spool *sp, struct ctl_badmail **v_r, size_t *n_r)
{
	char **ids;
	size_t n;
	*v_r = NULL;
	*n_r = 0;
	if (spool_list(sp, SPOOL_BADMAIL, &ids, &n) < 0)
		return -1;
	struct ctl_badmail *v = xcalloc(n ? n : 1, sizeof(*v));
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		struct stat st, dst;
		if (fstatat(sp->state_fd[SPOOL_BADMAIL], ids[i], &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue; /* gone meanwhile */
		memcpy(v[k].id, ids[i], SPOOL_ID_LEN + 1);
		v[k].since_ms = ts_ms(st.st_ctim);
		if (fstatat(sp->data_fd, ids[i], &dst, AT_SYMLINK_NOFOLLOW) == 0)
			v[k].bytes = (uint64_t)dst.st_size;
		k++;
	}
	spool_list_free(ids, n);
	*v_r = v;
	*n_r = k;
	return 0;
}

/* ---- stuck pickup files ------------------------------------------------------------------ */

const char *const ctl_stuck_names[STUCK_N] = {"unreadable", "unmatched", "old", "not_regular"};

#define STUCK_MIN_AGE_MS (5 * 60 * 1000)

int64_t ctl_stuck_age_ms(const struct config_pickup *pk)
{
	int64_t t = (int64_t)pk->settle_time_ms + 2 * (int64_t)pk->rescan_interval_ms;
	return t > STUCK_MIN_AGE_MS ? t : STUCK_MIN_AGE_MS;
}

/* A name writers use while writing (see common/match.h). */
static bool temp_name(const char *name)
{
	size_t n = strlen(name);
	return name[0] == '.' || (n >= 4 && strcasecmp(name + n - 4, ".tmp") == 0) ||
	       (n >= 5 && strcasecmp(name + n - 5, ".part") == 0);
}

static void note_stuck(struct ctl_stuck *r, enum ctl_stuck_reason why, const char *name)
{
	if (r->count[why] < CTL_STUCK_EXAMPLES)
		r->examples[why][r->count[why]] = xstrdup(name);
	r->count[why]++;
}

void ctl_spool_stuck(const struct config_pickup *pk, int64_t now_ms, struct ctl_stuck *r)
{
	memset(r, 0, sizeof(*r));
	int fd = open(pk->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (d == NULL) {
		r->err = errno;
		if (fd >= 0)
			close(fd);
		return;
	}
	int64_t old = now_ms - ctl_stuck_age_ms(pk);
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		const char *name = de->d_name;
		struct stat st;
		if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
			continue;
		if (fstatat(dirfd(d), name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue; /* taken meanwhile */
		bool matched = match_name(pk->match, name);
		bool is_old = ts_ms(st.st_mtim) < old;
		if (S_ISDIR(st.st_mode)) {
			if (matched)
				note_stuck(r, STUCK_NOT_REGULAR, name);
		} else if (!matched) {
			/* A temp file is a writer at work, until it is old. */
			if (!temp_name(name) || is_old)
				note_stuck(r, STUCK_UNMATCHED, name);
		} else if (!S_ISREG(st.st_mode)) {
			continue; /* refused into badmail as soon as pickupd sees it */
		} else if (faccessat(dirfd(d), name, R_OK, AT_EACCESS) < 0) {
			note_stuck(r, STUCK_UNREADABLE, name);
		} else if (is_old) {
			note_stuck(r, STUCK_OLD, name);
		}
	}
	closedir(d);
}

void ctl_stuck_deinit(struct ctl_stuck *r)
{
	for (int i = 0; i < STUCK_N; i++)
		for (int k = 0; k < CTL_STUCK_EXAMPLES; k++)
			free(r->examples[i][k]);
	memset(r, 0, sizeof(*r));
}
