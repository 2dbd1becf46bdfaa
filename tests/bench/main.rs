//! `make bench`: peapod against runc and crun, side by side on one private containerd
//! (the containerd suite's harness), the same images and the same machine, in one run.
//!
//! Rows, all through CRI as the kubelet drives a runtime:
//!
//! 1. pod ready: RunPodSandbox → a sidecar and an app container both running
//!    (CreateContainer + StartContainer each, "running" per ContainerStatus), pod and
//!    containers under `seccompProfile: RuntimeDefault` (containerd's default profile, as
//!    the kubelet's `--seccomp-default` asks; peapod-embedded runs whatever its CLI
//!    applies by default);
//! 2. ExecSync of `/bin/true` in the running app container (several per pod);
//! 3. teardown: StopPodSandbox + RemovePodSandbox of that pod, both containers running;
//! 4. churn: N sequential create/start/wait-for-exit/remove of `/bin/true` in one pod,
//!    total and per container;
//! 5. memory: with M pods running (sandbox + one `sleep` each), the PSS and RSS of the
//!    handler's resident processes (its shims and any helper they keep) per pod;
//! 6. exec probes (`probes.rs`), for `BENCH_PROBE_HANDLERS` (runc and peapod-embedded):
//!    the node's CPU per exec probe of `/bin/true` in one pod, and over a window with P
//!    pods probed every second; ExecSync through containerd for a CRI handler, the
//!    shim's own prober embedded.
//! 7. how the cost grows: pods created at once, one pod of many containers, shim PSS with
//!    many pods running, and pod ready with `BENCH_HOST_MOUNTS` more mounts on the host
//!    (each a small tmpfs below a private one, removed after the row).
//!
//! With a containerd 2.x build at hand (the newest of `PEAPOD_CONTAINERD_BUILDS`, or
//! `BENCH_CONTAINERD2=<dir>`; `none` to leave it out), a second private containerd of that
//! version runs beside the first, and three more columns run on it: `runc@<version>`,
//! `peapod@<version>` (the pause image as the sandbox task) and `peapod-shim@<version>`
//! (`sandboxer = "shim"`: the shim serves the Sandbox API, no pause container). Their
//! ratios are to `runc@<version>`, the same containerd's runc.
//!
//! A fourth column, `peapod-embedded`, is peapod without containerd: the same rows through
//! the `peapod` CLI's embedded mode (`peapod::runner`) in this process, pod network `none`
//! (loopback only) unless `BENCH_EMBEDDED_NETWORK=cni`; `embedded.rs` says what each row
//! calls there.
//!
//! Iterations interleave handlers (runc, crun, peapod, peapod-embedded, runc, …) so drift (caches, thermal,
//! other load) hits all alike; warm-up iterations come first and are discarded. The first
//! warm-up is also the probe: a handler that cannot run a pod there is reported as
//! unavailable with its error, and the run goes on without it. That is expected of crun
//! where the host's cgroup layout is one it refuses; for runc or peapod it is a failure.
//! Any other error (a container that never runs, an ExecSync that fails, a pod that does not
//! go away) is a failure too: its cells say so, the run goes on, and the binary exits 1.
//! Nothing asserts on timings.
//!
//! After the rows, peapod's per-phase timings come from the shim's `create timings`,
//! `start timings`, `call served` and `shim serving` (start-up) lines in containerd's
//! log; then the instance must be empty
//! (`assert_no_leftovers`), its teardown must succeed, and the embedded pods must have
//! left nothing (`Embedded::finish`), else the run fails.
//!
//! Knobs (environment): `BENCH_ITERATIONS` (20), `BENCH_WARMUP` (2), `BENCH_EXECS` (ExecSyncs
//! per pod, 5), `BENCH_CHURN_ITERATIONS` (3), `BENCH_CHURN_CONTAINERS` (100),
//! `BENCH_MEMORY_PODS` (20), `BENCH_MEMORY_SAMPLES` (3), `BENCH_HANDLERS`
//! (`runc,crun,peapod,peapod-embedded`, and the 2.x columns), `BENCH_CONTAINERD2`,
//! `BENCH_EMBEDDED_NETWORK` (`none` or `cni`), `BENCH_PROBES` (probes measured in the
//! one-pod row, 20; 0 leaves the row out), `BENCH_PROBE_IDLE` (seconds of its idle window,
//! 5), `BENCH_PROBE_PODS` (20; 0 leaves the row out), `BENCH_PROBE_SECONDS` (their
//! window, 60), `BENCH_PROBE_HANDLERS` (`runc,peapod-embedded`; any of the run's),
//! `BENCH_AT_ONCE` (pods created at once from as many threads, 50; 0 leaves those rows
//! out), `BENCH_POD_CONTAINERS` (container counts of the one-pod rows, `1,10,30`),
//! `BENCH_SCALE_PODS` (pod counts of the PSS-per-pod and containerd RSS rows besides
//! `BENCH_MEMORY_PODS`, `1,100`), `BENCH_HOST_MOUNTS` (mounts added to the host for the
//! pod-ready-among-mounts row, 1000; 0 leaves it out), `BENCH_OUT` (`target/bench`). `bench --phases <log>` only parses a saved containerd log
//! and prints the phase table.
//!
//! The last line on stdout is `bench result: ok. …` or `bench result: FAILED. …` (what
//! `tests/vm/run` looks for in a `bench` suite), and the exit status 0 or 1.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use embedded::Embedded;
use peapod::runner::NetworkMode;
use peapod_tests::containerd::{
    self, Containerd, ContainerdBuild, CRUN_HANDLER, PEAPOD_HANDLER, PEAPOD_SHIM_HANDLER, RUNC_HANDLER,
};
use peapod_tests::procs::MemSample;
use probes::{ManyPods, PerProbe};
use report::{Context, Phases, Report, Row, Unit};
use scenarios::{Bench, PodTimes};

mod embedded;
mod probes;
mod report;
mod scenarios;
mod symbols;

/// Handlers a host may legitimately be unable to run: their failure to run a first pod
/// makes them unavailable, not the run failed.
const OPTIONAL_HANDLERS: &[&str] = &[CRUN_HANDLER];
/// Where the crun handler's binary is (`runtimes.crun.options.BinaryName`).
const CRUN_BINARY: &str = "/usr/bin/crun";

struct Config {
    iterations: usize,
    warmup: usize,
    execs: usize,
    churn_iterations: usize,
    churn_containers: usize,
    memory_pods: usize,
    memory_samples: usize,
    handlers: Vec<String>,
    /// The second containerd's build, for the `<handler>@<version>` columns.
    containerd2: Option<ContainerdBuild>,
    /// Why there is no second containerd, when there is none.
    containerd2_absent: Option<String>,
    embedded_network: NetworkMode,
    /// Probes measured in the one-pod exec-probe row (0: no such row).
    probes: usize,
    /// Its idle window.
    probe_idle: Duration,
    /// Pods of the many-pods exec-probe row (0: no such row).
    probe_pods: usize,
    /// Its window.
    probe_window: Duration,
    /// The handlers of the exec-probe rows.
    probe_handlers: Vec<String>,
    /// Pods of the at-once rows (0: no such rows).
    at_once: usize,
    /// Container counts of the one-pod rows.
    pod_containers: Vec<usize>,
    /// Pod counts of the scale rows, besides `memory_pods`.
    scale_pods: Vec<usize>,
    /// Extra mounts on the host for the pod-ready-among-mounts row (0: no such row).
    host_mounts: usize,
    out: PathBuf,
}

