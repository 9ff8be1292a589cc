/*
 * Purpose: the single place log lines are formatted and written (see log.h
 * for the three destinations and their formats).
 * Owns: the destination (chosen once from $JOURNAL_STREAM, then switched by
 * log_set_syslog), the host name and pid of the line header, and the
 * openlog(3) ident while syslog is used.
 * Invariants: each event is written with one write(2) (or one syslog(3)
 * call, serialised with its openlog by a mutex), so lines from concurrent
 * threads (the libuv pool) never interleave. Everything a caller formats goes
 * through esc_copy: file names, addresses and server replies are outside
 * text, and none of them can end a line, steer a terminal or put invalid
 * UTF-8 into the log. The format strings themselves are printable text
 * without a backslash, which esc_copy leaves as it is, so no caller has to
 * sort its arguments into trusted and outside ones.
 * The loop thread's lines below warning gather in a buffer of at most
 * PIPE_BUF bytes (so one write(2) still cannot interleave with another
 * thread's line on a pipe or a journald stream) and are written before the
 * loop next waits (log_flush from the daemon's prepare handle), at exit, when
 * the buffer is full, and before any warning or error: one write per loop
 * turn, not one per line, with the lines in the order they were logged.
 */
#include "common/log.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "common/esc.h"
#include "common/log_int.h"

static enum log_level min_level = LOG_LVL_INFO;
static const char *ident = "pickupd";
static atomic_bool use_syslog;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static bool tool;     /* a command-line program: "ident: text" */
static bool journal;  /* stderr is a journald stream */
static char host[64]; /* the line header's host: the short host name */
static long pid;      /* pickupd never forks a logging child */
static pthread_mutex_t syslog_lock = PTHREAD_MUTEX_INITIALIZER;
static char syslog_ident[64];	    /* openlog keeps the pointer: stays valid */
static _Thread_local bool batching; /* set on the loop thread only */
static char batch[PIPE_BUF];
static size_t batch_len;

