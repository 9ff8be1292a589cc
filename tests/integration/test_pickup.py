"""Pickup ingest through the real daemon against aiosmtpd: what legacy and
modern writers drop is delivered with the right envelope and the right bytes
(issue 4: envelope, header fixes, dot_stuffed, several folders, completeness).

Every assertion is on what the SMTP server received (aiosmtpd un-stuffs dots,
so Transaction.data is the content itself)."""

import fcntl
import os
import re
import threading
import time

import harness
from harness import Pickupd, SmtpServer, crlf_ok, status_re, wait_for

HOST = "mx.pickup.test"
GENERAL = {"general": {"hostname": HOST}}


def cfg(**pickup):
    c = dict(GENERAL)
    if pickup:
        c["pickup"] = pickup
    return c


def crlf(b):
    return b.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def claim_line(d, name):
    m = d.wait_log(r"^pickupd: (?P<qid>\S+): uid=\d+, pickup=(?P<pickup>[^,]+), file=%s, "
                   r"from=<(?P<from>[^>]*)>, nrcpt=(?P<n>\d+)" % re.escape(name))
    return m[0]


def wait_queue_empty(d):
    """Nothing queued or deferred (refused files keep their data/ in badmail)."""
    wait_for(lambda: not d.spool_files(["queue", "deferred"]), 60, what="an empty queue")


def assert_no_header(m, name):
    assert not m.header(name), "%s: must not be transmitted: %r" % (name, m.headers)


# A .NET SmtpClient (SpecifiedPickupDirectory) file: envelope lines first, one
# X-Receiver per recipient To, Cc, Bcc; the Bcc recipient exists only there;
# folded X-Receiver, display names with commas, RFC 2047; no Message-ID.
DOTNET = (b"X-Sender: \"App Mailer\" <noreply@example.com>\r\n"
          b"X-Receiver: to1@example.com\r\n"
          b"X-Receiver: \"Doe, John\" <john@example.org>\r\n"
          b"X-Receiver: \"A Very Long Display Name That Makes The Line Wrap Past Column 76\"\r\n"
          b" <long@example.com>\r\n"
          b"x-receiver: =?utf-8?B?SsO2cmc=?= <bcc@example.com>\r\n"
          b"X-Receiver: to1@example.com\r\n"
          b"MIME-Version: 1.0\r\n"
          b"From: \"App Mailer\" <noreply@example.com>\r\n"
          b"To: to1@example.com, \"Doe, John\" <john@example.org>, long@example.com\r\n"
          b"Date: 1 Jan 2024 10:00:00 +0100\r\n"
          b"Subject: hello from .NET\r\n"
          b"Content-Type: text/plain; charset=us-ascii\r\n"
          b"Content-Transfer-Encoding: quoted-printable\r\n"
          b"\r\n"
          b"body line 1\r\n"
          b"body line 2\r\n"
          b"\r\n")


def test_dotnet_envelope_lines():
    with SmtpServer() as srv, Pickupd(cfg(), relay=srv) as d:
        d.drop_inplace("3f2504e0-4f89-11d3-9a0c-0305e82c3301.eml", DOTNET, lock=True)
        m = srv.wait_messages(1)[0]
        assert m.mail_from == "noreply@example.com", m.mail_from
        # Order kept, the duplicate to1 removed, Bcc (only in X-Receiver) delivered.
        assert m.rcpt_tos == ["to1@example.com", "john@example.org", "long@example.com",
                              "bcc@example.com"], m.rcpt_tos
        assert crlf_ok(m.data)
        assert_no_header(m, "X-Sender")
        assert_no_header(m, "X-Receiver")
        assert b"bcc@example.com" not in m.data, m.headers
        qid = claim_line(d, "3f2504e0-4f89-11d3-9a0c-0305e82c3301.eml").group("qid")
        # Message-ID added (domain from [general] hostname), Date kept as written.
        assert m.header("Message-ID") == ["<%s.pickupd@%s>" % (qid, HOST)], m.headers
        assert m.header("Date") == ["1 Jan 2024 10:00:00 +0100"], m.headers
        rcv = m.header("Received")
        assert len(rcv) == 1 and qid in rcv[0] and HOST in rcv[0], rcv
        # The Received line is the first line; the rest is the file minus its envelope.
        assert m.data.startswith(b"Received: "), m.data[:80]
        rest = m.data.split(b"\r\n", 1)[1]
        rest = re.sub(rb"(?m)^Message-ID: [^\r]*\r\n", b"", rest)
        original = DOTNET[DOTNET.index(b"MIME-Version"):]
        assert rest == original, (rest, original)
        d.wait_log(status_re("sent", "bcc@example.com"))
        d.wait_spool_empty()


