"""One SMTP engine: `pickupctl test-relay` and the daemon must agree on every
server. For each server below, the same relay section is checked with
test-relay and then used by pickupd to deliver one message; test-relay
passing (exit 0) must mean the daemon delivers, and test-relay failing must
mean the daemon defers with the same failure class (connection, tls,
protocol, auth, temporary, permanent) that test-relay printed.

The servers: aiosmtpd plain, with STARTTLS + AUTH PLAIN or LOGIN, with
implicit TLS, with XOAUTH2 and an expired first token (the daemon refreshes
it, so must test-relay); Postfix's smtp-sink as is, with -e (no ESMTP: HELO
fallback), refusing EHLO, refusing the greeting (4xx; and 5xx, which defers as a
connection failure, never bounces), 421 after EHLO; refused
credentials (535); STARTTLS not offered, refused (454), or with injected
bytes after its 220; surplus bytes after the EHLO reply; a certificate for
another name; a password_command that hangs; nothing listening."""

import os
import re
import shutil
import tempfile

import harness
from harness import Pickupd, SmtpServer, make_certs, status_re, wait_for
from hostile import HostileServer
from test_relay_sink import Sink

MSG = b"From: a@example.org\nTo: bob@example.net\nSubject: one engine\n\nhello\n"
RELAY_FAIL = re.compile(r"relay test: (?P<why>.*) \((?P<cls>\w+)\); paused")

_CERTS = None


def certs():
    global _CERTS
    if _CERTS is None:
        _CERTS = make_certs(tempfile.mkdtemp(prefix="pickupd-one-engine-certs-"),
                            names=("localhost", "127.0.0.1"))
    return _CERTS


class Listener:
    """A port with nothing listening on it."""

    def __init__(self):
        self.port = harness.free_port()

    def stop(self):
        pass


def run_test_relay(d):
    """(exit status, class or None, output) of `pickupctl test-relay`."""
    p = d.pickupctl("test-relay", timeout=90)
    out = p.stdout + p.stderr
    m = re.search(r"^result    FAILED \((\w+)\)$", out, re.M)
    return p.returncode, (m.group(1) if m else None), out


def daemon_outcome(d):
    """(("sent", None) or ("deferred", class), the log) for one message."""
    with d:
        d.start()
        d.wait_ready()
        d.drop("one.eml", MSG)

        def settled():
            if d.log_matches(status_re("sent")):
                return ("sent", None)
            fail = d.log_matches(RELAY_FAIL.pattern)
            if fail and d.log_matches(status_re("deferred")):
                return ("deferred", fail[0].group("cls"))
            bounced = d.log_matches(status_re("bounced"))
            if bounced:
                return ("bounced", None)
            return None
        got = wait_for(settled, 90, what="the message sent or deferred")
        return got, d.log_text()


def agree(name, server, keys, setup=None, expect=None):
    """Runs test-relay, then the daemon, each against a fresh server made by
    server() (a server may change after one session), with the same relay
    keys (a callable value is called with the Pickupd, for files in its
    dir); asserts they agree, and (expect) on what: "ok" or a class name."""
    d = Pickupd(start=False)
    keys = dict(keys)
    for k, v in list(keys.items()):
        if callable(v):
            keys[k] = v(d)

    def run(what):
        srv = server()
        try:
            d.write_config({"relay test": keys, "general": {"log_level": "debug"},
                            "retry": {"schedule": "1h"}}, srv.port)
            if setup:
                setup(d)
            return what(d)
        finally:
            srv.stop()
    rc, cls, out = run(run_test_relay)
    assert "s3cret" not in out and "fresh-token" not in out, (name, out)
    got, log = run(daemon_outcome)
    if rc == 0:
        assert got == ("sent", None), (name, "test-relay passed, the daemon did not", got,
                                       out, log)
    else:
        assert rc == 1 and cls, (name, rc, out)
        assert got == ("deferred", cls), (name, "test-relay failed (%s)" % cls, got, out, log)
    if expect is not None:
        assert ("ok" if rc == 0 else cls) == expect, (name, expect, out)
    d.cleanup()
    print("  %-36s both %s" % (name, "ok" if rc == 0 else "failed (%s)" % cls))


def secret(text="s3cret"):
    def make(d):
        p = os.path.join(d.dir, "secret")
        with open(p, "w") as f:
            f.write(text + "\n")
        os.chmod(p, 0o600)
        return p
    return make


