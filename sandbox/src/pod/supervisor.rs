//! Pod supervision: when a pod's members may start, whether an exited member restarts,
//! when sidecars stop, and how the pod terminates. The decisions and their timing live
//! here; the host (the shim's Task service) keeps the members, executes what is decided
//! and publishes the events.
//!
//! The rules, in the order a pod lives them:
//! - **Start gate** (KEP-753 native sidecars): init containers run one by one, each to
//!   success; a sidecar starts once the init containers before it succeeded and the
//!   sidecars before it run; app containers start after all of those and do not wait for
//!   each other. With a declared container list ([`DeclaredContainer`]) declaration order
//!   counts, including containers the host has not seen yet; without one, creation order.
//!   An init container (or sidecar) that exited non-zero fails every member after it.
//!   The rule itself is [`gate_declared`] / [`gate`]; [`wait_for_gate`] waits on it.
//! - **Restarts**, only in pods the host supervises itself (no kubelet above it): by
//!   [`RestartPolicy::restarts`] (kubelet's `ShouldContainerBeRestarted`, sidecars always
//!   until the pod completes), after [`RestartPolicy::backoff`] (KEP-4603's 1 s doubling
//!   to 60 s), counted per container name.
//! - **Completion** (KEP-753): once every declared app container is done for good, the
//!   sidecars are stopped in reverse declaration order: SIGTERM, then SIGKILL to those
//!   still running after the grace period (kubelet
//!   `pkg/kubelet/kuberuntime/kuberuntime_termination_order.go`).
//! - **Termination** (kubelet `pkg/kubelet/kuberuntime/kuberuntime_container.go`
//!   `killContainersWithSyncResult`, then `StopPodSandbox`): the preStop hooks of every
//!   running member, sidecars' with the apps' (KEP-753), at once; then SIGTERM to every
//!   running member at once, in one pass; SIGKILL to the survivors when the grace period
//!   is over; then the caller's signal to the sandbox (pause) process. Unlike kubelet
//!   since KEP-753's termination ordering, sidecars get their SIGTERM with the apps, not
//!   after them: peapod's rule is one SIGTERM pass for the whole pod.
//!
//! Locking: the host keeps its state (members and each pod's [`Supervision`]) under one
//! [`Mutex`] and notifies one [`Condvar`] on every member state change ([`Host`]). Every
//! decision is made under that lock, so it is atomic with the host's state changes and
//! the events it publishes with them. Waits (the gate, the grace period) release the
//! lock through the condvar. Restarts are executed by [`Host::restart`] without the lock.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::pod::{gate, gate_declared, DeclaredContainer, Gate, MemberView, RestartPolicy, Role};
use crate::signal::SignalNumber;

/// How long termination waits for SIGKILLed members to be reaped before it signals the
/// sandbox.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// How often a gated start looks again without being notified.
const GATE_POLL: Duration = Duration::from_secs(1);

/// A pod member (any container of the pod but its sandbox) as the host reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Task id, unique in the host; what [`PodState::signal`] and [`Host::restart`] take.
    /// A restarted container keeps its id.
    pub id: String,
    /// Its name in the pod, as declared ([`DeclaredContainer::name`]).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Creation order in the host, increasing; a restart creates it anew (a new `seq`).
    pub seq: u64,
    /// Its init process was started and has not exited.
    pub running: bool,
    /// Its init's exit code (the code, or 128 + signal), once exited.
    pub exit_code: Option<i32>,
}

impl Member {
    /// As the start gate sees it (named by its pod name).
    fn view(&self) -> MemberView {
        MemberView {
            id: self.name.clone(),
            role: self.role,
            running: self.running,
            exit_code: self.exit_code,
        }
    }
}

/// What the supervisor keeps about one pod. The host stores it with the pod, under its
/// state lock, and hands it out through [`PodState::supervision`].
#[derive(Debug, Clone)]
pub struct Supervision {
    containers: Vec<DeclaredContainer>,
    /// Deleted members (CRI deletes an exited container's task); the gate still needs
    /// their exit codes.
    history: Vec<Member>,
    grace: Duration,
    terminating: bool,
    restart_policy: Option<RestartPolicy>,
    /// Restarts so far, by container name.
    restarts: HashMap<String, u32>,
    /// The app containers are done and will not restart: sidecars are being stopped.
    completing: bool,
}

/// What a member's exit calls for ([`Supervision::exited`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exited {
    /// Nothing: the pod is not supervised or is terminating, or the member is done and
    /// other members keep the pod going.
    Nothing,
    /// Restart the member after `delay` (the back-off of its restart count so far).
    Restart {
        /// Back-off before the restart.
        delay: Duration,
    },
    /// Every app container is done for good: stop the sidecars `ids` (task ids, reverse
    /// declaration order) with SIGTERM, SIGKILL after `grace`.
    StopSidecars {
        /// Running sidecars, last declared first.
        ids: Vec<String>,
        /// The pod's grace period.
        grace: Duration,
    },
}

