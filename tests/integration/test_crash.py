"""Crash and fault tests of the durable spool, on the real pickupd:

- kill -9 again and again while messages flow into a real SMTP server
  (aiosmtpd): after a final restart every Message-ID arrived, and a message
  arrived twice only if it was in flight at a kill (never after its removal
  was logged, never twice within the last, clean run);
- the spool's own crash hook (PICKUPD_SPOOL_CRASH) kills the daemon at
  chosen steps of ingest and removal: the restart delivers the message, once
  if the crash came before delivery, at most twice after; the same for a
  batch of claims sharing one claim record, from a dot-stuffed second
  folder that recovery must know;
- ENOSPC on a small tmpfs the test mounts: ingestion pauses with one log
  line, the pickup files stay, and all is delivered when space returns;
- EIO from fsync and EROFS from rename through the LD_PRELOAD shim
  (tests/shim/faultfs.c): the transition fails visibly, nothing is lost;
  at EROFS pickupd also exits non-zero by itself (test_spool_faults.py has
  the read-only remount with a message in flight);
- a torn first envelope (written without fsync: a power loss before its
  writeback) is ingested again from the durable content, and so is one
  that holds another message's whole envelope (old blocks under the new
  name): the message reaches its own recipients only; the same for a
  crash while a sent message's envelope is written over for a new one.
"""

import os
import re
import subprocess
import time

import harness
from harness import Pickupd, SmtpServer, wait_for

QID_RE = re.compile(r"\bid ([0-9A-F]{20})\b")


def message(n, tag="crash"):
    return ("From: sender@example.org\nTo: rcpt%d@example.net\n"
            "Message-ID: <%d.%s@pickupd.test>\nSubject: message %d\n\nbody %d\n"
            % (n % 7, n, tag, n, n)).encode()


def message_ids(srv):
    """Message-ID -> list of Transactions, for the accepted messages."""
    out = {}
    for t in srv.messages:
        mid = (t.header("Message-ID") or [""])[0]
        out.setdefault(mid, []).append(t)
    return out


def qid_of(t):
    """The queue ID in pickupd's Received: header."""
    for r in t.header("Received"):
        m = QID_RE.search(r)
        if m:
            return m.group(1)
    return None


def runs(d):
    """The log of each run, in order (the harness marks the start of each)."""
    return re.split(r"^=== harness: run \d+ ===$", d.log_text(all_runs=True), flags=re.M)[1:]


def test_kill9_while_messages_flow():
    total, per_round, kills = 0, 30, 0
    with SmtpServer() as srv:
        d = Pickupd(relay=srv)
        with d:
            for rnd in range(6):
                before = len(srv.messages)
                for i in range(per_round):
                    d.drop("m%04d.eml" % total, message(total))
                    total += 1
                if rnd % 3 == 2:
                    # Right away: mostly claims and envelope writes in flight.
                    pass
                else:
                    # Once delivery is under way: sessions and records in flight.
                    wait_for(lambda: len(srv.messages) >= before + 3 + rnd, 60,
                             what="deliveries before kill %d" % (kills + 1))
                d.kill9()
                kills += 1
                d.start()
                d.wait_ready()
            want = {"<%d.crash@pickupd.test>" % n for n in range(total)}
            wait_for(lambda: want <= set(message_ids(srv)), 60,
                     what="all %d Message-IDs at the server" % total)
            d.wait_spool_empty()
            assert not [f for f in d.pickup_files() if f.endswith(".eml")], d.pickup_files()

            logs = runs(d)
            last = logs[-1]
            got = message_ids(srv)
            assert set(got) == want, set(got) ^ want
            dups = {mid: ts for mid, ts in got.items() if len(ts) > 1}
            whole = "".join(logs)
            # A lone file sent before its claim was complete, cut off there:
            # recovery named it and claimed its content again under a new ID.
            recovered = dict(re.findall(r"\b(\w+): recovered content of (\w+)", whole))
            named = set(re.findall(r"\b(\w+): it was being sent when pickupd stopped", whole))
            for mid, ts in dups.items():
                # At most one extra copy per kill, all under one queue ID (or
                # two, the second its recovered content's, the first named).
                assert len(ts) - 1 <= kills, (mid, ts)
                qids = {qid_of(t) for t in ts}
                assert None not in qids, (mid, qids)
                if len(qids) == 2:
                    new = [q for q in qids if recovered.get(q) in qids]
                    assert len(new) == 1 and recovered[new[0]] in named, (mid, qids, whole)
                    qids = set(new)
                assert len(qids) == 1, (mid, qids)
                qid = qids.pop()
                # Never sent again once its removal was recorded (logged).
                removed_in = [i for i, text in enumerate(logs)
                              if re.search(r"\b%s: removed\b" % qid, text)]
                sent_in = [i for i, text in enumerate(logs)
                           if re.search(r"\b%s: to=<[^>]*>, .*status=sent" % qid, text)]
                assert len(removed_in) <= 1, (mid, qid, removed_in)
                if removed_in:
                    assert all(i <= removed_in[0] for i in sent_in), (mid, qid, sent_in,
                                                                      removed_in)
                # The clean last run delivers each recipient at most once.
                assert len(re.findall(r"\b%s: to=<[^>]*>, .*status=sent" % qid, last)) <= 1
            print("  %d messages, %d kills, %d duplicated (in flight at a kill)"
                  % (total, kills, len(dups)))
            d.stop()


