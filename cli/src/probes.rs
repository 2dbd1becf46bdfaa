//! A container's `livenessProbe`, `readinessProbe` and `startupProbe`, and its `lifecycle`
//! hooks ([`hooks`]), checked as the API server validates them (`pkg/apis/core/validation`: `validateProbe`,
//! `validateLivenessProbe`, `validateReadinessProbe`, `validateStartupProbe`) and given its
//! defaults (`SetDefaults_Probe`), into what the shim's prober runs
//! ([`sandbox::pod::probe::Probes`], the `io.peapod.probes` annotation).
//!
//! Named ports are resolved against the container's `ports` here, so a name that does
//! not exist fails the run naming the field (kubelet would fail each check instead). A
//! probe's `host` left empty means the pod's IP, as kubelet's prober uses it; it is filled
//! in when the container is created ([`with_pod_ip`]), loopback for a pod without one.
//! Not supported, refused by name: `httpGet.scheme: HTTPS` (peapod's prober has no TLS).

use k8s_openapi::api::core::v1::{Container, ExecAction, HTTPGetAction, LifecycleHandler, Probe as KubeProbe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sandbox::pod::hooks::{Hook, Hooks};
use sandbox::pod::probe::{Handler, HttpGet, HttpHeader, Probe, ProbeKind, Probes};

use crate::hostports::ContainerPort;
use crate::manifest::ManifestError;

fn field(path: String, reason: impl Into<String>) -> ManifestError {
    ManifestError::Field {
        field: path,
        reason: reason.into(),
    }
}

/// The probes of container `c` at `path` (e.g. `spec.containers[0]`); `init` for an init
/// container that is not a sidecar, which may have none. `ports` are the container's
/// declared ports (name, containerPort, protocol).
///
/// Errors: [`ManifestError::Field`] naming the probe's field: no handler or more than
/// one, a negative number, a threshold other than 1 where the API server requires it,
/// `terminationGracePeriodSeconds` on a readiness probe or below 1, a port that is not
/// 1–65535 or names no declared port, HTTPS, or probes on an init container.
pub fn probes(path: &str, c: &Container, init: bool, ports: &[ContainerPort]) -> Result<Probes, ManifestError> {
    let mut out = Probes::default();
    for (kind, name, probe) in [
        (ProbeKind::Liveness, "livenessProbe", &c.liveness_probe),
        (ProbeKind::Readiness, "readinessProbe", &c.readiness_probe),
        (ProbeKind::Startup, "startupProbe", &c.startup_probe),
    ] {
        let Some(p) = probe else { continue };
        let at = format!("{path}.{name}");
        if init {
            return Err(field(
                at,
                "may not be set for init containers without restartPolicy=Always",
            ));
        }
        let converted = convert(&at, kind, p, ports)?;
        match kind {
            ProbeKind::Liveness => out.liveness_probe = Some(converted),
            ProbeKind::Readiness => out.readiness_probe = Some(converted),
            ProbeKind::Startup => out.startup_probe = Some(converted),
        }
    }
    Ok(out)
}

fn seconds(at: &str, name: &str, v: Option<i32>, default: u32) -> Result<u32, ManifestError> {
    match v {
        None | Some(0) => Ok(default),
        Some(n) => u32::try_from(n).map_err(|_| field(format!("{at}.{name}"), "must be greater than or equal to 0")),
    }
}

fn port(at: &str, p: &IntOrString, ports: &[ContainerPort]) -> Result<u16, ManifestError> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| field(at.to_string(), format!("{n}: must be between 1 and 65535, inclusive"))),
        IntOrString::String(name) => match name.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => ports
                .iter()
                .find(|p| p.name == *name)
                .map(|p| p.container_port)
                .ok_or_else(|| {
                    field(
                        at.to_string(),
                        format!("{name:?}: no port of the container has this name"),
                    )
                }),
        },
    }
}

