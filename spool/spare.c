/*
 * Purpose: envelope inodes used again. A new inode is dear (on a file system
 * without a journal, ext4 scans for recently deleted inodes at each one): a
 * finished message's envelope is renamed into tmp/ as a spare instead of
 * being unlinked, and the next new message's lazy first envelope is written
 * over a spare instead of a new file.
 * Owns: the spares: tmp/<pid>.<n>.spare, at most SPOOL_SPARES_MAX, known by
 * their numbers in struct spool's list (spare_lock: pool threads share it).
 * Invariants: a spare is in tmp/; the process that recovered the spool (the
 * daemon) keeps its spares at spool_close, and its next recovery takes them
 * back (spool__spare_adopt: a regular file with one link, named as a spare)
 * instead of emptying them out of tmp/ with the rest, so a restart neither
 * unlinks thousands of inodes nor makes them again; any other process
 * unlinks its own at spool_close; a spare is reused only as what it is (a regular file with one
 * link, opened without following or blocking) and leaves with the envelope mode, without the
 * being-sent mark, exactly the new text's length and its mtime; a crash before a reused envelope's
 * writeback may leave another message's text under the new name, which spool_env_torn tells apart
 * (the id line), so the content is ingested again and never sent with it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spool/spool.h"
#include "spool/spool_int.h"

#define SPARE_NAME_MAX 40

/* A spare is known by the pid and number of its name, one key. */
static uint64_t spare_key(unsigned pid, unsigned n)
{
	return (uint64_t)pid << 32 | n;
}

static void spare_name(uint64_t key, char out[SPARE_NAME_MAX])
{
	snprintf(out, SPARE_NAME_MAX, "%u.%u.spare", (unsigned)(key >> 32), (unsigned)key);
}

void spool__spares_init(struct spool *s)
{
	pthread_mutex_init(&s->spare_lock, NULL);
	s->n_spares = s->n_retiring = s->spare_seq = 0;
}

void spool__spares_deinit(struct spool *s)
{
	char name[SPARE_NAME_MAX];
	for (unsigned i = 0; i < s->n_spares && !s->spares_kept; i++) {
		spare_name(s->spares[i], name);
		unlinkat(s->tmp_fd, name, 0);
	}
	s->n_spares = 0;
	pthread_mutex_destroy(&s->spare_lock);
}

bool spool__spare_adopt(struct spool *s, const char *name)
{
	unsigned pid, n;
	int end = 0;
	struct stat st;
	if (sscanf(name, "%u.%u.spare%n", &pid, &n, &end) != 2 || name[end] != '\0' ||
	    fstatat(s->tmp_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode) ||
	    st.st_nlink != 1)
		return false;
	char canon[SPARE_NAME_MAX];
	spare_name(spare_key(pid, n), canon);
	if (strcmp(canon, name) != 0)
		return false; /* "007.1.spare": not a name this file gives */
	pthread_mutex_lock(&s->spare_lock);
	bool room = s->n_spares + s->n_retiring < SPOOL_SPARES_MAX;
	if (room) {
		s->spares[s->n_spares++] = spare_key(pid, n);
		if (pid == s->pid && n >= s->spare_seq)
			s->spare_seq = n + 1; /* a recycled pid: new names stay apart */
	}
	pthread_mutex_unlock(&s->spare_lock);
	return room;
}

unsigned spool_spares(struct spool *s)
{
	pthread_mutex_lock(&s->spare_lock);
	unsigned n = s->n_spares;
	pthread_mutex_unlock(&s->spare_lock);
	return n;
}

int spool__env_retire(struct spool *s, int dir_fd, const char *name)
{
	unsigned n = 0;
	bool room;
	pthread_mutex_lock(&s->spare_lock);
	room = s->n_spares + s->n_retiring < SPOOL_SPARES_MAX;
	if (room) {
		n = s->spare_seq++;
		s->n_retiring++;
	}
	pthread_mutex_unlock(&s->spare_lock);
	if (room) {
		char spare[SPARE_NAME_MAX];
		spare_name(spare_key(s->pid, n), spare);
		int r = renameat2(dir_fd, name, s->tmp_fd, spare, RENAME_NOREPLACE);
		int e = errno;
		pthread_mutex_lock(&s->spare_lock);
		s->n_retiring--;
		if (r == 0)
			s->spares[s->n_spares++] = spare_key(s->pid, n);
		pthread_mutex_unlock(&s->spare_lock);
		if (r == 0 || e == ENOENT)
			return 0;
		/* Anything else (EROFS too) is for the unlink to say. */
	}
	if (unlinkat(dir_fd, name, 0) < 0 && errno != ENOENT)
		return -1;
	return 0;
}

/* Writes the whole of data at offset 0 of fd. */
static int pwrite_all(int fd, const char *data, size_t len)
{
	size_t off = 0;
	while (off < len) {
		ssize_t w = pwrite(fd, data + off, len - off, (off_t)off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		off += (size_t)w;
	}
	return 0;
}

/* Makes the open spare fd hold data, as write_file makes a new file. */
static int spare_fill(struct spool *s, int fd, const char *data, size_t len, int64_t mtime_ms)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -1;
	if (!S_ISREG(st.st_mode) || st.st_nlink != 1) {
		errno = EINVAL;
		return -1;
	}
	/* A removed envelope may carry the being-sent mark (and an operator's
	 * chmod): the new one has the mode a new file gets. */
	if ((st.st_mode & 07777) != s->env_mode && fchmod(fd, s->env_mode) < 0)
		return -1;
	if (pwrite_all(fd, data, len) < 0 ||
	    ((uint64_t)st.st_size > len && ftruncate(fd, (off_t)len) < 0))
		return -1;
	return spool__set_mtime(fd, mtime_ms);
}

int spool__spare_install(struct spool *s, const char *data, size_t len, int64_t mtime_ms, int to_fd,
			 const char *to_name)
{
	uint64_t key = 0;
	pthread_mutex_lock(&s->spare_lock);
	bool have = s->n_spares > 0;
	if (have)
		key = s->spares[--s->n_spares];
	pthread_mutex_unlock(&s->spare_lock);
	if (!have)
		return 1;
	char spare[SPARE_NAME_MAX];
	spare_name(key, spare);
	int fd = -1;
	if (spool__hook("lazy-spare-write") < 0)
		goto fail;
	fd = openat(s->tmp_fd, spare, O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0 || spare_fill(s, fd, data, len, mtime_ms) < 0)
		goto fail;
	int r = close(fd);
	fd = -1;
	if (r < 0)
		goto fail;
	if (spool__hook("lazy-spare-rename") < 0 ||
	    renameat2(s->tmp_fd, spare, to_fd, to_name, RENAME_NOREPLACE) < 0)
		goto fail;
	return 0;
fail:
	spool__discard(fd, s->tmp_fd, spare);
	return -1;
}