/// A comma-separated list of counts from `name`, else `default`.
fn env_counts(name: &str, default: &str) -> Result<Vec<usize>> {
    let text = std::env::var(name).unwrap_or_else(|_| default.to_string());
    text.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.parse()
                .with_context(|| format!("{name}={text:?}: {c:?} is not a count"))
        })
        .filter(|c: &Result<usize>| !matches!(c, Ok(0)))
        .collect()
}

/// A column's CRI handler and, for the second containerd's columns (`runc@2.3.4`), its
/// version.
fn split_handler(h: &str) -> (&str, Option<&str>) {
    match h.split_once('@') {
        Some((name, version)) => (name, Some(version)),
        None => (h, None),
    }
}

fn env_usize(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().with_context(|| format!("{name}={v:?} is not a count")),
        Err(_) => Ok(default),
    }
}

impl Config {
    fn from_env() -> Result<Self> {
        let (containerd2, containerd2_absent) = match ContainerdBuild::newest_2x("BENCH_CONTAINERD2", None)? {
            Ok(b) => (Some(b), None),
            Err(why) => (None, Some(why)),
        };
        let v2 = containerd2.as_ref().map(|b| b.version.to_string());
        let default_handlers = {
            let mut h = format!("{RUNC_HANDLER},{CRUN_HANDLER},{PEAPOD_HANDLER},{}", embedded::HANDLER);
            if let Some(v) = &v2 {
                h += &format!(",{RUNC_HANDLER}@{v},{PEAPOD_HANDLER}@{v},{PEAPOD_SHIM_HANDLER}@{v}");
            }
            h
        };
        let handlers: Vec<String> = std::env::var("BENCH_HANDLERS")
            .unwrap_or(default_handlers)
            .split(',')
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .collect();
        for h in &handlers {
            match split_handler(h) {
                (name, None) if [RUNC_HANDLER, CRUN_HANDLER, PEAPOD_HANDLER, embedded::HANDLER].contains(&name) => {}
                (name, Some(v)) if [RUNC_HANDLER, PEAPOD_HANDLER, PEAPOD_SHIM_HANDLER].contains(&name) => {
                    if v2.as_deref() != Some(v) {
                        bail!(
                            "BENCH_HANDLERS: {h:?} needs containerd {v} as the second instance ({})",
                            containerd2_absent.as_deref().unwrap_or("it is another version")
                        );
                    }
                    if !handlers.iter().any(|b| *b == format!("{RUNC_HANDLER}@{v}")) {
                        bail!("BENCH_HANDLERS: {h:?} needs {RUNC_HANDLER}@{v}: its ratios are relative to it");
                    }
                }
                _ => bail!(
                    "BENCH_HANDLERS: unknown handler {h:?} (known: runc, crun, peapod, {}, and with a containerd 2.x \
                     build runc@<v>, peapod@<v>, peapod-shim@<v>)",
                    embedded::HANDLER
                ),
            }
        }
        let embedded_network = match std::env::var("BENCH_EMBEDDED_NETWORK").as_deref() {
            Err(_) | Ok("none") => NetworkMode::None,
            Ok("cni") => NetworkMode::Cni,
            Ok(other) => bail!("BENCH_EMBEDDED_NETWORK={other:?}: none or cni"),
        };
        if !handlers.iter().any(|h| h == RUNC_HANDLER) {
            bail!("BENCH_HANDLERS must include runc: ratios are relative to it");
        }
        let out = match std::env::var_os("BENCH_OUT") {
            Some(dir) => PathBuf::from(dir),
            None => containerd::target_profile_dir()?
                .parent()
                .context("target dir")?
                .join("bench"),
        };
        let probe_handlers: Vec<String> = std::env::var("BENCH_PROBE_HANDLERS")
            .unwrap_or_else(|_| format!("{RUNC_HANDLER},{}", embedded::HANDLER))
            .split(',')
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .collect();
        if let Some(h) = probe_handlers.iter().find(|h| !handlers.contains(h)) {
            bail!(
                "BENCH_PROBE_HANDLERS: {h:?} is not one of the run's handlers ({})",
                handlers.join(",")
            );
        }
        let config = Self {
            iterations: env_usize("BENCH_ITERATIONS", 20)?.max(1),
            warmup: env_usize("BENCH_WARMUP", 2)?,
            execs: env_usize("BENCH_EXECS", 5)?.max(1),
            churn_iterations: env_usize("BENCH_CHURN_ITERATIONS", 3)?,
            churn_containers: env_usize("BENCH_CHURN_CONTAINERS", 100)?.max(1),
            memory_pods: env_usize("BENCH_MEMORY_PODS", 20)?,
            memory_samples: env_usize("BENCH_MEMORY_SAMPLES", 3)?.max(1),
            handlers,
            containerd2,
            containerd2_absent,
            embedded_network,
            probes: env_usize("BENCH_PROBES", 20)?,
            probe_idle: Duration::from_secs(env_usize("BENCH_PROBE_IDLE", 5)?.max(1) as u64),
            probe_pods: env_usize("BENCH_PROBE_PODS", 20)?,
            probe_window: Duration::from_secs(env_usize("BENCH_PROBE_SECONDS", 60)?.max(1) as u64),
            probe_handlers,
            at_once: env_usize("BENCH_AT_ONCE", 50)?,
            pod_containers: env_counts("BENCH_POD_CONTAINERS", "1,10,30")?,
            scale_pods: env_counts("BENCH_SCALE_PODS", "1,100")?,
            host_mounts: env_usize("BENCH_HOST_MOUNTS", 1000)?,
            out,
        };
        Ok(config)
    }
}

/// Output of `cmd args`, first line, or `unknown (<why>)`.
fn first_line_of(cmd: &str, args: &[&str]) -> String {
    match Command::new(cmd).args(args).output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string(),
        Ok(out) => format!("unknown ({cmd} {}: {})", args.join(" "), out.status),
        Err(e) => format!("unknown ({cmd}: {e})"),
    }
}

