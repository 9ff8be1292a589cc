/*
 * Purpose: unit tests for header scanning and envelope derivation (common/msg.h).
 * Each scan case is an input file plus the expected sender, recipients, header
 * bytes that stay on the wire (input[0..header_end) minus the skips) and flags,
 * or an expected error substring. Every success also checks the msg_info
 * invariants the fuzz target checks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/msg.h"

/* Expected flags of a successful scan; compared exactly. */
enum {
	F_XHDR = 1 << 0,	/* envelope_from_xheaders */
	F_UNDISCLOSED = 1 << 1, /* needs_undisclosed */
	F_UTF8 = 1 << 2,	/* needs_smtputf8 */
	F_8BIT = 1 << 3,	/* eightbit_headers */
	F_DATE = 1 << 4,	/* has_date (a valid one) */
	F_MID = 1 << 5,		/* has_message_id (a valid one) */
	F_NOSEP = 1 << 6,	/* !has_body_separator */
};

struct scan_case {
	const char *name;
	const char *in;
	size_t in_len;	      /* 0: strlen(in) */
	bool partial;	      /* at_eof = false */
	size_t max_hdr;	      /* 0: 65536 */
	unsigned max_rcpt;    /* 0: 100 */
	bool exact;	      /* exact_local_part */
	const char *err;      /* substring of the reason; NULL = must succeed */
	const char *sender;   /* "addr" or "addr PARAMS" */
	const char *rcpts;    /* the same, one per line */
	const char *kept;     /* header section minus skips, renames applied; NULL = not checked */
	const char *boundary; /* mime_boundary; NULL = "" */
	unsigned flags;
};

/* A .NET SpecifiedPickupDirectory file: X-Sender, X-Receiver for To, Cc, Bcc
 * in that order, a folded long X-Receiver, display names, an RFC 2047 name,
 * the ordinary headers without Bcc and without Message-ID. */
#define DOTNET_HEADERS                                                                             \
	"MIME-Version: 1.0\r\n"                                                                    \
	"From: \"App Mailer\" <noreply@example.com>\r\n"                                           \
	"To: to1@example.com, \"Doe, John\" <john@example.org>,\r\n"                               \
	" \"A Very Long Display Name That Makes The Line Wrap\" <long@example.com>\r\n"            \
	"Cc: cc@example.net\r\n"                                                                   \
	"Date: 1 Jan 2024 10:00:00 +0100\r\n"                                                      \
	"Subject: =?utf-8?B?R3LDvMOfZQ==?=\r\n"                                                    \
	"Content-Type: text/plain; charset=us-ascii\r\n"                                           \
	"Content-Transfer-Encoding: quoted-printable\r\n"                                          \
	"\r\n"
#define DOTNET_ENVELOPE                                                                            \
	"X-Sender: \"App Mailer\" <noreply@example.com>\r\n"                                       \
	"X-Receiver: to1@example.com\r\n"                                                          \
	"X-Receiver: \"Doe, John\" <john@example.org>\r\n"                                         \
	"X-Receiver: \"A Very Long Display Name That Makes The Line Wrap Past Column 76\"\r\n"     \
	" <long@example.com>\r\n"                                                                  \
	"X-Receiver: cc@example.net\r\n"                                                           \
	"X-Receiver: =?utf-8?B?SsO2cmc=?= <bcc@example.com>\r\n"

