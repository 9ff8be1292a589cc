/*
 * ctl_json: the JSON pieces of the operator tools' --json output, through
 * jansson (pickupctl; `list` also for ctl_list.c). The daemon does not
 * link this. Schema (README, pickupctl section, has the long form):
 *
 * pickupctl --json (one document on stdout per run; strings are UTF-8, a
 * byte that is not part of valid UTF-8 becomes U+FFFD; times are ISO 8601
 * UTC "2026-11-23T10:00:00.123Z" or null):
 *   status   {"daemon": {"running": bool, and when running: "pid", "version",
 *             "stopping", "scheduled", "sessions", "relays": [{"name",
 *             "sessions", "paused", "paused_seconds", "concurrency_limit",
 *             "max_sessions"}]}, "counts": {STATE: N},
 *             "oldest_id", "oldest_age_seconds", "deferred_reasons": [{"reply",
 *             "messages"}], "pickup_stuck": [{"pickup", "dir", "error",
 *             "stuck_after_seconds", "files", "reasons": {"unreadable"|
 *             "unmatched"|"old"|"not_regular": {"count", "examples": [NAME]}}}]}
 *   list     [MESSAGE] where MESSAGE is {"id", "state", "arrival", "size",
 *             "sender", "recipients": [{"address", "status", "reply"}],
 *             "attempts", "next_attempt", "last_reply", "reason", "pickup",
 *             "file"}, or {"id", "state", "error"} for an unreadable envelope
 *   show     MESSAGE plus "headers": [LINE]
 *   summary  {"state": STATE|null, "bucket_minutes": [5, ..., 1280], "total":
 *             ROW, "domains": [ROW]} where ROW is {"domain", "total",
 *             "buckets": [N x 10]} (the last bucket: older than 1280 minutes)
 *   retry, hold, release, delete, requeue, purge
 *            {"command", "via": "daemon"|"spool", "results": [{"id", "result":
 *             "ok"|"error"|"busy", "message"}], "ok", "failed", "busy"}; purge
 *             adds "older_than_seconds" and "bytes" (content removed)
 *   flush    {"command": "flush", "via", "result", "message", "messages"}
 *   test-relay {"command": "test-relay", "relay", "ok", "exit_status",
 *             "transcript": [LINE]}
 */
#ifndef PICKUPD_CTL_JSON_H
#define PICKUPD_CTL_JSON_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

#include "spool/spool.h"

/* A JSON string of outside text (file names, addresses, server replies):
 * each byte that is not part of a valid UTF-8 sequence becomes U+FFFD.
 * NULL -> null. */
json_t *ctl_json_str(const char *s);
/* ISO 8601 UTC with milliseconds ("2026-11-23T10:00:00.123Z"), null for 0. */
json_t *ctl_json_time(int64_t ms);
/* A message as list and show print it: {"id", "state", "arrival", "size",
 * "sender", "recipients": [{"address", "status", "reply"}], "attempts",
 * "next_attempt", "last_reply", "reason", "pickup", "file"}. */
json_t *ctl_json_env(const struct spool_env *e, enum spool_state st);
/* Prints the document on one line and frees it. */
void ctl_json_print(FILE *out, json_t *doc);

#endif
