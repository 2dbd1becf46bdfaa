//! Wire formats and clients for peapod, shared by the shim, the CLI and the tests. No
//! logic beyond encoding, decoding and conversion.
//!
//! - [`eventlog`]: the event log a shim writes without containerd (containerd's event
//!   `Envelope`s, length-delimited), read by the CLI's embedded mode.
//! - [`crilog`]: Kubernetes' CRI container log format, written by the shim for the
//!   embedded mode and read by `peapod logs` in both modes.
//! - [`cri`] (feature `cri`): a blocking CRI v1 client over containerd's unix socket (the
//!   CLI's CRI mode, tests). The shim does not enable it.
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "cri")]
pub mod cri;
pub mod crilog;
pub mod eventlog;
