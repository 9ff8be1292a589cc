/*
 * smtp_reply: incremental parser for SMTP replies (RFC 5321 4.2), multi-line
 * replies, enhanced status codes (RFC 2034/3463), and EHLO keywords.
 *
 *   Reply-line = *( Reply-code "-" [ textstring ] CRLF )
 *                   Reply-code [ SP textstring ] CRLF
 *
 * Lenient where real servers are sloppy (a bare LF ends a line, "250" with no
 * text, a last line "250 " with empty text), strict where ambiguity is
 * dangerous (codes must agree across lines, only digits 2-5 first, bounded
 * line length and line count).
 */
#ifndef PICKUPD_SMTP_REPLY_H
#define PICKUPD_SMTP_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define SMTP_REPLY_MAX_LINE  4096 /* longer lines are an error (RFC says 512) */
#define SMTP_REPLY_MAX_LINES 256

struct smtp_reply {
	int code;      /* 200..599 */
	int enh_class; /* enhanced status code x.y.z of the first line; 0 when absent */
	int enh_subject;
	int enh_detail;
	char *text; /* each line's text after "NNN-"/"NNN ", joined by '\n'; never NULL
		       once parsed; the enhanced code stays in the text */
	size_t n_lines;
};

struct smtp_reply_parser {
	struct buf line;       /* partial line carried between feeds */
	struct smtp_reply cur; /* code, enh and n_lines of the reply being read */
	struct buf text;
	const char *error; /* sticky after -1: later calls fail the same way until deinit+init */
};

void smtp_reply_parser_init(struct smtp_reply_parser *p);
void smtp_reply_parser_deinit(struct smtp_reply_parser *p);

/*
 * Feeds len bytes. Returns 1 when a complete reply is stored in *reply_r (the
 * caller owns it: smtp_reply_deinit) and *consumed_r bytes of data were used
 * (the rest belongs to the next reply); 0 when all bytes were consumed and more
 * are needed; -1 on a malformed reply with *error_r set (the parser must then
 * be reset with deinit+init before reuse; until then it keeps returning -1).
 * *reply_r is written only when 1 is returned.
 */
int smtp_reply_parse(struct smtp_reply_parser *p, const char *data, size_t len, size_t *consumed_r,
		     struct smtp_reply *reply_r, const char **error_r);
/* True when the parser holds a partial reply (bytes after a reply that have no end yet). */
bool smtp_reply_parser_pending(const struct smtp_reply_parser *p);

void smtp_reply_deinit(struct smtp_reply *r);
/* "250 2.0.0 ok" form for logs and envelope files: code, a space, the lines
 * joined by ' ', control characters replaced by '?'. Appends to out. */
void smtp_reply_summary(const struct smtp_reply *r, struct buf *out);

/* EHLO capabilities (RFC 5321 4.1.1.1 ehlo-line keywords, case-insensitive). */
enum {
	SMTP_AUTH_PLAIN = 1 << 0,
	SMTP_AUTH_LOGIN = 1 << 1,
	SMTP_AUTH_XOAUTH2 = 1 << 2,
};

struct smtp_caps {
	bool pipelining;
	bool starttls;
	bool eightbitmime;
	bool smtputf8;
	bool enhancedstatuscodes;
	bool dsn;
	bool chunking;
	bool size_present;
	uint64_t size; /* 0 = no limit announced */
	unsigned auth; /* SMTP_AUTH_* bits */
};

/* Reads the keywords of an EHLO reply (the first line is the greeting, skipped). */
void smtp_caps_parse(const struct smtp_reply *ehlo, struct smtp_caps *caps_r);

#endif
