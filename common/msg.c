/*
 * Purpose: read the header section of a pickup file and derive the SMTP
 * envelope from it; judge its Date: and Message-ID: fields and find the
 * outermost multipart boundary (msg.h; DESIGN.md "Pickup";
 * research/pickup-compat.md).
 * Owns: nothing beyond the msg_info it fills; input bytes are never modified.
 * Invariants: every address handed out passes msg_addr_valid() (no CTL, no
 * SP outside a quoted local part, at most MSG_MAX_ADDR octets), so it can be
 * put into MAIL FROM/RCPT TO as is; skips are sorted, disjoint, merged when
 * adjacent, and lie within [0, header_end]. Error reasons are one line of
 * printable ASCII that never echoes input bytes.
 */
#include "common/msg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/addrmap.h"

/* ---- small character helpers (no <ctype.h>: it follows the locale) ---- */

static bool is_wsp(unsigned char c)
{
	return c == ' ' || c == '\t';
}

static bool is_alnum(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* A control character as far as an address is concerned (HT is WSP). */
static bool is_ctl(unsigned char c)
{
	return (c < 0x20 && c != '\t') || c == 0x7f;
}

/*
 * atext = ALPHA / DIGIT / "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" /
 *         "/" / "=" / "?" / "^" / "_" / "`" / "{" / "|" / "}" / "~"
 * plus UTF-8 octets (RFC 6532 3.2).
 */
static bool is_atext(unsigned char c)
{
	return c >= 0x80 || is_alnum(c) || (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* dtext = %d33-90 / %d94-126 (RFC 5322 3.4.1; obs-dtext not accepted). */
static bool is_dtext(unsigned char c)
{
	return (c >= 33 && c <= 90) || (c >= 94 && c <= 126);
}

/* token := 1*<any CHAR except SPACE, CTLs, or tspecials> (RFC 2045 5.1) */
static bool is_token_char(unsigned char c)
{
	return c > 32 && c < 127 && strchr("()<>@,;:\\\"/[]?=", c) == NULL;
}

static unsigned char ascii_lower(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

static bool ascii_ieq(const char *a, size_t alen, const char *b)
{
	size_t blen = strlen(b);
	if (alen != blen)
		return false;
	for (size_t i = 0; i < alen; i++)
		if (ascii_lower(a[i]) != ascii_lower(b[i]))
			return false;
	return true;
}

/* Describes a byte for an error message without echoing control or 8-bit bytes. */
static void put_byte_desc(struct buf *b, unsigned char c)
{
	if (c > 32 && c < 127)
		buf_printf(b, "'%c'", c);
	else
		buf_printf(b, "byte 0x%02x", c);
}

/* ---- addr-spec check (RFC 5321 4.1.2 Mailbox, RFC 6531 UTF-8) ---- */

/*
 * Mailbox        = Local-part "@" ( Domain / address-literal )
 * Local-part     = Dot-string / Quoted-string
 * Dot-string     = Atom *("." Atom)
 * Quoted-string  = DQUOTE *QcontentSMTP DQUOTE
 * QcontentSMTP   = qtextSMTP / quoted-pairSMTP ; quoted-pairSMTP = "\" %d32-126
 * Domain is accepted as RFC 5322 dot-atom (safe in a command; the relay judges it).
 */
int msg_addr_valid(const char *addr)
{
	const unsigned char *p = (const unsigned char *)addr;
	size_t n = strlen(addr);

	if (n == 0)
		return 0; /* the null reverse-path <> */
	if (n > MSG_MAX_ADDR)
		return -1;
	if (*p == '"') {
		for (p++; *p != '"'; p++) {
			if (*p == '\\') {
				p++;
				if (*p < 32 || *p > 126)
					return -1;
			} else if (*p == '\0' || is_ctl(*p)) {
				return -1;
			}
		}
		p++;
	} else {
		for (;;) {
			if (!is_atext(*p))
				return -1;
			while (is_atext(*p))
				p++;
			if (*p != '.')
				break;
			p++;
		}
	}
	if (*p++ != '@')
		return -1;
	if (*p == '[') {
		for (p++; *p != ']'; p++)
			if (!is_dtext(*p))
				return -1;
		p++;
	} else {
		for (;;) {
			if (!is_atext(*p))
				return -1;
			while (is_atext(*p))
				p++;
			if (*p != '.')
				break;
			p++;
		}
	}
	return *p == '\0' ? 0 : -1;
}

/* ---- lexer for RFC 5322 3.2 tokens, with CFWS skipped ---- */

enum tok_type { TOK_END, TOK_ATOM, TOK_QSTR, TOK_DLIT, TOK_SPECIAL };

struct tok {
	enum tok_type type;
	char c;	    /* TOK_SPECIAL: one of < > @ , : ; . */
	size_t off; /* raw span in the input; quotes and brackets included */
	size_t len;
};

struct lexer {
	const char *s;
	size_t len;
	size_t pos;
	struct buf *err;
	bool bare_ok; /* a local part without "@domain" is an address (for addrmap) */
};

/*
 * CFWS    = (1*([FWS] comment) [FWS]) / FWS
 * comment = "(" *([FWS] ccontent) [FWS] ")" ; ccontent = ctext / quoted-pair / comment
 * Input is already unfolded, so FWS is a run of WSP.
 */
static int skip_cfws(struct lexer *lx)
{
	while (lx->pos < lx->len) {
		char c = lx->s[lx->pos];
		if (is_wsp(c)) {
			lx->pos++;
			continue;
		}
		if (c != '(')
			break;
		size_t depth = 0;
		do {
			c = lx->s[lx->pos];
			if (c == '\\') {
				lx->pos += 2;
				continue;
			}
			if (c == '(')
				depth++;
			else if (c == ')')
				depth--;
			lx->pos++;
		} while (depth > 0 && lx->pos < lx->len);
		if (depth > 0 || lx->pos > lx->len) {
			buf_puts(lx->err, "unterminated comment");
			return -1;
		}
	}
	return 0;
}

/*
 * quoted-string  = [CFWS] DQUOTE *([FWS] qcontent) [FWS] DQUOTE [CFWS]
 * domain-literal = [CFWS] "[" *([FWS] dtext) [FWS] "]" [CFWS]
 * atom           = [CFWS] 1*atext [CFWS]
 */
static int lex(struct lexer *lx, struct tok *t)
{
	if (skip_cfws(lx) < 0)
		return -1;
	const char *s = lx->s;
	size_t i = lx->pos;
	t->off = i;
	t->c = 0;
	if (i >= lx->len) {
		t->type = TOK_END;
		t->len = 0;
		return 0;
	}
	unsigned char c = s[i];
	if (c == '"') {
		for (i++;; i++) {
			if (i >= lx->len) {
				buf_puts(lx->err, "unterminated quoted string");
				return -1;
			}
			if (s[i] == '\\')
				i++;
			else if (s[i] == '"')
				break;
		}
		t->type = TOK_QSTR;
		i++;
	} else if (c == '[') {
		for (i++;; i++) {
			if (i >= lx->len) {
				buf_puts(lx->err, "unterminated domain literal");
				return -1;
			}
			if (s[i] == ']')
				break;
			if (!is_wsp(s[i]) && !is_dtext(s[i])) {
				buf_puts(lx->err, "invalid character ");
				put_byte_desc(lx->err, s[i]);
				buf_puts(lx->err, " in domain literal");
				return -1;
			}
		}
		t->type = TOK_DLIT;
		i++;
	} else if (is_atext(c)) {
		while (i < lx->len && is_atext(s[i]))
			i++;
		t->type = TOK_ATOM;
	} else if (c != 0 && strchr("<>@,:;.", c) != NULL) {
		t->type = TOK_SPECIAL;
		t->c = c;
		i++;
	} else {
		buf_puts(lx->err, "unexpected ");
		put_byte_desc(lx->err, c);
		return -1;
	}
	t->len = i - t->off;
	lx->pos = i;
	return 0;
}

static int peek(struct lexer *lx, struct tok *t)
{
	size_t save = lx->pos;
	int r = lex(lx, t);
	lx->pos = save;
	return r;
}

static bool tok_is(const struct tok *t, char c)
{
	return t->type == TOK_SPECIAL && t->c == c;
}

/* word = atom / quoted-string; obs-phrase also allows "." */
static bool tok_is_word_or_dot(const struct tok *t)
{
	return t->type == TOK_ATOM || t->type == TOK_QSTR || tok_is(t, '.');
}

static void put_tok_desc(struct buf *b, const struct tok *t)
{
	switch (t->type) {
	case TOK_END:
		buf_puts(b, "end of field");
		break;
	case TOK_SPECIAL:
		buf_printf(b, "'%c'", t->c);
		break;
	case TOK_QSTR:
		buf_puts(b, "quoted string");
		break;
	case TOK_DLIT:
		buf_puts(b, "domain literal");
		break;
	default:
		buf_puts(b, "word");
	}
}

static int unexpected(struct lexer *lx, const struct tok *t, const char *where)
{
	buf_puts(lx->err, "unexpected ");
	put_tok_desc(lx->err, t);
	buf_puts(lx->err, where);
	return -1;
}

/* ---- address parser (RFC 5322 3.4 with the 4.4 obsolete forms) ---- */

struct addr_vec {
	struct msg_addr *v;
	size_t n, cap;
};

static void vec_push(struct addr_vec *vec, char *addr)
{
	if (vec->n == vec->cap) {
		vec->cap = vec->cap ? vec->cap * 2 : 4;
		vec->v = xrealloc(vec->v, vec->cap * sizeof(*vec->v));
	}
	vec->v[vec->n].addr = addr;
	vec->v[vec->n].params = NULL;
	vec->n++;
}

static void addrs_free(struct msg_addr *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(v[i].addr);
		free(v[i].params);
	}
	free(v);
}

/* True for a strict dot-atom: 1*atext *("." 1*atext). */
static bool is_dot_atom(const char *s, size_t n)
{
	if (n == 0)
		return false;
	bool need = true;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '.') {
			if (need)
				return false;
			need = true;
		} else if (is_atext(s[i])) {
			need = false;
		} else {
			return false;
		}
	}
	return !need;
}

/*
 * local-part     = dot-atom / quoted-string / obs-local-part
 * obs-local-part = word *("." word)
 * Builds the RFC 5321 form of the local part written in lx->s[start..end):
 * the decoded text unquoted when it is a dot-atom, else one quoted string
 * ("a b".c and a..b become "a b.c" and "a..b", as Postfix quotes them).
 * Stray dots are tolerated (real mailers emit them); adjacent words are not.
 */
static int build_local(struct lexer *lx, size_t start, size_t end, struct buf *out)
{
	struct lexer sub = {lx->s, end, start, lx->err, lx->bare_ok};
	struct buf text = BUF_INIT;
	bool prev_word = false, any = false;
	struct tok t;

	buf_puts(&text, "");
	for (;;) {
		if (lex(&sub, &t) < 0)
			goto fail;
		if (t.type == TOK_END)
			break;
		any = true;
		if (tok_is(&t, '.')) {
			buf_putc(&text, '.');
			prev_word = false;
			continue;
		}
		if (prev_word) {
			buf_puts(lx->err, "words in the local part are not separated by '.'");
			goto fail;
		}
		prev_word = true;
		if (t.type == TOK_ATOM) {
			buf_append(&text, lx->s + t.off, t.len);
			continue;
		}
		for (size_t i = t.off + 1; i < t.off + t.len - 1; i++) { /* TOK_QSTR */
			if (lx->s[i] == '\\')
				i++;
			buf_putc(&text, lx->s[i]);
		}
	}
	if (!any) {
		buf_puts(lx->err, "missing local part before '@'");
		goto fail;
	}
	if (is_dot_atom(text.data, text.len)) {
		buf_append(out, text.data, text.len);
	} else {
		buf_putc(out, '"');
		for (size_t i = 0; i < text.len; i++) {
			if (text.data[i] == '"' || text.data[i] == '\\')
				buf_putc(out, '\\');
			buf_putc(out, text.data[i]);
		}
		buf_putc(out, '"');
	}
	buf_deinit(&text);
	return 0;
fail:
	buf_deinit(&text);
	return -1;
}

/*
 * domain     = dot-atom / domain-literal / obs-domain
 * obs-domain = atom *("." atom)
 * Appends the domain with CFWS removed (out may be NULL to discard it).
 */
static int parse_domain(struct lexer *lx, struct buf *out)
{
	struct tok t;

	if (lex(lx, &t) < 0)
		return -1;
	if (t.type == TOK_DLIT) {
		for (size_t i = t.off; out && i < t.off + t.len; i++)
			if (!is_wsp(lx->s[i]))
				buf_putc(out, lx->s[i]);
		return 0;
	}
	if (t.type != TOK_ATOM)
		return unexpected(lx, &t, " where the domain after '@' should be");
	for (;;) {
		if (out)
			buf_append(out, lx->s + t.off, t.len);
		size_t save = lx->pos;
		if (lex(lx, &t) < 0)
			return -1;
		if (!tok_is(&t, '.')) {
			lx->pos = save;
			return 0;
		}
		if (lex(lx, &t) < 0)
			return -1;
		if (t.type != TOK_ATOM)
			return unexpected(lx, &t, " after '.' in the domain");
		if (out)
			buf_putc(out, '.');
	}
}

/*
 * addr-spec = local-part "@" domain
 * The local part spans lx->s[start..end) and the lexer stands just past the "@".
 */
static int finish_addr_spec(struct lexer *lx, size_t start, size_t end, struct addr_vec *vec)
{
	struct buf a = BUF_INIT;

	if (build_local(lx, start, end, &a) < 0)
		goto fail;
	buf_putc(&a, '@');
	if (parse_domain(lx, &a) < 0)
		goto fail;
	if (a.len > MSG_MAX_ADDR) {
		buf_printf(lx->err, "address longer than %d octets", MSG_MAX_ADDR);
		goto fail;
	}
	if (msg_addr_valid(a.data) < 0) { /* not expected: the grammar above is stricter */
		buf_puts(lx->err, "invalid address");
		goto fail;
	}
	vec_push(vec, buf_steal(&a));
	return 0;
fail:
	buf_deinit(&a);
	return -1;
}

/* A local part alone ("root", as cron writes): kept without "@" for the
 * caller's addrmap to qualify or refuse. */
static int push_bare(struct lexer *lx, size_t start, size_t end, struct addr_vec *vec)
{
	struct buf a = BUF_INIT;

	if (build_local(lx, start, end, &a) < 0)
		goto fail;
	buf_puts(&a, "@x"); /* checked as an address, then cut back */
	if (a.len > MSG_MAX_ADDR || msg_addr_valid(a.data) < 0) {
		buf_puts(lx->err, "invalid address");
		goto fail;
	}
	a.len -= 2;
	a.data[a.len] = '\0';
	vec_push(vec, buf_steal(&a));
	return 0;
fail:
	buf_deinit(&a);
	return -1;
}

/* Consumes tokens while they are words or dots; *t_r is the first other token (consumed). */
static int skip_words(struct lexer *lx, struct tok *t_r, size_t *n_r)
{
	size_t n = 0;
	for (;;) {
		if (lex(lx, t_r) < 0)
			return -1;
		if (!tok_is_word_or_dot(t_r))
			break;
		n++;
	}
	*n_r = n;
	return 0;
}

/*
 * angle-addr      = [CFWS] "<" addr-spec ">" [CFWS] / obs-angle-addr
 * obs-angle-addr  = [CFWS] "<" obs-route addr-spec ">" [CFWS]
 * obs-route       = obs-domain-list ":"
 * obs-domain-list = *(CFWS / ",") "@" domain *("," [CFWS] ["@" domain])
 * The lexer stands just past "<". The route is parsed and dropped. "<>" is
 * the null reverse-path, accepted only when allow_null.
 */
static int parse_angle(struct lexer *lx, struct addr_vec *vec, bool allow_null)
{
	struct tok t;

	if (peek(lx, &t) < 0)
		return -1;
	if (tok_is(&t, '>')) {
		lex(lx, &t);
		if (!allow_null) {
			buf_puts(lx->err, "empty address <>");
			return -1;
		}
		vec_push(vec, xstrdup(""));
		return 0;
	}
	if (tok_is(&t, '@') || tok_is(&t, ',')) {
		for (;;) {
			if (lex(lx, &t) < 0)
				return -1;
			if (tok_is(&t, ':'))
				break;
			if (tok_is(&t, ','))
				continue;
			if (!tok_is(&t, '@'))
				return unexpected(lx, &t, " in source route");
			if (parse_domain(lx, NULL) < 0)
				return -1;
		}
	}
	size_t start = lx->pos, n;
	if (skip_words(lx, &t, &n) < 0)
		return -1;
	if (tok_is(&t, '>') && n > 0) {
		if (lx->bare_ok)
			return push_bare(lx, start, t.off, vec);
		buf_puts(lx->err, "address without '@'");
		return -1;
	}
	if (!tok_is(&t, '@'))
		return unexpected(lx, &t, " in <address>");
	if (finish_addr_spec(lx, start, t.off, vec) < 0)
		return -1;
	if (lex(lx, &t) < 0)
		return -1;
	if (!tok_is(&t, '>'))
		return unexpected(lx, &t, " where '>' should end the address");
	return 0;
}

static int parse_group(struct lexer *lx, struct addr_vec *vec);

/*
 * address      = mailbox / group
 * mailbox      = name-addr / addr-spec
 * name-addr    = [display-name] angle-addr
 * group        = display-name ":" [group-list] ";" [CFWS]
 * display-name = phrase ; phrase = 1*word / obs-phrase ; obs-phrase = word *(word / "." / CFWS)
 * A leading run of words decides which: "<" after it means name-addr, ":" a
 * group, "@" an addr-spec whose local part is that run. RFC 2047 encoded-words
 * and raw UTF-8 in display names are atoms here.
 */
static int parse_address(struct lexer *lx, struct addr_vec *vec, bool allow_group, bool allow_null)
{
	size_t start = lx->pos, n;
	struct tok t;

	if (skip_words(lx, &t, &n) < 0)
		return -1;
	if (tok_is(&t, '<'))
		return parse_angle(lx, vec, allow_null);
	if (tok_is(&t, '@'))
		return finish_addr_spec(lx, start, t.off, vec);
	if (tok_is(&t, ':') && n > 0) {
		if (!allow_group) {
			buf_puts(lx->err, "group not allowed here");
			return -1;
		}
		return parse_group(lx, vec);
	}
	if (n > 0 && lx->bare_ok && (t.type == TOK_END || tok_is(&t, ',') || tok_is(&t, ';'))) {
		lx->pos = t.off; /* the list's separator is the caller's */
		return push_bare(lx, start, t.off, vec);
	}
	if (n > 0) {
		buf_puts(lx->err, "address without '@'");
		return -1;
	}
	return unexpected(lx, &t, " where an address should be");
}

/* group-list = mailbox-list / CFWS / obs-group-list; the ";" may be missing at the end. */
static int parse_group(struct lexer *lx, struct addr_vec *vec)
{
	struct tok t;

	for (;;) {
		if (peek(lx, &t) < 0)
			return -1;
		if (t.type == TOK_END)
			return 0;
		if (tok_is(&t, ';') || tok_is(&t, ',')) {
			lex(lx, &t);
			if (t.c == ';')
				return 0;
			continue;
		}
		if (parse_address(lx, vec, false, false) < 0)
			return -1;
		if (peek(lx, &t) < 0)
			return -1;
		if (t.type != TOK_END && !tok_is(&t, ',') && !tok_is(&t, ';'))
			return unexpected(lx, &t, " after address in group");
	}
}

static int check_ctl(const char *s, size_t len, struct buf *reason)
{
	for (size_t i = 0; i < len; i++) {
		if (is_ctl(s[i])) {
			buf_puts(reason, "control character in address");
			return -1;
		}
	}
	return 0;
}

/*
 * address-list  = (address *("," address)) / obs-addr-list
 * obs-addr-list = *([CFWS] ",") address *("," [address / CFWS])
 */
static int parse_list(struct lexer *lx, struct addr_vec *vec)
{
	struct tok t;

	for (;;) {
		if (peek(lx, &t) < 0)
			return -1;
		if (t.type == TOK_END)
			return 0;
		if (tok_is(&t, ',')) {
			lex(lx, &t);
			continue;
		}
		if (parse_address(lx, vec, true, false) < 0)
			return -1;
		if (lex(lx, &t) < 0)
			return -1;
		if (t.type == TOK_END)
			return 0;
		if (!tok_is(&t, ','))
			return unexpected(lx, &t, " after address");
	}
}

static int parse_address_list(const char *s, size_t len, bool bare_ok, struct msg_addr **list_r,
			      size_t *n_r, struct buf *reason)
{
	struct addr_vec vec = {NULL, 0, 0};
	struct lexer lx = {s, len, 0, reason, bare_ok};

	if (check_ctl(s, len, reason) < 0 || parse_list(&lx, &vec) < 0) {
		addrs_free(vec.v, vec.n);
		return -1;
	}
	if (vec.n > 0) {
		*list_r = xrealloc(*list_r, (*n_r + vec.n) * sizeof(**list_r));
		memcpy(*list_r + *n_r, vec.v, vec.n * sizeof(*vec.v));
		*n_r += vec.n;
	}
	free(vec.v);
	return 0;
}

int msg_parse_address_list(const char *s, size_t len, struct msg_addr **list_r, size_t *n_r,
			   struct buf *reason)
{
	return parse_address_list(s, len, false, list_r, n_r, reason);
}

/* ---- ESMTP parameters on X-Sender/X-Receiver (Exchange Replay style) ---- */

/*
 * esmtp-param   = esmtp-keyword ["=" esmtp-value]       (RFC 5321 4.1.2)
 * esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
 * esmtp-value   = 1*(%d33-60 / %d62-126)
 * xtext         = *( xchar / hexchar )                  (RFC 3461 4)
 * xchar = %d33-42 / %d44-60 / %d62-126 ; hexchar = "+" 2(%x30-39 / %x41-46)
 */
static bool is_xtext(const char *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (v[i] == '+') {
			if (i + 2 >= n)
				return false;
			for (size_t k = 1; k <= 2; k++)
				if (!((v[i + k] >= '0' && v[i + k] <= '9') ||
				      (v[i + k] >= 'A' && v[i + k] <= 'F')))
					return false;
			i += 2;
		} else if (v[i] < 33 || v[i] > 126 || v[i] == '=') {
			return false;
		}
	}
	return true;
}

