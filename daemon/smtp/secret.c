/*
 * Purpose: reading relay secrets from files (see secret.h), the one way a
 * session gets its secret (the daemon's and test-relay's alike), and
 * noticing that an operator changed one (its fingerprint).
 * Invariants: the bytes read are wiped from the stack buffer; the file is
 * never followed through a symbolic link; a secret is used only when no user
 * but us and root could have written or replaced it; a fingerprint never
 * holds or reveals the secret (a SHA-256 over it and the file's metadata).
 */
#include "daemon/smtp/secret.h"

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The file a relay's secret lives in; NULL with a reason when there is none.
 * Without password_file: systemd's credential relay-NAME, as the shipped
 * unit's LoadCredential=relay-primary:... passes it to [relay primary]. */
static const char *secret_path(const struct config_relay *r, char *path, size_t len,
			       struct buf *reason)
{
	if (r->password_file && *r->password_file)
		return r->password_file;
	const char *cd = getenv("CREDENTIALS_DIRECTORY");
	if (cd == NULL || *cd == '\0') {
		if (reason)
			buf_printf(reason,
				   "no password_file, and no $CREDENTIALS_DIRECTORY for the "
				   "credential relay-%s (LoadCredential=relay-%s:FILE in the unit)",
				   r->name, r->name);
		return NULL;
	}
	snprintf(path, len, "%s/relay-%s", cd, r->name);
	return path;
}

static bool trusted_owner(uid_t uid)
{
	return uid == 0 || uid == geteuid();
}

/*
 * ssh's rule for the directories above a secret: each owned by us or root,
 * and not writable by group or others, or else anyone who may write one
 * could rename our file away and put theirs in its place. A sticky directory
 * (/tmp) is allowed: there only a file's owner, or the directory's (us or
 * root, as checked), may rename or remove it, and the file itself is checked
 * to be ours or root's.
 */
static int check_dirs(const char *file, struct buf *reason)
{
	char *copy = xstrdup(file), *slash = strrchr(copy, '/');
	char *dir = NULL;
	int rc = -1;
	if (slash == NULL)
		dir = realpath(".", NULL);
	else if (slash == copy)
		dir = xstrdup("/");
	else {
		*slash = '\0';
		dir = realpath(copy, NULL);
	}
	if (dir == NULL) {
		buf_printf(reason, "cannot resolve the directory of %s: %s", file, strerror(errno));
		goto out;
	}
	for (;;) {
		struct stat st;
		if (stat(dir, &st) < 0) {
			buf_printf(reason, "cannot stat %s: %s", dir, strerror(errno));
			goto out;
		}
		if (!trusted_owner(st.st_uid)) {
			buf_printf(reason,
				   "%s is in %s, owned by uid %u: only root or uid %u may own it",
				   file, dir, (unsigned)st.st_uid, (unsigned)geteuid());
			goto out;
		}
		if ((st.st_mode & 022) && !(st.st_mode & S_ISVTX)) {
			buf_printf(reason,
				   "%s is in %s, which others can write to (mode %04o): anyone who "
				   "may write there could replace it",
				   file, dir, (unsigned)(st.st_mode & 07777));
			goto out;
		}
		char *up = strrchr(dir, '/');
		if (up == NULL || (up == dir && dir[1] == '\0'))
			break;
		up[up == dir ? 1 : 0] = '\0';
	}
	rc = 0;
out:
	free(dir);
	free(copy);
	return rc;
}

char *secret_read_file(const struct config_relay *r, struct buf *reason)
{
	char path[4096];
	const char *file = secret_path(r, path, sizeof(path), reason);
	if (file == NULL)
		return NULL;
	int fd = open(file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		buf_printf(reason, "cannot open %s: %s", file, strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	if (!S_ISREG(st.st_mode) || (st.st_mode & 077)) {
		buf_printf(reason,
			   "%s must be a regular file that only its owner can read (mode %03o)",
			   file, (unsigned)(st.st_mode & 0777));
		close(fd);
		return NULL;
	}
	if (!trusted_owner(st.st_uid)) {
		buf_printf(reason,
			   "%s is owned by uid %u: only root or the user pickupd runs as (uid %u) "
			   "may own it",
			   file, (unsigned)st.st_uid, (unsigned)geteuid());
		close(fd);
		return NULL;
	}
	if (check_dirs(file, reason) < 0) {
		close(fd);
		return NULL;
	}
	char tmp[4096];
	ssize_t n = read(fd, tmp, sizeof(tmp) - 1);
	close(fd);
	if (n < 0) {
		buf_printf(reason, "cannot read %s: %s", file, strerror(errno));
		return NULL;
	}
	while (n > 0 && (tmp[n - 1] == '\n' || tmp[n - 1] == '\r'))
		n--;
	char *secret = xstrndup(tmp, (size_t)n);
	OPENSSL_cleanse(tmp, sizeof(tmp));
	return secret;
}

char *secret_for_session(const struct config_relay *r, struct buf *reason)
{
	if (r->password_command && *r->password_command)
		return xstrdup("");
	struct buf why = BUF_INIT;
	char *secret = secret_read_file(r, &why);
	if (secret == NULL)
		buf_printf(reason, "relay %s: %s", r->name, why.data);
	buf_deinit(&why);
	return secret;
}

void secret_file_fingerprint(const struct config_relay *r, unsigned char fp[SECRET_FP_LEN])
{
	/* What an operator's fix changes: the content, the mtime (a touch), the
	 * mode or owner (a chmod/chown), or the file itself (a rename into
	 * place); or whether it exists at all. */
	struct {
		int err;
		dev_t dev;
		ino_t ino;
		mode_t mode;
		uid_t uid;
		off_t size;
		time_t mtime_s;
		long mtime_ns;
	} meta;
	char path[4096];
	char tmp[4096];
	ssize_t n = 0;
	memset(&meta, 0, sizeof(meta));
	const char *file = secret_path(r, path, sizeof(path), NULL);
	int fd = file ? open(file, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC) : -1;
	struct stat st;
	if (file == NULL) {
		meta.err = ENOENT;
	} else if (fd < 0 || fstat(fd, &st) < 0) {
		meta.err = errno;
	} else {
		meta.dev = st.st_dev;
		meta.ino = st.st_ino;
		meta.mode = st.st_mode;
		meta.uid = st.st_uid;
		meta.size = st.st_size;
		meta.mtime_s = st.st_mtim.tv_sec;
		meta.mtime_ns = st.st_mtim.tv_nsec;
		if (S_ISREG(st.st_mode))
			n = read(fd, tmp, sizeof(tmp));
	}
	if (fd >= 0)
		close(fd);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned len = 0;
	if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(md, &meta, sizeof(meta)) != 1 ||
	    (n > 0 && EVP_DigestUpdate(md, tmp, (size_t)n) != 1) ||
	    EVP_DigestFinal_ex(md, fp, &len) != 1) {
		memset(fp, 0, SECRET_FP_LEN); /* out of memory: no change is seen */
	}
	EVP_MD_CTX_free(md);
	OPENSSL_cleanse(tmp, sizeof(tmp));
}
