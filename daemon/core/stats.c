/*
 * Purpose: the delay histogram of struct pickupd_stats (pickupd.h): relay.c
 * counts into it, metrics.c prints it; here, below both.
 * Owns: nothing.
 * Invariants: each delay lands in exactly one bucket (or delay_over), so the
 * printed cumulative counts never decrease.
 */
#include "daemon/core/pickupd.h"

const double pickupd_delay_buckets[PICKUPD_DELAY_BUCKETS] = {1,	  5,	30,    60,    300,
							     900, 3600, 14400, 86400, 432000};

void pickupd_stats_delay(struct pickupd_stats *st, double seconds)
{
	int i = 0;
	while (i < PICKUPD_DELAY_BUCKETS && seconds > pickupd_delay_buckets[i])
		i++;
	if (i < PICKUPD_DELAY_BUCKETS)
		st->delay_count[i]++;
	else
		st->delay_over++;
	st->delay_sum += seconds;
}