/* NOTIFY = "NEVER" / 1#("SUCCESS" / "FAILURE" / "DELAY") (RFC 3461 4.1) */
static bool notify_valid(const char *v, size_t n)
{
	if (ascii_ieq(v, n, "NEVER"))
		return true;
	size_t i = 0;
	while (i <= n) {
		size_t j = i;
		while (j < n && v[j] != ',')
			j++;
		if (!ascii_ieq(v + i, j - i, "SUCCESS") && !ascii_ieq(v + i, j - i, "FAILURE") &&
		    !ascii_ieq(v + i, j - i, "DELAY"))
			return false;
		i = j + 1;
	}
	return true;
}

/* ORCPT = addr-type ";" xtext (RFC 3461 4.2); addr-type is an atom. */
static bool orcpt_valid(const char *v, size_t n)
{
	const char *semi = memchr(v, ';', n);
	if (semi == NULL || semi == v || (size_t)(semi - v) + 1 >= n)
		return false;
	for (const char *p = v; p < semi; p++)
		if (!is_alnum(*p) && *p != '-')
			return false;
	return is_xtext(semi + 1, n - (size_t)(semi - v) - 1);
}

/*
 * Parses the text after the address. Only the DSN parameters that belong to
 * the command are kept (MAIL: RET, ENVID; RCPT: NOTIFY, ORCPT), keyword
 * upper-cased; others (BODY=, AUTH=, SIZE=, ...) are validated and dropped,
 * since pickupd decides those itself. Exchange's "; X-ExtendedProps=..." tail
 * and a trailing ";" are ignored.
 */
