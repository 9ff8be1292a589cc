/*
 * Purpose: RFC 3464 delivery status notifications.
 *   multipart/report; report-type=delivery-status
 *     text/plain               what happened, in words, with the server's reply
 *     message/delivery-status  per-message fields, then per-recipient fields
 *     text/rfc822-headers      the original message's headers (never its body)
 * Owns: nothing; it writes through the spool API.
 * Invariants: the report is sent from <>, and a message from <> is never
 * reported on (bounce_queue refuses it; policy.c sends a failing <> message
 * to badmail only); the original's envelope lines and
 * Bcc: fields are left out of the returned headers, as on the wire.
 */
#include "daemon/delivery/bounce.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/msg.h"

#define HEADER_READ_MAX (64 * 1024)
/* The origin a report's envelope names instead of a [pickup] folder. */
#define ORIGIN_FAILED  "bounce"
#define ORIGIN_DELAYED "delay-notice"

/* RFC 3463 subject.detail of the failures pickupd decides itself (no server
 * reply to quote), by the opening of the reason their producer writes. */
static const struct {
	const char *opening;
	int subject, detail;
} local_status[] = {
    {"message expired ", 4, 7},			/* policy.c: X.4.7 delivery time expired */
    {"message size ", 3, 4},			/* smtpc.c: X.3.4 message too big for system */
    {"the message has UTF-8 addresses ", 6, 7}, /* RFC 6531: X.6.7 non-ASCII addresses */
    {"the message has 8-bit content ", 6, 3},	/* X.6.3 conversion required, not supported */
    {"sender address holds ", 1, 7},		/* X.1.7 bad sender's mailbox address syntax */
    {"recipient address holds ", 1, 3},		/* X.1.3 bad destination mailbox syntax */
};

/* 1*3DIGIT at p: the number in *v_r, and where it ends; NULL when absent
 * or longer. */
static const char *digits3(const char *p, int *v_r)
{
	int n = 0, v = 0;
	while (p[n] >= '0' && p[n] <= '9') {
		if (++n > 3)
			return NULL;
		v = v * 10 + (p[n - 1] - '0');
	}
	*v_r = v;
	return n ? p + n : NULL;
}

/* RFC 3463 status-code = class "." subject "." detail (subject and detail
 * 1*3digit) at p, followed by a space or the end; class 2, 4 or 5. */
static bool enhanced_code(const char *p, int *class_r, int *subject_r, int *detail_r)
{
	if ((p[0] != '2' && p[0] != '4' && p[0] != '5') || p[1] != '.')
		return false;
	*class_r = p[0] - '0';
	p = digits3(p + 2, subject_r);
	if (p == NULL || *p != '.')
		return false;
	p = digits3(p + 1, detail_r);
	return p != NULL && (*p == ' ' || *p == '\0');
}

void bounce_status(const char *reply, int klass, char *out, size_t len)
{
	const char *p = reply ? strchr(reply, ' ') : NULL;
	int cls, subject, detail;
	/* A success code says nothing about a failure, nor the reverse. */
	if (p && enhanced_code(p + 1, &cls, &subject, &detail) && (cls == 2) == (klass == 2)) {
		snprintf(out, len, "%d.%d.%d", klass, subject, detail);
		return;
	}
	for (size_t i = 0; reply && i < sizeof(local_status) / sizeof(local_status[0]); i++) {
		if (strncmp(reply, local_status[i].opening, strlen(local_status[i].opening)) == 0) {
			snprintf(out, len, "%d.%d.%d", klass, local_status[i].subject,
				 local_status[i].detail);
			return;
		}
	}
	snprintf(out, len, "%d.0.0", klass);
}

bool bounce_is_notification(const struct spool_env *env)
{
	return env->sender[0] == '\0' && env->origin_pickup &&
	       (strcmp(env->origin_pickup, ORIGIN_FAILED) == 0 ||
		strcmp(env->origin_pickup, ORIGIN_DELAYED) == 0);
}

/* Delivery-status fields are ASCII text on one line. */
static void put_ascii(struct buf *out, const char *s)
{
	for (; s && *s; s++) {
		unsigned char ch = (unsigned char)*s;
		buf_putc(out, ch >= 0x20 && ch < 0x7f ? (char)ch : '?');
	}
}

/* The value of ESMTP parameter key (e.g. "ENVID") in a "K=V K=V" list: a
 * copy, or NULL when absent. Keywords are case-insensitive (RFC 5321 4.1.2). */
static char *param_value(const char *params, const char *key)
{
	size_t kl = strlen(key);
	for (const char *p = params; p && *p;) {
		p += strspn(p, " ");
		size_t n = strcspn(p, " ");
		if (n > kl && p[kl] == '=' && strncasecmp(p, key, kl) == 0)
			return xstrndup(p + kl + 1, n - kl - 1);
		p += n;
	}
	return NULL;
}

/* An address in a header or field line: UTF-8 stays (SMTPUTF8), control
 * characters never reach the report (the spool's contract excludes them;
 * the report must not depend on it). */
