//! The `peapod` CLI in both modes: every pod in `examples/` run with `peapod run -f`,
//! checked through `get`, `describe`, `logs` and `exec` and on the host (pod cgroup,
//! mounts, shim, state), deleted, and checked gone; a CLI SIGKILLed mid-run; bad
//! manifests. Each test runs embedded (the shim without containerd) and in CRI mode
//! (`--cri` against a private containerd with the `peapod` runtime handler).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use peapod_tests::containerd::{Containerd, PEAPOD_HANDLER};

/// Where the CLI runs pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The shim driven by the CLI itself.
    Embedded,
    /// `--cri` against a private containerd, runtime handler `peapod`.
    Cri,
}

/// A private `--root`/`--state` pair with the test images imported (embedded), or a
/// private containerd with them imported (CRI).
pub struct Cli {
    pub dir: tempfile::TempDir,
    bin: PathBuf,
    ctrd: Option<Containerd>,
}

impl Cli {
    pub fn new(mode: Mode) -> Result<Cli> {
        Self::with_images(mode, false)
    }

    /// [`Cli::new`] whose CRI pods the host can reach: its containerd's bridge is a
    /// gateway ([`Containerd::start_with_gateway`]), as peapod's own bridge is.
    pub fn reachable(mode: Mode) -> Result<Cli> {
        Self::with_images(mode, true)
    }

    fn with_images(mode: Mode, gateway: bool) -> Result<Cli> {
        let cli = Self::build(mode, gateway)?;
        if cli.ctrd.is_none() {
            let archive = peapod_tests::images::archive()?;
            cli.ok(&["image", "import", archive.to_str().context("archive path")?])?;
        }
        Ok(cli)
    }

    /// [`Cli::new`] with nothing imported into the embedded image store.
    pub fn without_images(mode: Mode) -> Result<Cli> {
        Self::build(mode, false)
    }

    fn build(mode: Mode, gateway: bool) -> Result<Cli> {
        let dir = tempfile::Builder::new().prefix("peapod-cli-").tempdir_in("/tmp")?;
        let bin = peapod_tests::containerd::target_profile_dir()?.join("peapod");
        ensure!(
            bin.exists(),
            "{} missing: cargo build -p sandbox -p shim -p peapod (make cli-test does)",
            bin.display()
        );
        let ctrd = match mode {
            Mode::Embedded => None,
            Mode::Cri => {
                let ctrd = if gateway {
                    Containerd::start_with_gateway()?
                } else {
                    Containerd::start()?
                };
                ctrd.import_images()?;
                Some(ctrd)
            }
        };
        Ok(Cli { dir, bin, ctrd })
    }

    /// Which mode this CLI runs pods in.
    pub fn mode(&self) -> Mode {
        match self.ctrd {
            None => Mode::Embedded,
            Some(_) => Mode::Cri,
        }
    }

    /// CRI mode: where the CLI puts pod log directories.
    fn pod_log_dir(&self) -> PathBuf {
        self.dir.path().join("pod-logs")
    }

    /// The start of pod IPs: peapod's bridge embedded, the instance's subnet under CRI.
    fn ip_prefix(&self) -> String {
        match &self.ctrd {
            None => "10.89.0.".into(),
            Some(c) => c.subnet().trim_end_matches("0/24").to_string(),
        }
    }

