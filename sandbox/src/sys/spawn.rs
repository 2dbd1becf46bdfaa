//! Creating processes: `clone3` + `execveat` of the init helper from a multi-threaded
//! runtime ([`spawn_with_fds`]), and the fork-like `clone` by which the single-threaded
//! helper makes container init ([`clone_parent`]).
//!
//! In the child of [`spawn_with_fds`] only async-signal-safe code runs until the exec, on
//! memory prepared before the clone: another thread of the parent may have held malloc's
//! locks at the instant of the clone (runwasi #357). [`clone_parent`]'s caller has no
//! other thread, so its child may go on running Rust.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use nix::unistd::Pid;

use super::{last_error, SysError};

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
    let pending = start_spawn(exe, argv, env, fds, cgroup)?;
    let pid = pending.pid();
    pending.exec_result().inspect_err(|_| {
        let _ = nix::sys::wait::waitpid(pid, None);
    })
}

/// A child of [`start_spawn`] whose `execveat` may still be under way.
#[derive(Debug)]
pub struct PendingExec {
    pid: Pid,
    in_cgroup: bool,
    err_r: std::os::fd::OwnedFd,
}

impl PendingExec {
    /// The child's pid: an unreaped child of the caller, whatever its exec gave.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Waits until the child's `execveat` succeeded (the close-on-exec pipe closed) and
    /// returns its pid and whether it was born in the cgroup. On failure the child exits
    /// (127) and is left unreaped: the caller still owns its pid.
    ///
    /// Errors: the errno of the failed `execveat`.
    pub fn exec_result(self) -> Result<(Pid, bool), SysError> {
        let mut errno = [0u8; 4];
        let mut got = 0;
        while got < errno.len() {
            match nix::unistd::read(&self.err_r, &mut errno[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => break,
            }
        }
        if got == 0 {
            return Ok((self.pid, self.in_cgroup));
        }
        Err(SysError {
            op: "execveat of the init helper".into(),
            source: io::Error::from_raw_os_error(i32::from_ne_bytes(errno)),
        })
    }
}

/// [`spawn_with_fds`] without waiting for the exec: returns once the child exists, so the
/// caller can do other work while the kernel loads the program, then calls
/// [`PendingExec::exec_result`].
///
/// Errors: `clone3` (e.g. `EAGAIN` at the pids limit) or the pipe for the exec's result.
pub fn start_spawn(
    exe: BorrowedFd<'_>,
    argv: &[&std::ffi::CStr],
    env: &[std::ffi::CString],
    fds: &[BorrowedFd<'_>],
    cgroup: Option<BorrowedFd<'_>>,
) -> Result<PendingExec, SysError> {
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
    Ok(PendingExec { pid, in_cgroup, err_r })
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

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};

    use nix::fcntl::FcntlArg;

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
}
