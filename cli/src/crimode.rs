//! The `peapod` CLI's CRI mode: the same manifest through a CRI runtime (containerd's CRI
//! plugin with the `peapod` runtime handler), doing what kubelet does for the pod:
//!
//! - `run`: images checked (`ImageStatus`) and pulled as `imagePullPolicy` asks
//!   (`PullImage` with the pull Secrets' credentials; a failure is `ErrImagePull`, a
//!   missing image with `Never` `ErrImageNeverPull`, and nothing is created), the pod's log directory created
//!   (`/var/log/pods/<namespace>_<name>_<uid>`, kubelet's layout), `RunPodSandbox` with
//!   kubelet's labels, peapod's annotations (declared containers and roles, emptyDirs,
//!   pod cgroup sizing, grace period) and the manifest itself as
//!   `kubectl.kubernetes.io/last-applied-configuration`, then `CreateContainer` for every
//!   container in declaration order and `StartContainer` for all at once: peapod's shim
//!   holds each back until its turn (init containers, then sidecars, then apps), as
//!   kubelet's own ordering would.
//! - `delete`: kubelet's `killPodWithSyncResult`: `StopContainer` with the grace period
//!   for every container at once (SIGTERM, then SIGKILL when it expires), then
//!   `StopPodSandbox` and `RemovePodSandbox`, the log directory, and the pod cgroup
//!   (`cgroup_parent`) if the runtime left it.
//! - status: `ListContainers` + `ContainerStatus` (states, times, exit codes, reasons) and
//!   `PodSandboxStatus` (IP), turned into kubelet's pod status by [`crate::podstatus`].
//!
//! Volumes: kubelet fills configMap, secret, downwardAPI and projected volumes on the
//! node and hands the runtime a read-only bind mount; so does the CLI, after
//! `RunPodSandbox` and before the first `CreateContainer`, under
//! `<root>/cri/pods/<namespace>_<name>_<uid>/volumes` (kubelet's
//! `/var/lib/kubelet/pods/<uid>/volumes`, see [`crate::volumes`]); `delete` unmounts and
//! removes them after `RemovePodSandbox`.
//!
//! Nothing else is kept outside the runtime: pods are found by their labels
//! (`app.kubernetes.io/managed-by=peapod`), so any CRI client sees the same pods.
//! The runtime restarts nothing: restarts are kubelet's job, and this CLI is not a
//! daemon.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use proto::cri::{api, CriClient, Error as CallError};

use crate::display::PodSummary;
use crate::images::auth::DockerKeyring;
use crate::images::ImageError;
use crate::manifest::{ContainerPlan, ManifestError, PodPlan, VolumeKind};
use crate::podstatus::{events_from_statuses, pod_status, Exit, Observation, Observed};
use crate::security::{AppArmorProfile, SeccompProfile};

