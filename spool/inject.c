/*
 * Purpose: messages pickupd writes itself (bounces, delay notices): content
 * from memory made durable in data/ under a new queue ID, and dropped again
 * when its envelope cannot be written; the unsynced deferred -> queue move
 * that starts an attempt.
 * Invariants: the content is durable (file and data/ fsynced) before the
 * caller writes its envelope, so recovery never sees an envelope without it;
 * like every spool write, a failure goes through spool__note_error (EROFS).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "spool/spool.h"
#include "spool/spool_int.h"

int spool_data_create(struct spool *s, const char *data, size_t len, char id_r[SPOOL_ID_LEN + 1])
{
	char tmp[SPOOL_ID_LEN + 16];
	if (spool__check_writable(s) < 0)
		return -1;
	spool_new_id(s, id_r);
	snprintf(tmp, sizeof(tmp), "%s.new", id_r);
	if (spool__write_file(s->tmp_fd, tmp, data, len, 0) < 0)
		goto fail;
	if (renameat2(s->tmp_fd, tmp, s->data_fd, id_r, RENAME_NOREPLACE) < 0 ||
	    spool_fsync_dir(s->data_fd) < 0) {
		int saved = errno;
		unlinkat(s->tmp_fd, tmp, 0);
		errno = saved;
		goto fail;
	}
	return 0;
fail:
	spool__note_error(s);
	return -1;
}

void spool_data_discard(struct spool *s, const char *id)
{
	int saved = errno;
	unlinkat(s->data_fd, id, 0);
	errno = saved;
}

int spool_move_nosync(struct spool *s, const char *id, enum spool_state from, enum spool_state to)
{
	if (spool__check_writable(s) < 0)
		return -1;
	if (spool__hook("nosync-rename") < 0 ||
	    renameat(s->state_fd[from], id, s->state_fd[to], id) < 0) {
		spool__note_error(s);
		return -1;
	}
	return 0;
}
