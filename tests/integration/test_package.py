"""The Debian packages and the install rules: CPack builds pickupd's .deb, whose contents
(dpkg-deb -c) are the programs, the unit, the sysusers/tmpfiles files, the conffile,
the man pages, the completion and the docs, and nothing else; whose metadata
(dpkg-deb -I) declares libuv1, libssl3, libmagic1 and the tools postinst runs; which
lintian passes (only the overrides in config/packaging/lintian-overrides, each with
its reason); whose dependencies apt resolves on this Debian (simulated); and which
dpkg installs into a throw-away root (dpkg --root, maintainer scripts run
chrootless with $DPKG_ROOT), creating the user, groups and spool, keeping an edited
conffile over a reinstall and a remove, and leaving queued mail alone on purge.
It also builds pickupd-mta's .deb (README "As the system's sendmail"): besides its
docs, only the links /usr/sbin/sendmail, /usr/lib/sendmail, /usr/bin/mailq and
/usr/bin/newaliases to pickupd-sendmail (and their man page links), declaring Depends: pickupd (= the same
version) and Provides/Conflicts/Replaces: mail-transport-agent, which dpkg installs
after pickupd so that the system's names run pickupd-sendmail.
`cmake --install` with DESTDIR lays out the same files as pickupd's .deb (the MTA
links only with --component mta), and keeps an existing pickupd.conf. Needs root
(dpkg, chown), as `make check` runs."""

import filecmp
import gzip
import os
import re
import shutil
import subprocess
import tempfile

import harness
from harness import BIN_DIR, SRC_DIR, run_program

CONF = "/etc/pickupd/pickupd.conf"
SPOOL_DIRS = ("data", "queue", "deferred", "hold", "badmail", "tmp", "pickup")


