//! AppArmor confinement of the container's program (OCI runtime spec, config.md
//! "Process": `apparmorProfile`), applied as runc applies it
//! (libcontainer/apparmor/apparmor_linux.go, libapparmor's `aa_change_onexec`).
//!
//! The profile is not entered at once: container init writes `exec <profile>` to its own
//! exec attribute, `/proc/thread-self/attr/apparmor/exec` (the per-LSM file, Linux 5.8+),
//! or `/proc/thread-self/attr/exec` on kernels without it, and the kernel moves the task
//! into the profile at its next `execve`, the program's. Until then init keeps the
//! runtime's own confinement (unconfined on a host), which setting up the container needs.
//!
//! Order, as runc's: for container init (standard_init_linux.go) after the root filesystem
//! is finished (so `/proc` is the container's own, mounted by us, never a path the image
//! controls: CVE-2019-16884) and before `no_new_privs`, the user switch and the capability
//! drop ([`crate::process::apply`]); AppArmor limits which profile transitions a task
//! under `no_new_privs` may ask for. For an exec'd process (setns_init_linux.go) after
//! them. The attribute file is checked to be on procfs before the write, as runc checks
//! its proc handle.
//!
//! Which profile: the process's own; an exec'd process without one gets the container's
//! (runc's `newInitConfig`), see [`crate::Container::exec`]. An empty string is none.
//!
//! A host without AppArmor: runc still writes the attribute and fails the create on the
//! kernel's EINVAL; peapod refuses the spec before anything exists
//! ([`crate::spec::lsm`], which also has the SELinux rules). The write's errors are still
//! explained here: ENOENT for a profile the kernel has not loaded.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use nix::sys::statfs::{fstatfs, PROC_SUPER_MAGIC};

/// Applying `process.apparmorProfile` failed in container init or an exec'd process.
#[derive(Debug, thiserror::Error)]
pub enum LsmError {
    /// The exec attribute could not be opened.
    #[error("process.apparmorProfile {profile:?}: open {path}: {source}")]
    Open {
        /// The profile asked for.
        profile: String,
        /// The attribute file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The attribute file is not on procfs (something is mounted over `/proc`).
    #[error("process.apparmorProfile {profile:?}: {path} is not on procfs (filesystem type {fs_type:#x})")]
    NotProcfs {
        /// The profile asked for.
        profile: String,
        /// The attribute file.
        path: PathBuf,
        /// `f_type` of the filesystem found there.
        fs_type: i64,
    },
    /// `fstatfs` on the attribute file failed.
    #[error("process.apparmorProfile {profile:?}: fstatfs {path}: {source}")]
    Statfs {
        /// The profile asked for.
        profile: String,
        /// The attribute file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: nix::Error,
    },
    /// The kernel refused `exec <profile>`.
    #[error("process.apparmorProfile {profile:?}: write \"exec {profile}\" to {path}: {hint}: {source}")]
    Write {
        /// The profile asked for.
        profile: String,
        /// The attribute file.
        path: PathBuf,
        /// What the errno means here.
        hint: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// The exec attribute under `proc` (`/proc` in a container, a fixture dir in tests):
/// `thread-self/attr/apparmor/exec` where it exists, else `thread-self/attr/exec`.
pub fn exec_attr(proc: &Path) -> PathBuf {
    let per_lsm = proc.join("thread-self/attr/apparmor/exec");
    if per_lsm.exists() {
        per_lsm
    } else {
        proc.join("thread-self/attr/exec")
    }
}

/// Makes the calling thread enter `profile` (`process.apparmorProfile`) at its next
/// `execve`; `None` or an empty string does nothing. Call it in container init or an
/// exec'd process, in the order of the module doc.
///
/// Errors: [`LsmError`] naming the field: ENOENT when no such profile is loaded, EINVAL
/// when the kernel has no AppArmor enabled (the spec check refuses that earlier).
pub fn apply_apparmor(profile: Option<&str>) -> Result<(), LsmError> {
    let Some(profile) = profile.filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    let path = exec_attr(Path::new("/proc"));
    let mut file = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|source| LsmError::Open {
            profile: profile.to_string(),
            path: path.clone(),
            source,
        })?;
    let fs = fstatfs(&file).map_err(|source| LsmError::Statfs {
        profile: profile.to_string(),
        path: path.clone(),
        source,
    })?;
    if fs.filesystem_type() != PROC_SUPER_MAGIC {
        return Err(LsmError::NotProcfs {
            profile: profile.to_string(),
            path,
            fs_type: fs.filesystem_type().0,
        });
    }
    // One write, as libapparmor does: the kernel parses the whole buffer as one command.
    file.write_all(format!("exec {profile}").as_bytes())
        .map_err(|source| LsmError::Write {
            hint: match source.raw_os_error() {
                Some(libc::ENOENT) => "no profile of that name is loaded (apparmor_parser -r loads one)",
                Some(libc::EINVAL) => "the kernel has no AppArmor enabled",
                Some(libc::EACCES | libc::EPERM) => "AppArmor does not allow this task to change to that profile",
                _ => "the kernel refused the profile change",
            },
            profile: profile.to_string(),
            path,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_attr_prefers_the_per_lsm_file() {
        let proc = tempfile::tempdir().unwrap();
        let attr = proc.path().join("thread-self/attr");
        std::fs::create_dir_all(&attr).unwrap();
        std::fs::write(attr.join("exec"), "").unwrap();
        assert_eq!(
            exec_attr(proc.path()),
            attr.join("exec"),
            "pre-5.8 kernel: the shared file"
        );
        std::fs::create_dir_all(attr.join("apparmor")).unwrap();
        std::fs::write(attr.join("apparmor/exec"), "").unwrap();
        assert_eq!(exec_attr(proc.path()), attr.join("apparmor/exec"));
    }

    #[test]
    fn no_profile_writes_nothing() {
        apply_apparmor(None).unwrap();
        apply_apparmor(Some("")).unwrap();
    }
}
