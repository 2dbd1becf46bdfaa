//! Class: mandatory access control (`process.apparmorProfile`, and the SELinux labels at
//! the end of this file). A container confined by
//! an AppArmor profile must not read what the profile denies, although root in the
//! container may by its capabilities and the file's mode; a host that cannot confine
//! must refuse the profile, never run the container unconfined.
//!
//! Where the kernel has AppArmor enabled (the VM tier boots with `apparmor=1
//! security=apparmor` and mounts securityfs; the VM fails these tests if it is not
//! enabled there) a small profile is loaded with Debian's `apparmor_parser -r`: it
//! allows everything but reading `/denied.txt`. The container (peapod's, and runc's for
//! the twin) reads `/allowed.txt` and `/denied.txt`; the verdict: the first is read, the
//! second fails with EACCES ("Permission denied"), and the host sees the profile as the
//! label of the container's process (`/proc/<pid>/attr/current`). Then the profile is
//! unloaded (`apparmor_parser -R`), checked gone from the kernel's list, and the same
//! bundle must fail to create, as under runc, since the profile no longer exists.
//!
//! Where the kernel has no AppArmor (the host: no `/sys/module/apparmor`), nothing can be
//! loaded; the tests assert the behaviour peapod mirrors from runc: the create fails with
//! an error naming `process.apparmorProfile`, runc fails the same bundle ("unable to apply
//! apparmor profile"), and neither leaves anything behind.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as ProcStdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use oci_spec::runtime::ProcessBuilder;
use peapod_tests::{pipe, reader, Bundle};

use super::runc_run;

/// The file the profile denies, and one it does not, in the container's root.
const DENIED: &str = "/denied.txt";
const ALLOWED: &str = "/allowed.txt";
const SECRET: &str = "secret, must stay unread\n";
const OPEN: &str = "readable\n";

/// Whether the kernel can confine: AppArmor enabled. In the VM it must be (the run boots
/// it with `apparmor=1`): there a disabled AppArmor fails the test rather than sending
/// it down the host's branch.
fn apparmor_host() -> Result<bool> {
    let enabled = sandbox::spec::lsm::apparmor_enabled(Path::new("/sys"));
    if std::env::var_os("PEAPOD_TEST_VM").is_some() {
        ensure!(
            enabled,
            "the VM tier boots with apparmor=1 security=apparmor, yet /sys/module/apparmor/parameters/enabled is not Y"
        );
    }
    if enabled {
        ensure!(
            Path::new("/sys/kernel/security/apparmor/profiles").exists(),
            "AppArmor is enabled but securityfs is not mounted on /sys/kernel/security: apparmor_parser cannot load profiles"
        );
    }
    Ok(enabled)
}

/// The names of the profiles the kernel has loaded (`<name> (<mode>)` lines).
fn loaded_profiles() -> Result<Vec<String>> {
    let list = fs::read_to_string("/sys/kernel/security/apparmor/profiles")?;
    Ok(list
        .lines()
        .filter_map(|l| l.rsplit_once(" (").map(|(name, _)| name.to_string()))
        .collect())
}

/// A profile loaded into the kernel with `apparmor_parser -r`, unloaded by
/// [`Profile::unload`] (checked) or, on an early return, by drop (best effort).
struct Profile {
    name: String,
    file: tempfile::NamedTempFile,
    loaded: bool,
}

impl Profile {
    /// Loads a profile named `peapod-escape-<tag>-<pid>` that allows everything but any
    /// access to [`DENIED`] (paths are the container's: AppArmor resolves them from the
    /// root of the process's mount namespace).
    fn load(tag: &str) -> Result<Self> {
        let name = format!("peapod-escape-{tag}-{}", std::process::id());
        let text = format!(
            "profile {name} flags=(attach_disconnected,mediate_deleted) {{\n  file,\n  capability,\n  network,\n  \
             signal,\n  ptrace,\n  unix,\n  mount,\n  umount,\n  pivot_root,\n  deny {DENIED} rwklx,\n}}\n"
        );
        let file = tempfile::Builder::new().prefix("peapod-escape-aa-").tempfile()?;
        fs::write(file.path(), text)?;
        let mut p = Self {
            name,
            file,
            loaded: false,
        };
        parser(&["-r", "-K"], p.file.path())?;
        p.loaded = true;
        ensure!(
            loaded_profiles()?.contains(&p.name),
            "apparmor_parser -r succeeded but {} is not in /sys/kernel/security/apparmor/profiles",
            p.name
        );
        Ok(p)
    }

