//! The shim's single reaper. The shim is a child subreaper, so container inits (cloned
//! with `CLONE_PARENT` by our init helper), exec'd processes, init helpers and orphans all
//! end up as its children. One thread handles SIGCHLD: for each exited child it reports
//! `(pid, exit code)` to the service, which records a container's exit on disk, and only
//! then reaps it (`waitid` with `WNOWAIT` first, [`sandbox::sys::peek_exited_child`]), so
//! a process seen gone has its exit recorded. Nothing else in the shim waits for a process
//! that the service tracks (containerd #2855: two waiters race and lose exit codes).

use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use signal_hook::consts::SIGCHLD;
use signal_hook::iterator::Signals;

/// Starts the reaper thread; `on_exit(pid, code)` runs for each reaped child, with the
/// code, or 128 + signal number for a killed child.
pub fn start(on_exit: impl Fn(Pid, i32) + Send + 'static) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGCHLD])?;
    std::thread::Builder::new().name("reaper".into()).spawn(move || {
        // Children that exited before the handler existed are collected on the first pass.
        reap_all(&on_exit);
        for _ in signals.forever() {
            reap_all(&on_exit);
        }
    })?;
    Ok(())
}

/// Hands every exited child to `on_exit` while it is still a zombie, then reaps it: the
/// exit is never only in this process's memory (a shim killed in between leaves the zombie
/// to init, and `on_exit` has recorded it or not, never half).
fn reap_all(on_exit: &impl Fn(Pid, i32)) {
    loop {
        match sandbox::sys::peek_exited_child() {
            Ok(None) => return,
            Ok(Some((pid, code))) => {
                on_exit(pid, code);
                // The status is known; nix's decoding of it (which refuses real-time
                // signals) does not matter here.
                while let Err(nix::Error::EINTR) = waitpid(pid, Some(WaitPidFlag::WNOHANG)) {}
            }
            Err(e) => {
                tracing::warn!(error = %e, "waitid");
                return;
            }
        }
    }
}
