//! A private containerd for the containerd and CRI suites, with its own root, state,
//! sockets, CNI network and config, so tests never touch (or depend on) a system
//! containerd, and its teardown leaves nothing on the host.
//!
//! # Which containerd
//!
//! [`CONTAINERD_ENV`] (`PEAPOD_CONTAINERD`) names the directory of an unpacked containerd
//! release (`bin/containerd`, `bin/ctr`, `bin/containerd-shim-runc-v2`); unset, Debian's
//! containerd 1.6.20 in `/usr/bin`. One test process uses one build
//! ([`ContainerdBuild::selected`]): its `containerd`, its `ctr`, and its runc shim, never a
//! mix of versions. The version `containerd --version` reports picks the config: version 2
//! for 1.x, version 3 for 2.x ([`ContainerdVersion::config_version`]); tests read it from
//! [`Containerd::version`] where 1.6 and 2.x legitimately differ.
//!
//! # What an instance is
//!
//! [`Containerd::start`] makes a temp dir (`$TMPDIR/peapod-ctrd-XXXXXX`, short because
//! unix socket paths are limited to 108 bytes) holding:
//!
//! | path | what |
//! | --- | --- |
//! | `config.toml` | containerd config, version 2 or 3 (the settings and why: `config_toml_v2`, `config_toml_v3` below) |
//! | `containerd.sock`, `containerd.sock.ttrpc` | gRPC (containerd + CRI) and ttrpc sockets |
//! | `root/`, `state/` | containerd's root and state; CRI's netns mounts go under `state/` (`netns_mounts_under_state_dir`) |
//! | `cni/conf/` | one conflist: own bridge, own network name, private /24, `portmap` for host ports |
//! | `cni/ipam/` | host-local IPAM allocations (instead of `/var/lib/cni/networks`) |
//! | `pods/` | where [`crate::cri`] puts pod log directories |
//! | `containerd.log` | containerd's log ([`Containerd::log_tail`]) |
//! | `owner`, `ids`, `ns-cgroups-absent` | who started it, every container id it saw, and which `/default`, `/k8s.io` cgroups it may create: for stale-instance reaping |
//!
//! containerd finds shims on `PATH` (`io.containerd.peapod.v2` → `containerd-shim-peapod-v2`),
//! so it runs with the cargo target profile dir first on `PATH`: the shim the Makefile
//! built with `cargo build -p sandbox -p shim` is the one under test.
//!
//! # Knowing what the instance created
//!
//! A `ctr events` subscriber records every container id the instance creates (CRI sandboxes
//! are containers too), in memory and in `ids`. Leak checks and teardown use those ids to
//! find cgroups (anywhere in every cgroup hierarchy: runc's cgroupfs path ends in the id),
//! runc state dirs and shim sockets, without guessing where CRI put them.
//!
//! # Things outside the instance dir
//!
//! Some paths are fixed in containerd (1.6 and 2.x alike) and shared by every containerd on
//! the host:
//! shim sockets in `/run/containerd/s/<sha256(address/ns/id)>`, runc state in
//! `/run/containerd/runc/<ns>/<id>`, ctr's FIFOs in `/run/containerd/fifo`, and libcni's
//! result cache in `/var/lib/cni/results/<network>-<id>-<ifname>`. The ids and the network
//! name are unique to the instance, so checks and teardown match them exactly.
//!
//! An instance whose test process died (SIGKILL, abort) is reaped by the next
//! [`Containerd::start`]: its containerd, shims and container processes are killed and its
//! cgroups, mounts, bridge and dir removed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Write as _};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};

use crate::images;

/// Where Debian's containernetworking-plugins puts the CNI plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// CRI runtime handler (key of the `runtimes` table) for runc, the baseline.
pub const RUNC_HANDLER: &str = "runc";
/// CRI runtime handler for peapod with containerd's default sandboxer (`podsandbox`: the
/// pause image runs as the sandbox task, on every containerd version).
pub const PEAPOD_HANDLER: &str = "peapod";
/// CRI runtime handler for peapod with `sandboxer = "shim"`: the shim serves containerd's
/// Sandbox API (`containerd.runtime.sandbox.v1.Sandbox`). containerd 2.x only: 1.6 has no
/// sandboxers, and its config does not list this handler.
pub const PEAPOD_SHIM_HANDLER: &str = "peapod-shim";
/// containerd runtime type of runc's shim (`containerd-shim-runc-v2`).
pub const RUNC_RUNTIME: &str = "io.containerd.runc.v2";
/// containerd runtime type of peapod's shim (`containerd-shim-peapod-v2`).
pub const PEAPOD_RUNTIME: &str = "io.containerd.peapod.v2";
/// CRI runtime handler for crun (Debian's `/usr/bin/crun`), a second baseline for the
/// benchmarks.
pub const CRUN_HANDLER: &str = "crun";
/// containerd runtime type of the crun handler: runc's shim (`containerd-shim-runc-v2`),
/// which runs crun instead of runc through its `BinaryName` option.
pub const CRUN_RUNTIME: &str = "io.containerd.runc.v2";
/// The shim binary containerd derives from [`PEAPOD_RUNTIME`].
pub const PEAPOD_SHIM: &str = "containerd-shim-peapod-v2";
/// The containerd namespace CRI uses.
pub const K8S_NAMESPACE: &str = "k8s.io";
/// The namespace `ctr` uses when not told otherwise.
pub const DEFAULT_NAMESPACE: &str = "default";

/// How long [`Containerd::start`] waits for containerd and its CRI plugin to serve.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`Containerd::start`] waits for `ctr events` to deliver its first event: 10 s
/// on the host, 60 s in the VM suite (`PEAPOD_TEST_VM`: under TCG the first run of the
/// ~40 MB `ctr` binary, read over 9p, took more than 10 s once).
fn events_timeout() -> Duration {
    if std::env::var_os("PEAPOD_TEST_VM").is_some() {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(10)
    }
}
/// How long [`Containerd::stop`] waits after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Prefix of instance dirs in the temp dir, also how stale ones are found.
const DIR_PREFIX: &str = "peapod-ctrd-";

/// Plugins that cannot work on these hosts (no aufs module, not on btrfs/zfs, no
/// devmapper pool) and would only log errors (2.x builds without them: the names are
/// then unknown and ignored). The legacy v1 runtime
/// (`io.containerd.runtime.v1.linux`) must stay: containerd 1.6's tasks service, and with
/// it CRI, fail to load without it.
const DISABLED_PLUGINS: &[&str] = &[
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
];

/// Plugins of containerd 2.x that cannot work here and would only log their failure
/// (`plugins/snapshots/*` at v2.1.5 and v2.3.4): the blockfile snapshotter wants a
/// scratch file it is not given, the erofs one `mkfs.erofs` and the erofs module.
const DISABLED_PLUGINS_2X: &[&str] = &[
    "io.containerd.snapshotter.v1.blockfile",
    "io.containerd.snapshotter.v1.erofs",
];

/// `target/<profile>` of the running test binary (`target/<profile>/deps/<bin>`), where
/// cargo puts the workspace's binaries, `containerd-shim-peapod-v2` among them.
pub fn target_profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    let dir = exe.parent().context("test binary has no parent dir")?;
    Ok(if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().context("deps dir has no parent")?.to_path_buf()
    } else {
        dir.to_path_buf()
    })
}

/// The environment variable naming a directory that holds the shim under test in place of
/// `target/<profile>` (with `peapod-init` and `peapod-pause` beside it, where the shim looks
/// for them): `scripts/symbol-order` runs the bench on a profiling build this way.
pub const SHIM_DIR_ENV: &str = "PEAPOD_TEST_SHIM_DIR";

/// Where the shim under test is: `$PEAPOD_TEST_SHIM_DIR`, else `target/<profile>`.
pub fn shim_dir() -> Result<PathBuf> {
    match std::env::var_os(SHIM_DIR_ENV).filter(|d| !d.is_empty()) {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => target_profile_dir(),
    }
}

/// The peapod shim under test: `containerd-shim-peapod-v2` in [`shim_dir`]. Fails with
/// how to build it when it is missing.
pub fn peapod_shim() -> Result<PathBuf> {
    let path = shim_dir()?.join(PEAPOD_SHIM);
    ensure!(
        path.is_file(),
        "{} is missing: build it first with `cargo build -p sandbox -p shim` (`make containerd-test` does)",
        path.display()
    );
    Ok(path)
}

/// `name` resolved on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The environment variable naming the directory of an unpacked containerd build, in the
/// layout of containerd's release tarballs (`bin/containerd`, `bin/ctr`,
/// `bin/containerd-shim-runc-v2`; `scripts/containerd-builds` unpacks them into
/// `target/containerd/<version>/`). Unset or empty: Debian's containerd in `/usr/bin`
/// (1.6.20 on bookworm).
pub const CONTAINERD_ENV: &str = "PEAPOD_CONTAINERD";

/// Where Debian's containerd package puts `containerd`, `ctr` and `containerd-shim-runc-v2`.
const DEBIAN_BIN_DIR: &str = "/usr/bin";

/// A containerd release, `major.minor.patch`, as `containerd --version` reports it.
/// Ordered, so tests can branch on `version >= ContainerdVersion::new(2, 0, 0)` where
/// containerd 1.6 and 2.x legitimately differ (each such branch cites the change).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContainerdVersion {
    /// Major version: 1 or 2.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version.
    pub patch: u32,
}

impl ContainerdVersion {
    /// `major.minor.patch`.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        ContainerdVersion { major, minor, patch }
    }

    /// Parses the output of `containerd --version`: `containerd <module> <version>
    /// <revision>`, the version with or without a leading `v` and with any suffix after
    /// `major.minor.patch` ignored (Debian's `1.6.20~ds1`, a release's `v2.3.4`, a
    /// pre-release's `v2.1.0-rc.1`). Fails quoting the output when it has no such field.
    pub fn parse_version_output(output: &str) -> Result<Self> {
        let field = output
            .split_whitespace()
            .nth(2)
            .with_context(|| format!("`containerd --version` printed {output:?}: no version field"))?;
        let digits = field.trim_start_matches('v');
        let end = digits
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(digits.len());
        let parts: Vec<u32> = digits[..end]
            .split('.')
            .map(str::parse)
            .collect::<std::result::Result<_, _>>()
            .with_context(|| format!("containerd version {field:?} is not major.minor.patch"))?;
        let [major, minor, patch] = parts[..] else {
            bail!("containerd version {field:?} is not major.minor.patch");
        };
        Ok(ContainerdVersion { major, minor, patch })
    }

    /// containerd 2.0 or later: config version 3 with CRI split into the
    /// `io.containerd.cri.v1.images` and `io.containerd.cri.v1.runtime` plugins, and
    /// sandboxers (`sandboxer = "shim"`) in runtime entries.
    pub fn is_2x(self) -> bool {
        self.major >= 2
    }

    /// The config version the harness writes: 2 for containerd 1.x, 3 for 2.x
    /// (containerd's `docs/cri/config.md`, "Config versions"; 2.3 also reads version 4,
    /// which moves the server sections into plugins, and migrates 3).
    pub fn config_version(self) -> u32 {
        if self.is_2x() {
            3
        } else {
            2
        }
    }
}

