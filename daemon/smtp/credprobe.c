/*
 * Purpose: fingerprint a password_command's output (see credprobe.h).
 * Owns: the child process, its stdout pipe, the digest in progress.
 * Invariants: the output never reaches a log or outlives the read callback's
 * buffer (wiped); the callback runs once, from a close callback, after both
 * handles are closed, so the probe can be freed right after it.
 */
#include "daemon/smtp/credprobe.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"

struct credprobe {
	uv_process_t proc;
	uv_pipe_t pipe;
	EVP_MD_CTX *md;
	credprobe_cb cb;
	void *arg;
	int handles; /* open uv handles */
	bool exited, cancelled;
	int64_t status;
	int signal;
};

static void probe_handle_closed(uv_handle_t *h)
{
	struct credprobe *p = h->data;
	if (--p->handles > 0)
		return;
	unsigned char fp[SECRET_FP_LEN];
	unsigned len = 0;
	bool ok = p->exited && !p->cancelled && p->signal == 0;
	int64_t st[2] = {p->status, p->signal};
	if (ok && (EVP_DigestUpdate(p->md, st, sizeof(st)) != 1 ||
		   EVP_DigestFinal_ex(p->md, fp, &len) != 1))
		ok = false;
	EVP_MD_CTX_free(p->md);
	p->cb(p, ok, ok ? fp : NULL, p->arg);
	free(p);
}

static void probe_exit_cb(uv_process_t *proc, int64_t status, int sig)
{
	struct credprobe *p = proc->data;
	p->exited = true;
	p->status = status;
	p->signal = sig;
	uv_close((uv_handle_t *)proc, probe_handle_closed);
}

static void probe_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	static char slab[4096];
	(void)h;
	(void)suggested;
	*b = uv_buf_init(slab, sizeof(slab));
}

static void probe_read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	struct credprobe *p = st->data;
	if (n > 0) {
		EVP_DigestUpdate(p->md, b->base, (size_t)n);
		OPENSSL_cleanse(b->base, (size_t)n);
		return;
	}
	if (n < 0)
		uv_close((uv_handle_t *)st, probe_handle_closed);
}

struct credprobe *credprobe_start(uv_loop_t *loop, const char *command, credprobe_cb cb, void *arg)
{
	struct credprobe *p = xcalloc(1, sizeof(*p));
	p->cb = cb;
	p->arg = arg;
	p->md = EVP_MD_CTX_new();
	if (p->md == NULL || EVP_DigestInit_ex(p->md, EVP_sha256(), NULL) != 1)
		abort(); /* out of memory, as the x*alloc functions treat it */
	uv_pipe_init(loop, &p->pipe, 0);
	p->pipe.data = p;
	p->proc.data = p;
	p->handles = 2;
	uv_stdio_container_t stdio[3];
	stdio[0].flags = UV_IGNORE;
	stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
	stdio[1].data.stream = (uv_stream_t *)&p->pipe;
	stdio[2].flags = UV_INHERIT_FD;
	stdio[2].data.fd = 2;
	char *args[] = {(char *)"/bin/sh", (char *)"-c", (char *)command, NULL};
	uv_process_options_t o;
	memset(&o, 0, sizeof(o));
	o.file = "/bin/sh";
	o.args = args;
	o.exit_cb = probe_exit_cb;
	o.stdio = stdio;
	o.stdio_count = 3;
	if (uv_spawn(loop, &p->proc, &o) < 0) {
		/* Reported from the close callbacks: never synchronously. */
		p->cancelled = true;
		uv_close((uv_handle_t *)&p->proc, probe_handle_closed);
		uv_close((uv_handle_t *)&p->pipe, probe_handle_closed);
		return p;
	}
	uv_read_start((uv_stream_t *)&p->pipe, probe_alloc_cb, probe_read_cb);
	return p;
}

void credprobe_cancel(struct credprobe *p)
{
	if (p->cancelled)
		return; /* already ending */
	p->cancelled = true;
	if (!p->exited)
		uv_process_kill(&p->proc, SIGKILL);
	/* A child of the command may hold the pipe open: do not wait for it. */
	if (!uv_is_closing((uv_handle_t *)&p->pipe))
		uv_close((uv_handle_t *)&p->pipe, probe_handle_closed);
}
