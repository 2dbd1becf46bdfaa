//! The `peapod-embedded` column: peapod driven without containerd, as the `peapod` CLI's
//! embedded mode drives it (`peapod::runner`), in this process, on a private image store and
//! state under a temp dir.
//!
//! The same rows as the CRI handlers, each with the runner's closest call:
//!
//! 1. pod ready: `runner::run` of a pod with a native sidecar (`initContainers`,
//!    `restartPolicy: Always`) and an app, both busybox `sleep`, until `runner::status`
//!    says both run. `run` starts the shim, the sandbox, CNI (loopback only, or peapod's
//!    bridge; see [`Embedded::new`]), writes bundles and creates and starts both tasks;
//! 2. exec: `runner::exec` of `/bin/true` in the app (the shim's Exec, Start, Wait,
//!    Delete; output through files);
//! 3. teardown: `runner::delete` with grace period 0 (SIGKILL at once, as containerd's
//!    StopPodSandbox stops containers with timeout 0), which also removes the pod cgroup
//!    (under CRI that is the kubelet's, outside the timer);
//! 4. churn: in one running pod (holding one `sleep` app, where CRI's pod holds only the
//!    sandbox), `runner::add_container` (create + start), `runner::wait_container` (the
//!    shim's Wait: blocks until the exit, where CRI polls ContainerStatus), and
//!    `runner::remove_container` of `/bin/true`, N times;
//! 5. memory: PSS and RSS of the pods' shims (one per pod) and any helper they keep.
//!
//! Everything is removed again, and [`Embedded::finish`] checks that it was: pod state and
//! data dirs, the shim's per-task state, shim sockets and processes, mounts under the temp
//! dir, pod cgroups.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use peapod::embedded::{EMBEDDED_ADDRESS, EMBEDDED_NAMESPACE};
use peapod::manifest::{ContainerPlan, PodPlan};
use peapod::runner::{self, Binaries, NetworkMode, Paths, PodRecord};

use crate::scenarios::{self, MemSample, PodTimes, POLL, STATE_TIMEOUT};

/// The column's handler name (in `BENCH_HANDLERS`, the JSON and the table).
pub const HANDLER: &str = "peapod-embedded";
/// The Kubernetes namespace of the bench's embedded pods.
const NAMESPACE: &str = "peapod-bench";
/// The `peapod` cgroup parent every embedded pod's cgroup sits in (`peapod/pod-<uid>`).
const CGROUP_PARENT: &str = "peapod";
/// The CNI bridge `NetworkMode::Cni` creates.
const BRIDGE: &str = "peapod0";

/// peapod's embedded mode on a private store and state dir.
pub struct Embedded {
    dir: tempfile::TempDir,
    paths: Paths,
    bins: Binaries,
    network: NetworkMode,
    /// MemTotal, bytes (the manifests' `oom_score_adj`).
    memory: u64,
    /// Pods created so far (a counter for unique names) and the (sandbox id, uid, task ids)
    /// of each, for the leak check.
    pods: RefCell<Vec<(String, String, Vec<String>)>>,
    cgroup_parent_before: bool,
    bridge_before: bool,
}

/// `network` as the table names it.
pub fn network_name(network: NetworkMode) -> &'static str {
    match network {
        NetworkMode::None => "none (loopback only)",
        NetworkMode::Cni => "cni (peapod's bridge peapod0)",
        NetworkMode::Host => "host",
    }
}

