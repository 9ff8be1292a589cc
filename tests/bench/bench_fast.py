"""Fast-path benchmarks (issue 10), run by hand, never by ctest:

  /usr/bin/python3 tests/bench/bench_fast.py [latency|burst|large|drain|all] [--n N]
      [--sessions S] [--strace] [BUILD_DIR]

Default config (settle_time etc. as shipped), one relay, tls = none.

latency  one warm session; N times (default 200): write a 2 KiB file under a
         dot name, rename it to *.eml, and time from the rename to the moment
         the upstream (a small SMTP responder in this process, so both ends
         read one clock) sends its reply to the final dot. Waits for the
         "removed" line before the next file. Prints p50/p90/p99/max.
burst    N (default 5,000) 2 KiB files written under dot names, then renamed
         to *.eml at once; Postfix's smtp-sink upstream. Time from the first
         rename to the last "removed" line; daemon CPU (user+sys, all
         threads, from /proc) per message; peak RSS (VmHWM).
large    the same with N (default 200) 1 MiB messages.
drain    N (default 6,000) 2 KiB messages written into a new spool by
         bench_spool populate (half queued, half deferred an hour ahead), then
         pickupd started with max_sessions = S (--sessions, default 1) against
         smtp-sink: time from the start to the last queued one's "sent" line,
         so per message it is loaded from the spool, sent, and recorded; a
         single session is where a round trip per message shows.
--rounds R  burst and large: R bursts one after the other into the same daemon
         (a warm one from the second on: spare envelopes kept from the
         first), each measured and printed.
--perf   counts fsync-family calls with `perf stat -e syscalls:sys_enter_*`
         and CPU time (task-clock, all threads) on the daemon during the
         measured part only (low overhead); and, system-wide, every ext4
         file fsync (ext4:ext4_sync_file_enter), which counts those that
         Linux AIO runs for the daemon's batched claims too.
--syscalls  like --perf, but counts every system call (those made at least
         once per ten messages are printed).
--record `perf record -g` on the daemon during the measured part; prints the
         top of `perf report` by DSO and by symbol.
--strace runs the daemon under `strace -f -e trace=fsync,fdatasync,syncfs,io_submit` and
         prints fsync-family calls per message, per descriptor (4 = data/,
         6 = queue/, the pickup folder's is the highest): counts only,
         timings are skewed.
"""

import os
import re
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))

args = sys.argv[1:]


def opt(name, default, conv=int):
    if name in args:
        i = args.index(name)
        v = conv(args[i + 1])
        del args[i:i + 2]
        return v
    return default


def flag(name):
    if name in args:
        args.remove(name)
        return True
    return False


N = opt("--n", 0)
STRACE = flag("--strace")
PERF = flag("--perf")
SYSCALLS = flag("--syscalls")
PERF = PERF or SYSCALLS
RECORD = flag("--record")
ROUNDS = opt("--rounds", 1)
SESSIONS = opt("--sessions", 1)
MODE = args.pop(0) if args and args[0] in ("latency", "burst", "large", "drain", "all") else "all"
if args:
    os.environ["PICKUPD_BIN_DIR"] = os.path.abspath(args[0])
os.environ.setdefault("PICKUPD_BIN_DIR", os.path.join(SRC, "build"))

import harness  # noqa: E402
from harness import Pickupd, wait_for, free_port  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")