static const struct scan_case scan_cases[] = {
    {.name = "msg_dotnet_layout",
     .in = DOTNET_ENVELOPE DOTNET_HEADERS "..leading dot\r\nbody\r\n\r\n",
     .sender = "noreply@example.com",
     .rcpts = "to1@example.com\njohn@example.org\nlong@example.com\ncc@example.net\n"
	      "bcc@example.com",
     .kept = DOTNET_HEADERS,
     .flags = F_XHDR | F_DATE},
    {.name = "msg_php_lowercase_envelope",
     .in = "x-sender: sender@example.com\r\nx-receiver: a@example.com\r\n"
	   "x-receiver: b@example.com\r\nFrom: other@example.com\r\nTo: a@example.com\r\n"
	   "Subject: x\r\n\r\nbody",
     .sender = "sender@example.com",
     .rcpts = "a@example.com\nb@example.com",
     .kept = "From: other@example.com\r\nTo: a@example.com\r\nSubject: x\r\n\r\n",
     .flags = F_XHDR},
    {.name = "msg_xsender_after_xreceiver",
     .in = "X-Receiver: a@example.com\r\nX-Receiver: b@example.com\r\nX-Sender: app@example.com\r\n"
	   "From: other@example.com\r\nTo: a@example.com\r\n\r\n",
     .sender = "app@example.com",
     .rcpts = "a@example.com\nb@example.com",
     .kept = "From: other@example.com\r\nTo: a@example.com\r\n\r\n",
     .flags = F_XHDR},
    {.name = "msg_xsender_after_other_header_is_ordinary",
     .in = "X-Receiver: a@example.com\r\nMIME-Version: 1.0\r\nX-Sender: app@example.com\r\n"
	   "From: f@example.com\r\nTo: a@example.com\r\n\r\n",
     .sender = "f@example.com",
     .rcpts = "a@example.com",
     .kept = "MIME-Version: 1.0\r\nX-Sender: app@example.com\r\nFrom: f@example.com\r\n"
	     "To: a@example.com\r\n\r\n",
     .flags = F_XHDR},
    {.name = "msg_xsender_only_takes_rcpts_from_headers",
     .in = "X-Sender: app@example.com\r\nFrom: f@example.com\r\nTo: t@example.com\r\n"
	   "Bcc: b@example.com\r\n\r\n",
     .sender = "app@example.com",
     .rcpts = "t@example.com\nb@example.com",
     .kept = "From: f@example.com\r\nTo: t@example.com\r\n\r\n",
     .flags = F_XHDR},
    {.name = "msg_xreceiver_only_takes_sender_from_headers",
     .in = "X-Receiver: r@example.com\r\nFrom: f@example.com\r\nSender: s@example.com\r\n"
	   "Cc: c@example.com\r\n\r\n",
     .sender = "s@example.com",
     .rcpts = "r@example.com",
     .kept = "From: f@example.com\r\nSender: s@example.com\r\nCc: c@example.com\r\n\r\n",
     .flags = F_XHDR},
    {.name = "msg_replay_params",
     .in = "X-Sender: <bounce@example.com> BODY=7bit RET=HDRS ENVID=abc+2B123 AUTH=<>\r\n"
	   "X-Receiver: <r1@example.com>\r\n ORCPT=rfc822;r1@example.com NOTIFY=NEVER;\r\n"
	   " X-ExtendedProps=BQAVABYAAgAA\r\n"
	   "X-Receiver: <r2@example.com> NOTIFY=success,FAILURE ORcpt=rfc822;r2@example.com\r\n"
	   "X-Receiver: <r3@example.com> ORCPT=rfc822;r3@example.com;\r\n"
	   "X-CreatedBy: MSExchange15\r\nFrom: a@example.com\r\n\r\n",
     .sender = "bounce@example.com RET=HDRS ENVID=abc+2B123",
     .rcpts = "r1@example.com ORCPT=rfc822;r1@example.com NOTIFY=NEVER\n"
	      "r2@example.com NOTIFY=success,FAILURE ORCPT=rfc822;r2@example.com\n"
	      "r3@example.com ORCPT=rfc822;r3@example.com",
     .kept = "X-CreatedBy: MSExchange15\r\nFrom: a@example.com\r\n\r\n",
     .flags = F_XHDR | F_UNDISCLOSED},
    {.name = "msg_null_sender",
     .in = "X-Sender: <>\r\nX-Receiver: a@example.com\r\nTo: a@example.com\r\n\r\n",
     .sender = "",
     .rcpts = "a@example.com",
     .kept = "To: a@example.com\r\n\r\n",
     .flags = F_XHDR},
    {.name = "msg_headers_only",
     .in = "From: a@example.com\r\nTo: b@example.com\r\nMessage-Id: <1@x>\r\nSubject: x",
     .sender = "a@example.com",
     .rcpts = "b@example.com",
     .kept = "From: a@example.com\r\nTo: b@example.com\r\nMessage-Id: <1@x>\r\nSubject: x",
     .flags = F_NOSEP | F_MID},
    {.name = "msg_lf_only",
     .in = "From: a@example.com\nTo: b@example.com,\n c@example.com\nBcc: d@example.com\n"
	   "date: now\n\nbody\n",
     .sender = "a@example.com",
     .rcpts = "b@example.com\nc@example.com\nd@example.com",
     .kept = "From: a@example.com\nTo: b@example.com,\n c@example.com\nX-Original-Date: now\r\n\n"},
    {.name = "msg_group_undisclosed",
     .in = "From: a@example.com\r\nTo: undisclosed-recipients:;\r\nBcc: x@example.com\r\n\r\n",
     .sender = "a@example.com",
     .rcpts = "x@example.com",
     .kept = "From: a@example.com\r\nTo: undisclosed-recipients:;\r\n\r\n"},
    {.name = "msg_group_members",
     .in = "From: a@example.com\r\nTo: Team: a@example.com, \"B\" <b@example.com>;, c@example.com,"
	   " Empty:;, Open: d@example.com\r\n\r\n",
     .sender = "a@example.com",
     .rcpts = "a@example.com\nb@example.com\nc@example.com\nd@example.com"},
    {.name = "msg_comments",
     .in = "From: (boss) a(x)@(y)example.com (Alice)\r\n"
	   "To: \"Bob\" (the (nested \\) one)) <bob @ example . com> (work)\r\n\r\n",
     .sender = "a@example.com",
     .rcpts = "bob@example.com"},
    {.name = "msg_quoted_commas",
     .in = "From: x@example.com\r\nTo: \"Doe, John \\\"JD\\\"\" <jd@example.com>, "
	   "\"Roe, Jane\" <jr@example.com>\r\n\r\n",
     .sender = "x@example.com",
     .rcpts = "jd@example.com\njr@example.com"},
    {.name = "msg_obs_route",
     .in = "From: x@example.com\r\nTo: <@relay1.example,@relay2.example:user@example.com>,"
	   " Name <,@r.example:u2@example.com>\r\n\r\n",
     .sender = "x@example.com",
     .rcpts = "user@example.com\nu2@example.com"},
    {.name = "msg_duplicates",
     .in = "From: x@example.com\r\nTo: a@Example.COM, A@example.com\r\n"
	   "Cc: a@example.com, \"Again\" <a@EXAMPLE.com>\r\nBcc: b@example.com, "
	   "a@example.com\r\n\r\n",
     .sender = "x@example.com",
     .rcpts = "a@Example.COM\nb@example.com",
     .max_rcpt = 2},
    {.name = "msg_duplicates_exact_local_part",
     .in = "From: x@example.com\r\nTo: a@Example.COM, A@example.com\r\n"
	   "Cc: a@example.com, \"Again\" <a@EXAMPLE.com>\r\nBcc: b@example.com, "
	   "a@example.com\r\n\r\n",
     .exact = true,
     .sender = "x@example.com",
     .rcpts = "a@Example.COM\nA@example.com\nb@example.com",
     .max_rcpt = 3},
    {.name = "msg_duplicates_xreceiver_quoted_and_utf8",
     .in = "X-Sender: x@example.com\r\nX-Receiver: \"John Doe\"@example.com\r\n"
	   "X-Receiver: \"john doe\"@EXAMPLE.com\r\nX-Receiver: \xc3\xa4"
	   "B@example.com\r\n"
	   "X-Receiver: \xc3\xa4"
	   "b@example.com\r\nX-Receiver: \xc3\x84"
	   "b@example.com\r\n"
	   "To: t@example.com\r\n\r\n",
     .sender = "x@example.com",
     /* ASCII case only: U+00C4 and U+00E4 are different addresses. */
     .rcpts = "\"John Doe\"@example.com\n\xc3\xa4"
	      "B@example.com\n\xc3\x84"
	      "b@example.com",
     .flags = F_XHDR | F_UTF8},
    {.name = "msg_bcc_only",
     .in = "From: a@example.com\r\nSubject: s\r\nBcc: b@example.com,\r\n\tc@example.com\r\n"
	   "Date: x\r\n\r\n",
     .sender = "a@example.com",
     .rcpts = "b@example.com\nc@example.com",
     .kept = "From: a@example.com\r\nSubject: s\r\nX-Original-Date: x\r\n\r\n",
     .flags = F_UNDISCLOSED},
    {.name = "msg_two_bcc_fields_merge_with_block",
     .in = "X-Sender: s@example.com\r\nBcc: b@example.com\r\nBCC: c@example.com\r\n"
	   "To: t@example.com\r\n\r\n",
     .sender = "s@example.com",
     .rcpts = "b@example.com\nc@example.com\nt@example.com",
     .kept = "To: t@example.com\r\n\r\n",
     .flags = F_XHDR},
    {.name = "msg_empty_elements",
     .in = "From: x@example.com\r\nTo: ,a@example.com,,  , b@example.com,\r\n\r\n",
     .sender = "x@example.com",
     .rcpts = "a@example.com\nb@example.com"},
    {.name = "msg_quoted_local_and_literal",
     .in = "From: x@example.com\r\nTo: \"john doe\"@example.com, \"plain\"@example.com,"
	   " user@[192.0.2.1], john..doe@example.com, \"a\\\"b\".c@example.com\r\n\r\n",
     .sender = "x@example.com",
     .rcpts = "\"john doe\"@example.com\nplain@example.com\nuser@[192.0.2.1]\n"
	      "\"john..doe\"@example.com\n\"a\\\"b.c\"@example.com"},
    {.name = "msg_sender_preferred_over_from",
     .in = "From: f@example.com\r\nSender: s@example.com\r\nTo: t@example.com\r\n\r\n",
     .sender = "s@example.com",
     .rcpts = "t@example.com"},
    {.name = "msg_from_first_mailbox",
     .in = "From: a@example.com, b@example.com\r\nTo: t@example.com\r\n\r\n",
     .sender = "a@example.com",
     .rcpts = "t@example.com"},
    {.name = "msg_bom_without_envelope",
     .in = "\xef\xbb\xbf"
	   "From: a@example.com\r\nTo: b@example.com\r\n\r\n",
     .sender = "a@example.com",
     .rcpts = "b@example.com",
     .kept = "From: a@example.com\r\nTo: b@example.com\r\n\r\n"},
    {.name = "msg_bom_with_envelope",
     .in = "\xef\xbb\xbf"
	   "X-Sender: a@example.com\r\nX-Receiver: b@example.com\r\nTo: b@example.com\r\n\r\n",
     .sender = "a@example.com",
     .rcpts = "b@example.com",
     .kept = "To: b@example.com\r\n\r\n",
     .flags = F_XHDR},
    {.name = "msg_utf8_addresses",
     .in = "X-Sender: app@example.com\r\nX-Receiver: \"J\xc3\xb6rg\" "
	   "<j\xc3\xb6rg@ex\xc3\xa4mple.de>\r\n"
	   "To: j\xc3\xb6rg@ex\xc3\xa4mple.de\r\nSubject: Gr\xc3\xbc\xc3\x9f"
	   "e\r\n\r\n",
     .sender = "app@example.com",
     .rcpts = "j\xc3\xb6rg@ex\xc3\xa4mple.de",
     .flags = F_XHDR | F_UTF8 | F_8BIT},
    {.name = "msg_8bit_only_in_skipped_lines",
     .in = "X-Sender: app@example.com\r\nX-Receiver: \"J\xc3\xb6rg\" <j@example.de>\r\n"
	   "To: j@example.de\r\nBcc: \"\xc3\xa4\" <b@example.de>\r\n\r\n",
     .sender = "app@example.com",
     .rcpts = "j@example.de",
     .flags = F_XHDR},
    {.name = "msg_obs_wsp_before_colon",
     .in = "From : a@example.com\r\nTo\t: b@example.com\r\nMESSAGE-ID: <x@y>\r\n\r\n",
     .sender = "a@example.com",
     .rcpts = "b@example.com",
     .flags = F_MID},
    {.name = "msg_partial_with_separator",
     .in = "From: a@example.com\r\nTo: b@example.com\r\n\r\nbody that goes on",
     .partial = true,
     .sender = "a@example.com",
     .rcpts = "b@example.com",
     .kept = "From: a@example.com\r\nTo: b@example.com\r\n\r\n"},
    {.name = "msg_header_exactly_at_limit",
     .in = "From: a@example.com\r\nTo: b@example.com\r\n\r\nxx",
     .max_hdr = 42,
     .sender = "a@example.com",
     .rcpts = "b@example.com"},
    {.name = "msg_dedup_below_limit",
     .in = "From: x@example.com\r\nTo: a@example.com, a@example.com, b@example.com\r\n\r\n",
     .max_rcpt = 2,
     .sender = "x@example.com",
     .rcpts = "a@example.com\nb@example.com"},
    /* Date:/Message-ID: replaced when none is valid; the value stays under X-Original- */
    {.name = "msg_empty_message_id_and_bad_date",
     .in = "From: a@example.com\r\nTo: b@example.com\r\nDate: yesterday-ish\r\n"
	   "Message-ID:\r\nmessage-id: 12345\r\n\r\nbody\r\n",
     .sender = "a@example.com",
     .rcpts = "b@example.com",
     .kept = "From: a@example.com\r\nTo: b@example.com\r\nX-Original-Date: yesterday-ish\r\n"
	     "X-Original-Message-ID:\r\nX-Original-Message-ID: 12345\r\n\r\n"},
    {.name = "msg_one_valid_date_keeps_all",
     .in = "From: a@example.com\r\nTo: b@example.com\r\nDate: junk\r\n"
	   "Date: Tue, 2 Jan 2024 03:04:05 -0800\r\nMessage-ID:\r\n <a.b@c>\r\n\r\n",
     .sender = "a@example.com",
     .rcpts = "b@example.com",
     .kept = "From: a@example.com\r\nTo: b@example.com\r\nDate: junk\r\n"
	     "Date: Tue, 2 Jan 2024 03:04:05 -0800\r\nMessage-ID:\r\n <a.b@c>\r\n\r\n",
     .flags = F_DATE | F_MID},
    {.name = "msg_rename_first_field_after_block",
     .in = "X-Sender: a@example.com\r\nX-Receiver: b@example.com\r\nDate: 1 Jan\r\n"
	   "Message-ID: <x@y>\r\n\r\n",
     .sender = "a@example.com",
     .rcpts = "b@example.com",
     .kept = "X-Original-Date: 1 Jan\r\nMessage-ID: <x@y>\r\n\r\n",
     .flags = F_XHDR | F_MID | F_UNDISCLOSED},
    /* the outermost multipart's boundary */
    {.name = "msg_mime_boundary_quoted_folded",
     .in = "From: a@example.com\r\nTo: b@example.com\r\nMIME-Version: 1.0\r\n"
	   "Content-Type: Multipart/Mixed; (c) charset=x;\r\n\tBoundary = \"=_a \\\"b\\\" c\"\r\n"
	   "Content-Type: multipart/mixed; boundary=second\r\n\r\n",
     .sender = "a@example.com",
     .rcpts = "b@example.com",
     .boundary = "=_a \"b\" c"},
    {.name = "msg_mime_boundary_token",
     .in = "From: a@example.com\r\nTo: b@example.com\r\n"
	   "content-type: multipart/alternative;boundary=----=_Part_1_2.3\r\n\r\n",
     .sender = "a@example.com",
     .rcpts = "b@example.com",
     .boundary = "----=_Part_1_2.3"},
    {.name = "msg_mime_not_multipart",
     .in = "From: a@example.com\r\nTo: b@example.com\r\n"
	   "Content-Type: text/plain; boundary=x\r\n\r\n",
     .sender = "a@example.com",
     .rcpts = "b@example.com"},
    {.name = "msg_mime_boundary_too_long",
     .in = "From: a@example.com\r\nTo: b@example.com\r\nContent-Type: multipart/mixed; "
	   "boundary=\"12345678901234567890123456789012345678901234567890123456789012345678901\""
	   "\r\n\r\n",
     .sender = "a@example.com",
     .rcpts = "b@example.com"},
    {.name = "msg_mime_boundary_70",
     .in = "From: a@example.com\r\nTo: b@example.com\r\nContent-Type: multipart/mixed; "
	   "boundary=1234567890123456789012345678901234567890123456789012345678901234567890"
	   "\r\n\r\n",
     .sender = "a@example.com",
     .rcpts = "b@example.com",
     .boundary = "1234567890123456789012345678901234567890123456789012345678901234567890"},

    /* refused input */
    {.name = "msg_empty_file", .in = "", .err = "empty file"},
    {.name = "msg_bom_only", .in = "\xef\xbb\xbf", .err = "empty file"},
    {.name = "msg_starts_with_empty_line",
     .in = "\r\nFrom: a@example.com\r\n",
     .err = "no header fields"},
    {.name = "msg_nul_in_header",
     .in = "From: a@example.com\r\nTo: b@exa\0mple.com\r\n\r\n",
     .in_len = 43,
     .err = "NUL byte at offset 30"},
    {.name = "msg_malformed_line",
     .in = "From: a@example.com\r\nThis is not a header\r\nTo: b@example.com\r\n\r\n",
     .err = "malformed header line 2"},
    {.name = "msg_leading_continuation",
     .in = " From: a@example.com\r\n\r\n",
     .err = "malformed header line 1"},
    {.name = "msg_mbox_from_line",
     .in = "From a@example.com Mon Jan 1 00:00:00 2024\r\n\r\n",
     .err = "malformed header line 1"},
    {.name = "msg_bare_lf_in_address_splits_line",
     .in = "From: a@example.com\r\nTo: <b@example.com\n>\r\n\r\n",
     .err = "malformed header line 3"},
    {.name = "msg_header_over_limit",
     .in = "From: a@example.com\r\nTo: b@example.com\r\n\r\nxx",
     .max_hdr = 41,
     .err = "header section over 41 bytes"},
    {.name = "msg_header_over_limit_no_newline",
     .in = "From: a@example.com, b@example.com, c@example.com",
     .max_hdr = 20,
     .err = "header section over 20 bytes"},
    {.name = "msg_partial_without_end",
     .in = "From: a@example.com\r\nTo: b@example.com\r\n",
     .partial = true,
     .err = "header section over 40 bytes"},
    {.name = "msg_cr_injection_xreceiver",
     .in = "X-Sender: a@example.com\r\nX-Receiver: <v@example.com>\rRCPT TO:<evil@example.com>\r\n"
	   "\r\n",
     .err = "control character in address in X-Receiver line 2"},
    {.name = "msg_cr_injection_to",
     .in = "From: a@example.com\r\nTo: v@example.com\r\rRCPT TO:<evil@example.com>\r\n\r\n",
     .err = "control character in address in To line 2"},
    {.name = "msg_ctl_in_from",
     .in = "From: a\x01@example.com\r\nTo: v@example.com\r\n\r\n",
     .err = "control character in address in From line 1"},
    {.name = "msg_del_in_xsender",
     .in = "X-Sender: <a\x7f@example.com>\r\nX-Receiver: v@example.com\r\n\r\n",
     .err = "control character in address in X-Sender line 1"},
    {.name = "msg_too_many_recipients",
     .in = "From: x@example.com\r\nTo: a@example.com, b@example.com, c@example.com\r\n\r\n",
     .max_rcpt = 2,
     .err = "too many recipients (3, limit 2)"},
    {.name = "msg_no_recipients",
     .in = "From: x@example.com\r\nTo: undisclosed-recipients:;\r\n\r\n",
     .err = "no recipients"},
    {.name = "msg_no_sender",
     .in = "To: a@example.com\r\nSubject: x\r\n\r\n",
     .err = "no sender (no X-Sender, Sender: or From:)"},
    {.name = "msg_unparseable_sender",
     .in = "From: Undisclosed\r\nTo: a@example.com\r\n\r\n",
     .err = "no sender: address without '@' in From line 1"},
    {.name = "msg_sender_group_without_mailbox",
     .in = "From: list:;\r\nTo: a@example.com\r\n\r\n",
     .err = "no sender (From line 1 holds no mailbox)"},
    {.name = "msg_address_without_at",
     .in = "From: x@example.com\r\nTo: <postmaster>\r\n\r\n",
     .err = "address without '@' in To line 2"},
    {.name = "msg_unquoted_comma_name",
     .in = "From: x@example.com\r\nTo: Doe, John <jd@example.com>\r\n\r\n",
     .err = "address without '@' in To line 2"},
    {.name = "msg_empty_angle_rcpt",
     .in = "X-Sender: a@example.com\r\nX-Receiver: <>\r\n\r\n",
     .err = "empty address <> in X-Receiver line 2"},
    {.name = "msg_empty_xreceiver",
     .in = "X-Sender: a@example.com\r\nX-Receiver:  \r\n\r\n",
     .err = "no address in X-Receiver line 2"},
    {.name = "msg_two_xsenders",
     .in =
	 "X-Sender: a@example.com\r\nX-Receiver: b@example.com\r\nX-Sender: c@example.com\r\n\r\n",
     .err = "more than one X-Sender line (lines 1 and 3)"},
    {.name = "msg_bad_notify",
     .in = "X-Sender: a@example.com\r\nX-Receiver: <b@example.com> NOTIFY=SOMETIMES\r\n\r\n",
     .err = "invalid ESMTP parameter NOTIFY in X-Receiver line 2"},
    {.name = "msg_bad_orcpt_xtext",
     .in = "X-Sender: a@example.com\r\nX-Receiver: <b@example.com> ORCPT=rfc822;b+x@example.com\r\n"
	   "\r\n",
     .err = "invalid ESMTP parameter ORCPT in X-Receiver line 2"},
    {.name = "msg_duplicate_param",
     .in = "X-Sender: <a@example.com> RET=FULL RET=HDRS\r\nX-Receiver: b@example.com\r\n\r\n",
     .err = "duplicate ESMTP parameter RET in X-Sender line 1"},
    {.name = "msg_malformed_param",
     .in = "X-Sender: a@example.com\r\nX-Receiver: <b@example.com> garbage here=\r\n\r\n",
     .err = "malformed ESMTP parameter after the address in X-Receiver line 2"},
    {.name = "msg_group_in_xreceiver",
     .in = "X-Sender: a@example.com\r\nX-Receiver: team: b@example.com;\r\n\r\n",
     .err = "group not allowed here in X-Receiver line 2"},
    {.name = "msg_nested_group",
     .in = "From: x@example.com\r\nTo: a: b: c@example.com;;\r\n\r\n",
     .err = "group not allowed here in To line 2"},
    {.name = "msg_unterminated_quote",
     .in = "From: x@example.com\r\nTo: \"Doe <jd@example.com>\r\n\r\n",
     .err = "unterminated quoted string in To line 2"},
    {.name = "msg_unterminated_comment",
     .in = "From: x@example.com\r\nTo: jd@example.com (x (y)\r\n\r\n",
     .err = "unterminated comment in To line 2"},
    {.name = "msg_words_without_dot",
     .in = "From: x@example.com\r\nTo: john doe@example.com\r\n\r\n",
     .err = "not separated by '.' in To line 2"},
    {.name = "msg_two_angles",
     .in = "From: x@example.com\r\nTo: A <a@example.com> <b@example.com>\r\n\r\n",
     .err = "unexpected '<' after address in To line 2"},
    {.name = "msg_trailing_dot_domain",
     .in = "From: x@example.com\r\nTo: a@example.com.\r\n\r\n",
     .err = "unexpected end of field after '.' in the domain in To line 2"},
    {.name = "msg_bad_literal",
     .in = "From: x@example.com\r\nTo: a@[1.2\\.3.4]\r\n\r\n",
     .err = "invalid character '\\' in domain literal in To line 2"},
    {.name = "msg_missing_domain",
     .in = "From: x@example.com\r\nTo: a@\r\n\r\n",
     .err = "unexpected end of field where the domain after '@' should be in To line 2"},
    {.name = "msg_missing_local",
     .in = "From: x@example.com\r\nTo: @example.com\r\n\r\n",
     .err = "missing local part before '@' in To line 2"},
    {.name = "msg_unclosed_angle",
     .in = "From: x@example.com\r\nTo: <a@example.com\r\n\r\n",
     .err = "unexpected end of field where '>' should end the address in To line 2"},
    {.name = "msg_bad_route",
     .in = "From: x@example.com\r\nTo: <@r.example a@example.com>\r\n\r\n",
     .err = "unexpected word in source route in To line 2"},
    {.name = "msg_stray_semicolon",
     .in = "From: x@example.com\r\nTo: ;\r\n\r\n",
     .err = "unexpected ';' where an address should be in To line 2"},
    {.name = "msg_stray_paren",
     .in = "From: x@example.com\r\nTo: a@example.com)\r\n\r\n",
     .err = "unexpected ')' in To line 2"},
    {.name = "msg_8bit_in_literal",
     .in = "From: x@example.com\r\nTo: a@[\xc3\xa4]\r\n\r\n",
     .err = "invalid character byte 0xc3 in domain literal in To line 2"},
    {.name = "msg_unterminated_literal",
     .in = "From: x@example.com\r\nTo: a@[1.2.3.4\r\n\r\n",
     .err = "unterminated domain literal in To line 2"},
    {.name = "msg_group_junk",
     .in = "From: x@example.com\r\nTo: g: a@example.com b@example.com;\r\n\r\n",
     .err = "unexpected word after address in group in To line 2"},
    {.name = "msg_orcpt_without_type",
     .in = "X-Sender: a@example.com\r\nX-Receiver: b@example.com ORCPT=b@example.com\r\n\r\n",
     .err = "invalid ESMTP parameter ORCPT in X-Receiver line 2"},
    {.name = "msg_param_without_value",
     .in = "X-Sender: a@example.com\r\nX-Receiver: b@example.com NOTIFY\r\n\r\n",
     .err = "invalid ESMTP parameter NOTIFY in X-Receiver line 2"},
    {.name = "msg_param_bad_keyword",
     .in = "X-Sender: a@example.com\r\nX-Receiver: b@example.com -X=1\r\n\r\n",
     .err = "malformed ESMTP parameter after the address in X-Receiver line 2"},
    {.name = "msg_param_bad_value",
     .in = "X-Sender: <a@example.com> ENVID=a=b\r\nX-Receiver: b@example.com\r\n\r\n",
     .err = "malformed ESMTP parameter after the address in X-Sender line 1"},
    {.name = "msg_envid_bad_xtext",
     .in = "X-Sender: <a@example.com> ENVID=a+zz\r\nX-Receiver: b@example.com\r\n\r\n",
     .err = "invalid ESMTP parameter ENVID in X-Sender line 1"},
    {.name = "msg_address_too_long",
     .in = "From: x@example.com\r\nTo: "
	   "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	   "aaa"
	   "aa"
	   "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	   "aaa"
	   "aa"
	   "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@example.com\r\n\r\n",
     .err = "address longer than 254 octets in To line 2"},
};

