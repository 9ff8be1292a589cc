/*
 * cmdrun: runs a password_command (/bin/sh -c) in a process group of its
 * own, its stdout read through a pipe, so the loop never waits for it. One
 * runner for both users of the setting: a session's secret (smtpc) and the
 * relay pool's fingerprint of it (credprobe).
 * Owner: whoever started it. The done callback is called exactly once,
 * never synchronously (also after cmdrun_cancel, and when the command
 * cannot be started); the runner frees itself right after it, so the owner
 * must not touch it afterwards.
 */
#ifndef PICKUPD_CMDRUN_H
#define PICKUPD_CMDRUN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct cmdrun_result {
	bool exited;	 /* it ran to its end: status and signal say how */
	bool cancelled;	 /* cmdrun_cancel was called */
	int spawn_error; /* a libuv error when it could not be started, else 0 */
	int64_t status;
	int signal;
};

/* Output as it arrives; the buffer is wiped when the callback returns
 * (it may hold a secret). */
typedef void (*cmdrun_out_cb)(const char *data, size_t len, void *arg);
typedef void (*cmdrun_done_cb)(const struct cmdrun_result *res, void *arg);

struct cmdrun;
struct cmdrun *cmdrun_start(uv_loop_t *loop, const char *command, cmdrun_out_cb out,
			    cmdrun_done_cb done, void *arg);
/* Ends it (idempotent): SIGTERM to its whole process group, SIGKILL if it
 * is still there after a grace period; its output is no longer read. The
 * done callback follows, once the command has exited. */
void cmdrun_cancel(struct cmdrun *r);

#endif