impl Supervision {
    /// A pod's supervision: its `containers` in declaration order (empty when the pod
    /// declared none), termination `grace` period, and `restart_policy` when the host
    /// restarts containers itself (`None` under kubelet, which restarts them).
    pub fn new(containers: Vec<DeclaredContainer>, grace: Duration, restart_policy: Option<RestartPolicy>) -> Self {
        Self {
            containers,
            history: Vec::new(),
            grace,
            terminating: false,
            restart_policy,
            restarts: HashMap::new(),
            completing: false,
        }
    }

    /// The declared container named `name`, if the pod declared it.
    pub fn declared(&self, name: &str) -> Option<&DeclaredContainer> {
        self.containers.iter().find(|d| d.name == name)
    }

    /// The host supervises this pod itself (it has a restart policy; no kubelet above it):
    /// restarts, and probes, are the host's.
    pub fn supervised(&self) -> bool {
        self.restart_policy.is_some()
    }

    /// Termination started ([`terminate`]): no member may be created or restarted.
    pub fn terminating(&self) -> bool {
        self.terminating
    }

    /// The termination grace period (Kubernetes' `terminationGracePeriodSeconds`).
    pub fn grace_period(&self) -> Duration {
        self.grace
    }

    /// Sets the termination grace period, e.g. the CLI's `delete --grace-period` before it
    /// terminates the pod. A termination already under way keeps the period it began with.
    pub fn set_grace_period(&mut self, grace: Duration) {
        self.grace = grace;
    }

    /// Records a member the host deleted (not running any more), so the start gate still
    /// sees its exit code.
    pub fn member_deleted(&mut self, member: Member) {
        self.history.push(Member {
            running: false,
            ..member
        });
    }

    /// Decides what the exit of `me` with `code` calls for, given the pod's live
    /// `members` (`me` among them, already exited). Counts the restart, or marks the pod
    /// completing when it returns [`Exited::StopSidecars`].
    pub fn exited(&mut self, me: &Member, code: i32, members: &[Member]) -> Exited {
        let Some(policy) = self.restart_policy else {
            return Exited::Nothing;
        };
        if self.terminating {
            return Exited::Nothing;
        }
        if policy.restarts(me.role, code, self.completing) {
            let n = self.restarts.entry(me.name.clone()).or_insert(0);
            let delay = RestartPolicy::backoff(*n);
            *n += 1;
            return Exited::Restart { delay };
        }
        if me.role != Role::App || self.completing {
            return Exited::Nothing;
        }
        // Apps not started yet, or running, or about to restart, keep the pod going.
        let apps_done = self.containers.iter().filter(|d| d.role == Role::App).all(|app| {
            members
                .iter()
                .any(|m| m.name == app.name && m.exit_code.is_some_and(|c| !policy.restarts(Role::App, c, false)))
        });
        if !apps_done {
            return Exited::Nothing;
        }
        self.completing = true;
        let mut sidecars: Vec<&Member> = members
            .iter()
            .filter(|m| m.role == Role::Sidecar && m.running)
            .collect();
        sidecars.sort_by_key(|m| std::cmp::Reverse(m.seq));
        Exited::StopSidecars {
            ids: sidecars.iter().map(|m| m.id.clone()).collect(),
            grace: self.grace,
        }
    }
}

/// The host's state, as the supervisor reads and acts on it while holding the host's
/// lock ([`Host::state`]).
pub trait PodState {
    /// The live members of pod `pod` (its sandbox excluded), in any order; empty for an
    /// unknown pod.
    fn members(&self, pod: &str) -> Vec<Member>;

    /// Pod `pod`'s supervision record; `None` for an unknown pod.
    fn supervision(&mut self, pod: &str) -> Option<&mut Supervision>;

    /// Sends `signal` to task `id` (a member, or the sandbox whose id is the pod's):
    /// to its init process, or with `all` to every process of its cgroup. A task that is
    /// gone or already exited is no error: the signal is dropped.
    fn signal(&mut self, id: &str, signal: SignalNumber, all: bool);

    /// Member `id` has a preStop hook for the host to run ([`Host::pre_stop`]) before its
    /// SIGTERM. None by default.
    fn has_pre_stop(&self, _id: &str) -> bool {
        false
    }
}

