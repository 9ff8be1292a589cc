"""pickupctl against the real daemon and spool: status/list/show (--json) agree
with the spool files; hold/release/delete/requeue/flush/retry steer the running
daemon through its control socket (its schedule follows: a released message is
sent at once, a held one never) and work on the spool directly when the daemon
is down (including after kill -9, with a stale socket); a message in a
transaction is refused as busy, never pulled from under the session."""

import json
import os
import re

import harness
from harness import Pickupd, SmtpServer, status_re, wait_for

NO_BOUNCE = {"retry": {"schedule": "1h"}, "bounce": {"enabled": "no"}}


def msg(subject, to="rcpt@example.net", sender="sender@example.org"):
    return ("From: %s\nTo: %s\nSubject: %s\n\nbody of %s\n" % (sender, to, subject, subject)
            ).encode()


def down_server():
    """A server that is not running yet, on a port of its own."""
    srv = SmtpServer()
    srv.start()
    srv.stop()
    return srv


def ctl_json(d, *args, rc=0):
    p = d.pickupctl(*(list(args) + ["--json"]))
    assert p.returncode == rc, (args, p.returncode, p.stdout, p.stderr)
    return json.loads(p.stdout)


def ids_in(d, state):
    return sorted(os.path.basename(p) for p in d.spool_files(state))


def id_of(d, subject):
    """Queue ID of the message claimed with this subject (from the claim log)."""
    for m in d.log_matches(r"^(?:pickupd: )?([0-9A-F]{20}): uid=\d+, pickup=[^,]+, file=%s\.eml,"
                           % re.escape(subject)):
        return m.group(1)
    raise AssertionError("no claim line for %s:\n%s" % (subject, d.log_text()))


def subjects(srv):
    return sorted((m.header("Subject") or [""])[0] for m in srv.messages)


def test_inspect_running():
    """status, list and show with --json match the spool; text forms readable."""
    srv = down_server()
    with Pickupd(relay=srv, config=NO_BOUNCE) as d:
        d.drop("one.eml", msg("one", to="a@example.net, b@example.net"))
        d.drop("two.eml", msg("two"))
        d.wait_log(status_re("deferred"), count=3)
        wait_for(lambda: len(ids_in(d, "deferred")) == 2, what="2 deferred envelopes")

        st = ctl_json(d, "status")
        assert st["daemon"]["running"] is True, st
        assert st["daemon"]["pid"] == d.pid, (st, d.pid)
        assert st["counts"] == {"queue": 0, "deferred": 2, "hold": 0, "badmail": 0}, st
        assert st["oldest_id"] == id_of(d, "one"), st
        assert st["oldest_age_seconds"] >= 0, st
        reasons = st["deferred_reasons"]
        assert len(reasons) == 1 and reasons[0]["messages"] == 2, reasons
        assert "127.0.0.1" in reasons[0]["reply"], reasons
        assert [r["name"] for r in st["daemon"]["relays"]] == ["test"], st

        lst = ctl_json(d, "list")
        assert sorted(m["id"] for m in lst) == ids_in(d, "deferred"), (lst, ids_in(d, "deferred"))
        one = next(m for m in lst if m["id"] == id_of(d, "one"))
        assert one["state"] == "deferred" and one["sender"] == "sender@example.org", one
        assert [(r["address"], r["status"]) for r in one["recipients"]] == [
            ("a@example.net", "deferred"), ("b@example.net", "deferred")], one
        assert one["attempts"] == 1 and one["next_attempt"], one
        assert one["file"] == "one.eml" and one["last_reply"], one
        assert one["size"] == os.path.getsize(os.path.join(d.spool, "data", one["id"])), one
        assert ctl_json(d, "list", "--state", "hold") == []
        assert len(ctl_json(d, "list", "--state", "deferred")) == 2

        text = d.pickupctl("list")
        # A header, one line per message, and mailq's total.
        assert text.returncode == 0 and len(text.stdout.splitlines()) == 4, text.stdout
        assert id_of(d, "two") in text.stdout and "deferred" in text.stdout, text.stdout

        sh = ctl_json(d, "show", one["id"])
        assert sh["id"] == one["id"] and "Subject: one" in sh["headers"], sh
        shown = d.pickupctl("show", one["id"])
        assert "Subject: one" in shown.stdout and "<a@example.net> deferred" in shown.stdout, \
            shown.stdout

        st_text = d.pickupctl("status")
        assert "running" in st_text.stdout and re.search(r"^deferred\s+2$", st_text.stdout,
                                                         re.M), st_text.stdout
        # Errors: unknown ID, bad ID, bad state.
        assert d.pickupctl("show", "0" * 20).returncode == 1
        assert d.pickupctl("show", "not-an-id").returncode == 1
        assert d.pickupctl("list", "--state", "nowhere").returncode == 2
        assert d.pickupctl("frobnicate").returncode == 2


