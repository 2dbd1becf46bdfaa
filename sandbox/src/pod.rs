//! The pod as a whole: what its sandbox declares (pod cgroup sizing, emptyDir volumes,
//! grace period), what each member container is (init, sidecar, app), and the rules
//! that order them.
//!
//! Under containerd the sandbox (pause) task comes first, carrying
//! `io.kubernetes.cri.container-type=sandbox`; containers name it with
//! `io.kubernetes.cri.sandbox-id`. peapod's own annotations all start with `io.peapod.`
//! and are listed in [`annotations`]; containerd forwards them only when the runtime's
//! `pod_annotations` / `container_annotations` list them.
//!
//! Ordering (mirrors kubelet, KEP-753 native sidecars): a sidecar or app container may
//! start once every init container created before it has exited 0 and every sidecar
//! created before it is running; an init container waits likewise (init containers run
//! one by one). Apps do not wait for each other. Creation order is declaration order.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResources, LinuxResourcesBuilder, MountBuilder, Spec,
};
use serde::{Deserialize, Serialize};

use crate::spec::{invalid, SpecError};

/// Annotation keys peapod reads (README has the table with values and defaults).
pub mod annotations {
    /// CRI: `sandbox` for the pod's pause task, `container` for the others.
    pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
    /// CRI: id of the pod sandbox a container belongs to.
    pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
    /// CRI (containerd 1.7+): pod CPU period in µs, for the pod cgroup.
    pub const SANDBOX_CPU_PERIOD: &str = "io.kubernetes.cri.sandbox-cpu-period";
    /// CRI (containerd 1.7+): pod CPU quota in µs per period.
    pub const SANDBOX_CPU_QUOTA: &str = "io.kubernetes.cri.sandbox-cpu-quota";
    /// CRI (containerd 1.7+): pod CPU shares.
    pub const SANDBOX_CPU_SHARES: &str = "io.kubernetes.cri.sandbox-cpu-shares";
    /// CRI (containerd 1.7+): pod memory limit in bytes.
    pub const SANDBOX_MEMORY: &str = "io.kubernetes.cri.sandbox-memory";
    /// Kubernetes pod annotation, when passed through: grace period in seconds.
    pub const K8S_GRACE_PERIOD: &str = "io.kubernetes.pod.terminationGracePeriod";
    /// peapod (container): `init`, `sidecar` or `app` (default `app`).
    pub const ROLE: &str = "io.peapod.role";
    /// peapod (sandbox): termination grace period in seconds (default 30).
    pub const GRACE_PERIOD: &str = "io.peapod.grace-period";
    /// peapod (sandbox): pod CPU request, a Kubernetes quantity (`250m`, `1`).
    pub const POD_CPU_REQUEST: &str = "io.peapod.pod-cpu-request";
    /// peapod (sandbox): pod CPU limit, a Kubernetes quantity.
    pub const POD_CPU_LIMIT: &str = "io.peapod.pod-cpu-limit";
    /// peapod (sandbox): pod memory limit, a Kubernetes quantity (`256Mi`).
    pub const POD_MEMORY_LIMIT: &str = "io.peapod.pod-memory-limit";
    /// peapod (sandbox): emptyDir volumes, JSON `[{"name","medium","sizeLimit"}]`.
    pub const EMPTY_DIRS: &str = "io.peapod.empty-dirs";
    /// peapod (container): volume mounts, JSON `[{"name","mountPath","readOnly"}]`.
    pub const VOLUME_MOUNTS: &str = "io.peapod.volume-mounts";
    /// peapod (sandbox): the pod's containers in declaration order with their roles,
    /// JSON `[{"name":"setup","role":"init"},{"name":"web","role":"app"}]`. Under CRI
    /// the shim only sees a container when it starts, so this is how it learns about
    /// earlier init containers and sidecars that have not started yet.
    pub const CONTAINERS: &str = "io.peapod.containers";
    /// peapod (container): the container's name in the pod (default: CRI's
    /// `io.kubernetes.cri.container-name`, else the task id).
    pub const NAME: &str = "io.peapod.name";
    /// CRI: the container's name in its pod.
    pub const CRI_CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
    /// peapod (sandbox): `Always`, `OnFailure` or `Never`: the shim itself restarts the
    /// pod's containers by this policy and stops sidecars once the app containers are
    /// done (KEP-753). Only for a shim without kubelet (the CLI's embedded mode): under
    /// kubelet, kubelet does both, and this annotation must be absent.
    pub const RESTART_POLICY: &str = "io.peapod.restart-policy";
}

