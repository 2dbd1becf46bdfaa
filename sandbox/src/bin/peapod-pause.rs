//! `peapod-pause`: the process that holds a pod's namespaces (Kubernetes' "pause").
//!
//! It sleeps until SIGINT or SIGTERM, then exits 0. As PID 1 of a pod's shared pid
//! namespace (`shareProcessNamespace`) it also reaps the zombies orphans leave behind.
//! Built statically (`make pause`) so the pause image needs nothing else.
#![deny(unsafe_code)]

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

fn main() {
    if std::env::args().nth(1).as_deref() == Some("-v") {
        println!("peapod-pause {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    // Block the signals we handle and take them synchronously: no handler code at all.
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGCHLD] {
        set.add(s);
    }
    if let Err(e) = set.thread_block() {
        eprintln!("peapod-pause: block signals: {e}");
        std::process::exit(1);
    }
    loop {
        match set.wait() {
            Ok(Signal::SIGINT) | Ok(Signal::SIGTERM) => std::process::exit(0),
            Ok(Signal::SIGCHLD) => reap(),
            Ok(_) | Err(_) => {}
        }
    }
}

/// Reaps every exited child. A child ended by a real-time signal is reaped too, although
/// nix reports its status as EINVAL (it cannot name the signal): only ECHILD (no child
/// left) and "none exited yet" end the loop.
fn reap() {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(nix::Error::ECHILD) => break,
            Ok(_) | Err(_) => {}
        }
    }
}
