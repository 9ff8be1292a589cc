/*
 * Purpose: tests of common/config: every key, defaults, every error kind with its line,
 * comments, value parsers, section order, and the shipped example config.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/config.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* The smallest valid config; tests append sections to it. */
#define BASE "[spool]\ndir = /s\n[pickup]\ndir = /p\n[relay r]\nhost = h\n"

static struct config *parse(const char *text, struct buf *errs)
{
	return config_parse("t.conf", text, strlen(text), errs);
}

/* Parses text that must be valid. */
static struct config *parse_ok(const char *text)
{
	struct buf errs = BUF_INIT;
	struct config *cfg = parse(text, &errs);

	if (cfg == NULL)
		print_error("unexpected errors:\n%s", errs.data ? errs.data : "");
	assert_non_null(cfg);
	assert_true(errs.len == 0);
	buf_deinit(&errs);
	return cfg;
}

static void config_full(void **state)
{
	const char *text = "[general]\n"
			   "hostname = mx.example.org\n"
			   "log_level = debug\n"
			   "instance = east-1\n"
			   "[spool]\n"
			   "dir = /var/spool/x/\n"
			   "shutdown_timeout = 10s\n"
			   "[pickup web]\n"
			   "dir = /in/web\n"
			   "match = *.msg\n"
			   "dot_stuffed = yes\n"
			   "max_message_size = 10M\n"
			   "max_recipients = 50\n"
			   "max_header_size = 128K\n"
			   "settle_time = 500ms\n"
			   "rescan_interval = 1m\n"
			   "[relay main]\n"
			   "host = smtp.example.com\n"
			   "port = 2525\n"
			   "tls = implicit\n"
			   "tls_verify = no\n"
			   "ca_file = /etc/ca.pem\n"
			   "cert_file = /etc/c.pem\n"
			   "key_file = /etc/k.pem\n"
			   "user = app@example.com\n"
			   "password_command = /bin/token --for app\n"
			   "auth = xoauth2\n"
			   "allow_plaintext_auth = yes\n"
			   "force_sender = app@example.com\n"
			   "force_from = yes\n"
			   "max_sessions = 8\n"
			   "max_messages_per_session = 20\n"
			   "rate_limit = 30\n"
			   "idle_timeout = 5s\n"
			   "connect_timeout = 11s\n"
			   "greeting_timeout = 12s\n"
			   "command_timeout = 13s\n"
			   "data_timeout = 14s\n"
			   "data_block_timeout = 15s\n"
			   "data_done_timeout = 16s\n"
			   "[retry]\n"
			   "schedule = 30s 2m 1h\n"
			   "max_age = 2d\n"
			   "jitter_percent = 0\n"
			   "soft_bounce = yes\n"
			   "temporary_reply = 554 DT:SPM\n"
			   "[bounce]\n"
			   "enabled = no\n"
			   "delay_warning = 12h\n"
			   "rate_limit = 0\n"
			   "[control]\n"
			   "socket = /run/p/ctl.sock\n"
			   "[metrics]\n"
			   "listen = 127.0.0.1:9325\n"
			   "[log]\n"
			   "syslog = yes\n";
	struct config *c = parse_ok(text);

	assert_string_equal(c->path, "t.conf");
	assert_string_equal(c->general.hostname, "mx.example.org");
	assert_string_equal(c->general.log_level, "debug");
	assert_string_equal(c->general.instance, "east-1");
	assert_string_equal(c->spool.dir, "/var/spool/x"); /* trailing slash dropped */
	assert_int_equal(c->spool.shutdown_timeout_ms, 10000);

	assert_int_equal(c->n_pickups, 1);
	const struct config_pickup *pk = &c->pickups[0];
	assert_string_equal(pk->name, "web");
	assert_string_equal(pk->dir, "/in/web");
	assert_string_equal(pk->match, "*.msg");
	assert_true(pk->dot_stuffed);
	assert_int_equal(pk->max_message_size, 10 * 1024 * 1024);
	assert_int_equal(pk->max_recipients, 50);
	assert_int_equal(pk->max_header_size, 128 * 1024);
	assert_int_equal(pk->settle_time_ms, 500);
	assert_int_equal(pk->rescan_interval_ms, 60000);
	assert_int_equal(pk->line, 8);

	assert_int_equal(c->n_relays, 1);
	const struct config_relay *r = &c->relays[0];
	assert_string_equal(r->name, "main");
	assert_string_equal(r->host, "smtp.example.com");
	assert_int_equal(r->port, 2525);
	assert_int_equal(r->tls, TLS_MODE_IMPLICIT);
	assert_false(r->tls_verify);
	assert_string_equal(r->ca_file, "/etc/ca.pem");
	assert_string_equal(r->cert_file, "/etc/c.pem");
	assert_string_equal(r->key_file, "/etc/k.pem");
	assert_string_equal(r->user, "app@example.com");
	assert_null(r->password_file);
	assert_string_equal(r->password_command, "/bin/token --for app");
	assert_int_equal(r->auth, AUTH_MODE_XOAUTH2);
	assert_true(r->allow_plaintext_auth);
	assert_string_equal(r->force_sender, "app@example.com");
	assert_true(r->force_from);
	assert_int_equal(r->max_sessions, 8);
	assert_int_equal(r->max_messages_per_session, 20);
	assert_int_equal(r->rate_limit, 30);
	assert_int_equal(r->idle_timeout_ms, 5000);
	assert_int_equal(r->connect_timeout_ms, 11000);
	assert_int_equal(r->greeting_timeout_ms, 12000);
	assert_int_equal(r->command_timeout_ms, 13000);
	assert_int_equal(r->data_timeout_ms, 14000);
	assert_int_equal(r->data_block_timeout_ms, 15000);
	assert_int_equal(r->data_done_timeout_ms, 16000);
	assert_int_equal(r->line, 17);

	assert_int_equal(c->retry.n_schedule, 3);
	assert_int_equal(c->retry.schedule_ms[0], 30000);
	assert_int_equal(c->retry.schedule_ms[1], 120000);
	assert_int_equal(c->retry.schedule_ms[2], 3600000);
	assert_int_equal(c->retry.max_age_ms, 2 * 86400000ULL);
	assert_int_equal(c->retry.jitter_percent, 0);
	assert_true(c->retry.soft_bounce);
	assert_int_equal(c->retry.n_temporary_replies, 1);
	assert_string_equal(c->retry.temporary_replies[0], "554 DT:SPM");

	assert_false(c->bounce.enabled);
	assert_int_equal(c->bounce.delay_warning_ms, 12 * 3600000ULL);
	assert_int_equal(c->bounce.rate_limit, 0);
	assert_string_equal(c->control.socket, "/run/p/ctl.sock");
	assert_string_equal(c->metrics.listen, "127.0.0.1:9325");
	assert_true(c->log.syslog);
	assert_ptr_equal(config_find_relay(c, "main"), r);
	assert_null(config_find_relay(c, "other"));
	config_free(c);
}

