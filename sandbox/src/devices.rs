//! The device cgroup: which device nodes a container may open and create.
//!
//! A device node is only a name for a (type, major, minor) triple; whoever can make one
//! (CAP_MKNOD, a default capability) or finds one in the image reaches the device unless
//! the kernel's device cgroup refuses. On cgroup v1 that is the `devices` controller
//! (`devices.allow`/`devices.deny` rules, `Documentation/admin-guide/cgroup-v1/devices.rst`);
//! cgroup v2 has no such controller: the kernel runs every `BPF_PROG_TYPE_CGROUP_DEVICE`
//! program attached to the cgroup and its ancestors, and an open or mknod goes through
//! only if all of them return 1 (EPERM otherwise).
//!
//! From the OCI rules (`linux.resources.devices`, runtime spec "Device allowlist") plus
//! the OCI default devices appended after them, as runc's specconv appends its
//! `AllowedDevices`, [`DevicePolicy`] computes what the v1 kernel would hold after
//! writing the rules in order, the model runc's `devices` emulator follows:
//!
//! - a policy is a default (allow or deny everything) and a set of exceptions, each a
//!   type (`b`/`c`), a major and a minor (or wildcards) and an access (`r`, `w`, `m`);
//! - a rule of type `a` (all devices) sets the default and clears the exceptions
//!   (`deny a` first is how containerd's default spec starts);
//! - a rule whose verdict differs from the default adds an exception (merging the access
//!   of an identical one), a rule with the default's verdict removes access from the
//!   identical exception; removing from a wildcard one only partly (`deny c 1:3 w` after
//!   `allow c *:* rwm`) is refused, as the v1 kernel would ignore it.
//!
//! The exceptions decide as the kernel's v1 `devcgroup_legacy_check_permission` does: with
//! a default deny, a request (one or more of r/w/m at once, e.g. `O_RDWR` is r+w) is
//! allowed when one exception matches the device and holds all the requested access;
//! with a default allow, it is denied when one exception matches and shares any of it.
//!
//! On v2 [`DevicePolicy::program`] turns the policy into eBPF, the shape runc's
//! `devicefilter.go` emits (runc, crun and youki all attach such a program): load the
//! context's type, access, major and minor, one block per exception that returns the
//! exception's verdict when it matches, and the default at the end. The program is
//! attached to the container's own cgroup (where its processes live) with
//! `BPF_F_ALLOW_MULTI`; an update attaches the new program before detaching the old ones,
//! so for a moment both apply (all must allow: never wider than either).

use std::collections::BTreeMap;
use std::fmt;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType};

use crate::sys::BpfInsn;

/// A `linux.resources.devices` rule peapod cannot apply faithfully.
#[derive(Debug, thiserror::Error)]
pub enum DeviceRuleError {
    /// A field has a value outside what the kernel takes.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, e.g. `linux.resources.devices[2].access`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A deny rule would punch a hole in a wildcard allow (or the reverse); the v1 kernel
    /// silently ignores such a rule, runc refuses it.
    #[error("{field}: {}", self.reason())]
    WildcardHole {
        /// The rule, e.g. `linux.resources.devices[3]`.
        field: String,
        /// The rule in `devices.list` form.
        rule: String,
        /// The wildcard exception it overlaps, in `devices.list` form.
        wildcard: String,
    },
}

impl DeviceRuleError {
    /// The field at fault, e.g. `linux.resources.devices[2].access`.
    pub fn field(&self) -> &str {
        match self {
            Self::Invalid { field, .. } | Self::WildcardHole { field, .. } => field,
        }
    }

    /// What is wrong, without the field.
    pub fn reason(&self) -> String {
        match self {
            Self::Invalid { reason, .. } => reason.clone(),
            Self::WildcardHole { rule, wildcard, .. } => format!(
                "{rule} cannot take access away from part of the wildcard rule {wildcard}; list the \
                 allowed devices one by one instead"
            ),
        }
    }
}

/// Block or character device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeviceKind {
    /// `b`; `BPF_DEVCG_DEV_BLOCK` (1).
    Block,
    /// `c`; `BPF_DEVCG_DEV_CHAR` (2).
    Char,
}

impl DeviceKind {
    fn bpf(self) -> i32 {
        match self {
            Self::Block => 1,
            Self::Char => 2,
        }
    }
}

/// Access bits, the values of `BPF_DEVCG_ACC_*`: mknod 1, read 2, write 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Access(u8);

