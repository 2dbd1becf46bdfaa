//! The `peapod` CLI's embedded mode: a pod from a [`PodPlan`] run by
//! `containerd-shim-peapod-v2` without containerd.
//!
//! `run`: images resolved first (a missing one fails the pod with `ErrImagePull` before
//! anything exists), the pod recorded, the sandbox (pause) task created and started, the
//! pod network attached to its network namespace through CNI, every container's bundle
//! written and its task created in declaration order, then all containers started at
//! once: the shim orders them (init containers, sidecars, apps). `delete`: SIGTERM to the
//! sandbox task (the shim signals every container at once, waits the grace period,
//! SIGKILLs the rest, ends the pause process), then every task deleted, CNI DEL, and the
//! pod's directories removed.
//!
//! Paths: `<state>/pods/<namespace>_<name>/` (tmpfs: `pod.json`, bundles) and
//! `<root>/pods/<namespace>_<name>/` (disk: container layers' upper dirs, logs),
//! `<root>/images` (the image store), `<root>/cni` (IPAM).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::cni::Network;
use crate::embedded::{Shim, TaskIo};
use crate::images::Store;
use crate::manifest::{ContainerPlan, PodPlan};
use crate::pods::{container_spec, sandbox_spec, ImageConfig, PodRuntime};

/// Where the CLI keeps things.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Persistent data: `/var/lib/peapod` (`--root`, `$PEAPOD_ROOT`).
    pub root: PathBuf,
    /// Runtime state: `/run/peapod` (`--state`, `$PEAPOD_STATE`).
    pub state: PathBuf,
}

impl Paths {
    fn pod_state(&self, key: &str) -> PathBuf {
        self.state.join("pods").join(key)
    }

    fn pod_data(&self, key: &str) -> PathBuf {
        self.root.join("pods").join(key)
    }

    /// The image store.
    pub fn images(&self) -> Result<Store> {
        Ok(Store::open(&self.root.join("images"))?)
    }
}

/// How the pod reaches the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkMode {
    /// peapod's CNI bridge (default).
    Cni,
    /// Loopback only.
    None,
    /// The host's network (`hostNetwork: true`).
    Host,
}

/// What `run` recorded of a pod (`pod.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRecord {
    /// `<namespace>_<name>`.
    pub key: String,
    /// The checked manifest.
    pub plan: PodPlan,
    /// `metadata.uid`.
    pub uid: String,
    /// The sandbox task id.
    pub sandbox_id: String,
    /// The shim's address.
    pub shim_address: String,
    /// (container name, task id), declaration order.
    pub containers: Vec<(String, String)>,
    /// Network mode.
    pub network: NetworkMode,
    /// The pod IP.
    pub ip: Option<String>,
    /// CNI ADD's result, for DEL.
    pub cni_result: Option<String>,
    /// Creation time, seconds since the epoch.
    pub created: u64,
}

impl PodRecord {
    fn save(&self, paths: &Paths) -> Result<()> {
        let dir = paths.pod_state(&self.key);
        fs::create_dir_all(&dir)?;
        let tmp = dir.join("pod.json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        fs::rename(&tmp, dir.join("pod.json"))?;
        Ok(())
    }

    /// The log file of container `name`.
    pub fn log_path(&self, paths: &Paths, name: &str) -> PathBuf {
        paths.pod_data(&self.key).join("logs").join(format!("{name}.log"))
    }

    /// The task id of container `name`.
    pub fn task_id(&self, name: &str) -> Option<&str> {
        self.containers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| id.as_str())
    }
}

/// The pod's key, `<namespace>_<name>`.
pub fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}_{name}")
}

/// Every recorded pod.
pub fn list(paths: &Paths) -> Result<Vec<PodRecord>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(paths.state.join("pods")).into_iter().flatten().flatten() {
        if let Ok(text) = fs::read(entry.path().join("pod.json")) {
            out.push(serde_json::from_slice(&text).with_context(|| format!("{}", entry.path().display()))?);
        }
    }
    out.sort_by(|a: &PodRecord, b| a.key.cmp(&b.key));
    Ok(out)
}

/// The pod recorded under `key`.
pub fn load(paths: &Paths, key: &str) -> Result<PodRecord> {
    let path = paths.pod_state(key).join("pod.json");
    let text = fs::read(&path).with_context(|| format!("pod {key:?} not found ({})", path.display()))?;
    Ok(serde_json::from_slice(&text)?)
}

