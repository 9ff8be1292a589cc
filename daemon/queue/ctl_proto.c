/*
 * Purpose: the control socket protocol (ctl_proto.h): request parsing and
 * answer formatting for the daemon, request formatting and answer parsing
 * for the clients, so that both ends read one definition.
 * Owns: nothing.
 * Invariants: every answer line formatted here is one line (a newline or CR
 * inside a text becomes a space); the parsers never read past the string
 * and accept what the formatters write.
 */
#include "daemon/queue/ctl_proto.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STR_(x) #x
#define STR(x)	STR_(x)

const char *const ctl_result_names[4] = {"pending", "ok", "error", "busy"};

/* ---- requests ------------------------------------------------------------------------------ */

int ctl_parse_request(char *line, struct ctl_request *rq, const char **error_r)
{
	char *save = NULL;
	char *verb = strtok_r(line, " \t", &save);
	char *arg = verb ? strtok_r(NULL, " \t", &save) : NULL;
	char *arg2 = arg ? strtok_r(NULL, " \t", &save) : NULL;
	memset(rq, 0, sizeof(*rq));
	if (verb == NULL) {
		*error_r = "empty request";
		return -1;
	}
	if (strcmp(verb, "batch") == 0) {
		int op = arg ? spool_op_from_name(arg) : -1;
		char *end = NULL;
		unsigned long n = arg2 ? strtoul(arg2, &end, 10) : 0;
		if (arg2 && strtok_r(NULL, " \t", &save) != NULL) {
			*error_r = "too many arguments";
			return -1;
		}
		if (op < 0) {
			*error_r = "batch needs a command: retry|hold|release|delete|requeue|purge";
			return -1;
		}
		if (arg2 == NULL || *arg2 == '\0' || *end != '\0' || n > CTL_MAX_BATCH) {
			*error_r = "batch needs a count of IDs (at most " STR(CTL_MAX_BATCH) ")";
			return -1;
		}
		rq->verb = CTL_BATCH;
		rq->op = (enum spool_op)op;
		rq->count = n;
		return 0;
	}
	if (arg2 != NULL) {
		*error_r = "too many arguments";
		return -1;
	}
	int op = spool_op_from_name(verb);
	if (strcmp(verb, "status") == 0) {
		rq->verb = CTL_STATUS;
	} else if (strcmp(verb, "flush") == 0) {
		rq->verb = CTL_FLUSH;
	} else if (op >= 0 && op != SPOOL_OP_PURGE) {
		rq->verb = CTL_ONE;
		rq->op = (enum spool_op)op;
		rq->id = arg;
	} else {
		*error_r = "unknown command";
		return -1;
	}
	return 0;
}

void ctl_put_batch_head(struct buf *out, enum spool_op op, size_t count)
{
	buf_printf(out, "batch %s %zu\n", spool_op_names[op], count);
}

void ctl_put_id(struct buf *out, const char *id)
{
	buf_printf(out, "%s\n", id);
}

/* ---- answers ------------------------------------------------------------------------------- */

/* Ends the line that starts at from: nothing inside may break it. */
static void end_line(struct buf *out, size_t from)
{
	for (size_t i = from; i < out->len; i++)
		if (out->data[i] == '\n' || out->data[i] == '\r')
			out->data[i] = ' ';
	buf_putc(out, '\n');
}

void ctl_put_answer(struct buf *out, enum spool_op_result r, const char *fmt, ...)
{
	size_t from = out->len;
	va_list ap;
	buf_printf(out, "%s ", ctl_result_names[r]);
	va_start(ap, fmt);
	buf_vprintf(out, fmt, ap);
	va_end(ap);
	end_line(out, from);
}

void ctl_put_item(struct buf *out, const struct spool_op_item *it)
{
	size_t from = out->len;
	buf_printf(out, "%s %s %s", ctl_result_names[it->result], it->id, it->text ? it->text : "");
	end_line(out, from);
}

void ctl_put_end(struct buf *out, size_t ok, size_t failed, size_t busy)
{
	buf_printf(out, "end %zu %zu %zu\n", ok, failed, busy);
}

enum spool_op_result ctl_parse_answer(const char *line, const char **text_r)
{
	for (int r = SPOOL_OP_OK; r <= SPOOL_OP_BUSY; r++) {
		size_t n = strlen(ctl_result_names[r]);
		if (strncmp(line, ctl_result_names[r], n) == 0 &&
		    (line[n] == ' ' || line[n] == '\0')) {
			*text_r = line[n] ? line + n + 1 : "";
			return (enum spool_op_result)r;
		}
	}
	*text_r = line;
	return SPOOL_OP_PENDING;
}

