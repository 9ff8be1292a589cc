"""Operator and bad-input faults of issue 9, through the real programs:

- 15: `pickupctl show ID` on the badmail entry of a refused FIFO answers at
  once (the content is never opened blocking);
- 16: hostile file names and server replies reach the log escaped (\\xHH, as
  in the envelope file): no ESC, no invalid UTF-8, no line break;
- 17: `pickupd --check-config` refuses what start-up refuses (unsafe or
  missing secret files, missing ca_file or pickup folder), with the same
  lines; [metrics] listen forms mean the same to both;
- 18: an application user in the submit group injects with
  pickupd-sendmail under the install that README documents;
- 19: log text: no negative "due in" times, no doubled "warning:" prefix.
"""

import grp
import os
import pwd
import re
import socket
import subprocess
import time
import urllib.request

import harness
from harness import DROP, Pickupd, SmtpServer, run_program, status_re, wait_for, TIMEOUT_SCALE

GOOD = b"From: good@example.org\r\nTo: rcpt@example.net\r\nSubject: %s\r\n\r\nbody\r\n"


def log_bytes(d):
    with open(d.logfile, "rb") as f:
        return f.read()


def wait_exit(d, timeout=30):
    try:
        return d.proc.wait(timeout * TIMEOUT_SCALE)
    except subprocess.TimeoutExpired:
        raise AssertionError("pickupd still runs; log:\n%s" % d.log_tail())


# -- 15 ------------------------------------------------------------------------------------

def test_show_refused_fifo_does_not_hang():
    with SmtpServer() as srv, Pickupd(relay=srv) as d:
        # Renamed in, so that inotify reports it at once (IN_MOVED_TO).
        os.mkfifo(os.path.join(d.pickup, ".pipe"))
        os.rename(os.path.join(d.pickup, ".pipe"), os.path.join(d.pickup, "pipe.eml"))
        m = d.wait_log(r"^pickupd: warning: (?P<qid>\S+): pickup=default, file=pipe\.eml, "
                       r"refused: a FIFO is refused")[0]
        qid = m.group("qid")
        for args in (("show", qid), ("--json", "show", qid), ("list", "--state", "badmail")):
            t0 = time.monotonic()
            # Without the fix this blocks in open(2) of the FIFO: the timeout fails it.
            p = d.pickupctl(*args, timeout=20)
            assert p.returncode == 0, (args, p.returncode, p.stdout, p.stderr)
            assert qid in p.stdout, (args, p.stdout)
            print("  pickupctl %s: %.2fs" % (" ".join(args), time.monotonic() - t0))
        text = d.pickupctl("show", qid, timeout=20).stdout
        assert re.search(r"^content: +not a regular file", text, re.M), text
        js = d.pickupctl("--json", "show", qid, timeout=20).stdout
        assert '"content_error":"not a regular file' in js, js
        # Still working: the daemon was not blocked either.
        d.drop("after.eml", GOOD % b"after")
        assert srv.wait_messages(1)[0].header("Subject") == ["after"]


# -- 16 ------------------------------------------------------------------------------------

def test_hostile_names_and_replies_escaped_in_log():
    reply = "550 5.1.1 \x1b]0;owned\x07\x1b[2J no such user"
    with SmtpServer(rcpt_faults={"esc": reply}) as srv, \
            Pickupd(relay=srv, config={"bounce": {"enabled": "no"}}) as d:
        good = b"ok\x1b[31mred\xff\xfe\nline.eml"
        bad = b"\x1b[2Jempty\xc3.eml"
        pickup = os.fsencode(d.pickup)
        with open(os.path.join(pickup, b".t1"), "wb") as f:
            f.write(b"From: a@example.org\r\nTo: esc@example.net, ok@example.net\r\n"
                    b"Subject: s\r\n\r\nbody\r\n")
        os.rename(os.path.join(pickup, b".t1"), os.path.join(pickup, good))
        with open(os.path.join(pickup, b".t2"), "wb"):
            pass
        os.rename(os.path.join(pickup, b".t2"), os.path.join(pickup, bad))

        d.wait_log(r"file=ok\\x1B\[31mred\\xFF\\xFE\\x0Aline\.eml, from=<a@example\.org>")
        d.wait_log(r"file=\\x1B\[2Jempty\\xC3\.eml, refused: empty file")
        # The reply parser already turns control characters into '?' (for every
        # sink: log, envelope, DSN, control socket); the logger is the net.
        d.wait_log(re.escape("status=bounced (550 5.1.1 ?]0;owned??[2J no such user)"))
        d.wait_log(status_re("sent", "ok@example.net"))
        raw = log_bytes(d)
        raw.decode("utf-8")  # strict: no invalid UTF-8 reached the log
        ctl = sorted({b for b in raw if (b < 0x20 and b != 0x0A) or b == 0x7F})
        assert not ctl, "raw control bytes %r in the log:\n%s" % (ctl, d.log_tail())
        # The envelope file writes the name the same way.
        qid = d.wait_log(r"^pickupd: (\S+): uid=\d+, pickup=default, file=ok")[0].group(1)
        env = b""
        for state in ("badmail", "queue", "deferred"):
            p = os.path.join(d.spool, state, qid)
            if os.path.exists(p):
                env = open(p, "rb").read()
        assert not env or b"file ok\\x1B[31mred\\xFF\\xFE\\x0Aline.eml\n" in env, env


