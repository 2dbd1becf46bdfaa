//! Container ports and host ports (`containers[].ports[]`), as Kubernetes treats them.
//!
//! - Checked as the API server checks them (`pkg/apis/core/validation`:
//!   `validateContainerPorts`, `validateHostNetwork`, `AccumulateUniqueHostPorts`):
//!   `containerPort` and a non-zero `hostPort` in 1–65535, `protocol` `TCP` (the default),
//!   `UDP` or `SCTP`, port names IANA service names unique in the container, one
//!   `protocol/hostIP/hostPort` at most once in the pod. With `hostNetwork` the API
//!   server's defaulting sets `hostPort` to `containerPort` (`defaultHostNetworkPorts`) and
//!   any other `hostPort` is refused.
//! - Mapped as kubelet and containerd's CRI map them: kubelet puts the ports of
//!   `spec.containers` (not `initContainers`) into the sandbox's `port_mappings`
//!   (`kuberuntime_sandbox.go`, `generatePodSandboxConfig` with `MakePortMappings`);
//!   containerd passes those with a `hostPort` to CNI as the `portMappings` capability
//!   (`{"hostPort","containerPort","protocol","hostIP"}`, protocol lower-case), which the
//!   `portmap` plugin turns into iptables DNAT rules (chain `CNI-DN-<hash>` under
//!   `CNI-HOSTPORT-DNAT`), removed again by CNI DEL with the same mappings. A `hostPort`
//!   on an init container would never be mapped (kubelet leaves them out), so peapod
//!   refuses it rather than drop it.
//! - Held against the host ports of the other pods on this machine as the scheduler's
//!   `NodePorts` plugin holds them (`framework.HostPortInfo.CheckConflict`): the same
//!   protocol and port conflict when either `hostIP` is `0.0.0.0` (or empty) or both are
//!   the same address. A `hostNetwork` pod holds its (defaulted) host ports too.

use std::collections::BTreeMap;
use std::net::IpAddr;

use sandbox::pod::Role;
use serde::{Deserialize, Serialize};

use crate::manifest::{ManifestError, PodPlan};

/// The protocols a container port may use (`corev1.Protocol`).
pub const PROTOCOLS: [&str; 3] = ["SCTP", "TCP", "UDP"];

/// The scheduler's "every address" host IP (`DefaultBindAllHostIP`), what an empty
/// `hostIP` means.
pub const BIND_ALL_HOST_IP: &str = "0.0.0.0";

/// One checked `containers[].ports[]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "PortRepr")]
pub struct ContainerPort {
    /// `name` (an IANA service name, or empty).
    pub name: String,
    /// `containerPort`, 1–65535.
    pub container_port: u16,
    /// `protocol`: `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// `hostPort`, 1–65535, if any (with `hostNetwork`: `containerPort`).
    pub host_port: Option<u16>,
    /// `hostIP` as written (empty: every address).
    pub host_ip: String,
}

/// How a [`ContainerPort`] is read back from a pod record: this struct, or the
/// `(name, containerPort, protocol)` triple of records an earlier peapod wrote.
#[derive(Deserialize)]
#[serde(untagged)]
enum PortRepr {
    Fields {
        name: String,
        container_port: u16,
        protocol: String,
        #[serde(default)]
        host_port: Option<u16>,
        #[serde(default)]
        host_ip: String,
    },
    Triple(String, u16, String),
}

impl From<PortRepr> for ContainerPort {
    fn from(r: PortRepr) -> ContainerPort {
        match r {
            PortRepr::Fields {
                name,
                container_port,
                protocol,
                host_port,
                host_ip,
            } => ContainerPort {
                name,
                container_port,
                protocol,
                host_port,
                host_ip,
            },
            PortRepr::Triple(name, container_port, protocol) => ContainerPort {
                name,
                container_port,
                protocol,
                host_port: None,
                host_ip: String::new(),
            },
        }
    }
}

fn field(field: String, reason: impl Into<String>) -> ManifestError {
    ManifestError::Field {
        field,
        reason: reason.into(),
    }
}

/// A port number in 1–65535, as `validation.IsValidPortNum` wants it.
fn port_number(f: String, value: i32) -> Result<u16, ManifestError> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| field(f, format!("{value}: must be between 1 and 65535, inclusive")))
}

