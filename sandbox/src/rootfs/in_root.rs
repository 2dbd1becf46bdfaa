//! Paths inside a container's rootfs, resolved and created relative to an fd of the
//! rootfs and used through the fd they resolved to, never again by path string.
//!
//! A path string that was checked and then handed to `mkdir`, `mknod` or `mount(2)` is
//! looked up again by the kernel: a container sharing a volume with the one being started
//! can swap a directory on that path for a symlink to the host in between
//! (CVE-2021-30465; the same class for file and directory creation: CVE-2024-45310).
//! Here every lookup starts from an `O_PATH` fd of the rootfs:
//! - what exists is resolved by the kernel with `openat2(2)` and `RESOLVE_IN_ROOT` (the fd
//!   is the root: absolute symlinks and `..` stay inside) and `RESOLVE_NO_MAGICLINKS`
//!   (no `/proc/<pid>/root` jumps out);
//! - what is missing is made one component at a time, `mkdirat(2)` or an `O_EXCL` create
//!   relative to the parent's fd, and opened with `RESOLVE_NO_SYMLINKS` relative to that
//!   parent: a symlink found there (dangling, or swapped in) is read and the resolution
//!   starts over from the rootfs with the link's target, so it is followed as the
//!   container would, inside the rootfs;
//! - the result is an `O_PATH` fd; mounts go onto `/proc/self/fd/<n>`, which the kernel
//!   resolves to the fd's own dentry, and a mount's later remount (read-only, propagation)
//!   goes onto the new mount, reopened from the parent's fd and checked to be a different
//!   mount than before.
//!
//! openat2 (Linux 5.6) is below peapod's floor already (`close_range(CLOSE_RANGE_CLOEXEC)`
//! needs 5.11), and `nix` wraps it safely, so no `unsafe` and no C library (libpathrs) is
//! needed for this; the walk is the one runc's pathrs-lite `MkdirAllInRoot` does.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, readlinkat, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{mkdirat, Mode};

use super::{Result, RootfsError};

/// Symlinks followed in one resolution before giving up (Linux's `MAXSYMLINKS`).
const MAX_LINKS: usize = 40;

/// How many times a component that vanishes right after it was made is made again.
const MAX_RETRIES: usize = 8;

/// What [`Root::resolve`] makes when the path (or a parent) does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// Nothing: a missing path is `Ok(None)`.
    Nothing,
    /// Missing directories, the last one included (mode 0755).
    Dir,
    /// Missing parent directories, and the last component as an empty file (mode 0644).
    File,
}

/// The rootfs, as an `O_PATH` directory fd, and the path the kernel gives it.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    host: PathBuf,
}

/// A path resolved inside a [`Root`]: its fd, the fd of the directory it was found in,
/// its name there, and where it is inside the root (for checks and messages).
#[derive(Debug)]
pub struct Target {
    /// `O_PATH` fd of the directory holding it.
    pub parent: OwnedFd,
    /// Its name in `parent`.
    pub name: OsString,
    /// `O_PATH` fd of the file or directory itself.
    pub fd: OwnedFd,
    /// Its absolute path as the container will see it, symlinks resolved.
    pub path: PathBuf,
}

impl Target {
    /// `/proc/self/fd/<n>` of [`Target::fd`], for `mount(2)`, `chmod(2)`.
    pub fn proc_path(&self) -> String {
        proc_fd_path(self.fd.as_fd())
    }
}

/// `/proc/self/fd/<n>`: the kernel resolves it to the fd's own file, whatever its path is
/// now.
pub fn proc_fd_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// The id of the mount `fd` is on: `statx(STATX_MNT_ID)`, or `mnt_id` of
/// `/proc/self/fdinfo/<n>` before Linux 5.8.
pub fn mount_id(fd: BorrowedFd<'_>) -> Result<u64> {
    if let Ok(Some(id)) = crate::sys::mount_id(fd) {
        return Ok(id);
    }
    let path = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
    let text = crate::sys::read_proc(&path).map_err(|source| RootfsError::Create {
        what: "fdinfo",
        path: PathBuf::from(&path),
        source,
    })?;
    text.lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| RootfsError::Create {
            what: "fdinfo",
            path: PathBuf::from(&path),
            source: std::io::Error::other("no mnt_id line"),
        })
}

