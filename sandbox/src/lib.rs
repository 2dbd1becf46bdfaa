//! peapod's Linux sandbox: creates and supervises OCI containers natively (namespaces,
//! mounts, cgroups, capabilities), without runc.
//!
//! The crate knows Linux and pods, nothing of containerd or ttrpc, and is synchronous.
//! Entry points:
//! - [`init::run_if_requested`]: must be the first call in `main` of every binary that
//!   links this crate; it turns the process into a container init helper when spawned as one.
//! - [`Container`]: the OCI lifecycle of one container.
//!
//! All `unsafe` code lives in [`sys`].
#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod cgroups;
pub mod channel;
pub mod container;
pub mod init;
pub mod namespaces;
pub mod pod;
pub mod process;
pub mod rootfs;
pub mod spec;
pub mod supervisor;
pub mod sys;

pub use container::{Config, Container, CreateOptions, Error, ExecProcess, State, Status, Stdio, Timings};
pub use rootfs::RootfsMount;
