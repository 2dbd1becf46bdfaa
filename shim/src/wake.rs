//! Waiting on the event loop for a condition that other threads change.

use tokio::sync::Notify;

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
