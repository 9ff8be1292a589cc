/*
 * Purpose: spool benchmarks, run by hand (never by ctest).
 *
 *   bench_spool transitions DIR [THREADS [SECONDS [ROUNDS]]]
 *       durable transitions per second through the spool API, side by side
 *       in the same run with the raw rate of the same system calls without
 *       group commit (open O_EXCL + write + fsync + close + rename + fsync of
 *       the directory), on THREADS threads (the daemon's pool: 4), rounds
 *       alternating raw and spool. Prints both rates and their ratio for
 *       "envelope write" and for "envelope write + move to deferred".
 *   bench_spool raw DIR [THREADS [SIZE [SECONDS]]]
 *       the raw durable-commit rate of SIZE-byte files (write, fsync, rename,
 *       fsync of the directory) on THREADS threads (default 16, 2048 bytes).
 *   bench_spool populate DIR N
 *       makes a spool in DIR with N queued messages (content + envelope,
 *       half in queue/, half in deferred/ due in an hour), without an fsync
 *       per file (one syncfs at the end).
 *   bench_spool startup DIR N [PICKUPD]
 *       populates DIR (if it does not hold N messages yet), starts pickupd
 *       against a relay that is down (a closed port), and prints the time
 *       to its "ready" line and its peak RSS (VmHWM); then stops it.
 *
 * Owns: nothing outside DIR. Invariants: DIR is created if missing and left
 * in place for the next run (transitions cleans its own files).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "spool/spool.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "bench_spool: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void sample_env(struct spool_env *e, const char *id)
{
	memset(e, 0, sizeof(*e));
	memcpy(e->id, id, SPOOL_ID_LEN + 1);
	e->arrival_ms = (int64_t)time(NULL) * 1000;
	e->size = 1834;
	e->origin_pickup = xstrdup("default");
	e->origin_file = xstrdup("invoice-1001.eml");
	e->sender = xstrdup("billing@shop.example");
	spool_env_add_edit(e, 0, 0, "Received: from pickup by host.example with pickupd id X");
	spool_env_add_rcpt(e, "alice@customer.example", NULL);
	spool_env_add_rcpt(e, "bob@customer.example", "NOTIFY=FAILURE");
}

/* ---- transitions -------------------------------------------------------------------- */

struct run {
	struct spool *sp;
	int raw;       /* 1: raw system calls; 0: the spool API */
	int with_move; /* also move queue -> deferred */
	double deadline;
	atomic_long ops;
	atomic_int seq;
	const char *text; /* formatted envelope, for the raw path */
	size_t text_len;
};