static void config_defaults(void **state)
{
	struct config *c = parse_ok(BASE);
	char host[256] = "";

	gethostname(host, sizeof host - 1);
	assert_string_equal(c->general.hostname, host[0] ? host : "localhost");
	assert_string_equal(c->general.log_level, "info");
	assert_string_equal(c->general.instance, "");
	assert_string_equal(c->spool.dir, "/s");
	assert_int_equal(c->spool.shutdown_timeout_ms, 30000);

	const struct config_pickup *pk = &c->pickups[0];
	assert_string_equal(pk->name, "default");
	assert_string_equal(pk->match, "*.eml");
	assert_false(pk->dot_stuffed);
	assert_int_equal(pk->max_message_size, 35 * 1024 * 1024);
	assert_int_equal(pk->max_recipients, 1000);
	assert_int_equal(pk->max_header_size, 64 * 1024);
	assert_int_equal(pk->settle_time_ms, 2000);
	assert_int_equal(pk->rescan_interval_ms, 30000);

	const struct config_relay *r = &c->relays[0];
	assert_int_equal(r->port, 587);
	assert_int_equal(r->tls, TLS_MODE_STARTTLS);
	assert_true(r->tls_verify);
	assert_null(r->ca_file);
	assert_null(r->cert_file);
	assert_null(r->key_file);
	assert_null(r->user);
	assert_null(r->password_file);
	assert_null(r->password_command);
	assert_int_equal(r->auth, AUTH_MODE_AUTO);
	assert_false(r->allow_plaintext_auth);
	assert_null(r->force_sender);
	assert_false(r->force_from);
	assert_int_equal(r->max_sessions, 4);
	assert_int_equal(r->max_messages_per_session, 100);
	assert_int_equal(r->rate_limit, 0);
	assert_int_equal(r->idle_timeout_ms, 60000);
	assert_int_equal(r->connect_timeout_ms, 30000);
	assert_int_equal(r->greeting_timeout_ms, 300000);
	assert_int_equal(r->command_timeout_ms, 300000);
	assert_int_equal(r->data_timeout_ms, 120000);
	assert_int_equal(r->data_block_timeout_ms, 180000);
	assert_int_equal(r->data_done_timeout_ms, 600000);

	static const uint64_t sched[] = {60000,	  300000,  900000,  1800000,
					 3600000, 7200000, 14400000};
	assert_int_equal(c->retry.n_schedule, ARRAY_SIZE(sched));
	assert_memory_equal(c->retry.schedule_ms, sched, sizeof sched);
	assert_int_equal(c->retry.max_age_ms, 5 * 86400000ULL);
	assert_int_equal(c->retry.jitter_percent, 10);
	assert_false(c->retry.soft_bounce);
	assert_int_equal(c->retry.n_temporary_replies, 0);
	assert_true(c->bounce.enabled);
	assert_int_equal(c->bounce.delay_warning_ms, 0);
	assert_int_equal(c->bounce.rate_limit, 60);
	assert_string_equal(c->control.socket, "/s/control.sock");
	assert_string_equal(c->metrics.listen, "");
	assert_false(c->log.syslog);
	config_free(c);
}

