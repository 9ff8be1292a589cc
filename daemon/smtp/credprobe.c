/*
 * Purpose: fingerprint a password_command's output (see credprobe.h).
 * Owns: the command's runner (cmdrun.c: its process group, its stdout), the
 * digest in progress.
 * Invariants: the output never reaches a log or outlives the runner's read
 * buffer (wiped); the callback runs once, from the runner's done callback
 * (never synchronously), so the probe can be freed right after it.
 */
#include "daemon/smtp/credprobe.h"

#include <openssl/evp.h>
#include <stdlib.h>

#include "common/buf.h"
#include "daemon/smtp/cmdrun.h"

struct credprobe {
	struct cmdrun *run;
	EVP_MD_CTX *md;
	credprobe_cb cb;
	void *arg;
};

static void probe_out_cb(const char *data, size_t len, void *arg)
{
	struct credprobe *p = arg;
	EVP_DigestUpdate(p->md, data, len);
}

static void probe_done_cb(const struct cmdrun_result *res, void *arg)
{
	struct credprobe *p = arg;
	unsigned char fp[SECRET_FP_LEN];
	unsigned len = 0;
	bool ok = res->exited && !res->cancelled && res->signal == 0;
	int64_t st[2] = {res->status, res->signal};
	if (ok && (EVP_DigestUpdate(p->md, st, sizeof(st)) != 1 ||
		   EVP_DigestFinal_ex(p->md, fp, &len) != 1))
		ok = false;
	EVP_MD_CTX_free(p->md);
	p->cb(p, ok, ok ? fp : NULL, p->arg);
	free(p);
}

struct credprobe *credprobe_start(uv_loop_t *loop, const char *command, credprobe_cb cb, void *arg)
{
	struct credprobe *p = xcalloc(1, sizeof(*p));
	p->cb = cb;
	p->arg = arg;
	p->md = EVP_MD_CTX_new();
	if (p->md == NULL || EVP_DigestInit_ex(p->md, EVP_sha256(), NULL) != 1)
		abort(); /* out of memory, as the x*alloc functions treat it */
	p->run = cmdrun_start(loop, command, probe_out_cb, probe_done_cb, p);
	return p;
}

void credprobe_cancel(struct credprobe *p)
{
	cmdrun_cancel(p->run);
}