impl std::fmt::Display for ContainerdVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// One containerd build: the directory of its binaries and the version its `containerd`
/// reports. A private containerd runs this build's `containerd`, its `ctr`, and its
/// `containerd-shim-runc-v2` for the runc handler (its bin dir is first on containerd's
/// `PATH`, where containerd looks shims up), never another version's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerdBuild {
    /// Holds `containerd`, `ctr` and `containerd-shim-runc-v2`.
    pub bin_dir: PathBuf,
    /// What `containerd --version` reports.
    pub version: ContainerdVersion,
}

impl ContainerdBuild {
    /// The build [`CONTAINERD_ENV`] selects (`$PEAPOD_CONTAINERD/bin`), or Debian's in
    /// `/usr/bin` when it is unset or empty. Detected once per process. Fails naming the
    /// missing binary (and `make deps` or `scripts/containerd-builds`) or the unreadable
    /// version.
    pub fn selected() -> Result<&'static ContainerdBuild> {
        static SELECTED: std::sync::OnceLock<std::result::Result<ContainerdBuild, String>> = std::sync::OnceLock::new();
        SELECTED
            .get_or_init(|| Self::from_env().map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// The newest containerd 2.x build other than `except`'s version: the directory
    /// `$override_var` names (`none`: no build), else the newest 2.x of
    /// `PEAPOD_CONTAINERD_BUILDS` (set by `.ci/run` from `scripts/containerd-builds`).
    /// `Ok(Err(why))` when there is none; `Err` for a directory that holds no containerd.
    pub fn newest_2x(
        override_var: &str,
        except: Option<ContainerdVersion>,
    ) -> Result<std::result::Result<ContainerdBuild, String>> {
        let dirs: Vec<PathBuf> = match std::env::var(override_var) {
            Ok(v) if v == "none" => return Ok(Err(format!("{override_var}=none"))),
            Ok(v) if !v.is_empty() => vec![PathBuf::from(v)],
            _ => std::env::var("PEAPOD_CONTAINERD_BUILDS")
                .unwrap_or_default()
                .split_whitespace()
                .map(PathBuf::from)
                .collect(),
        };
        let mut newest: Option<ContainerdBuild> = None;
        for dir in dirs {
            let build = Self::detect(
                &dir.join("bin"),
                &format!(
                    "{override_var} and PEAPOD_CONTAINERD_BUILDS name unpacked containerd releases (scripts/containerd-builds)"
                ),
            )?;
            if build.version.is_2x()
                && Some(build.version) != except
                && newest.as_ref().is_none_or(|n| build.version > n.version)
            {
                newest = Some(build);
            }
        }
        Ok(newest.ok_or_else(|| {
            format!(
                "no containerd 2.x build in PEAPOD_CONTAINERD_BUILDS (set by .ci/run from scripts/containerd-builds, \
                 or make ... PEAPOD_CONTAINERD_BUILDS=\"$(scripts/containerd-builds)\") or {override_var}"
            )
        }))
    }

    fn from_env() -> Result<Self> {
        match std::env::var_os(CONTAINERD_ENV).filter(|v| !v.is_empty()) {
            None => Self::detect(Path::new(DEBIAN_BIN_DIR), "run `make deps` (Debian package containerd)"),
            Some(dir) => {
                let dir = PathBuf::from(dir);
                let dir = dir
                    .canonicalize()
                    .with_context(|| format!("{CONTAINERD_ENV}={}: no such directory", dir.display()))?;
                Self::detect(
                    &dir.join("bin"),
                    &format!(
                        "{CONTAINERD_ENV}={} must name an unpacked containerd release (scripts/containerd-builds makes them)",
                        dir.display()
                    ),
                )
            }
        }
    }

    /// The build whose binaries are in `bin_dir`; `hint` says how to get them.
    pub fn detect(bin_dir: &Path, hint: &str) -> Result<Self> {
        let build = ContainerdBuild {
            bin_dir: bin_dir.to_path_buf(),
            version: ContainerdVersion::new(0, 0, 0),
        };
        for bin in [build.containerd(), build.ctr(), build.runc_shim()] {
            ensure!(bin.is_file(), "{} is missing: {hint}", bin.display());
        }
        let out = Command::new(build.containerd())
            .arg("--version")
            .output()
            .with_context(|| format!("run {} --version", build.containerd().display()))?;
        ensure!(
            out.status.success(),
            "{} --version: {}: {}",
            build.containerd().display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let version = ContainerdVersion::parse_version_output(&String::from_utf8_lossy(&out.stdout))?;
        Ok(ContainerdBuild { version, ..build })
    }

    /// `<bin_dir>/containerd`.
    pub fn containerd(&self) -> PathBuf {
        self.bin_dir.join("containerd")
    }

    /// `<bin_dir>/ctr`: the client of the same version.
    pub fn ctr(&self) -> PathBuf {
        self.bin_dir.join("ctr")
    }

    /// `<bin_dir>/containerd-shim-runc-v2`: runc's shim of the same version.
    pub fn runc_shim(&self) -> PathBuf {
        self.bin_dir.join("containerd-shim-runc-v2")
    }
}

impl std::fmt::Display for ContainerdBuild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "containerd {} ({})", self.version, self.bin_dir.display())
    }
}

/// Fails, naming the missing tool and its Debian package, unless everything a private
/// containerd with CNI needs is installed (the containerd binaries themselves:
/// [`ContainerdBuild::selected`]).
pub fn require_tools() -> Result<()> {
    ContainerdBuild::selected()?;
    for (tool, package) in [("runc", "runc"), ("ip", "iproute2")] {
        ensure!(
            which(tool).is_some(),
            "`{tool}` is not on PATH: run `make deps` (Debian package {package})"
        );
    }
    for plugin in ["bridge", "host-local", "loopback", "portmap"] {
        let path = Path::new(CNI_BIN_DIR).join(plugin);
        ensure!(
            path.is_file(),
            "{} is missing: run `make deps` (Debian package containernetworking-plugins)",
            path.display()
        );
    }
    ensure!(
        Path::new(crate::BUSYBOX).is_file(),
        "{} is missing: run `make deps` (Debian package busybox-static)",
        crate::BUSYBOX
    );
    Ok(())
}

static INSTANCES: AtomicUsize = AtomicUsize::new(0);

/// The host-side names and paths of one instance: enough to check it and to tear it
/// down, also for a stale instance found on disk.
#[derive(Debug, Clone)]
struct Layout {
    dir: PathBuf,
    /// CNI network name, also the prefix of libcni's cache files.
    network: String,
    /// Linux bridge the CNI bridge plugin creates (≤ 15 bytes: IFNAMSIZ).
    bridge: String,
    /// Cgroup under which [`Containerd::pod_cgroup_parent`] puts pods, e.g. `/peapod-ctrd-1f2e-0`.
    cgroup_root: String,
}