    /// `get pod NAME -o json`.
    pub fn pod_json(&self, name: &str) -> Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.ok(&["get", "pod", name, "-o", "json"])?)?)
    }

    /// The id the runtime gave the pod's sandbox (the shim's pod state is keyed by it).
    fn sandbox_id(&self, name: &str) -> Result<String> {
        let Some(ctrd) = &self.ctrd else {
            return Ok(format!("default_{name}"));
        };
        let sandboxes = ctrd.cri()?.list_pod_sandbox(None)?;
        let s = sandboxes
            .iter()
            .find(|s| s.metadata.as_ref().is_some_and(|m| m.name == name))
            .with_context(|| format!("no sandbox for pod {name}"))?;
        Ok(s.id.clone())
    }

    /// The container id the pod's network was attached under through CNI (what
    /// `portmap`'s rules and host-local's allocations name): the pod's uid in embedded
    /// mode, the sandbox id under CRI.
    fn cni_id(&self, name: &str) -> Result<String> {
        match self.ctrd {
            None => uid_of(self, name),
            Some(_) => self.sandbox_id(name),
        }
    }

    /// The cgroup of container `c` of pod `pod_cgroup`: named after the container
    /// embedded, after its CRI id under CRI.
    fn container_cgroup(&self, pod: &str, pod_cgroup: &str, c: &str) -> Result<String> {
        if self.ctrd.is_none() {
            return Ok(format!("{pod_cgroup}/{c}"));
        }
        let v = self.pod_json(pod)?;
        let statuses = v["status"]["containerStatuses"]
            .as_array()
            .context("containerStatuses")?;
        let s = statuses
            .iter()
            .find(|s| s["name"] == c)
            .with_context(|| format!("no status of {c}"))?;
        let id = s["containerID"].as_str().context("containerID")?;
        Ok(format!("{pod_cgroup}/{}", id.trim_start_matches("containerd://")))
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        if let Some(ctrd) = &self.ctrd {
            c.arg("--cri")
                .arg(format!("unix://{}", ctrd.address().display()))
                .args(["--runtime-handler", PEAPOD_HANDLER])
                .arg("--pod-log-dir")
                .arg(self.pod_log_dir());
        }
        c.args(args)
            .env("PEAPOD_ROOT", self.root())
            .env("PEAPOD_STATE", self.state())
            .env(
                "PEAPOD_PAUSE",
                peapod_tests::images::pause_binary().expect("make pause"),
            );
        c
    }

    pub fn run(&self, args: &[&str]) -> Result<Output> {
        Ok(self.command(args).output()?)
    }

    pub fn ok(&self, args: &[&str]) -> Result<String> {
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
    pub fn row(&self, pod: &str) -> Result<(String, String, String)> {
        let out = self.ok(&["get", "pods"])?;
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(pod))
            .with_context(|| format!("{pod} not listed:\n{out}"))?;
        let f: Vec<&str> = line.split_whitespace().collect();
        Ok((f[1].to_string(), f[2].to_string(), f[5].to_string()))
    }

    pub fn wait_for<T>(&self, what: &str, mut probe: impl FnMut() -> Result<Option<T>>) -> Result<T> {
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

    /// CRI mode: checks the private containerd holds no sandbox, container or task.
    pub fn assert_no_runtime_leftovers(&self) -> Result<()> {
        match &self.ctrd {
            Some(ctrd) => ctrd.assert_no_leftovers(),
            None => Ok(()),
        }
    }

    /// Checks that a `run` (its `out`) was refused: exit status 1, stderr naming each of
    /// `want`, and nothing of it left: no pod listed, no entry under the state's or root's
    /// `pods` (nor CRI mode's `cri/pods`), no mount under this CLI's directory, nothing in
    /// the runtime (CRI). Returns the stderr.
    pub fn assert_refused(&self, out: &Output, want: &[&str]) -> Result<String> {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        ensure!(out.status.code() == Some(1), "exit {:?}: {err}", out.status);
        for w in want {
            ensure!(err.contains(w), "want {w:?} in: {err}");
        }
        let listed = self.ok(&["get", "pods"])?;
        ensure!(listed.is_empty(), "a refused run left a pod: {listed}");
        for dir in [
            self.state().join("pods"),
            self.root().join("pods"),
            self.root().join("cri/pods"),
        ] {
            let left: Vec<_> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .collect();
            ensure!(left.is_empty(), "a refused run left {left:?}");
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
        let here = self.dir.path().to_string_lossy();
        ensure!(!mounts.contains(here.as_ref()), "leak: a mount under {here}");
        self.assert_no_runtime_leftovers()?;
        Ok(err)
    }

    /// Checks that nothing of pod `name` is left: state, data (embedded) or log
    /// directories and everything containerd had (CRI), mounts, cgroup, shim.
    pub fn assert_gone(&self, name: &str, uid: &str) -> Result<()> {
        let key = format!("default_{name}");
        for dir in [
            self.state().join("pods").join(&key),
            self.root().join("pods").join(&key),
            // CRI mode: the pod's populated volumes.
            self.root().join("cri").join("pods").join(format!("{key}_{uid}")),
        ] {
            ensure!(!dir.exists(), "leak: {} left", dir.display());
        }
        if let Some(ctrd) = &self.ctrd {
            let logs: Vec<_> = std::fs::read_dir(self.pod_log_dir())
                .into_iter()
                .flatten()
                .flatten()
                .collect();
            ensure!(logs.is_empty(), "leak: pod log dirs {logs:?}");
            ctrd.assert_no_leftovers()?;
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
        let here = self.dir.path().to_string_lossy();
        ensure!(!mounts.contains(here.as_ref()), "leak: a mount under {here}");
        let cgroup = format!("peapod/pod-{uid}");
        ensure!(!sandbox::cgroups::exists_anywhere(&cgroup), "leak: cgroup {cgroup}");
        ensure!(shims_of(self, name).is_empty(), "leak: shim for {name} still runs");
        ensure!(
            pullers_of(self, name).is_empty(),
            "leak: the image puller of {name} still runs"
        );
        if self.ctrd.is_none() {
            // host-local's allocations: a file per address naming the container id.
            let dir = std::path::Path::new(peapod::cni::IPAM_DIR).join("peapod");
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let held = std::fs::read_to_string(e.path()).unwrap_or_default();
                ensure!(
                    !held.contains(uid),
                    "leak: address {:?} still allocated to {name} ({uid}) in {}",
                    e.file_name(),
                    dir.display()
                );
            }
        }
        Ok(())
    }
}

/// The uid of pod `name` (`get -o json`).
pub fn uid_of(cli: &Cli, name: &str) -> Result<String> {
    let v = cli.pod_json(name)?;
    Ok(v["metadata"]["uid"].as_str().context("metadata.uid")?.to_string())
}

/// The embedded shims of pod `pod` of this CLI (their working directory, the sandbox
/// bundle, is under its state dir: tests running the same example in parallel have their
/// own).
pub fn shims_of(cli: &Cli, pod: &str) -> Vec<u32> {
    let id = format!("default_{pod}");
    let state = cli.state();
    peapod_tests::procs::processes()
        .into_iter()
        .filter(|p| {
            p.args.first().is_some_and(|a| a.ends_with("containerd-shim-peapod-v2"))
                && has_pair(&p.args, "-id", &id)
                && std::fs::read_link(format!("/proc/{}/cwd", p.pid)).is_ok_and(|cwd| cwd.starts_with(&state))
        })
        .map(|p| p.pid)
        .collect()
}

/// The image pullers of pod `pod` of this CLI: `peapod … --state <its state> pull-back-off
/// default_<pod>` (embedded mode leaves one behind while the pod waits for an image).
pub fn pullers_of(cli: &Cli, pod: &str) -> Vec<u32> {
    let (key, state) = (format!("default_{pod}"), cli.state().to_string_lossy().into_owned());
    peapod_tests::procs::processes()
        .into_iter()
        .filter(|p| has_pair(&p.args, peapod::runner::PULLER_COMMAND, &key) && has_pair(&p.args, "--state", &state))
        .map(|p| p.pid)
        .collect()
}

/// Whether `args` hold `first` followed by `second`.
fn has_pair(args: &[String], first: &str, second: &str) -> bool {
    args.windows(2).any(|w| w[0] == first && w[1] == second)
}

pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(format!("{name}.yaml"))
}

fn run_example(cli: &Cli, name: &str) -> Result<String> {
    cli.ok(&["run", "-f", example(name).to_str().context("path")?])?;
    let uid = uid_of(cli, name)?;
    if cli.ctrd.is_none() {
        ensure!(
            shims_of(cli, name).len() == 1,
            "want one shim for pod {name}: {:?}",
            shims_of(cli, name)
        );
    }
    Ok(uid)
}

/// Runs example `name` with a fresh CLI in `mode`, then `check(cli, uid)`; deletes the pod
/// and checks nothing of it is left, whatever `check` returned (its error comes first).
fn with_example(mode: Mode, name: &str, check: impl FnOnce(&Cli, &str) -> Result<()>) -> Result<()> {
    let cli = Cli::new(mode)?;
    let uid = run_example(&cli, name)?;
    let result = check(&cli, &uid);
    let deleted = delete_and_check(&cli, name, &uid);
    result?;
    deleted
}

pub fn delete_and_check(cli: &Cli, name: &str, uid: &str) -> Result<()> {
    cli.ok(&["delete", "pod", name])?;
    cli.assert_gone(name, uid)
}

pub fn logs(cli: &Cli, pod: &str, c: &str) -> Result<String> {
    cli.ok(&["logs", pod, "-c", c])
}

pub fn shared_volume_writer_and_reader_share_a_disk_and_an_ip(mode: Mode) -> Result<()> {
    with_example(mode, "shared-volume", |cli, _| {
        let (ready, status, ip) = cli.wait_for("both containers running", || {
            let r = cli.row("shared-volume")?;
            Ok((r.0 == "2/2").then_some(r))
        })?;
        ensure!(
            ready == "2/2" && status == "Running" && ip.starts_with(&cli.ip_prefix()),
            "{ready} {status} {ip}"
        );
        let seen = cli.wait_for("the reader to print the writer's file", || {
            let l = logs(cli, "shared-volume", "reader")?;
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
    })
}

pub fn web_server_log_sidecar_reads_the_access_log(mode: Mode) -> Result<()> {
    with_example(mode, "web-log-sidecar", |cli, _| {
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
            Ok(logs(cli, "web-log-sidecar", "log-collector")?
                .contains("response:200")
                .then_some(()))
        })?;
        // One Memory emptyDir: one tmpfs of 16 MiB on the host, seen by both.
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
        let volume = format!("{}/volumes/logs", cli.sandbox_id("web-log-sidecar")?);
        let tmpfs: Vec<&str> = mounts.lines().filter(|l| l.contains(&volume)).collect();
        ensure!(
            tmpfs.len() == 1 && tmpfs[0].contains("size=16384k"),
            "host mounts: {tmpfs:?}"
        );
        Ok(())
    })
}

