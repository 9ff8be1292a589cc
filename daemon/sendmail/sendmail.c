/*
 * Purpose: pickupd-sendmail, the sendmail-compatible injector: reads one
 * message on stdin and writes it atomically into the first pickup folder of
 * the configuration, with X-Sender:/X-Receiver: envelope lines, so mail(1),
 * cron and PHP mail() work unchanged and Bcc recipients are kept.
 * Owns: the temp file it writes (removed on every failure path).
 * Invariants: a file appears under a candidate name (*.eml) only complete
 * and durable: dot-temp name, O_EXCL, write, fsync, rename without
 * replacing, fsync of the folder. Exit codes are sysexits.h: 0 only when the
 * message is in the folder. Every address written is checked by
 * msg_addr_valid, so no CR/LF/control character reaches a header line.
 *
 * Options (sendmail's): -t (recipients from To:/Cc:/Bcc:, plus arguments),
 * -i / -oi (a lone "." does not end the input), -f ADDR / -r ADDR (envelope
 * sender), -F NAME (full name for an added From:), -C FILE (else
 * $PICKUPD_CONFIG, else /etc/pickupd/pickupd.conf). Modes: -bm (the
 * default), -bp and the name mailq (list the queue, daemon/ctl_list.c, as
 * pickupctl list), -q (and -q<anything>: one flush by the running daemon,
 * as pickupctl flush), -bi, -I and the name newaliases (succeed at once,
 * before any configuration is read: there is no aliases database; package
 * scripts call them). Harmless ones are accepted and ignored: -o* (other than
 * -oi: -odi, -oem...), -v (except that -q -v prints the daemon's answer), -m,
 * -n, -U, -G, -A*, and with a value -B, -N, -R, -V, -X, -h, -L, -O, -p.
 * Other modes (-bs, -bd, -bv, ...), other options and other --long options
 * are refused with a clear message and EX_USAGE (64). --help, --version.
 *
 * Envelope sender: -f, else the first address of From: (or Sender:), else
 * LOGIN@hostname. A bare local name ("root", as cron writes) is qualified
 * with [general] hostname; the daemon then applies [submit] root_alias and
 * origin_domain to it as to every pickup file's envelope (common/addrmap.h).
 * A From: line is added when the message has none.
 */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/config.h"
#include "common/msg.h"
#include "daemon/queue/ctl_client.h"
#include "daemon/listing/ctl_list.h"
#include "spool/spool.h"

#define DEFAULT_CONFIG "/etc/pickupd/pickupd.conf"
#define SYNOPSIS       "[-t] [-i] [-f SENDER] [-F NAME] [-C CONFIG] [RECIPIENT...]"

static const char *prog = "pickupd-sendmail";

static void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

static void die(int code, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(code);
}

struct rcpts {
	char **v;
	size_t n;
};

static void rcpt_add(struct rcpts *r, const char *addr)
{
	r->v = xrealloc(r->v, (r->n + 1) * sizeof(*r->v));
	r->v[r->n++] = xstrdup(addr);
}

/* A bare local name (atext only, as cron's "root"): qualified with host. */
static bool bare_local(const char *s, size_t len)
{
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') && !(c >= '0' && c <= '9') &&
		    !strchr("!#$%&'*+-/=?^_`{|}~.", c))
			return false;
	}
	return s[0] != '.' && s[len - 1] != '.';
}

/* Removes comments and surrounding white space of one list element, in place. */
static size_t strip_cfws(char *s, size_t len)
{
	size_t o = 0;
	int depth = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '(')
			depth++;
		else if (s[i] == ')' && depth > 0)
			depth--;
		else if (depth == 0 && s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
			s[o++] = s[i];
	}
	return o;
}

/*
 * Adds the addresses of an address list (a header field's body or an
 * argument). Elements that are bare local names are qualified with host.
 * Returns 0, or -1 with a reason.
 */
