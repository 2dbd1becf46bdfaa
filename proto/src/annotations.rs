//! Every OCI-spec annotation peapod reads or writes: the keys, their shapes, and typed
//! parsing into `sandbox`'s pod values ([`PodConfig`], [`Member`]) and formatting back, so
//! readers (the shim) and writers (the CLI) share one definition. README's annotation
//! table lists the same keys.
//!
//! Who writes what:
//! - containerd's CRI plugin (`pkg/cri/annotations/annotations.go`) on every task of a
//!   pod: [`CONTAINER_TYPE`], [`SANDBOX_ID`], [`CRI_CONTAINER_NAME`], and from
//!   containerd 1.7 the pod's sizing from kubelet ([`SANDBOX_CPU_PERIOD`],
//!   [`SANDBOX_CPU_QUOTA`], [`SANDBOX_CPU_SHARES`], [`SANDBOX_MEMORY`]). The CLI's
//!   embedded mode writes [`CONTAINER_TYPE`] and [`SANDBOX_ID`] itself, as CRI would.
//! - kubelet: [`K8S_GRACE_PERIOD`] (`pkg/kubelet/kuberuntime/labels.go`).
//! - peapod's CLI, or users through `pod_annotations` / `container_annotations` in
//!   containerd's runtime config (containerd forwards only the keys listed there):
//!   everything under `io.peapod.`; and [`LAST_APPLIED`] on the CRI pod sandbox config,
//!   which the CLI's CRI mode reads back.
//!
//! Parsing is bounded: a value that parses but would overflow a later conversion (or
//! `Instant + grace`) is refused with [`AnnotationError`], naming the key and the cause.
//! Absent keys take the defaults documented on each.

use std::collections::HashMap;
use std::time::Duration;

use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder};
use sandbox::pod::hooks::Hooks;
use sandbox::pod::probe::{Handler, ProbeKind, Probes};
use sandbox::pod::{DeclaredContainer, EmptyDir, Medium, PodConfig, RestartPolicy, Role, VolumeMount};
use serde::{Deserialize, Serialize};

use crate::kube::{self, QuantityError};

