"""The Prometheus endpoint ([metrics] listen): scraped with urllib, its values
follow deliveries, refusals (5xx), deferrals, a paused relay and the spool's
state directories; wrong paths and methods get 404/405; nothing listens when
it is not configured."""

import os
import re
import socket
import urllib.error
import urllib.request

import harness
from harness import Pickupd, SmtpServer, status_re, wait_for


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def scrape(port, path="/metrics"):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
        assert r.status == 200, r.status
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers
        text = r.read().decode()
    values = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-z_]+(?:\{[^}]*\})?) (\S+)$", line)
        assert m, "not exposition format: %r" % line
        values[m.group(1)] = float(m.group(2))
    return values


def config(port):
    return {"metrics": {"listen": "127.0.0.1:%d" % port},
            "retry": {"schedule": "1h"}, "bounce": {"enabled": "no"}}


def msg(subject, to):
    return ("From: s@example.org\nTo: %s\nSubject: %s\n\nbody\n" % (to, subject)).encode()


def test_metrics_follow_deliveries():
    port = free_port()
    with SmtpServer() as srv, Pickupd(relay=srv, config=config(port)) as d:
        v = scrape(port)
        assert v["pickupd_up"] == 1, v
        for s in ("queue", "deferred", "hold", "badmail"):
            assert v['pickupd_queue_messages{state="%s"}' % s] == 0, v
        assert v["pickupd_delivered_total"] == 0 and v["pickupd_bounced_total"] == 0, v
        assert v['pickupd_relay_paused{relay="test"}'] == 0, v

        d.drop("a.eml", msg("a", "x@example.net, y@example.net"))
        d.drop("b.eml", msg("b", "z@example.net, fail550@example.net"))
        d.wait_log(status_re("sent"), count=3)
        d.wait_log(r": moved to badmail: ")
        wait_for(lambda: scrape(port)["pickupd_delivered_total"] == 3,
                 what="delivered_total == 3")
        v = scrape(port)
        assert v["pickupd_bounced_total"] == 1, v
        assert v['pickupd_queue_messages{state="badmail"}'] == 1, v
        assert v['pickupd_queue_messages{state="queue"}'] == 0, v
        assert v["pickupd_sessions_opened_total"] >= 1, v
        assert v["pickupd_sessions_open"] == v['pickupd_relay_sessions{relay="test"}'], v

        # Relay down: deferrals counted, the message counted in deferred/,
        # the relay shown paused.
        srv.stop()
        d.drop("c.eml", msg("c", "w@example.net"))
        d.wait_log(status_re("deferred", "w@example.net"))
        wait_for(lambda: scrape(port)['pickupd_queue_messages{state="deferred"}'] == 1,
                 what="one deferred message in the metrics")
        v = scrape(port)
        assert v["pickupd_deferred_total"] >= 1, v
        assert v["pickupd_queue_oldest_seconds"] >= 0, v
        # Paused for a second after the failure: either value may be seen.
        assert v['pickupd_relay_paused{relay="test"}'] in (0, 1), v

        # Wrong path and method.
        try:
            scrape(port, "/other")
            raise AssertionError("/other answered 200")
        except urllib.error.HTTPError as e:
            assert e.code == 404, e.code
        req = urllib.request.Request("http://127.0.0.1:%d/metrics" % port, data=b"x",
                                     method="POST")
        try:
            urllib.request.urlopen(req, timeout=10)
            raise AssertionError("POST answered 200")
        except urllib.error.HTTPError as e:
            assert e.code == 405, e.code

        # A client that never finishes its request does not block others.
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"GET /metrics HTTP/1.0\r\n")
        assert scrape(port)["pickupd_up"] == 1
        slow.close()


def test_metrics_off_and_bad_listen():
    port = free_port()
    with SmtpServer() as srv, Pickupd(relay=srv):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            raise AssertionError("something listens on %d without [metrics]" % port)
        except ConnectionRefusedError:
            pass
    # A port already taken: pickupd refuses to start, saying why.
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    d = Pickupd(relay=1, start=False,
                config={"metrics": {"listen": "127.0.0.1:%d" % taken.getsockname()[1]}})
    d.start()
    d.proc.wait(60 * harness.TIMEOUT_SCALE)
    assert d.proc.returncode != 0
    assert "[metrics] listen" in d.log_text(), d.log_text()
    taken.close()
    d.cleanup()


if __name__ == "__main__":
    harness.main(globals())
