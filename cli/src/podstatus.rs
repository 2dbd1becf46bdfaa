//! A pod's status as kubelet reports it (`v1.PodStatus`), from what a runtime says of
//! each container: the `peapod` CLI shows it in `get`, `describe` and `-o yaml|json`,
//! the same way in embedded and CRI mode.
//!
//! The rules are kubelet's (`pkg/kubelet/kubelet_pods.go`):
//! - phase (`getPhase`): a failed init container fails the pod under `restartPolicy:
//!   Never`; an init container not yet succeeded, or a container waiting, keeps it
//!   Pending; a running container makes it Running; once every app container stopped it
//!   is Succeeded when all exited 0 and Failed otherwise, except that `Always` (and
//!   `OnFailure` after a failure) mean Running: the containers are being restarted.
//!   Stopped sidecars do not count (KEP-753).
//! - container states: Waiting `PodInitializing` (an app container while the pod is
//!   initialising), `ContainerCreating`, `CrashLoopBackOff` (waiting to be restarted);
//!   Running; Terminated `Completed` (exit 0), `Error`, `OOMKilled`.
//! - conditions: PodReadyToStartContainers, Initialized, ContainersReady, Ready,
//!   PodScheduled.
//! - probes (`pkg/kubelet/prober/prober_manager.go` `UpdatePodStatus`): a running
//!   container is `started` once its startup probe succeeded (at once without one), and
//!   `ready` once started and its readiness probe succeeded (at once without one); a
//!   running init container is never ready; nor is a container started before its
//!   postStart hook returned. Ready and ContainersReady carry the time of
//!   their last transition when the probes tell it.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sandbox::pod::Role;

use crate::manifest::{ContainerPlan, PodPlan, QosClass};

/// How a container ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exit {
    /// Exit status: the code, or 128 + signal.
    pub code: i32,
    /// The kernel's OOM killer ended it (a `TaskOOM` event, or CRI's `OOMKilled`).
    pub oom: bool,
    /// When it started.
    pub started: Option<jiff::Timestamp>,
    /// When it exited.
    pub finished: Option<jiff::Timestamp>,
}

impl Exit {
    /// kubelet's reason: `OOMKilled`, `Completed` (0) or `Error`.
    pub fn reason(&self) -> &'static str {
        if self.oom {
            "OOMKilled"
        } else if self.code == 0 {
            "Completed"
        } else {
            "Error"
        }
    }
}

/// What the runtime says of one container now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// Not created (yet).
    Absent,
    /// Created, not started (the shim holds it back until its turn).
    Created,
    /// Running since the given time.
    Running(Option<jiff::Timestamp>),
    /// Exited and not restarted (yet).
    Exited(Exit),
    /// Exited and waiting for its restart (kubelet's back-off).
    BackOff,
    /// Not created, for the given reason (kubelet's waiting reason and message:
    /// `ErrImagePull`, `ImagePullBackOff`, `ErrImageNeverPull`, `CreateContainerError`).
    Waiting {
        /// kubelet's reason.
        reason: String,
        /// kubelet's message.
        message: String,
    },
}

impl Observation {
    /// Whether the container was created and started at least once: neither absent,
    /// waiting to be created, nor created and held back.
    pub fn has_run(&self) -> bool {
        !matches!(
            self,
            Observation::Absent | Observation::Created | Observation::Waiting { .. }
        )
    }
}

/// One container as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The container's name in the pod.
    pub name: String,
    /// `<runtime>://<id>` (`peapod://…` embedded, `containerd://…` under CRI); empty if
    /// not created.
    pub container_id: String,
    /// The image as the manifest names it.
    pub image: String,
    /// Its state now.
    pub state: Observation,
    /// How often it was restarted.
    pub restart_count: i32,
    /// The end of its previous run, once restarted.
    pub last_exit: Option<Exit>,
    /// What the current run's probes found (embedded mode; nothing probes under CRI).
    pub probes: ProbeStatus,
}

