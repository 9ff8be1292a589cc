"""pickupd-sendmail, the sendmail-compatible injector, through the real
daemon to aiosmtpd: mailx-like, cron-like and PHP mail()-like invocations,
Bcc kept as envelope-only recipients, -f, sysexits.h exit codes, atomic
files (never a partial *.eml in the folder)."""

import os
import re
import subprocess
import threading

import harness
from harness import Pickupd, SmtpServer, run_program, wait_for

HOST = "box.sendmail.test"
CONF = {"general": {"hostname": HOST}}

EX_USAGE, EX_DATAERR, EX_CANTCREAT, EX_CONFIG = 64, 65, 73, 78


def ok(p):
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    return p


def test_mailx_like_pipe():
    """mail(1) passes headers and recipients as arguments, with -i."""
    msg = (b"Subject: disk space\nTo: ops@example.net\nCc: dev@example.net\n\n"
           b"/ is 91% full\n.\n..two\nend\n")
    with SmtpServer() as srv, Pickupd(CONF, relay=srv) as d:
        ok(d.sendmail("-i", "ops@example.net", "dev@example.net", input=msg))
        m = srv.wait_messages(1)[0]
        login = __import__("pwd").getpwuid(os.getuid()).pw_name
        assert m.mail_from == "%s@%s" % (login, HOST), m.mail_from
        assert m.rcpt_tos == ["ops@example.net", "dev@example.net"], m.rcpt_tos
        assert m.header("From") == ["<%s@%s>" % (login, HOST)], m.headers
        assert m.body == b"/ is 91% full\r\n.\r\n..two\r\nend\r\n", m.body
        assert not m.header("X-Sender") and not m.header("X-Receiver"), m.headers
        d.wait_spool_empty()


def test_body_only_and_lone_dot_ends_input_without_i():
    """`echo text | sendmail addr`: no header at all (all body); without -i a
    lone "." line ends the message, as in sendmail."""
    with SmtpServer() as srv, Pickupd(CONF, relay=srv) as d:
        ok(d.sendmail("-F", "Backup Job", "root", input=b"backup done\n.\nnot part of it\n"))
        m = srv.wait_messages(1)[0]
        assert m.rcpt_tos == ["root@%s" % HOST], m.rcpt_tos
        assert m.header("From")[0].startswith("\"Backup Job\" <"), m.headers
        assert m.body == b"backup done\r\n", m.body
        d.wait_spool_empty()


def test_cron_like():
    """Debian cron: sendmail -FCronDaemon -i -B8BITMIME -oem root, headers
    with an unqualified To: root; cronie: -t -f root -odi -oem -oi."""
    out = (b"From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@host> run-parts\n"
           b"MIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\n"
           b"Content-Transfer-Encoding: 8bit\nX-Cron-Env: <SHELL=/bin/sh>\n\n"
           b"job output \xc3\xa9t\xc3\xa9\n")
    with SmtpServer() as srv, Pickupd(CONF, relay=srv) as d:
        ok(d.sendmail("-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root", input=out))
        ok(d.sendmail("-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", "root",
                      input=out.replace(b"run-parts", b"cronie")))
        msgs = srv.wait_messages(2)
        for m in msgs:
            assert m.mail_from == "root@%s" % HOST, m.mail_from
            assert m.rcpt_tos == ["root@%s" % HOST], m.rcpt_tos
            assert m.header("To") == ["root"], m.headers  # the header is left as written
            assert m.body == b"job output \xc3\xa9t\xc3\xa9\r\n", m.body
        assert sorted(m.header("Subject")[0] for m in msgs) == [
            "Cron <root@host> cronie", "Cron <root@host> run-parts"]
        d.wait_spool_empty()


def test_php_mail_like():
    """PHP mail(): sendmail -t -i; the From: and Bcc: come from the script's
    additional headers; a body line starting with '.' stays intact."""
    msg = (b"To: customer@example.net\nSubject: Your order\n"
           b"X-PHP-Originating-Script: 33:order.php\n"
           b"From: Shop <shop@example.org>\nBcc: archive@example.org\n\n"
           b"Thanks.\n.hidden dot line\n.\nbye\n")
    with SmtpServer() as srv, Pickupd(CONF, relay=srv) as d:
        ok(d.sendmail("-t", "-i", input=msg))
        m = srv.wait_messages(1)[0]
        assert m.mail_from == "shop@example.org", m.mail_from
        assert m.rcpt_tos == ["customer@example.net", "archive@example.org"], m.rcpt_tos
        assert not m.header("Bcc") and b"archive@" not in m.data, m.headers
        assert m.header("From") == ["Shop <shop@example.org>"], m.headers
        assert m.body == b"Thanks.\r\n.hidden dot line\r\n.\r\nbye\r\n", m.body
        d.wait_spool_empty()


