//! seccomp filters (OCI runtime spec, `linux.seccomp`): a classic-BPF program the kernel
//! runs on every system call of the container's processes, which returns an action
//! (allow, log, fail with an errno, trap, kill) from the syscall number, the
//! architecture and the six raw argument values. Filters are inherited over `fork` and
//! `execve` and can never be removed; `/proc/<pid>/status` shows `Seccomp: 2` for a
//! filtered process.
//!
//! # Where each step runs
//! - [`compile`] runs in the runtime, at `create`, before any state dir, cgroup or
//!   process exists: libseccomp (through the `libseccomp` crate over Debian's libseccomp
//!   2.5, as runc, crun and youki use it) turns the profile into BPF, exported into a
//!   memfd and read back into a [`Program`]. An identical profile compiled before comes
//!   from the process's cache (containerd's default profile for the next container of a
//!   pod) or from the host's [`store`] (the same profile in an earlier pod's shim). A bad profile fails the create with the
//!   field named ([`SeccompError::field`]) and leaves nothing behind. The container keeps
//!   the program, so exec'd processes get the same filter, as runc applies the
//!   container's seccomp config to `runc exec` (libcontainer/setns_init_linux.go).
//! - [`Program::load`] runs in container init (and in exec'd processes) and only makes the
//!   raw `seccomp(SECCOMP_SET_MODE_FILTER, flags, &prog)` call ([`crate::sys`]), with
//!   the flags computed here: libseccomp's own loader, and so its no_new_privs and TSYNC
//!   attributes, is never used.
//!
//! # Ordering (runc's libcontainer/standard_init_linux.go and setns_init_linux.go)
//! Loading a filter needs `no_new_privs` or CAP_SYS_ADMIN in the process's user
//! namespace (seccomp(2), EACCES otherwise). So:
//! - with `process.noNewPrivileges`, the filter is loaded as late as possible: right
//!   before `execve`, after `start` released init, with the `execve` arguments already
//!   built, so that only `execve` runs under the filter and the profile need not allow
//!   what peapod itself does (the channel's `recvmsg`, `close_range`, `capset`…);
//! - without it, the filter is loaded before the process switches uid and drops its
//!   capabilities ([`crate::process::apply`]), while CAP_SYS_ADMIN is still held; the
//!   profile then applies to the rest of the setup too, as under runc.
//!
//! A failure to load is reported as stage `seccomp` with the errno.
//!
//! # runc's semantics (libcontainer/seccomp/seccomp_linux.go), mirrored
//! - `defaultAction` with `defaultErrnoRet`; `SCMP_ACT_ERRNO` and `SCMP_ACT_TRACE`
//!   without an errno return EPERM; `SCMP_ACT_KILL` is `SCMP_ACT_KILL_THREAD`.
//! - `architectures`: each is added to the filter (the native one is always present).
//! - `flags`: `SECCOMP_FILTER_FLAG_LOG` and `SECCOMP_FILTER_FLAG_SPEC_ALLOW` are passed to
//!   seccomp(2), refused naming `linux.seccomp.flags[i]` where libseccomp's probe says
//!   the kernel lacks them; `SECCOMP_FILTER_FLAG_TSYNC` is accepted and ignored (init is
//!   single-threaded). Without `flags` at all (not even `[]`), SPEC_ALLOW where the
//!   kernel has it, as runc's specconv does. `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` is refused naming
//!   `linux.seccomp.flags[i]`: the kernel accepts it only with a notify listener (EINVAL
//!   otherwise), which peapod does not support. A flag the OCI spec does not define fails
//!   while loading `config.json`, naming `linux.seccomp.flags[i]` ([`crate::spec::load`]).
//! - A rule whose action equals the default action is skipped (libseccomp refuses it).
//! - A syscall name libseccomp does not know (on this architecture) is skipped with a
//!   debug log, as runc does, so one profile serves several kernels.
//! - `args`: every `SCMP_CMP_*` operator; for `SCMP_CMP_MASKED_EQ`, `value` is the mask
//!   and `valueTwo` the value compared after masking. Several conditions on the same
//!   argument index become one rule per condition (OR'ed); otherwise all conditions form
//!   one rule (AND'ed), runc's `matchCall`.
//! - Over 32 rules: libseccomp's binary-tree optimisation (`SCMP_FLTATR_CTL_OPTIMIZE` 2).
//!
//! # Not supported, refused by name
//! `SCMP_ACT_NOTIFY` (in `defaultAction` or `syscalls[i].action`) and `listenerPath`:
//! runc hands the notify fd to a listener over a unix socket; peapod has no such
//! listener protocol, so such a profile fails the create rather than running with a
//! different filter.
//!
//! # Known gap: runc's patchbpf
//! runc rewrites the exported program (libcontainer/seccomp/patchbpf) so that syscalls
//! newer than every syscall the profile names return ENOSYS instead of the default
//! action, letting programs fall back from syscalls the profile's author did not know
//! (glibc's `clone3` → `clone`). peapod does not: such syscalls get the default action
//! (with containerd's default profile, EPERM). containerd's profile names `clone3`
//! itself (ENOSYS), which covers the common case.

