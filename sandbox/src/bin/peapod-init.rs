//! `peapod-init`: the container init helper, alone. The shim and the CLI spawn it (through
//! a read-only overlayfs handle, or a sealed memfd copy: `sandbox::sys::SealedExe`) to
//! create namespaces, clone container init and exec the container's program. Being small,
//! it maps little and is cheap to copy where a copy is needed.
#![deny(unsafe_code)]

fn main() {
    sandbox::init::run_if_requested();
    eprintln!("peapod-init: this is peapod's container init helper; it is started by peapod, not by hand");
    std::process::exit(2);
}