static void config_port_default_by_tls(void **state)
{
	static const struct {
		const char *extra;
		unsigned port;
	} cases[] = {
	    {"", 587},
	    {"tls = starttls\n", 587},
	    {"tls = implicit\n", 465},
	    {"tls = none\n", 25},
	    {"tls = none\nport = 2525\n", 2525},
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char text[256];
		snprintf(text, sizeof text, "%s%s", BASE, cases[i].extra);
		struct config *c = parse_ok(text);
		assert_int_equal(c->relays[0].port, cases[i].port);
		config_free(c);
	}
}

/* Each error kind, with its exact message and line. */
static void config_errors(void **state)
{
	static const struct {
		const char *text;
		const char *errs;
	} cases[] = {
	    {BASE "[foo]\nbar = 1\n", "t.conf:7: unknown section [foo]\n"},
	    {BASE "bar = 1\n", "t.conf:7: unknown key 'bar' in [relay r]\n"},
	    {BASE "port = http\n",
	     "t.conf:7: bad value for 'port' ('http'): expected a number 1-65535\n"},
	    {BASE "port = 70000\n",
	     "t.conf:7: value out of range for 'port' ('70000'): expected a number 1-65535\n"},
	    {BASE "port = -1\n",
	     "t.conf:7: bad value for 'port' ('-1'): expected a number 1-65535\n"},
	    {BASE "port =\n", "t.conf:7: missing value for 'port': expected a number 1-65535\n"},
	    {BASE "max_sessions = 0\n", "t.conf:7: value out of range for 'max_sessions' ('0'): "
					"expected a number 1-1000\n"},
	    {BASE "idle_timeout = 5x\n",
	     "t.conf:7: bad value for 'idle_timeout' ('5x'): expected a duration from 0 to 1d, "
	     "like 250ms, 30s, 5m, 2h, 2d\n"},
	    {BASE "connect_timeout = 0\n",
	     "t.conf:7: value out of range for 'connect_timeout' ('0'): expected a duration "
	     "from 1s to 1d, like 250ms, 30s, 5m, 2h, 2d\n"},
	    {"[spool]\ndir = /s\n[pickup]\ndir = /p\nmax_message_size = 10X\n[relay r]\nhost = h\n",
	     "t.conf:5: bad value for 'max_message_size' ('10X'): expected a size from 1K to "
	     "1T, like 512, 10K, 35M, 1G\n"},
	    {BASE "tls_verify = maybe\n",
	     "t.conf:7: bad value for 'tls_verify' ('maybe'): expected yes or no\n"},
	    {BASE "tls = ssl\n",
	     "t.conf:7: bad value for 'tls' ('ssl'): expected one of starttls, implicit, none\n"},
	    {BASE "host = x\n", "t.conf:7: duplicate key 'host' in [relay r] (first at line 6)\n"},
	    {BASE "[relay r]\nhost = y\n",
	     "t.conf:7: duplicate section [relay r] (first at line 5)\n"},
	    {BASE "[spool]\n", "t.conf:7: duplicate section [spool] (first at line 1)\n"},
	    {BASE "[pickup default]\ndir = /q\n",
	     "t.conf:7: duplicate section [pickup default] (first at line 3)\n"},
	    {BASE "[relay]\nhost = y\n", "t.conf:7: [relay] needs a name: [relay NAME]\n"},
	    {BASE "[retry x]\n", "t.conf:7: [retry] takes no name\n"},
	    {BASE "[relay a/b]\nhost = y\n",
	     "t.conf:7: bad section name 'a/b': use letters, digits, '.', '_' and '-'\n"},
	    {BASE "[relay x\nhost = y\n",
	     "t.conf:7: unterminated section header '[relay x': expected ']'\n"},
	    {BASE "[relay x] junk\n", "t.conf:7: unexpected text after section header: 'junk'\n"},
	    {BASE "just words\n",
	     "t.conf:7: expected 'key = value' or '[section]', got 'just words'\n"},
	    {BASE " = 3\n", "t.conf:7: missing key before '='\n"},
	    {"x = 1\n" BASE, "t.conf:1: 'x' is outside any section\n"},
	    {"[spool]\n[pickup]\ndir = /p\n[relay r]\nhost = h\n",
	     "t.conf:1: [spool] dir is required\n"},
	    {"[spool]\ndir =\n[pickup]\ndir = /p\n[relay r]\nhost = h\n",
	     "t.conf:1: [spool] dir is required\n"},
	    {"[pickup]\ndir = /p\n[relay r]\nhost = h\n",
	     "t.conf:1: [spool] dir is required (there is no [spool] section)\n"},
	    {"[spool]\ndir = /s\n[pickup]\ndir = /p\n[relay r]\n",
	     "t.conf:5: [relay r] host is required\n"},
	    {"[spool]\ndir = /s\n[pickup x]\n[relay r]\nhost = h\n",
	     "t.conf:3: [pickup x] dir is required\n"},
	    {"[spool]\ndir = /s\n[relay r]\nhost = h\n",
	     "t.conf:1: no [pickup] section: at least one pickup folder is required\n"},
	    {"[spool]\ndir = /s\n[pickup]\ndir = /p\n",
	     "t.conf:1: no [relay NAME] section: at least one relay is required\n"},
	    {"[spool]\ndir = s\n[pickup]\ndir = /p\n[relay r]\nhost = h\n",
	     "t.conf:2: bad value for 'dir' ('s'): expected an absolute path\n"},
	    {BASE "password_file = /pw\n", "t.conf:7: [relay r] password_file needs user\n"},
	    {BASE "user = u\npassword_file = /pw\npassword_command = /bin/pw\n",
	     "t.conf:9: [relay r] set only one of password_file and password_command\n"},
	    {BASE "user = u\npassword_file = /pw\nauth = xoauth2\n",
	     "t.conf:9: [relay r] auth = xoauth2 needs password_command (which prints an "
	     "access token)\n"},
	    {BASE "auth = plain\n", "t.conf:7: [relay r] auth = plain needs user\n"},
	    {BASE "tls = none\nuser = u\npassword_file = /pw\n",
	     "t.conf:7: [relay r] AUTH over plaintext refused; set allow_plaintext_auth = "
	     "yes\n"},
	    {BASE "cert_file = /c\n", "t.conf:7: [relay r] cert_file and key_file go together\n"},
	    {BASE "force_from = yes\n", "t.conf:7: [relay r] force_from = yes needs "
					"force_sender\n"},
	    {BASE "force_sender = <a@b>\n",
	     "t.conf:7: bad value for 'force_sender' ('<a@b>'): expected an address like "
	     "user@example.com\n"},
	    {"[spool]\ndir = /s\n[pickup]\ndir = /p\n[relay r]\nhost = a b\n",
	     "t.conf:6: bad value for 'host' ('a b'): expected a host name or address\n"},
	    {BASE "[metrics]\nlisten = 9325\n",
	     "t.conf:8: bad value for 'listen' ('9325'): expected HOST:PORT, like "
	     "127.0.0.1:9325, [::1]:9325, localhost:9325 or :9325 (all addresses)\n"},
	    {BASE "[metrics]\nlisten = ::1:9325\n",
	     "t.conf:8: bad value for 'listen' ('::1:9325'): expected an IPv6 address in "
	     "brackets, like [::1]:9325\n"},
	    {BASE "[general]\nlog_level = loud\n",
	     "t.conf:8: bad value for 'log_level' ('loud'): expected one of debug, info, "
	     "warning, error\n"},
	    {BASE "[retry]\nschedule = 1m x 5m\n",
	     "t.conf:8: bad value for 'schedule' ('x'): expected durations from 100ms to 30d "
	     "separated by spaces, like 1m 5m 1h\n"},
	    {BASE "[retry]\njitter_percent = 101\n",
	     "t.conf:8: value out of range for 'jitter_percent' ('101'): expected a number "
	     "0-100\n"},
	    {BASE "[retry]\ntemporary_reply =\n",
	     "t.conf:8: missing value for 'temporary_reply': expected non-empty text without "
	     "control characters\n"},
	    {BASE "[pickup b]\ndir = /p\n", "t.conf:8: [pickup b] dir is also the dir of "
					    "[pickup default]\n"},
	    {BASE "[pickup b]\ndir = /s/queue\n",
	     "t.conf:8: [pickup b] dir must not be the spool dir or one of its state "
	     "directories\n"},
	    {BASE "user = a\x01z\n", "t.conf:7: bad value for 'user' ('a?z'): expected text "
				     "without control characters\n"},

	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct buf errs = BUF_INIT;
		struct config *c = parse(cases[i].text, &errs);
		if (c != NULL || errs.data == NULL || strcmp(errs.data, cases[i].errs) != 0)
			print_error("case %zu:\n%s", i, cases[i].text);
		assert_null(c);
		assert_non_null(errs.data);
		assert_string_equal(errs.data, cases[i].errs);
		buf_deinit(&errs);
	}
}

