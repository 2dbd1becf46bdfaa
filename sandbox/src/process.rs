//! The container process's own settings (OCI runtime spec, `process`): rlimits,
//! oom_score_adj, user and groups, capabilities, `noNewPrivileges`, umask, cwd, env, and
//! the final `execve`.
//!
//! Order (runc's `finalizeNamespace`, then `Init`): rlimits while we still hold
//! CAP_SYS_RESOURCE; drop the bounding set while we still hold CAP_SETPCAP; switch
//! groups and uid with `PR_SET_KEEPCAPS` so the permitted set survives; then set the
//! effective, permitted, inheritable and ambient sets; `no_new_privs` last before exec.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use caps::{CapSet, CapsHashSet};
use nix::sys::resource::setrlimit;
use nix::sys::stat::{umask, Mode};
use nix::unistd::{chdir, setgroups, setresgid, setresuid, Gid, Uid};
use oci_spec::runtime::{Capabilities, PosixRlimitType, Process};

// Which rlimits exist is checked with the spec; re-exported where they are applied.
pub use crate::spec::rlimit_resource;
use crate::spec::DEFAULT_PATH;
use crate::sys;

/// A process setting that failed in container init or an exec'd process.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// `setrlimit(2)` failed.
    #[error("process.rlimits {typ:?} (soft {soft}, hard {hard}): {source}")]
    Rlimit {
        /// Which limit.
        typ: PosixRlimitType,
        /// Soft limit.
        soft: u64,
        /// Hard limit.
        hard: u64,
        /// Cause.
        #[source]
        source: nix::Error,
    },
    /// Writing `/proc/self/oom_score_adj` failed.
    #[error("process.oomScoreAdj {value}: {hint}: {source}")]
    OomScoreAdj {
        /// The value asked for.
        value: i32,
        /// What the errno means here.
        hint: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Changing uid, gid or supplementary groups failed.
    #[error("process.user: {op}: {source}")]
    User {
        /// The call, e.g. `setresuid(1000)`.
        op: String,
        /// Cause.
        #[source]
        source: nix::Error,
    },
    /// A capability set could not be applied.
    #[error("process.capabilities.{set}: {source}")]
    Capabilities {
        /// `bounding`, `effective`, `permitted`, `inheritable` or `ambient`.
        set: &'static str,
        /// Cause.
        #[source]
        source: caps::errors::CapsError,
    },
    /// `prctl(PR_SET_NO_NEW_PRIVS)` failed.
    #[error("process.noNewPrivileges: {0}")]
    NoNewPrivs(#[source] nix::Error),
    /// `chdir` into `process.cwd` failed.
    #[error("process.cwd {cwd}: {source}")]
    Cwd {
        /// The directory.
        cwd: PathBuf,
        /// Cause.
        #[source]
        source: nix::Error,
    },
    /// `process.args[0]` is not an executable file in the container.
    #[error("process.args[0]: executable file {program:?} not found in $PATH ({path})")]
    NotFound {
        /// The program as given.
        program: String,
        /// The PATH searched.
        path: String,
    },
    /// `process.args[0]` names a path that is missing or not executable.
    #[error("process.args[0]: {program}: {source}")]
    NotExecutable {
        /// The path as given.
        program: PathBuf,
        /// Cause (ENOENT, EACCES).
        #[source]
        source: nix::Error,
    },
    /// `execve(2)` failed.
    #[error("process.args[0]: exec {program}: {source}")]
    Exec {
        /// The resolved program path.
        program: PathBuf,
        /// Cause.
        #[source]
        source: nix::Error,
    },
    /// An argument or environment string contains a NUL byte.
    #[error("process.{field}: contains a NUL byte")]
    Nul {
        /// `args` or `env`.
        field: &'static str,
    },
}

type Result<T> = std::result::Result<T, ProcessError>;

/// Writes `process.oomScoreAdj` for the calling process (inherited by its children).
///
/// Errors: EACCES when lowering below the current value without CAP_SYS_RESOURCE in the
/// initial user namespace (seen on some VMs even as root); the message says so, and that
/// containerd's CRI option `restrict_oom_score_adj = true` avoids asking for it.
pub fn set_oom_score_adj(value: i32) -> Result<()> {
    std::fs::write("/proc/self/oom_score_adj", value.to_string()).map_err(|source| {
        let hint = if source.raw_os_error() == Some(libc::EACCES) {
            "the kernel refused to lower oom_score_adj (EACCES; needs CAP_SYS_RESOURCE in the \
             host user namespace; with containerd set restrict_oom_score_adj = true)"
        } else {
            "cannot write /proc/self/oom_score_adj"
        };
        ProcessError::OomScoreAdj { value, hint, source }
    })
}

/// Applies rlimits, user, capabilities and no_new_privs for `process`, in the module's
/// order. The process keeps running as the caller; [`exec`] replaces it.
pub fn apply(process: &Process) -> Result<()> {
    for rl in process.rlimits().iter().flatten() {
        let resource = rlimit_resource(rl.typ()).expect("checked by spec::validate_process");
        setrlimit(resource, rl.soft(), rl.hard()).map_err(|source| ProcessError::Rlimit {
            typ: rl.typ(),
            soft: rl.soft(),
            hard: rl.hard(),
            source,
        })?;
    }

    let wanted = process.capabilities().as_ref();
    let set_of = |f: fn(&oci_spec::runtime::LinuxCapabilities) -> &Option<Capabilities>| -> CapsHashSet {
        wanted.and_then(|c| f(c).as_ref()).map(to_caps).unwrap_or_default()
    };
    let cap_err = |set| move |source| ProcessError::Capabilities { set, source };
    let bounding = set_of(|c| c.bounding());
    for cap in caps::all() {
        if !bounding.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap).map_err(cap_err("bounding"))?;
        }
    }

    let user = process.user();
    let uid = Uid::from_raw(user.uid());
    let gid = Gid::from_raw(user.gid());
    let user_err = |op: String| move |source| ProcessError::User { op, source };
    nix::sys::prctl::set_keepcaps(true).map_err(user_err("prctl(PR_SET_KEEPCAPS)".into()))?;
    let groups: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    setgroups(&groups).map_err(user_err(format!("setgroups({groups:?})")))?;
    setresgid(gid, gid, gid).map_err(user_err(format!("setresgid({gid})")))?;
    setresuid(uid, uid, uid).map_err(user_err(format!("setresuid({uid})")))?;
    nix::sys::prctl::set_keepcaps(false).map_err(user_err("prctl(PR_SET_KEEPCAPS)".into()))?;

    // Effective first: it must stay within the permitted set at every capset(2).
    caps::set(None, CapSet::Effective, &set_of(|c| c.effective())).map_err(cap_err("effective"))?;
    caps::set(None, CapSet::Permitted, &set_of(|c| c.permitted())).map_err(cap_err("permitted"))?;
    caps::set(None, CapSet::Inheritable, &set_of(|c| c.inheritable())).map_err(cap_err("inheritable"))?;
    caps::set(None, CapSet::Ambient, &set_of(|c| c.ambient())).map_err(cap_err("ambient"))?;

    // The spec's umask, else runc's 0022 (`finalizeRootfs`), not whatever the runtime has.
    let mask = user.umask().unwrap_or(crate::hostdir::UMASK);
    umask(Mode::from_bits_truncate(mask & 0o777));
    if process.no_new_privileges() == Some(true) {
        nix::sys::prctl::set_no_new_privs().map_err(ProcessError::NoNewPrivs)?;
    }
    Ok(())
}

