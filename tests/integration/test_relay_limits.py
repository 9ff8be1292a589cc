"""The relay pool's failure policy at the server's limits (issue 9):

- an AUTH failure (535) pauses the relay, but the pause ends as soon as its
  cause is gone: the secret file changed, the password_command prints
  something new, a reload (SIGHUP), or `pickupctl flush`; the message is then
  delivered without waiting out the 600 s pause;
- a server that limits connections per client (Postfix's
  smtpd_client_connection_count_limit, 163, QQ) refusing one extra
  connection lowers the relay's concurrency to the sessions that work, and
  neither pauses the relay nor defers anything; status and metrics show the
  limit."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import urllib.request

import harness
from harness import Pickupd, SmtpServer, free_port, make_message, status_re, wait_for

SENDER = "alice@example.org"
USER = "u@example.org"
PAUSED = r"relay test: .*535.*paused for 600 s"


def write_secret(path, text):
    """Rewrites the file in place, as an operator's editor would."""
    with open(path, "w") as f:
        f.write(text + "\n")
    os.chmod(path, 0o600)


def auth_config(d, **relay_keys):
    """Plaintext AUTH on loopback (the TLS paths are test_relay's); retries
    every second, so a message waits only for the pause, not its schedule."""
    keys = {"user": USER, "allow_plaintext_auth": "yes", "auth": "plain"}
    keys.update(relay_keys)
    return {"relay test": keys,
            "retry": {"schedule": "1s", "jitter_percent": "0", "max_age": "1h"},
            "bounce": {"enabled": "no"}}


def count_runs(path):
    try:
        with open(path) as f:
            return len(f.read().split())
    except FileNotFoundError:
        return 0


def auth_server(password):
    return SmtpServer(auth=(USER, password), auth_require_tls=False)


def refused_then_paused(d, srv, name="a.eml", rcpt="bob@example.net"):
    """Drops a message, waits for its 535 deferral and the relay's pause."""
    d.drop(name, make_message(SENDER, [rcpt], "auth pause"))
    line = d.wait_log(status_re("deferred", rcpt), timeout=30)[0]
    assert "535" in line.group("reply"), line.group(0)
    d.wait_log(PAUSED, timeout=30)
    assert srv.auth_log == [("PLAIN", USER, False)], srv.auth_log


def delivered_promptly(d, srv, why, rcpt="bob@example.net"):
    """Delivered well within the 600 s pause, with one more AUTH only."""
    m = srv.wait_messages(1, timeout=40)[0]
    assert m.rcpt_tos == [rcpt], m
    d.wait_log(r"relay test: pause ended: " + why, timeout=10)
    d.wait_log(status_re("sent", rcpt), timeout=20)
    d.wait_spool_empty(timeout=20)
    assert srv.auth_log == [("PLAIN", USER, False), ("PLAIN", USER, True)], srv.auth_log
    assert len(srv.messages) == 1, srv.transactions


def paused_file_relay(srv, d, name="secret"):
    """A relay with password_file d.dir/NAME ("wrong-pw"); starts d and has
    the message refused. Returns the file's path."""
    secret = os.path.join(d.dir, name)
    write_secret(secret, "wrong-pw")
    d.write_config(auth_config(d, password_file=secret), srv.port)
    d.start()
    d.wait_ready()
    refused_then_paused(d, srv)
    return secret


def test_auth_pause_ends_when_secret_file_fixed():
    with auth_server("right") as srv, Pickupd(relay=srv, start=False) as d:
        secret = paused_file_relay(srv, d)
        write_secret(secret, "right")
        delivered_promptly(d, srv, "the secret file changed")
        assert "wrong-pw" not in d.log_text() and "right\n" not in d.log_text()


def test_auth_pause_ends_on_sighup():
    """The config named the wrong file: the operator points it at the right
    one and reloads. The refused file itself never changes."""
    with auth_server("right") as srv, Pickupd(relay=srv, start=False) as d:
        paused_file_relay(srv, d, "old.secret")
        right = os.path.join(d.dir, "new.secret")
        write_secret(right, "right")
        d.write_config(auth_config(d, password_file=right), srv.port)
        d.signal(signal.SIGHUP)
        d.wait_log(r"reloaded ", timeout=20)
        delivered_promptly(d, srv, "configuration reloaded")


def test_auth_pause_ends_on_flush():
    """The provider had locked the account and unlocks it: nothing changes
    on our side but the operator's `pickupctl flush`."""
    with auth_server("right") as srv, Pickupd(relay=srv, start=False) as d:
        paused_file_relay(srv, d)
        srv.auth = (USER, "wrong-pw")  # unlocked at the provider
        r = d.pickupctl("flush")
        assert r.returncode == 0, r
        delivered_promptly(d, srv, "flush by operator")


