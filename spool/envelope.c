/*
 * Purpose: the envelope file format, version 2: small UTF-8 text, one field
 * per line, "key value", readable with cat and grep:
 *
 *   pickupd-envelope 2          first line: format and version
 *   id 0193A1B2C3D4E0012A000    queue ID
 *   arrival 1732350000123       claim time, ms since the epoch
 *   next-attempt 0              ms since the epoch; 0 = as soon as possible
 *   attempts 0
 *   size 1234                   content bytes
 *   pickup default              [pickup NAME] it came from
 *   file 3f2a....eml            its file name there (escaped)
 *   dot-stuffed no
 *   body 8bit                   7bit | 8bit
 *   smtputf8 no
 *   sender <a@example.com>      <> for the null sender
 *   params RET=HDRS             ESMTP parameters of the line above (optional)
 *   edit 0 96                   skip 96 bytes at offset 0 (envelope lines)
 *   edit 96 0 Received: ...     insert a header line at offset 96
 *   rcpt pending <b@example.org>
 *   params NOTIFY=FAILURE
 *   reply 451 4.3.0 try later   last reply for the rcpt above (escaped)
 *   reason no recipients        why it is in badmail (escaped)
 *   delay-warned yes            a delay notice went to the sender (optional)
 *   crc32c 5A0C33E1             CRC-32C of every byte before this line
 *   end                         last line: a file without it is torn
 *
 * Free text is escaped by esc_append (common/esc.h), as in the log: a backslash,
 * control characters, DEL and invalid UTF-8 bytes become \xHH.
 * The checksum catches what the structure cannot: a flipped byte inside a
 * field (an address that still parses, but is another address). Version 1
 * (the same without the crc32c line) is still read; it is never written.
 * Invariants: parse(format(e)) == e; the parser refuses unknown keys, missing
 * required fields, control characters, a version 2 file whose checksum is
 * missing or does not match, and anything after "end".
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/crc32c.h"
#include "common/esc.h"
#include "spool/spool.h"

#define ENV_MAGIC    "pickupd-envelope 2"
#define ENV_MAGIC_V1 "pickupd-envelope 1"
#define ENV_CRC_KEY  "crc32c"

const char *const spool_rcpt_status_names[4] = {"pending", "sent", "deferred", "failed"};

static void put_escaped(struct buf *out, const char *s)
{
	esc_append(out, s, strlen(s));
}

static void put_field(struct buf *out, const char *key, const char *value)
{
	buf_puts(out, key);
	buf_putc(out, ' ');
	put_escaped(out, value);
	buf_putc(out, '\n');
}

void spool_env_format(const struct spool_env *e, struct buf *out)
{
	size_t start = out->len;
	buf_puts(out, ENV_MAGIC "\n");
	buf_printf(out, "id %s\n", e->id);
	buf_printf(out, "arrival %" PRId64 "\n", e->arrival_ms);
	buf_printf(out, "next-attempt %" PRId64 "\n", e->next_ms);
	buf_printf(out, "attempts %u\n", e->attempts);
	buf_printf(out, "size %" PRIu64 "\n", e->size);
	if (e->origin_pickup)
		put_field(out, "pickup", e->origin_pickup);
	if (e->origin_file)
		put_field(out, "file", e->origin_file);
	buf_printf(out, "dot-stuffed %s\n", e->dot_stuffed ? "yes" : "no");
	buf_printf(out, "body %s\n", e->eightbit ? "8bit" : "7bit");
	buf_printf(out, "smtputf8 %s\n", e->smtputf8 ? "yes" : "no");
	if (e->sender) {
		buf_puts(out, "sender <");
		put_escaped(out, e->sender);
		buf_puts(out, ">\n");
		if (e->sender_params)
			put_field(out, "params", e->sender_params);
	}
	for (size_t i = 0; i < e->n_edits; i++) {
		const struct spool_edit *ed = &e->edits[i];
		buf_printf(out, "edit %" PRIu64 " %" PRIu64, ed->offset, ed->skip);
		if (ed->insert) {
			buf_putc(out, ' ');
			put_escaped(out, ed->insert);
		}
		buf_putc(out, '\n');
	}
	for (size_t i = 0; i < e->n_rcpts; i++) {
		const struct spool_rcpt *r = &e->rcpts[i];
		buf_printf(out, "rcpt %s <", spool_rcpt_status_names[r->status]);
		put_escaped(out, r->addr);
		buf_puts(out, ">\n");
		if (r->params)
			put_field(out, "params", r->params);
		if (r->reply)
			put_field(out, "reply", r->reply);
	}
	if (e->reason)
		put_field(out, "reason", e->reason);
	if (e->delay_warned)
		buf_puts(out, "delay-warned yes\n");
	buf_printf(out, ENV_CRC_KEY " %08" PRIX32 "\n",
		   crc32c_update(0, out->data + start, out->len - start));
	buf_puts(out, "end\n");
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Undoes put_escaped (see spool_int.h). */
int spool__unescape(const char *s, size_t len, char **out_r)
{
	struct buf b = BUF_INIT;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == 0x7f)
			goto fail;
		if (c == '\\') {
			/* exactly "\xHH" with upper-case hex, never NUL */
			int hi, lo;
			if (i + 4 > len || s[i + 1] != 'x' || (hi = hexval(s[i + 2])) < 0 ||
			    (lo = hexval(s[i + 3])) < 0 || (hi | lo) == 0)
				goto fail;
			buf_putc(&b, (char)(hi << 4 | lo));
			i += 3;
			continue;
		}
		buf_putc(&b, (char)c);
	}
	*out_r = buf_steal(&b);
	return 0;
