//! Kubernetes Pod manifests (`k8s-openapi` types) translated into a checked [`PodPlan`]:
//! what the `peapod` CLI hands to the shim, in embedded or CRI mode.
//!
//! Rules follow kubelet's, each cited where it is applied:
//! - roles: `initContainers` with `restartPolicy: Always` are native sidecars (KEP-753),
//!   the others init containers; declaration order is init containers, then containers;
//! - pod resource totals: KEP-753's formula (sidecars count for the init containers
//!   declared after them and for the app phase);
//! - QoS class: Guaranteed, Burstable, BestEffort (`pkg/apis/core/v1/helper/qos`);
//! - `oom_score_adj`: kubelet's policy (`pkg/kubelet/qos/policy.go`).
//!
//! - probes and lifecycle hooks: the API server's validation and defaults
//!   (`crate::probes`);
//!
//! Whatever peapod cannot honour is rejected with the field's path (`spec.containers[1]
//! .stdin: not supported by peapod yet`), never silently dropped.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodSecurityContext, ResourceRequirements, Secret};
use proto::annotations::{self, EmptyDirEntry};
use proto::kube::{cpu_millis, memory_bytes};
use sandbox::pod::{DeclaredContainer, Role, VolumeMount};
use serde::{Deserialize, Serialize};

use crate::config::{ConfigObjects, ConfigSource, EnvFrom};
use crate::hostports::ContainerPort;
use crate::imagepull::PullPolicy;
use crate::security::{self, AppArmorProfile, SeccompProfile};

/// A manifest peapod cannot run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    /// Not YAML, or not a Pod's shape.
    #[error("{file}: {reason}")]
    Parse {
        /// The file (or `-`).
        file: String,
        /// What is wrong, with the YAML position when known.
        reason: String,
    },
    /// A field holds something peapod refuses.
    #[error("{field}: {reason}")]
    Field {
        /// Path of the field, e.g. `spec.containers[0].resources.limits.cpu`.
        field: String,
        /// Why.
        reason: String,
    },
}

fn field(field: impl Into<String>, reason: impl Into<String>) -> ManifestError {
    ManifestError::Field {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Kubernetes QoS class of a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QosClass {
    /// Every container has CPU and memory limits equal to its requests.
    Guaranteed,
    /// Some requests or limits, not Guaranteed.
    Burstable,
    /// No requests or limits at all.
    BestEffort,
}

/// CPU (millicores) and memory (bytes) requests and limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU request, millicores.
    pub cpu_request: Option<u64>,
    /// CPU limit, millicores.
    pub cpu_limit: Option<u64>,
    /// Memory request, bytes.
    pub memory_request: Option<u64>,
    /// Memory limit, bytes.
    pub memory_limit: Option<u64>,
}

impl Resources {
    /// Requests default to limits, as the API server does.
    fn effective_requests(self) -> (u64, u64) {
        (
            self.cpu_request.or(self.cpu_limit).unwrap_or(0),
            self.memory_request.or(self.memory_limit).unwrap_or(0),
        )
    }

    fn is_empty(self) -> bool {
        self == Resources::default()
    }
}

/// Where an environment variable's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnvValue {
    /// A literal value.
    Literal(String),
    /// The downward API: `metadata.name`, `metadata.namespace`, `metadata.uid` or
    /// `status.podIP`, resolved when the pod runs.
    Field(String),
    /// `valueFrom.configMapKeyRef` / `secretKeyRef`: key `key` of a ConfigMap or Secret
    /// given with the pod, resolved by [`crate::config::resolve_env`] before it runs;
    /// `optional`: a missing object or key leaves the variable unset.
    Key {
        /// The object.
        source: ConfigSource,
        /// The key in its data.
        key: String,
        /// `optional`.
        optional: bool,
    },
}

/// A pod volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeKind {
    /// An emptyDir, as its sandbox annotation carries it.
    EmptyDir(EmptyDirEntry),
    /// A host directory or file.
    HostPath {
        /// The host path.
        path: String,
        /// The `type` check (`Directory`, `DirectoryOrCreate`, `File`, …; empty: none).
        kind: String,
    },
    /// A configMap, secret, downwardAPI or projected volume: files the CLI writes before
    /// the pod's containers start ([`crate::volumes`]), mounted read-only.
    Populated(crate::volumes::PopulatedVolume),
}

/// A container mount of a pod volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountPlan {
    /// Volume name.
    pub volume: String,
    /// Path in the container.
    pub path: String,
    /// Read-only.
    pub read_only: bool,
    /// Sub-path inside the volume.
    pub sub_path: Option<String>,
}

/// A container's security settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Security {
    /// `runAsUser`.
    pub run_as_user: Option<u32>,
    /// `runAsGroup`.
    pub run_as_group: Option<u32>,
    /// `runAsNonRoot`: refuse to run as uid 0.
    pub run_as_non_root: bool,
    /// `readOnlyRootFilesystem`.
    pub read_only_root_filesystem: bool,
    /// `allowPrivilegeEscalation` (default true, as in Kubernetes): false sets no_new_privs.
    pub allow_privilege_escalation: bool,
    /// Capabilities to add (`CAP_` prefix added).
    pub capabilities_add: Vec<String>,
    /// Capabilities to drop (`ALL` allowed).
    pub capabilities_drop: Vec<String>,
    /// `privileged`.
    pub privileged: bool,
    /// `seccompProfile`, the container's else the pod's, else `RuntimeDefault` (podman's
    /// default, and kubelet's with `--seccomp-default`).
    #[serde(default)]
    pub seccomp: SeccompProfile,
    /// `appArmorProfile`, the container's else the pod's; `None`: the manifest names none.
    #[serde(default)]
    pub apparmor: Option<AppArmorProfile>,
    /// The pod's `supplementalGroups`: extra gids of the container's process.
    #[serde(default)]
    pub supplemental_groups: Vec<u32>,
}

/// One container of the pod, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerPlan {
    /// Name, a DNS label unique in the pod.
    pub name: String,
    /// Init container, native sidecar or app container.
    pub role: Role,
    /// Image reference as written.
    pub image: String,
    /// `imagePullPolicy`, defaulted as the API server defaults it
    /// ([`crate::imagepull::PullPolicy::default_for`]).
    #[serde(default)]
    pub image_pull_policy: PullPolicy,
    /// `command` (replaces the image's entrypoint).
    pub command: Option<Vec<String>>,
    /// `args` (replaces the image's cmd).
    pub args: Option<Vec<String>>,
    /// Environment, in order.
    pub env: Vec<(String, EnvValue)>,
    /// `envFrom`, in order (applied before `env`; see [`crate::config::resolve_env`]).
    #[serde(default)]
    pub env_from: Vec<EnvFrom>,
    /// `workingDir`.
    pub working_dir: Option<String>,
    /// Declared ports, checked ([`crate::hostports::container_ports`]).
    pub ports: Vec<ContainerPort>,
    /// Requests and limits.
    pub resources: Resources,
    /// Volume mounts.
    pub mounts: Vec<MountPlan>,
    /// Security settings.
    pub security: Security,
    /// kubelet's `oom_score_adj` for this container (before any clamping).
    pub oom_score_adj: i32,
    /// Allocate a terminal (`tty`).
    pub tty: bool,
    /// `livenessProbe`, `readinessProbe`, `startupProbe` (see [`crate::probes`]).
    #[serde(default)]
    pub probes: sandbox::pod::probe::Probes,
    /// `lifecycle` hooks (see [`crate::probes::hooks`]).
    #[serde(default)]
    pub hooks: sandbox::pod::hooks::Hooks,
}

/// A whole pod, checked and resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodPlan {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace` (default `default`).
    pub namespace: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations from the manifest.
    pub annotations: BTreeMap<String, String>,
    /// Hostname: `spec.hostname`, else the pod name.
    pub hostname: String,
    /// `hostNetwork`.
    pub host_network: bool,
    /// `shareProcessNamespace`.
    pub share_process_namespace: bool,
    /// `restartPolicy`: `Always` (default), `OnFailure` or `Never`.
    pub restart_policy: String,
    /// Termination grace period, seconds (default 30).
    pub grace_seconds: u64,
    /// The pod's QoS class.
    pub qos: QosClass,
    /// Pod totals (KEP-753), what the pod cgroup gets.
    pub totals: Resources,
    /// Volumes by name.
    pub volumes: BTreeMap<String, VolumeKind>,
    /// Containers in declaration order: init containers (and sidecars), then containers.
    pub containers: Vec<ContainerPlan>,
    /// The pod-level `seccompProfile` (else `RuntimeDefault`): the sandbox's, as kubelet
    /// passes it in `LinuxSandboxSecurityContext.seccomp`.
    #[serde(default)]
    pub seccomp: SeccompProfile,
    /// The pod's `securityContext.sysctls` (namespaced ones only), dot-separated names.
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    /// `spec.imagePullSecrets`: names of Secrets given with the pod (never their
    /// content: credentials are read from the Secrets when images are pulled).
    #[serde(default)]
    pub image_pull_secrets: Vec<String>,
}

/// `oom_score_adj` of the pod sandbox (kubelet's `PodInfraOOMAdj`).
pub const SANDBOX_OOM_SCORE_ADJ: i32 = -998;

