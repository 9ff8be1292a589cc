/*
 * log: one line per event, Postfix-like: "QUEUEID: key=value, key=value".
 * Never pass secrets to these functions. Arguments may be outside text (file
 * names, addresses, server replies): the logger escapes the whole line with
 * esc_copy (common/esc.h).
 *
 * Where the daemon's lines go (chosen once, at the first line, and by
 * log_set_syslog; a command-line program's always go to stderr, see
 * log_set_tool):
 * - stderr read by journald ($JOURNAL_STREAM names stderr): "<6>text", the
 *   sd-daemon priority prefix; journald adds time, name and pid;
 * - syslog(3), mail facility, when [log] syslog = yes;
 * - otherwise stderr as a syslog file line, so that Postfix tools such as
 *   pflogsumm read it: "2024-05-01T12:00:00.123456+02:00 host pickupd/smtp[42]: text".
 * The program name is the ident ("pickupd"), followed by "/SERVICE" for the
 * lines about one message, named after the Postfix process that logs the
 * same event (pickup, qmgr, smtp, bounce), as pflogsumm --syslog-name expects.
 */
#ifndef PICKUPD_LOG_H
#define PICKUPD_LOG_H

#include <stdbool.h>

enum log_level { LOG_LVL_DEBUG, LOG_LVL_INFO, LOG_LVL_WARN, LOG_LVL_ERR };

void log_set_level(enum log_level lvl);
/* For a command-line program (pickupctl): "ident: text" on stderr, no time,
 * host or pid, whatever the environment says. */
void log_set_tool(const char *ident);
/* [log] syslog: on = syslog(3) with LOG_MAIL, off = stderr. */
void log_set_syslog(bool on);
int log_debug_enabled(void);
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A line about one message, from SERVICE ("pickup", "qmgr", "smtp", "bounce"). */
void log_svc(enum log_level lvl, const char *service, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Called on the event loop thread: from now on its lines below warning are
 * gathered and written together by log_flush (which the loop calls before it
 * waits) or at exit. Other threads' lines are still written at once. */
void log_batch_start(void);
void log_flush(void);
/* Start-up only: logs and exits with status 1. */
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
