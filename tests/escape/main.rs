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
//! Classes with a module of their own: mandatory access control in `lsm.rs`; the
//! configMap, secret, downwardAPI and projected volumes peapod fills on the host (item
//! paths, keys and modes from the manifest, symlinks planted on the way, root in a
//! container against the read-only mounts) in `volumes.rs`.
//!
//! `harness = false`: this binary is also the container init helper (see
//! `sandbox::init`), so `main` dispatches to it before running tests.

use std::fs;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as ProcStdio};

use anyhow::{ensure, Context, Result};
use oci_spec::runtime::{LinuxNamespaceType, Mount, MountBuilder};
use peapod::embedded::Shim;
use peapod_tests::containerd::peapod_shim;
use peapod_tests::seccomp;
use peapod_tests::{
    assert_no_children, run_privileged_suite, sweep_test_cgroups, wait_shim_gone, Bundle, Output, TestFn,
};

mod lsm;
mod volumes;

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

// Class: device access through the device cgroup (runc's devices cgroup on v1, its eBPF
// `BPF_PROG_TYPE_CGROUP_DEVICE` program on v2, from `linux.resources.devices` plus runc's
// `AllowedDevices`). A device node is only a name: what stops a container from reading the
// host's disk through one it made (CAP_MKNOD is a default capability) or one its image
// ships is the device cgroup, which must deny every block device.

/// Set once a ram disk was loaded because the host had no block device (the VM).
static BLOCK_DEVICE: std::sync::OnceLock<std::result::Result<(u32, u32), String>> = std::sync::OnceLock::new();

/// `major:minor` of a real block device the host (this test, as root) can open and read:
/// the root filesystem's when it is one (`/proc/self/mountinfo`, e.g. `/dev/vda` 254:0),
/// else the first in `/sys/block` (a sandbox around this host may deny the root disk
/// itself: then e.g. `loop0`). A device the host cannot open would prove nothing. The
/// cgroup v2 VM has none (its root is 9p): there `brd` is loaded for one 64 KiB ram disk
/// (block 1:0), the VM being discarded after the run.
fn host_block_device() -> Result<(u32, u32)> {
    let found = BLOCK_DEVICE.get_or_init(|| find_block_device().map_err(|e| format!("{e:#}")));
    found.clone().map_err(anyhow::Error::msg)
}

fn find_block_device() -> Result<(u32, u32)> {
    let parse = |s: &str| -> Option<(u32, u32)> {
        let (a, b) = s.trim().split_once(':')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    // The device's name from /sys/dev/block/M:m/uevent, and whether /dev/<name> opens.
    let readable = |(maj, min): (u32, u32)| -> bool {
        let uevent = fs::read_to_string(format!("/sys/dev/block/{maj}:{min}/uevent")).unwrap_or_default();
        let name = uevent.lines().find_map(|l| l.strip_prefix("DEVNAME="));
        name.is_some_and(|n| fs::File::open(Path::new("/dev").join(n)).is_ok())
    };
    let candidates = || -> Result<Vec<(u32, u32)>> {
        let mut all = Vec::new();
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
        for line in mountinfo.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.get(4) == Some(&"/") {
                all.extend(f.get(2).and_then(|d| parse(d)).filter(|(maj, _)| *maj != 0));
            }
        }
        let mut names: Vec<PathBuf> = fs::read_dir("/sys/block")?.flatten().map(|e| e.path()).collect();
        names.sort();
        for n in names {
            all.extend(parse(&fs::read_to_string(n.join("dev"))?));
        }
        Ok(all)
    };
    if let Some(d) = candidates()?.into_iter().find(|d| readable(*d)) {
        return Ok(d);
    }
    let st = Command::new("modprobe")
        .args(["brd", "rd_nr=1", "rd_size=64"])
        .status()
        .context("modprobe brd (no block device this host can open)")?;
    ensure!(
        st.success(),
        "no block device this host can open, and modprobe brd failed: {st}"
    );
    candidates()?
        .into_iter()
        .find(|d| readable(*d))
        .context("no block device this host can open, even after modprobe brd")
}

/// What the device scripts print when the read was refused, and at their end.
const READ_OK: &str = "read-ok";
const SCRIPT_DONE: &str = "script-done";

/// A script that reads 512 bytes of `node` and prints `read-ok`, or the error.
fn read_node_script(node: &str) -> String {
    format!(
        "if head -c 512 {node} >/dev/escape-out 2>/dev/escape-err; then echo {READ_OK} \
         $(wc -c </dev/escape-out); else cat /dev/escape-err; fi; echo {SCRIPT_DONE}"
    )
}

/// The container made the node (default caps: CAP_MKNOD) and tried to read the host's
/// disk through it.
fn mknod_disk_bundle(name: &str) -> Result<Bundle> {
    let (maj, min) = host_block_device()?;
    let script = format!(
        "mknod /dev/escape-disk b {maj} {min} && echo mknod-ok; {}",
        read_node_script("/dev/escape-disk")
    );
    let b = Bundle::new(name, &["sh", "-c", &script])?;
    b.write()?;
    Ok(b)
}

/// The image ships a node for the host's disk (made in the rootfs before start); the
/// container holds no capability at all.
fn image_node_bundle(name: &str) -> Result<Bundle> {
    let (maj, min) = host_block_device()?;
    let mut b = Bundle::new(name, &["sh", "-c", &read_node_script("/escape-disk")])?;
    let node = b.path().join("rootfs/escape-disk");
    nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(maj.into(), min.into()),
    )
    .with_context(|| format!("mknod {} (block {maj}:{min}) on the host", node.display()))?;
    let p = b.spec.process_mut().as_mut().context("spec has a process")?;
    p.set_capabilities(Some(sandbox::spec::capabilities(Default::default())));
    b.write()?;
    Ok(b)
}

/// The read must have been refused with EPERM (the device cgroup's verdict; ENXIO or
/// EACCES would be another layer) and the script must have run to its end.
fn assert_read_refused(out: &Output) -> Result<()> {
    ensure!(
        out.stdout.contains(SCRIPT_DONE),
        "the container did not run its script: {out:?}"
    );
    ensure!(
        !out.stdout.contains(READ_OK),
        "the container read the host's disk: {out:?}"
    );
    ensure!(
        out.stdout.contains("escape-disk: Operation not permitted"),
        "the read of the host's disk failed, but not with EPERM: {out:?}"
    );
    Ok(())
}

fn mknod_of_the_host_disk_cannot_be_read() -> Result<()> {
    let b = mknod_disk_bundle("escape-mknod")?;
    assert_read_refused(&b.run()?)
}

fn runc_mknod_of_the_host_disk_cannot_be_read() -> Result<()> {
    let b = mknod_disk_bundle("escape-mknod-runc")?;
    assert_read_refused(&runc_run(&b)?)
}

fn image_device_node_cannot_be_opened_without_caps() -> Result<()> {
    let b = image_node_bundle("escape-imgdev")?;
    assert_read_refused(&b.run()?)
}

fn runc_image_device_node_cannot_be_opened_without_caps() -> Result<()> {
    let b = image_node_bundle("escape-imgdev-runc")?;
    assert_read_refused(&runc_run(&b)?)
}

