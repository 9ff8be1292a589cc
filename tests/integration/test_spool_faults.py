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
  is sent to the wrong address;
- the spool work of a delivery (loading it, recording its outcome) is done
  on the thread pool: the same file-system calls failing on the event
  loop's thread only change nothing.
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


def test_erofs_with_a_message_in_flight_exits_and_resumes_after_restart():
    """The spool's file system goes read-only while the server holds the
    final dot: the 250 cannot be recorded. pickupd logs it once, starts no
    new transaction, exits 1 by itself (it used to resend the message
    every ~70 s forever and keep feeding the watchdog), and once the file
    system is writable again a restart delivers what is left (the message in
    flight may come twice, and the log says so)."""
    in_data = threading.Event()
    release = threading.Event()

    def hold_dot(n, envelope):
        if n == 0:
            in_data.set()
            release.wait(60 * harness.TIMEOUT_SCALE)
        return None

    with SmtpServer(data_reply=hold_dot) as srv:
        d = Pickupd(relay=srv, start=False, notify=True)
        fs = Tmpfs(os.path.join(d.dir, "fs"), "8m")
        if not fs.ok:
            print("  SKIP: cannot mount a tmpfs (%s)" % fs.why)
            d.cleanup()
            return
        try:
            d.spool = os.path.join(fs.path, "spool")
            # One session: b waits for a, and must not be started once the
            # spool is read-only.
            d.write_config({"spool": {"dir": d.spool}, "relay test": {"max_sessions": "1"}},
                           srv.port)
            with d:
                d.start()
                d.wait_ready()
                d.drop("a.eml", message(1, "erofs"))
                assert in_data.wait(30 * harness.TIMEOUT_SCALE), d.log_tail()
                d.drop("b.eml", message(2, "erofs"))
                d.wait_log(r"file=b\.eml")
                fs.remount("ro")
                release.set()
                wait_for(lambda: not d.running, 60, what="pickupd to exit by itself")
                assert d.proc.returncode == 1, (d.proc.returncode, d.log_tail())
                d.check_sanitizer()
                assert len(d.log_matches(r"read-only \(EROFS\)")) == 1, d.log_tail()
                m = d.wait_log(r"^pickupd: warning: (%s): the outcome cannot be "
                               r"recorded \(read-only spool\); the message stays queued and "
                               r"may be delivered twice$" % QID)
                qid = m[0].group(1)
                assert "STOPPING=1" in "".join(d.read_notify()), d.notify_messages
                # One transaction only: nothing started once the spool was read-only.
                assert len(srv.transactions) == 1, srv.transactions
                # Writable again: a restart sends what is left, and names the
                # message that was in flight as one that may arrive twice.
                fs.remount("rw")
                d.start()
                d.wait_ready()
                d.wait_log(r"^pickupd: warning: %s: it was being sent when pickupd "
                           r"stopped without recording the outcome; the message may be "
                           r"delivered twice$" % qid)
                srv.wait_messages(3)
                d.wait_spool_empty()
                got = sorted((t.header("Message-ID") or [""])[0] for t in srv.messages)
                assert got == ["<1.erofs@pickupd.test>", "<1.erofs@pickupd.test>",
                               "<2.erofs@pickupd.test>"], got
                assert not [f for f in d.pickup_files() if f.endswith(".eml")]
                d.stop()
        finally:
            fs.close()


def test_enospc_pause_lifts_by_itself():
    """2 MB spool, relay down, 30 files of 100 KB: ingestion pauses (one
    line). The relay comes back, delivery frees space, and ingestion resumes
    by itself (one line) with no restart: all 30 arrive."""
    srv = SmtpServer()
    srv.start()
    port = srv.port
    srv.stop()
    d = Pickupd({"retry": {"schedule": "1s", "jitter_percent": "0"}}, relay=port, start=False)
    fs = Tmpfs(os.path.join(d.dir, "fs"), "2m")
    if not fs.ok:
        print("  SKIP: cannot mount a tmpfs (%s)" % fs.why)
        d.cleanup()
        return
    try:
        d.spool = os.path.join(fs.path, "spool")
        d.write_config({"spool": {"dir": d.spool},
                        "retry": {"schedule": "1s", "jitter_percent": "0"}}, port)
        with d:
            d.start()
            d.wait_ready()
            filler = "x" * 99 + "\n"
            for i in range(30):
                d.drop("big%02d.eml" % i, message(i, "enospc", body=filler * 1000))
            d.wait_log(r"no space left on device; ingestion paused")
            wait_for(lambda: envelope_files(d, "deferred"), 60, what="deferred messages")
            # While paused, a file is either queued (with its content) or
            # still in pickup: no content without an envelope.
            def settled():
                data = [f for f in d.spool_files("data") if re.search(r"/%s$" % QID, f)]
                envs = envelope_files(d, ["queue", "deferred", "badmail"])
                left = [f for f in d.pickup_files() if f.endswith(".eml")]
                return len(data) == len(envs) and len(envs) + len(left) == 30
            wait_for(settled, 30, what="every file queued or in pickup")
            assert [f for f in d.pickup_files() if f.endswith(".eml")], "nothing was paused"
            srv.start()
            srv.wait_messages(30, timeout=120)
            d.wait_spool_empty()
            assert not [f for f in d.pickup_files() if f.endswith(".eml")], d.pickup_files()
            paused = len(d.log_matches(r"ingestion paused"))
            resumed = len(d.log_matches(r"space is available again; ingestion resumed"))
            assert paused >= 1 and resumed == paused, (paused, resumed, d.log_tail())
            got = sorted((t.header("Message-ID") or [""])[0] for t in srv.messages)
            assert got == sorted("<%d.enospc@pickupd.test>" % i for i in range(30)), got
            d.stop()
    finally:
        srv.stop()
        fs.close()


