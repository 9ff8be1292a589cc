/*
 * Purpose: LD_PRELOAD fault injection for file-system calls, for the fault
 * tests (ENOSPC, EIO, EROFS) of the real pickupd.
 *
 *   LD_PRELOAD=.../libfaultfs.so FAULTFS_CTL=/path/to/ctl pickupd ...
 *
 * The control file holds one rule, or nothing (no fault); it is read again
 * on every intercepted call, so a test turns faults on and off while the
 * daemon runs:
 *
 *   OPS:ERRNO:PATH      e.g.  write,fsync:ENOSPC:/spool/
 *
 * OPS is a comma list of write (write, pwrite, writev), fsync (fsync,
 * fdatasync), rename (rename, renameat, renameat2), open (openat/open with
 * O_CREAT), chmod (fchmod, fchmodat), read (the positioned reads: pread,
 * preadv2; EAGAIN there is what a read with RWF_NOWAIT says when the page
 * cache does not hold the data), and main (only calls made on the
 * process's main thread, which is pickupd's event loop: work meant for the
 * thread pool is caught if it runs there); ERRNO is ENOSPC, EIO, EROFS,
 * EDQUOT, EAGAIN or a number; the call fails when the path of its descriptor (from
 * /proc/self/fd) or one of its path arguments (resolved against the
 * directory descriptor) contains PATH; ERRNO+DELAY (EIO+DELAY) fails it
 * after half a second. ERRNO DELAY makes a chmod or fsync call wait half a
 * second, then succeed, and append "OP PATH SECONDS" (the wall clock when it
 * returned) to the control file's name + ".log": a test then sees what
 * happened before the call was done. fsync covers Linux AIO's fsync too
 * (io_submit through syscall(): see there). sendfile(2) is a read of its
 * input file for the read rules; sendfile:SHORT:PATH makes it take at most
 * 4093 octets a call, as a socket with little room does. nowait is the
 * positioned reads made with RWF_NOWAIT only (the page-cache probes).
 * FAULTFS=RULE may be given instead of FAULTFS_CTL for a fixed rule.
 *
 * Owns: nothing; Invariants: calls that do not match go to libc unchanged,
 * and the shim itself only calls functions it does not intercept.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/aio_abi.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
/* This file defines syscall() (the interception of io_submit, below) with
 * its seven arguments named, not as unistd.h declares it. */
#define syscall faultfs_unistd_syscall
#include <unistd.h>
#undef syscall

/* libc's syscall(), called with all seven arguments: the shim's own raw
 * system calls go straight to it, not through the interception below. */
typedef long (*syscall_fn)(long, long, long, long, long, long, long);
static syscall_fn libc_syscall(void)
{
	static syscall_fn f;
	if (f == NULL)
		f = (syscall_fn)dlsym(RTLD_NEXT, "syscall");
	return f;
}
#define RAW(...) RAW_(__VA_ARGS__, 0, 0, 0, 0, 0, 0, 0)
#define RAW_(n, a, b, c, d, e, f, ...)                                                             \
	libc_syscall()((long)(n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), (long)(f))

enum {
	OP_WRITE = 1,
	OP_FSYNC = 2,
	OP_RENAME = 4,
	OP_OPEN = 8,
	OP_CHMOD = 16,
	OP_READ = 32,
	OP_SENDFILE = 64,
	OP_NOWAIT = 128
};
#define FAULT_DELAY   (-1)  /* ERRNO DELAY: chmod only */
#define FAULT_SHORT   (-2)  /* ERRNO SHORT: sendfile only */
#define OPS_MAIN_ONLY 0x100 /* the rule applies on the main thread only */

struct rule {
	unsigned ops;
	int err;
	int delay; /* ERRNO+DELAY: fail after the delay */
	char path[256];
};

