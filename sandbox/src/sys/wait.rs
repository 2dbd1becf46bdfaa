//! Child exits read without reaping (`waitid(2)` with `WNOWAIT`): the zombie is the
//! kernel's record of an exit, so a caller that must not lose one (the shim) records it
//! first and reaps after.

use std::mem::MaybeUninit;

use nix::unistd::Pid;

use super::{last_error, SysError};

/// A child that has exited and is still a zombie: `(pid, code)`, the code being the exit
/// code, or 128 + the signal number for a child killed by a signal (any signal, real-time
/// ones included: `nix`'s `WaitStatus` cannot decode those).
///
/// Looks at the children `waitpid(-1, …)` would (those whose exit signal is SIGCHLD), and
/// returns `None` when none has exited, also when there is no child at all (ECHILD).
/// Errors: any other errno of `waitid`.
pub fn peek_exited_child() -> Result<Option<(Pid, i32)>, SysError> {
    loop {
        let mut info = MaybeUninit::<libc::siginfo_t>::zeroed();
        // SAFETY: waitid writes one siginfo_t into `info`, a live local of that type, and
        // reads nothing of ours; with WNOHANG it never blocks.
        let rc = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                info.as_mut_ptr(),
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if rc == -1 {
            let err = last_error("waitid(P_ALL, WEXITED|WNOHANG|WNOWAIT)");
            match err.source.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ECHILD) => return Ok(None),
                _ => return Err(err),
            }
        }
        // SAFETY: zero-initialised, then filled by a successful waitid; every field read
        // below is plain data. With WNOHANG and no exited child, si_pid stays 0 (waitid(2)).
        let info = unsafe { info.assume_init() };
        // SAFETY: for SIGCHLD siginfo (all waitid returns), si_pid and si_status are the
        // members the kernel filled (the `_sigchld` arm of the union).
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid == 0 {
            return Ok(None);
        }
        let code = match info.si_code {
            libc::CLD_KILLED | libc::CLD_DUMPED => 128 + status,
            _ => status,
        };
        return Ok(Some((Pid::from_raw(pid), code)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::process::Command;
    use std::time::{Duration, Instant};

    #[test]
    fn sees_an_exit_and_a_real_time_signal_without_reaping() {
        let mut exited = Command::new("sh").args(["-c", "exit 7"]).spawn().unwrap();
        let mut killed = Command::new("sleep").arg("60").spawn().unwrap();
        let pid = |c: &std::process::Child| Pid::from_raw(i32::try_from(c.id()).unwrap());
        let rt = libc::SIGRTMIN() + 6;
        // SAFETY: kill(2) with the pid of our own child (not yet waited for, so not
        // reused) and a valid signal number.
        assert_eq!(unsafe { libc::kill(pid(&killed).as_raw(), rt) }, 0);
        let mut seen = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        // Other tests' children may be zombies too, briefly: P_ALL reports the first one.
        while seen.len() < 2 && Instant::now() < deadline {
            match peek_exited_child().unwrap() {
                Some((p, code)) if p == pid(&exited) || p == pid(&killed) => {
                    seen.insert(p, code);
                    // Not reaped: std's wait below still gets it. Reap it now, or P_ALL
                    // keeps reporting it first.
                    if p == pid(&exited) {
                        assert_eq!(exited.wait().unwrap().code(), Some(7));
                    } else {
                        let status = killed.wait().unwrap();
                        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(rt));
                    }
                }
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        let _ = killed.kill();
        let _ = (exited.wait(), killed.wait());
        assert_eq!(seen.get(&pid(&exited)), Some(&7));
        assert_eq!(seen.get(&pid(&killed)), Some(&(128 + rt)));
    }
}
