"""Reload frees what it replaces (issue 11 item 7): 100 SIGHUP reloads, with
messages flowing through a STARTTLS relay during some of them, leave the
daemon's resident memory flat (VmRSS after reload 100 within 1 MiB of after
reload 10; before the fix it grew by 2 MiB): each replaced configuration and
SSL_CTX is freed once the last session or job that holds it lets go, not kept
until exit. Under the ASan build, LeakSanitizer at exit reports nothing
(checked by Pickupd.stop()), so no reference is left undropped."""

import json
import signal
import tempfile
import urllib.request

import harness
from harness import (Pickupd, SmtpServer, free_port, make_certs, make_message, status_re,
                     wait_for)

SENDER = "alice@example.org"
RELOADS = 100
BASELINE = 10            # memory is compared with what it was after this reload
MARGIN_KIB = 1024        # allowed growth from BASELINE to RELOADS
MESSAGE_EVERY = 3        # a message is dropped right before every 3rd reload
RENAME_EVERY = 7
SCRAPE_EVERY = 5         # a metrics scrape (a thread-pool job) races every 5th reload
RELOADED = r"^pickupd: reloaded .*: \d+ relay\(s\)$"


def vm_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/%d/status" % pid)


def sessions(d):
    st = d.pickupctl("status", "--json")
    assert st.returncode == 0, st.stdout + st.stderr
    return json.loads(st.stdout)["daemon"]["sessions"]


def test_reload_100_times_memory_flat():
    c = make_certs(tempfile.mkdtemp(prefix="pickupd-reload-certs-"))
    with SmtpServer(tls_context=c.context(), require_starttls=True) as srv:
        d = Pickupd(relay=srv, start=False)
        relay = {"host": "localhost", "port": str(srv.port), "tls": "starttls",
                 "ca_file": c.ca, "idle_timeout": "2s"}
        metrics_port = free_port()

        def write_config(i):
            # Each reload changes a relay setting (a new SSL_CTX and a new
            # settings generation: open sessions are retired); every
            # RENAME_EVERY reloads the relay is renamed (the old one retired).
            name = "relay %s" % ("test" if (i // RENAME_EVERY) % 2 == 0 else "other")
            d.write_config({name: dict(relay, max_messages_per_session=str(50 + i % 2)),
                            "retry": {"schedule": "1s", "jitter_percent": "0"},
                            "metrics": {"listen": "127.0.0.1:%d" % metrics_port}})
        write_config(0)
        with d:
            d.start()
            d.wait_ready()
            dropped = 0

            def settle():
                """Every message so far sent and no session open: what each
                reload replaced has no user left."""
                d.wait_log(status_re("sent"), count=dropped, timeout=60)
                d.wait_spool_empty()
                wait_for(lambda: sessions(d) == 0, 60, what="no SMTP session open")

            rss = {}
            for i in range(1, RELOADS + 1):
                if i % MESSAGE_EVERY == 0:
                    # In flight while the reload retires its session's settings.
                    d.drop("m%03d.eml" % i, make_message(SENDER, ["bob%d@example.net" % i],
                                                         "during reload %d" % i))
                    dropped += 1
                write_config(i)
                d.signal(signal.SIGHUP)
                if i % SCRAPE_EVERY == 0:
                    url = "http://127.0.0.1:%d/metrics" % metrics_port
                    with urllib.request.urlopen(url, timeout=30) as r:
                        assert b"pickupd_sessions_open" in r.read()
                d.wait_log(RELOADED, count=i, timeout=30)
                if i in (BASELINE, RELOADS):
                    settle()
                    rss[i] = vm_rss_kib(d.pid)
            print("  VmRSS after reload %d: %d KiB, after reload %d: %d KiB (%+d KiB)"
                  % (BASELINE, rss[BASELINE], RELOADS, rss[RELOADS],
                     rss[RELOADS] - rss[BASELINE]))
            assert not d.log_matches(r"(?i)reload refused"), d.log_tail()
            assert len(srv.messages) == dropped, (len(srv.messages), dropped)
            assert all(m.tls for m in srv.messages), srv.messages
            # ASan keeps freed blocks resident (its quarantine, to catch use
            # after free): under it, the proof is LeakSanitizer's, at exit.
            if not harness.SANITIZE:
                assert rss[RELOADS] - rss[BASELINE] <= MARGIN_KIB, rss
        # Leaving the block: SIGTERM, exit 0 and no LeakSanitizer report (a
        # reference never dropped would leave its configuration unfreed).


if __name__ == "__main__":
    harness.main(globals())