static int add_list(struct rcpts *r, const char *s, size_t len, const char *host, struct buf *why)
{
	struct msg_addr *list = NULL;
	size_t n = 0;
	if (msg_parse_address_list(s, len, &list, &n, why) == 0) {
		for (size_t i = 0; i < n; i++) {
			rcpt_add(r, list[i].addr);
			free(list[i].addr);
			free(list[i].params);
		}
		free(list);
		return 0;
	}
	/* Element by element (commas outside quotes, <>, comments), so that
	 * unqualified names can be qualified. */
	buf_clear(why);
	size_t start = 0;
	int depth = 0;
	bool quoted = false, angle = false;
	for (size_t i = 0; i <= len; i++) {
		char c = i < len ? s[i] : ',';
		if (quoted) {
			if (c == '\\' && i + 1 < len)
				i++;
			else if (c == '"')
				quoted = false;
			continue;
		}
		if (c == '"')
			quoted = true;
		else if (c == '(')
			depth++;
		else if (c == ')' && depth > 0)
			depth--;
		else if (c == '<' && depth == 0)
			angle = true;
		else if (c == '>' && depth == 0)
			angle = false;
		else if (c == ',' && depth == 0 && !angle) {
			char *el = xmalloc(i - start + 1);
			memcpy(el, s + start, i - start);
			size_t el_len = i - start;
			struct buf one = BUF_INIT;
			n = 0;
			list = NULL;
			if (msg_parse_address_list(el, el_len, &list, &n, why) == 0) {
				for (size_t k = 0; k < n; k++) {
					rcpt_add(r, list[k].addr);
					free(list[k].addr);
					free(list[k].params);
				}
				free(list);
			} else {
				el_len = strip_cfws(el, el_len);
				if (!bare_local(el, el_len)) {
					free(el);
					return -1;
				}
				buf_clear(why);
				buf_printf(&one, "%.*s@%s", (int)el_len, el, host);
				rcpt_add(r, one.data);
			}
			buf_deinit(&one);
			free(el);
			start = i + 1;
		}
	}
	return 0;
}

/* The sender given with -f: one address, "<>"/"" for the null sender, or a bare name. */
static char *parse_sender(const char *arg, const char *host)
{
	if (strcmp(arg, "<>") == 0 || arg[0] == '\0')
		return xstrdup("");
	struct rcpts r = {0};
	struct buf why = BUF_INIT;
	if (add_list(&r, arg, strlen(arg), host, &why) < 0 || r.n != 1)
		die(EX_USAGE, "invalid sender address '%s'%s%s", arg, why.len ? ": " : "",
		    why.len ? why.data : "");
	char *s = r.v[0];
	free(r.v);
	buf_deinit(&why);
	return s;
}

/* The input, read to its end (or to a lone "." line unless ignore_dots). */
static void read_input(struct buf *in, bool ignore_dots, uint64_t limit)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	errno = 0;
	while ((n = getline(&line, &cap, stdin)) > 0) {
		if (!ignore_dots && (strcmp(line, ".\n") == 0 || strcmp(line, ".\r\n") == 0 ||
				     (strcmp(line, ".") == 0)))
			break;
		buf_append(in, line, (size_t)n);
		if (in->len > limit)
			die(EX_DATAERR, "message is larger than max_message_size (%llu bytes)",
			    (unsigned long long)limit);
	}
	if (ferror(stdin))
		die(EX_IOERR, "cannot read the message: %s", strerror(errno));
	free(line);
}

/* Length of the header field name at s ("Name:"), 0 if the line is not a field. */
static size_t field_name_len(const char *s, size_t len)
{
	size_t i = 0;
	while (i < len && s[i] > 32 && s[i] < 127 && s[i] != ':')
		i++;
	return i > 0 && i < len && s[i] == ':' ? i : 0;
}

struct header_view {
	size_t start;	     /* first byte of the header section (after a "From " line) */
	bool has_headers;    /* the input starts with a header field */
	bool has_from;	     /* a From: field */
	char *from_value;    /* unfolded body of Sender: (preferred) or From:, or NULL */
	bool from_is_sender; /* from_value came from Sender: */
	bool crlf;	     /* the first line ends in CRLF */
};

/* Unfolded body of the field starting at line p (name of nlen octets). */
static char *unfold_field(const char *d, size_t len, size_t p, size_t nlen, size_t *next_r)
{
	struct buf v = BUF_INIT;
	size_t i = p + nlen + 1;
	for (;;) {
		const char *nl = memchr(d + i, '\n', len - i);
		size_t e = nl ? (size_t)(nl - d) : len;
		size_t ee = e > i && d[e - 1] == '\r' ? e - 1 : e;
		buf_append(&v, d + i, ee - i);
		i = nl ? e + 1 : len;
		if (i >= len || (d[i] != ' ' && d[i] != '\t'))
			break;
	}
	*next_r = i;
	if (v.data == NULL)
		buf_puts(&v, "");
	return buf_steal(&v);
}