/// The components of `path` with `.` dropped and `..` applied to the preceding one (never
/// above `/`), as runc cleans a destination before resolving it.
pub fn clean(path: &Path) -> Vec<OsString> {
    let mut out: Vec<OsString> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

fn join(parts: &[OsString]) -> PathBuf {
    if parts.is_empty() {
        return PathBuf::from(".");
    }
    parts.iter().collect()
}

fn how(flags: OFlag, resolve: ResolveFlag) -> OpenHow {
    OpenHow::new().flags(flags | OFlag::O_CLOEXEC).resolve(resolve)
}

impl Root {
    /// Opens `path` (a host path the runtime was given, trusted) as the root.
    pub fn open(path: &Path) -> Result<Self> {
        let fd = openat(
            nix::fcntl::AT_FDCWD,
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|source| RootfsError::Resolve {
            path: path.to_path_buf(),
            source,
        })?;
        let host = std::fs::read_link(proc_fd_path(fd.as_fd())).map_err(|source| RootfsError::Create {
            what: "fd link",
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self { fd, host })
    }

    /// The root's own fd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Where `fd` is inside the root, from the kernel's name for it; an error when it is
    /// not inside (moved out, or deleted).
    pub fn path_of(&self, fd: BorrowedFd<'_>, shown: &Path) -> Result<PathBuf> {
        let real = std::fs::read_link(proc_fd_path(fd)).map_err(|source| RootfsError::Create {
            what: "fd link",
            path: shown.to_path_buf(),
            source,
        })?;
        match real.strip_prefix(&self.host) {
            Ok(rel) if real.is_absolute() => Ok(Path::new("/").join(rel)),
            _ => Err(RootfsError::Escaped {
                path: shown.to_path_buf(),
                real,
            }),
        }
    }

    /// Resolves `path` (absolute, as the container sees it) inside the root, making what
    /// is missing as `create` says. Symlinks are followed inside the root when `follow`;
    /// otherwise any symlink on the way is an error (procfs and sysfs must go on a plain
    /// directory, runc's `mountToRootfs`). `Ok(None)`: missing and `Create::Nothing`.
    ///
    /// Errors: the root itself (no parent to mount from), a symlink loop, a component
    /// that is not a directory, a failed `mkdirat`/create, a result outside the root.
    pub fn resolve(&self, path: &Path, create: Create, follow: bool) -> Result<Option<Target>> {
        let mut comps = clean(path);
        let mut links = 0;
        // Lookups a concurrent rename can disturb are retried (openat2's EAGAIN; a link
        // found by one call and gone by the next), a bounded number of times.
        let mut raced = 0;
        let mut again = |e: Errno| -> Result<()> {
            raced += 1;
            if raced > MAX_RETRIES * 8 {
                return Err(RootfsError::Resolve {
                    path: path.to_path_buf(),
                    source: e,
                });
            }
            Ok(())
        };
        'restart: loop {
            let Some((_, dirs)) = comps.split_last() else {
                return Err(RootfsError::OverRoot {
                    path: path.to_path_buf(),
                });
            };
            let resolve = if follow {
                ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS
            } else {
                ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_SYMLINKS
            };
            // The deepest existing directory on the way, resolved by the kernel.
            let mut k = dirs.len();
            let mut cur = loop {
                let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
                match openat2(&self.fd, &join(&dirs[..k]), how(flags, resolve)) {
                    Ok(fd) => break fd,
                    Err(Errno::ENOENT) if k > 0 => k -= 1,
                    Err(Errno::EAGAIN) => again(Errno::EAGAIN)?,
                    Err(Errno::ELOOP) if !follow => {
                        return Err(RootfsError::NotPlain {
                            path: path.to_path_buf(),
                        })
                    }
                    Err(source) => {
                        return Err(RootfsError::Resolve {
                            path: path.to_path_buf(),
                            source,
                        })
                    }
                }
            };
            // One component at a time from there, relative to the parent's fd.
            let mut j = k;
            let mut retries = 0;
            while j < comps.len() {
                let name = &comps[j];
                let last = j + 1 == comps.len();
                let step = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS;
                match openat2(&cur, name.as_os_str(), how(OFlag::O_PATH, step)) {
                    Ok(fd) if last => {
                        let inside = self.path_of(fd.as_fd(), path)?;
                        if inside == Path::new("/") {
                            return Err(RootfsError::OverRoot {
                                path: path.to_path_buf(),
                            });
                        }
                        return Ok(Some(Target {
                            parent: cur,
                            name: name.clone(),
                            fd,
                            path: inside,
                        }));
                    }
                    Ok(fd) => {
                        cur = fd;
                        j += 1;
                        retries = 0;
                    }
                    Err(Errno::ELOOP) if follow => {
                        links += 1;
                        if links > MAX_LINKS {
                            return Err(RootfsError::SymlinkLoop {
                                path: path.to_path_buf(),
                            });
                        }
                        let target = match readlinkat(&cur, name.as_os_str()) {
                            Ok(t) => t,
                            // No longer a symlink (or gone): look again.
                            Err(e @ (Errno::EINVAL | Errno::ENOENT)) => {
                                again(e)?;
                                continue;
                            }
                            Err(source) => {
                                return Err(RootfsError::Resolve {
                                    path: path.to_path_buf(),
                                    source,
                                })
                            }
                        };
                        let mut next = if Path::new(&target).is_absolute() {
                            PathBuf::from("/")
                        } else {
                            self.path_of(cur.as_fd(), path)?
                        };
                        next.push(&target);
                        next.extend(&comps[j + 1..]);
                        comps = clean(&next);
                        continue 'restart;
                    }
                    Err(Errno::ELOOP) => {
                        return Err(RootfsError::NotPlain {
                            path: path.to_path_buf(),
                        })
                    }
                    Err(Errno::ENOENT) if create != Create::Nothing && retries < MAX_RETRIES => {
                        retries += 1;
                        make(&cur, name, last && create == Create::File).map_err(|source| RootfsError::Create {
                            what: if last && create == Create::File {
                                "file"
                            } else {
                                "directory"
                            },
                            path: path.to_path_buf(),
                            source: source.into(),
                        })?;
                    }
                    Err(Errno::ENOENT) if create == Create::Nothing => return Ok(None),
                    Err(Errno::EAGAIN) => again(Errno::EAGAIN)?,
                    Err(source) => {
                        return Err(RootfsError::Resolve {
                            path: path.to_path_buf(),
                            source,
                        })
                    }
                }
            }
            unreachable!("the loop returns at the last component");
        }
    }

    /// Opens `name` in `parent` again after something was mounted on it: the lookup
    /// crosses into the new mount, which must be another mount than `t.fd`'s (else what
    /// was mounted on was renamed away meanwhile: [`RootfsError::Swapped`]).
    pub fn reopen(&self, t: &Target) -> Result<Target> {
        let step = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS;
        let fd = openat2(&t.parent, t.name.as_os_str(), how(OFlag::O_PATH, step)).map_err(|source| {
            RootfsError::Resolve {
                path: t.path.clone(),
                source,
            }
        })?;
        if mount_id(fd.as_fd())? == mount_id(t.fd.as_fd())? {
            return Err(RootfsError::Swapped { path: t.path.clone() });
        }
        let parent = t.parent.try_clone().map_err(|source| RootfsError::Create {
            what: "fd",
            path: t.path.clone(),
            source,
        })?;
        Ok(Target {
            parent,
            name: t.name.clone(),
            fd,
            path: t.path.clone(),
        })
    }

    /// `name` in the directory `dir` (a fresh mount of ours, e.g. the cgroup tmpfs),
    /// made as a directory if missing and never followed if a symlink.
    pub fn child_dir(&self, dir: &Target, name: &OsStr) -> Result<Target> {
        let err = |source: Errno| RootfsError::Create {
            what: "directory",
            path: dir.path.join(name),
            source: source.into(),
        };
        match mkdirat(&dir.fd, name, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(err(e)),
        }
        let step = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS;
        let fd = openat2(&dir.fd, name, how(OFlag::O_PATH | OFlag::O_DIRECTORY, step)).map_err(err)?;
        Ok(Target {
            parent: dir.fd.try_clone().map_err(|source| RootfsError::Create {
                what: "fd",
                path: dir.path.clone(),
                source,
            })?,
            name: name.to_os_string(),
            fd,
            path: dir.path.join(name),
        })
    }
}

/// Makes `name` in `dir`: an empty file (`O_EXCL`, never through a symlink) or a
/// directory. Already there is fine: the caller opens it next.
fn make(dir: &OwnedFd, name: &OsStr, file: bool) -> std::result::Result<(), Errno> {
    let res = if file {
        openat(
            dir,
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .map(drop)
    } else {
        mkdirat(dir, name, Mode::from_bits_truncate(0o755))
    };
    match res {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Opens `name` in `dir` (`O_PATH`), never through a symlink and never above `dir`.
pub fn open_beneath(dir: &OwnedFd, name: &OsStr) -> std::result::Result<OwnedFd, Errno> {
    let step = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS;
    openat2(dir, name, how(OFlag::O_PATH, step))
}
