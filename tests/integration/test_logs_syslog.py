"""[log] syslog = yes: pickupd logs through syslog(3) to the mail facility, with
the program name "pickupd" or "pickupd/SERVICE" and its pid, as Postfix's
processes do, so that a syslog daemon's mail.log feeds pflogsumm.

syslog(3) writes to /dev/log, a fixed path: this file runs itself in a private
mount namespace (unshare -m, as root) whose /dev is a tmpfs holding the usual
devices and the test's own /dev/log datagram socket, so nothing of the host's
logging is touched and every datagram pickupd sends is seen.
"""

import os
import re
import socket
import subprocess
import sys
import tempfile
import threading

import harness
from harness import Pickupd, SmtpServer

NS_MARK = "PICKUPD_TEST_LOG_NS"
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
# LOG_MAIL (2) << 3 | severity: what syslog(3) sends for each of our levels.
MAIL_INFO, MAIL_WARNING = 2 * 8 + 6, 2 * 8 + 4
DGRAM_RE = re.compile(r"^<(?P<pri>\d+)>(?P<time>\w{3} [ \d]\d \d\d:\d\d:\d\d) "
                      r"(?P<prog>pickupd(?:/[a-z]+)?)\[(?P<pid>\d+)\]: (?P<text>.*)$")


def enter_namespace():
    """Re-runs this file in a private mount namespace (once)."""
    if os.environ.get(NS_MARK) == "1":
        return
    env = dict(os.environ, **{NS_MARK: "1"})
    os.execvpe("unshare", ["unshare", "--mount", "--propagation", "private",
                           sys.executable, os.path.abspath(__file__)] + sys.argv[1:], env)


def private_dev():
    """/dev becomes a tmpfs with the host's device nodes bound into it."""
    keep = tempfile.mkdtemp(prefix="pickupd-dev-")
    subprocess.run(["mount", "--bind", "/dev", keep], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", "/dev"], check=True)
    for name in DEVICES:
        if os.path.exists(os.path.join(keep, name)):
            open(os.path.join("/dev", name), "w").close()
            subprocess.run(["mount", "--bind", os.path.join(keep, name),
                            os.path.join("/dev", name)], check=True)


class DevLog:
    """The /dev/log socket: collects every datagram."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("/dev/log")
        os.chmod("/dev/log", 0o666)
        self.lines = []
        self._lock = threading.Lock()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            data = self.sock.recv(65536)
            with self._lock:
                self.lines.append(data.decode("utf-8", "replace").rstrip("\n"))

    def snapshot(self):
        with self._lock:
            return list(self.lines)


def mail(to):
    return ("From: <app@shop.example>\r\nTo: <%s>\r\nSubject: s\r\n\r\nbody\r\n" % to).encode()


def test_syslog_mail_facility():
    devlog = DevLog()
    conf = {"log": {"syslog": "yes"}, "bounce": {"enabled": "no"}}
    with SmtpServer() as srv:
        d = Pickupd(conf, relay=srv, start=False)
        d.start()  # no wait_ready: the ready line goes to syslog
        harness.wait_for(lambda: any(": ready " in l for l in devlog.snapshot()), 60,
                         what="the ready line over /dev/log")
        d.drop("ok.eml", mail("a@one.example"))
        d.drop("no.eml", mail("fail550@two.example"))
        harness.wait_for(lambda: sum(": removed" in l or "moved to badmail" in l
                                     for l in devlog.snapshot()) == 2, 60,
                         what="both messages done, over /dev/log")
        pid = d.pid
        d.stop()
        stderr = [l for l in d.raw_log_text().splitlines() if not l.startswith("=== ")]
        d.cleanup()

    lines = devlog.snapshot()
    parsed = []
    for line in lines:
        m = DGRAM_RE.match(line)
        assert m, "not a syslog(3) datagram with program[pid]: %r" % line
        assert int(m.group("pid")) == pid, line
        assert int(m.group("pri")) >> 3 == 2, "not the mail facility: %r" % line
        parsed.append(m)
    # Nothing went to stderr once the config was read.
    assert stderr == [], stderr
    by_prog = {}
    for m in parsed:
        by_prog.setdefault(m.group("prog"), []).append((int(m.group("pri")), m.group("text")))
    assert any(t.startswith("ready ") for p, t in by_prog["pickupd"]), by_prog
    assert any(p == MAIL_INFO and re.match(r"\S+: uid=\d+, pickup=default, file=ok\.eml, from=<app@shop\.example>, ", t)
               for p, t in by_prog["pickupd/pickup"]), by_prog
    assert any(p == MAIL_INFO and re.search(r": to=<a@one\.example>, .* status=sent ", t)
               for p, t in by_prog["pickupd/smtp"]), by_prog
    assert any(p == MAIL_WARNING and re.match(r"warning: \S+: moved to badmail: ", t)
               for p, t in by_prog["pickupd/qmgr"]), by_prog

    # A syslog daemon writes "TIME HOST PROGRAM[PID]: TEXT" into mail.log:
    # pflogsumm reads that.
    mail_log = "".join("%s vm %s[%s]: %s\n" % (m.group("time"), m.group("prog"),
                                               m.group("pid"), m.group("text"))
                       for m in parsed)
    p = subprocess.run(["/usr/sbin/pflogsumm", "--syslog-name=pickupd"], input=mail_log.encode(),
                       stdout=subprocess.PIPE, check=True, timeout=120)
    report = p.stdout.decode()
    for what, n in (("received", 2), ("delivered", 1), ("bounced", 1)):
        assert re.search(r"^\s*%d\s+%s\b" % (n, what), report, re.M), report


if __name__ == "__main__":
    enter_namespace()
    private_dev()
    harness.main(globals())
