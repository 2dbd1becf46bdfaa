//! What a soak sample counts: everything a pod leaves on the host while it lives and must
//! take with it when it goes, read from `/proc`, cgroupfs and the runtime's directories.
//!
//! Two kinds of reading:
//! - [`Census`], taken when no pod of the run is alive (at the start, after every
//!   `SOAK_SAMPLE_EVERY` pods once the pods in flight have gone, and at the end): each
//!   count must be back to the start's; the named sets (mount points, cgroup paths,
//!   directory entries) say what leaked when one is not;
//! - [`Live`], taken while `SOAK_CONCURRENCY` pods run (halfway through each stretch):
//!   the shims' number, fds and RSS under load, and containerd's.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use peapod_tests::containerd::{cgroup_hierarchies, go_runtime, unescape_mountinfo, GoRuntime};
use peapod_tests::procs::{self, Proc};
use serde_json::{json, Value};

/// Where a run's pods leave traces, and how to recognise its processes.
pub struct Scope {
    /// containerd's pid (CRI runs).
    pub containerd: Option<u32>,
    /// containerd's debug socket, for its Go runtime's reading (CRI runs).
    pub containerd_debug: Option<PathBuf>,
    /// How long containerd keeps, by design, what served pods leave in its memory: a
    /// census this long after the last pod judges its growth. containerd 2.x's CRI holds
    /// every container event (each with the pod's full status) for 5 minutes while no
    /// client subscribes to `GetContainerEvents` (`internal/cri/server/service.go`:
    /// `eventq.New(5*time.Minute, …)`), and kubelet subscribes only with its EventedPLEG
    /// feature gate on; containerd 1.6 keeps nothing (zero).
    pub settle: std::time::Duration,
    /// Whether a process is one of the run's shims.
    pub is_shim: Box<dyn Fn(&Proc) -> bool + Send + Sync>,
    /// Cgroup path prefixes (cgroupfs form, `/a/b/`) under which the runtime puts pods.
    pub cgroup_prefixes: Vec<String>,
    /// Cgroups (cgroupfs form) the harness makes and removes itself, not the runtime: the
    /// pods' cgroup root, `/peapod` (left out of the cgroup sets).
    pub ignore_cgroups: Vec<String>,
    /// Directories whose entries are per-pod or per-container state: (label, dir).
    pub state_dirs: Vec<(String, PathBuf)>,
    /// Directories whose entries are network namespace files.
    pub netns_dirs: Vec<PathBuf>,
    /// CNI IPAM allocations (IP → owner).
    pub ipam: Box<dyn Fn() -> Vec<(String, String)> + Send + Sync>,
}

/// A reading with no pod of the run alive.
#[derive(Debug, Clone, Default)]
pub struct Census {
    /// Pods served so far.
    pub pods: usize,
    /// The run's shim processes: pid → command line.
    pub shims: BTreeMap<u32, String>,
    /// Processes in a cgroup under the run's prefixes: pid → command line.
    pub in_cgroups: BTreeMap<u32, String>,
    /// `/proc/self/mountinfo` mount points (with repeats, `#2` for the second).
    pub mounts: BTreeSet<String>,
    /// Every cgroup directory, per hierarchy (a v1 controller's mount point, or the v2
    /// tree's): hierarchy → relative paths.
    pub cgroups: BTreeMap<String, BTreeSet<String>>,
    /// Network namespaces: files in the netns dirs, and distinct `/proc/*/ns/net` inodes.
    pub netns_files: BTreeSet<String>,
    /// Distinct network namespaces of all processes (inode numbers).
    pub netns_inodes: usize,
    /// State and bundle directories: label → entries.
    pub state: BTreeMap<String, BTreeSet<String>>,
    /// CNI IPAM allocations: "IP owner".
    pub ipam: BTreeSet<String>,
    /// containerd's open fds.
    pub containerd_fds: Option<usize>,
    /// containerd's RSS, KiB.
    pub containerd_rss_kib: Option<u64>,
    /// The anonymous part of containerd's RSS (`RssAnon`), KiB: the rest is file pages
    /// (its binary, `meta.db`'s mmap).
    pub containerd_rss_anon_kib: Option<u64>,
    /// containerd's Go runtime after a forced GC: live heap, retained heap, goroutines.
    pub containerd_go: Option<GoRuntime>,
}

