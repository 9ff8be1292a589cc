/*
 * Purpose: pacing ingestion to delivery in a burst. A message claimed while
 * the handoffs' budget (core/handoff.h) is full is later sent from the
 * spool: its envelope and content read back and its envelope marked on the
 * thread pool (a round trip of two thread switches, which cost the most on
 * a virtual machine), where one handed over in memory costs none. So while
 * delivery is taking handoffs (it took or released one in the last PACE_MS)
 * and half the budget is in use, the folders' next batches wait until
 * delivery has made room: the files stay in their folder, as their writer
 * left them (claiming is what makes them the spool's, and durable: the
 * writer may not have flushed them). So that a slow relay does not keep
 * them there, no file waits longer than PACE_WAIT_MAX_MS (the old default
 * settle_time). Without progress (the relay down, or messages sent from the
 * spool) nothing waits: the spool takes all, as before.
 * Owns: pd->pace_held, pd->pace_progress_ms and the logic of pd->pace_timer
 * (main.c closes the handle).
 * Invariants: while pace_hold has said yes the timer runs or
 * pace_progress resumes the folders, so a held folder is looked at again
 * within PACE_MS, and no file is held past PACE_WAIT_MAX_MS.
 */
#include "daemon/intake/pace.h"

#include "daemon/core/handoff.h"
#include "daemon/intake/pickup.h"

#define PACE_MS		 100
#define PACE_WAIT_MAX_MS 2000
/* Held at half the budget: the batches already running (up to
 * MAX_BATCHES of BATCH_FILES, pickup.c) fill much of the rest. */
#define PACE_ROOM (HANDOFF_BUDGET / 2)

static bool budget_full(struct pickupd *pd)
{
	return __atomic_load_n(&pd->handoff_bytes, __ATOMIC_RELAXED) > HANDOFF_BUDGET - PACE_ROOM;
}

static void resume(struct pickupd *pd)
{
	pd->pace_held = false;
	uv_timer_stop(&pd->pace_timer);
	for (size_t i = 0; i < pd->n_pickups; i++)
		pickup_resume(pd->pickups[i]);
}

static void pace_timer_cb(uv_timer_t *t)
{
	resume(t->data);
}

void pace_init(struct pickupd *pd)
{
	uv_timer_init(pd->loop, &pd->pace_timer);
	pd->pace_timer.data = pd;
}

bool pace_hold(struct pickupd *pd, uint64_t since_ms)
{
	uint64_t now = uv_now(pd->loop);
	if (pd->stopping || !budget_full(pd) || pd->pace_progress_ms == 0 ||
	    now - pd->pace_progress_ms >= PACE_MS || now - since_ms >= PACE_WAIT_MAX_MS)
		return false;
	if (!pd->pace_held) {
		pd->pace_held = true;
		uv_timer_start(&pd->pace_timer, pace_timer_cb, pd->pace_progress_ms + PACE_MS - now,
			       0);
	}
	return true;
}

void pace_progress(struct pickupd *pd)
{
	pd->pace_progress_ms = uv_now(pd->loop);
	if (pd->pace_held && !budget_full(pd))
		resume(pd);
}
