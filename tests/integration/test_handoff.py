"""A fresh message's envelope and small content go from ingest to the wire in
memory (daemon/core/handoff.h); every other send reads the spool. Both must
put the same bytes on the wire, checked at a real peer (aiosmtpd): the header
edits (X-Sender/X-Receiver and Bcc: removed, Date:, Message-ID:, Received:
added), force_sender/force_from, dot-stuffing (raw and dot_stuffed = yes
folders), lone CRs, long lines, a file without a final line end; and the
handoffs' memory stays within their budget however many messages wait."""

import contextlib
import os
import re
import time

import harness
from harness import Pickupd, SmtpServer, wait_for

# Each message once sent from memory, once (after a 451) from the spool.
RAW = [
    b"X-Sender: app@example.org\nX-Receiver: bob@example.net\n"
    b"From: App <app@example.org>,\n\tother@example.org\nTo: list:;\n"
    b"Bcc: hidden@example.net\nSubject: edits\n\n"
    b".a line with a leading dot\n.\n..two dots\nlone\rCR\n"
    + b"x" * 1500 + b"\nend without newline",
    b"Subject: no From at all\nSender: s@example.org\nTo: bob@example.net\n"
    b"Date: not a date\nMessage-ID: broken\n\nbody\r\n.\r\nmore\r\n",
]
# The same as a dot-stuffed (IIS-era) writer writes it: the final "." ends it.
STUFFED = [
    b"From: a@example.org\r\nTo: bob@example.net\r\nSubject: stuffed\r\n\r\n"
    b"..stuffed dot\r\n...two\r\nplain\r\n.\r\n",
]

ID_RE = re.compile(rb"[0-9A-Z]{20}")
DATE_RE = re.compile(rb"[A-Z][a-z]{2}, \d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}")


def normalized(data):
    """The content with what differs between two sends of one file (its queue
    ID, the date pickupd stamps) replaced."""
    return DATE_RE.sub(b"DATE", ID_RE.sub(b"ID", data))


def loaded_from(d, what):
    return re.findall(r"([0-9A-Z]{20}): loaded from " + re.escape(what), d.log_text())


def _same_bytes(dot_stuffed, files):
    # The first DATA of each message is refused for now (451): its retry is
    # loaded from deferred/, i.e. read from the spool.
    seen = set()

    def first_refused(n, envelope):
        key = envelope.original_content.split(b"Subject:", 1)[-1][:40]
        if key in seen:
            return None
        seen.add(key)
        return "451 4.3.0 try again"

    with SmtpServer(data_reply=first_refused) as srv:
        d = Pickupd(relay=srv, start=False)
        d.write_config({"general": {"log_level": "debug"},
                        "pickup": {"dot_stuffed": dot_stuffed},
                        "relay test": {"force_sender": "account@example.com",
                                       "force_from": "yes"},
                        "retry": {"schedule": "1s", "jitter_percent": "0",
                                  "max_age": "1h"}}, srv.port)
        with d:
            d.start()
            d.wait_ready()
            for i, data in enumerate(files):
                d.drop("m%d.eml" % i, data)
                wait_for(lambda: len(srv.transactions) >= 2 * (i + 1), timeout=60,
                         what="both sends of message %d" % i)
            d.wait_spool_empty()
            log = d.log_text()
            memory = loaded_from(d, "memory (envelope and content)")
            spool = loaded_from(d, "the spool")
            # Every message went once each way (first try from memory).
            assert len(memory) == len(files) and len(spool) == len(files), log
            # The retry's small content was read whole by the load job and
            # sent from memory too (record.c read_small): the same bytes.
            assert sorted(loaded_from(d, "the spool (content read whole)")) == sorted(spool), log
            assert sorted(memory) == sorted(spool), log
            for i in range(len(files)):
                first, retry = srv.transactions[2 * i], srv.transactions[2 * i + 1]
                assert not first.accepted and retry.accepted, (first, retry)
                assert first.mail_from == retry.mail_from == "account@example.com"
                assert first.rcpt_tos == retry.rcpt_tos, (first, retry)
                assert normalized(first.data) == normalized(retry.data), \
                    (first.data, retry.data)
                assert harness.crlf_ok(first.data), first.data
                assert first.header("from") == ["<account@example.com>"], first.headers
                assert b"hidden@" not in first.data and b"X-Sender" not in first.data
            # Both sends tell operators the same: one qmgr line per attempt.
            for qid in memory:
                assert len(re.findall(qid + r": from=<[^>]*>, size=\d+, nrcpt=\d+ "
                                      r"\(queue active\)", log)) == 2, log
            return srv.transactions


