/*
 * Purpose: the client side of the control socket protocol (ctl.c): one
 * request line, one answer line, for pickupctl and pickupd-sendmail -q.
 * Owns: the socket for the length of one request.
 * Invariants: never waits longer than ANSWER_TIMEOUT_MS for the answer; the
 * socket is closed on every path.
 */
#include "daemon/queue/ctl_client.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define ANSWER_TIMEOUT_MS 30000

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ctl_client_request(const char *path, const char *line, struct buf *resp, struct buf *err)
{
	struct sockaddr_un sa;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		buf_printf(err, "control socket path too long: %s", path);
		return -1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path));
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		buf_printf(err, "socket: %s", strerror(errno));
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		close(fd);
		if (e == ENOENT || e == ECONNREFUSED)
			return 0;
		buf_printf(err, "cannot reach pickupd at %s: %s", path, strerror(e));
		return -1;
	}
	size_t len = strlen(line);
	if (send(fd, line, len, MSG_NOSIGNAL) != (ssize_t)len ||
	    send(fd, "\n", 1, MSG_NOSIGNAL) != 1) {
		buf_printf(err, "cannot talk to pickupd at %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	buf_clear(resp);
	int64_t deadline = mono_ms() + ANSWER_TIMEOUT_MS;
	for (;;) {
		if (resp->len && memchr(resp->data, '\n', resp->len))
			break;
		int64_t left = deadline - mono_ms();
		struct pollfd pfd = {fd, POLLIN, 0};
		if (left <= 0 || poll(&pfd, 1, (int)left) == 0) {
			buf_printf(err, "pickupd did not answer on %s", path);
			close(fd);
			return -1;
		}
		char chunk[1024];
		ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			buf_printf(err, "pickupd closed the control connection without answering");
			close(fd);
			return -1;
		}
		buf_append(resp, chunk, (size_t)n);
	}
	close(fd);
	char *nl = memchr(resp->data, '\n', resp->len);
	*nl = '\0';
	resp->len = (size_t)(nl - resp->data);
	return 1;
}
