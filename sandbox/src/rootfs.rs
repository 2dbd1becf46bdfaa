//! The container's mount table: rootfs, spec mounts, /dev, pivot_root, masked and
//! read-only paths (OCI runtime spec, "Linux container configuration": mounts, devices,
//! maskedPaths, readonlyPaths, rootfsPropagation).
//!
//! Runs in container init, inside its new mount namespace, in this order (runc's
//! `prepareRootfs` then `finalizeRootfs`):
//! 1. make `/` recursively slave (or as `rootfsPropagation` says) so nothing propagates
//!    back to the host, and the rootfs's parent private so `pivot_root` is allowed;
//! 2. bind the rootfs onto itself (pivot_root needs a mount point);
//! 3. spec mounts in order, each destination resolved and made inside the rootfs relative
//!    to an fd of it and mounted on through the fd it resolved to ([`in_root`]): a symlink
//!    swapped in by a container sharing a volume is never followed out (CVE-2021-30465).
//!    Destinations under `/proc` are refused but for lxcfs's files, and only a procfs goes
//!    on `/proc` (runc's `checkProcMount`); `cgroup` mounts show the container's own
//!    cgroup only ([`prepare`]);
//! 4. default /dev nodes and symlinks, then `linux.devices`, every path (`/dev` itself
//!    included) resolved inside the rootfs the same way, nodes made relative to their
//!    directory's fd: an image's `/dev` symlink to a host directory never gets nodes made
//!    there (securejoin's class, CVE-2021-30465);
//! 5. `pivot_root(".", ".")` and a lazy unmount of the old root (`MS_MOVE` + `chroot`
//!    when the root is a ramfs, where pivot_root is refused);
//!
//! and, in [`finalize`], after the process-level settings: sysctls, hostname, read-only paths, masked paths
//! (resolved inside the new root and mounted on through fds as well), and last the
//! read-only remount of `/` when `root.readonly` is set.

use std::ffi::OsStr;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{fstat, fstatat, makedev, mknodat, Mode, SFlag};
use nix::unistd::{chdir, chroot, fchownat, pivot_root, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, LinuxNamespaceType, Mount, Spec};

pub mod in_root;

use in_root::{Create, Root, Target};