static void view_headers(const char *d, size_t len, struct header_view *h)
{
	memset(h, 0, sizeof(*h));
	size_t p = 0;
	if (len >= 5 && memcmp(d, "From ", 5) == 0) { /* an mbox separator, as mail(1) may pass */
		const char *nl = memchr(d, '\n', len);
		p = nl ? (size_t)(nl - d) + 1 : len;
	}
	h->start = p;
	const char *nl = memchr(d + p, '\n', len - p);
	h->crlf = nl && nl > d + p && nl[-1] == '\r';
	h->has_headers = field_name_len(d + p, len - p) > 0;
	while (h->has_headers && p < len) {
		size_t nlen = field_name_len(d + p, len - p);
		if (nlen == 0)
			break; /* the empty line, or the body begins */
		size_t next;
		bool is_from = nlen == 4 && strncasecmp(d + p, "From", 4) == 0;
		bool is_sender = nlen == 6 && strncasecmp(d + p, "Sender", 6) == 0;
		if (is_from || is_sender) {
			char *v = unfold_field(d, len, p, nlen, &next);
			if (is_from)
				h->has_from = true;
			if (h->from_value == NULL || (is_sender && !h->from_is_sender)) {
				free(h->from_value);
				h->from_value = v;
				h->from_is_sender = is_sender;
			} else {
				free(v);
			}
		} else {
			char *v = unfold_field(d, len, p, nlen, &next);
			free(v);
		}
		p = next;
	}
}

/* Recipients from To:, Cc:, Bcc: of the header section (sendmail -t). */
static void rcpts_from_headers(const char *d, size_t len, size_t p, const char *host,
			       struct rcpts *r)
{
	unsigned line = 1;
	while (p < len) {
		size_t nlen = field_name_len(d + p, len - p);
		if (nlen == 0)
			break;
		size_t next;
		char *v = unfold_field(d, len, p, nlen, &next);
		bool wanted = (nlen == 2 && (strncasecmp(d + p, "To", 2) == 0 ||
					     strncasecmp(d + p, "Cc", 2) == 0)) ||
			      (nlen == 3 && strncasecmp(d + p, "Bcc", 3) == 0);
		if (wanted) {
			struct buf why = BUF_INIT;
			if (add_list(r, v, strlen(v), host, &why) < 0)
				die(EX_DATAERR, "bad address in %.*s field of header line %u: %s",
				    (int)nlen, d + p, line, why.data ? why.data : "parse error");
			buf_deinit(&why);
		}
		free(v);
		for (size_t i = p; i < next; i++)
			line += d[i] == '\n';
		p = next;
	}
}

static void write_all(int fd, const char *d, size_t len, const char *tmp, int dir_fd)
{
	while (len) {
		ssize_t n = write(fd, d, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = errno;
			unlinkat(dir_fd, tmp, 0);
			die(e == ENOSPC || e == EDQUOT || e == EIO ? EX_TEMPFAIL : EX_IOERR,
			    "cannot write the message: %s", strerror(e));
		}
		d += n;
		len -= (size_t)n;
	}
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: %s " SYNOPSIS "\n"
		"       %s -bp          list the queue (also as mailq)\n"
		"       %s -q           ask pickupd to send every deferred message now\n"
		"       %s -bi          nothing to do: pickupd has no aliases file (also as "
		"newaliases)\n"
		"  -t          recipients from To:, Cc:, Bcc: (plus any given)\n"
		"  -i, -oi     a line with a lone \".\" does not end the message\n"
		"  -f, -r ADDR envelope sender (\"<>\" for none)\n"
		"  -F NAME     full name for an added From: line\n"
		"  -C FILE     configuration (else $PICKUPD_CONFIG, else " DEFAULT_CONFIG ")\n"
		"  -v          with -q: print pickupd's answer\n"
		"accepted and ignored: -bm -o* -v -m -n -U -G -A* -B TYPE -N DSN -R RET -V ENVID "
		"-X FILE\n"
		"  -h N -L TAG -O OPT=VALUE -p PROTOCOL; -q<anything> is one -q\n"
		"exit status: sysexits.h (0 queued, 64 usage, 65 bad data, 75 try again, ...)\n",
		prog, prog, prog, prog);
}

