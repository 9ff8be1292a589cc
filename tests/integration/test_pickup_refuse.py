"""Pickup refusals and safety through the real daemon (issue 4): each kind of
bad input lands in badmail/ with its original bytes (data/<ID>), the envelope
badmail/<ID> holds a `reason` a human can act on, the log says so, and
nothing reaches the SMTP server. Symlinks, hard links, FIFOs, sockets, devices
and directories are refused without blocking and without reading through
them. Permission problems are logged once per file and the file is taken
when they are fixed (the daemon runs as `nobody` for those: root ignores
permission bits)."""

import io
import os
import re
import shutil
import socket
import stat
import subprocess
import zipfile
import zlib
import struct

import harness
from harness import Pickupd, SmtpServer, wait_for, status_re

GOOD = b"From: good@example.org\r\nTo: rcpt@example.net\r\nSubject: %s\r\n\r\nbody\r\n"


def refused(d, name, reason_re):
    """Waits for the refusal of pickup file `name`; checks the log line, the
    badmail envelope's reason and returns (qid, reason)."""
    m = d.wait_log(r"^pickupd: warning: (?P<qid>\S+): pickup=\S+, file=%s, refused: "
                   r"(?P<reason>.*); moved to badmail$" % re.escape(name))[0]
    qid, reason = m.group("qid"), m.group("reason")
    assert re.search(reason_re, reason), "reason %r does not match %r" % (reason, reason_re)
    env_path = os.path.join(d.spool, "badmail", qid)
    with open(env_path, "rb") as f:
        env = f.read().decode("utf-8", "replace")
    lines = [l for l in env.splitlines() if l.startswith("reason ")]
    assert len(lines) == 1 and reason in lines[0], (reason, env)
    assert name not in d.pickup_files(), d.pickup_files()
    return qid, reason


def data_path(d, qid):
    return os.path.join(d.spool, "data", qid)


def zip_bytes():
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        z.writestr("invoice.txt", "From: x@example.org\nTo: y@example.net\n\nhello\n" * 50)
    return b.getvalue()


def png_bytes():
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))
    raw = b"".join(b"\x00" + b"\xff\x00\x00" * 4 for _ in range(4))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


PDF = (b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
       b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\n"
       b"trailer << /Root 1 0 R >>\n%%EOF\n")


def test_binary_input_refused_with_mime_type():
    with open("/bin/true", "rb") as f:
        elf = f.read()
    cases = [("archive.eml", zip_bytes(), r"^binary file \(application/zip\)$"),
             ("report.eml", PDF, r"^binary file \(application/pdf\)$"),
             ("image.eml", png_bytes(), r"^binary file \(image/png\)$"),
             ("program.eml", elf, r"^binary file \(application/x-[\w-]*(executable|"
                                  r"sharedlib)\)$")]
    with SmtpServer() as srv, Pickupd(relay=srv) as d:
        for name, data, _ in cases:
            d.drop(name, data)
        for name, data, rx in cases:
            qid, _ = refused(d, name, rx)
            with open(data_path(d, qid), "rb") as f:
                assert f.read() == data, name
        d.drop("after.eml", GOOD % b"after")
        assert srv.wait_messages(1)[0].header("Subject") == ["after"]
        assert len(srv.transactions) == 1, srv.transactions


def test_each_refusal_kind():
    long_header = b"From: a@example.org\r\nTo: b@example.net\r\n" + \
        b"".join(b"X-Filler-%04d: %s\r\n" % (i, b"v" * 60) for i in range(40)) + b"\r\nbody\r\n"
    nul = GOOD % b"nul"
    nul = nul[:60] + b"\x00" + nul[60:]
    cases = [
        ("empty.eml", b"", r"^empty file$"),
        ("nul.eml", nul, r"^NUL byte at offset 60$"),
        ("header.eml", long_header, r"^header section over 2048 bytes$"),
        ("norcpt.eml", b"From: a@example.org\r\nSubject: nobody\r\n\r\nx\r\n",
         r"^no recipients$"),
        ("many.eml", b"X-Sender: a@example.org\r\n" +
         b"".join(b"X-Receiver: r%d@example.net\r\n" % i for i in range(4)) +
         b"Subject: many\r\n\r\nx\r\n", r"^too many recipients \(4, limit 3\)$"),
        ("nosender.eml", b"To: b@example.net\r\nSubject: s\r\n\r\nx\r\n", r"^no sender"),
        ("badsender.eml", b"From: not an address\r\nTo: b@example.net\r\n\r\nx\r\n",
         r"From"),
        ("ctl.eml", b"X-Sender: a@example.org\r\nX-Receiver: bad\x01user@example.net\r\n"
         b"Subject: s\r\n\r\nx\r\n", r"control character"),
        ("inject.eml", b"X-Sender: a@example.org\r\n"
         b"X-Receiver: <b@example.net>\rRCPT TO:<evil@example.com>\r\n"
         b"Subject: s\r\n\r\nx\r\n", r"."),
        ("text.eml", b"Dear customer,\r\nthis is not a message at all.\r\n", r"."),
        ("big.eml", GOOD % (b"x" * 5000), r"^message of \d+ bytes is over max_message_size"),
    ]
    conf = {"pickup": {"max_header_size": "2K", "max_recipients": "3",
                       "max_message_size": "4K", "settle_time": "0"}}
    with SmtpServer() as srv, Pickupd(conf, relay=srv) as d:
        for name, data, _ in cases:
            d.drop(name, data)
        for name, data, rx in cases:
            qid, reason = refused(d, name, rx)
            print("  %-14s -> %s" % (name, reason))
            assert "\n" not in reason and len(reason) < 200, reason
            with open(data_path(d, qid), "rb") as f:
                assert f.read() == data, name
        d.drop("after.eml", GOOD % b"after")
        assert srv.wait_messages(1)[0].header("Subject") == ["after"]
        assert len(srv.transactions) == 1, srv.transactions
        assert not any("evil" in a for a, _ in srv.rcpt_log), srv.rcpt_log
        assert len(d.spool_files("badmail")) == len(cases)


