//! Validation of an OCI runtime spec into a checked [`Plan`].
//!
//! Everything that can be rejected without touching the kernel is rejected here, before
//! a state dir, cgroup, mount or process exists, so that bad input leaves nothing behind.
//! Each error names the spec field (in the JSON spelling of the OCI runtime spec, e.g.
//! `linux.resources.memory.limit`) and the cause.
//!
//! This module checks the spec as a whole; [`namespaces`] checks `linux.namespaces` into
//! the ordered [`NamespacePlan`]s the init helper enters; [`lsm`] checks AppArmor and
//! SELinux fields against what the host has; [`default_spec`] and its parts
//! are containerd's defaults. Nothing here changes kernel state: [`crate::namespaces`]
//! and [`crate::process`], which do, build on this module, never the other way round.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use nix::sys::resource::Resource;
use oci_spec::runtime::{LinuxResources, Mount, PosixRlimitType, Process, Spec};

mod defaults;
pub mod lsm;
pub mod namespaces;

pub use defaults::{capabilities, default_spec, DEFAULT_CAPS, DEFAULT_PATH};
pub use namespaces::{NamespaceKind, NamespacePlan};

/// A spec field that fails validation, or a spec that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// `config.json` could not be read.
    #[error("cannot read OCI spec {path}: {source}")]
    Read {
        /// Path of the `config.json`.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// `config.json` is not a valid OCI spec: malformed JSON, or a value the spec does
    /// not define (an unknown namespace type, seccomp action or operator). `field` is the
    /// JSON path of the value, e.g. `linux.seccomp.syscalls[2].action`.
    #[error("cannot load OCI spec {path}: {field}: {source}")]
    Parse {
        /// Path of the `config.json`.
        path: PathBuf,
        /// JSON path of the offending value (`.` when the document itself is malformed).
        field: String,
        /// serde's message, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// One field holds a value peapod cannot run.
    #[error("invalid OCI spec: {field}: {reason}")]
    Invalid {
        /// The field in OCI JSON spelling, e.g. `process.args`.
        field: String,
        /// Why it is refused.
        reason: String,
    },
}

impl From<crate::seccomp::SeccompError> for SpecError {
    fn from(e: crate::seccomp::SeccompError) -> SpecError {
        let field = e.field().to_string();
        let text = crate::error::chain(&e);
        // The message starts with the field; `Invalid` prints it once.
        let reason = text
            .strip_prefix(&field)
            .and_then(|r| r.strip_prefix(": "))
            .unwrap_or(&text)
            .to_string();
        SpecError::Invalid { field, reason }
    }
}

pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A spec that passed validation, with its derived values resolved.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The spec as given (already checked).
    pub spec: Spec,
    /// Absolute host path of the container's root filesystem (`root.path`, resolved
    /// against the bundle).
    pub rootfs: PathBuf,
    /// Namespaces to join or create, in the order they must be entered.
    pub namespaces: Vec<NamespacePlan>,
    /// cgroup path relative to each hierarchy's root (`linux.cgroupsPath`), without the
    /// leading slash; defaults to `peapod/<id>`.
    pub cgroup_path: String,
}

/// Default cgroup parent for containers that name no `linux.cgroupsPath`.
pub const DEFAULT_CGROUP_PARENT: &str = "peapod";

/// Loads `<bundle>/config.json`.
///
/// Errors: [`SpecError::Read`]; [`SpecError::Parse`] naming the JSON path of the value
/// that does not deserialize (through `serde_path_to_error`), e.g.
/// `linux.seccomp.syscalls[2].action: unknown variant "SCMP_ACT_BOGUS", expected one of …`.
pub fn load(bundle: &Path) -> Result<Spec, SpecError> {
    let path = bundle.join("config.json");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(source) => return Err(SpecError::Read { path, source }),
    };
    parse_config(&path, &bytes)
}

/// Deserializes the bytes of a `config.json` read from `path` (which only names it in
/// errors), as [`load`] does.
///
/// Errors: [`SpecError::Parse`] naming the JSON path of the value that does not
/// deserialize.
pub fn parse_config(path: &Path, bytes: &[u8]) -> Result<Spec, SpecError> {
    parse(bytes).map_err(|(field, source)| SpecError::Parse {
        path: path.to_path_buf(),
        field,
        source,
    })
}

