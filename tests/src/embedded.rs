//! peapod's embedded mode (the `peapod` CLI's `peapod::runner`, no containerd) driven from
//! a test process on a private image store and state under a temp dir: `make bench`'s
//! `peapod-embedded` column and `make soak`'s embedded run.
//!
//! [`Embedded::finish`] checks that every pod run through it is gone without a trace: pod
//! state and data dirs, the shim's per-task state, shim sockets and processes, mounts under
//! the temp dir, pod cgroups.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use peapod::embedded::{EMBEDDED_ADDRESS, EMBEDDED_NAMESPACE};
use peapod::manifest::PodPlan;
use peapod::runner::{self, Binaries, NetworkMode, Paths, PodRecord};

use crate::procs;

/// How often [`wait_running`] polls `runner::status`.
pub const POLL: Duration = Duration::from_millis(1);
/// Bound of [`wait_running`].
pub const STATE_TIMEOUT: Duration = Duration::from_secs(30);

/// The `peapod` cgroup parent every embedded pod's cgroup sits in (`peapod/pod-<uid>`).
const CGROUP_PARENT: &str = "peapod";
/// The CNI bridge `NetworkMode::Cni` creates.
const BRIDGE: &str = "peapod0";

/// peapod's embedded mode on a private store and state dir, shareable between threads.
pub struct Embedded {
    dir: tempfile::TempDir,
    paths: Paths,
    bins: Binaries,
    network: NetworkMode,
    /// MemTotal, bytes (the manifests' `oom_score_adj`).
    memory: u64,
    /// The Kubernetes namespace of the pods.
    namespace: String,
    /// Plans made so far: a counter for unique pod names.
    plans: AtomicUsize,
    /// The (sandbox id, uid, task ids) of each pod run, for the leak check.
    pods: Mutex<Vec<(String, String, Vec<String>)>>,
    cgroup_parent_before: bool,
    bridge_before: bool,
}

impl Embedded {
    /// A temp dir under `/tmp` holding the image store (`root`, with the test images
    /// imported: busybox and pause) and the runner's `state`; pods use `network` and live in
    /// the Kubernetes namespace `namespace`.
    pub fn new(network: NetworkMode, namespace: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{namespace}-"))
            .tempdir_in("/tmp")?;
        let paths = Paths {
            root: dir.path().join("root"),
            state: dir.path().join("state"),
        };
        let bins = Binaries {
            shim: crate::containerd::peapod_shim()?,
            pause: crate::images::pause_binary()?,
        };
        let archive = crate::images::archive()?;
        paths
            .images()?
            .import(archive)
            .with_context(|| format!("import {}", archive.display()))?;
        let memory = fs::read_to_string("/proc/meminfo")?
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .context("no MemTotal in /proc/meminfo")?
            * 1024;
        Ok(Self {
            dir,
            paths,
            bins,
            network,
            memory,
            namespace: namespace.to_string(),
            plans: AtomicUsize::new(0),
            pods: Mutex::new(Vec::new()),
            cgroup_parent_before: sandbox::cgroups::exists_anywhere(CGROUP_PARENT),
            bridge_before: Path::new("/sys/class/net").join(BRIDGE).exists(),
        })
    }

    /// The temp dir holding the store and the state.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The runner's store and state paths.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// The pods' network mode.
    pub fn network(&self) -> NetworkMode {
        self.network
    }

    /// A checked plan of a pod named `<name>-<pid>-<n>` (unique: its sandbox id names the
    /// shim socket, shared with every other embedded pod on the machine) with
    /// `containers`, YAML list items under `spec.containers`, `init` under
    /// `spec.initContainers`, `volumes` under `spec.volumes` (may be empty) and
    /// `restart_policy` (`Never`, `OnFailure`, `Always`).
    pub fn plan(
        &self,
        name: &str,
        restart_policy: &str,
        init: &str,
        containers: &str,
        volumes: &str,
    ) -> Result<PodPlan> {
        let n = self.plans.fetch_add(1, Ordering::Relaxed);
        let name = format!("{name}-{}-{n}", std::process::id());
        let init = if init.is_empty() {
            String::new()
        } else {
            format!("  initContainers:\n{init}")
        };
        let volumes = if volumes.is_empty() {
            String::new()
        } else {
            format!("  volumes:\n{volumes}")
        };
        let namespace = &self.namespace;
        let yaml = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  restartPolicy: {restart_policy}\n{init}  containers:\n{containers}{volumes}"
        );
        let pod = peapod::manifest::parse(&name, &yaml)?;
        Ok(peapod::manifest::plan(&pod, self.memory)?)
    }

    /// `runner::run`, recording the pod for the leak check (also when it fails).
    pub fn run(&self, plan: &PodPlan) -> Result<PodRecord> {
        let key = runner::key(&plan.namespace, &plan.name);
        let result = runner::run(
            &self.paths,
            &self.bins,
            plan,
            self.network,
            std::path::Path::new(peapod::security::KUBELET_SECCOMP_ROOT),
            runner::RunInputs::default(),
            &|_| {},
        );
        let (uid, tasks) = match &result {
            Ok(r) => (r.uid.clone(), r.containers.iter().map(|(_, id)| id.clone()).collect()),
            Err(_) => (String::new(), Vec::new()),
        };
        self.pods.lock().unwrap().push((key, uid, tasks));
        result.context("runner::run")
    }

    /// Records task `task` (a container added to the pod after `run`) for the leak check.
    pub fn note_task(&self, record: &PodRecord, task: &str) {
        if let Some(p) = self.pods.lock().unwrap().iter_mut().find(|p| p.0 == record.key) {
            p.2.push(task.to_string());
        }
    }

    /// `runner::delete` with grace period 0.
    pub fn delete(&self, record: &PodRecord) -> Result<()> {
        runner::delete(&self.paths, &record.key, Some(0)).with_context(|| format!("runner::delete {}", record.key))
    }

    /// Runs `f` on the running pod and deletes it afterwards, also when `f` fails.
    pub fn with_pod<T>(&self, record: PodRecord, f: impl FnOnce(&mut PodRecord) -> Result<T>) -> Result<T> {
        let mut record = record;
        let result = f(&mut record);
        let deleted = self.delete(&record);
        let value = result?;
        deleted?;
        Ok(value)
    }
}

