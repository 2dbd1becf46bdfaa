//! A pod's files: `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf` and the pod's
//! `/dev/shm`, made once for the pod and bind-mounted into each member.
//!
//! These are what containerd's CRI makes for a pod sandbox of its own
//! (`internal/cri/server/podsandbox/sandbox_run_linux.go` `setupSandboxFiles`): the
//! hostname (the node's when the pod names none) with a newline; a copy of the node's
//! `/etc/hosts`; `resolv.conf` from the pod's DNS config (`search`, `nameserver` lines,
//! `options`), or a copy of the node's without one; a 64 MiB tmpfs (`nosuid,nodev,noexec`,
//! mode 1777) for `/dev/shm`, one per pod so that POSIX shared memory is shared by its
//! containers, which share the pod's IPC namespace too. With the node's IPC namespace,
//! there is no pod tmpfs: the containers keep their own `/dev/shm`.
//!
//! A member gets each file unless its spec mounts something at that path already (kubelet
//! mounts its own `/etc/hosts` for pods on a pod network), and the pod's `/dev/shm` in
//! place of the private tmpfs its default spec has; bind mounts of the files are
//! read-only when the member's root is.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use oci_spec::runtime::{MountBuilder, Spec};
use serde::{Deserialize, Serialize};

/// The pod's DNS settings (Kubernetes' `dnsConfig`, as kubelet resolves it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dns {
    /// Name servers, one `nameserver` line each.
    pub servers: Vec<String>,
    /// Search domains, one `search` line.
    pub searches: Vec<String>,
    /// Resolver options, one `options` line.
    pub options: Vec<String>,
}

impl Dns {
    /// The `resolv.conf` text (containerd's `parseDNSOptions`): `search`, then one
    /// `nameserver` line per server, then `options`; empty lines are left out.
    pub fn resolv_conf(&self) -> String {
        let mut out = String::new();
        if !self.searches.is_empty() {
            out += &format!("search {}\n", self.searches.join(" "));
        }
        for s in &self.servers {
            out += &format!("nameserver {s}\n");
        }
        if !self.options.is_empty() {
            out += &format!("options {}\n", self.options.join(" "));
        }
        out
    }
}

/// What a pod's files hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodFiles {
    /// The pod's hostname; empty: the node's.
    pub hostname: String,
    /// DNS; `None`: a copy of the node's `resolv.conf`.
    pub dns: Option<Dns>,
    /// Size of the pod's `/dev/shm` tmpfs, bytes; `None` with the node's IPC namespace.
    pub shm_size: Option<u64>,
}

/// Where a pod's files are on the host (below the pod's state directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodFilePaths {
    /// `hostname`.
    pub hostname: PathBuf,
    /// `hosts`.
    pub hosts: PathBuf,
    /// `resolv.conf`.
    pub resolv_conf: PathBuf,
    /// The `/dev/shm` tmpfs mount point, when the pod has one.
    pub shm: Option<PathBuf>,
}

/// The node's files the pod copies.
const NODE_HOSTS: &str = "/etc/hosts";
const NODE_RESOLV_CONF: &str = "/etc/resolv.conf";
/// Used when the node has no `/etc/hosts`.
const DEFAULT_HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/// Which mount of a member's spec a pod file replaces.
const SHM: &str = "/dev/shm";

impl PodFiles {
    /// Writes the files into `dir` (0644 each) and mounts the `/dev/shm` tmpfs at
    /// `dir/shm`. `record` is called with the tmpfs mount point before it is mounted, so
    /// the caller records it for removal first.
    ///
    /// Errors: the file or mount that failed, with its path.
    pub fn create(
        &self,
        dir: &Path,
        record: &mut dyn FnMut(&Path) -> std::io::Result<()>,
    ) -> Result<PodFilePaths, (&'static str, PathBuf, std::io::Error)> {
        let paths = PodFilePaths {
            hostname: dir.join("hostname"),
            hosts: dir.join("hosts"),
            resolv_conf: dir.join("resolv.conf"),
            shm: self.shm_size.map(|_| dir.join("shm")),
        };
        let hostname = if self.hostname.is_empty() {
            nix::unistd::gethostname()
                .map_err(|e| {
                    (
                        "read the node's hostname",
                        PathBuf::from("/proc/sys/kernel/hostname"),
                        e.into(),
                    )
                })?
                .to_string_lossy()
                .into_owned()
        } else {
            self.hostname.clone()
        };
        write(&paths.hostname, format!("{hostname}\n").as_bytes())?;
        let hosts = match fs::read(NODE_HOSTS) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => DEFAULT_HOSTS.as_bytes().to_vec(),
            Err(e) => return Err(("read", PathBuf::from(NODE_HOSTS), e)),
        };
        write(&paths.hosts, &hosts)?;
        let resolv = match &self.dns {
            Some(dns) => dns.resolv_conf().into_bytes(),
            None => match fs::read(NODE_RESOLV_CONF) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(("read", PathBuf::from(NODE_RESOLV_CONF), e)),
            },
        };
        write(&paths.resolv_conf, &resolv)?;
        if let (Some(size), Some(shm)) = (self.shm_size, &paths.shm) {
            record(shm).map_err(|e| ("record", shm.clone(), e))?;
            fs::create_dir_all(shm).map_err(|e| ("create", shm.clone(), e))?;
            let data = format!("mode=1777,size={}", size.max(1));
            mount(
                Some("shm"),
                shm,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some(data.as_str()),
            )
            .map_err(|e| ("mount tmpfs on", shm.clone(), e.into()))?;
        }
        Ok(paths)
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), (&'static str, PathBuf, std::io::Error)> {
    fs::write(path, bytes).map_err(|e| ("write", path.to_path_buf(), e))?;
    fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(|e| ("chmod", path.to_path_buf(), e))
}

