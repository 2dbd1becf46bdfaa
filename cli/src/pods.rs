//! OCI specs for a pod's sandbox and containers, from a [`PodPlan`]: what the `peapod`
//! CLI writes into bundles before handing them to the shim (embedded mode), doing the
//! part of kubelet's and containerd CRI's work that turns a Pod into OCI bundles.
//!
//! - The sandbox runs `peapod-pause` with new network, IPC, UTS, pid, mount and cgroup
//!   namespaces (the host's network with `hostNetwork`); containers join its network,
//!   IPC and UTS namespaces, and its pid namespace with `shareProcessNamespace`.
//! - cgroups: `peapod/pod-<uid>/<container>`, the pod cgroup `peapod/pod-<uid>` sized by
//!   the shim from the sandbox's annotations.
//! - Process: Kubernetes' command/args over the image's entrypoint/cmd, image env then
//!   the manifest's (downward API resolved), securityContext, kubelet's `oom_score_adj`
//!   raised to 0 where this kernel refuses lowering it (with a warning).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Capability, LinuxNamespaceBuilder, LinuxNamespaceType, MountBuilder, Spec, UserBuilder};
use proto::annotations;

use crate::manifest::{ContainerPlan, EnvValue, ManifestError, PodPlan, VolumeKind, SANDBOX_OOM_SCORE_ADJ};
use crate::security::{self, SecurityError};

/// A [`SecurityError`] as the manifest error of the field it names.
fn security_field(e: SecurityError) -> ManifestError {
    let field = e.field().to_string();
    let chain = sandbox::error::chain(&e);
    ManifestError::Field {
        reason: chain.strip_prefix(&format!("{field}: ")).unwrap_or(&chain).to_string(),
        field,
    }
}

/// What the pod's containers need from their images.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env` (`KEY=value`).
    pub env: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: String,
    /// `User`: `uid[:gid]` (names other than `root` are refused).
    pub user: String,
}

/// Values known once the pod runs, for the downward API.
#[derive(Debug, Clone, Default)]
pub struct PodRuntime {
    /// `metadata.uid`.
    pub uid: String,
    /// The sandbox task id.
    pub sandbox_id: String,
    /// Host pid of the pause process (its namespaces are joined).
    pub pause_pid: i32,
    /// The pod IP (`status.podIP`), empty without one.
    pub ip: String,
    /// Lowering `oom_score_adj` below 0 is refused here (EACCES): clamp to 0.
    pub clamp_oom_score_adj: bool,
    /// Where Localhost seccomp profiles are (kubelet's `/var/lib/kubelet/seccomp`).
    pub seccomp_root: PathBuf,
    /// Where sysfs is (`/sys`): whether AppArmor is on, which profiles are loaded.
    pub sys_root: PathBuf,
    /// The pod's volume directory: its configMap, secret, downwardAPI and projected
    /// volumes are below ([`crate::volumes::volume_dir`]).
    pub volumes_dir: PathBuf,
}

/// True when this process may lower its `oom_score_adj` (probed by trying -1, then
/// restoring); these VMs refuse it with EACCES even to root.
pub fn can_lower_oom_score_adj() -> bool {
    let path = "/proc/self/oom_score_adj";
    let before = std::fs::read_to_string(path).unwrap_or_else(|_| "0".into());
    let ok = std::fs::write(path, "-1").is_ok();
    let _ = std::fs::write(path, before.trim());
    ok
}

/// kubelet's `oom_score_adj`, raised to 0 where this kernel refuses lowering it (the
/// runner tells the user, see [`clamp_warnings`]).
fn clamp(adj: i32, rt: &PodRuntime) -> i32 {
    if adj < 0 && rt.clamp_oom_score_adj {
        0
    } else {
        adj
    }
}

