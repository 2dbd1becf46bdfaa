//! `make soak`: many pods created and deleted, at most `SOAK_CONCURRENCY` alive at once,
//! through CRI on a private containerd (the containerd suite's harness) with runc and
//! peapod in the same run, on Debian's containerd 1.6.20 and on the newest containerd 2.x
//! build of `PEAPOD_CONTAINERD_BUILDS` (or `SOAK_CONTAINERD2`), and through peapod's
//! embedded mode (`peapod::runner`, as `peapod run`). `pods.rs` says what each pod is and
//! does; `census.rs` what a sample counts.
//!
//! Each run (`runc@1.6.20`, `peapod@1.6.20`, `runc@2.3.4`, `peapod@2.3.4`,
//! `peapod-embedded`) serves its pods in stretches of `SOAK_SAMPLE_EVERY`: a census before
//! the first, after each stretch once its pods have gone, and at the end; a live reading
//! halfway through each stretch. The runs of one containerd share its instance, one after
//! the other, so a run's census sees only its own handler's pods.
//!
//! The run fails (exit 1, `soak result: FAILED.` last on stdout) when a pod failed, an exec
//! hung, the end census differs from the start's (the leaks are named), or containerd
//! grows with the pods served: its fd count or goroutines (least-squares slope over the
//! censuses after the first stretch, where containerd's caches warm up), its live Go heap
//! after a forced GC (read from its debug socket; above `SOAK_HEAP_SLOPE_KIB` KiB per 100
//! pods, default 256), or its RSS (above `SOAK_RSS_SLOPE_KIB`, default 512). containerd 2.x
//! holds every container event for 5 minutes by design ([`census::Scope::settle`]): there
//! the heap is judged on a census taken `SOAK_SETTLE_SECONDS` (310) after the last pod,
//! against the run's first, and the RSS is reported, not judged (it follows the events'
//! peak and Go's lazy return of freed pages). With fewer than 300 pods, nothing is judged
//! and there is no settled census.
//! The end census is retried for up to 10 s while it differs from the start's (teardown
//! containerd finishes asynchronously).
//!
//! Knobs: `SOAK_PODS` (1000 per run), `SOAK_CONCURRENCY` (20), `SOAK_SAMPLE_EVERY` (100),
//! `SOAK_FAIL_EVERY` (every 10th pod's app fails once; 0: none), `SOAK_EXEC_TIMEOUT`
//! (seconds, 30), `SOAK_RUNS` (`runc,peapod,embedded`), `SOAK_CONTAINERD2` (a release dir,
//! or `none`), `SOAK_HEAP_SLOPE_KIB`, `SOAK_RSS_SLOPE_KIB`, `SOAK_SETTLE_SECONDS`,
//! `SOAK_OUT` (`target/soak`).

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use census::{Census, Live, Scope};
use peapod::embedded::{EMBEDDED_ADDRESS, EMBEDDED_NAMESPACE};
use peapod::runner::NetworkMode;
use peapod_tests::containerd::{
    self, Containerd, ContainerdBuild, GoRuntime, K8S_NAMESPACE, PEAPOD_HANDLER, RUNC_HANDLER,
};
use peapod_tests::embedded::Embedded;
use pods::PodResult;
use serde_json::{json, Value};

mod census;
mod pods;

/// The embedded run's name.
const EMBEDDED: &str = "peapod-embedded";

struct Config {
    pods: usize,
    concurrency: usize,
    sample_every: usize,
    fail_every: usize,
    exec_timeout: Duration,
    runs: Vec<String>,
    rss_slope_limit_kib: f64,
    /// containerd's live Go heap growth allowed, KiB per 100 pods.
    heap_slope_limit_kib: f64,
    builds: Vec<ContainerdBuild>,
    notes: Vec<String>,
    out: PathBuf,
}

fn env_usize(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().with_context(|| format!("{name}={v:?} is not a count")),
        _ => Ok(default),
    }
}

