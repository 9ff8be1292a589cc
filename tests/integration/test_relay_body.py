"""Large bodies through the real daemon (issue 10, large messages): what
reaches the SMTP server is exactly the wire form of the file, whatever falls
on the boundaries of the chunks the content is read in; and the content is
read from disk once at ingest and once at send, in chunks of at least 64 KiB
(its head is not read twice, and the send does not read it in pieces
smaller than the chunk).

  - a 1 MiB message whose awkward lines (a '.' to stuff, a CRLF split
    between chunks, a bare LF, a lone CR, a line to fold, 8-bit text) sit at
    and around every 64 KiB boundary, against aiosmtpd: the body received
    equals a plain Python model of the wire filter (common/wire.h), whether
    the loop reads the content from the page cache or, when it is not
    there, the thread pool reads it;
  - the bytes and read calls of the daemon (/proc/PID/io) while it takes in
    and sends one 1 MiB message, against smtp-sink, and that the send's
    reads are the loop thread's (the page cache holds the content)."""

import os

import harness
from harness import Pickupd, SmtpServer, status_re
from test_relay_sink import Sink

SIZE = 1 << 20
HEAD = (b"From: a@example.org\r\nTo: bob@example.net\r\nSubject: %s\r\n"
        b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <%s@example.org>\r\n\r\n")


def wire_model(body):
    """The body as the server sees it after un-stuffing: CRLF and bare LF
    end a line, a lone CR is a space, lines over 998 octets (counting the
    stuffed '.') are folded with CRLF SP."""
    out = []
    lines = body.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for ln in lines:
        ln = ln.replace(b"\r", b" ")
        col = 1 if ln.startswith(b".") else 0
        seg = bytearray()
        for c in ln:
            if col >= 998:
                seg += b"\r\n "
                col = 1
            seg.append(c)
            col += 1
        out.append(bytes(seg))
    return b"".join(x + b"\r\n" for x in out)


def awkward_body(size, base):
    """size octets of body; boundaries count from the file's start, base
    octets of header before the body."""
    plain = b"A line of body text, about as long as a real one is, seventy or so.\r\n"
    awkward = [b".dot to stuff\r\n", b"\r\n", b"bare lf\n", b"lone\rcr\r\n",
               b"x" * 1500 + b"\r\n", b"\xc3\xa9t\xc3\xa9\r\n", b"..two dots\r\n", b".\r\n"]
    out = bytearray()
    chunk = 1 << 16
    k = 0
    while len(out) < size:
        nxt = ((base + len(out)) // chunk + 1) * chunk
        # plain text up to a few octets before the next boundary, then one
        # awkward line starting at an offset that walks around the boundary
        while base + len(out) + len(plain) <= nxt - 3 + (k % 7):
            out += plain
        out += awkward[k % len(awkward)]
        k += 1
    return bytes(out)


def send_awkward(srv, d):
    """Two 1 MiB awkward messages through d; each arrives as the model says."""
    for split_crlf in (False, True):
        tag = b"big%d" % split_crlf
        head = HEAD % (tag, tag)
        body = awkward_body(SIZE, len(head))
        if split_crlf:
            # a CRLF split by a read boundary (its CR the last octet of
            # a 128 KiB chunk), then a '.' to stuff
            b = (1 << 17) - 1 - len(head)
            body = body[:b] + b"\r\n.x\r\n" + body[b + 6:]
        data = head + body
        d.drop(tag.decode() + ".eml", data)
        m = srv.wait_messages(1 + split_crlf, timeout=120)[-1]
        got = m.data.split(b"\r\n\r\n", 1)[1]
        want = wire_model(data.split(b"\r\n\r\n", 1)[1])
        if got != want:
            i = next(i for i in range(min(len(got), len(want))) if got[i] != want[i])
            raise AssertionError("body differs at octet %d: got %r, want %r"
                                 % (i, got[i - 20:i + 20], want[i - 20:i + 20]))
    d.wait_spool_empty()


def test_large_body_exact_across_chunks():
    # The content is in the page cache: the loop reads it (RWF_NOWAIT).
    with SmtpServer() as srv, Pickupd(relay=srv) as d:
        send_awkward(srv, d)


def test_large_body_exact_when_not_cached():
    """Every read the loop tries says the page cache does not hold the
    content (EAGAIN, as RWF_NOWAIT does): each chunk is read on the thread
    pool instead, and the bodies still arrive exactly."""
    with SmtpServer() as srv:
        d = Pickupd(relay=srv, start=False)
        faults = harness.fault_shim(d)
        faults("read,main:EAGAIN:/data/")
        with d:
            d.start()
            d.wait_ready()
            send_awkward(srv, d)


def proc_io(pid, tid=None):
    """/proc/PID/io, or with tid one thread's (the loop thread's id is the pid)."""
    path = "/proc/%d/io" % pid if tid is None else "/proc/%d/task/%d/io" % (pid, tid)
    with open(path) as f:
        return {k: int(v) for k, v in (ln.split(": ") for ln in f)}


def test_content_read_once_at_ingest_and_once_at_send():
    msg = HEAD % (b"once", b"once")
    msg += b"x" * 75 + b"\r\n"
    line = b"A line of body text, about as long as a real one is, seventy or so.\r\n"
    msg += line * ((SIZE - len(msg)) // len(line))
    with Sink() as sink, Pickupd(relay=sink.port) as d:
        d.drop("warm.eml", HEAD % (b"warm", b"warm"))  # the session is up
        d.wait_log(status_re("sent", "bob@example.net"))
        d.wait_spool_empty()
        before = proc_io(d.pid)
        loop_before = proc_io(d.pid, d.pid)
        d.drop("once.eml", msg)
        d.wait_log(status_re("sent", "bob@example.net"), count=2, timeout=120)
        d.wait_spool_empty()
        after = proc_io(d.pid)
        loop_read = proc_io(d.pid, d.pid)["rchar"] - loop_before["rchar"]
        read = after["rchar"] - before["rchar"]
        calls = after["syscr"] - before["syscr"]
        print("  %d octets: %d read in %d calls, %d of them by the loop thread"
              % (len(msg), read, calls, loop_read))
        # The content just taken in is in the page cache: the loop reads it
        # itself (RWF_NOWAIT), not the thread pool; the ingest job (a pool
        # thread) reads it once more.
        assert len(msg) <= loop_read < len(msg) + 16384, (loop_read, len(msg))
        # Twice the content, plus envelope, replies and events (a few KiB);
        # the head read again at ingest was 68 KiB more.
        assert read < 2 * len(msg) + 16384, (read, len(msg))
        # Ingest in 64 KiB reads (16), the send in 128 KiB reads (8), plus
        # the head, the envelope, replies, events and the thread pool's
        # wake-ups (about 17 in all).
        assert calls <= 16 + 8 + 24, calls


if __name__ == "__main__":
    harness.main(globals())
