//! A pod's resources on the host: the pod cgroup (the parent of every member's cgroup,
//! sized by the pod's limits) and the pod's emptyDir volumes.
//!
//! The pod cgroup is sized only when peapod creates it. One that exists already is
//! someone else's (under CRI the kubelet's, sized from the pod spec) and is left as it
//! is: writing the sandbox's sizing there could loosen it, and the sizing comes from
//! annotations, which the pod's author writes. Memory emptyDirs are tmpfs sized by
//! kubelet's rule ([`tmpfs_size`]), never unlimited. The state directory and the disk
//! emptyDirs' pod directory are 0700 (`crate::hostdir`): container root writes there.
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

use super::{DeclaredContainer, EmptyDir, Medium, PodFilePaths, PodFiles, RestartPolicy};

/// What the sandbox task declares for its pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodConfig {
    /// The pod's containers in declaration order, when declared.
    pub containers: Vec<DeclaredContainer>,
    /// Resources of the pod cgroup, when the sandbox carries sizing.
    pub resources: Option<LinuxResources>,
    /// emptyDir volumes.
    pub empty_dirs: Vec<EmptyDir>,
    /// Termination grace period, when the sandbox declares one; `None` leaves it to the
    /// pod's containers (kubelet puts the pod's `terminationGracePeriodSeconds` on each
    /// container, not on the sandbox), else Kubernetes' default of 30 s.
    pub grace: Option<std::time::Duration>,
    /// When set, the pod's supervisor (not an orchestrator above it) restarts members by
    /// this policy and stops sidecars once the app containers are done.
    pub restart_policy: Option<RestartPolicy>,
    /// The pod's hostname, hosts, `resolv.conf` and `/dev/shm` for its members, when the
    /// pod makes them itself (its sandbox is not a container the caller set up with them).
    pub files: Option<PodFiles>,
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
    /// The pod's files ([`PodConfig::files`]), below `state_dir`; their tmpfs is in
    /// `tmpfs`.
    #[serde(default)]
    pub files: Option<PodFilePaths>,
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

/// Where the node's memory is read (`MemTotal`).
const MEMINFO: &str = "/proc/meminfo";

/// The node's memory, bytes (`MemTotal` of `/proc/meminfo`): what kubelet's node
/// allocatable memory is without system reservations.
fn node_memory() -> std::io::Result<u64> {
    let text = fs::read_to_string(MEMINFO)?;
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .and_then(|kb| kb.checked_mul(1024))
        .filter(|b| *b > 0)
        .ok_or_else(|| std::io::Error::other("no MemTotal line"))
}

/// The size of a Memory emptyDir's tmpfs, bytes: the smallest of the node's memory, the
/// pod's memory limit and the volume's `sizeLimit`, where a limit of 0 counts as unset
/// (kubelet, `pkg/volume/emptydir/empty_dir.go` `calculateEmptyDirMemorySize`). Never 0:
/// tmpfs takes `size=0` as no limit at all.
pub fn tmpfs_size(size_limit: Option<u64>, pod_memory: Option<u64>, node_memory: u64) -> u64 {
    [size_limit, pod_memory]
        .into_iter()
        .flatten()
        .filter(|l| *l > 0)
        .fold(node_memory, u64::min)
        .max(1)
}

