"""The SMTP relay client against real servers (aiosmtpd): STARTTLS and implicit
TLS with verified certificates (and the ones that must be refused), AUTH
PLAIN/LOGIN/XOAUTH2 with secrets from a file, $CREDENTIALS_DIRECTORY or a
password_command, 535 handling, per-recipient results under PIPELINING,
force_sender/force_from, and address fallback for a name with two addresses."""

import os
import re
import shutil
import socket
import ssl
import tempfile

import harness
from harness import Pickupd, SmtpServer, make_certs, status_re, wait_for

MSG = (b"From: Alice <alice@example.org>\nTo: bob@example.net\nSubject: relay test\n\n"
       b"hello over the relay\n")

_CERTS = None


def certs():
    global _CERTS
    if _CERTS is None:
        d = tempfile.mkdtemp(prefix="pickupd-relay-certs-")
        _CERTS = make_certs(d, names=("localhost", "127.0.0.1"))
    return _CERTS


def secret_file(d, text="s3cret", mode=0o600):
    p = os.path.join(d.dir, "secret")
    with open(p, "w") as f:
        f.write(text + "\n")
    os.chmod(p, mode)
    return p


def relay(**keys):
    return {"relay test": dict(keys), "general": {"log_level": "debug"}}


def test_starttls_auth_plain():
    c = certs()
    with SmtpServer(tls_context=c.context(), require_starttls=True,
                    auth=("user@example.org", "s3cret")) as srv:
        d = Pickupd(relay=srv, start=False)
        d.write_config(relay(tls="starttls", ca_file=c.ca, user="user@example.org",
                             password_file=secret_file(d), host="localhost"), srv.port)
        with d:
            d.start()
            d.wait_ready()
            d.drop("a.eml", MSG)
            m = srv.wait_messages(1)[0]
            assert m.tls and m.auth_login == "user@example.org", m
            assert srv.auth_log == [("PLAIN", "user@example.org", True)], srv.auth_log
            # Capabilities read again after STARTTLS: two EHLOs.
            assert srv.ehlo_count == 2, srv.ehlo_count
            d.wait_log(status_re("sent", "bob@example.net"))
            # Never in the log, even at debug level (plain, or base64 as AUTH PLAIN sends it).
            log = d.log_text()
            assert "s3cret" not in log, "password in the log"
            import base64
            b64 = base64.b64encode(b"\0user@example.org\0s3cret").decode()
            assert b64 not in log and "AUTH ... (hidden)" in log, log


def test_auth_login_credentials_directory():
    c = certs()
    with SmtpServer(tls_context=c.context(), require_starttls=True,
                    auth=("user@example.org", "l0gin-pw")) as srv:
        cred = tempfile.mkdtemp(prefix="pickupd-cred-")
        try:
            # As the shipped unit's LoadCredential=relay-primary:... passes
            # [relay primary]'s: no password_file, the credential relay-NAME.
            with open(os.path.join(cred, "relay-test"), "w") as f:
                f.write("l0gin-pw\n")
            os.chmod(os.path.join(cred, "relay-test"), 0o400)
            d = Pickupd(relay=srv, start=False, env={"CREDENTIALS_DIRECTORY": cred})
            d.write_config(relay(tls="starttls", ca_file=c.ca, user="user@example.org",
                                 auth="login"), srv.port)
            with d:
                d.start()
                d.wait_ready()
                d.drop("a.eml", MSG)
                m = srv.wait_messages(1)[0]
                assert m.auth_login == "user@example.org", m
                assert srv.auth_log == [("LOGIN", "user@example.org", True)], srv.auth_log
                assert "l0gin-pw" not in d.log_text()
                assert "bDBnaW4tcHc=" not in d.log_text()  # base64 of the password
        finally:
            shutil.rmtree(cred, ignore_errors=True)


