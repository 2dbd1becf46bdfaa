//! The container init helper: the child side of `create` and `exec`.
//!
//! A multi-threaded runtime (the shim runs tokio) must not fork and keep running Rust in
//! the child (malloc locks held by other threads; runwasi #357). So the runtime spawns
//! its own binary, or `peapod-init`, through a handle nothing can write to
//! ([`crate::sys::SealedExe`]) with `_PEAPOD_INIT=<fd>` in its environment. Every binary that links `sandbox` calls
//! [`run_if_requested`] first thing in `main`; in the helper it never returns.
//!
//! The helper makes itself non-dumpable first ([`run_if_requested`]); container init
//! inherits that until its `execve`.
//!
//! The helper is single-threaded, so it may fork. For `create` it:
//! 1. enters the container's cgroup (on v1 it moves itself, see
//!    [`ToChild::EnterCgroup`]; on v2 the runtime moved it) and reads the [`InitConfig`];
//!    a new cgroup namespace is then rooted at that cgroup;
//! 2. writes `oom_score_adj` (inherited by its children);
//! 3. joins and creates namespaces ([`crate::namespaces::enter`]);
//! 4. clones container init with `CLONE_PARENT` so init is the runtime's child (and PID 1
//!    of a new pid namespace), reports its pid and exits.
//!
//! Container init then waits for `Continue`, builds its mount table, applies the process
//! settings, reports `Ready`, and blocks until `Start`, when it `execve`s the program.
//! Its seccomp filter, compiled by the runtime, is loaded before the process settings
//! without `noNewPrivileges` and right before `execve` with it ([`crate::seccomp`]).
//! Exec'd processes take the same path but join the namespaces of the running init,
//! through the pidfd of init that comes with [`ToChild::Exec`] (never by pid, which the
//! kernel may have given to another process once init exited).

use std::convert::Infallible;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Instant;

use crate::channel::{Channel, ExecConfig, FromChild, InitConfig, ToChild};
use crate::error::chain;
use crate::sys::{self, CloneResult};
use crate::{lsm, namespaces, process, rootfs};

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Environment variable naming the channel fd of an init helper.
pub const INIT_ENV: &str = "_PEAPOD_INIT";

/// The fd number the runtime gives the helper's channel (after stdio 0–2).
pub const HELPER_CHANNEL_FD: std::os::fd::RawFd = 3;

/// An init-side failure: the stage and the full cause chain, sent back to the runtime.
#[derive(Debug)]
struct Failure {
    stage: &'static str,
    error: String,
}

trait Stage<T> {
    fn stage(self, stage: &'static str) -> Result<T, Failure>;
}

impl<T, E: std::error::Error> Stage<T> for Result<T, E> {
    fn stage(self, stage: &'static str) -> Result<T, Failure> {
        self.map_err(|e| Failure {
            stage,
            error: chain(&e),
        })
    }
}

/// `peapod-init` next to the running executable: the small binary built from this crate
/// to run as the container init helper (see [`crate::sys`]'s sealed exe for how it is
/// run), for [`crate::Config::init_binary`]; `None` (the caller's own executable is used)
/// when it is not installed there.
pub fn installed_helper() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let init = exe.parent()?.join("peapod-init");
    init.is_file().then_some(init)
}

/// If this process is an init helper, runs it and exits; otherwise returns at once.
/// Call it first in `main`, before any thread is started.
pub fn run_if_requested() {
    let Some(value) = std::env::var_os(INIT_ENV) else {
        return;
    };
    // Non-dumpable before anything else, as runc's nsexec is: until the program's execve
    // (which makes it dumpable again, see execve(2)), this process and container init,
    // which inherits the flag, hold the runtime's fds and, before pivot_root, the host's
    // root. A dumpable process's /proc/<pid>/{fd,root,environ,mem} are open to any
    // process of the same uid, such as root in a sibling container of a shared pid
    // namespace, which lacks CAP_SYS_PTRACE (the class of CVE-2016-9962).
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        eprintln!("peapod init: prctl(PR_SET_DUMPABLE, 0): {e}");
        std::process::exit(2);
    }
    std::env::remove_var(INIT_ENV);
    let fd: RawFd = match value.to_str().and_then(|v| v.parse().ok()) {
        Some(fd) => fd,
        None => {
            eprintln!("peapod init: {INIT_ENV}={value:?} is not an fd number");
            std::process::exit(2);
        }
    };
    let chan = match sys::adopt_inherited_fd(fd) {
        Ok(fd) => Channel::from_fd(fd),
        Err(e) => {
            eprintln!("peapod init: {e}");
            std::process::exit(2);
        }
    };
    let result = helper(&chan);
    if let Err(f) = result {
        let _ = chan.send(&FromChild::Failed {
            stage: f.stage.to_string(),
            error: f.error,
        });
        std::process::exit(1);
    }
    std::process::exit(0);
}