pub fn init_container_runs_to_completion_before_the_app(mode: Mode) -> Result<()> {
    with_example(mode, "init-blocks-app", |cli, _| {
        let log = cli.wait_for("the app's output", || {
            let l = logs(cli, "init-blocks-app", "app")?;
            Ok((!l.is_empty()).then_some(l))
        })?;
        ensure!(
            log == "prepared-by-init\n",
            "app saw {log:?}: it started before the init container finished"
        );
        // The shim releases the app as soon as the init container exits; containerd learns
        // of that exit from the shim's TaskExit event, asynchronously, so the app's output can
        // be there a few milliseconds before CRI reports the init container exited (seen
        // under containerd 2.x). A kubelet never sees that order: it starts app containers
        // only after CRI reports the init containers done.
        let mut last = (String::new(), String::new());
        let settled = cli.wait_for("the row to read 1/1 Running", || {
            let (ready, status, _) = cli.row("init-blocks-app")?;
            last = (ready.clone(), status.clone());
            Ok((ready == "1/1" && status == "Running").then_some(()))
        });
        ensure!(settled.is_ok(), "{} {}", last.0, last.1);
        // describe: the init container completed before the app started.
        let d = cli.ok(&["describe", "pod", "init-blocks-app"])?;
        let section = |from: &str, to: &str| -> String {
            let start = d.find(from).unwrap_or(0);
            let end = d[start..].find(to).map_or(d.len(), |e| start + e);
            d[start..end].to_string()
        };
        let init = section("Init Containers:", "\nContainers:");
        for want in ["prepare:", "Terminated", "Reason:       Completed", "Exit Code:    0"] {
            ensure!(init.contains(want), "describe's init container lacks {want:?}:\n{d}");
        }
        let app = section("\nContainers:", "Conditions:");
        ensure!(app.contains("app:") && app.contains("Running"), "describe's app:\n{d}");
        ensure!(d.contains("Status:           Running"), "describe:\n{d}");
        let v = cli.pod_json("init-blocks-app")?;
        let init_status = &v["status"]["initContainerStatuses"][0]["state"]["terminated"];
        let app_started = v["status"]["containerStatuses"][0]["state"]["running"]["startedAt"].as_str();
        let init_finished = init_status["finishedAt"].as_str();
        ensure!(
            init_status["reason"] == "Completed" && app_started.is_some() && init_finished.is_some(),
            "status: {}",
            v["status"]
        );
        ensure!(
            init_finished <= app_started,
            "the init container finished at {init_finished:?}, after the app started at {app_started:?}"
        );
        // logs --timestamps: RFC 3339 before each line.
        let stamped = cli.ok(&["logs", "init-blocks-app", "--timestamps"])?;
        let (time, line) = stamped.trim_end().split_once(' ').context("no timestamp")?;
        ensure!(
            line == "prepared-by-init" && time.len() >= 20 && time.ends_with('Z'),
            "logs --timestamps: {stamped:?}"
        );
        Ok(())
    })
}

pub fn native_sidecar_starts_before_the_app_and_keeps_running(mode: Mode) -> Result<()> {
    with_example(mode, "native-sidecar", |cli, _| {
        let log = cli.wait_for("the app's output", || {
            let l = logs(cli, "native-sidecar", "app")?;
            Ok((!l.is_empty()).then_some(l))
        })?;
        ensure!(log == "sidecar-up\n", "app saw {log:?}");
        let (ready, status, _) = cli.row("native-sidecar")?;
        ensure!(
            ready == "2/2" && status == "Running",
            "{ready} {status}: the sidecar must keep running"
        );
        Ok(())
    })
}

pub fn finished_pods_take_kubelets_phase_and_reasons(mode: Mode) -> Result<()> {
    let cli = Cli::new(mode)?;
    let file = cli.dir.path().join("done.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: done}\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n  initContainers:\n  - {name: setup, image: busybox, imagePullPolicy: IfNotPresent, command: ['true']}\n  containers:\n  - {name: bad, image: busybox, imagePullPolicy: IfNotPresent, command: [sh, -c, 'exit 3']}\n  - {name: ok, image: busybox, imagePullPolicy: IfNotPresent, command: [sh, -c, 'echo bye']}\n",
    )?;
    cli.ok(&["run", "-f", file.to_str().context("path")?])?;
    let uid = uid_of(&cli, "done")?;
    let result = (|| {
        // Every container, the init one too: containerd's CRI records each exit in the
        // container's own exit handler, so an app's exit may show before setup's does
        // (kubelet, too, would see the pod Pending for that moment).
        let phase = cli.wait_for("the pod to end", || {
            let v = cli.pod_json("done")?;
            let statuses = ["initContainerStatuses", "containerStatuses"]
                .iter()
                .flat_map(|k| v["status"][k].as_array().cloned().unwrap_or_default())
                .collect::<Vec<_>>();
            let all_done = statuses.len() == 3 && statuses.iter().all(|s| s["state"]["terminated"].is_object());
            Ok(all_done.then(|| v["status"]["phase"].as_str().unwrap_or("").to_string()))
        })?;
        ensure!(phase == "Failed", "phase {phase}");
        // kubectl's STATUS is the reason of the first app container that ended.
        let (ready, status, _) = cli.row("done")?;
        ensure!(ready == "0/2" && status == "Error", "{ready} {status}");
        let d = cli.ok(&["describe", "pod", "done"])?;
        for want in [
            "Reason:       Completed",
            "Reason:       Error",
            "Exit Code:    3",
            "Status:           Failed",
        ] {
            ensure!(d.contains(want), "describe lacks {want:?}:\n{d}");
        }
        ensure!(logs(&cli, "done", "ok")? == "bye\n");
        Ok(())
    })();
    let deleted = delete_and_check(&cli, "done", &uid);
    result?;
    deleted
}

