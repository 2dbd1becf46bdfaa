//! The `peapod` CLI: runs Kubernetes Pod manifests on one machine.
//!
//! The data path reads top to bottom: [`manifest`] turns a Pod (YAML, `k8s-openapi`
//! types) into a plan; [`pods`] turns the plan into OCI bundles with peapod's annotations;
//! then one of two modes runs it:
//! - embedded ([`runner`], driving the shim through [`embedded`]): the CLI starts
//!   `containerd-shim-peapod-v2` exactly as containerd does and drives its Task API, with
//!   images from the local store ([`images`]) and the pod network from CNI ([`cni`]);
//! - CRI ([`crimode`]): the CLI drives a CRI runtime (containerd) as kubelet does.
//!
//! Both apply the seccomp and AppArmor profiles [`security`] chooses, as kubelet and
//! containerd choose them (containerd's RuntimeDefault seccomp profile by default).
//!
//! Both report kubelet's pod status ([`podstatus`]) and print it as kubectl does
//! ([`display`]). The shim binary never links this crate; what the two share is the shim
//! binary's command line and the wire formats in `proto` (event log, CRI log).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cni;
pub mod config;
pub mod crimode;
pub mod display;
pub mod embedded;
pub mod hostports;
pub mod imagepull;
pub mod images;
pub mod manifest;
pub mod pods;
pub mod podstatus;
pub mod probes;
pub mod pullbackoff;
pub mod runner;
pub mod security;
pub mod volumes;
