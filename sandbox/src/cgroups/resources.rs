//! Writes OCI `linux.resources` to a cgroup's controller files (v1 and v2), one field at a
//! time, with cgroups-rs's controllers doing the file formats.
//!
//! The rules are runc's (this replaces cgroups-rs's `FsManager::set`, whose manager parsed
//! `/proc/self/mountinfo` and `/proc/self/cgroup` on every create only to write files):
//! the order cpuset, cpu, memory, pids, blkio, hugetlb, network, devices, then `unified`
//! (v2 only, see `unified`); v1 memory and memory+swap written in the order the kernel
//! accepts (a new swap limit above the current memory limit first); v2 memory as runc's
//! `fs2.setMemory` (`cpu.weight` from the shares, [`super::shares_to_weight`];
//! `memory.swap.max` from OCI's memory+swap, [`swap_v2`]; limits at or below the current
//! usage refused). Kernel memory (`kernel`, `kernelTCP`) is ignored, as runc 1.1+ ignores
//! it. Device rules are written here only on v1 (v2's are an eBPF program, see
//! [`super::Cgroup::update`]).

use cgroups_rs::fs::blkio::BlkIoController;
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::cpuset::CpuSetController;
use cgroups_rs::fs::devices::{DevicePermissions, DeviceType, DevicesController};
use cgroups_rs::fs::hugetlb::HugeTlbController;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::net_cls::NetClsController;
use cgroups_rs::fs::net_prio::NetPrioController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::{Cgroup, ControllIdentifier, Controller, MaxValue, Subsystem};
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxMemory, LinuxResources};

use super::CgroupFiles;

/// A field of `linux.resources` that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// The field needs a controller this cgroup does not have (not mounted on v1, not
    /// enabled in the parent's `cgroup.subtree_control` on v2).
    #[error("{field}: no {controller} controller in this cgroup")]
    NoController {
        /// The OCI field, e.g. `linux.resources.cpu`.
        field: &'static str,
        /// The controller, e.g. `cpu`.
        controller: &'static str,
    },
    /// The value cannot be applied as given (the rule is named in `cause`).
    #[error("{field}: {cause}")]
    Invalid {
        /// The OCI field.
        field: &'static str,
        /// Why.
        cause: String,
    },
    /// The kernel refused the write.
    #[error("{field}: {source}")]
    Write {
        /// The OCI field.
        field: &'static str,
        /// The file and errno, from cgroups-rs.
        #[source]
        source: cgroups_rs::fs::error::Error,
    },
    /// The kernel refused a write peapod makes without cgroups-rs.
    #[error("{field}: write {}: {source}", file.display())]
    WriteFile {
        /// The OCI field.
        field: &'static str,
        /// The cgroup file.
        file: std::path::PathBuf,
        /// The errno.
        #[source]
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, ResourceError>;

/// Writes `r` to `cg` (whose files are `files`). Fields that are absent are left as they
/// are; on error the fields before the failing one stay written.
pub(super) fn apply(cg: &Cgroup, files: &CgroupFiles, r: &LinuxResources) -> Result<()> {
    let v2 = files.v2;
    if let Some(cpu) = r.cpu() {
        cpuset(cg, cpu)?;
        self::cpu(cg, cpu, v2)?;
    }
    if let Some(memory) = r.memory() {
        if v2 {
            memory_v2(cg, files, memory)?;
        } else {
            memory_v1(cg, files, memory)?;
        }
    }
    if let Some(pids) = r.pids() {
        let max = if pids.limit() > 0 {
            MaxValue::Value(pids.limit())
        } else {
            MaxValue::Max
        };
        let field = "linux.resources.pids.limit";
        controller::<PidController>(cg, field, "pids")?
            .set_pid_max(max)
            .map_err(write(field))?;
    }
    if let Some(blkio) = r.block_io() {
        block_io(cg, blkio)?;
    }
    if let Some(limits) = r.hugepage_limits() {
        let field = "linux.resources.hugepageLimits";
        let c = controller::<HugeTlbController>(cg, field, "hugetlb")?;
        // Page sizes this kernel does not have are skipped, as runc skips them.
        for l in limits.iter().filter(|l| c.size_supported(l.page_size())) {
            let limit =
                u64::try_from(l.limit()).map_err(|_| invalid(field, format!("negative limit {}", l.limit())))?;
            c.set_limit_in_bytes(l.page_size(), limit).map_err(write(field))?;
        }
    }
    if let Some(network) = r.network() {
        if let Some(class_id) = network.class_id() {
            let field = "linux.resources.network.classID";
            controller::<NetClsController>(cg, field, "net_cls")?
                .set_class(u64::from(class_id))
                .map_err(write(field))?;
        }
        if let Some(priorities) = network.priorities() {
            let field = "linux.resources.network.priorities";
            let c = controller::<NetPrioController>(cg, field, "net_prio")?;
            for p in priorities {
                c.set_if_prio(p.name(), u64::from(p.priority())).map_err(write(field))?;
            }
        }
    }
    if let Some(rules) = r.devices().as_ref().filter(|_| !v2) {
        devices_v1(cg, rules)?;
    }
    if let Some(map) = r.unified() {
        unified(files, map)?;
    }
    Ok(())
}

/// `linux.resources.unified` (cgroup v2 only, as runc's `fs2.setUnified`): each value is
/// written, in key order and after every other field (so it has the last word), to the
/// cgroup's file of that name, e.g. `memory.swap.max` (kubelet's way to turn swap off on
/// v2) or `memory.high`. A key must be a plain file name (no `/`, not `.` or `..`); the
/// file is opened as runc opens it (write, truncate), without creating it and without
/// following a symlink. On v1 a
/// non-empty map is refused, as runc refuses it.
pub(super) fn unified(files: &CgroupFiles, map: &std::collections::HashMap<String, String>) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let field = "linux.resources.unified";
    if map.is_empty() {
        return Ok(());
    }
    if !files.v2 {
        return Err(invalid(
            field,
            "cgroup v1 has no unified hierarchy to write it to".into(),
        ));
    }
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    for key in keys {
        if key.is_empty() || key.contains(['/', '\0']) || key == "." || key == ".." {
            return Err(invalid(field, format!("{key:?} is not a file name of the cgroup")));
        }
        let file = files.file("", key);
        let written = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&file)
            .and_then(|mut f| f.write_all(map[key].as_bytes()));
        if let Err(source) = written {
            return Err(ResourceError::WriteFile { field, file, source });
        }
    }
    Ok(())
}

