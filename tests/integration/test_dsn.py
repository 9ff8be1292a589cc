"""DSN parameters (RFC 3461) from X-Sender/X-Receiver lines reach the relay
when it offers DSN, and are left out when it does not. Postfix's smtp-sink
offers DSN and records each transaction's MAIL and RCPT arguments in its
dump files (X-Mail-Args, X-Rcpt-Args); aiosmtpd does not offer DSN."""
import os
import tempfile

import harness
from harness import Pickupd, SmtpServer, wait_for
from test_relay_sink import Sink

FILE = (b"X-Sender: <app@example.org> RET=HDRS ENVID=inv1001\r\n"
        b"X-Receiver: <bob@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.net\r\n"
        b"X-Receiver: <carol@example.net>\r\n"
        b"From: app@example.org\r\nTo: bob@example.net, carol@example.net\r\n"
        b"Subject: dsn\r\n\r\nbody\r\n")


def dumps(d):
    out = []
    for name in os.listdir(d):
        with open(os.path.join(d, name), "rb") as f:
            out.append(f.read())
    return out


def test_dsn_parameters_passed_on_when_offered():
    dump = tempfile.mkdtemp(prefix="sink-dump-")
    os.chmod(dump, 0o777)  # smtp-sink runs as nobody
    with Sink("-d", dump + "/") as sink:
        d = Pickupd(relay=sink.port, start=False)
        with d:
            d.write_config({}, sink.port)
            d.start()
            d.wait_ready()
            d.drop("dsn.eml", FILE)
            d.wait_spool_empty(timeout=30)
            # smtp-sink writes its dump as the transaction goes: wait for the end.
            got = wait_for(lambda: [t for t in dumps(dump) if b"\nbody" in t], 30,
                           what="a whole transaction in smtp-sink's dump")
    text = got[0].decode("ascii", "replace")
    assert "X-Mail-Args: <app@example.org> RET=HDRS ENVID=inv1001\n" in text.replace("\r\n", "\n"), text
    assert ("X-Rcpt-Args: <bob@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.net"
            in text), text
    assert "X-Rcpt-Args: <carol@example.net>\n" in text.replace("\r\n", "\n"), text
    # The envelope lines themselves never reach the content.
    assert "X-Receiver" not in text and "X-Sender:" not in text, text


def test_dsn_parameters_left_out_when_not_offered():
    with SmtpServer() as srv, Pickupd(relay=srv) as d:
        d.drop("dsn.eml", FILE)
        m = srv.wait_messages(1, timeout=30)[0]
        assert sorted(m.rcpt_tos) == ["bob@example.net", "carol@example.net"], m
        assert not any("NOTIFY" in o for o in m.rcpt_options), m.rcpt_options
        assert not any("RET=" in o for o in m.mail_options), m.mail_options
        d.wait_spool_empty(timeout=30)


if __name__ == "__main__":
    harness.main(globals(), test_timeout=60)
