//! Control groups for a container, cgroup v1 and v2, through `cgroups-rs`'s controllers.
//!
//! `linux.resources` is written field by field by [`resources`] (runc's rules). On v2
//! `cpu.shares` becomes `cpu.weight` with the linear formula of runc 1.1 (`1 + (shares -
//! 2) * 9999 / 262142`, see [`shares_to_weight`]) and `memory.swap` (memory+swap in OCI)
//! becomes `memory.swap.max` (swap alone, [`resources::swap_v2`]).
//!
//! The host's cgroup mounts are read from `/proc/self/mountinfo` once per process
//! ([`hierarchy`]): that file grows with every mount on the host (a few per pod), and
//! reading it for each create made a create's cost grow with the number of pods. A
//! hierarchy mounted or moved after the process read them is not seen; the shim lives as
//! long as its pod, and hosts do not remount their cgroup hierarchies under running pods.
//!
//! Device rules (`linux.resources.devices`, with the OCI default devices appended as runc
//! does) become a [`DevicePolicy`] (see [`crate::devices`]): on v1 it is written to the
//! `devices` controller, starting with an `a` rule that resets the cgroup's exceptions; on
//! v2 it is an eBPF program attached to the container's cgroup, replacing the one attached
//! before. A container always gets one (a spec without rules gets deny-all plus the
//! defaults); an update without device rules leaves the current one in place.
//!
//! Statistics and OOM counts are read from the cgroup files directly (see [`CgroupFiles`])
//! so that one code path serves v1 and v2 and can be tested on fixture trees.

use std::fs;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cgroups_rs::fs::freezer::FreezerController;
use cgroups_rs::fs::hierarchies;
use cgroups_rs::fs::Hierarchy;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;

use crate::devices::{DevicePolicy, DeviceRuleError};
use crate::signal::SignalNumber;
use crate::sys::{self, SysError};

pub mod resources;

/// A cgroup operation that failed; `path` is relative to the hierarchy root.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Creating the cgroup (directories in every hierarchy) failed.
    #[error("create cgroup {path}: {source}")]
    Create {
        /// The cgroup.
        path: String,
        /// Cause.
        #[source]
        source: Box<cgroups_rs::fs::error::Error>,
    },
    /// Applying `linux.resources` failed (a value the kernel refused).
    #[error("apply linux.resources to cgroup {path}: {source}")]
    Apply {
        /// The cgroup.
        path: String,
        /// Cause.
        #[source]
        source: Box<resources::ResourceError>,
    },
    /// `linux.resources.devices` cannot be applied as given.
    #[error("device rules for cgroup {path}: {source}")]
    DeviceRules {
        /// The cgroup.
        path: String,
        /// Which rule, and why.
        #[source]
        source: DeviceRuleError,
    },
    /// Loading, attaching or replacing the v2 device program failed.
    #[error("device program of cgroup {path}: {source}")]
    DeviceProgram {
        /// The cgroup.
        path: String,
        /// The bpf(2) operation and errno.
        #[source]
        source: SysError,
    },
    /// Moving a process into the cgroup failed.
    #[error("add pid {pid} to cgroup {path}: {source}")]
    AddProc {
        /// The cgroup.
        path: String,
        /// The process.
        pid: i32,
        /// Cause.
        #[source]
        source: Box<cgroups_rs::fs::error::Error>,
    },
    /// The cgroup to join is not a plain path below the cgroup root (empty, or with `..`).
    #[error("cgroup {path:?}: not a path below the cgroup root")]
    InvalidPath {
        /// The path as given.
        path: String,
    },
    /// The cgroup to join exists in no hierarchy (it is never created by joining).
    #[error("cgroup {path} does not exist under {}", root.display())]
    Missing {
        /// The cgroup.
        path: String,
        /// The cgroup root searched (`/sys/fs/cgroup`).
        root: PathBuf,
    },
    /// Writing a pid to a cgroup's `cgroup.procs` failed.
    #[error("add pid {pid} to cgroup {path}: write {}", file.display())]
    Join {
        /// The cgroup.
        path: String,
        /// The process.
        pid: i32,
        /// The `cgroup.procs` file written.
        file: PathBuf,
        /// Cause (e.g. ENOSPC for a v1 cpuset cgroup without `cpuset.cpus`, EBUSY for a v2
        /// cgroup that has controllers enabled for its children).
        #[source]
        source: std::io::Error,
    },
    /// Freezing or thawing failed.
    #[error("{} cgroup {path}: {source}", if *frozen { "freeze" } else { "thaw" })]
    Freeze {
        /// The cgroup.
        path: String,
        /// True to freeze, false to thaw.
        frozen: bool,
        /// Cause.
        #[source]
        source: Box<cgroups_rs::fs::error::Error>,
    },
    /// The cgroup lacks the controller an operation needs (not mounted on v1).
    #[error("cgroup {path}: no {controller} controller")]
    NoController {
        /// The cgroup.
        path: String,
        /// The controller, e.g. `freezer`.
        controller: &'static str,
    },
    /// Removing the cgroup failed (processes still inside it after the timeout).
    #[error("remove cgroup {path}: {source}")]
    Remove {
        /// The cgroup.
        path: String,
        /// Cause.
        #[source]
        source: Box<cgroups_rs::fs::error::Error>,
    },
    /// A cgroup file could not be read or parsed.
    #[error("read {file}: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Setting up an OOM notification failed.
    #[error("watch OOM events of cgroup {path}: {source}")]
    Watch {
        /// The cgroup.
        path: String,
        /// Cause.
        #[source]
        source: nix::Error,
    },
}