/// This machine's memory (MemTotal from /proc/meminfo), bytes: the node capacity in
/// kubelet's `oom_score_adj` policy; 8 GiB if it cannot be read.
pub fn memory_capacity() -> u64 {
    let kb = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
        text.lines()
            .find(|l| l.starts_with("MemTotal:"))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
    });
    kb.map_or(8 << 30, |kb| kb * 1024)
}

/// Parses a Pod manifest (`apiVersion: v1`, `kind: Pod`) from YAML or JSON: one
/// document (see [`parse_all`] for a Pod with its ConfigMaps and Secrets).
///
/// Errors: [`ManifestError::Parse`] naming `file` for bad YAML, another kind, or
/// fields of the wrong shape (serde's message carries the position).
pub fn parse(file: &str, text: &str) -> Result<Pod, ManifestError> {
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| ManifestError::Parse {
        file: file.to_string(),
        reason: e.to_string(),
    })?;
    match document(file, value)? {
        Document::Pod(pod) => Ok(*pod),
        Document::ConfigMap(_) | Document::Secret(_) => Err(ManifestError::Parse {
            file: file.to_string(),
            reason: "a ConfigMap or Secret alone: peapod runs Pods (apiVersion v1, kind Pod)".into(),
        }),
    }
}

/// One document of a manifest file.
enum Document {
    Pod(Box<Pod>),
    ConfigMap(ConfigMap),
    Secret(Secret),
}

/// The kinds a manifest may hold, checked by `kind` and `apiVersion` before the shape.
fn document(what: &str, value: serde_yaml_ng::Value) -> Result<Document, ManifestError> {
    let err = |reason: String| ManifestError::Parse {
        file: what.to_string(),
        reason,
    };
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("").to_string();
    let api = value.get("apiVersion").and_then(|k| k.as_str()).unwrap_or("");
    if !matches!(kind.as_str(), "Pod" | "ConfigMap" | "Secret") {
        return Err(err(format!(
            "kind: {kind:?} is not supported: peapod runs Pods (apiVersion v1, kind Pod), with the \
             ConfigMaps and Secrets they use"
        )));
    }
    if api != "v1" {
        return Err(err(format!("apiVersion: {api:?}: a {kind} is apiVersion v1")));
    }
    let shape = |e: serde_yaml_ng::Error| err(e.to_string());
    let mut value = value;
    if kind == "Pod" {
        if let Some(volumes) = value.get_mut("spec").and_then(|s| s.get_mut("volumes")) {
            yaml11_octal_modes(volumes);
        }
    }
    Ok(match kind.as_str() {
        "Pod" => Document::Pod(Box::new(serde_yaml_ng::from_value(value).map_err(shape)?)),
        "ConfigMap" => Document::ConfigMap(serde_yaml_ng::from_value(value).map_err(shape)?),
        _ => Document::Secret(serde_yaml_ng::from_value(value).map_err(shape)?),
    })
}

/// File modes written as YAML 1.1 octal (`defaultMode: 0400`), as kubectl reads them
/// (sigs.k8s.io/yaml is YAML 1.1: 256), where YAML 1.2 (serde_yaml_ng) reads a string that
/// no mode field accepts: every `mode` and `defaultMode` value of the form `0[0-7]+`
/// under a Pod's `spec.volumes` becomes that octal number. `0o400` is octal in both
/// already.
fn yaml11_octal_modes(value: &mut serde_yaml_ng::Value) {
    use serde_yaml_ng::Value;
    match value {
        Value::Mapping(m) => {
            for (k, v) in m.iter_mut() {
                let octal = match (k.as_str(), v.as_str()) {
                    (Some("mode" | "defaultMode"), Some(s))
                        if s.len() > 1 && s.starts_with('0') && s.bytes().all(|b| (b'0'..=b'7').contains(&b)) =>
                    {
                        u64::from_str_radix(s, 8).ok()
                    }
                    _ => None,
                };
                match octal {
                    Some(n) => *v = Value::Number(n.into()),
                    None => yaml11_octal_modes(v),
                }
            }
        }
        Value::Sequence(s) => s.iter_mut().for_each(yaml11_octal_modes),
        Value::Tagged(t) => yaml11_octal_modes(&mut t.value),
        _ => {}
    }
}

/// A Pod and the ConfigMaps and Secrets given with it.
#[derive(Debug, Clone)]
pub struct Manifests {
    /// The Pod.
    pub pod: Pod,
    /// The ConfigMaps and Secrets, for [`crate::config::resolve_env`].
    pub config: ConfigObjects,
}

/// Reads manifest files, each `(name, text)`: YAML streams of `---`-separated documents
/// (or JSON), together holding exactly one Pod and any ConfigMaps and Secrets (all
/// `apiVersion: v1`) in the Pod's namespace, as `kubectl apply -f` takes them. Empty
/// documents are skipped.
///
/// Errors: [`ManifestError::Parse`] naming the file (and `document N`, counted from 1,
/// when it holds several) for bad YAML, another kind or a wrong shape; for no Pod or a
/// second one; [`ManifestError::Field`] for a ConfigMap or Secret in another namespace or
/// given twice.
pub fn parse_all(files: &[(String, String)]) -> Result<Manifests, ManifestError> {
    use serde::Deserialize as _;
    let mut pods: Vec<(String, Pod)> = Vec::new();
    let mut objects: Vec<(String, Document)> = Vec::new();
    for (file, text) in files {
        let mut values = Vec::new();
        for doc in serde_yaml_ng::Deserializer::from_str(text) {
            let value = serde_yaml_ng::Value::deserialize(doc).map_err(|e| ManifestError::Parse {
                file: file.clone(),
                reason: e.to_string(),
            })?;
            values.push(value);
        }
        let many = values.len() > 1;
        for (n, value) in values.into_iter().enumerate() {
            if value.is_null() {
                continue;
            }
            let what = if many {
                format!("{file}: document {}", n + 1)
            } else {
                file.clone()
            };
            match document(&what, value)? {
                Document::Pod(pod) => pods.push((what, *pod)),
                other => objects.push((what, other)),
            }
        }
    }
    let names = |pods: &[(String, Pod)]| pods.iter().map(|(w, _)| w.as_str()).collect::<Vec<_>>().join(", ");
    let all_files = || files.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>().join(", ");
    let pod = match pods.len() {
        1 => pods.pop().map(|(_, p)| p).unwrap_or_default(),
        0 => {
            return Err(ManifestError::Parse {
                file: all_files(),
                reason: "no Pod (apiVersion v1, kind Pod): peapod runs one Pod per run".into(),
            })
        }
        _ => {
            return Err(ManifestError::Parse {
                file: all_files(),
                reason: format!("{} Pods ({}): peapod runs one Pod per run", pods.len(), names(&pods)),
            })
        }
    };
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut config = ConfigObjects::new(namespace);
    for (what, doc) in objects {
        match doc {
            Document::ConfigMap(cm) => config.add_config_map(&what, cm)?,
            Document::Secret(secret) => config.add_secret(&what, secret)?,
            Document::Pod(_) => {}
        }
    }
    Ok(Manifests { pod, config })
}

// Names become paths (the pod key `<namespace>_<name>` names directories under the state
// and data roots), so they are validated as the API server does before any path is built
// (k8s.io/apimachinery/pkg/util/validation: IsDNS1123Label, IsDNS1123Subdomain).

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;

/// What a DNS-1123 label is, after the API server's message.
const DNS1123_LABEL_RULE: &str = "at most 63 lowercase alphanumeric characters or '-', \
     starting and ending with an alphanumeric character, e.g. 'my-name' or '123-abc'";

/// What a DNS-1123 subdomain is, after the API server's message.
const DNS1123_SUBDOMAIN_RULE: &str = "at most 253 characters: DNS-1123 labels (lowercase \
     alphanumeric characters or '-', starting and ending with an alphanumeric character) \
     joined by '.', e.g. 'example.com'";

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= DNS1123_LABEL_MAX
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= DNS1123_SUBDOMAIN_MAX && s.split('.').all(is_dns_label)
}

/// Checks that `value` of field `name` is a DNS-1123 label (namespaces, container and
/// volume names). Errors: [`ManifestError::Field`] naming the field and the rule.
pub fn dns_label(name: &str, value: &str) -> Result<(), ManifestError> {
    if is_dns_label(value) {
        return Ok(());
    }
    Err(field(
        name,
        format!("{value:?} must be a DNS-1123 label ({DNS1123_LABEL_RULE})"),
    ))
}

/// Checks that `value` of field `name` is a DNS-1123 subdomain (pod names). Errors:
/// [`ManifestError::Field`] naming the field and the rule.
pub fn dns_subdomain(name: &str, value: &str) -> Result<(), ManifestError> {
    if is_dns_subdomain(value) {
        return Ok(());
    }
    Err(field(
        name,
        format!("{value:?} must be a DNS-1123 subdomain ({DNS1123_SUBDOMAIN_RULE})"),
    ))
}

/// The hostname of a pod named `name` without `spec.hostname`: the name cut to 63 bytes
/// with trailing `-` and `.` trimmed, as the kubelet does (`truncatePodHostnameIfNeeded`).
fn pod_hostname(name: &str) -> String {
    if name.len() <= DNS1123_LABEL_MAX {
        return name.to_string();
    }
    name[..DNS1123_LABEL_MAX].trim_end_matches(['-', '.']).to_string()
}

