//! containerd + CRI suite: a private containerd (Debian's 1.6) driven through `ctr` and
//! through CRI the way the kubelet drives it. Every shared scenario runs with the `runc`
//! handler (the baseline that proves the harness: images, config, CNI, leak checks) and
//! with `peapod`; peapod-only scenarios (one shim per pod, faults, pod semantics) follow.
//!
//! One containerd serves the whole binary: it is ready in ~0.1 s and the image import
//! takes ~0.4 s, so one per test would be affordable, but sharing it also exercises
//! concurrent pods; tests run in parallel threads with unique names. Each test checks that
//! what it created is gone (`assert_gone`); after all tests the instance must be back to
//! empty (`assert_no_leftovers`) and its teardown must succeed, else the binary exits 101.
//!
//! `harness = false`: this binary can also be a container init helper (see
//! `sandbox::init`), so `main` dispatches to it before running tests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use libtest_mimic::{Arguments, Trial};
use peapod_tests::containerd::{
    Containerd, ContainerdBuild, ContainerdVersion, K8S_NAMESPACE, PEAPOD_HANDLER, PEAPOD_RUNTIME, RUNC_HANDLER,
    RUNC_RUNTIME,
};
use peapod_tests::cri::{self, api, container_config, unique_name, Pod};
use peapod_tests::require_root;

fn sh(script: &str) -> Vec<&str> {
    vec!["sh", "-c", script]
}

/// A runtime under test: its CRI handler and its containerd runtime type.
struct Runtime {
    handler: &'static str,
    runtime_type: &'static str,
}

const RUNC: Runtime = Runtime {
    handler: RUNC_HANDLER,
    runtime_type: RUNC_RUNTIME,
};

const PEAPOD: Runtime = Runtime {
    handler: PEAPOD_HANDLER,
    runtime_type: PEAPOD_RUNTIME,
};

/// `ctr run --rm` of the busybox image with `rt`: (exit code, stdout, stderr). Checks
/// that the container is gone afterwards.
fn ctr_run(ctrd: &Containerd, rt: &Runtime, name: &str, script: &str) -> Result<(i32, String, String)> {
    let id = unique_name(name);
    let out = ctrd.ctr_run_busybox(&["--rm"], rt.runtime_type, &id, &sh(script))?;
    let code = out.status.code().context("ctr killed by a signal")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ctrd.assert_gone(&[&id])?;
    Ok((code, stdout, stderr))
}

fn ctr_run_exits_0_and_captures_stdout(ctrd: &Containerd, rt: &Runtime) -> Result<()> {
    let (code, stdout, stderr) = ctr_run(ctrd, rt, "ctr-ok", "echo hello; echo $$; id -u")?;
    ensure!(code == 0, "exit code {code}; stderr: {stderr}");
    // PID 1 of its own pid namespace, root.
    ensure!(stdout == "hello\n1\n0\n", "stdout: {stdout:?}; stderr: {stderr}");
    Ok(())
}

fn ctr_run_passes_exit_code_1_through(ctrd: &Containerd, rt: &Runtime) -> Result<()> {
    let (code, stdout, stderr) = ctr_run(ctrd, rt, "ctr-fail", "echo before; echo oops >&2; exit 1")?;
    ensure!(code == 1, "exit code {code}; stdout {stdout:?}; stderr: {stderr}");
    ensure!(stdout == "before\n", "stdout: {stdout:?}");
    ensure!(stderr.contains("oops"), "stderr: {stderr:?}");
    Ok(())
}

