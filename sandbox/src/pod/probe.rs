//! Container probes: liveness, readiness and startup checks of a pod's containers, with
//! kubelet's semantics (`pkg/kubelet/prober`: `worker.go`, `prober.go`, and the handlers
//! under `pkg/probe`), for a host that supervises its pods itself (no kubelet above it).
//!
//! - [`Probe`] is a container's probe as the pod declares it, in Kubernetes' own field
//!   names (`v1.Probe`), with named ports already resolved to numbers.
//! - [`Worker`] is one probe of one run of a container: when it is due, whether it may
//!   run yet (initial delay, the startup probe gating the others), and how results turn
//!   into a state by the thresholds. It decides; its host runs the checks and acts.
//! - [`tcp_socket`], [`http_get`] and [`grpc`] are the network checks, made from the
//!   calling thread's network namespace: the host enters the pod's first
//!   ([`enter_network_namespace`]), so a pod on no network but loopback is probed too.
//!   The `exec` check is the host's: it runs the command in the container as an exec.
//!
//! Results, as kubelet sets them: a readiness probe starts as failure (not ready), a
//! liveness probe as success, a startup probe as unknown. A result only changes after
//! `successThreshold` successes or `failureThreshold` failures in a row. While a startup
//! probe has not succeeded the other two do not run; once it has, it stops. A liveness
//! or startup probe that turns to failure asks for the container to be killed (then
//! restarted under the pod's restart policy), and stops until the next run.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Which of a container's probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    /// `livenessProbe`: failure kills the container.
    Liveness,
    /// `readinessProbe`: decides whether the container is ready.
    Readiness,
    /// `startupProbe`: holds the other two back until it succeeds; failure kills.
    Startup,
}

impl ProbeKind {
    /// As kubelet's messages write it: `Liveness`, `Readiness`, `Startup`.
    pub fn title(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        }
    }
}

/// A container's probes (`livenessProbe`, `readinessProbe`, `startupProbe`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Probes {
    /// `livenessProbe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    /// `readinessProbe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    /// `startupProbe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<Probe>,
}

impl Probes {
    /// The probes declared, with their kind.
    pub fn iter(&self) -> impl Iterator<Item = (ProbeKind, &Probe)> {
        [
            (ProbeKind::Startup, &self.startup_probe),
            (ProbeKind::Liveness, &self.liveness_probe),
            (ProbeKind::Readiness, &self.readiness_probe),
        ]
        .into_iter()
        .filter_map(|(k, p)| p.as_ref().map(|p| (k, p)))
    }

    /// No probe declared.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

/// One probe (`v1.Probe`): its handler and timing. Seconds throughout; defaults as the
/// API server fills them in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    /// What to check.
    #[serde(flatten)]
    pub handler: Handler,
    /// Seconds after the container started before the first check (default 0).
    #[serde(default)]
    pub initial_delay_seconds: u32,
    /// Seconds between checks (default 10, at least 1).
    #[serde(default = "default_period")]
    pub period_seconds: u32,
    /// Seconds a check may take (default 1, at least 1).
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u32,
    /// Successes in a row that make the result success (default 1; 1 for liveness and
    /// startup probes).
    #[serde(default = "default_threshold_one")]
    pub success_threshold: u32,
    /// Failures in a row that make the result failure (default 3).
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// Grace period in seconds when a failure of this (liveness or startup) probe kills
    /// the container; the pod's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<u64>,
}

fn default_period() -> u32 {
    10
}
fn default_timeout() -> u32 {
    1
}
fn default_threshold_one() -> u32 {
    1
}
fn default_failure_threshold() -> u32 {
    3
}

impl Probe {
    /// Time between checks.
    pub fn period(&self) -> Duration {
        Duration::from_secs(u64::from(self.period_seconds.max(1)))
    }

    /// Time a check may take.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.timeout_seconds.max(1)))
    }
}

/// What a probe checks (exactly one of `v1.ProbeHandler`'s fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Handler {
    /// `exec`: the command, run in the container; exit code 0 is success.
    Exec {
        /// argv, no shell.
        command: Vec<String>,
    },
    /// `httpGet`: a status from 200 to 399 is success.
    HttpGet(HttpGet),
    /// `tcpSocket`: a connection that opens is success.
    TcpSocket {
        /// Address to connect to (an IP or a name).
        host: String,
        /// TCP port.
        port: u16,
    },
    /// `grpc`: the gRPC Health Checking Protocol's `Check` answering `SERVING`.
    Grpc {
        /// Address to connect to (peapod's: the pod's IP, or loopback).
        host: String,
        /// TCP port.
        port: u16,
        /// The `service` asked about; empty for the server as a whole.
        #[serde(default)]
        service: String,
    },
}