fn resources(path: &str, r: Option<&ResourceRequirements>) -> Result<Resources, ManifestError> {
    let mut out = Resources::default();
    let Some(r) = r else { return Ok(out) };
    if r.claims.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(field(
            format!("{path}.claims"),
            "resource claims are not supported by peapod",
        ));
    }
    for (kind, map) in [("requests", &r.requests), ("limits", &r.limits)] {
        for (name, q) in map.iter().flatten() {
            let f = format!("{path}.{kind}.{name}");
            let bad = |e: proto::kube::QuantityError| field(&f, e.to_string());
            match (kind, name.as_str()) {
                ("requests", "cpu") => out.cpu_request = Some(cpu_millis(&q.0).map_err(bad)?),
                ("limits", "cpu") => out.cpu_limit = Some(cpu_millis(&q.0).map_err(bad)?),
                ("requests", "memory") => out.memory_request = Some(memory_bytes(&q.0).map_err(bad)?),
                ("limits", "memory") => out.memory_limit = Some(memory_bytes(&q.0).map_err(bad)?),
                _ => return Err(field(f, "only cpu and memory are supported by peapod")),
            }
        }
    }
    if let (Some(req), Some(lim)) = (out.cpu_request, out.cpu_limit) {
        if req > lim {
            return Err(field(
                format!("{path}.requests.cpu"),
                "must be less than or equal to the cpu limit",
            ));
        }
    }
    if let (Some(req), Some(lim)) = (out.memory_request, out.memory_limit) {
        if req > lim {
            return Err(field(
                format!("{path}.requests.memory"),
                "must be less than or equal to the memory limit",
            ));
        }
    }
    Ok(out)
}

/// Rejects container fields peapod does not implement yet.
fn unsupported(path: &str, c: &Container) -> Result<(), ManifestError> {
    let checks: [(&str, bool); 4] = [
        (
            "volumeDevices",
            c.volume_devices.as_ref().is_some_and(|v| !v.is_empty()),
        ),
        ("resizePolicy", c.resize_policy.as_ref().is_some_and(|v| !v.is_empty())),
        ("stdinOnce", c.stdin_once == Some(true)),
        ("stdin", c.stdin == Some(true)),
    ];
    for (name, present) in checks {
        if present {
            return Err(field(format!("{path}.{name}"), "not supported by peapod yet"));
        }
    }
    Ok(())
}

/// A `seccompProfile` at `path` (`spec.securityContext.seccompProfile` or a
/// container's), checked as the API server checks it: `type` is `RuntimeDefault`,
/// `Localhost` (with a relative `localhostProfile` without `..`) or `Unconfined`, and
/// `localhostProfile` is set with `Localhost` only.
fn seccomp_profile(
    path: &str,
    p: &k8s_openapi::api::core::v1::SeccompProfile,
) -> Result<SeccompProfile, ManifestError> {
    let local = format!("{path}.localhostProfile");
    match (p.type_.as_str(), &p.localhost_profile) {
        ("Localhost", Some(profile)) => {
            security::check_localhost_path(&local, profile).map_err(|e| field(&local, without_field(&e, &local)))?;
            Ok(SeccompProfile::Localhost {
                field: local,
                profile: profile.clone(),
            })
        }
        ("Localhost", None) => Err(field(local, "must be set when type is Localhost")),
        ("RuntimeDefault" | "Unconfined", Some(_)) => Err(field(local, "can only be set when type is Localhost")),
        ("RuntimeDefault", None) => Ok(SeccompProfile::RuntimeDefault),
        ("Unconfined", None) => Ok(SeccompProfile::Unconfined),
        (t, _) => Err(field(
            format!("{path}.type"),
            format!("{t:?} is not RuntimeDefault, Localhost or Unconfined"),
        )),
    }
}

/// An `appArmorProfile` at `path`, checked as the API server checks it (the same three
/// types as [`seccomp_profile`]; a Localhost profile is a profile name, not a path).
fn apparmor_profile(
    path: &str,
    p: &k8s_openapi::api::core::v1::AppArmorProfile,
) -> Result<AppArmorProfile, ManifestError> {
    let local = format!("{path}.localhostProfile");
    match (p.type_.as_str(), &p.localhost_profile) {
        ("Localhost", Some(profile)) if !profile.trim().is_empty() => Ok(AppArmorProfile::Localhost {
            field: local,
            profile: profile.clone(),
        }),
        ("Localhost", _) => Err(field(local, "must be set when type is Localhost")),
        ("RuntimeDefault" | "Unconfined", Some(_)) => Err(field(local, "can only be set when type is Localhost")),
        ("RuntimeDefault", None) => Ok(AppArmorProfile::RuntimeDefault {
            field: format!("{path}.type"),
        }),
        ("Unconfined", None) => Ok(AppArmorProfile::Unconfined),
        (t, _) => Err(field(
            format!("{path}.type"),
            format!("{t:?} is not RuntimeDefault, Localhost or Unconfined"),
        )),
    }
}

/// `e`'s message without its leading `<field>: `.
fn without_field(e: &dyn std::error::Error, f: &str) -> String {
    let m = e.to_string();
    m.strip_prefix(&format!("{f}: ")).map(str::to_string).unwrap_or(m)
}

/// The checked pod-level `securityContext`: what containers inherit and the sandbox gets.
#[derive(Debug, Default)]
struct PodSecurity {
    run_as_user: Option<i64>,
    run_as_group: Option<i64>,
    run_as_non_root: Option<bool>,
    seccomp: Option<SeccompProfile>,
    apparmor: Option<AppArmorProfile>,
    supplemental_groups: Vec<u32>,
    sysctls: BTreeMap<String, String>,
}

/// kubelet's sysctl names: dot-separated segments of `[a-z0-9]([-_a-z0-9]*[a-z0-9])?`
/// (`/` also separates, and is turned into `.`, kubelet's
/// `ConvertSysctlVariableToDotsSeparator`), at most 253 characters.
fn sysctl_name(f: &str, name: &str) -> Result<String, ManifestError> {
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
    };
    if name.len() > 253 || !name.split(['.', '/']).all(segment_ok) {
        return Err(field(f, format!("{name:?} is not a sysctl name")));
    }
    // The first separator decides: `net/ipv4/conf/eth0.1/rp_filter` means
    // `net.ipv4.conf.eth0/1.rp_filter`.
    if name.find(['.', '/']).is_some_and(|i| name.as_bytes()[i] == b'/') {
        return Ok(name
            .chars()
            .map(|c| match c {
                '/' => '.',
                '.' => '/',
                c => c,
            })
            .collect());
    }
    Ok(name.to_string())
}

/// Checks that sysctl `name` (named by field `f`) is namespaced, by kubelet's table
/// (`pkg/kubelet/sysctl/namespace.go`): the ipc ones (`kernel.sem`, `kernel.shm*`,
/// `kernel.msg*`, `fs.mqueue.*`) and `net.*` (refused with `hostNetwork`, as kubelet's
/// "not allowed with host net enabled"). The uts ones are `spec.hostname`'s business.
fn namespaced_sysctl(f: &str, name: &str, host_network: bool) -> Result<(), ManifestError> {
    let ipc = name.starts_with("fs.mqueue.")
        || matches!(
            name,
            "kernel.sem"
                | "kernel.shmall"
                | "kernel.shmmax"
                | "kernel.shmmni"
                | "kernel.shm_rmid_forced"
                | "kernel.msgmax"
                | "kernel.msgmnb"
                | "kernel.msgmni"
        );
    if ipc {
        return Ok(());
    }
    if name.starts_with("net.") {
        if host_network {
            return Err(field(
                f,
                format!("{name}: not allowed with hostNetwork: it would change the host's network stack"),
            ));
        }
        return Ok(());
    }
    if matches!(name, "kernel.hostname" | "kernel.domainname") {
        return Err(field(f, format!("{name}: set spec.hostname instead")));
    }
    Err(field(
        f,
        format!("{name}: not a namespaced sysctl: it would change the host (only net.*, fs.mqueue.* and kernel's ipc ones are)"),
    ))
}

