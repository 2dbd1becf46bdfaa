//! The shim daemon: serves the Task API on the listener `start` handed over, until
//! Shutdown arrives with no task left.
//!
//! The Task service answers under both names containerd uses: `containerd.task.v2.Task`
//! (containerd 1.6, which `start` told Task API v2) and `containerd.task.v3.Task`
//! (containerd 2.x, told v3; the v3 API is the v2 messages under a new service name,
//! containerd's `api/runtime/task/v3/shim.proto`). Nothing else is needed for v3: the
//! `containerd.streaming.v1.Streaming` service, which v3 shims may offer, is used only by a
//! CRI runtime configured with `io_type = "streaming"` (containerd 2.x
//! `internal/cri/config`; the default is FIFOs); peapod answers it Unimplemented, with a
//! message that says so.
//!
//! Only peers with the shim's own uid and gid are served ([`PeerCheck`]), as containerd's
//! Go shims do (`ttrpc.UnixSocketRequireSameUser`): the socket's mode (0600) keeps out
//! other users, but not a process holding CAP_DAC_OVERRIDE under another uid.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{IntoRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::collections::HashMap;

use containerd_shim_protos::ttrpc::{self, MethodHandler, Request, Server, TtrpcContext};

use crate::args::Flags;
use crate::events::Publisher;
use crate::service::Service;
use crate::start::{Paths, LISTENER_ENV};

/// Upper bound of ttrpc worker threads: every pending Wait holds one.
const MAX_THREADS: usize = 512;

/// The Task service's name in Task API v2 (containerd 1.6).
pub const TASK_V2: &str = "containerd.task.v2.Task";
/// The Task service's name in Task API v3 (containerd 2.x).
pub const TASK_V3: &str = "containerd.task.v3.Task";

/// containerd's Streaming service (`api/services/streaming/v1`), which peapod does not serve.
pub const STREAMING: &str = "containerd.streaming.v1.Streaming";

/// Answers every call with `Unimplemented` (not ttrpc's generic "does not exist"), naming
/// the method and what to configure instead.
struct Unimplemented {
    hint: &'static str,
}

impl MethodHandler for Unimplemented {
    fn handler(&self, ctx: TtrpcContext, req: Request) -> ttrpc::Result<()> {
        let mut res = ttrpc::Response::new();
        res.set_status(ttrpc::get_status(
            ttrpc::Code::UNIMPLEMENTED,
            format!(
                "/{}/{}: not implemented by peapod: {}",
                req.service, req.method, self.hint
            ),
        ));
        ttrpc::response_to_channel(ctx.mh.stream_id, res, ctx.res_tx)
    }
}

/// The methods peapod answers `Unimplemented`: `/containerd.streaming.v1.Streaming/Stream`.
pub fn unimplemented_methods() -> HashMap<String, Box<dyn MethodHandler + Send + Sync>> {
    let stream: Box<dyn MethodHandler + Send + Sync> = Box::new(Unimplemented {
        hint: "container I/O goes through FIFOs (CRI io_type \"fifo\", the default)",
    });
    HashMap::from([(format!("/{STREAMING}/Stream"), stream)])
}

/// Both names of the Task service: the ttrpc method table `create_task` builds for
/// `/containerd.task.v2.Task/<Method>`, plus each method again as
/// `/containerd.task.v3.Task/<Method>`, sharing `service`.
pub fn task_methods<S>(service: S) -> HashMap<String, Box<dyn MethodHandler + Send + Sync>>
where
    S: containerd_shim_protos::Task + Clone + Send + Sync + 'static,
{
    let v2_prefix = format!("/{TASK_V2}/");
    let v3_prefix = format!("/{TASK_V3}/");
    let mut methods = containerd_shim_protos::create_task(Arc::new(service.clone()));
    let v3 = containerd_shim_protos::create_task(Arc::new(service))
        .into_iter()
        .filter_map(|(name, method)| {
            name.strip_prefix(&v2_prefix)
                .map(|m| (format!("{v3_prefix}{m}"), method))
        });
    methods.extend(v3.collect::<Vec<_>>());
    methods
}

