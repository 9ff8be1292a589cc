/*
 * esc: the one escaping of outside text (file names, addresses, server
 * replies) for places a person reads: log lines and envelope files.
 * Valid UTF-8 text passes unchanged; every byte that could mislead a reader
 * or a terminal becomes "\xHH" (upper-case hex): C0 controls, DEL, the
 * backslash itself (so the form is unambiguous and reversible), C1 controls,
 * the Unicode line separators and bidirectional overrides, and each byte of
 * an invalid UTF-8 sequence.
 */
#ifndef PICKUPD_ESC_H
#define PICKUPD_ESC_H

#include <stddef.h>

#include "common/buf.h"

/* Length of the valid UTF-8 sequence at s (n bytes available), or 0. */
size_t esc_utf8_len(const unsigned char *s, size_t n);

/* Appends the escaped form of s[0..len) to out. */
void esc_append(struct buf *out, const char *s, size_t len);

/* The escaped form of s[0..len) into dst (capacity cap, NUL-terminated),
 * cut at a character boundary; returns the length written. */
size_t esc_copy(char *dst, size_t cap, const char *s, size_t len);

#endif