/// containerd CRI, every task: [`CONTAINER_TYPE_SANDBOX`] for the pod's sandbox (pause)
/// task, [`CONTAINER_TYPE_CONTAINER`] for the others. Absent: a task outside any pod.
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// [`CONTAINER_TYPE`] of a pod's sandbox task.
pub const CONTAINER_TYPE_SANDBOX: &str = "sandbox";
/// [`CONTAINER_TYPE`] of a pod's other tasks.
pub const CONTAINER_TYPE_CONTAINER: &str = "container";
/// containerd CRI, every task: the id of the pod sandbox it belongs to (the sandbox's own
/// id on the sandbox task). peapod's shim groups tasks by it, one shim per pod; empty or
/// absent: the task is its own group.
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// containerd CRI, containers: the container's name in its pod.
pub const CRI_CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
/// containerd CRI (1.7+), sandbox: the pod's CPU period, µs, an `i64`; ≤ 0 is ignored
/// (kubelet's 100000 µs then).
pub const SANDBOX_CPU_PERIOD: &str = "io.kubernetes.cri.sandbox-cpu-period";
/// containerd CRI (1.7+), sandbox: the pod's CPU quota, µs per period, an `i64`; ≤ 0: no
/// quota.
pub const SANDBOX_CPU_QUOTA: &str = "io.kubernetes.cri.sandbox-cpu-quota";
/// containerd CRI (1.7+), sandbox: the pod's CPU shares, an `i64`; ≤ 0: not set.
pub const SANDBOX_CPU_SHARES: &str = "io.kubernetes.cri.sandbox-cpu-shares";
/// containerd CRI (1.7+), sandbox: the pod's memory limit, bytes, an `i64`; ≤ 0: none.
pub const SANDBOX_MEMORY: &str = "io.kubernetes.cri.sandbox-memory";
/// kubelet (on each container, `pkg/kubelet/kuberuntime/labels.go`): the pod's
/// termination grace period, seconds, at most [`MAX_GRACE_SECONDS`]. Read on the sandbox
/// when it is passed there, else on the pod's containers ([`Member::pod_grace`]).
/// [`GRACE_PERIOD`] wins over it.
pub const K8S_GRACE_PERIOD: &str = "io.kubernetes.pod.terminationGracePeriod";
/// peapod CLI, users; container: `init`, `sidecar` or `app` ([`format_role`]). Absent:
/// the role [`CONTAINERS`] declares, else `app`, so kubelet-driven pods keep kubelet's
/// own ordering.
pub const ROLE: &str = "io.peapod.role";
/// peapod CLI; container: the container's name in the pod. Absent or empty: CRI's
/// [`CRI_CONTAINER_NAME`] (when [`NAME`] is absent), else the task id.
pub const NAME: &str = "io.peapod.name";
/// peapod CLI, users; sandbox: the pod's containers in declaration order with their
/// roles, JSON `[{"name":"setup","role":"init"},{"name":"web","role":"app"}]`
/// ([`format_containers`]); names unique. Under CRI the shim only sees a container when
/// it starts, so this is how it learns about earlier init containers and sidecars that
/// have not started yet. Absent: no declared order.
pub const CONTAINERS: &str = "io.peapod.containers";
/// peapod CLI, users; sandbox: the termination grace period, seconds, at most
/// [`MAX_GRACE_SECONDS`]. Absent: [`K8S_GRACE_PERIOD`], else
/// [`kube::DEFAULT_GRACE_SECONDS`]. The shim's `Update` may change it on a running
/// sandbox (the CLI's `delete --grace-period`).
pub const GRACE_PERIOD: &str = "io.peapod.grace-period";
/// Largest grace period accepted ([`GRACE_PERIOD`], [`K8S_GRACE_PERIOD`]), s: ten years,
/// longer than any shutdown. Kubernetes sets no maximum, but the shim computes
/// `Instant::now() + grace`, which panics (and aborts the shim) when it overflows; a
/// `u64` of seconds can.
pub const MAX_GRACE_SECONDS: u64 = 10 * 365 * 24 * 3600;
/// peapod CLI, users; sandbox: the pod's CPU request, a Kubernetes quantity (`250m`,
/// `1`), read in millicores, at most [`kube::MAX_CPU_MILLIS`]
/// ([`kube::format_millicores`] writes it). Sizes the pod cgroup's shares.
pub const POD_CPU_REQUEST: &str = "io.peapod.pod-cpu-request";
/// peapod CLI, users; sandbox: the pod's CPU limit, a Kubernetes quantity, read in
/// millicores, at most [`kube::MAX_CPU_MILLIS`]. Sizes the pod cgroup's CFS quota.
pub const POD_CPU_LIMIT: &str = "io.peapod.pod-cpu-limit";
/// peapod CLI, users; sandbox: the pod's memory limit, a Kubernetes quantity (`256Mi`),
/// read in bytes, at most [`kube::MAX_MEMORY_BYTES`] ([`kube::format_bytes`] writes it).
/// The pod sizing annotations apply only to a pod cgroup the shim creates: an existing
/// one (under CRI the kubelet's) is never written to, so a pod cannot lift its own limits
/// (`sandbox::pod::PodResources::create`).
pub const POD_MEMORY_LIMIT: &str = "io.peapod.pod-memory-limit";
/// peapod CLI, users; sandbox: emptyDir volumes, JSON `[{"name","medium","sizeLimit"}]`
/// ([`EmptyDirEntry`], [`format_empty_dirs`]): names unique and valid ids, `medium` `""`
/// or `Memory`, `sizeLimit` a Kubernetes quantity in bytes, at most
/// [`kube::MAX_MEMORY_BYTES`] (`"0"` is accepted and counts as unset, as in kubelet: a
/// Memory tmpfs is sized by `sandbox::pod::tmpfs_size`, never unlimited). Absent: none.
pub const EMPTY_DIRS: &str = "io.peapod.empty-dirs";
/// peapod CLI, users; container: its mounts of the pod's emptyDirs, JSON
/// `[{"name","mountPath","readOnly"}]` ([`format_volume_mounts`]); `readOnly` defaults
/// to false. Needs a pod sandbox.
pub const VOLUME_MOUNTS: &str = "io.peapod.volume-mounts";
/// peapod CLI (embedded mode); sandbox: `Always`, `OnFailure` or `Never`: the shim
/// itself restarts the pod's containers by this policy and stops sidecars once the app
/// containers are done (KEP-753). Only for a shim without kubelet: under kubelet,
/// kubelet does both, and this annotation must be absent.
pub const RESTART_POLICY: &str = "io.peapod.restart-policy";
/// peapod CLI (embedded mode); container: its probes, JSON `{"livenessProbe",
/// "readinessProbe","startupProbe"}` in Kubernetes' `v1.Probe` shape with named ports
/// resolved and `host` filled in (`sandbox::pod::probe::Probes`). The shim runs them
/// only in a pod it supervises itself ([`RESTART_POLICY`] set); under kubelet, kubelet
/// probes, and this annotation must be absent.
pub const PROBES: &str = "io.peapod.probes";
/// peapod CLI (embedded mode); container: its lifecycle hooks, JSON `{"postStart",
/// "preStop"}`, each `{"exec":{"command"}}`, `{"httpGet":{…}}` (host filled in, ports
/// resolved) or `{"sleep":{"seconds"}}` (`sandbox::pod::hooks::Hooks`). Run by the shim
/// only in a pod it supervises itself, like [`PROBES`].
pub const HOOKS: &str = "io.peapod.hooks";
/// peapod CLI (CRI mode), on the CRI pod sandbox config: the pod's manifest as JSON,
/// under kubectl's key, so the CLI finds the manifest of a pod it created.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// An annotation value peapod refuses. The message names the annotation (and the entry
/// of a JSON list) and the cause; causes are part of the message, not `source()`, as the
/// shim hands containerd the message alone.
#[derive(Debug, thiserror::Error)]
pub enum AnnotationError {
    /// The value is not of the annotation's shape (not a number, an unknown role, a
    /// duplicate name).
    #[error("annotations[{key}]{at}: {reason}")]
    Invalid {
        /// The annotation.
        key: &'static str,
        /// Where in a JSON value, e.g. `[1].medium`; empty for the whole value.
        at: String,
        /// Why.
        reason: String,
    },
    /// A JSON annotation that does not decode into its shape.
    #[error("annotations[{key}]: {cause}")]
    Json {
        /// The annotation.
        key: &'static str,
        /// serde's error, with line and column.
        cause: serde_json::Error,
    },
    /// A Kubernetes quantity that does not parse, or is out of bounds.
    #[error("annotations[{key}]{at}: {cause}")]
    Quantity {
        /// The annotation.
        key: &'static str,
        /// Where in a JSON value; empty for the whole value.
        at: String,
        /// Why.
        cause: QuantityError,
    },
    /// A number above the annotation's documented maximum.
    #[error("annotations[{key}]: {value} {unit} is more than the maximum, {max} {unit}")]
    TooLarge {
        /// The annotation.
        key: &'static str,
        /// The value given.
        value: u64,
        /// The maximum.
        max: u64,
        /// The unit of both, e.g. `s`.
        unit: &'static str,
    },
}

