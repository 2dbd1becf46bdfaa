//! CRI's `runtime.v1.PodSandboxConfig`, as containerd 2.x hands it to a shim that serves
//! the Sandbox API (`sandboxer = "shim"`): `CreateSandboxRequest.options` is the config
//! kubelet sent to `RunPodSandbox`, packed in an `Any` whose type URL is the message's
//! full name, [`TYPE_URL`] (containerd `internal/cri/server/sandbox_run.go`
//! `sb.WithOptions(config)`, `typeurl.MarshalAny`).
//!
//! The messages ([`crate::wire::cri_sandbox`], generated from `protos/cri_sandbox.proto`)
//! are the subset of `k8s.io/cri-api/pkg/apis/runtime/v1/api.proto` peapod reads, with
//! the same package and field numbers (the rest decodes as unknown fields). They are
//! written here rather than taken from a CRI crate so that the shim links no gRPC stack,
//! and use rust-protobuf, the protobuf runtime `containerd-shim-protos` already brings.
//!
//! [`PodSandbox::from_options`] checks the config and turns it into typed values: the
//! pause process's namespaces, hostname, sysctls and user (`sandbox::pod::PauseConfig`),
//! the pod's files (`sandbox::pod::PodFiles`: hostname, `resolv.conf`, `/dev/shm`), the
//! pod cgroup and its sizing, and the annotations. Every refusal names the field, as a
//! path from the request (`options.linux.security_context.namespace_options.pid`).
//!
//! Pod cgroup sizing follows kubelet: `linux.resources` is the sum of the containers'
//! resources without the pod overhead (`pkg/kubelet/kuberuntime/kuberuntime_sandbox_linux.go`
//! `calculateSandboxResources`, `ExcludeOverhead`), `linux.overhead` the overhead alone;
//! the pod cgroup gets both (`pkg/kubelet/cm/helpers_linux.go` `ResourceConfigForPod` adds
//! the overhead to the pod's requests and limits).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResources, LinuxResourcesBuilder};
use sandbox::pod::{Dns, PauseConfig, PauseNamespace, PodFiles};

/// The type URL containerd gives `CreateSandboxRequest.options` (the message's full name;
/// a `type.googleapis.com/` prefix is accepted too).
pub const TYPE_URL: &str = "runtime.v1.PodSandboxConfig";

/// The `/dev/shm` size containerd's CRI gives a pod, bytes (`defaultShmSize`, 64 MiB).
pub const SHM_SIZE: u64 = 64 << 20;

pub use crate::wire::cri_sandbox::{
    DNSConfig, Int64Value, LinuxContainerResources, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    NamespaceOption, PodSandboxConfig, PodSandboxMetadata, UserNamespace,
};

/// CRI's `NamespaceMode`: `POD` 0, `CONTAINER` 1, `NODE` 2, `TARGET` 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamespaceMode {
    /// The pod's own namespace, shared by its containers.
    Pod,
    /// Each container its own.
    Container,
    /// The node's.
    Node,
    /// Another container's (containers only).
    Target,
}

impl NamespaceMode {
    fn from_wire(field: &str, v: i32) -> Result<NamespaceMode, ConfigError> {
        match v {
            0 => Ok(NamespaceMode::Pod),
            1 => Ok(NamespaceMode::Container),
            2 => Ok(NamespaceMode::Node),
            3 => Ok(NamespaceMode::Target),
            other => Err(invalid(
                field,
                format!("{other} is not POD (0), CONTAINER (1), NODE (2) or TARGET (3)"),
            )),
        }
    }
}

/// A sandbox config peapod refuses. The message names the field and the cause.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `options` is not a `PodSandboxConfig`.
    #[error("options: type {type_url:?} is not {TYPE_URL}")]
    TypeUrl {
        /// The type URL given.
        type_url: String,
    },
    /// `options` does not decode.
    #[error("options: {TYPE_URL} does not decode: {cause}")]
    Decode {
        /// protobuf's error.
        cause: protobuf::Error,
    },
    /// A field holds a value peapod refuses.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, e.g. `options.linux.security_context.namespace_options.pid`.
        field: String,
        /// Why.
        reason: String,
    },
    /// A valid setting peapod does not implement.
    #[error("{field}: {what} is not supported by peapod's sandbox")]
    Unsupported {
        /// The field.
        field: String,
        /// What was asked.
        what: String,
    },
}

