//! containerd's shim process contract: `start` and `delete`.
//!
//! `start` runs once per task. peapod keeps one shim per pod: tasks are grouped by the
//! CRI annotation `io.kubernetes.cri.sandbox-id` (`proto::annotations::SANDBOX_ID`; the
//! sandbox's own id for the sandbox task), falling back to the task id. If a live shim
//! already serves the group, `start` only writes its address to the bundle's `address`
//! file and prints it. Otherwise it binds the group's socket itself, hands the listener
//! (as an inherited fd) to a re-executed daemon, writes `address` atomically and prints
//! it. stdout carries only the address; on failure no socket is left behind.
//!
//! `delete` is what containerd runs when it lost a shim: it removes what is left of the
//! task from peapod's state alone and prints a protobuf `DeleteResponse`.

use std::fs;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use containerd_shim_protos::api::DeleteResponse;
use sha2::{Digest, Sha256};

use crate::args::Flags;

/// Where containerd's Go shims put their sockets (`defaults.DefaultStateDir` + `/s`);
/// containerd 1.6 uses it whatever its own state dir is.
pub const SOCKET_ROOT: &str = "/run/containerd/s";

/// Environment variable naming the listener fd handed to the shim daemon.
pub const LISTENER_ENV: &str = "_PEAPOD_SHIM_LISTENER";

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
    let joined = Path::new(containerd_address).join(namespace).join(group);
    let digest = Sha256::digest(joined.to_string_lossy().as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("unix://{SOCKET_ROOT}/{hex}")
}

/// The path behind a `unix://` address.
pub fn socket_path(address: &str) -> &Path {
    Path::new(address.strip_prefix("unix://").unwrap_or(address))
}

/// The shim group of task `id` in `bundle`: its pod sandbox's id, or its own id.
pub fn group_id(bundle: &Path, id: &str) -> Result<String, StartError> {
    let spec = sandbox::spec::load(bundle)?;
    Ok(spec
        .annotations()
        .as_ref()
        .and_then(proto::annotations::sandbox_id)
        .unwrap_or(id)
        .to_string())
}

/// Runs `start`: returns the address to print.
pub fn start(flags: &Flags, bundle: &Path) -> Result<String, StartError> {
    discard_runtime_options();
    let group = group_id(bundle, &flags.id)?;
    let address = socket_address(&flags.address, &flags.namespace, &group);
    let path = socket_path(&address).to_path_buf();

    if UnixStream::connect(&path).is_ok() {
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
        .create(SOCKET_ROOT)
        .map_err(io_err("create", Path::new(SOCKET_ROOT)))?;
    let listener = UnixListener::bind(&path).map_err(io_err("bind", &path))?;
    if let Err(e) = fs::set_permissions(&path, fs::Permissions::from_mode(0o600)) {
        let _ = fs::remove_file(&path);
        return Err(io_err("chmod 0600", &path)(e));
    }
    let result = spawn_daemon(flags, bundle, &listener).and_then(|()| write_address(bundle, &address));
    if result.is_err() {
        let _ = fs::remove_file(&path);
    }
    result.map(|()| address)
}

// containerd may write runtime options to stdin; they are not needed, but the pipe is
// drained so containerd's write never fails.
fn discard_runtime_options() {
    let is_pipe = fs::metadata("/proc/self/fd/0").is_ok_and(|m| m.file_type().is_fifo());
    if is_pipe {
        let _ = io::copy(&mut io::stdin().lock().take(1 << 20), &mut io::sink());
    }
}

fn spawn_daemon(flags: &Flags, bundle: &Path, listener: &UnixListener) -> Result<(), StartError> {
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
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if flags.debug {
        cmd.arg("-debug");
    }
    sandbox::sys::inherit_fd(&mut cmd, fd);
    cmd.spawn().map_err(io_err("spawn shim daemon", &exe))?;
    Ok(())
}

/// Writes `<bundle>/address` atomically (temp file + rename).
pub fn write_address(bundle: &Path, address: &str) -> Result<(), StartError> {
    let tmp = bundle.join(".address.tmp");
    let path = bundle.join("address");
    fs::write(&tmp, address).map_err(io_err("write", &tmp))?;
    fs::rename(&tmp, &path).map_err(io_err("rename", &path))
}

/// Where the shim keeps state for one containerd namespace.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Container state (`sandbox::Config::state_root`): `/run/peapod/shim/<ns>/containers`.
    pub containers: PathBuf,
    /// Pod state and Memory-medium emptyDirs: `/run/peapod/shim/<ns>/pods/<pod>`.
    pub pods: PathBuf,
    /// Disk-medium emptyDirs: `/var/lib/peapod/shim/<ns>/pods/<pod>/volumes`.
    pub disk: PathBuf,
}

impl Paths {
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
            disk: base("PEAPOD_SHIM_ROOT", "/var/lib/peapod/shim").join("pods"),
        }
    }
}

/// Runs `delete`: kills what remains of task `flags.id` (its whole cgroup), unmounts its
/// rootfs, removes its state, and returns the response containerd expects (exit status
/// 137, as for a SIGKILLed task).
pub fn delete(flags: &Flags, bundle: &Path) -> Result<DeleteResponse, StartError> {
    let paths = Paths::for_namespace(&flags.namespace);
    let config = sandbox::Config {
        state_root: paths.containers.clone(),
        init_binary: None,
    };
    let mut pid = 0;
    match sandbox::Container::load(&config, &flags.id) {
        Ok(c) => {
            pid = c.pid().map_or(0, |p| u32::try_from(p.as_raw()).unwrap_or(0));
            c.delete(true)?;
        }
        Err(sandbox::Error::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    // A sandbox's pod volumes and pod cgroup go with it.
    let pod_dir = paths.pods.join(&flags.id);
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
    // The group's socket goes when no live shim answers on it any more (the shim was
    // killed; a live one still serves the pod's other tasks).
    if let Ok(group) = group_id(bundle, &flags.id) {
        let socket = socket_address(&flags.address, &flags.namespace, &group);
        let path = socket_path(&socket);
        if UnixStream::connect(path).is_err() && fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = fs::remove_file(path);
        }
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
    let mut resp = DeleteResponse::new();
    resp.pid = pid;
    resp.exit_status = 137;
    resp.exited_at = protobuf::MessageField::some(crate::events::now());
    Ok(resp)
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