static int parse_params(const char *s, size_t len, bool sender, char **params_r, struct buf *reason)
{
	static const char *const mail_kw[] = {"RET", "ENVID"}, *const rcpt_kw[] = {"NOTIFY",
										   "ORCPT"};
	const char *const *kws = sender ? mail_kw : rcpt_kw;
	struct buf out = BUF_INIT;
	bool seen[2] = {false, false};

	for (size_t i = 0; i < len; i++) {
		if (s[i] != ';')
			continue;
		size_t j = i + 1;
		while (j < len && is_wsp(s[j]))
			j++;
		if (j == len || (len - j >= 15 && ascii_ieq(s + j, 15, "X-ExtendedProps"))) {
			len = i;
			break;
		}
	}
	size_t i = 0;
	for (;;) {
		while (i < len && is_wsp(s[i]))
			i++;
		if (i == len)
			break;
		size_t kw = i;
		if (!is_alnum(s[i]))
			goto bad;
		while (i < len && (is_alnum(s[i]) || s[i] == '-'))
			i++;
		size_t kwlen = i - kw, val = i, vlen = 0;
		if (i < len && s[i] == '=') {
			val = ++i;
			while (i < len && (unsigned char)s[i] >= 33 && (unsigned char)s[i] <= 126 &&
			       s[i] != '=')
				i++;
			vlen = i - val;
			if (vlen == 0)
				goto bad;
		}
		if (i < len && !is_wsp(s[i]))
			goto bad;
		for (int k = 0; k < 2; k++) {
			if (!ascii_ieq(s + kw, kwlen, kws[k]))
				continue;
			bool ok = vlen > 0;
			if (ok && k == 0)
				ok = sender ? (ascii_ieq(s + val, vlen, "FULL") ||
					       ascii_ieq(s + val, vlen, "HDRS"))
					    : notify_valid(s + val, vlen);
			else if (ok)
				ok = sender ? is_xtext(s + val, vlen) : orcpt_valid(s + val, vlen);
			if (!ok || seen[k]) {
				buf_printf(reason, "%s ESMTP parameter %s",
					   ok ? "duplicate" : "invalid", kws[k]);
				goto fail;
			}
			seen[k] = true;
			if (out.len > 0)
				buf_putc(&out, ' ');
			buf_printf(&out, "%s=%.*s", kws[k], (int)vlen, s + val);
		}
	}
	*params_r = out.len > 0 ? buf_steal(&out) : NULL;
	buf_deinit(&out);
	return 0;
bad:
	buf_puts(reason, "malformed ESMTP parameter after the address");
fail:
	buf_deinit(&out);
	return -1;
}

