//! The Task API's `Stats` payload: a container's cgroup usage ([`Stats`]) as the cgroup
//! v1 or v2 `Metrics` message, packed in an `Any`.
//!
//! containerd (and its CRI plugin's `ContainerStats`) unpacks the `Any` by its type URL,
//! `io.containerd.cgroups.v1.Metrics` on a v1 host and `io.containerd.cgroups.v2.Metrics`
//! on a v2 one, as runc's shim sends them (containerd
//! `cmd/containerd-shim-runc-v2/task/service.go` `Stats`). peapod fills what [`Stats`]
//! reads (CPU time, memory use, limit and peak, pids, OOM kills) and leaves the other
//! fields zero. Units follow each version's files: v1 CPU in nanoseconds
//! (`cpuacct.usage`), v2 in microseconds (`cpu.stat` `usage_usec`); memory in bytes. On
//! v2 the CPU, memory and IO pressure stall information ([`Psi`], percent and µs) goes in
//! each stat's `psi`, as containerd's cgroups package reports it.
//!
//! The same payloads serve the Sandbox API's `SandboxMetrics`, for the pod cgroup.

use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics as v2;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::MessageField;
use sandbox::cgroups::{Pressure, PressureLine, Psi, Stats};

/// The metrics message could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("encode cgroup {version} metrics")]
pub struct MetricsError {
    /// `v1` or `v2`.
    pub version: &'static str,
    /// Cause, from protobuf.
    #[source]
    pub source: containerd_shim_protos::protobuf::Error,
}

