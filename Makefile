# peapod — a containerd shim v2 that runs Kubernetes pods natively.
#
#   make deps     install everything the build and the tests need (Debian packages; idempotent)
#   make build    release binaries in target/release
#   make check    cargo fmt --check, clippy -D warnings, cargo doc
#   make fuzz     each cargo-fuzz target for FUZZ_SECONDS (default 300) on the nightly
#                 toolchain; executions and crashes per target (scripts/fuzz)
#   make test     unit tests, then the privileged suites (as root): host, escape, containerd
#                 and CLI (each containerd tier against Debian's containerd 1.6.20 and every
#                 build in PEAPOD_CONTAINERD_BUILDS), and the cgroup v2 VM
#   make vm-test  the privileged suites in a qemu VM booted with cgroup v2 only (as root)
#   make bench    peapod vs runc vs crun under one containerd, and peapod's embedded mode (as
#                 root): target/bench/results.{md,json}
#   make bench-vm the same inside the cgroup v2 VM (as root): target/bench-vm/<kernel>/results.{md,json}
#   make soak     1,000 pods through CRI (runc and peapod, containerd 1.6.20 and 2.x) and embedded
#                 mode, leak censuses every 100 pods (as root): target/soak/report.{md,json}
#   make soak-vm  a smaller soak inside the cgroup v2 VM (as root): target/soak-vm/<kernel>/
#   make demo     run a busybox container from an OCI bundle with peapod
#   make install  install the binaries into $(PREFIX)/bin

PREFIX ?= /usr/local
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

# Debian packages `make demo` needs: busybox for its images, the CNI plugins for the pod's
# network, protoc for the CRI code generation and libseccomp-dev (the sandbox crate links
# libseccomp to compile `linux.seccomp` to BPF), iproute2 for the bridge.
DEMO_PACKAGES := busybox-static containernetworking-plugins protobuf-compiler libseccomp-dev iproute2

# Debian packages the tests use besides those: the baseline runtime and containerd (shim
# tests), image tools, the kernel + qemu for the cgroup v2 VM suite, crun as a second
# baseline for `make bench`, apparmor (apparmor_parser) for the VM's AppArmor tests (its
# postinst loads nothing where AppArmor is off, as on the host), iptables for the host-port
# tests' `iptables-save` (the CNI portmap plugin runs `iptables` too; the CNI plugins'
# package depends on it already), apache2-utils (htpasswd) for the CLI tests' registry
# with Basic auth.
DEB_PACKAGES := $(DEMO_PACKAGES) containerd runc umoci skopeo \
	qemu-system-x86 linux-image-amd64 kmod cpio jq crun \
	docker-registry attr apparmor iptables apache2-utils

# Installs the Debian packages of $(1) that are missing.
define apt_install
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "deps: all Debian packages present"; fi
endef

# The binaries: the shim and its init helper (pause: `make pause`), and the peapod CLI, in
# cargo runs of their own: `$(call build_bins,--release)`. cargo builds every
# package of one run with the union of the features they all ask of a shared dependency, so
# a shim built beside the CLI carries the CLI's (proto's CRI client, regex's Unicode and DFA
# tables, …): 145 KiB more text and about 0.65 MiB more RSS in a resting shim (issue 17,
# measured). The last run builds only the CLI's own targets: the shim's stay as built.
# The shim and peapod-init are linked as static-pie executables (glibc's libc.a, libseccomp.a
# through .cargo/config.toml): no dynamic loader work at each start, and a smaller address
# space for the fork of each create. Measured (issue 17, embedded pods, A/B of eight pods):
# create median 5.27 -> 4.50 ms, a resting shim's RSS 6.73 -> 6.38 MiB. `cargo rustc` gives
# the flag to the binary alone (a crt-static RUSTFLAGS would reach the proc-macros too);
# a plain `cargo build` relinks them dynamically, which works the same, slower.
STATIC_PIE := -C target-feature=+crt-static
build_bins = $(CARGO) rustc $(1) -p sandbox --bin peapod-init -- $(STATIC_PIE) \
	&& $(CARGO) rustc $(1) -p shim --bin containerd-shim-peapod-v2 -- $(STATIC_PIE) \
	&& $(CARGO) build $(1) -p peapod $(2)