def message(i, size):
    head = (b"From: bench@example.org\r\nTo: r@example.net\r\nSubject: bench %d\r\n"
            b"Date: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <%d@bench>\r\n\r\n"
            % (i, i))
    line = b"A line of body text, about as long as a real one is, seventy or so.\r\n"
    body = line * ((size - len(head)) // len(line) + 1)
    return (head + body)[:size - 2] + b"\r\n"


class Responder:
    """A minimal pipelining SMTP server on loopback that notes when it sends
    the reply to each final dot (time.monotonic())."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.sock, selectors.EVENT_READ, None)
        self.times = []
        self.cond = threading.Condition()
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop:
            for key, _ in self.sel.select(0.2):
                if key.data is None:
                    c, _ = self.sock.accept()
                    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    c.sendall(b"220 bench ESMTP\r\n")
                    self.sel.register(c, selectors.EVENT_READ, {"buf": b"", "data": False})
                else:
                    self.serve(key.fileobj, key.data)

    def serve(self, c, st):
        chunk = c.recv(1 << 16)
        if not chunk:
            self.sel.unregister(c)
            c.close()
            return
        st["buf"] += chunk
        out = b""
        while True:
            if st["data"]:
                i = st["buf"].find(b"\r\n.\r\n")
                if i < 0:
                    st["buf"] = st["buf"][-4:]
                    break
                st["buf"] = st["buf"][i + 5:]
                st["data"] = False
                c.sendall(out + b"250 2.0.0 queued\r\n")
                out = b""
                with self.cond:
                    self.times.append(time.monotonic())
                    self.cond.notify_all()
                continue
            i = st["buf"].find(b"\r\n")
            if i < 0:
                break
            line, st["buf"] = st["buf"][:i].upper(), st["buf"][i + 2:]
            if line.startswith(b"EHLO"):
                out += b"250-bench\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
            elif line.startswith(b"DATA"):
                out += b"354 go\r\n"
                st["data"] = True
                st["buf"] = b"\r\n" + st["buf"]  # a dot on the first line
            elif line.startswith(b"QUIT"):
                out += b"221 bye\r\n"
            else:
                out += b"250 ok\r\n"
        if out:
            c.sendall(out)


def proc_cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def proc_hwm(pid):
    with open("/proc/%d/status" % pid) as f:
        m = re.search(r"VmHWM:\s+(\d+) kB", f.read())
    return int(m.group(1)) / 1024


_seen = {}


def count_log(d, pat):
    """Occurrences of pat in d's log since its start, read on from where the
    last call stopped (reading the whole log every poll cost a quarter of a
    CPU by the end of a 5,000-message burst)."""
    key = (id(d), d._log_offset, pat)
    off, n, tail = _seen.get(key, (d._log_offset, 0, b""))
    with open(d.logfile, "rb") as f:
        f.seek(off)
        data = f.read()
    buf = tail + data
    n += buf.count(pat)
    # A match cut by the end of the file is completed next time; the kept
    # tail is shorter than pat, so nothing is counted twice.
    keep = len(pat) - 1
    _seen[key] = (off + len(data), n, buf[len(buf) - keep:] if keep else b"")
    return n


class Daemon:
    """pickupd with the default [pickup] settings, optionally under strace."""

    def __init__(self, port, extra=None):
        cfg = {"pickup": {"settle_time": None}, "relay test": {"max_sessions": "4"}}
        cfg.update(extra or {})
        self.d = Pickupd(cfg, relay=port, start=False)
        self.strace_out = None
        if STRACE:
            self.strace_out = os.path.join(self.d.dir, "strace.txt")
            self.d.name = "pickupd"
        self.d.start() if not STRACE else self._start_strace()
        self.d.wait_ready()
        self.pid = self.daemon_pid()
        self.perf = None

    def count_start(self):
        if RECORD:
            self.rec_out = os.path.join(self.d.dir, "perf.data")
            ev = os.environ.get("BENCH_RECORD_EVENT")  # e.g. a syscall tracepoint
            self.perf = subprocess.Popen(["perf", "record", "-g", "-q", "-o", self.rec_out,
                                          "-p", str(self.pid)] + (["-e", ev] if ev else []))
            time.sleep(0.5)
            return
        if not PERF:
            return
        self.perf_out = os.path.join(self.d.dir, "perf.txt")
        self.perf = subprocess.Popen(
            ["perf", "stat", "-x", ",", "-o", self.perf_out, "-p", str(self.pid), "-e",
             os.environ.get("BENCH_PERF_EVENTS", "task-clock,syscalls:sys_enter_*") if SYSCALLS else
             "task-clock,syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync,"
             "syscalls:sys_enter_syncfs"])
        # Linux AIO's fsyncs (pickupd's batched claims) run in kernel
        # workers, out of reach of -p: every ext4 file fsync on the machine
        # is counted instead (nothing else here fsyncs during a run).
        self.perf_fs_out = os.path.join(self.d.dir, "perf-fs.txt")
        self.perf_fs = subprocess.Popen(
            ["perf", "stat", "-x", ",", "-o", self.perf_fs_out, "-a", "-e",
             "ext4:ext4_sync_file_enter"], stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # perf attaches asynchronously

    def count_stop(self, n_msgs):
        if self.perf is None:
            return
        self.perf.send_signal(2)
        self.perf.wait(60)
        if RECORD:
            if os.environ.get("BENCH_PERF_DATA"):  # kept for perf report by hand
                shutil.copy(self.rec_out, os.environ["BENCH_PERF_DATA"])
            for sort in ("dso", "sym"):
                out = subprocess.run(["perf", "report", "-i", self.rec_out, "--no-children",
                                      "--sort", sort, "--stdio", "-g", "none"],
                                     capture_output=True, text=True).stdout
                print("\n".join([ln for ln in out.splitlines()
                                 if ln.strip() and not ln.startswith("#")][:25]))
            # Kernel time by system call (inclusive): the flat profile above
            # lands on pvm_irq_enable under this VM's paravirtualisation.
            out = subprocess.run(["perf", "report", "-i", self.rec_out, "--no-children",
                                  "--sort", "pid", "--stdio", "-g", "none"],
                                 capture_output=True, text=True).stdout
            print("by thread (the loop thread's id is the daemon's pid, %d):" % self.pid)
            print("\n".join([ln for ln in out.splitlines()
                             if ln.strip() and not ln.startswith("#")][:10]))
            out = subprocess.run(["perf", "report", "-i", self.rec_out, "--children",
                                  "--sort", "sym", "--stdio", "-g", "none"],
                                 capture_output=True, text=True).stdout
            print("by system call (children):")
            print("\n".join([ln for ln in out.splitlines()
                             if re.search(r"\] (__x64_sys_|__do_sys_)", ln)][:25]))
            return
        fs = 0
        with open(self.perf_out) as f:
            for ln in f:
                p = ln.split(",")
                if len(p) > 2 and p[2] == "task-clock":
                    ms = float(p[0])
                    print("  task-clock %.0f ms = %.3f ms per message" % (ms, ms / n_msgs))
                elif len(p) > 2 and p[0].isdigit():
                    if SYSCALLS and int(p[0]) < n_msgs / 10:
                        continue
                    if re.search(r"_(fsync|fdatasync|syncfs)$", p[2]):
                        fs += int(p[0])
                    print("  %-34s %7s  %.2f per message" % (p[2], p[0], int(p[0]) / n_msgs))
        print("fsync-family system calls (perf): %d = %.2f per message" % (fs, fs / n_msgs))
        self.perf_fs.send_signal(2)
        self.perf_fs.wait(60)
        with open(self.perf_fs_out) as f:
            for line in f:
                p = line.strip().split(",")
                if len(p) > 2 and p[2] == "ext4:ext4_sync_file_enter" and p[0].isdigit():
                    print("file fsyncs on ext4, system-wide (Linux AIO's included): %s = "
                          "%.2f per message" % (p[0], int(p[0]) / n_msgs))

    def _start_strace(self):
        prog = harness.program("pickupd")
        with open(self.d.logfile, "ab") as log:
            self.d._log_offset = log.tell()
            self.d.proc = subprocess.Popen(
                ["strace", "-f", "-tt", "-T", "-s", "64", "-o", self.strace_out + ".raw", "-e", os.environ.get("BENCH_STRACE", "trace=fsync,fdatasync,syncfs,io_submit"),
                 "-e", "signal=none", prog, "-c", self.d.conf],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.d.dir)
        self.d.runs += 1

    def daemon_pid(self):
        if not STRACE:
            return self.d.pid
        for _ in range(200):
            out = subprocess.run(["pgrep", "-P", str(self.d.pid)], capture_output=True,
                                 text=True).stdout.split()
            if out:
                return int(out[0])
            time.sleep(0.01)
        raise SystemExit("no daemon under strace")

    def finish(self, n_msgs):
        if self.strace_out:
            os.kill(self.pid, 15)  # strace itself would only detach
            self.d.proc.wait(120)
        else:
            self.d.stop(expect_status=None)
        if self.strace_out:
            calls = {}
            fs = 0
            if os.environ.get("BENCH_STRACE_KEEP"):  # the raw trace, for reading by hand
                shutil.copy(self.strace_out + ".raw", os.environ["BENCH_STRACE_KEEP"])
            with open(self.strace_out + ".raw") as f:
                for ln in f:
                    m = re.search(r"(fsync|fdatasync|syncfs)\((\d+)", ln)
                    if m:
                        fs += 1
                        calls[m.group(0)] = calls.get(m.group(0), 0) + 1
                    # Linux AIO's fsyncs (batched claims): one per iocb.
                    for fd in re.findall(r"IOCB_CMD_FD?SYNC, aio_fildes=(\d+)", ln):
                        fs += 1
                        k = "aio fsync(" + fd
                        calls[k] = calls.get(k, 0) + 1
            for k, v in sorted(calls.items(), key=lambda kv: -kv[1])[:8]:
                print("  %-12s %7d  %.2f per message" % (k + ")", v, v / n_msgs))
            print("fsync-family calls: %d = %.2f per message" % (fs, fs / n_msgs))
        self.d.cleanup()


def latency(n):
    srv = Responder()
    dm = Daemon(srv.port)
    d = dm.d
    try:
        pk = d.pickup
        samples = []
        for i in range(n + 1):
            tmp = os.path.join(pk, ".m%d" % i)
            with open(tmp, "wb") as f:
                f.write(message(i, 2048))
            with srv.cond:
                before = len(srv.times)
            t0 = time.monotonic()
            os.rename(tmp, os.path.join(pk, "m%d.eml" % i))
            with srv.cond:
                ok = srv.cond.wait_for(lambda: len(srv.times) > before, 30)
            if not ok:
                raise SystemExit("no delivery in 30 s:\n" + d.log_tail())
            if i:  # the first one opens the session
                samples.append((srv.times[before] - t0) * 1000)
            wait_for(lambda: count_log(d, b": removed") >= i + 1, 30, interval=0.001,
                     what="removed %d" % i)
        samples.sort()

        def pct(p):
            return samples[min(len(samples) - 1, int(len(samples) * p / 100))]
        print("latency: %d x 2 KiB, rename -> reply to final dot: p50 %.2f ms, p90 %.2f, "
              "p99 %.2f, max %.2f" % (n, pct(50), pct(90), pct(99), samples[-1]))
    finally:
        dm.finish(n + 1)
        srv.stop = True


class Sink:
    def __init__(self):
        self.port = free_port()
        u = ["-u", "nobody"] if os.getuid() == 0 else []
        self.proc = subprocess.Popen(["/usr/sbin/smtp-sink"] + u + ["127.0.0.1:%d" % self.port,
                                                                    "256"])

        def up():
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                return True
            except OSError:
                return False
        wait_for(up, 20, what="smtp-sink")

    def close(self):
        self.proc.kill()
        self.proc.wait()


def burst(n, size):
    sink = Sink()
    dm = Daemon(sink.port)
    d = dm.d
    try:
        pk = d.pickup
        for r in range(ROUNDS):
            for i in range(n):
                with open(os.path.join(pk, ".m%d" % i), "wb") as f:
                    f.write(message(r * n + i, size))
            os.sync()
            dm.count_start()
            cpu0 = proc_cpu(dm.pid)
            sink0 = proc_cpu(sink.proc.pid)
            me0 = os.times()
            t0 = time.monotonic()
            for i in range(n):
                os.rename(os.path.join(pk, ".m%d" % i), os.path.join(pk, "m%d.eml" % i))
            wait_for(lambda: count_log(d, b": removed") >= (r + 1) * n, 1800, interval=0.02,
                     what="%d removed" % ((r + 1) * n))
            dt = time.monotonic() - t0
            cpu = proc_cpu(dm.pid) - cpu0
            sink_cpu = proc_cpu(sink.proc.pid) - sink0
            me1 = os.times()
            with open(d.logfile, "rb") as f:  # the incremental count, checked once
                f.seek(d._log_offset)
                full = f.read().count(b": removed")
            if full < (r + 1) * n:
                raise SystemExit("counted %d removed lines, the log has %d" % ((r + 1) * n, full))
            print("  this script's CPU meanwhile: %.3f s; smtp-sink's: %.3f s = %.3f ms/msg"
                  % (me1.user - me0.user + me1.system - me0.system, sink_cpu,
                     sink_cpu * 1000 / n))
            hwm = proc_hwm(dm.pid)
            dm.count_stop(n)
            mib = n * size / (1 << 20)
            print("burst%s: %d x %d B: %.2f s, %.0f msg/s, %.1f MiB/s; CPU %.3f s = %.3f ms/msg, "
                  "%.2f ms/MiB; peak RSS %.1f MiB"
                  % (" %d" % (r + 1) if ROUNDS > 1 else "", n, size, dt, n / dt, mib / dt, cpu,
                     cpu * 1000 / n, cpu * 1000 / mib, hwm))
    finally:
        dm.finish(n)
        sink.close()


def drain(n, sessions):
    sink = Sink()
    d = Pickupd({"pickup": {"settle_time": None}, "relay test": {"max_sessions": str(sessions)}},
                relay=sink.port, start=False)
    try:
        subprocess.check_call([harness.program("bench_spool"), "populate", d.spool, str(n)],
                              stdout=subprocess.DEVNULL)
        queued = len(os.listdir(os.path.join(d.spool, "queue")))
        os.sync()
        t0 = time.monotonic()
        d.start()
        wait_for(lambda: count_log(d, b"status=sent") >= queued, 600, interval=0.02,
                 what="%d sent" % queued)
        dt = time.monotonic() - t0
        cpu = proc_cpu(d.pid)
        print("drain: %d queued, %d session(s): %.2f s from the start, %.0f msg/s; CPU %.3f s "
              "= %.3f ms/msg (start-up included); peak RSS %.1f MiB"
              % (queued, sessions, dt, queued / dt, cpu, cpu * 1000 / queued, proc_hwm(d.pid)))
    finally:
        d.stop(expect_status=None)
        d.cleanup()
        sink.close()


if __name__ == "__main__":
    print("bench_fast: %s, %d CPUs, %s" % (harness.program("pickupd"), os.cpu_count(),
                                           os.uname().release))
    if MODE in ("latency", "all"):
        latency(N or 200)
    if MODE in ("burst", "all"):
        burst(N or 5000, 2048)
    if MODE in ("large", "all"):
        burst(N or 200, 1 << 20)
    if MODE in ("drain", "all"):
        drain(N or 6000, SESSIONS)
