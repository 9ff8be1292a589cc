/*
 * secret: a relay's password file (or $CREDENTIALS_DIRECTORY/<relay name>),
 * read under the ssh rule: a regular file, not a link, that only its owner
 * can read, owned by root or the daemon's user, in directories that no one
 * else may write to (sticky ones excepted). Shared by the daemon, its config
 * check and pickupctl test-relay.
 */
#ifndef PICKUPD_SECRET_H
#define PICKUPD_SECRET_H

#include "common/buf.h"
#include "common/config.h"

#define SECRET_FP_LEN 32

/* The secret without its trailing newline (free after OPENSSL_cleanse), or
 * NULL with a reason naming the file appended. */
char *secret_read_file(const struct config_relay *r, struct buf *reason);

/* What an smtpc session starts with (smtpc_params.secret): the secret file's
 * content, or "" when password_command gives it (smtpc runs the command
 * when it is about to authenticate, and again when a token is refused).
 * NULL with "relay NAME: reason" appended. */
char *secret_for_session(const struct config_relay *r, struct buf *reason);

/* A digest of the secret file's content and metadata (or of its absence):
 * it differs once an operator has changed, touched, chmod-ed or replaced
 * the file. Reveals nothing of the secret. */
void secret_file_fingerprint(const struct config_relay *r, unsigned char fp[SECRET_FP_LEN]);

#endif
