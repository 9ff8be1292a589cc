#!/bin/sh
# Installs the Debian 12 packages pickupd needs to build, test and demo,
# and only those that are missing: a quick no-op when everything is there.
# Non-interactive; must run as root (or with sudo available) when something
# is missing. Used by `make check` and `make demo`.
set -eu

# What each package is for:
#   build-essential cmake pkg-config      the C toolchain and build system
#   libuv1-dev libssl-dev libmagic-dev    the daemon's libraries
#   libjansson-dev                        pickupctl --json (a kept JSON library, not a
#                                         hand-written escaper)
#   libcmocka-dev                         unit tests
#   clang libclang-rt-14-dev              ASan/UBSan build and libFuzzer targets
#   clang-format                          `make format`
#   python3-aiosmtpd                      integration tests' and demo's SMTP server
#   postfix                               smtp-sink/smtp-source for hostile-timing and load tests
#   openssl                               certificates for the TLS tests
#   file                                  libmagic's database (file type checks at pickup)
#   scdoc                                 builds the man pages (config/man/*.scd) into roff
#   man-db groff-base                     `man --warnings -l` checks that each page renders cleanly
#   dpkg-dev                              dpkg-shlibdeps: the .deb's library dependencies (CPack)
#   lintian                               checks the .deb against Debian policy (test_package)
#   systemd                               systemd-sysusers/-tmpfiles, run by the .deb's postinst
#   pflogsumm                             test_logs: Postfix's log summariser reads pickupd's log
#   python3-yaml                          test_metrics reads the shipped Prometheus alert rules
PACKAGES="build-essential cmake pkg-config clang libclang-rt-14-dev clang-format
libuv1-dev libssl-dev libmagic-dev libjansson-dev libcmocka-dev python3-aiosmtpd postfix openssl file
scdoc man-db groff-base dpkg-dev lintian systemd pflogsumm python3-yaml"

installed() {
	[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

missing=""
for p in $PACKAGES; do
	installed "$p" || missing="$missing $p"
done
if [ -z "$missing" ]; then
	echo "install-deps: all packages present"
	exit 0
fi
echo "install-deps: installing:$missing"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		SUDO="sudo"
	else
		echo "install-deps: need root to install:$missing" >&2
		exit 1
	fi
fi

export DEBIAN_FRONTEND=noninteractive
# postfix asks what kind of mail server to be; "No configuration" installs it
# without prompting and without starting a listener (we only use its tools).
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections

apt_install() {
	# shellcheck disable=SC2086 # word splitting of the package list is wanted
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold $missing
}

# Refresh the package lists only when there are none, or when an install
# fails (stale lists point at versions the mirror no longer has).
if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
	$SUDO apt-get update -q
fi
if ! apt_install; then
	echo "install-deps: install failed; refreshing package lists and retrying" >&2
	$SUDO apt-get update -q
	apt_install
fi

still=""
for p in $missing; do
	installed "$p" || still="$still $p"
done
if [ -n "$still" ]; then
	echo "install-deps: still missing:$still" >&2
	exit 1
fi
echo "install-deps: done"