/// The kubelet's flow for one pod: run the sandbox, a container that logs and
/// exits 3, a long-running one to exec into, stop and remove everything.
fn cri_pod_runs_execs_logs_stops_and_is_removed(ctrd: &Containerd, rt: &Runtime) -> Result<()> {
    let cri = ctrd.cri()?;
    let pod = Pod::run(ctrd, &cri, "flow", rt.handler)?;
    let result = (|| {
        let status = pod.status(&cri)?;
        ensure!(
            status.state == api::PodSandboxState::SandboxReady as i32,
            "sandbox state {:?}",
            status.state
        );

        // A container that writes, lives a second and exits 3.
        let exits = container_config("exits", &sh("echo hello; sleep 1; exit 3"));
        let exits_id = pod.start(&cri, &exits)?;
        let running = cri::wait_container_state(&cri, &exits_id, api::ContainerState::ContainerRunning, Duration::ZERO)
            .or_else(|_| {
                cri::wait_container_state(&cri, &exits_id, api::ContainerState::ContainerExited, Duration::ZERO)
            });
        running.context("container neither running nor exited right after StartContainer")?;
        let done = cri::wait_container_state(
            &cri,
            &exits_id,
            api::ContainerState::ContainerExited,
            Duration::from_secs(30),
        )?;
        ensure!(
            done.exit_code == 3,
            "exit code {} (reason {:?})",
            done.exit_code,
            done.reason
        );
        ensure!(done.reason == "Error", "reason {:?} for a non-zero exit", done.reason);
        ensure!(
            done.finished_at - done.started_at >= 900_000_000,
            "ran {} ns, expected about 1 s",
            done.finished_at - done.started_at
        );
        ensure!(
            done.log_path == pod.log_path(&exits).to_string_lossy(),
            "status log path {:?}",
            done.log_path
        );
        let log = cri::read_log(&pod.log_path(&exits))?;
        ensure!(log.len() == 1, "log: {log:?}");
        ensure!(
            log[0].stream == "stdout" && log[0].tag == "F" && log[0].message == "hello",
            "log: {log:?}"
        );

        // A long-running container to exec into; it exits 0 on SIGTERM.
        let server = container_config("server", &sh("trap 'exit 0' TERM; sleep 3600 & wait"));
        let server_id = pod.start_running(&cri, &server)?;
        let exec = cri.exec_sync(
            &server_id,
            &sh("echo out; echo err >&2; hostname; exit 7"),
            Duration::from_secs(10),
        )?;
        ensure!(exec.exit_code == 7, "exec exit code {}", exec.exit_code);
        ensure!(
            String::from_utf8_lossy(&exec.stdout) == "out\nflow\n",
            "exec stdout {:?}",
            String::from_utf8_lossy(&exec.stdout)
        );
        ensure!(
            exec.stderr == b"err\n",
            "exec stderr {:?}",
            String::from_utf8_lossy(&exec.stderr)
        );

        let begun = Instant::now();
        cri.stop_container(&server_id, Duration::from_secs(10))?;
        let stopped =
            cri::wait_container_state(&cri, &server_id, api::ContainerState::ContainerExited, Duration::ZERO)?;
        ensure!(
            stopped.exit_code == 0,
            "SIGTERM should end the trap with 0, got {}",
            stopped.exit_code
        );
        ensure!(
            begun.elapsed() < Duration::from_secs(5),
            "StopContainer took {:?}: SIGTERM was not delivered",
            begun.elapsed()
        );
        Ok(vec![exits_id, server_id])
    })();
    let containers = pod.remove_and_check_gone(ctrd, &cri, result)?;
    let mut ids: Vec<&str> = containers.iter().map(String::as_str).collect();
    ids.push(&pod.id);
    let seen = ctrd.seen_ids();
    ensure!(
        ids.iter().all(|id| seen.contains(*id)),
        "the event watcher missed some of {ids:?}"
    );
    ensure!(
        cri.list_pod_sandbox(None)?.iter().all(|p| p.id != pod.id),
        "sandbox still listed"
    );
    Ok(())
}

/// The pod's network namespace has `lo` up and an `eth0` address from the instance's
/// bridge network, the one `PodSandboxStatus` reports.
fn cri_pod_gets_an_address_from_the_test_network(ctrd: &Containerd, rt: &Runtime) -> Result<()> {
    let cri = ctrd.cri()?;
    let pod = Pod::run(ctrd, &cri, "net", rt.handler)?;
    let result = (|| {
        let status = pod.status(&cri)?;
        let ip = status.network.context("no network status")?.ip;
        let prefix = ctrd.subnet().trim_end_matches("0/24");
        ensure!(ip.starts_with(prefix), "pod IP {ip:?} not in {}", ctrd.subnet());
        let c = container_config("c", &["sleep", "3600"]);
        let id = pod.start(&cri, &c)?;
        let out = cri.exec_sync(&id, &["ip", "-o", "addr"], Duration::from_secs(10))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        ensure!(out.exit_code == 0, "ip addr: {}", String::from_utf8_lossy(&out.stderr));
        ensure!(
            text.contains(&format!("eth0    inet {ip}/24")),
            "no {ip} on eth0: {text}"
        );
        ensure!(text.contains("lo    inet 127.0.0.1/8"), "lo not configured: {text}");
        Ok(id)
    })();
    pod.remove_and_check_gone(ctrd, &cri, result)?;
    Ok(())
}

