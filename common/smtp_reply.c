/*
 * Purpose: incremental SMTP reply parser (RFC 5321 4.2), enhanced status codes
 * (RFC 3463) and EHLO keywords (RFC 5321 4.1.1.1).
 * Owns: the partial line and the joined text of the reply being read, until a
 * complete reply is handed to the caller (who then owns its text).
 * Invariants: a line held in p->line never exceeds SMTP_REPLY_MAX_LINE + 1 bytes
 * (the +1 is a CR waiting for its LF); a returned reply has 200 <= code <= 599,
 * n_lines >= 1, and text without NUL or CR; the result does not depend on how
 * the bytes were split across calls.
 */
#include "common/smtp_reply.h"

#include <stdlib.h>
#include <string.h>

void smtp_reply_parser_init(struct smtp_reply_parser *p)
{
	buf_init(&p->line);
	buf_init(&p->text);
	memset(&p->cur, 0, sizeof(p->cur));
	p->error = NULL;
}

void smtp_reply_parser_deinit(struct smtp_reply_parser *p)
{
	buf_deinit(&p->line);
	buf_deinit(&p->text);
	memset(&p->cur, 0, sizeof(p->cur));
	p->error = NULL;
}

bool smtp_reply_parser_pending(const struct smtp_reply_parser *p)
{
	return p->line.len > 0 || p->cur.n_lines > 0;
}

