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
//! Only peers with the shim's own uid and gid are served ([`check_peer`], at accept), as
//! containerd's Go shims do (`ttrpc.UnixSocketRequireSameUser`): the socket's mode (0600)
//! keeps out other users, but not a process holding CAP_DAC_OVERRIDE under another uid.
//!
//! One event loop serves it all: ttrpc's async server on a current-thread tokio runtime
//! on the daemon's main thread. Every connection is a task on it (containerd 1.6 opens
//! one per container), every pending Wait a parked future, and the events client lives
//! there too; the calls that do work run on tokio's blocking pool, whose threads end
//! after [`IDLE_THREAD_KEEP_ALIVE`] without a call. The reaper and the output copiers
//! are tasks on it too, so at rest a shim has its main thread and nothing else (issue
//! 17: ttrpc's sync server kept a reader, a handler, idle workers and a worker per
//! pending Wait for every connection, 16 threads or more per pod; then the reaper and
//! two copiers per container were threads of their own).

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use containerd_shim_protos::ttrpc::r#async::transport::Listener;
use containerd_shim_protos::ttrpc::r#async::{MethodHandler, Server, Service as TtrpcService, TtrpcContext};
use containerd_shim_protos::ttrpc::{self, Request, Response};

use crate::args::Flags;
use crate::events::Publisher;
use crate::service::Service;
use crate::start::{Paths, LISTENER_ENV};

/// Upper bound of the blocking pool's threads: Task API calls running at once.
const MAX_CALLS: usize = 512;

/// How long a blocking-pool thread outlives its last call. Long enough to serve a pod's
/// start (containerd's calls for one pod come within ~150 ms) on warm threads; short
/// enough that a shim at rest holds none.
pub const IDLE_THREAD_KEEP_ALIVE: Duration = Duration::from_secs(2);

/// Ready file descriptors the event loop takes from one `epoll_wait` (tokio's default is
/// 1024, a 12 KiB buffer). A shim's loop watches its connections, the events client and
/// one OOM notifier per container: a few dozen at most; more wait for the next turn.
const IO_EVENTS_PER_TICK: usize = 64;

/// How long the daemon must have been quiet (no lifecycle call, no output copied) before
/// it gives its heap's free pages back (`trim_at_rest`): past
/// [`IDLE_THREAD_KEEP_ALIVE`], so the blocking pool's threads have ended and freed what
/// they held.
pub const AT_REST: Duration = IDLE_THREAD_KEEP_ALIVE.saturating_add(Duration::from_millis(500));

/// Work done since the heap was last trimmed: [`worked`]'s pokes, [`trim_at_rest`]'s wait.
static WORKED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Tells the daemon that work was done (a lifecycle call served, output copied): its heap
/// is trimmed once it has been quiet for [`AT_REST`]. Cheap; callable from any thread.
pub(crate) fn worked() {
    WORKED.notify_one();
}

/// Gives the heap's free pages back ([`sandbox::sys::trim_malloc`]) each time the daemon
/// comes to rest: [`AT_REST`] after the last of a run of [`worked`] pokes. A resting
/// shim's heap otherwise keeps what its calls, copies and ended threads freed as resident
/// free chunks (issue 17: 52 KiB of a two-container pod's 420 KiB heap; trimming after
/// each call missed what came after it). A task on the event loop; the trim takes
/// microseconds.
async fn trim_at_rest() {
    loop {
        WORKED.notified().await;
        // Each poke within the window starts it again.
        loop {
            tokio::select! {
                () = WORKED.notified() => {}
                () = tokio::time::sleep(AT_REST) => break,
            }
        }
        sandbox::sys::trim_malloc();
    }
}

/// How long an exiting daemon waits for its queued events to reach containerd.
const EVENTS_DRAIN: Duration = Duration::from_secs(2);

/// How long an exiting daemon gives its connections to finish the answers in flight.
const CONNECTIONS_CLOSE: Duration = Duration::from_millis(500);

/// The Task service's name in Task API v2 (containerd 1.6).
pub const TASK_V2: &str = "containerd.task.v2.Task";
/// The Task service's name in Task API v3 (containerd 2.x).
pub const TASK_V3: &str = "containerd.task.v3.Task";

/// containerd's Streaming service (`api/services/streaming/v1`), which peapod does not serve.
pub const STREAMING: &str = "containerd.streaming.v1.Streaming";

/// ttrpc's services by name, each with its methods by name (`Create`).
pub type Services = HashMap<String, TtrpcService>;

/// Answers every call with `Unimplemented` (not ttrpc's generic "does not exist"), naming
/// the method and what to configure instead.
struct Unimplemented {
    hint: &'static str,
}

#[async_trait]
impl MethodHandler for Unimplemented {
    async fn handler(&self, _: TtrpcContext, req: Request) -> ttrpc::Result<Response> {
        let mut res = Response::new();
        res.set_status(ttrpc::get_status(
            ttrpc::Code::UNIMPLEMENTED,
            format!(
                "/{}/{}: not implemented by peapod: {}",
                req.service, req.method, self.hint
            ),
        ));
        Ok(res)
    }
}

