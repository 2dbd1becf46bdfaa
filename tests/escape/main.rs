//! Escape suite (privileged): one test per escape class of the isolation issue. Each test
//! is a real attempt to reach the host from inside a container, or through the runtime's
//! inputs (an image's files, a manifest's names, CLI arguments), and the verdict is an
//! observation made on the host: a host directory left unchanged, a sentinel still in
//! place, nothing created outside the temp dirs the test owns.
//!
//! Where runc can run the same bundle (`runc --root <temp> run -b <bundle> <id>`, Debian's
//! runc, its state root in a temp dir), the same attempt is made under runc as well, as a
//! `runc::<name>` test beside the `peapod::<name>` one, so the two runtimes are compared on
//! the same input. Attempts that go through peapod's own inputs (the CLI) have no runc
//! counterpart.
//!
//! Every test cleans up after itself and checks it did: no container process, mount,
//! cgroup or state dir is left (the harness's `assert_clean`, runc's state root empty),
//! and after the suite no test cgroup remains.
//!
//! `harness = false`: this binary is also the container init helper (see
//! `sandbox::init`), so `main` dispatches to it before running tests.

use std::fs;
use std::os::unix::fs::{symlink, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as ProcStdio};

use anyhow::{ensure, Context, Result};
use peapod::embedded::Shim;
use peapod_tests::containerd::peapod_shim;
use peapod_tests::{run_privileged_suite, sweep_test_cgroups, wait_shim_gone, Bundle, Output, TestFn};

/// What the sentinel `null` in the host directory holds.
const SENTINEL: &str = "host file, must survive\n";

/// A host directory the image's `/dev` points at: a temp dir under /tmp with a regular
/// file named `null` (a name of a default device node).
struct HostDir {
    dir: tempfile::TempDir,
}