/// What a container's probes found in its current run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeStatus {
    /// Its startup probe succeeded.
    pub started: bool,
    /// Its readiness probe's result is success.
    pub ready: bool,
    /// When its readiness probe's result last changed.
    pub ready_changed: Option<jiff::Timestamp>,
    /// Its postStart hook returned successfully.
    pub post_started: bool,
}

fn time(t: Option<jiff::Timestamp>) -> Option<Time> {
    t.map(Time)
}

fn terminated(e: &Exit, container_id: &str) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: e.code,
        reason: Some(e.reason().to_string()),
        started_at: time(e.started),
        finished_at: time(e.finished),
        container_id: (!container_id.is_empty()).then(|| container_id.to_string()),
        ..Default::default()
    }
}

/// The pod's phase: `Pending`, `Running`, `Succeeded` or `Failed` (kubelet's `getPhase`).
pub fn phase(plan: &PodPlan, observed: &[Observed]) -> &'static str {
    let find = |name: &str| observed.iter().find(|o| o.name == name);
    let (mut pending_init, mut failed_init) = (0, 0);
    let (mut unknown, mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0, 0);
    for c in &plan.containers {
        let Some(o) = find(&c.name) else {
            match c.role {
                Role::Init => pending_init += 1,
                Role::Sidecar => {
                    pending_init += 1;
                    unknown += 1;
                }
                Role::App => unknown += 1,
            }
            continue;
        };
        let restarted_after_failure = o.last_exit.as_ref().is_some_and(|e| e.code != 0);
        match (c.role, &o.state) {
            (
                Role::Init,
                Observation::Running(_) | Observation::Absent | Observation::Created | Observation::Waiting { .. },
            ) => pending_init += 1,
            (Role::Init, Observation::Exited(e)) => failed_init += usize::from(e.code != 0),
            (Role::Init, Observation::BackOff) if restarted_after_failure => failed_init += 1,
            (Role::Init, Observation::BackOff) => pending_init += 1,
            (Role::Sidecar, Observation::Running(_)) => running += 1,
            (Role::Sidecar, Observation::Exited(_) | Observation::BackOff) => {}
            (Role::Sidecar, Observation::Absent | Observation::Created | Observation::Waiting { .. }) => {
                pending_init += 1;
                waiting += 1;
            }
            (Role::App, Observation::Running(_)) => running += 1,
            (Role::App, Observation::Exited(e)) => {
                stopped += 1;
                succeeded += usize::from(e.code == 0);
            }
            (Role::App, Observation::BackOff) => stopped += 1,
            (Role::App, Observation::Absent | Observation::Created | Observation::Waiting { .. }) => waiting += 1,
        }
    }
    if failed_init > 0 && plan.restart_policy == "Never" {
        return "Failed";
    }
    if pending_init > 0 || waiting > 0 {
        return "Pending";
    }
    if running > 0 && unknown == 0 {
        return "Running";
    }
    if running == 0 && stopped > 0 && unknown == 0 {
        return match plan.restart_policy.as_str() {
            "Always" => "Running",
            _ if stopped == succeeded => "Succeeded",
            "Never" => "Failed",
            _ => "Running",
        };
    }
    "Pending"
}

/// True once every init container succeeded and every sidecar runs (the `Initialized`
/// condition; app containers may start).
fn initialized(plan: &PodPlan, observed: &[Observed]) -> bool {
    plan.containers.iter().all(|c| {
        let state = observed.iter().find(|o| o.name == c.name).map(|o| &o.state);
        match c.role {
            Role::Init => matches!(state, Some(Observation::Exited(e)) if e.code == 0),
            Role::Sidecar => matches!(state, Some(Observation::Running(_))),
            Role::App => true,
        }
    }) || plan
        .containers
        .iter()
        .filter(|c| c.role == Role::App)
        .any(|c| observed.iter().any(|o| o.name == c.name && o.state.has_run()))
}