def test_dsn_params_and_folded_xsender():
    """Replay-style parameters on the envelope lines are accepted (kept for a
    relay offering DSN; aiosmtpd offers none, so they are not sent), folded
    lines and lowercase names work, and the file is delivered."""
    msg = (b"x-sender: <sender@example.com> RET=HDRS ENVID=abc123\r\n"
           b"x-receiver: <r1@example.net> NOTIFY=SUCCESS,FAILURE\r\n"
           b"  ORCPT=rfc822;r1@example.net\r\n"
           b"X-RECEIVER: \"Name\r\n With Fold\" <r2@example.net>\r\n"
           b"From: other@example.com\r\nTo: visible@example.net\r\nSubject: dsn\r\n"
           b"Message-ID: <keep-me@example.com>\r\n\r\nbody\r\n")
    with SmtpServer() as srv, Pickupd(cfg(), relay=srv) as d:
        d.drop("dsn.eml", msg)
        m = srv.wait_messages(1)[0]
        assert m.mail_from == "sender@example.com", m.mail_from
        assert m.rcpt_tos == ["r1@example.net", "r2@example.net"], m.rcpt_tos
        assert m.header("Message-ID") == ["<keep-me@example.com>"], m.headers
        assert m.header("To") == ["visible@example.net"], m.headers
        assert b"x-receiver" not in m.data.lower() and b"ORCPT" not in m.data, m.data
        d.wait_spool_empty()


def test_headers_to_cc_bcc():
    """No envelope lines: Sender:/From: and To:/Cc:/Bcc: with quoted names
    holding commas, groups, comments and an obsolete route; de-duplicated;
    Bcc: never transmitted; Date: and Message-ID: added."""
    msg = (b"From: \"Shop, Billing\" <billing@shop.example>\n"
           b"Sender: robot@shop.example (the robot)\n"
           b"To: \"Smith, Ann\" <ann@customer.example>, team: bob@customer.example,\n"
           b"  carol@customer.example;\n"
           b"Cc: <@relay.example:dave@customer.example>, ann@CUSTOMER.Example\n"
           b"Bcc: audit@shop.example (archive), ann@customer.example\n"
           b"Subject: invoice\n\nTotal: 12.00\n")
    with SmtpServer() as srv, Pickupd(cfg(), relay=srv) as d:
        d.drop("invoice.eml", msg)
        m = srv.wait_messages(1)[0]
        assert m.mail_from == "robot@shop.example", m.mail_from
        assert m.rcpt_tos == ["ann@customer.example", "bob@customer.example",
                              "carol@customer.example", "dave@customer.example",
                              "audit@shop.example"], m.rcpt_tos
        assert_no_header(m, "Bcc")
        assert b"audit@shop.example" not in m.data, m.headers
        assert m.header("To")[0].startswith("\"Smith, Ann\""), m.headers
        assert len(m.header("Date")) == 1 and re.match(
            r"\w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}$", m.header("Date")[0]), \
            m.header("Date")
        assert re.fullmatch(r"<\S+\.pickupd@%s>" % re.escape(HOST), m.header("Message-ID")[0])
        assert m.body == b"Total: 12.00\r\n", m.body
        assert m.header("To") and m.header("Cc"), m.headers
        assert not m.header("To")[0].startswith("undisclosed"), m.headers
        d.wait_spool_empty()


def test_bcc_only_gets_undisclosed_recipients():
    msg = b"From: a@example.org\r\nBcc: x@example.net, y@example.net\r\nSubject: s\r\n\r\nhi\r\n"
    with SmtpServer() as srv, Pickupd(cfg(), relay=srv) as d:
        d.drop("bcc.eml", msg)
        m = srv.wait_messages(1)[0]
        assert m.rcpt_tos == ["x@example.net", "y@example.net"], m.rcpt_tos
        assert_no_header(m, "Bcc")
        assert m.header("To") == ["undisclosed-recipients:;"], m.headers
        assert b"x@example.net" not in m.data, m.data
        # The header fixes sit in the header section, before the empty line.
        assert m.body == b"hi\r\n", m.body
        d.wait_spool_empty()