impl Access {
    /// `m`: create a node (mknod).
    pub const MKNOD: Self = Self(1);
    /// `r`: open for reading.
    pub const READ: Self = Self(2);
    /// `w`: open for writing.
    pub const WRITE: Self = Self(4);
    /// `rwm`.
    pub const ALL: Self = Self(7);

    /// Parses `r`, `w`, `m` in any order (OCI `access`); `None` on any other character.
    pub fn parse(s: &str) -> Option<Self> {
        s.chars().try_fold(Self(0), |a, c| match c {
            'r' => Some(Self(a.0 | 2)),
            'w' => Some(Self(a.0 | 4)),
            'm' => Some(Self(a.0 | 1)),
            _ => None,
        })
    }

    /// The union.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// True when no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True when every bit of `other` is set here.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// True when a bit is set in both.
    pub const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    const fn minus(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (bit, c) in [(2, 'r'), (4, 'w'), (1, 'm')] {
            if self.0 & bit != 0 {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// The devices an exception covers: a type, and a major and minor (`None`: any).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeviceMatch {
    /// Block or character.
    pub kind: DeviceKind,
    /// Major number, `None` for `*`.
    pub major: Option<u32>,
    /// Minor number, `None` for `*`.
    pub minor: Option<u32>,
}

impl DeviceMatch {
    fn covers(&self, kind: DeviceKind, major: u32, minor: u32) -> bool {
        self.kind == kind && self.major.is_none_or(|m| m == major) && self.minor.is_none_or(|m| m == minor)
    }
}

impl fmt::Display for DeviceMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |v: Option<u32>| v.map_or("*".to_string(), |v| v.to_string());
        let t = match self.kind {
            DeviceKind::Block => 'b',
            DeviceKind::Char => 'c',
        };
        write!(f, "{t} {}:{}", n(self.major), n(self.minor))
    }
}

/// The OCI default devices (runc's `AllowedDevices`, libcontainer/specconv): mknod of any
/// character or block device (`c *:* m`, `b *:* m`: a node is harmless while it cannot be
/// opened), and `rwm` on null (1:3), zero (1:5), full (1:7), random (1:8), urandom (1:9),
/// tty (5:0), ptmx (5:2), the pty slaves (136:*) and /dev/net/tun (10:200, dropped in runc
/// 1.2.0-rc1 and restored for compatibility, runc #3468; Debian's runc 1.1.5 has it).
pub fn default_device_rules() -> Vec<LinuxDeviceCgroup> {
    let rule = |typ: LinuxDeviceType, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut b = LinuxDeviceCgroupBuilder::default().allow(true).typ(typ).access(access);
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().expect("all fields set")
    };
    let c = LinuxDeviceType::C;
    vec![
        rule(c, None, None, "m"),
        rule(LinuxDeviceType::B, None, None, "m"),
        rule(c, Some(1), Some(3), "rwm"),
        rule(c, Some(1), Some(5), "rwm"),
        rule(c, Some(1), Some(7), "rwm"),
        rule(c, Some(1), Some(8), "rwm"),
        rule(c, Some(1), Some(9), "rwm"),
        rule(c, Some(5), Some(0), "rwm"),
        rule(c, Some(5), Some(2), "rwm"),
        rule(c, Some(136), None, "rwm"),
        rule(c, Some(10), Some(200), "rwm"),
    ]
}

/// The device rule that starts containerd's default spec (`oci.populateDefaultUnixSpec`):
/// deny every device (`a *:* rwm`, type, major and minor unset).
pub fn deny_all_rule() -> LinuxDeviceCgroup {
    LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()
        .expect("all fields set")
}

/// What the device cgroup allows: a default and exceptions to it (module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePolicy {
    /// True: everything is allowed but the exceptions; false: the reverse.
    pub default_allow: bool,
    /// The exceptions and their access, ordered by device.
    pub exceptions: BTreeMap<DeviceMatch, Access>,
}

/// A major or minor: unset or -1 is `*`, otherwise 0..=u32::MAX.
fn number(v: Option<i64>, field: &str) -> Result<Option<u32>, DeviceRuleError> {
    match v {
        None | Some(-1) => Ok(None),
        Some(n) => u32::try_from(n).map(Some).map_err(|_| DeviceRuleError::Invalid {
            field: field.to_string(),
            reason: format!("{n} is not a device number (0..=4294967295, or -1 for any)"),
        }),
    }
}

