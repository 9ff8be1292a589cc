/*
 * sched: who is sent when. A min-heap of (due time, queue ID, state) kept in
 * memory, 32 bytes a message: envelopes stay on disk until a session takes
 * the message, but for the few fresh ones whose envelope ingest handed over
 * (core/handoff.h, within its byte budget). One timer calls the owner's due callback (main.c: it
 * wakes the relay pool) when the earliest entry is due. Owner: main.c.
 */
#ifndef PICKUPD_SCHED_H
#define PICKUPD_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "spool/spool.h"

struct handoff;

struct sched_item {
	char id[SPOOL_ID_LEN + 1];
	uint8_t state; /* enum spool_state where the envelope is */
	int64_t due_ms;
};

/* due_cb(arg) runs from the timer, on the loop, when the earliest entry
 * falls due (never from inside a sched_* call). */
typedef void (*sched_due_cb)(void *arg);
struct sched *sched_new(uv_loop_t *loop, sched_due_cb due_cb, void *arg);
void sched_free(struct sched *s);
/* Closes the timer; call before the loop's last run. */
void sched_stop(struct sched *s);
void sched_add(struct sched *s, const char *id, enum spool_state state, int64_t due_ms);
/* sched_add, with what ingest handed over for the message (NULL: none),
 * kept until sched_take_handoff or sched_remove of this ID. */
void sched_add_handoff(struct sched *s, const char *id, enum spool_state state, int64_t due_ms,
		       struct handoff *h);
/* Id's handoff, now the caller's, or NULL. Take it when the popped entry is
 * loaded, so none is left behind. */
struct handoff *sched_take_handoff(struct sched *s, const char *id);
/* How many handoffs are kept. */
size_t sched_handoffs(const struct sched *s);
/* Pops the earliest entry if it is due now. */
bool sched_pop_due(struct sched *s, struct sched_item *it_r);
/* Puts back an item taken with sched_pop_due (e.g. no session could take it). */
void sched_push_back(struct sched *s, const struct sched_item *it);
bool sched_has_due(const struct sched *s);
size_t sched_size(const struct sched *s);
/* Removes every entry of this ID, and its handoff; returns how many entries
 * there were. Linear: for operator commands (ctl.c), never on the delivery
 * path. */
size_t sched_remove(struct sched *s, const char *id);
/* Makes every entry in this state due now (pickupctl flush); returns how many. */
size_t sched_make_due(struct sched *s, enum spool_state state);

#endif
