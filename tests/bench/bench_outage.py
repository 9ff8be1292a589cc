#!/usr/bin/python3
"""Scale under an outage (issue 6 item 6), run by hand, never by ctest.

    /usr/bin/python3 tests/bench/bench_outage.py [--messages N] [--outage S]
                                                 [--drain S] [--dir DIR]

1. Fills a spool with N queued messages (build/bench_spool populate: half in
   queue/, half in deferred/ due in an hour).
2. Starts pickupd against a relay that is down (a closed port) and prints the
   time to "ready", then, after --outage seconds, its RSS (VmRSS, VmHWM) and
   the CPU it used in the second half of the outage (idle means ~0 s).
3. Snapshots the schedule order (queue/ first, deferred/ by mtime = next
   attempt, ties by queue ID), brings the relay up (Postfix smtp-sink on the
   same port, max_sessions = 1) and reports, for the messages delivered within
   --drain seconds, the drain rate and how many went ahead of a message due
   earlier that was still waiting (due-time order means 0). Messages still in
   queue/ at the snapshot whose attempt while the relay was down ended
   deferred are not due any more: they leave the order.
"""
import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("PICKUPD_BIN_DIR", os.path.join(SRC, "build"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def proc_status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) / 1024.0
    return out


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def snapshot(spool):
    """The order the scheduler should send in ({id: rank} by (due, id)), and
    the IDs then in queue/."""
    order = []
    queued = set()
    for state in ("queue", "deferred"):
        d = os.path.join(spool, state)
        with os.scandir(d) as it:
            for e in it:
                due = 0 if state == "queue" else int(e.stat().st_mtime * 1000)
                order.append((due, e.name))
                if state == "queue":
                    queued.add(e.name)
    order.sort()
    return {qid: i for i, (_, qid) in enumerate(order)}, queued


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1000000)
    ap.add_argument("--outage", type=float, default=60)
    ap.add_argument("--drain", type=float, default=60)
    ap.add_argument("--dir", default="/tmp/pickupd-bench-outage")
    a = ap.parse_args()

    spool = os.path.join(a.dir, "spool")
    marker = os.path.join(a.dir, "populated-%d" % a.messages)
    if not os.path.exists(marker):
        shutil.rmtree(a.dir, ignore_errors=True)
        os.makedirs(a.dir)
        t = time.time()
        subprocess.check_call([os.path.join(BIN, "bench_spool"), "populate", spool,
                               str(a.messages)])
        open(marker, "w").close()
        print("populate: %d messages in %.1f s" % (a.messages, time.time() - t))
    work = tempfile.mkdtemp(prefix="outage-")
    pickup = os.path.join(work, "pickup")
    os.makedirs(pickup)
    port = free_port()
    conf = os.path.join(work, "pickupd.conf")
    with open(conf, "w") as f:
        f.write("[spool]\ndir = %s\n[pickup]\ndir = %s\n"
                "[relay down]\nhost = 127.0.0.1\nport = %d\ntls = none\nmax_sessions = 1\n"
                "max_messages_per_session = 1000000\n"
                "[retry]\nschedule = 1m\nmax_age = 365d\nsoft_bounce = yes\n[bounce]\nenabled = no\n"
                % (spool, pickup, port))
    log = os.path.join(work, "pickupd.log")
    t0 = time.time()
    p = subprocess.Popen([os.path.join(BIN, "pickupd"), "-c", conf],
                         stderr=open(log, "w"), stdout=subprocess.DEVNULL)
    sink = None
    try:
        while "ready" not in open(log).read():
            if p.poll() is not None or time.time() - t0 > 600:
                sys.exit("pickupd did not start: " + open(log).read()[-2000:])
            time.sleep(0.05)
        print("start-up with %d queued: %.2f s to ready" % (a.messages, time.time() - t0))
        time.sleep(a.outage / 2)
        c0 = cpu_seconds(p.pid)
        time.sleep(a.outage / 2)
        c1 = cpu_seconds(p.pid)
        st = proc_status(p.pid)
        deferrals = len(re.findall(r"status=deferred", open(log).read()))
        print("relay down %.0f s: VmRSS %.1f MiB, VmHWM %.1f MiB, CPU in the last %.0f s: "
              "%.2f s, deferrals recorded: %d"
              % (a.outage, st["VmRSS"], st["VmHWM"], a.outage / 2, c1 - c0, deferrals))

        rank, queued = snapshot(spool)
        logpos = os.path.getsize(log)
        sink = subprocess.Popen(["/usr/sbin/smtp-sink", "-c", "-u", "nobody",
                                 "127.0.0.1:%d" % port, "1000"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t1 = time.time()
        time.sleep(a.drain)
        with open(log) as f:
            f.seek(logpos)
            text = f.read()
        sent = re.findall(r" pickupd/smtp\[\d+\]: ([0-9A-F]{20}): to=<[^>]*>, .*status=sent", text,
                          re.M)
        seen, ids = set(), []
        for q in sent:
            if q not in seen:
                seen.add(q)
                ids.append(q)
        # Attempts made while the relay was down whose deferral was not yet
        # on disk at the snapshot (the message still in queue/, its log line
        # before or after the snapshot) are due an attempt interval later:
        # they leave the order (they were counted "ahead" before).
        with open(log) as f:
            late = set(re.findall(r" pickupd/smtp\[\d+\]: ([0-9A-F]{20}): to=<[^>]*>, "
                                  r".*status=deferred", f.read(), re.M))
        late = (late & queued) - seen
        order = sorted((r, q) for q, r in rank.items() if q not in late)
        rank = {q: i for i, (_, q) in enumerate(order)}
        print("in queue/ at the snapshot, deferred by an attempt made while the relay was "
              "down (left out of the order): %d" % len(late))
        ranks = [rank[q] for q in ids if q in rank]
        # Outcomes are logged from 8 pool threads, so log order jitters a
        # little; due-time order means the delivered set is a prefix of the
        # snapshot order: nothing went while a message due earlier waited.
        k = len(ranks)
        ahead = sum(1 for r in ranks if r >= k)
        shift = max((abs(i - r) for i, r in enumerate(ranks)), default=0)
        st = proc_status(p.pid)
        print("relay up %.0f s: %d messages delivered (%.0f msg/s); delivered ahead of a message "
              "due earlier: %d; largest log-order shift: %d; VmHWM %.1f MiB"
              % (time.time() - t1, len(ids), len(ids) / (time.time() - t1), ahead, shift,
                 st["VmHWM"]))
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(120)
        except subprocess.TimeoutExpired:
            p.kill()
        if sink:
            sink.terminate()
            sink.wait()
        print("pickupd exit status %s; log %s" % (p.returncode, log))
        os.unlink(marker)  # the drain changed the spool: populate afresh next time


if __name__ == "__main__":
    main()
