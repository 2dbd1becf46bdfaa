//! The shim's single reaper. The shim is a child subreaper, so container inits (cloned
//! with `CLONE_PARENT` by our init helper), exec'd processes, init helpers and orphans all
//! end up as its children. A task on the event loop waits for SIGCHLD and hands each pass
//! to the blocking pool, one at a time: for each exited child it reports `(pid, exit
//! code)` to the service, which records a container's exit on disk, and only then reaps
//! it (`waitid` with `WNOWAIT` first, [`sandbox::sys::peek_exited_child`]), so a process
//! seen gone has its exit recorded. Nothing else in the shim waits for a process that the
//! service tracks (containerd #2855: two waiters race and lose exit codes). A shim at rest
//! thus keeps no reaper thread (issue 17).

use std::sync::Arc;

use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};

/// Starts the reaper on `events`, the daemon's event loop; `on_exit(pid, code)` runs on
/// the blocking pool for each reaped child, with the code, or 128 + signal number for a
/// killed child.
///
/// Errors: the SIGCHLD handler could not be installed.
pub fn start(
    events: &tokio::runtime::Handle,
    on_exit: impl Fn(Pid, i32) + Send + Sync + 'static,
) -> std::io::Result<()> {
    let mut exits = {
        let _entered = events.enter();
        signal(SignalKind::child())?
    };
    let on_exit = Arc::new(on_exit);
    events.spawn(async move {
        // Children that exited before the handler existed are collected on the first pass.
        loop {
            let on_exit = on_exit.clone();
            // Awaited before the next: two passes at once could hand a child over twice.
            if let Err(e) = tokio::task::spawn_blocking(move || reap_all(&*on_exit)).await {
                tracing::warn!(error = %e, "reap children");
            }
            if exits.recv().await.is_none() {
                return;
            }
        }
    });
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