fn invalid(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// What a `CreateSandboxRequest` declares, checked: everything peapod builds the pod from.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSandbox {
    /// `metadata.name`, `metadata.namespace`, `metadata.uid` (empty when absent).
    pub name: String,
    /// The pod's Kubernetes namespace.
    pub namespace: String,
    /// The pod's uid.
    pub uid: String,
    /// The pause process: namespaces, hostname, sysctls, user.
    pub pause: PauseConfig,
    /// The pod's files: hostname, `resolv.conf`, hosts, `/dev/shm`.
    pub files: PodFiles,
    /// The pod cgroup (`linux.cgroup_parent`, relative to the hierarchy roots); `None`
    /// when the config names none.
    pub cgroup_parent: Option<String>,
    /// The pod cgroup's sizing: `linux.resources` plus `linux.overhead`; `None` without
    /// `linux.resources`.
    pub resources: Option<LinuxResources>,
    /// The config's annotations, then the request's (which win).
    pub annotations: HashMap<String, String>,
    /// Where kubelet wants logs (reported in the sandbox's status).
    pub log_directory: String,
}

impl PodSandbox {
    /// Decodes and checks `CreateSandboxRequest.options` (`type_url`, `value`), with the
    /// request's `netns_path` and `annotations`.
    ///
    /// Errors: [`ConfigError::TypeUrl`] / [`ConfigError::Decode`] for options that are no
    /// `PodSandboxConfig`; [`ConfigError::Invalid`] naming the field for an unknown or
    /// impossible namespace mode (`TARGET` or `CONTAINER` where the pod needs `POD` or
    /// `NODE`), a pod network without `netns_path` (or a node network with one), negative
    /// ids, a cgroup parent with `..`, sizing that overflows; [`ConfigError::Unsupported`]
    /// for a user namespace (`userns_options.mode` `POD`).
    pub fn from_options(
        type_url: &str,
        value: &[u8],
        netns_path: &str,
        annotations: &HashMap<String, String>,
    ) -> Result<PodSandbox, ConfigError> {
        let name = type_url.rsplit('/').next().unwrap_or_default();
        if name != TYPE_URL {
            return Err(ConfigError::TypeUrl {
                type_url: type_url.to_string(),
            });
        }
        let config = <PodSandboxConfig as protobuf::Message>::parse_from_bytes(value)
            .map_err(|cause| ConfigError::Decode { cause })?;
        Self::from_config(&config, netns_path, annotations)
    }

