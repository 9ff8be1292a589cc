/*
 * testrelay: the engine of `pickupctl test-relay [NAME]`. Connects to a
 * relay the way the daemon would (conn.c: same TLS context, verification,
 * SNI), and prints each step with the server's own words: connect, banner,
 * EHLO, STARTTLS with the certificate's subject, issuer, expiry and
 * verification result, EHLO again, AUTH, QUIT. Sends no mail.
 * Owner: pickupctl (a short-lived program with its own libuv loop).
 */
#ifndef PICKUPD_TESTRELAY_H
#define PICKUPD_TESTRELAY_H

#include <stdio.h>

#include "common/config.h"

/* Runs the check against [relay NAME] (NULL = the first relay). Returns 0
 * when every step passed, non-zero at the first failing step, after printing
 * what failed and a hint. */
int testrelay_run(const struct config *cfg, const char *relay_name, FILE *out);

#endif
