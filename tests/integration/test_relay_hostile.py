"""The relay client against a scripted hostile server (hostile.py), only for
what no real server does: a reply forged after the STARTTLS 220 in the same
write, and replies split at every byte (with PIPELINING: MAIL, RCPT and DATA
must still go in one write and be matched in order)."""

import harness
from harness import Pickupd, status_re, wait_for
from hostile import HostileServer

MSG = (b"From: a@example.org\nTo: bob@example.net, carol@example.net\nSubject: hostile\n\n"
       b".dot line\nbody\n")


def _daemon(port, **keys):
    d = Pickupd(relay=port, start=False)
    keys.setdefault("tls", "none")
    d.write_config({"relay test": keys, "general": {"log_level": "debug"}}, port)
    d.start()
    d.wait_ready()
    return d


def test_bytes_after_starttls_abort():
    with HostileServer("inject") as srv:
        d = _daemon(srv.port, tls="starttls", tls_verify="no")
        with d:
            d.drop("a.eml", MSG)
            lines = d.wait_log(status_re("deferred", "bob@example.net"))
            assert "data after its STARTTLS reply" in lines[0].group("reply"), lines[0].group(0)
            # No TLS handshake was attempted, no mail command followed.
            assert not srv.after_starttls.startswith(b"\x16"), srv.after_starttls[:8]
            assert b"MAIL" not in b"".join(srv.reads), srv.reads
            assert srv.messages == []


def test_replies_split_at_every_byte():
    with HostileServer("split") as srv:
        d = _daemon(srv.port)
        with d:
            d.drop("a.eml", MSG)
            d.wait_log(status_re("sent"), count=2)
            assert len(srv.messages) == 1, srv.messages
            assert srv.messages[0].endswith(b".dot line\r\nbody\r\n"), srv.messages[0]
            # PIPELINING: the whole envelope in one write (one recv here).
            env = [r for r in srv.reads if r.startswith(b"MAIL FROM")]
            assert env and b"RCPT TO:<bob@example.net>" in env[0] and \
                b"RCPT TO:<carol@example.net>" in env[0] and env[0].endswith(b"DATA\r\n"), \
                srv.reads
            # A second message reuses the session: RSET goes first in the batch.
            d.drop("b.eml", MSG.replace(b"bob@", b"dave@"))
            wait_for(lambda: len(srv.messages) == 2, 30, what="the second message")
            env = [r for r in srv.reads if r.startswith(b"RSET")]
            assert env and b"MAIL FROM" in env[0] and env[0].endswith(b"DATA\r\n"), srv.reads
            assert srv.sessions == 1, srv.sessions


if __name__ == "__main__":
    harness.main(globals())
