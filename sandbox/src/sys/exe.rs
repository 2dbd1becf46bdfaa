//! The sealed executable the init helper runs from (CVE-2019-5736): a detached,
//! read-only overlayfs view of the binary (the new mount API, Linux 5.2+), or a sealed
//! memfd copy where that is missing.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::OnceLock;

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};

use super::{last_error, SysError};

/// An executable handle to the init helper's binary that nothing can write through.
///
/// The container init helper is executed from this handle (`/proc/self/fd/N`), never from
/// the file's own path: a process in the container that opens `/proc/<helper>/exe` for
/// writing must not reach the runtime binary on the host (CVE-2019-5736). Two kinds, as in
/// runc 1.2:
/// - `Shared`: the binary seen through a private, detached, read-only overlayfs whose
///   lower layer is the binary's directory. Writes fail with `EROFS` and, unlike a
///   read-only bind mount, there is no writable mount to get back to. Nothing is copied:
///   every helper maps the file's own page cache. Made once per binary and process.
/// - `Copy`: a sealed memfd copy (write, grow and shrink seals; writes fail with
///   `EPERM`), where overlayfs or the new mount API is missing.
#[derive(Debug)]
pub enum SealedExe {
    /// A process-wide handle (an `O_PATH` fd in the detached overlay, or the kept copy of
    /// our own executable).
    Shared(BorrowedFd<'static>),
    /// A fresh sealed memfd copy, gone once the helper has exec'd.
    Copy(OwnedFd),
}

impl AsFd for SealedExe {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            SealedExe::Shared(fd) => *fd,
            SealedExe::Copy(fd) => fd.as_fd(),
        }
    }
}

/// The [`SealedExe`] of the binary at `path`: shared through overlayfs when possible, else
/// a fresh sealed copy (kept for the process when `path` is our own executable).
///
/// `scratch` is any existing directory that neither contains nor lies inside the binary's
/// directory (the state root): overlayfs needs a second lower layer to run without an
/// upper one; the binary's directory sits above it, so its contents never show.
///
/// Errors: only those of the copy (open, `memfd_create`, the copy, `F_ADD_SEALS`); an
/// overlay that cannot be made is not an error.
pub fn sealed_exe(path: &Path, scratch: &Path) -> Result<SealedExe, SysError> {
    static OVERLAID: std::sync::Mutex<Vec<(std::path::PathBuf, BorrowedFd<'static>)>> =
        std::sync::Mutex::new(Vec::new());
    let mut overlaid = OVERLAID.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, fd)) = overlaid.iter().find(|(p, _)| p == path) {
        return Ok(SealedExe::Shared(*fd));
    }
    match overlay_exe(path, scratch) {
        Ok(fd) => {
            // One fd per distinct binary for the life of the process; it pins nothing but
            // the detached mount.
            let fd: &'static OwnedFd = Box::leak(Box::new(fd));
            overlaid.push((path.to_path_buf(), fd.as_fd()));
            Ok(SealedExe::Shared(fd.as_fd()))
        }
        Err(e) => {
            tracing::debug!(
                "no overlayfs seal for {} ({e}); copying it into a memfd",
                path.display()
            );
            drop(overlaid);
            let own = std::env::current_exe().is_ok_and(|exe| exe == path);
            if own {
                sealed_self_exe().map(SealedExe::Shared)
            } else {
                sealed_copy_of(path).map(SealedExe::Copy)
            }
        }
    }
}

// From include/uapi/linux/mount.h (libc does not export them yet).
const FSOPEN_CLOEXEC: libc::c_uint = 0x1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 0x1;
const MOUNT_ATTR_RDONLY: libc::c_uint = 0x1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;