/// Deserializes a spec, returning the JSON path of the failing value with the error.
fn parse(bytes: &[u8]) -> Result<Spec, (String, serde_json::Error)> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let spec: Spec = serde_path_to_error::deserialize(&mut de).map_err(|e| (e.path().to_string(), e.into_inner()))?;
    de.end().map_err(|e| (".".to_string(), e))?;
    Ok(spec)
}

/// Validates `spec` for the container `id` in `bundle`.
///
/// `linux.seccomp` is checked by compiling it ([`crate::seccomp::compile`], its errors
/// converted to [`SpecError::Invalid`]), which [`crate::Container::create`] does right
/// after this, still before anything exists; here it would be compiled twice.
///
/// Errors: [`SpecError::Invalid`] naming the first offending field.
pub fn validate(id: &str, bundle: &Path, spec: &Spec) -> Result<Plan, SpecError> {
    validate_id(id)?;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| invalid("process", "missing: a container needs a process to run"))?;
    validate_process("process", process)?;

    let root = spec.root().as_ref().ok_or_else(|| invalid("root", "missing"))?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    match std::fs::metadata(&rootfs) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(invalid("root.path", format!("{} is not a directory", rootfs.display()))),
        Err(e) => return Err(invalid("root.path", format!("{}: {e}", rootfs.display()))),
    }

    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| invalid("linux", "missing: peapod runs Linux containers only"))?;
    let namespaces = namespaces::plan(linux.namespaces().as_deref().unwrap_or_default())?;
    // A namespace listed (new, or joined by path such as the pod's) is the container's
    // own rather than the host's.
    let owns = |kind: NamespaceKind| namespaces.iter().any(|ns| ns.kind == kind);
    if !namespaces.iter().any(|ns| ns.kind == NamespaceKind::Mount) {
        return Err(invalid(
            "linux.namespaces",
            "a mount namespace is required: peapod never changes the host's mount table",
        ));
    }

    if let Some(hostname) = spec.hostname() {
        if !hostname.is_empty() && !owns(NamespaceKind::Uts) {
            return Err(invalid(
                "hostname",
                "setting a hostname needs a uts namespace in linux.namespaces",
            ));
        }
    }
    for (key, _) in linux.sysctl().iter().flatten() {
        validate_sysctl(key, &owns)?;
    }
    for (i, mount) in spec.mounts().iter().flatten().enumerate() {
        validate_mount(&format!("mounts[{i}]"), mount)?;
    }
    for (i, dev) in linux.devices().iter().flatten().enumerate() {
        let field = format!("linux.devices[{i}].path");
        if !dev.path().starts_with("/dev") || has_dot_dot(dev.path()) {
            return Err(invalid(field, "must be an absolute path under /dev without '..'"));
        }
    }
    if let Some(prop) = linux.rootfs_propagation() {
        crate::rootfs::propagation_flags(prop)
            .ok_or_else(|| invalid("linux.rootfsPropagation", format!("unknown value {prop:?}")))?;
    }
    if let Some(resources) = linux.resources() {
        validate_resources(resources)?;
    }
    lsm::check_mount_label(spec, lsm::Host::probe)?;
    let cgroup_path = cgroup_path(id, linux.cgroups_path().as_deref())?;
    Ok(Plan {
        spec: spec.clone(),
        rootfs,
        namespaces,
        cgroup_path,
    })
}

/// Container ids become directory names and cgroup names: `[A-Za-z0-9][A-Za-z0-9_.-]*`,
/// at most 1024 bytes (the same rule as runc's).
pub fn validate_id(id: &str) -> Result<(), SpecError> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(invalid("id", format!("{id:?} must match [A-Za-z0-9][A-Za-z0-9_.-]*")))
    }
}