/// A pod's `restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    /// Restart every container that exits.
    Always,
    /// Restart containers that exit non-zero.
    OnFailure,
    /// Restart nothing (sidecars excepted).
    Never,
}

impl RestartPolicy {
    /// Whether a container of `role` that exited with `code` is restarted (kubelet's
    /// `ShouldContainerBeRestarted`, and KEP-753 for sidecars): sidecars always, until the
    /// pod completes; init containers when they failed, unless `Never`; app containers
    /// by the policy.
    pub fn restarts(self, role: Role, code: i32, pod_completing: bool) -> bool {
        match role {
            Role::Sidecar => !pod_completing,
            Role::Init => self != RestartPolicy::Never && code != 0,
            Role::App => self == RestartPolicy::Always || (self == RestartPolicy::OnFailure && code != 0),
        }
    }

    /// Back-off before restart number `n + 1` (`n` restarts so far): 1 s doubling up to
    /// 60 s, the decay of KEP-4603 (kubelet's `ReduceDefaultCrashLoopBackOffDecay`; the
    /// older default was 10 s up to 300 s).
    pub fn backoff(n: u32) -> std::time::Duration {
        std::time::Duration::from_secs(1u64 << n.min(6)).min(std::time::Duration::from_secs(60))
    }
}

impl std::str::FromStr for RestartPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "Always" => Ok(RestartPolicy::Always),
            "OnFailure" => Ok(RestartPolicy::OnFailure),
            "Never" => Ok(RestartPolicy::Never),
            other => Err(format!("{other:?} is not Always, OnFailure or Never")),
        }
    }
}

/// Default termination grace period (Kubernetes' `terminationGracePeriodSeconds`), s.
pub const DEFAULT_GRACE_SECONDS: u64 = 30;
/// CFS period kubelet uses for CPU limits, µs.
pub const CPU_PERIOD_US: u64 = 100_000;

/// What a container is to its pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs to completion before later containers start.
    Init,
    /// Starts before later containers and keeps running (an init container with
    /// `restartPolicy: Always`).
    Sidecar,
    /// An ordinary container.
    App,
}

impl Role {
    /// Reads `io.peapod.role`; a missing annotation is `App`, so kubelet-driven pods keep
    /// kubelet's own ordering.
    pub fn from_annotations(a: &HashMap<String, String>) -> Result<Role, SpecError> {
        match a.get(annotations::ROLE).map(String::as_str) {
            None | Some("app") => Ok(Role::App),
            Some("init") => Ok(Role::Init),
            Some("sidecar") => Ok(Role::Sidecar),
            Some(other) => Err(invalid(
                format!("annotations[{}]", annotations::ROLE),
                format!("{other:?} is not one of init, sidecar, app"),
            )),
        }
    }
}

/// A Kubernetes resource quantity, parsed (`resource.Quantity`: decimal and binary SI
/// suffixes, exponents). CPU is read in millicores, memory in bytes.
pub fn parse_quantity(field: &str, q: &str) -> Result<f64, SpecError> {
    let bad = || invalid(field, format!("{q:?} is not a Kubernetes quantity"));
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let value: f64 = num.parse().map_err(|_| bad())?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse::<i32>().map_err(|_| bad())?),
        _ => return Err(bad()),
    };
    let v = value * mult;
    if !v.is_finite() || v < 0.0 {
        return Err(bad());
    }
    Ok(v)
}

/// Rounds up, ignoring binary floating-point noise below 1e-6 (`0.7 * 1000` is
/// 700.0000000000001, which must stay 700).
fn ceil_clean(v: f64) -> u64 {
    let cleaned = (v * 1e6).round() / 1e6;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // non-negative, finite
    let out = cleaned.ceil() as u64;
    out
}

/// CPU quantity in millicores, rounded up as Kubernetes does (`MilliValue`).
pub fn cpu_millis(field: &str, q: &str) -> Result<u64, SpecError> {
    Ok(ceil_clean(parse_quantity(field, q)? * 1000.0))
}

/// Memory quantity in bytes, rounded up.
pub fn memory_bytes(field: &str, q: &str) -> Result<u64, SpecError> {
    Ok(ceil_clean(parse_quantity(field, q)?))
}

/// kubelet's `MilliCPUToShares`: `milliCPU * 1024 / 1000`, at least 2 (also for no request).
pub fn millis_to_shares(millis: u64) -> u64 {
    (millis * 1024 / 1000).max(2)
}

