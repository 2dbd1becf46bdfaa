//! Fault injection for the CLI's embedded mode (issue 16): the filesystem under its state
//! dir (`--state`: records, bundles, the shim's files) or its data dir (`--root`: the
//! image store, writable layers, logs) full, a small tmpfs mounted there. Each failure
//! must name ENOSPC ("No space left on device"), leave nothing half-created (the space
//! used goes back to what it was, no pod state, no shim, no mount), and a pod that was
//! listed can be deleted.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};

use crate::pods::{example, Cli, Mode};

/// What the kernel's strerror(ENOSPC) reads, as the CLI prints an io error's cause.
const ENOSPC: &str = "No space left on device";

/// A tmpfs of a given size mounted over a dir; lazily unmounted on drop, if the test did
/// not [`SmallFs::unmount`] it.
struct SmallFs {
    dir: PathBuf,
    mounted: bool,
}

impl SmallFs {
    /// Mounts a tmpfs of `bytes` (rounded up to pages by the kernel) at `dir`, created.
    fn mount(dir: &Path, bytes: u64) -> Result<SmallFs> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes},mode=0755"), "peapod-full"])
            .arg(dir)
            .output()?;
        ensure!(
            out.status.success(),
            "mount a tmpfs at {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(SmallFs {
            dir: dir.to_path_buf(),
            mounted: true,
        })
    }

    /// Bytes in use (whole blocks), from `stat -f`.
    fn used(&self) -> Result<u64> {
        let out = Command::new("stat")
            .args(["-f", "-c", "%b %f %S"])
            .arg(&self.dir)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let n: Vec<u64> = text.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        ensure!(n.len() == 3, "stat -f {}: {text:?}", self.dir.display());
        Ok((n[0] - n[1]) * n[2])
    }

    fn filler(&self) -> PathBuf {
        self.dir.join("filler")
    }

    /// Fills the filesystem with one file, then gives back `room` bytes of it.
    fn fill_leaving(&self, room: u64) -> Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(self.filler())?;
        let chunk = vec![0u8; 4096];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => return Err(e).context("fill the tmpfs"),
            }
        }
        let len = f.metadata()?.len();
        f.set_len(len.saturating_sub(room))?;
        Ok(())
    }

    fn unmount(mut self) -> Result<()> {
        self.mounted = false;
        let out = Command::new("umount").arg(&self.dir).output()?;
        ensure!(
            out.status.success(),
            "umount {}: {}",
            self.dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).output();
        }
    }
}

/// The state dir on a full tmpfs (2 MiB more than the pause binary the sandbox's bundle
/// bind-mounts), with 0, 4 and 16 KiB left, then the pause's size and 0, 4, 16, 64, 256
/// KiB and 1 MiB more (each run fails at a later step: the pod record, the pause root, the
/// bundles, the shim's state and sockets): `peapod run` either
/// fails naming ENOSPC, leaving no pod state, no shim and no mount, or (with room enough)
/// runs the pod; whatever happened, a listed pod can be deleted and the space used is
/// back to the filler's alone.
pub fn a_full_state_dir_fails_run_with_enospc_and_leaves_nothing() -> Result<()> {
    let cli = Cli::new(Mode::Embedded)?;
    let name = "native-sidecar";
    let manifest = example(name);
    let manifest = manifest.to_str().context("path")?;
    let pause = std::fs::metadata(peapod_tests::images::pause_binary()?)?
        .len()
        .next_multiple_of(4096);
    let fs = SmallFs::mount(&cli.state(), pause + (2 << 20))?;
    let rooms = [0u64, 4 << 10, 16 << 10]
        .into_iter()
        .chain([0u64, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20].map(|r| pause + r));
    let result = (|| {
        let mut failed = 0;
        for room in rooms {
            fs.fill_leaving(room)?;
            let before = fs.used()?;
            let out = cli.run(&["run", "-f", manifest])?;
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            if !out.status.success() {
                failed += 1;
                ensure!(
                    err.contains(ENOSPC),
                    "run with {room} bytes free failed without naming ENOSPC: {err}"
                );
                eprintln!("{room} bytes free: {}", err.trim());
            }
            let listed = cli.ok(&["get", "pods"])?;
            if listed.lines().any(|l| l.split_whitespace().next() == Some(name)) {
                cli.ok(&["delete", "pod", name])
                    .with_context(|| format!("delete the pod run with {room} bytes free ({err})"))?;
            }
            check_no_pod_left(&cli, name, &format!("after a run with {room} bytes free"))?;
            let after = fs.used()?;
            ensure!(
                after == before,
                "{} bytes of the full state dir still used after the run with {room} bytes free was undone: {}",
                after.saturating_sub(before),
                du(&cli.state())
            );
            std::fs::remove_file(fs.filler())?;
        }
        ensure!(failed > 0, "no run failed on a full state dir");
        Ok(())
    })();
    let unmounted = fs.unmount();
    result?;
    unmounted?;
    check_no_pod_left(&cli, name, "at the end")
}

