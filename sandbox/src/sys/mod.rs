//! The only module with `unsafe`: raw syscalls that `nix` does not wrap, each behind a
//! typed, safe function.
//!
//! Everything here is either async-signal-safe (it may run between `fork` and `exec`) or
//! runs in the single-threaded init helper, never in a multi-threaded parent after fork.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Failure of a raw syscall wrapper; `op` names the syscall and its target.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {source}")]
pub struct SysError {
    /// The operation that failed, e.g. `"pidfd_open(4242)"`.
    pub op: String,
    /// The errno the kernel returned.
    #[source]
    pub source: io::Error,
}

fn last_error(op: impl Into<String>) -> SysError {
    SysError {
        op: op.into(),
        source: io::Error::last_os_error(),
    }
}

/// Process ids as returned by `clone`: `Child` in the new process, `Parent(pid)` in the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneResult {
    /// We are the new process.
    Child,
    /// We are the caller; the new process has this pid (in our pid namespace).
    Parent(Pid),
}

/// `clone(CLONE_PARENT | SIGCHLD)` without a new stack: a `fork` whose child becomes a
/// sibling of the caller, i.e. a child of the caller's parent. runc's nsexec uses the same
/// trick so that container init is a direct child of the runtime that waits for it.
///
/// A pid namespace created by `unshare(CLONE_NEWPID)` (or joined by `setns`) before this
/// call applies to the new process, which becomes its PID 1 when the namespace is new.
///
/// Only call from a single-threaded process (the init helper): as with `fork`, only the
/// calling thread is copied.
pub fn clone_parent() -> Result<CloneResult, SysError> {
    let flags = libc::CLONE_PARENT as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: the raw clone syscall with a null stack behaves like fork(2): the child gets a
    // copy-on-write copy of our address space and continues on the same (copied) stack. The
    // pointer arguments are null because neither CLONE_PARENT_SETTID, CLONE_CHILD_SETTID
    // nor CLONE_SETTLS is set. The caller is single-threaded, so no lock can be held by a
    // thread that does not exist in the child.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    match ret {
        -1 => Err(last_error("clone(CLONE_PARENT)")),
        0 => Ok(CloneResult::Child),
        pid => Ok(CloneResult::Parent(Pid::from_raw(
            i32::try_from(pid).expect("kernel pids fit in i32"),
        ))),
    }
}

/// Opens a pidfd for `pid` (`pidfd_open(2)`, Linux 5.3+). Signals sent through it can never
/// hit a recycled pid.
pub fn pidfd_open(pid: Pid) -> Result<OwnedFd, SysError> {
    // SAFETY: pidfd_open takes a pid and a flags word and returns a new fd or -1; it touches
    // no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0 as libc::c_uint) };
    if fd < 0 {
        return Err(last_error(format!("pidfd_open({pid})")));
    }
    let fd = RawFd::try_from(fd).expect("fds fit in i32");
    // SAFETY: the kernel just returned this fd to us and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `signal` to the process behind `pidfd` (`pidfd_send_signal(2)`).
/// ESRCH (the process has exited) is reported as an error like any other.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: Signal) -> Result<(), SysError> {
    // SAFETY: pidfd is a valid open fd borrowed for the call; info is null, which the kernel
    // accepts and fills in as kill(2) would.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null_mut::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    };
    if ret < 0 {
        return Err(last_error(format!("pidfd_send_signal({signal})")));
    }
    Ok(())
}

/// Marks every fd from `first` upwards close-on-exec (`close_range(2)` with
/// `CLOSE_RANGE_CLOEXEC`, Linux 5.11+), so that nothing the runtime had open leaks into
/// the container's program (CVE-2024-21626 class).
pub fn cloexec_from(first: RawFd) -> Result<(), SysError> {
    let first = libc::c_uint::try_from(first).expect("fd numbers are non-negative");
    // SAFETY: close_range only changes fd flags in our own table; no memory is passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if ret < 0 {
        return Err(last_error("close_range(CLOSE_RANGE_CLOEXEC)"));
    }
    Ok(())
}