/// An `httpGet` probe (plain HTTP; HTTPS is refused before it gets here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpGet {
    /// Address to connect to (an IP or a name); also the `Host` header unless
    /// `httpHeaders` gives one.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Request path, `/` when empty.
    #[serde(default)]
    pub path: String,
    /// Extra request headers, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HttpHeader>,
}

/// One `httpHeaders` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpHeader {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: String,
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The check passed.
    Success,
    /// The check failed, with kubelet's kind of message (the command's output, the
    /// HTTP status, the connection error).
    Failure(String),
}

/// A probe's result as the container's status shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeResult {
    /// Passed (ready, alive, started).
    Success,
    /// Failed.
    Failure,
    /// Not known yet (a startup probe before its first result).
    Unknown,
}

/// What a check's outcome calls for ([`Worker::record`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    /// The result changed to this (thresholds reached).
    pub changed: Option<ProbeResult>,
    /// This failure is the first of a run of failures: kubelet's `Unhealthy` event
    /// (kubelet records one per failed check; peapod one per run of them, so a probe that
    /// keeps failing does not grow the pod's event log without end).
    pub unhealthy: bool,
    /// Kill the container (a liveness or startup probe turned to failure). The worker
    /// stops: the next run of the container gets new workers.
    pub kill: bool,
}

/// One probe of one run of a container: kubelet's probe worker (`worker.go`), without
/// its clock and its checks.
#[derive(Debug, Clone)]
pub struct Worker {
    kind: ProbeKind,
    probe: Probe,
    /// The current result.
    result: ProbeResult,
    /// The last check's outcome kind and how many in a row.
    last: Option<bool>,
    run: u32,
    /// Stopped for this run (killed, or a startup probe that succeeded).
    done: bool,
}

impl Worker {
    /// A worker for `probe` of `kind`, at the start of a container's run.
    pub fn new(kind: ProbeKind, probe: Probe) -> Self {
        let result = match kind {
            ProbeKind::Readiness => ProbeResult::Failure,
            ProbeKind::Liveness => ProbeResult::Success,
            ProbeKind::Startup => ProbeResult::Unknown,
        };
        Self {
            kind,
            probe,
            result,
            last: None,
            run: 0,
            done: false,
        }
    }

    /// Its kind.
    pub fn kind(&self) -> ProbeKind {
        self.kind
    }

    /// Its probe.
    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    /// The current result.
    pub fn result(&self) -> ProbeResult {
        self.result
    }

    /// Stopped for this run of the container.
    pub fn done(&self) -> bool {
        self.done
    }

    /// When the first check is due: `initialDelaySeconds` after `started`.
    pub fn first_check(&self, started: Instant) -> Instant {
        started + Duration::from_secs(u64::from(self.probe.initial_delay_seconds))
    }

    /// Whether a check may run now, given whether the container's startup probe has
    /// succeeded (`true` when it has none): liveness and readiness wait for it.
    pub fn may_check(&self, started: bool) -> bool {
        !self.done && (self.kind == ProbeKind::Startup || started)
    }

    /// Takes one check's outcome and says what it calls for (see [`Verdict`]).
    pub fn record(&mut self, outcome: &Outcome) -> Verdict {
        let ok = matches!(outcome, Outcome::Success);
        if self.last == Some(ok) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(ok);
            self.run = 1;
        }
        let mut verdict = Verdict {
            unhealthy: !ok && self.run == 1,
            ..Verdict::default()
        };
        let threshold = if ok {
            self.probe.success_threshold
        } else {
            self.probe.failure_threshold
        };
        if self.run < threshold.max(1) {
            return verdict;
        }
        let result = if ok { ProbeResult::Success } else { ProbeResult::Failure };
        if result != self.result {
            self.result = result;
            verdict.changed = Some(result);
        }
        match (self.kind, ok) {
            (ProbeKind::Liveness | ProbeKind::Startup, false) => {
                verdict.kill = true;
                self.done = true;
            }
            (ProbeKind::Startup, true) => self.done = true,
            _ => {}
        }
        verdict
    }
}

