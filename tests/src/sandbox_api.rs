//! A direct client of a shim's Sandbox API (`containerd.runtime.sandbox.v1.Sandbox`), the
//! test harness as a second client next to containerd: it connects to the shim's socket
//! (`Containerd::shim_socket`, as root like containerd: the shim serves only its own uid
//! and gid) and calls what containerd's sandbox controller calls
//! (`plugins/sandbox/controller.go`).
//!
//! Every call but [`SandboxApi::wait`] has a 60 s deadline, so a hung shim fails the test
//! instead of hanging it.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics as v2;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::sandbox_api::{
    PingRequest, PlatformRequest, SandboxMetricsRequest, SandboxStatusRequest, SandboxStatusResponse,
    StopSandboxRequest, WaitSandboxRequest,
};
use containerd_shim_protos::sandbox_sync::SandboxClient;
use containerd_shim_protos::ttrpc::{self, context};

/// Deadline of each call but `wait`.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The pod cgroup's usage, as the shim packed it for `SandboxMetrics`.
#[derive(Debug, Clone)]
pub enum PodMetrics {
    /// `io.containerd.cgroups.v1.Metrics`.
    V1(v1::Metrics),
    /// `io.containerd.cgroups.v2.Metrics`.
    V2(v2::Metrics),
}

impl PodMetrics {
    /// Memory in use, bytes.
    pub fn memory_usage(&self) -> u64 {
        match self {
            PodMetrics::V1(m) => m.memory.usage.usage,
            PodMetrics::V2(m) => m.memory.usage,
        }
    }

    /// Memory limit, bytes (`u64::MAX`: none).
    pub fn memory_limit(&self) -> u64 {
        match self {
            PodMetrics::V1(m) => m.memory.usage.limit,
            PodMetrics::V2(m) => m.memory.usage_limit,
        }
    }

    /// Processes in the pod cgroup.
    pub fn pids(&self) -> u64 {
        match self {
            PodMetrics::V1(m) => m.pids.current,
            PodMetrics::V2(m) => m.pids.current,
        }
    }

    /// CPU time used, ns.
    pub fn cpu_ns(&self) -> u64 {
        match self {
            PodMetrics::V1(m) => m.cpu.usage.total,
            PodMetrics::V2(m) => m.cpu.usage_usec * 1000,
        }
    }
}

/// One sandbox's Sandbox API on its shim's socket.
pub struct SandboxApi {
    client: SandboxClient,
    id: String,
}

fn ctx() -> context::Context {
    context::with_timeout(i64::try_from(CALL_TIMEOUT.as_nanos()).unwrap_or(i64::MAX))
}

fn call<T>(what: &str, id: &str, r: ttrpc::Result<T>) -> Result<T> {
    r.map_err(|e| anyhow::anyhow!("{what} of sandbox {id}: {e:?}"))
}

impl SandboxApi {
    /// Connects to the shim socket `socket` for sandbox `sandbox_id`.
    pub fn connect(socket: &Path, sandbox_id: &str) -> Result<Self> {
        let address = format!("unix://{}", socket.display());
        let client = ttrpc::Client::connect(&address).with_context(|| format!("connect to {address}"))?;
        Ok(SandboxApi {
            client: SandboxClient::new(client),
            id: sandbox_id.to_string(),
        })
    }

    /// `StopSandbox` with `timeout` (whole seconds; zero: the pod's grace period).
    pub fn stop(&self, timeout: Duration) -> Result<()> {
        let req = StopSandboxRequest {
            sandbox_id: self.id.clone(),
            timeout_secs: u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX),
            ..Default::default()
        };
        call("StopSandbox", &self.id, self.client.stop_sandbox(ctx(), &req)).map(drop)
    }

    /// `WaitSandbox`, without a deadline: the pause's exit status and time.
    pub fn wait(&self) -> Result<(u32, SystemTime)> {
        let req = WaitSandboxRequest {
            sandbox_id: self.id.clone(),
            ..Default::default()
        };
        let resp = call(
            "WaitSandbox",
            &self.id,
            self.client.wait_sandbox(context::Context::default(), &req),
        )?;
        let at = resp.exited_at.as_ref().context("WaitSandbox without exited_at")?;
        let at = UNIX_EPOCH
            + Duration::from_secs(u64::try_from(at.seconds)?)
            + Duration::from_nanos(u64::try_from(at.nanos)?);
        Ok((resp.exit_status, at))
    }

    /// `SandboxStatus`.
    pub fn status(&self, verbose: bool) -> Result<SandboxStatusResponse> {
        let req = SandboxStatusRequest {
            sandbox_id: self.id.clone(),
            verbose,
            ..Default::default()
        };
        call("SandboxStatus", &self.id, self.client.sandbox_status(ctx(), &req))
    }

    /// `PingSandbox`.
    pub fn ping(&self) -> Result<()> {
        let req = PingRequest {
            sandbox_id: self.id.clone(),
            ..Default::default()
        };
        call("PingSandbox", &self.id, self.client.ping_sandbox(ctx(), &req)).map(drop)
    }

    /// `Platform`: (os, architecture).
    pub fn platform(&self) -> Result<(String, String)> {
        let req = PlatformRequest {
            sandbox_id: self.id.clone(),
            ..Default::default()
        };
        let resp = call("Platform", &self.id, self.client.platform(ctx(), &req))?;
        let p = resp.platform.as_ref().context("Platform without platform")?;
        Ok((p.os.clone(), p.architecture.clone()))
    }

    /// `SandboxMetrics`, unpacked by the type URL of its data.
    pub fn metrics(&self) -> Result<PodMetrics> {
        let req = SandboxMetricsRequest {
            sandbox_id: self.id.clone(),
            ..Default::default()
        };
        let resp = call("SandboxMetrics", &self.id, self.client.sandbox_metrics(ctx(), &req))?;
        let metric = resp.metrics.as_ref().context("SandboxMetrics without metrics")?;
        anyhow::ensure!(metric.id == self.id, "metric for {:?}, not {}", metric.id, self.id);
        let data = metric.data.as_ref().context("metric without data")?;
        match data.type_url.as_str() {
            "io.containerd.cgroups.v1.Metrics" => Ok(PodMetrics::V1(v1::Metrics::parse_from_bytes(&data.value)?)),
            "io.containerd.cgroups.v2.Metrics" => Ok(PodMetrics::V2(v2::Metrics::parse_from_bytes(&data.value)?)),
            other => anyhow::bail!("metric data of type {other:?}"),
        }
    }
}
