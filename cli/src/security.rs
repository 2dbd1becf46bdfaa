//! Seccomp and AppArmor profiles for a pod's containers, chosen as kubelet and
//! containerd's CRI plugin choose them.
//!
//! seccomp (`linux.seccomp`, OCI runtime spec `config-linux.md#seccomp`) is a BPF filter
//! the container's init loads right before `execve`: every syscall the process makes
//! afterwards is checked against it. A Pod names one of three profiles at pod level
//! (`spec.securityContext.seccompProfile`) or per container (the container's wins, as in
//! kubelet's `pkg/kubelet/kuberuntime/security_context_others.go`):
//! - `RuntimeDefault`: [`runtime_default`], the profile containerd generates
//!   (`contrib/seccomp/seccomp_default.go`, `DefaultProfile`, transcribed from containerd
//!   **v2.3.4**): an allow list, the rest failing with `EPERM`; `clone` without namespace
//!   flags and `clone3` failing with `ENOSYS` unless the container keeps `CAP_SYS_ADMIN`;
//!   more syscalls for each capability in the bounding set (`CAP_SYS_ADMIN`: `mount`,
//!   `unshare`, `setns`, `bpf`, …; `CAP_SYS_PTRACE`: `ptrace`, `kcmp`, …). `keyctl`,
//!   `add_key`, `request_key`, `io_uring_*` and `userfaultfd` are never allowed, whatever
//!   the capabilities: the kernel surface of CVE-2022-0185 (needs `unshare(CLONE_NEWUSER)`)
//!   and CVE-2024-1086 stays closed.
//! - `Localhost`: a JSON profile under a root directory (kubelet's default
//!   `/var/lib/kubelet/seccomp`, [`KUBELET_SECCOMP_ROOT`]), read by [`load_localhost`].
//! - `Unconfined`: no filter.
//!
//! Privileged containers get no filter whatever the manifest says (containerd's
//! `generateSeccompSpecOpts`, and runc's behaviour under Docker).
//!
//! AppArmor (`process.apparmorProfile`) follows containerd's `GenerateApparmorSpecOpts`
//! (`internal/cri/sputil/apparmor_linux.go`), see [`apparmor_profile`].

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, LinuxSyscall,
};
use serde::{Deserialize, Serialize};

/// kubelet's default seccomp profile root (`--seccomp-profile-root` was removed; the path
/// is `<kubelet root dir>/seccomp`, `pkg/kubelet/kubelet_getters.go`).
pub const KUBELET_SECCOMP_ROOT: &str = "/var/lib/kubelet/seccomp";

/// containerd's name for its generated AppArmor profile (`appArmorDefaultProfileName`).
pub const CONTAINERD_APPARMOR_PROFILE: &str = "cri-containerd.apparmor.d";

