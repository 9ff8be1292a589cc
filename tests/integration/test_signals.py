"""Signals (issue 6): SIGTERM is graceful (the transaction in flight is
finished, exit 0, nothing lost, deferred messages stay on disk); SIGHUP
reloads the configuration (an invalid one is refused with FILE:LINE errors
and the running one kept; a valid one sends new messages to the new relay,
and applies a kept folder's [pickup] keys to the files taken after it)."""

import os
import re
import signal

import harness
from harness import (Pickupd, SmtpServer, claim_qid, envelopes, free_port, make_message,
                     status_re)

SENDER = "alice@example.org"


def retry(schedule="500ms"):
    return {"schedule": schedule, "jitter_percent": "0", "max_age": "1h"}


def test_sigterm_waits_for_transaction_in_flight():
    with SmtpServer(data_delay=2) as srv, \
            Pickupd({"retry": retry()}, relay=srv) as d:
        d.drop("slow.eml", make_message(SENDER, ["bob@example.net"], "slow data",
                                        body="finished after SIGTERM\n"))
        qid = claim_qid(d, "slow.eml")
        # RCPT accepted: the DATA phase (2 s at the server) is under way.
        harness.wait_for(lambda: srv.rcpt_log, 20, what="the RCPT at the server")
        d.signal(signal.SIGTERM)
        # A file dropped after SIGTERM is not lost either way: claimed (and
        # then queued or delivered) or left in the pickup folder.
        d.drop("late.eml", make_message(SENDER, ["late@example.net"], "after SIGTERM"))
        status = d.stop(timeout=30)  # waits for the exit; asserts 0, no sanitizer report
        assert status == 0

        assert [t.rcpt_tos for t in srv.messages].count(["bob@example.net"]) == 1, \
            srv.transactions
        m = [t for t in srv.messages if t.rcpt_tos == ["bob@example.net"]][0]
        assert m.body == b"finished after SIGTERM\r\n", m.body
        sent = d.log_matches(status_re("sent", "bob@example.net"))
        assert len(sent) == 1 and sent[0].group("qid") == qid, d.log_text()
        assert d.log_matches(r"\b%s: removed\b" % re.escape(qid)), d.log_text()
        assert not d.log_matches(r"may be delivered twice"), d.log_text()
        # Nothing of slow.eml left; late.eml somewhere (delivered, spool, pickup).
        left = [e for e in envelopes(d, ["queue", "deferred"])]
        assert all(e.get("id") != qid for e in left), left
        late_delivered = any(t.rcpt_tos == ["late@example.net"] for t in srv.messages)
        late_queued = any("<late@example.net>" in e["text"] for e in left)
        late_waiting = "late.eml" in d.pickup_files()
        assert late_delivered or late_queued or late_waiting, (
            "late.eml lost: pickup %r, spool %r" % (d.pickup_files(), left))
        if not late_queued:
            assert not d.spool_files(["queue", "deferred", "data"]), d.spool_files(
                ["queue", "deferred", "data"])


def test_sigterm_keeps_deferred_queue():
    n = 5
    rcpts = ["defer451+%d@example.net" % i for i in range(n)]
    with SmtpServer() as srv:
        d = Pickupd({"retry": retry("2s")}, relay=srv, start=False)
        with d:
            d.start()
            d.wait_ready()
            qids = []
            for i, r in enumerate(rcpts):
                d.drop("q%d.eml" % i, make_message(SENDER, [r], "queued %d" % i,
                                                   body="message %d\n" % i))
                qids.append(claim_qid(d, "q%d.eml" % i))
            d.wait_log(status_re("deferred"), count=n, timeout=20)
            status = d.stop(timeout=30)
            assert status == 0
            # Nothing lost: every envelope is on disk (deferred, or queue if
            # it was due again at the moment of the stop) with its content.
            env = {e.get("id"): e for e in envelopes(d, ["queue", "deferred"])}
            assert sorted(env) == sorted(qids), (sorted(env), qids)
            data = {os.path.basename(p) for p in d.spool_files("data")}
            assert set(qids) <= data, (qids, data)
            for q in qids:
                assert env[q]["rcpts"][0]["status"] == "deferred", env[q]["text"]
            assert srv.messages == [], srv.transactions

            # Started again with the server accepting now: all delivered once.
            srv.rcpt_faults = {}
            d.start()
            d.wait_ready()
            srv.wait_messages(n, timeout=30)
            d.wait_spool_empty(timeout=30)
            got = srv.rcpts_accepted()
            assert sorted(got) == sorted(rcpts), got


def test_sighup_invalid_config_is_refused():
    with SmtpServer() as srv, Pickupd({"retry": retry()}, relay=srv) as d:
        d.drop("before.eml", make_message(SENDER, ["one@example.net"], "before"))
        srv.wait_messages(1, timeout=20)
        good = d.config_text
        bad = good.replace("[retry]\n", "[retry]\nno_such_key = 1\n", 1)
        assert bad != good, good
        line = bad.splitlines().index("no_such_key = 1") + 1
        with open(d.conf, "w") as f:
            f.write(bad)
        d.signal(signal.SIGHUP)
        d.wait_log(r"%s:%d: .*no_such_key" % (re.escape(os.path.basename(d.conf)), line),
                   timeout=20)
        # Still running with the old configuration: still delivers.
        d.drop("after.eml", make_message(SENDER, ["two@example.net"], "after"))
        m = srv.wait_messages(2, timeout=20)[1]
        assert m.rcpt_tos == ["two@example.net"], m
        d.wait_log(status_re("sent", "two@example.net"), timeout=20)
        d.wait_spool_empty(timeout=20)
        assert d.running