# Steps of spool/hook.c on a message's way: claim and envelope (before the
# delivery: exactly one copy), removal (after it: one or two copies). A new
# message's envelope is written without fsync (spool_env_create_lazy):
# recovery derives it again from the durable content.
HOOK_STEPS = [("lazy-env-write", 1), ("lazy-env-rename", 1),
              ("remove-data", 2), ("remove-datasync", 2), ("remove-env", 2)]
# A claim cut short leaves content without an envelope: recovery hands it
# back to ingest at start-up (daemon/pickupd/main.c reingest_orphans). The daemon
# claims in batches: content fsync per file, then one commit of data/ for
# the batch, after the envelope; the folder's fsync is left owed
# (spool_claim_commit_data) and made by the first removal after the send, so
# a crash there is one after the delivery: one or two copies.
CLAIM_STEPS = [("claim-rename", 1), ("claim-fsync", 1), ("claim-commit-data", 1),
               ("claim-commit-folder", 2)]


# The batched path: files found together are claimed as one batch that
# shares one claim record (data/<base>.batch, spool/claimrec.c), written and
# fsynced before the batch's first rename; it goes with the last message
# that needs it ("batch-record-drop", after the sends: one or two copies).
# The batch's claims are all renamed first, then their contents fsynced
# together (spool_claims_sync: "claim-fsync" for each, then
# "claim-fsync-many" once all are durable), then their envelopes written.
BATCH_CLAIM_STEPS = [("batch-record-write", 1), ("batch-record-fsync", 1),
                     ("claim-rename:2", 1), ("claim-fsync:2", 1), ("claim-fsync-many", 1),
                     ("lazy-env-write:2", 1), ("lazy-env-rename:3", 1),
                     ("claim-commit-data", 1), ("batch-record-drop", 2)]
# Steps that leave a claimed file without its envelope: recovery must take
# its folder and name from the record.
BATCH_ORPHAN_STEPS = {"claim-fsync:2", "claim-fsync-many", "lazy-env-write:2",
                      "lazy-env-rename:3"}


def test_crash_hook_steps_in_daemon():
    crash_at_steps(HOOK_STEPS)


def test_crash_during_claim_recovers_once():
    crash_at_steps(CLAIM_STEPS)


def restart_after_crash(d, step):
    """Waits for the crash hook to kill d at step, then starts it again
    without the hook."""
    wait_for(lambda: not d.running, 30, what="pickupd killed at %s" % step)
    assert d.proc.returncode == -9, (step, d.proc.returncode, d.log_tail())
    d.env = {}
    d.start()
    d.wait_ready()


def crash_at_steps(steps):
    for step, most in steps:
        with SmtpServer() as srv:
            d = Pickupd(relay=srv, env={"PICKUPD_SPOOL_CRASH": step})
            with d:
                d.drop("hook.eml", message(1, step))
                restart_after_crash(d, step)
                srv.wait_messages(1)
                d.wait_spool_empty()
                assert "hook.eml" not in d.pickup_files(), (step, d.pickup_files())
                n = len(srv.messages)
                assert 1 <= n <= most, (step, n, srv.messages)
                assert all(t.header("Message-ID") == ["<1.%s@pickupd.test>" % step]
                           for t in srv.messages)
                d.stop()


BATCH_FILES = 4
STUFFED_BODY = b"..dot line\nend\n"  # a dot-stuffed writer's ".dot line"