    /// [`PodSandbox::from_options`] on a decoded config.
    pub fn from_config(
        config: &PodSandboxConfig,
        netns_path: &str,
        annotations: &HashMap<String, String>,
    ) -> Result<PodSandbox, ConfigError> {
        let linux = config.linux.clone().unwrap_or_default();
        let security = linux.security_context.clone().unwrap_or_default();
        let ns = security.namespace_options.clone().unwrap_or_default();
        const NS: &str = "options.linux.security_context.namespace_options";
        let network = NamespaceMode::from_wire(&format!("{NS}.network"), ns.network)?;
        let pid = NamespaceMode::from_wire(&format!("{NS}.pid"), ns.pid)?;
        let ipc = NamespaceMode::from_wire(&format!("{NS}.ipc"), ns.ipc)?;
        if let Some(userns) = ns.userns_options.as_ref() {
            match NamespaceMode::from_wire(&format!("{NS}.userns_options.mode"), userns.mode)? {
                NamespaceMode::Node => {}
                NamespaceMode::Pod => {
                    return Err(ConfigError::Unsupported {
                        field: format!("{NS}.userns_options.mode"),
                        what: "a user namespace (POD)".into(),
                    })
                }
                other => {
                    return Err(invalid(
                        &format!("{NS}.userns_options.mode"),
                        format!("{other:?} is not POD or NODE"),
                    ))
                }
            }
        }
        // containerd's podsandbox: the network namespace is CNI's (POD) or the node's, and
        // a node network means the node's UTS namespace too.
        let (net, uts) = match network {
            NamespaceMode::Pod => {
                if netns_path.is_empty() {
                    return Err(invalid(
                        "netns_path",
                        format!("empty, but {NS}.network is POD: containerd sets up the pod network first"),
                    ));
                }
                if !netns_path.starts_with('/') {
                    return Err(invalid("netns_path", format!("{netns_path:?} is not absolute")));
                }
                (PauseNamespace::Path(PathBuf::from(netns_path)), PauseNamespace::New)
            }
            NamespaceMode::Node => {
                if !netns_path.is_empty() {
                    return Err(invalid(
                        "netns_path",
                        format!("{netns_path:?} given, but {NS}.network is NODE"),
                    ));
                }
                (PauseNamespace::Host, PauseNamespace::Host)
            }
            other => {
                return Err(invalid(
                    &format!("{NS}.network"),
                    format!("{other:?} is not POD or NODE"),
                ))
            }
        };
        // The pause gets a pid namespace of its own unless the pod uses the node's; with
        // CONTAINER the containers simply do not join it (CRI decides that).
        let pid_ns = match pid {
            NamespaceMode::Pod | NamespaceMode::Container => PauseNamespace::New,
            NamespaceMode::Node => PauseNamespace::Host,
            NamespaceMode::Target => {
                return Err(invalid(
                    &format!("{NS}.pid"),
                    "TARGET is for containers, not a pod sandbox",
                ))
            }
        };
        let ipc_ns = match ipc {
            NamespaceMode::Pod => PauseNamespace::New,
            NamespaceMode::Node => PauseNamespace::Host,
            other => return Err(invalid(&format!("{NS}.ipc"), format!("{other:?} is not POD or NODE"))),
        };
        let id = |field: &str, v: i64| -> Result<u32, ConfigError> {
            u32::try_from(v).map_err(|_| invalid(field, format!("{v} is not a uid/gid (0..=4294967295)")))
        };
        const SC: &str = "options.linux.security_context";
        let uid = security
            .run_as_user
            .as_ref()
            .map(|v| id(&format!("{SC}.run_as_user"), v.value))
            .transpose()?
            .unwrap_or(0);
        let gid = security
            .run_as_group
            .as_ref()
            .map(|v| id(&format!("{SC}.run_as_group"), v.value))
            .transpose()?
            .unwrap_or(0);
        let groups = security
            .supplemental_groups
            .iter()
            .enumerate()
            .map(|(i, g)| id(&format!("{SC}.supplemental_groups[{i}]"), *g))
            .collect::<Result<Vec<u32>, _>>()?;
        let mut sysctls: BTreeMap<String, String> = linux.sysctls.clone().into_iter().collect();
        for key in sysctls.keys() {
            // Written below /proc/sys with dots as slashes: no empty or `..` component.
            if key.split(['.', '/']).any(|c| c.is_empty() || c == "..") {
                return Err(invalid(&format!("options.linux.sysctls[{key:?}]"), "not a sysctl name"));
            }
        }
        if network != NamespaceMode::Node {
            // containerd 2.x's defaults (`enable_unprivileged_ports`, `enable_unprivileged_icmp`,
            // both true) for a pod network, unless the pod sets them.
            sysctls
                .entry("net.ipv4.ip_unprivileged_port_start".into())
                .or_insert_with(|| "0".into());
            sysctls
                .entry("net.ipv4.ping_group_range".into())
                .or_insert_with(|| "0 2147483647".into());
        }
        // The pod's hostname applies only in a UTS namespace of its own (a node network
        // keeps the node's, which must not be renamed).
        let hostname = if uts == PauseNamespace::New {
            Some(config.hostname.clone()).filter(|h| !h.is_empty())
        } else {
            None
        };
        if let Some(h) = &hostname {
            if h.len() > 64 || h.contains(['/', '\0', '\n']) {
                return Err(invalid("options.hostname", format!("{h:?} is not a hostname")));
            }
        }
        let pause = PauseConfig {
            hostname: hostname.clone(),
            network: net,
            uts,
            ipc: ipc_ns,
            pid: pid_ns,
            sysctls,
            uid,
            gid,
            groups,
        };
        let files = PodFiles {
            hostname: hostname.unwrap_or_default(),
            dns: config.dns_config.as_ref().map(|d| Dns {
                servers: d.servers.clone(),
                searches: d.searches.clone(),
                options: d.options.clone(),
            }),
            shm_size: (ipc == NamespaceMode::Pod).then_some(SHM_SIZE),
        };
        let cgroup_parent = Some(linux.cgroup_parent.trim_matches('/'))
            .filter(|p| !p.is_empty())
            .map(str::to_string);
        if let Some(p) = &cgroup_parent {
            if p.split('/').any(|c| c == ".." || c == ".") || (p.split(':').count() == 3 && !p.contains('/')) {
                return Err(invalid(
                    "options.linux.cgroup_parent",
                    format!(
                        "{:?} is not a cgroupfs path below the root (peapod uses the cgroupfs driver)",
                        linux.cgroup_parent
                    ),
                ));
            }
        }
        let resources = linux
            .resources
            .as_ref()
            .map(|r| pod_resources(r, linux.overhead.as_ref()))
            .transpose()?;
        let mut ann = config.annotations.clone();
        ann.extend(annotations.iter().map(|(k, v)| (k.clone(), v.clone())));
        let meta = config.metadata.clone().unwrap_or_default();
        Ok(PodSandbox {
            name: meta.name,
            namespace: meta.namespace,
            uid: meta.uid,
            pause,
            files,
            cgroup_parent,
            resources,
            annotations: ann,
            log_directory: config.log_directory.clone(),
        })
    }
}