/// `v2`, `hybrid` (v1 controllers plus a v2 tree, `/sys/fs/cgroup/unified`) or `v1`.
fn cgroup_mode() -> String {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v1 = false;
    let mut v2_at = None;
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = pre.split(' ').nth(4).unwrap_or_default();
        match post.split(' ').next() {
            Some("cgroup") => v1 = true,
            Some("cgroup2") => v2_at = Some(mount_point.to_string()),
            _ => {}
        }
    }
    match (v1, v2_at) {
        (false, Some(_)) => "v2".into(),
        (true, Some(at)) => {
            // crun refuses hybrid hosts whose v2 tree holds controllers: say which.
            let controllers = fs::read_to_string(Path::new(&at).join("cgroup.controllers")).unwrap_or_default();
            let controllers = controllers.trim();
            let controllers = if controllers.is_empty() { "none" } else { controllers };
            format!("hybrid (v1 controllers, v2 tree at {at} with controllers: {controllers})")
        }
        (true, None) => "v1".into(),
        (false, None) => "none found".into(),
    }
}

/// `/proc/loadavg`'s 1, 5 and 15 minute averages: other work on the machine skews
/// timings (interleaving spreads it over handlers, but not away).
fn load_average() -> String {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn machine() -> Vec<(&'static str, String)> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|v| v.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|e| format!("unknown ({e})"), |s| s.trim().to_string());
    let memory = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or("unknown".into(), |kib| {
            format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0)
        });
    let git = first_line_of("git", &["describe", "--always", "--dirty"]);
    vec![
        ("machine", format!("{cores} cores ({cpu}), {memory} RAM")),
        ("kernel", kernel),
        ("cgroups", cgroup_mode()),
        ("date", first_line_of("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"])),
        ("load average at start (1, 5, 15 min)", load_average()),
        (
            "containerd",
            ContainerdBuild::selected().map_or_else(|e| format!("unknown ({e:#})"), |b| b.to_string()),
        ),
        ("runc", first_line_of("runc", &["--version"])),
        (
            "crun",
            if Path::new(CRUN_BINARY).exists() {
                first_line_of(CRUN_BINARY, &["--version"])
            } else {
                "not installed".into()
            },
        ),
        (
            "peapod",
            format!(
                "containerd-shim-peapod-v2 from {} (git {git})",
                containerd::shim_dir().map_or("?".into(), |d| d.display().to_string())
            ),
        ),
        ("peapod shim binary", shim_binary()),
        ("peapod shim symbol order", symbol_order()),
    ]
}

/// Sections of the shim binary that its resident pages come from (issue 17), in KiB.
const SHIM_SECTIONS: [&str; 6] = [
    ".text",
    ".rodata",
    ".data.rel.ro",
    ".eh_frame",
    ".rela.dyn",
    ".relr.dyn",
];

/// The shim binary's size and [`SHIM_SECTIONS`]' sizes, from `readelf -SW` (binutils, which
/// links the build): `6.66 MB, static-pie; KiB: .text 4853, …` (a section it lacks is left out;
/// `.relr.dyn` is there when it was linked with packed relative relocations).
fn shim_binary() -> String {
    let path = match containerd::peapod_shim() {
        Ok(path) => path,
        Err(e) => return format!("unknown ({e:#})"),
    };
    let size = fs::metadata(&path).map_or(0, |m| m.len());
    let out = match symbols::binutils("readelf", &["-SW"], &path) {
        Ok(out) => out,
        Err(e) => return format!("{size} bytes ({e:#})"),
    };
    // `  [15] .text  PROGBITS  0000000000140dc0 13fdc0 4bd6c7 00  AX  0   0 16`: name, type,
    // address, offset, size in hex.
    let sizes: BTreeMap<&str, u64> = out
        .lines()
        .filter_map(|l| {
            let mut fields = l.split_once(']')?.1.split_whitespace();
            let name = fields.next()?;
            let size = fields.nth(3)?;
            Some((name, u64::from_str_radix(size, 16).ok()?))
        })
        .collect();
    let sections: Vec<String> = SHIM_SECTIONS
        .iter()
        .filter_map(|s| sizes.get(s).map(|b| format!("{s} {}", b.div_ceil(1024))))
        .collect();
    // A dynamically linked binary names its loader in `.interp`; the Makefile's static-pie
    // build has none.
    let link = if sizes.contains_key(".interp") {
        "dynamic"
    } else {
        "static-pie"
    };
    format!("{:.2} MB, {link}; KiB: {}", size as f64 / 1e6, sections.join(", "))
}

/// The shim's symbol ordering file (`shim/symbol-order.txt`, see `symbols.rs`) against the
/// shim binary: `3055 of 3055 listed functions found` (fewer: the list is stale, run
/// `make symbol-order`).
fn symbol_order() -> String {
    let order = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shim/symbol-order.txt");
    match containerd::peapod_shim().and_then(|shim| symbols::order_coverage(&shim, &order)) {
        Ok((found, listed)) => format!("{found} of {listed} listed functions found"),
        Err(e) => format!("unknown ({e:#})"),
    }
}

/// First line of an error's chain (`{:#}` puts the chain on one line; messages relayed
/// from containerd may hold more).
fn first_line(e: &anyhow::Error) -> String {
    format!("{e:#}").lines().next().unwrap_or_default().to_string()
}

