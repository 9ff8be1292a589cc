"""Integration-test harness for pickupd.

Every tests/integration/test_*.py imports this module. It drives the real
programs (`$PICKUPD_BIN_DIR/pickupd`, `pickupctl`, `pickupd-sendmail`)
against real SMTP servers, and gives tests:

  SmtpServer    an aiosmtpd server in a thread on 127.0.0.1, ephemeral port,
                recording every transaction with its raw DATA bytes; STARTTLS,
                implicit TLS, AUTH (PLAIN, LOGIN, XOAUTH2) and scripted faults
                (per-RCPT and per-DATA replies, dropped connections, delays);
                stop()/start() on the same port for "relay down, then up".
  Pickupd       one daemon in a private temp dir (spool/, pickup/, config, log):
                start, wait_ready, drop files, wait for log lines, inspect the
                spool, stop with SIGTERM and check exit 0 and no sanitizer report.
  make_certs    a CA plus good, expired, wrong-name and self-signed server certs.
  wait_for      the only way to wait: polls a condition with a generous bound and
                names what it waited for when it times out. No fixed sleeps.
  main          the runner: `harness.main(globals())` at the bottom of a test file
                runs its test_* functions in order, prints PASS/FAIL, exits 1 on
                any failure. `python3 test_x.py NAME...` runs only matching tests.

Run the tests with /usr/bin/python3 (Debian's, which has python3-aiosmtpd).
Environment (set by CTest): PICKUPD_BIN_DIR, PICKUPD_SRC_DIR, PICKUPD_SANITIZE=1|0.
Optional: PICKUPD_KEEP=1 keeps every temp dir; PICKUPD_TIMEOUT_SCALE multiplies
all waits (default 1, or 3 under the sanitizer build).

`python3 harness.py --selftest` checks the harness itself without pickupd.
"""

import base64
import fcntl
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import logging
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

HERE = os.path.dirname(os.path.abspath(__file__))
SRC_DIR = os.environ.get("PICKUPD_SRC_DIR") or os.path.dirname(os.path.dirname(HERE))
BIN_DIR = os.environ.get("PICKUPD_BIN_DIR") or os.path.join(SRC_DIR, "build")
SANITIZE = os.environ.get("PICKUPD_SANITIZE", "0") not in ("", "0", "OFF", "off", "false")

# tests/shim/faultfs.c, the LD_PRELOAD shim that injects ENOSPC/EIO/EROFS.
FAULT_SHIM = os.path.join(BIN_DIR, "libfaultfs.so")


def shim_env(ctl):
    """The environment that runs pickupd under the fault shim, steered by
    the control file ctl."""
    assert os.path.exists(FAULT_SHIM), "the fault shim was not built: %s" % FAULT_SHIM
    env = {"LD_PRELOAD": FAULT_SHIM, "FAULTFS_CTL": ctl}
    if SANITIZE:
        # The ASan runtime is linked into pickupd; the shim comes before it.
        env["ASAN_OPTIONS"] = ("detect_leaks=1:abort_on_error=0:print_summary=1:"
                               "verify_asan_link_order=0")
    return env


def fault_shim(d):
    """Runs d (not yet started) under the fault shim, with no fault yet;
    returns a function that sets the shim's fault lines ("" for none)."""
    ctl = os.path.join(d.dir, "faultfs.ctl")
    open(ctl, "w").close()
    d.env = shim_env(ctl)

    def set_faults(spec):
        with open(ctl, "w") as f:
            f.write(spec)
    return set_faults


TIMEOUT_SCALE = float(os.environ.get("PICKUPD_TIMEOUT_SCALE") or (3 if SANITIZE else 1))
KEEP = os.environ.get("PICKUPD_KEEP", "0") not in ("", "0")

# aiosmtpd logs every session at INFO and deprecation chatter at WARNING;
# PICKUPD_SMTPD_DEBUG=1 shows its protocol trace when a test needs it.
logging.basicConfig(format="smtpd: %(message)s")
warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
logging.getLogger("mail.log").setLevel(
    logging.DEBUG if os.environ.get("PICKUPD_SMTPD_DEBUG") else logging.ERROR)

# Markers of a sanitizer report in a program's stderr (ASan, LSan, UBSan, TSan).
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "WARNING: ThreadSanitizer")

# The header pickupd writes before each line on stderr (not read by journald):
# "2024-05-01T12:00:00.123456+02:00 host pickupd/smtp[42]: " (test_logs.py checks it).
# Pickupd.log_text() shows it as "pickupd: ", so that tests match the text itself.
LOG_HEADER_RE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d \S+ "
    r"(?P<prog>pickupd)(?:/(?P<service>[a-z]+))?\[(?P<pid>\d+)\]: ", re.M)

# One log line per recipient and attempt, e.g. "pickupd: 4F2A9C1D0B: to=<a@b>,
# relay=test[127.0.0.1]:2525, delay=0.02, delays=0/0.01/0.00/0.01, dsn=2.0.0,
# status=sent (250 OK), relay_name=test"
# The "pickupd: " ident is optional so the pattern survives a change of ident.
STATUS_RE = (r"^(?:[\w.\[\]-]+: )?(?P<qid>[0-9A-Za-z._-]+): to=<(?P<rcpt>[^>]*)>, "
             r"relay=(?P<relay>[^\s\[]+)\[(?P<ip>[^\]]*)\]:(?P<port>\d+), "
             r"delay=(?P<delay>\d+(?:\.\d+)?), delays=(?P<delays>[\d.]+(?:/[\d.]+){3}), "
             r"dsn=(?P<dsn>[245]\.\d{1,3}\.\d{1,3}), status=(?P<status>sent|deferred|bounced) "
             r"\((?P<reply>.*)\), relay_name=(?P<relay_name>\S+)$")


def status_re(status="sent", rcpt=None):
    """A compiled STATUS_RE restricted to one status and, if given, one recipient."""
    pat = STATUS_RE.replace("(?P<status>sent|deferred|bounced)", "(?P<status>%s)" % status)
    if rcpt is not None:
        pat = pat.replace("(?P<rcpt>[^>]*)", "(?P<rcpt>%s)" % re.escape(rcpt))
    return re.compile(pat, re.M)


# ---------------------------------------------------------------------------
# Waiting

class WaitTimeout(AssertionError):
    """wait_for gave up; the message names what was awaited."""


def wait_for(predicate, timeout=60, interval=0.05, what=None):
    """Polls predicate() until it returns a true value, and returns that value.

    timeout is multiplied by PICKUPD_TIMEOUT_SCALE. Raises WaitTimeout naming
    `what` (or the predicate) when the bound passes. Exceptions raised by the
    predicate propagate (so a predicate can fail fast, e.g. "daemon died").
    """
    deadline = time.monotonic() + timeout * TIMEOUT_SCALE
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            name = what or getattr(predicate, "__name__", repr(predicate))
            raise WaitTimeout("timed out after %gs waiting for %s" %
                              (timeout * TIMEOUT_SCALE, name))
        time.sleep(interval)