/// A failed security-profile choice or load. Every variant names the Pod field (e.g.
/// `spec.containers[0].securityContext.seccompProfile.localhostProfile`).
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// `localhostProfile` is absolute or climbs out of the root with `..`.
    #[error("{field}: {profile:?} must be a relative path without '..' (as kubelet validates it)")]
    LocalhostPath {
        /// The Pod field.
        field: String,
        /// The value.
        profile: String,
    },
    /// The Localhost profile file cannot be read (missing, unreadable).
    #[error("{field}: cannot read the seccomp profile {}", path.display())]
    ReadProfile {
        /// The Pod field.
        field: String,
        /// The file: root + localhostProfile.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The Localhost profile is not JSON, or not a seccomp profile's shape.
    #[error("{field}: {}: not a seccomp profile", path.display())]
    ParseProfile {
        /// The Pod field.
        field: String,
        /// The file.
        path: PathBuf,
        /// serde's message, with the line and column.
        #[source]
        source: serde_json::Error,
    },
    /// A field of the Localhost profile holds something unknown (an action, operator,
    /// architecture or flag).
    #[error("{field}: {}: {key}: {reason}", path.display())]
    ProfileField {
        /// The Pod field.
        field: String,
        /// The file.
        path: PathBuf,
        /// The profile's field in OCI JSON spelling, e.g. `syscalls[3].action`.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// An AppArmor profile was asked for on a host without AppArmor (containerd: "apparmor
    /// is not supported").
    #[error("{field}: {kind}: AppArmor is not enabled on this host (no {}); use Unconfined or remove the field", path.display())]
    AppArmorUnsupported {
        /// The Pod field.
        field: String,
        /// `RuntimeDefault` or `Localhost`.
        kind: &'static str,
        /// What was checked: securityfs's `apparmor` directory.
        path: PathBuf,
    },
    /// The Localhost AppArmor profile is not loaded in the kernel (containerd: "apparmor
    /// profile not found").
    #[error("{field}: AppArmor profile {profile:?} is not loaded (not in {}); load it with apparmor_parser first", path.display())]
    AppArmorNotLoaded {
        /// The Pod field.
        field: String,
        /// The profile name.
        profile: String,
        /// The kernel's list of loaded profiles.
        path: PathBuf,
    },
    /// The kernel's list of loaded AppArmor profiles cannot be read.
    #[error("{field}: cannot read the loaded AppArmor profiles {}", path.display())]
    ReadAppArmorProfiles {
        /// The Pod field.
        field: String,
        /// `/sys/kernel/security/apparmor/profiles`.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `RuntimeDefault` AppArmor on an AppArmor host: containerd generates and loads its
    /// `cri-containerd.apparmor.d` profile there; peapod's embedded mode does not.
    #[error("{field}: RuntimeDefault: peapod's embedded mode does not generate containerd's {CONTAINERD_APPARMOR_PROFILE} AppArmor profile; load a profile and use Localhost, or use CRI mode")]
    AppArmorRuntimeDefault {
        /// The Pod field.
        field: String,
    },
}

impl SecurityError {
    /// The Pod field the error is about.
    pub fn field(&self) -> &str {
        match self {
            SecurityError::LocalhostPath { field, .. }
            | SecurityError::ReadProfile { field, .. }
            | SecurityError::ParseProfile { field, .. }
            | SecurityError::ProfileField { field, .. }
            | SecurityError::AppArmorUnsupported { field, .. }
            | SecurityError::AppArmorNotLoaded { field, .. }
            | SecurityError::ReadAppArmorProfiles { field, .. }
            | SecurityError::AppArmorRuntimeDefault { field } => field,
        }
    }
}

/// A seccomp profile as a Pod names it (`SeccompProfile`), resolved container over pod.
/// The default is `RuntimeDefault`, peapod's when the manifest names none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeccompProfile {
    /// The runtime's default: [`runtime_default`].
    #[default]
    RuntimeDefault,
    /// No filter.
    Unconfined,
    /// A profile file relative to the seccomp root.
    Localhost {
        /// The Pod field that named it (`…seccompProfile.localhostProfile`), for errors.
        field: String,
        /// `localhostProfile`: a relative path without `..`.
        profile: String,
    },
}

/// An AppArmor profile as a Pod names it (`AppArmorProfile`), resolved container over pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppArmorProfile {
    /// The runtime's default (containerd: `cri-containerd.apparmor.d`).
    RuntimeDefault {
        /// The Pod field (`…appArmorProfile.type`), for errors.
        field: String,
    },
    /// No profile.
    Unconfined,
    /// A profile already loaded in the kernel, by name.
    Localhost {
        /// The Pod field (`…appArmorProfile.localhostProfile`), for errors.
        field: String,
        /// The profile's name.
        profile: String,
    },
}

