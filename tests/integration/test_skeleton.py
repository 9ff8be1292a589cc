"""Walking skeleton: one file dropped into the pickup dir reaches a real SMTP
server (aiosmtpd) with the right envelope and exact content, the log says so
per recipient, and nothing is left behind. Also: the start-up scan, and the
command-line contract (--check-config, --version)."""

import os
import re

import harness
from harness import Pickupd, SmtpServer, crlf_ok, run_program, status_re

SENDER = "alice@example.org"
RCPTS = ["bob@example.net", "carol@example.net", "dave@example.com"]

HEADERS = [
    b"From: Alice Sender <alice@example.org>",
    b"To: Bob <bob@example.net>, carol@example.net",
    b"Cc: dave@example.com",
    b"Subject: walking skeleton",
]
# LF-only line ends, as scripts write them; lines that start with a dot,
# among them a lone "." that would end DATA early if it were not stuffed.
BODY = (b"first line\n"
        b".leading dot line\n"
        b"..two dots\n"
        b".\n"
        b"last line\n")
MESSAGE = b"\n".join(HEADERS) + b"\n\n" + BODY


def test_walking_skeleton():
    with SmtpServer() as srv, Pickupd(relay=srv) as d:
        d.drop("skeleton.eml", MESSAGE)
        m = srv.wait_messages(1)[0]

        assert m.mail_from == SENDER, m.mail_from
        assert sorted(m.rcpt_tos) == sorted(RCPTS), m.rcpt_tos
        assert len(m.rcpt_tos) == len(set(m.rcpt_tos)), "duplicate RCPT: %r" % m.rcpt_tos

        # aiosmtpd has un-stuffed the dots: what it holds is the content itself.
        assert crlf_ok(m.data), "line ends other than CRLF: %r" % m.data
        assert m.data.endswith(b"\r\n"), m.data[-20:]
        for h in HEADERS:
            assert h + b"\r\n" in m.headers + b"\r\n", "header %r missing from %r" % (
                h, m.headers)
        assert m.body == BODY.replace(b"\n", b"\r\n"), "body differs: %r" % m.body

        # One Postfix-like status line per recipient, all for one queue ID.
        lines = d.wait_log(status_re("sent"), count=len(RCPTS))
        assert sorted(x.group("rcpt") for x in lines) == sorted(RCPTS), [
            x.group(0) for x in lines]
        assert len({x.group("qid") for x in lines}) == 1, [x.group(0) for x in lines]
        for x in lines:
            assert x.group("ip") == "127.0.0.1" and int(x.group("port")) == srv.port, x.group(0)
            assert x.group("reply").startswith("250"), x.group(0)
        qid = lines[0].group("qid")
        claim = d.log_matches(r"\b%s: uid=\d+, pickup=[^,]+, file=skeleton\.eml, from=<%s>, nrcpt=3, "
                              r"size=\d+" % (re.escape(qid), re.escape(SENDER)))
        assert claim, "no claim line for %s:\n%s" % (qid, d.log_text())
        d.wait_log(r"\b%s: removed\b" % re.escape(qid))

        d.wait_spool_empty()
        assert "skeleton.eml" not in d.pickup_files(), d.pickup_files()
        assert len(srv.messages) == 1, srv.messages
        d.stop()  # SIGTERM: exit 0, no sanitizer report


def test_startup_scan():
    """A file already in the pickup dir when pickupd starts is delivered."""
    with SmtpServer() as srv:
        d = Pickupd(relay=srv, start=False)
        with d:
            d.drop("early.eml", b"From: early@example.org\nTo: x@example.net\n"
                   b"Subject: before start\n\nwritten before pickupd started\n")
            d.start()
            d.wait_ready()
            m = srv.wait_messages(1)[0]
            assert m.mail_from == "early@example.org" and m.rcpt_tos == ["x@example.net"], m
            assert m.body == b"written before pickupd started\r\n", m.body
            d.wait_log(status_re("sent", "x@example.net"))
            d.wait_spool_empty()
            assert d.pickup_files() == [], d.pickup_files()


def test_check_config():
    d = Pickupd(relay=2525, start=False)
    ok = run_program("pickupd", "--check-config", "-c", d.conf)
    assert ok.returncode == 0, (ok.returncode, ok.stdout, ok.stderr)

    d.write_config({"pickup": {"no_such_key": "1"}, "relay test": {"colour": "blue"}}, 2525)
    bad = run_program("pickupd", "--check-config", "-c", d.conf)
    assert bad.returncode == 1, (bad.returncode, bad.stdout, bad.stderr)
    out = bad.stdout + bad.stderr
    # One "FILE:LINE: message" line per error, with the right line numbers.
    text = d.config_text.splitlines()
    for key in ("no_such_key", "colour"):
        line = next(i + 1 for i, l in enumerate(text) if l.startswith(key))
        pat = r"^.*%s:%d: .*%s" % (re.escape(os.path.basename(d.conf)), line, key)
        assert re.search(pat, out, re.M), "no %r in:\n%s" % (pat, out)
    d.cleanup()


def test_version():
    p = run_program("pickupd", "--version")
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    assert re.search(r"\d+\.\d+", p.stdout + p.stderr), (p.stdout, p.stderr)


if __name__ == "__main__":
    harness.main(globals())