/// Lets `fd` survive the `exec` of a command spawned from `cmd`, as fd number `fd` in the
/// child, and nothing else: the flag is cleared only in the forked child, between fork and
/// exec, so concurrent spawns elsewhere in a multi-threaded caller never inherit it.
pub fn inherit_fd(cmd: &mut Command, fd: BorrowedFd<'_>) {
    let raw = fd.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and only calls fcntl(2),
    // which is async-signal-safe; it allocates nothing and takes no locks. `raw` stays open
    // in the parent until spawn returns because the caller holds the borrow.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(raw, libc::F_SETFD, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// `struct clone_args` of `clone3(2)` up to `cgroup` (`CLONE_ARGS_SIZE_VER2`, Linux 5.7).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `CLONE_INTO_CGROUP` (include/uapi/linux/sched.h; libc's constant has the wrong type).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Starts `exe` (an fd, run with `execveat(AT_EMPTY_PATH)`) as a child with arguments
/// `argv`, environment `env` (`KEY=value`), working directory `/`, an empty signal mask,
/// and exactly the fds `fds`: `fds[i]` becomes fd `i` (0–2 stdio, 3 and up for the
/// program), every other fd of ours stays behind (ours are close-on-exec).
///
/// With `cgroup` (a cgroup v2 directory fd) the child is born in that cgroup
/// (`clone3(CLONE_INTO_CGROUP)`, Linux 5.7), which only takes the threadgroup lock for
/// reading, where moving it afterwards through `cgroup.procs` takes it for writing and
/// waits for an RCU grace period. Returns the pid and whether the child is in `cgroup`:
/// `false` when the kernel has no `clone3` or `CLONE_INTO_CGROUP`, and the caller moves it.
///
/// Errors: `clone3` (e.g. `EAGAIN` at the pids limit), or the `execveat` of the child,
/// whose errno comes back through a close-on-exec pipe.
pub fn spawn_with_fds(
    exe: BorrowedFd<'_>,
    argv: &[&std::ffi::CStr],
    env: &[std::ffi::CString],
    fds: &[BorrowedFd<'_>],
    cgroup: Option<BorrowedFd<'_>>,
) -> Result<(Pid, bool), SysError> {
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SysError {
        op: "pipe2 for the spawn".into(),
        source: e.into(),
    })?;
    let argv: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).chain([std::ptr::null()]).collect();
    let envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).chain([std::ptr::null()]).collect();
    let sources: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let exe = exe.as_raw_fd();
    let err_w_raw = err_w.as_raw_fd();
    // Above every target, so no source is overwritten before it is placed.
    let high_floor = RawFd::try_from(sources.len()).unwrap_or(RawFd::MAX).max(3) + 1;
    let clone = |cgroup: Option<RawFd>| -> libc::c_long {
        let mut args = CloneArgs {
            exit_signal: libc::SIGCHLD as u64,
            ..Default::default()
        };
        if let Some(fd) = cgroup {
            args.flags |= CLONE_INTO_CGROUP;
            args.cgroup = u64::try_from(fd).unwrap_or_default();
        }
        // SAFETY: clone3 reads `args` (its size is passed); with no stack and no CLONE_VM
        // it behaves like fork(2). The child only runs `exec_child`, which makes raw,
        // async-signal-safe calls on memory prepared here and never returns.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if ret == 0 {
            // SAFETY: see above; we are the child of a possibly multi-threaded parent.
            unsafe { exec_child(exe, &argv, &envp, &sources, high_floor, err_w_raw) }
        }
        ret
    };
    let mut in_cgroup = cgroup.is_some();
    let mut ret = clone(cgroup.map(|fd| fd.as_raw_fd()));
    if ret < 0 && in_cgroup {
        let errno = io::Error::last_os_error().raw_os_error();
        // No clone3 (before 5.3), or one without CLONE_INTO_CGROUP (before 5.7).
        if matches!(errno, Some(libc::ENOSYS | libc::EINVAL | libc::E2BIG)) {
            in_cgroup = false;
            ret = clone(None);
        }
    }
    if ret < 0 {
        return Err(last_error("clone3 of the init helper"));
    }
    let pid = Pid::from_raw(i32::try_from(ret).expect("kernel pids fit in i32"));
    drop(err_w);
    let mut errno = [0u8; 4];
    let mut got = 0;
    while got < errno.len() {
        match nix::unistd::read(&err_r, &mut errno[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    if got == 0 {
        return Ok((pid, in_cgroup));
    }
    let _ = nix::sys::wait::waitpid(pid, None);
    Err(SysError {
        op: "execveat of the init helper".into(),
        source: io::Error::from_raw_os_error(i32::from_ne_bytes(errno)),
    })
}

/// The child's side of [`spawn_with_fds`]: places the fds, resets the signal mask, changes
/// to `/` and executes; on failure writes errno to `err_w` and exits 127.
///
/// # Safety
/// Only for the child of a fork-like clone: it allocates nothing and calls only
/// async-signal-safe functions; `argv` and `envp` are null-terminated arrays of valid C
/// strings.
unsafe fn exec_child(
    exe: RawFd,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    sources: &[RawFd],
    high_floor: RawFd,
    err_w: RawFd,
) -> ! {
    // SAFETY: the caller's contract: we are the only thread of a fresh child, every call
    // below is async-signal-safe and reads only memory the parent prepared.
    unsafe {
        // The error pipe and the executable first go above every target fd, where placing
        // the fds cannot overwrite them (a fresh caller may hold them as fd 3).
        let err_w = match libc::fcntl(err_w, libc::F_DUPFD_CLOEXEC, high_floor) {
            -1 => libc::_exit(127),
            fd => fd,
        };
        let fail = || -> ! {
            let errno = *libc::__errno_location();
            libc::write(err_w, (&errno as *const libc::c_int).cast(), 4);
            libc::_exit(127)
        };
        let exe = libc::fcntl(exe, libc::F_DUPFD_CLOEXEC, high_floor);
        if exe < 0 {
            fail();
        }
        let mut high = [0 as RawFd; 16];
        if sources.len() > high.len() {
            *libc::__errno_location() = libc::EINVAL;
            fail();
        }
        for (i, src) in sources.iter().enumerate() {
            high[i] = libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, high_floor);
            if high[i] < 0 {
                fail();
            }
        }
        for (target, fd) in (0..).zip(&high[..sources.len()]) {
            // dup2 to another number leaves the new fd without close-on-exec.
            if libc::dup2(*fd, target) < 0 {
                fail();
            }
        }
        let empty: libc::sigset_t = std::mem::zeroed();
        if libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
            fail();
        }
        if libc::chdir(c"/".as_ptr()) < 0 {
            fail();
        }
        libc::syscall(
            libc::SYS_execveat,
            exe,
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
        fail()
    }
}

/// Takes ownership of fd number `fd`, inherited from our parent across exec, after
/// checking that it is open. Used once, by the init helper, for its channel.
pub fn adopt_inherited_fd(fd: RawFd) -> Result<OwnedFd, SysError> {
    // SAFETY: F_GETFD only reads the fd's flags; an invalid fd yields EBADF.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(last_error(format!("inherited fd {fd}")));
    }
    // SAFETY: the fd is open (checked above) and was handed to this process by its parent
    // for this sole purpose; nothing else in the fresh process refers to it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Restores every signal to its default disposition and unblocks all signals, so the
/// container's program starts as a freshly exec'd process should: Rust's runtime ignores
/// SIGPIPE in our binary, and ignored dispositions and the mask survive `execve`.
pub fn reset_signals() -> Result<(), SysError> {
    /// The kernel's `struct sigaction` for x86_64 and aarch64 `rt_sigaction(2)`.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // The raw syscall, not glibc's sigaction(): glibc refuses to touch the real-time
    // signals it reserves (32, 33), which can still arrive ignored from our parent.
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: `dfl` is a valid kernel sigaction that outlives the call, the old-action
        // pointer is null, and the size is that of the kernel's 64-bit signal mask.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &dfl as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            )
        };
    }
    let empty = nix::sys::signal::SigSet::empty();
    nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&empty), None).map_err(|e| SysError {
        op: "sigprocmask(SIG_SETMASK, {})".into(),
        source: e.into(),
    })
}

