/*
 * Purpose: the record of operator actions taken on the spool while pickupd
 * was not running (pickupctl on the spool directly), so that the daemon's
 * log, where operators and their tools read the history of each message,
 * has every action: pickupctl appends, pickupd logs them at its next start
 * and then removes the record.
 * Owns: <spool>/operator-actions, a text file of lines
 * "TIME uid=N(NAME) ACTION".
 * Invariants: written only under the spool lock (pickupctl) and read only
 * by the daemon holding it; each append is one write(2) of whole lines,
 * fsynced before the command reports success; removed only after the lines
 * were logged (a crash in between logs them twice, never loses them).
 */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "spool/spool.h"
#include "spool/spool_int.h"

#define AUDIT_NAME "operator-actions"
#define AUDIT_MAX  (256u << 20)

int spool_audit_append(struct spool *s, const char *text, size_t len)
{
	int fd = openat(s->dir_fd, AUDIT_NAME,
			O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0640);
	if (fd < 0)
		return -1;
	size_t off = 0;
	while (off < len) {
		ssize_t n = write(fd, text + off, len - off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		off += (size_t)n;
	}
	if (fsync(fd) < 0 || spool_fsync_dir(s->dir_fd) < 0)
		goto fail;
	return close(fd);
fail:;
	int e = errno;
	close(fd);
	errno = e;
	return -1;
}

int spool_audit_read(struct spool *s, struct buf *out)
{
	if (spool__read_all(s->dir_fd, AUDIT_NAME, AUDIT_MAX, out) < 0)
		return errno == ENOENT ? 0 : -1;
	return 0;
}

int spool_audit_clear(struct spool *s)
{
	if (unlinkat(s->dir_fd, AUDIT_NAME, 0) < 0 && errno != ENOENT)
		return -1;
	return spool_fsync_dir(s->dir_fd);
}