/*
 * One X-Sender/X-Receiver value: a mailbox (bare, <addr>, "Name" <addr>,
 * =?utf-8?B?...?= <addr>), then optional ESMTP parameters. X-Sender may be <>.
 */
static int parse_envelope_value(const char *s, size_t len, bool sender, bool bare_ok,
				struct msg_addr *out, struct buf *reason)
{
	struct addr_vec vec = {NULL, 0, 0};
	struct lexer lx = {s, len, 0, reason, bare_ok};
	struct tok t;

	if (check_ctl(s, len, reason) < 0 || peek(&lx, &t) < 0)
		goto fail;
	if (t.type == TOK_END) {
		buf_puts(reason, "no address");
		goto fail;
	}
	if (parse_address(&lx, &vec, false, sender) < 0 || skip_cfws(&lx) < 0)
		goto fail;
	out->params = NULL;
	if (parse_params(s + lx.pos, len - lx.pos, sender, &out->params, reason) < 0)
		goto fail;
	out->addr = vec.v[0].addr;
	free(vec.v);
	return 0;
fail:
	addrs_free(vec.v, vec.n);
	return -1;
}

/*
 * msg-id   = [CFWS] "<" id-left "@" id-right ">" [CFWS]    (RFC 5322 3.6.4)
 * id-left  = dot-atom-text / obs-id-left  ; obs-id-left  = local-part
 * id-right = dot-atom-text / no-fold-literal / obs-id-right ; = domain
 */