/// One warning per process of the pod whose `oom_score_adj` [`container_spec`] and
/// [`sandbox_spec`] raise to 0 (empty when the kernel allows lowering it).
pub fn clamp_warnings(plan: &PodPlan, rt: &PodRuntime) -> Vec<String> {
    if !rt.clamp_oom_score_adj {
        return Vec::new();
    }
    std::iter::once(("sandbox", SANDBOX_OOM_SCORE_ADJ))
        .chain(plan.containers.iter().map(|c| (c.name.as_str(), c.oom_score_adj)))
        .filter(|(_, adj)| *adj < 0)
        .map(|(who, adj)| {
            format!("warning: {who}: oom_score_adj {adj} raised to 0: this kernel refuses lowering it (EACCES)")
        })
        .collect()
}

fn ns(typ: LinuxNamespaceType, path: Option<String>) -> oci_spec::runtime::LinuxNamespace {
    let b = LinuxNamespaceBuilder::default().typ(typ);
    match path {
        Some(p) => b.path(p).build(),
        None => b.build(),
    }
    .expect("all fields set")
}

/// The pod cgroup (relative): `peapod/pod-<uid>`.
pub fn pod_cgroup(uid: &str) -> String {
    format!("peapod/pod-{uid}")
}

/// The sandbox's spec: `/pause` from a rootfs holding only its mount point (see
/// `sandbox::pod::prepare_pause_root`), with the static binary `pause` bind-mounted
/// read-only on it, as the shim's own pause is (never a copy: a copy's write fd, inherited
/// by a child another thread forks at that moment, makes the exec fail with ETXTBSY), the pod's
/// sysctls and its pod-level seccomp profile (none when a container is privileged, as
/// kubelet then marks the sandbox privileged and containerd applies none).
///
/// Errors: a Localhost seccomp profile that cannot be read, naming its field.
pub fn sandbox_spec(plan: &PodPlan, rt: &PodRuntime, pause: &Path) -> Result<Spec, ManifestError> {
    let mut spec = sandbox::spec::default_spec(&["/pause"]);
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.push(sandbox::pod::pause_binary_mount(pause));
    spec.set_mounts(Some(mounts));
    spec.set_hostname(Some(plan.hostname.clone()));
    if let Some(root) = spec.root_mut() {
        root.set_readonly(Some(true));
    }
    let mut a: HashMap<String, String> = plan.sandbox_annotations();
    a.insert(
        annotations::CONTAINER_TYPE.into(),
        annotations::CONTAINER_TYPE_SANDBOX.into(),
    );
    a.insert(annotations::SANDBOX_ID.into(), rt.sandbox_id.clone());
    // No kubelet here: the shim restarts containers by the pod's policy.
    a.insert(annotations::RESTART_POLICY.into(), plan.restart_policy.clone());
    spec.set_annotations(Some(a));
    if let Some(p) = spec.process_mut() {
        p.set_oom_score_adj(Some(clamp(SANDBOX_OOM_SCORE_ADJ, rt)));
    }
    if let Some(linux) = spec.linux_mut() {
        linux.set_cgroups_path(Some(format!("/{}/sandbox", pod_cgroup(&rt.uid)).into()));
        let mut list = vec![
            ns(LinuxNamespaceType::Pid, None),
            ns(LinuxNamespaceType::Ipc, None),
            ns(LinuxNamespaceType::Uts, None),
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::Cgroup, None),
        ];
        if !plan.host_network {
            list.push(ns(LinuxNamespaceType::Network, None));
        }
        linux.set_namespaces(Some(list));
        // containerd puts the sandbox config's sysctls in the sandbox's spec only; the
        // containers share its network and ipc namespaces.
        if !plan.sysctls.is_empty() {
            linux.set_sysctl(Some(plan.sysctls.clone().into_iter().collect()));
        }
    }
    let privileged = plan.containers.iter().any(|c| c.security.privileged);
    let bounding = bounding_set(&spec);
    let filter = security::seccomp(&plan.seccomp, privileged, &bounding, &rt.seccomp_root).map_err(security_field)?;
    if let Some(linux) = spec.linux_mut() {
        linux.set_seccomp(filter);
    }
    Ok(spec)
}