def paused_command_relay(srv, d, min_runs):
    """A relay whose password_command prints the file d.dir/pw ("wrong-pw"),
    counting its runs in d.dir/runs; starts d, has the message refused and
    waits for min_runs runs. Returns the path of pw."""
    source = os.path.join(d.dir, "pw")
    runs = os.path.join(d.dir, "runs")
    write_secret(source, "wrong-pw")
    cmd = "cat %s; echo x >> %s" % (source, runs)
    d.write_config(auth_config(d, password_command=cmd), srv.port)
    d.start()
    d.wait_ready()
    refused_then_paused(d, srv)
    wait_for(lambda: count_runs(runs) >= min_runs, 40,
             what="%d runs of password_command" % min_runs)
    return source


def test_auth_pause_ends_when_password_command_output_changes():
    with auth_server("right") as srv, Pickupd(relay=srv, start=False) as d:
        # The session's run, and the daemon's own right after the refusal
        # (what it compares later output with), have both read the file.
        source = paused_command_relay(srv, d, 2)
        write_secret(source, "right")
        delivered_promptly(d, srv, "password_command prints something new")


def test_auth_pause_holds_while_nothing_changes():
    """The other side of the rule: unchanged credentials are not tried again
    (DESIGN: a 535 pauses that relay's credentials, no hammering), even when
    the password_command is run to look for a change."""
    with auth_server("right") as srv, Pickupd(relay=srv, start=False) as d:
        # Two runs after the refusal: the output was compared once.
        paused_command_relay(srv, d, 3)
        assert srv.auth_log == [("PLAIN", USER, False)], srv.auth_log
        assert srv.connections == 1, srv.connections
        assert not d.log_matches(r"pause ended"), d.log_text()
        assert d.spool_files(["queue", "deferred"]), "message not waiting"


# ---------------------------------------------------------------------------
# A server that limits connections per client

N_MESSAGES = 40


def metrics_value(port, name):
    body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10).read()
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError("no %s in metrics:\n%s" % (name, body.decode()))


def check_connection_limit(srv, d, mport):
    rcpts = ["r%02d@example.net" % i for i in range(N_MESSAGES)]
    for i, r in enumerate(rcpts):
        d.drop("m%02d.eml" % i, make_message(SENDER, [r], "limit %d" % i))
    d.wait_log(r"relay test: connection refused while 2 session\(s\) work: .*421 4\.7\.0",
               timeout=60)
    d.wait_spool_empty(timeout=90)
    # The spool empties before the last status line is written (the record
    # job runs in the pool, the log line on the loop): wait for the lines too.
    d.wait_log(status_re("sent"), timeout=60, count=N_MESSAGES)
    if isinstance(srv, SmtpServer):
        got = sorted(srv.rcpts_accepted())
        assert got == rcpts, got
    log = d.log_text()
    assert not re.search(r"paused", log), log
    assert not d.log_matches(status_re("deferred")), log
    assert len(d.log_matches(status_re("sent"))) == N_MESSAGES, log
    # No attempt counted: every message went on its first try.
    assert not d.spool_files(["deferred", "badmail"]), d.spool_files(["deferred", "badmail"])

    st = d.pickupctl("status")
    assert st.returncode == 0, st
    assert re.search(r"^relay test: \d+ session\(s\), concurrency limit 2 of 4$",
                     st.stdout, re.M), st.stdout
    js = json.loads(d.pickupctl("status", "--json").stdout)
    rel = js["daemon"]["relays"][0]
    assert rel["name"] == "test" and rel["concurrency_limit"] == 2, rel
    assert rel["max_sessions"] == 4 and rel["paused"] is False, rel
    assert metrics_value(mport, 'pickupd_relay_concurrency_limit{relay="test"}') == 2
    assert metrics_value(mport, 'pickupd_relay_paused{relay="test"}') == 0


def limit_config(mport):
    return {"relay test": {"max_sessions": "4"},
            "retry": {"schedule": "5m", "max_age": "1h"},
            "metrics": {"listen": "127.0.0.1:%d" % mport}}


def test_connection_limit_per_client():
    """aiosmtpd answering a third concurrent connection the way Postfix's
    anvil does (421 4.7.0 ... too many connections) and serving the others."""
    mport = free_port()
    with SmtpServer(max_connections=2, data_delay=0.05) as srv, \
            Pickupd(relay=srv, config=limit_config(mport)) as d:
        check_connection_limit(srv, d, mport)
        assert srv.refused >= 1, srv.refused