/// Moves the calling thread into the network namespace of process `pid` (e.g. a
/// container's init), for the network checks to reach the pod's addresses and its
/// loopback. Only this thread moves; keep it for that pod's probes.
///
/// Errors: opening `/proc/<pid>/ns/net` (the process is gone), or `setns(2)`.
pub fn enter_network_namespace(pid: i32) -> std::io::Result<()> {
    let ns = File::open(format!("/proc/{pid}/ns/net"))?;
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("dial tcp {host}:{port}: lookup {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("dial tcp {host}:{port}: lookup {host}: no address"))
}

/// Joins a host and port as Go's `net.JoinHostPort` does (IPv6 in brackets).
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, String> {
    let addr = resolve(host, port)?;
    let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| {
        let cause = match e.kind() {
            std::io::ErrorKind::ConnectionRefused => "connect: connection refused".to_string(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => "i/o timeout".to_string(),
            _ => format!("connect: {e}"),
        };
        format!("dial tcp {addr}: {cause}")
    })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// `tcpSocket`: success when a TCP connection to `host:port` opens within `timeout`
/// (kubelet `pkg/probe/tcp`); the connection is closed at once.
pub fn tcp_socket(host: &str, port: u16, timeout: Duration) -> Outcome {
    match connect(host, port, timeout) {
        Ok(s) => {
            let _ = s.shutdown(Shutdown::Both);
            Outcome::Success
        }
        Err(e) => Outcome::Failure(e),
    }
}

/// How much of a response the HTTP and gRPC checks read at most (kubelet reads 10 KiB of
/// an HTTP probe's body).
const MAX_RESPONSE: u64 = 10 * 1024;

/// `httpGet`: a `GET` over HTTP/1.1 with kubelet's headers (`User-Agent: kube-probe/…`,
/// `Accept: */*`, then the probe's `httpHeaders`); a status from 200 to 399 is success
/// (kubelet `pkg/probe/http`; a redirect counts as success, not followed). The whole
/// exchange must end within `timeout`.
pub fn http_get(get: &HttpGet, timeout: Duration) -> Outcome {
    match http_status(get, timeout) {
        Ok(c) if (200..400).contains(&c) => Outcome::Success,
        Ok(c) => Outcome::Failure(format!("HTTP probe failed with statuscode: {c}")),
        Err(e) => Outcome::Failure(e),
    }
}

/// The status code of the `GET` that [`http_get`] sends, or why there is none (the
/// connection failed, the deadline passed, the answer is no HTTP): the caller judges the
/// code (a lifecycle hook does not, kubelet's `runHTTPHandler`).
pub fn http_status(get: &HttpGet, timeout: Duration) -> Result<u16, String> {
    let deadline = Instant::now() + timeout;
    let path = if get.path.is_empty() { "/" } else { get.path.as_str() };
    let url = format!("http://{}{path}", join_host_port(&get.host, get.port));
    let fail = |e: String| Err(format!("Get \"{url}\": {e}"));
    let mut stream = match connect(&get.host, get.port, timeout) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let mut request = format!("GET {path} HTTP/1.1\r\n");
    let has = |name: &str| get.http_headers.iter().any(|h| h.name.eq_ignore_ascii_case(name));
    if !has("host") {
        request.push_str(&format!("Host: {}\r\n", join_host_port(&get.host, get.port)));
    }
    if !has("user-agent") {
        request.push_str("User-Agent: kube-probe/1.34\r\n");
    }
    if !has("accept") {
        request.push_str("Accept: */*\r\n");
    }
    for h in &get.http_headers {
        request.push_str(&format!("{}: {}\r\n", h.name, h.value));
    }
    request.push_str("Connection: close\r\n\r\n");
    let remaining = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let _ = stream.set_write_timeout(Some(remaining()));
    if let Err(e) = stream.write_all(request.as_bytes()) {
        return fail(format!("write: {e}"));
    }
    // Read up to the end of the status line.
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(2).any(|w| w == b"\r\n") {
        if Instant::now() >= deadline {
            return fail("context deadline exceeded (Client.Timeout exceeded while awaiting headers)".into());
        }
        let _ = stream.set_read_timeout(Some(remaining()));
        match stream.read(&mut buf) {
            Ok(0) => return fail("EOF".into()),
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return fail("context deadline exceeded (Client.Timeout exceeded while awaiting headers)".into())
            }
            Err(e) => return fail(format!("read: {e}")),
        }
        if head.len() as u64 > MAX_RESPONSE {
            return fail("malformed HTTP response: status line too long".into());
        }
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default();
    let code = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|c| c.parse::<u16>().ok());
    let _ = stream.shutdown(Shutdown::Both);
    match code {
        Some(c) => Ok(c),
        None => fail(format!("malformed HTTP response {line:?}")),
    }
}

/// `grpc`: the gRPC Health Checking Protocol (`grpc.health.v1.Health/Check`, kubelet
/// `pkg/probe/grpc`) over cleartext HTTP/2 with prior knowledge. `SERVING` is success;
/// any other status, an error status or no answer within `timeout` is failure with
/// kubelet's message.
pub fn grpc(host: &str, port: u16, service: &str, timeout: Duration) -> Outcome {
    let target = join_host_port(host, port);
    let stream = match connect(host, port, timeout) {
        Ok(s) => s,
        Err(e) if e.ends_with("i/o timeout") => {
            return Outcome::Failure(format!(
                "timeout: failed to connect service {target:?} within {}s: {e}",
                timeout.as_secs()
            ))
        }
        Err(e) => return Outcome::Failure(format!("error: failed to connect service at {target:?}: {e}")),
    };
    match h2::health_check(stream, &target, service, Instant::now() + timeout) {
        Ok(1) => Outcome::Success,
        Ok(status) => Outcome::Failure(format!(
            "service unhealthy (responded with {:?})",
            h2::serving_status_name(status)
        )),
        Err(h2::Error::Timeout) => Outcome::Failure(format!(
            "timeout: health rpc did not complete within {}s",
            timeout.as_secs()
        )),
        Err(h2::Error::Status(code, message)) => Outcome::Failure(format!(
            "rpc error: code = {} desc = {message}",
            h2::grpc_code_name(code)
        )),
        Err(h2::Error::Io(e)) => Outcome::Failure(format!("rpc error: code = Unavailable desc = {e}")),
        Err(h2::Error::Protocol(e)) => Outcome::Failure(format!("rpc error: code = Internal desc = {e}")),
    }
}

/// Just enough HTTP/2 (RFC 9113) for one unary gRPC call over a fresh connection: the
/// preface, SETTINGS (and its ACK), one request stream (HEADERS with HPACK literals that
/// need no table, DATA), and the answer's DATA; response headers are not decoded (HPACK),
/// the status travels in the message or, for errors, in a trailer we read only as far as
/// `grpc-status` sent literally. PING is answered; GOAWAY and RST_STREAM end the call.
mod h2 {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const DATA: u8 = 0x0;
    const HEADERS: u8 = 0x1;
    const RST_STREAM: u8 = 0x3;
    const SETTINGS: u8 = 0x4;
    const PING: u8 = 0x6;
    const GOAWAY: u8 = 0x7;
    const END_STREAM: u8 = 0x1;
    const ACK: u8 = 0x1;
    const END_HEADERS: u8 = 0x4;
    const PADDED: u8 = 0x8;
    const PRIORITY: u8 = 0x20;
    /// The largest frame we accept (SETTINGS_MAX_FRAME_SIZE's default).
    const MAX_FRAME: usize = 16_384;

    #[derive(Debug)]
    pub enum Error {
        Timeout,
        Io(std::io::Error),
        Protocol(String),
        /// A gRPC error status (code, message) from the trailers.
        Status(u32, String),
    }

    impl From<std::io::Error> for Error {
        fn from(e: std::io::Error) -> Self {
            match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Error::Timeout,
                _ => Error::Io(e),
            }
        }
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).expect("small frames");
        let mut f = Vec::with_capacity(9 + payload.len());
        f.extend_from_slice(&len.to_be_bytes()[1..]);
        f.push(kind);
        f.push(flags);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// An HPACK "literal header field without indexing, new name" (RFC 7541 6.2.2), no
    /// Huffman coding; names and values here are short (< 127 bytes).
    fn literal(out: &mut Vec<u8>, name: &str, value: &str) {
        out.push(0x00);
        for s in [name, value] {
            out.push(u8::try_from(s.len()).unwrap_or(127).min(127));
            out.extend_from_slice(&s.as_bytes()[..s.len().min(127)]);
        }
    }

    /// protobuf `HealthCheckRequest { string service = 1; }`.
    fn request(service: &str) -> Vec<u8> {
        let mut msg = Vec::new();
        if !service.is_empty() {
            msg.push(0x0a);
            let mut n = service.len();
            while n >= 0x80 {
                msg.push(u8::try_from(n & 0x7f).expect("7 bits") | 0x80);
                n >>= 7;
            }
            msg.push(u8::try_from(n).expect("7 bits"));
            msg.extend_from_slice(service.as_bytes());
        }
        let mut body = vec![0u8];
        body.extend_from_slice(&u32::try_from(msg.len()).unwrap_or(0).to_be_bytes());
        body.extend_from_slice(&msg);
        body
    }

    /// protobuf `HealthCheckResponse { ServingStatus status = 1; }` after the 5-byte
    /// gRPC message prefix: the status (0 when absent, as proto3 defaults it).
    fn response_status(msg: &[u8]) -> Result<u64, Error> {
        let body = msg
            .get(5..)
            .ok_or_else(|| Error::Protocol("short gRPC message".into()))?;
        let mut i = 0;
        let mut status = 0;
        while i < body.len() {
            let key = body[i];
            i += 1;
            let mut value = 0u64;
            let mut shift = 0;
            loop {
                let b = *body.get(i).ok_or_else(|| Error::Protocol("truncated varint".into()))?;
                i += 1;
                value |= u64::from(b & 0x7f) << shift;
                shift += 7;
                if b & 0x80 == 0 || shift > 63 {
                    break;
                }
            }
            match key {
                0x08 => status = value,
                k if k & 0x7 == 0 => {}
                _ => return Err(Error::Protocol("unexpected field in HealthCheckResponse".into())),
            }
        }
        Ok(status)
    }

    pub fn serving_status_name(status: u64) -> &'static str {
        match status {
            0 => "UNKNOWN",
            1 => "SERVING",
            2 => "NOT_SERVING",
            3 => "SERVICE_UNKNOWN",
            _ => "UNKNOWN",
        }
    }

    pub fn grpc_code_name(code: u32) -> &'static str {
        const NAMES: [&str; 17] = [
            "OK",
            "Canceled",
            "Unknown",
            "InvalidArgument",
            "DeadlineExceeded",
            "NotFound",
            "AlreadyExists",
            "PermissionDenied",
            "ResourceExhausted",
            "FailedPrecondition",
            "Aborted",
            "OutOfRange",
            "Unimplemented",
            "Internal",
            "Unavailable",
            "DataLoss",
            "Unauthenticated",
        ];
        usize::try_from(code)
            .ok()
            .and_then(|c| NAMES.get(c))
            .copied()
            .unwrap_or("Unknown")
    }

    /// Finds `grpc-status` and `grpc-message` sent as HPACK literals (how servers send
    /// trailers they do not index; a Huffman-coded or indexed one is not decoded and the
    /// status reads as Unknown).
    fn trailer_status(block: &[u8]) -> Option<(u32, String)> {
        let find = |name: &[u8]| -> Option<String> {
            let at = block.windows(name.len()).position(|w| w == name)? + name.len();
            let len = usize::from(*block.get(at)? & 0x7f);
            block
                .get(at + 1..at + 1 + len)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        let code = find(b"grpc-status")?.parse().ok()?;
        Some((code, find(b"grpc-message").unwrap_or_default()))
    }

    /// One `Check` call: the `status` field of the answer.
    pub fn health_check(mut s: TcpStream, authority: &str, service: &str, deadline: Instant) -> Result<u64, Error> {
        let remaining = || {
            deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or(Error::Timeout)
        };
        s.set_write_timeout(Some(remaining()?))?;
        let mut out = PREFACE.to_vec();
        out.extend(frame(SETTINGS, 0, 0, &[]));
        let mut headers = Vec::new();
        for (name, value) in [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/grpc.health.v1.Health/Check"),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("user-agent", "kube-probe/1.34"),
        ] {
            literal(&mut headers, name, value);
        }
        out.extend(frame(HEADERS, END_HEADERS, 1, &headers));
        out.extend(frame(DATA, END_STREAM, 1, &request(service)));
        s.write_all(&out)?;
        let mut message = Vec::new();
        loop {
            s.set_read_timeout(Some(remaining()?))?;
            let mut head = [0u8; 9];
            s.read_exact(&mut head)?;
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let (kind, flags) = (head[3], head[4]);
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            if len > MAX_FRAME {
                return Err(Error::Protocol(format!("frame of {len} bytes")));
            }
            let mut payload = vec![0u8; len];
            s.set_read_timeout(Some(remaining()?))?;
            s.read_exact(&mut payload)?;
            // Padding (DATA, HEADERS) and priority (HEADERS) come off the payload.
            let mut body: &[u8] = &payload;
            if matches!(kind, DATA | HEADERS) && flags & PADDED != 0 {
                let pad = usize::from(*body.first().ok_or_else(|| Error::Protocol("padding".into()))?);
                body = body
                    .get(1..body.len().saturating_sub(pad))
                    .ok_or_else(|| Error::Protocol("padding".into()))?;
            }
            if kind == HEADERS && flags & PRIORITY != 0 {
                body = body.get(5..).ok_or_else(|| Error::Protocol("priority".into()))?;
            }
            match kind {
                SETTINGS if flags & ACK == 0 => s.write_all(&frame(SETTINGS, ACK, 0, &[]))?,
                PING if flags & ACK == 0 => s.write_all(&frame(PING, ACK, 0, body))?,
                GOAWAY => return Err(Error::Protocol("connection closed by the server (GOAWAY)".into())),
                RST_STREAM if stream == 1 => return Err(Error::Protocol("stream reset by the server".into())),
                DATA if stream == 1 => {
                    message.extend_from_slice(body);
                    if message.len() as u64 > super::MAX_RESPONSE {
                        return Err(Error::Protocol("answer too long".into()));
                    }
                    if message.len() >= 5 {
                        let want =
                            5 + usize::try_from(u32::from_be_bytes([message[1], message[2], message[3], message[4]]))
                                .unwrap_or(usize::MAX);
                        if message.len() >= want {
                            return response_status(&message[..want]);
                        }
                    }
                }
                HEADERS if stream == 1 && flags & END_STREAM != 0 => {
                    return Err(match trailer_status(body) {
                        Some((code, msg)) if code != 0 => Error::Status(code, msg),
                        _ => Error::Protocol("the call ended without an answer".into()),
                    });
                }
                _ => {}
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn request_and_response_encode_as_protobuf() {
            assert_eq!(request(""), [0, 0, 0, 0, 0]);
            assert_eq!(request("db"), [0, 0, 0, 0, 4, 0x0a, 2, b'd', b'b']);
            assert_eq!(response_status(&[0, 0, 0, 0, 2, 0x08, 1]).unwrap(), 1);
            assert_eq!(response_status(&[0, 0, 0, 0, 0]).unwrap(), 0);
            assert!(response_status(&[0, 0]).is_err());
            let mut block = Vec::new();
            literal(&mut block, "grpc-status", "12");
            literal(&mut block, "grpc-message", "unknown service");
            assert_eq!(trailer_status(&block), Some((12, "unknown service".into())));
            assert_eq!(grpc_code_name(12), "Unimplemented");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn probe(json: &str) -> Probe {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn probes_read_kubernetes_field_names_with_the_api_servers_defaults() {
        let p = probe(r#"{"httpGet":{"host":"10.0.0.2","port":8080,"path":"/healthz"},"periodSeconds":2}"#);
        assert_eq!(
            (
                p.period_seconds,
                p.timeout_seconds,
                p.success_threshold,
                p.failure_threshold
            ),
            (2, 1, 1, 3)
        );
        assert!(matches!(p.handler, Handler::HttpGet(ref g) if g.port == 8080 && g.path == "/healthz"));
        let p = probe(r#"{"exec":{"command":["cat","/tmp/ready"]},"initialDelaySeconds":5}"#);
        assert_eq!(
            p.handler,
            Handler::Exec {
                command: vec!["cat".into(), "/tmp/ready".into()]
            }
        );
        let all: Probes = serde_json::from_str(
            r#"{"startupProbe":{"tcpSocket":{"host":"127.0.0.1","port":80}},"readinessProbe":{"grpc":{"host":"::1","port":9}}}"#,
        )
        .unwrap();
        let kinds: Vec<ProbeKind> = all.iter().map(|(k, _)| k).collect();
        assert_eq!(kinds, [ProbeKind::Startup, ProbeKind::Readiness]);
        assert!(serde_json::from_str::<Probes>(r#"{"livenessprobe":{}}"#).is_err());
        assert!(
            serde_json::from_str::<Probe>(r#"{"periodSeconds":2}"#).is_err(),
            "no handler"
        );
    }

    #[test]
    fn results_follow_kubelets_thresholds_and_initial_values() {
        let fail = Outcome::Failure("nope".into());
        // Readiness: starts not ready; 2 successes make it ready, 3 failures unready.
        let mut r = Worker::new(
            ProbeKind::Readiness,
            probe(r#"{"exec":{"command":["true"]},"successThreshold":2}"#),
        );
        assert_eq!(r.result(), ProbeResult::Failure);
        assert_eq!(r.record(&Outcome::Success), Verdict::default());
        assert_eq!(r.record(&Outcome::Success).changed, Some(ProbeResult::Success));
        let v = r.record(&fail);
        assert!(v.unhealthy && v.changed.is_none() && !v.kill);
        assert!(!r.record(&fail).unhealthy, "one Unhealthy per run of failures");
        assert_eq!(r.record(&fail).changed, Some(ProbeResult::Failure));
        assert!(!r.done(), "readiness never kills");
        // Liveness: alive until 3 failures in a row, then kill and stop.
        let mut l = Worker::new(ProbeKind::Liveness, probe(r#"{"exec":{"command":["true"]}}"#));
        assert_eq!(l.result(), ProbeResult::Success);
        l.record(&fail);
        l.record(&fail);
        l.record(&Outcome::Success);
        l.record(&fail);
        l.record(&fail);
        let v = l.record(&fail);
        assert_eq!((v.changed, v.kill), (Some(ProbeResult::Failure), true));
        assert!(l.done());
        // Startup: unknown, gates the others, stops once it succeeded.
        let mut s = Worker::new(
            ProbeKind::Startup,
            probe(r#"{"exec":{"command":["true"]},"failureThreshold":2}"#),
        );
        assert_eq!(s.result(), ProbeResult::Unknown);
        assert!(s.may_check(false) && !l.may_check(true) && !r.may_check(false) && r.may_check(true));
        assert_eq!(s.record(&Outcome::Success).changed, Some(ProbeResult::Success));
        assert!(s.done() && !s.may_check(true));
        let mut s = Worker::new(
            ProbeKind::Startup,
            probe(r#"{"exec":{"command":["true"]},"failureThreshold":2}"#),
        );
        s.record(&fail);
        assert!(s.record(&fail).kill);
    }

    #[test]
    fn network_checks_report_what_kubelet_reports() {
        let t = Duration::from_secs(2);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(tcp_socket("127.0.0.1", port, t), Outcome::Success);
        let server = std::thread::spawn(move || {
            // Three connections: the tcpSocket check's (sends nothing), then two GETs.
            let mut answered = 0;
            for conn in listener.incoming().take(3) {
                let mut conn = conn.unwrap();
                let mut req = [0u8; 1024];
                let n = conn.read(&mut req).unwrap_or(0);
                if n == 0 {
                    continue;
                }
                let req = String::from_utf8_lossy(&req[..n]).into_owned();
                assert!(
                    req.starts_with("GET /healthz HTTP/1.1\r\n") && req.contains("X-Probe: yes\r\n"),
                    "{req}"
                );
                let status = if answered == 0 {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                answered += 1;
                conn.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .unwrap();
            }
        });
        let get = HttpGet {
            host: "127.0.0.1".into(),
            port,
            path: "/healthz".into(),
            http_headers: vec![HttpHeader {
                name: "X-Probe".into(),
                value: "yes".into(),
            }],
        };
        assert_eq!(http_get(&get, t), Outcome::Success);
        assert_eq!(
            http_get(&get, t),
            Outcome::Failure("HTTP probe failed with statuscode: 503".into())
        );
        server.join().unwrap();
        // Nothing listens any more.
        match tcp_socket("127.0.0.1", port, t) {
            Outcome::Failure(m) => assert!(m.ends_with("connect: connection refused"), "{m}"),
            Outcome::Success => panic!("connected to a closed port"),
        }
        match grpc("127.0.0.1", port, "", t) {
            Outcome::Failure(m) => assert!(m.contains("connection refused"), "{m}"),
            Outcome::Success => panic!("gRPC check passed against nothing"),
        }
    }
}