static void render_addr(struct buf *b, const struct msg_addr *a)
{
	buf_puts(b, a->addr);
	if (a->params != NULL) {
		buf_putc(b, ' ');
		buf_puts(b, a->params);
	}
}

/* The invariants msg.h promises (shared with the fuzz target's checks). */
static void check_invariants(const struct msg_info *info, size_t len, unsigned max_rcpt)
{
	assert_true(info->header_end <= len);
	assert_true(info->headers_start <= info->header_end);
	size_t prev_end = 0;
	for (size_t i = 0; i < info->n_skips; i++) {
		assert_true(info->skips[i].len > 0);
		assert_true(i == 0 || info->skips[i].off > prev_end); /* merged when adjacent */
		assert_true(info->skips[i].off + info->skips[i].len <= info->header_end);
		prev_end = info->skips[i].off + info->skips[i].len;
	}
	prev_end = 0;
	for (size_t i = 0; i < info->n_renames; i++) {
		const struct msg_range *r = &info->renames[i].field;
		const struct msg_range *v = &info->renames[i].value;
		assert_true(r->len > 0 && r->off >= prev_end &&
			    r->off + r->len <= info->header_end);
		assert_true(v->off > r->off && v->off + v->len <= r->off + r->len);
		for (size_t k = 0; k < info->n_skips; k++) /* disjoint from the skips */
			assert_true(r->off + r->len <= info->skips[k].off ||
				    r->off >= info->skips[k].off + info->skips[k].len);
		prev_end = r->off + r->len;
	}
	assert_int_equal(msg_addr_valid(info->sender.addr), 0);
	assert_true(info->n_rcpts > 0 && info->n_rcpts <= max_rcpt);
	for (size_t i = 0; i < info->n_rcpts; i++) {
		assert_true(info->rcpts[i].addr[0] != '\0');
		assert_int_equal(msg_addr_valid(info->rcpts[i].addr), 0);
	}
}