/* An option not known here: said, with the synopsis, and EX_USAGE. */
static void unknown_option(const char *opt) __attribute__((noreturn));
static void unknown_option(const char *opt)
{
	fprintf(stderr,
		"%s: unknown option %s\n"
		"usage: %s " SYNOPSIS "\n"
		"(--help lists every option)\n",
		prog, opt, prog);
	exit(EX_USAGE);
}

/* What the invocation asks for: sendmail's modes that matter here. */
enum mode {
	MODE_SEND,  /* -bm, the default: read a message and queue it */
	MODE_LIST,  /* -bp, mailq */
	MODE_FLUSH, /* -q */
	MODE_NOOP,  /* -bi, -I, newaliases: no aliases database to build */
};

/* -bX: the modes pickupd has, and a clear refusal of the others. */
static enum mode mode_of(const char *b)
{
	if (strcmp(b, "m") == 0)
		return MODE_SEND;
	if (strcmp(b, "p") == 0)
		return MODE_LIST;
	if (strcmp(b, "i") == 0)
		return MODE_NOOP;
	die(EX_USAGE,
	    "mode -b%s is not supported: pickupd-sendmail only queues messages (-bm), lists "
	    "the queue (-bp) and ignores -bi; use pickupctl for the rest",
	    b);
}

/* -bp / mailq: the queue as `pickupctl list` prints it (daemon/ctl_list.c). */
static int run_list(const struct config *cfg)
{
	struct spool sp;
	struct buf err = BUF_INIT;
	if (spool_open(&sp, cfg->spool.dir) < 0) {
		int e = errno;
		fprintf(stderr, "%s: cannot read the queue in %s: %s\n", prog, cfg->spool.dir,
			strerror(e));
		return e == EACCES || e == EPERM ? EX_NOPERM : EX_OSERR;
	}
	struct ctl_filter all = CTL_FILTER_ALL;
	long n = ctl_list_print(&sp, &all, false, stdout, &err);
	fflush(stdout);
	for (char *line = err.data, *nl; line && (nl = strchr(line, '\n')); line = nl + 1)
		fprintf(stderr, "%s: %.*s\n", prog, (int)(nl - line), line);
	spool_close(&sp);
	buf_deinit(&err);
	return n < 0 ? EX_IOERR : EX_OK;
}

/* -q: one flush by the running daemon, as `pickupctl flush` asks for it. */
static int run_flush(const struct config *cfg, bool verbose)
{
	struct buf resp = BUF_INIT, err = BUF_INIT;
	int rc = EX_OK;
	int r = ctl_client_request(cfg->control.socket, "flush", &resp, &err);
	if (r == 0) {
		fprintf(stderr,
			"%s: pickupd is not running (nothing listens on %s); deferred messages "
			"are tried when it starts\n",
			prog, cfg->control.socket);
		rc = EX_UNAVAILABLE;
	} else if (r < 0) {
		fprintf(stderr, "%s: %s\n", prog, err.data);
		rc = EX_UNAVAILABLE;
	} else if (strncmp(resp.data, "ok", 2) != 0) {
		const char *text = strchr(resp.data, ' ');
		fprintf(stderr, "%s: %s\n", prog, text ? text + 1 : resp.data);
		rc = EX_TEMPFAIL;
	} else if (verbose) {
		printf("%s\n", resp.data[2] ? resp.data + 3 : "done");
	}
	buf_deinit(&resp);
	buf_deinit(&err);
	return rc;
}