/// The most specific part of an error's first line, for a table cell: what the OCI
/// runtime said when containerd relays it (after `OCI runtime create failed: `, without
/// the trailing gRPC code), at most 160 characters. The notes and failures keep it whole.
fn cell_error(e: &anyhow::Error) -> String {
    let line = first_line(e);
    let s = line
        .rsplit_once("OCI runtime create failed: ")
        .map_or(line.as_str(), |(_, s)| s);
    let s = s.strip_suffix(": unknown").unwrap_or(s);
    if s.chars().count() > 160 {
        format!("{}…", s.chars().take(160).collect::<String>())
    } else {
        s.to_string()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The run's state: handlers still in play, rows, failures.
struct Run {
    handlers: Vec<String>,
    unavailable: BTreeMap<String, String>,
    rows: Vec<Row>,
    notes: Vec<String>,
    failures: Vec<String>,
}

const POD_READY: usize = 0;
const EXEC: usize = 1;
const TEARDOWN: usize = 2;
const CHURN_TOTAL: usize = 3;
const CHURN_EACH: usize = 4;
const MEM_PSS: usize = 5;
const MEM_RSS: usize = 6;
const PROBE_EACH: usize = 7;
const PROBE_PODS: usize = 8;

impl Run {
    fn new(config: &Config) -> Self {
        let rows = vec![
            Row::new(
                "pod_ready",
                "pod ready: RunPodSandbox → sidecar + app running",
                Unit::Millis,
                Some(0.33),
            )
            .with_shim_target(0.25),
            Row::new(
                "exec_sync",
                "ExecSync `/bin/true` in a running container",
                Unit::Millis,
                Some(0.5),
            ),
            Row::new(
                "teardown",
                "teardown: StopPodSandbox + RemovePodSandbox, 2 containers running",
                Unit::Millis,
                None,
            ),
            Row::new(
                "churn_total",
                format!(
                    "churn: {} × create/start/wait-exit/remove `/bin/true` in one pod, total",
                    config.churn_containers
                ),
                Unit::Seconds,
                None,
            ),
            Row::new("churn_per_container", "churn: per container", Unit::Millis, None),
            Row::new(
                "shim_pss_per_pod",
                format!("shim memory per pod, PSS ({} pods running)", config.memory_pods),
                Unit::Mib,
                Some(0.2),
            ),
            Row::new(
                "shim_rss_per_pod",
                format!("shim memory per pod, RSS ({} pods running)", config.memory_pods),
                Unit::Mib,
                None,
            ),
            Row::new(
                "exec_probe_cpu",
                format!(
                    "exec probe `{}` every 1 s, node CPU per probe (1 pod, idle subtracted)",
                    probes::COMMAND
                ),
                Unit::Millis,
                None,
            ),
            Row::new(
                "exec_probe_pods_cpu",
                format!(
                    "exec probes: node CPU over {} s, {} pods × `{}` every 1 s",
                    config.probe_window.as_secs(),
                    config.probe_pods,
                    probes::COMMAND
                ),
                Unit::Seconds,
                None,
            ),
        ];
        let mut rows = rows;
        rows.extend(growth_row_set(config));
        Self {
            handlers: config.handlers.clone(),
            unavailable: BTreeMap::new(),
            rows,
            notes: Vec::new(),
            failures: Vec::new(),
        }
    }

    fn available(&self, handler: &str) -> bool {
        !self.unavailable.contains_key(handler)
    }

    /// Records that `handler` failed in `rows`: the cells say so, the run fails.
    fn fail(&mut self, handler: &str, rows: &[usize], what: &str, e: &anyhow::Error) {
        eprintln!("  {handler}: {what} FAILED: {e:#}");
        for &r in rows {
            self.rows[r].cell(handler).error = Some(format!("FAILED: {}", cell_error(e)));
        }
        self.failures.push(format!("{handler}, {what}: {e:#}"));
    }

    /// The index of the row with key `key` (growth rows have keys built from counts).
    fn row_index(&self, key: &str) -> usize {
        self.rows
            .iter()
            .position(|r| r.key == key)
            .unwrap_or_else(|| panic!("no bench row {key}"))
    }

    fn failed(&self, handler: &str, row: usize) -> bool {
        self.rows[row].cells.get(handler).is_some_and(|c| c.error.is_some())
    }

    /// `handler` could not run its first pod: it sits out the whole run and every row says
    /// why. For an optional handler (crun) that is the host's limit; for the others, a
    /// failure.
    fn make_unavailable(&mut self, handler: &str, e: &anyhow::Error) {
        let optional = OPTIONAL_HANDLERS.contains(&handler);
        let cell = if optional {
            format!("cannot run here: {}", cell_error(e))
        } else {
            format!("FAILED: {}", cell_error(e))
        };
        eprintln!("  {handler}: cannot run a pod: {e:#}");
        for row in &mut self.rows {
            row.cell(handler).error = Some(cell.clone());
        }
        if !optional {
            self.failures.push(format!("{handler} cannot run a pod: {e:#}"));
        }
        self.unavailable.insert(handler.to_string(), first_line(e));
    }
}

/// Where each handler's rows run: the CRI handlers through containerd, the embedded
/// column through `peapod::runner` in this process.
struct Runtimes<'a> {
    cri: Bench<'a>,
    /// The second containerd (2.x), for the `<handler>@<version>` columns.
    cri2: Option<Bench<'a>>,
    embedded: Option<Embedded>,
}

impl Runtimes<'_> {
    fn embedded(&self) -> Result<&Embedded> {
        self.embedded.as_ref().context("embedded mode is not set up")
    }

    /// The containerd a CRI column runs on, and its CRI handler name.
    fn cri_for<'h>(&self, handler: &'h str) -> Result<(&Bench<'_>, &'h str)> {
        match split_handler(handler) {
            (name, None) => Ok((&self.cri, name)),
            (name, Some(v)) => Ok((
                self.cri2
                    .as_ref()
                    .with_context(|| format!("no containerd {v} instance for {handler}"))?,
                name,
            )),
        }
    }

    /// Runs a row's scenario for `handler`: `embedded` in this process for the embedded
    /// column, `cri` on the containerd of a CRI column with its handler name.
    fn run_on<T>(
        &self,
        handler: &str,
        embedded: impl FnOnce(&Embedded) -> Result<T>,
        cri: impl FnOnce(&Bench<'_>, &str) -> Result<T>,
    ) -> Result<T> {
        if handler == embedded::HANDLER {
            embedded(self.embedded()?)
        } else {
            let (b, name) = self.cri_for(handler)?;
            cri(b, name)
        }
    }

    fn pod_cycle(&self, handler: &str, execs: usize) -> Result<PodTimes> {
        self.run_on(
            handler,
            |e| embedded::pod_cycle(e, execs),
            |b, name| scenarios::pod_cycle(b, name, execs),
        )
    }

    fn churn(&self, handler: &str, containers: usize) -> Result<Duration> {
        self.run_on(
            handler,
            |e| embedded::churn(e, containers),
            |b, name| scenarios::churn(b, name, containers),
        )
    }

    fn memory(&self, handler: &str, pods: usize, samples: usize) -> Result<(Vec<MemSample>, Option<u64>)> {
        self.run_on(
            handler,
            |e| embedded::memory(e, pods, samples),
            |b, name| scenarios::memory(b, name, pods, samples),
        )
    }

    fn at_once(&self, handler: &str, pods: usize) -> Result<scenarios::AtOnce> {
        self.run_on(
            handler,
            |e| embedded::at_once(e, pods),
            |b, name| scenarios::at_once(b, name, pods),
        )
    }

    fn containers_in_one_pod(&self, handler: &str, containers: usize) -> Result<(Duration, MemSample)> {
        self.run_on(
            handler,
            |e| embedded::containers_in_one_pod(e, containers),
            |b, name| scenarios::containers_in_one_pod(b, name, containers),
        )
    }

    fn probe_cost(&self, handler: &str, count: usize, idle: Duration) -> Result<PerProbe> {
        self.run_on(
            handler,
            |e| embedded::probe_cost(e, count, idle),
            |b, name| scenarios::probe_cost(b, name, count, idle),
        )
    }

    fn probe_pods(&self, handler: &str, pods: usize, window: Duration) -> Result<ManyPods> {
        self.run_on(
            handler,
            |e| embedded::probe_pods(e, pods, window),
            |b, name| scenarios::probe_pods(b, name, pods, window),
        )
    }
}