type Result<T> = std::result::Result<T, CgroupError>;

/// Converts cgroup v1 `cpu.shares` (2..=262144, default 1024) to cgroup v2 `cpu.weight`
/// (1..=10000, default 100) as runc 1.1 and cgroups-rs do: `1 + (shares - 2) * 9999 /
/// 262142`; 0 means unset. So 1024 shares become weight 39, 2 become 1, 262144 become 10000.
pub fn shares_to_weight(shares: u64) -> u64 {
    match shares {
        0 => 0,
        1..=2 => 1,
        s if s >= 262_144 => 10_000,
        s => 1 + (s - 2) * 9999 / 262_142,
    }
}

/// True when `/sys/fs/cgroup` is the cgroup v2 unified hierarchy.
pub fn is_v2() -> bool {
    hierarchies::is_cgroup2_unified_mode()
}

/// The host's cgroup hierarchies for cgroups-rs: v2's fixed root, or the v1 mounts read
/// from `/proc/self/mountinfo` the first time and kept for the life of the process (see
/// the module's doc). cgroups-rs's own `hierarchies::auto()` reads that file on each call.
pub fn hierarchy() -> Box<dyn Hierarchy> {
    static V1: std::sync::OnceLock<hierarchies::V1> = std::sync::OnceLock::new();
    if is_v2() {
        Box::new(hierarchies::V2::new())
    } else {
        Box::new(V1.get_or_init(hierarchies::V1::new).clone())
    }
}

/// A container's cgroup (one directory per v1 hierarchy, or one on v2).
pub struct Cgroup {
    path: String,
    cg: cgroups_rs::fs::Cgroup,
    files: CgroupFiles,
}

impl std::fmt::Debug for Cgroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cgroup")
            .field("path", &self.path)
            .field("v2", &self.files.v2)
            .finish()
    }
}

impl Cgroup {
    /// Creates the cgroup at `path` (relative to each hierarchy's root; parents are created
    /// as needed) and applies `resources`. On error nothing created here is left: the
    /// cgroup and its ancestors up to `owned_from` ([`first_missing_ancestor`], taken
    /// before the call) are removed again.
    pub fn create(path: &str, resources: Option<&LinuxResources>, owned_from: Option<&str>) -> Result<Self> {
        let cg = cgroups_rs::fs::Cgroup::load(hierarchy(), path);
        if let Err(source) = cg.create() {
            // Creation stops at the first hierarchy that fails: undo the others.
            if cg.delete().is_ok() {
                remove_owned_ancestors(path, owned_from);
            }
            return Err(CgroupError::Create {
                path: path.to_string(),
                source: Box::new(source),
            });
        }
        let mut me = Self::load(path, cg);
        if let Some(resources) = resources {
            if let Err(e) = me.update(resources) {
                if me.cg.delete().is_ok() {
                    remove_owned_ancestors(path, owned_from);
                }
                return Err(e);
            }
        }
        Ok(me)
    }

    /// Opens an existing cgroup at `path` (for `delete` from another process).
    pub fn open(path: &str) -> Result<Self> {
        Ok(Self::load(path, cgroups_rs::fs::Cgroup::load(hierarchy(), path)))
    }

    fn load(path: &str, cg: cgroups_rs::fs::Cgroup) -> Self {
        Self {
            path: path.to_string(),
            cg,
            files: CgroupFiles::host(path),
        }
    }

    /// The path relative to each hierarchy's root, e.g. `peapod/c1`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// True on the cgroup v2 unified hierarchy.
    pub fn is_v2(&self) -> bool {
        self.files.v2
    }

    /// The files behind this cgroup, for reading statistics.
    pub fn files(&self) -> &CgroupFiles {
        &self.files
    }