def run(*args, ok=True, env=None, timeout=600):
    p = subprocess.run([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, env=env, timeout=timeout)
    if ok and p.returncode != 0:
        raise AssertionError("%s: exit %d\n%s\n%s" % (" ".join(map(str, args)), p.returncode,
                                                     p.stdout, p.stderr))
    return p


def version():
    p = run_program("pickupd", "--version")
    return p.stdout.split()[1]


def man_pages():
    return sorted(f[:-4] for f in os.listdir(os.path.join(SRC_DIR, "config", "man"))
                  if f.endswith(".scd"))


def expected_files():
    """Every file the package and the install rules put down, by absolute path."""
    files = {
        "/usr/sbin/pickupd", "/usr/sbin/pickupctl", "/usr/sbin/pickupd-sendmail",
        "/lib/systemd/system/pickupd.service",
        "/usr/lib/sysusers.d/pickupd.conf", "/usr/lib/tmpfiles.d/pickupd.conf",
        CONF,
        "/usr/share/doc/pickupd/README.md", "/usr/share/doc/pickupd/copyright",
        "/usr/share/doc/pickupd/changelog.Debian.gz",
        "/usr/share/doc/pickupd/examples/pickupd.json",
        "/usr/share/doc/pickupd/examples/pickupd-alerts.yml",
        "/usr/share/bash-completion/completions/pickupctl",
        "/usr/share/lintian/overrides/pickupd",
    }
    for page in man_pages():
        files.add("/usr/share/man/man%s/%s.gz" % (page.rsplit(".", 1)[1], page))
    return files


# Installed file -> its source, byte for byte.
SOURCES = {
    "/lib/systemd/system/pickupd.service": "systemd/pickupd.service",
    "/usr/lib/sysusers.d/pickupd.conf": "systemd/pickupd.sysusers.conf",
    "/usr/lib/tmpfiles.d/pickupd.conf": "systemd/pickupd.tmpfiles.conf",
    CONF: "config/pickupd.conf",
    "/usr/share/doc/pickupd/README.md": "README.md",
    "/usr/share/doc/pickupd/examples/pickupd.json": "config/grafana/pickupd.json",
    "/usr/share/doc/pickupd/examples/pickupd-alerts.yml": "config/prometheus/pickupd-alerts.yml",
    "/usr/share/bash-completion/completions/pickupctl": "config/bash-completion/pickupctl",
    "/usr/share/lintian/overrides/pickupd": "config/packaging/lintian-overrides",
}


# pickupd-mta: each name other programs call -> what it resolves to (in pickupd's .deb).
SENDMAIL = "/usr/sbin/pickupd-sendmail"
MTA_LINKS = {
    "/usr/sbin/sendmail": SENDMAIL, "/usr/lib/sendmail": SENDMAIL,
    "/usr/bin/mailq": SENDMAIL, "/usr/bin/newaliases": SENDMAIL,
}
# Policy 12.1: a man page for each name in a bin directory; a link is enough.
for _name in ("sendmail", "mailq", "newaliases"):
    MTA_LINKS["/usr/share/man/man8/%s.8.gz" % _name] = "/usr/share/man/man8/pickupd-sendmail.8.gz"
MTA_FILES = {
    "/usr/share/doc/pickupd-mta/copyright": "config/packaging/copyright",
    "/usr/share/doc/pickupd-mta/changelog.Debian.gz": None,  # the same as pickupd's
    "/usr/share/lintian/overrides/pickupd-mta": "config/packaging/lintian-overrides-mta",
}


class Package:
    """Builds the two .debs once into a private directory."""
    _debs = None
    _dir = None

    @classmethod
    def debs(cls):
        if cls._debs is None:
            cls._dir = tempfile.mkdtemp(prefix="pickupd-pkg-")
            # -B: the packages and CPack's staging tree go here, not into the build dir.
            run("cpack", "--config", os.path.join(BIN_DIR, "CPackConfig.cmake"), "-B", cls._dir)
            debs = sorted(f for f in os.listdir(cls._dir) if f.endswith(".deb"))
            cls._debs = {f.split("_")[0]: os.path.join(cls._dir, f) for f in debs}
            assert sorted(cls._debs) == ["pickupd", "pickupd-mta"], debs
        return cls._debs

    @classmethod
    def deb(cls):
        return cls.debs()["pickupd"]

    @classmethod
    def mta_deb(cls):
        return cls.debs()["pickupd-mta"]


def listing(deb):
    """dpkg-deb -c as {path: (mode, link target or None)}, directories left out after
    checking that each leads to an entry."""
    entries, dirs = {}, []
    for line in run("dpkg-deb", "-c", deb).stdout.splitlines():
        mode, owner, _size, _date, _time, path = line.split(None, 5)
        assert owner == "root/root", line
        path = path[1:]  # "./usr/..." -> "/usr/..."
        if mode.startswith("d"):
            dirs.append(path)
            continue
        target = None
        if mode.startswith("l"):
            path, target = path.split(" -> ", 1)
        entries[path] = (mode, target)
    for d in dirs:
        # Only directories leading to the files, none left over from the build tree.
        assert any(f.startswith(d) for f in entries), d
    return entries


def resolve(link, target):
    """Where a relative symlink at link points, as an absolute path."""
    assert not target.startswith("/"), (link, target)  # Policy 10.5: relative
    return os.path.normpath(os.path.join(os.path.dirname(link), target))


def test_contents():
    deb = Package.deb()
    assert re.match(r"pickupd_%s-1_\w+\.deb$" % re.escape(version()), os.path.basename(deb)), deb
    entries = listing(deb)
    files = set(entries)
    modes = {path: mode for path, (mode, _target) in entries.items()}
    assert files == expected_files(), ("missing", expected_files() - files,
                                       "unexpected", files - expected_files())
    for prog in ("pickupd", "pickupctl", "pickupd-sendmail"):
        assert modes["/usr/sbin/" + prog] == "-rwxr-xr-x", modes
    assert modes[CONF] == "-rw-r--r--", modes  # pickupd-sendmail runs as the application

    with tempfile.TemporaryDirectory() as x:
        run("dpkg-deb", "-x", deb, x)
        for dst, src in SOURCES.items():
            assert filecmp.cmp(x + dst, os.path.join(SRC_DIR, src), shallow=False), dst
        for page in man_pages():
            with gzip.open("%s/usr/share/man/man%s/%s.gz" % (x, page[-1], page)) as f:
                assert f.read().startswith(b".\\\" Generated by scdoc"), page
        # Stripped, and still the programs: they run from the extracted tree.
        for prog in ("pickupd", "pickupctl"):
            p = run(x + "/usr/sbin/" + prog, "--version")
            assert p.stdout.strip() == "%s %s" % (prog, version()), p.stdout
            assert "not stripped" not in run("file", x + "/usr/sbin/" + prog).stdout
        # The unit's Documentation= names what the package installs.
        with open(x + "/lib/systemd/system/pickupd.service") as f:
            docs = " ".join(l.split("=", 1)[1] for l in f if l.startswith("Documentation="))
        for name, sec in re.findall(r"man:([\w.-]+)\((\d)\)", docs):
            assert os.path.exists("%s/usr/share/man/man%s/%s.%s.gz" % (x, sec, name, sec)), name
        for path in re.findall(r"file:(\S+)", docs):
            assert os.path.exists(x + path), path


def test_mta_contents():
    deb = Package.mta_deb()
    assert re.match(r"pickupd-mta_%s-1_\w+\.deb$" % re.escape(version()),
                    os.path.basename(deb)), deb
    entries = listing(deb)
    links = {p: resolve(p, t) for p, (m, t) in entries.items() if m.startswith("l")}
    assert links == MTA_LINKS, links
    files = {p for p, (m, _t) in entries.items() if not m.startswith("l")}
    assert files == set(MTA_FILES), files
    for path in files:
        assert entries[path][0] == "-rw-r--r--", entries[path]
    # Every link lands on a file of pickupd's package, which it depends on.
    assert set(MTA_LINKS.values()) <= expected_files()
    with tempfile.TemporaryDirectory() as x:
        run("dpkg-deb", "-x", deb, x)
        run("dpkg-deb", "-x", Package.deb(), x + "/main")
        for dst, src in MTA_FILES.items():
            src = os.path.join(SRC_DIR, src) if src else \
                x + "/main/usr/share/doc/pickupd/changelog.Debian.gz"
            assert filecmp.cmp(x + dst, src, shallow=False), dst


def test_metadata():
    deb = Package.deb()
    info = run("dpkg-deb", "-I", deb).stdout
    fields = {}
    for f in ("Package", "Version", "Architecture", "Section", "Priority", "Maintainer",
              "Depends", "Description"):
        fields[f] = run("dpkg-deb", "-f", deb, f).stdout.strip()
    assert fields["Package"] == "pickupd", fields
    assert fields["Version"] == version() + "-1", fields
    assert fields["Architecture"] == run("dpkg", "--print-architecture").stdout.strip()
    assert fields["Section"] == "mail", fields
    deps = [d.strip() for d in fields["Depends"].split(",")]
    names = {alt.split()[0] for d in deps for alt in d.split("|")}
    for lib in ("libc6", "libuv1", "libssl3", "libmagic1"):
        # From dpkg-shlibdeps: with a minimum version.
        assert any(re.match(r"%s \(>= [\w.:~+-]+\)$" % lib, d) for d in deps), deps
    assert "systemd" in names and "systemd-sysusers" in names and "systemd-tmpfiles" in names
    for script in ("postinst", "prerm", "postrm"):
        assert re.search(r"^\s+\d+ bytes,\s+\d+ lines\s+\*\s+%s\s" % script, info, re.M), info
    with tempfile.TemporaryDirectory() as c:
        run("dpkg-deb", "-e", deb, c)
        with open(os.path.join(c, "conffiles")) as f:
            assert f.read().split() == [CONF]
        for script in ("postinst", "prerm", "postrm"):
            run("sh", "-n", os.path.join(c, script))


def test_mta_metadata():
    deb = Package.mta_deb()
    field = lambda f: run("dpkg-deb", "-f", deb, f).stdout.strip()  # noqa: E731
    assert field("Package") == "pickupd-mta"
    assert field("Version") == version() + "-1"
    assert field("Architecture") == run("dpkg-deb", "-f", Package.deb(),
                                        "Architecture").stdout.strip()
    assert field("Section") == "mail"
    # Exactly the pickupd built with it: the links name its files.
    assert field("Depends") == "pickupd (= %s-1)" % version(), field("Depends")
    # Policy 11.6: one MTA at a time; apt swaps the previous one out for this.
    for f in ("Provides", "Conflicts", "Replaces"):
        assert field(f) == "mail-transport-agent", (f, field(f))
    assert field("Description").startswith("pickupd as the system's sendmail"), \
        field("Description")
    with tempfile.TemporaryDirectory() as c:
        run("dpkg-deb", "-e", deb, c)
        # No maintainer scripts, no conffiles: the links are all it does.
        assert sorted(os.listdir(c)) == ["control", "md5sums"], os.listdir(c)


def test_lintian():
    debs = Package.debs()
    p = run("lintian", "--info", "--display-info", "--pedantic", "--show-overrides",
            debs["pickupd"], debs["pickupd-mta"], ok=False)
    tags = [l for l in p.stdout.splitlines() if re.match(r"[EWIPX]: ", l)]
    assert not tags and p.returncode == 0, "lintian:\n" + p.stdout + p.stderr
    # Every override in use is one that config/packaging/lintian-overrides{,-mta} justifies.
    overridden = [l for l in p.stdout.splitlines() if l.startswith("O: ")]
    for name in debs:
        assert any(l.startswith("O: %s: " % name) for l in overridden), p.stdout


def mta_providers():
    """Installed packages here that provide mail-transport-agent (Postfix, for its tools)."""
    out = run("dpkg-query", "-W", "-f", "${Package}\t${db:Status-Abbrev}\t${Provides}\n").stdout
    return [l.split("\t")[0] for l in out.splitlines()
            if l.split("\t")[1].startswith("ii") and
            re.search(r"\bmail-transport-agent\b", l.split("\t")[2])]


def test_dependencies_resolve_here():
    # apt resolves the Depends against this system's packages; -s changes nothing.
    p = run("apt-get", "install", "-s", "-q", Package.deb())
    assert re.search(r"^Inst pickupd ", p.stdout, re.M), p.stdout
    # Both: pickupd-mta takes the place of whatever MTA is installed.
    p = run("apt-get", "install", "-s", "-q", Package.deb(), Package.mta_deb())
    assert re.search(r"^Inst pickupd ", p.stdout, re.M), p.stdout
    assert re.search(r"^Inst pickupd-mta ", p.stdout, re.M), p.stdout
    for other in mta_providers():
        assert re.search(r"^Remv %s " % re.escape(other), p.stdout, re.M), p.stdout


def dpkg_root():
    """An empty dpkg database in a temp dir, with this system's users to start from."""
    root = tempfile.mkdtemp(prefix="pickupd-root-")
    for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "etc"):
        os.makedirs(os.path.join(root, d))
    for f in ("var/lib/dpkg/status", "var/lib/dpkg/available"):
        open(os.path.join(root, f), "w").close()
    for f in ("passwd", "group"):
        shutil.copy("/etc/" + f, os.path.join(root, "etc", f))
    return root


