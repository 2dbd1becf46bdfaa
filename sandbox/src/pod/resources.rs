//! A pod's resources on the host: the pod cgroup (the parent of every member's cgroup,
//! sized by the pod's limits) and the pod's emptyDir volumes.
//!
//! Ordering: the state directory and `pod.json` come first, and `pod.json` is rewritten
//! before each cgroup or volume is created, so that the sandbox's delete (even from
//! another process, after a crash) removes exactly what exists. On a failed create
//! everything created so far is removed. Removal unmounts the tmpfs volumes, removes the
//! volume directories, then the pod cgroup, non-recursively and only what peapod created
//! (its members' cgroups must be gone first), and the state directory last.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};

use super::{DeclaredContainer, EmptyDir, Medium, RestartPolicy};

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