/* The header section as sent: input[0..header_end) without the skips, the
 * renamed fields written "to:value" plus a CRLF (both lists are sorted and
 * disjoint). */
static void render_kept(struct buf *out, const char *in, const struct msg_info *info)
{
	size_t off = 0, s = 0, r = 0;
	buf_puts(out, "");
	while (s < info->n_skips || r < info->n_renames) {
		bool skip = r >= info->n_renames ||
			    (s < info->n_skips && info->skips[s].off < info->renames[r].field.off);
		const struct msg_range *e = skip ? &info->skips[s++] : &info->renames[r].field;
		buf_append(out, in + off, e->off - off);
		if (!skip) {
			const struct msg_rename *rn = &info->renames[r++];
			buf_printf(out, "%s:%.*s\r\n", rn->to, (int)rn->value.len,
				   in + rn->value.off);
		}
		off = e->off + e->len;
	}
	buf_append(out, in + off, info->header_end - off);
}

static void test_scan_table(void **state)
{
	for (size_t c = 0; c < sizeof(scan_cases) / sizeof(scan_cases[0]); c++) {
		const struct scan_case *tc = &scan_cases[c];
		struct msg_scan_opts opts = {.max_header_size = tc->max_hdr ? tc->max_hdr : 65536,
					     .max_recipients = tc->max_rcpt ? tc->max_rcpt : 100,
					     .exact_local_part = tc->exact};
		struct msg_info info;
		struct buf reason = BUF_INIT;

		print_message("case %s\n", tc->name);
		size_t len = tc->in_len ? tc->in_len : strlen(tc->in);
		int r = msg_scan(tc->in, len, !tc->partial, &opts, &info, &reason);
		if (tc->err != NULL) {
			if (r == 0)
				fail_msg("%s: expected error '%s'", tc->name, tc->err);
			assert_non_null(reason.data);
			if (strstr(reason.data, tc->err) == NULL)
				fail_msg("%s: reason '%s' lacks '%s'", tc->name, reason.data,
					 tc->err);
			assert_null(strchr(reason.data, '\n'));
			assert_null(info.rcpts);
			assert_null(info.skips);
			buf_deinit(&reason);
			continue;
		}
		if (r != 0)
			fail_msg("%s: unexpected error '%s'", tc->name, reason.data);
		check_invariants(&info, len, opts.max_recipients);

		struct buf got = BUF_INIT;
		render_addr(&got, &info.sender);
		assert_string_equal(got.data, tc->sender);
		buf_clear(&got);
		for (size_t i = 0; i < info.n_rcpts; i++) {
			if (i > 0)
				buf_putc(&got, '\n');
			render_addr(&got, &info.rcpts[i]);
		}
		assert_string_equal(got.data, tc->rcpts);
		if (tc->kept != NULL) {
			buf_clear(&got);
			render_kept(&got, tc->in, &info);
			assert_string_equal(got.data, tc->kept);
		}
		assert_string_equal(info.mime_boundary, tc->boundary ? tc->boundary : "");
		unsigned flags = (info.envelope_from_xheaders ? F_XHDR : 0) |
				 (info.needs_undisclosed ? F_UNDISCLOSED : 0) |
				 (info.needs_smtputf8 ? F_UTF8 : 0) |
				 (info.eightbit_headers ? F_8BIT : 0) |
				 (info.has_date ? F_DATE : 0) | (info.has_message_id ? F_MID : 0) |
				 (info.has_body_separator ? 0 : F_NOSEP);
		if (flags != tc->flags)
			fail_msg("%s: flags 0x%x, expected 0x%x", tc->name, flags, tc->flags);
		buf_deinit(&got);
		buf_deinit(&reason);
		msg_info_deinit(&info);
	}
}