/// Takes ownership of an fd the kernel just installed in our table from an
/// `SCM_RIGHTS` message.
pub fn own_received_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: recvmsg(2) returned this fd number as newly installed in our fd table;
    // nothing else refers to it yet.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Makes the terminal `fd` the controlling terminal of the calling session leader
/// (`ioctl(TIOCSCTTY)`).
pub fn set_controlling_terminal(fd: BorrowedFd<'_>) -> Result<(), SysError> {
    // SAFETY: TIOCSCTTY takes an int argument (0: do not steal) and no pointer.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(last_error("ioctl(TIOCSCTTY)"));
    }
    Ok(())
}

/// The window size of terminal `fd` (`ioctl(TIOCGWINSZ)`): (rows, columns) in character
/// cells. Fails with ENOTTY when `fd` is not a terminal.
pub fn window_size(fd: BorrowedFd<'_>) -> Result<(u16, u16), SysError> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a `struct winsize` through the pointer, which points to a
    // live value owned by this frame for the duration of the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws as *mut libc::winsize) } < 0 {
        return Err(last_error("ioctl(TIOCGWINSZ)"));
    }
    Ok((ws.ws_row, ws.ws_col))
}

/// Sets the window size of terminal `fd` (`ioctl(TIOCSWINSZ)`), in character cells.
pub fn set_window_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> Result<(), SysError> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a `struct winsize` through the pointer, which points to a
    // live, initialised value for the duration of the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws as *const libc::winsize) } < 0 {
        return Err(last_error("ioctl(TIOCSWINSZ)"));
    }
    Ok(())
}

