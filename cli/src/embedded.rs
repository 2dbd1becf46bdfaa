//! Driving `containerd-shim-peapod-v2` without containerd, for the `peapod` CLI's
//! embedded mode: the shim is started exactly as containerd starts it (`start` with the
//! same flags, the bundle as working directory) and driven through the same Task API
//! over ttrpc, so every pod feature behaves the same with or without containerd.
//!
//! There is no containerd to receive events: the shim runs with `TTRPC_ADDRESS` empty
//! and appends them to an event log instead (`$PEAPOD_EVENT_LOG`), where the CLI reads
//! container start and exit times; live states come from `State` and `Wait`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::ttrpc::{self, context};
use containerd_shim_protos::types::mount::Mount;
use containerd_shim_protos::TaskClient;
use oci_spec::runtime::Process;

/// The "containerd address" embedded shims are started with: it only feeds the socket
/// name's hash, keeping peapod's embedded shims apart from containerd's.
pub const EMBEDDED_ADDRESS: &str = "/run/peapod/embedded";
/// The containerd namespace embedded pods live in.
pub const EMBEDDED_NAMESPACE: &str = "peapod";
/// Per-call deadline, except for `Wait`.
const CALL_TIMEOUT_NS: i64 = 60_000_000_000;

/// A failed step of driving a shim.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// The shim binary could not be run, or `start` failed.
    #[error("start shim {binary}: {reason}")]
    Start {
        /// The binary.
        binary: PathBuf,
        /// What went wrong (its stderr, when it said something).
        reason: String,
    },
    /// Connecting to the shim's socket failed.
    #[error("connect to shim at {address}: {cause}")]
    Connect {
        /// The address.
        address: String,
        /// Cause; in the message, not a source: ttrpc's `Nix` error prints its own source.
        cause: ttrpc::Error,
    },
    /// A Task API call failed.
    #[error("{call} {id}: {message}")]
    Call {
        /// The call, e.g. `Create`.
        call: &'static str,
        /// Task (and exec) id.
        id: String,
        /// The shim's error message.
        message: String,
    },
}

type Result<T> = std::result::Result<T, EmbeddedError>;

/// A connection to one pod's shim.
pub struct Shim {
    address: String,
    client: TaskClient,
}

fn call_err<'a>(call: &'static str, id: &'a str) -> impl FnOnce(ttrpc::Error) -> EmbeddedError + 'a {
    move |e| EmbeddedError::Call {
        call,
        id: id.to_string(),
        message: match e {
            ttrpc::Error::RpcStatus(s) => s.message,
            other => other.to_string(),
        },
    }
}

fn ctx() -> context::Context {
    context::with_timeout(CALL_TIMEOUT_NS)
}

/// The Task API's stdio of a process.
#[derive(Debug, Clone, Default)]
pub struct TaskIo {
    /// stdin FIFO path, or empty.
    pub stdin: String,
    /// stdout: FIFO path, `file://` or `binary://` URI, or empty.
    pub stdout: String,
    /// stderr, likewise.
    pub stderr: String,
    /// Allocate a terminal.
    pub terminal: bool,
}

/// `<binary> -namespace <embedded> -address <embedded> -id <task_id>`, run in `bundle`
/// with stdin from `/dev/null`: the start of every shim binary command, as containerd
/// invokes it.
fn shim_command(binary: &Path, task_id: &str, bundle: &Path) -> Command {
    let mut cmd = Command::new(binary);
    cmd.args([
        "-namespace",
        EMBEDDED_NAMESPACE,
        "-address",
        EMBEDDED_ADDRESS,
        "-id",
        task_id,
    ])
    .current_dir(bundle)
    .stdin(Stdio::null());
    cmd
}

/// Runs a shim binary command to its end. Errors: [`EmbeddedError::Start`] when it cannot
/// be executed at all.
fn run_shim(binary: &Path, cmd: &mut Command) -> Result<std::process::Output> {
    cmd.output().map_err(|e| EmbeddedError::Start {
        binary: binary.to_path_buf(),
        reason: e.to_string(),
    })
}