use std::io::{Read, Seek, SeekFrom};
use std::str::FromStr;

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator};
use serde::{Deserialize, Serialize};

use crate::sys::{self, SockFilter, SysError};

pub mod store;

/// A profile that cannot be compiled; `field` names the offending `linux.seccomp` field
/// in OCI JSON spelling.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The field asks for something peapod does not do, or holds a value that cannot be
    /// encoded.
    #[error("{field}: {reason}")]
    Unsupported {
        /// e.g. `linux.seccomp.syscalls[2].action`.
        field: String,
        /// Why.
        reason: String,
    },
    /// libseccomp refused the field (a bad architecture, a condition it cannot encode).
    #[error("{field}: libseccomp: {op}: {source}")]
    Libseccomp {
        /// e.g. `linux.seccomp.syscalls[0].names[1]`.
        field: String,
        /// The libseccomp call, e.g. `add rule for personality`.
        op: String,
        /// Cause.
        #[source]
        source: libseccomp::error::SeccompError,
    },
    /// Exporting the compiled filter into a memfd and reading it back failed.
    #[error("linux.seccomp: export the compiled filter: {op}: {reason}")]
    Export {
        /// What failed.
        op: &'static str,
        /// Cause.
        reason: String,
    },
}

impl SeccompError {
    /// The `linux.seccomp…` field the error is about.
    pub fn field(&self) -> &str {
        match self {
            SeccompError::Unsupported { field, .. } | SeccompError::Libseccomp { field, .. } => field,
            SeccompError::Export { .. } => "linux.seccomp",
        }
    }
}

fn unsupported(field: impl Into<String>, reason: impl Into<String>) -> SeccompError {
    SeccompError::Unsupported {
        field: field.into(),
        reason: reason.into(),
    }
}

/// `SECCOMP_FILTER_FLAG_LOG` (seccomp(2), Linux 4.14): log every action but allow.
pub const FLAG_LOG: u32 = 1 << 1;
/// `SECCOMP_FILTER_FLAG_SPEC_ALLOW` (Linux 4.17): keep Speculative Store Bypass
/// mitigation off for the process.
pub const FLAG_SPEC_ALLOW: u32 = 1 << 2;

/// The longest classic-BPF program seccomp(2) loads (`BPF_MAXINSNS`).
pub const MAX_INSTRUCTIONS: usize = 4096;

/// The highest errno SECCOMP_RET_DATA can carry (16 bits); the kernel further caps the
/// errno a syscall returns at MAX_ERRNO (4095).
const MAX_ERRNO_RET: u32 = 0xffff;

/// A compiled filter: the BPF instructions libseccomp exported, and the
/// `SECCOMP_FILTER_FLAG_*` bits to pass to seccomp(2).
///
/// On the channel and in `state.json` it is `{"flags": n, "bpf": "<hex>"}`, 16 hex digits
/// per instruction in native byte order. Clones share the instructions: every container of
/// a pod usually has the same program ([`compile`]'s cache), ~8 KiB for containerd's
/// default profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Wire", into = "Wire")]
pub struct Program {
    instructions: std::sync::Arc<[SockFilter]>,
    flags: u32,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    flags: u32,
    bpf: String,
}