def dpkg(root, *args):
    # Chrootless: the maintainer scripts run here with $DPKG_ROOT=root. The libraries
    # are installed on this system, not in root's empty database: hence --force-depends.
    return run("dpkg", "--root=" + root, "--force-script-chrootless", "--force-depends", *args)


def account(root, kind, name):
    with open(os.path.join(root, "etc", kind)) as f:
        for line in f:
            fields = line.rstrip("\n").split(":")
            if fields[0] == name:
                return fields
    return None


def rooted_config(root):
    """The installed example config with its paths pointed into the dpkg root, where
    postinst made them; the caller removes it."""
    text = open(root + CONF).read()
    for prefix in ("/var/spool/pickupd", "/etc/pickupd", "/run/pickupd"):
        text = text.replace(" " + prefix, " " + root + prefix)
    os.makedirs(root + "/run/pickupd", exist_ok=True)
    rooted = root + "/etc/pickupd/rooted.conf"
    with open(rooted, "w") as f:
        f.write(text)
    return rooted


def test_install_remove_purge():
    deb = Package.deb()
    root = dpkg_root()
    try:
        dpkg(root, "-i", deb)
        status = run("dpkg", "--root=" + root, "-s", "pickupd").stdout
        assert "Status: install ok installed" in status, status
        for f in expected_files():
            assert os.path.exists(root + f), f
        # postinst: systemd-sysusers and systemd-tmpfiles under $DPKG_ROOT.
        user = account(root, "passwd", "pickupd")
        assert user and user[5] == "/var/spool/pickupd" and user[6] == "/usr/sbin/nologin", user
        submit = account(root, "group", "pickupd-submit")
        assert submit and "pickupd" in submit[3].split(","), submit
        uid, gid = int(user[2]), int(account(root, "group", "pickupd")[2])
        spool = root + "/var/spool/pickupd"
        st = os.stat(spool + "/pickup")
        assert (oct(st.st_mode & 0o7777), st.st_uid, st.st_gid) == \
            (oct(0o1770), uid, int(submit[2])), st
        for d in SPOOL_DIRS[:-1]:
            st = os.stat(os.path.join(spool, d))
            assert (oct(st.st_mode & 0o7777), st.st_uid, st.st_gid) == (oct(0o750), uid, gid), d
        st = os.stat(root + "/etc/pickupd/primary.secret")
        assert (oct(st.st_mode & 0o7777), st.st_uid) == (oct(0o600), 0), st
        # The installed example config is valid as shipped. --check-config
        # checks the machine too (folders, secret files), so its paths are
        # pointed into the dpkg root, where postinst made them.
        # Its relay's password is the credential relay-primary, which the
        # unit loads from primary.secret: given here as systemd would.
        rooted = rooted_config(root)
        cred = tempfile.mkdtemp(prefix="pickupd-cred-")
        shutil.copy(root + "/etc/pickupd/primary.secret", cred + "/relay-primary")
        os.chmod(cred + "/relay-primary", 0o400)
        p = run_program("pickupd", "--check-config", "-c", rooted,
                        env={"CREDENTIALS_DIRECTORY": cred})
        shutil.rmtree(cred)
        os.unlink(rooted)
        assert p.returncode == 0, p.stdout
        assert "LoadCredential=relay-primary:/etc/pickupd/primary.secret" in \
            open(root + "/lib/systemd/system/pickupd.service").read()

        # An edited conffile survives a reinstall and a remove.
        with open(root + CONF, "a") as f:
            f.write("; edited by the operator\n")
        edited = open(root + CONF).read()
        dpkg(root, "-i", deb)
        assert open(root + CONF).read() == edited
        dpkg(root, "-r", "pickupd")
        assert not os.path.exists(root + "/usr/sbin/pickupd")
        assert open(root + CONF).read() == edited

        # Purge: the conffile and the secret go, queued mail stays (and the
        # directories holding it), empty state directories go.
        with open(spool + "/queue/0123456789ABCDEF0123", "w") as f:
            f.write("queued\n")
        dpkg(root, "-P", "pickupd")
        assert not os.path.exists(root + "/etc/pickupd"), os.listdir(root + "/etc/pickupd")
        assert os.path.exists(spool + "/queue/0123456789ABCDEF0123")
        assert sorted(os.listdir(spool)) == ["queue"], os.listdir(spool)
        assert "install ok installed" not in run("dpkg", "--root=" + root, "-l").stdout
    finally:
        shutil.rmtree(root)


