//! The `peapod` CLI in embedded mode: every pod in `examples/` run with `peapod run -f`,
//! checked through `get`, `logs` and `exec` and on the host (pod cgroup, mounts, shim,
//! state), deleted, and checked gone; a CLI SIGKILLed mid-run; bad manifests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

/// A private `--root`/`--state` pair with the test images imported.
struct Cli {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Cli {
    fn new() -> Result<Cli> {
        let dir = tempfile::Builder::new().prefix("peapod-cli-").tempdir_in("/tmp")?;
        let bin = peapod_tests::containerd::target_profile_dir()?.join("peapod");
        ensure!(bin.exists(), "{} missing: cargo build -p shim", bin.display());
        let cli = Cli { dir, bin };
        let archive = peapod_tests::images::archive()?;
        cli.ok(&["image", "import", archive.to_str().context("archive path")?])?;
        Ok(cli)
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .env("PEAPOD_ROOT", self.root())
            .env("PEAPOD_STATE", self.state())
            .env(
                "PEAPOD_PAUSE",
                peapod_tests::images::pause_binary().expect("make pause"),
            );
        c
    }

    fn run(&self, args: &[&str]) -> Result<Output> {
        Ok(self.command(args).output()?)
    }

    fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args)?;
        ensure!(
            out.status.success(),
            "peapod {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The `get pods` row of `pod`: (READY, STATUS, IP).
    fn row(&self, pod: &str) -> Result<(String, String, String)> {
        let out = self.ok(&["get", "pods"])?;
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(pod))
            .with_context(|| format!("{pod} not listed:\n{out}"))?;
        let f: Vec<&str> = line.split_whitespace().collect();
        Ok((f[1].to_string(), f[2].to_string(), f[5].to_string()))
    }

