/*
 * Purpose: the ENOSPC pause of ingestion: paused at the first claim that
 * does not fit (one log line), resumed by itself (one log line) as soon as
 * the spool's file system has room again, checked on a repeating timer while
 * paused and at once when the daemon frees space itself (a delivered
 * message removed). Delivery goes on throughout: it is what frees space.
 * Owns: pd->enospc, pd->enospc_need and the logic of pd->space_timer (main.c
 * initialises and closes the handle).
 * Invariants: while pd->enospc is set the timer runs, so the pause always
 * ends once space returns.
 */
#include "daemon/intake/space.h"

#include <sys/statvfs.h>

#include "common/log.h"
#include "daemon/intake/pickup.h"

void space_init(struct pickupd *pd)
{
	uv_timer_init(pd->loop, &pd->space_timer);
	pd->space_timer.data = pd;
}

#define SPACE_CHECK_MS 2000

/* Room for the largest file that did not fit, plus a margin (a sixteenth of
 * the file system, between 64 KiB and 1 MiB) so that ingestion does not
 * flap at the edge, and some inodes. */
static bool space_available(struct pickupd *pd)
{
	struct statvfs sv;
	if (fstatvfs(pd->spool.data_fd, &sv) < 0)
		return false;
	uint64_t margin = (uint64_t)sv.f_blocks * sv.f_frsize / 16;
	margin = margin < 65536 ? 65536 : margin > (1 << 20) ? (1 << 20) : margin;
	if (sv.f_files && sv.f_favail < 16)
		return false;
	return (uint64_t)sv.f_bavail * sv.f_frsize >= pd->enospc_need + margin;
}

void space_check(struct pickupd *pd)
{
	if (!pd->enospc || pd->stopping || !space_available(pd))
		return; /* still short: the repeating timer looks again */
	pd->enospc = false;
	pd->enospc_need = 0;
	uv_timer_stop(&pd->space_timer);
	log_info("spool %s: space is available again; ingestion resumed", pd->spool.dir);
	for (size_t i = 0; i < pd->n_pickups; i++)
		pickup_resume(pd->pickups[i]);
}

static void space_timer_cb(uv_timer_t *t)
{
	space_check(t->data);
}

void space_pause(struct pickupd *pd, uint64_t need)
{
	if (need > pd->enospc_need)
		pd->enospc_need = need;
	if (pd->enospc || pd->stopping)
		return;
	/* Once, not per file; delivery goes on and frees space. */
	pd->enospc = true;
	log_error("spool %s: no space left on device; ingestion paused, delivery goes on",
		  pd->spool.dir);
	uv_timer_start(&pd->space_timer, space_timer_cb, SPACE_CHECK_MS, SPACE_CHECK_MS);
}