fn convert(at: &str, kind: ProbeKind, p: &KubeProbe, ports: &[ContainerPort]) -> Result<Probe, ManifestError> {
    let handlers = [
        p.exec.is_some(),
        p.http_get.is_some(),
        p.tcp_socket.is_some(),
        p.grpc.is_some(),
    ];
    match handlers.iter().filter(|h| **h).count() {
        0 => {
            return Err(field(
                at.to_string(),
                "must specify a handler type (exec, httpGet, tcpSocket or grpc)",
            ))
        }
        1 => {}
        _ => return Err(field(at.to_string(), "may not specify more than 1 handler type")),
    }
    let handler = if let Some(e) = &p.exec {
        Handler::Exec {
            command: command(at, e)?,
        }
    } else if let Some(h) = &p.http_get {
        Handler::HttpGet(http_get(at, h, ports)?)
    } else if let Some(t) = &p.tcp_socket {
        Handler::TcpSocket {
            host: t.host.clone().unwrap_or_default(),
            port: port(&format!("{at}.tcpSocket.port"), &t.port, ports)?,
        }
    } else {
        let g = p.grpc.as_ref().expect("one handler");
        Handler::Grpc {
            host: String::new(),
            port: port(&format!("{at}.grpc.port"), &IntOrString::Int(g.port), ports)?,
            service: g.service.clone().unwrap_or_default(),
        }
    };
    let success_threshold = seconds(at, "successThreshold", p.success_threshold, 1)?;
    if kind != ProbeKind::Readiness && success_threshold != 1 {
        return Err(field(format!("{at}.successThreshold"), "must be 1"));
    }
    let termination_grace_period_seconds = match p.termination_grace_period_seconds {
        None => None,
        Some(_) if kind == ProbeKind::Readiness => {
            return Err(field(
                format!("{at}.terminationGracePeriodSeconds"),
                "must not be set for readinessProbes",
            ))
        }
        Some(n) if n >= 1 => Some(n.unsigned_abs()),
        Some(_) => {
            return Err(field(
                format!("{at}.terminationGracePeriodSeconds"),
                "must be greater than 0",
            ))
        }
    };
    Ok(Probe {
        handler,
        initial_delay_seconds: seconds(at, "initialDelaySeconds", p.initial_delay_seconds, 0)?,
        period_seconds: seconds(at, "periodSeconds", p.period_seconds, 10)?,
        timeout_seconds: seconds(at, "timeoutSeconds", p.timeout_seconds, 1)?,
        success_threshold,
        failure_threshold: seconds(at, "failureThreshold", p.failure_threshold, 3)?,
        termination_grace_period_seconds,
    })
}

fn command(at: &str, e: &ExecAction) -> Result<Vec<String>, ManifestError> {
    let command = e.command.clone().unwrap_or_default();
    if command.is_empty() {
        return Err(field(format!("{at}.exec.command"), "Required value"));
    }
    Ok(command)
}

fn http_get(at: &str, h: &HTTPGetAction, ports: &[ContainerPort]) -> Result<HttpGet, ManifestError> {
    if h.scheme.as_deref().is_some_and(|s| s != "HTTP") {
        return Err(field(
            format!("{at}.httpGet.scheme"),
            format!(
                "{:?} is not supported by peapod (only HTTP)",
                h.scheme.as_deref().unwrap_or_default()
            ),
        ));
    }
    let mut http_headers = Vec::new();
    for (i, hd) in h.http_headers.iter().flatten().enumerate() {
        let valid = !hd.name.is_empty()
            && hd
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(&b));
        if !valid || hd.value.contains(['\r', '\n']) {
            return Err(field(
                format!("{at}.httpGet.httpHeaders[{i}]"),
                "not a valid HTTP header name and value",
            ));
        }
        http_headers.push(HttpHeader {
            name: hd.name.clone(),
            value: hd.value.clone(),
        });
    }
    let path = h.path.clone().unwrap_or_default();
    if path.contains(['\r', '\n', ' ']) || !(path.is_empty() || path.starts_with('/')) {
        return Err(field(format!("{at}.httpGet.path"), "must be an absolute URL path"));
    }
    Ok(HttpGet {
        host: h.host.clone().unwrap_or_default(),
        port: port(&format!("{at}.httpGet.port"), &h.port, ports)?,
        path,
        http_headers,
    })
}