def test_user_without_secret_refused_at_start():
    """user, no password_file, no $CREDENTIALS_DIRECTORY: pickupd says where the
    secret should come from and does not start."""
    d = Pickupd(relay=2525, start=False)
    d.write_config(relay(tls="starttls", user="u"), 2525)
    env = {"CREDENTIALS_DIRECTORY": ""}
    for args in (["--check-config", "-c", d.conf], ["-c", d.conf]):
        p = harness.run_program("pickupd", *args, timeout=30, env=env)
        out = p.stdout + p.stderr
        assert p.returncode != 0, (args, out)
        assert "no password_file, and no $CREDENTIALS_DIRECTORY for the credential " \
            "relay-test" in out, (args, out)
    d.cleanup()


def test_password_file_too_open_refused_at_start():
    d = Pickupd(relay=2525, start=False)
    d.write_config(relay(tls="starttls", user="u", password_file=secret_file(d, mode=0o644)),
                   2525)
    p = harness.run_program("pickupd", "-c", d.conf, timeout=30)
    assert p.returncode != 0, (p.returncode, p.stdout, p.stderr)
    assert "only its owner can read" in p.stdout + p.stderr, p.stdout + p.stderr
    d.cleanup()


def test_implicit_tls():
    c = certs()
    with SmtpServer(implicit_tls=c.context(), auth=("u@example.org", "pw")) as srv:
        d = Pickupd(relay=srv, start=False)
        d.write_config(relay(tls="implicit", ca_file=c.ca, user="u@example.org",
                             password_file=secret_file(d, "pw")), srv.port)
        with d:
            d.start()
            d.wait_ready()
            d.drop("a.eml", MSG)
            m = srv.wait_messages(1)[0]
            assert m.tls and m.auth_login == "u@example.org", m
            d.wait_log(status_re("sent", "bob@example.net"))


def _refused_cert(which, expect):
    c = certs()
    with SmtpServer(tls_context=c.context(which), require_starttls=True) as srv:
        d = Pickupd(relay=srv, start=False)
        d.write_config(relay(tls="starttls", ca_file=c.ca), srv.port)
        with d:
            d.start()
            d.wait_ready()
            d.drop("a.eml", MSG)
            lines = d.wait_log(status_re("deferred", "bob@example.net"))
            assert re.search(expect, lines[0].group("reply")), lines[0].group(0)
            assert srv.transactions == [] and srv.rcpt_log == [], srv.transactions
            # No plaintext fallback: the server never saw a MAIL.
            assert not d.log_matches(r"> MAIL FROM"), d.log_text()


def test_selfsigned_refused():
    _refused_cert("selfsigned", r"certificate verif.*self.signed|self-signed")


def test_wrong_name_refused():
    _refused_cert("wrong", r"certificate verif.*(hostname|IP address) mismatch")


def test_expired_refused():
    _refused_cert("expired", r"certificate verif.*expired")


def test_no_starttls_offered():
    with SmtpServer() as srv:  # no tls_context: STARTTLS not offered
        d = Pickupd(relay=srv, start=False)
        d.write_config(relay(tls="starttls"), srv.port)
        with d:
            d.start()
            d.wait_ready()
            d.drop("a.eml", MSG)
            lines = d.wait_log(status_re("deferred", "bob@example.net"))
            assert "does not offer STARTTLS" in lines[0].group("reply"), lines[0].group(0)
            assert srv.rcpt_log == [], srv.rcpt_log


def test_no_plaintext_auth():
    with SmtpServer(auth=("u", "pw"), auth_require_tls=False) as srv:
        d = Pickupd(relay=srv, start=False)
        d.write_config(relay(tls="none", user="u", password_file=secret_file(d, "pw")),
                       srv.port)
        p = harness.run_program("pickupd", "-c", d.conf, timeout=30)
        assert p.returncode != 0 and "allow_plaintext_auth" in p.stdout + p.stderr, (
            p.returncode, p.stdout, p.stderr)
        d.cleanup()
        # allowed explicitly
        d = Pickupd(relay=srv, start=False)
        d.write_config(relay(tls="none", user="u", password_file=secret_file(d, "pw"),
                             allow_plaintext_auth="yes"), srv.port)
        with d:
            d.start()
            d.wait_ready()
            d.drop("b.eml", MSG)
            srv.wait_messages(1)
            assert srv.auth_log == [("PLAIN", "u", True)], srv.auth_log


