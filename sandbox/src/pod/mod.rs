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
//! - `members`: roles, the declared containers, the restart policy and its back-off
//!   (kubelet's rules, KEP-753 native sidecars, KEP-4603).
//! - `volumes`: emptyDirs and members' bind mounts of them.
//! - `resources`: the pod's host state, created with the sandbox and removed with it: the
//!   pod cgroup and the volumes, recorded in `pod.json`.
//! - `files`: the pod's hostname, hosts, `resolv.conf` and `/dev/shm`, made for the pod
//!   and bind-mounted into its members, when the pod is not given them by its caller.
//! - `pause`: the pod's own pause process (no image): its spec, root and binary.
//! - `gate`: the start order (KEP-753): when a member may start.
//! - [`hooks`]: lifecycle hooks (postStart, preStop) and how they run.
//! - [`probe`]: liveness, readiness and startup probes (kubelet's prober): the rules by
//!   which checks become results, and the network checks.
//! - [`supervisor`]: the pod's supervision over its host: waiting at the start gate,
//!   restarts with back-off, stopping sidecars once the apps are done, termination with
//!   a grace period.
//!
//! Everything is re-exported here: `sandbox::pod::Role`, `sandbox::pod::gate`, ….

mod files;
mod gate;
pub mod hooks;
mod members;
mod pause;
pub mod probe;
mod resources;
pub mod supervisor;
mod volumes;

pub use files::{Dns, PodFilePaths, PodFiles};
pub use gate::{gate, gate_declared, Gate, MemberView};
pub use members::{DeclaredContainer, RestartPolicy, Role};
pub use pause::{
    binary_mount as pause_binary_mount, installed_binary as pause_binary, prepare_root as prepare_pause_root,
    PauseConfig, PauseError, PauseNamespace, PAUSE_CPU_SHARES, PAUSE_ENV,
};
pub use resources::{tmpfs_size, PodConfig, PodError, PodResources};
pub use volumes::{EmptyDir, Medium, VolumeMount};