def test_badmail_moved_back_is_a_new_submission():
    """A refused file moved from the spool back into a pickup folder is a new
    submission: a new queue ID; here the other folder's limits accept it."""
    with SmtpServer() as srv:
        d = Pickupd(relay=srv, start=False)
        loose = os.path.join(d.dir, "loose")
        os.makedirs(loose)
        d.write_config({"pickup": None,
                        "pickup strict": {"dir": d.pickup, "settle_time": "0",
                                          "max_recipients": "1"},
                        "pickup loose": {"dir": loose, "settle_time": "0"}}, srv.port)
        msg = b"From: a@example.org\r\nTo: b@example.net, c@example.net\r\nSubject: back\r\n\r\nx\r\n"
        with d:
            d.start()
            d.wait_ready()
            d.drop("first.eml", msg)
            qid1, _ = refused(d, "first.eml", r"too many recipients")
            # The operator moves it back into the same folder: refused again, anew.
            os.rename(data_path(d, qid1), os.path.join(d.pickup, "first.eml"))
            m = d.wait_log(r"^pickupd: warning: (\S+): pickup=strict, file=first\.eml, "
                           r"refused:", count=2)
            qid2 = m[1].group(1)
            assert qid2 != qid1
            # ... then into the folder that allows it: delivered.
            os.rename(data_path(d, qid2), os.path.join(loose, "first.eml"))
            t = srv.wait_messages(1)[0]
            assert t.rcpt_tos == ["b@example.net", "c@example.net"] and \
                t.header("Subject") == ["back"], t
            qid3 = d.wait_log(r"^pickupd: (\S+): uid=\d+, pickup=loose, file=first\.eml, ")[0].group(1)
            assert len({qid1, qid2, qid3}) == 3


# ---------------------------------------------------------------------------
# Not regular files