/* All errors are reported, in line order, even those found by late checks. */
static void config_several_errors(void **state)
{
	const char *text = "[spool]\n"		    /* 1: dir missing */
			   "shutdown_timeout = x\n" /* 2 */
			   "[pickup]\n"
			   "dir = /p\n"
			   "[relay a]\n" /* 5 */
			   "host = h\n"
			   "port = 0\n"	 /* 7 */
			   "bogus = 1\n" /* 8 */
			   "[nope]\n"	 /* 9 */
			   "ignored = 1\n"
			   "[relay b]\n"	     /* 11: host missing */
			   "tls_verify = perhaps\n"; /* 12 */
	struct buf errs = BUF_INIT;

	assert_null(parse(text, &errs));
	assert_string_equal(
	    errs.data, "t.conf:1: [spool] dir is required\n"
		       "t.conf:2: bad value for 'shutdown_timeout' ('x'): expected a duration "
		       "from 0 to 1d, like 250ms, 30s, 5m, 2h, 2d\n"
		       "t.conf:7: value out of range for 'port' ('0'): expected a number "
		       "1-65535\n"
		       "t.conf:8: unknown key 'bogus' in [relay a]\n"
		       "t.conf:9: unknown section [nope]\n"
		       "t.conf:11: [relay b] host is required\n"
		       "t.conf:12: bad value for 'tls_verify' ('perhaps'): expected yes or no\n");
	buf_deinit(&errs);

	/* A duplicate section is still checked, though it is dropped. */
	assert_null(parse(BASE "[relay r]\nport = x\n", &errs));
	assert_string_equal(errs.data,
			    "t.conf:7: duplicate section [relay r] (first at line 5)\n"
			    "t.conf:8: bad value for 'port' ('x'): expected a number 1-65535\n");
	buf_deinit(&errs);

	/* A NUL byte is reported, not taken for the end of the line. */
	static const char nul[] = BASE "host\0= x\nport = x\n";
	assert_null(config_parse("t.conf", nul, sizeof nul - 1, &errs));
	assert_string_equal(errs.data,
			    "t.conf:7: NUL byte in line\n"
			    "t.conf:8: bad value for 'port' ('x'): expected a number 1-65535\n");
	buf_deinit(&errs);

	/* No errs buffer: still NULL, no crash. */
	assert_null(parse("[x]\n", NULL));
}

