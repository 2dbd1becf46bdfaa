//! The argument checks of the Task and Sandbox API calls: what each handler decides from
//! the decoded request alone, before it takes the service's lock or touches the host.
//!
//! The handlers in [`crate::service`] and [`crate::sandbox_service`] call these first, and
//! the fuzz targets (`peapod_tests::fuzz::task_request`) call the same functions on
//! requests decoded from arbitrary bytes, so what the fuzzer proves about them holds for
//! the shim. Each returns the typed values the handler goes on with, or the
//! [`ServiceError`] the call answers with (the ttrpc code is chosen in `crate::error`).

use std::collections::HashMap;
use std::time::Duration;

use containerd_shim_protos::api;
use containerd_shim_protos::sandbox_api::CreateSandboxRequest;
use oci_spec::runtime::{LinuxResources, Process, Spec};
use proto::annotations::{self, Member};
use proto::podsandbox::PodSandbox;
use sandbox::pod::PodConfig;
use sandbox::signal::SignalNumber;

use crate::error::ServiceError;

type Result<T> = std::result::Result<T, ServiceError>;

/// Create: the request's own fields. A checkpoint to restore from is refused
/// ([`ServiceError::Unimplemented`]); runtime options (`req.options`, e.g. runc's
/// `Options`) are accepted and ignored.
pub fn create_task(req: &api::CreateTaskRequest) -> Result<()> {
    if !req.checkpoint.is_empty() {
        return Err(ServiceError::Unimplemented("restoring from a checkpoint".into()));
    }
    Ok(())
}

/// Create: what the bundle's spec says about the task's place in a pod (peapod's
/// annotations, [`Member::from_annotations`]), with the annotations themselves.
///
/// Errors: [`ServiceError::Member`] naming the task and the refused annotation.
pub fn create_member(id: &str, spec: &Spec) -> Result<(Member, HashMap<String, String>)> {
    let ann = spec.annotations().clone().unwrap_or_default();
    let member = Member::from_annotations(id, &ann).map_err(|source| ServiceError::Member {
        id: id.to_string(),
        source,
    })?;
    Ok((member, ann))
}

/// Exec: the process to run, decoded from `req.spec` (an OCI `Process` in JSON, as
/// containerd sends it) and checked as a container's own process is.
///
/// Errors: [`ServiceError::ExecSpec`] for JSON that is no `Process`;
/// [`ServiceError::Spec`] naming the refused field.
pub fn exec_process(req: &api::ExecProcessRequest) -> Result<Process> {
    let mut spec: Process = serde_json::from_slice(&req.spec.value).map_err(|source| ServiceError::ExecSpec {
        exec_id: req.exec_id.clone(),
        source,
    })?;
    // The request's `terminal` decides, not the spec's: containerd's Go client sends the
    // container's process spec with a terminal asked for only in the request
    // (`cio.WithTerminal`, containerd's TestContainerExecLargeOutputWithTTY), and runc's
    // shim overrides the spec the same way (pkg/process/init.go `exec`).
    spec.set_terminal(Some(req.terminal));
    sandbox::spec::validate_process("process", &spec)?;
    Ok(spec)
}

/// Kill: the signal, a Linux signal number (1 to SIGRTMAX: real-time signals too, as
/// runc sends them).
///
/// Errors: [`ServiceError::InvalidArgument`] for a number that names no signal.
pub fn kill_signal(req: &api::KillRequest) -> Result<SignalNumber> {
    i32::try_from(req.signal)
        .ok()
        .and_then(SignalNumber::new)
        .ok_or_else(|| ServiceError::InvalidArgument(format!("signal {}", req.signal)))
}

/// What an Update asks for.
#[derive(Debug, Default)]
pub struct UpdateArgs {
    /// The pod's grace period, from `io.peapod.grace-period` (the CLI's
    /// `delete --grace-period`: containerd's Update has no field for it).
    pub grace: Option<Duration>,
    /// The task's new resources; `None` when the request only sets the grace period.
    pub resources: Option<LinuxResources>,
}

/// Update: the grace period annotation and the resources (OCI `LinuxResources` in JSON).
/// Without the annotation the resources are required.
///
/// Errors: [`ServiceError::Annotation`] for a malformed grace period;
/// [`ServiceError::Resources`] for JSON that is no `LinuxResources`.
pub fn update_task(req: &api::UpdateTaskRequest) -> Result<UpdateArgs> {
    let mut args = UpdateArgs::default();
    if let Some(g) = req.annotations.get(annotations::GRACE_PERIOD) {
        args.grace = Some(Duration::from_secs(annotations::parse_grace_seconds(g)?));
        if req.resources.value.is_empty() {
            return Ok(args);
        }
    }
    let res =
        serde_json::from_slice::<LinuxResources>(&req.resources.value).map_err(|source| ServiceError::Resources {
            id: req.id.clone(),
            source,
        })?;
    args.resources = Some(res);
    Ok(args)
}

/// CreateSandbox: the sandbox id, CRI's `PodSandboxConfig` in `req.options`
/// ([`PodSandbox::from_options`]) and peapod's annotations on it
/// ([`annotations::pod_config`]), merged into the pod's configuration: CRI's sizing
/// (kubelet's) wins over peapod's annotations, and a pod cgroup is made whenever a parent
/// is named, sized or not. Also returns the pause container's cgroup path.
///
/// Errors: [`ServiceError::Spec`] for an invalid id; [`ServiceError::InvalidArgument`]
/// for rootfs mounts or missing options; [`ServiceError::SandboxConfig`] and
/// [`ServiceError::Annotation`] naming the refused field.
pub fn create_sandbox(req: &CreateSandboxRequest) -> Result<(PodSandbox, PodConfig, String)> {
    let id = req.sandbox_id.as_str();
    sandbox::spec::validate_id(id)?;
    if !req.rootfs.is_empty() {
        return Err(ServiceError::InvalidArgument(format!(
            "rootfs: {} mounts given; peapod's sandbox runs its own pause and takes no rootfs",
            req.rootfs.len()
        )));
    }
    let options = req.options.as_ref().ok_or_else(|| {
        ServiceError::InvalidArgument(format!(
            "options: missing; CRI's {} is expected",
            proto::podsandbox::TYPE_URL
        ))
    })?;
    let ps = PodSandbox::from_options(&options.type_url, &options.value, &req.netns_path, &req.annotations)?;
    let mut config = annotations::pod_config(&ps.annotations)?;
    if ps.resources.is_some() {
        config.resources = ps.resources.clone();
    }
    if ps.cgroup_parent.is_some() && config.resources.is_none() {
        config.resources = Some(Default::default());
    }
    config.files = Some(ps.files.clone());
    let cgroup = match &ps.cgroup_parent {
        Some(parent) => format!("{parent}/{id}"),
        None => sandbox::spec::cgroup_path(id, None)?,
    };
    Ok((ps, config, cgroup))
}