fn cpuset(cg: &Cgroup, cpu: &LinuxCpu) -> Result<()> {
    if cpu.cpus().is_none() && cpu.mems().is_none() {
        return Ok(());
    }
    let c = controller::<CpuSetController>(cg, "linux.resources.cpu.cpus", "cpuset")?;
    if let Some(cpus) = cpu.cpus() {
        c.set_cpus(cpus).map_err(write("linux.resources.cpu.cpus"))?;
    }
    if let Some(mems) = cpu.mems() {
        c.set_mems(mems).map_err(write("linux.resources.cpu.mems"))?;
    }
    Ok(())
}

fn cpu(cg: &Cgroup, cpu: &LinuxCpu, v2: bool) -> Result<()> {
    let wanted = cpu.shares().is_some_and(|s| s != 0)
        || cpu.quota().is_some()
        || cpu.period().is_some()
        || cpu.realtime_runtime().is_some()
        || cpu.realtime_period().is_some();
    if !wanted {
        return Ok(());
    }
    let c = controller::<CpuController>(cg, "linux.resources.cpu", "cpu")?;
    if let Some(shares) = cpu.shares().filter(|s| *s != 0) {
        let value = if v2 { super::shares_to_weight(shares) } else { shares };
        c.set_shares(value).map_err(write("linux.resources.cpu.shares"))?;
    }
    if let Some(quota) = cpu.quota() {
        c.set_cfs_quota(quota).map_err(write("linux.resources.cpu.quota"))?;
    }
    if let Some(period) = cpu.period() {
        c.set_cfs_period(period).map_err(write("linux.resources.cpu.period"))?;
    }
    if let Some(runtime) = cpu.realtime_runtime() {
        c.set_rt_runtime(runtime)
            .map_err(write("linux.resources.cpu.realtimeRuntime"))?;
    }
    if let Some(period) = cpu.realtime_period() {
        c.set_rt_period_us(period)
            .map_err(write("linux.resources.cpu.realtimePeriod"))?;
    }
    Ok(())
}