/// Checks a process (the container's own, or one to exec); `field` prefixes error fields.
pub fn validate_process(field: &str, process: &Process) -> Result<(), SpecError> {
    let args = process.args().as_deref().unwrap_or_default();
    if args.is_empty() || args[0].is_empty() {
        return Err(invalid(format!("{field}.args"), "must name a program to run"));
    }
    if !process.cwd().is_absolute() {
        return Err(invalid(
            format!("{field}.cwd"),
            format!("{} is not an absolute path", process.cwd().display()),
        ));
    }
    for (i, var) in process.env().iter().flatten().enumerate() {
        if !var.contains('=') || var.starts_with('=') {
            return Err(invalid(
                format!("{field}.env[{i}]"),
                format!("{var:?} is not KEY=VALUE"),
            ));
        }
    }
    if let Some(adj) = process.oom_score_adj() {
        if !(-1000..=1000).contains(&adj) {
            return Err(invalid(
                format!("{field}.oomScoreAdj"),
                format!("{adj} is outside -1000..=1000"),
            ));
        }
    }
    let mut seen = HashSet::new();
    for (i, rl) in process.rlimits().iter().flatten().enumerate() {
        if !seen.insert(format!("{:?}", rl.typ())) {
            return Err(invalid(
                format!("{field}.rlimits[{i}]"),
                format!("{:?} given twice", rl.typ()),
            ));
        }
        if rl.soft() > rl.hard() {
            return Err(invalid(
                format!("{field}.rlimits[{i}]"),
                format!("soft limit {} exceeds hard limit {}", rl.soft(), rl.hard()),
            ));
        }
        if rlimit_resource(rl.typ()).is_none() {
            return Err(invalid(
                format!("{field}.rlimits[{i}].type"),
                format!("{:?} is not supported", rl.typ()),
            ));
        }
    }
    lsm::check_process(field, process, lsm::Host::probe)
}

/// The kernel resource behind an OCI rlimit type; `None` for types Linux lacks.
pub fn rlimit_resource(typ: PosixRlimitType) -> Option<Resource> {
    use PosixRlimitType as T;
    Some(match typ {
        T::RlimitCpu => Resource::RLIMIT_CPU,
        T::RlimitFsize => Resource::RLIMIT_FSIZE,
        T::RlimitData => Resource::RLIMIT_DATA,
        T::RlimitStack => Resource::RLIMIT_STACK,
        T::RlimitCore => Resource::RLIMIT_CORE,
        T::RlimitRss => Resource::RLIMIT_RSS,
        T::RlimitNproc => Resource::RLIMIT_NPROC,
        T::RlimitNofile => Resource::RLIMIT_NOFILE,
        T::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        T::RlimitAs => Resource::RLIMIT_AS,
        T::RlimitLocks => Resource::RLIMIT_LOCKS,
        T::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        T::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        T::RlimitNice => Resource::RLIMIT_NICE,
        T::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        T::RlimitRttime => Resource::RLIMIT_RTTIME,
    })
}

fn validate_sysctl(key: &str, owns: &dyn Fn(NamespaceKind) -> bool) -> Result<(), SpecError> {
    let field = format!("linux.sysctl[{key}]");
    if key.contains('/') || key.contains("..") || key.is_empty() {
        return Err(invalid(field, "not a sysctl name"));
    }
    // Only namespaced sysctls, and only when the container owns that namespace, like runc's
    // validator (libcontainer/configs/validate): anything else would change the host.
    let ipc = key.starts_with("fs.mqueue.")
        || matches!(
            key,
            "kernel.msgmax"
                | "kernel.msgmnb"
                | "kernel.msgmni"
                | "kernel.sem"
                | "kernel.shmall"
                | "kernel.shmmax"
                | "kernel.shmmni"
                | "kernel.shm_rmid_forced"
        );
    if ipc {
        return if owns(NamespaceKind::Ipc) {
            Ok(())
        } else {
            Err(invalid(field, "needs an ipc namespace in linux.namespaces"))
        };
    }
    if key.starts_with("net.") {
        return if owns(NamespaceKind::Net) {
            Ok(())
        } else {
            Err(invalid(field, "needs a network namespace in linux.namespaces"))
        };
    }
    if matches!(key, "kernel.hostname" | "kernel.domainname") {
        return Err(invalid(field, "set `hostname` instead"));
    }
    Err(invalid(field, "not a namespaced sysctl: it would change the host"))
}

