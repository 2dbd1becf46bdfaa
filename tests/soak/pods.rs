//! One soak pod, through CRI (as the kubelet drives containerd) and through embedded mode
//! (`peapod::runner`, as `peapod run` does). The pod is the same in both:
//!
//! - an init container writing `/data/disk/init` (it must exit 0 before the rest start);
//! - a native sidecar (`restartPolicy: Always` init container: under CRI, a container the
//!   kubelet starts and waits for before the app), `sleep`;
//! - an app with a CPU limit (500m: quota 50 ms per 100 ms) and a memory limit (64 MiB),
//!   mounting two emptyDirs, one on disk and one of medium `Memory` (under CRI the
//!   kubelet's part: a host dir and a tmpfs the harness mounts and unmounts);
//! - a share of the apps (every `SOAK_FAIL_EVERY`th pod) exits 3 on its first run: embedded
//!   mode restarts it (`restartPolicy: OnFailure`), under CRI the harness replaces it as
//!   the kubelet would (RemoveContainer, CreateContainer with attempt 1); the second run
//!   finds the marker the first left on the disk emptyDir and stays up.
//!
//! With the app running: an exec (`ExecSync` / `runner::exec`, bounded by
//! `SOAK_EXEC_TIMEOUT`: an exec that does not finish is reported as hung, with the pod,
//! and the pod is torn down), a log read (the app's `app ready` line) and a stats call
//! (`ContainerStats` / the shim's `Stats`). Then the pod is deleted, timed.

use std::fs;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use peapod::runner::{self, PodRecord};
use peapod_tests::containerd::Containerd;
use peapod_tests::cri::{self, api, container_config, CriClient, Pod};
use peapod_tests::embedded::Embedded;

/// The app's script: fails once when `fail` (leaving a marker on the disk emptyDir), else
/// checks the init container's file, writes to the Memory emptyDir and logs `app ready`.
fn app_script(fail: bool) -> String {
    let ready = "cat /data/disk/init && echo hello > /data/mem/hello && echo app ready && exec sleep 3600";
    if fail {
        format!("if [ -e /data/disk/failed ]; then {ready}; else touch /data/disk/failed; echo failing; exit 3; fi")
    } else {
        ready.to_string()
    }
}

const INIT_SCRIPT: &str = "echo init > /data/disk/init";
const SIDECAR_SCRIPT: &str = "echo sidecar; exec sleep 3600";
/// What the exec runs and must print.
const EXEC_SCRIPT: &str = "cat /data/disk/init /data/mem/hello";
const EXEC_OUTPUT: &str = "init\nhello\n";
/// Bound of every wait for a container state.
const STATE_TIMEOUT: Duration = Duration::from_secs(60);

/// What one pod took, and what happened to it.
#[derive(Debug, Default)]
pub struct PodResult {
    /// Start until the app runs (for a failing app: its second run), ms.
    pub ready_ms: Option<f64>,
    /// Delete (StopPodSandbox + RemovePodSandbox, or `runner::delete`), ms.
    pub teardown_ms: Option<f64>,
    /// Whether the app failed once and was replaced or restarted.
    pub replaced: bool,
    /// An exec that did not finish within the timeout: what it was.
    pub hung_exec: Option<String>,
    /// What went wrong (the pod was still torn down).
    pub error: Option<String>,
}

/// Runs `f` in a thread and waits up to `timeout` for it; `None` when it did not finish
/// (the thread is left to end when its call fails, at the pod's teardown).
fn bounded<T: Send + 'static>(timeout: Duration, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(timeout).ok()
}

/// The kubelet's part of a CRI pod's emptyDirs: `<instance>/volumes/<pod>/{disk,mem}`, a
/// tmpfs on `mem`.
struct HostVolumes {
    dir: PathBuf,
}

impl HostVolumes {
    fn create(ctrd: &Containerd, pod: &str) -> Result<Self> {
        let dir = ctrd.dir().join("volumes").join(pod);
        fs::create_dir_all(dir.join("disk"))?;
        fs::create_dir_all(dir.join("mem"))?;
        let v = HostVolumes { dir };
        mount(
            Some("tmpfs"),
            &v.dir.join("mem"),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("size=16m"),
        )
        .with_context(|| format!("mount tmpfs on {}", v.dir.join("mem").display()))?;
        Ok(v)
    }

    fn mounts(&self) -> Vec<api::Mount> {
        [("disk", "/data/disk"), ("mem", "/data/mem")]
            .into_iter()
            .map(|(host, path)| api::Mount {
                container_path: path.into(),
                host_path: self.dir.join(host).display().to_string(),
                ..Default::default()
            })
            .collect()
    }

    fn remove(&self) -> Result<()> {
        umount2(&self.dir.join("mem"), MntFlags::MNT_DETACH)
            .with_context(|| format!("unmount {}", self.dir.join("mem").display()))?;
        fs::remove_dir_all(&self.dir).with_context(|| format!("remove {}", self.dir.display()))
    }
}