/// kubelet's `MilliCPUToQuota`: `milliCPU * period / 1000` µs, at least 1000 µs; `None`
/// (no quota) for no limit.
pub fn millis_to_quota(millis: u64, period_us: u64) -> Option<i64> {
    (millis > 0).then(|| i64::try_from((millis * period_us / 1000).max(1000)).unwrap_or(i64::MAX))
}

/// cgroup resources for CPU request/limit (millicores) and memory limit (bytes), with
/// kubelet's conversions: shares from the request, quota (period 100000 µs) from the
/// limit, memory limit as is (no swap).
pub fn resources(cpu_request: Option<u64>, cpu_limit: Option<u64>, memory_limit: Option<u64>) -> LinuxResources {
    let mut cpu = LinuxCpuBuilder::default().shares(millis_to_shares(cpu_request.or(cpu_limit).unwrap_or(0)));
    if let Some(quota) = cpu_limit.and_then(|l| millis_to_quota(l, CPU_PERIOD_US)) {
        cpu = cpu.quota(quota).period(CPU_PERIOD_US);
    }
    let mut b = LinuxResourcesBuilder::default().cpu(cpu.build().expect("all fields set"));
    if let Some(m) = memory_limit {
        let m = i64::try_from(m).unwrap_or(i64::MAX);
        b = b.memory(
            LinuxMemoryBuilder::default()
                .limit(m)
                .swap(m)
                .build()
                .expect("all fields set"),
        );
    }
    b.build().expect("all fields set")
}

/// An emptyDir declared by the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmptyDir {
    /// Volume name, referenced by containers' volume mounts.
    pub name: String,
    /// `""` (node disk) or `Memory` (tmpfs).
    #[serde(default)]
    pub medium: String,
    /// Size limit, a Kubernetes quantity; for `Memory` it sizes the tmpfs.
    #[serde(default)]
    pub size_limit: Option<String>,
}

/// A container's mount of a pod volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    /// The volume's name.
    pub name: String,
    /// Absolute path in the container.
    pub mount_path: String,
    /// Mount read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// A container the sandbox declares (`io.peapod.containers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclaredContainer {
    /// Its name in the pod.
    pub name: String,
    /// Its role.
    pub role: Role,
}

/// What the sandbox task declares for its pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodConfig {
    /// The pod's containers in declaration order, when declared.
    pub containers: Vec<DeclaredContainer>,
    /// Resources of the pod cgroup, when the sandbox carries sizing.
    pub resources: Option<LinuxResources>,
    /// emptyDir volumes.
    pub empty_dirs: Vec<EmptyDir>,
    /// Termination grace period.
    pub grace: std::time::Duration,
    /// The shim supervises restarts by this policy (see [`annotations::RESTART_POLICY`]).
    pub restart_policy: Option<RestartPolicy>,
}

fn json_annotation<T: for<'de> Deserialize<'de>>(
    a: &HashMap<String, String>,
    key: &str,
) -> Result<Option<T>, SpecError> {
    a.get(key)
        .map(|v| serde_json::from_str(v).map_err(|e| invalid(format!("annotations[{key}]"), e.to_string())))
        .transpose()
}

fn int_annotation(a: &HashMap<String, String>, key: &str) -> Result<Option<i64>, SpecError> {
    a.get(key)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse()
                .map_err(|_| invalid(format!("annotations[{key}]"), format!("{v:?} is not an integer")))
        })
        .transpose()
}

