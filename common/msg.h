/*
 * msg: RFC 5322 header scanning, address-list parsing and envelope derivation
 * for pickup files. Pure and synchronous: it sees bytes, never files.
 *
 * Envelope precedence (DESIGN.md "Pickup"): leading X-Sender:/X-Receiver:
 * lines (any case, folded, display names, RFC 2047 words, DSN parameters;
 * only before the first other header) give the envelope and are skipped on
 * the wire. Otherwise the sender is Sender:, else From:, and the recipients
 * are To:, Cc:, Bcc:. Recipients are de-duplicated, the first spelling kept:
 * by default the whole address is compared without regard to ASCII case
 * (a@x.com = A@X.COM), as IIS, Exchange and the big mailbox providers treat
 * them; with exact_local_part only the domain is (RFC 5321 2.4). With a map
 * (common/addrmap.h), each envelope address is rewritten first and a bare
 * local part ("root") is an address the map may qualify. Bcc: fields are
 * always skipped on the wire.
 *
 * Date: and Message-ID: are checked (RFC 5322 3.3 with the obsolete forms of
 * 4.3; 3.6.4): when no field of that name is valid (empty, unparseable), each
 * one is renamed X-Original-Date: / X-Original-Message-ID: on the wire and
 * the caller adds a fresh one, as Exchange's pickup does.
 */
#ifndef PICKUPD_MSG_H
#define PICKUPD_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

struct addrmap;

#define MSG_MAX_ADDR	 254 /* octets of an addr-spec, RFC 5321 4.5.3.1.3 path minus brackets */
#define MSG_MAX_BOUNDARY 70  /* octets of a MIME boundary, RFC 2046 5.1.1 */

struct msg_addr {
	char *addr; /* addr-spec "local@domain" (local part may be quoted); "" = null sender */
	/* DSN parameters from X-Sender (RET=, ENVID=) or X-Receiver (NOTIFY=, ORCPT=),
	 * "KEYWORD=value" space-separated, keyword upper-cased, value validated
	 * (RFC 3461 syntax, xtext); other parameters (BODY=, AUTH=, ...) are checked
	 * as esmtp-param and dropped. NULL if none. */
	char *params;
};

struct msg_range {
	size_t off;
	size_t len;
};

/* A field sent under another name: the field (its folded lines and line
 * ending included) is replaced by "to:" and the value, byte for byte. */
struct msg_rename {
	struct msg_range field; /* the whole field */
	struct msg_range value; /* after the colon, to the end of its last line's content */
	const char *to;		/* static: "X-Original-Date", "X-Original-Message-ID" */
};

struct msg_scan_opts {
	/* bytes of header section (BOM and envelope lines included); 0 = no limit */
	size_t max_header_size;
	unsigned max_recipients; /* distinct recipients; 0 = no limit */
	bool exact_local_part;	 /* de-duplicate comparing local parts with case */
	/* [submit] rewrite of envelope addresses, before de-duplication; with it a
	 * bare local part ("root") is an address for the map to qualify. NULL = as
	 * written. */
	const struct addrmap *map;
};