def test_dotnet_bcc_only_in_xreceiver_gets_undisclosed():
    msg = (b"X-Sender: a@example.org\r\nX-Receiver: hidden@example.net\r\n"
           b"From: a@example.org\r\nSubject: s\r\n\r\nhi\r\n")
    with SmtpServer() as srv, Pickupd(cfg(), relay=srv) as d:
        d.drop("xb.eml", msg)
        m = srv.wait_messages(1)[0]
        assert m.rcpt_tos == ["hidden@example.net"], m.rcpt_tos
        assert m.header("To") == ["undisclosed-recipients:;"], m.headers
        assert b"hidden@example.net" not in m.data, m.data
        d.wait_spool_empty()


def test_headers_only_file_without_final_newline():
    msg = b"From: a@example.org\nTo: b@example.net\nSubject: no body"
    with SmtpServer() as srv, Pickupd(cfg(), relay=srv) as d:
        d.drop("nobody.eml", msg)
        m = srv.wait_messages(1)[0]
        assert crlf_ok(m.data), m.data
        assert m.header("Subject") == ["no body"], m.data
        assert len(m.header("Date")) == 1 and len(m.header("Message-ID")) == 1, m.data
        d.wait_spool_empty()


# .NET Framework 4.x writes dot-stuffed files (a leading '.' doubled on every
# line); .NET 5+, MailKit and scripts write raw ones.
BODY_RAW = b"line one\r\n.leading dot\r\n..two dots\r\n.\r\nlast\r\n"
BODY_STUFFED = b"line one\r\n..leading dot\r\n...two dots\r\n..\r\nlast\r\n"
HDR = b"X-Sender: a@example.org\r\nX-Receiver: b@example.net\r\nFrom: a@example.org\r\n" \
      b"To: b@example.net\r\nSubject: dots\r\n\r\n"


def test_dot_stuffed_yes_and_no_per_folder():
    """Two folders, each with its own dot_stuffed setting: the stuffed file
    arrives un-doubled, the raw file with its leading dots intact."""
    with SmtpServer() as srv:
        d = Pickupd(relay=srv, start=False)
        legacy = os.path.join(d.dir, "legacy")
        os.makedirs(legacy)
        d.write_config(dict(GENERAL, **{
            "pickup": None,
            "pickup modern": {"dir": d.pickup, "settle_time": "0", "dot_stuffed": "no"},
            "pickup legacy": {"dir": legacy, "settle_time": "0", "dot_stuffed": "yes"},
        }), srv.port)
        with d:
            d.start()
            d.wait_ready()
            with open(os.path.join(legacy, "framework.eml"), "wb") as f:
                f.write(HDR.replace(b"dots", b"stuffed") + BODY_STUFFED)
            d.drop("modern.eml", HDR.replace(b"dots", b"raw") + BODY_RAW)
            msgs = srv.wait_messages(2)
            by = {m.header("Subject")[0]: m for m in msgs}
            assert by["stuffed"].body == BODY_RAW, by["stuffed"].body
            assert by["raw"].body == BODY_RAW, by["raw"].body
            assert claim_line(d, "framework.eml").group("pickup") == "legacy"
            assert claim_line(d, "modern.eml").group("pickup") == "modern"
            d.wait_spool_empty()
            assert os.listdir(legacy) == []


