//! peapod's Linux sandbox: creates and supervises OCI containers natively (namespaces,
//! mounts, cgroups, capabilities), without runc.
//!
//! The crate knows Linux and pods, nothing of containerd, CRI, Kubernetes annotations or
//! YAML (callers hand it typed values), and is synchronous. Layers, bottom up:
//! - [`spec`]: OCI spec validation into a checked plan, with its error type;
//! - kernel concepts, each in its module: [`namespaces`], [`rootfs`], [`cgroups`], [`devices`],
//!   [`process`], [`seccomp`], [`lsm`] (AppArmor), [`signal`] (signal numbers), and [`sys`],
//!   where all `unsafe` code lives;
//! - [`init`] and [`channel`]: the re-executed helper that becomes container init, and
//!   how it talks to the runtime;
//! - [`Container`]: the OCI lifecycle of one container;
//! - [`pod`]: the pod: members and roles, emptyDir volumes, the pod cgroup, the start gate
//!   and the [`pod::supervisor`] (restarts, back-off, termination with a grace period).
//!
//! Entry points: [`init::run_if_requested`] must be the first call in `main` of every
//! binary that links this crate (it turns the process into a container init helper when
//! spawned as one). The crate's own binaries are `peapod-init` (that helper, alone) and
//! `peapod-pause` (the process that holds a pod's namespaces).
#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod cgroups;
pub mod channel;
pub mod container;
pub mod devices;
pub mod error;
pub mod hostdir;
pub mod init;
pub mod lsm;
pub mod namespaces;
pub mod pod;
pub mod process;
pub mod rootfs;
pub mod seccomp;
pub mod signal;
pub mod spec;
pub mod sys;

pub use container::{Config, Container, CreateOptions, Error, ExecProcess, State, Status, Stdio, Timings};
pub use rootfs::RootfsMount;
