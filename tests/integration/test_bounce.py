"""Bounces and the failure policy (issue 6): 5xx fails only the recipients it
names, a refused DATA fails the recipients of that transaction, expiry
bounces; a bounce is an RFC 3464 multipart/report from <> to the envelope
sender with the server's words and the original headers (not the body);
`temporary_reply` and `soft_bounce` turn failures into deferrals; a message
from <> (a bounce among them) is never bounced; delay warnings are sent once;
bounces are rate limited and none is lost.

The bounces go to the same aiosmtpd server as everything else: the original
sender is just another recipient there, so a bounce is an accepted
transaction whose MAIL FROM is empty."""

import re

import harness
from harness import (Dsn, Pickupd, SmtpServer, bounces, claim_qid, envelopes, find_envelope,
                     make_message, status_re)

HOSTNAME = "mta.test"
SENDER = "alice@example.org"
OK = "ok@example.net"
BAD = "fail550@example.net"
REPLY_550 = "550 5.1.1 no such user"  # harness.DEFAULT_RCPT_FAULTS["fail550"]
BODY_MARK = "body-marker-7f3a91 that must not be in a bounce"


def config(retry=None, bounce=None):
    return {"general": {"hostname": HOSTNAME},
            "retry": dict({"schedule": "500ms", "jitter_percent": "0", "max_age": "1h"},
                          **(retry or {})),
            "bounce": dict({"enabled": "yes"}, **(bounce or {}))}


def notification_line(qid, kind="non-delivery"):
    return r"\b%s: sender %s notification: (?P<bid>[0-9A-Za-z._-]+)" % (re.escape(qid), kind)


def badmail_env(d, qid):
    return harness.wait_for(lambda: find_envelope(d, "badmail", qid), 20,
                            what="the envelope of %s in badmail/" % qid)


def check_dsn_common(t, sender, subject):
    """The shape every bounce shares (RFC 3464 / RFC 6522)."""
    assert t.mail_from in ("", "<>"), t
    assert [r.lower() for r in t.rcpt_tos] == [sender.lower()], t.rcpt_tos
    dsn = Dsn(t)
    assert dsn.content_type == "multipart/report", (dsn.content_type, t.headers)
    assert dsn.report_type == "delivery-status", t.headers
    assert dsn.parts[:1] == ["text/plain"], dsn.parts
    assert "message/delivery-status" in dsn.parts, dsn.parts
    assert dsn.parts[-1] == "text/rfc822-headers", dsn.parts
    rm = dsn.per_message.get("reporting-mta", "")
    assert re.fullmatch(r"dns;\s*%s" % re.escape(HOSTNAME), rm, re.I), dsn.per_message
    # The original headers, not the body.
    assert "Subject: %s" % subject in dsn.headers_part, dsn.headers_part
    assert BODY_MARK not in t.data.decode("utf-8", "replace"), t.data
    assert t.header("To") and sender.lower() in t.header("To")[0].lower(), t.header("To")
    return dsn


def check_failed_rcpt(dsn, addr, reply, status):
    b = dsn.recipient(addr)
    assert b is not None, "no Final-Recipient for %s in %r" % (addr, dsn.recipients)
    assert re.fullmatch(r"rfc822;\s*<?%s>?" % re.escape(addr), b["final-recipient"], re.I), b
    assert b.get("action", "").lower() == "failed", b
    assert b.get("status") == status, b
    diag = b.get("diagnostic-code", "")
    assert re.fullmatch(r"smtp;\s*%s" % re.escape(reply), diag), b
    assert addr in dsn.text and reply in dsn.text, dsn.text


