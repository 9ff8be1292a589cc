/*
 * ctl_list: the queue listing that `pickupctl list` and pickupd-sendmail -bp
 * (mailq) print, from the spool alone. Synchronous, read-only, no libuv.
 */
#ifndef PICKUPD_CTL_LIST_H
#define PICKUPD_CTL_LIST_H

#include <stdint.h>
#include <stdio.h>

#include "common/buf.h"
#include "spool/spool.h"

/*
 * Called for each message: e is its envelope, or NULL with why when it cannot
 * be read (a message that vanished meanwhile is skipped).
 */
typedef void (*ctl_list_fn)(void *arg, enum spool_state st, const char *id,
			    const struct spool_env *e, const char *why);
/*
 * Calls fn for each message of state only (every state when only < 0), state
 * by state. A state directory that cannot be listed adds a line "cannot list
 * STATE: error" to err and the others are still listed. Returns how many
 * messages fn saw, or -1 when some state could not be listed.
 */
long ctl_list_each(struct spool *sp, int only, ctl_list_fn fn, void *arg, struct buf *err);
/* ctl_list_each printing one text line per message to out. */
long ctl_list_text(struct spool *sp, int only, FILE *out, struct buf *err);

/* Pieces of the text form, shared with pickupctl's status and show. */
void ctl_list_line(FILE *out, const struct spool_env *e, enum spool_state st);
/* The reply to show: the badmail reason, else the last reply of a recipient
 * still waiting, else any recipient's reply; NULL when none. */
const char *ctl_list_last_reply(const struct spool_env *e);
/* "2024-11-23 10:00:00" local time, "-" for 0. */
const char *ctl_list_fmt_time(int64_t ms, char *out, size_t size);
/* Outside text for a terminal, escaped as in the log (common/esc.h), cut
 * after width bytes at a character boundary (with "..." when cut). */
void ctl_list_put_short(FILE *out, const char *s, size_t width);

#endif