fn pod_rows(b: &Runtimes, config: &Config, run: &mut Run) {
    let total = config.warmup + config.iterations;
    eprintln!(
        "== pod ready / ExecSync / teardown: {} warm-up + {} iterations, {} ExecSyncs per pod",
        config.warmup, config.iterations, config.execs
    );
    for i in 0..total {
        let warm = i < config.warmup;
        let mut line = if warm {
            format!("warm-up {}/{}:", i + 1, config.warmup)
        } else {
            format!("iteration {}/{}:", i + 1 - config.warmup, config.iterations)
        };
        for h in run.handlers.clone() {
            if !run.available(&h) || run.failed(&h, POD_READY) {
                continue;
            }
            match b.pod_cycle(&h, config.execs) {
                Ok(t) => {
                    let exec_median =
                        report::median(&t.execs.iter().copied().map(ms).collect::<Vec<_>>()).unwrap_or(0.0);
                    line.push_str(&format!(
                        "  {h} ready {:.0} ms, exec {:.1} ms, teardown {:.0} ms;",
                        ms(t.ready),
                        exec_median,
                        ms(t.teardown)
                    ));
                    if !warm {
                        run.rows[POD_READY].cell(&h).samples.push(ms(t.ready));
                        run.rows[EXEC].cell(&h).samples.extend(t.execs.iter().copied().map(ms));
                        run.rows[TEARDOWN].cell(&h).samples.push(ms(t.teardown));
                    }
                }
                // The very first pod of a handler is the probe.
                Err(e) if i == 0 => run.make_unavailable(&h, &e),
                Err(e) => run.fail(&h, &[POD_READY, EXEC, TEARDOWN], "pod cycle", &e),
            }
        }
        eprintln!("  {line}");
    }
}

fn churn_rows(b: &Runtimes, config: &Config, run: &mut Run) {
    eprintln!(
        "== churn: {} iterations × {} containers",
        config.churn_iterations, config.churn_containers
    );
    for i in 0..config.churn_iterations {
        let mut line = format!("iteration {}/{}:", i + 1, config.churn_iterations);
        for h in run.handlers.clone() {
            if !run.available(&h) || run.failed(&h, CHURN_TOTAL) {
                continue;
            }
            match b.churn(&h, config.churn_containers) {
                Ok(total) => {
                    let each = ms(total) / config.churn_containers as f64;
                    line.push_str(&format!("  {h} {:.1} s ({each:.1} ms each);", total.as_secs_f64()));
                    run.rows[CHURN_TOTAL].cell(&h).samples.push(total.as_secs_f64());
                    run.rows[CHURN_EACH].cell(&h).samples.push(each);
                }
                Err(e) => run.fail(&h, &[CHURN_TOTAL, CHURN_EACH], "churn", &e),
            }
        }
        eprintln!("  {line}");
    }
}

fn memory_rows(b: &Runtimes, config: &Config, run: &mut Run) {
    if config.memory_pods == 0 {
        return;
    }
    eprintln!("== memory: {} pods per handler", config.memory_pods);
    let pods = config.memory_pods as f64;
    for h in run.handlers.clone() {
        if !run.available(&h) {
            continue;
        }
        let begun = Instant::now();
        match b.memory(&h, config.memory_pods, config.memory_samples) {
            Ok((samples, containerd_rss)) => {
                if let Some(kib) = containerd_rss {
                    let row = run.row_index(&format!("containerd_rss_{}", config.memory_pods));
                    run.rows[row].cell(&h).samples.push(kib as f64 / 1024.0);
                }
                let mut counts: BTreeMap<String, usize> = BTreeMap::new();
                let mut threads = 0;
                if let Some(last) = samples.last() {
                    for (_, name) in &last.processes {
                        *counts.entry(name.clone()).or_default() += 1;
                    }
                    threads = last.threads;
                }
                let mut procs: Vec<String> = counts.iter().map(|(n, c)| format!("{c}× {n}")).collect();
                if let Some(last) = procs.last_mut() {
                    last.push_str(&format!(" ({threads} threads in all)"));
                }
                for s in &samples {
                    run.rows[MEM_PSS]
                        .cell(&h)
                        .samples
                        .push(s.pss_kib as f64 / 1024.0 / pods);
                    run.rows[MEM_RSS]
                        .cell(&h)
                        .samples
                        .push(s.rss_kib as f64 / 1024.0 / pods);
                }
                eprintln!(
                    "  {h}: PSS {:.2} MiB/pod, RSS {:.2} MiB/pod from {} ({:.0} s)",
                    report::median(&run.rows[MEM_PSS].cell(&h).samples).unwrap_or(0.0),
                    report::median(&run.rows[MEM_RSS].cell(&h).samples).unwrap_or(0.0),
                    procs.join(", "),
                    begun.elapsed().as_secs_f64()
                );
                run.notes.push(format!(
                    "{h}: resident processes for {} pods: {}",
                    config.memory_pods,
                    procs.join(", ")
                ));
                if let Some(last) = samples.last() {
                    let nprocs = last.processes.len().max(1) as f64;
                    let kinds: Vec<String> = last
                        .pss_by_kind
                        .iter()
                        .map(|(k, kib)| format!("{k} {:.0}", *kib as f64 / pods))
                        .collect();
                    let mut names: Vec<(&String, &u64)> = last.thread_names.iter().collect();
                    names.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
                    let threads: Vec<String> = names
                        .iter()
                        .map(|(n, c)| format!("{:.1}× {n}", **c as f64 / nprocs))
                        .collect();
                    run.notes
                        .push(format!("{h}: PSS KiB per pod by kind: {}", kinds.join(", ")));
                    run.notes
                        .push(format!("{h}: threads per process by name: {}", threads.join(", ")));
                }
            }
            Err(e) => run.fail(&h, &[MEM_PSS, MEM_RSS], "memory", &e),
        }
    }
}

/// A row key made of a count (`pod_10_containers_each`): leaked, as row keys are static;
/// a few per run.
fn key(text: String) -> &'static str {
    Box::leak(text.into_boxed_str())
}

/// How the cost grows (issue 17): pods created at once, containers in one pod, pods
/// running. Rows in the order [`growth_rows`] fills them.
fn growth_row_set(config: &Config) -> Vec<Row> {
    let mut rows = Vec::new();
    if config.at_once > 0 {
        let n = config.at_once;
        rows.push(Row::new(
            "at_once_all",
            format!("{n} pods created at once (each sandbox + 1 container): until all are ready"),
            Unit::Seconds,
            None,
        ));
        rows.push(Row::new(
            "at_once_each",
            format!("{n} pods created at once: each pod's time to ready (p99 in the notes)"),
            Unit::Millis,
            None,
        ));
        rows.push(Row::new(
            "at_once_containerd_cpu",
            format!("{n} pods created at once: containerd's CPU time"),
            Unit::Seconds,
            None,
        ));
    }
    for &n in &config.pod_containers {
        rows.push(Row::new(
            key(format!("pod_{n}_containers_each")),
            format!("one pod of {n} container{}: create + start, per container", plural(n)),
            Unit::Millis,
            None,
        ));
        rows.push(Row::new(
            key(format!("pod_{n}_containers_pss")),
            format!("one pod of {n} container{}: shim PSS", plural(n)),
            Unit::Mib,
            None,
        ));
    }
    for &n in &config.scale_pods {
        rows.push(Row::new(
            key(format!("pss_per_pod_{n}")),
            format!("shim memory per pod, PSS ({n} pod{} running)", plural(n)),
            Unit::Mib,
            None,
        ));
    }
    if config.host_mounts > 0 {
        rows.push(Row::new(
            "pod_ready_host_mounts",
            format!(
                "pod ready with {} more mounts on the host (a node with many pods)",
                config.host_mounts
            ),
            Unit::Millis,
            None,
        ));
    }
    let mut counts: Vec<usize> = config.scale_pods.clone();
    if config.memory_pods > 0 {
        counts.push(config.memory_pods);
    }
    counts.sort_unstable();
    counts.dedup();
    for n in counts {
        rows.push(Row::new(
            key(format!("containerd_rss_{n}")),
            format!("containerd RSS ({n} pod{} running)", plural(n)),
            Unit::Mib,
            None,
        ));
    }
    rows
}

