//! The container's mount table: rootfs, spec mounts, /dev, pivot_root, masked and
//! read-only paths (OCI runtime spec, "Linux container configuration": mounts, devices,
//! maskedPaths, readonlyPaths, rootfsPropagation).
//!
//! Runs in container init, inside its new mount namespace, in this order (runc's
//! `prepareRootfs` then `finalizeRootfs`):
//! 1. make `/` recursively slave (or as `rootfsPropagation` says) so nothing propagates
//!    back to the host, and the rootfs's parent private so `pivot_root` is allowed;
//! 2. bind the rootfs onto itself (pivot_root needs a mount point);
//! 3. spec mounts in order, each destination resolved inside the rootfs without following
//!    symlinks out of it;
//! 4. default /dev nodes and symlinks, then `linux.devices`, every path (`/dev` itself
//!    included) resolved inside the rootfs the same way: an image's `/dev` symlink to a
//!    host directory never gets nodes made there (securejoin's class, CVE-2021-30465);
//! 5. `pivot_root(".", ".")` and a lazy unmount of the old root (`MS_MOVE` + `chroot`
//!    when the root is a ramfs, where pivot_root is refused);
//!
//! and, in [`finalize`], after the process-level settings: sysctls, hostname, read-only paths, masked paths,
//! and last the read-only remount of `/` when `root.readonly` is set.

use std::fs;
use std::os::unix::fs::{symlink, DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{chdir, chown, chroot, pivot_root, Gid, Uid};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};

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
        /// `directory`, `file`, `device` or `symlink`.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
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

/// Resolves `unsafe_path` (absolute, as seen in the container) under `root`, following
/// symlinks as the container would see them, so that a symlink in the image can never
/// point a mount outside the rootfs (the bug class of CVE-2021-30465's ancestors).
/// Components that do not exist yet are appended as they are.
pub fn resolve_in_root(root: &Path, unsafe_path: &Path) -> Result<PathBuf> {
    let mut resolved = PathBuf::new();
    let mut pending: Vec<PathBuf> = unsafe_path
        .components()
        .rev()
        .map(|c| PathBuf::from(c.as_os_str()))
        .collect();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        match part.components().next() {
            Some(Component::RootDir) | Some(Component::CurDir) | None => continue,
            Some(Component::ParentDir) => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let candidate = resolved.join(&part);
        let host = root.join(&candidate);
        match fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 255 {
                    return Err(RootfsError::SymlinkLoop {
                        path: unsafe_path.to_path_buf(),
                    });
                }
                let target = fs::read_link(&host).map_err(|source| RootfsError::Create {
                    what: "symlink",
                    path: host.clone(),
                    source,
                })?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for c in target.components().rev() {
                    pending.push(PathBuf::from(c.as_os_str()));
                }
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
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

fn touch(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        mkdir_all(parent)?;
    }
    if path.exists() {
        return Ok(());
    }
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o644)
        .open(path)
        .map(drop)
        .map_err(|source| RootfsError::Create {
            what: "file",
            path: path.to_path_buf(),
            source,
        })
}

/// Steps 1–5 of the module docs: prepares the mount table and pivots into `rootfs`.
/// Afterwards `/` is the container's root. `cgroup_v2` selects how `cgroup` mounts are made.
pub fn prepare(spec: &Spec, rootfs: &Path, cgroup_v2: bool) -> Result<()> {
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

    let v1_hierarchies = if cgroup_v2 { Vec::new() } else { v1_hierarchies() };
    let mut dev_mounted = false;
    for m in spec.mounts().iter().flatten() {
        if m.destination() == Path::new("/dev") {
            dev_mounted = true;
        }
        mount_one(rootfs, m, cgroup_v2, &v1_hierarchies)?;
    }
    create_default_devices(rootfs, dev_mounted)?;
    for dev in linux.and_then(|l| l.devices().as_ref()).into_iter().flatten() {
        create_device(rootfs, dev)?;
    }
    pivot(rootfs)
}

