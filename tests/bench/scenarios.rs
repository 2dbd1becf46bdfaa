//! What one iteration of each row does, through CRI as the kubelet drives a runtime. Each
//! scenario creates its own pods, measures, and removes them again (also when it fails), so
//! a failed iteration leaves nothing that skews the next.
//!
//! Timers cover runtime work only: pod configs (and the pod log dir the kubelet creates)
//! are built before the clock starts, and the pod cgroup (`cgroup_parent`, which the kubelet
//! owns and removes after `RemovePodSandbox`) is removed after it stops.

use std::collections::BTreeSet;
use std::fs;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use peapod_tests::containerd::{self, Containerd};
use peapod_tests::cpu::CpuCgroup;
use peapod_tests::cri::{self, api, container_config, CriClient};
use peapod_tests::procs::{sample_memory, shims_and_helpers, MemSample, Proc};

use crate::probes::{self, ManyPods, Meter, PerProbe};

/// How often a wait polls `ContainerStatus`: short, so the poll adds little to what is
/// measured, long enough not to steal a core from the runtime on a 2-core machine.
pub const POLL: Duration = Duration::from_millis(1);
/// Bound of any wait for a container state: reaching it is a functional requirement.
pub const STATE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound of one `ExecSync`.
const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

/// The containerd instance and a CRI client connected to it.
pub struct Bench<'a> {
    pub ctrd: &'a Containerd,
    pub cri: &'a CriClient,
}

/// A pod that `RunPodSandbox` created: its id and the config CRI wants again.
struct RunningPod {
    id: String,
    config: api::PodSandboxConfig,
}

impl RunningPod {
    /// StopPodSandbox + RemovePodSandbox, timed; then the pod cgroup, as the kubelet
    /// removes it (fails when the runtime left a container cgroup or process in it).
    fn remove(&self, cri: &CriClient) -> Result<Duration> {
        let begun = Instant::now();
        cri.stop_pod_sandbox(&self.id)?;
        cri.remove_pod_sandbox(&self.id)?;
        let took = begun.elapsed();
        remove_pod_cgroup(&self.config)?;
        Ok(took)
    }
}

fn remove_pod_cgroup(config: &api::PodSandboxConfig) -> Result<()> {
    if let Some(linux) = &config.linux {
        containerd::remove_cgroup(&linux.cgroup_parent)?;
    }
    Ok(())
}

/// Runs `f` on a freshly run pod and removes the pod afterwards, also when `f` fails.
fn with_pod<T>(b: &Bench, handler: &str, name: &str, f: impl FnOnce(&RunningPod) -> Result<T>) -> Result<T> {
    let pod = run_pod(b, handler, name)?;
    match f(&pod) {
        Ok(value) => {
            pod.remove(b.cri).with_context(|| format!("remove pod {}", pod.id))?;
            Ok(value)
        }
        Err(e) => {
            let _ = pod.remove(b.cri);
            Err(e)
        }
    }
}

/// RunPodSandbox of a pod named `unique_name(name)`. The pod config is built before the
/// call, so callers may time around it.
fn run_pod(b: &Bench, handler: &str, name: &str) -> Result<RunningPod> {
    let config = cri::pod_config(b.ctrd, name)?;
    run_pod_with(b, handler, config)
}

fn run_pod_with(b: &Bench, handler: &str, config: api::PodSandboxConfig) -> Result<RunningPod> {
    match b.cri.run_pod_sandbox(&config, handler) {
        Ok(id) => Ok(RunningPod { id, config }),
        Err(e) => {
            // CRI removes a sandbox it failed to start; the cgroup parent may remain.
            let _ = remove_pod_cgroup(&config);
            Err(e).context("RunPodSandbox")
        }
    }
}

/// Creates and starts a container in `pod`; returns its id.
fn start(b: &Bench, pod: &RunningPod, config: &api::ContainerConfig) -> Result<String> {
    let name = config.metadata.as_ref().map_or("", |m| m.name.as_str()).to_string();
    let id = b
        .cri
        .create_container(&pod.id, config, &pod.config)
        .with_context(|| format!("CreateContainer {name}"))?;
    b.cri
        .start_container(&id)
        .with_context(|| format!("StartContainer {name}"))?;
    Ok(id)
}