/// The pod-level `securityContext`. Every field of k8s-openapi's `PodSecurityContext` is
/// named below (the destructuring has no `..`): each is applied or refused with its
/// path, none ignored, and a field a new k8s-openapi adds fails to compile here.
fn pod_security(sc: Option<&PodSecurityContext>, host_network: bool) -> Result<PodSecurity, ManifestError> {
    const P: &str = "spec.securityContext";
    let Some(sc) = sc else {
        return Ok(PodSecurity::default());
    };
    let PodSecurityContext {
        app_armor_profile,
        fs_group,
        fs_group_change_policy,
        run_as_group,
        run_as_non_root,
        run_as_user,
        se_linux_change_policy,
        se_linux_options,
        seccomp_profile: seccomp,
        supplemental_groups,
        supplemental_groups_policy,
        sysctls,
        windows_options,
    } = sc;
    for (name, present, reason) in [
        (
            "fsGroup",
            fs_group.is_some(),
            "volume ownership by group is not supported by peapod yet",
        ),
        (
            "fsGroupChangePolicy",
            fs_group_change_policy.is_some(),
            "volume ownership by group is not supported by peapod yet",
        ),
        (
            "seLinuxOptions",
            se_linux_options.is_some(),
            "SELinux labels are not supported by peapod",
        ),
        (
            "seLinuxChangePolicy",
            se_linux_change_policy.is_some(),
            "SELinux labels are not supported by peapod",
        ),
        (
            "supplementalGroupsPolicy",
            supplemental_groups_policy.is_some(),
            "not supported by peapod yet: it does not read the image's /etc/group",
        ),
        (
            "windowsOptions",
            windows_options.is_some(),
            "peapod runs Linux containers",
        ),
    ] {
        if present {
            return Err(field(format!("{P}.{name}"), reason));
        }
    }
    let mut groups = Vec::new();
    for (i, g) in supplemental_groups.iter().flatten().enumerate() {
        groups.push(u32::try_from(*g).map_err(|_| {
            field(
                format!("{P}.supplementalGroups[{i}]"),
                format!("{g} is not a valid gid"),
            )
        })?);
    }
    let mut out_sysctls = BTreeMap::new();
    for (i, s) in sysctls.iter().flatten().enumerate() {
        let f = format!("{P}.sysctls[{i}].name");
        let name = sysctl_name(&f, &s.name)?;
        namespaced_sysctl(&f, &name, host_network)?;
        if out_sysctls.insert(name, s.value.clone()).is_some() {
            return Err(field(f, format!("{:?} is set twice", s.name)));
        }
    }
    Ok(PodSecurity {
        run_as_user: *run_as_user,
        run_as_group: *run_as_group,
        run_as_non_root: *run_as_non_root,
        seccomp: seccomp
            .as_ref()
            .map(|p| seccomp_profile(&format!("{P}.seccompProfile"), p))
            .transpose()?,
        apparmor: app_armor_profile
            .as_ref()
            .map(|p| apparmor_profile(&format!("{P}.appArmorProfile"), p))
            .transpose()?,
        supplemental_groups: groups,
        sysctls: out_sysctls,
    })
}

/// Annotations kubelet once read for seccomp and AppArmor: refused, naming the field that
/// replaced them, rather than ignored.
fn deprecated_security_annotations(annotations: Option<&BTreeMap<String, String>>) -> Result<(), ManifestError> {
    for key in annotations.into_iter().flat_map(|a| a.keys()) {
        let replacement = if key == "seccomp.security.alpha.kubernetes.io/pod"
            || key.starts_with("container.seccomp.security.alpha.kubernetes.io/")
        {
            "securityContext.seccompProfile"
        } else if key.starts_with("container.apparmor.security.beta.kubernetes.io/") {
            "securityContext.appArmorProfile"
        } else {
            continue;
        };
        return Err(field(
            format!("metadata.annotations[{key}]"),
            format!("this annotation is deprecated and not read by peapod: use {replacement}"),
        ));
    }
    Ok(())
}

/// A container's `securityContext`, over the pod's. Every field of k8s-openapi's
/// `SecurityContext` is named (no `..`), as in [`pod_security`].
fn security(path: &str, c: &Container, pod: &PodSecurity) -> Result<Security, ManifestError> {
    let empty = k8s_openapi::api::core::v1::SecurityContext::default();
    let k8s_openapi::api::core::v1::SecurityContext {
        allow_privilege_escalation,
        app_armor_profile,
        capabilities,
        privileged,
        proc_mount,
        read_only_root_filesystem,
        run_as_group,
        run_as_non_root,
        run_as_user,
        se_linux_options,
        seccomp_profile: seccomp,
        windows_options,
    } = c.security_context.as_ref().unwrap_or(&empty);
    let sc_path = format!("{path}.securityContext");
    let id = |f: &str, v: Option<i64>| -> Result<Option<u32>, ManifestError> {
        v.map(|v| u32::try_from(v).map_err(|_| field(format!("{sc_path}.{f}"), format!("{v} is not a valid id"))))
            .transpose()
    };
    for (name, present, reason) in [
        (
            "seLinuxOptions",
            se_linux_options.is_some(),
            "SELinux labels are not supported by peapod",
        ),
        (
            "procMount",
            proc_mount.as_deref().is_some_and(|p| p != "Default"),
            "not supported by peapod yet",
        ),
        (
            "windowsOptions",
            windows_options.is_some(),
            "peapod runs Linux containers",
        ),
    ] {
        if present {
            return Err(field(format!("{sc_path}.{name}"), reason));
        }
    }
    let seccomp = match seccomp {
        Some(p) => seccomp_profile(&format!("{sc_path}.seccompProfile"), p)?,
        None => pod.seccomp.clone().unwrap_or(SeccompProfile::RuntimeDefault),
    };
    let apparmor = match app_armor_profile {
        Some(p) => Some(apparmor_profile(&format!("{sc_path}.appArmorProfile"), p)?),
        None => pod.apparmor.clone(),
    };
    let caps = capabilities.as_ref();
    let norm = |list: Option<&Vec<String>>| -> Vec<String> {
        list.into_iter()
            .flatten()
            .map(|c| {
                let c = c.to_ascii_uppercase();
                if c == "ALL" || c.starts_with("CAP_") {
                    c
                } else {
                    format!("CAP_{c}")
                }
            })
            .collect()
    };
    let add = norm(caps.and_then(|c| c.add.as_ref()));
    for (i, cap) in add.iter().enumerate() {
        if cap != "ALL" && cap.parse::<caps::Capability>().is_err() {
            return Err(field(
                format!("{sc_path}.capabilities.add[{i}]"),
                format!("{cap} is not a capability"),
            ));
        }
    }
    let s = Security {
        run_as_user: id("runAsUser", run_as_user.or(pod.run_as_user))?,
        run_as_group: id("runAsGroup", run_as_group.or(pod.run_as_group))?,
        run_as_non_root: run_as_non_root.or(pod.run_as_non_root).unwrap_or(false),
        read_only_root_filesystem: read_only_root_filesystem.unwrap_or(false),
        allow_privilege_escalation: allow_privilege_escalation.unwrap_or(true),
        capabilities_add: add,
        capabilities_drop: norm(caps.and_then(|c| c.drop.as_ref())),
        privileged: privileged.unwrap_or(false),
        seccomp,
        apparmor,
        supplemental_groups: pod.supplemental_groups.clone(),
    };
    if s.run_as_non_root && s.run_as_user == Some(0) {
        return Err(field(
            format!("{sc_path}.runAsNonRoot"),
            "runAsNonRoot is true but runAsUser is 0",
        ));
    }
    if s.privileged && !s.allow_privilege_escalation {
        return Err(field(
            format!("{sc_path}.allowPrivilegeEscalation"),
            "cannot be false for a privileged container",
        ));
    }
    Ok(s)
}

/// KEP-753 pod totals. Requests: the larger of the init phase (each init container plus
/// the sidecars declared before it) and the app phase (all app containers plus all
/// sidecars). Limits likewise, and only when every container has one.
pub fn pod_totals(containers: &[ContainerPlan]) -> Resources {
    let get = |r: &Resources, i: usize| -> Option<u64> {
        match i {
            0 => r.cpu_request.or(r.cpu_limit),
            1 => r.memory_request.or(r.memory_limit),
            2 => r.cpu_limit,
            _ => r.memory_limit,
        }
    };
    let mut totals = [None; 4];
    for (i, total) in totals.iter_mut().enumerate() {
        let all_set = containers.iter().all(|c| get(&c.resources, i).is_some());
        if i >= 2 && !all_set {
            continue;
        }
        let mut sidecars = 0u64;
        let mut init_max = 0u64;
        let mut apps = 0u64;
        for c in containers {
            let v = get(&c.resources, i).unwrap_or(0);
            // Saturating: each value is bounded (proto::kube), their sum is not; a total
            // past the bound is then refused by the shim, naming the annotation.
            match c.role {
                Role::Init => init_max = init_max.max(v.saturating_add(sidecars)),
                Role::Sidecar => {
                    sidecars = sidecars.saturating_add(v);
                    init_max = init_max.max(sidecars);
                }
                Role::App => apps = apps.saturating_add(v),
            }
        }
        let v = init_max.max(apps.saturating_add(sidecars));
        *total = (v > 0 || (i >= 2 && all_set && !containers.is_empty())).then_some(v);
    }
    Resources {
        cpu_request: totals[0],
        memory_request: totals[1],
        cpu_limit: totals[2],
        memory_limit: totals[3],
    }
}

/// The pod's QoS class (`pkg/apis/core/v1/helper/qos`): Guaranteed when every
/// container has cpu and memory limits equal to their (defaulted) requests; BestEffort
/// when no container has any; Burstable otherwise.
pub fn qos_class(containers: &[ContainerPlan]) -> QosClass {
    if containers.iter().all(|c| c.resources.is_empty()) {
        return QosClass::BestEffort;
    }
    let guaranteed = containers.iter().all(|c| {
        let r = c.resources;
        r.cpu_limit.is_some()
            && r.memory_limit.is_some()
            && r.cpu_request.unwrap_or(r.cpu_limit.unwrap_or(0)) == r.cpu_limit.unwrap_or(0)
            && r.memory_request.unwrap_or(r.memory_limit.unwrap_or(0)) == r.memory_limit.unwrap_or(0)
    });
    if guaranteed {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    }
}