def test_memory_and_spool_send_the_same_bytes():
    t = _same_bytes("no", RAW)
    body = t[0].body
    # Dot-stuffing on the wire (aiosmtpd unstuffed it again), CR and folding.
    assert body.startswith(b".a line with a leading dot\r\n.\r\n..two dots\r\n"), body
    assert b"lone CR" in body, body
    assert body.endswith(b"end without newline\r\n"), body
    assert t[2].header("x-original-date") == ["not a date"], t[2].headers


def test_memory_and_spool_send_the_same_bytes_dot_stuffed():
    t = _same_bytes("yes", STUFFED)
    assert t[1].body == b".stuffed dot\r\n..two\r\nplain\r\n", t[1].body


def _vm_hwm_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def test_budget_bounds_the_handoffs():
    """400 messages of 48 KiB (19 MiB in all) dropped at once, to a relay that
    takes them one at a time, slowly: messages go from memory (ingestion
    paced to delivery, test_burst_paced_to_delivery), all arrive, and the
    daemon's peak memory stays far below what keeping them all would take."""
    n, size = 400, 48 * 1024
    with SmtpServer(data_delay=0.002) as srv:
        d = Pickupd(relay=srv, start=False)
        d.write_config({"general": {"log_level": "debug"},
                        "relay test": {"max_sessions": "1",
                                       "max_messages_per_session": "1000"}}, srv.port)
        with d:
            d.start()
            d.wait_ready()
            for i in range(n):
                body = (b"line %d\n" % i) * (size // 8)
                data = b"From: a@example.org\nTo: b@example.net\nSubject: m%d\n\n" % i \
                    + body[:size - 60] + b"\n"
                name = "m%04d.eml" % i
                tmp = os.path.join(d.pickup, "." + name)
                with open(tmp, "wb") as f:
                    f.write(data)
            for i in range(n):
                name = "m%04d.eml" % i
                os.rename(os.path.join(d.pickup, "." + name), os.path.join(d.pickup, name))
            srv.wait_messages(n, timeout=240)
            d.wait_spool_empty()
            memory = loaded_from(d, "memory (envelope and content)")
            # Its content read from the spool (whole, by the load job: 48 KiB).
            envelope_only = loaded_from(d, "memory (envelope; content")
            spool = loaded_from(d, "the spool")
            assert len(memory) + len(envelope_only) + len(spool) == n
            assert memory, "no message went from memory"
            assert len(d.log_text().split("status=sent")) - 1 == n
            if not os.environ.get("PICKUPD_SANITIZE"):
                hwm = _vm_hwm_kib(d.pid)
                # 19 MiB of content; the budget is 1 MiB.
                assert hwm < 14 * 1024, "peak RSS %d KiB" % hwm
            # The sent bytes are the files' own.
            for t in srv.messages[:5]:
                assert t.header("subject")[0].startswith("m"), t.headers


def _burst(d, n, size=2048):
    """n messages written under dot names, then renamed in at once."""
    for i in range(n):
        data = b"From: a@example.org\nTo: b@example.net\nSubject: m%d\n\n" % i
        data += b"x" * (size - len(data) - 1) + b"\n"
        with open(os.path.join(d.pickup, ".m%05d.eml" % i), "wb") as f:
            f.write(data)
    for i in range(n):
        os.rename(os.path.join(d.pickup, ".m%05d.eml" % i), os.path.join(d.pickup, "m%05d.eml" % i))


def _all_claimed(d):
    """Waits until no *.eml file is left in the pickup folder."""
    wait_for(lambda: not [f for f in d.pickup_files() if f.endswith(".eml")], 60,
             what="every file claimed")


def test_burst_paced_to_delivery():
    """1500 messages of 2 KiB renamed in at once (3 MiB, six times the
    handoffs' budget) to a working relay: ingestion waits for delivery to
    make room in the budget instead of claiming ahead, so nearly all go from
    memory (without pacing, about the first 180 would, the rest be read back
    from the spool); all arrive once."""
    n = 1500
    with SmtpServer() as srv:
        d = Pickupd(relay=srv, start=False)
        d.write_config({"general": {"log_level": "debug"}}, srv.port)
        with d:
            d.start()
            d.wait_ready()
            _burst(d, n)
            srv.wait_messages(n, timeout=240)
            d.wait_spool_empty()
            memory = loaded_from(d, "memory (envelope and content)")
            spool = loaded_from(d, "the spool") + loaded_from(d, "memory (envelope;")
            assert len(memory) + len(spool) == n, (len(memory), len(spool))
            assert len(memory) >= 0.8 * n, (len(memory), len(spool))
            assert len({t.header("subject")[0] for t in srv.messages}) == n


def test_burst_to_a_slow_relay_is_claimed_within_seconds():
    """600 files renamed in at once to a relay that takes 20 messages a
    second (one session, 50 ms per message): delivery makes progress all
    the time, but pacing holds no file longer than 2 s, so every file is
    claimed (durable in the spool) long before most are sent (without that
    bound they would leave the folder at delivery's pace, in about 20 s)."""
    n = 600
    with SmtpServer(data_delay=0.05) as srv:
        d = Pickupd(relay=srv, start=False)
        d.write_config({"relay test": {"max_sessions": "1",
                                       "max_messages_per_session": "1000"}}, srv.port)
        with d:
            d.start()
            d.wait_ready()
            _burst(d, n)
            _all_claimed(d)
            sent = len(srv.messages)
            assert sent < n // 2, "the folder emptied only as messages were sent (%d)" % sent
            srv.wait_messages(n, timeout=240)
            d.wait_spool_empty()


def test_burst_claimed_whole_while_the_relay_is_down():
    """The same burst while the relay refuses connections: nothing is sent
    from memory, so nothing paces ingestion: every file is claimed (none
    waits in the folder), and all go once the relay is back."""
    n = 600
    with SmtpServer() as srv:
        port = srv.port
    d = Pickupd(relay=None, start=False)
    d.write_config({"general": {"log_level": "debug"}, "retry": {"schedule": "1s"}}, port)
    with d:
        d.start()
        d.wait_ready()
        _burst(d, n)
        _all_claimed(d)
        with SmtpServer(port=port) as srv:
            d.pickupctl("flush")
            srv.wait_messages(n, timeout=240)
            d.wait_spool_empty()
            assert len({t.header("subject")[0] for t in srv.messages}) == n


# The shim's ERRNO DELAY holds a chmod half a second and notes when it was done.
MSG = b"From: a@example.org\nTo: b@example.net\nSubject: good\n\nbody\n"


def _marks(d, op="chmod"):
    """(path, wall-clock time) of each delayed call of op the shim noted."""
    try:
        with open(os.path.join(d.dir, "faultfs.ctl.log")) as f:
            return [(p, float(t)) for o, p, t in (ln.split() for ln in f) if o == op]
    except FileNotFoundError:
        return []


def _warm(d, srv):
    """Sends one message first: offers go to an idle session, and sessions
    open when work is due, so the first message of a run is never offered."""
    d.drop("warm.eml", b"From: a@example.org\nTo: b@example.net\nSubject: warm\n\nbody\n")
    srv.wait_messages(1)
    d.wait_spool_empty()
    with srv._lock:
        srv.transactions[:] = []


def _mail_times():
    """A mail_reply hook that notes when each MAIL came, and the list."""
    times = []

    def note(_addr):
        times.append(time.time())
        return None
    return note, times


@contextlib.contextmanager
def _dropped(rule, data=MSG, name="m.eml", warm=False):
    """A daemon under the fault shim (after a first message when warm), the
    shim's rule set, then data dropped as name: (d, srv, faults, mails),
    mails the times MAIL came since; the server keeps what it read as it came
    (srv.chunks)."""
    note, mails = _mail_times()
    with SmtpServer(mail_reply=note, record_chunks=True) as srv:
        d = Pickupd(relay=srv, start=False)
        d.write_config({"general": {"log_level": "debug"}}, srv.port)
        faults = harness.fault_shim(d)
        with d:
            d.start()
            d.wait_ready()
            if warm:
                _warm(d, srv)
                mails[:] = []
            faults(rule)
            d.drop(name, data)
            yield d, srv, faults, mails


def _marked_from_memory(d, srv):
    """Waits for the one message dropped, sent from memory, to be delivered
    and removed; returns when the shim's held mark of its envelope was done."""
    srv.wait_messages(1)
    d.wait_spool_empty()
    ids = loaded_from(d, "memory (envelope and content)")
    assert len(ids) == 1, d.log_text()
    done = [t for p, t in _marks(d) if p.endswith("/queue/" + ids[0])]
    assert done, _marks(d)
    return min(done)


def test_final_dot_waits_for_the_mark():
    """A message sent straight from its handoff: its envelope is marked as
    being sent on the thread pool while the envelope commands go, and the
    final dot waits for the mark, so that a message the server may have taken
    is always marked. The mark is held half a second: the server gets the
    message only after it was done."""
    with _dropped("chmod:DELAY:/queue/\n") as (d, srv, _faults, _mails):
        done = _marked_from_memory(d, srv)
        assert srv.messages[0].received > done, (srv.messages[0].received, done)


def test_content_goes_with_its_dot_once_marked():
    """A small message sent from its handoff while its mark is held: its
    content, kept in memory, waits with the final dot and both go in one
    write once the mark is done (one write, and one read at the server,
    instead of two). The mark is held half a second: no octet of the content
    reaches the server before it was done, and the piece that brings the
    content ends with the dot."""
    with _dropped("chmod:DELAY:/queue/\n") as (d, srv, _faults, _mails):
        done = _marked_from_memory(d, srv)
        with srv._lock:
            chunks = list(srv.chunks)
        body = [(t, b) for t, b in chunks if b"Subject: good" in b]
        assert len(body) == 1, chunks
        t, b = body[0]
        assert t > done, (t, done, chunks)
        assert b.endswith(b"body\r\n.\r\n"), chunks


def test_several_messages_each_wait_for_their_own_mark():
    """Marks asked for while one mark job runs share the next job. Four
    messages dropped together go out over parallel sessions, every mark held
    half a second: each message reaches the server only after it was marked
    as being sent (its envelope in queue/, or, for one offered to an idle
    session while its claim was flushed, its content in data/), whichever
    job marked it."""
    with _dropped("chmod:DELAY:/spool/\n", warm=True) as (d, srv, _faults, _mails):
        for i in range(1, 4):
            d.drop("m%d.eml" % i,
                   b"From: a@example.org\nTo: b@example.net\nSubject: m%d\n\nbody\n" % i)
        srv.wait_messages(4, timeout=60)
        d.wait_spool_empty()
        marks = _marks(d)
        subjects = {}  # subject -> queue ID; m.eml's is "good"
        for m in re.finditer(r"(\w+): uid=.*file=(m\d?)\.eml", d.log_text()):
            subjects[m.group(2) if m.group(2) != "m" else "good"] = m.group(1)
        assert len(subjects) == 4, d.log_text()
        for t in srv.messages:
            qid = subjects[t.header("subject")[0]]
            done = [w for p, w in marks if p.endswith(("/queue/" + qid, "/data/" + qid))]
            assert done, (qid, marks)
            assert t.received > min(done), (qid, t.received, done)
        assert set(subjects.values()) <= set(loaded_from(d, "memory (envelope and content)")), \
            d.log_text()


def _received_id(t):
    """The queue ID in the Received: field pickupd adds."""
    return re.search(rb"by \S+ \(pickupd\) id (\w+)", t.data).group(1).decode()


def test_kill_while_marks_wait_for_their_job():
    """kill -9 once the first of four marks is done, the others held or
    waiting for the next mark job (no session was idle, so none is offered):
    a message reached the server only if its mark was done first; after a
    restart each is delivered, a second time only if it had reached the
    server before the kill, and each marked envelope found queued is named
    as one that may be delivered twice."""
    with _dropped("chmod:DELAY:/queue/\n") as (d, srv, faults, _mails):
        for i in range(1, 4):
            d.drop("m%d.eml" % i,
                   b"From: a@example.org\nTo: b@example.net\nSubject: m%d\n\nbody\n" % i)
        wait_for(lambda: _marks(d), 30, what="a first mark")
        d.kill9()
        marked = {os.path.basename(p): w for p, w in _marks(d)}
        before = set()
        for t in srv.messages:
            qid = _received_id(t)
            assert qid in marked and marked[qid] < t.received, (qid, t.received, marked)
            before.add(t.header("subject")[0])
        faults("")
        d.start()
        d.wait_ready()
        subjects = {"good", "m1", "m2", "m3"}
        wait_for(lambda: {t.header("subject")[0] for t in srv.messages} >= subjects, 60,
                 what="every message after the restart")
        d.wait_spool_empty()
        copies = [t.header("subject")[0] for t in srv.messages]
        for subject in subjects:
            assert 1 <= copies.count(subject) <= 1 + (subject in before), (subject, copies)
        # Still queued at the restart (not removed before the kill): named.
        for qid in marked:
            if re.search(qid + r": loaded from the spool", d.log_text()):
                d.wait_log(r"warning: " + qid + r": it was being sent when pickupd stopped")


def test_failed_mark_ends_the_transaction_before_its_dot():
    """The mark fails (EIO, half a second late, when the content has long
    been sent): the transaction ends without its dot (the session is dropped,
    as DATA cannot end cleanly), the message is deferred with the reason, and
    goes once the disk is back."""
    with _dropped("chmod:EIO+DELAY:/queue/\n") as (d, srv, faults, _mails):
        d.wait_log(r"cannot mark the envelope as being sent: Input/output error")
        d.wait_log(r"status=deferred \(cannot mark the envelope as being sent")
        wait_for(lambda: d.spool_files("deferred"), 30, what="the message in deferred/")
        assert not srv.messages and not srv.transactions, srv.transactions
        faults("")
        d.pickupctl("flush")
        srv.wait_messages(1)
        d.wait_spool_empty()
        assert len(srv.messages) == 1
        assert srv.messages[0].header("subject") == ["good"]


def test_refusal_while_the_mark_is_on_its_way():
    """The server refuses the recipient while the mark is still held: the
    transaction is over before its dot, its outcome waits for the mark job,
    then the message is bounced as usual, and the session takes the next."""
    refused = b"From: a@example.org\nTo: fail550@example.net\nSubject: refused\n\nbody\n"
    with _dropped("chmod:DELAY:/queue/\n", refused, "bad.eml") as (d, srv, _faults, _mails):
        d.wait_log(r"to=<fail550@example.net>.*status=bounced")
        d.drop("good.eml", MSG)
        wait_for(lambda: [m for m in srv.messages if m.header("subject") == ["good"]],
                 60, what="the next message")
        d.wait_log(r"removed", count=2)  # the good one and the notification
        assert len(d.spool_files("badmail")) == 1, d.spool_files("badmail")
        assert not d.spool_files("queue") and not d.spool_files("deferred")
        assert not [t for t in srv.transactions if "fail550@example.net" in t.rcpt_tos]


# A lone file is offered to delivery before its claim is durable: the
# message is sent while its content is flushed (the content is marked as being
# sent first), and its outcome is recorded once the claim is complete. The
# shim holds or fails the content's fsync.

def _sent_while_held(d, srv, mails):
    """The message and MAIL both came before the held content fsync was done."""
    wait_for(lambda: _marks(d, "fsync"), 30, what="the content's fsync to be let go")
    synced = _marks(d, "fsync")
    assert len(synced) == 1 and len(mails) == 1 and len(srv.messages) == 1, \
        (synced, mails, srv.messages)
    assert mails[0] < srv.messages[0].received < synced[0][1], \
        (mails, srv.messages[0].received, synced)


def test_message_sent_while_the_claim_is_flushed():
    """The content's fsync is held half a second: the server has the whole
    message before it is done, and the outcome is logged after it, in the
    usual order (picked up, active, sent); the content carried the mark
    while it was in flight, and nothing is left."""
    with _dropped("fsync:DELAY:/data/\n", warm=True) as (d, srv, faults, mails):
        srv.wait_messages(1)
        marked = [f for f in os.listdir(os.path.join(d.spool, "data"))
                  if "." not in f and os.stat(os.path.join(d.spool, "data", f)).st_mode & 0o100]
        assert marked, "the content was not marked while it was in flight"
        d.wait_spool_empty()
        # The outcome is logged once recorded: after the removal.
        d.wait_log(r": removed$", count=2)  # the warm-up and m.eml
        _sent_while_held(d, srv, mails)
        log = d.log_text()
        qid = re.search(r"(\w+): uid=.*file=m\.eml", log).group(1)
        assert log.index(qid + ": uid=") < log.index(qid + ": from=<") < \
            log.index(qid + ": to=<"), log
        assert re.search(qid + r": to=<.*status=sent", log), log


def test_failed_claim_after_its_dot_sends_it_once_more_and_says_so():
    """The content's fsync fails (EIO, half a second late) after the server
    took the message: the claim is put back (with the file's own mode), the
    log says the message may be delivered twice, and the file is taken again
    the durable way (not offered: the failing disk sends nothing more) and
    sent once more once the disk is back: two copies, never more."""
    with _dropped("fsync:EIO+DELAY:/data/\n", warm=True) as (d, srv, faults, mails):
        d.wait_log(r"cannot claim: Input/output error")
        d.wait_log(r"its claim was not completed after the message was sent; the file is "
                   r"taken again and the message may be delivered twice")
        assert len(srv.messages) == 1, srv.messages
        assert not d.spool_files("deferred") and not d.spool_files("badmail")
        # Tried again while the disk still fails: never sent again meanwhile.
        d.wait_log(r"cannot claim: Input/output error", count=2)
        assert len(srv.messages) == 1, srv.messages
        def back_unmarked():
            try:
                return not os.stat(os.path.join(d.pickup, "m.eml")).st_mode & 0o100
            except FileNotFoundError:  # taken again meanwhile
                return False
        wait_for(back_unmarked, 30, what="the file back in pickup/ without the mark")
        faults("")
        srv.wait_messages(2)
        d.wait_spool_empty()
        assert d.pickup_files() == []
        assert [m.header("subject") for m in srv.messages] == [["good"], ["good"]]


def test_kill_while_the_claim_is_flushed():
    """kill -9 while the content's fsync is held, after the server took the
    message: recovery finds the content without its envelope, marked, names
    it as one that may be delivered twice, and sends it again: two copies,
    the second said."""
    with _dropped("fsync:DELAY:/data/\n", warm=True) as (d, srv, faults, mails):
        srv.wait_messages(1)
        d.kill9()
        faults("")
        d.start()
        d.wait_ready()
        d.wait_log(r"it was being sent when pickupd stopped without recording the outcome; "
                   r"the message may be delivered twice")
        d.wait_log(r"recovered content of")
        srv.wait_messages(2)
        d.wait_spool_empty()
        assert [m.header("subject") for m in srv.messages] == [["good"], ["good"]]


def test_refusal_while_the_claim_is_flushed():
    """The recipient is refused while the claim is still being flushed: the
    outcome waits for the claim, then the message is bounced as usual, and
    the next one is sent."""
    refused = b"From: a@example.org\nTo: fail550@example.net\nSubject: refused\n\nbody\n"
    with _dropped("fsync:DELAY:/data/\n", refused, "bad.eml", warm=True) as (d, srv, faults, _mails):
        d.wait_log(r"to=<fail550@example.net>.*status=bounced")
        faults("")
        d.drop("good.eml", MSG)
        wait_for(lambda: [m for m in srv.messages if m.header("subject") == ["good"]],
                 60, what="the next message")
        d.wait_log(r"removed", count=3)  # the warm-up, the notification, the good one
        assert len(d.spool_files("badmail")) == 1, d.spool_files("badmail")


if __name__ == "__main__":
    harness.main(globals())