/// The lifecycle hooks of container `c` at `path`, checked as the API server checks
/// `lifecycle` (`validateLifecycle`): one handler each, `sleep.seconds` from 0 to the
/// pod's `grace` seconds; `init` as for [`probes`].
///
/// Errors: [`ManifestError::Field`] naming the hook's field; `tcpSocket` is refused
/// (kubelet accepts it and does nothing), as are hooks on init containers.
pub fn hooks(
    path: &str,
    c: &Container,
    init: bool,
    grace: u64,
    ports: &[ContainerPort],
) -> Result<Hooks, ManifestError> {
    let Some(l) = &c.lifecycle else {
        return Ok(Hooks::default());
    };
    if init {
        return Err(field(
            format!("{path}.lifecycle"),
            "may not be set for init containers without restartPolicy=Always",
        ));
    }
    let convert = |name: &str, h: &LifecycleHandler| -> Result<Hook, ManifestError> {
        let at = format!("{path}.lifecycle.{name}");
        let set = [
            h.exec.is_some(),
            h.http_get.is_some(),
            h.tcp_socket.is_some(),
            h.sleep.is_some(),
        ];
        match set.iter().filter(|s| **s).count() {
            0 => return Err(field(at, "must specify a handler type (exec, httpGet or sleep)")),
            1 => {}
            _ => return Err(field(at, "may not specify more than 1 handler type")),
        }
        if let Some(e) = &h.exec {
            Ok(Hook::Exec {
                command: command(&at, e)?,
            })
        } else if let Some(g) = &h.http_get {
            Ok(Hook::HttpGet(http_get(&at, g, ports)?))
        } else if let Some(s) = &h.sleep {
            let seconds = u64::try_from(s.seconds).ok().filter(|s| *s <= grace).ok_or_else(|| {
                field(
                    format!("{at}.sleep.seconds"),
                    format!("must be from 0 to terminationGracePeriodSeconds ({grace})"),
                )
            })?;
            Ok(Hook::Sleep { seconds })
        } else {
            Err(field(
                format!("{at}.tcpSocket"),
                "is deprecated and does nothing in kubelet; peapod refuses it",
            ))
        }
    };
    Ok(Hooks {
        post_start: l.post_start.as_ref().map(|h| convert("postStart", h)).transpose()?,
        pre_stop: l.pre_stop.as_ref().map(|h| convert("preStop", h)).transpose()?,
    })
}

/// `hooks` with an `httpGet`'s empty `host` set to the pod's IP (see [`with_pod_ip`]).
pub fn hooks_with_pod_ip(hooks: &Hooks, ip: &str) -> Hooks {
    let mut out = hooks.clone();
    for h in [&mut out.post_start, &mut out.pre_stop].into_iter().flatten() {
        if let Hook::HttpGet(g) = h {
            default_host(&mut g.host, ip);
        }
    }
    out
}

/// An empty `host` becomes the pod's IP, or loopback for a pod without one.
fn default_host(host: &mut String, ip: &str) {
    if host.is_empty() {
        *host = if ip.is_empty() { "127.0.0.1" } else { ip }.to_string();
    }
}

/// `probes` with every empty `host` set to the pod's IP (`ip`), or to loopback for a pod
/// without one (network `none`: the prober checks from inside the pod's network
/// namespace, where loopback is the pod's own).
pub fn with_pod_ip(probes: &Probes, ip: &str) -> Probes {
    let mut out = probes.clone();
    for p in [
        &mut out.liveness_probe,
        &mut out.readiness_probe,
        &mut out.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        match &mut p.handler {
            Handler::HttpGet(HttpGet { host, .. }) | Handler::TcpSocket { host, .. } | Handler::Grpc { host, .. } => {
                default_host(host, ip)
            }
            Handler::Exec { .. } => {}
        }
    }
    out
}

