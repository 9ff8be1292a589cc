/*
 * Purpose: the queue listing shared by `pickupctl list` and pickupd-sendmail
 * -bp / mailq: walking the state directories with list's filters, and the
 * listing itself (header, one line per message, total; or JSON), so both
 * programs print the same thing.
 * Owns: nothing; each envelope lives for one callback.
 * Invariants: read-only (no lock taken, nothing written); output is printable
 * one line per message whatever the envelope holds.
 */
#include "daemon/listing/ctl_list.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/esc.h"
#include "daemon/listing/ctl_json.h"

#define REPLY_WIDTH 70

const char *ctl_list_domain(const char *addr)
{
	const char *at = addr ? strrchr(addr, '@') : NULL;
	return at ? at + 1 : "";
}

static bool selected(const struct ctl_filter *f, const struct spool_env *e)
{
	if (f->older_ms && e->arrival_ms > f->now_ms - f->older_ms)
		return false;
	if (f->domain == NULL)
		return true;
	for (size_t i = 0; i < e->n_rcpts; i++)
		if (strcasecmp(ctl_list_domain(e->rcpts[i].addr), f->domain) == 0)
			return true;
	return false;
}

long ctl_list_each(struct spool *sp, const struct ctl_filter *f, ctl_list_fn fn, void *arg,
		   struct buf *err)
{
	long seen = 0;
	bool failed = false;
	bool filtered = f->older_ms || f->domain;
	for (int s = 0; s < SPOOL_N_STATES; s++) {
		char **ids;
		size_t n;
		if (f->state >= 0 && s != f->state)
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
				if (selected(f, &e)) {
					fn(arg, (enum spool_state)s, ids[i], &e, NULL);
					seen++;
				}
				spool_env_deinit(&e);
			} else if (errno != ENOENT && !filtered) {
				/* Gone meanwhile is not worth a line. */
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

struct print_acc {
	FILE *out;
	json_t *arr; /* NULL: text */
	size_t messages;
	uint64_t bytes;
};

static void print_cb(void *arg, enum spool_state st, const char *id, const struct spool_env *e,
		     const char *why)
{
	struct print_acc *a = arg;
	a->messages++;
	if (e)
		a->bytes += e->size;
	if (a->arr && e) {
		json_array_append_new(a->arr, ctl_json_env(e, st));
	} else if (a->arr) {
		json_array_append_new(a->arr,
				      json_pack("{s:o,s:s,s:o}", "id", ctl_json_str(id), "state",
						spool_state_names[st], "error", ctl_json_str(why)));
	} else if (e) {
		ctl_list_line(a->out, e, st);
	} else {
		fprintf(a->out, "%s %-8s ", id, spool_state_names[st]);
		ctl_list_put_short(a->out, why, 120);
		fputc('\n', a->out);
	}
}

long ctl_list_print(struct spool *sp, const struct ctl_filter *f, bool json, FILE *out,
		    struct buf *err)
{
	struct print_acc a = {out, json ? json_array() : NULL, 0, 0};
	if (!json)
		fprintf(out, "%-20s %-8s %-19s %8s %s\n", "-Queue ID-", "-State-", "-Arrival-",
			"-Size-", "-Sender -> Recipients; next attempt; last reply-");
	long n = ctl_list_each(sp, f, print_cb, &a, err);
	if (json)
		ctl_json_print(out, a.arr);
	else if (a.messages == 0)
		fprintf(out, "-- 0 Kbytes in 0 Requests. (the queue is empty)\n");
	else
		fprintf(out, "-- %" PRIu64 " Kbytes in %zu Request%s.\n", (a.bytes + 1023) / 1024,
			a.messages, a.messages == 1 ? "" : "s");
	return n;
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
