/*
 * Purpose: parse the INI configuration of DESIGN.md "Configuration" into a struct config.
 * Owns: every string and array reachable from a struct config it returns; the struct lives
 * until config_free drops its last reference (config_ref takes one).
 * Invariants: one table, keys[], declares each key's section, type, default, field and range;
 * defaults, parsing, range checks and freeing are all driven by it. config_parse never touches
 * the filesystem. Every problem is one "NAME:LINE: message" line, all of them are reported, and
 * any problem means no config at all.
 *
 *   file     = *(line LF)                   ; CRLF accepted, a UTF-8 BOM skipped
 *   line     = *WSP [section / setting / comment] *WSP
 *   section  = "[" *WSP word [1*WSP name] *WSP "]" *WSP [comment]
 *   name     = 1*(ALPHA / DIGIT / "." / "_" / "-")
 *   setting  = key *WSP "=" *WSP value [1*WSP comment]
 *   comment  = (";" / "#") *VCHAR           ; in a value, only at its start or after WSP
 *
 * An empty value leaves a string key unset (its default, often NULL) and is an error for
 * every other type.
 */
#include "common/config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/match.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define MS_S	 1000ULL
#define MS_M	 (60 * MS_S)
#define MS_H	 (60 * MS_M)
#define MS_D	 (24 * MS_H)
#define KIB	 1024ULL
#define MIB	 (1024 * KIB)
#define GIB	 (1024 * MIB)
#define TIB	 (1024 * GIB)
#define MAX_FILE (4 * MIB) /* config_load refuses larger files: surely not a config */

enum sect {
	SEC_GENERAL,
	SEC_SPOOL,
	SEC_PICKUP,
	SEC_RELAY,
	SEC_RETRY,
	SEC_BOUNCE,
	SEC_CONTROL,
	SEC_METRICS,
	SEC_BADMAIL,
	SEC_SUBMIT,
	SEC_LOG,
	SEC__COUNT
};

enum naming { NAME_NONE, NAME_OPTIONAL, NAME_REQUIRED };

static const struct section_def {
	const char *name;
	enum naming naming;
	size_t off; /* in struct config, for the sections that occur once */
	size_t size;
} sections[SEC__COUNT] = {
    [SEC_GENERAL] = {"general", NAME_NONE, offsetof(struct config, general),
		     sizeof(struct config_general)},
    [SEC_SPOOL] = {"spool", NAME_NONE, offsetof(struct config, spool), sizeof(struct config_spool)},
    [SEC_PICKUP] = {"pickup", NAME_OPTIONAL, 0, sizeof(struct config_pickup)},
    [SEC_RELAY] = {"relay", NAME_REQUIRED, 0, sizeof(struct config_relay)},
    [SEC_RETRY] = {"retry", NAME_NONE, offsetof(struct config, retry), sizeof(struct config_retry)},
    [SEC_BOUNCE] = {"bounce", NAME_NONE, offsetof(struct config, bounce),
		    sizeof(struct config_bounce)},
    [SEC_CONTROL] = {"control", NAME_NONE, offsetof(struct config, control),
		     sizeof(struct config_control)},
    [SEC_METRICS] = {"metrics", NAME_NONE, offsetof(struct config, metrics),
		     sizeof(struct config_metrics)},
    [SEC_BADMAIL] = {"badmail", NAME_NONE, offsetof(struct config, badmail),
		     sizeof(struct config_badmail)},
    [SEC_SUBMIT] = {"submit", NAME_NONE, offsetof(struct config, submit),
		    sizeof(struct config_submit)},
    [SEC_LOG] = {"log", NAME_NONE, offsetof(struct config, log), sizeof(struct config_log)},
};

enum ktype {
	KT_STR,	     /* char *; NULL when unset */
	KT_PATH,     /* char *, absolute, trailing slashes removed */
	KT_UINT,     /* unsigned */
	KT_BOOL,     /* bool */
	KT_DURATION, /* uint64_t milliseconds */
	KT_SIZE,     /* uint64_t bytes */
	KT_ENUM,     /* an enum, stored as the index of the value in choices */
	KT_DURLIST,  /* uint64_t *ms, count at off_n; whitespace-separated durations */
	KT_STRLIST,  /* char **, count at off_n; each occurrence appends */
};

#define K_REQUIRED 1u
#define K_REPEAT   2u

struct key {
	enum sect sect;
	const char *name;
	enum ktype type;
	const char *def; /* parsed like a written value; NULL = zero */
	size_t off;
	size_t off_n;
	uint64_t min, max;	    /* KT_UINT, KT_DURATION, KT_SIZE, KT_DURLIST elements */
	const char *const *choices; /* KT_ENUM values; for KT_STR the allowed values */
	/* Extra validation of a string value: NULL if fine, else what was expected. */
	const char *(*check)(const char *v);
	unsigned flags;
};

static const char *check_hostname(const char *v);
static const char *check_instance(const char *v);
static const char *check_glob(const char *v);
static const char *check_address(const char *v);
static const char *check_listen(const char *v);
static const char *check_domain(const char *v);

static const char *const log_levels[] = {"debug", "info", "warning", "error", NULL};
static const char *const tls_modes[] = {[TLS_MODE_STARTTLS] = "starttls",
					[TLS_MODE_IMPLICIT] = "implicit",
					[TLS_MODE_NONE] = "none",
					NULL};
static const char *const rcpt_dedups[] = {
    [RCPT_DEDUP_NOCASE] = "nocase", [RCPT_DEDUP_EXACT] = "exact", NULL};
static const char *const auth_modes[] = {[AUTH_MODE_AUTO] = "auto",
					 [AUTH_MODE_PLAIN] = "plain",
					 [AUTH_MODE_LOGIN] = "login",
					 [AUTH_MODE_XOAUTH2] = "xoauth2",
					 NULL};

#define KEY(sec, st, nm, typ, dflt, fld, ...)                                                      \
	{                                                                                          \
		.sect = sec, .name = nm, .type = typ, .def = dflt, .off = offsetof(st, fld),       \
		__VA_ARGS__                                                                        \
	}
