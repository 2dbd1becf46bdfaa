//! Integration-test harness: busybox bundles built from Debian's `busybox-static`, OCI
//! specs shaped like the ones containerd writes, container runs with captured output, and
//! leak checks (processes, mounts, cgroups, state dirs), and a direct client of a shim's
//! Sandbox API ([`sandbox_api`]).
//!
//! Tests run as root against the real kernel. Without root they fail with the reason;
//! they never skip.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{bail, ensure, Context, Result};
use oci_spec::runtime::{Capability, Spec};
use sandbox::{Config, Container, CreateOptions, Stdio};

pub mod containerd;
pub mod cpu;
pub mod cri;
pub mod embedded;
pub mod fuzz;
pub mod images;
pub mod procs;
pub mod sandbox_api;
pub mod seccomp;
pub mod task_api;

/// Where the static busybox comes from (Debian's `busybox-static`, installed by `make deps`).
pub const BUSYBOX: &str = "/bin/busybox";

/// Fails with the reason unless we are root: privileged tests never skip.
pub fn require_root() -> Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "this suite creates containers and must run as root (CI does; locally: sudo make test)"
    );
    ensure!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} is missing: run `make deps` (Debian package busybox-static)"
    );
    Ok(())
}

/// Builds a busybox root filesystem at `root`: `/bin/busybox`, one symlink per applet,
/// `/etc/passwd` and `/etc/group`, and the usual empty directories.
pub fn busybox_rootfs(root: &Path) -> Result<()> {
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "root", "var", "run"] {
        fs::create_dir_all(root.join(d))?;
    }
    fs::copy(BUSYBOX, root.join("bin/busybox")).context("copy busybox")?;
    let list = std::process::Command::new(BUSYBOX).arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            symlink("busybox", root.join("bin").join(applet))?;
        }
    }
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )?;
    fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    Ok(())
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A bundle directory with a busybox rootfs, its own state root and cgroup path, removed
/// on drop.
pub struct Bundle {
    /// Container id, unique per test and run.
    pub id: String,
    /// Temp dir holding `config.json`, `rootfs/` and `state/`.
    pub dir: tempfile::TempDir,
    /// The spec written by [`Bundle::write`].
    pub spec: Spec,
}

impl Bundle {
    /// A new bundle for a test named `name`, running `args` with a default spec.
    pub fn new(name: &str, args: &[&str]) -> Result<Self> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{name}-{}-{n}", std::process::id());
        let dir = tempfile::Builder::new().prefix("peapod-bundle-").tempdir()?;
        busybox_rootfs(&dir.path().join("rootfs"))?;
        let spec = default_spec(&id, args);
        Ok(Self { id, dir, spec })
    }

    /// Bundle path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runtime config with a state root and a seccomp store (`seccomp/`) private to this
    /// bundle.
    pub fn config(&self) -> Config {
        Config {
            state_root: self.path().join("state"),
            init_binary: None,
            seccomp_store: Some(self.path().join("seccomp")),
        }
    }

    /// The cgroup path the spec names.
    pub fn cgroup_path(&self) -> String {
        format!("peapod-test/{}", self.id)
    }

    /// Writes `config.json` from `self.spec`.
    pub fn write(&self) -> Result<()> {
        fs::write(self.path().join("config.json"), serde_json::to_vec_pretty(&self.spec)?)?;
        Ok(())
    }

    /// Writes the spec and creates the container with the given stdio.
    pub fn create(&self, stdio: Stdio) -> Result<Container> {
        self.write()?;
        Ok(Container::create(
            &self.config(),
            CreateOptions {
                id: self.id.clone(),
                bundle: self.path().to_path_buf(),
                rootfs_mounts: Vec::new(),
                spec: None,
                stdio,
            },
        )?)
    }

    /// Creates and starts the container.
    pub fn start(&self, stdio: Stdio) -> Result<Container> {
        let mut c = self.create(stdio)?;
        c.start()?;
        Ok(c)
    }

    /// Deletes the container (`force` kills what still runs) and checks that nothing of
    /// it is left.
    pub fn delete(&self, c: Container, force: bool) -> Result<()> {
        let pid = c.pid();
        c.delete(force)?;
        self.assert_clean(pid)
    }

    /// Creates, starts and waits for the container; returns (exit code, stdout, stderr),
    /// then deletes it and checks that nothing is left.
    pub fn run(&self) -> Result<Output> {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let mut c = self.create(Stdio {
            stdin: None,
            stdout: Some(out_w),
            stderr: Some(err_w),
        })?;
        let out = reader(out_r);
        let err = reader(err_r);
        let started = c.start();
        let code = c.wait()?;
        let pid = c.pid();
        c.delete(false)?;
        let output = Output {
            code,
            stdout: out.join().expect("reader thread")?,
            stderr: err.join().expect("reader thread")?,
        };
        started.with_context(|| format!("start failed; output: {output:?}"))?;
        self.assert_clean(pid)?;
        Ok(output)
    }

    /// Checks that nothing of the container remains: process, cgroup, state dir, mounts.
    pub fn assert_clean(&self, pid: Option<nix::unistd::Pid>) -> Result<()> {
        if let Some(pid) = pid {
            ensure!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "leak: container init {pid} still exists"
            );
        }
        ensure!(
            !sandbox::cgroups::exists_anywhere(&self.cgroup_path()),
            "leak: cgroup {} still exists",
            self.cgroup_path()
        );
        let state = self.config().state_root.join(&self.id);
        ensure!(!state.exists(), "leak: state dir {} still exists", state.display());
        let mounts = fs::read_to_string("/proc/self/mountinfo")?;
        let bundle = self.path().to_string_lossy();
        if let Some(line) = mounts.lines().find(|l| l.contains(bundle.as_ref())) {
            bail!("leak: mount under the bundle is still there: {line}");
        }
        Ok(())
    }
}

