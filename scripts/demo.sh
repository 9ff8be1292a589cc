#!/bin/sh
# shellcheck disable=SC2317 # functions are called through traps and wait_until
# pickupd demo: a local SMTP sink, a generated config, pickupd in the
# foreground, three sample messages dropped into the pickup folder, then what
# the server received, the spool state and the daemon's log.
# Run through `make demo` (installs what is missing and builds first).
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=/usr/bin/python3 # Debian's python3, which has python3-aiosmtpd
BIN=${PICKUPD_BIN_DIR:-$ROOT/build}
TIMEOUT=${DEMO_TIMEOUT:-60} # seconds to wait for each step

if [ ! -x "$BIN/pickupd" ]; then
	make -C "$ROOT" build
fi

WORK=$(mktemp -d /tmp/pickupd-demo.XXXXXX)
SPOOL=$WORK/spool
PICKUP=$WORK/pickup
CONF=$WORK/pickupd.conf
mkdir -p "$SPOOL" "$PICKUP" "$WORK/received"

SMTPD_PID=""
PICKUPD_PID=""
cleanup() {
	status=$?
	for pid in $PICKUPD_PID $SMTPD_PID; do
		if kill -0 "$pid" 2>/dev/null; then
			kill -TERM "$pid" 2>/dev/null || true
			wait "$pid" 2>/dev/null || true
		fi
	done
	echo
	echo "demo files are in $WORK"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

section() {
	printf '\n==== %s ====\n' "$*"
}

# wait_until SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.1 s.
wait_until() {
	limit=$(($1 * 10))
	what=$2
	shift 2
	i=0
	until "$@"; do
		i=$((i + 1))
		if [ "$i" -ge "$limit" ]; then
			echo "demo: timed out waiting for $what" >&2
			return 1
		fi
		sleep 0.1
	done
}

section "SMTP sink (aiosmtpd) on a free port"
"$PY" "$ROOT/tests/integration/smtpd.py" --port 0 --port-file "$WORK/smtpd.port" \
	--maildir "$WORK/received" >"$WORK/smtpd.log" 2>&1 &
SMTPD_PID=$!
wait_until "$TIMEOUT" "the SMTP sink to listen" test -s "$WORK/smtpd.port"
PORT=$(cat "$WORK/smtpd.port")
cat "$WORK/smtpd.log"

section "config $CONF"
cat >"$CONF" <<EOF
[spool]
dir = $SPOOL

[pickup]
dir = $PICKUP
; writers in this demo rename finished files into place
settle_time = 100ms

[relay demo]
host = 127.0.0.1
port = $PORT
; a local test sink; a real relay uses tls = starttls (the default)
tls = none

[retry]
schedule = 1s 5s

[control]
socket = $WORK/control.sock
EOF
cat "$CONF"
"$BIN/pickupd" --check-config -c "$CONF"
echo "(pickupd --check-config: ok)"

section "pickupd"
"$BIN/pickupd" -c "$CONF" 2>"$WORK/pickupd.log" &
PICKUPD_PID=$!
ready() {
	if ! kill -0 "$PICKUPD_PID" 2>/dev/null; then
		echo "demo: pickupd exited:" >&2
		cat "$WORK/pickupd.log" >&2
		exit 1
	fi
	grep -q ' pickupd\[[0-9]*\]: ready' "$WORK/pickupd.log"
}
wait_until "$TIMEOUT" "pickupd to be ready" ready
grep ' pickupd\[[0-9]*\]: ready' "$WORK/pickupd.log"

# drop NAME: stdin to a dot-temp file, then rename into the pickup dir, the
# way a well-behaved writer hands over a finished file.
drop() {
	cat >"$PICKUP/.$1.tmp"
	mv "$PICKUP/.$1.tmp" "$PICKUP/$1"
	echo "dropped $PICKUP/$1"
}

section "dropping three messages"
# 1. What .NET's SmtpClient (SpecifiedPickupDirectory) writes: X-Sender and
#    X-Receiver envelope lines first, CRLF line ends. The audit address is a
#    Bcc: it appears only as an X-Receiver, never in the headers.
printf '%s\r\n' \
	'X-Sender: billing@shop.example' \
	'X-Receiver: alice@customer.example' \
	'X-Receiver: audit@shop.example' \
	'MIME-Version: 1.0' \
	'From: "Shop Billing" <billing@shop.example>' \
	'To: alice@customer.example' \
	'Date: Mon, 1 Jan 2024 10:00:00 +0000' \
	'Subject: Your invoice 1001' \
	'Content-Type: text/plain; charset=us-ascii' \
	'Content-Transfer-Encoding: 7bit' \
	'' \
	'Dear Alice,' \
	'' \
	'your invoice 1001 is attached to your account.' | drop invoice-1001.eml
# 2. A plain script-written message: LF line ends, envelope from the headers.
cat <<'EOF' | drop report.eml
From: cron@app.example
To: ops@app.example, dev@app.example
Cc: manager@app.example
Subject: nightly report

All 42 jobs finished.
EOF
# 3. A body line starting with a dot (and a lone dot): dot-stuffed on the
#    wire, intact at the other end.
cat <<'EOF' | drop dots.eml
From: scripts@app.example
To: ops@app.example
Subject: lines that start with a dot

.hidden files were cleaned up
.
the line above is a single dot
EOF

section "waiting for delivery"
delivered() {
	[ "$(find "$WORK/received" -name 'msg-*.eml' | wc -l)" -ge 3 ] &&
		[ -z "$(find "$SPOOL/data" "$SPOOL/queue" "$SPOOL/deferred" -type f 2>/dev/null)" ]
}
if ! wait_until "$TIMEOUT" "three messages at the SMTP sink and an empty spool" delivered; then
	echo "--- pickupd log ---" >&2
	cat "$WORK/pickupd.log" >&2
	exit 1
fi
grep 'received #' "$WORK/smtpd.log"

section "what the SMTP server received"
for f in "$WORK"/received/msg-*.eml; do
	base=${f%.eml}
	echo "---- $(basename "$f") ($(wc -c <"$f") bytes; lines end in CRLF on the wire) ----"
	cat "$base.envelope"
	echo
	tr -d '\r' <"$f"
done

section "spool state"
echo "state directories: $(cd "$SPOOL" && find . -mindepth 1 -maxdepth 1 -type d | sort | tr '\n' ' ')"
echo "find $SPOOL -type f:"
files=$(find "$SPOOL" -type f | sort)
echo "${files:-(no files: nothing queued, nothing refused)}"
if [ -x "$BIN/pickupctl" ]; then
	echo
	echo "pickupctl -c $CONF status:"
	"$BIN/pickupctl" -c "$CONF" status || true
fi
echo
echo "pickup dir: $(find "$PICKUP" -mindepth 1 | wc -l) file(s) left"

section "stopping pickupd (SIGTERM)"
kill -TERM "$PICKUPD_PID"
rc=0
wait "$PICKUPD_PID" || rc=$?
PICKUPD_PID=""
echo "pickupd exited with status $rc"

section "pickupd log"
cat "$WORK/pickupd.log"
exit "$rc"
