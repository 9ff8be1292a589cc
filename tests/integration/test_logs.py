"""The log as operators and their tools read it.

- On stderr (no journald), every line is a syslog file line: RFC 3339 time, host,
  "pickupd[PID]" or "pickupd/SERVICE[PID]" for the lines about one message.
- Debian's pflogsumm (--syslog-name=pickupd) reads such a log and reports what
  happened: messages received, delivered, deferred (4xx), bounced (5xx), and the
  per-domain rows, from aiosmtpd with scripted replies across two domains.
- Under journald ($JOURNAL_STREAM names stderr's device and inode) each line is
  "<N>text": the sd-daemon priority, time and name left to journald; a
  $JOURNAL_STREAM naming some other file is ignored, as sd-daemon does.
([log] syslog = yes is test_logs_syslog.py.)
"""

import os
import re
import subprocess

import harness
from harness import LOG_HEADER_RE, Pickupd, SmtpServer, status_re

PFLOGSUMM = "/usr/sbin/pflogsumm"
SENDER = "app@shop.example"


def mail(to, subject):
    return ("From: <%s>\r\nTo: %s\r\nSubject: %s\r\n\r\nbody\r\n"
            % (SENDER, ", ".join("<%s>" % t for t in to), subject)).encode()


def pflogsumm(log):
    """pflogsumm's report on log (text), as Debian runs it on /var/log/mail.log."""
    p = subprocess.run([PFLOGSUMM, "--syslog-name=pickupd", "--problems-first"],
                       input=log.encode(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=120)
    assert p.returncode == 0, p.stderr.decode()
    return p.stdout.decode()


def grand_total(report, what):
    """A number of pflogsumm's "Grand Totals" block, e.g. ("received", "delivered")."""
    m = re.search(r"^\s*(\d+)\s+%s\b" % re.escape(what), report, re.M)
    assert m, "no %r in the report:\n%s" % (what, report)
    return int(m.group(1))


def domain_rows(report, title):
    """Rows of one "Per-Domain Traffic Summary" table: {domain: [sent count,
    bytes, defers, avg delay, max delay]} as the strings pflogsumm prints."""
    m = re.search(r"^%s *\n-+\n(.*?)\n\n" % re.escape(title), report, re.M | re.S)
    assert m, "no %r table in the report:\n%s" % (title, report)
    rows = {}
    for line in m.group(1).splitlines():
        f = line.split()
        if len(f) >= 2 and f[0].isdigit():  # not the column titles
            rows[f[-1]] = f[:-1]
    return rows


def test_pflogsumm_reports_a_run():
    # One relay, two recipient domains: one.example and two.example.
    with SmtpServer() as srv, Pickupd({"bounce": {"rate_limit": "0"}}, relay=srv) as d:
        d.drop("m1.eml", mail(["a@one.example", "b@two.example"], "both"))
        d.drop("m2.eml", mail(["c@two.example"], "one"))
        d.drop("m3.eml", mail(["defer451@one.example"], "later"))
        d.drop("m4.eml", mail(["fail550@two.example"], "never"))
        # The failure's notification goes back to the sender, also delivered.
        d.wait_log(status_re("sent"), count=4)
        d.wait_log(status_re("deferred", "defer451@one.example"))
        d.wait_log(status_re("bounced", "fail550@two.example"))
        d.wait_log(r"^pickupd: \S+: sender non-delivery notification: \S+$")
        d.wait_log(status_re("sent", SENDER))
        raw = d.raw_log_text()
        pid = d.pid

    lines = [l for l in raw.splitlines() if not l.startswith("=== harness")]
    assert lines
    services = {}
    for line in lines:
        m = LOG_HEADER_RE.match(line)
        assert m, "no time, host and program[pid]: %r" % line
        assert int(m.group("pid")) == pid, line
        services.setdefault(m.group("service"), []).append(line[m.end():])
    # Each line about a message comes from the service Postfix would name.
    assert all(re.match(r"\S+: uid=\d+, pickup=default, file=m\d\.eml, from=<", t)
               for t in services["pickup"]), services
    assert all(re.match(r"(\S+: from=<[^>]*>, size=\d+, nrcpt=\d+ \(queue active\)"
                        r"|\S+: removed|warning: \S+: moved to badmail: )", t)
               for t in services["qmgr"]), services
    assert all(re.match(r"\S+: to=<", t) for t in services["smtp"]), services
    assert all(re.match(r"\S+: sender non-delivery notification: \S+$", t)
               for t in services["bounce"]), services
    assert any(re.search(r"\bready\b", t) for t in services[None])
    # Postfix's smtp(8) fields: the delays add up to the delay, dsn= is the reply's.
    for m in re.finditer(harness.STATUS_RE, d.log_text(), re.M):
        parts = [float(x) for x in m.group("delays").split("/")]
        assert abs(sum(parts) - float(m.group("delay"))) <= 0.03, m.group(0)
        assert m.group("relay_name") == "test", m.group(0)
        want = {"sent": "2.", "deferred": "4.3.0", "bounced": "5.1.1"}[m.group("status")]
        assert m.group("dsn").startswith(want), m.group(0)

    report = pflogsumm(raw)
    assert grand_total(report, "received") == 4, report
    # Three recipients of writers' mail and the notification to the sender.
    assert grand_total(report, "delivered") == 4, report
    assert grand_total(report, "deferred") == 1, report
    assert grand_total(report, "bounced") == 1, report
    assert grand_total(report, "rejected") == 0, report
    rows = domain_rows(report, "Host/Domain Summary: Message Delivery")
    # columns: sent count, bytes, defers, avg delay, max delay
    assert sorted(rows) == ["one.example", "shop.example", "two.example"], rows
    assert rows["one.example"][0] == "1" and rows["one.example"][2] == "1", rows
    assert rows["two.example"][0] == "2" and rows["two.example"][2] == "0", rows
    assert rows["shop.example"][0] == "1", rows
    # columns: message count, bytes
    senders = domain_rows(report, "Host/Domain Summary: Messages Received")
    assert list(senders) == ["shop.example"] and senders["shop.example"][0] == "4", senders


def journal_run(d, journal_stream):
    """Starts d with $JOURNAL_STREAM, delivers one message and refuses an empty
    file; returns this run's raw log."""
    with open(d.logfile, "ab"):
        pass
    st = os.stat(d.logfile)
    d.env["JOURNAL_STREAM"] = journal_stream(st)
    d.start()
    d.drop("ok.eml", mail(["a@one.example"], "journal"))
    d.drop("empty.eml", b"")
    d.wait_log(r"\bto=<a@one\.example>, .*status=sent")
    d.wait_log(r"refused: .*; moved to badmail")
    d.stop()
    return d.raw_log_text()


def test_journal_stream_gets_priority_prefixes():
    with SmtpServer() as srv:
        d = Pickupd(relay=srv, start=False)
        raw = journal_run(d, lambda st: "%d:%d" % (st.st_dev, st.st_ino))
        lines = [l for l in raw.splitlines() if not l.startswith("=== harness")]
        # sd-daemon(3) levels; journald adds time, name and pid itself.
        for line in lines:
            assert re.match(r"^<[3467]>", line), line
            assert not LOG_HEADER_RE.match(line[3:]), line
        assert any(l.startswith("<6>ready ") for l in lines), lines
        assert any(re.match(r"<6>\S+: to=<a@one\.example>, relay=", l) for l in lines), lines
        assert any(re.match(r"<4>warning: \S+: pickup=default, file=empty\.eml, refused", l)
                   for l in lines), lines
        d.cleanup()


def test_journal_stream_of_another_file_is_ignored():
    with SmtpServer() as srv:
        d = Pickupd(relay=srv, start=False)
        # Inherited from a parent whose stderr journald read: not ours.
        raw = journal_run(d, lambda st: "%d:%d" % (st.st_dev, st.st_ino + 1))
        lines = [l for l in raw.splitlines() if not l.startswith("=== harness")]
        assert lines and all(LOG_HEADER_RE.match(l) for l in lines), lines
        d.cleanup()


if __name__ == "__main__":
    harness.main(globals())
