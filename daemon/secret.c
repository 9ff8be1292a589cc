/*
 * Purpose: reading relay secrets from files (see secret.h).
 * Invariants: the bytes read are wiped from the stack buffer; the file is
 * never followed through a symbolic link.
 */
#include "daemon/secret.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *secret_read_file(const struct config_relay *r, struct buf *reason)
{
	char path[4096];
	const char *file = r->password_file;
	if (file == NULL || *file == '\0') {
		const char *cd = getenv("CREDENTIALS_DIRECTORY");
		if (cd == NULL) {
			buf_printf(reason, "no password_file and no $CREDENTIALS_DIRECTORY");
			return NULL;
		}
		snprintf(path, sizeof(path), "%s/%s", cd, r->name);
		file = path;
	}
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