/// Debian's containerd (or `PEAPOD_CONTAINERD`'s) and the newest 2.x build of
/// `PEAPOD_CONTAINERD_BUILDS` (or `SOAK_CONTAINERD2`); a note says why there is no 2.x.
fn builds(notes: &mut Vec<String>) -> Result<Vec<ContainerdBuild>> {
    let first = ContainerdBuild::selected()?.clone();
    match ContainerdBuild::newest_2x("SOAK_CONTAINERD2", Some(first.version))? {
        Ok(b) => Ok(vec![first, b]),
        Err(why) => {
            notes.push(format!("containerd 2.x: NOT RUN: {why}"));
            Ok(vec![first])
        }
    }
}

impl Config {
    fn from_env() -> Result<Self> {
        let mut notes = Vec::new();
        let builds = builds(&mut notes)?;
        let runs: Vec<String> = std::env::var("SOAK_RUNS")
            .unwrap_or_else(|_| "runc,peapod,embedded".into())
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        for r in &runs {
            if ![RUNC_HANDLER, PEAPOD_HANDLER, "embedded"].contains(&r.as_str()) {
                bail!("SOAK_RUNS: unknown {r:?} (runc, peapod, embedded)");
            }
        }
        let out = match std::env::var_os("SOAK_OUT") {
            Some(d) => PathBuf::from(d),
            None => containerd::target_profile_dir()?
                .parent()
                .context("target dir")?
                .join("soak"),
        };
        Ok(Config {
            pods: env_usize("SOAK_PODS", 1000)?.max(1),
            concurrency: env_usize("SOAK_CONCURRENCY", 20)?.max(1),
            sample_every: env_usize("SOAK_SAMPLE_EVERY", 100)?.max(1),
            fail_every: env_usize("SOAK_FAIL_EVERY", 10)?,
            exec_timeout: Duration::from_secs(env_usize("SOAK_EXEC_TIMEOUT", 30)? as u64),
            runs,
            rss_slope_limit_kib: env_usize("SOAK_RSS_SLOPE_KIB", 512)? as f64,
            heap_slope_limit_kib: env_usize("SOAK_HEAP_SLOPE_KIB", 256)? as f64,
            builds,
            notes,
            out,
        })
    }
}

/// One run's results.
#[derive(Default)]
struct Run {
    name: String,
    censuses: Vec<Census>,
    /// The census [`Scope::settle`] after the last one, when containerd holds pods' traces
    /// for a while by design.
    settled: Option<Census>,
    /// [`Scope::settle`], seconds.
    settle_secs: f64,
    live: Vec<Live>,
    ready_ms: Vec<f64>,
    teardown_ms: Vec<f64>,
    replaced: usize,
    hung_execs: Vec<String>,
    errors: Vec<String>,
    leaks: Vec<String>,
    /// Pods served per second, sampling time excluded.
    pods_per_second: f64,
    rss_slope: Option<f64>,
    fd_slope: Option<f64>,
    /// containerd's live Go heap after GC, KiB per 100 pods.
    heap_slope: Option<f64>,
    /// containerd's goroutines per 100 pods.
    goroutine_slope: Option<f64>,
    verdicts: Vec<String>,
}

