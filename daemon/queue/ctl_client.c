/*
 * Purpose: the client side of the control socket (ctl_proto.h): connect,
 * one request and its answer line, or one batch and its answer, for
 * pickupctl and pickupd-sendmail -q.
 * Owns: the socket for the length of one request.
 * Invariants: never waits longer than the idle timeout for the next bytes
 * of an answer; the socket is closed on every path; never raises SIGPIPE.
 */
#include "daemon/queue/ctl_client.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "daemon/queue/ctl_proto.h"

#define ANSWER_IDLE_MS 30000 /* one answer line */
#define BATCH_IDLE_MS  60000 /* a batch: the daemon answers once all is done */

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ctl_client_connect(const char *path, int *fd_r, struct buf *err)
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
	*fd_r = fd;
	return 1;
}

static int send_all(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static bool one_line(const char *data, size_t len)
{
	return len && memchr(data, '\n', len) != NULL;
}

/*
 * Connects, sends req, and reads into resp until done(resp) says the answer
 * is complete, with a deadline that each byte received pushes back.
 * 1, 0 (no daemon listens) or -1 (err).
 */
static int round_trip(const char *path, const struct buf *req, struct buf *resp,
		      bool (*done)(const char *, size_t), int64_t idle_ms, struct buf *err)
{
	int fd;
	int r = ctl_client_connect(path, &fd, err);
	if (r <= 0)
		return r;
	buf_clear(resp);
	if (send_all(fd, req->data, req->len) < 0) {
		buf_printf(err, "cannot talk to pickupd at %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	int64_t deadline = mono_ms() + idle_ms;
	while (!done(resp->data, resp->len)) {
		int64_t left = deadline - mono_ms();
		struct pollfd pfd = {fd, POLLIN, 0};
		if (left <= 0 || poll(&pfd, 1, (int)left) == 0) {
			buf_printf(err, "pickupd did not answer on %s", path);
			close(fd);
			return -1;
		}
		char chunk[65536];
		ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			buf_printf(err, "pickupd closed the control connection without answering");
			close(fd);
			return -1;
		}
		buf_append(resp, chunk, (size_t)n);
		deadline = mono_ms() + idle_ms;
	}
	close(fd);
	return 1;
}

int ctl_client_request(const char *path, const char *line, struct buf *resp, struct buf *err)
{
	struct buf req = BUF_INIT;
	buf_printf(&req, "%s\n", line);
	int r = round_trip(path, &req, resp, one_line, ANSWER_IDLE_MS, err);
	buf_deinit(&req);
	if (r <= 0)
		return r;
	char *nl = memchr(resp->data, '\n', resp->len);
	*nl = '\0';
	resp->len = (size_t)(nl - resp->data);
	return 1;
}

static int cmp_item_ptr(const void *a, const void *b)
{
	return strcmp((*(struct spool_op_item *const *)a)->id,
		      (*(struct spool_op_item *const *)b)->id);
}

int ctl_client_batch(const char *path, enum spool_op op, struct spool_op_item **todo, size_t n,
		     struct buf *err)
{
	struct buf req = BUF_INIT, resp = BUF_INIT;
	ctl_put_batch_head(&req, op, n);
	for (size_t i = 0; i < n; i++)
		ctl_put_id(&req, todo[i]->id);
	int r = round_trip(path, &req, &resp, ctl_batch_answered, BATCH_IDLE_MS, err);
	for (char *p = resp.data; r > 0 && p && *p;) {
		char *nl = strchr(p, '\n');
		*nl = '\0';
		enum spool_op_result res;
		struct spool_op_item key, *kp = &key, **hit = NULL;
		const char *text = NULL;
		int k = ctl_parse_item(p, &res, key.id, &text);
		if (k == 0)
			break;
		if (k > 0)
			hit = bsearch(&kp, todo, n, sizeof(*todo), cmp_item_ptr);
		if (hit == NULL) {
			buf_printf(err, "pickupd answered: %s", p);
			r = -1;
			break;
		}
		spool_op_set(*hit, res, "%s", text);
		p = nl + 1;
	}
	for (size_t i = 0; r > 0 && i < n; i++)
		if (todo[i]->result == SPOOL_OP_PENDING)
			spool_op_set(todo[i], SPOOL_OP_FAILED, "%s: pickupd gave no answer",
				     todo[i]->id);
	buf_deinit(&req);
	buf_deinit(&resp);
	return r;
}