impl Embedded {
    /// A temp dir under `/tmp` holding the image store (`root`, with the test images
    /// imported: busybox and pause) and the runner's `state`; pods use `network`.
    pub fn new(network: NetworkMode) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("peapod-bench-").tempdir_in("/tmp")?;
        let paths = Paths {
            root: dir.path().join("root"),
            state: dir.path().join("state"),
        };
        let bins = Binaries {
            shim: peapod_tests::containerd::peapod_shim()?,
            pause: peapod_tests::images::pause_binary()?,
        };
        let archive = peapod_tests::images::archive()?;
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
            pods: RefCell::new(Vec::new()),
            cgroup_parent_before: sandbox::cgroups::exists_anywhere(CGROUP_PARENT),
            bridge_before: Path::new("/sys/class/net").join(BRIDGE).exists(),
        })
    }

    /// The temp dir holding the store and the state.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A checked plan of a pod named `<name>-<pid>-<n>` (unique: its sandbox id names the
    /// shim socket, shared with every other embedded pod on the machine) with
    /// `containers`, YAML list items under `spec.containers`, and `init` under
    /// `spec.initContainers`. `restartPolicy: Never`: under CRI nothing restarts either
    /// (no kubelet), so churn's exited containers are not restarted by the shim.
    fn plan(&self, name: &str, init: &str, containers: &str) -> Result<PodPlan> {
        let n = self.pods.borrow().len();
        let name = format!("{name}-{}-{n}", std::process::id());
        let init = if init.is_empty() {
            String::new()
        } else {
            format!("  initContainers:\n{init}")
        };
        let yaml = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\nspec:\n  restartPolicy: Never\n{init}  containers:\n{containers}"
        );
        let pod = peapod::manifest::parse("bench", &yaml)?;
        Ok(peapod::manifest::plan(&pod, self.memory)?)
    }

    /// `runner::run`, recording the pod for the leak check (also when it fails).
    fn run(&self, plan: &PodPlan) -> Result<PodRecord> {
        let key = runner::key(&plan.namespace, &plan.name);
        let result = runner::run(
            &self.paths,
            &self.bins,
            plan,
            self.network,
            std::path::Path::new(peapod::security::KUBELET_SECCOMP_ROOT),
            &|_| {},
        );
        let (uid, tasks) = match &result {
            Ok(r) => (r.uid.clone(), r.containers.iter().map(|(_, id)| id.clone()).collect()),
            Err(_) => (String::new(), Vec::new()),
        };
        self.pods.borrow_mut().push((key, uid, tasks));
        result.context("runner::run")
    }

    fn note_task(&self, record: &PodRecord, task: &str) {
        if let Some(p) = self.pods.borrow_mut().iter_mut().find(|p| p.0 == record.key) {
            p.2.push(task.to_string());
        }
    }

    /// `runner::delete` with grace period 0.
    fn delete(&self, record: &PodRecord) -> Result<()> {
        runner::delete(&self.paths, &record.key, Some(0)).with_context(|| format!("runner::delete {}", record.key))
    }

    /// Runs `f` on the running pod and deletes it afterwards, also when `f` fails.
    fn with_pod<T>(&self, record: PodRecord, f: impl FnOnce(&mut PodRecord) -> Result<T>) -> Result<T> {
        let mut record = record;
        let result = f(&mut record);
        let deleted = self.delete(&record);
        let value = result?;
        deleted?;
        Ok(value)
    }

    /// Row 1-3: see the module docs.
    pub fn pod_cycle(&self, execs: usize) -> Result<PodTimes> {
        let plan = self.plan(
            "bench",
            "  - {name: sidecar, image: busybox, restartPolicy: Always, command: [sleep, '3600']}\n",
            "  - {name: app, image: busybox, command: [sleep, '3600']}\n",
        )?;
        let begun = Instant::now();
        let record = self.run(&plan)?;
        let measured = (|| -> Result<_> {
            wait_running(&self.paths, &record, &["sidecar", "app"])?;
            let ready = begun.elapsed();
            let mut exec_times = Vec::with_capacity(execs);
            let cmd = vec!["/bin/true".to_string()];
            for _ in 0..execs {
                let t = Instant::now();
                let (code, _, stderr) = runner::exec(&record, "app", &cmd).context("runner::exec")?;
                exec_times.push(t.elapsed());
                ensure!(
                    code == 0,
                    "exec /bin/true exited {code} (stderr {:?})",
                    String::from_utf8_lossy(&stderr).trim()
                );
            }
            Ok((ready, exec_times))
        })();
        match measured {
            Ok((ready, execs)) => {
                let t = Instant::now();
                self.delete(&record)?;
                Ok(PodTimes {
                    ready,
                    execs,
                    teardown: t.elapsed(),
                })
            }
            Err(e) => {
                let _ = self.delete(&record);
                Err(e)
            }
        }
    }

    /// Row 4: see the module docs. Returns the total.
    pub fn churn(&self, containers: usize) -> Result<Duration> {
        let plan = self.plan(
            "churn",
            "",
            "  - {name: sleep, image: busybox, command: [sleep, '3600']}\n  - {name: churn, image: busybox, command: [/bin/true]}\n",
        )?;
        // The template for the churned containers: the plan's checked `churn` container,
        // kept out of the pod itself.
        let mut plan = plan;
        let template: ContainerPlan = plan.containers.pop().context("the plan's churn container")?;
        let record = self.run(&plan)?;
        self.with_pod(record, |record| {
            wait_running(&self.paths, record, &["sleep"])?;
            let mut configs: Vec<ContainerPlan> = (0..containers)
                .map(|i| ContainerPlan {
                    name: format!("true-{i}"),
                    ..template.clone()
                })
                .collect();
            let begun = Instant::now();
            for c in configs.drain(..) {
                let task = runner::add_container(&self.paths, record, &c)?;
                self.note_task(record, &task);
                let code = runner::wait_container(record, &c.name)?;
                ensure!(code == 0, "container {} (/bin/true) exited {code}", c.name);
                runner::remove_container(&self.paths, record, &c.name)?;
            }
            Ok(begun.elapsed())
        })
    }

    /// Row 5: `pods` pods of one `sleep` app each, all running, then `samples` readings of
    /// their shims' memory; the pods deleted.
    pub fn memory(&self, pods: usize, samples: usize) -> Result<Vec<MemSample>> {
        let mut running: Vec<PodRecord> = Vec::with_capacity(pods);
        let measured = (|| -> Result<_> {
            for _ in 0..pods {
                let plan = self.plan(
                    "mem",
                    "",
                    "  - {name: sleep, image: busybox, command: [sleep, '3600']}\n",
                )?;
                running.push(self.run(&plan)?);
                wait_running(&self.paths, running.last().expect("just pushed"), &["sleep"])?;
            }
            // As for the CRI handlers: let the shims finish their start-up work.
            std::thread::sleep(Duration::from_secs(1));
            let ids: BTreeSet<String> = running.iter().map(|r| r.sandbox_id.clone()).collect();
            let mut out = Vec::with_capacity(samples);
            for i in 0..samples {
                if i > 0 {
                    std::thread::sleep(Duration::from_millis(300));
                }
                out.push(scenarios::sample_memory(resident_processes(&ids))?);
            }
            Ok(out)
        })();
        let mut removal = Ok(());
        for record in &running {
            if let Err(e) = self.delete(record) {
                if removal.is_ok() {
                    removal = Err(e);
                }
            }
        }
        let samples = measured?;
        removal?;
        Ok(samples)
    }

    /// Checks that every pod the bench created is gone without a trace, then removes the
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
        let sandbox_ids: BTreeSet<String> = self.pods.borrow().iter().map(|p| p.0.clone()).collect();
        for (sandbox_id, uid, tasks) in self.pods.borrow().iter() {
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
fn wait_running(paths: &Paths, record: &PodRecord, names: &[&str]) -> Result<()> {
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
fn resident_processes(ids: &BTreeSet<String>) -> Vec<scenarios::Proc> {
    scenarios::shims_and_helpers(|p| p.args.iter().any(|a| a == EMBEDDED_ADDRESS), ids, in_pod_cgroup)
}

/// Whether `pid` is in an embedded pod's cgroup (`/peapod/pod-<uid>/...`), any hierarchy.
fn in_pod_cgroup(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .any(|path| path.starts_with(&format!("/{CGROUP_PARENT}/pod-")))
}