impl PodConfig {
    /// Reads the sandbox's annotations. Errors name the annotation and the cause.
    pub fn from_annotations(a: &HashMap<String, String>) -> Result<PodConfig, SpecError> {
        use annotations::*;
        let field = |k: &str| format!("annotations[{k}]");
        let q = |k: &str, f: fn(&str, &str) -> Result<u64, SpecError>| a.get(k).map(|v| f(&field(k), v)).transpose();
        let cpu_req = q(POD_CPU_REQUEST, cpu_millis)?;
        let cpu_lim = q(POD_CPU_LIMIT, cpu_millis)?;
        let mem = q(POD_MEMORY_LIMIT, memory_bytes)?;
        let mut resources =
            (cpu_req.is_some() || cpu_lim.is_some() || mem.is_some()).then(|| self::resources(cpu_req, cpu_lim, mem));
        // containerd 1.7+ passes kubelet's pod sizing itself; it wins over peapod's.
        let (period, quota, shares, memory) = (
            int_annotation(a, SANDBOX_CPU_PERIOD)?,
            int_annotation(a, SANDBOX_CPU_QUOTA)?,
            int_annotation(a, SANDBOX_CPU_SHARES)?,
            int_annotation(a, SANDBOX_MEMORY)?,
        );
        if period.is_some() || quota.is_some() || shares.is_some() || memory.is_some() {
            let mut cpu = LinuxCpuBuilder::default();
            if let Some(s) = shares.filter(|s| *s > 0) {
                cpu = cpu.shares(u64::try_from(s).unwrap_or(2));
            }
            if let Some(q) = quota.filter(|q| *q > 0) {
                cpu = cpu
                    .quota(q)
                    .period(period.and_then(|p| u64::try_from(p).ok()).unwrap_or(CPU_PERIOD_US));
            }
            let mut b = LinuxResourcesBuilder::default().cpu(cpu.build().expect("all fields set"));
            if let Some(m) = memory.filter(|m| *m > 0) {
                b = b.memory(LinuxMemoryBuilder::default().limit(m).build().expect("all fields set"));
            }
            resources = Some(b.build().expect("all fields set"));
        }
        let empty_dirs: Vec<EmptyDir> = json_annotation(a, EMPTY_DIRS)?.unwrap_or_default();
        for (i, d) in empty_dirs.iter().enumerate() {
            let f = format!("annotations[{EMPTY_DIRS}][{i}]");
            crate::spec::validate_id(&d.name)
                .map_err(|_| invalid(format!("{f}.name"), format!("{:?} is not a valid volume name", d.name)))?;
            if !matches!(d.medium.as_str(), "" | "Memory") {
                return Err(invalid(
                    format!("{f}.medium"),
                    format!("{:?} is not \"\" or \"Memory\"", d.medium),
                ));
            }
            if let Some(s) = &d.size_limit {
                memory_bytes(&format!("{f}.sizeLimit"), s)?;
            }
            if empty_dirs[..i].iter().any(|o| o.name == d.name) {
                return Err(invalid(format!("{f}.name"), format!("{:?} declared twice", d.name)));
            }
        }
        let grace = match (a.get(GRACE_PERIOD), a.get(K8S_GRACE_PERIOD)) {
            (Some(v), _) | (None, Some(v)) => v
                .parse::<u64>()
                .map_err(|_| invalid(field(GRACE_PERIOD), format!("{v:?} is not a number of seconds")))?,
            (None, None) => DEFAULT_GRACE_SECONDS,
        };
        let containers: Vec<DeclaredContainer> = json_annotation(a, CONTAINERS)?.unwrap_or_default();
        for (i, c) in containers.iter().enumerate() {
            if containers[..i].iter().any(|o| o.name == c.name) {
                return Err(invalid(
                    format!("annotations[{CONTAINERS}][{i}].name"),
                    format!("{:?} declared twice", c.name),
                ));
            }
        }
        let restart_policy = a
            .get(RESTART_POLICY)
            .map(|v| v.parse().map_err(|e: String| invalid(field(RESTART_POLICY), e)))
            .transpose()?;
        Ok(PodConfig {
            containers,
            resources,
            empty_dirs,
            grace: std::time::Duration::from_secs(grace),
            restart_policy,
        })
    }
}

/// A pod's resources on the host: its cgroup (when sized) and its emptyDir volumes.
/// Recorded in `<state>/pod.json` before anything is created, so the sandbox's delete
/// (even from another process) removes exactly what exists.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodResources {
    /// Pod (sandbox) id.
    pub id: String,
    /// The pod cgroup, relative to the hierarchy roots, if peapod sized it.
    pub cgroup: Option<String>,
    /// The topmost ancestor of `cgroup` peapod created (see `cgroups::first_missing_ancestor`).
    pub cgroup_owned_from: Option<String>,
    /// Volume name → host directory.
    pub volumes: HashMap<String, PathBuf>,
    /// Volumes that are tmpfs mounts (Memory medium).
    pub tmpfs: Vec<PathBuf>,
    /// Where `pod.json` lives.
    pub state_dir: PathBuf,
}

/// Failure to set up or remove a pod's resources.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// Bad annotations.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A volume directory, tmpfs or the state file failed.
    #[error("pod {id}: {op} {path}: {source}")]
    Io {
        /// Pod id.
        id: String,
        /// What failed.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The pod cgroup failed.
    #[error("pod {id}: {source}")]
    Cgroup {
        /// Pod id.
        id: String,
        /// Cause.
        #[source]
        source: crate::cgroups::CgroupError,
    },
}