impl DevicePolicy {
    /// The policy for the spec's `rules` (`linux.resources.devices`, in order) followed by
    /// [`default_device_rules`], starting from deny-all (a new v1 cgroup's exceptions
    /// are replaced the same way, see [`DevicePolicy::v1_rules`]).
    ///
    /// Errors name the rule's field (`linux.resources.devices[i]...`): an unknown `type`,
    /// an `access` that is empty or has a character other than `r`, `w`, `m`, a negative
    /// major or minor other than -1, a type `a` rule naming a major or minor (the kernel
    /// would apply it to every device), and a rule punching a hole in a wildcard.
    pub fn from_oci(rules: &[LinuxDeviceCgroup]) -> Result<Self, DeviceRuleError> {
        let mut policy = Self {
            default_allow: false,
            exceptions: BTreeMap::new(),
        };
        let defaults = default_device_rules();
        let all = rules
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("linux.resources.devices[{i}]"), r))
            .chain(defaults.iter().map(|r| ("the OCI default devices".to_string(), r)));
        for (field, rule) in all {
            policy.apply(&field, rule)?;
        }
        Ok(policy)
    }

    fn apply(&mut self, field: &str, rule: &LinuxDeviceCgroup) -> Result<(), DeviceRuleError> {
        let major = number(rule.major(), &format!("{field}.major"))?;
        let minor = number(rule.minor(), &format!("{field}.minor"))?;
        let access = match rule.access().as_deref() {
            None => None,
            Some(s) => Some(
                Access::parse(s)
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| DeviceRuleError::Invalid {
                        field: format!("{field}.access"),
                        reason: format!("{s:?} is not a combination of r, w and m"),
                    })?,
            ),
        };
        let kind = match rule.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => {
                if major.is_some() || minor.is_some() {
                    return Err(DeviceRuleError::Invalid {
                        field: field.to_string(),
                        reason: "type \"a\" (every device) with a major or minor: the kernel applies it to \
                                 every device; use type \"b\" or \"c\""
                            .into(),
                    });
                }
                // The kernel's v1 `a` rule: a new default, no exceptions.
                self.default_allow = rule.allow();
                self.exceptions.clear();
                return Ok(());
            }
            LinuxDeviceType::B => DeviceKind::Block,
            LinuxDeviceType::C | LinuxDeviceType::U => DeviceKind::Char,
            other => {
                return Err(DeviceRuleError::Invalid {
                    field: format!("{field}.type"),
                    reason: format!("{other:?} is not a, b or c"),
                })
            }
        };
        let access = access.ok_or_else(|| DeviceRuleError::Invalid {
            field: format!("{field}.access"),
            reason: "unset: name the access (r, w, m) a block or character rule grants or takes".into(),
        })?;
        let key = DeviceMatch { kind, major, minor };
        if rule.allow() != self.default_allow {
            let e = self.exceptions.entry(key).or_default();
            *e = e.union(access);
            return Ok(());
        }
        // The default's verdict: take access away from the identical exception. A wider
        // (wildcard) exception sharing the access would keep granting it: refused.
        let wider = self.exceptions.iter().find(|(m, a)| {
            **m != key
                && m.kind == kind
                && (m.major.is_none() || m.major == major)
                && (m.minor.is_none() || m.minor == minor)
                && a.intersects(access)
        });
        if let Some((m, a)) = wider {
            return Err(DeviceRuleError::WildcardHole {
                field: field.to_string(),
                rule: format!("{key} {access}"),
                wildcard: format!("{m} {a}"),
            });
        }
        if let Some(e) = self.exceptions.get_mut(&key) {
            *e = e.minus(access);
            if e.is_empty() {
                self.exceptions.remove(&key);
            }
        }
        Ok(())
    }

    /// Whether the kernel's v1 check passes `access` (one or more bits) to device
    /// `kind` `major`:`minor` under this policy: the reference the program must match.
    pub fn allows(&self, kind: DeviceKind, major: u32, minor: u32, access: Access) -> bool {
        let mut matching = self.exceptions.iter().filter(|(m, _)| m.covers(kind, major, minor));
        if self.default_allow {
            !matching.any(|(_, a)| a.intersects(access))
        } else {
            matching.any(|(_, a)| a.contains(access))
        }
    }

    /// The rules to write to a v1 cgroup's `devices.allow`/`devices.deny`, in order: the
    /// default as an `a` rule (which clears the exceptions the cgroup had), then one rule
    /// per exception with the opposite verdict. Majors and minors are explicit (-1 for
    /// `*`).
    pub fn v1_rules(&self) -> Vec<LinuxDeviceCgroup> {
        let mut rules = vec![LinuxDeviceCgroupBuilder::default()
            .allow(self.default_allow)
            .typ(LinuxDeviceType::A)
            .major(-1)
            .minor(-1)
            .access("rwm")
            .build()
            .expect("all fields set")];
        for (m, a) in &self.exceptions {
            let typ = match m.kind {
                DeviceKind::Block => LinuxDeviceType::B,
                DeviceKind::Char => LinuxDeviceType::C,
            };
            rules.push(
                LinuxDeviceCgroupBuilder::default()
                    .allow(!self.default_allow)
                    .typ(typ)
                    .major(m.major.map_or(-1, i64::from))
                    .minor(m.minor.map_or(-1, i64::from))
                    .access(a.to_string())
                    .build()
                    .expect("all fields set"),
            );
        }
        rules
    }

    /// The eBPF program for a v2 cgroup (`BPF_PROG_TYPE_CGROUP_DEVICE`): returns 1
    /// (allow) or 0 (deny, the open or mknod fails with EPERM) for the context
    /// `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`, where
    /// `access_type` is `(access << 16) | type`. An allow-all policy without exceptions
    /// (a privileged container's `a *:* rwm`) is `r0 = 1; exit`.
    pub fn program(&self) -> Vec<BpfInsn> {
        let mut p = Vec::new();
        if !self.exceptions.is_empty() {
            p.extend([
                // r2 = type (low 16 bits of access_type), r3 = access (high 16 bits).
                BpfInsn::new(op::LDX_W, 2, 1, 0, 0),
                BpfInsn::new(op::AND32_K, 2, 0, 0, 0xffff),
                BpfInsn::new(op::LDX_W, 3, 1, 0, 0),
                BpfInsn::new(op::RSH32_K, 3, 0, 0, 16),
                // r4 = major, r5 = minor.
                BpfInsn::new(op::LDX_W, 4, 1, 4, 0),
                BpfInsn::new(op::LDX_W, 5, 1, 8, 0),
            ]);
        }
        let verdict = i32::from(!self.default_allow);
        for (m, a) in &self.exceptions {
            // Jumps go to the next block: their offsets are patched once its start is known.
            let mut jumps = Vec::new();
            let mut jne = |p: &mut Vec<BpfInsn>, insn: BpfInsn| {
                jumps.push(p.len());
                p.push(insn);
            };
            jne(&mut p, BpfInsn::new(op::JNE_K, 2, 0, 0, m.kind.bpf()));
            if self.default_allow {
                // A deny exception matches when it shares any requested access.
                p.push(BpfInsn::new(op::MOV32_X, 1, 3, 0, 0));
                p.push(BpfInsn::new(op::AND32_K, 1, 0, 0, i32::from(a.0)));
                jne(&mut p, BpfInsn::new(op::JEQ_K, 1, 0, 0, 0));
            } else if *a != Access::ALL {
                // An allow exception matches when it holds all the requested access.
                p.push(BpfInsn::new(op::MOV32_X, 1, 3, 0, 0));
                p.push(BpfInsn::new(op::AND32_K, 1, 0, 0, i32::from(a.0)));
                jne(&mut p, BpfInsn::new(op::JNE_X, 1, 3, 0, 0));
            }
            if let Some(major) = m.major {
                jne(&mut p, BpfInsn::new(op::JNE_K, 4, 0, 0, imm(major)));
            }
            if let Some(minor) = m.minor {
                jne(&mut p, BpfInsn::new(op::JNE_K, 5, 0, 0, imm(minor)));
            }
            p.push(BpfInsn::new(op::MOV32_K, 0, 0, 0, verdict));
            p.push(BpfInsn::new(op::EXIT, 0, 0, 0, 0));
            let next = p.len();
            for j in jumps {
                p[j].off = i16::try_from(next - j - 1).expect("a block is a few instructions");
            }
        }
        p.push(BpfInsn::new(op::MOV32_K, 0, 0, 0, i32::from(self.default_allow)));
        p.push(BpfInsn::new(op::EXIT, 0, 0, 0, 0));
        p
    }
}