/// An IANA service name (`validation.IsValidPortName`): at most 15 characters of `a-z`,
/// `0-9` and `-`, at least one letter, no `-` at either end or twice in a row.
fn port_name(f: String, name: &str) -> Result<(), ManifestError> {
    let reason = if name.len() > 15 {
        "must be no more than 15 characters"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"
    } else if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        "must contain at least one letter (a-z)"
    } else if name.contains("--") {
        "must not contain consecutive hyphens"
    } else if name.starts_with('-') || name.ends_with('-') {
        "must not begin or end with a hyphen"
    } else {
        return Ok(());
    };
    Err(field(f, format!("{name:?}: {reason}")))
}

/// Checks the `ports` of the container at `path` (`spec.containers[0]`) with role `role`
/// in a pod with `hostNetwork` = `host_network`, as the API server does (see the module
/// doc), and refuses a `hostPort` on an init container or sidecar (kubelet never maps
/// those).
///
/// Errors: [`ManifestError::Field`] naming `<path>.ports[<j>].<field>` and the rule.
pub fn container_ports(
    path: &str,
    ports: &[k8s_openapi::api::core::v1::ContainerPort],
    role: Role,
    host_network: bool,
) -> Result<Vec<ContainerPort>, ManifestError> {
    let mut out: Vec<ContainerPort> = Vec::new();
    for (j, p) in ports.iter().enumerate() {
        let f = format!("{path}.ports[{j}]");
        let name = p.name.clone().unwrap_or_default();
        if !name.is_empty() {
            port_name(format!("{f}.name"), &name)?;
            if out.iter().any(|o| o.name == name) {
                return Err(field(
                    format!("{f}.name"),
                    format!("{name:?}: port names must be unique in a container"),
                ));
            }
        }
        if p.container_port == 0 {
            return Err(field(format!("{f}.containerPort"), "required"));
        }
        let container_port = port_number(format!("{f}.containerPort"), p.container_port)?;
        let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
        if !PROTOCOLS.contains(&protocol.as_str()) {
            return Err(field(
                format!("{f}.protocol"),
                format!("{protocol:?} is not supported: \"SCTP\", \"TCP\" or \"UDP\""),
            ));
        }
        let host_ip = p.host_ip.clone().unwrap_or_default();
        if !host_ip.is_empty() && host_ip.parse::<IpAddr>().is_err() {
            return Err(field(
                format!("{f}.hostIP"),
                format!("{host_ip:?} is not an IP address"),
            ));
        }
        let mut host_port = match p.host_port.unwrap_or(0) {
            0 => None,
            h => Some(port_number(format!("{f}.hostPort"), h)?),
        };
        if host_network {
            // The API server's defaulting, then `validateHostNetwork`.
            let h = *host_port.get_or_insert(container_port);
            if h != container_port {
                return Err(field(
                    format!("{f}.containerPort"),
                    format!("{container_port}: must match `hostPort` ({h}) when `hostNetwork` is true"),
                ));
            }
        } else if host_port.is_some() && role != Role::App {
            return Err(field(
                format!("{f}.hostPort"),
                "kubelet maps the host ports of spec.containers only: on an init container or sidecar it would reach nothing",
            ));
        }
        out.push(ContainerPort {
            name,
            container_port,
            protocol,
            host_port,
            host_ip,
        });
    }
    Ok(out)
}

/// One host port a pod holds: `protocol/hostIP/hostPort`, and the field that declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPortClaim {
    /// The port's field, e.g. `spec.containers[0].ports[1]`.
    pub field: String,
    /// `hostIP` (empty: every address).
    pub host_ip: String,
    /// `hostPort`.
    pub host_port: u16,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
}

impl HostPortClaim {
    /// The API server's key for duplicates in one pod (`AccumulateUniqueHostPorts`):
    /// `protocol/hostIP/hostPort`, the IP as written.
    fn pod_key(&self) -> String {
        format!("{}/{}/{}", self.protocol, self.host_ip, self.host_port)
    }

