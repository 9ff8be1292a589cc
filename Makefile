# pickupd: a thin wrapper over CMake. The two commands that matter:
#   make demo    install what is missing, build, run scripts/demo.sh
#   make check   install what is missing, then build and test three times:
#                gcc (build/), clang with ASan+UBSan+libFuzzer (build-asan/), and
#                clang with ThreadSanitizer for the multi-threaded parts (build-tsan/)
# Other targets: build, test, bench, format, clean, deps, check-systemd, package.

BUILD        ?= build
ASAN_BUILD   ?= build-asan
TSAN_BUILD   ?= build-tsan
JOBS         ?= $(shell nproc 2>/dev/null || echo 2)
FUZZ_SECONDS ?= 20
PYTHON       := /usr/bin/python3
CTEST        := ctest --output-on-failure --no-tests=ignore

.PHONY: all build test check check-gcc check-asan check-tsan check-systemd demo bench format clean deps \
	package

all: build

deps:
	sh scripts/install-deps.sh

# -Werror is also in CMakeLists.txt; repeated here so that `make check`
# never passes with warnings whatever the CMake file says.
# (Configuring every time is cheap, and recovers from a configure that failed.)
build:
	cmake -S . -B $(BUILD) -DCMAKE_C_COMPILER=gcc -DCMAKE_C_FLAGS=-Werror
	cmake --build $(BUILD) -j$(JOBS)

# Tests of a build directory: unit tests (and anything else that is neither
# integration nor fuzz) on all cores; integration tests two at a time (each
# has its own temp dir and ports, but they measure time); fuzz targets last.
define run_tests
	cd $(1) && $(CTEST) -j$(JOBS) -LE 'integration|fuzz'
	cd $(1) && $(CTEST) -j2 -L integration
	cd $(1) && $(CTEST) -j2 -L fuzz
endef

test: build
	$(call run_tests,$(BUILD))

# One step after the other, even under make -j.
check:
	$(MAKE) deps
	$(MAKE) check-gcc
	$(MAKE) check-systemd
	$(MAKE) check-asan
	$(MAKE) check-tsan
	@echo "make check: all passed"

check-gcc: test

# clang with -DFUZZ=ON, which implies ASan+UBSan for everything; the
# integration tests then run the sanitized daemon (PICKUPD_SANITIZE=1) and
# fail on any sanitizer report, and each fuzz target runs FUZZ_SECONDS.
check-asan:
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_C_COMPILER=clang -DFUZZ=ON \
		-DFUZZ_SECONDS=$(FUZZ_SECONDS)
	cmake --build $(ASAN_BUILD) -j$(JOBS)
	$(call run_tests,$(ASAN_BUILD))

# clang with ThreadSanitizer (-DTSAN=ON), for what runs on libuv's thread
# pool: the spool's group commit (the spool unit tests hammer it from many
# threads) and the daemon's claims and libmagic lock (integration tests that
# claim many files at once; PICKUPD_SANITIZE scales them down). Only the
# programs and tests it runs are built, to keep it short.
TSAN_TESTS ?= ^(unit/spool/test_spool|integration/test_pickup_scale)$$
check-tsan:
	cmake -S . -B $(TSAN_BUILD) -DCMAKE_C_COMPILER=clang -DTSAN=ON
	cmake --build $(TSAN_BUILD) -j$(JOBS) --target spool_test_spool pickupd pickupctl \
		pickupd-sendmail
	cd $(TSAN_BUILD) && $(CTEST) -R '$(TSAN_TESTS)'

# The systemd files: unit syntax (against the built binary, since the real
# path /usr/sbin/pickupd is not installed here, and the built man pages that
# Documentation= names), then sysusers and tmpfiles
# applied to a throw-away root. Skipped, not failed, where the tools are absent.
check-systemd: build
	@if command -v systemd-analyze >/dev/null 2>&1; then \
		d=$$(mktemp -d) && \
		sed 's|/usr/sbin/pickupd|$(CURDIR)/$(BUILD)/pickupd|g' systemd/pickupd.service \
			>$$d/pickupd.service && \
		MANPATH=$(CURDIR)/$(BUILD)/man systemd-analyze verify $$d/pickupd.service && \
		rm -rf $$d && \
		echo "systemd-analyze verify: ok"; \
	else echo "systemd-analyze not found: unit not verified"; fi
	@if command -v systemd-sysusers >/dev/null 2>&1 && \
	    command -v systemd-tmpfiles >/dev/null 2>&1; then \
		d=$$(mktemp -d) && mkdir -p $$d/etc && \
		cp /etc/passwd /etc/group $$d/etc/ && \
		systemd-sysusers --root=$$d $(CURDIR)/systemd/pickupd.sysusers.conf && \
		systemd-tmpfiles --root=$$d --create $(CURDIR)/systemd/pickupd.tmpfiles.conf && \
		test "$$(stat -c %a $$d/var/spool/pickupd/pickup)" = 1770 && \
		rm -rf $$d && echo "sysusers + tmpfiles: ok"; \
	else echo "systemd-sysusers/systemd-tmpfiles not found: not checked"; fi

# The Debian packages, build/pickupd_VERSION-1_ARCH.deb and build/pickupd-mta_... (CPack;
# see the end of CMakeLists.txt). tests/integration/test_package.py checks them in `make check`.
package: build
	cmake --build $(BUILD) --target package

demo: deps build
	sh scripts/demo.sh

# Benchmarks are run by hand, never by ctest. `make bench` runs
# tests/bench/compare (as root): pickupd and a private Postfix instance side by
# side with the disk's and SMTP's ceilings, printed as one markdown table.
# BENCH_ARGS=--quick uses smaller counts. The other tests/bench/ programs
# (bench_spool, bench_pickup.py, ...) take arguments; see their headers.
BENCH_ARGS ?=
bench: build
	PICKUPD_BIN_DIR=$(CURDIR)/$(BUILD) PICKUPD_SRC_DIR=$(CURDIR) \
		$(PYTHON) tests/bench/compare $(BENCH_ARGS)

format:
	@command -v clang-format >/dev/null 2>&1 || { echo "clang-format not found: make deps"; exit 1; }
	find common spool daemon tests -name '*.[ch]' -not -path '*/corpus/*' -print0 \
		| xargs -0 -r clang-format -i

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD)
