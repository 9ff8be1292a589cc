"""Several relays and rate limits (issue 6): a relay that is down is paused
and traffic waits or moves to the next relay in order; a paused relay is
probed and takes the traffic back when it returns; `rate_limit` (messages per
minute per relay) is observed at the server."""

import re

import harness
from harness import Pickupd, SmtpServer, claim_qid, free_port, make_message, status_re

SENDER = "alice@example.org"


def relays_config(*relays, retry=None):
    """[relay NAME] sections in order, each (name, port, extra keys)."""
    cfg = {"relay test": None,
           "retry": dict({"schedule": "500ms", "jitter_percent": "0", "max_age": "1h"},
                         **(retry or {}))}
    for name, port, extra in relays:
        cfg["relay " + name] = dict({"host": "127.0.0.1", "port": str(port), "tls": "none"},
                                    **(extra or {}))
    return cfg


def paused_line(name):
    return r"\brelay %s: .*paused for [\d.]+ ?s\b" % re.escape(name)


def sent_port(d, rcpt):
    """The port of the relay that took rcpt (from its status=sent line)."""
    m = d.wait_log(status_re("sent", rcpt), timeout=30)
    return int(m[-1].group("port"))


def test_relay_down_then_up():
    port = free_port()
    d = Pickupd(relays_config(("only", port, None)), start=False)
    with d:
        d.start()
        d.wait_ready()
        d.drop("wait.eml", make_message(SENDER, ["bob@example.net"], "relay down",
                                        body="waited for the relay\n"))
        qid = claim_qid(d, "wait.eml")
        d.wait_log(paused_line("only"), timeout=20)
        # While the relay is down the message waits in the spool, deferred
        # with the reason, never bounced.
        line = d.wait_log(status_re("deferred", "bob@example.net"), timeout=20)[0]
        assert line.group("qid") == qid, line.group(0)
        assert not d.log_matches(status_re("bounced")), d.log_text()
        assert d.spool_files(["queue", "deferred"]), "message not in the spool"

        with SmtpServer(port=port) as srv:
            m = srv.wait_messages(1, timeout=30)[0]
            assert m.rcpt_tos == ["bob@example.net"], m
            assert m.body == b"waited for the relay\r\n", m.body
            sent = d.wait_log(status_re("sent", "bob@example.net"), timeout=20)[0]
            assert int(sent.group("port")) == port, sent.group(0)
            d.wait_spool_empty(timeout=20)
            assert len(srv.messages) == 1, srv.transactions
            d.stop()


def test_second_relay_while_first_down_then_back():
    port1 = free_port()
    srv1 = SmtpServer(port=port1)  # created down; started later on this port
    with SmtpServer() as srv2:
        d = Pickupd(relays_config(("first", port1, None), ("second", srv2.port, None)),
                    start=False)
        with d:
            d.start()
            d.wait_ready()
            # First relay down, second up: delivered through the second.
            d.drop("a.eml", make_message(SENDER, ["a@example.net"], "failover"))
            srv2.wait_messages(1, timeout=30)
            assert sent_port(d, "a@example.net") == srv2.port, d.log_text()
            d.wait_log(paused_line("first"), timeout=20)
            assert not d.log_matches(paused_line("second")), d.log_text()
            assert not d.log_matches(status_re("bounced")), d.log_text()

            # More traffic while the first is down keeps flowing to the second.
            d.drop("b.eml", make_message(SENDER, ["b@example.net"], "failover 2"))
            srv2.wait_messages(2, timeout=30)
            assert sent_port(d, "b@example.net") == srv2.port, d.log_text()

            # The first comes back: it is probed and takes the traffic again
            # (relays are used in order). Its pause backs off, so allow a few
            # messages to go through the second meanwhile; each is delivered.
            srv1.start()
            via_first = None
            for i in range(40):
                rcpt = "c%d@example.net" % i
                d.drop("c%d.eml" % i, make_message(SENDER, [rcpt], "probe %d" % i))
                p = sent_port(d, rcpt)
                assert p in (port1, srv2.port), p
                if p == port1:
                    via_first = i
                    break
                # Wait a little before the next message (bounded, no fixed sleep):
                # until this one is removed from the spool.
                d.wait_spool_empty(timeout=20)
            assert via_first is not None, "the first relay never resumed:\n" + d.log_tail()
            # From now on, the first relay (it is up) gets the messages.
            for i in range(3):
                rcpt = "d%d@example.net" % i
                d.drop("d%d.eml" % i, make_message(SENDER, [rcpt], "back %d" % i))
                assert sent_port(d, rcpt) == port1, d.log_tail()
            d.wait_spool_empty(timeout=20)
            got = srv1.rcpts_accepted() + srv2.rcpts_accepted()
            assert len(got) == len(set(got)), "duplicates: %r" % got
            assert len(got) == 2 + via_first + 1 + 3, got
            d.stop()
    srv1.stop()


def test_relay_rate_limit():
    """rate_limit = 6 per minute: a token every 10 s. Whatever the bucket size
    B (1 = evenly spaced, up to 6 = a full burst first), message k (from 0)
    cannot reach the server before (k - B + 1) * 10 s after the first, so
    with B <= 6: t[k] - t[0] >= (k - 5) * 10 s, and the third message of an
    evenly spaced limiter comes at 20 s. The test watches until either all 8
    arrived or 3 arrived spread over >= 19 s (about 20 s either way), checks
    the bound, then stops pickupd: those still waiting are in the spool.
    Only lower bounds on time are asserted (slowness cannot make it fail)."""
    n, rate = 8, 6
    interval = 60.0 / rate
    tol = 1.0
    rcpts = ["r%d@example.net" % i for i in range(n)]
    with SmtpServer() as srv:
        cfg = relays_config(("limited", srv.port, {"rate_limit": str(rate)}))
        with Pickupd(cfg) as d:
            for i, r in enumerate(rcpts):
                d.drop("r%d.eml" % i, make_message(SENDER, [r], "rate %d" % i))

            def watched():
                times = sorted(t.received for t in srv.messages)
                if len(times) == n or (len(times) >= 3 and
                                       times[2] - times[0] >= 2 * interval - tol):
                    return times
                return None
            times = harness.wait_for(watched, 40, what="8 messages, or 3 spread over 19 s")
            rel = [round(t - times[0], 2) for t in times]
            for k, t in enumerate(rel):
                assert t >= (k - rate + 1) * interval - tol, (
                    "message %d arrived %.2f s after the first: more than %d per minute; "
                    "arrivals: %r" % (k, t, rate, rel))
            assert not d.log_matches(status_re("bounced")), d.log_text()
            d.stop()
            # None lost: delivered once, or still waiting in the spool.
            got = srv.rcpts_accepted()
            assert len(got) == len(set(got)), "duplicates: %r" % got
            waiting = [r["addr"] for e in harness.envelopes(d, ["queue", "deferred"])
                       for r in e["rcpts"] if r["status"] != "sent"]
            assert sorted(got + waiting) == sorted(rcpts), (got, waiting)


if __name__ == "__main__":
    harness.main(globals(), test_timeout=60)