fn app_config(fail: bool, attempt: u32, vols: &HostVolumes) -> api::ContainerConfig {
    let script = app_script(fail);
    let mut c = container_config("app", &["sh", "-c", &script]);
    c.metadata.as_mut().expect("metadata").attempt = attempt;
    c.log_path = format!("app/{attempt}.log");
    c.mounts = vols.mounts();
    let linux = c.linux.as_mut().expect("linux");
    linux.resources = Some(api::LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        memory_limit_in_bytes: 64 << 20,
        ..Default::default()
    });
    c
}

/// One pod through CRI with `handler`; `fail`: the app fails once and is replaced.
pub fn cri_pod(ctrd: &Containerd, cri: &CriClient, handler: &str, fail: bool, exec_timeout: Duration) -> PodResult {
    let mut result = PodResult {
        replaced: fail,
        ..Default::default()
    };
    let config = match cri::pod_config(ctrd, "soak") {
        Ok(c) => c,
        Err(e) => {
            result.error = Some(format!("pod config: {e:#}"));
            return result;
        }
    };
    let name = config.metadata.as_ref().map_or(String::new(), |m| m.name.clone());
    let vols = match HostVolumes::create(ctrd, &name) {
        Ok(v) => v,
        Err(e) => {
            result.error = Some(format!("{name}: emptyDirs: {e:#}"));
            return result;
        }
    };
    let begun = Instant::now();
    let pod = Pod::run_config(cri, config, handler);
    let outcome = pod.as_ref().map_err(|e| anyhow::anyhow!("{e:#}")).and_then(|pod| {
        let wait = |id: &str, state| cri::wait_container_state(cri, id, state, STATE_TIMEOUT);
        let mut init = container_config("init", &["sh", "-c", INIT_SCRIPT]);
        init.mounts = vols.mounts();
        let init_id = pod.start(cri, &init)?;
        let s = wait(&init_id, api::ContainerState::ContainerExited)?;
        ensure!(s.exit_code == 0, "init container exited {}", s.exit_code);
        let sidecar_id = pod.start(cri, &container_config("sidecar", &["sh", "-c", SIDECAR_SCRIPT]))?;
        wait(&sidecar_id, api::ContainerState::ContainerRunning)?;
        let mut app_id = pod.start(cri, &app_config(fail, 0, &vols))?;
        let mut attempt = 0;
        if fail {
            let s = wait(&app_id, api::ContainerState::ContainerExited)?;
            ensure!(s.exit_code == 3, "the failing app exited {}, not 3", s.exit_code);
            cri.remove_container(&app_id)?;
            attempt = 1;
            app_id = pod.start(cri, &app_config(fail, attempt, &vols))?;
        }
        wait(&app_id, api::ContainerState::ContainerRunning)?;
        result.ready_ms = Some(begun.elapsed().as_secs_f64() * 1000.0);
        // The log read: the app's `app ready` line (written after the Memory emptyDir).
        let log = pod.log_dir.join(format!("app/{attempt}.log"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cri::read_log(&log)
            .unwrap_or_default()
            .iter()
            .any(|l| l.message == "app ready")
        {
            ensure!(
                Instant::now() < deadline,
                "no `app ready` in {} within 10 s",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        match cri.exec_sync(&app_id, &["sh", "-c", EXEC_SCRIPT], exec_timeout) {
            Ok(out) => {
                let stdout = String::from_utf8_lossy(&out.stdout);
                ensure!(
                    out.exit_code == 0 && stdout == EXEC_OUTPUT,
                    "ExecSync exited {} with {stdout:?} (stderr {:?})",
                    out.exit_code,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Err(e) => {
                let timed_out = matches!(e, proto::cri::Error::Timeout { .. })
                    || e.code() == Some(proto::cri::Code::DeadlineExceeded);
                if timed_out {
                    result.hung_exec = Some(format!(
                        "pod {name} (sandbox {}), container {app_id}: ExecSync `{EXEC_SCRIPT}` did not finish within \
                         {exec_timeout:?}: {e}",
                        pod.id
                    ));
                    return Ok(());
                }
                return Err(e.into());
            }
        }
        let stats = cri.container_stats(&app_id)?;
        ensure!(
            stats.memory.is_some() && stats.cpu.is_some(),
            "ContainerStats of {app_id} lacks memory or CPU: {stats:?}"
        );
        Ok(())
    });
    if let Err(e) = outcome {
        result.error = Some(format!("{name}: {e:#}"));
    }
    if let Ok(pod) = &pod {
        let t = Instant::now();
        match pod.remove(cri) {
            Ok(()) => result.teardown_ms = Some(t.elapsed().as_secs_f64() * 1000.0),
            Err(e) => {
                let msg = format!("{name}: teardown: {e:#}");
                result.error = Some(result.error.map_or(msg.clone(), |m| format!("{m}; {msg}")));
            }
        }
    }
    if let Err(e) = vols.remove() {
        result.error.get_or_insert(format!("{name}: {e:#}"));
    }
    let _ = fs::remove_dir_all(ctrd.pod_log_dir(&name));
    result
}

fn volume_mounts(mem: bool) -> &'static str {
    if mem {
        "[{name: disk, mountPath: /data/disk}, {name: mem, mountPath: /data/mem}]"
    } else {
        "[{name: disk, mountPath: /data/disk}]"
    }
}

/// Waits until the sidecar and the app run; for a failing app, until it runs again after
/// its restart. Returns the app's restart count.
fn wait_embedded(e: &Embedded, record: &PodRecord, fail: bool) -> Result<i32> {
    let deadline = Instant::now() + STATE_TIMEOUT;
    loop {
        let view = runner::observe(e.paths(), record);
        let statuses = view.status.container_statuses.clone().unwrap_or_default();
        let app = statuses.iter().find(|c| c.name == "app");
        let restarts = app.map_or(0, |a| a.restart_count);
        let (_, containers) = runner::status(e.paths(), record);
        let running = |n: &str| containers.iter().any(|c| c.name == n && c.state == "running");
        if running("sidecar") && running("app") && (!fail || restarts >= 1) {
            return Ok(restarts);
        }
        if Instant::now() >= deadline {
            bail!(
                "pod {} not ready within {STATE_TIMEOUT:?}: {containers:?}, app restarts {restarts}",
                record.key
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One pod through embedded mode; `fail`: the app fails once and the shim restarts it.
pub fn embedded_pod(e: &Embedded, fail: bool, exec_timeout: Duration) -> PodResult {
    let mut result = PodResult {
        replaced: fail,
        ..Default::default()
    };
    let init = format!(
        "  - {{name: init, image: busybox, command: [sh, -c, '{INIT_SCRIPT}'], volumeMounts: {}}}\n  - {{name: \
         sidecar, image: busybox, restartPolicy: Always, command: [sh, -c, '{SIDECAR_SCRIPT}']}}\n",
        volume_mounts(false)
    );
    let app = format!(
        "  - {{name: app, image: busybox, command: [sh, -c, '{}'], resources: {{limits: {{cpu: 500m, memory: 64Mi}}}}, \
         volumeMounts: {}}}\n",
        app_script(fail),
        volume_mounts(true)
    );
    let volumes = "  - {name: disk, emptyDir: {}}\n  - {name: mem, emptyDir: {medium: Memory, sizeLimit: 16Mi}}\n";
    let plan = match e.plan("soak", "OnFailure", &init, &app, volumes) {
        Ok(p) => p,
        Err(err) => {
            result.error = Some(format!("plan: {err:#}"));
            return result;
        }
    };
    let begun = Instant::now();
    let record = match e.run(&plan) {
        Ok(r) => r,
        Err(err) => {
            result.error = Some(format!("{}: {err:#}", plan.name));
            // `run` cleans up after itself; delete whatever it recorded anyway.
            let _ = runner::delete(e.paths(), &runner::key(&plan.namespace, &plan.name), Some(0));
            return result;
        }
    };
    let outcome = (|| -> Result<()> {
        let restarts = wait_embedded(e, &record, fail)?;
        result.ready_ms = Some(begun.elapsed().as_secs_f64() * 1000.0);
        ensure!(restarts == i32::from(fail), "app restarted {restarts} times");
        let log = record.log_path(e.paths(), "app");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !fs::read_to_string(&log).unwrap_or_default().contains("app ready") {
            ensure!(
                Instant::now() < deadline,
                "no `app ready` in {} within 10 s",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let rec = record.clone();
        let cmd = vec!["sh".to_string(), "-c".to_string(), EXEC_SCRIPT.to_string()];
        match bounded(exec_timeout, move || {
            runner::exec(&rec, "app", &cmd).map_err(anyhow::Error::from)
        }) {
            None => {
                result.hung_exec = Some(format!(
                    "pod {} (sandbox {}): exec `{EXEC_SCRIPT}` in app did not finish within {exec_timeout:?}",
                    record.key, record.sandbox_id
                ));
                return Ok(());
            }
            Some(out) => {
                let (code, stdout, stderr) = out.context("runner::exec")?;
                let stdout = String::from_utf8_lossy(&stdout);
                ensure!(
                    code == 0 && stdout == EXEC_OUTPUT,
                    "exec exited {code} with {stdout:?} (stderr {:?})",
                    String::from_utf8_lossy(&stderr)
                );
            }
        }
        let (type_url, metrics) = runner::stats(&record, "app").context("runner::stats")?;
        ensure!(
            type_url.contains("Metrics") && !metrics.is_empty(),
            "the shim's Stats of app: {type_url:?}, {} bytes",
            metrics.len()
        );
        Ok(())
    })();
    if let Err(err) = outcome {
        result.error = Some(format!("{}: {err:#}", record.key));
    }
    let t = Instant::now();
    match e.delete(&record) {
        Ok(()) => result.teardown_ms = Some(t.elapsed().as_secs_f64() * 1000.0),
        Err(err) => {
            let msg = format!("{}: teardown: {err:#}", record.key);
            result.error = Some(result.error.map_or(msg.clone(), |m| format!("{m}; {msg}")));
        }
    }
    result
}
