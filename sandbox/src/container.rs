//! One container and its OCI lifecycle (OCI runtime spec, "Lifecycle" and "Operations"):
//! `create` → `start` → (`kill`, `exec`, `pause`/`resume`, `update`, `stats`) → `wait` →
//! `delete`.
//!
//! Every resource is recorded in `<state_root>/<id>/state.json` before it is created
//! (cgroup path, rootfs mounts, pid), so that `delete` — from this process or another one,
//! such as `containerd-shim-peapod-v2 delete` after a shim crash — undoes exactly what
//! exists, and a failed `create` leaves nothing behind.
//!
//! Container init and exec'd processes are children of the calling process
//! (`CLONE_PARENT`). The caller must be their only waiter: either it calls [`Container::wait`]
//! / [`ExecProcess::wait`], or it runs its own reaper and reports exits with
//! [`Container::record_exit`].

use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxResources, Process};
use serde::{Deserialize, Serialize};

use crate::cgroups::{Cgroup, CgroupError, Stats};
use crate::channel::{Channel, ExecConfig, FromChild, InitConfig, ToChild};
use crate::init::{HELPER_CHANNEL_FD, INIT_ENV};
use crate::rootfs::{self, RootfsError, RootfsMount};
use crate::seccomp::Program;
use crate::signal::SignalNumber;
use crate::spec::{self, SpecError};
use crate::sys::{self, SysError};

/// Where container state lives.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory holding one `<id>/state.json` per container; `/run/peapod/containers` by
    /// default (tmpfs, so stale state vanishes with a reboot, like the containers).
    pub state_root: PathBuf,
    /// The binary that runs as init helper (it must call [`crate::init::run_if_requested`]
    /// first): `None` for our own executable, `Some(path)` for a small dedicated binary
    /// (`peapod-init`). Either runs through a read-only overlayfs handle made once per
    /// process; where overlayfs is missing, from a sealed memfd copy, kept for our own
    /// executable and made per spawn for another (see [`sys::SealedExe`]).
    pub init_binary: Option<PathBuf>,
    /// Directory of compiled seccomp programs shared with the runtime's other processes
    /// ([`crate::seccomp::store`]): `/run/peapod/seccomp` by default; `None` compiles
    /// each profile once per process.
    pub seccomp_store: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            state_root: PathBuf::from("/run/peapod/containers"),
            init_binary: None,
            seccomp_store: Some(PathBuf::from("/run/peapod/seccomp")),
        }
    }
}

/// The container's stdio, handed in by the caller (pipes, FIFOs, a pty slave, files).
/// A missing stream is connected to `/dev/null`.
#[derive(Debug, Default)]
pub struct Stdio {
    /// fd 0 of the process.
    pub stdin: Option<OwnedFd>,
    /// fd 1.
    pub stdout: Option<OwnedFd>,
    /// fd 2.
    pub stderr: Option<OwnedFd>,
}

/// What `create` needs besides the bundle's `config.json`.
#[derive(Debug, Default)]
pub struct CreateOptions {
    /// Container id: `[A-Za-z0-9][A-Za-z0-9_.-]*`.
    pub id: String,
    /// The bundle directory (holds `config.json` and, usually, `rootfs/`).
    pub bundle: PathBuf,
    /// Filesystems to mount on the spec's `root.path` first (containerd's
    /// `CreateTaskRequest.rootfs`); empty when the rootfs is already in place.
    pub rootfs_mounts: Vec<RootfsMount>,
    /// The process's stdio.
    pub stdio: Stdio,
    /// The spec to use instead of `<bundle>/config.json` (e.g. with pod volumes added);
    /// `None` loads the bundle's.
    pub spec: Option<oci_spec::runtime::Spec>,
}

/// Lifecycle status (OCI runtime spec "State"), plus `Paused`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// `create` is in progress.
    Creating,
    /// Init waits for `start`.
    Created,
    /// The program runs.
    Running,
    /// Frozen by `pause`.
    Paused,
    /// Init has exited.
    Stopped,
}

/// The persisted state of a container (`state.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// Container id.
    pub id: String,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// Absolute rootfs path.
    pub rootfs: PathBuf,
    /// peapod mounted `CreateOptions::rootfs_mounts` on `rootfs` and must unmount them.
    pub rootfs_mounted: bool,
    /// cgroup path relative to the hierarchy roots; recorded before the cgroup is created.
    pub cgroup_path: String,
    /// The topmost ancestor of `cgroup_path` (or itself) that peapod created, removed
    /// again with the container when empty; `None` when the whole path pre-existed.
    #[serde(default)]
    pub cgroup_owned_from: Option<String>,
    /// Host pid of container init, once cloned.
    pub pid: Option<i32>,
    /// Start time of `pid` (clock ticks since boot, `/proc/<pid>/stat` field 22), to tell
    /// our init from a later process that reuses the pid.
    pub pid_start_time: Option<u64>,
    /// Lifecycle status.
    pub status: Status,
    /// Exit code once stopped: the code, or 128 + signal number.
    pub exit_code: Option<i32>,
    /// When init's exit was collected, nanoseconds since the epoch; `None` before, and in
    /// state written by peapod before it recorded the time. Kept so that a `delete` after
    /// the shim died reports the exit that happened (containerd's `DeleteResponse.exited_at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exited_at: Option<u64>,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// The container has no pid namespace of its own (it shares the host's or another
    /// container's): when init exits, every process left in its cgroup is killed
    /// ([`Container::record_exit`]), as no kernel pid namespace teardown does it.
    #[serde(default)]
    pub shares_pid_namespace: bool,
    /// `linux.seccomp` compiled at create ([`crate::seccomp::compile`]), kept so that
    /// processes exec'd later, also from a container loaded from this state, get the
    /// container's filter; `None` without a profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<Program>,
    /// The container's `process.apparmorProfile`, for exec'd processes that name none.
    #[serde(default)]
    pub apparmor_profile: Option<String>,
}