/// The services peapod answers `Unimplemented`: `/containerd.streaming.v1.Streaming/Stream`.
pub fn unimplemented_services() -> Services {
    let stream: Box<dyn MethodHandler + Send + Sync> = Box::new(Unimplemented {
        hint: "container I/O goes through FIFOs (CRI io_type \"fifo\", the default)",
    });
    HashMap::from([(
        STREAMING.to_string(),
        TtrpcService {
            methods: HashMap::from([("Stream".to_string(), stream)]),
            streams: HashMap::new(),
        },
    )])
}

/// Both names of the Task service: the method table `create_task` builds for
/// `containerd.task.v2.Task`, and the same methods again as `containerd.task.v3.Task`,
/// sharing `service`.
pub fn task_services(service: Service) -> Services {
    let service: Arc<dyn containerd_shim_protos::shim_async::Task + Send + Sync> = Arc::new(service);
    let mut services = containerd_shim_protos::shim_async::create_task(service.clone());
    let v3 = containerd_shim_protos::shim_async::create_task(service)
        .into_iter()
        .filter(|(name, _)| name == TASK_V2)
        .map(|(_, methods)| (TASK_V3.to_string(), methods));
    services.extend(v3.collect::<Vec<_>>());
    services
}

/// containerd 2.x's Sandbox service (`sandboxer = "shim"`, [`crate::sandbox_service`]).
pub fn sandbox_services(service: Service) -> Services {
    containerd_shim_protos::sandbox_async::create_sandbox(Arc::new(service))
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
    /// The child reaper's signal handler could not be set up.
    #[error("start reaper")]
    Reaper(#[source] io::Error),
    /// The event loop (a current-thread tokio runtime) could not be built.
    #[error("build the event loop")]
    Runtime(#[source] io::Error),
    /// The listener fd could not be registered with the event loop.
    #[error("register listener fd {fd} with the event loop")]
    Listener {
        /// The listener's fd number.
        fd: RawFd,
        /// Cause.
        #[source]
        source: io::Error,
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

/// The connections of `listener` whose peer passes [`check_peer`], as a stream for
/// ttrpc's server: the check runs once per connection, at accept (Go's
/// `WithServerHandshaker`). A refused peer's connection is closed unread and logged;
/// accept errors (EMFILE…) are handed to the server, which logs them and goes on.
pub fn checked_connections(listener: tokio::net::UnixListener) -> Listener {
    Listener::new(futures::stream::unfold(listener, |listener| async move {
        loop {
            match listener.accept().await {
                Ok((conn, _)) => {
                    use std::os::fd::AsRawFd;
                    match check_peer(conn.as_raw_fd()) {
                        Ok(()) => return Some((Ok(conn), listener)),
                        Err(e) => {
                            tracing::warn!(error = %sandbox::error::chain(&e), "refused a connection to the Task API");
                        }
                    }
                }
                Err(e) => return Some((Err(e), listener)),
            }
        }
    }))
}

/// The calls of a pod's life whose time in the shim is logged at info level (`call
/// served`, `served_us`: from the request's arrival at its handler to its answer, before
/// it is queued for sending), so that the bench can tell the shim's share of pod ready
/// and teardown from containerd's and the round trips'. The others (Wait, State, Stats,
/// Connect…) log at debug level.
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

/// A method that logs its time in the shim (`call served`) and, after a lifecycle call,
/// tells [`trim_at_rest`] that work was done.
struct Timed {
    method: Box<dyn MethodHandler + Send + Sync>,
}

#[async_trait]
impl MethodHandler for Timed {
    async fn handler(&self, ctx: TtrpcContext, req: Request) -> ttrpc::Result<Response> {
        let t0 = std::time::Instant::now();
        let method = req.method.clone();
        let result = self.method.handler(ctx, req).await;
        let served_us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
        if LIFECYCLE_CALLS.contains(&method.as_str()) {
            tracing::info!(method = %method, served_us, "call served");
            // What the call allocated and freed (a create's spec, seccomp and mount
            // plans) goes back to the kernel once the shim is at rest.
            worked();
        } else {
            tracing::debug!(method = %method, served_us, "call served");
        }
        result
    }
}

/// Wraps every method of `services` in `Timed`: its `call served` log line, and the heap
/// trimmed once the shim is at rest after a lifecycle call.
pub fn timed(services: Services) -> Services {
    services
        .into_iter()
        .map(|(name, service)| {
            let methods = service
                .methods
                .into_iter()
                .map(|(m, method)| {
                    let timed: Box<dyn MethodHandler + Send + Sync> = Box::new(Timed { method });
                    (m, timed)
                })
                .collect();
            (
                name,
                TtrpcService {
                    methods,
                    streams: service.streams,
                },
            )
        })
        .collect()
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
    // glibc has read the tunables `start` added; children (logging binaries, hooks) get
    // the operator's.
    if let Ok(value) = std::env::var(sandbox::sys::TUNABLES_ENV) {
        match sandbox::sys::tunables_before(&value) {
            Some(before) => std::env::set_var(sandbox::sys::TUNABLES_ENV, before),
            None => std::env::remove_var(sandbox::sys::TUNABLES_ENV),
        }
    }
    let socket = std::os::unix::net::UnixListener::from(listener);
    // The socket file goes when the daemon does; wherever `start` bound it.
    let socket_file = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(MAX_CALLS)
        .max_io_events_per_tick(IO_EVENTS_PER_TICK)
        .thread_keep_alive(IDLE_THREAD_KEEP_ALIVE)
        .thread_name("call")
        .build()
        .map_err(ServeError::Runtime)?;
    // The events client, the OOM watchers, the reaper and the output copiers are tasks on
    // this runtime.
    let entered = runtime.enter();
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
    let events = publisher.clone();
    let service = Service::new(&flags.namespace, Paths::for_namespace(&flags.namespace), publisher);

    let reaped = service.clone();
    crate::reaper::start(runtime.handle(), move |pid, code| reaped.on_exit(pid, code)).map_err(ServeError::Reaper)?;

    let served = runtime.block_on(async {
        tokio::spawn(trim_at_rest());
        socket
            .set_nonblocking(true)
            .map_err(|source| ServeError::Listener { fd, source })?;
        let listener =
            tokio::net::UnixListener::from_std(socket).map_err(|source| ServeError::Listener { fd, source })?;
        let mut services = task_services(service.clone());
        services.extend(unimplemented_services());
        // containerd 2.x's `sandboxer = "shim"` (crate::sandbox_service), on the same socket.
        services.extend(sandbox_services(service.clone()));
        let mut server = Server::new()
            .add_listener(checked_connections(listener))
            .register_service(timed(services));
        server.start().await.map_err(ServeError::StartServer)?;
        // From `start`'s main to here, where the socket answers (issue 17's start-up phase).
        let startup_us = std::env::var(crate::start::STARTED_AT_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&began| began > 0)
            .map_or(0, |began| crate::start::boottime_ns().saturating_sub(began) / 1000);
        tracing::info!(namespace = %flags.namespace, id = %flags.id, startup_us, "shim serving");
        service.shutdown_requested().await;
        // No new connection from here: a `delete` run now finds no shim on the socket.
        server.stop_listen().await;
        if let Some(file) = &socket_file {
            let _ = std::fs::remove_file(file);
        }
        // The last TaskDelete goes out before the process does.
        events.drained(EVENTS_DRAIN).await;
        // Answers in flight (Shutdown's own) are written; connections containerd keeps
        // open are not waited for beyond that.
        if tokio::time::timeout(CONNECTIONS_CLOSE, server.shutdown())
            .await
            .is_err()
        {
            tracing::debug!("connections still open at exit");
        }
        Ok(())
    });
    // Calls still on the blocking pool get as long, then the process exits regardless.
    drop(entered);
    runtime.shutdown_timeout(CONNECTIONS_CLOSE);
    served
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
        let paths = Paths::under(dir.path());
        let service = Service::new("test", paths, Publisher::disabled("test"));
        let mut services = task_services(service.clone());
        for name in [TASK_V2, TASK_V3] {
            let methods = &services[name].methods;
            for m in ["Create", "Start", "Delete", "Wait", "Connect", "Shutdown", "Stats"] {
                assert!(methods.contains_key(m), "{name}/{m}");
            }
        }
        assert_eq!(services[TASK_V2].methods.len(), services[TASK_V3].methods.len());
        services.extend(unimplemented_services());
        services.extend(sandbox_services(service));

        let socket = dir.path().join("s");
        let address = format!("unix://{}", socket.display());
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        listener.set_nonblocking(true).unwrap();
        // The server's event loop on a thread of its own; the test's sync client here.
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let listener = tokio::net::UnixListener::from_std(listener).unwrap();
                let mut server = Server::new()
                    .add_listener(checked_connections(listener))
                    .register_service(timed(services));
                server.start().await.unwrap();
                let _ = stopped.await;
                server.shutdown().await.unwrap();
            });
        });
        let client = ttrpc::Client::connect(&address).unwrap();
        // Connect for an unknown task: the service's own NotFound under both names.
        for service in [TASK_V2, TASK_V3] {
            let (c, message) = code(call(&client, service, "Connect"));
            assert_eq!(c, ttrpc::Code::NOT_FOUND, "{service}: {message}");
        }
        let (c, message) = code(call(&client, STREAMING, "Stream"));
        assert_eq!(c, ttrpc::Code::UNIMPLEMENTED, "{message}");
        assert!(message.contains("fifo"), "{message}");
        // Wait for an unknown task: NotFound at once, not a future parked for ever.
        let (c, message) = code(call(&client, TASK_V2, "Wait"));
        assert_eq!(c, ttrpc::Code::NOT_FOUND, "{message}");
        // Anything else: ttrpc's own answer.
        let (c, _) = code(call(&client, "containerd.task.v4.Task", "Connect"));
        assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT);
        // What `start` and `delete` ask to know whether a shim serves the socket.
        assert_eq!(
            crate::start::probe_shim(&address, "nope", std::time::Duration::from_secs(10)),
            crate::start::ShimProbe::Answers
        );
        drop(client);
        stop.send(()).unwrap();
        server.join().unwrap();
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