impl AnnotationError {
    /// The annotation refused.
    pub fn key(&self) -> &'static str {
        match self {
            AnnotationError::Invalid { key, .. }
            | AnnotationError::Json { key, .. }
            | AnnotationError::Quantity { key, .. }
            | AnnotationError::TooLarge { key, .. } => key,
        }
    }
}

fn invalid(key: &'static str, at: impl Into<String>, reason: impl Into<String>) -> AnnotationError {
    AnnotationError::Invalid {
        key,
        at: at.into(),
        reason: reason.into(),
    }
}

/// One entry of [`EMPTY_DIRS`], as written: Kubernetes' `emptyDir` fields, `sizeLimit`
/// still a quantity. [`pod_config`] checks and converts it into a [`sandbox::pod::EmptyDir`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmptyDirEntry {
    /// Volume name, referenced by containers' volume mounts.
    pub name: String,
    /// `""` (node disk) or `Memory` (tmpfs).
    #[serde(default)]
    pub medium: String,
    /// Size limit, a Kubernetes quantity; for `Memory` it sizes the tmpfs.
    #[serde(default)]
    pub size_limit: Option<String>,
}

/// One entry of [`VOLUME_MOUNTS`], as written.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VolumeMountEntry {
    name: String,
    mount_path: String,
    #[serde(default)]
    read_only: bool,
}

/// One entry of [`CONTAINERS`], as written.
#[derive(Serialize, Deserialize)]
struct ContainerEntry {
    name: String,
    role: String,
}

fn json<T: for<'de> Deserialize<'de>>(
    a: &HashMap<String, String>,
    key: &'static str,
) -> Result<Option<T>, AnnotationError> {
    a.get(key)
        .map(|v| serde_json::from_str(v).map_err(|cause| AnnotationError::Json { key, cause }))
        .transpose()
}

/// An `i64` annotation; empty counts as absent.
fn int(a: &HashMap<String, String>, key: &'static str) -> Result<Option<i64>, AnnotationError> {
    a.get(key)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse()
                .map_err(|_| invalid(key, "", format!("{v:?} is not an integer")))
        })
        .transpose()
}

fn quantity(
    a: &HashMap<String, String>,
    key: &'static str,
    parse: fn(&str) -> Result<u64, QuantityError>,
) -> Result<Option<u64>, AnnotationError> {
    a.get(key)
        .map(|v| {
            parse(v).map_err(|cause| AnnotationError::Quantity {
                key,
                at: String::new(),
                cause,
            })
        })
        .transpose()
}