impl From<Program> for Wire {
    fn from(p: Program) -> Wire {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut bpf = String::with_capacity(p.instructions.len() * 16);
        for insn in p.instructions.iter() {
            for b in insn.to_bytes() {
                bpf.push(char::from(HEX[usize::from(b >> 4)]));
                bpf.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
        Wire { flags: p.flags, bpf }
    }
}

impl TryFrom<Wire> for Program {
    type Error = String;
    fn try_from(w: Wire) -> Result<Program, String> {
        let bytes = w.bpf.as_bytes();
        if !bytes.len().is_multiple_of(2 * SockFilter::SIZE) {
            return Err(format!(
                "seccomp program: {} hex digits, not whole instructions",
                bytes.len()
            ));
        }
        let nibble = |c: u8| {
            (c as char)
                .to_digit(16)
                .ok_or_else(|| format!("seccomp program: {c:#x} is not hex"))
        };
        let mut instructions = Vec::with_capacity(bytes.len() / 16);
        for chunk in bytes.chunks_exact(16) {
            let mut insn = [0u8; 8];
            for (i, pair) in chunk.chunks_exact(2).enumerate() {
                let v = nibble(pair[0])? * 16 + nibble(pair[1])?;
                insn[i] = u8::try_from(v).expect("two hex digits fit a byte");
            }
            instructions.push(SockFilter::from_bytes(insn));
        }
        Ok(Program {
            instructions: instructions.into(),
            flags: w.flags,
        })
    }
}

impl Program {
    /// The BPF instructions.
    pub fn instructions(&self) -> &[SockFilter] {
        &self.instructions
    }

    /// The `SECCOMP_FILTER_FLAG_*` bits passed to seccomp(2).
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// Installs the filter on the calling process (see the module's ordering). Does not
    /// allocate on success.
    ///
    /// Errors: EACCES without `no_new_privs` and without CAP_SYS_ADMIN; EINVAL for flags
    /// the kernel does not know; ENOMEM past the kernel's instruction limit.
    pub fn load(&self) -> Result<(), SysError> {
        sys::set_mode_filter(self.flags, &self.instructions)
    }

    /// `SECCOMP_RET_*` values of the program's `BPF_RET | BPF_K` instructions, in order:
    /// the actions it can return (for tests and diagnostics).
    pub fn return_values(&self) -> Vec<u32> {
        const BPF_RET_K: u16 = 0x06;
        self.instructions
            .iter()
            .filter(|i| i.code == BPF_RET_K)
            .map(|i| i.k)
            .collect()
    }
}

/// The libseccomp action for an OCI action, runc's `getAction`: errno and trace default
/// to EPERM, `SCMP_ACT_KILL` is kill-thread. `field` names the action for errors;
/// `errno_field` the `errnoRet` beside it.
fn action(
    act: LinuxSeccompAction,
    errno_ret: Option<u32>,
    field: &str,
    errno_field: &str,
) -> Result<ScmpAction, SeccompError> {
    let errno = match errno_ret {
        None => libc::EPERM.unsigned_abs(),
        Some(e) if e <= MAX_ERRNO_RET => e,
        Some(e) => {
            return Err(unsupported(
                errno_field,
                format!("{e} does not fit seccomp's 16-bit return data (runc truncates it silently)"),
            ))
        }
    };
    let errno16 = u16::try_from(errno).expect("checked against MAX_ERRNO_RET");
    Ok(match act {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => ScmpAction::KillThread,
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(i32::from(errno16)),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(errno16),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(unsupported(
                field,
                "SCMP_ACT_NOTIFY is not supported by peapod (no seccomp notify listener); \
                 the profile is refused rather than run with a different filter",
            ))
        }
    })
}

/// libseccomp's comparison for an OCI operator; `value` and `value_two` as runc passes
/// them (`SCMP_CMP_MASKED_EQ`: `value` is the mask, `value_two` the datum).
fn condition(index: u32, op: LinuxSeccompOperator, value: u64, value_two: Option<u64>) -> ScmpArgCompare {
    let (op, datum) = match op {
        LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, value),
        LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, value),
        LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, value),
        LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, value),
        LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, value),
        LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, value),
        LinuxSeccompOperator::ScmpCmpMaskedEq => (ScmpCompareOp::MaskedEqual(value), value_two.unwrap_or(0)),
    };
    ScmpArgCompare::new(index, op, datum)
}

/// The `SECCOMP_FILTER_FLAG_*` bits for `profile.flags`, as runc computes them
/// (libcontainer/specconv `SetupSeccomp`, seccomp `setFlag`, patchbpf `filterFlags`).
fn filter_flags(profile: &LinuxSeccomp) -> Result<u32, SeccompError> {
    // libseccomp's probe of the kernel: level 3 has SECCOMP_FILTER_FLAG_LOG, level 4
    // SECCOMP_FILTER_FLAG_SPEC_ALLOW (seccomp_api_get(3)).
    let api = libseccomp::get_api();
    let Some(list) = profile.flags() else {
        // No `flags` at all (not even an empty list): runc asks for SPEC_ALLOW where the
        // kernel has it, so that a filter does not force the Speculative Store Bypass
        // mitigation on the container (kernels before 5.16 did with seccomp).
        return Ok(if api >= 4 { FLAG_SPEC_ALLOW } else { 0 });
    };
    let mut flags = 0;
    for (i, flag) in list.iter().enumerate() {
        let field = || format!("linux.seccomp.flags[{i}]");
        let need = |level: u32, name: &str| {
            if api >= level {
                Ok(())
            } else {
                Err(unsupported(
                    field(),
                    format!("{name}: this kernel does not support it (libseccomp API level {api}, {level} needed)"),
                ))
            }
        };
        match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => {
                need(3, "SECCOMP_FILTER_FLAG_LOG")?;
                flags |= FLAG_LOG;
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                need(4, "SECCOMP_FILTER_FLAG_SPEC_ALLOW")?;
                flags |= FLAG_SPEC_ALLOW;
            }
            // runc ignores TSYNC: init is single-threaded.
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => {}
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                return Err(unsupported(
                    field(),
                    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV only applies to a notify listener \
                     (the kernel refuses it without SECCOMP_FILTER_FLAG_NEW_LISTENER), and peapod \
                     does not support SCMP_ACT_NOTIFY",
                ))
            }
        }
    }
    Ok(flags)
}

/// How many compiled programs [`compile`] keeps per process.
const CACHE_ENTRIES: usize = 16;