static void config_comments(void **state)
{
	const char *text = "; a comment\n"
			   "# another\n"
			   "   ; indented comment\n"
			   "\n"
			   "[spool] ; after a header\n"
			   "dir = /s   ; trailing\n"
			   "[pickup]#no space needed after ]\n"
			   "dir = /p#q\n"
			   "match = *.eml\t# tab before\n"
			   "[relay r]\r\n"
			   "host = h  \r\n"
			   "user = u;v\n"
			   "password_file = /a#b ;x\n"
			   "force_sender =   ; empty, so unset\n"
			   "[retry]\n"
			   "temporary_reply = 554 5.7.1 #1 spam\n";
	struct config *c = parse_ok(text);

	assert_string_equal(c->spool.dir, "/s");
	assert_string_equal(c->pickups[0].dir, "/p#q");
	assert_string_equal(c->pickups[0].match, "*.eml");
	assert_string_equal(c->relays[0].host, "h");
	assert_string_equal(c->relays[0].user, "u;v");
	assert_string_equal(c->relays[0].password_file, "/a#b");
	assert_null(c->relays[0].force_sender);
	assert_string_equal(c->retry.temporary_replies[0], "554 5.7.1");
	config_free(c);

	/* A BOM and a missing final newline are fine. */
	c = parse_ok("\xEF\xBB\xBF" BASE "port = 25");
	assert_int_equal(c->relays[0].port, 25);
	config_free(c);
}

