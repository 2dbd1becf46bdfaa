//! A direct client of a shim's Task API, the test harness as a second client next to
//! containerd (as [`crate::sandbox_api`] is for the Sandbox API): it connects to the
//! shim's socket ([`crate::containerd::Containerd::shim_socket`], as root like containerd)
//! and makes the calls containerd's Go client makes for `task.Exec`, `process.Start`,
//! `process.Wait` and `process.Delete`, with the process spec and stdio the caller
//! chooses. It talks to runc's shim as well as to peapod's: `containerd.task.v2.Task`
//! for containerd 1.x's shims, `containerd.task.v3.Task` for 2.x's (runc's 2.x shim
//! serves v3 only; peapod's serves both).
//!
//! Every call carries a deadline, so a hung shim fails the test instead of hanging it.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::ttrpc;

/// One shim's Task API.
pub struct TaskApi {
    client: ttrpc::Client,
    service: &'static str,
}

impl TaskApi {
    /// Connects to the shim socket `socket`; `v3` selects `containerd.task.v3.Task`
    /// (containerd 2.x's shims) over `containerd.task.v2.Task`.
    pub fn connect(socket: &Path, v3: bool) -> Result<Self> {
        let address = format!("unix://{}", socket.display());
        let client = ttrpc::Client::connect(&address).with_context(|| format!("connect to {address}"))?;
        let service = if v3 {
            "containerd.task.v3.Task"
        } else {
            "containerd.task.v2.Task"
        };
        Ok(TaskApi { client, service })
    }

    fn call<Req: Message, Resp: Message>(&self, method: &str, req: &Req, timeout: Duration) -> Result<Resp> {
        let mut creq = ttrpc::Request::new();
        creq.set_service(self.service.to_string());
        creq.set_method(method.to_string());
        creq.set_timeout_nano(i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX));
        creq.payload = req.write_to_bytes()?;
        let resp = self
            .client
            .request(creq)
            .map_err(|e| anyhow::anyhow!("{}/{method}: {e:?}", self.service))?;
        Ok(Resp::parse_from_bytes(&resp.payload)?)
    }

    /// `Exec`: adds process `exec_id` to task `id` with the OCI process `spec` (JSON, as
    /// containerd's client packs it) and stdio paths (empty: none).
    #[allow(clippy::too_many_arguments)]
    pub fn exec(
        &self,
        id: &str,
        exec_id: &str,
        spec: &serde_json::Value,
        terminal: bool,
        stdin: &str,
        stdout: &str,
        stderr: &str,
    ) -> Result<()> {
        let req = api::ExecProcessRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            terminal,
            stdin: stdin.to_string(),
            stdout: stdout.to_string(),
            stderr: stderr.to_string(),
            spec: MessageField::some(Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                value: serde_json::to_vec(spec)?,
                ..Default::default()
            }),
            ..Default::default()
        };
        self.call::<_, api::Empty>("Exec", &req, Duration::from_secs(30))
            .map(drop)
    }

    /// `Start` of `exec_id` (empty: the task's init); returns its pid.
    pub fn start(&self, id: &str, exec_id: &str) -> Result<u32> {
        let req = api::StartRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        let resp: api::StartResponse = self.call("Start", &req, Duration::from_secs(30))?;
        Ok(resp.pid)
    }

    /// `Wait` for `exec_id` (empty: init), at most `timeout`; returns the exit status.
    pub fn wait(&self, id: &str, exec_id: &str, timeout: Duration) -> Result<u32> {
        let req = api::WaitRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        let resp: api::WaitResponse = self.call("Wait", &req, timeout)?;
        Ok(resp.exit_status)
    }

    /// `Delete` of `exec_id` (empty: the task); returns the exit status.
    pub fn delete(&self, id: &str, exec_id: &str) -> Result<u32> {
        let req = api::DeleteRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        let resp: api::DeleteResponse = self.call("Delete", &req, Duration::from_secs(30))?;
        Ok(resp.exit_status)
    }

    /// `State` of `exec_id` (empty: init), answered within `timeout`.
    pub fn state(&self, id: &str, exec_id: &str, timeout: Duration) -> Result<api::StateResponse> {
        let req = api::StateRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        self.call("State", &req, timeout)
    }

    /// `Pids` of task `id`, answered within `timeout`: how many processes it has.
    pub fn pids(&self, id: &str, timeout: Duration) -> Result<usize> {
        let req = api::PidsRequest {
            id: id.to_string(),
            ..Default::default()
        };
        let resp: api::PidsResponse = self.call("Pids", &req, timeout)?;
        Ok(resp.processes.len())
    }
}