#define GENERAL(...)	       KEY(SEC_GENERAL, struct config_general, __VA_ARGS__)
#define SPOOL(...)	       KEY(SEC_SPOOL, struct config_spool, __VA_ARGS__)
#define PICKUP(...)	       KEY(SEC_PICKUP, struct config_pickup, __VA_ARGS__)
#define RELAY(...)	       KEY(SEC_RELAY, struct config_relay, __VA_ARGS__)
#define RETRY(...)	       KEY(SEC_RETRY, struct config_retry, __VA_ARGS__)
#define BOUNCE(...)	       KEY(SEC_BOUNCE, struct config_bounce, __VA_ARGS__)
#define CONTROL(...)	       KEY(SEC_CONTROL, struct config_control, __VA_ARGS__)
#define METRICS(...)	       KEY(SEC_METRICS, struct config_metrics, __VA_ARGS__)
#define BADMAIL(...)	       KEY(SEC_BADMAIL, struct config_badmail, __VA_ARGS__)
#define SUBMIT(...)	       KEY(SEC_SUBMIT, struct config_submit, __VA_ARGS__)
#define LOG(...)	       KEY(SEC_LOG, struct config_log, __VA_ARGS__)
#define RANGE(lo, hi)	       .min = (lo), .max = (hi)
#define TIMEOUT(nm, dflt, fld) RELAY(nm, KT_DURATION, dflt, fld, RANGE(1 * MS_S, MS_D))

/* Defaults here must match the comments in config.h and config/pickupd.conf. */
static const struct key keys[] = {
    GENERAL("hostname", KT_STR, NULL, hostname, .check = check_hostname),
    GENERAL("log_level", KT_STR, "info", log_level, .choices = log_levels),
    GENERAL("instance", KT_STR, "", instance, .check = check_instance),

    SPOOL("dir", KT_PATH, NULL, dir, .flags = K_REQUIRED),
    SPOOL("shutdown_timeout", KT_DURATION, "30s", shutdown_timeout_ms, RANGE(0, MS_D)),

    PICKUP("dir", KT_PATH, NULL, dir, .flags = K_REQUIRED),
    PICKUP("match", KT_STR, "*.eml", match, .check = check_glob),
    PICKUP("dot_stuffed", KT_BOOL, "no", dot_stuffed),
    PICKUP("rcpt_dedup", KT_ENUM, "nocase", rcpt_dedup, .choices = rcpt_dedups),
    PICKUP("max_message_size", KT_SIZE, "35M", max_message_size, RANGE(KIB, TIB)),
    PICKUP("max_recipients", KT_UINT, "1000", max_recipients, RANGE(1, 1000000)),
    PICKUP("max_header_size", KT_SIZE, "64K", max_header_size, RANGE(KIB, GIB)),
    PICKUP("settle_time", KT_DURATION, "2s", settle_time_ms, RANGE(0, MS_H)),
    PICKUP("rescan_interval", KT_DURATION, "30s", rescan_interval_ms, RANGE(100, MS_D)),

    RELAY("host", KT_STR, NULL, host, .check = check_hostname, .flags = K_REQUIRED),
    RELAY("port", KT_UINT, NULL, port, RANGE(1, 65535)), /* default from tls, later */
    RELAY("tls", KT_ENUM, "starttls", tls, .choices = tls_modes),
    RELAY("tls_verify", KT_BOOL, "yes", tls_verify),
    RELAY("ca_file", KT_STR, NULL, ca_file),
    RELAY("cert_file", KT_STR, NULL, cert_file),
    RELAY("key_file", KT_STR, NULL, key_file),
    RELAY("user", KT_STR, NULL, user),
    RELAY("password_file", KT_STR, NULL, password_file),
    RELAY("password_command", KT_STR, NULL, password_command),
    RELAY("auth", KT_ENUM, "auto", auth, .choices = auth_modes),
    RELAY("allow_plaintext_auth", KT_BOOL, "no", allow_plaintext_auth),
    RELAY("force_sender", KT_STR, NULL, force_sender, .check = check_address),
    RELAY("force_from", KT_BOOL, "no", force_from),
    RELAY("max_sessions", KT_UINT, "4", max_sessions, RANGE(1, 1000)),
    RELAY("max_messages_per_session", KT_UINT, "100", max_messages_per_session, RANGE(1, 1000000)),
    RELAY("rate_limit", KT_UINT, "0", rate_limit, RANGE(0, 1000000)),
    RELAY("idle_timeout", KT_DURATION, "60s", idle_timeout_ms, RANGE(0, MS_D)),
    TIMEOUT("connect_timeout", "30s", connect_timeout_ms),
    TIMEOUT("greeting_timeout", "5m", greeting_timeout_ms),
    TIMEOUT("command_timeout", "5m", command_timeout_ms),
    TIMEOUT("data_timeout", "2m", data_timeout_ms),
    TIMEOUT("data_block_timeout", "3m", data_block_timeout_ms),
    TIMEOUT("data_done_timeout", "10m", data_done_timeout_ms),

    RETRY("schedule", KT_DURLIST, "1m 5m 15m 30m 1h 2h 4h", schedule_ms,
	  .off_n = offsetof(struct config_retry, n_schedule), RANGE(100, 30 * MS_D)),
    RETRY("max_age", KT_DURATION, "5d", max_age_ms, RANGE(MS_S, 365 * MS_D)),
    RETRY("jitter_percent", KT_UINT, "10", jitter_percent, RANGE(0, 100)),
    RETRY("soft_bounce", KT_BOOL, "no", soft_bounce),
    RETRY("temporary_reply", KT_STRLIST, NULL, temporary_replies,
	  .off_n = offsetof(struct config_retry, n_temporary_replies), .flags = K_REPEAT),

    BOUNCE("enabled", KT_BOOL, "yes", enabled),
    BOUNCE("delay_warning", KT_DURATION, "0", delay_warning_ms, RANGE(0, 365 * MS_D)),
    BOUNCE("rate_limit", KT_UINT, "60", rate_limit, RANGE(0, 1000000)),

    CONTROL("socket", KT_PATH, NULL, socket), /* default <spool.dir>/control.sock, later */

    METRICS("listen", KT_STR, "", listen, .check = check_listen),

    BADMAIL("keep", KT_DURATION, "30d", keep_ms, RANGE(0, 3650 * MS_D)),
    SUBMIT("root_alias", KT_STR, NULL, root_alias, .check = check_address),
    SUBMIT("origin_domain", KT_STR, NULL, origin_domain, .check = check_domain),
    LOG("syslog", KT_BOOL, "no", syslog),
};