    /// Applies `resources` (OCI `linux.resources`) to the running cgroup. Device rules, when
    /// present (an empty list included), replace the cgroup's device policy: the rules then
    /// the OCI default devices ([`DevicePolicy::from_oci`]), on v1 through `devices.allow`/
    /// `devices.deny`, on v2 as an eBPF program ([`Cgroup::set_device_program`]). Rules are
    /// checked before anything is written.
    pub fn update(&mut self, resources: &LinuxResources) -> Result<()> {
        let policy = resources
            .devices()
            .as_ref()
            .map(|rules| DevicePolicy::from_oci(rules))
            .transpose()
            .map_err(|source| CgroupError::DeviceRules {
                path: self.path.clone(),
                source,
            })?;
        let mut r = resources.clone();
        r.set_devices(match &policy {
            Some(p) if !self.files.v2 => Some(p.v1_rules()),
            _ => None,
        });
        resources::apply(&self.cg, &self.files, &r).map_err(|source| CgroupError::Apply {
            path: self.path.clone(),
            source: Box::new(source),
        })?;
        match policy {
            Some(p) if self.files.v2 => self.set_device_program(&p),
            _ => Ok(()),
        }
    }

    /// On v2, loads `policy`'s program and attaches it to this cgroup, then detaches the
    /// device programs attached to it before (runc's `LoadAttachCgroupDeviceFilter` does the
    /// same): while both are attached both apply, so access is never wider than either
    /// policy, and no old program stays attached. The kernel drops the programs with the
    /// cgroup. Needs CAP_SYS_ADMIN; errors name the bpf(2) operation.
    pub fn set_device_program(&self, policy: &DevicePolicy) -> Result<()> {
        let err = |source| CgroupError::DeviceProgram {
            path: self.path.clone(),
            source,
        };
        let dir = self.files.root.join(&self.path);
        let cgroup = fs::File::open(&dir).map_err(|source| {
            err(SysError {
                op: format!("open {}", dir.display()),
                source,
            })
        })?;
        let old = sys::cgroup_device_prog_ids(cgroup.as_fd()).map_err(err)?;
        let prog = sys::load_cgroup_device_prog(&policy.program(), "Apache").map_err(err)?;
        sys::attach_cgroup_device_prog(cgroup.as_fd(), prog.as_fd()).map_err(err)?;
        for id in old {
            let old_prog = match sys::bpf_prog_fd_by_id(id) {
                Ok(fd) => fd,
                // Detached and freed meanwhile.
                Err(e) if e.source.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(err(e)),
            };
            match sys::detach_cgroup_device_prog(cgroup.as_fd(), old_prog.as_fd()) {
                Ok(()) => {}
                Err(e) if e.source.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(err(e)),
            }
        }
        Ok(())
    }

    /// Ids of the device programs attached to this cgroup (v2; empty on v1), for tests
    /// and diagnostics.
    pub fn device_program_ids(&self) -> Result<Vec<u32>> {
        if !self.files.v2 {
            return Ok(Vec::new());
        }
        let dir = self.files.root.join(&self.path);
        let err = |source| CgroupError::DeviceProgram {
            path: self.path.clone(),
            source,
        };
        let cgroup = fs::File::open(&dir).map_err(|source| {
            err(SysError {
                op: format!("open {}", dir.display()),
                source,
            })
        })?;
        sys::cgroup_device_prog_ids(cgroup.as_fd()).map_err(err)
    }

    /// Moves process `pid` (all its threads) into the cgroup.
    pub fn add_proc(&mut self, pid: Pid) -> Result<()> {
        let tgid = cgroups_rs::CgroupPid::from(u64::try_from(pid.as_raw()).unwrap_or_default());
        self.cg.add_task_by_tgid(tgid).map_err(|source| CgroupError::AddProc {
            path: self.path.clone(),
            pid: pid.as_raw(),
            source: Box::new(source),
        })
    }

    /// The cgroup's directory on a v2 host (for `CLONE_INTO_CGROUP`); `None` on v1.
    pub fn v2_dir(&self) -> Option<PathBuf> {
        self.files.v2.then(|| self.files.root.join(&self.path))
    }

    /// On cgroup v1, the files a single-threaded process writes `0` to in order to move
    /// itself in: `tasks` in every hierarchy that has the cgroup (`cgroup.procs` where a
    /// hierarchy is v2, such as a hybrid host's unified one). Empty on a v2 host, where a
    /// thread cannot move itself across domains and [`Cgroup::add_proc`] is the way in.
    ///
    /// Why a process should move itself: see [`crate::channel::ToChild::EnterCgroup`].
    pub fn self_attach_files(&self) -> Vec<PathBuf> {
        if self.files.v2 {
            return Vec::new();
        }
        hierarchy_dirs(&self.path)
            .into_iter()
            .map(|dir| {
                let tasks = dir.join("tasks");
                if tasks.exists() {
                    tasks
                } else {
                    dir.join("cgroup.procs")
                }
            })
            .collect()
    }

    /// The processes in the cgroup (`cgroup.procs`), sorted, without duplicates.
    pub fn procs(&self) -> Vec<Pid> {
        let mut pids: Vec<Pid> = self
            .cg
            .procs()
            .into_iter()
            .filter_map(|p| i32::try_from(p.pid).ok())
            .map(Pid::from_raw)
            .collect();
        pids.sort();
        pids.dedup();
        pids
    }

