"""Pickup at scale through the real daemon (issue 4):
  - 20,000 files dropped at once while the daemon runs: the inotify queue
    (fs.inotify.max_queued_events, 16384 by default) overflows, the daemon
    rescans, and every file is delivered exactly once;
  - two pickupd instances, each with its own spool, watching one folder:
    every file is claimed by exactly one of them (the rename decides).
Under the ASan build the 20,000-file case is scaled down (PICKUPD_SANITIZE)."""

import os
import re
import signal
import time

import harness
from harness import Pickupd, SmtpServer, wait_for

FAST_RELAY = {"max_sessions": "8", "max_messages_per_session": "100000"}


def write_many(folder, prefix, n):
    """Writes n messages with write-then-rename, as fast as Python can."""
    tmpl = (b"From: bulk@example.org\r\nTo: r@example.net\r\nSubject: %s\r\n"
            b"Message-ID: <%s@bulk.example>\r\n\r\nbody\r\n")
    for i in range(n):
        tag = b"%s-%06d" % (prefix.encode(), i)
        tmp = os.path.join(folder, ".%s.tmp" % tag.decode())
        with open(tmp, "wb") as f:
            f.write(tmpl % (tag, tag))
        os.rename(tmp, os.path.join(folder, "%s.eml" % tag.decode()))


def tags(msgs):
    return [m.header("Subject")[0] for m in msgs]


def test_20000_files_at_once_inotify_overflow():
    n = 20000 if not harness.SANITIZE else 4000
    with open("/proc/sys/fs/inotify/max_queued_events") as f:
        qmax = int(f.read())
    conf = {"pickup": {"settle_time": "0"}, "relay test": FAST_RELAY}
    with SmtpServer() as srv, Pickupd(conf, relay=srv) as d:
        t0 = time.monotonic()
        # Stopped, the daemon reads no events: all of them queue in the kernel
        # (overflowing when n > max_queued_events), as under a real burst.
        d.signal(signal.SIGSTOP)
        try:
            write_many(d.pickup, "bulk", n)
        finally:
            d.signal(signal.SIGCONT)
        t_written = time.monotonic() - t0
        if n > qmax:
            d.wait_log(r"inotify queue overflowed; rescanning")
        srv_msgs = srv.wait_messages(n, timeout=240)  # generous: aiosmtpd and the writer share 2 noisy cores
        t_done = time.monotonic() - t0
        got = tags(srv_msgs)
        assert len(got) == n and len(set(got)) == n, (len(got), len(set(got)))
        assert set(got) == {"bulk-%06d" % i for i in range(n)}
        d.wait_spool_empty(timeout=60)
        assert d.pickup_files() == [], len(d.pickup_files())
        print("  %d files: written in %.1fs, all delivered after %.1fs" % (n, t_written, t_done))


def test_two_instances_one_folder():
    n = 1500 if not harness.SANITIZE else 500
    conf = {"pickup": {"settle_time": "0"}, "relay test": FAST_RELAY}
    with SmtpServer() as srv:
        a = Pickupd(dict(conf, general={"instance": "a"}), relay=srv, start=False)
        b = Pickupd(relay=srv, start=False)
        b.write_config(dict(conf, general={"instance": "b"},
                            pickup={"dir": a.pickup, "settle_time": "0"}), srv.port)
        with a, b:
            a.start()
            b.start()
            a.wait_ready()
            b.wait_ready()
            write_many(a.pickup, "shared", n)
            msgs = srv.wait_messages(n, timeout=240)
            got = tags(msgs)
            a.wait_spool_empty()
            b.wait_spool_empty()
            # A little longer: a duplicate would show up now if there were one.
            time.sleep(0.5)
            got = tags(srv.messages)
            assert len(got) == n, "%d messages for %d files" % (len(got), n)
            assert set(got) == {"shared-%06d" % i for i in range(n)}
            claim = r"^pickupd: \S+: uid=\d+, pickup=default, file=shared-\d+\.eml, "
            ca, cb = len(a.log_matches(claim)), len(b.log_matches(claim))
            assert ca + cb == n, (ca, cb)
            assert ca > 0 and cb > 0, "one instance claimed nothing: %d / %d" % (ca, cb)
            assert a.pickup_files() == []
            print("  instance a claimed %d, instance b %d" % (ca, cb))


if __name__ == "__main__":
    harness.main(globals())
