"""Pickup compatibility faults of issue 9, through the real daemon against
aiosmtpd: what IIS, Exchange and the big providers do with legacy pickup
files, pickupd does too.

  - a lone "." line in a dot_stuffed file: premature end-of-data (badmail),
    or, as the very last line, dropped;
  - a multipart message without its closing boundary (a writer that died
    mid-write): badmail;
  - `match = *.tmp` (PHP's tempnam()) is honoured; a `match` that can never
    match is a config error with FILE:LINE;
  - duplicate recipients that differ only in case are sent once;
  - an empty Message-ID: or an unparseable Date: is replaced, the original
    kept as X-Original-Message-ID: / X-Original-Date:.

Every assertion is on what the SMTP server received, on the badmail
envelope's reason, or on --check-config's output."""

import email.utils
import os
import re

import harness
from harness import Pickupd, SmtpServer, run_program, wait_for
from test_pickup_refuse import refused

HOST = "mx.compat.test"


def cfg(**pickup):
    c = {"general": {"hostname": HOST}}
    if pickup:
        c["pickup"] = pickup
    return c


HDR = (b"X-Sender: app@example.org\r\nX-Receiver: rcpt@example.net\r\n"
       b"From: app@example.org\r\nTo: rcpt@example.net\r\nSubject: %s\r\n"
       b"Date: 1 Jan 2024 10:00:00 +0100\r\nMessage-ID: <%s@example.org>\r\n\r\n")


def msg(tag, body):
    return HDR % (tag, tag) + body


# ---------------------------------------------------------------------------
# 10. A lone "." line in a dot_stuffed (IIS-era) file.

def test_stuffed_premature_dot_line_goes_to_badmail():
    """In a stuffed file "." ends the data: text after it was never meant to
    be sent (or the file is two messages run together). It goes to badmail
    with the line number; nothing is relayed."""
    body = b"first part\r\n..kept dot\r\n.\r\nafter the end marker\r\n"
    with SmtpServer() as srv, Pickupd(cfg(dot_stuffed="yes"), relay=srv) as d:
        d.drop("premature.eml", msg(b"premature", body))
        d.drop("marker.eml", msg(b"good", b"ok\r\n"))  # a later good file still flows
        qid, reason = refused(d, "premature.eml",
                              r"^premature end-of-data marker \('\.' line\) at line 11$")
        m = srv.wait_messages(1)[0]
        assert m.header("Subject") == ["good"], m.headers
        with open(os.path.join(d.spool, "data", qid), "rb") as f:
            assert f.read() == msg(b"premature", body)  # the original bytes kept
        assert len(srv.messages) == 1


def test_stuffed_trailing_dot_line_dropped():
    """Some IIS-era files end with the DATA terminator: it is dropped, not
    turned into an empty last line. With or without its line end, and with
    only empty lines after it (nothing of the message follows)."""
    cases = [(b"crlf", b"line 1\r\n..dot\r\n.\r\n"),
             (b"no-eol", b"line 1\r\n..dot\r\n."),
             (b"lf", b"line 1\n..dot\n.\n"),
             (b"blank-after", b"line 1\r\n..dot\r\n.\r\n\r\n")]
    with SmtpServer() as srv, Pickupd(cfg(dot_stuffed="yes"), relay=srv) as d:
        for tag, body in cases:
            d.drop(tag.decode() + ".eml", msg(tag, body))
        msgs = srv.wait_messages(len(cases))
        for m in msgs:
            assert m.body == b"line 1\r\n.dot\r\n", (m.header("Subject"), m.body)
        d.wait_spool_empty()


def test_raw_folder_dot_line_is_content():
    """dot_stuffed = no: a "." line is content, sent (stuffed on the wire)."""
    with SmtpServer() as srv, Pickupd(cfg(dot_stuffed="no"), relay=srv) as d:
        d.drop("raw.eml", msg(b"raw", b"a\r\n.\r\nb\r\n.\r\n"))
        m = srv.wait_messages(1)[0]
        assert m.body == b"a\r\n.\r\nb\r\n.\r\n", m.body
        d.wait_spool_empty()


# ---------------------------------------------------------------------------
# 11. Multipart without its closing boundary.

MIME_HDR = (b"From: app@example.org\r\nTo: rcpt@example.net\r\nSubject: %s\r\n"
            b"MIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed;\r\n boundary=\"%s\"\r\n\r\n"
            b"This is a multi-part message in MIME format.\r\n")