/* Reads the rule; 0 when there is none. Uses raw system calls only. */
static int read_rule(struct rule *r)
{
	char text[512];
	const char *ctl = getenv("FAULTFS_CTL");
	const char *fixed = getenv("FAULTFS");
	ssize_t n;

	if (ctl) {
		int fd = (int)RAW(SYS_openat, AT_FDCWD, ctl, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return 0;
		n = RAW(SYS_read, fd, text, sizeof(text) - 1);
		RAW(SYS_close, fd);
		if (n <= 0)
			return 0;
		text[n] = '\0';
	} else if (fixed) {
		snprintf(text, sizeof(text), "%s", fixed);
	} else {
		return 0;
	}
	text[strcspn(text, "\r\n")] = '\0';
	char *c1 = strchr(text, ':');
	if (c1 == NULL)
		return 0;
	*c1++ = '\0';
	char *c2 = strchr(c1, ':');
	if (c2)
		*c2++ = '\0';
	memset(r, 0, sizeof(*r));
	char *plus = strstr(c1, "+DELAY");
	if (plus) {
		*plus = '\0';
		r->delay = 1;
	}
	for (char *tok = strtok(text, ","); tok; tok = strtok(NULL, ","))
		r->ops |= strcmp(tok, "write") == 0	 ? OP_WRITE
			  : strcmp(tok, "fsync") == 0	 ? OP_FSYNC
			  : strcmp(tok, "rename") == 0	 ? OP_RENAME
			  : strcmp(tok, "open") == 0	 ? OP_OPEN
			  : strcmp(tok, "chmod") == 0	 ? OP_CHMOD
			  : strcmp(tok, "read") == 0	 ? OP_READ
			  : strcmp(tok, "sendfile") == 0 ? OP_SENDFILE
			  : strcmp(tok, "nowait") == 0	 ? OP_NOWAIT
			  : strcmp(tok, "main") == 0	 ? OPS_MAIN_ONLY
							 : 0;
	r->err = strcmp(c1, "ENOSPC") == 0   ? ENOSPC
		 : strcmp(c1, "EIO") == 0    ? EIO
		 : strcmp(c1, "EROFS") == 0  ? EROFS
		 : strcmp(c1, "EDQUOT") == 0 ? EDQUOT
		 : strcmp(c1, "EAGAIN") == 0 ? EAGAIN
		 : strcmp(c1, "DELAY") == 0  ? FAULT_DELAY
		 : strcmp(c1, "SHORT") == 0  ? FAULT_SHORT
					     : atoi(c1);
	snprintf(r->path, sizeof(r->path), "%s", c2 ? c2 : "");
	return (r->ops & ~OPS_MAIN_ONLY) &&
	       (r->err > 0 || r->err == FAULT_DELAY || r->err == FAULT_SHORT);
}

static int fd_path(int fd, char *out, size_t len)
{
	char link[64];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, out, len - 1);
	if (n < 0)
		return -1;
	out[n] = '\0';
	return 0;
}

/* dirfd + name as a path (best effort: for matching only). */
static void at_path(int dirfd, const char *name, char *out, size_t len)
{
	char dir[PATH_MAX - 256];
	if (name[0] == '/' || dirfd == AT_FDCWD || fd_path(dirfd, dir, sizeof(dir)) < 0)
		snprintf(out, len, "%s", name);
	else
		snprintf(out, len, "%s/%s", dir, name);
}

static void delay(void)
{
	struct timespec ts = {0, 500 * 1000 * 1000};
	RAW(SYS_nanosleep, &ts, NULL);
}

/* Whether a call of kind op on these paths fails (1, errno set), is to be
 * delayed (FAULT_DELAY), or goes on (0). */
/* Whether the rule (read into *r) applies to a call of kind op on these
 * paths, on this thread. */
static int rule_applies(struct rule *r, unsigned op, const char *p1, const char *p2)
{
	if (!read_rule(r) || !(r->ops & op))
		return 0;
	if ((r->ops & OPS_MAIN_ONLY) && RAW(SYS_gettid) != getpid())
		return 0;
	return (p1 && strstr(p1, r->path)) || (p2 && strstr(p2, r->path));
}

static int should_fail(unsigned op, const char *p1, const char *p2)
{
	struct rule r;
	if (rule_applies(&r, op, p1, p2)) {
		if (r.err == FAULT_DELAY)
			return FAULT_DELAY;
		if (r.delay)
			delay();
		errno = r.err;
		return 1;
	}
	return 0;
}