/// Polls `ContainerStatus` every [`POLL`] until container `id` is in `want`. Fails at
/// once when it exited while `want` is running, and after [`STATE_TIMEOUT`] otherwise,
/// with the last status.
fn wait_state(cri: &CriClient, id: &str, want: api::ContainerState) -> Result<api::ContainerStatus> {
    wait_state_every(cri, id, want, POLL)
}

/// [`wait_state`], polling every `poll`.
fn wait_state_every(
    cri: &CriClient,
    id: &str,
    want: api::ContainerState,
    poll: Duration,
) -> Result<api::ContainerStatus> {
    let deadline = Instant::now() + STATE_TIMEOUT;
    loop {
        let status = cri
            .container_status(id, false)?
            .status
            .context("ContainerStatus has no status")?;
        if status.state == want as i32 {
            return Ok(status);
        }
        let exited = status.state == api::ContainerState::ContainerExited as i32;
        if (exited && want == api::ContainerState::ContainerRunning) || Instant::now() >= deadline {
            bail!(
                "container {id} never became {want:?}: state {:?}, exit code {}, reason {:?}, message {:?}",
                api::ContainerState::try_from(status.state),
                status.exit_code,
                status.reason,
                status.message
            );
        }
        std::thread::sleep(poll);
    }
}

/// Times of one pod-lifecycle iteration (rows pod ready, ExecSync and teardown).
pub struct PodTimes {
    /// RunPodSandbox until the sidecar and the app container both run.
    pub ready: Duration,
    /// Each ExecSync of `/bin/true` in the app container.
    pub execs: Vec<Duration>,
    /// StopPodSandbox + RemovePodSandbox with both containers running.
    pub teardown: Duration,
}

/// `seccompProfile: RuntimeDefault` on the pod and its containers, as the kubelet sends it
/// with `--seccomp-default` or the `restricted` Pod Security Standard: containerd writes its
/// default profile into each spec (`linux.seccomp`), which the runtime compiles and loads.
fn runtime_default_seccomp(
    pod: &mut api::PodSandboxConfig,
    containers: &mut [&mut api::ContainerConfig],
) -> Result<()> {
    let profile = || api::SecurityProfile {
        profile_type: api::security_profile::ProfileType::RuntimeDefault as i32,
        localhost_ref: String::new(),
    };
    pod.linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .context("pod config has no security context")?
        .seccomp = Some(profile());
    for c in containers {
        c.linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
            .context("container config has no security context")?
            .seccomp = Some(profile());
    }
    Ok(())
}