/// The container's device policy as the host sees it: on v2 the ids of the device
/// programs attached to its cgroup, on v1 the lines of its `devices.list`.
fn device_state(c: &sandbox::Container) -> Result<(Vec<u32>, Vec<String>)> {
    let cg = c.cgroup()?;
    if cg.is_v2() {
        return Ok((cg.device_program_ids()?, Vec::new()));
    }
    let list = fs::read_to_string(cg.files().file("devices", "devices.list"))?;
    Ok((Vec::new(), list.lines().map(String::from).collect()))
}

// An update with device rules replaces the policy (on v2: one program attached, a new
// one, the old detached: none accumulate); an update without device rules keeps it.
fn device_update_replaces_the_policy() -> Result<()> {
    let (maj, min) = host_block_device()?;
    let b = Bundle::new("escape-devupd", &["sleep", "30"])?;
    let mut c = b.start(sandbox::Stdio::default())?;
    let result = (|| -> Result<()> {
        let v2 = c.cgroup()?.is_v2();
        let (progs, list) = device_state(&c)?;
        if v2 {
            ensure!(progs.len() == 1, "device programs after create: {progs:?}");
        } else {
            ensure!(
                list.contains(&"c 1:3 rwm".to_string()),
                "devices.list after create: {list:?}"
            );
            ensure!(
                !list.iter().any(|l| l.starts_with("a ")),
                "devices.list allows all: {list:?}"
            );
        }
        let allow_disk = oci_spec::runtime::LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(oci_spec::runtime::LinuxDeviceType::B)
            .major(i64::from(maj))
            .minor(i64::from(min))
            .access("r")
            .build()?;
        let res = oci_spec::runtime::LinuxResourcesBuilder::default()
            .devices(vec![sandbox::devices::deny_all_rule(), allow_disk])
            .build()?;
        c.update(&res)?;
        let (progs2, list2) = device_state(&c)?;
        if v2 {
            ensure!(
                progs2.len() == 1 && progs2 != progs,
                "device programs after update: {progs2:?} (before {progs:?})"
            );
        } else {
            ensure!(
                list2.contains(&format!("b {maj}:{min} r")),
                "devices.list after update: {list2:?}"
            );
        }
        let res = oci_spec::runtime::LinuxResourcesBuilder::default()
            .pids(oci_spec::runtime::LinuxPidsBuilder::default().limit(50i64).build()?)
            .build()?;
        c.update(&res)?;
        let (progs3, list3) = device_state(&c)?;
        ensure!(
            progs3 == progs2 && list3 == list2,
            "an update without device rules changed them: {progs3:?} {list3:?}"
        );
        Ok(())
    })();
    b.delete(c, true)?;
    result
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
        Self::new_in(&std::env::temp_dir())
    }

    fn new_in(parent: &Path) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("peapod-escape-cli-")
            .tempdir_in(parent)?;
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
             spec:\n  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: IfNotPresent\n"
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

// Class: image layers are untrusted archives unpacked as root into peapod's image store.
// No entry may reach a path outside the layer directory: not through a whiteout naming `.`
// or `..` (containerd's `validateWhiteout`), a symlink that replaced a directory of the same
// layer (the directory mtime pass), a symlinked parent directory, or a hard link (containerd's
// `fs.RootPath`, `hardlinkRootPath`); and manifests and layers are read with size limits
// (containerd's `MaxManifestSize`). These are peapod's own image store, not runc's: there
// is no runc twin.

/// A temp dir with the CLI's root and state (`a/`, as [`CliDirs`]) and a host tree
/// `host/` a crafted layer aims at: `host/file` (a sentinel file) and `host/dir/sub/keep`.
struct ImageDirs {
    cli: CliDirs,
}

impl ImageDirs {
    fn new() -> Result<Self> {
        // In /tmp, a tmpfs in the VM too: the image store makes overlayfs whiteouts (char
        // devices 0:0), which overlayfs (the VM's root, where /var/tmp is) refuses to create.
        let cli = CliDirs::new_in(Path::new("/tmp"))?;
        let host = cli.dir.path().join("host");
        fs::create_dir_all(host.join("dir/sub"))?;
        fs::write(host.join("file"), SENTINEL)?;
        fs::write(host.join("dir/sub/keep"), SENTINEL)?;
        Ok(Self { cli })
    }

    fn host(&self, rel: &str) -> String {
        self.cli
            .dir
            .path()
            .join("host")
            .join(rel)
            .to_string_lossy()
            .into_owned()
    }

    /// Every path under `host/` with its type, mode, owner, mtime (ns), content and
    /// xattrs (`getfattr -d -m -`, not following symlinks).
    fn host_state(&self) -> Result<Vec<String>> {
        use std::os::unix::fs::MetadataExt;
        let mut all = Vec::new();
        let mut todo = vec![self.cli.dir.path().join("host")];
        while let Some(p) = todo.pop() {
            let m = fs::symlink_metadata(&p)?;
            let xattrs = Command::new("getfattr")
                .args(["-d", "-m", "-", "-h", "--absolute-names"])
                .arg(&p)
                .output()
                .context("run getfattr (Debian package attr; make deps)")?;
            let content = if m.is_file() {
                fs::read_to_string(&p)?
            } else {
                String::new()
            };
            all.push(format!(
                "{} {:o} {}:{} {}.{} {content:?} {:?}",
                p.display(),
                m.mode(),
                m.uid(),
                m.gid(),
                m.mtime(),
                m.mtime_nsec(),
                String::from_utf8_lossy(&xattrs.stdout)
            ));
            if m.is_dir() {
                for e in fs::read_dir(&p)? {
                    todo.push(e?.path());
                }
            }
        }
        all.sort();
        Ok(all)
    }

    /// `peapod image import` of an archive with one image of `layers` (`extra` arguments
    /// before the file); the host tree must be unchanged afterwards.
    fn import(&self, layers: &[Vec<u8>], padding: usize, extra: &[&str]) -> Result<Output> {
        let archive = self.cli.dir.path().join("a/crafted.tar");
        fs::write(
            &archive,
            peapod_tests::images::single_image_archive("example.com/escape/crafted:v1", layers, padding)?,
        )?;
        let before = self.host_state()?;
        let mut args = vec!["image", "import"];
        args.extend_from_slice(extra);
        let path = archive.to_string_lossy().into_owned();
        args.push(&path);
        let out = self.cli.peapod(&args)?;
        let after = self.host_state()?;
        ensure!(
            before == after,
            "importing a crafted layer changed the host tree:\nbefore {before:#?}\nafter {after:#?}\n{out:?}"
        );
        fs::remove_file(&archive)?;
        Ok(out)
    }

    /// The store holds no image, blob, layer or staging directory.
    fn assert_store_empty(&self) -> Result<()> {
        let store = self.cli.dir.path().join("a/root/images");
        for sub in ["blobs/sha256", "layers", "tmp"] {
            let dir = store.join(sub);
            if dir.exists() {
                let left: Vec<_> = fs::read_dir(&dir)?.flatten().map(|e| e.path()).collect();
                ensure!(left.is_empty(), "left in the image store's {sub}: {left:?}");
            }
        }
        let index = fs::read_to_string(store.join("index.json")).unwrap_or_default();
        ensure!(!index.contains("crafted"), "a refused image is in the index: {index}");
        Ok(())
    }

