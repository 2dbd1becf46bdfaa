//! The shim's single reaper. The shim is a child subreaper, so container inits (cloned
//! with `CLONE_PARENT` by our init helper), exec'd processes, init helpers and orphans all
//! end up as its children. One thread handles SIGCHLD and reaps every child with
//! `waitpid(-1, WNOHANG)`, reporting `(pid, exit code)` to the service; nothing else in
//! the shim waits for a process that the service tracks (containerd #2855: two waiters
//! race and lose exit codes).

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
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

fn reap_all(on_exit: &impl Fn(Pid, i32)) {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(nix::Error::ECHILD) => return,
            Ok(status) => {
                if let (Some(pid), Some(code)) = (status.pid(), sandbox::container::exit_code(status)) {
                    on_exit(pid, code);
                }
            }
            Err(nix::Error::EINTR) => {}
            Err(e) => {
                tracing::warn!(error = %e, "waitpid");
                return;
            }
        }
    }
}