def test_symlink_hardlink_fifo_socket_device_directory():
    with SmtpServer() as srv, Pickupd(relay=srv) as d:
        secret = os.path.join(d.dir, "secret.eml")  # outside the pickup folder
        with open(secret, "wb") as f:
            f.write(GOOD % b"secret")
        os.symlink(secret, os.path.join(d.pickup, "link.eml"))
        os.symlink("/nonexistent/target", os.path.join(d.pickup, "dangling.eml"))
        outside = os.path.join(d.dir, "other.eml")
        with open(outside, "wb") as f:
            f.write(GOOD % b"hardlinked")
        os.link(outside, os.path.join(d.pickup, "hard.eml"))
        os.mkfifo(os.path.join(d.pickup, "fifo.eml"))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(os.path.join(d.pickup, "sock.eml"))
        os.mknod(os.path.join(d.pickup, "dev.eml"), 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        os.mkdir(os.path.join(d.pickup, "dir.eml"))
        with open(os.path.join(d.pickup, "dir.eml", "inner.eml"), "wb") as f:
            f.write(GOOD % b"inner")
        # Events do not come for all of these: a rescan (SIGHUP-free) happens
        # at start and every 30 s; a valid file's event triggers no scan, so
        # restart the daemon to make the start-up scan see them all.
        d.stop()
        d.start()
        d.wait_ready()
        checks = [("link.eml", r"^a symbolic link is refused$", os.path.islink),
                  ("dangling.eml", r"^a symbolic link is refused$", os.path.islink),
                  ("hard.eml", r"^a hard link \(2 links\) is refused$", os.path.isfile),
                  ("fifo.eml", r"^a FIFO is refused$",
                   lambda p: stat.S_ISFIFO(os.lstat(p).st_mode)),
                  ("sock.eml", r"^a socket is refused$",
                   lambda p: stat.S_ISSOCK(os.lstat(p).st_mode)),
                  ("dev.eml", r"^a device is refused$",
                   lambda p: stat.S_ISCHR(os.lstat(p).st_mode))]
        for name, rx, kind in checks:
            qid, _ = refused(d, name, rx)
            assert kind(data_path(d, qid)), name  # the entry itself, not its target
        sock.close()
        # The targets are untouched and were never sent.
        with open(secret, "rb") as f:
            assert f.read() == GOOD % b"secret"
        assert os.stat(outside).st_nlink == 2
        d.wait_log(r"^pickupd: warning: pickup default: \S+/dir\.eml: a directory is not a "
                   r"message; it is left alone$")
        assert os.path.isdir(os.path.join(d.pickup, "dir.eml"))
        # Still working, and not blocked by the FIFO.
        d.drop("after.eml", GOOD % b"after")
        assert srv.wait_messages(1)[0].header("Subject") == ["after"]
        assert len(srv.transactions) == 1, srv.transactions
        # The directory is reported once, however many scans see it.
        d.stop()
        assert len(d.log_matches(r"dir\.eml: a directory")) == 1


def test_fifo_dropped_while_running_does_not_block():
    with SmtpServer() as srv, Pickupd({"pickup": {"rescan_interval": "200ms"}},
                                      relay=srv) as d:
        os.mkfifo(os.path.join(d.pickup, "pipe.eml"))
        refused(d, "pipe.eml", r"^a FIFO is refused$")
        d.drop("after.eml", GOOD % b"after")
        srv.wait_messages(1)


# ---------------------------------------------------------------------------
# Permission problems. As root, permission bits stop nothing, so the daemon
# runs as nobody:nogroup (setpriv), owning its spool and pickup folder.

NOBODY = ("nobody", "nogroup")


def nobody_ids():
    import pwd
    import grp
    return pwd.getpwnam(NOBODY[0]).pw_uid, grp.getgrnam(NOBODY[1]).gr_gid


def unprivileged_daemon(srv, extra=None):
    d = Pickupd(relay=srv, start=False)
    wrapper = os.path.join(d.dir, "pickupd-as-nobody")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\nexec setpriv --reuid=%s --regid=%s --clear-groups "
                "--inh-caps=-all --bounding-set=-all %s \"$@\"\n"
                % (NOBODY[0], NOBODY[1], harness.program("pickupd")))
    os.chmod(wrapper, 0o755)
    d.name = wrapper  # harness.program() keeps an absolute path as it is
    conf = {"general": {"log_level": "debug"}}
    conf.update(extra or {})
    d.write_config(conf, srv.port)
    uid, gid = nobody_ids()
    os.chmod(d.dir, 0o755)
    for p in (d.spool, d.pickup, d.conf):
        os.chown(p, uid, gid)
    return d


def test_file_not_readable_logged_once_then_taken():
    with SmtpServer() as srv:
        d = unprivileged_daemon(srv)
        with d:
            d.start()
            d.wait_ready()
            path = os.path.join(d.pickup, "secret.eml")
            with open(path + ".part", "wb") as f:
                f.write(GOOD % b"unreadable")
            os.chmod(path + ".part", 0o600)  # root's, not readable by nobody
            os.rename(path + ".part", path)
            rx = (r"^pickupd: error: pickup default: %s: cannot open: Permission denied; "
                  r"it stays and is tried again$" % re.escape(path))
            d.wait_log(rx)
            d.wait_log(r"secret\.eml still cannot be taken: cannot open: Permission denied",
                       timeout=30)
            assert len(d.log_matches(rx)) == 1
            assert os.path.exists(path) and not srv.transactions
            os.chmod(path, 0o644)  # fixed: taken (IN_ATTRIB, no need to wait)
            assert srv.wait_messages(1, timeout=30)[0].header("Subject") == ["unreadable"]
            assert len(d.log_matches(rx)) == 1
            assert not os.path.exists(path)


def test_folder_not_writable_logged_once_then_taken():
    with SmtpServer() as srv:
        d = unprivileged_daemon(srv)
        os.chown(d.pickup, 0, 0)
        os.chmod(d.pickup, 0o755)  # nobody can read it, not rename out of it
        with d:
            d.start()
            d.wait_ready()
            d.wait_log(r"^pickupd: warning: pickup default: folder %s is not writable by "
                       r"pickupd" % re.escape(d.pickup))
            d.drop("stuck.eml", GOOD % b"stuck")
            path = os.path.join(d.pickup, "stuck.eml")
            rx = (r"^pickupd: error: pickup default: %s: cannot claim: Permission denied; "
                  r"it stays and is tried again$" % re.escape(path))
            d.wait_log(rx)
            d.wait_log(r"stuck\.eml still cannot be taken", timeout=30)
            assert len(d.log_matches(rx)) == 1
            assert os.path.exists(path) and not srv.transactions
            assert not d.spool_files(["data", "queue", "badmail"])
            os.chown(d.pickup, *nobody_ids())  # fixed
            assert srv.wait_messages(1, timeout=30)[0].header("Subject") == ["stuck"]
            assert len(d.log_matches(rx)) == 1
            wait_for(lambda: not os.path.exists(path), 30, what="the file to be claimed")


if __name__ == "__main__":
    harness.main(globals())