/// One pod the kubelet's way, under `RuntimeDefault` seccomp: RunPodSandbox,
/// CreateContainer + StartContainer of a sidecar and then an app container (both `sleep`), until ContainerStatus says both run;
/// then `execs` ExecSyncs of `/bin/true` in the app; then StopPodSandbox +
/// RemovePodSandbox.
pub fn pod_cycle(b: &Bench, handler: &str, execs: usize) -> Result<PodTimes> {
    let mut config = cri::pod_config(b.ctrd, "bench")?;
    let mut sidecar = container_config("sidecar", &["sleep", "3600"]);
    let mut app = container_config("app", &["sleep", "3600"]);
    runtime_default_seccomp(&mut config, &mut [&mut sidecar, &mut app])?;
    let begun = Instant::now();
    let pod = run_pod_with(b, handler, config)?;
    let measured = (|| -> Result<_> {
        let sidecar_id = start(b, &pod, &sidecar)?;
        let app_id = start(b, &pod, &app)?;
        wait_state(b.cri, &sidecar_id, api::ContainerState::ContainerRunning)?;
        wait_state(b.cri, &app_id, api::ContainerState::ContainerRunning)?;
        let ready = begun.elapsed();
        let mut exec_times = Vec::with_capacity(execs);
        for _ in 0..execs {
            let t = Instant::now();
            let out = b.cri.exec_sync(&app_id, &["/bin/true"], EXEC_TIMEOUT)?;
            exec_times.push(t.elapsed());
            ensure!(
                out.exit_code == 0,
                "ExecSync /bin/true exited {} (stderr {:?})",
                out.exit_code,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok((ready, exec_times))
    })();
    match measured {
        Ok((ready, execs)) => {
            let teardown = pod.remove(b.cri).with_context(|| format!("remove pod {}", pod.id))?;
            Ok(PodTimes { ready, execs, teardown })
        }
        Err(e) => {
            let _ = pod.remove(b.cri);
            Err(e)
        }
    }
}

/// `containers` times in one pod: CreateContainer + StartContainer of `/bin/true`, wait
/// until ContainerStatus says it exited (with code 0), RemoveContainer. Returns the total.
pub fn churn(b: &Bench, handler: &str, containers: usize) -> Result<Duration> {
    with_pod(b, handler, "churn", |pod| {
        let begun = Instant::now();
        for i in 0..containers {
            let config = container_config(&format!("true-{i}"), &["/bin/true"]);
            let id = start(b, pod, &config)?;
            let status = wait_state(b.cri, &id, api::ContainerState::ContainerExited)?;
            ensure!(
                status.exit_code == 0,
                "container {i} (/bin/true) exited {} (reason {:?}, message {:?})",
                status.exit_code,
                status.reason,
                status.message
            );
            b.cri
                .remove_container(&id)
                .with_context(|| format!("RemoveContainer {id}"))?;
        }
        Ok(begun.elapsed())
    })
}

/// Runs `pods` pods (sandbox + one `sleep` container each), waits until all run, lets
/// them settle, and reads the shims' memory `samples` times; removes the pods.
pub fn memory(b: &Bench, handler: &str, pods: usize, samples: usize) -> Result<(Vec<MemSample>, Option<u64>)> {
    let mut running: Vec<RunningPod> = Vec::with_capacity(pods);
    let measured = (|| -> Result<_> {
        for _ in 0..pods {
            running.push(run_pod(b, handler, "mem")?);
            let pod = running.last().expect("just pushed");
            let c = start(b, pod, &container_config("sleep", &["sleep", "3600"]))?;
            wait_state(b.cri, &c, api::ContainerState::ContainerRunning)?;
        }
        std::thread::sleep(MEMORY_SETTLE);
        let pod_ids: BTreeSet<String> = running.iter().map(|p| p.id.clone()).collect();
        let mut out = Vec::with_capacity(samples);
        for i in 0..samples {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(300));
            }
            out.push(read_memory(b.ctrd, &pod_ids)?);
        }
        Ok((out, Some(containerd_rss_kib(b)?)))
    })();
    let mut removal = Ok(());
    for pod in &running {
        if let Err(e) = pod.remove(b.cri) {
            if removal.is_ok() {
                removal = Err(e.context(format!("remove pod {}", pod.id)));
            }
        }
    }
    let samples = measured?;
    removal?;
    Ok(samples)
}

/// How long the memory rows wait once the pods run, before reading the shims: their
/// start-up work done (Go's GC, lazily mapped pages), and peapod's shim at rest
/// (`shim::serve::AT_REST` after its last call: its blocking-pool threads, which outlive
/// a call by `shim::serve::IDLE_THREAD_KEEP_ALIVE`, gone, and its heap trimmed): what a
/// shim holds at rest.
pub const MEMORY_SETTLE: Duration = Duration::from_secs(1).saturating_add(shim::serve::AT_REST);

/// How often each pod of [`at_once`] polls `ContainerStatus`: fifty pods polling every
/// millisecond would be most of containerd's CPU time there.
const AT_ONCE_POLL: Duration = Duration::from_millis(10);

/// What creating many pods at once cost.
pub struct AtOnce {
    /// Each pod's time from the common start until its app container ran.
    pub ready: Vec<Duration>,
    /// From the common start until the last pod was ready.
    pub all: Duration,
    /// containerd's own CPU time (user + system, its shims not included) meanwhile; none
    /// for the embedded column.
    pub containerd_cpu: Option<Duration>,
}