/// Makes the spawned command receive each `(source, target)` fd of `map` as fd number
/// `target` (e.g. containerd's binary log drivers expect stdout on 3, stderr on 4 and a
/// ready pipe on 5). Sources are first duplicated above 100 so no target overwrites a
/// source not yet moved; everything runs between fork and exec with async-signal-safe
/// calls only.
pub fn map_fds(cmd: &mut Command, map: &[(BorrowedFd<'_>, RawFd)]) {
    let pairs: Vec<(RawFd, RawFd)> = map.iter().map(|(fd, target)| (fd.as_raw_fd(), *target)).collect();
    // SAFETY: the closure runs in the forked child before exec and only calls fcntl(2) and
    // dup2(2), which are async-signal-safe; it reads `pairs`, allocated before the fork,
    // and allocates nothing. The sources stay open in the parent while spawn runs because
    // the caller holds their borrows.
    unsafe {
        cmd.pre_exec(move || {
            let mut high = [0 as RawFd; 16];
            for (i, (src, _)) in pairs.iter().enumerate().take(16) {
                high[i] = libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, 100);
                if high[i] < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for (i, (_, target)) in pairs.iter().enumerate().take(16) {
                if libc::dup2(high[i], *target) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

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

    fn path_fd(path: &str) -> OwnedFd {
        nix::fcntl::open(
            path,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap()
    }

    #[test]
    fn spawn_places_exactly_the_given_fds() {
        let sh = path_fd("/bin/sh");
        let null = File::open("/dev/null").unwrap();
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        // A close-on-exec fd at a number no fd of the child's own would take.
        let marker = nix::fcntl::fcntl(&r, FcntlArg::F_DUPFD_CLOEXEC(200)).unwrap();
        let argv = [
            c"sh",
            c"-c",
            c"echo \"$X $(pwd)\" >&3; ls /proc/self/fd | tr '\\n' ' ' >&3",
        ];
        let env = [std::ffi::CString::new("X=hi").unwrap()];
        let fds = [null.as_fd(), null.as_fd(), null.as_fd(), w.as_fd()];
        let (pid, in_cgroup) = spawn_with_fds(sh.as_fd(), &argv, &env, &fds, None).unwrap();
        drop(w);
        let mut out = String::new();
        io::Read::read_to_string(&mut File::from(r), &mut out).unwrap();
        let status = nix::sys::wait::waitpid(pid, None).unwrap();
        assert_eq!(status, nix::sys::wait::WaitStatus::Exited(pid, 0));
        assert!(!in_cgroup);
        let (line, fds) = out.split_once('\n').unwrap();
        assert_eq!(line, "hi /");
        let mut fds: Vec<RawFd> = fds.split_whitespace().map(|f| f.parse().unwrap()).collect();
        fds.sort_unstable();
        // 0–3 placed; our close-on-exec fds (the pipe's read end, the spawn's own error
        // pipe and high copies) stay behind. The test harness may leave others open.
        assert_eq!(fds[..4], [0, 1, 2, 3], "{out}");
        assert!(!fds.contains(&marker), "{out}");
        // SAFETY: `marker` is the fd fcntl just made for this test; nothing else owns it.
        drop(unsafe { OwnedFd::from_raw_fd(marker) });
    }

    #[test]
    fn spawn_reports_the_exec_errno() {
        let not_exe = path_fd("/etc/hostname");
        let null = File::open("/dev/null").unwrap();
        let err = spawn_with_fds(not_exe.as_fd(), &[c"x"], &[], &[null.as_fd()], None).unwrap_err();
        // The child's errno, carried back: not executable (EACCES), or not a binary
        // (ENOEXEC) when the file has an x bit.
        assert!(
            matches!(err.source.raw_os_error(), Some(libc::EACCES | libc::ENOEXEC)),
            "{err}"
        );
    }

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