impl Layout {
    fn address(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    fn netns_dir(&self) -> PathBuf {
        self.dir.join("state/io.containerd.grpc.v1.cri/netns")
    }

    fn ipam_dir(&self) -> PathBuf {
        self.dir.join("cni/ipam")
    }

    /// `owner` file: `<test pid> <containerd pid> <network> <bridge> <cgroup root>`.
    fn write_owner(&self, containerd: u32) -> Result<()> {
        let line = format!(
            "{} {containerd} {} {} {}\n",
            std::process::id(),
            self.network,
            self.bridge,
            self.cgroup_root
        );
        fs::write(self.dir.join("owner"), line).context("write owner file")
    }

    /// Reads a stale instance's `owner` file: (layout, test pid, containerd pid).
    fn read_owner(dir: &Path) -> Option<(Layout, u32, u32)> {
        let text = fs::read_to_string(dir.join("owner")).ok()?;
        let f: Vec<&str> = text.split_whitespace().collect();
        let [test_pid, containerd_pid, network, bridge, cgroup_root] = f[..] else {
            return None;
        };
        Some((
            Layout {
                dir: dir.to_path_buf(),
                network: network.to_string(),
                bridge: bridge.to_string(),
                cgroup_root: cgroup_root.to_string(),
            },
            test_pid.parse().ok()?,
            containerd_pid.parse().ok()?,
        ))
    }

    fn recorded_ids(&self) -> BTreeSet<String> {
        fs::read_to_string(self.dir.join("ids"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Runs `build`'s containerd on `layout`'s config, logging (appending) to
/// `containerd.log`, with [`shim_dir`] (the cargo profile dir) first on its PATH so it finds
/// `containerd-shim-peapod-v2`, and the build's bin dir next so it finds its own
/// `containerd-shim-runc-v2` (containerd resolves `io.containerd.<name>.v2` with
/// `exec.LookPath` first: `runtime/v2/manager.go` in 1.6, `core/runtime/v2/shim_manager.go`
/// in 2.x).
fn spawn_containerd(layout: &Layout, build: &ContainerdBuild) -> Result<Child> {
    let dir = &layout.dir;
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("containerd.log"))
        .context("open containerd.log")?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(
        [shim_dir()?, build.bin_dir.clone()]
            .into_iter()
            .chain(std::env::split_paths(&path)),
    )?;
    Command::new(build.containerd())
        .arg("--config")
        .arg(dir.join("config.toml"))
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("spawn containerd")
}

/// A private containerd (see the module docs). Shareable between test threads; stopped
/// and cleaned up by [`Containerd::stop`] or on drop.
pub struct Containerd {
    layout: Layout,
    build: ContainerdBuild,
    subnet: String,
    child: Mutex<Option<Child>>,
    pid: AtomicU32,
    events: Mutex<Option<Child>>,
    ids: Arc<Mutex<BTreeSet<String>>>,
    startup: Duration,
    stopped: Mutex<bool>,
    /// Namespace cgroups (`<hierarchy>/default`, `<hierarchy>/k8s.io`) that existed before
    /// the instance started; the others are its own and go when empty.
    ns_cgroups_before: BTreeSet<PathBuf>,
}

impl std::fmt::Debug for Containerd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Containerd")
            .field("dir", &self.layout.dir)
            .field("version", &self.version())
            .field("pid", &self.pid())
            .finish_non_exhaustive()
    }
}

impl Containerd {
    /// Starts a private containerd and waits until it and its CRI plugin (runtime and
    /// network ready) serve, up to 30 s. Fails with the reason and containerd's log tail;
    /// fails naming the tool when containerd, runc, CNI plugins or busybox are missing.
    /// Reaps instances left by dead test processes first.
    pub fn start() -> Result<Self> {
        Self::start_build(ContainerdBuild::selected()?.clone())
    }

    /// [`Containerd::start`] with `build` rather than the one [`CONTAINERD_ENV`] selects:
    /// `make bench` runs Debian's 1.6 and a 2.x build side by side. Instances are
    /// independent (own dir, network, bridge and cgroup root), so both can run at once.
    pub fn start_build(build: ContainerdBuild) -> Result<Self> {
        Self::start_build_with(build, false)
    }

    /// [`Containerd::start`] with a gateway on the instance's bridge (the first address of
    /// its /24, one not routed on the host yet) and a default route in its pods, as
    /// containerd's own default conflist has: the host reaches the pods, and the pods
    /// answer the host, which host ports need (the DNAT'ed connection keeps the host's
    /// address as its source). The bridge plugin then also sets `net.ipv4.ip_forward`, as
    /// peapod's embedded network does.
    pub fn start_with_gateway() -> Result<Self> {
        Self::start_build_with(ContainerdBuild::selected()?.clone(), true)
    }

    fn start_build_with(build: ContainerdBuild, gateway: bool) -> Result<Self> {
        require_tools()?;
        reap_stale();
        let begun = Instant::now();
        let n = INSTANCES.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .context("create the instance dir")?
            .keep();
        let mut bridge = format!("peapod-{pid:x}-{n}");
        if bridge.len() > 15 {
            bridge = format!("pp{pid:x}-{n:x}");
            bridge.truncate(15);
        }
        let layout = Layout {
            network: format!("peapod-test-{pid}-{n}"),
            bridge,
            cgroup_root: format!("/{DIR_PREFIX}{pid}-{n}"),
            dir,
        };
        // sockaddr_un.sun_path holds 108 bytes with the NUL.
        let longest = layout.dir.join("containerd.sock.ttrpc");
        if longest.as_os_str().len() >= 108 {
            let _ = fs::remove_dir(&layout.dir);
            bail!(
                "socket path {} is too long for a unix socket: set TMPDIR to a shorter dir",
                longest.display()
            );
        }
        // No gateway means no host route, so the /24 need not be unique among instances;
        // vary it anyway to keep instances apart when reading `ip` output.
        let first = (pid as usize + n) % 200;
        let subnet = if gateway {
            // A gateway adds a host route: take a /24 no other bridge routes.
            let routes = Command::new("ip")
                .args(["-4", "route", "show"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            (0..200)
                .map(|i| format!("10.88.{}.0/24", (first + i) % 200 + 20))
                .find(|s| !routes.contains(s.as_str()))
                .context("no free 10.88.N.0/24 for a gateway")?
        } else {
            format!("10.88.{}.0/24", first + 20)
        };
        let ns_cgroups_before: BTreeSet<PathBuf> = namespace_cgroups().into_iter().filter(|p| p.is_dir()).collect();
        let result = Self::launch(layout.clone(), build, subnet, gateway, ns_cgroups_before, begun);
        if result.is_err() {
            teardown(&layout, None, &BTreeSet::new());
        }
        result
    }

    fn launch(
        layout: Layout,
        build: ContainerdBuild,
        subnet: String,
        gateway: bool,
        ns_cgroups_before: BTreeSet<PathBuf>,
        begun: Instant,
    ) -> Result<Self> {
        let dir = &layout.dir;
        for d in ["root", "state", "cni/conf", "cni/ipam", "pods", "opt"] {
            fs::create_dir_all(dir.join(d)).with_context(|| format!("create {}", dir.join(d).display()))?;
        }
        fs::write(dir.join("config.toml"), config_toml(&layout, build.version)).context("write config.toml")?;
        fs::write(
            dir.join("cni/conf/10-peapod-test.conflist"),
            cni_conflist(&layout, &subnet, gateway),
        )
        .context("write the CNI conflist")?;
        let child = spawn_containerd(&layout, &build)?;
        let pid = child.id();
        let absent: String = namespace_cgroups()
            .into_iter()
            .filter(|p| !ns_cgroups_before.contains(p))
            .map(|p| format!("{}\n", p.display()))
            .collect();
        let mut ctrd = Containerd {
            layout,
            build,
            subnet,
            child: Mutex::new(Some(child)),
            pid: AtomicU32::new(pid),
            events: Mutex::new(None),
            ids: Arc::new(Mutex::new(BTreeSet::new())),
            startup: Duration::ZERO,
            stopped: Mutex::new(false),
            ns_cgroups_before,
        };
        // From here on, dropping `ctrd` on error tears everything down.
        ctrd.layout.write_owner(pid)?;
        fs::write(ctrd.layout.dir.join("ns-cgroups-absent"), absent).context("write ns-cgroups-absent")?;
        let with_log = |e: anyhow::Error| anyhow::anyhow!("{e:#}\ncontainerd log tail:\n{}", ctrd.log_tail());
        ctrd.wait_ready().map_err(with_log)?;
        ctrd.config_accepted()?;
        ctrd.watch_events().map_err(with_log)?;
        ctrd.startup = begun.elapsed();
        Ok(ctrd)
    }

    /// Polls until containerd serves CRI with runtime and network ready, or fails early
    /// when containerd exits.
    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last = String::from("no attempt yet");
        loop {
            if let Some(status) = self
                .child
                .lock()
                .unwrap()
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("containerd exited during startup: {status}");
            }
            if is_socket(&self.address()) {
                match self.cri_ready() {
                    Ok(()) => return Ok(()),
                    // containerd serves, but without CRI: its plugin failed to load.
                    Err(e)
                        if e.downcast_ref::<proto::cri::Error>().and_then(proto::cri::Error::code)
                            == Some(proto::cri::Code::Unimplemented) =>
                    {
                        bail!(
                            "containerd serves without its CRI plugin (see `failed to load plugin` in its log): {e:#}"
                        )
                    }
                    Err(e) => last = format!("{e:#}"),
                }
            }
            ensure!(
                Instant::now() < deadline,
                "containerd not ready within {START_TIMEOUT:?}: {last}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Fails quoting containerd's warnings when it ignored keys of the config (2.x logs
    /// `Ignoring unknown key in TOML` for each: `cmd/containerd/server/config/config.go`):
    /// a setting in the wrong table would otherwise just not apply.
    fn config_accepted(&self) -> Result<()> {
        let log = fs::read_to_string(self.layout.dir.join("containerd.log")).context("read containerd.log")?;
        let ignored: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("Ignoring unknown key in TOML"))
            .collect();
        ensure!(
            ignored.is_empty(),
            "containerd {} ignored keys of {}:\n{}",
            self.version(),
            self.layout.dir.join("config.toml").display(),
            ignored.join("\n")
        );
        Ok(())
    }

    fn cri_ready(&self) -> Result<()> {
        let cri = self.cri()?.with_call_timeout(Duration::from_secs(2));
        cri.version()?;
        let status = cri.status()?;
        let conditions = status.status.context("CRI Status has no status")?.conditions;
        for want in ["RuntimeReady", "NetworkReady"] {
            let c = conditions
                .iter()
                .find(|c| c.r#type == want)
                .with_context(|| format!("CRI Status has no {want} condition"))?;
            ensure!(c.status, "CRI {want} is false: {} {}", c.reason, c.message);
        }
        Ok(())
    }

    /// Starts `ctr events` and records the container ids it reports; returns once the
    /// subscription demonstrably delivers (a namespace label update came through), within
    /// [`events_timeout`]. Fails with `ctr events`' exit status and stderr when it exited.
    fn watch_events(&self) -> Result<()> {
        let stderr_path = self.layout.dir.join("ctr-events.stderr");
        let stderr = fs::File::create(&stderr_path).context("create ctr-events.stderr")?;
        let mut child = self
            .ctr_command(&["events"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .context("spawn ctr events")?;
        let stdout = child.stdout.take().context("ctr events stdout")?;
        *self.events.lock().unwrap() = Some(child);
        let ids = Arc::clone(&self.ids);
        let seen = Arc::new(Mutex::new(false));
        let seen_w = Arc::clone(&seen);
        let ids_file = self.layout.dir.join("ids");
        std::thread::Builder::new().name("ctr-events".into()).spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                *seen_w.lock().unwrap() = true;
                for id in event_container_ids(&line) {
                    if ids.lock().unwrap().insert(id.clone()) {
                        if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(&ids_file) {
                            let _ = writeln!(f, "{id}");
                        }
                    }
                }
            }
        })?;
        let timeout = events_timeout();
        let deadline = Instant::now() + timeout;
        for i in 0.. {
            let probe = format!("peapod-events-probe={i}");
            self.ctr_ok(&["namespaces", "create", DEFAULT_NAMESPACE])
                .or_else(|_| self.ctr_ok(&["namespaces", "label", DEFAULT_NAMESPACE, &probe]))?;
            std::thread::sleep(Duration::from_millis(20));
            if *seen.lock().unwrap() {
                return Ok(());
            }
            let exited = self
                .events
                .lock()
                .unwrap()
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            let stderr = || fs::read_to_string(&stderr_path).unwrap_or_default();
            if let Some(status) = exited {
                bail!(
                    "`ctr events` exited ({status}) before delivering anything: {}",
                    stderr().trim()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "`ctr events` delivered nothing within {timeout:?} (it still runs; stderr: {:?})",
                stderr().trim()
            );
        }
        unreachable!()
    }

    /// containerd's gRPC socket (containerd API and CRI).
    pub fn address(&self) -> PathBuf {
        self.layout.address()
    }

    /// containerd's ttrpc socket.
    pub fn ttrpc_address(&self) -> PathBuf {
        self.layout.dir.join("containerd.sock.ttrpc")
    }

    /// containerd's debug socket (`[debug] address`): Go's `net/http/pprof` and expvar
    /// handlers, read by [`go_runtime`].
    pub fn debug_address(&self) -> PathBuf {
        self.layout.dir.join("debug.sock")
    }

    /// The instance dir.
    pub fn dir(&self) -> &Path {
        &self.layout.dir
    }

    /// The containerd build this instance runs (binaries and version).
    pub fn build(&self) -> &ContainerdBuild {
        &self.build
    }

    /// The version of the containerd this instance runs, for tests that branch where
    /// containerd 1.6 and 2.x legitimately differ (each such branch cites the change).
    pub fn version(&self) -> ContainerdVersion {
        self.build.version
    }

    /// The CRI runtime handlers this instance's config defines for peapod:
    /// [`PEAPOD_HANDLER`], and on containerd 2.x [`PEAPOD_SHIM_HANDLER`].
    pub fn peapod_handlers(&self) -> &'static [&'static str] {
        if self.version().is_2x() {
            &[PEAPOD_HANDLER, PEAPOD_SHIM_HANDLER]
        } else {
            &[PEAPOD_HANDLER]
        }
    }

    /// containerd's pid.
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::SeqCst)
    }

    /// Stops the containerd daemon alone (SIGTERM, as an operator's restart does: shims and
    /// containers keep running), runs `while_down`, then starts it again on the same
    /// state and waits until it serves.
    pub fn restart(&self, while_down: impl FnOnce() -> Result<()>) -> Result<()> {
        self.restart_after(Signal::SIGTERM, while_down)
    }

    /// [`Containerd::restart`], the daemon stopped by `signal`: SIGKILL is a crash (no
    /// shutdown: connections to shims and CRI's in-flight calls cut where they were).
    pub fn restart_after(&self, signal: Signal, while_down: impl FnOnce() -> Result<()>) -> Result<()> {
        if let Some(mut events) = self.events.lock().unwrap().take() {
            let _ = events.kill();
            let _ = events.wait();
        }
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = kill(pid(child.id()), signal);
            let _ = child.wait();
        }
        let down = while_down();
        let child = spawn_containerd(&self.layout, &self.build)?;
        self.pid.store(child.id(), Ordering::SeqCst);
        *self.child.lock().unwrap() = Some(child);
        self.layout.write_owner(self.pid())?;
        let with_log = |e: anyhow::Error| anyhow::anyhow!("{e:#}\ncontainerd log tail:\n{}", self.log_tail());
        self.wait_ready().map_err(with_log)?;
        self.watch_events().map_err(with_log)?;
        down
    }

    /// How long [`Containerd::start`] took until CRI served with network ready.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The cgroup (cgroupfs form, `/peapod-ctrd-<pid>-<n>`) under which
    /// [`Containerd::pod_cgroup_parent`] puts pods.
    pub fn cgroup_root(&self) -> &str {
        &self.layout.cgroup_root
    }

    /// Where CRI keeps pod network namespaces (`netns_mounts_under_state_dir`).
    pub fn netns_dir(&self) -> PathBuf {
        self.layout.netns_dir()
    }

    /// The CNI network's Linux bridge.
    pub fn bridge(&self) -> &str {
        &self.layout.bridge
    }

    /// The CNI network's subnet (`10.88.N.0/24`): pod IPs come from here.
    pub fn subnet(&self) -> &str {
        &self.subnet
    }

    /// A cgroupfs-style cgroup parent for the pod `pod`, under a root private to this
    /// instance (what the kubelet passes as `linux.cgroup_parent`, e.g.
    /// `/kubepods/besteffort/pod<uid>`). The kubelet owns pod cgroups; here teardown
    /// removes them.
    pub fn pod_cgroup_parent(&self, pod: &str) -> String {
        format!("{}/{pod}", self.layout.cgroup_root)
    }

    /// A dir under the instance for pod `pod`'s container logs (CRI `log_directory`).
    pub fn pod_log_dir(&self, pod: &str) -> PathBuf {
        self.layout.dir.join("pods").join(pod)
    }

    /// A CRI client connected to this containerd.
    pub fn cri(&self) -> Result<proto::cri::CriClient> {
        Ok(proto::cri::CriClient::connect(self.address())?)
    }

    fn ctr_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.build.ctr());
        cmd.arg("--address").arg(self.address()).args(args);
        cmd
    }

    /// Runs `ctr --address <socket> <args>` and returns its output, whatever its exit
    /// status (`ctr run` exits with the container's code).
    pub fn ctr(&self, args: &[&str]) -> Result<Output> {
        self.ctr_command(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run ctr {}", args.join(" ")))
    }

    /// Starts `ctr --address <socket> <args>` with stdin closed and stdout and stderr
    /// piped, for a test that reads its output while it runs (`ctr task attach`).
    pub fn ctr_spawn(&self, args: &[&str]) -> Result<Child> {
        self.ctr_command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("start ctr {}", args.join(" ")))
    }

    /// Runs `ctr` like [`Containerd::ctr`] and returns its stdout; fails with the exit
    /// status and stderr unless it succeeded.
    pub fn ctr_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.ctr(args)?;
        ensure!(
            out.status.success(),
            "ctr {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `ctr run <flags> --runtime <runtime> --fifo-dir <dir> <busybox> <id> <command>`:
    /// [`images::BUSYBOX_IMAGE`] as container `id` with the containerd runtime type
    /// `runtime`, its stdio FIFOs under the instance's dir. Returns ctr's output whatever
    /// its exit status (with `--rm`, the container's).
    pub fn ctr_run_busybox(&self, flags: &[&str], runtime: &str, id: &str, command: &[&str]) -> Result<Output> {
        let fifo_dir = self.layout.dir.join("fifo");
        let fifo_dir = fifo_dir.to_str().context("fifo dir")?;
        let mut args = vec!["run"];
        args.extend(flags);
        args.extend(["--runtime", runtime, "--fifo-dir", fifo_dir, images::BUSYBOX_IMAGE, id]);
        args.extend(command);
        self.ctr(&args)
    }

    /// Imports [`images::BUSYBOX_IMAGE`] and [`images::PAUSE_IMAGE`] (unpacked for the
    /// overlayfs snapshotter) into the `default` and `k8s.io` namespaces, and waits until
    /// CRI's image store lists both, so `RunPodSandbox` never tries to pull.
    pub fn import_images(&self) -> Result<()> {
        let archive = images::archive()?;
        let archive = archive.to_str().context("archive path is not UTF-8")?;
        // Both namespaces at once: each import unpacks its own snapshots.
        std::thread::scope(|scope| {
            let imports: Vec<_> = [DEFAULT_NAMESPACE, K8S_NAMESPACE]
                .map(|ns| scope.spawn(move || self.ctr_ok(&["--namespace", ns, "images", "import", archive])))
                .into_iter()
                .collect();
            imports
                .into_iter()
                .try_for_each(|i| i.join().expect("import thread panicked").map(drop))
        })?;
        let cri = self.cri()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        for image in [images::BUSYBOX_IMAGE, images::PAUSE_IMAGE] {
            while cri.image_status(image)?.is_none() {
                ensure!(
                    Instant::now() < deadline,
                    "CRI does not list {image} 10 s after the import"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// Checks that the shim sent SIGTERM to the running containers of pod `pod` at once
    /// when it terminated the pod, and returns the spread in µs: the time from its first
    /// `kill` to its last, as the shim logs it (`sandbox::pod::supervisor::terminate`,
    /// "SIGTERM sent to all containers"; the shim's log is part of containerd's). Errors
    /// when no such line is there, or when the spread is over 5 ms on real CPUs (250 ms
    /// under qemu's TCG emulation, `PEAPOD_TEST_VM`, where the shim's thread can be
    /// descheduled between two kills: 100 ms seen once on 6.12 with 2 vCPUs). Only a
    /// serial delivery fails either limit: a wait between containers would take seconds.
    pub fn check_sigterms_sent_at_once(&self, pod: &str) -> Result<u64> {
        let log = fs::read_to_string(self.layout.dir.join("containerd.log")).context("read containerd.log")?;
        let spread_us: u64 = log
            .lines()
            .filter(|l| l.contains("SIGTERM sent to all containers") && l.contains(pod))
            .find_map(|l| l.split("spread_us=").nth(1)?.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("the shim did not log its SIGTERM spread for pod {pod}"))?;
        let limit_us = if std::env::var_os("PEAPOD_TEST_VM").is_some() {
            250_000
        } else {
            5_000
        };
        ensure!(
            spread_us < limit_us,
            "the shim's SIGTERMs to pod {pod} spread over {spread_us} µs (limit {limit_us} µs)"
        );
        Ok(spread_us)
    }

    /// The last 60 lines of containerd's log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.layout.dir.join("containerd.log"), 60)
    }

    /// The cgroup dirs of container (or sandbox) `id`, in every hierarchy: where the
    /// runtime put it, whatever path CRI computed (`<cgroup_parent>/<id>` with a parent,
    /// containerd's `/<namespace>/<id>` without one).
    pub fn cgroups_of(&self, id: &str) -> Vec<PathBuf> {
        cgroups_named(&BTreeSet::from([id.to_string()]))
    }

    /// The socket containerd gives the shim of container `id` (for CRI: of the
    /// sandbox, as one shim serves the whole pod) in namespace `ns`.
    pub fn shim_socket(&self, ns: &str, id: &str) -> PathBuf {
        shim_socket(&self.address(), ns, id)
    }

    /// Every container id (CRI sandboxes included) this instance has created so far.
    pub fn seen_ids(&self) -> BTreeSet<String> {
        self.ids.lock().unwrap().clone()
    }

    /// Checks that nothing of the containers or sandboxes `ids` remains: containerd does
    /// not list them, and no shim serves them, no mount, cgroup, runc state dir, shim
    /// socket, CNI cache file or IP allocation names them. Safe while other tests use the
    /// instance.
    pub fn assert_gone(&self, ids: &[&str]) -> Result<()> {
        let ids: BTreeSet<String> = ids.iter().map(|s| s.to_string()).collect();
        let mut leaks = Vec::new();
        for ns in self.namespaces()? {
            for what in ["containers", "tasks"] {
                let listed = self.ctr_ok(&["--namespace", &ns, what, "list", "--quiet"])?;
                for line in listed.lines() {
                    let id = line.split_whitespace().next().unwrap_or_default();
                    if ids.contains(id) {
                        leaks.push(format!("containerd still lists {what} {ns}/{id}"));
                    }
                }
            }
        }
        leaks.extend(host_leaks(&self.layout, &ids, &[], true));
        report(leaks)
    }

    /// Checks that the instance is back to empty: no container or task in any namespace,
    /// no process other than containerd naming the instance (shims above all), no mount
    /// under its dir, no netns file, no veth on its bridge, no IP allocated, and for every
    /// id it ever created, no cgroup, runc state, shim socket or CNI cache file. Call it
    /// when no test is using the instance.
    pub fn assert_no_leftovers(&self) -> Result<()> {
        let mut leaks = Vec::new();
        for ns in self.namespaces()? {
            for what in ["containers", "tasks"] {
                let listed = self.ctr_ok(&["--namespace", &ns, what, "list", "--quiet"])?;
                for id in listed.lines().filter_map(|l| l.split_whitespace().next()) {
                    leaks.push(format!("containerd still lists {what} {ns}/{id}"));
                }
            }
        }
        let own: Vec<u32> = [Some(self.pid()), self.events.lock().unwrap().as_ref().map(Child::id)]
            .into_iter()
            .flatten()
            .collect();
        for (pid, cmdline) in processes_naming(&self.layout.dir) {
            if !own.contains(&pid) {
                leaks.push(format!("process {pid} still runs: {cmdline}"));
            }
        }
        for mount in mounts_under(&self.layout.dir) {
            leaks.push(format!("mount still there: {}", mount.display()));
        }
        for entry in fs::read_dir(self.layout.netns_dir()).into_iter().flatten().flatten() {
            leaks.push(format!("netns file still there: {}", entry.path().display()));
        }
        let brif = Path::new("/sys/class/net").join(&self.layout.bridge).join("brif");
        for entry in fs::read_dir(&brif).into_iter().flatten().flatten() {
            leaks.push(format!(
                "veth {} still on bridge {}",
                entry.file_name().to_string_lossy(),
                self.layout.bridge
            ));
        }
        for (ip, owner) in ipam_allocations(&self.layout) {
            leaks.push(format!("IP {ip} still allocated to {owner}"));
        }
        let pod_cgroups: Vec<PathBuf> = cgroup_dirs(&self.layout.cgroup_root)
            .iter()
            .flat_map(|dir| fs::read_dir(dir).into_iter().flatten().flatten())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        for cgroup in describe_cgroups(&pod_cgroups) {
            leaks.push(format!(
                "pod cgroup still there (the kubelet's part: cri::Pod::remove): {cgroup}"
            ));
        }
        leaks.extend(host_leaks(
            &self.layout,
            &self.seen_ids(),
            &[self.layout.network.as_str()],
            false,
        ));
        report(leaks)
    }

    fn namespaces(&self) -> Result<Vec<String>> {
        Ok(self
            .ctr_ok(&["namespaces", "list", "--quiet"])?
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// Stops containerd (SIGTERM, then SIGKILL after 10 s) and removes everything the
    /// instance left: processes naming it (shims), processes in its containers' cgroups,
    /// those cgroups and the pod cgroup root, mounts under its dir, its bridge, libcni
    /// cache files, runc state dirs and shim sockets of its ids, and the dir. Idempotent.
    /// Fails listing what could not be removed.
    pub fn stop(&self) -> Result<()> {
        let mut stopped = self.stopped.lock().unwrap();
        if *stopped {
            return Ok(());
        }
        *stopped = true;
        if let Some(mut events) = self.events.lock().unwrap().take() {
            let _ = events.kill();
            let _ = events.wait();
        }
        let child = self.child.lock().unwrap().take();
        let errors = teardown(&self.layout, child, &self.seen_ids());
        for dir in namespace_cgroups() {
            if !self.ns_cgroups_before.contains(&dir) {
                // Fails while another containerd has containers there: then it is not ours.
                let _ = fs::remove_dir(&dir);
            }
        }
        report(errors)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("containerd teardown of {}: {e:#}", self.layout.dir.display());
        }
    }
}

/// containerd's config for `version`: [`config_toml_v2`] for 1.x, [`config_toml_v3`] for
/// 2.x. Both define the same handlers with the same settings, except `peapod-shim` (2.x
/// only).
fn config_toml(layout: &Layout, version: ContainerdVersion) -> String {
    if version.is_2x() {
        config_toml_v3(layout, version)
    } else {
        config_toml_v2(layout)
    }
}

/// The `disabled_plugins` line: [`DISABLED_PLUGINS`], and on 2.x also
/// [`DISABLED_PLUGINS_2X`].
fn disabled_plugins(version: ContainerdVersion) -> String {
    let extra: &[&str] = if version.is_2x() { DISABLED_PLUGINS_2X } else { &[] };
    DISABLED_PLUGINS
        .iter()
        .chain(extra)
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// containerd 1.x's config (version 2). Why each setting:
///
/// - own `root`, `state`, sockets: nothing shared with a system containerd;
/// - `disabled_plugins`: snapshotters that cannot work here;
/// - `internal.v1.opt` path under the instance (it would create `/opt/containerd`);
/// - CRI: `sandbox_image` is our pause image (never pulled: imported);
///   `restrict_oom_score_adj = true` because the host refuses lowering `oom_score_adj`
///   (EACCES) and CRI sets the sandbox's to -998; `netns_mounts_under_state_dir` keeps pod
///   netns under the instance instead of `/var/run/netns`; `enable_cdi` stays off;
///   `stats_collect_period` 1 s so `ContainerStats` sees fresh writable-layer usage;
/// - CNI from Debian's plugins dir, conf in the instance;
/// - runtimes `runc` (default), `peapod`, and `crun` (runc's shim running
///   `/usr/bin/crun`, a baseline for the benchmarks); the cgroupfs driver
///   (`SystemdCgroup` off), as there is no systemd on these hosts; snapshotter overlayfs.
fn config_toml_v2(layout: &Layout) -> String {
    let d = layout.dir.display();
    let disabled = disabled_plugins(ContainerdVersion::new(1, 6, 0));
    format!(
        r#"# Written by peapod-tests (tests/src/containerd.rs) for one private containerd.
version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [{disabled}]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[debug]
  address = "{d}/debug.sock"
  level = "{level}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stats_collect_period = 1

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{d}/cni/conf"
    max_conf_num = 1

  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "{runc}"
    snapshotter = "overlayfs"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{runc}]
      runtime_type = "{runc_type}"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{runc}.options]
        SystemdCgroup = false

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{peapod}]
      runtime_type = "{peapod_type}"
      pod_annotations = ["io.peapod.*"]
      container_annotations = ["io.peapod.*", "io.kubernetes.pod.terminationGracePeriod"]

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{crun}]
      runtime_type = "{crun_type}"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{crun}.options]
        BinaryName = "/usr/bin/crun"
        SystemdCgroup = false
"#,
        level = std::env::var("PEAPOD_CONTAINERD_LOG_LEVEL").unwrap_or_else(|_| "info".into()),
        pause = images::PAUSE_IMAGE,
        cni_bin = CNI_BIN_DIR,
        runc = RUNC_HANDLER,
        runc_type = RUNC_RUNTIME,
        peapod = PEAPOD_HANDLER,
        peapod_type = PEAPOD_RUNTIME,
        crun = CRUN_HANDLER,
        crun_type = CRUN_RUNTIME,
    )
}