/// containerd's allow list (the first rule of `DefaultProfile`), unconditional. The
/// comments are containerd's.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat", // kernel v6.5, libseccomp v2.5.5
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2", // kernel v6.6, libseccomp v2.5.5
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue", // kernel v6.7, libseccomp v2.5.5
    "futex_time64",
    "futex_wait", // kernel v6.7, libseccomp v2.5.5
    "futex_waitv",
    "futex_wake", // kernel v6.7, libseccomp v2.5.5
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "getxattrat", // kernel v6.13, libseccomp v2.6.0
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listmount", // kernel v6.8, libseccomp v2.6.0
    "listxattr",
    "listxattrat", // kernel v6.13, libseccomp v2.6.0
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lsm_get_self_attr", // kernel v6.8, libseccomp v2.6.0
    "lsm_list_modules",  // kernel v6.8, libseccomp v2.6.0
    "lsm_set_self_attr", // kernel v6.8, libseccomp v2.6.0
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "map_shadow_stack", // kernel v6.6, libseccomp v2.5.5
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal", // kernel v6.10, libseccomp v2.6.0
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat", // kernel v6.13, libseccomp v2.6.0
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "setxattrat", // kernel v6.13, libseccomp v2.6.0
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statmount", // kernel v6.8, libseccomp v2.6.0
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe", // kernel v6.11, libseccomp v2.6.0
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// Syscalls allowed for each capability in the bounding set (the `switch` over
/// `sp.Process.Capabilities.Bounding` in containerd's `DefaultProfile`, in its order).
const BY_CAPABILITY: &[(Capability, &[&str])] = &[
    (Capability::DacReadSearch, &["open_by_handle_at"]),
    (
        Capability::SysAdmin,
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    (Capability::SysBoot, &["reboot"]),
    (Capability::SysChroot, &["chroot"]),
    (Capability::SysModule, &["delete_module", "init_module", "finit_module"]),
    (Capability::SysPacct, &["acct"]),
    (
        Capability::SysPtrace,
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    (Capability::SysRawio, &["iopl", "ioperm"]),
    (
        Capability::SysTime,
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    (Capability::SysTtyConfig, &["vhangup"]),
    (
        Capability::SysNice,
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node", // kernel v5.17, libseccomp v2.5.4
        ],
    ),
    (Capability::Syslog, &["syslog"]),
    (Capability::Bpf, &["bpf"]),
    (Capability::Perfmon, &["perf_event_open"]),
];

/// `personality(2)` personas allowed (containerd: one `SCMP_CMP_EQ` rule each):
/// `PER_LINUX`, `PER_LINUX32` (0x0008), `UNAME26` (0x20000), `PER_LINUX32|UNAME26`, and
/// 0xffffffff (the query).
const PERSONALITIES: [u64; 5] = [0x0, 0x0008, 0x20000, 0x20008, 0xffff_ffff];

/// `AF_ALG` and `AF_VSOCK` (linux/socket.h): the address families `socket(2)` may not use.
const AF_ALG: u64 = 38;
const AF_VSOCK: u64 = 40;

/// The namespace flags of `clone(2)` that need `CAP_SYS_ADMIN`: `CLONE_NEWNS`,
/// `CLONE_NEWUTS`, `CLONE_NEWIPC`, `CLONE_NEWUSER`, `CLONE_NEWPID`, `CLONE_NEWNET`,
/// `CLONE_NEWCGROUP` (linux/sched.h).
const CLONE_NAMESPACE_FLAGS: u64 =
    0x0002_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000 | 0x0200_0000;

/// `ENOSYS`, what `clone3` returns without `CAP_SYS_ADMIN` (moby/moby#42681: glibc then
/// falls back to `clone`, which the profile can inspect).
const ENOSYS: u32 = 38;

fn allow(names: &[&str]) -> LinuxSyscall {
    let mut s = LinuxSyscall::default();
    s.set_names(names.iter().map(|n| (*n).to_string()).collect());
    s.set_action(LinuxSeccompAction::ScmpActAllow);
    s
}

fn allow_if(name: &str, index: usize, op: LinuxSeccompOperator, value: u64, value_two: Option<u64>) -> LinuxSyscall {
    let b = LinuxSeccompArgBuilder::default().index(index).op(op).value(value);
    let arg = match value_two {
        Some(v) => b.value_two(v),
        None => b,
    }
    .build()
    .expect("all fields set");
    let mut s = allow(&[name]);
    s.set_args(Some(vec![arg]));
    s
}

/// The seccomp architectures of containerd's `arches()` for Go's `GOARCH` `goarch`.
fn arches(goarch: &str) -> Vec<Arch> {
    match goarch {
        "amd64" => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
        "arm64" => vec![Arch::ScmpArchArm, Arch::ScmpArchAarch64],
        "mips64" | "mips64n32" => vec![Arch::ScmpArchMips, Arch::ScmpArchMips64, Arch::ScmpArchMips64n32],
        "mipsel64" | "mipsel64n32" => vec![Arch::ScmpArchMipsel, Arch::ScmpArchMipsel64, Arch::ScmpArchMipsel64n32],
        "s390x" => vec![Arch::ScmpArchS390, Arch::ScmpArchS390x],
        "riscv64" => vec![Arch::ScmpArchRiscv64],
        "loong64" => vec![Arch::ScmpArchLoongarch64],
        _ => vec![],
    }
}

/// Syscalls containerd adds for `goarch` (its `switch runtime.GOARCH`).
fn arch_syscalls(goarch: &str) -> &'static [&'static str] {
    match goarch {
        "ppc64le" => &["sync_file_range2", "swapcontext"],
        "arm" | "arm64" => &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ],
        "amd64" => &["arch_prctl", "modify_ldt"],
        "386" => &["modify_ldt"],
        "s390" | "s390x" => &["s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"],
        "riscv64" => &["riscv_flush_icache", "riscv_hwprobe"],
        _ => &[],
    }
}

/// This build's architecture in Go's spelling (`GOARCH`), as containerd's table keys it.
fn goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "loongarch64" => "loong64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "mips64" if cfg!(target_endian = "little") => "mipsel64",
        other => other,
    }
}