/// `stats` as cgroup v1 `Metrics`: CPU total in ns, memory usage/limit/max in bytes
/// (no limit: `u64::MAX`, as the kernel reports it), pids current/limit (no limit: 0),
/// OOM kills in `memory_oom_control`.
pub fn v1(stats: &Stats) -> v1::Metrics {
    v1::Metrics {
        cpu: MessageField::some(v1::CPUStat {
            usage: MessageField::some(v1::CPUUsage {
                total: stats.cpu_usage_ns,
                ..Default::default()
            }),
            ..Default::default()
        }),
        memory: MessageField::some(v1::MemoryStat {
            usage: MessageField::some(v1::MemoryEntry {
                usage: stats.memory_usage,
                limit: stats.memory_limit.unwrap_or(u64::MAX),
                max: stats.memory_max_usage,
                ..Default::default()
            }),
            ..Default::default()
        }),
        pids: MessageField::some(v1::PidsStat {
            current: stats.pids_current,
            limit: stats.pids_limit.unwrap_or(0),
            ..Default::default()
        }),
        memory_oom_control: MessageField::some(v1::MemoryOomControl {
            oom_kill: stats.oom_kills,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn psi_line(l: &PressureLine) -> v2::PSIData {
    v2::PSIData {
        avg10: l.avg10,
        avg60: l.avg60,
        avg300: l.avg300,
        total: l.total,
        ..Default::default()
    }
}

fn psi_stats(p: Option<&Pressure>) -> MessageField<v2::PSIStats> {
    p.map_or_else(MessageField::none, |p| {
        MessageField::some(v2::PSIStats {
            some: MessageField::some(psi_line(&p.some)),
            full: p
                .full
                .as_ref()
                .map_or_else(MessageField::none, |f| MessageField::some(psi_line(f))),
            ..Default::default()
        })
    })
}

/// `stats` as cgroup v2 `Metrics`: CPU usage in µs, memory usage/limit/peak in bytes (no
/// limit: `u64::MAX`), pids current/limit (no limit: 0), OOM kills in `memory_events`,
/// and `psi`'s pressure in the CPU, memory and IO stats (absent where the kernel has none).
pub fn v2(stats: &Stats, psi: &Psi) -> v2::Metrics {
    v2::Metrics {
        cpu: MessageField::some(v2::CPUStat {
            usage_usec: stats.cpu_usage_ns / 1000,
            psi: psi_stats(psi.cpu.as_ref()),
            ..Default::default()
        }),
        memory: MessageField::some(v2::MemoryStat {
            usage: stats.memory_usage,
            usage_limit: stats.memory_limit.unwrap_or(u64::MAX),
            max_usage: stats.memory_max_usage,
            psi: psi_stats(psi.memory.as_ref()),
            ..Default::default()
        }),
        io: if psi.io.is_some() {
            MessageField::some(v2::IOStat {
                psi: psi_stats(psi.io.as_ref()),
                ..Default::default()
            })
        } else {
            MessageField::none()
        },
        pids: MessageField::some(v2::PidsStat {
            current: stats.pids_current,
            limit: stats.pids_limit.unwrap_or(0),
            ..Default::default()
        }),
        memory_events: MessageField::some(v2::MemoryEvents {
            oom_kill: stats.oom_kills,
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl crate::events::TypeUrl for v1::Metrics {
    const TYPE_URL: &'static str = "io.containerd.cgroups.v1.Metrics";
}

impl crate::events::TypeUrl for v2::Metrics {
    const TYPE_URL: &'static str = "io.containerd.cgroups.v2.Metrics";
}

/// `stats` packed as the `Any` of a `StatsResponse` (or a sandbox's `Metric`): v2
/// `Metrics` with `psi` when the cgroup is on the unified hierarchy (`cgroup_v2`), else v1.
///
/// Errors: [`MetricsError`] when protobuf cannot encode the message.
pub fn pack(stats: &Stats, psi: &Psi, cgroup_v2: bool) -> Result<Any, MetricsError> {
    let (packed, version) = if cgroup_v2 {
        (crate::events::pack(&v2(stats, psi)), "v2")
    } else {
        (crate::events::pack(&v1(stats)), "v1")
    };
    packed.map_err(|source| MetricsError { version, source })
}

#[cfg(test)]
mod tests {
    use containerd_shim_protos::protobuf::Message;

    use super::*;

    fn stats(limits: bool) -> Stats {
        Stats {
            cpu_usage_ns: 2_500_000,
            memory_usage: 4096,
            memory_limit: limits.then_some(1 << 20),
            memory_max_usage: 8192,
            pids_current: 3,
            pids_limit: limits.then_some(10),
            oom_kills: 1,
        }
    }

    #[test]
    fn v2_metrics_carry_cpu_in_microseconds_and_unlimited_as_max() {
        let psi = Psi {
            memory: Some(Pressure {
                some: PressureLine {
                    avg10: 2.5,
                    total: 99,
                    ..Default::default()
                },
                full: None,
            }),
            ..Default::default()
        };
        let any = pack(&stats(false), &psi, true).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        let m = v2::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!((m.memory.psi.some.avg10, m.memory.psi.some.total), (2.5, 99));
        assert!(m.memory.psi.full.is_none() && m.cpu.psi.is_none() && m.io.is_none());
        assert_eq!(m.cpu.usage_usec, 2500);
        assert_eq!(
            (m.memory.usage, m.memory.usage_limit, m.memory.max_usage),
            (4096, u64::MAX, 8192)
        );
        assert_eq!((m.pids.current, m.pids.limit), (3, 0));
        assert_eq!(m.memory_events.oom_kill, 1);
    }

    #[test]
    fn v1_metrics_carry_cpu_in_nanoseconds_and_the_limits() {
        let any = pack(&stats(true), &Psi::default(), false).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        let m = v1::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(m.cpu.usage.total, 2_500_000);
        assert_eq!(
            (m.memory.usage.usage, m.memory.usage.limit, m.memory.usage.max),
            (4096, 1 << 20, 8192)
        );
        assert_eq!((m.pids.current, m.pids.limit), (3, 10));
        assert_eq!(m.memory_oom_control.oom_kill, 1);
    }
}
