//! `peapod-init`: the container init helper, alone. The shim and the CLI spawn it (from a
//! sealed memfd copy, see `sandbox::sys::sealed_copy_of`) to create namespaces, clone
//! container init and exec the container's program. Being small, it is cheap to copy for
//! every spawn, so no copy of the much larger shim binary stays in memory per pod.
#![deny(unsafe_code)]

fn main() {
    sandbox::init::run_if_requested();
    eprintln!("peapod-init: this is peapod's container init helper; it is started by peapod, not by hand");
    std::process::exit(2);
}
