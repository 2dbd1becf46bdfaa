//! The prober of a pod the shim supervises itself (the `peapod` CLI's embedded mode, where
//! no kubelet probes): kubelet's probe workers (`pkg/kubelet/prober/worker.go`) in the
//! shim, so probes keep running while no CLI does.
//!
//! Each probe of each run of a container gets one thread, started with the run
//! ([`start`]) and ending with it (exit, restart, delete) or once its worker is done.
//! `sandbox::pod::probe::Worker` decides when a check is due and what its outcome calls
//! for; the thread runs the check (an exec in the container, or a network check from the
//! pod's network namespace, which the thread enters first), appends what matters to the
//! pod's event log ([`ProbeRecord`]: a changed result, the first failure of a run of
//! them, a kill), and kills the container when its liveness or startup probe failed:
//! SIGTERM, SIGKILL after the probe's `terminationGracePeriodSeconds` or the pod's grace.
//! The container then exits, and the supervisor restarts it by the pod's restart policy,
//! as kubelet does.
//!
//! Lifecycle hooks run here too: [`post_start`] right after a container's start (its
//! probes begin once it returned), and the preStop hooks when the supervisor terminates
//! the pod (`supervisor::Host::pre_stop`, in `crate::service`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::eventlog::{HookRecord, ProbeRecord, PROBE_TOPIC, PROBE_TYPE_URL};
use sandbox::pod::hooks::{Hook, HookKind};
use sandbox::pod::probe::{self, Handler, Outcome, ProbeKind, ProbeResult, Probes, Worker};

use crate::service::Service;

/// Starts the probes of the run of container `id` whose creation order is `seq` and whose
/// init is `pid` (called right after its start).
pub(crate) fn start(svc: &Service, id: &str, seq: u64, pid: u32, probes: &Probes) {
    // Liveness and readiness wait for the startup probe, when there is one.
    let started = Arc::new(AtomicBool::new(probes.startup_probe.is_none()));
    let t0 = Instant::now();
    for (kind, p) in probes.iter() {
        let run = Run {
            svc: svc.clone(),
            id: id.to_string(),
            seq,
            pid,
            started: started.clone(),
        };
        let worker = Worker::new(kind, p.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("probe-{}", kind.title().to_ascii_lowercase()))
            .spawn(move || run.work(worker, t0));
        if let Err(e) = spawned {
            tracing::warn!(id, probe = ?kind, error = %e, "cannot start the probe's thread");
        }
    }
}

/// One run of one container, as a probe thread sees it.
struct Run {
    svc: Service,
    id: String,
    seq: u64,
    pid: u32,
    started: Arc<AtomicBool>,
}

impl Run {
    fn work(self, mut worker: Worker, t0: Instant) {
        let kind = worker.kind();
        if !matches!(worker.probe().handler, Handler::Exec { .. }) {
            let pid = i32::try_from(self.pid).unwrap_or(i32::MAX);
            if let Err(e) = probe::enter_network_namespace(pid) {
                // The container is gone already (its netns with it): nothing to probe.
                tracing::info!(id = %self.id, probe = ?kind, error = %e, "cannot enter the pod's network namespace");
                return;
            }
        }
        let period = worker.probe().period();
        let timeout = worker.probe().timeout();
        let mut next = worker.first_check(t0);
        tracing::debug!(id = %self.id, probe = ?kind, "probe started");
        while self.svc.probe_wait(&self.id, self.seq, next) {
            next = Instant::now() + period;
            if !worker.may_check(self.started.load(Ordering::SeqCst)) {
                if worker.done() {
                    break;
                }
                continue;
            }
            let outcome = match &worker.probe().handler {
                Handler::Exec { command } => self.svc.probe_exec(&self.id, self.seq, command, timeout),
                Handler::HttpGet(get) => probe::http_get(get, timeout),
                Handler::TcpSocket { host, port } => probe::tcp_socket(host, *port, timeout),
                Handler::Grpc { host, port, service } => probe::grpc(host, *port, service, timeout),
            };
            let verdict = worker.record(&outcome);
            if kind == ProbeKind::Startup && verdict.changed == Some(ProbeResult::Success) {
                self.started.store(true, Ordering::SeqCst);
            }
            if verdict.changed.is_some() || verdict.unhealthy || verdict.kill {
                let record = ProbeRecord {
                    container_id: self.id.clone(),
                    probe: kind,
                    result: worker.result(),
                    changed: verdict.changed.is_some(),
                    message: match &outcome {
                        Outcome::Success => String::new(),
                        Outcome::Failure(m) => m.clone(),
                    },
                    unhealthy: verdict.unhealthy,
                    kill: verdict.kill,
                };
                tracing::info!(id = %self.id, probe = ?kind, result = ?record.result, message = %record.message, "probe");
                let grace = worker.probe().termination_grace_period_seconds.map(Duration::from_secs);
                if !self.svc.probe_record(&self.id, self.seq, &record, grace) {
                    break;
                }
            }
            if worker.done() {
                break;
            }
        }
        tracing::debug!(id = %self.id, probe = ?kind, "probe ended");
    }
}

/// How long a postStart hook may run at most (kubelet sets it no limit; a hook that hangs
/// this long is reported failed and the container killed).
const POST_START_LIMIT: Duration = Duration::from_secs(24 * 3600);

/// Runs the postStart `hook` of the run `seq` of container `id` (init `pid`) on a thread
/// of its own, right after its start, and records it; on success starts its `probes`, on
/// failure the container is killed (`Service::hook_record`).
pub(crate) fn post_start(svc: &Service, id: &str, seq: u64, pid: u32, hook: &Hook, probes: &Probes) {
    let (svc, task, hook, probes) = (svc.clone(), id.to_string(), hook.clone(), probes.clone());
    let spawned = std::thread::Builder::new().name("post-start".into()).spawn(move || {
        let id = task;
        let result = svc.run_hook(&id, seq, pid, &hook, Instant::now() + POST_START_LIMIT);
        let record = HookRecord {
            container_id: id.clone(),
            hook: HookKind::PostStart,
            handler: hook.describe(),
            ok: result.is_ok(),
            message: result.err().unwrap_or_default(),
        };
        tracing::info!(id, ok = record.ok, message = %record.message, "postStart hook ran");
        if svc.hook_record(&id, seq, &record) && record.ok && !probes.is_empty() {
            start(&svc, &id, seq, pid, &probes);
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(id, error = %e, "cannot start the postStart hook's thread");
    }
}

/// A probe record as the event log keeps it.
pub(crate) fn encode(record: &ProbeRecord) -> (&'static str, &'static str, Vec<u8>) {
    (
        PROBE_TOPIC,
        PROBE_TYPE_URL,
        serde_json::to_vec(record).expect("a probe record encodes"),
    )
}
