//! Defaults shaped like containerd's: the OCI default `PATH`, the default capability set,
//! and a whole default spec (`oci.populateDefaultUnixSpec`), for the CLI's `peapod spec`,
//! the CLI's pods and the tests.

use std::collections::HashSet;

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxResourcesBuilder, MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};

/// The OCI default `PATH` (runtime spec, config "env"; what containerd and runc use).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Capabilities `caps` in the bounding, effective and permitted sets, none inheritable or
/// ambient: the shape containerd and kubelet give every container.
pub fn capabilities(caps: HashSet<Capability>) -> oci_spec::runtime::LinuxCapabilities {
    LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()
        .expect("all fields set")
}

/// The capabilities containerd gives a container by default (containerd's
/// `oci.defaultUnixCaps`, the same list as Docker's).
pub const DEFAULT_CAPS: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// A spec like the one containerd writes by default (`oci.populateDefaultUnixSpec`): the
/// same mounts, masked and read-only paths, capabilities, `RLIMIT_NOFILE` 1024 and
/// namespaces (plus a cgroup namespace), and device rules (deny every device, to which the
/// runtime appends the OCI default devices, see [`crate::devices`]), running `args` as
/// root in `rootfs/` with hostname `peapod` and no cgroup path (so `peapod/<id>`). What
/// `peapod spec` writes.
pub fn default_spec(args: &[&str]) -> Spec {
    let mount = |dest: &str, typ: &str, src: &str, opts: &[&str]| {
        MountBuilder::default()
            .destination(dest)
            .typ(typ)
            .source(src)
            .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .build()
            .expect("valid mount")
    };
    let caps: HashSet<Capability> = DEFAULT_CAPS.into_iter().collect();
    let ns = |t| {
        LinuxNamespaceBuilder::default()
            .typ(t)
            .build()
            .expect("valid namespace")
    };
    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(false)
                .build()
                .expect("root"),
        )
        .hostname("peapod")
        .process(
            ProcessBuilder::default()
                .args(args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .env(vec![format!("PATH={DEFAULT_PATH}")])
                .cwd("/")
                .user(UserBuilder::default().uid(0u32).gid(0u32).build().expect("user"))
                .capabilities(capabilities(caps))
                .rlimits(vec![PosixRlimitBuilder::default()
                    .typ(PosixRlimitType::RlimitNofile)
                    .hard(1024u64)
                    .soft(1024u64)
                    .build()
                    .expect("rlimit")])
                .no_new_privileges(true)
                .build()
                .expect("process"),
        )
        .mounts(vec![
            mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
            mount(
                "/dev",
                "tmpfs",
                "tmpfs",
                &["nosuid", "strictatime", "mode=755", "size=65536k"],
            ),
            mount(
                "/dev/pts",
                "devpts",
                "devpts",
                &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
            ),
            mount(
                "/dev/shm",
                "tmpfs",
                "shm",
                &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            ),
            mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"]),
            mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", "ro"]),
            mount(
                "/run",
                "tmpfs",
                "tmpfs",
                &["nosuid", "strictatime", "mode=755", "size=65536k"],
            ),
            mount(
                "/sys/fs/cgroup",
                "cgroup",
                "cgroup",
                &["nosuid", "noexec", "nodev", "relatime", "ro"],
            ),
        ])
        .linux(
            LinuxBuilder::default()
                .namespaces(vec![
                    ns(LinuxNamespaceType::Pid),
                    ns(LinuxNamespaceType::Ipc),
                    ns(LinuxNamespaceType::Uts),
                    ns(LinuxNamespaceType::Mount),
                    ns(LinuxNamespaceType::Network),
                    ns(LinuxNamespaceType::Cgroup),
                ])
                .masked_paths(
                    [
                        "/proc/acpi",
                        "/proc/asound",
                        "/proc/kcore",
                        "/proc/keys",
                        "/proc/latency_stats",
                        "/proc/timer_list",
                        "/proc/timer_stats",
                        "/proc/sched_debug",
                        "/sys/firmware",
                        "/proc/scsi",
                    ]
                    .map(String::from)
                    .to_vec(),
                )
                .readonly_paths(
                    ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
                        .map(String::from)
                        .to_vec(),
                )
                .resources(
                    LinuxResourcesBuilder::default()
                        .devices(vec![crate::devices::deny_all_rule()])
                        .build()
                        .expect("resources"),
                )
                .build()
                .expect("linux"),
        )
        .build()
        .expect("spec")
}
