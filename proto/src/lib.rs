//! Wire formats and clients for peapod, shared by the shim, the CLI and the tests. No
//! logic beyond encoding, decoding and conversion.
//!
//! - [`annotations`]: every OCI-spec annotation peapod reads or writes, parsed into
//!   `sandbox`'s pod values (typed and bounded) and formatted back.
//! - [`kube`]: Kubernetes quantities and kubelet's conversions to cgroup values.
//! - [`podsandbox`]: CRI's `PodSandboxConfig` as the Sandbox API's CreateSandbox carries
//!   it, decoded (rust-protobuf, no gRPC stack) and checked into `sandbox`'s pod values.
//! - [`eventlog`]: the event log a shim writes without containerd (containerd's event
//!   `Envelope`s, length-delimited), read by the CLI's embedded mode.
//! - [`crilog`]: Kubernetes' CRI container log format, written by the shim for the
//!   embedded mode and read by `peapod logs` in both modes.
//! - [`wire`]: protobuf messages containerd defines that no crate ships (containerd 2.3's
//!   shim bootstrap, CRI's generic runtime options), generated from `protos/`.
//! - [`cri`] (feature `cri`): a blocking CRI v1 client over containerd's unix socket (the
//!   CLI's CRI mode, tests). The shim does not enable it.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod annotations;
#[cfg(feature = "cri")]
pub mod cri;
pub mod crilog;
pub mod eventlog;
pub mod kube;
pub mod podsandbox;
pub mod wire;