def test_several_folders_own_settings():
    """[pickup NAME] sections with their own match, limits and settle time."""
    with SmtpServer() as srv:
        d = Pickupd(relay=srv, start=False)
        other = os.path.join(d.dir, "txt")
        os.makedirs(other)
        d.write_config(dict(GENERAL, **{
            "pickup": None,
            "pickup eml": {"dir": d.pickup, "settle_time": "0", "max_recipients": "1"},
            "pickup txt": {"dir": other, "settle_time": "0", "match": "*.txt",
                           "max_recipients": "5", "max_message_size": "1K"},
        }), srv.port)
        two = b"From: a@example.org\nTo: b@example.net, c@example.net\nSubject: %s\n\nx\n"
        with d:
            d.start()
            d.wait_ready()
            # Same two-recipient message: refused in eml (limit 1), sent from txt.
            d.drop("two.eml", two % b"eml")
            with open(os.path.join(other, ".t.tmp"), "wb") as f:
                f.write(two % b"txt")
            os.rename(os.path.join(other, ".t.tmp"), os.path.join(other, "two.txt"))
            # Not matching its folder's glob: left alone.
            with open(os.path.join(other, "ignored.eml"), "wb") as f:
                f.write(two % b"ignored")
            # Over the txt folder's 1K max_message_size.
            with open(os.path.join(other, "big.txt"), "wb") as f:
                f.write(two % b"big" + b"y" * 2000 + b"\n")
            m = srv.wait_messages(1)[0]
            assert m.header("Subject") == ["txt"], m.headers
            d.wait_log(r"file=two\.eml, refused: too many recipients \(2, limit 1\)")
            d.wait_log(r"pickup=txt, file=big\.txt, refused: message of \d+ bytes is over "
                       r"max_message_size \(1024\)")
            assert claim_line(d, "two.txt").group("pickup") == "txt"
            wait_queue_empty(d)
            assert len(d.spool_files("badmail")) == 2
            assert sorted(os.listdir(other)) == ["ignored.eml"], os.listdir(other)
            assert len(srv.messages) == 1


# ---------------------------------------------------------------------------
# Completeness: never claim a file a writer is still writing.

def full_message(tag, n_lines):
    head = b"From: w@example.org\r\nTo: r@example.net\r\nSubject: %s\r\n\r\n" % tag
    body = b"".join(b"line %06d of the body\r\n" % i for i in range(n_lines))
    return head + body + b"END OF MESSAGE\r\n"


def assert_complete(m, data):
    assert m.body == data.split(b"\r\n\r\n", 1)[1], "incomplete: %d bytes, ends %r" % (
        len(m.body), m.body[-40:])


def test_slow_inplace_writer_holding_flock():
    """Like .NET on Linux: FileMode.CreateNew under the final name, flock
    LOCK_SH held while writing, slowly, for ~3 s. settle_time = 0, so only
    the lock protects; rescans every 200 ms try hard to claim it early."""
    data = full_message(b"locked", 3000)
    with SmtpServer() as srv, \
            Pickupd(cfg(settle_time="0", rescan_interval="200ms"), relay=srv) as d:
        f = d.open_inplace("dotnet-slow.eml", lock=True)
        chunks = [data[i:i + 4096] for i in range(0, len(data), 4096)]
        step = 3.0 / len(chunks)
        for c in chunks:
            f.write(c)
            os.fsync(f.fileno())  # a writer's close may come much later
            time.sleep(step)
            assert not srv.transactions, "claimed while the writer held its lock"
        done = time.time()
        f.close()
        m = srv.wait_messages(1)[0]
        assert m.received >= done
        assert_complete(m, data)
        d.wait_spool_empty()


def test_write_then_rename():
    """A slow writer under a temp name (*.tmp, dotfile) then rename: the temp
    names are never touched; the renamed file is delivered complete."""
    data = full_message(b"renamed", 2000)
    with SmtpServer() as srv, \
            Pickupd(cfg(rescan_interval="200ms"), relay=srv) as d:
        for tmp in ("job.tmp", ".job", "job.eml.part"):
            p = os.path.join(d.pickup, tmp)
            with open(p, "wb") as f:
                for i in range(0, len(data), 8192):
                    f.write(data[i:i + 8192])
                    f.flush()
                    time.sleep(0.05)
            assert not srv.transactions
            time.sleep(0.3)  # two rescans: a temp name must stay untouched
            assert os.path.exists(p), tmp
        os.rename(os.path.join(d.pickup, "job.tmp"), os.path.join(d.pickup, "job.eml"))
        m = srv.wait_messages(1)[0]
        assert_complete(m, data)
        d.wait_spool_empty()
        assert sorted(d.pickup_files()) == [".job", "job.eml.part"], d.pickup_files()