int msg_msgid_valid(const char *s, size_t len)
{
	struct buf err = BUF_INIT, local = BUF_INIT;
	struct lexer lx = {s, len, 0, &err, false};
	struct tok t;
	size_t n;
	int r = -1;

	if (check_ctl(s, len, &err) < 0 || lex(&lx, &t) < 0 || !tok_is(&t, '<'))
		goto out;
	size_t start = lx.pos;
	if (skip_words(&lx, &t, &n) < 0 || !tok_is(&t, '@') || n == 0 ||
	    build_local(&lx, start, t.off, &local) < 0 || parse_domain(&lx, NULL) < 0)
		goto out;
	if (lex(&lx, &t) < 0 || !tok_is(&t, '>') || lex(&lx, &t) < 0 || t.type != TOK_END)
		goto out;
	r = 0;
out:
	buf_deinit(&err);
	buf_deinit(&local);
	return r;
}

/* ---- header section ---- */

struct field {
	size_t start;	 /* first byte of the field's first line */
	size_t name_len; /* field name, without WSP before the colon (obs-optional) */
	size_t body;	 /* first byte after the colon */
	size_t cend;	 /* end of the last line's content (before CRLF/LF) */
	size_t end;	 /* first byte after the field, folded lines and line ending included */
	unsigned line;	 /* 1-based line number of the first line */
};

/* Recipients de-duplicated with a hash set on the address without ASCII case
 * (or, with exact_local, on the exact local part and the lower-cased domain). */
struct rcpt_set {
	struct msg_addr *v;
	size_t n, cap;
	size_t *slots; /* index + 1 into v; 0 = free */
	size_t n_slots;
	bool exact_local;
};

struct scan {
	const char *data;
	size_t len;
	bool at_eof;
	const struct msg_scan_opts *opts;
	struct msg_info *info;
	struct buf *reason;
	size_t bom;
	struct field *fields;
	size_t n_fields;
	size_t n_block; /* leading X-Sender/X-Receiver fields */
	struct rcpt_set rcpts;
};

/* The part of an address compared with case: the local part when exact_local
 * (the domain never is), else none. */
static size_t cased_len(const char *a, bool exact_local)
{
	const char *at = strrchr(a, '@');
	return exact_local && at != NULL ? (size_t)(at - a) : 0;
}

static uint64_t addr_hash(const char *a, bool exact_local)
{
	size_t cased = cased_len(a, exact_local);
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; a[i]; i++) {
		unsigned char c = i < cased ? (unsigned char)a[i] : ascii_lower(a[i]);
		h = (h ^ c) * 1099511628211ULL;
	}
	return h;
}

static bool addr_equal(const char *a, const char *b, bool exact_local)
{
	size_t ca = cased_len(a, exact_local), cb = cased_len(b, exact_local);
	if (ca != cb || memcmp(a, b, ca) != 0)
		return false;
	return ascii_ieq(a + ca, strlen(a + ca), b + ca);
}

static void set_insert_slot(struct rcpt_set *set, size_t idx)
{
	size_t mask = set->n_slots - 1, i = addr_hash(set->v[idx].addr, set->exact_local) & mask;
	while (set->slots[i] != 0)
		i = (i + 1) & mask;
	set->slots[i] = idx + 1;
}

/* Takes ownership of a; drops it when the address is already present. */
static void rcpt_add(struct rcpt_set *set, struct msg_addr a)
{
	if (set->n_slots > 0) {
		size_t mask = set->n_slots - 1, i = addr_hash(a.addr, set->exact_local) & mask;
		for (; set->slots[i] != 0; i = (i + 1) & mask) {
			if (addr_equal(set->v[set->slots[i] - 1].addr, a.addr, set->exact_local)) {
				free(a.addr);
				free(a.params);
				return;
			}
		}
	}
	if (set->n == set->cap) {
		set->cap = set->cap ? set->cap * 2 : 8;
		set->v = xrealloc(set->v, set->cap * sizeof(*set->v));
	}
	set->v[set->n++] = a;
	if (set->n * 2 > set->n_slots) {
		free(set->slots);
		set->n_slots = set->n_slots ? set->n_slots * 2 : 32; /* stays over 2n */
		set->slots = xcalloc(set->n_slots, sizeof(*set->slots));
		for (size_t k = 0; k < set->n; k++)
			set_insert_slot(set, k);
	} else {
		set_insert_slot(set, set->n - 1);
	}
}

static bool field_is(const struct scan *sc, const struct field *f, const char *name)
{
	return ascii_ieq(sc->data + f->start, f->name_len, name);
}

/* The field body with folding CRLF/LF removed (RFC 5322 3.2.2 unfolding). */
static void unfold(const struct scan *sc, const struct field *f, struct buf *out)
{
	buf_clear(out);
	buf_puts(out, "");
	for (size_t i = f->body; i < f->cend; i++) {
		char c = sc->data[i];
		if (c == '\n' || (c == '\r' && i + 1 < f->cend && sc->data[i + 1] == '\n'))
			continue;
		buf_putc(out, c);
	}
}

static int header_too_big(struct scan *sc, size_t n)
{
	buf_printf(sc->reason, "header section over %zu bytes", n);
	return -1;
}

/*
 * Splits the header section into fields.
 *   fields        = *(field-name ":" unstructured CRLF)   (RFC 5322 3.6.8)
 *   field-name    = 1*ftext ; ftext = %d33-57 / %d59-126
 *   obs-optional  = field-name *WSP ":" ...               (accepted)
 * A line starting with WSP continues the previous field; the first empty
 * line (CRLF or LF) ends the section.
 */
static int split_fields(struct scan *sc)
{
	const char *d = sc->data;
	size_t limit = sc->opts->max_header_size ? sc->opts->max_header_size : SIZE_MAX;
	size_t pos = sc->bom, cap = 0;
	unsigned line = 0;

	for (;;) {
		if (pos >= sc->len) {
			if (!sc->at_eof)
				return header_too_big(sc, sc->len);
			sc->info->header_end = sc->len;
			return 0;
		}
		line++;
		size_t room = limit > pos ? limit - pos : 0;
		size_t search = sc->len - pos < room ? sc->len - pos : room;
		const char *nl = memchr(d + pos, '\n', search);
		size_t stop = nl ? (size_t)(nl - d) : pos + search;
		const char *nul = memchr(d + pos, '\0', stop - pos);
		if (nul != NULL) {
			buf_printf(sc->reason, "NUL byte at offset %zu", (size_t)(nul - d));
			return -1;
		}
		size_t next, cend;
		if (nl != NULL) {
			next = stop + 1;
			cend = stop;
		} else if (sc->len - pos > room) {
			return header_too_big(sc, limit);
		} else if (!sc->at_eof) {
			return header_too_big(sc, sc->len);
		} else {
			next = cend = sc->len;
		}
		if (cend > pos && d[cend - 1] == '\r')
			cend--;
		if (cend == pos) {
			sc->info->header_end = next;
			sc->info->has_body_separator = true;
			return 0;
		}
		if (is_wsp(d[pos])) {
			if (sc->n_fields == 0)
				goto malformed;
			sc->fields[sc->n_fields - 1].cend = cend;
			sc->fields[sc->n_fields - 1].end = next;
			pos = next;
			continue;
		}
		size_t i = pos;
		while (i < cend && (unsigned char)d[i] >= 33 && (unsigned char)d[i] <= 126 &&
		       d[i] != ':')
			i++;
		size_t name_len = i - pos;
		while (i < cend && is_wsp(d[i]))
			i++;
		if (name_len == 0 || i >= cend || d[i] != ':')
			goto malformed;
		if (sc->n_fields == cap) {
			cap = cap ? cap * 2 : 16;
			sc->fields = xrealloc(sc->fields, cap * sizeof(*sc->fields));
		}
		sc->fields[sc->n_fields++] = (struct field){pos, name_len, i + 1, cend, next, line};
		pos = next;
	}
malformed:
	buf_printf(sc->reason,
		   "malformed header line %u (neither a \"Name: value\" field nor a folded "
		   "continuation)",
		   line);
	return -1;
}

