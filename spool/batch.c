/*
 * Purpose: transitions of many messages at once, for operators' commands
 * (pickupctl delete ALL deferred, hold ALL, purge): the steps of spool_move
 * and spool_remove, with each directory fsynced once per batch instead of
 * once per message, so 10,000 messages cost a few fsyncs, not 20,000.
 * Owns: nothing; every rename and unlink here is one spool.c would make.
 * Invariants: the same order and hooks as the one-message calls (rename,
 * destination fsync, source fsync; content unlink, data/ fsync, envelope
 * unlink), so a crash anywhere leaves what recovery already resolves; an
 * ID is reported done only after the fsync that covers it succeeded; after
 * EROFS nothing more is attempted.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "spool/spool.h"
#include "spool/spool_int.h"

/* Fails every ID still marked pending (err 0 and flagged) with e. */
static void fail_rest(const bool *touched, int *err_r, size_t n, int e)
{
	for (size_t i = 0; i < n; i++)
		if (touched[i] && err_r[i] == 0)
			err_r[i] = e;
}

static size_t count_ok(const int *err_r, size_t n)
{
	size_t ok = 0;
	for (size_t i = 0; i < n; i++)
		ok += err_r[i] == 0;
	return ok;
}

size_t spool_move_many(struct spool *s, char *const *ids, size_t n, enum spool_state from,
		       enum spool_state to, int *err_r)
{
	bool *touched = xcalloc(n ? n : 1, sizeof(*touched));
	for (size_t i = 0; i < n; i++)
		err_r[i] = 0;
	if (from == to)
		goto out;
	for (size_t i = 0; i < n; i++) {
		if (spool_readonly(s)) {
			err_r[i] = EROFS;
			continue;
		}
		if (spool__hook("move-rename") < 0 ||
		    renameat(s->state_fd[from], ids[i], s->state_fd[to], ids[i]) < 0) {
			err_r[i] = errno;
			continue;
		}
		touched[i] = true;
	}
	/* The destination first, then the source: as spool_move. */
	if (spool__hook("move-dirsync") < 0 || spool_fsync_dir_shared(s, (int)to) < 0 ||
	    spool__hook("move-srcsync") < 0 || spool_fsync_dir_shared(s, (int)from) < 0)
		fail_rest(touched, err_r, n, errno);
out:
	free(touched);
	return count_ok(err_r, n);
}

size_t spool_remove_many(struct spool *s, char *const *ids, size_t n, enum spool_state state,
			 int *err_r)
{
	bool *touched = xcalloc(n ? n : 1, sizeof(*touched));
	/* The names the content had in its pickup folder go durably first. */
	int settle_err = spool_settle_folders(s) < 0 ? errno : 0;
	for (size_t i = 0; i < n; i++) {
		err_r[i] = 0;
		if (spool_readonly(s)) {
			err_r[i] = EROFS;
			continue;
		}
		if (settle_err) {
			err_r[i] = settle_err;
			continue;
		}
		if (spool__hook("remove-data") < 0 ||
		    (unlinkat(s->data_fd, ids[i], 0) < 0 && errno != ENOENT)) {
			spool__note_error(s);
			err_r[i] = errno;
			continue;
		}
		spool__drop_record(s, ids[i]);
		touched[i] = true;
	}
	/* Content gone durably is the record that a message is done. */
	bool any = false;
	for (size_t i = 0; i < n; i++)
		any |= touched[i];
	if (any &&
	    (spool__hook("remove-datasync") < 0 || spool_fsync_dir_shared(s, SPOOL_DIR_DATA) < 0))
		fail_rest(touched, err_r, n, errno);
	for (size_t i = 0; i < n; i++) {
		if (!touched[i] || err_r[i] != 0)
			continue;
		/* Not fsynced, as spool_remove: an envelope that comes back
		 * after a crash has no content and recovery drops it. */
		if (spool__hook("remove-env") < 0 ||
		    spool__env_retire(s, s->state_fd[state], ids[i]) < 0) {
			spool__note_error(s);
			err_r[i] = errno;
		}
	}
	free(touched);
	return count_ok(err_r, n);
}
