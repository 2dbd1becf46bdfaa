//! containerd's Task service (`containerd.task.v2.Task`) on top of `sandbox::Container`.
//!
//! One shim serves every task of a pod. State lives under one mutex; every event is
//! published while holding it, so the event order always matches the order of state
//! changes (TaskCreate → TaskStart → TaskExit → TaskDelete, TaskExecAdded →
//! TaskExecStarted → TaskExit).
//!
//! Exits come from the reaper ([`Service::on_exit`]). A process's exit is published once
//! its output is drained, so containerd and CRI logs are complete when Wait returns. An
//! init's exit is held until the exits of its exec'd processes (killed with it) are
//! published, and preceded by TaskOOM when the kernel OOM-killed something in the
//! container. The shim exits on Shutdown once no task is left.
//!
//! Pod supervision (the KEP-753 start gate, restarts, stopping sidecars once the apps are
//! done, pod termination) is decided and timed by `sandbox::pod::supervisor`; the service
//! hosts it over its state (`supervisor::Host`, `supervisor::PodState`), executes the
//! restarts it asks for, and stays the one place that publishes events.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use containerd_shim_protos::api::{self, Empty, ProcessInfo};
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused, TaskResumed,
    TaskStart,
};
use containerd_shim_protos::protobuf::{EnumOrUnknown, MessageField};
use containerd_shim_protos::ttrpc::{self, r#async::TtrpcContext};
use containerd_shim_protos::types::task::Status as TaskStatus;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::Process;
use proto::annotations;
use proto::eventlog::ProbeRecord;
use sandbox::pod::probe::Outcome;
use sandbox::pod::supervisor::{self, PodState, Supervision};
use sandbox::pod::{PodResources, Role};
use sandbox::signal::SignalNumber;
use sandbox::{Config, Container, CreateOptions, ExecProcess, RootfsMount, Status};

use crate::checks;
use crate::error::ServiceError;
use crate::events::{to_timestamp, Publisher};
use crate::io::{IoOwner, ProcessIo};
use crate::start::Paths;

type Result<T> = std::result::Result<T, ServiceError>;

/// The file containerd 2.x writes into a task's bundle, naming its sandbox, when it attaches
/// the task to the sandbox's shim (Task API v3) instead of running `start` for it
/// (`core/runtime/v2/shim_manager.go` `Start`).
const CONTAINERD_SANDBOX_FILE: &str = "sandbox";

/// How long an init's exit waits for its exec'd processes to be reaped.
const EXEC_EXIT_GRACE: Duration = Duration::from_secs(10);

/// A process's exit: its code (or 128 + signal) and when it was reaped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exit {
    pub(crate) code: i32,
    pub(crate) at: SystemTime,
}

/// One process (a task's init or an exec).
struct Proc {
    pid: Option<Pid>,
    stdin: String,
    stdout: String,
    stderr: String,
    terminal: bool,
    io: Option<ProcessIo>,
    started: bool,
    /// Reaped; its exit is being published.
    exiting: bool,
    exit: Option<Exit>,
}

impl Proc {
    fn new(stdin: &str, stdout: &str, stderr: &str, terminal: bool) -> Self {
        Self {
            pid: None,
            stdin: stdin.to_string(),
            stdout: stdout.to_string(),
            stderr: stderr.to_string(),
            terminal,
            io: None,
            started: false,
            exiting: false,
            exit: None,
        }
    }

    fn running(&self) -> bool {
        self.started && self.exit.is_none()
    }

    fn status(&self, paused: bool) -> TaskStatus {
        match (self.exit, self.started) {
            (Some(_), _) => TaskStatus::STOPPED,
            (None, false) => TaskStatus::CREATED,
            (None, true) if paused => TaskStatus::PAUSED,
            (None, true) => TaskStatus::RUNNING,
        }
    }
}

struct Exec {
    proc: Proc,
    spec: Process,
    handle: Option<ExecProcess>,
}

struct Task {
    container: Container,
    bundle: String,
    /// The pod (sandbox id) this task belongs to; the sandbox's own id for the sandbox.
    pod: Option<String>,
    sandbox: bool,
    /// The container's name in its pod.
    name: String,
    role: Role,
    /// Creation order within the shim (declaration order of the pod's containers).
    seq: u64,
    init: Proc,
    execs: HashMap<String, Exec>,
    oom_published: u64,
    /// Ends the container's OOM watch (notified once, at Delete).
    oom_stop: Arc<tokio::sync::Notify>,
    /// The Create request, to create the container again on restart.
    request: api::CreateTaskRequest,
    /// Its probes ([`annotations::PROBES`]), run by `crate::probes` in a supervised pod.
    probes: sandbox::pod::probe::Probes,
    /// Its lifecycle hooks ([`annotations::HOOKS`]), run in a supervised pod.
    hooks: sandbox::pod::hooks::Hooks,
    /// Its spec's process: what an exec probe runs its command as (CRI's ExecSync does
    /// the same with the container's process spec).
    process: Option<Process>,
}

impl Task {
    /// This task as a member of its pod, for the supervisor.
    fn member(&self, id: &str) -> supervisor::Member {
        supervisor::Member {
            id: id.to_string(),
            name: self.name.clone(),
            role: self.role,
            seq: self.seq,
            running: self.init.running(),
            exit_code: self.init.exit.map(|e| e.code),
        }
    }
}

pub(crate) struct Pod {
    pub(crate) resources: PodResources,
    /// Start gate, restarts, termination: see `sandbox::pod::supervisor`.
    pub(crate) supervision: Supervision,
    /// The grace period was set for the pod itself (sandbox annotations, `Update`), so a
    /// container's copy of kubelet's value does not replace it.
    pub(crate) grace_declared: bool,
    /// A pod made through the Sandbox API (`crate::sandbox_service`): its pause process;
    /// `None` for a pod whose sandbox is a task (the pause image, on containerd 1.6 or
    /// with the `podsandbox` sandboxer).
    pub(crate) sandbox: Option<crate::sandbox_service::PodSandboxState>,
}

impl Pod {
    /// Takes the pod's grace period from a container's copy of kubelet's value
    /// (`io.kubernetes.pod.terminationGracePeriod`) unless the pod declared its own.
    fn adopt_container_grace(&mut self, grace: Option<Duration>) {
        if let Some(g) = grace.filter(|_| !self.grace_declared) {
            self.supervision.set_grace_period(g);
        }
    }
}

/// The shim's tasks and pods, under the service's one lock. Opaque: public only as the
/// state the service hosts the pod supervisor on (`sandbox::pod::supervisor::Host`).
#[derive(Default)]
pub struct Tasks {
    tasks: HashMap<String, Task>,
    pub(crate) pods: HashMap<String, Pod>,
    seq: u64,
    /// Exits of pids not registered yet (a process can exit before `exec` returns).
    unclaimed: HashMap<Pid, (Exit, Instant)>,
    /// Exec probes running (`crate::probes`), by pid: their exit code once reaped.
    probe_execs: HashMap<Pid, Option<i32>>,
    pub(crate) shutdown: bool,
}

pub(crate) struct Inner {
    namespace: String,
    pub(crate) config: Config,
    pub(crate) paths: Paths,
    publisher: Publisher,
    state: Mutex<Tasks>,
    /// Notified on every change of `state`, for threads (the supervisor's, probes').
    pub(crate) changed: Condvar,
    /// Notified on every change of `state` too, for futures on the event loop (Wait,
    /// WaitSandbox, the daemon's wait for Shutdown): see [`Service::until`].
    woken: tokio::sync::Notify,
    /// The daemon's event loop, which the OOM watches and output copiers run on; `None`
    /// for a service made outside a tokio runtime (unit tests), which watches no OOM kills
    /// and refuses stdio that needs a copier.
    events_loop: Option<tokio::runtime::Handle>,
}

/// The Task service of one shim. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Service {
    pub(crate) inner: Arc<Inner>,
}