int main(int argc, char **argv)
{
	bool opt_t = false, ignore_dots = false, verbose = false;
	const char *from_arg = NULL, *full_name = NULL, *conf = NULL;
	enum mode mode = MODE_SEND;
	int i;

	/* Package scripts call newaliases; mailq lists the queue. */
	const char *base = argc > 0 ? strrchr(argv[0], '/') : NULL;
	base = base ? base + 1 : argc > 0 ? argv[0] : prog;
	if (strcmp(base, "newaliases") == 0)
		return EX_OK;
	if (strcmp(base, "mailq") == 0)
		mode = MODE_LIST;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (a[0] != '-' || a[1] == '\0')
			break;
		if (strcmp(a, "--") == 0) {
			i++;
			break;
		}
		if (strcmp(a, "--help") == 0) {
			usage(stdout);
			return EX_OK;
		}
		if (strcmp(a, "--version") == 0) {
			printf("%s %s\n", prog, PICKUPD_VERSION);
			return EX_OK;
		}
		if (a[1] == '-') {
			unknown_option(a);
		}
		for (const char *c = a + 1; *c; c++) {
			const char **target = NULL;
			const char *ignored = NULL;
			switch (*c) {
			case 't':
				opt_t = true;
				continue;
			case 'i':
				ignore_dots = true;
				continue;
			case 'v':
				verbose = true;
				continue;
			case 'I': /* sendmail's newaliases */
				mode = MODE_NOOP;
				continue;
			case 'm':
			case 'n':
			case 'U':
			case 'G':
				continue;
			case 'o':
				/* -oi is -i; every other -oX is a harmless option. */
				if (strcmp(c + 1, "i") == 0)
					ignore_dots = true;
				goto next_arg;
			case 'A':
				goto next_arg;
			case 'b':
				mode = mode_of(c + 1);
				goto next_arg;
			case 'q':
				/* -q15m, -qR..., -qf: pickupd retries by itself;
				 * each is one flush of everything deferred. */
				mode = MODE_FLUSH;
				goto next_arg;
			case 'f':
			case 'r':
				target = &from_arg;
				break;
			case 'F':
				target = &full_name;
				break;
			case 'C':
				target = &conf;
				break;
			case 'B':
			case 'N':
			case 'R':
			case 'V':
			case 'X':
			case 'h':
			case 'L':
			case 'O':
			case 'p':
				target = &ignored;
				break;
			default:
				unknown_option((char[]){'-', *c, '\0'});
			}
			/* An option with a value: the rest of this word, or the next one. */
			if (c[1])
				*target = c + 1;
			else if (i + 1 < argc)
				*target = argv[++i];
			else
				die(EX_USAGE, "option -%c needs a value", *c);
			goto next_arg;
		}
	next_arg:;
	}
	if (mode == MODE_NOOP)
		return EX_OK; /* before the configuration: package scripts run early */

	if (conf == NULL)
		conf = getenv("PICKUPD_CONFIG");
	if (conf == NULL || conf[0] == '\0')
		conf = DEFAULT_CONFIG;
	struct buf errs = BUF_INIT;
	struct config *cfg = config_load(conf, &errs);
	if (cfg == NULL) {
		fputs(errs.data ? errs.data : "invalid configuration\n", stderr);
		if (access(conf, R_OK) < 0 && errno == EACCES)
			die(EX_CONFIG,
			    "cannot read the configuration %s as uid %u: it holds no secrets and "
			    "is meant to be readable by all (chmod 644 %s)",
			    conf, (unsigned)getuid(), conf);
		die(EX_CONFIG, "cannot use the configuration %s", conf);
	}
	if (mode != MODE_SEND) {
		int rc = mode == MODE_LIST ? run_list(cfg) : run_flush(cfg, verbose);
		buf_deinit(&errs);
		config_free(cfg);
		return rc;
	}
	const struct config_pickup *pk = &cfg->pickups[0];
	const char *host = cfg->general.hostname;

	struct rcpts rcpts = {0};
	for (; i < argc; i++) {
		struct buf why = BUF_INIT;
		if (add_list(&rcpts, argv[i], strlen(argv[i]), host, &why) < 0)
			die(EX_DATAERR, "invalid recipient address '%s': %s", argv[i],
			    why.data ? why.data : "parse error");
		buf_deinit(&why);
	}
	if (rcpts.n == 0 && !opt_t)
		die(EX_USAGE, "no recipients (give addresses, or -t to read them from the header)");

	struct buf in = BUF_INIT;
	read_input(&in, ignore_dots, pk->max_message_size);
	const char *d = in.data ? in.data : "";
	struct header_view hv;
	view_headers(d, in.len, &hv);
	if (opt_t && hv.has_headers)
		rcpts_from_headers(d, in.len, hv.start, host, &rcpts);
	if (rcpts.n == 0)
		die(EX_DATAERR, "no recipients in To:, Cc: or Bcc:");
	if (rcpts.n > pk->max_recipients)
		die(EX_DATAERR, "too many recipients (%zu, limit %u)", rcpts.n, pk->max_recipients);

	/* The envelope sender. */
	char *sender = NULL;
	if (from_arg) {
		sender = parse_sender(from_arg, host);
	} else if (hv.from_value) {
		struct rcpts f = {0};
		struct buf why = BUF_INIT;
		if (add_list(&f, hv.from_value, strlen(hv.from_value), host, &why) == 0 && f.n > 0)
			sender = xstrdup(f.v[0]);
		for (size_t k = 0; k < f.n; k++)
			free(f.v[k]);
		free(f.v);
		buf_deinit(&why);
	}
	if (sender == NULL) {
		struct passwd *pw = getpwuid(getuid());
		struct buf s = BUF_INIT;
		if (pw && bare_local(pw->pw_name, strlen(pw->pw_name)))
			buf_printf(&s, "%s@%s", pw->pw_name, host);
		else
			buf_printf(&s, "uid%u@%s", (unsigned)getuid(), host);
		sender = buf_steal(&s);
	}
	if (msg_addr_valid(sender) < 0)
		die(EX_DATAERR, "invalid sender address '%s'", sender);
	for (size_t k = 0; k < rcpts.n; k++)
		if (msg_addr_valid(rcpts.v[k]) < 0 || rcpts.v[k][0] == '\0')
			die(EX_DATAERR, "invalid recipient address '%s'", rcpts.v[k]);

	/* The file: envelope lines, an added From:, the message. */
	const char *eol = hv.crlf ? "\r\n" : "\n";
	struct buf head = BUF_INIT;
	buf_printf(&head, "X-Sender: <%s>%s", sender, eol);
	for (size_t k = 0; k < rcpts.n; k++)
		buf_printf(&head, "X-Receiver: <%s>%s", rcpts.v[k], eol);
	if (!hv.has_from) {
		bool named = full_name && full_name[0] && strpbrk(full_name, "\r\n\"\\") == NULL;
		if (named)
			buf_printf(&head, "From: \"%s\" <%s>%s", full_name, sender, eol);
		else
			buf_printf(&head, "From: <%s>%s", sender[0] ? sender : "MAILER-DAEMON",
				   eol);
	}
	if (!hv.has_headers)
		buf_puts(&head, eol); /* the input is all body */

	int dir_fd = open(pk->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir_fd < 0)
		die(errno == ENOENT || errno == EACCES ? EX_CANTCREAT : EX_OSERR,
		    "cannot open the pickup folder %s: %s", pk->dir, strerror(errno));
	char tmp[128], final[128];
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	unsigned rnd = (unsigned)(ts.tv_nsec ^ ((unsigned)getpid() << 16));
	snprintf(tmp, sizeof(tmp), ".sendmail.%ld.%ld.%u.tmp", (long)ts.tv_sec, (long)getpid(),
		 rnd);
	int fd = openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		die(errno == ENOSPC || errno == EDQUOT ? EX_TEMPFAIL : EX_CANTCREAT,
		    "cannot create a file in the pickup folder %s: %s", pk->dir, strerror(errno));
	/* pickupd must be able to read it whatever our umask. */
	fchmod(fd, 0644);
	write_all(fd, head.data, head.len, tmp, dir_fd);
	write_all(fd, d + hv.start, in.len - hv.start, tmp, dir_fd);
	if (fsync(fd) < 0 || close(fd) < 0) {
		int e = errno;
		unlinkat(dir_fd, tmp, 0);
		die(EX_TEMPFAIL, "cannot write the message: %s", strerror(e));
	}
	for (unsigned n = 0;; n++) {
		snprintf(final, sizeof(final), "sendmail-%ld.%09ld-%ld-%u.eml", (long)ts.tv_sec,
			 ts.tv_nsec, (long)getpid(), n);
		if (renameat2(dir_fd, tmp, dir_fd, final, RENAME_NOREPLACE) == 0)
			break;
		if (errno != EEXIST || n > 100) {
			int e = errno;
			unlinkat(dir_fd, tmp, 0);
			die(EX_CANTCREAT, "cannot rename the message into place: %s", strerror(e));
		}
	}
	/* The message is in the folder now: a failure here must not make the
	 * caller send it again (a duplicate), so it is only reported. */
	if (fsync(dir_fd) < 0)
		fprintf(stderr, "%s: warning: cannot fsync the pickup folder %s: %s\n", prog,
			pk->dir, strerror(errno));
	close(dir_fd);

	free(hv.from_value);
	free(sender);
	for (size_t k = 0; k < rcpts.n; k++)
		free(rcpts.v[k]);
	free(rcpts.v);
	buf_deinit(&head);
	buf_deinit(&in);
	buf_deinit(&errs);
	config_free(cfg);
	return EX_OK;
}