/// `s` unless `n` is 1.
fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The quantile at `permille`/1000 (nearest rank) of `samples`, in ms.
fn quantile_ms(samples: &[Duration], permille: usize) -> f64 {
    let mut s: Vec<f64> = samples.iter().map(|d| ms(*d)).collect();
    s.sort_by(f64::total_cmp);
    let rank = (s.len() * permille).div_ceil(1000).clamp(1, s.len().max(1));
    s.get(rank - 1).copied().unwrap_or(0.0)
}

fn growth_rows(b: &Runtimes, config: &Config, run: &mut Run) {
    if config.at_once > 0 {
        eprintln!("== {} pods created at once", config.at_once);
        let rows = [
            run.row_index("at_once_all"),
            run.row_index("at_once_each"),
            run.row_index("at_once_containerd_cpu"),
        ];
        for h in run.handlers.clone() {
            if !run.available(&h) {
                continue;
            }
            match b.at_once(&h, config.at_once) {
                Ok(r) => {
                    let (p50, p99) = (quantile_ms(&r.ready, 500), quantile_ms(&r.ready, 990));
                    eprintln!(
                        "  {h}: all ready in {:.2} s; each p50 {p50:.0} ms, p99 {p99:.0} ms{}",
                        r.all.as_secs_f64(),
                        r.containerd_cpu
                            .map(|c| format!("; containerd CPU {:.2} s", c.as_secs_f64()))
                            .unwrap_or_default()
                    );
                    run.rows[rows[0]].cell(&h).samples.push(r.all.as_secs_f64());
                    run.rows[rows[1]]
                        .cell(&h)
                        .samples
                        .extend(r.ready.iter().map(|d| ms(*d)));
                    if let Some(c) = r.containerd_cpu {
                        run.rows[rows[2]].cell(&h).samples.push(c.as_secs_f64());
                    }
                    run.notes.push(format!(
                        "{h}: {} pods at once: each pod's ready p50 {p50:.0} ms, p99 {p99:.0} ms",
                        config.at_once
                    ));
                }
                Err(e) => run.fail(&h, &rows, "pods at once", &e),
            }
        }
    }
    for &n in &config.pod_containers {
        eprintln!("== one pod of {n} containers");
        let rows = [
            run.row_index(&format!("pod_{n}_containers_each")),
            run.row_index(&format!("pod_{n}_containers_pss")),
        ];
        for h in run.handlers.clone() {
            if !run.available(&h) {
                continue;
            }
            match b.containers_in_one_pod(&h, n) {
                Ok((each, mem)) => {
                    eprintln!(
                        "  {h}: {:.1} ms per container, shim PSS {:.2} MiB",
                        ms(each),
                        mem.pss_kib as f64 / 1024.0
                    );
                    run.rows[rows[0]].cell(&h).samples.push(ms(each));
                    run.rows[rows[1]].cell(&h).samples.push(mem.pss_kib as f64 / 1024.0);
                }
                Err(e) => run.fail(&h, &rows, &format!("one pod of {n} containers"), &e),
            }
        }
    }
    for &n in &config.scale_pods {
        eprintln!("== {n} pods running");
        let rows = [
            run.row_index(&format!("pss_per_pod_{n}")),
            run.row_index(&format!("containerd_rss_{n}")),
        ];
        for h in run.handlers.clone() {
            if !run.available(&h) {
                continue;
            }
            match b.memory(&h, n, 1) {
                Ok((samples, containerd_rss)) => {
                    let pss = samples.last().map_or(0.0, |s| s.pss_kib as f64 / 1024.0 / n as f64);
                    eprintln!(
                        "  {h}: shim PSS {pss:.2} MiB per pod{}",
                        containerd_rss
                            .map(|k| format!(", containerd RSS {:.0} MiB", k as f64 / 1024.0))
                            .unwrap_or_default()
                    );
                    run.rows[rows[0]].cell(&h).samples.push(pss);
                    if let Some(kib) = containerd_rss {
                        run.rows[rows[1]].cell(&h).samples.push(kib as f64 / 1024.0);
                    }
                }
                Err(e) => run.fail(&h, &rows, &format!("{n} pods running"), &e),
            }
        }
    }
}

/// Iterations of the pod-ready-among-mounts row per handler, after one warm-up.
const HOST_MOUNT_ITERATIONS: usize = 5;

/// Pod ready while the host has `config.host_mounts` more mounts ([`HostMounts`]): every
/// reader of `/proc/self/mountinfo` (runc, containerd, the shims) and every new mount
/// namespace (a copy of the host's mounts) pays for them, as on a node with many pods.
fn host_mount_rows(b: &Runtimes, config: &Config, run: &mut Run) {
    if config.host_mounts == 0 {
        return;
    }
    let row = run.row_index("pod_ready_host_mounts");
    eprintln!(
        "== pod ready with {} more mounts on the host: 1 warm-up + {HOST_MOUNT_ITERATIONS} iterations",
        config.host_mounts
    );
    let mounts = match HostMounts::new(config.host_mounts) {
        Ok(m) => m,
        Err(e) => {
            run.failures.push(format!("host mounts: {e:#}"));
            return;
        }
    };
    for i in 0..=HOST_MOUNT_ITERATIONS {
        let mut line = format!("iteration {i}/{HOST_MOUNT_ITERATIONS}:");
        for h in run.handlers.clone() {
            if !run.available(&h) || run.failed(&h, row) {
                continue;
            }
            match b.pod_cycle(&h, 1) {
                Ok(t) => {
                    line.push_str(&format!("  {h} ready {:.0} ms;", ms(t.ready)));
                    if i > 0 {
                        run.rows[row].cell(&h).samples.push(ms(t.ready));
                    }
                }
                Err(e) => run.fail(&h, &[row], "pod cycle among host mounts", &e),
            }
        }
        eprintln!("  {line}");
    }
    if let Err(e) = mounts.remove() {
        run.failures.push(format!("host mounts: {e:#}"));
    }
}

/// `n` small tmpfs mounts in the host's mount namespace, below a private tmpfs of their
/// own in a temporary directory (so none propagates anywhere). [`HostMounts::remove`]
/// detaches them and checks that mountinfo no longer lists any; dropping without it
/// detaches them too.
struct HostMounts {
    dir: Option<tempfile::TempDir>,
}

