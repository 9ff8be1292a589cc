/*
 * preflight: every check of a configuration against the machine that the
 * daemon makes before it starts, in one function that start-up, SIGHUP
 * reload and `pickupd --check-config` (the unit's ExecStartPre) all run: a
 * config the check passes is one the daemon starts with.
 */
#ifndef PICKUPD_PREFLIGHT_H
#define PICKUPD_PREFLIGHT_H

#include "common/buf.h"
#include "common/config.h"

/* 0, or -1 with "FILE[:LINE]: message" lines in errors. Warnings (the daemon
 * runs, but something will not work) go to warnings as lines too. */
int preflight_run(const struct config *cfg, struct buf *errors, struct buf *warnings);

#endif