def tls(**more):
    keys = {"tls": "starttls", "ca_file": certs().ca, "host": "localhost"}
    keys.update(more)
    return keys


def test_aiosmtpd():
    c = certs()
    agree("aiosmtpd plain", lambda: SmtpServer().start(), {}, expect="ok")
    agree("aiosmtpd STARTTLS + AUTH PLAIN",
          lambda: SmtpServer(tls_context=c.context(), require_starttls=True,
                             auth=("u@example.org", "s3cret")).start(),
          tls(user="u@example.org", password_file=secret()), expect="ok")
    agree("aiosmtpd STARTTLS + AUTH LOGIN",
          lambda: SmtpServer(tls_context=c.context(), require_starttls=True,
                             auth=("u@example.org", "s3cret")).start(),
          tls(user="u@example.org", auth="login", password_file=secret()), expect="ok")
    agree("aiosmtpd implicit TLS + AUTH",
          lambda: SmtpServer(implicit_tls=c.context(),
                             auth=("u@example.org", "s3cret")).start(),
          tls(tls="implicit", user="u@example.org", password_file=secret()), expect="ok")


def test_smtp_sink():
    agree("smtp-sink", lambda: Sink(), {}, expect="ok")
    # No ESMTP: pickupd says HELO; so must the check.
    agree("smtp-sink -e", lambda: Sink("-e"), {}, expect="ok")
    agree("smtp-sink -f EHLO", lambda: Sink("-f", "EHLO"), {}, expect="ok")
    agree("smtp-sink -r CONNECT", lambda: Sink("-r", "CONNECT"), {}, expect="temporary")
    # A 5xx greeting refuses the client, not the message: deferred, never bounced.
    agree("smtp-sink -f CONNECT", lambda: Sink("-f", "CONNECT"), {}, expect="connection")
    agree("smtp-sink -Q EHLO", lambda: Sink("-Q", "EHLO"), {}, expect="temporary")


def test_refusals():
    c = certs()
    agree("AUTH refused (535)",
          lambda: SmtpServer(tls_context=c.context(), require_starttls=True,
                             auth=("u@example.org", "right")).start(),
          tls(user="u@example.org", password_file=secret()), expect="auth")
    agree("STARTTLS not offered", lambda: SmtpServer().start(), tls(), expect="tls")
    agree("STARTTLS refused (454)",
          lambda: HostileServer("script", starttls_reply="454 4.7.0 TLS not available"),
          tls(), expect="tls")
    agree("bytes injected after STARTTLS's 220", lambda: HostileServer("inject"), tls(),
          expect="tls")
    agree("certificate for another name",
          lambda: SmtpServer(tls_context=c.context("wrong")).start(), tls(), expect="tls")
    agree("nothing listening", Listener, {}, expect="connection")


def test_surplus_bytes_before_starttls():
    """A reply with a line too many after EHLO: the daemon's engine counts
    replies in every phase, not only after STARTTLS."""
    agree("surplus bytes after EHLO", lambda: HostileServer("script", extra_after="EHLO"),
          {},
          expect="protocol")


def test_password_command():
    c = certs()
    tokens = {"u@example.org": "fresh-token"}

    def reset(d):  # each run starts with the expired token
        try:
            os.unlink(os.path.join(d.dir, "count"))
        except FileNotFoundError:
            pass

    def token_script(d):
        return harness.token_command(d.dir)
    agree("XOAUTH2, first token expired",
          lambda: SmtpServer(tls_context=c.context(), require_starttls=True,
                             xoauth2_tokens=tokens).start(),
          tls(user="u@example.org", auth="xoauth2", password_command=token_script),
          setup=reset, expect="ok")

    def hanging(d):
        p = os.path.join(d.dir, "hang.sh")
        with open(p, "w") as f:
            f.write("#!/bin/sh\nexec sleep 120\n")
        os.chmod(p, 0o700)
        return p
    agree("password_command that hangs",
          lambda: SmtpServer(tls_context=c.context(), require_starttls=True,
                             auth=("u@example.org", "s3cret")).start(),
          tls(user="u@example.org", password_command=hanging, command_timeout="2s"),
          expect="connection")


if __name__ == "__main__":
    try:
        harness.main(globals())
    finally:
        if _CERTS is not None:
            shutil.rmtree(_CERTS.dir, ignore_errors=True)
