/*
 * Helpers the spool unit tests share: the hook switch, removal of a test's
 * temp tree, and a look for a directory entry.
 */
#ifndef PICKUPD_TEST_SPOOL_FIXTURE_H
#define PICKUPD_TEST_SPOOL_FIXTURE_H

#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "spool/spool_int.h"

/* Sets one of PICKUPD_SPOOL_CRASH/FAIL to value (NULL: neither). */
static inline void set_hook(const char *var, const char *value)
{
	unsetenv("PICKUPD_SPOOL_CRASH");
	unsetenv("PICKUPD_SPOOL_FAIL");
	if (value)
		setenv(var, value, 1);
	spool__hook_reset();
}

static inline int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static inline bool exists_in(int dir_fd, const char *name)
{
	struct stat st;
	return fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

#endif