def test_mta_install():
    root = dpkg_root()
    try:
        # Depends: pickupd (= version): not without it...
        p = run("dpkg", "--root=" + root, "--force-script-chrootless", "-i",
                Package.mta_deb(), ok=False)
        assert p.returncode != 0 and "pickupd-mta depends on pickupd" in p.stderr, p.stderr
        # ...and with it. pickupd needs --force-depends for the libraries it finds
        # on this system, not in root's database; pickupd-mta itself does not.
        dpkg(root, "-i", Package.deb())
        run("dpkg", "--root=" + root, "--force-script-chrootless", "-i", Package.mta_deb())
        status = run("dpkg", "--root=" + root, "-s", "pickupd-mta").stdout
        assert "Status: install ok installed" in status, status
        for link, target in MTA_LINKS.items():
            assert os.path.islink(root + link), link
            assert os.path.realpath(root + link) == root + target, link

        # The system's names run pickupd-sendmail, which acts on the name it is called by.
        sendmail, mailq = root + "/usr/sbin/sendmail", root + "/usr/bin/mailq"
        p = run(mailq, "--help")
        assert "-bp" in p.stdout and "mailq" in p.stdout, p.stdout
        p = run(root + "/usr/lib/sendmail", "--version")
        assert p.stdout.strip() == "pickupd-sendmail " + version(), p.stdout
        rooted = rooted_config(root)
        env = dict(os.environ, PICKUPD_CONFIG=rooted)
        p = run(mailq, env=env)  # as cron and admins call it: no options
        assert p.stdout.endswith("-- 0 Kbytes in 0 Requests. (the queue is empty)\n") \
            and p.stderr == "", (p.stdout, p.stderr)
        run(root + "/usr/bin/newaliases", env=dict(env, PICKUPD_CONFIG="/nonexistent"))
        p = subprocess.run([sendmail, "-t", "-i"], input=b"To: ops@example.com\n"
                           b"Subject: via the MTA name\n\nbody\n", env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        assert p.returncode == 0, p.stderr
        pickup = root + "/var/spool/pickupd/pickup"
        emls = [f for f in os.listdir(pickup) if f.endswith(".eml")]
        assert len(emls) == 1, os.listdir(pickup)
        with open(os.path.join(pickup, emls[0]), "rb") as f:
            assert b"X-Receiver: <ops@example.com>" in f.read()
        os.unlink(os.path.join(pickup, emls[0]))
        os.unlink(rooted)

        # pickupd cannot go while pickupd-mta needs it; removing pickupd-mta takes
        # the system's names and leaves pickupd's own.
        p = run("dpkg", "--root=" + root, "--force-script-chrootless", "-r", "pickupd",
                ok=False)
        assert p.returncode != 0 and "pickupd-mta depends on pickupd" in p.stderr, p.stderr
        dpkg(root, "-r", "pickupd-mta")
        for link in MTA_LINKS:
            assert not os.path.lexists(root + link), link
        assert os.path.exists(root + SENDMAIL)
        dpkg(root, "-P", "pickupd")
    finally:
        shutil.rmtree(root)


def test_cmake_install_layout():
    with tempfile.TemporaryDirectory() as stage:
        env = dict(os.environ, DESTDIR=stage)
        run("cmake", "--install", BIN_DIR, "--prefix", "/usr", env=env)
        files = set()
        for top, _dirs, names in os.walk(stage):
            files |= {os.path.join(top, n)[len(stage):] for n in names}
        # The same layout as the package, unstripped binaries included.
        assert files == expected_files(), ("missing", expected_files() - files,
                                           "unexpected", files - expected_files())
        for dst, src in SOURCES.items():
            assert filecmp.cmp(stage + dst, os.path.join(SRC_DIR, src), shallow=False), dst
        # A second install keeps an edited configuration.
        with open(stage + CONF, "w") as f:
            f.write("; mine\n")
        p = run("cmake", "--install", BIN_DIR, "--prefix", "/usr", env=env)
        assert "Kept existing" in p.stdout, p.stdout
        assert open(stage + CONF).read() == "; mine\n"
    # The system's names only when asked for: the same links as pickupd-mta.
    with tempfile.TemporaryDirectory() as stage:
        env = dict(os.environ, DESTDIR=stage)
        run("cmake", "--install", BIN_DIR, "--prefix", "/usr", "--component", "mta", env=env)
        links, files = {}, set()
        for top, _dirs, names in os.walk(stage):
            for n in names:
                path = os.path.join(top, n)
                if os.path.islink(path):
                    links[path[len(stage):]] = resolve(path[len(stage):], os.readlink(path))
                else:
                    files.add(path[len(stage):])
        assert links == MTA_LINKS, links
        assert files == set(MTA_FILES), files


def cleanup():
    if Package._dir:
        shutil.rmtree(Package._dir, ignore_errors=True)


if __name__ == "__main__":
    import atexit
    atexit.register(cleanup)
    harness.main(globals())