fn new_uid() -> String {
    fs::read_to_string("/proc/sys/kernel/random/uuid").map_or_else(|_| format!("{:x}", now()), |u| u.trim().to_string())
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Binaries the runner starts, next to the running `peapod` (or in the cargo `pause`
/// dir for a development tree).
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `containerd-shim-peapod-v2`.
    pub shim: PathBuf,
    /// The static `peapod-pause`.
    pub pause: PathBuf,
}

impl Binaries {
    /// Finds them: `$PEAPOD_SHIM` / `$PEAPOD_PAUSE`, else next to our executable
    /// (`target/pause/peapod-pause` in a cargo tree, where `make pause` puts the static one).
    pub fn find() -> Result<Binaries> {
        let exe = std::env::current_exe()?;
        let dir = exe.parent().context("executable has no directory")?.to_path_buf();
        let pick = |var: &str, candidates: Vec<PathBuf>| -> Result<PathBuf> {
            if let Some(p) = std::env::var_os(var) {
                return Ok(PathBuf::from(p));
            }
            candidates
                .into_iter()
                .find(|p| p.is_file())
                .with_context(|| format!("cannot find it: set {var} (make install puts it next to peapod)"))
        };
        let cargo_pause = dir.parent().map(|t| t.join("pause/peapod-pause")).unwrap_or_default();
        Ok(Binaries {
            shim: pick("PEAPOD_SHIM", vec![dir.join("containerd-shim-peapod-v2")])
                .context("containerd-shim-peapod-v2")?,
            pause: pick("PEAPOD_PAUSE", vec![cargo_pause, dir.join("peapod-pause")]).context("peapod-pause")?,
        })
    }
}

/// Runs a pod; returns its record. On error everything created is removed again.
pub fn run(
    paths: &Paths,
    bins: &Binaries,
    plan: &PodPlan,
    network: NetworkMode,
    progress: &dyn Fn(&str),
) -> Result<PodRecord> {
    let key = key(&plan.namespace, &plan.name);
    if paths.pod_state(&key).join("pod.json").exists() {
        bail!("pod {} already exists in namespace {}", plan.name, plan.namespace);
    }
    // Images first: a missing one fails the pod before anything exists.
    let store = paths.images()?;
    let mut images = Vec::new();
    for c in &plan.containers {
        let name = crate::images::normalize(&c.image)?;
        let image = store
            .resolve(&name)
            .with_context(|| format!("container {}: image {name}", c.name))?;
        images.push(image);
    }
    let network = if plan.host_network { NetworkMode::Host } else { network };
    let mut record = PodRecord {
        key: key.clone(),
        plan: plan.clone(),
        uid: new_uid(),
        sandbox_id: key.clone(),
        shim_address: String::new(),
        containers: plan
            .containers
            .iter()
            .map(|c| (c.name.clone(), format!("{key}_{}", c.name)))
            .collect(),
        network,
        ip: None,
        cni_result: None,
        created: now(),
    };
    record.save(paths)?;
    match run_inner(paths, bins, &mut record, &images, progress) {
        Ok(()) => Ok(record),
        Err(e) => {
            let _ = delete_record(paths, &record, Some(0));
            Err(e)
        }
    }
}

fn run_inner(
    paths: &Paths,
    bins: &Binaries,
    record: &mut PodRecord,
    images: &[crate::images::Image],
    progress: &dyn Fn(&str),
) -> Result<()> {
    let plan = record.plan.clone();
    let state = paths.pod_state(&record.key);
    let data = paths.pod_data(&record.key);
    let mut rt = PodRuntime {
        uid: record.uid.clone(),
        sandbox_id: record.sandbox_id.clone(),
        pause_pid: 0,
        ip: String::new(),
        clamp_oom_score_adj: !crate::pods::can_lower_oom_score_adj(),
    };

    // The sandbox: peapod-pause alone in its rootfs.
    let sandbox_bundle = state.join("bundles").join("sandbox");
    fs::create_dir_all(sandbox_bundle.join("rootfs"))?;
    fs::copy(&bins.pause, sandbox_bundle.join("rootfs/pause"))
        .with_context(|| format!("copy {}", bins.pause.display()))?;
    fs::write(
        sandbox_bundle.join("config.json"),
        serde_json::to_vec_pretty(&sandbox_spec(&plan, &rt))?,
    )?;
    progress("starting the pod sandbox");
    let shim = Shim::start(&bins.shim, &record.sandbox_id, &sandbox_bundle)?;
    record.shim_address = shim.address().to_string();
    record.save(paths)?;
    let pid = shim.create(&record.sandbox_id, &sandbox_bundle, &[], &TaskIo::default())?;
    shim.start_task(&record.sandbox_id, "")?;
    rt.pause_pid = i32::try_from(pid)?;

    let netns = format!("/proc/{pid}/ns/net");
    match record.network {
        NetworkMode::Cni => {
            progress("attaching the pod network");
            let att = Network::peapod_default(&paths.root.join("cni")).add(&record.sandbox_id, &netns, "eth0")?;
            record.ip = att.ip.clone();
            record.cni_result = Some(att.result);
            record.save(paths)?;
            Network::loopback().add(&record.sandbox_id, &netns, "lo")?;
        }
        NetworkMode::None => {
            Network::loopback().add(&record.sandbox_id, &netns, "lo")?;
        }
        NetworkMode::Host => {}
    }
    rt.ip = record.ip.clone().unwrap_or_default();

    fs::create_dir_all(data.join("logs"))?;
    for (c, image) in plan.containers.iter().zip(images) {
        progress(&format!("creating container {}", c.name));
        create_task(paths, &shim, record, &rt, c, image)?;
    }

    // Started all at once; the shim holds each back until its turn (KEP-753 order).
    progress("starting containers");
    let starts: Vec<_> = record
        .containers
        .iter()
        .map(|(name, id)| {
            let (name, id, address) = (name.clone(), id.clone(), record.shim_address.clone());
            std::thread::spawn(move || {
                Shim::connect(&address)
                    .and_then(|s| s.start_task(&id, ""))
                    .map_err(|e| (name, e))
            })
        })
        .collect();
    let mut errors = Vec::new();
    for s in starts {
        if let Err((name, e)) = s.join().expect("start thread") {
            errors.push(format!("{name}: {e}"));
        }
    }
    if !errors.is_empty() {
        // An init container that failed is the pod's business (Failed phase), not run's.
        progress(&format!("some containers did not start: {}", errors.join("; ")));
    }
    Ok(())
}

/// Writes container `c`'s bundle (spec, rootfs dir) and its layer's upper and work dirs,
/// and creates its task in the pod's shim (task id from `record`), logging to its file.
fn create_task(
    paths: &Paths,
    shim: &Shim,
    record: &PodRecord,
    rt: &PodRuntime,
    c: &ContainerPlan,
    image: &crate::images::Image,
) -> Result<()> {
    let task_id = record.task_id(&c.name).context("container not recorded")?;
    let bundle = paths.pod_state(&record.key).join("bundles").join(&c.name);
    fs::create_dir_all(bundle.join("rootfs"))?;
    let layer = paths.pod_data(&record.key).join("layers").join(&c.name);
    let (upper, work) = (layer.join("upper"), layer.join("work"));
    fs::create_dir_all(&upper)?;
    fs::create_dir_all(&work)?;
    let config = ImageConfig {
        entrypoint: image.entrypoint.clone(),
        cmd: image.cmd.clone(),
        env: image.env.clone(),
        working_dir: image.working_dir.clone().unwrap_or_default(),
        user: image.user.clone().unwrap_or_default(),
    };
    let spec = container_spec(&record.plan, c, &config, rt)?;
    fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&spec)?)?;
    let log = record.log_path(paths, &c.name);
    let io = TaskIo {
        stdout: format!("file://{}", log.display()),
        stderr: format!("file://{}", log.display()),
        terminal: c.tty,
        ..Default::default()
    };
    shim.create(task_id, &bundle, &[image.rootfs_mount(&upper, &work)], &io)?;
    Ok(())
}