_Static_assert(sizeof(enum tls_mode) == sizeof(int), "KT_ENUM stores an int");
_Static_assert(sizeof(enum auth_mode) == sizeof(int), "KT_ENUM stores an int");
_Static_assert(sizeof(enum rcpt_dedup) == sizeof(int), "KT_ENUM stores an int");

/* One section as written, alive while parsing. */
struct inst {
	enum sect sect;
	char *label; /* "[relay x]", as written, for messages */
	char *name;  /* NULL for sections without one */
	int line;
	size_t index;  /* into cfg->pickups or cfg->relays */
	void *scratch; /* a section in error: parsed for its errors, then dropped */
	int key_line[ARRAY_SIZE(keys)]; /* 0 = not written */
	bool key_bad[ARRAY_SIZE(keys)]; /* reported already: "is required" would be noise */
};

struct msg {
	int line;
	size_t seq; /* keeps messages of one line in the order found */
	char *text;
};

struct parser {
	const char *name;
	struct msg *msgs; /* sorted by line at the end: checks made late report early lines */
	size_t n_msgs;
	struct config *cfg;
	struct inst **insts;
	size_t n_insts;
	struct inst *cur; /* NULL before the first section, or after a bad header */
	bool skipping;	  /* inside a section whose keys cannot be checked */
};