impl PodResources {
    /// Creates the pod's volumes and, when `config` sizes it, the pod cgroup at
    /// `cgroup_path` (created if missing; only what peapod created is removed later).
    /// Volumes: disk ones under `disk_root/<id>/volumes/<name>`, Memory ones as tmpfs
    /// under `state_dir/volumes/<name>` (one tmpfs per volume, shared by every container
    /// that mounts it), sized by `sizeLimit`, else by the pod memory limit.
    /// On error everything created so far is removed.
    pub fn create(
        id: &str,
        config: &PodConfig,
        cgroup_path: Option<&str>,
        state_dir: &Path,
        disk_root: &Path,
    ) -> Result<PodResources, PodError> {
        let mut me = PodResources {
            id: id.to_string(),
            cgroup: None,
            cgroup_owned_from: None,
            volumes: HashMap::new(),
            tmpfs: Vec::new(),
            state_dir: state_dir.to_path_buf(),
        };
        let result = me.create_inner(config, cgroup_path, disk_root);
        if let Err(e) = result {
            let _ = me.destroy();
            return Err(e);
        }
        Ok(me)
    }

    fn io_err(&self, op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PodError {
        let (id, path) = (self.id.clone(), path.to_path_buf());
        move |source| PodError::Io { id, op, path, source }
    }

    fn create_inner(
        &mut self,
        config: &PodConfig,
        cgroup_path: Option<&str>,
        disk_root: &Path,
    ) -> Result<(), PodError> {
        fs::create_dir_all(&self.state_dir).map_err(self.io_err("create", &self.state_dir.clone()))?;
        if let (Some(res), Some(path)) = (&config.resources, cgroup_path) {
            self.cgroup = Some(path.to_string());
            self.cgroup_owned_from = crate::cgroups::first_missing_ancestor(path);
            self.save()?;
            let mut cg = crate::cgroups::Cgroup::open(path).map_err(|source| PodError::Cgroup {
                id: self.id.clone(),
                source,
            })?;
            if !cg.exists() {
                cg = crate::cgroups::Cgroup::create(path, None, self.cgroup_owned_from.as_deref()).map_err(
                    |source| PodError::Cgroup {
                        id: self.id.clone(),
                        source,
                    },
                )?;
            }
            cg.update(res).map_err(|source| PodError::Cgroup {
                id: self.id.clone(),
                source,
            })?;
        }
        let pod_memory = config
            .resources
            .as_ref()
            .and_then(|r| r.memory().as_ref())
            .and_then(|m| m.limit())
            .filter(|l| *l > 0);
        for d in &config.empty_dirs {
            if d.medium == "Memory" {
                let dir = self.state_dir.join("volumes").join(&d.name);
                self.volumes.insert(d.name.clone(), dir.clone());
                self.tmpfs.push(dir.clone());
                self.save()?;
                fs::create_dir_all(&dir).map_err(self.io_err("create", &dir))?;
                let size = match &d.size_limit {
                    Some(s) => Some(memory_bytes("sizeLimit", s)?),
                    None => pod_memory.and_then(|m| u64::try_from(m).ok()),
                };
                let data = size.map_or_else(|| "mode=1777".to_string(), |s| format!("mode=1777,size={s}"));
                mount(
                    Some("tmpfs"),
                    &dir,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some(data.as_str()),
                )
                .map_err(|e| self.io_err("mount tmpfs on", &dir)(e.into()))?;
            } else {
                let dir = disk_root.join(&self.id).join("volumes").join(&d.name);
                self.volumes.insert(d.name.clone(), dir.clone());
                self.save()?;
                fs::create_dir_all(&dir).map_err(self.io_err("create", &dir))?;
                fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777))
                    .map_err(self.io_err("chmod", &dir))?;
            }
        }
        self.save()
    }

    fn save(&self) -> Result<(), PodError> {
        let path = self.state_dir.join("pod.json");
        let text =
            serde_json::to_vec_pretty(self).map_err(|e| self.io_err("encode", &path)(std::io::Error::other(e)))?;
        fs::write(&path, text).map_err(self.io_err("write", &path))
    }

    /// Loads what a sandbox recorded (`<state_dir>/pod.json`).
    pub fn load(state_dir: &Path) -> Result<Option<PodResources>, PodError> {
        let path = state_dir.join("pod.json");
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| PodError::Io {
                id: String::new(),
                op: "decode",
                path,
                source: std::io::Error::other(e),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(PodError::Io {
                id: String::new(),
                op: "read",
                path,
                source,
            }),
        }
    }

    /// Adds bind mounts of the pod's volumes to a member's spec, as `mounts` ask.
    /// Errors name the mount that refers to no declared volume.
    pub fn mount_volumes(&self, spec: &mut Spec, mounts: &[VolumeMount]) -> Result<(), SpecError> {
        let mut list = spec.mounts().clone().unwrap_or_default();
        for (i, m) in mounts.iter().enumerate() {
            let field = format!("annotations[{}][{i}]", annotations::VOLUME_MOUNTS);
            let source = self.volumes.get(&m.name).ok_or_else(|| {
                invalid(
                    format!("{field}.name"),
                    format!("no volume {:?} is declared by the pod", m.name),
                )
            })?;
            if !m.mount_path.starts_with('/') {
                return Err(invalid(format!("{field}.mountPath"), "must be absolute"));
            }
            let mut options = vec!["rbind".to_string(), "nosuid".to_string(), "nodev".to_string()];
            options.push(if m.read_only { "ro" } else { "rw" }.to_string());
            list.push(
                MountBuilder::default()
                    .destination(&m.mount_path)
                    .typ("bind")
                    .source(source)
                    .options(options)
                    .build()
                    .map_err(|e| invalid(field, e.to_string()))?,
            );
        }
        spec.set_mounts(Some(list));
        Ok(())
    }

    /// Removes the volumes (unmounting tmpfs ones), the pod cgroup if peapod created it,
    /// and the state dir. Idempotent.
    pub fn destroy(&self) -> Result<(), PodError> {
        for dir in &self.tmpfs {
            crate::rootfs::unmount_all(dir).map_err(|e| self.io_err("unmount", dir)(std::io::Error::other(e)))?;
        }
        for dir in self.volumes.values() {
            match fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io_err("remove", dir)(e)),
            }
            // The per-pod parent directories (`<root>/<id>/volumes`) go when empty.
            if let Some(parent) = dir.parent() {
                let _ = fs::remove_dir(parent);
                if let Some(pod_dir) = parent.parent() {
                    let _ = fs::remove_dir(pod_dir);
                }
            }
        }
        if let (Some(path), Some(owned)) = (&self.cgroup, &self.cgroup_owned_from) {
            // Non-recursive: the pod cgroup goes only once its containers' cgroups are gone.
            if !crate::cgroups::remove_owned(path, owned, std::time::Duration::from_secs(5)) {
                return Err(self.io_err("remove pod cgroup", Path::new(path))(
                    std::io::Error::other("still has child cgroups or processes"),
                ));
            }
        }
        match fs::remove_dir_all(&self.state_dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io_err("remove", &self.state_dir.clone())(e)),
        }
    }
}