/// Creates and starts one more container in the running pod `record`, as CRI's
/// CreateContainer + StartContainer do in a pod containerd already runs: its image
/// resolved, its bundle written, its task created and started in the pod's shim (which
/// holds an app back until the pod's sidecars run, KEP-753). The record and `pod.json`
/// gain it (task id `<key>_<name>`). Returns the task id once the start call returned.
///
/// Errors: a name already in the pod, an image not in the store, a pod whose shim or
/// sandbox is gone, or the shim's refusal; whatever was created for the container is
/// removed again.
pub fn add_container(paths: &Paths, record: &mut PodRecord, c: &ContainerPlan) -> Result<String> {
    if record.task_id(&c.name).is_some() {
        bail!("pod {} already has a container {}", record.plan.name, c.name);
    }
    let image_name = crate::images::normalize(&c.image)?;
    let image = paths
        .images()?
        .resolve(&image_name)
        .with_context(|| format!("container {}: image {image_name}", c.name))?;
    let shim = Shim::connect(&record.shim_address)?;
    let pause_pid = shim
        .state(&record.sandbox_id, "")
        .context("the pod's sandbox task")?
        .pid;
    let rt = PodRuntime {
        uid: record.uid.clone(),
        sandbox_id: record.sandbox_id.clone(),
        pause_pid: i32::try_from(pause_pid)?,
        ip: record.ip.clone().unwrap_or_default(),
        clamp_oom_score_adj: !crate::pods::can_lower_oom_score_adj(),
    };
    let task_id = format!("{}_{}", record.key, c.name);
    record.plan.containers.push(c.clone());
    record.containers.push((c.name.clone(), task_id.clone()));
    let started = (|| -> Result<()> {
        create_task(paths, &shim, record, &rt, c, &image)?;
        record.save(paths)?;
        shim.start_task(&task_id, "")?;
        Ok(())
    })();
    match started {
        Ok(()) => Ok(task_id),
        Err(e) => {
            let _ = remove_container(paths, record, &c.name);
            Err(e.context(format!("add container {} to pod {}", c.name, record.plan.name)))
        }
    }
}

