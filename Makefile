# The README's two commands: `make demo` and `make test`. Both install what they need first.
SHELL := /bin/bash
CARGO ?= cargo
# Debian packages the build and tests need (cmake etc. for the codec crates).
DEB_PACKAGES := build-essential pkg-config cmake file nasm ffmpeg coturn nftables iproute2 miniupnpd-nftables miniupnpc

.PHONY: demo test deps lint unit bench-smoke audio-runs nat-lab cross fuzz-smoke clean

demo: deps
	$(CARGO) build --release -p peercom
	./target/release/peercom demo --seconds 5 --out target/demo

test: deps lint unit bench-smoke audio-runs nat-lab cross fuzz-smoke
	@echo "make test: all checks passed"

# Installs missing Debian packages (as root, or through sudo). Only calls apt-get when needed.
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust >= 1.85 (rustup, or Debian's cargo-web/rustc-web)"; exit 1; }

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace

# The benchmark must run and print its JSON; figures are read by people, not asserted.
bench-smoke:
	$(CARGO) build -p peercom
	./target/debug/peercom bench handshake --calls 20 --json > target/bench-handshake.json
	cat target/bench-handshake.json
	grep -q '"failures":0' target/bench-handshake.json
	./target/debug/peercom bench media --seconds 3 --json > target/bench-media.json
	cat target/bench-media.json
	grep -q '"still_in_call":true' target/bench-media.json
	./target/debug/peercom bench dht --nodes 300 --lookups 300 --churn 0.3 --json > target/bench-dht.json
	cat target/bench-dht.json
	grep -q '"success_rate":1.0' target/bench-dht.json && grep -q '"record_found_rate":1.0' target/bench-dht.json

# Audio keeps its timeline (tests/media/audio_runs.sh): calls in a row must stay under 0.5%
# concealed with no gap over 60 ms; with two busy loops competing for the cores (the audio
# thread at real-time priority, which needs root), under 2% and 100 ms.
audio-runs:
	$(CARGO) build -p peercom
	PEERCOM=target/debug/peercom tests/media/audio_runs.sh --runs 3 --seconds 5 --check
	@if [ "$$(id -u)" != 0 ]; then echo "*** SKIPPED audio-runs with busy loops: real-time priority needs root"; \
	else PEERCOM=target/debug/peercom tests/media/audio_runs.sh --runs 2 --seconds 5 --hogs 2 --check; fi

# Real kernel NAT in network namespaces (tests/nat/README.md): the lab's self-test, the NAT
# matrix of real binaries (fails unless every target holds), the birthday punch and port
# mapping against miniupnpd. Needs root and netns; skipped, loudly, where either is missing.
nat-lab:
	@if [ "$$(id -u)" != 0 ] || ! ip netns add pcn-canary 2>/dev/null; then \
	  echo "*** SKIPPED nat-lab: needs root and network namespaces"; \
	else ip netns del pcn-canary; $(CARGO) build -p peercom && tests/nat/selftest.sh && \
	  tests/nat/matrix.sh --check && tests/nat/birthday.sh && tests/nat/portmap.sh; fi

# aarch64 build with Debian's toolchain; the unit tests run under qemu-user.
cross:
	tests/cross/run.sh

# No sanitizer by default: our code has no unsafe, panics are caught either way, and it builds and
# runs 3-4x faster. `FUZZ_SANITIZER=address tests/fuzz/smoke.sh` for ASan.
fuzz-smoke:
	FUZZ_SECONDS=$${FUZZ_SECONDS:-10} FUZZ_SANITIZER=$${FUZZ_SANITIZER:-none} tests/fuzz/smoke.sh

clean:
	$(CARGO) clean