fn to_caps(set: &Capabilities) -> CapsHashSet {
    // oci-spec prints AUDIT_WRITE for CAP_AUDIT_WRITE; caps the kernel has not heard of
    // are skipped, as runc does with a warning.
    set.iter()
        .filter_map(|c| format!("CAP_{c}").parse::<caps::Capability>().ok())
        .collect::<HashSet<_>>()
}

/// Changes into `process.cwd` (inside the container's root, after pivot_root).
pub fn enter_cwd(process: &Process) -> Result<()> {
    chdir(process.cwd()).map_err(|source| ProcessError::Cwd {
        cwd: process.cwd().clone(),
        source,
    })
}

/// Resolves `process.args[0]` with the container's `PATH` (from `process.env`, else the
/// OCI default `/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`).
pub fn find_program(process: &Process) -> Result<PathBuf> {
    let program = process
        .args()
        .as_ref()
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or_default();
    if program.contains('/') {
        let program = PathBuf::from(program);
        return match nix::unistd::access(&program, nix::unistd::AccessFlags::X_OK) {
            Ok(()) => Ok(program),
            Err(source) => Err(ProcessError::NotExecutable { program, source }),
        };
    }
    let path = process
        .env()
        .iter()
        .flatten()
        .find_map(|v| v.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(&program);
        if nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_ok() && candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(ProcessError::NotFound { program, path })
}

/// Builds the `execve` arrays for `program` with `process.args` and `process.env`, ahead
/// of [`exec`], so that nothing allocates between loading a seccomp filter and `execve`.
///
/// Errors: [`ProcessError::Nul`] for a string holding a NUL byte.
pub fn prepare_exec(process: &Process, program: &Path) -> Result<sys::ExecArgs> {
    let to_c = |field, items: &[String]| -> Result<Vec<CString>> {
        items
            .iter()
            .map(|s| CString::new(s.as_bytes()).map_err(|_| ProcessError::Nul { field }))
            .collect()
    };
    let args = to_c("args", process.args().as_deref().unwrap_or_default())?;
    let env = to_c("env", process.env().as_deref().unwrap_or_default())?;
    let prog = CString::new(program.as_os_str().as_bytes()).map_err(|_| ProcessError::Nul { field: "args" })?;
    Ok(sys::ExecArgs::new(prog, args, env))
}

/// Replaces the calling process with the prepared program (see [`prepare_exec`]).
/// Returns only on failure; `program` names it in the error.
pub fn exec(prepared: &sys::ExecArgs, program: &Path) -> ProcessError {
    let source = prepared.execve();
    ProcessError::Exec {
        program: program.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{Capability, ProcessBuilder};

    #[test]
    fn oci_capability_names_map_to_kernel_caps() {
        let set: Capabilities = [Capability::NetBindService, Capability::SysAdmin].into();
        let mapped = to_caps(&set);
        assert!(mapped.contains(&caps::Capability::CAP_NET_BIND_SERVICE));
        assert!(mapped.contains(&caps::Capability::CAP_SYS_ADMIN));
        assert_eq!(mapped.len(), 2);
    }

    #[test]
    fn program_lookup_uses_the_container_path() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("tool");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let p = ProcessBuilder::default()
            .args(vec!["tool".to_string()])
            .env(vec![format!("PATH=/nonexistent:{}", dir.path().display())])
            .build()
            .unwrap();
        assert_eq!(find_program(&p).unwrap(), bin);
        let p = ProcessBuilder::default()
            .args(vec!["nope".to_string()])
            .env(vec!["PATH=/nonexistent".to_string()])
            .build()
            .unwrap();
        assert!(matches!(find_program(&p), Err(ProcessError::NotFound { .. })));
    }
}