static void raw_write(struct run *r, const char *id)
{
	struct spool *sp = r->sp;
	char tmp[64];
	snprintf(tmp, sizeof(tmp), "%s.env", id);
	int fd = openat(sp->tmp_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (fd < 0)
		die("raw open");
	if (write(fd, r->text, r->text_len) != (ssize_t)r->text_len)
		die("raw write");
	if (fsync(fd) < 0 || close(fd) < 0)
		die("raw fsync");
	if (renameat(sp->tmp_fd, tmp, sp->state_fd[SPOOL_QUEUE], id) < 0)
		die("raw rename");
	if (fsync(sp->state_fd[SPOOL_QUEUE]) < 0)
		die("raw dir fsync");
	if (r->with_move) {
		if (renameat(sp->state_fd[SPOOL_QUEUE], id, sp->state_fd[SPOOL_DEFERRED], id) < 0)
			die("raw move");
		if (fsync(sp->state_fd[SPOOL_DEFERRED]) < 0 || fsync(sp->state_fd[SPOOL_QUEUE]) < 0)
			die("raw move fsync");
	}
}

static void *worker(void *arg)
{
	struct run *r = arg;
	char id[SPOOL_ID_LEN + 1];
	struct spool_env e;
	while (now_s() < r->deadline) {
		spool_new_id(r->sp, id);
		if (r->raw) {
			raw_write(r, id);
		} else {
			sample_env(&e, id);
			if (spool_env_write(r->sp, SPOOL_QUEUE, &e) < 0)
				die("spool_env_write");
			if (r->with_move && spool_move(r->sp, id, SPOOL_QUEUE, SPOOL_DEFERRED) < 0)
				die("spool_move");
			spool_env_deinit(&e);
		}
		atomic_fetch_add(&r->ops, 1);
	}
	return NULL;
}

/* Removes every file of the state directories (no fsync: not measured). */
static void clean_dir(int dir_fd)
{
	int fd = dup(dir_fd);
	DIR *d = fdopendir(fd);
	struct dirent *de;
	rewinddir(d);
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			unlinkat(dir_fd, de->d_name, 0);
	closedir(d);
}

static double one_round(struct spool *sp, int raw, int with_move, int threads, double seconds,
			const struct buf *text)
{
	struct run r;
	memset(&r, 0, sizeof(r));
	r.sp = sp;
	r.raw = raw;
	r.with_move = with_move;
	r.text = text->data;
	r.text_len = text->len;
	pthread_t th[64];
	double t0 = now_s();
	r.deadline = t0 + seconds;
	for (int i = 0; i < threads; i++)
		pthread_create(&th[i], NULL, worker, &r);
	for (int i = 0; i < threads; i++)
		pthread_join(th[i], NULL);
	double rate = (double)atomic_load(&r.ops) / (now_s() - t0);
	for (int i = 0; i < SPOOL_N_STATES; i++)
		clean_dir(sp->state_fd[i]);
	clean_dir(sp->tmp_fd);
	syncfs(sp->dir_fd);
	return rate;
}

static int cmd_transitions(const char *dir, int threads, double seconds, int rounds)
{
	struct spool sp;
	if (spool_open(&sp, dir) < 0)
		die(dir);
	if (threads < 1 || threads > 64)
		threads = 4;
	struct spool_env e;
	struct buf text = BUF_INIT;
	sample_env(&e, "0193A1B2C3D4E0012A00");
	spool_env_format(&e, &text);
	spool_env_deinit(&e);
	printf("spool transitions in %s: %d threads, %d round(s) of %.1f s each per figure\n", dir,
	       threads, rounds, seconds);
	static const char *const what[] = {"envelope write (write+fsync+rename+dir fsync)",
					   "envelope write + move to deferred"};
	for (int m = 0; m < 2; m++) {
		double raw = 0, spool = 0;
		for (int i = 0; i < rounds; i++) {
			raw += one_round(&sp, 1, m, threads, seconds, &text);
			spool += one_round(&sp, 0, m, threads, seconds, &text);
		}
		raw /= rounds;
		spool /= rounds;
		printf("%-48s raw %8.0f/s  spool %8.0f/s  ratio %.2f\n", what[m], raw, spool,
		       spool / raw);
	}
	buf_deinit(&text);
	spool_close(&sp);
	return 0;
}

/* The raw durable-commit rate of SIZE-byte files (write, fsync, rename, fsync
 * of the directory) on THREADS threads: the yardstick of issue 10. */
static int cmd_raw(const char *dir, int threads, size_t size, double seconds)
{
	struct spool sp;
	if (spool_open(&sp, dir) < 0)
		die(dir);
	if (threads < 1 || threads > 64)
		threads = 16;
	struct buf text = BUF_INIT;
	buf_reserve(&text, size);
	memset(text.data, 'x', size);
	text.len = size;
	double rate = one_round(&sp, 1, 0, threads, seconds, &text);
	printf("raw durable commit of %zu-byte files, %d threads: %.0f/s, %.1f MiB/s\n", size,
	       threads, rate, rate * (double)size / (1 << 20));
	buf_deinit(&text);
	spool_close(&sp);
	return 0;
}

/* ---- populate and startup ----------------------------------------------------------- */

static void write_plain(int dir_fd, const char *name, const char *data, size_t len,
			int64_t mtime_ms)
{
	int fd = openat(dir_fd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (fd < 0)
		die("create");
	if (write(fd, data, len) != (ssize_t)len)
		die("write");
	if (mtime_ms > 0) {
		struct timespec ts[2];
		ts[0].tv_sec = ts[1].tv_sec = mtime_ms / 1000;
		ts[0].tv_nsec = ts[1].tv_nsec = (mtime_ms % 1000) * 1000000;
		futimens(fd, ts);
	}
	close(fd);
}

static size_t count_dir(int dir_fd)
{
	int fd = dup(dir_fd);
	DIR *d = fdopendir(fd);
	struct dirent *de;
	size_t n = 0;
	rewinddir(d);
	while ((de = readdir(d)) != NULL)
		n += spool_id_valid(de->d_name);
	closedir(d);
	return n;
}

static int cmd_populate(const char *dir, size_t n)
{
	struct spool sp;
	if (spool_open(&sp, dir) < 0)
		die(dir);
	size_t have = count_dir(sp.data_fd);
	if (have >= n) {
		printf("%s already holds %zu messages\n", dir, have);
		spool_close(&sp);
		return 0;
	}
	static const char content[] = "From: billing@shop.example\r\nTo: alice@customer.example\r\n"
				      "Subject: invoice\r\n\r\nHello.\r\n";
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	int64_t later = (int64_t)ts.tv_sec * 1000 + 3600 * 1000;
	double t0 = now_s();
	for (size_t i = have; i < n; i++) {
		char id[SPOOL_ID_LEN + 1];
		struct spool_env e;
		struct buf text = BUF_INIT;
		spool_new_id(&sp, id);
		sample_env(&e, id);
		bool deferred = i % 2;
		if (deferred) {
			e.next_ms = later;
			e.attempts = 1;
		}
		spool_env_format(&e, &text);
		write_plain(sp.data_fd, id, content, sizeof(content) - 1, 0);
		write_plain(sp.state_fd[deferred ? SPOOL_DEFERRED : SPOOL_QUEUE], id, text.data,
			    text.len, e.next_ms);
		buf_deinit(&text);
		spool_env_deinit(&e);
	}
	syncfs(sp.dir_fd);
	printf("populated %s with %zu messages in %.1f s\n", dir, n - have, now_s() - t0);
	spool_close(&sp);
	return 0;
}

static long vm_hwm_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

/* A port nothing listens on: bind, read the port, close. */
static int closed_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) < 0)
		die("socket");
	close(fd);
	return ntohs(a.sin_port);
}