impl HostMounts {
    fn new(n: usize) -> Result<Self> {
        use nix::mount::{mount, MsFlags};
        let dir = tempfile::Builder::new().prefix("peapod-bench-mounts-").tempdir()?;
        let top = dir.path().to_path_buf();
        mount(Some("tmpfs"), &top, Some("tmpfs"), MsFlags::empty(), Some("size=1m"))
            .with_context(|| format!("mount tmpfs on {}", top.display()))?;
        // From here on, dropping `me` detaches what is mounted.
        let me = Self { dir: Some(dir) };
        mount(None::<&str>, &top, None::<&str>, MsFlags::MS_PRIVATE, None::<&str>)
            .with_context(|| format!("make {} private", top.display()))?;
        for i in 0..n {
            let sub = top.join(i.to_string());
            fs::create_dir(&sub)?;
            mount(Some("tmpfs"), &sub, Some("tmpfs"), MsFlags::empty(), Some("size=4k"))
                .with_context(|| format!("mount tmpfs on {}", sub.display()))?;
        }
        Ok(me)
    }

    fn detach(&mut self) -> Option<tempfile::TempDir> {
        let dir = self.dir.take()?;
        let _ = nix::mount::umount2(dir.path(), nix::mount::MntFlags::MNT_DETACH);
        Some(dir)
    }

    fn remove(mut self) -> Result<()> {
        let Some(dir) = self.detach() else { return Ok(()) };
        let path = dir.path().to_string_lossy().to_string();
        let left = fs::read_to_string("/proc/self/mountinfo")?
            .lines()
            .filter(|l| l.contains(&path))
            .count();
        ensure!(left == 0, "{left} mounts under {path} are still there");
        dir.close()?;
        Ok(())
    }
}

impl Drop for HostMounts {
    fn drop(&mut self) {
        self.detach();
    }
}

fn probe_rows(b: &Runtimes, config: &Config, run: &mut Run) {
    let handlers: Vec<String> = run
        .handlers
        .clone()
        .into_iter()
        .filter(|h| config.probe_handlers.contains(h) && run.available(h))
        .collect();
    if config.probes > 0 {
        eprintln!(
            "== exec probes: CPU per probe, 1 pod, {} s idle then {} probes, 1 s apart",
            config.probe_idle.as_secs(),
            config.probes
        );
        for h in &handlers {
            match b.probe_cost(h, config.probes, config.probe_idle) {
                Ok(p) => {
                    let cell = run.rows[PROBE_EACH].cell(h);
                    cell.samples.extend(&p.samples_ms);
                    eprintln!(
                        "  {h}: {:.2} ms per probe (median; idle {:.2} ms/s subtracted)",
                        report::median(&cell.samples).unwrap_or(0.0),
                        p.idle_ms_per_s
                    );
                    run.notes.push(format!(
                        "{h}: exec probes, 1 pod: idle CPU {:.2} ms/s before the probes, subtracted from each \
                         probe's second",
                        p.idle_ms_per_s
                    ));
                }
                Err(e) => run.fail(h, &[PROBE_EACH], "exec probe cost", &e),
            }
        }
    }
    if config.probe_pods > 0 {
        eprintln!(
            "== exec probes: {} pods, one probe each per second, CPU over {} s",
            config.probe_pods,
            config.probe_window.as_secs()
        );
        for h in &handlers {
            let begun = Instant::now();
            match b.probe_pods(h, config.probe_pods, config.probe_window) {
                Ok(p) => {
                    run.rows[PROBE_PODS].cell(h).samples.push(p.cpu_s);
                    let per_probe = if p.probes > 0 {
                        p.cpu_s * 1000.0 / p.probes as f64
                    } else {
                        0.0
                    };
                    let line = format!(
                        "{h}: exec probes, {} pods: {:.2} CPU s in {:.0} s ({:.1}% of one core), {}{} probes, {:.2} ms \
                         per probe with the idle share",
                        config.probe_pods,
                        p.cpu_s,
                        p.window_s,
                        p.cpu_s * 100.0 / p.window_s,
                        if p.counted { "" } else { "about " },
                        p.probes,
                        per_probe
                    );
                    eprintln!("  {line} ({:.0} s)", begun.elapsed().as_secs_f64());
                    run.notes.push(line);
                }
                Err(e) => run.fail(h, &[PROBE_PODS], "exec probes of many pods", &e),
            }
        }
    }
}

/// Starts containerd, runs every row, collects the phases, checks and stops containerd.
/// Returns the phases; errors only when containerd cannot be set up (the instance is
/// then torn down on drop).
fn bench(config: &Config, run: &mut Run) -> Result<Phases> {
    let ctrd = Containerd::start()?;
    eprintln!(
        "containerd {} ready in {:?} ({})",
        ctrd.pid(),
        ctrd.startup_time(),
        ctrd.dir().display()
    );
    ctrd.import_images()?;
    let cri = ctrd.cri()?;
    let wants_2x = run.handlers.iter().any(|h| split_handler(h).1.is_some());
    let ctrd2 = match config.containerd2.clone().filter(|_| wants_2x) {
        Some(build) => {
            let c = Containerd::start_build(build)?;
            eprintln!(
                "containerd {} ({}) ready in {:?} ({})",
                c.version(),
                c.pid(),
                c.startup_time(),
                c.dir().display()
            );
            c.import_images()?;
            Some(c)
        }
        None => None,
    };
    let cri2 = ctrd2.as_ref().map(Containerd::cri).transpose()?;
    let mut b = Runtimes {
        cri: Bench { ctrd: &ctrd, cri: &cri },
        cri2: ctrd2.as_ref().zip(cri2.as_ref()).map(|(ctrd, cri)| Bench { ctrd, cri }),
        embedded: None,
    };
    if run.handlers.iter().any(|h| h == embedded::HANDLER) {
        match Embedded::new(config.embedded_network, embedded::NAMESPACE) {
            Ok(e) => {
                eprintln!(
                    "embedded mode: store and state in {}, pod network {}",
                    e.dir().display(),
                    embedded::network_name(config.embedded_network)
                );
                b.embedded = Some(e);
            }
            Err(e) => run.make_unavailable(embedded::HANDLER, &e.context("set up embedded mode")),
        }
    }
    pod_rows(&b, config, run);
    churn_rows(&b, config, run);
    memory_rows(&b, config, run);
    growth_rows(&b, config, run);
    host_mount_rows(&b, config, run);
    probe_rows(&b, config, run);
    if let Some(e) = b.embedded.take() {
        if let Err(e) = e.finish() {
            run.failures.push(format!("{}: {e:#}", embedded::HANDLER));
        }
    }

    let log_path = ctrd.dir().join("containerd.log");
    let log = fs::read_to_string(&log_path).unwrap_or_default();
    let phases = report::parse_phases(&log);
    let saved = config.out.join("containerd.log");
    if fs::write(&saved, &log).is_ok() {
        run.notes
            .push(format!("containerd's log of this run: {}", saved.display()));
    }
    if let Some(c) = &ctrd2 {
        let saved = config.out.join(format!("containerd-{}.log", c.version()));
        if fs::copy(c.dir().join("containerd.log"), &saved).is_ok() {
            run.notes.push(format!(
                "containerd {}'s log of this run (its columns' shim phases are in it): {}",
                c.version(),
                saved.display()
            ));
        }
    }
    drop(b);
    drop(cri2);
    if let Some(c) = &ctrd2 {
        if let Err(e) = c.assert_no_leftovers() {
            run.failures
                .push(format!("leftovers after the run (containerd {}): {e:#}", c.version()));
        }
        if let Err(e) = c.stop() {
            run.failures.push(format!("containerd {} teardown: {e:#}", c.version()));
        }
    }
    drop(cri);
    if let Err(e) = ctrd.assert_no_leftovers() {
        run.failures.push(format!("leftovers after the run: {e:#}"));
    }
    if let Err(e) = ctrd.stop() {
        run.failures.push(format!("containerd teardown: {e:#}"));
    }
    Ok(phases)
}

