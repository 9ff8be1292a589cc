/*
 * Purpose: the daemon's wall clock, apart from util.c's thread-pool jobs
 * (which call back into main.c), so that modules which only need the time,
 * such as sched, link on their own (tests/unit/daemon/test_sched.c).
 * Owns: nothing.
 */
#include <sys/time.h>

#include "daemon/pickupd.h"

int64_t pickupd_now_ms(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}
