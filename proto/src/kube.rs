//! Kubernetes' resource vocabulary and kubelet's conversions of it to cgroup values.
//!
//! - Quantities (`resource.Quantity`, `k8s.io/apimachinery/pkg/api/resource/quantity.go`):
//!   a decimal number with a decimal SI suffix (`m`, `k`, `M`, … `E`), a binary one
//!   (`Ki` … `Ei`) or an exponent (`1e3`). CPU is read in millicores and rounded up, as
//!   `Quantity.MilliValue` does; memory in bytes, rounded up.
//! - kubelet's CPU conversions (`pkg/kubelet/cm/helpers_linux.go`): a request becomes
//!   `cpu.shares` (`MilliCPUToShares`), a limit a CFS quota over a 100 ms period
//!   (`MilliCPUToQuota`); a memory limit is the cgroup's limit, with no swap.
//! - The default termination grace period (`terminationGracePeriodSeconds`).
//!
//! Used by the shim to size a pod cgroup from its sandbox's annotations
//! ([`crate::annotations`]), and by the CLI to read manifests and to size containers.

use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResources, LinuxResourcesBuilder};

/// Default termination grace period (Kubernetes' `terminationGracePeriodSeconds`), s.
pub const DEFAULT_GRACE_SECONDS: u64 = 30;
/// CFS period kubelet uses for CPU limits, µs.
pub const CPU_PERIOD_US: u64 = 100_000;

/// A value that is not a usable Kubernetes quantity. The caller names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not a quantity's syntax, or negative.
    #[error("{value:?} is not a Kubernetes quantity")]
    Syntax {
        /// The value as written.
        value: String,
    },
}

/// A Kubernetes resource quantity, parsed (`resource.Quantity`: decimal and binary SI
/// suffixes, exponents): a finite, non-negative number in the quantity's base unit
/// (cores for CPU, bytes for memory).
///
/// Errors: [`QuantityError::Syntax`] for anything else, negative values included.
pub fn parse_quantity(q: &str) -> Result<f64, QuantityError> {
    let bad = || QuantityError::Syntax { value: q.to_string() };
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let value: f64 = num.parse().map_err(|_| bad())?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse::<i32>().map_err(|_| bad())?),
        _ => return Err(bad()),
    };
    let v = value * mult;
    if !v.is_finite() || v < 0.0 {
        return Err(bad());
    }
    Ok(v)
}

/// Rounds up, ignoring binary floating-point noise below 1e-6 (`0.7 * 1000` is
/// 700.0000000000001, which must stay 700).
fn ceil_clean(v: f64) -> u64 {
    let cleaned = (v * 1e6).round() / 1e6;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // non-negative, finite
    let out = cleaned.ceil() as u64;
    out
}

/// CPU quantity in millicores, rounded up as Kubernetes does (`MilliValue`).
///
/// Errors: see [`parse_quantity`].
pub fn cpu_millis(q: &str) -> Result<u64, QuantityError> {
    Ok(ceil_clean(parse_quantity(q)? * 1000.0))
}

/// Memory quantity in bytes, rounded up.
///
/// Errors: see [`parse_quantity`].
pub fn memory_bytes(q: &str) -> Result<u64, QuantityError> {
    Ok(ceil_clean(parse_quantity(q)?))
}

/// Millicores as a quantity, the inverse of [`cpu_millis`]: `250` → `250m`.
pub fn format_millicores(millis: u64) -> String {
    format!("{millis}m")
}

/// Bytes as a quantity, the inverse of [`memory_bytes`]: a plain integer.
pub fn format_bytes(bytes: u64) -> String {
    bytes.to_string()
}

/// kubelet's `MilliCPUToShares`: `milliCPU * 1024 / 1000`, at least 2 (also for no request).
pub fn millis_to_shares(millis: u64) -> u64 {
    (millis * 1024 / 1000).max(2)
}

/// kubelet's `MilliCPUToQuota`: `milliCPU * period / 1000` µs, at least 1000 µs; `None`
/// (no quota) for no limit.
pub fn millis_to_quota(millis: u64, period_us: u64) -> Option<i64> {
    (millis > 0).then(|| i64::try_from((millis * period_us / 1000).max(1000)).unwrap_or(i64::MAX))
}

/// cgroup resources for CPU request/limit (millicores) and memory limit (bytes), with
/// kubelet's conversions: shares from the request (else the limit), quota (period
/// [`CPU_PERIOD_US`]) from the limit, memory limit as is and swap equal to it (no swap).
pub fn resources(cpu_request: Option<u64>, cpu_limit: Option<u64>, memory_limit: Option<u64>) -> LinuxResources {
    let mut cpu = LinuxCpuBuilder::default().shares(millis_to_shares(cpu_request.or(cpu_limit).unwrap_or(0)));
    if let Some(quota) = cpu_limit.and_then(|l| millis_to_quota(l, CPU_PERIOD_US)) {
        cpu = cpu.quota(quota).period(CPU_PERIOD_US);
    }
    let mut b = LinuxResourcesBuilder::default().cpu(cpu.build().expect("all fields set"));
    if let Some(m) = memory_limit {
        let m = i64::try_from(m).unwrap_or(i64::MAX);
        b = b.memory(
            LinuxMemoryBuilder::default()
                .limit(m)
                .swap(m)
                .build()
                .expect("all fields set"),
        );
    }
    b.build().expect("all fields set")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_like_kubernetes() {
        assert_eq!(cpu_millis("250m").unwrap(), 250);
        assert_eq!(cpu_millis("700m").unwrap(), 700, "float noise must not round up");
        assert_eq!(cpu_millis("0.7").unwrap(), 700);
        assert_eq!(cpu_millis("1.0005").unwrap(), 1001);
        assert_eq!(cpu_millis("1.5").unwrap(), 1500);
        assert_eq!(cpu_millis("2").unwrap(), 2000);
        assert_eq!(memory_bytes("64Mi").unwrap(), 64 << 20);
        assert_eq!(memory_bytes("1G").unwrap(), 1_000_000_000);
        assert_eq!(memory_bytes("1e3").unwrap(), 1000);
        assert!(memory_bytes("12 apples").is_err());
        assert!(cpu_millis("-1").is_err());
        assert!(cpu_millis("").is_err());
    }

    #[test]
    fn kubelet_cpu_conversions() {
        assert_eq!(millis_to_shares(0), 2);
        assert_eq!(millis_to_shares(1), 2);
        assert_eq!(millis_to_shares(250), 256);
        assert_eq!(millis_to_shares(1000), 1024);
        assert_eq!(millis_to_quota(0, CPU_PERIOD_US), None);
        assert_eq!(millis_to_quota(5, CPU_PERIOD_US), Some(1000));
        assert_eq!(millis_to_quota(500, CPU_PERIOD_US), Some(50_000));
        let r = resources(Some(250), Some(500), Some(64 << 20));
        let cpu = r.cpu().as_ref().unwrap();
        assert_eq!(
            (cpu.shares(), cpu.quota(), cpu.period()),
            (Some(256), Some(50_000), Some(100_000))
        );
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(64 << 20));
    }
}