fn helper(chan: &Channel) -> Result<(), Failure> {
    let (mut msg, mut fd) = split(chan.recv_with_fd::<ToChild>().stage("channel")?);
    if let Some(ToChild::EnterCgroup(files)) = &msg {
        for file in files {
            std::fs::write(file, "0").map_err(|e| Failure {
                stage: "cgroup",
                error: format!("move into the container's cgroup: write 0 to {}: {e}", file.display()),
            })?;
        }
        (msg, fd) = split(chan.recv_with_fd::<ToChild>().stage("channel")?);
    }
    match msg {
        Some(ToChild::Init(cfg)) => {
            if let Some(adj) = cfg.spec.process().as_ref().and_then(|p| p.oom_score_adj()) {
                process::set_oom_score_adj(adj).stage("process")?;
            }
            let t = Instant::now();
            namespaces::enter(&cfg.namespaces).stage("namespaces")?;
            let namespaces_us = micros(t);
            spawn(chan, namespaces_us, |chan| container_init(chan, &cfg))
        }
        Some(ToChild::Exec(cfg)) => {
            if let Some(adj) = cfg.process.oom_score_adj() {
                process::set_oom_score_adj(adj).stage("process")?;
            }
            // The pidfd of the container's init comes with the config.
            let pidfd = fd.ok_or_else(|| Failure {
                stage: "channel",
                error: format!("the exec config came without the pidfd of init (pid {})", cfg.target),
            })?;
            let t = Instant::now();
            namespaces::join_all_of(pidfd.as_fd(), cfg.target).stage("namespaces")?;
            drop(pidfd);
            let namespaces_us = micros(t);
            spawn(chan, namespaces_us, |chan| exec_process(chan, &cfg))
        }
        other => Err(Failure {
            stage: "channel",
            error: format!("expected a config, got {other:?}"),
        }),
    }
}

fn split<T>(got: Option<(T, Option<OwnedFd>)>) -> (Option<T>, Option<OwnedFd>) {
    match got {
        Some((msg, fd)) => (Some(msg), fd),
        None => (None, None),
    }
}

/// Clones the real process; in the clone runs `body`, reporting its failure and exiting.
fn spawn(
    chan: &Channel,
    namespaces_us: u64,
    body: impl FnOnce(&Channel) -> Result<Infallible, Failure>,
) -> Result<(), Failure> {
    match sys::clone_parent().stage("clone")? {
        CloneResult::Parent(pid) => chan
            .send(&FromChild::Spawned {
                pid: pid.as_raw(),
                namespaces_us,
            })
            .stage("channel"),
        CloneResult::Child => {
            let Err(f) = body(chan);
            let _ = chan.send(&FromChild::Failed {
                stage: f.stage.to_string(),
                error: f.error,
            });
            std::process::exit(1);
        }
    }
}

fn wait_for(chan: &Channel, want: &str) -> Result<(), Failure> {
    match chan.recv::<ToChild>().stage("channel")? {
        Some(ToChild::Continue) if want == "continue" => Ok(()),
        Some(ToChild::Start) if want == "start" => Ok(()),
        // The runtime went away: nobody will ever start us.
        None => std::process::exit(1),
        Some(other) => Err(Failure {
            stage: "channel",
            error: format!("expected {want}, got {other:?}"),
        }),
    }
}