    /// The import failed with exit 1, its error naming every one of `words`, and left
    /// nothing in the store.
    fn assert_refused(&self, out: &Output, words: &[&str]) -> Result<()> {
        ensure!(
            out.code == 1,
            "import of a crafted layer: exit {}, want 1: {out:?}",
            out.code
        );
        for w in words {
            ensure!(
                out.stderr.contains(w),
                "the error does not name {w:?}: {:?}",
                out.stderr
            );
        }
        self.assert_store_empty()
    }
}

fn layer(entries: &[peapod_tests::images::RawEntry]) -> Result<Vec<u8>> {
    peapod_tests::images::raw_layer(entries)
}

/// A directory (with a subdirectory) and a file-sized directory, each replaced in the same
/// layer by a whiteout and then a symlink to the host: the directory mtime pass at the end
/// of the unpack must not follow them (it opened `d` and `d/sub` by path, so it set the mtime
/// of the host file and directory the links name).
fn layer_whiteout_then_symlink_does_not_touch_host_files() -> Result<()> {
    use peapod_tests::images::RawEntry as E;
    let d = ImageDirs::new()?;
    let out = d.import(
        &[layer(&[
            E::dir("d", 0o755),
            E::dir("d/sub", 0o755),
            E::file(".wh.d", b""),
            E::symlink("d", &d.host("dir")),
            E::dir("f", 0o755),
            E::file(".wh.f", b""),
            E::symlink("f", &d.host("file")),
            E::file("ok", b"ok\n"),
        ])?],
        0,
        &[],
    )?;
    // Neutralized, not refused: the links stay links inside the layer.
    ensure!(out.code == 0, "import failed: {out:?}");
    Ok(())
}

/// Whiteouts name an entry of their own directory: `.wh..` (`.`), `.wh...` (`..`, which
/// deleted the layer directory's parent) and `.wh.` (empty) are refused, with the entry
/// in the error, and nothing is left in the store.
fn layer_whiteouts_naming_dot_or_dotdot_are_refused() -> Result<()> {
    use peapod_tests::images::RawEntry as E;
    let d = ImageDirs::new()?;
    for (entries, name) in [
        (vec![E::file("keep", b"k"), E::file(".wh...", b"")], ".wh..."),
        (
            vec![E::dir("a", 0o755), E::file("a/x", b"x"), E::file("a/.wh..", b"")],
            "a/.wh..",
        ),
        (vec![E::dir("a", 0o755), E::file("a/.wh.", b"")], "a/.wh."),
    ] {
        let out = d.import(&[layer(&entries)?], 0, &[])?;
        d.assert_refused(&out, &[name, "whiteout"])
            .with_context(|| format!("layer with {name}"))?;
    }
    Ok(())
}

/// Links and symlinked parents: `a -> host/dir` then `a/planted`; hard links to a host
/// file (absolute, and climbing with `..`); a hard link to a symlink that leaves the layer;
/// a directory entry over a symlink to the host, with a mode and an xattr; whiteouts, an
/// opaque marker and a device node under a symlinked directory. Each is refused or kept
/// inside the layer; the host tree is unchanged.
fn layer_links_and_symlinked_parents_stay_inside_the_layer() -> Result<()> {
    use peapod_tests::images::RawEntry as E;
    let d = ImageDirs::new()?;
    let climb = format!("../../../../../../../../..{}", d.host("file"));
    let mut dir_over_link = E::dir("d", 0o777);
    dir_over_link.xattrs = vec![("user.peapod".into(), b"escape".to_vec())];
    let mut device = E::file("d/null", b"");
    device.kind = tar::EntryType::Char;
    let cases = [
        vec![E::symlink("a", &d.host("dir")), E::file("a/planted", b"x")],
        vec![E::hardlink("h", &d.host("file"))],
        vec![E::hardlink("h", &climb)],
        vec![E::symlink("l", &d.host("file")), E::hardlink("h", "l")],
        vec![E::symlink("d", &d.host("dir")), dir_over_link],
        vec![E::symlink("d", &d.host("dir")), E::file("d/.wh.sub", b"")],
        vec![E::symlink("d", &d.host("dir")), E::file("d/.wh..wh..opq", b"")],
        vec![E::symlink("d", &d.host("dir")), device],
    ];
    for entries in cases {
        let names: Vec<_> = entries.iter().map(|e| e.name.clone()).collect();
        let out = d
            .import(&[layer(&entries)?], 0, &[])
            .with_context(|| format!("layer {names:?}"))?;
        if out.code != 0 {
            d.assert_refused(&out, &[names.last().expect("entries")])
                .with_context(|| format!("layer {names:?}"))?;
        }
    }
    Ok(())
}

/// A manifest over 4 MiB (containerd's `MaxManifestSize`) and a layer over the configured
/// `--max-layer-size` are refused, naming the document or layer and the limit, and leave
/// nothing in the store.
fn oversized_manifests_and_layers_are_refused() -> Result<()> {
    use peapod_tests::images::RawEntry as E;
    let d = ImageDirs::new()?;
    let small = layer(&[E::file("ok", b"ok\n")])?;
    let out = d.import(std::slice::from_ref(&small), 5 << 20, &[])?;
    d.assert_refused(&out, &["manifest", "4194304 bytes"])?;
    let big = layer(&[E::file("big", &vec![0u8; 3 << 20])])?;
    let digest = format!("sha256:{:x}", <sha2::Sha256 as sha2::Digest>::digest(&big));
    let out = d.import(&[big], 0, &["--max-layer-size", "1Mi"])?;
    d.assert_refused(&out, &[&digest, "1048576 bytes", "--max-layer-size"])?;
    // The same layer under the limit imports.
    let out = d.import(&[small], 0, &["--max-layer-size", "1Mi"])?;
    ensure!(out.code == 0, "a layer under the limit was refused: {out:?}");
    Ok(())
}

/// A bind mount of `src` on `dest` with `options`.
fn bind(dest: &str, src: &Path, options: &[&str]) -> Result<Mount> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ("bind")
        .source(src)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()?)
}

/// An empty host directory under /tmp that no runtime may write into (the target the
/// attacker's symlinks name), checked empty and mount-free at the end.
struct Untouchable {
    dir: tempfile::TempDir,
}

