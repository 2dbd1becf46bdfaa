//! Processes and their memory, from `/proc`: which processes a runtime keeps per pod (its
//! shims and any helper they leave running) and what they cost. `make bench` reads them
//! for its memory row and `make soak` for its samples over time.

use std::collections::BTreeSet;
use std::fs;

use anyhow::{ensure, Context, Result};

/// One reading of the handler's resident processes.
pub struct MemSample {
    /// Sum of `Pss` over the processes, KiB.
    pub pss_kib: u64,
    /// Sum of `Rss` over the processes, KiB.
    pub rss_kib: u64,
    /// The processes: (pid, name).
    pub processes: Vec<(u32, String)>,
    /// Their threads, all together.
    pub threads: u64,
}

/// A process as `/proc` shows it.
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    /// Its command line.
    pub args: Vec<String>,
}

/// Every process, from `/proc/<pid>/{stat,cmdline}`.
pub fn processes() -> Vec<Proc> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`: comm may hold spaces and parentheses.
        let Some(ppid) = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split(' ').nth(1))
            .and_then(|p| p.parse().ok())
        else {
            continue;
        };
        let args = fs::read(entry.path().join("cmdline"))
            .unwrap_or_default()
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        found.push(Proc { pid, ppid, args });
    }
    found
}

/// The shims whose command line `is_shim` accepts and that serve one of the pods
/// `pod_ids` (`-id <sandbox id>`), plus every descendant of theirs that `in_container`
/// does not place in a container (helpers a runtime keeps around).
pub fn shims_and_helpers(
    is_shim: impl Fn(&Proc) -> bool,
    pod_ids: &BTreeSet<String>,
    in_container: impl Fn(u32) -> bool,
) -> Vec<Proc> {
    let all = processes();
    let mut chosen: BTreeSet<u32> = all
        .iter()
        .filter(|p| is_shim(p))
        .filter(|p| p.args.windows(2).any(|w| w[0] == "-id" && pod_ids.contains(&w[1])))
        .map(|p| p.pid)
        .collect();
    loop {
        let more: Vec<u32> = all
            .iter()
            .filter(|p| chosen.contains(&p.ppid) && !chosen.contains(&p.pid))
            .filter(|p| !in_container(p.pid))
            .map(|p| p.pid)
            .collect();
        if more.is_empty() {
            break;
        }
        chosen.extend(more);
    }
    all.into_iter().filter(|p| chosen.contains(&p.pid)).collect()
}

/// `Rss` and `Pss` of `pid` in KiB, from `/proc/<pid>/smaps_rollup`.
pub fn rss_pss_kib(pid: u32) -> Result<(u64, u64)> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let field = |name: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("{path} has no {name}"))
    };
    Ok((field("Rss:")?, field("Pss:")?))
}

/// One reading of `procs`' memory (`smaps_rollup`) and threads. Fails when there are none
/// or one has gone.
pub fn sample_memory(procs: Vec<Proc>) -> Result<MemSample> {
    ensure!(!procs.is_empty(), "no resident process to measure");
    let mut sample = MemSample {
        pss_kib: 0,
        rss_kib: 0,
        processes: Vec::new(),
        threads: 0,
    };
    for p in procs {
        let (rss, pss) = rss_pss_kib(p.pid)?;
        sample.rss_kib += rss;
        sample.pss_kib += pss;
        sample.threads += fs::read_to_string(format!("/proc/{}/status", p.pid))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let name = p
            .args
            .first()
            .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
            .unwrap_or_default();
        sample.processes.push((p.pid, name));
    }
    Ok(sample)
}