struct msg_info {
	struct msg_addr sender;
	struct msg_addr *rcpts; /* in the order written (X-Receiver lines, else To/Cc/Bcc fields) */
	size_t n_rcpts;		/* >= 1 */
	bool envelope_from_xheaders; /* a leading X-Sender/X-Receiver block was used */
	/* Byte ranges of the input to drop when sending, sorted, disjoint, merged
	 * when adjacent, within [0, header_end]: a UTF-8 BOM, the envelope block
	 * and every Bcc: field (each with its folded lines and line ending). */
	struct msg_range *skips;
	size_t n_skips;
	size_t headers_start; /* first byte after the BOM and the envelope block */
	size_t header_end;    /* first byte of the body (just past the empty line), or the
				 end of input when the message has no body */
	bool has_body_separator;
	bool has_date;	     /* a valid Date: field exists (name in any case) */
	bool has_message_id; /* a valid Message-ID: field exists (name in any case) */
	/* Date:/Message-ID: fields to rename X-Original-...: every field of that
	 * name when none is valid; in field order, disjoint from the skips. */
	struct msg_rename *renames;
	size_t n_renames;
	/* The boundary of the outermost multipart (Content-Type: multipart/...;
	 * boundary=...), "" when the message is not multipart, names none, or
	 * names one over MSG_MAX_BOUNDARY octets (then it is not checked). */
	char mime_boundary[MSG_MAX_BOUNDARY + 1];
	/* The transmitted header will name no recipient: add "To: undisclosed-recipients:;".
	 * Recipients from headers: a Bcc: field and no To:/Cc: field. Recipients from
	 * X-Receiver: no To:/Cc: field at all (Bcc: or not), since the visible
	 * header then has no recipients whatever the envelope says. */
	bool needs_undisclosed;
	bool needs_smtputf8;   /* an envelope address is not ASCII */
	bool eightbit_headers; /* a byte >= 0x80 in a header field that is transmitted */
};

/*
 * Scans the header section at the start of data[0..len). at_eof says whether
 * len is the whole file (otherwise the header section must end within len).
 * Returns 0 with *info_r filled (free with msg_info_deinit), or -1 with one
 * human-readable line appended to reason ("no recipients", "header section
 * over 65536 bytes", "control character in address in X-Receiver line 3", ...)
 * and *info_r zeroed. Line numbers count from 1 at the start of the file.
 */
int msg_scan(const char *data, size_t len, bool at_eof, const struct msg_scan_opts *opts,
	     struct msg_info *info_r, struct buf *reason);
void msg_info_deinit(struct msg_info *info);

/*
 * Parses an RFC 5322 address-list (3.4) from an unfolded field body: mailboxes,
 * groups ("undisclosed-recipients:;"), quoted display names with commas,
 * comments, and the obsolete forms real mailers write (obs-route, empty list
 * elements). Appends each addr-spec to *list_r and *n_r: CFWS removed, an
 * obs-route dropped, the local part in its RFC 5321 form ("a b".c@d becomes
 * "a b.c"@d, "x"@d becomes x@d). Refuses control characters, addresses
 * without '@' and addresses over MSG_MAX_ADDR. Returns 0, or -1 with a reason
 * appended and the list unchanged.
 */
int msg_parse_address_list(const char *s, size_t len, struct msg_addr **list_r, size_t *n_r,
			   struct buf *reason);

/* Checks an addr-spec is safe in an SMTP command: Dot-string or Quoted-string
 * "@" dot-atom or [literal]; no CTL, SP only inside a quoted local part, within
 * MSG_MAX_ADDR; UTF-8 allowed. "" (the null path) is valid. Returns 0 or -1. */
int msg_addr_valid(const char *addr);

/* Checks an unfolded Date: field body: RFC 5322 3.3 date-time, the obsolete
 * forms of 4.3 included (two- and three-digit years, zone names and military
 * letters, comments, no seconds), plus "UTC" (as common as "UT"). The weekday,
 * when present, is not checked against the date. Returns 0 with the time in
 * *unix_r (may be NULL), or -1. */
int msg_parse_date(const char *s, size_t len, int64_t *unix_r);

/* Checks an unfolded Message-ID: field body: exactly one msg-id, RFC 5322
 * 3.6.4 with the obsolete forms ("<" local-part "@" domain ">", CFWS around).
 * Returns 0 or -1. */
int msg_msgid_valid(const char *s, size_t len);

/* Appends unix_seconds as an RFC 5322 date-time in UTC ("Mon, 23 Nov 2026 09:23:04 +0000");
 * times outside years 1970-9999 give the epoch. */
void msg_format_date(int64_t unix_seconds, struct buf *out);

#endif