/// The image store on a tmpfs smaller than the test archive (the blob copy fails), then
/// one larger than it but too small for the unpacked layers as well (the unpack fails):
/// `peapod image import` fails naming ENOSPC, `image ls` lists nothing, and the store
/// uses no more space than before the import.
pub fn a_full_image_store_fails_import_with_enospc_and_leaves_nothing() -> Result<()> {
    let cli = Cli::without_images(Mode::Embedded)?;
    let archive = peapod_tests::images::archive()?;
    let size = std::fs::metadata(archive)?.len();
    let archive = archive.to_str().context("archive path")?;
    let mut failed = 0;
    for bytes in [size / 2, size + size / 2] {
        let fs = SmallFs::mount(&cli.root(), bytes)?;
        let result = (|| {
            // The store's skeleton first, so that what the import leaves is measured alone.
            cli.ok(&["image", "ls"])?;
            let before = fs.used()?;
            let out = cli.run(&["image", "import", archive])?;
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            if out.status.success() {
                eprintln!("a {bytes}-byte store held the {size}-byte archive");
                return Ok(());
            }
            failed += 1;
            eprintln!("{bytes}-byte store: {}", err.trim());
            ensure!(err.contains(ENOSPC), "import into a {bytes}-byte store: {err}");
            let listed = cli.ok(&["image", "ls"])?;
            ensure!(
                listed.lines().count() <= 1,
                "a failed import left images listed:\n{listed}"
            );
            let after = fs.used()?;
            ensure!(
                after == before,
                "{} bytes left in the store by the failed import: {}",
                after.saturating_sub(before),
                du(&cli.root())
            );
            Ok(())
        })();
        let unmounted = fs.unmount();
        result?;
        unmounted?;
    }
    ensure!(failed > 0, "no import failed on a full store");
    Ok(())
}

/// The pod data dir (writable layers and logs) on a 4 MiB tmpfs, and an app that prints
/// without pause: once the log fills the disk, the shim drops the output rather than
/// stall the app (it keeps writing: its `wchar` in `/proc/<pid>/io` grows), its log (the
/// sandbox bundle's `log`, which embedded mode keeps as a file) names ENOSPC, `logs`
/// still shows what was written, and the pod is deleted leaving the tmpfs as it was.
pub fn a_full_log_disk_drops_output_without_stalling_the_app() -> Result<()> {
    let cli = Cli::new(Mode::Embedded)?;
    let name = "logfull";
    let marker = "peapod-logfull-talker";
    let file = cli.dir.path().join("logfull.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: talker\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, 'i=0; while :; do echo \"{marker} line $i ................................................................\"; i=$((i+1)); done']\n"
        ),
    )?;
    let fs = SmallFs::mount(&cli.root().join("pods"), 4 << 20)?;
    let before = fs.used()?;
    let result = (|| {
        cli.ok(&["run", "-f", file.to_str().context("path")?])?;
        let shim_log = cli
            .state()
            .join("pods")
            .join(format!("default_{name}"))
            .join("bundles/sandbox/log");
        let warning = cli.wait_for("the shim's log to name ENOSPC", || {
            let log = std::fs::read_to_string(&shim_log).with_context(|| format!("read {}", shim_log.display()))?;
            Ok(log
                .lines()
                .find(|l| l.contains(ENOSPC) && l.contains("output dropped"))
                .map(str::to_string))
        })?;
        eprintln!("shim log: {warning}");
        let talker = peapod_tests::procs::processes()
            .into_iter()
            .find(|p| p.args.first().is_some_and(|a| a == "sh") && p.args.iter().any(|a| a.contains(marker)))
            .context("the talker's process is not running")?;
        let wchar = || -> Result<u64> {
            std::fs::read_to_string(format!("/proc/{}/io", talker.pid))?
                .lines()
                .find_map(|l| l.strip_prefix("wchar: "))
                .and_then(|v| v.trim().parse().ok())
                .context("no wchar in /proc/<pid>/io")
        };
        let first = wchar()?;
        let grown = cli.wait_for("the talker to go on writing with the disk full", || {
            let now = wchar()?;
            Ok((now >= first + (1 << 20)).then_some(now - first))
        })?;
        eprintln!("the talker wrote {grown} more bytes with the disk full");
        let (ready, status, _) = cli.row(name)?;
        ensure!(ready == "1/1" && status == "Running", "get pods: {ready} {status}");
        let logs = crate::pods::logs(&cli, name, "talker")?;
        ensure!(
            logs.lines()
                .next()
                .is_some_and(|l| l.contains(&format!("{marker} line 0 "))),
            "logs do not start with the first line: {:?}",
            logs.lines().next()
        );
        cli.ok(&["delete", "pod", name])?;
        check_no_pod_left(&cli, name, "after the delete")?;
        let after = fs.used()?;
        ensure!(
            after == before,
            "{} bytes of the log disk still used after the delete: {}",
            after.saturating_sub(before),
            du(&cli.root().join("pods"))
        );
        Ok(())
    })();
    if result.is_err() {
        let _ = cli.run(&["delete", "pod", name]);
    }
    let unmounted = fs.unmount();
    result?;
    unmounted?;
    check_no_pod_left(&cli, name, "at the end")
}

/// Nothing of pod `name` left: no state or data dir, no shim, no mount under the CLI's
/// dir other than the test's own tmpfs.
fn check_no_pod_left(cli: &Cli, name: &str, when: &str) -> Result<()> {
    let key = format!("default_{name}");
    for dir in [cli.state().join("pods").join(&key), cli.root().join("pods").join(&key)] {
        ensure!(!dir.exists(), "{when}: {} left: {}", dir.display(), du(&dir));
    }
    let here = cli.dir.path().to_string_lossy().into_owned();
    let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .filter(|l| l.contains(&here) && !l.contains("peapod-full"))
        .map(str::to_string)
        .collect();
    ensure!(mounts.is_empty(), "{when}: mounts left: {mounts:#?}");
    let shims = crate::pods::shims_of(cli, name);
    ensure!(shims.is_empty(), "{when}: shim {shims:?} of {name} still runs");
    Ok(())
}

/// `du -a` of `dir`, for error messages.
fn du(dir: &Path) -> String {
    Command::new("du")
        .arg("-a")
        .arg(dir)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}