impl Untouchable {
    fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("peapod-escape-target-")
            .tempdir_in("/tmp")?;
        Ok(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Still empty, and nothing is mounted at or under it in the host's mount table.
    fn assert_untouched(&self) -> Result<()> {
        let names: Vec<String> = fs::read_dir(self.path())?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()?;
        ensure!(
            names.is_empty(),
            "the runtime created {names:?} in the host directory {} (a mount destination was \
             resolved, then followed again by path after a symlink replaced a directory)",
            self.path().display()
        );
        let mounts = fs::read_to_string("/proc/self/mountinfo")?;
        let target = self.path().to_string_lossy();
        if let Some(line) = mounts.lines().find(|l| l.contains(target.as_ref())) {
            anyhow::bail!("a mount appeared on the host at the target: {line}");
        }
        Ok(())
    }

    /// The weaker property Debian's runc 1.1.5 keeps: it may make empty directories here
    /// (its `MkdirAll` after securejoin races: CVE-2024-45310, fixed in runc 1.1.14) but
    /// mounts onto the fd it checked (the CVE-2021-30465 fix), so nothing is in them and
    /// nothing is mounted here.
    fn assert_only_empty_dirs(&self) -> Result<()> {
        for e in fs::read_dir(self.path())? {
            let p = e?.path();
            ensure!(
                fs::symlink_metadata(&p)?.is_dir() && fs::read_dir(&p)?.next().is_none(),
                "the runtime wrote {} in the host directory (more than an empty directory)",
                p.display()
            );
        }
        let mounts = fs::read_to_string("/proc/self/mountinfo")?;
        let target = self.path().to_string_lossy();
        if let Some(line) = mounts.lines().find(|l| l.contains(target.as_ref())) {
            anyhow::bail!("a mount appeared on the host at the target: {line}");
        }
        Ok(())
    }
}

/// How many mount destinations each racing container has inside the shared volume, and
/// how many times it is started: every destination is one chance for the race.
const RACE_MOUNTS: usize = 16;
const RACE_RUNS: usize = 25;

/// The shared volume of the race: a host directory (an emptyDir's backing dir) holding a
/// directory `x` and a symlink `x.swap` to the [`Untouchable`] host directory; a thread
/// exchanges the two names (`renameat2(RENAME_EXCHANGE)`) in a loop, as a sidecar sharing
/// the volume can, while containers with mount destinations under `/shared/x/` start.
struct SwappedVolume {
    dir: tempfile::TempDir,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    swapper: Option<std::thread::JoinHandle<u64>>,
}

impl SwappedVolume {
    fn new(target: &Path) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("peapod-escape-vol-").tempdir()?;
        fs::create_dir(dir.path().join("x"))?;
        symlink(target, dir.path().join("x.swap"))?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (a, b, flag) = (dir.path().join("x"), dir.path().join("x.swap"), stop.clone());
        let swapper = std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if nix::fcntl::renameat2(
                    nix::fcntl::AT_FDCWD,
                    &a,
                    nix::fcntl::AT_FDCWD,
                    &b,
                    nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                )
                .is_ok()
                {
                    swaps += 1;
                }
            }
            swaps
        });
        Ok(Self {
            dir,
            stop,
            swapper: Some(swapper),
        })
    }

    /// Stops the swapper; how many exchanges it made.
    fn stop(&mut self) -> Result<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let swaps = self
            .swapper
            .take()
            .context("swapper already stopped")?
            .join()
            .map_err(|_| anyhow::anyhow!("swapper panicked"))?;
        Ok(swaps)
    }
}

