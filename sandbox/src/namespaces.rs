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
//! User and time namespaces are not supported yet: a spec asking for them is refused
//! before anything is entered.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use nix::sched::{setns, unshare, CloneFlags};
use nix::unistd::Pid;

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

/// Joins every namespace of the running process `pid` that differs from ours, in
/// [`JOIN_ORDER`]: how `exec` enters a container.
pub fn join_all_of(pid: Pid) -> Result<(), NamespaceError> {
    let mut plans = Vec::new();
    for kind in JOIN_ORDER {
        let theirs = PathBuf::from(format!("/proc/{pid}/ns/{}", kind.proc_name()));
        let ours = PathBuf::from(format!("/proc/self/ns/{}", kind.proc_name()));
        let same = match (std::fs::metadata(&theirs), std::fs::metadata(&ours)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            (Err(source), _) => {
                return Err(NamespaceError::Open {
                    kind,
                    path: theirs,
                    source,
                })
            }
            _ => false,
        };
        if !same {
            plans.push(NamespacePlan {
                kind,
                path: Some(theirs),
            });
        }
    }
    enter(&plans)
}
