//! Linux namespaces: entering a container's, in the order [`JOIN_ORDER`] gives. Which
//! ones it gets is checked with its spec ([`crate::spec::namespaces`]).
//!
//! The init helper (a freshly executed, single-threaded copy of our binary) first joins
//! the namespaces given by `path` (`setns(2)`), then creates the others in one
//! `unshare(2)`. The order matters:
//! - every `path` is opened before the first `setns`, because after joining another
//!   mount namespace the same path may name something else;
//! - ipc, uts, net and pid are joined first, cgroup next, and mount last, as runc's
//!   nsexec does: joining a mount namespace changes the root directory;
//! - `CLONE_NEWPID` (unshare or setns) only applies to children, so the helper clones the
//!   container init afterwards; `CLONE_NEWCGROUP` is created after the parent placed the
//!   helper in the container's cgroup, so that cgroup becomes the namespace's root.
//!
//! `exec` joins a running container's namespaces through the pidfd of its init
//! ([`join_all_of`]), never by pid.
//!
//! User and time namespaces are not supported yet: a spec asking for them is refused
//! before anything is entered.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;

use nix::sched::{setns, unshare, CloneFlags};

// The plan of a container's namespaces is part of its checked spec; re-exported here,
// where it is entered.
pub use crate::spec::namespaces::{plan, NamespaceKind, NamespacePlan, JOIN_ORDER};

/// A namespace operation that failed in the init helper.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// The namespace file could not be opened.
    #[error("open {kind:?} namespace {path}: {source}")]
    Open {
        /// Namespace kind.
        kind: NamespaceKind,
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// `setns(2)` refused the file (EINVAL: not a namespace of that kind).
    #[error("setns {kind:?} namespace {path}: {source}")]
    Join {
        /// Namespace kind.
        kind: NamespaceKind,
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: nix::Error,
    },
    /// `setns(2)` on the pidfd of a running process (`exec`) failed.
    #[error("join the namespaces of pid {pid} through its pidfd ({flags:?}){hint}: {source}")]
    JoinProcess {
        /// The process whose namespaces were joined (container init).
        pid: i32,
        /// The kinds joined.
        flags: CloneFlags,
        /// What the errno means here, if known.
        hint: &'static str,
        /// Cause (ESRCH: it has exited).
        #[source]
        source: nix::Error,
    },
    /// `unshare(2)` failed.
    #[error("unshare {flags:?}: {source}")]
    Create {
        /// The flags passed.
        flags: CloneFlags,
        /// Cause.
        #[source]
        source: nix::Error,
    },
}

/// Joins the namespaces that have a path, then creates the rest with one `unshare`.
/// Runs in the single-threaded init helper.
pub fn enter(plans: &[NamespacePlan]) -> Result<(), NamespaceError> {
    let mut joins = Vec::new();
    for p in plans {
        if let Some(path) = &p.path {
            let file = File::open(path).map_err(|source| NamespaceError::Open {
                kind: p.kind,
                path: path.clone(),
                source,
            })?;
            joins.push((p.kind, path.clone(), file));
        }
    }
    for (kind, path, file) in &joins {
        setns(file.as_fd(), kind.flag()).map_err(|source| NamespaceError::Join {
            kind: *kind,
            path: path.clone(),
            source,
        })?;
    }
    let flags = plans
        .iter()
        .filter(|p| p.path.is_none())
        .fold(CloneFlags::empty(), |acc, p| acc | p.kind.flag());
    if !flags.is_empty() {
        unshare(flags).map_err(|source| NamespaceError::Create { flags, source })?;
    }
    Ok(())
}

/// Joins every namespace kind of [`JOIN_ORDER`] of the process behind `pidfd` at once
/// (`setns(2)` on a pidfd, Linux 5.8): how `exec` enters a container. `pid` is that
/// process's pid, for messages only.
///
/// A pidfd names one process for its whole life, so a container whose init has exited
/// can never be entered through a recycled pid, as opening `/proc/<pid>/ns/*` could: the
/// kernel answers ESRCH once the process has exited (even while it is an unreaped zombie:
/// its namespaces are gone). The kernel joins all kinds atomically, in its own order;
/// kinds the process shares with us (a host-network container's net namespace) are joined
/// as well, which changes nothing.
///
/// Errors: [`NamespaceError::JoinProcess`]: ESRCH (init exited), EPERM.
pub fn join_all_of(pidfd: BorrowedFd<'_>, pid: i32) -> Result<(), NamespaceError> {
    let flags = JOIN_ORDER.iter().fold(CloneFlags::empty(), |acc, k| acc | k.flag());
    setns(pidfd, flags).map_err(|source| NamespaceError::JoinProcess {
        pid,
        flags,
        hint: if source == nix::Error::ESRCH {
            ": the process has exited"
        } else {
            ""
        },
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use nix::unistd::Pid;

    use super::*;

    #[test]
    fn the_namespaces_of_an_exited_process_cannot_be_joined() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let pidfd = crate::sys::pidfd_open(Pid::from_raw(pid)).unwrap();
        child.wait().unwrap();
        // The pid may be reused from here on; the pidfd still names the exited process.
        let err = join_all_of(pidfd.as_fd(), pid).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                NamespaceError::JoinProcess {
                    source: nix::Error::ESRCH,
                    ..
                }
            ),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("pid {pid}")) && msg.contains("has exited"),
            "{msg}"
        );
    }
}