/// A device number as the 32-bit immediate the JNE compares (sign-extended to 64 bits
/// by the kernel): majors and minors beyond i32::MAX (the kernel's are 12 and 20 bits)
/// become a constant no device has.
fn imm(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(-1)
}

/// The opcodes the program uses (`include/uapi/linux/bpf.h`, `bpf_common.h`).
mod op {
    /// BPF_LDX | BPF_MEM | BPF_W: `dst = *(u32 *)(src + off)`.
    pub const LDX_W: u8 = 0x61;
    /// BPF_ALU | BPF_AND | BPF_K: `w(dst) &= imm`.
    pub const AND32_K: u8 = 0x54;
    /// BPF_ALU | BPF_RSH | BPF_K: `w(dst) >>= imm`.
    pub const RSH32_K: u8 = 0x74;
    /// BPF_ALU | BPF_MOV | BPF_X: `w(dst) = w(src)`.
    pub const MOV32_X: u8 = 0xbc;
    /// BPF_ALU | BPF_MOV | BPF_K: `w(dst) = imm`.
    pub const MOV32_K: u8 = 0xb4;
    /// BPF_JMP | BPF_JNE | BPF_K: `if dst != imm goto +off`.
    pub const JNE_K: u8 = 0x55;
    /// BPF_JMP | BPF_JNE | BPF_X: `if dst != src goto +off`.
    pub const JNE_X: u8 = 0x5d;
    /// BPF_JMP | BPF_JEQ | BPF_K: `if dst == imm goto +off`.
    pub const JEQ_K: u8 = 0x15;
    /// BPF_JMP | BPF_EXIT: return r0.
    pub const EXIT: u8 = 0x95;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `prog` on a device context the way the kernel would, for the opcodes above;
    /// panics on anything else, on a jump out of the program or a read of an unset register.
    /// The casts are the machine's: 32-bit ALU ops truncate, immediates sign-extend.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)]
    fn run(prog: &[BpfInsn], kind: DeviceKind, major: u32, minor: u32, access: Access) -> u64 {
        let ctx = [(u32::from(access.0) << 16) | kind.bpf() as u32, major, minor];
        let mut r: [Option<u64>; 11] = [None; 11];
        r[1] = Some(u64::MAX); // the context pointer; only LDX off r1 reads it
        let mut pc = 0usize;
        let get = |r: &[Option<u64>; 11], i: u8| r[usize::from(i)].expect("register read before set");
        loop {
            let i = prog[pc];
            let imm64 = i64::from(i.imm) as u64;
            let jump = |pc: usize| (pc as i64 + 1 + i64::from(i.off)) as usize;
            pc = match i.code {
                op::LDX_W => {
                    assert_eq!(i.src(), 1, "loads only from the context");
                    assert_eq!(r[1], Some(u64::MAX), "r1 still the context");
                    r[usize::from(i.dst())] = Some(u64::from(ctx[usize::from(i.off as u8) / 4]));
                    pc + 1
                }
                op::AND32_K => {
                    r[usize::from(i.dst())] = Some(u64::from((get(&r, i.dst()) as u32) & (i.imm as u32)));
                    pc + 1
                }
                op::RSH32_K => {
                    r[usize::from(i.dst())] = Some(u64::from((get(&r, i.dst()) as u32) >> i.imm));
                    pc + 1
                }
                op::MOV32_X => {
                    r[usize::from(i.dst())] = Some(u64::from(get(&r, i.src()) as u32));
                    pc + 1
                }
                op::MOV32_K => {
                    r[usize::from(i.dst())] = Some(u64::from(i.imm as u32));
                    pc + 1
                }
                op::JNE_K if get(&r, i.dst()) != imm64 => jump(pc),
                op::JEQ_K if get(&r, i.dst()) == imm64 => jump(pc),
                op::JNE_X if get(&r, i.dst()) != get(&r, i.src()) => jump(pc),
                op::JNE_K | op::JEQ_K | op::JNE_X => pc + 1,
                op::EXIT => return get(&r, 0),
                other => panic!("opcode {other:#x}"),
            };
            assert!(pc < prog.len(), "jump out of the program");
        }
    }