def test_crash_during_batch_claim_recovers_once():
    """A crash at each step of a batch of claims from a second folder, one
    with dot_stuffed = yes: after a restart each message arrives (once if
    the crash came before its send), unstuffed, which only the folder's own
    settings do (the first folder's are not stuffed), and every claim cut
    short is recovered as from that folder under its own file name; no
    record is left behind."""
    for step, most in BATCH_CLAIM_STEPS:
        with SmtpServer() as srv:
            d = Pickupd(relay=srv, start=False, env={"PICKUPD_SPOOL_CRASH": step})
            stuffed = os.path.join(d.dir, "stuffed")
            os.makedirs(stuffed)
            d.write_config({"pickup stuffed": {"dir": stuffed, "settle_time": "0",
                                               "dot_stuffed": "yes"}}, srv.port)
            with d:
                # Found together by the start-up scan: one batch.
                old = time.time() - 60
                for i in range(BATCH_FILES):
                    path = os.path.join(stuffed, "b%d.eml" % i)
                    with open(path, "wb") as f:
                        f.write(message(i, "batch").replace(b"\nbody", b"\n" + STUFFED_BODY +
                                                              b"body"))
                    os.utime(path, (old, old))
                d.start()
                wait_for(lambda: not d.running, 30, what="pickupd killed at %s" % step)
                assert d.proc.returncode == -9, (step, d.proc.returncode, d.log_tail())
                d.env = {}
                d.start()
                d.wait_ready()
                srv.wait_messages(BATCH_FILES)
                d.wait_spool_empty()  # data/ included: no record left
                assert not os.listdir(stuffed), (step, os.listdir(stuffed))
                got = message_ids(srv)
                assert set(got) == {"<%d.batch@pickupd.test>" % i for i in range(BATCH_FILES)}, \
                    (step, set(got))
                for mid, ts in got.items():
                    assert 1 <= len(ts) <= most, (step, mid, len(ts))
                    for t in ts:
                        assert b"\n.dot line\n" in b"\n" + t.body.replace(b"\r\n", b"\n"), \
                            (step, t.body)
                recovered = re.findall(r"recovered content of [0-9A-F]{20} \(claim cut short\): "
                                       r"pickup=(\S+), file=(\S+)", d.log_text(all_runs=True))
                for pickup, file in recovered:
                    assert pickup == "stuffed" and re.match(r"b\d\.eml$", file), \
                        (step, pickup, file)
                if step in BATCH_ORPHAN_STEPS:
                    assert recovered, (step, d.log_tail())
                d.stop()


def lazy_envelope_cut_short(srv, mail):
    """A pickupd killed between writing a new message's envelope to tmp/ and
    renaming it into queue/: (daemon, not started again, queue ID, envelope
    text)."""
    d = Pickupd(relay=srv, start=False, env={"PICKUPD_SPOOL_CRASH": "lazy-env-rename"})
    d.start()
    d.wait_ready()
    d.drop("m.eml", mail)
    wait_for(lambda: not d.running, 30, what="pickupd killed at lazy-env-rename")
    tmp = os.path.join(d.spool, "tmp")
    (name,) = [n for n in os.listdir(tmp) if n.endswith(".env")]
    with open(os.path.join(tmp, name), "rb") as f:
        text = f.read()
    os.unlink(os.path.join(tmp, name))
    d.env = {}
    return d, name[:-4], text


def restart_over(d, srv, qid, planted):
    """Puts planted where queue/qid's text should be, restarts pickupd and
    waits until it found the envelope torn and delivered the message."""
    with open(os.path.join(d.spool, "queue", qid), "wb") as f:
        f.write(planted)
    d.start()
    d.wait_ready()
    srv.wait_messages(1)
    d.wait_log(r"%s: envelope torn" % qid)
    d.wait_spool_empty()