static void add_skip(struct msg_info *info, size_t off, size_t len, size_t *cap)
{
	if (len == 0)
		return;
	if (info->n_skips > 0) {
		struct msg_range *last = &info->skips[info->n_skips - 1];
		if (last->off + last->len == off) {
			last->len += len;
			return;
		}
	}
	if (info->n_skips == *cap) {
		*cap = *cap ? *cap * 2 : 4;
		info->skips = xrealloc(info->skips, *cap * sizeof(*info->skips));
	}
	info->skips[info->n_skips++] = (struct msg_range){off, len};
}

/*
 * The [submit] rewrite of one parsed envelope address (common/addrmap.h); one
 * still without '@' is refused as the parser refuses it without a map.
 */
static int map_addr(struct scan *sc, struct msg_addr *a, bool rcpt, const struct field *f,
		    const char *name)
{
	char *out;
	int r;

	if (sc->opts->map == NULL)
		return 0;
	r = addrmap_apply(sc->opts->map, a->addr, rcpt, &out);
	if (r < 0) {
		buf_printf(sc->reason, "address without '@' in %s line %u", name, f->line);
		return -1;
	}
	if (r > 0) {
		free(a->addr);
		a->addr = out;
	}
	return 0;
}

/* Appends " in NAME line N" to a reason produced by a parser. */
static int field_error(struct scan *sc, const struct field *f, const char *name,
		       const struct buf *why)
{
	buf_printf(sc->reason, "%s in %s line %u", why->data ? why->data : "parse error", name,
		   f->line);
	return -1;
}

/* First mailbox of Sender:, else From: (RFC 5322 3.6.2). Fails when neither yields one. */
static int sender_from_headers(struct scan *sc)
{
	const struct field *f = NULL;
	const char *name = NULL;
	for (size_t pass = 0; pass < 2 && f == NULL; pass++) {
		name = pass == 0 ? "Sender" : "From";
		for (size_t i = sc->n_block; i < sc->n_fields && f == NULL; i++)
			if (field_is(sc, &sc->fields[i], name))
				f = &sc->fields[i];
	}
	if (f == NULL) {
		buf_puts(sc->reason, "no sender (no X-Sender, Sender: or From:)");
		return -1;
	}
	struct buf body = BUF_INIT, why = BUF_INIT;
	struct msg_addr *list = NULL;
	size_t n = 0;
	int r = -1;
	unfold(sc, f, &body);
	if (parse_address_list(body.data, body.len, sc->opts->map != NULL, &list, &n, &why) < 0) {
		buf_puts(sc->reason, "no sender: ");
		field_error(sc, f, name, &why);
	} else if (n == 0) {
		buf_printf(sc->reason, "no sender (%s line %u holds no mailbox)", name, f->line);
	} else if (map_addr(sc, &list[0], false, f, name) == 0) {
		sc->info->sender = list[0];
		list[0].addr = NULL;
		list[0].params = NULL;
		r = 0;
	}
	addrs_free(list, n);
	buf_deinit(&body);
	buf_deinit(&why);
	return r;
}

/* Recipients from To:, Cc:, Bcc: in the order the fields appear. */
static int rcpts_from_headers(struct scan *sc)
{
	struct buf body = BUF_INIT, why = BUF_INIT;
	int r = 0;
	for (size_t i = sc->n_block; i < sc->n_fields && r == 0; i++) {
		const struct field *f = &sc->fields[i];
		const char *name = field_is(sc, f, "To")    ? "To"
				   : field_is(sc, f, "Cc")  ? "Cc"
				   : field_is(sc, f, "Bcc") ? "Bcc"
							    : NULL;
		if (name == NULL)
			continue;
		struct msg_addr *list = NULL;
		size_t n = 0;
		unfold(sc, f, &body);
		if (parse_address_list(body.data, body.len, sc->opts->map != NULL, &list, &n,
				       &why) < 0) {
			r = field_error(sc, f, name, &why);
			continue;
		}
		for (size_t k = 0; k < n; k++) {
			if (r == 0 && (r = map_addr(sc, &list[k], true, f, name)) == 0) {
				rcpt_add(&sc->rcpts, list[k]); /* takes it */
				continue;
			}
			free(list[k].addr);
			free(list[k].params);
		}
		free(list);
	}
	buf_deinit(&body);
	buf_deinit(&why);
	return r;
}

/* The leading X-Sender/X-Receiver block (IIS pickup, .NET SmtpClient, Exchange Replay). */
static int envelope_block(struct scan *sc, bool *have_sender, bool *have_rcpts)
{
	struct buf body = BUF_INIT, why = BUF_INIT;
	const struct field *xsender = NULL;
	int r = 0;

	for (size_t i = 0; i < sc->n_block && r == 0; i++) {
		const struct field *f = &sc->fields[i];
		bool is_sender = field_is(sc, f, "X-Sender");
		const char *name = is_sender ? "X-Sender" : "X-Receiver";
		if (is_sender && xsender != NULL) {
			buf_printf(sc->reason, "more than one X-Sender line (lines %u and %u)",
				   xsender->line, f->line);
			r = -1;
			break;
		}
		struct msg_addr a;
		unfold(sc, f, &body);
		if (parse_envelope_value(body.data, body.len, is_sender, sc->opts->map != NULL, &a,
					 &why) < 0) {
			r = field_error(sc, f, name, &why);
			break;
		}
		if (map_addr(sc, &a, !is_sender, f, name) < 0) {
			free(a.addr);
			free(a.params);
			r = -1;
			break;
		}
		if (is_sender) {
			xsender = f;
			sc->info->sender = a;
			*have_sender = true;
		} else {
			rcpt_add(&sc->rcpts, a);
			*have_rcpts = true;
		}
	}
	buf_deinit(&body);
	buf_deinit(&why);
	return r;
}

static bool has_8bit(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s >= 0x80)
			return true;
	return false;
}

/*
 * Content-Type := type "/" subtype *(";" parameter)          (RFC 2045 5.1)
 * parameter    := attribute "=" value ; value := token / quoted-string
 * (an unquoted value is taken up to ";", WSP or a comment). Copies the boundary parameter of a
 * multipart type into out (NUL-terminated), or leaves out empty. RFC 2231 continuations
 * (boundary*0=) are not followed.
 */