/* Cutting a good message anywhere before the end of its header section, with
 * at_eof false, must ask for more (the caller has not read enough), never
 * succeed on a prefix. */
static void test_msg_partial_prefixes(void **state)
{
	static const char in[] = DOTNET_ENVELOPE DOTNET_HEADERS "body\r\n";
	struct msg_scan_opts opts = {.max_header_size = 65536, .max_recipients = 100};
	struct msg_info info;
	struct buf reason = BUF_INIT;

	assert_int_equal(msg_scan(in, sizeof(in) - 1, false, &opts, &info, &reason), 0);
	size_t end = info.header_end;
	msg_info_deinit(&info);
	for (size_t n = 1; n < end; n++) {
		buf_clear(&reason);
		assert_int_equal(msg_scan(in, n, false, &opts, &info, &reason), -1);
		assert_non_null(strstr(reason.data, "header section over"));
	}
	assert_int_equal(msg_scan(in, end, false, &opts, &info, &reason), 0);
	assert_int_equal(info.n_rcpts, 5);
	msg_info_deinit(&info);
	buf_deinit(&reason);
}

/* Many recipients: de-duplication through the hash set keeps the first
 * spelling and the order; the limit counts distinct recipients. */
static void test_msg_many_recipients(void **state)
{
	struct buf in = BUF_INIT;
	struct buf reason = BUF_INIT;
	struct msg_info info;

	buf_puts(&in, "From: x@example.com\r\nTo: ");
	for (int i = 0; i < 300; i++)
		buf_printf(&in, "%su%d@%s", i ? ", " : "", i % 150, i < 150 ? "ex.com" : "EX.COM");
	buf_puts(&in, "\r\n\r\n");
	struct msg_scan_opts opts = {.max_header_size = 65536, .max_recipients = 150};
	assert_int_equal(msg_scan(in.data, in.len, true, &opts, &info, &reason), 0);
	assert_int_equal(info.n_rcpts, 150);
	for (size_t i = 0; i < info.n_rcpts; i++) {
		char want[32];
		snprintf(want, sizeof(want), "u%zu@ex.com", i);
		assert_string_equal(info.rcpts[i].addr, want);
	}
	msg_info_deinit(&info);
	opts.max_recipients = 149;
	assert_int_equal(msg_scan(in.data, in.len, true, &opts, &info, &reason), -1);
	assert_string_equal(reason.data, "too many recipients (150, limit 149)");
	buf_deinit(&in);
	buf_deinit(&reason);
}