def reload(d, config, port=None):
    """Writes a new config, sends SIGHUP, waits for a new log line about the
    reload (any line that says "reload"), and fails on a refusal."""
    before = len(d.log_matches(r"(?i)reload"))
    d.write_config(config, port)
    d.signal(signal.SIGHUP)
    lines = d.wait_log(r"(?i)reload", count=before + 1, timeout=20)
    new = [m.group(0) for m in lines[before:]]
    refused = d.log_matches(r"(?i)reload.*(refused|invalid|error)")
    assert not refused, "reload refused: %r" % [m.group(0) for m in refused]
    return new


def test_sighup_changes_relay_port():
    with SmtpServer() as srv1, SmtpServer() as srv2:
        d = Pickupd({"retry": retry()}, relay=srv1)
        with d:
            d.drop("one.eml", make_message(SENDER, ["one@example.net"], "to the old relay"))
            srv1.wait_messages(1, timeout=20)
            d.wait_log(status_re("sent", "one@example.net"), timeout=20)
            # Same relay name, new port: new messages go to the new server.
            reload(d, {"retry": retry()}, srv2.port)
            d.drop("two.eml", make_message(SENDER, ["two@example.net"], "to the new relay"))
            # (The old relay's idle session must not carry it: it was opened
            # with the old settings.)
            try:
                m = srv2.wait_messages(1, timeout=15)[0]
            except harness.WaitTimeout as e:
                raise AssertionError("%s\nold server got: %r\nlog:\n%s" % (
                    e, srv1.rcpts_accepted(), d.log_tail(8))) from None
            assert m.rcpt_tos == ["two@example.net"], m
            sent = d.wait_log(status_re("sent", "two@example.net"), timeout=20)[0]
            assert int(sent.group("port")) == srv2.port, sent.group(0)
            assert srv1.rcpts_accepted() == ["one@example.net"], srv1.transactions
            d.wait_spool_empty(timeout=20)


def test_sighup_adds_second_relay():
    down = free_port()
    with SmtpServer() as srv2:
        first = {"relay test": None, "retry": retry(),
                 "relay first": {"host": "127.0.0.1", "port": str(down), "tls": "none"}}
        d = Pickupd(first)
        with d:
            # Only relay (down): the message waits.
            d.drop("wait.eml", make_message(SENDER, ["wait@example.net"], "waiting"))
            d.wait_log(status_re("deferred", "wait@example.net"), timeout=20)
            # Reload with a second relay that is up: the waiting message and
            # new ones go through it.
            second = dict(first)
            second["relay second"] = {"host": "127.0.0.1", "port": str(srv2.port),
                                      "tls": "none"}
            reload(d, second)
            d.drop("new.eml", make_message(SENDER, ["new@example.net"], "after reload"))
            srv2.wait_messages(2, timeout=30)
            for r in ("wait@example.net", "new@example.net"):
                sent = d.wait_log(status_re("sent", r), timeout=20)[0]
                assert int(sent.group("port")) == srv2.port, sent.group(0)
            assert sorted(srv2.rcpts_accepted()) == ["new@example.net", "wait@example.net"]
            d.wait_spool_empty(timeout=20)


def test_sighup_applies_pickup_settings():
    """A reload with the same folders applies their other keys: a lower
    max_message_size refuses the next file (it used to keep the start-up one,
    silently); moving a folder still takes a restart, and says so."""
    with SmtpServer() as srv:
        d = Pickupd({"retry": retry()}, relay=srv)
        with d:
            big = make_message(SENDER, ["big@example.net"], "x" * 3000)
            d.drop("one.eml", big)
            d.wait_log(status_re("sent", "big@example.net"), timeout=20)
            reload(d, {"retry": retry(), "pickup": {"max_message_size": "2K"}}, srv.port)
            d.drop("two.eml", big)
            d.wait_log(r"file=two\.eml, refused: message of \d+ bytes is over max_message_size "
                       r"\(2048\)", timeout=20)
            assert len(srv.messages) == 1, srv.messages
            moved = os.path.join(d.dir, "elsewhere")
            os.mkdir(moved)
            reload(d, {"retry": retry(), "pickup": {"dir": moved}}, srv.port)
            d.wait_log(r"reload: \[pickup\] folders added, removed or moved take effect at "
                       r"the next restart")


def test_sigio_from_a_broken_lease_is_ignored():
    """Each claim takes and drops a read lease to see whether a writer still
    has the file open; a writer opening it in those microseconds breaks the
    lease, and the kernel sends SIGIO, whose default action ends the process.
    pickupd ignores it: after a first claim, a SIGIO leaves it running, and
    the next file is delivered."""
    with SmtpServer() as srv, Pickupd(relay=srv) as d:
        d.drop("first.eml", make_message(SENDER, ["bob@example.net"], "first"))
        srv.wait_messages(1)
        d.signal(signal.SIGIO)
        d.drop("second.eml", make_message(SENDER, ["bob@example.net"], "second"))
        srv.wait_messages(2)
        assert d.proc.poll() is None
        assert d.stop(timeout=30) == 0


if __name__ == "__main__":
    harness.main(globals(), test_timeout=60)