impl Drop for SwappedVolume {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A bundle sharing `vol` at `/shared` (rbind, as kubelet binds an emptyDir) with
/// [`RACE_MOUNTS`] bind mounts of `src` on `/shared/x/m<i>`.
fn race_bundle(name: &str, vol: &Path, src: &Path) -> Result<Bundle> {
    let mut b = Bundle::new(name, &["true"])?;
    let mounts = b.spec.mounts_mut().as_mut().context("spec has mounts")?;
    mounts.push(bind("/shared", vol, &["rbind", "rw"])?);
    for i in 0..RACE_MOUNTS {
        mounts.push(bind(&format!("/shared/x/m{i}"), src, &["rbind", "ro"])?);
    }
    b.write()?;
    Ok(b)
}

/// Starts the race bundle [`RACE_RUNS`] times under `run` while the volume's `x` is
/// swapped for a symlink to an [`Untouchable`] host directory; the directory must stay
/// empty, and every run must succeed (`strict`, peapod); runc is held to what it keeps
/// ([`Untouchable::assert_only_empty_dirs`]), its failed runs reported as they are.
fn mount_race(name: &str, run: fn(&Bundle) -> Result<Output>, strict: bool) -> Result<()> {
    let target = Untouchable::new()?;
    let src = tempfile::Builder::new().prefix("peapod-escape-src-").tempdir()?;
    let mut vol = SwappedVolume::new(target.path())?;
    let mut failures = Vec::new();
    for _ in 0..RACE_RUNS {
        let b = race_bundle(name, vol.dir.path(), src.path())?;
        match run(&b) {
            Ok(out) if out.code == 0 => {}
            Ok(out) => failures.push(format!("{out:?}")),
            Err(e) => failures.push(format!("{e:#}")),
        }
        if strict {
            target.assert_untouched()?;
        } else {
            target.assert_only_empty_dirs()?;
        }
    }
    let swaps = vol.stop()?;
    ensure!(swaps > 1000, "the swapper made only {swaps} exchanges: no race was run");
    ensure!(
        !strict || failures.is_empty(),
        "{} of {RACE_RUNS} runs failed: {failures:?}",
        failures.len()
    );
    Ok(())
}

// Class: a mount destination resolved inside the rootfs, then used again by path
// (CVE-2021-30465; runc's fix: mount onto the opened fd). A sidecar sharing an emptyDir
// swaps a directory on the destination's path for a symlink to a host directory between
// the runtime's check and its mkdir/mount.

fn mount_destination_swapped_for_a_symlink_stays_in_the_rootfs() -> Result<()> {
    mount_race("escape-race", |b| b.run(), true)
}

fn runc_mount_destination_swapped_for_a_symlink_stays_in_the_rootfs() -> Result<()> {
    mount_race("escape-race-runc", runc_run, false)
}

/// A bundle whose image has `/mnt/x` as an absolute symlink to `target` (a host
/// directory), with a bind mount on `/mnt/x/y`: the destination resolves to
/// `<rootfs>/<target>/y`, never to the host directory. The container checks that its
/// bind is where the link leads inside.
fn static_symlink_bundle(name: &str, target: &Path, src: &Path) -> Result<Bundle> {
    let mut b = Bundle::new(name, &["sh", "-c", "cat /mnt/x/y/in"])?;
    fs::create_dir_all(b.path().join("rootfs/mnt"))?;
    symlink(target, b.path().join("rootfs/mnt/x"))?;
    let mounts = b.spec.mounts_mut().as_mut().context("spec has mounts")?;
    mounts.push(bind("/mnt/x/y", src, &["rbind", "ro"])?);
    b.write()?;
    Ok(b)
}

fn static_symlink(name: &str, run: fn(&Bundle) -> Result<Output>) -> Result<()> {
    let target = Untouchable::new()?;
    let src = tempfile::Builder::new().prefix("peapod-escape-src-").tempdir()?;
    fs::write(src.path().join("in"), "bound\n")?;
    let b = static_symlink_bundle(name, target.path(), src.path())?;
    let out = run(&b);
    target.assert_untouched()?;
    let out = out?;
    ensure!(
        out.code == 0 && out.stdout == "bound\n",
        "the container did not see its bind: {out:?}"
    );
    ensure!(
        b.path()
            .join("rootfs")
            .join(target.path().strip_prefix("/")?)
            .join("y")
            .is_dir(),
        "the mount point was not made inside the rootfs, where the link leads"
    );
    Ok(())
}

fn mount_destination_through_an_image_symlink_stays_in_the_rootfs() -> Result<()> {
    static_symlink("escape-link", |b| b.run())
}

fn runc_mount_destination_through_an_image_symlink_stays_in_the_rootfs() -> Result<()> {
    static_symlink("escape-link-runc", runc_run)
}

// Class: mounts over /proc subpaths (runc's checkProcMount, CVE-2019-16884 and
// CVE-2019-19921: a volume over /proc/self/attr or /proc/sys defeats the LSM and the
// read-only /proc/sys). Only a procfs goes on /proc, and under it only the files lxcfs
// emulates.

/// One bundle of the /proc class: the destination the refusal must name (symlinks
/// resolved), the extra mounts, and image symlinks (name in the rootfs, target).
type ProcCase = (&'static str, Vec<Mount>, Vec<(&'static str, &'static str)>);

/// The bundles of the /proc class; `src` is a host file, its directory a bind source.
fn proc_mount_cases(src: &Path) -> Result<Vec<ProcCase>> {
    let tmpfs = |dest: &str| -> Result<Mount> {
        Ok(MountBuilder::default()
            .destination(dest)
            .typ("tmpfs")
            .source("tmpfs")
            .options(vec!["nosuid".to_string()])
            .build()?)
    };
    let dir = src.parent().context("src has a parent")?;
    Ok(vec![
        // A writable tmpfs over the read-only /proc/sys.
        ("/proc/sys/kernel", vec![tmpfs("/proc/sys/kernel")?], vec![]),
        // A host directory over the process's LSM attributes.
        (
            "/proc/self/attr",
            vec![bind("/proc/self/attr", dir, &["rbind"])?],
            vec![],
        ),
        // The same through an image symlink: /sysctl -> /proc/sys.
        (
            "/proc/sys/vm",
            vec![tmpfs("/sysctl/vm")?],
            vec![("sysctl", "/proc/sys")],
        ),
        // Something other than procfs on /proc itself.
        ("/proc", vec![tmpfs("/proc")?], vec![]),
    ])
}

fn proc_submounts_are_refused() -> Result<()> {
    let src = tempfile::Builder::new().prefix("peapod-escape-src-").tempdir()?;
    let file = src.path().join("uptime");
    fs::write(&file, "1.00 2.00\n")?;
    for (dest, mounts, links) in proc_mount_cases(&file)? {
        let mut b = Bundle::new("escape-proc", &["true"])?;
        for (link, to) in &links {
            symlink(to, b.path().join("rootfs").join(link))?;
        }
        b.spec.mounts_mut().as_mut().context("spec has mounts")?.extend(mounts);
        let before = tree(&b.path().join("rootfs"))?;
        let err = match b.create(sandbox::Stdio::default()) {
            Ok(c) => {
                let pid = c.pid();
                c.delete(true)?;
                b.assert_clean(pid)?;
                anyhow::bail!("a mount on {dest} was accepted");
            }
            Err(e) => format!("{e:#}"),
        };
        b.assert_clean(None)?;
        ensure!(
            err.contains(dest) && err.contains("/proc"),
            "the refusal of a mount on {dest} does not name it: {err}"
        );
        let after = tree(&b.path().join("rootfs"))?;
        ensure!(
            before == after,
            "the refused mount on {dest} left {:?} in the rootfs",
            diff(&before, &after)
        );
    }
    Ok(())
}

/// Debian's runc 1.1.5 checks binds only (runc's main checks every mount type since
/// `createOpenMountpoint`): it is held to what it keeps, a bind under /proc refused with
/// the cause named, and no container running with something else on /proc. (It accepts
/// the tmpfs over /proc/sys/kernel, also through the image symlink.)
fn runc_proc_submounts_are_refused() -> Result<()> {
    let src = tempfile::Builder::new().prefix("peapod-escape-src-").tempdir()?;
    let file = src.path().join("uptime");
    fs::write(&file, "1.00 2.00\n")?;
    for (dest, mounts, links) in proc_mount_cases(&file)? {
        if !matches!(dest, "/proc/self/attr" | "/proc") {
            continue;
        }
        let mut b = Bundle::new("escape-proc-runc", &["true"])?;
        for (link, to) in &links {
            symlink(to, b.path().join("rootfs").join(link))?;
        }
        b.spec.mounts_mut().as_mut().context("spec has mounts")?.extend(mounts);
        let out = runc_run(&b)?;
        ensure!(out.code != 0, "runc accepted a mount on {dest}: {out:?}");
        ensure!(
            dest == "/proc" || out.stderr.contains("inside /proc"),
            "runc's refusal of {dest} does not name the cause: {out:?}"
        );
    }
    Ok(())
}

/// lxcfs-style binds over the files it emulates stay allowed.
fn proc_allowlist(name: &str, run: fn(&Bundle) -> Result<Output>) -> Result<()> {
    let src = tempfile::Builder::new().prefix("peapod-escape-src-").tempdir()?;
    let file = src.path().join("uptime");
    fs::write(&file, "1.00 2.00\n")?;
    let mut b = Bundle::new(name, &["cat", "/proc/uptime"])?;
    let mounts = b.spec.mounts_mut().as_mut().context("spec has mounts")?;
    mounts.push(bind("/proc/uptime", &file, &["bind", "ro"])?);
    let out = run(&b)?;
    ensure!(
        out.code == 0 && out.stdout == "1.00 2.00\n",
        "the lxcfs-style bind on /proc/uptime did not work: {out:?}"
    );
    Ok(())
}

fn lxcfs_binds_over_proc_files_still_work() -> Result<()> {
    proc_allowlist("escape-lxcfs", |b| b.run())
}

fn runc_lxcfs_binds_over_proc_files_still_work() -> Result<()> {
    proc_allowlist("escape-lxcfs-runc", runc_run)
}

// Class: the kernel's attack surface (issue 13): a seccomp profile's refusals hold inside
// the container, for init and for exec'd processes, and give the same answers under runc
// (`linux.seccomp` in the same bundle). unshare(CLONE_NEWUSER) is the entry to
// CVE-2022-0185 and CVE-2024-1086; the profiles here refuse it, or one personality value,
// or everything unlisted, and check the errno the container sees.

/// Runs `script` with `profile` as `linux.seccomp` through `run`; returns its output.
fn seccomp_run(
    name: &str,
    profile: oci_spec::runtime::LinuxSeccomp,
    script: &str,
    run: fn(&Bundle) -> Result<Output>,
) -> Result<Output> {
    let mut b = Bundle::new(name, &["sh", "-c", script])?;
    seccomp::set(&mut b.spec, profile)?;
    run(&b)
}

fn seccomp_unshare_of_a_user_namespace(name: &str, run: fn(&Bundle) -> Result<Output>) -> Result<()> {
    let out = seccomp_run(
        name,
        seccomp::errno_for(&["unshare"], seccomp::EDQUOT)?,
        "unshare -U true; echo unshare=$?; grep -E '^Seccomp:' /proc/self/status",
        run,
    )?;
    ensure!(
        out.stdout == "unshare=1\nSeccomp:\t2\n" && out.stderr.contains(seccomp::EDQUOT_TEXT),
        "unshare(CLONE_NEWUSER) was not refused with the profile's errno: {out:?}"
    );
    Ok(())
}

fn seccomp_refuses_unshare_of_a_user_namespace_with_the_chosen_errno() -> Result<()> {
    seccomp_unshare_of_a_user_namespace("escape-sc-unshare", |b| b.run())
}

fn runc_seccomp_refuses_unshare_of_a_user_namespace_with_the_chosen_errno() -> Result<()> {
    seccomp_unshare_of_a_user_namespace("escape-sc-unshare-runc", runc_run)
}

fn seccomp_personality(name: &str, run: fn(&Bundle) -> Result<Output>) -> Result<()> {
    let out = seccomp_run(
        name,
        seccomp::personality_refused(seccomp::PER_LINUX32)?,
        "linux32 true; echo linux32=$?; linux64 true; echo linux64=$?",
        run,
    )?;
    ensure!(
        out.stdout == "linux32=1\nlinux64=0\n" && out.stderr.contains("Operation not permitted"),
        "personality(PER_LINUX32) alone should be refused: {out:?}"
    );
    Ok(())
}

fn seccomp_argument_filter_refuses_one_personality_value_only() -> Result<()> {
    seccomp_personality("escape-sc-args", |b| b.run())
}

fn runc_seccomp_argument_filter_refuses_one_personality_value_only() -> Result<()> {
    seccomp_personality("escape-sc-args-runc", runc_run)
}

fn seccomp_default_errno(name: &str, run: fn(&Bundle) -> Result<Output>) -> Result<()> {
    let out = seccomp_run(
        name,
        seccomp::all_but(&["mkdir", "mkdirat"])?,
        "mkdir /tmp/d; echo mkdir=$?; echo > /tmp/f && echo wrote",
        run,
    )?;
    ensure!(
        out.stdout == "mkdir=1\nwrote\n" && out.stderr.contains(seccomp::ETXTBSY_TEXT),
        "mkdir should get defaultErrnoRet (ETXTBSY): {out:?}"
    );
    Ok(())
}

fn seccomp_default_errno_ret_answers_unlisted_syscalls() -> Result<()> {
    seccomp_default_errno("escape-sc-default", |b| b.run())
}

fn runc_seccomp_default_errno_ret_answers_unlisted_syscalls() -> Result<()> {
    seccomp_default_errno("escape-sc-default-runc", runc_run)
}

fn seccomp_log(name: &str, run: fn(&Bundle) -> Result<Output>) -> Result<()> {
    let out = seccomp_run(
        name,
        seccomp::log_only(&["mkdir", "mkdirat"])?,
        "mkdir /tmp/d && echo made; grep -E '^Seccomp:' /proc/self/status",
        run,
    )?;
    ensure!(
        out.stdout == "made\nSeccomp:\t2\n",
        "SCMP_ACT_LOG blocked, or no filter: {out:?}"
    );
    Ok(())
}

fn seccomp_log_action_does_not_block() -> Result<()> {
    seccomp_log("escape-sc-log", |b| b.run())
}

fn runc_seccomp_log_action_does_not_block() -> Result<()> {
    seccomp_log("escape-sc-log-runc", runc_run)
}

/// How [`seccomp_store_files_others_could_write_are_not_loaded`] plants a program.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Plant {
    /// Root's own file, 0600 in the 0700 store: trusted, so loaded (the control case:
    /// it shows the planted file sits where the runtime looks).
    Trusted,
    /// Mode 0660: the group could have written it.
    GroupWritable,
    /// Owned by nobody (65534), mode 0600.
    OthersFile,
    /// Root's file in a store directory of mode 0770.
    GroupWritableDir,
}

/// Class: the compiled seccomp programs the runtime keeps on the host
/// (`sandbox::seccomp::store`). A host user who could write a program there would decide
/// what the next container may call, so a file is loaded only if nobody but root could
/// have written it. Here the program planted for the container's profile allows
/// everything: from a file or a directory others could write it must be ignored (unshare
/// refused with the profile's errno) and replaced by the real program, 0600; root's own
/// file is loaded (the control: the plant is where the runtime looks).
fn seccomp_store_files_others_could_write_are_not_loaded() -> Result<()> {
    let allow_all = sandbox::seccomp::compile_uncached(&seccomp::log_only(&[])?)?;
    // One profile per case, unlike any other test's: this process's own cache of
    // compiled programs must not answer before the store is read.
    let extra = ["acct", "swapon", "swapoff", "reboot"];
    let plants = [
        Plant::Trusted,
        Plant::GroupWritable,
        Plant::OthersFile,
        Plant::GroupWritableDir,
    ];
    for (plant, extra) in plants.into_iter().zip(extra) {
        let mut b = Bundle::new("escape-sc-store", &["sh", "-c", "unshare -U true; echo unshare=$?"])?;
        let profile = seccomp::errno_for(&["unshare", extra], seccomp::EDQUOT)?;
        seccomp::set(&mut b.spec, profile.clone())?;
        let store = b.config().seccomp_store.context("the bundle's config has no store")?;
        sandbox::hostdir::create_private(&store)?;
        let file = sandbox::seccomp::store::path_for(&store, &profile).context("no store path")?;
        fs::write(&file, serde_json::to_vec(&allow_all)?)?;
        let (mode, owner, dir_mode) = match plant {
            Plant::Trusted => (0o600, 0, 0o700),
            Plant::GroupWritable => (0o660, 0, 0o700),
            Plant::OthersFile => (0o600, 65534, 0o700),
            Plant::GroupWritableDir => (0o600, 0, 0o770),
        };
        fs::set_permissions(&file, fs::Permissions::from_mode(mode))?;
        std::os::unix::fs::chown(&file, Some(owner), Some(owner))?;
        fs::set_permissions(&store, fs::Permissions::from_mode(dir_mode))?;

        let out = b.run()?;
        let stored: sandbox::seccomp::Program = serde_json::from_slice(&fs::read(&file)?)?;
        let meta = fs::metadata(&file)?;
        if plant == Plant::Trusted {
            ensure!(
                out.stdout == "unshare=0\n" && stored == allow_all,
                "{plant:?}: root's own program in the store was not the one loaded: {out:?}"
            );
            continue;
        }
        ensure!(
            out.stdout == "unshare=1\n" && out.stderr.contains(seccomp::EDQUOT_TEXT),
            "{plant:?}: a program others could write was loaded: unshare(CLONE_NEWUSER) not refused: {out:?}"
        );
        ensure!(
            stored == sandbox::seccomp::compile_uncached(&profile)?
                && meta.uid() == 0
                && meta.mode() & 0o7777 == 0o600
                && fs::metadata(&store)?.mode() & 0o7777 == 0o700,
            "{plant:?}: the planted program was not replaced by the compiled one, root's and 0600 \
             in a 0700 store (file uid {}, mode {:o})",
            meta.uid(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

/// An exec'd process (a second way in, as `kubectl exec`) gets the container's filter,
/// with and without no_new_privs; the filter is on init as seen from the host.
fn seccomp_filters_exec_d_processes() -> Result<()> {
    let mut b = Bundle::new("escape-sc-exec", &["sleep", "30"])?;
    seccomp::set(&mut b.spec, seccomp::errno_for(&["unshare"], seccomp::EDQUOT)?)?;
    let mut c = b.start(sandbox::Stdio::default())?;
    let pid = c.pid().context("pid")?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let mut results = Vec::new();
    for nnp in [true, false] {
        let (r, w) = peapod_tests::pipe()?;
        let (er, ew) = peapod_tests::pipe()?;
        let proc = oci_spec::runtime::ProcessBuilder::default()
            .args(vec![
                "sh".to_string(),
                "-c".to_string(),
                "unshare -U true; echo unshare=$?".to_string(),
            ])
            .env(vec!["PATH=/bin".to_string()])
            .cwd("/")
            .no_new_privileges(nnp)
            .build()?;
        let (out, err) = (peapod_tests::reader(r), peapod_tests::reader(er));
        let code: Result<i32> = c
            .exec(
                &proc,
                sandbox::Stdio {
                    stdout: Some(w),
                    stderr: Some(ew),
                    ..Default::default()
                },
            )
            .map_err(anyhow::Error::from)
            .and_then(|e| Ok(e.wait()?));
        results.push((nnp, code, out.join().expect("reader")?, err.join().expect("reader")?));
    }
    c.kill(nix::sys::signal::Signal::SIGKILL, false)?;
    c.wait()?;
    b.delete(c, false)?;
    let st = peapod_tests::proc_status(&status);
    ensure!(
        st["Seccomp"] == "2",
        "container init seen from the host: Seccomp {}",
        st["Seccomp"]
    );
    for (nnp, code, out, err) in results {
        ensure!(
            code? == 0 && out == "unshare=1\n" && err.contains(seccomp::EDQUOT_TEXT),
            "exec'd process (noNewPrivileges {nnp}) was not filtered: {out:?} {err:?}"
        );
    }
    Ok(())
}

/// Every path under `root` (not following symlinks) with its kind.
fn tree(root: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d)? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                todo.push(e.path());
            }
            out.push(e.path().strip_prefix(root)?.to_string_lossy().into_owned());
        }
    }
    out.sort();
    Ok(out)
}

fn diff(before: &[String], after: &[String]) -> Vec<String> {
    after.iter().filter(|p| !before.contains(p)).cloned().collect()
}

// Class: the whole cgroup tree visible. On cgroup v1 containerd gives no cgroup
// namespace; runc then binds each hierarchy's *own* cgroup (mountCgroupV1 with
// getCgroupMounts), never the hierarchy's root with every host cgroup and other pods'.

/// What the container prints about its /sys/fs/cgroup: sibling cgroups it can find, and
/// for every `cgroup.procs` at the top of a hierarchy whether its own init (pid 1) is
/// in it (`own`) or not (`foreign`).
const CGROUP_PROBE: &str = "find /sys/fs/cgroup -maxdepth 4 -name '*-sibling' 2>/dev/null; \
     for f in /sys/fs/cgroup/cgroup.procs /sys/fs/cgroup/*/cgroup.procs; do \
     [ -f \"$f\" ] || continue; if grep -qx 1 \"$f\"; then echo \"own $f\"; else echo \"foreign $f\"; fi; done";

/// Sibling cgroups `peapod-test/<id>-sibling` in every hierarchy, removed on drop.
struct Siblings(Vec<PathBuf>);

impl Siblings {
    fn new(id: &str) -> Result<Self> {
        let roots: Vec<PathBuf> = if sandbox::cgroups::is_v2() {
            vec![PathBuf::from("/sys/fs/cgroup")]
        } else {
            fs::read_dir("/sys/fs/cgroup")?
                .flatten()
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .map(|e| e.path())
                .collect()
        };
        let mut made = Siblings(Vec::new());
        for r in roots {
            let d = r.join("peapod-test").join(format!("{id}-sibling"));
            fs::create_dir_all(&d).with_context(|| format!("mkdir {}", d.display()))?;
            made.0.push(d);
        }
        Ok(made)
    }
}

impl Drop for Siblings {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = fs::remove_dir(d);
        }
    }
}

