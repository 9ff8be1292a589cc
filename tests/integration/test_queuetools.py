"""pickupctl's queue tools at postsuper's level (issue 12 items 4 and 5), on the
real daemon and spool: hold/release/delete/requeue/retry over several IDs, ALL,
ALL STATE and IDs on stdin, 10,000 deferred messages in one command through the
daemon and on the spool directly; each ID's result and the exit status; list's
filters, header and total; summary's domain x age table; --json on every
command (jansson; invalid UTF-8 replaced by U+FFFD); status's exit 3 and stuck
pickup files (also as metrics); operator actions taken while the daemon was
down reach the daemon's log at its next start; [badmail] keep expires old
badmail at start-up and on its timer, purge removes them now, and the metrics
count badmail entries and bytes."""

import json
import os
import re
import socket
import subprocess
import time
import urllib.request

import harness
from harness import Pickupd, SmtpServer, wait_for

NO_BOUNCE = {"retry": {"schedule": "1h"}, "bounce": {"enabled": "no"}}
HOUR_MS = 3600 * 1000


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def scrape(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
        return r.read().decode()


def metric(text, name, labels=""):
    m = re.search(r"^%s%s (\S+)$" % (re.escape(name), re.escape(labels)), text, re.M)
    return float(m.group(1)) if m else None


def ctl_json(d, *args, rc=0, input=None):
    p = d.pickupctl(*(list(args) + ["--json"]), input=input)
    assert p.returncode == rc, (args, p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    return json.loads(p.stdout)


def ids_in(d, state):
    return sorted(os.path.basename(p) for p in d.spool_files(state))


def down_server():
    srv = SmtpServer()
    srv.start()
    srv.stop()
    return srv


_seq = [0]


def new_id(arrival_ms):
    _seq[0] += 1
    return "%012X%08X" % (arrival_ms & 0xFFFFFFFFFFFF, 0xF0000000 + _seq[0])


def put_message(d, state, rcpts, arrival_ms=None, next_ms=0, reason=None, body=b"",
                file_name="x.eml"):
    """Writes one message into the spool as the daemon would have left it
    (envelope format 1, content in data/), with the daemon stopped. The
    envelope's mtime holds its next attempt, as spool_env_write leaves it."""
    now = int(time.time() * 1000)
    arrival_ms = arrival_ms or now
    qid = new_id(arrival_ms)
    content = (b"From: s@example.org\nTo: %s\nSubject: %s\n\nbody\n"
               % (rcpts[0].encode(), qid.encode())) + body
    os.makedirs(os.path.join(d.spool, "data"), exist_ok=True)
    os.makedirs(os.path.join(d.spool, state), exist_ok=True)
    with open(os.path.join(d.spool, "data", qid), "wb") as f:
        f.write(content)
    status = "failed" if state == "badmail" else "deferred" if state == "deferred" else "pending"
    lines = ["pickupd-envelope 1", "id " + qid, "arrival %d" % arrival_ms,
             "next-attempt %d" % next_ms, "attempts 1", "size %d" % len(content),
             "pickup default", "file " + file_name, "dot-stuffed no", "body 7bit",
             "smtputf8 no", "sender <s@example.org>"]
    for r in rcpts:
        lines.append("rcpt %s <%s>" % (status, r))
        if status != "pending":
            lines.append("reply 451 4.3.0 try later")
    if reason:
        lines.append("reason " + reason)
    lines.append("end")
    path = os.path.join(d.spool, state, qid)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    if next_ms:
        os.utime(path, ns=(next_ms * 1000000, next_ms * 1000000))
    return qid


def populate(d, n, state="deferred"):
    """n messages in a state, due in an hour (the schedule leaves them alone)."""
    due = int(time.time() * 1000) + HOUR_MS
    return [put_message(d, state, ["r%d@example.net" % i], next_ms=due if state == "deferred"
                        else 0) for i in range(n)]


def test_many_ids_through_daemon():
    """10,000 deferred messages held, then deleted with IDs from stdin, each
    in one command (one round trip), through the running daemon, whose
    schedule and log follow; several IDs with one unknown: that one fails,
    the others are done, exit 1."""
    srv = down_server()
    d = Pickupd(relay=srv, config=NO_BOUNCE, start=False)
    with d:
        ids = populate(d, 10000)
        d.start()
        d.wait_ready()
        t0 = time.monotonic()
        doc = ctl_json(d, "hold", "ALL", "deferred")
        took = time.monotonic() - t0
        assert doc["command"] == "hold" and doc["via"] == "daemon", {
            k: v for k, v in doc.items() if k != "results"}
        assert (doc["ok"], doc["failed"], doc["busy"]) == (10000, 0, 0), doc["ok"]
        assert sorted(r["id"] for r in doc["results"]) == sorted(ids)
        assert all(r["result"] == "ok" and r["message"].endswith(" held")
                   for r in doc["results"])
        assert len(ids_in(d, "hold")) == 10000 and not ids_in(d, "deferred")
        assert took < 60 * harness.TIMEOUT_SCALE, took
        print("  hold ALL deferred, 10,000 messages: %.1f s" % took)
        d.wait_log(r"\b%s: held by operator \(was in deferred\)" % ids[-1])

        # Several IDs, one of them unknown: each reported, exit 1.
        unknown = "0" * 20
        p = d.pickupctl("release", ids[0], ids[1], unknown, "not-an-id")
        assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
        assert "%s released" % ids[0] in p.stdout and "%s released" % ids[1] in p.stdout
        assert "no message %s" % unknown in p.stderr and "not a queue ID" in p.stderr, p.stderr
        assert "2 of 4 message(s): released; 2 failed, 0 busy" in p.stdout, p.stdout
        d.wait_log(r"\b%s: released by operator; scheduled now" % ids[1])

        # delete - : IDs on stdin, as `list` prints them (header and total skipped).
        listing = d.pickupctl("list", "--state", "hold")
        assert listing.returncode == 0
        assert listing.stdout.splitlines()[-1].startswith("-- "), listing.stdout[-200:]
        t0 = time.monotonic()
        p = d.pickupctl("delete", "-", input=listing.stdout)
        took = time.monotonic() - t0
        assert p.returncode == 0, (p.returncode, p.stdout[-500:], p.stderr[-500:])
        assert "9998 of 9998 message(s): deleted" in p.stdout, p.stdout[-300:]
        assert len(p.stdout.splitlines()) == 9999
        assert took < 60 * harness.TIMEOUT_SCALE, took
        print("  delete - (9,998 IDs on stdin): %.1f s" % took)
        assert not ids_in(d, "hold")
        assert len(harness.walk_files(os.path.join(d.spool, "data"))) == 2
        d.wait_log(r"\b%s: deleted by operator \(was in hold\)" % ids[-1])
        assert len(d.log_matches(r": deleted by operator \(was in hold\)")) == 9998
        # The two released ones are the daemon's again: tried, deferred.
        wait_for(lambda: sorted(ids_in(d, "deferred")) == sorted(ids[:2]),
                 what="the released messages deferred again")


def test_many_ids_on_the_spool():
    """Daemon down: delete ALL deferred of 10,000 on the spool directly; every
    action reaches the daemon's log at its next start, once."""
    srv = down_server()
    d = Pickupd(relay=srv, config=NO_BOUNCE, start=False)
    with d:
        ids = populate(d, 10000)
        held = populate(d, 3, state="hold")
        t0 = time.monotonic()
        p = d.pickupctl("delete", "ALL", "deferred")
        took = time.monotonic() - t0
        assert p.returncode == 0, (p.returncode, p.stdout[-500:], p.stderr[-500:])
        assert "10000 of 10000 message(s): deleted" in p.stdout, p.stdout[-300:]
        assert took < 60 * harness.TIMEOUT_SCALE, took
        print("  delete ALL deferred on the spool, 10,000 messages: %.1f s" % took)
        assert not ids_in(d, "deferred")
        assert sorted(ids_in(d, "data")) == sorted(held)

        doc = ctl_json(d, "release", held[0], held[1])
        assert doc["via"] == "spool" and doc["ok"] == 2, doc
        record = os.path.join(d.spool, "operator-actions")
        with open(record) as f:
            lines = f.read().splitlines()
        assert len(lines) == 10002, len(lines)
        assert re.match(r"^%s: deleted \(was in deferred\) by operator while pickupd was not "
                        r"running \(pickupctl at \S+Z, uid \d+ \(\S+\)\)$" % ids[0],
                        lines[0]), lines[0]

        d.start()
        d.wait_ready()
        d.wait_log(r"^pickupd: %s: released \(was in hold\) by operator while pickupd was not "
                   r"running" % held[1])
        assert len(d.log_matches(r": deleted \(was in deferred\) by operator while pickupd "
                                 r"was not running")) == 10000
        assert not os.path.exists(record)
        d.stop()
        d.start()
        d.wait_ready()
        assert not d.log_matches(r"while pickupd was not running"), "logged twice"


def test_list_filters_and_summary():
    """list --state/--older-than/--to with mailq's header and total; summary's
    table of recipient domain x age (qshape's buckets), per state or all."""
    srv = down_server()
    d = Pickupd(relay=srv, config=NO_BOUNCE, start=False)
    with d:
        now = int(time.time() * 1000)
        due = now + HOUR_MS
        fresh = put_message(d, "deferred", ["a@Example.NET", "b@example.net"], next_ms=due)
        hour = put_message(d, "deferred", ["c@other.org"], arrival_ms=now - 61 * 60000,
                           next_ms=due)
        day = put_message(d, "hold", ["d@example.net", "e@other.org"],
                          arrival_ms=now - 2 * 24 * HOUR_MS)
        d.start()
        d.wait_ready()

        p = d.pickupctl("list")
        lines = p.stdout.splitlines()
        assert p.returncode == 0 and lines[0].startswith("-Queue ID-"), p.stdout
        size = sum(os.path.getsize(os.path.join(d.spool, "data", q)) for q in (fresh, hour, day))
        assert lines[-1] == "-- %d Kbytes in 3 Requests." % ((size + 1023) // 1024), lines[-1]
        # By state, then by ID (arrival).
        assert [ln.split()[0] for ln in lines[1:-1]] == [hour, fresh, day], lines

        sel = lambda *a: [m["id"] for m in ctl_json(d, "list", *a)]
        assert sel("--to", "example.net") == [fresh, day]
        assert sel("--to", "OTHER.org", "--state", "deferred") == [hour]
        assert sel("--older-than", "1h") == [hour, day]
        assert sel("--older-than", "1d", "--to", "other.org") == [day]
        p = d.pickupctl("list", "--to", "nowhere.example")
        assert p.stdout.splitlines()[-1].startswith("-- 0 Kbytes in 0 Requests"), p.stdout

        sm = ctl_json(d, "summary")
        assert sm["bucket_minutes"] == [5, 10, 20, 40, 80, 160, 320, 640, 1280], sm
        assert sm["total"]["total"] == 3
        assert sm["total"]["buckets"] == [1, 0, 0, 0, 1, 0, 0, 0, 0, 1], sm["total"]
        rows = {r["domain"]: (r["total"], r["buckets"]) for r in sm["domains"]}
        # Counted once per message per domain, domains without case.
        assert rows == {"example.net": (2, [1, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
                        "other.org": (2, [0, 0, 0, 0, 1, 0, 0, 0, 0, 1])}, rows
        sm = ctl_json(d, "summary", "--state", "deferred")
        assert sm["state"] == "deferred" and sm["total"]["total"] == 2, sm
        text = d.pickupctl("summary").stdout.splitlines()
        assert text[0].split() == ["T", "5", "10", "20", "40", "80", "160", "320", "640",
                                   "1280", "1280+"], text
        assert text[1].split() == ["TOTAL", "3", "1", "0", "0", "0", "1", "0", "0", "0", "0",
                                   "1"], text
        assert {t.split()[0] for t in text[2:]} == {"example.net", "other.org"}, text


def test_json_every_command():
    """--json on every command, the mutating ones included, one document each;
    bytes that are not UTF-8 (a file name) come out as U+FFFD."""
    srv = down_server()
    port = free_port()
    cfg = dict(NO_BOUNCE, metrics={"listen": "127.0.0.1:%d" % port})
    with Pickupd(relay=srv, config=cfg) as d:
        d.drop("bad\xff.eml".encode("latin-1").decode("utf-8", "surrogateescape"),
               b"From: s@example.org\nTo: r@example.net\nSubject: x\n\nbody\n")
        d.drop("empty.eml", b"")
        d.wait_log(r"refused: empty file")
        wait_for(lambda: len(ids_in(d, "deferred")) == 1, what="one deferred")
        qid = ids_in(d, "deferred")[0]
        bad = ids_in(d, "badmail")[0]
        lst = ctl_json(d, "list", "--state", "deferred")
        assert lst[0]["file"] == "bad\ufffd.eml", lst[0]
        assert ctl_json(d, "show", qid)["file"] == "bad\ufffd.eml"

        assert ctl_json(d, "status")["daemon"]["running"] is True
        assert ctl_json(d, "summary")["total"]["total"] == 2
        doc = ctl_json(d, "retry", qid)
        assert doc["command"] == "retry" and doc["ok"] == 1, doc
        doc = ctl_json(d, "hold", qid)
        assert doc["results"] == [{"id": qid, "result": "ok", "message": qid + " held"}], doc
        doc = ctl_json(d, "release", qid)
        assert doc["ok"] == 1, doc
        wait_for(lambda: ids_in(d, "deferred") == [qid], what="deferred again")
        doc = ctl_json(d, "flush")
        assert doc["command"] == "flush" and doc["result"] == "ok" and doc["messages"] == 1, doc
        doc = ctl_json(d, "requeue", bad, rc=1)
        assert doc["failed"] == 1 and "refused at pickup" in doc["results"][0]["message"], doc
        doc = ctl_json(d, "delete", "0" * 20, rc=1)
        assert doc["results"][0] == {"id": "0" * 20, "result": "error",
                                     "message": "no message " + "0" * 20}, doc
        doc = ctl_json(d, "purge", "--older-than", "0")
        assert doc["command"] == "purge" and doc["ok"] == 1 and doc["bytes"] == 0, doc
        assert doc["older_than_seconds"] == 0, doc
        p = d.pickupctl("test-relay", "--json")
        doc = json.loads(p.stdout)
        assert doc["command"] == "test-relay" and doc["ok"] is False, doc
        assert doc["exit_status"] == p.returncode != 0 and doc["transcript"], doc
        wait_for(lambda: ids_in(d, "deferred") == [qid], what="deferred again")
        doc = ctl_json(d, "delete", "ALL")
        assert doc["ok"] == 1 and not d.spool_files(["data"]), doc


def test_status_and_stuck_files():
    """status exits 3 when the daemon is not running (still showing the
    spool), 0 when it is; files that stay in the pickup folder show in status
    and in the metrics, by reason."""
    srv = down_server()
    port = free_port()
    cfg = dict(NO_BOUNCE, metrics={"listen": "127.0.0.1:%d" % port})
    with Pickupd(relay=srv, config=cfg) as d:
        st = ctl_json(d, "status")
        assert st["pickup_stuck"][0]["files"] == 0, st
        d.drop("notes.txt", b"not a message")
        old = time.time() - 3600
        # A writer that never lets go (a leaked .NET handle): locked, old.
        f = d.open_inplace("locked.eml", lock=True)
        f.write(b"From: s@example.org\nTo: r@example.net\n\nbody\n")
        os.utime(os.path.join(d.pickup, "locked.eml"), (old, old))
        d.drop(".half.eml.tmp", b"a writer died")
        os.utime(os.path.join(d.pickup, ".half.eml.tmp"), (old, old))
        d.drop(".fresh.tmp", b"a writer at work")
        try:
            def stuck():
                r = ctl_json(d, "status")["pickup_stuck"][0]
                return r if r["files"] == 3 else None
            r = wait_for(stuck, what="3 stuck files")
            assert sorted(r["reasons"]["unmatched"]["examples"]) == [".half.eml.tmp",
                                                                      "notes.txt"], r
            assert r["reasons"]["old"] == {"count": 1, "examples": ["locked.eml"]}, r
            text = d.pickupctl("status")
            assert text.returncode == 0, text
            assert re.search(r"^pickup default: 3 file\(s\) stay in .*: 2 unmatched \(.*\); "
                             r"1 old \(locked\.eml\)$", text.stdout, re.M), text.stdout
            m = scrape(port)
            lbl = '{pickup="default",reason="%s"}'
            assert metric(m, "pickupd_pickup_stuck_files", lbl % "unmatched") == 2, m
            assert metric(m, "pickupd_pickup_stuck_files", lbl % "old") == 1, m
            assert metric(m, "pickupd_pickup_stuck_files", lbl % "unreadable") == 0, m
        finally:
            f.close()
        d.wait_log(r"file=locked\.eml,")
        d.stop()

        # Unreadable for pickupd's user (root reads everything: pickupctl
        # takes the spool owner's identity, so give the spool to nobody).
        d.drop("secret.eml", b"From: s@example.org\nTo: r@example.net\n\nbody\n", mode=0o000)
        os.chmod(d.dir, 0o755)
        for dirpath, dirs, files in os.walk(d.spool):
            for n in dirs + files + [""]:
                os.chown(os.path.join(dirpath, n), 65534, 65534)
        p = d.pickupctl("status")
        assert p.returncode == 3, (p.returncode, p.stdout, p.stderr)
        assert "not running" in p.stdout and re.search(r"^badmail\s+0$", p.stdout, re.M), p.stdout
        assert re.search(r"1 unreadable \(secret\.eml\)", p.stdout), p.stdout
        st = ctl_json(d, "status", rc=3)
        assert st["daemon"]["running"] is False
        assert st["pickup_stuck"][0]["reasons"]["unreadable"]["count"] == 1, st


def test_badmail_retention():
    """Metrics count badmail entries and bytes; purge removes the old ones now
    (content included); [badmail] keep expires them at start-up and on its
    timer."""
    srv = down_server()
    port = free_port()
    cfg = {"badmail": {"keep": "0"}, "metrics": {"listen": "127.0.0.1:%d" % port}}
    d = Pickupd(relay=srv, config=dict(NO_BOUNCE, **cfg))
    with d:
        d.drop("one.eml", b"")
        d.drop("two.eml", b"\x00\x01binary" * 100)
        wait_for(lambda: len(ids_in(d, "badmail")) == 2, what="2 in badmail")
        m = scrape(port)
        assert metric(m, "pickupd_badmail_entries") == 2, m
        assert metric(m, "pickupd_badmail_bytes") == 800, m
        assert metric(m, "pickupd_badmail_expired_total") == 0, m

        p = d.pickupctl("purge")
        assert p.returncode == 2 and "keep = 0" in p.stderr, (p.returncode, p.stderr)
        p = d.pickupctl("purge", "--older-than", "1h")
        assert p.returncode == 0 and "no badmail entry is older" in p.stdout, p.stdout
        assert len(ids_in(d, "badmail")) == 2
        wait_for(lambda: time.time() - os.stat(os.path.join(
            d.spool, "badmail", ids_in(d, "badmail")[0])).st_ctime > 1.5, what="2 s")
        doc = ctl_json(d, "purge", "--older-than", "1s")
        assert doc["ok"] == 2 and doc["bytes"] == 800 and doc["via"] == "daemon", doc
        assert not ids_in(d, "badmail") and not d.spool_files(["data"])
        d.wait_log(r": deleted by operator \(was in badmail, purge\)", count=2)
        m = scrape(port)
        assert metric(m, "pickupd_badmail_entries") == 0, m

        # Entries older than keep go at start-up...
        d.drop("three.eml", b"")
        wait_for(lambda: len(ids_in(d, "badmail")) == 1, what="1 in badmail")
        gone = ids_in(d, "badmail")[0]
        d.stop()
        wait_for(lambda: time.time() - os.stat(os.path.join(d.spool, "badmail", gone)
                                               ).st_ctime > 2.5, what="the entry 2.5 s old")
        d.write_config(dict(NO_BOUNCE, badmail={"keep": "2s"},
                            metrics={"listen": "127.0.0.1:%d" % port}), srv.port)
        d.start()
        d.wait_log(r"^pickupd: %s: removed from badmail, content included: older than "
                   r"\[badmail\] keep = 2s$" % gone)
        assert not ids_in(d, "badmail") and not d.spool_files(["data"])
        # ... and on the timer while it runs.
        d.drop("four.eml", b"")
        wait_for(lambda: len(ids_in(d, "badmail")) == 1, what="1 in badmail")
        later = ids_in(d, "badmail")[0]
        d.wait_log(r"\b%s: removed from badmail" % later, timeout=30)
        assert not d.spool_files(["data"])
        # One at start-up, one on the timer, since this start.
        assert metric(scrape(port), "pickupd_badmail_expired_total") == 2


if __name__ == "__main__":
    harness.main(globals())