/// v1: `memory.limit_in_bytes` and `memory.memsw.limit_in_bytes` in the order the kernel
/// accepts (memsw may never be below the memory limit), then the soft limit, the OOM
/// killer switch and swappiness. An unlimited memory limit without a swap limit makes
/// swap unlimited too (runc).
fn memory_v1(cg: &Cgroup, files: &CgroupFiles, m: &LinuxMemory) -> Result<()> {
    let field = "linux.resources.memory";
    let c = controller::<MemController>(cg, field, "memory")?;
    let limit = m.limit().unwrap_or(0);
    let mut swap = m.swap().unwrap_or(0);
    if limit == -1 && swap == 0 {
        swap = -1;
    }
    let set_limit = |c: &MemController| c.set_limit(limit).map_err(write("linux.resources.memory.limit"));
    let set_swap = |c: &MemController| c.set_memswap_limit(swap).map_err(write("linux.resources.memory.swap"));
    let current = || -> i64 {
        files
            .read("memory", "memory.limit_in_bytes")
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(i64::MAX)
    };
    if limit != 0 && swap != 0 && (swap == -1 || current() < swap) {
        set_swap(c)?;
        set_limit(c)?;
    } else {
        if limit != 0 {
            set_limit(c)?;
        }
        if swap != 0 {
            set_swap(c)?;
        }
    }
    if let Some(reservation) = m.reservation() {
        c.set_soft_limit(reservation)
            .map_err(write("linux.resources.memory.reservation"))?;
    }
    if m.disable_oom_killer().unwrap_or_default() {
        c.disable_oom_killer()
            .map_err(write("linux.resources.memory.disableOOMKiller"))?;
    }
    if let Some(swappiness) = m.swappiness() {
        let field = "linux.resources.memory.swappiness";
        if swappiness > 100 {
            return Err(invalid(field, format!("{swappiness} is above 100")));
        }
        c.set_swappiness(swappiness).map_err(write(field))?;
    }
    Ok(())
}

/// v2, runc's `fs2.setMemory`: nothing unless one of limit, swap or reservation is set;
/// a limit at or below what the cgroup already uses (`memory.current`) is refused (runc's
/// `CheckMemoryUsage`); then `memory.swap.max` ([`swap_v2`]; left alone when swap is
/// unset, `0` when swap equals the memory limit), `memory.max` and `memory.low` (0 leaves
/// each alone, -1 writes `max`).
fn memory_v2(cg: &Cgroup, files: &CgroupFiles, m: &LinuxMemory) -> Result<()> {
    let limit = m.limit().unwrap_or(0);
    let swap = m.swap().unwrap_or(0);
    let reservation = m.reservation().unwrap_or(0);
    if limit == 0 && swap == 0 && reservation == 0 {
        return Ok(());
    }
    let c = controller::<MemController>(cg, "linux.resources.memory", "memory")?;
    if limit > 0 || swap > 0 {
        let usage: u64 = files
            .read("memory", "memory.current")
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        for (field, value) in [
            ("linux.resources.memory.swap", swap),
            ("linux.resources.memory.limit", limit),
        ] {
            if u64::try_from(value).is_ok_and(|v| v > 0 && v <= usage) {
                return Err(invalid(
                    field,
                    format!("{value} is not above the current usage {usage}"),
                ));
            }
        }
    }
    let swap_max = swap_v2(swap, limit)?;
    if swap_max != 0 || swap > 0 {
        c.set_memswap_limit(swap_max)
            .map_err(write("linux.resources.memory.swap"))?;
    }
    if limit != 0 {
        c.set_limit(limit).map_err(write("linux.resources.memory.limit"))?;
    }
    match reservation {
        0 => {}
        // cgroups-rs would write "-1", which `memory.low` refuses.
        r if r < 0 => {
            let file = files.file("memory", "memory.low");
            std::fs::write(&file, "max").map_err(|source| ResourceError::WriteFile {
                field: "linux.resources.memory.reservation",
                file: file.clone(),
                source,
            })?;
        }
        r => c
            .set_soft_limit(r)
            .map_err(write("linux.resources.memory.reservation"))?,
    }
    Ok(())
}