def test_550_for_one_of_two():
    subject = "one of two refused"
    with SmtpServer() as srv, Pickupd(config(), relay=srv) as d:
        d.drop("two.eml", make_message(SENDER, [OK, BAD], subject, BODY_MARK + "\n"))
        qid = claim_qid(d, "two.eml")
        d.wait_log(status_re("sent", OK), timeout=20)
        line = d.wait_log(status_re("bounced", BAD), timeout=20)[0]
        assert line.group("reply") == REPLY_550, line.group(0)
        bid = d.wait_log(notification_line(qid), timeout=20)[0].group("bid")
        d.wait_log(r"\b%s: moved to badmail: " % re.escape(qid), timeout=20)

        b = harness.wait_for(lambda: bounces(srv), 30, what="a bounce at the server")
        dsn = check_dsn_common(b[0], SENDER, subject)
        assert dsn.final_recipients() == [BAD], dsn.recipients  # not OK: it was delivered
        check_failed_rcpt(dsn, BAD, REPLY_550, "5.1.1")
        d.wait_log(r"\b%s: removed\b" % re.escape(bid), timeout=20)

        # The original reached OK once, and stays in badmail with its reason.
        originals = [t for t in srv.messages if t.mail_from == SENDER]
        assert len(originals) == 1 and originals[0].rcpt_tos == [OK], srv.transactions
        env = badmail_env(d, qid)
        rc = {r["addr"]: r for r in env["rcpts"]}
        assert rc[BAD]["status"] == "failed" and rc[BAD]["reply"] == REPLY_550, env["text"]
        assert rc[OK]["status"] == "sent", env["text"]
        assert env.get("reason"), env["text"]
        assert any(p.endswith(qid) for p in d.spool_files("data")), "content of %s gone" % qid
        assert len(bounces(srv)) == 1, bounces(srv)


def test_554_on_data_bounces_all():
    subject = "refused at data"
    reply = "554 5.7.1 message refused as spam"

    def data_reply(n, envelope):
        return reply if envelope.mail_from not in ("", "<>") else None
    rcpts = [OK, "second@example.net"]
    with SmtpServer(data_reply=data_reply) as srv, Pickupd(config(), relay=srv) as d:
        d.drop("data.eml", make_message(SENDER, rcpts, subject, BODY_MARK + "\n"))
        qid = claim_qid(d, "data.eml")
        lines = d.wait_log(status_re("bounced"), count=2, timeout=20)
        assert sorted(m.group("rcpt") for m in lines) == sorted(rcpts), [
            m.group(0) for m in lines]
        assert all(m.group("reply") == reply for m in lines), [m.group(0) for m in lines]
        d.wait_log(notification_line(qid), timeout=20)
        b = harness.wait_for(lambda: bounces(srv), 30, what="a bounce at the server")[0]
        dsn = check_dsn_common(b, SENDER, subject)
        assert sorted(dsn.final_recipients()) == sorted(rcpts), dsn.recipients
        for r in rcpts:
            check_failed_rcpt(dsn, r, reply, "5.7.1")

        env = badmail_env(d, qid)
        assert reply in env.get("reason", ""), env["text"]
        assert all(r["status"] == "failed" and r["reply"] == reply for r in env["rcpts"]), \
            env["text"]
        assert not [t for t in srv.messages if t.mail_from == SENDER], srv.transactions


def test_expiry_bounces():
    subject = "never accepted"
    rcpt = "defer451@example.net"
    with SmtpServer() as srv, \
            Pickupd(config(retry={"max_age": "2s"}), relay=srv) as d:
        d.drop("old.eml", make_message(SENDER, [rcpt], subject, BODY_MARK + "\n"))
        qid = claim_qid(d, "old.eml")
        d.wait_log(status_re("deferred", rcpt), timeout=20)
        line = d.wait_log(status_re("bounced", rcpt), timeout=30)[0]
        assert "expired" in line.group("reply").lower(), line.group(0)
        d.wait_log(notification_line(qid), timeout=20)
        env = badmail_env(d, qid)
        assert "expired" in env.get("reason", "").lower(), env["text"]
        b = harness.wait_for(lambda: bounces(srv), 30, what="a bounce at the server")[0]
        dsn = check_dsn_common(b, SENDER, subject)
        assert dsn.final_recipients() == [rcpt], dsn.recipients
        blk = dsn.recipient(rcpt)
        assert blk.get("action", "").lower() == "failed", blk
        assert re.fullmatch(r"[45]\.\d{1,3}\.\d{1,3}", blk.get("status", "")), blk
        assert not srv.messages[:-1] or all(t.mail_from in ("", "<>") for t in srv.messages)