def test_torn_envelope_is_ingested_again():
    """Power loss after a new message's envelope was renamed into queue/ but
    before its (unsynced) text reached the disk: queue/ID is torn. The
    content is durable, so the message is ingested again from it and
    delivered once; nothing goes to badmail."""
    with SmtpServer() as srv:
        d, qid, text = lazy_envelope_cut_short(srv, message(1, "torn"))
        with d:
            assert os.path.exists(os.path.join(d.spool, "data", qid))
            # What the disk may hold: the rename, and a prefix of the text.
            restart_over(d, srv, qid, text[:len(text) // 2])
            assert len(srv.messages) == 1, srv.messages
            assert srv.messages[0].header("Message-ID") == ["<1.torn@pickupd.test>"]
            assert not d.spool_files(["badmail"]), d.spool_files(["badmail"])
            d.stop()


def test_envelope_of_another_message_is_torn():
    """Power loss after a new message's envelope was renamed into queue/ but
    before its text reached the disk, on a file system that does not order
    data before metadata: queue/ID holds the blocks of an earlier message's
    envelope, whole and checksummed, with its own ID, sender and recipients.
    It is never acted on: the content, durable with its claim record, is
    ingested again and reaches its own recipient only; nothing goes to
    badmail."""
    own = (b"From: owner@example.org\nTo: own.rcpt@example.net\n"
           b"Message-ID: <own@pickupd.test>\nSubject: own\n\nown body\n")
    other = (b"From: stranger@example.org\nTo: wrong.rcpt@example.com\n"
             b"Message-ID: <other@pickupd.test>\nSubject: other\n\nother body\n")
    with SmtpServer() as srv:
        donor, other_id, other_text = lazy_envelope_cut_short(srv, other)
        with donor:
            pass
        assert b"wrong.rcpt@example.com" in other_text
        d, qid, _ = lazy_envelope_cut_short(srv, own)
        with d:
            assert qid != other_id
            restart_over(d, srv, qid, other_text)
            assert len(srv.messages) == 1, srv.messages
            t = srv.messages[0]
            assert t.header("Message-ID") == ["<own@pickupd.test>"], t
            assert t.rcpt_tos == ["own.rcpt@example.net"], t.rcpt_tos
            assert t.mail_from == "owner@example.org", t.mail_from
            assert not d.spool_files(["badmail"]), d.spool_files(["badmail"])
            d.stop()


# A sent message's envelope is kept as a spare in tmp/ (spool/spare.c) and
# the next new message's envelope written over it, not fsynced either.
SPARE_STEPS = ["lazy-spare-write", "lazy-spare-rename"]


def test_crash_while_reusing_an_envelope():
    """A crash at each step of writing a new message's envelope over a sent
    one's: after a restart (which empties tmp/) the new message is ingested
    again from its content and arrives, to its own recipient: once, or twice
    when it was offered to the warm session and sent before the crash (its
    claim not yet complete), which the restart then names; the sent one is
    not sent again."""
    first = (b"From: a@example.org\nTo: first@example.net\n"
             b"Message-ID: <first@pickupd.test>\n\nfirst\n")
    second = (b"From: b@example.org\nTo: second@example.net\n"
              b"Message-ID: <second@pickupd.test>\n\nsecond\n")
    for step in SPARE_STEPS:
        with SmtpServer() as srv:
            d = Pickupd(relay=srv, env={"PICKUPD_SPOOL_CRASH": step})
            with d:
                d.drop("first.eml", first)
                srv.wait_messages(1)
                d.wait_spool_empty()
                d.drop("second.eml", second)
                restart_after_crash(d, step)
                srv.wait_messages(2)
                d.wait_spool_empty()
                # Only spares (the second's envelope, sent; the first's,
                # taken back by the restart's recovery).
                left = os.listdir(os.path.join(d.spool, "tmp"))
                assert all(re.match(r"\d+\.\d+\.spare$", n) for n in left), (step, left)
                got = sorted((t.header("Message-ID")[0], t.rcpt_tos) for t in srv.messages)
                once = [("<first@pickupd.test>", ["first@example.net"]),
                        ("<second@pickupd.test>", ["second@example.net"])]
                if got != once:
                    assert got == once + once[1:], (step, got)
                    assert re.search(r"it was being sent when pickupd stopped without recording "
                                     r"the outcome", runs(d)[-1]), (step, runs(d)[-1])
                d.stop()


def spare_inodes(d):
    """{name: inode} of the spare envelopes in tmp/."""
    tmp = os.path.join(d.spool, "tmp")
    out = {}
    for n in os.listdir(tmp):
        if re.match(r"\d+\.\d+\.spare$", n):
            try:
                out[n] = os.stat(os.path.join(tmp, n)).st_ino
            except FileNotFoundError:
                pass
    return out


def test_sent_envelopes_are_kept_for_the_next_burst():
    """Sent messages' envelopes are kept as spares up to 4096 (it was 64:
    a burst then made most of its envelopes as new files, each a scan of
    ext4's recently deleted inodes), also across a restart, and new
    messages' envelopes are written over them: 200 queued while the relay
    is away, then sent together, leave 200 spares; stopped and started
    again, pickupd takes them back (not removed, not made again); 200 more
    (the relay gone again, so they stay) take all of them."""
    port = harness.free_port()
    d = Pickupd(relay=port)
    with d:
        for i in range(200):
            d.drop("a%d.eml" % i, message(i, "first"))
        wait_for(lambda: len(d.spool_files("deferred")) == 200, 60, what="200 deferred")
        with SmtpServer(port=port) as srv:
            d.pickupctl("flush")
            srv.wait_messages(200)
            d.wait_spool_empty()
        wait_for(lambda: len(spare_inodes(d)) == 200, 30, what="200 spares")
        d.stop()
        kept = spare_inodes(d)
        assert len(kept) == 200, len(kept)
        d.start()
        d.wait_ready()
        d.wait_log(r"recovery: 200 spare envelopes kept from the last run")
        assert not d.log_matches(r"temporary files removed"), d.log_tail()
        assert spare_inodes(d) == kept
        for i in range(200):
            d.drop("b%d.eml" % i, message(i, "second"))
        wait_for(lambda: len(d.spool_files(["queue", "deferred"])) == 200 and
                 not [f for f in d.pickup_files() if f.endswith(".eml")], 60,
                 what="200 queued or deferred")
        assert len(spare_inodes(d)) == 0, len(spare_inodes(d))
        d.stop()


def test_enospc_on_small_tmpfs_pauses_ingestion():
    with SmtpServer() as srv:
        d = Pickupd(relay=srv, start=False)
        fs = os.path.join(d.dir, "fs")
        os.makedirs(fs)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", fs],
                           capture_output=True, text=True)
        if r.returncode != 0:
            print("  SKIP: cannot mount a tmpfs (%s); ENOSPC is covered by the shim "
                  "unit test only" % r.stderr.strip())
            d.cleanup()
            return
        try:
            d.spool, d.pickup = os.path.join(fs, "spool"), os.path.join(fs, "pickup")
            os.makedirs(d.pickup)
            d.write_config({"spool": {"dir": d.spool}, "pickup": {"dir": d.pickup}}, srv.port)
            with d:
                d.start()
                d.wait_ready()
                d.stop()  # the spool directories exist now
                for i in range(5):
                    d.drop("full%d.eml" % i, message(i, "enospc"))
                filler = os.path.join(fs, "filler")
                fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
                try:
                    while True:
                        os.write(fd, b"\0" * 4096)
                except OSError:
                    pass
                os.close(fd)
                d.start()
                d.wait_ready()
                d.wait_log(r"no space left on device; ingestion paused")
                wait_for(lambda: len([f for f in d.pickup_files() if f.endswith(".eml")]) == 5,
                         30, what="the pickup files back in place")
                assert not d.spool_files(["queue", "deferred"]), d.spool_files(["queue"])
                assert not srv.messages, srv.messages
                os.unlink(filler)
                srv.wait_messages(5)
                d.wait_spool_empty()
                # Once, not per file (all five were tried while it was full).
                assert len(d.log_matches(r"ingestion paused")) == 1, d.log_tail()
                ids = sorted(message_ids(srv))
                assert ids == sorted("<%d.enospc@pickupd.test>" % i for i in range(5)), ids
                d.stop()
        finally:
            subprocess.run(["umount", "-l", fs])


def eio_claims_back_then_once(n, tag, drop):
    """With fsync failing (EIO) in data/, the files drop(d) puts in the folder
    (messages 0..n-1 of tag) are each claimed and rolled back at once: back
    in their folder, nothing sent or left in the spool; once the fault is
    gone each message arrives once."""
    with SmtpServer() as srv:
        d = Pickupd(relay=srv, start=False)
        faults = harness.fault_shim(d)
        with d:
            d.start()
            d.wait_ready()
            faults("fsync:EIO:/spool/data\n")
            drop(d)
            d.wait_log(r"cannot claim: Input/output error", count=n)
            wait_for(lambda: len([f for f in d.pickup_files() if f.endswith(".eml")]) == n, 30,
                     what="the pickup files back in place")
            assert not srv.messages
            assert not d.spool_files(["queue", "deferred", "data"]), d.spool_files("data")
            faults("")
            srv.wait_messages(n)
            d.wait_spool_empty()
            assert len(srv.messages) == n, srv.messages
            assert sorted(t.header("Message-ID")[0] for t in srv.messages) == sorted(
                "<%d.%s@pickupd.test>" % (i, tag) for i in range(n))
            d.stop()


def test_eio_from_fsync_fails_the_transition_and_loses_nothing():
    """EIO from the claim's fsyncs (content and data/; a new message's
    envelope is not fsynced, see spool_env_create_lazy), files dropped one by
    one."""
    def drop(d):
        for i in range(3):
            d.drop("eio%d.eml" % i, message(i, "eio"))
    eio_claims_back_then_once(3, "eio", drop)


def test_eio_from_batched_fsyncs_fails_each_claim_and_loses_nothing():
    """The same for a batch: files renamed in together are claimed together
    and their contents fsynced together (Linux AIO, spool_fsync_many; the
    shim makes io_submit stop before a faulty descriptor, as the kernel
    does, and the rest go by fsync(2))."""
    n = 12

    def drop(d):
        tmp = []
        for i in range(n):
            p = os.path.join(d.pickup, ".b%d.tmp" % i)
            with open(p, "wb") as f:
                f.write(message(i, "batch-eio"))
            tmp.append(p)
        for i, p in enumerate(tmp):
            os.rename(p, os.path.join(d.pickup, "b%d.eml" % i))
    eio_claims_back_then_once(n, "batch-eio", drop)


def test_failed_folder_fsync_keeps_the_content():
    """ENOSPC from the pickup folder's fsync, which a batch of claims leaves
    owed (spool_claim_commit_data) so that its messages are sent as soon as
    their content is durable in data/: the messages are delivered, but their
    removal (which makes the folder's fsync first) fails, so no content
    leaves data/ while the folder may still name it; the log says they may be
    delivered again. Repaired and restarted: the queue empties, each message
    arrived once or twice, none lost."""
    with SmtpServer() as srv:
        d = Pickupd(relay=srv, start=False)
        faults = harness.fault_shim(d)
        with d:
            d.start()
            d.wait_ready()
            faults("fsync:ENOSPC:%s\n" % d.pickup)
            for i in range(3):
                d.drop("commit%d.eml" % i, message(i, "commit"))
            d.wait_log(r"cannot record the delivery result: No space left on device; the message "
                       r"stays queued and may be delivered again", count=3)
            assert len(srv.messages) == 3, srv.messages
            assert not [f for f in d.pickup_files() if f.endswith(".eml")], d.pickup_files()
            assert len(d.spool_files("queue")) == 3, d.spool_files("queue")
            assert len([f for f in d.spool_files("data") if "." not in f]) == 3, \
                d.spool_files("data")
            d.stop()
            faults("")
            d.start()
            d.wait_ready()
            d.wait_spool_empty()
            ids = sorted(t.header("Message-ID")[0] for t in srv.messages)
            assert sorted(set(ids)) == ["<%d.commit@pickupd.test>" % i for i in range(3)], ids
            assert len(ids) <= 6, ids
            d.stop()


def test_erofs_stops_state_changes_with_one_line():
    with SmtpServer() as srv:
        d = Pickupd(relay=srv, start=False)
        faults = harness.fault_shim(d)
        with d:
            d.start()
            d.wait_ready()
            faults("rename:EROFS:/spool/\n")
            for i in range(4):
                d.drop("ro%d.eml" % i, message(i, "erofs"))
            # One line, then pickupd ends by itself with an error status, so
            # that systemd's restart policy (and StartLimitBurst) take over.
            wait_for(lambda: not d.running, 30, what="pickupd to exit by itself")
            assert d.proc.returncode == 1, (d.proc.returncode, d.log_tail())
            d.check_sanitizer()
            assert len(d.log_matches(r"read-only \(EROFS\); no state change is made any more")) \
                == 1, d.log_tail()
            assert len(d.log_matches(r"EROFS|Read-only file system")) == 1, d.log_tail()
            assert len([f for f in d.pickup_files() if f.endswith(".eml")]) == 4
            assert not srv.messages
            # Repaired (the shim says nothing any more) and restarted: all sent.
            faults("")
            d.start()
            d.wait_ready()
            srv.wait_messages(4)
            d.wait_spool_empty()
            d.stop()


if __name__ == "__main__":
    harness.main(globals())
