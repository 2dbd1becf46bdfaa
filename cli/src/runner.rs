//! The `peapod` CLI's embedded mode: a pod from a [`PodPlan`] run by
//! `containerd-shim-peapod-v2` without containerd.
//!
//! `run`: images resolved first from the store (the CLI pulls what the pull policies ask
//! for before, see [`crate::imagepull`]; when one could not be had, the pod is created
//! without its containers and waits for it, [`crate::pullbackoff`]), the pod recorded,
//! its configMap, secret, downwardAPI and projected volumes written
//! ([`crate::volumes`]), the sandbox (pause) task created and started, the pod network
//! attached to its network namespace through CNI, every container's bundle
//! written and its task created in declaration order, then all containers started at
//! once: the shim orders them (init containers, sidecars, apps). `delete`: SIGTERM to the
//! sandbox task (the shim signals every container at once, waits the grace period,
//! SIGKILLs the rest, ends the pause process), then every task deleted, CNI DEL, the
//! volumes' tmpfs unmounted, and the pod's directories removed. A pod with host ports is
//! checked against the other pods' ([`crate::hostports`]) and recorded under one
//! `flock(2)` on `<state>/pods`; its CNI network chains `portmap`, ADD and DEL alike.
//!
//! Paths: `<state>/pods/<namespace>_<name>/` (tmpfs: `pod.json`, bundles) and
//! `<root>/pods/<namespace>_<name>/` (disk: container layers' upper dirs, logs, and
//! `volumes/kubernetes.io~<plugin>/<volume>`, tmpfs mounts for secrets),
//! `<root>/images` (the image store); IPAM in `/var/lib/cni/networks/peapod`
//! ([`crate::cni`]), the CNI container id being the pod's uid.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::cni::{CniError, Network};
use crate::embedded::{EmbeddedError, Shim, ShimExit, TaskIo};
use crate::hostports;
use crate::images::{ImageError, Store};
use crate::manifest::{ContainerPlan, ManifestError, PodPlan};
use crate::pods::{container_spec, sandbox_spec, ImageConfig, PodRuntime};
use crate::podstatus::{exit_event, pod_status, Exit, Observation, Observed, PodEvent, ProbeStatus};
use crate::volumes::ResolvedVolumes;

