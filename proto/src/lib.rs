//! Wire types and clients for peapod: containerd's task and event API over ttrpc, and CRI
//! over gRPC, with conversions to `sandbox` types. No logic beyond conversion.
//!
//! Empty until the shim (containerd task API) lands; it exists so the workspace layout is
//! fixed from the start.
#![deny(unsafe_code)]