# containerd 2.x builds the containerd tiers also run against, besides Debian's 1.6.20: a
# space-separated list of unpacked containerd releases (bin/containerd, bin/ctr,
# bin/containerd-shim-runc-v2). .ci/run sets it with scripts/containerd-builds, which
# unpacks 2.1.5 and 2.3.4 into target/containerd/<version>/; locally:
#   make test PEAPOD_CONTAINERD_BUILDS="$(scripts/containerd-builds)"
# Empty: the tiers run on Debian's containerd alone and say that the 2.x runs did not happen.
PEAPOD_CONTAINERD_BUILDS ?=
export PEAPOD_CONTAINERD_BUILDS
# One test command per containerd, labelled, with a summary (scripts/each-containerd).
EACH_CONTAINERD := scripts/each-containerd

.PHONY: deps deps-demo build check test unit-test fuzz fuzz-cmin host-test escape-test containerd-test cli-test pause probe vm-test bench bench-vm symbol-order soak soak-vm demo demo-bundle install clean containerd-builds

deps:
	@# make fuzz: cargo-fuzz on the nightly toolchain.
	@command -v cargo-fuzz >/dev/null || $(CARGO) +nightly install cargo-fuzz --locked
	$(call apt_install,$(DEB_PACKAGES))
	@# The VM tests also boot bookworm-backports' newer kernel.
	@if ! ls /boot/vmlinuz-*+deb12-amd64 >/dev/null 2>&1; then \
		echo "installing bookworm-backports' linux-image-amd64 for make vm-test"; \
		scripts/enable-backports && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -t bookworm-backports linux-image-amd64; \
	fi

build:
	$(call build_bins,--release)
	$(CARGO) build --release --workspace --exclude sandbox --exclude shim

check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps

test: unit-test host-test escape-test containerd-test cli-test vm-test

# Unprivileged: pure logic on fixtures in temp dirs. Includes the replay of the fuzz corpus
# (fuzz/corpus, fuzz/regressions) through the fuzz targets' bodies, on the stable toolchain
# (peapod_tests::fuzz).
unit-test:
	$(CARGO) test --workspace --lib --bins

# Coverage-guided fuzzing (cargo-fuzz, libFuzzer, nightly; `make deps` installs cargo-fuzz):
# every target of fuzz/ for FUZZ_SECONDS (default 300) in one process each; prints
# executions and crashes per target and fails on a crash (scripts/fuzz; FUZZ_TARGETS to
# choose). Not part of `make test`, which replays the kept corpus instead.
fuzz:
	scripts/fuzz

# Minimizes the kept corpus of every target, or of FUZZ_TARGETS (libFuzzer -merge=1,
# scripts/fuzz-cmin).
fuzz-cmin:
	scripts/fuzz-cmin

# Privileged: real containers on the real kernel; fails (never skips) without root.
host-test:
	$(CARGO) test -p peapod-tests --test host

# Privileged: escape attempts, one per class, each observed from the host; the same
# bundle under Debian's runc where runc can run it. The CLI escapes run target/debug/peapod;
# their test images need the static pause binary.
escape-test: pause probe
	$(call build_bins)
	$(CARGO) test -p peapod-tests --test escape

# Privileged: a private containerd with runc and peapod runtimes (on 2.x also peapod-shim,
# the Sandbox API handler), driven by ctr and CRI; once with Debian's containerd 1.6.20,
# then once per build in PEAPOD_CONTAINERD_BUILDS, each run labelled. containerd finds
# containerd-shim-peapod-v2 in target/debug, so build it first.
containerd-test: pause probe
	$(call build_bins)
	$(EACH_CONTAINERD) --debian containerd-test $(CARGO) test -p peapod-tests --test containerd

# Unpacks the containerd 2.x release tarballs into target/containerd/<version>/ and prints
# the value for PEAPOD_CONTAINERD_BUILDS (PEAPOD_CONTAINERD_TARBALLS: where the tarballs are).
containerd-builds:
	@scripts/containerd-builds

