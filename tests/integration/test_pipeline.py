"""The next transaction pipelined behind the final dot (RFC 2920 3.1: the
message content may open a group of commands), against aiosmtpd: a session
waiting for the reply to its dot already sends the next due message's
MAIL, RCPT and DATA, and each reply still goes to its own message, through
refusals at every step, a session lost after the dot, and a failed mark."""

import contextlib
import time

import harness
from harness import DROP, Pickupd, SmtpServer, status_re, wait_for

DELAY = 1.0  # the server waits this long before it answers a final dot


def pipelining(lines):
    """aiosmtpd reads pipelined commands in order, but does not say so."""
    return lines[:-1] + ["250-PIPELINING"] + lines[-1:]


def msg(i, rcpt=None):
    return (b"From: a@example.org\nTo: %s\nSubject: m%d\n\nbody %d\n"
            % ((rcpt or "bob%d@example.net" % i).encode(), i, i))


def relay(**keys):
    return {"relay test": dict(keys), "general": {"log_level": "debug"}}


def one_session(srv):
    """pickupd (not started) relaying to srv over one session at most."""
    d = Pickupd(relay=srv, start=False)
    d.write_config(relay(max_sessions="1"), srv.port)
    return d


@contextlib.contextmanager
def started_under_faults(srv):
    """one_session started under the fault shim (no fault yet): (d, faults)."""
    d = one_session(srv)
    faults = harness.fault_shim(d)
    with d:
        d.start()
        d.wait_ready()
        yield d, faults


def rcpt_time(srv, rcpt):
    """When the server read the RCPT command for rcpt (the first time)."""
    for t, b in srv.chunks:
        if b"RCPT TO:<%s>" % rcpt.encode() in b:
            return t
    return None


def pipelined(srv, transactions):
    """The transactions (of one session, in order) whose RCPT came before
    the server answered the dot of the one before: sent behind that dot, not
    after its reply (the reply goes right after Transaction.received)."""
    out = []
    for prev, t in zip(transactions, transactions[1:]):
        when = rcpt_time(srv, t.rcpt_tos[0])
        if when is not None and when < prev.received:
            out.append(t)
    return out


def test_next_message_goes_behind_the_dot():
    """Six messages over one session while the server takes a second to
    answer each dot: the next message's envelope is already there when it
    answers, each message is delivered once, whole, and no RSET is sent
    between them (the dot's reply ends the transaction before)."""
    with SmtpServer(ehlo_filter=pipelining, record_chunks=True, data_delay=DELAY) as srv:
        d = one_session(srv)
        for i in range(6):
            d.drop("m%d.eml" % i, msg(i))
        with d:
            d.start()
            d.wait_ready()
            srv.wait_messages(6)
            d.wait_spool_empty()
            assert srv.connections == 1, srv.connections
            got = sorted(t.header("subject")[0] for t in srv.messages)
            assert got == ["m%d" % i for i in range(6)], got
            for t in srv.messages:
                i = int(t.header("subject")[0][1:])
                assert t.rcpt_tos == ["bob%d@example.net" % i], t.rcpt_tos
                assert t.data.endswith(b"body %d\r\n" % i), t.data
            # Five follow a first; those due when a dot went (all, but
            # maybe one claimed late) went behind it.
            ahead = pipelined(srv, srv.transactions)
            assert len(ahead) >= 4, [(t.received, t.rcpt_tos) for t in srv.transactions]
            stream = b"".join(b for _, b in srv.chunks)
            assert stream.count(b"RSET") <= 5 - len(ahead), stream
            for i in range(6):
                d.wait_log(status_re("sent", "bob%d@example.net" % i))


def test_each_reply_goes_to_its_own_message():
    """Refusals at every step while messages are pipelined on one session:
    a refused recipient, a refused message at its dot, a deferred
    recipient; the messages around them are delivered, and each outcome is
    its own message's."""
    rcpts = ["bob0@example.net", "fail550@example.net", "bob2@example.net",
             "defer451@example.net", "bob4@example.net"]

    def at_dot(n, envelope):
        if envelope.rcpt_tos == ["bob2@example.net"]:
            return "554 5.6.0 content refused"
        return None

    with SmtpServer(ehlo_filter=pipelining, record_chunks=True, data_delay=DELAY, data_reply=at_dot) as srv:
        d = one_session(srv)
        for i, r in enumerate(rcpts):
            d.drop("m%d.eml" % i, msg(i, r))
        with d:
            d.start()
            d.wait_ready()
            d.wait_log(status_re("sent", "bob0@example.net"))
            d.wait_log(status_re("bounced", "fail550@example.net"))
            lines = d.wait_log(status_re("bounced", "bob2@example.net"))
            assert "554 5.6.0 content refused" in lines[0].group(0), lines[0].group(0)
            lines = d.wait_log(status_re("deferred", "defer451@example.net"))
            assert "451 4.3.0 try later" in lines[0].group(0), lines[0].group(0)
            d.wait_log(status_re("sent", "bob4@example.net"))
            accepted = sorted(t.rcpt_tos[0] for t in srv.messages
                              if t.rcpt_tos[0] in rcpts)
            assert accepted == ["bob0@example.net", "bob4@example.net"], accepted
            assert not d.log_matches(status_re("sent", "bob2@example.net"))
            assert not d.log_matches(status_re("sent", "fail550@example.net"))
            # Only DATA transactions are timed: at least one of them (bob2
            # or bob4) went behind the dot of the one before.
            ours = [t for t in srv.transactions if t.rcpt_tos[0] in rcpts]
            assert pipelined(srv, ours), [(t.received, t.rcpt_tos) for t in ours]