static void err(struct parser *p, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void err(struct parser *p, int line, const char *fmt, ...)
{
	struct buf b = BUF_INIT;
	va_list ap;

	va_start(ap, fmt);
	buf_vprintf(&b, fmt, ap);
	va_end(ap);
	p->msgs = xrealloc(p->msgs, (p->n_msgs + 1) * sizeof *p->msgs);
	p->msgs[p->n_msgs] = (struct msg){line, p->n_msgs, buf_steal(&b)};
	p->n_msgs++;
}

static int msg_cmp(const void *a, const void *b)
{
	const struct msg *x = a, *y = b;

	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Copies s for an error message: control bytes become '?', long text is cut. */
static const char *san(char *dst, size_t n, const char *s)
{
	size_t i;

	for (i = 0; s[i] != '\0' && i + 1 < n; i++)
		dst[i] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
	dst[i] = '\0';
	if (s[i] != '\0' && n > 4)
		memcpy(dst + n - 4, "...", 4);
	return dst;
}

static bool is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r';
}

static char *trim(char *s)
{
	size_t n;

	while (is_ws(*s))
		s++;
	n = strlen(s);
	while (n > 0 && is_ws(s[n - 1]))
		s[--n] = '\0';
	return s;
}

static bool has_ctl(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

/* 1*DIGIT, stopping at the first non-digit (*end_r); -1 on no digits or overflow. */
static int parse_digits(const char *s, uint64_t *n_r, const char **end_r)
{
	uint64_t n = 0;
	const char *p;

	for (p = s; *p >= '0' && *p <= '9'; p++)
		if (__builtin_mul_overflow(n, 10, &n) || __builtin_add_overflow(n, *p - '0', &n))
			return -1;
	if (p == s)
		return -1;
	*n_r = n;
	*end_r = p;
	return 0;
}

struct unit {
	const char *suffix;
	uint64_t mult;
};

/* number with one of the units' suffixes (compared with cmp) */
static int parse_scaled(const char *s, const struct unit *u, size_t n_units,
			int (*cmp)(const char *, const char *), uint64_t *r)
{
	uint64_t n;
	const char *end;

	if (parse_digits(s, &n, &end) < 0)
		return -1;
	for (size_t i = 0; i < n_units; i++)
		if (cmp(end, u[i].suffix) == 0)
			return __builtin_mul_overflow(n, u[i].mult, r) ? -1 : 0;
	return -1;
}

/* duration = 1*DIGIT ["ms" / "s" / "m" / "h" / "d"]; no unit means seconds */
int config_parse_duration(const char *s, uint64_t *ms_r)
{
	static const struct unit units[] = {{"", MS_S},	 {"ms", 1},   {"s", MS_S},
					    {"m", MS_M}, {"h", MS_H}, {"d", MS_D}};
	return parse_scaled(s, units, ARRAY_SIZE(units), strcmp, ms_r);
}

/* size = 1*DIGIT ["K" / "M" / "G" / "T"] ["B"], case-insensitive; K = 1024 */
int config_parse_size(const char *s, uint64_t *bytes_r)
{
	static const struct unit units[] = {{"", 1},	{"b", 1},    {"k", KIB}, {"kb", KIB},
					    {"m", MIB}, {"mb", MIB}, {"g", GIB}, {"gb", GIB},
					    {"t", TIB}, {"tb", TIB}};
	return parse_scaled(s, units, ARRAY_SIZE(units), strcasecmp, bytes_r);
}

int config_parse_bool(const char *s, bool *b_r)
{
	static const struct {
		const char *word;
		bool val;
	} words[] = {{"yes", true}, {"no", false},  {"true", true}, {"false", false},
		     {"on", true},  {"off", false}, {"1", true},    {"0", false}};

	for (size_t i = 0; i < ARRAY_SIZE(words); i++) {
		if (strcasecmp(s, words[i].word) == 0) {
			*b_r = words[i].val;
			return 0;
		}
	}
	return -1;
}

static int choice_index(const char *const *choices, const char *v)
{
	for (int i = 0; choices[i] != NULL; i++)
		if (strcmp(choices[i], v) == 0)
			return i;
	return -1;
}

/* The shortest exact way to write ms, for messages: "1d", "90s", "250ms". */
static void fmt_duration(struct buf *b, uint64_t ms)
{
	static const struct unit units[] = {{"d", MS_D}, {"h", MS_H}, {"m", MS_M}, {"s", MS_S}};

	for (size_t i = 0; i < ARRAY_SIZE(units); i++) {
		if (ms != 0 && ms % units[i].mult == 0) {
			buf_printf(b, "%llu%s", (unsigned long long)(ms / units[i].mult),
				   units[i].suffix);
			return;
		}
	}
	buf_printf(b, "%llu%s", (unsigned long long)ms, ms == 0 ? "" : "ms");
}

static void fmt_size(struct buf *b, uint64_t n)
{
	static const struct unit units[] = {{"T", TIB}, {"G", GIB}, {"M", MIB}, {"K", KIB}};

	for (size_t i = 0; i < ARRAY_SIZE(units); i++) {
		if (n != 0 && n % units[i].mult == 0) {
			buf_printf(b, "%llu%s", (unsigned long long)(n / units[i].mult),
				   units[i].suffix);
			return;
		}
	}
	buf_printf(b, "%llu", (unsigned long long)n);
}

static void list_choices(struct buf *b, const char *const *choices)
{
	buf_puts(b, "one of");
	for (size_t i = 0; choices[i] != NULL; i++)
		buf_printf(b, "%s %s", i ? "," : "", choices[i]);
}

/* What a key expects, for "bad value" messages. */
static void describe(struct buf *b, const struct key *k)
{
	switch (k->type) {
	case KT_STR:
		buf_puts(b, "text without control characters");
		break;
	case KT_PATH:
		buf_puts(b, "an absolute path");
		break;
	case KT_UINT:
		buf_printf(b, "a number %llu-%llu", (unsigned long long)k->min,
			   (unsigned long long)k->max);
		break;
	case KT_BOOL:
		buf_puts(b, "yes or no");
		break;
	case KT_DURATION:
	case KT_DURLIST:
		buf_puts(b, k->type == KT_DURLIST ? "durations from " : "a duration from ");
		fmt_duration(b, k->min);
		buf_puts(b, " to ");
		fmt_duration(b, k->max);
		buf_puts(b, k->type == KT_DURLIST ? " separated by spaces, like 1m 5m 1h"
						  : ", like 250ms, 30s, 5m, 2h, 2d");
		break;
	case KT_SIZE:
		buf_puts(b, "a size from ");
		fmt_size(b, k->min);
		buf_puts(b, " to ");
		fmt_size(b, k->max);
		buf_puts(b, ", like 512, 10K, 35M, 1G");
		break;
	case KT_ENUM:
		list_choices(b, k->choices);
		break;
	case KT_STRLIST:
		buf_puts(b, "non-empty text without control characters");
		break;
	}
}

/* Fills why with "bad value for 'KEY' ('VALUE'): expected ...". */
static void bad_value(struct buf *why, const struct key *k, const char *v, bool range,
		      const char *expected)
{
	char q[80];

	buf_printf(why, "%s for '%s' ('%s'): expected ", range ? "value out of range" : "bad value",
		   k->name, san(q, sizeof q, v));
	if (expected)
		buf_puts(why, expected);
	else
		describe(why, k);
}

static int parse_duration_in(const struct key *k, const char *v, uint64_t *ms_r, struct buf *why)
{
	if (config_parse_duration(v, ms_r) < 0) {
		bad_value(why, k, v, false, NULL);
		return -1;
	}
	if (*ms_r < k->min || *ms_r > k->max) {
		bad_value(why, k, v, true, NULL);
		return -1;
	}
	return 0;
}

/* Stores value v (non-empty) of key k in the section at base, or explains in why. */
static int store(const struct key *k, void *base, char *v, struct buf *why)
{
	void *f = (char *)base + k->off;
	const char *expected;
	uint64_t n;
	const char *end;
	bool b;

	switch (k->type) {
	case KT_STR:
	case KT_PATH:
	case KT_STRLIST:
		if (has_ctl(v)) {
			bad_value(why, k, v, false, "text without control characters");
			return -1;
		}
		if (k->type == KT_PATH && v[0] != '/') {
			bad_value(why, k, v, false, NULL);
			return -1;
		}
		if (k->choices != NULL && choice_index(k->choices, v) < 0) {
			struct buf e = BUF_INIT;
			list_choices(&e, k->choices);
			bad_value(why, k, v, false, e.data);
			buf_deinit(&e);
			return -1;
		}
		if (k->check != NULL && (expected = k->check(v)) != NULL) {
			bad_value(why, k, v, false, expected);
			return -1;
		}
		if (k->type == KT_PATH) {
			size_t len = strlen(v);
			while (len > 1 && v[len - 1] == '/')
				v[--len] = '\0';
		}
		if (k->type == KT_STRLIST) {
			char ***list = f;
			size_t *count = (size_t *)((char *)base + k->off_n);
			*list = xrealloc(*list, (*count + 1) * sizeof **list);
			(*list)[(*count)++] = xstrdup(v);
		} else {
			free(*(char **)f);
			*(char **)f = xstrdup(v);
		}
		return 0;
	case KT_UINT:
		if (parse_digits(v, &n, &end) < 0 || *end != '\0') {
			bad_value(why, k, v, false, NULL);
			return -1;
		}
		if (n < k->min || n > k->max) {
			bad_value(why, k, v, true, NULL);
			return -1;
		}
		*(unsigned *)f = (unsigned)n;
		return 0;
	case KT_BOOL:
		if (config_parse_bool(v, &b) < 0) {
			bad_value(why, k, v, false, NULL);
			return -1;
		}
		*(bool *)f = b;
		return 0;
	case KT_DURATION:
		if (parse_duration_in(k, v, &n, why) < 0)
			return -1;
		*(uint64_t *)f = n;
		return 0;
	case KT_SIZE:
		if (config_parse_size(v, &n) < 0) {
			bad_value(why, k, v, false, NULL);
			return -1;
		}
		if (n < k->min || n > k->max) {
			bad_value(why, k, v, true, NULL);
			return -1;
		}
		*(uint64_t *)f = n;
		return 0;
	case KT_ENUM: {
		int i = choice_index(k->choices, v);
		if (i < 0) {
			bad_value(why, k, v, false, NULL);
			return -1;
		}
		memcpy(f, &i, sizeof i);
		return 0;
	}
	case KT_DURLIST: {
		uint64_t *list = NULL;
		size_t count = 0;
		for (char *save = NULL, *tok = strtok_r(v, " \t", &save); tok != NULL;
		     tok = strtok_r(NULL, " \t", &save)) {
			list = xrealloc(list, (count + 1) * sizeof *list);
			if (parse_duration_in(k, tok, &list[count++], why) < 0) {
				free(list);
				return -1;
			}
		}
		free(*(uint64_t **)f);
		*(uint64_t **)f = list;
		*(size_t *)((char *)base + k->off_n) = count;
		return 0;
	}
	}
	return -1;
}

/* Frees what the keys of section sect own in the struct at base. */
static void section_free(enum sect sect, void *base)
{
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
		const struct key *k = &keys[i];
		void *f = (char *)base + k->off;
		if (k->sect != sect)
			continue;
		if (k->type == KT_STRLIST) {
			size_t count = *(size_t *)((char *)base + k->off_n);
			for (size_t j = 0; j < count; j++)
				free((*(char ***)f)[j]);
		}
		if (k->type == KT_STR || k->type == KT_PATH || k->type == KT_STRLIST ||
		    k->type == KT_DURLIST)
			free(*(void **)f);
	}
	if (sect == SEC_PICKUP)
		free(((struct config_pickup *)base)->name);
	else if (sect == SEC_RELAY)
		free(((struct config_relay *)base)->name);
}

static void section_defaults(enum sect sect, void *base)
{
	struct buf why = BUF_INIT;

	for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
		if (keys[i].sect != sect || keys[i].def == NULL)
			continue;
		if (keys[i].def[0] == '\0') { /* "" means off; no value check applies */
			*(char **)((char *)base + keys[i].off) = xstrdup("");
			continue;
		}
		char *v = xstrdup(keys[i].def);
		if (store(&keys[i], base, v, &why) < 0)
			abort(); /* a bad default in keys[] */
		free(v);
	}
	buf_deinit(&why);
}