/// Checks the pod's profiles before anything is created: every Localhost seccomp profile
/// (the pod's, for the sandbox, and each non-privileged container's) is read and parsed
/// under `seccomp_root`; with `apparmor`, each container's AppArmor choice is checked
/// against the kernel under `sys_root` (embedded mode; under CRI the runtime decides).
///
/// Errors: the first profile that cannot be used, naming its field and file.
pub fn check_profiles(
    plan: &PodPlan,
    seccomp_root: &Path,
    sys_root: &Path,
    apparmor: bool,
) -> Result<(), ManifestError> {
    let none = HashSet::new();
    let privileged = plan.containers.iter().any(|c| c.security.privileged);
    security::seccomp(&plan.seccomp, privileged, &none, seccomp_root).map_err(security_field)?;
    for c in &plan.containers {
        security::seccomp(&c.security.seccomp, c.security.privileged, &none, seccomp_root).map_err(security_field)?;
        if apparmor {
            security::apparmor_profile(c.security.apparmor.as_ref(), c.security.privileged, sys_root)
                .map_err(security_field)?;
        }
    }
    Ok(())
}

/// The bounding capabilities of `spec`'s process (what containerd's `DefaultProfile`
/// keys on).
fn bounding_set(spec: &Spec) -> HashSet<Capability> {
    spec.process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref())
        .and_then(|c| c.bounding().clone())
        .unwrap_or_default()
}