fn cgroup_view(name: &str, cgroupns: bool, run: fn(&Bundle) -> Result<Output>) -> Result<()> {
    let mut b = Bundle::new(name, &["sh", "-c", CGROUP_PROBE])?;
    if !cgroupns {
        let linux = b.spec.linux_mut().as_mut().context("spec has linux")?;
        let mut nss = linux.namespaces().clone().unwrap_or_default();
        nss.retain(|n| n.typ() != LinuxNamespaceType::Cgroup);
        linux.set_namespaces(Some(nss));
    }
    let siblings = Siblings::new(&b.id)?;
    let out = run(&b);
    drop(siblings);
    let out = out?;
    ensure!(out.code == 0, "the probe failed: {out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    ensure!(
        lines.iter().any(|l| l.starts_with("own ")),
        "the container found no cgroup.procs of its own at the top of /sys/fs/cgroup: {lines:?}"
    );
    ensure!(
        lines.iter().all(|l| l.starts_with("own ")),
        "the container sees cgroups other than its own under /sys/fs/cgroup: {lines:?}"
    );
    Ok(())
}

fn cgroup_mount_without_cgroupns_shows_only_the_own_cgroup() -> Result<()> {
    cgroup_view("escape-cg", false, |b| b.run())
}

fn cgroup_mount_with_cgroupns_shows_only_the_own_cgroup() -> Result<()> {
    cgroup_view("escape-cgns", true, |b| b.run())
}