fail:
	buf_deinit(&b);
	return -1;
}

static int parse_u64(const char *s, size_t len, uint64_t *v_r)
{
	uint64_t v = 0;
	if (len == 0 || len > 19)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*v_r = v;
	return 0;
}

static int parse_yesno(const char *v, size_t len, bool *b_r)
{
	if (len == 3 && memcmp(v, "yes", 3) == 0)
		*b_r = true;
	else if (len == 2 && memcmp(v, "no", 2) == 0)
		*b_r = false;
	else
		return -1;
	return 0;
}

/* "<addr>" -> addr (unescaped). */
static int parse_bracketed(const char *v, size_t len, char **addr_r)
{
	if (len < 2 || v[0] != '<' || v[len - 1] != '>')
		return -1;
	return spool__unescape(v + 1, len - 2, addr_r);
}

void spool_env_add_rcpt(struct spool_env *e, const char *addr, const char *params)
{
	e->rcpts = xrealloc(e->rcpts, (e->n_rcpts + 1) * sizeof(*e->rcpts));
	struct spool_rcpt *r = &e->rcpts[e->n_rcpts++];
	memset(r, 0, sizeof(*r));
	r->addr = xstrdup(addr);
	r->params = params ? xstrdup(params) : NULL;
	r->status = RCPT_PENDING;
}

void spool_env_add_edit(struct spool_env *e, uint64_t offset, uint64_t skip, const char *insert)
{
	e->edits = xrealloc(e->edits, (e->n_edits + 1) * sizeof(*e->edits));
	struct spool_edit *ed = &e->edits[e->n_edits++];
	ed->offset = offset;
	ed->skip = skip;
	ed->insert = insert ? xstrdup(insert) : NULL;
}

size_t spool_env_count(const struct spool_env *e, enum spool_rcpt_status st)
{
	size_t n = 0;
	for (size_t i = 0; i < e->n_rcpts; i++)
		n += e->rcpts[i].status == st;
	return n;
}