/// The sandbox id a task names ([`SANDBOX_ID`]), when set and not empty.
pub fn sandbox_id(a: &HashMap<String, String>) -> Option<&str> {
    a.get(SANDBOX_ID).map(String::as_str).filter(|s| !s.is_empty())
}

/// A role as [`ROLE`] and [`CONTAINERS`] spell it: `init`, `sidecar`, `app`.
pub fn format_role(role: Role) -> &'static str {
    match role {
        Role::Init => "init",
        Role::Sidecar => "sidecar",
        Role::App => "app",
    }
}

fn parse_role(v: &str) -> Option<Role> {
    match v {
        "init" => Some(Role::Init),
        "sidecar" => Some(Role::Sidecar),
        "app" => Some(Role::App),
        _ => None,
    }
}

/// [`ROLE`]: `None` when absent.
///
/// Errors: [`AnnotationError::Invalid`] for anything but `init`, `sidecar`, `app`.
pub fn role(a: &HashMap<String, String>) -> Result<Option<Role>, AnnotationError> {
    a.get(ROLE)
        .map(|v| parse_role(v).ok_or_else(|| invalid(ROLE, "", format!("{v:?} is not one of init, sidecar, app"))))
        .transpose()
}

/// A grace period annotation's value ([`GRACE_PERIOD`], [`K8S_GRACE_PERIOD`]), seconds.
fn grace_seconds(key: &'static str, v: &str) -> Result<u64, AnnotationError> {
    let secs = v
        .parse::<u64>()
        .map_err(|_| invalid(key, "", format!("{v:?} is not a number of seconds")))?;
    if secs > MAX_GRACE_SECONDS {
        return Err(AnnotationError::TooLarge {
            key,
            value: secs,
            max: MAX_GRACE_SECONDS,
            unit: "s",
        });
    }
    Ok(secs)
}

/// A [`GRACE_PERIOD`] value, seconds (for readers of the key outside [`pod_config`]: the
/// CLI reading a sandbox's status, the shim's `Update`).
///
/// Errors: [`AnnotationError::Invalid`] when not an unsigned integer,
/// [`AnnotationError::TooLarge`] above [`MAX_GRACE_SECONDS`].
pub fn parse_grace_seconds(v: &str) -> Result<u64, AnnotationError> {
    grace_seconds(GRACE_PERIOD, v)
}

/// [`CONTAINERS`] for `containers`, in their order.
pub fn format_containers(containers: &[DeclaredContainer]) -> String {
    let entries: Vec<ContainerEntry> = containers
        .iter()
        .map(|c| ContainerEntry {
            name: c.name.clone(),
            role: format_role(c.role).to_string(),
        })
        .collect();
    serde_json::to_string(&entries).expect("strings serialize")
}

fn declared_containers(a: &HashMap<String, String>) -> Result<Vec<DeclaredContainer>, AnnotationError> {
    let entries: Vec<ContainerEntry> = json(a, CONTAINERS)?.unwrap_or_default();
    let mut containers: Vec<DeclaredContainer> = Vec::with_capacity(entries.len());
    for (i, e) in entries.into_iter().enumerate() {
        let role = parse_role(&e.role).ok_or_else(|| {
            invalid(
                CONTAINERS,
                format!("[{i}].role"),
                format!("{:?} is not one of init, sidecar, app", e.role),
            )
        })?;
        if containers.iter().any(|o| o.name == e.name) {
            return Err(invalid(
                CONTAINERS,
                format!("[{i}].name"),
                format!("{:?} declared twice", e.name),
            ));
        }
        containers.push(DeclaredContainer { name: e.name, role });
    }
    Ok(containers)
}

/// [`EMPTY_DIRS`] for `dirs`, in their order.
pub fn format_empty_dirs<'a>(dirs: impl IntoIterator<Item = &'a EmptyDirEntry>) -> String {
    let dirs: Vec<&EmptyDirEntry> = dirs.into_iter().collect();
    serde_json::to_string(&dirs).expect("strings serialize")
}

fn empty_dirs(a: &HashMap<String, String>) -> Result<Vec<EmptyDir>, AnnotationError> {
    let entries: Vec<EmptyDirEntry> = json(a, EMPTY_DIRS)?.unwrap_or_default();
    let mut dirs: Vec<EmptyDir> = Vec::with_capacity(entries.len());
    for (i, d) in entries.into_iter().enumerate() {
        sandbox::spec::validate_id(&d.name).map_err(|_| {
            invalid(
                EMPTY_DIRS,
                format!("[{i}].name"),
                format!("{:?} is not a valid volume name", d.name),
            )
        })?;
        let medium = match d.medium.as_str() {
            "" => Medium::Disk,
            "Memory" => Medium::Memory,
            other => {
                return Err(invalid(
                    EMPTY_DIRS,
                    format!("[{i}].medium"),
                    format!("{other:?} is not \"\" or \"Memory\""),
                ))
            }
        };
        let size_limit = d
            .size_limit
            .as_deref()
            .map(|s| {
                kube::memory_bytes(s).map_err(|cause| AnnotationError::Quantity {
                    key: EMPTY_DIRS,
                    at: format!("[{i}].sizeLimit"),
                    cause,
                })
            })
            .transpose()?;
        if dirs.iter().any(|o| o.name == d.name) {
            return Err(invalid(
                EMPTY_DIRS,
                format!("[{i}].name"),
                format!("{:?} declared twice", d.name),
            ));
        }
        dirs.push(EmptyDir {
            name: d.name,
            medium,
            size_limit,
        });
    }
    Ok(dirs)
}