/// Embedded mode only: without kubelet, the shim restarts by the pod's policy.
pub fn restarts_follow_the_policy_and_sidecars_stop_after_the_apps() -> Result<()> {
    let cli = Cli::new(Mode::Embedded)?;
    let flaky = cli.dir.path().join("flaky.yaml");
    std::fs::write(
        &flaky,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: flaky}\nspec:\n  restartPolicy: OnFailure\n  terminationGracePeriodSeconds: 2\n  volumes: [{name: data, emptyDir: {}}]\n  containers:\n  - name: app\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, 'echo run; if [ ! -f /data/once ]; then touch /data/once; exit 1; fi; echo second; trap \"exit 0\" TERM; sleep 3600 & wait']\n    volumeMounts: [{name: data, mountPath: /data}]\n",
    )?;
    let job = cli.dir.path().join("job.yaml");
    std::fs::write(
        &job,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: job}\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 2\n  initContainers:\n  - {name: proxy, image: busybox, imagePullPolicy: IfNotPresent, restartPolicy: Always, command: [sh, -c, 'trap \"echo proxy-stopped; exit 0\" TERM; sleep 3600 & wait']}\n  containers:\n  - {name: work, image: busybox, imagePullPolicy: IfNotPresent, command: [sh, -c, 'sleep 1; echo done']}\n",
    )?;
    cli.ok(&["run", "-f", flaky.to_str().context("path")?])?;
    let flaky_uid = uid_of(&cli, "flaky")?;
    cli.ok(&["run", "-f", job.to_str().context("path")?])?;
    let job_uid = uid_of(&cli, "job")?;
    let result = (|| {
        // OnFailure: the failed first run is restarted after the back-off (1 s).
        let row = cli.wait_for("the restart", || {
            let row = cli.ok(&["get", "pods"])?;
            let line = row
                .lines()
                .find(|l| l.starts_with("flaky "))
                .unwrap_or_default()
                .to_string();
            let f: Vec<&str> = line.split_whitespace().collect();
            Ok((f.len() > 3 && f[3] == "1" && f[2] == "Running").then_some(line))
        })?;
        ensure!(row.contains(" 1/1 "), "{row}");
        // Running is reported once the process starts, maybe before it wrote anything.
        let mut last = String::new();
        let current = cli.wait_for("the second run's output", || {
            last = logs(&cli, "flaky", "app")?;
            Ok(last.contains("second").then(|| last.clone()))
        });
        ensure!(
            current.is_ok() && last == "run\nsecond\n",
            "current run's log: {last:?}"
        );
        ensure!(
            cli.ok(&["logs", "flaky", "--previous"])? == "run\n",
            "previous run's log"
        );
        let d = cli.ok(&["describe", "pod", "flaky"])?;
        for want in ["Last State:     Terminated", "Exit Code:    1", "Restart Count:  1"] {
            ensure!(d.contains(want), "describe lacks {want:?}:\n{d}");
        }
        // Never, app done: the sidecar gets SIGTERM and the pod succeeds (KEP-753).
        let phase = cli.wait_for("the job to complete", || {
            let v = cli.pod_json("job")?;
            let p = v["status"]["phase"].as_str().unwrap_or("").to_string();
            Ok((p == "Succeeded").then_some(p))
        })?;
        ensure!(phase == "Succeeded");
        ensure!(
            logs(&cli, "job", "proxy")? == "proxy-stopped\n",
            "the sidecar was not stopped by SIGTERM"
        );
        ensure!(cli.row("job")?.1 == "Completed");
        Ok(())
    })();
    // Both deleted before checking: the mount check looks at the whole CLI dir.
    let deleted = cli
        .ok(&["delete", "pod", "flaky"])
        .and(cli.ok(&["delete", "pod", "job"]))
        .and(cli.assert_gone("flaky", &flaky_uid))
        .and(cli.assert_gone("job", &job_uid));
    result?;
    deleted
}

pub fn exec_passes_stdin_and_exit_codes(mode: Mode) -> Result<()> {
    with_example(mode, "native-sidecar", |cli, _| {
        cli.wait_for("both running", || {
            Ok((cli.row("native-sidecar")?.0 == "2/2").then_some(()))
        })?;
        let out = cli.run(&[
            "exec",
            "native-sidecar",
            "-c",
            "app",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 7",
        ])?;
        ensure!(out.status.code() == Some(7), "exit {:?}", out.status);
        ensure!(out.stdout == b"out\n" && out.stderr == b"err\n", "{out:?}");
        // Embedded: the shim's FIFOs; CRI: the runtime's streaming server (WebSocket),
        // whose protocol cannot end stdin, so the command reads what it needs.
        let script = if mode == Mode::Embedded {
            "read a; echo got:$a; cat; exit 4"
        } else {
            "read a; read b; echo got:$a:$b; exit 4"
        };
        let mut child = cli
            .command(&["exec", "-i", "native-sidecar", "-c", "app", "--", "sh", "-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        std::io::Write::write_all(child.stdin.as_mut().context("stdin")?, b"one\ntwo\n")?;
        drop(child.stdin.take());
        let out = child.wait_with_output()?;
        let want: &[u8] = if mode == Mode::Embedded {
            b"got:one\ntwo\n"
        } else {
            b"got:one:two\n"
        };
        ensure!(
            out.status.code() == Some(4) && out.stdout == want,
            "exec -i: {:?} {:?}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
        // -t: the command gets a terminal.
        let out = cli.run(&["exec", "-t", "native-sidecar", "-c", "app", "--", "tty"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success() && text.contains("/dev/pts/"),
            "exec -t: {:?} {text:?}",
            out.status
        );
        Ok(())
    })
}

pub fn requests_and_limits_size_the_pod_cgroup(mode: Mode) -> Result<()> {
    with_example(mode, "resources", |cli, uid| {
        let pod = format!("peapod/pod-{uid}");
        cli.wait_for("both running", || Ok((cli.row("resources")?.0 == "2/2").then_some(())))?;
        let worker = cli.container_cgroup("resources", &pod, "worker")?;
        let read = |ctrl: &str, path: &str, file: &str| {
            std::fs::read_to_string(peapod_tests::cgroup_file(ctrl, path, file)).map(|s| s.trim().to_string())
        };
        // Pod totals: limits 500m + 200m and 64Mi + 32Mi.
        if sandbox::cgroups::is_v2() {
            ensure!(read("", &pod, "cpu.max")? == "70000 100000");
            ensure!(read("", &pod, "memory.max")? == (96u64 << 20).to_string());
            ensure!(read("", &worker, "memory.max")? == (64u64 << 20).to_string());
        } else {
            ensure!(read("cpu", &pod, "cpu.cfs_quota_us")? == "70000");
            ensure!(read("memory", &pod, "memory.limit_in_bytes")? == (96u64 << 20).to_string());
            ensure!(read("memory", &worker, "memory.limit_in_bytes")? == (64u64 << 20).to_string());
            // Requests: 250m → 256 shares (kubelet's milliCPU·1024/1000).
            ensure!(read("cpu", &worker, "cpu.shares")? == "256");
        }
        Ok(())
    })
}

pub fn a_sigkilled_cli_leaves_nothing_delete_cannot_clean(mode: Mode) -> Result<()> {
    let cli = Cli::new(mode)?;
    let mut child = cli
        .command(&["run", "-f", example("init-blocks-app").to_str().context("path")?])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    // The app's Start waits ~2 s for the init container: kill the CLI meanwhile, once
    // the pod is listed.
    cli.wait_for("the pod to be listed", || {
        Ok(cli.ok(&["get", "pods"])?.contains("init-blocks-app").then_some(()))
    })?;
    std::thread::sleep(Duration::from_millis(500));
    child.kill()?;
    child.wait()?;
    let uid = uid_of(&cli, "init-blocks-app")?;
    delete_and_check(&cli, "init-blocks-app", &uid)
}

/// Embedded mode: a SIGKILLed shim leaves the containers running; `delete` cleans up as
/// containerd does for a lost shim (the shim binary's `delete`), then CNI DEL.
pub fn a_killed_shim_is_cleaned_up_by_delete() -> Result<()> {
    with_example(Mode::Embedded, "native-sidecar", |cli, _| {
        cli.wait_for("both running", || {
            Ok((cli.row("native-sidecar")?.0 == "2/2").then_some(()))
        })?;
        for pid in shims_of(cli, "native-sidecar") {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(pid)?),
                nix::sys::signal::Signal::SIGKILL,
            )?;
        }
        cli.wait_for("the shim to die", || {
            Ok(shims_of(cli, "native-sidecar").is_empty().then_some(()))
        })?;
        let (_, status, _) = cli.row("native-sidecar")?;
        ensure!(status == "Unknown", "status {status} with a dead shim");
        Ok(())
    })
}

pub fn bad_manifests_fail_clearly_and_create_nothing(mode: Mode) -> Result<()> {
    let cli = Cli::new(mode)?;
    let cases: [(&str, &str); 5] = [
        ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n", "kind"),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: m}\nspec: {containers: [{name: c, image: 'Not/A:Valid:Name'}]}\n",
            "container c: invalid image reference \"Not/A:Valid:Name\"",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: q}\nspec: {containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, resources: {limits: {memory: lots}}}]}\n",
            "spec.containers[0].resources.limits.memory",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: v}\nspec: {volumes: [{name: s, persistentVolumeClaim: {claimName: x}}], containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent}]}\n",
            "spec.volumes[0].persistentVolumeClaim",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: n}\nspec: {containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent}, {name: c, image: busybox, imagePullPolicy: IfNotPresent}]}\n",
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
        let listed = cli.run(&["get", "pods"])?;
        ensure!(
            listed.stdout.is_empty(),
            "a refused manifest left a pod: {}",
            String::from_utf8_lossy(&listed.stdout)
        );
    }
    match &cli.ctrd {
        Some(ctrd) => ctrd.assert_no_leftovers(),
        None => Ok(()),
    }
}

