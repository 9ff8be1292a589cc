/*
 * bounce: delivery status notifications (RFC 3464 multipart/report) from the
 * null sender to a message's envelope sender: "failed" for recipients that
 * failed for good, "delayed" for a delay warning. Runs on a pool thread
 * (it reads the original headers and writes durably).
 */
#ifndef PICKUPD_BOUNCE_H
#define PICKUPD_BOUNCE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/config.h"
#include "spool/spool.h"

enum bounce_kind { BOUNCE_FAILED, BOUNCE_DELAYED };

/* Builds the report's content. Pure apart from reading the original headers
 * (headers may be NULL: no text/rfc822-headers part then). retry_until_ms:
 * when a delayed message will be given up (Will-Retry-Until); 0 = never. */
void bounce_build(const struct spool_env *env, enum bounce_kind kind, const char *hostname,
		  const char *bounce_id, int64_t now_ms, int64_t retry_until_ms,
		  const char *headers, size_t headers_len, struct buf *out);

/* RFC 3463 status of a recipient's reply ("550 5.1.1 ..." -> "5.1.1"), else
 * from the opening of a reason pickupd wrote itself, else "KLASS.0.0". The
 * class (2, 4 or 5) is the outcome's: a reply's own class is overridden. */
void bounce_status(const char *reply, int klass, char *out, size_t len);

/* True for a report pickupd made (bounce_queue), not mail from a writer. */
bool bounce_is_notification(const struct spool_env *env);

/*
 * Queues a report about env: content into data/, envelope into queue/ (or
 * deferred/ when due_ms is in the future: bounces are rate limited). 0 with
 * the new ID, or -1 (errno; EINVAL for a message from <>, which is never
 * reported on: the report would go nowhere, or loop).
 */
int bounce_queue(struct spool *sp, const struct config *cfg, const struct spool_env *env,
		 enum bounce_kind kind, int64_t now_ms, int64_t due_ms,
		 char id_r[SPOOL_ID_LEN + 1]);

#endif
