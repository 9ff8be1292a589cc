#!/usr/bin/python3
"""A standalone SMTP sink for the demo and for trying pickupd by hand.

    /usr/bin/python3 smtpd.py --port 2525 --maildir /tmp/received
    /usr/bin/python3 smtpd.py --port 0 --port-file /tmp/port --maildir DIR

Listens on 127.0.0.1 (aiosmtpd, via harness.SmtpServer), prints one line per
received message, and saves each message as DIR/msg-NNNN.eml (the DATA bytes
exactly as received, CRLF line ends) plus DIR/msg-NNNN.envelope (MAIL FROM and
RCPT TO). --port 0 picks a free port; --port-file writes the port there once
the server listens. Runs until SIGTERM or SIGINT.
"""

import argparse
import os
import signal
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=2525, help="TCP port; 0 = any free port")
    ap.add_argument("--port-file", help="write the listening port to this file")
    ap.add_argument("--maildir", required=True, help="directory to save messages in")
    args = ap.parse_args()
    os.makedirs(args.maildir, exist_ok=True)
    count = [0]

    def on_message(t):
        count[0] += 1
        base = os.path.join(args.maildir, "msg-%04d" % count[0])
        with open(base + ".envelope", "w") as f:
            f.write("MAIL FROM:<%s>\n" % t.mail_from)
            for r in t.rcpt_tos:
                f.write("RCPT TO:<%s>\n" % r)
        tmp = base + ".eml.tmp"
        with open(tmp, "wb") as f:
            f.write(t.data)
        os.rename(tmp, base + ".eml")  # readers see whole messages only
        subject = (t.header("subject") or [""])[0]
        print("smtpd: received #%d from=<%s> to=%s size=%d subject=%r -> %s.eml" % (
            count[0], t.mail_from, ",".join("<%s>" % r for r in t.rcpt_tos), len(t.data),
            subject, base), flush=True)

    srv = harness.SmtpServer(port=args.port, on_message=on_message, rcpt_faults=None)
    srv.start()
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % srv.port)
        os.rename(tmp, args.port_file)
    print("smtpd: listening on 127.0.0.1:%d, saving to %s" % (srv.port, args.maildir),
          flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    signal.signal(signal.SIGINT, lambda *a: done.set())
    while not done.wait(3600):
        pass
    srv.stop()
    print("smtpd: stopped after %d message(s)" % count[0], flush=True)


if __name__ == "__main__":
    main()