def test_535_defers_and_pauses():
    c = certs()
    with SmtpServer(tls_context=c.context(), require_starttls=True,
                    auth=("u@example.org", "right")) as srv:
        d = Pickupd(relay=srv, start=False)
        d.write_config(relay(tls="starttls", ca_file=c.ca, user="u@example.org",
                             password_file=secret_file(d, "wrong-pw")), srv.port)
        with d:
            d.start()
            d.wait_ready()
            d.drop("a.eml", MSG)
            lines = d.wait_log(status_re("deferred", "bob@example.net"))
            assert "535" in lines[0].group("reply"), lines[0].group(0)
            d.wait_log(r"relay test: .*535.*paused for 600 s")
            d.drop("b.eml", MSG.replace(b"bob@", b"carol@"))
            harness.claim_qid(d, "b.eml")
            # The second message waits for the pause; no new AUTH attempt.
            d.wait_log(r"b\.eml")
            assert len(srv.auth_log) == 1 and srv.connections == 1, (srv.auth_log,
                                                                      srv.connections)
            assert "wrong-pw" not in d.log_text()


def test_xoauth2_token_refreshed():
    c = certs()
    with SmtpServer(tls_context=c.context(), require_starttls=True,
                    xoauth2_tokens={"u@example.org": "fresh-token"}) as srv:
        d = Pickupd(relay=srv, start=False)
        counter = os.path.join(d.dir, "count")
        script = harness.token_command(d.dir)
        d.write_config(relay(tls="starttls", ca_file=c.ca, user="u@example.org",
                             auth="xoauth2", password_command=script), srv.port)
        with d:
            d.start()
            d.wait_ready()
            d.drop("a.eml", MSG)
            m = srv.wait_messages(1)[0]
            assert m.auth_login == "u@example.org", m
            assert srv.auth_log == [("XOAUTH2", "u@example.org", False),
                                    ("XOAUTH2", "u@example.org", True)], srv.auth_log
            assert open(counter).read().strip() == "2"
            assert srv.connections == 1, srv.connections
            log = d.log_text()
            assert "fresh-token" not in log and "expired-token" not in log
            d.wait_log(r"access token refused; running password_command again")


def test_pipelining_per_recipient_mix():
    """aiosmtpd reads pipelined commands fine; advertise PIPELINING so pickupd
    sends MAIL, every RCPT and DATA in one write, and check each recipient
    gets its own reply."""
    def add_pipelining(lines):
        return lines[:-1] + ["250-PIPELINING"] + lines[-1:]
    with SmtpServer(ehlo_filter=add_pipelining) as srv, Pickupd(relay(), relay=srv) as d:
        rcpts = ["ok1@example.net", "fail550@example.net", "defer451@example.net",
                 "ok2@example.net"]
        d.drop("mix.eml", b"From: a@example.org\nTo: " + ", ".join(rcpts).encode() +
               b"\nSubject: mix\n\nbody\n")
        m = srv.wait_messages(1)[0]
        assert m.rcpt_tos == ["ok1@example.net", "ok2@example.net"], m.rcpt_tos
        sent = d.wait_log(status_re("sent"), count=2)
        assert sorted(x.group("rcpt") for x in sent) == ["ok1@example.net", "ok2@example.net"]
        b = d.wait_log(status_re("bounced", "fail550@example.net"))
        assert b[0].group("reply").startswith("550 5.1.1"), b[0].group(0)
        df = d.wait_log(status_re("deferred", "defer451@example.net"))
        assert df[0].group("reply").startswith("451 4.3.0"), df[0].group(0)
        # pipelined: DATA went before the RCPT replies were read
        log = d.log_text()
        i_data = log.index("> DATA")
        i_first_rcpt_reply = log.index("< 250 2.1.5")
        assert i_data < i_first_rcpt_reply, log


