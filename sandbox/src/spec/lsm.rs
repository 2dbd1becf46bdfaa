//! Checks of the spec's Linux security module fields against the host:
//! `process.apparmorProfile`, `process.selinuxLabel` and `linux.mountLabel` (OCI runtime
//! spec, config.md "Process" and config-linux.md "Mount Label").
//!
//! AppArmor: a profile is applied by [`crate::lsm`] in container init, as runc applies it.
//! On a host whose kernel has no AppArmor enabled, runc does not refuse the spec in its
//! validator (libcontainer/configs/validate/validator.go never calls
//! `apparmor.IsEnabled`): its init writes `exec <profile>` to the exec attribute anyway
//! (libcontainer/apparmor/apparmor_linux.go), the kernel answers EINVAL, and the create
//! fails with "unable to apply apparmor profile: apparmor failed to apply profile: write
//! /proc/self/attr/exec: invalid argument" (Debian's runc 1.1.5, seen on this project's
//! hosts; newer runc writes /proc/thread-self). peapod refuses the same specs, with an
//! error naming the field, but at validation, before anything exists: where
//! `/sys/module/apparmor/parameters/enabled` is not `Y` (half of runc's `IsEnabled`; the
//! other half, securityfs mounted at `/sys/kernel/security/apparmor`, is what the parser
//! needs, not the exec attribute, so it is not required here) that write cannot succeed.
//! containerd's CRI plugin never gets that far: with AppArmor off it puts no profile in
//! the spec, and refuses a container that names one itself ("apparmor is not supported",
//! `generateApparmorSpecOpts` in its CRI server's container_create_linux.go).
//!
//! SELinux: runc's validator refuses `process.selinuxLabel` unless `selinux.GetEnabled()`
//! (go-selinux: a selinuxfs is mounted and the process's own label is not `kernel`), with
//! "selinux label is specified in config, but selinux is disabled or not supported".
//! `linux.mountLabel` it does not check there; it adds `context="<label>"` to the data of
//! every mount it labels, which a kernel without SELinux rejects at that mount (runc
//! 1.1.5: "error mounting \"tmpfs\" to rootfs at \"/dev\": ... invalid argument"). peapod
//! refuses both fields up front on such a host, and on a host with SELinux too, with a
//! different reason: it does not apply SELinux labels (no host it runs on has SELinux, so
//! none could be proven). An empty string counts as absent in all three fields, as in runc.

use std::path::Path;

use oci_spec::runtime::{Process, Spec};

use super::{invalid, SpecError};

/// Whether the kernel has the AppArmor LSM enabled: `<sys>/module/apparmor/parameters/enabled`
/// reads `Y` (`sys` is `/sys` on a host; a fixture dir in tests). `N` when AppArmor is
/// built in but not among the active LSMs (`security=`, `lsm=`, `apparmor=0`); missing
/// when the kernel has no AppArmor at all.
pub fn apparmor_enabled(sys: &Path) -> bool {
    std::fs::read(sys.join("module/apparmor/parameters/enabled")).is_ok_and(|b| b.first() == Some(&b'Y'))
}

/// Whether SELinux is enabled, by go-selinux's `GetEnabled` rule (which runc's validator
/// uses): a selinuxfs is mounted (`<proc>/self/mountinfo`) and the process's own label
/// (`<proc>/self/attr/current`) is not `kernel`. `proc` is `/proc` on a host. (go-selinux
/// also requires that mount to be writable; peapod refuses labels either way, so only
/// the reason given differs.)
pub fn selinux_enabled(proc: &Path) -> bool {
    let mounted = crate::sys::read_proc(proc.join("self/mountinfo"))
        .is_ok_and(|m| m.lines().any(|l| l.contains(" - selinuxfs ")));
    if !mounted {
        return false;
    }
    std::fs::read(proc.join("self/attr/current"))
        .is_ok_and(|l| l.split(|b| *b == 0 || *b == b'\n').next() != Some(b"kernel".as_slice()))
}

/// The host facts the checks depend on, read only when a spec asks for a label or
/// profile (reading mountinfo on every create would cost for nothing).
#[derive(Debug, Clone, Copy)]
pub struct Host {
    /// [`apparmor_enabled`].
    pub apparmor: bool,
    /// [`selinux_enabled`].
    pub selinux: bool,
}

impl Host {
    /// This host's: [`apparmor_enabled`] of `/sys`, [`selinux_enabled`] of `/proc`.
    pub fn probe() -> Self {
        Self {
            apparmor: apparmor_enabled(Path::new("/sys")),
            selinux: selinux_enabled(Path::new("/proc")),
        }
    }
}

fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// Checks `<field>.apparmorProfile` and `<field>.selinuxLabel` of a process (the
/// container's, or one to exec) against the host `probe` returns (called only when one
/// of them is given; [`Host::probe`] on a real host).
///
/// Errors: [`SpecError::Invalid`] naming the field, with the reason (see the module doc).
pub fn check_process(field: &str, process: &Process, probe: impl Fn() -> Host) -> Result<(), SpecError> {
    if let Some(profile) = given(process.apparmor_profile()) {
        if !probe().apparmor {
            return Err(invalid(
                format!("{field}.apparmorProfile"),
                format!(
                    "{profile:?} asked for, but AppArmor is not enabled on this host \
                     (/sys/module/apparmor/parameters/enabled is not Y); runc fails such a \
                     create too, when the kernel refuses its exec attribute"
                ),
            ));
        }
        if profile.contains(['\0', '\n']) {
            return Err(invalid(
                format!("{field}.apparmorProfile"),
                format!("{profile:?} contains a NUL byte or a newline"),
            ));
        }
    }
    if let Some(label) = given(process.selinux_label()) {
        return Err(selinux_refused(&format!("{field}.selinuxLabel"), label, probe()));
    }
    Ok(())
}