/// Waits until container `name` of the pod has exited; returns its exit status (128 +
/// signal number for a signalled process).
pub fn wait_container(record: &PodRecord, name: &str) -> Result<u32> {
    let id = record
        .task_id(name)
        .with_context(|| format!("no container {name:?} in pod {}", record.plan.name))?;
    Ok(Shim::connect(&record.shim_address)?.wait(id, "")?)
}

/// Removes container `name` from the running pod, as CRI's RemoveContainer does: SIGKILL
/// if it still runs, its task deleted (the shim removes its cgroup and rootfs mount), its
/// bundle, layer and log removed; the record and `pod.json` forget it.
pub fn remove_container(paths: &Paths, record: &mut PodRecord, name: &str) -> Result<()> {
    let id = record
        .task_id(name)
        .with_context(|| format!("no container {name:?} in pod {}", record.plan.name))?
        .to_string();
    let shim = Shim::connect(&record.shim_address)?;
    if shim.state(&id, "").is_ok() {
        let _ = shim.kill(&id, "", 9, true);
        let _ = shim.wait(&id, "");
        shim.delete(&id, "").with_context(|| format!("delete task {id}"))?;
    }
    for dir in [
        paths.pod_state(&record.key).join("bundles").join(name),
        paths.pod_data(&record.key).join("layers").join(name),
    ] {
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("remove {}", dir.display())),
        }
    }
    let log = record.log_path(paths, name);
    match fs::remove_file(&log) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("remove {}", log.display())),
    }
    record.containers.retain(|(n, _)| n != name);
    record.plan.containers.retain(|c| c.name != name);
    record.save(paths)
}

/// What one container is doing, from the shim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    /// Container name.
    pub name: String,
    /// `created`, `running`, `stopped`, `paused`, or `unknown`.
    pub state: String,
    /// Exit code once stopped.
    pub exit_code: Option<u32>,
}

/// The pod's phase and containers (kubelet's rules, simplified: no restarts).
pub fn status(record: &PodRecord) -> (String, Vec<ContainerStatus>) {
    use containerd_shim_protos::types::task::Status as S;
    let shim = Shim::connect(&record.shim_address).ok();
    let mut out = Vec::new();
    for (name, id) in &record.containers {
        let st = shim.as_ref().and_then(|s| s.state(id, "").ok());
        let (state, exit_code) = match st.map(|s| (s.status.enum_value_or_default(), s.exit_status)) {
            Some((S::RUNNING, _)) => ("running", None),
            Some((S::CREATED, _)) => ("created", None),
            Some((S::PAUSED, _)) => ("paused", None),
            Some((S::STOPPED, code)) => ("stopped", Some(code)),
            _ => ("unknown", None),
        };
        out.push(ContainerStatus {
            name: name.clone(),
            state: state.to_string(),
            exit_code,
        });
    }
    let roles: Vec<_> = record.plan.containers.iter().map(|c| c.role).collect();
    let apps: Vec<&ContainerStatus> = out
        .iter()
        .zip(&roles)
        .filter(|(_, r)| **r == sandbox::pod::Role::App)
        .map(|(s, _)| s)
        .collect();
    let init_failed = out
        .iter()
        .zip(&roles)
        .any(|(s, r)| *r == sandbox::pod::Role::Init && s.exit_code.is_some_and(|c| c != 0));
    let phase = if shim.is_none() {
        "Unknown"
    } else if init_failed || apps.iter().any(|s| s.exit_code.is_some_and(|c| c != 0)) {
        "Failed"
    } else if apps.iter().all(|s| s.exit_code == Some(0)) {
        "Succeeded"
    } else if apps.iter().any(|s| s.state == "running") {
        "Running"
    } else {
        "Pending"
    };
    (phase.to_string(), out)
}