/// The host of one or more pods: its state lock, the condvar it notifies on every member
/// state change (start, exit, delete), and the restart of a member.
pub trait Host: Clone + Send + 'static {
    /// The state the lock guards.
    type State: PodState;

    /// The lock over the host's state.
    fn state(&self) -> &Mutex<Self::State>;

    /// Notified (`notify_all`) whenever a member starts, exits or is deleted.
    fn changed(&self) -> &Condvar;

    /// Deletes member `id` and creates and starts it again as it was first created (same
    /// id, spec and stdio). Called without the state lock held; failures are the host's to
    /// report.
    fn restart(&self, id: &str);

    /// Runs member `id`'s preStop hook and returns once it did, or by `deadline` (the end
    /// of the grace period); called without the state lock, on a thread of its own, for
    /// every hooked member of a terminating pod at once. Failures are the host's to
    /// report. Nothing by default.
    fn pre_stop(&self, _id: &str, _deadline: Instant) {}
}

/// The start gate refused a member.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// The member was deleted while its start waited.
    #[error("task {id}: not found")]
    NotFound {
        /// Task id.
        id: String,
    },
    /// A member declared before it failed (KEP-753: a failed init container fails the pod).
    #[error("container {name} ({id}) cannot start: {blocker}, declared before it, exited with code {code}")]
    Failed {
        /// The member's name in the pod.
        name: String,
        /// Its task id.
        id: String,
        /// The name of the init container or sidecar that failed.
        blocker: String,
        /// Its exit code.
        code: i32,
    },
}

fn lock<H: Host>(host: &H) -> MutexGuard<'_, H::State> {
    host.state().lock().unwrap_or_else(PoisonError::into_inner)
}

/// Blocks until the start gate lets member `id` of pod `pod` start (KEP-753 ordering, see
/// the module doc), and returns the lock still held so the caller starts it before anything
/// changes. Looks again on every notification of [`Host::changed`], at least every second.
///
/// Errors: [`GateError::NotFound`] when `id` is no member of `pod` (deleted meanwhile),
/// [`GateError::Failed`] when an earlier init container or sidecar failed.
pub fn wait_for_gate<'a, H: Host>(
    host: &'a H,
    mut st: MutexGuard<'a, H::State>,
    pod: &str,
    id: &str,
) -> Result<MutexGuard<'a, H::State>, GateError> {
    loop {
        let live = st.members(pod);
        let Some(me) = live.iter().find(|m| m.id == id).cloned() else {
            return Err(GateError::NotFound { id: id.to_string() });
        };
        let (declared, history) = st
            .supervision(pod)
            .map(|s| (s.containers.clone(), s.history.clone()))
            .unwrap_or_default();
        // Live members and deleted ones, in creation order.
        let mut members: Vec<Member> = live.into_iter().chain(history).collect();
        members.sort_by_key(|m| m.seq);
        let verdict = if declared.is_empty() {
            let views: Vec<MemberView> = members.iter().map(Member::view).collect();
            let at = members
                .iter()
                .position(|m| m.seq == me.seq)
                .expect("the member is among the pod's members");
            gate(&views, at)
        } else {
            // The newest of a name stands for it (a restarted container).
            gate_declared(&declared, &me.name, |name| {
                members.iter().rev().find(|m| m.name == name).map(Member::view)
            })
        };
        match verdict {
            Gate::Open => return Ok(st),
            Gate::Failed(blocker, code) => {
                return Err(GateError::Failed {
                    name: me.name,
                    id: id.to_string(),
                    blocker,
                    code,
                })
            }
            Gate::Wait(other) => {
                tracing::debug!(id, waiting_for = %other, "start gated");
                st = host
                    .changed()
                    .wait_timeout(st, GATE_POLL)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
    }
}

/// After member `id` of pod `pod` exited with `code` (called under the lock, `st`, once
/// the host recorded the exit): in a pod the host supervises, restarts it after its
/// back-off when the policy says so, or, once every app container is done for good, stops
/// the sidecars in reverse declaration order, SIGKILL after the grace period (see
/// [`Supervision::exited`]). Both happen on threads of their own; a restart due after the
/// pod began terminating, or after the member was deleted or restarted otherwise, is
/// dropped.
pub fn member_exited<H: Host>(host: &H, st: &mut H::State, pod: &str, id: &str, code: i32) {
    let members = st.members(pod);
    let Some(me) = members.iter().find(|m| m.id == id) else {
        return;
    };
    let Some(supervision) = st.supervision(pod) else {
        return;
    };
    match supervision.exited(me, code, &members) {
        Exited::Nothing => {}
        Exited::Restart { delay } => {
            tracing::info!(id, container = %me.name, code, ?delay, "restarting after back-off");
            let (host, pod, id) = (host.clone(), pod.to_string(), id.to_string());
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                if restart_due(&host, &pod, &id) {
                    host.restart(&id);
                }
            });
        }
        Exited::StopSidecars { ids, grace } => {
            tracing::info!(pod = %pod, sidecars = ?ids, "app containers done: stopping sidecars");
            for id in &ids {
                st.signal(id, Signal::SIGTERM.into(), false);
            }
            let (host, pod) = (host.clone(), pod.to_string());
            std::thread::spawn(move || {
                std::thread::sleep(grace);
                let mut st = lock(&host);
                let running = st.members(&pod);
                for id in &ids {
                    if running.iter().any(|m| &m.id == id && m.running) {
                        st.signal(id, Signal::SIGKILL.into(), true);
                    }
                }
            });
        }
    }
}

