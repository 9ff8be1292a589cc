"""sendmail compatibility beyond injection, through the real programs: -bp and
the name mailq list the queue as `pickupctl list` does, -q makes a deferred
message go through the running daemon, -bi / -I / newaliases succeed doing
nothing (package scripts call them), --help, the flags packages pass are
accepted and unknown ones refused with 64; [submit] root_alias and
origin_domain rewrite cron's root and unqualified names for pickupd-sendmail
and for plain pickup files alike; a host name without a dot is warned about
at start-up and by --check-config."""

import os
import re
import socket
import subprocess

import harness
from harness import Pickupd, SmtpServer, program, run_program, status_re, wait_for

EX_USAGE, EX_UNAVAILABLE = 64, 69
NO_BOUNCE = {"retry": {"schedule": "1h"}, "bounce": {"enabled": "no"},
             "general": {"hostname": "box.compat.test"}}
SUBMIT = {"general": {"hostname": "vm"},
          "submit": {"root_alias": "ops@example.com", "origin_domain": "example.com"}}


def ok(p):
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    return p


def run_as(d, name, *args, input=None, env=None):
    """Runs pickupd-sendmail through a symlink called name (argv[0] decides)."""
    link = os.path.join(d.dir, name)
    if not os.path.lexists(link):
        os.symlink(program("pickupd-sendmail"), link)
    e = dict(os.environ)
    e.update(harness._sanitizer_env())
    e["PICKUPD_CONFIG"] = d.conf
    e.update(env or {})
    p = subprocess.run([link] + list(args), input=input, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=e, timeout=60 * harness.TIMEOUT_SCALE)
    p.stdout = p.stdout.decode("utf-8", "replace")
    p.stderr = p.stderr.decode("utf-8", "replace")
    harness.check_sanitizer_output(p.stderr, name)
    return p


def down_server():
    """A server that is not running yet, on a port of its own."""
    srv = SmtpServer()
    srv.start()
    srv.stop()
    return srv


def deferred_ids(d):
    return sorted(os.path.basename(p) for p in d.spool_files("deferred"))


def test_bp_and_mailq_list_the_queue():
    """-bp and mailq print exactly what `pickupctl list` prints (header, one line per
    message, mailq's total); an empty queue says so."""
    srv = down_server()
    with Pickupd(relay=srv, config=NO_BOUNCE) as d:
        empty = ok(d.pickupctl("list")).stdout
        assert empty.splitlines()[-1].endswith("(the queue is empty)"), empty
        for p in (d.sendmail("-bp"), run_as(d, "mailq")):
            ok(p)
            assert p.stdout == empty, (p.stdout, empty)
        ok(d.sendmail("-f", "app@example.org", "waiting@example.net",
                      input=b"Subject: queued\n\nx\n"))
        d.wait_log(status_re("deferred"))
        wait_for(lambda: len(deferred_ids(d)) == 1, what="1 deferred envelope")
        qid = deferred_ids(d)[0]
        listed = ok(d.pickupctl("list")).stdout
        for p in (d.sendmail("-bp"), run_as(d, "mailq"), run_as(d, "mailq", "-v")):
            ok(p)
            assert p.stdout == listed, (p.stdout, listed)
        lines = listed.splitlines()
        assert len(lines) == 3 and lines[0].startswith("-Queue ID-"), listed
        assert lines[1].startswith(qid + " deferred "), listed
        assert lines[2] == "-- 1 Kbytes in 1 Request.", listed
        assert "<app@example.org> -> <waiting@example.net> deferred" in listed, listed