/* "ID " at p: an answer line about one message. */
static bool id_first(const char *p, size_t len)
{
	char id[SPOOL_ID_LEN + 1];
	if (len < SPOOL_ID_LEN + 1 || p[SPOOL_ID_LEN] != ' ')
		return false;
	memcpy(id, p, SPOOL_ID_LEN);
	id[SPOOL_ID_LEN] = '\0';
	return spool_id_valid(id);
}

bool ctl_batch_answered(const char *data, size_t len)
{
	const char *nl = len ? memchr(data, '\n', len) : NULL;
	if (nl == NULL)
		return false;
	if (strncmp(data, "error ", 6) == 0 && !id_first(data + 6, (size_t)(nl - data) - 6))
		return true;
	if (data[len - 1] != '\n')
		return false;
	size_t start = len - 1;
	while (start > 0 && data[start - 1] != '\n')
		start--;
	return len - start >= 4 && strncmp(data + start, "end ", 4) == 0;
}

int ctl_parse_item(const char *line, enum spool_op_result *r, char id[SPOOL_ID_LEN + 1],
		   const char **text_r)
{
	if (strncmp(line, "end ", 4) == 0)
		return 0;
	const char *p;
	*r = ctl_parse_answer(line, &p);
	if (*r == SPOOL_OP_PENDING || p == line || !id_first(p, strlen(p) + 1))
		return -1;
	memcpy(id, p, SPOOL_ID_LEN);
	id[SPOOL_ID_LEN] = '\0';
	p += SPOOL_ID_LEN;
	*text_r = *p == ' ' ? p + 1 : p;
	return 1;
}

/* ---- status -------------------------------------------------------------------------------- */

void ctl_put_status(struct buf *out, const struct ctl_status *st)
{
	size_t from = out->len;
	buf_printf(out, "ok queued=%zu sessions=%u stopping=%d pid=%ld version=%s", st->queued,
		   st->sessions, st->stopping ? 1 : 0, st->pid, st->version);
	for (size_t i = 0; i < st->n_relays; i++) {
		const struct ctl_relay_status *rs = &st->relays[i];
		buf_printf(out, " relay=%s,%u,%ld,%u,%u", rs->name, rs->sessions, rs->paused_s,
			   rs->limit, rs->max_sessions);
	}
	end_line(out, from);
}

/* relay=NAME,SESSIONS,PAUSED,LIMIT,MAX: the name is everything before the
 * fourth comma from the end. v is modified. */
static void parse_relay(char *v, struct ctl_status *st)
{
	char *f[4];
	for (size_t k = 0; k < 4; k++) {
		f[3 - k] = strrchr(v, ',');
		if (f[3 - k] == NULL)
			return;
		*f[3 - k]++ = '\0';
	}
	struct ctl_relay_status *rs = &st->relays[st->n_relays++];
	snprintf(rs->name, sizeof(rs->name), "%s", v);
	rs->sessions = (unsigned)strtoul(f[0], NULL, 10);
	rs->paused_s = strtol(f[1], NULL, 10);
	rs->limit = (unsigned)strtoul(f[2], NULL, 10);
	rs->max_sessions = (unsigned)strtoul(f[3], NULL, 10);
}

int ctl_parse_status(const char *line, struct ctl_status *st)
{
	memset(st, 0, sizeof(*st));
	if (strncmp(line, "ok ", 3) != 0)
		return -1;
	char *copy = xstrdup(line + 3), *save = NULL;
	for (char *tok = strtok_r(copy, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
		char *eq = strchr(tok, '=');
		if (eq == NULL)
			continue;
		*eq = '\0';
		const char *v = eq + 1;
		if (strcmp(tok, "queued") == 0)
			st->queued = (size_t)strtoull(v, NULL, 10);
		else if (strcmp(tok, "sessions") == 0)
			st->sessions = (unsigned)strtoul(v, NULL, 10);
		else if (strcmp(tok, "stopping") == 0)
			st->stopping = strcmp(v, "1") == 0;
		else if (strcmp(tok, "pid") == 0)
			st->pid = strtol(v, NULL, 10);
		else if (strcmp(tok, "version") == 0)
			snprintf(st->version, sizeof(st->version), "%s", v);
		else if (strcmp(tok, "relay") == 0 && st->n_relays < CTL_MAX_RELAYS)
			parse_relay(eq + 1, st);
	}
	free(copy);
	return 0;
}