static void config_durations(void **state)
{
	static const struct {
		const char *s;
		int ok;
		uint64_t ms;
	} cases[] = {
	    {"250ms", 0, 250},
	    {"30s", 0, 30000},
	    {"5m", 0, 300000},
	    {"2h", 0, 7200000},
	    {"2d", 0, 172800000},
	    {"45", 0, 45000},
	    {"0", 0, 0},
	    {"0ms", 0, 0},
	    {"", -1, 0},
	    {"s", -1, 0},
	    {"-5s", -1, 0},
	    {"+5s", -1, 0},
	    {"5 s", -1, 0},
	    {" 5s", -1, 0},
	    {"5x", -1, 0},
	    {"1.5h", -1, 0},
	    {"5S", -1, 0},
	    {"1h30m", -1, 0},
	    {"18446744073709551615ms", 0, UINT64_MAX},
	    {"18446744073709551616ms", -1, 0},
	    {"18446744073709552s", -1, 0},
	    {"213503982334601d", -1, 0},
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		uint64_t ms = 12345;
		int rc = config_parse_duration(cases[i].s, &ms);
		if (rc != cases[i].ok)
			print_error("duration '%s'\n", cases[i].s);
		assert_int_equal(rc, cases[i].ok);
		if (rc == 0)
			assert_int_equal(ms, cases[i].ms);
	}
}

static void config_sizes(void **state)
{
	static const struct {
		const char *s;
		int ok;
		uint64_t n;
	} cases[] = {
	    {"512", 0, 512},
	    {"10K", 0, 10240},
	    {"10k", 0, 10240},
	    {"35M", 0, 35 * 1024 * 1024},
	    {"1G", 0, 1024 * 1024 * 1024},
	    {"1g", 0, 1024 * 1024 * 1024},
	    {"2KB", 0, 2048},
	    {"0", 0, 0},
	    {"", -1, 0},
	    {"K", -1, 0},
	    {"-1K", -1, 0},
	    {"1.5M", -1, 0},
	    {"10 K", -1, 0},
	    {"10Q", -1, 0},
	    {"18446744073709551615", 0, UINT64_MAX},
	    {"18446744073709551616", -1, 0},
	    {"17179869184G", -1, 0},
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		uint64_t n = 12345;
		int rc = config_parse_size(cases[i].s, &n);
		if (rc != cases[i].ok)
			print_error("size '%s'\n", cases[i].s);
		assert_int_equal(rc, cases[i].ok);
		if (rc == 0)
			assert_int_equal(n, cases[i].n);
	}
}

static void config_bools(void **state)
{
	static const struct {
		const char *s;
		int ok;
		bool b;
	} cases[] = {
	    {"yes", 0, true},  {"YES", 0, true},    {"no", 0, false},	 {"No", 0, false},
	    {"true", 0, true}, {"False", 0, false}, {"on", 0, true},	 {"OFF", 0, false},
	    {"1", 0, true},    {"0", 0, false},	    {"", -1, false},	 {"y", -1, false},
	    {"2", -1, false},  {"yes ", -1, false}, {"nope", -1, false},
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		bool b = !cases[i].b;
		int rc = config_parse_bool(cases[i].s, &b);
		if (rc != cases[i].ok)
			print_error("bool '%s'\n", cases[i].s);
		assert_int_equal(rc, cases[i].ok);
		if (rc == 0)
			assert_int_equal(b, cases[i].b);
	}
}