def test_q_makes_a_deferred_message_go():
    srv = down_server()
    with Pickupd(relay=srv, config=NO_BOUNCE) as d:
        ok(d.sendmail("later@example.net", input=b"Subject: flushed by -q\n\nx\n"))
        d.wait_log(status_re("deferred"))
        wait_for(lambda: len(deferred_ids(d)) == 1, what="1 deferred envelope")
        srv.start()
        try:
            p = ok(d.sendmail("-q"))
            assert p.stdout == "", p.stdout  # quiet, as sendmail -q from cron
            m = srv.wait_messages(1)[0]
            assert m.header("Subject") == ["flushed by -q"], m.headers
            d.wait_spool_empty()
            p = ok(d.sendmail("-q", "-v"))  # -v shows the daemon's answer
            assert "0 deferred" in p.stdout, p.stdout
        finally:
            srv.stop()
    # No daemon: said so, EX_UNAVAILABLE.
    d = Pickupd(NO_BOUNCE, relay=2525, start=False)
    p = d.sendmail("-q")
    assert p.returncode == EX_UNAVAILABLE and "not running" in p.stderr, (p.returncode, p.stderr)


def test_newaliases_bi_help_and_flags():
    d = Pickupd(NO_BOUNCE, relay=2525, start=False)
    nowhere = {"PICKUPD_CONFIG": os.path.join(d.dir, "missing.conf")}
    # Succeed doing nothing, even before any configuration exists.
    for p in (run_as(d, "newaliases", env=nowhere), run_as(d, "newaliases", "-v", env=nowhere),
              run_as(d, "sendmail", "-bi", env=nowhere), run_as(d, "sendmail", "-I", env=nowhere)):
        assert p.returncode == 0 and p.stdout == "" and p.stderr == "", (p.returncode, p.stderr)
    h = ok(run_program("pickupd-sendmail", "--help"))
    assert h.stdout.startswith("usage: pickupd-sendmail ") and "-bp" in h.stdout, h.stdout
    assert "-q" in h.stdout and "-bi" in h.stdout and h.stderr == "", h.stdout
    v = ok(run_program("pickupd-sendmail", "--version"))
    assert v.stdout.startswith("pickupd-sendmail "), v.stdout
    # What packages, cron, PHP and mailers pass is accepted.
    flags = [("-odi", "-oem", "-v", "-bm"), ("-N", "never", "-R", "hdrs", "-V", "env1"),
             ("-Nsuccess,failure", "-Rfull", "-B8BITMIME", "-O", "DeliveryMode=b", "-oee"),
             ("-Ac", "-U", "-m", "-odb", "-h", "10", "-L", "tag")]
    for args in flags:
        ok(d.sendmail(*(args + ("a@example.net",)), input=b"Subject: f\n\nx\n"))
    assert len(d.pickup_files()) == len(flags), d.pickup_files()
    # Unknown ones: a clear message and EX_USAGE, nothing written.
    for args in (("-Z", "a@example.net"), ("--frobnicate",), ("-bs",), ("-bd",), ("-bv",)):
        p = d.sendmail(*args, input=b"x\n")
        assert p.returncode == EX_USAGE, (args, p.returncode, p.stderr)
        assert p.stderr.startswith("pickupd-sendmail: ") and (
            "unknown option" in p.stderr or "not supported" in p.stderr), p.stderr
    assert len(d.pickup_files()) == len(flags), d.pickup_files()


def test_root_alias_through_cron_style_sendmail():
    """Debian cron: From: root (Cron Daemon), To: root; cronie passes -t. The
    relay sees the alias and a masqueraded sender, never root@vm."""
    out = (b"From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@vm> run-parts\n"
           b"X-Cron-Env: <SHELL=/bin/sh>\n\njob output\n")
    with SmtpServer() as srv, Pickupd(SUBMIT, relay=srv) as d:
        ok(d.sendmail("-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root", input=out))
        ok(d.sendmail("-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", "root",
                      input=out))
        msgs = srv.wait_messages(2)
        for m in msgs:
            assert m.mail_from == "root@example.com", m.mail_from
            assert m.rcpt_tos == ["ops@example.com"], m.rcpt_tos
        d.wait_spool_empty()
        assert not d.log_matches(r"root@vm\b"), d.log_text()