/* After a delayed call: "OP PATH SECONDS" to the control file's log. */
static void note_delayed(const char *op, const char *path)
{
	const char *ctl = getenv("FAULTFS_CTL");
	char name[PATH_MAX], line[PATH_MAX + 64];
	struct timespec now;
	if (ctl == NULL)
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	snprintf(name, sizeof(name), "%s.log", ctl);
	int n = snprintf(line, sizeof(line), "%s %s %lld.%09ld\n", op, path, (long long)now.tv_sec,
			 now.tv_nsec);
	int fd =
	    (int)RAW(SYS_openat, AT_FDCWD, name, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	RAW(SYS_write, fd, line, (size_t)n);
	RAW(SYS_close, fd);
}

static int fd_fails(unsigned op, int fd)
{
	char p[PATH_MAX];
	if (fd <= 2 || (getenv("FAULTFS_CTL") == NULL && getenv("FAULTFS") == NULL))
		return 0;
	if (fd_path(fd, p, sizeof(p)) < 0)
		return 0;
	int r = should_fail(op, p, NULL);
	return r == FAULT_DELAY ? 0 : r;
}

#define NEXT(name) ((__typeof__(&name))dlsym(RTLD_NEXT, #name))

ssize_t write(int fd, const void *buf, size_t n)
{
	if (fd_fails(OP_WRITE, fd))
		return -1;
	return NEXT(write)(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	if (fd_fails(OP_WRITE, fd))
		return -1;
	return NEXT(pwrite)(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
	if (fd_fails(OP_WRITE, fd))
		return -1;
	return NEXT(pwrite64)(fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
	if (fd_fails(OP_WRITE, fd))
		return -1;
	return NEXT(writev)(fd, iov, cnt);
}

ssize_t pread(int fd, void *buf, size_t n, off_t off)
{
	if (fd_fails(OP_READ, fd))
		return -1;
	return NEXT(pread)(fd, buf, n, off);
}

ssize_t pread64(int fd, void *buf, size_t n, off_t off)
{
	if (fd_fails(OP_READ, fd))
		return -1;
	return NEXT(pread64)(fd, buf, n, off);
}

ssize_t preadv2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
	if (fd_fails(OP_READ | ((flags & RWF_NOWAIT) ? OP_NOWAIT : 0), fd))
		return -1;
	return NEXT(preadv2)(fd, iov, cnt, off, flags);
}

ssize_t preadv64v2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
	if (fd_fails(OP_READ | ((flags & RWF_NOWAIT) ? OP_NOWAIT : 0), fd))
		return -1;
	return NEXT(preadv64v2)(fd, iov, cnt, off, flags);
}

ssize_t sendfile(int out_fd, int in_fd, off_t *off, size_t n)
{
	char p[PATH_MAX];
	struct rule r;
	if (fd_fails(OP_READ, in_fd))
		return -1;
	if (n > 4093 && fd_path(in_fd, p, sizeof(p)) == 0 &&
	    rule_applies(&r, OP_SENDFILE, p, NULL) && r.err == FAULT_SHORT)
		n = 4093;
	return NEXT(sendfile)(out_fd, in_fd, off, n);
}

ssize_t sendfile64(int out_fd, int in_fd, off_t *off, size_t n)
{
	return sendfile(out_fd, in_fd, off, n);
}

int fsync(int fd)
{
	char p[PATH_MAX];
	int f = 0;
	if (fd > 2 && (getenv("FAULTFS_CTL") || getenv("FAULTFS")) &&
	    fd_path(fd, p, sizeof(p)) == 0)
		f = should_fail(OP_FSYNC, p, NULL);
	if (f > 0)
		return -1;
	if (f == FAULT_DELAY)
		delay();
	int r = NEXT(fsync)(fd);
	if (f == FAULT_DELAY)
		note_delayed("fsync", p);
	return r;
}

/* Whether a fsync of fd would meet the rule (fail or wait), without
 * acting on it. */
static int fsync_ruled(int fd)
{
	struct rule r;
	char p[PATH_MAX];
	if (fd <= 2 || (getenv("FAULTFS_CTL") == NULL && getenv("FAULTFS") == NULL) ||
	    fd_path(fd, p, sizeof(p)) < 0)
		return 0;
	return rule_applies(&r, OP_FSYNC, p, NULL);
}

/*
 * Linux AIO's fsync (spool/syncmany.c): io_submit takes the iocbs before the
 * first whose descriptor a fsync rule matches (none: EAGAIN, as when the
 * ring is full), as the kernel does when it cannot take one; pickupd then
 * fsyncs that one and the rest with fsync(2), where the rule applies. Every
 * other system call goes through unchanged (the shim's own among them).
 */
long syscall(long nr, long a1, long a2, long a3, long a4, long a5, long a6)
{
	/* Named, not read with va_arg: a caller that passes fewer leaves the
	 * rest unread by the kernel, as libc's own syscall() does. */
	if (nr == SYS_io_submit) {
		struct iocb **cbs = (struct iocb **)a3;
		long k = 0;
		while (k < a2 && !(cbs[k]->aio_lio_opcode == IOCB_CMD_FSYNC &&
				   fsync_ruled((int)cbs[k]->aio_fildes)))
			k++;
		if (k == 0 && a2 > 0) {
			errno = EAGAIN;
			return -1;
		}
		a2 = k;
	}
	return libc_syscall()(nr, a1, a2, a3, a4, a5, a6);
}

int fdatasync(int fd)
{
	if (fd_fails(OP_FSYNC, fd))
		return -1;
	return NEXT(fdatasync)(fd);
}

int rename(const char *a, const char *b)
{
	if (should_fail(OP_RENAME, a, b) > 0)
		return -1;
	return NEXT(rename)(a, b);
}

int renameat(int da, const char *a, int db, const char *b)
{
	char pa[PATH_MAX], pb[PATH_MAX];
	at_path(da, a, pa, sizeof(pa));
	at_path(db, b, pb, sizeof(pb));
	if (should_fail(OP_RENAME, pa, pb) > 0)
		return -1;
	return NEXT(renameat)(da, a, db, b);
}

int renameat2(int da, const char *a, int db, const char *b, unsigned flags)
{
	char pa[PATH_MAX], pb[PATH_MAX];
	at_path(da, a, pa, sizeof(pa));
	at_path(db, b, pb, sizeof(pb));
	if (should_fail(OP_RENAME, pa, pb) > 0)
		return -1;
	return NEXT(renameat2)(da, a, db, b, flags);
}

int openat(int dirfd, const char *name, int flags, ...)
{
	mode_t mode = 0;
	if (flags & (O_CREAT | O_TMPFILE)) {
		va_list ap;
		va_start(ap, flags);
		mode = (mode_t)va_arg(ap, int);
		va_end(ap);
		char p[PATH_MAX];
		at_path(dirfd, name, p, sizeof(p));
		if (should_fail(OP_OPEN, p, NULL) > 0)
			return -1;
	}
	return NEXT(openat)(dirfd, name, flags, mode);
}

int openat64(int dirfd, const char *name, int flags, ...)
{
	mode_t mode = 0;
	if (flags & (O_CREAT | O_TMPFILE)) {
		va_list ap;
		va_start(ap, flags);
		mode = (mode_t)va_arg(ap, int);
		va_end(ap);
		char p[PATH_MAX];
		at_path(dirfd, name, p, sizeof(p));
		if (should_fail(OP_OPEN, p, NULL) > 0)
			return -1;
	}
	return NEXT(openat64)(dirfd, name, flags, mode);
}

int fchmodat(int dirfd, const char *name, mode_t mode, int flags)
{
	char p[PATH_MAX];
	at_path(dirfd, name, p, sizeof(p));
	int f = should_fail(OP_CHMOD, p, NULL);
	if (f > 0)
		return -1;
	if (f == FAULT_DELAY)
		delay();
	int r = NEXT(fchmodat)(dirfd, name, mode, flags);
	if (f == FAULT_DELAY)
		note_delayed("chmod", p);
	return r;
}

int fchmod(int fd, mode_t mode)
{
	char p[PATH_MAX];
	int f = 0;
	if (fd > 2 && (getenv("FAULTFS_CTL") || getenv("FAULTFS")) &&
	    fd_path(fd, p, sizeof(p)) == 0)
		f = should_fail(OP_CHMOD, p, NULL);
	if (f > 0)
		return -1;
	if (f == FAULT_DELAY)
		delay();
	int r = NEXT(fchmod)(fd, mode);
	if (f == FAULT_DELAY)
		note_delayed("chmod", p);
	return r;
}