def test_steer_running():
    """hold/delete/retry/flush/release through the daemon: its schedule follows."""
    srv = down_server()
    with Pickupd(relay=srv, config=NO_BOUNCE) as d:
        for s in ("held", "deleted", "retried", "flushed"):
            d.drop(s + ".eml", msg(s))
        d.wait_log(status_re("deferred"), count=4)
        wait_for(lambda: len(ids_in(d, "deferred")) == 4, what="4 deferred envelopes")
        held, deleted, retried, flushed = (id_of(d, s) for s in
                                           ("held", "deleted", "retried", "flushed"))

        p = d.pickupctl("hold", held)
        assert p.returncode == 0 and "held" in p.stdout, (p.stdout, p.stderr)
        assert ids_in(d, "hold") == [held], ids_in(d, "hold")
        d.wait_log(r"\b%s: held by operator \(was in deferred\)" % held)
        # Wrong states are refused with a reason and exit 1.
        for args in (("retry", held), ("hold", held), ("requeue", held),
                     ("release", flushed), ("delete", "0" * 20)):
            p = d.pickupctl(*args)
            assert p.returncode == 1 and p.stderr, (args, p.returncode, p.stdout, p.stderr)

        p = d.pickupctl("delete", deleted)
        assert p.returncode == 0, (p.stdout, p.stderr)
        assert not os.path.exists(os.path.join(d.spool, "data", deleted))
        assert deleted not in ids_in(d, ["queue", "deferred", "hold", "badmail"])
        d.wait_log(r"\b%s: deleted by operator" % deleted)

        srv.start()
        # retry sends that one now (the schedule says 1h); the other waits.
        p = d.pickupctl("retry", retried)
        assert p.returncode == 0, (p.stdout, p.stderr)
        d.wait_log(r"\b%s: removed\b" % retried)
        assert subjects(srv) == ["retried"], subjects(srv)
        assert ids_in(d, "deferred") == [flushed], ids_in(d, "deferred")

        p = d.pickupctl("flush")
        assert p.returncode == 0 and "1 deferred" in p.stdout, (p.stdout, p.stderr)
        d.wait_log(r"\b%s: removed\b" % flushed)
        assert subjects(srv) == ["flushed", "retried"], subjects(srv)
        assert ids_in(d, "hold") == [held]

        p = d.pickupctl("release", held)
        assert p.returncode == 0, (p.stdout, p.stderr)
        d.wait_log(r"\b%s: removed\b" % held)
        d.wait_spool_empty()
        assert subjects(srv) == ["flushed", "held", "retried"], subjects(srv)
        assert not d.log_matches(r"\b%s: to=.*status=sent" % deleted), d.log_text()


def test_requeue_running():
    """A message failed for one recipient goes back to the queue; only the
    failed recipient is tried again. A file refused at pickup cannot be."""
    with SmtpServer() as srv, Pickupd(relay=srv, config=NO_BOUNCE) as d:
        d.drop("mixed.eml", msg("mixed", to="ok@example.net, fail550@example.net"))
        d.wait_log(r": moved to badmail: ")
        qid = id_of(d, "mixed")
        wait_for(lambda: ids_in(d, "badmail") == [qid], what="the message in badmail")
        shown = ctl_json(d, "show", qid)
        assert shown["state"] == "badmail" and shown["reason"], shown
        assert {r["address"]: r["status"] for r in shown["recipients"]} == {
            "ok@example.net": "sent", "fail550@example.net": "failed"}, shown

        srv.rcpt_faults.clear()  # the recipient exists now
        p = d.pickupctl("requeue", qid)
        assert p.returncode == 0, (p.stdout, p.stderr)
        d.wait_log(r"\b%s: removed\b" % qid)
        assert len(srv.messages) == 2, srv.messages
        assert srv.messages[1].rcpt_tos == ["fail550@example.net"], srv.messages[1].rcpt_tos

        d.drop("empty.eml", b"")
        d.wait_log(r"file=empty\.eml, refused")
        bad = ids_in(d, "badmail")
        assert len(bad) == 1, bad
        p = d.pickupctl("requeue", bad[0])
        assert p.returncode == 1 and "refused at pickup" in p.stderr, (p.stdout, p.stderr)
        assert ids_in(d, "badmail") == bad