static void config_example_parses(void **state)
{
	struct buf errs = BUF_INIT;
	struct config *c = config_load("../../../config/pickupd.conf", &errs);

	if (c == NULL)
		print_error("%s", errs.data ? errs.data : "");
	assert_non_null(c);
	assert_int_equal(errs.len, 0);
	assert_string_equal(c->spool.dir, "/var/spool/pickupd");
	assert_int_equal(c->n_relays, 1);
	assert_string_equal(c->relays[0].name, "primary");
	assert_null(c->relays[0].password_file); /* the credential relay-primary */
	assert_string_equal(c->relays[0].user, "app@example.com");
	assert_null(c->relays[0].password_command);
	assert_null(c->relays[0].ca_file);
	assert_string_equal(c->metrics.listen, "");
	config_free(c);
}

static void config_load_errors(void **state)
{
	struct buf errs = BUF_INIT;

	assert_null(config_load("/nonexistent/pickupd.conf", &errs));
	assert_string_equal(errs.data, "/nonexistent/pickupd.conf: No such file or directory\n");
	buf_clear(&errs);
	assert_null(config_load("/", &errs));
	assert_string_equal(errs.data, "/: Is a directory\n");
	buf_deinit(&errs);
}

static void config_order_kept(void **state)
{
	const char *text = "[spool]\ndir = /s\n"
			   "[pickup zeta]\ndir = /z\n"
			   "[relay second]\nhost = b\n"
			   "[pickup]\ndir = /d\n"
			   "[relay first]\nhost = a\n"
			   "[pickup alpha]\ndir = /a\n"
			   "[relay third]\nhost = c\ntls = implicit\n";
	struct config *c = parse_ok(text);

	assert_int_equal(c->n_pickups, 3);
	assert_string_equal(c->pickups[0].name, "zeta");
	assert_string_equal(c->pickups[0].dir, "/z");
	assert_string_equal(c->pickups[1].name, "default");
	assert_string_equal(c->pickups[1].dir, "/d");
	assert_string_equal(c->pickups[2].name, "alpha");
	assert_int_equal(c->pickups[2].line, 11);
	assert_int_equal(c->n_relays, 3);
	assert_string_equal(c->relays[0].name, "second");
	assert_string_equal(c->relays[0].host, "b");
	assert_string_equal(c->relays[1].name, "first");
	assert_string_equal(c->relays[2].name, "third");
	assert_int_equal(c->relays[2].port, 465);
	assert_int_equal(c->relays[2].line, 13);
	assert_ptr_equal(config_find_relay(c, "first"), &c->relays[1]);
	config_free(c);
}

static void config_temporary_reply_repeats(void **state)
{
	struct config *c = parse_ok(BASE "[retry]\n"
					 "temporary_reply = 554 DT:SPM\n"
					 "temporary_reply = 550 5.7.1 Service unavailable\n"
					 "schedule = 10s\n"
					 "temporary_reply = 421\n");

	assert_int_equal(c->retry.n_temporary_replies, 3);
	assert_string_equal(c->retry.temporary_replies[0], "554 DT:SPM");
	assert_string_equal(c->retry.temporary_replies[1], "550 5.7.1 Service unavailable");
	assert_string_equal(c->retry.temporary_replies[2], "421");
	assert_int_equal(c->retry.n_schedule, 1);
	assert_int_equal(c->retry.schedule_ms[0], 10000);
	config_free(c);
}

/* Cross-checks that pass: the combinations the errors above refuse, made right. */
static void config_auth_combinations(void **state)
{
	static const char *const ok[] = {
	    "user = u\npassword_file = /pw\n",
	    "user = u\npassword_command = /bin/t\nauth = xoauth2\n",
	    "tls = none\nuser = u\npassword_file = /pw\nallow_plaintext_auth = yes\n",
	    "tls = none\n",
	    "cert_file = /c\nkey_file = /k\n",
	    "force_sender = a@b.example\nforce_from = yes\n",
	};

	for (size_t i = 0; i < ARRAY_SIZE(ok); i++) {
		char text[512];
		snprintf(text, sizeof text, "%s%s", BASE, ok[i]);
		config_free(parse_ok(text));
	}
	config_free(parse_ok("[spool]\ndir = /\n[pickup]\ndir = /in\n[relay v6]\nhost = ::1\n"
			     "[metrics]\nlisten = [::1]:9325\n"));
}