/// Serves `config.pods` pods with `pod` (its argument: whether the app fails once),
/// sampling `scope` as the module docs say.
fn soak(config: &Config, name: &str, scope: &Scope, pod: &(dyn Fn(bool) -> PodResult + Sync)) -> Run {
    let mut run = Run {
        name: name.to_string(),
        ..Default::default()
    };
    eprintln!("== {name}: {} pods, {} at once", config.pods, config.concurrency);
    run.censuses.push(scope.census(0));
    save_heap_profile(config, name, scope, 0);
    let results: Mutex<Vec<PodResult>> = Mutex::new(Vec::with_capacity(config.pods));
    let mut busy = Duration::ZERO;
    let mut start = 0;
    while start < config.pods {
        let end = (start + config.sample_every).min(config.pods);
        let next = AtomicUsize::new(start);
        let done = AtomicUsize::new(start);
        let midpoint = start + (end - start) / 2;
        let live: Mutex<Option<Live>> = Mutex::new(None);
        let t = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..config.concurrency.min(end - start) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= end {
                        break;
                    }
                    let fail = config.fail_every > 0 && i % config.fail_every == config.fail_every - 1;
                    let r = pod(fail);
                    if let Some(e) = &r.error {
                        eprintln!("  {name}: pod {i}: {e}");
                    }
                    if let Some(h) = &r.hung_exec {
                        eprintln!("  {name}: pod {i}: HUNG EXEC: {h}");
                    }
                    results.lock().unwrap().push(r);
                    if done.fetch_add(1, Ordering::SeqCst) + 1 == midpoint.max(start + 1) {
                        *live.lock().unwrap() = Some(scope.live(midpoint.max(start + 1)));
                    }
                });
            }
        });
        busy += t.elapsed();
        if let Some(l) = live.into_inner().unwrap() {
            run.live.push(l);
        }
        let c = scope.census(end);
        eprintln!(
            "  {name}: {end} pods in {:.0} s; census: {} shims, {} mounts, containerd fds {:?}, RSS {:?} KiB",
            busy.as_secs_f64(),
            c.shims.len(),
            c.mounts.len(),
            c.containerd_fds,
            c.containerd_rss_kib
        );
        run.censuses.push(c);
        start = end;
    }
    // Teardown that containerd finishes asynchronously (a shim's connection closing) gets
    // 10 s to settle: what is still there then is a leak.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !census::leaks(&run.censuses[0], run.censuses.last().expect("censuses")).is_empty()
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(500));
        let again = scope.census(config.pods);
        *run.censuses.last_mut().expect("censuses") = again;
    }
    save_heap_profile(config, name, scope, config.pods);
    // Only where the growth is judged (300 pods and more, see `judge`): below, the wait
    // would buy a census no verdict reads.
    if !scope.settle.is_zero() && config.pods >= 300 {
        eprintln!(
            "  {name}: waiting {:?} for what containerd holds by design to go (Scope::settle)",
            scope.settle
        );
        std::thread::sleep(scope.settle);
        let settled = scope.census(config.pods);
        eprintln!(
            "  {name}: settled: containerd RSS {:?} KiB, Go runtime {:?}",
            settled.containerd_rss_kib, settled.containerd_go
        );
        run.settled = Some(settled);
        run.settle_secs = scope.settle.as_secs_f64();
        save_heap_profile(config, &format!("{name}-settled"), scope, config.pods);
    }
    run.pods_per_second = config.pods as f64 / busy.as_secs_f64().max(1e-9);
    for r in results.into_inner().unwrap() {
        run.ready_ms.extend(r.ready_ms);
        run.teardown_ms.extend(r.teardown_ms);
        run.replaced += usize::from(r.replaced);
        run.hung_execs.extend(r.hung_exec);
        run.errors.extend(r.error);
    }
    judge(config, &mut run);
    run
}

/// Writes containerd's heap profile after `pods` pods to `<out>/<run>-heap-<pods>.txt`, so
/// that growth between the first and the last can be traced to the allocation stacks that
/// hold it. A failure is reported, not fatal: the census still has the totals.
fn save_heap_profile(config: &Config, name: &str, scope: &Scope, pods: usize) {
    let Some(debug) = &scope.containerd_debug else {
        return;
    };
    let path = config.out.join(format!("{}-heap-{pods}.txt", name.replace('@', "-")));
    if let Err(e) = containerd::heap_profile(debug).and_then(|p| {
        fs::create_dir_all(&config.out)
            .and(fs::write(&path, p))
            .map_err(Into::into)
    }) {
        eprintln!(
            "  {name}: containerd's heap profile not saved to {}: {e:#}",
            path.display()
        );
    }
}