# Privileged: the peapod CLI's embedded mode. The shim driven without containerd (tasks,
# exec, CNI); images: the local image store on the real
# kernel (archives, overlayfs rootfs, pulls from a private docker-registry filled by skopeo,
# getfattr from attr); the test images need the static pause binary. The CLI suite's
# CRI-mode pods (`cri::`) run against Debian's containerd with the rest of the suite, then
# again against the newest build in PEAPOD_CONTAINERD_BUILDS.
cli-test: pause probe
	$(call build_bins)
	$(CARGO) test -p peapod-tests --test embedded
	PEAPOD_CONTAINERD= $(CARGO) test -p peapod-tests --test cli
	$(EACH_CONTAINERD) --newest cli-test-cri $(CARGO) test -p peapod-tests --test cli -- cri::

# Privileged, cgroup v2 only: Debian's kernel under qemu (TCG) with cgroup_no_v1=all runs
# the suites listed in tests/vm/suites; see tests/vm/run (VM_KERNEL, VM_CONTAINERD,
# VM_TIMEOUT, ...). Every installed Debian kernel: bookworm's 6.1 and bookworm-backports'
# newer one (6.12). The containerd suite (~5.5 min of a kernel's ~10 under TCG) runs once
# per kernel, not once per containerd: against Debian's 1.6.20 on the oldest kernel and
# against the newest build of PEAPOD_CONTAINERD_BUILDS (2.3.4) on the newest kernel. With a
# single kernel it runs against both there; without any build, against Debian's on every
# kernel, and the run says so. The newest kernel also runs tests/vm/suites.newest: the
# CLI's embedded-mode pods with probes, hooks, config volumes, pulls and host ports. A run
# that fails only by an emulator fault (tests/vm/run exits 75: an int3 trap in kernel text
# under TCG) boots once more; a second failure fails.
VM_KERNELS ?= $(patsubst /boot/vmlinuz-%,%,$(wildcard /boot/vmlinuz-*-amd64))

vm-test:
	@kernels=$$(printf '%s\n' $(VM_KERNELS) | sort -V); \
	oldest=$$(echo "$$kernels" | head -n 1); newest=$$(echo "$$kernels" | tail -n 1); \
	build=$$($(EACH_CONTAINERD) --print-newest); \
	[ -n "$$build" ] || echo "vm-test: containerd 2.x: did not run: PEAPOD_CONTAINERD_BUILDS is empty; the containerd suite runs against Debian's containerd on every kernel"; \
	for k in $$kernels; do \
		ctrd=debian; \
		if [ -n "$$build" ] && [ "$$k" = "$$newest" ]; then \
			if [ "$$k" = "$$oldest" ]; then ctrd="debian $$build"; else ctrd=$$build; fi; \
		fi; \
		suites=tests/vm/suites; [ "$$k" = "$$newest" ] && suites="$$suites tests/vm/suites.newest"; \
		rc=0; VM_KERNEL=$$k VM_CONTAINERD="$$ctrd" VM_SUITES="$$suites" CARGO="$(CARGO)" tests/vm/run || rc=$$?; \
		for again in 1 2; do \
			[ $$rc = 75 ] || break; \
			echo "vm-test: $$k: emulator fault (exit 75, see tests/vm/run): booting again ($$again of 2)"; \
			rc=0; VM_KERNEL=$$k VM_CONTAINERD="$$ctrd" VM_SUITES="$$suites" CARGO="$(CARGO)" tests/vm/run || rc=$$?; \
		done; \
		[ $$rc = 0 ] || exit 1; \
	done