/// containerd 2.x's config (version 3), the same instance as [`config_toml_v2`] in 2.x's
/// layout (containerd's `docs/cri/config.md` and `internal/cri/config/config.go` at
/// v2.1.5 and v2.3.4):
///
/// - image settings in `io.containerd.cri.v1.images`: `snapshotter`, the pause image as
///   `pinned_images.sandbox` (1.x's `sandbox_image`), `stats_collect_period` (seconds,
///   the writable-layer usage `ContainerStats` reports);
/// - runtime settings in `io.containerd.cri.v1.runtime`: `restrict_oom_score_adj`,
///   `netns_mounts_under_state_dir` (netns still under
///   `state/io.containerd.grpc.v1.cri/netns`: `plugins/cri/runtime/plugin.go` keeps 1.x's
///   state dir), CNI and the runtimes; CDI stays on, 2.x's default (`enable_cdi` is
///   deprecated there, and 2.3 warns when it is set): no test asks for a CDI device;
/// - CNI plugin dirs as `bin_dirs` (a list) from 2.1 on, `bin_dir` on 2.0 (2.1 deprecates
///   it);
/// - `enable_unprivileged_ports` and `enable_unprivileged_icmp` keep 2.x's defaults (on:
///   every non-host-network container gets the two sysctls), as a 2.x node has them;
/// - the same runtimes as 1.x plus `peapod-shim`: peapod's runtime type with
///   `sandboxer = "shim"`, so the shim serves the pod sandbox through containerd's
///   Sandbox API; `peapod` keeps the default sandboxer, `podsandbox` (the pause image as
///   the sandbox task);
/// - NRI off (`io.containerd.nri.v1.nri` `disable`): on by default in 2.x, it would
///   create the host-wide `/var/run/nri/nri.sock`.
///
/// containerd 2.x warns about keys it does not know (`Ignoring unknown key in TOML`);
/// [`Containerd::start`] fails on that warning, so a misplaced setting cannot pass
/// unnoticed.
fn config_toml_v3(layout: &Layout, version: ContainerdVersion) -> String {
    let d = layout.dir.display();
    let disabled = disabled_plugins(version);
    // `bin_dirs` since containerd 2.1 (internal/cri/config/config.go: `bin_dir` is
    // "DEPRECATED, use `bin_dirs` instead (since containerd v2.1)").
    let cni_bin = if version >= ContainerdVersion::new(2, 1, 0) {
        format!("bin_dirs = [\"{CNI_BIN_DIR}\"]")
    } else {
        format!("bin_dir = \"{CNI_BIN_DIR}\"")
    };
    let runtimes = "plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes";
    format!(
        r#"# Written by peapod-tests (tests/src/containerd.rs) for one private containerd {version}.
version = 3
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [{disabled}]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[debug]
  address = "{d}/debug.sock"
  level = "{level}"

[plugins.'io.containerd.internal.v1.opt']
  path = "{d}/opt"

[plugins.'io.containerd.nri.v1.nri']
  disable = true

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  stats_collect_period = 1

  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{pause}"

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true

  [plugins.'io.containerd.cri.v1.runtime'.cni]
    {cni_bin}
    conf_dir = "{d}/cni/conf"
    max_conf_num = 1

  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "{runc}"

    [{runtimes}.{runc}]
      runtime_type = "{runc_type}"

      [{runtimes}.{runc}.options]
        SystemdCgroup = false

    [{runtimes}.{peapod}]
      runtime_type = "{peapod_type}"
      pod_annotations = ["io.peapod.*"]
      container_annotations = ["io.peapod.*", "io.kubernetes.pod.terminationGracePeriod"]

    [{runtimes}.{peapod_shim}]
      runtime_type = "{peapod_type}"
      sandboxer = "shim"
      pod_annotations = ["io.peapod.*"]
      container_annotations = ["io.peapod.*", "io.kubernetes.pod.terminationGracePeriod"]

    [{runtimes}.{crun}]
      runtime_type = "{crun_type}"

      [{runtimes}.{crun}.options]
        BinaryName = "/usr/bin/crun"
        SystemdCgroup = false
"#,
        level = std::env::var("PEAPOD_CONTAINERD_LOG_LEVEL").unwrap_or_else(|_| "info".into()),
        pause = images::PAUSE_IMAGE,
        runc = RUNC_HANDLER,
        runc_type = RUNC_RUNTIME,
        peapod = PEAPOD_HANDLER,
        peapod_shim = PEAPOD_SHIM_HANDLER,
        peapod_type = PEAPOD_RUNTIME,
        crun = CRUN_HANDLER,
        crun_type = CRUN_RUNTIME,
    )
}