/// The pod cgroup's resources: `res` plus `overhead` (see the module docs). CPU shares and
/// the CFS quota add up (at `res`'s period, else the overhead's, else kubelet's 100 ms);
/// memory limits add up. A value ≤ 0 in `res` means no limit (and stays none); one ≤ 0 in
/// `overhead` adds nothing. Swap is not limited here (kubelet does not limit a pod's swap).
///
/// Errors: [`ConfigError::Invalid`] naming the field when a sum overflows `i64`.
pub fn pod_resources(
    res: &LinuxContainerResources,
    overhead: Option<&LinuxContainerResources>,
) -> Result<LinuxResources, ConfigError> {
    let o = overhead.cloned().unwrap_or_default();
    let add = |field: &'static str, a: i64, b: i64| -> Result<i64, ConfigError> {
        a.checked_add(b.max(0)).ok_or_else(|| {
            invalid(
                &format!("options.linux.resources.{field}"),
                format!("{a} plus the overhead's {b} overflows"),
            )
        })
    };
    let mut cpu = LinuxCpuBuilder::default();
    if res.cpu_shares > 0 {
        let shares = add("cpu_shares", res.cpu_shares, o.cpu_shares)?;
        cpu = cpu.shares(u64::try_from(shares).unwrap_or(u64::MAX));
    }
    if res.cpu_quota > 0 {
        let period = [res.cpu_period, o.cpu_period]
            .into_iter()
            .find(|p| *p > 0)
            .map_or(crate::kube::CPU_PERIOD_US, |p| {
                u64::try_from(p).unwrap_or(crate::kube::CPU_PERIOD_US)
            });
        cpu = cpu.quota(add("cpu_quota", res.cpu_quota, o.cpu_quota)?).period(period);
    }
    let mut b = LinuxResourcesBuilder::default().cpu(cpu.build().expect("all fields set"));
    if res.memory_limit_in_bytes > 0 {
        let m = add(
            "memory_limit_in_bytes",
            res.memory_limit_in_bytes,
            o.memory_limit_in_bytes,
        )?;
        b = b.memory(LinuxMemoryBuilder::default().limit(m).build().expect("all fields set"));
    }
    Ok(b.build().expect("all fields set"))
}

