/*
 * config: the INI configuration of DESIGN.md, parsed into an immutable struct.
 * Owner: reference counted, like OpenSSL's SSL_CTX: config_parse/config_load
 * return it with one reference, each holder of a pointer into it takes one
 * more with config_ref, and config_free drops one (the last frees it). Reload
 * builds a new struct and swaps the pointer; a running session or job keeps
 * the one it started with until it lets go.
 *
 * Syntax: "[section]" or "[section NAME]", "key = value", comments start with
 * ';' or '#' (at line start, or after whitespace in a value). Durations:
 * "250ms 30s 5m 2h 2d" (a bare number is seconds). Sizes: "512 10K 35M 1G".
 * Booleans: yes/no/true/false/on/off/1/0. Unknown sections and keys, bad values,
 * duplicates and missing required keys are errors, each reported as one
 * "FILE:LINE: message" line.
 * An empty value leaves a string key at its default (NULL unless noted) and is an
 * error for any other type. spool.dir, pickup.dir and control.socket must be
 * absolute paths (a trailing '/' is dropped). Errors are sorted by line; one about
 * a whole missing section is reported at line 1.
 */
#ifndef PICKUPD_CONFIG_H
#define PICKUPD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

enum tls_mode { TLS_MODE_STARTTLS, TLS_MODE_IMPLICIT, TLS_MODE_NONE };
enum auth_mode { AUTH_MODE_AUTO, AUTH_MODE_PLAIN, AUTH_MODE_LOGIN, AUTH_MODE_XOAUTH2 };
/* How duplicate recipients are recognised: the whole address without case
 * (IIS, Exchange, the big providers), or the local part with case. */
enum rcpt_dedup { RCPT_DEDUP_NOCASE, RCPT_DEDUP_EXACT };

/* [general] (an extension of DESIGN.md: settings that belong to no room) */
struct config_general {
	char *hostname;	 /* EHLO name, Message-ID domain; default: gethostname() */
	char *log_level; /* debug | info | warning | error; default info */
	char *instance;	 /* tells several pickupd on one host apart in IDs; default "" */

	/* computed: hostname came from gethostname(), not from the file */
	bool hostname_from_system;
};

/* [spool] */
struct config_spool {
	char *dir;		      /* required */
	uint64_t shutdown_timeout_ms; /* SIGTERM deadline for in-flight work; default 30s */
};

/* [pickup] or [pickup NAME]; at least one is required. */
struct config_pickup {
	char *name;  /* "default" for a plain [pickup] */
	char *dir;   /* required */
	char *match; /* glob on the file name, case-insensitive; default "*.eml" (common/match.h) */
	bool dot_stuffed;	     /* default no */
	enum rcpt_dedup rcpt_dedup;  /* default nocase */
	uint64_t max_message_size;   /* bytes; default 35M */
	unsigned max_recipients;     /* default 1000 */
	uint64_t max_header_size;    /* bytes; default 64K */
	uint64_t settle_time_ms;     /* size and mtime unchanged this long; default 2s */
	uint64_t rescan_interval_ms; /* default 30s */
	int line;		     /* where the section starts, for later error messages */
};

/* [relay NAME]; at least one is required; tried in the order written. */
struct config_relay {
	char *name;
	char *host;	   /* required */
	unsigned port;	   /* default 587 (starttls), 465 (implicit), 25 (none) */
	enum tls_mode tls; /* default starttls */
	bool tls_verify;   /* default yes */
	char *ca_file;	   /* default: system store (NULL) */
	char *cert_file;   /* client certificate (NULL = none) */
	char *key_file;
	char *user; /* NULL = no AUTH */
	char *password_file;
	char *password_command;
	enum auth_mode auth;		   /* default auto */
	bool allow_plaintext_auth;	   /* default no */
	char *force_sender;		   /* NULL = keep the message's sender */
	bool force_from;		   /* default no */
	unsigned max_sessions;		   /* default 4, >= 1 */
	unsigned max_messages_per_session; /* default 100, >= 1 */
	unsigned rate_limit;		   /* messages per minute; 0 = none */
	uint64_t idle_timeout_ms;	   /* default 60s */
	/* RFC 5321 4.5.3.2 defaults */
	uint64_t connect_timeout_ms;	/* default 30s */
	uint64_t greeting_timeout_ms;	/* default 5m */
	uint64_t command_timeout_ms;	/* EHLO/MAIL/RCPT/RSET/AUTH etc.; default 5m */
	uint64_t data_timeout_ms;	/* DATA command; default 2m */
	uint64_t data_block_timeout_ms; /* each block of content; default 3m */
	uint64_t data_done_timeout_ms;	/* after the final dot; default 10m */
	int line;
};

