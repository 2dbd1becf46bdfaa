//! The pod's pause process: `peapod-pause`, which holds the pod's namespaces for its
//! lifetime (Kubernetes' "pause"), run as a container of its own without any image.
//!
//! Its root is a directory of the pod's state holding nothing but the mount point
//! `/pause`, on which the static `peapod-pause` binary is bind-mounted read-only, with
//! `/proc` (for the pod's sysctls, written through `/proc/sys`) and a small `/dev`. The
//! root is read-only, the process has no capabilities and `no_new_privs`, and it runs as
//! the pod's `runAsUser`/`runAsGroup` (root by default, as containerd's pause image does).
//!
//! Namespaces ([`PauseConfig`]): the network namespace is a path the caller set up (CNI)
//! or the host's; IPC, UTS and pid are new or the host's. With a new pid namespace the
//! pause is its PID 1 and reaps orphans (`shareProcessNamespace`). Mount and cgroup
//! namespaces are always its own. Containers join the pause's namespaces through
//! `/proc/<pid>/ns/*` (containerd CRI `WithPodNamespaces`), so a namespace the pause keeps
//! from the host is the host's for them too.
//!
//! The hostname is set only in a UTS namespace of its own: a pod on the node's network
//! keeps the node's UTS namespace, whose name must not change.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxCapabilities, LinuxCpuBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, MountBuilder,
    RootBuilder, Spec, UserBuilder,
};

/// Environment variable naming the pause binary, before the places [`installed_binary`]
/// looks.
pub const PAUSE_ENV: &str = "PEAPOD_PAUSE";

/// The pause's CPU shares (containerd's `WithDefaultSandboxShares`: the least there is).
pub const PAUSE_CPU_SHARES: u64 = 2;

/// One of the pause's namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PauseNamespace {
    /// A new namespace of its own.
    New,
    /// The host's (the shim's own).
    Host,
    /// The namespace at this path (e.g. a network namespace CNI set up).
    Path(PathBuf),
}

/// What the pause process is: its namespaces, hostname, sysctls and user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseConfig {
    /// Hostname, set in a UTS namespace of its own only; `None` keeps the namespace's.
    pub hostname: Option<String>,
    /// Network namespace: [`PauseNamespace::Path`] or [`PauseNamespace::Host`].
    pub network: PauseNamespace,
    /// UTS namespace.
    pub uts: PauseNamespace,
    /// IPC namespace.
    pub ipc: PauseNamespace,
    /// Pid namespace.
    pub pid: PauseNamespace,
    /// Namespaced sysctls for the pod (`net.*`, `kernel.shm*`, …), written by the pause's
    /// init before it runs.
    pub sysctls: BTreeMap<String, String>,
    /// uid of the pause process.
    pub uid: u32,
    /// gid.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// The pause binary could not be found or is not usable.