# -- 17 ------------------------------------------------------------------------------------

def check_and_start(d):
    """--check-config's output and exit status, then the daemon's."""
    chk = run_program("pickupd", "--check-config", "-c", d.conf)
    d.start()
    status = wait_exit(d)
    return chk, status, d.log_text()


def secret_config(d, path, extra=None):
    conf = {"relay test": {"user": "u", "password_file": path,
                           "allow_plaintext_auth": "yes"}}
    conf.update(extra or {})
    d.write_config(conf, 2525)


def test_check_config_refuses_what_start_refuses():
    nobody = pwd.getpwnam("nobody").pw_uid
    cases = []

    def case(name, setup, rx):
        cases.append((name, setup, rx))

    def loose(d):
        p = os.path.join(d.dir, "pw")
        with open(p, "w") as f:
            f.write("s3cret\n")
        os.chmod(p, 0o644)
        secret_config(d, p)
    case("0644 password file", loose, r"pw must be a regular file that only its owner can read")

    def foreign(d):
        p = os.path.join(d.dir, "pw")
        with open(p, "w") as f:
            f.write("s3cret\n")
        os.chmod(p, 0o600)
        os.chown(p, nobody, -1)
        secret_config(d, p)
    case("password file of another user", foreign, r"pw is owned by uid %d" % nobody)

    def open_dir(d):
        sub = os.path.join(d.dir, "shared")
        os.mkdir(sub)
        os.chmod(sub, 0o777)
        p = os.path.join(sub, "pw")
        with open(p, "w") as f:
            f.write("s3cret\n")
        os.chmod(p, 0o600)
        secret_config(d, p)
    case("password file in a world-writable dir", open_dir,
         r"pw is in \S+/shared, which others can write to \(mode 0777\)")

    def missing_pw(d):
        secret_config(d, os.path.join(d.dir, "nope"))
    case("missing password file", missing_pw, r"cannot open \S+/nope: No such file")

    def missing_ca(d):
        d.write_config({"relay test": {"tls": "starttls",
                                       "ca_file": os.path.join(d.dir, "ca.pem")}}, 2525)
    case("missing ca_file", missing_ca, r"cannot load ca_file \S+/ca\.pem: .*No such file")

    def missing_pickup(d):
        d.write_config({"pickup": {"dir": os.path.join(d.dir, "gone")}}, 2525)
    case("missing pickup folder", missing_pickup, r"\[pickup default\] dir \S+/gone: No such")

    for name, setup, rx in cases:
        d = Pickupd(relay=2525, start=False)
        try:
            setup(d)
            chk, status, log = check_and_start(d)
            assert status != 0, (name, status, log)
            assert re.search(rx, log), (name, rx, log)
            # Without the fix --check-config said "configuration is valid" here.
            assert chk.returncode == 1, (name, chk.returncode, chk.stdout, chk.stderr)
            assert re.search(r"^%s:\d+: .*%s" % (re.escape(d.conf), rx), chk.stdout, re.M), \
                (name, rx, chk.stdout)
        except BaseException:
            d.keep = True
            raise
        finally:
            d.cleanup()

    # A safe one passes both: 0600 in a sticky world-writable dir (our own tmp dir here).
    with SmtpServer() as srv:
        d = Pickupd(relay=srv, start=False)
        sticky = os.path.join(d.dir, "sticky")
        os.mkdir(sticky)
        os.chmod(sticky, 0o1777)
        p = os.path.join(sticky, "pw")
        with open(p, "w") as f:
            f.write("s3cret\n")
        os.chmod(p, 0o600)
        d.write_config({"relay test": {"user": "u", "password_file": p,
                                       "allow_plaintext_auth": "yes"}}, srv.port)
        chk = run_program("pickupd", "--check-config", "-c", d.conf)
        assert chk.returncode == 0, (chk.stdout, chk.stderr)
        with d:
            d.start()
            d.wait_ready()


def ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


def scrape(host, port):
    url = "http://%s:%d/metrics" % (host, port)
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read().decode()


def test_metrics_listen_forms_agree():
    port = harness.free_port()
    good = [("localhost:%d" % port, "localhost"), (":%d" % port, "127.0.0.1"),
            ("127.0.0.1:%d" % port, "127.0.0.1")]
    if ipv6_loopback():
        good.append(("[::1]:%d" % port, "[::1]"))
    with SmtpServer() as srv:
        for listen, host in good:
            d = Pickupd(relay=srv, start=False, config={"metrics": {"listen": listen}})
            chk = run_program("pickupd", "--check-config", "-c", d.conf)
            assert chk.returncode == 0, (listen, chk.stdout, chk.stderr)
            # Without the fix, localhost and :PORT passed the check and then
            # the daemon exited with "cannot start".
            with d:
                d.start()
                d.wait_ready()
                status, text = scrape(host, port)
                assert status == 200 and "pickupd_up 1" in text, (listen, text)
                d.wait_log(r"^pickupd: metrics on http://\S+:%d/metrics \(listen = %s\)$"
                           % (port, re.escape(listen)))
        for listen in ("::1:%d" % port, "1.2.3:%d" % port, "no-such-host.invalid:%d" % port):
            d = Pickupd(relay=srv, start=False, config={"metrics": {"listen": listen}})
            try:
                chk, status, log = check_and_start(d)
                assert chk.returncode == 1 and status != 0, (listen, chk.stdout, log)
                first = chk.stdout.splitlines()[0]
                assert "listen" in first and first in log, (listen, first, log)
            finally:
                d.cleanup()


