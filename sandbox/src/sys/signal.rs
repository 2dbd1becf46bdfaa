//! Signal state a fresh program inherits: dispositions and the mask survive `execve`, so
//! they are reset before the container's program runs.

use super::SysError;

/// Restores every signal to its default disposition and unblocks all signals, so the
/// container's program starts as a freshly exec'd process should: Rust's runtime ignores
/// SIGPIPE in our binary, and ignored dispositions and the mask survive `execve`.
pub fn reset_signals() -> Result<(), SysError> {
    /// The kernel's `struct sigaction` for x86_64 and aarch64 `rt_sigaction(2)`.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // The raw syscall, not glibc's sigaction(): glibc refuses to touch the real-time
    // signals it reserves (32, 33), which can still arrive ignored from our parent.
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: `dfl` is a valid kernel sigaction that outlives the call, the old-action
        // pointer is null, and the size is that of the kernel's 64-bit signal mask.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &dfl as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            )
        };
    }
    let empty = nix::sys::signal::SigSet::empty();
    nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&empty), None).map_err(|e| SysError {
        op: "sigprocmask(SIG_SETMASK, {})".into(),
        source: e.into(),
    })
}