    /// The IP the scheduler compares (`HostPortInfo.sanitize`): empty is `0.0.0.0`.
    fn ip(&self) -> &str {
        if self.host_ip.is_empty() {
            BIND_ALL_HOST_IP
        } else {
            &self.host_ip
        }
    }

    /// Whether the two hold the same host port (`HostPortInfo.CheckConflict`): the same
    /// protocol and port, and one IP is `0.0.0.0` or both are the same.
    pub fn conflicts_with(&self, other: &HostPortClaim) -> bool {
        self.protocol == other.protocol
            && self.host_port == other.host_port
            && (self.ip() == BIND_ALL_HOST_IP || other.ip() == BIND_ALL_HOST_IP || self.ip() == other.ip())
    }

    /// `8080/TCP on 0.0.0.0`.
    fn describe(&self) -> String {
        format!("{}/{} on {}", self.host_port, self.protocol, self.ip())
    }
}

/// The host ports pod `plan` holds, in declaration order.
pub fn claims(plan: &PodPlan) -> Vec<HostPortClaim> {
    let mut out = Vec::new();
    for (i, c) in plan.containers.iter().enumerate() {
        let path = plan.container_field(i);
        for (j, p) in c.ports.iter().enumerate() {
            if let Some(host_port) = p.host_port {
                out.push(HostPortClaim {
                    field: format!("{path}.ports[{j}]"),
                    host_ip: p.host_ip.clone(),
                    host_port,
                    protocol: p.protocol.clone(),
                });
            }
        }
    }
    out
}

/// Refuses the second of two ports of `plan` with the same `protocol/hostIP/hostPort`
/// (the API server's `AccumulateUniqueHostPorts`).
///
/// Errors: [`ManifestError::Field`] naming the later port's `hostPort`.
pub fn unique_in_pod(plan: &PodPlan) -> Result<(), ManifestError> {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for c in claims(plan) {
        if let Some(first) = seen.get(&c.pod_key()) {
            return Err(field(
                format!("{}.hostPort", c.field),
                format!(
                    "Duplicate value: {:?}: {first} holds the same hostPort, protocol and hostIP",
                    c.pod_key()
                ),
            ));
        }
        seen.insert(c.pod_key(), c.field);
    }
    Ok(())
}

/// A host port peapod cannot give the pod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostPortError {
    /// Another pod on this machine holds the same host port.
    #[error("{field}.hostPort: host port {port} is already held by pod {namespace}/{name} ({other_field}.hostPort)")]
    Conflict {
        /// This pod's port field, e.g. `spec.containers[0].ports[0]`.
        field: String,
        /// `8080/TCP on 0.0.0.0`.
        port: String,
        /// The other pod's namespace.
        namespace: String,
        /// The other pod's name.
        name: String,
        /// The other pod's port field.
        other_field: String,
    },
    /// The pod's network cannot carry a host port.
    #[error("{field}.hostPort: {reason}")]
    Unmappable {
        /// The port's field.
        field: String,
        /// Why.
        reason: String,
    },
}

/// Another pod's host ports: (namespace, name, its claims).
pub type HeldPorts = (String, String, Vec<HostPortClaim>);

/// Checks `plan`'s host ports against those `others` hold (pods on this machine,
/// `plan` itself not among them), as the scheduler's `NodePorts` filter does.
///
/// Errors: [`HostPortError::Conflict`] naming this pod's field and the other pod.
pub fn check_conflicts(plan: &PodPlan, others: &[HeldPorts]) -> Result<(), HostPortError> {
    for mine in claims(plan) {
        for (namespace, name, held) in others {
            if let Some(theirs) = held.iter().find(|t| mine.conflicts_with(t)) {
                return Err(HostPortError::Conflict {
                    port: mine.describe(),
                    field: mine.field,
                    namespace: namespace.clone(),
                    name: name.clone(),
                    other_field: theirs.field.clone(),
                });
            }
        }
    }
    Ok(())
}

/// One entry of CNI's `portMappings` capability (`CONVENTIONS.md`; containerd's
/// `toCNIPortMappings`): protocol lower-case, `hostIP` left out when empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// `hostPort`.
    pub host_port: u16,
    /// `containerPort`.
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// `hostIP`, if any.
    #[serde(rename = "hostIP", skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// What the pod's CNI network maps: the ports of its app containers that have a
