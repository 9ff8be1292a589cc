"""A scripted SMTP server for what no real server does on request:

  mode "inject"  answers STARTTLS with "220" and, in the same write, a forged
                 "250" (the CVE-2021-22947 response-injection attack);
  mode "split"   a well-behaved server whose every reply is written one byte
                 at a time (TCP_NODELAY, a pause between bytes), so the client
                 sees replies split at every byte; it advertises PIPELINING and
                 records the bytes of each recv() so a test can check that
                 MAIL, RCPT and DATA arrived in one write;
  mode "script"  a well-behaved server changed by keyword options:
                 pipelining=False   no PIPELINING (replies one command at a
                                    time; with it, the replies to one read go
                                    in one write, as Postfix does);
                 extra_after=VERB   the first reply to VERB (CONNECT for the
                                    greeting, EHLO, AUTH, MAIL, RCPT, DATA,
                                    "." for end of data, RSET) carries one more
                                    line, "250 2.0.0 extra", in the same write;
                 rcpt_replies={local part: reply line} for RCPT;
                 auth_reply=LINE    offers AUTH PLAIN LOGIN, answers AUTH so;
                 starttls_reply=LINE  offers STARTTLS, answers it so (a
                                    refusal: "454 4.7.0 TLS not available");
                 size=N             offers SIZE N;  eightbit=False: no 8BITMIME;
                 body_reply=LINE    answers DATA's 354 and this line at once,
                                    then reads no more (Postfix smtp-sink -A 0);
                 cut_body_after=N   closes the connection once N bytes of
                                    content arrived, without reading the rest
                                    (with rcvbuf=N on the listening socket, so
                                    the client's bytes stay unacknowledged).

Plain sockets and one thread per connection, on 127.0.0.1 and a free port.
Records: sessions (count), reads (list of bytes per recv, all sessions),
commands (command lines, all sessions), messages (DATA contents,
dot-unstuffed), after_starttls (bytes received after the STARTTLS reply in
inject mode: a TLS ClientHello would start 0x16).
"""

import socket
import threading
import time


EXTRA = b"250 2.0.0 extra\r\n"