/// The CNI network: a bridge with host-local IPAM, no masquerading and, without
/// `gateway`, no gateway, so the host's routes, `ip_forward` and iptables stay untouched
/// (the bridge plugin sets `ip_forward` and adds a route only with `isGateway`); with
/// `gateway`, the bridge's address and a default route in the pods (see
/// [`Containerd::start_with_gateway`]). Pods get `eth0` with an address in `subnet`; CRI
/// itself brings up `lo` (containerd 1.6 always adds its loopback network). `portmap`
/// (capability `portMappings`, as in containerd's default conflist) maps the sandboxes'
/// host ports; without any it changes nothing.
fn cni_conflist(layout: &Layout, subnet: &str, gateway: bool) -> String {
    let mut ipam = serde_json::json!({
        "type": "host-local",
        "ranges": [[{ "subnet": subnet }]],
        "dataDir": layout.ipam_dir(),
    });
    if gateway {
        ipam["routes"] = serde_json::json!([{ "dst": "0.0.0.0/0" }]);
    }
    serde_json::to_string_pretty(&serde_json::json!({
        "cniVersion": "1.0.0",
        "name": layout.network,
        "plugins": [{
            "type": "bridge",
            "bridge": layout.bridge,
            "isGateway": gateway,
            "ipMasq": false,
            "ipam": ipam,
        }, {
            "type": "portmap",
            "capabilities": { "portMappings": true },
        }],
    }))
    .expect("JSON values serialize")
}