/* [retry] */
struct config_retry {
	uint64_t *schedule_ms; /* default 1m 5m 15m 30m 1h 2h 4h; the last repeats */
	size_t n_schedule;
	uint64_t max_age_ms;	 /* default 5d */
	unsigned jitter_percent; /* default 10 */
	bool soft_bounce;	 /* never bounce; default no */
	/* temporary_reply = TEXT (repeatable): a reply whose "CODE text" starts
	 * with TEXT is treated as temporary, e.g. "554 DT:SPM". */
	char **temporary_replies;
	size_t n_temporary_replies;
};

/* [bounce] */
struct config_bounce {
	bool enabled;		   /* default yes */
	uint64_t delay_warning_ms; /* 0 = off */
	unsigned rate_limit;	   /* bounces per minute; default 60; 0 = none */
};

/* [control] */
struct config_control {
	char *socket; /* default <spool>/control.sock */
};

/* [metrics] */
struct config_metrics {
	char *listen; /* "" or NULL = off; default ""; see config_parse_listen */
};

/* [log] */
struct config_log {
	bool syslog; /* syslog(3), mail facility, instead of stderr; default no */
};

/* A listen address, as config_parse_listen splits it. */
struct config_listen {
	enum { LISTEN_ALL, LISTEN_IPV4, LISTEN_IPV6, LISTEN_NAME } kind;
	char host[256]; /* "" for LISTEN_ALL; an address without brackets; a DNS name */
	unsigned port;
};

/* [badmail] */
struct config_badmail {
	/* Entries older than this (since they entered badmail/) are removed,
	 * content included; 0 = kept forever. Default 30d. */
	uint64_t keep_ms;
};

/* [submit]: local envelope addresses before they reach a relay (common/addrmap.h) */
struct config_submit {
	char *root_alias;    /* root, postmaster, MAILER-DAEMON of this host; NULL = kept */
	char *origin_domain; /* unqualified and this host's addresses; NULL = kept */
};

struct config {
	unsigned refs; /* holders; atomic, so any thread may take or drop one */
	char *path;
	struct config_general general;
	struct config_spool spool;
	struct config_pickup *pickups;
	size_t n_pickups;
	struct config_relay *relays;
	size_t n_relays;
	struct config_retry retry;
	struct config_bounce bounce;
	struct config_control control;
	struct config_metrics metrics;
	struct config_badmail badmail;
	struct config_submit submit;
	struct config_log log;
};

/*
 * Parses text (name is used in error lines). Returns the config, or NULL when
 * there was any error; each error is appended to errs as "NAME:LINE: msg\n".
 */
struct config *config_parse(const char *name, const char *text, size_t len, struct buf *errs);
/* Reads and parses a file; a read error is reported as "PATH: strerror". */
struct config *config_load(const char *path, struct buf *errs);
/* One more reference; returns cfg. */
struct config *config_ref(struct config *cfg);
/* Drops one reference; the last one frees the struct. NULL is ignored. */
void config_free(struct config *cfg);

/* Value parsers, shared with the CLI programs. Return 0, or -1 on bad input. */
int config_parse_duration(const char *s, uint64_t *ms_r);
int config_parse_size(const char *s, uint64_t *bytes_r);
int config_parse_bool(const char *s, bool *b_r);
/*
 * listen = IPV4:PORT | [IPV6]:PORT | NAME:PORT (resolved when the listener
 * starts) | :PORT (all addresses). An IPv6 address needs its brackets: in
 * "::1:9325" the port cannot be told apart. The one parser of [metrics]
 * listen, for the config check and the listener alike. On -1, *expected_r
 * says what was expected.
 */
int config_parse_listen(const char *s, struct config_listen *l, const char **expected_r);

/*
 * Appends one line to out when the name used for EHLO, Message-ID and
 * MAILER-DAEMON@ is not fully qualified (no dot): relays and recipients'
 * servers may refuse it. Says which key sets it. Returns whether it did.
 */
bool config_hostname_warning(const struct config *cfg, struct buf *out);

const struct config_relay *config_find_relay(const struct config *cfg, const char *name);

#endif
