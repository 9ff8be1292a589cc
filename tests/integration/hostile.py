"""A scripted SMTP server for what no real server does on request:

  mode "inject"  answers STARTTLS with "220" and, in the same write, a forged
                 "250" (the CVE-2021-22947 response-injection attack);
  mode "split"   a well-behaved server whose every reply is written one byte
                 at a time (TCP_NODELAY, a pause between bytes), so the client
                 sees replies split at every byte; it advertises PIPELINING and
                 records the bytes of each recv() so a test can check that
                 MAIL, RCPT and DATA arrived in one write.

Plain sockets and one thread per connection, on 127.0.0.1 and a free port.
Records: sessions (count), reads (list of bytes per recv, all sessions),
messages (DATA contents, dot-unstuffed), after_starttls (bytes received after
the STARTTLS reply in inject mode: a TLS ClientHello would start 0x16).
"""

import socket
import threading
import time


class HostileServer:
    def __init__(self, mode):
        self.mode = mode
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
        if self.mode == "split":
            for i in range(len(data)):
                c.sendall(data[i:i + 1])
                time.sleep(0.001)
        else:
            c.sendall(data)

    def _session(self, c):
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.settimeout(30)
        buf = b""
        in_data = False
        data = b""
        try:
            self._send(c, b"220 hostile.test ESMTP\r\n")
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    return
                with self.lock:
                    self.reads.append(chunk)
                buf += chunk
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
                        self._send(c, b"250 2.0.0 queued\r\n")
                        continue
                    nl = buf.find(b"\r\n")
                    if nl < 0:
                        break
                    line, buf = buf[:nl], buf[nl + 2:]
                    if self._command(c, line.decode("latin-1")) == "data":
                        in_data = True
                    elif self.mode == "inject" and line.upper() == b"STARTTLS":
                        c.settimeout(3)
                        try:
                            rest = c.recv(65536)
                            with self.lock:
                                self.after_starttls = rest
                        except socket.timeout:
                            pass
                        return
        except OSError:
            return
        finally:
            c.close()

    def _command(self, c, line):
        verb = line.split(" ", 1)[0].upper()
        if verb == "EHLO":
            caps = ["hostile.test", "PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"]
            if self.mode == "inject":
                caps.append("STARTTLS")
            out = "".join("250-%s\r\n" % x for x in caps[:-1]) + "250 %s\r\n" % caps[-1]
            self._send(c, out.encode())
        elif verb == "STARTTLS":
            # The forged reply rides in the same write as the 220.
            self._send(c, b"220 2.0.0 go ahead\r\n250 2.0.0 forged before TLS\r\n")
        elif verb in ("MAIL", "RSET", "NOOP"):
            self._send(c, b"250 2.1.0 ok\r\n")
        elif verb == "RCPT":
            self._send(c, b"250 2.1.5 ok\r\n")
        elif verb == "DATA":
            self._send(c, b"354 go ahead\r\n")
            return "data"
        elif verb == "QUIT":
            self._send(c, b"221 2.0.0 bye\r\n")
        else:
            self._send(c, b"502 5.5.2 what\r\n")
        return None