impl Service {
    /// A service for containerd namespace `namespace`, keeping state under `paths` and
    /// publishing through `publisher`. Made inside a tokio runtime (the daemon's event
    /// loop), it watches containers' OOM kills there.
    pub fn new(namespace: &str, paths: Paths, publisher: Publisher) -> Self {
        Self {
            inner: Arc::new(Inner {
                namespace: namespace.to_string(),
                config: Config {
                    state_root: paths.containers.clone(),
                    init_binary: sandbox::init::installed_helper(),
                    seccomp_store: Some(paths.seccomp.clone()),
                },
                paths,
                publisher,
                state: Mutex::new(Tasks::default()),
                changed: Condvar::new(),
                woken: tokio::sync::Notify::new(),
                events_loop: tokio::runtime::Handle::try_current().ok(),
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Tasks> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes whatever waits for a change of the state: threads on [`Inner::changed`],
    /// futures in [`Service::until`]. Call it after each change, lock held or not.
    pub(crate) fn notify_changed(&self) {
        self.inner.changed.notify_all();
        self.inner.woken.notify_waiters();
    }

    /// Resolves to `check`'s value once it returns one, looking again after each
    /// [`Service::notify_changed`]: a parked future, not a thread, for every pending Wait
    /// (issue 17). `check` runs under the state lock and must not block.
    pub(crate) async fn until<T>(&self, mut check: impl FnMut(&Tasks) -> Option<T>) -> T {
        crate::wake::when(&self.inner.woken, || check(&self.lock())).await
    }

    /// Runs `call` on tokio's blocking pool and waits for it without holding the event
    /// loop: a Task API call may take the state lock, create a container or wait out a
    /// grace period while other connections' calls and Waits go on.
    ///
    /// Errors: `Internal` when `call` panicked (in a debug build; release builds abort).
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(Service) -> ttrpc::Result<T> + Send + 'static,
    ) -> ttrpc::Result<T> {
        let svc = self.clone();
        tokio::task::spawn_blocking(move || call(svc))
            .await
            .unwrap_or_else(|e| {
                Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
                    ttrpc::Code::INTERNAL,
                    format!("task call failed: {e}"),
                )))
            })
    }

    /// Answers a read-only call on the event loop itself, not on the blocking pool. State,
    /// Pids, Stats and Connect only read the state (under its lock) and a few cgroup files,
    /// and containerd asks some of them periodically: containerd 2.3.4's CRI asks every
    /// task's Stats each second (measured in the bench's memory rows), which kept a pool
    /// thread alive in every resting shim (issue 17). `call` must wait for nothing but the
    /// state lock.
    pub(crate) fn quick<T>(&self, call: impl FnOnce(&Service) -> ttrpc::Result<T>) -> ttrpc::Result<T> {
        call(self)
    }

    /// Resolves once Shutdown arrived with no task left.
    pub async fn shutdown_requested(&self) {
        self.until(|st| (st.shutdown && st.tasks.is_empty()).then_some(()))
            .await;
    }

    /// Sets the termination grace period of the pod whose sandbox task is `sandbox_id`
    /// (Kubernetes' `terminationGracePeriodSeconds`): the time its containers get between
    /// SIGTERM and SIGKILL when the sandbox is signalled. A termination already under way
    /// keeps the period it began with.
    ///
    /// Errors: [`ServiceError::NotFound`] when `sandbox_id` is not a sandbox of this shim.
    pub fn set_grace_period(&self, sandbox_id: &str, grace: Duration) -> std::result::Result<(), ServiceError> {
        let mut st = self.lock();
        let pod = st
            .pods
            .get_mut(sandbox_id)
            .ok_or_else(|| ServiceError::NotFound(format!("sandbox {sandbox_id}")))?;
        pod.supervision.set_grace_period(grace);
        pod.grace_declared = true;
        Ok(())
    }

    /// Reports a reaped child: `code` is the exit code or 128 + signal.
    pub fn on_exit(&self, pid: Pid, code: i32) {
        let exit = Exit {
            code,
            at: SystemTime::now(),
        };
        let mut st = self.lock();
        if !self.claim(&mut st, pid, exit) {
            st.unclaimed
                .retain(|_, (_, seen)| seen.elapsed() < Duration::from_secs(60));
            st.unclaimed.insert(pid, (exit, Instant::now()));
        }
    }

    /// Starts publishing the exit of the process with `pid`, if we track it (or records
    /// the exit of a pod's pause).
    fn claim(&self, st: &mut Tasks, pid: Pid, exit: Exit) -> bool {
        if let Some(code) = st.probe_execs.get_mut(&pid).filter(|c| c.is_none()) {
            *code = Some(exit.code);
            self.notify_changed();
            return true;
        }
        if crate::sandbox_service::claim_pause(st, pid, exit) {
            self.notify_changed();
            return true;
        }
        for (id, task) in st.tasks.iter_mut() {
            if task.init.pid == Some(pid) && task.init.exit.is_none() && !task.init.exiting {
                task.init.exiting = true;
                // On disk before anything else: if the shim dies before the exit is
                // published (draining the output may take seconds), `delete` reports it.
                if let Err(e) = task.container.record_exit(exit.code, exit.at) {
                    tracing::warn!(id, error = %sandbox::error::chain(&e), "record exit");
                }
                let io = task.init.io.take();
                self.spawn_finisher(id.clone(), None, exit, io);
                return true;
            }
            for (exec_id, e) in task.execs.iter_mut() {
                if e.proc.pid == Some(pid) && e.proc.exit.is_none() && !e.proc.exiting {
                    e.proc.exiting = true;
                    let io = e.proc.io.take();
                    self.spawn_finisher(id.clone(), Some(exec_id.clone()), exit, io);
                    return true;
                }
            }
        }
        false
    }

    /// Registers `pid` for a process and handles an exit that was reaped before.
    pub(crate) fn adopt(&self, st: &mut Tasks, pid: Pid) {
        if let Some((exit, _)) = st.unclaimed.remove(&pid) {
            self.claim(st, pid, exit);
        }
    }

    fn spawn_finisher(&self, id: String, exec_id: Option<String>, exit: Exit, io: Option<ProcessIo>) {
        let svc = self.clone();
        std::thread::spawn(move || svc.finish(id, exec_id, exit, io));
    }

