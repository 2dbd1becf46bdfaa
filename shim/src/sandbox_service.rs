//! containerd's Sandbox API (`containerd.runtime.sandbox.v1.Sandbox`): with
//! `sandboxer = "shim"` in a runtime's config, containerd 2.x asks the shim itself to
//! create, start, stop and remove a pod sandbox (`plugins/sandbox/controller.go`), instead
//! of running a pause image as one more task. Served on the same socket as the Task API,
//! over the same state ([`Service`]): a sandbox is a pod ([`crate::service`]'s `Pod`)
//! whose pause process is peapod's own, not a task.
//!
//! The calls, in the order CRI makes them (`internal/cri/server/sandbox_run.go`,
//! `sandbox_stop.go`, `sandbox_remove.go`):
//! - `CreateSandbox`: `options` is CRI's `PodSandboxConfig` ([`proto::podsandbox`]),
//!   `netns_path` the network namespace containerd set up with CNI (empty for a node
//!   network). The pod is built from them, before any process exists: the pod cgroup
//!   under `linux.cgroup_parent`, sized from `linux.resources` plus `linux.overhead`
//!   (unless it exists: kubelet's is left as kubelet sized it), the pod's files
//!   (hostname, hosts, `resolv.conf`, `/dev/shm`), emptyDirs and roles from peapod's
//!   annotations as for a pause task. The pause's spec is checked here too, so a bad
//!   config (sysctls for a namespace the pod does not own, say) fails now and leaves
//!   nothing.
//! - `StartSandbox`: runs `peapod-pause` (no image is pulled or unpacked:
//!   `sandbox::pod`'s pause) in the pod's namespaces and cgroup (`<cgroup_parent>/<id>`),
//!   and returns its pid, which CRI puts in containers' namespace paths
//!   (`/proc/<pid>/ns/{net,ipc,uts,pid}`), its start time and its spec.
//! - `Platform`: `linux` and this machine's architecture, as Go names it.
//! - `SandboxStatus`: `SANDBOX_READY` while the pause runs, else `SANDBOX_NOTREADY`; with
//!   `verbose`, `info["info"]` in the shape of CRI's own sandbox info (`pid`,
//!   `processStatus`, `runtimeSpec`) and `info["peapod"]` listing the pod's containers.
//! - `PingSandbox`, `WaitSandbox` (blocks until the pause exits: its exit status, 128 +
//!   signal when killed).
//! - `StopSandbox(timeout)`: the pod's termination (`sandbox::pod::supervisor`): SIGTERM
//!   to every running container in one pass, SIGKILL to those left when `timeout_secs`
//!   (else the pod's grace period) is over, then SIGTERM to the pause; returns once the
//!   pause has exited. CRI has already stopped the containers by then (`StopPodSandbox`
//!   kills them first); a direct client gets the graceful order.
//! - `ShutdownSandbox`: whatever still runs in the pod is SIGKILLed and its tasks are
//!   deleted, then the pause, then the pod's volumes, files and cgroup; the shim exits
//!   once no task and no sandbox is left. An unknown sandbox is no error (containerd
//!   sends ShutdownSandbox after a failed CreateSandbox too), and lets an empty shim exit.
//! - `SandboxMetrics`: the pod cgroup's usage as cgroup v1 or v2 `Metrics` (PSI on v2),
//!   the payload Task `Stats` uses ([`crate::metrics`]).
//!
//! Errors go through [`ServiceError`], the one place that picks ttrpc codes.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::sandbox_api::{
    CreateSandboxRequest, CreateSandboxResponse, PingRequest, PingResponse, PlatformRequest, PlatformResponse,
    SandboxMetricsRequest, SandboxMetricsResponse, SandboxStatusRequest, SandboxStatusResponse, ShutdownSandboxRequest,
    ShutdownSandboxResponse, StartSandboxRequest, StartSandboxResponse, StopSandboxRequest, StopSandboxResponse,
    WaitSandboxRequest, WaitSandboxResponse,
};
use containerd_shim_protos::ttrpc::{self, r#async::TtrpcContext};
use containerd_shim_protos::types::platform::Platform;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::Spec;
use proto::podsandbox::PodSandbox;
use sandbox::pod::supervisor::{self, PodState, Supervision};
use sandbox::pod::PodResources;
use sandbox::signal::SignalNumber;
use sandbox::{Container, CreateOptions, Stdio};

use crate::checks;
use crate::error::ServiceError;
use crate::events::to_timestamp;
use crate::service::{exit_status, pid_u32, Exit, Pod, Service, Tasks};

type Result<T> = std::result::Result<T, ServiceError>;

/// `SandboxStatusResponse.state` while the pause runs (CRI's `PodSandboxState` names).
pub const STATE_READY: &str = "SANDBOX_READY";
/// `SandboxStatusResponse.state` otherwise.
pub const STATE_NOT_READY: &str = "SANDBOX_NOTREADY";
/// The type URL of an OCI spec in JSON, as containerd's typeurl registers it.
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// The pause's root directory, in the pod's state directory.
const PAUSE_ROOT: &str = "pause-root";
/// How long `StopSandbox` waits for the pause after the termination signalled it, and
/// `ShutdownSandbox` for SIGKILLed processes to be reaped, before going on.
const REAP_WAIT: Duration = Duration::from_secs(10);

/// A pod made through the Sandbox API: its checked config and its pause process.
pub(crate) struct PodSandboxState {
    config: PodSandbox,
    bundle: String,
    /// When CreateSandbox made the pod.
    created_at: SystemTime,
    /// The pause's spec (built and checked at CreateSandbox).
    spec: Spec,
    pause: Option<Container>,
    pause_pid: Option<Pid>,
    /// StartSandbox is under way or done.
    starting: bool,
    started: bool,
    started_at: Option<SystemTime>,
    exit: Option<Exit>,
}

impl PodSandboxState {
    /// The pause runs: containers may join it.
    pub(crate) fn running(&self) -> bool {
        self.started && self.exit.is_none()
    }

    /// Sends `signal` to the pause (with `all`, to every process of its cgroup); dropped
    /// when it is not running.
    pub(crate) fn signal_pause(&self, signal: impl Into<SignalNumber>, all: bool) {
        let signal = signal.into();
        if let Some(c) = self.pause.as_ref().filter(|_| self.exit.is_none()) {
            let _ = c.kill(signal, all);
        }
    }
}

/// Records the exit of a pod's pause reaped as `pid`; false when `pid` is no pause.
pub(crate) fn claim_pause(st: &mut Tasks, pid: Pid, exit: Exit) -> bool {
    for (id, pod) in st.pods.iter_mut() {
        let Some(sb) = pod.sandbox.as_mut() else { continue };
        if sb.pause_pid == Some(pid) && sb.exit.is_none() {
            tracing::info!(sandbox = %id, code = exit.code, "pause exited");
            sb.exit = Some(exit);
            if let Some(c) = sb.pause.as_mut() {
                let _ = c.record_exit(exit.code, exit.at);
            }
            return true;
        }
    }
    false
}

/// The pause pid of Sandbox API pod `id`, when `id` is one (and no task of that id
/// exists) and its pause was started; for Task API calls containerd makes with the
/// sandbox's id (Connect, Pids).
pub(crate) fn pause_pid(st: &Tasks, id: &str) -> Option<Pid> {
    if st.has_task(id) {
        return None;
    }
    st.pods.get(id)?.sandbox.as_ref()?.pause_pid
}

/// Go's name for this machine's architecture (`runtime.GOARCH`), for `Platform`.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

fn spec_any(spec: &Spec) -> MessageField<Any> {
    match serde_json::to_vec(spec) {
        Ok(value) => MessageField::some(Any {
            type_url: SPEC_TYPE_URL.to_string(),
            value,
            ..Default::default()
        }),
        Err(_) => MessageField::none(),
    }
}

fn not_found(id: &str) -> ServiceError {
    ServiceError::NotFound(format!("sandbox {id}"))
}

impl Service {
    fn with_sandbox<T>(&self, id: &str, f: impl FnOnce(&mut Pod, &mut PodSandboxState) -> Result<T>) -> Result<T> {
        let mut st = self.lock();
        let pod = st.pods.get_mut(id).ok_or_else(|| not_found(id))?;
        let mut sb = pod.sandbox.take().ok_or_else(|| not_found(id))?;
        let r = f(pod, &mut sb);
        pod.sandbox = Some(sb);
        r
    }

    /// CreateSandbox: checks the request and builds the pod (see the module docs). On
    /// error nothing is left.
    pub(crate) fn do_create_sandbox(&self, req: &CreateSandboxRequest) -> Result<()> {
        let id = req.sandbox_id.as_str();
        {
            let st = self.lock();
            if st.pods.contains_key(id) {
                return Err(ServiceError::AlreadyExists(format!("sandbox {id}")));
            }
        }
        let (ps, config, cgroup) = checks::create_sandbox(req)?;
        if !req.netns_path.is_empty() && !std::path::Path::new(&req.netns_path).exists() {
            return Err(ServiceError::InvalidArgument(format!(
                "netns_path: {}: no such network namespace",
                req.netns_path
            )));
        }
        let binary = sandbox::pod::pause_binary()?;
        let state_dir = self.inner.paths.pods.join(id);
        let resources = PodResources::create(
            id,
            &config,
            ps.cgroup_parent.as_deref(),
            &state_dir,
            &self.inner.paths.disk,
        )?;
        let checked = (|| -> Result<Spec> {
            let root = state_dir.join(PAUSE_ROOT);
            sandbox::pod::prepare_pause_root(&root)?;
            let spec = ps.pause.spec(&root, &binary, &cgroup);
            // Checked now, so a refused setting fails CreateSandbox, not StartSandbox.
            sandbox::spec::validate(id, &state_dir, &spec)?;
            Ok(spec)
        })();
        let spec = match checked {
            Ok(s) => s,
            Err(e) => {
                let _ = resources.destroy();
                return Err(e);
            }
        };
        let mut st = self.lock();
        if st.pods.contains_key(id) {
            drop(st);
            let _ = resources.destroy();
            return Err(ServiceError::AlreadyExists(format!("sandbox {id}")));
        }
        tracing::info!(
            sandbox = id,
            pod = %ps.name,
            namespace = %ps.namespace,
            cgroup = ?resources.cgroup,
            "sandbox created"
        );
        let grace = config
            .grace
            .unwrap_or(Duration::from_secs(proto::kube::DEFAULT_GRACE_SECONDS));
        st.pods.insert(
            id.to_string(),
            Pod {
                resources,
                supervision: Supervision::new(config.containers, grace, config.restart_policy),
                grace_declared: config.grace.is_some(),
                sandbox: Some(PodSandboxState {
                    config: ps,
                    bundle: req.bundle_path.clone(),
                    created_at: SystemTime::now(),
                    spec,
                    pause: None,
                    pause_pid: None,
                    starting: false,
                    started: false,
                    started_at: None,
                    exit: None,
                }),
            },
        );
        Ok(())
    }

    /// StartSandbox: creates and starts the pause container.
    pub(crate) fn do_start_sandbox(&self, id: &str) -> Result<StartSandboxResponse> {
        let (spec, bundle) = self.with_sandbox(id, |pod, sb| {
            if sb.starting {
                return Err(ServiceError::FailedPrecondition(format!(
                    "sandbox {id} already started"
                )));
            }
            if pod.supervision.terminating() {
                return Err(ServiceError::FailedPrecondition(format!("sandbox {id} is stopping")));
            }
            sb.starting = true;
            Ok((sb.spec.clone(), pod.resources.state_dir.clone()))
        })?;
        let created = Container::create(
            &self.inner.config,
            CreateOptions {
                id: id.to_string(),
                bundle,
                rootfs_mounts: Vec::new(),
                stdio: Stdio::default(),
                spec: Some(spec.clone()),
            },
        );
        let mut container = match created {
            Ok(c) => c,
            Err(e) => {
                let _ = self.with_sandbox(id, |_, sb| {
                    sb.starting = false;
                    Ok(())
                });
                return Err(e.into());
            }
        };
        let pid = container
            .pid()
            .ok_or_else(|| ServiceError::Internal("created pause has no pid".into()))?;
        if let Err(e) = container.start() {
            let _ = container.delete(true);
            let _ = self.with_sandbox(id, |_, sb| {
                sb.starting = false;
                Ok(())
            });
            return Err(e.into());
        }
        let now = SystemTime::now();
        let t = container.timings();
        tracing::info!(
            sandbox = id,
            pid = pid.as_raw(),
            total_us = t.total_us,
            start_us = t.start_us,
            "pause started"
        );
        let mut st = self.lock();
        let Some(sb) = st.pods.get_mut(id).and_then(|p| p.sandbox.as_mut()) else {
            // Shut down meanwhile.
            drop(st);
            let _ = container.delete(true);
            return Err(not_found(id));
        };
        sb.pause = Some(container);
        sb.pause_pid = Some(pid);
        sb.started = true;
        sb.started_at = Some(now);
        self.adopt(&mut st, pid);
        self.notify_changed();
        Ok(StartSandboxResponse {
            pid: pid_u32(pid),
            created_at: MessageField::some(to_timestamp(now)),
            spec: spec_any(&spec),
            ..Default::default()
        })
    }

    /// StopSandbox: terminates the pod (see the module docs) and waits for the pause.
    pub(crate) fn do_stop_sandbox(&self, id: &str, timeout_secs: u32) -> Result<()> {
        let mut st = self.lock();
        let pod = st.pods.get_mut(id).ok_or_else(|| not_found(id))?;
        let sb = pod.sandbox.as_ref().ok_or_else(|| not_found(id))?;
        if !sb.running() {
            return Ok(());
        }
        if timeout_secs > 0 && !pod.supervision.terminating() {
            pod.supervision
                .set_grace_period(Duration::from_secs(u64::from(timeout_secs)));
        }
        let grace = pod.supervision.grace_period();
        tracing::info!(sandbox = id, grace_s = grace.as_secs(), "stopping sandbox");
        supervisor::terminate(self, &mut st, id, Signal::SIGTERM);
        // The termination signals the pause after the containers; it may take the grace
        // period, SIGKILLs and their reaping.
        let mut deadline = Instant::now() + grace + 2 * REAP_WAIT;
        let mut killed = false;
        loop {
            let sb = st
                .pods
                .get(id)
                .and_then(|p| p.sandbox.as_ref())
                .ok_or_else(|| not_found(id))?;
            if !sb.running() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                if killed {
                    return Err(ServiceError::Internal(format!(
                        "sandbox {id}: the pause did not exit after SIGKILL"
                    )));
                }
                tracing::warn!(sandbox = id, "pause still running: SIGKILL");
                sb.signal_pause(Signal::SIGKILL, true);
                killed = true;
                // SIGKILL gets its own time to be reaped.
                deadline = Instant::now() + REAP_WAIT;
            }
            st = self
                .inner
                .changed
                .wait_timeout(st, Duration::from_millis(200))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// WaitSandbox's answer if it is known: the pause's exit, or `NotFound` for a
    /// sandbox this shim does not have (or no longer has); `None` while it runs.
    pub(crate) fn sandbox_exit(st: &Tasks, id: &str) -> Option<Result<WaitSandboxResponse>> {
        let Some(sb) = st.pods.get(id).and_then(|p| p.sandbox.as_ref()) else {
            return Some(Err(not_found(id)));
        };
        sb.exit.map(|exit| {
            Ok(WaitSandboxResponse {
                exit_status: exit_status(exit.code),
                exited_at: MessageField::some(to_timestamp(exit.at)),
                ..Default::default()
            })
        })
    }

    /// SandboxStatus.
    pub(crate) fn do_sandbox_status(&self, id: &str, verbose: bool) -> Result<SandboxStatusResponse> {
        let st = self.lock();
        let pod = st.pods.get(id).ok_or_else(|| not_found(id))?;
        let sb = pod.sandbox.as_ref().ok_or_else(|| not_found(id))?;
        let pid = sb.pause_pid.map_or(0, pid_u32);
        let mut info = HashMap::new();
        if verbose {
            let status = match (sb.started, sb.exit) {
                (_, Some(_)) => "stopped",
                (true, None) => "running",
                (false, None) => "created",
            };
            // The shape of CRI's own sandbox info (podsandbox/types.SandboxInfo), which
            // CRI decodes and re-encodes: unknown keys would be dropped there.
            let cri = serde_json::json!({
                "pid": pid,
                "processStatus": status,
                "netNamespaceClosed": false,
                "runtimeSpec": sb.spec,
            });
            info.insert("info".to_string(), cri.to_string());
            let containers: Vec<serde_json::Value> = {
                let mut members = st.members(id);
                members.sort_by_key(|m| m.seq);
                members
                    .iter()
                    .map(|m| {
                        serde_json::json!({
                            "id": m.id,
                            "name": m.name,
                            "role": proto::annotations::format_role(m.role),
                            "running": m.running,
                            "exitCode": m.exit_code,
                        })
                    })
                    .collect()
            };
            let peapod = serde_json::json!({
                "pod": { "name": sb.config.name, "namespace": sb.config.namespace, "uid": sb.config.uid },
                "bundle": sb.bundle,
                "podCgroup": pod.resources.cgroup,
                "pause": { "pid": pid, "status": status, "exitCode": sb.exit.map(|e| e.code) },
                "gracePeriodSeconds": pod.supervision.grace_period().as_secs(),
                "logDirectory": sb.config.log_directory,
                "containers": containers,
            });
            info.insert("peapod".to_string(), peapod.to_string());
        }
        Ok(SandboxStatusResponse {
            sandbox_id: id.to_string(),
            pid,
            state: if sb.running() { STATE_READY } else { STATE_NOT_READY }.to_string(),
            info,
            created_at: MessageField::some(to_timestamp(sb.started_at.unwrap_or(sb.created_at))),
            exited_at: sb
                .exit
                .map_or_else(MessageField::none, |e| MessageField::some(to_timestamp(e.at))),
            ..Default::default()
        })
    }

    /// ShutdownSandbox: kills and deletes what is left of the pod, then the pause, then
    /// the pod's resources; lets the shim exit when nothing is left.
    pub(crate) fn do_shutdown_sandbox(&self, id: &str) -> Result<()> {
        let members: Vec<String> = {
            let mut st = self.lock();
            if st.pods.get(id).and_then(|p| p.sandbox.as_ref()).is_none() {
                // Unknown, e.g. after a failed CreateSandbox, which containerd follows
                // with ShutdownSandbox: nothing to remove, and the shim must not stay.
                if st.tasks_empty() && st.pods.values().all(|p| p.sandbox.is_none()) {
                    tracing::info!(sandbox = id, "shutdown of an unknown sandbox: nothing left, exiting");
                    st.shutdown = true;
                    self.notify_changed();
                }
                return Ok(());
            }
            let members: Vec<String> = st.members(id).into_iter().map(|m| m.id).collect();
            for m in &members {
                st.signal(m, Signal::SIGKILL.into(), true);
            }
            if let Some(sb) = st.pods.get(id).and_then(|p| p.sandbox.as_ref()) {
                sb.signal_pause(Signal::SIGKILL, true);
            }
            members
        };
        if !members.is_empty() {
            tracing::info!(sandbox = id, ?members, "shutdown: deleting the containers left");
        }
        let deadline = Instant::now() + REAP_WAIT;
        for m in &members {
            loop {
                let deleted = self.do_delete(api::DeleteRequest {
                    id: m.clone(),
                    ..Default::default()
                });
                match deleted {
                    Ok(_) | Err(ServiceError::NotFound(_)) => break,
                    Err(e) if Instant::now() >= deadline => return Err(e),
                    Err(_) => {
                        let st = self.lock();
                        let _ = self.inner.changed.wait_timeout(st, Duration::from_millis(50));
                    }
                }
            }
        }
        // The pause: reaped (by the reaper) before its container is deleted, so its exit
        // is recorded and its pid not reused.
        let mut st = self.lock();
        let deadline = Instant::now() + REAP_WAIT;
        while st
            .pods
            .get(id)
            .and_then(|p| p.sandbox.as_ref())
            .is_some_and(|sb| sb.started && sb.exit.is_none())
            && Instant::now() < deadline
        {
            st = self
                .inner
                .changed
                .wait_timeout(st, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let pod = st.pods.get_mut(id).ok_or_else(|| not_found(id))?;
        if let Some(pause) = pod.sandbox.as_mut().and_then(|sb| sb.pause.take()) {
            pause.delete(true)?;
        }
        pod.resources.destroy()?;
        st.pods.remove(id);
        tracing::info!(sandbox = id, "sandbox shut down");
        if st.tasks_empty() && st.pods.values().all(|p| p.sandbox.is_none()) {
            st.shutdown = true;
        }
        self.notify_changed();
        Ok(())
    }

    /// SandboxMetrics: the pod cgroup's usage.
    pub(crate) fn do_sandbox_metrics(&self, id: &str) -> Result<SandboxMetricsResponse> {
        let path = {
            let st = self.lock();
            let pod = st.pods.get(id).ok_or_else(|| not_found(id))?;
            pod.sandbox.as_ref().ok_or_else(|| not_found(id))?;
            pod.resources.cgroup.clone().ok_or_else(|| {
                ServiceError::FailedPrecondition(format!(
                    "sandbox {id} has no pod cgroup (its config names no linux.cgroup_parent)"
                ))
            })?
        };
        let cg = sandbox::cgroups::Cgroup::open(&path).map_err(|source| sandbox::Error::Cgroup {
            id: id.to_string(),
            source,
        })?;
        let stats = cg.files().stats().map_err(|source| sandbox::Error::Cgroup {
            id: id.to_string(),
            source,
        })?;
        let data = crate::metrics::pack(&stats, &cg.files().pressure(), cg.is_v2())?;
        let mut resp = SandboxMetricsResponse::default();
        let metric = resp.metrics.mut_or_insert_default();
        metric.timestamp = MessageField::some(to_timestamp(SystemTime::now()));
        metric.id = id.to_string();
        metric.data = MessageField::some(data);
        Ok(resp)
    }

    fn require_sandbox(&self, id: &str) -> Result<()> {
        let st = self.lock();
        st.pods
            .get(id)
            .and_then(|p| p.sandbox.as_ref())
            .map(|_| ())
            .ok_or_else(|| not_found(id))
    }
}

fn reply<T>(op: &'static str, id: &str, r: Result<T>) -> ttrpc::Result<T> {
    r.map_err(|e| {
        tracing::warn!(op, sandbox = id, error = %sandbox::error::chain(&e), "sandbox call failed");
        e.into()
    })
}

/// The Sandbox API on the shim's event loop, as the Task API
/// (`crate::service`'s `shim_async::Task`): WaitSandbox is a parked future, the other
/// calls run on tokio's blocking pool.
#[async_trait::async_trait]
impl containerd_shim_protos::sandbox_async::Sandbox for Service {
    async fn create_sandbox(
        &self,
        _: &TtrpcContext,
        req: CreateSandboxRequest,
    ) -> ttrpc::Result<CreateSandboxResponse> {
        self.blocking(move |svc| {
            tracing::info!(sandbox = %req.sandbox_id, netns = %req.netns_path, "create sandbox");
            let r = svc.do_create_sandbox(&req).map(|()| CreateSandboxResponse::default());
            reply("create_sandbox", &req.sandbox_id, r)
        })
        .await
    }

    async fn start_sandbox(&self, _: &TtrpcContext, req: StartSandboxRequest) -> ttrpc::Result<StartSandboxResponse> {
        self.blocking(move |svc| {
            tracing::info!(sandbox = %req.sandbox_id, "start sandbox");
            reply("start_sandbox", &req.sandbox_id, svc.do_start_sandbox(&req.sandbox_id))
        })
        .await
    }

    async fn platform(&self, _: &TtrpcContext, req: PlatformRequest) -> ttrpc::Result<PlatformResponse> {
        self.blocking(move |svc| {
            let r = svc.require_sandbox(&req.sandbox_id).map(|()| PlatformResponse {
                platform: MessageField::some(Platform {
                    os: "linux".to_string(),
                    architecture: go_arch().to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            });
            reply("platform", &req.sandbox_id, r)
        })
        .await
    }

    async fn stop_sandbox(&self, _: &TtrpcContext, req: StopSandboxRequest) -> ttrpc::Result<StopSandboxResponse> {
        self.blocking(move |svc| {
            tracing::info!(sandbox = %req.sandbox_id, timeout_secs = req.timeout_secs, "stop sandbox");
            let r = svc
                .do_stop_sandbox(&req.sandbox_id, req.timeout_secs)
                .map(|()| StopSandboxResponse::default());
            reply("stop_sandbox", &req.sandbox_id, r)
        })
        .await
    }

    async fn wait_sandbox(&self, _: &TtrpcContext, req: WaitSandboxRequest) -> ttrpc::Result<WaitSandboxResponse> {
        let id = req.sandbox_id;
        reply("wait_sandbox", &id, self.until(|st| Self::sandbox_exit(st, &id)).await)
    }

    async fn sandbox_status(
        &self,
        _: &TtrpcContext,
        req: SandboxStatusRequest,
    ) -> ttrpc::Result<SandboxStatusResponse> {
        self.blocking(move |svc| {
            reply(
                "sandbox_status",
                &req.sandbox_id,
                svc.do_sandbox_status(&req.sandbox_id, req.verbose),
            )
        })
        .await
    }

    async fn ping_sandbox(&self, _: &TtrpcContext, req: PingRequest) -> ttrpc::Result<PingResponse> {
        self.blocking(move |svc| {
            let r = svc.require_sandbox(&req.sandbox_id).map(|()| PingResponse::default());
            reply("ping_sandbox", &req.sandbox_id, r)
        })
        .await
    }

    async fn shutdown_sandbox(
        &self,
        _: &TtrpcContext,
        req: ShutdownSandboxRequest,
    ) -> ttrpc::Result<ShutdownSandboxResponse> {
        self.blocking(move |svc| {
            tracing::info!(sandbox = %req.sandbox_id, "shutdown sandbox");
            let r = svc
                .do_shutdown_sandbox(&req.sandbox_id)
                .map(|()| ShutdownSandboxResponse::default());
            reply("shutdown_sandbox", &req.sandbox_id, r)
        })
        .await
    }

    async fn sandbox_metrics(
        &self,
        _: &TtrpcContext,
        req: SandboxMetricsRequest,
    ) -> ttrpc::Result<SandboxMetricsResponse> {
        self.blocking(move |svc| {
            reply(
                "sandbox_metrics",
                &req.sandbox_id,
                svc.do_sandbox_metrics(&req.sandbox_id),
            )
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Publisher;
    use crate::start::Paths;

    fn service(dir: &std::path::Path) -> Service {
        let paths = Paths::under(dir);
        Service::new("test", paths, Publisher::disabled("test"))
    }

    fn request(options: Option<Any>, netns: &str) -> CreateSandboxRequest {
        CreateSandboxRequest {
            sandbox_id: "sb1".into(),
            bundle_path: "/nonexistent".into(),
            options: options.map_or_else(MessageField::none, MessageField::some),
            netns_path: netns.into(),
            ..Default::default()
        }
    }

    fn options(config: &proto::podsandbox::PodSandboxConfig) -> Any {
        Any {
            type_url: proto::podsandbox::TYPE_URL.into(),
            value: containerd_shim_protos::protobuf::Message::write_to_bytes(config).unwrap(),
            ..Default::default()
        }
    }

    #[test]
    fn bad_sandbox_requests_name_the_field_and_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path());
        let code = |r: Result<()>| {
            let e = r.unwrap_err();
            (e.code(), sandbox::error::chain(&e))
        };
        let (c, m) = code(svc.do_create_sandbox(&request(None, "")));
        assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT);
        assert!(m.contains("options: missing"), "{m}");

        let config = proto::podsandbox::PodSandboxConfig::default();
        let (c, m) = code(svc.do_create_sandbox(&request(Some(options(&config)), "")));
        assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT);
        assert!(m.contains("netns_path: empty"), "{m}");

        let (c, m) = code(svc.do_create_sandbox(&request(
            Some(options(&config)),
            &dir.path().join("no-netns").display().to_string(),
        )));
        assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT);
        assert!(m.contains("no such network namespace"), "{m}");

        let mut userns = config.clone();
        userns.linux = MessageField::some(proto::podsandbox::LinuxPodSandboxConfig {
            security_context: MessageField::some(proto::podsandbox::LinuxSandboxSecurityContext {
                namespace_options: MessageField::some(proto::podsandbox::NamespaceOption {
                    userns_options: MessageField::some(proto::podsandbox::UserNamespace::default()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let (c, m) = code(svc.do_create_sandbox(&request(Some(options(&userns)), "/proc/self/ns/net")));
        assert_eq!(c, ttrpc::Code::UNIMPLEMENTED);
        assert!(m.contains("userns_options.mode"), "{m}");

        let mut ann = config.clone();
        ann.annotations = [(proto::annotations::EMPTY_DIRS.to_string(), "nope".to_string())].into();
        let (c, m) = code(svc.do_create_sandbox(&request(Some(options(&ann)), "/proc/self/ns/net")));
        // Either the annotation or (without a static pause here) the pause binary is
        // refused first; neither leaves anything.
        assert!(
            (c == ttrpc::Code::INVALID_ARGUMENT && m.contains(proto::annotations::EMPTY_DIRS))
                || c == ttrpc::Code::FAILED_PRECONDITION,
            "{c:?} {m}"
        );

        let mut bad = request(Some(options(&config)), "/proc/self/ns/net");
        bad.sandbox_id = "-bad".into();
        assert_eq!(code(svc.do_create_sandbox(&bad)).0, ttrpc::Code::INVALID_ARGUMENT);

        assert!(!dir.path().join("pods").join("sb1").exists(), "nothing is left");
        assert!(svc.lock().pods.is_empty());
        let wait = Service::sandbox_exit(&svc.lock(), "sb1").unwrap().unwrap_err();
        for e in [
            svc.do_start_sandbox("sb1").unwrap_err(),
            wait,
            svc.do_sandbox_status("sb1", true).unwrap_err(),
            svc.do_sandbox_metrics("sb1").unwrap_err(),
        ] {
            assert_eq!(e.code(), ttrpc::Code::NOT_FOUND, "{e}");
        }
        assert_eq!(
            svc.do_stop_sandbox("sb1", 1).unwrap_err().code(),
            ttrpc::Code::NOT_FOUND
        );
    }

    #[test]
    fn platform_names_goarch() {
        assert!(["amd64", "arm64"].contains(&go_arch()) || !go_arch().is_empty());
        if cfg!(target_arch = "x86_64") {
            assert_eq!(go_arch(), "amd64");
        }
    }
}
