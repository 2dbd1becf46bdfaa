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

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use peapod::manifest::ContainerPlan;
use peapod::runner::{self, NetworkMode, PodRecord};
pub use peapod_tests::embedded::Embedded;
use peapod_tests::embedded::{resident_processes, wait_running};
use peapod_tests::procs::{self, MemSample};

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
pub fn memory(e: &Embedded, pods: usize, samples: usize) -> Result<Vec<MemSample>> {
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
        // As for the CRI handlers: let the shims finish their start-up work.
        std::thread::sleep(Duration::from_secs(1));
        let ids: BTreeSet<String> = running.iter().map(|r| r.sandbox_id.clone()).collect();
        let mut out = Vec::with_capacity(samples);
        for i in 0..samples {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(300));
            }
            out.push(procs::sample_memory(resident_processes(&ids))?);
        }
        Ok(out)
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