/// Compiled programs by their profile's JSON, newest last: one shim serves a whole pod,
/// and containerd writes the same default profile into the spec of the pause container
/// and of every container of the pod (measured: ~16 ms to compile containerd's default
/// profile, three architectures, here; a lookup is microseconds).
static CACHE: std::sync::Mutex<Vec<(String, Program)>> = std::sync::Mutex::new(Vec::new());

/// Compiles `profile` into a [`Program`] with runc's semantics (see the module doc), or
/// returns the program this process compiled for an identical profile before (the result
/// depends only on the profile and on libseccomp and the kernel, which do not change
/// under a running process). Errors are not cached. [`compile_with`] without a store.
///
/// Errors: [`SeccompError`] naming the `linux.seccomp` field (`defaultAction`,
/// `flags[i]`, `architectures[i]`, `listenerPath`, `syscalls[i].action`,
/// `syscalls[i].errnoRet`, `syscalls[i].names[j]`, `syscalls[i].args[k].index`).
pub fn compile(profile: &LinuxSeccomp) -> Result<Program, SeccompError> {
    compile_with(profile, None)
}

/// [`compile`], looking in the store directory `store` ([`store`]) before running
/// libseccomp and storing what it compiled there: a new process (each pod's shim) then
/// compiles a profile only if no process of this boot and build did before. Errors as
/// [`compile`]; the store's own failures are logged and never fail the call.
pub fn compile_with(profile: &LinuxSeccomp, store: Option<&std::path::Path>) -> Result<Program, SeccompError> {
    let Ok(key) = serde_json::to_string(profile) else {
        return compile_uncached(profile);
    };
    let lock = || CACHE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, program)) = lock().iter().find(|(k, _)| *k == key) {
        return Ok(program.clone());
    }
    let program = match store.and_then(|dir| store::get(dir, &key)) {
        Some(program) => program,
        None => {
            let program = compile_uncached(profile)?;
            if let Some(dir) = store {
                store::put(dir, &key, &program);
            }
            program
        }
    };
    let mut cache = lock();
    if !cache.iter().any(|(k, _)| *k == key) {
        if cache.len() == CACHE_ENTRIES {
            cache.remove(0);
        }
        cache.push((key, program.clone()));
    }
    Ok(program)
}

/// [`compile`] without the cache: always runs libseccomp.
pub fn compile_uncached(profile: &LinuxSeccomp) -> Result<Program, SeccompError> {
    const F: &str = "linux.seccomp";
    if let Some(path) = profile.listener_path() {
        return Err(unsupported(
            format!("{F}.listenerPath"),
            format!(
                "{}: seccomp notify listeners are not supported by peapod (SCMP_ACT_NOTIFY is refused)",
                path.display()
            ),
        ));
    }
    let default = action(
        profile.default_action(),
        profile.default_errno_ret(),
        &format!("{F}.defaultAction"),
        &format!("{F}.defaultErrnoRet"),
    )?;
    let lib = |field: String, op: String| move |source| SeccompError::Libseccomp { field, op, source };
    let mut ctx = ScmpFilterContext::new(default).map_err(lib(format!("{F}.defaultAction"), "new filter".into()))?;

    for (i, arch) in profile.architectures().iter().flatten().enumerate() {
        let field = format!("{F}.architectures[{i}]");
        let name = arch.to_string();
        let scmp = ScmpArch::from_str(&name).map_err(lib(field.clone(), format!("architecture {name}")))?;
        // libseccomp refuses an architecture already present (EEXIST), the native one
        // included; libseccomp-golang, and so runc, ignores that.
        if !ctx
            .is_arch_present(scmp)
            .map_err(lib(field.clone(), format!("query architecture {name}")))?
        {
            ctx.add_arch(scmp)
                .map_err(lib(field, format!("add architecture {name}")))?;
        }
    }

    let flags = filter_flags(profile)?;

    let syscalls = profile.syscalls().as_deref().unwrap_or_default();
    if syscalls.len() > 32 {
        // As runc: a binary tree of syscall numbers instead of a linear scan; an old
        // libseccomp without it still gives a correct filter.
        if let Err(e) = ctx.set_ctl_optimize(2) {
            tracing::debug!(error = %e, "seccomp binary tree optimisation not available");
        }
    }

    for (i, call) in syscalls.iter().enumerate() {
        let field = format!("{F}.syscalls[{i}]");
        let act = action(
            call.action(),
            call.errno_ret(),
            &format!("{field}.action"),
            &format!("{field}.errnoRet"),
        )?;
        let args = call.args().as_deref().unwrap_or_default();
        let mut per_index = [0usize; 6];
        let mut conditions = Vec::with_capacity(args.len());
        for (k, arg) in args.iter().enumerate() {
            let index = arg.index();
            let slot = per_index.get_mut(index).ok_or_else(|| {
                unsupported(
                    format!("{field}.args[{k}].index"),
                    format!("{index}: system calls have six arguments, 0 to 5"),
                )
            })?;
            *slot += 1;
            let index = u32::try_from(index).expect("at most 5");
            conditions.push(condition(index, arg.op(), arg.value(), arg.value_two()));
        }
        // libseccomp refuses a rule whose action is the default one; runc skips it.
        if act == default {
            continue;
        }
        let or_each = per_index.iter().any(|&n| n > 1);
        for (j, name) in call.names().iter().enumerate() {
            let name_field = format!("{field}.names[{j}]");
            if name.is_empty() {
                return Err(unsupported(name_field, "an empty string is not a system call"));
            }
            let Ok(nr) = ScmpSyscall::from_name(name) else {
                tracing::debug!(syscall = %name, field = %name_field, "unknown seccomp syscall ignored");
                continue;
            };
            let op = format!("add rule for {name}");
            if conditions.is_empty() {
                ctx.add_rule(act, nr).map_err(lib(name_field, op))?;
            } else if or_each {
                // Several conditions on one argument can never all hold at once: runc
                // makes each its own rule, so any one of them matches.
                for c in &conditions {
                    ctx.add_rule_conditional(act, nr, std::slice::from_ref(c))
                        .map_err(lib(name_field.clone(), op.clone()))?;
                }
            } else {
                ctx.add_rule_conditional(act, nr, &conditions)
                    .map_err(lib(name_field, op))?;
            }
        }
    }

    let instructions = export(&ctx)?;
    // seccomp(2) refuses a longer program with EINVAL; refused here, before anything
    // exists, instead of failing init's load.
    if instructions.len() > MAX_INSTRUCTIONS {
        return Err(unsupported(
            format!("{F}.syscalls"),
            format!(
                "the compiled filter has {} instructions; the kernel loads at most {MAX_INSTRUCTIONS} \
                 (BPF_MAXINSNS)",
                instructions.len()
            ),
        ));
    }
    Ok(Program {
        instructions: instructions.into(),
        flags,
    })
}