/// [`VOLUME_MOUNTS`] for `mounts`, in their order.
pub fn format_volume_mounts(mounts: &[VolumeMount]) -> String {
    let entries: Vec<VolumeMountEntry> = mounts
        .iter()
        .map(|m| VolumeMountEntry {
            name: m.name.clone(),
            mount_path: m.mount_path.clone(),
            read_only: m.read_only,
        })
        .collect();
    serde_json::to_string(&entries).expect("strings serialize")
}

fn volume_mounts(a: &HashMap<String, String>) -> Result<Vec<VolumeMount>, AnnotationError> {
    let entries: Vec<VolumeMountEntry> = json(a, VOLUME_MOUNTS)?.unwrap_or_default();
    Ok(entries
        .into_iter()
        .map(|m| VolumeMount {
            name: m.name,
            mount_path: m.mount_path,
            read_only: m.read_only,
        })
        .collect())
}

/// [`PROBES`]: the probes, checked for what the shim cannot run (no handler port, a
/// probe that can never decide).
fn probes(a: &HashMap<String, String>) -> Result<Probes, AnnotationError> {
    let probes: Probes = json(a, PROBES)?.unwrap_or_default();
    for (kind, p) in probes.iter() {
        let at = format!(".{}Probe", kind.title().to_ascii_lowercase());
        let invalid = |reason: &str| AnnotationError::Invalid {
            key: PROBES,
            at: at.clone(),
            reason: reason.to_string(),
        };
        if p.success_threshold == 0 || p.failure_threshold == 0 {
            return Err(invalid("successThreshold and failureThreshold must be at least 1"));
        }
        if kind != ProbeKind::Readiness && p.success_threshold != 1 {
            return Err(invalid("successThreshold must be 1 for liveness and startup probes"));
        }
        match &p.handler {
            Handler::Exec { command } if command.is_empty() => return Err(invalid("exec.command is empty")),
            Handler::HttpGet(g) if g.port == 0 || g.host.is_empty() => {
                return Err(invalid("httpGet needs a host and a port from 1 to 65535"))
            }
            Handler::TcpSocket { host, port } | Handler::Grpc { host, port, .. } if *port == 0 || host.is_empty() => {
                return Err(invalid("a host and a port from 1 to 65535 are needed"))
            }
            _ => {}
        }
    }
    Ok(probes)
}

/// What a sandbox task's annotations declare for its pod: the declared containers, the
/// pod cgroup's resources (peapod's quantities with kubelet's conversions, replaced by
/// containerd's own sizing when present), emptyDirs, grace period and restart policy.
///
/// Errors: the first refused annotation, named (see each key for its shape).
pub fn pod_config(a: &HashMap<String, String>) -> Result<PodConfig, AnnotationError> {
    let cpu_req = quantity(a, POD_CPU_REQUEST, kube::cpu_millis)?;
    let cpu_lim = quantity(a, POD_CPU_LIMIT, kube::cpu_millis)?;
    let mem = quantity(a, POD_MEMORY_LIMIT, kube::memory_bytes)?;
    let mut resources =
        (cpu_req.is_some() || cpu_lim.is_some() || mem.is_some()).then(|| kube::resources(cpu_req, cpu_lim, mem));
    // containerd 1.7+ passes kubelet's pod sizing itself; it wins over peapod's.
    let (period, quota, shares, memory) = (
        int(a, SANDBOX_CPU_PERIOD)?,
        int(a, SANDBOX_CPU_QUOTA)?,
        int(a, SANDBOX_CPU_SHARES)?,
        int(a, SANDBOX_MEMORY)?,
    );
    if period.is_some() || quota.is_some() || shares.is_some() || memory.is_some() {
        let mut cpu = LinuxCpuBuilder::default();
        if let Some(s) = shares.filter(|s| *s > 0) {
            cpu = cpu.shares(u64::try_from(s).unwrap_or(2));
        }
        if let Some(q) = quota.filter(|q| *q > 0) {
            cpu = cpu.quota(q).period(
                period
                    .and_then(|p| u64::try_from(p).ok())
                    .unwrap_or(kube::CPU_PERIOD_US),
            );
        }
        let mut b = LinuxResourcesBuilder::default().cpu(cpu.build().expect("all fields set"));
        if let Some(m) = memory.filter(|m| *m > 0) {
            b = b.memory(LinuxMemoryBuilder::default().limit(m).build().expect("all fields set"));
        }
        resources = Some(b.build().expect("all fields set"));
    }
    let empty_dirs = empty_dirs(a)?;
    let grace = match (a.get(GRACE_PERIOD), a.get(K8S_GRACE_PERIOD)) {
        (Some(v), _) => Some(grace_seconds(GRACE_PERIOD, v)?),
        (None, Some(v)) => Some(grace_seconds(K8S_GRACE_PERIOD, v)?),
        (None, None) => None,
    };
    let containers = declared_containers(a)?;
    let restart_policy = a
        .get(RESTART_POLICY)
        .map(|v| v.parse::<RestartPolicy>().map_err(|e| invalid(RESTART_POLICY, "", e)))
        .transpose()?;
    Ok(PodConfig {
        containers,
        resources,
        empty_dirs,
        grace: grace.map(Duration::from_secs),
        restart_policy,
        files: None,
    })
}