def test_session_lost_at_the_dot_with_the_next_behind_it():
    """The server drops the connection instead of answering the first
    message's dot, after the next message's envelope came: the first may
    have been taken (the log says so; it waits for its retry), the second
    was not tried and goes again at once on a new session."""
    with SmtpServer(ehlo_filter=pipelining, record_chunks=True, data_delay=DELAY, data_replies=[DROP]) as srv:
        d = one_session(srv)
        d.drop("m0.eml", msg(0))
        d.drop("m1.eml", msg(1))
        with d:
            d.start()
            d.wait_ready()
            srv.wait_messages(1)
            first = srv.transactions[0]
            assert first.reply == DROP, first.reply
            lost, = first.rcpt_tos
            other = "bob1@example.net" if lost == "bob0@example.net" else "bob0@example.net"
            assert srv.messages[0].rcpt_tos == [other], srv.messages[0].rcpt_tos
            # Its envelope had come on the first connection, behind the dot.
            when = rcpt_time(srv, other)
            assert when is not None and when < first.received, (when, first.received)
            assert srv.connections == 2, srv.connections
            d.wait_log(r"while sending end of data: message may be delivered twice")
            d.wait_log(status_re("deferred", lost))
            d.wait_log(status_re("sent", other))
            assert not d.log_matches(status_re("deferred", other)), d.log_text()
            assert len(d.spool_files("deferred")) == 1, d.spool_files("deferred")


def _m1_mark_fails(d, faults):
    """Marks fail from now on; m1 is dropped: m0 is sent, m1 deferred."""
    faults("chmod:EIO:/queue/\n")
    d.drop("m1.eml", msg(1))
    d.wait_log(r"cannot mark the envelope as being sent: Input/output error")
    d.wait_log(status_re("sent", "bob0@example.net"))
    d.wait_log(status_re("deferred", "bob1@example.net"))


def _m1_after_the_flush(d, srv, faults):
    """The disk is back: m1 goes once flushed, and nothing is left."""
    faults("")
    d.pickupctl("flush")
    wait_for(lambda: [t for t in srv.messages if t.rcpt_tos == ["bob1@example.net"]],
             60, what="m1 after the flush")
    d.wait_spool_empty()


def test_failed_mark_of_a_message_behind_the_dot():
    """The next message goes behind the dot, and its mark (the envelope in
    queue/ as being sent) fails: the message before it keeps its outcome
    (sent), then the session is dropped (DATA cannot end cleanly) and the
    failed one is deferred with the reason; it goes once the disk is back.
    The first is a lone file offered to the idle session (its mark is its
    content's, in data/); the server sits on its MAIL for a second, while
    the second file is claimed and waits for the session."""
    mails = []

    def slow_first(address):
        mails.append((time.time(), address))
        if address == "slow@example.org":
            time.sleep(DELAY)  # blocks aiosmtpd's loop: nothing is read meanwhile
        return None

    with SmtpServer(ehlo_filter=pipelining, record_chunks=True, mail_reply=slow_first) as srv:
        with started_under_faults(srv) as (d, faults):
            d.drop("w.eml", msg(9))  # a warm, idle session
            srv.wait_messages(1)
            d.wait_spool_empty()
            d.drop("m0.eml", msg(0).replace(b"a@example.org", b"slow@example.org"))
            wait_for(lambda: [a for _, a in mails if a == "slow@example.org"], 60,
                     what="m0's MAIL")
            _m1_mark_fails(d, faults)
            m0 = [t for t in srv.transactions if t.rcpt_tos == ["bob0@example.net"]][0]
            when = rcpt_time(srv, "bob1@example.net")
            assert when is not None and when < m0.received, (when, m0.received)
            assert not d.log_matches(r"may be delivered twice"), d.log_text()
            assert not [t for t in srv.transactions if t.rcpt_tos == ["bob1@example.net"]]
            _m1_after_the_flush(d, srv, faults)


def test_failed_mark_of_a_message_waiting_for_the_dot_reply():
    """A message taken after the dot went waits for the dot's reply (its
    envelope apart from the dot would be answered apart), and its mark
    fails meanwhile: the message before it is sent, the session is dropped,
    the failed one is deferred, and goes once the disk is back."""
    with SmtpServer(ehlo_filter=pipelining, record_chunks=True, data_delay=2 * DELAY) as srv:
        with started_under_faults(srv) as (d, faults):
            d.drop("m0.eml", msg(0))
            wait_for(lambda: rcpt_time(srv, "bob0@example.net"), 60, what="m0's envelope")
            _m1_mark_fails(d, faults)
            assert rcpt_time(srv, "bob1@example.net") is None, srv.chunks
            assert srv.connections == 1, srv.connections
            assert not d.log_matches(r"may be delivered twice"), d.log_text()
            _m1_after_the_flush(d, srv, faults)


if __name__ == "__main__":
    harness.main(globals())