static void *inst_base(struct parser *p, const struct inst *in)
{
	if (in->scratch != NULL)
		return in->scratch;
	if (in->sect == SEC_PICKUP)
		return &p->cfg->pickups[in->index];
	if (in->sect == SEC_RELAY)
		return &p->cfg->relays[in->index];
	return (char *)p->cfg + sections[in->sect].off;
}

static void inst_free(struct inst *in)
{
	if (in->scratch != NULL) {
		section_free(in->sect, in->scratch);
		free(in->scratch);
	}
	free(in->label);
	free(in->name);
	free(in);
}

static const struct key *find_key(enum sect sect, const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
		if (keys[i].sect == sect && strcmp(keys[i].name, name) == 0)
			return &keys[i];
	return NULL;
}

/* Line where a key of the section was written, else the section's own line. */
static int key_line(const struct inst *in, const char *name)
{
	const struct key *k = find_key(in->sect, name);
	int line = k ? in->key_line[k - keys] : 0;
	return line ? line : in->line;
}

static bool valid_name(const char *s)
{
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '.' || *s == '_' || *s == '-'))
			return false;
	return true;
}

/* Starts a section for the header at s ("[...]..."), or reports why it cannot. */
static void parse_header(struct parser *p, char *s, int line)
{
	char q[80], *close, *rest, *inner, *name;
	const struct section_def *def = NULL;
	enum sect sect = SEC__COUNT;
	bool bad = false;
	struct inst *in;

	p->cur = NULL;
	p->skipping = true;
	close = strchr(s, ']');
	if (close == NULL) {
		err(p, line, "unterminated section header '%s': expected ']'", san(q, sizeof q, s));
		return;
	}
	for (rest = close + 1; is_ws(*rest); rest++)
		;
	if (*rest != '\0' && *rest != ';' && *rest != '#') {
		err(p, line, "unexpected text after section header: '%s'", san(q, sizeof q, rest));
		return;
	}
	*close = '\0';
	inner = trim(s + 1);
	name = inner + strcspn(inner, " \t\v\f\r");
	if (*name != '\0') {
		*name++ = '\0';
		name = trim(name);
	}
	for (size_t i = 0; i < SEC__COUNT; i++) {
		if (strcmp(sections[i].name, inner) == 0) {
			sect = (enum sect)i;
			def = &sections[i];
		}
	}
	if (def == NULL) {
		err(p, line, "unknown section [%s]", san(q, sizeof q, inner));
		return;
	}

	/* From here on the section is known: even one in error is parsed, for its errors. */
	if (*name == '\0' && def->naming == NAME_REQUIRED) {
		err(p, line, "[%s] needs a name: [%s NAME]", def->name, def->name);
		bad = true;
	} else if (*name != '\0' && def->naming == NAME_NONE) {
		err(p, line, "[%s] takes no name", def->name);
		bad = true;
	} else if (!valid_name(name)) {
		err(p, line, "bad section name '%s': use letters, digits, '.', '_' and '-'",
		    san(q, sizeof q, name));
		bad = true;
	}

	in = xcalloc(1, sizeof *in);
	in->sect = sect;
	in->line = line;
	if (def->naming != NAME_NONE)
		in->name = xstrdup(*name ? name : bad ? "?" : "default");
	in->label = xmalloc(strlen(def->name) + strlen(name) + 4);
	sprintf(in->label, *name ? "[%s %s]" : "[%s]", def->name, name);

	for (size_t i = 0; i < p->n_insts && !bad; i++) {
		const struct inst *o = p->insts[i];
		if (o->sect == sect && o->scratch == NULL &&
		    (o->name == NULL || strcmp(o->name, in->name) == 0)) {
			err(p, line, "duplicate section %s (first at line %d)", in->label, o->line);
			bad = true;
		}
	}

	if (bad) {
		in->scratch = xcalloc(1, def->size);
		section_defaults(sect, in->scratch);
		if (sect == SEC_PICKUP || sect == SEC_RELAY) /* name is the struct's 1st field */
			*(char **)in->scratch = xstrdup(in->name);
	} else if (sect == SEC_PICKUP) {
		struct config *c = p->cfg;
		c->pickups = xrealloc(c->pickups, (c->n_pickups + 1) * sizeof *c->pickups);
		in->index = c->n_pickups++;
		memset(&c->pickups[in->index], 0, sizeof *c->pickups);
		section_defaults(sect, &c->pickups[in->index]);
		c->pickups[in->index].name = xstrdup(in->name);
		c->pickups[in->index].line = line;
	} else if (sect == SEC_RELAY) {
		struct config *c = p->cfg;
		c->relays = xrealloc(c->relays, (c->n_relays + 1) * sizeof *c->relays);
		in->index = c->n_relays++;
		memset(&c->relays[in->index], 0, sizeof *c->relays);
		section_defaults(sect, &c->relays[in->index]);
		c->relays[in->index].name = xstrdup(in->name);
		c->relays[in->index].line = line;
	}
	p->insts = xrealloc(p->insts, (p->n_insts + 1) * sizeof *p->insts);
	p->insts[p->n_insts++] = in;
	p->cur = in;
	p->skipping = false;
}