    fn rule(allow: bool, typ: &str, major: Option<i64>, minor: Option<i64>, access: &str) -> LinuxDeviceCgroup {
        let mut b = LinuxDeviceCgroupBuilder::default().allow(allow).access(access);
        let typ = match typ {
            "a" => Some(LinuxDeviceType::A),
            "b" => Some(LinuxDeviceType::B),
            "c" => Some(LinuxDeviceType::C),
            _ => None,
        };
        if let Some(t) = typ {
            b = b.typ(t);
        }
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().unwrap()
    }

    const ACCESSES: [Access; 7] = [
        Access(1),
        Access(2),
        Access(3),
        Access(4),
        Access(5),
        Access(6),
        Access(7),
    ];

    /// The program decides like [`DevicePolicy::allows`] for every access combination
    /// on a grid of devices around the rules' numbers.
    fn assert_program_matches_policy(p: &DevicePolicy) {
        let prog = p.program();
        for kind in [DeviceKind::Block, DeviceKind::Char] {
            for major in [0, 1, 4, 5, 8, 10, 136, 254, 4095] {
                for minor in [0, 1, 2, 3, 5, 7, 8, 9, 200, 229, 1_048_575] {
                    for a in ACCESSES {
                        let want = p.allows(kind, major, minor, a);
                        let got = run(&prog, kind, major, minor, a);
                        assert_eq!(got, u64::from(want), "{kind:?} {major}:{minor} {a} under {p:?}");
                    }
                }
            }
        }
    }

