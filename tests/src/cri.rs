//! CRI helpers for tests: configs shaped like the ones the kubelet sends, waiting on
//! container state, and the CRI container log format.
//!
//! The kubelet, not the runtime, owns some host state of a pod: it creates the pod's log
//! directory before `RunPodSandbox` and the pod cgroup named in `cgroup_parent`. These
//! helpers take that role: log directories live under the [`Containerd`] instance, pod
//! cgroups under its private cgroup root, and both go when the instance stops.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub use proto::cri::{api, CriClient};

use crate::containerd::Containerd;
use crate::images;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// `<name>-<pid>-<n>`: unique per test process and call, usable as a pod name, container
/// id (`ctr`) or hostname (for short `name`s: hostnames are at most 63 bytes).
pub fn unique_name(name: &str) -> String {
    format!(
        "{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Namespace modes as the kubelet sets them for a pod without `hostNetwork`, `hostPID`,
/// `hostIPC` or `shareProcessNamespace`: network and IPC per pod, pid per container.
pub fn kubelet_namespace_options() -> api::NamespaceOption {
    api::NamespaceOption {
        network: api::NamespaceMode::Pod as i32,
        pid: api::NamespaceMode::Container as i32,
        ipc: api::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// A pod sandbox for tests: its id once run, the config it was run with (CRI wants it
/// again for every `CreateContainer`), and its log directory.
#[derive(Debug, Clone)]
pub struct Pod {
    /// Sandbox id returned by `RunPodSandbox`.
    pub id: String,
    /// The config `RunPodSandbox` got.
    pub config: api::PodSandboxConfig,
    /// The pod's `log_directory`; container `log_path`s are relative to it.
    pub log_dir: PathBuf,
}

impl Pod {
    /// Runs a pod named `unique_name(name)` with `runtime_handler` (e.g.
    /// [`crate::containerd::RUNC_HANDLER`]) and the config of [`pod_config`].
    pub fn run(ctrd: &Containerd, cri: &CriClient, name: &str, runtime_handler: &str) -> Result<Pod> {
        Self::run_config(cri, pod_config(ctrd, name)?, runtime_handler)
    }

    /// Runs a pod from `config` (e.g. [`pod_config`] with changes) with `runtime_handler`.
    pub fn run_config(cri: &CriClient, config: api::PodSandboxConfig, runtime_handler: &str) -> Result<Pod> {
        let name = config.metadata.as_ref().map_or("", |m| m.name.as_str()).to_string();
        let id = cri
            .run_pod_sandbox(&config, runtime_handler)
            .with_context(|| format!("run pod {name} with handler {runtime_handler}"))?;
        let log_dir = PathBuf::from(&config.log_directory);
        Ok(Pod { id, config, log_dir })
    }

    /// Creates a container from `config` in this pod; returns its id.
    pub fn create(&self, cri: &CriClient, config: &api::ContainerConfig) -> Result<String> {
        let name = config.metadata.as_ref().map_or("", |m| m.name.as_str());
        cri.create_container(&self.id, config, &self.config)
            .with_context(|| format!("create container {name} in pod {}", self.id))
    }

    /// Creates and starts a container from `config`; returns its id.
    pub fn start(&self, cri: &CriClient, config: &api::ContainerConfig) -> Result<String> {
        let id = self.create(cri, config)?;
        cri.start_container(&id)?;
        Ok(id)
    }

    /// Creates and starts a container from `config` and waits (up to 10 s) until CRI
    /// reports it running; returns its id.
    pub fn start_running(&self, cri: &CriClient, config: &api::ContainerConfig) -> Result<String> {
        let id = self.start(cri, config)?;
        wait_container_state(cri, &id, api::ContainerState::ContainerRunning, Duration::from_secs(10))?;
        Ok(id)
    }

    /// The pod's status from `PodSandboxStatus` (not verbose).
    pub fn status(&self, cri: &CriClient) -> Result<api::PodSandboxStatus> {
        cri.pod_sandbox_status(&self.id, false)?
            .status
            .with_context(|| format!("no status for pod {}", self.id))
    }

    /// Waits (up to `timeout`) until CRI reports the pod `SANDBOX_NOTREADY` (its pause or
    /// sandbox task has ended; CRI notices asynchronously). Fails with `what` otherwise.
    ///
    /// A status call that fails meanwhile is retried until the deadline, and named if it
    /// is still failing then: with `sandboxer = "shim"`, containerd 2.x asks the sandbox's
    /// shim, and right after that shim died it answers `ttrpc: closed` until it has
    /// handled the death (kubelet retries at its next sync alike).
    pub fn wait_not_ready(&self, cri: &CriClient, timeout: Duration, what: &str) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.status(cri) {
                Ok(s) if s.state == api::PodSandboxState::SandboxNotready as i32 => return Ok(()),
                Ok(_) => anyhow::ensure!(Instant::now() < deadline, "{what} (after {timeout:?})"),
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context(format!("{what} (after {timeout:?}, the status still failing)")))
                }
                Err(_) => {}
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The pod's containers, as `ListContainers` filtered by the pod reports them.
    pub fn containers(&self, cri: &CriClient) -> Result<Vec<api::Container>> {
        Ok(cri.list_containers(Some(api::ContainerFilter {
            pod_sandbox_id: self.id.clone(),
            ..Default::default()
        }))?)
    }

    /// The pod's `cgroup_parent` (where CRI puts its cgroups), empty when unset.
    pub fn cgroup_parent(&self) -> String {
        self.config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .unwrap_or_default()
    }

    /// The host path of a container's log (`log_directory` + `log_path`).
    pub fn log_path(&self, config: &api::ContainerConfig) -> PathBuf {
        self.log_dir.join(&config.log_path)
    }

    /// Waits (up to `timeout`) until the log of the container from `config` satisfies
    /// `done` (e.g. holds a script's closing `echo` on both streams: containerd copies
    /// stdout and stderr from separate pipes, so one stream's last line says nothing of the
    /// other's); returns the lines. Fails with what the log holds by then.
    pub fn wait_log(
        &self,
        config: &api::ContainerConfig,
        done: impl Fn(&[LogLine]) -> bool,
        timeout: Duration,
    ) -> Result<Vec<LogLine>> {
        let path = self.log_path(config);
        let deadline = Instant::now() + timeout;
        loop {
            let log = read_log(&path).unwrap_or_default();
            if done(&log) {
                return Ok(log);
            }
            if Instant::now() >= deadline {
                bail!("{} not complete within {timeout:?}: {log:?}", path.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops and removes the pod as the kubelet does: StopPodSandbox, RemovePodSandbox,
    /// then the pod cgroup (`cgroup_parent`), which fails if the runtime left a container
    /// cgroup or process in it.
    pub fn remove(&self, cri: &CriClient) -> Result<()> {
        cri.stop_pod_sandbox(&self.id)?;
        cri.remove_pod_sandbox(&self.id)?;
        if let Some(linux) = &self.config.linux {
            crate::containerd::remove_cgroup(&linux.cgroup_parent)?;
        }
        Ok(())
    }

    /// The end of a scenario run in this pod, whatever its `result`: removes the pod
    /// ([`Pod::remove`]), so a failed scenario leaves nothing behind either; then returns
    /// `result`'s error if it has one (the first failure is the interesting one), else the
    /// removal's, else `result`'s value.
    pub fn remove_after<T>(&self, cri: &CriClient, result: Result<T>) -> Result<T> {
        let removed = self.remove(cri);
        let value = result?;
        removed?;
        Ok(value)
    }

    /// [`Pod::remove_after`], then checks that the pod and the containers `result` names
    /// are gone ([`Containerd::assert_gone`]); returns `result`'s value.
    pub fn remove_and_check_gone<T: CreatedContainers>(
        &self,
        ctrd: &Containerd,
        cri: &CriClient,
        result: Result<T>,
    ) -> Result<T> {
        let value = self.remove_after(cri, result)?;
        let mut ids = value.container_ids();
        ids.push(&self.id);
        ctrd.assert_gone(&ids)?;
        Ok(value)
    }
}

/// What a scenario returns: the ids of the containers it created in its pod, which
/// [`Pod::remove_and_check_gone`] checks are gone with the pod.
pub trait CreatedContainers {
    /// The container ids.
    fn container_ids(&self) -> Vec<&str>;
}

/// No container, or none that outlives the scenario's own checks.
impl CreatedContainers for () {
    fn container_ids(&self) -> Vec<&str> {
        Vec::new()
    }
}

/// One container.
impl CreatedContainers for String {
    fn container_ids(&self) -> Vec<&str> {
        vec![self.as_str()]
    }
}

/// Several containers.
impl CreatedContainers for Vec<String> {
    fn container_ids(&self) -> Vec<&str> {
        self.iter().map(String::as_str).collect()
    }
}

/// A `PodSandboxConfig` as the kubelet sends it for a pod `unique_name(name)` in namespace
/// `peapod-test`: metadata with a unique uid, hostname `name`, a log directory (created,
/// as the kubelet does) under the instance, a cgroup parent under the instance's cgroup
/// root, and the kubelet's namespace modes.
pub fn pod_config(ctrd: &Containerd, name: &str) -> Result<api::PodSandboxConfig> {
    let pod = unique_name(name);
    let log_dir = ctrd.pod_log_dir(&pod);
    fs::create_dir_all(&log_dir).with_context(|| format!("create pod log dir {}", log_dir.display()))?;
    Ok(api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: pod.clone(),
            uid: format!("uid-{pod}"),
            namespace: "peapod-test".into(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        log_directory: log_dir.to_string_lossy().into_owned(),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: ctrd.pod_cgroup_parent(&pod),
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(kubelet_namespace_options()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// A `ContainerConfig` for the busybox image running `command` (CRI `command`, which
/// replaces the image entrypoint, as a pod's `command:` does), logging to
/// `<name>/0.log` in the pod's log directory like the kubelet's layout.
pub fn container_config(name: &str, command: &[&str]) -> api::ContainerConfig {
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        }),
        image: Some(api::ImageSpec {
            image: images::BUSYBOX_IMAGE.to_string(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}/0.log"),
        linux: Some(api::LinuxContainerConfig {
            security_context: Some(api::LinuxContainerSecurityContext {
                namespace_options: Some(kubelet_namespace_options()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The container security context of `config` (created empty when absent), where CRI
/// carries `privileged`, `capabilities` and the `seccomp` profile.
pub fn container_security(config: &mut api::ContainerConfig) -> &mut api::LinuxContainerSecurityContext {
    config
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

/// The sandbox security context of `config` (created empty when absent): `privileged`
/// and the sandbox's own `seccomp` profile, which containerd applies to the pause
/// container.
pub fn pod_security(config: &mut api::PodSandboxConfig) -> &mut api::LinuxSandboxSecurityContext {
    config
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

/// seccomp profiles as CRI v1 carries them (`SecurityProfile`, what the kubelet sends for
/// a Pod's `seccompProfile`). containerd 1.6 turns them into the spec's `linux.seccomp`
/// (`pkg/cri/server/container_create_linux.go`, `generateSeccompSpecOpts`): none for
/// `Unconfined` or a privileged container, its default profile for `RuntimeDefault`, the
/// JSON file `localhost_ref` names for `Localhost`, read when the container is created.
pub mod seccomp {
    use std::path::Path;

    use super::api;
    use api::security_profile::ProfileType;

    /// `RuntimeDefault`: containerd's default profile (`contrib/seccomp`).
    pub fn runtime_default() -> api::SecurityProfile {
        api::SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        }
    }

    /// `Unconfined`: no filter.
    pub fn unconfined() -> api::SecurityProfile {
        api::SecurityProfile {
            profile_type: ProfileType::Unconfined as i32,
            localhost_ref: String::new(),
        }
    }

    /// `Localhost` with the profile at `path`, which must be absolute (containerd 1.6
    /// reads it as given; the kubelet resolves `localhostProfile` under its seccomp root).
    pub fn localhost(path: &Path) -> api::SecurityProfile {
        api::SecurityProfile {
            profile_type: ProfileType::Localhost as i32,
            localhost_ref: path.to_string_lossy().into_owned(),
        }
    }
}

/// A directory of Localhost seccomp profiles for one test, in a fresh temp dir: the role
/// of the kubelet's `/var/lib/kubelet/seccomp`. [`ProfileDir::remove`] deletes it and
/// checks it is gone; dropping it without that still deletes it.
#[derive(Debug)]
pub struct ProfileDir {
    dir: tempfile::TempDir,
}

impl ProfileDir {
    /// Creates the directory (under the system temp dir, prefix `peapod-seccomp-`).
    pub fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("peapod-seccomp-")
            .tempdir()
            .context("create a seccomp profile dir")?;
        Ok(Self { dir })
    }

    /// Writes `json` (the profile, OCI `linux.seccomp` shape) as `<name>` in the directory;
    /// returns its absolute path.
    pub fn write(&self, name: &str, json: &str) -> Result<PathBuf> {
        let path = self.dir.path().join(name);
        fs::write(&path, json).with_context(|| format!("write seccomp profile {}", path.display()))?;
        Ok(path)
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Removes the directory and its profiles; fails if that fails or it is still there.
    pub fn remove(self) -> Result<()> {
        let path = self.dir.path().to_path_buf();
        self.dir
            .close()
            .with_context(|| format!("remove seccomp profile dir {}", path.display()))?;
        if path.exists() {
            bail!("seccomp profile dir {} still there after removal", path.display());
        }
        Ok(())
    }
}

/// What an `ExecSync` returned, as text.
#[derive(Debug, Clone)]
pub struct ExecText {
    /// The process's exit code.
    pub exit_code: i32,
    /// Its stdout, lossily decoded.
    pub stdout: String,
    /// Its stderr, lossily decoded.
    pub stderr: String,
}

/// Runs `cmd` in container `id` with `ExecSync` (20 s timeout); returns its exit code and
/// output whatever the code.
pub fn exec(cri: &CriClient, id: &str, cmd: &[&str]) -> Result<ExecText> {
    let out = cri
        .exec_sync(id, cmd, Duration::from_secs(20))
        .with_context(|| format!("ExecSync {cmd:?} in {id}"))?;
    Ok(ExecText {
        exit_code: out.exit_code,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// The host pid of a pod's sandbox (pause) process, from the verbose `PodSandboxStatus`
/// (containerd's `info.pid`).
pub fn sandbox_pid(cri: &CriClient, pod_id: &str) -> Result<u32> {
    let status = cri.pod_sandbox_status(pod_id, true)?;
    let info = status
        .info
        .get("info")
        .with_context(|| format!("no info in the verbose PodSandboxStatus of {pod_id}"))?;
    let value: serde_json::Value =
        serde_json::from_str(info).with_context(|| format!("PodSandboxStatus info of {pod_id}: {info}"))?;
    let pid = value["pid"]
        .as_u64()
        .with_context(|| format!("no pid in the PodSandboxStatus info of {pod_id}: {info}"))?;
    Ok(u32::try_from(pid)?)
}

/// The `Seccomp:` field of `/proc/<pid>/status` (0 off, 1 strict, 2 filter), read from
/// the host.
pub fn seccomp_mode(pid: u32) -> Result<String> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .map(|v| v.trim().to_string())
        .with_context(|| format!("no Seccomp: line in {path}"))
}

/// Polls `ContainerStatus` until the container is in `state`, up to `timeout`; returns
/// that status. Fails with the last status seen.
pub fn wait_container_state(
    cri: &CriClient,
    container_id: &str,
    state: api::ContainerState,
    timeout: Duration,
) -> Result<api::ContainerStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        let status = cri
            .container_status(container_id, false)?
            .status
            .context("ContainerStatus has no status")?;
        if status.state == state as i32 {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            bail!(
                "container {container_id} not {state:?} within {timeout:?}; last status: state {:?}, exit code {}, reason {:?}, message {:?}",
                api::ContainerState::try_from(status.state),
                status.exit_code,
                status.reason,
                status.message
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One line of a CRI container log: `<RFC3339Nano time> <stream> <tag> <message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The timestamp as written (RFC 3339 with nanoseconds).
    pub time: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// `F` for a full line, `P` for a partial one (split because it was too long or
    /// unterminated).
    pub tag: String,
    /// The content, without the newline.
    pub message: String,
}

/// Parses one CRI log line, checking each field's form (the kubelet's `parseCRILog`
/// rejects the same things) with the reader `peapod logs` uses, [`proto::crilog::parse`].
pub fn parse_log_line(line: &str) -> Result<LogLine> {
    let r = proto::crilog::parse(line)?;
    Ok(LogLine {
        time: r.time.into(),
        stream: r.stream.into(),
        tag: if r.full { "F" } else { "P" }.into(),
        message: r.text.into(),
    })
}

/// Reads and parses a whole CRI log file.
pub fn read_log(path: &Path) -> Result<Vec<LogLine>> {
    let text = fs::read_to_string(path).with_context(|| format!("read container log {}", path.display()))?;
    text.lines().map(parse_log_line).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_log_lines_parse_and_bad_ones_are_refused() {
        let l = parse_log_line("2016-10-06T00:17:09.669794202Z stdout F hello world").unwrap();
        assert_eq!(l.stream, "stdout");
        assert_eq!(l.tag, "F");
        assert_eq!(l.message, "hello world");
        assert!(parse_log_line("2016-10-06T00:17:09+02:00 stderr P").is_ok());
        assert!(parse_log_line("yesterday stdout F x").is_err());
        assert!(parse_log_line("2016-10-06T00:17:09Z stdin F x").is_err());
        assert!(parse_log_line("2016-10-06T00:17:09Z stdout X x").is_err());
    }

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique_name("a"), unique_name("a"));
    }
}