_Static_assert(offsetof(struct config_pickup, name) == 0, "scratch names");
_Static_assert(offsetof(struct config_relay, name) == 0, "scratch names");

static void parse_setting(struct parser *p, char *key, char *value, int line)
{
	char q[80];
	struct inst *in = p->cur;
	const struct key *k = find_key(in->sect, key);
	struct buf why = BUF_INIT;

	if (k == NULL) {
		err(p, line, "unknown key '%s' in %s", san(q, sizeof q, key), in->label);
		return;
	}
	if (in->key_line[k - keys] != 0 && !(k->flags & K_REPEAT)) {
		err(p, line, "duplicate key '%s' in %s (first at line %d)", k->name, in->label,
		    in->key_line[k - keys]);
		return;
	}
	if (in->key_line[k - keys] == 0)
		in->key_line[k - keys] = line;
	if (*value == '\0') {
		/* Unset: a string keeps its default, anything else needs a value. */
		if (k->type == KT_STR || k->type == KT_PATH)
			return;
		buf_printf(&why, "missing value for '%s': expected ", k->name);
		describe(&why, k);
		err(p, line, "%s", why.data);
	} else if (store(k, inst_base(p, in), value, &why) < 0) {
		err(p, line, "%s", why.data);
		in->key_bad[k - keys] = true;
	}
	buf_deinit(&why);
}

static void parse_line(struct parser *p, char *s, int line)
{
	char q[80], *eq, *key, *value;

	s = trim(s);
	if (*s == '\0' || *s == ';' || *s == '#')
		return;
	if (*s == '[') {
		parse_header(p, s, line);
		return;
	}
	eq = strchr(s, '=');
	if (eq == NULL) {
		err(p, line, "expected 'key = value' or '[section]', got '%s'",
		    san(q, sizeof q, s));
		return;
	}
	*eq = '\0';
	key = trim(s);
	value = eq + 1;
	for (char *c = value; *c; c++) {
		if ((*c == ';' || *c == '#') && (c == value || is_ws(c[-1]))) {
			*c = '\0';
			break;
		}
	}
	value = trim(value);
	if (*key == '\0') {
		err(p, line, "missing key before '='");
		return;
	}
	if (p->skipping)
		return; /* the header was already reported */
	if (p->cur == NULL) {
		err(p, line, "'%s' is outside any section", san(q, sizeof q, key));
		return;
	}
	parse_setting(p, key, value, line);
}

static const struct inst *find_inst(struct parser *p, enum sect sect)
{
	for (size_t i = 0; i < p->n_insts; i++)
		if (p->insts[i]->sect == sect && p->insts[i]->scratch == NULL)
			return p->insts[i];
	return NULL;
}

static void check_relay(struct parser *p, const struct inst *in, struct config_relay *r)
{
	const char *l = in->label;
	bool pf = r->password_file != NULL, pc = r->password_command != NULL;

	if (r->port == 0)
		r->port = r->tls == TLS_MODE_IMPLICIT ? 465 : r->tls == TLS_MODE_NONE ? 25 : 587;
	if (pf && pc)
		err(p, key_line(in, "password_command"),
		    "%s set only one of password_file and password_command", l);
	/* user alone: the secret is systemd's credential relay-NAME (secret.c),
	 * which only the daemon's start can look for. */
	if (r->user == NULL && (pf || pc))
		err(p, key_line(in, pf ? "password_file" : "password_command"), "%s %s needs user",
		    l, pf ? "password_file" : "password_command");
	if (r->auth == AUTH_MODE_XOAUTH2 && !pc)
		err(p, key_line(in, "auth"),
		    "%s auth = xoauth2 needs password_command (which prints an access token)", l);
	if (r->auth != AUTH_MODE_AUTO && r->user == NULL)
		err(p, key_line(in, "auth"), "%s auth = %s needs user", l, auth_modes[r->auth]);
	if (r->user != NULL && r->tls == TLS_MODE_NONE && !r->allow_plaintext_auth)
		err(p, key_line(in, "tls"),
		    "%s AUTH over plaintext refused; set allow_plaintext_auth = yes", l);
	if ((r->cert_file == NULL) != (r->key_file == NULL))
		err(p, key_line(in, r->cert_file ? "cert_file" : "key_file"),
		    "%s cert_file and key_file go together", l);
	if (r->force_from && r->force_sender == NULL)
		err(p, key_line(in, "force_from"), "%s force_from = yes needs force_sender", l);
}

