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
//! load, query, attach, detach) and `seccomp` (installing a compiled filter); here itself,
//! `mount_id` (`statx`) and `read_proc` (procfs files in one read).
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
pub use spawn::{clone_parent, spawn_with_fds, start_spawn, CloneResult, PendingExec};
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

/// Reads a procfs file (`/proc/self/mountinfo`, `/proc/<pid>/stat`) into a string with a
/// 16 KiB first read. procfs reports size 0, so `fs::read_to_string` starts at 32 bytes
/// and doubles: about ten reads of `mountinfo`, each of which walks the mount list again
/// up to where the last one stopped.
///
/// Errors: open(2) or read(2) failed, or the file is not UTF-8.
pub fn read_proc(path: impl AsRef<std::path::Path>) -> io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut buf = Vec::with_capacity(16 * 1024);
    f.read_to_end(&mut buf)?;
    String::from_utf8(buf).map_err(io::Error::other)
}

/// The id of the mount `fd` is on, from `statx(STATX_MNT_ID)` (Linux 5.8); `None` on a
/// kernel that does not report it (the caller then reads `/proc/self/fdinfo`).
///
/// Errors: statx(2) failed.
pub fn mount_id(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<Option<u64>> {
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero statx is a valid value of the plain C struct.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open for the call's duration, the path is a NUL-terminated empty
    // string (AT_EMPTY_PATH: the fd itself), and `stx` is a writable statx.
    let ret = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_SYNC_AS_STAT,
            libc::STATX_MNT_ID,
            &mut stx,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((stx.stx_mask & libc::STATX_MNT_ID != 0).then_some(stx.stx_mnt_id))
}