/// The filter's BPF, through a memfd (libseccomp 2.5 exports to an fd only; a pipe could
/// fill up with a large program).
fn export(ctx: &ScmpFilterContext) -> Result<Vec<SockFilter>, SeccompError> {
    let err = |op| {
        move |e: &dyn std::fmt::Display| SeccompError::Export {
            op,
            reason: e.to_string(),
        }
    };
    let fd = nix::sys::memfd::memfd_create(c"peapod-seccomp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(|e| err("memfd_create")(&e))?;
    ctx.export_bpf(&fd).map_err(|e| err("seccomp_export_bpf")(&e))?;
    let mut file = std::fs::File::from(fd);
    file.seek(SeekFrom::Start(0)).map_err(|e| err("seek")(&e))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| err("read")(&e))?;
    if bytes.is_empty() || !bytes.len().is_multiple_of(SockFilter::SIZE) {
        return Err(SeccompError::Export {
            op: "read",
            reason: format!("{} bytes is not a whole number of instructions", bytes.len()),
        });
    }
    Ok(bytes
        .chunks_exact(SockFilter::SIZE)
        .map(|c| SockFilter::from_bytes(c.try_into().expect("chunks of 8")))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{Arch, LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSyscallBuilder};

    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_LOG: u32 = 0x7ffc_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    const RET_KILL_THREAD: u32 = 0;
    /// `AUDIT_ARCH_X86_64`, `AUDIT_ARCH_I386`.
    const X86_64: u32 = 0xc000_003e;
    const I386: u32 = 0x4000_0003;

    fn nr(name: &str) -> u32 {
        let raw = ScmpSyscall::from_name(name).unwrap().as_raw_syscall();
        u32::try_from(raw).unwrap()
    }

    /// Runs `prog` the way the kernel's classic-BPF interpreter does on `struct
    /// seccomp_data` (nr, arch, ip, args[6]; little endian), for the opcodes libseccomp
    /// emits; panics on any other, so a test never passes on an opcode it skipped.
    fn run(prog: &Program, arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = Vec::with_capacity(64);
        data.extend_from_slice(&nr.to_le_bytes());
        data.extend_from_slice(&arch.to_le_bytes());
        data.extend_from_slice(&0u64.to_le_bytes());
        for a in args {
            data.extend_from_slice(&a.to_le_bytes());
        }
        let word = |off: u32| {
            let o = off as usize;
            u32::from_le_bytes(data[o..o + 4].try_into().unwrap())
        };
        let (mut a, mut x, mut mem) = (0u32, 0u32, [0u32; 16]);
        let insns = prog.instructions();
        let mut pc = 0usize;
        loop {
            let i = insns[pc];
            pc += 1;
            let jump = |cond: bool| if cond { usize::from(i.jt) } else { usize::from(i.jf) };
            match i.code {
                0x20 => a = word(i.k),            // ld  [k]
                0x00 => a = i.k,                  // ld  #k
                0x60 => a = mem[i.k as usize],    // ld  M[k]
                0x61 => x = mem[i.k as usize],    // ldx M[k]
                0x02 => mem[i.k as usize] = a,    // st  M[k]
                0x03 => mem[i.k as usize] = x,    // stx M[k]
                0x07 => x = a,                    // tax
                0x87 => a = x,                    // txa
                0x54 => a &= i.k,                 // and #k
                0x05 => pc += i.k as usize,       // ja
                0x15 => pc += jump(a == i.k),     // jeq #k
                0x25 => pc += jump(a > i.k),      // jgt #k
                0x35 => pc += jump(a >= i.k),     // jge #k
                0x45 => pc += jump(a & i.k != 0), // jset #k
                0x06 => return i.k,               // ret #k
                0x16 => return a,                 // ret a
                other => panic!("BPF opcode {other:#x} at {} not interpreted", pc - 1),
            }
        }
    }

    fn syscall(names: &[&str], action: LinuxSeccompAction) -> LinuxSyscallBuilder {
        LinuxSyscallBuilder::default()
            .names(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .action(action)
    }

    fn profile(default: LinuxSeccompAction, calls: Vec<oci_spec::runtime::LinuxSyscall>) -> LinuxSeccompBuilder {
        LinuxSeccompBuilder::default().default_action(default).syscalls(calls)
    }

    fn arg(index: usize, op: LinuxSeccompOperator, value: u64) -> oci_spec::runtime::LinuxSeccompArg {
        LinuxSeccompArgBuilder::default()
            .index(index)
            .op(op)
            .value(value)
            .build()
            .unwrap()
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn errno_rules_return_their_errno_and_the_default_applies_elsewhere() {
        let p = profile(
            LinuxSeccompAction::ScmpActAllow,
            vec![
                syscall(&["mkdir", "mkdirat"], LinuxSeccompAction::ScmpActErrno)
                    .errno_ret(122u32)
                    .build()
                    .unwrap(),
                syscall(&["sethostname"], LinuxSeccompAction::ScmpActErrno)
                    .build()
                    .unwrap(),
                syscall(&["getcwd"], LinuxSeccompAction::ScmpActLog).build().unwrap(),
            ],
        )
        .build()
        .unwrap();
        let prog = compile(&p).unwrap();
        // No `flags`: SPEC_ALLOW, as runc (every kernel this runs on has it).
        assert_eq!(prog.flags(), FLAG_SPEC_ALLOW);
        assert_eq!(run(&prog, X86_64, nr("mkdir"), [0; 6]), RET_ERRNO | 122);
        assert_eq!(run(&prog, X86_64, nr("mkdirat"), [0; 6]), RET_ERRNO | 122);
        // SCMP_ACT_ERRNO without errnoRet is EPERM, as runc.
        assert_eq!(run(&prog, X86_64, nr("sethostname"), [0; 6]), RET_ERRNO | 1);
        assert_eq!(run(&prog, X86_64, nr("getcwd"), [0; 6]), RET_LOG);
        assert_eq!(run(&prog, X86_64, nr("getpid"), [0; 6]), RET_ALLOW);
        // Another architecture than the ones in the filter: libseccomp's bad-arch action.
        assert_eq!(run(&prog, I386, 20, [0; 6]), RET_KILL_THREAD);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn default_errno_ret_and_extra_architectures_apply() {
        let p = profile(
            LinuxSeccompAction::ScmpActErrno,
            vec![syscall(&["getpid"], LinuxSeccompAction::ScmpActAllow).build().unwrap()],
        )
        .default_errno_ret(38u32)
        .architectures(vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32])
        .build()
        .unwrap();
        let prog = compile(&p).unwrap();
        assert_eq!(run(&prog, X86_64, nr("getpid"), [0; 6]), RET_ALLOW);
        assert_eq!(run(&prog, X86_64, nr("mkdir"), [0; 6]), RET_ERRNO | 38);
        // getpid is 20 on i386: the added architecture has the rule too.
        assert_eq!(run(&prog, I386, 20, [0; 6]), RET_ALLOW);
        assert_eq!(run(&prog, I386, 39, [0; 6]), RET_ERRNO | 38);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn conditions_on_one_argument_are_ored_and_on_several_anded() {
        use LinuxSeccompOperator::*;
        let errno = LinuxSeccompAction::ScmpActErrno;
        let p = profile(
            LinuxSeccompAction::ScmpActAllow,
            vec![
                // Two conditions on argument 0: either blocks (runc's matchCall).
                syscall(&["personality"], errno)
                    .args(vec![arg(0, ScmpCmpEq, 8), arg(0, ScmpCmpEq, 0x0040_0008)])
                    .build()
                    .unwrap(),
                // Conditions on arguments 0 and 1: both must hold.
                syscall(&["kill"], errno)
                    .args(vec![arg(0, ScmpCmpEq, 1), arg(1, ScmpCmpEq, 9)])
                    .build()
                    .unwrap(),
            ],
        )
        .build()
        .unwrap();
        let prog = compile(&p).unwrap();
        let personality = |v| run(&prog, X86_64, nr("personality"), [v, 0, 0, 0, 0, 0]);
        assert_eq!(personality(8), RET_ERRNO | 1);
        assert_eq!(personality(0x0040_0008), RET_ERRNO | 1);
        assert_eq!(personality(0), RET_ALLOW);
        let kill = |pid, sig| run(&prog, X86_64, nr("kill"), [pid, sig, 0, 0, 0, 0]);
        assert_eq!(kill(1, 9), RET_ERRNO | 1);
        assert_eq!(kill(1, 15), RET_ALLOW);
        assert_eq!(kill(2, 9), RET_ALLOW);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_operator_compares_as_runc_passes_it() {
        use LinuxSeccompOperator::*;
        // (operator, value, valueTwo, [(argument, blocked)])
        type Case = (LinuxSeccompOperator, u64, Option<u64>, &'static [(u64, bool)]);
        let cases: [Case; 7] = [
            (ScmpCmpNe, 5, None, &[(5, false), (6, true)]),
            (ScmpCmpLt, 5, None, &[(4, true), (5, false)]),
            (ScmpCmpLe, 5, None, &[(5, true), (6, false)]),
            (ScmpCmpEq, 1 << 40, None, &[(1 << 40, true), (1, false)]),
            (ScmpCmpGe, 5, None, &[(5, true), (4, false)]),
            (ScmpCmpGt, 5, None, &[(6, true), (5, false)]),
            // value is the mask, valueTwo the datum.
            (
                ScmpCmpMaskedEq,
                0xff00,
                Some(0x1200),
                &[(0x12ab, true), (0x13ab, false)],
            ),
        ];
        for (op, value, value_two, checks) in cases {
            let mut a = LinuxSeccompArgBuilder::default().index(2usize).op(op).value(value);
            if let Some(v2) = value_two {
                a = a.value_two(v2);
            }
            let p = profile(
                LinuxSeccompAction::ScmpActAllow,
                vec![syscall(&["ioctl"], LinuxSeccompAction::ScmpActErrno)
                    .args(vec![a.build().unwrap()])
                    .build()
                    .unwrap()],
            )
            .build()
            .unwrap();
            let prog = compile(&p).unwrap();
            for &(got, blocked) in checks {
                let ret = run(&prog, X86_64, nr("ioctl"), [0, 0, got, 0, 0, 0]);
                assert_eq!(
                    ret == (RET_ERRNO | 1),
                    blocked,
                    "{op:?} {value:#x} {value_two:?} on {got:#x}: {ret:#x}"
                );
            }
        }
    }

    #[test]
    fn rules_with_the_default_action_and_unknown_syscalls_are_skipped() {
        let only_mkdir = compile(
            &profile(
                LinuxSeccompAction::ScmpActErrno,
                vec![syscall(&["mkdir"], LinuxSeccompAction::ScmpActAllow).build().unwrap()],
            )
            .build()
            .unwrap(),
        )
        .unwrap();
        let with_extras = compile(
            &profile(
                LinuxSeccompAction::ScmpActErrno,
                vec![
                    // Same action as the default (EPERM): libseccomp would refuse it.
                    syscall(&["getpid"], LinuxSeccompAction::ScmpActErrno)
                        .errno_ret(1u32)
                        .build()
                        .unwrap(),
                    syscall(&["no_such_syscall_at_all", "mkdir"], LinuxSeccompAction::ScmpActAllow)
                        .build()
                        .unwrap(),
                ],
            )
            .build()
            .unwrap(),
        )
        .unwrap();
        assert_eq!(only_mkdir, with_extras);
    }

    #[test]
    fn notify_and_listener_path_are_refused_by_field() {
        let notify = LinuxSeccompAction::ScmpActNotify;
        let errno = LinuxSeccompAction::ScmpActErrno;
        let p = profile(
            LinuxSeccompAction::ScmpActAllow,
            vec![
                syscall(&["mkdir"], errno).build().unwrap(),
                syscall(&["getpid"], notify).build().unwrap(),
            ],
        )
        .build()
        .unwrap();
        let e = compile(&p).unwrap_err();
        assert_eq!(e.field(), "linux.seccomp.syscalls[1].action");
        assert!(e.to_string().contains("SCMP_ACT_NOTIFY"), "{e}");
        let e = compile(&profile(notify, vec![]).build().unwrap()).unwrap_err();
        assert_eq!(e.field(), "linux.seccomp.defaultAction");
        let p = profile(LinuxSeccompAction::ScmpActAllow, vec![])
            .listener_path("/run/listener.sock")
            .build()
            .unwrap();
        assert_eq!(compile(&p).unwrap_err().field(), "linux.seccomp.listenerPath");
    }

    #[test]
    fn flags_are_passed_and_wait_killable_recv_is_refused_by_field() {
        use LinuxSeccompFilterFlag::*;
        let with = |flags: Vec<LinuxSeccompFilterFlag>| {
            compile(
                &profile(LinuxSeccompAction::ScmpActAllow, vec![])
                    .flags(flags)
                    .build()
                    .unwrap(),
            )
        };
        let prog = with(vec![
            SeccompFilterFlagLog,
            SeccompFilterFlagSpecAllow,
            SeccompFilterFlagTsync,
        ])
        .unwrap();
        assert_eq!(prog.flags(), FLAG_LOG | FLAG_SPEC_ALLOW);
        let e = with(vec![SeccompFilterFlagLog, SeccompFilterFlagWaitKillableRecv]).unwrap_err();
        assert_eq!(e.field(), "linux.seccomp.flags[1]");
        // An empty list is no flag at all (runc adds SPEC_ALLOW only when `flags` is absent).
        assert_eq!(with(vec![]).unwrap().flags(), 0);
    }

    #[test]
    fn bad_argument_index_and_errno_are_refused_by_field() {
        let p = profile(
            LinuxSeccompAction::ScmpActAllow,
            vec![syscall(&["personality"], LinuxSeccompAction::ScmpActErrno)
                .args(vec![
                    arg(0, LinuxSeccompOperator::ScmpCmpEq, 1),
                    arg(6, LinuxSeccompOperator::ScmpCmpEq, 1),
                ])
                .build()
                .unwrap()],
        )
        .build()
        .unwrap();
        assert_eq!(
            compile(&p).unwrap_err().field(),
            "linux.seccomp.syscalls[0].args[1].index"
        );
        let p = profile(
            LinuxSeccompAction::ScmpActAllow,
            vec![syscall(&["mkdir"], LinuxSeccompAction::ScmpActErrno)
                .errno_ret(70_000u32)
                .build()
                .unwrap()],
        )
        .build()
        .unwrap();
        assert_eq!(compile(&p).unwrap_err().field(), "linux.seccomp.syscalls[0].errnoRet");
    }

    #[test]
    fn programs_the_kernel_would_refuse_as_too_long_are_refused_by_field() {
        use LinuxSeccompOperator::*;
        // Every syscall, each with three AND'ed 64-bit conditions of its own values (shared
        // ones libseccomp would merge): over 4096 instructions.
        let mut calls = Vec::new();
        for nr in 0..1024 {
            if let Ok(name) = ScmpSyscall::from_raw_syscall(nr).get_name() {
                let v = u64::try_from(nr).unwrap();
                calls.push(
                    syscall(&[&name], LinuxSeccompAction::ScmpActErrno)
                        .args(vec![
                            arg(0, ScmpCmpGt, (v << 33) + 1),
                            arg(1, ScmpCmpNe, v + 7),
                            arg(2, ScmpCmpEq, (v << 40) | 5),
                        ])
                        .build()
                        .unwrap(),
                );
            }
        }
        let e = match compile(&profile(LinuxSeccompAction::ScmpActAllow, calls).build().unwrap()) {
            Ok(p) => panic!("compiled to {} instructions", p.instructions().len()),
            Err(e) => e,
        };
        assert_eq!(e.field(), "linux.seccomp.syscalls");
        assert!(e.to_string().contains("at most 4096"), "{e}");
    }

    #[test]
    fn the_cache_returns_what_a_fresh_compile_gives_and_keys_on_the_whole_profile() {
        let errno = |e: u32| {
            profile(
                LinuxSeccompAction::ScmpActAllow,
                vec![syscall(&["mkdir"], LinuxSeccompAction::ScmpActErrno)
                    .errno_ret(e)
                    .build()
                    .unwrap()],
            )
            .build()
            .unwrap()
        };
        let first = compile(&errno(121)).unwrap();
        assert_eq!(compile(&errno(121)).unwrap(), first);
        assert_eq!(compile_uncached(&errno(121)).unwrap(), first);
        // A profile differing in one value is another entry.
        let other = compile(&errno(122)).unwrap();
        assert_ne!(other, first);
        assert_eq!(other, compile_uncached(&errno(122)).unwrap());
        // Errors are never cached: the same bad profile fails again.
        let bad = profile(LinuxSeccompAction::ScmpActNotify, vec![]).build().unwrap();
        assert!(compile(&bad).is_err() && compile(&bad).is_err());
    }

    #[test]
    fn programs_survive_the_channel_encoding() {
        let p = profile(
            LinuxSeccompAction::ScmpActErrno,
            vec![syscall(&["read", "write"], LinuxSeccompAction::ScmpActAllow)
                .build()
                .unwrap()],
        )
        .flags(vec![LinuxSeccompFilterFlag::SeccompFilterFlagLog])
        .build()
        .unwrap();
        let prog = compile(&p).unwrap();
        let json = serde_json::to_string(&prog).unwrap();
        assert!(json.contains("\"bpf\":\"") && json.contains("\"flags\":2"), "{json}");
        let back: Program = serde_json::from_str(&json).unwrap();
        assert_eq!(back, prog);
        assert!(serde_json::from_str::<Program>(r#"{"flags":0,"bpf":"0600"}"#).is_err());
        assert!(serde_json::from_str::<Program>(r#"{"flags":0,"bpf":"zz00000000000000"}"#).is_err());
    }
}
