//! The shim cgroup runtime option (`ShimCgroup`): the shim daemon moves into the cgroup
//! the task's runtime options name, as containerd's runc shim does (containerd's
//! `TestShimInCgroup`, integration/client in 1.6.20, is the model: a cgroup made by the
//! test, a task started with it, the shim's pid found in it).
//!
//! `ctr run --runtime-config-path` passes the option the way CRI passes the `options`
//! table of a non-runc runtime: `runtimeoptions.v1.Options` naming a TOML file (on stdin
//! for containerd 1.6–2.2, as an extension of `BootstrapParams` for 2.3). The other two
//! encodings (runc's `containerd.runc.v1.Options` and 1.6's legacy `CreateOptions`, which
//! containerd's Go client sends) are covered by the shim's unit tests.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use peapod_tests::containerd::{Containerd, PEAPOD_RUNTIME};
use peapod_tests::cri::unique_name;

use crate::peapod::{peapod_shims, task_pid};

/// A leaf cgroup made for the test, in every v1 hierarchy (with the root's `cpuset.cpus`
/// and `cpuset.mems`, which a new cpuset cgroup lacks and without which nothing can join
/// it) or in the v2 hierarchy. A hybrid host's cgroup2 mount is left alone, as the shim
/// leaves it. Removed on drop if the test did not remove it.
struct TestCgroup {
    /// Path below the cgroup root, e.g. `/peapod-shimcg-…`.
    path: String,
    /// Its directory in each hierarchy.
    dirs: Vec<PathBuf>,
}