/// Container ids in one `ctr events` line (`<time> <namespace> <topic> <json>`): the
/// `id` of `/containers/*` events and the `container_id` of `/tasks/*` events.
fn event_container_ids(line: &str) -> Vec<String> {
    let Some(start) = line.find('{') else {
        return Vec::new();
    };
    let topic_is = |t: &str| line[..start].split_whitespace().any(|w| w.starts_with(t));
    let Ok(value) = serde_json::from_str::<serde_json::Value>(&line[start..]) else {
        return Vec::new();
    };
    let mut ids = Vec::new();
    if topic_is("/containers/") {
        ids.extend(value["id"].as_str().map(str::to_string));
    }
    if topic_is("/tasks/") {
        ids.extend(value["container_id"].as_str().map(str::to_string));
    }
    ids.retain(|id| !id.is_empty());
    ids
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn report(leaks: Vec<String>) -> Result<()> {
    ensure!(leaks.is_empty(), "leftovers:\n  {}", leaks.join("\n  "));
    Ok(())
}

/// Processes whose command line mentions `dir` (containerd itself, shims started with
/// `-address <dir>/containerd.sock`, ctr, runc with a bundle under it): (pid, cmdline).
fn processes_naming(dir: &Path) -> Vec<(u32, String)> {
    let needle = dir.to_string_lossy().into_owned();
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(&needle) {
            found.push((pid, cmdline.trim_end().to_string()));
        }
    }
    found
}

/// Mount points at or under `dir` in this mount namespace (containerd's), deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// Who listens on the unix socket at `path`, for a leak report: the processes holding a
/// listening socket bound there (`/proc/net/unix`, then each process's fds), as `pid
/// (cmdline)`, or that none does (a stale file).
fn socket_listeners(path: &Path) -> String {
    let unix = fs::read_to_string("/proc/net/unix").unwrap_or_default();
    // Num RefCount Protocol Flags Type St Inode Path; St 01 is "listening".
    let inodes: BTreeSet<String> = unix
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 8 && f[5] == "01" && Path::new(f[7]) == path)
        .map(|f| format!("socket:[{}]", f[6]))
        .collect();
    if inodes.is_empty() {
        return "no process listens on it".into();
    }
    let mut holders = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let held = fs::read_dir(entry.path().join("fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| fs::read_link(fd.path()).is_ok_and(|l| inodes.contains(&*l.to_string_lossy())));
        if held {
            let cmd = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            holders.push(format!(
                "{pid} ({})",
                String::from_utf8_lossy(&cmd).replace('\0', " ").trim_end()
            ));
        }
    }
    format!("listening, held by: {}", holders.join(", "))
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
pub fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points of every cgroup hierarchy (each v1 controller, v2's unified tree).
pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut roots: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split(' ').next()?;
            let mount_point = pre.split(' ').nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(unescape_mountinfo(mount_point)))
        })
        .collect();
    roots.sort();
    roots.dedup();
    roots
}

/// Whether a cgroup dir named `name` is container `id`'s: `<id>` (cgroupfs) or
/// `<prefix>-<id>.scope` (systemd driver).
fn names_id(name: &str, id: &str) -> bool {
    name == id
        || name
            .strip_suffix(".scope")
            .is_some_and(|n| n.ends_with(&format!("-{id}")))
}

/// Cgroup dirs, in every hierarchy, named for one of `ids` (runc's cgroupfs
/// path ends in the container id; systemd's is `cri-containerd-<id>.scope`), deepest
/// first.
fn cgroups_named(ids: &BTreeSet<String>) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if ids.is_empty() {
        return found;
    }
    let mut stack = cgroup_hierarchies();
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if ids.iter().any(|id| names_id(&name, id)) {
                found.push(entry.path());
            }
            stack.push(entry.path());
        }
    }
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// The dir of cgroup `path` (cgroupfs form, `/a/b`) in every hierarchy where it exists.
fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    cgroup_hierarchies()
        .into_iter()
        .map(|root| root.join(path.trim_start_matches('/')))
        .filter(|p| p.is_dir())
        .collect()
}

/// `<hierarchy>/default` and `<hierarchy>/k8s.io` in every cgroup hierarchy: where
/// containerd's default spec puts a namespace's containers (`/<namespace>/<id>`).
fn namespace_cgroups() -> Vec<PathBuf> {
    cgroup_hierarchies()
        .into_iter()
        .flat_map(|root| [root.join(DEFAULT_NAMESPACE), root.join(K8S_NAMESPACE)])
        .collect()
}

/// Removes the (empty) cgroup `path` (cgroupfs form, `/a/b`) from every hierarchy, as the
/// kubelet removes a pod's cgroup after the pod, and as kubelet retrying while it is busy
/// (its orphaned pod cgroup cleanup runs again until it succeeds): for up to 10 s, since a
/// runtime's cleanup of a dead shim (`shim delete`) may still be removing a container's
/// cgroup when RemovePodSandbox returns. Fails naming the dir and what keeps it busy:
/// processes or child cgroups (a container's) left in it.
pub fn remove_cgroup(path: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    for dir in cgroup_dirs(path) {
        loop {
            match fs::remove_dir(&dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("remove cgroup {}: {}", dir.display(), cgroup_contents(&dir)))
                }
            }
        }
    }
    Ok(())
}

/// What keeps cgroup dir `dir` busy, for an error: its processes (pid and command) and
/// child cgroups with theirs.
fn cgroup_contents(dir: &Path) -> String {
    let procs = |d: &Path| -> Vec<String> {
        fs::read_to_string(d.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .map(|pid| {
                let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                let state = fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.chars().take(1).collect::<String>()))
                    .unwrap_or_default();
                format!("{pid} {} ({state})", comm.trim())
            })
            .collect()
    };
    let children: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| format!("{} {:?}", e.file_name().to_string_lossy(), procs(&e.path())))
        .collect();
    format!("processes {:?}, child cgroups {children:?}", procs(dir))
}

/// containerd's shim socket for container (or sandbox) `id` in namespace `ns`:
/// `/run/containerd/s/<sha256 of "<address>/<ns>/<id>">` (`SocketAddress`: 1.6's
/// runtime/v2/shim, 2.x's pkg/shim).
fn shim_socket(address: &Path, ns: &str, id: &str) -> PathBuf {
    let key = address.join(ns).join(id);
    let digest = Sha256::digest(key.as_os_str().as_encoded_bytes());
    PathBuf::from(format!("/run/containerd/s/{digest:x}"))
}

/// host-local IPAM allocations of the instance's network: (IP, owner line). The plugin
/// keeps one file per IP holding the container id, next to `last_reserved_ip.*` and
/// `lock`.
fn ipam_allocations(layout: &Layout) -> Vec<(String, String)> {
    let dir = layout.ipam_dir().join(&layout.network);
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("last_reserved_ip") || name == "lock" {
            continue;
        }
        let owner = fs::read_to_string(entry.path()).unwrap_or_default();
        found.push((name, owner.lines().next().unwrap_or_default().to_string()));
    }
    found
}

