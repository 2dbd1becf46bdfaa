//! A blocking CRI v1 (`runtime.v1`) client over a unix socket: the calls the kubelet makes
//! to a container runtime (containerd's CRI plugin), for tests and tools that want to drive
//! pods the way Kubernetes does.
//!
//! The wire types are `k8s-cri`'s (generated from the upstream `api.proto` with
//! tonic/prost) and re-exported as [`api`]. gRPC is async; [`CriClient`] owns a small tokio
//! runtime and blocks on each call, so callers stay synchronous (the rest of peapod is).
//! The client is `Send + Sync`: threads may share one, each call clones the HTTP/2 channel,
//! which multiplexes.
//!
//! Every call carries a deadline (the gRPC `grpc-timeout` header, which containerd honours,
//! and the same bound on the client side), so a runtime that hangs fails the call with
//! [`Error::Timeout`] instead of hanging the caller.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// CRI v1 wire types (`runtime.v1`): requests, responses, configs, statuses.
pub use k8s_cri::v1 as api;
/// gRPC status codes, as returned by [`Error::code`].
pub use tonic::Code;

use api::image_service_client::ImageServiceClient;
use api::runtime_service_client::RuntimeServiceClient;

/// Default deadline of one call that is not bounded by its own timeout argument.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A failed CRI call, naming the call.
#[derive(Debug, Error)]
pub enum Error {
    /// The tokio runtime that drives gRPC could not be built.
    #[error("CRI client: cannot start its tokio runtime")]
    Runtime(#[source] std::io::Error),
    /// The unix socket could not be connected (missing, refused, not a gRPC server).
    #[error("CRI: cannot connect to {}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The runtime answered the call with a gRPC error status.
    #[error("CRI {call}: {:?}: {}", status.code(), status.message())]
    Call {
        /// The CRI method, e.g. `RunPodSandbox`.
        call: &'static str,
        /// The status the runtime returned (code and message are in the error text).
        status: tonic::Status,
    },
    /// The runtime did not answer within the call's deadline.
    #[error("CRI {call}: no answer within {timeout:?}")]
    Timeout {
        /// The CRI method.
        call: &'static str,
        /// The deadline that passed.
        timeout: Duration,
    },
    /// The runtime answered without a field that CRI requires.
    #[error("CRI {call}: the response has no `{field}`")]
    MissingField {
        /// The CRI method.
        call: &'static str,
        /// The missing field.
        field: &'static str,
    },
}

impl Error {
    /// The gRPC status code when the runtime answered with an error (e.g. `NotFound` for an
    /// unknown container id), `None` for transport failures and timeouts.
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Call { status, .. } => Some(status.code()),
            _ => None,
        }
    }
}

/// Result of a CRI call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A blocking client of a CRI v1 `RuntimeService` listening on a unix socket.
pub struct CriClient {
    // Field order matters on drop: the channel's background task lives in the runtime.
    client: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    rt: tokio::runtime::Runtime,
    call_timeout: Duration,
}

impl std::fmt::Debug for CriClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CriClient")
            .field("call_timeout", &self.call_timeout)
            .finish_non_exhaustive()
    }
}