def test_force_sender_and_from():
    with SmtpServer() as srv:
        d = Pickupd(relay=srv, start=False)
        d.write_config(relay(force_sender="account@example.com", force_from="yes"), srv.port)
        with d:
            d.start()
            d.wait_ready()
            d.drop("a.eml", b"Subject: forced\nFrom: App <app@example.org>,\n\t"
                   b"other@example.org\nTo: bob@example.net\n\nbody\n")
            m = srv.wait_messages(1)[0]
            assert m.mail_from == "account@example.com", m.mail_from
            assert m.header("from") == ["<account@example.com>"], m.headers
            assert b"app@example.org" not in m.data and b"other@" not in m.data, m.data
            assert m.header("subject") == ["forced"], m.headers
            assert m.body == b"body\r\n", m.body
            # no From: at all: one is added
            d.drop("b.eml", b"Sender: s@example.org\nTo: bob@example.net\n\nbody2\n")
            m = srv.wait_messages(2)[1]
            assert m.header("from") == ["<account@example.com>"], m.headers
            assert m.body == b"body2\r\n", m.body


def test_force_sender_only():
    with SmtpServer() as srv:
        d = Pickupd(relay=srv, start=False)
        d.write_config(relay(force_sender="account@example.com"), srv.port)
        with d:
            d.start()
            d.wait_ready()
            d.drop("a.eml", MSG)
            m = srv.wait_messages(1)[0]
            assert m.mail_from == "account@example.com", m.mail_from
            assert m.header("from") == ["Alice <alice@example.org>"], m.headers


def test_every_address_tried():
    """A name with two addresses (::1 then 127.0.0.1, as "localhost" has on many
    hosts; here a resolver shim gives "dual.test" both); only one listens."""
    shim = {"LD_PRELOAD": os.path.join(harness.BIN_DIR, "libdualstack.so")}
    for host in ("127.0.0.1", "::1"):
        with SmtpServer(host=host) as srv:
            d = Pickupd(relay=srv, start=False, env=shim)
            d.write_config(relay(host="dual.test", tls_verify="no"), srv.port)
            with d:
                d.start()
                d.wait_ready()
                d.drop("a.eml", MSG)
                srv.wait_messages(1)
                d.wait_log(r"relay=dual\.test\[%s\]:%d, .*status=sent"
                           % (re.escape(host), srv.port))


def make_client_cert(c):
    key = os.path.join(c.dir, "client.key")
    crt = os.path.join(c.dir, "client.pem")
    if os.path.exists(crt):
        return crt, key
    ext = os.path.join(c.dir, "client.ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
                "extendedKeyUsage=clientAuth\n")
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    harness._openssl("req", "-new", *newkey, "-keyout", key, "-out", crt + ".csr",
                     "-subj", "/CN=pickupd client")
    harness._openssl("x509", "-req", "-in", crt + ".csr", "-CA", c.ca, "-CAkey", c.ca_key,
                     "-CAcreateserial", "-out", crt, "-days", "30", "-extfile", ext)
    return crt, key


def test_client_certificate():
    c = certs()
    # A client certificate signed by the test CA (the server pair will do).
    ctx = c.context()
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(c.ca)
    with SmtpServer(tls_context=ctx, require_starttls=True) as srv:
        d = Pickupd(relay=srv, start=False)
        crt, key = make_client_cert(c)
        d.write_config(relay(tls="starttls", ca_file=c.ca, cert_file=crt, key_file=key),
                       srv.port)
        with d:
            d.start()
            d.wait_ready()
            d.drop("a.eml", MSG)
            assert srv.wait_messages(1)[0].tls
    with SmtpServer(tls_context=ctx, require_starttls=True) as srv:
        d = Pickupd(relay=srv, start=False)
        d.write_config(relay(tls="starttls", ca_file=c.ca), srv.port)
        with d:
            d.start()
            d.wait_ready()
            d.drop("a.eml", MSG)
            d.wait_log(status_re("deferred", "bob@example.net"))
            assert srv.messages == []


def test_persistent_sessions_rset():
    """Several messages over one session, RSET between them; max_messages_per_session
    closes it and opens another."""
    with SmtpServer() as srv:
        d = Pickupd(relay=srv, start=False)
        d.write_config(relay(max_sessions="1", max_messages_per_session="3"), srv.port)
        with d:
            d.start()
            d.wait_ready()
            for i in range(7):
                d.drop("m%d.eml" % i, MSG.replace(b"bob@", b"bob%d@" % i))
            srv.wait_messages(7)
            d.wait_spool_empty()
            assert srv.connections == 3, srv.connections
            assert len(d.log_matches(r"> RSET")) >= 4, d.log_text()


