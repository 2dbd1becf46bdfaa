//! containerd's shim process contract: `start` and `delete`.
//!
//! `start` runs once per task under containerd 1.6, and once per pod (the sandbox task)
//! or standalone task under containerd 2.x, which sends a pod's other tasks to the shim
//! that answered Task API v3 for its sandbox. peapod keeps one shim per pod: tasks are
//! grouped by the CRI annotation `io.kubernetes.cri.sandbox-id`
//! (`proto::annotations::SANDBOX_ID`; the sandbox's own id for the sandbox task), falling
//! back to the task id (also when the bundle has no `config.json` yet, as for a sandbox
//! containerd 2.x's `shim` sandboxer starts). If a live shim already serves the group,
//! `start` only writes its address to the bundle's `address` file and answers it.
//! Otherwise it binds the group's socket itself (in containerd 2.3's `socket_dir`, else
//! `/run/containerd/s`), hands the listener (as an inherited fd) to a re-executed daemon,
//! moves the daemon into the runtime options' `ShimCgroup` if one is given, writes
//! `address` atomically and answers. What the answer looks like, and where the runtime
//! options come from, depends on the containerd ([`crate::bootstrap`]). On failure no
//! socket and no daemon are left behind.
//!
//! `delete` is what containerd runs when it lost a shim: it removes what is left of the
//! task from peapod's state alone and prints a protobuf `DeleteResponse`. containerd 2.x
//! runs it only for the task it ran `start` for (its bundle then also holds containerd's
//! `bootstrap.json`, and a grouped task's bundle a `sandbox` file; neither is read here).

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use containerd_shim_protos::api::DeleteResponse;
use sha2::{Digest, Sha256};

use crate::args::Flags;
use crate::bootstrap::StartInput;
use crate::options::{OptionsError, RuntimeOptions};

/// Where containerd's Go shims put their sockets (`defaults.DefaultStateDir` + `/s`);
/// containerd 1.6 uses it whatever its own state dir is.
pub const SOCKET_ROOT: &str = "/run/containerd/s";

/// Environment variable naming the listener fd handed to the shim daemon.
pub const LISTENER_ENV: &str = "_PEAPOD_SHIM_LISTENER";

/// How the daemon learns when `start` began: `CLOCK_BOOTTIME` in nanoseconds, read first
/// thing in `start`'s `main` ([`boottime_ns`]); the daemon logs its start-up time
/// (`startup_us`, `start`'s main to the socket served) with `shim serving`.
pub const STARTED_AT_ENV: &str = "_PEAPOD_SHIM_STARTED_AT";

/// `CLOCK_BOOTTIME` in nanoseconds: one clock for every process of the machine (0 if it
/// cannot be read).
pub fn boottime_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .ok()
        .and_then(|t| u64::try_from(i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec())).ok())
        .unwrap_or(0)
}

