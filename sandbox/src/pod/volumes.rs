//! A pod's volumes: emptyDirs (Kubernetes' `emptyDir`: a directory on the node's disk, or
//! a tmpfs, that lives as long as the pod) and members' bind mounts of them.
//!
//! [`crate::pod::PodResources::create`] creates the volumes with the sandbox, before any
//! member exists; [`crate::pod::PodResources::mount_volumes`] adds a member's mounts to
//! its spec before the member is created, as recursive `nosuid,nodev` bind mounts, so
//! every member sees the same directory (for Memory, the same tmpfs).

use oci_spec::runtime::{MountBuilder, Spec};

use super::PodResources;
use crate::spec::{invalid, SpecError};

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
    /// For [`Medium::Memory`], an upper bound of the tmpfs size in bytes; `None` and
    /// `Some(0)` mean unset (kubelet's rule, see [`crate::pod::tmpfs_size`]: the tmpfs is
    /// never unlimited). Ignored on disk.
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

impl PodResources {
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
}
