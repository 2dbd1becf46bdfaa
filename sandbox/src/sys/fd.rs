//! File descriptors: taking ownership of fds the kernel or our parent handed over,
//! passing fds to a spawned command, keeping the rest from leaking across `exec`, and
//! pidfds, which name a process without the pid-reuse race of `kill(2)`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::signal::SignalNumber;
use nix::unistd::Pid;

use super::{last_error, SysError};

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

/// The credentials the kernel recorded for the peer of a connected unix socket when it
/// called `connect(2)` (`SO_PEERCRED`, unix(7)): `(pid, uid, gid)`, translated into our
/// pid and user namespaces. They cannot be forged by the peer; they stay those of the
/// connecting process even if the socket is later passed to another one.
///
/// `fd` is a raw fd number because servers such as ttrpc hand out only that; an fd that is
/// not a unix socket gives ENOTSOCK or ENOPROTOOPT, a closed one EBADF.
pub fn peer_credentials(fd: RawFd) -> Result<(i32, u32, u32), SysError> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::ucred>()).expect("ucred is 12 bytes");
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, a live local of exactly
    // that size, and updates `len`; an invalid fd only yields an errno.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if ret < 0 {
        return Err(last_error(format!("getsockopt({fd}, SO_PEERCRED)")));
    }
    Ok((cred.pid, cred.uid, cred.gid))
}

/// Sends `signal` (a standard or real-time signal) to process `pid` (`kill(2)`), for
/// processes named only by a pid that cannot be reused meanwhile (frozen in their cgroup).
/// Errors: the errno (ESRCH when `pid` has exited).
pub fn kill(pid: Pid, signal: impl Into<SignalNumber>) -> Result<(), SysError> {
    let signal = signal.into();
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    if unsafe { libc::kill(pid.as_raw(), signal.as_raw()) } < 0 {
        return Err(last_error(format!("kill({pid}, {signal})")));
    }
    Ok(())
}

/// Sends `signal` (a standard or real-time signal) to the process behind `pidfd`
/// (`pidfd_send_signal(2)`). ESRCH (the process has exited) is reported as an error like
/// any other.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: impl Into<SignalNumber>) -> Result<(), SysError> {
    let signal = signal.into();
    // SAFETY: pidfd is a valid open fd borrowed for the call; info is null, which the kernel
    // accepts and fills in as kill(2) would.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal.as_raw(),
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

/// Takes ownership of an fd the kernel just installed in our table from an
/// `SCM_RIGHTS` message.
pub fn own_received_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: recvmsg(2) returned this fd number as newly installed in our fd table;
    // nothing else refers to it yet.
    unsafe { OwnedFd::from_raw_fd(fd) }
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