/// A mount-table operation that failed in container init.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// `mount(2)` failed.
    #[error("mount {fstype} {src} on {dst} ({flags:?}): {source}")]
    Mount {
        /// Source (device, directory or fs name).
        src: String,
        /// Target, as a host path before pivot_root or a container path after.
        dst: PathBuf,
        /// Filesystem type, or `bind`/`remount`.
        fstype: String,
        /// Flags passed.
        flags: MsFlags,
        /// Cause.
        #[source]
        source: nix::Error,
    },
    /// A mount point, device node or symlink could not be created.
    #[error("create {what} {path}: {source}")]
    Create {
        /// `directory`, `file`, `device` or `symlink`; `fd`, `fd link`, `fdinfo` or
        /// `cgroup file` for the bookkeeping reads around them.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A path could not be looked up inside the rootfs (`openat2(2)`, `readlinkat(2)`).
    #[error("resolve {path} inside the rootfs: {source}")]
    Resolve {
        /// The path as given, as the container sees it.
        path: PathBuf,
        /// Cause (ENOTDIR: a component is a file; ELOOP: a magic link).
        #[source]
        source: nix::Error,
    },
    /// A path resolved to somewhere the kernel names outside the rootfs.
    #[error("{path} resolved to {real}, outside the rootfs")]
    Escaped {
        /// The path as given.
        path: PathBuf,
        /// Where its fd really is.
        real: PathBuf,
    },
    /// A mount destination is the rootfs itself.
    #[error("mount destination {path} is the root of the container; refused (runc: mountpoint on top of rootfs)")]
    OverRoot {
        /// The destination as given.
        path: PathBuf,
    },
    /// A procfs or sysfs destination with a symlink on its path.
    #[error("mount destination {path}: procfs and sysfs must be mounted on a plain directory, with no symlink on the way (runc mountToRootfs)")]
    NotPlain {
        /// The destination as given.
        path: PathBuf,
    },
    /// What was just mounted on or made changed under us (renamed away, replaced).
    #[error("{path} changed while it was being mounted on or made; refused")]
    Swapped {
        /// The path inside the rootfs.
        path: PathBuf,
    },
    /// A mount over `/proc` or under it, which runc's `checkProcMount` refuses.
    #[error("mount destination {dst} refused: {cause} (runc checkProcMount)")]
    ProcMount {
        /// The destination, symlinks resolved, as the container sees it.
        dst: PathBuf,
        /// Which rule.
        cause: &'static str,
    },
    /// The container's own cgroup in a host hierarchy could not be found.
    #[error("own cgroup in the hierarchy mounted at {hierarchy}: {cause}")]
    OwnCgroup {
        /// The host mount point of the hierarchy.
        hierarchy: PathBuf,
        /// Why.
        cause: &'static str,
    },
    /// A destination resolves through too many symlinks.
    #[error("resolve {path} inside the rootfs: too many levels of symbolic links")]
    SymlinkLoop {
        /// The destination as given.
        path: PathBuf,
    },
    /// `pivot_root(2)` (or its ramfs fallback) failed.
    #[error("pivot_root into {rootfs}: {source}")]
    PivotRoot {
        /// The new root.
        rootfs: PathBuf,
        /// Cause.
        #[source]
        source: nix::Error,
    },
    /// Writing `/proc/sys/...` failed.
    #[error("sysctl {key}={value}: {source}")]
    Sysctl {
        /// The sysctl, e.g. `net.ipv4.ip_forward`.
        key: String,
        /// The value written.
        value: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// `sethostname(2)` failed.
    #[error("sethostname {hostname:?}: {source}")]
    Hostname {
        /// The name.
        hostname: String,
        /// Cause.
        #[source]
        source: nix::Error,
    },
}

type Result<T> = std::result::Result<T, RootfsError>;

fn do_mount(src: Option<&str>, dst: &Path, fstype: Option<&str>, flags: MsFlags, data: Option<&str>) -> Result<()> {
    mount(src, dst, fstype, flags, data).map_err(|source| RootfsError::Mount {
        src: src.unwrap_or("").to_string(),
        dst: dst.to_path_buf(),
        fstype: fstype
            .unwrap_or(if flags.contains(MsFlags::MS_REMOUNT) {
                "remount"
            } else {
                "bind"
            })
            .to_string(),
        flags,
        source,
    })
}

/// Propagation flags for `rootfsPropagation` and mount options (`rslave`, `private`…);
/// `None` for an unknown word.
pub fn propagation_flags(word: &str) -> Option<MsFlags> {
    Some(match word {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// Mount options split into flags to set, flags to clear, propagation, and fs data, as
/// mount(8) reads them.
#[derive(Debug, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags for `mount(2)`.
    pub flags: MsFlags,
    /// Propagation changes, applied by separate `mount(2)` calls.
    pub propagation: Vec<MsFlags>,
    /// Filesystem-specific options (`mode=755`, `size=65536k`), comma-joined.
    pub data: String,
    /// `bind` or `rbind` was given.
    pub bind: bool,
}

/// Parses OCI mount options (the mount(8) vocabulary).
pub fn parse_options(options: &[String]) -> MountOptions {
    let mut out = MountOptions {
        flags: MsFlags::empty(),
        propagation: Vec::new(),
        data: String::new(),
        bind: false,
    };
    let mut data = Vec::new();
    for opt in options {
        let (set, clear) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "bind" => {
                out.bind = true;
                (MsFlags::MS_BIND, MsFlags::empty())
            }
            "rbind" => {
                out.bind = true;
                (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty())
            }
            // containerd/Docker hint for copying image content into a tmpfs; not a kernel option.
            "tmpcopyup" => continue,
            word => {
                if let Some(p) = propagation_flags(word) {
                    out.propagation.push(p);
                } else {
                    data.push(word.to_string());
                }
                continue;
            }
        };
        out.flags = (out.flags | set) & !clear;
    }
    out.data = data.join(",");
    out
}

/// Files under `/proc` that may be mounted over: the ones lxcfs emulates (runc's
/// `checkProcMount` allowlist; runc dropped `/proc/net/dev`, a per-process symlink into
/// `self/net` that never worked, in 3620185d).
pub const PROC_MOUNT_ALLOWLIST: [&str; 10] = [
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/sys/kernel/ns_last_pid",
    "/proc/sys/crypto/fips_enabled",
];

/// runc's `checkProcMount`: `dest` (absolute, as the container sees it, `.`/`..`
/// applied) may be `/proc` itself only for a procfs (a `proc` mount, or a bind whose
/// source is on a procfs), and under `/proc` only one of [`PROC_MOUNT_ALLOWLIST`].
/// A mounted-over `/proc/sys` or `/proc/self/attr` defeats the read-only `/proc/sys` and
/// the LSM (CVE-2019-16884, CVE-2019-19921). Errors name the destination and the rule.
pub fn check_proc_mount(dest: &Path, m: &Mount) -> Result<()> {
    let dest: PathBuf = Path::new("/").join(in_root::clean(dest).iter().collect::<PathBuf>());
    let Ok(under) = dest.strip_prefix("/proc") else {
        return Ok(());
    };
    let refuse = |cause: &'static str| {
        Err(RootfsError::ProcMount {
            dst: dest.clone(),
            cause,
        })
    };
    if under.as_os_str().is_empty() {
        let opts = parse_options(m.options().as_deref().unwrap_or_default());
        let typ = m.typ().as_deref().unwrap_or("");
        if opts.bind || typ == "bind" {
            let on_procfs = m
                .source()
                .as_ref()
                .and_then(|s| nix::sys::statfs::statfs(s.as_path()).ok())
                .is_some_and(|st| st.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC);
            if on_procfs {
                return Ok(());
            }
        } else if typ == "proc" {
            return Ok(());
        }
        return refuse("only a procfs may be mounted on /proc");
    }
    if PROC_MOUNT_ALLOWLIST.iter().any(|a| Path::new(a) == dest) {
        return Ok(());
    }
    refuse("it is inside /proc; only the files lxcfs emulates (/proc/uptime, /proc/meminfo, …) may be mounted over")
}

fn mkdir_all(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(|source| RootfsError::Create {
            what: "directory",
            path: path.to_path_buf(),
            source,
        })
}

/// Mounts onto `t` through its fd (`/proc/self/fd/<n>`), so the kernel mounts on exactly
/// what was resolved, whatever has been renamed since.
fn mount_on(t: &Target, src: Option<&str>, fstype: Option<&str>, flags: MsFlags, data: Option<&str>) -> Result<()> {
    mount(src, t.proc_path().as_str(), fstype, flags, data).map_err(|source| RootfsError::Mount {
        src: src.unwrap_or("").to_string(),
        dst: t.path.clone(),
        fstype: fstype
            .unwrap_or(if flags.contains(MsFlags::MS_REMOUNT) {
                "remount"
            } else if flags.contains(MsFlags::MS_BIND) {
                "bind"
            } else {
                "propagation"
            })
            .to_string(),
        flags,
        source,
    })
}

/// After a mount on `t`: remount with `flags` (read-only, nosuid… which a bind ignores on
/// its first call) and apply `propagation`, both on the new mount, reopened through
/// `t`'s parent fd.
fn finish_mount(root: &Root, t: &Target, remount: Option<MsFlags>, propagation: &[MsFlags]) -> Result<()> {
    if remount.is_none() && propagation.is_empty() {
        return Ok(());
    }
    let top = root.reopen(t)?;
    if let Some(flags) = remount {
        mount_on(&top, None, None, MsFlags::MS_REMOUNT | flags, None)?;
    }
    for p in propagation {
        mount_on(&top, None, None, *p, None)?;
    }
    Ok(())
}

/// Steps 1–5 of the module docs: prepares the mount table and pivots into `rootfs`.
/// Afterwards `/` is the container's root. `cgroup_v2` selects how `cgroup` mounts are
/// made; whether the spec has a cgroup namespace, what they show: the container's own
/// cgroup either way (a fresh mount rooted by the namespace, else binds of its own cgroup).
pub fn prepare(spec: &Spec, rootfs: &Path, cgroup_v2: bool, cgroup_mounts: &[Hierarchy]) -> Result<()> {
    let linux = spec.linux().as_ref();
    let root_prop = linux
        .and_then(|l| l.rootfs_propagation().as_deref())
        .and_then(propagation_flags)
        .unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    do_mount(None, Path::new("/"), None, root_prop | MsFlags::MS_REC, None)?;
    make_parent_private(rootfs)?;
    do_mount(
        Some(&rootfs.to_string_lossy()),
        rootfs,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    // Opened after the self-bind, so the fd is on the new mount.
    let root = Root::open(rootfs)?;

    let cgroupns = linux
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|nss| nss.iter().any(|n| n.typ() == LinuxNamespaceType::Cgroup));
    let cgroups = if cgroupns {
        Vec::new()
    } else {
        own_cgroups(cgroup_mounts, cgroup_v2)?
    };
    let cg = CgroupView {
        v2: cgroup_v2,
        namespaced: cgroupns,
        // Mounted fresh only with a cgroup namespace (on v1); without one `own` is used.
        v1: if cgroupns && !cgroup_v2 {
            cgroup_mounts.to_vec()
        } else {
            Vec::new()
        },
        own: cgroups,
    };
    let mut dev_mounted = false;
    for m in spec.mounts().iter().flatten() {
        if m.destination() == Path::new("/dev") {
            dev_mounted = true;
        }
        mount_one(&root, m, &cg)?;
    }
    create_default_devices(&root, dev_mounted)?;
    for dev in linux.and_then(|l| l.devices().as_ref()).into_iter().flatten() {
        create_device(&root, dev)?;
    }
    drop(root);
    pivot(rootfs)
}

// pivot_root(2) refuses a new root whose parent mount is shared; runc does the same walk
// (rootfsParentMountPrivate).
// The mount is found by mount id (statx), walking up from the rootfs: O(depth), where
// runc's walk of /proc/self/mountinfo is O(mounts on the host), a few per pod. The
// mountinfo walk remains for kernels before 5.8, which have no mount id in statx.
fn make_parent_private(rootfs: &Path) -> Result<()> {
    let parent = match mount_point_of(rootfs) {
        Ok(p) => p,
        Err(_) => mount_point_in_mountinfo(rootfs),
    };
    do_mount(None, &parent, None, MsFlags::MS_PRIVATE, None)
}

/// Where the mount that `path` (absolute, without `..`) is on is mounted: the highest of
/// `path` and its ancestors with the same mount id (`path` itself when it is a mount
/// point). Errors: statx's, or `Unsupported` when the kernel reports no mount id.
fn mount_point_of(path: &Path) -> std::io::Result<PathBuf> {
    let id_of = |p: &Path| -> std::io::Result<u64> {
        let fd = nix::fcntl::open(p, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())?;
        crate::sys::mount_id(fd.as_fd())?.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::Unsupported))
    };
    let id = id_of(path)?;
    let mut top = path;
    while let Some(parent) = top.parent() {
        if id_of(parent)? != id {
            break;
        }
        top = parent;
    }
    Ok(top.to_path_buf())
}

