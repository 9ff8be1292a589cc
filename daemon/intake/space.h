/*
 * space: pausing ingestion while the spool's disk is full, and resuming it
 * by itself. Loop thread only. Owner: main.c (one per daemon).
 */
#ifndef PICKUPD_SPACE_H
#define PICKUPD_SPACE_H

#include <stdint.h>

#include "daemon/core/pickupd.h"

void space_init(struct pickupd *pd);
/* A claim met ENOSPC (a file of need bytes did not fit): ingestion pauses,
 * logged once, until there is room again. */
void space_pause(struct pickupd *pd, uint64_t need);
/* Resumes ingestion now if it was paused and there is room (also called
 * when the daemon itself freed space). */
void space_check(struct pickupd *pd);

#endif