fn container_init(chan: &Channel, cfg: &InitConfig) -> Result<Infallible, Failure> {
    wait_for(chan, "continue")?;
    let t = Instant::now();
    nix::unistd::setsid().stage("process")?;
    rootfs::prepare(&cfg.spec, &cfg.rootfs, cfg.cgroup_v2, &cfg.cgroup_mounts).stage("rootfs")?;
    let process = cfg.spec.process().as_ref().expect("validated: process present");
    if process.terminal() == Some(true) {
        let slave = console(chan, process)?;
        rootfs::bind_console(Path::new(&slave)).stage("rootfs")?;
    }
    rootfs::finalize(&cfg.spec).stage("rootfs")?;
    let rootfs_us = micros(t);
    let t = Instant::now();
    lsm::apply_apparmor(process.apparmor_profile().as_deref()).stage("apparmor")?;
    let no_new_privs = process.no_new_privileges() == Some(true);
    if !no_new_privs {
        load_seccomp(cfg.seccomp.as_ref())?;
    }
    process::apply(process).stage("process")?;
    process::enter_cwd(process).stage("process")?;
    let program = process::find_program(process).stage("process")?;
    let execve = process::prepare_exec(process, &program).stage("process")?;
    // Nothing the runtime had open may reach the program (CVE-2024-21626); our channel is
    // close-on-exec already, so its closing tells the runtime that exec succeeded.
    sys::cloexec_from(3).stage("process")?;
    sys::reset_signals().stage("process")?;
    let process_us = micros(t);
    chan.send(&FromChild::Ready { rootfs_us, process_us })
        .stage("channel")?;
    wait_for(chan, "start")?;
    if no_new_privs {
        load_seccomp(cfg.seccomp.as_ref())?;
    }
    Err(process::exec(&execve, &program)).stage("exec")
}

/// Loads the container's seccomp filter, if it has one (see [`crate::seccomp`] for when:
/// right before `execve` with `noNewPrivileges`, else before the uid change and the
/// capability drop, as runc orders it). A failure is stage `seccomp`, with the errno.
fn load_seccomp(program: Option<&crate::seccomp::Program>) -> Result<(), Failure> {
    match program {
        Some(p) => p.load().stage("seccomp"),
        None => Ok(()),
    }
}

/// Opens a pty in the container's devpts (so `tty` names a path that exists inside),
/// sends the master to the runtime, and makes the slave our stdio and controlling
/// terminal (we are a session leader). Returns the slave's path.
fn console(chan: &Channel, process: &oci_spec::runtime::Process) -> Result<String, Failure> {
    use nix::fcntl::OFlag;
    use std::os::fd::AsFd;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).stage("console")?;
    nix::pty::grantpt(&master).stage("console")?;
    nix::pty::unlockpt(&master).stage("console")?;
    let slave_path = nix::pty::ptsname_r(&master).stage("console")?;
    if let Some(size) = process.console_size() {
        let rows = u16::try_from(size.height()).unwrap_or(u16::MAX);
        let cols = u16::try_from(size.width()).unwrap_or(u16::MAX);
        sys::set_window_size(master.as_fd(), rows, cols).stage("console")?;
    }
    let slave = nix::fcntl::open(
        slave_path.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY,
        nix::sys::stat::Mode::empty(),
    )
    .stage("console")?;
    chan.send_with_fd(&FromChild::Console, master.as_fd())
        .stage("channel")?;
    drop(master);
    nix::unistd::dup2_stdin(&slave).stage("console")?;
    nix::unistd::dup2_stdout(&slave).stage("console")?;
    nix::unistd::dup2_stderr(&slave).stage("console")?;
    drop(slave);
    sys::set_controlling_terminal(std::io::stdin().as_fd()).stage("console")?;
    Ok(slave_path)
}

fn exec_process(chan: &Channel, cfg: &ExecConfig) -> Result<Infallible, Failure> {
    wait_for(chan, "continue")?;
    nix::unistd::setsid().stage("process")?;
    if cfg.process.terminal() == Some(true) {
        console(chan, &cfg.process)?;
    }
    let no_new_privs = cfg.process.no_new_privileges() == Some(true);
    if !no_new_privs {
        load_seccomp(cfg.seccomp.as_ref())?;
    }
    process::apply(&cfg.process).stage("process")?;
    lsm::apply_apparmor(cfg.process.apparmor_profile().as_deref()).stage("apparmor")?;
    process::enter_cwd(&cfg.process).stage("process")?;
    let program = process::find_program(&cfg.process).stage("process")?;
    let execve = process::prepare_exec(&cfg.process, &program).stage("process")?;
    sys::cloexec_from(3).stage("process")?;
    sys::reset_signals().stage("process")?;
    if no_new_privs {
        load_seccomp(cfg.seccomp.as_ref())?;
    }
    Err(process::exec(&execve, &program)).stage("exec")
}