/// Leaks (end census against start), and containerd's growth.
fn judge(config: &Config, run: &mut Run) {
    let (first, last) = (
        run.censuses.first().cloned().unwrap_or_default(),
        run.censuses.last().cloned().unwrap_or_default(),
    );
    run.leaks = census::leaks(&first, &last);
    let warm: Vec<&Census> = run.censuses.iter().filter(|c| c.pods >= config.sample_every).collect();
    let points = |f: &dyn Fn(&Census) -> Option<f64>| -> Vec<(f64, f64)> {
        warm.iter().filter_map(|c| f(c).map(|y| (c.pods as f64, y))).collect()
    };
    run.rss_slope = census::slope(&points(&|c| c.containerd_rss_kib.map(|v| v as f64))).map(|s| s * 100.0);
    run.fd_slope = census::slope(&points(&|c| c.containerd_fds.map(|v| v as f64))).map(|s| s * 100.0);
    run.goroutine_slope = census::slope(&points(&|c| c.containerd_go.map(|g| g.goroutines as f64))).map(|s| s * 100.0);
    // containerd's live Go heap after a forced GC is what a leak grows. Where containerd
    // holds served pods' events for a while (`Scope::settle`), it is judged once they have
    // gone: the settled census against the run's first, per 100 pods; else the slope.
    let heap_kib = |c: &Census| c.containerd_go.map(|g| g.heap_alloc as f64 / 1024.0);
    run.heap_slope = match &run.settled {
        Some(settled) => heap_kib(settled)
            .zip(heap_kib(&first))
            .map(|(end, start)| (end - start) * 100.0 / config.pods as f64),
        None => census::slope(&points(&|c| heap_kib(c))).map(|s| s * 100.0),
    };
    // Judged from 300 pods on: below, a few KiB of Go heap over three close censuses
    // extrapolate to a slope that says nothing.
    if config.pods < 300 {
        return;
    }
    if let Some(s) = run.heap_slope {
        if s > config.heap_slope_limit_kib {
            run.verdicts.push(format!(
                "containerd's live Go heap grows {s:.0} KiB per 100 pods{} (limit {:.0})",
                if run.settled.is_some() {
                    ", once its pod events have gone"
                } else {
                    ""
                },
                config.heap_slope_limit_kib
            ));
        }
    }
    // RSS, judged where no pod event is held: with them, the RSS follows the events' peak
    // and Go's heap goal, and the Go runtime returns freed pages to the kernel lazily (its
    // retained heap is in the report), so the live heap above is the judge there.
    if let Some(s) = run.rss_slope.filter(|_| run.settled.is_none()) {
        if s > config.rss_slope_limit_kib {
            run.verdicts.push(format!(
                "containerd's RSS grows {s:.0} KiB per 100 pods (limit {:.0})",
                config.rss_slope_limit_kib
            ));
        }
    }
    if let Some(s) = run.fd_slope {
        if s > 0.5 {
            run.verdicts
                .push(format!("containerd's fd count grows {s:.2} per 100 pods"));
        }
    }
    // One goroutine caught mid-teardown by the last of three censuses makes 0.5: a leak
    // of one per pod would make 100.
    if let Some(s) = run.goroutine_slope {
        if s > 1.0 {
            run.verdicts
                .push(format!("containerd's goroutines grow {s:.2} per 100 pods"));
        }
    }
}

fn percentile(values: &[f64], p: u32) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    // Nearest rank: the smallest value with at least p% of the values at or below it.
    let p = p as usize;
    let rank = (v.len() * p).div_ceil(100);
    Some(v[rank.clamp(1, v.len()) - 1])
}

