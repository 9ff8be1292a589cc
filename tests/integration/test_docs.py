"""The documentation follows the programs: each man page (built by scdoc from
config/man/*.scd) renders without a groff or man warning; pickupctl(8) and the bash
completion name every command, option and --state value that `pickupctl --help`
lists, and the completion offers them when driven as bash does; pickupd(8) and
pickupd-sendmail(8) name every option of their usage lines; the unit's
Documentation= names pages that exist. (pickupd.conf(5) is checked against the key
table by tests/unit/common/test_config_doc.c.)"""

import glob
import os
import re
import subprocess
import tempfile

import harness
from harness import BIN_DIR, SRC_DIR, run_program

MAN_SRC = os.path.join(SRC_DIR, "config", "man")
COMPLETION = os.path.join(SRC_DIR, "config", "bash-completion", "pickupctl")


def man_source(page):
    with open(os.path.join(MAN_SRC, page + ".scd")) as f:
        return f.read()


def pages():
    found = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(MAN_SRC, "*.scd")))
    assert set(found) >= {"pickupd.8", "pickupctl.8", "pickupd-sendmail.8", "pickupd.conf.5"}, found
    return found


def test_man_pages_render_without_warnings():
    for page in pages():
        built = os.path.join(BIN_DIR, "man", "man" + page.rsplit(".", 1)[1], page)
        assert os.path.exists(built), "%s not built (is scdoc installed? make deps)" % built
        env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8", MAN_KEEP_FORMATTING="")
        p = subprocess.run(["man", "--warnings", "-l", built], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert p.returncode == 0, (page, p.returncode, p.stderr)
        assert p.stderr == "", "%s: man warnings:\n%s" % (page, p.stderr)
        name = page.rsplit(".", 1)[0]
        assert re.search(r"^NAME\n\s+%s - " % re.escape(name), p.stdout, re.M), p.stdout[:300]
        # The compressed copy that is installed is the same page.
        with open(built, "rb") as f, open(built + ".gz", "rb") as g:
            import gzip
            assert gzip.decompress(g.read()) == f.read(), page


def pickupctl_help():
    """Commands, long options and --state values, as `pickupctl --help` lists them."""
    p = run_program("pickupctl", "--help")
    assert p.returncode == 0, (p.returncode, p.stderr)
    text = p.stdout
    commands = []
    in_commands = False
    for line in text.splitlines():
        if line.startswith("commands:"):
            in_commands = True
            continue
        if in_commands and not line.startswith("  "):
            in_commands = False
        if in_commands:
            # "  hold ID | release ID   park a message": the words before the description
            usage = re.split(r"\s{2,}", line.strip())[0]
            commands += [alt.split()[0] for alt in usage.split("|")]
    options = sorted(set(re.findall(r"--[a-z][a-z-]*", text)))
    states = re.search(r"\(([a-z|]+)\)", text).group(1).split("|")
    assert "status" in commands and "test-relay" in commands, commands
    assert "--json" in options and "--state" in options, options
    assert "deferred" in states, states
    return commands, options, states


def complete(*words, cwd=None):
    """What the completion offers for the command line `words` (the last is the one
    being completed), as bash would call it (= is a word break in bash)."""
    script = ('source "$1"; shift; complete -p pickupctl >/dev/null || exit 3; '
              'COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=(); _pickupctl; '
              'printf "%s\\n" "${COMPREPLY[@]}"')
    p = subprocess.run(["bash", "--norc", "--noprofile", "-c", script, "bash", COMPLETION]
                       + list(words), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, cwd=cwd)
    assert p.returncode == 0 and p.stderr == "", (words, p.returncode, p.stderr)
    return [w for w in p.stdout.split("\n") if w]


def test_pickupctl_page_follows_help():
    commands, options, states = pickupctl_help()
    src = man_source("pickupctl.8")
    for c in commands:
        assert re.search(r"^\*%s\*" % re.escape(c), src, re.M), \
            "pickupctl.8.scd has no entry for the command %s" % c
    for o in options:
        assert "*%s*" % o in src, "pickupctl.8.scd does not document %s" % o
    for s in states:
        assert "*%s*" % s in src, "pickupctl.8.scd does not name the state %s" % s


def test_completion_follows_help():
    commands, options, states = pickupctl_help()
    p = subprocess.run(["bash", "-c", 'source "$1"; complete -p pickupctl', "bash", COMPLETION],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.returncode == 0 and "_pickupctl" in p.stdout, (p.stdout, p.stderr)

    assert sorted(complete("pickupctl", "")) == sorted(commands)
    assert sorted(complete("pickupctl", "-c", "x.conf", "--json", "")) == sorted(commands)
    assert sorted(complete("pickupctl", "re")) == sorted(c for c in commands if c.startswith("re"))
    assert set(complete("pickupctl", "--")) >= set(options)
    assert sorted(complete("pickupctl", "list", "--state", "")) == sorted(states)
    assert sorted(complete("pickupctl", "list", "--state", "=", "")) == sorted(states)
    assert complete("pickupctl", "list", "--state", "de") == ["deferred"]

    with tempfile.TemporaryDirectory() as d:
        conf = os.path.join(d, "site.conf")
        with open(conf, "w") as f:
            f.write("[spool]\ndir = /s\n[relay primary]\nhost = a\n[ relay  backup ] ; b\n")
        assert complete("pickupctl", "-c", os.path.join(d, "si")) == [conf]
        assert complete("pickupctl", "-c", conf, "test-relay", "") == ["primary", "backup"]
        assert complete("pickupctl", "--config", "=", conf, "test-relay", "b") == ["backup"]


def test_pickupd_page_follows_usage():
    p = run_program("pickupd", "--help")
    assert p.returncode == 0, (p.returncode, p.stderr)
    src = man_source("pickupd.8")
    opts = set(re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", p.stdout))
    assert {"-c", "--check-config", "--version"} <= opts, opts
    for o in opts:
        assert "*%s*" % o in src, "pickupd.8.scd does not document %s" % o


def test_sendmail_page_follows_usage():
    p = run_program("pickupd-sendmail", "-Z")  # an unknown option prints the usage line
    assert p.returncode == 64, (p.returncode, p.stderr)
    usage = next(line for line in p.stderr.splitlines() if line.startswith("usage:"))
    opts = set(re.findall(r"\[(-\w)", usage))
    assert {"-t", "-i", "-f", "-F", "-C"} <= opts, usage
    src = man_source("pickupd-sendmail.8")
    for o in opts:
        assert re.search(r"^\*%s\*" % re.escape(o), src, re.M), \
            "pickupd-sendmail.8.scd has no entry for %s" % o


def test_unit_documentation_exists():
    with open(os.path.join(SRC_DIR, "systemd", "pickupd.service")) as f:
        docs = " ".join(line.split("=", 1)[1] for line in f if line.startswith("Documentation="))
    mans = re.findall(r"man:([\w.-]+)\((\d)\)", docs)
    assert ("pickupd", "8") in mans and ("pickupd.conf", "5") in mans, docs
    for name, section in mans:
        assert "%s.%s" % (name, section) in pages(), "no man page for man:%s(%s)" % (name, section)
    assert "file:/usr/share/doc/pickupd/README.md" in docs.split(), docs


if __name__ == "__main__":
    harness.main(globals())
