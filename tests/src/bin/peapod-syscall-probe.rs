//! `syscall-probe NAME...`: makes each named system call once, with arguments that change
//! nothing, and prints `NAME: ok` or `NAME: errno N`, a line each, for the seccomp tests.
//!
//! containerd's `RuntimeDefault` profile refuses these calls (EPERM) to a container without
//! CAP_SYS_ADMIN, and an unconfined root container may make them: they are the kernel
//! surface the issue names (keyrings, CVE-2022-0185's class; userfaultfd, the race helper
//! of many exploits; io_uring). busybox has no applet for any of them. Built static (`make
//! probe`), it is `/bin/syscall-probe` in the busybox test image, which has no libc.
//!
//! - `keyctl`: `keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0)`, reads an id
//!   (ENOKEY counts as made: the call reached the kernel);
//! - `userfaultfd`: `userfaultfd(O_CLOEXEC | UFFD_USER_MODE_ONLY)`, which needs no
//!   privilege since Linux 5.11; the fd is closed;
//! - `io_uring_setup`: `io_uring_setup(1, zeroed params)`; the ring's fd is closed.
//!
//! Exit status 0 when every name was known (whatever the calls returned), 2 otherwise.
//!
//! `syscall-probe wait-sigterm` instead blocks SIGTERM, prints `waiting`, takes SIGTERM
//! synchronously (`sigwaitinfo`) and prints `sigterm <arrival> <clock> <queued>`, ns:
//! `CLOCK_MONOTONIC` read right after the signal woke it (`clock`), the time it then
//! waited for a CPU (`queued`, from the kernel's schedstat) and their difference, when
//! SIGTERM made it runnable (`arrival`); then exits 0 (0.3 s later). The time a container
//! got SIGTERM, comparable across containers (one clock for the whole host, no time
//! namespace), with no shell trap or forked `date` between the signal and the reading,
//! and no CPU contention in it.

const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
/// `UFFD_USER_MODE_ONLY` (linux/userfaultfd.h, Linux 5.11).
const UFFD_USER_MODE_ONLY: libc::c_long = 1;
/// `struct io_uring_params`: 120 bytes the kernel reads and fills in.
const IO_URING_PARAMS_SIZE: usize = 120;

/// Makes the call named `name`; `None` for a name this probe does not know.
fn probe(name: &str) -> Option<Result<(), i32>> {
    let rc = match name {
        // SAFETY: keyctl's GET_KEYRING_ID takes three integers and touches no memory of ours.
        "keyctl" => unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0) },
        // SAFETY: userfaultfd takes one integer of flags and returns an fd (closed below).
        "userfaultfd" => unsafe {
            libc::syscall(
                libc::SYS_userfaultfd,
                libc::c_long::from(libc::O_CLOEXEC) | UFFD_USER_MODE_ONLY,
            )
        },
        "io_uring_setup" => {
            let mut params = [0u8; IO_URING_PARAMS_SIZE];
            // SAFETY: `params` is a writable buffer of the size of `struct io_uring_params`,
            // which outlives the call; the kernel writes the ring's offsets into it.
            unsafe { libc::syscall(libc::SYS_io_uring_setup, 1 as libc::c_long, params.as_mut_ptr()) }
        }
        _ => return None,
    };
    if rc < 0 {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        // ENOKEY: keyctl ran and found no session keyring to name.
        if name == "keyctl" && errno == libc::ENOKEY {
            return Some(Ok(()));
        }
        return Some(Err(errno));
    }
    if name != "keyctl" {
        let fd = i32::try_from(rc).expect("an fd fits an int");
        // SAFETY: `fd` was just returned to us by the kernel and is closed once.
        unsafe { libc::close(fd) };
    }
    Some(Ok(()))
}

/// The time this process has spent runnable but waiting for a CPU, ns: the second field
/// of `/proc/self/schedstat` (`run_delay`, kernel `Documentation/scheduler/sched-stats.rst`);
/// `None` without schedstat (`CONFIG_SCHED_INFO`).
fn run_delay() -> Option<u128> {
    std::fs::read_to_string("/proc/self/schedstat")
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `wait-sigterm` (see the module docs).
fn wait_sigterm() -> ! {
    // SAFETY: `set` is a local sigset_t the calls initialise; the mask change affects only
    // this single-threaded process.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    println!("waiting");
    let before = run_delay();
    loop {
        // SAFETY: `set` is the initialised sigset_t above; no siginfo is asked for.
        if unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) } == libc::SIGTERM {
            break;
        }
    }
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec the kernel writes.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let clock = u128::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000 + u128::try_from(now.tv_nsec).unwrap_or(0);
    // SIGTERM made this process runnable; on a busy host it may then have waited for a
    // CPU before reading the clock. The kernel counts that wait (run_delay): the arrival
    // is the clock reading less it.
    let queued = match (before, run_delay()) {
        (Some(b), Some(a)) => a.saturating_sub(b),
        _ => 0,
    };
    println!("sigterm {} {clock} {queued}", clock - queued);
    // Exit a moment later: a pid namespace's init exiting is work the kernel does on a
    // CPU the other containers' probes may be waiting for.
    std::thread::sleep(std::time::Duration::from_millis(300));
    std::process::exit(0);
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("wait-sigterm") {
        wait_sigterm();
    }
    let mut status = 0;
    for name in std::env::args().skip(1) {
        match probe(&name) {
            Some(Ok(())) => println!("{name}: ok"),
            Some(Err(errno)) => println!("{name}: errno {errno}"),
            None => {
                eprintln!("syscall-probe: unknown system call {name:?} (keyctl, userfaultfd, io_uring_setup)");
                status = 2;
            }
        }
    }
    std::process::exit(status);
}
