/*
 * credprobe: runs a relay's password_command once to fingerprint what it
 * prints (a SHA-256 over its output and exit status; the output itself is
 * hashed as it arrives and wiped). The relay pool uses it to notice that the
 * command's output changed while the relay is paused after an AUTH failure.
 * Owner: the relay pool. The callback is called exactly once, never
 * synchronously, also after credprobe_cancel; the probe frees itself after it.
 */
#ifndef PICKUPD_CREDPROBE_H
#define PICKUPD_CREDPROBE_H

#include <stdbool.h>
#include <uv.h>

#include "daemon/smtp/secret.h"

struct credprobe;
/* ok: the command ran to its end (any exit status; the status is part of fp). */
typedef void (*credprobe_cb)(struct credprobe *p, bool ok, const unsigned char *fp, void *arg);

struct credprobe *credprobe_start(uv_loop_t *loop, const char *command, credprobe_cb cb, void *arg);
/* Ends the command and every helper it started (its process group, through
 * cmdrun.c); the callback follows with ok = false. */
void credprobe_cancel(struct credprobe *p);

#endif
