/*
 * Purpose: the JSON values the operator tools print (ctl_json.h), built
 * with jansson.
 * Owns: nothing; each value belongs to the caller (or to the document it is
 * added to).
 * Invariants: every string is valid UTF-8 (jansson refuses anything else, so
 * a bad byte becomes U+FFFD rather than a null or a failed document).
 */
#include "daemon/listing/ctl_json.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/esc.h"
#include "daemon/listing/ctl_list.h"

json_t *ctl_json_str(const char *s)
{
	if (s == NULL)
		return json_null();
	struct buf b = BUF_INIT;
	const unsigned char *p = (const unsigned char *)s, *end = p + strlen(s);
	while (*p) {
		size_t n = esc_utf8_len(p, (size_t)(end - p));
		if (n == 0) {
			buf_puts(&b, "\xef\xbf\xbd");
			p++;
		} else {
			buf_append(&b, p, n);
			p += n;
		}
	}
	json_t *j = json_stringn(b.data ? b.data : "", b.len);
	buf_deinit(&b);
	return j ? j : json_null();
}

json_t *ctl_json_time(int64_t ms)
{
	if (ms <= 0)
		return json_null();
	char out[40];
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, sizeof(out), "%Y-%m-%dT%H:%M:%S", &tm);
	return json_sprintf("%s.%03dZ", out, (int)(ms % 1000));
}

json_t *ctl_json_env(const struct spool_env *e, enum spool_state st)
{
	json_t *rcpts = json_array();
	for (size_t i = 0; i < e->n_rcpts; i++)
		json_array_append_new(rcpts, json_pack("{s:o,s:s,s:o}", "address",
						       ctl_json_str(e->rcpts[i].addr), "status",
						       spool_rcpt_status_names[e->rcpts[i].status],
						       "reply", ctl_json_str(e->rcpts[i].reply)));
	return json_pack(
	    "{s:o,s:s,s:o,s:I,s:o,s:o,s:I,s:o,s:o,s:o,s:o,s:o}", "id", ctl_json_str(e->id), "state",
	    spool_state_names[st], "arrival", ctl_json_time(e->arrival_ms), "size",
	    (json_int_t)e->size, "sender", ctl_json_str(e->sender), "recipients", rcpts, "attempts",
	    (json_int_t)e->attempts, "next_attempt",
	    ctl_json_time(st == SPOOL_DEFERRED ? e->next_ms : 0), "last_reply",
	    ctl_json_str(ctl_list_last_reply(e)), "reason", ctl_json_str(e->reason), "pickup",
	    ctl_json_str(e->origin_pickup), "file", ctl_json_str(e->origin_file));
}

void ctl_json_print(FILE *out, json_t *doc)
{
	json_dumpf(doc, out, JSON_COMPACT | JSON_REAL_PRECISION(10));
	fputc('\n', out);
	json_decref(doc);
}