fn cri_scope(ctrd: &Containerd) -> Scope {
    let address = ctrd.address().display().to_string();
    let state = ctrd.dir().join("state");
    let root = ctrd.dir().join("root");
    let shim = shim::start::Paths::for_namespace(K8S_NAMESPACE);
    Scope {
        containerd: Some(ctrd.pid()),
        containerd_debug: Some(ctrd.debug_address()),
        settle: if ctrd.version().is_2x() {
            // 5 minutes, and the event queue's own 10 ms burst margin with room to spare.
            Duration::from_secs(env_usize("SOAK_SETTLE_SECONDS", 310).unwrap_or(310) as u64)
        } else {
            Duration::ZERO
        },
        // Any shim containerd started (`-address <socket> -id <id>`), whatever its argv[0]
        // (peapod's shim daemon may run re-executed from a sealed memfd); not ctr.
        is_shim: Box::new(move |p| p.args.iter().any(|a| a.contains(&address)) && p.args.iter().any(|a| a == "-id")),
        cgroup_prefixes: vec![format!("{}/", ctrd.cgroup_root())],
        ignore_cgroups: vec![ctrd.cgroup_root().to_string()],
        state_dirs: vec![
            (
                "bundle dir".into(),
                state.join("io.containerd.runtime.v2.task").join(K8S_NAMESPACE),
            ),
            (
                "task root dir".into(),
                root.join("io.containerd.runtime.v2.task").join(K8S_NAMESPACE),
            ),
            (
                "CRI sandbox state".into(),
                state.join("io.containerd.grpc.v1.cri/sandboxes"),
            ),
            (
                "CRI container state".into(),
                state.join("io.containerd.grpc.v1.cri/containers"),
            ),
            (
                "CRI sandbox root".into(),
                root.join("io.containerd.grpc.v1.cri/sandboxes"),
            ),
            (
                "CRI container root".into(),
                root.join("io.containerd.grpc.v1.cri/containers"),
            ),
            (
                "runc state".into(),
                PathBuf::from("/run/containerd/runc").join(K8S_NAMESPACE),
            ),
            ("shim socket".into(), PathBuf::from("/run/containerd/s")),
            ("peapod container state".into(), shim.containers),
            ("peapod pod state".into(), shim.pods),
            ("peapod disk volumes".into(), shim.disk),
            ("pod log dir".into(), ctrd.dir().join("pods")),
            ("emptyDir host dir".into(), ctrd.dir().join("volumes")),
            ("CNI result cache".into(), PathBuf::from("/var/lib/cni/results")),
        ],
        netns_dirs: vec![ctrd.netns_dir(), PathBuf::from("/run/netns")],
        ipam: Box::new(Vec::new),
    }
}

fn cri_runs(config: &Config, build: &ContainerdBuild, runs: &mut Vec<Run>) -> Result<()> {
    let ctrd = Containerd::start_build(build.clone())?;
    eprintln!(
        "containerd {} ({}) ready in {:?} ({})",
        ctrd.version(),
        ctrd.pid(),
        ctrd.startup_time(),
        ctrd.dir().display()
    );
    ctrd.import_images()?;
    let cri = ctrd.cri()?;
    let ipam_dir = ctrd.dir().join("cni/ipam");
    for handler in [RUNC_HANDLER, PEAPOD_HANDLER] {
        if !config.runs.iter().any(|r| r == handler) {
            continue;
        }
        let mut scope = cri_scope(&ctrd);
        let dir = ipam_dir.clone();
        scope.ipam = Box::new(move || ipam_entries(&dir));
        let name = format!("{handler}@{}", ctrd.version());
        let pod = |fail| pods::cri_pod(&ctrd, &cri, handler, fail, config.exec_timeout);
        runs.push(soak(config, &name, &scope, &pod));
    }
    drop(cri);
    let log = config.out.join(format!("containerd-{}.log", ctrd.version()));
    let _ = fs::copy(ctrd.dir().join("containerd.log"), &log);
    let left = ctrd.assert_no_leftovers();
    ctrd.stop()?;
    left.with_context(|| format!("leftovers in containerd {}", build.version))
}

