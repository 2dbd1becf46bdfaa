//! `containerd-shim-peapod-v2`: containerd's shim v2 over ttrpc, built on `sandbox`.
//!
//! This crate is the shim and nothing else (the `peapod` CLI is the `peapod` crate, which
//! starts this binary as containerd would). Only this crate knows containerd's process
//! contract ([`args`], [`bootstrap`], [`options`], [`start`], [`serve`]); the Task API is
//! served by [`service`] and containerd 2.x's Sandbox API (`sandboxer = "shim"`) by
//! [`sandbox_service`], with
//! stdio in [`io`], events in [`events`], Stats payloads in [`metrics`] and the single
//! child reaper in [`reaper`];
//! [`error`] chooses the ttrpc code containerd sees.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod args;
pub mod bootstrap;
pub mod checks;
pub mod error;
pub mod events;
pub mod io;
pub mod metrics;
pub mod options;
pub mod panic;
mod probes;
pub mod reaper;
pub mod sandbox_service;
pub mod serve;
pub mod service;
pub mod start;
mod wake;
