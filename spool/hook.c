/*
 * Purpose: fault injection at named steps of spool transitions, for the
 * crash tests (see spool_int.h). Costs one getenv per process when unused.
 * Owns: the parsed PICKUPD_SPOOL_CRASH / PICKUPD_SPOOL_FAIL settings.
 * Invariants: steps are named after the call that follows them
 * ("env-rename" runs just before the rename of spool_env_write).
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spool/spool_int.h"

static int hook_matches(const char *spec, const char *step, long *arg_r)
{
	size_t n = strlen(step);
	if (strncmp(spec, step, n) != 0 || (spec[n] != '\0' && spec[n] != ':'))
		return 0;
	*arg_r = spec[n] == ':' ? strtol(spec + n + 1, NULL, 10) : 0;
	return 1;
}

static atomic_int checked, enabled;
static atomic_long crash_count;
/* Atomic too: the first calls may come from several pool threads at once,
 * each storing what getenv returned (the same pointers; TSan sees a race). */
static _Atomic(const char *) crash_spec, fail_spec;

void spool__hook_reset(void)
{
	atomic_store(&checked, 0);
	atomic_store(&enabled, 0);
	atomic_store(&crash_count, 0);
	atomic_store(&crash_spec, NULL);
	atomic_store(&fail_spec, NULL);
}

int spool__hook(const char *step)
{
	long arg;

	if (!atomic_load(&checked)) {
		const char *c = getenv("PICKUPD_SPOOL_CRASH");
		const char *f = getenv("PICKUPD_SPOOL_FAIL");
		atomic_store(&crash_spec, c);
		atomic_store(&fail_spec, f);
		atomic_store(&enabled, c != NULL || f != NULL);
		atomic_store(&checked, 1);
	}
	if (!atomic_load(&enabled))
		return 0;
	const char *crash = atomic_load(&crash_spec);
	const char *fail = atomic_load(&fail_spec);
	if (crash && hook_matches(crash, step, &arg)) {
		long seen = atomic_fetch_add(&crash_count, 1) + 1;
		if (seen >= (arg > 0 ? arg : 1))
			kill(getpid(), SIGKILL);
	}
	if (fail && hook_matches(fail, step, &arg)) {
		errno = arg > 0 ? (int)arg : EIO;
		return -1;
	}
	return 0;
}