/// User + system CPU time of process `pid` (all its threads, exited ones included), from
/// `/proc/<pid>/stat` (clock ticks of 10 ms).
pub fn process_cpu(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).context("stat without comm")?;
    let fields: Vec<&str> = rest.split(' ').collect();
    // After `comm`: state is field 3, utime 14 and stime 15 (1-based).
    let ticks: u64 = [11, 12]
        .iter()
        .map(|&i| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .context("stat utime/stime")
        })
        .sum::<Result<u64>>()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(100);
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / hz.max(1)))
}

/// `pods` pods (sandbox + one `sleep` container each) created at once, each from a
/// thread with its own CRI connection, as kubelet's pod workers start pods side by side;
/// each waits for its container to run (polling every [`AT_ONCE_POLL`]). Returns each
/// pod's ready time, the time until all were ready, and containerd's CPU time meanwhile;
/// removes the pods.
pub fn at_once(b: &Bench, handler: &str, pods: usize) -> Result<AtOnce> {
    let configs = (0..pods)
        .map(|_| cri::pod_config(b.ctrd, "burst"))
        .collect::<Result<Vec<_>>>()?;
    let clients = (0..pods).map(|_| b.ctrd.cri()).collect::<Result<Vec<_>, _>>()?;
    let cpu_before = process_cpu(b.ctrd.pid())?;
    let begun = Instant::now();
    let results: Vec<Result<(RunningPod, Duration)>> = std::thread::scope(|scope| {
        let threads: Vec<_> = configs
            .into_iter()
            .zip(&clients)
            .map(|(config, cri)| {
                scope.spawn(move || {
                    let own = Bench { ctrd: b.ctrd, cri };
                    let pod = run_pod_with(&own, handler, config)?;
                    let ready = start(&own, &pod, &container_config("sleep", &["sleep", "3600"]))
                        .and_then(|c| wait_state_every(cri, &c, api::ContainerState::ContainerRunning, AT_ONCE_POLL))
                        .map(|_| begun.elapsed());
                    match ready {
                        Ok(d) => Ok((pod, d)),
                        Err(e) => {
                            let _ = pod.remove(cri);
                            Err(e)
                        }
                    }
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().expect("pod thread")).collect()
    });
    let all = begun.elapsed();
    let cpu = process_cpu(b.ctrd.pid())?.saturating_sub(cpu_before);
    finish_burst(
        results,
        |pod| {
            pod.remove(b.cri)
                .map(|_| ())
                .with_context(|| format!("remove pod {}", pod.id))
        },
        all,
        Some(cpu),
    )
}

/// The end of a burst of pods created at once: each made pod's ready time, every made
/// pod removed with `remove` (also after another's failure); the first error wins.
pub fn finish_burst<P>(
    results: Vec<Result<(P, Duration)>>,
    remove: impl Fn(&P) -> Result<()>,
    all: Duration,
    containerd_cpu: Option<Duration>,
) -> Result<AtOnce> {
    let mut ready = Vec::with_capacity(results.len());
    let mut first_error = None;
    for r in results {
        let removed = r.and_then(|(pod, d)| {
            ready.push(d);
            remove(&pod)
        });
        if let Err(e) = removed {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(AtOnce {
            ready,
            all,
            containerd_cpu,
        }),
    }
}

/// One pod with `containers` `sleep` containers, created and started one after another:
/// returns the mean time per container (CreateContainer + StartContainer until it runs)
/// and one reading of the pod's shim memory with all running; removes the pod.
pub fn containers_in_one_pod(b: &Bench, handler: &str, containers: usize) -> Result<(Duration, MemSample)> {
    with_pod(b, handler, "many", |pod| {
        let begun = Instant::now();
        for i in 0..containers {
            let c = start(b, pod, &container_config(&format!("sleep-{i}"), &["sleep", "3600"]))?;
            wait_state(b.cri, &c, api::ContainerState::ContainerRunning)?;
        }
        let each = begun.elapsed() / u32::try_from(containers.max(1)).unwrap_or(u32::MAX);
        std::thread::sleep(MEMORY_SETTLE);
        let ids = BTreeSet::from([pod.id.clone()]);
        Ok((each, read_memory(b.ctrd, &ids)?))
    })
}

/// containerd's resident memory (`VmRSS`), KiB.
pub fn containerd_rss_kib(b: &Bench) -> Result<u64> {
    let path = format!("/proc/{}/status", b.ctrd.pid());
    fs::read_to_string(&path)
        .with_context(|| format!("read {path}"))?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{path} has no VmRSS"))
}

/// Whether process `pid` is in the cgroup of one of `ids` (a container or sandbox of the
/// instance), in any hierarchy.
fn in_container_cgroup(pid: u32, ids: &BTreeSet<String>) -> bool {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.rsplit(':').next())
        .any(|path| path.rsplit('/').next().is_some_and(|last| ids.contains(last)))
}

/// The handler's resident processes for the pods `pod_ids`: every shim serving this
/// instance (its command line names the instance's containerd address, as `-address`)
/// started for one of those pods (`-id <sandbox id>`: one shim per pod, for runc's shim
/// as for peapod's), and every other descendant of such a shim that is not a container's
/// process (a helper the runtime keeps around; runc, crun and peapod keep none, their init
/// helpers exit). Shims of other pods, still exiting, and `ctr` commands are not counted.
fn resident_processes(ctrd: &Containerd, pod_ids: &BTreeSet<String>) -> Vec<Proc> {
    let address = ctrd.address().to_string_lossy().into_owned();
    let ids = ctrd.seen_ids();
    shims_and_helpers(
        |p| p.args.iter().any(|a| a.contains(&address)),
        pod_ids,
        |pid| in_container_cgroup(pid, &ids),
    )
}

fn read_memory(ctrd: &Containerd, pod_ids: &BTreeSet<String>) -> Result<MemSample> {
    let procs = resident_processes(ctrd, pod_ids);
    ensure!(
        !procs.is_empty(),
        "no shim process with -address {} serves the pods",
        ctrd.address().display()
    );
    sample_memory(procs)
}

/// The measurement cgroup of a CRI handler's probe row, holding containerd (and so every
/// shim it starts from now on, and what those fork).
fn containerd_meter_group(b: &Bench, row: &str) -> Result<CpuCgroup> {
    let mut group = CpuCgroup::create(&probes::cgroup_name(row))?;
    let moved = group
        .adopt(b.ctrd.pid())
        .context("move containerd into the CPU cgroup")?;
    ensure!(moved, "containerd (pid {}) has gone", b.ctrd.pid());
    Ok(group)
}

/// A pod of one `sleep` app under `RuntimeDefault` seccomp (the embedded column's
/// default), running; returns it and the app's id.
fn probed_pod(b: &Bench, handler: &str, name: &str) -> Result<(RunningPod, String)> {
    let mut config = cri::pod_config(b.ctrd, name)?;
    let mut app = container_config("app", &["sleep", "3600"]);
    runtime_default_seccomp(&mut config, &mut [&mut app])?;
    let pod = run_pod_with(b, handler, config)?;
    let started = start(b, &pod, &app).and_then(|id| {
        wait_state(b.cri, &id, api::ContainerState::ContainerRunning)?;
        Ok(id)
    });
    match started {
        Ok(id) => Ok((pod, id)),
        Err(e) => {
            let _ = pod.remove(b.cri);
            Err(e)
        }
    }
}

/// One exec probe as the kubelet runs it: ExecSync of [`probes::COMMAND`], which must
/// exit 0.
fn exec_probe(cri: &CriClient, id: &str) -> Result<()> {
    let out = cri.exec_sync(id, &[probes::COMMAND], probes::TIMEOUT)?;
    ensure!(
        out.exit_code == 0,
        "ExecSync {} exited {} (stderr {:?})",
        probes::COMMAND,
        out.exit_code,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// The cgroup parent of `pod` (where the runtime puts its containers' cgroups).
fn pod_cgroup(pod: &RunningPod) -> Result<String> {
    Ok(pod
        .config
        .linux
        .as_ref()
        .context("pod config has no linux section")?
        .cgroup_parent
        .clone())
}

/// Exec probes, row 1 (`probes.rs`): one pod, `idle` without probes, then `count`
/// ExecSyncs of `/bin/true`, one per second, as the kubelet's prober issues them.
pub fn probe_cost(b: &Bench, handler: &str, count: usize, idle: Duration) -> Result<PerProbe> {
    let group = containerd_meter_group(b, "probe")?;
    let measured = (|| -> Result<PerProbe> {
        let (pod, id) = probed_pod(b, handler, "probe")?;
        let measured = (|| -> Result<PerProbe> {
            let meter = Meter {
                group: &group,
                pods: vec![pod_cgroup(&pod)?],
            };
            std::thread::sleep(probes::SETTLE);
            let idle_ms_per_s = meter.idle_rate(idle)?;
            let first = Instant::now() + probes::PERIOD / 2;
            let samples_ms = meter.per_probe(first, count, idle_ms_per_s, |_| exec_probe(b.cri, &id))?;
            Ok(PerProbe {
                samples_ms,
                idle_ms_per_s,
            })
        })();
        let removed = pod.remove(b.cri).with_context(|| format!("remove pod {}", pod.id));
        let value = measured?;
        removed?;
        Ok(value)
    })();
    let removed = group.remove();
    let value = measured?;
    removed?;
    Ok(value)
}

/// Exec probes, row 2 (`probes.rs`): `pods` pods, each probed every second by a thread of
/// its own (the kubelet's probe workers; their ticks spread over the second), the node's
/// CPU over `window`.
pub fn probe_pods(b: &Bench, handler: &str, pods: usize, window: Duration) -> Result<ManyPods> {
    let group = containerd_meter_group(b, "pods")?;
    let mut running: Vec<(RunningPod, String)> = Vec::with_capacity(pods);
    let measured = (|| -> Result<ManyPods> {
        for _ in 0..pods {
            running.push(probed_pod(b, handler, "probes")?);
        }
        let meter = Meter {
            group: &group,
            pods: running.iter().map(|(p, _)| pod_cgroup(p)).collect::<Result<_>>()?,
        };
        std::thread::sleep(probes::SETTLE);
        let begun = Instant::now();
        // The window starts once every worker has probed once.
        let from = begun + probes::PERIOD;
        let to = from + window;
        let stop = to + probes::PERIOD / 2;
        let (cpu_ns, probed) = std::thread::scope(|s| -> Result<(u64, usize)> {
            let workers: Vec<_> = running
                .iter()
                .enumerate()
                .map(|(i, (_, id))| {
                    let offset = probes::PERIOD.mul_f64(i as f64 / pods as f64);
                    s.spawn(move || -> Result<usize> {
                        let mut in_window = 0;
                        let mut tick = begun + offset;
                        while tick < stop {
                            probes::sleep_until(tick);
                            exec_probe(b.cri, id)?;
                            in_window += usize::from(tick >= from && tick < to);
                            tick += probes::PERIOD;
                            // A late probe skips the ticks it missed, as a ticker does.
                            while tick < Instant::now() {
                                tick += probes::PERIOD;
                            }
                        }
                        Ok(in_window)
                    })
                })
                .collect();
            probes::sleep_until(from);
            let c0 = meter.read();
            probes::sleep_until(to);
            let c1 = meter.read();
            let mut probed = 0;
            for w in workers {
                probed += w.join().map_err(|_| anyhow::anyhow!("a probe worker panicked"))??;
            }
            Ok((c1?.saturating_sub(c0?), probed))
        })?;
        Ok(ManyPods {
            cpu_s: cpu_ns as f64 / 1e9,
            window_s: window.as_secs_f64(),
            probes: probed,
            counted: true,
        })
    })();
    let mut removal = Ok(());
    for (pod, _) in &running {
        if let Err(e) = pod.remove(b.cri) {
            if removal.is_ok() {
                removal = Err(e.context(format!("remove pod {}", pod.id)));
            }
        }
    }
    let removed = group.remove();
    let value = measured?;
    removal?;
    removed?;
    Ok(value)
}
