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
//! Quantities are bounded ([`MAX_CPU_MILLIS`], [`MAX_MEMORY_BYTES`]) so that the
//! conversions cannot overflow: Kubernetes accepts up to 2^63 − 1 of either, and
//! `1e18` CPUs times 1024 does not fit a `u64`.
//!
//! Used by the shim to size a pod cgroup from its sandbox's annotations
//! ([`crate::annotations`]), and by the CLI to read manifests and to size containers.

use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResources, LinuxResourcesBuilder};

/// Default termination grace period (Kubernetes' `terminationGracePeriodSeconds`), s.
pub const DEFAULT_GRACE_SECONDS: u64 = 30;
/// CFS period kubelet uses for CPU limits, µs.
pub const CPU_PERIOD_US: u64 = 100_000;
/// Largest CPU quantity accepted, millicores: a million CPUs, beyond any machine. It
/// keeps kubelet's conversions in range: `millis × 1024` (shares) and `millis × period`
/// for CFS periods up to 1 s (quota, µs) stay far below `i64::MAX`, and the quota at
/// kubelet's 100 ms period (at most 10^11 µs) below the kernel's CFS quota maximum
/// (`max_cfs_runtime`, 2^44 − 1 µs).
pub const MAX_CPU_MILLIS: u64 = 1_000_000_000;
/// Largest memory quantity accepted, bytes: 2^63 − 1, what OCI's `i64` memory limit
/// (and Kubernetes' own `int64` quantities) hold.
pub const MAX_MEMORY_BYTES: u64 = u64::MAX >> 1;

/// A value that is not a usable Kubernetes quantity. The caller names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not a quantity's syntax, or negative.
    #[error("{value:?} is not a Kubernetes quantity")]
    Syntax {
        /// The value as written.
        value: String,
    },
    /// More than peapod accepts ([`MAX_CPU_MILLIS`], [`MAX_MEMORY_BYTES`]).
    #[error("{value:?} is more than the maximum, {max} {unit}")]
    TooLarge {
        /// The value as written.
        value: String,
        /// The maximum, in `unit`.
        max: u64,
        /// `millicores` or `bytes`.
        unit: &'static str,
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

/// `v` when at most `max`, else [`QuantityError::TooLarge`].
fn at_most(q: &str, v: u64, max: u64, unit: &'static str) -> Result<u64, QuantityError> {
    if v > max {
        return Err(QuantityError::TooLarge {
            value: q.to_string(),
            max,
            unit,
        });
    }
    Ok(v)
}

/// CPU quantity in millicores, rounded up as Kubernetes does (`MilliValue`).
///
/// Errors: see [`parse_quantity`]; [`QuantityError::TooLarge`] above [`MAX_CPU_MILLIS`].
pub fn cpu_millis(q: &str) -> Result<u64, QuantityError> {
    // Past u64 the cast saturates, which is above the maximum too.
    at_most(q, ceil_clean(parse_quantity(q)? * 1000.0), MAX_CPU_MILLIS, "millicores")
}

/// Memory quantity in bytes, rounded up.
///
/// Errors: see [`parse_quantity`]; [`QuantityError::TooLarge`] above [`MAX_MEMORY_BYTES`].
pub fn memory_bytes(q: &str) -> Result<u64, QuantityError> {
    at_most(q, ceil_clean(parse_quantity(q)?), MAX_MEMORY_BYTES, "bytes")
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
/// Exact up to [`MAX_CPU_MILLIS`]; saturates rather than overflows beyond.
pub fn millis_to_shares(millis: u64) -> u64 {
    (millis.saturating_mul(1024) / 1000).max(2)
}

/// kubelet's `MilliCPUToQuota`: `milliCPU * period / 1000` µs, at least 1000 µs; `None`
/// (no quota) for no limit. Exact up to [`MAX_CPU_MILLIS`] and 1 s periods; saturates
/// rather than overflows beyond.
pub fn millis_to_quota(millis: u64, period_us: u64) -> Option<i64> {
    (millis > 0).then(|| i64::try_from((millis.saturating_mul(period_us) / 1000).max(1000)).unwrap_or(i64::MAX))
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

    #[test]
    fn quantities_are_bounded_so_conversions_cannot_overflow() {
        assert_eq!(
            cpu_millis("1M").unwrap(),
            MAX_CPU_MILLIS,
            "a million CPUs is the maximum"
        );
        for q in ["1e18", "1000001", "1Ei", "9e300"] {
            let e = cpu_millis(q).unwrap_err();
            assert!(
                matches!(
                    e,
                    QuantityError::TooLarge {
                        max: MAX_CPU_MILLIS,
                        ..
                    }
                ),
                "{q}: {e}"
            );
            assert!(e.to_string().contains(q) && e.to_string().contains("millicores"), "{e}");
        }
        assert_eq!(memory_bytes("7Ei").unwrap(), 7 << 60);
        for q in ["8Ei", "1e19", "9223372036854775808"] {
            let e = memory_bytes(q).unwrap_err();
            assert!(
                matches!(
                    e,
                    QuantityError::TooLarge {
                        max: MAX_MEMORY_BYTES,
                        ..
                    }
                ),
                "{q}: {e}"
            );
        }
        // At the bounds, kubelet's conversions are exact and in range.
        assert_eq!(millis_to_shares(MAX_CPU_MILLIS), 1_024_000_000);
        assert_eq!(millis_to_quota(MAX_CPU_MILLIS, CPU_PERIOD_US), Some(100_000_000_000));
        assert_eq!(millis_to_quota(MAX_CPU_MILLIS, 1_000_000), Some(1_000_000_000_000));
        // Beyond them (callers that skip the parse), they saturate instead of panicking.
        assert_eq!(millis_to_shares(u64::MAX), u64::MAX / 1000);
        assert_eq!(
            millis_to_quota(u64::MAX, CPU_PERIOD_US),
            Some(i64::try_from(u64::MAX / 1000).unwrap())
        );
        let r = resources(Some(MAX_CPU_MILLIS), Some(MAX_CPU_MILLIS), Some(MAX_MEMORY_BYTES));
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(i64::MAX));
    }
}