/// A step of the shim daemon's start that failed; the daemon exits with it.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// `prctl(PR_SET_CHILD_SUBREAPER)` failed.
    #[error("become child subreaper")]
    Subreaper(#[source] nix::Error),
    /// The environment names no listener fd: the daemon runs only when `start` spawns it.
    #[error("no listener: the shim daemon is started by `start` (${var})")]
    NoListener {
        /// The variable `start` sets ([`LISTENER_ENV`]).
        var: &'static str,
        /// Missing, or not UTF-8.
        #[source]
        source: std::env::VarError,
    },
    /// The listener variable holds no fd number.
    #[error("listener fd {value:?}")]
    ListenerFd {
        /// The variable's value.
        value: String,
        /// Cause.
        #[source]
        source: std::num::ParseIntError,
    },
    /// The listener fd is not open.
    #[error("adopt listener fd {fd}")]
    AdoptListener {
        /// The fd number `start` passed.
        fd: RawFd,
        /// Cause (EBADF).
        #[source]
        source: sandbox::sys::SysError,
    },
    /// The event log the peapod CLI named could not be opened.
    #[error("open the event log {}", path.display())]
    EventLog {
        /// The file ([`crate::events::EVENT_LOG_ENV`]).
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The child reaper's thread or signal handler could not be set up.
    #[error("start reaper")]
    Reaper(#[source] io::Error),
    /// ttrpc refused the listener fd.
    #[error("ttrpc listener fd {fd}")]
    Listener {
        /// The listener's fd number.
        fd: RawFd,
        /// Cause.
        #[source]
        source: ttrpc::Error,
    },
    /// The ttrpc server did not start.
    #[error("start ttrpc server")]
    StartServer(#[source] ttrpc::Error),
}

/// Sends `tracing` output to containerd's `log` FIFO in the bundle (opened read-write and
/// non-blocking: a missing or slow reader drops log lines instead of stalling the shim),
/// or to the regular file the `peapod` CLI's embedded mode puts there (appended to).
pub fn init_logging(bundle: &Path, debug: bool) {
    let level = if debug { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PEAPOD_LOG").unwrap_or_else(|_| level.into());
    let fifo = OpenOptions::new()
        .read(true)
        .append(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(bundle.join("log"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false);
    let _ = match fifo {
        Ok(f) => builder.with_writer(std::sync::Mutex::new(f)).try_init(),
        Err(_) => builder.with_writer(std::io::sink).try_init(),
    };
}

/// A peer the shim refuses to serve, or whose credentials could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// `SO_PEERCRED` failed on the connection.
    #[error("read the peer credentials of connection fd {fd}")]
    Credentials {
        /// The connection's fd number.
        fd: RawFd,
        /// Cause.
        #[source]
        source: sandbox::sys::SysError,
    },
    /// The peer runs as another user or group than the shim.
    #[error("peer pid {pid} uid {uid} gid {gid} is not the shim's uid {want_uid} gid {want_gid}: EPERM")]
    Refused {
        /// The peer's pid (in our pid namespace; 0 when it is outside).
        pid: i32,
        /// The peer's uid.
        uid: u32,
        /// The peer's gid.
        gid: u32,
        /// The shim's effective uid.
        want_uid: u32,
        /// The shim's effective gid.
        want_gid: u32,
    },
}

/// Checks the peer of connection `fd` against the shim's effective uid and gid
/// (containerd's ttrpc `UnixSocketRequireUidGid(geteuid, getegid)`): both must match.
/// Errors: [`PeerError::Refused`] for another user or group, [`PeerError::Credentials`]
/// when `SO_PEERCRED` fails.
pub fn check_peer(fd: RawFd) -> Result<(), PeerError> {
    let (pid, uid, gid) = sandbox::sys::peer_credentials(fd).map_err(|source| PeerError::Credentials { fd, source })?;
    let want_uid = nix::unistd::geteuid().as_raw();
    let want_gid = nix::unistd::getegid().as_raw();
    if uid == want_uid && gid == want_gid {
        Ok(())
    } else {
        Err(PeerError::Refused {
            pid,
            uid,
            gid,
            want_uid,
            want_gid,
        })
    }
}

/// A Task API method that first checks the connection's peer ([`check_peer`]). The ttrpc
/// crate has no handshake hook (Go's `WithServerHandshaker`), so the check runs on every
/// request, before the method: one `getsockopt`. A refused request gets no answer and its
/// connection is closed (ttrpc closes a connection whose handler fails).
pub struct PeerCheck {
    method: Box<dyn MethodHandler + Send + Sync>,
}

impl PeerCheck {
    /// Wraps every method of `methods` (as `create_task` returns them).
    pub fn wrap_all(
        methods: HashMap<String, Box<dyn MethodHandler + Send + Sync>>,
    ) -> HashMap<String, Box<dyn MethodHandler + Send + Sync>> {
        methods
            .into_iter()
            .map(|(name, method)| {
                let checked: Box<dyn MethodHandler + Send + Sync> = Box::new(PeerCheck { method });
                (name, checked)
            })
            .collect()
    }
}

/// The calls of a pod's life whose time in the shim is logged at info level (`call
/// served`, `served_us`: from the request's arrival at its handler to its answer queued
/// for sending), so that the bench can tell the shim's share of pod ready and teardown
/// from containerd's and the round trips'. The others (Wait, State, Stats, Connect…) log
/// at debug level.
const LIFECYCLE_CALLS: &[&str] = &[
    "Create",
    "Start",
    "Kill",
    "Delete",
    "Exec",
    "Shutdown",
    "CreateSandbox",
    "StartSandbox",
    "StopSandbox",
    "ShutdownSandbox",
];

impl MethodHandler for PeerCheck {
    fn handler(&self, ctx: TtrpcContext, req: Request) -> ttrpc::Result<()> {
        if let Err(e) = check_peer(ctx.fd) {
            tracing::warn!(method = %req.method, error = %sandbox::error::chain(&e), "refused a Task API call");
            return Err(ttrpc::Error::Others(e.to_string()));
        }
        let t0 = std::time::Instant::now();
        let method = req.method.clone();
        let result = self.method.handler(ctx, req);
        let served_us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
        if LIFECYCLE_CALLS.contains(&method.as_str()) {
            tracing::info!(method = %method, served_us, "call served");
            // What the call allocated and freed stays in the heap as free chunks
            // otherwise (a create's spec, seccomp and mount plans): given back once the
            // answer is queued (sandbox::sys::trim_malloc).
            sandbox::sys::trim_malloc();
        } else {
            tracing::debug!(method = %method, served_us, "call served");
        }
        result
    }
}

/// Runs the daemon. `flags` are those `start` passed; the listener fd comes from the
/// environment.
pub fn serve(flags: &Flags, bundle: &Path) -> Result<(), ServeError> {
    // Own session: containerd's signals to its process group never reach the shim.
    let _ = nix::unistd::setsid();
    nix::sys::prctl::set_child_subreaper(true).map_err(ServeError::Subreaper)?;
    init_logging(bundle, flags.debug);
    let value = std::env::var(LISTENER_ENV).map_err(|source| ServeError::NoListener {
        var: LISTENER_ENV,
        source,
    })?;
    let fd: RawFd = value
        .parse()
        .map_err(|source| ServeError::ListenerFd { value, source })?;
    let listener = sandbox::sys::adopt_inherited_fd(fd).map_err(|source| ServeError::AdoptListener { fd, source })?;
    // Inherited across exec, so without close-on-exec: every child would hold the Task
    // API's listener too (a container's init waiting for its Start, a logging driver),
    // keep accepting connections after a SIGKILLed shim, and make `delete` take the dead
    // shim for a live one (socket and pod members left behind).
    if let Err(e) = nix::fcntl::fcntl(&listener, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC)) {
        tracing::warn!(fd, error = %e, "cannot set close-on-exec on the listener");
    }
    std::env::remove_var(LISTENER_ENV);
    // The socket file goes when the daemon does; wherever `start` bound it.
    let socket = std::os::unix::net::UnixListener::from(listener);
    let socket_file = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf));
    let listener = std::os::fd::OwnedFd::from(socket);
    // containerd always sets TTRPC_ADDRESS; the peapod CLI's embedded mode leaves it empty
    // and may name an event log instead.
    let publisher = match std::env::var("TTRPC_ADDRESS") {
        Ok(address) if !address.is_empty() => Publisher::new(&address, &flags.namespace),
        _ => match std::env::var_os(crate::events::EVENT_LOG_ENV) {
            Some(path) if !path.is_empty() => {
                Publisher::to_file(Path::new(&path), &flags.namespace).map_err(|source| ServeError::EventLog {
                    path: path.into(),
                    source,
                })?
            }
            _ => Publisher::disabled(&flags.namespace),
        },
    };
    let service = Service::new(&flags.namespace, Paths::for_namespace(&flags.namespace), publisher);

    let reaped = service.clone();
    crate::reaper::start(move |pid, code| reaped.on_exit(pid, code)).map_err(ServeError::Reaper)?;

    let mut methods = task_methods(service.clone());
    methods.extend(unimplemented_methods());
    let task = PeerCheck::wrap_all(methods);
    // containerd 2.x's `sandboxer = "shim"` (crate::sandbox_service), on the same socket.
    let sandbox = PeerCheck::wrap_all(containerd_shim_protos::sandbox_sync::create_sandbox(Arc::new(
        service.clone(),
    )));
    let fd = listener.into_raw_fd();
    let mut server = Server::new()
        .add_listener(fd)
        .map_err(|source| ServeError::Listener { fd, source })?
        .register_service(task)
        .register_service(sandbox)
        // Per connection, ttrpc keeps `default` idle workers and tops them up when fewer
        // than `min` are left (every pending Wait holds one for its task's life): 2 and
        // 1 serve containerd's calls as well as 4 and 2 did (pod ready unchanged in
        // `make bench`) with fewer idle threads (issue 17).
        .set_thread_count_default(2)
        .set_thread_count_min(1)
        .set_thread_count_max(MAX_THREADS);
    server.start().map_err(ServeError::StartServer)?;
    // From `start`'s main to here, where the socket answers (issue 17's start-up phase).
    let startup_us = std::env::var(crate::start::STARTED_AT_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&began| began > 0)
        .map_or(0, |began| crate::start::boottime_ns().saturating_sub(began) / 1000);
    tracing::info!(namespace = %flags.namespace, id = %flags.id, startup_us, "shim serving");

    service.wait_for_shutdown();
    server.shutdown();
    if let Some(file) = socket_file {
        let _ = std::fs::remove_file(file);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use super::*;

    fn call(client: &ttrpc::Client, service: &str, method: &str) -> ttrpc::Result<ttrpc::Response> {
        use containerd_shim_protos::protobuf::Message;
        let mut req = Request::new();
        req.set_service(service.to_string());
        req.set_method(method.to_string());
        let mut connect = containerd_shim_protos::api::ConnectRequest::new();
        connect.id = "nope".into();
        req.payload = connect.write_to_bytes().unwrap();
        req.set_timeout_nano(5_000_000_000);
        client.request(req)
    }

    fn code(r: ttrpc::Result<ttrpc::Response>) -> (ttrpc::Code, String) {
        match r {
            Err(ttrpc::Error::RpcStatus(s)) => (s.code(), s.message.clone()),
            other => panic!("expected an RPC status, got {other:?}"),
        }
    }

    #[test]
    fn the_task_service_answers_under_v2_and_v3_and_streaming_is_unimplemented() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            containers: dir.path().join("containers"),
            pods: dir.path().join("pods"),
            disk: dir.path().join("disk"),
        };
        let service = Service::new("test", paths, Publisher::disabled("test"));
        let mut methods = task_methods(service);
        let names: Vec<&String> = methods.keys().collect();
        for m in ["Create", "Start", "Delete", "Wait", "Connect", "Shutdown", "Stats"] {
            assert!(names.contains(&&format!("/containerd.task.v2.Task/{m}")), "{m}");
            assert!(names.contains(&&format!("/containerd.task.v3.Task/{m}")), "{m}");
        }
        assert_eq!(methods.len() % 2, 0);
        methods.extend(unimplemented_methods());

        let socket = dir.path().join("s");
        let address = format!("unix://{}", socket.display());
        let mut server = Server::new()
            .bind(&address)
            .unwrap()
            .register_service(methods)
            .set_thread_count_default(2)
            .set_thread_count_min(1);
        server.start().unwrap();
        let client = ttrpc::Client::connect(&address).unwrap();
        // Connect for an unknown task: the service's own NotFound under both names.
        for service in [TASK_V2, TASK_V3] {
            let (c, message) = code(call(&client, service, "Connect"));
            assert_eq!(c, ttrpc::Code::NOT_FOUND, "{service}: {message}");
        }
        let (c, message) = code(call(&client, STREAMING, "Stream"));
        assert_eq!(c, ttrpc::Code::UNIMPLEMENTED, "{message}");
        assert!(message.contains("fifo"), "{message}");
        // Anything else: ttrpc's own answer.
        let (c, _) = code(call(&client, "containerd.task.v4.Task", "Connect"));
        assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT);
        // What `start` and `delete` ask to know whether a shim serves the socket.
        assert_eq!(
            crate::start::probe_shim(&address, "nope", std::time::Duration::from_secs(10)),
            crate::start::ShimProbe::Answers
        );
        drop(client);
        server.shutdown();
    }

    #[test]
    fn a_peer_of_our_own_uid_and_gid_is_served() {
        let (a, _b) = UnixStream::pair().unwrap();
        check_peer(a.as_raw_fd()).unwrap();
    }

    #[test]
    fn an_fd_that_is_not_a_socket_is_refused_with_its_cause() {
        let f = std::fs::File::open("/proc/self/status").unwrap();
        let err = check_peer(f.as_raw_fd()).unwrap_err();
        assert!(matches!(err, PeerError::Credentials { .. }), "{err}");
        assert!(sandbox::error::chain(&err).contains("SO_PEERCRED"), "{err}");
    }
}