/// The running kernel's (major, minor), from `uname -r`; (0, 0) if unreadable.
fn kernel_version() -> (u32, u32) {
    let Ok(uts) = nix::sys::utsname::uname() else {
        return (0, 0);
    };
    let release = uts.release().to_string_lossy().into_owned();
    let mut parts = release.split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// containerd's RuntimeDefault seccomp profile for a container whose bounding
/// capabilities are `bounding` (containerd's `DefaultProfile(sp)`, v2.3.4), on this
/// machine's architecture and kernel.
///
/// Shape: `defaultAction` `SCMP_ACT_ERRNO` with no `defaultErrnoRet` (so `EPERM`, OCI
/// runtime spec), containerd's architectures for this `GOARCH`, then the rules in
/// containerd's order.
pub fn runtime_default(bounding: &HashSet<Capability>) -> LinuxSeccomp {
    default_profile(goarch(), kernel_version(), bounding)
}

/// [`runtime_default`] for Go architecture `goarch` and kernel `(major, minor)`.
fn default_profile(goarch: &str, kernel: (u32, u32), bounding: &HashSet<Capability>) -> LinuxSeccomp {
    use LinuxSeccompOperator::{ScmpCmpEq, ScmpCmpGt, ScmpCmpLt, ScmpCmpMaskedEq};
    let mut rules = vec![allow(ALLOWED)];
    // socket(2) for every family but AF_ALG and AF_VSOCK: three single-condition rules
    // (containerd explains why one rule with two conditions would allow both).
    rules.push(allow_if("socket", 0, ScmpCmpLt, AF_ALG, None));
    rules.push(allow_if("socket", 0, ScmpCmpEq, AF_ALG + 1, None));
    rules.push(allow_if("socket", 0, ScmpCmpGt, AF_VSOCK, None));
    for persona in PERSONALITIES {
        rules.push(allow_if("personality", 0, ScmpCmpEq, persona, None));
    }
    if kernel >= (4, 8) {
        rules.push(allow(&["process_vm_readv", "process_vm_writev", "ptrace"]));
    }
    let by_arch = arch_syscalls(goarch);
    if !by_arch.is_empty() {
        rules.push(allow(by_arch));
    }
    // containerd walks the bounding set in its order; the rules do not depend on it.
    for (cap, names) in BY_CAPABILITY {
        if bounding.contains(cap) {
            rules.push(allow(names));
        }
    }
    if !bounding.contains(&Capability::SysAdmin) {
        // clone without namespace flags; s390 swaps clone's first two arguments.
        let index = if matches!(goarch, "s390" | "s390x") { 1 } else { 0 };
        rules.push(allow_if(
            "clone",
            index,
            ScmpCmpMaskedEq,
            CLONE_NAMESPACE_FLAGS,
            Some(0),
        ));
        let mut clone3 = LinuxSyscall::default();
        clone3.set_names(vec!["clone3".into()]);
        clone3.set_action(LinuxSeccompAction::ScmpActErrno);
        clone3.set_errno_ret(Some(ENOSYS));
        rules.push(clone3);
    }
    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(LinuxSeccompAction::ScmpActErrno);
    profile.set_architectures(Some(arches(goarch)));
    profile.set_syscalls(Some(rules));
    profile
}

/// Checks `localhostProfile` as kubelet's validation does (`validateLocalDescendingPath`):
/// relative, no `..` component, not empty. Errors: [`SecurityError::LocalhostPath`].
pub fn check_localhost_path(field: &str, profile: &str) -> Result<(), SecurityError> {
    let path = Path::new(profile);
    let ok = !profile.is_empty()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if ok {
        return Ok(());
    }
    Err(SecurityError::LocalhostPath {
        field: field.to_string(),
        profile: profile.to_string(),
    })
}

/// The file a Localhost profile names: `root` joined with `profile`, as kubelet builds
/// the absolute path it hands containerd (`filepath.Join(profileRootPath,
/// *LocalhostProfile)` in `kuberuntime/helpers.go`). Errors: [`check_localhost_path`]'s.
pub fn localhost_file(root: &Path, field: &str, profile: &str) -> Result<PathBuf, SecurityError> {
    check_localhost_path(field, profile)?;
    Ok(root.join(profile))
}

/// `value` (at `key` of the profile) as a `T` of oci-spec's enums, or a
/// [`SecurityError::ProfileField`] saying it is an unknown `what`.
fn known<T: serde::de::DeserializeOwned>(
    field: &str,
    path: &Path,
    key: &str,
    value: &serde_json::Value,
    what: &str,
) -> Result<(), SecurityError> {
    serde_json::from_value::<T>(value.clone())
        .map(drop)
        .map_err(|_| SecurityError::ProfileField {
            field: field.to_string(),
            path: path.to_path_buf(),
            key: key.to_string(),
            reason: format!("unknown {what} {value}"),
        })
}

/// Reads a Localhost seccomp profile from `path` (named by Pod field `field`).
///
/// The file holds an OCI `LinuxSeccomp` in JSON, the shape containerd 1.6 to 2.x read
/// (`contrib/seccomp/seccomp.go` `WithProfile`: `json.Unmarshal` into
/// `specs.LinuxSeccomp`). Docker's format passes too, as under containerd: its
/// `syscalls[].names`, `action`, `args` are the same, and its extra keys (`archMap`,
/// `comment`, `includes`, `excludes`) are ignored as containerd ignores them, so Docker's
/// capability-conditional rules apply unconditionally.
///
/// Unknown actions, operators, architectures and flags are refused here, naming the
/// profile's field (`syscalls[3].action`), where containerd would pass them on for the
/// runtime to refuse.
///
/// Errors: [`SecurityError::ReadProfile`] (missing file), [`SecurityError::ParseProfile`]
/// (not JSON, wrong shape), [`SecurityError::ProfileField`].
pub fn load_localhost(field: &str, path: &Path) -> Result<LinuxSeccomp, SecurityError> {
    let text = std::fs::read(path).map_err(|source| SecurityError::ReadProfile {
        field: field.to_string(),
        path: path.to_path_buf(),
        source,
    })?;
    let parse_err = |source| SecurityError::ParseProfile {
        field: field.to_string(),
        path: path.to_path_buf(),
        source,
    };
    let value: serde_json::Value = serde_json::from_slice(&text).map_err(parse_err)?;
    if let Some(a) = value.get("defaultAction") {
        known::<LinuxSeccompAction>(field, path, "defaultAction", a, "action")?;
    }
    for (i, a) in value
        .get("architectures")
        .and_then(|a| a.as_array())
        .into_iter()
        .flatten()
        .enumerate()
    {
        known::<Arch>(field, path, &format!("architectures[{i}]"), a, "architecture")?;
    }
    for (i, f) in value
        .get("flags")
        .and_then(|a| a.as_array())
        .into_iter()
        .flatten()
        .enumerate()
    {
        known::<LinuxSeccompFilterFlag>(field, path, &format!("flags[{i}]"), f, "flag")?;
    }
    for (i, s) in value
        .get("syscalls")
        .and_then(|a| a.as_array())
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let Some(a) = s.get("action") {
            known::<LinuxSeccompAction>(field, path, &format!("syscalls[{i}].action"), a, "action")?;
        }
        for (j, arg) in s
            .get("args")
            .and_then(|a| a.as_array())
            .into_iter()
            .flatten()
            .enumerate()
        {
            if let Some(op) = arg.get("op") {
                known::<LinuxSeccompOperator>(field, path, &format!("syscalls[{i}].args[{j}].op"), op, "operator")?;
            }
        }
    }
    serde_json::from_value(value).map_err(parse_err)
}