/// One container's `v1.ContainerStatus`; `c` is the container as declared (its probes and
/// hooks).
fn container_status(o: &Observed, c: &ContainerPlan, pod_initialized: bool) -> ContainerStatus {
    let (role, probes) = (c.role, &c.probes);
    let waiting = |reason: &str| ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message: None,
        }),
        ..Default::default()
    };
    let (state, ready, started) = match &o.state {
        Observation::Absent | Observation::Created if role == Role::App && !pod_initialized => {
            (waiting("PodInitializing"), false, false)
        }
        Observation::Absent | Observation::Created => (waiting("ContainerCreating"), false, false),
        Observation::BackOff => (waiting("CrashLoopBackOff"), false, false),
        Observation::Waiting { reason, message } => (
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: Some(message.clone()),
                }),
                ..Default::default()
            },
            false,
            false,
        ),
        // kubelet: a running init container is not ready yet; a running sidecar or app
        // container is once started and its readiness probe (if any) succeeded.
        Observation::Running(since) => {
            // Not started before its postStart hook returned (kubelet's startContainer).
            let started = (c.hooks.post_start.is_none() || o.probes.post_started)
                && (probes.startup_probe.is_none() || o.probes.started);
            let ready = role != Role::Init && started && (probes.readiness_probe.is_none() || o.probes.ready);
            (
                ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: time(*since),
                    }),
                    ..Default::default()
                },
                ready,
                started,
            )
        }
        // ... and an init container is ready once it succeeded.
        Observation::Exited(e) => (
            ContainerState {
                terminated: Some(terminated(e, &o.container_id)),
                ..Default::default()
            },
            role == Role::Init && e.code == 0,
            false,
        ),
    };
    ContainerStatus {
        name: o.name.clone(),
        image: o.image.clone(),
        image_id: String::new(),
        container_id: (!o.container_id.is_empty()).then(|| o.container_id.clone()),
        ready,
        started: Some(started),
        restart_count: o.restart_count,
        state: Some(state),
        last_state: o.last_exit.as_ref().map(|e| ContainerState {
            terminated: Some(terminated(e, &o.container_id)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn condition(kind: &str, ok: bool, reason: Option<&str>, message: Option<String>) -> PodCondition {
    PodCondition {
        type_: kind.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: if ok { None } else { reason.map(str::to_string) },
        message: if ok { None } else { message },
        ..Default::default()
    }
}

/// The whole `v1.PodStatus`: phase, conditions, IPs, QoS class, start time, and the
/// statuses of init containers (sidecars included) and app containers.
pub fn pod_status(
    plan: &PodPlan,
    observed: &[Observed],
    sandbox_ready: bool,
    pod_ip: Option<&str>,
    started: Option<jiff::Timestamp>,
) -> PodStatus {
    let phase = phase(plan, observed);
    let init_done = initialized(plan, observed);
    let mut init_statuses = Vec::new();
    let mut app_statuses = Vec::new();
    for c in &plan.containers {
        let o = observed.iter().find(|o| o.name == c.name).cloned().unwrap_or(Observed {
            name: c.name.clone(),
            container_id: String::new(),
            image: c.image.clone(),
            state: Observation::Absent,
            restart_count: 0,
            last_exit: None,
            probes: ProbeStatus::default(),
        });
        let status = container_status(&o, c, init_done);
        match c.role {
            Role::App => app_statuses.push(status),
            Role::Init | Role::Sidecar => init_statuses.push(status),
        }
    }
    let unready: Vec<&str> = app_statuses
        .iter()
        .chain(
            init_statuses
                .iter()
                .zip(&plan.containers)
                .filter(|(_, c)| c.role == Role::Sidecar)
                .map(|(s, _)| s),
        )
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let ready = unready.is_empty() && !terminal;
    let (not_ready_reason, not_ready_message) = if terminal {
        ("PodCompleted", None)
    } else {
        (
            "ContainersNotReady",
            Some(format!("containers with unready status: [{}]", unready.join(" "))),
        )
    };
    let pending_init: Vec<&str> = init_statuses
        .iter()
        .filter(|s| {
            !s.ready
                && s.state
                    .as_ref()
                    .is_none_or(|st| st.terminated.as_ref().is_none_or(|t| t.exit_code != 0))
        })
        .map(|s| s.name.as_str())
        .collect();
    // The readiness probes' last change, when one decided (kubelet records each transition
    // as it sees it; the probes' records tell it here).
    let ready_changed = plan
        .containers
        .iter()
        .filter(|c| c.probes.readiness_probe.is_some())
        .filter_map(|c| observed.iter().find(|o| o.name == c.name))
        .filter(|o| matches!(o.state, Observation::Running(_)))
        .filter_map(|o| o.probes.ready_changed)
        .max();
    let with_time = |mut c: PodCondition| {
        c.last_transition_time = ready_changed.map(Time);
        c
    };
    let conditions = vec![
        condition("PodReadyToStartContainers", sandbox_ready, None, None),
        condition(
            "Initialized",
            init_done,
            Some("ContainersNotInitialized"),
            Some(format!(
                "containers with incomplete status: [{}]",
                pending_init.join(" ")
            )),
        ),
        with_time(condition(
            "Ready",
            ready,
            Some(not_ready_reason),
            not_ready_message.clone(),
        )),
        with_time(condition(
            "ContainersReady",
            ready,
            Some(not_ready_reason),
            not_ready_message,
        )),
        condition("PodScheduled", true, None, None),
    ];
    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(conditions),
        pod_ip: pod_ip.map(str::to_string),
        pod_ips: pod_ip.map(|ip| vec![PodIP { ip: ip.to_string() }]),
        qos_class: Some(
            match plan.qos {
                QosClass::Guaranteed => "Guaranteed",
                QosClass::Burstable => "Burstable",
                QosClass::BestEffort => "BestEffort",
            }
            .to_string(),
        ),
        start_time: time(started),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        container_statuses: Some(app_statuses),
        ..Default::default()
    }
}

/// kubectl's STATUS column (`printPod`): `Unknown` when the phase is; while initialising, the first init container
/// still working (`Init:1/3`, `Init:Error`, `Init:CrashLoopBackOff`; started sidecars
/// pass); once initialised, the reason of the last app container not running
/// (`Completed`, `Error`, `OOMKilled`, `ContainerCreating`, …); else the phase.
pub fn status_column(plan: &PodPlan, status: &PodStatus) -> String {
    let sidecar = |name: &str| {
        plan.containers
            .iter()
            .any(|c| c.name == name && c.role == Role::Sidecar)
    };
    let mut reason = status.phase.clone().unwrap_or_else(|| "Unknown".into());
    if reason == "Unknown" {
        // Nobody can tell the containers' states (peapod: the pod's shim is gone).
        return reason;
    }
    let inits = status.init_container_statuses.as_deref().unwrap_or_default();
    let mut initializing = false;
    for (i, s) in inits.iter().enumerate() {
        let state = s.state.clone().unwrap_or_default();
        let waiting = state.waiting.and_then(|w| w.reason).unwrap_or_default();
        match &state.terminated {
            Some(t) if t.exit_code == 0 => continue,
            _ if sidecar(&s.name) && s.started == Some(true) => continue,
            Some(t) => {
                reason = format!(
                    "Init:{}",
                    t.reason.clone().unwrap_or_else(|| format!("ExitCode:{}", t.exit_code))
                )
            }
            None if !waiting.is_empty() && waiting != "PodInitializing" => reason = format!("Init:{waiting}"),
            None => reason = format!("Init:{i}/{}", inits.len()),
        }
        initializing = true;
        break;
    }
    let initialized = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Initialized" && c.status == "True");
    if !initializing || initialized {
        let mut has_running = false;
        for s in status.container_statuses.as_deref().unwrap_or_default().iter().rev() {
            let state = s.state.clone().unwrap_or_default();
            if let Some(w) = state.waiting.and_then(|w| w.reason).filter(|r| !r.is_empty()) {
                reason = w;
            } else if let Some(t) = &state.terminated {
                reason = t.reason.clone().unwrap_or_else(|| format!("ExitCode:{}", t.exit_code));
            } else if s.ready && state.running.is_some() {
                has_running = true;
            }
        }
        if reason == "Completed" && has_running {
            let ready = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            reason = if ready { "Running" } else { "NotReady" }.into();
        }
    }
    reason
}

/// kubectl's READY column: ready app containers and sidecars over their number.
pub fn ready_column(plan: &PodPlan, status: &PodStatus) -> String {
    let statuses = status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten());
    let counted = |name: &str| plan.containers.iter().any(|c| c.name == name && c.role != Role::Init);
    let (mut ready, mut total) = (0, 0);
    for s in statuses.filter(|s| counted(&s.name)) {
        total += 1;
        ready += usize::from(s.ready);
    }
    format!("{ready}/{total}")
}

/// The RESTARTS column: restarts of every container.
pub fn restarts(status: &PodStatus) -> i32 {
    status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .map(|s| s.restart_count)
        .sum()
}

/// One line of `describe`'s Events: what happened to the pod, when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodEvent {
    /// When.
    pub time: jiff::Timestamp,
    /// `Warning` rather than `Normal`.
    pub warning: bool,
    /// kubelet's reason word: `Created`, `Started`, `Killing`, `OOMKilled`, …
    pub reason: String,
    /// The sentence.
    pub message: String,
}

/// Events told by the container statuses themselves (created, started, exited), for a
/// runtime that keeps no event history (CRI mode), oldest first.
pub fn events_from_statuses(observed: &[(Observed, Option<jiff::Timestamp>)]) -> Vec<PodEvent> {
    let mut out = Vec::new();
    let event = |time: jiff::Timestamp, warning: bool, reason: &str, message: String| PodEvent {
        time,
        warning,
        reason: reason.to_string(),
        message,
    };
    for (o, created) in observed {
        if let Some(t) = created {
            out.push(event(*t, false, "Created", format!("Created container {}", o.name)));
        }
        let exit = match &o.state {
            Observation::Running(Some(t)) => {
                out.push(event(*t, false, "Started", format!("Started container {}", o.name)));
                None
            }
            Observation::Exited(e) => Some(e),
            _ => None,
        };
        if let Some(e) = exit {
            if let Some(t) = e.started {
                out.push(event(t, false, "Started", format!("Started container {}", o.name)));
            }
            if let Some(t) = e.finished {
                out.push(exit_event(t, &o.name, e));
            }
        }
    }
    out.sort_by_key(|e| e.time);
    out
}

/// The event of a container's exit: Normal for exit 0, else a Warning with the code.
pub fn exit_event(time: jiff::Timestamp, name: &str, e: &Exit) -> PodEvent {
    PodEvent {
        time,
        warning: e.code != 0,
        reason: if e.oom { "OOMKilled" } else { "Exited" }.to_string(),
        message: format!("Container {name} exited with code {} ({})", e.code, e.reason()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{parse, plan};

    fn plan_of(yaml: &str) -> PodPlan {
        plan(&parse("t.yaml", yaml).unwrap(), 8 << 30).unwrap()
    }

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  restartPolicy: RESTART\n  initContainers:\n  - {name: setup, image: busybox}\n  - {name: side, image: busybox, restartPolicy: Always}\n  containers:\n  - {name: app, image: busybox}\n";

    fn obs(name: &str, state: Observation) -> Observed {
        Observed {
            name: name.into(),
            container_id: format!("peapod://{name}"),
            image: "busybox".into(),
            state,
            restart_count: 0,
            last_exit: None,
            probes: ProbeStatus::default(),
        }
    }

    fn exited(code: i32) -> Observation {
        Observation::Exited(Exit {
            code,
            ..Default::default()
        })
    }

    #[test]
    fn phases_follow_kubelet() {
        let never = plan_of(&POD.replace("RESTART", "Never"));
        let always = plan_of(&POD.replace("RESTART", "Always"));
        let run = || Observation::Running(None);
        // Nothing yet, or init running: Pending.
        assert_eq!(phase(&never, &[]), "Pending");
        assert_eq!(phase(&never, &[obs("setup", run())]), "Pending");
        // Init failed under Never: Failed; under Always it will be restarted: Pending.
        let failed_init = [obs("setup", exited(1)), obs("side", Observation::Absent)];
        assert_eq!(phase(&never, &failed_init), "Failed");
        assert_eq!(phase(&always, &failed_init), "Pending");
        // Init done, sidecar and app running: Running.
        let up = [obs("setup", exited(0)), obs("side", run()), obs("app", run())];
        assert_eq!(phase(&never, &up), "Running");
        // App done; a stopped sidecar does not count.
        let done = [obs("setup", exited(0)), obs("side", exited(137)), obs("app", exited(0))];
        assert_eq!(phase(&never, &done), "Succeeded");
        let failed = [obs("setup", exited(0)), obs("side", exited(137)), obs("app", exited(2))];
        assert_eq!(phase(&never, &failed), "Failed");
        // Always: stopped app containers are being restarted.
        assert_eq!(phase(&always, &done), "Running");
        assert_eq!(
            phase(&plan_of(&POD.replace("RESTART", "OnFailure")), &failed),
            "Running"
        );
    }

    #[test]
    fn statuses_carry_kubelet_reasons_and_conditions() {
        let p = plan_of(&POD.replace("RESTART", "Never"));
        let initializing = [
            obs("setup", Observation::Running(None)),
            obs("app", Observation::Created),
        ];
        let s = pod_status(&p, &initializing, true, Some("10.0.0.2"), None);
        let app = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(
            app.state.as_ref().unwrap().waiting.as_ref().unwrap().reason.as_deref(),
            Some("PodInitializing")
        );
        assert_eq!(status_column(&p, &s), "Init:0/2");
        let cond = |s: &PodStatus, t: &str| {
            s.conditions
                .as_ref()
                .unwrap()
                .iter()
                .find(|c| c.type_ == t)
                .unwrap()
                .status
                .clone()
        };
        assert_eq!(cond(&s, "Initialized"), "False");
        assert_eq!(s.pod_ip.as_deref(), Some("10.0.0.2"));

        let oom = Observation::Exited(Exit {
            code: 137,
            oom: true,
            ..Default::default()
        });
        // A running sidecar keeps the pod Running (until it is stopped after the apps).
        let app_oom = obs("app", oom);
        let s = pod_status(
            &p,
            &[
                obs("setup", exited(0)),
                obs("side", Observation::Running(None)),
                app_oom.clone(),
            ],
            true,
            None,
            None,
        );
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let s = pod_status(
            &p,
            &[obs("setup", exited(0)), obs("side", exited(143)), app_oom],
            true,
            None,
            None,
        );
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        assert_eq!(status_column(&p, &s), "OOMKilled");
        assert_eq!(cond(&s, "Initialized"), "True");
        assert_eq!(cond(&s, "Ready"), "False");

        let s = pod_status(
            &p,
            &[
                obs("setup", exited(3)),
                obs("side", Observation::Absent),
                obs("app", Observation::Absent),
            ],
            true,
            None,
            None,
        );
        assert_eq!(status_column(&p, &s), "Init:Error");
        let up = [
            obs("setup", exited(0)),
            obs("side", Observation::Running(None)),
            obs("app", Observation::Running(None)),
        ];
        let s = pod_status(&p, &up, true, None, None);
        assert_eq!(
            (status_column(&p, &s).as_str(), cond(&s, "Ready").as_str()),
            ("Running", "True")
        );
    }
}