def test_busy_in_transaction():
    """A message being sent right now is neither held nor deleted: busy, 75."""
    with SmtpServer(data_delay=4) as srv, Pickupd(relay=srv, config=NO_BOUNCE) as d:
        d.drop("slow.eml", msg("slow"))
        qid = None

        def in_flight():
            return srv.connections and ids_in(d, "queue")
        wait_for(in_flight, what="a transaction in progress")
        qid = ids_in(d, "queue")[0]
        p = d.pickupctl("hold", qid, "--wait", "0.5")
        assert p.returncode == 75 and "being sent" in p.stderr, (p.returncode, p.stdout,
                                                                 p.stderr)
        p = d.pickupctl("delete", qid, "--wait", "0")
        assert p.returncode == 75, (p.returncode, p.stdout, p.stderr)
        d.wait_log(r"\b%s: removed\b" % qid)
        assert len(srv.messages) == 1
        assert ids_in(d, "hold") == []


def test_daemon_down():
    """Read-only commands from the spool alone; steering on the spool directly;
    the daemon, started again, follows what was done."""
    srv = down_server()
    d = Pickupd(relay=srv, config=NO_BOUNCE)
    with d:
        for s in ("a", "b", "c", "e"):
            d.drop(s + ".eml", msg(s))
        d.wait_log(status_re("deferred"), count=4)
        wait_for(lambda: len(ids_in(d, "deferred")) == 4, what="4 deferred envelopes")
        a, b, c, e = (id_of(d, s) for s in "abce")
        d.stop()
        assert not os.path.exists(os.path.join(d.spool, "control.sock"))

        # Exit 3 (like systemctl's "not running"), with what the spool shows.
        st = ctl_json(d, "status", rc=3)
        assert st["daemon"] == {"running": False}, st
        assert st["counts"]["deferred"] == 4, st
        txt = d.pickupctl("status")
        assert "not running" in txt.stdout and txt.returncode == 3, txt.stdout
        assert len(ctl_json(d, "list")) == 4

        assert d.pickupctl("hold", a).returncode == 0
        assert d.pickupctl("delete", b).returncode == 0
        assert d.pickupctl("retry", c).returncode == 0
        assert ids_in(d, "hold") == [a] and ids_in(d, "queue") == [c], (
            ids_in(d, "hold"), ids_in(d, "queue"))
        assert not os.path.exists(os.path.join(d.spool, "data", b))
        assert d.pickupctl("release", a).returncode == 0
        assert d.pickupctl("hold", a).returncode == 0
        assert d.pickupctl("flush").returncode == 0
        assert sorted(ids_in(d, "queue")) == sorted([c, e]), ids_in(d, "queue")
        p = d.pickupctl("release", e)
        assert p.returncode == 1, (p.stdout, p.stderr)

        # A crash leaves the socket behind: still "not running", still steerable,
        # and the next daemon replaces the stale socket.
        srv.start()
        d.start()
        d.wait_ready()
        d.wait_log(r"\b%s: removed\b" % e)
        d.wait_log(r"\b%s: removed\b" % c)
        assert subjects(srv) == ["c", "e"], subjects(srv)
        d.kill9()
        assert os.path.exists(os.path.join(d.spool, "control.sock"))
        assert ctl_json(d, "status", rc=3)["daemon"] == {"running": False}
        assert d.pickupctl("release", a).returncode == 0
        d.start()
        d.wait_ready()
        d.wait_log(r"removed stale control socket")
        d.wait_log(r"\b%s: removed\b" % a)
        d.wait_spool_empty()
        assert subjects(srv) == ["a", "c", "e"], subjects(srv)
    srv.stop()


def test_second_daemon_refused():
    """A second pickupd on the same spool does not start (spool lock, socket)."""
    with SmtpServer() as srv, Pickupd(relay=srv) as d:
        other = Pickupd(relay=srv, start=False)
        other.conf = d.conf
        other.start()
        other.proc.wait(60 * harness.TIMEOUT_SCALE)
        assert other.proc.returncode != 0
        assert "locked by another process" in other.log_text(), other.log_text()
        assert ctl_json(d, "status")["daemon"]["running"] is True
        other.cleanup()


if __name__ == "__main__":
    harness.main(globals())