# Privileged: runc, crun and peapod side by side on one private containerd, release builds
# (the bench binary and the shim both in target/release, where containerd finds the shim),
# and peapod's embedded mode (no containerd) as a fourth column; with a containerd 2.x build
# (the newest in PEAPOD_CONTAINERD_BUILDS, or BENCH_CONTAINERD2), a second containerd of that
# version beside the first runs runc@<v>, peapod@<v> and peapod-shim@<v> (sandboxer "shim").
# Prints a markdown table; writes target/bench/results.md, results.json and containerd.log.
# Knobs: BENCH_ITERATIONS, BENCH_WARMUP, BENCH_EXECS, BENCH_CHURN_ITERATIONS,
# BENCH_CHURN_CONTAINERS, BENCH_MEMORY_PODS, BENCH_HANDLERS, BENCH_EMBEDDED_NETWORK (see
# tests/bench/main.rs).
bench: pause probe
	$(call build_bins,--release)
	$(CARGO) bench -p peapod-tests --bench bench

# Privileged, not part of `make test`: writes shim/symbol-order.txt, the shim's functions
# that a pod's life runs, which shim/build.rs has lld lay out first in the release shim
# (a resting shim maps less of its text). Runs a short `make bench` on a page-aligned build
# of the shim from a loop-mounted ext4 without readahead: see scripts/symbol-order. With
# PEAPOD_CONTAINERD_BUILDS, so that the 2.x Sandbox API is in the list.
symbol-order: pause probe
	$(call build_bins,--release)
	CARGO="$(CARGO)" STATIC_PIE="$(STATIC_PIE)" scripts/symbol-order

# Privileged, cgroup v2 only: `make bench` inside the VM of `make vm-test` (tests/vm/run
# with the list tests/vm/bench), on the newest installed Debian kernel (BENCH_VM_KERNELS
# to choose). qemu runs under TCG, roughly ten times slower than the host: the counts
# default small and only the ratios between handlers mean anything. The guest writes
# results.md, results.json and containerd.log into target/bench-vm/<kernel>/ through a
# read-write 9p share (VM_EXPORT). Knobs: the BENCH_* of `make bench` (VM defaults below),
# VM_TIMEOUT (default here 5400 s), VM_MEM, VM_CPUS.
BENCH_VM_KERNELS ?= $(lastword $(shell printf '%s\n' $(VM_KERNELS) | sort -V))
bench-vm: export BENCH_ITERATIONS ?= 5
bench-vm: export BENCH_WARMUP ?= 1
bench-vm: export BENCH_EXECS ?= 3
bench-vm: export BENCH_CHURN_ITERATIONS ?= 1
bench-vm: export BENCH_CHURN_CONTAINERS ?= 20
bench-vm: export BENCH_MEMORY_PODS ?= 5
bench-vm: export BENCH_MEMORY_SAMPLES ?= 2
bench-vm: export BENCH_PROBES ?= 10
bench-vm: export BENCH_PROBE_IDLE ?= 10
bench-vm: export BENCH_PROBE_PODS ?= 5
bench-vm: export BENCH_PROBE_SECONDS ?= 20
# The growth rows, scaled to TCG and the VM's 2 GiB: 10 pods at once, one pod of 1 and
# 10 containers, PSS per pod at 1 and 20 pods besides BENCH_MEMORY_PODS, pod ready with
# 200 more mounts on the host.
bench-vm: export BENCH_AT_ONCE ?= 10
bench-vm: export BENCH_POD_CONTAINERS ?= 1,10
bench-vm: export BENCH_SCALE_PODS ?= 1,20
bench-vm: export BENCH_HOST_MOUNTS ?= 200

bench-vm:
	@for k in $(BENCH_VM_KERNELS); do \
		out=$(CURDIR)/target/bench-vm/$$k; \
		VM_KERNEL=$$k VM_SUITES=tests/vm/bench VM_TIMEOUT=$${VM_TIMEOUT:-5400} VM_EXPORT=$$out \
			BENCH_OUT=$$out CARGO="$(CARGO)" tests/vm/run || exit 1; \
		echo "bench-vm: $$k: $$out/results.md, $$out/results.json"; \
	done

