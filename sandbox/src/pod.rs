//! The pod as a whole: what its sandbox declares (pod cgroup sizing, emptyDir volumes,
//! grace period, the pod's declared containers), what each member container is (init,
//! sidecar, app), and the rules that order them.
//!
//! The sandbox (pause) container comes first and owns the pod: its cgroup's parent is the
//! pod cgroup, and the pod's volumes live as long as it does. The other members join it.
//! This module receives the pod's declaration as typed values ([`PodConfig`], a member's
//! [`Role`] and [`VolumeMount`]s); reading them from wherever the caller keeps them is
//! the caller's business.
//!
//! Ordering (mirrors kubelet, KEP-753 native sidecars): a sidecar or app container may
//! start once every init container created before it has exited 0 and every sidecar
//! created before it is running; an init container waits likewise (init containers run
//! one by one). Apps do not wait for each other. Creation order is declaration order.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use oci_spec::runtime::{LinuxResources, MountBuilder, Spec};
use serde::{Deserialize, Serialize};

use crate::spec::{invalid, SpecError};

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

/// Where an emptyDir's contents live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Medium {
    /// A directory on the node's disk.
    Disk,
    /// A tmpfs (counts against memory).
    Memory,
}

/// An emptyDir declared by the sandbox: a directory that lives as long as the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmptyDir {
    /// Volume name, referenced by members' [`VolumeMount`]s. It names directories, so the
    /// caller passes a valid id (`spec::validate_id`), unique in the pod.
    pub name: String,
    /// Disk or tmpfs.
    pub medium: Medium,
    /// For [`Medium::Memory`], the tmpfs size in bytes; `None`: the pod memory limit, else
    /// tmpfs's default (half of RAM). `Some(0)` is tmpfs's `size=0`: no limit. Ignored on
    /// disk.
    pub size_limit: Option<u64>,
}

/// A container's mount of a pod volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    /// The volume's name.
    pub name: String,
    /// Absolute path in the container.
    pub mount_path: String,
    /// Mount read-only.
    pub read_only: bool,
}

/// A container the sandbox declares (one of the pod's declared containers).
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// When set, the pod's supervisor (not an orchestrator above it) restarts members by
    /// this policy and stops sidecars once the app containers are done.
    pub restart_policy: Option<RestartPolicy>,
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
            if d.medium == Medium::Memory {
                let dir = self.state_dir.join("volumes").join(&d.name);
                self.volumes.insert(d.name.clone(), dir.clone());
                self.tmpfs.push(dir.clone());
                self.save()?;
                fs::create_dir_all(&dir).map_err(self.io_err("create", &dir))?;
                let size = d.size_limit.or_else(|| pod_memory.and_then(|m| u64::try_from(m).ok()));
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
            let field = format!("volumeMounts[{i}]");
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
        assert_eq!("OnFailure".parse::<RestartPolicy>(), Ok(OnFailure));
        assert!("Sometimes".parse::<RestartPolicy>().unwrap_err().contains("Sometimes"));
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