def test_temporary_reply_override():
    """`temporary_reply = 554 DT:SPM`: 163.com's "come back later" 554 defers."""
    reply = "554 DT:SPM 163 smtp10,DsCowAC; please try again later"
    state = {"refused": 0}

    def data_reply(n, envelope):
        if envelope.mail_from in ("", "<>"):
            return None
        if state["refused"] < 2:
            state["refused"] += 1
            return reply
        return None
    with SmtpServer(data_reply=data_reply) as srv, \
            Pickupd(config(retry={"temporary_reply": ["451 4.7.1 greylisted", "554 DT:SPM"]}),
                    relay=srv) as d:
        d.drop("spm.eml", make_message(SENDER, [OK], "dt spm"))
        qid = claim_qid(d, "spm.eml")
        lines = d.wait_log(status_re("deferred", OK), count=2, timeout=20)
        assert all(m.group("reply") == reply for m in lines), [m.group(0) for m in lines]
        d.wait_log(status_re("sent", OK), timeout=20)
        d.wait_log(r"\b%s: removed\b" % re.escape(qid), timeout=20)
        d.wait_spool_empty(timeout=20)
        assert not d.log_matches(status_re("bounced")), d.log_text()
        assert not d.log_matches(r"notification:"), d.log_text()
        assert bounces(srv) == [], bounces(srv)
        assert d.spool_files("badmail") == [], d.spool_files("badmail")
        assert len([t for t in srv.messages if t.mail_from == SENDER]) == 1, srv.transactions


def test_soft_bounce_defers():
    with SmtpServer() as srv, \
            Pickupd(config(retry={"soft_bounce": "yes"}), relay=srv) as d:
        d.drop("soft.eml", make_message(SENDER, [BAD, OK], "soft bounce"))
        qid = claim_qid(d, "soft.eml")
        lines = d.wait_log(status_re("deferred", BAD), count=3, timeout=20)
        assert all(m.group("reply") == REPLY_550 for m in lines), [m.group(0) for m in lines]
        assert len(d.log_matches(status_re("sent", OK))) == 1, d.log_text()

        def deferred_env():
            e = find_envelope(d, "deferred", qid)
            return e if e and e["rcpts"] else None
        env = harness.wait_for(deferred_env, 20, what="%s in deferred/" % qid)
        rc = {r["addr"]: r for r in env["rcpts"]}
        assert rc[BAD]["status"] == "deferred" and rc[BAD]["reply"] == REPLY_550, env["text"]
        assert not d.log_matches(status_re("bounced")), d.log_text()
        assert not d.log_matches(r"notification:|moved to badmail"), d.log_text()
        assert bounces(srv) == [], bounces(srv)
        assert d.spool_files("badmail") == [], d.spool_files("badmail")


def test_null_sender_never_bounced():
    """A message from <> that fails goes to badmail only; so does a bounce
    that fails (a bounce is never bounced)."""
    with SmtpServer() as srv, Pickupd(config(), relay=srv) as d:
        # 1. X-Sender: <> refused: badmail, no notification.
        d.drop("null.eml", make_message("", [BAD], "from the null sender", x_sender=True))
        nq = claim_qid(d, "null.eml")
        d.wait_log(status_re("bounced", BAD), timeout=20)
        d.wait_log(r"\b%s: moved to badmail: " % re.escape(nq), timeout=20)
        env = badmail_env(d, nq)
        assert env.get("sender") == "<>", env["text"]

        # 2. A bounce to a sender that refuses it: the bounce goes to badmail.
        sender = "fail550+sender@example.org"  # refused too (local part fail550)
        d.drop("loop.eml", make_message(sender, [BAD], "bounce loop"))
        q = claim_qid(d, "loop.eml")
        bid = d.wait_log(notification_line(q), timeout=20)[0].group("bid")
        d.wait_log(status_re("bounced", sender), timeout=20)
        d.wait_log(r"\b%s: moved to badmail: " % re.escape(bid), timeout=20)
        benv = badmail_env(d, bid)
        assert benv.get("sender") == "<>", benv["text"]

        # 3. A sender that accepts: its bounce is delivered, and it is the only
        # bounce: the messages from <> above made none.
        d.drop("last.eml", make_message(SENDER, [BAD], "ordinary"))
        lq = claim_qid(d, "last.eml")
        d.wait_log(notification_line(lq), timeout=20)
        b = harness.wait_for(lambda: bounces(srv), 30, what="the bounce to %s" % SENDER)
        assert len(b) == 1 and b[0].rcpt_tos == [SENDER], b
        notes = d.log_matches(r"sender (?:non-delivery|delay) notification")
        assert len(notes) == 2, [m.group(0) for m in notes]  # for loop.eml and last.eml
        assert not d.log_matches(notification_line(nq)), d.log_text()
        assert not d.log_matches(notification_line(bid)), d.log_text()