/// A reading under load.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// Pods served so far.
    pub pods: usize,
    /// Shim processes.
    pub shims: usize,
    /// Their open fds, summed.
    pub shim_fds: usize,
    /// Their RSS, KiB, summed.
    pub shim_rss_kib: u64,
    /// containerd's open fds.
    pub containerd_fds: Option<usize>,
    /// containerd's RSS, KiB.
    pub containerd_rss_kib: Option<u64>,
}

fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A `kB` line of `/proc/<pid>/status` (`VmRSS`, `RssAnon`); 0 when unreadable.
fn status_kib(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

fn cgroup_paths(pid: u32) -> Vec<String> {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .map(|p| format!("{}/", p.trim_end_matches('/')))
        .collect()
}

fn entries(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn cgroup_tree(root: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let path = entry.path();
                found.insert(format!("/{}", path.strip_prefix(root).unwrap_or(&path).display()));
                stack.push(path);
            }
        }
    }
    found
}

fn cmdline(p: &Proc) -> String {
    p.args.join(" ")
}

impl Scope {
    fn shims(&self, all: &[Proc]) -> Vec<u32> {
        all.iter().filter(|p| (self.is_shim)(p)).map(|p| p.pid).collect()
    }

    /// A [`Census`] after `pods` pods.
    pub fn census(&self, pods: usize) -> Census {
        let all = procs::processes();
        let me = std::process::id();
        let shims = all
            .iter()
            .filter(|p| (self.is_shim)(p))
            .map(|p| (p.pid, cmdline(p)))
            .collect();
        let in_cgroups = all
            .iter()
            .filter(|p| p.pid != me)
            .filter(|p| {
                cgroup_paths(p.pid)
                    .iter()
                    .any(|c| self.cgroup_prefixes.iter().any(|pre| c.starts_with(pre)))
            })
            .map(|p| (p.pid, cmdline(p)))
            .collect();
        let mut mounts = BTreeSet::new();
        for line in fs::read_to_string("/proc/self/mountinfo").unwrap_or_default().lines() {
            let Some(point) = line.split(' ').nth(4).map(unescape_mountinfo) else {
                continue;
            };
            let mut key = point.clone();
            let mut n = 1;
            while mounts.contains(&key) {
                n += 1;
                key = format!("{point} #{n}");
            }
            mounts.insert(key);
        }
        let cgroups = cgroup_hierarchies()
            .into_iter()
            .map(|h| {
                let mut tree = cgroup_tree(&h);
                for c in &self.ignore_cgroups {
                    tree.remove(c);
                }
                (h.display().to_string(), tree)
            })
            .collect();
        let netns_files = self
            .netns_dirs
            .iter()
            .flat_map(|d| entries(d).into_iter().map(move |e| d.join(e).display().to_string()))
            .collect();
        let netns_inodes = all
            .iter()
            .filter_map(|p| fs::read_link(format!("/proc/{}/ns/net", p.pid)).ok())
            .collect::<BTreeSet<_>>()
            .len();
        let state = self
            .state_dirs
            .iter()
            .map(|(label, dir)| (label.clone(), entries(dir)))
            .collect();
        let ipam = (self.ipam)()
            .into_iter()
            .map(|(ip, owner)| format!("{ip} {owner}"))
            .collect();
        Census {
            pods,
            shims,
            in_cgroups,
            mounts,
            cgroups,
            netns_files,
            netns_inodes,
            state,
            ipam,
            containerd_fds: self.containerd.map(fd_count),
            containerd_rss_kib: self.containerd.map(rss_kib),
            containerd_rss_anon_kib: self.containerd.map(|p| status_kib(p, "RssAnon")),
            containerd_go: self.containerd_debug.as_deref().and_then(|d| {
                go_runtime(d)
                    .map_err(|e| eprintln!("  containerd's Go runtime not read: {e:#}"))
                    .ok()
            }),
        }
    }

