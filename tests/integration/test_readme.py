"""Every shell command in README.md is exercised.

The commands are the lines of README's ```sh blocks (comments and empty lines left
out, backslash continuations joined). COMMANDS below says, for each, how it is
exercised, matched by a regular expression on the whole command:

  Run(...)   run here, against a pickupd of the harness (temp spool, pickup folder,
             config; an aiosmtpd relay named "primary" that defers defer451@ and
             refuses fail550@), and its exit status must be 0. Before running,
             README's installed paths become the test's: /var/spool/pickupd/pickup the
             test's pickup folder, /var/spool/pickupd its spool; the programs come from
             PICKUPD_BIN_DIR (first on PATH) and find the config through
             $PICKUPD_CONFIG, as /etc/pickupd/pickupd.conf is found when installed;
             `journalctl -u pickupd ...` reads the daemon's log file instead;
             `systemctl reload pickupd` runs the unit's ExecReload= on the daemon; the
             example queue IDs in EXAMPLE_IDS become real messages in that state.
  Run(in_root=True)  a step of README's install by hand: run in order in a throw-away
             root (test_install_by_hand): paths under /usr, /etc, /var and /lib are taken
             inside it, build/ is PICKUPD_BIN_DIR, systemd-sysusers and systemd-tmpfiles
             get --root, as `make check-systemd` runs them; the layout is then checked.
  Mapped(...)  exercised by another test, named "file.py::function"; that function
             must exist. Installing packages and enabling services (apt install,
             systemctl enable) are mapped to test_package.py.

A README command that no entry matches fails test_every_command_has_a_runner, and
so does an entry that matches no command (the table follows the README)."""

import ast
import os
import re
import subprocess
import tempfile

import harness
from harness import (BIN_DIR, SRC_DIR, SmtpServer, Pickupd, claim_qid, find_envelope,
                     make_message, wait_for)

README = os.path.join(SRC_DIR, "README.md")
HERE = os.path.dirname(os.path.abspath(__file__))


# ---------------------------------------------------------------------------
# Reading the README