static void mime_boundary(const char *s, size_t len, char *out)
{
	struct buf err = BUF_INIT;
	struct lexer lx = {s, len, 0, &err, false};
	size_t i, n;

	out[0] = '\0';
	if (skip_cfws(&lx) < 0)
		goto out;
	for (i = lx.pos; i < len && is_token_char(s[i]); i++)
		;
	if (!ascii_ieq(s + lx.pos, i - lx.pos, "multipart") || i >= len || s[i] != '/')
		goto out;
	for (i++; i < len && is_token_char(s[i]); i++)
		;
	lx.pos = i;
	for (;;) {
		if (skip_cfws(&lx) < 0 || lx.pos >= len || s[lx.pos] != ';')
			goto out;
		lx.pos++;
		if (skip_cfws(&lx) < 0)
			goto out;
		size_t attr = lx.pos;
		for (i = attr; i < len && is_token_char(s[i]); i++)
			;
		size_t attr_len = i - attr;
		lx.pos = i;
		if (skip_cfws(&lx) < 0 || lx.pos >= len || s[lx.pos] != '=')
			goto out;
		lx.pos++;
		if (skip_cfws(&lx) < 0)
			goto out;
		bool want = ascii_ieq(s + attr, attr_len, "boundary");
		n = 0;
		bool too_long = false;
		if (lx.pos < len && s[lx.pos] == '"') {
			for (i = lx.pos + 1; i < len && s[i] != '"'; i++) {
				if (s[i] == '\\' && i + 1 < len)
					i++;
				if (n < MSG_MAX_BOUNDARY)
					out[n++] = s[i];
				else
					too_long = true;
			}
			if (i >= len)
				break; /* unterminated */
			i++;
		} else {
			/* Lenient: writers leave "=" and "/" unquoted, and a value
			 * cut short here would make every close delimiter a miss. */
			for (i = lx.pos; i < len && s[i] > 32 && s[i] < 127 && s[i] != ';' &&
					 s[i] != '(' && s[i] != '"';
			     i++) {
				if (n < MSG_MAX_BOUNDARY)
					out[n++] = s[i];
				else
					too_long = true;
			}
		}
		lx.pos = i;
		if (want) {
			out[too_long ? 0 : n] = '\0';
			break;
		}
	}
out:
	buf_deinit(&err);
}

/* Date:, Message-ID: (valid or not) and the first Content-Type: field. */
static void check_field(struct scan *sc, const struct field *f, bool *has_content_type)
{
	struct buf body = BUF_INIT;
	unfold(sc, f, &body);
	if (field_is(sc, f, "Date")) {
		if (msg_parse_date(body.data, body.len, NULL) == 0)
			sc->info->has_date = true;
	} else if (field_is(sc, f, "Message-ID")) {
		if (msg_msgid_valid(body.data, body.len) == 0)
			sc->info->has_message_id = true;
	} else {
		*has_content_type = true;
		mime_boundary(body.data, body.len, sc->info->mime_boundary);
	}
	buf_deinit(&body);
}

/* When no Date: (Message-ID:) field is valid, every one there is gets renamed
 * X-Original-Date: (X-Original-Message-ID:), and the caller adds a new one. */
static void rename_invalid(struct scan *sc)
{
	struct msg_info *info = sc->info;
	size_t cap = 0;
	for (size_t i = sc->n_block; i < sc->n_fields; i++) {
		const struct field *f = &sc->fields[i];
		const char *to = NULL;
		if (!info->has_date && field_is(sc, f, "Date"))
			to = "X-Original-Date";
		else if (!info->has_message_id && field_is(sc, f, "Message-ID"))
			to = "X-Original-Message-ID";
		if (to == NULL)
			continue;
		if (info->n_renames == cap) {
			cap = cap ? cap * 2 : 2;
			info->renames = xrealloc(info->renames, cap * sizeof(*info->renames));
		}
		info->renames[info->n_renames++] = (struct msg_rename){
		    {f->start, f->end - f->start}, {f->body, f->cend - f->body}, to};
	}
}

void msg_info_deinit(struct msg_info *info)
{
	free(info->sender.addr);
	free(info->sender.params);
	addrs_free(info->rcpts, info->n_rcpts);
	free(info->skips);
	free(info->renames);
	memset(info, 0, sizeof(*info));
}

int msg_scan(const char *data, size_t len, bool at_eof, const struct msg_scan_opts *opts,
	     struct msg_info *info_r, struct buf *reason)
{
	struct scan sc = {.data = data,
			  .len = len,
			  .at_eof = at_eof,
			  .opts = opts,
			  .info = info_r,
			  .reason = reason,
			  .rcpts = {.exact_local = opts->exact_local_part}};
	struct msg_info *info = info_r;
	size_t skip_cap = 0;
	bool has_content_type = false;
	bool have_sender = false, have_rcpts = false, has_to_cc = false, has_bcc = false;

	memset(info, 0, sizeof(*info));
	if (len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0)
		sc.bom = 3;
	if (len == sc.bom) {
		buf_puts(reason, "empty file");
		return -1;
	}
	if (split_fields(&sc) < 0)
		goto fail;
	if (sc.n_fields == 0) {
		buf_puts(reason, "no header fields (the file starts with an empty line)");
		goto fail;
	}

	while (sc.n_block < sc.n_fields && (field_is(&sc, &sc.fields[sc.n_block], "X-Sender") ||
					    field_is(&sc, &sc.fields[sc.n_block], "X-Receiver")))
		sc.n_block++;
	info->envelope_from_xheaders = sc.n_block > 0;
	info->headers_start = sc.n_block > 0 ? sc.fields[sc.n_block - 1].end : sc.bom;
	add_skip(info, 0, info->headers_start, &skip_cap); /* BOM and envelope block */

	for (size_t i = sc.n_block; i < sc.n_fields; i++) {
		const struct field *f = &sc.fields[i];
		if (field_is(&sc, f, "Bcc")) {
			has_bcc = true;
			add_skip(info, f->start, f->end - f->start, &skip_cap);
			continue;
		}
		if (field_is(&sc, f, "To") || field_is(&sc, f, "Cc"))
			has_to_cc = true;
		else if (field_is(&sc, f, "Date") || field_is(&sc, f, "Message-ID") ||
			 (field_is(&sc, f, "Content-Type") && !has_content_type))
			check_field(&sc, f, &has_content_type);
		for (size_t k = f->start; k < f->end && !info->eightbit_headers; k++)
			if ((unsigned char)data[k] >= 0x80)
				info->eightbit_headers = true;
	}