# ---------------------------------------------------------------------------
# Files and sanitizers

def check_sanitizer_output(text, who="program"):
    """Raises AssertionError if text holds an ASan/LSan/UBSan report."""
    for marker in SANITIZER_MARKERS:
        i = text.find(marker)
        if i >= 0:
            start = text.rfind("\n", 0, max(0, i - 2000)) + 1
            raise AssertionError("%s: sanitizer report (%s):\n%s" %
                                 (who, marker, text[start:i + 4000]))


def walk_files(top):
    """Paths of all regular files under top, recursively (empty if top is absent)."""
    out = []
    for dirpath, _dirs, files in os.walk(top):
        for f in files:
            p = os.path.join(dirpath, f)
            if os.path.isfile(p) and not os.path.islink(p):
                out.append(p)
    return sorted(out)


def crlf_ok(data):
    """True if every line of data ends in CRLF (no bare LF, no bare CR)."""
    return re.search(rb"\r(?!\n)|(?<!\r)\n", data) is None


def program(name):
    """Absolute path of a built program (pickupd, pickupctl, pickupd-sendmail)."""
    return os.path.join(BIN_DIR, name)


def run_program(name, *args, input=None, timeout=60, check_sanitizer=True, env=None):
    """Runs a built program to completion; returns CompletedProcess (text, stdout+stderr
    separate). Fails the test on a sanitizer report in stderr."""
    e = dict(os.environ)
    e.update(_sanitizer_env())
    if env:
        e.update(env)
    if isinstance(input, str):
        input = input.encode()
    p = subprocess.run([program(name)] + [str(a) for a in args], input=input,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e,
                       timeout=timeout * TIMEOUT_SCALE)
    p.stdout = p.stdout.decode("utf-8", "replace")
    p.stderr = p.stderr.decode("utf-8", "replace")
    if check_sanitizer:
        check_sanitizer_output(p.stderr, name)
    return p


def _sanitizer_env():
    env = {}
    if "ASAN_OPTIONS" not in os.environ:
        env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0:print_summary=1"
    if "UBSAN_OPTIONS" not in os.environ:
        env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    return env


# ---------------------------------------------------------------------------
# Certificates

class Certs:
    """Paths made by make_certs. Each server pair is (cert, key) in PEM."""

    def __init__(self, d):
        self.dir = d
        self.ca = os.path.join(d, "ca.pem")                 # trust anchor for the client
        self.ca_key = os.path.join(d, "ca.key")
        self.cert = os.path.join(d, "server.pem")           # valid for `names`, signed by ca
        self.key = os.path.join(d, "server.key")
        self.expired_cert = os.path.join(d, "expired.pem")  # right names, expired in 2020
        self.expired_key = os.path.join(d, "expired.key")
        self.wrong_cert = os.path.join(d, "wrong.pem")      # signed by ca, for wrong.invalid
        self.wrong_key = os.path.join(d, "wrong.key")
        self.selfsigned_cert = os.path.join(d, "selfsigned.pem")  # right names, no CA
        self.selfsigned_key = os.path.join(d, "selfsigned.key")

    def context(self, which=""):
        """A server SSLContext for the pair `which` ("", "expired", "wrong", "selfsigned")."""
        prefix = which + "_" if which else ""
        return server_tls_context(getattr(self, prefix + "cert"), getattr(self, prefix + "key"))


def _openssl(*args, cwd=None):
    p = subprocess.run(["openssl"] + list(args), cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    if p.returncode != 0:
        raise RuntimeError("openssl %s failed:\n%s" % (" ".join(args), p.stdout.decode()))


def _san(names):
    parts = []
    for n in names:
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in n else socket.AF_INET, n)
            parts.append("IP:" + n)
        except OSError:
            parts.append("DNS:" + n)
    return "subjectAltName=" + ",".join(parts)


def token_command(d, fresh="fresh-token", expired="expired-token"):
    """A password_command in dir d that prints an expired access token on its
    first run and a fresh one on later runs (d/count counts the runs)."""
    counter = os.path.join(d, "count")
    path = os.path.join(d, "token.sh")
    with open(path, "w") as f:
        f.write("#!/bin/sh\nn=$(cat %s 2>/dev/null || echo 0)\necho $((n+1)) > %s\n"
                "if [ $n = 0 ]; then echo %s; else echo %s; fi\n"
                % (counter, counter, expired, fresh))
    os.chmod(path, 0o700)
    return path


def make_certs(d, names=("localhost", "127.0.0.1")):
    """Makes a test CA and server certificates in directory d with the openssl CLI.

    names: DNS names and IP addresses the good certificate is valid for (SAN).
    Returns a Certs with the paths. EC P-256 keys: fast to make.
    """
    os.makedirs(d, exist_ok=True)
    c = Certs(d)
    names = list(names)
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *newkey, "-keyout", c.ca_key, "-out", c.ca, "-days", "3650",
             "-subj", "/CN=pickupd test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    ext = os.path.join(d, "server.ext")
    wrong_ext = os.path.join(d, "wrong.ext")
    common = "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
    with open(ext, "w") as f:
        f.write(common + _san(names) + "\n")
    with open(wrong_ext, "w") as f:
        f.write(common + _san(["wrong.invalid"]) + "\n")

    def signed(cert, key, cn, extfile):
        csr = cert + ".csr"
        _openssl("req", "-new", *newkey, "-keyout", key, "-out", csr, "-subj", "/CN=" + cn)
        _openssl("x509", "-req", "-in", csr, "-CA", c.ca, "-CAkey", c.ca_key,
                 "-CAcreateserial", "-out", cert, "-days", "825", "-extfile", extfile)

    signed(c.cert, c.key, names[0], ext)
    signed(c.wrong_cert, c.wrong_key, "wrong.invalid", wrong_ext)

    # Expired: `openssl x509` cannot back-date, `openssl ca` can.
    cadir = os.path.join(d, "ca-db")
    os.makedirs(cadir, exist_ok=True)
    open(os.path.join(cadir, "index.txt"), "w").close()
    with open(os.path.join(cadir, "serial"), "w") as f:
        f.write("1000\n")
    cnf = os.path.join(d, "ca.cnf")
    with open(cnf, "w") as f:
        f.write("[ca]\ndefault_ca = test\n[test]\ndir = %s\ndatabase = $dir/index.txt\n"
                "serial = $dir/serial\nnew_certs_dir = $dir\ndefault_md = sha256\n"
                "policy = anything\nunique_subject = no\ncopy_extensions = none\n"
                "[anything]\ncommonName = supplied\n[ext]\n%s%s\n"
                % (cadir, common, _san(names)))
    csr = c.expired_cert + ".csr"
    _openssl("req", "-new", *newkey, "-keyout", c.expired_key, "-out", csr,
             "-subj", "/CN=" + names[0])
    _openssl("ca", "-batch", "-config", cnf, "-cert", c.ca, "-keyfile", c.ca_key,
             "-in", csr, "-out", c.expired_cert, "-extensions", "ext", "-notext",
             "-startdate", "20200101000000Z", "-enddate", "20200102000000Z")

    _openssl("req", "-x509", *newkey, "-keyout", c.selfsigned_key, "-out",
             c.selfsigned_cert, "-days", "825", "-subj", "/CN=" + names[0],
             "-addext", _san(names))
    return c


