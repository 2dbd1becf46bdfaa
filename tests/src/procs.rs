//! Processes and their memory, from `/proc`: which processes a runtime keeps per pod (its
//! shims and any helper they leave running) and what they cost. `make bench` reads them
//! for its memory row and `make soak` for its samples over time.

use std::collections::{BTreeMap, BTreeSet};
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
    /// Their PSS by kind of mapping, KiB, all together ([`pss_by_kind`]).
    pub pss_by_kind: BTreeMap<&'static str, u64>,
    /// Their threads by name (`comm`), all together.
    pub thread_names: BTreeMap<String, u64>,
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
        pss_by_kind: BTreeMap::new(),
        thread_names: BTreeMap::new(),
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
        for (kind, kib) in pss_by_kind(p.pid)? {
            *sample.pss_by_kind.entry(kind).or_default() += kib;
        }
        for t in fs::read_dir(format!("/proc/{}/task", p.pid))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(comm) = fs::read_to_string(t.path().join("comm")) {
                *sample.thread_names.entry(comm.trim().to_string()).or_default() += 1;
            }
        }
        let name = p
            .args
            .first()
            .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
            .unwrap_or_default();
        sample.processes.push((p.pid, name));
    }
    Ok(sample)
}

/// What `pid`'s resident memory is, as PSS in KiB by kind of mapping, from
/// `/proc/<pid>/smaps`: `text` (its executable's code), `read-only data` (its
/// executable's read-only segments: `.rodata`, clean and shared, and the relocated
/// `.data.rel.ro`, private once relocated), `data` (its writable segment), `libraries`
/// (every other file), `heap` (`[heap]` and glibc's malloc arenas: anonymous mappings
/// aligned to 64 MiB followed by their reserve), `thread stacks` (anonymous mappings
/// right above a guard page), `main stack`, and `other` (the rest: anonymous mappings,
/// vdso).
///
/// Errors: `smaps` cannot be read.
pub fn pss_by_kind(pid: u32) -> Result<BTreeMap<&'static str, u64>> {
    struct Map {
        start: u64,
        end: u64,
        perms: String,
        path: String,
        pss: u64,
    }
    let path = format!("/proc/{pid}/smaps");
    let text = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let exe = fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut maps: Vec<Map> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                let perms = words.next().unwrap_or_default().to_string();
                let path = words.nth(3).unwrap_or_default().to_string();
                maps.push(Map {
                    start,
                    end,
                    perms,
                    path,
                    pss: 0,
                });
                continue;
            }
        }
        if let (Some(m), Some(v)) = (maps.last_mut(), line.strip_prefix("Pss:")) {
            m.pss = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
        }
    }
    let mut out = BTreeMap::new();
    for (i, m) in maps.iter().enumerate() {
        let guard_below = i > 0 && {
            let p = &maps[i - 1];
            p.perms.starts_with("---") && p.end == m.start && p.end - p.start <= 64 << 10
        };
        let reserve_above = maps
            .get(i + 1)
            .is_some_and(|n| n.perms.starts_with("---") && n.start == m.end);
        let kind = match m.path.as_str() {
            p if !exe.is_empty() && p == exe => match m.perms.as_bytes() {
                [_, _, b'x', ..] => "text",
                [_, b'w', ..] => "data",
                _ => "read-only data",
            },
            "[heap]" => "heap",
            "[stack]" => "main stack",
            "" if guard_below => "thread stacks",
            "" if reserve_above && m.start % (64 << 20) == 0 => "heap",
            p if p.starts_with('/') => "libraries",
            _ => "other",
        };
        *out.entry(kind).or_default() += m.pss;
    }
    Ok(out)
}