	rename_invalid(&sc);
	if (envelope_block(&sc, &have_sender, &have_rcpts) < 0)
		goto fail;
	if (!have_sender && sender_from_headers(&sc) < 0)
		goto fail;
	if (!have_rcpts && rcpts_from_headers(&sc) < 0)
		goto fail;
	if (sc.rcpts.n == 0) {
		buf_puts(reason, "no recipients");
		goto fail;
	}
	if (opts->max_recipients > 0 && sc.rcpts.n > opts->max_recipients) {
		buf_printf(reason, "too many recipients (%zu, limit %u)", sc.rcpts.n,
			   opts->max_recipients);
		goto fail;
	}
	/* With X-Receiver recipients the visible To:/Cc: are not looked at, so the
	 * header has no recipients exactly when it has no To:/Cc: field. */
	info->needs_undisclosed = !has_to_cc && (have_rcpts || has_bcc);
	info->needs_smtputf8 = has_8bit(info->sender.addr);
	for (size_t i = 0; i < sc.rcpts.n; i++)
		info->needs_smtputf8 |= has_8bit(sc.rcpts.v[i].addr);
	info->rcpts = sc.rcpts.v;
	info->n_rcpts = sc.rcpts.n;
	free(sc.rcpts.slots);
	free(sc.fields);
	return 0;
fail:
	addrs_free(sc.rcpts.v, sc.rcpts.n);
	free(sc.rcpts.slots);
	free(sc.fields);
	msg_info_deinit(info);
	return -1;
}

/* ---- RFC 5322 3.3 date-time, with the obsolete forms of 4.3 ---- */

/* A date token: a run of digits ('0'), a run of letters ('A'), or one other
 * character (its own value); 0 at the end. CFWS is skipped before each. */
struct dtok {
	char type;
	size_t off, len;
	uint32_t num; /* digits: their value, saturated */
};

static int date_lex(struct lexer *lx, struct dtok *t)
{
	if (skip_cfws(lx) < 0)
		return -1;
	const char *s = lx->s;
	size_t i = lx->pos;
	t->off = i;
	t->num = 0;
	if (i >= lx->len) {
		t->type = 0;
	} else if (s[i] >= '0' && s[i] <= '9') {
		t->type = '0';
		for (; i < lx->len && s[i] >= '0' && s[i] <= '9'; i++)
			t->num =
			    t->num > 99999999 ? 999999999 : t->num * 10 + (uint32_t)(s[i] - '0');
	} else if (is_alnum(s[i])) {
		t->type = 'A';
		while (i < lx->len && is_alnum(s[i]) && !(s[i] >= '0' && s[i] <= '9'))
			i++;
	} else {
		t->type = s[i++];
	}
	t->len = i - t->off;
	lx->pos = i;
	return 0;
}

/* Index of the 3-letter name among names (any case), or -1. */
static int name_index(const char *s, const struct dtok *t, const char *const *names, int n)
{
	for (int i = 0; i < n; i++)
		if (t->type == 'A' && ascii_ieq(s + t->off, t->len, names[i]))
			return i;
	return -1;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

/*
 * date-time   = [ day-of-week "," ] date time [CFWS]
 * date        = day month year ; day = 1*2DIGIT ; year = 4*DIGIT / obs-year (2*DIGIT)
 * time        = hour ":" minute [ ":" second ] zone ; 2DIGIT each
 * zone        = ( "+" / "-" ) 4DIGIT / obs-zone
 * obs-zone    = "UT" / "GMT" / "EST" / "EDT" / "CST" / "CDT" / "MST" / "MDT" /
 *               "PST" / "PDT" / %d65-73 / %d75-90 / %d97-105 / %d107-122
 * The obsolete forms allow CFWS between all tokens, which date_lex skips.
 */
int msg_parse_date(const char *s, size_t len, int64_t *unix_r)
{
	static const char *const days[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
	static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	static const char *const zones[] = {"UT",  "UTC", "GMT", "EST", "EDT", "CST",
					    "CDT", "MST", "MDT", "PST", "PDT"};
	static const int zone_min[] = {0, 0, 0, -300, -240, -360, -300, -420, -360, -480, -420};
	static const unsigned char mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	struct buf err = BUF_INIT;
	struct lexer lx = {s, len, 0, &err, false};
	struct dtok t, day, year, hh, mm, ss = {0};
	int mon, zone = 0, r = -1;

	if (check_ctl(s, len, &err) < 0 || date_lex(&lx, &t) < 0)
		goto out;
	if (t.type == 'A') {
		if (name_index(s, &t, days, 7) < 0 || date_lex(&lx, &t) < 0 || t.type != ',' ||
		    date_lex(&lx, &t) < 0)
			goto out;
	}
	day = t;
	if (day.type != '0' || day.len > 2 || date_lex(&lx, &t) < 0 ||
	    (mon = name_index(s, &t, months, 12)) < 0 || date_lex(&lx, &year) < 0 ||
	    year.type != '0' || year.len < 2 || date_lex(&lx, &hh) < 0 || hh.type != '0' ||
	    hh.len != 2 || date_lex(&lx, &t) < 0 || t.type != ':' || date_lex(&lx, &mm) < 0 ||
	    mm.type != '0' || mm.len != 2 || date_lex(&lx, &t) < 0)
		goto out;
	if (t.type == ':') {
		if (date_lex(&lx, &ss) < 0 || ss.type != '0' || ss.len != 2 ||
		    date_lex(&lx, &t) < 0)
			goto out;
	}
	if (t.type == '+' || t.type == '-') {
		struct dtok z;
		if (date_lex(&lx, &z) < 0 || z.type != '0' || z.len != 4 || z.off != t.off + 1 ||
		    z.num % 100 > 59)
			goto out;
		zone = (int)(z.num / 100 * 60 + z.num % 100) * (t.type == '-' ? -1 : 1);
	} else if (t.type == 'A' && t.len == 1) {
		/* Military zones: RFC 5322 4.3 says to take them as -0000. */
		if (s[t.off] == 'J' || s[t.off] == 'j')
			goto out;
	} else {
		int z = name_index(s, &t, zones, 11);
		if (z < 0)
			goto out;
		zone = zone_min[z];
	}
	if (date_lex(&lx, &t) < 0 || t.type != 0)
		goto out;

	/* obs-year (RFC 5322 4.3): two digits 00-49 are 20xx, 50-99 19xx; three digits + 1900 */
	int64_t y = year.num;
	if (year.len == 2)
		y += y < 50 ? 2000 : 1900;
	else if (year.len == 3)
		y += 1900;
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	if (y < 1900 || y > 9999 || day.num < 1 || day.num > mdays[mon] ||
	    (mon == 1 && day.num == 29 && !leap) || hh.num > 23 || mm.num > 59 || ss.num > 60)
		goto out;
	if (unix_r != NULL)
		*unix_r = days_from_civil(y, (unsigned)mon + 1, day.num) * 86400 + hh.num * 3600 +
			  mm.num * 60 + ss.num - zone * 60;
	r = 0;
out:
	buf_deinit(&err);
	return r;
}

/* date-time = day-of-week "," SP date SP time SP zone (RFC 5322 3.3), always in UTC. */
void msg_format_date(int64_t unix_seconds, struct buf *out)
{
	static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	struct tm tm;

	/* Keep the year within the four digits the grammar allows. */
	if (unix_seconds < 0 || unix_seconds > INT64_C(253402300799))
		unix_seconds = 0;
	time_t t = (time_t)unix_seconds;
	if (gmtime_r(&t, &tm) == NULL) {
		t = 0;
		gmtime_r(&t, &tm);
	}
	buf_printf(out, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday], tm.tm_mday,
		   months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}