/// host-local IPAM files under `dir` (every network): (IP, owner).
fn ipam_entries(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for net in fs::read_dir(dir).into_iter().flatten().flatten() {
        for e in fs::read_dir(net.path()).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("last_reserved_ip") || n == "lock" {
                continue;
            }
            let owner = fs::read_to_string(e.path()).unwrap_or_default();
            out.push((n, owner.lines().next().unwrap_or_default().to_string()));
        }
    }
    out
}

fn embedded_run(config: &Config) -> Result<Run> {
    let e = Embedded::new(NetworkMode::Cni, "peapod-soak")?;
    let shim = shim::start::Paths::for_namespace(EMBEDDED_NAMESPACE);
    let scope = Scope {
        containerd: None,
        containerd_debug: None,
        settle: Duration::ZERO,
        is_shim: Box::new(|p| p.args.iter().any(|a| a == EMBEDDED_ADDRESS)),
        cgroup_prefixes: vec!["/peapod/".into()],
        ignore_cgroups: vec!["/peapod".into()],
        state_dirs: vec![
            ("pod state".into(), e.paths().state.join("pods")),
            ("pod data".into(), e.paths().root.join("pods")),
            ("peapod container state".into(), shim.containers),
            ("peapod pod state".into(), shim.pods),
            ("peapod disk volumes".into(), shim.disk),
            ("CNI result cache".into(), PathBuf::from("/var/lib/cni/results")),
        ],
        netns_dirs: vec![PathBuf::from("/run/netns")],
        ipam: {
            // host-local's directory per network (`<dir>/peapod`), whatever the root.
            let dir = PathBuf::from(peapod::cni::IPAM_DIR);
            Box::new(move || {
                ipam_entries(&dir)
                    .into_iter()
                    .filter(|(_, owner)| !owner.is_empty())
                    .collect()
            })
        },
    };
    let pod = |fail| pods::embedded_pod(&e, fail, config.exec_timeout);
    let mut run = soak(config, EMBEDDED, &scope, &pod);
    if let Err(err) = e.finish() {
        run.leaks.push(format!("{err:#}"));
    }
    Ok(run)
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.digits$}"))
}