/// `tests![f, g]`: `(name, f as TestFn)` pairs named after the functions, for
/// [`run_privileged_suite`].
#[macro_export]
macro_rules! tests {
    ($($f:ident),* $(,)?) => {
        vec![$((stringify!($f), $f as $crate::TestFn)),*]
    };
}

/// A privileged test: `Ok` or the failure with its cause chain.
pub type TestFn = fn() -> Result<()>;

/// Runs a privileged suite as a `harness = false` test binary's `main` does after
/// `sandbox::init::run_if_requested()`: each `(name, test)` becomes a libtest trial that
/// fails with the reason when not root (never skips); after all of them `after` runs (the
/// suite's leak checks), and its failure makes the binary exit 101.
///
/// The name filter may list alternatives separated by `|` (`embedded::probes|cri::`): a
/// test runs when its name contains any of them (libtest takes one substring; the VM
/// tier runs chosen tests of a suite so, `tests/vm/suites`).
///
/// Each test that passes also prints `took <seconds> s: <name>` on stderr, so a run's log
/// (the VM's serial log too) shows where a tier's time goes when choosing what each tier
/// repeats (README, Tests).
pub fn run_privileged_suite<S: Into<String>>(tests: Vec<(S, TestFn)>, after: impl FnOnce() -> Result<()>) -> ! {
    let mut args = libtest_mimic::Arguments::from_args();
    let alternatives: Option<Vec<String>> = args
        .filter
        .as_deref()
        .filter(|f| f.contains('|'))
        .map(|f| f.split('|').filter(|a| !a.is_empty()).map(str::to_string).collect());
    if alternatives.is_some() {
        args.filter = None;
    }
    let root = require_root().map_err(|e| format!("{e:#}"));
    let trials = tests
        .into_iter()
        .map(|(name, f)| (name.into(), f))
        .filter(|(name, _): &(String, TestFn)| {
            alternatives
                .as_ref()
                .is_none_or(|alts| alts.iter().any(|a| name.contains(a.as_str())))
        })
        .map(|(name, f)| {
            let root = root.clone();
            let label = name.clone();
            libtest_mimic::Trial::test(name, move || {
                root?;
                let began = std::time::Instant::now();
                f().map_err(|e| format!("{e:#}"))?;
                eprintln!("took {:.1} s: {label}", began.elapsed().as_secs_f64());
                Ok(())
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    if let Err(e) = after() {
        eprintln!("suite leak check failed: {e:#}");
        std::process::exit(101);
    }
    conclusion.exit()
}

/// After the whole suite: no cgroup of this test process may remain under `peapod-test/`,
/// and the shared parent is removed when empty. Returns the leftovers as an error.
pub fn sweep_test_cgroups() -> Result<()> {
    let marker = format!("-{}-", std::process::id());
    let mut leaks = Vec::new();
    let roots: Vec<PathBuf> = if sandbox::cgroups::is_v2() {
        vec![PathBuf::from("/sys/fs/cgroup")]
    } else {
        fs::read_dir("/sys/fs/cgroup")?.flatten().map(|e| e.path()).collect()
    };
    for root in roots {
        let parent = root.join("peapod-test");
        for entry in fs::read_dir(&parent).into_iter().flatten().flatten() {
            if entry.file_type()?.is_dir() && entry.file_name().to_string_lossy().contains(&marker) {
                leaks.push(entry.path());
            }
        }
        let _ = fs::remove_dir(&parent);
    }
    ensure!(leaks.is_empty(), "leaked cgroups: {leaks:?}");
    Ok(())
}

/// After a suite: no child of this process is left, running or unreaped (init helpers and
/// container inits are our children; every test reaps what it started). Read from each
/// thread's `/proc/self/task/<tid>/children`, which lists live and zombie children.
pub fn assert_no_children() -> Result<()> {
    let mut left = Vec::new();
    for task in fs::read_dir("/proc/self/task")?.flatten() {
        let children = fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for pid in children.split_whitespace() {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            left.push(format!("{pid} {}", comm.trim_end()));
        }
    }
    ensure!(left.is_empty(), "leak: child processes left (pid comm): {left:?}");
    Ok(())
}

/// What a container run printed and returned.
#[derive(Debug)]
pub struct Output {
    /// Exit code (128 + signal when killed).
    pub code: i32,
    /// Captured stdout.
    pub stdout: String,
    /// Captured stderr.
    pub stderr: String,
}

/// Waits (at most 10 s) until the shim serving `address` has exited and removed its
/// socket, after `Shutdown`: a socket still there then is a leak.
pub fn wait_shim_gone(address: &str) -> Result<()> {
    let path = shim::start::socket_path(address);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while path.exists() {
        ensure!(
            std::time::Instant::now() < deadline,
            "leak: shim socket {} still there after Shutdown",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}

/// A pipe as (read end, write end), both close-on-exec.
pub fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

/// Reads `fd` to the end on a thread.
pub fn reader(fd: OwnedFd) -> std::thread::JoinHandle<Result<String>> {
    std::thread::spawn(move || {
        let mut s = String::new();
        fs::File::from(fd).read_to_string(&mut s)?;
        Ok(s)
    })
}

/// Reads a pty master until the last slave closes (the kernel then returns EIO).
pub fn console_reader(fd: OwnedFd) -> std::thread::JoinHandle<Result<String>> {
    std::thread::spawn(move || {
        let mut file = fs::File::from(fd);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(String::from_utf8_lossy(&out).replace("\r\n", "\n"))
    })
}

/// The capabilities containerd gives a container by default.
pub fn default_caps() -> Vec<Capability> {
    sandbox::spec::DEFAULT_CAPS.to_vec()
}

/// [`sandbox::spec::default_spec`] with a cgroup path under `peapod-test/`.
pub fn default_spec(id: &str, args: &[&str]) -> Spec {
    let mut spec = sandbox::spec::default_spec(args);
    if let Some(linux) = spec.linux_mut() {
        linux.set_cgroups_path(Some(format!("/peapod-test/{id}").into()));
    }
    spec
}

/// Parses `Key:\tvalue` lines of `/proc/<pid>/status`.
pub fn proc_status(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The capability bitmask of `caps`, as `/proc/self/status` prints `CapEff`.
pub fn cap_mask(caps: &[Capability]) -> u64 {
    caps.iter()
        .map(|c| {
            format!("CAP_{c}")
                .parse::<caps::Capability>()
                .expect("known cap")
                .bitmask()
        })
        .fold(0, |a, b| a | b)
}

/// A path under the host's cgroup mount for `controller` (ignored on v2) and `path`.
pub fn cgroup_file(controller: &str, path: &str, file: &str) -> PathBuf {
    sandbox::cgroups::CgroupFiles::host(path).file(controller, file)
}