def test_lone_files_sent_at_once_raise_the_lowered_limit():
    """After the limit was lowered (a third connection refused), lone files
    dropped one at a time are each offered to an idle session and sent at
    once; with their content's fsync held half a second (the shim), the
    server's 250 comes before their claim is complete, and such successes
    still count toward raising the limit (50 of them: POLICY_GROW_AFTER)."""
    mport = free_port()
    with SmtpServer(max_connections=2, data_delay=0.05) as srv:
        d = Pickupd(relay=srv, start=False)
        d.write_config(limit_config(mport), srv.port)
        faults = harness.fault_shim(d)
        with d:
            d.start()
            d.wait_ready()
            check_connection_limit(srv, d, mport)
            assert not d.log_matches(r"concurrency limit raised"), d.log_text()
            faults("fsync:DELAY:/data/\n")
            for i in range(55):
                d.drop("lone%02d.eml" % i,
                       make_message(SENDER, ["lone@example.net"], "lone %d" % i))
                d.wait_log(status_re("sent"), count=N_MESSAGES + i + 1, timeout=60)
            d.wait_log(r"relay test: concurrency limit raised to 3 of 4", timeout=30)


class Postfix:
    """A private Postfix instance (its own config, queue and data directories
    under a temp dir) whose smtpd listens on 127.0.0.1:port and lets each
    client have 2 connections (anvil: smtpd_client_connection_count_limit,
    loopback not exempted); everything it accepts goes to the discard
    transport. Delivered recipients are read from its mail log. Needs root
    (master runs as root and its services as the postfix user)."""

    MASTER_CF = """{listen} inet n - n - - smtpd
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
showq     unix n - n - - showq
"""

    def __init__(self, connection_limit=2):
        self.dir = tempfile.mkdtemp(prefix="pickupd-postfix-")
        os.chmod(self.dir, 0o755)  # its services run as the postfix user
        self.port = free_port()
        self.etc = os.path.join(self.dir, "etc")
        self.maillog = os.path.join(self.dir, "maillog")
        for sub in ("etc", "queue", "data"):
            os.makedirs(os.path.join(self.dir, sub))
        shutil.chown(os.path.join(self.dir, "data"), "postfix")
        main = {
            "compatibility_level": "3.6", "queue_directory": self.dir + "/queue",
            "data_directory": self.dir + "/data", "maillog_file": self.maillog,
            "maillog_file_prefixes": self.dir, "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4", "myhostname": "smtp.test", "mydestination": "",
            "mynetworks": "127.0.0.0/8", "alias_maps": "", "alias_database": "",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtpd_client_connection_count_limit": str(connection_limit),
            "smtpd_client_event_limit_exceptions": "",
            "default_transport": "discard", "relay_transport": "discard"}
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write("".join("%s = %s\n" % kv for kv in main.items()))
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write(self.MASTER_CF.format(listen="127.0.0.1:%d" % self.port))

    def _postfix(self, cmd):
        return subprocess.run(["postfix", "-c", self.etc, cmd], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=120)

    def log(self):
        try:
            with open(self.maillog) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def __enter__(self):
        r = self._postfix("start")
        if r.returncode != 0:
            self.__exit__()
            raise AssertionError("postfix start failed: %s%s\n%s" % (r.stdout, r.stderr,
                                                                     self.log()))

        def listening():
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
                return True
            except OSError:
                return False
        wait_for(listening, 60, what="Postfix smtpd on port %d" % self.port)
        return self

    def __exit__(self, *exc):
        self._postfix("stop")
        if not exc or exc[0] is None:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            print("  (kept %s)" % self.dir)

    def delivered(self):
        """Recipients the discard transport took, in log order."""
        return re.findall(r"postfix/discard\[\d+\]: \w+: to=<([^>]+)>.*status=sent",
                          self.log())

    @property
    def refused(self):
        return len(re.findall(r"Connection concurrency limit exceeded", self.log()))


def test_connection_limit_real_postfix():
    """The same against Postfix's own smtpd, anvil counting connections."""
    if os.geteuid() != 0 or shutil.which("postfix") is None:
        print("  note: needs root and Postfix; covered by test_connection_limit_per_client")
        return
    mport = free_port()
    with Postfix(connection_limit=2) as pf, \
            Pickupd(relay=pf.port, config=limit_config(mport)) as d:
        check_connection_limit(pf, d, mport)
        wait_for(lambda: len(pf.delivered()) >= N_MESSAGES, 60,
                 what="Postfix's discard transport to take 40 recipients")
        assert sorted(pf.delivered()) == ["r%02d@example.net" % i for i in range(N_MESSAGES)]
        assert pf.refused >= 1, pf.log()


if __name__ == "__main__":
    harness.main(globals(), test_timeout=180)