    /// A [`Live`] reading after `pods` pods.
    pub fn live(&self, pods: usize) -> Live {
        let all = procs::processes();
        let shims = self.shims(&all);
        Live {
            pods,
            shims: shims.len(),
            shim_fds: shims.iter().map(|p| fd_count(*p)).sum(),
            shim_rss_kib: shims.iter().map(|p| rss_kib(*p)).sum(),
            containerd_fds: self.containerd.map(fd_count),
            containerd_rss_kib: self.containerd.map(rss_kib),
        }
    }
}

/// What `end` holds that `start` did not: one line per leaked thing, named.
pub fn leaks(start: &Census, end: &Census) -> Vec<String> {
    let mut out = Vec::new();
    for (pid, cmd) in &end.shims {
        if !start.shims.contains_key(pid) {
            out.push(format!("shim process {pid} still runs: {cmd}"));
        }
    }
    for (pid, cmd) in &end.in_cgroups {
        if !start.in_cgroups.contains_key(pid) {
            out.push(format!("process {pid} still in the runtime's cgroups: {cmd}"));
        }
    }
    for m in end.mounts.difference(&start.mounts) {
        out.push(format!("mount still there: {m}"));
    }
    for (h, paths) in &end.cgroups {
        let before = start.cgroups.get(h).cloned().unwrap_or_default();
        for p in paths.difference(&before) {
            out.push(format!("cgroup still there: {h}{p}"));
        }
    }
    for f in end.netns_files.difference(&start.netns_files) {
        out.push(format!("netns file still there: {f}"));
    }
    if end.netns_inodes > start.netns_inodes {
        out.push(format!(
            "{} network namespaces in use by processes, {} at the start",
            end.netns_inodes, start.netns_inodes
        ));
    }
    for (label, names) in &end.state {
        let before = start.state.get(label).cloned().unwrap_or_default();
        for n in names.difference(&before) {
            out.push(format!("{label} still there: {n}"));
        }
    }
    for a in end.ipam.difference(&start.ipam) {
        out.push(format!("IP still allocated: {a}"));
    }
    if let (Some(a), Some(b)) = (start.containerd_fds, end.containerd_fds) {
        if b > a {
            out.push(format!("containerd holds {b} fds, {a} at the start"));
        }
    }
    out
}

/// A census row as JSON: counts, not the sets.
pub fn census_json(c: &Census) -> Value {
    json!({
        "pods": c.pods,
        "shims": c.shims.len(),
        "processes_in_runtime_cgroups": c.in_cgroups.len(),
        "mounts": c.mounts.len(),
        "cgroups": c.cgroups.iter().map(|(h, p)| (h.clone(), p.len())).collect::<BTreeMap<_, _>>(),
        "netns_files": c.netns_files.len(),
        "netns_in_use": c.netns_inodes,
        "state_dirs": c.state.iter().map(|(l, e)| (l.clone(), e.len())).collect::<BTreeMap<_, _>>(),
        "ipam_allocations": c.ipam.len(),
        "containerd_fds": c.containerd_fds,
        "containerd_rss_kib": c.containerd_rss_kib,
        "containerd_rss_anon_kib": c.containerd_rss_anon_kib,
        "containerd_go_heap_live_kib": c.containerd_go.map(|g| g.heap_alloc / 1024),
        "containerd_go_heap_retained_kib": c.containerd_go.map(|g| g.heap_retained / 1024),
        "containerd_goroutines": c.containerd_go.map(|g| g.goroutines),
    })
}

/// A live row as JSON.
pub fn live_json(l: &Live) -> Value {
    json!({
        "pods": l.pods,
        "shims": l.shims,
        "shim_fds": l.shim_fds,
        "shim_rss_kib": l.shim_rss_kib,
        "containerd_fds": l.containerd_fds,
        "containerd_rss_kib": l.containerd_rss_kib,
    })
}

/// Least-squares slope of `y` over `x`; `None` with fewer than 3 points.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    Some(points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>() / sxx)
}