fn markdown(config: &Config, runs: &[Run], setup_errors: &[String], seconds: f64) -> String {
    let mut md = String::from("# peapod soak\n\n");
    md += &format!(
        "{} pods per run, at most {} alive at once, every {}th app fails once (replaced under CRI, restarted in \
         embedded mode), exec timeout {:?}; censuses every {} pods with no pod alive; {:.0} s in all.\n\n",
        config.pods, config.concurrency, config.fail_every, config.exec_timeout, config.sample_every, seconds
    );
    md += &format!(
        "containerd: {}\n\n",
        config
            .builds
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    );
    for n in &config.notes {
        md += &format!("- {n}\n");
    }
    md += "\n## Summary\n\n| run | pods/s | ready p50 ms | ready p99 ms | teardown p50 ms | teardown p99 ms | apps replaced | hung execs | pod errors | leaks | containerd RSS KiB/100 pods | containerd Go heap KiB/100 pods | containerd goroutines/100 pods | containerd fds/100 pods |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for r in runs {
        md += &format!(
            "| {} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.name,
            r.pods_per_second,
            fmt_opt(percentile(&r.ready_ms, 50), 0),
            fmt_opt(percentile(&r.ready_ms, 99), 0),
            fmt_opt(percentile(&r.teardown_ms, 50), 0),
            fmt_opt(percentile(&r.teardown_ms, 99), 0),
            r.replaced,
            r.hung_execs.len(),
            r.errors.len(),
            r.leaks.len(),
            fmt_opt(r.rss_slope, 0),
            fmt_opt(r.heap_slope, 0),
            fmt_opt(r.goroutine_slope, 2),
            fmt_opt(r.fd_slope, 2),
        );
    }
    for r in runs {
        md += &format!("\n## {}\n\nCensus (no pod alive):\n\n| pods | shims | procs in runtime cgroups | mounts | cgroups | netns files | netns in use | state entries | IPAM | containerd fds | containerd RSS KiB |\n|---|---|---|---|---|---|---|---|---|---|---|\n", r.name);
        for c in &r.censuses {
            let cg: Vec<String> = c
                .cgroups
                .iter()
                .map(|(h, p)| format!("{}: {}", h.rsplit('/').next().unwrap_or(h), p.len()))
                .collect();
            let st: usize = c.state.values().map(|e| e.len()).sum();
            md += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                c.pods,
                c.shims.len(),
                c.in_cgroups.len(),
                c.mounts.len(),
                cg.join(", "),
                c.netns_files.len(),
                c.netns_inodes,
                st,
                c.ipam.len(),
                c.containerd_fds.map_or("–".into(), |v| v.to_string()),
                c.containerd_rss_kib.map_or("–".into(), |v| v.to_string()),
            );
        }
        if r.censuses.iter().any(|c| c.containerd_go.is_some()) {
            md += "\ncontainerd's memory (no pod alive; Go heap after a forced GC):\n\n| pods | RSS KiB | anonymous RSS KiB | Go live heap KiB | Go retained heap KiB | goroutines |\n|---|---|---|---|---|---|\n";
            let rows = r.censuses.iter().map(|c| (c.pods.to_string(), c));
            let settled = r
                .settled
                .iter()
                .map(|c| (format!("{} + {:.0} s", c.pods, r.settle_secs), c));
            for (label, c) in rows.chain(settled) {
                let go = |f: fn(&GoRuntime) -> u64| c.containerd_go.as_ref().map_or("–".into(), |g| f(g).to_string());
                md += &format!(
                    "| {} | {} | {} | {} | {} | {} |\n",
                    label,
                    c.containerd_rss_kib.map_or("–".into(), |v| v.to_string()),
                    c.containerd_rss_anon_kib.map_or("–".into(), |v| v.to_string()),
                    go(|g| g.heap_alloc / 1024),
                    go(|g| g.heap_retained / 1024),
                    go(|g| g.goroutines),
                );
            }
        }
        md += &format!("\nUnder load ({} pods alive at most):\n\n| pods | shims | shim fds | shim RSS KiB | containerd fds | containerd RSS KiB |\n|---|---|---|---|---|---|\n", config.concurrency);
        for l in &r.live {
            md += &format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                l.pods,
                l.shims,
                l.shim_fds,
                l.shim_rss_kib,
                l.containerd_fds.map_or("–".into(), |v| v.to_string()),
                l.containerd_rss_kib.map_or("–".into(), |v| v.to_string()),
            );
        }
        for (what, list) in [
            ("Leaks", &r.leaks),
            ("Hung execs", &r.hung_execs),
            ("Verdicts", &r.verdicts),
        ] {
            if !list.is_empty() {
                md += &format!("\n{what}:\n\n");
                for l in list {
                    md += &format!("- {l}\n");
                }
            }
        }
        if !r.errors.is_empty() {
            md += &format!("\nPod errors ({}; first 20):\n\n", r.errors.len());
            for l in r.errors.iter().take(20) {
                md += &format!("- {}\n", l.lines().next().unwrap_or_default());
            }
        }
    }
    if !setup_errors.is_empty() {
        md += "\n## Setup and teardown errors\n\n";
        for e in setup_errors {
            md += &format!("- {e}\n");
        }
    }
    md
}