static void test_msg_parse_address_list(void **state)
{
	struct msg_addr *list = NULL;
	size_t n = 0;
	struct buf reason = BUF_INIT;
	static const char ok[] = "a@example.com, (c) B <b@example.com>";
	static const char bad[] = "c@example.com, d";

	assert_int_equal(msg_parse_address_list(ok, sizeof(ok) - 1, &list, &n, &reason), 0);
	assert_int_equal(n, 2);
	/* appends, and leaves the list alone on error */
	assert_int_equal(msg_parse_address_list(ok, 1 + 13, &list, &n, &reason), 0);
	assert_int_equal(n, 3);
	assert_string_equal(list[2].addr, "a@example.com");
	assert_int_equal(msg_parse_address_list(bad, sizeof(bad) - 1, &list, &n, &reason), -1);
	assert_int_equal(n, 3);
	assert_string_equal(reason.data, "address without '@'");
	assert_string_equal(list[1].addr, "b@example.com");
	assert_null(list[1].params);
	for (size_t i = 0; i < n; i++)
		free(list[i].addr);
	free(list);
	buf_deinit(&reason);
}

static void test_msg_addr_valid(void **state)
{
	static const struct {
		const char *addr;
		int want;
	} cases[] = {
	    {"", 0},
	    {"a@b", 0},
	    {"first.last+tag@sub.example.com", 0},
	    {"\"john doe\"@example.com", 0},
	    {"\"a\\\"b\"@example.com", 0},
	    {"user@[192.0.2.1]", 0},
	    {"user@[IPv6:2001:db8::1]", 0},
	    {"j\xc3\xb6rg@ex\xc3\xa4mple.de", 0},
	    {"nodomain", -1},
	    {"@example.com", -1},
	    {"a@", -1},
	    {"a b@example.com", -1},
	    {"a@exa mple.com", -1},
	    {"a@example.com\r\nRCPT TO:<x@y>", -1},
	    {"a\x01@example.com", -1},
	    {"\"a\rb\"@example.com", -1},
	    {"a..b@example.com", -1},
	    {".a@example.com", -1},
	    {"a@example..com", -1},
	    {"a@b@c", -1},
	    {"<a@b>", -1},
	    {"\"unterminated@example.com", -1},
	    {"a@[1.2.3.4", -1},
	    {"a@[1.2.3.4]x", -1},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (msg_addr_valid(cases[i].addr) != cases[i].want)
			fail_msg("msg_addr_valid(\"%s\") != %d", cases[i].addr, cases[i].want);

	char longest[MSG_MAX_ADDR + 2];
	memset(longest, 'a', sizeof(longest));
	memcpy(longest + MSG_MAX_ADDR - 4, "@b.c", 5); /* exactly MSG_MAX_ADDR octets */
	assert_int_equal(msg_addr_valid(longest), 0);
	memset(longest, 'a', sizeof(longest));
	memcpy(longest + MSG_MAX_ADDR - 3, "@b.c", 5);
	assert_int_equal(msg_addr_valid(longest), -1);
}

static void test_msg_format_date(void **state)
{
	static const struct {
		int64_t t;
		const char *want;
	} cases[] = {
	    {0, "Thu, 01 Jan 1970 00:00:00 +0000"},
	    {1700000000, "Tue, 14 Nov 2023 22:13:20 +0000"},
	    {1795425784, "Mon, 23 Nov 2026 09:23:04 +0000"},
	    {951782400, "Tue, 29 Feb 2000 00:00:00 +0000"},
	    {INT64_C(253402300799), "Fri, 31 Dec 9999 23:59:59 +0000"},
	    {-1, "Thu, 01 Jan 1970 00:00:00 +0000"},
	    {INT64_MAX, "Thu, 01 Jan 1970 00:00:00 +0000"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct buf b = BUF_INIT;
		buf_puts(&b, "Date: ");
		msg_format_date(cases[i].t, &b);
		assert_string_equal(b.data + 6, cases[i].want);
		buf_deinit(&b);
	}
}

#define NOPARSE INT64_MIN

/* RFC 5322 3.3 date-time and the obsolete forms of 4.3: what parses, to
 * which instant, and what does not. */
static void test_msg_parse_date(void **state)
{
	static const struct {
		const char *in;
		int64_t want;
	} cases[] = {
	    {"Tue, 14 Nov 2023 22:13:20 +0000", 1700000000},
	    {"14 Nov 2023 23:13:20 +0100", 1700000000}, /* .NET: no weekday */
	    {"Tue, 14 Nov 2023 17:13:20 -0500", 1700000000},
	    {"  Tue ,14 Nov 2023 22:13:20 +0000  ", 1700000000},
	    {"tue, 14 nov 2023 22:13:20 +0000", 1700000000}, /* names in any case */
	    {"Tue, 14 Nov 2023 22:13 +0000", 1699999980},    /* no seconds */
	    {"Tue, 14 Nov 2023 17:13:20 EST", 1700000000},   /* obs-zone */
	    {"Tue, 14 Nov 2023 22:13:20 GMT", 1700000000},
	    {"Tue, 14 Nov 2023 22:13:20 UT", 1700000000},
	    {"Tue, 14 Nov 2023 22:13:20 UTC", 1700000000}, /* common extension */
	    {"Tue, 14 Nov 2023 14:13:20 PST", 1700000000},
	    {"Tue, 14 Nov 2023 22:13:20 Z", 1700000000}, /* military: -0000 */
	    {"Tue, 14 Nov 2023 22:13:20 a", 1700000000},
	    {"Tue, 14 Nov 23 22:13:20 +0000", 1700000000},    /* obs-year 2 digits */
	    {"Fri, 1 Jan 99 23:59 EST (Eastern)", 915253140}, /* 1999 */
	    {"1 Jan 100 00:00:00 +0000", 946684800},	      /* 3 digits: 2000 */
	    {"(c) Tue (d), (e) 14 (f) Nov (g) 2023 (h) 22 (i) : (j) 13 : 20 (k) +0000 (l)",
	     1700000000}, /* CFWS everywhere */
	    {"Tue,\t14 Nov 2023 22:13:20 +0000 (UTC)", 1700000000},
	    {"Thu, 29 Feb 2024 00:00:00 +0000", 1709164800}, /* leap day */
	    {"Sat, 31 Dec 2016 23:59:60 +0000", 1483228800}, /* leap second */
	    {"Sun, 14 Nov 2023 22:13:20 +0000", 1700000000}, /* weekday not checked */
	    {"1 Jan 1900 00:00:00 +0000", INT64_C(-2208988800)},
	    {"31 Dec 9999 23:59:59 +0000", INT64_C(253402300799)},
	    {"", NOPARSE},
	    {"yesterday-ish", NOPARSE},
	    {"Tue, 14 Nov 2023", NOPARSE},	    /* no time */
	    {"Tue, 14 Nov 2023 22:13:20", NOPARSE}, /* no zone */
	    {"Tue, 32 Nov 2023 22:13:20 +0000", NOPARSE},
	    {"Tue, 31 Nov 2023 22:13:20 +0000", NOPARSE},
	    {"Thu, 29 Feb 2023 00:00:00 +0000", NOPARSE},
	    {"Tue, 0 Nov 2023 22:13:20 +0000", NOPARSE},
	    {"Tue, 14 Nov 2023 24:00:00 +0000", NOPARSE},
	    {"Tue, 14 Nov 2023 22:60:00 +0000", NOPARSE},
	    {"Tue, 14 Nov 2023 22:13:61 +0000", NOPARSE},
	    {"Tue, 14 Nov 2023 2:13:20 +0000", NOPARSE}, /* hour 2DIGIT */
	    {"Tue, 14 Nov 2023 22:13:20 +01", NOPARSE},
	    {"Tue, 14 Nov 2023 22:13:20 +0160", NOPARSE},
	    {"Tue, 14 Nov 2023 22:13:20 + 0100", NOPARSE},
	    {"Tue, 14 Nov 2023 22:13:20 J", NOPARSE}, /* no military J */
	    {"Tue, 14 Nov 2023 22:13:20 CET", NOPARSE},
	    {"Tue, 14 Nov 2023 22:13:20 +0000 extra", NOPARSE},
	    {"Tue 14 Nov 2023 22:13:20 +0000", NOPARSE}, /* weekday without comma */
	    {"Tuesday, 14 Nov 2023 22:13:20 +0000", NOPARSE},
	    {"14 November 2023 22:13:20 +0000", NOPARSE},
	    {"14 Nov 1899 22:13:20 +0000", NOPARSE},
	    {"14 Nov 10000 22:13:20 +0000", NOPARSE},
	    {"14 Nov 2023 22:13:20 +0000 (unterminated", NOPARSE},
	    {"14 Nov 2023\r22:13:20 +0000", NOPARSE}, /* control character */
	    {"2023-11-14T22:13:20Z", NOPARSE},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int64_t t = 42;
		int r = msg_parse_date(cases[i].in, strlen(cases[i].in), &t);
		if (cases[i].want == NOPARSE ? r != -1 : (r != 0 || t != cases[i].want))
			fail_msg("msg_parse_date(\"%s\"): r=%d t=%lld", cases[i].in, r,
				 (long long)t);
	}
	/* What we write, we parse. */
	for (int64_t t = 0; t < INT64_C(253402300799); t += INT64_C(86400) * 3653 + 12345) {
		struct buf b = BUF_INIT;
		int64_t back;
		msg_format_date(t, &b);
		assert_int_equal(msg_parse_date(b.data, b.len, &back), 0);
		assert_int_equal(back, t);
		buf_deinit(&b);
	}
}

static void test_msg_msgid_valid(void **state)
{
	static const struct {
		const char *in;
		int valid;
	} cases[] = {
	    {"<1.2@example.com>", 0},
	    {"  <abc$def@host> (comment)", 0},
	    {"<\"quoted local\"@host>", 0}, /* obs-id-left */
	    {"<a@[192.0.2.1]>", 0},
	    {"<007d01c4$1a2b3c40$6401a8c0@host>", 0}, /* MimeOLE */
	    {"<a . b@c . d>", 0},		      /* obs: CFWS inside */
	    {"", -1},
	    {"   ", -1},
	    {"12345", -1},
	    {"<12345>", -1},
	    {"<@host>", -1},
	    {"<a@>", -1},
	    {"a@b", -1},
	    {"<a@b", -1},
	    {"<a@b> <c@d>", -1},
	    {"<a b@c>", -1},
	    {"<a@b\x01>", -1},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (msg_msgid_valid(cases[i].in, strlen(cases[i].in)) != cases[i].valid)
			fail_msg("msg_msgid_valid(\"%s\") != %d", cases[i].in, cases[i].valid);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_scan_table),
	    cmocka_unit_test(test_msg_partial_prefixes),
	    cmocka_unit_test(test_msg_many_recipients),
	    cmocka_unit_test(test_msg_parse_address_list),
	    cmocka_unit_test(test_msg_addr_valid),
	    cmocka_unit_test(test_msg_format_date),
	    cmocka_unit_test(test_msg_parse_date),
	    cmocka_unit_test(test_msg_msgid_valid),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
