//! Protobuf messages containerd defines that no crate ships, generated from
//! `proto/protos/*.proto` by `build.rs` (rust-protobuf 3, as `containerd-shim-protos`):
//!
//! - [`bootstrap`]: containerd 2.3's `containerd.runtime.bootstrap.v1.BootstrapParams`
//!   (the shim's stdin at `start`) and `BootstrapResult` (its answer).
//! - [`runtimeoptions`]: CRI's `runtimeoptions.v1.Options`, the runtime options of a
//!   runtime type that is not runc's (`ConfigPath`, or the `options` TOML in `ConfigBody`).
//! - [`cri_sandbox`]: the part of CRI's `runtime.v1.PodSandboxConfig` the Sandbox API's
//!   CreateSandbox carries that peapod reads ([`crate::podsandbox`] checks it).
//! - [`runctypes`]: containerd 1.6's `containerd.linux.runc.CreateOptions`, which its Go
//!   client sends for `WithShimCgroup` to a runtime that is not runc's.
//!
//! containerd's own runc options (`containerd.runc.v1.Options`, with `ShimCgroup`) are
//! `containerd_shim_protos::shim::oci::Options`.

/// `containerd.runtime.bootstrap.v1` (containerd ≥ 2.3).
#[allow(missing_docs, dead_code, non_camel_case_types, non_snake_case, non_upper_case_globals)]
#[allow(unused_mut, unused_results, trivial_casts, clippy::all, clippy::pedantic)]
#[rustfmt::skip]
pub mod bootstrap {
    include!(concat!(env!("OUT_DIR"), "/protos/bootstrap.rs"));
}

/// `runtimeoptions.v1` (containerd's CRI plugin).
#[allow(missing_docs, dead_code, non_camel_case_types, non_snake_case, non_upper_case_globals)]
#[allow(unused_mut, unused_results, trivial_casts, clippy::all, clippy::pedantic)]
#[rustfmt::skip]
pub mod runtimeoptions {
    include!(concat!(env!("OUT_DIR"), "/protos/runtimeoptions.rs"));
}

/// `containerd.linux.runc` (containerd 1.6's legacy runc types).
#[allow(missing_docs, dead_code, non_camel_case_types, non_snake_case, non_upper_case_globals)]
#[allow(unused_mut, unused_results, trivial_casts, clippy::all, clippy::pedantic)]
#[rustfmt::skip]
pub mod runctypes {
    include!(concat!(env!("OUT_DIR"), "/protos/runctypes.rs"));
}

/// `runtime.v1` (CRI): `PodSandboxConfig` and what it holds, in part.
#[allow(missing_docs, dead_code, non_camel_case_types, non_snake_case, non_upper_case_globals)]
#[allow(unused_mut, unused_results, trivial_casts, clippy::all, clippy::pedantic)]
#[rustfmt::skip]
pub mod cri_sandbox {
    include!(concat!(env!("OUT_DIR"), "/protos/cri_sandbox.rs"));
}