fn run_json(r: &Run) -> Value {
    json!({
        "name": r.name,
        "pods_per_second": r.pods_per_second,
        "ready_ms": {"p50": percentile(&r.ready_ms, 50), "p99": percentile(&r.ready_ms, 99), "samples": r.ready_ms.len()},
        "teardown_ms": {"p50": percentile(&r.teardown_ms, 50), "p99": percentile(&r.teardown_ms, 99), "samples": r.teardown_ms.len()},
        "apps_replaced": r.replaced,
        "hung_execs": r.hung_execs,
        "pod_errors": r.errors,
        "leaks": r.leaks,
        "containerd_rss_kib_per_100_pods": r.rss_slope,
        "containerd_fds_per_100_pods": r.fd_slope,
        "containerd_go_heap_kib_per_100_pods": r.heap_slope,
        "containerd_goroutines_per_100_pods": r.goroutine_slope,
        "verdicts": r.verdicts,
        "census": r.censuses.iter().map(census::census_json).collect::<Vec<_>>(),
        "settled": r.settled.as_ref().map(census::census_json),
        "settle_seconds": r.settle_secs,
        "live": r.live.iter().map(census::live_json).collect::<Vec<_>>(),
    })
}

fn real_main() -> Result<bool> {
    if std::env::args().skip(1).any(|a| a == "-h" || a == "--help") {
        println!("usage: soak; knobs: SOAK_* environment variables (see tests/soak/main.rs)");
        return Ok(true);
    }
    let begun = Instant::now();
    peapod_tests::require_root()?;
    let config = Config::from_env()?;
    containerd::peapod_shim()?;
    fs::create_dir_all(&config.out).with_context(|| format!("create {}", config.out.display()))?;
    for n in &config.notes {
        eprintln!("{n}");
    }
    let mut runs = Vec::new();
    let mut setup_errors = Vec::new();
    if config.runs.iter().any(|r| r == RUNC_HANDLER || r == PEAPOD_HANDLER) {
        for build in &config.builds {
            if let Err(e) = cri_runs(&config, build, &mut runs) {
                setup_errors.push(format!("containerd {}: {e:#}", build.version));
            }
        }
    }
    if config.runs.iter().any(|r| r == "embedded") {
        match embedded_run(&config) {
            Ok(r) => runs.push(r),
            Err(e) => setup_errors.push(format!("embedded mode: {e:#}")),
        }
    }
    let seconds = begun.elapsed().as_secs_f64();
    let md = markdown(&config, &runs, &setup_errors, seconds);
    let json = json!({
        "pods_per_run": config.pods,
        "concurrency": config.concurrency,
        "sample_every": config.sample_every,
        "fail_every": config.fail_every,
        "exec_timeout_s": config.exec_timeout.as_secs(),
        "containerd": config.builds.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "notes": config.notes,
        "runs": runs.iter().map(run_json).collect::<Vec<_>>(),
        "setup_errors": setup_errors,
        "seconds": seconds,
    });
    let (md_path, json_path) = (config.out.join("report.md"), config.out.join("report.json"));
    fs::write(&md_path, &md).with_context(|| format!("write {}", md_path.display()))?;
    fs::write(&json_path, serde_json::to_string_pretty(&json)? + "\n")?;
    println!("\n{md}");
    eprintln!("written: {} and {}", md_path.display(), json_path.display());
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for r in &runs {
        for (what, n) in [
            ("leaks", r.leaks.len()),
            ("hung execs", r.hung_execs.len()),
            ("pod errors", r.errors.len()),
            ("growth verdicts", r.verdicts.len()),
        ] {
            if n > 0 {
                *failures.entry(format!("{}: {what}", r.name)).or_default() += n;
            }
        }
    }
    if !setup_errors.is_empty() {
        failures.insert("setup/teardown".into(), setup_errors.len());
    }
    if failures.is_empty() {
        println!(
            "soak result: ok. {} runs, no leak, no growth; report in {}",
            runs.len(),
            md_path.display()
        );
        Ok(true)
    } else {
        let list: Vec<String> = failures.iter().map(|(k, n)| format!("{k} ({n})")).collect();
        println!(
            "soak result: FAILED. {}; report in {}",
            list.join(", "),
            md_path.display()
        );
        Ok(false)
    }
}

fn main() -> ExitCode {
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e:#}");
            ExitCode::FAILURE
        }
    }
}
