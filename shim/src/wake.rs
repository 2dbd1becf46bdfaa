//! Waiting on the event loop for a condition that other threads change, or for a file
//! descriptor to turn readable.

use std::os::fd::AsRawFd;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;

/// A value that owns its file descriptor: the fd stays open, and stays the same file, for
/// as long as the value lives, and nothing else closes it. What [`register_readable`]
/// needs; implemented here only, for the owners the shim registers.
pub(crate) trait OwnsFd: AsRawFd {}

impl OwnsFd for std::fs::File {}

impl OwnsFd for sandbox::cgroups::OomWatcher {}

/// `inner` registered with the current runtime's reactor, for readability (a process's
/// output pipe or pty master, a cgroup's OOM notifier).
///
/// Errors: the reactor's (`epoll_ctl`), with `inner` dropped.
#[allow(unsafe_code)]
pub(crate) fn register_readable<T: OwnsFd>(inner: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: `AsyncFd::register_with_interest` needs the fd to stay open, and to be the
    // same file, for as long as it is registered. `T: OwnsFd` owns it, and the `AsyncFd`
    // owns `inner`: nothing else can close or replace the fd, and the `AsyncFd`
    // deregisters it before dropping `inner`.
    unsafe { AsyncFd::register_with_interest(inner, Interest::READABLE) }.map_err(|e| e.into_parts().1)
}

/// Resolves to `check`'s value once it returns one, looking again each time `notify`
/// wakes its waiters (`Notify::notify_waiters`, called after every change `check` can
/// see). The wake-up is registered before each look, so a change between the look and
/// the await is never missed. `check` must not block.
pub(crate) async fn when<T>(notify: &Notify, mut check: impl FnMut() -> Option<T>) -> T {
    loop {
        let woken = notify.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if let Some(value) = check() {
            return value;
        }
        woken.await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_change_made_by_another_thread_wakes_the_wait() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let notify = Arc::new(Notify::new());
        let value = Arc::new(AtomicU32::new(0));
        let (n, v) = (notify.clone(), value.clone());
        let changer = std::thread::spawn(move || {
            for i in 1..=3 {
                std::thread::sleep(std::time::Duration::from_millis(20));
                v.store(i, Ordering::SeqCst);
                n.notify_waiters();
            }
        });
        let seen = runtime.block_on(when(&notify, || {
            let now = value.load(Ordering::SeqCst);
            (now == 3).then_some(now)
        }));
        assert_eq!(seen, 3);
        changer.join().unwrap();
    }
}
