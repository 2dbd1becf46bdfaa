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
/// Set (to a file path) when this binary is re-run as an unprivileged exec probe.
const EXEC_PROBE_ENV: &str = "PEAPOD_ESCAPE_EXEC";

/// The probes: connect to a socket, or reach (stat) and execute a file; exit 0 when that
/// worked, else with the errno of the step that failed.
fn run_probe_if_requested() {
    if let Some(path) = std::env::var_os(CONNECT_PROBE_ENV) {
        let code = match std::os::unix::net::UnixStream::connect(&path) {
            Ok(_) => 0,
            Err(e) => e.raw_os_error().unwrap_or(255),
        };
        std::process::exit(code);
    }
    if let Some(path) = std::env::var_os(EXEC_PROBE_ENV) {
        use std::os::unix::process::CommandExt;
        let code = match fs::metadata(&path) {
            Err(e) => e.raw_os_error().unwrap_or(255),
            // busybox picks its applet by argv[0].
            Ok(_) => match Command::new(&path).arg0("true").stdin(ProcStdio::null()).status() {
                Ok(_) => 0,
                Err(e) => e.raw_os_error().unwrap_or(255),
            },
        };
        std::process::exit(code);
    }
}

/// Runs the probe `env` = `path` as uid/gid 65534 (nobody) in a fresh process; the errno
/// when it was refused, `None` when it got through.
fn probe_as_nobody(env: &str, path: &Path) -> Result<Option<i32>> {
    use std::os::unix::process::CommandExt;
    let status = Command::new(std::env::current_exe()?)
        .env(env, path)
        .uid(65534)
        .gid(65534)
        .stdin(ProcStdio::null())
        .status()
        .context("run the probe as nobody")?;
    let code = status.code().context("the probe was killed")?;
    Ok((code != 0).then_some(code))
}