/// A member as the start gate sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// Container id (for error messages).
    pub id: String,
    /// Its role.
    pub role: Role,
    /// Its program runs.
    pub running: bool,
    /// Its exit code, once exited.
    pub exit_code: Option<i32>,
}

/// What the start of a member must do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Start now.
    Open,
    /// Wait: an earlier member is not done (named).
    Wait(String),
    /// Never: an earlier init container failed (named, with its exit code).
    Failed(String, i32),
}

/// The start gate for the container named `me` of a pod that declared its containers:
/// every init container declared before it must have exited 0 and every sidecar declared
/// before it must run, whether or not the shim has seen them yet (`state` returns `None`
/// for those). A container the pod did not declare waits for all declared ones.
pub fn gate_declared(declared: &[DeclaredContainer], me: &str, state: impl Fn(&str) -> Option<MemberView>) -> Gate {
    let before = declared.iter().position(|d| d.name == me).unwrap_or(declared.len());
    for d in &declared[..before] {
        let s = state(&d.name);
        match (d.role, s) {
            (Role::App, _) => {}
            (_, None) => return Gate::Wait(d.name.clone()),
            (Role::Init, Some(m)) => match m.exit_code {
                Some(0) => {}
                Some(code) => return Gate::Failed(d.name.clone(), code),
                None => return Gate::Wait(d.name.clone()),
            },
            (Role::Sidecar, Some(m)) => match (m.running, m.exit_code) {
                (true, _) => {}
                (false, Some(code)) => return Gate::Failed(d.name.clone(), code),
                (false, None) => return Gate::Wait(d.name.clone()),
            },
        }
    }
    Gate::Open
}