/// Cgroup dirs as one line per cgroup path: `/a/b (memory, pids, ...)`.
fn describe_cgroups(dirs: &[PathBuf]) -> Vec<String> {
    let roots = cgroup_hierarchies();
    let mut by_path: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for dir in dirs {
        let Some(root) = roots
            .iter()
            .filter(|r| dir.starts_with(r))
            .max_by_key(|r| r.as_os_str().len())
        else {
            continue;
        };
        let rel = dir.strip_prefix(root).unwrap_or(dir);
        let hierarchy = root
            .file_name()
            .map_or("/".into(), |n| n.to_string_lossy().into_owned());
        by_path
            .entry(format!("/{}", rel.display()))
            .or_default()
            .push(hierarchy);
    }
    by_path
        .into_iter()
        .map(|(path, hierarchies)| format!("{path} (in {})", hierarchies.join(", ")))
        .collect()
}

/// Leaks of `ids` on the host: cgroups, runc state dirs, shim sockets, libcni cache
/// files, IP allocations, and with `processes_and_mounts` their shim processes and
/// mounts; plus every libcni cache file of the `networks` given.
fn host_leaks(layout: &Layout, ids: &BTreeSet<String>, networks: &[&str], processes_and_mounts: bool) -> Vec<String> {
    let mut leaks = Vec::new();
    if ids.is_empty() && networks.is_empty() {
        return leaks;
    }
    let address = layout.address();
    if processes_and_mounts {
        for (pid, cmdline) in processes_naming(&layout.dir) {
            if cmdline.contains("containerd-shim") && ids.iter().any(|id| cmdline.split(' ').any(|arg| arg == id)) {
                leaks.push(format!("shim {pid} still runs: {cmdline}"));
            }
        }
        for mount in mounts_under(&layout.dir) {
            if mount.iter().any(|c| ids.iter().any(|id| c == id.as_str())) {
                leaks.push(format!("mount still there: {}", mount.display()));
            }
        }
    }
    for cgroup in describe_cgroups(&cgroups_named(ids)) {
        leaks.push(format!("cgroup still there: {cgroup}"));
    }
    for id in ids {
        for ns in [DEFAULT_NAMESPACE, K8S_NAMESPACE] {
            let runc_state = Path::new("/run/containerd/runc").join(ns).join(id);
            if runc_state.exists() {
                leaks.push(format!("runc state still there: {}", runc_state.display()));
            }
            let socket = shim_socket(&address, ns, id);
            if socket.exists() {
                leaks.push(format!(
                    "shim socket of {ns}/{id} still there: {} ({})",
                    socket.display(),
                    socket_listeners(&socket)
                ));
            }
        }
    }
    for (ip, owner) in ipam_allocations(layout) {
        if ids.contains(&owner) {
            leaks.push(format!("IP {ip} still allocated to {owner}"));
        }
    }
    for entry in fs::read_dir("/var/lib/cni/results").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if networks.iter().any(|n| name.starts_with(&format!("{n}-")))
            || ids.iter().any(|id| name.contains(&format!("-{id}-")))
        {
            leaks.push(format!("CNI cache file still there: {}", entry.path().display()));
        }
    }
    leaks
}

/// SIGKILLs every process in the cgroup dir `dir` and removes it, retrying while the
/// killed processes exit.
fn kill_and_remove_cgroup(dir: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        for pid in fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse::<i32>().ok())
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(e).with_context(|| format!("remove cgroup {}", dir.display()))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Removes the cgroup tree `path` in every hierarchy, killing what runs in it.
fn remove_cgroup_tree(path: &str) -> Vec<String> {
    let mut errors = Vec::new();
    for top in cgroup_dirs(path) {
        let mut dirs = vec![top.clone()];
        let mut stack = vec![top];
        while let Some(d) = stack.pop() {
            for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(entry.path());
                    stack.push(entry.path());
                }
            }
        }
        dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for d in dirs {
            if let Err(e) = kill_and_remove_cgroup(&d) {
                errors.push(format!("{e:#}"));
            }
        }
    }
    errors
}

/// Tears an instance down (see [`Containerd::stop`]); returns what could not be removed.
fn teardown(layout: &Layout, containerd: Option<Child>, ids: &BTreeSet<String>) -> Vec<String> {
    let mut errors = Vec::new();
    if let Some(mut child) = containerd {
        if let Err(e) = stop_child(&mut child) {
            errors.push(format!("stop containerd: {e:#}"));
        }
    }
    // Shims (and anything else started for the instance) outlive containerd by design.
    let killed: Vec<u32> = processes_naming(&layout.dir).into_iter().map(|(pid, _)| pid).collect();
    for &p in &killed {
        let _ = kill(pid(p), Signal::SIGKILL);
    }
    wait_gone(&killed, Duration::from_secs(5));
    // Container processes are not children of anything we kill: find them by cgroup.
    for cgroup in cgroups_named(ids) {
        if let Err(e) = kill_and_remove_cgroup(&cgroup) {
            errors.push(format!("{e:#}"));
        }
    }
    errors.extend(remove_cgroup_tree(&layout.cgroup_root));
    for mount in mounts_under(&layout.dir) {
        if let Err(e) = nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH) {
            errors.push(format!("unmount {}: {e}", mount.display()));
        }
    }
    if Path::new("/sys/class/net").join(&layout.bridge).exists() {
        match Command::new("ip").args(["link", "del", &layout.bridge]).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => errors.push(format!(
                "ip link del {}: {}",
                layout.bridge,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => errors.push(format!("ip link del {}: {e}", layout.bridge)),
        }
    }
    let address = layout.address();
    for id in ids {
        for ns in [DEFAULT_NAMESPACE, K8S_NAMESPACE] {
            let _ = fs::remove_dir_all(Path::new("/run/containerd/runc").join(ns).join(id));
            let _ = fs::remove_file(shim_socket(&address, ns, id));
        }
    }
    // libcni's cache: `<network>-<id>-<ifname>`, also for CRI's own `cni-loopback`.
    for entry in fs::read_dir("/var/lib/cni/results").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{}-", layout.network)) || ids.iter().any(|id| name.contains(&format!("-{id}-"))) {
            let _ = fs::remove_file(entry.path());
        }
    }
    // Netns files are nsfs bind mounts (unmounted above) on plain files.
    if let Err(e) = fs::remove_dir_all(&layout.dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            errors.push(format!("remove {}: {e}", layout.dir.display()));
        }
    }
    errors
}

/// A pid from `/proc` or `Child::id` (always below 2^22) for `kill`.
fn pid(pid: u32) -> Pid {
    Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX))
}

/// SIGTERM, wait up to [`STOP_TIMEOUT`], then SIGKILL.
fn stop_child(child: &mut Child) -> Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    kill(pid(child.id()), Signal::SIGTERM)?;
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill()?;
    child.wait()?;
    bail!("containerd ignored SIGTERM for {STOP_TIMEOUT:?}; killed")
}