    /// Drains the process's output, then records and publishes its exit.
    fn finish(&self, id: String, exec_id: Option<String>, exit: Exit, io: Option<ProcessIo>) {
        if let Some(mut io) = io {
            io.finish();
        }
        let mut st = self.lock();
        if exec_id.is_none() {
            // Execs die with the container's pid namespace; publish theirs first.
            if let Some(task) = st.tasks.get(&id) {
                for e in task.execs.values().filter(|e| e.proc.running()) {
                    if let Some(h) = &e.handle {
                        let _ = h.kill(Signal::SIGKILL);
                    }
                }
            }
            let deadline = Instant::now() + EXEC_EXIT_GRACE;
            while st
                .tasks
                .get(&id)
                .is_some_and(|t| t.execs.values().any(|e| e.proc.running()))
                && Instant::now() < deadline
            {
                st = self
                    .inner
                    .changed
                    .wait_timeout(st, Duration::from_millis(100))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            self.publish_oom(&mut st, &id);
        }
        let Some(task) = st.tasks.get_mut(&id) else { return };
        let (proc, event_id) = match &exec_id {
            None => (&mut task.init, id.clone()),
            Some(e) => match task.execs.get_mut(e) {
                Some(ex) => (&mut ex.proc, e.clone()),
                None => return,
            },
        };
        proc.exit = Some(exit);
        proc.exiting = false;
        let pid = proc.pid.map_or(0, pid_u32);
        self.inner.publisher.publish(TaskExit {
            container_id: id.clone(),
            id: event_id,
            pid,
            exit_status: exit_status(exit.code),
            exited_at: MessageField::some(to_timestamp(exit.at)),
            ..Default::default()
        });
        if exec_id.is_none() {
            if let Some(pod) = st.tasks.get(&id).filter(|t| !t.sandbox).and_then(|t| t.pod.clone()) {
                supervisor::member_exited(self, &mut st, &pod, &id, exit.code);
            }
        }
        self.notify_changed();
    }

    fn publish_oom(&self, st: &mut Tasks, id: &str) {
        let Some(task) = st.tasks.get_mut(id) else { return };
        let Ok(cg) = task.container.cgroup() else { return };
        let kills = cg.files().oom_kills().unwrap_or(0);
        if kills > task.oom_published {
            task.oom_published = kills;
            self.inner.publisher.publish(TaskOOM {
                container_id: id.to_string(),
                ..Default::default()
            });
        }
    }

    /// Publishes TaskOOM for container `id` whenever the kernel OOM-kills a process in
    /// its cgroup, until `stop` is notified: a task on the event loop, woken by the
    /// cgroup's notifier (`sandbox::cgroups::OomWatcher`), not a thread per container.
    fn watch_oom(&self, id: &str, container: &Container, stop: Arc<tokio::sync::Notify>) {
        let Some(events_loop) = &self.inner.events_loop else {
            tracing::warn!(id, "no event loop: OOM kills are not watched");
            return;
        };
        let watcher = container.cgroup().and_then(|cg| {
            cg.watch_oom().map_err(|source| sandbox::Error::Cgroup {
                id: id.to_string(),
                source,
            })
        });
        // Registered with the loop's reactor here, on the loop's runtime.
        let _entered = events_loop.enter();
        let mut watcher = match watcher.map(crate::wake::register_readable) {
            Ok(Ok(w)) => w,
            Ok(Err(e)) => {
                tracing::warn!(id, error = %e, "cannot watch OOM events: register with the event loop");
                return;
            }
            Err(e) => {
                tracing::warn!(id, error = %sandbox::error::chain(&e), "cannot watch OOM events");
                return;
            }
        };
        let svc = self.clone();
        let id = id.to_string();
        events_loop.spawn(async move {
            loop {
                tokio::select! {
                    () = stop.notified() => return,
                    ready = watcher.readable_mut() => {
                        let Ok(mut ready) = ready else { return };
                        // Drains the notifier: "would block" again before clearing.
                        if ready.get_inner_mut().take() > 0 {
                            let mut st = svc.lock();
                            svc.publish_oom(&mut st, &id);
                        }
                        ready.clear_ready();
                    }
                }
            }
        });
    }

    /// Whether the run `seq` of container `id` still runs (not exited, restarted or
    /// deleted).
    fn run_current(st: &Tasks, id: &str, seq: u64) -> bool {
        st.tasks.get(id).is_some_and(|t| t.seq == seq && t.init.running())
    }

    /// For a probe thread (`crate::probes`): waits until `at`, and says whether the run
    /// `seq` of container `id` still runs then; returns `false` as soon as it ends.
    pub(crate) fn probe_wait(&self, id: &str, seq: u64, at: Instant) -> bool {
        let mut st = self.lock();
        loop {
            if !Self::run_current(&st, id, seq) {
                return false;
            }
            let now = Instant::now();
            if now >= at {
                return true;
            }
            st = self
                .inner
                .changed
                .wait_timeout(st, at - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// An exec probe: runs `command` in the run `seq` of container `id` as its own process
    /// runs (user, env, cwd, capabilities, seccomp: CRI's ExecSync does the same), with
    /// stdout and stderr into one pipe. Exit code 0 is success; otherwise failure with the
    /// output (at most 10 KiB, as kubelet keeps). Past `timeout` the process is SIGKILLed
    /// and the check fails (kubelet's `ExecProbeTimeout`).
    pub(crate) fn probe_exec(&self, id: &str, seq: u64, command: &[String], timeout: Duration) -> Outcome {
        match self.exec_in(id, seq, command, timeout) {
            Ok((0, _)) => Outcome::Success,
            Ok((_, output)) => Outcome::Failure(output),
            Err(e) => Outcome::Failure(e),
        }
    }

    /// Runs `command` in the run `seq` of container `id` as [`Service::probe_exec`] does:
    /// its exit code and output (at most 10 KiB, trailing whitespace trimmed).
    ///
    /// Errors: the container does not run, the exec failed, or `timeout` passed (the
    /// process is SIGKILLed), as kubelet words them.
    fn exec_in(
        &self,
        id: &str,
        seq: u64,
        command: &[String],
        timeout: Duration,
    ) -> std::result::Result<(i32, String), String> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::io::Read;
        const MAX_OUTPUT: usize = 10 * 1024;

        let deadline = Instant::now() + timeout;
        let (read, write) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK) {
            Ok(p) => p,
            Err(e) => return Err(format!("pipe: {e}")),
        };
        let (handle, pid) = {
            let mut st = self.lock();
            let Some(task) = st.tasks.get_mut(id).filter(|t| t.seq == seq && t.init.running()) else {
                return Err("container is not running".into());
            };
            let mut process = task.process.clone().unwrap_or_default();
            process.set_args(Some(command.to_vec()));
            process.set_terminal(Some(false));
            process.set_console_size(None);
            let stderr = match write.try_clone() {
                Ok(fd) => fd,
                Err(e) => return Err(format!("dup: {e}")),
            };
            let stdio = sandbox::Stdio {
                stdin: None,
                stdout: Some(write),
                stderr: Some(stderr),
            };
            match task.container.exec(&process, stdio) {
                Ok(handle) => {
                    let pid = handle.pid();
                    st.probe_execs.insert(pid, None);
                    (handle, pid)
                }
                Err(e) => return Err(sandbox::error::chain(&e)),
            }
        };
        // Output until the process exits (its pidfd turns readable) or the deadline.
        let mut pipe = std::fs::File::from(read);
        let mut output = Vec::new();
        let mut buf = [0u8; 4096];
        let mut drain = |pipe: &mut std::fs::File, output: &mut Vec<u8>| {
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                let keep = n.min(MAX_OUTPUT.saturating_sub(output.len()));
                output.extend_from_slice(&buf[..keep]);
            }
        };
        let mut timed_out = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                timed_out = true;
                let _ = handle.kill(Signal::SIGKILL);
                break;
            }
            let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
            let mut fds = [
                PollFd::new(handle.pidfd(), PollFlags::POLLIN),
                PollFd::new(pipe_fd(&pipe), PollFlags::POLLIN),
            ];
            let _ = poll(&mut fds, PollTimeout::from(ms));
            let exited = fds[0].revents().is_some_and(|r| !r.is_empty());
            drain(&mut pipe, &mut output);
            if exited {
                break;
            }
        }
        // The reaper hands us the exit code (it reaps every child of the shim).
        let mut st = self.lock();
        let reap_deadline = Instant::now() + Duration::from_secs(5);
        let code = loop {
            if let Some(code) = st.probe_execs.get(&pid).copied().flatten() {
                break Some(code);
            }
            let now = Instant::now();
            if now >= reap_deadline {
                break None;
            }
            st = self
                .inner
                .changed
                .wait_timeout(st, reap_deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        };
        st.probe_execs.remove(&pid);
        drop(st);
        match code {
            _ if timed_out => Err(format!("command {:?} timed out", command.join(" "))),
            Some(code) => Ok((code, String::from_utf8_lossy(&output).trim_end().to_string())),
            None => Err("the process was not reaped".into()),
        }
    }

    /// Appends a probe's `record` to the event log if the run `seq` of container `id` still
    /// runs, and, when the record kills it, sends SIGTERM and, after `grace` (the pod's
    /// when `None`), SIGKILL to whatever of that run still runs. Returns whether the run
    /// still ran.
    pub(crate) fn probe_record(&self, id: &str, seq: u64, record: &ProbeRecord, grace: Option<Duration>) -> bool {
        let (topic, type_url, value) = crate::probes::encode(record);
        let Some(st) = self.record_for_run(id, seq, topic, type_url, value) else {
            return false;
        };
        if record.kill {
            self.kill_run(st, id, seq, grace);
        }
        true
    }

