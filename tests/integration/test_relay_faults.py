"""The relay client against servers that break the rules (issue 9): bytes
after a complete reply when none is due (the scripted server, hostile.py, at
every phase, with and without PIPELINING), a 5xx or 4xx before the end of
data (Postfix's smtp-sink -A 0, and hostile.py for 4xx), the "may be
delivered twice" warning only after the final dot reached the server
(smtp-sink -q . versus a server that cuts the body), QUIT after a refused
AUTH, and the RFC 3463 status of failures pickupd decides itself."""

import re

import harness
from harness import Pickupd, status_re, wait_for
from hostile import HostileServer
from test_relay import secret_file
from test_relay_sink import Sink

SENDER = "a@example.org"
MSG = b"From: a@example.org\nTo: bob@example.net\nSubject: faults\n\nbody line\n"
TWICE = r"may be delivered twice"


def _daemon(port, retry=None, **relay_keys):
    d = Pickupd(relay=port, start=False)
    relay_keys.setdefault("tls", "none")
    d.write_config({"relay test": relay_keys, "general": {"log_level": "debug"},
                    "retry": dict({"schedule": "500ms", "jitter_percent": "0"}, **(retry or {}))},
                   port)
    d.start()
    d.wait_ready()
    return d


def _dsns(srv):
    return [m for m in srv.messages if b"multipart/report" in m]


def test_extra_line_shifts_no_reply():
    """The issue's case: no PIPELINING, MAIL answered with one line too many,
    the first recipient refused and the second accepted. Nothing may bounce
    on the attempt that saw the extra line; the retry gets each reply right."""
    msg = (b"From: a@example.org\nTo: refused@example.net, accepted@example.net\n"
           b"Subject: shifted\n\nbody\n")
    refusal = "550 5.1.1 refused@ does not exist"
    with HostileServer("script", pipelining=False, extra_after="MAIL",
                       rcpt_replies={"refused": refusal}) as srv:
        d = _daemon(srv.port)
        with d:
            d.drop("a.eml", msg)
            lines = d.wait_log(status_re("deferred"), count=2, timeout=20)
            for m in lines:
                assert "more than its reply while sending the envelope" in m.group("reply"), \
                    m.group(0)
            d.wait_log(status_re("sent", "accepted@example.net"), timeout=20)
            line = d.wait_log(status_re("bounced", "refused@example.net"), timeout=20)[0]
            assert line.group("reply") == refusal, line.group(0)
            assert not d.log_matches(status_re("bounced", "accepted@example.net")), \
                d.log_text()
            dsn = wait_for(lambda: _dsns(srv), 20, what="the bounce")[0].decode()
            finals = re.findall(r"Final-Recipient: rfc822; (\S+)", dsn)
            assert finals == ["refused@example.net"], dsn
            originals = [m for m in srv.messages if m not in _dsns(srv)]
            assert len(originals) == 1, srv.messages


# (extra_after, PIPELINING, expected words in the deferral)
PHASES = [
    ("CONNECT", False, "more than its reply while receiving the initial server greeting"),
    ("EHLO", False, "more than its reply while sending EHLO"),
    ("AUTH", False, "more than its reply while authenticating"),
    ("MAIL", False, "more than its reply while sending the envelope"),
    ("RCPT", False, "more than its reply while sending the envelope"),
    ("DATA", False, "reply before the end of data: 250 2.0.0 extra"),
    (".", False, "more than its reply while sending end of data"),
    ("RSET", False, "more than its reply while sending the envelope"),
    ("MAIL", True, "more than its reply while sending the envelope"),
    ("DATA", True, "reply before the end of data: 250 2.0.0 extra"),
    (".", True, "more than its reply while sending end of data"),
    ("RSET", True, "more than its reply while sending the envelope"),
]


def _extra_bytes_at(verb, pipelining, words):
    with HostileServer("script", pipelining=pipelining, extra_after=verb,
                       auth_reply="235 2.7.0 ok") as srv:
        keys = {"tls": "none"}
        d = Pickupd(relay=srv.port, start=False)
        if verb == "AUTH":
            keys.update(user="u", allow_plaintext_auth="yes", password_file=secret_file(d))
        d.write_config({"relay test": keys, "general": {"log_level": "debug"},
                        "retry": {"schedule": "500ms", "jitter_percent": "0"}}, srv.port)
        with d:
            d.start()
            d.wait_ready()
            rcpt = "bob@example.net"
            if verb == "RSET":
                # The first message opens the session; the second reuses it.
                d.drop("first.eml", MSG.replace(b"bob@", b"first@"))
                d.wait_log(status_re("sent", "first@example.net"), timeout=20)
            d.drop("m.eml", MSG)
            line = d.wait_log(status_re("deferred", rcpt), timeout=20)[0]
            assert words in line.group("reply"), line.group(0)
            assert not d.log_matches(status_re("bounced")), d.log_text()
            if verb == ".":
                # The server took it: the retry may duplicate it, and says so.
                d.wait_log(TWICE)
            else:
                assert not d.log_matches(TWICE), d.log_text()
            # The next attempt, with the server back in step, delivers.
            d.wait_log(status_re("sent", rcpt), timeout=20)


def test_extra_bytes_at_each_phase():
    failed = []
    for verb, pipelining, words in PHASES:
        what = "%s (%s PIPELINING)" % (verb, "with" if pipelining else "without")
        try:
            _extra_bytes_at(verb, pipelining, words)
        except AssertionError as e:
            failed.append("%s: %s" % (what, str(e).splitlines()[0][:300]))
    assert not failed, "\n".join(failed)