def test_bcc_by_argument_and_f():
    msg = b"From: app@example.org\r\nTo: visible@example.net\r\nSubject: s\r\n\r\nx\r\n"
    with SmtpServer() as srv, Pickupd(CONF, relay=srv) as d:
        ok(d.sendmail("-f", "bounces@example.org", "visible@example.net",
                      "\"Hidden, Person\" <hidden@example.net>", input=msg))
        ok(d.sendmail("-f<>", "-oi", "-odb", "-bm", "--", "visible@example.net", input=msg))
        a, b = sorted(srv.wait_messages(2), key=lambda t: t.mail_from, reverse=True)
        assert a.mail_from == "bounces@example.org", a.mail_from
        assert a.rcpt_tos == ["visible@example.net", "hidden@example.net"], a.rcpt_tos
        assert b"hidden@" not in a.data, a.data
        assert a.header("From") == ["app@example.org"]
        assert b.mail_from in ("", "<>") and b.rcpt_tos == ["visible@example.net"], b
        d.wait_spool_empty()


def test_exit_codes_and_atomic_files():
    d = Pickupd(CONF, relay=2525, start=False)  # no daemon: look at the folder
    msg = b"Subject: s\n\nx\n"
    cases = [
        (("-bs",), EX_USAGE), (("-bd",), EX_USAGE), (("-bv",), EX_USAGE), (("--bogus",), EX_USAGE),
        (("-Z", "a@example.net"), EX_USAGE),
        ((), EX_USAGE),                               # no recipients
        (("-t",), EX_DATAERR),                        # -t, none in the header
        (("bad\x01ctl@example.net",), EX_DATAERR),
        (("a@b@c",), EX_DATAERR),
        (("-f", "x\ry@example.org", "a@example.net"), EX_USAGE),
        (("-f",), EX_USAGE),
    ]
    for args, code in cases:
        p = d.sendmail(*args, input=msg)
        assert p.returncode == code, (args, p.returncode, p.stderr)
        assert p.stderr.startswith("pickupd-sendmail: ") or "usage" in p.stderr, p.stderr
    assert d.pickup_files() == [], d.pickup_files()
    # Configuration: -C wins, then $PICKUPD_CONFIG; a bad one is EX_CONFIG.
    bad = os.path.join(d.dir, "bad.conf")
    with open(bad, "w") as f:
        f.write("[spool]\n")
    p = run_program("pickupd-sendmail", "-C", bad, "a@example.net", input=msg)
    assert p.returncode == EX_CONFIG and "bad.conf:" in p.stderr, (p.returncode, p.stderr)
    p = run_program("pickupd-sendmail", "a@example.net", input=msg,
                    env={"PICKUPD_CONFIG": d.conf})
    assert p.returncode == 0, (p.returncode, p.stderr)
    # Pickup folder missing: EX_CANTCREAT, nothing written.
    os.rename(d.pickup, d.pickup + ".away")
    p = d.sendmail("a@example.net", input=msg)
    assert p.returncode == EX_CANTCREAT, (p.returncode, p.stderr)
    os.rename(d.pickup + ".away", d.pickup)
    # Exactly one complete *.eml, no temp file left.
    files = d.pickup_files()
    assert len(files) == 1 and files[0].endswith(".eml"), files
    with open(os.path.join(d.pickup, files[0]), "rb") as f:
        data = f.read()
    assert data.startswith(b"X-Sender: <") and b"\nX-Receiver: <a@example.net>\n" in data, data
    assert data.endswith(b"Subject: s\n\nx\n"), data
    assert os.stat(os.path.join(d.pickup, files[0])).st_mode & 0o777 == 0o644
    d.cleanup()


def test_many_concurrent_writers():
    n = 40
    with SmtpServer() as srv, Pickupd(CONF, relay=srv) as d:
        results = [None] * n

        def one(i):
            results[i] = d.sendmail("-i", "r%d@example.net" % i,
                                    input=b"Subject: n%d\n\nbody %d\n" % (i, i))
        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for p in results:
            ok(p)
        msgs = srv.wait_messages(n)
        assert sorted(m.rcpt_tos[0] for m in msgs) == sorted(
            "r%d@example.net" % i for i in range(n))
        d.wait_spool_empty()
        assert d.pickup_files() == []


if __name__ == "__main__":
    harness.main(globals())
