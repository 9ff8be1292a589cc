/*
 * Purpose: run a password_command without blocking the loop (see cmdrun.h).
 * Owns: the child process handle, its stdout pipe, the kill timer.
 * Invariants: the command is its own process group's leader
 * (UV_PROCESS_DETACHED), so a cancel reaches the helpers it started too;
 * output never outlives the read callback's buffer (wiped); the done
 * callback runs once, from the last close callback, after the process has
 * exited (or never started) and every handle is closed.
 */
#include "daemon/smtp/cmdrun.h"

#include <openssl/crypto.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"

/* SIGTERM first: a helper may want to clean up; SIGKILL if it does not go. */
#define CMDRUN_KILL_GRACE_MS 2000

struct cmdrun {
	uv_process_t proc;
	uv_pipe_t pipe;
	uv_timer_t kill_timer;
	cmdrun_out_cb out;
	cmdrun_done_cb done;
	void *arg;
	int handles; /* open uv handles */
	struct cmdrun_result res;
};

static void closed_cb(uv_handle_t *h)
{
	struct cmdrun *r = h->data;
	if (--r->handles == 1) {
		/* The process and the pipe are gone: the timer follows. */
		uv_close((uv_handle_t *)&r->kill_timer, closed_cb);
		return;
	}
	if (r->handles > 0)
		return;
	r->done(&r->res, r->arg);
	free(r);
}

static void exit_cb(uv_process_t *p, int64_t status, int sig)
{
	struct cmdrun *r = p->data;
	r->res.exited = true;
	r->res.status = status;
	r->res.signal = sig;
	uv_timer_stop(&r->kill_timer);
	uv_close((uv_handle_t *)p, closed_cb);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	static char slab[4096]; /* one loop thread: one read at a time */
	(void)h;
	(void)suggested;
	*b = uv_buf_init(slab, sizeof(slab));
}

static void read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	struct cmdrun *r = st->data;
	if (n > 0) {
		r->out(b->base, (size_t)n, r->arg);
		OPENSSL_cleanse(b->base, (size_t)n);
		return;
	}
	if (n < 0)
		uv_close((uv_handle_t *)st, closed_cb);
}

struct cmdrun *cmdrun_start(uv_loop_t *loop, const char *command, cmdrun_out_cb out,
			    cmdrun_done_cb done, void *arg)
{
	struct cmdrun *r = xcalloc(1, sizeof(*r));
	r->out = out;
	r->done = done;
	r->arg = arg;
	uv_pipe_init(loop, &r->pipe, 0);
	uv_timer_init(loop, &r->kill_timer);
	r->pipe.data = r->proc.data = r->kill_timer.data = r;
	r->handles = 3;
	uv_stdio_container_t stdio[3];
	stdio[0].flags = UV_IGNORE;
	stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
	stdio[1].data.stream = (uv_stream_t *)&r->pipe;
	stdio[2].flags = UV_INHERIT_FD;
	stdio[2].data.fd = 2;
	char *args[] = {(char *)"/bin/sh", (char *)"-c", (char *)command, NULL};
	uv_process_options_t o;
	memset(&o, 0, sizeof(o));
	o.file = "/bin/sh";
	o.args = args;
	o.exit_cb = exit_cb;
	o.flags = UV_PROCESS_DETACHED; /* its own process group, killed as one */
	o.stdio = stdio;
	o.stdio_count = 3;
	int rc = uv_spawn(loop, &r->proc, &o);
	if (rc < 0) {
		/* Reported from the close callbacks: never synchronously. */
		r->res.spawn_error = rc;
		uv_close((uv_handle_t *)&r->proc, closed_cb);
		uv_close((uv_handle_t *)&r->pipe, closed_cb);
		return r;
	}
	uv_read_start((uv_stream_t *)&r->pipe, alloc_cb, read_cb);
	return r;
}

static void kill_timer_cb(uv_timer_t *t)
{
	struct cmdrun *r = t->data;
	if (!r->res.exited)
		uv_kill(-r->proc.pid, SIGKILL);
}

void cmdrun_cancel(struct cmdrun *r)
{
	if (r->res.cancelled)
		return;
	r->res.cancelled = true;
	if (r->res.spawn_error == 0 && !r->res.exited) {
		uv_kill(-r->proc.pid, SIGTERM);
		uv_timer_start(&r->kill_timer, kill_timer_cb, CMDRUN_KILL_GRACE_MS, 0);
	}
	/* A child may hold the pipe open: do not wait for it. */
	if (!uv_is_closing((uv_handle_t *)&r->pipe))
		uv_close((uv_handle_t *)&r->pipe, closed_cb);
}
