//! Wire types and clients for peapod: containerd's task and event API over ttrpc, and CRI
//! over gRPC, with conversions to `sandbox` types. No logic beyond conversion.
//!
//! - [`cri`]: a blocking CRI v1 client over containerd's unix socket (tests, tools).
//! - [`kube`]: Kubernetes quantities and kubelet's conversions to cgroup values.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cri;
pub mod kube;