# Privileged, not part of `make test`: SOAK_PODS pods (default 1000) per run, at most
# SOAK_CONCURRENCY (20) alive at once, each an init container, a native sidecar and an app
# with CPU and memory limits and two emptyDirs (disk, Memory), with an exec, a log read and
# a stats call; every SOAK_FAIL_EVERYth app fails once and is replaced (CRI) or restarted
# (embedded). Runs: runc and peapod on a private containerd of Debian's 1.6.20, again on the
# newest build of PEAPOD_CONTAINERD_BUILDS (empty: the report says 2.x did not run), and
# peapod's embedded mode. Censuses (shims, processes in the runtime's cgroups, mounts,
# cgroups, netns, state dirs, IPAM, containerd's fds and RSS) at the start, every
# SOAK_SAMPLE_EVERY pods and at the end; exits 1 naming what leaked or grew. Release builds,
# as `make bench`. Writes target/soak/report.md, report.json and containerd-<v>.log. Knobs:
# tests/soak/main.rs. With the 2.x build:
#   make soak PEAPOD_CONTAINERD_BUILDS="$(scripts/containerd-builds)"
soak: pause probe
	$(call build_bins,--release)
	$(CARGO) bench -p peapod-tests --bench soak

# Privileged, cgroup v2 only: `make soak` inside the VM of `make vm-test` (tests/vm/run with
# the list tests/vm/soak) on the newest installed kernel, with fewer pods (it is emulated):
# SOAK_PODS 100, SOAK_CONCURRENCY 5, SOAK_SAMPLE_EVERY 25 unless set. The report lands in
# target/soak-vm/<kernel>/ through the VM's read-write share.
soak-vm: export SOAK_PODS ?= 100
soak-vm: export SOAK_CONCURRENCY ?= 5
soak-vm: export SOAK_SAMPLE_EVERY ?= 25
soak-vm:
	@for k in $(BENCH_VM_KERNELS); do \
		out=$(CURDIR)/target/soak-vm/$$k; \
		VM_KERNEL=$$k VM_SUITES=tests/vm/soak VM_TIMEOUT=$${VM_TIMEOUT:-7200} VM_EXPORT=$$out \
			SOAK_OUT=$$out CARGO="$(CARGO)" tests/vm/run || exit 1; \
		echo "soak-vm: $$k: $$out/report.md, $$out/report.json"; \
	done

# Only what `make demo` needs: no containerd, kernels or fuzzer.
deps-demo:
	$(call apt_install,$(DEMO_PACKAGES))

# A pod from examples/ run end to end by the CLI in embedded mode (see scripts/demo).
demo: deps-demo pause probe
	$(call build_bins,,-p peapod-tests --bins)
	scripts/demo

# A single container from an OCI bundle, without pods or images.
demo-bundle: deps-demo
	$(call build_bins,--release)
	scripts/demo-bundle build/demo
	target/release/peapod run-bundle build/demo

# peapod-pause linked statically (glibc static-pie), so the pause image holds one file.
# Copied out of cargo's dir: a plain `cargo build` would relink it dynamically there.
pause:
	$(CARGO) rustc -p sandbox --bin peapod-pause $(if $(RELEASE),--release) -- $(STATIC_PIE)
	install -D -m 0755 target/$(if $(RELEASE),release,debug)/peapod-pause target/pause/peapod-pause

# The busybox test image's /bin/syscall-probe (tests/src/bin/peapod-syscall-probe.rs):
# makes the system calls a seccomp profile should refuse and prints each errno; static,
# as the image has no libc.
probe:
	$(CARGO) rustc -p peapod-tests --bin peapod-syscall-probe -- $(STATIC_PIE)
	install -D -m 0755 target/debug/peapod-syscall-probe target/pause/peapod-syscall-probe

install: build
	$(MAKE) pause RELEASE=1
	install -D -m 0755 target/release/peapod $(DESTDIR)$(PREFIX)/bin/peapod
	install -D -m 0755 target/release/containerd-shim-peapod-v2 $(DESTDIR)$(PREFIX)/bin/containerd-shim-peapod-v2
	install -D -m 0755 target/release/peapod-init $(DESTDIR)$(PREFIX)/bin/peapod-init
	install -D -m 0755 target/pause/peapod-pause $(DESTDIR)$(PREFIX)/bin/peapod-pause

clean:
	$(CARGO) clean
	rm -rf build
