//! Directories and files the runtime keeps on the host, and who may reach them.
//!
//! A container's root filesystem (an overlay's upper directory and the merged mount), its
//! emptyDirs and its spec all live in host directories. Container root can write a
//! setuid-root binary there; a host user who can walk to it runs it as root
//! (CVE-2021-41103, where containerd's state and snapshot directories were 0755). Search
//! permission on every directory of a path is needed to reach a file, so one closed
//! directory in the chain is enough: containerd makes its roots 0711 (others may pass
//! through to a path they already know, but not list) and every per-container directory
//! 0700; kubelet's pods directory is 0750. peapod does the same: its roots and the
//! directories above a pod are created 0711 ([`ROOT_MODE`]), each pod's and each
//! container's own directory 0700 ([`PRIVATE_MODE`]). What a container sees (its rootfs
//! root, an emptyDir) keeps its own mode (0755, 0777) below that closed directory: a
//! container reaches it through a bind or overlay mount, never through the host path.
//!
//! Files that hold a spec (`config.json`, `pod.json`, `state.json`: environment values,
//! often secrets) are 0600 ([`PRIVATE_FILE_MODE`]).
//!
//! Modes are applied with chmod after creation, so they do not depend on the umask; the
//! shim and the CLI also set their umask to 0022 ([`set_umask`]) so that nothing else
//! they create is group- or world-writable whatever umask their starter had.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of the runtime's roots and of the directories above a pod's: search only for
/// others (containerd's `/run/containerd` and `/var/lib/containerd`).
pub const ROOT_MODE: u32 = 0o711;
/// Mode of a pod's or a container's own directory (containerd's bundle directories).
pub const PRIVATE_MODE: u32 = 0o700;
/// Mode of files holding a spec or a pod's record.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// The process umask of the shim and the CLI: runc's default for containers
/// (`libcontainer/rootfs_linux.go`, `finalizeRootfs`). Not 0077: the shim binary is also
/// the container init helper and makes mount points and device symlinks inside rootfs
/// that the container's non-root users must be able to use.
pub const UMASK: u32 = 0o022;

/// Creates directory `path` with [`PRIVATE_MODE`], its missing ancestors with
/// [`ROOT_MODE`]. An existing `path` is chmodded to [`PRIVATE_MODE`] (it is ours: a pod's
/// or a container's directory); existing ancestors keep their mode (they may be symlinks:
/// an administrator's choice). `path` itself is never followed when it is a symlink: the
/// runtime writes below it as root, and a link left there (by an earlier run, or planted)
/// would send those writes, and the chmod, to the host directory it names.
///
/// Errors: mkdir(2), open(2) or fchmod(2) failed (the path in the caller's error): "a
/// symlink, not a directory: not followed" when `path` is a symlink, ENOTDIR when it is
/// another non-directory.
pub fn create_private(path: &Path) -> io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_root(parent)?;
    }
    match fs::DirBuilder::new().mode(PRIVATE_MODE).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    // The mode through an fd opened without following `path`: the chmod reaches this
    // directory or nothing.
    let dir = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            // ENOTDIR (with O_DIRECTORY) or ELOOP: say which.
            if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
                io::Error::new(e.kind(), "a symlink, not a directory: not followed")
            } else {
                e
            }
        })?;
    dir.set_permissions(fs::Permissions::from_mode(PRIVATE_MODE))
}

/// Creates directory `path` and its missing ancestors with [`ROOT_MODE`]; an existing one
/// keeps its mode (an administrator's choice, or an older peapod's: the per-pod
/// directories below are closed regardless).
///
/// Errors: mkdir(2) failed.
pub fn create_root(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new().recursive(true).mode(ROOT_MODE).create(path)
}

/// Writes `bytes` to `path` (created or truncated) with mode [`PRIVATE_FILE_MODE`], also
/// when the file existed with another mode.
///
/// Errors: open(2), fchmod(2) or write(2) failed.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)?;
    f.set_permissions(fs::Permissions::from_mode(PRIVATE_FILE_MODE))?;
    f.write_all(bytes)
}

/// Sets the process umask to [`UMASK`]; call first thing in `main`, before any thread.
pub fn set_umask() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(UMASK));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn private_dirs_are_0700_under_0711_ancestors() {
        let dir = tempfile::tempdir().unwrap();
        let leaf = dir.path().join("a/b/pod");
        create_private(&leaf).unwrap();
        assert_eq!(mode(&dir.path().join("a")), ROOT_MODE);
        assert_eq!(mode(&dir.path().join("a/b")), ROOT_MODE);
        assert_eq!(mode(&leaf), PRIVATE_MODE);
        // An existing leaf is closed; an existing ancestor is left alone.
        fs::set_permissions(&leaf, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(dir.path().join("a"), fs::Permissions::from_mode(0o755)).unwrap();
        create_private(&leaf).unwrap();
        assert_eq!(mode(&leaf), PRIVATE_MODE);
        assert_eq!(mode(&dir.path().join("a")), 0o755);
        let file = leaf.join("pod.json");
        fs::write(&file, "old").unwrap();
        write_private(&file, b"{}").unwrap();
        assert_eq!(
            (mode(&file), fs::read_to_string(&file).unwrap().as_str()),
            (PRIVATE_FILE_MODE, "{}")
        );
        // A symlink where the leaf goes is not followed: its target keeps its mode.
        let target = dir.path().join("target");
        fs::create_dir(&target).unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
        let link = dir.path().join("a/b/link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = create_private(&link).unwrap_err();
        assert_eq!(e.raw_os_error(), None, "{e}");
        assert!(e.to_string().contains("symlink"), "{e}");
        assert_eq!(mode(&target), 0o755);
        fs::write(dir.path().join("a/b/file"), "").unwrap();
        let e = create_private(&dir.path().join("a/b/file")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTDIR), "{e}");
    }
}