#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    /// No `peapod-pause` in the places looked at.
    #[error("peapod-pause not found: set ${PAUSE_ENV} or install it next to the shim (looked at {looked:?})")]
    NotFound {
        /// The candidates, in order.
        looked: Vec<PathBuf>,
    },
    /// The binary is dynamically linked: it cannot run in its empty root.
    #[error(
        "{path}: dynamically linked (it names a program interpreter); the pause runs alone in its \
         root and must be static: `make pause` builds it into target/pause/, where it is looked for first"
    )]
    Dynamic {
        /// The binary.
        path: PathBuf,
    },
    /// The binary could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The binary.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The pause's root directory could not be made.
    #[error("pause root {path}: {source}")]
    Root {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// The static `peapod-pause` for the pause process: `$PEAPOD_PAUSE`, else
/// `<exe dir>/../pause/peapod-pause` (a cargo tree, where `make pause` puts the static
/// build), else `<exe dir>/peapod-pause` (installed next to the shim, `make install`).
///
/// Errors: [`PauseError::NotFound`], or [`PauseError::Dynamic`] / [`PauseError::Read`] for
/// the first one found when it is not a static ELF binary.
pub fn installed_binary() -> Result<PathBuf, PauseError> {
    let mut looked = Vec::new();
    if let Some(p) = std::env::var_os(PAUSE_ENV).filter(|p| !p.is_empty()) {
        looked.push(PathBuf::from(p));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        if let Some(target) = dir.parent() {
            looked.push(target.join("pause/peapod-pause"));
        }
        looked.push(dir.join("peapod-pause"));
    }
    let Some(path) = looked.iter().find(|p| p.is_file()).cloned() else {
        return Err(PauseError::NotFound { looked });
    };
    if is_dynamic(&path).map_err(|source| PauseError::Read {
        path: path.clone(),
        source,
    })? {
        return Err(PauseError::Dynamic { path });
    }
    Ok(path)
}

/// Whether the ELF file at `path` names a program interpreter (`PT_INTERP`): a dynamically
/// linked executable. Reads the ELF64 little-endian header and program headers only.
fn is_dynamic(path: &Path) -> std::io::Result<bool> {
    let mut head = Vec::with_capacity(4096);
    fs::File::open(path)?.take(4096).read_to_end(&mut head)?;
    let bad = || std::io::Error::other("not an ELF64 little-endian executable");
    if head.len() < 64 || &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return Err(bad());
    }
    let u16_at = |o: usize| u16::from_le_bytes([head[o], head[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(head[0x20..0x28].try_into().expect("8 bytes"));
    let phoff = usize::try_from(phoff).map_err(|_| bad())?;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let Some(p_type) = head.get(at..at + 4) else {
            return Err(bad());
        };
        // PT_INTERP
        if u32::from_le_bytes(p_type.try_into().expect("4 bytes")) == 3 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Makes `dir` the pause's root: a directory (0755, so a non-root pause can enter it)
/// holding the empty file `pause`, the mount point of the binary. Idempotent.
///
/// Errors: [`PauseError::Root`].
pub fn prepare_root(dir: &Path) -> Result<(), PauseError> {
    let err = |source| PauseError::Root {
        path: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(err)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(err)?;
    let target = dir.join("pause");
    if !target.exists() {
        fs::write(&target, b"").map_err(err)?;
    }
    Ok(())
}

/// The mount that puts the static `binary` on `/pause`: a read-only bind (`rbind`, `ro`,
/// `nosuid`, `nodev`) onto the empty file [`prepare_root`] leaves. Never a copy: a copy's
/// write fd, inherited by a child another thread forks meanwhile, fails the exec with
/// ETXTBSY.
pub fn binary_mount(binary: &Path) -> oci_spec::runtime::Mount {
    MountBuilder::default()
        .destination("/pause")
        .typ("bind")
        .source(binary)
        .options(["rbind", "ro", "nosuid", "nodev"].map(String::from).to_vec())
        .build()
        .expect("all fields set")
}

fn ns(typ: LinuxNamespaceType, which: &PauseNamespace) -> Option<oci_spec::runtime::LinuxNamespace> {
    let b = LinuxNamespaceBuilder::default().typ(typ);
    match which {
        PauseNamespace::Host => None,
        PauseNamespace::New => Some(b.build().expect("all fields set")),
        PauseNamespace::Path(p) => Some(b.path(p.clone()).build().expect("all fields set")),
    }
}

impl PauseConfig {
    /// The pause's OCI spec: `/pause` from `root` (see [`prepare_root`]) with `binary`
    /// bind-mounted on it, in cgroup `cgroup_path` (CPU shares [`PAUSE_CPU_SHARES`]).
    pub fn spec(&self, root: &Path, binary: &Path, cgroup_path: &str) -> Spec {
        let mut spec = crate::spec::default_spec(&["/pause"]);
        spec.set_root(Some(
            RootBuilder::default()
                .path(root)
                .readonly(true)
                .build()
                .expect("all fields set"),
        ));
        spec.set_hostname(self.hostname.clone());
        let mounts: Vec<_> = spec
            .mounts()
            .iter()
            .flatten()
            .filter(|m| ["/proc", "/dev"].contains(&m.destination().to_string_lossy().as_ref()))
            .cloned()
            .chain(std::iter::once(binary_mount(binary)))
            .collect();
        spec.set_mounts(Some(mounts));
        if let Some(p) = spec.process_mut() {
            let mut user = UserBuilder::default().uid(self.uid).gid(self.gid);
            if !self.groups.is_empty() {
                user = user.additional_gids(self.groups.clone());
            }
            p.set_user(user.build().expect("all fields set"));
            // It only waits for signals and reaps: no capability at all.
            let none = LinuxCapabilities::default();
            let empty = |c: &mut LinuxCapabilities| {
                c.set_bounding(Some(Default::default()));
                c.set_effective(Some(Default::default()));
                c.set_permitted(Some(Default::default()));
                c.set_inheritable(Some(Default::default()));
                c.set_ambient(Some(Default::default()));
            };
            let mut caps = none;
            empty(&mut caps);
            p.set_capabilities(Some(caps));
            p.set_no_new_privileges(Some(true));
        }
        if let Some(linux) = spec.linux_mut() {
            let list = [
                Some(
                    LinuxNamespaceBuilder::default()
                        .typ(LinuxNamespaceType::Mount)
                        .build()
                        .expect("all fields set"),
                ),
                Some(
                    LinuxNamespaceBuilder::default()
                        .typ(LinuxNamespaceType::Cgroup)
                        .build()
                        .expect("all fields set"),
                ),
                ns(LinuxNamespaceType::Network, &self.network),
                ns(LinuxNamespaceType::Uts, &self.uts),
                ns(LinuxNamespaceType::Ipc, &self.ipc),
                ns(LinuxNamespaceType::Pid, &self.pid),
            ];
            linux.set_namespaces(Some(list.into_iter().flatten().collect()));
            linux.set_cgroups_path(Some(PathBuf::from(format!("/{cgroup_path}"))));
            if !self.sysctls.is_empty() {
                linux.set_sysctl(Some(self.sysctls.clone().into_iter().collect()));
            }
            let mut resources = linux
                .resources()
                .clone()
                .unwrap_or_else(|| LinuxResourcesBuilder::default().build().expect("all fields set"));
            resources.set_cpu(Some(
                LinuxCpuBuilder::default()
                    .shares(PAUSE_CPU_SHARES)
                    .build()
                    .expect("all fields set"),
            ));
            linux.set_resources(Some(resources));
        }
        spec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(network: PauseNamespace, shared: PauseNamespace) -> PauseConfig {
        PauseConfig {
            hostname: Some("web-0".into()),
            network,
            uts: shared.clone(),
            ipc: shared.clone(),
            pid: shared,
            sysctls: [("net.ipv4.ping_group_range".to_string(), "0 1".to_string())].into(),
            uid: 65535,
            gid: 65535,
            groups: vec![5],
        }
    }

    #[test]
    fn the_pause_spec_joins_the_given_namespaces_with_nothing_else() {
        let c = config(PauseNamespace::Path("/var/run/netns/cni-1".into()), PauseNamespace::New);
        let spec = c.spec(
            Path::new("/run/p/root"),
            Path::new("/usr/bin/peapod-pause"),
            "kubepods/pod1/sb",
        );
        let linux = spec.linux().as_ref().unwrap();
        let nss: Vec<(LinuxNamespaceType, Option<PathBuf>)> = linux
            .namespaces()
            .iter()
            .flatten()
            .map(|n| (n.typ(), n.path().clone()))
            .collect();
        assert!(nss.contains(&(LinuxNamespaceType::Network, Some("/var/run/netns/cni-1".into()))));
        for t in [
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Pid,
        ] {
            assert!(nss.contains(&(t, None)), "{t:?}");
        }
        assert_eq!(linux.cgroups_path().as_deref(), Some(Path::new("/kubepods/pod1/sb")));
        assert_eq!(linux.sysctl().as_ref().unwrap()["net.ipv4.ping_group_range"], "0 1");
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.args().as_ref().unwrap(), &["/pause"]);
        assert_eq!((process.user().uid(), process.user().gid()), (65535, 65535));
        let caps = process.capabilities().as_ref().unwrap();
        assert!(caps.bounding().as_ref().unwrap().is_empty() && caps.effective().as_ref().unwrap().is_empty());
        let root = spec.root().as_ref().unwrap();
        assert_eq!(
            (root.path().as_path(), root.readonly()),
            (Path::new("/run/p/root"), Some(true))
        );
        let dests: Vec<String> = spec
            .mounts()
            .iter()
            .flatten()
            .map(|m| m.destination().display().to_string())
            .collect();
        assert_eq!(dests, ["/proc", "/dev", "/pause"]);
        assert_eq!(spec.hostname().as_deref(), Some("web-0"));

        let host = config(PauseNamespace::Host, PauseNamespace::Host).spec(Path::new("/r"), Path::new("/b"), "x");
        let kinds: Vec<LinuxNamespaceType> = host
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .iter()
            .flatten()
            .map(|n| n.typ())
            .collect();
        assert_eq!(kinds, [LinuxNamespaceType::Mount, LinuxNamespaceType::Cgroup]);
    }

    #[test]
    fn only_a_static_elf_is_a_usable_pause() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("script");
        fs::write(&text, "#!/bin/sh\n").unwrap();
        assert!(is_dynamic(&text).is_err());
        // This test binary is dynamically linked (cargo's default for the host).
        let me = std::env::current_exe().unwrap();
        assert!(is_dynamic(&me).unwrap());
        prepare_root(&dir.path().join("root")).unwrap();
        prepare_root(&dir.path().join("root")).unwrap();
        let md = fs::metadata(dir.path().join("root")).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o755);
        assert!(dir.path().join("root/pause").is_file());
    }
}