/// A step of `start` or `delete` that failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A file or socket operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The bundle's `config.json` is unreadable.
    #[error(transparent)]
    Spec(#[from] sandbox::spec::SpecError),
    /// Removing the task failed.
    #[error(transparent)]
    Container(#[from] sandbox::Error),
    /// The runtime options containerd passed are unreadable.
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// The shim daemon could not be moved into the runtime options' `ShimCgroup`; the
    /// daemon was killed again.
    #[error("move the shim daemon (pid {pid}) into ShimCgroup {cgroup}")]
    ShimCgroup {
        /// The cgroup, as given.
        cgroup: String,
        /// The daemon's pid.
        pid: u32,
        /// Cause (the cgroup does not exist, or the kernel refused the write).
        #[source]
        source: sandbox::cgroups::CgroupError,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StartError + 'a {
    move |source| StartError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The socket address of a shim group, computed like containerd's Go `shim.SocketAddress`:
/// `unix:///run/containerd/s/<hex sha256 of "<address>/<namespace>/<group>">`, so that
/// containerd's tools and other shims agree on it.
pub fn socket_address(containerd_address: &str, namespace: &str, group: &str) -> String {
    socket_address_in(Path::new(SOCKET_ROOT), containerd_address, namespace, group)
}

/// [`socket_address`] in the directory `dir` instead of `/run/containerd/s` (containerd
/// 2.3's `socket_dir`; Go's `shim.CreateSocketAddress`).
pub fn socket_address_in(dir: &Path, containerd_address: &str, namespace: &str, group: &str) -> String {
    let joined = Path::new(containerd_address).join(namespace).join(group);
    let digest = Sha256::digest(joined.to_string_lossy().as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("unix://{}", dir.join(hex).display())
}

/// The path behind a `unix://` address.
pub fn socket_path(address: &str) -> &Path {
    Path::new(address.strip_prefix("unix://").unwrap_or(address))
}

/// The shim group of task `id` in `bundle`: its pod sandbox's id, or its own id (also
/// when the bundle has no `config.json`: containerd 2.x's `shim` sandboxer starts the
/// sandbox's shim before any spec exists).
pub fn group_id(bundle: &Path, id: &str) -> Result<String, StartError> {
    let spec = match sandbox::spec::load(bundle) {
        Ok(spec) => spec,
        Err(sandbox::spec::SpecError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(id.to_string())
        }
        Err(e) => return Err(e.into()),
    };
    Ok(spec
        .annotations()
        .as_ref()
        .and_then(proto::annotations::sandbox_id)
        .unwrap_or(id)
        .to_string())
}

/// Runs `start` with what containerd gave besides the flags (`input`,
/// [`crate::bootstrap::parse`]): returns the shim's address (`unix://…`), which the caller
/// answers in the form `input.generation` expects ([`crate::bootstrap::answer`]).
pub fn start(flags: &Flags, bundle: &Path, input: &StartInput, began_ns: u64) -> Result<String, StartError> {
    let options = match &input.options {
        Some(any) => RuntimeOptions::from_any(any)?,
        None => RuntimeOptions::default(),
    };
    let mut flags = flags.clone();
    if let Some(grpc) = &input.grpc_address {
        flags.address.clone_from(grpc);
    }
    flags.debug |= input.debug;
    let group = group_id(bundle, &flags.id)?;
    let dir = input.socket_dir.as_deref().unwrap_or(Path::new(SOCKET_ROOT));
    let address = socket_address_in(dir, &flags.address, &flags.namespace, &group);
    let path = socket_path(&address).to_path_buf();

    // A shim that answers, or that accepted and is slow to answer (one just started by a
    // concurrent `start` of the same pod), serves the group.
    if let ShimProbe::Answers | ShimProbe::Silent = probe_shim(&address, &flags.id, START_PROBE_TIMEOUT) {
        write_address(bundle, &address)?;
        return Ok(address);
    }
    if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_socket()) {
        // A socket nobody answers on: left by a dead shim.
        fs::remove_file(&path).map_err(io_err("remove stale socket", &path))?;
    }
    // The socket is the Task API: whoever connects can exec as root in every container of
    // the pod. As containerd's Go shims do (`shim.NewSocket`), the directory is made
    // root-only when we create it and the socket 0600 (its mode otherwise follows the
    // umask of whoever started us).
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("create", dir))?;
    let listener = UnixListener::bind(&path).map_err(io_err("bind", &path))?;
    if let Err(e) = fs::set_permissions(&path, fs::Permissions::from_mode(0o600)) {
        let _ = fs::remove_file(&path);
        return Err(io_err("chmod 0600", &path)(e));
    }
    let result =
        spawn_daemon(&flags, bundle, &listener, input.ttrpc_address.as_deref(), began_ns).and_then(|mut daemon| {
            let placed = match &options.shim_cgroup {
                Some(cgroup) => join_shim_cgroup(cgroup, daemon.id()),
                None => Ok(()),
            };
            let result = placed.and_then(|()| write_address(bundle, &address));
            if result.is_err() {
                // The daemon serves a socket that is about to go: it must not outlive start.
                let _ = daemon.kill();
                let _ = daemon.wait();
            }
            result
        });
    if result.is_err() {
        let _ = fs::remove_file(&path);
    }
    result.map(|()| address)
}

/// Moves the daemon into `cgroup` as containerd's runc shim does (after spawning it, before
/// answering): every v1 hierarchy that has the cgroup, or the v2 one.
fn join_shim_cgroup(cgroup: &str, pid: u32) -> Result<(), StartError> {
    let err = |source| StartError::ShimCgroup {
        cgroup: cgroup.to_string(),
        pid,
        source,
    };
    // Linux pids fit in i32 (pid_max is at most 2^22).
    #[allow(clippy::cast_possible_wrap)]
    let pid_t = nix::unistd::Pid::from_raw(pid as i32);
    sandbox::cgroups::join_existing(Path::new("/sys/fs/cgroup"), cgroup, sandbox::cgroups::is_v2(), pid_t)
        .map(|_| ())
        .map_err(err)
}

fn spawn_daemon(
    flags: &Flags,
    bundle: &Path,
    listener: &UnixListener,
    ttrpc_address: Option<&str>,
    began_ns: u64,
) -> Result<Child, StartError> {
    let exe = std::env::current_exe().map_err(io_err("locate own binary", Path::new("/proc/self/exe")))?;
    let fd = listener.as_fd();
    let mut cmd = Command::new(&exe);
    cmd.current_dir(bundle)
        .args([
            "-namespace",
            &flags.namespace,
            "-id",
            &flags.id,
            "-address",
            &flags.address,
        ])
        .arg("-bundle")
        .arg(bundle)
        .env(LISTENER_ENV, std::os::fd::AsRawFd::as_raw_fd(&fd).to_string())
        .env(STARTED_AT_ENV, began_ns.to_string())
        // No cached stacks of the blocking pool's ended threads in a resting daemon
        // (issue 17); `serve` gives its own children the variable as it was.
        .env(
            sandbox::sys::TUNABLES_ENV,
            sandbox::sys::tunables_without_stack_cache(std::env::var(sandbox::sys::TUNABLES_ENV).ok().as_deref()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if flags.debug {
        cmd.arg("-debug");
    }
    if let Some(ttrpc) = ttrpc_address {
        // containerd 2.3 sets $TTRPC_ADDRESS too, for now; its parameters win.
        cmd.env("TTRPC_ADDRESS", ttrpc);
    }
    sandbox::sys::inherit_fd(&mut cmd, fd);
    cmd.spawn().map_err(io_err("spawn shim daemon", &exe))
}

/// How long `delete` waits for a shim to answer before it judges it dead.
const DELETE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `start` waits for a shim to answer before it judges it alive but slow.
const START_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a Task API request on a shim's socket found ([`probe_shim`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShimProbe {
    /// Nothing listens: no socket there, or the connection was refused.
    Absent,
    /// The connection was accepted and then closed or reset unanswered: the listener of a
    /// shim that is going away. A SIGKILLed shim's socket still accepts connections into
    /// its backlog until the kernel has released all of the dying process's files, some
    /// time after containerd saw its own connections close and ran `delete`.
    Dying,
    /// Accepted, still open, but no answer within the timeout.
    Silent,
    /// A shim answered (with any status).
    Answers,
}

impl ShimProbe {
    fn describe(self) -> &'static str {
        match self {
            ShimProbe::Absent => "nothing listens",
            ShimProbe::Dying => "the connection was closed unanswered: the shim is exiting",
            ShimProbe::Silent => "no answer in time",
            ShimProbe::Answers => "answers",
        }
    }
}

/// Asks the shim on `address` (`unix://…`) for task `id` with a Task API v2 `Connect`
/// and waits up to `timeout` for the answer's header. Any answer counts, an error
/// status (`NotFound` for a task the shim does not have) too: only whether a shim
/// serves the socket is asked, not what it knows.
pub fn probe_shim(address: &str, id: &str, timeout: Duration) -> ShimProbe {
    use containerd_shim_protos::protobuf::Message;
    use std::io::{Read, Write};

    let Ok(mut stream) = UnixStream::connect(socket_path(address)) else {
        return ShimProbe::Absent;
    };
    let connect = containerd_shim_protos::api::ConnectRequest {
        id: id.to_string(),
        ..Default::default()
    };
    let mut request = containerd_shim_protos::ttrpc::Request::new();
    request.set_service(crate::serve::TASK_V2.to_string());
    request.set_method("Connect".to_string());
    request.payload = connect.write_to_bytes().unwrap_or_default();
    let body = request.write_to_bytes().unwrap_or_default();
    let Ok(len) = u32::try_from(body.len()) else {
        return ShimProbe::Silent;
    };
    let mut frame: Vec<u8> = containerd_shim_protos::ttrpc::MessageHeader::new_request(1, len).into();
    frame.extend_from_slice(&body);
    if stream.set_read_timeout(Some(timeout)).is_err() || stream.write_all(&frame).is_err() {
        // A write fails only once the connection was reset: the listener closed.
        return ShimProbe::Dying;
    }
    let mut header = [0u8; containerd_shim_protos::ttrpc::proto::MESSAGE_HEADER_LENGTH];
    match stream.read_exact(&mut header) {
        Ok(()) => ShimProbe::Answers,
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => ShimProbe::Silent,
        Err(_) => ShimProbe::Dying,
    }
}

/// Writes `<bundle>/address` atomically (temp file + rename).
pub fn write_address(bundle: &Path, address: &str) -> Result<(), StartError> {
    let tmp = bundle.join(".address.tmp");
    let path = bundle.join("address");
    fs::write(&tmp, address).map_err(io_err("write", &tmp))?;
    fs::rename(&tmp, &path).map_err(io_err("rename", &path))
}

/// The directory of [`Paths::member_marker`]s in a pod's state dir.
const MEMBERS_DIR: &str = "members";

/// Where the shim keeps state for one containerd namespace.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Container state (`sandbox::Config::state_root`): `/run/peapod/shim/<ns>/containers`.
    pub containers: PathBuf,
    /// Pod state and Memory-medium emptyDirs: `/run/peapod/shim/<ns>/pods/<pod>`.
    pub pods: PathBuf,
    /// Disk-medium emptyDirs: `/var/lib/peapod/shim/<ns>/pods/<pod>/volumes`.
    pub disk: PathBuf,
    /// Compiled seccomp programs shared by the namespace's shims
    /// (`sandbox::Config::seccomp_store`): `/run/peapod/shim/<ns>/seccomp`.
    pub seccomp: PathBuf,
}

impl Paths {
    /// The marker file saying that container `id` belongs to the pod whose sandbox is
    /// `pod` and that containerd will not run `delete` for it: `<pods>/<pod>/members/<id>`,
    /// inside the pod's state dir (so it goes with the pod). The service writes it when it
    /// creates a container containerd 2.x attached to the sandbox's shim (the bundle has
    /// containerd's `sandbox` file) and removes it when the task is deleted; `delete` of
    /// the sandbox reads them (see [`delete`]).
    pub fn member_marker(&self, pod: &str, id: &str) -> PathBuf {
        self.pods.join(pod).join(MEMBERS_DIR).join(id)
    }

    /// All of them under `dir` (unit tests).
    #[cfg(test)]
    pub(crate) fn under(dir: &Path) -> Paths {
        Paths {
            containers: dir.join("containers"),
            pods: dir.join("pods"),
            disk: dir.join("disk"),
            seccomp: dir.join("seccomp"),
        }
    }

    /// The paths for `namespace`; `$PEAPOD_SHIM_STATE` and `$PEAPOD_SHIM_ROOT` replace
    /// `/run/peapod/shim` and `/var/lib/peapod/shim` (tests).
    pub fn for_namespace(namespace: &str) -> Paths {
        let base = |var: &str, default: &str| {
            std::env::var_os(var)
                .map_or_else(|| PathBuf::from(default), PathBuf::from)
                .join(namespace)
        };
        let state = base("PEAPOD_SHIM_STATE", "/run/peapod/shim");
        Paths {
            containers: state.join("containers"),
            pods: state.join("pods"),
            seccomp: state.join("seccomp"),
            disk: base("PEAPOD_SHIM_ROOT", "/var/lib/peapod/shim").join("pods"),
        }
    }
}

/// Runs `delete`: kills what remains of task `flags.id` (its whole cgroup), unmounts its
/// rootfs, removes its state, and returns the response containerd publishes as the task's
/// exit: the exit the shim recorded when init had exited before the shim died (its code
/// and time, [`sandbox::Container::record_exit`]), else 137 now, as for a SIGKILLed task
/// (runc's shim answers the same: `cmd/containerd-shim-runc-v2/manager` `Stop`).
///
/// A sandbox takes its pod with it: its volumes and pod cgroup, and, when no shim answers
/// on the group's socket any more, the pod's other containers. containerd 1.6 runs
/// `delete` for each task of a dead shim, but containerd 2.x only for the task it ran
/// `start` for: the pod's other tasks were attached to that shim without a clean-up hook
/// of their own (`core/runtime/v2/shim_manager.go` `Start` with Task API v3, `loadShim(…,
/// func() {})`), and CRI may remove their bundles meanwhile, so they are found by the
/// markers the shim left in the pod's state dir ([`Paths::member_marker`]).
pub fn delete(flags: &Flags, bundle: &Path) -> Result<DeleteResponse, StartError> {
    let paths = Paths::for_namespace(&flags.namespace);
    let config = sandbox::Config {
        state_root: paths.containers.clone(),
        init_binary: None,
        seccomp_store: None,
    };
    // Where the group's socket is: `start` wrote it to the bundle (containerd 2.3 may
    // have put it in its `socket_dir`, which `delete` is not told).
    let socket = fs::read_to_string(bundle.join("address"))
        .ok()
        .filter(|a| a.starts_with("unix://"))
        .or_else(|| {
            group_id(bundle, &flags.id)
                .ok()
                .map(|group| socket_address(&flags.address, &flags.namespace, &group))
        });
    let probe = socket
        .as_deref()
        .map_or(ShimProbe::Absent, |s| probe_shim(s, &flags.id, DELETE_PROBE_TIMEOUT));
    let shim_alive = probe == ShimProbe::Answers;
    if let (Some(socket), ShimProbe::Dying | ShimProbe::Silent) = (&socket, probe) {
        // Worth a line in containerd's log ("cleanup warnings"): the socket accepted a
        // connection that no shim served.
        eprintln!(
            "containerd-shim-peapod-v2: delete {}: the shim socket {socket} accepted a connection but no shim answered ({}): cleaning up the pod as the shim's",
            flags.id,
            probe.describe()
        );
    }
    // The group's socket goes when no live shim answers on it any more (the shim was
    // killed; a live one still serves the pod's other tasks). First, so that no failure
    // below leaves it behind: it does not depend on what else there is to delete.
    if let Some(socket) = socket.as_deref().filter(|_| !shim_alive) {
        let path = socket_path(socket);
        if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = fs::remove_file(path);
        }
    }
    let pod_dir = paths.pods.join(&flags.id);
    if !shim_alive {
        delete_members(&config, &pod_dir.join(MEMBERS_DIR), &flags.id);
    } else if let Some(socket) = &socket {
        // containerd runs `delete` for a dead shim's tasks, or for a task whose `start`
        // failed: a shim that answers keeps the pod's other members.
        eprintln!(
            "containerd-shim-peapod-v2: delete {}: the shim on {socket} answers: the pod's members are left to it",
            flags.id
        );
    }
    let mut resp = DeleteResponse::new();
    resp.exit_status = 137;
    resp.exited_at = protobuf::MessageField::some(crate::events::now());
    match sandbox::Container::load(&config, &flags.id) {
        Ok(c) => {
            let state = c.state();
            resp.pid = state.pid.map_or(0, |p| u32::try_from(p).unwrap_or(0));
            if let (Some(code), Some(at)) = (state.exit_code, state.exited_at) {
                resp.exit_status = u32::try_from(code).unwrap_or(137);
                resp.exited_at = protobuf::MessageField::some(crate::events::to_timestamp(
                    std::time::UNIX_EPOCH + std::time::Duration::from_nanos(at),
                ));
            }
            c.delete(true)?;
        }
        Err(sandbox::Error::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    // A sandbox's pod volumes and pod cgroup go with it.
    if let Some(pod) = sandbox::pod::PodResources::load(&pod_dir).map_err(|e| StartError::Io {
        op: "load pod state",
        path: pod_dir.clone(),
        source: io::Error::other(e),
    })? {
        pod.destroy().map_err(|e| StartError::Io {
            op: "remove pod",
            path: pod_dir.clone(),
            source: io::Error::other(e),
        })?;
    }
    // Whatever containerd mounted or we left on the rootfs goes too.
    let rootfs = bundle.join("rootfs");
    if sandbox::container::is_mounted(&rootfs) {
        sandbox::rootfs::unmount_all(&rootfs).map_err(|e| StartError::Io {
            op: "unmount",
            path: rootfs.clone(),
            source: io::Error::other(e),
        })?;
    }
    Ok(resp)
}

/// Deletes (force: SIGKILL to the cgroup, rootfs unmounted, state removed) the containers
/// named by the markers in `members` other than `sandbox_id`; missing ones are skipped.
/// Best effort: a failure is only a warning on stderr (which containerd logs as such), and
/// the pod cgroup's removal afterwards waits for their cgroups.
fn delete_members(config: &sandbox::Config, members: &Path, sandbox_id: &str) {
    let Ok(entries) = fs::read_dir(members) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(id) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if id == sandbox_id {
            continue;
        }
        let deleted = match sandbox::Container::load(config, &id) {
            Ok(c) => c.delete(true),
            Err(sandbox::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        };
        match deleted {
            Ok(()) => {
                let _ = fs::remove_file(entry.path());
            }
            Err(e) => eprintln!(
                "containerd-shim-peapod-v2: delete pod member {id} of {sandbox_id}: {}",
                sandbox::error::chain(&e)
            ),
        }
    }
}

use containerd_shim_protos::protobuf;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_address_matches_containerds_go_hash() {
        // sha256("/run/containerd/containerd.sock/k8s.io/abc"), as Go's shim.SocketAddress computes it.
        let want = Sha256::digest(b"/run/containerd/containerd.sock/k8s.io/abc");
        let hex: String = want.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            socket_address("/run/containerd/containerd.sock", "k8s.io", "abc"),
            format!("unix:///run/containerd/s/{hex}")
        );
        assert_eq!(hex.len(), 64);
    }

    #[test]
    fn a_socket_dir_moves_the_socket_but_not_its_name() {
        let default = socket_address("/run/containerd/containerd.sock", "k8s.io", "abc");
        let moved = socket_address_in(
            Path::new("/run/ctrd-s"),
            "/run/containerd/containerd.sock",
            "k8s.io",
            "abc",
        );
        let name = default.rsplit('/').next().unwrap();
        assert_eq!(moved, format!("unix:///run/ctrd-s/{name}"));
    }

    #[test]
    fn a_socket_that_accepts_is_not_yet_a_live_shim() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let address = format!("unix://{}", path.display());
        let short = Duration::from_millis(200);
        assert_eq!(probe_shim(&address, "t", short), ShimProbe::Absent);

        // Bound and listening, nobody accepts: the connection waits in the backlog.
        let listener = UnixListener::bind(&path).unwrap();
        assert_eq!(probe_shim(&address, "t", short), ShimProbe::Silent);

        // The listener closes while our connection waits in its backlog, as when the
        // kernel releases a SIGKILLed shim's files: reset, unanswered.
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(listener);
        });
        assert_eq!(probe_shim(&address, "t", Duration::from_secs(10)), ShimProbe::Dying);
        closer.join().unwrap();

        // Accepted, read, answered with a frame header: a shim.
        fs::remove_file(&path).unwrap();
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut conn, _) = listener.accept().unwrap();
            let mut header = [0u8; 10];
            conn.read_exact(&mut header).unwrap();
            conn.write_all(&[0, 0, 0, 0, 0, 0, 0, 1, 2, 0]).unwrap();
        });
        assert_eq!(probe_shim(&address, "t", Duration::from_secs(10)), ShimProbe::Answers);
        server.join().unwrap();
    }

    #[test]
    fn a_bundle_without_config_json_is_its_own_group() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(group_id(dir.path(), "sb1").unwrap(), "sb1");
        fs::write(dir.path().join("config.json"), "{").unwrap();
        assert!(group_id(dir.path(), "sb1").is_err());
    }

    #[test]
    fn containers_group_by_their_sandbox() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = sandbox::spec::default_spec(&["sh"]);
        fs::write(dir.path().join("config.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
        assert_eq!(group_id(dir.path(), "c1").unwrap(), "c1");
        spec.set_annotations(Some(
            [(proto::annotations::SANDBOX_ID.to_string(), "pod1".to_string())].into(),
        ));
        fs::write(dir.path().join("config.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
        assert_eq!(group_id(dir.path(), "c1").unwrap(), "pod1");
    }
}