/// The `linux.seccomp` of a container: none when `privileged` (containerd's
/// `generateSeccompSpecOpts`) or `Unconfined`; [`runtime_default`] for `bounding`; or
/// the Localhost file under `root`.
///
/// Errors: [`localhost_file`]'s and [`load_localhost`]'s.
pub fn seccomp(
    profile: &SeccompProfile,
    privileged: bool,
    bounding: &HashSet<Capability>,
    root: &Path,
) -> Result<Option<LinuxSeccomp>, SecurityError> {
    if privileged {
        return Ok(None);
    }
    match profile {
        SeccompProfile::Unconfined => Ok(None),
        SeccompProfile::RuntimeDefault => Ok(Some(runtime_default(bounding))),
        SeccompProfile::Localhost { field, profile } => {
            load_localhost(field, &localhost_file(root, field, profile)?).map(Some)
        }
    }
}

/// Whether the kernel has AppArmor enabled, read under `sys` (`/sys`): securityfs's
/// `kernel/security/apparmor` exists and `module/apparmor/parameters/enabled` starts with
/// `Y` (runc's `apparmor.IsEnabled`, which containerd's `hostSupports` extends).
pub fn apparmor_enabled(sys: &Path) -> bool {
    sys.join("kernel/security/apparmor").is_dir()
        && std::fs::read(sys.join("module/apparmor/parameters/enabled")).is_ok_and(|b| b.first() == Some(&b'Y'))
}