/// kubelet's `GetContainerOOMScoreAdjust`: Guaranteed -997, BestEffort 1000, Burstable
/// `1000 - 1000·memoryRequest/memoryCapacity`, kept within 3..=999.
pub fn oom_score_adj(qos: QosClass, memory_request: u64, memory_capacity: u64) -> i32 {
    match qos {
        QosClass::Guaranteed => -997,
        QosClass::BestEffort => 1000,
        QosClass::Burstable => {
            let capacity = memory_capacity.max(1);
            let adj = 1000 - i64::try_from(1000 * u128::from(memory_request) / u128::from(capacity)).unwrap_or(1000);
            let adj = i32::try_from(adj).unwrap_or(3);
            if adj < 3 {
                3
            } else if adj == 1000 {
                999
            } else {
                adj
            }
        }
    }
}

/// The volume types `v` sets (`emptyDir`, `configMap`, ...), by their manifest names.
fn volume_kinds(v: &k8s_openapi::api::core::v1::Volume) -> Vec<String> {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::Object(m)) => m.keys().filter(|k| *k != "name").cloned().collect(),
        _ => Vec::new(),
    }
}

/// The refusal of a volume type peapod does not fill, naming it
/// (`spec.volumes[0].persistentVolumeClaim`).
fn unsupported_volume(path: &str, v: &k8s_openapi::api::core::v1::Volume) -> ManifestError {
    const SUPPORTED: &str = "only emptyDir, hostPath, configMap, secret, downwardAPI and projected volumes are";
    match volume_kinds(v).first() {
        Some(kind) => field(
            format!("{path}.{kind}"),
            format!("not supported by peapod ({SUPPORTED})"),
        ),
        None => field(
            path,
            format!("must specify a volume type ({SUPPORTED} supported by peapod)"),
        ),
    }
}

/// Checks `pod` and resolves it into a [`PodPlan`]; `memory_capacity` (bytes) is the
/// node's memory, for `oom_score_adj`.
pub fn plan(pod: &Pod, memory_capacity: u64) -> Result<PodPlan, ManifestError> {
    let meta = &pod.metadata;
    let name = meta.name.clone().ok_or_else(|| field("metadata.name", "missing"))?;
    dns_subdomain("metadata.name", &name)?;
    let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
    dns_label("metadata.namespace", &namespace)?;
    let spec = pod.spec.as_ref().ok_or_else(|| field("spec", "missing"))?;
    for (fname, present) in [
        (
            "spec.ephemeralContainers",
            spec.ephemeral_containers.as_ref().is_some_and(|e| !e.is_empty()),
        ),
        ("spec.hostPID", spec.host_pid == Some(true)),
        ("spec.hostIPC", spec.host_ipc == Some(true)),
        ("spec.affinity", spec.affinity.is_some()),
        (
            "spec.nodeSelector",
            spec.node_selector.as_ref().is_some_and(|n| !n.is_empty()),
        ),
        ("spec.nodeName", spec.node_name.is_some()),
        ("spec.dnsConfig", spec.dns_config.is_some()),
        (
            "spec.hostAliases",
            spec.host_aliases.as_ref().is_some_and(|h| !h.is_empty()),
        ),
        (
            "spec.readinessGates",
            spec.readiness_gates.as_ref().is_some_and(|r| !r.is_empty()),
        ),
        (
            "spec.resourceClaims",
            spec.resource_claims.as_ref().is_some_and(|r| !r.is_empty()),
        ),
        ("spec.activeDeadlineSeconds", spec.active_deadline_seconds.is_some()),
    ] {
        if present {
            return Err(field(
                fname,
                "not supported by peapod (it runs one pod on this machine)",
            ));
        }
    }
    if spec.host_users == Some(false) {
        // KEP-127: the pod in its own user namespace. peapod refuses user namespaces
        // (`linux.uidMappings`) in the sandbox too.
        return Err(field(
            "spec.hostUsers",
            "false asks for a user namespace: user namespaces are not supported by peapod",
        ));
    }
    let restart_policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
    if !matches!(restart_policy.as_str(), "Always" | "OnFailure" | "Never") {
        return Err(field(
            "spec.restartPolicy",
            format!("{restart_policy:?} is not Always, OnFailure or Never"),
        ));
    }
    let grace_seconds = match spec.termination_grace_period_seconds {
        Some(g) => u64::try_from(g).map_err(|_| field("spec.terminationGracePeriodSeconds", "must not be negative"))?,
        None => proto::kube::DEFAULT_GRACE_SECONDS,
    };
    // The shim refuses more in the sandbox's annotation; say so with the manifest's field.
    if grace_seconds > annotations::MAX_GRACE_SECONDS {
        return Err(field(
            "spec.terminationGracePeriodSeconds",
            format!("must be at most {} (ten years)", annotations::MAX_GRACE_SECONDS),
        ));
    }

    let mut volumes = BTreeMap::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let path = format!("spec.volumes[{i}]");
        dns_label(&format!("{path}.name"), &v.name)?;
        let kinds = volume_kinds(v);
        if kinds.len() > 1 {
            return Err(field(
                path,
                format!("may not specify more than 1 volume type (has {})", kinds.join(", ")),
            ));
        }
        let kind = if let Some(e) = &v.empty_dir {
            let medium = e.medium.clone().unwrap_or_default();
            if !matches!(medium.as_str(), "" | "Memory") {
                return Err(field(
                    format!("{path}.emptyDir.medium"),
                    format!("{medium:?} is not \"\" or \"Memory\""),
                ));
            }
            if let Some(q) = &e.size_limit {
                memory_bytes(&q.0).map_err(|e| field(format!("{path}.emptyDir.sizeLimit"), e.to_string()))?;
            }
            VolumeKind::EmptyDir(EmptyDirEntry {
                name: v.name.clone(),
                medium,
                size_limit: e.size_limit.as_ref().map(|q| q.0.clone()),
            })
        } else if let Some(h) = &v.host_path {
            if !h.path.starts_with('/') {
                return Err(field(format!("{path}.hostPath.path"), "must be absolute"));
            }
            VolumeKind::HostPath {
                path: h.path.clone(),
                kind: h.type_.clone().unwrap_or_default(),
            }
        } else if let Some(populated) = crate::volumes::plan_volume(&path, v)? {
            VolumeKind::Populated(populated)
        } else {
            return Err(unsupported_volume(&path, v));
        };
        if volumes.insert(v.name.clone(), kind).is_some() {
            return Err(field(format!("{path}.name"), format!("{:?} declared twice", v.name)));
        }
    }

    deprecated_security_annotations(meta.annotations.as_ref())?;
    let host_network = spec.host_network == Some(true);
    let pod_sec = pod_security(spec.security_context.as_ref(), host_network)?;
    let declared = spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| (format!("spec.initContainers[{i}]"), c, true))
        .chain(
            spec.containers
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("spec.containers[{i}]"), c, false)),
        );
    let mut containers: Vec<ContainerPlan> = Vec::new();
    for (path, c, is_init) in declared {
        dns_label(&format!("{path}.name"), &c.name)?;
        if containers.iter().any(|o| o.name == c.name) {
            return Err(field(
                format!("{path}.name"),
                format!("{:?}: container names must be unique in a pod", c.name),
            ));
        }
        unsupported(&path, c)?;
        let role = match (is_init, c.restart_policy.as_deref()) {
            (true, Some("Always")) => Role::Sidecar,
            (true, None) => Role::Init,
            (false, None) => Role::App,
            (_, Some(p)) => {
                return Err(field(
                    format!("{path}.restartPolicy"),
                    format!("{p:?}: only initContainers may set it, and only to Always (a native sidecar)"),
                ))
            }
        };
        let image = c
            .image
            .clone()
            .filter(|i| !i.is_empty())
            .ok_or_else(|| field(format!("{path}.image"), "missing"))?;
        let image_pull_policy = PullPolicy::from_manifest(
            &format!("{path}.imagePullPolicy"),
            c.image_pull_policy.as_deref(),
            &image,
        )?;
        let mut env = Vec::new();
        for (j, e) in c.env.iter().flatten().enumerate() {
            let f = format!("{path}.env[{j}]");
            let value = match (&e.value, &e.value_from) {
                (_, Some(from)) => {
                    let refs = [
                        from.field_ref.is_some(),
                        from.config_map_key_ref.is_some(),
                        from.secret_key_ref.is_some(),
                        from.resource_field_ref.is_some(),
                    ];
                    if refs.iter().filter(|r| **r).count() != 1 {
                        return Err(field(
                            format!("{f}.valueFrom"),
                            "exactly one of fieldRef, configMapKeyRef, secretKeyRef or resourceFieldRef",
                        ));
                    }
                    if let Some(r) = &from.config_map_key_ref {
                        EnvValue::Key {
                            source: ConfigSource::ConfigMap(r.name.clone()),
                            key: r.key.clone(),
                            optional: r.optional == Some(true),
                        }
                    } else if let Some(r) = &from.secret_key_ref {
                        EnvValue::Key {
                            source: ConfigSource::Secret(r.name.clone()),
                            key: r.key.clone(),
                            optional: r.optional == Some(true),
                        }
                    } else {
                        match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                            Some(p @ ("metadata.name" | "metadata.namespace" | "metadata.uid" | "status.podIP")) => {
                                EnvValue::Field(p.to_string())
                            }
                            _ => return Err(field(
                                format!("{f}.valueFrom"),
                                "only fieldRef to metadata.name, metadata.namespace, metadata.uid or status.podIP, configMapKeyRef and secretKeyRef are supported by peapod",
                            )),
                        }
                    }
                }
                (v, None) => EnvValue::Literal(v.clone().unwrap_or_default()),
            };
            env.push((e.name.clone(), value));
        }
        let mut env_from = Vec::new();
        for (j, e) in c.env_from.iter().flatten().enumerate() {
            let f = format!("{path}.envFrom[{j}]");
            let (source, optional) = match (&e.config_map_ref, &e.secret_ref) {
                (Some(r), None) => (ConfigSource::ConfigMap(r.name.clone()), r.optional),
                (None, Some(r)) => (ConfigSource::Secret(r.name.clone()), r.optional),
                _ => return Err(field(f, "exactly one of configMapRef or secretRef")),
            };
            env_from.push(EnvFrom {
                prefix: e.prefix.clone().unwrap_or_default(),
                source,
                optional: optional == Some(true),
            });
        }
        let mut mounts = Vec::new();
        for (j, m) in c.volume_mounts.iter().flatten().enumerate() {
            let f = format!("{path}.volumeMounts[{j}]");
            if !volumes.contains_key(&m.name) {
                return Err(field(
                    format!("{f}.name"),
                    format!("no volume {:?} in spec.volumes", m.name),
                ));
            }
            if !m.mount_path.starts_with('/') {
                return Err(field(format!("{f}.mountPath"), "must be absolute"));
            }
            if m.sub_path_expr.is_some() {
                return Err(field(format!("{f}.subPathExpr"), "not supported by peapod yet"));
            }
            if m.mount_propagation.as_deref().is_some_and(|p| p != "None") {
                return Err(field(format!("{f}.mountPropagation"), "not supported by peapod yet"));
            }
            let sub_path = m.sub_path.clone().filter(|s| !s.is_empty());
            if sub_path
                .as_deref()
                .is_some_and(|s| s.starts_with('/') || s.split('/').any(|p| p == ".."))
            {
                return Err(field(format!("{f}.subPath"), "must be a relative path without '..'"));
            }
            if sub_path.is_some() && matches!(volumes.get(&m.name), Some(VolumeKind::Populated(_))) {
                return Err(field(
                    format!("{f}.subPath"),
                    "subPath on a configMap, secret, downwardAPI or projected volume is not supported by peapod yet",
                ));
            }
            mounts.push(MountPlan {
                volume: m.name.clone(),
                path: m.mount_path.clone(),
                read_only: m.read_only.unwrap_or(false),
                sub_path,
            });
        }
        let ports =
            crate::hostports::container_ports(&path, c.ports.as_deref().unwrap_or_default(), role, host_network)?;
        let probes = crate::probes::probes(&path, c, role == Role::Init, &ports)?;
        let hooks = crate::probes::hooks(&path, c, role == Role::Init, grace_seconds, &ports)?;
        containers.push(ContainerPlan {
            name: c.name.clone(),
            role,
            image,
            image_pull_policy,
            command: c.command.clone(),
            args: c.args.clone(),
            env,
            env_from,
            working_dir: c.working_dir.clone(),
            ports,
            resources: resources(&format!("{path}.resources"), c.resources.as_ref())?,
            mounts,
            security: security(&path, c, &pod_sec)?,
            oom_score_adj: 0,
            tty: c.tty == Some(true),
            probes,
            hooks,
        });
    }
    if !containers.iter().any(|c| c.role == Role::App) {
        return Err(field("spec.containers", "a pod needs at least one container"));
    }
    let mut image_pull_secrets = Vec::new();
    for (i, s) in spec.image_pull_secrets.iter().flatten().enumerate() {
        // A Secret's name, as the API server checks a LocalObjectReference it follows.
        dns_subdomain(&format!("spec.imagePullSecrets[{i}].name"), &s.name)?;
        image_pull_secrets.push(s.name.clone());
    }
    let qos = qos_class(&containers);
    for c in &mut containers {
        let (_, memory_request) = c.resources.effective_requests();
        c.oom_score_adj = oom_score_adj(qos, memory_request, memory_capacity);
    }
    let plan = PodPlan {
        name: name.clone(),
        namespace,
        labels: meta.labels.clone().unwrap_or_default(),
        annotations: meta.annotations.clone().unwrap_or_default(),
        hostname: spec.hostname.clone().unwrap_or_else(|| pod_hostname(&name)),
        host_network,
        share_process_namespace: spec.share_process_namespace == Some(true),
        restart_policy,
        grace_seconds,
        qos,
        totals: pod_totals(&containers),
        volumes,
        containers,
        seccomp: pod_sec.seccomp.unwrap_or(SeccompProfile::RuntimeDefault),
        sysctls: pod_sec.sysctls,
        image_pull_secrets,
    };
    crate::hostports::unique_in_pod(&plan)?;
    Ok(plan)
}