/// On cgroup v2 without a cgroup namespace runc 1.1.5 mounts a fresh cgroup2, the whole
/// host tree (`mountCgroupV2` binds the own cgroup only when that mount fails): there it
/// is held to that observation, so that the difference stays visible; peapod binds the
/// container's own cgroup on v2 as well. On v1 it keeps the property.
fn runc_cgroup_mount_without_cgroupns_shows_only_the_own_cgroup() -> Result<()> {
    let seen = cgroup_view("escape-cg-runc", false, runc_run);
    if !sandbox::cgroups::is_v2() {
        return seen;
    }
    let err = seen
        .err()
        .context("runc hid the host cgroup tree on v2 without a cgroup namespace: update this test")?;
    ensure!(
        format!("{err:#}").contains("-sibling"),
        "runc on v2 without a cgroup namespace: {err:#}"
    );
    Ok(())
}

fn runc_cgroup_mount_with_cgroupns_shows_only_the_own_cgroup() -> Result<()> {
    cgroup_view("escape-cgns-runc", true, runc_run)
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
        let pod = Self::new(name)?;
        pod.import()?;
        let out = pod.run_manifest(manifest)?;
        if out.code != 0 {
            let _ = pod.delete();
            anyhow::bail!("peapod run: {out:?}");
        }
        Ok(pod)
    }

    /// The directories of pod `name`, nothing run or imported yet.
    fn new(name: &str) -> Result<Self> {
        // /tmp, as the CLI suite: in the VM /var/tmp is on the initramfs, which overlayfs
        // refuses as an upper dir.
        let dir = tempfile::Builder::new()
            .prefix("peapod-escape-host-")
            .tempdir_in("/tmp")?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        Ok(Self {
            dir,
            name: name.to_string(),
        })
    }

    /// Imports the test images into the pod's root.
    fn import(&self) -> Result<()> {
        let archive = peapod_tests::images::archive()?;
        let out = self.peapod(&["image", "import", &archive.to_string_lossy()])?;
        ensure!(out.code == 0, "image import: {out:?}");
        Ok(())
    }

    /// `peapod run -f pod.yaml --network none` with `manifest` as `pod.yaml`.
    fn run_manifest(&self, manifest: &str) -> Result<Output> {
        let file = self.dir.path().join("pod.yaml");
        fs::write(&file, manifest)?;
        self.peapod(&["run", "-f", &file.to_string_lossy(), "--network", "none"])
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
         \x20 - name: mem\n    emptyDir: {{medium: Memory}}\n  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: IfNotPresent\n\
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
         \x20 - {{name: none, emptyDir: {{medium: Memory}}}}\n  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: IfNotPresent\n\
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
         \x20 - {{name: none, emptyDir: {{medium: Memory}}}}\n  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: IfNotPresent\n\
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
    run_probe_if_requested();
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
            "peapod::mknod_of_the_host_disk_cannot_be_read",
            mknod_of_the_host_disk_cannot_be_read,
        ),
        (
            "runc::mknod_of_the_host_disk_cannot_be_read",
            runc_mknod_of_the_host_disk_cannot_be_read,
        ),
        (
            "peapod::image_device_node_cannot_be_opened_without_caps",
            image_device_node_cannot_be_opened_without_caps,
        ),
        (
            "runc::image_device_node_cannot_be_opened_without_caps",
            runc_image_device_node_cannot_be_opened_without_caps,
        ),
        (
            "peapod::device_update_replaces_the_policy",
            device_update_replaces_the_policy,
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
            "peapod::layer_whiteout_then_symlink_does_not_touch_host_files",
            layer_whiteout_then_symlink_does_not_touch_host_files,
        ),
        (
            "peapod::layer_whiteouts_naming_dot_or_dotdot_are_refused",
            layer_whiteouts_naming_dot_or_dotdot_are_refused,
        ),
        (
            "peapod::layer_links_and_symlinked_parents_stay_inside_the_layer",
            layer_links_and_symlinked_parents_stay_inside_the_layer,
        ),
        (
            "peapod::oversized_manifests_and_layers_are_refused",
            oversized_manifests_and_layers_are_refused,
        ),
        (
            "peapod::mount_destination_swapped_for_a_symlink_stays_in_the_rootfs",
            mount_destination_swapped_for_a_symlink_stays_in_the_rootfs,
        ),
        (
            "runc::mount_destination_swapped_for_a_symlink_stays_in_the_rootfs",
            runc_mount_destination_swapped_for_a_symlink_stays_in_the_rootfs,
        ),
        (
            "peapod::mount_destination_through_an_image_symlink_stays_in_the_rootfs",
            mount_destination_through_an_image_symlink_stays_in_the_rootfs,
        ),
        (
            "runc::mount_destination_through_an_image_symlink_stays_in_the_rootfs",
            runc_mount_destination_through_an_image_symlink_stays_in_the_rootfs,
        ),
        ("peapod::proc_submounts_are_refused", proc_submounts_are_refused),
        ("runc::proc_submounts_are_refused", runc_proc_submounts_are_refused),
        (
            "peapod::lxcfs_binds_over_proc_files_still_work",
            lxcfs_binds_over_proc_files_still_work,
        ),
        (
            "runc::lxcfs_binds_over_proc_files_still_work",
            runc_lxcfs_binds_over_proc_files_still_work,
        ),
        (
            "peapod::cgroup_mount_without_cgroupns_shows_only_the_own_cgroup",
            cgroup_mount_without_cgroupns_shows_only_the_own_cgroup,
        ),
        (
            "runc::cgroup_mount_without_cgroupns_shows_only_the_own_cgroup",
            runc_cgroup_mount_without_cgroupns_shows_only_the_own_cgroup,
        ),
        (
            "peapod::cgroup_mount_with_cgroupns_shows_only_the_own_cgroup",
            cgroup_mount_with_cgroupns_shows_only_the_own_cgroup,
        ),
        (
            "runc::cgroup_mount_with_cgroupns_shows_only_the_own_cgroup",
            runc_cgroup_mount_with_cgroupns_shows_only_the_own_cgroup,
        ),
        (
            "peapod::setuid_files_in_a_container_are_unreachable_by_host_users",
            setuid_files_in_a_container_are_unreachable_by_host_users,
        ),
        (
            "peapod::memory_empty_dir_size_limit_zero_is_not_unlimited",
            memory_empty_dir_size_limit_zero_is_not_unlimited,
        ),
        (
            "peapod::shim_refuses_a_peer_of_another_uid",
            shim_refuses_a_peer_of_another_uid,
        ),
        (
            "peapod::container_init_is_not_dumpable_during_setup",
            container_init_is_not_dumpable_during_setup,
        ),
        (
            "peapod::apparmor_profile_denies_a_path",
            lsm::apparmor_profile_denies_a_path,
        ),
        (
            "runc::apparmor_profile_denies_a_path",
            lsm::runc_apparmor_profile_denies_a_path,
        ),
        (
            "peapod::apparmor_profile_applies_to_exec_processes",
            lsm::apparmor_profile_applies_to_exec_processes,
        ),
        (
            "peapod::selinux_labels_are_refused_without_selinux",
            lsm::selinux_labels_are_refused_without_selinux,
        ),
        (
            "runc::selinux_labels_are_refused_without_selinux",
            lsm::runc_selinux_labels_are_refused_without_selinux,
        ),
        (
            "peapod::seccomp_refuses_unshare_of_a_user_namespace_with_the_chosen_errno",
            seccomp_refuses_unshare_of_a_user_namespace_with_the_chosen_errno,
        ),
        (
            "runc::seccomp_refuses_unshare_of_a_user_namespace_with_the_chosen_errno",
            runc_seccomp_refuses_unshare_of_a_user_namespace_with_the_chosen_errno,
        ),
        (
            "peapod::seccomp_argument_filter_refuses_one_personality_value_only",
            seccomp_argument_filter_refuses_one_personality_value_only,
        ),
        (
            "runc::seccomp_argument_filter_refuses_one_personality_value_only",
            runc_seccomp_argument_filter_refuses_one_personality_value_only,
        ),
        (
            "peapod::seccomp_default_errno_ret_answers_unlisted_syscalls",
            seccomp_default_errno_ret_answers_unlisted_syscalls,
        ),
        (
            "runc::seccomp_default_errno_ret_answers_unlisted_syscalls",
            runc_seccomp_default_errno_ret_answers_unlisted_syscalls,
        ),
        (
            "peapod::seccomp_log_action_does_not_block",
            seccomp_log_action_does_not_block,
        ),
        (
            "peapod::seccomp_store_files_others_could_write_are_not_loaded",
            seccomp_store_files_others_could_write_are_not_loaded,
        ),
        (
            "runc::seccomp_log_action_does_not_block",
            runc_seccomp_log_action_does_not_block,
        ),
        (
            "peapod::seccomp_filters_exec_d_processes",
            seccomp_filters_exec_d_processes,
        ),
        (
            "peapod::volume_item_paths_and_keys_cannot_leave_the_volume",
            volumes::volume_item_paths_and_keys_cannot_leave_the_volume,
        ),
        (
            "peapod::volume_modes_with_setuid_bits_are_refused",
            volumes::volume_modes_with_setuid_bits_are_refused,
        ),
        (
            "peapod::symlinks_planted_on_the_way_to_a_volume_are_not_followed",
            volumes::symlinks_planted_on_the_way_to_a_volume_are_not_followed,
        ),
        (
            "peapod::populated_volumes_are_read_only_and_hold_no_setuid_bit",
            volumes::populated_volumes_are_read_only_and_hold_no_setuid_bit,
        ),
    ];
    run_privileged_suite(tests, || {
        sweep_test_cgroups()?;
        assert_no_children()
    });
}