/// The v1 hierarchies under /sys/fs/cgroup (directories, not the `cpu,cpuacct` style
/// links, not a hybrid host's cgroup2 mount), or /sys/fs/cgroup itself on v2.
fn hierarchies() -> Vec<PathBuf> {
    let root = PathBuf::from("/sys/fs/cgroup");
    if sandbox::cgroups::is_v2() {
        return vec![root];
    }
    let mut found: Vec<PathBuf> = fs::read_dir(&root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .filter(|h| !h.join("cgroup.controllers").exists())
        .collect();
    found.sort();
    found
}

impl TestCgroup {
    fn create(name: &str) -> Result<Self> {
        let path = format!("/peapod-{name}");
        let mut me = TestCgroup { path, dirs: Vec::new() };
        for h in hierarchies() {
            let dir = h.join(me.path.trim_start_matches('/'));
            fs::create_dir(&dir).with_context(|| format!("create cgroup {}", dir.display()))?;
            me.dirs.push(dir.clone());
            for file in ["cpuset.cpus", "cpuset.mems"] {
                if h.join(file).exists() && !sandbox::cgroups::is_v2() {
                    let value = fs::read_to_string(h.join(file))?;
                    fs::write(dir.join(file), value.trim())
                        .with_context(|| format!("write {file} of {}", dir.display()))?;
                }
            }
        }
        ensure!(!me.dirs.is_empty(), "no cgroup hierarchy under /sys/fs/cgroup");
        Ok(me)
    }

    /// The pids in `cgroup.procs` of each hierarchy's directory.
    fn procs(&self) -> Result<Vec<(PathBuf, Vec<u32>)>> {
        self.dirs
            .iter()
            .map(|d| {
                let text = fs::read_to_string(d.join("cgroup.procs"))
                    .with_context(|| format!("read {}", d.join("cgroup.procs").display()))?;
                let pids = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
                Ok((d.clone(), pids))
            })
            .collect()
    }

    /// Waits up to `timeout` for every hierarchy's directory to be empty, then removes them.
    fn remove(mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let busy: Vec<_> = self.procs()?.into_iter().filter(|(_, p)| !p.is_empty()).collect();
            if busy.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "shim cgroup {} still has processes after {timeout:?}: {busy:?}",
                    self.path
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for dir in std::mem::take(&mut self.dirs) {
            fs::remove_dir(&dir).with_context(|| format!("remove cgroup {}", dir.display()))?;
        }
        Ok(())
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for dir in &self.dirs {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Writes the runtime options file `ctr --runtime-config-path` names.
fn options_file(ctrd: &Containerd, id: &str, shim_cgroup: &str) -> Result<PathBuf> {
    let file = ctrd.dir().join(format!("{id}-options.toml"));
    // As containerd's CRI marshals a runtime's `options` table (go-toml: literal strings).
    fs::write(&file, format!("ShimCgroup = '{shim_cgroup}'\n"))?;
    Ok(file)
}

/// SIGKILLs task `id` and deletes it once it has stopped (up to 10 s).
fn stop_and_delete(ctrd: &Containerd, id: &str) {
    let _ = ctrd.ctr(&["task", "kill", "-s", "KILL", id]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ctrd.ctr(&["task", "delete", id]).is_ok_and(|o| !o.status.success()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A task started with `ShimCgroup` has its shim daemon, and only it, in that cgroup (in
/// every v1 hierarchy, or on v2); the container's own processes are in their own cgroup.
/// The shim leaves the cgroup when it exits, and the test's cgroup can be removed.
pub fn shim_moves_into_its_shim_cgroup(ctrd: &Containerd) -> Result<()> {
    let id = unique_name("shimcg");
    let cgroup = TestCgroup::create(&id)?;
    let options = options_file(ctrd, &id, &cgroup.path)?;
    let options = options.to_str().context("options path")?;
    let out = ctrd.ctr_run_busybox(
        &["-d", "--runtime-config-path", options],
        PEAPOD_RUNTIME,
        &id,
        &["sleep", "3600"],
    )?;
    ensure!(
        out.status.success(),
        "ctr run -d {id}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let result = (|| {
        let shims: Vec<u32> = peapod_shims(ctrd)
            .into_iter()
            .filter(|(_, shim_id)| *shim_id == id)
            .map(|(pid, _)| pid)
            .collect();
        let [shim] = shims[..] else {
            bail!("want one shim daemon for {id}, have {shims:?}");
        };
        let init = task_pid(ctrd, &id)?;
        for (dir, pids) in cgroup.procs()? {
            ensure!(
                pids == [shim],
                "{}: want the shim ({shim}) alone, have {pids:?} (task init {init})",
                dir.display()
            );
        }
        // From the shim's side too: /proc/<pid>/cgroup names the cgroup.
        let own = fs::read_to_string(format!("/proc/{shim}/cgroup"))?;
        ensure!(
            own.lines().any(|l| l.rsplit(':').next() == Some(cgroup.path.as_str())),
            "/proc/{shim}/cgroup does not name {}:\n{own}",
            cgroup.path
        );
        let init_cgroups = fs::read_to_string(format!("/proc/{init}/cgroup"))?;
        ensure!(
            !init_cgroups
                .lines()
                .any(|l| l.rsplit(':').next() == Some(cgroup.path.as_str())),
            "the task's init is in the shim cgroup:\n{init_cgroups}"
        );
        Ok(())
    })();
    stop_and_delete(ctrd, &id);
    let removed = ctrd.ctr_ok(&["container", "delete", &id]);
    result?;
    removed?;
    // The shim exits after the delete; the cgroup then empties.
    cgroup.remove(Duration::from_secs(10))?;
    ctrd.assert_gone(&[&id])
}

/// A `ShimCgroup` that does not exist fails the start with an error naming it, and
/// leaves no shim, socket or task behind.
pub fn missing_shim_cgroup_fails_start_naming_it(ctrd: &Containerd) -> Result<()> {
    let id = unique_name("shimcg-missing");
    let missing = format!("/peapod-{id}");
    let options = options_file(ctrd, &id, &missing)?;
    let options = options.to_str().context("options path")?;
    let out = ctrd.ctr_run_busybox(
        &["-d", "--runtime-config-path", options],
        PEAPOD_RUNTIME,
        &id,
        &["sleep", "3600"],
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        // The defect under test: clean up before failing.
        stop_and_delete(ctrd, &id);
    }
    let removed = ctrd.ctr_ok(&["container", "delete", &id]);
    ensure!(
        !out.status.success(),
        "ctr run -d {id} succeeded with a missing ShimCgroup"
    );
    ensure!(
        stderr.contains(&format!("ShimCgroup {missing}")) && stderr.contains("does not exist"),
        "ctr's error does not name the missing cgroup {missing}: {stderr}"
    );
    removed?;
    ensure!(
        !peapod_shims(ctrd).iter().any(|(_, shim_id)| *shim_id == id),
        "a shim daemon for {id} outlived the failed start"
    );
    ctrd.assert_gone(&[&id])
}
