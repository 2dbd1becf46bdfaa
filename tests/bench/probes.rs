//! The exec-probe rows: what a kubelet's exec probe costs the node in CPU, embedded
//! (peapod's shim runs the probe itself, `shim/src/probes.rs` → `Service::probe_exec`)
//! against the kubelet's way (an `ExecSync` through containerd to the runtime's shim,
//! kubernetes#82440), for `/bin/true` every second (`periodSeconds: 1`).
//!
//! What is counted is the CPU of every process the probe involves, from the kernel's
//! cgroup CPU accounting (`tests/src/cpu.rs`, nanoseconds): a cgroup made for the
//! measurement holds the long-lived processes (containerd, whose shims start in it, for a
//! CRI handler; each pod's shim for the embedded one), so it also counts what they fork
//! (`runc exec`, `runc init`, peapod's init helper) until a runtime moves it into the
//! container's cgroup; the pods' cgroups count the rest (the probe's own process, the
//! pause and `sleep` processes, idle). The bench process itself, which issues the
//! ExecSyncs as the kubelet would, is not counted: the runc column leaves out the
//! kubelet's own share of a probe, which the embedded column has no counterpart of.
//!
//! 1. per probe, one pod: an idle window first (the pod running, no probe yet) gives the
//!    idle rate (containerd's and the shims' background), then the meter is read half a
//!    second after each probe's tick, so each one-second interval holds exactly one probe;
//!    a sample is that interval's CPU minus the idle rate's share;
//! 2. many pods: `pods` pods, each with its probe every second, the whole node's count
//!    over a window of `seconds` (nothing subtracted: containerd's background is part of
//!    what such a node pays).

use std::time::{Duration, Instant};

use anyhow::Result;
use peapod_tests::cpu::{self, CpuCgroup};

/// The probed command, as cheap as a probe gets.
pub const COMMAND: &str = "/bin/true";
/// The probe's timeout (`timeoutSeconds`, and the ExecSync's): longer than kubelet's 1 s
/// default, so a busy shared machine does not fail a probe the bench needs to succeed.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// The probes' period (`periodSeconds`).
pub const PERIOD: Duration = Duration::from_secs(1);
/// Pause after the pods run, before the first reading: start-up work settles.
pub const SETTLE: Duration = Duration::from_millis(500);

/// The per-probe row of one handler.
pub struct PerProbe {
    /// CPU per probe, ms, idle share subtracted, one per probe.
    pub samples_ms: Vec<f64>,
    /// The idle rate, CPU ms per second.
    pub idle_ms_per_s: f64,
}

/// The many-pods row of one handler.
pub struct ManyPods {
    /// CPU over the window, seconds.
    pub cpu_s: f64,
    /// The window, seconds.
    pub window_s: f64,
    /// Probes in the window: counted (CRI: ExecSyncs issued in it), or `pods × seconds`
    /// (embedded: the shims' probes are not counted one by one).
    pub probes: usize,
    pub counted: bool,
}

/// The name of the measurement's cgroup (unique per bench process and row).
pub fn cgroup_name(row: &str) -> String {
    format!("peapod-bench-cpu-{}-{row}", std::process::id())
}

/// The CPU counters of one measurement: its cgroup and the pods' cgroups.
pub struct Meter<'a> {
    pub group: &'a CpuCgroup,
    /// The pods' cgroups (cgroupfs form).
    pub pods: Vec<String>,
}

impl Meter<'_> {
    /// CPU used so far by all of them, nanoseconds.
    pub fn read(&self) -> Result<u64> {
        let mut total = self.group.usage_ns()?;
        for p in &self.pods {
            total += cpu::usage_ns(p)?;
        }
        Ok(total)
    }

    /// The CPU used over `window` with nothing going on, ms per second.
    pub fn idle_rate(&self, window: Duration) -> Result<f64> {
        let (t0, c0) = (Instant::now(), self.read()?);
        std::thread::sleep(window);
        let (t1, c1) = (Instant::now(), self.read()?);
        Ok(ns_to_ms(c1.saturating_sub(c0)) / (t1 - t0).as_secs_f64())
    }

    /// Row 1's readings: probe `k` (of `probes`) is due at `first + k × PERIOD`, where
    /// `at_tick(k)` runs it (CRI) or nothing does (the shim probes by itself); the meter is
    /// read half a period before the first and half a period after each. Returns each
    /// interval's CPU minus `idle_ms_per_s` of it, ms.
    pub fn per_probe(
        &self,
        first: Instant,
        probes: usize,
        idle_ms_per_s: f64,
        mut at_tick: impl FnMut(usize) -> Result<()>,
    ) -> Result<Vec<f64>> {
        let half = PERIOD / 2;
        sleep_until(first - half);
        let mut last = (Instant::now(), self.read()?);
        let mut samples = Vec::with_capacity(probes);
        for k in 0..probes {
            let tick = first + PERIOD * u32::try_from(k).unwrap_or(u32::MAX);
            sleep_until(tick);
            at_tick(k)?;
            sleep_until(tick + half);
            let now = (Instant::now(), self.read()?);
            let idle = idle_ms_per_s * (now.0 - last.0).as_secs_f64();
            samples.push(ns_to_ms(now.1.saturating_sub(last.1)) - idle);
            last = now;
        }
        Ok(samples)
    }
}

fn ns_to_ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Sleeps until `t` (at once when it has passed).
pub fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}