impl PodPlan {
    /// The manifest path of container `index` (declaration order):
    /// `spec.initContainers[k]` for init containers and sidecars, else `spec.containers[k]`.
    pub fn container_field(&self, index: usize) -> String {
        let Some(c) = self.containers.get(index) else {
            return format!("spec.containers[{index}]");
        };
        let init = |c: &ContainerPlan| c.role != Role::App;
        let k = self.containers[..index].iter().filter(|o| init(o) == init(c)).count();
        if init(c) {
            format!("spec.initContainers[{k}]")
        } else {
            format!("spec.containers[{k}]")
        }
    }

    /// peapod's annotations for the pod's sandbox: the declared containers and roles,
    /// emptyDirs, grace period and pod cgroup sizing (see `proto::annotations`).
    pub fn sandbox_annotations(&self) -> HashMap<String, String> {
        let mut a = HashMap::new();
        let declared: Vec<DeclaredContainer> = self
            .containers
            .iter()
            .map(|c| DeclaredContainer {
                name: c.name.clone(),
                role: c.role,
            })
            .collect();
        a.insert(
            annotations::CONTAINERS.to_string(),
            annotations::format_containers(&declared),
        );
        let dirs: Vec<&EmptyDirEntry> = self
            .volumes
            .values()
            .filter_map(|v| match v {
                VolumeKind::EmptyDir(e) => Some(e),
                VolumeKind::HostPath { .. } | VolumeKind::Populated(_) => None,
            })
            .collect();
        if !dirs.is_empty() {
            a.insert(
                annotations::EMPTY_DIRS.to_string(),
                annotations::format_empty_dirs(dirs),
            );
        }
        a.insert(annotations::GRACE_PERIOD.to_string(), self.grace_seconds.to_string());
        if let Some(m) = self.totals.cpu_request {
            a.insert(
                annotations::POD_CPU_REQUEST.to_string(),
                proto::kube::format_millicores(m),
            );
        }
        if let Some(m) = self.totals.cpu_limit {
            a.insert(
                annotations::POD_CPU_LIMIT.to_string(),
                proto::kube::format_millicores(m),
            );
        }
        if let Some(b) = self.totals.memory_limit {
            a.insert(annotations::POD_MEMORY_LIMIT.to_string(), proto::kube::format_bytes(b));
        }
        a
    }