int spool_env_parse(const char *text, size_t len, struct spool_env *e, struct buf *reason)
{
	const char *p = text, *end = text + len;
	unsigned line = 0;
	bool seen_end = false, have_id = false, have_arrival = false;
	bool version2 = false, seen_crc = false;
	char **params_target = NULL;
	char **reply_target = NULL;
	const char *why = NULL;

	memset(e, 0, sizeof(*e));
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL) {
			why = "last line not terminated (torn file)";
			goto fail;
		}
		size_t llen = (size_t)(nl - p);
		const char *l = p;
		p = nl + 1;
		line++;
		if (seen_end) {
			why = "data after \"end\"";
			goto fail;
		}
		if (line == 1) {
			version2 = llen == strlen(ENV_MAGIC) && memcmp(l, ENV_MAGIC, llen) == 0;
			if (!version2 &&
			    (llen != strlen(ENV_MAGIC_V1) || memcmp(l, ENV_MAGIC_V1, llen) != 0)) {
				why = "not a version 1 or 2 envelope";
				goto fail;
			}
			continue;
		}
		if (llen == 3 && memcmp(l, "end", 3) == 0) {
			seen_end = true;
			continue;
		}
		if (seen_crc) {
			why = "field after the checksum";
			goto fail;
		}
		const char *sp = memchr(l, ' ', llen);
		if (sp == NULL) {
			why = "line without a value";
			goto fail;
		}
		size_t klen = (size_t)(sp - l);
		const char *v = sp + 1;
		size_t vlen = llen - klen - 1;
		uint64_t u;
#define KEY(k) (klen == sizeof(k) - 1 && memcmp(l, k, klen) == 0)
		char **params_next = NULL, **reply_next = NULL;
		if (KEY("id")) {
			if (vlen != SPOOL_ID_LEN || have_id)
				goto bad;
			memcpy(e->id, v, vlen);
			e->id[vlen] = '\0';
			if (!spool_id_valid(e->id))
				goto bad;
			have_id = true;
		} else if (KEY("arrival")) {
			if (parse_u64(v, vlen, &u) < 0 || u > INT64_MAX)
				goto bad;
			e->arrival_ms = (int64_t)u;
			have_arrival = true;
		} else if (KEY("next-attempt")) {
			if (parse_u64(v, vlen, &u) < 0 || u > INT64_MAX)
				goto bad;
			e->next_ms = (int64_t)u;
		} else if (KEY("attempts")) {
			if (parse_u64(v, vlen, &u) < 0 || u > 1000000)
				goto bad;
			e->attempts = (unsigned)u;
		} else if (KEY("size")) {
			if (parse_u64(v, vlen, &e->size) < 0)
				goto bad;
		} else if (KEY("pickup")) {
			if (e->origin_pickup || spool__unescape(v, vlen, &e->origin_pickup) < 0)
				goto bad;
		} else if (KEY("file")) {
			if (e->origin_file || spool__unescape(v, vlen, &e->origin_file) < 0)
				goto bad;
		} else if (KEY("dot-stuffed")) {
			if (parse_yesno(v, vlen, &e->dot_stuffed) < 0)
				goto bad;
		} else if (KEY("smtputf8")) {
			if (parse_yesno(v, vlen, &e->smtputf8) < 0)
				goto bad;
		} else if (KEY("body")) {
			if (vlen == 4 && memcmp(v, "8bit", 4) == 0)
				e->eightbit = true;
			else if (vlen == 4 && memcmp(v, "7bit", 4) == 0)
				e->eightbit = false;
			else
				goto bad;
		} else if (KEY("sender")) {
			if (e->sender || parse_bracketed(v, vlen, &e->sender) < 0)
				goto bad;
			params_next = &e->sender_params;
		} else if (KEY("params")) {
			if (params_target == NULL || *params_target)
				goto bad;
			if (spool__unescape(v, vlen, params_target) < 0)
				goto bad;
			params_next = NULL;
			reply_next = reply_target;
		} else if (KEY("edit")) {
			uint64_t off, skip;
			const char *sp1 = memchr(v, ' ', vlen);
			size_t l1 = sp1 ? (size_t)(sp1 - v) : vlen;
			if (parse_u64(v, l1, &off) < 0 || sp1 == NULL)
				goto bad;
			const char *v2 = sp1 + 1;
			size_t rest = vlen - l1 - 1;
			const char *sp2 = memchr(v2, ' ', rest);
			size_t l2 = sp2 ? (size_t)(sp2 - v2) : rest;
			if (parse_u64(v2, l2, &skip) < 0)
				goto bad;
			char *ins = NULL;
			if (sp2 && spool__unescape(sp2 + 1, rest - l2 - 1, &ins) < 0)
				goto bad;
			if (e->n_edits &&
			    off < e->edits[e->n_edits - 1].offset + e->edits[e->n_edits - 1].skip) {
				free(ins);
				why = "edits out of order";
				goto fail;
			}
			spool_env_add_edit(e, off, skip, NULL);
			e->edits[e->n_edits - 1].insert = ins;
		} else if (KEY("rcpt")) {
			const char *sp1 = memchr(v, ' ', vlen);
			if (sp1 == NULL)
				goto bad;
			size_t l1 = (size_t)(sp1 - v);
			int st = -1;
			for (int i = 0; i < 4; i++)
				if (strlen(spool_rcpt_status_names[i]) == l1 &&
				    memcmp(v, spool_rcpt_status_names[i], l1) == 0)
					st = i;
			char *addr;
			if (st < 0 || parse_bracketed(sp1 + 1, vlen - l1 - 1, &addr) < 0)
				goto bad;
			if (addr[0] == '\0') {
				free(addr);
				goto bad;
			}
			spool_env_add_rcpt(e, addr, NULL);
			free(addr);
			struct spool_rcpt *r = &e->rcpts[e->n_rcpts - 1];
			r->status = (enum spool_rcpt_status)st;
			params_next = &r->params;
			reply_next = &r->reply;
		} else if (KEY("reply")) {
			if (reply_target == NULL || *reply_target)
				goto bad;
			if (spool__unescape(v, vlen, reply_target) < 0)
				goto bad;
		} else if (KEY("delay-warned")) {
			if (parse_yesno(v, vlen, &e->delay_warned) < 0)
				goto bad;
		} else if (KEY("reason")) {
			if (e->reason || spool__unescape(v, vlen, &e->reason) < 0)
				goto bad;
		} else if (version2 && KEY(ENV_CRC_KEY)) {
			/* Upper-case hex, as written: any other spelling is damage too. */
			uint32_t want = 0;
			if (vlen != 8)
				goto bad;
			for (size_t i = 0; i < vlen; i++) {
				int h = hexval(v[i]);
				if (h < 0)
					goto bad;
				want = want << 4 | (uint32_t)h;
			}
			if (crc32c_update(0, text, (size_t)(l - text)) != want) {
				why = "checksum mismatch (a field was changed or damaged)";
				goto fail;
			}
			seen_crc = true;
		} else {
			why = "unknown field";
			goto fail;
		}