/// An `O_PATH` fd of `path` opened through a detached overlayfs (`fsopen`, `fsmount`,
/// Linux 5.2+) with lower layers `<dir of path>:<scratch>`, mounted read-only, nosuid
/// and nodev, attached nowhere: it lives as long as the fd.
fn overlay_exe(path: &Path, scratch: &Path) -> Result<OwnedFd, SysError> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(SysError {
            op: format!("overlay of {}", path.display()),
            source: io::Error::from_raw_os_error(libc::EINVAL),
        });
    };
    // Layer paths escape `\` and `:` (the separator).
    let escape = |p: &Path| p.to_string_lossy().replace('\\', "\\\\").replace(':', "\\:");
    let lower = format!("{}:{}", escape(dir), escape(scratch));
    let cstr = |s: &[u8]| {
        CString::new(s).map_err(|_| SysError {
            op: format!("overlay of {}", path.display()),
            source: io::Error::from_raw_os_error(libc::EINVAL),
        })
    };
    let (fs, key, value, off, name) = (
        cstr(b"overlay")?,
        cstr(b"lowerdir")?,
        cstr(lower.as_bytes())?,
        cstr(b"xino")?,
        cstr(name.as_bytes())?,
    );
    let off_value = cstr(b"off")?;
    // SAFETY: fsopen takes a NUL-terminated name and flags, returns a new fd or -1.
    let ctx = unsafe { libc::syscall(libc::SYS_fsopen, fs.as_ptr(), FSOPEN_CLOEXEC) };
    let ctx = owned_fd(ctx, || "fsopen(overlay)".into())?;
    let config = |key: &CString, value: Option<&CString>, cmd: libc::c_uint| {
        let value = value.map_or(std::ptr::null(), |v| v.as_ptr());
        let key = if cmd == FSCONFIG_CMD_CREATE {
            std::ptr::null()
        } else {
            key.as_ptr()
        };
        // SAFETY: fsconfig reads the NUL-terminated key and value (or nulls, for
        // FSCONFIG_CMD_CREATE) and touches no other memory of ours.
        unsafe { libc::syscall(libc::SYS_fsconfig, ctx.as_raw_fd(), cmd, key, value, 0) }
    };
    if config(&key, Some(&value), FSCONFIG_SET_STRING) < 0 {
        return Err(last_error(format!("fsconfig(lowerdir={lower})")));
    }
    // Only to keep xino's notes out of the kernel log when the layers are on different
    // filesystems; older kernels may not know the option.
    let _ = config(&off, Some(&off_value), FSCONFIG_SET_STRING);
    if config(&key, None, FSCONFIG_CMD_CREATE) < 0 {
        return Err(last_error(format!("fsconfig(create overlay, lowerdir={lower})")));
    }
    // SAFETY: fsmount takes the context fd and two flag words, returns a new fd or -1.
    let mnt = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            ctx.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        )
    };
    let mnt = owned_fd(mnt, || "fsmount(overlay)".into())?;
    nix::fcntl::openat(
        mnt.as_fd(),
        name.as_c_str(),
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| SysError {
        op: format!("open {} in its overlay", path.display()),
        source: e.into(),
    })
}

/// Wraps a syscall's fd result, or the errno as a [`SysError`] named by `op`.
fn owned_fd(ret: libc::c_long, op: impl FnOnce() -> String) -> Result<OwnedFd, SysError> {
    if ret < 0 {
        return Err(last_error(op()));
    }
    let fd = RawFd::try_from(ret).expect("fds fit in c_int");
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

static SEALED_EXE: OnceLock<OwnedFd> = OnceLock::new();

/// A sealed memfd copy of our own executable, created once per process (see
/// [`SealedExe`]; [`sealed_exe`] prefers the overlay and falls back to this).
pub fn sealed_self_exe() -> Result<BorrowedFd<'static>, SysError> {
    if let Some(fd) = SEALED_EXE.get() {
        return Ok(fd.as_fd());
    }
    let fd = sealed_copy_of(Path::new("/proc/self/exe"))?;
    // Another thread may have won the race; its copy is as good as ours.
    let _ = SEALED_EXE.set(fd);
    Ok(SEALED_EXE.get().expect("set just above").as_fd())
}

/// A sealed, read-only in-memory copy of the executable at `path` (see [`SealedExe`]);
/// made anew on each call.
pub fn sealed_copy_of(path: &Path) -> Result<OwnedFd, SysError> {
    let op = |what: &str| format!("sealed copy of {}: {what}", path.display());
    let memfd =
        memfd_create("peapod-init", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).map_err(|e| SysError {
            op: op("memfd_create"),
            source: e.into(),
        })?;
    let mut src = File::open(path).map_err(|e| SysError {
        op: op("open"),
        source: e,
    })?;
    let mut dst = File::from(memfd);
    io::copy(&mut src, &mut dst).map_err(|e| SysError {
        op: op("copy"),
        source: e,
    })?;
    let memfd = OwnedFd::from(dst);
    let seals = SealFlag::F_SEAL_SEAL | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE;
    fcntl(&memfd, FcntlArg::F_ADD_SEALS(seals)).map_err(|e| SysError {
        op: op("F_ADD_SEALS"),
        source: e.into(),
    })?;
    Ok(memfd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_exe_refuses_writes() {
        let fd = sealed_self_exe().unwrap();
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let err = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| io::Write::write_all(&mut f, b"x"))
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    }
}
