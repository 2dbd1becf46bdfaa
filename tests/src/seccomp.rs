//! seccomp profiles (OCI `linux.seccomp`) for the host and escape suites, and what the
//! busybox applets print when the filter answers.
//!
//! Each profile makes one observable difference from inside a container: an errno whose
//! text no unfiltered run prints (EDQUOT from `unshare`, ETXTBSY from `mkdir`), or a
//! personality value that only the filter refuses.

use anyhow::{Context, Result};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscall,
    LinuxSyscallBuilder, Spec,
};

/// EDQUOT: the errno the "chosen errno" profiles return; `strerror` text below.
pub const EDQUOT: u32 = 122;
/// What busybox prints for [`EDQUOT`].
pub const EDQUOT_TEXT: &str = "Disk quota exceeded";
/// ETXTBSY: the `defaultErrnoRet` of [`all_but`].
pub const ETXTBSY: u32 = 26;
/// What busybox prints for [`ETXTBSY`].
pub const ETXTBSY_TEXT: &str = "Text file busy";
/// `PER_LINUX32`, what busybox `linux32` passes to personality(2) (`linux64` passes 0).
pub const PER_LINUX32: u64 = 8;

fn rule(names: &[&str], action: LinuxSeccompAction) -> LinuxSyscallBuilder {
    LinuxSyscallBuilder::default()
        .names(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .action(action)
}

fn allow_by_default(rules: Vec<LinuxSyscall>) -> Result<LinuxSeccomp> {
    Ok(LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .syscalls(rules)
        .build()?)
}

/// Everything allowed but `names`, which fail with `errno`.
pub fn errno_for(names: &[&str], errno: u32) -> Result<LinuxSeccomp> {
    allow_by_default(vec![rule(names, LinuxSeccompAction::ScmpActErrno)
        .errno_ret(errno)
        .build()?])
}

/// Everything allowed but `personality(value)` (argument 0 equal to `value`), which
/// fails with EPERM; any other personality value is allowed.
pub fn personality_refused(value: u64) -> Result<LinuxSeccomp> {
    let arg = LinuxSeccompArgBuilder::default()
        .index(0usize)
        .op(LinuxSeccompOperator::ScmpCmpEq)
        .value(value)
        .build()?;
    allow_by_default(vec![rule(&["personality"], LinuxSeccompAction::ScmpActErrno)
        .args(vec![arg])
        .build()?])
}

/// Everything allowed; `names` logged (`SCMP_ACT_LOG`), not blocked.
pub fn log_only(names: &[&str]) -> Result<LinuxSeccomp> {
    allow_by_default(vec![rule(names, LinuxSeccompAction::ScmpActLog).build()?])
}

/// `defaultAction: SCMP_ACT_ERRNO` with `defaultErrnoRet: ETXTBSY`, and an allow rule
/// naming every syscall libseccomp knows on this architecture except `denied`: only the
/// default answers `denied`, so the errno seen is `defaultErrnoRet`'s.
pub fn all_but(denied: &[&str]) -> Result<LinuxSeccomp> {
    let mut names = Vec::new();
    for nr in 0..1024 {
        let call = libseccomp::ScmpSyscall::from_raw_syscall(nr);
        if let Ok(name) = call.get_name() {
            if !denied.contains(&name.as_str()) {
                names.push(name);
            }
        }
    }
    anyhow::ensure!(names.len() > 300, "libseccomp knows only {} syscalls", names.len());
    let allow = LinuxSyscallBuilder::default()
        .names(names)
        .action(LinuxSeccompAction::ScmpActAllow)
        .build()?;
    Ok(LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(ETXTBSY)
        .syscalls(vec![allow])
        .build()?)
}

/// Sets `linux.seccomp` of `spec`.
pub fn set(spec: &mut Spec, profile: LinuxSeccomp) -> Result<()> {
    spec.linux_mut()
        .as_mut()
        .context("spec has no linux section")?
        .set_seccomp(Some(profile));
    Ok(())
}

/// The `config.json` of `spec` with `linux.seccomp` replaced by raw JSON (for values no
/// oci-spec type can hold: an unknown action or operator).
pub fn with_raw_profile(spec: &Spec, profile: serde_json::Value) -> Result<Vec<u8>> {
    let mut json = serde_json::to_value(spec)?;
    json["linux"]["seccomp"] = profile;
    Ok(serde_json::to_vec_pretty(&json)?)
}