/// [`mount_point_of`] from `/proc/self/mountinfo`: the longest mount point that `path`
/// is under (runc's `rootfsParentMountPrivate`), `/` if none is.
fn mount_point_in_mountinfo(path: &Path) -> PathBuf {
    let mountinfo = crate::sys::read_proc("/proc/self/mountinfo").unwrap_or_default();
    let mut best: Option<PathBuf> = None;
    for line in mountinfo.lines() {
        let Some(mp) = line.split(' ').nth(4) else { continue };
        let mp = PathBuf::from(unescape_mountinfo(mp));
        if path.starts_with(&mp) && best.as_ref().is_none_or(|b| mp.as_os_str().len() > b.as_os_str().len()) {
            best = Some(mp);
        }
    }
    best.unwrap_or_else(|| PathBuf::from("/"))
}

fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// A cgroup hierarchy mounted on the host, from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hierarchy {
    /// Directory name under `/sys/fs/cgroup` (`cpu`, `systemd`, `cpu,cpuacct`).
    name: String,
    /// Superblock options naming it (`cpu`, `name=systemd`); empty for cgroup2.
    opts: String,
    /// Where the host has it mounted.
    mountpoint: PathBuf,
    /// The cgroup at the root of that mount (mountinfo's `root` field, usually `/`).
    root: PathBuf,
}

