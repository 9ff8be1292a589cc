/*
 * metrics: the Prometheus endpoint. When [metrics] listen = HOST:PORT is
 * set, a small HTTP/1.0 server on the loop answers GET /metrics with the
 * text exposition format (version 0.0.4):
 *
 *   pickupd_up 1
 *   pickupd_queue_messages{state="queue|deferred|hold|badmail"}
 *   pickupd_queue_oldest_seconds       age of the oldest queued or deferred message
 *   pickupd_delivered_total            recipients accepted by a relay
 *   pickupd_deferred_total             recipient deferrals
 *   pickupd_bounced_total              recipients failed for good
 *   pickupd_refused_total              pickup files refused into badmail
 *   pickupd_sessions_opened_total      SMTP sessions started
 *   pickupd_sessions_open
 *   pickupd_relay_sessions{relay="NAME"}
 *   pickupd_relay_paused{relay="NAME"} 1 while the relay is paused
 *   pickupd_badmail_entries            entries in badmail/
 *   pickupd_badmail_bytes              their content bytes
 *   pickupd_badmail_expired_total      entries removed by [badmail] keep
 *   pickupd_pickup_stuck_files{pickup="NAME",reason="unreadable|unmatched|old|not_regular"}
 *                                      files that stay in a pickup folder
 *
 * Queue counts, badmail sizes and the pickup folders' stuck files are read
 * on the thread pool at each scrape. Owner of struct metrics: main.c.
 */
#ifndef PICKUPD_METRICS_H
#define PICKUPD_METRICS_H

#include <stdbool.h>

#include <sys/socket.h>

#include "common/buf.h"
#include "daemon/core/pickupd.h"

/* NULL without error when [metrics] listen is empty; NULL with a line in
 * errors when the address is bad or cannot be bound. */
struct metrics *metrics_start(struct pickupd *pd, struct buf *errors);
/* Shutdown: stops listening and closes the clients (a scrape in flight
 * finishes first); then cb(arg) runs, once. */
void metrics_close(struct metrics *m, pickupd_closed_cb cb, void *arg);
void metrics_free(struct metrics *m);

/* The addresses [metrics] listen stands for (config_parse_listen), in the
 * order to try: the address written, a name's first address (resolved here:
 * blocking, so at start-up and in the config check only), or for :PORT [::]
 * then 0.0.0.0. Returns how many (at most max, which is at least 2), or -1
 * with a line in errors. Used by the listener and preflight alike. */
int metrics_addrs(const char *listen, struct sockaddr_storage *v, size_t max, struct buf *errors);

#endif
