//! CPU time of a group of processes, from the kernel's per-cgroup CPU accounting: v1's
//! `cpuacct.usage` (nanoseconds) or v2's `cpu.stat` `usage_usec`. A cgroup's counter
//! includes every task that ever ran in it or in a descendant cgroup, short-lived ones
//! and exited threads too, at scheduler precision; `/proc/<pid>/stat`'s `utime`, `stime`,
//! `cutime` and `cstime` are clock ticks (10 ms), too coarse for a probe's few
//! milliseconds, and lose what a process whose parent never waits consumed.
//!
//! [`CpuCgroup`] is a cgroup of the accounting hierarchy only (v1: the `cpuacct` one,
//! whatever it is co-mounted with; v2: the unified tree) that long-lived processes are
//! moved into ([`CpuCgroup::adopt`]): what they fork later starts there too, until a
//! runtime moves it into a container's cgroup (whose counter [`usage_ns`] reads). Moving
//! a process's `cgroup.procs` entry moves all its threads (v1 and v2 alike).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

/// The root of the CPU-accounting hierarchy and whether it is cgroup v2.
fn accounting_root() -> Result<(PathBuf, bool)> {
    if sandbox::cgroups::is_v2() {
        return Ok((PathBuf::from("/sys/fs/cgroup"), true));
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").context("read /proc/self/mountinfo")?;
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mut post = post.split(' ');
        let (Some("cgroup"), Some(_source), Some(options)) = (post.next(), post.next(), post.next()) else {
            continue;
        };
        if options.split(',').any(|o| o == "cpuacct") {
            let point = pre.split(' ').nth(4).context("mountinfo line without a mount point")?;
            return Ok((PathBuf::from(crate::containerd::unescape_mountinfo(point)), false));
        }
    }
    bail!("no cgroup v1 hierarchy with cpuacct and no cgroup v2 unified mode: no CPU accounting to read")
}

/// CPU time used so far by the tasks of cgroup `path` (cgroupfs form, `/a/b` or `a/b`)
/// and its descendants, in nanoseconds (microsecond precision on v2).
///
/// Errors: the cgroup does not exist in the accounting hierarchy, or its file does not
/// parse.
pub fn usage_ns(path: &str) -> Result<u64> {
    let (root, v2) = accounting_root()?;
    read_usage(&root.join(path.trim_start_matches('/')), v2)
}

fn read_usage(dir: &Path, v2: bool) -> Result<u64> {
    let file = dir.join(if v2 { "cpu.stat" } else { "cpuacct.usage" });
    let text = fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
    let value = if v2 {
        text.lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|us| us * 1000)
    } else {
        text.trim().parse().ok()
    };
    value.with_context(|| format!("{}: no usage in {text:?}", file.display()))
}

/// A cgroup of the CPU-accounting hierarchy holding processes moved into it; see the
/// module docs. [`CpuCgroup::remove`] moves them back and removes it (drop does so too,
/// ignoring errors).
pub struct CpuCgroup {
    dir: PathBuf,
    v2: bool,
    /// Each adopted process and the `cgroup.procs` file of the cgroup it came from.
    adopted: Vec<(u32, PathBuf)>,
    removed: bool,
}

impl CpuCgroup {
    /// Creates the cgroup `/<name>` (a leaf under the hierarchy's root).
    ///
    /// Errors: no accounting hierarchy, or mkdir failed (it already exists, say).
    pub fn create(name: &str) -> Result<Self> {
        let (root, v2) = accounting_root()?;
        let dir = root.join(name);
        fs::create_dir(&dir).with_context(|| format!("create cgroup {}", dir.display()))?;
        Ok(Self {
            dir,
            v2,
            adopted: Vec::new(),
            removed: false,
        })
    }

    /// Moves process `pid` (all its threads) into the cgroup, remembering where it was.
    /// Returns false when the process has gone (exited) before it could be moved.
    ///
    /// Errors: `/proc/<pid>/cgroup` cannot be read for another reason, or the write to
    /// `cgroup.procs` failed.
    pub fn adopt(&mut self, pid: u32) -> Result<bool> {
        let (root, _) = accounting_root()?;
        let cgroup = match fs::read_to_string(format!("/proc/{pid}/cgroup")) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e).with_context(|| format!("read /proc/{pid}/cgroup")),
        };
        // `<id>:<controllers>:<path>`: v2's line is `0::<path>`, v1's names cpuacct.
        let from = cgroup
            .lines()
            .filter_map(|l| {
                let mut f = l.splitn(3, ':');
                Some((f.next()?, f.next()?, f.next()?))
            })
            .find(|(_, controllers, _)| {
                if self.v2 {
                    controllers.is_empty()
                } else {
                    controllers.split(',').any(|c| c == "cpuacct")
                }
            })
            .map(|(_, _, path)| root.join(path.trim_start_matches('/')).join("cgroup.procs"))
            .with_context(|| format!("process {pid} has no cgroup in {}", root.display()))?;
        let procs = self.dir.join("cgroup.procs");
        match fs::write(&procs, pid.to_string()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(false),
            Err(e) => return Err(e).with_context(|| format!("move process {pid} into {}", procs.display())),
        }
        self.adopted.push((pid, from));
        Ok(true)
    }

    /// CPU time used so far by its tasks and what was forked in it, nanoseconds.
    pub fn usage_ns(&self) -> Result<u64> {
        read_usage(&self.dir, self.v2)
    }

    /// Moves the adopted processes that are still in it back where they came from, then
    /// removes the cgroup, retrying for up to 10 s while exiting processes (shims of pods
    /// just removed) leave it.
    ///
    /// Errors: a move back or the removal failed; the message names what is still in it.
    pub fn remove(mut self) -> Result<()> {
        self.removed = true;
        self.tear_down()
    }

    fn tear_down(&mut self) -> Result<()> {
        let inside = |dir: &Path| -> Vec<u32> {
            fs::read_to_string(dir.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect()
        };
        let now_inside = inside(&self.dir);
        for (pid, from) in &self.adopted {
            if now_inside.contains(pid) {
                fs::write(from, pid.to_string())
                    .with_context(|| format!("move process {pid} back into {}", from.display()))?;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match fs::remove_dir(&self.dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    let left: Vec<String> = inside(&self.dir)
                        .into_iter()
                        .map(|pid| {
                            let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                            format!("{pid} ({})", cmd.trim())
                        })
                        .collect();
                    return Err(e).with_context(|| {
                        format!("remove cgroup {}: processes still in it: {left:?}", self.dir.display())
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for CpuCgroup {
    fn drop(&mut self) {
        if !self.removed {
            let _ = self.tear_down();
        }
    }
}
