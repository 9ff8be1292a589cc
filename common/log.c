/*
 * Purpose: the single place log lines are formatted and written.
 * Invariants: each event is written with one write(2), so lines from
 * concurrent threads (the libuv pool) never interleave. Everything a caller
 * formats goes through esc_copy: file names, addresses and server replies are
 * outside text, and none of them can end a line, steer a terminal or put
 * invalid UTF-8 into the log. The format strings themselves are printable
 * text without a backslash, which esc_copy leaves as it is, so no caller has
 * to sort its arguments into trusted and outside ones.
 */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/esc.h"

static enum log_level min_level = LOG_LVL_INFO;
static const char *ident = "pickupd";

void log_set_level(enum log_level lvl)
{
	min_level = lvl;
}

int log_debug_enabled(void)
{
	return min_level <= LOG_LVL_DEBUG;
}

void log_set_ident(const char *s)
{
	ident = s;
}

static void vlog(enum log_level lvl, const char *fmt, va_list ap)
{
	static const char *const prefix[] = {"debug: ", "", "warning: ", "error: "};
	char msg[4096], line[8192];
	if (lvl < min_level)
		return;
	int m = vsnprintf(msg, sizeof(msg), fmt, ap);
	if (m < 0)
		return;
	size_t mlen = (size_t)m < sizeof(msg) ? (size_t)m : sizeof(msg) - 1;
	int n = snprintf(line, sizeof(line), "%s: %s", ident, prefix[lvl]);
	if (n < 0 || (size_t)n >= sizeof(line) / 2)
		return;
	/* Room for the newline after the escaped text. */
	size_t len = (size_t)n + esc_copy(line + n, sizeof(line) - (size_t)n - 1, msg, mlen);
	line[len++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, len);
	(void)w;
}

#define DEFINE_LOG(fn, lvl)                                                                        \
	void fn(const char *fmt, ...)                                                              \
	{                                                                                          \
		va_list ap;                                                                        \
		va_start(ap, fmt);                                                                 \
		vlog(lvl, fmt, ap);                                                                \
		va_end(ap);                                                                        \
	}

DEFINE_LOG(log_debug, LOG_LVL_DEBUG)
DEFINE_LOG(log_info, LOG_LVL_INFO)
DEFINE_LOG(log_warn, LOG_LVL_WARN)
DEFINE_LOG(log_error, LOG_LVL_ERR)

void fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog(LOG_LVL_ERR, fmt, ap);
	va_end(ap);
	exit(1);
}