#[cfg(test)]
mod tests {
    use protobuf::{Message, MessageField};

    use super::*;

    fn config(ns: NamespaceOption) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: MessageField::some(PodSandboxMetadata {
                name: "web".into(),
                uid: "u1".into(),
                namespace: "default".into(),
                attempt: 0,
                ..Default::default()
            }),
            hostname: "web-0".into(),
            dns_config: MessageField::some(DNSConfig {
                servers: vec!["10.0.0.10".into()],
                searches: vec!["default.svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
                ..Default::default()
            }),
            annotations: [("io.peapod.grace-period".to_string(), "3".to_string())].into(),
            linux: MessageField::some(LinuxPodSandboxConfig {
                cgroup_parent: "/kubepods/burstable/podu1".into(),
                security_context: MessageField::some(LinuxSandboxSecurityContext {
                    namespace_options: MessageField::some(ns),
                    ..Default::default()
                }),
                sysctls: [("net.ipv4.ip_unprivileged_port_start".to_string(), "80".to_string())].into(),
                overhead: MessageField::some(LinuxContainerResources {
                    cpu_period: 100_000,
                    cpu_quota: 10_000,
                    cpu_shares: 102,
                    memory_limit_in_bytes: 32 << 20,
                    ..Default::default()
                }),
                resources: MessageField::some(LinuxContainerResources {
                    cpu_period: 100_000,
                    cpu_quota: 50_000,
                    cpu_shares: 512,
                    memory_limit_in_bytes: 128 << 20,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn decode(c: &PodSandboxConfig, netns: &str) -> Result<PodSandbox, ConfigError> {
        PodSandbox::from_options(TYPE_URL, &c.write_to_bytes().unwrap(), netns, &HashMap::new())
    }

    #[test]
    fn a_kubelet_config_becomes_the_pause_files_and_pod_cgroup() {
        let ns = NamespaceOption {
            pid: 0,
            ..Default::default()
        };
        let p = decode(&config(ns), "/var/run/netns/cni-1").unwrap();
        assert_eq!((p.name.as_str(), p.uid.as_str()), ("web", "u1"));
        assert_eq!(p.pause.network, PauseNamespace::Path("/var/run/netns/cni-1".into()));
        assert_eq!(
            (p.pause.uts.clone(), p.pause.ipc.clone(), p.pause.pid.clone()),
            (PauseNamespace::New, PauseNamespace::New, PauseNamespace::New)
        );
        assert_eq!(p.pause.hostname.as_deref(), Some("web-0"));
        // The pod's own sysctl wins over containerd's default; the other default is added.
        assert_eq!(p.pause.sysctls["net.ipv4.ip_unprivileged_port_start"], "80");
        assert_eq!(p.pause.sysctls["net.ipv4.ping_group_range"], "0 2147483647");
        assert_eq!(p.files.shm_size, Some(SHM_SIZE));
        assert_eq!(p.files.dns.as_ref().unwrap().options, ["ndots:5"]);
        assert_eq!(p.cgroup_parent.as_deref(), Some("kubepods/burstable/podu1"));
        let r = p.resources.unwrap();
        let cpu = r.cpu().clone().unwrap();
        assert_eq!(
            (cpu.shares(), cpu.quota(), cpu.period()),
            (Some(614), Some(60_000), Some(100_000))
        );
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(160 << 20));
        assert_eq!(p.annotations["io.peapod.grace-period"], "3");
    }

    #[test]
    fn node_namespaces_keep_the_nodes_uts_and_hostname() {
        let ns = NamespaceOption {
            network: 2,
            pid: 2,
            ipc: 2,
            ..Default::default()
        };
        let p = decode(&config(ns), "").unwrap();
        assert_eq!(
            (p.pause.network, p.pause.uts, p.pause.ipc, p.pause.pid),
            (
                PauseNamespace::Host,
                PauseNamespace::Host,
                PauseNamespace::Host,
                PauseNamespace::Host
            )
        );
        assert_eq!(p.pause.hostname, None, "the node's hostname is not set again");
        assert_eq!(p.files.shm_size, None, "the node's /dev/shm");
        assert!(!p.pause.sysctls.contains_key("net.ipv4.ping_group_range"));
    }

    #[test]
    fn unlimited_resources_stay_unlimited_with_overhead() {
        let res = LinuxContainerResources {
            cpu_shares: 2,
            ..Default::default()
        };
        let o = LinuxContainerResources {
            cpu_quota: 10_000,
            memory_limit_in_bytes: 1 << 20,
            cpu_shares: 10,
            ..Default::default()
        };
        let r = pod_resources(&res, Some(&o)).unwrap();
        assert_eq!(r.cpu().as_ref().unwrap().quota(), None);
        assert_eq!(r.cpu().as_ref().unwrap().shares(), Some(12));
        assert!(r.memory().is_none());
        let big = LinuxContainerResources {
            memory_limit_in_bytes: i64::MAX,
            ..Default::default()
        };
        let e = pod_resources(&big, Some(&o)).unwrap_err().to_string();
        assert!(
            e.contains("options.linux.resources.memory_limit_in_bytes") && e.contains("overflows"),
            "{e}"
        );
    }

    #[test]
    fn bad_configs_are_refused_naming_the_field() {
        let err = |ns: NamespaceOption, netns: &str| decode(&config(ns), netns).unwrap_err();
        let e = err(
            NamespaceOption {
                pid: 9,
                ..Default::default()
            },
            "/n",
        );
        assert!(
            e.to_string()
                .starts_with("options.linux.security_context.namespace_options.pid: 9 is not POD"),
            "{e}"
        );
        let e = err(
            NamespaceOption {
                pid: 3,
                ..Default::default()
            },
            "/n",
        );
        assert!(e.to_string().contains("TARGET is for containers"), "{e}");
        let e = err(NamespaceOption::default(), "");
        assert!(e.to_string().starts_with("netns_path: empty"), "{e}");
        let e = err(
            NamespaceOption {
                network: 2,
                ..Default::default()
            },
            "/var/run/netns/x",
        );
        assert!(e.to_string().contains("network is NODE"), "{e}");
        let e = err(
            NamespaceOption {
                userns_options: MessageField::some(UserNamespace::default()),
                ..Default::default()
            },
            "/n",
        );
        assert!(matches!(e, ConfigError::Unsupported { .. }), "{e}");
        assert!(e.to_string().contains("userns_options.mode"), "{e}");

        let mut c = config(NamespaceOption::default());
        c.linux.as_mut().unwrap().security_context.as_mut().unwrap().run_as_user = MessageField::some(Int64Value {
            value: -1,
            ..Default::default()
        });
        let e = decode(&c, "/n").unwrap_err().to_string();
        assert!(e.contains("run_as_user: -1"), "{e}");
        c.linux.as_mut().unwrap().cgroup_parent = "/kubepods/../etc".into();
        c.linux.as_mut().unwrap().security_context = MessageField::none();
        let e = decode(&c, "/n").unwrap_err().to_string();
        assert!(e.starts_with("options.linux.cgroup_parent"), "{e}");

        let e = PodSandbox::from_options("runtime.v1.ContainerConfig", &[], "/n", &HashMap::new()).unwrap_err();
        assert!(matches!(e, ConfigError::TypeUrl { .. }), "{e}");
        let e = PodSandbox::from_options(TYPE_URL, &[0xff, 0xff], "/n", &HashMap::new()).unwrap_err();
        assert!(matches!(e, ConfigError::Decode { .. }), "{e}");
        // Google's prefix is accepted.
        let ok = PodSandbox::from_options(
            &format!("type.googleapis.com/{TYPE_URL}"),
            &config(NamespaceOption::default()).write_to_bytes().unwrap(),
            "/n",
            &[("io.peapod.grace-period".to_string(), "9".to_string())].into(),
        )
        .unwrap();
        assert_eq!(
            ok.annotations["io.peapod.grace-period"], "9",
            "the request's annotations win"
        );
    }
}
