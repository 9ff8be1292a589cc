/*
 * msgbody: the checks that need the whole content of a pickup file, done in
 * one streaming pass in bounded memory (a 35 MB message is read in chunks and
 * never held): NUL and 8-bit bytes, lone "." lines of a dot-stuffed file, and
 * the close delimiter of the outermost multipart. Pure and synchronous.
 *
 * Lines end with LF or CRLF, as on the wire (common/wire.h); a CR elsewhere
 * is content. Line numbers count from 1 at the start of the file.
 *
 *  - dot_stuffed: in an IIS-era stuffed file a line holding just "." is the
 *    end-of-data marker. Followed by nothing but empty lines it ends the
 *    message (dot_off: the caller drops it and what follows); followed by
 *    any other line it is premature, and the file is refused.
 *  - MIME (RFC 2046 5.1.1): when the header names a multipart boundary, the
 *    body must hold the close delimiter "--boundary--" at a line start
 *    (transport padding of SP/HT allowed after it), else the message is
 *    truncated (a writer died mid-write and its file was closed anyway).
 *    Only the outermost multipart is checked.
 */
#ifndef PICKUPD_MSGBODY_H
#define PICKUPD_MSGBODY_H

#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/msg.h"

struct msgbody {
	/* set by msgbody_init */
	uint64_t body_start; /* lines starting before this offset are header lines */
	bool dot_stuffed;
	char delim[MSG_MAX_BOUNDARY + 5]; /* "--boundary--"; "" = no MIME check */
	size_t delim_len;
	/* results, final after msgbody_finish */
	int64_t nul_at;	    /* offset of the first NUL byte, or -1 */
	bool eightbit;	    /* a byte >= 0x80 */
	int64_t dot_off;    /* offset of the first lone "." body line (dot_stuffed), or -1 */
	uint64_t dot_line;  /* its line number */
	bool dot_premature; /* a non-empty line follows it */
	bool mime_closed;   /* the close delimiter was seen (or there is no boundary) */
	/* line state carried between chunks: O(1) */
	uint64_t off;			   /* bytes fed */
	uint64_t line;			   /* number of the current line */
	uint64_t line_start;		   /* its offset */
	size_t line_len;		   /* its bytes so far */
	char prefix[MSG_MAX_BOUNDARY + 5]; /* its first bytes (up to delim_len, at least 1) */
	bool tail_bad;			   /* a byte past the prefix that is not padding */
	bool tail_cr;			   /* the last byte past the prefix was a CR */
	bool last_cr;			   /* the last byte of the line so far was a CR */
	bool in_dull;			   /* in a line that cannot matter (skipped to its LF) */
};

/* info: the scan of the same file (header_end, mime_boundary). */
void msgbody_init(struct msgbody *b, const struct msg_info *info, bool dot_stuffed);
/* Feeds the next n bytes of the file (from offset 0, in order). */
void msgbody_feed(struct msgbody *b, const char *p, size_t n);
/* Ends the content. Returns 0, or -1 with one line appended to reason: "NUL
 * byte at offset N", "premature end-of-data marker ('.' line) at line N",
 * "truncated MIME (no closing boundary)". */
int msgbody_finish(struct msgbody *b, struct buf *reason);

#endif