    /// Appends a record of peapod's own (`topic`, `type_url`, `value`) to the event log if
    /// the run `seq` of container `id` still runs, and hands back the lock it was written
    /// under (in order with the task events); `None` once the run ended.
    fn record_for_run(
        &self,
        id: &str,
        seq: u64,
        topic: &str,
        type_url: &str,
        value: Vec<u8>,
    ) -> Option<MutexGuard<'_, Tasks>> {
        let st = self.lock();
        if !Self::run_current(&st, id, seq) {
            return None;
        }
        self.inner.publisher.record_local(topic, type_url, value);
        Some(st)
    }

    /// Records that a lifecycle hook of container `id` ran (`record`), if its run `seq`
    /// still runs, and kills that run when a postStart hook failed. Returns whether the
    /// run still ran.
    pub(crate) fn hook_record(&self, id: &str, seq: u64, record: &proto::eventlog::HookRecord) -> bool {
        let value = serde_json::to_vec(record).expect("a hook record encodes");
        let Some(st) = self.record_for_run(
            id,
            seq,
            proto::eventlog::HOOK_TOPIC,
            proto::eventlog::HOOK_TYPE_URL,
            value,
        ) else {
            return false;
        };
        if !record.ok && record.hook == sandbox::pod::hooks::HookKind::PostStart {
            self.kill_run(st, id, seq, None);
        }
        true
    }

    /// Kills the run `seq` of container `id` (under the lock, `st`, released here), as
    /// kubelet's `killContainer` does after a failed liveness or startup probe or postStart
    /// hook: its preStop hook first when it has one (in a supervised pod), then SIGTERM,
    /// then SIGKILL to whatever of that run still runs after `grace` (the pod's when
    /// `None`). The hook's time counts against `grace` ([`supervisor::grace_after_hooks`]).
    fn kill_run(&self, mut st: MutexGuard<'_, Tasks>, id: &str, seq: u64, grace: Option<Duration>) {
        let pod_grace = st
            .tasks
            .get(id)
            .and_then(|t| t.pod.as_ref())
            .and_then(|p| st.pods.get(p))
            .map(|p| p.supervision.grace_period());
        let grace = grace
            .or(pod_grace)
            .unwrap_or(Duration::from_secs(proto::kube::DEFAULT_GRACE_SECONDS));
        tracing::info!(id, ?grace, "killing the container");
        let hooked = st.has_pre_stop(id);
        if !hooked {
            st.signal(id, Signal::SIGTERM.into(), false);
        }
        drop(st);
        let (svc, id) = (self.clone(), id.to_string());
        std::thread::spawn(move || {
            let mut grace = grace;
            if hooked {
                let t0 = Instant::now();
                supervisor::Host::pre_stop(&svc, &id, t0 + grace);
                grace = supervisor::grace_after_hooks(grace, t0);
                let mut st = svc.lock();
                if Self::run_current(&st, &id, seq) {
                    st.signal(&id, Signal::SIGTERM.into(), false);
                }
            }
            // `probe_wait` returns false as soon as the run ended; true at the deadline.
            if svc.probe_wait(&id, seq, Instant::now() + grace) {
                svc.lock().signal(&id, Signal::SIGKILL.into(), true);
            }
        });
    }

    /// Runs the run `seq` of container `id`'s lifecycle `hook` (init `pid`), by
    /// `deadline`: `exec` in the container, `httpGet` from the pod's network namespace
    /// (this thread enters it: call on a thread of its own), `sleep`.
    ///
    /// Errors: why the hook failed, as kubelet words it.
    pub(crate) fn run_hook(
        &self,
        id: &str,
        seq: u64,
        pid: u32,
        hook: &sandbox::pod::hooks::Hook,
        deadline: Instant,
    ) -> std::result::Result<(), String> {
        use sandbox::pod::hooks::Hook;
        match hook {
            Hook::Exec { command } => {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.exec_in(id, seq, command, left) {
                    Ok((0, _)) => Ok(()),
                    Ok((code, output)) => Err(format!("command '{}' exited with {code}: {output}", command.join(" "))),
                    Err(e) => Err(e),
                }
            }
            Hook::HttpGet(_) => {
                sandbox::pod::probe::enter_network_namespace(i32::try_from(pid).unwrap_or(i32::MAX))
                    .map_err(|e| format!("enter the pod's network namespace: {e}"))?;
                sandbox::pod::hooks::run_network_or_sleep(hook, deadline)
            }
            Hook::Sleep { .. } => sandbox::pod::hooks::run_network_or_sleep(hook, deadline),
        }
    }

    fn do_create(&self, req: api::CreateTaskRequest) -> Result<api::CreateTaskResponse> {
        checks::create_task(&req)?;
        if self.lock().tasks.contains_key(&req.id) {
            return Err(ServiceError::AlreadyExists(format!("task {}", req.id)));
        }
        let bundle = PathBuf::from(&req.bundle);
        let mut spec = sandbox::spec::load(&bundle)?;
        let (mut member, ann) = checks::create_member(&req.id, &spec)?;
        let mut new_pod = None;
        if member.sandbox {
            new_pod = Some(self.create_pod(&req.id, &spec, &ann)?);
        } else if let Some(pod_id) = &member.pod {
            let st = self.lock();
            let pod = st.pods.get(pod_id).ok_or_else(|| {
                ServiceError::FailedPrecondition(format!(
                    "sandbox {pod_id} of container {} does not exist in this shim",
                    req.id
                ))
            })?;
            if pod.supervision.terminating() {
                return Err(ServiceError::FailedPrecondition(format!("pod {pod_id} is terminating")));
            }
            if let Some(d) = pod.supervision.declared(&member.name) {
                if member.role_annotated && member.role != d.role {
                    return Err(ServiceError::InvalidArgument(format!(
                        "container {}: {} says {:?} but the pod declares {:?}",
                        req.id,
                        annotations::ROLE,
                        member.role,
                        d.role
                    )));
                }
                member.role = d.role;
            }
            if pod.sandbox.as_ref().is_some_and(|s| !s.running()) {
                return Err(ServiceError::FailedPrecondition(format!(
                    "sandbox {pod_id} of container {} is not running",
                    req.id
                )));
            }
            pod.resources.mount_volumes(&mut spec, &member.mounts)?;
            // A pod made through the Sandbox API has its hostname, hosts, resolv.conf
            // and /dev/shm made by us, not by CRI (see sandbox::pod's files).
            if let Some(files) = &pod.resources.files {
                files.mount_into(&mut spec);
            }
        } else if !member.mounts.is_empty() || member.role != Role::App {
            return Err(ServiceError::InvalidArgument(format!(
                "container {}: {} and {} need a pod sandbox ({})",
                req.id,
                annotations::ROLE,
                annotations::VOLUME_MOUNTS,
                annotations::SANDBOX_ID
            )));
        }
        let process = spec.process().clone();
        let created = self.create_container(&req, spec);
        let (container, io) = match created {
            Ok(c) => c,
            Err(e) => {
                if let Some(pod) = new_pod {
                    let _ = pod.resources.destroy();
                }
                return Err(e);
            }
        };
        let pid = container
            .pid()
            .ok_or_else(|| ServiceError::Internal("created task has no pid".into()))?;
        let t = container.timings();
        tracing::info!(
            id = %req.id,
            validate_us = t.validate_us,
            seccomp_us = t.seccomp_us,
            cgroup_us = t.cgroup_us,
            layers_us = t.layers_us,
            state_us = t.state_us,
            spawn_us = t.spawn_us,
            namespaces_us = t.namespaces_us,
            rootfs_us = t.rootfs_us,
            process_us = t.process_us,
            ready_us = t.ready_us,
            total_us = t.total_us,
            "create timings"
        );
        let mut init = Proc::new(&req.stdin, &req.stdout, &req.stderr, req.terminal);
        init.pid = Some(pid);
        init.io = Some(io);
        let oom_stop = Arc::new(tokio::sync::Notify::new());
        self.watch_oom(&req.id, &container, oom_stop.clone());

        // containerd 2.x attached this task to its sandbox's shim without running `start`,
        // and will not run `delete` for it either: the sandbox's `delete` must find it.
        let attached = bundle.join(CONTAINERD_SANDBOX_FILE).exists();
        if let Some(pod_id) = member.pod.as_deref().filter(|_| !member.sandbox && attached) {
            self.mark_member(pod_id, &req.id);
        }
        let mut st = self.lock();
        if let Some(pod) = new_pod {
            st.pods.insert(req.id.clone(), pod);
        }
        // kubelet writes the pod's terminationGracePeriodSeconds on each container, not on
        // the sandbox: a sandbox that declared none takes it from its containers, so a
        // signal to the sandbox task waits the pod's grace, not the 30 s default.
        if let Some(pod) = member.pod.as_ref().and_then(|p| st.pods.get_mut(p)) {
            pod.adopt_container_grace(member.pod_grace);
        }
        st.seq += 1;
        let seq = st.seq;
        st.tasks.insert(
            req.id.clone(),
            Task {
                container,
                bundle: req.bundle.clone(),
                pod: member.pod,
                sandbox: member.sandbox,
                name: member.name,
                role: member.role,
                seq,
                init,
                execs: HashMap::new(),
                oom_published: 0,
                oom_stop,
                request: req.clone(),
                probes: member.probes,
                hooks: member.hooks,
                process,
            },
        );
        self.inner.publisher.publish(TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: MessageField::some(TaskIO {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
                ..Default::default()
            }),
            checkpoint: req.checkpoint.clone(),
            pid: pid_u32(pid),
            ..Default::default()
        });
        self.adopt(&mut st, pid);
        Ok(api::CreateTaskResponse {
            pid: pid_u32(pid),
            ..Default::default()
        })
    }

    /// Sets up the pod a sandbox task declares: pod cgroup (the parent of the sandbox's
    /// own cgroup) and emptyDir volumes, before the sandbox container exists.
    fn create_pod(&self, id: &str, spec: &oci_spec::runtime::Spec, ann: &HashMap<String, String>) -> Result<Pod> {
        let config = annotations::pod_config(ann)?;
        let own = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone());
        let cgroup = sandbox::spec::cgroup_path(id, own.as_deref())?;
        let parent = cgroup.rsplit_once('/').map(|(p, _)| p.to_string());
        let resources = PodResources::create(
            id,
            &config,
            parent.as_deref(),
            &self.inner.paths.pods.join(id),
            &self.inner.paths.disk,
        )?;
        let grace = config
            .grace
            .unwrap_or(Duration::from_secs(proto::kube::DEFAULT_GRACE_SECONDS));
        Ok(Pod {
            resources,
            supervision: Supervision::new(config.containers, grace, config.restart_policy),
            grace_declared: config.grace.is_some(),
            sandbox: None,
        })
    }

    fn create_container(
        &self,
        req: &api::CreateTaskRequest,
        spec: oci_spec::runtime::Spec,
    ) -> Result<(Container, ProcessIo)> {
        let owner = IoOwner {
            namespace: self.inner.namespace.clone(),
            id: req.id.clone(),
        };
        let mut io = ProcessIo::open(
            &req.stdin,
            &req.stdout,
            &req.stderr,
            req.terminal,
            &owner,
            self.inner.events_loop.as_ref(),
        )?;
        let rootfs_mounts = req
            .rootfs
            .iter()
            .map(|m| RootfsMount {
                fstype: m.type_.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
            })
            .collect();
        let mut container = Container::create(
            &self.inner.config,
            CreateOptions {
                id: req.id.clone(),
                bundle: PathBuf::from(&req.bundle),
                rootfs_mounts,
                stdio: std::mem::take(&mut io.stdio),
                spec: Some(spec),
            },
        )?;
        if let Some(master) = container.take_console() {
            if let Err(e) = io.attach_console(master) {
                let _ = container.delete(true);
                return Err(e.into());
            }
        }
        Ok((container, io))
    }

    fn do_start(&self, req: api::StartRequest) -> Result<api::StartResponse> {
        let mut st = self.lock();
        if req.exec_id.is_empty() {
            let task = st
                .tasks
                .get(&req.id)
                .ok_or_else(|| ServiceError::NotFound(format!("task {}", req.id)))?;
            if let Some(pod) = task.pod.clone().filter(|_| !task.sandbox) {
                // Blocks until the pod's start gate lets it start (KEP-753 ordering).
                st = supervisor::wait_for_gate(self, st, &pod, &req.id)?;
            }
        }
        let task = st
            .tasks
            .get_mut(&req.id)
            .ok_or_else(|| ServiceError::NotFound(format!("task {}", req.id)))?;
        if req.exec_id.is_empty() {
            if task.init.started {
                return Err(ServiceError::FailedPrecondition(format!(
                    "task {} already started",
                    req.id
                )));
            }
            task.container.start()?;
            tracing::info!(id = %req.id, start_us = task.container.timings().start_us, "start timings");
            task.init.started = true;
            let pid = task.init.pid.map_or(0, pid_u32);
            self.inner.publisher.publish(TaskStart {
                container_id: req.id.clone(),
                pid,
                ..Default::default()
            });
            // Later members of the pod may be waiting for this one.
            self.notify_changed();
            let pod = task.pod.clone();
            let supervised = pod
                .and_then(|p| st.pods.get(&p))
                .is_some_and(|p| p.supervision.supervised());
            if let Some(task) = st.tasks.get(&req.id).filter(|_| supervised) {
                match &task.hooks.post_start {
                    // Probes start once the hook returned (kubelet probes a started container).
                    Some(hook) => crate::probes::post_start(self, &req.id, task.seq, pid, hook, &task.probes),
                    None if !task.probes.is_empty() => crate::probes::start(self, &req.id, task.seq, pid, &task.probes),
                    None => {}
                }
            }
            return Ok(api::StartResponse {
                pid,
                ..Default::default()
            });
        }
        let exec = task
            .execs
            .get_mut(&req.exec_id)
            .ok_or_else(|| ServiceError::NotFound(format!("exec {} in task {}", req.exec_id, req.id)))?;
        if exec.proc.started {
            return Err(ServiceError::FailedPrecondition(format!(
                "exec {} already started",
                req.exec_id
            )));
        }
        let owner = IoOwner {
            namespace: self.inner.namespace.clone(),
            id: req.id.clone(),
        };
        let p = &exec.proc;
        let mut io = ProcessIo::open(
            &p.stdin,
            &p.stdout,
            &p.stderr,
            p.terminal,
            &owner,
            self.inner.events_loop.as_ref(),
        )?;
        let mut handle = task.container.exec(&exec.spec, std::mem::take(&mut io.stdio))?;
        if let Some(master) = handle.take_console() {
            io.attach_console(master)?;
        }
        let pid = handle.pid();
        exec.proc.pid = Some(pid);
        exec.proc.io = Some(io);
        exec.proc.started = true;
        exec.handle = Some(handle);
        self.inner.publisher.publish(TaskExecStarted {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            pid: pid_u32(pid),
            ..Default::default()
        });
        self.adopt(&mut st, pid);
        Ok(api::StartResponse {
            pid: pid_u32(pid),
            ..Default::default()
        })
    }

    fn do_exec(&self, req: api::ExecProcessRequest) -> Result<()> {
        let spec = checks::exec_process(&req)?;
        let mut st = self.lock();
        let task = st
            .tasks
            .get_mut(&req.id)
            .ok_or_else(|| ServiceError::NotFound(format!("task {}", req.id)))?;
        if !task.init.running() {
            return Err(ServiceError::FailedPrecondition(format!(
                "task {} is not running",
                req.id
            )));
        }
        if task.execs.contains_key(&req.exec_id) {
            return Err(ServiceError::AlreadyExists(format!("exec {}", req.exec_id)));
        }
        task.execs.insert(
            req.exec_id.clone(),
            Exec {
                proc: Proc::new(&req.stdin, &req.stdout, &req.stderr, req.terminal),
                spec,
                handle: None,
            },
        );
        self.inner.publisher.publish(TaskExecAdded {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        });
        Ok(())
    }

    fn do_kill(&self, req: api::KillRequest) -> Result<()> {
        let signal = checks::kill_signal(&req)?;
        let mut st = self.lock();
        let task = st
            .tasks
            .get(&req.id)
            .ok_or_else(|| ServiceError::NotFound(format!("task {}", req.id)))?;
        if req.exec_id.is_empty() && task.sandbox && !req.all && signal != Signal::SIGKILL && task.init.running() {
            supervisor::terminate(self, &mut st, &req.id, signal);
            return Ok(());
        }
        if req.exec_id.is_empty() {
            if (task.init.exit.is_some() || task.init.exiting) && !req.all {
                return Err(ServiceError::NotFound(format!(
                    "task {}: process already finished",
                    req.id
                )));
            }
            task.container.kill(signal, req.all)?;
            return Ok(());
        }
        let exec = task
            .execs
            .get(&req.exec_id)
            .ok_or_else(|| ServiceError::NotFound(format!("exec {}", req.exec_id)))?;
        match (&exec.handle, exec.proc.exit) {
            (_, Some(_)) => Err(ServiceError::NotFound(format!(
                "exec {}: process already finished",
                req.exec_id
            ))),
            (None, _) => Err(ServiceError::FailedPrecondition(format!(
                "exec {} not started",
                req.exec_id
            ))),
            (Some(h), None) => h.kill(signal).map_err(|source| ServiceError::KillExec {
                exec_id: req.exec_id.clone(),
                source,
            }),
        }
    }

    /// Wait: resolves with the exit of task `req.id`'s init, or of its exec
    /// `req.exec_id`, once it is published (its output drained).
    ///
    /// Errors: `NotFound` for an unknown task or exec, also when it is deleted meanwhile.
    async fn wait_for_exit(&self, req: api::WaitRequest) -> Result<api::WaitResponse> {
        self.until(|st| Self::exit_of(st, &req)).await
    }

    /// Wait's answer if it is known: the exit, or `NotFound`; `None` while the process runs.
    fn exit_of(st: &Tasks, req: &api::WaitRequest) -> Option<Result<api::WaitResponse>> {
        let Some(task) = st.tasks.get(&req.id) else {
            return Some(Err(ServiceError::NotFound(format!("task {}", req.id))));
        };
        let proc = if req.exec_id.is_empty() {
            &task.init
        } else {
            match task.execs.get(&req.exec_id) {
                Some(e) => &e.proc,
                None => return Some(Err(ServiceError::NotFound(format!("exec {}", req.exec_id)))),
            }
        };
        proc.exit.map(|exit| {
            Ok(api::WaitResponse {
                exit_status: exit_status(exit.code),
                exited_at: MessageField::some(to_timestamp(exit.at)),
                ..Default::default()
            })
        })
    }

    /// Leaves the marker by which `delete` finds container `id` of pod `pod` if the shim
    /// dies (`Paths::member_marker`). Not fatal: without it only that clean-up misses the
    /// container, which is logged.
    fn mark_member(&self, pod: &str, id: &str) {
        let marker = self.inner.paths.member_marker(pod, id);
        let written = marker
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&marker, b""));
        if let Err(e) = written {
            tracing::warn!(id, pod, marker = %marker.display(), error = %e, "cannot mark the container as a pod member");
        }
    }

    pub(crate) fn do_delete(&self, req: api::DeleteRequest) -> Result<api::DeleteResponse> {
        let mut st = self.lock();
        let task = st
            .tasks
            .get_mut(&req.id)
            .ok_or_else(|| ServiceError::NotFound(format!("task {}", req.id)))?;
        if !req.exec_id.is_empty() {
            let exec = task
                .execs
                .get(&req.exec_id)
                .ok_or_else(|| ServiceError::NotFound(format!("exec {}", req.exec_id)))?;
            if exec.proc.running() || exec.proc.exiting {
                return Err(ServiceError::FailedPrecondition(format!(
                    "exec {} is running",
                    req.exec_id
                )));
            }
            let exec = task.execs.remove(&req.exec_id).expect("checked above");
            return Ok(delete_response(&exec.proc));
        }
        if task.init.running() || task.init.exiting {
            return Err(ServiceError::FailedPrecondition(format!("task {} is running", req.id)));
        }
        if task.execs.values().any(|e| e.proc.running()) {
            return Err(ServiceError::FailedPrecondition(format!(
                "task {} has running execs",
                req.id
            )));
        }
        if task.sandbox {
            let members: Vec<&String> = st
                .tasks
                .iter()
                .filter(|(id, t)| t.pod.as_deref() == Some(req.id.as_str()) && **id != req.id)
                .map(|(id, _)| id)
                .collect();
            if !members.is_empty() {
                return Err(ServiceError::FailedPrecondition(format!(
                    "sandbox {} still has containers: {members:?}",
                    req.id
                )));
            }
        }
        let mut task = st.tasks.remove(&req.id).expect("checked above");
        if let Some(pod_id) = task.pod.as_deref().filter(|_| !task.sandbox) {
            let _ = std::fs::remove_file(self.inner.paths.member_marker(pod_id, &req.id));
        }
        if let Some(pod) = task
            .pod
            .as_ref()
            .filter(|_| !task.sandbox)
            .and_then(|p| st.pods.get_mut(p))
        {
            pod.supervision.member_deleted(task.member(&req.id));
        }
        task.oom_stop.notify_one();
        if task.init.exit.is_none() {
            // Created but never started: init is killed by the delete.
            task.init.exit = Some(Exit {
                code: 137,
                at: SystemTime::now(),
            });
        }
        // Dropped, not finished: the copiers run on the event loop, which may be waiting
        // for this lock; they drain what is buffered and end on their own.
        drop(task.init.io.take());
        let resp = delete_response(&task.init);
        let mut result = task.container.delete(true).map_err(ServiceError::from);
        if task.sandbox {
            if let Some(pod) = st.pods.remove(&req.id) {
                if let Err(e) = pod.resources.destroy() {
                    result = result.and(Err(e.into()));
                }
            }
        }
        self.inner.publisher.publish(TaskDelete {
            container_id: req.id.clone(),
            id: req.id.clone(),
            pid: resp.pid,
            exit_status: resp.exit_status,
            exited_at: resp.exited_at.clone(),
            ..Default::default()
        });
        self.notify_changed();
        result?;
        Ok(resp)
    }

    fn do_state(&self, req: api::StateRequest) -> Result<api::StateResponse> {
        let st = self.lock();
        let task = st
            .tasks
            .get(&req.id)
            .ok_or_else(|| ServiceError::NotFound(format!("task {}", req.id)))?;
        let paused = task.container.status() == Status::Paused;
        let proc = if req.exec_id.is_empty() {
            &task.init
        } else {
            &task
                .execs
                .get(&req.exec_id)
                .ok_or_else(|| ServiceError::NotFound(format!("exec {}", req.exec_id)))?
                .proc
        };
        Ok(api::StateResponse {
            id: req.id.clone(),
            bundle: task.bundle.clone(),
            pid: proc.pid.map_or(0, pid_u32),
            status: EnumOrUnknown::new(proc.status(paused)),
            stdin: proc.stdin.clone(),
            stdout: proc.stdout.clone(),
            stderr: proc.stderr.clone(),
            terminal: proc.terminal,
            exit_status: proc.exit.map_or(0, |e| exit_status(e.code)),
            exited_at: proc
                .exit
                .map_or_else(MessageField::none, |e| MessageField::some(to_timestamp(e.at))),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    fn with_task<T>(&self, id: &str, f: impl FnOnce(&mut Task) -> Result<T>) -> Result<T> {
        let mut st = self.lock();
        let task = st
            .tasks
            .get_mut(id)
            .ok_or_else(|| ServiceError::NotFound(format!("task {id}")))?;
        f(task)
    }

    /// Update: the task's resources; and, when the request carries
    /// `io.peapod.grace-period` (the CLI's `delete --grace-period`: containerd's Update has
    /// no field for it), the pod's grace period first ([`Service::set_grace_period`]).
    fn do_update(&self, req: api::UpdateTaskRequest) -> Result<()> {
        let args = checks::update_task(&req)?;
        if let Some(grace) = args.grace {
            self.set_grace_period(&req.id, grace)?;
        }
        match args.resources {
            Some(res) => self.with_task(&req.id, |t| Ok(t.container.update(&res)?)),
            None => Ok(()),
        }
    }

    fn do_stats(&self, id: &str) -> Result<api::StatsResponse> {
        let (stats, psi, v2) = self.with_task(id, |t| {
            let cg = t.container.cgroup()?;
            Ok((t.container.stats()?, cg.files().pressure(), cg.is_v2()))
        })?;
        let packed = crate::metrics::pack(&stats, &psi, v2)?;
        Ok(api::StatsResponse {
            stats: MessageField::some(packed),
            ..Default::default()
        })
    }

    /// Pids: the processes in the task's cgroup. A task whose init has exited and that
    /// containerd has not deleted yet reports the init's pid alone: its exit status is
    /// still to be collected. containerd 1.7 and later delete, when they restart, the task
    /// of any non-sandbox shim that reports no pids as leaked (containerd#6866,
    /// `core/runtime/v2/shim_load.go` `shouldCleanupShim`), before CRI recovers the
    /// container's state; an exit while containerd was down would then reach the kubelet
    /// as CRI's exit code 255, reason `Unknown`, instead of the container's own.
    fn do_pids(&self, id: &str) -> Result<api::PidsResponse> {
        // A Sandbox API pod's id names its pause (containerd asks on restart whether the
        // sandbox shim still runs something).
        if let Some(pause) = crate::sandbox_service::pause_pid(&self.lock(), id) {
            return Ok(api::PidsResponse {
                processes: vec![ProcessInfo {
                    pid: pid_u32(pause),
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        let pids = self.with_task(id, |t| {
            let exited_init = t.init.exit.and(t.init.pid);
            let mut pids = match t.container.pids() {
                Ok(pids) => pids,
                // The cgroup may have gone with the init.
                Err(_) if exited_init.is_some() => Vec::new(),
                Err(e) => return Err(e.into()),
            };
            if pids.is_empty() {
                pids.extend(exited_init);
            }
            Ok(pids)
        })?;
        Ok(api::PidsResponse {
            processes: pids
                .into_iter()
                .map(|p| ProcessInfo {
                    pid: pid_u32(p),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    fn do_pause(&self, id: &str, pause: bool) -> Result<()> {
        let mut st = self.lock();
        let task = st
            .tasks
            .get_mut(id)
            .ok_or_else(|| ServiceError::NotFound(format!("task {id}")))?;
        if pause {
            task.container.pause()?;
            self.inner.publisher.publish(TaskPaused {
                container_id: id.to_string(),
                ..Default::default()
            });
        } else {
            task.container.resume()?;
            self.inner.publisher.publish(TaskResumed {
                container_id: id.to_string(),
                ..Default::default()
            });
        }
        Ok(())
    }

    fn with_proc_io(&self, id: &str, exec_id: &str, f: impl FnOnce(&ProcessIo) -> Result<()>) -> Result<()> {
        self.with_task(id, |t| {
            let proc = if exec_id.is_empty() {
                &t.init
            } else {
                &t.execs
                    .get(exec_id)
                    .ok_or_else(|| ServiceError::NotFound(format!("exec {exec_id}")))?
                    .proc
            };
            match &proc.io {
                Some(io) => f(io),
                None => Ok(()),
            }
        })
    }
}

impl Tasks {
    /// No task is left (a Sandbox API pod's pause is no task).
    pub(crate) fn tasks_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// A task with this id exists.
    pub(crate) fn has_task(&self, id: &str) -> bool {
        self.tasks.contains_key(id)
    }
}

/// The supervisor's view of the shim's state: a pod's member tasks, its supervision
/// record, and signals to tasks.
impl PodState for Tasks {
    fn members(&self, pod: &str) -> Vec<supervisor::Member> {
        self.tasks
            .iter()
            .filter(|(_, t)| t.pod.as_deref() == Some(pod) && !t.sandbox)
            .map(|(id, t)| t.member(id))
            .collect()
    }

    fn supervision(&mut self, pod: &str) -> Option<&mut Supervision> {
        self.pods.get_mut(pod).map(|p| &mut p.supervision)
    }

    /// Only in a pod the shim supervises itself: under kubelet, kubelet runs the hooks.
    fn has_pre_stop(&self, id: &str) -> bool {
        self.tasks.get(id).is_some_and(|t| {
            t.hooks.pre_stop.is_some()
                && t.pod
                    .as_ref()
                    .and_then(|p| self.pods.get(p))
                    .is_some_and(|p| p.supervision.supervised())
        })
    }

    fn signal(&mut self, id: &str, signal: SignalNumber, all: bool) {
        if let Some(t) = self.tasks.get(id) {
            let _ = t.container.kill(signal, all);
        } else if let Some(sandbox) = self.pods.get(id).and_then(|p| p.sandbox.as_ref()) {
            // A Sandbox API pod: its pause stands for the sandbox task.
            sandbox.signal_pause(signal, all);
        }
    }
}

/// The service hosts the supervisor: its state lock and condvar, and restarts executed
/// as containerd would (Delete, Create from the saved request, Start), each publishing
/// its events.
impl supervisor::Host for Service {
    type State = Tasks;

    fn state(&self) -> &Mutex<Tasks> {
        &self.inner.state
    }

    fn changed(&self) -> &Condvar {
        &self.inner.changed
    }

    /// Creates and starts member `id` again from its Create request (same id, bundle,
    /// rootfs and stdio: its output appends to the same log).
    fn restart(&self, id: &str) {
        let Some(request) = self.lock().tasks.get(id).map(|t| t.request.clone()) else {
            return;
        };
        let delete = api::DeleteRequest {
            id: id.to_string(),
            ..Default::default()
        };
        let start = api::StartRequest {
            id: id.to_string(),
            ..Default::default()
        };
        let result = self
            .do_delete(delete)
            .and_then(|_| self.do_create(request))
            .and_then(|_| self.do_start(start));
        if let Err(e) = result {
            tracing::warn!(id, error = %sandbox::error::chain(&e), "restart failed");
        }
    }

    /// Runs member `id`'s preStop hook (on the supervisor's thread for it) and records it.
    fn pre_stop(&self, id: &str, deadline: Instant) {
        let Some((seq, pid, hook)) = self.lock().tasks.get(id).and_then(|t| {
            let pid = t.init.pid.filter(|_| t.init.running())?;
            Some((t.seq, pid_u32(pid), t.hooks.pre_stop.clone()?))
        }) else {
            return;
        };
        let result = self.run_hook(id, seq, pid, &hook, deadline);
        let record = proto::eventlog::HookRecord {
            container_id: id.to_string(),
            hook: sandbox::pod::hooks::HookKind::PreStop,
            handler: hook.describe(),
            ok: result.is_ok(),
            message: result.err().unwrap_or_default(),
        };
        tracing::info!(id, ok = record.ok, message = %record.message, "preStop hook ran");
        self.hook_record(id, seq, &record);
    }
}

fn pipe_fd(f: &std::fs::File) -> std::os::fd::BorrowedFd<'_> {
    use std::os::fd::AsFd;
    f.as_fd()
}

pub(crate) fn pid_u32(pid: Pid) -> u32 {
    u32::try_from(pid.as_raw()).unwrap_or(0)
}

pub(crate) fn exit_status(code: i32) -> u32 {
    u32::try_from(code).unwrap_or(255)
}

fn delete_response(proc: &Proc) -> api::DeleteResponse {
    api::DeleteResponse {
        pid: proc.pid.map_or(0, pid_u32),
        exit_status: proc.exit.map_or(0, |e| exit_status(e.code)),
        exited_at: proc
            .exit
            .map_or_else(MessageField::none, |e| MessageField::some(to_timestamp(e.at))),
        ..Default::default()
    }
}

fn reply<T>(op: &'static str, r: Result<T>) -> ttrpc::Result<T> {
    r.map_err(|e| {
        tracing::warn!(op, error = %sandbox::error::chain(&e), "task call failed");
        e.into()
    })
}

/// The Task API on the shim's event loop (ttrpc's async server, `crate::serve`). Wait
/// is a future woken by the exit it waits for (`Service::until`); every other call runs
/// on tokio's blocking pool (`Service::blocking`), as it may take the state lock, fork
/// a container or wait out a grace period.
#[async_trait::async_trait]
impl containerd_shim_protos::shim_async::Task for Service {
    async fn state(&self, _: &TtrpcContext, req: api::StateRequest) -> ttrpc::Result<api::StateResponse> {
        self.quick(move |svc| reply("state", svc.do_state(req)))
    }

    async fn create(&self, _: &TtrpcContext, req: api::CreateTaskRequest) -> ttrpc::Result<api::CreateTaskResponse> {
        self.blocking(move |svc| {
            tracing::info!(id = %req.id, bundle = %req.bundle, "create");
            // Runtime options (`req.options`, e.g. runc's `Options`) are accepted and ignored.
            reply("create", svc.do_create(req))
        })
        .await
    }

    async fn start(&self, _: &TtrpcContext, req: api::StartRequest) -> ttrpc::Result<api::StartResponse> {
        self.blocking(move |svc| {
            tracing::info!(id = %req.id, exec_id = %req.exec_id, "start");
            reply("start", svc.do_start(req))
        })
        .await
    }

    async fn delete(&self, _: &TtrpcContext, req: api::DeleteRequest) -> ttrpc::Result<api::DeleteResponse> {
        self.blocking(move |svc| {
            tracing::info!(id = %req.id, exec_id = %req.exec_id, "delete");
            reply("delete", svc.do_delete(req))
        })
        .await
    }

    async fn pids(&self, _: &TtrpcContext, req: api::PidsRequest) -> ttrpc::Result<api::PidsResponse> {
        self.quick(move |svc| reply("pids", svc.do_pids(&req.id)))
    }

    async fn pause(&self, _: &TtrpcContext, req: api::PauseRequest) -> ttrpc::Result<Empty> {
        self.blocking(move |svc| reply("pause", svc.do_pause(&req.id, true).map(|()| Empty::new())))
            .await
    }

    async fn resume(&self, _: &TtrpcContext, req: api::ResumeRequest) -> ttrpc::Result<Empty> {
        self.blocking(move |svc| reply("resume", svc.do_pause(&req.id, false).map(|()| Empty::new())))
            .await
    }

    async fn checkpoint(&self, _: &TtrpcContext, _: api::CheckpointTaskRequest) -> ttrpc::Result<Empty> {
        reply(
            "checkpoint",
            Err(ServiceError::Unimplemented(
                "checkpoint is not supported by peapod".into(),
            )),
        )
    }

    async fn kill(&self, _: &TtrpcContext, req: api::KillRequest) -> ttrpc::Result<Empty> {
        self.blocking(move |svc| {
            tracing::info!(id = %req.id, exec_id = %req.exec_id, signal = req.signal, all = req.all, "kill");
            reply("kill", svc.do_kill(req).map(|()| Empty::new()))
        })
        .await
    }

    async fn exec(&self, _: &TtrpcContext, req: api::ExecProcessRequest) -> ttrpc::Result<Empty> {
        self.blocking(move |svc| {
            tracing::info!(id = %req.id, exec_id = %req.exec_id, "exec");
            reply("exec", svc.do_exec(req).map(|()| Empty::new()))
        })
        .await
    }

    async fn resize_pty(&self, _: &TtrpcContext, req: api::ResizePtyRequest) -> ttrpc::Result<Empty> {
        self.blocking(move |svc| {
            let r = svc.with_proc_io(&req.id, &req.exec_id, |io| {
                io.resize(req.width, req.height)
                    .map_err(|source| ServiceError::ResizePty {
                        id: req.id.clone(),
                        exec_id: req.exec_id.clone(),
                        source,
                    })
            });
            reply("resize_pty", r.map(|()| Empty::new()))
        })
        .await
    }

    async fn close_io(&self, _: &TtrpcContext, req: api::CloseIORequest) -> ttrpc::Result<Empty> {
        self.blocking(move |svc| {
            let r = svc.with_proc_io(&req.id, &req.exec_id, |io| {
                if req.stdin {
                    io.close_stdin();
                }
                Ok(())
            });
            reply("close_io", r.map(|()| Empty::new()))
        })
        .await
    }

    async fn update(&self, _: &TtrpcContext, req: api::UpdateTaskRequest) -> ttrpc::Result<Empty> {
        self.blocking(move |svc| reply("update", svc.do_update(req).map(|()| Empty::new())))
            .await
    }

    async fn wait(&self, _: &TtrpcContext, req: api::WaitRequest) -> ttrpc::Result<api::WaitResponse> {
        reply("wait", self.wait_for_exit(req).await)
    }

    async fn stats(&self, _: &TtrpcContext, req: api::StatsRequest) -> ttrpc::Result<api::StatsResponse> {
        self.quick(move |svc| reply("stats", svc.do_stats(&req.id)))
    }

    async fn connect(&self, _: &TtrpcContext, req: api::ConnectRequest) -> ttrpc::Result<api::ConnectResponse> {
        self.quick(move |svc| {
            // containerd ≥ 2.0 connects to a sandbox shim it reloads after a restart by the
            // sandbox's id (core/runtime/v2/shim_load.go `loadShimTask`): a Sandbox API pod's
            // pause answers for it, else containerd takes the shim for dead and deletes it.
            let pause = crate::sandbox_service::pause_pid(&svc.lock(), &req.id);
            let task_pid = match pause {
                Some(pid) => Ok(pid_u32(pid)),
                None => svc.with_task(&req.id, |t| Ok(t.init.pid.map_or(0, pid_u32))),
            };
            reply(
                "connect",
                task_pid.map(|task_pid| api::ConnectResponse {
                    shim_pid: std::process::id(),
                    task_pid,
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    ..Default::default()
                }),
            )
        })
    }

    async fn shutdown(&self, _: &TtrpcContext, _: api::ShutdownRequest) -> ttrpc::Result<Empty> {
        self.blocking(move |svc| {
            let mut st = svc.lock();
            // A pod made through the Sandbox API keeps the shim until ShutdownSandbox, even
            // with no task left (containerd before task API v3 sends Shutdown after each
            // container's Delete).
            if st.tasks.is_empty() && st.pods.values().all(|p| p.sandbox.is_none()) {
                tracing::info!("shutdown: no task left, exiting");
                st.shutdown = true;
                svc.notify_changed();
            } else {
                tracing::debug!(tasks = st.tasks.len(), "shutdown ignored: tasks remain");
            }
            Ok(Empty::new())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(dir: &std::path::Path) -> Service {
        let paths = Paths::under(dir);
        Service::new("test", paths, Publisher::disabled("test"))
    }

    fn with_pod(svc: &Service, id: &str, dir: &std::path::Path) {
        let resources = PodResources {
            id: id.to_string(),
            cgroup: None,
            cgroup_owned_from: None,
            volumes: HashMap::new(),
            tmpfs: Vec::new(),
            state_dir: dir.join(id),
            files: None,
        };
        let supervision = Supervision::new(Vec::new(), Duration::from_secs(30), None);
        let pod = Pod {
            resources,
            supervision,
            grace_declared: false,
            sandbox: None,
        };
        svc.lock().pods.insert(id.to_string(), pod);
    }

    fn grace_update(id: &str, value: &str) -> api::UpdateTaskRequest {
        api::UpdateTaskRequest {
            id: id.to_string(),
            annotations: [(annotations::GRACE_PERIOD.to_string(), value.to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn update_with_the_grace_annotation_sets_the_pods_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path());
        with_pod(&svc, "pod1", dir.path());
        svc.do_update(grace_update("pod1", "5")).unwrap();
        let grace = svc.lock().pods["pod1"].supervision.grace_period();
        assert_eq!(grace, Duration::from_secs(5));

        svc.set_grace_period("pod1", Duration::from_secs(7)).unwrap();
        assert_eq!(
            svc.lock().pods["pod1"].supervision.grace_period(),
            Duration::from_secs(7)
        );
    }

    #[test]
    fn a_containers_kubelet_grace_applies_unless_the_pod_declared_one() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path());
        with_pod(&svc, "pod1", dir.path());
        let grace = |svc: &Service| svc.lock().pods["pod1"].supervision.grace_period();
        svc.lock().pods.get_mut("pod1").unwrap().adopt_container_grace(None);
        assert_eq!(grace(&svc), Duration::from_secs(30));
        let adopt = |svc: &Service, s| {
            let mut st = svc.lock();
            st.pods
                .get_mut("pod1")
                .unwrap()
                .adopt_container_grace(Some(Duration::from_secs(s)));
        };
        adopt(&svc, 2);
        assert_eq!(grace(&svc), Duration::from_secs(2));
        // The CLI's `delete --grace-period` (Update) declares it for the pod: it stays.
        svc.do_update(grace_update("pod1", "9")).unwrap();
        adopt(&svc, 2);
        assert_eq!(grace(&svc), Duration::from_secs(9));
    }

    #[test]
    fn grace_period_errors_name_the_annotation_or_the_sandbox() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path());
        with_pod(&svc, "pod1", dir.path());
        let e = svc.do_update(grace_update("pod1", "soon")).unwrap_err();
        assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT);
        let msg = sandbox::error::chain(&e);
        assert!(msg.contains(annotations::GRACE_PERIOD) && msg.contains("soon"), "{msg}");
        // Out of bounds is refused, not added to an Instant later (which would panic).
        let e = svc.do_update(grace_update("pod1", &u64::MAX.to_string())).unwrap_err();
        assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT);
        assert!(sandbox::error::chain(&e).contains(annotations::GRACE_PERIOD), "{e}");

        let e = svc.do_update(grace_update("nope", "5")).unwrap_err();
        assert_eq!(e.code(), ttrpc::Code::NOT_FOUND);
        assert!(e.to_string().contains("sandbox nope"), "{e}");
    }

    #[test]
    fn malformed_requests_are_invalid_arguments_naming_the_field_and_cause() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path());
        let create = api::CreateTaskRequest {
            id: "c1".into(),
            bundle: dir.path().join("no-bundle").display().to_string(),
            ..Default::default()
        };
        let e = svc.do_create(create).unwrap_err();
        assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT);
        let msg = sandbox::error::chain(&e);
        assert!(msg.contains("no-bundle/config.json"), "{msg}");

        let exec = api::ExecProcessRequest {
            id: "c1".into(),
            exec_id: "e1".into(),
            ..Default::default()
        };
        let e = svc.do_exec(exec).unwrap_err();
        assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT);
        let msg = sandbox::error::chain(&e);
        assert!(msg.contains("exec e1") && msg.contains("EOF"), "{msg}");

        let update = api::UpdateTaskRequest {
            id: "c1".into(),
            ..Default::default()
        };
        let e = svc.do_update(update).unwrap_err();
        assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT);
        assert!(sandbox::error::chain(&e).contains("update c1: resources"), "{e}");
    }
}