/// What `cgroup` mounts show: with a cgroup namespace a fresh mount of each hierarchy
/// (rooted by the kernel at the namespace's cgroup); without one, binds of the
/// container's own cgroup in each host hierarchy (runc's `mountCgroupV1` via
/// `getCgroupMounts`), never the hierarchy's root with every host cgroup.
struct CgroupView {
    v2: bool,
    namespaced: bool,
    /// With a namespace on v1: the hierarchies, for fresh mounts (empty otherwise).
    v1: Vec<Hierarchy>,
    /// Without a namespace: (hierarchy, host directory of our own cgroup in it).
    own: Vec<(Hierarchy, PathBuf)>,
}

/// The cgroup hierarchies mounted on the host: v1 ones (`cgroup`) or the v2 one
/// (`cgroup2`).
fn hierarchies(mountinfo: &str, v2: bool) -> Vec<Hierarchy> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let post: Vec<&str> = post.split(' ').collect();
        let want = if v2 { "cgroup2" } else { "cgroup" };
        if post.first() != Some(&want) || post.len() < 3 {
            continue;
        }
        let pre: Vec<&str> = pre.split(' ').collect();
        let (Some(root), Some(mp)) = (pre.get(3), pre.get(4)) else {
            continue;
        };
        let mountpoint = PathBuf::from(unescape_mountinfo(mp));
        let name = mountpoint
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let opts: Vec<&str> = post[2]
            .split(',')
            .filter(|o| !matches!(*o, "rw" | "ro" | "relatime" | "nosuid" | "nodev" | "noexec"))
            .collect();
        if v2 && out.iter().any(|h: &Hierarchy| h.mountpoint == mountpoint) {
            continue;
        }
        out.push(Hierarchy {
            name,
            opts: if v2 { String::new() } else { opts.join(",") },
            mountpoint,
            root: PathBuf::from(unescape_mountinfo(root)),
        });
    }
    out
}

/// The cgroup hierarchies mounted on the host (v1 ones, or the v2 one with `v2`), read
/// from `/proc/self/mountinfo` once per process: the runtime passes them to container
/// init ([`crate::channel::InitConfig::cgroup_mounts`]) so that no create reads that file,
/// which grows with every mount on the host (see [`crate::cgroups`]).
pub fn host_hierarchies(v2: bool) -> Vec<Hierarchy> {
    static V1: std::sync::OnceLock<Vec<Hierarchy>> = std::sync::OnceLock::new();
    static V2: std::sync::OnceLock<Vec<Hierarchy>> = std::sync::OnceLock::new();
    let read = || hierarchies(&crate::sys::read_proc("/proc/self/mountinfo").unwrap_or_default(), v2);
    if v2 { &V2 } else { &V1 }.get_or_init(read).clone()
}

/// For each host hierarchy, the host directory of the calling process's own cgroup in it
/// (`<mountpoint>/<path in /proc/self/cgroup relative to the mount's root>`). Container
/// init is already in the container's cgroup when it runs this.
fn own_cgroups(mounts: &[Hierarchy], v2: bool) -> Result<Vec<(Hierarchy, PathBuf)>> {
    let cgroup = crate::sys::read_proc("/proc/self/cgroup").map_err(|source| RootfsError::Create {
        what: "cgroup file",
        path: PathBuf::from("/proc/self/cgroup"),
        source,
    })?;
    own_cgroups_in(mounts, &cgroup, v2)
}