def strip_comment(line):
    """The line without a trailing shell comment: a '#' at the start of a word,
    outside quotes."""
    quote = None
    i = 0
    while i < len(line):
        c = line[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 1
            elif c == quote:
                quote = None
        elif c == "\\":
            i += 1
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
        i += 1
    return line.rstrip()


def sh_commands(text):
    """[(line number, command)] of the ```sh blocks of a markdown text."""
    out = []
    in_sh = False
    pending, start = "", 0
    for n, line in enumerate(text.splitlines(), 1):
        fence = line.strip()
        if fence.startswith("```"):
            in_sh = not in_sh and fence[3:].strip() == "sh"
            continue
        if not in_sh:
            continue
        cmd = strip_comment(line)
        if not pending:
            start = n
        if cmd.endswith("\\"):
            pending += cmd[:-1] + " "
            continue
        cmd = " ".join((pending + cmd).split())
        pending = ""
        if cmd:
            out.append((start, cmd))
    return out


# ---------------------------------------------------------------------------
# The table

class Run:
    """Run the command against the fixture. needs: states ("deferred", "hold",
    "badmail") that must hold a message first; setup(fixture) prepares more;
    check(fixture, completed process) asserts on the outcome."""

    def __init__(self, needs=(), setup=None, check=None, in_root=False):
        self.needs = needs
        self.setup = setup
        self.check = check
        self.in_root = in_root


class Mapped:
    """Exercised by the test function `where` ("file.py::function"), for the reason `why`."""

    def __init__(self, where, why):
        self.where = where
        self.why = why


# README's example queue IDs, and the state of the message each stands for.
EXAMPLE_IDS = {
    "01A22F4E012502B9E000": "deferred",
    "01A22F4E01A302B9E001": "badmail",
}

MESSAGE = (b"From: app@example.com\nTo: ops@example.com\nSubject: from pickupd-sendmail\n\n"
           b"hello\n")


def write_message_eml(fx):
    with open(os.path.join(fx.cwd, "message.eml"), "wb") as f:
        f.write(MESSAGE)


def delivered(subject):
    def check(fx, _p):
        wait_for(lambda: any(b"Subject: " + subject + b"\r\n" in m.data for m in fx.srv.messages),
                 60, what="a message with Subject: %s at the relay" % subject.decode())
    return check


def printed(pattern):
    def check(_fx, p):
        assert re.search(pattern, p.stdout, re.M), (pattern, p.stdout)
    return check


def reloaded(fx, _p):
    fx.d.wait_log(r"reloaded %s" % re.escape(fx.d.conf))


PKG = "test_package.py::"

COMMANDS = [
    # The two commands.
    (r"make demo", Run(check=printed(r"^pickupd exited with status 0$"))),
    (r"make check", Mapped(".ci/run", "CI runs `make check`, and with it this test")),
    # Packages, installing, services.
    (r"make package", Mapped(PKG + "test_contents", "builds both .debs with CPack, as the "
                             "package target does, and checks their contents")),
    (r"apt install \./build/pickupd_\*\.deb",
     Mapped(PKG + "test_install_remove_purge", "installs pickupd's .deb")),
    (r"apt install \./build/pickupd-mta_\*\.deb",
     Mapped(PKG + "test_mta_install", "installs pickupd-mta's .deb after pickupd's")),
    (r"apt install \./build/pickupd_\*\.deb \./build/pickupd-mta_\*\.deb",
     Mapped(PKG + "test_dependencies_resolve_here", "apt takes both, removing another MTA")),
    (r"editor /etc/pickupd/pickupd\.conf",
     Mapped(PKG + "test_install_remove_purge", "the conffile: edits survive upgrades")),
    (r"editor /etc/pickupd/primary\.secret",
     Mapped(PKG + "test_install_remove_purge", "the secret exists, 0600 root")),
    (r"systemctl enable --now pickupd", Mapped(PKG + "test_install_remove_purge",
                                               "the package's unit, installed")),
    (r"systemctl daemon-reload && systemctl enable --now pickupd",
     Mapped(PKG + "test_install_remove_purge", "the unit, installed as the package does")),
    (r"install -m (644|755) (build|systemd|config)/.*", Run(in_root=True)),
    (r"systemd-sysusers && systemd-tmpfiles --create", Run(in_root=True)),
    (r"usermod -aG pickupd-submit www-data",
     Mapped(PKG + "test_install_remove_purge", "the group exists, pickupd in it, and owns "
            "the 1770 pickup folder")),
    (r"systemctl reload pickupd", Run(check=reloaded)),
    (r"journalctl -u pickupd --since -5min \| grep reload", Run(check=printed(r"reloaded "))),
    # Writing into the folder.
    (r"printf '.*' >/var/spool/pickupd/pickup/\.hello\.tmp", Run()),
    (r"mv /var/spool/pickupd/pickup/\.hello\.tmp /var/spool/pickupd/pickup/hello\.eml",
     Run(check=delivered(b"test"))),
    (r"pickupd-sendmail -t <message\.eml",
     Run(setup=write_message_eml, check=delivered(b"from pickupd-sendmail"))),
    (r"ls -ld /var/spool/pickupd/pickup", Run()),
    # Badmail.
    (r"pickupctl list --state badmail", Run(needs=("badmail",), check=printed(r" badmail "))),
    (r"grep -rh '\^reason' /var/spool/pickupd/badmail \| sort \| uniq -c \| sort -rn",
     Run(needs=("badmail",), check=printed(r"^\s+\d+ reason delivery failed"))),
    (r"pickupctl requeue 01A22F4E01A302B9E001", Run(check=printed(r" requeued$"))),
    (r"pickupctl purge --older-than 7d", Run()),
    # Runbook.
    (r"pickupctl status", Run(check=printed(r"^pickupd: running"))),
    (r"pickupctl summary", Run(needs=("deferred",), check=printed(r"^\s+example\.com\s"))),
    (r"pickupctl list --state deferred", Run(needs=("deferred",),
                                             check=printed(r" deferred "))),
    (r"find /var/spool/pickupd/deferred -type f \| wc -l",
     Run(needs=("deferred",), check=printed(r"^[1-9]\d*$"))),
    (r"pickupctl show 01A22F4E012502B9E000", Run(check=printed(r"defer451@example\.com"))),
    (r"journalctl -u pickupd \| grep 01A22F4E012502B9E000", Run()),
    (r"pickupctl test-relay primary", Run()),
    (r"pickupctl flush", Run(needs=("deferred",))),
    (r"pickupctl retry 01A22F4E012502B9E000", Run()),
    (r"pickupctl hold ALL deferred", Run(needs=("deferred",), check=printed(r" held$"))),
    (r"pickupctl list --state deferred --to example\.com \| pickupctl hold -",
     Run(needs=("deferred",), check=printed(r" held$"))),
    (r"pickupctl release ALL", Run(needs=("hold",), check=printed(r" released$"))),
    (r"pickupctl delete 01A22F4E012502B9E000", Run(check=printed(r" deleted$"))),
    (r"pickupctl delete ALL deferred", Run(needs=("deferred",), check=printed(r" deleted$"))),
    (r"journalctl -u pickupd -f", Run(check=printed(r"ready"))),
    (r"journalctl -u pickupd --since -1h \| grep 'status=deferred'", Run(needs=("deferred",))),
    (r"journalctl -u pickupd --since -1h \| grep 'status=bounced'", Run(needs=("badmail",))),
    (r"curl -s http://127\.0\.0\.1:9325/metrics \| grep '\^pickupd_queue'",
     Mapped("test_metrics.py::test_metrics_follow_deliveries",
            "scrapes /metrics and reads pickupd_queue_messages")),
]


def entry_for(cmd):
    """The (pattern, entry) pairs of COMMANDS whose pattern matches cmd whole."""
    return [(pat, e) for pat, e in COMMANDS if re.fullmatch(pat, cmd)]


def classify(commands):
    """(matched [(line, cmd, entry)], unmatched [(line, cmd)], ambiguous, unused patterns)."""
    matched, unmatched, ambiguous = [], [], []
    used = set()
    for line, cmd in commands:
        hits = entry_for(cmd)
        if not hits:
            unmatched.append((line, cmd))
        elif len(hits) > 1:
            ambiguous.append((line, cmd, [p for p, _e in hits]))
        else:
            used.add(hits[0][0])
            matched.append((line, cmd, hits[0][1]))
    unused = [pat for pat, _e in COMMANDS if pat not in used]
    return matched, unmatched, ambiguous, unused


def readme_commands():
    with open(README) as f:
        return sh_commands(f.read())


# ---------------------------------------------------------------------------
# The fixture: one daemon for all the commands, in README order

class Fixture:
    def __init__(self, srv, d, cwd):
        self.srv = srv
        self.d = d
        self.cwd = cwd
        self.n = 0

    def message_in(self, state):
        """A new message in state (deferred, hold, badmail); returns its queue ID."""
        self.n += 1
        name = "readme-%d.eml" % self.n
        rcpt = "fail550@example.com" if state == "badmail" else "defer451@example.com"
        self.d.drop(name, make_message("app@example.com", [rcpt], subject=name))
        qid = claim_qid(self.d, name)
        settled = "badmail" if state == "badmail" else "deferred"
        wait_for(lambda: find_envelope(self.d, [settled], qid), 60,
                 what="%s in %s/" % (qid, settled))
        if state == "hold":
            p = self.d.pickupctl("hold", qid)
            assert p.returncode == 0, (p.stdout, p.stderr)
        return qid

    def has(self, state):
        return bool(self.d.spool_files(state))

    def command(self, cmd):
        """cmd with README's installed names turned into the fixture's."""
        cmd = cmd.replace("/var/spool/pickupd/pickup", self.d.pickup)
        cmd = cmd.replace("/var/spool/pickupd", self.d.spool)
        cmd = re.sub(r"journalctl -u pickupd[^|]*", "cat '%s' " % self.d.logfile, cmd)
        if cmd == "systemctl reload pickupd":
            cmd = exec_reload().replace("$MAINPID", str(self.d.pid))
        for example, state in EXAMPLE_IDS.items():
            if example in cmd:
                cmd = cmd.replace(example, self.message_in(state))
        return cmd

    def run(self, cmd, entry):
        # Nothing in flight: the command sees each message where it settled.
        wait_for(lambda: not self.d.spool_files("queue"), 60, what="an empty queue/")
        for state in entry.needs:
            if not self.has(state):
                self.message_in(state)
        if entry.setup:
            entry.setup(self)
        shell = self.command(cmd)
        env = dict(os.environ, PATH=BIN_DIR + os.pathsep + os.environ.get("PATH", ""),
                   PICKUPD_CONFIG=self.d.conf)
        env.update(harness._sanitizer_env())
        p = subprocess.run(["sh", "-c", shell], cwd=self.cwd, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True,
                           timeout=120 * harness.TIMEOUT_SCALE)
        harness.check_sanitizer_output(p.stderr, cmd)
        assert p.returncode == 0, "%s\n(ran: %s)\nexit %d\n%s\n%s" % (
            cmd, shell, p.returncode, p.stdout, p.stderr)
        if entry.check:
            entry.check(self, p)
        return p


def exec_reload():
    """The unit's ExecReload= command: what `systemctl reload pickupd` runs."""
    with open(os.path.join(SRC_DIR, "systemd", "pickupd.service")) as f:
        lines = [l.split("=", 1)[1].strip() for l in f if l.startswith("ExecReload=")]
    assert len(lines) == 1, lines
    return lines[0]


# ---------------------------------------------------------------------------
# Tests

def test_extraction():
    text = ("text\n```sh\nmake demo     # a comment\n# only a comment\n\n"
            "printf 'a # not a comment\\n' \\\n  | wc -l\n```\n"
            "```ini\n[spool]\n```\n```\nnot sh\n```\n```sh\nfrobnicate --now\n```\n")
    cmds = sh_commands(text)
    assert cmds == [(3, "make demo"), (6, "printf 'a # not a comment\\n' | wc -l"),
                    (16, "frobnicate --now")], cmds
    # A command with no entry is reported; so is an entry no command uses.
    _m, unmatched, _a, unused = classify(cmds)
    assert unmatched == [(6, "printf 'a # not a comment\\n' | wc -l"),
                         (16, "frobnicate --now")], unmatched
    assert "pickupctl status" in unused


def test_every_command_has_a_runner():
    cmds = readme_commands()
    assert len(cmds) >= 30, cmds  # the blocks were found
    _m, unmatched, ambiguous, unused = classify(cmds)
    problems = []
    for line, cmd in unmatched:
        problems.append("README.md:%d: no runner and no mapping in test_readme.py "
                        "COMMANDS: %s" % (line, cmd))
    for line, cmd, pats in ambiguous:
        problems.append("README.md:%d: several entries match %s: %s" % (line, cmd, pats))
    for pat in unused:
        problems.append("test_readme.py COMMANDS: %r matches no README command" % pat)
    assert not problems, "\n".join(problems)


def test_mapped_tests_exist():
    for pat, e in COMMANDS:
        if not isinstance(e, Mapped):
            continue
        if e.where == ".ci/run":
            with open(os.path.join(SRC_DIR, ".ci", "run")) as f:
                assert re.search(r"^make check$", f.read(), re.M), ".ci/run: no make check"
            continue
        path, func = e.where.split("::")
        with open(os.path.join(HERE, path)) as f:
            tree = ast.parse(f.read())
        names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert func in names, "%s (for %r): no function %s in %s" % (e.where, pat, func, path)
        assert func.startswith("test_"), e.where


def test_readme_commands_run():
    runs = [(line, cmd, e) for line, cmd, e in classify(readme_commands())[0]
            if isinstance(e, Run) and not e.in_root and cmd != "make demo"]
    assert runs
    config = {
        "general": {"hostname": "mail.example.com"},
        "relay test": None,
        "relay primary": None,  # filled in below, with the server's port
        "retry": {"schedule": "1h"},
    }
    with SmtpServer() as srv:
        config["relay primary"] = {"host": "127.0.0.1", "port": str(srv.port), "tls": "none"}
        with Pickupd(config, relay=srv) as d, tempfile.TemporaryDirectory() as cwd:
            fx = Fixture(srv, d, cwd)
            for line, cmd, entry in runs:
                print("  README.md:%d: %s" % (line, cmd), flush=True)
                fx.run(cmd, entry)


def in_root(cmd, root):
    """A by-hand install step with its system paths inside root."""
    cmd = re.sub(r"(?<=\s)/(?=(?:usr|etc|var|lib)/)", root + "/", cmd)
    cmd = re.sub(r"(?<=\s)build/", BIN_DIR + "/", cmd)
    cmd = cmd.replace("systemd-sysusers", "systemd-sysusers --root=" + root)
    return cmd.replace("systemd-tmpfiles --create", "systemd-tmpfiles --root=%s --create" % root)


def test_install_by_hand():
    steps = [(line, cmd) for line, cmd, e in classify(readme_commands())[0]
             if isinstance(e, Run) and e.in_root]
    assert len(steps) >= 5, steps
    with tempfile.TemporaryDirectory(prefix="pickupd-root-") as root:
        # What a Debian system has before the install.
        for d in ("usr/sbin", "usr/lib/sysusers.d", "usr/lib/tmpfiles.d",
                  "etc/systemd/system", "var/spool"):
            os.makedirs(os.path.join(root, d))
        for f in ("passwd", "group"):
            subprocess.run(["cp", "/etc/" + f, os.path.join(root, "etc", f)], check=True)
        for line, cmd in steps:
            shell = in_root(cmd, root)
            print("  README.md:%d: %s" % (line, shell), flush=True)
            p = subprocess.run(["sh", "-c", shell], cwd=SRC_DIR, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, timeout=120)
            assert p.returncode == 0, "README.md:%d: %s\n(ran: %s)\nexit %d\n%s\n%s" % (
                line, cmd, shell, p.returncode, p.stdout, p.stderr)

        def mode(path):
            return oct(os.stat(root + path).st_mode & 0o7777)
        for prog in ("pickupd", "pickupctl", "pickupd-sendmail"):
            assert mode("/usr/sbin/" + prog) == oct(0o755), prog
        assert mode("/etc/pickupd/pickupd.conf") == oct(0o644)  # pickupd-sendmail reads it
        assert mode("/etc/systemd/system/pickupd.service") == oct(0o644)
        assert mode("/var/spool/pickupd/pickup") == oct(0o1770)
        assert mode("/etc/pickupd/primary.secret") == oct(0o600)
        with open(os.path.join(root, "etc", "group")) as f:
            assert re.search(r"^pickupd-submit:x:\d+:pickupd$", f.read(), re.M)
        p = subprocess.run([root + "/usr/sbin/pickupd", "--version"], stdout=subprocess.PIPE,
                           text=True)
        assert p.returncode == 0 and p.stdout.startswith("pickupd "), p.stdout


def test_make_demo():
    """`make demo` is `make deps build` (tested by make check itself), then
    scripts/demo.sh, run here on the programs under test."""
    cmds = [c for _l, c, e in classify(readme_commands())[0] if c == "make demo"]
    assert cmds, "README no longer says make demo"
    with open(os.path.join(SRC_DIR, "Makefile")) as f:
        assert re.search(r"^demo: deps build\n\tsh scripts/demo.sh$", f.read(), re.M)
    entry = dict(COMMANDS)["make demo"]
    env = dict(os.environ, PICKUPD_BIN_DIR=BIN_DIR,
               DEMO_TIMEOUT=str(int(60 * harness.TIMEOUT_SCALE)))
    env.update(harness._sanitizer_env())
    p = subprocess.run(["sh", os.path.join(SRC_DIR, "scripts", "demo.sh")], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=300 * harness.TIMEOUT_SCALE)
    harness.check_sanitizer_output(p.stdout + p.stderr, "demo.sh")
    work = re.search(r"^demo files are in (\S+)$", p.stdout, re.M)
    assert p.returncode == 0, (p.returncode, p.stdout[-4000:], p.stderr[-2000:])
    entry.check(None, p)
    if work and work.group(1).startswith("/tmp/pickupd-demo."):
        subprocess.run(["rm", "-rf", work.group(1)])


if __name__ == "__main__":
    harness.main(globals())