# -- 18 ------------------------------------------------------------------------------------

def documented_modes():
    """The config file's mode from README's install steps, and the spool and
    pickup folder modes from the tmpfiles.d snippet."""
    src = os.environ.get("PICKUPD_SRC_DIR") or os.path.join(os.path.dirname(__file__), "..", "..")
    with open(os.path.join(src, "README.md")) as f:
        readme = f.read()
    m = re.search(r"^install -m (\d+)(?: -g \S+)? config/pickupd\.conf /etc/pickupd/pickupd\.conf",
                  readme, re.M)
    assert m, "README has no install line for pickupd.conf"
    conf_mode = int(m.group(1), 8)
    modes = {}
    with open(os.path.join(src, "systemd", "pickupd.tmpfiles.conf")) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "d":
                modes[parts[1]] = int(parts[2], 8)
    return conf_mode, modes["/var/spool/pickupd"], modes["/var/spool/pickupd/pickup"]


def test_sendmail_as_application_user_with_documented_install():
    conf_mode, spool_mode, pickup_mode = documented_modes()
    app = pwd.getpwnam("nobody")
    app_gid = grp.getgrnam("nogroup").gr_gid
    submit_gid = 54321  # stands for pickupd-submit; the app user is in it, not in root's group
    with SmtpServer() as srv:
        d = Pickupd(relay=srv, start=False)
        # The documented layout: the pickup folder inside the spool directory.
        d.pickup = os.path.join(d.spool, "pickup")
        os.makedirs(d.pickup)
        d.write_config({"pickup": {"dir": d.pickup}}, srv.port)
        os.chmod(d.dir, 0o755)
        os.chown(d.spool, 0, submit_gid)
        os.chmod(d.spool, spool_mode)
        os.chown(d.pickup, 0, submit_gid)
        os.chmod(d.pickup, pickup_mode)
        os.chown(d.conf, 0, 0)  # root:pickupd in README; the app user is in neither
        os.chmod(d.conf, conf_mode)
        with d:
            d.start()
            d.wait_ready()
            cmd = ["setpriv", "--reuid=%d" % app.pw_uid, "--regid=%d" % app_gid,
                   "--groups=%d" % submit_gid, harness.program("pickupd-sendmail"),
                   "-C", d.conf, "-i", "shop@example.net"]
            p = subprocess.run(cmd, input=b"Subject: order 42\n\nthanks\n",
                               capture_output=True, timeout=60 * TIMEOUT_SCALE)
            # Without the fix (640) this exits 78 (EX_CONFIG): the mail is lost.
            assert p.returncode == 0, (p.returncode, p.stderr.decode())
            m = srv.wait_messages(1)[0]
            assert m.header("Subject") == ["order 42"], m.headers
            assert m.mail_from.startswith("nobody@"), m.mail_from

            # A config others cannot read (the old install): sendmail says how to
            # fix it, and --check-config warns.
            os.chmod(d.conf, 0o640)
            p = subprocess.run(cmd, input=b"Subject: lost\n\nx\n", capture_output=True,
                               timeout=60 * TIMEOUT_SCALE)
            assert p.returncode == 78 and b"chmod 644" in p.stderr, (p.returncode, p.stderr)
            chk = run_program("pickupd", "--check-config", "-c", d.conf)
            assert chk.returncode == 0 and "pickupd-sendmail fails for them" in chk.stderr, \
                (chk.stdout, chk.stderr)


# -- 19 ------------------------------------------------------------------------------------

def test_log_text_no_negative_due_no_doubled_warning():
    with SmtpServer(data_replies=[DROP]) as srv, \
            Pickupd(relay=srv, config={"general": {"log_level": "debug"},
                                       "retry": {"schedule": "1s"}}) as d:
        for i in range(3):
            d.drop("m%d.eml" % i, GOOD % b"m")
        d.wait_log(r"may be delivered twice")
        d.wait_log(status_re("sent"), count=3, timeout=60)
        log = d.log_text()
        assert re.search(r"^pickupd: debug: schedule: \d+ message\(s\), the earliest due",
                         log, re.M), log
        assert not re.search(r"due in -\d", log), log
        assert not re.search(r"warning: \S+: warning:", log), log
        assert re.search(r"^pickupd: warning: \S+: connection lost after the end of data; the "
                         r"message may be delivered twice$", log, re.M), log


if __name__ == "__main__":
    harness.main(globals())