    /// Unloads the profile and checks the kernel no longer lists it.
    fn unload(mut self) -> Result<()> {
        parser(&["-R"], self.file.path())?;
        self.loaded = false;
        ensure!(
            !loaded_profiles()?.contains(&self.name),
            "leak: profile {} still loaded after apparmor_parser -R",
            self.name
        );
        Ok(())
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        if self.loaded {
            let _ = parser(&["-R"], self.file.path());
        }
    }
}

/// Runs Debian's `apparmor_parser ARGS FILE`; fails with its stderr.
fn parser(args: &[&str], file: &Path) -> Result<()> {
    let out = Command::new("apparmor_parser")
        .args(args)
        .arg(file)
        .stdin(ProcStdio::null())
        .output()
        .context("apparmor_parser (Debian package apparmor, `make deps`) could not be started")?;
    ensure!(
        out.status.success(),
        "apparmor_parser {args:?} {}: {}: {}",
        file.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// The AppArmor label of `pid` as the host sees it: `/proc/<pid>/attr/apparmor/current`
/// (Linux 5.8+), else `/proc/<pid>/attr/current`.
fn label_of(pid: i32) -> Result<String> {
    let per_lsm = PathBuf::from(format!("/proc/{pid}/attr/apparmor/current"));
    let path = if per_lsm.exists() {
        per_lsm
    } else {
        PathBuf::from(format!("/proc/{pid}/attr/current"))
    };
    let label = fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    Ok(label.trim_end_matches(['\n', '\0']).to_string())
}

/// A bundle whose container reads [`ALLOWED`] and [`DENIED`] into `/out`, marks `/ready`
/// and sleeps, confined by `profile`.
fn confined_bundle(name: &str, profile: &str) -> Result<Bundle> {
    let script =
        format!("cat {ALLOWED} >/out 2>&1; cat {DENIED} >>/out 2>&1; echo \"rc=$?\" >>/out; : >/ready; exec sleep 600");
    let mut b = Bundle::new(name, &["sh", "-c", &script])?;
    let rootfs = b.path().join("rootfs");
    fs::write(rootfs.join(DENIED.trim_start_matches('/')), SECRET)?;
    fs::write(rootfs.join(ALLOWED.trim_start_matches('/')), OPEN)?;
    b.spec
        .process_mut()
        .as_mut()
        .context("spec has a process")?
        .set_apparmor_profile(Some(profile.to_string()));
    b.write()?;
    Ok(b)
}

/// Waits (at most 60 s: TCG is slow) for the container's `/ready`, then returns `/out`.
fn wait_ready(b: &Bundle) -> Result<String> {
    let rootfs = b.path().join("rootfs");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !rootfs.join("ready").exists() {
        ensure!(
            Instant::now() < deadline,
            "the container did not write /ready within 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(fs::read_to_string(rootfs.join("out"))?)
}

/// The container's verdict: the allowed file read, the denied one refused with EACCES.
fn assert_denied(out: &str) -> Result<()> {
    ensure!(
        out.starts_with(OPEN),
        "the allowed file was not read under the profile: {out:?}"
    );
    ensure!(!out.contains(SECRET.trim()), "the denied file was read: {out:?}");
    ensure!(
        out.contains("Permission denied") && out.trim_end().ends_with("rc=1"),
        "reading the denied file did not fail with EACCES: {out:?}"
    );
    Ok(())
}

/// The verdict where the kernel has no AppArmor: the create failed naming the field.
fn assert_refused_without_apparmor(err: &anyhow::Error) -> Result<()> {
    let msg = format!("{err:#}");
    ensure!(
        msg.contains("process.apparmorProfile") && msg.contains("AppArmor is not enabled"),
        "the create failed, but not on process.apparmorProfile: {msg}"
    );
    Ok(())
}

pub fn apparmor_profile_denies_a_path() -> Result<()> {
    if !apparmor_host()? {
        let b = confined_bundle("escape-aa", "peapod-escape-absent")?;
        let err = match b.create(sandbox::Stdio::default()) {
            Ok(c) => {
                b.delete(c, true)?;
                bail!("the create succeeded on a host without AppArmor: the container would run unconfined");
            }
            Err(e) => e,
        };
        b.assert_clean(None)?;
        return assert_refused_without_apparmor(&err);
    }
    let profile = Profile::load("deny")?;
    let b = confined_bundle("escape-aa", &profile.name)?;
    let mut c = b.create(sandbox::Stdio::default())?;
    let pid = c.pid().context("created container has a pid")?;
    let result = (|| {
        c.start()?;
        let out = wait_ready(&b)?;
        let label = label_of(pid.as_raw())?;
        assert_denied(&out)?;
        ensure!(
            label == format!("{} (enforce)", profile.name),
            "the container's process (pid {pid}) has the label {label:?}, not the profile"
        );
        Ok(())
    })();
    b.delete(c, true)?;
    result?;
    profile.unload()?;
    // The profile is gone: the same bundle must now fail to create, naming the field.
    let err = match b.create(sandbox::Stdio::default()) {
        Ok(c) => {
            b.delete(c, true)?;
            bail!("the create succeeded with an unloaded profile");
        }
        Err(e) => format!("{e:#}"),
    };
    b.assert_clean(None)?;
    ensure!(
        err.contains("process.apparmorProfile") && err.contains("no profile of that name is loaded"),
        "the create with an unloaded profile failed for another reason: {err}"
    );
    Ok(())
}

pub fn runc_apparmor_profile_denies_a_path() -> Result<()> {
    if !apparmor_host()? {
        let b = confined_bundle("escape-aa-runc", "peapod-escape-absent")?;
        let out = runc_run(&b)?;
        ensure!(
            out.code != 0 && out.stderr.contains("unable to apply apparmor profile"),
            "runc ran a container with an AppArmor profile on a host without AppArmor: {out:?}"
        );
        return Ok(());
    }
    let profile = Profile::load("deny-runc")?;
    let b = confined_bundle("escape-aa-runc", &profile.name)?;
    let state = tempfile::Builder::new().prefix("peapod-escape-runc-").tempdir()?;
    let runc = |args: &[&str]| {
        Command::new("runc")
            .arg("--root")
            .arg(state.path())
            .args(args)
            .stdin(ProcStdio::null())
            .output()
            .context("runc (Debian package runc) could not be started")
    };
    let child = Command::new("runc")
        .arg("--root")
        .arg(state.path())
        .args(["run", "-b"])
        .arg(b.path())
        .arg(&b.id)
        .stdin(ProcStdio::null())
        .stdout(ProcStdio::null())
        .stderr(ProcStdio::piped())
        .spawn()
        .context("runc (Debian package runc) could not be started")?;
    let result = (|| {
        let out = wait_ready(&b)?;
        let st = runc(&["state", &b.id])?;
        let st: serde_json::Value = serde_json::from_slice(&st.stdout).context("runc state")?;
        let pid = st["pid"].as_i64().context("runc state has a pid")?;
        let label = label_of(i32::try_from(pid)?)?;
        assert_denied(&out)?;
        ensure!(
            label == format!("{} (enforce)", profile.name),
            "runc's container process (pid {pid}) has the label {label:?}, not the profile"
        );
        Ok(())
    })();
    let _ = runc(&["kill", &b.id, "KILL"]);
    let exited = child.wait_with_output()?;
    let left: Vec<PathBuf> = fs::read_dir(state.path())?.flatten().map(|e| e.path()).collect();
    ensure!(left.is_empty(), "leak: runc state left: {left:?}");
    b.assert_clean(None)?;
    result.with_context(|| format!("runc: {}", String::from_utf8_lossy(&exited.stderr)))?;
    profile.unload()?;
    let out = runc_run(&b)?;
    ensure!(
        out.code != 0 && out.stderr.contains("apparmor"),
        "runc ran the container with an unloaded profile: {out:?}"
    );
    Ok(())
}

/// Runs `sh -c script` as an exec'd process of `c` with `profile`; returns its output.
fn exec_output(c: &mut sandbox::Container, script: &str, profile: Option<&str>) -> Result<String> {
    let mut proc = ProcessBuilder::default()
        .args(vec!["sh".to_string(), "-c".to_string(), script.to_string()])
        .cwd("/")
        .build()?;
    proc.set_apparmor_profile(profile.map(String::from));
    let (r, w) = pipe()?;
    let out = reader(r);
    let e = c.exec(
        &proc,
        sandbox::Stdio {
            stdout: Some(w),
            ..Default::default()
        },
    )?;
    e.wait()?;
    out.join().expect("reader thread")
}

/// Exec'd processes: one that names no profile gets the container's (as under runc), one
/// that names its own gets that one (`unconfined` here, which reads the denied file).
pub fn apparmor_profile_applies_to_exec_processes() -> Result<()> {
    let probe = format!("cat /proc/self/attr/current; echo; cat {DENIED} 2>&1; echo \"rc=$?\"");
    if !apparmor_host()? {
        let b = Bundle::new("escape-aa-exec", &["sleep", "600"])?;
        let mut c = b.start(sandbox::Stdio::default())?;
        let result = exec_output(&mut c, &probe, Some("peapod-escape-absent"));
        b.delete(c, true)?;
        let err = match result {
            Ok(out) => bail!("an exec with a profile ran on a host without AppArmor: {out:?}"),
            Err(e) => e,
        };
        return assert_refused_without_apparmor(&err);
    }
    let profile = Profile::load("exec")?;
    let b = confined_bundle("escape-aa-exec", &profile.name)?;
    let mut c = b.start(sandbox::Stdio::default())?;
    let result = (|| {
        wait_ready(&b)?;
        let inherited = exec_output(&mut c, &probe, None)?;
        let own = exec_output(&mut c, &probe, Some("unconfined"))?;
        let lines: Vec<&str> = inherited.lines().map(|l| l.trim_end_matches('\0')).collect();
        ensure!(
            lines.first() == Some(&format!("{} (enforce)", profile.name).as_str())
                && inherited.contains("Permission denied")
                && inherited.trim_end().ends_with("rc=1"),
            "an exec'd process without a profile did not get the container's: {inherited:?}"
        );
        let lines: Vec<&str> = own.lines().map(|l| l.trim_end_matches('\0')).collect();
        ensure!(
            lines.first() == Some(&"unconfined") && own.contains(SECRET.trim()) && own.trim_end().ends_with("rc=0"),
            "an exec'd process with apparmorProfile unconfined was not unconfined: {own:?}"
        );
        Ok(())
    })();
    b.delete(c, true)?;
    result?;
    profile.unload()
}

// SELinux: neither the host nor the VM (booted with security=apparmor) has it. A label
// asked for must fail the create, by name, as runc's validator fails it; never be dropped.

/// A bundle asking for `process.selinuxLabel` (`mount` false) or `linux.mountLabel`.
fn labelled_bundle(name: &str, mount: bool) -> Result<Bundle> {
    let mut b = Bundle::new(name, &["true"])?;
    if mount {
        b.spec
            .linux_mut()
            .as_mut()
            .context("spec has linux")?
            .set_mount_label(Some("system_u:object_r:container_file_t:s0:c1,c2".into()));
    } else {
        b.spec
            .process_mut()
            .as_mut()
            .context("spec has a process")?
            .set_selinux_label(Some("system_u:system_r:container_t:s0:c1,c2".into()));
    }
    b.write()?;
    Ok(b)
}

fn require_no_selinux() -> Result<()> {
    ensure!(
        !sandbox::spec::lsm::selinux_enabled(Path::new("/proc")),
        "this test expects a host without SELinux (selinuxfs is mounted here)"
    );
    Ok(())
}

pub fn selinux_labels_are_refused_without_selinux() -> Result<()> {
    require_no_selinux()?;
    for (mount, field) in [(false, "process.selinuxLabel"), (true, "linux.mountLabel")] {
        let b = labelled_bundle("escape-selinux", mount)?;
        let err = match b.create(sandbox::Stdio::default()) {
            Ok(c) => {
                b.delete(c, true)?;
                bail!("the create with {field} succeeded on a host without SELinux");
            }
            Err(e) => format!("{e:#}"),
        };
        b.assert_clean(None)?;
        ensure!(
            err.contains(field) && err.contains("SELinux is disabled or not supported"),
            "the create with {field} failed for another reason: {err}"
        );
    }
    Ok(())
}

/// runc refuses `process.selinuxLabel` in its validator, and fails `linux.mountLabel` at
/// its first labelled mount (the kernel rejects `context=`): both fail the create.
pub fn runc_selinux_labels_are_refused_without_selinux() -> Result<()> {
    require_no_selinux()?;
    let b = labelled_bundle("escape-selinux-runc", false)?;
    let out = runc_run(&b)?;
    ensure!(
        out.code != 0 && out.stderr.contains("selinux is disabled or not supported"),
        "runc did not refuse process.selinuxLabel: {out:?}"
    );
    let b = labelled_bundle("escape-selinux-runc", true)?;
    let out = runc_run(&b)?;
    ensure!(
        out.code != 0 && out.stderr.contains("context="),
        "runc did not fail on linux.mountLabel: {out:?}"
    );
    Ok(())
}