fn own_cgroups_in(mounts: &[Hierarchy], cgroup: &str, v2: bool) -> Result<Vec<(Hierarchy, PathBuf)>> {
    let mut out = Vec::new();
    for h in mounts.iter().cloned() {
        let opts: Vec<&str> = h.opts.split(',').filter(|o| !o.is_empty()).collect();
        let path = cgroup.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            let matches = if v2 {
                ctrls.is_empty()
            } else {
                !ctrls.is_empty() && ctrls.split(',').all(|c| opts.contains(&c))
            };
            matches.then(|| PathBuf::from(path))
        });
        let Some(path) = path else {
            return Err(RootfsError::OwnCgroup {
                hierarchy: h.mountpoint.clone(),
                cause: "not listed in /proc/self/cgroup",
            });
        };
        let Ok(rel) = path.strip_prefix(&h.root) else {
            return Err(RootfsError::OwnCgroup {
                hierarchy: h.mountpoint.clone(),
                cause: "our cgroup is outside the host mount's root",
            });
        };
        let host = h.mountpoint.join(rel);
        out.push((h, host));
    }
    Ok(out)
}

fn mount_one(root: &Root, m: &Mount, cg: &CgroupView) -> Result<()> {
    let opts = parse_options(m.options().as_deref().unwrap_or_default());
    let typ = m.typ().as_deref().unwrap_or("");
    // Lexically first, so nothing is made on the way to a refused destination…
    check_proc_mount(m.destination(), m)?;
    let src = m.source().as_ref().map(|s| s.to_string_lossy().to_string());
    let data = (!opts.data.is_empty()).then_some(opts.data.as_str());
    let bind = opts.bind || typ == "bind";
    let create = if bind && !fs::metadata(src.as_deref().unwrap_or_default()).is_ok_and(|md| md.is_dir()) {
        Create::File
    } else {
        Create::Dir
    };
    // procfs and sysfs only on a plain directory, no symlink on the way (runc).
    let follow = !matches!(typ, "proc" | "sysfs");
    let dest = root
        .resolve(m.destination(), create, follow)?
        .ok_or_else(|| RootfsError::OverRoot {
            path: m.destination().to_path_buf(),
        })?;
    // …and again where the destination really is, symlinks resolved.
    check_proc_mount(&dest.path, m)?;
    if bind {
        let src = src.unwrap_or_default();
        let flags = MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC);
        mount_on(&dest, Some(&src), None, flags, None)?;
        // Bind mounts ignore other flags on the first call: remount to apply ro, nosuid…
        let rest = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        let remount = (!rest.is_empty()).then_some(MsFlags::MS_BIND | rest);
        finish_mount(root, &dest, remount, &opts.propagation)
    } else if typ == "cgroup" || typ == "cgroup2" {
        mount_cgroup(root, &dest, opts.flags, cg)?;
        finish_mount(root, &dest, None, &opts.propagation)
    } else {
        mount_on(&dest, src.as_deref().or(Some(typ)), Some(typ), opts.flags, data)?;
        finish_mount(root, &dest, None, &opts.propagation)
    }
}