/// Whether a restart decided earlier is still due: the member still exists, has exited,
/// and its pod is not terminating.
fn restart_due<H: Host>(host: &H, pod: &str, id: &str) -> bool {
    let mut st = lock(host);
    let Some(exited) = st
        .members(pod)
        .into_iter()
        .find(|m| m.id == id)
        .map(|m| m.exit_code.is_some())
    else {
        return false;
    };
    let terminating = st.supervision(pod).is_none_or(|s| s.terminating);
    exited && !terminating
}

/// The least grace left for SIGTERM after preStop hooks ran (kubelet's
/// `minimumGracePeriodInSeconds`).
const MIN_GRACE_AFTER_HOOKS: Duration = Duration::from_secs(2);

/// What is left of `grace` for the SIGTERM once preStop hooks that began at `hooks_began`
/// returned: their time comes off it, but at least 2 s remain (kubelet's `killContainer`,
/// `minimumGracePeriodInSeconds`).
pub fn grace_after_hooks(grace: Duration, hooks_began: Instant) -> Duration {
    grace.saturating_sub(hooks_began.elapsed()).max(MIN_GRACE_AFTER_HOOKS)
}

/// Terminates pod `pod` (called under the lock, `st`; once per pod, later calls do
/// nothing): marks it terminating, sends SIGTERM to every running member in one pass, and
/// returns. A thread of its own then waits for the grace period, or until no member runs,
/// sends SIGKILL (to all their processes) to the members still running, waits up to 10 s
/// for those to be reaped, and sends `signal` to the sandbox's init (task id `pod`).
///
/// When running members have a preStop hook ([`PodState::has_pre_stop`]), that thread
/// first runs all of them at once ([`Host::pre_stop`]) and sends the SIGTERMs once they
/// returned; they count against the grace period, of which at least 2 s are left for the
/// SIGTERM (kubelet's `killContainer`).
pub fn terminate<H: Host>(host: &H, st: &mut H::State, pod: &str, signal: impl Into<SignalNumber>) {
    let signal = signal.into();
    let Some(supervision) = st.supervision(pod) else {
        return;
    };
    if supervision.terminating {
        return;
    }
    supervision.terminating = true;
    let grace = supervision.grace;
    let running: Vec<Member> = st.members(pod).into_iter().filter(|m| m.running).collect();
    let hooked: Vec<String> = running
        .iter()
        .filter(|m| st.has_pre_stop(&m.id))
        .map(|m| m.id.clone())
        .collect();
    if !hooked.is_empty() {
        let (host, pod) = (host.clone(), pod.to_string());
        std::thread::spawn(move || {
            let t0 = Instant::now();
            let deadline = t0 + grace;
            tracing::info!(pod, hooks = ?hooked, "running preStop hooks");
            std::thread::scope(|scope| {
                for id in &hooked {
                    let host = host.clone();
                    scope.spawn(move || host.pre_stop(id, deadline));
                }
            });
            let grace = grace_after_hooks(grace, t0);
            {
                let mut st = lock(&host);
                let running: Vec<Member> = st.members(&pod).into_iter().filter(|m| m.running).collect();
                sigterm_all(&mut *st, &pod, &running);
            }
            finish_termination(&host, &pod, grace, signal);
        });
        return;
    }
    sigterm_all(st, pod, &running);
    let (host, pod) = (host.clone(), pod.to_string());
    std::thread::spawn(move || finish_termination(&host, &pod, grace, signal));
}

/// SIGTERM to each of `running`, in one pass.
fn sigterm_all<S: PodState>(st: &mut S, pod: &str, running: &[Member]) {
    let t0 = Instant::now();
    for m in running {
        st.signal(&m.id, Signal::SIGTERM.into(), false);
    }
    tracing::info!(
        pod,
        containers = running.len(),
        spread_us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX),
        "SIGTERM sent to all containers"
    );
}