def test_enospc_at_the_envelope_rolls_a_copied_claim_back():
    """The pickup folder is on another file system than the spool (the claim
    is a copy). The envelope write meets ENOSPC: the claim is undone at once,
    so every file stays visible in pickup and no content sits in data/
    without an envelope (one used to, until a restart); when the space is
    back, ingestion resumes and everything is delivered once."""
    with SmtpServer() as srv:
        d = Pickupd(relay=srv, start=False)
        fs = Tmpfs(os.path.join(d.dir, "fs"), "8m")
        if not fs.ok:
            print("  SKIP: cannot mount a tmpfs (%s)" % fs.why)
            d.cleanup()
            return
        try:
            d.spool = os.path.join(fs.path, "spool")
            d.write_config({"spool": {"dir": d.spool}}, srv.port)
            faults = harness.fault_shim(d)
            with d:
                d.start()
                d.wait_ready()
                faults("write:ENOSPC:.env\n")
                for i in range(3):
                    d.drop("cp%d.eml" % i, message(i, "exdev"))
                d.wait_log(r"no space left on device; ingestion paused")
                # The pause is logged by the first claim to fail; the others
                # (each file its own ingest job, side by side) may still be
                # at work, and every 2 s the space check lets all three try
                # again. A claim's record (a copy's data/<id>.copy link) is
                # in data/ before its content and goes after it, so a data/
                # with nothing at all in it is a moment when no claim holds
                # content (the old look, regular files only and data/ listed
                # again after, met a claim that had just made its link).
                data = os.path.join(d.spool, "data")
                wait_for(lambda: not os.listdir(data) and not d.spool_files("tmp"), 30,
                         what="nothing left in data/ or tmp/")
                assert sorted(f for f in d.pickup_files() if f.endswith(".eml")) == \
                    ["cp0.eml", "cp1.eml", "cp2.eml"], d.pickup_files()
                assert not srv.messages
                faults("")
                srv.wait_messages(3)
                d.wait_spool_empty()
                d.wait_log(r"space is available again; ingestion resumed")
                assert len(srv.messages) == 3, srv.messages
                assert not os.listdir(data), os.listdir(data)
                assert not [f for f in d.pickup_files() if f.endswith(".eml")]
                d.stop()
        finally:
            fs.close()


def test_crash_between_250_and_its_record_is_named_at_recovery():
    """kill -9 while the server answers the final dot: the restart sends the
    message again (at-least-once) and the log names it, by queue ID, as one
    that may be delivered twice."""
    holder = {}

    def kill_at_dot(n, envelope):
        if n == 0:
            holder["d"].kill9()
        return None

    with SmtpServer(data_reply=kill_at_dot) as srv:
        d = Pickupd(relay=srv, start=False)
        holder["d"] = d
        with d:
            d.start()
            d.wait_ready()
            d.drop("twice.eml", message(1, "twice"))
            wait_for(lambda: not d.running, 30, what="pickupd killed at the final dot")
            qid = os.path.basename(envelope_files(d, "queue")[0])
            d.start()
            d.wait_ready()
            d.wait_log(r"^pickupd: warning: %s: it was being sent when pickupd stopped "
                       r"without recording the outcome; the message may be delivered twice$"
                       % qid)
            srv.wait_messages(2)
            d.wait_spool_empty()
            assert [t.header("Message-ID") for t in srv.messages] == \
                [["<1.twice@pickupd.test>"]] * 2
            # A clean restart names nothing.
            d.stop()
            d.start()
            d.wait_ready()
            assert not d.log_matches(r"may be delivered twice"), d.log_tail()
            d.stop()


