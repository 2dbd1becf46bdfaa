//! A panic hook that logs the panic through `tracing` before the process dies.
//!
//! Release builds set `panic = "abort"`, and `start` spawns the shim daemon with stderr
//! on `/dev/null`: without this hook a panic in the daemon leaves no line in
//! containerd's log, only a shim that is gone. The hook logs the message, location,
//! thread and a backtrace at error level to the subscriber in force when the panic
//! happens (the daemon's writes to containerd's `log` FIFO, see
//! [`crate::serve::init_logging`]), then runs the hook it replaced (std's prints to
//! stderr, which containerd reports for a failed `start` or `delete`); the abort, or
//! the unwind in debug builds, follows as before. Model: kata-containers'
//! `src/runtime-rs/crates/shim/src/panic_hook.rs`.

use std::any::Any;
use std::backtrace::Backtrace;

/// Installs the hook in front of the current one. Call it once, early in `main`: it
/// looks the `tracing` subscriber up at panic time, so logging may be set up later.
pub fn install() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let location = info
            .location()
            .map_or_else(|| "<unknown>".to_string(), ToString::to_string);
        let thread = std::thread::current();
        // Always captured, whatever RUST_BACKTRACE says: the process is about to end and
        // this line is all the log will have of it.
        let backtrace = Backtrace::force_capture();
        tracing::error!(
            location = %location,
            thread = thread.name().unwrap_or("<unnamed>"),
            backtrace = %backtrace,
            "panic: {}",
            message(info.payload()),
        );
        previous(info);
    }));
}

/// The text a panic was raised with: `panic!` with a literal carries a `&str`, with
/// format arguments a `String`.
fn message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(a payload that is not a string)"
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A `tracing` writer into a shared buffer.
    #[derive(Clone)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_panic_is_logged_at_error_level_with_location_thread_and_backtrace() {
        let buffer = Buffer(Arc::default());
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        install();
        let line = line!() + 4;
        let doomed = std::thread::Builder::new()
            .name("doomed".into())
            .spawn(move || {
                tracing::subscriber::with_default(subscriber, || panic!("boom {}", 42));
            })
            .unwrap();
        let joined = doomed.join();
        // Back to std's hook for the other tests of this binary.
        drop(std::panic::take_hook());
        assert!(joined.is_err(), "the thread did not panic");
        let log = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(log.contains("ERROR"), "{log}");
        assert!(log.contains("panic: boom 42"), "{log}");
        assert!(log.contains(&format!("location=shim/src/panic.rs:{line}:")), "{log}");
        assert!(log.contains("thread=\"doomed\""), "{log}");
        assert!(log.contains("backtrace="), "{log}");
    }

    #[test]
    fn payloads_other_than_strings_still_give_a_message() {
        assert_eq!(message(&"literal"), "literal");
        assert_eq!(message(&"formatted".to_string()), "formatted");
        assert_eq!(message(&7u8), "(a payload that is not a string)");
    }
}