    fn containerd_default() -> DevicePolicy {
        DevicePolicy::from_oci(&[deny_all_rule()]).unwrap()
    }

    #[test]
    fn default_rules_allow_only_the_oci_default_devices() {
        let p = containerd_default();
        assert!(!p.default_allow);
        let c = DeviceKind::Char;
        let b = DeviceKind::Block;
        let rw = Access::READ.union(Access::WRITE);
        for (major, minor) in [
            (1, 3),
            (1, 5),
            (1, 7),
            (1, 8),
            (1, 9),
            (5, 0),
            (5, 2),
            (136, 0),
            (136, 7),
            (10, 200),
        ] {
            assert!(p.allows(c, major, minor, rw), "c {major}:{minor}");
        }
        // The host's disk, a ram disk, /dev/mem, /dev/kmsg, /dev/console, /dev/fuse: no open.
        for (kind, major, minor) in [
            (b, 254, 0),
            (b, 8, 0),
            (b, 1, 0),
            (c, 1, 1),
            (c, 1, 11),
            (c, 5, 1),
            (c, 10, 229),
        ] {
            assert!(!p.allows(kind, major, minor, Access::READ), "{kind:?} {major}:{minor}");
            assert!(!p.allows(kind, major, minor, Access::WRITE), "{kind:?} {major}:{minor}");
            // ...but mknod, as runc allows.
            assert!(p.allows(kind, major, minor, Access::MKNOD), "{kind:?} {major}:{minor}");
            assert!(!p.allows(kind, major, minor, Access::ALL), "{kind:?} {major}:{minor}");
        }
        assert_program_matches_policy(&p);
        // Without any spec rule the policy is the same: the default is deny.
        assert_eq!(DevicePolicy::from_oci(&[]).unwrap(), p);
    }

    #[test]
    fn default_program_has_runcs_shape() {
        let prog = containerd_default().program();
        // 6 loads, then per exception: type, access check (3) for `m`-only ones, major,
        // minor, mov, exit; then the default.
        assert_eq!(
            prog[..6].iter().map(|i| i.code).collect::<Vec<_>>(),
            [0x61, 0x54, 0x61, 0x74, 0x61, 0x61]
        );
        assert_eq!(prog.iter().filter(|i| i.code == op::EXIT).count(), 12);
        let last = &prog[prog.len() - 2..];
        assert_eq!(
            last,
            [
                BpfInsn::new(op::MOV32_K, 0, 0, 0, 0),
                BpfInsn::new(op::EXIT, 0, 0, 0, 0)
            ]
        );
    }

    #[test]
    fn privileged_allow_all_is_a_trivial_program() {
        let p = DevicePolicy::from_oci(&[rule(true, "a", None, None, "rwm")]).unwrap();
        assert!(p.default_allow && p.exceptions.is_empty());
        assert_eq!(
            p.program(),
            [
                BpfInsn::new(op::MOV32_K, 0, 0, 0, 1),
                BpfInsn::new(op::EXIT, 0, 0, 0, 0)
            ]
        );
        assert_program_matches_policy(&p);
        // containerd's privileged spec: deny all, then allow all.
        let p2 = DevicePolicy::from_oci(&[deny_all_rule(), rule(true, "", None, None, "rwm")]).unwrap();
        assert_eq!(p2, p);
    }