/// Deletes a pod: termination through the sandbox (SIGTERM to all, grace, SIGKILL),
/// then tasks, network and directories. `grace` overrides the pod's grace period (s).
pub fn delete(paths: &Paths, key: &str, grace: Option<u64>) -> Result<()> {
    let record = load(paths, key)?;
    delete_record(paths, &record, grace)
}

fn delete_record(paths: &Paths, record: &PodRecord, grace: Option<u64>) -> Result<()> {
    if let Ok(shim) = Shim::connect(&record.shim_address) {
        if let Some(g) = grace {
            let _ = shim.set_grace_period(&record.sandbox_id, g);
        }
        if shim.state(&record.sandbox_id, "").is_ok() {
            // SIGTERM to the sandbox: the shim terminates the whole pod.
            let _ = shim.kill(&record.sandbox_id, "", 15, false);
            let _ = shim.wait(&record.sandbox_id, "");
        }
        for (_, id) in &record.containers {
            if shim.state(id, "").is_ok() {
                let _ = shim.kill(id, "", 9, true);
                let _ = shim.wait(id, "");
                shim.delete(id, "").with_context(|| format!("delete task {id}"))?;
            }
        }
        if shim.state(&record.sandbox_id, "").is_ok() {
            shim.delete(&record.sandbox_id, "").context("delete the sandbox task")?;
        }
        shim.shutdown()?;
    }
    match record.network {
        NetworkMode::Cni => {
            Network::peapod_default(&paths.root.join("cni")).del(
                &record.sandbox_id,
                "",
                "eth0",
                record.cni_result.as_deref(),
            )?;
        }
        NetworkMode::None | NetworkMode::Host => {}
    }
    for dir in [paths.pod_data(&record.key), paths.pod_state(&record.key)] {
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("remove {}", dir.display())),
        }
    }
    Ok(())
}

/// Runs `cmd` in container `name` of the pod and returns (exit status, stdout, stderr):
/// non-interactive, the output collected in files and returned once the process exited.
pub fn exec(record: &PodRecord, name: &str, cmd: &[String]) -> Result<(u32, Vec<u8>, Vec<u8>)> {
    let id = record
        .task_id(name)
        .with_context(|| format!("no container {name:?} in pod {}", record.plan.name))?;
    let plan = record
        .plan
        .containers
        .iter()
        .find(|c| c.name == name)
        .context("container")?;
    let shim = Shim::connect(&record.shim_address)?;
    let tmp = tempfile::Builder::new().prefix("peapod-exec-").tempdir()?;
    let (out, err) = (tmp.path().join("stdout"), tmp.path().join("stderr"));
    let process = oci_spec::runtime::ProcessBuilder::default()
        .args(cmd.to_vec())
        .env(vec![format!("PATH={}", sandbox::spec::DEFAULT_PATH)])
        .cwd("/")
        .user(
            oci_spec::runtime::UserBuilder::default()
                .uid(plan.security.run_as_user.unwrap_or(0))
                .gid(plan.security.run_as_group.unwrap_or(0))
                .build()?,
        )
        .build()?;
    let exec_id = format!("exec-{}", new_uid().split('-').next().unwrap_or("0"));
    let io = TaskIo {
        stdout: format!("file://{}", out.display()),
        stderr: format!("file://{}", err.display()),
        ..Default::default()
    };
    shim.exec(id, &exec_id, &process, &io)?;
    shim.start_task(id, &exec_id)?;
    let code = shim.wait(id, &exec_id)?;
    shim.delete(id, &exec_id)?;
    let read = |p: &Path| fs::read(p).unwrap_or_default();
    Ok((code, read(&out), read(&err)))
}