static int cmd_startup(const char *dir, size_t n, const char *pickupd)
{
	char self[4096], bin[4200], conf[4200], pickup[4200];
	if (pickupd == NULL) {
		ssize_t k = readlink("/proc/self/exe", self, sizeof(self) - 1);
		if (k < 0)
			die("readlink");
		self[k] = '\0';
		*strrchr(self, '/') = '\0';
		snprintf(bin, sizeof(bin), "%s/pickupd", self);
		pickupd = bin;
	}
	cmd_populate(dir, n);
	snprintf(pickup, sizeof(pickup), "%s/pickup", dir);
	mkdir(pickup, 0750);
	snprintf(conf, sizeof(conf), "%s/pickupd.conf", dir);
	FILE *f = fopen(conf, "w");
	if (f == NULL)
		die(conf);
	fprintf(f,
		"[spool]\ndir = %s\n[pickup]\ndir = %s\n[relay down]\nhost = 127.0.0.1\n"
		"port = %d\ntls = none\n",
		dir, pickup, closed_port());
	fclose(f);

	int pfd[2];
	if (pipe(pfd) < 0)
		die("pipe");
	double t0 = now_s();
	pid_t pid = fork();
	if (pid == 0) {
		dup2(pfd[1], 2);
		close(pfd[0]);
		close(pfd[1]);
		execl(pickupd, pickupd, "-c", conf, (char *)NULL);
		_exit(127);
	}
	close(pfd[1]);
	FILE *in = fdopen(pfd[0], "r");
	char line[1024];
	double ready = -1;
	long hwm = -1;
	while (fgets(line, sizeof(line), in)) {
		if (strstr(line, ": ready (")) {
			ready = now_s() - t0;
			hwm = vm_hwm_kib(pid);
			fputs(line, stdout);
			break;
		}
		fputs(line, stderr);
	}
	kill(pid, SIGTERM);
	while (fgets(line, sizeof(line), in))
		;
	fclose(in);
	int status;
	waitpid(pid, &status, 0);
	if (ready < 0) {
		fprintf(stderr, "bench_spool: pickupd exited before it was ready\n");
		return 1;
	}
	printf("startup with %zu queued messages: ready in %.2f s, VmHWM %.1f MiB\n", n, ready,
	       (double)hwm / 1024);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 3 && strcmp(argv[1], "transitions") == 0)
		return cmd_transitions(argv[2], argc > 3 ? atoi(argv[3]) : 4,
				       argc > 4 ? atof(argv[4]) : 3.0,
				       argc > 5 ? atoi(argv[5]) : 2);
	if (argc >= 3 && strcmp(argv[1], "raw") == 0)
		return cmd_raw(argv[2], argc > 3 ? atoi(argv[3]) : 16,
			       argc > 4 ? (size_t)strtoull(argv[4], NULL, 10) : 2048,
			       argc > 5 ? atof(argv[5]) : 3.0);
	if (argc >= 4 && strcmp(argv[1], "populate") == 0)
		return cmd_populate(argv[2], (size_t)strtoull(argv[3], NULL, 10));
	if (argc >= 4 && strcmp(argv[1], "startup") == 0)
		return cmd_startup(argv[2], (size_t)strtoull(argv[3], NULL, 10),
				   argc > 4 ? argv[4] : NULL);
	fprintf(stderr, "usage: bench_spool transitions DIR [THREADS [SECONDS [ROUNDS]]]\n"
			"       bench_spool raw DIR [THREADS [SIZE [SECONDS]]]\n"
			"       bench_spool populate DIR N\n"
			"       bench_spool startup DIR N [PICKUPD]\n");
	return 2;
}
