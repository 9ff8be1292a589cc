/*
 * log_int: log.c's pure parts, for its unit test.
 */
#ifndef PICKUPD_LOG_INT_H
#define PICKUPD_LOG_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/time.h>

/* True when env ($JOURNAL_STREAM, "DEV:INO") names the file open on fd. */
bool log__journal_stream(const char *env, int fd);
/* Writes a syslog file line's header, "2024-05-01T12:00:00.123456+02:00 host
 * prog/service[pid]: " (service may be NULL), local time; returns its length. */
size_t log__header(char *out, size_t len, const struct timeval *tv, const char *hostname,
		   const char *prog, const char *service, long pid);

#endif