/// A `cgroup` mount on `dest` as [`CgroupView`] says: cgroup2 or a tmpfs holding one
/// directory per v1 hierarchy; each a fresh mount under a cgroup namespace, else a bind
/// of the container's own cgroup.
fn mount_cgroup(root: &Root, dest: &Target, flags: MsFlags, cg: &CgroupView) -> Result<()> {
    let flags = flags | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    let bind_own = |t: &Target, host: &Path| -> Result<()> {
        let src = host.to_string_lossy();
        mount_on(t, Some(&src), None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
        finish_mount(root, t, Some(MsFlags::MS_BIND | flags), &[])
    };
    if cg.v2 {
        if cg.namespaced {
            return mount_on(dest, Some("cgroup2"), Some("cgroup2"), flags, None);
        }
        let (_, host) = cg.own.first().ok_or_else(|| RootfsError::OwnCgroup {
            hierarchy: PathBuf::from("/sys/fs/cgroup"),
            cause: "no cgroup2 mount on the host",
        })?;
        return bind_own(dest, host);
    }
    mount_on(
        dest,
        Some("tmpfs"),
        Some("tmpfs"),
        flags & !MsFlags::MS_RDONLY,
        Some("mode=755"),
    )?;
    let tmpfs = root.reopen(dest)?;
    if cg.namespaced {
        for h in &cg.v1 {
            let sub = root.child_dir(&tmpfs, std::ffi::OsStr::new(&h.name))?;
            mount_on(&sub, Some("cgroup"), Some("cgroup"), flags, Some(&h.opts))?;
        }
    } else {
        for (h, host) in &cg.own {
            let sub = root.child_dir(&tmpfs, std::ffi::OsStr::new(&h.name))?;
            bind_own(&sub, host)?;
        }
    }
    if flags.contains(MsFlags::MS_RDONLY) {
        mount_on(&tmpfs, None, None, MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags, None)?;
    }
    Ok(())
}

/// Device nodes every container gets (OCI runtime spec, "Default Devices"): path, major,
/// minor; all character devices with mode 0666.
pub const DEFAULT_DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

// `/dev` is resolved inside the rootfs as spec destinations are: an image whose `/dev` is a
// symlink, even an absolute one to a host directory, gets its nodes under
// `<rootfs>/<target>`, never on the host (runc: securejoin; the class of CVE-2021-30465).
// Nodes and links are then made relative to `/dev`'s fd, never through a symlink.
fn create_default_devices(root: &Root, dev_mounted: bool) -> Result<()> {
    let dev = root
        .resolve(Path::new("/dev"), Create::Dir, true)?
        .ok_or_else(|| RootfsError::OverRoot {
            path: PathBuf::from("/dev"),
        })?;
    for (name, major, minor) in DEFAULT_DEVICES {
        let exists = fstatat(&dev.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok();
        if !dev_mounted && exists {
            continue;
        }
        make_node(&dev, OsStr::new(name), SFlag::S_IFCHR, major, minor, 0o666, 0, 0)?;
    }
    for dir in ["pts", "shm"] {
        root.resolve(&Path::new("/dev").join(dir), Create::Dir, true)?;
    }
    // An existing link is kept as the image has it.
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        if fstatat(&dev.fd, link, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok() {
            continue;
        }
        symlinkat(target, &dev.fd, link).map_err(|source| RootfsError::Create {
            what: "symlink",
            path: dev.path.join(link),
            source: source.into(),
        })?;
    }
    Ok(())
}

/// Makes one node of `linux.devices`. A node that cannot be replaced is kept: runc's
/// `createDeviceNode` ignores EEXIST the same way, and containerd's privileged spec lists
/// every host device, `/dev/pts/ptmx` among them, which the container's own devpts
/// already holds (and does not let us remove).
fn create_device(root: &Root, dev: &LinuxDevice) -> Result<()> {
    let path = dev.path();
    let name = path.file_name().ok_or_else(|| RootfsError::OverRoot {
        path: path.to_path_buf(),
    })?;
    let parent = path.parent().unwrap_or(Path::new("/"));
    let dir = if in_root::clean(parent).is_empty() {
        // A device at the top of the rootfs: its directory is the root itself.
        Target {
            parent: root.fd().try_clone_to_owned().map_err(|source| RootfsError::Create {
                what: "fd",
                path: path.to_path_buf(),
                source,
            })?,
            name: ".".into(),
            fd: root.fd().try_clone_to_owned().map_err(|source| RootfsError::Create {
                what: "fd",
                path: path.to_path_buf(),
                source,
            })?,
            path: PathBuf::from("/"),
        }
    } else {
        root.resolve(parent, Create::Dir, true)?
            .ok_or_else(|| RootfsError::OverRoot {
                path: path.to_path_buf(),
            })?
    };
    let kind = match dev.typ() {
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        _ => SFlag::S_IFCHR,
    };
    let major = u64::try_from(dev.major()).unwrap_or(0);
    let minor = u64::try_from(dev.minor()).unwrap_or(0);
    match make_node(
        &dir,
        name,
        kind,
        major,
        minor,
        dev.file_mode().unwrap_or(0o666),
        dev.uid().unwrap_or(0),
        dev.gid().unwrap_or(0),
    ) {
        Err(RootfsError::Create {
            what: "device", source, ..
        }) if source.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}

/// Makes the node `name` in the directory `dir` (replacing what is there: a symlink is
/// removed, never followed), then sets its mode and owner through an fd of the node
/// itself, checked to be the node just made.
#[allow(clippy::too_many_arguments)]
fn make_node(
    dir: &Target,
    name: &OsStr,
    kind: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<()> {
    let path = dir.path.join(name);
    let err = |source: nix::Error| RootfsError::Create {
        what: "device",
        path: path.clone(),
        source: source.into(),
    };
    let _ = unlinkat(&dir.fd, name, UnlinkatFlags::NoRemoveDir);
    let rdev = makedev(major, minor);
    mknodat(&dir.fd, name, kind, Mode::from_bits_truncate(mode & 0o7777), rdev).map_err(err)?;
    let node = in_root::open_beneath(&dir.fd, name).map_err(err)?;
    let st = fstat(&node).map_err(err)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != kind || (kind != SFlag::S_IFIFO && st.st_rdev != rdev) {
        return Err(RootfsError::Swapped { path });
    }
    // mknod honours the umask; the spec's fileMode is meant literally. chmod(2) through
    // the fd's /proc link: fchmod does not take O_PATH fds.
    fs::set_permissions(
        in_root::proc_fd_path(node.as_fd()),
        std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777),
    )
    .map_err(|source| RootfsError::Create {
        what: "device",
        path: path.clone(),
        source,
    })?;
    fchownat(
        &node,
        "",
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        AtFlags::AT_EMPTY_PATH,
    )
    .map_err(err)
}

fn pivot(rootfs: &Path) -> Result<()> {
    let err = |source| RootfsError::PivotRoot {
        rootfs: rootfs.to_path_buf(),
        source,
    };
    chdir(rootfs).map_err(err)?;
    match pivot_root(".", ".") {
        Ok(()) => {
            // The old root is stacked under the new one: detach it without letting the
            // unmount propagate to the host.
            do_mount(None, Path::new("."), None, MsFlags::MS_SLAVE | MsFlags::MS_REC, None)?;
            umount2(".", MntFlags::MNT_DETACH).map_err(err)?;
        }
        // The initramfs root (ramfs) cannot be pivoted away from: move and chroot.
        Err(nix::Error::EINVAL) => {
            do_mount(Some("."), Path::new("/"), None, MsFlags::MS_MOVE, None)?;
            chroot(".").map_err(err)?;
        }
        Err(e) => return Err(err(e)),
    }
    chdir("/").map_err(err)
}

/// Bind-mounts the container's terminal (a slave in its devpts) on `/dev/console`, as
/// the OCI runtime spec asks for processes with `terminal: true`. Runs after pivot_root:
/// `/` is the container's root.
pub fn bind_console(slave: &Path) -> Result<()> {
    let root = Root::open(Path::new("/"))?;
    let console = root
        .resolve(Path::new("/dev/console"), Create::File, true)?
        .ok_or_else(|| RootfsError::OverRoot {
            path: PathBuf::from("/dev/console"),
        })?;
    mount_on(&console, Some(&slave.to_string_lossy()), None, MsFlags::MS_BIND, None)
}

/// After pivot_root: sysctls, hostname, read-only and masked paths, read-only root. Paths
/// are resolved inside `/` and mounted on through their fds, as in [`prepare`].
pub fn finalize(spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref();
    for (key, value) in linux.and_then(|l| l.sysctl().as_ref()).into_iter().flatten() {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        fs::write(&path, value).map_err(|source| RootfsError::Sysctl {
            key: key.clone(),
            value: value.clone(),
            source,
        })?;
    }
    if let Some(hostname) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(hostname).map_err(|source| RootfsError::Hostname {
            hostname: hostname.to_string(),
            source,
        })?;
    }
    let root = Root::open(Path::new("/"))?;
    for path in linux.and_then(|l| l.readonly_paths().as_ref()).into_iter().flatten() {
        let Some(t) = root.resolve(Path::new(path), Create::Nothing, true)? else {
            continue;
        };
        let src = t.proc_path();
        mount_on(&t, Some(&src), None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
        let ro = MsFlags::MS_BIND | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        finish_mount(&root, &t, Some(ro), &[])?;
    }
    for path in linux.and_then(|l| l.masked_paths().as_ref()).into_iter().flatten() {
        let Some(t) = root.resolve(Path::new(path), Create::Nothing, true)? else {
            continue;
        };
        if fstat(&t.fd).is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR) {
            mount_on(&t, Some("tmpfs"), Some("tmpfs"), MsFlags::MS_RDONLY, None)?;
        } else {
            mount_on(&t, Some("/dev/null"), None, MsFlags::MS_BIND, None)?;
        }
    }
    drop(root);
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
        do_mount(None, Path::new("/"), None, flags, None)?;
    }
    Ok(())
}

/// Mounts the caller's rootfs list (containerd's `CreateTaskRequest.rootfs`: usually one
/// overlay, or a bind) on `target`, in order, on the host. Returns how many succeeded, so
/// the caller can unmount exactly those.
pub fn mount_rootfs_layers(layers: &[RootfsMount], target: &Path) -> Result<()> {
    mkdir_all(target)?;
    for layer in layers {
        let opts = parse_options(&layer.options);
        let data = (!opts.data.is_empty()).then_some(opts.data.as_str());
        let fstype = (!opts.bind && layer.fstype != "bind").then_some(layer.fstype.as_str());
        do_mount(Some(&layer.source), target, fstype, opts.flags, data)?;
    }
    Ok(())
}

/// Detaches everything mounted at `target` (all stacked layers).
pub fn unmount_all(target: &Path) -> Result<()> {
    loop {
        match umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => return Ok(()),
            Err(source) => {
                return Err(RootfsError::Mount {
                    src: String::new(),
                    dst: target.to_path_buf(),
                    fstype: "umount".into(),
                    flags: MsFlags::empty(),
                    source,
                })
            }
        }
    }
}