/// A CRI timeout in whole seconds, rounded up (CRI's fields are `int64` seconds; 0 means
/// "no timeout", so a sub-second timeout must not round down to 0).
fn cri_seconds(timeout: Duration) -> i64 {
    let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

impl CriClient {
    /// Connects to the CRI server at `socket` (e.g. containerd's
    /// `/run/containerd/containerd.sock`). Fails with [`Error::Connect`] when nothing
    /// listens there. Calls default to a deadline of [`DEFAULT_CALL_TIMEOUT`].
    pub fn connect(socket: impl AsRef<Path>) -> Result<Self> {
        let path = socket.as_ref().to_path_buf();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cri-client")
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        let connector_path = path.clone();
        let channel = rt
            .block_on(
                // The URI is a placeholder that the connector ignores: the stream is the
                // unix socket.
                Endpoint::from_static("http://localhost")
                    .connect_timeout(Duration::from_secs(10))
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = connector_path.clone();
                        async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
                    })),
            )
            .map_err(|source| Error::Connect { path, source })?;
        Ok(Self {
            client: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            rt,
            call_timeout: DEFAULT_CALL_TIMEOUT,
        })
    }

    /// Sets the deadline of calls that have no timeout argument of their own; calls that
    /// do (`StopContainer`, `ExecSync`) get theirs plus this.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Runs one unary call with `timeout` as its deadline, on both ends.
    fn call<C, Req, Resp, F, Fut>(
        &self,
        client: &C,
        call: &'static str,
        timeout: Duration,
        req: Req,
        f: F,
    ) -> Result<Resp>
    where
        C: Clone,
        F: FnOnce(C, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let mut request = tonic::Request::new(req);
        request.set_timeout(timeout);
        let fut = f(client.clone(), request);
        // The client-side bound is a little later than the server's deadline, so a server
        // that honours the deadline reports DeadlineExceeded itself.
        let bounded = async move { tokio::time::timeout(timeout + Duration::from_secs(2), fut).await };
        match self.rt.block_on(bounded) {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(Error::Call { call, status }),
            Err(_) => Err(Error::Timeout { call, timeout }),
        }
    }

    /// `Version`: the runtime's name and version and the CRI version it speaks.
    pub fn version(&self) -> Result<api::VersionResponse> {
        let req = api::VersionRequest {
            version: "v1".to_string(),
        };
        self.call(&self.client, "Version", self.call_timeout, req, |mut c, r| async move {
            c.version(r).await
        })
    }

    /// `Status`: the runtime's conditions (`RuntimeReady`, `NetworkReady`: the CNI config
    /// is loaded); `verbose` adds the runtime's `info` map.
    pub fn status(&self) -> Result<api::StatusResponse> {
        let req = api::StatusRequest { verbose: false };
        self.call(&self.client, "Status", self.call_timeout, req, |mut c, r| async move {
            c.status(r).await
        })
    }

    /// `ImageStatus` (image service): the image `image_ref` as the runtime's image store
    /// knows it, `None` when it does not have it.
    pub fn image_status(&self, image_ref: &str) -> Result<Option<api::Image>> {
        let req = api::ImageStatusRequest {
            image: Some(api::ImageSpec {
                image: image_ref.to_string(),
                ..Default::default()
            }),
            verbose: false,
        };
        let resp = self.call(
            &self.images,
            "ImageStatus",
            self.call_timeout,
            req,
            |mut c, r| async move { c.image_status(r).await },
        )?;
        Ok(resp.image)
    }

    /// `PullImage` (image service): fetches `image_ref` into the runtime's image store,
    /// with the registry credentials `auth` when given (kubelet passes the pull Secret's
    /// entry there); returns the image reference the runtime resolved (its digest). Pulls
    /// may be slow: the deadline is `timeout`, not the default call deadline. The request
    /// is never logged (`AuthConfig`'s `Debug` would show the password).
    pub fn pull_image(&self, image_ref: &str, auth: Option<api::AuthConfig>, timeout: Duration) -> Result<String> {
        let req = api::PullImageRequest {
            image: Some(api::ImageSpec {
                image: image_ref.to_string(),
                ..Default::default()
            }),
            auth,
            ..Default::default()
        };
        let resp = self.call(&self.images, "PullImage", timeout, req, |mut c, r| async move {
            c.pull_image(r).await
        })?;
        Ok(resp.image_ref)
    }

    /// `RunPodSandbox`: creates and starts the pod sandbox described by `config` with the
    /// runtime handler `runtime_handler` (a key of containerd's `runtimes` table, e.g.
    /// `runc`; empty for the default). Returns the sandbox id.
    pub fn run_pod_sandbox(&self, config: &api::PodSandboxConfig, runtime_handler: &str) -> Result<String> {
        let req = api::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: runtime_handler.to_string(),
        };
        let resp = self.call(
            &self.client,
            "RunPodSandbox",
            self.call_timeout,
            req,
            |mut c, r| async move { c.run_pod_sandbox(r).await },
        )?;
        Ok(resp.pod_sandbox_id)
    }

    /// `StopPodSandbox`: stops every container of the sandbox and the sandbox itself and
    /// tears down its network. Idempotent.
    pub fn stop_pod_sandbox(&self, pod_sandbox_id: &str) -> Result<()> {
        let req = api::StopPodSandboxRequest {
            pod_sandbox_id: pod_sandbox_id.to_string(),
        };
        self.call(
            &self.client,
            "StopPodSandbox",
            self.call_timeout,
            req,
            |mut c, r| async move { c.stop_pod_sandbox(r).await },
        )?;
        Ok(())
    }

    /// `RemovePodSandbox`: removes the sandbox and its containers (stopping what still
    /// runs). Removing an unknown sandbox succeeds.
    pub fn remove_pod_sandbox(&self, pod_sandbox_id: &str) -> Result<()> {
        let req = api::RemovePodSandboxRequest {
            pod_sandbox_id: pod_sandbox_id.to_string(),
        };
        self.call(
            &self.client,
            "RemovePodSandbox",
            self.call_timeout,
            req,
            |mut c, r| async move { c.remove_pod_sandbox(r).await },
        )?;
        Ok(())
    }

    /// `PodSandboxStatus`: state, network status (pod IP), namespaces options; `verbose`
    /// adds the runtime's `info` map (containerd: JSON with the sandbox's pid, spec, ...).
    pub fn pod_sandbox_status(&self, pod_sandbox_id: &str, verbose: bool) -> Result<api::PodSandboxStatusResponse> {
        let req = api::PodSandboxStatusRequest {
            pod_sandbox_id: pod_sandbox_id.to_string(),
            verbose,
        };
        self.call(
            &self.client,
            "PodSandboxStatus",
            self.call_timeout,
            req,
            |mut c, r| async move { c.pod_sandbox_status(r).await },
        )
    }

    /// `ListPodSandbox`: the sandboxes matching `filter` (all with `None`).
    pub fn list_pod_sandbox(&self, filter: Option<api::PodSandboxFilter>) -> Result<Vec<api::PodSandbox>> {
        let req = api::ListPodSandboxRequest { filter };
        let resp = self.call(
            &self.client,
            "ListPodSandbox",
            self.call_timeout,
            req,
            |mut c, r| async move { c.list_pod_sandbox(r).await },
        )?;
        Ok(resp.items)
    }

    /// `CreateContainer`: creates (does not start) a container from `config` in the
    /// sandbox `pod_sandbox_id`, which was run with `sandbox_config`. Returns the
    /// container id.
    pub fn create_container(
        &self,
        pod_sandbox_id: &str,
        config: &api::ContainerConfig,
        sandbox_config: &api::PodSandboxConfig,
    ) -> Result<String> {
        let req = api::CreateContainerRequest {
            pod_sandbox_id: pod_sandbox_id.to_string(),
            config: Some(config.clone()),
            sandbox_config: Some(sandbox_config.clone()),
        };
        let resp = self.call(
            &self.client,
            "CreateContainer",
            self.call_timeout,
            req,
            |mut c, r| async move { c.create_container(r).await },
        )?;
        Ok(resp.container_id)
    }

    /// `StartContainer`: starts a created container.
    pub fn start_container(&self, container_id: &str) -> Result<()> {
        let req = api::StartContainerRequest {
            container_id: container_id.to_string(),
        };
        self.call(
            &self.client,
            "StartContainer",
            self.call_timeout,
            req,
            |mut c, r| async move { c.start_container(r).await },
        )?;
        Ok(())
    }

    /// `StopContainer`: SIGTERM (or the image's stop signal), then SIGKILL after `timeout`
    /// (sent as whole seconds, rounded up). Stopping a stopped container succeeds.
    pub fn stop_container(&self, container_id: &str, timeout: Duration) -> Result<()> {
        let req = api::StopContainerRequest {
            container_id: container_id.to_string(),
            timeout: cri_seconds(timeout),
        };
        self.call(
            &self.client,
            "StopContainer",
            timeout + self.call_timeout,
            req,
            |mut c, r| async move { c.stop_container(r).await },
        )?;
        Ok(())
    }

    /// `RemoveContainer`: removes a container (force-stopping it if it runs).
    pub fn remove_container(&self, container_id: &str) -> Result<()> {
        let req = api::RemoveContainerRequest {
            container_id: container_id.to_string(),
        };
        self.call(
            &self.client,
            "RemoveContainer",
            self.call_timeout,
            req,
            |mut c, r| async move { c.remove_container(r).await },
        )?;
        Ok(())
    }

    /// `ContainerStatus`: state, exit code, timestamps (ns since the epoch), reason, log
    /// path; `verbose` adds the runtime's `info` map.
    pub fn container_status(&self, container_id: &str, verbose: bool) -> Result<api::ContainerStatusResponse> {
        let req = api::ContainerStatusRequest {
            container_id: container_id.to_string(),
            verbose,
        };
        self.call(
            &self.client,
            "ContainerStatus",
            self.call_timeout,
            req,
            |mut c, r| async move { c.container_status(r).await },
        )
    }

    /// `ListContainers`: the containers matching `filter` (all with `None`).
    pub fn list_containers(&self, filter: Option<api::ContainerFilter>) -> Result<Vec<api::Container>> {
        let req = api::ListContainersRequest { filter };
        let resp = self.call(
            &self.client,
            "ListContainers",
            self.call_timeout,
            req,
            |mut c, r| async move { c.list_containers(r).await },
        )?;
        Ok(resp.containers)
    }

    /// `ExecSync`: runs `cmd` in the running container and waits for it, up to `timeout`
    /// (whole seconds, rounded up). Returns its stdout, stderr and exit code; a command
    /// that exits non-zero is not an error.
    pub fn exec_sync(&self, container_id: &str, cmd: &[&str], timeout: Duration) -> Result<api::ExecSyncResponse> {
        let req = api::ExecSyncRequest {
            container_id: container_id.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: cri_seconds(timeout),
        };
        self.call(
            &self.client,
            "ExecSync",
            timeout + self.call_timeout,
            req,
            |mut c, r| async move { c.exec_sync(r).await },
        )
    }

    /// `Exec`: asks the runtime to prepare a streaming exec of `cmd` in the container;
    /// returns the URL of its streaming server to connect to (HTTP upgraded to SPDY or
    /// WebSocket, kubelet's remotecommand protocols). `stdin`/`tty` as for `kubectl exec
    /// -i/-t`; stdout always, stderr unless `tty` (a terminal merges them).
    pub fn exec(&self, container_id: &str, cmd: &[String], stdin: bool, tty: bool) -> Result<String> {
        let req = api::ExecRequest {
            container_id: container_id.to_string(),
            cmd: cmd.to_vec(),
            tty,
            stdin,
            stdout: true,
            stderr: !tty,
        };
        let resp = self.call(&self.client, "Exec", self.call_timeout, req, |mut c, r| async move {
            c.exec(r).await
        })?;
        Ok(resp.url)
    }

    /// `ContainerStats`: CPU (cumulative ns), memory (bytes) and writable-layer usage of
    /// one container.
    pub fn container_stats(&self, container_id: &str) -> Result<api::ContainerStats> {
        let req = api::ContainerStatsRequest {
            container_id: container_id.to_string(),
        };
        let resp = self.call(
            &self.client,
            "ContainerStats",
            self.call_timeout,
            req,
            |mut c, r| async move { c.container_stats(r).await },
        )?;
        resp.stats.ok_or(Error::MissingField {
            call: "ContainerStats",
            field: "stats",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_timeouts_round_up_to_whole_seconds() {
        assert_eq!(cri_seconds(Duration::ZERO), 0);
        assert_eq!(cri_seconds(Duration::from_millis(1)), 1);
        assert_eq!(cri_seconds(Duration::from_secs(5)), 5);
        assert_eq!(cri_seconds(Duration::from_millis(5001)), 6);
    }

    #[test]
    fn connecting_to_a_missing_socket_names_the_path() {
        let err = CriClient::connect("/nonexistent/peapod-cri.sock").unwrap_err();
        assert!(matches!(err, Error::Connect { .. }), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/peapod-cri.sock"), "{err}");
        assert_eq!(err.code(), None);
    }
}