/// With the cgroupfs driver, CRI puts the sandbox and each container at
/// `<cgroup_parent>/<id>` (runc creates them; the kubelet owns the parent); stats come
/// from there.
fn cri_containers_live_under_the_pod_cgroup_parent(ctrd: &Containerd, rt: &Runtime) -> Result<()> {
    let cri = ctrd.cri()?;
    let pod = Pod::run(ctrd, &cri, "cgroups", rt.handler)?;
    let parent = pod.cgroup_parent();
    let result = (|| {
        let c = container_config("c", &sh("head -c 4000000 /dev/zero > /tmp/f; sleep 3600"));
        let id = pod.start_running(&cri, &c)?;
        for cid in [&pod.id, &id] {
            let path = format!("{}/{cid}", parent.trim_start_matches('/'));
            let procs = peapod_tests::cgroup_file("memory", &path, "cgroup.procs");
            let text = std::fs::read_to_string(&procs).with_context(|| format!("read {}", procs.display()))?;
            ensure!(!text.trim().is_empty(), "no process in {}", procs.display());
            // What the leak checks look for is there while the pod runs.
            ensure!(
                ctrd.cgroups_of(cid).contains(&procs.parent().unwrap().to_path_buf()),
                "leak check does not find {}",
                procs.display()
            );
        }
        let socket = ctrd.shim_socket(K8S_NAMESPACE, &pod.id);
        ensure!(socket.exists(), "no shim socket {} for the pod", socket.display());
        let listed = pod.containers(&cri)?;
        ensure!(
            listed.len() == 1 && listed[0].id == id,
            "ListContainers for the pod: {listed:?}"
        );
        // Stats come from the cgroup; the file in /tmp is in the writable layer.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stats = cri.container_stats(&id)?;
            let memory = stats.memory.and_then(|m| m.working_set_bytes).map_or(0, |v| v.value);
            let cpu = stats.cpu.and_then(|c| c.usage_core_nano_seconds).map_or(0, |v| v.value);
            if memory > 0 && cpu > 0 {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "ContainerStats never showed usage: memory {memory}, cpu {cpu}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(id)
    })();
    pod.remove_and_check_gone(ctrd, &cri, result)?;
    Ok(())
}

/// StopPodSandbox stops the containers still running in the pod (SIGKILL after the grace
/// period CRI gives them, here none: `sleep` as PID 1 ignores SIGTERM).
fn cri_stopping_the_pod_stops_its_containers(ctrd: &Containerd, rt: &Runtime) -> Result<()> {
    let cri = ctrd.cri()?;
    let pod = Pod::run(ctrd, &cri, "stoppod", rt.handler)?;
    let result = (|| {
        let a = pod.start(&cri, &container_config("a", &["sleep", "3600"]))?;
        let b = pod.start(
            &cri,
            &container_config("b", &sh("trap 'exit 0' TERM; sleep 3600 & wait")),
        )?;
        for id in [&a, &b] {
            cri::wait_container_state(&cri, id, api::ContainerState::ContainerRunning, Duration::from_secs(10))?;
        }
        cri.stop_pod_sandbox(&pod.id)?;
        let status = pod.status(&cri)?;
        ensure!(
            status.state == api::PodSandboxState::SandboxNotready as i32,
            "sandbox state {:?} after StopPodSandbox",
            status.state
        );
        for id in [&a, &b] {
            let s = cri::wait_container_state(&cri, id, api::ContainerState::ContainerExited, Duration::ZERO)?;
            ensure!(
                s.exit_code == 137 || s.exit_code == 0,
                "{id}: exit code {}",
                s.exit_code
            );
        }
        Ok(vec![a, b])
    })();
    pod.remove_and_check_gone(ctrd, &cri, result)?;
    Ok(())
}

mod execs;
mod faults;
mod peapod;
mod sandboxer;
mod seccomp;
mod shim_cgroup;

/// StopContainer with a timeout: SIGTERM first, SIGKILL once the timeout passed for a
/// container that ignores SIGTERM; an ExecSync past its timeout fails and its process is
/// killed.
fn cri_stop_escalates_to_sigkill_and_exec_sync_times_out(ctrd: &Containerd, rt: &Runtime) -> Result<()> {
    let cri = ctrd.cri()?;
    let pod = Pod::run(ctrd, &cri, "escalate", rt.handler)?;
    let result = (|| {
        let id = pod.start_running(
            &cri,
            &container_config("stubborn", &sh("trap '' TERM; sleep 3600 & wait; sleep 3600")),
        )?;
        let begun = Instant::now();
        let timed_out = cri.exec_sync(&id, &["sleep", "30"], Duration::from_secs(1));
        ensure!(
            timed_out.is_err(),
            "ExecSync of sleep 30 with a 1 s timeout returned {timed_out:?}"
        );
        ensure!(
            begun.elapsed() < Duration::from_secs(10),
            "ExecSync timeout took {:?}",
            begun.elapsed()
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ps = cri.exec_sync(&id, &["ps", "-o", "args"], Duration::from_secs(20))?;
            if !String::from_utf8_lossy(&ps.stdout).contains("sleep 30") {
                break;
            }
            ensure!(Instant::now() < deadline, "the timed-out exec still runs");
            std::thread::sleep(Duration::from_millis(100));
        }

        let begun = Instant::now();
        cri.stop_container(&id, Duration::from_secs(2))?;
        let took = begun.elapsed();
        let s = cri::wait_container_state(&cri, &id, api::ContainerState::ContainerExited, Duration::ZERO)?;
        ensure!(s.exit_code == 137, "exit code {} after StopContainer", s.exit_code);
        ensure!(
            took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
            "StopContainer took {took:?} for a 2 s timeout"
        );
        Ok(id)
    })();
    pod.remove_and_check_gone(ctrd, &cri, result)?;
    Ok(())
}

/// A container over its memory limit is OOM-killed and CRI reports reason OOMKilled
/// (from the runtime's TaskOOM event).
fn cri_oom_kill_is_reported_as_oomkilled(ctrd: &Containerd, rt: &Runtime) -> Result<()> {
    let cri = ctrd.cri()?;
    let pod = Pod::run(ctrd, &cri, "oom", rt.handler)?;
    let result = (|| {
        let mut c = container_config(
            "hog",
            &sh("x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo survived"),
        );
        c.linux.get_or_insert_with(Default::default).resources = Some(api::LinuxContainerResources {
            memory_limit_in_bytes: 16 << 20,
            ..Default::default()
        });
        let id = pod.start(&cri, &c)?;
        let s = cri::wait_container_state(&cri, &id, api::ContainerState::ContainerExited, Duration::from_secs(30))?;
        ensure!(s.exit_code == 137, "exit code {} (reason {:?})", s.exit_code, s.reason);
        ensure!(s.reason == "OOMKilled", "reason {:?} for an OOM kill", s.reason);
        Ok(id)
    })();
    pod.remove_and_check_gone(ctrd, &cri, result)?;
    Ok(())
}

type Test = fn(&Containerd, &Runtime) -> Result<()>;
type PeapodTest = fn(&Containerd) -> Result<()>;
/// A test with its runtime bound.
type Scenario = dyn Fn(&Containerd) -> Result<()> + Send + Sync;

macro_rules! tests {
    ($($f:ident),* $(,)?) => {
        vec![$((stringify!($f), $f as Test)),*]
    };
}

/// What a container reports about its privileges: its CapEff, whether `/dev/kmsg` (a host
/// device not among the default ones, present in every devtmpfs: `/dev/loop-control` is not
/// there in the VM, whose kernel has no loop module loaded) is a character device, whether
/// `/proc/timer_list` (in containerd's default masked paths) is masked (a character
/// device: `/dev/null` bound over it), and the mount options of `/sys` and
/// `/sys/fs/cgroup`.
const PRIVILEGE_PROBE: &str = "grep CapEff /proc/self/status | cut -f2; \
    if test -c /dev/kmsg; then echo dev-kmsg; else echo no-kmsg; fi; \
    if test -c /proc/timer_list; then echo timer_list-masked; else echo timer_list-visible; fi; \
    awk '$2 == \"/sys\" {print \"sys\", substr($4, 1, 2)}' /proc/mounts; \
    awk '$2 == \"/sys/fs/cgroup\" {print \"cgroup\", substr($4, 1, 2)}' /proc/mounts | head -1";

/// `privileged: true` through CRI in a host-network pod (CNI daemonsets, CSI drivers and
/// kube-proxy need it):
/// containerd's spec then lists every host device in `linux.devices` (with the host's
/// `/dev/pts/ptmx`, which collides with the container's devpts), gives all
/// capabilities, no masked or read-only paths, and read-write sysfs and cgroupfs. A
/// container of the same pod without `privileged` keeps every restriction.
fn cri_privileged_container_gets_host_devices_and_all_capabilities(ctrd: &Containerd, rt: &Runtime) -> Result<()> {
    let cri = ctrd.cri()?;
    let mut config = cri::pod_config(ctrd, "priv")?;
    let sc = config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .context("pod config has a security context")?;
    sc.privileged = true;
    // Host network, as kube-proxy's and CNI daemonsets' pods have: containerd keeps /sys
    // read-only for a privileged container in a pod network namespace.
    let host_network = || {
        let mut ns = cri::kubelet_namespace_options();
        ns.network = api::NamespaceMode::Node as i32;
        Some(ns)
    };
    sc.namespace_options = host_network();
    // The host's UTS namespace comes with the host network: no hostname of its own.
    config.hostname = String::new();
    let pod = cri::Pod::run_config(&cri, config, rt.handler)?;
    let host_caps = std::fs::read_to_string("/proc/self/status")?
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:\t").map(str::to_string))
        .context("CapBnd")?;
    let result = (|| {
        let run = |name: &str, privileged: bool| -> Result<(String, String)> {
            let mut c = container_config(name, &sh(&format!("{PRIVILEGE_PROBE}; sleep 3600")));
            let sc = c
                .linux
                .as_mut()
                .and_then(|l| l.security_context.as_mut())
                .context("container config has a security context")?;
            sc.privileged = privileged;
            sc.namespace_options = host_network();
            let id = pod.start_running(&cri, &c)?;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let log = cri::read_log(&pod.log_path(&c)).unwrap_or_default();
                if log.len() >= 5 || Instant::now() > deadline {
                    let lines: Vec<String> = log.into_iter().map(|l| l.message).collect();
                    return Ok((id, lines.join("\n")));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        let (privileged_id, privileged) = run("privileged", true)?;
        let (plain_id, plain) = run("plain", false)?;
        let want = format!("{host_caps}\ndev-kmsg\ntimer_list-visible\nsys rw\ncgroup rw");
        ensure!(
            privileged == want,
            "privileged container saw:\n{privileged}\nwant:\n{want}"
        );
        let lines: Vec<&str> = plain.lines().collect();
        // Not compared: /proc/timer_list, which containerd 1.6 leaves unmasked in this
        // host-network pod under runc too, and /sys/fs/cgroup, whose v1 tmpfs runc leaves
        // read-write.
        ensure!(
            lines.len() == 5 && lines[0] != host_caps && lines[1] == "no-kmsg" && lines[3] == "sys ro",
            "the container without privileged saw:\n{plain}"
        );
        Ok(vec![privileged_id, plain_id])
    })();
    pod.remove_and_check_gone(ctrd, &cri, result)?;
    Ok(())
}

/// containerd's `TestContainerExecLargeOutputWithTTY` through the Task API: see
/// [`execs::exec_with_tty_large_output_repeated_with_the_same_exec_id`].
fn task_exec_with_tty_large_output_repeated_with_the_same_exec_id(ctrd: &Containerd, rt: &Runtime) -> Result<()> {
    execs::exec_with_tty_large_output_repeated_with_the_same_exec_id(ctrd, rt.runtime_type)
}

/// The lost exec, made certain: see [`execs::exec_output_reaches_a_late_fifo_reader`].
fn task_exec_output_reaches_a_late_fifo_reader(ctrd: &Containerd, rt: &Runtime) -> Result<()> {
    execs::exec_output_reaches_a_late_fifo_reader(ctrd, rt.runtime_type)
}

/// See [`execs::exec_ended_by_a_real_time_signal_reports_it`].
fn task_exec_ended_by_a_real_time_signal_reports_it(ctrd: &Containerd, rt: &Runtime) -> Result<()> {
    execs::exec_ended_by_a_real_time_signal_reports_it(ctrd, rt.runtime_type)
}

/// See [`execs::kill_with_a_real_time_signal_reaches_the_container`].
fn task_kill_with_a_real_time_signal_reaches_the_container(ctrd: &Containerd, rt: &Runtime) -> Result<()> {
    execs::kill_with_a_real_time_signal_reaches_the_container(ctrd, rt.runtime_type)
}

fn main() {
    sandbox::init::run_if_requested();
    let args = Arguments::from_args();
    use seccomp::*;
    let scenarios = tests![
        ctr_run_exits_0_and_captures_stdout,
        ctr_run_passes_exit_code_1_through,
        cri_pod_runs_execs_logs_stops_and_is_removed,
        cri_pod_gets_an_address_from_the_test_network,
        cri_containers_live_under_the_pod_cgroup_parent,
        cri_stopping_the_pod_stops_its_containers,
        cri_stop_escalates_to_sigkill_and_exec_sync_times_out,
        cri_oom_kill_is_reported_as_oomkilled,
        cri_privileged_container_gets_host_devices_and_all_capabilities,
        cri_seccomp_runtime_default_blocks_user_namespaces,
        cri_seccomp_unconfined_allows_user_namespaces,
        cri_seccomp_exec_into_a_runtime_default_container_is_filtered,
        cri_seccomp_localhost_profile_returns_its_errno,
        cri_seccomp_localhost_profile_filters_personality_by_argument,
        cri_seccomp_critest_localhost_profiles_block_chmod_and_sethostname,
        cri_seccomp_critest_docker_default_is_runtime_default_and_nil_is_unconfined,
        cri_seccomp_privileged_container_ignores_its_profile,
        cri_seccomp_bad_localhost_profile_fails_create_and_leaves_nothing,
        cri_seccomp_unknown_action_or_operator_fails_start_and_leaves_nothing,
        task_exec_with_tty_large_output_repeated_with_the_same_exec_id,
        task_exec_output_reaches_a_late_fifo_reader,
        task_exec_ended_by_a_real_time_signal_reports_it,
        task_kill_with_a_real_time_signal_reaches_the_container,
    ];
    // Every scenario runs once per runtime, named `<handler>::<scenario>`.
    let runtimes = [&RUNC, &PEAPOD];
    let mut tests: Vec<(String, Box<Scenario>)> = Vec::new();
    for rt in runtimes {
        for (name, f) in &scenarios {
            let f = *f;
            tests.push((
                format!("{}::{name}", rt.handler),
                Box::new(move |c: &Containerd| f(c, rt)),
            ));
        }
    }
    let peapod_only: Vec<(&str, PeapodTest)> = vec![
        (
            "ctr_exec_tty_metrics_pause_resume_kill",
            peapod::ctr_exec_tty_metrics_pause_resume_kill,
        ),
        ("ctr_run_detached_then_attach", peapod::ctr_run_detached_then_attach),
        (
            "one_shim_per_pod_exits_after_removal",
            peapod::one_shim_per_pod_exits_after_removal,
        ),
        (
            "pod_survives_a_containerd_restart",
            peapod::pod_survives_a_containerd_restart,
        ),
        (
            "exit_while_containerd_is_down_is_reported",
            peapod::exit_while_containerd_is_down_is_reported,
        ),
        (
            "killed_shim_is_cleaned_up_by_delete",
            peapod::killed_shim_is_cleaned_up_by_delete,
        ),
        (
            "pod_containers_share_network_ipc_and_hostname",
            peapod::pod_containers_share_network_ipc_and_hostname,
        ),
        (
            "empty_dirs_are_shared_and_removed_with_the_pod",
            peapod::empty_dirs_are_shared_and_removed_with_the_pod,
        ),
        (
            "pod_cgroup_holds_the_pod_limits",
            peapod::pod_cgroup_holds_the_pod_limits,
        ),
        (
            "pod_annotations_do_not_loosen_the_kubelets_pod_cgroup",
            peapod::pod_annotations_do_not_loosen_the_kubelets_pod_cgroup,
        ),
        (
            "init_then_sidecar_then_apps_when_started_at_once",
            peapod::init_then_sidecar_then_apps_when_started_at_once,
        ),
        (
            "failed_init_container_blocks_the_app",
            peapod::failed_init_container_blocks_the_app,
        ),
        (
            "sigterm_reaches_all_containers_at_once",
            peapod::sigterm_reaches_all_containers_at_once,
        ),
        (
            "kubelet_grace_on_containers_is_the_pods_grace",
            peapod::kubelet_grace_on_containers_is_the_pods_grace,
        ),
        (
            "bad_pod_input_is_refused_and_leaves_nothing",
            peapod::bad_pod_input_is_refused_and_leaves_nothing,
        ),
        (
            "container_closing_its_stdout_early_leaves_the_shim_responsive",
            execs::container_closing_its_stdout_early_leaves_the_shim_responsive,
        ),
        (
            "container_forking_until_pids_max_leaves_the_shim_responsive",
            execs::container_forking_until_pids_max_leaves_the_shim_responsive,
        ),
        (
            "shim_moves_into_its_shim_cgroup",
            shim_cgroup::shim_moves_into_its_shim_cgroup,
        ),
        (
            "missing_shim_cgroup_fails_start_naming_it",
            shim_cgroup::missing_shim_cgroup_fails_start_naming_it,
        ),
    ];
    for (name, f) in peapod_only {
        tests.push((format!("peapod::{name}"), Box::new(f)));
    }
    // Fault injection: the OOM storm runs everywhere; the shim and containerd kills need a
    // private containerd each and take seconds, so they run on containerd 1.6 and the newest 2.x
    // (2.3 on), not on 2.1 and not in the VM (`make test`'s time budget, issue 16).
    tests.push((
        "peapod::faults::ten_containers_oom_killed_at_once_report_each_oom_before_its_exit".into(),
        Box::new(faults::ten_containers_oom_killed_at_once_report_each_oom_before_its_exit),
    ));
    let shim_kills: Vec<(&str, PeapodTest)> = vec![
        (
            "shim_killed_during_create_leaves_nothing",
            faults::shim_killed_during_create_leaves_nothing,
        ),
        (
            "shim_killed_during_start_leaves_nothing",
            faults::shim_killed_during_start_leaves_nothing,
        ),
        (
            "containerd_killed_while_pods_start_run_and_stop_loses_nothing",
            faults::containerd_killed_while_pods_start_run_and_stop_loses_nothing,
        ),
    ];
    let slow_faults_skipped = match ContainerdBuild::selected().map(|b| b.version) {
        _ if std::env::var_os("PEAPOD_TEST_VM").is_some() => Some("in the VM".to_string()),
        Ok(v) if v.is_2x() && v < ContainerdVersion::new(2, 3, 0) => {
            Some(format!("on containerd {v} (they run on 1.6 and the newest 2.x)"))
        }
        Ok(_) => None,
        Err(e) => Some(format!("{e:#}")),
    };
    // An exit that happened before the shim was killed can be reported only where
    // containerd runs `delete` for every task of a dead shim: 1.6. containerd 2.x runs it
    // for the sandbox task alone (the pod's other tasks were attached to its shim through
    // Task API v3 without a clean-up hook), and CRI records such a container as exited
    // 255 ("unknown") whatever the shim had recorded, as for runc's shim, which also
    // serves a pod from one process.
    let exit_losses: Vec<(&str, PeapodTest)> = vec![
        (
            "shim_killed_while_containers_stop_loses_no_exit",
            faults::shim_killed_while_containers_stop_loses_no_exit,
        ),
        (
            "shim_killed_in_the_pods_grace_period_loses_no_exit",
            faults::shim_killed_in_the_pods_grace_period_loses_no_exit,
        ),
    ];
    match slow_faults_skipped {
        None => {
            for (name, f) in shim_kills {
                tests.push((format!("peapod::faults::{name}"), Box::new(f)));
            }
            match ContainerdBuild::selected().map(|b| b.version) {
                Ok(v) if !v.is_2x() => {
                    for (name, f) in exit_losses {
                        tests.push((format!("peapod::faults::{name}"), Box::new(f)));
                    }
                }
                _ if args.list => {}
                _ => eprintln!(
                    "peapod::faults:: {} not run: containerd 2.x runs no `delete` for a pod's \
                     other tasks when their shim died, so no shim can report their exits (they run on 1.6)",
                    exit_losses.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                ),
            }
            // The exec storm loads both CPUs for seconds: same choice as the kills.
            tests.push((
                "peapod::short_execs_in_parallel_in_several_pods_all_report_their_exit".into(),
                Box::new(execs::short_execs_in_parallel_in_several_pods_all_report_their_exit),
            ));
        }
        Some(why) if !args.list => eprintln!(
            "peapod::faults:: kill tests ({}) and peapod::short_execs_in_parallel_in_several_pods_all_report_their_exit \
             not run {why}: each needs a private containerd or both CPUs, for seconds",
            shim_kills.iter().chain(&exit_losses).map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        ),
        Some(_) => {}
    }
    // `sandboxer = "shim"` exists from containerd 2.0 on (handler `peapod-shim`).
    match ContainerdBuild::selected().map(|b| b.version) {
        Ok(v) if v.is_2x() => {
            let mut shim_tests: Vec<(&str, PeapodTest)> = vec![
                (
                    "pod_runs_peapods_pause_and_containers_join_its_namespaces",
                    sandboxer::pod_runs_peapods_pause_and_containers_join_its_namespaces,
                ),
                (
                    "sandbox_api_stop_sigterms_all_at_once_and_sigkills_at_the_timeout",
                    sandboxer::sandbox_api_stop_sigterms_all_at_once_and_sigkills_at_the_timeout,
                ),
                (
                    "shared_pid_namespace_has_the_pause_as_pid_1",
                    sandboxer::shared_pid_namespace_has_the_pause_as_pid_1,
                ),
                (
                    "restart_and_killed_shim_are_survived_and_cleaned_up",
                    sandboxer::restart_and_killed_shim_are_survived_and_cleaned_up,
                ),
                (
                    "bad_sandbox_config_fails_and_leaves_nothing",
                    sandboxer::bad_sandbox_config_fails_and_leaves_nothing,
                ),
            ];
            if v >= ContainerdVersion::new(2, 3, 0) {
                shim_tests.push((
                    "host_network_pod_keeps_the_nodes_network_uts_and_hostname",
                    sandboxer::host_network_pod_keeps_the_nodes_network_uts_and_hostname,
                ));
            } else if !args.list {
                eprintln!(
                    "peapod_shim::host_network_pod_keeps_the_nodes_network_uts_and_hostname not run: containerd {v} \
                     crashes creating a hostNetwork sandbox with sandboxer = \"shim\" (nil spec in NewBundle, \
                     fixed in 2.3.0 by containerd commit b32cecd)"
                );
            }
            if v < ContainerdVersion::new(2, 3, 0) {
                shim_tests.push((
                    "pod_runs_with_no_pause_image_in_the_store",
                    sandboxer::pod_runs_with_no_pause_image_in_the_store,
                ));
            } else if !args.list {
                eprintln!(
                    "peapod_shim::pod_runs_with_no_pause_image_in_the_store not run: containerd {v}'s CRI \
                     requires the pinned sandbox image in the store whatever the sandboxer (since 2.3.0)"
                );
            }
            for (name, f) in shim_tests {
                tests.push((format!("peapod_shim::{name}"), Box::new(f)));
            }
        }
        Ok(v) if !args.list => {
            eprintln!(
                "peapod_shim:: tests not run: containerd {v} has no sandboxers (`sandboxer = \"shim\"` needs 2.x)"
            )
        }
        Ok(_) => {}
        Err(e) => eprintln!("peapod_shim:: tests not run: {e:#}"),
    }
    // Under the VM's TCG emulation the first two cost minutes each (a million numbers
    // through a pty, five times per runtime; ten containers filling their memory), and the
    // VM's containerd suite has a fixed time-out; the real-time signal ones test how the
    // shim decodes and sends signal numbers, which no kernel or cgroup version changes.
    // They run on the host, for every containerd.
    if std::env::var_os("PEAPOD_TEST_VM").is_some() {
        const HOST_ONLY: [&str; 4] = [
            "task_exec_with_tty_large_output_repeated_with_the_same_exec_id",
            "ten_containers_oom_killed_at_once_report_each_oom_before_its_exit",
            "task_exec_ended_by_a_real_time_signal_reports_it",
            "task_kill_with_a_real_time_signal_reaches_the_container",
        ];
        let before = tests.len();
        tests.retain(|(name, _)| !HOST_ONLY.iter().any(|h| name.ends_with(h)));
        if before != tests.len() && !args.list {
            eprintln!(
                "{} tests not run in the VM ({}): minutes each under TCG, or kernel-independent; run on the host",
                before - tests.len(),
                HOST_ONLY.join(", ")
            );
        }
    }
    // Only start containerd when some test will run (`--list` and filters that match
    // nothing need none).
    let will_run = !args.list
        && tests.iter().any(|(name, _)| {
            args.filter
                .as_deref()
                .is_none_or(|f| if args.exact { name == f } else { name.contains(f) })
        });
    let ctrd: Result<Arc<Containerd>, String> = if will_run {
        require_root()
            .and_then(|()| {
                let ctrd = Containerd::start()?;
                eprintln!(
                    "{} {} ready in {:?} ({})",
                    ctrd.build(),
                    ctrd.pid(),
                    ctrd.startup_time(),
                    ctrd.dir().display()
                );
                let begun = Instant::now();
                ctrd.import_images()?;
                eprintln!("images imported in {:?}", begun.elapsed());
                Ok(Arc::new(ctrd))
            })
            .map_err(|e| format!("{e:#}"))
    } else {
        Err("not started".into())
    };
    let trials = tests
        .into_iter()
        .map(|(name, f)| {
            let ctrd = ctrd.clone();
            Trial::test(name, move || {
                let ctrd = ctrd?;
                f(&ctrd).map_err(|e| format!("{e:#}\ncontainerd log tail:\n{}", ctrd.log_tail()).into())
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    if let Ok(ctrd) = ctrd {
        let leftovers = ctrd.assert_no_leftovers();
        let begun = Instant::now();
        let stopped = ctrd.stop();
        eprintln!("containerd stopped and cleaned up in {:?}", begun.elapsed());
        for (what, result) in [("suite leak check", leftovers), ("containerd teardown", stopped)] {
            if let Err(e) = result {
                eprintln!("{what} failed: {e:#}");
                std::process::exit(101);
            }
        }
    }
    conclusion.exit();
}
