"""The control socket spoken raw, as any client would (protocol: daemon/queue/ctl_proto.h):
several requests on one connection, one-ID commands answered with one line (the
same preconditions and texts as a batch: spool/ops.c), a batch answered per ID then
"end", refusals that do not close the connection, and a line too long answered then
closed. The server side is daemon/admin/listener.c, shared with the metrics endpoint."""

import os
import re
import socket

import harness
from harness import Pickupd, SmtpServer, status_re, wait_for

NO_BOUNCE = {"retry": {"schedule": "1h"}, "bounce": {"enabled": "no"}}
ID_RE = r"[0-9A-F]{20}"


def down_server():
    srv = SmtpServer()
    srv.start()
    srv.stop()
    return srv


class Ctl:
    """One connection to the daemon's control socket."""

    def __init__(self, d):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(30)
        self.s.connect(os.path.join(d.spool, "control.sock"))
        self.buf = b""

    def send(self, data):
        self.s.sendall(data if isinstance(data, bytes) else data.encode())

    def line(self):
        while b"\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("closed; read so far: %r" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def ask(self, request):
        self.send(request + "\n")
        return self.line()

    def closed(self):
        """True once the daemon has closed the connection (after what it sent)."""
        try:
            while True:
                chunk = self.s.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except OSError:
            return True

    def close(self):
        self.s.close()


def deferred(d):
    return sorted(os.path.basename(p) for p in d.spool_files("deferred"))


def test_one_connection_many_requests():
    srv = down_server()
    with Pickupd(relay=srv, config=NO_BOUNCE) as d:
        d.drop("a.eml", b"From: s@example.org\nTo: r@example.net\nSubject: a\n\nx\n")
        d.wait_log(status_re("deferred"))
        wait_for(lambda: len(deferred(d)) == 1, what="1 deferred envelope")
        qid = deferred(d)[0]
        c = Ctl(d)
        st = c.ask("status")
        m = re.match(r"ok queued=(\d+) sessions=(\d+) stopping=0 pid=(\d+) version=\S+"
                     r" relay=test,(\d+),(\d+),(\d+),(\d+)$", st)
        assert m and int(m.group(3)) == d.pid, st
        # One ID: one answer line each, on the same connection.
        assert c.ask("hold " + qid) == "ok %s held" % qid
        assert c.ask("hold " + qid) == "error %s is in hold, not queue or deferred" % qid
        assert c.ask("retry " + qid) == "error %s is in hold; use release" % qid
        assert c.ask("release " + qid) == "ok %s released" % qid
        assert c.ask("hold 0000000000000000000F") == "error no message 0000000000000000000F"
        assert c.ask("hold nonsense") == "error hold needs a queue ID (20 hexadecimal digits)"
        assert c.ask("requeue") == "error requeue needs a queue ID (20 hexadecimal digits)"
        # Refusals keep the connection.
        assert c.ask("purge " + qid) == "error unknown command"
        assert c.ask("hold a b") == "error too many arguments"
        assert c.ask("") == "error empty request"
        assert c.ask("batch frob 1") == \
            "error batch needs a command: retry|hold|release|delete|requeue|purge"
        assert c.ask("batch hold 100001") == "error batch needs a count of IDs (at most 100000)"
        # A batch: one line per distinct ID (sorted; its text names it too), then
        # the counts. Just released, the message may be in a transaction: busy.
        c.send("batch hold 3\n%s\nnot-an-id\n%s\n" % (qid, qid))
        lines = [c.line(), c.line(), c.line()]
        assert lines[0] == "error  not a queue ID (20 hexadecimal digits)", lines
        assert re.match(r"(ok %s %s held|busy %s .*)$" % (qid, qid, qid), lines[1]), lines
        assert lines[2] in ("end 1 1 0", "end 0 1 1"), lines
        assert c.ask("status").startswith("ok queued="), "still answering"
        c.close()


def test_line_too_long_answered_then_closed():
    with Pickupd(relay=down_server(), config=NO_BOUNCE) as d:
        c = Ctl(d)
        c.send("x" * 600)
        assert c.line() == "error request line too long"
        assert c.closed()
        c.close()
        c = Ctl(d)
        c.send(b"status\x00x\n")
        assert c.line() == "error NUL byte in request"
        assert c.ask("status").startswith("ok queued=")
        c.close()


if __name__ == "__main__":
    harness.main(globals())