/// OCI's memory+swap limit (`swap`) as cgroup v2's swap-only `memory.swap.max`, runc's
/// `ConvertMemorySwapToCgroupV2Value`: 0 is unset and -1 unlimited; with an unlimited
/// memory limit and no swap limit, swap is unlimited too; else swap minus memory, which
/// needs a memory limit (not unlimited) and a swap limit not below it.
pub fn swap_v2(swap: i64, limit: i64) -> Result<i64> {
    let field = "linux.resources.memory.swap";
    match (swap, limit) {
        (0, -1) => Ok(-1),
        (-1 | 0, _) => Ok(swap),
        (_, -1 | 0) => Err(invalid(field, "a swap limit needs a memory limit on cgroup v2".into())),
        (_, l) if l < 0 => Err(invalid("linux.resources.memory.limit", format!("{l} is negative"))),
        (s, l) if s < l => Err(invalid(field, format!("{s} is below the memory limit {l}"))),
        (s, l) => Ok(s - l),
    }
}

fn block_io(cg: &Cgroup, b: &LinuxBlockIo) -> Result<()> {
    let field = "linux.resources.blockIO";
    let empty = b.weight().is_none()
        && b.leaf_weight().is_none()
        && b.weight_device().is_none()
        && b.throttle_read_bps_device().is_none()
        && b.throttle_write_bps_device().is_none()
        && b.throttle_read_iops_device().is_none()
        && b.throttle_write_iops_device().is_none();
    if empty {
        return Ok(());
    }
    let c = controller::<BlkIoController>(cg, field, "blkio")?;
    if let Some(w) = b.weight() {
        c.set_weight(u64::from(w))
            .map_err(write("linux.resources.blockIO.weight"))?;
    }
    if let Some(w) = b.leaf_weight() {
        c.set_leaf_weight(u64::from(w))
            .map_err(write("linux.resources.blockIO.leafWeight"))?;
    }
    for d in b.weight_device().iter().flatten() {
        let field = "linux.resources.blockIO.weightDevice";
        let (major, minor) = device_numbers(field, d.major(), d.minor())?;
        if let Some(w) = d.weight() {
            c.set_weight_for_device(major, minor, u64::from(w))
                .map_err(write(field))?;
        }
        if let Some(w) = d.leaf_weight() {
            c.set_leaf_weight_for_device(major, minor, u64::from(w))
                .map_err(write(field))?;
        }
    }
    type Throttle = fn(&BlkIoController, u64, u64, u64) -> cgroups_rs::fs::error::Result<()>;
    let throttles: [(&'static str, _, Throttle); 4] = [
        (
            "linux.resources.blockIO.throttleReadBpsDevice",
            b.throttle_read_bps_device(),
            BlkIoController::throttle_read_bps_for_device,
        ),
        (
            "linux.resources.blockIO.throttleWriteBpsDevice",
            b.throttle_write_bps_device(),
            BlkIoController::throttle_write_bps_for_device,
        ),
        (
            "linux.resources.blockIO.throttleReadIOPSDevice",
            b.throttle_read_iops_device(),
            BlkIoController::throttle_read_iops_for_device,
        ),
        (
            "linux.resources.blockIO.throttleWriteIOPSDevice",
            b.throttle_write_iops_device(),
            BlkIoController::throttle_write_iops_for_device,
        ),
    ];
    for (field, devices, set) in throttles {
        for d in devices.iter().flatten() {
            let (major, minor) = device_numbers(field, d.major(), d.minor())?;
            set(c, major, minor, d.rate()).map_err(write(field))?;
        }
    }
    Ok(())
}

/// v1 `devices.allow`/`devices.deny`, one rule at a time in the given order.
fn devices_v1(cg: &Cgroup, rules: &[LinuxDeviceCgroup]) -> Result<()> {
    let field = "linux.resources.devices";
    let c = controller::<DevicesController>(cg, field, "devices")?;
    for rule in rules {
        let kind = rule.typ().unwrap_or_default();
        let devtype = DeviceType::from_char(kind.as_str().chars().next())
            .ok_or_else(|| invalid(field, format!("unknown device type {:?}", kind.as_str())))?;
        let perms: Vec<DevicePermissions> = rule
            .access()
            .as_deref()
            .unwrap_or_default()
            .chars()
            .filter_map(|p| match p {
                'r' => Some(DevicePermissions::Read),
                'w' => Some(DevicePermissions::Write),
                'm' => Some(DevicePermissions::MkNod),
                _ => None,
            })
            .collect();
        let (major, minor) = (rule.major().unwrap_or(0), rule.minor().unwrap_or(0));
        if rule.allow() {
            c.allow_device(devtype, major, minor, &perms).map_err(write(field))?;
        } else {
            c.deny_device(devtype, major, minor, &perms).map_err(write(field))?;
        }
    }
    Ok(())
}

fn device_numbers(field: &'static str, major: i64, minor: i64) -> Result<(u64, u64)> {
    match (u64::try_from(major), u64::try_from(minor)) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        _ => Err(invalid(field, format!("negative device number {major}:{minor}"))),
    }
}