fn validate_mount(field: &str, mount: &Mount) -> Result<(), SpecError> {
    let dest = mount.destination();
    if !dest.is_absolute() || has_dot_dot(dest) {
        return Err(invalid(
            format!("{field}.destination"),
            format!("{} must be absolute without '..'", dest.display()),
        ));
    }
    let typ = mount.typ().as_deref().unwrap_or("");
    let options = mount.options().as_deref().unwrap_or_default();
    let is_bind = typ == "bind" || options.iter().any(|o| o == "bind" || o == "rbind");
    if is_bind {
        let src = mount
            .source()
            .as_ref()
            .ok_or_else(|| invalid(format!("{field}.source"), "a bind mount needs a source"))?;
        if !src.is_absolute() {
            return Err(invalid(format!("{field}.source"), "a bind source must be absolute"));
        }
        if let Err(e) = std::fs::symlink_metadata(src) {
            return Err(invalid(format!("{field}.source"), format!("{}: {e}", src.display())));
        }
    } else if typ.is_empty() {
        return Err(invalid(format!("{field}.type"), "missing (and not a bind mount)"));
    }
    Ok(())
}

fn validate_resources(r: &LinuxResources) -> Result<(), SpecError> {
    if let Some(rules) = r.devices() {
        crate::devices::DevicePolicy::from_oci(rules).map_err(|e| invalid(e.field(), e.reason()))?;
    }
    if let Some(mem) = r.memory() {
        let limit = mem.limit();
        for (name, value) in [
            ("limit", limit),
            ("reservation", mem.reservation()),
            ("swap", mem.swap()),
        ] {
            if let Some(v) = value {
                if v < -1 || v == 0 && name == "limit" {
                    return Err(invalid(
                        format!("linux.resources.memory.{name}"),
                        format!("{v} bytes: must be -1 (unlimited) or positive"),
                    ));
                }
            }
        }
        if let (Some(l), Some(s)) = (limit, mem.swap()) {
            if l > 0 && s > 0 && s < l {
                return Err(invalid(
                    "linux.resources.memory.swap",
                    format!("{s} bytes is below memory.limit {l}: swap is memory+swap in OCI"),
                ));
            }
        }
    }
    if let Some(cpu) = r.cpu() {
        if let Some(shares) = cpu.shares() {
            if shares != 0 && !(2..=262_144).contains(&shares) {
                return Err(invalid(
                    "linux.resources.cpu.shares",
                    format!("{shares}: must be in 2..=262144"),
                ));
            }
        }
        if let Some(q) = cpu.quota() {
            if q != -1 && q < 1000 {
                return Err(invalid(
                    "linux.resources.cpu.quota",
                    format!("{q} µs: must be -1 (unlimited) or at least 1000"),
                ));
            }
        }
        if let Some(p) = cpu.period() {
            if !(1000..=1_000_000).contains(&p) {
                return Err(invalid(
                    "linux.resources.cpu.period",
                    format!("{p} µs: must be in 1000..=1000000"),
                ));
            }
        }
        for (name, list) in [("cpus", cpu.cpus()), ("mems", cpu.mems())] {
            if let Some(list) = list {
                if !is_cpu_list(list) {
                    return Err(invalid(
                        format!("linux.resources.cpu.{name}"),
                        format!("{list:?} is not a list like \"0-2,4\""),
                    ));
                }
            }
        }
    }
    if let Some(pids) = r.pids() {
        if pids.limit() < -1 || pids.limit() == 0 {
            return Err(invalid(
                "linux.resources.pids.limit",
                format!("{}: must be -1 or positive", pids.limit()),
            ));
        }
    }
    Ok(())
}

/// `"0-2,4"`: comma-separated numbers or ranges, as cpuset.cpus and cpuset.mems take.
fn is_cpu_list(s: &str) -> bool {
    !s.is_empty()
        && s.split(',').all(|part| {
            let mut ends = part.splitn(2, '-').map(|n| n.trim().parse::<u32>());
            match (ends.next(), ends.next()) {
                (Some(Ok(_)), None) => true,
                (Some(Ok(a)), Some(Ok(b))) => a <= b,
                _ => false,
            }
        })
}

fn has_dot_dot(p: &Path) -> bool {
    p.components().any(|c| c == Component::ParentDir)
}

