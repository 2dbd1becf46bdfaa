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
//! 5. memory: PSS and RSS of the pods' shims (one per pod) and any helper they keep;
//! 6. exec probes: a readiness probe of `/bin/true` every second, run by the shim itself
//!    (`probes.rs` says what is measured).
//!
//! Everything is removed again, and [`Embedded::finish`] checks that it was: pod state and
//! data dirs, the shim's per-task state, shim sockets and processes, mounts under the temp
//! dir, pod cgroups.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context as _, Result};
use peapod::manifest::ContainerPlan;
use peapod::runner::{self, NetworkMode, PodRecord};
use peapod_tests::cpu::CpuCgroup;
pub use peapod_tests::embedded::Embedded;
use peapod_tests::embedded::{resident_processes, wait_running};
use peapod_tests::procs::{self, MemSample};
use sandbox::pod::probe::{ProbeKind, ProbeResult};

use crate::probes::{self, ManyPods, Meter, PerProbe};
use crate::scenarios::PodTimes;

/// The column's handler name (in `BENCH_HANDLERS`, the JSON and the table).
pub const HANDLER: &str = "peapod-embedded";
/// The Kubernetes namespace of the bench's embedded pods.
pub const NAMESPACE: &str = "peapod-bench";

/// `network` as the table names it.
pub fn network_name(network: NetworkMode) -> &'static str {
    match network {
        NetworkMode::None => "none (loopback only)",
        NetworkMode::Cni => "cni (peapod's bridge peapod0)",
        NetworkMode::Host => "host",
    }
}

/// Row 1-3: see the module docs.
pub fn pod_cycle(e: &Embedded, execs: usize) -> Result<PodTimes> {
    let plan = e.plan(
        "bench",
        "Never",
        "  - {name: sidecar, image: busybox, restartPolicy: Always, command: [sleep, '3600']}\n",
        "  - {name: app, image: busybox, command: [sleep, '3600']}\n",
        "",
    )?;
    let begun = Instant::now();
    let record = e.run(&plan)?;
    let measured = (|| -> Result<_> {
        wait_running(e.paths(), &record, &["sidecar", "app"])?;
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
            e.delete(&record)?;
            Ok(PodTimes {
                ready,
                execs,
                teardown: t.elapsed(),
            })
        }
        Err(err) => {
            let _ = e.delete(&record);
            Err(err)
        }
    }
}

/// Row 4: see the module docs. Returns the total.
pub fn churn(e: &Embedded, containers: usize) -> Result<Duration> {
    let plan = e.plan(
        "churn",
        "Never",
        "",
        "  - {name: sleep, image: busybox, command: [sleep, '3600']}\n  - {name: churn, image: busybox, command: [/bin/true]}\n",
        "",
    )?;
    // The template for the churned containers: the plan's checked `churn` container,
    // kept out of the pod itself.
    let mut plan = plan;
    let template: ContainerPlan = plan.containers.pop().context("the plan's churn container")?;
    let record = e.run(&plan)?;
    e.with_pod(record, |record| {
        wait_running(e.paths(), record, &["sleep"])?;
        let mut configs: Vec<ContainerPlan> = (0..containers)
            .map(|i| ContainerPlan {
                name: format!("true-{i}"),
                ..template.clone()
            })
            .collect();
        let begun = Instant::now();
        for c in configs.drain(..) {
            let task = runner::add_container(e.paths(), record, &c)?;
            e.note_task(record, &task);
            let code = runner::wait_container(record, &c.name)?;
            ensure!(code == 0, "container {} (/bin/true) exited {code}", c.name);
            runner::remove_container(e.paths(), record, &c.name)?;
        }
        Ok(begun.elapsed())
    })
}

/// Row 5: `pods` pods of one `sleep` app each, all running, then `samples` readings of
/// their shims' memory; the pods deleted.
pub fn memory(e: &Embedded, pods: usize, samples: usize) -> Result<(Vec<MemSample>, Option<u64>)> {
    let mut running: Vec<PodRecord> = Vec::with_capacity(pods);
    let measured = (|| -> Result<_> {
        for _ in 0..pods {
            let plan = e.plan(
                "mem",
                "Never",
                "",
                "  - {name: sleep, image: busybox, command: [sleep, '3600']}\n",
                "",
            )?;
            running.push(e.run(&plan)?);
            wait_running(e.paths(), running.last().expect("just pushed"), &["sleep"])?;
        }
        std::thread::sleep(crate::scenarios::MEMORY_SETTLE);
        let ids: BTreeSet<String> = running.iter().map(|r| r.sandbox_id.clone()).collect();
        let mut out = Vec::with_capacity(samples);
        for i in 0..samples {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(300));
            }
            out.push(procs::sample_memory(resident_processes(&ids))?);
        }
        Ok((out, None))
    })();
    let mut removal = Ok(());
    for record in &running {
        if let Err(e) = e.delete(record) {
            if removal.is_ok() {
                removal = Err(e);
            }
        }
    }
    let samples = measured?;
    removal?;
    Ok(samples)
}

