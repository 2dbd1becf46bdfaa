//! Wire types and clients for peapod: containerd's task and event API over ttrpc, and CRI
//! over gRPC, with conversions to `sandbox` types. No logic beyond conversion.
//!
//! - [`annotations`]: every OCI-spec annotation peapod reads or writes, parsed into
//!   `sandbox`'s pod values and formatted back.
//! - [`cri`]: a blocking CRI v1 client over containerd's unix socket (tests, tools).
//! - [`kube`]: Kubernetes quantities and kubelet's conversions to cgroup values.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod annotations;
pub mod cri;
pub mod kube;
