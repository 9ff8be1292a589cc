/*
 * Purpose: CPU cost of the two passes every message body gets, run by hand
 * (never ctest): the whole-content checks at ingest (common/msgbody.h) and
 * the wire filter at send (common/wire.h), on 1 MiB bodies fed in chunks as
 * the daemon reads them.
 *
 *   bench_scan [MIB]     (default 64 MiB of each kind)
 *       Prints, per kind of body, ms of CPU per MiB for msgbody_feed and for
 *       wire_filter_feed (into a buffer, as smtpc does; and "verbatim", the
 *       part wire_filter_verbatim lets the caller send without a copy).
 *
 * Kinds: "crlf" (70-octet text lines, CRLF: the common case), "lf" (the same
 * with bare LF, as scripts write), "mime" (a multipart message with a base64
 * attachment, 76-octet lines), "stuffed" (crlf text from a dot-stuffing
 * writer, a "." line at the end).
 * Owns: its buffers. Invariants: pure CPU, no I/O; the figures are per
 * thread CPU time (CLOCK_THREAD_CPUTIME_ID).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/msgbody.h"
#include "common/wire.h"

#define MIB   (1u << 20)
#define CHUNK (256u << 10)
#ifndef VERBATIM
#define VERBATIM wire_filter_verbatim
#endif

static double cpu_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Just under 1 MiB of a message of the given kind; *hdr_r = its header's
 * length, *len_r = the whole length. */
static char *make_body(const char *kind, size_t *hdr_r, size_t *len_r)
{
	char *m = xmalloc(MIB);
	bool lf = strcmp(kind, "lf") == 0, mime = strcmp(kind, "mime") == 0;
	const char *eol = lf ? "\n" : "\r\n";
	size_t n = (size_t)snprintf(
	    m, MIB, "From: a@example.org%sTo: b@example.net%sSubject: s%s%s%s", eol, eol, eol,
	    mime ? "Content-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n"
		   "--b0\r\nContent-Type: application/pdf\r\n"
		   "Content-Transfer-Encoding: base64\r\n"
		 : "",
	    eol);
	*hdr_r = n;
	const char *line =
	    mime ? "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0"
		 : "A line of body text, about as long as a real one is, seventy or so.";
	size_t ll = strlen(line), el = strlen(eol);
	const char *tail = mime ? "\r\n--b0--\r\n" : strcmp(kind, "stuffed") == 0 ? ".\r\n" : "";
	size_t tl = strlen(tail);
	while (n + ll + el + tl <= MIB) {
		memcpy(m + n, line, ll);
		memcpy(m + n + ll, eol, el);
		n += ll + el;
	}
	memcpy(m + n, tail, tl);
	*len_r = n + tl;
	return m;
}

static void run(const char *kind, unsigned mib)
{
	size_t hdr, len;
	char *m = make_body(kind, &hdr, &len);
	struct msg_info info;
	memset(&info, 0, sizeof(info));
	info.header_end = hdr;
	if (strcmp(kind, "mime") == 0)
		strcpy(info.mime_boundary, "b0");
	bool stuffed = strcmp(kind, "stuffed") == 0;

	double t0 = cpu_ms();
	int verdict = 0;
	for (unsigned r = 0; r < mib; r++) {
		struct msgbody b;
		struct buf reason = BUF_INIT;
		msgbody_init(&b, &info, stuffed);
		for (size_t off = 0; off < len; off += CHUNK)
			msgbody_feed(&b, m + off, len - off < CHUNK ? len - off : CHUNK);
		verdict |= msgbody_finish(&b, &reason);
		buf_deinit(&reason);
	}
	double t1 = cpu_ms();

	struct wire_edit e = {.offset = 0, .insert = "Received: by bench\r\n", .insert_len = 20};
	struct buf out = BUF_INIT;
	size_t out_len = 0, verbatim = 0;
	for (unsigned r = 0; r < mib; r++) {
		struct wire_filter f;
		wire_filter_init(&f, &e, 1, stuffed);
		for (size_t off = 0; off < len; off += CHUNK) {
			size_t n = len - off < CHUNK ? len - off : CHUNK;
			buf_clear(&out);
			size_t k = VERBATIM(&f, m + off, n);
			verbatim += k;
			wire_filter_feed(&f, m + off + k, n - k, &out);
			out_len += out.len + k;
		}
		wire_filter_finish(&f, &out);
	}
	double t2 = cpu_ms();
	printf(
	    "%-8s msgbody %.3f ms/MiB (%s)   wire %.3f ms/MiB (out %.4f x in, verbatim %.0f%%)\n",
	    kind, (t1 - t0) / mib, verdict ? "refused" : "accepted", (t2 - t1) / mib,
	    (double)out_len / ((double)mib * (double)len),
	    100.0 * (double)verbatim / ((double)mib * (double)len));
	buf_deinit(&out);
	free(m);
}

int main(int argc, char **argv)
{
	unsigned mib = argc > 1 ? (unsigned)atoi(argv[1]) : 64;
	if (mib == 0)
		mib = 1;
	run("crlf", mib);
	run("lf", mib);
	run("mime", mib);
	run("stuffed", mib);
	return 0;
}