/// `examples/configmap.yaml`: a Pod with its ConfigMap and Secret in one file. The app
/// sees envFrom's keys after their prefix, one key of each object, and nothing for an
/// optional missing key. Then the same Pod with a missing key and with no Secret fails
/// with kubelet's `CreateContainerConfigError` naming the reference, creating nothing
/// (issue 15).
pub fn config_maps_and_secrets_fill_the_environment(mode: Mode) -> Result<()> {
    with_example(mode, "configmap", |cli, _| {
        let env = cli.wait_for("the app's environment", || {
            let l = logs(cli, "configmap", "app")?;
            Ok(l.contains("GREETING").then_some(l))
        })?;
        let want = "CFG_LOG_LEVEL=debug\nCFG_greeting=hello from a ConfigMap\nDB_PASSWORD=s3cr3t\nDB_USER=admin\nGREETING=hello from a ConfigMap\n";
        ensure!(env == want, "the app's environment: {env:?}, want {want:?}");
        Ok(())
    })?;
    let cli = Cli::new(mode)?;
    let text = std::fs::read_to_string(example("configmap"))?;
    let cases = [
        (
            text.replace("key: user}", "key: nope}"),
            "spec.containers[0].env[1].valueFrom.secretKeyRef: CreateContainerConfigError: couldn't find key nope in Secret default/app-secret",
        ),
        (
            text.replace("name: app-secret\ntype", "name: other\ntype"),
            "spec.containers[0].env[1].valueFrom.secretKeyRef: CreateContainerConfigError: secret \"app-secret\" not found",
        ),
    ];
    for (yaml, want) in cases {
        let file = cli.dir.path().join("bad.yaml");
        std::fs::write(&file, yaml)?;
        let out = cli.run(&["run", "-f", file.to_str().context("path")?])?;
        cli.assert_refused(&out, &[want])?;
    }
    Ok(())
}

/// The host directory of volume `volume` (kubelet's plugin dir `plugin`) of pod `name`:
/// under the pod's data directory embedded, under `<root>/cri/pods` in CRI mode.
fn volume_host_dir(cli: &Cli, name: &str, uid: &str, plugin: &str, volume: &str) -> PathBuf {
    let pod = match cli.ctrd {
        None => cli.root().join("pods").join(format!("default_{name}")),
        Some(_) => cli
            .root()
            .join("cri")
            .join("pods")
            .join(format!("default_{name}_{uid}")),
    };
    pod.join("volumes").join(format!("kubernetes.io~{plugin}")).join(volume)
}