static void put_addr(struct buf *out, const char *s)
{
	for (; s && *s; s++) {
		unsigned char ch = (unsigned char)*s;
		buf_putc(out, ch < 0x20 || ch == 0x7f ? '?' : (char)ch);
	}
}

static bool wanted(const struct spool_rcpt *r, enum bounce_kind kind)
{
	return kind == BOUNCE_FAILED ? r->status == RCPT_FAILED : r->status == RCPT_DEFERRED;
}

void bounce_build(const struct spool_env *env, enum bounce_kind kind, const char *hostname,
		  const char *bounce_id, int64_t now_ms, int64_t retry_until_ms,
		  const char *headers, size_t headers_len, struct buf *out)
{
	struct buf date = BUF_INIT, arrival = BUF_INIT;
	char boundary[128];
	msg_format_date(now_ms / 1000, &date);
	msg_format_date(env->arrival_ms / 1000, &arrival);
	snprintf(boundary, sizeof(boundary), "%s/%s", bounce_id, hostname);

	buf_printf(out, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", hostname);
	buf_puts(out, "To: <");
	put_addr(out, env->sender);
	buf_puts(out, ">\r\n");
	buf_printf(out, "Subject: %s\r\n",
		   kind == BOUNCE_FAILED ? "Undelivered Mail Returned to Sender"
					 : "Delayed Mail (still being retried)");
	buf_printf(out, "Date: %s\r\n", date.data);
	buf_printf(out, "Message-ID: <%s.dsn@%s>\r\n", bounce_id, hostname);
	buf_puts(out, "Auto-Submitted: auto-replied\r\n");
	buf_puts(out, "MIME-Version: 1.0\r\n");
	buf_printf(out,
		   "Content-Type: multipart/report; report-type=delivery-status;\r\n"
		   "\tboundary=\"%s\"\r\n",
		   boundary);
	buf_puts(out, "\r\nThis is a MIME-encapsulated message.\r\n\r\n");

	/* The words. */
	buf_printf(out,
		   "--%s\r\nContent-Description: Notification\r\n"
		   "Content-Type: text/plain; charset=utf-8\r\n\r\n",
		   boundary);
	buf_printf(out, "This is the mail system (pickupd) at host %s.\r\n\r\n", hostname);
	if (kind == BOUNCE_FAILED)
		buf_puts(out, "Your message could not be delivered to one or more recipients.\r\n"
			      "It is attached below (headers only).\r\n\r\n");
	else
		buf_puts(out, "Your message has not been delivered yet to the recipients below.\r\n"
			      "pickupd keeps trying; you do not need to send it again.\r\n\r\n");
	for (size_t i = 0; i < env->n_rcpts; i++) {
		const struct spool_rcpt *r = &env->rcpts[i];
		if (!wanted(r, kind))
			continue;
		buf_putc(out, '<');
		put_addr(out, r->addr);
		buf_puts(out, ">: ");
		put_ascii(out, r->reply ? r->reply : "no reply recorded");
		buf_puts(out, "\r\n");
	}

	/* The machine-readable report. */
	buf_printf(out,
		   "\r\n--%s\r\nContent-Description: Delivery report\r\n"
		   "Content-Type: message/delivery-status\r\n\r\n",
		   boundary);
	buf_printf(out, "Reporting-MTA: dns; %s\r\n", hostname);
	buf_printf(out, "X-Pickupd-Queue-ID: %s\r\n", env->id);
	char *envid = param_value(env->sender_params, "ENVID");
	if (envid) {
		buf_puts(out, "Original-Envelope-Id: ");
		put_ascii(out, envid);
		buf_puts(out, "\r\n");
		free(envid);
	}
	buf_printf(out, "Arrival-Date: %s\r\n", arrival.data);
	for (size_t i = 0; i < env->n_rcpts; i++) {
		const struct spool_rcpt *r = &env->rcpts[i];
		char status[40]; /* "5.999.999"; sized for any int, as gcc checks */
		if (!wanted(r, kind))
			continue;
		bounce_status(r->reply, kind == BOUNCE_DELAYED ? 4 : 5, status, sizeof(status));
		buf_puts(out, "\r\n");
		buf_puts(out, "Final-Recipient: rfc822; ");
		put_addr(out, r->addr);
		buf_puts(out, "\r\n");
		char *orcpt = param_value(r->params, "ORCPT");
		if (orcpt) {
			buf_puts(out, "Original-Recipient: ");
			put_ascii(out, orcpt);
			buf_puts(out, "\r\n");
			free(orcpt);
		}
		buf_printf(out, "Action: %s\r\n", kind == BOUNCE_FAILED ? "failed" : "delayed");
		buf_printf(out, "Status: %s\r\n", status);
		if (r->reply && r->reply[0] >= '2' && r->reply[0] <= '5') {
			buf_puts(out, "Diagnostic-Code: smtp; ");
			put_ascii(out, r->reply);
			buf_puts(out, "\r\n");
		} else {
			buf_puts(out, "Diagnostic-Code: X-pickupd; ");
			put_ascii(out, r->reply ? r->reply : "unknown");
			buf_puts(out, "\r\n");
		}
		/* RFC 3464 2.3.9: when attempts will be abandoned (not the next one). */
		if (kind == BOUNCE_DELAYED && retry_until_ms) {
			struct buf until = BUF_INIT;
			msg_format_date(retry_until_ms / 1000, &until);
			buf_printf(out, "Will-Retry-Until: %s\r\n", until.data);
			buf_deinit(&until);
		}
	}

	if (headers && headers_len) {
		buf_printf(out,
			   "\r\n--%s\r\nContent-Description: Undelivered Message Headers\r\n"
			   "Content-Type: text/rfc822-headers\r\n\r\n",
			   boundary);
		buf_append(out, headers, headers_len);
		if (out->data[out->len - 1] != '\n')
			buf_puts(out, "\r\n");
	}
	buf_printf(out, "\r\n--%s--\r\n", boundary);
	buf_deinit(&date);
	buf_deinit(&arrival);
}

/* The original's header section with the skipped ranges (envelope lines,
 * Bcc:) left out, as it went on the wire. */
static void read_headers(struct spool *sp, const struct spool_env *env, struct buf *out)
{
	int fd = spool_data_open(sp, env->id);
	if (fd < 0)
		return;
	char *raw = malloc(HEADER_READ_MAX);
	ssize_t n = raw ? pread(fd, raw, HEADER_READ_MAX, 0) : -1;
	close(fd);
	if (n <= 0) {
		free(raw);
		return;
	}
	/* The header section ends at the first empty line. */
	size_t end = (size_t)n;
	for (size_t i = 0; i + 1 < (size_t)n; i++) {
		if (raw[i] == '\n' &&
		    (raw[i + 1] == '\n' ||
		     (raw[i + 1] == '\r' && i + 2 < (size_t)n && raw[i + 2] == '\n'))) {
			end = i + 1;
			break;
		}
	}
	size_t pos = 0;
	for (size_t e = 0; e < env->n_edits && pos < end; e++) {
		const struct spool_edit *ed = &env->edits[e];
		if (ed->offset >= end)
			break;
		if (ed->offset > pos)
			buf_append(out, raw + pos, (size_t)ed->offset - pos);
		if (ed->offset >= pos)
			pos = (size_t)(ed->offset + ed->skip);
	}
	if (pos < end)
		buf_append(out, raw + pos, end - pos);
	/* NUL would end a C string in the DSN; ingest refused them, but be sure. */
	for (size_t i = 0; i < out->len; i++)
		if (out->data[i] == '\0')
			out->data[i] = ' ';
	free(raw);
}

int bounce_queue(struct spool *sp, const struct config *cfg, const struct spool_env *env,
		 enum bounce_kind kind, int64_t now_ms, int64_t due_ms, char id_r[SPOOL_ID_LEN + 1])
{
	struct buf headers = BUF_INIT, content = BUF_INIT;
	struct spool_env b;
	char provisional[SPOOL_ID_LEN + 1];
	int ret = -1;

	memset(&b, 0, sizeof(b));
	if (env->sender == NULL || env->sender[0] == '\0') {
		errno = EINVAL;
		return -1;
	}
	read_headers(sp, env, &headers);
	/* The boundary and Message-ID name the report itself: use a fresh ID
	 * for them; the stored ID comes from spool_data_create. */
	spool_new_id(sp, provisional);
	/* relay.c expires a message max_age after its arrival; soft_bounce never does. */
	int64_t until = cfg->retry.max_age_ms && !cfg->retry.soft_bounce
			    ? env->arrival_ms + (int64_t)cfg->retry.max_age_ms
			    : 0;
	bounce_build(env, kind, cfg->general.hostname, provisional, now_ms, until, headers.data,
		     headers.len, &content);
	if (spool_data_create(sp, content.data, content.len, id_r) < 0)
		goto out;
	memcpy(b.id, id_r, sizeof(b.id));
	b.arrival_ms = now_ms;
	b.next_ms = due_ms > now_ms ? due_ms : 0;
	b.size = content.len;
	b.origin_pickup = xstrdup(kind == BOUNCE_FAILED ? ORIGIN_FAILED : ORIGIN_DELAYED);
	b.origin_file = xstrdup(env->id);
	b.sender = xstrdup("");
	for (size_t i = 0; i < content.len; i++)
		if ((unsigned char)content.data[i] >= 0x80) {
			b.eightbit = true;
			break;
		}
	for (const char *p = env->sender; *p; p++)
		if ((unsigned char)*p >= 0x80)
			b.smtputf8 = true;
	spool_env_add_rcpt(&b, env->sender, NULL);
	enum spool_state st = b.next_ms ? SPOOL_DEFERRED : SPOOL_QUEUE;
	if (spool_env_write(sp, st, &b) < 0) {
		/* No envelope: recovery would re-ingest the content as mail;
		 * remove it instead, the caller logs the failure. */
		spool_data_discard(sp, id_r);
		goto out;
	}
	ret = 0;
out:
	spool_env_deinit(&b);
	buf_deinit(&headers);
	buf_deinit(&content);
	return ret;
}
