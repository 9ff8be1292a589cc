#!/usr/bin/python3
"""Where a single message's latency goes, with compare's own pickupd and
smtp-sink set-up (run by hand, never by ctest; as root for smtp-sink's -u):

    /usr/bin/python3 tests/bench/latency_split.py [BUILD_DIR] [--n N]

N (default 80) single 2 KiB messages on a warm session, one at a time, as
compare's latency row sends them. For each: rename -> the "pickup" log line
(the ingest job is over: claimed, durable, envelope written), -> the "queue
active" line (the transaction may already be under way: a lone file is
offered before its claim is durable), -> the sink's count of its final dot.
Prints the medians. Log times are the daemon's wall clock, the rest the
bench's: the split is good to a few tens of microseconds.
"""

import datetime
import importlib.machinery
import importlib.util
import os
import re
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
args = sys.argv[1:]
n = 80
if "--n" in args:
    i = args.index("--n")
    n = int(args[i + 1])
    del args[i:i + 2]
loader = importlib.machinery.SourceFileLoader("compare", os.path.join(HERE, "compare"))
spec = importlib.util.spec_from_loader("compare", loader)
C = importlib.util.module_from_spec(spec)
loader.exec_module(C)
if args:
    C.BIN_DIR = os.path.abspath(args[0])


def wall(stamp):
    return datetime.datetime.fromisoformat(stamp).timestamp()


def main():
    root = tempfile.mkdtemp(prefix="pickupd-latency-")
    p = C.Pickupd(root)
    sink = C.Sink().start()
    rows = []
    try:
        C.session(p, sink)
        for i in range(n + 5):  # the first 5 warm the session up
            c = sink.count()
            tmp, final = p.prepare(C.message(100000 + i, C.KIB2))
            tw, t0 = time.time(), time.monotonic()
            os.rename(tmp, final)
            t1 = sink.wait_count(c + 1, 60, p.alive)
            C.wait_until(p.queue_empty, 60, "the queue to empty", 0.002)
            if i >= 5:
                rows.append((os.path.basename(final), tw, tw + (t1 - t0)))
    finally:
        C.halt(p)
        sink.stop()
        C.REG.cleanup()
    log = open(p.logfile).read()
    picked, active = {}, {}
    for m in re.finditer(r"^(\S+) \S+ pickupd/pickup\[\d+\]: (\w+): .*?file=(\S+?),", log, re.M):
        picked[m.group(3)] = (m.group(2), wall(m.group(1)))
    for m in re.finditer(r"^(\S+) \S+ pickupd/qmgr\[\d+\]: (\w+): from=.*queue active", log,
                         re.M):
        active[m.group(2)] = wall(m.group(1))
    a, b, c = [], [], []
    for name, tw, tend in rows:
        if name in picked and picked[name][0] in active:
            qid, tp = picked[name]
            a.append((tp - tw) * 1000)
            b.append((active[qid] - tp) * 1000)
            c.append((tend - active[qid]) * 1000)
    if not a:
        raise SystemExit("latency_split: no message matched its log lines")
    med = statistics.median
    print("latency_split: %d messages, medians: rename -> ingest done %.2f ms, -> queue "
          "active %.2f ms, -> final dot at the sink %.2f ms; total %.2f ms"
          % (len(a), med(a), med(b), med(c), med([x + y + z for x, y, z in zip(a, b, c)])))


if __name__ == "__main__":
    main()
