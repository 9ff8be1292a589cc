/*
 * Purpose: a plain model of the whole-content checks (common/msgbody.h),
 * shared by the fuzz target and the unit tests: one line at a time over the
 * whole file, no state carried between chunks and no line skipped, so a
 * fast path in msgbody.c can be checked against it.
 */
#ifndef PICKUPD_TESTS_MSGBODY_REF_H
#define PICKUPD_TESTS_MSGBODY_REF_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/msg.h"

struct msgbody_ref {
	int64_t nul_at;
	bool eightbit;
	int64_t dot_off;
	uint64_t dot_line;
	bool dot_premature;
	bool mime_closed;
};

/* After the close delimiter: transport padding (SP, HT), and a CR only as
 * the line's last octet. */
static bool msgbody_ref_padding(const char *t, size_t k)
{
	for (size_t j = 0; j < k; j++)
		if (t[j] != ' ' && t[j] != '\t' && !(t[j] == '\r' && j + 1 == k))
			return false;
	return true;
}

static void msgbody_reference(const char *p, size_t n, uint64_t body_start, const char *boundary,
			      bool stuffed, struct msgbody_ref *r)
{
	char delim[MSG_MAX_BOUNDARY + 5];
	size_t dl = boundary[0] ? (size_t)snprintf(delim, sizeof(delim), "--%s--", boundary) : 0;

	memset(r, 0, sizeof(*r));
	r->nul_at = -1;
	r->dot_off = -1;
	r->mime_closed = dl == 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\0' && r->nul_at < 0)
			r->nul_at = (int64_t)i;
		if ((unsigned char)p[i] >= 0x80)
			r->eightbit = true;
	}
	uint64_t line = 1;
	for (size_t start = 0; start < n; line++) {
		const char *nl = memchr(p + start, '\n', n - start);
		size_t end = nl != NULL ? (size_t)(nl - p) : n;
		size_t content = end - start;
		if (nl != NULL && content > 0 && p[end - 1] == '\r')
			content--;
		if (start >= body_start) {
			if (stuffed && r->dot_off < 0 && content == 1 && p[start] == '.') {
				r->dot_off = (int64_t)start;
				r->dot_line = line;
			} else if (r->dot_off >= 0 && content > 0) {
				r->dot_premature = true;
			}
			if (!r->mime_closed && content >= dl && memcmp(p + start, delim, dl) == 0 &&
			    msgbody_ref_padding(p + start + dl, end - start - dl))
				r->mime_closed = true;
		}
		start = end + 1;
	}
}

#endif