    fn wait_for<T>(&self, what: &str, mut probe: impl FnMut() -> Result<Option<T>>) -> Result<T> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        loop {
            match probe() {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(e) => last = format!("{e:#}"),
            }
            ensure!(Instant::now() < deadline, "timed out waiting for {what} {last}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Checks that nothing of pod `name` is left: state, data, mounts, cgroup, shim.
    fn assert_gone(&self, name: &str, uid: &str) -> Result<()> {
        let key = format!("default_{name}");
        for dir in [
            self.state().join("pods").join(&key),
            self.root().join("pods").join(&key),
        ] {
            ensure!(!dir.exists(), "leak: {} left", dir.display());
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
        let here = self.dir.path().to_string_lossy();
        ensure!(!mounts.contains(here.as_ref()), "leak: a mount under {here}");
        let cgroup = format!("peapod/pod-{uid}");
        ensure!(!sandbox::cgroups::exists_anywhere(&cgroup), "leak: cgroup {cgroup}");
        ensure!(shims_of(name).is_empty(), "leak: shim for {name} still runs");
        Ok(())
    }
}

/// The uid recorded for pod `name`.
fn uid_of(cli: &Cli, name: &str) -> Result<String> {
    let path = cli
        .state()
        .join("pods")
        .join(format!("default_{name}"))
        .join("pod.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    Ok(v["uid"].as_str().context("uid")?.to_string())
}

fn shims_of(pod: &str) -> Vec<u32> {
    let id = format!("default_{pod}");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_string_lossy().parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<String> = cmd
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let is = args.first()?.ends_with("containerd-shim-peapod-v2")
                && args.windows(2).any(|w| w[0] == "-id" && w[1] == id);
            is.then_some(pid)
        })
        .collect()
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(format!("{name}.yaml"))
}

fn run_example(cli: &Cli, name: &str) -> Result<String> {
    cli.ok(&["run", "-f", example(name).to_str().context("path")?])?;
    let uid = uid_of(cli, name)?;
    ensure!(
        shims_of(name).len() == 1,
        "want one shim for pod {name}: {:?}",
        shims_of(name)
    );
    Ok(uid)
}

fn delete_and_check(cli: &Cli, name: &str, uid: &str) -> Result<()> {
    cli.ok(&["delete", "pod", name])?;
    cli.assert_gone(name, uid)
}

fn logs(cli: &Cli, pod: &str, c: &str) -> Result<String> {
    cli.ok(&["logs", pod, "-c", c])
}

pub fn shared_volume_writer_and_reader_share_a_disk_and_an_ip() -> Result<()> {
    let cli = Cli::new()?;
    let uid = run_example(&cli, "shared-volume")?;
    let result = (|| {
        let (ready, status, ip) = cli.wait_for("both containers running", || {
            let r = cli.row("shared-volume")?;
            Ok((r.0 == "2/2").then_some(r))
        })?;
        ensure!(
            ready == "2/2" && status == "Running" && ip.starts_with("10.89.0."),
            "{ready} {status} {ip}"
        );
        let seen = cli.wait_for("the reader to print the writer's file", || {
            let l = logs(&cli, "shared-volume", "reader")?;
            Ok((!l.trim().is_empty()).then_some(l))
        })?;
        ensure!(seen.contains("UTC"), "reader printed {seen:?}");
        for c in ["writer", "reader"] {
            let out = cli.ok(&[
                "exec",
                "shared-volume",
                "-c",
                c,
                "--",
                "sh",
                "-c",
                "ip -o -4 addr show eth0",
            ])?;
            ensure!(
                out.contains(&format!("inet {ip}/")),
                "{c} has not the pod IP {ip}: {out}"
            );
        }
        let ro = cli.run(&["exec", "shared-volume", "-c", "reader", "--", "touch", "/data/x"])?;
        ensure!(!ro.status.success(), "the reader's readOnly mount was writable");
        Ok(())
    })();
    let deleted = delete_and_check(&cli, "shared-volume", &uid);
    result?;
    deleted
}

pub fn web_server_log_sidecar_reads_the_access_log() -> Result<()> {
    let cli = Cli::new()?;
    let uid = run_example(&cli, "web-log-sidecar")?;
    let result = (|| {
        let body = cli.wait_for("the web server", || {
            let out = cli.run(&[
                "exec",
                "web-log-sidecar",
                "-c",
                "log-collector",
                "--",
                "wget",
                "-q",
                "-O",
                "-",
                "http://127.0.0.1:8080/",
            ])?;
            Ok(out
                .status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
        })?;
        ensure!(body == "hello\n", "body {body:?}");
        cli.wait_for("the access log in the sidecar's output", || {
            Ok(logs(&cli, "web-log-sidecar", "log-collector")?
                .contains("response:200")
                .then_some(()))
        })?;
        // One Memory emptyDir: one tmpfs of 16 MiB on the host, seen by both.
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
        let tmpfs: Vec<&str> = mounts
            .lines()
            .filter(|l| l.contains("default_web-log-sidecar/volumes/logs"))
            .collect();
        ensure!(
            tmpfs.len() == 1 && tmpfs[0].contains("size=16384k"),
            "host mounts: {tmpfs:?}"
        );
        Ok(())
    })();
    let deleted = delete_and_check(&cli, "web-log-sidecar", &uid);
    result?;
    deleted
}

pub fn init_container_runs_to_completion_before_the_app() -> Result<()> {
    let cli = Cli::new()?;
    let uid = run_example(&cli, "init-blocks-app")?;
    let result = (|| {
        let log = cli.wait_for("the app's output", || {
            let l = logs(&cli, "init-blocks-app", "app")?;
            Ok((!l.is_empty()).then_some(l))
        })?;
        ensure!(
            log == "prepared-by-init\n",
            "app saw {log:?}: it started before the init container finished"
        );
        let (ready, status, _) = cli.row("init-blocks-app")?;
        ensure!(ready == "1/1" && status == "Running", "{ready} {status}");
        Ok(())
    })();
    let deleted = delete_and_check(&cli, "init-blocks-app", &uid);
    result?;
    deleted
}

pub fn native_sidecar_starts_before_the_app_and_keeps_running() -> Result<()> {
    let cli = Cli::new()?;
    let uid = run_example(&cli, "native-sidecar")?;
    let result = (|| {
        let log = cli.wait_for("the app's output", || {
            let l = logs(&cli, "native-sidecar", "app")?;
            Ok((!l.is_empty()).then_some(l))
        })?;
        ensure!(log == "sidecar-up\n", "app saw {log:?}");
        let (ready, status, _) = cli.row("native-sidecar")?;
        ensure!(
            ready == "2/2" && status == "Running",
            "{ready} {status}: the sidecar must keep running"
        );
        Ok(())
    })();
    let deleted = delete_and_check(&cli, "native-sidecar", &uid);
    result?;
    deleted
}

pub fn requests_and_limits_size_the_pod_cgroup() -> Result<()> {
    let cli = Cli::new()?;
    let uid = run_example(&cli, "resources")?;
    let pod = format!("peapod/pod-{uid}");
    let result = (|| {
        cli.wait_for("both running", || Ok((cli.row("resources")?.0 == "2/2").then_some(())))?;
        let read = |ctrl: &str, path: &str, file: &str| {
            std::fs::read_to_string(peapod_tests::cgroup_file(ctrl, path, file)).map(|s| s.trim().to_string())
        };
        // Pod totals: limits 500m + 200m and 64Mi + 32Mi.
        if sandbox::cgroups::is_v2() {
            ensure!(read("", &pod, "cpu.max")? == "70000 100000");
            ensure!(read("", &pod, "memory.max")? == (96u64 << 20).to_string());
            ensure!(read("", &format!("{pod}/worker"), "memory.max")? == (64u64 << 20).to_string());
        } else {
            ensure!(read("cpu", &pod, "cpu.cfs_quota_us")? == "70000");
            ensure!(read("memory", &pod, "memory.limit_in_bytes")? == (96u64 << 20).to_string());
            ensure!(read("memory", &format!("{pod}/worker"), "memory.limit_in_bytes")? == (64u64 << 20).to_string());
            // Requests: 250m → 256 shares (kubelet's milliCPU·1024/1000).
            ensure!(read("cpu", &format!("{pod}/worker"), "cpu.shares")? == "256");
        }
        Ok(())
    })();
    let deleted = delete_and_check(&cli, "resources", &uid);
    result?;
    deleted
}

pub fn a_sigkilled_cli_leaves_nothing_delete_cannot_clean() -> Result<()> {
    let cli = Cli::new()?;
    let mut child = cli
        .command(&["run", "-f", example("init-blocks-app").to_str().context("path")?])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    // The app's Start waits ~2 s for the init container: kill the CLI meanwhile.
    let record = cli.state().join("pods/default_init-blocks-app/pod.json");
    cli.wait_for("the pod record", || Ok(record.exists().then_some(())))?;
    std::thread::sleep(Duration::from_millis(500));
    child.kill()?;
    child.wait()?;
    let uid = uid_of(&cli, "init-blocks-app")?;
    delete_and_check(&cli, "init-blocks-app", &uid)
}

pub fn bad_manifests_fail_clearly_and_create_nothing() -> Result<()> {
    let cli = Cli::new()?;
    let cases: [(&str, &str); 5] = [
        ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n", "kind"),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: m}\nspec: {containers: [{name: c, image: no-such-image}]}\n",
            "ErrImagePull",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: q}\nspec: {containers: [{name: c, image: busybox, resources: {limits: {memory: lots}}}]}\n",
            "spec.containers[0].resources.limits.memory",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: v}\nspec: {volumes: [{name: s, secret: {secretName: x}}], containers: [{name: c, image: busybox}]}\n",
            "spec.volumes[0]",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: n}\nspec: {containers: [{name: c, image: busybox}, {name: c, image: busybox}]}\n",
            "spec.containers[1].name",
        ),
    ];
    for (yaml, want) in cases {
        let file = cli.dir.path().join("bad.yaml");
        std::fs::write(&file, yaml)?;
        let out = cli.run(&["run", "-f", file.to_str().context("path")?])?;
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            bail!("peapod ran {yaml:?}");
        }
        ensure!(out.status.code() == Some(1), "exit {:?} for {want}", out.status);
        ensure!(err.contains(want), "error for {want}: {err}");
        let pods = cli.state().join("pods");
        ensure!(
            std::fs::read_dir(&pods).map(|d| d.count()).unwrap_or(0) == 0,
            "a refused manifest left state in {}",
            pods.display()
        );
    }
    Ok(())
}