def test_delay_warning_once():
    rcpt = "defer451@example.net"
    subject = "slow going"
    with SmtpServer() as srv, \
            Pickupd(config(bounce={"delay_warning": "2s"}), relay=srv) as d:
        d.drop("slow.eml", make_message(SENDER, [rcpt], subject, BODY_MARK + "\n"))
        qid = claim_qid(d, "slow.eml")
        wid = d.wait_log(notification_line(qid, "delay"), timeout=20)[0].group("bid")
        w = harness.wait_for(lambda: bounces(srv), 30, what="the delay warning")[0]
        dsn = check_dsn_common(w, SENDER, subject)
        assert dsn.final_recipients() == [rcpt], dsn.recipients
        blk = dsn.recipient(rcpt)
        assert blk.get("action", "").lower() == "delayed", blk
        assert re.fullmatch(r"4\.\d{1,3}\.\d{1,3}", blk.get("status", "")), blk
        d.wait_log(r"\b%s: removed\b" % re.escape(wid), timeout=20)
        # Sent once: four more deferrals (about 2 s at 500 ms) make no second one.
        n = len(d.log_matches(status_re("deferred", rcpt)))
        d.wait_log(status_re("deferred", rcpt), count=n + 4, timeout=20)
        assert len(d.log_matches(notification_line(qid, "delay"))) == 1, d.log_text()
        assert len(bounces(srv)) == 1, bounces(srv)
        assert not d.log_matches(status_re("bounced")), d.log_text()


def test_bounce_rate_limit():
    """rate_limit = 1 bounce per minute, 3 failures: one bounce goes out at
    once, the other two wait (in the spool), none is lost."""
    senders = ["s%d@example.org" % i for i in range(3)]
    with SmtpServer() as srv, \
            Pickupd(config(bounce={"rate_limit": "1"}), relay=srv) as d:
        qids = []
        for i, s in enumerate(senders):
            d.drop("rl%d.eml" % i, make_message(s, [BAD], "rate limited %d" % i))
            qids.append(claim_qid(d, "rl%d.eml" % i))
        d.wait_log(status_re("bounced", BAD), count=3, timeout=20)
        first = harness.wait_for(lambda: bounces(srv), 30, what="the first bounce")
        # A clock for the test window: a message deferred every 500 ms; while it
        # is retried four times (about 2 s) no second bounce may go out.
        d.drop("clock.eml", make_message(SENDER, ["defer451@example.net"], "clock"))
        d.wait_log(status_re("deferred", "defer451@example.net"), count=4, timeout=20)
        assert len(bounces(srv)) == 1, "rate limit not observed: %r" % bounces(srv)
        done = first[0].rcpt_tos[0]
        waiting = [s for s in senders if s != done]
        d.stop()

        # None lost: each sender without a bounce is still named in an
        # envelope waiting in the spool (the bounce, or the original).
        pending = envelopes(d, ["queue", "deferred", "hold"])
        for s in waiting:
            holders = [e for e in pending if "<%s>" % s in e["text"]]
            assert holders, "the bounce to %s is lost; waiting: %r" % (
                s, [e["text"] for e in pending])
        for e in pending:
            assert any(p.endswith(e["path"].rsplit("/", 1)[-1]) for p in
                       d.spool_files("data")), "envelope without content: %s" % e["path"]


if __name__ == "__main__":
    harness.main(globals(), test_timeout=60)
