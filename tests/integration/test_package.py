"""The Debian package and the install rules: CPack builds a .deb whose contents
(dpkg-deb -c) are the programs, the unit, the sysusers/tmpfiles files, the conffile,
the man pages, the completion and the docs, and nothing else; whose metadata
(dpkg-deb -I) declares libuv1, libssl3, libmagic1 and the tools postinst runs; which
lintian passes (only the overrides in config/packaging/lintian-overrides, each with
its reason); whose dependencies apt resolves on this Debian (simulated); and which
dpkg installs into a throw-away root (dpkg --root, maintainer scripts run
chrootless with $DPKG_ROOT), creating the user, groups and spool, keeping an edited
conffile over a reinstall and a remove, and leaving queued mail alone on purge.
`cmake --install` with DESTDIR lays out the same files, and keeps an existing
pickupd.conf. Needs root (dpkg, chown), as `make check` runs."""

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
    "/usr/share/bash-completion/completions/pickupctl": "config/bash-completion/pickupctl",
    "/usr/share/lintian/overrides/pickupd": "config/packaging/lintian-overrides",
}


class Package:
    """Builds the .deb once into a private directory."""
    _deb = None
    _dir = None

    @classmethod
    def deb(cls):
        if cls._deb is None:
            cls._dir = tempfile.mkdtemp(prefix="pickupd-pkg-")
            # -B: the package and CPack's staging tree go here, not into the build dir.
            run("cpack", "--config", os.path.join(BIN_DIR, "CPackConfig.cmake"), "-B", cls._dir)
            debs = [f for f in os.listdir(cls._dir) if f.endswith(".deb")]
            assert len(debs) == 1, debs
            cls._deb = os.path.join(cls._dir, debs[0])
        return cls._deb


def test_contents():
    deb = Package.deb()
    assert re.match(r"pickupd_%s-1_\w+\.deb$" % re.escape(version()), os.path.basename(deb)), deb
    listing = run("dpkg-deb", "-c", deb).stdout
    files, modes = set(), {}
    for line in listing.splitlines():
        mode, owner, _size, _date, _time, path = line.split(None, 5)
        assert owner == "root/root", line
        path = path[1:]  # "./usr/..." -> "/usr/..."
        if mode.startswith("d"):
            # Only directories leading to the files, none left over from the build tree.
            assert any(f.startswith(path) for f in expected_files()), line
            continue
        files.add(path)
        modes[path] = mode
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


def test_lintian():
    deb = Package.deb()
    p = run("lintian", "--info", "--display-info", "--pedantic", "--show-overrides", deb,
            ok=False)
    tags = [l for l in p.stdout.splitlines() if re.match(r"[EWIPX]: ", l)]
    assert not tags and p.returncode == 0, "lintian:\n" + p.stdout + p.stderr
    # Every override in use is one that config/packaging/lintian-overrides justifies.
    assert len([l for l in p.stdout.splitlines() if l.startswith("O: ")]) >= 1, p.stdout


def test_dependencies_resolve_here():
    # apt resolves the Depends against this system's packages; -s changes nothing.
    p = run("apt-get", "install", "-s", "-q", Package.deb())
    assert re.search(r"^Inst pickupd ", p.stdout, re.M), p.stdout


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
        text = open(root + CONF).read()
        for prefix in ("/var/spool/pickupd", "/etc/pickupd", "/run/pickupd"):
            text = text.replace(" " + prefix, " " + root + prefix)
        os.makedirs(root + "/run/pickupd", exist_ok=True)
        rooted = root + "/etc/pickupd/rooted.conf"
        with open(rooted, "w") as f:
            f.write(text)
        p = run_program("pickupd", "--check-config", "-c", rooted)
        os.unlink(rooted)
        assert p.returncode == 0, p.stdout

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


def cleanup():
    if Package._dir:
        shutil.rmtree(Package._dir, ignore_errors=True)


if __name__ == "__main__":
    import atexit
    atexit.register(cleanup)
    harness.main(globals())