/// `examples/config-volumes.yaml`: a configMap volume with items and modes, a secret
/// volume and a projected one (downward API labels, name and uid, a Secret's key, an
/// optional missing ConfigMap) read from inside the container: the files at their paths
/// with their modes (through kubelet's `..data` links), the secret and projected volumes
/// tmpfs, every volume read-only (also the one whose mount says `readOnly: false`); on the
/// host the secret's tmpfs is mounted under the pod's 0700 directory; `describe` shows the
/// volumes as kubectl does; after `delete` no mount and no directory is left (issue 15).
pub fn config_maps_secrets_and_the_downward_api_fill_read_only_volumes(mode: Mode) -> Result<()> {
    with_example(mode, "config-volumes", |cli, uid| {
        cli.wait_for("the app to run", || {
            Ok((cli.row("config-volumes")?.1 == "Running").then_some(()))
        })?;
        let sh = |cmd: &str| cli.run(&["exec", "config-volumes", "-c", "app", "--", "sh", "-c", cmd]);
        let ok = |cmd: &str| -> Result<String> {
            let out = sh(cmd)?;
            ensure!(
                out.status.success(),
                "{cmd}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        // configMap: the items only, at their paths, with their modes.
        let listed = ok(
            "ls /etc/web; ls -A /etc/web | grep -c '^\\.\\.'; readlink /etc/web/..data; readlink /etc/web/index.html",
        )?;
        let lines: Vec<&str> = listed.lines().collect();
        ensure!(
            lines.len() == 5
                && lines[..3] == ["conf", "index.html", "2"]
                && lines[3].starts_with("..20")
                && lines[4] == "..data/index.html",
            "/etc/web: {listed:?}"
        );
        let web = ok("cat /etc/web/conf/nginx.conf /etc/web/index.html; echo; stat -L -c '%n %a %U' /etc/web/conf/nginx.conf /etc/web/index.html")?;
        ensure!(
            web == "server { listen 8080; root /srv; }\n<h1>hello from a ConfigMap</h1>\n/etc/web/conf/nginx.conf 440 root\n/etc/web/index.html 600 root\n",
            "/etc/web: {web:?}"
        );
        // secret: every key, decoded (data) or as written (stringData), at defaultMode.
        let tls = ok("cat /etc/tls/tls.key; echo; cat /etc/tls/token; echo; stat -L -c '%n %a' /etc/tls/tls.key /etc/tls/token; ls /etc/tls")?;
        ensure!(
            tls == "not really a key\ns3cr3t\n/etc/tls/tls.key 400\n/etc/tls/token 400\ntls.key\ntoken\n",
            "/etc/tls: {tls:?}"
        );
        // projected: the labels as kubelet formats them, the name, the uid, the token.
        let info = ok("cat /etc/podinfo/labels; echo; cat /etc/podinfo/name; echo; cat /etc/podinfo/uid; echo; cat /etc/podinfo/token; echo; stat -L -c %a /etc/podinfo/labels; ls /etc/podinfo")?;
        let want =
            format!("app=\"web\"\ntier=\"front end\"\nconfig-volumes\n{uid}\ns3cr3t\n444\nlabels\nname\ntoken\nuid\n");
        ensure!(info == want, "/etc/podinfo: {info:?}, want {want:?}");
        // Mounts: read-only all three; secret and projected on a tmpfs.
        let mounts = ok("grep -E ' /etc/(web|tls|podinfo) ' /proc/mounts")?;
        for (dir, tmpfs) in [("/etc/web", false), ("/etc/tls", true), ("/etc/podinfo", true)] {
            let line = mounts
                .lines()
                .find(|l| l.split(' ').nth(1) == Some(dir))
                .with_context(|| format!("{dir} not mounted: {mounts}"))?;
            let f: Vec<&str> = line.split(' ').collect();
            ensure!(f[3].split(',').any(|o| o == "ro"), "{dir} is not read-only: {line}");
            ensure!(!tmpfs || f[2] == "tmpfs", "{dir} is not a tmpfs: {line}");
        }
        for file in [
            "/etc/web/new",
            "/etc/web/index.html",
            "/etc/tls/token",
            "/etc/podinfo/name",
        ] {
            let out = sh(&format!("echo x > {file}"))?;
            let err = String::from_utf8_lossy(&out.stderr);
            ensure!(
                !out.status.success() && err.contains("Read-only file system"),
                "writing {file}: {} {err}",
                out.status
            );
        }
        ensure!(ok("cat /etc/tls/token")? == "s3cr3t", "the secret changed");
        // The host: the secret's tmpfs under the pod's own 0700 volume directory.
        let tls_dir = volume_host_dir(cli, "config-volumes", uid, "secret", "tls");
        let host_mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
        let tls_mount = host_mounts
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(tls_dir.to_str().unwrap_or("")))
            .with_context(|| format!("no mount on {}", tls_dir.display()))?;
        ensure!(tls_mount.contains(" - tmpfs "), "{tls_mount}");
        let volumes = tls_dir.parent().and_then(Path::parent).context("volumes dir")?;
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(volumes)?.permissions()) & 0o7777;
        ensure!(mode == 0o700, "{}: mode {mode:o}", volumes.display());
        let web_dir = volume_host_dir(cli, "config-volumes", uid, "configmap", "web");
        ensure!(
            !host_mounts.contains(web_dir.to_str().unwrap_or("")),
            "a configMap volume is on disk, not a mount"
        );
        let described = cli.ok(&["describe", "pod", "config-volumes"])?;
        for want in [
            "  web:\n    Type:      ConfigMap (a volume populated by a ConfigMap)\n    Name:      web-config\n    Optional:  false\n",
            "  tls:\n    Type:        Secret (a volume populated by a Secret)\n    SecretName:  web-tls\n    Optional:    false\n",
            "    DownwardAPI:         true\n    SecretName:          web-tls\n    SecretOptionalName:  false\n    ConfigMapName:       web-extra\n    ConfigMapOptional:   true\n",
        ] {
            ensure!(described.contains(want), "describe lacks {want:?}:\n{described}");
        }
        Ok(())
    })
}

/// Volumes that cannot be filled fail `run` naming the field, and leave nothing: a
/// missing ConfigMap key and a path with `..` before anything exists; a container whose
/// spec is refused (subPath on an emptyDir) after the volumes were written: their tmpfs
/// unmounted and their directories removed too (issue 15).
pub fn volumes_that_cannot_be_filled_fail_the_run_and_leave_nothing(mode: Mode) -> Result<()> {
    let cli = Cli::new(mode)?;
    let text = std::fs::read_to_string(example("config-volumes"))?;
    let cases = [
        (
            text.replace("{key: index.html, path: index.html", "{key: nope, path: index.html"),
            "spec.volumes[0].configMap.items[1].key: FailedMount: MountVolume.SetUp failed for volume \"web\" : configmap references non-existent config key: nope",
        ),
        (
            text.replace("path: conf/nginx.conf", "path: ../../etc/nginx.conf"),
            "spec.volumes[0].configMap.items[0].path: \"../../etc/nginx.conf\": must not contain '..'",
        ),
        (
            text.replace("  volumes:\n", "  volumes:\n  - {name: scratch, emptyDir: {}}\n")
                .replace("    volumeMounts:\n", "    volumeMounts:\n    - {name: scratch, mountPath: /scratch, subPath: x}\n"),
            "volumeMounts[scratch].subPath: subPath on an emptyDir is not supported by peapod yet",
        ),
    ];
    for (yaml, want) in cases {
        let file = cli.dir.path().join("bad.yaml");
        std::fs::write(&file, yaml)?;
        let out = cli.run(&["run", "-f", file.to_str().context("path")?])?;
        cli.assert_refused(&out, &[want])?;
        ensure!(shims_of(&cli, "config-volumes").is_empty(), "leak: a shim runs");
    }
    Ok(())
}

/// A plain `cargo build` links `peapod-pause` dynamically, and the pause runs alone in its
/// root, where no loader exists: `run` refuses such a pause by name, with the way to build
/// the static one, before it creates anything (issue 15, a newcomer's path). `/bin/true`
/// stands in for the dynamic build.
pub fn a_dynamically_linked_pause_is_refused_before_anything_exists() -> Result<()> {
    let cli = Cli::new(Mode::Embedded)?;
    let file = cli.dir.path().join("pod.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: [sleep, '60']}]}\n",
    )?;
    let out = cli
        .command(&["run", "-f", file.to_str().context("path")?])
        .env("PEAPOD_PAUSE", "/bin/true")
        .output()?;
    cli.assert_refused(&out, &["/bin/true", "dynamically linked", "make pause"])?;
    ensure!(shims_of(&cli, "p").is_empty(), "leak: a shim for p runs");
    Ok(())
}

