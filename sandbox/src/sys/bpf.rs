//! bpf(2) for the device cgroup program: load a `BPF_PROG_TYPE_CGROUP_DEVICE` program,
//! list, attach and detach the ones on a cgroup v2 directory (see `crate::devices`).
//!
//! `union bpf_attr` is passed as a zero-filled buffer of [`ATTR_SIZE`] bytes whose prefix
//! is the command's struct: the kernel requires every byte past the fields it knows to be
//! zero, and takes the size we pass.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{last_error, SysError};

const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_DETACH: libc::c_int = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_PROG_QUERY: libc::c_int = 16;

const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
/// Several programs on one cgroup, all of which must allow (runc attaches this way).
const BPF_F_ALLOW_MULTI: u32 = 2;

/// Bytes of `union bpf_attr` we pass (larger than every command's struct used here).
const ATTR_SIZE: usize = 128;
const ATTR_SIZE_ARG: libc::c_uint = 128;

/// One eBPF instruction, `struct bpf_insn` (8 bytes): opcode, destination and source
/// registers (4 bits each), a signed 16-bit offset and a signed 32-bit immediate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct BpfInsn {
    /// Opcode (class | size/op | source).
    pub code: u8,
    /// `dst_reg` in the low nibble and `src_reg` in the high one (little-endian bitfield).
    pub regs: u8,
    /// Jump offset in instructions, or memory offset in bytes.
    pub off: i16,
    /// Immediate operand.
    pub imm: i32,
}

impl BpfInsn {
    /// An instruction with destination `dst` and source `src` registers (0..=10).
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        #[cfg(target_endian = "little")]
        let regs = (dst & 0xf) | ((src & 0xf) << 4);
        #[cfg(target_endian = "big")]
        let regs = ((dst & 0xf) << 4) | (src & 0xf);
        Self { code, regs, off, imm }
    }

    /// The destination register.
    pub const fn dst(&self) -> u8 {
        #[cfg(target_endian = "little")]
        return self.regs & 0xf;
        #[cfg(target_endian = "big")]
        return self.regs >> 4;
    }

    /// The source register.
    pub const fn src(&self) -> u8 {
        #[cfg(target_endian = "little")]
        return self.regs >> 4;
        #[cfg(target_endian = "big")]
        return self.regs & 0xf;
    }
}

