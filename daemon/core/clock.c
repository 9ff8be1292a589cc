/*
 * Purpose: the daemon's wall clock, a file of its own so that a module
 * which only needs the time, such as sched, pulls in nothing else
 * (tests/unit/delivery/test_sched.c).
 * Owns: nothing.
 */
#include <sys/time.h>

#include "daemon/core/pickupd.h"

int64_t pickupd_now_ms(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}
