//! The raw `seccomp(SECCOMP_SET_MODE_FILTER)` call that installs a classic-BPF program
//! compiled by the runtime ([`crate::seccomp`]).
//!
//! Runs in container init or an exec'd process, which are single-threaded, right before
//! `execve` or before the process drops its capabilities: on success it neither allocates
//! nor takes locks, so nothing between it and `execve` needs memory.

use super::SysError;

/// One classic-BPF instruction: the kernel's `struct sock_filter` (`linux/filter.h`),
/// 8 bytes, as libseccomp's `seccomp_export_bpf` writes them in native byte order.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockFilter {
    /// Opcode (`BPF_LD | BPF_W | BPF_ABS`, `BPF_RET | BPF_K`, …).
    pub code: u16,
    /// Jump offset when the condition holds.
    pub jt: u8,
    /// Jump offset when it does not.
    pub jf: u8,
    /// Operand: a constant, an offset into `struct seccomp_data`, or the return value.
    pub k: u32,
}

impl SockFilter {
    /// Size of one instruction in libseccomp's export, bytes.
    pub const SIZE: usize = 8;

    /// Decodes one exported instruction (native byte order).
    pub fn from_bytes(b: [u8; 8]) -> SockFilter {
        SockFilter {
            code: u16::from_ne_bytes([b[0], b[1]]),
            jt: b[2],
            jf: b[3],
            k: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    /// Encodes it the way [`SockFilter::from_bytes`] reads it.
    pub fn to_bytes(self) -> [u8; 8] {
        let c = self.code.to_ne_bytes();
        let k = self.k.to_ne_bytes();
        [c[0], c[1], self.jt, self.jf, k[0], k[1], k[2], k[3]]
    }
}

/// `struct sock_fprog`: the program's length in instructions and a pointer to them.
#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const SockFilter,
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, flags, &prog)` (seccomp(2)): installs `prog` on the
/// calling thread, for it and every process it later `execve`s or forks.
///
/// `flags` are `SECCOMP_FILTER_FLAG_*` bits (`LOG` 2, `SPEC_ALLOW` 4,
/// `WAIT_KILLABLE_RECV` 32); the kernel refuses bits it does not know with EINVAL.
///
/// Errors: EACCES without `no_new_privs` and without CAP_SYS_ADMIN in the process's user
/// namespace; EINVAL for an empty or too long program (over 4096 instructions, or more
/// than the kernel's total of 32768 across stacked filters: ENOMEM) or unknown flags;
/// EFAULT never (the program is ours).
pub fn set_mode_filter(flags: u32, prog: &[SockFilter]) -> Result<(), SysError> {
    let Ok(len) = libc::c_ushort::try_from(prog.len()) else {
        return Err(SysError {
            op: format!(
                "seccomp(SECCOMP_SET_MODE_FILTER, {flags:#x}): {} instructions",
                prog.len()
            ),
            source: std::io::Error::from_raw_os_error(libc::EINVAL),
        });
    };
    let fprog = SockFprog {
        len,
        filter: prog.as_ptr(),
    };
    // SAFETY: `fprog` points at `prog`, `len` instructions of the kernel's `sock_filter`
    // layout (`#[repr(C)]`, 8 bytes each); both outlive the call, which copies the program
    // into the kernel and keeps no pointer to our memory.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::c_ulong::from(flags),
            &fprog as *const SockFprog,
        )
    };
    if rc != 0 {
        // The errno first: formatting the message allocates.
        let source = std::io::Error::last_os_error();
        return Err(SysError {
            op: format!("seccomp(SECCOMP_SET_MODE_FILTER, {flags:#x}, {len} instructions)"),
            source,
        });
    }
    Ok(())
}