fn controller<'a, T>(cg: &'a Cgroup, field: &'static str, name: &'static str) -> Result<&'a T>
where
    &'a T: From<&'a Subsystem>,
    T: Controller + ControllIdentifier,
{
    cg.controller_of::<T>().ok_or(ResourceError::NoController {
        field,
        controller: name,
    })
}

fn write(field: &'static str) -> impl Fn(cgroups_rs::fs::error::Error) -> ResourceError {
    move |source| ResourceError::Write { field, source }
}

fn invalid(field: &'static str, cause: String) -> ResourceError {
    ResourceError::Invalid { field, cause }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn unified_values_are_written_to_existing_files_of_the_cgroup_only() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("pod/c");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("memory.swap.max"), "max").unwrap();
        std::fs::write(dir.join("memory.high"), "max").unwrap();
        std::fs::write(root.path().join("pod/secret"), "kept").unwrap();
        std::os::unix::fs::symlink(root.path().join("pod/secret"), dir.join("pids.max")).unwrap();
        let files = CgroupFiles::new(root.path(), "pod/c", true);

        unified(&files, &map(&[("memory.swap.max", "0"), ("memory.high", "1048576")])).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("memory.swap.max")).unwrap(), "0");
        assert_eq!(std::fs::read_to_string(dir.join("memory.high")).unwrap(), "1048576");

        for key in ["../secret", "..", ".", "", "a/b"] {
            let e = unified(&files, &map(&[(key, "x")])).unwrap_err().to_string();
            assert!(
                e.contains("linux.resources.unified") && e.contains("not a file name"),
                "{key:?}: {e}"
            );
        }
        // Never created, never followed out of the cgroup.
        let e = unified(&files, &map(&[("memory.nosuch", "1")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("linux.resources.unified") && e.contains("memory.nosuch"),
            "{e}"
        );
        assert!(!dir.join("memory.nosuch").exists());
        assert!(unified(&files, &map(&[("pids.max", "1")])).is_err());
        assert_eq!(std::fs::read_to_string(root.path().join("pod/secret")).unwrap(), "kept");

        let v1 = CgroupFiles::new(root.path(), "pod/c", false);
        let e = unified(&v1, &map(&[("memory.high", "1")])).unwrap_err().to_string();
        assert!(e.contains("linux.resources.unified") && e.contains("v1"), "{e}");
        unified(&v1, &HashMap::new()).unwrap();
    }

    #[test]
    fn swap_is_converted_to_v2_as_runc_does() {
        assert_eq!(swap_v2(0, -1).unwrap(), -1);
        assert_eq!(swap_v2(0, 1 << 20).unwrap(), 0);
        assert_eq!(swap_v2(-1, 1 << 20).unwrap(), -1);
        assert!(swap_v2(3 << 20, -1).is_err());
        assert_eq!(swap_v2(3 << 20, 1 << 20).unwrap(), 2 << 20);
        assert_eq!(swap_v2(1 << 20, 1 << 20).unwrap(), 0);
        let e = swap_v2(1 << 20, 0).unwrap_err().to_string();
        assert!(
            e.contains("linux.resources.memory.swap") && e.contains("needs a memory limit"),
            "{e}"
        );
        let e = swap_v2(1 << 20, 2 << 20).unwrap_err().to_string();
        assert!(e.contains("below the memory limit"), "{e}");
        let e = swap_v2(1 << 20, -2).unwrap_err().to_string();
        assert!(
            e.contains("linux.resources.memory.limit") && e.contains("negative"),
            "{e}"
        );
    }
}