static void write_all(const char *p, size_t len)
{
	while (len > 0) {
		ssize_t w = write(STDERR_FILENO, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return; /* nowhere to report it */
		p += w;
		len -= (size_t)w;
	}
}

void log_flush(void)
{
	if (!batching || batch_len == 0)
		return;
	write_all(batch, batch_len);
	batch_len = 0;
}

void log_batch_start(void)
{
	if (batching)
		return;
	batching = true;
	atexit(log_flush);
}

void log_set_level(enum log_level lvl)
{
	min_level = lvl;
}

int log_debug_enabled(void)
{
	return min_level <= LOG_LVL_DEBUG;
}

void log_set_tool(const char *s)
{
	ident = s;
	tool = true;
}

void log_set_syslog(bool on)
{
	atomic_store(&use_syslog, on);
}

bool log__journal_stream(const char *env, int fd)
{
	unsigned long long dev, ino;
	int n = 0;
	struct stat st;
	/* sd-daemon's sd_journal_stream check: "DEV:INO" of the stream that
	 * journald reads, which must still be this fd (not redirected since). */
	if (env == NULL || sscanf(env, "%llu:%llu%n", &dev, &ino, &n) != 2 || env[n] != '\0')
		return false;
	return fstat(fd, &st) == 0 && (unsigned long long)st.st_dev == dev &&
	       (unsigned long long)st.st_ino == ino;
}

static void init_once(void)
{
	journal = log__journal_stream(getenv("JOURNAL_STREAM"), STDERR_FILENO);
	if (gethostname(host, sizeof(host)) < 0 || host[0] == '\0')
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	host[strcspn(host, ".")] = '\0'; /* as syslog daemons write it */
	pid = (long)getpid();
}

size_t log__header(char *out, size_t len, const struct timeval *tv, const char *hostname,
		   const char *prog, const char *service, long p)
{
	struct tm tm;
	char date[32], zone[16];
	time_t t = tv->tv_sec;
	localtime_r(&t, &tm);
	strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
	/* RFC 3339 wants "+02:00" where strftime's %z gives "+0200". */
	int off = (int)(tm.tm_gmtoff / 60) % (24 * 60);
	snprintf(zone, sizeof(zone), "%c%02d:%02d", off < 0 ? '-' : '+', abs(off) / 60,
		 abs(off) % 60);
	int n = snprintf(out, len, "%s.%06ld%s %s %s%s%s[%ld]: ", date, (long)tv->tv_usec, zone,
			 hostname, prog, service ? "/" : "", service ? service : "", p);
	return n < 0 ? 0 : (size_t)n < len ? (size_t)n : len - 1;
}

static void vlog(enum log_level lvl, const char *service, const char *fmt, va_list ap)
{
	static const char *const prefix[] = {"debug: ", "", "warning: ", "error: "};
	/* sd-daemon(3) levels: SD_DEBUG, SD_INFO, SD_WARNING, SD_ERR. */
	static const int prio[] = {LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR};
	char msg[4096], line[8192];
	size_t n;
	if (lvl < min_level)
		return;
	pthread_once(&once, init_once);
	int m = vsnprintf(msg, sizeof(msg), fmt, ap);
	if (m < 0)
		return;
	size_t mlen = (size_t)m < sizeof(msg) ? (size_t)m : sizeof(msg) - 1;
	bool to_syslog = atomic_load(&use_syslog);
	if (to_syslog) {
		n = 0; /* syslog(3) writes the header */
	} else if (tool) {
		n = (size_t)snprintf(line, sizeof(line) / 2, "%s: ", ident);
	} else if (journal) {
		n = (size_t)snprintf(line, sizeof(line), "<%d>", prio[lvl]);
	} else {
		struct timeval tv;
		gettimeofday(&tv, NULL);
		n = log__header(line, sizeof(line) / 2, &tv, host, ident, service, pid);
	}
	n += (size_t)snprintf(line + n, sizeof(line) - n, "%s", prefix[lvl]);
	/* Room for the newline after the escaped text. */
	size_t len = n + esc_copy(line + n, sizeof(line) - n - 1, msg, mlen);
	if (to_syslog) {
		line[len] = '\0';
		pthread_mutex_lock(&syslog_lock);
		char want[sizeof(syslog_ident)];
		snprintf(want, sizeof(want), "%s%s%s", ident, service ? "/" : "",
			 service ? service : "");
		if (strcmp(want, syslog_ident) != 0) {
			/* The program name differs per service, as Postfix's
			 * processes differ: openlog again (cheap, no reconnect). */
			memcpy(syslog_ident, want, sizeof(want));
			openlog(syslog_ident, LOG_PID, LOG_MAIL);
		}
		syslog(prio[lvl], "%s", line);
		pthread_mutex_unlock(&syslog_lock);
		return;
	}
	line[len++] = '\n';
	if (batching) {
		if (lvl < LOG_LVL_WARN && len <= sizeof(batch)) {
			if (batch_len + len > sizeof(batch))
				log_flush();
			memcpy(batch + batch_len, line, len);
			batch_len += len;
			return;
		}
		log_flush();
	}
	write_all(line, len);
}

#define DEFINE_LOG(fn, lvl)                                                                        \
	void fn(const char *fmt, ...)                                                              \
	{                                                                                          \
		va_list ap;                                                                        \
		va_start(ap, fmt);                                                                 \
		vlog(lvl, NULL, fmt, ap);                                                          \
		va_end(ap);                                                                        \
	}

DEFINE_LOG(log_debug, LOG_LVL_DEBUG)
DEFINE_LOG(log_info, LOG_LVL_INFO)
DEFINE_LOG(log_warn, LOG_LVL_WARN)
DEFINE_LOG(log_error, LOG_LVL_ERR)

void log_svc(enum log_level lvl, const char *service, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog(lvl, service, fmt, ap);
	va_end(ap);
}

void fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog(LOG_LVL_ERR, NULL, fmt, ap);
	va_end(ap);
	exit(1);
}