/// Waits until none of `pids` exists (killed processes that init still has to reap).
fn wait_gone(pids: &[u32], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline && pids.iter().any(|p| process_alive(*p)) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Alive and not a zombie.
fn process_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

/// Tears down instances whose test process is gone (killed before it could clean up).
fn reap_stale() {
    let tmp = std::env::temp_dir();
    for entry in fs::read_dir(&tmp).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(DIR_PREFIX) || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Some((layout, test_pid, containerd_pid)) = Layout::read_owner(&entry.path()) else {
            continue;
        };
        if test_pid > 0 && process_alive(test_pid) {
            continue;
        }
        // Only kill the recorded pid if it still is that instance's containerd.
        if containerd_pid > 0 {
            let cmdline = fs::read(format!("/proc/{containerd_pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&*layout.dir.to_string_lossy()) {
                let _ = kill(pid(containerd_pid), Signal::SIGKILL);
                wait_gone(&[containerd_pid], Duration::from_secs(5));
            }
        }
        let absent = fs::read_to_string(layout.dir.join("ns-cgroups-absent")).unwrap_or_default();
        let errors = teardown(&layout, None, &layout.recorded_ids());
        for dir in absent.lines() {
            let _ = fs::remove_dir(dir);
        }
        let mut msg = format!("reaped stale containerd instance {}", layout.dir.display());
        if !errors.is_empty() {
            let _ = write!(msg, "; left: {}", errors.join("; "));
        }
        eprintln!("{msg}");
    }
}

/// Whether `path` is a unix socket (containerd creates it once it serves).
fn is_socket(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// What containerd's Go runtime holds, read from its debug socket: the cause behind an RSS
/// that grows (a goroutine leak, live heap that grows, or memory Go keeps but does not
/// use), which `/proc/<pid>/status` cannot tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoRuntime {
    /// Live heap right after a forced garbage collection, bytes (`runtime.MemStats.HeapAlloc`
    /// of `/debug/pprof/heap?gc=1`).
    pub heap_alloc: u64,
    /// Heap memory obtained from the OS and not returned (`HeapSys - HeapReleased`), bytes.
    pub heap_retained: u64,
    /// Goroutines (`/debug/pprof/goroutine?debug=1`'s total).
    pub goroutines: u64,
}

/// Reads [`GoRuntime`] from a Go program's `net/http/pprof` handlers on the Unix socket
/// `debug` (containerd's `[debug] address`, see [`Containerd::debug_address`]).
///
/// Errors: the socket refuses, the answer is not HTTP 200, or a field is missing.
pub fn go_runtime(debug: &Path) -> Result<GoRuntime> {
    let heap = heap_profile(debug)?;
    let goroutines = http_get_unix(debug, "/debug/pprof/goroutine?debug=1")?;
    GoRuntime::parse(&heap, &goroutines).with_context(|| format!("reading {}'s profiles", debug.display()))
}

impl GoRuntime {
    /// From the text forms of a heap profile (its `# runtime.MemStats` lines) and a
    /// goroutine profile (`goroutine profile: total N`); errors name the missing field.
    fn parse(heap: &str, goroutines: &str) -> Result<Self> {
        let stat = |name: &str| -> Result<u64> {
            let prefix = format!("# {name} = ");
            heap.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .and_then(|v| v.trim().parse().ok())
                .with_context(|| format!("no `{name}` in the heap profile"))
        };
        let goroutines = goroutines
            .lines()
            .find_map(|l| l.strip_prefix("goroutine profile: total "))
            .and_then(|v| v.trim().parse().ok())
            .context("no total in the goroutine profile")?;
        Ok(Self {
            heap_alloc: stat("HeapAlloc")?,
            heap_retained: stat("HeapSys")?.saturating_sub(stat("HeapReleased")?),
            goroutines,
        })
    }
}

/// A Go program's heap profile after a forced GC, in `net/http/pprof`'s text form
/// (`/debug/pprof/heap?gc=1&debug=1`: live objects and bytes per allocation stack, then
/// `runtime.MemStats`), from its debug socket `debug`.
pub fn heap_profile(debug: &Path) -> Result<String> {
    http_get_unix(debug, "/debug/pprof/heap?gc=1&debug=1")
}

/// `GET path` over HTTP/1.0 on a Unix socket; the body when the status is 200.
fn http_get_unix(socket: &Path, path: &str) -> Result<String> {
    use std::io::Read as _;
    let mut conn = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)
        .with_context(|| format!("reading {path} from {}", socket.display()))?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .with_context(|| format!("{path} on {}: no HTTP header in the answer", socket.display()))?;
    let status = head.lines().next().unwrap_or_default();
    ensure!(
        status.split(' ').nth(1) == Some("200"),
        "{path} on {}: {status}",
        socket.display()
    );
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lines_yield_container_ids() {
        let create = r#"2024-05-01 10:00:00.1 +0000 UTC k8s.io /containers/create {"id":"abc","image":"x","runtime":{"name":"io.containerd.runc.v2"}}"#;
        assert_eq!(event_container_ids(create), ["abc"]);
        let task = r#"2024-05-01 10:00:00.1 +0000 UTC default /tasks/exit {"container_id":"c1","id":"c1","pid":42,"exit_status":3}"#;
        assert_eq!(event_container_ids(task), ["c1"]);
        let image = r#"2024-05-01 10:00:00.1 +0000 UTC default /images/create {"name":"docker.io/x"}"#;
        assert!(event_container_ids(image).is_empty());
        assert!(event_container_ids("garbage").is_empty());
    }

    #[test]
    fn shim_socket_is_the_sha256_of_address_namespace_and_id() {
        let s = shim_socket(Path::new("/run/containerd/containerd.sock"), "default", "c1");
        let want = format!(
            "/run/containerd/s/{:x}",
            Sha256::digest(b"/run/containerd/containerd.sock/default/c1")
        );
        assert_eq!(s, PathBuf::from(want));
    }

    #[test]
    fn go_runtime_is_read_over_a_unix_socket_from_pprof_text() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("debug.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            use std::io::Read as _;
            for _ in 0..2 {
                let (mut conn, _) = listener.accept().unwrap();
                // The whole request head: the client may write it in more than one piece.
                let mut req = Vec::new();
                let mut buf = [0u8; 512];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = conn.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    req.extend_from_slice(&buf[..n]);
                }
                let req = String::from_utf8_lossy(&req).into_owned();
                let body = if req.starts_with("GET /debug/pprof/heap?gc=1&debug=1 ") {
                    "heap profile: 1: 2 [3: 4] @ heap/1048576\n# runtime.MemStats\n# Alloc = 10\n# HeapAlloc = 6653080\n# HeapSys = 40000000\n# HeapReleased = 9935360\n"
                } else {
                    assert!(req.starts_with("GET /debug/pprof/goroutine?debug=1 "), "{req}");
                    "goroutine profile: total 35\n1 @ 0x1\n"
                };
                write!(conn, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{body}").unwrap();
            }
        });
        let go = go_runtime(&sock).unwrap();
        server.join().unwrap();
        assert_eq!(
            go,
            GoRuntime {
                heap_alloc: 6_653_080,
                heap_retained: 30_064_640,
                goroutines: 35
            }
        );
        let err = GoRuntime::parse("# HeapAlloc = 1\n# HeapSys = 2\n", "goroutine profile: total 3").unwrap_err();
        assert!(format!("{err:#}").contains("no `HeapReleased`"), "{err:#}");
        let err = go_runtime(&dir.path().join("none.sock")).unwrap_err();
        assert!(format!("{err:#}").contains("connecting to"), "{err:#}");
    }

    #[test]
    fn socket_listeners_names_the_process_that_listens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let held = socket_listeners(&path);
        assert!(held.contains(&format!("{} (", std::process::id())), "{held}");
        drop(listener);
        assert_eq!(socket_listeners(&path), "no process listens on it");
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn config_names_both_runtimes_and_the_private_paths() {
        let layout = Layout {
            dir: PathBuf::from("/tmp/peapod-ctrd-x"),
            network: "net".into(),
            bridge: "br".into(),
            cgroup_root: "/peapod-ctrd-1-0".into(),
        };
        let config = config_toml(&layout, ContainerdVersion::new(1, 6, 20));
        assert!(
            config.starts_with("# Written") && config.contains("\nversion = 2\n"),
            "{config}"
        );
        assert!(
            config.contains(r#"runtime_type = "io.containerd.peapod.v2""#),
            "{config}"
        );
        assert!(!config.contains(PEAPOD_SHIM_HANDLER), "1.6 has no sandboxers: {config}");
        assert!(config.contains(r#"runtime_type = "io.containerd.runc.v2""#), "{config}");
        assert!(
            config.contains(r#"address = "/tmp/peapod-ctrd-x/containerd.sock""#),
            "{config}"
        );
        assert!(config.contains("restrict_oom_score_adj = true"), "{config}");
        let conflist: serde_json::Value = serde_json::from_str(&cni_conflist(&layout, "10.88.7.0/24", false)).unwrap();
        assert_eq!(conflist["plugins"][0]["bridge"], "br");
        assert_eq!(conflist["plugins"][0]["isGateway"], false);
        assert!(conflist["plugins"][0]["ipam"].get("routes").is_none());
        assert_eq!(conflist["plugins"][0]["ipam"]["dataDir"], "/tmp/peapod-ctrd-x/cni/ipam");
        assert_eq!(conflist["plugins"][1]["type"], "portmap");
        assert_eq!(conflist["plugins"][1]["capabilities"]["portMappings"], true);
        let routed: serde_json::Value = serde_json::from_str(&cni_conflist(&layout, "10.88.7.0/24", true)).unwrap();
        assert_eq!(routed["plugins"][0]["isGateway"], true);
        assert_eq!(routed["plugins"][0]["ipam"]["routes"][0]["dst"], "0.0.0.0/0");
    }

    #[test]
    fn config_v3_for_2x_has_the_cri_plugins_split_and_both_sandboxers() {
        let layout = Layout {
            dir: PathBuf::from("/tmp/peapod-ctrd-x"),
            network: "net".into(),
            bridge: "br".into(),
            cgroup_root: "/peapod-ctrd-1-0".into(),
        };
        for version in [ContainerdVersion::new(2, 1, 5), ContainerdVersion::new(2, 3, 4)] {
            let config = config_toml(&layout, version);
            assert!(config.contains("\nversion = 3\n"), "{config}");
            assert!(
                !config.contains("io.containerd.grpc.v1.cri\""),
                "1.x's CRI table: {config}"
            );
            assert!(
                config.contains("[plugins.'io.containerd.cri.v1.images'.pinned_images]\n    sandbox = \""),
                "{config}"
            );
            assert!(config.contains("bin_dirs = [\"/usr/lib/cni\"]"), "{config}");
            let runtimes = "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.";
            let shim = config
                .split(runtimes)
                .find(|t| t.starts_with("peapod-shim]"))
                .unwrap_or_else(|| panic!("no peapod-shim runtime: {config}"));
            assert!(
                shim.contains("runtime_type = \"io.containerd.peapod.v2\"") && shim.contains("sandboxer = \"shim\""),
                "{shim}"
            );
            let podsandbox = config.split(runtimes).find(|t| t.starts_with("peapod]")).unwrap();
            assert!(
                !podsandbox.contains("sandboxer"),
                "peapod keeps the default sandboxer: {podsandbox}"
            );
            assert!(
                podsandbox.contains("pod_annotations = [\"io.peapod.*\"]"),
                "{podsandbox}"
            );
        }
        let config = config_toml(&layout, ContainerdVersion::new(2, 0, 7));
        assert!(
            config.contains("bin_dir = \"/usr/lib/cni\"") && !config.contains("bin_dirs"),
            "{config}"
        );
    }

    #[test]
    fn runtimeclass_example_names_the_handlers_the_config_defines() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/runtimeclass.yaml");
        let text = fs::read_to_string(&path).unwrap();
        let handlers: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("handler: ")).collect();
        assert_eq!(handlers, [PEAPOD_HANDLER, PEAPOD_SHIM_HANDLER], "{}", path.display());
        let config = config_toml(
            &Layout {
                dir: PathBuf::from("/tmp/peapod-ctrd-x"),
                network: "net".into(),
                bridge: "br".into(),
                cgroup_root: "/peapod-ctrd-1-0".into(),
            },
            ContainerdVersion::new(2, 3, 4),
        );
        for h in handlers {
            assert!(
                config.contains(&format!("containerd.runtimes.{h}]")),
                "no runtime {h} in the config: {config}"
            );
        }
    }

    #[test]
    fn version_output_of_debian_and_release_builds_parses() {
        let debian = "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n";
        assert_eq!(
            ContainerdVersion::parse_version_output(debian).unwrap(),
            ContainerdVersion::new(1, 6, 20)
        );
        let release =
            "containerd github.com/containerd/containerd/v2 v2.3.4 db8809540e1a7a9da5d518876894933ff55692ab\n";
        let v = ContainerdVersion::parse_version_output(release).unwrap();
        assert_eq!(v, ContainerdVersion::new(2, 3, 4));
        assert_eq!(
            (v.to_string(), v.config_version(), v.is_2x()),
            ("2.3.4".into(), 3, true)
        );
        let rc = "containerd github.com/containerd/containerd/v2 v2.1.0-rc.1 abc";
        assert_eq!(
            ContainerdVersion::parse_version_output(rc).unwrap(),
            ContainerdVersion::new(2, 1, 0)
        );
        assert!(ContainerdVersion::new(2, 1, 5) < ContainerdVersion::new(2, 3, 4));
        assert!(ContainerdVersion::new(1, 6, 20) < ContainerdVersion::new(2, 0, 0));
        assert!(ContainerdVersion::parse_version_output("containerd").is_err());
        assert!(ContainerdVersion::parse_version_output("containerd x 2.3").is_err());
    }
}
