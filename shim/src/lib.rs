//! `containerd-shim-peapod-v2`: containerd's shim v2 over ttrpc, built on `sandbox`.
//!
//! Only this crate knows containerd's process contract ([`args`], [`start`]); the Task
//! API is served by [`service`], with stdio in [`io`], events in [`events`], Stats payloads
//! in [`metrics`] and the single child reaper in [`reaper`].
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod args;
pub mod cni;
pub mod crilog;
pub mod crimode;
pub mod display;
pub mod embedded;
pub mod error;
pub mod events;
pub mod images;
pub mod io;
pub mod manifest;
pub mod metrics;
pub mod pods;
pub mod podstatus;
pub mod reaper;
pub mod runner;
pub mod serve;
pub mod service;
pub mod start;

/// `peapod-init` next to our own executable, the small binary that runs as container init
/// helper (see `sandbox::sys::SealedExe` for how it is run); `None` (use our own
/// executable) when it is not installed there.
pub fn init_binary() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let init = exe.parent()?.join("peapod-init");
    init.is_file().then_some(init)
}