/* A pickup folder must not be another pickup's, the spool or a state directory. */
static void check_pickup(struct parser *p, const struct inst *in, size_t idx)
{
	static const char *const states[] = {"",      "/data",	  "/queue", "/deferred",
					     "/hold", "/badmail", "/tmp"};
	const struct config *c = p->cfg;
	const char *dir = c->pickups[idx].dir, *spool = c->spool.dir;

	if (dir == NULL)
		return;
	for (size_t j = 0; j < idx; j++) {
		if (c->pickups[j].dir != NULL && strcmp(c->pickups[j].dir, dir) == 0) {
			err(p, key_line(in, "dir"), "%s dir is also the dir of [pickup %s]",
			    in->label, c->pickups[j].name);
			return;
		}
	}
	if (spool == NULL)
		return;
	size_t n = strlen(spool);
	if (strcmp(spool, "/") == 0)
		n = 0;
	for (size_t i = 0; i < ARRAY_SIZE(states); i++) {
		if (strncmp(dir, spool, n) == 0 && strcmp(dir + n, states[i]) == 0 &&
		    dir[0] != '\0') {
			err(p, key_line(in, "dir"),
			    "%s dir must not be the spool dir or one of its state directories",
			    in->label);
			return;
		}
	}
}

/* Required keys, required sections, computed defaults and cross-checks. */
static void finish(struct parser *p)
{
	struct config *c = p->cfg;
	char host[256];

	for (size_t i = 0; i < p->n_insts; i++) {
		const struct inst *in = p->insts[i];
		if (in->scratch != NULL)
			continue;
		void *base = inst_base(p, in);
		for (size_t j = 0; j < ARRAY_SIZE(keys); j++)
			if (keys[j].sect == in->sect && (keys[j].flags & K_REQUIRED) &&
			    !in->key_bad[j] && *(char **)((char *)base + keys[j].off) == NULL)
				err(p, in->line, "%s %s is required", in->label, keys[j].name);
		if (in->sect == SEC_RELAY)
			check_relay(p, in, base);
		else if (in->sect == SEC_PICKUP)
			check_pickup(p, in, in->index);
	}
	if (find_inst(p, SEC_SPOOL) == NULL)
		err(p, 1, "[spool] dir is required (there is no [spool] section)");
	if (c->n_pickups == 0)
		err(p, 1, "no [pickup] section: at least one pickup folder is required");
	if (c->n_relays == 0)
		err(p, 1, "no [relay NAME] section: at least one relay is required");

	if (c->control.socket == NULL && c->spool.dir != NULL) {
		struct buf b = BUF_INIT;
		buf_printf(&b, "%s/control.sock", strcmp(c->spool.dir, "/") ? c->spool.dir : "");
		c->control.socket = buf_steal(&b);
	}
	if (c->general.hostname == NULL) {
		if (gethostname(host, sizeof host) < 0 || host[0] == '\0')
			strcpy(host, "localhost");
		host[sizeof host - 1] = '\0';
		c->general.hostname = xstrdup(host);
		c->general.hostname_from_system = true;
	}
}

struct config *config_parse(const char *name, const char *text, size_t len, struct buf *errs)
{
	struct parser p = {.name = name};
	struct buf line = BUF_INIT;
	size_t pos = 0;
	int lineno = 0;

	p.cfg = xcalloc(1, sizeof *p.cfg);
	p.cfg->refs = 1;
	p.cfg->path = xstrdup(name);
	for (size_t i = 0; i < SEC__COUNT; i++)
		if (i != SEC_PICKUP && i != SEC_RELAY)
			section_defaults((enum sect)i, (char *)p.cfg + sections[i].off);

	if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
		pos = 3; /* a BOM, as Windows editors write */
	while (pos < len) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - (text + pos)) : len - pos;

		if (lineno < INT_MAX)
			lineno++;
		if (memchr(text + pos, '\0', n) != NULL) {
			err(&p, lineno, "NUL byte in line");
		} else {
			buf_clear(&line);
			buf_append(&line, text + pos, n);
			parse_line(&p, line.data, lineno);
		}
		pos += n + (nl != NULL);
	}
	buf_deinit(&line);
	finish(&p);

	for (size_t i = 0; i < p.n_insts; i++)
		inst_free(p.insts[i]);
	free(p.insts);
	if (p.n_msgs > 0)
		qsort(p.msgs, p.n_msgs, sizeof *p.msgs, msg_cmp);
	for (size_t i = 0; i < p.n_msgs; i++) {
		if (errs != NULL)
			buf_printf(errs, "%s:%d: %s\n", name, p.msgs[i].line, p.msgs[i].text);
		free(p.msgs[i].text);
	}
	free(p.msgs);
	if (p.n_msgs > 0) {
		config_free(p.cfg);
		return NULL;
	}
	return p.cfg;
}