/// 10 containers of one pod, each with a 16 MiB limit and growing a string until the
/// kernel OOM-kills it (`awk` is PID 1, so the container ends with 137 whichever process
/// dies), all at once: `get -o json` reports each terminated with reason `OOMKilled` and
/// exit code 137, `describe` shows the ten reasons, and `get pods` the pod's status
/// `OOMKilled` (issue 16, fault injection).
pub fn ten_containers_oom_killed_at_once_are_each_oomkilled(mode: Mode) -> Result<()> {
    let cli = Cli::new(mode)?;
    let file = cli.dir.path().join("oom10.yaml");
    let containers: String = (0..10)
        .map(|i| {
            format!(
                "  - name: hog{i}\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, 'exec awk \"BEGIN {{ s = \\\"x\\\"; while (1) s = s s }}\"']\n    resources: {{limits: {{memory: 16Mi}}}}\n"
            )
        })
        .collect();
    std::fs::write(
        &file,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: oom10}}\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n  containers:\n{containers}"
        ),
    )?;
    cli.ok(&["run", "-f", file.to_str().context("path")?])?;
    let uid = uid_of(&cli, "oom10")?;
    let result = (|| {
        let statuses = cli.wait_for("all ten to end", || {
            let v = cli.pod_json("oom10")?;
            let s = v["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
            let done = s.len() == 10 && s.iter().all(|s| s["state"]["terminated"].is_object());
            Ok(done.then_some(s))
        })?;
        for s in &statuses {
            let t = &s["state"]["terminated"];
            ensure!(
                t["reason"] == "OOMKilled" && t["exitCode"] == 137,
                "{}: terminated {t}",
                s["name"]
            );
        }
        let d = cli.ok(&["describe", "pod", "oom10"])?;
        let reasons = d.matches("Reason:       OOMKilled").count();
        ensure!(reasons == 10, "describe shows {reasons} OOMKilled reasons:\n{d}");
        let (ready, status, _) = cli.row("oom10")?;
        ensure!(ready == "0/10" && status == "OOMKilled", "get pods: {ready} {status}");
        Ok(())
    })();
    let deleted = delete_and_check(&cli, "oom10", &uid);
    result?;
    deleted
}

/// The host's own IPv4 address (the source of its route to the outside, else its first
/// global address off a pod bridge): what host ports are reached at from outside the host.
fn host_ipv4() -> Result<String> {
    let route = Command::new("ip")
        .args(["-4", "-o", "route", "get", "192.0.2.123"])
        .output()?;
    let text = String::from_utf8_lossy(&route.stdout);
    let mut words = text.split_whitespace();
    if words.any(|w| w == "src") {
        if let Some(ip) = words.next() {
            if ip != "127.0.0.1" {
                return Ok(ip.to_string());
            }
        }
    }
    let addrs = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()?;
    String::from_utf8_lossy(&addrs.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (dev, addr) = (f.get(1)?, f.get(3)?);
            (!dev.starts_with("peapod") && !dev.starts_with("pp"))
                .then(|| addr.split('/').next().unwrap_or(addr).to_string())
        })
        .next()
        .context("the host has no global IPv4 address")
}

/// A TCP port nothing on the host listens on now (the kernel's pick).
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("0.0.0.0:0")?.local_addr()?.port())
}

/// `GET /` over HTTP/1.0 to `ip:port`, 2 s at most; the response.
fn http_get(ip: &str, port: u16) -> Result<String> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::new(ip.parse()?, port);
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// The nat table (`iptables-save -t nat`).
fn nat_table() -> Result<String> {
    let out = Command::new("iptables-save").args(["-t", "nat"]).output()?;
    ensure!(
        out.status.success(),
        "iptables-save: {} (Debian package iptables: make deps)",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The end of `portmap`'s comment on pod `id`'s rules as `iptables-save` prints it: the
/// comment `dnat name: "<network>" id: "<id>"` in double quotes, its own quotes escaped.
fn nat_comment_tag(id: &str) -> String {
    format!("id: \\\"{id}\\\"\"")
}

/// What the nat table holds of the pod whose CNI container id is `id`: `portmap`'s rules
/// carry `dnat name: "<network>" id: "<id>"` as their comment and jump to, or sit in, the
/// pod's chain `CNI-DN-…`. Returns (those rules, the chains' names).
fn nat_rules_of(id: &str) -> Result<(Vec<String>, Vec<String>)> {
    let text = nat_table()?;
    let tagged = nat_comment_tag(id);
    let mut chains: Vec<String> = text
        .lines()
        .filter(|l| l.contains(&tagged))
        .flat_map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|w| w.starts_with("CNI-DN-"))
        .collect();
    chains.sort();
    chains.dedup();
    let rules = text
        .lines()
        .filter(|l| l.contains(&tagged) || chains.iter().any(|c| l.contains(c.as_str())))
        .map(str::to_string)
        .collect();
    Ok((rules, chains))
}

/// Checks that the nat table holds nothing of pod `id`: no rule with its comment and
/// none of `chains` (its `CNI-DN-…` chains, as [`nat_rules_of`] found them).
fn assert_no_nat_rules(id: &str, chains: &[String]) -> Result<()> {
    let text = nat_table()?;
    let tagged = nat_comment_tag(id);
    let left: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&tagged) || chains.iter().any(|c| l.contains(c.as_str())))
        .collect();
    ensure!(left.is_empty(), "leak: nat rules of {id}: {left:#?}");
    Ok(())
}