    /// Freezes (pause) or thaws (resume) every process: v1 `freezer.state`, v2
    /// `cgroup.freeze`. Freezing returns once the kernel reports the cgroup frozen (v1
    /// `FROZEN`, v2 `frozen 1` in `cgroup.events`), up to 2 s, as runc waits.
    pub fn freeze(&self, frozen: bool) -> Result<()> {
        let freezer = self
            .cg
            .controller_of::<FreezerController>()
            .ok_or_else(|| CgroupError::NoController {
                path: self.path.clone(),
                controller: "freezer",
            })?;
        let done = if frozen { freezer.freeze() } else { freezer.thaw() };
        done.map_err(|source| CgroupError::Freeze {
            path: self.path.clone(),
            frozen,
            source: Box::new(source),
        })?;
        if frozen {
            let deadline = Instant::now() + Duration::from_secs(2);
            while !self.files.is_frozen() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(())
    }

    /// Sends `signal` to every process in the cgroup. SIGKILL on v2 uses `cgroup.kill`
    /// (atomic, 5.14+); otherwise the cgroup is frozen, signalled process by process, and
    /// thawed, so no process can fork away in between (runc's signalAllProcesses).
    /// Processes that exit meanwhile (ESRCH) are not an error. `signal` may be a real-time
    /// one.
    pub fn signal_all(&self, signal: impl Into<SignalNumber>) -> Result<()> {
        let signal = signal.into();
        if self.files.v2 && signal == Signal::SIGKILL && self.cg.kill().is_ok() {
            return Ok(());
        }
        let frozen = self.freeze(true).is_ok();
        for pid in self.procs() {
            let _ = sys::kill(pid, signal);
        }
        if frozen {
            self.freeze(false)?;
        }
        Ok(())
    }

    /// Removes the cgroup, waiting up to `timeout` for exiting processes to leave, then
    /// its ancestors up to and including `owned_from` (the first one peapod created, see
    /// [`first_missing_ancestor`]) while they are empty. Processes must have been killed
    /// and reaped by the caller.
    pub fn destroy(&self, timeout: Duration, owned_from: Option<&str>) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.cg.delete() {
                Ok(()) => {
                    remove_owned_ancestors(&self.path, owned_from);
                    return Ok(());
                }
                Err(source) if Instant::now() >= deadline => {
                    return Err(CgroupError::Remove {
                        path: self.path.clone(),
                        source: Box::new(source),
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    /// True while the cgroup directory exists.
    pub fn exists(&self) -> bool {
        self.cg.exists()
    }

    /// Opens a notifier that becomes readable when the kernel OOM-kills a process here.
    pub fn watch_oom(&self) -> Result<OomWatcher> {
        OomWatcher::new(&self.files).map_err(|source| CgroupError::Watch {
            path: self.path.clone(),
            source,
        })
    }
}

/// The shortest prefix of `path` (relative, `a/b/c`) that does not exist yet, i.e. the
/// topmost directory that creating `path` will make; `None` when `path` exists. Checked
/// in the memory hierarchy on v1 (every hierarchy is created alike).
pub fn first_missing_ancestor(path: &str) -> Option<String> {
    let files = |p: &str| CgroupFiles::host(p).file("memory", "");
    let mut prefix = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(part);
        if !files(&prefix).exists() {
            return Some(prefix);
        }
    }
    None
}

// Ancestors of `path` from its parent up to `owned_from`, each removed only while empty.
// Plain rmdir(2), never cgroups-rs's delete: that one removes child cgroups recursively,
// and a sibling container's cgroup may exist, still empty, while it is being set up.
fn remove_owned_ancestors(path: &str, owned_from: Option<&str>) {
    let Some(top) = owned_from else { return };
    if !path.starts_with(top) {
        return;
    }
    let mut current = path;
    while let Some((parent, _)) = current.rsplit_once('/') {
        if parent.len() < top.len() || !rmdir_everywhere(parent) {
            return;
        }
        current = parent;
    }
}

/// Removes cgroup `path` and its ancestors up to `owned_from` (those peapod created),
/// each only while it has no child cgroups; retries for up to `timeout` while exiting
/// processes leave `path`. Returns whether `path` itself is gone.
pub fn remove_owned(path: &str, owned_from: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if rmdir_everywhere(path) || hierarchy_dirs(path).is_empty() {
            remove_owned_ancestors(path, Some(owned_from));
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The directories of cgroup `path` (relative) in every hierarchy that has it.
fn hierarchy_dirs(path: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if is_v2() {
        return vec![root.join(path)];
    }
    fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        // cpu,cpuacct style symlinks point at a hierarchy that is listed anyway.
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path().join(path))
        .filter(|p| p.is_dir())
        .collect()
}

/// Removes the empty cgroup `path` from every hierarchy with plain rmdir(2); false (and
/// nothing removed) when it has child cgroups anywhere, or when an rmdir fails.
pub fn rmdir_everywhere(path: &str) -> bool {
    let dirs = hierarchy_dirs(path);
    let has_children = dirs.iter().any(|d| {
        fs::read_dir(d)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_type().is_ok_and(|t| t.is_dir()))
    });
    if has_children {
        return false;
    }
    dirs.iter().all(|d| fs::remove_dir(d).is_ok() || !d.exists())
}

/// Resource usage of a cgroup, the same on v1 and v2.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// CPU time used by all processes, in nanoseconds (v1 `cpuacct.usage`, v2 `cpu.stat`
    /// `usage_usec` × 1000).
    pub cpu_usage_ns: u64,
    /// Memory in use, bytes (v1 `memory.usage_in_bytes`, v2 `memory.current`).
    pub memory_usage: u64,
    /// Memory limit in bytes, `None` when unlimited.
    pub memory_limit: Option<u64>,
    /// Peak memory use in bytes (v1 `memory.max_usage_in_bytes`, v2 `memory.peak`; 0 on
    /// v2 kernels before 5.19).
    pub memory_max_usage: u64,
    /// Processes (threads count too on v1) in the cgroup (`pids.current`).
    pub pids_current: u64,
    /// Process limit, `None` when unlimited (`pids.max`).
    pub pids_limit: Option<u64>,
    /// Processes killed by the OOM killer (`oom_kill` in v1 `memory.oom_control`, v2
    /// `memory.events`).
    pub oom_kills: u64,
}

/// Where a cgroup's files live: per controller on v1 (`<root>/<controller>/<path>`), one
/// directory on v2 (`<root>/<path>`). The root is `/sys/fs/cgroup` on a host; tests point
/// it at a fixture tree.
#[derive(Debug, Clone)]
pub struct CgroupFiles {
    root: PathBuf,
    path: String,
    v2: bool,
}

impl CgroupFiles {
    /// The host's files for the cgroup at `path` (relative to the hierarchy roots, with or
    /// without a leading `/`: `a/b` and `/a/b` are the same cgroup).
    pub fn host(path: &str) -> Self {
        Self::new("/sys/fs/cgroup", path, is_v2())
    }

    /// Files under `root` (a cgroup mount, or a fixture) for the cgroup at `path`, as in
    /// [`CgroupFiles::host`].
    pub fn new(root: impl Into<PathBuf>, path: &str, v2: bool) -> Self {
        Self {
            root: root.into(),
            // An absolute path would replace the root in `Path::join`.
            path: path.trim_start_matches('/').to_string(),
            v2,
        }
    }

    /// Full path of `file` of `controller` (the controller is ignored on v2).
    pub fn file(&self, controller: &str, file: &str) -> PathBuf {
        if self.v2 {
            self.root.join(&self.path).join(file)
        } else {
            self.root.join(controller).join(&self.path).join(file)
        }
    }

    fn read(&self, controller: &str, file: &str) -> Result<String> {
        let path = self.file(controller, file);
        fs::read_to_string(&path).map_err(|source| CgroupError::Read { file: path, source })
    }

    fn read_u64(&self, controller: &str, file: &str) -> Result<u64> {
        let path = self.file(controller, file);
        let text = self.read(controller, file)?;
        text.trim().parse().map_err(|_| CgroupError::Read {
            file: path,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not a number: {text:?}")),
        })
    }

    /// A limit file: `max` (v2) or a value at or above 2^62 (v1's page-rounded
    /// `PAGE_COUNTER_MAX`) means unlimited.
    fn read_limit(&self, controller: &str, file: &str) -> Result<Option<u64>> {
        let text = self.read(controller, file)?;
        let t = text.trim();
        if t == "max" {
            return Ok(None);
        }
        Ok(t.parse::<u64>().ok().filter(|v| *v < (1 << 62)))
    }

    /// True when the kernel reports every process frozen.
    pub fn is_frozen(&self) -> bool {
        if self.v2 {
            self.read("", "cgroup.events")
                .is_ok_and(|t| keyed_value(&t, "frozen") == Some(1))
        } else {
            self.read("freezer", "freezer.state")
                .is_ok_and(|t| t.trim() == "FROZEN")
        }
    }

    /// The `oom_kill` count; 0 if the kernel does not report it.
    pub fn oom_kills(&self) -> Result<u64> {
        let text = if self.v2 {
            self.read("memory", "memory.events")?
        } else {
            self.read("memory", "memory.oom_control")?
        };
        Ok(keyed_value(&text, "oom_kill").unwrap_or(0))
    }

    /// Reads [`Stats`].
    pub fn stats(&self) -> Result<Stats> {
        let cpu_usage_ns = if self.v2 {
            keyed_value(&self.read("cpu", "cpu.stat")?, "usage_usec").unwrap_or(0) * 1000
        } else {
            self.read_u64("cpuacct", "cpuacct.usage")?
        };
        let (usage, limit, peak) = if self.v2 {
            ("memory.current", "memory.max", "memory.peak")
        } else {
            (
                "memory.usage_in_bytes",
                "memory.limit_in_bytes",
                "memory.max_usage_in_bytes",
            )
        };
        Ok(Stats {
            cpu_usage_ns,
            memory_usage: self.read_u64("memory", usage)?,
            memory_limit: self.read_limit("memory", limit)?,
            memory_max_usage: self.read_u64("memory", peak).unwrap_or(0),
            pids_current: self.read_u64("pids", "pids.current")?,
            pids_limit: self.read_limit("pids", "pids.max")?,
            oom_kills: self.oom_kills()?,
        })
    }
}

/// One line of a PSI file (`some` or `full`): the share of wall time tasks stalled on
/// the resource, in percent, averaged over 10, 60 and 300 s, and the total stall time,
/// µs (kernel `Documentation/accounting/psi.rst`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PressureLine {
    /// % over the last 10 s.
    pub avg10: f64,
    /// % over the last 60 s.
    pub avg60: f64,
    /// % over the last 300 s.
    pub avg300: f64,
    /// Total stall time, µs.
    pub total: u64,
}

/// A cgroup v2 `<resource>.pressure` file: `some` (at least one task stalled) and `full`
/// (all non-idle tasks stalled; absent from `cpu.pressure` before Linux 5.13).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pressure {
    /// The `some` line.
    pub some: PressureLine,
    /// The `full` line, when the kernel writes one.
    pub full: Option<PressureLine>,
}

impl Pressure {
    /// Parses a PSI file's text; `None` when it has no well-formed `some` line.
    pub fn parse(text: &str) -> Option<Pressure> {
        let line = |kind: &str| -> Option<PressureLine> {
            let rest = text.lines().find_map(|l| l.strip_prefix(kind)?.strip_prefix(' '))?;
            let mut p = PressureLine::default();
            for field in rest.split_whitespace() {
                let (k, v) = field.split_once('=')?;
                match k {
                    "avg10" => p.avg10 = v.parse().ok()?,
                    "avg60" => p.avg60 = v.parse().ok()?,
                    "avg300" => p.avg300 = v.parse().ok()?,
                    "total" => p.total = v.parse().ok()?,
                    _ => {}
                }
            }
            Some(p)
        };
        Some(Pressure {
            some: line("some")?,
            full: line("full"),
        })
    }
}

/// A cgroup's pressure stall information on cgroup v2: CPU, memory and IO. Each is `None`
/// on v1, or where the kernel has no PSI (`CONFIG_PSI`, `psi=0`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Psi {
    /// `cpu.pressure`.
    pub cpu: Option<Pressure>,
    /// `memory.pressure`.
    pub memory: Option<Pressure>,
    /// `io.pressure`.
    pub io: Option<Pressure>,
}