/// A container's spec.
///
/// Volumes: hostPath ones bind-mounted as asked, configMap, secret, downwardAPI and
/// projected ones bind-mounted read-only from `rt.volumes_dir`; emptyDirs are the shim's
/// (from the container's annotations).
///
/// Errors: a user name the CLI cannot resolve, `runAsNonRoot` with a root user, or a
/// subPath on an emptyDir or a populated volume (not supported yet), each naming the field.
pub fn container_spec(
    plan: &PodPlan,
    c: &ContainerPlan,
    image: &ImageConfig,
    rt: &PodRuntime,
) -> Result<Spec, ManifestError> {
    let path = |f: &str| format!("container {:?}: {f}", c.name);
    let args: Vec<String> = match (&c.command, &c.args) {
        (Some(cmd), args) => cmd.iter().chain(args.iter().flatten()).cloned().collect(),
        (None, Some(args)) => image.entrypoint.iter().chain(args).cloned().collect(),
        (None, None) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
    };
    if args.is_empty() {
        return Err(ManifestError::Field {
            field: path("command"),
            reason: "neither the manifest nor the image says what to run".into(),
        });
    }
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut spec = sandbox::spec::default_spec(&arg_refs);
    spec.set_hostname(Some(plan.hostname.clone()));

    let mut env: Vec<String> = image.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={}", sandbox::spec::DEFAULT_PATH));
    }
    env.push(format!("HOSTNAME={}", plan.hostname));
    for (name, value) in &c.env {
        let v = env_value(plan, name, value, &rt.uid, &rt.ip)?;
        env.retain(|e| e.split_once('=').map(|(k, _)| k) != Some(name.as_str()));
        env.push(format!("{name}={v}"));
    }

    let (image_uid, image_gid) = parse_user(&image.user).map_err(|reason| ManifestError::Field {
        field: path("image User"),
        reason,
    })?;
    let uid = c.security.run_as_user.unwrap_or(image_uid);
    let gid = c.security.run_as_group.unwrap_or(image_gid);
    if c.security.run_as_non_root && uid == 0 {
        return Err(ManifestError::Field {
            field: path("securityContext.runAsNonRoot"),
            reason: "the container would run as root (uid 0): set runAsUser".into(),
        });
    }

    let mut caps: HashSet<Capability> = sandbox::spec::DEFAULT_CAPS.into_iter().collect();
    if c.security.privileged || c.security.capabilities_add.iter().any(|a| a == "ALL") {
        caps = all_capabilities();
    }
    // Drop first, then add: an added capability survives `drop: [ALL]`, as with the
    // Kubernetes runtimes.
    if !c.security.privileged {
        for drop in &c.security.capabilities_drop {
            if drop == "ALL" {
                caps.clear();
            } else if let Ok(cap) = drop.trim_start_matches("CAP_").parse::<Capability>() {
                caps.remove(&cap);
            }
        }
    }
    for add in &c.security.capabilities_add {
        if let Ok(cap) = add.trim_start_matches("CAP_").parse::<Capability>() {
            caps.insert(cap);
        }
    }
    if let Some(p) = spec.process_mut() {
        p.set_env(Some(env));
        let cwd = c
            .working_dir
            .clone()
            .or_else(|| Some(image.working_dir.clone()).filter(|w| !w.is_empty()));
        p.set_cwd(cwd.unwrap_or_else(|| "/".into()).into());
        let mut user = UserBuilder::default().uid(uid).gid(gid);
        if !c.security.supplemental_groups.is_empty() {
            user = user.additional_gids(c.security.supplemental_groups.clone());
        }
        p.set_user(user.build().expect("all fields set"));
        p.set_no_new_privileges(Some(!c.security.allow_privilege_escalation));
        p.set_terminal(Some(c.tty));
        p.set_oom_score_adj(Some(clamp(c.oom_score_adj, rt)));
        p.set_capabilities(Some(sandbox::spec::capabilities(caps.clone())));
        p.set_apparmor_profile(
            security::apparmor_profile(c.security.apparmor.as_ref(), c.security.privileged, &rt.sys_root)
                .map_err(security_field)?,
        );
    }
    let filter = security::seccomp(&c.security.seccomp, c.security.privileged, &caps, &rt.seccomp_root)
        .map_err(security_field)?;
    if let Some(root) = spec.root_mut() {
        root.set_readonly(Some(c.security.read_only_root_filesystem));
    }

    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for m in &c.mounts {
        match plan.volumes.get(&m.volume) {
            Some(VolumeKind::HostPath { path: host, .. }) => {
                let source = match &m.sub_path {
                    Some(sub) => Path::new(host).join(sub),
                    None => Path::new(host).to_path_buf(),
                };
                let mut opts = vec!["rbind".to_string(), "rprivate".to_string()];
                opts.push(if m.read_only { "ro" } else { "rw" }.into());
                mounts.push(
                    MountBuilder::default()
                        .destination(&m.path)
                        .typ("bind")
                        .source(source)
                        .options(opts)
                        .build()
                        .expect("all fields set"),
                );
            }
            Some(VolumeKind::Populated(v)) => {
                if m.sub_path.is_some() {
                    return Err(ManifestError::Field {
                        field: path(&format!("volumeMounts[{}].subPath", m.volume)),
                        reason: "subPath on a configMap, secret, downwardAPI or projected volume is not supported by peapod yet".into(),
                    });
                }
                // Read-only whatever the manifest says, as kubelet's makeMounts
                // (CVE-2017-1002102: the kubelet's writes must not meet a container's).
                mounts.push(
                    MountBuilder::default()
                        .destination(&m.path)
                        .typ("bind")
                        .source(crate::volumes::volume_dir(&rt.volumes_dir, v.plugin, &m.volume))
                        .options(vec!["rbind".to_string(), "rprivate".to_string(), "ro".to_string()])
                        .build()
                        .expect("all fields set"),
                );
            }
            Some(VolumeKind::EmptyDir(_)) if m.sub_path.is_some() => {
                return Err(ManifestError::Field {
                    field: path(&format!("volumeMounts[{}].subPath", m.volume)),
                    reason: "subPath on an emptyDir is not supported by peapod yet".into(),
                })
            }
            // emptyDirs: mounted by the shim from the container's annotations.
            _ => {}
        }
    }
    spec.set_mounts(Some(mounts));

    let mut a = plan.container_annotations(c);
    a.insert(
        annotations::CONTAINER_TYPE.into(),
        annotations::CONTAINER_TYPE_CONTAINER.into(),
    );
    a.insert(annotations::SANDBOX_ID.into(), rt.sandbox_id.clone());
    if !c.hooks.is_empty() {
        let hooks = crate::probes::hooks_with_pod_ip(&c.hooks, &rt.ip);
        a.insert(
            annotations::HOOKS.into(),
            serde_json::to_string(&hooks).expect("hooks encode as JSON"),
        );
    }
    if !c.probes.is_empty() {
        let probes = crate::probes::with_pod_ip(&c.probes, &rt.ip);
        a.insert(
            annotations::PROBES.into(),
            serde_json::to_string(&probes).expect("probes encode as JSON"),
        );
    }
    spec.set_annotations(Some(a));

    if let Some(linux) = spec.linux_mut() {
        linux.set_cgroups_path(Some(format!("/{}/{}", pod_cgroup(&rt.uid), c.name).into()));
        let r = c.resources;
        let mut res = proto::kube::resources(r.cpu_request, r.cpu_limit, r.memory_limit);
        // Keep the default spec's device rules (containerd's deny-all).
        res.set_devices(linux.resources().as_ref().and_then(|d| d.devices().clone()));
        linux.set_resources(Some(res));
        let pause = |n: &str| Some(format!("/proc/{}/ns/{n}", rt.pause_pid));
        let mut list = vec![
            ns(LinuxNamespaceType::Ipc, pause("ipc")),
            ns(LinuxNamespaceType::Uts, pause("uts")),
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::Cgroup, None),
        ];
        list.push(ns(
            LinuxNamespaceType::Pid,
            if plan.share_process_namespace {
                pause("pid")
            } else {
                None
            },
        ));
        if !plan.host_network {
            list.push(ns(LinuxNamespaceType::Network, pause("net")));
        }
        linux.set_namespaces(Some(list));
        if c.security.privileged {
            linux.set_masked_paths(None);
            linux.set_readonly_paths(None);
        }
        linux.set_seccomp(filter);
    }
    Ok(spec)
}