/// Checks that a refused `run` of pod `name` left nothing while other pods run: no pod
/// state or data (embedded), no sandbox or log directory (CRI), no shim.
fn assert_never_created(cli: &Cli, name: &str) -> Result<()> {
    let key = format!("default_{name}");
    for dir in [cli.state().join("pods").join(&key), cli.root().join("pods").join(&key)] {
        ensure!(!dir.exists(), "leak: {} left", dir.display());
    }
    ensure!(shims_of(cli, name).is_empty(), "leak: a shim for {name}");
    if let Some(ctrd) = &cli.ctrd {
        let sandboxes = ctrd.cri()?.list_pod_sandbox(None)?;
        ensure!(
            !sandboxes
                .iter()
                .any(|s| s.metadata.as_ref().is_some_and(|m| m.name == name)),
            "leak: a sandbox for {name}"
        );
        let prefix = format!("{key}_");
        let logs: Vec<_> = std::fs::read_dir(cli.pod_log_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .collect();
        ensure!(logs.is_empty(), "leak: log dirs of {name}: {logs:?}");
    }
    Ok(())
}

/// `examples/hostport.yaml` (a pod name and host port of the test's own, so parallel runs
/// do not meet): busybox httpd on containerPort 8080 answers on the host's own address and
/// on 127.0.0.1 at the host port (portmap masquerades loopback connections and sets
/// `route_localnet` on the bridge); describe shows the ports; the DNAT rules exist while
/// the pod does. A second pod asking for the same host port is refused naming both pods
/// and leaves nothing (embedded: also `--network none` is refused by name). Deleting the
/// first takes its rules with it: the port no longer answers, no nat rule or chain of the
/// pod is left, and the second pod can then have the port.
pub fn host_ports_reach_the_pod_and_go_with_it(mode: Mode) -> Result<()> {
    let cli = Cli::reachable(mode)?;
    let host_ip = host_ipv4()?;
    let port = free_port()?;
    let text = std::fs::read_to_string(example("hostport"))?;
    ensure!(
        text.contains("name: hostport\n") && text.contains("hostPort: 30080"),
        "examples/hostport.yaml changed: {text}"
    );
    let manifest = |name: &str, port: u16| -> Result<String> {
        let file = cli.dir.path().join(format!("{name}.yaml"));
        let yaml = text
            .replace("name: hostport\n", &format!("name: {name}\n"))
            .replace("hostPort: 30080", &format!("hostPort: {port}"));
        std::fs::write(&file, yaml)?;
        Ok(file.to_str().context("path")?.to_string())
    };
    let first = peapod_tests::cri::unique_name("hostport");
    let second = peapod_tests::cri::unique_name("hostport");
    cli.ok(&["run", "-f", &manifest(&first, port)?])?;
    let uid = uid_of(&cli, &first)?;
    let id = cli.cni_id(&first)?;
    let checked = (|| -> Result<Vec<String>> {
        let hello = format!("hello from {first}");
        let body = wait_for_web_server(&cli, &first, &id, &host_ip, port)?;
        ensure!(body.contains(&hello), "{host_ip}:{port} answered {body:?}");
        let body = http_get("127.0.0.1", port).context("127.0.0.1 at the host port")?;
        ensure!(body.contains(&hello), "127.0.0.1:{port} answered {body:?}");
        let d = cli.ok(&["describe", "pod", &first])?;
        for want in [
            "    Port:           8080/TCP (http)\n".to_string(),
            format!("    Host Port:      {port}/TCP\n"),
        ] {
            ensure!(d.contains(&want), "describe lacks {want:?}:\n{d}");
        }
        let (rules, chains) = nat_rules_of(&id)?;
        ensure!(
            rules
                .iter()
                .any(|r| r.contains(&format!("--dport {port}")) && r.contains("DNAT")),
            "no DNAT rule for host port {port} of {id}: {rules:#?}"
        );

        let out = cli.run(&["run", "-f", &manifest(&second, port)?])?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(out.status.code() == Some(1), "second pod: exit {:?}: {err}", out.status);
        let want = format!(
            "pod {second}: spec.containers[0].ports[0].hostPort: host port {port}/TCP on 0.0.0.0 is already held by pod default/{first} (spec.containers[0].ports[0].hostPort)"
        );
        ensure!(err.contains(&want), "want {want:?} in: {err}");
        if mode == Mode::Embedded {
            let other = free_port()?;
            let out = cli.run(&["run", "--network", "none", "-f", &manifest(&second, other)?])?;
            let err = String::from_utf8_lossy(&out.stderr);
            let want = "spec.containers[0].ports[0].hostPort: cannot be mapped with --network none";
            ensure!(
                out.status.code() == Some(1) && err.contains(want),
                "exit {:?}, want {want:?} in: {err}",
                out.status
            );
        }
        let listed = cli.ok(&["get", "pods"])?;
        ensure!(
            listed.lines().count() == 2 && !listed.contains(&second),
            "a refused run left a pod: {listed}"
        );
        assert_never_created(&cli, &second)?;
        Ok(chains)
    })();
    if checked.is_err() {
        let _ = cli.run(&["delete", "pod", &second, "--grace-period", "0"]);
    }
    let deleted = delete_and_check(&cli, &first, &uid);
    let chains = checked?;
    deleted?;
    ensure!(
        http_get(&host_ip, port).is_err(),
        "{host_ip}:{port} still answers after the pod's deletion"
    );
    assert_no_nat_rules(&id, &chains)?;

    // The port is free again.
    cli.ok(&["run", "-f", &manifest(&second, port)?])?;
    let uid2 = uid_of(&cli, &second)?;
    let id2 = cli.cni_id(&second)?;
    let again = wait_for_web_server(&cli, &second, &id2, &host_ip, port);
    let chains2 = nat_rules_of(&id2).map(|(_, chains)| chains);
    delete_and_check(&cli, &second, &uid2)?;
    let body = again?;
    ensure!(body.contains(&format!("hello from {second}")), "{body:?}");
    assert_no_nat_rules(&id2, &chains2?)?;
    cli.assert_no_runtime_leftovers()
}

/// Waits until pod `name` (sandbox `id`) answers HTTP 200 at `host_ip:port`. On timeout
/// the error carries the last connection error and what tells where the path broke: the
/// pod's own answer at its IP, its description and the nat rules tagged with its id.
fn wait_for_web_server(cli: &Cli, name: &str, id: &str, host_ip: &str, port: u16) -> Result<String> {
    let waited = cli.wait_for(&format!("the web server of {name} at {host_ip}:{port}"), || {
        let body = http_get(host_ip, port)?;
        ensure!(body.contains("200 OK"), "answered {body:?}");
        Ok(Some(body))
    });
    waited.map_err(|e| {
        let pod_ip = cli
            .pod_json(name)
            .map(|p| p["status"]["podIP"].as_str().map(str::to_string));
        let direct = match &pod_ip {
            Ok(Some(ip)) => match http_get(ip, 8080) {
                Ok(b) => format!("{ip}:8080 answers {b:?}"),
                Err(e) => format!("{ip}:8080 fails too: {e:#}"),
            },
            Ok(None) => "the pod has no status.podIP".to_string(),
            Err(e) => format!("no pod IP: {e:#}"),
        };
        let describe = cli.ok(&["describe", "pod", name]).unwrap_or_else(|e| format!("{e:#}"));
        let nat = nat_rules_of(id)
            .map(|(rules, _)| rules.join("\n"))
            .unwrap_or_else(|e| format!("{e:#}"));
        e.context(format!("{direct}\n{describe}\nnat rules of {id}:\n{nat}"))
    })
}

/// `portmap`'s shared nat chains: the DNAT entry chain (jumped to from `PREROUTING` and
/// `OUTPUT`) and the masquerade marking ones (`POSTROUTING` jumps to the last).
const PORTMAP_CHAINS: [&str; 3] = ["CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ"];

/// Whether the nat table has `portmap`'s shared chains (host ports were mapped on this
/// host since boot).
pub fn portmap_chains_exist() -> bool {
    nat_table().is_ok_and(|t| t.lines().any(|l| l.starts_with(":CNI-HOSTPORT-DNAT ")))
}

/// Removes `portmap`'s shared chains and the jumps to them when no pod's chain hangs off
/// them any more (`portmap` itself never removes them): the suite's counterpart of
/// removing the `peapod0` bridge it created. Leaves them when some pod's mapping is still
/// in place.
pub fn remove_idle_portmap_chains() -> Result<()> {
    let text = nat_table()?;
    if text.lines().any(|l| l.starts_with("-A CNI-HOSTPORT-DNAT ")) {
        return Ok(());
    }
    let iptables = |args: &[&str]| -> Result<String> {
        let out = Command::new("iptables").arg("-t").arg("nat").args(args).output()?;
        ensure!(
            out.status.success(),
            "iptables -t nat {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    for chain in ["PREROUTING", "OUTPUT", "POSTROUTING"] {
        let rules = iptables(&["-S", chain])?;
        let jumps: Vec<usize> = rules
            .lines()
            .filter(|l| l.starts_with("-A "))
            .enumerate()
            .filter(|(_, l)| PORTMAP_CHAINS.iter().any(|c| l.contains(&format!("-j {c}"))))
            .map(|(i, _)| i + 1)
            .collect();
        for n in jumps.into_iter().rev() {
            iptables(&["-D", chain, &n.to_string()])?;
        }
    }
    for chain in PORTMAP_CHAINS {
        if text.lines().any(|l| l.starts_with(&format!(":{chain} "))) {
            iptables(&["-F", chain])?;
            iptables(&["-X", chain])?;
        }
    }
    Ok(())
}
