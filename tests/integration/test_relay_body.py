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
  - a 1 MiB message whose body is clean (CRLF lines the filter copies
    unchanged) up to a tail of awkward lines: ingest finds the clean run and
    a plaintext session sends it from the page cache (sendfile), unread;
    what arrives is the model's bytes, also when sendfile takes only a few
    KiB a call (the rest of each chunk is read and written, cut anywhere in
    a line), when the loop may not read the content (sendfile fails as the
    read does, EAGAIN or EINVAL: the thread pool reads it), and over TLS (no sendfile: the run
    is written from the chunks read, unscanned);
  - the bytes and read calls of the daemon (/proc/PID/io) while it takes in
    and sends one 1 MiB message, against smtp-sink, and that the send's
    reads are the loop thread's (the page cache holds the content)."""

import os
import re
import tempfile

import harness
from harness import Pickupd, SmtpServer, make_certs, status_re
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


# Lines the filter changes, after the clean run: a '.' to stuff, a bare LF,
# a lone CR, a line to fold and a last line without its end.
TAIL = b".a dot to stuff\r\nbare lf\nlone\rcr\r\n" + b"y" * 1500 + b"\r\nno line end"
UNREAD_RE = r"(?P<qid>\S+): (?P<unread>\d+) of (?P<sent>\d+) octets sent from the page cache"


def send_clean(srv, d, n=2):
    """n 1 MiB messages with a clean body and TAIL through d (at debug log
    level); each arrives as the model says. Returns the octets sent unread."""
    line = b"A line of body text, about as long as a real one is, seventy or so.\r\n"
    base = len(srv.messages)
    for i in range(n):
        tag = b"clean%d" % i
        head = HEAD % (tag, tag)
        data = head + line * ((SIZE - len(head)) // len(line)) + TAIL
        d.drop(tag.decode() + ".eml", data)
        m = srv.wait_messages(base + i + 1, timeout=120)[-1]
        got = m.data.split(b"\r\n\r\n", 1)[1]
        want = wire_model(data.split(b"\r\n\r\n", 1)[1])
        if got != want:
            k = next((k for k in range(min(len(got), len(want))) if got[k] != want[k]),
                     min(len(got), len(want)))
            raise AssertionError("message %d: body differs at octet %d of %d/%d: got %r, want %r"
                                 % (i, k, len(got), len(want), got[k - 20:k + 20],
                                    want[k - 20:k + 20]))
    d.wait_spool_empty()
    return sum(int(m.group("unread")) for m in re.finditer(UNREAD_RE, d.log_text()))


def debug_daemon(srv, **relay):
    d = Pickupd(relay=srv, start=False)
    d.write_config({"general": {"log_level": "debug"}, "relay test": relay}, srv.port)
    return d


def test_clean_body_sent_unread():
    with SmtpServer() as srv:
        with debug_daemon(srv) as d:
            d.start()
            d.wait_ready()
            unread = send_clean(srv, d)
    # All of each message's clean run: the first read (while the envelope
    # is answered) stops where the run starts.
    assert unread >= 2 * (SIZE - 4096 - len(TAIL)), unread


def send_clean_under(rule):
    """send_clean through a daemon under the fault shim's rule."""
    with SmtpServer() as srv:
        d = debug_daemon(srv)
        harness.fault_shim(d)(rule)
        with d:
            d.start()
            d.wait_ready()
            return send_clean(srv, d)


def test_clean_body_exact_when_sendfile_takes_little():
    """sendfile takes 4093 octets a call, as a socket with little room
    does: the rest of each chunk is read and queued, cut anywhere in a line
    (in a CRLF too), and sendfile goes on after it has drained."""
    unread = send_clean_under("sendfile:SHORT:/data/")
    assert 0 < unread < SIZE, unread


def test_clean_body_exact_when_not_cached():
    """The loop may not read the content (its reads and sendfile fail with
    EAGAIN): the thread pool reads each chunk, written unscanned."""
    assert send_clean_under("read,main:EAGAIN:/data/") == 0


def test_clean_body_exact_when_sendfile_is_refused():
    """sendfile refused for the content file (EINVAL, as from a file system
    without it; the loop's cached reads too): never tried again, every chunk
    is read on the thread pool and written."""
    assert send_clean_under("read,main:22:/data/") == 0  # 22: EINVAL


def test_clean_body_not_sent_from_the_disk_by_the_loop():
    """The page cache does not hold the content (the loop's RWF_NOWAIT
    probes say so; sendfile itself would work, and wait for the disk on the
    loop): nothing goes by sendfile, the pool reads the chunks."""
    assert send_clean_under("nowait,main:EAGAIN:/data/") == 0


def test_clean_body_exact_over_tls():
    c = make_certs(tempfile.mkdtemp(prefix="pickupd-body-certs-"))
    with SmtpServer(tls_context=c.context(), require_starttls=True) as srv:
        with debug_daemon(srv, tls="starttls", ca_file=c.ca) as d:
            d.start()
            d.wait_ready()
            assert send_clean(srv, d) == 0
            assert all(m.tls for m in srv.wait_messages(2))


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
        # itself (its first chunk with RWF_NOWAIT, the rest by sendfile, which
        # /proc counts as reads), not the thread pool; the ingest job (a pool
        # thread) reads it once more.
        assert len(msg) <= loop_read < len(msg) + 16384, (loop_read, len(msg))
        # Twice the content, plus envelope, replies and events (a few KiB);
        # the head read again at ingest was 68 KiB more.
        assert read < 2 * len(msg) + 16384, (read, len(msg))
        # Ingest in 64 KiB reads (16), the send in 128 KiB reads or
        # sendfile calls (8), plus the head, the page-cache probes, the
        # envelope, replies, events and the thread pool's wake-ups (23-25
        # here; how replies and wake-ups fall moves it by a few, so the
        # margin: reads of 32 KiB at ingest would make about 64).
        assert calls <= 16 + 8 + 32, calls


if __name__ == "__main__":
    harness.main(globals())