    /// peapod's annotations for one container: its name, role and emptyDir mounts.
    pub fn container_annotations(&self, c: &ContainerPlan) -> HashMap<String, String> {
        let mut a = HashMap::new();
        a.insert(annotations::NAME.to_string(), c.name.clone());
        a.insert(
            annotations::ROLE.to_string(),
            annotations::format_role(c.role).to_string(),
        );
        let mounts: Vec<VolumeMount> = c
            .mounts
            .iter()
            .filter(|m| matches!(self.volumes.get(&m.volume), Some(VolumeKind::EmptyDir(_))) && m.sub_path.is_none())
            .map(|m| VolumeMount {
                name: m.volume.clone(),
                mount_path: m.path.clone(),
                read_only: m.read_only,
            })
            .collect();
        if !mounts.is_empty() {
            a.insert(
                annotations::VOLUME_MOUNTS.to_string(),
                annotations::format_volume_mounts(&mounts),
            );
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn plan_of(yaml: &str) -> Result<PodPlan, ManifestError> {
        plan(&parse("test.yaml", yaml)?, 8 * GIB)
    }

    fn err_field(yaml: &str) -> String {
        match plan_of(yaml).unwrap_err() {
            ManifestError::Field { field, .. } => field,
            ManifestError::Parse { reason, .. } => format!("parse: {reason}"),
        }
    }

    #[test]
    fn every_example_translates() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            // runtimeclass.yaml holds RuntimeClasses, not a pod (checked against the
            // harness's handlers in tests/src/containerd.rs).
            if path.extension().is_some_and(|e| e == "yaml") && !path.ends_with("runtimeclass.yaml") {
                let text = std::fs::read_to_string(&path).unwrap();
                let m = parse_all(&[(path.display().to_string(), text)]).unwrap();
                plan(&m.pod, 8 << 30)
                    .and_then(|p| crate::config::resolve_env(&p, &m.config))
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 5, "examples/ holds {n} pods");
    }

    #[test]
    fn native_sidecar_and_kep_753_totals() {
        let p = plan_of(
            r#"
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  initContainers:
  - name: setup
    image: busybox
    resources: {requests: {cpu: 500m, memory: 64Mi}}
  - name: logs
    image: busybox
    restartPolicy: Always
    resources: {requests: {cpu: 100m, memory: 32Mi}}
  - name: migrate
    image: busybox
    resources: {requests: {cpu: 300m, memory: 16Mi}}
  containers:
  - name: app
    image: busybox
    resources: {requests: {cpu: 200m, memory: 128Mi}}
"#,
        )
        .unwrap();
        let roles: Vec<Role> = p.containers.iter().map(|c| c.role).collect();
        assert_eq!(roles, [Role::Init, Role::Sidecar, Role::Init, Role::App]);
        // init phase: max(500, 100 + 300) = 500; app phase: 200 + 100 = 300 → 500m.
        assert_eq!(p.totals.cpu_request, Some(500));
        // memory: max(64, 32 + 16) = 64Mi vs 128 + 32 = 160Mi → 160Mi.
        assert_eq!(p.totals.memory_request, Some(160 << 20));
        assert_eq!(p.totals.cpu_limit, None, "no limits anywhere");
        assert_eq!(p.qos, QosClass::Burstable);
        let a = p.sandbox_annotations();
        assert!(a[annotations::CONTAINERS].contains(r#"{"name":"logs","role":"sidecar"}"#));
    }

    #[test]
    fn qos_classes_and_oom_score_adj_follow_kubelet() {
        let guaranteed = plan_of(
            r#"
apiVersion: v1
kind: Pod
metadata: {name: g}
spec:
  containers:
  - name: c
    image: busybox
    resources: {limits: {cpu: "1", memory: 1Gi}}
"#,
        )
        .unwrap();
        assert_eq!(guaranteed.qos, QosClass::Guaranteed);
        assert_eq!(guaranteed.containers[0].oom_score_adj, -997);
        assert_eq!(guaranteed.totals.cpu_limit, Some(1000));
        let best = plan_of(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: b}\nspec: {containers: [{name: c, image: busybox}]}\n",
        )
        .unwrap();
        assert_eq!(best.qos, QosClass::BestEffort);
        assert_eq!(best.containers[0].oom_score_adj, 1000);
        // Burstable: 1000 - 1000 * 1Gi / 8Gi = 875.
        assert_eq!(oom_score_adj(QosClass::Burstable, GIB, 8 * GIB), 875);
        assert_eq!(oom_score_adj(QosClass::Burstable, 8 * GIB, 8 * GIB), 3);
        assert_eq!(oom_score_adj(QosClass::Burstable, 0, 8 * GIB), 999);
    }

    #[test]
    fn unsupported_and_bad_fields_are_named() {
        let base = |extra: &str| format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n{extra}");
        assert_eq!(
            err_field(&base("  containers: [{name: c, image: busybox, stdin: true}]")),
            "spec.containers[0].stdin"
        );
        assert_eq!(
            err_field(&base(
                "  containers: [{name: c, image: busybox}, {name: c, image: busybox}]"
            )),
            "spec.containers[1].name"
        );
        assert_eq!(
            err_field(&base(
                "  containers: [{name: c, image: busybox, resources: {limits: {cpu: lots}}}]"
            )),
            "spec.containers[0].resources.limits.cpu"
        );
        assert_eq!(
            err_field(&base(
                "  volumes: [{name: v, persistentVolumeClaim: {claimName: x}}]\n  containers: [{name: c, image: busybox}]"
            )),
            "spec.volumes[0].persistentVolumeClaim"
        );
        assert_eq!(
            err_field(&base(
                "  volumes: [{name: v, emptyDir: {}, configMap: {name: x}}]\n  containers: [{name: c, image: busybox}]"
            )),
            "spec.volumes[0]"
        );
        assert_eq!(
            err_field(&base(
                "  volumes: [{name: v, configMap: {name: x}}]\n  containers: [{name: c, image: busybox, volumeMounts: [{name: v, mountPath: /x, subPath: a}]}]"
            )),
            "spec.containers[0].volumeMounts[0].subPath"
        );
        assert_eq!(
            err_field(&base(
                "  containers: [{name: c, image: busybox, volumeMounts: [{name: nope, mountPath: /x}]}]"
            )),
            "spec.containers[0].volumeMounts[0].name"
        );
        assert_eq!(
            err_field(&base("  containers: [{name: c}]")),
            "spec.containers[0].image"
        );
        assert_eq!(
            err_field(&base(
                "  containers: [{name: c, image: busybox, restartPolicy: Always}]"
            )),
            "spec.containers[0].restartPolicy"
        );
        assert!(err_field("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n").starts_with("parse: kind"));
        assert!(err_field("{ not yaml").starts_with("parse:"));
    }
    #[test]
    fn out_of_bounds_quantities_and_grace_are_named_and_totals_saturate() {
        let base = |extra: &str| format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n{extra}");
        assert_eq!(
            err_field(&base(
                "  containers: [{name: c, image: busybox, resources: {limits: {cpu: 1e18}}}]"
            )),
            "spec.containers[0].resources.limits.cpu"
        );
        assert_eq!(
            err_field(&base(
                "  terminationGracePeriodSeconds: 9223372036854775807\n  containers: [{name: c, image: busybox}]"
            )),
            "spec.terminationGracePeriodSeconds"
        );
        // Three containers at the memory maximum: the pod total saturates, no overflow.
        let c = |n: &str| format!("{{name: {n}, image: busybox, resources: {{limits: {{memory: 8191Pi}}}}}}");
        let p = plan_of(&base(&format!("  containers: [{}, {}, {}]", c("a"), c("b"), c("d")))).unwrap();
        assert_eq!(p.totals.memory_limit, Some(u64::MAX));
    }

    fn pod_with(pod_sc: &str, container_sc: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  securityContext: {pod_sc}\n  containers:\n  - name: c\n    image: busybox\n    securityContext: {container_sc}\n"
        )
    }

    #[test]
    fn every_pod_security_context_field_is_applied_or_refused_by_name() {
        // Each field of k8s-openapi's PodSecurityContext (`pod_security` destructures them
        // all): applied (checked in the plan) or refused naming `spec.securityContext.<f>`.
        let refused = [
            ("fsGroup", "{fsGroup: 2000}"),
            ("fsGroupChangePolicy", "{fsGroupChangePolicy: Always}"),
            ("seLinuxOptions", "{seLinuxOptions: {level: \"s0:c1\"}}"),
            ("seLinuxChangePolicy", "{seLinuxChangePolicy: MountOption}"),
            ("supplementalGroupsPolicy", "{supplementalGroupsPolicy: Strict}"),
            ("windowsOptions", "{windowsOptions: {runAsUserName: x}}"),
        ];
        for (name, sc) in refused {
            assert_eq!(
                err_field(&pod_with(sc, "{}")),
                format!("spec.securityContext.{name}"),
                "{sc}"
            );
        }
        let p = plan_of(&pod_with(
            "{runAsUser: 1000, runAsGroup: 3000, runAsNonRoot: true, supplementalGroups: [4000, 5000], \
             seccompProfile: {type: Unconfined}, appArmorProfile: {type: Localhost, localhostProfile: k8s-nginx}, \
             sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: \"80\"}, {name: kernel/shm_rmid_forced, value: \"1\"}]}",
            "{}",
        ))
        .unwrap();
        let s = &p.containers[0].security;
        assert_eq!(
            (s.run_as_user, s.run_as_group, s.run_as_non_root),
            (Some(1000), Some(3000), true)
        );
        assert_eq!(s.supplemental_groups, [4000, 5000]);
        assert_eq!(s.seccomp, SeccompProfile::Unconfined);
        assert_eq!(p.seccomp, SeccompProfile::Unconfined);
        assert_eq!(
            s.apparmor,
            Some(AppArmorProfile::Localhost {
                field: "spec.securityContext.appArmorProfile.localhostProfile".into(),
                profile: "k8s-nginx".into()
            })
        );
        assert_eq!(
            p.sysctls,
            [
                ("kernel.shm_rmid_forced".to_string(), "1".to_string()),
                ("net.ipv4.ip_unprivileged_port_start".to_string(), "80".to_string())
            ]
            .into()
        );
        // The seven applied and the six refused are all of k8s-openapi's thirteen fields.
        let applied = [
            "appArmorProfile",
            "runAsGroup",
            "runAsNonRoot",
            "runAsUser",
            "seccompProfile",
            "supplementalGroups",
            "sysctls",
        ];
        let all = serde_json::to_value(k8s_openapi::api::core::v1::PodSecurityContext {
            app_armor_profile: Some(Default::default()),
            fs_group: Some(0),
            fs_group_change_policy: Some(String::new()),
            run_as_group: Some(0),
            run_as_non_root: Some(false),
            run_as_user: Some(0),
            se_linux_change_policy: Some(String::new()),
            se_linux_options: Some(Default::default()),
            seccomp_profile: Some(Default::default()),
            supplemental_groups: Some(vec![]),
            supplemental_groups_policy: Some(String::new()),
            sysctls: Some(vec![]),
            windows_options: Some(Default::default()),
        })
        .unwrap();
        let mut keys: Vec<&str> = all.as_object().unwrap().keys().map(String::as_str).collect();
        let mut listed: Vec<&str> = applied.iter().copied().chain(refused.iter().map(|(n, _)| *n)).collect();
        keys.sort_unstable();
        listed.sort_unstable();
        assert_eq!(keys, listed, "every PodSecurityContext field is listed");
    }

    #[test]
    fn seccomp_and_apparmor_profiles_resolve_container_over_pod() {
        // Nothing said: RuntimeDefault for the sandbox and the container, no AppArmor.
        let p = plan_of(&pod_with("{}", "{}")).unwrap();
        assert_eq!(p.seccomp, SeccompProfile::RuntimeDefault);
        assert_eq!(p.containers[0].security.seccomp, SeccompProfile::RuntimeDefault);
        assert_eq!(p.containers[0].security.apparmor, None);
        // The container's overrides the pod's; the sandbox keeps the pod's.
        let p = plan_of(&pod_with(
            "{seccompProfile: {type: Unconfined}}",
            "{seccompProfile: {type: Localhost, localhostProfile: profiles/mkdir.json}, appArmorProfile: {type: Unconfined}}",
        ))
        .unwrap();
        assert_eq!(p.seccomp, SeccompProfile::Unconfined);
        assert_eq!(
            p.containers[0].security.seccomp,
            SeccompProfile::Localhost {
                field: "spec.containers[0].securityContext.seccompProfile.localhostProfile".into(),
                profile: "profiles/mkdir.json".into()
            }
        );
        assert_eq!(p.containers[0].security.apparmor, Some(AppArmorProfile::Unconfined));
        for (pod_sc, c_sc, f) in [
            (
                "{seccompProfile: {type: Strict}}",
                "{}",
                "spec.securityContext.seccompProfile.type",
            ),
            (
                "{}",
                "{seccompProfile: {type: Localhost}}",
                "spec.containers[0].securityContext.seccompProfile.localhostProfile",
            ),
            (
                "{}",
                "{seccompProfile: {type: Localhost, localhostProfile: /etc/x.json}}",
                "spec.containers[0].securityContext.seccompProfile.localhostProfile",
            ),
            (
                "{seccompProfile: {type: Localhost, localhostProfile: ../x.json}}",
                "{}",
                "spec.securityContext.seccompProfile.localhostProfile",
            ),
            (
                "{}",
                "{seccompProfile: {type: RuntimeDefault, localhostProfile: x.json}}",
                "spec.containers[0].securityContext.seccompProfile.localhostProfile",
            ),
            (
                "{appArmorProfile: {type: Complain}}",
                "{}",
                "spec.securityContext.appArmorProfile.type",
            ),
            (
                "{}",
                "{appArmorProfile: {type: Localhost}}",
                "spec.containers[0].securityContext.appArmorProfile.localhostProfile",
            ),
            (
                "{}",
                "{seLinuxOptions: {level: s0}}",
                "spec.containers[0].securityContext.seLinuxOptions",
            ),
        ] {
            assert_eq!(err_field(&pod_with(pod_sc, c_sc)), f, "{pod_sc} {c_sc}");
        }
    }

    #[test]
    fn pod_sysctls_must_be_namespaced_and_host_users_is_refused() {
        for (sysctls, extra, reason) in [
            ("[{name: vm.swappiness, value: \"1\"}]", "", "not a namespaced sysctl"),
            ("[{name: kernel.hostname, value: x}]", "", "spec.hostname"),
            ("[{name: \"net..x\", value: \"1\"}]", "", "not a sysctl name"),
            (
                "[{name: net.ipv4.ip_forward, value: \"1\"}]",
                "  hostNetwork: true\n",
                "hostNetwork",
            ),
            (
                "[{name: kernel.sem, value: \"1\"}, {name: kernel/sem, value: \"2\"}]",
                "",
                "set twice",
            ),
        ] {
            let yaml = format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n{extra}  securityContext: {{sysctls: {sysctls}}}\n  containers: [{{name: c, image: busybox}}]\n"
            );
            let e = plan_of(&yaml).unwrap_err().to_string();
            let idx = if reason == "set twice" { 1 } else { 0 };
            assert!(
                e.starts_with(&format!("spec.securityContext.sysctls[{idx}].name: ")) && e.contains(reason),
                "{e}"
            );
        }
        let e = plan_of("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  hostUsers: false\n  containers: [{name: c, image: busybox}]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("spec.hostUsers: ") && e.contains("user namespaces"),
            "{e}"
        );
        assert!(plan_of("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  hostUsers: true\n  containers: [{name: c, image: busybox}]\n").is_ok());
        assert_eq!(
            err_field(
                "apiVersion: v1\nkind: Pod\nmetadata: {name: p, annotations: {container.apparmor.security.beta.kubernetes.io/c: unconfined}}\nspec: {containers: [{name: c, image: busybox}]}\n"
            ),
            "metadata.annotations[container.apparmor.security.beta.kubernetes.io/c]"
        );
    }