/// A failed step of the embedded mode, naming the pod, container, task or path.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The local image store could not be opened.
    #[error("open the image store")]
    OpenImages(#[source] Box<ImageError>),
    /// A container's image reference is not valid.
    #[error("container {container}")]
    ImageReference {
        /// The container.
        container: String,
        /// Cause (boxed: image errors are large).
        #[source]
        source: Box<ImageError>,
    },
    /// A container's image is not in the store (`ErrImagePull`) or cannot be read.
    #[error("container {container}: image {image}")]
    Image {
        /// The container.
        container: String,
        /// The normalized reference.
        image: String,
        /// Cause (boxed: image errors are large).
        #[source]
        source: Box<ImageError>,
    },
    /// `run` of a pod that is already recorded.
    #[error("pod {name} already exists in namespace {namespace}")]
    PodExists {
        /// The pod.
        name: String,
        /// Its namespace.
        namespace: String,
    },
    /// No pod is recorded under the key.
    #[error("pod {key:?} not found ({})", path.display())]
    PodNotFound {
        /// `<namespace>_<name>`.
        key: String,
        /// Its `pod.json`.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A pod's `pod.json` could not be read.
    #[error("read {}", path.display())]
    ReadRecord {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A pod's `pod.json` is not a pod record.
    #[error("parse {}", path.display())]
    ParseRecord {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// A pod has no container of that name.
    #[error("no container {container:?} in pod {pod}")]
    NoContainer {
        /// The pod.
        pod: String,
        /// The container asked for.
        container: String,
    },
    /// `add_container` of a name the pod already has.
    #[error("pod {pod} already has a container {container}")]
    ContainerExists {
        /// The pod.
        pod: String,
        /// The container.
        container: String,
    },
    /// `logs --previous` of a container that has not restarted (kubectl's message).
    #[error("previous terminated container {container:?} in pod {pod:?} not found")]
    NoPreviousRun {
        /// The pod.
        pod: String,
        /// The container.
        container: String,
    },
    /// The running `peapod` executable could not be found (`/proc/self/exe`).
    #[error("find the running executable")]
    CurrentExe(#[source] std::io::Error),
    /// The running executable's path has no parent directory.
    #[error("executable {} has no directory", exe.display())]
    ExeDir {
        /// The executable.
        exe: PathBuf,
    },
    /// A binary the runner starts is neither named by its variable nor next to `peapod`.
    #[error("{binary}: cannot find it: set {var} (make install puts it next to peapod)")]
    MissingBinary {
        /// `containerd-shim-peapod-v2` or `peapod-pause`.
        binary: &'static str,
        /// The environment variable that names it.
        var: &'static str,
    },
    /// No usable `peapod-pause` (none found, or a dynamically linked one), or the
    /// sandbox's root for it could not be made.
    #[error(transparent)]
    PauseBinary(sandbox::pod::PauseError),
    /// A directory could not be created.
    #[error("create {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A document could not be serialized to JSON for the file it goes to.
    #[error("serialize {}", path.display())]
    Serialize {
        /// The file it was for.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// A file could not be renamed into place.
    #[error("rename {} to {}", from.display(), to.display())]
    Rename {
        /// The temporary file.
        from: PathBuf,
        /// Its final name.
        to: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A file or directory of the pod could not be removed.
    #[error("remove {}", path.display())]
    Remove {
        /// The file or directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The pod's seccomp or AppArmor profiles cannot be used (a Localhost file missing or
    /// malformed, AppArmor absent): nothing was created.
    #[error("pod {pod}: security profiles")]
    Profiles {
        /// The pod.
        pod: String,
        /// Cause (names the field and the file).
        #[source]
        source: ManifestError,
    },
    /// The pod's configMap, secret, downwardAPI or projected volumes could not be written.
    #[error("set up the volumes of pod {pod}")]
    SetUpVolumes {
        /// The pod.
        pod: String,
        /// Cause (names the path).
        #[source]
        source: crate::volumes::VolumeError,
    },
    /// The pod's volume directory could not be unmounted or removed.
    #[error("tear down the volumes of pod {pod}")]
    TearDownVolumes {
        /// The pod.
        pod: String,
        /// Cause (names the path).
        #[source]
        source: crate::volumes::VolumeError,
    },
    /// A host port the pod asks for cannot be given (network `none`, IPv6 `hostIP`), or
    /// another pod recorded here holds it: nothing was created.
    #[error("pod {pod}")]
    HostPort {
        /// The pod.
        pod: String,
        /// Cause (names the port's field, and the other pod).
        #[source]
        source: Box<crate::hostports::HostPortError>,
    },
    /// Taking the lock on `<state>/pods` that makes host-port checks and pod records
    /// atomic failed.
    #[error("lock {}", path.display())]
    Lock {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The pod's `pulls.json` could not be read or written.
    #[error("image pull state")]
    PullState(#[source] crate::pullbackoff::PullStateError),
    /// The process that waits out the pod's image pull back-off could not be started.
    #[error("pod {pod}: start the image puller ({})", path.display())]
    SpawnPuller {
        /// The pod.
        pod: String,
        /// The file or binary involved.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The pod's image puller did not exit after SIGKILL.
    #[error("pod {pod}: the image puller (pid {pid}) did not exit within 10 s of SIGKILL")]
    PullerStuck {
        /// The pod.
        pod: String,
        /// Its pid as its lock file gives it (0 if unreadable).
        pid: i32,
    },
    /// Waiting out the image pull back-off stopped.
    #[error("pod {pod}: wait for its images")]
    WaitImages {
        /// The pod.
        pod: String,
        /// Cause.
        #[source]
        source: crate::pullbackoff::WaitError,
    },
    /// A container's OCI spec could not be built from the manifest and its image.
    #[error("build the OCI spec")]
    ContainerSpec {
        /// The container.
        container: String,
        /// Cause (names the container and field).
        #[source]
        source: ManifestError,
    },
    /// Starting the pod's shim, or creating or starting its sandbox task, failed.
    #[error("start the sandbox of pod {pod}")]
    StartSandbox {
        /// The pod.
        pod: String,
        /// Cause.
        #[source]
        source: EmbeddedError,
    },
    /// The sandbox's pid does not fit a `pid_t`.
    #[error("sandbox pid {pid} is out of range")]
    SandboxPid {
        /// The pid the shim reported.
        pid: u32,
        /// Cause.
        #[source]
        source: std::num::TryFromIntError,
    },
    /// The pod's sandbox task cannot be queried (`State`): its shim or sandbox is gone.
    #[error("the sandbox task of pod {pod}")]
    SandboxState {
        /// The pod.
        pod: String,
        /// Cause.
        #[source]
        source: EmbeddedError,
    },
    /// CNI ADD of one of the pod's interfaces failed.
    #[error("attach {ifname} of pod {pod}")]
    AttachNetwork {
        /// The pod.
        pod: String,
        /// `eth0` (the bridge) or `lo`.
        ifname: &'static str,
        /// Cause.
        #[source]
        source: CniError,
    },
    /// CNI DEL of the pod's network failed.
    #[error("detach the network of pod {pod}")]
    DetachNetwork {
        /// The pod.
        pod: String,
        /// Cause.
        #[source]
        source: CniError,
    },
    /// The pod's shim could not be reached.
    #[error("reach the shim of pod {pod}")]
    ConnectShim {
        /// The pod.
        pod: String,
        /// Cause.
        #[source]
        source: EmbeddedError,
    },
    /// `Create` of a container's task failed.
    #[error("create container {container}")]
    CreateTask {
        /// The container.
        container: String,
        /// Cause.
        #[source]
        source: EmbeddedError,
    },
    /// `Start` of a container's task failed.
    #[error("start container {container}")]
    StartTask {
        /// The container.
        container: String,
        /// Cause.
        #[source]
        source: EmbeddedError,
    },
    /// `add_container` failed; what it created was removed again.
    #[error("add container {container} to pod {pod}")]
    AddContainer {
        /// The container.
        container: String,
        /// The pod.
        pod: String,
        /// The step that failed.
        #[source]
        source: Box<RunError>,
    },
    /// `Wait` for a container's task failed.
    #[error("wait for container {container}")]
    Wait {
        /// The container.
        container: String,
        /// Cause.
        #[source]
        source: EmbeddedError,
    },
    /// `Delete` of a container's task failed.
    #[error("delete task {id}")]
    DeleteTask {
        /// The task id.
        id: String,
        /// Cause.
        #[source]
        source: EmbeddedError,
    },
    /// `Delete` of the sandbox task failed.
    #[error("delete the sandbox task {id}")]
    DeleteSandbox {
        /// The sandbox's task id.
        id: String,
        /// Cause.
        #[source]
        source: EmbeddedError,
    },
    /// `Shutdown` of the pod's shim failed.
    #[error("shut down the shim of pod {pod}")]
    ShutdownShim {
        /// The pod.
        pod: String,
        /// Cause.
        #[source]
        source: EmbeddedError,
    },
    /// The shim binary's `delete` of a task whose shim died failed.
    #[error("clean up task {id} of a dead shim")]
    Cleanup {
        /// The task id.
        id: String,
        /// Cause.
        #[source]
        source: EmbeddedError,
    },
    /// The OCI process of an exec could not be built.
    #[error("the exec process for container {container}")]
    ExecProcess {
        /// The container.
        container: String,
        /// Cause.
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// The temporary directory of an exec's output or FIFOs could not be created.
    #[error("create a temporary directory for the exec")]
    ExecDir(#[source] std::io::Error),
    /// A FIFO of an attached exec could not be created.
    #[error("mkfifo {}", path.display())]
    Mkfifo {
        /// The FIFO.
        path: PathBuf,
        /// Cause.
        #[source]
        source: nix::Error,
    },
    /// A container's `Stats` call failed.
    #[error("stats of container {container}")]
    Stats {
        /// The container.
        container: String,
        /// Cause.
        #[source]
        source: EmbeddedError,
    },
    /// An exec's `Exec`, `Start`, `Wait` or `Delete` call failed (the cause names it).
    #[error("exec in container {container}")]
    Exec {
        /// The container.
        container: String,
        /// Cause.
        #[source]
        source: EmbeddedError,
    },
}

type Result<T, E = RunError> = std::result::Result<T, E>;

/// Where sysfs is mounted: AppArmor's state is read there.
const SYS_ROOT: &str = "/sys";

/// Where the CLI keeps things.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Persistent data: `/var/lib/peapod` (`--root`, `$PEAPOD_ROOT`).
    pub root: PathBuf,
    /// Runtime state: `/run/peapod` (`--state`, `$PEAPOD_STATE`).
    pub state: PathBuf,
}

impl Paths {
    fn pod_state(&self, key: &str) -> PathBuf {
        self.state.join("pods").join(key)
    }

    fn pod_data(&self, key: &str) -> PathBuf {
        self.root.join("pods").join(key)
    }

    /// The pod's configMap, secret, downwardAPI and projected volumes
    /// ([`crate::volumes::set_up`]): in its data directory, as kubelet's
    /// `/var/lib/kubelet/pods/<uid>/volumes`.
    pub fn pod_volumes(&self, key: &str) -> PathBuf {
        self.pod_data(key).join("volumes")
    }

    /// The image store.
    ///
    /// Errors: [`RunError::OpenImages`].
    pub fn images(&self) -> Result<Store> {
        Store::open(&self.root.join("images")).map_err(|e| RunError::OpenImages(Box::new(e)))
    }
}

/// How the pod reaches the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkMode {
    /// peapod's CNI bridge (default).
    Cni,
    /// Loopback only.
    None,
    /// The host's network (`hostNetwork: true`).
    Host,
}

/// What `run` recorded of a pod (`pod.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRecord {
    /// `<namespace>_<name>`.
    pub key: String,
    /// The checked manifest.
    pub plan: PodPlan,
    /// `metadata.uid`.
    pub uid: String,
    /// The sandbox task id.
    pub sandbox_id: String,
    /// The shim's address.
    pub shim_address: String,
    /// (container name, task id), declaration order.
    pub containers: Vec<(String, String)>,
    /// Network mode.
    pub network: NetworkMode,
    /// The pod IP.
    pub ip: Option<String>,
    /// CNI ADD's result, for DEL.
    pub cni_result: Option<String>,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// Where the pod's Localhost seccomp profiles are read from (`peapod run
    /// --seccomp-profile-root`).
    #[serde(default = "default_seccomp_root")]
    pub seccomp_root: PathBuf,
}

fn default_seccomp_root() -> PathBuf {
    PathBuf::from(crate::security::KUBELET_SECCOMP_ROOT)
}

impl PodRecord {
    fn save(&self, paths: &Paths) -> Result<()> {
        let dir = paths.pod_state(&self.key);
        create_private_dir(&dir)?;
        let (tmp, path) = (dir.join("pod.json.tmp"), dir.join("pod.json"));
        let saved = write_json(&tmp, self, true).and_then(|()| {
            fs::rename(&tmp, &path).map_err(|source| RunError::Rename {
                from: tmp.clone(),
                to: path,
                source,
            })
        });
        if saved.is_err() {
            // A full disk fails the write half-way: the old record, if any, stays whole.
            let _ = fs::remove_file(&tmp);
        }
        saved
    }

    /// The log file of container `name`.
    pub fn log_path(&self, paths: &Paths, name: &str) -> PathBuf {
        paths.pod_data(&self.key).join("logs").join(format!("{name}.log"))
    }

    /// The shim's own log (its `tracing` output: task calls, per-phase create timings,
    /// warnings such as container output dropped on a full disk): the file `log` in the
    /// sandbox's bundle, where containerd puts the FIFO it reads the shim's log from. The
    /// CLI creates it as a regular file (0600), so embedded mode keeps what containerd's
    /// log would show; it goes with the pod's state.
    pub fn shim_log(&self, paths: &Paths) -> PathBuf {
        paths.pod_state(&self.key).join("bundles").join("sandbox").join("log")
    }

    /// The shim's event log (`$PEAPOD_EVENT_LOG`), in the pod's state directory.
    pub fn event_log(&self, paths: &Paths) -> PathBuf {
        paths.pod_state(&self.key).join("events")
    }

    /// What the pod's images came to ([`crate::pullbackoff::PullState`]), in the pod's
    /// state directory.
    pub fn pull_state(&self, paths: &Paths) -> PathBuf {
        paths.pod_state(&self.key).join("pulls.json")
    }

    /// The lock and pid file of the process that waits out the pod's image pull back-off
    /// ([`spawn_puller`]): locked (`flock(2)`) while it lives.
    fn puller_lock(&self, paths: &Paths) -> PathBuf {
        paths.pod_state(&self.key).join("puller")
    }

    /// The task id of container `name`.
    pub fn task_id(&self, name: &str) -> Option<&str> {
        self.containers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| id.as_str())
    }
}

/// A pod's own state or data directory: 0700 under 0711 ancestors
/// (`sandbox::hostdir::create_private`), since container root writes below it (the
/// overlay's upper dir, the merged rootfs) and its bundles hold the pod's environment.
fn create_private_dir(path: &Path) -> Result<()> {
    sandbox::hostdir::create_private(path).map_err(|source| RunError::CreateDir {
        path: path.to_path_buf(),
        source,
    })
}

/// `fs::create_dir_all`, naming the directory in its error.
fn create_dir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|source| RunError::CreateDir {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `value` as JSON (`pretty`: indented) to `path`.
/// Writes `bytes` to a new file at `path`, mode 0600 ([`sandbox::hostdir::write_private`]).
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    sandbox::hostdir::write_private(path, bytes).map_err(|source| RunError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn write_json(path: &Path, value: &impl Serialize, pretty: bool) -> Result<()> {
    let json = if pretty {
        serde_json::to_vec_pretty(value)
    } else {
        serde_json::to_vec(value)
    };
    let json = json.map_err(|source| RunError::Serialize {
        path: path.to_path_buf(),
        source,
    })?;
    // 0600: specs and pod records carry the pod's environment values.
    write_private(path, &json)
}

/// `fs::remove_dir_all` (`dir`) or `fs::remove_file`; already gone is fine.
fn remove(path: &Path, dir: bool) -> Result<()> {
    let removed = if dir {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match removed {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RunError::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The pod's key, `<namespace>_<name>`.
pub fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}_{name}")
}

/// Every recorded pod.
///
/// Errors: [`RunError::ParseRecord`] for a `pod.json` that is not a record.
pub fn list(paths: &Paths) -> Result<Vec<PodRecord>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(paths.state.join("pods")).into_iter().flatten().flatten() {
        let path = entry.path().join("pod.json");
        if let Ok(text) = fs::read(&path) {
            out.push(serde_json::from_slice(&text).map_err(|source| RunError::ParseRecord { path, source })?);
        }
    }
    out.sort_by(|a: &PodRecord, b| a.key.cmp(&b.key));
    Ok(out)
}

/// The pod recorded under `key`.
///
/// Errors: [`RunError::PodNotFound`], or a `pod.json` that cannot be read or parsed.
pub fn load(paths: &Paths, key: &str) -> Result<PodRecord> {
    let path = paths.pod_state(key).join("pod.json");
    let text = match fs::read(&path) {
        Ok(text) => text,
        Err(source) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(RunError::PodNotFound {
                key: key.to_string(),
                path,
                source,
            })
        }
        Err(source) => return Err(RunError::ReadRecord { path, source }),
    };
    serde_json::from_slice(&text).map_err(|source| RunError::ParseRecord { path, source })
}

/// A random UUID (the kernel's), for `metadata.uid`.
pub fn new_uid() -> String {
    fs::read_to_string("/proc/sys/kernel/random/uuid").map_or_else(|_| format!("{:x}", now()), |u| u.trim().to_string())
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Binaries the runner starts, next to the running `peapod` (or in the cargo `pause`
/// dir for a development tree).
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `containerd-shim-peapod-v2`.
    pub shim: PathBuf,
    /// The static `peapod-pause`.
    pub pause: PathBuf,
}

impl Binaries {
    /// Finds them: `$PEAPOD_SHIM`, else next to our executable; the pause as the shim finds
    /// it ([`sandbox::pod::pause_binary`]: `$PEAPOD_PAUSE`, `target/pause/peapod-pause` in a
    /// cargo tree, where `make pause` puts the static one, else next to our executable).
    ///
    /// Errors: [`RunError::MissingBinary`] for a shim in none of those places,
    /// [`RunError::PauseBinary`] for a pause that is missing or dynamically linked.
    pub fn find() -> Result<Binaries> {
        let exe = std::env::current_exe().map_err(RunError::CurrentExe)?;
        let dir = exe
            .parent()
            .ok_or_else(|| RunError::ExeDir { exe: exe.clone() })?
            .to_path_buf();
        let pick = |binary: &'static str, var: &'static str, candidates: Vec<PathBuf>| -> Result<PathBuf> {
            if let Some(p) = std::env::var_os(var) {
                return Ok(PathBuf::from(p));
            }
            candidates
                .into_iter()
                .find(|p| p.is_file())
                .ok_or(RunError::MissingBinary { binary, var })
        };
        Ok(Binaries {
            shim: pick(
                "containerd-shim-peapod-v2",
                "PEAPOD_SHIM",
                vec![dir.join("containerd-shim-peapod-v2")],
            )?,
            // The shim's own lookup, which also refuses a dynamically linked one (a plain
            // `cargo build` links it dynamically; it would fail in the pod as `exec /pause`).
            pause: sandbox::pod::pause_binary().map_err(RunError::PauseBinary)?,
        })
    }
}

/// What `run` checks before anything: the pod is not recorded yet, and its seccomp and
/// AppArmor profiles exist and load (Localhost seccomp profiles under `seccomp_root`).
/// The CLI calls it before pulling images too, so a refused pod downloads nothing.
///
/// Errors: [`RunError::PodExists`], [`RunError::Profiles`].
pub fn preflight(paths: &Paths, plan: &PodPlan, seccomp_root: &Path) -> Result<()> {
    if paths
        .pod_state(&key(&plan.namespace, &plan.name))
        .join("pod.json")
        .exists()
    {
        return Err(RunError::PodExists {
            name: plan.name.clone(),
            namespace: plan.namespace.clone(),
        });
    }
    crate::pods::check_profiles(plan, seccomp_root, Path::new(SYS_ROOT), true).map_err(|source| RunError::Profiles {
        pod: plan.name.clone(),
        source,
    })
}

/// What `run` takes besides the plan, from the objects around it: the payloads of the
/// plan's configMap, secret, downwardAPI and projected volumes
/// ([`crate::volumes::resolve`]), what making sure of its images came to
/// ([`crate::imagepull::ensure_images`]) and the pull Secrets' credentials, for the
/// process that pulls again after a failure. The default (no such volumes, nothing
/// pulled, nothing waited for) runs what the store holds and fails with `ErrImagePull`
/// on what it lacks.
#[derive(Debug, Default)]
pub struct RunInputs {
    /// The volumes' files.
    pub volumes: ResolvedVolumes,
    /// The outcome of the first attempt.
    pub pulled: crate::imagepull::Pulled,
    /// The credentials (kept in memory only: passed to the puller on a pipe).
    pub keyring: crate::images::auth::DockerKeyring,
}

/// Runs a pod; returns its record. On error everything created is removed again.
/// Localhost seccomp profiles are read under `seccomp_root`, and checked (with the
/// AppArmor profiles) before anything is created. The volumes' files
/// (`inputs.volumes`) are written before the sandbox starts.
///
/// When an image is missing (`inputs.pulled.waiting`), the pod is created without its
/// containers, as kubelet leaves a pod whose image it cannot pull: sandbox, network and
/// volumes, the containers Waiting with kubelet's reason in `pulls.json`, and a process
/// that waits out kubelet's back-off, pulls again, and creates and starts them once the
/// images are there ([`spawn_puller`], [`crate::pullbackoff`]).
pub fn run(
    paths: &Paths,
    bins: &Binaries,
    plan: &PodPlan,
    network: NetworkMode,
    seccomp_root: &Path,
    inputs: RunInputs,
    progress: &dyn Fn(&str),
) -> Result<PodRecord> {
    let key = key(&plan.namespace, &plan.name);
    preflight(paths, plan, seccomp_root)?;
    let network = if plan.host_network { NetworkMode::Host } else { network };
    let host_port_err = |source| RunError::HostPort {
        pod: plan.name.clone(),
        source: Box::new(source),
    };
    hostports::check_mappable(plan, network == NetworkMode::None).map_err(host_port_err)?;
    // Images first: read from the store before anything exists, unless the pod waits
    // for one.
    let waits = !inputs.pulled.waiting.is_empty();
    let resolved = if waits {
        Vec::new()
    } else {
        let store = paths.images()?;
        plan.containers
            .iter()
            .map(|c| resolve_image(&store, c))
            .collect::<Result<Vec<_>>>()?
    };
    // A pod with host ports checks the other pods' and records itself under one lock, so
    // two runs at once cannot both take a port.
    let lock = if hostports::claims(plan).is_empty() {
        None
    } else {
        let lock = lock_pods(paths)?;
        hostports::check_conflicts(plan, &held_host_ports(paths, &key)?).map_err(host_port_err)?;
        Some(lock)
    };
    let mut record = PodRecord {
        key: key.clone(),
        plan: plan.clone(),
        uid: new_uid(),
        sandbox_id: key.clone(),
        shim_address: String::new(),
        containers: plan
            .containers
            .iter()
            .map(|c| (c.name.clone(), format!("{key}_{}", c.name)))
            .collect(),
        network,
        ip: None,
        cni_result: None,
        created: now(),
        seccomp_root: seccomp_root.to_path_buf(),
    };
    if let Err(e) = record.save(paths) {
        // Nothing else of the pod exists yet.
        let _ = remove(&paths.pod_state(&key), true);
        return Err(e);
    }
    drop(lock);
    let ran = (|| -> Result<()> {
        let mut state = crate::pullbackoff::PullState::default();
        state.record(inputs.pulled, jiff::Timestamp::now());
        state.save(&record.pull_state(paths)).map_err(RunError::PullState)?;
        let (shim, rt) = start_sandbox(paths, bins, &mut record, &inputs.volumes, progress)?;
        if waits {
            progress("waiting for images (kubelet's back-off: 10 s, doubled up to 5 min)");
            return spawn_puller(paths, &record, &inputs.keyring);
        }
        create_and_start(paths, &shim, &record, &rt, &resolved, progress)
    })();
    match ran {
        Ok(()) => Ok(record),
        Err(e) => {
            let _ = delete_record(paths, &record, Some(0));
            Err(e)
        }
    }
}

/// Takes an exclusive `flock(2)` on `<state>/pods` (created if missing), blocking;
/// released when the guard drops.
///
/// Errors: [`RunError::CreateDir`], or [`RunError::Lock`] when it cannot be opened or
/// locked.
fn lock_pods(paths: &Paths) -> Result<nix::fcntl::Flock<fs::File>> {
    let dir = paths.state.join("pods");
    sandbox::hostdir::create_root(&dir).map_err(|source| RunError::CreateDir {
        path: dir.clone(),
        source,
    })?;
    let mut file = fs::File::open(&dir).map_err(|source| RunError::Lock {
        path: dir.clone(),
        source,
    })?;
    loop {
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive) {
            Ok(lock) => return Ok(lock),
            Err((f, nix::Error::EINTR)) => file = f,
            Err((_, errno)) => {
                return Err(RunError::Lock {
                    path: dir,
                    source: errno.into(),
                })
            }
        }
    }
}

/// The host ports the pods recorded here hold (but pod `key`): what a new pod's ports
/// are checked against in embedded mode. A record is written before anything of its pod
/// runs and removed after its network is gone, so it covers every mapping peapod made.
///
/// Errors: a record that cannot be parsed ([`list`]).
fn held_host_ports(paths: &Paths, key: &str) -> Result<Vec<hostports::HeldPorts>> {
    Ok(list(paths)?
        .into_iter()
        .filter(|r| r.key != key)
        .map(|r| {
            let claims = hostports::claims(&r.plan);
            (r.plan.namespace, r.plan.name, claims)
        })
        .filter(|(_, _, claims)| !claims.is_empty())
        .collect())
}

/// Container `c`'s image from the store.
fn resolve_image(store: &Store, c: &ContainerPlan) -> Result<crate::images::Image> {
    let image = crate::images::normalize(&c.image).map_err(|e| RunError::ImageReference {
        container: c.name.clone(),
        source: Box::new(e),
    })?;
    store.resolve(&image).map_err(|e| RunError::Image {
        container: c.name.clone(),
        image,
        source: Box::new(e),
    })
}

/// The pod without its containers: volumes written, the sandbox task created and
/// started in a new shim, the network attached. Returns the shim and what the
/// containers' specs need of the pod.
fn start_sandbox(
    paths: &Paths,
    bins: &Binaries,
    record: &mut PodRecord,
    volumes: &ResolvedVolumes,
    progress: &dyn Fn(&str),
) -> Result<(Shim, PodRuntime)> {
    let plan = record.plan.clone();
    let state = paths.pod_state(&record.key);
    let data = paths.pod_data(&record.key);
    let mut rt = PodRuntime {
        uid: record.uid.clone(),
        sandbox_id: record.sandbox_id.clone(),
        pause_pid: 0,
        ip: String::new(),
        clamp_oom_score_adj: !crate::pods::can_lower_oom_score_adj(),
        seccomp_root: record.seccomp_root.clone(),
        sys_root: PathBuf::from(SYS_ROOT),
        volumes_dir: paths.pod_volumes(&record.key),
    };
    for warning in crate::pods::clamp_warnings(&plan, &rt) {
        progress(&warning);
    }

    // Volumes first, as kubelet mounts them before it creates the sandbox: no container of
    // the pod exists while their files are written (`pod.json` is saved, so a failure or
    // `delete` tears them down).
    create_private_dir(&data)?;
    crate::volumes::set_up(
        &rt.volumes_dir,
        &plan,
        volumes,
        &record.uid,
        sandbox::pod::tmpfs_size(None, plan.totals.memory_limit, crate::manifest::memory_capacity()),
    )
    .map_err(|source| RunError::SetUpVolumes {
        pod: plan.name.clone(),
        source,
    })?;

    // The sandbox: peapod-pause bind-mounted alone in its rootfs.
    let sandbox_bundle = state.join("bundles").join("sandbox");
    create_dir(&sandbox_bundle)?;
    sandbox::pod::prepare_pause_root(&sandbox_bundle.join("rootfs")).map_err(RunError::PauseBinary)?;
    let spec = sandbox_spec(&plan, &rt, &bins.pause).map_err(|source| RunError::Profiles {
        pod: plan.name.clone(),
        source,
    })?;
    write_json(&sandbox_bundle.join("config.json"), &spec, true)?;
    write_private(&record.shim_log(paths), b"")?;
    progress("starting the pod sandbox");
    let sandbox_err = |source| RunError::StartSandbox {
        pod: plan.name.clone(),
        source,
    };
    let shim = Shim::start(
        &bins.shim,
        &record.sandbox_id,
        &sandbox_bundle,
        Some(&record.event_log(paths)),
    )
    .map_err(sandbox_err)?;
    record.shim_address = shim.address().to_string();
    record.save(paths)?;
    let pid = shim
        .create(&record.sandbox_id, &sandbox_bundle, &[], &TaskIo::default())
        .map_err(sandbox_err)?;
    shim.start_task(&record.sandbox_id, "").map_err(sandbox_err)?;
    rt.pause_pid = pause_pid(pid)?;

    let netns = format!("/proc/{pid}/ns/net");
    let attach_err = |ifname| {
        let pod = plan.name.clone();
        move |source| RunError::AttachNetwork { pod, ifname, source }
    };
    match record.network {
        NetworkMode::Cni => {
            progress("attaching the pod network");
            let att = Network::peapod_default()
                .with_port_mappings(&hostports::port_mappings(&plan))
                .add(&record.uid, &netns, "eth0")
                .map_err(attach_err("eth0"))?;
            record.ip = att.ip.clone();
            record.cni_result = Some(att.result);
            record.save(paths)?;
            Network::loopback()
                .add(&record.uid, &netns, "lo")
                .map_err(attach_err("lo"))?;
        }
        NetworkMode::None => {
            Network::loopback()
                .add(&record.uid, &netns, "lo")
                .map_err(attach_err("lo"))?;
        }
        NetworkMode::Host => {}
    }
    rt.ip = record.ip.clone().unwrap_or_default();
    Ok((shim, rt))
}

/// Creates every container's task in the pod's shim in declaration order, then starts
/// them all at once.
fn create_and_start(
    paths: &Paths,
    shim: &Shim,
    record: &PodRecord,
    rt: &PodRuntime,
    images: &[crate::images::Image],
    progress: &dyn Fn(&str),
) -> Result<()> {
    create_dir(&paths.pod_data(&record.key).join("logs"))?;
    for (c, image) in record.plan.containers.iter().zip(images) {
        progress(&format!("creating container {}", c.name));
        create_task(paths, shim, record, rt, c, image)?;
    }

    // Started all at once; the shim holds each back until its turn (KEP-753 order).
    progress("starting containers");
    let starts: Vec<_> = record
        .containers
        .iter()
        .map(|(name, id)| {
            let (name, id, address) = (name.clone(), id.clone(), record.shim_address.clone());
            std::thread::spawn(move || {
                Shim::connect(&address)
                    .and_then(|s| s.start_task(&id, ""))
                    .map_err(|e| (name, e))
            })
        })
        .collect();
    let mut errors = Vec::new();
    for s in starts {
        if let Err((name, e)) = s.join().expect("start thread") {
            errors.push(format!("{name}: {e}"));
        }
    }
    if !errors.is_empty() {
        // An init container that failed is the pod's business (Failed phase), not run's.
        progress(&format!("some containers did not start: {}", errors.join("; ")));
    }
    Ok(())
}

/// The sandbox's pid as a `pid_t`.
fn pause_pid(pid: u32) -> Result<i32> {
    i32::try_from(pid).map_err(|source| RunError::SandboxPid { pid, source })
}

/// Writes container `c`'s bundle (spec, rootfs dir) and its layer's upper and work dirs,
/// and creates its task in the pod's shim (task id from `record`), logging to its file.
fn create_task(
    paths: &Paths,
    shim: &Shim,
    record: &PodRecord,
    rt: &PodRuntime,
    c: &ContainerPlan,
    image: &crate::images::Image,
) -> Result<()> {
    let task_id = container_task(record, &c.name)?;
    let bundle = paths.pod_state(&record.key).join("bundles").join(&c.name);
    create_dir(&bundle.join("rootfs"))?;
    let layer = paths.pod_data(&record.key).join("layers").join(&c.name);
    let (upper, work) = (layer.join("upper"), layer.join("work"));
    create_dir(&upper)?;
    create_dir(&work)?;
    let config = ImageConfig {
        entrypoint: image.entrypoint.clone(),
        cmd: image.cmd.clone(),
        env: image.env.clone(),
        working_dir: image.working_dir.clone().unwrap_or_default(),
        user: image.user.clone().unwrap_or_default(),
    };
    let spec = container_spec(&record.plan, c, &config, rt).map_err(|source| RunError::ContainerSpec {
        container: c.name.clone(),
        source,
    })?;
    write_json(&bundle.join("config.json"), &spec, true)?;
    let log = record.log_path(paths, &c.name);
    // Kubernetes' CRI log format, as containerd writes it under kubelet.
    let io = TaskIo {
        stdout: format!("file://{}?format=cri", log.display()),
        stderr: format!("file://{}?format=cri", log.display()),
        terminal: c.tty,
        ..Default::default()
    };
    shim.create(task_id, &bundle, &[image.rootfs_mount(&upper, &work)], &io)
        .map_err(|source| RunError::CreateTask {
            container: c.name.clone(),
            source,
        })?;
    Ok(())
}

/// Creates and starts one more container in the running pod `record`, as CRI's
/// CreateContainer + StartContainer do in a pod containerd already runs: its image
/// resolved, its bundle written, its task created and started in the pod's shim (which
/// holds an app back until the pod's sidecars run, KEP-753). The record and `pod.json`
/// gain it (task id `<key>_<name>`). Returns the task id once the start call returned.
///
/// Errors: a name already in the pod, an image not in the store, a pod whose shim or
/// sandbox is gone, or the shim's refusal; whatever was created for the container is
/// removed again.
pub fn add_container(paths: &Paths, record: &mut PodRecord, c: &ContainerPlan) -> Result<String> {
    if record.task_id(&c.name).is_some() {
        return Err(RunError::ContainerExists {
            pod: record.plan.name.clone(),
            container: c.name.clone(),
        });
    }
    let image = resolve_image(&paths.images()?, c)?;
    let shim = connect(record)?;
    let rt = pod_runtime(paths, record, &shim)?;
    let task_id = format!("{}_{}", record.key, c.name);
    record.plan.containers.push(c.clone());
    record.containers.push((c.name.clone(), task_id.clone()));
    let started = (|| -> Result<()> {
        create_task(paths, &shim, record, &rt, c, &image)?;
        record.save(paths)?;
        shim.start_task(&task_id, "").map_err(|source| RunError::StartTask {
            container: c.name.clone(),
            source,
        })?;
        Ok(())
    })();
    match started {
        Ok(()) => Ok(task_id),
        Err(e) => {
            let _ = remove_container(paths, record, &c.name);
            Err(RunError::AddContainer {
                container: c.name.clone(),
                pod: record.plan.name.clone(),
                source: Box::new(e),
            })
        }
    }
}

/// What the containers' specs need of the running pod `record`: its sandbox's pid as its
/// shim reports it, its IP and paths.
///
/// Errors: [`RunError::SandboxState`] when the shim cannot tell the sandbox's state.
fn pod_runtime(paths: &Paths, record: &PodRecord, shim: &Shim) -> Result<PodRuntime> {
    let sandbox_pid = shim
        .state(&record.sandbox_id, "")
        .map_err(|source| RunError::SandboxState {
            pod: record.plan.name.clone(),
            source,
        })?
        .pid;
    Ok(PodRuntime {
        uid: record.uid.clone(),
        sandbox_id: record.sandbox_id.clone(),
        pause_pid: pause_pid(sandbox_pid)?,
        ip: record.ip.clone().unwrap_or_default(),
        clamp_oom_score_adj: !crate::pods::can_lower_oom_score_adj(),
        seccomp_root: record.seccomp_root.clone(),
        sys_root: PathBuf::from(SYS_ROOT),
        volumes_dir: paths.pod_volumes(&record.key),
    })
}

/// The hidden subcommand the image puller runs as (`peapod --root R --state S
/// pull-back-off <key>`), also how `delete` recognises it.
pub const PULLER_COMMAND: &str = "pull-back-off";

/// Leaves behind the process that waits out pod `record`'s image pull back-off: this
/// binary again as [`PULLER_COMMAND`], in a process group of its own (it outlives the
/// CLI; a Ctrl-C to the terminal's foreground group does not reach it), holding the
/// `flock(2)` on the pod's `puller` file so that `delete` can end it and know when it has
/// (the file holds its pid), and reading `keyring` as JSON on its stdin (credentials
/// never touch a file). The lock reaches it as its stdout, a descriptor of the locked
/// file; it moves it aside at once ([`keep_puller_lock`]). Its stderr goes to
/// `puller.log` in the pod's data directory.
///
/// Errors: [`RunError::SpawnPuller`].
pub fn spawn_puller(paths: &Paths, record: &PodRecord, keyring: &crate::images::auth::DockerKeyring) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::process::CommandExt;

    let lock_path = record.puller_lock(paths);
    let err = |path: &Path| {
        let (pod, path) = (record.plan.name.clone(), path.to_path_buf());
        move |source| RunError::SpawnPuller { pod, path, source }
    };
    let file = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(err(&lock_path))?;
    let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, errno)| err(&lock_path)(errno.into()))?;
    let log_path = paths.pod_data(&record.key).join("puller.log");
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(err(&log_path))?;
    let exe = std::env::current_exe().map_err(err(Path::new("/proc/self/exe")))?;
    // The same open file description: the child holds the lock with it.
    let shared = lock.try_clone().map_err(err(&lock_path))?;
    let mut child = std::process::Command::new(&exe)
        .arg("--root")
        .arg(&paths.root)
        .arg("--state")
        .arg(&paths.state)
        .args([PULLER_COMMAND, &record.key])
        .process_group(0)
        .stdin(std::process::Stdio::piped())
        .stdout(shared)
        .stderr(log)
        .spawn()
        .map_err(err(&exe))?;
    let handed = (|| -> std::io::Result<()> {
        (&*lock).write_all(format!("{}\n", child.id()).as_bytes())?;
        let stdin = child.stdin.take().expect("piped stdin");
        serde_json::to_writer(stdin, keyring).map_err(std::io::Error::other)
    })();
    if let Err(source) = handed {
        let _ = child.kill();
        let _ = child.wait();
        return Err(err(&lock_path)(source));
    }
    // Not unlocked: `Flock`'s drop would release the lock for the child too (one open
    // file description); the descriptor closes with this process.
    std::mem::forget(lock);
    // Not waited for: it outlives this process (and is reaped by whoever adopts it).
    Ok(())
}

/// In the image puller ([`PULLER_COMMAND`]), first: keeps the lock that came as stdout on
/// a descriptor of its own (returned; the lock lasts as long as it is open, i.e. the
/// process) and points stdout at stderr (`puller.log`), so that nothing printed lands
/// in the lock file.
///
/// Errors: `dup(2)` failures.
pub fn keep_puller_lock() -> nix::Result<std::os::fd::OwnedFd> {
    let lock = nix::unistd::dup(std::io::stdout())?;
    nix::unistd::dup2_stdout(std::io::stderr())?;
    Ok(lock)
}

/// The image puller's body ([`PULLER_COMMAND`]): waits out pod `key`'s back-off, pulls
/// again with `keyring`'s credentials until its images are in the store, then creates
/// and starts its containers ([`crate::pullbackoff::wait`]).
///
/// Errors: a pod not recorded, an image store that cannot be opened, or
/// [`RunError::WaitImages`].
pub fn wait_for_images(paths: &Paths, key: &str, keyring: &crate::images::auth::DockerKeyring) -> Result<()> {
    let record = load(paths, key)?;
    let store = paths.images()?;
    let chain = |e: &dyn std::error::Error| sandbox::error::chain(e);
    crate::pullbackoff::wait(
        &record.pull_state(paths),
        || crate::imagepull::ensure_images(&store, &record.plan, keyring, &|_| {}).map_err(|e| chain(&e)),
        || resume(paths, &record).map_err(|e| chain(&e)),
        &jiff::Timestamp::now,
        &std::thread::sleep,
    )
    .map_err(|source| RunError::WaitImages {
        pod: record.plan.name.clone(),
        source,
    })
}

/// Creates and starts the containers of pod `record`, whose sandbox runs without them
/// (it waited for its images).
fn resume(paths: &Paths, record: &PodRecord) -> Result<()> {
    let store = paths.images()?;
    let images = record
        .plan
        .containers
        .iter()
        .map(|c| resolve_image(&store, c))
        .collect::<Result<Vec<_>>>()?;
    let shim = connect(record)?;
    let rt = pod_runtime(paths, record, &shim)?;
    create_and_start(paths, &shim, record, &rt, &images, &|_| {})
}

/// Ends pod `record`'s image puller, if one runs: SIGKILL to the pid in its lock file
/// (when that process is the puller), until the lock is free, i.e. the process is gone.
///
/// Errors: [`RunError::Lock`], or [`RunError::PullerStuck`] after 10 s.
fn stop_puller(paths: &Paths, record: &PodRecord) -> Result<()> {
    use nix::fcntl::{Flock, FlockArg};

    let path = record.puller_lock(paths);
    let Ok(mut file) = fs::File::open(&path) else {
        // The pod never waited for an image.
        return Ok(());
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(_) => return Ok(()),
            Err((f, nix::Error::EWOULDBLOCK)) => file = f,
            Err((_, errno)) => {
                return Err(RunError::Lock {
                    path,
                    source: errno.into(),
                })
            }
        }
        let pid: i32 = fs::read_to_string(&path)
            .ok()
            .and_then(|p| p.lines().next().and_then(|l| l.trim().parse().ok()))
            .unwrap_or(0);
        let is_puller = pid > 0
            && fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == PULLER_COMMAND.as_bytes()));
        if is_puller {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        if std::time::Instant::now() > deadline {
            return Err(RunError::PullerStuck {
                pod: record.plan.name.clone(),
                pid,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A connection to the pod's shim.
fn connect(record: &PodRecord) -> Result<Shim> {
    Shim::connect(&record.shim_address).map_err(|source| RunError::ConnectShim {
        pod: record.plan.name.clone(),
        source,
    })
}

/// The task id of container `name`, or [`RunError::NoContainer`].
fn container_task<'a>(record: &'a PodRecord, name: &str) -> Result<&'a str> {
    record.task_id(name).ok_or_else(|| RunError::NoContainer {
        pod: record.plan.name.clone(),
        container: name.to_string(),
    })
}

/// Waits until container `name` of the pod has exited; returns its exit status (128 +
/// signal number for a signalled process).
pub fn wait_container(record: &PodRecord, name: &str) -> Result<u32> {
    let id = container_task(record, name)?;
    connect(record)?.wait(id, "").map_err(|source| RunError::Wait {
        container: name.to_string(),
        source,
    })
}

/// Removes container `name` from the running pod, as CRI's RemoveContainer does: SIGKILL
/// if it still runs, its task deleted (the shim removes its cgroup and rootfs mount), its
/// bundle, layer and log removed; the record and `pod.json` forget it.
pub fn remove_container(paths: &Paths, record: &mut PodRecord, name: &str) -> Result<()> {
    let id = container_task(record, name)?.to_string();
    let shim = connect(record)?;
    if shim.state(&id, "").is_ok() {
        let _ = shim.kill(&id, "", 9, true);
        let _ = shim.wait(&id, "");
        delete_task(&shim, &id)?;
    }
    for dir in [
        paths.pod_state(&record.key).join("bundles").join(name),
        paths.pod_data(&record.key).join("layers").join(name),
    ] {
        remove(&dir, true)?;
    }
    remove(&record.log_path(paths, name), false)?;
    record.containers.retain(|(n, _)| n != name);
    record.plan.containers.retain(|c| c.name != name);
    record.save(paths)
}

/// What one container is doing, from the shim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    /// Container name.
    pub name: String,
    /// `created`, `running`, `stopped`, `paused`, or `unknown`.
    pub state: String,
    /// Exit code once stopped.
    pub exit_code: Option<u32>,
}

/// The pod's phase and containers, short form (see [`observe`] for the whole status).
pub fn status(paths: &Paths, record: &PodRecord) -> (String, Vec<ContainerStatus>) {
    let view = observe(paths, record);
    let containers = view
        .observed
        .iter()
        .map(|o| {
            let (state, exit_code) = match &o.state {
                Observation::Absent | Observation::Waiting { .. } => ("unknown", None),
                Observation::Created => ("created", None),
                Observation::Running(_) => ("running", None),
                Observation::Exited(e) => ("stopped", Some(e_code(e))),
                Observation::BackOff => ("stopped", o.last_exit.as_ref().map(e_code)),
            };
            ContainerStatus {
                name: o.name.clone(),
                state: state.to_string(),
                exit_code,
            }
        })
        .collect();
    (view.status.phase.clone().unwrap_or_default(), containers)
}

fn e_code(e: &Exit) -> u32 {
    u32::try_from(e.code).unwrap_or(255)
}

/// A pod as the CLI shows it: kubelet's `v1.PodStatus`, the observations it was
/// computed from, and the events from the shim's event log.
#[derive(Debug, Clone)]
pub struct PodView {
    /// Status (phase, conditions, container statuses).
    pub status: k8s_openapi::api::core::v1::PodStatus,
    /// One per container, declaration order.
    pub observed: Vec<Observed>,
    /// What happened, oldest first.
    pub events: Vec<PodEvent>,
}

fn timestamp(t: &containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp) -> Option<jiff::Timestamp> {
    (t.seconds > 0)
        .then(|| jiff::Timestamp::new(t.seconds, t.nanos).ok())
        .flatten()
}

/// Runs: a container's runs in order (start time, then how it ended).
type Runs = std::collections::HashMap<String, Vec<Exit>>;

/// What the pod's event log tells: each container's runs, the events to show, and what
/// the probes found in each container's latest run.
fn history(paths: &Paths, record: &PodRecord) -> (Runs, Vec<PodEvent>, HashMap<String, ProbeStatus>) {
    use containerd_shim_protos::events::task::{TaskCreate, TaskExit, TaskOOM, TaskStart};
    use containerd_shim_protos::protobuf::Message;

    let log = proto::eventlog::read(&record.event_log(paths)).unwrap_or_default();
    let name_of = |id: &str| record.containers.iter().find(|(_, i)| i == id).map(|(n, _)| n.clone());
    // Per container: the runs seen in the log (start time, then its exit).
    let mut runs = Runs::new();
    let mut events = Vec::new();
    let mut probes: HashMap<String, ProbeStatus> = HashMap::new();
    for envelope in &log {
        let time = envelope.timestamp.as_ref().and_then(timestamp).unwrap_or_default();
        if let Some(h) = proto::eventlog::HookRecord::from_envelope(envelope) {
            let Some(name) = name_of(&h.container_id) else { continue };
            hook_record(
                record,
                &name,
                &h,
                time,
                probes.entry(name.clone()).or_default(),
                &mut events,
            );
            continue;
        }
        if let Some(p) = proto::eventlog::ProbeRecord::from_envelope(envelope) {
            let Some(name) = name_of(&p.container_id) else { continue };
            probe_record(
                &record.plan,
                &name,
                &p,
                time,
                probes.entry(name.clone()).or_default(),
                &mut events,
            );
            continue;
        }
        let value = &envelope.event.value;
        let (id, what) = match envelope.topic.as_str() {
            "/tasks/create" => match TaskCreate::parse_from_bytes(value) {
                Ok(e) => (e.container_id, "create"),
                Err(_) => continue,
            },
            "/tasks/start" => match TaskStart::parse_from_bytes(value) {
                Ok(e) => (e.container_id, "start"),
                Err(_) => continue,
            },
            "/tasks/exit" => match TaskExit::parse_from_bytes(value) {
                // Exits of execs are not the container's.
                Ok(e) if e.id == e.container_id || e.id.is_empty() => {
                    let Some(name) = name_of(&e.container_id) else { continue };
                    let run = runs.entry(name.clone()).or_default();
                    if let Some(last) = run.last_mut() {
                        last.code = i32::try_from(e.exit_status).unwrap_or(255);
                        last.finished = e.exited_at.as_ref().and_then(timestamp).or(Some(time));
                        events.push(exit_event(time, &name, last));
                    }
                    continue;
                }
                _ => continue,
            },
            "/tasks/oom" => match TaskOOM::parse_from_bytes(value) {
                Ok(e) => (e.container_id, "oom"),
                Err(_) => continue,
            },
            _ => continue,
        };
        let Some(name) = name_of(&id) else { continue };
        let run = runs.entry(name.clone()).or_default();
        match what {
            "create" => events.push(PodEvent {
                time,
                warning: false,
                reason: "Created".into(),
                message: format!("Created container {name}"),
            }),
            "start" => {
                // A new run: its probes start over.
                probes.insert(name.clone(), ProbeStatus::default());
                run.push(Exit {
                    started: Some(time),
                    ..Default::default()
                });
                events.push(PodEvent {
                    time,
                    warning: false,
                    reason: "Started".into(),
                    message: format!("Started container {name}"),
                });
            }
            _ => {
                if let Some(last) = run.last_mut() {
                    last.oom = true;
                }
                events.push(PodEvent {
                    time,
                    warning: true,
                    reason: "OOMKilling".into(),
                    message: format!("Memory cgroup out of memory: killed a process of container {name}"),
                });
            }
        }
    }
    (runs, events, probes)
}

/// Applies one hook record of container `name` to its latest run's `status`, and adds
/// kubelet's event for a failure (`FailedPostStartHook`, `FailedPreStopHook`, Warning,
/// with kubelet's message).
fn hook_record(
    record: &PodRecord,
    name: &str,
    h: &proto::eventlog::HookRecord,
    time: jiff::Timestamp,
    status: &mut ProbeStatus,
    events: &mut Vec<PodEvent>,
) {
    use sandbox::pod::hooks::HookKind;

    if h.ok {
        status.post_started |= h.hook == HookKind::PostStart;
        return;
    }
    let reason = match h.hook {
        HookKind::PostStart => "FailedPostStartHook",
        HookKind::PreStop => "FailedPreStopHook",
    };
    events.push(PodEvent {
        time,
        warning: true,
        reason: reason.into(),
        message: format!(
            "{} for Container {name:?} in Pod \"{}_{}({})\" failed - error: {}",
            h.handler, record.plan.name, record.plan.namespace, record.uid, h.message
        ),
    });
}

/// Applies one probe record of container `name` to its latest run's `status`, and adds
/// kubelet's events for it: `Unhealthy` (Warning) on the first failure of a run of
/// them, `Killing` when a liveness or startup probe's failure kills the container.
fn probe_record(
    plan: &crate::manifest::PodPlan,
    name: &str,
    p: &proto::eventlog::ProbeRecord,
    time: jiff::Timestamp,
    status: &mut ProbeStatus,
    events: &mut Vec<PodEvent>,
) {
    use sandbox::pod::probe::{ProbeKind, ProbeResult};

    let ok = p.result == ProbeResult::Success;
    match p.probe {
        ProbeKind::Startup if p.changed => status.started = ok,
        ProbeKind::Readiness if p.changed => {
            status.ready = ok;
            status.ready_changed = Some(time);
        }
        _ => {}
    }
    if p.unhealthy {
        events.push(PodEvent {
            time,
            warning: true,
            reason: "Unhealthy".into(),
            message: format!("{} probe failed: {}", p.probe.title(), p.message),
        });
    }
    if p.kill {
        let restarts = plan.restart_policy != "Never";
        events.push(PodEvent {
            time,
            warning: false,
            reason: "Killing".into(),
            message: format!(
                "Container {name} failed {} probe{}",
                p.probe.title().to_ascii_lowercase(),
                if restarts { ", will be restarted" } else { "" }
            ),
        });
    }
}

/// Observes a pod: live states from its shim (`State`), start times, exit history and
/// OOM kills from its event log. A shim that cannot be reached leaves only what the log
/// tells, and the phase `Unknown`.
///
/// The live states are asked for before the log is read: the shim appends a container's
/// `TaskOOM` and `TaskExit` to the log before `State` can answer `STOPPED` (both under
/// its task lock), so a container seen stopped has its whole run in what is read next.
/// The other order could pair a stopped state with a log read just before its OOM kill
/// was written, and report `Error` for an `OOMKilled` container.
pub fn observe(paths: &Paths, record: &PodRecord) -> PodView {
    use containerd_shim_protos::types::task::Status as S;

    let shim = Shim::connect(&record.shim_address).ok();
    let sandbox_state = shim.as_ref().and_then(|s| s.state(&record.sandbox_id, "").ok());
    let lives: Vec<_> = record
        .containers
        .iter()
        .map(|(_, id)| shim.as_ref().and_then(|s| s.state(id, "").ok()))
        .collect();
    let (mut runs, mut events, mut probes) = history(paths, record);
    // What the pod's images came to (kubelet's image events; containers waiting for one).
    let pulls = crate::pullbackoff::PullState::load(&record.pull_state(paths))
        .ok()
        .flatten()
        .unwrap_or_default();
    events.extend(pulls.events.iter().cloned());
    // A shim that does not answer (killed, crashed) cannot tell anything live.
    let reachable = sandbox_state.is_some();
    let sandbox_ready = sandbox_state.is_some_and(|st| st.status.enum_value_or_default() == S::RUNNING);
    // The shim restarts by the pod's policy (embedded pods always carry one); sidecars
    // only until every app container is done for good.
    let policy: Option<sandbox::pod::RestartPolicy> = record.plan.restart_policy.parse().ok();
    let will_restart = |role, code, apps_done| policy.is_some_and(|p| p.restarts(role, code, apps_done));
    let runs_done = record
        .plan
        .containers
        .iter()
        .filter(|c| c.role == sandbox::pod::Role::App)
        .all(|c| {
            runs.get(&c.name)
                .and_then(|r| r.last())
                .is_some_and(|e| e.finished.is_some() && !will_restart(c.role, e.code, false))
        });
    let mut observed = Vec::new();
    for ((c, (name, id)), live) in record.plan.containers.iter().zip(&record.containers).zip(lives) {
        let history = runs.remove(name).unwrap_or_default();
        let mut backoff = None;
        let state = match live.as_ref().map(|s| s.status.enum_value_or_default()) {
            Some(S::RUNNING | S::PAUSED) => Observation::Running(history.last().and_then(|r| r.started)),
            Some(S::CREATED) => Observation::Created,
            Some(S::STOPPED) => {
                let st = live.as_ref().expect("live");
                let mut exit = history.last().cloned().unwrap_or_default();
                exit.code = i32::try_from(st.exit_status).unwrap_or(255);
                exit.finished = st.exited_at.as_ref().and_then(timestamp).or(exit.finished);
                if sandbox_ready && will_restart(c.role, exit.code, runs_done) {
                    backoff = Some(exit);
                    Observation::BackOff
                } else {
                    Observation::Exited(exit)
                }
            }
            _ => match history.last() {
                Some(e) if e.finished.is_some() => Observation::Exited(e.clone()),
                _ => match (pulls.wait_of(name), &pulls.failure) {
                    (Some(w), _) => Observation::Waiting {
                        reason: w.reason.clone(),
                        message: w.message.clone(),
                    },
                    (None, Some(failure)) if live.is_none() => Observation::Waiting {
                        reason: "CreateContainerError".into(),
                        message: failure.clone(),
                    },
                    _ => Observation::Absent,
                },
            },
        };
        // Waiting for its restart, the run that ended is the last termination.
        let restarts = history.len().saturating_sub(1);
        let last_exit = backoff.or_else(|| (restarts > 0).then(|| history[history.len() - 2].clone()));
        observed.push(Observed {
            name: name.clone(),
            container_id: format!("peapod://{id}"),
            image: c.image.clone(),
            state,
            restart_count: i32::try_from(restarts).unwrap_or(i32::MAX),
            last_exit,
            probes: probes.remove(name).unwrap_or_default(),
        });
    }
    let started = jiff::Timestamp::from_second(i64::try_from(record.created).unwrap_or(0)).ok();
    let mut status = pod_status(&record.plan, &observed, sandbox_ready, record.ip.as_deref(), started);
    if !reachable {
        status.phase = Some("Unknown".into());
    }
    events.sort_by_key(|e| e.time);
    PodView {
        status,
        observed,
        events,
    }
}

/// The time window of a container's run in the shared log file (restarts append to it):
/// the current (latest) run, or with `previous` the one before it. Runs are split where
/// the later one was created (its `TaskCreate`): a run's output may be timestamped before
/// its `TaskStart` is published and after its exit was reaped (the copier drains the pipe
/// then), but never after the restart's create, which follows the published exit.
///
/// Errors: `previous` without an earlier run (kubectl's message).
pub fn log_window(
    paths: &Paths,
    record: &PodRecord,
    name: &str,
    previous: bool,
) -> Result<(Option<jiff::Timestamp>, Option<jiff::Timestamp>)> {
    let (runs, _, _) = history(paths, record);
    let runs = runs.get(name).map(Vec::as_slice).unwrap_or_default();
    let creates = create_times(paths, record, name);
    // Where run `i` begins in the log; the first run also gets what came before.
    let from = |i: usize| {
        let started = runs.get(i).and_then(|r| r.started).filter(|_| i > 0)?;
        creates.iter().rev().find(|t| **t <= started).copied().or(Some(started))
    };
    let pick = if previous {
        runs.len().checked_sub(2)
    } else {
        runs.len().checked_sub(1)
    };
    match pick {
        Some(i) if previous => Ok((from(i), from(i + 1))),
        Some(i) => Ok((from(i), None)),
        None if previous => Err(RunError::NoPreviousRun {
            pod: record.plan.name.clone(),
            container: name.to_string(),
        }),
        None => Ok((None, None)),
    }
}

/// When each task of container `name` was created (`TaskCreate` envelopes), in order.
fn create_times(paths: &Paths, record: &PodRecord, name: &str) -> Vec<jiff::Timestamp> {
    use containerd_shim_protos::events::task::TaskCreate;
    use containerd_shim_protos::protobuf::Message;
    let Some(id) = record.containers.iter().find(|(n, _)| n == name).map(|(_, i)| i) else {
        return Vec::new();
    };
    proto::eventlog::read(&record.event_log(paths))
        .unwrap_or_default()
        .iter()
        .filter(|e| e.topic == "/tasks/create")
        .filter(|e| TaskCreate::parse_from_bytes(&e.event.value).is_ok_and(|c| &c.container_id == id))
        .filter_map(|e| e.timestamp.as_ref().and_then(timestamp))
        .collect()
}

/// Keeps the manifest as written next to the pod's record (for `get -o yaml`).
pub fn save_manifest(paths: &Paths, record: &PodRecord, pod: &k8s_openapi::api::core::v1::Pod) -> Result<()> {
    write_json(&paths.pod_state(&record.key).join("manifest.json"), pod, false)
}

/// The pod as the CLI prints it.
pub fn summary(paths: &Paths, record: &PodRecord) -> crate::display::PodSummary {
    let view = observe(paths, record);
    let manifest = fs::read(paths.pod_state(&record.key).join("manifest.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    crate::display::PodSummary {
        plan: record.plan.clone(),
        manifest,
        uid: record.uid.clone(),
        created: jiff::Timestamp::from_second(i64::try_from(record.created).unwrap_or(0)).ok(),
        status: view.status,
        events: view.events,
        runtime: "embedded".into(),
    }
}

/// How long `delete` waits for the shim to exit after `Shutdown`.
const SHIM_EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Deletes a pod: termination through the sandbox (SIGTERM to all, grace, SIGKILL),
/// then tasks, network and directories. `grace` overrides the pod's grace period (s).
pub fn delete(paths: &Paths, key: &str, grace: Option<u64>) -> Result<()> {
    let record = load(paths, key)?;
    delete_record(paths, &record, grace)
}

fn delete_record(paths: &Paths, record: &PodRecord, grace: Option<u64>) -> Result<()> {
    // First, so nothing creates containers in the pod while it goes.
    stop_puller(paths, record)?;
    if let Ok(shim) = Shim::connect(&record.shim_address) {
        // Taken while the sandbox task exists (Connect names a task): after Shutdown the
        // shim exits on its own, and the pod is only gone once it has.
        let shim_exit = shim.shim_pid(&record.sandbox_id).ok().and_then(ShimExit::watch);
        if let Some(g) = grace {
            let _ = shim.set_grace_period(&record.sandbox_id, g);
        }
        if shim.state(&record.sandbox_id, "").is_ok() {
            // SIGTERM to the sandbox: the shim terminates the whole pod.
            let _ = shim.kill(&record.sandbox_id, "", 15, false);
            let _ = shim.wait(&record.sandbox_id, "");
        }
        for (_, id) in &record.containers {
            if shim.state(id, "").is_ok() {
                let _ = shim.kill(id, "", 9, true);
                let _ = shim.wait(id, "");
                delete_task(&shim, id)?;
            }
        }
        if shim.state(&record.sandbox_id, "").is_ok() {
            shim.delete(&record.sandbox_id, "")
                .map_err(|source| RunError::DeleteSandbox {
                    id: record.sandbox_id.clone(),
                    source,
                })?;
        }
        shim.shutdown().map_err(|source| RunError::ShutdownShim {
            pod: record.plan.name.clone(),
            source,
        })?;
        if let Some(exit) = shim_exit {
            // Bounded: a shim that hangs in its exit must not hang `delete`; the leak
            // checks of the tests would then name it.
            exit.wait(SHIM_EXIT_TIMEOUT);
        }
    } else if !record.shim_address.is_empty() {
        // The shim died (killed, crashed): clean up as containerd does for a lost shim,
        // with the shim binary's `delete`, containers first (the pod cgroup goes last).
        let bins = Binaries::find()?;
        let state = paths.pod_state(&record.key).join("bundles");
        let cleanup = |id: &str, bundle: &Path| {
            Shim::cleanup(&bins.shim, id, bundle).map_err(|source| RunError::Cleanup {
                id: id.to_string(),
                source,
            })
        };
        for (name, id) in &record.containers {
            let bundle = state.join(name);
            if bundle.is_dir() {
                cleanup(id, &bundle)?;
            }
        }
        cleanup(&record.sandbox_id, &state.join("sandbox"))?;
    }
    match record.network {
        NetworkMode::Cni => {
            Network::peapod_default()
                .with_port_mappings(&hostports::port_mappings(&record.plan))
                .del(&record.uid, "", "eth0", record.cni_result.as_deref())
                .map_err(|source| RunError::DetachNetwork {
                    pod: record.plan.name.clone(),
                    source,
                })?;
        }
        NetworkMode::None | NetworkMode::Host => {}
    }
    // The secret, downwardAPI and projected volumes' tmpfs are unmounted first: removing
    // the data directory would empty them, then fail on their mount points.
    crate::volumes::tear_down(&paths.pod_volumes(&record.key)).map_err(|source| RunError::TearDownVolumes {
        pod: record.plan.name.clone(),
        source,
    })?;
    for dir in [paths.pod_data(&record.key), paths.pod_state(&record.key)] {
        remove(&dir, true)?;
    }
    Ok(())
}

/// `Delete` of task `id` (a container's).
fn delete_task(shim: &Shim, id: &str) -> Result<()> {
    shim.delete(id, "").map_err(|source| RunError::DeleteTask {
        id: id.to_string(),
        source,
    })?;
    Ok(())
}

/// The process of an exec in container `name`: `cmd` with the container's user and the
/// default `PATH`; returns it with the container's task id.
fn exec_process(
    record: &PodRecord,
    name: &str,
    cmd: &[String],
    tty: bool,
) -> Result<(String, oci_spec::runtime::Process)> {
    let id = container_task(record, name)?;
    let plan = record
        .plan
        .containers
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| RunError::NoContainer {
            pod: record.plan.name.clone(),
            container: name.to_string(),
        })?;
    let mut env = vec![format!("PATH={}", sandbox::spec::DEFAULT_PATH)];
    if tty {
        env.push("TERM=xterm".into());
    }
    let process_err = |source| RunError::ExecProcess {
        container: name.to_string(),
        source,
    };
    let process = oci_spec::runtime::ProcessBuilder::default()
        .args(cmd.to_vec())
        .env(env)
        .cwd("/")
        .terminal(tty)
        .user(
            oci_spec::runtime::UserBuilder::default()
                .uid(plan.security.run_as_user.unwrap_or(0))
                .gid(plan.security.run_as_group.unwrap_or(0))
                .build()
                .map_err(process_err)?,
        )
        .build()
        .map_err(process_err)?;
    Ok((id.to_string(), process))
}

/// The temporary directory of an exec's output files or FIFOs.
fn exec_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("peapod-exec-")
        .tempdir()
        .map_err(RunError::ExecDir)
}

fn new_exec_id() -> String {
    format!("exec-{}", new_uid().split('-').next().unwrap_or("0"))
}

/// Runs `cmd` in container `name` of the pod and returns (exit status, stdout, stderr):
/// non-interactive, the output collected in files and returned once the process exited.
pub fn exec(record: &PodRecord, name: &str, cmd: &[String]) -> Result<(u32, Vec<u8>, Vec<u8>)> {
    let (id, process) = exec_process(record, name, cmd, false)?;
    let shim = connect(record)?;
    let tmp = exec_dir()?;
    let (out, err) = (tmp.path().join("stdout"), tmp.path().join("stderr"));
    let exec_id = new_exec_id();
    let io = TaskIo {
        stdout: format!("file://{}", out.display()),
        stderr: format!("file://{}", err.display()),
        ..Default::default()
    };
    let exec_err = |source| RunError::Exec {
        container: name.to_string(),
        source,
    };
    shim.exec(&id, &exec_id, &process, &io).map_err(exec_err)?;
    shim.start_task(&id, &exec_id).map_err(exec_err)?;
    let code = shim.wait(&id, &exec_id).map_err(exec_err)?;
    shim.delete(&id, &exec_id).map_err(exec_err)?;
    let read = |p: &Path| fs::read(p).unwrap_or_default();
    Ok((code, read(&out), read(&err)))
}

/// The shim's `Stats` of container `name`: (type URL, encoded cgroup metrics), as
/// [`Shim::stats`] returns them.
pub fn stats(record: &PodRecord, name: &str) -> Result<(String, Vec<u8>)> {
    let id = container_task(record, name)?;
    let shim = connect(record)?;
    shim.stats(id).map_err(|source| RunError::Stats {
        container: name.to_string(),
        source,
    })
}

/// Puts a terminal in raw mode (no echo, no line editing, no signals from keys) until
/// dropped, so keystrokes reach the container's terminal as typed.
pub(crate) struct RawMode {
    fd: std::os::fd::OwnedFd,
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    /// Raw mode for terminal `fd`; `None` when it is not a terminal.
    pub(crate) fn enter(fd: std::os::fd::BorrowedFd<'_>) -> Option<RawMode> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let saved = tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(fd, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode {
            fd: fd.try_clone_to_owned().ok()?,
            saved,
        })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(&self.fd, nix::sys::termios::SetArg::TCSANOW, &self.saved);
    }
}

/// Runs `cmd` in container `name` attached to this process's stdin, stdout and stderr
/// (`exec -i`, `exec -it`), through FIFOs as containerd's clients attach: stdin only
/// with `stdin`; with `tty` the process gets a terminal sized like ours, and ours is raw
/// meanwhile (with `stdin`). Returns the
/// process's exit status.
pub fn exec_attached(record: &PodRecord, name: &str, cmd: &[String], stdin: bool, tty: bool) -> Result<i32> {
    let with_stdin = stdin;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    let (id, process) = exec_process(record, name, cmd, tty)?;
    let shim = connect(record)?;
    let tmp = exec_dir()?;
    let fifo = |n: &str| -> Result<PathBuf> {
        let path = tmp.path().join(n);
        match nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
            Ok(()) => Ok(path),
            Err(source) => Err(RunError::Mkfifo { path, source }),
        }
    };
    let stdin = if with_stdin { Some(fifo("stdin")?) } else { None };
    let stdout = fifo("stdout")?;
    let stderr = if tty { None } else { Some(fifo("stderr")?) };
    let exec_id = new_exec_id();
    let io = TaskIo {
        stdin: stdin
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        stdout: stdout.to_string_lossy().into_owned(),
        stderr: stderr
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        terminal: tty,
    };
    let exec_err = |source| RunError::Exec {
        container: name.to_string(),
        source,
    };
    shim.exec(&id, &exec_id, &process, &io).map_err(exec_err)?;
    // The shim opens the FIFOs when the exec starts: until then these opens block, so
    // they happen in the copying threads.
    let copy_out = |path: &Path, to_stderr: bool| -> Result<std::thread::JoinHandle<()>> {
        let path = path.to_path_buf();
        Ok(std::thread::spawn(move || {
            let Ok(mut src) = fs::File::open(&path) else { return };
            let mut buf = [0u8; 8192];
            while let Ok(n) = src.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let written = if to_stderr {
                    std::io::stderr()
                        .write_all(&buf[..n])
                        .and_then(|()| std::io::stderr().flush())
                } else {
                    std::io::stdout()
                        .write_all(&buf[..n])
                        .and_then(|()| std::io::stdout().flush())
                };
                if written.is_err() {
                    break;
                }
            }
        }))
    };
    let mut outputs = vec![copy_out(&stdout, false)?];
    if let Some(p) = &stderr {
        outputs.push(copy_out(p, true)?);
    }
    let raw = if tty && with_stdin {
        RawMode::enter(std::io::stdin().as_fd())
    } else {
        None
    };
    shim.start_task(&id, &exec_id).map_err(exec_err)?;
    if tty {
        if let Ok((rows, cols)) = sandbox::sys::window_size(std::io::stdout().as_fd()) {
            let _ = shim.resize_pty(&id, &exec_id, u32::from(cols), u32::from(rows));
        }
    }
    // Input: until our stdin ends (then the process's stdin ends too), or forever while
    // the process runs; never joined, the process exits after the exec.
    let address = record.shim_address.clone();
    let (in_id, in_exec) = (id.clone(), exec_id.clone());
    std::thread::spawn(move || {
        let Some(stdin) = stdin else { return };
        let Ok(mut dst) = fs::OpenOptions::new().write(true).open(&stdin) else {
            return;
        };
        let mut buf = [0u8; 8192];
        let mut src = std::io::stdin();
        while let Ok(n) = src.read(&mut buf) {
            if n == 0 || dst.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        drop(dst);
        if let Ok(s) = Shim::connect(&address) {
            let _ = s.close_stdin(&in_id, &in_exec);
        }
    });
    let code = shim.wait(&id, &exec_id);
    for o in outputs {
        let _ = o.join();
    }
    drop(raw);
    let code = code.map_err(exec_err)?;
    shim.delete(&id, &exec_id).map_err(exec_err)?;
    Ok(i32::try_from(code).unwrap_or(255))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each error of the chain, as `peapod` prints it (`{:#}`: joined with ": ").
    fn chain(e: &dyn std::error::Error) -> Vec<String> {
        let mut out = vec![e.to_string()];
        let mut next = e.source();
        while let Some(s) = next {
            out.push(s.to_string());
            next = s.source();
        }
        out
    }

    /// No link of the chain repeats the one it wraps.
    fn assert_each_cause_once(e: &dyn std::error::Error) {
        let links = chain(e);
        for pair in links.windows(2) {
            assert!(!pair[0].contains(&pair[1]), "{pair:?} in {}", links.join(": "));
        }
    }

    fn paths(dir: &Path) -> Paths {
        Paths {
            root: dir.join("root"),
            state: dir.join("state"),
        }
    }

    #[test]
    fn loading_a_pod_never_run_says_not_found_with_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = load(&paths(dir.path()), "default_web").unwrap_err();
        assert!(matches!(e, RunError::PodNotFound { .. }), "{e:?}");
        let links = chain(&e);
        let want = format!(
            "pod \"default_web\" not found ({})",
            dir.path().join("state/pods/default_web/pod.json").display()
        );
        assert_eq!(links[0], want);
        assert_eq!(links.len(), 2, "{links:?}");
        assert_each_cause_once(&e);
    }

    #[test]
    fn a_corrupt_record_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let paths = paths(dir.path());
        let pod = paths.state.join("pods/default_web");
        fs::create_dir_all(&pod).unwrap();
        fs::write(pod.join("pod.json"), "{").unwrap();
        for e in [list(&paths).unwrap_err(), load(&paths, "default_web").unwrap_err()] {
            assert!(matches!(e, RunError::ParseRecord { .. }), "{e:?}");
            assert_eq!(e.to_string(), format!("parse {}", pod.join("pod.json").display()));
            assert_each_cause_once(&e);
        }
    }

    #[test]
    fn wrapped_steps_print_each_cause_once() {
        let io = || std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let shim = EmbeddedError::Call {
            call: "Start",
            id: "default_web_app".into(),
            message: "exec failed".into(),
        };
        let added = RunError::AddContainer {
            container: "app".into(),
            pod: "web".into(),
            source: Box::new(RunError::StartTask {
                container: "app".into(),
                source: shim,
            }),
        };
        assert_eq!(
            chain(&added).join(": "),
            "add container app to pod web: start container app: Start default_web_app: exec failed"
        );
        for e in [
            added,
            RunError::Remove {
                path: "/run/peapod/pods/default_web".into(),
                source: io(),
            },
            RunError::Mkfifo {
                path: "/tmp/x/stdin".into(),
                source: nix::Error::EEXIST,
            },
            RunError::OpenImages(Box::new(Store::open(Path::new("/proc/no/images")).unwrap_err())),
            RunError::ConnectShim {
                pod: "web".into(),
                source: Shim::connect("unix:///proc/no/shim.sock").err().unwrap(),
            },
            RunError::AttachNetwork {
                pod: "web".into(),
                ifname: "eth0",
                source: CniError::Exec {
                    command: "ADD",
                    plugin: "bridge".into(),
                    binary: "/opt/cni/bin/bridge".into(),
                    source: std::io::ErrorKind::NotFound.into(),
                },
            },
        ] {
            assert_each_cause_once(&e);
        }
    }
}
