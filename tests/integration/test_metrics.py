"""The Prometheus endpoint ([metrics] listen): scraped with urllib, its values
follow deliveries, refusals (5xx), deferrals, a paused relay and the spool's
state directories; notifications to senders (DSNs) are counted apart from
writers' mail; a session that fails TLS is counted by class; wrong paths and
methods get 404/405; nothing listens when it is not configured. Every metric
that the shipped Grafana dashboard and Prometheus alert rules use is served."""

import json
import os
import re
import socket
import urllib.error
import urllib.request

import yaml

import harness
from harness import Pickupd, SmtpServer, status_re, wait_for

SRC = os.environ.get("PICKUPD_SRC_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
DASHBOARD = os.path.join(SRC, "config", "grafana", "pickupd.json")
ALERTS = os.path.join(SRC, "config", "prometheus", "pickupd-alerts.yml")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def scrape_text(port, path="/metrics"):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
        assert r.status == 200, r.status
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers
        return r.read().decode()


def scrape(port, path="/metrics"):
    text = scrape_text(port, path)
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
        assert v["pickupd_recipients_delivered_total"] == 0, v
        assert v["pickupd_recipients_bounced_total"] == 0, v
        assert v['pickupd_relay_paused{relay="test"}'] == 0, v

        d.drop("a.eml", msg("a", "x@example.net, y@example.net"))
        d.drop("b.eml", msg("b", "z@example.net, fail550@example.net"))
        d.wait_log(status_re("sent"), count=3)
        d.wait_log(r": moved to badmail: ")
        wait_for(lambda: scrape(port)["pickupd_recipients_delivered_total"] == 3,
                 what="recipients_delivered_total == 3")
        v = scrape(port)
        assert v["pickupd_recipients_bounced_total"] == 1, v
        assert v["pickupd_messages_received_total"] == 2, v
        assert v["pickupd_sent_bytes_total"] > 0, v
        # Each delivered recipient's delay, in the histogram's buckets.
        assert v["pickupd_delivery_delay_seconds_count"] == 3, v
        assert v['pickupd_delivery_delay_seconds_bucket{le="+Inf"}'] == 3, v
        assert v['pickupd_delivery_delay_seconds_bucket{le="30"}'] == 3, v
        assert 0 < v["pickupd_delivery_delay_seconds_sum"] < 90, v
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
        assert v["pickupd_recipients_deferred_total"] >= 1, v
        assert v["pickupd_queue_oldest_message_age_seconds"] >= 0, v
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


def test_notifications_counted_apart():
    """A 5xx makes a failure notice to the sender: delivered on its own
    counters, not as writers' mail."""
    port = free_port()
    conf = dict(config(port), bounce={"enabled": "yes", "rate_limit": "0"})
    with SmtpServer() as srv, Pickupd(relay=srv, config=conf) as d:
        d.drop("a.eml", msg("a", "x@example.net, fail550@example.net"))
        d.wait_log(status_re("sent", "s@example.org"))
        wait_for(lambda: scrape(port)["pickupd_dsn_sent_total"] == 1, what="dsn_sent_total == 1")
        v = scrape(port)
        assert v["pickupd_recipients_delivered_total"] == 1, v
        assert v["pickupd_recipients_bounced_total"] == 1, v
        assert v['pickupd_dsn_created_total{type="failure"}'] == 1, v
        assert v['pickupd_dsn_created_total{type="delay"}'] == 0, v
        assert v["pickupd_dsn_failed_total"] == 0 and v["pickupd_dsn_deferred_total"] == 0, v
        assert v["pickupd_delivery_delay_seconds_count"] == 1, v


def test_session_failures_by_class():
    """A relay without the STARTTLS it must offer: counted as a tls failure."""
    port = free_port()
    conf = dict(config(port))
    conf["relay test"] = {"tls": "starttls"}
    with SmtpServer() as srv, Pickupd(relay=srv, config=conf) as d:
        d.drop("a.eml", msg("a", "x@example.net"))
        d.wait_log(status_re("deferred", "x@example.net"))
        key = 'pickupd_relay_session_failures_total{relay="test",class="%s"}'
        wait_for(lambda: scrape(port)[key % "tls"] >= 1, what="one tls failure counted")
        v = scrape(port)
        for c in ("connection", "protocol", "auth", "temporary", "permanent"):
            assert v[key % c] == 0, (c, v)
        assert v['pickupd_relay_paused{relay="test"}'] in (0, 1), v


def names_used(expr):
    """The pickupd metric names a PromQL expression reads."""
    return set(re.findall(r"\b(pickupd_[a-z0-9_]+)\b", expr))


def test_dashboard_and_alerts_use_served_metrics():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dash["templating"]["list"]
              if isinstance(v.get("query"), dict)]
    with open(ALERTS) as f:
        rules = yaml.safe_load(f)
    alerts = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    exprs += alerts.values()
    # What the issue asks the rules to watch.
    for want in ("PickupdQueueGrowing", "PickupdOldestMessageOld", "PickupdRelayPaused",
                 "PickupdRelayTLSFailures", "PickupdRelayAuthFailures"):
        assert want in alerts, sorted(alerts)
    used = set().union(*(names_used(e) for e in exprs))
    assert len(used) >= 15, sorted(used)

    port = free_port()
    with SmtpServer() as srv, Pickupd(relay=srv, config=config(port)):
        text = scrape_text(port)
    served = set(re.findall(r"^(pickupd_[a-z0-9_]+)[{ ]", text, re.M))
    assert used <= served, "used but not served: %s" % sorted(used - served)
    # Prometheus conventions: counters end in _total, histograms have a unit.
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        assert (kind == "counter") == name.endswith("_total"), (name, kind)
        if kind == "histogram":
            assert name.endswith("_seconds") or name.endswith("_bytes"), name


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