/// `hostPort`, in declaration order (kubelet's `port_mappings` as containerd filters them).
pub fn port_mappings(plan: &PodPlan) -> Vec<PortMapping> {
    plan.containers
        .iter()
        .filter(|c| c.role == Role::App)
        .flat_map(|c| &c.ports)
        .filter_map(|p| {
            Some(PortMapping {
                host_port: p.host_port?,
                container_port: p.container_port,
                protocol: p.protocol.to_ascii_lowercase(),
                host_ip: p.host_ip.clone(),
            })
        })
        .collect()
}

/// Refuses host ports peapod's embedded network cannot map: any with `--network none`
/// (the pod has loopback only, nothing to forward to), and an IPv6 `hostIP` (peapod's
/// bridge gives pods IPv4 addresses only; `portmap` would skip the mapping silently).
///
/// Errors: [`HostPortError::Unmappable`] naming the port.
pub fn check_mappable(plan: &PodPlan, network_none: bool) -> Result<(), HostPortError> {
    if plan.host_network {
        return Ok(());
    }
    for c in claims(plan) {
        if network_none {
            return Err(HostPortError::Unmappable {
                field: c.field,
                reason: "cannot be mapped with --network none: the pod has loopback only (use the default \
                         --network cni, or hostNetwork)"
                    .into(),
            });
        }
        if c.host_ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6()) {
            return Err(HostPortError::Unmappable {
                field: c.field,
                reason: format!("hostIP {:?} is IPv6: peapod's pod network is IPv4 only", c.host_ip),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{parse, plan};

    fn plan_of(spec: &str) -> Result<PodPlan, ManifestError> {
        let yaml = format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n{spec}");
        plan(&parse("p.yaml", &yaml)?, 1 << 33)
    }

    fn refused(spec: &str) -> (String, String) {
        match plan_of(spec).unwrap_err() {
            ManifestError::Field { field, reason } => (field, reason),
            e => panic!("{e}"),
        }
    }

    fn app(ports: &str) -> String {
        format!("  containers: [{{name: c, image: busybox, ports: [{ports}]}}]\n")
    }

    #[test]
    fn ports_are_checked_as_the_api_server_checks_them() {
        let cases = [
            (
                "{containerPort: 0}",
                "spec.containers[0].ports[0].containerPort",
                "required",
            ),
            (
                "{containerPort: 70000}",
                "spec.containers[0].ports[0].containerPort",
                "must be between 1 and 65535",
            ),
            (
                "{containerPort: 80, hostPort: -1}",
                "spec.containers[0].ports[0].hostPort",
                "must be between 1 and 65535",
            ),
            (
                "{containerPort: 80, hostPort: 65536}",
                "spec.containers[0].ports[0].hostPort",
                "must be between 1 and 65535",
            ),
            (
                "{containerPort: 80, protocol: tcp}",
                "spec.containers[0].ports[0].protocol",
                "\"tcp\" is not supported",
            ),
            (
                "{containerPort: 80, protocol: ICMP}",
                "spec.containers[0].ports[0].protocol",
                "\"SCTP\", \"TCP\" or \"UDP\"",
            ),
            (
                "{containerPort: 80, hostPort: 8080, hostIP: localhost}",
                "spec.containers[0].ports[0].hostIP",
                "not an IP address",
            ),
            (
                "{containerPort: 80, name: HTTP}",
                "spec.containers[0].ports[0].name",
                "alpha-numeric",
            ),
            (
                "{containerPort: 80, name: a-very-long-port-name}",
                "spec.containers[0].ports[0].name",
                "15 characters",
            ),
            (
                "{containerPort: 80, name: '8080'}",
                "spec.containers[0].ports[0].name",
                "one letter",
            ),
            (
                "{containerPort: 80, name: web--a}",
                "spec.containers[0].ports[0].name",
                "consecutive",
            ),
            (
                "{containerPort: 80, name: -web}",
                "spec.containers[0].ports[0].name",
                "begin or end",
            ),
            (
                "{containerPort: 80, name: web}, {containerPort: 81, name: web}",
                "spec.containers[0].ports[1].name",
                "unique in a container",
            ),
        ];
        for (ports, want_field, want_reason) in cases {
            let (f, reason) = refused(&app(ports));
            assert_eq!(f, want_field, "{ports}: {reason}");
            assert!(reason.contains(want_reason), "{ports}: {reason}");
        }
        let p = plan_of(&app(
            "{containerPort: 80, name: http}, {containerPort: 53, protocol: UDP, hostPort: 5353, hostIP: 192.0.2.2}, {containerPort: 9, protocol: SCTP, hostPort: 9}",
        ))
        .unwrap();
        assert_eq!(
            p.containers[0].ports,
            [
                ContainerPort {
                    name: "http".into(),
                    container_port: 80,
                    protocol: "TCP".into(),
                    host_port: None,
                    host_ip: String::new(),
                },
                ContainerPort {
                    name: String::new(),
                    container_port: 53,
                    protocol: "UDP".into(),
                    host_port: Some(5353),
                    host_ip: "192.0.2.2".into(),
                },
                ContainerPort {
                    name: String::new(),
                    container_port: 9,
                    protocol: "SCTP".into(),
                    host_port: Some(9),
                    host_ip: String::new(),
                },
            ]
        );
    }

    #[test]
    fn the_same_host_port_twice_in_a_pod_is_a_duplicate() {
        let two = "  containers:\n  - {name: a, image: busybox, ports: [{containerPort: 80, hostPort: 8080}]}\n  - {name: b, image: busybox, ports: [{containerPort: 81, hostPort: 8080}]}\n";
        let (f, reason) = refused(two);
        assert_eq!(f, "spec.containers[1].ports[0].hostPort");
        assert!(
            reason.contains("Duplicate value: \"TCP//8080\"") && reason.contains("spec.containers[0].ports[0]"),
            "{reason}"
        );
        // Another protocol, or another hostIP, is another host port (the API server's key).
        plan_of(&app(
            "{containerPort: 80, hostPort: 8080}, {containerPort: 80, protocol: UDP, hostPort: 8080}",
        ))
        .unwrap();
        plan_of(&app(
            "{containerPort: 80, hostPort: 8080, hostIP: 192.0.2.2}, {containerPort: 81, hostPort: 8080, hostIP: 192.0.2.3}",
        ))
        .unwrap();
    }

    #[test]
    fn host_network_defaults_host_ports_to_container_ports_and_refuses_others() {
        let p = plan_of(&format!("  hostNetwork: true\n{}", app("{containerPort: 8080}"))).unwrap();
        assert_eq!(p.containers[0].ports[0].host_port, Some(8080));
        assert_eq!(
            claims(&p),
            [HostPortClaim {
                field: "spec.containers[0].ports[0]".into(),
                host_ip: String::new(),
                host_port: 8080,
                protocol: "TCP".into(),
            }]
        );
        // The pod binds the host's port itself: no CNI, so any network mode will do.
        check_mappable(&p, true).unwrap();
        let (f, reason) = refused(&format!(
            "  hostNetwork: true\n{}",
            app("{containerPort: 80, hostPort: 8080}")
        ));
        assert_eq!(f, "spec.containers[0].ports[0].containerPort");
        assert!(reason.contains("must match `hostPort`"), "{reason}");
    }

    #[test]
    fn init_containers_and_sidecars_may_not_ask_for_host_ports() {
        for restart in ["", ", restartPolicy: Always"] {
            let spec = format!(
                "  initContainers: [{{name: i, image: busybox{restart}, ports: [{{containerPort: 80, hostPort: 8080}}]}}]\n  containers: [{{name: c, image: busybox}}]\n"
            );
            let (f, reason) = refused(&spec);
            assert_eq!(f, "spec.initContainers[0].ports[0].hostPort");
            assert!(reason.contains("spec.containers only"), "{reason}");
        }
        // Declaring a port without a host port is fine there.
        plan_of("  initContainers: [{name: i, image: busybox, restartPolicy: Always, ports: [{containerPort: 80}]}]\n  containers: [{name: c, image: busybox}]\n").unwrap();
    }

    #[test]
    fn port_mappings_for_cni_are_the_app_containers_host_ports() {
        let p = plan_of(
            "  initContainers: [{name: s, image: busybox, restartPolicy: Always, ports: [{containerPort: 9000}]}]\n  containers:\n  - {name: a, image: busybox, ports: [{containerPort: 80, hostPort: 8080}, {containerPort: 81}]}\n  - {name: b, image: busybox, ports: [{containerPort: 53, protocol: UDP, hostPort: 5353, hostIP: 192.0.2.2}]}\n",
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(port_mappings(&p)).unwrap(),
            serde_json::json!([
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "192.0.2.2"},
            ])
        );
        let fields: Vec<String> = claims(&p).into_iter().map(|c| c.field).collect();
        assert_eq!(fields, ["spec.containers[0].ports[0]", "spec.containers[1].ports[0]"]);
    }

    #[test]
    fn network_none_and_ipv6_host_ips_cannot_be_mapped() {
        let p = plan_of(&app("{containerPort: 80, hostPort: 8080}")).unwrap();
        check_mappable(&p, false).unwrap();
        let e = check_mappable(&p, true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.containers[0].ports[0].hostPort: cannot be mapped with --network none: the pod has loopback \
             only (use the default --network cni, or hostNetwork)"
        );
        let plain = plan_of(&app("{containerPort: 80}")).unwrap();
        check_mappable(&plain, true).unwrap();
        let v6 = plan_of(&app("{containerPort: 80, hostPort: 8080, hostIP: '::1'}")).unwrap();
        assert!(check_mappable(&v6, false).unwrap_err().to_string().contains("IPv6"));
    }

    #[test]
    fn conflicts_follow_the_schedulers_host_port_rules() {
        let claim = |ip: &str, port: u16, protocol: &str| HostPortClaim {
            field: "spec.containers[0].ports[0]".into(),
            host_ip: ip.into(),
            host_port: port,
            protocol: protocol.into(),
        };
        let any = claim("", 8080, "TCP");
        assert!(any.conflicts_with(&claim("0.0.0.0", 8080, "TCP")));
        assert!(any.conflicts_with(&claim("192.0.2.2", 8080, "TCP")));
        assert!(claim("192.0.2.2", 8080, "TCP").conflicts_with(&any));
        assert!(claim("192.0.2.2", 8080, "TCP").conflicts_with(&claim("192.0.2.2", 8080, "TCP")));
        assert!(!claim("192.0.2.2", 8080, "TCP").conflicts_with(&claim("192.0.2.3", 8080, "TCP")));
        assert!(!any.conflicts_with(&claim("", 8080, "UDP")));
        assert!(!any.conflicts_with(&claim("", 8081, "TCP")));

        let p = plan_of(&app("{containerPort: 80}, {containerPort: 80, hostPort: 8080}")).unwrap();
        let others = vec![
            ("default".to_string(), "udp".to_string(), vec![claim("", 8080, "UDP")]),
            (
                "web".to_string(),
                "first".to_string(),
                vec![claim("", 9090, "TCP"), {
                    let mut c = claim("192.0.2.2", 8080, "TCP");
                    c.field = "spec.containers[1].ports[2]".into();
                    c
                }],
            ),
        ];
        let e = check_conflicts(&p, &others).unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.containers[0].ports[1].hostPort: host port 8080/TCP on 0.0.0.0 is already held by pod \
             web/first (spec.containers[1].ports[2].hostPort)"
        );
        check_conflicts(&p, &others[..1]).unwrap();
        let plain = plan_of(&app("{containerPort: 8080}")).unwrap();
        check_conflicts(&plain, &others).unwrap();
    }

    #[test]
    fn records_of_an_earlier_peapod_read_their_ports() {
        let old: ContainerPort = serde_json::from_str(r#"["http", 80, "TCP"]"#).unwrap();
        assert_eq!(
            old,
            ContainerPort {
                name: "http".into(),
                container_port: 80,
                protocol: "TCP".into(),
                host_port: None,
                host_ip: String::new(),
            }
        );
        let new = ContainerPort {
            host_port: Some(8080),
            ..old
        };
        let back: ContainerPort = serde_json::from_str(&serde_json::to_string(&new).unwrap()).unwrap();
        assert_eq!(back, new);
    }
}