impl HostDir {
    fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("peapod-escape-dev-")
            .tempdir_in("/tmp")?;
        fs::write(dir.path().join("null"), SENTINEL)?;
        Ok(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The directory holds exactly the sentinel (a regular file with its content): no
    /// device node, symlink, directory or other file the runtime created.
    fn assert_unchanged(&self) -> Result<()> {
        let mut names = Vec::new();
        for e in fs::read_dir(self.path())? {
            names.push(e?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        ensure!(
            names == ["null"],
            "the runtime wrote into the host directory {} the image's /dev points at: {names:?}",
            self.path().display()
        );
        self.assert_sentinel()
    }

    /// The weaker property Debian's runc 1.1.5 keeps: no device node was made in the
    /// directory and the host file of a device's name is intact. (On the host runc makes its
    /// `/dev` symlinks `fd`, `stdin`, `stdout`, `stderr`, `ptmx` there, at
    /// `<rootfs>/dev/<name>` without securejoin (`setupDevSymlinks`); in the cgroup v2 VM a
    /// `core` file appeared there once, with the bundle on a nodev `/tmp`. Its device nodes go
    /// through securejoin.) peapod must
    /// keep the strict [`HostDir::assert_unchanged`].
    fn assert_no_device_nodes(&self) -> Result<()> {
        let mut nodes = Vec::new();
        for e in fs::read_dir(self.path())? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_char_device() || t.is_block_device() {
                nodes.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        ensure!(
            nodes.is_empty(),
            "the runtime made device nodes in the host directory {} the image's /dev points at: {nodes:?}",
            self.path().display()
        );
        self.assert_sentinel()
    }

    /// The sentinel `null` is still a regular file with its content.
    fn assert_sentinel(&self) -> Result<()> {
        let sentinel = self.path().join("null");
        let meta = fs::symlink_metadata(&sentinel)?;
        ensure!(
            meta.file_type().is_file() && !meta.file_type().is_char_device(),
            "host file {} was replaced: {:?}",
            sentinel.display(),
            meta.file_type()
        );
        let content = fs::read_to_string(&sentinel)?;
        ensure!(
            content == SENTINEL,
            "host file {} changed: {content:?}",
            sentinel.display()
        );
        Ok(())
    }
}

/// A busybox bundle whose rootfs has `/dev` as an absolute symlink to `host`, with
/// (`dev_tmpfs`) or without the spec's `/dev` tmpfs mount. The container checks that its
/// own `/dev/null` is a character device (opening it needs a filesystem that allows
/// devices: the VM's `/tmp`, where bundles live, is `nodev`).
fn dev_symlink_bundle(name: &str, host: &Path, dev_tmpfs: bool) -> Result<Bundle> {
    let mut b = Bundle::new(name, &["sh", "-c", "test -c /dev/null && echo ran"])?;
    let dev = b.path().join("rootfs/dev");
    fs::remove_dir(&dev)?;
    symlink(host, &dev)?;
    if !dev_tmpfs {
        let mounts = b.spec.mounts_mut().as_mut().context("spec has mounts")?;
        mounts.retain(|m| m.destination() != Path::new("/dev"));
    }
    b.write()?;
    Ok(b)
}

/// Runs the bundle under runc with a private state root; checks runc's state and the
/// bundle's cgroup and mounts are gone afterwards.
fn runc_run(b: &Bundle) -> Result<Output> {
    b.write()?;
    let state = tempfile::Builder::new().prefix("peapod-escape-runc-").tempdir()?;
    let out = Command::new("runc")
        .arg("--root")
        .arg(state.path())
        .args(["run", "-b"])
        .arg(b.path())
        .arg(&b.id)
        .stdin(ProcStdio::null())
        .output()
        .context("runc (Debian package runc) could not be started")?;
    let output = Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    let left: Vec<PathBuf> = fs::read_dir(state.path())?.flatten().map(|e| e.path()).collect();
    ensure!(left.is_empty(), "leak: runc state left: {left:?}");
    b.assert_clean(None)?;
    Ok(output)
}

fn dev_symlink_peapod(dev_tmpfs: bool) -> Result<()> {
    let host = HostDir::new()?;
    let b = dev_symlink_bundle("escape-dev", host.path(), dev_tmpfs)?;
    let out = b.run();
    host.assert_unchanged()?;
    let out = out?;
    ensure!(
        out.code == 0 && out.stdout == "ran\n",
        "the container did not run: {out:?}"
    );
    Ok(())
}

fn dev_symlink_runc(dev_tmpfs: bool) -> Result<()> {
    let host = HostDir::new()?;
    let b = dev_symlink_bundle("escape-dev-runc", host.path(), dev_tmpfs)?;
    let out = runc_run(&b);
    host.assert_no_device_nodes()?;
    let out = out?;
    ensure!(
        out.code == 0 && out.stdout == "ran\n",
        "the container did not run: {out:?}"
    );
    Ok(())
}

// Class: the image's /dev is a symlink out of the rootfs (runc's securejoin; the class of
// CVE-2021-30465). Device nodes must be made inside the rootfs, never in the host
// directory the link names.

fn image_dev_symlink_does_not_write_on_the_host() -> Result<()> {
    dev_symlink_peapod(true)
}

fn image_dev_symlink_without_dev_tmpfs_does_not_write_on_the_host() -> Result<()> {
    dev_symlink_peapod(false)
}

fn runc_image_dev_symlink_does_not_write_on_the_host() -> Result<()> {
    dev_symlink_runc(true)
}

fn runc_image_dev_symlink_without_dev_tmpfs_does_not_write_on_the_host() -> Result<()> {
    dev_symlink_runc(false)
}

// Class: names used as paths (Kubernetes API validation, k8s.io/apimachinery/pkg/util/
// validation). A namespace or pod name with `..` must be refused before any path is built.

/// A temp dir with the CLI's root and state one level down (`a/root`, `a/state`), and an
/// `outside/` directory where `../../../outside/victim` from `a/state/pods` lands, holding
/// a sentinel pod directory `victim_p` with a `pod.json` and a file `keep`.
struct CliDirs {
    dir: tempfile::TempDir,
}

/// The namespace that walks from `<state>/pods/` to `outside/victim`.
const TRAVERSAL: &str = "../../../outside/victim";

impl CliDirs {
    fn new() -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("peapod-escape-cli-").tempdir()?;
        let victim = dir.path().join("outside/victim_p");
        fs::create_dir_all(&victim)?;
        fs::write(victim.join("pod.json"), "not a pod record\n")?;
        fs::write(victim.join("keep"), SENTINEL)?;
        // The pod directories exist, so a traversal through them resolves.
        fs::create_dir_all(dir.path().join("a/root/pods"))?;
        fs::create_dir_all(dir.path().join("a/state/pods"))?;
        Ok(Self { dir })
    }

    fn peapod(&self, args: &[&str]) -> Result<Output> {
        let bin = peapod_tests::containerd::target_profile_dir()?.join("peapod");
        ensure!(bin.exists(), "{} is missing: cargo build -p peapod", bin.display());
        let mut c = Command::new(bin);
        c.args(args)
            .env("PEAPOD_ROOT", self.dir.path().join("a/root"))
            .env("PEAPOD_STATE", self.dir.path().join("a/state"))
            .stdin(ProcStdio::null());
        if let Ok(pause) = peapod_tests::images::pause_binary() {
            c.env("PEAPOD_PAUSE", pause);
        }
        let out = c.output()?;
        Ok(Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Every path under the temp dir outside `a/`, with file contents.
    fn outside(&self) -> Result<Vec<(PathBuf, Option<String>)>> {
        let mut all = Vec::new();
        let mut todo = vec![self.dir.path().to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in fs::read_dir(&d)? {
                let p = e?.path();
                if p == self.dir.path().join("a") {
                    continue;
                }
                let m = fs::symlink_metadata(&p)?;
                if m.is_dir() {
                    todo.push(p.clone());
                    all.push((p, None));
                } else {
                    all.push((p.clone(), Some(fs::read_to_string(&p).unwrap_or_default())));
                }
            }
        }
        all.sort();
        Ok(all)
    }

    /// Runs `args`; it must exit 1 with an error naming `field`, and change nothing
    /// outside `a/`.
    fn refused(&self, args: &[&str], field: &str) -> Result<()> {
        let before = self.outside()?;
        let out = self.peapod(args)?;
        let after = self.outside()?;
        ensure!(
            before == after,
            "peapod {args:?} changed the host outside its dirs: {before:?} -> {after:?}"
        );
        ensure!(out.code == 1, "peapod {args:?}: exit {}, want 1: {out:?}", out.code);
        ensure!(
            out.stderr.contains(field) && out.stderr.contains("DNS-1123"),
            "peapod {args:?}: the error does not name {field}: {:?}",
            out.stderr
        );
        Ok(())
    }
}

fn manifest_namespace_traversal_is_refused_before_any_path() -> Result<()> {
    let d = CliDirs::new()?;
    let manifest = d.dir.path().join("a/pod.yaml");
    fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: {TRAVERSAL:?}\n\
             spec:\n  containers:\n  - name: c\n    image: busybox\n"
        ),
    )?;
    d.refused(&["run", "-f", &manifest.to_string_lossy()], "metadata.namespace")
}

fn namespace_flag_traversal_is_refused_by_get_and_delete() -> Result<()> {
    let d = CliDirs::new()?;
    for ns in [TRAVERSAL, "../.."] {
        d.refused(&["-n", ns, "get", "pod", "p"], "namespace")?;
        d.refused(&["-n", ns, "delete", "pod", "p"], "namespace")?;
    }
    d.refused(&["get", "pod", "../../outside/victim_p"], "name")?;
    d.refused(&["delete", "pod", "../../outside/victim_p"], "name")
}

/// Set (to a socket path) when this binary is re-run as an unprivileged connect probe.
const CONNECT_PROBE_ENV: &str = "PEAPOD_ESCAPE_CONNECT";

/// The probe: connects to the socket and exits 0 when it could, else with the errno.
fn run_connect_probe_if_requested() {
    if let Some(path) = std::env::var_os(CONNECT_PROBE_ENV) {
        let code = match std::os::unix::net::UnixStream::connect(&path) {
            Ok(_) => 0,
            Err(e) => e.raw_os_error().unwrap_or(255),
        };
        std::process::exit(code);
    }
}

/// Connects to `path` as uid/gid 65534 (nobody) from a fresh process; the errno when that
/// was refused, `None` when it connected.
fn connect_as_nobody(path: &Path) -> Result<Option<i32>> {
    use std::os::unix::process::CommandExt;
    let status = Command::new(std::env::current_exe()?)
        .env(CONNECT_PROBE_ENV, path)
        .uid(65534)
        .gid(65534)
        .stdin(ProcStdio::null())
        .status()
        .context("run the connect probe as nobody")?;
    let code = status.code().context("the connect probe was killed")?;
    Ok((code != 0).then_some(code))
}

// Class: the shim's socket is the whole Task API (exec as root in any container of the
// pod). containerd's Go shims chmod it 0600 and make its directory 0700; a host user other
// than root must not be able to connect. (The socket's mode used to follow the umask of
// whoever started the shim.)
fn shim_socket_is_root_only() -> Result<()> {
    let b = Bundle::new("escape-sock", &["true"])?;
    b.write()?;
    let shim = Shim::start(&peapod_shim()?, &b.id, b.path(), None)?;
    let path = shim::start::socket_path(shim.address()).to_path_buf();
    let result = (|| {
        let mode = fs::metadata(&path)?.permissions().mode() & 0o7777;
        ensure!(
            mode == 0o600,
            "shim socket {} has mode {mode:o}, want 600",
            path.display()
        );
        let refused = connect_as_nobody(&path)?;
        ensure!(
            refused == Some(libc::EACCES),
            "an unprivileged user's connect to the shim socket {}: {}",
            path.display(),
            refused.map_or("connected".to_string(), |e| format!("errno {e}, want EACCES"))
        );
        Ok(())
    })();
    shim.shutdown()?;
    wait_shim_gone(shim.address())?;
    result?;
    b.assert_clean(None)
}

/// Set (to `<address>\n<task id>`) when this binary is re-run as a Task API probe.
const TASK_PROBE_ENV: &str = "PEAPOD_ESCAPE_TASK";

/// The Task API probe's exit codes.
const PROBE_SERVED: i32 = 0;
const PROBE_NO_CONNECT: i32 = 10;
const PROBE_REFUSED: i32 = 11;

/// The probe: connects to the shim at the address and calls `Connect` for the task (not
/// created: the service answers "not found"); exits [`PROBE_SERVED`] when the service
/// answered, [`PROBE_NO_CONNECT`] when the socket refused
/// the connection, [`PROBE_REFUSED`] when the shim dropped the call.
fn run_task_probe_if_requested() {
    if let Some(value) = std::env::var_os(TASK_PROBE_ENV) {
        let value = value.to_string_lossy().into_owned();
        let (address, id) = value.split_once('\n').unwrap_or((&value, ""));
        let code = match Shim::connect(address) {
            Err(e) => {
                eprintln!("task probe: {e:#}");
                PROBE_NO_CONNECT
            }
            // No task exists yet: the service's own answer is "not found".
            Ok(shim) => match shim.shim_pid(id) {
                Ok(_) => PROBE_SERVED,
                Err(peapod::embedded::EmbeddedError::Call { message, .. }) if message.ends_with("not found") => {
                    PROBE_SERVED
                }
                Err(e) => {
                    eprintln!("task probe: {e:#}");
                    PROBE_REFUSED
                }
            },
        };
        std::process::exit(code);
    }
}

// Class: the shim's peer check. The socket's mode keeps out users without
// CAP_DAC_OVERRIDE; a process that has it (a host daemon running as a service user with
// that capability, a setcap binary) can still connect, and then the shim's Task API is
// theirs: containerd's Go shims accept only peers with the shim's own uid and gid
// (`ttrpc.UnixSocketRequireSameUser`, checked on SO_PEERCRED). The probe runs as uid/gid
// 65534 with CAP_DAC_OVERRIDE as an ambient capability, so its connect gets past the mode
// and only the peer check can refuse it; a root probe, the control, is served.
fn shim_refuses_a_peer_of_another_uid() -> Result<()> {
    let b = Bundle::new("escape-peer", &["true"])?;
    b.write()?;
    let shim = Shim::start(&peapod_shim()?, &b.id, b.path(), None)?;
    let result = (|| {
        let probe = |unprivileged: bool| -> Result<i32> {
            let mut cmd = if unprivileged {
                let mut c = Command::new("setpriv");
                c.args([
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    "--inh-caps=-all,+dac_override",
                    "--ambient-caps=-all,+dac_override",
                    "--bounding-set=-all,+dac_override",
                    "--",
                ])
                .arg(std::env::current_exe()?);
                c
            } else {
                Command::new(std::env::current_exe()?)
            };
            let status = cmd
                .env(TASK_PROBE_ENV, format!("{}\n{}", shim.address(), b.id))
                .stdin(ProcStdio::null())
                .status()
                .context("run the Task API probe")?;
            status.code().context("the Task API probe was killed")
        };
        let root = probe(false)?;
        ensure!(root == PROBE_SERVED, "the root probe was not served (exit {root})");
        let nobody = probe(true)?;
        ensure!(
            nobody != PROBE_NO_CONNECT,
            "the uid 65534 probe with CAP_DAC_OVERRIDE could not connect: the test does not reach the peer check"
        );
        ensure!(
            nobody == PROBE_REFUSED,
            "the shim served a Task API call from uid 65534 (exit {nobody}, want {PROBE_REFUSED}: refused)"
        );
        Ok(())
    })();
    shim.shutdown()?;
    wait_shim_gone(shim.address())?;
    result?;
    b.assert_clean(None)
}

/// Resolves `/proc/<pid>/root` as root without CAP_SYS_PTRACE (every other capability
/// kept; `setpriv` drops it from the bounding set and clears the inheritable set): the
/// access a root process in a sibling container that shares the pod's pid namespace has
/// (the default capabilities lack CAP_SYS_PTRACE). The kernel allows it for a process of
/// the same uid only while that process is dumpable (`proc_fd_access_allowed`,
/// `ptrace_may_access` with PTRACE_MODE_READ_FSCREDS); the same check guards
/// `/proc/<pid>/fd/*` and `cwd`. `Ok(true)` when it resolved, `Ok(false)` on EACCES.
fn proc_root_reachable_without_ptrace(pid: nix::unistd::Pid) -> Result<bool> {
    let out = Command::new("setpriv")
        .args(["--inh-caps=-all", "--bounding-set=-sys_ptrace", "--", "readlink", "-v"])
        .arg(format!("/proc/{pid}/root"))
        .stdin(ProcStdio::null())
        .output()
        .context("run setpriv (util-linux)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        return Ok(true);
    }
    ensure!(
        stderr.contains("Permission denied"),
        "resolving /proc/{pid}/root failed otherwise: {stderr}"
    );
    Ok(false)
}

// Class: a process that is being set up as container init holds the runtime's host fds
// and, before pivot_root, the host's root; while it is dumpable, any process of the same
// uid (root in a sibling container of a shared pid namespace, which lacks CAP_SYS_PTRACE)
// may open its /proc/<pid>/{fd,root,cwd,mem}. runc's nsexec makes itself
// non-dumpable first thing (the class of CVE-2016-9962); the program's execve makes it
// dumpable again. Observed on init blocked before execve (Created) and, as the control,
// on the started program. No runc twin: Debian's runc 1.1.5 init, blocked on its exec
// FIFO, is dumpable (its /proc/<pid>/root resolved in the same probe); its nsexec stage,
// which is non-dumpable, cannot be observed from outside.
fn container_init_is_not_dumpable_during_setup() -> Result<()> {
    let b = Bundle::new("escape-dump", &["sleep", "30"])?;
    let mut c = b.create(sandbox::Stdio::default())?;
    let pid = c.pid().context("created container has a pid")?;
    let result = (|| {
        ensure!(
            !proc_root_reachable_without_ptrace(pid)?,
            "/proc/{pid}/root of container init during setup resolved without CAP_SYS_PTRACE: it is dumpable"
        );
        c.start()?;
        ensure!(
            proc_root_reachable_without_ptrace(pid)?,
            "control: /proc/{pid}/root of the started program (dumpable again after execve) did not resolve"
        );
        Ok(())
    })();
    b.delete(c, true)?;
    result
}

fn main() {
    sandbox::init::run_if_requested();
    run_connect_probe_if_requested();
    run_task_probe_if_requested();
    // Bundles (the harness makes them in $TMPDIR) go where device nodes can be opened: in
    // the cgroup v2 VM /tmp is a nodev tmpfs, where a rootfs without a /dev tmpfs has no
    // usable /dev/null (runc's init reopens it and fails). Set before any thread exists.
    std::env::set_var("TMPDIR", "/var/tmp");
    let tests: Vec<(&str, TestFn)> = vec![
        (
            "peapod::image_dev_symlink_does_not_write_on_the_host",
            image_dev_symlink_does_not_write_on_the_host,
        ),
        (
            "peapod::image_dev_symlink_without_dev_tmpfs_does_not_write_on_the_host",
            image_dev_symlink_without_dev_tmpfs_does_not_write_on_the_host,
        ),
        (
            "runc::image_dev_symlink_does_not_write_on_the_host",
            runc_image_dev_symlink_does_not_write_on_the_host,
        ),
        (
            "runc::image_dev_symlink_without_dev_tmpfs_does_not_write_on_the_host",
            runc_image_dev_symlink_without_dev_tmpfs_does_not_write_on_the_host,
        ),
        (
            "peapod::manifest_namespace_traversal_is_refused_before_any_path",
            manifest_namespace_traversal_is_refused_before_any_path,
        ),
        (
            "peapod::namespace_flag_traversal_is_refused_by_get_and_delete",
            namespace_flag_traversal_is_refused_by_get_and_delete,
        ),
        ("peapod::shim_socket_is_root_only", shim_socket_is_root_only),
        (
            "peapod::shim_refuses_a_peer_of_another_uid",
            shim_refuses_a_peer_of_another_uid,
        ),
        (
            "peapod::container_init_is_not_dumpable_during_setup",
            container_init_is_not_dumpable_during_setup,
        ),
    ];
    run_privileged_suite(tests, sweep_test_cgroups);
}
