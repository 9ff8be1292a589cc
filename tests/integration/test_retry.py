"""Retry with backoff (issue 6): a recipient answered 451 three times and then
250 is delivered exactly once, each attempt logged; the deferred envelope
between attempts records the attempt count and the server's words; and the
next attempt survives a restart (its time is on disk, not only in memory)."""

import time

import harness
from harness import (Pickupd, SmtpServer, claim_qid, envelopes, find_envelope, make_message,
                     status_re)

SENDER = "alice@example.org"
SLOW = "slow@example.net"   # 451 three times, then accepted
FAST = "fast@example.net"   # accepted at once
REPLY_451 = "451 4.3.0 mailbox busy, try later"


def scripted_rcpt(defers):
    """rcpt_faults callable: the first `defers` RCPTs of SLOW get a 451, the
    rest are accepted; every other address is accepted."""
    seen = {"n": 0}

    def fault(address):
        if address.lower() != SLOW:
            return None
        seen["n"] += 1
        return REPLY_451 if seen["n"] <= defers else None
    return fault


def retry_config(schedule, **retry):
    cfg = {"retry": dict({"schedule": schedule, "jitter_percent": "0", "max_age": "1h"},
                         **retry)}
    return cfg


def accepted_count(srv, rcpt):
    """How many accepted transactions carried rcpt."""
    return sum(1 for t in srv.messages for r in t.rcpt_tos if r.lower() == rcpt)


def test_451_three_times_then_250():
    # First step 2 s (time to look at the deferred envelope), then 1 s repeating.
    with SmtpServer(rcpt_faults=scripted_rcpt(3)) as srv, \
            Pickupd(retry_config("2s 1s"), relay=srv) as d:
        d.drop("retry.eml", make_message(SENDER, [SLOW, FAST], "retry me"))
        qid = claim_qid(d, "retry.eml")

        # First attempt: FAST delivered, SLOW deferred with the server's words.
        first = d.wait_log(status_re("deferred", SLOW), timeout=20)[0]
        assert first.group("qid") == qid, first.group(0)
        assert first.group("reply") == REPLY_451, first.group(0)
        d.wait_log(status_re("sent", FAST), timeout=20)

        # Between attempts: the envelope waits in deferred/ with the attempt
        # count and the reply; FAST is recorded as sent (never sent again).
        def deferred_env():
            e = find_envelope(d, "deferred", qid)
            return e if e and e.get("attempts") not in (None, "0") else None
        env = harness.wait_for(deferred_env, 20, what="the envelope of %s in deferred/" % qid)
        assert int(env["attempts"]) >= 1, env["text"]
        rc = {r["addr"].lower(): r for r in env["rcpts"]}
        assert rc[SLOW]["status"] == "deferred", env["text"]
        assert rc[SLOW]["reply"] == REPLY_451, env["text"]
        assert rc[FAST]["status"] == "sent", env["text"]
        assert int(env["next-attempt"]) > 0, env["text"]

        # Attempts 2 and 3 are deferred, attempt 4 delivers.
        d.wait_log(status_re("sent", SLOW), timeout=30)
        d.wait_log(r"\b%s: removed\b" % qid, timeout=20)
        d.wait_spool_empty(timeout=20)

        deferred = d.log_matches(status_re("deferred", SLOW))
        sent_slow = d.log_matches(status_re("sent", SLOW))
        sent_fast = d.log_matches(status_re("sent", FAST))
        assert len(deferred) == 3, [m.group(0) for m in deferred]
        assert len(sent_slow) == 1 and len(sent_fast) == 1, (
            [m.group(0) for m in sent_slow + sent_fast])
        assert all(m.group("qid") == qid for m in deferred + sent_slow + sent_fast)
        # The log says it in order: three deferrals, then the delivery.
        assert max(m.start() for m in deferred) < sent_slow[0].start(), d.log_text()
        # Exactly once at the server, each recipient.
        assert accepted_count(srv, SLOW) == 1, srv.transactions
        assert accepted_count(srv, FAST) == 1, srv.transactions
        assert [a for a, _ in srv.rcpt_log].count(FAST) == 1, srv.rcpt_log
        assert [a for a, _ in srv.rcpt_log].count(SLOW) == 4, srv.rcpt_log
        # Backoff: the retries were spaced by the schedule (2 s, 1 s, 1 s),
        # no busy retrying. Four attempts took at least ~4 s in all.
        assert len(srv.messages) == 2, srv.transactions  # FAST first, SLOW last
        gap = srv.messages[-1].received - srv.messages[0].received
        assert gap >= 4 - 0.5, "four attempts in %.2f s: the schedule was not honoured" % gap


def test_next_attempt_survives_restart():
    with SmtpServer(rcpt_faults=scripted_rcpt(1)) as srv:
        d = Pickupd(retry_config("4s"), relay=srv, start=False)
        with d:
            d.start()
            d.wait_ready()
            d.drop("restart.eml", make_message(SENDER, [SLOW], "across a restart",
                                               body="kept across a restart\n"))
            qid = claim_qid(d, "restart.eml")
            d.wait_log(status_re("deferred", SLOW), timeout=20)
            env = harness.wait_for(lambda: find_envelope(d, "deferred", qid), 20,
                                   what="the envelope of %s in deferred/" % qid)
            due = int(env["next-attempt"]) / 1000.0
            assert due > time.time() - 1, "next-attempt %r is not in the future" % env["text"]

            # Stop while deferred: graceful, and the message is still there.
            d.stop()
            assert find_envelope(d, "deferred", qid) is not None, (
                "deferred envelope lost on SIGTERM: %r" % envelopes(d, ["queue", "deferred"]))
            assert d.spool_files("data"), "content lost on SIGTERM"
            assert srv.messages == [], srv.transactions

            # Start again on the same spool: delivered at (not before) the
            # next-attempt time that was recorded, and only once.
            d.start()
            d.wait_ready()
            m = srv.wait_messages(1, timeout=30)[0]
            assert m.rcpt_tos == [SLOW] and m.body == b"kept across a restart\r\n", m
            assert m.received >= due - 0.3, (
                "delivered %.2f s before its next-attempt time" % (due - m.received))
            d.wait_log(status_re("sent", SLOW), timeout=20)
            d.wait_spool_empty(timeout=20)
            assert accepted_count(srv, SLOW) == 1, srv.transactions
            run2 = d.log_text()  # this run only: the message kept its queue ID
            assert qid in run2, run2


if __name__ == "__main__":
    harness.main(globals(), test_timeout=60)
