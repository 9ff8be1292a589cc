/*
 * wire: the one filter every message body passes through on its way to the
 * SMTP server. It turns any input bytes into valid DATA content:
 *   - line endings normalised to CRLF (CRLF and bare LF end a line; a lone CR
 *     becomes a space, like Postfix's cleanup_replace_stray_cr_lf);
 *   - dot-stuffing (RFC 5321 4.5.2); with input_dot_stuffed the input's own
 *     stuffing is undone first (one leading '.' removed), then stuffed again;
 *   - lines longer than 998 octets folded by inserting CRLF SP;
 *   - edits: byte ranges of the input skipped (envelope lines, Bcc:) and text
 *     inserted at input offsets (Received:, Date:, Message-ID:);
 *   - wire_filter_finish ends the last line if needed and appends ".\r\n".
 * Invariant (fuzzed): whatever the input and however it is split into
 * chunks, the output has no bare CR or LF, no line over 1000 octets with its
 * CRLF, and no "\r\n.\r\n" before the final one.
 *
 * Precisely, the filter works on the "logical stream": the input with the
 * skip ranges removed and the insert texts spliced in, as if one byte string.
 * So a CR just before an edit pairs with an LF at the start of the insert or
 * after the skipped range, and skipping a whole line at a line start leaves a
 * line start. Un-stuffing (input_dot_stuffed) drops a '.' only if it is an
 * input byte (never inserted text) and the first byte of a logical line; so in
 * that mode a "." line becomes an empty line; pickup never hands one over
 * (ingest refuses a premature one and skips a final one, common/msgbody.h).
 * Edits past the end of input
 * apply at finish (their inserts are emitted, their skips are void).
 * The output ends "\r\n.\r\n", or is exactly ".\r\n" when the content is
 * empty (empty input, or nothing left after skips and un-stuffing).
 */
#ifndef PICKUPD_WIRE_H
#define PICKUPD_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define WIRE_MAX_LINE 998

struct wire_edit {
	uint64_t offset;    /* input offset where the edit applies */
	const char *insert; /* text emitted before the input byte at offset (may be NULL);
			       it passes through the same normalisation */
	size_t insert_len;
	uint64_t skip; /* then this many input bytes are dropped */
};

struct wire_filter {
	const struct wire_edit *edits; /* sorted by offset, non-overlapping; not owned */
	size_t n_edits;
	size_t next_edit;
	uint64_t in_off;   /* input bytes seen so far */
	uint64_t skipping; /* input bytes still to drop */
	bool input_dot_stuffed;
	bool at_line_start; /* no byte of this logical line seen yet (for un-stuffing) */
	bool pending_cr;    /* a CR seen at the end of the previous chunk */
	size_t out_col;	    /* octets on the current output line */
	/* statistics for logs */
	uint64_t lines_folded;
	uint64_t stray_cr;
	uint64_t eightbit;
};

void wire_filter_init(struct wire_filter *f, const struct wire_edit *edits, size_t n_edits,
		      bool input_dot_stuffed);
/* Filters len input bytes, appending the output to out. */
void wire_filter_feed(struct wire_filter *f, const char *in, size_t len, struct buf *out);
/* The longest prefix of in[0..len) that the filter would copy to its output
 * unchanged (no edit due within it, no CR/LF to normalise, no '.' to stuff or
 * un-stuff, no line to fold): the filter moves over it as wire_filter_feed
 * would, and the caller sends in[0..k) itself, without a copy, then feeds
 * the rest. 0 when nothing can be taken (e.g. an edit is due). */
size_t wire_filter_verbatim(struct wire_filter *f, const char *in, size_t len);
/* The next n input octets, which wire_clean found to be verbatim from a
 * line start to a line end, go to the wire as they are, sent by the caller
 * (sendfile, say) without passing through the filter: the filter moves over
 * them unread. false, and nothing changes, unless the filter is at a line
 * start with nothing pending or being skipped and no edit due before the
 * end of the n octets. */
bool wire_filter_pass(struct wire_filter *f, uint64_t n);
/* Ends the content: applies the edits at the end offset (an insert starting
 * with LF completes a pending CR), turns a still-pending CR into a space,
 * ends a non-empty last line with CRLF, appends ".\r\n". The filter must not
 * be fed afterwards; it holds no memory, so there is nothing to free. */
void wire_filter_finish(struct wire_filter *f, struct buf *out);

/*
 * wire_clean: where the content from a line start on can go to the wire
 * unchanged, found by ingest's one pass over a large file so that sending it
 * needs no scan and no copy. Fed the whole file in order, in chunks of any
 * size; the result is [from, to): the longest run from `from` of whole
 * lines the filter would copy unchanged (CRLF line ends only, no line over
 * WIRE_MAX_LINE octets, no '.' at a line start), to just after the last
 * CRLF in it. to == from when there is none.
 */
struct wire_clean {
	uint64_t from, to;
	uint64_t off;	 /* octets fed */
	size_t col;	 /* octets after the last line end taken */
	bool pending_cr; /* the last chunk ended with a CR, taken only with its LF */
	bool done;	 /* the run has ended */
};

void wire_clean_init(struct wire_clean *w, uint64_t from);
void wire_clean_feed(struct wire_clean *w, const char *p, size_t n);

#endif