def test_event_claims_at_once_despite_settle_time():
    """A file renamed in (IN_MOVED_TO) or closed by its only writer
    (IN_CLOSE_WRITE, no lock, nobody else has it open for writing) is
    complete: claimed at once, settle_time (here 30 s) does not apply."""
    with SmtpServer() as srv, \
            Pickupd(cfg(settle_time="30s", rescan_interval="1h"), relay=srv) as d:
        renamed = full_message(b"renamed", 50)
        t0 = time.time()
        d.drop("renamed.eml", renamed)
        m = srv.wait_messages(1, timeout=10)[0]
        assert m.received - t0 < 10, m.received - t0
        assert_complete(m, renamed)
        inplace = full_message(b"inplace", 50)
        t0 = time.time()
        d.drop_inplace("inplace.eml", inplace)
        m = srv.wait_messages(2, timeout=10)[1]
        assert m.received - t0 < 10, m.received - t0
        assert_complete(m, inplace)
        d.wait_spool_empty()


def test_rescan_found_file_waits_settle_time():
    """settle_time is for files no event reported complete: one already in
    the folder at start-up (found by the first scan) is claimed only once
    its mtime is settle_time old."""
    data = full_message(b"found", 100)
    with SmtpServer() as srv:
        d = Pickupd(cfg(settle_time="1500ms", rescan_interval="200ms"), relay=srv,
                    start=False)
        with d:
            path = os.path.join(d.pickup, "found.eml")
            with open(path, "wb") as f:
                f.write(data)
            mtime = os.stat(path).st_mtime
            d.start().wait_ready()
            m = srv.wait_messages(1)[0]
            assert m.received >= mtime + 1.4, (m.received - mtime)
            assert_complete(m, data)
            d.wait_spool_empty()


def test_writer_keeps_file_open_without_lock():
    """A writer that keeps the file open, without a lock, and pauses longer
    than settle_time in the middle: as long as anyone has the file open for
    writing, it is not claimed."""
    data = full_message(b"keeps-open", 1000)
    half = len(data) // 2
    with SmtpServer() as srv, \
            Pickupd(cfg(settle_time="300ms", rescan_interval="200ms"), relay=srv) as d:
        f = d.open_inplace("held.eml")
        f.write(data[:half])
        t0 = time.time()
        while time.time() - t0 < 2.0:  # ~7 settle times, ~10 rescans
            assert not srv.transactions, "claimed while open for writing"
            time.sleep(0.1)
        f.write(data[half:])
        done = time.time()
        f.close()
        m = srv.wait_messages(1)[0]
        assert m.received >= done
        assert_complete(m, data)
        d.wait_spool_empty()


def test_same_name_again_is_a_new_submission():
    """Names are not remembered: the same name written again is sent again."""
    with SmtpServer() as srv, Pickupd(cfg(), relay=srv) as d:
        for i in range(3):
            d.drop("again.eml", b"From: a@example.org\nTo: b@example.net\nSubject: %d\n\nx\n"
                   % i)
            srv.wait_messages(i + 1)
            wait_for(lambda: "again.eml" not in d.pickup_files(), 30, what="claim")
        assert [m.header("Subject")[0] for m in srv.messages] == ["0", "1", "2"]
        d.wait_spool_empty()


def test_claim_cut_short_is_recovered_at_once():
    """Content in data/ without an envelope (a crash between the claim and
    the envelope) is ingested again at start-up even though it was written a
    moment ago: the writer checks (flock, settle_time) are for pickup folders."""
    with SmtpServer() as srv:
        d = Pickupd(cfg(settle_time="30s"), relay=srv, start=False)
        with d:
            os.makedirs(os.path.join(d.spool, "data"))
            with open(os.path.join(d.spool, "data", "0123456789ABCDEF0123"), "wb") as f:
                f.write(b"From: a@example.org\nTo: b@example.net\nSubject: orphan\n\nx\n")
            d.start()
            d.wait_ready()
            m = srv.wait_messages(1, timeout=20)[0]
            assert m.header("Subject") == ["orphan"], m.headers
            d.wait_log(r"recovered content of 0123456789ABCDEF0123")
            d.wait_spool_empty()


if __name__ == "__main__":
    harness.main(globals())