/// The value of an `env` entry: a literal, or the downward API's `metadata.name`,
/// `metadata.namespace`, `metadata.uid` or `status.podIP` (the only fields the manifest
/// accepts).
///
/// Errors: [`ManifestError::Field`] for a ConfigMap or Secret reference that
/// [`crate::config::resolve_env`] has not resolved (a plan must be resolved before it runs).
pub fn env_value(plan: &PodPlan, name: &str, value: &EnvValue, uid: &str, ip: &str) -> Result<String, ManifestError> {
    Ok(match value {
        EnvValue::Literal(v) => v.clone(),
        EnvValue::Field(f) => match f.as_str() {
            "metadata.name" => plan.name.clone(),
            "metadata.namespace" => plan.namespace.clone(),
            "metadata.uid" => uid.to_string(),
            _ => ip.to_string(),
        },
        EnvValue::Key { .. } => {
            return Err(ManifestError::Field {
                field: format!("env {name}"),
                reason: "a ConfigMap or Secret reference was not resolved before the pod ran".into(),
            })
        }
    })
}

/// What `privileged` and `add: [ALL]` grant: every capability this process has, as
/// containerd's `oci.WithAllCurrentCapabilities` (`cap.Current()`, the effective set) —
/// not every capability the kernel knows, which capset refuses where the CLI's own
/// bounding set lacks one (a host without CAP_SYS_RESOURCE).
fn all_capabilities() -> HashSet<Capability> {
    caps::read(None, caps::CapSet::Effective)
        .unwrap_or_else(|_| caps::all())
        .into_iter()
        .filter_map(|c| c.to_string().trim_start_matches("CAP_").parse::<Capability>().ok())
        .collect()
}

