"""The relay client against Postfix's smtp-sink: 4xx, 5xx, 421 and dropped
connections at each phase (-r/-f/-Q/-q), slow replies against the per-phase
timeouts (-W), 1,000 messages over a handful of persistent sessions, a
100 MiB message sent with flat memory, and a drain faster than the spool's
removals held to a bounded backlog of unrecorded outcomes."""

import os
import re
import signal
import socket
import subprocess
import time

import harness
from harness import Pickupd, status_re, wait_for

SINK = "/usr/sbin/smtp-sink"
MSG = b"From: a@example.org\nTo: bob@example.net\nSubject: sink\n\nbody line\n"


class Sink:
    """smtp-sink on 127.0.0.1, a free port; -c counters parsed from stdout."""

    def __init__(self, *opts):
        self.port = harness.free_port()
        args = [SINK, "-c"]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]
        args += list(opts) + ["127.0.0.1:%d" % self.port, "64"]
        self.out = b""
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        os.set_blocking(self.proc.stdout.fileno(), False)

        def up():
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                return True
            except OSError:
                if self.proc.poll() is not None:
                    raise AssertionError("smtp-sink exited: %r" % self.read())
                return False
        wait_for(up, 20, what="smtp-sink to listen")

    def read(self):
        try:
            chunk = self.proc.stdout.read()
        except (BlockingIOError, ValueError):
            chunk = None
        if chunk:
            self.out += chunk
        return self.out

    def counters(self):
        text = self.read().decode("ascii", "replace")
        found = re.findall(r"sess=(\d+) quit=(\d+) mesg=(\d+)", text)
        if not found:
            return {}
        s, q, m = (int(x) for x in found[-1])
        return {"sess": s, "quit": q, "mesg": m}

    def sessions(self):
        """Sessions that ended, not counting the start-up probe."""
        return self.counters().get("sess", 0) - 1

    def messages(self):
        return self.counters().get("mesg", 0)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        harness._registry.append(self)
        return self

    def __exit__(self, *exc):
        self.stop()


def daemon(sink, **relay_keys):
    d = Pickupd(relay=sink.port, start=False)
    d.write_config({"relay test": relay_keys, "general": {"log_level": "debug"}}, sink.port)
    d.start()
    d.wait_ready()
    return d


# (smtp-sink options, expected status, regex on the reply in the status line)
FAULTS = [
    (["-r", "MAIL"], "deferred", r"^450 4\.3\.0"),
    (["-f", "MAIL"], "bounced", r"^500 5\.3\.0"),
    (["-r", "RCPT"], "deferred", r"^450 4\.3\.0"),
    (["-f", "RCPT"], "bounced", r"^500 5\.3\.0"),
    (["-r", "DATA"], "deferred", r"^450 4\.3\.0"),
    (["-f", "DATA"], "bounced", r"^500 5\.3\.0"),
    (["-r", "."], "deferred", r"^450 4\.3\.0"),
    (["-f", "."], "bounced", r"^500 5\.3\.0"),
    (["-Q", "CONNECT"], "deferred", r"421"),
    (["-Q", "EHLO"], "deferred", r"421"),
    (["-Q", "MAIL"], "deferred", r"421"),
    (["-Q", "RCPT"], "deferred", r"421"),
    (["-Q", "DATA"], "deferred", r"421"),
    (["-Q", "."], "deferred", r"421"),
    (["-q", "EHLO"], "deferred", r"connection closed by the server while sending EHLO"),
    (["-q", "MAIL"], "deferred", r"connection closed by the server while sending the envelope"),
    (["-q", "DATA"], "deferred", r"connection closed by the server while sending the envelope"),
    (["-q", "."], "deferred", r"connection closed by the server while sending end of data"),
]


def test_faults_at_each_phase():
    for opts, status, rx in FAULTS:
        with Sink(*opts) as sink:
            d = daemon(sink, max_sessions="1")
            with d:
                d.drop("f.eml", MSG)
                lines = d.wait_log(status_re(status, "bob@example.net"), timeout=30)
                assert re.search(rx, lines[0].group("reply")), (opts, lines[0].group(0))
                if opts == ["-q", "."]:
                    d.wait_log(r"may be delivered twice")
                # Nothing was accepted (smtp-sink counts a "." it refused).
                if "." not in opts:
                    assert sink.messages() == 0, (opts, sink.counters())
            sink.stop()


def test_greeting_timeout():
    with Sink("-W", "CONNECT:30") as sink:
        d = daemon(sink, greeting_timeout="1s")
        with d:
            t0 = time.monotonic()
            d.drop("g.eml", MSG)
            lines = d.wait_log(status_re("deferred", "bob@example.net"), timeout=20)
            assert "timeout while receiving the initial server greeting" in \
                lines[0].group("reply"), lines[0].group(0)
            assert time.monotonic() - t0 < 15


