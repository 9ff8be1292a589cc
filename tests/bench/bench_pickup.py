"""Pickup benchmarks (issue 4), run by hand, never by ctest:

  /usr/bin/python3 tests/bench/bench_pickup.py [--files 50000] [--writes 500] [BUILD_DIR]

1. Claim rate: a pickup folder holding N waiting files when pickupd starts;
   the relay is "down" (a listening socket that never accepts, so nothing is
   sent and no delivery I/O competes). Measured: time from starting the
   process to its Nth claim line in the log, and files claimed per second.
2. Writer cost per file: pickupd-sendmail (a process, config load, write,
   fsync, rename, folder fsync) and a plain write+rename in Python, with and
   without fsync.
Prints one line per figure.
"""

import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))

args = [a for a in sys.argv[1:]]


def opt(name, default):
    if name in args:
        i = args.index(name)
        v = int(args[i + 1])
        del args[i:i + 2]
        return v
    return default


N_FILES = opt("--files", 50000)
N_WRITES = opt("--writes", 500)
if args:
    os.environ["PICKUPD_BIN_DIR"] = os.path.abspath(args[0])
os.environ.setdefault("PICKUPD_BIN_DIR", os.path.join(SRC, "build"))

import harness  # noqa: E402  (after PICKUPD_BIN_DIR is set)
from harness import Pickupd  # noqa: E402

MSG = (b"From: bench@example.org\r\nTo: r@example.net\r\nSubject: bench %d\r\n\r\n" +
       b"A line of body text, about as long as a real one is, seventy or so.\r\n" * 20)


def claim_rate():
    black = socket.socket()
    black.bind(("127.0.0.1", 0))
    black.listen(1)  # never accepted: sessions wait for a greeting
    d = Pickupd({"pickup": {"settle_time": "0"},
                 "relay test": {"max_sessions": "1"}}, relay=black.getsockname()[1],
                start=False)
    try:
        for i in range(N_FILES):
            with open(os.path.join(d.pickup, "m%06d.eml" % i), "wb") as f:
                f.write(MSG % i)
        os.sync()
        t0 = time.monotonic()
        d.start()
        seen = 0
        with open(d.logfile, "rb") as log:
            log.seek(d._log_offset)
            pending = b""
            while seen < N_FILES:
                chunk = log.read(1 << 20)
                if not chunk:
                    if not d.running:
                        raise SystemExit("pickupd exited:\n" + d.log_tail())
                    if time.monotonic() - t0 > 1800:
                        raise SystemExit("gave up after 30 min at %d claims" % seen)
                    time.sleep(0.01)
                    continue
                pending += chunk
                lines = pending.split(b"\n")
                pending = lines.pop()
                seen += sum(1 for ln in lines if b", file=m" in ln and b"nrcpt=" in ln)
        dt = time.monotonic() - t0
        print("claim: %d waiting files claimed in %.2f s from start: %.0f files/s "
              "(%.2f ms per file)" % (N_FILES, dt, N_FILES / dt, dt * 1000 / N_FILES))
        d.stop(expect_status=None)
    finally:
        black.close()
        d.cleanup()


def writer_cost():
    d = Pickupd(relay=2525, start=False)
    try:
        env = dict(os.environ)
        cmd = [harness.program("pickupd-sendmail"), "-C", d.conf, "-i", "r@example.net"]
        t0 = time.monotonic()
        for i in range(N_WRITES):
            subprocess.run(cmd, input=MSG % i, check=True)
        dt = time.monotonic() - t0
        print("writer: pickupd-sendmail %.2f ms per message (%d runs, fsync + rename + "
              "folder fsync, process start included)" % (dt * 1000 / N_WRITES, N_WRITES))
        for sync in (True, False):
            t0 = time.monotonic()
            for i in range(N_WRITES):
                tmp = os.path.join(d.pickup, ".w%d.tmp" % i)
                with open(tmp, "wb") as f:
                    f.write(MSG % i)
                    if sync:
                        f.flush()
                        os.fsync(f.fileno())
                os.rename(tmp, os.path.join(d.pickup, "w%d-%d.eml" % (sync, i)))
            dt = time.monotonic() - t0
            print("writer: plain write+rename%s %.3f ms per message (%d files)" % (
                " with fsync" if sync else ", no fsync", dt * 1000 / N_WRITES, N_WRITES))
        del env
    finally:
        d.cleanup()


if __name__ == "__main__":
    print("bench_pickup: %s, %d CPUs, %s" % (harness.program("pickupd"), os.cpu_count(),
                                             os.uname().release))
    writer_cost()
    claim_rate()