/// kubectl describe's one-line summary of a probe (`http-get http://:8080/healthz
/// delay=0s timeout=1s period=10s #success=1 #failure=3`).
pub fn describe(p: &Probe) -> String {
    let what = match &p.handler {
        Handler::Exec { command } => format!("exec [{}]", command.join(" ")),
        Handler::HttpGet(g) => format!("http-get http://{}:{}{}", g.host, g.port, g.path),
        Handler::TcpSocket { host, port } => format!("tcp-socket {host}:{port}"),
        Handler::Grpc { port, service, .. } => format!("grpc <pod>:{port} {service}"),
    };
    format!(
        "{what} delay={}s timeout={}s period={}s #success={} #failure={}",
        p.initial_delay_seconds, p.timeout_seconds, p.period_seconds, p.success_threshold, p.failure_threshold
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http_port() -> ContainerPort {
        ContainerPort {
            name: "http".into(),
            container_port: 8080,
            protocol: "TCP".into(),
            host_port: None,
            host_ip: String::new(),
        }
    }

    fn container(yaml: &str) -> Container {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn err(c: &Container, init: bool) -> (String, String) {
        match probes("spec.containers[0]", c, init, &[http_port()]) {
            Err(ManifestError::Field { field, reason }) => (field, reason),
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn probes_get_the_api_servers_defaults_and_named_ports() {
        let c = container(
            "name: c\nlivenessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 3}\n\
             readinessProbe: {exec: {command: [cat, /tmp/ready]}, successThreshold: 2}\n\
             startupProbe: {tcpSocket: {port: 80}, failureThreshold: 30, terminationGracePeriodSeconds: 5}",
        );
        let p = probes("spec.containers[0]", &c, false, &[http_port()]).unwrap();
        let l = p.liveness_probe.as_ref().unwrap();
        assert_eq!((l.period_seconds, l.timeout_seconds, l.failure_threshold), (3, 1, 3));
        assert_eq!(
            describe(l),
            "http-get http://:8080/healthz delay=0s timeout=1s period=3s #success=1 #failure=3"
        );
        assert_eq!(p.readiness_probe.as_ref().unwrap().success_threshold, 2);
        let s = p.startup_probe.as_ref().unwrap();
        assert_eq!((s.failure_threshold, s.termination_grace_period_seconds), (30, Some(5)));
        let filled = with_pod_ip(&p, "10.89.0.7");
        assert!(matches!(&filled.liveness_probe.unwrap().handler, Handler::HttpGet(g) if g.host == "10.89.0.7"));
        assert!(matches!(&with_pod_ip(&p, "").startup_probe.unwrap().handler,
            Handler::TcpSocket { host, .. } if host == "127.0.0.1"));
    }

    #[test]
    fn bad_probes_are_refused_naming_the_field() {
        let cases = [
            (
                "name: c\nlivenessProbe: {periodSeconds: 1}",
                false,
                "spec.containers[0].livenessProbe",
                "handler",
            ),
            (
                "name: c\nlivenessProbe: {exec: {command: [x]}, tcpSocket: {port: 1}}",
                false,
                "spec.containers[0].livenessProbe",
                "more than 1",
            ),
            (
                "name: c\nlivenessProbe: {exec: {command: [x]}, successThreshold: 2}",
                false,
                "spec.containers[0].livenessProbe.successThreshold",
                "must be 1",
            ),
            (
                "name: c\nreadinessProbe: {exec: {command: [x]}, terminationGracePeriodSeconds: 3}",
                false,
                "spec.containers[0].readinessProbe.terminationGracePeriodSeconds",
                "readiness",
            ),
            (
                "name: c\nreadinessProbe: {httpGet: {port: web}}",
                false,
                "spec.containers[0].readinessProbe.httpGet.port",
                "no port",
            ),
            (
                "name: c\nreadinessProbe: {httpGet: {port: 8080, scheme: HTTPS}}",
                false,
                "spec.containers[0].readinessProbe.httpGet.scheme",
                "only HTTP",
            ),
            (
                "name: c\nstartupProbe: {tcpSocket: {port: 70000}}",
                false,
                "spec.containers[0].startupProbe.tcpSocket.port",
                "65535",
            ),
            (
                "name: c\nreadinessProbe: {exec: {command: [x]}, periodSeconds: -1}",
                false,
                "spec.containers[0].readinessProbe.periodSeconds",
                "0",
            ),
            (
                "name: c\nreadinessProbe: {exec: {command: [x]}}",
                true,
                "spec.containers[0].readinessProbe",
                "init containers",
            ),
        ];
        for (yaml, init, want_field, want_reason) in cases {
            let (f, r) = err(&container(yaml), init);
            assert_eq!(f, want_field, "{yaml}");
            assert!(r.contains(want_reason), "{yaml}: {r}");
        }
    }
}
