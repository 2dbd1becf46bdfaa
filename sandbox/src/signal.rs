//! Signal numbers as `kill(2)` takes them, real-time ones included.

use std::fmt;

use nix::sys::signal::Signal;

/// A signal number, 1 to `SIGRTMAX` (64 on Linux): a standard signal, which nix's
/// [`Signal`] names, or a real-time one, which it cannot. Runtimes must send those too:
/// an image's `StopSignal` reaches the runtime as a number (containerd's CRI resolves
/// `SIGRTMIN+3`, what systemd images stop on, to 37), and runc sends whatever number it is
/// given (`runc kill`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SignalNumber(i32);

impl SignalNumber {
    /// The signal `n`; `None` outside 1..=`SIGRTMAX`. Numbers 32 and 33, which glibc keeps
    /// for itself, are valid signals to the kernel and so are accepted.
    pub fn new(n: i32) -> Option<SignalNumber> {
        (1..=libc::SIGRTMAX()).contains(&n).then_some(SignalNumber(n))
    }

    /// The number, as `kill(2)` takes it.
    pub fn as_raw(self) -> i32 {
        self.0
    }

    /// The standard signal it is, or `None` for a real-time signal.
    pub fn standard(self) -> Option<Signal> {
        Signal::try_from(self.0).ok()
    }
}

impl From<Signal> for SignalNumber {
    fn from(s: Signal) -> SignalNumber {
        SignalNumber(s as i32)
    }
}

impl PartialEq<Signal> for SignalNumber {
    fn eq(&self, other: &Signal) -> bool {
        self.0 == *other as i32
    }
}

/// `SIGTERM` for a standard signal, `SIGRTMIN+3` for a real-time one (glibc's `SIGRTMIN`,
/// as containerd and the shell name them), else `signal 32`.
impl fmt::Display for SignalNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.standard() {
            Some(s) => f.write_str(s.as_str()),
            None if self.0 >= libc::SIGRTMIN() => write!(f, "SIGRTMIN+{}", self.0 - libc::SIGRTMIN()),
            None => write!(f, "signal {}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_kernel_signal_and_names_it() {
        assert_eq!(SignalNumber::new(0), None);
        assert_eq!(SignalNumber::new(65), None);
        assert_eq!(SignalNumber::new(-9), None);
        let term = SignalNumber::new(15).unwrap();
        assert_eq!(term, Signal::SIGTERM);
        assert_eq!(term.to_string(), "SIGTERM");
        assert_eq!(term.standard(), Some(Signal::SIGTERM));
        let rt = SignalNumber::new(libc::SIGRTMIN() + 3).unwrap();
        assert_eq!(rt.standard(), None);
        assert_eq!(rt.to_string(), "SIGRTMIN+3");
        assert_eq!(SignalNumber::new(libc::SIGRTMAX()).unwrap().as_raw(), 64);
        assert_eq!(SignalNumber::new(32).unwrap().to_string(), "signal 32");
        assert_eq!(SignalNumber::from(Signal::SIGKILL).as_raw(), 9);
    }
}