/* One parser for the config check and the listener: what each form means. */
static void config_listen_forms(void **state)
{
	static const struct {
		const char *in;
		int kind; /* -1: refused */
		const char *host;
		unsigned port;
	} cases[] = {
	    {"127.0.0.1:9325", LISTEN_IPV4, "127.0.0.1", 9325},
	    {"[::1]:9325", LISTEN_IPV6, "::1", 9325},
	    {"[::]:1", LISTEN_IPV6, "::", 1},
	    {"localhost:9325", LISTEN_NAME, "localhost", 9325},
	    {"metrics.example.org:80", LISTEN_NAME, "metrics.example.org", 80},
	    {":9325", LISTEN_ALL, "", 9325},
	    {"::1:9325", -1, NULL, 0},
	    {":::9325", -1, NULL, 0},
	    {"[::1:9325", -1, NULL, 0},
	    {"[127.0.0.1]:9325", -1, NULL, 0},
	    {"[]:9325", -1, NULL, 0},
	    {"1.2.3:9325", -1, NULL, 0},
	    {"256.1.1.1:9325", -1, NULL, 0},
	    {"localhost", -1, NULL, 0},
	    {"localhost:", -1, NULL, 0},
	    {"localhost:0", -1, NULL, 0},
	    {"localhost:65536", -1, NULL, 0},
	    {"local host:9325", -1, NULL, 0},
	    {"-x:9325", -1, NULL, 0},
	    {"", -1, NULL, 0},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct config_listen l;
		const char *expected = NULL;
		int r = config_parse_listen(cases[i].in, &l, &expected);
		if (cases[i].kind < 0) {
			if (r != -1)
				print_error("'%s' accepted\n", cases[i].in);
			assert_int_equal(r, -1);
			assert_non_null(expected);
			continue;
		}
		if (r != 0)
			print_error("'%s' refused: %s\n", cases[i].in, expected);
		assert_int_equal(r, 0);
		assert_int_equal(l.kind, cases[i].kind);
		assert_string_equal(l.host, cases[i].host);
		assert_int_equal(l.port, cases[i].port);
	}
}

/* Each holder drops its own reference; the struct stays whole until the
 * last one (a leak or a use after free shows under ASan). */
static void config_references(void **state)
{
	(void)state;
	struct config *c = parse_ok(BASE);
	assert_ptr_equal(config_ref(c), c);
	assert_ptr_equal(config_ref(c), c);
	const struct config_relay *r = &c->relays[0];
	config_free(c);
	config_free(c);
	assert_string_equal(r->host, "h");
	assert_string_equal(c->spool.dir, "/s");
	config_free(c);
	config_free(NULL);
}

/* user alone is valid: the secret is the systemd credential relay-NAME,
 * looked for at start (secret.c), as the shipped unit passes it. */
static void config_user_without_password_file(void **state)
{
	(void)state;
	struct config *c = parse_ok(BASE "user = u\n");
	assert_string_equal(c->relays[0].user, "u");
	assert_null(c->relays[0].password_file);
	assert_null(c->relays[0].password_command);
	config_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(config_full),
	    cmocka_unit_test(config_defaults),
	    cmocka_unit_test(config_port_default_by_tls),
	    cmocka_unit_test(config_errors),
	    cmocka_unit_test(config_user_without_password_file),
	    cmocka_unit_test(config_several_errors),
	    cmocka_unit_test(config_comments),
	    cmocka_unit_test(config_durations),
	    cmocka_unit_test(config_sizes),
	    cmocka_unit_test(config_bools),
	    cmocka_unit_test(config_example_parses),
	    cmocka_unit_test(config_load_errors),
	    cmocka_unit_test(config_order_kept),
	    cmocka_unit_test(config_temporary_reply_repeats),
	    cmocka_unit_test(config_auth_combinations),
	    cmocka_unit_test(config_listen_forms),
	    cmocka_unit_test(config_references),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