impl CgroupFiles {
    /// Reads [`Psi`]: all `None` on v1; a file that is missing or unreadable (no PSI in
    /// this kernel) is `None`.
    pub fn pressure(&self) -> Psi {
        if !self.v2 {
            return Psi::default();
        }
        let read = |f: &str| self.read("", f).ok().as_deref().and_then(Pressure::parse);
        Psi {
            cpu: read("cpu.pressure"),
            memory: read("memory.pressure"),
            io: read("io.pressure"),
        }
    }
}

/// `value` of the line `key value` in a flat-keyed cgroup file.
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Becomes readable when the cgroup sees an OOM kill.
///
/// v1: an eventfd registered in `cgroup.event_control` for `memory.oom_control` (the
/// kernel's memory-cgroup notification API). v2: an inotify watch on `memory.events`,
/// whose `oom_kill` counter is compared on each change.
pub struct OomWatcher {
    fd: OwnedFd,
    files: CgroupFiles,
    seen: u64,
    _oom_control: Option<fs::File>,
}

impl OomWatcher {
    fn new(files: &CgroupFiles) -> std::result::Result<Self, nix::Error> {
        let seen = files.oom_kills().unwrap_or(0);
        if files.v2 {
            use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
            let ino = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)?;
            ino.add_watch(&files.file("memory", "memory.events"), AddWatchFlags::IN_MODIFY)?;
            return Ok(Self {
                fd: OwnedFd::from(ino),
                files: files.clone(),
                seen,
                _oom_control: None,
            });
        }
        use nix::sys::eventfd::{EfdFlags, EventFd};
        use std::os::fd::AsRawFd;
        let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        let oom_control = fs::File::open(files.file("memory", "memory.oom_control")).map_err(io_to_nix)?;
        let line = format!("{} {}", efd.as_fd().as_raw_fd(), oom_control.as_raw_fd());
        fs::write(files.file("memory", "cgroup.event_control"), line).map_err(io_to_nix)?;
        Ok(Self {
            fd: OwnedFd::from(efd),
            files: files.clone(),
            seen,
            _oom_control: Some(oom_control),
        })
    }

    /// Drains pending notifications; returns how many OOM kills happened since the last
    /// call (0 on a spurious wake-up or when the cgroup is gone).
    pub fn take(&mut self) -> u64 {
        let mut buf = [0u8; 4096];
        while nix::unistd::read(&self.fd, &mut buf).is_ok_and(|n| n > 0) {}
        let now = self.files.oom_kills().unwrap_or(self.seen);
        let new = now.saturating_sub(self.seen);
        self.seen = now;
        new
    }

    /// Blocks up to `timeout` for the next OOM kill; returns how many happened (0 on timeout).
    pub fn wait(&mut self, timeout: Duration) -> u64 {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.take();
            if n > 0 {
                return n;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return 0;
            }
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(ms));
        }
    }
}