#undef KEY
		params_target = params_next;
		reply_target = reply_next;
		continue;
	bad:
		why = "bad value";
		goto fail;
	}
	if (line == 0) {
		why = "empty file";
		goto fail;
	}
	if (!seen_end) {
		why = "no \"end\" line (torn file)";
		goto fail;
	}
	if (version2 && !seen_crc) {
		why = "no checksum line";
		goto fail;
	}
	if (!have_id || !have_arrival) {
		why = "missing id or arrival";
		goto fail;
	}
	if (e->sender == NULL && e->reason == NULL) {
		why = "missing sender";
		goto fail;
	}
	return 0;
fail:
	if (reason) {
		if (line)
			buf_printf(reason, "corrupt envelope, line %u: %s", line, why);
		else
			buf_printf(reason, "corrupt envelope: %s", why);
	}
	spool_env_deinit(e);
	return -1;
}

void spool_env_deinit(struct spool_env *e)
{
	free(e->origin_pickup);
	free(e->origin_file);
	free(e->sender);
	free(e->sender_params);
	for (size_t i = 0; i < e->n_rcpts; i++) {
		free(e->rcpts[i].addr);
		free(e->rcpts[i].params);
		free(e->rcpts[i].reply);
	}
	free(e->rcpts);
	for (size_t i = 0; i < e->n_edits; i++)
		free(e->edits[i].insert);
	free(e->edits);
	free(e->reason);
	memset(e, 0, sizeof(*e));
}