/// The start gate for `members[me]`, with `members` in creation order (KEP-753); used
/// when the pod declared no container list.
pub fn gate(members: &[MemberView], me: usize) -> Gate {
    for m in &members[..me] {
        match (m.role, m.exit_code) {
            (Role::Init, Some(0)) => {}
            (Role::Init | Role::Sidecar, Some(code)) if !m.running => return Gate::Failed(m.id.clone(), code),
            (Role::Init, _) => return Gate::Wait(m.id.clone()),
            (Role::Sidecar, _) if !m.running => return Gate::Wait(m.id.clone()),
            _ => {}
        }
    }
    Gate::Open
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policy_follows_kubelet_and_kep_753() {
        use RestartPolicy::*;
        // Sidecars restart whatever the policy, until the pod completes.
        assert!(Never.restarts(Role::Sidecar, 0, false));
        assert!(!Always.restarts(Role::Sidecar, 1, true));
        // Init containers: only on failure, never under Never.
        assert!(OnFailure.restarts(Role::Init, 1, false) && Always.restarts(Role::Init, 1, false));
        assert!(!Always.restarts(Role::Init, 0, false) && !Never.restarts(Role::Init, 1, false));
        // App containers by the policy.
        assert!(Always.restarts(Role::App, 0, false));
        assert!(OnFailure.restarts(Role::App, 2, false) && !OnFailure.restarts(Role::App, 0, false));
        assert!(!Never.restarts(Role::App, 2, false));
        let secs = |n| RestartPolicy::backoff(n).as_secs();
        assert_eq!([secs(0), secs(1), secs(5), secs(6), secs(40)], [1, 2, 32, 60, 60]);
        let a = |v: &str| HashMap::from([(annotations::RESTART_POLICY.to_string(), v.to_string())]);
        assert_eq!(
            PodConfig::from_annotations(&a("OnFailure")).unwrap().restart_policy,
            Some(OnFailure)
        );
        let e = PodConfig::from_annotations(&a("Sometimes")).unwrap_err().to_string();
        assert!(
            e.contains(annotations::RESTART_POLICY) && e.contains("Sometimes"),
            "{e}"
        );
    }

    fn m(id: &str, role: Role, running: bool, exit: Option<i32>) -> MemberView {
        MemberView {
            id: id.into(),
            role,
            running,
            exit_code: exit,
        }
    }

    #[test]
    fn quantities_parse_like_kubernetes() {
        assert_eq!(cpu_millis("f", "250m").unwrap(), 250);
        assert_eq!(cpu_millis("f", "700m").unwrap(), 700, "float noise must not round up");
        assert_eq!(cpu_millis("f", "0.7").unwrap(), 700);
        assert_eq!(cpu_millis("f", "1.0005").unwrap(), 1001);
        assert_eq!(cpu_millis("f", "1.5").unwrap(), 1500);
        assert_eq!(cpu_millis("f", "2").unwrap(), 2000);
        assert_eq!(memory_bytes("f", "64Mi").unwrap(), 64 << 20);
        assert_eq!(memory_bytes("f", "1G").unwrap(), 1_000_000_000);
        assert_eq!(memory_bytes("f", "1e3").unwrap(), 1000);
        assert!(memory_bytes("f", "12 apples").is_err());
        assert!(cpu_millis("f", "-1").is_err());
        assert!(cpu_millis("f", "").is_err());
    }

    #[test]
    fn kubelet_cpu_conversions() {
        assert_eq!(millis_to_shares(0), 2);
        assert_eq!(millis_to_shares(1), 2);
        assert_eq!(millis_to_shares(250), 256);
        assert_eq!(millis_to_shares(1000), 1024);
        assert_eq!(millis_to_quota(0, CPU_PERIOD_US), None);
        assert_eq!(millis_to_quota(5, CPU_PERIOD_US), Some(1000));
        assert_eq!(millis_to_quota(500, CPU_PERIOD_US), Some(50_000));
        let r = resources(Some(250), Some(500), Some(64 << 20));
        let cpu = r.cpu().as_ref().unwrap();
        assert_eq!(
            (cpu.shares(), cpu.quota(), cpu.period()),
            (Some(256), Some(50_000), Some(100_000))
        );
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(64 << 20));
    }

    #[test]
    fn pod_config_reads_annotations_and_names_bad_ones() {
        let a: HashMap<String, String> = [
            (annotations::POD_CPU_LIMIT, "500m"),
            (annotations::POD_MEMORY_LIMIT, "128Mi"),
            (annotations::GRACE_PERIOD, "5"),
            (
                annotations::EMPTY_DIRS,
                r#"[{"name":"cache","medium":"Memory","sizeLimit":"16Mi"},{"name":"data"}]"#,
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let c = PodConfig::from_annotations(&a).unwrap();
        assert_eq!(c.grace.as_secs(), 5);
        assert_eq!(c.empty_dirs.len(), 2);
        assert_eq!(c.resources.unwrap().memory().as_ref().unwrap().limit(), Some(128 << 20));

        let bad = |k: &str, v: &str| {
            let a: HashMap<String, String> = [(k.to_string(), v.to_string())].into();
            PodConfig::from_annotations(&a).unwrap_err().to_string()
        };
        assert!(bad(annotations::POD_MEMORY_LIMIT, "lots").contains("io.peapod.pod-memory-limit"));
        assert!(bad(annotations::EMPTY_DIRS, r#"[{"name":"x","medium":"Disk"}]"#).contains("medium"));
        assert!(bad(annotations::EMPTY_DIRS, "not json").contains("io.peapod.empty-dirs"));
        assert!(bad(annotations::GRACE_PERIOD, "soon").contains("io.peapod.grace-period"));
        let role: HashMap<String, String> = [(annotations::ROLE.to_string(), "helper".to_string())].into();
        assert!(Role::from_annotations(&role)
            .unwrap_err()
            .to_string()
            .contains("io.peapod.role"));
    }

    #[test]
    fn declared_gate_waits_for_members_not_seen_yet() {
        let declared = [
            DeclaredContainer {
                name: "i1".into(),
                role: Role::Init,
            },
            DeclaredContainer {
                name: "s1".into(),
                role: Role::Sidecar,
            },
            DeclaredContainer {
                name: "a1".into(),
                role: Role::App,
            },
            DeclaredContainer {
                name: "a2".into(),
                role: Role::App,
            },
        ];
        let none = |_: &str| None;
        assert_eq!(gate_declared(&declared, "a2", none), Gate::Wait("i1".into()));
        assert_eq!(gate_declared(&declared, "i1", none), Gate::Open);
        let seen = |n: &str| match n {
            "i1" => Some(m("i1", Role::Init, false, Some(0))),
            "s1" => Some(m("s1", Role::Sidecar, true, None)),
            _ => None,
        };
        assert_eq!(
            gate_declared(&declared, "a2", seen),
            Gate::Open,
            "a1 not started does not hold a2"
        );
        assert_eq!(gate_declared(&declared, "other", seen), Gate::Open);
        let failed = |n: &str| (n == "i1").then(|| m("i1", Role::Init, false, Some(1)));
        assert_eq!(gate_declared(&declared, "s1", failed), Gate::Failed("i1".into(), 1));
    }

    #[test]
    fn start_gate_follows_kep_753() {
        let init_running = [m("i1", Role::Init, true, None), m("app", Role::App, false, None)];
        assert_eq!(gate(&init_running, 1), Gate::Wait("i1".into()));
        let init_done = [
            m("i1", Role::Init, false, Some(0)),
            m("s1", Role::Sidecar, false, None),
            m("app", Role::App, false, None),
        ];
        assert_eq!(gate(&init_done, 1), Gate::Open);
        assert_eq!(gate(&init_done, 2), Gate::Wait("s1".into()));
        let sidecar_up = [
            m("i1", Role::Init, false, Some(0)),
            m("s1", Role::Sidecar, true, None),
            m("a1", Role::App, false, None),
            m("a2", Role::App, false, None),
        ];
        assert_eq!(gate(&sidecar_up, 2), Gate::Open);
        assert_eq!(gate(&sidecar_up, 3), Gate::Open, "apps do not wait for each other");
        let init_failed = [m("i1", Role::Init, false, Some(2)), m("a1", Role::App, false, None)];
        assert_eq!(gate(&init_failed, 1), Gate::Failed("i1".into(), 2));
        let second_init = [m("i1", Role::Init, true, None), m("i2", Role::Init, false, None)];
        assert_eq!(
            gate(&second_init, 1),
            Gate::Wait("i1".into()),
            "init containers run one by one"
        );
    }
}