fn main() -> ExitCode {
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<bool> {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            // `cargo bench` passes `--bench` to every bench binary.
            "--bench" => {}
            "--phases" => {
                let path = args.next().context("--phases needs a containerd log file")?;
                let log = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
                let phases = report::parse_phases(&log);
                let context = Context {
                    machine: Vec::new(),
                    config: Vec::new(),
                };
                let report = Report {
                    context: &context,
                    handlers: &[],
                    unavailable: &BTreeMap::new(),
                    rows: &[],
                    phases: &phases,
                    notes: &[],
                    failures: &[],
                    run_seconds: 0.0,
                };
                print!("{}", report.phases_markdown());
                return Ok(true);
            }
            // scripts/symbol-order: the functions of a page-aligned build that ran.
            "--resident-functions" => {
                let elf = args.next().context("--resident-functions needs an ELF binary")?;
                for name in symbols::resident_functions(Path::new(&elf))? {
                    println!("{name}");
                }
                return Ok(true);
            }
            "-h" | "--help" => {
                println!("usage: bench [--phases <containerd.log> | --resident-functions <binary>]; knobs: BENCH_* environment variables (see tests/bench/main.rs)");
                return Ok(true);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    let begun = Instant::now();
    peapod_tests::require_root()?;
    let config = Config::from_env()?;
    containerd::peapod_shim()?;
    fs::create_dir_all(&config.out).with_context(|| format!("create {}", config.out.display()))?;
    let mut run = Run::new(&config);
    if run.handlers.iter().any(|h| h == CRUN_HANDLER) && !Path::new(CRUN_BINARY).exists() {
        let e = anyhow::anyhow!("{CRUN_BINARY} is missing: run `make deps` (Debian package crun)");
        run.make_unavailable(CRUN_HANDLER, &e);
    }
    let mut context = Context {
        machine: machine(),
        config: vec![(
            "run",
            format!(
                "{} iterations per row after {} warm-ups, handlers interleaved ({}); {} ExecSyncs per pod; churn {} × {} \
                 containers; memory with {} pods, {} readings",
                config.iterations,
                config.warmup,
                config.handlers.join(", "),
                config.execs,
                config.churn_iterations,
                config.churn_containers,
                config.memory_pods,
                config.memory_samples
            ),
        )],
    };
    if config.probes > 0 || config.probe_pods > 0 {
        context.config.push((
            "exec probes",
            format!(
                "`{}` every 1 s ({}): {} probes in 1 pod after {} s idle; {} pods over {} s. Node CPU from cgroup \
                 accounting: containerd and its shims (CRI) or the pods' shims (embedded) in a cgroup of their own, \
                 plus the pods' cgroups; the ExecSync client (the kubelet's part) not counted",
                probes::COMMAND,
                config.probe_handlers.join(", "),
                config.probes,
                config.probe_idle.as_secs(),
                config.probe_pods,
                config.probe_window.as_secs()
            ),
        ));
    }
    if config.handlers.iter().any(|h| h == embedded::HANDLER) {
        context.config.push((
            "peapod-embedded",
            format!(
                "peapod without containerd (peapod::runner in the bench process, as `peapod run`), pod network {}; \
                 exec = runner::exec, teardown = runner::delete with grace 0 (pod cgroup removal included), churn = \
                 runner::add_container + wait_container (the shim's Wait, no polling) + remove_container in a pod \
                 that also runs one `sleep`",
                embedded::network_name(config.embedded_network)
            ),
        ));
    }
    match (&config.containerd2, &config.containerd2_absent) {
        (Some(b), _) => context.config.push((
            "containerd 2.x",
            format!(
                "{b}, a second private containerd beside the first; its columns' ratios are to runc@{}",
                b.version
            ),
        )),
        (None, Some(why)) => {
            context
                .config
                .push(("containerd 2.x", format!("columns not run: {why}")));
        }
        (None, None) => {}
    }
    for (k, v) in context.machine.iter().chain(&context.config) {
        eprintln!("{k}: {v}");
    }
    let phases = match bench(&config, &mut run) {
        Ok(p) => p,
        Err(e) => {
            run.failures.push(format!("containerd setup: {e:#}"));
            Phases::default()
        }
    };
    context
        .machine
        .push(("load average at end (1, 5, 15 min)", load_average()));
    let report = Report {
        context: &context,
        handlers: &run.handlers,
        unavailable: &run.unavailable,
        rows: &run.rows,
        phases: &phases,
        notes: &run.notes,
        failures: &run.failures,
        run_seconds: begun.elapsed().as_secs_f64(),
    };
    let md = report.markdown();
    let rows_measured = run
        .rows
        .iter()
        .filter(|r| r.cells.values().any(|c| c.error.is_none() && !c.samples.is_empty()))
        .count();
    let md_path = config.out.join("results.md");
    let json_path = config.out.join("results.json");
    fs::write(&md_path, &md).with_context(|| format!("write {}", md_path.display()))?;
    let json = serde_json::to_string_pretty(&report.json()).context("serialize results")?;
    fs::write(&json_path, json + "\n").with_context(|| format!("write {}", json_path.display()))?;
    println!("\n{md}");
    eprintln!("written: {} and {}", md_path.display(), json_path.display());
    if !run.failures.is_empty() {
        eprintln!("bench FAILED ({} failures):", run.failures.len());
        for f in &run.failures {
            eprintln!("  {f}");
        }
        println!(
            "bench result: FAILED. {} failures; results in {}",
            run.failures.len(),
            md_path.display()
        );
        return Ok(false);
    }
    println!(
        "bench result: ok. {rows_measured} rows measured, {} handlers unavailable; results in {}",
        run.unavailable.len(),
        md_path.display()
    );
    Ok(true)
}