def test_root_alias_and_origin_domain_for_pickup_files():
    """A file written by an application (no pickupd-sendmail): root,
    postmaster@localhost, MAILER-DAEMON@vm go to the alias once; other
    unqualified names and this host's get @origin_domain; the sender too."""
    host = socket.gethostname()
    with SmtpServer() as srv, Pickupd(SUBMIT, relay=srv) as d:
        d.drop("app.eml", ("From: app\nTo: root, bob, carol@VM\n"
                           "Cc: postmaster@localhost, MAILER-DAEMON@vm, dave@%s\n"
                           "Subject: from an app\n\nx\n" % host).encode())
        d.drop("envelope.eml", b"X-Sender: <svc@vm>\nX-Receiver: <root>\nX-Receiver: ext@other.org\n"
               b"From: svc\nTo: root\nSubject: x-lines\n\ny\n")
        msgs = {m.header("Subject")[0]: m for m in srv.wait_messages(2)}
        a = msgs["from an app"]
        assert a.mail_from == "app@example.com", a.mail_from
        assert a.rcpt_tos == ["ops@example.com", "bob@example.com", "carol@example.com",
                              "dave@example.com"], a.rcpt_tos
        assert a.header("To") == ["root, bob, carol@VM"], a.headers  # headers as written
        b = msgs["x-lines"]
        assert b.mail_from == "svc@example.com", b.mail_from
        assert b.rcpt_tos == ["ops@example.com", "ext@other.org"], b.rcpt_tos
        d.wait_spool_empty()


def test_unqualified_without_submit_keys():
    """Without [submit], a pickup file to a bare name is refused as before, and
    only root_alias set still refuses a bare sender: origin_domain qualifies."""
    with SmtpServer() as srv, Pickupd({"submit": {"root_alias": "ops@example.com"}},
                                      relay=srv) as d:
        d.drop("bare-sender.eml", b"From: app\nTo: root\nSubject: s\n\nx\n")
        d.drop("good.eml", b"From: app@example.org\nTo: root\nSubject: alias only\n\nx\n")
        m = srv.wait_messages(1)[0]
        assert m.rcpt_tos == ["ops@example.com"] and m.mail_from == "app@example.org", m
        d.wait_log(r"refused: address without '@' in From line 1; moved to badmail")
    with SmtpServer() as srv, Pickupd(relay=srv) as d:
        d.drop("bare.eml", b"From: app@example.org\nTo: root\nSubject: s\n\nx\n")
        d.wait_log(r"refused: address without '@' in To line 2; moved to badmail")
        assert srv.messages == []


def test_hostname_without_dot_warned():
    with SmtpServer() as srv, Pickupd(SUBMIT, relay=srv) as d:
        d.wait_log(r"warning: \[general\] hostname = vm is not fully qualified")
        p = ok(run_program("pickupd", "-c", d.conf, "--check-config"))
        assert re.search(r"warning: \[general\] hostname = vm is not fully qualified.*EHLO",
                         p.stderr), p.stderr
        assert "configuration is valid" in p.stdout, p.stdout
    d = Pickupd(NO_BOUNCE, relay=2525, start=False)
    p = ok(run_program("pickupd", "-c", d.conf, "--check-config"))
    assert "not fully qualified" not in p.stdout + p.stderr, (p.stdout, p.stderr)
    # Unset: gethostname() is used, and the warning names the key to set.
    d = Pickupd({"general": None}, relay=2525, start=False)
    p = ok(run_program("pickupd", "--check-config", env={"PICKUPD_CONFIG": d.conf}))
    if "." in socket.gethostname():
        assert "not fully qualified" not in p.stderr, p.stderr
    else:
        assert "from gethostname(), as [general] hostname is not set" in p.stderr, p.stderr
    assert p.stdout.startswith(d.conf + ":"), p.stdout  # $PICKUPD_CONFIG, no -c needed


if __name__ == "__main__":
    harness.main(globals())