/// The `process.apparmorProfile` of a container in embedded mode, after containerd's
/// `GenerateApparmorSpecOpts`, with the kernel's state read under `sys` (`/sys`):
/// - no AppArmor on the host: `Unconfined` or no profile gives none; `RuntimeDefault` or
///   `Localhost` is an error ([`SecurityError::AppArmorUnsupported`]), as containerd's
///   "apparmor is not supported";
/// - AppArmor on: `Unconfined` none; `Localhost` the profile, which must be loaded (listed
///   in `kernel/security/apparmor/profiles`, [`SecurityError::AppArmorNotLoaded`]);
///   `RuntimeDefault` none for a privileged container, else refused
///   ([`SecurityError::AppArmorRuntimeDefault`]): containerd generates and loads its
///   `cri-containerd.apparmor.d` there, which peapod does not. Where the manifest names no
///   profile, peapod applies none (containerd would apply its default).
pub fn apparmor_profile(
    profile: Option<&AppArmorProfile>,
    privileged: bool,
    sys: &Path,
) -> Result<Option<String>, SecurityError> {
    let Some(profile) = profile else {
        return Ok(None);
    };
    let securityfs = sys.join("kernel/security/apparmor");
    if !apparmor_enabled(sys) {
        return match profile {
            AppArmorProfile::Unconfined => Ok(None),
            AppArmorProfile::RuntimeDefault { field } => Err(SecurityError::AppArmorUnsupported {
                field: field.clone(),
                kind: "RuntimeDefault",
                path: securityfs,
            }),
            AppArmorProfile::Localhost { field, .. } => Err(SecurityError::AppArmorUnsupported {
                field: field.clone(),
                kind: "Localhost",
                path: securityfs,
            }),
        };
    }
    match profile {
        AppArmorProfile::Unconfined => Ok(None),
        AppArmorProfile::RuntimeDefault { .. } if privileged => Ok(None),
        AppArmorProfile::RuntimeDefault { field } => {
            Err(SecurityError::AppArmorRuntimeDefault { field: field.clone() })
        }
        AppArmorProfile::Localhost { field, profile } => {
            let list = securityfs.join("profiles");
            let loaded = std::fs::read_to_string(&list).map_err(|source| SecurityError::ReadAppArmorProfiles {
                field: field.clone(),
                path: list.clone(),
                source,
            })?;
            // Lines are `name (mode)`; names may hold spaces, the mode does not.
            let found = loaded
                .lines()
                .any(|l| l.rsplit_once(" (").is_some_and(|(name, _)| name == profile));
            if found {
                Ok(Some(profile.clone()))
            } else {
                Err(SecurityError::AppArmorNotLoaded {
                    field: field.clone(),
                    profile: profile.clone(),
                    path: list,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// containerd's default capabilities (`oci.defaultUnixCaps`), what a container keeps
    /// unless its manifest adds or drops some.
    fn default_caps() -> HashSet<Capability> {
        use Capability::*;
        [
            Chown,
            DacOverride,
            Fsetid,
            Fowner,
            Mknod,
            NetRaw,
            Setgid,
            Setuid,
            Setfcap,
            Setpcap,
            NetBindService,
            SysChroot,
            Kill,
            AuditWrite,
        ]
        .into_iter()
        .collect()
    }

    /// The action the profile takes for a call of `name` with no argument rule matching
    /// (`None`: only conditional rules name it), or the default action.
    fn unconditional(p: &LinuxSeccomp, name: &str) -> Option<(LinuxSeccompAction, Option<u32>)> {
        p.syscalls()
            .iter()
            .flatten()
            .filter(|s| s.names().iter().any(|n| n == name))
            .find(|s| s.args().as_ref().is_none_or(|a| a.is_empty()))
            .map(|s| (s.action(), s.errno_ret()))
    }

    fn rules_for<'a>(p: &'a LinuxSeccomp, name: &'a str) -> impl Iterator<Item = &'a LinuxSyscall> {
        p.syscalls()
            .iter()
            .flatten()
            .filter(move |s| s.names().iter().any(|n| n == name))
    }

    const NEVER: [&str; 10] = [
        "keyctl",
        "add_key",
        "request_key",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "userfaultfd",
        "kexec_load",
        "open_by_handle_at",
        "pivot_root",
    ];

    #[test]
    fn runtime_default_fails_with_eperm_and_keeps_kernel_attack_surface_closed() {
        let p = default_profile("amd64", (6, 18), &default_caps());
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), None, "containerd sets none: EPERM");
        assert_eq!(
            p.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
        );
        for name in NEVER.iter().chain(&["unshare", "setns", "mount", "bpf", "sethostname"]) {
            assert!(rules_for(&p, name).next().is_none(), "{name} is allowed without caps");
        }
        for name in [
            "read",
            "execve",
            "mkdir",
            "sched_yield",
            "arch_prctl",
            "chroot",
            "ptrace",
            "seccomp",
        ] {
            assert_eq!(
                unconditional(&p, name),
                Some((LinuxSeccompAction::ScmpActAllow, None)),
                "{name}"
            );
        }
        // clone: only without namespace flags; clone3: ENOSYS so libc falls back to clone.
        let clone: Vec<_> = rules_for(&p, "clone").collect();
        assert_eq!(clone.len(), 1);
        let arg = clone[0].args().as_ref().unwrap()[0];
        assert_eq!((arg.index(), arg.op()), (0, LinuxSeccompOperator::ScmpCmpMaskedEq));
        assert_eq!((arg.value(), arg.value_two()), (0x7e02_0000, Some(0)));
        assert_eq!(
            unconditional(&p, "clone3"),
            Some((LinuxSeccompAction::ScmpActErrno, Some(38)))
        );
        // personality: five personas; socket: everything but AF_ALG (38) and AF_VSOCK (40).
        let personas: Vec<u64> = rules_for(&p, "personality")
            .map(|s| s.args().as_ref().unwrap()[0].value())
            .collect();
        assert_eq!(personas, [0, 8, 0x20000, 0x20008, 0xffff_ffff]);
        let socket: Vec<(LinuxSeccompOperator, u64)> = rules_for(&p, "socket")
            .map(|s| {
                let a = s.args().as_ref().unwrap()[0];
                (a.op(), a.value())
            })
            .collect();
        use LinuxSeccompOperator::*;
        assert_eq!(socket, [(ScmpCmpLt, 38), (ScmpCmpEq, 39), (ScmpCmpGt, 40)]);
        // Before 4.8, ptrace is not in the list.
        let old = default_profile("amd64", (4, 4), &default_caps());
        assert!(rules_for(&old, "ptrace").next().is_none());
    }

    #[test]
    fn runtime_default_opens_what_each_capability_allows_as_containerd_does() {
        let mut caps = default_caps();
        caps.insert(Capability::SysAdmin);
        let p = default_profile("amd64", (6, 18), &caps);
        for name in [
            "unshare",
            "setns",
            "mount",
            "umount2",
            "bpf",
            "sethostname",
            "clone",
            "clone3",
        ] {
            assert_eq!(
                unconditional(&p, name),
                Some((LinuxSeccompAction::ScmpActAllow, None)),
                "{name} with CAP_SYS_ADMIN"
            );
        }
        assert_eq!(rules_for(&p, "clone3").count(), 1, "no ENOSYS rule with CAP_SYS_ADMIN");
        for name in NEVER.iter().filter(|n| **n != "open_by_handle_at") {
            assert!(rules_for(&p, name).next().is_none(), "{name} with CAP_SYS_ADMIN");
        }
        for (cap, name) in [
            (Capability::SysPtrace, "kcmp"),
            (Capability::SysModule, "finit_module"),
            (Capability::SysTime, "clock_settime"),
            (Capability::SysBoot, "reboot"),
            (Capability::DacReadSearch, "open_by_handle_at"),
            (Capability::Bpf, "bpf"),
            (Capability::Perfmon, "perf_event_open"),
            (Capability::SysNice, "mbind"),
            (Capability::SysRawio, "iopl"),
        ] {
            let without = default_profile("amd64", (6, 18), &default_caps());
            assert!(rules_for(&without, name).next().is_none(), "{name} without {cap}");
            let mut caps = default_caps();
            caps.insert(cap);
            let with = default_profile("amd64", (6, 18), &caps);
            assert_eq!(
                unconditional(&with, name),
                Some((LinuxSeccompAction::ScmpActAllow, None)),
                "{name} with {cap}"
            );
        }
        // s390x: clone's flags are its second argument.
        let s390 = default_profile("s390x", (6, 18), &default_caps());
        let arg = rules_for(&s390, "clone").next().unwrap().args().as_ref().unwrap()[0];
        assert_eq!(arg.index(), 1);
        assert!(rules_for(&s390, "s390_runtime_instr").next().is_some());
        assert!(rules_for(&s390, "arch_prctl").next().is_none());
    }

    #[test]
    fn the_allow_list_is_containerds() {
        assert_eq!(ALLOWED.len(), 363, "containerd v2.3.4 lists 363 syscalls");
        let unique: HashSet<_> = ALLOWED.iter().collect();
        assert_eq!(unique.len(), ALLOWED.len(), "a name twice");
        assert_eq!((ALLOWED[0], ALLOWED[ALLOWED.len() - 1]), ("accept", "writev"));
        // What the profile serializes to is what the sandbox reads back.
        let p = runtime_default(&default_caps());
        let back: LinuxSeccomp = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn localhost_paths_follow_kubelets_rule() {
        for ok in ["profile.json", "a/b.json", "./x.json"] {
            assert!(check_localhost_path("f", ok).is_ok(), "{ok}");
        }
        for bad in ["", "/etc/x.json", "../x.json", "a/../../x.json", "a/.."] {
            let e = check_localhost_path("spec.securityContext.seccompProfile.localhostProfile", bad).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with("spec.securityContext.seccompProfile.localhostProfile: "),
                "{e}"
            );
        }
        assert_eq!(
            localhost_file(Path::new("/var/lib/kubelet/seccomp"), "f", "p/x.json").unwrap(),
            Path::new("/var/lib/kubelet/seccomp/p/x.json")
        );
    }

    fn load(text: &str) -> Result<LinuxSeccomp, SecurityError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        std::fs::write(&path, text).unwrap();
        load_localhost(
            "spec.containers[0].securityContext.seccompProfile.localhostProfile",
            &path,
        )
    }

    #[test]
    fn localhost_profiles_load_oci_and_docker_shapes() {
        let p = load(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1,
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
                             {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                              "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}]}"#,
        )
        .unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActAllow);
        assert_eq!(p.default_errno_ret(), Some(1));
        let rules = p.syscalls().as_ref().unwrap();
        assert_eq!(rules[0].errno_ret(), Some(38));
        assert_eq!(rules[1].args().as_ref().unwrap()[0].value(), 8);
        // Docker's format: archMap, comment, includes are ignored, as containerd ignores them.
        let docker = load(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
                "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
                "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "comment": "",
                              "includes": {"caps": ["CAP_SYS_ADMIN"]}, "excludes": {}}]}"#,
        )
        .unwrap();
        assert_eq!(docker.architectures(), &None);
        assert_eq!(docker.syscalls().as_ref().unwrap()[0].names(), &["read"]);
    }

    #[test]
    fn bad_localhost_profiles_name_the_field_and_the_file() {
        let field = "spec.containers[0].securityContext.seccompProfile.localhostProfile";
        let msg = |r: Result<LinuxSeccomp, SecurityError>| sandbox::error::chain(&r.unwrap_err());
        for (text, expect) in [
            (
                r#"{"defaultAction": "SCMP_ACT_FOO"}"#,
                r#"defaultAction: unknown action "SCMP_ACT_FOO""#,
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ALLOW"}, {"names": ["b"], "action": "KILL"}]}"#,
                r#"syscalls[1].action: unknown action "KILL""#,
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_LIKE"}]}]}"#,
                r#"syscalls[0].args[0].op: unknown operator "SCMP_CMP_LIKE""#,
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_PDP11"]}"#,
                r#"architectures[0]: unknown architecture "SCMP_ARCH_PDP11""#,
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "flags": ["NOPE"]}"#,
                r#"flags[0]: unknown flag "NOPE""#,
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["a"]"#,
                "not a seccomp profile",
            ),
            (r#"{"syscalls": []}"#, "not a seccomp profile"),
        ] {
            let m = msg(load(text));
            assert!(m.starts_with(&format!("{field}: ")), "{m}");
            assert!(m.contains("p.json"), "the file is named: {m}");
            assert!(m.contains(expect), "{m} (expected {expect})");
        }
        let m = msg(load_localhost(field, Path::new("/nonexistent/p.json")));
        assert!(
            m.starts_with(&format!(
                "{field}: cannot read the seccomp profile /nonexistent/p.json: "
            )),
            "{m}"
        );
    }

    #[test]
    fn privileged_and_unconfined_get_no_filter() {
        let root = Path::new("/nonexistent");
        let caps = default_caps();
        assert_eq!(seccomp(&SeccompProfile::Unconfined, false, &caps, root).unwrap(), None);
        assert_eq!(
            seccomp(&SeccompProfile::RuntimeDefault, true, &caps, root).unwrap(),
            None
        );
        let missing = SeccompProfile::Localhost {
            field: "f".into(),
            profile: "x.json".into(),
        };
        assert_eq!(
            seccomp(&missing, true, &caps, root).unwrap(),
            None,
            "privileged reads nothing"
        );
        assert!(seccomp(&missing, false, &caps, root).is_err());
        assert!(seccomp(&SeccompProfile::RuntimeDefault, false, &caps, root)
            .unwrap()
            .is_some());
    }

    #[test]
    fn apparmor_follows_containerd_on_hosts_with_and_without_it() {
        let sys = tempfile::tempdir().unwrap();
        let field = "spec.containers[0].securityContext.appArmorProfile.localhostProfile";
        let local = AppArmorProfile::Localhost {
            field: field.into(),
            profile: "peapod-test".into(),
        };
        let default = AppArmorProfile::RuntimeDefault {
            field: "spec.securityContext.appArmorProfile.type".into(),
        };
        // No AppArmor: nothing or Unconfined pass, the rest is refused.
        assert!(!apparmor_enabled(sys.path()));
        assert_eq!(apparmor_profile(None, false, sys.path()).unwrap(), None);
        assert_eq!(
            apparmor_profile(Some(&AppArmorProfile::Unconfined), false, sys.path()).unwrap(),
            None
        );
        let e = apparmor_profile(Some(&local), false, sys.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!("{field}: Localhost: AppArmor is not enabled")),
            "{e}"
        );
        assert!(apparmor_profile(Some(&default), false, sys.path()).is_err());
        // AppArmor on, one profile loaded.
        let fs = sys.path().join("kernel/security/apparmor");
        std::fs::create_dir_all(&fs).unwrap();
        std::fs::create_dir_all(sys.path().join("module/apparmor/parameters")).unwrap();
        std::fs::write(sys.path().join("module/apparmor/parameters/enabled"), "Y\n").unwrap();
        std::fs::write(fs.join("profiles"), "peapod-test (enforce)\nother (complain)\n").unwrap();
        assert!(apparmor_enabled(sys.path()));
        assert_eq!(
            apparmor_profile(Some(&local), false, sys.path()).unwrap().as_deref(),
            Some("peapod-test")
        );
        let missing = AppArmorProfile::Localhost {
            field: field.into(),
            profile: "peapod-te".into(),
        };
        let e = apparmor_profile(Some(&missing), false, sys.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"peapod-te\" is not loaded"), "{e}");
        assert_eq!(apparmor_profile(Some(&default), true, sys.path()).unwrap(), None);
        let e = apparmor_profile(Some(&default), false, sys.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("spec.securityContext.appArmorProfile.type: RuntimeDefault: "),
            "{e}"
        );
    }
}