impl Embedded {
    /// Checks that every pod run through it is gone without a trace, then removes the
    /// parent cgroup `peapod` (when the bench created it and it is empty), peapod's CNI
    /// bridge (likewise) and the temp dir. Fails listing the leftovers.
    pub fn finish(self) -> Result<()> {
        let mut leaks = Vec::new();
        for (what, dir) in [
            ("pod state", self.paths.state.join("pods")),
            ("pod data", self.paths.root.join("pods")),
        ] {
            for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
                leaks.push(format!("{what} dir still there: {}", entry.path().display()));
            }
        }
        let here = self.dir.path().to_string_lossy().into_owned();
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in mounts.lines() {
            if let Some(point) = line.split(' ').nth(4).filter(|p| p.starts_with(&here)) {
                leaks.push(format!("mount still there: {point}"));
            }
        }
        let shim_paths = shim::start::Paths::for_namespace(EMBEDDED_NAMESPACE);
        let sandbox_ids: BTreeSet<String> = self.pods.lock().unwrap().iter().map(|p| p.0.clone()).collect();
        for (sandbox_id, uid, tasks) in self.pods.lock().unwrap().iter() {
            if !uid.is_empty() {
                let cgroup = peapod::pods::pod_cgroup(uid);
                if sandbox::cgroups::exists_anywhere(&cgroup) {
                    leaks.push(format!("pod cgroup still there: {cgroup}"));
                }
            }
            let socket = shim::start::socket_address(EMBEDDED_ADDRESS, EMBEDDED_NAMESPACE, sandbox_id);
            let socket = shim::start::socket_path(&socket).to_path_buf();
            if socket.exists() {
                leaks.push(format!("shim socket of {sandbox_id} still there: {}", socket.display()));
            }
            let dirs = [shim_paths.pods.join(sandbox_id), shim_paths.disk.join(sandbox_id)];
            let tasks = std::iter::once(sandbox_id)
                .chain(tasks)
                .map(|t| shim_paths.containers.join(t));
            for dir in dirs.into_iter().chain(tasks) {
                if dir.exists() {
                    leaks.push(format!("shim state still there: {}", dir.display()));
                }
            }
        }
        for p in resident_processes(&sandbox_ids) {
            leaks.push(format!("process {} still runs: {}", p.pid, p.args.join(" ")));
        }
        if !self.cgroup_parent_before {
            sandbox::cgroups::rmdir_everywhere(CGROUP_PARENT);
        }
        if self.network == NetworkMode::Cni && !self.bridge_before {
            let _ = std::process::Command::new("ip").args(["link", "del", BRIDGE]).output();
        }
        let dir: PathBuf = self.dir.path().to_path_buf();
        if leaks.is_empty() {
            self.dir.close().with_context(|| format!("remove {}", dir.display()))?;
            return Ok(());
        }
        // The dir stays for inspection (it is under /tmp).
        let _ = self.dir.keep();
        bail!(
            "embedded leftovers (state kept in {}):\n  {}",
            dir.display(),
            leaks.join("\n  ")
        )
    }
}

/// Polls `runner::status` every [`POLL`] until the containers `names` all run; fails at
/// once when one stopped, and after [`STATE_TIMEOUT`] otherwise.
pub fn wait_running(paths: &Paths, record: &PodRecord, names: &[&str]) -> Result<()> {
    let deadline = Instant::now() + STATE_TIMEOUT;
    loop {
        let (phase, containers) = runner::status(paths, record);
        let of = |name: &str| containers.iter().find(|c| c.name == name);
        if names.iter().all(|n| of(n).is_some_and(|c| c.state == "running")) {
            return Ok(());
        }
        let stopped = names.iter().find_map(|n| of(n).filter(|c| c.state == "stopped"));
        if stopped.is_some() || Instant::now() >= deadline {
            bail!(
                "pod {} never had {names:?} running: phase {phase}, containers {containers:?}",
                record.key
            );
        }
        std::thread::sleep(POLL);
    }
}

/// The embedded shims of the pods whose sandbox ids are `ids` (started with
/// `-address /run/peapod/embedded -id <sandbox id>`), and their descendants that are not
/// in a pod's cgroup (helpers; peapod keeps none).
pub fn resident_processes(ids: &BTreeSet<String>) -> Vec<procs::Proc> {
    procs::shims_and_helpers(|p| p.args.iter().any(|a| a == EMBEDDED_ADDRESS), ids, in_pod_cgroup)
}

/// Whether `pid` is in an embedded pod's cgroup (`/peapod/pod-<uid>/...`), any hierarchy.
fn in_pod_cgroup(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .any(|path| path.starts_with(&format!("/{CGROUP_PARENT}/pod-")))
}