impl AsFd for OomWatcher {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// For event loops that register raw fds (tokio's `AsyncFd`): readable as [`AsFd`] says.
impl std::os::fd::AsRawFd for OomWatcher {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

fn io_to_nix(e: std::io::Error) -> nix::Error {
    nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// True if `path` (relative) exists in any hierarchy: used by tests to prove removal.
pub fn exists_anywhere(path: &str) -> bool {
    let root = Path::new("/sys/fs/cgroup");
    if is_v2() {
        return root.join(path).exists();
    }
    fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.path().join(path).exists())
}

/// Moves process `pid` (all its threads) into the existing cgroup `path`, as containerd's
/// runc shim does with its `ShimCgroup` option (`cgroup1.Load` + `AddProc`, or
/// `cgroup2.Load` + `AddProc`): on cgroup v2 (`v2`) the cgroup `<root>/<path>`; on v1 the
/// cgroup in every v1 hierarchy mounted under `root` (each directory there: `cpu`,
/// `memory`, the named `systemd` one...) that has it, skipping hierarchies without it as
/// `cgroup1.Load` does. A hybrid host's cgroup2 mount (`unified`, recognised by its
/// `cgroup.controllers`) is left alone, as `cgroup1` leaves it. `path` is relative to the
/// root, with or without a leading `/` (`/containerd/shim`). Nothing is created. Returns
/// the `cgroup.procs` files written.
///
/// Errors: [`CgroupError::InvalidPath`] for an empty path or one with `..`;
/// [`CgroupError::Missing`] when the cgroup exists nowhere; [`CgroupError::Join`] naming
/// the file whose write failed (the process is then in the hierarchies before it).
pub fn join_existing(root: &Path, path: &str, v2: bool, pid: Pid) -> Result<Vec<PathBuf>> {
    let rel = Path::new(path.trim_start_matches('/'));
    let plain = rel.components().all(|c| matches!(c, std::path::Component::Normal(_)));
    if rel.as_os_str().is_empty() || !plain {
        return Err(CgroupError::InvalidPath { path: path.to_string() });
    }
    let dirs: Vec<PathBuf> = if v2 {
        vec![root.join(rel)]
    } else {
        let mut hierarchies: Vec<PathBuf> = fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            // cpu,cpuacct style symlinks point at a hierarchy that is listed anyway.
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .filter(|h| !h.join("cgroup.controllers").exists())
            .collect();
        hierarchies.sort();
        hierarchies.into_iter().map(|h| h.join(rel)).collect()
    };
    let dirs: Vec<PathBuf> = dirs.into_iter().filter(|d| d.is_dir()).collect();
    if dirs.is_empty() {
        return Err(CgroupError::Missing {
            path: path.to_string(),
            root: root.to_path_buf(),
        });
    }
    let mut written = Vec::with_capacity(dirs.len());
    for dir in dirs {
        let file = dir.join("cgroup.procs");
        fs::write(&file, pid.as_raw().to_string()).map_err(|source| CgroupError::Join {
            path: path.to_string(),
            pid: pid.as_raw(),
            file: file.clone(),
            source,
        })?;
        written.push(file);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_convert_like_runc() {
        assert_eq!(shares_to_weight(0), 0);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(102), 4);
    }

    fn fixture(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let p = dir.path().join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, content).unwrap();
        }
        dir
    }