def _big_message(size):
    line = b"x" * 76 + b"\n"
    body = line * (size // len(line))
    return b"From: a@example.org\nTo: bob@example.net\nSubject: big\n\n" + body


def test_5xx_during_body_bounces():
    """smtp-sink -A 0: 550 right after DATA's 354, and it reads no more,
    while 5 MB are still to be sent. A well-formed 5xx is permanent."""
    with Sink("-A", "0") as sink:
        d = _daemon(sink.port, max_sessions="1")
        with d:
            d.drop("big.eml", _big_message(5 * 1024 * 1024))
            line = d.wait_log(status_re("bounced", "bob@example.net"), timeout=30)[0]
            assert re.match(r"^550 ", line.group("reply")), line.group(0)
            assert not d.log_matches(status_re("deferred", "bob@example.net")), d.log_text()
            assert not d.log_matches(TWICE), d.log_text()


def test_4xx_during_body_defers_and_malformed_is_protocol():
    for reply, words in (("451 4.3.0 stop sending", r"^451 4\.3\.0 stop sending$"),
                         ("hello there", r"malformed reply")):
        with HostileServer("script", body_reply=reply) as srv:
            d = _daemon(srv.port, retry={"schedule": "1h"})
            with d:
                d.drop("big.eml", _big_message(5 * 1024 * 1024))
                line = d.wait_log(status_re("deferred", "bob@example.net"), timeout=30)[0]
                assert re.search(words, line.group("reply")), (reply, line.group(0))
                assert not d.log_matches(TWICE), d.log_text()


def test_body_cut_is_a_clean_retry():
    """The server closes after 1,000 bytes of content, the rest unread: the
    final dot never reached it, so no "may be delivered twice"."""
    with HostileServer("script", cut_body_after=1000, rcvbuf=4096) as srv:
        d = _daemon(srv.port, retry={"schedule": "1h"})
        with d:
            d.drop("cut.eml", _big_message(60 * 1024))
            line = d.wait_log(status_re("deferred", "bob@example.net"), timeout=30)[0]
            assert not d.log_matches(TWICE), d.log_text()


def test_dot_without_reply_warns_once():
    """smtp-sink -q .: the dot arrived, no reply came: the warning, worded
    once (it used to say "while sending end of data" twice)."""
    with Sink("-q", ".") as sink:
        d = _daemon(sink.port, retry={"schedule": "1h"})
        with d:
            d.drop("q.eml", MSG)
            d.wait_log(status_re("deferred", "bob@example.net"), timeout=30)
            d.wait_log(r"warning: \S+: connection lost after the end of data; the message "
                       r"may be delivered twice")
            d.wait_log(r"connection closed by the server while sending end of data: "
                       r"message may be delivered twice")
            text = d.log_text()
            assert not re.search(r"(while [a-z ]+) \1", text), text


def test_connect_error_says_the_address_once():
    """It said "connect to 127.0.0.1:P failed: 127.0.0.1[127.0.0.1]:P: ..."."""
    port = harness.free_port()
    d = _daemon(port, retry={"schedule": "1h"})
    with d:
        d.drop("c.eml", MSG)
        line = d.wait_log(status_re("deferred", "bob@example.net"), timeout=20)[0]
        assert line.group("reply") == "connect to 127.0.0.1:%d failed: connection refused" \
            % port, line.group(0)


def test_quit_after_auth_refused():
    with HostileServer("script", auth_reply="535 5.7.8 bad credentials") as srv:
        d = Pickupd(relay=srv.port, start=False)
        d.write_config({"relay test": {"tls": "none", "user": "u", "allow_plaintext_auth": "yes",
                                       "password_file": secret_file(d)},
                        "general": {"log_level": "debug"}}, srv.port)
        d.start()
        d.wait_ready()
        with d:
            d.drop("a.eml", MSG)
            line = d.wait_log(status_re("deferred", "bob@example.net"), timeout=20)[0]
            assert "535 5.7.8" in line.group("reply"), line.group(0)

            def quit_after_auth():
                cmds = [c.split(" ")[0].upper() for c in srv.commands]
                return "AUTH" in cmds and "QUIT" in cmds[cmds.index("AUTH"):]
            wait_for(quit_after_auth, 20, what="QUIT after the 535")


def test_local_failures_have_rfc3463_status():
    """Failures pickupd decides itself get RFC 3463 codes in the bounce:
    over the relay's SIZE is 5.3.4, 8-bit content to a relay without
    8BITMIME is 5.6.3; the Diagnostic-Code says why and names the server."""
    cases = [({"size": 4000}, _big_message(20 * 1024), "5.3.4",
              r"X-pickupd; message size \d+ exceeds the size limit 4000 of server "
              r"127\.0\.0\.1\[127\.0\.0\.1\]:\d+"),
             ({"eightbit": False},
              b"From: a@example.org\nTo: bob@example.net\nSubject: 8bit\n\ncaf\xc3\xa9\n",
              "5.6.3", r"X-pickupd; the message has 8-bit content and server \S+ does not "
              r"offer 8BITMIME")]
    for opts, msg, status, diag in cases:
        with HostileServer("script", **opts) as srv:
            d = _daemon(srv.port)
            with d:
                d.drop("l.eml", msg)
                d.wait_log(status_re("bounced", "bob@example.net"), timeout=20)
                dsn = wait_for(lambda: _dsns(srv), 20, what="the bounce")[0].decode()
                assert re.search(r"^Status: %s\r?$" % re.escape(status), dsn, re.M), dsn
                assert re.search(r"^Diagnostic-Code: %s\r?$" % diag, dsn, re.M), dsn


if __name__ == "__main__":
    harness.main(globals())