fn put_u32(attr: &mut [u8; ATTR_SIZE], at: usize, v: u32) {
    attr[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(attr: &mut [u8; ATTR_SIZE], at: usize, v: u64) {
    attr[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

fn get_u32(attr: &[u8; ATTR_SIZE], at: usize) -> u32 {
    u32::from_ne_bytes(attr[at..at + 4].try_into().expect("4 bytes"))
}

/// bpf(cmd, attr, ATTR_SIZE); the syscall's return value.
fn bpf(cmd: libc::c_int, attr: &mut [u8; ATTR_SIZE]) -> libc::c_long {
    // SAFETY: `attr` is a writable, zero-initialised buffer of ATTR_SIZE bytes that outlives
    // the call; every pointer the caller stored in it (instructions, license, log, id array)
    // points into memory the caller keeps alive across this call, with the lengths it set.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), ATTR_SIZE_ARG) }
}

/// Takes ownership of the fd bpf(2) returned.
fn owned(ret: libc::c_long, op: impl FnOnce() -> String) -> Result<OwnedFd, SysError> {
    if ret < 0 {
        return Err(last_error(op()));
    }
    let fd = i32::try_from(ret).map_err(|_| SysError {
        op: op(),
        source: io::Error::new(io::ErrorKind::InvalidData, "fd out of range"),
    })?;
    // SAFETY: the kernel just returned `fd` as a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Loads `insns` as a `BPF_PROG_TYPE_CGROUP_DEVICE` program under `license` (runc uses
/// "Apache"; the device hooks need no GPL-only helper). Returns the program's fd. On
/// rejection (EINVAL, EACCES from the verifier) the error carries the verifier's log.
/// Needs CAP_SYS_ADMIN (or CAP_BPF); 4.15+ kernels.
pub fn load_cgroup_device_prog(insns: &[BpfInsn], license: &str) -> Result<OwnedFd, SysError> {
    let license = std::ffi::CString::new(license).map_err(|_| SysError {
        op: "bpf(BPF_PROG_LOAD)".into(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "license has a NUL byte"),
    })?;
    let count = u32::try_from(insns.len()).map_err(|_| SysError {
        op: "bpf(BPF_PROG_LOAD)".into(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "too many instructions"),
    })?;
    let attempt = |log: &mut [u8]| {
        let mut attr = [0u8; ATTR_SIZE];
        // struct { u32 prog_type; u32 insn_cnt; u64 insns; u64 license; u32 log_level;
        //          u32 log_size; u64 log_buf; ... }
        put_u32(&mut attr, 0, BPF_PROG_TYPE_CGROUP_DEVICE);
        put_u32(&mut attr, 4, count);
        put_u64(&mut attr, 8, insns.as_ptr() as u64);
        put_u64(&mut attr, 16, license.as_ptr() as u64);
        if !log.is_empty() {
            put_u32(&mut attr, 24, 1);
            put_u32(&mut attr, 28, u32::try_from(log.len()).unwrap_or(u32::MAX));
            put_u64(&mut attr, 32, log.as_mut_ptr() as u64);
        }
        bpf(BPF_PROG_LOAD, &mut attr)
    };
    let ret = attempt(&mut []);
    if ret >= 0 {
        return owned(ret, || "bpf(BPF_PROG_LOAD)".into());
    }
    let first = io::Error::last_os_error();
    // Again with the verifier's log, to say why.
    let mut log = vec![0u8; 64 * 1024];
    let _ = attempt(&mut log);
    let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..end]).trim().to_string();
    Err(SysError {
        op: if text.is_empty() {
            "bpf(BPF_PROG_LOAD cgroup device program)".into()
        } else {
            format!("bpf(BPF_PROG_LOAD cgroup device program; verifier: {text})")
        },
        source: first,
    })
}

/// Ids of the device programs attached directly to the cgroup v2 directory `cgroup` (not
/// its ancestors'), by BPF_PROG_QUERY (4.15+).
pub fn cgroup_device_prog_ids(cgroup: BorrowedFd<'_>) -> Result<Vec<u32>, SysError> {
    let mut ids = vec![0u32; 64];
    loop {
        let mut attr = [0u8; ATTR_SIZE];
        // struct { u32 target_fd; u32 attach_type; u32 query_flags; u32 attach_flags;
        //          u64 prog_ids; u32 prog_cnt; }
        put_u32(&mut attr, 0, u32::try_from(cgroup.as_raw_fd()).unwrap_or_default());
        put_u32(&mut attr, 4, BPF_CGROUP_DEVICE);
        put_u64(&mut attr, 16, ids.as_mut_ptr() as u64);
        put_u32(&mut attr, 24, u32::try_from(ids.len()).unwrap_or(u32::MAX));
        let ret = bpf(BPF_PROG_QUERY, &mut attr);
        let count = get_u32(&attr, 24) as usize;
        if ret == 0 {
            ids.truncate(count.min(ids.len()));
            return Ok(ids);
        }
        let err = io::Error::last_os_error();
        // ENOSPC: more programs than room; the kernel wrote the count.
        if err.raw_os_error() == Some(libc::ENOSPC) && count > ids.len() {
            ids = vec![0; count];
            continue;
        }
        return Err(SysError {
            op: "bpf(BPF_PROG_QUERY cgroup device programs)".into(),
            source: err,
        });
    }
}

/// An fd for the loaded program with id `id` (BPF_PROG_GET_FD_BY_ID, 4.13+).
pub fn bpf_prog_fd_by_id(id: u32) -> Result<OwnedFd, SysError> {
    let mut attr = [0u8; ATTR_SIZE];
    put_u32(&mut attr, 0, id);
    owned(bpf(BPF_PROG_GET_FD_BY_ID, &mut attr), || {
        format!("bpf(BPF_PROG_GET_FD_BY_ID {id})")
    })
}

fn attach_attr(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>, flags: u32) -> [u8; ATTR_SIZE] {
    let mut attr = [0u8; ATTR_SIZE];
    // struct { u32 target_fd; u32 attach_bpf_fd; u32 attach_type; u32 attach_flags; }
    put_u32(&mut attr, 0, u32::try_from(cgroup.as_raw_fd()).unwrap_or_default());
    put_u32(&mut attr, 4, u32::try_from(prog.as_raw_fd()).unwrap_or_default());
    put_u32(&mut attr, 8, BPF_CGROUP_DEVICE);
    put_u32(&mut attr, 12, flags);
    attr
}

/// Attaches device program `prog` to the cgroup v2 directory `cgroup` with
/// `BPF_F_ALLOW_MULTI` (the cgroup's other device programs stay; every one must allow).
/// EPERM when the cgroup already has a program attached without that flag.
pub fn attach_cgroup_device_prog(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> Result<(), SysError> {
    let mut attr = attach_attr(cgroup, prog, BPF_F_ALLOW_MULTI);
    if bpf(BPF_PROG_ATTACH, &mut attr) < 0 {
        return Err(last_error("bpf(BPF_PROG_ATTACH cgroup device program)"));
    }
    Ok(())
}

/// Detaches device program `prog` from the cgroup v2 directory `cgroup`; the kernel frees
/// it once no fd or link holds it. ENOENT when it is not attached there.
pub fn detach_cgroup_device_prog(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> Result<(), SysError> {
    let mut attr = attach_attr(cgroup, prog, 0);
    if bpf(BPF_PROG_DETACH, &mut attr) < 0 {
        return Err(last_error("bpf(BPF_PROG_DETACH cgroup device program)"));
    }
    Ok(())
}