def mime(tag, boundary, parts, close=True, padding=b""):
    out = MIME_HDR % (tag, boundary)
    for p in parts:
        out += b"--" + boundary + b"\r\nContent-Type: text/plain\r\n\r\n" + p + b"\r\n"
    if close:
        out += b"--" + boundary + b"--" + padding + b"\r\n"
    return out


def test_truncated_multipart_goes_to_badmail():
    """A writer that died mid-attachment closes its file anyway: the outer
    multipart has no close delimiter. Checked over the whole content (1.5 MB
    here, past any one read), so a close delimiter far from the header
    counts, and one split across read chunks too."""
    b = b"----=_NextPart_000_0001_01D9ABCD.12345678"
    big = b"".join(b"attachment line %07d padding padding padding\r\n" % i
                   for i in range(30000))
    nested = (b"--inner\r\nContent-Type: text/plain\r\n\r\nx\r\n")  # inner never closed
    with SmtpServer() as srv, Pickupd(cfg(), relay=srv) as d:
        d.drop("cut.eml", mime(b"cut", b, [b"hello", big], close=False))
        d.drop("cut-small.eml", mime(b"cut-small", b"simple", [b"only part"], close=False))
        d.drop("whole.eml", mime(b"whole", b, [b"hello", big]))
        d.drop("padded.eml", mime(b"padded", b"simple", [b"x"], padding=b" \t "))
        d.drop("outer-only.eml",
               mime(b"outer-only", b"outer",
                    [b"Content-Type: multipart/alternative; boundary=inner\r\n\r\n" + nested]))
        for name in ("cut.eml", "cut-small.eml"):
            refused(d, name, r"^truncated MIME \(no closing boundary\)$")
        msgs = srv.wait_messages(3)
        got = sorted(m.header("Subject")[0] for m in msgs)
        assert got == ["outer-only", "padded", "whole"], got
        whole = next(m for m in msgs if m.header("Subject") == ["whole"])
        assert whole.body.endswith(b"--" + b + b"--\r\n"), whole.body[-80:]
        wait_for(lambda: not d.spool_files(["queue", "deferred"]), 60, what="an empty queue")
        assert len(srv.messages) == 3


# ---------------------------------------------------------------------------
# 12. match names *.tmp explicitly; a match that can never match.

def test_match_tmp_is_honoured():
    """PHP's tempnam() writes php1A2B.tmp in place; IIS took every file. With
    match = *.tmp those are the candidates; a dotfile is still left alone."""
    with SmtpServer() as srv, Pickupd(cfg(match="*.tmp"), relay=srv) as d:
        d.drop_inplace("php1A2B.tmp", msg(b"php", b"from tempnam\r\n"))
        d.drop_inplace("other.eml", msg(b"eml", b"not matched\r\n"))
        m = srv.wait_messages(1)[0]
        assert m.header("Subject") == ["php"], m.headers
        wait_for(lambda: d.pickup_files() == ["other.eml"], 30, what="php1A2B.tmp claimed")
        d.wait_spool_empty()
        assert len(srv.messages) == 1


def test_match_that_never_matches_is_a_config_error():
    d = Pickupd(relay=2525, start=False)
    try:
        d.write_config(cfg(match="*.tmp"), 2525)
        ok = run_program("pickupd", "--check-config", "-c", d.conf)
        assert ok.returncode == 0, (ok.returncode, ok.stdout, ok.stderr)
        # "." and "[.]eml" (a leading dot is matched only by a literal one)
        # match no file; nor does a name longer than any file name can be.
        for glob in (".", "[.]eml", "x" * 300 + "*"):
            d.write_config(cfg(match=glob), 2525)
            bad = run_program("pickupd", "--check-config", "-c", d.conf)
            assert bad.returncode == 1, (glob, bad.returncode, bad.stdout, bad.stderr)
            line = next(i + 1 for i, l in enumerate(d.config_text.splitlines())
                        if l.startswith("match"))
            pat = r"^.*%s:%d: .*'match'.*never match" % (re.escape(os.path.basename(d.conf)),
                                                         line)
            out = bad.stdout + bad.stderr
            assert re.search(pat, out, re.M), "no %r in:\n%s" % (pat, out)
    finally:
        d.cleanup()


# ---------------------------------------------------------------------------
# 13. Duplicate recipients differing only in case.