    #[test]
    fn last_rule_wins_and_access_merges() {
        let p = DevicePolicy::from_oci(&[
            deny_all_rule(),
            rule(true, "b", Some(8), Some(0), "r"),
            rule(true, "b", Some(8), Some(0), "w"),
            rule(true, "c", Some(10), Some(229), "rwm"),
            rule(false, "c", Some(10), Some(229), "w"),
            rule(true, "b", Some(8), None, "r"),
        ])
        .unwrap();
        let (b, c) = (DeviceKind::Block, DeviceKind::Char);
        let rw = Access::READ.union(Access::WRITE);
        assert!(p.allows(b, 8, 0, rw), "r and w of 8:0 merge into rw");
        assert!(p.allows(b, 8, 3, Access::READ));
        assert!(!p.allows(b, 8, 3, rw), "no one exception holds rw for 8:3");
        assert!(p.allows(c, 10, 229, Access::READ));
        assert!(!p.allows(c, 10, 229, Access::WRITE));
        assert!(!p.allows(c, 10, 229, rw));
        assert_program_matches_policy(&p);
    }

    #[test]
    fn deny_exceptions_under_allow_all_refuse_any_shared_access() {
        let p = DevicePolicy::from_oci(&[
            rule(true, "a", None, None, "rwm"),
            rule(false, "b", None, None, "rw"),
            rule(false, "c", Some(1), Some(1), "w"),
        ])
        .unwrap();
        assert!(p.default_allow);
        let (b, c) = (DeviceKind::Block, DeviceKind::Char);
        assert!(!p.allows(b, 254, 0, Access::READ));
        assert!(!p.allows(b, 254, 0, Access::READ.union(Access::MKNOD)));
        assert!(p.allows(b, 254, 0, Access::MKNOD));
        assert!(!p.allows(c, 1, 1, Access::READ.union(Access::WRITE)));
        assert!(p.allows(c, 1, 1, Access::READ));
        assert_program_matches_policy(&p);
    }

    #[test]
    fn a_later_deny_all_drops_earlier_allows() {
        let p = DevicePolicy::from_oci(&[rule(true, "b", Some(8), None, "rwm"), deny_all_rule()]).unwrap();
        assert!(!p.allows(DeviceKind::Block, 8, 0, Access::READ));
        assert_eq!(p, containerd_default());
    }

    #[test]
    fn v1_rules_start_with_the_default() {
        let rules = containerd_default().v1_rules();
        assert_eq!(rules[0].typ(), Some(LinuxDeviceType::A));
        assert!(!rules[0].allow());
        assert_eq!(rules.len(), 12);
        assert!(rules[1..]
            .iter()
            .all(|r| r.allow() && r.major().is_some() && r.minor().is_some()));
        // Re-reading the v1 rules gives the same policy.
        assert_eq!(DevicePolicy::from_oci(&rules).unwrap(), containerd_default());
    }

    #[test]
    fn bad_rules_name_the_field() {
        let err = |rules: &[LinuxDeviceCgroup]| DevicePolicy::from_oci(rules).unwrap_err().to_string();
        let e = err(&[deny_all_rule(), rule(true, "c", Some(1), Some(3), "rx")]);
        assert!(e.starts_with("linux.resources.devices[1].access:"), "{e}");
        let e = err(&[rule(true, "c", Some(-2), None, "r")]);
        assert!(e.starts_with("linux.resources.devices[0].major:"), "{e}");
        let e = err(&[rule(true, "c", Some(1), Some(1 << 33), "r")]);
        assert!(e.starts_with("linux.resources.devices[0].minor:"), "{e}");
        let e = err(&[rule(true, "a", Some(8), None, "r")]);
        assert!(
            e.starts_with("linux.resources.devices[0]:") && e.contains("every device"),
            "{e}"
        );
        let e = err(&[rule(true, "b", Some(8), None, "")]);
        assert!(e.starts_with("linux.resources.devices[0].access:"), "{e}");
        let e = err(&[
            deny_all_rule(),
            rule(true, "c", None, None, "rwm"),
            rule(false, "c", Some(1), Some(3), "w"),
        ]);
        assert!(
            e.starts_with("linux.resources.devices[2]:") && e.contains("c *:* rwm"),
            "{e}"
        );
    }
}