def test_data_done_timeout():
    with Sink("-W", ".:30") as sink:
        d = daemon(sink, data_done_timeout="1s")
        with d:
            d.drop("t.eml", MSG)
            lines = d.wait_log(status_re("deferred", "bob@example.net"), timeout=20)
            assert "timeout while sending end of data" in lines[0].group("reply"), \
                lines[0].group(0)
            d.wait_log(r"may be delivered twice")


def test_slow_replies_within_timeouts():
    """Slow but within the limits: delivered. (smtp-sink's -W on MAIL or RCPT
    would answer a pipelined DATA before the delayed command took effect.)"""
    with Sink("-W", "CONNECT:1", "-W", "EHLO:1", "-w", "1", "-W", ".:1") as sink:
        d = daemon(sink, greeting_timeout="5s", command_timeout="5s", data_timeout="5s",
                   data_done_timeout="5s")
        with d:
            d.drop("s.eml", MSG)
            d.wait_log(status_re("sent", "bob@example.net"), timeout=30)


def test_data_timeout():
    # -p: no PIPELINING, so the DATA reply is awaited on its own (data_timeout);
    # -w: wait before answering DATA.
    with Sink("-p", "-w", "30") as sink:
        d = daemon(sink, data_timeout="1s", command_timeout="60s")
        with d:
            d.drop("t.eml", MSG)
            lines = d.wait_log(status_re("deferred", "bob@example.net"), timeout=20)
            assert "timeout while sending the envelope" in lines[0].group("reply"), \
                lines[0].group(0)


def test_thousand_messages_few_sessions():
    n = 1000
    with Sink() as sink:
        d = daemon(sink, max_sessions="2", max_messages_per_session="1000", idle_timeout="2s")
        with d:
            for i in range(n):
                d.drop("m%04d.eml" % i, MSG.replace(b"bob@", b"bob%d@" % i))
            wait_for(lambda: sink.messages() >= n, 120, what="%d messages at smtp-sink" % n)
            d.wait_spool_empty()
            d.wait_log(status_re("sent"), count=n)
            wait_for(lambda: sink.counters().get("quit", 0) >= 1, 30, what="idle sessions' QUIT")
            assert 1 <= sink.sessions() <= 4, sink.counters()


def test_unrecorded_outcomes_are_bounded():
    """3000 queued messages drained into smtp-sink while each removal
    batch's fsync of data/ is held half a second, so that the server takes
    them faster than the spool removes them: sessions take no more work while
    1024 outcomes wait to be recorded (RECORDS_MAX), so the messages sent but
    still in queue/ (each a delivery held in memory, and sent again after a
    crash) never pass that bound, and all arrive once."""
    from test_queuetools import put_message
    n, bound = 3000, 1024 + 8  # + what the sessions have in flight
    with Sink() as sink:
        d = Pickupd(relay=sink.port, start=False)
        d.write_config({}, sink.port)
        for i in range(n):
            put_message(d, "queue", ["r%d@example.net" % i])
        faults = harness.fault_shim(d)
        faults("fsync:DELAY:/spool/data\n")
        queue = os.path.join(d.spool, "queue")
        worst = 0
        with d:
            d.start()
            d.wait_ready()
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                sent = sink.messages()
                left = sum(len(f) for _r, _d, f in os.walk(queue))
                worst = max(worst, sent - (n - left))
                if left == 0:
                    break
                time.sleep(0.02)
            faults("")
            d.wait_spool_empty()
            assert sink.messages() == n, sink.counters()
            assert worst <= bound, "%d messages sent but not yet removed" % worst


def vm_hwm_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def test_100mib_message_flat_memory():
    size = 100 * 1024 * 1024
    with Sink() as sink:
        # ASan's quarantine keeps freed blocks resident (256 MiB by default):
        # keep it small so the figure measures pickupd, not the sanitizer.
        env = {"ASAN_OPTIONS": "detect_leaks=1:quarantine_size_mb=1:thread_local_quarantine_size_kb=64"} \
            if harness.SANITIZE else {}
        d = Pickupd(relay=sink.port, start=False, env=env)
        d.write_config({"pickup": {"max_message_size": "200M"}}, sink.port)
        with d:
            d.start()
            d.wait_ready()
            before = vm_hwm_kib(d.pid)
            line = b"x" * 75 + b"\n"
            path = os.path.join(d.pickup, ".big.tmp")
            with open(path, "wb") as f:
                f.write(b"From: a@example.org\nTo: bob@example.net\nSubject: big\n\n")
                block = line * 8192
                while f.tell() < size:
                    f.write(block)
            os.rename(path, os.path.join(d.pickup, "big.eml"))
            d.wait_log(status_re("sent", "bob@example.net"), timeout=120)
            after = vm_hwm_kib(d.pid)
            print("  VmHWM before %d KiB, after a 100 MiB message %d KiB" % (before, after))
            assert after - before < 16 * 1024, (before, after)


if __name__ == "__main__":
    harness.main(globals())