def server_tls_context(certfile, keyfile):
    """A server-side SSLContext for aiosmtpd (STARTTLS or implicit TLS)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certfile, keyfile)
    return ctx


# ---------------------------------------------------------------------------
# SMTP server

class Transaction:
    """One DATA transaction as the server saw it (raw bytes, nothing decoded).

    data is the message content after dot-unstuffing (aiosmtpd removes the
    stuffed dot, as RFC 5321 4.5.2 says), with its CRLFs as received.
    reply is what the server answered to the final dot; accepted is True for 2xx.
    """

    def __init__(self, mail_from, mail_options, rcpt_tos, rcpt_options, data, peer,
                 tls, auth_login, reply):
        self.mail_from = mail_from
        self.mail_options = mail_options
        self.rcpt_tos = rcpt_tos
        self.rcpt_options = rcpt_options
        self.data = data
        self.received = time.time()
        self.peer = peer
        self.tls = tls
        self.auth_login = auth_login
        self.reply = reply
        self.accepted = reply.startswith("2")

    @property
    def headers(self):
        """The header section (bytes, CRLF line ends, without the blank line)."""
        return self.data.split(b"\r\n\r\n", 1)[0]

    @property
    def body(self):
        """The body (bytes after the first empty line)."""
        parts = self.data.split(b"\r\n\r\n", 1)
        return parts[1] if len(parts) > 1 else b""

    def header(self, name):
        """All values of header `name` (unfolded, str), in order."""
        text = self.headers.decode("utf-8", "surrogateescape")
        text = re.sub(r"\r\n[ \t]", " ", text)
        out = []
        for line in text.split("\r\n"):
            k, sep, v = line.partition(":")
            if sep and k.strip().lower() == name.lower():
                out.append(v.strip())
        return out

    def __repr__(self):
        return "<Transaction from=%r to=%r size=%d reply=%r>" % (
            self.mail_from, self.rcpt_tos, len(self.data), self.reply)


# Reply scripts. A RCPT to local part "fail550" (or "fail550+anything") is
# refused for good, "defer451" for now; everything else is accepted.
DEFAULT_RCPT_FAULTS = {
    "fail550": "550 5.1.1 no such user",
    "defer451": "451 4.3.0 try later",
}
DROP = "<drop connection>"  # a scripted reply that closes the connection instead


def _rcpt_lookup(table, address):
    addr = address.lower()
    local = addr.rsplit("@", 1)[0]
    for key in (addr, local, re.split(r"[+-]", local, 1)[0]):
        if key in table:
            return table[key]
    return None


class _Handler:
    """aiosmtpd handler. Careful: aiosmtpd treats every attribute of the handler
    named auth_* as an AUTH mechanism and handle_* as a hook."""

    def __init__(self, owner):
        self.owner = owner

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        o = self.owner
        with o._lock:
            o.ehlo_count += 1
        if o.ehlo_filter is not None:
            responses = o.ehlo_filter(list(responses))
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        reply = self.owner._scripted(self.owner.mail_reply, address)
        if reply is not None:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 ok"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        o = self.owner
        reply = None
        if callable(o.rcpt_faults):
            reply = o.rcpt_faults(address)
        elif o.rcpt_faults:
            reply = _rcpt_lookup(o.rcpt_faults, address)
        if reply is None:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.append(list(rcpt_options))
            reply = "250 2.1.5 ok"
        with o._lock:
            o.rcpt_log.append((address, reply))
        return reply

    async def handle_exception(self, error):
        # Recorded rather than logged: failed TLS handshakes are expected in tests.
        with self.owner._lock:
            self.owner.errors.append(error)
        return "500 Error: (%s) %s" % (error.__class__.__name__, error)

    async def handle_DATA(self, server, session, envelope):
        o = self.owner
        if o.data_delay:
            await _asyncio_sleep(o.data_delay)
        with o._lock:
            n = o._data_count
            o._data_count += 1
            reply = None
            if o.data_replies:
                reply = o.data_replies.pop(0)
        if o.data_reply is not None:
            reply = o.data_reply(n, envelope)
        if reply is None:
            reply = "250 2.0.0 ok"
        t = Transaction(envelope.mail_from, list(envelope.mail_options),
                        list(envelope.rcpt_tos), list(envelope.rcpt_options),
                        bytes(envelope.original_content), session.peer,
                        server.transport.get_extra_info("ssl_object") is not None,
                        session.auth_data.login.decode() if isinstance(
                            session.auth_data, LoginPassword) else session.auth_data,
                        reply)
        with o._lock:
            o.transactions.append(t)
        if t.accepted and o.on_message is not None:
            o.on_message(t)
        if reply == DROP:
            server.transport.abort()
            # Nothing more reaches the client; aiosmtpd's push into the
            # closed transport is a no-op.
            return "250 unreachable"
        return reply


async def _asyncio_sleep(s):
    import asyncio
    await asyncio.sleep(s)


class _XOAuth2Handler(_Handler):
    async def auth_XOAUTH2(self, server, args):
        """XOAUTH2 (Google): base64("user=" U "\\1auth=Bearer " T "\\1\\1").
        A wrong token gets a 334 with a JSON error, then 535 after the client's
        empty line, as Gmail does."""
        if len(args) > 1:
            blob = args[1]
        else:
            await server.push("334 ")
            blob = (await server._reader.readline()).strip().decode()
        try:
            raw = base64.b64decode(blob, validate=True).decode()
            fields = dict(kv.split("=", 1) for kv in raw.split("\x01") if kv)
            user = fields.get("user", "")
            token = fields.get("auth", "").removeprefix("Bearer ")
        except Exception:
            return AuthResult(success=False, handled=False, message="501 5.5.2 bad XOAUTH2")
        ok = self.owner.xoauth2_tokens.get(user) == token
        self.owner._record_auth("XOAUTH2", user, ok)
        if ok:
            return AuthResult(success=True, auth_data=user)
        err = base64.b64encode(b'{"status":"401","schemes":"bearer",'
                               b'"scope":"https://mail.google.com/"}').decode()
        await server.push("334 " + err)
        await server._reader.readline()
        return AuthResult(success=False, handled=False,
                          message="535 5.7.8 Username and Password not accepted")


class _SMTP(SMTP):
    """Counts connections (minus the controller's own start-up probe)."""

    _refused = False

    def connection_made(self, transport):
        upgrade = self._original_transport is not None  # called again after STARTTLS
        owner = self.event_handler.owner
        if not upgrade and owner.max_connections is not None:
            with owner._lock:
                self._refused = len(owner._live) >= owner.max_connections
                owner.refused += self._refused
            if self._refused:
                # What Postfix's smtpd says when anvil counts too many
                # connections from one client (smtpd_client_connection_count_limit).
                transport.write(b"421 4.7.0 smtp.test Error: too many connections from "
                                b"127.0.0.1\r\n")
                transport.close()
                return
        super().connection_made(transport)
        if upgrade:
            return
        with owner._lock:
            owner._live.add(self)
            owner._conn_total += 1

    def data_received(self, data):
        owner = self.event_handler.owner
        if owner.record_chunks:
            with owner._lock:
                owner.chunks.append((time.time(), bytes(data)))
        super().data_received(data)

    def connection_lost(self, exc):
        if self._refused:
            return  # never set up as a session
        owner = self.event_handler.owner
        with owner._lock:
            owner._live.discard(self)
        super().connection_lost(exc)


class _Controller(Controller):
    def factory(self):
        return _SMTP(self.handler, **self.SMTP_kwargs)

    def _trigger_server(self):
        # Port 0 asks the kernel for a free port; learn which one before
        # aiosmtpd's start-up probe connects to it (aiosmtpd 1.4 would connect to 0).
        if self.port == 0:
            self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class SmtpServer:
    """An aiosmtpd SMTP server in a thread, on 127.0.0.1 and an ephemeral port.

    Options:
      port           0 = pick a free one (then fixed for later start() calls)
      tls_context    server SSLContext offered with STARTTLS (see make_certs)
      require_starttls  refuse MAIL etc. until STARTTLS (needs tls_context)
      implicit_tls   server SSLContext: TLS from the first byte (port 465 style)
      auth           (user, password): AUTH PLAIN and LOGIN accept this pair only
      auth_required  refuse MAIL before AUTH (default: True when auth is given)
      auth_require_tls  offer AUTH only after TLS (aiosmtpd's default, True)
      xoauth2_tokens {user: token}: also offer AUTH XOAUTH2
      rcpt_faults    table {address | local part | local part before +/-: reply}
                     or callable(address) -> reply or None (accept);
                     default DEFAULT_RCPT_FAULTS ("fail550", "defer451")
      mail_reply     callable(address) -> reply or None (accept)
      data_replies   list of replies used one per DATA, in order; then 250.
                     DROP closes the connection instead of replying.
      data_reply     callable(n, envelope) -> reply or None; n counts DATAs from 0
      data_delay     seconds to wait before answering the final dot
      ehlo_filter    callable(list of "250-..." lines) -> list (remove keywords)
      on_message     callable(Transaction), called for each accepted message
      data_size_limit  SIZE; aiosmtpd's default 32 MiB; None = unlimited
      hostname       the server's name in its greeting
      max_connections  more open connections than this get "421 4.7.0 ... too
                     many connections" and are closed, as Postfix's
                     smtpd_client_connection_count_limit does; None = no limit
      record_chunks  keep chunks (below)
    Records (read them from the test thread):
      transactions   every DATA transaction (Transaction), accepted or not
      messages       the accepted ones
      rcpt_log       (address, reply) for every RCPT
      auth_log       (mechanism, login, success) for every AUTH
      errors         exceptions in sessions (e.g. TLSSetupException: failed handshake)
      connections    connections accepted so far; ehlo_count
      refused        connections refused for max_connections
      chunks         (wall-clock time, bytes) of each read from a client, as
                     the bytes came (TLS removed), with record_chunks
    Use as a context manager, or start()/stop() yourself.
    """

    def __init__(self, port=0, *, tls_context=None, require_starttls=False, implicit_tls=None,
                 auth=None, auth_required=None, auth_require_tls=True, xoauth2_tokens=None,
                 rcpt_faults=DEFAULT_RCPT_FAULTS, mail_reply=None, data_replies=None,
                 data_reply=None, data_delay=0, ehlo_filter=None, on_message=None,
                 data_size_limit=33554432, hostname="smtp.test", host="127.0.0.1",
                 max_connections=None, record_chunks=False):
        self.host = host
        self.port = port
        self.tls_context = tls_context
        self.require_starttls = require_starttls
        self.implicit_tls = implicit_tls
        self.auth = auth
        self.auth_required = bool(auth or xoauth2_tokens) if auth_required is None \
            else auth_required
        self.auth_require_tls = auth_require_tls
        self.xoauth2_tokens = xoauth2_tokens or {}
        self.rcpt_faults = dict(rcpt_faults) if isinstance(rcpt_faults, dict) else rcpt_faults
        self.mail_reply = mail_reply
        self.data_replies = list(data_replies or [])
        self.data_reply = data_reply
        self.data_delay = data_delay
        self.ehlo_filter = ehlo_filter
        self.on_message = on_message
        self.data_size_limit = data_size_limit
        self.hostname = hostname
        self.max_connections = max_connections
        self.refused = 0
        self.record_chunks = record_chunks
        self.chunks = []
        self.transactions = []
        self.rcpt_log = []
        self.auth_log = []
        self.errors = []
        self.ehlo_count = 0
        self._data_count = 0
        self._conn_total = 0
        self._conn_probes = 0
        self._live = set()
        self._lock = threading.Lock()
        self._ctl = None
        _registry.append(self)

    # -- lifecycle

    def start(self):
        """Starts listening (on the same port as before after a stop())."""
        if self._ctl is not None:
            return self
        cls = _XOAuth2Handler if self.xoauth2_tokens else _Handler
        kwargs = dict(
            hostname=self.host, port=self.port, server_hostname=self.hostname,
            ready_timeout=10 * TIMEOUT_SCALE, data_size_limit=self.data_size_limit,
            tls_context=self.tls_context, require_starttls=self.require_starttls,
            auth_required=self.auth_required,
            # aiosmtpd counts only STARTTLS as TLS; implicit TLS is TLS too.
            auth_require_tls=self.auth_require_tls and self.implicit_tls is None,
            authenticator=self._authenticator)
        if self.implicit_tls is not None:
            kwargs["ssl_context"] = self.implicit_tls
        ctl = _Controller(cls(self), **kwargs)
        with self._lock:
            self._conn_probes += 1  # the controller's start-up probe
        ctl.start()
        self.port = ctl.port
        self._ctl = ctl
        return self

    def stop(self):
        """Stops listening and drops every open connection (relay down)."""
        ctl, self._ctl = self._ctl, None
        if ctl is None:
            return

        def abort_all():
            with self._lock:
                live = list(self._live)
            for s in live:
                try:
                    s.transport.abort()
                except Exception:  # already closing
                    pass

        ctl.loop.call_soon_threadsafe(abort_all)
        ctl.stop()

    def restart(self):
        self.stop()
        return self.start()

    @property
    def running(self):
        return self._ctl is not None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- records

    @property
    def messages(self):
        with self._lock:
            return [t for t in self.transactions if t.accepted]

    @property
    def connections(self):
        with self._lock:
            return self._conn_total - self._conn_probes

    def wait_messages(self, n, timeout=60):
        """Waits until n messages were accepted; returns the list of them."""
        try:
            return wait_for(lambda: len(self.messages) >= n and self.messages, timeout,
                            what="%d message(s) at the SMTP server on port %d" % (n, self.port))
        except WaitTimeout as e:
            raise WaitTimeout("%s; transactions: %r; RCPTs: %r" % (
                e, self.transactions, self.rcpt_log)) from None

    def rcpts_accepted(self):
        """All recipients of accepted messages, in order (with repeats)."""
        return [r for t in self.messages for r in t.rcpt_tos]

    # -- internals

    def _scripted(self, fn, *args):
        return fn(*args) if fn is not None else None

    def _record_auth(self, mechanism, login, ok):
        with self._lock:
            self.auth_log.append((mechanism, login, ok))

    def _authenticator(self, server, session, envelope, mechanism, auth_data):
        ok = False
        login = None
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode("utf-8", "replace")
            ok = self.auth is not None and (auth_data.login, auth_data.password) == (
                self.auth[0].encode(), self.auth[1].encode())
        self._record_auth(mechanism, login, ok)
        # handled=False: aiosmtpd then sends the 535 itself.
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


# ---------------------------------------------------------------------------
# The daemon

def minimal_config(spool, pickup, port, host="127.0.0.1"):
    """The smallest working config, as {section: {key: value}}."""
    return {
        "spool": {"dir": spool},
        "pickup": {"dir": pickup, "settle_time": "0"},
        "relay test": {"host": host, "port": str(port), "tls": "none"},
    }


def render_config(sections):
    """INI text from {section: {key: value}}; a list value repeats the key."""
    out = []
    for name, keys in sections.items():
        if keys is None:
            continue
        out.append("[%s]" % name)
        for k, v in keys.items():
            if v is None:
                continue
            for item in (v if isinstance(v, (list, tuple)) else [v]):
                out.append("%s = %s" % (k, item))
        out.append("")
    return "\n".join(out)


class Pickupd:
    """One pickupd process with its own temp dir:

        DIR/spool/   the spool (state dirs made by the daemon)
        DIR/pickup/  the pickup folder
        DIR/pickupd.conf, DIR/pickupd.log (stdout and stderr of every run)

    config: None = minimal_config pointing at `relay`; a dict merged over the
    minimal config ({section: {key: value}}, a None section or value removes
    it); or raw INI text in which "{dir}", "{spool}", "{pickup}" and "{port}"
    are replaced. relay: a SmtpServer, a port number, or None.

        with SmtpServer() as srv, Pickupd(relay=srv) as d:   # started and ready
            d.drop("a.eml", b"From: ...")

    Pass start=False to prepare the directories first and call start() later.
    Leaving the `with` block stops the daemon with SIGTERM and checks exit 0 and
    no sanitizer report; on an exception it kills it instead, and keeps the dir.
    """

    def __init__(self, config=None, *, relay=None, start=True, env=None, args=(),
                 notify=False, name="pickupd"):
        self.dir = tempfile.mkdtemp(prefix="pickupd-test-")
        self.spool = os.path.join(self.dir, "spool")
        self.pickup = os.path.join(self.dir, "pickup")
        os.makedirs(self.spool)
        os.makedirs(self.pickup)
        self.conf = os.path.join(self.dir, "pickupd.conf")
        self.logfile = os.path.join(self.dir, "pickupd.log")
        self.name = name
        self.autostart = start
        self.env = env or {}
        self.args = list(args)
        self.proc = None
        self.runs = 0
        self._log_offset = 0
        self._notify_sock = None
        self.notify_messages = []
        if notify:
            self._notify_path = os.path.join(self.dir, "notify.sock")
            self._notify_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._notify_sock.bind(self._notify_path)
            self._notify_sock.setblocking(False)
        port = relay.port if isinstance(relay, SmtpServer) else relay
        self.write_config(config, port)
        _registry.append(self)

    def write_config(self, config, port=None):
        """(Re)writes the config file; see the class doc for the forms of config."""
        if isinstance(config, str):
            text = config
            for k, v in (("{dir}", self.dir), ("{spool}", self.spool),
                         ("{pickup}", self.pickup), ("{port}", str(port))):
                text = text.replace(k, v)
        else:
            sections = minimal_config(self.spool, self.pickup, port if port else 1)
            if port is None:
                del sections["relay test"]
            for sec, keys in (config or {}).items():
                if keys is None:
                    sections.pop(sec, None)
                    continue
                merged = dict(sections.get(sec, {}))
                merged.update(keys)
                sections[sec] = merged
            text = render_config(sections)
        with open(self.conf, "w") as f:
            f.write(text)
        self.config_text = text

    # -- process

    def start(self):
        """Starts the daemon (again, after stop() or kill9(), on the same dirs)."""
        assert not self.running, "pickupd already running"
        self.runs += 1
        env = dict(os.environ)
        env.update(_sanitizer_env())
        env.pop("NOTIFY_SOCKET", None)
        if self._notify_sock is not None:
            env["NOTIFY_SOCKET"] = self._notify_path
        env.update(self.env)
        with open(self.logfile, "ab") as log:
            log.write(b"=== harness: run %d ===\n" % self.runs)
            log.flush()
            self._log_offset = log.tell()
            self.proc = subprocess.Popen([program(self.name), "-c", self.conf] + self.args,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env=env, cwd=self.dir)
        return self

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def _check_alive(self, what):
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError("pickupd exited with status %s while waiting for %s; log:\n%s"
                                 % (self.proc.returncode, what, self.log_tail()))

    def wait_ready(self, timeout=60):
        """Waits for the "pickupd: ready" line (fails at once if the daemon exits)."""
        self.wait_log(r"^pickupd: ready\b", timeout=timeout)
        return self

    def stop(self, timeout=60, expect_status=0, check_sanitizer=True):
        """SIGTERM, wait, and return the exit status. Asserts it equals
        expect_status (None: anything) and that stderr holds no sanitizer report."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout * TIMEOUT_SCALE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("pickupd did not exit within %gs of SIGTERM; log:\n%s"
                                     % (timeout * TIMEOUT_SCALE, self.log_tail()))
        status = self.proc.returncode
        if check_sanitizer:
            self.check_sanitizer()
        if expect_status is not None and status != expect_status:
            raise AssertionError("pickupd exited with %s, expected %s; log:\n%s"
                                 % (status, expect_status, self.log_tail()))
        return status

    def kill9(self):
        """SIGKILL (a crash); returns the wait status (-9). No checks."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait()

    def signal(self, sig):
        self.proc.send_signal(sig)

    def check_sanitizer(self):
        check_sanitizer_output(self.log_text(all_runs=True), "pickupd")

    def __enter__(self):
        if self.autostart and not self.running:
            self.start()
            self.wait_ready()
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.kill9()
            self.keep = True
            print("--- pickupd log (%s), last lines ---\n%s\n---" % (self.logfile, self.log_tail()))
            self.cleanup()
            return False
        try:
            if self.running:
                self.stop()
            elif self.proc is not None:
                self.check_sanitizer()
        except BaseException:
            self.keep = True
            self.cleanup()
            raise
        self.cleanup()
        return False

    keep = False

    def cleanup(self):
        """Kills the daemon if still alive; removes the dir unless kept."""
        if self.running:
            self.kill9()
        if self._notify_sock is not None:
            self._notify_sock.close()
            self._notify_sock = None
        if self.keep or KEEP:
            print("  (kept %s)" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- pickup

    def drop(self, name, data, mode=0o644, subdir=None):
        """Writes data to a dot-temp name, then renames it to pickup/NAME:
        the well-behaved writer. Returns the final path."""
        d = os.path.join(self.pickup, subdir) if subdir else self.pickup
        if isinstance(data, str):
            data = data.encode()
        tmp = os.path.join(d, ".%s.%d.tmp" % (name, os.getpid()))
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        path = os.path.join(d, name)
        os.rename(tmp, path)
        return path

    def drop_inplace(self, name, data, lock=False):
        """Writes pickup/NAME directly under its final name (in-place writers
        such as .NET's SmtpClient); lock=True holds flock(LOCK_SH) while
        writing, as .NET on Linux does. Returns the path."""
        with self.open_inplace(name, lock=lock) as f:
            f.write(data.encode() if isinstance(data, str) else data)
        return os.path.join(self.pickup, name)

    def open_inplace(self, name, lock=False):
        """Opens pickup/NAME for writing under its final name and returns the
        file object, so a test can write in steps (and hold a lock) itself."""
        f = open(os.path.join(self.pickup, name), "wb", buffering=0)
        if lock:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH)
        return f

    def pickup_files(self):
        """Names in the pickup dir (not recursive), dotfiles included."""
        return sorted(os.listdir(self.pickup))

    # -- spool

    def spool_files(self, state):
        """Regular files under spool/STATE (recursive: states may hash into
        subdirectories). state: a name or a list of names."""
        states = [state] if isinstance(state, str) else state
        out = []
        for s in states:
            out += walk_files(os.path.join(self.spool, s))
        return out

    def spool_empty(self):
        """No message left: nothing under data/, queue/, deferred/."""
        return not self.spool_files(["data", "queue", "deferred"])

    def wait_spool_empty(self, timeout=60):
        """Waits until spool_empty(); on timeout names the files left."""
        try:
            return wait_for(self.spool_empty, timeout, what="an empty spool")
        except WaitTimeout as e:
            left = self.spool_files(["data", "queue", "deferred"])
            raise WaitTimeout("%s; left: %s; log:\n%s" % (e, left, self.log_tail())) from None

    # -- logs

    def raw_log_text(self, all_runs=False):
        """The daemon's stderr+stdout of this run (or of all runs), as written."""
        try:
            with open(self.logfile, "rb") as f:
                if not all_runs:
                    f.seek(self._log_offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_text(self, all_runs=False):
        """raw_log_text with each line's header (time, host, program[pid]) shown
        as "pickupd: "."""
        return LOG_HEADER_RE.sub(r"\g<prog>: ", self.raw_log_text(all_runs))

    def log_tail(self, n=60):
        return "\n".join(self.log_text(all_runs=True).splitlines()[-n:])

    def log_matches(self, regex):
        """All matches of regex (str, re.M) in this run's log."""
        rx = re.compile(regex, re.M) if isinstance(regex, str) else regex
        return list(rx.finditer(self.log_text()))

    def wait_log(self, regex, timeout=60, count=1):
        """Waits until regex (re.M) matches at least count times in this run's
        log; returns the list of matches. Fails at once if the daemon exits."""
        rx = re.compile(regex, re.M) if isinstance(regex, str) else regex
        what = "%d log line(s) matching %r" % (count, rx.pattern)

        def check():
            m = self.log_matches(rx)
            if len(m) >= count:
                return m
            self._check_alive(what)
            return None
        try:
            return wait_for(check, timeout, what=what)
        except WaitTimeout as e:
            raise WaitTimeout("%s; log:\n%s" % (e, self.log_tail())) from None

    # -- sd_notify

    def read_notify(self):
        """Collects sd_notify datagrams received so far; returns them all."""
        while self._notify_sock is not None:
            try:
                self.notify_messages.append(self._notify_sock.recv(65536).decode())
            except BlockingIOError:
                break
        return self.notify_messages

    # -- companions

    def pickupctl(self, *args, **kw):
        """Runs `pickupctl -c CONF ARGS...`; returns CompletedProcess (text)."""
        return run_program("pickupctl", "-c", self.conf, *args, **kw)

    def sendmail(self, *args, input=None, **kw):
        """Runs `pickupd-sendmail -C CONF ARGS...` with input on stdin."""
        return run_program("pickupd-sendmail", "-C", self.conf, *args, input=input, **kw)


# ---------------------------------------------------------------------------
# Scheduling and failure handling (issue 6): messages, queue IDs, envelopes,
# bounces (RFC 3464). Used by test_retry, test_bounce, test_failover,
# test_signals.

def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now (a relay
    that is down; start a SmtpServer(port=...) on it later for "up")."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def make_message(sender, rcpts, subject="test", body="hello\n", x_sender=False):
    """A small .eml (bytes). x_sender=True writes leading X-Sender/X-Receiver
    lines (sender "" gives "X-Sender: <>", the null sender); otherwise the
    envelope comes from From:/To:."""
    lines = []
    if x_sender:
        lines.append("X-Sender: <%s>" % sender)
        lines += ["X-Receiver: <%s>" % r for r in rcpts]
    lines.append("From: <%s>" % (sender or "mailer-daemon@example.org"))
    lines.append("To: " + ", ".join("<%s>" % r for r in rcpts))
    lines.append("Subject: " + subject)
    return ("\n".join(lines) + "\n\n" + body).encode()


def claim_qid(d, filename, timeout=30):
    """The queue ID pickupd gave pickup/FILENAME (from its claim line)."""
    m = d.wait_log(r"(?:^|\s)(?P<qid>[0-9A-Za-z._-]+): uid=\d+, pickup=[^,]+, file=%s,"
                   % re.escape(filename), timeout=timeout)
    return m[0].group("qid")


def read_envelope(path):
    """An envelope file as a dict: the single-valued fields by key ("id",
    "attempts", "next-attempt", "sender", "reason", ...; text unescaped), "rcpts"
    as a list of {"status", "addr", "reply", "params"}, and "text" (the raw file).
    Returns None if the file vanished (moved on)."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return None
    env = {"text": text, "rcpts": [], "path": path}
    last = env
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        value = re.sub(r"\\x([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), value)
        if key == "rcpt":
            status, _, addr = value.partition(" ")
            last = {"status": status, "addr": addr.strip("<>"), "reply": None, "params": None}
            env["rcpts"].append(last)
        elif key in ("reply", "params") and last is not env:
            last[key] = value
        else:
            env.setdefault(key, value)
    return env


def envelopes(d, states):
    """read_envelope() of every envelope under spool/STATE(S) (recursive)."""
    out = []
    for p in d.spool_files(states):
        e = read_envelope(p)
        if e is not None:
            out.append(e)
    return out


def find_envelope(d, states, qid):
    """The envelope of queue ID qid in one of states, or None."""
    for e in envelopes(d, states):
        if e.get("id") == qid or os.path.basename(e["path"]) == qid:
            return e
    return None


class Dsn:
    """A delivery status notification (RFC 3464) parsed from a Transaction.

    msg: the email.message.Message; report_type: the report-type parameter;
    text: the text/plain part (str); per_message: the per-message fields
    ({lowercase name: value}); recipients: the per-recipient field blocks,
    each {lowercase name: value}; headers_part: the text/rfc822-headers part
    (str) or None; parts: the content types of the top-level parts in order."""

    def __init__(self, t):
        import email
        import email.policy
        self.transaction = t
        self.msg = email.message_from_bytes(t.data, policy=email.policy.compat32)
        self.content_type = self.msg.get_content_type()
        self.report_type = (self.msg.get_param("report-type") or "").lower()
        self.parts = []
        self.text = None
        self.per_message = {}
        self.recipients = []
        self.headers_part = None
        if not self.msg.is_multipart():
            return
        for part in self.msg.get_payload():
            ct = part.get_content_type()
            self.parts.append(ct)
            if ct == "text/plain" and self.text is None:
                self.text = part.get_payload(decode=True).decode("utf-8", "replace")
            elif ct == "message/delivery-status":
                self._status_blocks(part)
            elif ct in ("text/rfc822-headers", "message/rfc822-headers"):
                raw = part.get_payload(decode=True)
                self.headers_part = raw.decode("utf-8", "replace") if raw else ""

    def _status_blocks(self, part):
        # compat32 parses message/delivery-status into a list of Message blocks.
        payload = part.get_payload()
        if isinstance(payload, list):
            blocks = [dict((k.lower(), " ".join(str(v).split())) for k, v in b.items())
                      for b in payload]
        else:  # a single text blob: split on blank lines ourselves
            text = payload if isinstance(payload, str) else payload.decode()
            text = re.sub(r"\r?\n[ \t]+", " ", text.replace("\r\n", "\n"))
            blocks = []
            for chunk in re.split(r"\n\s*\n", text.strip()):
                b = {}
                for line in chunk.splitlines():
                    k, sep, v = line.partition(":")
                    if sep:
                        b[k.strip().lower()] = " ".join(v.split())
                blocks.append(b)
        if blocks:
            self.per_message = blocks[0]
            self.recipients = [b for b in blocks[1:] if b]

    def final_recipients(self):
        """Addresses of Final-Recipient fields ("rfc822; a@b" -> "a@b"), lowercase."""
        out = []
        for b in self.recipients:
            v = b.get("final-recipient", "")
            out.append(v.split(";", 1)[-1].strip().strip("<>").lower())
        return out

    def recipient(self, addr):
        """The per-recipient block of addr, or None."""
        for b, a in zip(self.recipients, self.final_recipients()):
            if a == addr.lower():
                return b
        return None


def bounces(srv):
    """Accepted transactions from the null sender (bounces, delay warnings)."""
    return [t for t in srv.messages if t.mail_from in ("", "<>")]


# ---------------------------------------------------------------------------
# Runner

_registry = []  # servers and daemons to clean up after each test


def _cleanup_registry():
    while _registry:
        obj = _registry.pop()
        try:
            if isinstance(obj, Pickupd):
                if obj.running:
                    obj.kill9()
                    obj.keep = True
                    print("  (pickupd left running: killed; dir kept: %s)" % obj.dir)
                elif not obj.keep and not KEEP:
                    shutil.rmtree(obj.dir, ignore_errors=True)
            else:
                obj.stop()
        except Exception as e:  # keep cleaning up the rest
            print("  cleanup error: %r" % e)


class _TestTimeout(BaseException):
    pass


def _alarm(signum, frame):
    raise _TestTimeout("test exceeded its time limit")


def main(namespace, test_timeout=300):
    """Runs the test_* functions of namespace (a module's globals()) in
    definition order; `argv[1:]` may name tests (substring match) to run.
    Prints PASS/FAIL per test and exits 1 if any failed."""
    tests = [(n, f) for n, f in list(namespace.items())
             if n.startswith("test_") and callable(f)]
    wanted = sys.argv[1:]
    if wanted:
        tests = [(n, f) for n, f in tests if any(w in n for w in wanted)]
    script = os.path.basename(namespace.get("__file__", "?"))
    if not os.access(program("pickupd"), os.X_OK):
        print("FAIL %s: %s is not built (PICKUPD_BIN_DIR=%s)" %
              (script, program("pickupd"), BIN_DIR))
        sys.exit(1)
    signal.signal(signal.SIGALRM, _alarm)
    failed = []
    for name, fn in tests:
        print("RUN  %s" % name, flush=True)
        t0 = time.monotonic()
        # Below CTest's 600 s per file, so a hung test is reported, not killed.
        signal.alarm(int(min(test_timeout * TIMEOUT_SCALE, 540)))
        try:
            fn()
            ok = True
        except BaseException as e:  # noqa: B902 - the runner reports everything
            if isinstance(e, KeyboardInterrupt):
                raise
            ok = False
            traceback.print_exc()
        finally:
            signal.alarm(0)
            _cleanup_registry()
        dt = time.monotonic() - t0
        print("%s %s (%.2fs)" % ("PASS" if ok else "FAIL", name, dt), flush=True)
        if not ok:
            failed.append(name)
    print("%s: %d passed, %d failed%s" % (script, len(tests) - len(failed), len(failed),
                                          (": " + ", ".join(failed)) if failed else ""))
    sys.exit(1 if failed or not tests else 0)


# ---------------------------------------------------------------------------
# Self-test of the harness (no pickupd needed): python3 harness.py --selftest

def _selftest():
    import smtplib

    body = b"From: a@example.org\r\nTo: b@example.net\r\n\r\nline\r\n.leading dot\r\n.\r\nend\r\n"

    def check(name, cond):
        print(("ok   " if cond else "FAIL ") + name, flush=True)
        if not cond:
            raise SystemExit(1)

    # Plain delivery, raw bytes, dot-unstuffing, RCPT and DATA faults.
    with SmtpServer(data_replies=["554 DT:SPM 163 smtp1, spam"]) as srv:
        check("ephemeral port", srv.port > 0)
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as c:
            c.ehlo("client.test")
            try:
                c.sendmail("a@example.org", ["b@example.net"], body)
                check("scripted DATA refusal", False)
            except smtplib.SMTPDataError as e:
                check("scripted DATA refusal", e.smtp_code == 554)
            refused = c.sendmail("a@example.org", ["b@example.net", "fail550@example.net",
                                                   "defer451+x@example.net"], body)
            check("per-RCPT faults", refused == {
                "fail550@example.net": (550, b"5.1.1 no such user"),
                "defer451+x@example.net": (451, b"4.3.0 try later")})
        msgs = srv.wait_messages(1, timeout=10)
        check("one accepted, two transactions", len(msgs) == 1 and len(srv.transactions) == 2)
        m = msgs[0]
        check("envelope", m.mail_from == "a@example.org" and m.rcpt_tos == ["b@example.net"])
        check("raw data with CRLF, dot unstuffed", m.data == body and crlf_ok(m.data))
        check("header()", m.header("to") == ["b@example.net"])
        check("connections counted", srv.connections == 1)
        port = srv.port
        # Relay down, then up on the same port.
        srv.stop()
        try:
            socket.create_connection(("127.0.0.1", port), 2).close()
            check("down refuses connections", False)
        except OSError:
            check("down refuses connections", True)
        srv.start()
        check("up again on the same port", srv.port == port)
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
            c.sendmail("a@example.org", ["c@example.net"], body)
        check("delivers after restart", len(srv.wait_messages(2, timeout=10)) == 2)

    # A connection lost after the final dot (the duplicate window), then a retry.
    with SmtpServer(data_replies=[DROP]) as srv:
        try:
            with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as c:
                c.sendmail("a@example.org", ["b@example.net"], body)
            check("DROP closes the connection", False)
        except smtplib.SMTPServerDisconnected:
            check("DROP closes the connection", True)
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as c:
            c.sendmail("a@example.org", ["b@example.net"], body)
        check("DROP recorded as not accepted, retry accepted",
              [t.accepted for t in srv.transactions] == [False, True])

    # TLS: STARTTLS required + AUTH; implicit TLS; XOAUTH2; certificates.
    d = tempfile.mkdtemp(prefix="harness-selftest-")
    try:
        certs = make_certs(d)
        for f in (certs.ca, certs.cert, certs.expired_cert, certs.wrong_cert,
                  certs.selfsigned_cert):
            check("made " + os.path.basename(f), os.path.getsize(f) > 0)
        out = subprocess.run(["openssl", "verify", "-CAfile", certs.ca, certs.cert],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT).stdout
        check("server cert verifies against CA", b": OK" in out)
        out = subprocess.run(["openssl", "verify", "-CAfile", certs.ca, certs.expired_cert],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT).stdout
        check("expired cert is expired", b"expired" in out)
        client = ssl.create_default_context(cafile=certs.ca)
        with SmtpServer(tls_context=certs.context(), require_starttls=True,
                        auth=("user@example.org", "s3cret")) as srv:
            with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as c:
                c.ehlo("client.test")
                code, _ = c.mail("a@example.org")
                check("MAIL refused before STARTTLS", code == 530)
                c.rset()
                c.starttls(context=client)  # verifies chain and the IP SAN
                c.ehlo("client.test")
                try:
                    c.login("user@example.org", "wrong")
                    check("wrong password refused", False)
                except smtplib.SMTPAuthenticationError as e:
                    check("wrong password refused", e.smtp_code == 535)
                c.login("user@example.org", "s3cret")
                c.sendmail("a@example.org", ["b@example.net"], body)
            m = srv.wait_messages(1, timeout=10)[0]
            check("TLS + AUTH recorded", m.tls and m.auth_login == "user@example.org")
            check("auth_log", [x[2] for x in srv.auth_log][-1] is True
                  and not any(x[2] for x in srv.auth_log[:-1]))
        with SmtpServer(implicit_tls=certs.context(),
                        xoauth2_tokens={"user@example.org": "tok"}) as srv:
            with smtplib.SMTP_SSL("127.0.0.1", srv.port, timeout=10, context=client) as c:
                c.ehlo("client.test")
                check("XOAUTH2 offered", "XOAUTH2" in c.esmtp_features.get("auth", ""))
                tok = base64.b64encode(b"user=user@example.org\x01auth=Bearer tok\x01\x01")
                code, _ = c.docmd("AUTH", "XOAUTH2 " + tok.decode())
                check("XOAUTH2 accepted", code == 235)
                c.sendmail("a@example.org", ["b@example.net"], body)
            check("implicit TLS delivery", srv.wait_messages(1, timeout=10)[0].tls)
        wrong = ssl.create_default_context(cafile=certs.ca)
        with SmtpServer(tls_context=certs.context("wrong")) as srv:
            with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as c:
                try:
                    c.starttls(context=wrong)
                    check("wrong-name cert rejected by a verifying client", False)
                except ssl.SSLCertVerificationError:
                    check("wrong-name cert rejected by a verifying client", True)
            wait_for(lambda: srv.errors, 10, what="the server to record the failed handshake")
            check("server recorded the failed handshake", "TLSSetup" in repr(srv.errors[0]))
    finally:
        shutil.rmtree(d, ignore_errors=True)

    # wait_for names what it waited for.
    try:
        wait_for(lambda: False, timeout=0.1, what="the impossible")
        check("wait_for times out", False)
    except WaitTimeout as e:
        check("wait_for times out with a clear message", "the impossible" in str(e))
    check("crlf_ok", crlf_ok(b"a\r\nb\r\n") and not crlf_ok(b"a\nb\r\n")
          and not crlf_ok(b"a\rb\r\n"))
    check("status_re", status_re("sent", "b@x").search(
        "pickupd: 4F2A9C1D0B: to=<b@x>, relay=test[127.0.0.1]:2525, delay=0.02, "
        "delays=0/0.01/0/0.01, dsn=2.0.0, status=sent (250 2.0.0 (ok)), relay_name=t")
          .group("reply") == "250 2.0.0 (ok)")
    check("log_text", LOG_HEADER_RE.sub(r"\g<prog>: ", (
        "2024-05-01T12:00:00.123456+02:00 host pickupd/smtp[42]: A: removed\n"
        "2024-05-01T12:00:00.123456-00:30 h pickupd[42]: ready\n"))
          == "pickupd: A: removed\npickupd: ready\n")
    print("selftest: all ok")


if __name__ == "__main__":
    if sys.argv[1:] == ["--selftest"]:
        _selftest()
    else:
        print(__doc__)
        print("usage: %s --selftest" % sys.argv[0])
        sys.exit(2)