    #[test]
    fn joining_writes_the_pid_in_every_v1_hierarchy_that_has_the_cgroup() {
        let dir = fixture(&[
            ("cpu/containerd/shim/cgroup.procs", ""),
            ("memory/containerd/shim/cgroup.procs", ""),
            ("systemd/containerd/shim/cgroup.procs", ""),
            ("pids/other/cgroup.procs", ""),
            // A hybrid host's cgroup2 mount.
            ("unified/cgroup.controllers", "cpu memory\n"),
            ("unified/containerd/shim/cgroup.procs", ""),
        ]);
        let written = join_existing(dir.path(), "/containerd/shim", false, Pid::from_raw(42)).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|f| f.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "cpu/containerd/shim/cgroup.procs",
                "memory/containerd/shim/cgroup.procs",
                "systemd/containerd/shim/cgroup.procs"
            ]
        );
        for f in &written {
            assert_eq!(fs::read_to_string(f).unwrap(), "42");
        }
        // No hierarchy gains the cgroup; the unified one is not written.
        assert!(!dir.path().join("pids/containerd").exists());
        assert_eq!(
            fs::read_to_string(dir.path().join("unified/containerd/shim/cgroup.procs")).unwrap(),
            ""
        );
    }

    #[test]
    fn joining_on_v2_writes_the_unified_cgroup() {
        let dir = fixture(&[("containerd/shim/cgroup.procs", "")]);
        let written = join_existing(dir.path(), "containerd/shim", true, Pid::from_raw(7)).unwrap();
        assert_eq!(written, [dir.path().join("containerd/shim/cgroup.procs")]);
        assert_eq!(fs::read_to_string(&written[0]).unwrap(), "7");
    }

    #[test]
    fn joining_a_missing_or_escaping_cgroup_fails_naming_it() {
        let dir = fixture(&[("cpu/x/cgroup.procs", "")]);
        let err = join_existing(dir.path(), "/nope", false, Pid::from_raw(1)).unwrap_err();
        assert!(matches!(err, CgroupError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("/nope"), "{err}");
        let err = join_existing(dir.path(), "/nope", true, Pid::from_raw(1)).unwrap_err();
        assert!(matches!(err, CgroupError::Missing { .. }), "{err}");
        for bad in ["", "/", "../x", "/a/../../b"] {
            let err = join_existing(dir.path(), bad, false, Pid::from_raw(1)).unwrap_err();
            assert!(matches!(err, CgroupError::InvalidPath { .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn stats_read_v2_files() {
        let dir = fixture(&[
            ("pod/c/cpu.stat", "usage_usec 1500\nuser_usec 1000\n"),
            ("pod/c/memory.current", "4096\n"),
            ("pod/c/memory.max", "max\n"),
            ("pod/c/memory.peak", "8192\n"),
            ("pod/c/pids.current", "3\n"),
            ("pod/c/pids.max", "64\n"),
            ("pod/c/memory.events", "low 0\nhigh 0\nmax 4\noom 2\noom_kill 1\n"),
        ]);
        let s = CgroupFiles::new(dir.path(), "pod/c", true).stats().unwrap();
        assert_eq!(
            s,
            Stats {
                cpu_usage_ns: 1_500_000,
                memory_usage: 4096,
                memory_limit: None,
                memory_max_usage: 8192,
                pids_current: 3,
                pids_limit: Some(64),
                oom_kills: 1,
            }
        );
    }

    #[test]
    fn pressure_reads_v2_psi_files_and_nothing_on_v1() {
        let dir = fixture(&[
            (
                "pod/cpu.pressure",
                "some avg10=1.50 avg60=0.25 avg300=0.00 total=12345\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=7\n",
            ),
            (
                "pod/memory.pressure",
                "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
            ),
            ("pod/io.pressure", "garbage\n"),
        ]);
        let psi = CgroupFiles::new(dir.path(), "pod", true).pressure();
        let cpu = psi.cpu.unwrap();
        assert_eq!((cpu.some.avg10, cpu.some.avg60, cpu.some.total), (1.5, 0.25, 12345));
        assert_eq!(cpu.full.unwrap().total, 7);
        assert_eq!(psi.memory.unwrap().full, None);
        assert_eq!(psi.io, None, "a malformed file is no pressure");
        assert_eq!(CgroupFiles::new(dir.path(), "pod", false).pressure(), Psi::default());
        assert_eq!(CgroupFiles::new(dir.path(), "gone", true).pressure(), Psi::default());
    }

    #[test]
    fn stats_read_v1_files() {
        let dir = fixture(&[
            ("cpuacct/c/cpuacct.usage", "123\n"),
            ("memory/c/memory.usage_in_bytes", "10\n"),
            ("memory/c/memory.limit_in_bytes", "9223372036854771712\n"),
            ("memory/c/memory.max_usage_in_bytes", "20\n"),
            (
                "memory/c/memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
            ),
            ("pids/c/pids.current", "1\n"),
            ("pids/c/pids.max", "max\n"),
        ]);
        let s = CgroupFiles::new(dir.path(), "c", false).stats().unwrap();
        assert_eq!(s.cpu_usage_ns, 123);
        assert_eq!(s.memory_limit, None);
        assert_eq!(s.memory_max_usage, 20);
        assert_eq!(s.pids_limit, None);
        assert_eq!(s.oom_kills, 3);
    }

    #[test]
    fn missing_file_names_the_path() {
        let dir = fixture(&[]);
        let err = CgroupFiles::new(dir.path(), "x", true).stats().unwrap_err();
        assert!(err.to_string().contains("x/cpu.stat"), "{err}");
    }
}
