/*
 * Purpose: fsync of many files at once (spool_fsync_many), for a batch of
 * claims: Linux AIO's IOCB_CMD_FSYNC puts every flush in flight together,
 * where a thread's fsync(2) calls wait one after the other, so the block
 * layer merges the batch's cache flushes (a batch of 32 claims: one wait
 * instead of 32). The same vfs_fsync as fsync(2), run by the kernel.
 * Owns: one AIO context per thread that calls it (pool threads live as long
 * as the process; the kernel frees the contexts at exit).
 * Invariants: every fd gets an answer in errs (0 or an errno); whatever AIO
 * cannot take (no AIO: ENOSYS, a seccomp filter's EPERM, aio-max-nr reached;
 * or what io_submit left unsubmitted) is fsynced one by one with fsync(2),
 * so the result never depends on AIO being there.
 */
#include <errno.h>
#include <linux/aio_abi.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "spool/spool.h"

#define AIO_SLOTS 64

static __thread aio_context_t aio_ctx;
static __thread int aio_state; /* 0: not tried, 1: usable, -1: unavailable */

static bool aio_ready(void)
{
	if (aio_state == 0)
		aio_state = syscall(SYS_io_setup, AIO_SLOTS, &aio_ctx) == 0 ? 1 : -1;
	return aio_state > 0;
}

static void fsync_each(const int *fds, size_t n, int *errs)
{
	for (size_t i = 0; i < n; i++)
		errs[i] = fsync(fds[i]) == 0 ? 0 : errno;
}

/* Up to AIO_SLOTS fds: submits what the kernel takes, waits for those,
 * fsyncs the rest one by one. */
static void fsync_chunk(const int *fds, size_t n, int *errs)
{
	struct iocb cb[AIO_SLOTS], *cbs[AIO_SLOTS];
	struct io_event ev[AIO_SLOTS];
	memset(cb, 0, sizeof(cb[0]) * n);
	for (size_t i = 0; i < n; i++) {
		cb[i].aio_data = i;
		cb[i].aio_fildes = (uint32_t)fds[i];
		cb[i].aio_lio_opcode = IOCB_CMD_FSYNC;
		cbs[i] = &cb[i];
		errs[i] = EIO; /* until its event says otherwise */
	}
	long sent = syscall(SYS_io_submit, aio_ctx, (long)n, cbs);
	if (sent < 0) {
		if (errno == ENOSYS || errno == EPERM)
			aio_state = -1; /* not here: fsync(2) from now on */
		sent = 0;
	}
	long got = 0;
	while (got < sent) {
		long r = syscall(SYS_io_getevents, aio_ctx, sent - got, sent - got, ev, NULL);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			/* Cannot happen. The ones not heard of stay EIO, and
			 * this context is left, so that their late events are
			 * never taken for a later batch's. */
			aio_state = -1;
			break;
		}
		for (long k = 0; k < r; k++)
			errs[ev[k].data] = ev[k].res < 0 ? (int)-ev[k].res : 0;
		got += r;
	}
	fsync_each(fds + sent, n - (size_t)sent, errs + sent);
}

void spool_fsync_many(const int *fds, size_t n, int *errs)
{
	for (size_t off = 0; off < n; off += AIO_SLOTS) {
		size_t k = n - off < AIO_SLOTS ? n - off : AIO_SLOTS;
		if (k > 1 && aio_ready())
			fsync_chunk(fds + off, k, errs + off);
		else
			fsync_each(fds + off, k, errs + off);
	}
}