void smtp_reply_deinit(struct smtp_reply *r)
{
	free(r->text);
	memset(r, 0, sizeof(*r));
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* Reads 1*3DIGIT at s[*i], as RFC 3463 subject and detail. Returns -1 when none. */
static int enh_number(const char *s, size_t n, size_t *i)
{
	int v = 0;
	size_t start = *i;
	while (*i < n && *i - start < 3 && is_digit(s[*i]))
		v = v * 10 + (s[(*i)++] - '0');
	return *i > start ? v : -1;
}

/*
 * RFC 3463 2:  status-code = class "." subject "." detail
 *              class       = "2" / "4" / "5"
 *              subject     = 1*3digit
 *              detail      = 1*3digit
 * Accepted at the start of the first line's text when followed by SP or the end
 * of the line, and only when the class agrees with the reply code (RFC 2034 3):
 * "250 5.0.0 ok" is ambiguous, so it reports no enhanced code at all.
 */
static void parse_enh(const char *s, size_t n, int code, struct smtp_reply *r)
{
	int klass = code / 100;
	size_t i = 2;
	if (klass == 3 || n < 5 || s[0] != '0' + klass || s[1] != '.')
		return;
	int subject = enh_number(s, n, &i);
	if (subject < 0 || i >= n || s[i] != '.')
		return;
	i++;
	int detail = enh_number(s, n, &i);
	if (detail < 0 || (i < n && s[i] != ' '))
		return;
	r->enh_class = klass;
	r->enh_subject = subject;
	r->enh_detail = detail;
}

/*
 * RFC 5321 4.2:
 *   Reply-line = *( Reply-code "-" [ textstring ] CRLF )
 *                   Reply-code [ SP textstring ] CRLF
 *   Reply-code = %x32-35 %x30-35 %x30-39
 * Handles one line held in p->line without its LF (a CR before it is stripped
 * here: CRLF and bare LF both end a line). Returns 1 when it was the last line, 0 for a
 * continuation, -1 with *error_r set.
 */
static int parse_line(struct smtp_reply_parser *p, const char **error_r)
{
	const char *s = p->line.data;
	size_t n = p->line.len;

	if (n > 0 && s[n - 1] == '\r')
		n--;
	if (n > SMTP_REPLY_MAX_LINE) {
		*error_r = "reply line too long";
		return -1;
	}
	if (n < 3) {
		*error_r = "reply line too short";
		return -1;
	}
	if (memchr(s, '\0', n) != NULL) {
		*error_r = "NUL byte in reply";
		return -1;
	}
	/* A lone CR is a line end to some readers and not to others: refuse it. */
	if (memchr(s, '\r', n) != NULL) {
		*error_r = "bare CR in reply";
		return -1;
	}
	/* Lenient on the second digit (0-9, not 0-5): some servers use 6-9. */
	if (s[0] < '2' || s[0] > '5' || !is_digit(s[1]) || !is_digit(s[2])) {
		*error_r = "invalid reply code";
		return -1;
	}
	int code = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
	bool last;
	if (n == 3 || s[3] == ' ')
		last = true;
	else if (s[3] == '-')
		last = false;
	else {
		*error_r = "invalid character after reply code";
		return -1;
	}
	if (p->cur.n_lines > 0 && code != p->cur.code) {
		*error_r = "reply code changed within a multi-line reply";
		return -1;
	}
	if (p->cur.n_lines >= SMTP_REPLY_MAX_LINES) {
		*error_r = "too many lines in reply";
		return -1;
	}

	const char *text = n > 4 ? s + 4 : "";
	size_t tlen = n > 4 ? n - 4 : 0;
	if (p->cur.n_lines == 0) {
		p->cur.code = code;
		parse_enh(text, tlen, code, &p->cur);
	} else {
		buf_putc(&p->text, '\n');
	}
	buf_append(&p->text, text, tlen);
	p->cur.n_lines++;
	return last ? 1 : 0;
}

/* On -1, *consumed_r counts the bytes taken before the error was seen. */
int smtp_reply_parse(struct smtp_reply_parser *p, const char *data, size_t len, size_t *consumed_r,
		     struct smtp_reply *reply_r, const char **error_r)
{
	size_t off = 0;

	*consumed_r = 0;
	if (p->error != NULL) {
		*error_r = p->error;
		return -1;
	}
	while (off < len) {
		const char *nl = memchr(data + off, '\n', len - off);
		size_t n = nl != NULL ? (size_t)(nl - (data + off)) : len - off;

		/* Checked before buffering, so a server that never ends its line
		 * cannot make us hold more than one line. */
		if (p->line.len + n > SMTP_REPLY_MAX_LINE + 1) {
			p->error = "reply line too long";
			goto fail;
		}
		buf_append(&p->line, data + off, n);
		off += n;
		if (nl == NULL)
			break;
		off++; /* the LF */

		int r = parse_line(p, &p->error);
		buf_clear(&p->line);
		if (r < 0)
			goto fail;
		if (r == 1) {
			reply_r->code = p->cur.code;
			reply_r->enh_class = p->cur.enh_class;
			reply_r->enh_subject = p->cur.enh_subject;
			reply_r->enh_detail = p->cur.enh_detail;
			reply_r->n_lines = p->cur.n_lines;
			reply_r->text = buf_steal(&p->text);
			memset(&p->cur, 0, sizeof(p->cur));
			*consumed_r = off;
			return 1;
		}
	}
	*consumed_r = off;
	return 0;
fail:
	*consumed_r = off;
	*error_r = p->error;
	return -1;
}

void smtp_reply_summary(const struct smtp_reply *r, struct buf *out)
{
	const char *t = r->text != NULL ? r->text : "";

	buf_printf(out, "%d", r->code);
	while (*t != '\0') {
		size_t n = strcspn(t, "\n");
		/* Empty lines (smtp-sink's final "250 ") would leave double spaces. */
		if (n > 0) {
			buf_putc(out, ' ');
			for (size_t i = 0; i < n; i++) {
				unsigned char c = (unsigned char)t[i];
				buf_putc(out, c < 0x20 || c == 0x7f ? '?' : (char)c);
			}
		}
		t += n;
		if (*t == '\n')
			t++;
	}
}

/* ASCII-only case-insensitive comparison of a token with a keyword (no locale). */
static bool tok_eq(const char *s, size_t n, const char *kw)
{
	size_t i;
	for (i = 0; i < n && kw[i] != '\0'; i++) {
		char c = s[i];
		if (c >= 'a' && c <= 'z')
			c = (char)(c - 'a' + 'A');
		if (c != kw[i])
			return false;
	}
	return i == n && kw[i] == '\0';
}

/* Next SP/HTAB-separated token in [*s, end); false when there is none. */
static bool next_token(const char **s, const char *end, const char **tok_r, size_t *len_r)
{
	const char *q = *s;
	while (q < end && (*q == ' ' || *q == '\t'))
		q++;
	const char *t = q;
	while (q < end && *q != ' ' && *q != '\t')
		q++;
	*s = q;
	*tok_r = t;
	*len_r = (size_t)(q - t);
	return q > t;
}

static unsigned auth_mech(const char *s, size_t n)
{
	if (tok_eq(s, n, "PLAIN"))
		return SMTP_AUTH_PLAIN;
	if (tok_eq(s, n, "LOGIN"))
		return SMTP_AUTH_LOGIN;
	if (tok_eq(s, n, "XOAUTH2"))
		return SMTP_AUTH_XOAUTH2;
	return 0;
}

/* RFC 1870: size-param = [1*DIGIT]; anything else (or overflow) reads as "no limit". */
static uint64_t parse_size(const char *s, size_t n)
{
	uint64_t v = 0;
	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit(s[i]) || v > (UINT64_MAX - 9) / 10)
			return 0;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	return v;
}

