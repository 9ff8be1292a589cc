/*
 * log: one line per event on stderr (journald captures it), Postfix-like:
 * "QUEUEID: key=value, key=value". Never pass secrets to these functions.
 * Arguments may be outside text (file names, addresses, server replies): the
 * logger escapes the whole line with esc_copy (common/esc.h).
 */
#ifndef PICKUPD_LOG_H
#define PICKUPD_LOG_H

enum log_level { LOG_LVL_DEBUG, LOG_LVL_INFO, LOG_LVL_WARN, LOG_LVL_ERR };

void log_set_level(enum log_level lvl);
void log_set_ident(const char *ident);
int log_debug_enabled(void);
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Start-up only: logs and exits with status 1. */
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
