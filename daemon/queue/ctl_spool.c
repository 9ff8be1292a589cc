/*
 * Purpose: what operators read from the spool and the pickup folders besides
 * the messages (pickupctl status, the metrics, [badmail] keep): badmail
 * entries' ages and sizes, and the scan of pickup folders for files that
 * stay.
 * Owns: nothing. Plain spool calls, no libuv, so pickupctl links only this.
 * Invariants: read-only: the spool and the pickup folders are only looked
 * at (no open of a file for reading, no lock taken).
 */
#include "daemon/queue/ctl_spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/match.h"

/* ---- badmail retention ------------------------------------------------------------------- */

static int64_t ts_ms(struct timespec ts)
{
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ctl_spool_badmail(struct spool *sp, struct ctl_badmail **v_r, size_t *n_r)
{
	char **ids;
	size_t n;
	*v_r = NULL;
	*n_r = 0;
	if (spool_list(sp, SPOOL_BADMAIL, &ids, &n) < 0)
		return -1;
	struct ctl_badmail *v = xcalloc(n ? n : 1, sizeof(*v));
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		struct spool_stat st;
		if (spool_stat(sp, SPOOL_BADMAIL, ids[i], &st) < 0)
			continue; /* gone meanwhile */
		memcpy(v[k].id, ids[i], SPOOL_ID_LEN + 1);
		v[k].since_ms = st.since_ms;
		v[k].bytes = st.bytes;
		k++;
	}
	spool_list_free(ids, n);
	*v_r = v;
	*n_r = k;
	return 0;
}

/* ---- stuck pickup files ------------------------------------------------------------------ */

const char *const ctl_stuck_names[STUCK_N] = {"unreadable", "unmatched", "old", "not_regular"};

#define STUCK_MIN_AGE_MS (5 * 60 * 1000)

int64_t ctl_stuck_age_ms(const struct config_pickup *pk)
{
	int64_t t = (int64_t)pk->settle_time_ms + 2 * (int64_t)pk->rescan_interval_ms;
	return t > STUCK_MIN_AGE_MS ? t : STUCK_MIN_AGE_MS;
}

/* A name writers use while writing (see common/match.h). */
static bool temp_name(const char *name)
{
	size_t n = strlen(name);
	return name[0] == '.' || (n >= 4 && strcasecmp(name + n - 4, ".tmp") == 0) ||
	       (n >= 5 && strcasecmp(name + n - 5, ".part") == 0);
}

static void note_stuck(struct ctl_stuck *r, enum ctl_stuck_reason why, const char *name)
{
	if (r->count[why] < CTL_STUCK_EXAMPLES)
		r->examples[why][r->count[why]] = xstrdup(name);
	r->count[why]++;
}

void ctl_spool_stuck(const struct config_pickup *pk, int64_t now_ms, struct ctl_stuck *r)
{
	memset(r, 0, sizeof(*r));
	int fd = open(pk->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (d == NULL) {
		r->err = errno;
		if (fd >= 0)
			close(fd);
		return;
	}
	int64_t old = now_ms - ctl_stuck_age_ms(pk);
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		const char *name = de->d_name;
		struct stat st;
		if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
			continue;
		if (fstatat(dirfd(d), name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue; /* taken meanwhile */
		bool matched = match_name(pk->match, name);
		bool is_old = ts_ms(st.st_mtim) < old;
		if (S_ISDIR(st.st_mode)) {
			if (matched)
				note_stuck(r, STUCK_NOT_REGULAR, name);
		} else if (!matched) {
			/* A temp file is a writer at work, until it is old. */
			if (!temp_name(name) || is_old)
				note_stuck(r, STUCK_UNMATCHED, name);
		} else if (!S_ISREG(st.st_mode)) {
			continue; /* refused into badmail as soon as pickupd sees it */
		} else if (faccessat(dirfd(d), name, R_OK, AT_EACCESS) < 0) {
			note_stuck(r, STUCK_UNREADABLE, name);
		} else if (is_old) {
			note_stuck(r, STUCK_OLD, name);
		}
	}
	closedir(d);
}

void ctl_stuck_deinit(struct ctl_stuck *r)
{
	for (int i = 0; i < STUCK_N; i++)
		for (int k = 0; k < CTL_STUCK_EXAMPLES; k++)
			free(r->examples[i][k]);
	memset(r, 0, sizeof(*r));
}