/*
 * RFC 5321 4.1.1.1:
 *   ehlo-ok-rsp = "250" SP Domain [ SP ehlo-greet ] CRLF
 *               / ( "250-" Domain [ SP ehlo-greet ] CRLF
 *                   *( "250-" ehlo-line CRLF )
 *                   "250" SP ehlo-line CRLF )
 *   ehlo-line   = ehlo-keyword *( SP ehlo-param )
 * Also the pre-RFC 4954 "AUTH=PLAIN LOGIN" line that old Microsoft clients needed.
 */
static void caps_line(const char *s, const char *end, struct smtp_caps *c)
{
	const char *kw, *tok;
	size_t kwlen, toklen;

	if (!next_token(&s, end, &kw, &kwlen))
		return; /* e.g. smtp-sink's empty last line */
	if (tok_eq(kw, kwlen, "PIPELINING"))
		c->pipelining = true;
	else if (tok_eq(kw, kwlen, "STARTTLS"))
		c->starttls = true;
	else if (tok_eq(kw, kwlen, "8BITMIME"))
		c->eightbitmime = true;
	else if (tok_eq(kw, kwlen, "SMTPUTF8"))
		c->smtputf8 = true;
	else if (tok_eq(kw, kwlen, "ENHANCEDSTATUSCODES"))
		c->enhancedstatuscodes = true;
	else if (tok_eq(kw, kwlen, "DSN"))
		c->dsn = true;
	else if (tok_eq(kw, kwlen, "CHUNKING"))
		c->chunking = true;
	else if (tok_eq(kw, kwlen, "SIZE")) {
		c->size_present = true;
		c->size = next_token(&s, end, &tok, &toklen) ? parse_size(tok, toklen) : 0;
	} else if (tok_eq(kw, kwlen, "AUTH")) {
		while (next_token(&s, end, &tok, &toklen))
			c->auth |= auth_mech(tok, toklen);
	} else if (kwlen >= 5 && tok_eq(kw, 5, "AUTH=")) {
		c->auth |= auth_mech(kw + 5, kwlen - 5);
		while (next_token(&s, end, &tok, &toklen))
			c->auth |= auth_mech(tok, toklen);
	}
}

void smtp_caps_parse(const struct smtp_reply *ehlo, struct smtp_caps *caps_r)
{
	memset(caps_r, 0, sizeof(*caps_r));
	/* A refused EHLO's text is an error message, not keywords. */
	if (ehlo->text == NULL || ehlo->code / 100 != 2)
		return;
	const char *s = strchr(ehlo->text, '\n');
	while (s != NULL) {
		s++;
		const char *end = strchr(s, '\n');
		caps_line(s, end != NULL ? end : s + strlen(s), caps_r);
		s = end;
	}
}