impl PodResources {
    /// Creates the pod's volumes and, when `config` sizes it, the pod cgroup at
    /// `cgroup_path`: created and sized if missing; an existing one is not written to (its
    /// owner's limits stand; its memory limit bounds the tmpfs sizes). Only what peapod
    /// created is removed later.
    /// Volumes: disk ones under `disk_root/<id>/volumes/<name>` (`<id>` 0700, the volume
    /// 1777), Memory ones as tmpfs under `state_dir/volumes/<name>` (one tmpfs per volume,
    /// shared by every container that mounts it) of [`tmpfs_size`] bytes.
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
            files: None,
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
        // Closed to host users: the Memory emptyDirs live below (crate::hostdir).
        crate::hostdir::create_private(&self.state_dir).map_err(self.io_err("create", &self.state_dir.clone()))?;
        let mut pod_memory = config
            .resources
            .as_ref()
            .and_then(|r| r.memory().as_ref())
            .and_then(|m| m.limit())
            .and_then(|l| u64::try_from(l).ok())
            .filter(|l| *l > 0);
        if let (Some(res), Some(path)) = (&config.resources, cgroup_path) {
            self.cgroup = Some(path.to_string());
            self.cgroup_owned_from = crate::cgroups::first_missing_ancestor(path);
            self.save()?;
            let cg = crate::cgroups::Cgroup::open(path).map_err(|source| PodError::Cgroup {
                id: self.id.clone(),
                source,
            })?;
            if cg.exists() {
                // Someone else's pod cgroup (under CRI, the kubelet's, sized from the pod
                // spec): its limits are authoritative and never loosened from here, or a pod
                // could lift its own limits through its annotations. Its memory limit is
                // the pod's for the tmpfs sizes below.
                let existing = cg.files().stats().ok().and_then(|s| s.memory_limit);
                pod_memory = match (pod_memory, existing) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            } else {
                let mut cg = crate::cgroups::Cgroup::create(path, None, self.cgroup_owned_from.as_deref()).map_err(
                    |source| PodError::Cgroup {
                        id: self.id.clone(),
                        source,
                    },
                )?;
                cg.update(res).map_err(|source| PodError::Cgroup {
                    id: self.id.clone(),
                    source,
                })?;
            }
        }
        if let Some(files) = &config.files {
            let dir = self.state_dir.clone();
            let mut shm = None;
            let created = files.create(&dir, &mut |p| {
                shm = Some(p.to_path_buf());
                Ok(())
            });
            // The tmpfs is recorded (and saved) whether or not its mount succeeded.
            if let Some(p) = shm {
                self.tmpfs.push(p);
                self.save()?;
            }
            let paths = created.map_err(|(op, path, source)| PodError::Io {
                id: self.id.clone(),
                op,
                path,
                source,
            })?;
            self.files = Some(paths);
            self.save()?;
        }
        let node_memory = node_memory().map_err(self.io_err("read", Path::new(MEMINFO)))?;
        for d in &config.empty_dirs {
            if d.medium == Medium::Memory {
                let dir = self.state_dir.join("volumes").join(&d.name);
                self.volumes.insert(d.name.clone(), dir.clone());
                self.tmpfs.push(dir.clone());
                self.save()?;
                fs::create_dir_all(&dir).map_err(self.io_err("create", &dir))?;
                let data = format!("mode=1777,size={}", tmpfs_size(d.size_limit, pod_memory, node_memory));
                mount(
                    Some("tmpfs"),
                    &dir,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some(data.as_str()),
                )
                .map_err(|e| self.io_err("mount tmpfs on", &dir)(e.into()))?;
            } else {
                let pod_dir = disk_root.join(&self.id);
                let dir = pod_dir.join("volumes").join(&d.name);
                self.volumes.insert(d.name.clone(), dir.clone());
                self.save()?;
                // The emptyDir itself is 0777 for the container's users (kubelet's too),
                // below the pod's directory, closed to host users (crate::hostdir).
                crate::hostdir::create_private(&pod_dir).map_err(self.io_err("create", &pod_dir))?;
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
        crate::hostdir::write_private(&path, &text).map_err(self.io_err("write", &path))
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

#[cfg(test)]
mod tests {
    use super::tmpfs_size;

    #[test]
    fn tmpfs_size_is_kubelets_smallest_positive_limit_and_never_zero() {
        const NODE: u64 = 8 << 30;
        // Nothing set, or zeros: the node's memory (tmpfs `size=0` would be unlimited).
        assert_eq!(tmpfs_size(None, None, NODE), NODE);
        assert_eq!(tmpfs_size(Some(0), Some(0), NODE), NODE);
        // The pod's limit bounds the volume's; a sizeLimit of 0 counts as unset.
        assert_eq!(tmpfs_size(Some(0), Some(64 << 20), NODE), 64 << 20);
        assert_eq!(tmpfs_size(Some(1 << 30), Some(64 << 20), NODE), 64 << 20);
        assert_eq!(tmpfs_size(Some(16 << 20), Some(64 << 20), NODE), 16 << 20);
        // Nothing above the node's memory.
        assert_eq!(tmpfs_size(Some(1 << 50), None, NODE), NODE);
    }
}