// pivot_root(2) refuses a new root whose parent mount is shared; runc does the same walk
// (rootfsParentMountPrivate).
fn make_parent_private(rootfs: &Path) -> Result<()> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut best: Option<PathBuf> = None;
    for line in mountinfo.lines() {
        let Some(mp) = line.split(' ').nth(4) else { continue };
        let mp = PathBuf::from(unescape_mountinfo(mp));
        if rootfs.starts_with(&mp) && best.as_ref().is_none_or(|b| mp.as_os_str().len() > b.as_os_str().len()) {
            best = Some(mp);
        }
    }
    let parent = best.unwrap_or_else(|| PathBuf::from("/"));
    do_mount(None, &parent, None, MsFlags::MS_PRIVATE, None)
}

fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The cgroup v1 hierarchies mounted on the host: (directory name, superblock options),
/// e.g. `("cpu", "cpu")`, `("systemd", "name=systemd")`.
fn v1_hierarchies() -> Vec<(String, String)> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let post: Vec<&str> = post.split(' ').collect();
        if post.first() != Some(&"cgroup") || post.len() < 3 {
            continue;
        }
        let Some(mp) = pre.split(' ').nth(4) else { continue };
        let name = Path::new(mp)
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let opts: Vec<&str> = post[2]
            .split(',')
            .filter(|o| !matches!(*o, "rw" | "ro" | "relatime" | "nosuid" | "nodev" | "noexec"))
            .collect();
        out.push((name, opts.join(",")));
    }
    out
}

fn mount_one(rootfs: &Path, m: &Mount, cgroup_v2: bool, v1: &[(String, String)]) -> Result<()> {
    let opts = parse_options(m.options().as_deref().unwrap_or_default());
    let typ = m.typ().as_deref().unwrap_or("");
    let dest = resolve_in_root(rootfs, m.destination())?;
    let src = m.source().as_ref().map(|s| s.to_string_lossy().to_string());
    let data = (!opts.data.is_empty()).then_some(opts.data.as_str());
    if opts.bind || typ == "bind" {
        let src = src.unwrap_or_default();
        if fs::metadata(&src).map(|md| md.is_dir()).unwrap_or(false) {
            mkdir_all(&dest)?;
        } else {
            touch(&dest)?;
        }
        let bind = MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC);
        do_mount(Some(&src), &dest, None, bind, None)?;
        // Bind mounts ignore other flags on the first call: remount to apply ro, nosuid…
        let rest = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !rest.is_empty() {
            do_mount(None, &dest, None, MsFlags::MS_REMOUNT | MsFlags::MS_BIND | rest, None)?;
        }
    } else if typ == "cgroup" || typ == "cgroup2" {
        mount_cgroup(&dest, opts.flags, cgroup_v2, v1)?;
    } else {
        mkdir_all(&dest)?;
        do_mount(src.as_deref().or(Some(typ)), &dest, Some(typ), opts.flags, data)?;
    }
    for p in &opts.propagation {
        do_mount(None, &dest, None, *p, None)?;
    }
    Ok(())
}