/// Checks `linux.mountLabel` against the host `probe` returns (called only when given).
///
/// Errors: [`SpecError::Invalid`] naming `linux.mountLabel` (see the module doc).
pub fn check_mount_label(spec: &Spec, probe: impl Fn() -> Host) -> Result<(), SpecError> {
    match spec.linux().as_ref().and_then(|l| given(l.mount_label())) {
        Some(label) => Err(selinux_refused("linux.mountLabel", label, probe())),
        None => Ok(()),
    }
}

fn selinux_refused(field: &str, label: &str, host: Host) -> SpecError {
    let reason = if host.selinux {
        format!("{label:?} asked for, but peapod does not apply SELinux labels")
    } else {
        format!(
            "{label:?} asked for, but SELinux is disabled or not supported on this host \
             (no selinuxfs mounted; runc's validator refuses a label the same way)"
        )
    };
    invalid(field, reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, ProcessBuilder, SpecBuilder};

    const NONE: Host = Host {
        apparmor: false,
        selinux: false,
    };

    fn field_of(e: SpecError) -> (String, String) {
        match e {
            SpecError::Invalid { field, reason } => (field, reason),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn process(apparmor: Option<&str>, selinux: Option<&str>) -> Process {
        ProcessBuilder::default()
            .args(vec!["true".to_string()])
            .apparmor_profile(apparmor.map(String::from).unwrap_or_default())
            .selinux_label(selinux.map(String::from).unwrap_or_default())
            .build()
            .unwrap()
    }

    #[test]
    fn apparmor_enabled_reads_the_module_parameter() {
        let sys = tempfile::tempdir().unwrap();
        assert!(!apparmor_enabled(sys.path()), "no apparmor module dir: not enabled");
        let params = sys.path().join("module/apparmor/parameters");
        std::fs::create_dir_all(&params).unwrap();
        std::fs::write(params.join("enabled"), "N\n").unwrap();
        assert!(!apparmor_enabled(sys.path()));
        std::fs::write(params.join("enabled"), "Y\n").unwrap();
        assert!(apparmor_enabled(sys.path()));
    }

    #[test]
    fn selinux_enabled_needs_selinuxfs_and_a_label_other_than_kernel() {
        let proc = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(proc.path().join("self/attr")).unwrap();
        let plain = "22 1 0:21 / /proc rw,nosuid - proc proc rw\n";
        let selinuxfs = "30 25 0:27 / /sys/fs/selinux rw,relatime - selinuxfs selinuxfs rw\n";
        std::fs::write(proc.path().join("self/mountinfo"), plain).unwrap();
        std::fs::write(
            proc.path().join("self/attr/current"),
            "system_u:system_r:unconfined_t:s0\0",
        )
        .unwrap();
        assert!(!selinux_enabled(proc.path()), "no selinuxfs mounted");
        std::fs::write(proc.path().join("self/mountinfo"), format!("{plain}{selinuxfs}")).unwrap();
        assert!(selinux_enabled(proc.path()));
        std::fs::write(proc.path().join("self/attr/current"), "kernel\0").unwrap();
        assert!(!selinux_enabled(proc.path()), "label 'kernel': no policy loaded");
    }

    #[test]
    fn apparmor_profile_without_apparmor_is_refused_by_name() {
        let (field, reason) = field_of(check_process("process", &process(Some("p1"), None), || NONE).unwrap_err());
        assert_eq!(field, "process.apparmorProfile");
        assert!(reason.contains("AppArmor is not enabled"), "{reason}");
        let host = Host { apparmor: true, ..NONE };
        check_process("process", &process(Some("p1"), None), || host).unwrap();
        let (field, _) = field_of(check_process("process", &process(Some("p\n1"), None), || host).unwrap_err());
        assert_eq!(field, "process.apparmorProfile");
    }

    #[test]
    fn empty_labels_count_as_absent() {
        check_process("process", &process(Some(""), Some("")), || NONE).unwrap();
        check_process("process", &process(None, None), || NONE).unwrap();
        let spec = SpecBuilder::default()
            .linux(LinuxBuilder::default().mount_label(String::new()).build().unwrap())
            .build()
            .unwrap();
        check_mount_label(&spec, || NONE).unwrap();
    }

    #[test]
    fn selinux_labels_are_refused_by_name_with_the_hosts_reason() {
        let label = "system_u:system_r:container_t:s0:c1,c2";
        let (field, reason) = field_of(check_process("process", &process(None, Some(label)), || NONE).unwrap_err());
        assert_eq!(field, "process.selinuxLabel");
        assert!(reason.contains("SELinux is disabled or not supported"), "{reason}");
        let selinux = Host { selinux: true, ..NONE };
        let (_, reason) = field_of(check_process("process", &process(None, Some(label)), || selinux).unwrap_err());
        assert!(reason.contains("does not apply SELinux labels"), "{reason}");

        let spec = SpecBuilder::default()
            .linux(
                LinuxBuilder::default()
                    .mount_label("system_u:object_r:container_file_t:s0".to_string())
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let (field, reason) = field_of(check_mount_label(&spec, || NONE).unwrap_err());
        assert_eq!(field, "linux.mountLabel");
        assert!(reason.contains("SELinux is disabled or not supported"), "{reason}");
    }
}
