/*
 * relay: the relay session pool and the failure policy. Sessions to each
 * [relay NAME] (up to max_sessions, reused for max_messages_per_session)
 * pull due messages from the schedule; each transaction's per-recipient
 * results are turned into sent / deferred / failed here and only here, and
 * recorded durably in the spool before anything else happens to the message.
 * Owner: main.c.
 */
#ifndef PICKUPD_RELAY_H
#define PICKUPD_RELAY_H

#include <stdbool.h>

#include "daemon/pickupd.h"
#include "daemon/smtpc.h"

struct relay_pool *relay_pool_new(struct pickupd *pd, struct buf *errors);
void relay_pool_free(struct relay_pool *pool);
/* Something may have become due: give work to sessions, open more if allowed. */
void relay_pool_wake(struct relay_pool *pool);
/* Shutdown: QUIT idle sessions, let busy ones finish. */
void relay_pool_stop(struct relay_pool *pool);
/* Shutdown deadline passed: abort what is still in flight (it stays queued). */
void relay_pool_abort(struct relay_pool *pool);
/* Closes the pool's handles once it is idle. */
void relay_pool_close(struct relay_pool *pool);
/* True when no session and no delivery record is in flight. */
bool relay_pool_idle(const struct relay_pool *pool);

/* The failure policy's retry step: when the attempt-th retry is due
 * (attempt >= 1), from [retry] schedule with jitter. Pure. */
int64_t relay_retry_delay_ms(const struct config_retry *r, unsigned attempt, unsigned random);

/* Reads a relay's secret (password_file, or $CREDENTIALS_DIRECTORY/<relay
 * name>); refuses a file that group or others may read. NULL with a reason. */
char *relay_read_secret(const struct config_relay *r, struct buf *reason);

#endif
