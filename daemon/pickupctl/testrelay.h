/*
 * testrelay: the engine of `pickupctl test-relay [NAME]`. Runs the daemon's
 * own SMTP client (smtpc) as a probe against a relay: connect, banner, EHLO
 * (HELO when the server speaks no ESMTP), STARTTLS with the certificate's
 * subject, issuer, expiry and verification result, EHLO again, AUTH, QUIT,
 * printing each step with the server's own words. Sends no mail.
 * Owner: pickupctl (a short-lived program with its own libuv loop).
 */
#ifndef PICKUPD_TESTRELAY_H
#define PICKUPD_TESTRELAY_H

#include <stdio.h>

#include "common/config.h"

/* Runs the check against [relay NAME] (NULL = the first relay). Returns 0
 * when every step passed (the daemon would send), 1 at the first failing
 * step, after printing what failed, the failure class as the daemon names
 * it ("result    FAILED (auth)") and a hint; 2 when there is no such relay. */
int testrelay_run(const struct config *cfg, const char *relay_name, FILE *out);

#endif