/// One filesystem to mount as (part of) the container's rootfs, as containerd's
/// `types.Mount`: `type` (`overlay`, `bind`), `source`, and mount(8) `options`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RootfsMount {
    /// Filesystem type (`overlay`, `bind`, `tmpfs`…).
    pub fstype: String,
    /// Source: a device, a directory for binds, or the fs name (`overlay`).
    pub source: String,
    /// mount(8) options, e.g. `["lowerdir=/a:/b", "upperdir=/u", "workdir=/w"]`.
    pub options: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_flags_propagation_and_data() {
        let o = parse_options(&[
            "nosuid".into(),
            "ro".into(),
            "rw".into(),
            "rslave".into(),
            "mode=755".into(),
            "size=1k".into(),
        ]);
        assert_eq!(o.flags, MsFlags::MS_NOSUID);
        assert_eq!(o.propagation, vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]);
        assert_eq!(o.data, "mode=755,size=1k");
        assert!(!o.bind);
        assert!(parse_options(&["rbind".into()]).bind);
    }

    fn resolved(root: &Root, p: &str, create: Create) -> PathBuf {
        root.resolve(Path::new(p), create, true).unwrap().unwrap().path
    }

    #[test]
    fn symlinks_cannot_escape_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        fs::create_dir_all(r.join("real")).unwrap();
        std::os::unix::fs::symlink("/real", r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", r.join("up")).unwrap();
        std::os::unix::fs::symlink("loop", r.join("loop")).unwrap();
        // Dangling, pointing at a host directory: followed inside, made there.
        std::os::unix::fs::symlink(r.join("host"), r.join("dangling")).unwrap();
        let root = Root::open(r).unwrap();
        assert_eq!(resolved(&root, "/abs/x", Create::Dir), Path::new("/real/x"));
        assert!(r.join("real/x").is_dir());
        assert_eq!(resolved(&root, "/up/passwd", Create::File), Path::new("/etc/passwd"));
        assert!(r.join("etc/passwd").is_file());
        assert_eq!(resolved(&root, "/../../y", Create::Dir), Path::new("/y"));
        let inside = Path::new("/").join(r.join("host").strip_prefix("/").unwrap()).join("z");
        assert_eq!(resolved(&root, "/dangling/z", Create::Dir), inside);
        assert!(!r.join("host").exists(), "made outside the root");
        assert!(r.join(inside.strip_prefix("/").unwrap()).is_dir());
        assert!(matches!(
            root.resolve(Path::new("/loop"), Create::Dir, true),
            Err(RootfsError::SymlinkLoop { .. })
        ));
        assert!(matches!(
            root.resolve(Path::new("/"), Create::Dir, true),
            Err(RootfsError::OverRoot { .. })
        ));
        assert!(root
            .resolve(Path::new("/none/x"), Create::Nothing, true)
            .unwrap()
            .is_none());
        assert!(!r.join("none").exists());
        // Without following, any symlink on the way is refused.
        assert!(matches!(
            root.resolve(Path::new("/abs/x"), Create::Dir, false),
            Err(RootfsError::NotPlain { .. })
        ));
    }

    #[test]
    fn proc_mounts_follow_runcs_rules() {
        let m = |typ: &str, src: &str| {
            oci_spec::runtime::MountBuilder::default()
                .destination("/x")
                .typ(typ)
                .source(src)
                .build()
                .unwrap()
        };
        let tmpfs = m("tmpfs", "tmpfs");
        assert!(check_proc_mount(Path::new("/proc"), &m("proc", "proc")).is_ok());
        assert!(check_proc_mount(Path::new("/proc"), &m("bind", "/proc")).is_ok());
        assert!(check_proc_mount(Path::new("/proc/"), &tmpfs).is_err());
        assert!(check_proc_mount(Path::new("/proc"), &m("bind", "/tmp")).is_err());
        assert!(check_proc_mount(Path::new("/proc/uptime"), &m("bind", "/tmp/x")).is_ok());
        assert!(check_proc_mount(Path::new("/proc/sys/kernel/ns_last_pid"), &tmpfs).is_ok());
        let err = check_proc_mount(Path::new("/proc/sys/../sys/kernel"), &tmpfs).unwrap_err();
        assert!(err.to_string().contains("/proc/sys/kernel"), "{err}");
        assert!(check_proc_mount(Path::new("/proc/self/attr"), &tmpfs).is_err());
        assert!(check_proc_mount(Path::new("/proc/net/dev"), &tmpfs).is_err());
        assert!(check_proc_mount(Path::new("/procs"), &tmpfs).is_ok());
        assert!(check_proc_mount(Path::new("/x/../proc/kcore"), &tmpfs).is_err());
    }

    /// The mount-id walk finds the mount point runc's mountinfo walk finds, for a mount
    /// point itself, paths below one, and `/`.
    #[test]
    fn the_mount_of_a_path_by_mount_id_is_the_one_mountinfo_lists() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b");
        fs::create_dir_all(&deep).unwrap();
        for p in [
            Path::new("/"),
            Path::new("/proc"),
            Path::new("/proc/sys/kernel"),
            Path::new("/usr/bin"),
            &deep,
        ] {
            assert_eq!(
                mount_point_of(p).unwrap(),
                mount_point_in_mountinfo(p),
                "{}",
                p.display()
            );
        }
    }

    #[test]
    fn own_cgroups_are_the_hierarchy_mount_plus_our_path() {
        let mountinfo = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
32 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
33 30 0:29 /kube /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";
        let cgroup = "3:memory:/kube/pod1/c\n2:cpu,cpuacct:/kube/pod1/c\n1:name=systemd:/system.slice/x\n0::/\n";
        let own = own_cgroups_in(&hierarchies(mountinfo, false), cgroup, false).unwrap();
        let got: Vec<(&str, &Path)> = own.iter().map(|(h, p)| (h.name.as_str(), p.as_path())).collect();
        assert_eq!(
            got,
            vec![
                ("systemd", Path::new("/sys/fs/cgroup/systemd/system.slice/x")),
                ("cpu,cpuacct", Path::new("/sys/fs/cgroup/cpu,cpuacct/kube/pod1/c")),
                ("memory", Path::new("/sys/fs/cgroup/memory/pod1/c")),
            ]
        );
        let v2 = "40 25 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let own = own_cgroups_in(&hierarchies(v2, true), "0::/kubepods/p/c\n", true).unwrap();
        assert_eq!(own[0].1, Path::new("/sys/fs/cgroup/kubepods/p/c"));
        assert!(matches!(
            own_cgroups_in(&hierarchies(mountinfo, false), "3:memory:/elsewhere\n", false),
            Err(RootfsError::OwnCgroup { .. })
        ));
    }
}