/// Resolves `linux.cgroupsPath` to a path relative to each hierarchy's root.
///
/// Accepts cgroupfs-style paths (`/kubepods/pod1/ctr`, or relative, which runc also treats
/// as below the root). systemd's `slice:prefix:name` form is refused: peapod drives
/// cgroupfs directly (containerd's `SystemdCgroup = false`).
pub fn cgroup_path(id: &str, given: Option<&Path>) -> Result<String, SpecError> {
    let Some(path) = given.filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(format!("{DEFAULT_CGROUP_PARENT}/{id}"));
    };
    let s = path.to_string_lossy();
    if s.split(':').count() == 3 && !s.starts_with('/') {
        return Err(invalid(
            "linux.cgroupsPath",
            format!("{s:?} is a systemd slice path; peapod uses the cgroupfs driver (set SystemdCgroup = false)"),
        ));
    }
    if has_dot_dot(path) {
        return Err(invalid("linux.cgroupsPath", format!("{s:?} must not contain '..'")));
    }
    let rel = s.trim_start_matches('/').trim_end_matches('/');
    if rel.is_empty() {
        return Err(invalid("linux.cgroupsPath", "must not be the root cgroup"));
    }
    Ok(rel.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder, ProcessBuilder, RootBuilder, SpecBuilder,
    };

    fn bundle() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        dir
    }

    fn base() -> Spec {
        SpecBuilder::default()
            .root(RootBuilder::default().path("rootfs").build().unwrap())
            .process(
                ProcessBuilder::default()
                    .args(vec!["/bin/sh".to_string()])
                    .cwd("/")
                    .build()
                    .unwrap(),
            )
            .linux(LinuxBuilder::default().build().unwrap())
            .build()
            .unwrap()
    }

    fn field_of(err: SpecError) -> String {
        match err {
            SpecError::Invalid { field, .. } => field,
            other => panic!("unexpected {other}"),
        }
    }

    /// `config.json` holding `base()` with `seccomp` as `linux.seccomp`.
    fn load_with_seccomp(seccomp: serde_json::Value) -> Result<Spec, SpecError> {
        let b = bundle();
        let mut json = serde_json::to_value(base()).unwrap();
        json["linux"]["seccomp"] = seccomp;
        std::fs::write(b.path().join("config.json"), serde_json::to_vec(&json).unwrap()).unwrap();
        load(b.path())
    }

    fn parse_field(r: Result<Spec, SpecError>) -> String {
        match r {
            Err(SpecError::Parse { field, .. }) => field,
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn unknown_seccomp_values_are_named_by_their_json_path() {
        let call = |action: &str, op: &str| serde_json::json!({"names": ["mkdir"], "action": action, "args": [{"index": 0, "value": 1, "op": op}]});
        let ok = call("SCMP_ACT_ERRNO", "SCMP_CMP_EQ");
        let spec = load_with_seccomp(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [ok]})).unwrap();
        assert!(spec.linux().as_ref().unwrap().seccomp().is_some());

        let bad_action = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [ok, ok, call("SCMP_ACT_BOGUS", "SCMP_CMP_EQ")]});
        let err = load_with_seccomp(bad_action).unwrap_err();
        assert!(
            err.to_string()
                .contains("linux.seccomp.syscalls[2].action: unknown variant"),
            "{err}"
        );
        let bad_op = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [call("SCMP_ACT_ERRNO", "SCMP_CMP_LIKE")]});
        assert_eq!(
            parse_field(load_with_seccomp(bad_op)),
            "linux.seccomp.syscalls[0].args[0].op"
        );
        let bad_flag = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
            "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_BOGUS"]});
        assert_eq!(parse_field(load_with_seccomp(bad_flag)), "linux.seccomp.flags[1]");
        let bad_default = serde_json::json!({"defaultAction": "SCMP_ACT_NOPE"});
        assert_eq!(
            parse_field(load_with_seccomp(bad_default)),
            "linux.seccomp.defaultAction"
        );
    }

    #[test]
    fn seccomp_compile_errors_become_invalid_naming_the_field() {
        let e = crate::seccomp::SeccompError::Unsupported {
            field: "linux.seccomp.syscalls[1].action".into(),
            reason: "SCMP_ACT_NOTIFY is not supported".into(),
        };
        let e = SpecError::from(e);
        assert_eq!(
            e.to_string(),
            "invalid OCI spec: linux.seccomp.syscalls[1].action: SCMP_ACT_NOTIFY is not supported"
        );
    }

    #[test]
    fn default_spec_is_valid_and_gets_default_cgroup() {
        let b = bundle();
        let plan = validate("c1", b.path(), &base()).unwrap();
        assert_eq!(plan.cgroup_path, "peapod/c1");
        assert_eq!(plan.rootfs, b.path().join("rootfs"));
    }

    #[test]
    fn missing_rootfs_names_root_path() {
        let b = tempfile::tempdir().unwrap();
        assert_eq!(field_of(validate("c1", b.path(), &base()).unwrap_err()), "root.path");
    }

    #[test]
    fn empty_args_are_refused() {
        let b = bundle();
        let mut spec = base();
        spec.set_process(Some(
            ProcessBuilder::default()
                .args(Vec::<String>::new())
                .cwd("/")
                .build()
                .unwrap(),
        ));
        assert_eq!(field_of(validate("c1", b.path(), &spec).unwrap_err()), "process.args");
    }

    #[test]
    fn negative_memory_limit_is_refused() {
        let b = bundle();
        let mut spec = base();
        let res = LinuxResourcesBuilder::default()
            .memory(LinuxMemoryBuilder::default().limit(-5).build().unwrap())
            .build()
            .unwrap();
        spec.linux_mut().as_mut().unwrap().set_resources(Some(res));
        assert_eq!(
            field_of(validate("c1", b.path(), &spec).unwrap_err()),
            "linux.resources.memory.limit"
        );
    }

    #[test]
    fn bad_device_rules_are_refused_naming_the_rule() {
        let b = bundle();
        let mut spec = base();
        let bad = oci_spec::runtime::LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(oci_spec::runtime::LinuxDeviceType::B)
            .major(8)
            .access("rwx")
            .build()
            .unwrap();
        let res = LinuxResourcesBuilder::default()
            .devices(vec![crate::devices::deny_all_rule(), bad])
            .build()
            .unwrap();
        spec.linux_mut().as_mut().unwrap().set_resources(Some(res));
        assert_eq!(
            field_of(validate("c1", b.path(), &spec).unwrap_err()),
            "linux.resources.devices[1].access"
        );
    }

    #[test]
    fn default_spec_denies_all_devices_first() {
        let spec = default_spec(&["sh"]);
        let rules = spec
            .linux()
            .as_ref()
            .unwrap()
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .clone();
        assert_eq!(rules, Some(vec![crate::devices::deny_all_rule()]));
    }

    #[test]
    fn bad_ids_are_refused() {
        for id in ["", "../x", "a/b", "-x", "a b"] {
            assert!(validate_id(id).is_err(), "{id:?}");
        }
        validate_id("abc-1.2_3").unwrap();
    }

    #[test]
    fn cgroup_paths_resolve() {
        assert_eq!(
            cgroup_path("x", Some(Path::new("/kubepods/pod1/x"))).unwrap(),
            "kubepods/pod1/x"
        );
        assert_eq!(cgroup_path("x", Some(Path::new("a/b"))).unwrap(), "a/b");
        assert!(cgroup_path("x", Some(Path::new("system.slice:cri:x"))).is_err());
        assert!(cgroup_path("x", Some(Path::new("/a/../b"))).is_err());
        assert!(cgroup_path("x", Some(Path::new("/"))).is_err());
    }

    #[test]
    fn cpu_lists_parse() {
        assert!(is_cpu_list("0"));
        assert!(is_cpu_list("0-2,4"));
        assert!(!is_cpu_list("2-1"));
        assert!(!is_cpu_list("a"));
        assert!(!is_cpu_list(""));
    }

    #[test]
    fn host_sysctls_are_refused() {
        let b = bundle();
        let mut spec = base();
        spec.linux_mut()
            .as_mut()
            .unwrap()
            .set_sysctl(Some([("vm.swappiness".to_string(), "1".to_string())].into()));
        assert_eq!(
            field_of(validate("c1", b.path(), &spec).unwrap_err()),
            "linux.sysctl[vm.swappiness]"
        );
    }
}