class HostileServer:
    def __init__(self, mode, pipelining=True, extra_after=None, rcpt_replies=None,
                 auth_reply=None, size=None, eightbit=True, body_reply=None,
                 cut_body_after=None, rcvbuf=None, starttls_reply=None):
        self.mode = mode
        self.pipelining = pipelining
        self.extra_after = extra_after
        self.rcpt_replies = rcpt_replies or {}
        self.auth_reply = auth_reply
        self.starttls_reply = starttls_reply
        self.size = size
        self.eightbit = eightbit
        self.body_reply = body_reply
        self.cut_body_after = cut_body_after
        self.commands = []
        self._local = threading.local()
        self.stopped = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf:
            # Inherited by accepted sockets; set before listen so the window
            # the client sees is small from the start.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.sessions = 0
        self.reads = []
        self.messages = []
        self.after_starttls = b""
        self.lock = threading.Lock()
        self.stopping = False
        self.threads = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)

    def stop(self):
        self.stopping = True
        self.stopped.set()
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.sessions += 1
            t = threading.Thread(target=self._session, args=(c,), daemon=True)
            t.start()

    def _send(self, c, data):
        if self.pending is not None:
            self.pending.append(data)  # one write per read (PIPELINING)
        elif self.mode == "split":
            for i in range(len(data)):
                c.sendall(data[i:i + 1])
                time.sleep(0.001)
        else:
            c.sendall(data)

    @property
    def pending(self):
        """Replies held for one write (script mode with PIPELINING); per session."""
        return getattr(self._local, "pending", None)

    def _extra(self, verb):
        """EXTRA once, after the first reply to verb (extra_after)."""
        with self.lock:
            if self.extra_after != verb:
                return b""
            self.extra_after = None
        return EXTRA

    def _flush(self, c):
        if self.pending:
            c.sendall(b"".join(self.pending))
        self._local.pending = [] if self.mode == "script" and self.pipelining else None

    def _session(self, c):
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.settimeout(30)
        buf = b""
        in_data = False
        data = b""
        got = 0
        try:
            self._send(c, b"220 hostile.test ESMTP\r\n" + self._extra("CONNECT"))
            self._flush(c)
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    return
                with self.lock:
                    self.reads.append(chunk)
                buf += chunk
                if in_data and self.cut_body_after is not None:
                    got += len(chunk)
                    if got >= self.cut_body_after:
                        return  # closed with the rest unread
                while True:
                    if in_data:
                        end = buf.find(b"\r\n.\r\n")
                        if end < 0:
                            break
                        data += buf[:end + 2]
                        buf = buf[end + 5:]
                        in_data = False
                        lines = data.split(b"\r\n")
                        data = b"\r\n".join(x[1:] if x.startswith(b".") else x for x in lines)
                        with self.lock:
                            self.messages.append(data)
                        data = b""
                        self._send(c, b"250 2.0.0 queued\r\n" + self._extra("."))
                        continue
                    nl = buf.find(b"\r\n")
                    if nl < 0:
                        break
                    line, buf = buf[:nl], buf[nl + 2:]
                    with self.lock:
                        self.commands.append(line.decode("latin-1"))
                    if self._command(c, line.decode("latin-1")) == "data":
                        if self.body_reply is not None:
                            self._send(c, (self.body_reply + "\r\n").encode())
                            self._flush(c)
                            self.stopped.wait(60)  # reads no more, as smtp-sink -A
                            return
                        in_data = True
                        got = 0
                    elif self.mode == "inject" and line.upper() == b"STARTTLS":
                        c.settimeout(3)
                        try:
                            rest = c.recv(65536)
                            with self.lock:
                                self.after_starttls = rest
                        except socket.timeout:
                            pass
                        return
                self._flush(c)
        except OSError:
            return
        finally:
            c.close()

    def _command(self, c, line):
        verb = line.split(" ", 1)[0].upper()
        out = self._scripted(verb, line) if self.mode == "script" else None
        if out is not None:
            pass
        elif verb == "EHLO":
            caps = ["hostile.test", "PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"]
            if self.mode == "inject":
                caps.append("STARTTLS")
            out = ("".join("250-%s\r\n" % x for x in caps[:-1]) +
                   "250 %s\r\n" % caps[-1]).encode()
        elif verb == "STARTTLS":
            # The forged reply rides in the same write as the 220.
            out = b"220 2.0.0 go ahead\r\n250 2.0.0 forged before TLS\r\n"
        elif verb in ("MAIL", "RSET", "NOOP"):
            out = b"250 2.1.0 ok\r\n"
        elif verb == "RCPT":
            out = b"250 2.1.5 ok\r\n"
        elif verb == "DATA":
            out = b"354 go ahead\r\n"
        elif verb == "QUIT":
            out = b"221 2.0.0 bye\r\n"
        else:
            out = b"502 5.5.2 what\r\n"
        self._send(c, out + self._extra(verb))
        return "data" if out.startswith(b"354") else None

    def _scripted(self, verb, line):
        """Script mode's replies where they differ from the defaults; None
        for the default reply."""
        if verb == "EHLO":
            caps = ["hostile.test", "ENHANCEDSTATUSCODES"]
            if self.pipelining:
                caps.append("PIPELINING")
            if self.eightbit:
                caps.append("8BITMIME")
            if self.size is not None:
                caps.append("SIZE %d" % self.size)
            if self.auth_reply is not None:
                caps.append("AUTH PLAIN LOGIN")
            if self.starttls_reply is not None:
                caps.append("STARTTLS")
            return ("".join("250-%s\r\n" % x for x in caps[:-1]) +
                    "250 %s\r\n" % caps[-1]).encode()
        if verb == "AUTH" and self.auth_reply is not None:
            return (self.auth_reply + "\r\n").encode()
        if verb == "STARTTLS" and self.starttls_reply is not None:
            return (self.starttls_reply + "\r\n").encode()
        if verb == "RCPT":
            addr = line.split(":", 1)[-1].strip().strip("<>").split(">")[0]
            reply = self.rcpt_replies.get(addr.split("@")[0].lower())
            if reply is not None:
                return (reply + "\r\n").encode()
        return None
