/*
 * ctl_list: the queue listing that `pickupctl list` and pickupd-sendmail -bp
 * (mailq) print, and the walk over the spool that pickupctl's summary shares,
 * from the spool alone. Synchronous, read-only, no libuv.
 */
#ifndef PICKUPD_CTL_LIST_H
#define PICKUPD_CTL_LIST_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "common/buf.h"
#include "spool/spool.h"

/* What list and summary select: a state (or all), an age, a domain. */
struct ctl_filter {
	int state;	    /* -1 = all */
	int64_t older_ms;   /* arrival at least this long ago; 0 = any */
	const char *domain; /* a recipient in this domain (no case); NULL = any */
	int64_t now_ms;	    /* what older_ms counts from */
};
#define CTL_FILTER_ALL                                                                             \
	{                                                                                          \
		-1, 0, NULL, 0                                                                     \
	}

/*
 * Called for each message the filter selects: e is its envelope, or NULL
 * with why when it cannot be read (shown only when nothing filters: a filter
 * cannot look into it; a message that vanished meanwhile is skipped).
 */
typedef void (*ctl_list_fn)(void *arg, enum spool_state st, const char *id,
			    const struct spool_env *e, const char *why);
/*
 * Calls fn for each message, state by state, then ID (arrival) order. A
 * state directory that cannot be listed adds a line "cannot list STATE:
 * error" to err and the others are still listed. Returns how many messages
 * fn saw, or -1 when some state could not be listed.
 */
long ctl_list_each(struct spool *sp, const struct ctl_filter *f, ctl_list_fn fn, void *arg,
		   struct buf *err);
/*
 * The listing: a header line, one line per message and mailq's total
 * ("-- 12 Kbytes in 3 Requests."), or with json one JSON array of messages
 * (ctl_json_env; {"id", "state", "error"} for an unreadable one) on stdout.
 * Returns as ctl_list_each.
 */
long ctl_list_print(struct spool *sp, const struct ctl_filter *f, bool json, FILE *out,
		    struct buf *err);

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
/* The domain of an address: after its last '@', "" when none. */
const char *ctl_list_domain(const char *addr);

#endif
