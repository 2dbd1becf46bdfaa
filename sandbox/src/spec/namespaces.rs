//! `linux.namespaces`: which namespaces a container gets, checked and put in the order
//! they are entered (see [`crate::namespaces`] for why that order; entering them is its
//! job, at run time in the init helper).
//!
//! User and time namespaces are not supported yet: a spec asking for them is refused.

use std::path::PathBuf;

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};
use serde::{Deserialize, Serialize};

use super::{invalid, SpecError};

/// The namespace kinds peapod handles, in the order they are joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NamespaceKind {
    /// IPC: System V IPC objects and POSIX message queues.
    Ipc,
    /// UTS: hostname and domain name.
    Uts,
    /// Network: interfaces, addresses, routes, ports.
    Net,
    /// PID: process ids; applies to children of the caller.
    Pid,
    /// cgroup: the root of the visible cgroup tree.
    Cgroup,
    /// Mount: the mount table; joined last.
    Mount,
}

/// Join order (see [`crate::namespaces`] for why).
pub const JOIN_ORDER: [NamespaceKind; 6] = [
    NamespaceKind::Ipc,
    NamespaceKind::Uts,
    NamespaceKind::Net,
    NamespaceKind::Pid,
    NamespaceKind::Cgroup,
    NamespaceKind::Mount,
];

impl NamespaceKind {
    /// The `clone(2)` flag for this kind.
    pub fn flag(self) -> CloneFlags {
        match self {
            Self::Ipc => CloneFlags::CLONE_NEWIPC,
            Self::Uts => CloneFlags::CLONE_NEWUTS,
            Self::Net => CloneFlags::CLONE_NEWNET,
            Self::Pid => CloneFlags::CLONE_NEWPID,
            Self::Cgroup => CloneFlags::CLONE_NEWCGROUP,
            Self::Mount => CloneFlags::CLONE_NEWNS,
        }
    }

    /// The file name under `/proc/<pid>/ns/`.
    pub fn proc_name(self) -> &'static str {
        match self {
            Self::Ipc => "ipc",
            Self::Uts => "uts",
            Self::Net => "net",
            Self::Pid => "pid",
            Self::Cgroup => "cgroup",
            Self::Mount => "mnt",
        }
    }
}

/// One namespace of the container: joined when `path` is set, created otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespacePlan {
    /// Which namespace.
    pub kind: NamespaceKind,
    /// Namespace file to join (`/proc/<pid>/ns/net`, a bind-mounted netns), or `None` to
    /// create a new namespace.
    pub path: Option<PathBuf>,
}

/// Checks `linux.namespaces` and orders it by [`JOIN_ORDER`].
///
/// Errors name `linux.namespaces[<type>]`: a duplicate type, a user or time namespace
/// (unsupported), joining a mount namespace by path (peapod always builds the container's
/// mount table itself), or a `path` that does not exist.
pub fn plan(given: &[LinuxNamespace]) -> Result<Vec<NamespacePlan>, SpecError> {
    let mut plans: Vec<NamespacePlan> = Vec::new();
    for ns in given {
        let field = format!("linux.namespaces[{}]", ns.typ());
        let kind = match ns.typ() {
            LinuxNamespaceType::Ipc => NamespaceKind::Ipc,
            LinuxNamespaceType::Uts => NamespaceKind::Uts,
            LinuxNamespaceType::Network => NamespaceKind::Net,
            LinuxNamespaceType::Pid => NamespaceKind::Pid,
            LinuxNamespaceType::Cgroup => NamespaceKind::Cgroup,
            LinuxNamespaceType::Mount => NamespaceKind::Mount,
            LinuxNamespaceType::User | LinuxNamespaceType::Time => {
                return Err(invalid(field, "not supported by peapod yet"));
            }
        };
        if plans.iter().any(|p| p.kind == kind) {
            return Err(invalid(field, "given twice"));
        }
        let path = ns.path().clone().filter(|p| !p.as_os_str().is_empty());
        if let Some(path) = &path {
            if kind == NamespaceKind::Mount {
                return Err(invalid(field, "joining an existing mount namespace is not supported"));
            }
            if let Err(e) = std::fs::metadata(path) {
                return Err(invalid(format!("{field}.path"), format!("{}: {e}", path.display())));
            }
        }
        plans.push(NamespacePlan { kind, path });
    }
    plans.sort_by_key(|p| JOIN_ORDER.iter().position(|k| *k == p.kind));
    Ok(plans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxNamespaceBuilder;

    fn ns(typ: LinuxNamespaceType, path: Option<&str>) -> LinuxNamespace {
        let b = LinuxNamespaceBuilder::default().typ(typ);
        match path {
            Some(p) => b.path(p).build().unwrap(),
            None => b.build().unwrap(),
        }
    }

    #[test]
    fn plan_orders_mount_last() {
        let plans = plan(&[
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::Network, None),
            ns(LinuxNamespaceType::Pid, None),
        ])
        .unwrap();
        let kinds: Vec<_> = plans.iter().map(|p| p.kind).collect();
        assert_eq!(kinds, [NamespaceKind::Net, NamespaceKind::Pid, NamespaceKind::Mount]);
    }

    #[test]
    fn unknown_path_and_duplicates_are_refused() {
        let err = plan(&[ns(LinuxNamespaceType::Network, Some("/nonexistent/netns"))]).unwrap_err();
        assert!(err.to_string().contains("linux.namespaces[net].path"), "{err}");
        let err = plan(&[ns(LinuxNamespaceType::Pid, None), ns(LinuxNamespaceType::Pid, None)]).unwrap_err();
        assert!(err.to_string().contains("given twice"), "{err}");
        let err = plan(&[ns(LinuxNamespaceType::User, None)]).unwrap_err();
        assert!(err.to_string().contains("linux.namespaces[user]"), "{err}");
    }
}