/// What a task's annotations say about its place in a pod, read when the task is
/// created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The task is its pod's sandbox ([`CONTAINER_TYPE`] is `sandbox`).
    pub sandbox: bool,
    /// Its pod's (sandbox task's) id: its own for a sandbox, else [`SANDBOX_ID`] when set
    /// and not the task's own id; `None` outside a pod.
    pub pod: Option<String>,
    /// Its name in the pod ([`NAME`]).
    pub name: String,
    /// Its role ([`ROLE`], default `app`).
    pub role: Role,
    /// [`ROLE`] was given (rather than defaulted).
    pub role_annotated: bool,
    /// Its mounts of the pod's volumes ([`VOLUME_MOUNTS`]).
    pub mounts: Vec<VolumeMount>,
    /// Its probes ([`PROBES`]); empty when absent.
    pub probes: Probes,
    /// Its lifecycle hooks ([`HOOKS`]); empty when absent.
    pub hooks: Hooks,
    /// The pod's grace period as kubelet writes it on every container
    /// ([`K8S_GRACE_PERIOD`]); `None` on a sandbox (whose own annotations are read by
    /// [`pod_config`]) or when absent.
    pub pod_grace: Option<Duration>,
}

impl Member {
    /// Reads task `id`'s annotations.
    ///
    /// Errors: [`ROLE`] or [`VOLUME_MOUNTS`] refused, named.
    pub fn from_annotations(id: &str, a: &HashMap<String, String>) -> Result<Member, AnnotationError> {
        let sandbox = a.get(CONTAINER_TYPE).map(String::as_str) == Some(CONTAINER_TYPE_SANDBOX);
        let pod = if sandbox {
            Some(id.to_string())
        } else {
            sandbox_id(a).filter(|s| *s != id).map(str::to_string)
        };
        let role = role(a)?.unwrap_or(Role::App);
        let mounts = volume_mounts(a)?;
        let probes = probes(a)?;
        let hooks: Hooks = json(a, HOOKS)?.unwrap_or_default();
        let pod_grace = match a.get(K8S_GRACE_PERIOD).filter(|_| !sandbox) {
            Some(v) => Some(Duration::from_secs(grace_seconds(K8S_GRACE_PERIOD, v)?)),
            None => None,
        };
        let name = a
            .get(NAME)
            .or_else(|| a.get(CRI_CONTAINER_NAME))
            .filter(|n| !n.is_empty())
            .cloned()
            .unwrap_or_else(|| id.to_string());
        Ok(Member {
            sandbox,
            pod,
            name,
            role,
            role_annotated: a.contains_key(ROLE),
            mounts,
            probes,
            hooks,
            pod_grace,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn pod_config_reads_annotations_and_names_bad_ones() {
        let a = ann(&[
            (POD_CPU_LIMIT, "500m"),
            (POD_MEMORY_LIMIT, "128Mi"),
            (GRACE_PERIOD, "5"),
            (
                EMPTY_DIRS,
                r#"[{"name":"cache","medium":"Memory","sizeLimit":"16Mi"},{"name":"data"}]"#,
            ),
        ]);
        let c = pod_config(&a).unwrap();
        assert_eq!(c.grace, Some(Duration::from_secs(5)));
        assert_eq!(
            c.empty_dirs,
            [
                EmptyDir {
                    name: "cache".into(),
                    medium: Medium::Memory,
                    size_limit: Some(16 << 20)
                },
                EmptyDir {
                    name: "data".into(),
                    medium: Medium::Disk,
                    size_limit: None
                }
            ]
        );
        assert_eq!(c.resources.unwrap().memory().as_ref().unwrap().limit(), Some(128 << 20));

        let bad = |k: &str, v: &str| pod_config(&ann(&[(k, v)])).unwrap_err().to_string();
        assert!(bad(POD_MEMORY_LIMIT, "lots").contains("io.peapod.pod-memory-limit"));
        assert!(bad(EMPTY_DIRS, r#"[{"name":"x","medium":"Disk"}]"#).contains("medium"));
        assert!(bad(EMPTY_DIRS, "not json").contains("io.peapod.empty-dirs"));
        assert!(bad(GRACE_PERIOD, "soon").contains("io.peapod.grace-period"));
        let role = ann(&[(ROLE, "helper")]);
        assert!(Member::from_annotations("c", &role)
            .unwrap_err()
            .to_string()
            .contains("io.peapod.role"));
    }

    #[test]
    fn a_containers_kubelet_grace_is_read_and_named_when_bad() {
        let m = Member::from_annotations("c1", &ann(&[(K8S_GRACE_PERIOD, "2")])).unwrap();
        assert_eq!(m.pod_grace, Some(Duration::from_secs(2)));
        // On the sandbox, pod_config reads it instead.
        let sb = ann(&[(CONTAINER_TYPE, CONTAINER_TYPE_SANDBOX), (K8S_GRACE_PERIOD, "2")]);
        assert_eq!(Member::from_annotations("p1", &sb).unwrap().pod_grace, None);
        assert_eq!(pod_config(&sb).unwrap().grace, Some(Duration::from_secs(2)));
        assert_eq!(pod_config(&ann(&[])).unwrap().grace, None);
        let e = Member::from_annotations("c1", &ann(&[(K8S_GRACE_PERIOD, "soon")])).unwrap_err();
        assert!(e.to_string().contains(K8S_GRACE_PERIOD), "{e}");
    }

    #[test]
    fn grace_period_is_bounded_so_the_deadline_cannot_overflow() {
        let secs = |k: &str, v: &str| pod_config(&ann(&[(k, v)])).map(|c| c.grace.unwrap().as_secs());
        assert_eq!(
            secs(GRACE_PERIOD, &MAX_GRACE_SECONDS.to_string()).unwrap(),
            MAX_GRACE_SECONDS
        );
        // What used to abort the shim at termination (`Instant + grace` overflowed).
        for (key, v) in [(GRACE_PERIOD, "18446744073709551615"), (K8S_GRACE_PERIOD, "315360001")] {
            let e = pod_config(&ann(&[(key, v)])).unwrap_err();
            assert!(matches!(e, AnnotationError::TooLarge { .. }) && e.key() == key, "{e}");
            assert!(
                e.to_string().contains(key) && e.to_string().contains("315360000 s"),
                "{e}"
            );
        }
        assert_eq!(parse_grace_seconds("30").unwrap(), 30);
        assert!(parse_grace_seconds("18446744073709551615").is_err());
        let e = parse_grace_seconds("18446744073709551616").unwrap_err().to_string();
        assert!(e.contains("is not a number of seconds"), "{e}");
        assert!(std::time::Instant::now()
            .checked_add(Duration::from_secs(MAX_GRACE_SECONDS))
            .is_some());
    }

    #[test]
    fn pod_quantities_are_bounded_so_conversions_cannot_overflow() {
        // `1e18` CPUs used to overflow `millis * 1024` (a panic in debug builds).
        for (key, v) in [
            (POD_CPU_REQUEST, "1e18"),
            (POD_CPU_LIMIT, "1e18"),
            (POD_MEMORY_LIMIT, "8Ei"),
        ] {
            let e = pod_config(&ann(&[(key, v)])).unwrap_err();
            assert!(
                matches!(
                    &e,
                    AnnotationError::Quantity {
                        cause: QuantityError::TooLarge { .. },
                        ..
                    }
                ),
                "{e}"
            );
            assert!(e.key() == key && e.to_string().contains("maximum"), "{e}");
        }
        let e = pod_config(&ann(&[(
            EMPTY_DIRS,
            r#"[{"name":"m","medium":"Memory","sizeLimit":"9Ei"}]"#,
        )]))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("io.peapod.empty-dirs][0].sizeLimit") && e.contains("maximum"),
            "{e}"
        );
        let c = pod_config(&ann(&[(POD_CPU_LIMIT, "1M"), (POD_CPU_REQUEST, "1M")])).unwrap();
        let cpu = c.resources.unwrap().cpu().clone().unwrap();
        assert_eq!(
            (cpu.shares(), cpu.quota()),
            (Some(1_024_000_000), Some(100_000_000_000))
        );
        // sizeLimit "0" is accepted (kubelet's API allows it); the sandbox takes it as
        // unset, never as an unlimited tmpfs (sandbox::pod::tmpfs_size).
        let c = pod_config(&ann(&[(
            EMPTY_DIRS,
            r#"[{"name":"m","medium":"Memory","sizeLimit":"0"}]"#,
        )]))
        .unwrap();
        assert_eq!(c.empty_dirs[0].size_limit, Some(0));
    }

    #[test]
    fn restart_policy_annotation_is_read_and_named_when_bad() {
        let a = |v: &str| ann(&[(RESTART_POLICY, v)]);
        assert_eq!(
            pod_config(&a("OnFailure")).unwrap().restart_policy,
            Some(RestartPolicy::OnFailure)
        );
        let e = pod_config(&a("Sometimes")).unwrap_err().to_string();
        assert!(e.contains(RESTART_POLICY) && e.contains("Sometimes"), "{e}");
    }

    #[test]
    fn writers_and_readers_share_the_shapes() {
        let declared = [
            DeclaredContainer {
                name: "setup".into(),
                role: Role::Init,
            },
            DeclaredContainer {
                name: "web".into(),
                role: Role::App,
            },
        ];
        let text = format_containers(&declared);
        assert_eq!(text, r#"[{"name":"setup","role":"init"},{"name":"web","role":"app"}]"#);
        assert_eq!(pod_config(&ann(&[(CONTAINERS, &text)])).unwrap().containers, declared);

        let mounts = [VolumeMount {
            name: "cache".into(),
            mount_path: "/cache".into(),
            read_only: true,
        }];
        let text = format_volume_mounts(&mounts);
        assert_eq!(text, r#"[{"name":"cache","mountPath":"/cache","readOnly":true}]"#);
        let m = Member::from_annotations(
            "c1",
            &ann(&[(VOLUME_MOUNTS, &text), (ROLE, format_role(Role::Sidecar))]),
        )
        .unwrap();
        assert_eq!(
            (m.mounts.as_slice(), m.role, m.role_annotated),
            (&mounts[..], Role::Sidecar, true)
        );

        let dirs = [EmptyDirEntry {
            name: "tmp".into(),
            medium: "Memory".into(),
            size_limit: Some("1Mi".into()),
        }];
        let text = format_empty_dirs(&dirs);
        assert_eq!(text, r#"[{"name":"tmp","medium":"Memory","sizeLimit":"1Mi"}]"#);
        assert_eq!(
            pod_config(&ann(&[(EMPTY_DIRS, &text)])).unwrap().empty_dirs[0].size_limit,
            Some(1 << 20)
        );
    }

    #[test]
    fn declared_containers_are_unique_with_known_roles() {
        let bad = |v: &str| pod_config(&ann(&[(CONTAINERS, v)])).unwrap_err().to_string();
        let e = bad(r#"[{"name":"a","role":"app"},{"name":"a","role":"init"}]"#);
        assert!(
            e.contains("io.peapod.containers][1].name") && e.contains("twice"),
            "{e}"
        );
        let e = bad(r#"[{"name":"a","role":"helper"}]"#);
        assert!(e.contains("[0].role") && e.contains("helper"), "{e}");
    }

    #[test]
    fn member_names_its_pod_and_falls_back_for_its_name() {
        let sandbox = Member::from_annotations(
            "p1",
            &ann(&[(CONTAINER_TYPE, CONTAINER_TYPE_SANDBOX), (SANDBOX_ID, "p1")]),
        )
        .unwrap();
        assert_eq!((sandbox.sandbox, sandbox.pod.as_deref()), (true, Some("p1")));
        let c = Member::from_annotations(
            "c1",
            &ann(&[
                (CONTAINER_TYPE, CONTAINER_TYPE_CONTAINER),
                (SANDBOX_ID, "p1"),
                (CRI_CONTAINER_NAME, "web"),
            ]),
        )
        .unwrap();
        assert_eq!(
            (c.sandbox, c.pod.as_deref(), c.name.as_str(), c.role, c.role_annotated),
            (false, Some("p1"), "web", Role::App, false)
        );
        let alone = Member::from_annotations("c2", &ann(&[(SANDBOX_ID, ""), (NAME, "")])).unwrap();
        assert_eq!((alone.pod, alone.name.as_str()), (None, "c2"));
        assert_eq!(sandbox_id(&ann(&[(SANDBOX_ID, "")])), None);
    }
}
