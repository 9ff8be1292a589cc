/*
 * pace: ingestion paced to delivery while a burst is sent from memory.
 * Loop thread only. Owner: main.c (one per daemon).
 */
#ifndef PICKUPD_PACE_H
#define PICKUPD_PACE_H

#include <stdbool.h>
#include <stdint.h>

#include "daemon/core/pickupd.h"

void pace_init(struct pickupd *pd);
/* Whether a pickup folder's next batch waits (pickup.c's pump), its oldest
 * file ready since since_ms (uv_now); when it does, pickup_resume is called
 * for every folder once it need not. */
bool pace_hold(struct pickupd *pd, uint64_t since_ms);
/* Delivery took a handoff's content for sending, or released it. */
void pace_progress(struct pickupd *pd);

#endif