    #[test]
    fn dns_labels_and_subdomains_follow_the_api_server() {
        for ok in ["a", "default", "kube-system", "0", "a-1", &"a".repeat(63)] {
            assert!(dns_label("f", ok).is_ok(), "{ok:?}");
            assert!(dns_subdomain("f", ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            "a.b",
            "..",
            "../x",
            "a/b",
            &"a".repeat(64),
            "\u{e9}",
        ] {
            assert!(dns_label("f", bad).is_err(), "{bad:?}");
        }
        for ok in ["a.b", "my-pod.v1", &format!("{}.{}", "a".repeat(63), "b".repeat(63))] {
            assert!(dns_subdomain("f", ok).is_ok(), "{ok:?}");
        }
        let long = vec!["a".repeat(63); 4].join(".");
        assert_eq!(long.len(), 255);
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a..b",
            ".a",
            "a.",
            "a.-b",
            "a/b",
            "A.b",
            &long,
            &"a".repeat(64),
        ] {
            assert!(dns_subdomain("f", bad).is_err(), "{bad:?}");
        }
        let e = dns_label("metadata.namespace", "../x").unwrap_err().to_string();
        assert!(
            e.starts_with("metadata.namespace: \"../x\" must be a DNS-1123 label ("),
            "{e}"
        );
        let e = dns_subdomain("metadata.name", "a..b").unwrap_err().to_string();
        assert!(
            e.starts_with("metadata.name: \"a..b\" must be a DNS-1123 subdomain ("),
            "{e}"
        );
    }

    #[test]
    fn names_that_would_be_paths_are_refused_before_planning() {
        let pod = |meta: &str, containers: &str| {
            format!("apiVersion: v1\nkind: Pod\nmetadata: {meta}\nspec:\n  containers: {containers}\n")
        };
        let c = "[{name: c, image: busybox}]";
        for (meta, f) in [
            ("{name: p, namespace: ../../../x}", "metadata.namespace"),
            ("{name: p, namespace: ..}", "metadata.namespace"),
            ("{name: p, namespace: Default}", "metadata.namespace"),
            ("{name: ../x}", "metadata.name"),
            ("{name: ..}", "metadata.name"),
            ("{name: a/b}", "metadata.name"),
        ] {
            assert_eq!(err_field(&pod(meta, c)), f, "{meta}");
        }
        assert_eq!(
            err_field(&pod("{name: p}", "[{name: ../c, image: busybox}]")),
            "spec.containers[0].name"
        );
        // A subdomain is a valid pod name; the hostname is cut to a label as the kubelet does.
        let p = plan_of(&pod("{name: web.v1, namespace: team-a}", c)).unwrap();
        assert_eq!(
            (p.name.as_str(), p.namespace.as_str(), p.hostname.as_str()),
            ("web.v1", "team-a", "web.v1")
        );
        let long = format!("{}b.cd", "a".repeat(61));
        let p = plan_of(&pod(&format!("{{name: {long}}}"), c)).unwrap();
        assert_eq!(p.hostname, format!("{}b", "a".repeat(61)));
    }

    #[test]
    fn volume_modes_read_yaml_1_1_octal_as_kubectl_does() {
        let p = plan_of(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {mode: '0644'}}\nspec:\n  volumes:\n  - name: a\n    configMap: {name: x, defaultMode: 0440, items: [{key: k, path: k, mode: 0600}]}\n  - name: b\n    secret: {secretName: y, defaultMode: 256}\n  - name: c\n    projected: {defaultMode: 0o444, sources: []}\n  containers: [{name: c, image: busybox}]\n",
        )
        .unwrap();
        let modes: Vec<(u32, Vec<Option<u32>>)> = p
            .volumes
            .values()
            .map(|v| match v {
                VolumeKind::Populated(v) => (
                    v.default_mode,
                    v.sources
                        .iter()
                        .flat_map(|s| match s {
                            crate::volumes::Projection::Object(o) => o.items.iter().map(|i| i.mode).collect(),
                            crate::volumes::Projection::DownwardApi(_) => Vec::new(),
                        })
                        .collect(),
                ),
                _ => panic!("{v:?}"),
            })
            .collect();
        assert_eq!(modes, [(0o440, vec![Some(0o600)]), (0o400, vec![]), (0o444, vec![])]);
        // Outside spec.volumes a leading zero stays text (a label value here).
        assert_eq!(p.labels["mode"], "0644");
    }
}