/// `uid[:gid]` from an image's `User`; empty means root. Names other than `root` are
/// refused (the CLI does not read the image's /etc/passwd yet).
fn parse_user(user: &str) -> Result<(u32, u32), String> {
    if user.is_empty() || user == "root" {
        return Ok((0, 0));
    }
    let (u, g) = user.split_once(':').unwrap_or((user, ""));
    let uid = u
        .parse::<u32>()
        .map_err(|_| format!("user {u:?}: only numeric ids are supported"))?;
    let gid = if g.is_empty() {
        uid
    } else {
        g.parse::<u32>()
            .map_err(|_| format!("group {g:?}: only numeric ids are supported"))?
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{parse, plan};

    fn rt() -> PodRuntime {
        PodRuntime {
            uid: "u1".into(),
            sandbox_id: "default_web".into(),
            pause_pid: 4242,
            ip: "10.0.0.7".into(),
            clamp_oom_score_adj: true,
            seccomp_root: "/nonexistent".into(),
            sys_root: "/nonexistent".into(),
            volumes_dir: "/var/lib/peapod/pods/default_web/volumes".into(),
        }
    }

    fn web() -> PodPlan {
        let yaml = r#"
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  shareProcessNamespace: true
  containers:
  - name: app
    image: busybox
    args: ["-c", "echo hi"]
    env:
    - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    resources: {limits: {cpu: 500m, memory: 64Mi}}
    securityContext: {runAsUser: 1000, allowPrivilegeEscalation: false, capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}}
"#;
        plan(&parse("t", yaml).unwrap(), 8 << 30).unwrap()
    }

    #[test]
    fn container_spec_follows_kubernetes_rules() {
        let p = web();
        let image = ImageConfig {
            entrypoint: vec!["/bin/sh".into()],
            cmd: vec!["-c".into(), "default".into()],
            env: vec!["PATH=/bin".into(), "POD=image".into()],
            ..Default::default()
        };
        let spec = container_spec(&p, &p.containers[0], &image, &rt()).unwrap();
        let proc = spec.process().as_ref().unwrap();
        // args replace the image's cmd, keep its entrypoint.
        assert_eq!(proc.args().as_ref().unwrap(), &["/bin/sh", "-c", "echo hi"]);
        let env = proc.env().as_ref().unwrap();
        assert!(
            env.contains(&"POD=web".to_string()) && !env.contains(&"POD=image".to_string()),
            "{env:?}"
        );
        assert!(env.contains(&"IP=10.0.0.7".to_string()));
        assert_eq!(proc.user().uid(), 1000);
        assert_eq!(proc.no_new_privileges(), Some(true));
        let eff = proc.capabilities().as_ref().unwrap().effective().clone().unwrap();
        assert_eq!(eff, [Capability::NetBindService].into_iter().collect());
        // Guaranteed → -997, raised to 0 where lowering is refused.
        assert_eq!(proc.oom_score_adj(), Some(0));
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(linux.cgroups_path().as_deref(), Some(Path::new("/peapod/pod-u1/app")));
        let nss = linux.namespaces().as_ref().unwrap();
        let path_of = |t| nss.iter().find(|n| n.typ() == t).and_then(|n| n.path().clone());
        assert_eq!(path_of(LinuxNamespaceType::Network), Some("/proc/4242/ns/net".into()));
        assert_eq!(
            path_of(LinuxNamespaceType::Pid),
            Some("/proc/4242/ns/pid".into()),
            "shareProcessNamespace"
        );
        let cpu = linux.resources().as_ref().unwrap().cpu().as_ref().unwrap();
        assert_eq!(cpu.quota(), Some(50_000));
    }

    #[test]
    fn sandbox_spec_owns_the_namespaces_and_declares_the_pod() {
        let p = web();
        let spec = sandbox_spec(&p, &rt(), Path::new("/usr/bin/peapod-pause")).unwrap();
        let a = spec.annotations().as_ref().unwrap();
        assert_eq!(a[annotations::CONTAINER_TYPE], annotations::CONTAINER_TYPE_SANDBOX);
        assert!(a[annotations::CONTAINERS].contains("\"app\""));
        assert_eq!(a[annotations::POD_CPU_LIMIT], "500m");
        let nss = spec.linux().as_ref().unwrap().namespaces().as_ref().unwrap();
        assert!(nss.iter().all(|n| n.path().is_none()));
        assert!(nss.iter().any(|n| n.typ() == LinuxNamespaceType::Network));
        // The binary is bind-mounted read-only on its mount point, never copied.
        let pause = spec
            .mounts()
            .iter()
            .flatten()
            .find(|m| m.destination() == Path::new("/pause"))
            .unwrap();
        assert_eq!(pause.source().as_deref(), Some(Path::new("/usr/bin/peapod-pause")));
        assert_eq!(pause.typ().as_deref(), Some("bind"));
        assert!(pause.options().iter().flatten().any(|o| o == "ro"));
    }

    fn busybox() -> ImageConfig {
        ImageConfig {
            cmd: vec!["sh".into()],
            ..Default::default()
        }
    }

    fn syscall_allowed(spec: &Spec, name: &str) -> bool {
        let seccomp = spec.linux().as_ref().unwrap().seccomp().as_ref().unwrap();
        seccomp
            .syscalls()
            .iter()
            .flatten()
            .any(|s| s.names().iter().any(|n| n == name) && s.args().as_ref().is_none_or(|a| a.is_empty()))
    }

    #[test]
    fn every_process_of_the_pod_gets_its_seccomp_profile() {
        let yaml = |pod: &str, c: &str| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  securityContext: {pod}\n  containers:\n  - {{name: a, image: busybox, securityContext: {c}}}\n  - {{name: b, image: busybox, securityContext: {{privileged: true}}}}\n"
            )
        };
        let p = plan(
            &parse("t", &yaml("{}", "{capabilities: {add: [SYS_ADMIN]}}")).unwrap(),
            8 << 30,
        )
        .unwrap();
        let a = container_spec(&p, &p.containers[0], &busybox(), &rt()).unwrap();
        assert!(syscall_allowed(&a, "unshare"), "CAP_SYS_ADMIN opens unshare");
        assert!(!syscall_allowed(&a, "keyctl"));
        let b = container_spec(&p, &p.containers[1], &busybox(), &rt()).unwrap();
        assert!(b.linux().as_ref().unwrap().seccomp().is_none(), "privileged: no filter");
        // The sandbox: none, as a container is privileged.
        let sandbox = sandbox_spec(&p, &rt(), Path::new("/usr/bin/peapod-pause")).unwrap();
        assert!(sandbox.linux().as_ref().unwrap().seccomp().is_none());
        // Without the privileged container, the sandbox gets the pod's (RuntimeDefault).
        let mut p2 = p.clone();
        p2.containers.pop();
        let sandbox = sandbox_spec(&p2, &rt(), Path::new("/usr/bin/peapod-pause")).unwrap();
        assert!(!syscall_allowed(&sandbox, "unshare") && syscall_allowed(&sandbox, "read"));

        // Localhost, from the root; a missing file names the field.
        let root = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join("mkdir.json"),
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]}"#,
        )
        .unwrap();
        let mut rt = rt();
        rt.seccomp_root = root.path().to_path_buf();
        let p = plan(
            &parse(
                "t",
                &yaml(
                    "{seccompProfile: {type: Localhost, localhostProfile: mkdir.json}}",
                    "{seccompProfile: {type: Localhost, localhostProfile: missing.json}}",
                ),
            )
            .unwrap(),
            8 << 30,
        )
        .unwrap();
        let e = container_spec(&p, &p.containers[0], &busybox(), &rt)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "spec.containers[0].securityContext.seccompProfile.localhostProfile: cannot read the seccomp profile "
            ) && e.contains("missing.json"),
            "{e}"
        );
        let e = check_profiles(&p, &rt.seccomp_root, &rt.sys_root, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.json"), "{e}");
        let mut p3 = p.clone();
        p3.containers.truncate(1);
        p3.containers[0].security.seccomp = p.seccomp.clone();
        let a = container_spec(&p3, &p3.containers[0], &busybox(), &rt).unwrap();
        let filter = a.linux().as_ref().unwrap().seccomp().clone().unwrap();
        assert_eq!(filter.syscalls().as_ref().unwrap()[0].errno_ret(), Some(38));
        assert_eq!(
            sandbox_spec(&p3, &rt, Path::new("/usr/bin/peapod-pause"))
                .unwrap()
                .linux()
                .as_ref()
                .unwrap()
                .seccomp(),
            &Some(filter)
        );
        assert!(check_profiles(&p3, &rt.seccomp_root, &rt.sys_root, true).is_ok());
    }

    #[test]
    fn pod_sysctls_go_to_the_sandbox_and_apparmor_needs_the_kernel() {
        let p = plan(
            &parse(
                "t",
                "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  securityContext: {supplementalGroups: [44], sysctls: [{name: kernel.shm_rmid_forced, value: \"1\"}]}\n  containers: [{name: c, image: busybox, securityContext: {appArmorProfile: {type: Localhost, localhostProfile: x}}}]\n",
            )
            .unwrap(),
            8 << 30,
        )
        .unwrap();
        let sandbox = sandbox_spec(&p, &rt(), Path::new("/usr/bin/peapod-pause")).unwrap();
        let sysctl = sandbox.linux().as_ref().unwrap().sysctl().clone().unwrap();
        assert_eq!(sysctl["kernel.shm_rmid_forced"], "1");
        // rt()'s sysfs has no AppArmor: a Localhost profile is refused by its field.
        let e = container_spec(&p, &p.containers[0], &busybox(), &rt())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("spec.containers[0].securityContext.appArmorProfile.localhostProfile: Localhost: AppArmor is not enabled"),
            "{e}"
        );
        let mut p = p;
        p.containers[0].security.apparmor = None;
        let c = container_spec(&p, &p.containers[0], &busybox(), &rt()).unwrap();
        let proc = c.process().as_ref().unwrap();
        assert_eq!(proc.user().additional_gids().as_deref(), Some(&[44][..]));
        assert_eq!(proc.apparmor_profile(), &None);
        assert!(
            c.linux().as_ref().unwrap().sysctl().is_none(),
            "sysctls are the sandbox's"
        );
    }

    #[test]
    fn users_and_bad_combinations() {
        assert_eq!(parse_user("").unwrap(), (0, 0));
        assert_eq!(parse_user("1000:10").unwrap(), (1000, 10));
        assert!(parse_user("nginx").is_err());
        let mut p = web();
        p.containers[0].security.run_as_user = None;
        p.containers[0].security.run_as_non_root = true;
        let err = container_spec(
            &p,
            &p.containers[0],
            &ImageConfig {
                cmd: vec!["sh".into()],
                ..Default::default()
            },
            &rt(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("runAsNonRoot"), "{err}");
    }

    #[test]
    fn populated_volumes_are_read_only_binds_from_the_pods_volume_dir() {
        let p = plan(
            &parse(
                "t",
                "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  volumes: [{name: cfg, configMap: {name: x}}, {name: tls, secret: {secretName: y}}]\n  containers: [{name: c, image: busybox, volumeMounts: [{name: cfg, mountPath: /etc/cfg, readOnly: false}, {name: tls, mountPath: /etc/tls}]}]\n",
            )
            .unwrap(),
            8 << 30,
        )
        .unwrap();
        let spec = container_spec(&p, &p.containers[0], &busybox(), &rt()).unwrap();
        let mount = |dest: &str| {
            spec.mounts()
                .iter()
                .flatten()
                .find(|m| m.destination() == Path::new(dest))
                .cloned()
                .unwrap()
        };
        let cfg = mount("/etc/cfg");
        assert_eq!(
            cfg.source().as_deref(),
            Some(Path::new(
                "/var/lib/peapod/pods/default_web/volumes/kubernetes.io~configmap/cfg"
            ))
        );
        assert_eq!(
            cfg.options().as_deref(),
            Some(&["rbind".to_string(), "rprivate".into(), "ro".into()][..])
        );
        assert_eq!(
            mount("/etc/tls").source().as_deref(),
            Some(Path::new(
                "/var/lib/peapod/pods/default_web/volumes/kubernetes.io~secret/tls"
            ))
        );
    }
}