def test_idle_timeout_quit():
    with SmtpServer() as srv:
        d = Pickupd(relay=srv, start=False)
        d.write_config(relay(idle_timeout="1s"), srv.port)
        with d:
            d.start()
            d.wait_ready()
            d.drop("a.eml", MSG)
            srv.wait_messages(1)
            d.wait_log(r"> QUIT")
            wait_for(lambda: not srv._live, 20, what="the session to close")


def test_utf8_needs_smtputf8():
    def no_utf8(lines):
        return [x for x in lines if "SMTPUTF8" not in x]
    with SmtpServer(ehlo_filter=no_utf8) as srv, Pickupd(relay=srv) as d:
        d.drop("u.eml", "From: a@example.org\nTo: j\u00f6rg@example.net\n\nhi\n".encode())
        lines = d.wait_log(status_re("bounced"))
        assert "SMTPUTF8" in lines[0].group("reply"), lines[0].group(0)
    with SmtpServer() as srv, Pickupd(relay=srv) as d:
        d.drop("u.eml", "From: a@example.org\nTo: j\u00f6rg@example.net\n\nhi\n".encode())
        m = srv.wait_messages(1)[0]
        assert "SMTPUTF8" in [o.upper() for o in m.mail_options], m.mail_options


def _test_relay(d, *args):
    p = d.pickupctl("test-relay", *args, timeout=60)
    return p.returncode, p.stdout + p.stderr


def test_test_relay_ok():
    c = certs()
    with SmtpServer(tls_context=c.context(), require_starttls=True,
                    auth=("user@example.org", "s3cret")) as srv:
        d = Pickupd(relay=srv, start=False)
        d.write_config(relay(tls="starttls", ca_file=c.ca, user="user@example.org",
                             password_file=secret_file(d), host="localhost"), srv.port)
        rc, out = _test_relay(d, "test")
        assert rc == 0, out
        for want in ("connect   ok: localhost[127.0.0.1]", "< 220 smtp.test", "> STARTTLS",
                     "TLS       ok: TLSv1.", "subject=/CN=localhost",
                     "issuer=/CN=pickupd test CA", "expires=", "verify=ok", "AUTH      ok",
                     "< 235", "< 221", "result    ok"):
            assert want in out, (want, out)
        assert "s3cret" not in out and "> AUTH PLAIN <hidden>" in out, out
        assert srv.auth_log == [("PLAIN", "user@example.org", True)], srv.auth_log
        assert srv.transactions == []
        d.cleanup()


def test_test_relay_implicit_port_with_starttls():
    c = certs()
    with SmtpServer(implicit_tls=c.context()) as srv:
        d = Pickupd(relay=srv, start=False)
        d.write_config(relay(tls="starttls", ca_file=c.ca, greeting_timeout="2s"), srv.port)
        rc, out = _test_relay(d)
        assert rc != 0, out
        assert "banner    FAILED" in out and "tls = implicit" in out, out
        d.cleanup()


def test_test_relay_name_mismatch():
    c = certs()
    with SmtpServer(tls_context=c.context("wrong")) as srv:
        d = Pickupd(relay=srv, start=False)
        d.write_config(relay(tls="starttls", ca_file=c.ca), srv.port)
        rc, out = _test_relay(d)
        assert rc != 0, out
        assert "TLS       FAILED" in out and "name mismatch" in out, out
        d.cleanup()


def test_test_relay_credentials_refused():
    c = certs()
    with SmtpServer(implicit_tls=c.context(), auth=("u@example.org", "right")) as srv:
        d = Pickupd(relay=srv, start=False)
        d.write_config(relay(tls="implicit", ca_file=c.ca, user="u@example.org",
                             password_file=secret_file(d, "wrong-pw")), srv.port)
        rc, out = _test_relay(d)
        assert rc != 0, out
        assert "AUTH      FAILED" in out and "< 535" in out and "credentials refused" in out, out
        assert "wrong-pw" not in out
        d.cleanup()


if __name__ == "__main__":
    try:
        harness.main(globals())
    finally:
        if _CERTS is not None:
            shutil.rmtree(_CERTS.dir, ignore_errors=True)