struct config *config_load(const char *path, struct buf *errs)
{
	struct buf text = BUF_INIT;
	struct config *cfg = NULL;
	struct stat st;
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		goto fail;
	if (fstat(fd, &st) < 0)
		goto fail;
	if (!S_ISREG(st.st_mode)) {
		errno = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
		goto fail;
	}
	for (;;) {
		buf_reserve(&text, 64 * 1024);
		n = read(fd, text.data + text.len, text.cap - text.len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			goto fail;
		if (n == 0)
			break;
		text.len += (size_t)n;
		text.data[text.len] = '\0';
		if (text.len > MAX_FILE) {
			errno = EFBIG;
			goto fail;
		}
	}
	close(fd);
	cfg = config_parse(path, text.data, text.len, errs);
	buf_deinit(&text);
	return cfg;
fail:
	if (errs != NULL)
		buf_printf(errs, "%s: %s\n", path, strerror(errno));
	if (fd >= 0)
		close(fd);
	buf_deinit(&text);
	return NULL;
}

struct config *config_ref(struct config *cfg)
{
	__atomic_add_fetch(&cfg->refs, 1, __ATOMIC_RELAXED);
	return cfg;
}

void config_free(struct config *cfg)
{
	/* Acquire-release: the last holder sees every other holder's reads done. */
	if (cfg == NULL || __atomic_sub_fetch(&cfg->refs, 1, __ATOMIC_ACQ_REL) > 0)
		return;
	for (size_t i = 0; i < SEC__COUNT; i++)
		if (i != SEC_PICKUP && i != SEC_RELAY)
			section_free((enum sect)i, (char *)cfg + sections[i].off);
	for (size_t i = 0; i < cfg->n_pickups; i++)
		section_free(SEC_PICKUP, &cfg->pickups[i]);
	for (size_t i = 0; i < cfg->n_relays; i++)
		section_free(SEC_RELAY, &cfg->relays[i]);
	free(cfg->pickups);
	free(cfg->relays);
	free(cfg->path);
	free(cfg);
}

const struct config_relay *config_find_relay(const struct config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->n_relays; i++)
		if (strcmp(cfg->relays[i].name, name) == 0)
			return &cfg->relays[i];
	return NULL;
}

bool config_hostname_warning(const struct config *cfg, struct buf *out)
{
	const char *h = cfg->general.hostname;

	if (h == NULL || strchr(h, '.') != NULL || h[0] == '[')
		return false;
	if (cfg->general.hostname_from_system)
		buf_printf(out,
			   "host name '%s' (from gethostname(), as [general] hostname is not set) "
			   "is not fully qualified: it is the EHLO name and the domain of "
			   "MAILER-DAEMON@ and Message-ID, and relays may refuse it; set "
			   "[general] hostname = a name with a dot, like mail.example.com\n",
			   h);
	else
		buf_printf(out,
			   "[general] hostname = %s is not fully qualified: it is the EHLO name "
			   "and the domain of MAILER-DAEMON@ and Message-ID, and relays may refuse "
			   "it; use a name with a dot, like mail.example.com\n",
			   h);
	return true;
}

/* Value checks named in keys[]: each returns what was expected, or NULL when v is fine. */

static bool all_of(const char *v, const char *extra)
{
	for (; *v; v++)
		if (!((*v >= 'a' && *v <= 'z') || (*v >= 'A' && *v <= 'Z') ||
		      (*v >= '0' && *v <= '9') || strchr(extra, *v) != NULL))
			return false;
	return true;
}

/* A DNS name or an address ("192.0.2.1", "::1", "[IPv6:2001:db8::1]"), as EHLO or connect take. */
static const char *check_hostname(const char *v)
{
	return all_of(v, ".-_:[]") ? NULL : "a host name or address";
}

/* It goes into queue IDs and file names. */
static const char *check_instance(const char *v)
{
	return strlen(v) <= 32 && all_of(v, "-_") ? NULL : "up to 32 letters, digits, '-' or '_'";
}

/* A glob that can never match a file name is an error (common/match.h). */
static const char *check_glob(const char *v)
{
	return match_check(v);
}

/* An envelope address goes into MAIL FROM:<...>: nothing that could break out of it. */
static const char *check_address(const char *v)
{
	const char *at = strrchr(v, '@');

	if (at == NULL || at == v || at[1] == '\0' || strpbrk(v, " \t<>,") != NULL)
		return "an address like user@example.com";
	return NULL;
}

/* A domain for local-part@domain: a DNS name (no address literal, no '@'). */
static const char *check_domain(const char *v)
{
	return all_of(v, ".-") && v[0] != '.' && v[0] != '-' ? NULL : "a domain like example.com";
}

int config_parse_listen(const char *s, struct config_listen *l, const char **expected_r)
{
	static const char *const form = "HOST:PORT, like 127.0.0.1:9325, [::1]:9325, "
					"localhost:9325 or :9325 (all addresses)";
	const char *colon = strrchr(s, ':'), *end, *host = s;
	size_t hlen;
	uint64_t port;
	unsigned char addr[16];

	memset(l, 0, sizeof *l);
	*expected_r = form;
	if (colon == NULL || parse_digits(colon + 1, &port, &end) < 0 || *end != '\0' || port < 1 ||
	    port > 65535)
		return -1;
	l->port = (unsigned)port;
	hlen = (size_t)(colon - s);
	if (hlen > 0 && s[0] == '[') {
		if (s[hlen - 1] != ']')
			return -1;
		host = s + 1;
		hlen -= 2;
		l->kind = LISTEN_IPV6;
	} else if (memchr(s, ':', hlen) != NULL) {
		*expected_r = "an IPv6 address in brackets, like [::1]:9325";
		return -1;
	}
	if (hlen >= sizeof l->host)
		return -1;
	memcpy(l->host, host, hlen);
	l->host[hlen] = '\0';
	if (l->kind == LISTEN_IPV6) {
		if (inet_pton(AF_INET6, l->host, addr) != 1) {
			*expected_r = "an IPv6 address in brackets, like [::1]:9325";
			return -1;
		}
	} else if (hlen == 0) {
		l->kind = LISTEN_ALL;
	} else if (inet_pton(AF_INET, l->host, addr) == 1) {
		l->kind = LISTEN_IPV4;
	} else if (all_of(l->host, ".-") && l->host[strspn(l->host, "0123456789.")] != '\0' &&
		   l->host[0] != '-' && l->host[0] != '.') {
		/* A name; all digits and dots is a mistyped address, not a name. */
		l->kind = LISTEN_NAME;
	} else {
		return -1;
	}
	return 0;
}

static const char *check_listen(const char *v)
{
	struct config_listen l;
	const char *expected;

	return config_parse_listen(v, &l, &expected) < 0 ? expected : NULL;
}
