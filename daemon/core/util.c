/*
 * Purpose: small daemon-wide helpers: sd_notify, thread-pool jobs (the
 * clock is in clock.c).
 * Invariants: a job holds a reference to pd->cfg as it was at submission,
 * from job_submit until its done callback has returned; the part that
 * submits a job counts it until its done callback (the part's close waits
 * for it), so nothing here calls back into the daemon.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon/core/pickupd.h"

void pickupd_notify(const char *state)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa;
	if (path == NULL || (path[0] != '/' && path[0] != '@') ||
	    strlen(path) >= sizeof(sa.sun_path))
		return;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path));
	if (sa.sun_path[0] == '@')
		sa.sun_path[0] = '\0'; /* abstract namespace */
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
	ssize_t n = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, len);
	(void)n;
	close(fd);
}

static void work_cb(uv_work_t *w)
{
	struct job *j = w->data;
	j->fn(j);
}

static void after_work_cb(uv_work_t *w, int status)
{
	struct job *j = w->data;
	struct config *cfg = j->cfg; /* done frees the job */
	(void)status;		     /* jobs are never cancelled */
	j->done(j);
	config_free(cfg);
}

void job_submit(struct pickupd *pd, struct job *j, job_fn fn, job_fn done)
{
	j->pd = pd;
	j->cfg = config_ref(pd->cfg);
	j->fn = fn;
	j->done = done;
	j->work.data = j;
	uv_queue_work(pd->loop, &j->work, work_cb, after_work_cb);
}
