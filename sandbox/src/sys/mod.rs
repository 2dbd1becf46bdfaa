//! The only module with `unsafe`: raw syscalls that `nix` does not wrap, each behind a
//! typed, safe function.
//!
//! Everything here is either async-signal-safe (it may run between `fork` and `exec`),
//! runs in the single-threaded init helper, or (`bpf`, which allocates) runs in the
//! runtime's own process outside any fork; never in a multi-threaded parent after fork.
//!
//! By subject, re-exported here: `spawn` (clone of the init helper and of container
//! init), `fd` (fd ownership and passing, pidfds), `signal` (signal state before exec),
//! `tty` (controlling terminal, window size), `wait` (child exits read without reaping),
//! `exe` (the sealed executable the helper runs from), `exec` (`execve` with prepared
//! arrays), `malloc` (the allocator's arena cap), `bpf` (the cgroup v2 device program:
//! load, query, attach, detach) and `seccomp` (installing a compiled filter).
//! Every `unsafe` block carries a `// SAFETY:` comment naming its invariant.
#![allow(unsafe_code)]

use std::io;

mod bpf;
mod exe;
mod exec;
mod fd;
mod malloc;
mod seccomp;
mod signal;
mod spawn;
mod tty;
mod wait;

pub use bpf::{
    attach_cgroup_device_prog, bpf_prog_fd_by_id, cgroup_device_prog_ids, detach_cgroup_device_prog,
    load_cgroup_device_prog, BpfInsn,
};
pub use exe::{sealed_copy_of, sealed_exe, sealed_self_exe, SealedExe};
pub use exec::ExecArgs;
pub use fd::{
    adopt_inherited_fd, cloexec_from, inherit_fd, kill, map_fds, own_received_fd, peer_credentials, pidfd_open,
    pidfd_send_signal,
};
pub use malloc::{
    limit_malloc_arenas, trim_malloc, tunables_before, tunables_without_stack_cache, NO_STACK_CACHE, TUNABLES_ENV,
};
pub use seccomp::{set_mode_filter, SockFilter};
pub use signal::reset_signals;
pub use spawn::{clone_parent, spawn_with_fds, CloneResult};
pub use tty::{set_controlling_terminal, set_window_size, window_size};
pub use wait::peek_exited_child;

/// Failure of a raw syscall wrapper; `op` names the syscall and its target.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {source}")]
pub struct SysError {
    /// The operation that failed, e.g. `"pidfd_open(4242)"`.
    pub op: String,
    /// The errno the kernel returned.
    #[source]
    pub source: io::Error,
}

fn last_error(op: impl Into<String>) -> SysError {
    SysError {
        op: op.into(),
        source: io::Error::last_os_error(),
    }
}