/// The second half of [`terminate`]: grace period, SIGKILL to survivors, `signal` to the
/// sandbox.
fn finish_termination<H: Host>(host: &H, pod: &str, grace: Duration, signal: SignalNumber) {
    let running = |st: &H::State| -> Vec<String> {
        st.members(pod)
            .into_iter()
            .filter(|m| m.running)
            .map(|m| m.id)
            .collect()
    };
    let mut st = lock(host);
    let deadline = Instant::now() + grace;
    while !running(&st).is_empty() && Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        st = host
            .changed()
            .wait_timeout(st, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    let survivors = running(&st);
    if !survivors.is_empty() {
        tracing::info!(pod, ?survivors, "grace period over: SIGKILL");
        for id in &survivors {
            st.signal(id, Signal::SIGKILL.into(), true);
        }
        let deadline = Instant::now() + KILL_WAIT;
        while !running(&st).is_empty() && Instant::now() < deadline {
            st = host
                .changed()
                .wait_timeout(st, Duration::from_millis(100))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
    st.signal(pod, signal, false);
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use super::*;

    const POD: &str = "pod";

    /// One signal the fake host received: (task id, signal, all).
    type Sent = (String, SignalNumber, bool);

    /// A host of one pod whose members react to signals at once: every member dies on
    /// SIGKILL, those in `stubborn` ignore SIGTERM.
    #[derive(Default)]
    struct FakeState {
        members: Vec<Member>,
        supervision: Option<Supervision>,
        stubborn: HashSet<String>,
        sent: Vec<Sent>,
        restarted: Vec<String>,
        /// Members with a preStop hook, which takes `hook_time`.
        hooked: HashSet<String>,
        hook_time: Duration,
        /// Hooks that ran: (member, signals already sent when it returned).
        hooks_ran: Vec<(String, usize)>,
    }

    impl PodState for FakeState {
        fn members(&self, pod: &str) -> Vec<Member> {
            if pod == POD {
                self.members.clone()
            } else {
                Vec::new()
            }
        }

        fn supervision(&mut self, pod: &str) -> Option<&mut Supervision> {
            self.supervision.as_mut().filter(|_| pod == POD)
        }

        fn has_pre_stop(&self, id: &str) -> bool {
            self.hooked.contains(id)
        }

        fn signal(&mut self, id: &str, signal: SignalNumber, all: bool) {
            self.sent.push((id.to_string(), signal, all));
            let dies = signal == Signal::SIGKILL || (signal == Signal::SIGTERM && !self.stubborn.contains(id));
            if let Some(m) = self
                .members
                .iter_mut()
                .find(|m| m.id == id && m.running)
                .filter(|_| dies)
            {
                m.running = false;
                m.exit_code = Some(128 + signal.as_raw());
            }
        }
    }

    #[derive(Clone, Default)]
    struct Fake(Arc<(Mutex<FakeState>, Condvar)>);

    impl Host for Fake {
        type State = FakeState;

        fn state(&self) -> &Mutex<FakeState> {
            &self.0 .0
        }

        fn changed(&self) -> &Condvar {
            &self.0 .1
        }

        fn restart(&self, id: &str) {
            let mut st = self.lock();
            st.restarted.push(id.to_string());
            self.changed().notify_all();
        }

        fn pre_stop(&self, id: &str, deadline: Instant) {
            let took = self.lock().hook_time;
            std::thread::sleep(took.min(deadline.saturating_duration_since(Instant::now())));
            let mut st = self.lock();
            let sent = st.sent.len();
            st.hooks_ran.push((id.to_string(), sent));
        }
    }

    impl Fake {
        fn new(policy: Option<RestartPolicy>, grace: Duration, declared: &[(&str, Role)], members: &[Member]) -> Fake {
            let fake = Fake::default();
            {
                let mut st = fake.lock();
                let declared = declared
                    .iter()
                    .map(|(name, role)| DeclaredContainer {
                        name: name.to_string(),
                        role: *role,
                    })
                    .collect();
                st.supervision = Some(Supervision::new(declared, grace, policy));
                st.members = members.to_vec();
            }
            fake
        }

        fn lock(&self) -> MutexGuard<'_, FakeState> {
            lock(self)
        }

        /// Applies `f` to member `id` and notifies, as the host does on a state change.
        fn update(&self, id: &str, f: impl FnOnce(&mut Member)) {
            let mut st = self.lock();
            f(st.members.iter_mut().find(|m| m.id == id).expect("member"));
            self.changed().notify_all();
        }

        fn exit(&self, id: &str, code: i32) {
            self.update(id, |m| {
                m.running = false;
                m.exit_code = Some(code);
            });
        }

        fn start(&self, id: &str) {
            self.update(id, |m| m.running = true);
        }

        /// Records the exit of `id` and lets the supervisor act on it, as the host does.
        fn exited(&self, id: &str, code: i32) {
            let mut st = self.lock();
            let m = st.members.iter_mut().find(|m| m.id == id).expect("member");
            m.running = false;
            m.exit_code = Some(code);
            member_exited(self, &mut st, POD, id, code);
            self.changed().notify_all();
        }

        /// Waits (up to 10 s) until `done` holds for the state.
        fn until(&self, what: &str, done: impl Fn(&FakeState) -> bool) {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut st = self.lock();
            while !done(&st) {
                assert!(Instant::now() < deadline, "timed out waiting for {what}: {:?}", st.sent);
                st = self.changed().wait_timeout(st, Duration::from_millis(10)).unwrap().0;
            }
        }

        fn sent(&self) -> Vec<Sent> {
            self.lock().sent.clone()
        }

        /// Runs the start gate of `id` on a thread: `Ok(())` once it opens.
        fn gate(&self, id: &str) -> std::thread::JoinHandle<Result<(), GateError>> {
            let (host, id) = (self.clone(), id.to_string());
            std::thread::spawn(move || {
                let st = host.lock();
                wait_for_gate(&host, st, POD, &id).map(drop)
            })
        }
    }

    fn member(id: &str, role: Role, seq: u64, running: bool, exit_code: Option<i32>) -> Member {
        Member {
            id: format!("{id}-id"),
            name: id.to_string(),
            role,
            seq,
            running,
            exit_code,
        }
    }

    fn id(name: &str) -> String {
        format!("{name}-id")
    }

    fn sent(name: &str, signal: Signal, all: bool) -> Sent {
        (id(name), signal.into(), all)
    }

    /// Waits for the gate thread to end, or reports it still waiting after `wait`.
    fn outcome(
        h: std::thread::JoinHandle<Result<(), GateError>>,
        wait: Duration,
    ) -> Result<Result<(), GateError>, std::thread::JoinHandle<Result<(), GateError>>> {
        let deadline = Instant::now() + wait;
        while !h.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if h.is_finished() {
            Ok(h.join().unwrap())
        } else {
            Err(h)
        }
    }

    const LONG: Duration = Duration::from_secs(10);
    const SHORT: Duration = Duration::from_millis(50);

    #[test]
    fn init_containers_run_one_by_one_then_sidecars_then_apps() {
        use Role::*;
        let declared = [("i1", Init), ("i2", Init), ("s1", Sidecar), ("a1", App), ("a2", App)];
        let members = [
            member("i1", Init, 1, true, None),
            member("i2", Init, 2, false, None),
            member("s1", Sidecar, 3, false, None),
            member("a1", App, 4, false, None),
            member("a2", App, 5, false, None),
        ];
        let fake = Fake::new(None, LONG, &declared, &members);
        let i2 = fake.gate(&id("i2"));
        let s1 = fake.gate(&id("s1"));
        let a1 = fake.gate(&id("a1"));
        let i2 = outcome(i2, SHORT).expect_err("i2 waits for i1");
        fake.exit(&id("i1"), 0);
        outcome(i2, LONG)
            .expect("gate ended")
            .expect("i2 starts once i1 succeeded");
        fake.start(&id("i2"));
        let s1 = outcome(s1, SHORT).expect_err("s1 waits for i2");
        fake.exit(&id("i2"), 0);
        outcome(s1, LONG)
            .expect("gate ended")
            .expect("s1 starts after the inits");
        let a1 = outcome(a1, SHORT).expect_err("a1 waits for the sidecar to run");
        fake.start(&id("s1"));
        outcome(a1, LONG).expect("gate ended").expect("a1 starts once s1 runs");
        let a2 = outcome(fake.gate(&id("a2")), LONG).expect("a2 is not held by a1");
        a2.expect("apps do not wait for each other");
    }

    #[test]
    fn failed_init_container_fails_the_members_after_it() {
        use Role::*;
        let declared = [("i1", Init), ("s1", Sidecar), ("a1", App)];
        let members = [
            member("i1", Init, 1, true, None),
            member("s1", Sidecar, 2, false, None),
            member("a1", App, 3, false, None),
        ];
        let fake = Fake::new(None, LONG, &declared, &members);
        let s1 = fake.gate(&id("s1"));
        let a1 = fake.gate(&id("a1"));
        let s1 = outcome(s1, SHORT).expect_err("s1 waits for i1");
        fake.exit(&id("i1"), 3);
        for h in [s1, a1] {
            match outcome(h, LONG).expect("gate ended") {
                Err(GateError::Failed { blocker, code, .. }) => assert_eq!((blocker.as_str(), code), ("i1", 3)),
                other => panic!("expected a failed gate, got {other:?}"),
            }
        }
    }

    #[test]
    fn undeclared_pods_gate_by_creation_order_and_remember_deleted_members() {
        use Role::*;
        let members = [member("i1", Init, 1, false, Some(0)), member("a1", App, 2, false, None)];
        let fake = Fake::new(None, LONG, &[], &members);
        {
            // CRI deletes the finished init container's task before the app starts.
            let mut st = fake.lock();
            let gone = st.members.remove(0);
            st.supervision.as_mut().unwrap().member_deleted(gone);
        }
        outcome(fake.gate(&id("a1")), LONG)
            .unwrap()
            .expect("the deleted init succeeded");
        let e = outcome(fake.gate("nobody"), LONG).unwrap().unwrap_err();
        assert!(matches!(e, GateError::NotFound { .. }), "{e}");

        let members = [member("i1", Init, 1, false, Some(0)), member("a1", App, 2, false, None)];
        let fake = Fake::new(None, LONG, &[], &members);
        {
            let mut st = fake.lock();
            st.members[0].exit_code = Some(1);
            let gone = st.members.remove(0);
            st.supervision.as_mut().unwrap().member_deleted(gone);
        }
        let e = outcome(fake.gate(&id("a1")), LONG).unwrap().unwrap_err();
        assert!(
            e.to_string().contains("i1, declared before it, exited with code 1"),
            "{e}"
        );
    }

    #[test]
    fn restart_decision_follows_policy_role_and_back_off() {
        use RestartPolicy::*;
        use Role::*;
        let secs = |s| Exited::Restart {
            delay: Duration::from_secs(s),
        };
        let decide = |policy: Option<RestartPolicy>, role: Role, code: i32| {
            let mut s = Supervision::new(Vec::new(), LONG, policy);
            let me = member("c", role, 1, false, Some(code));
            // Two apps declared, one still running: no completion in these cases.
            s.containers = vec![
                DeclaredContainer { name: "c".into(), role },
                DeclaredContainer {
                    name: "other".into(),
                    role: App,
                },
            ];
            s.exited(&me, code, &[me.clone(), member("other", App, 2, true, None)])
        };
        assert_eq!(decide(Some(Always), App, 0), secs(1));
        assert_eq!(decide(Some(OnFailure), App, 0), Exited::Nothing);
        assert_eq!(decide(Some(OnFailure), App, 1), secs(1));
        assert_eq!(decide(Some(Never), App, 1), Exited::Nothing);
        assert_eq!(decide(Some(Never), Init, 1), Exited::Nothing);
        assert_eq!(decide(Some(OnFailure), Init, 1), secs(1));
        assert_eq!(decide(Some(Always), Init, 0), Exited::Nothing);
        assert_eq!(decide(Some(Never), Sidecar, 0), secs(1), "sidecars always restart");
        assert_eq!(decide(None, App, 1), Exited::Nothing, "kubelet restarts, not us");

        // The back-off doubles per container name.
        let mut s = Supervision::new(Vec::new(), LONG, Some(Always));
        let me = member("c", App, 1, false, Some(0));
        let delays: Vec<Exited> = (0..3).map(|_| s.exited(&me, 0, std::slice::from_ref(&me))).collect();
        assert_eq!(delays, [secs(1), secs(2), secs(4)]);
        let other = member("d", App, 2, false, Some(0));
        assert_eq!(s.exited(&other, 0, std::slice::from_ref(&other)), secs(1));

        // Nothing restarts once the pod terminates.
        s.terminating = true;
        assert_eq!(s.exited(&me, 0, std::slice::from_ref(&me)), Exited::Nothing);
    }

    #[test]
    fn exited_member_restarts_after_its_back_off() {
        let fake = Fake::new(
            Some(RestartPolicy::OnFailure),
            LONG,
            &[("a1", Role::App)],
            &[member("a1", Role::App, 1, true, None)],
        );
        fake.exited(&id("a1"), 1);
        fake.until("the restart", |st| st.restarted == [id("a1")]);
    }

    #[test]
    fn sidecars_stop_in_reverse_order_once_apps_are_done_sigkill_after_grace() {
        use Role::*;
        let declared = [("s1", Sidecar), ("s2", Sidecar), ("a1", App), ("a2", App)];
        let members = [
            member("s1", Sidecar, 1, true, None),
            member("s2", Sidecar, 2, true, None),
            member("a1", App, 3, true, None),
            member("a2", App, 4, true, None),
        ];
        let fake = Fake::new(Some(RestartPolicy::Never), SHORT, &declared, &members);
        fake.lock().stubborn.insert(id("s1"));
        fake.exited(&id("a1"), 0);
        assert_eq!(fake.sent(), [], "a2 still runs");
        fake.exited(&id("a2"), 2);
        assert_eq!(
            fake.sent(),
            [sent("s2", Signal::SIGTERM, false), sent("s1", Signal::SIGTERM, false)],
            "SIGTERM, last declared first"
        );
        fake.until("SIGKILL", |st| st.sent.len() == 3);
        std::thread::sleep(SHORT);
        assert_eq!(
            fake.sent()[2..],
            [sent("s1", Signal::SIGKILL, true)],
            "only the sidecar that ignored SIGTERM is killed"
        );
        // A sidecar that exits now is done: the pod is completing.
        assert_eq!(
            fake.lock()
                .supervision
                .as_mut()
                .unwrap()
                .exited(&member("s1", Sidecar, 1, false, Some(137)), 137, &[]),
            Exited::Nothing
        );
    }

    #[test]
    fn termination_sigterms_every_member_at_once_then_sigkills_survivors_then_signals_sandbox() {
        use Role::*;
        let members = [
            member("s1", Sidecar, 1, true, None),
            member("a1", App, 2, true, None),
            member("a2", App, 3, true, None),
            member("done", App, 4, false, Some(0)),
        ];
        let fake = Fake::new(None, SHORT, &[], &members);
        fake.lock().stubborn.insert(id("a1"));
        {
            let mut st = fake.lock();
            terminate(&fake, &mut st, POD, Signal::SIGINT);
            // One pass, before terminate returns: every running member, nothing else.
            let mut first: Vec<Sent> = st.sent.clone();
            first.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(
                first,
                [
                    sent("a1", Signal::SIGTERM, false),
                    sent("a2", Signal::SIGTERM, false),
                    sent("s1", Signal::SIGTERM, false)
                ]
            );
            assert!(st.supervision.as_ref().unwrap().terminating());
            terminate(&fake, &mut st, POD, Signal::SIGINT);
            assert_eq!(st.sent.len(), 3, "terminating twice does nothing");
        }
        fake.until("the sandbox's signal", |st| st.sent.iter().any(|s| s.0 == POD));
        assert_eq!(
            fake.sent()[3..],
            [
                sent("a1", Signal::SIGKILL, true),
                (POD.to_string(), Signal::SIGINT.into(), false)
            ]
        );
    }

    #[test]
    fn pre_stop_hooks_run_at_once_before_any_sigterm_and_count_against_the_grace() {
        // A sidecar's preStop runs with the apps' (KEP-753, "Termination of containers").
        let members = [
            member("a1", Role::Sidecar, 1, true, None),
            member("a2", Role::App, 2, true, None),
            member("a3", Role::App, 3, true, None),
        ];
        let fake = Fake::new(None, Duration::from_secs(3), &[], &members);
        {
            let mut st = fake.lock();
            st.hooked.extend([id("a1"), id("a2")]);
            st.hook_time = Duration::from_secs(1);
            st.stubborn.insert(id("a3"));
        }
        let t0 = Instant::now();
        {
            let mut st = fake.lock();
            terminate(&fake, &mut st, POD, Signal::SIGTERM);
            assert!(st.sent.is_empty(), "SIGTERM before the hooks ran: {:?}", st.sent);
        }
        fake.until("the sandbox's signal", |st| st.sent.iter().any(|s| s.0 == POD));
        let st = fake.lock();
        let mut ran = st.hooks_ran.clone();
        ran.sort();
        assert_eq!(ran, [(id("a1"), 0), (id("a2"), 0)], "both hooks, before any signal");
        let mut terms: Vec<&Sent> = st.sent[..3].iter().collect();
        terms.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            terms,
            [
                &sent("a1", Signal::SIGTERM, false),
                &sent("a2", Signal::SIGTERM, false),
                &sent("a3", Signal::SIGTERM, false)
            ]
        );
        assert_eq!(st.sent[3], sent("a3", Signal::SIGKILL, true));
        // The hooks ran at once and their 1 s came off the 3 s grace: the SIGKILL came about
        // 3 s after the start, not 4 s (nor 5 s, for hooks one after the other).
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_secs(3) && took < Duration::from_millis(3800),
            "{took:?}"
        );
    }

    #[test]
    fn member_that_exits_within_the_grace_period_is_not_sigkilled() {
        let members = [member("a1", Role::App, 1, true, None)];
        let fake = Fake::new(None, SHORT, &[], &members);
        fake.lock().stubborn.insert(id("a1"));
        fake.lock().supervision.as_mut().unwrap().set_grace_period(LONG);
        {
            let mut st = fake.lock();
            terminate(&fake, &mut st, POD, Signal::SIGTERM);
        }
        std::thread::sleep(SHORT);
        fake.exit(&id("a1"), 143);
        fake.until("the sandbox's signal", |st| st.sent.iter().any(|s| s.0 == POD));
        assert_eq!(
            fake.sent(),
            [
                sent("a1", Signal::SIGTERM, false),
                (POD.to_string(), Signal::SIGTERM.into(), false)
            ]
        );
    }
}