def stuffed_claim_cut_short(step, tear=False):
    """A file of a dot-stuffed [pickup second] folder, pickupd killed at the
    spool hook step; with tear, its first envelope (written without fsync)
    is then torn as a power loss would leave it. The restart ingests it again
    as from that folder (pickup second, dot-stuffed yes), so its dots are not
    doubled."""
    with SmtpServer() as srv:
        d = Pickupd(relay=srv, start=False)
        second = os.path.join(d.dir, "second")
        os.makedirs(second)
        d.write_config({"pickup second": {"dir": second, "dot_stuffed": "yes",
                                          "settle_time": "0"}}, srv.port)
        d.env = {"PICKUPD_SPOOL_CRASH": step}
        with d:
            d.start()
            d.wait_ready()
            body = "..a stuffed line\nplain\n"
            with open(os.path.join(second, ".s.tmp"), "wb") as f:
                f.write(message(1, "stuffed", body=body))
            os.rename(os.path.join(second, ".s.tmp"), os.path.join(second, "s.eml"))
            wait_for(lambda: not d.running, 30, what="pickupd killed at " + step)
            assert d.proc.returncode == -9, d.proc.returncode
            if tear:
                tmp = os.path.join(d.spool, "tmp")
                (name,) = [n for n in os.listdir(tmp) if n.endswith(".env")]
                text = read(os.path.join(tmp, name))
                with open(os.path.join(d.spool, "queue", name[:-4]), "wb") as f:
                    f.write(text[:len(text) // 2])
                os.unlink(os.path.join(tmp, name))
            d.env = {}
            d.start()
            d.wait_ready()
            why = "its envelope was never completely written" if tear else "claim cut short"
            d.wait_log(r"^pickupd: (%s): recovered content of %s \(%s\): "
                       r"pickup=second, file=s\.eml$" % (QID, QID, why))
            t = srv.wait_messages(1)[0]
            d.wait_spool_empty()
            assert b"\r\n.a stuffed line\r\nplain\r\n" in t.data, t.data
            assert b"..a stuffed" not in t.data, t.data
            assert b"(folder second)" in t.data, t.data
            assert not os.listdir(os.path.join(d.spool, "data")), \
                os.listdir(os.path.join(d.spool, "data"))
            assert not d.spool_files(["badmail"]), d.spool_files(["badmail"])
            d.stop()


def test_claim_from_a_second_stuffed_folder_keeps_its_origin_in_recovery():
    """The claim cut short at its content fsync (claim-fsync)."""
    stuffed_claim_cut_short("claim-fsync")


def test_lost_first_envelope_keeps_its_origin_in_recovery():
    """Killed before the lazy first envelope was renamed into queue/: data/ID
    with its claim record and no envelope."""
    stuffed_claim_cut_short("lazy-env-rename")


def test_torn_first_envelope_keeps_its_origin():
    """The lazy first envelope torn (power loss before writeback): ingested
    again from the content as from the folder its claim record names."""
    stuffed_claim_cut_short("lazy-env-rename", tear=True)


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


def test_delivery_spool_work_is_off_the_loop_thread():
    """Loading a due message (deferred/ -> queue/, the envelope, the mark) and
    recording its outcome run on the thread pool (issue 11): with every
    rename, write and fsync in the spool failing on the main thread (the
    event loop) only, a message deferred once still goes at its second
    attempt and leaves the spool."""
    seen = {}

    def faults(addr):
        seen[addr] = seen.get(addr, 0) + 1
        return "451 4.3.0 try later" if seen[addr] == 1 else None

    with SmtpServer(rcpt_faults=faults) as srv:
        d = Pickupd({"retry": {"schedule": "1s", "jitter_percent": "0"}}, relay=srv,
                    start=False)
        ctl = os.path.join(d.dir, "faultfs.ctl")
        d.env = harness.shim_env(ctl)
        with d:
            d.start()
            d.wait_ready()
            d.drop("m.eml", message(1, "offloop"))
            d.wait_log(r"status=deferred \(451 4\.3\.0 try later\)")
            with open(ctl, "w") as f:
                f.write("main,rename,write,fsync:EIO:%s/\n" % d.spool)
            wait_for(lambda: srv.messages or d.log_matches(r"cannot move to queue"), 60,
                     what="the second attempt")
            assert not d.log_matches(r"cannot move to queue"), d.log_tail()
            d.wait_spool_empty()
            assert len(srv.messages) == 1, srv.messages
            d.wait_log(r"status=sent")
            os.unlink(ctl)
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
            assert text.startswith(b"pickupd-envelope 2\n"), text
            assert re.search(rb"\ncrc32c [0-9A-F]{8}\nend\n$", text), text
            # pickupctl says why too, and will not requeue it as it is.
            p = d.pickupctl("requeue", qid)
            assert p.returncode != 0 and "checksum mismatch" in p.stdout + p.stderr, p
            d.stop()


if __name__ == "__main__":
    harness.main(globals())