/// Connects to `path` as uid/gid 65534 (nobody); the errno when that was refused, `None`
/// when it connected.
fn connect_as_nobody(path: &Path) -> Result<Option<i32>> {
    probe_as_nobody(CONNECT_PROBE_ENV, path)
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

// Class: setuid binaries reachable from the host (CVE-2021-41103). Container root can
// write a setuid-root file into its rootfs (the overlay's upper dir and the merged mount
// on the host) and its emptyDirs; if an unprivileged host user can walk to it, they run it
// as root. containerd's fix makes its roots 0711 and every per-container directory 0700;
// kubelet's pods directory is 0750. peapod's pod state and data directories and the
// shim's per-pod and per-container directories must be as closed, and the files holding
// a pod's environment values (`config.json`, `pod.json`, `state.json`) 0600.

/// The shim's state and data roots (`shim::start::Paths`), which the embedded CLI uses.
const SHIM_ROOTS: [&str; 2] = ["/run/peapod/shim", "/var/lib/peapod/shim"];

/// A pod run by the `peapod` CLI in embedded mode (network `none`), its `--root` and
/// `--state` in a fresh directory made traversable like `/var/lib` and `/run` (0755), so
/// only the modes peapod gives its own directories stand between a host user and the pod.
struct HostPod {
    dir: tempfile::TempDir,
    name: String,
}

impl HostPod {
    /// Imports the test images and runs `manifest` (a Pod named `name`).
    fn run(name: &str, manifest: &str) -> Result<Self> {
        // /tmp, as the CLI suite: in the VM /var/tmp is on the initramfs, which overlayfs
        // refuses as an upper dir.
        let dir = tempfile::Builder::new()
            .prefix("peapod-escape-host-")
            .tempdir_in("/tmp")?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        let pod = Self {
            dir,
            name: name.to_string(),
        };
        let archive = peapod_tests::images::archive()?;
        let out = pod.peapod(&["image", "import", &archive.to_string_lossy()])?;
        ensure!(out.code == 0, "image import: {out:?}");
        let file = pod.dir.path().join("pod.yaml");
        fs::write(&file, manifest)?;
        let out = pod.peapod(&["run", "-f", &file.to_string_lossy(), "--network", "none"])?;
        if out.code != 0 {
            let _ = pod.delete();
            anyhow::bail!("peapod run: {out:?}");
        }
        Ok(pod)
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The pod's key and sandbox id: `default_<name>`.
    fn key(&self) -> String {
        format!("default_{}", self.name)
    }

    fn peapod(&self, args: &[&str]) -> Result<Output> {
        let bin = peapod_tests::containerd::target_profile_dir()?.join("peapod");
        ensure!(bin.exists(), "{} is missing: cargo build -p peapod", bin.display());
        let out = Command::new(bin)
            .args(args)
            .env("PEAPOD_ROOT", self.root())
            .env("PEAPOD_STATE", self.state())
            .env("PEAPOD_PAUSE", peapod_tests::images::pause_binary()?)
            .stdin(ProcStdio::null())
            .output()?;
        Ok(Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Waits (at most 30 s) until container `c`'s log has a line `ready`; returns the
    /// log's lines without their CRI prefix (time, stream, tag).
    fn wait_ready(&self, c: &str) -> Result<String> {
        let log = self
            .root()
            .join("pods")
            .join(self.key())
            .join("logs")
            .join(format!("{c}.log"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let text: String = fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .map(|l| format!("{}\n", l.splitn(4, ' ').nth(3).unwrap_or_default()))
                .collect();
            if text.lines().any(|l| l == "ready") {
                return Ok(text);
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "container {c} not ready: log {text:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Every file and directory under the CLI's dirs and the shim's roots whose path
    /// contains `needle` (not following symlinks), as root sees them.
    fn find(&self, needle: &str) -> Result<Vec<PathBuf>> {
        let mut found = Vec::new();
        let mut todo: Vec<PathBuf> = vec![self.dir.path().to_path_buf()];
        todo.extend(SHIM_ROOTS.iter().map(PathBuf::from).filter(|p| p.exists()));
        while let Some(d) = todo.pop() {
            for e in fs::read_dir(&d).with_context(|| format!("read {}", d.display()))? {
                let e = e?;
                let p = e.path();
                if p.to_string_lossy().contains(needle) {
                    found.push(p.clone());
                }
                if e.file_type()?.is_dir() {
                    todo.push(p);
                }
            }
        }
        found.sort();
        Ok(found)
    }

    /// `peapod delete pod`, then checks nothing of the pod is left: its state and data
    /// dirs, the shim's pod and container state, mounts, the pod cgroup, the shim.
    fn delete(&self) -> Result<()> {
        let out = self.peapod(&["delete", "pod", &self.name, "--grace-period", "0"])?;
        ensure!(out.code == 0, "peapod delete: {out:?}");
        let left = self.find(&self.key())?;
        ensure!(left.is_empty(), "leak: {left:?}");
        let mounts = fs::read_to_string("/proc/self/mountinfo")?;
        ensure!(
            !mounts.contains(&*self.dir.path().to_string_lossy()) && !mounts.contains(&self.key()),
            "leak: a mount of pod {} is left",
            self.name
        );
        let left: Vec<String> = fs::read_dir("/proc")?
            .flatten()
            .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains("containerd-shim-peapod-v2") && c.contains(&self.key()))
            .collect();
        ensure!(left.is_empty(), "leak: shim still running: {left:?}");
        Ok(())
    }

    /// `check`, then [`HostPod::delete`] whatever `check` returned (its error first).
    fn check_then_delete(self, check: impl FnOnce(&Self) -> Result<()>) -> Result<()> {
        let result = check(&self);
        let deleted = self.delete();
        result?;
        deleted
    }
}

fn setuid_files_in_a_container_are_unreachable_by_host_users() -> Result<()> {
    let name = format!("escape-suid-{}", std::process::id());
    let marker = format!("peapod-suid-{}", std::process::id());
    let script = format!(
        "for d in / /scratch/ /mem/; do cp /bin/busybox ${{d}}{marker} && chmod 4755 ${{d}}{marker} || exit 1; done; \
         echo ready; trap 'exit 0' TERM; sleep 3600 & wait"
    );
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  volumes:\n  - name: scratch\n    emptyDir: {{}}\n\
         \x20 - name: mem\n    emptyDir: {{medium: Memory}}\n  containers:\n  - name: c\n    image: busybox\n\
         \x20   command: [\"sh\", \"-c\", {script:?}]\n    env:\n    - {{name: SECRET, value: hunter2}}\n\
         \x20   volumeMounts:\n    - {{name: scratch, mountPath: /scratch}}\n    - {{name: mem, mountPath: /mem}}\n"
    );
    HostPod::run(&name, &manifest)?.check_then_delete(|pod| {
        pod.wait_ready("c")?;
        // Root sees the copies: the overlay's upper dir and merged rootfs, the disk
        // emptyDir, the Memory emptyDir.
        let copies: Vec<PathBuf> = pod
            .find(&marker)?
            .into_iter()
            .filter(|p| fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o4000 != 0))
            .collect();
        ensure!(copies.len() >= 4, "the setuid copies on the host: {copies:?}");
        let mut reached = Vec::new();
        for p in &copies {
            let got = probe_as_nobody(EXEC_PROBE_ENV, p)?;
            if got != Some(libc::EACCES) {
                let how = got.map_or("executed it".to_string(), |e| format!("errno {e}, want EACCES"));
                reached.push(format!("{}: {how}", p.display()));
            }
        }
        ensure!(
            reached.is_empty(),
            "uid 65534 reached the container's setuid-root files: {reached:#?}"
        );
        // The files that hold the pod's spec (its environment values) are root-only.
        let mut specs = Vec::new();
        for p in pod
            .find(&pod.key())?
            .into_iter()
            .chain(pod.find(&format!("{}/", pod.key()))?)
        {
            for f in ["config.json", "pod.json", "state.json"] {
                let f = if p.ends_with(f) { p.clone() } else { p.join(f) };
                if f.is_file() && !specs.contains(&f) {
                    specs.push(f);
                }
            }
        }
        let names = |f: &str| specs.iter().filter(|p| p.ends_with(f)).count();
        ensure!(
            names("config.json") >= 2 && names("pod.json") >= 2 && names("state.json") >= 2,
            "the pod's spec and state files: {specs:?}"
        );
        for f in &specs {
            let mode = fs::metadata(f)?.permissions().mode() & 0o7777;
            ensure!(mode == 0o600, "{} has mode {mode:o}, want 600", f.display());
        }
        Ok(())
    })
}

/// The size of the tmpfs at `dir` in the container's `stat -f -c '%n %b %S'` lines:
/// blocks × block size, bytes.
fn tmpfs_size(log: &str, dir: &str) -> Result<u64> {
    let line = log
        .lines()
        .find(|l| l.split_whitespace().next() == Some(dir))
        .with_context(|| format!("no statfs line for {dir} in {log:?}"))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    ensure!(f.len() == 2, "statfs line {line:?}");
    Ok(f[0] * f[1])
}

/// The host's memory (`MemTotal`), bytes: kubelet's node allocatable without reservations.
fn mem_total() -> Result<u64> {
    let text = fs::read_to_string("/proc/meminfo")?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .context("MemTotal in /proc/meminfo")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb * 1024)
}

// Class: `sizeLimit: "0"` must not become an unlimited tmpfs (tmpfs `size=0` means no
// limit). kubelet (pkg/volume/emptydir, `calculateEmptyDirMemorySize`) sizes a Memory
// emptyDir by the smallest positive of node allocatable memory, the pod's memory limit and
// the volume's sizeLimit; a sizeLimit of 0 counts as unset.
fn memory_empty_dir_size_limit_zero_is_not_unlimited() -> Result<()> {
    let name = format!("escape-tmpfs-{}", std::process::id());
    let script = "stat -f -c '%n %b %S' /zero /big /none; echo ready; trap 'exit 0' TERM; sleep 3600 & wait";
    let limited = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  volumes:\n\
         \x20 - {{name: zero, emptyDir: {{medium: Memory, sizeLimit: \"0\"}}}}\n\
         \x20 - {{name: big, emptyDir: {{medium: Memory, sizeLimit: 1Gi}}}}\n\
         \x20 - {{name: none, emptyDir: {{medium: Memory}}}}\n  containers:\n  - name: c\n    image: busybox\n\
         \x20   command: [\"sh\", \"-c\", {script:?}]\n    resources: {{limits: {{memory: 64Mi}}}}\n    volumeMounts:\n\
         \x20   - {{name: zero, mountPath: /zero}}\n    - {{name: big, mountPath: /big}}\n    - {{name: none, mountPath: /none}}\n"
    );
    HostPod::run(&name, &limited)?.check_then_delete(|pod| {
        let log = pod.wait_ready("c")?;
        for dir in ["/zero", "/big", "/none"] {
            let size = tmpfs_size(&log, dir)?;
            ensure!(
                size == 64 << 20,
                "Memory emptyDir {dir} of a pod limited to 64Mi: tmpfs of {size} bytes (0: unlimited), want the pod limit"
            );
        }
        Ok(())
    })?;
    // Without a pod memory limit: node memory.
    let name = format!("escape-tmpfs-nolimit-{}", std::process::id());
    let unlimited = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  volumes:\n\
         \x20 - {{name: zero, emptyDir: {{medium: Memory, sizeLimit: \"0\"}}}}\n\
         \x20 - {{name: big, emptyDir: {{medium: Memory, sizeLimit: 1Pi}}}}\n\
         \x20 - {{name: none, emptyDir: {{medium: Memory}}}}\n  containers:\n  - name: c\n    image: busybox\n\
         \x20   command: [\"sh\", \"-c\", {script:?}]\n    volumeMounts:\n\
         \x20   - {{name: zero, mountPath: /zero}}\n    - {{name: big, mountPath: /big}}\n    - {{name: none, mountPath: /none}}\n"
    );
    let total = mem_total()?;
    HostPod::run(&name, &unlimited)?.check_then_delete(|pod| {
        let log = pod.wait_ready("c")?;
        for dir in ["/zero", "/big", "/none"] {
            let size = tmpfs_size(&log, dir)?;
            ensure!(
                size > 0 && size.abs_diff(total) < 4096,
                "Memory emptyDir {dir} of a pod without a memory limit: tmpfs of {size} bytes (0: unlimited), want the node's memory {total}"
            );
        }
        Ok(())
    })
}

fn main() {
    sandbox::init::run_if_requested();
    run_probe_if_requested();
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
            "peapod::setuid_files_in_a_container_are_unreachable_by_host_users",
            setuid_files_in_a_container_are_unreachable_by_host_users,
        ),
        (
            "peapod::memory_empty_dir_size_limit_zero_is_not_unlimited",
            memory_empty_dir_size_limit_zero_is_not_unlimited,
        ),
    ];
    run_privileged_suite(tests, sweep_test_cgroups);
}