/// `<exit status>: <stderr>` of a command that failed; `None` when it succeeded.
fn failure(out: &std::process::Output) -> Option<String> {
    (!out.status.success()).then(|| format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
}

impl Shim {
    /// Runs `<binary> -namespace … -address … -id <task_id> start` in `bundle`, as
    /// containerd does, and connects to the address it prints. A pod's later tasks reach
    /// the same shim when their `config.json` names the sandbox
    /// (`io.kubernetes.cri.sandbox-id`). With `event_log`, the shim appends its task
    /// events there ([`proto::eventlog::read`] reads them).
    pub fn start(binary: &Path, task_id: &str, bundle: &Path, event_log: Option<&Path>) -> Result<Shim> {
        let mut cmd = shim_command(binary, task_id, bundle);
        if let Some(path) = event_log {
            cmd.env(proto::eventlog::EVENT_LOG_ENV, path);
        }
        let out = run_shim(
            binary,
            cmd.args(["-publish-binary", "", "start"]).env("TTRPC_ADDRESS", ""),
        )?;
        if let Some(reason) = failure(&out) {
            return Err(EmbeddedError::Start {
                binary: binary.to_path_buf(),
                reason,
            });
        }
        let address = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Self::connect(&address)
    }

    /// Runs `<binary> … -id <task_id> -bundle <bundle> delete`, containerd's clean-up of
    /// a task whose shim died: kills what is left of it, unmounts its rootfs and removes
    /// its state (a sandbox's also its pod cgroup and volumes).
    pub fn cleanup(binary: &Path, task_id: &str, bundle: &Path) -> Result<()> {
        let out = run_shim(
            binary,
            shim_command(binary, task_id, bundle)
                .arg("-bundle")
                .arg(bundle)
                .arg("delete"),
        )?;
        if let Some(message) = failure(&out) {
            return Err(EmbeddedError::Call {
                call: "delete (shim binary)",
                id: task_id.to_string(),
                message,
            });
        }
        Ok(())
    }

    /// Connects to a running shim at `address` (`unix://…`).
    pub fn connect(address: &str) -> Result<Shim> {
        let client = ttrpc::Client::connect(address).map_err(|cause| EmbeddedError::Connect {
            address: address.to_string(),
            cause,
        })?;
        Ok(Shim {
            address: address.to_string(),
            client: TaskClient::new(client),
        })
    }

    /// The shim's socket address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// `Create`: returns the init pid. `rootfs` is mounted by the shim on
    /// `<bundle>/rootfs`.
    pub fn create(&self, id: &str, bundle: &Path, rootfs: &[sandbox::RootfsMount], io: &TaskIo) -> Result<u32> {
        let req = api::CreateTaskRequest {
            id: id.to_string(),
            bundle: bundle.to_string_lossy().into_owned(),
            rootfs: rootfs
                .iter()
                .map(|m| Mount {
                    type_: m.fstype.clone(),
                    source: m.source.clone(),
                    options: m.options.clone(),
                    ..Default::default()
                })
                .collect(),
            stdin: io.stdin.clone(),
            stdout: io.stdout.clone(),
            stderr: io.stderr.clone(),
            terminal: io.terminal,
            ..Default::default()
        };
        Ok(self.client.create(ctx(), &req).map_err(call_err("Create", id))?.pid)
    }

    /// `Start` of a task (`exec_id` empty) or an exec: returns the pid. Blocks while the
    /// pod's start order holds the container back.
    pub fn start_task(&self, id: &str, exec_id: &str) -> Result<u32> {
        let req = api::StartRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        // No deadline: an app container may wait for a long init container.
        Ok(self
            .client
            .start(context::with_timeout(0), &req)
            .map_err(call_err("Start", id))?
            .pid)
    }

    /// `State` of a task or exec.
    pub fn state(&self, id: &str, exec_id: &str) -> Result<api::StateResponse> {
        let req = api::StateRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        self.client.state(ctx(), &req).map_err(call_err("State", id))
    }

    /// `Stats`: the task's cgroup metrics as the shim encodes them; returns the `Any`'s
    /// type URL (`io.containerd.cgroups.v1.Metrics` or `io.containerd.cgroups.v2.Metrics`)
    /// and the encoded message. Errors when the shim sends none.
    pub fn stats(&self, id: &str) -> Result<(String, Vec<u8>)> {
        let req = api::StatsRequest {
            id: id.to_string(),
            ..Default::default()
        };
        let resp = self.client.stats(ctx(), &req).map_err(call_err("Stats", id))?;
        let any = resp.stats.into_option().ok_or_else(|| EmbeddedError::Call {
            call: "Stats",
            id: id.to_string(),
            message: "the response holds no metrics".into(),
        })?;
        Ok((any.type_url, any.value))
    }

    /// `Kill` with `signal` (to every process of the container with `all`).
    pub fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let req = api::KillRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            signal,
            all,
            ..Default::default()
        };
        self.client.kill(ctx(), &req).map_err(call_err("Kill", id)).map(drop)
    }

    /// `Wait`: blocks until the task or exec exits; returns its exit status.
    pub fn wait(&self, id: &str, exec_id: &str) -> Result<u32> {
        let req = api::WaitRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        Ok(self
            .client
            .wait(context::with_timeout(0), &req)
            .map_err(call_err("Wait", id))?
            .exit_status)
    }

    /// `Delete` of a stopped task or exec: returns its exit status.
    pub fn delete(&self, id: &str, exec_id: &str) -> Result<u32> {
        let req = api::DeleteRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        Ok(self
            .client
            .delete(ctx(), &req)
            .map_err(call_err("Delete", id))?
            .exit_status)
    }

    /// `Exec`: registers `process` as `exec_id` in task `id` (start it with
    /// [`Shim::start_task`]).
    pub fn exec(&self, id: &str, exec_id: &str, process: &Process, io: &TaskIo) -> Result<()> {
        let spec = serde_json::to_vec(process).map_err(|e| EmbeddedError::Call {
            call: "Exec",
            id: id.to_string(),
            message: e.to_string(),
        })?;
        let req = api::ExecProcessRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            terminal: io.terminal,
            stdin: io.stdin.clone(),
            stdout: io.stdout.clone(),
            stderr: io.stderr.clone(),
            spec: MessageField::some(Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                value: spec,
                ..Default::default()
            }),
            ..Default::default()
        };
        self.client.exec(ctx(), &req).map_err(call_err("Exec", id)).map(drop)
    }

    /// Sets the pod's termination grace period (seconds) on the sandbox task, through
    /// `Update`'s annotations.
    pub fn set_grace_period(&self, sandbox_id: &str, seconds: u64) -> Result<()> {
        let req = api::UpdateTaskRequest {
            id: sandbox_id.to_string(),
            annotations: [(proto::annotations::GRACE_PERIOD.to_string(), seconds.to_string())].into(),
            ..Default::default()
        };
        self.client
            .update(ctx(), &req)
            .map_err(call_err("Update", sandbox_id))
            .map(drop)
    }

    /// `ResizePty` of a task or exec with a terminal, in character cells.
    pub fn resize_pty(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()> {
        let req = api::ResizePtyRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            width,
            height,
            ..Default::default()
        };
        self.client.resize_pty(ctx(), &req).map_err(call_err("ResizePty", id))?;
        Ok(())
    }

    /// `CloseIO`: the process's stdin reaches end-of-file.
    pub fn close_stdin(&self, id: &str, exec_id: &str) -> Result<()> {
        let req = api::CloseIORequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            stdin: true,
            ..Default::default()
        };
        self.client.close_io(ctx(), &req).map_err(call_err("CloseIO", id))?;
        Ok(())
    }

    /// `Connect` for task `id`: the pid of the shim process, for [`ShimExit::watch`].
    pub fn shim_pid(&self, id: &str) -> Result<u32> {
        let req = api::ConnectRequest {
            id: id.to_string(),
            ..Default::default()
        };
        let resp = self.client.connect(ctx(), &req).map_err(call_err("Connect", id))?;
        Ok(resp.shim_pid)
    }

    /// `Shutdown`: the shim exits once no task is left.
    pub fn shutdown(&self) -> Result<()> {
        let req = api::ShutdownRequest::default();
        // The shim may close the connection before answering.
        match self.client.shutdown(ctx(), &req) {
            Ok(_) | Err(ttrpc::Error::Socket(_)) | Err(ttrpc::Error::LocalClosed) | Err(ttrpc::Error::RemoteClosed) => {
                Ok(())
            }
            Err(e) => Err(call_err("Shutdown", "")(e)),
        }
    }
}

/// The exit of a shim process, watched through a pidfd (so a reused pid cannot be
/// mistaken for it). `Shutdown` returns before the shim has exited; a caller that promises
/// "nothing left" (`peapod delete`) waits on this after it.
pub struct ShimExit(std::os::fd::OwnedFd);

impl ShimExit {
    /// Watches the shim with pid `pid`; `None` when it is already gone (or the pid is 0).
    pub fn watch(pid: u32) -> Option<ShimExit> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).ok().filter(|p| *p > 0)?);
        sandbox::sys::pidfd_open(pid).ok().map(ShimExit)
    }

    /// Waits until the shim has exited, at most `timeout`; true when it has.
    pub fn wait(&self, timeout: std::time::Duration) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let ms = u16::try_from(left.as_millis()).map_or(PollTimeout::from(u16::MAX), PollTimeout::from);
            let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, ms) {
                // A pidfd polls readable once its process has exited.
                Ok(n) if n > 0 => return true,
                Ok(_) => return false,
                Err(nix::errno::Errno::EINTR) if !left.is_zero() => continue,
                Err(_) => return false,
            }
        }
    }
}