impl PodFilePaths {
    /// Adds the pod's files to a member's spec (see the module docs): each file unless a
    /// mount is there already, read-only when the member's root is; the pod's `/dev/shm`
    /// in place of a tmpfs there (the default spec's), never over a bind the member asked
    /// for.
    pub fn mount_into(&self, spec: &mut Spec) {
        let readonly = spec.root().as_ref().and_then(|r| r.readonly()) == Some(true);
        let mut list = spec.mounts().clone().unwrap_or_default();
        let bind = |src: &Path, dst: &str, ro: bool| {
            MountBuilder::default()
                .destination(dst)
                .typ("bind")
                .source(src)
                .options(
                    ["rbind", "rprivate", if ro { "ro" } else { "rw" }]
                        .map(String::from)
                        .to_vec(),
                )
                .build()
                .expect("all fields set")
        };
        for (src, dst) in [
            (&self.hostname, "/etc/hostname"),
            (&self.hosts, "/etc/hosts"),
            (&self.resolv_conf, "/etc/resolv.conf"),
        ] {
            if !list.iter().any(|m| m.destination() == Path::new(dst)) {
                list.push(bind(src, dst, readonly));
            }
        }
        if let Some(shm) = &self.shm {
            let at = list.iter().position(|m| m.destination() == Path::new(SHM));
            match at {
                Some(i) if list[i].typ().as_deref() == Some("tmpfs") => list[i] = bind(shm, SHM, false),
                Some(_) => {}
                None => list.push(bind(shm, SHM, false)),
            }
        }
        spec.set_mounts(Some(list));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_is_containerds_layout() {
        let dns = Dns {
            servers: vec!["10.0.0.10".into(), "10.0.0.11".into()],
            searches: vec!["a.svc".into(), "svc".into()],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            dns.resolv_conf(),
            "search a.svc svc\nnameserver 10.0.0.10\nnameserver 10.0.0.11\noptions ndots:5\n"
        );
        assert_eq!(Dns::default().resolv_conf(), "");
    }

    #[test]
    fn files_are_written_and_mounted_into_members_without_overriding_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let files = PodFiles {
            hostname: "web-0".into(),
            dns: Some(Dns {
                servers: vec!["1.1.1.1".into()],
                ..Default::default()
            }),
            shm_size: None,
        };
        let paths = files.create(dir.path(), &mut |_| Ok(())).unwrap();
        assert_eq!(fs::read_to_string(&paths.hostname).unwrap(), "web-0\n");
        assert_eq!(fs::read_to_string(&paths.resolv_conf).unwrap(), "nameserver 1.1.1.1\n");
        assert!(paths.hosts.is_file());

        let mut spec = crate::spec::default_spec(&["sh"]);
        let mut mounts = spec.mounts().clone().unwrap();
        mounts.push(
            MountBuilder::default()
                .destination("/etc/hosts")
                .typ("bind")
                .source("/kubelet/etc-hosts")
                .build()
                .unwrap(),
        );
        spec.set_mounts(Some(mounts));
        let with_shm = PodFilePaths {
            shm: Some(dir.path().join("shm")),
            ..paths
        };
        with_shm.mount_into(&mut spec);
        let find = |d: &str| {
            spec.mounts()
                .iter()
                .flatten()
                .filter(|m| m.destination() == Path::new(d))
                .map(|m| m.source().clone().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            find("/etc/hosts"),
            [PathBuf::from("/kubelet/etc-hosts")],
            "kubelet's stays"
        );
        assert_eq!(find("/etc/hostname"), [dir.path().join("hostname")]);
        assert_eq!(find("/etc/resolv.conf"), [dir.path().join("resolv.conf")]);
        assert_eq!(
            find("/dev/shm"),
            [dir.path().join("shm")],
            "the default tmpfs is replaced"
        );
    }
}