/// A lifecycle operation that failed. `id` names the container.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec is invalid; nothing was created.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A container with this id exists already.
    #[error("container {id}: already exists")]
    AlreadyExists {
        /// Container id.
        id: String,
    },
    /// No container with this id.
    #[error("container {id}: not found")]
    NotFound {
        /// Container id.
        id: String,
    },
    /// The operation is not allowed in the container's current status.
    #[error("container {id}: cannot {op} a {status:?} container")]
    InvalidStatus {
        /// Container id.
        id: String,
        /// The operation, e.g. `start`.
        op: &'static str,
        /// Its status.
        status: Status,
    },
    /// Reading or writing the state directory failed.
    #[error("container {id}: state {path}: {source}")]
    State {
        /// Container id.
        id: String,
        /// The file or directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A cgroup operation failed.
    #[error("container {id}: {source}")]
    Cgroup {
        /// Container id.
        id: String,
        /// Cause.
        #[source]
        source: CgroupError,
    },
    /// Mounting or unmounting the rootfs layers failed.
    #[error("container {id}: rootfs: {source}")]
    Rootfs {
        /// Container id.
        id: String,
        /// Cause.
        #[source]
        source: RootfsError,
    },
    /// Spawning the init helper or talking to it failed.
    #[error("container {id}: {op}: {source}")]
    Runtime {
        /// Container id.
        id: String,
        /// What we were doing.
        op: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A raw syscall failed (pidfd, signal).
    #[error("container {id}: {source}")]
    Sys {
        /// Container id.
        id: String,
        /// Cause.
        #[source]
        source: SysError,
    },
    /// Container init (or an exec'd process) failed during setup; `error` is its cause
    /// chain, e.g. `process.args[0]: executable file "nope" not found in $PATH`.
    #[error("container {id}: {stage}: {error}")]
    Init {
        /// Container id.
        id: String,
        /// `namespaces`, `rootfs`, `process`, `exec`…
        stage: String,
        /// The cause, as reported by init.
        error: String,
    },
}

type Result<T> = std::result::Result<T, Error>;

/// Where `create` and `start` spent their time, in microseconds (for benchmarks and
/// logs; zero for phases that did not run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// Loading and validating the spec.
    pub validate_us: u64,
    /// Mounting the caller's rootfs layers on the host (containerd's overlay in
    /// `CreateTaskRequest.rootfs`); zero when the bundle's rootfs is already in place.
    pub layers_us: u64,
    /// Writing the container's state file (`state.json`, each time it changes).
    pub state_us: u64,
    /// Creating the cgroup and applying resources.
    pub cgroup_us: u64,
    /// Spawning the init helper until it reported the cloned pid (includes `namespaces_us`).
    /// The helper starts before the cgroup (v1) or the layers (v2) are set up and the time
    /// it runs beside them is not counted: this is its share of the critical path.
    pub spawn_us: u64,
    /// Joining and creating namespaces (in the helper).
    pub namespaces_us: u64,
    /// Compiling `linux.seccomp` into BPF in the runtime (libseccomp, export included),
    /// or finding it in the process's cache of compiled profiles, after validation and
    /// before anything is created; zero without a profile. Loading
    /// the program in init is part of `process_us` without `process.noNewPrivileges` and
    /// of `start_us` with it (it then runs right before `execve`).
    pub seccomp_us: u64,
    /// Building the mount table (in init).
    pub rootfs_us: u64,
    /// Applying process settings (in init).
    pub process_us: u64,
    /// From `Continue` to init's `Ready` (includes `rootfs_us` and `process_us`).
    pub ready_us: u64,
    /// The whole `create`.
    pub total_us: u64,
    /// `start`: releasing init until its `execve` succeeded.
    pub start_us: u64,
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// A container created by this process or loaded from its state.
#[derive(Debug)]
pub struct Container {
    config: Config,
    state: State,
    pidfd: Option<OwnedFd>,
    chan: Option<Channel>,
    cgroup: Option<Cgroup>,
    console: Option<OwnedFd>,
    timings: Timings,
}

/// Exit code of a wait status: the code, or 128 + signal (shell convention, as containerd
/// reports it).
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Start time of `pid` in clock ticks since boot (`/proc/<pid>/stat` field 22), or `None`
/// when no such process exists.
pub fn pid_start_time(pid: Pid) -> Option<u64> {
    let stat = sys::read_proc(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

impl Container {
    /// Creates the container: validates the spec, records state, mounts the rootfs layers,
    /// creates the cgroup, spawns init and sets it up, and leaves it blocked before
    /// `execve` (status `Created`).
    ///
    /// Errors: [`Error::Spec`] for bad input, [`Error::AlreadyExists`], [`Error::Init`]
    /// with init's own cause, others for host failures. On any error everything created
    /// so far is removed again.
    pub fn create(config: &Config, opts: CreateOptions) -> Result<Container> {
        let begun = Instant::now();
        spec::validate_id(&opts.id)?;
        let bundle = fs::canonicalize(&opts.bundle)
            .map_err(|e| Error::Spec(spec::invalid("bundle", format!("{}: {e}", opts.bundle.display()))))?;
        let oci = match opts.spec {
            Some(s) => s,
            None => spec::load(&bundle)?,
        };
        // containerd creates `<bundle>/rootfs` before mounting layers on it; so must
        // other callers: the directory is checked like any rootfs.
        let plan = spec::validate(&opts.id, &bundle, &oci)?;
        let validate_us = micros(begun);
        // Compiled here, so a bad profile fails before any state, cgroup or process exists.
        let t = Instant::now();
        let seccomp = match plan.spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
            Some(profile) => {
                Some(crate::seccomp::compile_with(profile, config.seccomp_store.as_deref()).map_err(SpecError::from)?)
            }
            None => None,
        };
        let seccomp_us = micros(t);

        let dir = config.state_root.join(&opts.id);
        // The state root 0711, each container's directory 0700 (crate::hostdir).
        crate::hostdir::create_root(&config.state_root).map_err(|source| Error::State {
            id: opts.id.clone(),
            path: config.state_root.clone(),
            source,
        })?;
        if let Err(source) = fs::DirBuilder::new().mode(crate::hostdir::PRIVATE_MODE).create(&dir) {
            return Err(if source.kind() == io::ErrorKind::AlreadyExists {
                Error::AlreadyExists { id: opts.id }
            } else {
                Error::State {
                    id: opts.id,
                    path: dir,
                    source,
                }
            });
        }
        let mut c = Container {
            config: config.clone(),
            state: State {
                id: opts.id.clone(),
                bundle,
                rootfs: plan.rootfs.clone(),
                rootfs_mounted: !opts.rootfs_mounts.is_empty(),
                cgroup_path: plan.cgroup_path.clone(),
                cgroup_owned_from: None,
                pid: None,
                pid_start_time: None,
                status: Status::Creating,
                exit_code: None,
                exited_at: None,
                created: now_secs(),
                shares_pid_namespace: !plan
                    .namespaces
                    .iter()
                    .any(|n| n.kind == crate::namespaces::NamespaceKind::Pid && n.path.is_none()),
                seccomp,
                apparmor_profile: oci.process().as_ref().and_then(|p| p.apparmor_profile().clone()),
            },
            pidfd: None,
            chan: None,
            cgroup: None,
            console: None,
            timings: Timings::default(),
        };
        c.timings.validate_us = validate_us;
        c.timings.seccomp_us = seccomp_us;
        match c.create_inner(&plan, &opts.rootfs_mounts, opts.stdio) {
            Ok(()) => {
                c.timings.total_us = micros(begun);
                Ok(c)
            }
            Err(e) => {
                let _ = c.destroy();
                Err(e)
            }
        }
    }

    fn create_inner(&mut self, plan: &spec::Plan, layers: &[RootfsMount], stdio: Stdio) -> Result<()> {
        let id = self.state.id.clone();
        // Recorded before anything exists, so that a delete after a crash knows what to
        // undo: the rootfs layers to unmount and the cgroups to remove.
        self.state.cgroup_owned_from = crate::cgroups::first_missing_ancestor(&plan.cgroup_path);
        self.save()?;
        // The helper's exec and dynamic loading run beside the rest of the setup. On v1 it
        // moves itself into the cgroup once that exists, so it is started first and
        // overlaps the cgroup's creation and the layer mounts; on v2 it is born in the
        // cgroup (`CLONE_INTO_CGROUP`), so it is started after the cgroup and overlaps the
        // layer mounts. Either way it is in the cgroup before it creates any namespace.
        let v1 = !crate::cgroups::is_v2();
        let mut stdio = Some(stdio);
        let mut helper = None;
        let mut spawn_us = 0;
        if v1 {
            let t = Instant::now();
            helper = Some(self.start_helper(stdio.take().unwrap_or_default())?);
            spawn_us += micros(t);
        }
        // Every container gets a device policy: without rules in the spec, deny-all plus
        // the OCI default devices, as runc appends its AllowedDevices to whatever it got.
        let mut resources = plan
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().clone())
            .unwrap_or_default();
        if resources.devices().is_none() {
            resources.set_devices(Some(Vec::new()));
        }
        let t = Instant::now();
        let cgroup = Cgroup::create(
            &plan.cgroup_path,
            Some(&resources),
            self.state.cgroup_owned_from.as_deref(),
        )
        .map_err(|source| Error::Cgroup { id: id.clone(), source })?;
        let v2 = cgroup.is_v2();
        self.cgroup = Some(cgroup);
        self.timings.cgroup_us = micros(t);

        let cfg = ToChild::Init(Box::new(InitConfig {
            spec: plan.spec.clone(),
            rootfs: plan.rootfs.clone(),
            namespaces: plan.namespaces.clone(),
            cgroup_v2: v2,
            cgroup_mounts: crate::rootfs::host_hierarchies(v2),
            seccomp: self.state.seccomp.clone(),
        }));
        let mut helper = match helper {
            Some(helper) => helper,
            None => {
                let t = Instant::now();
                let helper = self.start_helper(stdio.take().unwrap_or_default())?;
                spawn_us += micros(t);
                helper
            }
        };
        if !layers.is_empty() {
            let t = Instant::now();
            rootfs::mount_rootfs_layers(layers, &plan.rootfs)
                .map_err(|source| Error::Rootfs { id: id.clone(), source })?;
            self.timings.layers_us = micros(t);
        }
        let t = Instant::now();
        let (chan, pid) = self.run_helper(&mut helper, &cfg, None)?;
        self.timings.spawn_us = spawn_us + micros(t);
        self.state.pid = Some(pid.as_raw());
        self.state.pid_start_time = pid_start_time(pid);
        self.pidfd = Some(sys::pidfd_open(pid).map_err(|source| Error::Sys { id: id.clone(), source })?);
        // No state write for the pid alone: init is in the container's cgroup already,
        // where a delete after a crash finds and kills it, and it exits by itself when
        // our end of the channel closes before `Continue`.
        let t = Instant::now();
        chan.send(&ToChild::Continue).map_err(|source| Error::Runtime {
            id: id.clone(),
            op: "continue init",
            source,
        })?;
        loop {
            match chan.recv_with_fd::<FromChild>() {
                Ok(Some((FromChild::Ready { rootfs_us, process_us }, _))) => {
                    self.timings.rootfs_us = rootfs_us;
                    self.timings.process_us = process_us;
                    self.timings.ready_us = micros(t);
                    break;
                }
                Ok(Some((FromChild::Console, Some(fd)))) => self.console = Some(fd),
                other => return Err(self.init_failure(other.map(|o| o.map(|(m, _)| m)))),
            }
        }
        // Reaped only now: the helper exited while init built its mount table.
        drop(helper);
        self.chan = Some(chan);
        self.state.status = Status::Created;
        self.save()
    }

    /// Starts the init helper with `stdio` as its fds 0–2: on v2, once the container has
    /// its cgroup, born in it; otherwise in ours until [`Container::run_helper`] moves it.
    /// Returns once the helper exists; its `execveat` runs on while the caller goes on,
    /// and is checked by [`Container::run_helper`].
    fn start_helper(&self, stdio: Stdio) -> Result<Helper> {
        let id = self.state.id.clone();
        let rt = |op| {
            let id = id.clone();
            move |source| Error::Runtime { id, op, source }
        };
        let (parent, child) = Channel::pair().map_err(rt("socketpair"))?;
        let sys_err = |source| Error::Sys { id: id.clone(), source };
        let own;
        let path = match &self.config.init_binary {
            Some(path) => path,
            None => {
                own = std::env::current_exe().map_err(|source| Error::Runtime {
                    id: id.clone(),
                    op: "find our own executable",
                    source,
                })?;
                &own
            }
        };
        let exe = sys::sealed_exe(path, &self.config.state_root).map_err(sys_err)?;
        let null = fs::File::open("/dev/null").map_err(rt("open /dev/null"))?;
        let fds = [
            stdio.stdin.as_ref().map_or(null.as_fd(), AsFd::as_fd),
            stdio.stdout.as_ref().map_or(null.as_fd(), AsFd::as_fd),
            stdio.stderr.as_ref().map_or(null.as_fd(), AsFd::as_fd),
            child.as_fd(),
        ];
        let cgroup_dir = match self.cgroup.as_ref().and_then(Cgroup::v2_dir) {
            Some(dir) => Some(
                nix::fcntl::open(
                    &dir,
                    nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .map_err(|e| Error::Runtime {
                    id: id.clone(),
                    op: "open the cgroup directory",
                    source: e.into(),
                })?,
            ),
            None => None,
        };
        let env = [std::ffi::CString::new(format!("{INIT_ENV}={HELPER_CHANNEL_FD}")).expect("no NUL")];
        let exec = sys::start_spawn(
            exe.as_fd(),
            &[c"peapod-init"],
            &env,
            &fds,
            cgroup_dir.as_ref().map(AsFd::as_fd),
        )
        .map_err(sys_err)?;
        Ok(Helper {
            chan: Some(parent),
            pid: exec.pid(),
            exec: Some(exec),
            reported: false,
        })
    }

    /// Gets `helper` into the container's cgroup (on v1 it moves itself: see
    /// `ToChild::EnterCgroup`), sends it `msg` and waits for the pid it cloned. The helper
    /// exits right after reporting (or failing); dropping `helper` reaps it.
    fn run_helper(&mut self, helper: &mut Helper, msg: &ToChild, with_fd: Option<OwnedFd>) -> Result<(Channel, Pid)> {
        let id = self.state.id.clone();
        let rt = |op| {
            let id = id.clone();
            move |source| Error::Runtime { id, op, source }
        };
        let parent = helper.chan.take().expect("a helper's channel is taken only here");
        let helper_pid = helper.pid;
        let exec = helper.exec.take().expect("a helper's exec is checked only here");
        let result = (|| {
            let (_, in_cgroup) = exec
                .exec_result()
                .map_err(|source| Error::Sys { id: id.clone(), source })?;
            if let Some(cg) = self.cgroup.as_mut().filter(|_| !in_cgroup) {
                let files = cg.self_attach_files();
                if files.is_empty() {
                    cg.add_proc(helper_pid)
                        .map_err(|source| Error::Cgroup { id: id.clone(), source })?;
                } else {
                    parent.send(&ToChild::EnterCgroup(files)).map_err(rt("send cgroup"))?;
                }
            }
            match &with_fd {
                Some(fd) => parent.send_with_fd(msg, fd.as_fd()),
                None => parent.send(msg),
            }
            .map_err(rt("send config"))?;
            match parent.recv::<FromChild>() {
                Ok(Some(FromChild::Spawned { pid, namespaces_us })) => {
                    self.timings.namespaces_us = namespaces_us;
                    Ok(Pid::from_raw(pid))
                }
                other => Err(self.init_failure(other)),
            }
        })();
        helper.reported = result.is_ok();
        result.map(|pid| (parent, pid))
    }

    fn init_failure(&self, got: io::Result<Option<FromChild>>) -> Error {
        let id = self.state.id.clone();
        match got {
            Ok(Some(FromChild::Failed { stage, error })) => Error::Init { id, stage, error },
            Ok(None) => Error::Init {
                id,
                stage: "init".into(),
                error: "exited during setup without reporting a cause".into(),
            },
            Ok(Some(other)) => Error::Init {
                id,
                stage: "channel".into(),
                error: format!("unexpected message {other:?}"),
            },
            Err(source) => Error::Runtime {
                id,
                op: "read from init",
                source,
            },
        }
    }

    /// Releases init to `execve` the program (status `Running`).
    ///
    /// Errors: [`Error::InvalidStatus`] unless `Created`; [`Error::Init`] when exec fails
    /// (e.g. the program is not executable), in which case init has exited.
    pub fn start(&mut self) -> Result<()> {
        let begun = Instant::now();
        self.require(&[Status::Created], "start")?;
        let chan = self.chan.take().ok_or_else(|| Error::Runtime {
            id: self.state.id.clone(),
            op: "start",
            source: io::Error::other("the channel to init belongs to the process that created the container"),
        })?;
        chan.send(&ToChild::Start).map_err(|source| Error::Runtime {
            id: self.state.id.clone(),
            op: "start",
            source,
        })?;
        match chan.recv::<FromChild>() {
            // Close-on-exec closed init's end: the program runs.
            Ok(None) => {
                self.state.status = Status::Running;
                self.timings.start_us = micros(begun);
                self.save()
            }
            other => {
                let err = self.init_failure(other);
                // Init exits after reporting; the caller's wait collects its status.
                self.state.status = Status::Stopped;
                let _ = self.save();
                Err(err)
            }
        }
    }

    fn require(&self, allowed: &[Status], op: &'static str) -> Result<()> {
        let status = self.status();
        if allowed.contains(&status) {
            Ok(())
        } else {
            Err(Error::InvalidStatus {
                id: self.state.id.clone(),
                op,
                status,
            })
        }
    }

    /// Where `create` and `start` spent their time.
    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// The container id.
    pub fn id(&self) -> &str {
        &self.state.id
    }

    /// Host pid of container init, once cloned.
    pub fn pid(&self) -> Option<Pid> {
        self.state.pid.map(Pid::from_raw)
    }

    /// The persisted state, with `status` refreshed.
    pub fn state(&self) -> State {
        let mut s = self.state.clone();
        s.status = self.status();
        s
    }

    /// Current status: the recorded one, or `Stopped` when init no longer exists (or its
    /// pid now belongs to another process).
    pub fn status(&self) -> Status {
        match (self.state.status, self.state.pid) {
            (Status::Stopped, _) | (Status::Creating, _) => self.state.status,
            (_, None) => self.state.status,
            (s, Some(pid)) => {
                let pid = Pid::from_raw(pid);
                let alive =
                    pid_start_time(pid).is_some_and(|t| Some(t) == self.state.pid_start_time) && !is_zombie(pid);
                if alive {
                    s
                } else {
                    Status::Stopped
                }
            }
        }
    }

    /// Sends `signal` (standard or real-time) to init, or with `all` to every process in
    /// the container's cgroup. Errors: [`Error::InvalidStatus`] when the container has
    /// stopped (unless `all`).
    pub fn kill(&self, signal: impl Into<SignalNumber>, all: bool) -> Result<()> {
        let signal = signal.into();
        let id = self.state.id.clone();
        if all {
            let cg = self.cgroup()?;
            return cg.signal_all(signal).map_err(|source| Error::Cgroup { id, source });
        }
        self.require(&[Status::Created, Status::Running, Status::Paused], "kill")?;
        match &self.pidfd {
            Some(fd) => sys::pidfd_send_signal(fd.as_fd(), signal).map_err(|source| Error::Sys { id, source }),
            None => {
                let pid = self.pid().ok_or(Error::InvalidStatus {
                    id: id.clone(),
                    op: "kill",
                    status: self.state.status,
                })?;
                sys::kill(pid, signal).map_err(|source| Error::Sys { id, source })
            }
        }
    }

    /// Waits for init to exit and returns its exit code (code, or 128 + signal).
    /// Only for callers that do not run their own reaper.
    pub fn wait(&mut self) -> Result<i32> {
        if let Some(code) = self.state.exit_code {
            return Ok(code);
        }
        let pid = self.pid().ok_or(Error::InvalidStatus {
            id: self.state.id.clone(),
            op: "wait for",
            status: self.state.status,
        })?;
        loop {
            match waitpid(pid, None) {
                Ok(st) => {
                    if let Some(code) = exit_code(st) {
                        self.record_exit(code, SystemTime::now())?;
                        return Ok(code);
                    }
                }
                Err(nix::Error::EINTR) => continue,
                Err(e) => {
                    return Err(Error::Sys {
                        id: self.state.id.clone(),
                        source: SysError {
                            op: format!("waitpid({pid})"),
                            source: e.into(),
                        },
                    })
                }
            }
        }
    }

    /// Non-blocking [`Container::wait`]: `None` while init runs.
    pub fn try_wait(&mut self) -> Result<Option<i32>> {
        if let Some(code) = self.state.exit_code {
            return Ok(Some(code));
        }
        let Some(pid) = self.pid() else { return Ok(None) };
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(st) => match exit_code(st) {
                Some(code) => {
                    self.record_exit(code, SystemTime::now())?;
                    Ok(Some(code))
                }
                None => Ok(None),
            },
            Err(e) => Err(Error::Sys {
                id: self.state.id.clone(),
                source: SysError {
                    op: format!("waitpid({pid})"),
                    source: e.into(),
                },
            }),
        }
    }

    /// Records init's exit (`code`: the code, or 128 + signal number), collected at `at`,
    /// for callers whose own reaper collected it. The state file is written before this
    /// returns, so the exit survives the caller: call it as soon as the exit is known.
    ///
    /// A container without a pid namespace of its own (`shares_pid_namespace`) has every
    /// process left in its cgroup killed (SIGKILL) here: in a new pid namespace the kernel
    /// kills them when init dies, in a shared one they would live on, reparented
    /// (containerd's runc shim does the same: `runc.ShouldKillAllOnExit`, tested by
    /// containerd's `TestContainerKillInitPidHost`). Errors: [`Error::Cgroup`] when
    /// signalling fails, after the exit is recorded.
    pub fn record_exit(&mut self, code: i32, at: SystemTime) -> Result<()> {
        self.state.exit_code = Some(code);
        self.state.exited_at = at
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| u64::try_from(d.as_nanos()).ok());
        self.state.status = Status::Stopped;
        self.pidfd = None;
        self.save()?;
        if self.state.shares_pid_namespace {
            if let Some(cg) = self.cgroup.as_ref().filter(|cg| cg.exists()) {
                cg.signal_all(Signal::SIGKILL).map_err(|source| Error::Cgroup {
                    id: self.state.id.clone(),
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// Runs `process` inside the running container: it joins all of init's namespaces
    /// (through init's pidfd, see [`crate::namespaces::join_all_of`]) and its cgroup, and
    /// gets its own user, capabilities, env and cwd, and the container's seccomp filter
    /// (as `runc exec`; loaded in the order [`crate::seccomp`] describes, by the
    /// process's own `noNewPrivileges`). Returns once the program has been exec'd.
    ///
    /// Errors: [`Error::Spec`] for an invalid process, [`Error::InvalidStatus`] unless
    /// `Running`, [`Error::Init`] with the cause when setup or exec fails (stage
    /// `namespaces`, ESRCH, when init exited meanwhile).
    pub fn exec(&mut self, process: &Process, stdio: Stdio) -> Result<ExecProcess> {
        spec::validate_process("process", process)?;
        self.require(&[Status::Running], "exec in")?;
        let target = self.state.pid.expect("running containers have a pid");
        let id = self.state.id.clone();
        // The helper joins init's namespaces through this pidfd: once init has exited, it
        // fails with ESRCH instead of entering whatever process got the pid next.
        let init = self
            .pidfd
            .as_ref()
            .ok_or(Error::InvalidStatus {
                id: id.clone(),
                op: "exec in",
                status: Status::Stopped,
            })?
            .try_clone()
            .map_err(|source| Error::Runtime {
                id: id.clone(),
                op: "duplicate the pidfd of init",
                source,
            })?;
        let mut process = process.clone();
        // An exec'd process that names no AppArmor profile gets the container's, as under
        // runc (libcontainer/container_linux.go, newInitConfig).
        if process.apparmor_profile().as_deref().unwrap_or_default().is_empty() {
            process.set_apparmor_profile(self.state.apparmor_profile.clone());
        }
        let msg = ToChild::Exec(Box::new(ExecConfig {
            target,
            process,
            seccomp: self.state.seccomp.clone(),
        }));
        // The helper is reaped once the process runs: its exit is off the critical path.
        let mut helper = self.start_helper(stdio)?;
        let (chan, pid) = self.run_helper(&mut helper, &msg, Some(init))?;
        let pidfd = sys::pidfd_open(pid).map_err(|source| Error::Sys { id: id.clone(), source })?;
        chan.send(&ToChild::Continue).map_err(|source| Error::Runtime {
            id,
            op: "continue exec",
            source,
        })?;
        let mut console = None;
        loop {
            match chan.recv_with_fd::<FromChild>() {
                // Close-on-exec closed the child's end: the program runs.
                Ok(None) => {
                    drop(helper);
                    return Ok(ExecProcess { pid, pidfd, console });
                }
                Ok(Some((FromChild::Console, Some(fd)))) => console = Some(fd),
                other => {
                    let err = self.init_failure(other.map(|o| o.map(|(m, _)| m)));
                    let _ = waitpid(pid, None);
                    return Err(err);
                }
            }
        }
    }

    /// The pty master when the container's process has `terminal: true` (taken once):
    /// the caller copies between it and the user, and resizes it.
    pub fn take_console(&mut self) -> Option<OwnedFd> {
        self.console.take()
    }

    /// Processes in the container's cgroup.
    pub fn pids(&self) -> Result<Vec<Pid>> {
        Ok(self.cgroup()?.procs())
    }

    /// Freezes every process (status `Paused`).
    pub fn pause(&mut self) -> Result<()> {
        self.require(&[Status::Running], "pause")?;
        self.freeze(true, Status::Paused)
    }

    /// Thaws a paused container (status `Running`).
    pub fn resume(&mut self) -> Result<()> {
        self.require(&[Status::Paused], "resume")?;
        self.freeze(false, Status::Running)
    }

    fn freeze(&mut self, frozen: bool, next: Status) -> Result<()> {
        let id = self.state.id.clone();
        self.cgroup()?
            .freeze(frozen)
            .map_err(|source| Error::Cgroup { id, source })?;
        self.state.status = next;
        self.save()
    }

    /// Applies new `linux.resources` to the running container.
    pub fn update(&mut self, resources: &LinuxResources) -> Result<()> {
        let id = self.state.id.clone();
        self.cgroup()?;
        let cg = self.cgroup.as_mut().expect("checked just above");
        cg.update(resources).map_err(|source| Error::Cgroup { id, source })
    }

    /// cgroup statistics (cpu, memory, pids, OOM kills).
    pub fn stats(&self) -> Result<Stats> {
        let id = self.state.id.clone();
        self.cgroup()?
            .files()
            .stats()
            .map_err(|source| Error::Cgroup { id, source })
    }

    /// The container's cgroup.
    pub fn cgroup(&self) -> Result<&Cgroup> {
        self.cgroup.as_ref().ok_or_else(|| Error::NotFound {
            id: self.state.id.clone(),
        })
    }

    /// Deletes the container: kills whatever still runs in its cgroup (with `force`; else a
    /// running container is an error), reaps init if it is our child, removes the cgroup,
    /// unmounts the rootfs layers and removes the state directory.
    pub fn delete(mut self, force: bool) -> Result<()> {
        if !force {
            self.require(&[Status::Created, Status::Stopped], "delete")?;
        }
        self.destroy()
    }

    fn destroy(&mut self) -> Result<()> {
        let id = self.state.id.clone();
        self.chan = None;
        if let Some(cg) = &self.cgroup {
            if cg.exists() {
                let _ = cg.freeze(false);
                let _ = cg.signal_all(Signal::SIGKILL);
            }
        }
        if let Some(pid) = self.pid() {
            if self.state.exit_code.is_none()
                && self.state.pid_start_time.is_some()
                && self.state.pid_start_time == pid_start_time(pid)
            {
                if let Some(fd) = &self.pidfd {
                    let _ = sys::pidfd_send_signal(fd.as_fd(), Signal::SIGKILL);
                }
                // Reap it if it is our child; ECHILD means another process owns it.
                if let Ok(st) = waitpid(pid, None) {
                    if let Some(code) = exit_code(st) {
                        self.state.exit_code = Some(code);
                    }
                }
            }
        }
        if let Some(cg) = &self.cgroup {
            if cg.exists() {
                cg.destroy(Duration::from_secs(5), self.state.cgroup_owned_from.as_deref())
                    .map_err(|source| Error::Cgroup { id: id.clone(), source })?;
            }
        }
        if self.state.rootfs_mounted {
            rootfs::unmount_all(&self.state.rootfs).map_err(|source| Error::Rootfs { id: id.clone(), source })?;
        }
        let dir = self.dir();
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::State { id, path: dir, source }),
        }
    }

    /// Loads a container from its state (e.g. for `delete` in another process). Its init,
    /// if still running, is not our child: only `kill`, `pids`, `stats` and `delete` apply.
    pub fn load(config: &Config, id: &str) -> Result<Container> {
        spec::validate_id(id)?;
        let path = config.state_root.join(id).join("state.json");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::NotFound { id: id.to_string() }),
            Err(source) => {
                return Err(Error::State {
                    id: id.to_string(),
                    path,
                    source,
                })
            }
        };
        let state: State = serde_json::from_str(&text).map_err(|e| Error::State {
            id: id.to_string(),
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        let cgroup = Cgroup::open(&state.cgroup_path).ok();
        let pidfd = state
            .pid
            .map(Pid::from_raw)
            .filter(|p| pid_start_time(*p).is_some() && pid_start_time(*p) == state.pid_start_time)
            .and_then(|p| sys::pidfd_open(p).ok());
        Ok(Container {
            config: config.clone(),
            state,
            pidfd,
            chan: None,
            cgroup,
            console: None,
            timings: Timings::default(),
        })
    }

    fn dir(&self) -> PathBuf {
        self.config.state_root.join(&self.state.id)
    }

    fn save(&mut self) -> Result<()> {
        let t = Instant::now();
        let saved = self.write_state();
        self.timings.state_us += micros(t);
        saved
    }

    fn write_state(&self) -> Result<()> {
        let path = self.dir().join("state.json");
        let tmp = self.dir().join("state.json.tmp");
        let err = |source| Error::State {
            id: self.state.id.clone(),
            path: path.clone(),
            source,
        };
        let text = serde_json::to_vec_pretty(&self.state).map_err(|e| err(io::Error::other(e)))?;
        crate::hostdir::write_private(&tmp, &text).map_err(err)?;
        fs::rename(&tmp, &path).map_err(err)
    }
}

/// An init helper from [`Container::start_helper`] that [`Container::run_helper`] has not
/// finished with. Dropping it reaps the process, killed first unless it reported (it then
/// exits by itself): no error path between the two leaves a helper behind.
struct Helper {
    chan: Option<Channel>,
    pid: Pid,
    /// Its `execveat`, checked when the helper is given its work.
    exec: Option<sys::PendingExec>,
    reported: bool,
}

impl Drop for Helper {
    fn drop(&mut self) {
        // Our unreaped child: its pid cannot have been reused.
        if !self.reported {
            let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
        }
        let _ = waitpid(self.pid, None);
    }
}

fn is_zombie(pid: Pid) -> bool {
    sys::read_proc(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .unwrap_or(true)
}

/// A process started by [`Container::exec`]; a child of the caller.
#[derive(Debug)]
pub struct ExecProcess {
    pid: Pid,
    pidfd: OwnedFd,
    console: Option<OwnedFd>,
}

impl ExecProcess {
    /// Host pid.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The pty master when the process asked for `terminal: true` (taken once).
    pub fn take_console(&mut self) -> Option<OwnedFd> {
        self.console.take()
    }

    /// Its pidfd: readable (`poll` `POLLIN`) once the process has exited, before anyone
    /// reaped it.
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Sends `signal` (standard or real-time) through the pidfd (never a recycled pid).
    pub fn kill(&self, signal: impl Into<SignalNumber>) -> std::result::Result<(), SysError> {
        sys::pidfd_send_signal(self.pidfd.as_fd(), signal)
    }

    /// Waits for the process and returns its exit code (code, or 128 + signal).
    pub fn wait(self) -> std::result::Result<i32, SysError> {
        loop {
            match waitpid(self.pid, None) {
                Ok(st) => {
                    if let Some(code) = exit_code(st) {
                        return Ok(code);
                    }
                }
                Err(nix::Error::EINTR) => continue,
                Err(e) => {
                    return Err(SysError {
                        op: format!("waitpid({})", self.pid),
                        source: e.into(),
                    })
                }
            }
        }
    }
}

/// True if `path` is a mount point in this process's mount namespace.
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = sys::read_proc("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4) == Some(want.as_ref()))
}
