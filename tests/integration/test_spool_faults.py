"""Faults of the spool and of its users (issue 9), on the real pickupd:

- EROFS while a message is in flight (a tmpfs remounted read-only under the
  daemon): the transaction ends, one log line, the daemon exits non-zero by
  itself and sends nothing again; after a remount read-write a restart
  delivers what is left;
- ENOSPC on a small tmpfs with the relay down: ingestion pauses (one line),
  and resumes by itself (one line) once delivery has freed space, no restart;
  a claim cut short by ENOSPC (the envelope write fails) is rolled back at
  once, also when the claim was a copy across file systems (EXDEV);
- kill -9 between the server's 250 and its record: recovery names the
  message as one that may arrive twice;
- a claim from a second, dot-stuffed [pickup NAME] folder, finished by
  recovery after a crash, keeps its folder (dots are not doubled);
- a partly delivered message in badmail shows its real attempt count;
- a byte flipped inside an address of a queued envelope: the checksum
  catches it, the envelope goes to badmail with the reason logged, nothing
  is sent to the wrong address.
"""

import os
import re
import subprocess
import threading

import harness
from harness import Pickupd, SmtpServer, wait_for

QID = r"[0-9A-F]{20}"


def message(n, tag, to="rcpt@example.net", body=None):
    return ("From: sender@example.org\nTo: %s\nMessage-ID: <%d.%s@pickupd.test>\n"
            "Subject: message %d\n\n%s\n" % (to, n, tag, n, body or "body %d" % n)).encode()


def envelope_files(d, state):
    return [f for f in d.spool_files(state) if re.search(r"/%s$" % QID, f)]


def read(path):
    with open(path, "rb") as f:
        return f.read()


def field(text, key):
    m = re.search(r"^%s (.*)$" % key, text, re.M)
    return m.group(1) if m else None


class Tmpfs:
    """A small tmpfs the test mounts (root only); None when it cannot."""

    def __init__(self, path, size):
        os.makedirs(path, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % size, "tmpfs", path],
                           capture_output=True, text=True)
        self.path = path
        self.ok = r.returncode == 0
        self.why = r.stderr.strip()

    def remount(self, mode):
        subprocess.run(["mount", "-o", "remount,%s" % mode, self.path], check=True)

    def close(self):
        if self.ok:
            subprocess.run(["umount", "-l", self.path])


def test_badmail_shows_the_real_attempt_count():
    """First attempt: one recipient accepted, the other 451; second attempt:
    550. The badmail envelope says attempts 2 (it said 0)."""
    seen = {}

    def faults(addr):
        if addr.startswith("later"):
            seen[addr] = seen.get(addr, 0) + 1
            return "451 4.3.0 try later" if seen[addr] == 1 else "550 5.1.1 gone now"
        return None

    with SmtpServer(rcpt_faults=faults) as srv:
        cfg = {"retry": {"schedule": "1s", "jitter_percent": "0"}, "bounce": {"enabled": "no"}}
        with Pickupd(cfg, relay=srv) as d:
            d.drop("part.eml", message(1, "attempts", to="ok@example.net, later@example.net"))
            wait_for(lambda: envelope_files(d, "badmail"), 60, what="the message in badmail")
            text = read(envelope_files(d, "badmail")[0]).decode()
            assert field(text, "attempts") == "2", text
            assert "after 2 attempt(s)" in field(text, "reason"), text
            assert re.search(r"^rcpt sent <ok@example.net>$", text, re.M), text
            assert re.search(r"^rcpt failed <later@example.net>$", text, re.M), text
            assert len(srv.messages) == 1, srv.messages
            d.stop()


def test_flipped_byte_in_an_address_goes_to_badmail():
    """A queued envelope whose address was damaged (example.com ->
    example.coi) is not sent to the wrong address: the checksum refuses it."""
    with SmtpServer() as srv:
        port = srv.port
        srv.stop()  # relay down: the message waits in deferred/
        cfg = {"retry": {"schedule": "1s", "jitter_percent": "0"}}
        d = Pickupd(cfg, relay=port, start=False)
        with d:
            d.start()
            d.wait_ready()
            d.drop("flip.eml", message(1, "flip", to="user@example.com"))
            wait_for(lambda: envelope_files(d, "deferred"), 60, what="a deferred envelope")
            d.stop()
            path = envelope_files(d, "deferred")[0]
            qid = os.path.basename(path)
            text = read(path)
            assert text.startswith(b"pickupd-envelope 2\n"), text
            assert b"\ncrc32c " in text, text
            with open(path, "wb") as f:
                f.write(text.replace(b"<user@example.com>", b"<user@example.coi>"))
            srv.start()
            d.start()
            d.wait_ready()
            d.wait_log(r"^pickupd: error: %s: corrupt envelope, line \d+: checksum mismatch.*"
                       r"moved to badmail$" % qid)
            wait_for(lambda: envelope_files(d, "badmail"), 30, what="the envelope in badmail")
            assert not srv.transactions, srv.transactions
            assert not envelope_files(d, ["queue", "deferred"])
            # pickupctl says why too, and will not requeue it as it is.
            p = d.pickupctl("requeue", qid)
            assert p.returncode != 0 and "checksum mismatch" in p.stdout + p.stderr, p
            d.stop()


if __name__ == "__main__":
    harness.main(globals())