/// The embedded column of the at-once row: `pods` pods of one `sleep` app each, run
/// from a thread each (`runner::run`, as `peapod run` in parallel), each waited for until
/// its app runs; then deleted.
pub fn at_once(e: &Embedded, pods: usize) -> Result<crate::scenarios::AtOnce> {
    let plans = (0..pods)
        .map(|_| {
            e.plan(
                "burst",
                "Never",
                "",
                "  - {name: sleep, image: busybox, command: [sleep, '3600']}\n",
                "",
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let begun = Instant::now();
    let results: Vec<Result<(PodRecord, Duration)>> = std::thread::scope(|scope| {
        let threads: Vec<_> = plans
            .iter()
            .map(|plan| {
                scope.spawn(move || {
                    let record = e.run(plan)?;
                    match wait_running(e.paths(), &record, &["sleep"]) {
                        Ok(()) => Ok((record, begun.elapsed())),
                        Err(err) => {
                            let _ = e.delete(&record);
                            Err(err)
                        }
                    }
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().expect("pod thread")).collect()
    });
    crate::scenarios::finish_burst(results, |record| e.delete(record), begun.elapsed(), None)
}

/// The embedded column of the containers-per-pod rows: one pod of `containers` `sleep`
/// containers (`runner::run` creates them in order and starts them at once), waited for
/// until all run: the mean time per container, and one reading of its shim's memory.
pub fn containers_in_one_pod(e: &Embedded, containers: usize) -> Result<(Duration, MemSample)> {
    let list: String = (0..containers)
        .map(|i| format!("  - {{name: sleep-{i}, image: busybox, command: [sleep, '3600']}}\n"))
        .collect();
    let plan = e.plan("many", "Never", "", &list, "")?;
    let names: Vec<String> = (0..containers).map(|i| format!("sleep-{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let begun = Instant::now();
    let record = e.run(&plan)?;
    let measured = (|| -> Result<_> {
        wait_running(e.paths(), &record, &names)?;
        let each = begun.elapsed() / u32::try_from(containers.max(1)).unwrap_or(u32::MAX);
        std::thread::sleep(crate::scenarios::MEMORY_SETTLE);
        let ids = BTreeSet::from([record.sandbox_id.clone()]);
        Ok((each, procs::sample_memory(resident_processes(&ids))?))
    })();
    let deleted = e.delete(&record);
    let out = measured?;
    deleted?;
    Ok(out)
}

/// A pod of one `sleep` app with an exec readiness probe of [`probes::COMMAND`] every
/// second after `initial_delay_s`.
fn probed_plan(e: &Embedded, name: &str, initial_delay_s: u64) -> Result<peapod::manifest::PodPlan> {
    let app = format!(
        "  - name: app\n    image: busybox\n    command: [sleep, '3600']\n    readinessProbe: {{exec: {{command: [{}]}}, \
         initialDelaySeconds: {initial_delay_s}, periodSeconds: {}, timeoutSeconds: {}}}\n",
        probes::COMMAND,
        probes::PERIOD.as_secs(),
        probes::TIMEOUT.as_secs()
    );
    e.plan(name, "Never", "", &app, "")
}

/// Runs `plan` and moves its shim into `group` (only the shim: a helper or probe process
/// it forked may be joining a container's cgroup right then); waits until the app runs.
fn run_probed(e: &Embedded, plan: &peapod::manifest::PodPlan, group: &mut CpuCgroup) -> Result<PodRecord> {
    let record = e.run(plan)?;
    let adopted = (|| -> Result<()> {
        let found = resident_processes(&BTreeSet::from([record.sandbox_id.clone()]));
        let shim = found
            .iter()
            .find(|p| p.args.iter().any(|a| a == "-id"))
            .with_context(|| format!("no shim process serves pod {}", record.key))?;
        let moved = group.adopt(shim.pid).context("move the shim into the CPU cgroup")?;
        ensure!(moved, "the shim of pod {} (pid {}) has gone", record.key, shim.pid);
        wait_running(e.paths(), &record, &["app"])
    })();
    match adopted {
        Ok(()) => Ok(record),
        Err(err) => {
            let _ = e.delete(&record);
            Err(err)
        }
    }
}

/// The app of `record` is ready (its readiness probe succeeded) and no probe failed.
fn check_probed(e: &Embedded, record: &PodRecord) -> Result<()> {
    let view = runner::observe(e.paths(), record);
    let ready = view
        .status
        .container_statuses
        .iter()
        .flatten()
        .any(|c| c.name == "app" && c.ready);
    let failed: Vec<String> = view
        .events
        .iter()
        .filter(|ev| ev.reason == "Unhealthy")
        .map(|ev| ev.message.clone())
        .collect();
    ensure!(
        ready && failed.is_empty(),
        "pod {}: app ready {ready}, probe failures {failed:?}",
        record.key
    );
    Ok(())
}

/// When the first readiness probe of `record`'s app ended: the time of its record in the
/// pod's event log (written when the result changed to success), polled until `deadline`.
fn first_probe(e: &Embedded, record: &PodRecord, deadline: Instant) -> Result<Instant> {
    let task = record.task_id("app").context("the pod has no app task")?.to_string();
    let log = record.event_log(e.paths());
    loop {
        let envelopes = proto::eventlog::read(&log).with_context(|| format!("read {}", log.display()))?;
        let found = envelopes.iter().find_map(|env| {
            let r = proto::eventlog::ProbeRecord::from_envelope(env)?;
            (r.container_id == task && r.probe == ProbeKind::Readiness).then(|| (r, env.timestamp.clone()))
        });
        if let Some((r, at)) = found {
            ensure!(
                r.result == ProbeResult::Success,
                "the first probe of pod {} failed: {}",
                record.key,
                r.message
            );
            let at = at.into_option().context("probe record without a timestamp")?;
            let at = UNIX_EPOCH
                + Duration::new(
                    u64::try_from(at.seconds).unwrap_or(0),
                    u32::try_from(at.nanos).unwrap_or(0),
                );
            let age = SystemTime::now().duration_since(at).unwrap_or_default();
            return Ok(Instant::now() - age);
        }
        ensure!(
            Instant::now() < deadline,
            "pod {}: no readiness probe record in {}",
            record.key,
            log.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Exec probes, row 1 (`probes.rs`): one pod whose readiness probe starts after
/// `idle` plus three seconds, an idle window of up to `idle` before it, then `count` of the shim's
/// probes, found on the clock by the first one's record.
pub fn probe_cost(e: &Embedded, count: usize, idle: Duration) -> Result<PerProbe> {
    let delay = idle + Duration::from_secs(3);
    let plan = probed_plan(e, "probe", delay.as_secs())?;
    let mut group = CpuCgroup::create(&probes::cgroup_name("probe"))?;
    let begun = Instant::now();
    let measured = run_probed(e, &plan, &mut group).and_then(|record| {
        e.with_pod(record, |record| {
            let meter = Meter {
                group: &group,
                pods: vec![peapod::pods::pod_cgroup(&record.uid)],
            };
            std::thread::sleep(probes::SETTLE);
            // The idle window ends half a second before the initial delay can have passed
            // (the shim counts it from the container's start, after `begun`).
            let left = (begun + delay - probes::PERIOD / 2).saturating_duration_since(Instant::now());
            ensure!(
                left >= Duration::from_secs(1),
                "the pod took too long to start: {left:?} left for the idle window (raise BENCH_PROBE_IDLE)"
            );
            let idle_ms_per_s = meter.idle_rate(left.min(idle))?;
            let first = first_probe(e, record, begun + delay + Duration::from_secs(10))?;
            // Probe 0 is the one whose record gave the clock; the measured ones follow it.
            let samples_ms = meter.per_probe(first + probes::PERIOD, count, idle_ms_per_s, |_| Ok(()))?;
            check_probed(e, record)?;
            Ok(PerProbe {
                samples_ms,
                idle_ms_per_s,
            })
        })
    });
    let removed = group.remove();
    let value = measured?;
    removed?;
    Ok(value)
}

/// Exec probes, row 2 (`probes.rs`): `pods` pods, each with its probe every second run by
/// its shim, the node's CPU over `window`.
pub fn probe_pods(e: &Embedded, pods: usize, window: Duration) -> Result<ManyPods> {
    let mut group = CpuCgroup::create(&probes::cgroup_name("pods"))?;
    let mut running: Vec<PodRecord> = Vec::with_capacity(pods);
    let measured = (|| -> Result<ManyPods> {
        for _ in 0..pods {
            let plan = probed_plan(e, "probes", 0)?;
            running.push(run_probed(e, &plan, &mut group)?);
        }
        let meter = Meter {
            group: &group,
            pods: running.iter().map(|r| peapod::pods::pod_cgroup(&r.uid)).collect(),
        };
        std::thread::sleep(probes::SETTLE + probes::PERIOD);
        let c0 = meter.read()?;
        std::thread::sleep(window);
        let c1 = meter.read()?;
        for record in &running {
            check_probed(e, record)?;
        }
        let periods = usize::try_from(window.as_millis() / probes::PERIOD.as_millis()).unwrap_or(usize::MAX);
        Ok(ManyPods {
            cpu_s: c1.saturating_sub(c0) as f64 / 1e9,
            window_s: window.as_secs_f64(),
            probes: pods * periods,
            counted: false,
        })
    })();
    let mut removal = Ok(());
    for record in &running {
        if let Err(err) = e.delete(record) {
            if removal.is_ok() {
                removal = Err(err);
            }
        }
    }
    let removed = group.remove();
    let value = measured?;
    removal?;
    removed?;
    Ok(value)
}