// With a cgroup namespace (peapod creates one unless told otherwise) the freshly mounted
// hierarchies show the container's own cgroup as their root.
fn mount_cgroup(dest: &Path, flags: MsFlags, cgroup_v2: bool, v1: &[(String, String)]) -> Result<()> {
    mkdir_all(dest)?;
    let flags = flags | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    if cgroup_v2 {
        return do_mount(Some("cgroup2"), dest, Some("cgroup2"), flags, None);
    }
    do_mount(
        Some("tmpfs"),
        dest,
        Some("tmpfs"),
        flags & !MsFlags::MS_RDONLY,
        Some("mode=755"),
    )?;
    for (name, opts) in v1 {
        let sub = dest.join(name);
        mkdir_all(&sub)?;
        do_mount(Some("cgroup"), &sub, Some("cgroup"), flags, Some(opts))?;
    }
    if flags.contains(MsFlags::MS_RDONLY) {
        do_mount(None, dest, None, MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags, None)?;
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

// Every path is resolved inside the rootfs as spec destinations are: an image whose `/dev`
// (or `/dev/null`, `/dev/pts`, …) is a symlink, even an absolute one to a host directory,
// gets its nodes under `<rootfs>/<target>`, never on the host (runc: securejoin; the class
// of CVE-2021-30465).
fn create_default_devices(rootfs: &Path, dev_mounted: bool) -> Result<()> {
    let dev = resolve_in_root(rootfs, Path::new("/dev"))?;
    mkdir_all(&dev)?;
    let in_dev = |name: &str| resolve_in_root(rootfs, &Path::new("/dev").join(name));
    for (name, major, minor) in DEFAULT_DEVICES {
        let path = in_dev(name)?;
        if !dev_mounted && path.exists() {
            continue;
        }
        make_node(&path, SFlag::S_IFCHR, major, minor, 0o666, 0, 0)?;
    }
    mkdir_all(&in_dev("pts")?)?;
    mkdir_all(&in_dev("shm")?)?;
    // The links themselves are made in the resolved `/dev`: resolving their own name would
    // follow an existing link, which is kept as the image has it.
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let path = dev.join(link);
        if fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        symlink(target, &path).map_err(|source| RootfsError::Create {
            what: "symlink",
            path,
            source,
        })?;
    }
    Ok(())
}

/// Makes one node of `linux.devices`. A node that cannot be replaced is kept: runc's
/// `createDeviceNode` ignores EEXIST the same way, and containerd's privileged spec lists
/// every host device, `/dev/pts/ptmx` among them, which the container's own devpts
/// already holds (and does not let us remove).
fn create_device(rootfs: &Path, dev: &LinuxDevice) -> Result<()> {
    let path = resolve_in_root(rootfs, dev.path())?;
    let kind = match dev.typ() {
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        _ => SFlag::S_IFCHR,
    };
    let major = u64::try_from(dev.major()).unwrap_or(0);
    let minor = u64::try_from(dev.minor()).unwrap_or(0);
    match make_node(
        &path,
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

fn make_node(path: &Path, kind: SFlag, major: u64, minor: u64, mode: u32, uid: u32, gid: u32) -> Result<()> {
    if let Some(parent) = path.parent() {
        mkdir_all(parent)?;
    }
    let _ = fs::remove_file(path);
    let err = |source: std::io::Error| RootfsError::Create {
        what: "device",
        path: path.to_path_buf(),
        source,
    };
    mknod(
        path,
        kind,
        Mode::from_bits_truncate(mode & 0o7777),
        makedev(major, minor),
    )
    .map_err(|e| err(e.into()))?;
    // mknod honours the umask; the spec's fileMode is meant literally.
    fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777)).map_err(err)?;
    chown(path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))).map_err(|e| err(e.into()))
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
/// the OCI runtime spec asks for processes with `terminal: true`.
pub fn bind_console(slave: &Path) -> Result<()> {
    let console = Path::new("/dev/console");
    touch(console)?;
    do_mount(Some(&slave.to_string_lossy()), console, None, MsFlags::MS_BIND, None)
}

/// After pivot_root: sysctls, hostname, read-only and masked paths, read-only root.
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
    for path in linux.and_then(|l| l.readonly_paths().as_ref()).into_iter().flatten() {
        let p = Path::new(path);
        if !p.exists() {
            continue;
        }
        let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
        do_mount(Some(path), p, None, flags, None)?;
        let ro = MsFlags::MS_REMOUNT
            | MsFlags::MS_BIND
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC;
        do_mount(None, p, None, ro, None)?;
    }
    for path in linux.and_then(|l| l.masked_paths().as_ref()).into_iter().flatten() {
        let p = Path::new(path);
        match fs::metadata(p) {
            Ok(m) if m.is_dir() => do_mount(Some("tmpfs"), p, Some("tmpfs"), MsFlags::MS_RDONLY, None)?,
            Ok(_) => do_mount(Some("/dev/null"), p, None, MsFlags::MS_BIND, None)?,
            Err(_) => continue,
        }
    }
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

    #[test]
    fn symlinks_cannot_escape_the_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("real")).unwrap();
        symlink("/real", r.join("abs")).unwrap();
        symlink("../../../../etc", r.join("up")).unwrap();
        symlink("loop", r.join("loop")).unwrap();
        assert_eq!(resolve_in_root(r, Path::new("/abs/x")).unwrap(), r.join("real/x"));
        assert_eq!(
            resolve_in_root(r, Path::new("/up/passwd")).unwrap(),
            r.join("etc/passwd")
        );
        assert_eq!(resolve_in_root(r, Path::new("/../../x")).unwrap(), r.join("x"));
        assert!(matches!(
            resolve_in_root(r, Path::new("/loop")),
            Err(RootfsError::SymlinkLoop { .. })
        ));
    }
}
