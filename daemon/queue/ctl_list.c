/*
 * Purpose: the queue listing shared by `pickupctl list` and pickupd-sendmail
 * -bp / mailq: walking the state directories and the one-line text form of a
 * message, so both programs print the same thing.
 * Owns: nothing; each envelope lives for one callback.
 * Invariants: read-only (no lock taken, nothing written); output is printable
 * one line per message whatever the envelope holds.
 */
#include "daemon/queue/ctl_list.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "common/esc.h"

#define REPLY_WIDTH 70

long ctl_list_each(struct spool *sp, int only, ctl_list_fn fn, void *arg, struct buf *err)
{
	long seen = 0;
	bool failed = false;
	for (int s = 0; s < SPOOL_N_STATES; s++) {
		char **ids;
		size_t n;
		if (only >= 0 && s != only)
			continue;
		if (spool_list(sp, (enum spool_state)s, &ids, &n) < 0) {
			buf_printf(err, "cannot list %s: %s\n", spool_state_names[s],
				   strerror(errno));
			failed = true;
			continue;
		}
		for (size_t i = 0; i < n; i++) {
			struct spool_env e;
			struct buf why = BUF_INIT;
			if (spool_env_read(sp, (enum spool_state)s, ids[i], &e, &why) == 0) {
				fn(arg, (enum spool_state)s, ids[i], &e, NULL);
				spool_env_deinit(&e);
				seen++;
			} else if (errno != ENOENT) { /* gone meanwhile is not worth a line */
				fn(arg, (enum spool_state)s, ids[i], NULL,
				   why.data ? why.data : strerror(errno));
				seen++;
			}
			buf_deinit(&why);
		}
		spool_list_free(ids, n);
	}
	return failed ? -1 : seen;
}

static void text_cb(void *arg, enum spool_state st, const char *id, const struct spool_env *e,
		    const char *why)
{
	FILE *out = arg;
	if (e) {
		ctl_list_line(out, e, st);
		return;
	}
	fprintf(out, "%s %-8s ", id, spool_state_names[st]);
	ctl_list_put_short(out, why, 120);
	fputc('\n', out);
}

long ctl_list_text(struct spool *sp, int only, FILE *out, struct buf *err)
{
	return ctl_list_each(sp, only, text_cb, out, err);
}

const char *ctl_list_fmt_time(int64_t ms, char *out, size_t size)
{
	if (ms <= 0) {
		snprintf(out, size, "-");
		return out;
	}
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	localtime_r(&t, &tm);
	strftime(out, size, "%Y-%m-%d %H:%M:%S", &tm);
	return out;
}

void ctl_list_put_short(FILE *out, const char *s, size_t width)
{
	struct buf b = BUF_INIT;
	if (s)
		esc_append(&b, s, strlen(s));
	size_t n = b.len;
	if (n > width) {
		n = width;
		while (n > 0 && ((unsigned char)b.data[n] & 0xc0) == 0x80)
			n--;
		for (size_t k = n > 3 ? n - 3 : 0; k < n; k++)
			if (b.data[k] == '\\')
				n = k; /* not half an escape either */
	}
	if (n)
		fwrite(b.data, 1, n, out);
	if (n < b.len)
		fputs("...", out);
	buf_deinit(&b);
}

const char *ctl_list_last_reply(const struct spool_env *e)
{
	const char *any = NULL;
	if (e->reason)
		return e->reason;
	for (size_t i = e->n_rcpts; i-- > 0;) {
		if (e->rcpts[i].reply && e->rcpts[i].status != RCPT_SENT)
			return e->rcpts[i].reply;
		if (e->rcpts[i].reply && any == NULL)
			any = e->rcpts[i].reply;
	}
	return any;
}

void ctl_list_line(FILE *out, const struct spool_env *e, enum spool_state st)
{
	char t1[32], t2[32];
	fprintf(out, "%s %-8s %s %8" PRIu64 " <", e->id, spool_state_names[st],
		ctl_list_fmt_time(e->arrival_ms, t1, sizeof(t1)), e->size);
	ctl_list_put_short(out, e->sender ? e->sender : "", 80);
	fputc('>', out);
	for (size_t i = 0; i < e->n_rcpts; i++) {
		fprintf(out, "%s<", i ? ", " : " -> ");
		ctl_list_put_short(out, e->rcpts[i].addr, 80);
		fprintf(out, "> %s", spool_rcpt_status_names[e->rcpts[i].status]);
	}
	if (st == SPOOL_DEFERRED)
		fprintf(out, "; next %s", ctl_list_fmt_time(e->next_ms, t2, sizeof(t2)));
	const char *rep = ctl_list_last_reply(e);
	if (rep) {
		fputs("; ", out);
		ctl_list_put_short(out, rep, REPLY_WIDTH);
	}
	fputc('\n', out);
}