/// Label marking the pods this CLI runs (how `get` finds them).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// kubelet's sandbox and container labels.
pub const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
/// The pod's namespace.
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// The pod's uid.
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
/// A container's name (on containers).
pub const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";
/// kubelet's root of pod log directories.
pub const DEFAULT_POD_LOG_ROOT: &str = "/var/log/pods";
/// How long `PullImage` may take.
const PULL_TIMEOUT: Duration = Duration::from_secs(600);
/// How long `StartContainer` may block: an app container waits in it for the pod's init
/// containers (peapod's start gate).
const START_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// A failed step of CRI mode, naming the endpoint, pod, sandbox, container or path; a
/// failed CRI call is the source (it names the call and the runtime's status).
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The endpoint is not a unix socket.
    #[error("--cri {endpoint:?}: scheme {scheme:?} is not supported (use unix://PATH)")]
    Scheme {
        /// The endpoint as given.
        endpoint: String,
        /// Its scheme.
        scheme: String,
    },
    /// The endpoint's socket could not be connected.
    #[error("CRI endpoint {endpoint}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// Cause.
        #[source]
        source: CallError,
    },
    /// The runtime does not answer CRI v1's `Version`.
    #[error("CRI endpoint {endpoint}: Version")]
    Version {
        /// The endpoint.
        endpoint: String,
        /// Cause.
        #[source]
        source: CallError,
    },
    /// Listing the runtime's sandboxes to find a pod failed.
    #[error("find pod {name} in namespace {namespace}")]
    FindPod {
        /// The pod.
        name: String,
        /// Its namespace.
        namespace: String,
        /// Cause.
        #[source]
        source: CallError,
    },
    /// Listing the runtime's sandboxes failed.
    #[error("list pods")]
    ListPods(#[source] CallError),
    /// `run` of a pod that already has a sandbox.
    #[error("pod {name} already exists in namespace {namespace}")]
    PodExists {
        /// The pod.
        name: String,
        /// Its namespace.
        namespace: String,
    },
    /// No sandbox of this CLI has the pod's labels.
    #[error("pod {name:?} not found in namespace {namespace}")]
    PodNotFound {
        /// The pod.
        name: String,
        /// Its namespace.
        namespace: String,
    },
    /// The pod has no container of that name.
    #[error("container {container:?} is not valid for pod {pod:?}")]
    ContainerNotFound {
        /// The pod.
        pod: String,
        /// The container asked for.
        container: String,
    },
    /// The runtime gives no log path for the container.
    #[error("container {container:?} of pod {pod:?} has no log")]
    NoLog {
        /// The pod.
        pod: String,
        /// The container.
        container: String,
    },
    /// A container's image reference is not valid.
    #[error("container {container}")]
    ImageReference {
        /// The container.
        container: String,
        /// Cause (boxed: image errors are large).
        #[source]
        source: Box<ImageError>,
    },
    /// `ImageStatus` of a container's image failed.
    #[error("container {container}: image {image}")]
    ImageStatus {
        /// The container.
        container: String,
        /// The normalized reference.
        image: String,
        /// Cause.
        #[source]
        source: CallError,
    },
    /// A container's image is missing and its `imagePullPolicy` is `Never` (kubelet's
    /// `ErrImageNeverPull` and message).
    #[error(
        "container {container}: ErrImageNeverPull: Container image {image:?} is not present with pull policy of Never"
    )]
    NeverPull {
        /// The container.
        container: String,
        /// The normalized reference.
        image: String,
    },
    /// `PullImage` of a container's image failed (kubelet's `ErrImagePull`).
    #[error("container {container}: ErrImagePull: image {image}")]
    PullImage {
        /// The container.
        container: String,
        /// The normalized reference.
        image: String,
        /// Cause.
        #[source]
        source: CallError,
    },
    /// The pod's log directory could not be created.
    #[error("create {}", path.display())]
    CreateLogDir {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The manifest could not be serialized into the sandbox's annotation.
    #[error("serialize the manifest of pod {pod} for annotation {annotation}")]
    EncodeManifest {
        /// The pod.
        pod: String,
        /// The annotation.
        annotation: &'static str,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// `RunPodSandbox` failed.
    #[error("RunPodSandbox with runtime handler {handler:?}")]
    RunPodSandbox {
        /// The runtime handler.
        handler: String,
        /// Cause.
        #[source]
        source: CallError,
    },
    /// A Localhost seccomp profile cannot be used (missing, malformed): nothing was
    /// created. Checked here, before containerd reads it, to name the Pod field.
    #[error("pod {pod}: security profiles")]
    Profiles {
        /// The pod.
        pod: String,
        /// Cause (names the field and the file).
        #[source]
        source: ManifestError,
    },
    /// A container's environment holds a reference the plan did not resolve.
    #[error("container {container:?}: environment")]
    Environment {
        /// The container.
        container: String,
        /// Cause (names the variable).
        #[source]
        source: ManifestError,
    },
    /// A container's mounts ask for something CRI mode cannot give.
    #[error("container {container:?}: volumeMounts[{volume}].subPath: subPath on an emptyDir is not supported by peapod yet")]
    EmptyDirSubPath {
        /// The container.
        container: String,
        /// The emptyDir volume.
        volume: String,
    },
    /// A container has probes or lifecycle hooks: in CRI mode nothing runs them (kubelet
    /// would; the CLI is no daemon, and peapod's prober runs only in pods the shim
    /// supervises).
    #[error("container {container:?}: {probe}: probes and lifecycle hooks run only in embedded mode (peapod run without --cri), where peapod's shim supervises the pod")]
    Probes {
        /// The container.
        container: String,
        /// The first such field set, e.g. `livenessProbe` or `lifecycle`.
        probe: &'static str,
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
    #[error("tear down the volumes of sandbox {id}")]
    TearDownVolumes {
        /// The sandbox id.
        id: String,
        /// Cause (names the path).
        #[source]
        source: crate::volumes::VolumeError,
    },
    /// The pod's own directory (`<root>/cri/pods/...`) could not be removed.
    #[error("remove {}", path.display())]
    RemovePodDir {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// `CreateContainer` failed.
    #[error("CreateContainer {container}")]
    CreateContainer {
        /// The container.
        container: String,
        /// Cause.
        #[source]
        source: CallError,
    },
    /// `PodSandboxStatus` failed.
    #[error("status of sandbox {id}")]
    SandboxStatus {
        /// The sandbox id.
        id: String,
        /// Cause.
        #[source]
        source: CallError,
    },
    /// `PodSandboxStatus` answered without a status.
    #[error("sandbox {id}: PodSandboxStatus has no status")]
    NoSandboxStatus {
        /// The sandbox id.
        id: String,
    },
    /// A host port of the pod is held by another pod this runtime runs for peapod:
    /// nothing was created.
    #[error("pod {pod}")]
    HostPort {
        /// The pod.
        pod: String,
        /// Cause (names the port's field and the other pod).
        #[source]
        source: Box<crate::hostports::HostPortError>,
    },
    /// The sandbox's manifest annotation is missing or not a Pod.
    #[error("sandbox {id}: annotation {annotation}")]
    ManifestAnnotation {
        /// The sandbox id.
        id: String,
        /// The annotation.
        annotation: &'static str,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// The manifest in the sandbox's annotation is one peapod refuses (now).
    #[error("sandbox {id}: the manifest in its annotation")]
    ManifestPlan {
        /// The sandbox id.
        id: String,
        /// Cause (names the field).
        #[source]
        source: ManifestError,
    },
    /// `ListContainers` of a sandbox failed.
    #[error("list the containers of sandbox {id}")]
    ListContainers {
        /// The sandbox id.
        id: String,
        /// Cause.
        #[source]
        source: CallError,
    },
    /// `ContainerStatus` failed.
    #[error("status of container {id}")]
    ContainerStatus {
        /// The container id.
        id: String,
        /// Cause.
        #[source]
        source: CallError,
    },
    /// `ExecSync` or `Exec` in a container failed.
    #[error("exec in container {container}")]
    Exec {
        /// The container.
        container: String,
        /// Cause.
        #[source]
        source: CallError,
    },
    /// The streaming URL `Exec` returned is not a valid WebSocket request.
    #[error("streaming URL {url}: {cause}")]
    StreamUrl {
        /// The URL.
        url: String,
        /// Cause; in the message, not a source: tungstenite's errors print their own
        /// sources (boxed: they are large).
        cause: Box<tungstenite::Error>,
    },
    /// The streaming server could not be connected.
    #[error("connect to {url}")]
    StreamConnect {
        /// The URL.
        url: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The connected socket could not be set up (cloned, read timeout set).
    #[error("set up the socket to {url}")]
    StreamSocket {
        /// The URL.
        url: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The WebSocket handshake (`v4.channel.k8s.io`) failed.
    #[error("WebSocket handshake with {url}: {cause}")]
    Handshake {
        /// The URL.
        url: String,
        /// Cause; in the message, not a source: tungstenite's errors print their own
        /// sources (boxed: they are large).
        cause: Box<tungstenite::Error>,
    },
    /// Sending a frame (input, terminal size) on the exec stream failed.
    #[error("exec stream to {url}: {cause}")]
    StreamSend {
        /// The URL.
        url: String,
        /// Cause; in the message, not a source: tungstenite's errors print their own
        /// sources (boxed: they are large).
        cause: Box<tungstenite::Error>,
    },
    /// Reading the exec stream failed.
    #[error("exec stream from {url}: {cause}")]
    StreamRead {
        /// The URL.
        url: String,
        /// Cause; in the message, not a source: tungstenite's errors print their own
        /// sources (boxed: they are large).
        cause: Box<tungstenite::Error>,
    },
    /// The command's output could not be written to our stdout or stderr.
    #[error("write the output of the exec")]
    Output(#[source] std::io::Error),
    /// The exec stream closed before the status channel said how the command ended.
    #[error("exec stream from {url} ended without a status")]
    NoExitStatus {
        /// The URL.
        url: String,
    },
    /// `StopContainer` failed for some of the pod's containers.
    #[error("StopContainer: {}", stop_failures(.failures))]
    StopContainers {
        /// Container id and the failed call, per container.
        failures: Vec<(String, CallError)>,
    },
    /// `StopPodSandbox` failed.
    #[error("stop sandbox {id}")]
    StopPodSandbox {
        /// The sandbox id.
        id: String,
        /// Cause.
        #[source]
        source: CallError,
    },
    /// `RemovePodSandbox` failed.
    #[error("remove sandbox {id}")]
    RemovePodSandbox {
        /// The sandbox id.
        id: String,
        /// Cause.
        #[source]
        source: CallError,
    },
    /// The pod's log directory could not be removed.
    #[error("remove {}", path.display())]
    RemoveLogDir {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The pod cgroup the runtime left could not be removed.
    #[error("pod cgroup {cgroup} still has processes or child cgroups")]
    PodCgroupBusy {
        /// The cgroup, relative to the hierarchies' roots.
        cgroup: String,
    },
}

/// `<id>: <error>; ...`: the failed `StopContainer` calls.
fn stop_failures(failures: &[(String, CallError)]) -> String {
    let each: Vec<String> = failures.iter().map(|(id, e)| format!("{id}: {e}")).collect();
    each.join("; ")
}

type Result<T, E = CriError> = std::result::Result<T, E>;

/// A CRI runtime and the handler pods run with.
pub struct Cri {
    client: CriClient,
    endpoint: String,
    handler: String,
    log_root: PathBuf,
    data_root: PathBuf,
}

/// The socket path of a CRI endpoint: `unix:///path` or a plain path.
///
/// Errors: another scheme (CRI over TCP is not supported).
pub fn socket_path(endpoint: &str) -> Result<PathBuf> {
    match endpoint.split_once("://") {
        Some(("unix", path)) => Ok(PathBuf::from(path)),
        Some((scheme, _)) => Err(CriError::Scheme {
            endpoint: endpoint.to_string(),
            scheme: scheme.to_string(),
        }),
        None => Ok(PathBuf::from(endpoint)),
    }
}

/// A client of `endpoint`.
fn connect(endpoint: &str) -> Result<CriClient> {
    CriClient::connect(socket_path(endpoint)?).map_err(|source| CriError::Connect {
        endpoint: endpoint.to_string(),
        source,
    })
}

fn nanos(t: i64) -> Option<jiff::Timestamp> {
    (t > 0)
        .then(|| jiff::Timestamp::from_nanosecond(i128::from(t)).ok())
        .flatten()
}

impl Cri {
    /// Connects to `endpoint` (`unix:///run/containerd/containerd.sock`); pods run with
    /// `handler` (a containerd runtime name, `peapod`), container logs go under
    /// `log_root` (kubelet's `/var/log/pods`), the pods' populated volumes under
    /// `data_root/cri/pods` (`data_root`: the CLI's `--root`).
    ///
    /// Errors: a bad endpoint, nothing listening, or a server that does not speak CRI v1.
    pub fn connect(endpoint: &str, handler: &str, log_root: &Path, data_root: &Path) -> Result<Cri> {
        let client = connect(endpoint)?;
        client.version().map_err(|source| CriError::Version {
            endpoint: endpoint.to_string(),
            source,
        })?;
        Ok(Cri {
            client,
            endpoint: endpoint.to_string(),
            handler: handler.to_string(),
            log_root: log_root.to_path_buf(),
            data_root: data_root.to_path_buf(),
        })
    }

    /// The host directory of pod `namespace/name` with uid `uid`:
    /// `<root>/cri/pods/<namespace>_<name>_<uid>` (its `volumes` below).
    pub fn pod_dir(&self, namespace: &str, name: &str, uid: &str) -> PathBuf {
        self.data_root
            .join("cri")
            .join("pods")
            .join(format!("{namespace}_{name}_{uid}"))
    }

    /// The sandbox of pod `namespace/name` run by this CLI, if any (the newest attempt).
    ///
    /// Errors: [`CriError::FindPod`] when `ListPodSandbox` fails.
    pub fn find(&self, namespace: &str, name: &str) -> Result<Option<api::PodSandbox>> {
        let labels = HashMap::from([
            (MANAGED_BY_LABEL.to_string(), "peapod".to_string()),
            (POD_NAME_LABEL.to_string(), name.to_string()),
            (POD_NAMESPACE_LABEL.to_string(), namespace.to_string()),
        ]);
        let mut found = self
            .client
            .list_pod_sandbox(Some(api::PodSandboxFilter {
                label_selector: labels,
                ..Default::default()
            }))
            .map_err(|source| CriError::FindPod {
                name: name.to_string(),
                namespace: namespace.to_string(),
                source,
            })?;
        found.sort_by_key(|s| s.created_at);
        Ok(found.pop())
    }

    /// The host ports the ready sandboxes of this CLI (`app.kubernetes.io/managed-by=peapod`)
    /// hold, read from the manifest each carries in its
    /// `kubectl.kubernetes.io/last-applied-configuration` annotation: the runtime's own
    /// record of what it was asked to map (`ListPodSandbox` returns the annotations; CRI
    /// has no call that returns a sandbox's port mappings). A sandbox that is not ready has
    /// had its network torn down (`StopPodSandbox` runs CNI DEL), so it holds none.
    ///
    /// Errors: `ListPodSandbox` failed, or a sandbox's annotation is not a Pod peapod runs.
    fn held_host_ports(&self) -> Result<Vec<crate::hostports::HeldPorts>> {
        let sandboxes = self
            .client
            .list_pod_sandbox(Some(api::PodSandboxFilter {
                label_selector: HashMap::from([(MANAGED_BY_LABEL.to_string(), "peapod".to_string())]),
                state: Some(api::PodSandboxStateValue {
                    state: api::PodSandboxState::SandboxReady as i32,
                }),
                ..Default::default()
            }))
            .map_err(CriError::ListPods)?;
        let mut held = Vec::new();
        for s in sandboxes {
            let pod: Pod = serde_json::from_str(
                s.annotations
                    .get(proto::annotations::LAST_APPLIED)
                    .map_or("", String::as_str),
            )
            .map_err(|source| CriError::ManifestAnnotation {
                id: s.id.clone(),
                annotation: proto::annotations::LAST_APPLIED,
                source,
            })?;
            let plan = crate::manifest::plan(&pod, crate::manifest::memory_capacity()).map_err(|source| {
                CriError::ManifestPlan {
                    id: s.id.clone(),
                    source,
                }
            })?;
            let claims = crate::hostports::claims(&plan);
            if !claims.is_empty() {
                held.push((plan.namespace, plan.name, claims));
            }
        }
        Ok(held)
    }

    fn sandbox_config(
        &self,
        pod: &Pod,
        plan: &PodPlan,
        uid: &str,
        log_dir: &Path,
        seccomp_root: &Path,
    ) -> Result<api::PodSandboxConfig> {
        let mut labels: HashMap<String, String> = plan.labels.clone().into_iter().collect();
        labels.insert(MANAGED_BY_LABEL.into(), "peapod".into());
        labels.insert(POD_NAME_LABEL.into(), plan.name.clone());
        labels.insert(POD_NAMESPACE_LABEL.into(), plan.namespace.clone());
        labels.insert(POD_UID_LABEL.into(), uid.to_string());
        let mut annotations: HashMap<String, String> = plan.annotations.clone().into_iter().collect();
        annotations.extend(plan.sandbox_annotations());
        let manifest = serde_json::to_string(pod).map_err(|source| CriError::EncodeManifest {
            pod: plan.name.clone(),
            annotation: proto::annotations::LAST_APPLIED,
            source,
        })?;
        annotations.insert(proto::annotations::LAST_APPLIED.into(), manifest);
        Ok(api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: plan.name.clone(),
                uid: uid.to_string(),
                namespace: plan.namespace.clone(),
                attempt: 0,
            }),
            hostname: if plan.host_network {
                String::new()
            } else {
                plan.hostname.clone()
            },
            log_directory: log_dir.to_string_lossy().into_owned(),
            port_mappings: port_mappings(plan),
            labels,
            annotations,
            linux: Some(api::LinuxPodSandboxConfig {
                cgroup_parent: format!("/{}", crate::pods::pod_cgroup(uid)),
                security_context: Some(api::LinuxSandboxSecurityContext {
                    namespace_options: Some(namespace_options(plan)),
                    // kubelet: privileged when any container is (containerd refuses a
                    // privileged container in a sandbox that is not).
                    privileged: plan.containers.iter().any(|c| c.security.privileged),
                    seccomp: Some(seccomp_profile(&plan.seccomp, seccomp_root)),
                    supplemental_groups: plan
                        .containers
                        .first()
                        .map(|c| c.security.supplemental_groups.iter().map(|g| i64::from(*g)).collect())
                        .unwrap_or_default(),
                    ..Default::default()
                }),
                sysctls: plan.sysctls.clone().into_iter().collect(),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// Runs the pod; returns its sandbox id. On error everything created is removed.
    ///
    /// Errors: the pod exists, an image cannot be pulled (`ErrImagePull`) or is missing
    /// with `imagePullPolicy: Never` (`ErrImageNeverPull`), or a CRI call failed (its
    /// message names the call and the container). Images are pulled as their policies ask
    /// with the credentials `keyring` gives (see [`crate::imagepull`]), before anything
    /// of the pod exists.
    ///
    /// Localhost seccomp profiles are under `seccomp_root`: each is read and checked
    /// first, then handed to the runtime by absolute path, as kubelet does. `volumes`
    /// holds the payloads of the plan's configMap, secret, downwardAPI and projected
    /// volumes ([`crate::volumes::resolve`]), written before the first container is created.
    pub fn run(
        &self,
        pod: &Pod,
        plan: &PodPlan,
        volumes: &crate::volumes::ResolvedVolumes,
        keyring: &DockerKeyring,
        seccomp_root: &Path,
        progress: &dyn Fn(&str),
    ) -> Result<String> {
        if self.find(&plan.namespace, &plan.name)?.is_some() {
            return Err(CriError::PodExists {
                name: plan.name.clone(),
                namespace: plan.namespace.clone(),
            });
        }
        for c in &plan.containers {
            let p = &c.probes;
            let first = [
                (p.liveness_probe.is_some(), "livenessProbe"),
                (p.readiness_probe.is_some(), "readinessProbe"),
                (p.startup_probe.is_some(), "startupProbe"),
                (!c.hooks.is_empty(), "lifecycle"),
            ]
            .into_iter()
            .find_map(|(set, name)| set.then_some(name));
            if let Some(probe) = first {
                return Err(CriError::Probes {
                    container: c.name.clone(),
                    probe,
                });
            }
        }
        // AppArmor is containerd's to check (it knows whether it loads its default).
        crate::pods::check_profiles(plan, seccomp_root, Path::new("/sys"), false).map_err(|source| {
            CriError::Profiles {
                pod: plan.name.clone(),
                source,
            }
        })?;
        if !crate::hostports::claims(plan).is_empty() {
            crate::hostports::check_conflicts(plan, &self.held_host_ports()?).map_err(|source| CriError::HostPort {
                pod: plan.name.clone(),
                source: Box::new(source),
            })?;
        }
        self.ensure_images(plan, keyring, progress)?;
        let mut images = Vec::new();
        for c in &plan.containers {
            let image = crate::images::normalize(&c.image).map_err(|e| CriError::ImageReference {
                container: c.name.clone(),
                source: Box::new(e),
            })?;
            images.push(image);
        }
        let uid = crate::runner::new_uid();
        let log_dir = self.log_root.join(format!("{}_{}_{uid}", plan.namespace, plan.name));
        std::fs::create_dir_all(&log_dir).map_err(|source| CriError::CreateLogDir {
            path: log_dir.clone(),
            source,
        })?;
        let config = self.sandbox_config(pod, plan, &uid, &log_dir, seccomp_root)?;
        progress("starting the pod sandbox");
        let id = match self.client.run_pod_sandbox(&config, &self.handler) {
            Ok(id) => id,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&log_dir);
                return Err(CriError::RunPodSandbox {
                    handler: self.handler.clone(),
                    source: e,
                });
            }
        };
        let started = self
            .set_up_volumes(&config, plan, volumes)
            .and_then(|()| self.create_and_start(&id, &config, plan, &images, seccomp_root, progress));
        if let Err(e) = started {
            let _ = self.remove(&id, &config, Duration::ZERO);
            return Err(e);
        }
        Ok(id)
    }

    /// The pod's volume directory: `<pod_dir>/volumes` of the sandbox's pod.
    fn volumes_dir(&self, sandbox: &api::PodSandboxConfig) -> PathBuf {
        let (namespace, name, uid) = sandbox.metadata.as_ref().map_or(("", "", ""), |m| {
            (m.namespace.as_str(), m.name.as_str(), m.uid.as_str())
        });
        self.pod_dir(namespace, name, uid).join("volumes")
    }

    /// Writes the pod's configMap, secret, downwardAPI and projected volumes: before any
    /// container exists, as kubelet mounts volumes before it starts them.
    fn set_up_volumes(
        &self,
        sandbox: &api::PodSandboxConfig,
        plan: &PodPlan,
        volumes: &crate::volumes::ResolvedVolumes,
    ) -> Result<()> {
        crate::volumes::set_up(
            &self.volumes_dir(sandbox),
            plan,
            volumes,
            sandbox.metadata.as_ref().map_or("", |m| m.uid.as_str()),
            sandbox::pod::tmpfs_size(None, plan.totals.memory_limit, crate::manifest::memory_capacity()),
        )
        .map_err(|source| CriError::SetUpVolumes {
            pod: plan.name.clone(),
            source,
        })
    }

    /// kubelet's image manager over CRI: for each distinct image, `ImageStatus`, then
    /// `PullImage` when a container's `imagePullPolicy` asks for it (`Always`, or
    /// `IfNotPresent` and missing), with each matching pull Secret entry as the CRI
    /// `AuthConfig` in turn (kubelet's `PullImage` loop; the last failure is returned).
    /// `server_address` is left empty, as kubelet leaves it: containerd compares it as a
    /// URL's host with the endpoint it pulls from (`registry-1.docker.io` for Docker Hub)
    /// and would drop credentials that do not name that endpoint.
    ///
    /// Errors: [`CriError::NeverPull`] for a missing image with `Never`;
    /// [`CriError::PullImage`] (`ErrImagePull`) for a failed pull.
    fn ensure_images(&self, plan: &PodPlan, keyring: &DockerKeyring, progress: &dyn Fn(&str)) -> Result<()> {
        let needs = crate::imagepull::image_needs(plan)
            .map_err(|(container, source)| CriError::ImageReference { container, source })?;
        for need in needs {
            let status = self
                .client
                .image_status(&need.image)
                .map_err(|source| CriError::ImageStatus {
                    container: need.container(false).to_string(),
                    image: need.image.clone(),
                    source,
                })?;
            let present = status.is_some();
            let container = need.container(present).to_string();
            if !need.should_pull(present) {
                if !present {
                    return Err(CriError::NeverPull {
                        container,
                        image: need.image,
                    });
                }
                continue;
            }
            progress(&format!("pulling image {}", need.image));
            let creds: Vec<Option<api::AuthConfig>> = match keyring.lookup(need.repository()) {
                found if found.is_empty() => vec![None],
                found => found
                    .into_iter()
                    .map(|a| {
                        Some(api::AuthConfig {
                            username: a.username,
                            password: a.password,
                            identity_token: a.identity_token,
                            registry_token: a.registry_token,
                            ..Default::default()
                        })
                    })
                    .collect(),
            };
            let mut last = None;
            for auth in creds {
                match self.client.pull_image(&need.image, auth, PULL_TIMEOUT) {
                    Ok(_) => {
                        last = None;
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            if let Some(source) = last {
                return Err(CriError::PullImage {
                    container,
                    image: need.image,
                    source,
                });
            }
        }
        Ok(())
    }

    fn create_and_start(
        &self,
        id: &str,
        sandbox: &api::PodSandboxConfig,
        plan: &PodPlan,
        images: &[String],
        seccomp_root: &Path,
        progress: &dyn Fn(&str),
    ) -> Result<()> {
        let uid = sandbox.metadata.as_ref().map_or("", |m| m.uid.as_str());
        let volumes_dir = self.volumes_dir(sandbox);
        let ip = self
            .sandbox_status(id)?
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default();
        let mut ids = Vec::new();
        for (c, image) in plan.containers.iter().zip(images) {
            progress(&format!("creating container {}", c.name));
            let config = container_config(plan, c, image, uid, &ip, seccomp_root, &volumes_dir)?;
            let cid =
                self.client
                    .create_container(id, &config, sandbox)
                    .map_err(|source| CriError::CreateContainer {
                        container: c.name.clone(),
                        source,
                    })?;
            ids.push((c.name.clone(), cid));
        }
        // All at once: the shim orders them (KEP-753), as in embedded mode. Their own
        // client: an app container's start blocks until the init containers are done.
        progress("starting containers");
        let starter = connect(&self.endpoint)?.with_call_timeout(START_TIMEOUT);
        let errors: Vec<String> = std::thread::scope(|s| {
            let starts: Vec<_> = ids
                .iter()
                .map(|(name, cid)| (name, s.spawn(|| starter.start_container(cid))))
                .collect();
            starts
                .into_iter()
                .filter_map(|(name, h)| match h.join() {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(format!("{name}: {e}")),
                    Err(_) => Some(format!("{name}: start thread panicked")),
                })
                .collect()
        });
        if !errors.is_empty() {
            // An init container that failed is the pod's business (Failed phase), not run's.
            progress(&format!("some containers did not start: {}", errors.join("; ")));
        }
        Ok(())
    }

    /// Every pod this CLI ran in `namespace` (all namespaces with `None`), as printed.
    pub fn list(&self, namespace: Option<&str>) -> Result<Vec<PodSummary>> {
        let mut labels = HashMap::from([(MANAGED_BY_LABEL.to_string(), "peapod".to_string())]);
        if let Some(ns) = namespace {
            labels.insert(POD_NAMESPACE_LABEL.into(), ns.to_string());
        }
        let mut sandboxes = self
            .client
            .list_pod_sandbox(Some(api::PodSandboxFilter {
                label_selector: labels,
                ..Default::default()
            }))
            .map_err(CriError::ListPods)?;
        sandboxes.sort_by(|a, b| {
            let name = |s: &api::PodSandbox| s.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
            name(a).cmp(&name(b))
        });
        sandboxes.iter().map(|s| self.summary(&s.id)).collect()
    }

    /// The containers of sandbox `id` by name (the newest attempt of each).
    fn containers(&self, id: &str) -> Result<HashMap<String, api::ContainerStatus>> {
        let list = self.list_containers(id)?;
        let mut out: HashMap<String, api::ContainerStatus> = HashMap::new();
        for c in list {
            let status = self
                .client
                .container_status(&c.id, false)
                .map_err(|source| CriError::ContainerStatus {
                    id: c.id.clone(),
                    source,
                })?;
            let Some(status) = status.status else {
                continue;
            };
            let name = status.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
            let newer = out.get(&name).is_none_or(|o| {
                o.metadata.as_ref().map_or(0, |m| m.attempt) <= status.metadata.as_ref().map_or(0, |m| m.attempt)
            });
            if newer {
                out.insert(name, status);
            }
        }
        Ok(out)
    }

    /// `ListContainers` of sandbox `id`.
    fn list_containers(&self, id: &str) -> Result<Vec<api::Container>> {
        self.client
            .list_containers(Some(api::ContainerFilter {
                pod_sandbox_id: id.to_string(),
                ..Default::default()
            }))
            .map_err(|source| CriError::ListContainers {
                id: id.to_string(),
                source,
            })
    }

    /// `PodSandboxStatus` of sandbox `id`.
    fn sandbox_status(&self, id: &str) -> Result<api::PodSandboxStatusResponse> {
        self.client
            .pod_sandbox_status(id, false)
            .map_err(|source| CriError::SandboxStatus {
                id: id.to_string(),
                source,
            })
    }

    /// The pod of sandbox `id`, as printed (status from the runtime, manifest from the
    /// sandbox's annotation).
    pub fn summary(&self, id: &str) -> Result<PodSummary> {
        let status = self
            .sandbox_status(id)?
            .status
            .ok_or_else(|| CriError::NoSandboxStatus { id: id.to_string() })?;
        let annotations = &status.annotations;
        let pod: Pod = serde_json::from_str(
            annotations
                .get(proto::annotations::LAST_APPLIED)
                .map_or("", String::as_str),
        )
        .map_err(|source| CriError::ManifestAnnotation {
            id: id.to_string(),
            annotation: proto::annotations::LAST_APPLIED,
            source,
        })?;
        let plan = crate::manifest::plan(&pod, crate::manifest::memory_capacity()).map_err(|source| {
            CriError::ManifestPlan {
                id: id.to_string(),
                source,
            }
        })?;
        let containers = self.containers(id)?;
        let mut observed = Vec::new();
        for c in &plan.containers {
            let Some(s) = containers.get(&c.name) else { continue };
            let exit = || Exit {
                code: s.exit_code,
                oom: s.reason == "OOMKilled",
                started: nanos(s.started_at),
                finished: nanos(s.finished_at),
            };
            let state = match api::ContainerState::try_from(s.state) {
                Ok(api::ContainerState::ContainerCreated) => Observation::Created,
                Ok(api::ContainerState::ContainerRunning) => Observation::Running(nanos(s.started_at)),
                Ok(api::ContainerState::ContainerExited) => Observation::Exited(exit()),
                _ => Observation::Absent,
            };
            observed.push((
                Observed {
                    name: c.name.clone(),
                    container_id: format!("containerd://{}", s.id),
                    image: c.image.clone(),
                    state,
                    restart_count: 0,
                    last_exit: None,
                    probes: crate::podstatus::ProbeStatus::default(),
                },
                nanos(s.created_at),
            ));
        }
        let ready = status.state == api::PodSandboxState::SandboxReady as i32;
        let ip = status
            .network
            .as_ref()
            .map(|n| n.ip.clone())
            .filter(|ip| !ip.is_empty());
        let created = nanos(status.created_at);
        let events = events_from_statuses(&observed);
        let observed: Vec<Observed> = observed.into_iter().map(|(o, _)| o).collect();
        Ok(PodSummary {
            status: pod_status(&plan, &observed, ready, ip.as_deref(), created),
            uid: status.metadata.as_ref().map(|m| m.uid.clone()).unwrap_or_default(),
            plan,
            manifest: Some(pod),
            created,
            events,
            runtime: format!("cri:{} ({})", self.endpoint, self.handler),
        })
    }

    /// The sandbox id and the CRI container of `container` in pod `namespace/name`.
    ///
    /// Errors: no such pod or container.
    pub fn container(&self, namespace: &str, name: &str, container: &str) -> Result<(String, api::ContainerStatus)> {
        let sandbox = self.existing(namespace, name)?;
        let mut containers = self.containers(&sandbox.id)?;
        let status = containers
            .remove(container)
            .ok_or_else(|| CriError::ContainerNotFound {
                pod: name.to_string(),
                container: container.to_string(),
            })?;
        Ok((sandbox.id, status))
    }

    /// The sandbox of pod `namespace/name` (the newest attempt).
    ///
    /// Errors: [`CriError::PodNotFound`], or [`CriError::FindPod`] when `ListPodSandbox`
    /// fails.
    pub fn existing(&self, namespace: &str, name: &str) -> Result<api::PodSandbox> {
        self.find(namespace, name)?.ok_or_else(|| CriError::PodNotFound {
            name: name.to_string(),
            namespace: namespace.to_string(),
        })
    }

    /// The host path of a container's log (CRI's `log_path`: the pod's log directory
    /// joined with the container's) and its CRI id.
    pub fn log(&self, namespace: &str, name: &str, container: &str) -> Result<(PathBuf, String)> {
        let (_, status) = self.container(namespace, name, container)?;
        if status.log_path.is_empty() {
            return Err(CriError::NoLog {
                pod: name.to_string(),
                container: container.to_string(),
            });
        }
        Ok((PathBuf::from(&status.log_path), status.id))
    }

    /// Whether container `id` still runs (or waits to start).
    pub fn running(&self, id: &str) -> bool {
        self.client
            .container_status(id, false)
            .ok()
            .and_then(|r| r.status)
            .is_some_and(|s| {
                s.state == api::ContainerState::ContainerRunning as i32
                    || s.state == api::ContainerState::ContainerCreated as i32
            })
    }

    /// `ExecSync` of `cmd` in the container: (exit code, stdout, stderr).
    pub fn exec(
        &self,
        namespace: &str,
        name: &str,
        container: &str,
        cmd: &[String],
    ) -> Result<(i32, Vec<u8>, Vec<u8>)> {
        let (_, status) = self.container(namespace, name, container)?;
        let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        let r = self
            .client
            .exec_sync(&status.id, &args, Duration::from_secs(3600))
            .map_err(|source| CriError::Exec {
                container: container.to_string(),
                source,
            })?;
        Ok((r.exit_code, r.stdout, r.stderr))
    }

    /// Runs `cmd` in the container attached to this process's stdin (with `stdin`),
    /// stdout and stderr, with a terminal sized like ours when `tty` (ours raw meanwhile),
    /// as `kubectl exec -i/-t` does through kubelet: CRI `Exec` gives a URL of the
    /// runtime's streaming server, spoken to over WebSocket with kubelet's
    /// `v4.channel.k8s.io` protocol (each binary message starts with its channel: 0 stdin,
    /// 1 stdout, 2 stderr, 3 the final status, 4 terminal size). Returns the command's
    /// exit status.
    ///
    /// v4 cannot signal the end of stdin (v5 can, but containerd 1.6's server does not
    /// speak it): once our stdin ends, the command keeps its stdin open.
    pub fn exec_attached(
        &self,
        namespace: &str,
        name: &str,
        container: &str,
        cmd: &[String],
        stdin: bool,
        tty: bool,
    ) -> Result<i32> {
        use std::io::{IsTerminal, Read, Write};
        use std::os::fd::AsFd;
        use tungstenite::client::IntoClientRequest;
        use tungstenite::Message;

        let (_, status) = self.container(namespace, name, container)?;
        // containerd's CRI exec sends no terminal output unless stdin is attached too, so
        // a terminal always asks for stdin (ours is forwarded only with `stdin`).
        let url = self
            .client
            .exec(&status.id, cmd, stdin || tty, tty)
            .map_err(|source| CriError::Exec {
                container: container.to_string(),
                source,
            })?;
        let ws_url = url.replacen("https://", "wss://", 1).replacen("http://", "ws://", 1);
        let mut request = ws_url.as_str().into_client_request().map_err(|e| CriError::StreamUrl {
            url: url.clone(),
            cause: Box::new(e),
        })?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "v4.channel.k8s.io".parse().expect("valid header"),
        );
        let host = request.uri().host().unwrap_or("127.0.0.1").to_string();
        let port = request.uri().port_u16().unwrap_or(80);
        let stream = std::net::TcpStream::connect((host.as_str(), port)).map_err(|source| CriError::StreamConnect {
            url: url.clone(),
            source,
        })?;
        let socket_err = |source| CriError::StreamSocket {
            url: url.clone(),
            source,
        };
        let (mut socket, _) = tungstenite::client(request, stream.try_clone().map_err(socket_err)?).map_err(|e| {
            let cause = match e {
                tungstenite::HandshakeError::Failure(e) => e,
                // A blocking stream does not interrupt the handshake; say so if it did.
                tungstenite::HandshakeError::Interrupted(_) => {
                    tungstenite::Error::Io(std::io::ErrorKind::WouldBlock.into())
                }
            };
            CriError::Handshake {
                url: url.clone(),
                cause: Box::new(cause),
            }
        })?;
        // Reads time out so stdin can be forwarded between them (one socket, one thread).
        stream
            .set_read_timeout(Some(Duration::from_millis(20)))
            .map_err(socket_err)?;
        let send_err = |e| CriError::StreamSend {
            url: url.clone(),
            cause: Box::new(e),
        };
        let _raw = if tty && stdin {
            crate::runner::RawMode::enter(std::io::stdin().as_fd())
        } else {
            None
        };
        if tty && std::io::stdout().is_terminal() {
            if let Ok((rows, cols)) = sandbox::sys::window_size(std::io::stdout().as_fd()) {
                let size = format!("{{\"Width\":{cols},\"Height\":{rows}}}");
                let mut frame = vec![4u8];
                frame.extend_from_slice(size.as_bytes());
                socket.send(Message::binary(frame)).map_err(send_err)?;
            }
        }
        let (input_tx, input_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        if stdin {
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                let mut src = std::io::stdin();
                while let Ok(n) = src.read(&mut buf) {
                    if n == 0 || input_tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            });
        }
        let mut code = None;
        loop {
            while let Ok(chunk) = input_rx.try_recv() {
                let mut frame = vec![0u8];
                frame.extend_from_slice(&chunk);
                socket.send(Message::binary(frame)).map_err(send_err)?;
            }
            let message = match socket.read() {
                Ok(m) => m,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    continue;
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => break,
                Err(e) => {
                    return Err(CriError::StreamRead {
                        url,
                        cause: Box::new(e),
                    })
                }
            };
            let data = match message {
                Message::Binary(d) => d.to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&channel, payload)) = data.split_first() else {
                continue;
            };
            match channel {
                1 => {
                    let mut out = std::io::stdout();
                    out.write_all(payload)
                        .and_then(|()| out.flush())
                        .map_err(CriError::Output)?;
                }
                2 => std::io::stderr().write_all(payload).map_err(CriError::Output)?,
                3 if !payload.is_empty() => code = Some(exit_code_of(payload)),
                _ => {}
            }
        }
        code.ok_or(CriError::NoExitStatus { url })
    }

    /// Deletes pod `namespace/name` as kubelet does: every container stopped at once with
    /// `grace` (default: the pod's `terminationGracePeriodSeconds`), then the sandbox
    /// stopped and removed, then its log directory and pod cgroup.
    ///
    /// Errors: no such pod, or a CRI call failed.
    pub fn delete(&self, namespace: &str, name: &str, grace: Option<u64>) -> Result<()> {
        let sandbox = self.existing(namespace, name)?;
        let status = self
            .sandbox_status(&sandbox.id)?
            .status
            .ok_or_else(|| CriError::NoSandboxStatus { id: sandbox.id.clone() })?;
        let grace = match grace {
            Some(g) => g,
            None => status
                .annotations
                .get(proto::annotations::GRACE_PERIOD)
                .and_then(|g| proto::annotations::parse_grace_seconds(g).ok())
                .unwrap_or(proto::kube::DEFAULT_GRACE_SECONDS),
        };
        let config = api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: name.to_string(),
                namespace: namespace.to_string(),
                uid: status.metadata.as_ref().map(|m| m.uid.clone()).unwrap_or_default(),
                attempt: 0,
            }),
            log_directory: self
                .log_root
                .join(format!(
                    "{namespace}_{name}_{}",
                    status.metadata.as_ref().map_or("", |m| m.uid.as_str())
                ))
                .to_string_lossy()
                .into_owned(),
            linux: Some(api::LinuxPodSandboxConfig {
                cgroup_parent: format!(
                    "/{}",
                    crate::pods::pod_cgroup(status.metadata.as_ref().map_or("", |m| m.uid.as_str()))
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.remove(&sandbox.id, &config, Duration::from_secs(grace))
    }

    fn remove(&self, id: &str, config: &api::PodSandboxConfig, grace: Duration) -> Result<()> {
        let containers = self.list_containers(id)?;
        // SIGTERM to all at once; each StopContainer SIGKILLs its container after `grace`.
        let failures: Vec<(String, CallError)> = std::thread::scope(|s| {
            let stops: Vec<_> = containers
                .iter()
                .filter(|c| c.state != api::ContainerState::ContainerExited as i32)
                .map(|c| s.spawn(move || self.client.stop_container(&c.id, grace).map_err(|e| (c.id.clone(), e))))
                .collect();
            stops.into_iter().filter_map(|h| h.join().ok()?.err()).collect()
        });
        if !failures.is_empty() {
            return Err(CriError::StopContainers { failures });
        }
        self.client
            .stop_pod_sandbox(id)
            .map_err(|source| CriError::StopPodSandbox {
                id: id.to_string(),
                source,
            })?;
        self.client
            .remove_pod_sandbox(id)
            .map_err(|source| CriError::RemovePodSandbox {
                id: id.to_string(),
                source,
            })?;
        match std::fs::remove_dir_all(&config.log_directory) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(CriError::RemoveLogDir {
                    path: PathBuf::from(&config.log_directory),
                    source,
                })
            }
        }
        // The volumes after the sandbox: no container uses them any more.
        if let Some(m) = config.metadata.as_ref().filter(|m| !m.uid.is_empty()) {
            let dir = self.pod_dir(&m.namespace, &m.name, &m.uid);
            crate::volumes::tear_down(&dir.join("volumes")).map_err(|source| CriError::TearDownVolumes {
                id: id.to_string(),
                source,
            })?;
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(CriError::RemovePodDir { path: dir, source }),
            }
        }
        // kubelet owns the pod cgroup; the peapod shim removes the one it created, so this
        // is for other handlers: its parent (`peapod`) only while empty.
        if let Some(parent) = config.linux.as_ref().map(|l| l.cgroup_parent.trim_start_matches('/')) {
            if sandbox::cgroups::exists_anywhere(parent) && !sandbox::cgroups::rmdir_everywhere(parent) {
                return Err(CriError::PodCgroupBusy {
                    cgroup: parent.to_string(),
                });
            }
            if let Some((top, _)) = parent.rsplit_once('/') {
                let _ = sandbox::cgroups::rmdir_everywhere(top);
            }
        }
        Ok(())
    }
}

/// The exit code in a v4 remotecommand status (`metav1.Status`): 0 for `Success`, the
/// `ExitCode` cause for `NonZeroExitCode`, else 1 (the command could not run).
fn exit_code_of(status: &[u8]) -> i32 {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(status) else {
        return 1;
    };
    if v["status"] == "Success" {
        return 0;
    }
    v["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["reason"] == "ExitCode")
        .and_then(|c| c["message"].as_str()?.parse().ok())
        .unwrap_or(1)
}

/// The sandbox's `port_mappings` as kubelet makes them (`generatePodSandboxConfig`): every
/// port of `spec.containers` (init containers' are left out), `hostPort` 0 when it has
/// none (containerd maps only those with a host port), a port with the same name as an
/// earlier one of its container skipped (`MakePortMappings`; an unnamed port is named
/// `<family>-<protocol>-<hostIP>:<containerPort>:<hostPort>`).
fn port_mappings(plan: &PodPlan) -> Vec<api::PortMapping> {
    let mut out = Vec::new();
    for c in plan.containers.iter().filter(|c| c.role == sandbox::pod::Role::App) {
        let mut names = std::collections::HashSet::new();
        for p in &c.ports {
            let host_port = p.host_port.unwrap_or(0);
            let family = match p.host_ip.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V6(_)) => "v6",
                Ok(std::net::IpAddr::V4(_)) => "v4",
                Err(_) => "any",
            };
            let name = if p.name.is_empty() {
                format!("{family}-{}-{}:{}:{host_port}", p.protocol, p.host_ip, p.container_port)
            } else {
                p.name.clone()
            };
            if !names.insert(name) {
                continue;
            }
            let protocol = match p.protocol.as_str() {
                "UDP" => api::Protocol::Udp,
                "SCTP" => api::Protocol::Sctp,
                _ => api::Protocol::Tcp,
            };
            out.push(api::PortMapping {
                protocol: protocol as i32,
                container_port: i32::from(p.container_port),
                host_port: i32::from(host_port),
                host_ip: p.host_ip.clone(),
            });
        }
    }
    out
}

/// kubelet's namespace modes for the pod: network per pod (the node's with
/// `hostNetwork`), IPC per pod, pid per container unless `shareProcessNamespace`.
fn namespace_options(plan: &PodPlan) -> api::NamespaceOption {
    let mode = |m: api::NamespaceMode| m as i32;
    api::NamespaceOption {
        network: mode(if plan.host_network {
            api::NamespaceMode::Node
        } else {
            api::NamespaceMode::Pod
        }),
        pid: mode(if plan.share_process_namespace {
            api::NamespaceMode::Pod
        } else {
            api::NamespaceMode::Container
        }),
        ipc: mode(api::NamespaceMode::Pod),
        ..Default::default()
    }
}

/// Capability names as kubelet hands them to CRI: as in the manifest, without `CAP_`
/// (the plan normalizes them with it; `ALL` stays).
fn cri_capabilities(caps: &[String]) -> Vec<String> {
    caps.iter().map(|c| c.trim_start_matches("CAP_").to_string()).collect()
}

/// A seccomp profile as kubelet hands it to CRI (`kuberuntime/helpers.go`
/// `fieldProfile`): `Localhost` by absolute path, root joined with `localhostProfile`
/// (containerd 1.6 reads `localhost_ref` as a file path).
fn seccomp_profile(p: &SeccompProfile, root: &Path) -> api::SecurityProfile {
    use api::security_profile::ProfileType;
    let (profile_type, localhost_ref) = match p {
        SeccompProfile::RuntimeDefault => (ProfileType::RuntimeDefault, String::new()),
        SeccompProfile::Unconfined => (ProfileType::Unconfined, String::new()),
        SeccompProfile::Localhost { profile, .. } => (
            ProfileType::Localhost,
            root.join(profile).to_string_lossy().into_owned(),
        ),
    };
    api::SecurityProfile {
        profile_type: profile_type.into(),
        localhost_ref,
    }
}

/// An AppArmor profile as kubelet hands it to CRI: `Localhost` by profile name
/// (`kuberuntime/security_context_others.go`). With none, containerd applies its default
/// where AppArmor is on.
fn apparmor_profile(p: &AppArmorProfile) -> api::SecurityProfile {
    use api::security_profile::ProfileType;
    let (profile_type, localhost_ref) = match p {
        AppArmorProfile::RuntimeDefault { .. } => (ProfileType::RuntimeDefault, String::new()),
        AppArmorProfile::Unconfined => (ProfileType::Unconfined, String::new()),
        AppArmorProfile::Localhost { profile, .. } => (ProfileType::Localhost, profile.clone()),
    };
    api::SecurityProfile {
        profile_type: profile_type.into(),
        localhost_ref,
    }
}

/// A container's CRI config, as kubelet's `generateContainerConfig` builds it; its
/// configMap, secret, downwardAPI and projected volumes are read-only mounts from
/// `volumes_dir` (kubelet's `makeMounts`).
fn container_config(
    plan: &PodPlan,
    c: &ContainerPlan,
    image: &str,
    uid: &str,
    ip: &str,
    seccomp_root: &Path,
    volumes_dir: &Path,
) -> Result<api::ContainerConfig> {
    let mut mounts = Vec::new();
    for m in &c.mounts {
        match plan.volumes.get(&m.volume) {
            // subPath on them is refused by the plan.
            Some(VolumeKind::Populated(v)) if m.sub_path.is_none() => mounts.push(api::Mount {
                container_path: m.path.clone(),
                host_path: crate::volumes::volume_dir(volumes_dir, v.plugin, &m.volume)
                    .to_string_lossy()
                    .into_owned(),
                // Always, as kubelet (CVE-2017-1002102).
                readonly: true,
                ..Default::default()
            }),
            Some(VolumeKind::HostPath { path, .. }) => mounts.push(api::Mount {
                container_path: m.path.clone(),
                host_path: match &m.sub_path {
                    Some(sub) => Path::new(path).join(sub).to_string_lossy().into_owned(),
                    None => path.clone(),
                },
                readonly: m.read_only,
                ..Default::default()
            }),
            Some(VolumeKind::EmptyDir(_)) if m.sub_path.is_some() => {
                return Err(CriError::EmptyDirSubPath {
                    container: c.name.clone(),
                    volume: m.volume.clone(),
                })
            }
            // emptyDirs: the shim mounts them from the container's annotations.
            _ => {}
        }
    }
    let r = c.resources;
    let cpu_period = i64::try_from(proto::kube::CPU_PERIOD_US).unwrap_or(100_000);
    let resources = api::LinuxContainerResources {
        cpu_period: if r.cpu_limit.is_some() { cpu_period } else { 0 },
        cpu_quota: r
            .cpu_limit
            .and_then(|m| proto::kube::millis_to_quota(m, proto::kube::CPU_PERIOD_US))
            .unwrap_or(0),
        cpu_shares: i64::try_from(proto::kube::millis_to_shares(r.cpu_request.unwrap_or(0))).unwrap_or(2),
        memory_limit_in_bytes: r.memory_limit.map_or(0, |b| i64::try_from(b).unwrap_or(i64::MAX)),
        oom_score_adj: i64::from(c.oom_score_adj),
        ..Default::default()
    };
    let sec = &c.security;
    let security_context = api::LinuxContainerSecurityContext {
        // CRI capabilities carry no `CAP_` prefix: containerd adds one (`WithCapabilities`
        // in pkg/cri/opts/spec_linux.go), so `CAP_SYS_ADMIN` became `CAP_CAP_SYS_ADMIN`.
        capabilities: Some(api::Capability {
            add_capabilities: cri_capabilities(&sec.capabilities_add),
            drop_capabilities: cri_capabilities(&sec.capabilities_drop),
            ..Default::default()
        }),
        privileged: sec.privileged,
        namespace_options: Some(namespace_options(plan)),
        run_as_user: sec.run_as_user.map(|u| api::Int64Value { value: i64::from(u) }),
        run_as_group: sec.run_as_group.map(|g| api::Int64Value { value: i64::from(g) }),
        readonly_rootfs: sec.read_only_root_filesystem,
        no_new_privs: !sec.allow_privilege_escalation,
        supplemental_groups: sec.supplemental_groups.iter().map(|g| i64::from(*g)).collect(),
        seccomp: Some(seccomp_profile(&sec.seccomp, seccomp_root)),
        apparmor: sec.apparmor.as_ref().map(apparmor_profile),
        ..Default::default()
    };
    let mut labels = HashMap::from([
        (CONTAINER_NAME_LABEL.to_string(), c.name.clone()),
        (POD_NAME_LABEL.to_string(), plan.name.clone()),
        (POD_NAMESPACE_LABEL.to_string(), plan.namespace.clone()),
        (POD_UID_LABEL.to_string(), uid.to_string()),
    ]);
    labels.insert(MANAGED_BY_LABEL.into(), "peapod".into());
    Ok(api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: c.name.clone(),
            attempt: 0,
        }),
        image: Some(api::ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        command: c.command.clone().unwrap_or_default(),
        args: c.args.clone().unwrap_or_default(),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: c
            .env
            .iter()
            .map(|(k, v)| {
                Ok(api::KeyValue {
                    key: k.clone(),
                    value: crate::pods::env_value(plan, k, v, uid, ip)?,
                })
            })
            .collect::<Result<_, ManifestError>>()
            .map_err(|source| CriError::Environment {
                container: c.name.clone(),
                source,
            })?,
        mounts,
        labels,
        annotations: plan.container_annotations(c),
        log_path: format!("{}/0.log", c.name),
        tty: c.tty,
        linux: Some(api::LinuxContainerConfig {
            resources: Some(resources),
            security_context: Some(security_context),
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_reach_cri_as_kubelet_sends_them() {
        use api::security_profile::ProfileType;
        let pod = crate::manifest::parse(
            "t",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  securityContext: {seccompProfile: {type: Unconfined}, sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: \"0\"}]}\n  containers:\n  - {name: a, image: busybox, securityContext: {seccompProfile: {type: Localhost, localhostProfile: p/x.json}, appArmorProfile: {type: Localhost, localhostProfile: k8s-x}}}\n  - {name: b, image: busybox}\n",
        )
        .unwrap();
        let plan = crate::manifest::plan(&pod, 8 << 30).unwrap();
        let root = Path::new("/var/lib/kubelet/seccomp");
        let sec = |c: usize| {
            container_config(&plan, &plan.containers[c], "busybox", "u", "", root, Path::new("/v"))
                .unwrap()
                .linux
                .unwrap()
                .security_context
                .unwrap()
        };
        let a = sec(0);
        assert_eq!(
            a.seccomp,
            Some(api::SecurityProfile {
                profile_type: ProfileType::Localhost.into(),
                localhost_ref: "/var/lib/kubelet/seccomp/p/x.json".into(),
            })
        );
        assert_eq!(a.apparmor.unwrap().localhost_ref, "k8s-x");
        assert_eq!(
            cri_capabilities(&["CAP_SYS_ADMIN".into(), "ALL".into()]),
            ["SYS_ADMIN", "ALL"],
            "containerd adds the CAP_ prefix itself"
        );
        // b inherits the pod's Unconfined, explicitly (containerd reads a missing one as
        // the deprecated path field, empty: unconfined too).
        assert_eq!(sec(1).seccomp.unwrap().profile_type, i32::from(ProfileType::Unconfined));
        assert_eq!(sec(1).apparmor, None);
        assert_eq!(
            seccomp_profile(&SeccompProfile::RuntimeDefault, root).profile_type,
            i32::from(ProfileType::RuntimeDefault)
        );
    }

    #[test]
    fn port_mappings_are_the_app_containers_ports_as_kubelet_sends_them() {
        let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  initContainers: [{name: s, image: busybox, restartPolicy: Always, ports: [{containerPort: 9000}]}]\n  containers:\n  - {name: a, image: busybox, ports: [{containerPort: 80, hostPort: 8080, name: http}, {containerPort: 81}]}\n  - {name: b, image: busybox, ports: [{containerPort: 53, protocol: UDP, hostPort: 5353, hostIP: 192.0.2.2}]}\n";
        let plan = crate::manifest::plan(&crate::manifest::parse("p.yaml", yaml).unwrap(), 1 << 33).unwrap();
        let got: Vec<(i32, i32, i32, String)> = port_mappings(&plan)
            .into_iter()
            .map(|m| (m.protocol, m.container_port, m.host_port, m.host_ip))
            .collect();
        assert_eq!(
            got,
            [
                (api::Protocol::Tcp as i32, 80, 8080, String::new()),
                (api::Protocol::Tcp as i32, 81, 0, String::new()),
                (api::Protocol::Udp as i32, 53, 5353, "192.0.2.2".to_string()),
            ]
        );
        let none = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: busybox}]}\n";
        let plan = crate::manifest::plan(&crate::manifest::parse("p.yaml", none).unwrap(), 1 << 33).unwrap();
        assert!(port_mappings(&plan).is_empty());
    }

    #[test]
    fn exit_codes_come_from_the_v4_status() {
        assert_eq!(exit_code_of(br#"{"metadata":{},"status":"Success"}"#), 0);
        let failed = br#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"7"}]}}"#;
        assert_eq!(exit_code_of(failed), 7);
        assert_eq!(exit_code_of(br#"{"status":"Failure","message":"no such file"}"#), 1);
        assert_eq!(exit_code_of(b"not json"), 1);
    }

    #[test]
    fn cri_endpoints_are_unix_sockets() {
        assert_eq!(socket_path("unix:///run/c.sock").unwrap(), PathBuf::from("/run/c.sock"));
        assert_eq!(socket_path("/run/c.sock").unwrap(), PathBuf::from("/run/c.sock"));
        let e = socket_path("tcp://1.2.3.4:10").unwrap_err();
        assert!(matches!(e, CriError::Scheme { .. }), "{e:?}");
        assert!(e.to_string().contains("tcp"), "{e}");
    }

    /// The error and its sources, as `peapod` prints them (`{:#}`).
    fn chain(e: &dyn std::error::Error) -> Vec<String> {
        let mut out = vec![e.to_string()];
        let mut next = e.source();
        while let Some(s) = next {
            out.push(s.to_string());
            next = s.source();
        }
        out
    }

    #[test]
    fn failed_calls_print_each_cause_once() {
        let call = |call| CallError::Timeout {
            call,
            timeout: Duration::from_secs(1),
        };
        let stop = CriError::StopContainers {
            failures: vec![
                ("a1".into(), call("StopContainer")),
                ("b2".into(), call("StopContainer")),
            ],
        };
        assert_eq!(
            chain(&stop),
            ["StopContainer: a1: CRI StopContainer: no answer within 1s; b2: CRI StopContainer: no answer within 1s"]
        );
        let pull = CriError::PullImage {
            container: "app".into(),
            image: "docker.io/library/nothing:latest".into(),
            source: call("PullImage"),
        };
        assert_eq!(
            chain(&pull).join(": "),
            "container app: ErrImagePull: image docker.io/library/nothing:latest: CRI PullImage: no answer within 1s"
        );
        let read = CriError::StreamRead {
            url: "http://127.0.0.1:1/exec/x".into(),
            cause: Box::new(tungstenite::Error::Io(std::io::ErrorKind::ConnectionReset.into())),
        };
        assert_eq!(chain(&read).len(), 1, "{:?}", chain(&read));
        for e in [
            pull,
            read,
            CriError::RemoveLogDir {
                path: "/var/log/pods/default_web_1".into(),
                source: std::io::ErrorKind::PermissionDenied.into(),
            },
        ] {
            let links = chain(&e);
            for pair in links.windows(2) {
                assert!(!pair[0].contains(&pair[1]), "{pair:?}");
            }
        }
    }

    #[test]
    fn populated_volumes_are_read_only_mounts_from_the_pods_dir() {
        let pod = crate::manifest::parse(
            "t",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  volumes: [{name: all, projected: {sources: [{secret: {name: s}}]}}]\n  containers: [{name: a, image: busybox, volumeMounts: [{name: all, mountPath: /all}]}]\n",
        )
        .unwrap();
        let plan = crate::manifest::plan(&pod, 8 << 30).unwrap();
        let c = container_config(
            &plan,
            &plan.containers[0],
            "busybox",
            "u",
            "",
            Path::new("/s"),
            Path::new("/v"),
        )
        .unwrap();
        assert_eq!(
            c.mounts,
            [api::Mount {
                container_path: "/all".into(),
                host_path: "/v/kubernetes.io~projected/all".into(),
                readonly: true,
                ..Default::default()
            }]
        );
    }
}
