/*
 * Purpose: the ceiling of durable message commits on this disk, run by hand
 * (tests/bench/compare runs it; never ctest).
 *
 *   bench_commit DIR THREADS SECONDS SIZE
 *       THREADS threads, each in a loop for SECONDS: open a new file O_EXCL in
 *       DIR/tmp, write SIZE bytes, fsync, close, rename into DIR/new, fsync
 *       DIR/new. That is the least any spool must do to own a message durably.
 *       Each committed file is then unlinked (not timed as a commit, no fsync)
 *       so that long runs do not fill the disk. Prints one line:
 *       "commit THREADS SIZE: OPS in T s: RATE/s".
 *
 * Owns: DIR/tmp and DIR/new (created if missing, emptied at the end).
 * Invariants: uses only POSIX calls, no spool code, so the figure is the
 * system's, not pickupd's.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct run {
	int tmp_fd, new_fd;
	const char *data;
	size_t size;
	double deadline;
	atomic_long ops;
	atomic_long seq;
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "bench_commit: %s: %s\n", what, strerror(errno));
	exit(1);
}

static int open_dir(const char *parent, const char *name)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", parent, name);
	if (mkdir(path, 0750) < 0 && errno != EEXIST)
		die(path);
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		die(path);
	return fd;
}

static void commit_one(struct run *r)
{
	char name[64];
	snprintf(name, sizeof(name), "m%ld.%d", atomic_fetch_add(&r->seq, 1), (int)getpid());
	int fd = openat(r->tmp_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (fd < 0)
		die("open");
	for (size_t off = 0; off < r->size;) {
		ssize_t n = write(fd, r->data + off, r->size - off);
		if (n < 0)
			die("write");
		off += (size_t)n;
	}
	if (fsync(fd) < 0 || close(fd) < 0)
		die("fsync");
	if (renameat(r->tmp_fd, name, r->new_fd, name) < 0)
		die("rename");
	if (fsync(r->new_fd) < 0)
		die("directory fsync");
	atomic_fetch_add(&r->ops, 1);
	/* Outside the commit: only keeps the disk from filling. */
	unlinkat(r->new_fd, name, 0);
}

static void *worker(void *arg)
{
	struct run *r = arg;
	while (now_s() < r->deadline)
		commit_one(r);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: bench_commit DIR THREADS SECONDS SIZE\n");
		return 2;
	}
	int threads = atoi(argv[2]);
	double seconds = atof(argv[3]);
	long size = atol(argv[4]);
	if (threads < 1 || threads > 256 || seconds <= 0 || seconds > 600 || size < 1 ||
	    size > (1L << 30)) {
		fprintf(stderr, "bench_commit: THREADS 1..256, SECONDS 0..600, SIZE 1..1G\n");
		return 2;
	}
	if (mkdir(argv[1], 0750) < 0 && errno != EEXIST)
		die(argv[1]);
	struct run r;
	memset(&r, 0, sizeof(r));
	r.tmp_fd = open_dir(argv[1], "tmp");
	r.new_fd = open_dir(argv[1], "new");
	r.size = (size_t)size;
	char *data = malloc(r.size);
	if (data == NULL)
		die("malloc");
	for (size_t i = 0; i < r.size; i++)
		data[i] = (i % 72 == 71) ? '\n' : (char)('a' + i % 26);
	r.data = data;

	pthread_t *th = calloc((size_t)threads, sizeof(*th));
	if (th == NULL)
		die("calloc");
	double t0 = now_s();
	r.deadline = t0 + seconds;
	for (int i = 0; i < threads; i++)
		if (pthread_create(&th[i], NULL, worker, &r) != 0)
			die("pthread_create");
	for (int i = 0; i < threads; i++)
		pthread_join(th[i], NULL);
	double dt = now_s() - t0;
	long ops = atomic_load(&r.ops);
	printf("commit %d %ld: %ld in %.3f s: %.1f/s\n", threads, size, ops, dt, (double)ops / dt);
	free(th);
	free(data);
	close(r.tmp_fd);
	close(r.new_fd);
	return 0;
}