def test_duplicate_recipients_without_case():
    headers = (b"From: app@example.org\r\nTo: a@x.com, A@X.com\r\nCc: \"Ann\" <a@X.COM>\r\n"
               b"Bcc: b@x.com\r\nSubject: hdr\r\n\r\nhi\r\n")
    xrcpt = (b"X-Sender: app@example.org\r\nX-Receiver: Bob@example.net\r\n"
             b"X-Receiver: bob@EXAMPLE.net\r\nX-Receiver: BOB@example.net\r\n"
             b"From: app@example.org\r\nTo: bob@example.net\r\nSubject: xr\r\n\r\nhi\r\n")
    with SmtpServer() as srv, Pickupd(cfg(), relay=srv) as d:
        d.drop("hdr.eml", headers)
        d.drop("xr.eml", xrcpt)
        msgs = {m.header("Subject")[0]: m for m in srv.wait_messages(2)}
        assert msgs["hdr"].rcpt_tos == ["a@x.com", "b@x.com"], msgs["hdr"].rcpt_tos
        assert msgs["xr"].rcpt_tos == ["Bob@example.net"], msgs["xr"].rcpt_tos
        d.wait_spool_empty()


def test_duplicate_recipients_exact_when_configured():
    """rcpt_dedup = exact: local parts compared with case (RFC 5321 2.4)."""
    with SmtpServer() as srv, Pickupd(cfg(rcpt_dedup="exact"), relay=srv) as d:
        d.drop("exact.eml", b"From: app@example.org\r\nTo: a@x.com, A@x.com, a@X.COM\r\n"
                            b"Subject: s\r\n\r\nhi\r\n")
        m = srv.wait_messages(1)[0]
        assert m.rcpt_tos == ["a@x.com", "A@x.com"], m.rcpt_tos
        d.wait_spool_empty()


# ---------------------------------------------------------------------------
# 14. Empty Message-ID, unparseable Date.

def valid_date(v):
    return re.fullmatch(r"\w{3}, \d{2} \w{3} \d{4} \d\d:\d\d:\d\d \+0000", v) and \
        email.utils.parsedate_tz(v) is not None


def test_empty_message_id_and_bad_date_replaced():
    with SmtpServer() as srv, Pickupd(cfg(), relay=srv) as d:
        d.drop("bad.eml", b"From: app@example.org\r\nTo: r@example.net\r\nSubject: bad\r\n"
                          b"Date: yesterday-ish\r\nMessage-ID:\r\n\r\nbody\r\n")
        d.drop("noat.eml", b"From: app@example.org\r\nTo: r@example.net\r\nSubject: noat\r\n"
                           b"Date: Mon, 32 Jan 2024 10:00:00 +0000\r\n"
                           b"Message-ID: 12345\r\n\r\nbody\r\n")
        # Valid, obsolete forms kept as written: 2-digit year, zone name,
        # no seconds, comments, no weekday, a folded Message-ID.
        d.drop("obs.eml", b"From: app@example.org\r\nTo: r@example.net\r\nSubject: obs\r\n"
                          b"Date: Fri, 1 Jan 99 23:59 EST (Eastern)\r\n"
                          b"Message-ID:\r\n <old.style@host.example>\r\n\r\nbody\r\n")
        msgs = {m.header("Subject")[0]: m for m in srv.wait_messages(3)}
        for tag, odate, omid in (("bad", "yesterday-ish", ""),
                                 ("noat", "Mon, 32 Jan 2024 10:00:00 +0000", "12345")):
            m = msgs[tag]
            assert len(m.header("Date")) == 1 and valid_date(m.header("Date")[0]), m.headers
            assert re.fullmatch(r"<\S+\.pickupd@%s>" % re.escape(HOST),
                                m.header("Message-ID")[0]), m.headers
            assert len(m.header("Message-ID")) == 1, m.headers
            assert m.header("X-Original-Date") == [odate], m.headers
            assert m.header("X-Original-Message-ID") == [omid], m.headers
            assert m.body == b"body\r\n", m.body
        obs = msgs["obs"]
        assert obs.header("Date") == ["Fri, 1 Jan 99 23:59 EST (Eastern)"], obs.headers
        assert obs.header("Message-ID") == ["<old.style@host.example>"], obs.headers
        assert not obs.header("X-Original-Date") and not obs.header("X-Original-Message-ID")
        d.wait_spool_empty()


if __name__ == "__main__":
    harness.main(globals())
