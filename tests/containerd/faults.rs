//! Fault injection (issue 16): an OOM storm in one pod, the pod's shim SIGKILLed at each
//! phase of a container's life (Create, Start, stop, the pod's termination grace period),
//! and containerd SIGKILLed while pods start, run and stop. After each fault, containerd's
//! cleanup (`containerd-shim-peapod-v2 delete`) must leave nothing (processes, mounts,
//! cgroups, netns, state dirs: the harness's leak checks, and peapod's own state dirs),
//! and every exit that happened must be reported.
//!
//! Each phase is reached by construction, not by racing a timer against the shim:
//! - Create: a `binary://` logging driver that signals readiness only when told (the shim
//!   waits for it inside `Create`, as containerd's runc shim does);
//! - Start: an app container whose `Start` waits at the pod's start gate while an init
//!   container runs (KEP-753 ordering, `sandbox::pod::supervisor`);
//! - stop: a container ignoring SIGTERM while CRI's `StopContainer` waits its timeout;
//! - grace period: a SIGTERM to the sandbox task with `io.peapod.grace-period`, a
//!   container ignoring it.
//!
//! The kill tests each run on a private containerd (its log must show no failed
//! cleanup), so the suite runs them on containerd 1.6 and the newest 2.x only, not in the
//! VM (see `main`).

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use peapod_tests::containerd::{Containerd, K8S_NAMESPACE, PEAPOD_HANDLER};
use peapod_tests::cri::{self, api, container_config, Pod};
use proto::cri::CriClient;

use crate::peapod::{annotated, exec_ok, finish_instance, fresh_containerd, peapod_shims, pod_with};

fn sh(script: &str) -> Vec<&str> {
    vec!["sh", "-c", script]
}

/// One task event as `ctr events` prints it: `<time> <namespace> <topic> <json>`.
#[derive(Debug, Clone)]
struct Event {
    topic: String,
    container_id: String,
    /// The process id of `/tasks/exit` (the container id for its init).
    id: String,
    /// `/tasks/exit`'s code (absent when 0 in containerd 2.x's JSON).
    exit_status: Option<u64>,
    /// `/tasks/exit`'s `exited_at`, as printed (RFC 3339).
    exited_at: String,
}

/// A `ctr events` subscription of the test's own, keeping every `/tasks/` event in the
/// order containerd delivered them. Killed on drop.
struct Events {
    child: Child,
    seen: Arc<Mutex<Vec<Event>>>,
    lines: Arc<Mutex<usize>>,
}

impl Events {
    /// Subscribes, and returns once the subscription demonstrably delivers (a namespace
    /// label update came through), within 10 s.
    fn watch(ctrd: &Containerd) -> Result<Events> {
        let mut child = ctrd.ctr_spawn(&["events"])?;
        let stdout = child.stdout.take().context("ctr events stdout")?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::new(Mutex::new(0));
        let (seen_w, lines_w) = (Arc::clone(&seen), Arc::clone(&lines));
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                *lines_w.lock().unwrap() += 1;
                if let Some(e) = parse_event(&line) {
                    seen_w.lock().unwrap().push(e);
                }
            }
        });
        let events = Events { child, seen, lines };
        let deadline = Instant::now() + Duration::from_secs(10);
        for i in 0.. {
            ctrd.ctr_ok(&["namespaces", "label", "default", &format!("peapod-faults-probe={i}")])?;
            std::thread::sleep(Duration::from_millis(20));
            if *events.lines.lock().unwrap() > 0 {
                break;
            }
            ensure!(Instant::now() < deadline, "`ctr events` delivered nothing within 10 s");
        }
        Ok(events)
    }

    /// Waits (up to `timeout`) until `done` holds for the events so far; returns them.
    fn wait(&self, what: &str, timeout: Duration, done: impl Fn(&[Event]) -> bool) -> Result<Vec<Event>> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.seen.lock().unwrap().clone();
            if done(&seen) {
                return Ok(seen);
            }
            ensure!(
                Instant::now() < deadline,
                "{what} not seen within {timeout:?}: {seen:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_event(line: &str) -> Option<Event> {
    let start = line.find('{')?;
    let topic = line[..start].split_whitespace().find(|w| w.starts_with("/tasks/"))?;
    let v: serde_json::Value = serde_json::from_str(&line[start..]).ok()?;
    let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    Some(Event {
        topic: topic.to_string(),
        container_id: text("container_id"),
        id: text("id"),
        exit_status: v["exit_status"].as_u64(),
        exited_at: text("exited_at"),
    })
}

/// Sets a container's memory limit (bytes), as a pod's `resources.limits.memory` does.
fn limit_memory(c: &mut api::ContainerConfig, bytes: i64) {
    c.linux.get_or_insert_with(Default::default).resources = Some(api::LinuxContainerResources {
        memory_limit_in_bytes: bytes,
        ..Default::default()
    });
}

/// Waits until `/tmp/go` exists in a shared volume, then grows a string by doubling until
/// the kernel OOM-kills it: `awk` is PID 1 then (`exec`), so the kill ends the container
/// with 137 whichever process the kernel picks.
const HOG_AT_GO: &str = "while [ ! -e /t/go ]; do sleep 0.05; done; exec awk 'BEGIN { s = \"x\"; while (1) s = s s }'";

/// 10 containers of one pod, each with a 16 MiB limit, OOM-killed in the same instant
/// (all released by one file in a shared emptyDir): containerd delivers 10 TaskOOM
/// events, each before its container's TaskExit (CRI takes the reason from the TaskOOM it
/// saw before the exit: containerd#12714 is this ordering going wrong), and CRI reports
/// each as exited 137 with reason `OOMKilled`.
pub fn ten_containers_oom_killed_at_once_report_each_oom_before_its_exit(ctrd: &Containerd) -> Result<()> {
    let events = Events::watch(ctrd)?;
    let cri = ctrd.cri()?;
    let pod = pod_with(ctrd, &cri, "oom10", &[("io.peapod.empty-dirs", r#"[{"name":"t"}]"#)])?;
    let mount = ("io.peapod.volume-mounts", r#"[{"name":"t","mountPath":"/t"}]"#);
    let result = (|| {
        let mut ids = Vec::new();
        for i in 0..10 {
            let mut c = annotated(&format!("hog{i}"), &sh(HOG_AT_GO), &[mount]);
            limit_memory(&mut c, 16 << 20);
            ids.push(pod.start_running(&cri, &c)?);
        }
        exec_ok(&cri, &ids[0], &["touch", "/t/go"])?;
        for id in &ids {
            let s = cri::wait_container_state(&cri, id, api::ContainerState::ContainerExited, Duration::from_secs(30))?;
            ensure!(
                s.exit_code == 137 && s.reason == "OOMKilled",
                "{id}: exit code {}, reason {:?} (want 137, OOMKilled)",
                s.exit_code,
                s.reason
            );
        }
        let exit_of = |e: &Event, id: &str| e.topic == "/tasks/exit" && e.container_id == id && e.id == id;
        let seen = events.wait("10 TaskExit events", Duration::from_secs(10), |seen| {
            ids.iter().all(|id| seen.iter().any(|e| exit_of(e, id)))
        })?;
        let mut exits = Vec::new();
        for id in &ids {
            let ooms: Vec<usize> = (0..seen.len())
                .filter(|&i| seen[i].topic == "/tasks/oom" && seen[i].container_id == *id)
                .collect();
            let exit: Vec<usize> = (0..seen.len()).filter(|&i| exit_of(&seen[i], id)).collect();
            ensure!(
                ooms.len() == 1 && exit.len() == 1,
                "{id}: {} TaskOOM and {} TaskExit events (want 1 each): {seen:#?}",
                ooms.len(),
                exit.len()
            );
            ensure!(
                ooms[0] < exit[0],
                "{id}: TaskOOM (event {}) after its TaskExit (event {}): {seen:#?}",
                ooms[0],
                exit[0]
            );
            ensure!(
                seen[exit[0]].exit_status == Some(137),
                "{id}: TaskExit {:?}",
                seen[exit[0]]
            );
            exits.push(seen[exit[0]].exited_at.clone());
        }
        exits.sort();
        eprintln!(
            "10 OOM kills from {} to {}",
            exits.first().unwrap(),
            exits.last().unwrap()
        );
        Ok(ids)
    })();
    pod.remove_and_check_gone(ctrd, &cri, result)?;
    Ok(())
}

/// The pid of the peapod shim serving pod (or standalone task) `id`.
fn shim_of(ctrd: &Containerd, id: &str) -> Result<u32> {
    peapod_shims(ctrd)
        .into_iter()
        .find(|(_, i)| i == id)
        .map(|(pid, _)| pid)
        .with_context(|| format!("no shim serves {id}"))
}

/// The processes holding the listening socket bound at `path` (from `/proc/net/unix`
/// and every process's fds).
fn socket_holders(path: &Path) -> Result<Vec<u32>> {
    let table = fs::read_to_string("/proc/net/unix")?;
    let want = path.to_string_lossy();
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 8 && f[7] == want).then(|| f[6].to_string())
        })
        .collect();
    let links: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let mut holders = Vec::new();
    for proc in fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = proc.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let held = fs::read_dir(proc.path().join("fd"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|fd| fs::read_link(fd.path()).ok())
            .any(|l| links.iter().any(|s| l.as_os_str() == s.as_str()));
        if held {
            holders.push(pid);
        }
    }
    Ok(holders)
}

/// Checks that the shim `shim` of pod `pod` alone holds its listening socket: a child
/// holding it too (a container's init waiting for its Start, a logging driver) would keep
/// accepting connections after the shim died, and `delete` would take the dead shim for
/// a live one (leaving the socket and the pod's other tasks).
fn check_socket_held_by_the_shim_alone(ctrd: &Containerd, pod: &str, shim: u32) -> Result<()> {
    let socket = ctrd.shim_socket(K8S_NAMESPACE, pod);
    let holders = socket_holders(&socket)?;
    let cmdlines: Vec<String> = holders
        .iter()
        .map(|p| {
            let c = fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            format!("{p}: {}", String::from_utf8_lossy(&c).replace('\0', " "))
        })
        .collect();
    ensure!(
        holders == [shim],
        "the shim's socket {} is held by {cmdlines:?}, not by the shim ({shim}) alone",
        socket.display()
    );
    Ok(())
}

fn sigkill(pid: u32) -> Result<()> {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid)?),
        nix::sys::signal::Signal::SIGKILL,
    )
    .with_context(|| format!("SIGKILL {pid}"))
}

/// Waits (up to 10 s) until process `pid` is gone (reaped or a zombie no more).
fn wait_gone(pid: u32, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() {
        ensure!(Instant::now() < deadline, "{what} ({pid}) still runs");
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// The host pid of container `id`'s init, from CRI's verbose status.
fn container_pid(cri: &CriClient, id: &str) -> Result<u32> {
    let pid = cri
        .container_status(id, true)?
        .info
        .get("info")
        .and_then(|i| serde_json::from_str::<serde_json::Value>(i).ok())
        .and_then(|v| v["pid"].as_u64())
        .context("no pid in verbose ContainerStatus")?;
    Ok(u32::try_from(pid)?)
}

/// What every shim-kill test checks at its end, the pod removed: containerd's log shows
/// no failed `delete` cleanup, and peapod's own state for the pod and its containers is
/// gone, as is everything the harness looks for.
fn check_cleaned_up(ctrd: &Containerd, ids: &[&str]) -> Result<()> {
    let log = fs::read_to_string(ctrd.dir().join("containerd.log"))?;
    let failed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("failed to clean up after shim disconnected") || l.contains("cleanup dead shim"))
        .filter(|l| l.contains("level=error") || l.contains("level=warning"))
        .collect();
    ensure!(
        failed.is_empty(),
        "containerd-shim-peapod-v2 delete failed:\n{}",
        failed.join("\n")
    );
    for id in ids {
        for dir in ["containers", "pods"] {
            let state = format!("/run/peapod/shim/{K8S_NAMESPACE}/{dir}/{id}");
            ensure!(!Path::new(&state).exists(), "peapod state {state} left behind");
        }
    }
    ctrd.assert_gone(ids)
}

/// An exit code the runtime reports for a container whose shim was SIGKILLed while it
/// ran: CRI's own task waiter sees the connection close first and records its "unknown"
/// code 255; `delete` answers 137 (it SIGKILLs what is left).
fn killed_with_its_shim(code: i32) -> bool {
    code == 137 || code == 255
}

/// The shim SIGKILLed while an app container's `Start` waits at the pod's start gate
/// (its init container still runs): `StartContainer` fails, the init container is
/// reported exited, and removing the pod leaves nothing.
pub fn shim_killed_during_start_leaves_nothing(_: &Containerd) -> Result<()> {
    let ctrd = fresh_containerd()?;
    let result = (|| {
        let cri = ctrd.cri()?;
        let pod = Pod::run(&ctrd, &cri, "kill-start", PEAPOD_HANDLER)?;
        let result = (|| {
            let (init, app, start) = app_starting_behind_an_init(&ctrd, &cri, &pod, 60)?;
            let shim = shim_of(&ctrd, &pod.id)?;
            check_socket_held_by_the_shim_alone(&ctrd, &pod.id, shim)?;
            sigkill(shim)?;
            let started = start.join().expect("start thread");
            ensure!(
                started.is_err(),
                "StartContainer succeeded although the shim was killed"
            );
            let s = cri::wait_container_state(
                &cri,
                &init,
                api::ContainerState::ContainerExited,
                Duration::from_secs(20),
            )?;
            ensure!(killed_with_its_shim(s.exit_code), "init: exit code {}", s.exit_code);
            let s = cri.container_status(&app, false)?.status.context("app status")?;
            ensure!(
                s.state != api::ContainerState::ContainerRunning as i32,
                "the app runs after its Start failed: {s:?}"
            );
            Ok(vec![init, app])
        })();
        let ids = pod.remove_after(&cri, result)?;
        check_cleaned_up(&ctrd, &[&pod.id, &ids[0], &ids[1]])
    })();
    finish_instance(ctrd, result)
}

/// The end of a shim kill right after `polite` ended on its SIGTERM (exit 0) while
/// `stubborn` ignores it: containerd publishes `polite`'s exit as 0 (from the shim, or from
/// the shim's `delete` after it died; never another code) and `stubborn`'s as 137 (SIGKILL
/// from `delete`), and CRI
/// reports both as exited.
///
/// CRI's own record of `polite` may still say 255: containerd 1.6's CRI also waits on the
/// task (`Wait`), and when the shim's connection breaks first it records 255 ("unknown")
/// before containerd's clean-up publishes the exit; that race is containerd's, and the
/// same for runc's shim.
fn check_exits_after_the_kill(cri: &CriClient, events: &Events, polite: &str, stubborn: &str) -> Result<()> {
    let exits_of = |seen: &[Event], id: &str| -> Vec<Option<u64>> {
        seen.iter()
            .filter(|e| e.topic == "/tasks/exit" && e.container_id == id && e.id == id)
            .map(|e| e.exit_status)
            .collect()
    };
    let seen = events.wait("both containers' TaskExit", Duration::from_secs(20), |seen| {
        !exits_of(seen, polite).is_empty() && !exits_of(seen, stubborn).is_empty()
    })?;
    let polite_exits = exits_of(&seen, polite);
    ensure!(
        polite_exits.iter().all(|s| s.unwrap_or(0) == 0),
        "polite's exit statuses {polite_exits:?}: its exit 0, before the shim died, was lost"
    );
    let stubborn_exits = exits_of(&seen, stubborn);
    ensure!(
        stubborn_exits.iter().all(|s| *s == Some(137)),
        "stubborn's exit statuses {stubborn_exits:?}"
    );
    for id in [polite, stubborn] {
        cri::wait_container_state(cri, id, api::ContainerState::ContainerExited, Duration::from_secs(20))?;
    }
    Ok(())
}

/// A container that ends on SIGTERM (`polite`) and one that ignores it (`stubborn`), both
/// running in `pod`.
fn polite_and_stubborn(cri: &CriClient, pod: &Pod) -> Result<(String, String)> {
    let polite = pod.start_running(
        cri,
        &container_config("polite", &sh("trap 'exit 0' TERM; sleep 3600 & wait")),
    )?;
    let stubborn = pod.start_running(
        cri,
        &container_config("stubborn", &sh("trap '' TERM; sleep 3600 & wait; sleep 3600")),
    )?;
    Ok((polite, stubborn))
}

/// The shim SIGKILLed while CRI's `StopContainer` waits out its timeout for a container
/// that ignores SIGTERM, as soon as a second container of the pod, stopped at the same
/// time, has ended on its SIGTERM and been reaped: see [`check_exits_after_the_kill`];
/// removing the pod leaves nothing. The shim records an exit on disk before it reaps the
/// process (`shim::reaper`), so the kill cannot fall between the two.
pub fn shim_killed_while_containers_stop_loses_no_exit(_: &Containerd) -> Result<()> {
    let ctrd = fresh_containerd()?;
    let result = (|| {
        let events = Events::watch(&ctrd)?;
        let cri = ctrd.cri()?;
        let pod = Pod::run(&ctrd, &cri, "kill-stop", PEAPOD_HANDLER)?;
        let result = (|| {
            let (polite, stubborn) = polite_and_stubborn(&cri, &pod)?;
            let shim = shim_of(&ctrd, &pod.id)?;
            let polite_pid = container_pid(&cri, &polite)?;
            let address = ctrd.address();
            let stop = |id: &String| {
                let (address, id) = (address.clone(), id.clone());
                std::thread::spawn(move || {
                    CriClient::connect(address).and_then(|c| c.stop_container(&id, Duration::from_secs(30)))
                })
            };
            let stopping = [stop(&stubborn), stop(&polite)];
            wait_gone(polite_pid, "the polite container")?;
            sigkill(shim)?;
            for s in stopping {
                // Either outcome is fine for the calls themselves: the kill raced them.
                let _ = s.join().expect("stop thread");
            }
            check_exits_after_the_kill(&cri, &events, &polite, &stubborn)?;
            Ok(vec![polite, stubborn])
        })();
        let ids = pod.remove_after(&cri, result)?;
        check_cleaned_up(&ctrd, &[&pod.id, &ids[0], &ids[1]])
    })();
    finish_instance(ctrd, result)
}

/// The shim SIGKILLed inside the pod's termination grace period (a SIGTERM to the sandbox
/// task, `io.peapod.grace-period` 30 s, a container ignoring it), as soon as a container
/// that ends on SIGTERM has been reaped: see [`check_exits_after_the_kill`]; the sandbox
/// turns not ready, and removing the pod leaves nothing.
pub fn shim_killed_in_the_pods_grace_period_loses_no_exit(_: &Containerd) -> Result<()> {
    let ctrd = fresh_containerd()?;
    let result = (|| {
        let events = Events::watch(&ctrd)?;
        let cri = ctrd.cri()?;
        let pod = pod_with(&ctrd, &cri, "kill-grace", &[("io.peapod.grace-period", "30")])?;
        let result = (|| {
            let (polite, stubborn) = polite_and_stubborn(&cri, &pod)?;
            let shim = shim_of(&ctrd, &pod.id)?;
            let polite_pid = container_pid(&cri, &polite)?;
            ctrd.ctr_ok(&["-n", K8S_NAMESPACE, "task", "kill", &pod.id])?;
            wait_gone(polite_pid, "the polite container")?;
            sigkill(shim)?;
            check_exits_after_the_kill(&cri, &events, &polite, &stubborn)?;
            pod.wait_not_ready(
                &cri,
                Duration::from_secs(20),
                "the sandbox is still ready after its shim died",
            )?;
            Ok(vec![polite, stubborn])
        })();
        let ids = pod.remove_after(&cri, result)?;
        check_cleaned_up(&ctrd, &[&pod.id, &ids[0], &ids[1]])
    })();
    finish_instance(ctrd, result)
}

/// Creates an init container that sleeps `init_secs` and an app in `pod`, starts the init
/// and calls the app's `StartContainer` from a thread of its own; returns (init id, app
/// id, that thread) once the app's task exists (Create returned) and its Start has waited
/// 300 ms at the pod's start gate (apps start after the init containers, KEP-753), so a
/// fault injected now hits a Start in progress.
fn app_starting_behind_an_init(
    ctrd: &Containerd,
    cri: &CriClient,
    pod: &Pod,
    init_secs: u32,
) -> Result<(String, String, std::thread::JoinHandle<proto::cri::Result<()>>)> {
    let init = pod.create(
        cri,
        &annotated(
            "init",
            &sh(&format!("sleep {init_secs}")),
            &[("io.peapod.role", "init")],
        ),
    )?;
    let app = pod.create(cri, &container_config("app", &["sleep", "3600"]))?;
    cri.start_container(&init)?;
    let address = ctrd.address();
    let app_id = app.clone();
    let start = std::thread::spawn(move || CriClient::connect(address).and_then(|c| c.start_container(&app_id)));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ctrd
        .ctr_ok(&["-n", K8S_NAMESPACE, "task", "ls"])?
        .lines()
        .any(|l| l.starts_with(&app) && l.contains("CREATED"))
    {
        ensure!(Instant::now() < deadline, "the app's task was never created");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    ensure!(
        !start.is_finished(),
        "the app's Start returned while its init container runs"
    );
    Ok((init, app, start))
}

/// A `binary://` logging driver (containerd's protocol: stdout on fd 3, stderr on fd 4,
/// ready when fd 5 closes) that signals readiness only once `<dir>/go` exists (at most
/// 60 s), then drains both streams until the container's end.
fn slow_logger(dir: &Path) -> Result<std::path::PathBuf> {
    let path = dir.join("slow-logger");
    let script = format!(
        "#!/bin/sh\ni=0\nwhile [ ! -e {go} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done\nexec 5>&-\ncat <&4 >/dev/null &\nexec cat <&3 >/dev/null\n",
        go = dir.join("go").display()
    );
    fs::write(&path, script)?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// The shim SIGKILLed inside `Create` of a container joining a running pod (it waits for
/// the container's `binary://` logging driver to become ready): the task creation fails,
/// the pod's running container is reported exited, and removing the container and the
/// pod leaves nothing (the logging driver ends with the container's output).
pub fn shim_killed_during_create_leaves_nothing(_: &Containerd) -> Result<()> {
    let ctrd = fresh_containerd()?;
    let result = (|| {
        let cri = ctrd.cri()?;
        let pod = Pod::run(&ctrd, &cri, "kill-create", PEAPOD_HANDLER)?;
        let joiner = cri::unique_name("joiner");
        let result = (|| {
            let running = pod.start_running(&cri, &container_config("running", &["sleep", "3600"]))?;
            let logger = slow_logger(ctrd.dir())?;
            let log_uri = format!("binary://{}", logger.display());
            let sandbox = format!("io.kubernetes.cri.sandbox-id={}", pod.id);
            let mut run = ctrd.ctr_spawn(&[
                "-n",
                K8S_NAMESPACE,
                "run",
                "-d",
                "--runtime",
                peapod_tests::containerd::PEAPOD_RUNTIME,
                "--log-uri",
                &log_uri,
                "--annotation",
                &sandbox,
                peapod_tests::images::BUSYBOX_IMAGE,
                &joiner,
                "sleep",
                "3600",
            ])?;
            // The shim waits for the logging driver inside Create: find the driver, a
            // child of the pod's shim.
            let shim = shim_of(&ctrd, &pod.id)?;
            let deadline = Instant::now() + Duration::from_secs(10);
            let logger_pid = loop {
                // Any of the shim's threads may have spawned it.
                let children: String = fs::read_dir(format!("/proc/{shim}/task"))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|t| fs::read_to_string(t.path().join("children")).ok())
                    .collect::<Vec<_>>()
                    .join(" ");
                let found = children
                    .split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok())
                    .find(|p| {
                        fs::read(format!("/proc/{p}/cmdline"))
                            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("slow-logger"))
                    });
                if let Some(pid) = found {
                    break pid;
                }
                if Instant::now() >= deadline {
                    let _ = run.kill();
                    let out = run.wait_with_output()?;
                    bail!(
                        "the shim never started the logging driver: ctr {}: {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            std::thread::sleep(Duration::from_millis(200));
            ensure!(
                run.try_wait()?.is_none(),
                "ctr run returned while Create waits for the logging driver"
            );
            check_socket_held_by_the_shim_alone(&ctrd, &pod.id, shim)?;
            sigkill(shim)?;
            let out = run.wait_with_output()?;
            ensure!(
                !out.status.success(),
                "ctr run -d succeeded although the shim died in Create"
            );
            fs::write(ctrd.dir().join("go"), "")?;
            let s = cri::wait_container_state(
                &cri,
                &running,
                api::ContainerState::ContainerExited,
                Duration::from_secs(20),
            )?;
            ensure!(killed_with_its_shim(s.exit_code), "running: exit code {}", s.exit_code);
            let _ = ctrd.ctr(&["-n", K8S_NAMESPACE, "task", "delete", "-f", &joiner]);
            ctrd.ctr_ok(&["-n", K8S_NAMESPACE, "container", "delete", &joiner])?;
            wait_gone(logger_pid, "the logging driver")?;
            Ok(vec![running])
        })();
        let ids = pod.remove_after(&cri, result)?;
        check_cleaned_up(&ctrd, &[&pod.id, &ids[0], &joiner])
    })();
    finish_instance(ctrd, result)
}

/// The numbers of `line-N` records in a container's CRI log, in order.
fn numbered_lines(pod: &Pod, config: &api::ContainerConfig) -> Vec<u64> {
    cri::read_log(&pod.log_path(config))
        .unwrap_or_default()
        .iter()
        .filter_map(|l| l.message.strip_prefix("line-")?.parse().ok())
        .collect()
}

/// containerd SIGKILLed (a crash, not a shutdown) while a pod's containers start, run and
/// stop, and restarted on its state:
/// - run: a container printing a numbered line every 50 ms keeps running, and its log
///   goes on after the restart with no line missing (CRI reopens the FIFOs the shim kept
///   writing into: IO reattached);
/// - exit: a container that exits 5 while containerd is down is reported with 5 (no exit
///   lost);
/// - start: an app whose `StartContainer` waits at the pod's start gate (its init
///   container runs 4 s) when containerd dies: CRI's recovery finds the task created, not
///   started, and deletes it (containerd's `loadContainer`); the app is then `CREATED`
///   with no process (no task orphaned), and the pod starts the next container once its
///   init container is done;
/// - stop: a `StopContainer` in flight for a container ignoring SIGTERM: it still runs
///   after the restart, and the kubelet's retry ends it with 137.
///
/// Removing the pod then leaves nothing.
pub fn containerd_killed_while_pods_start_run_and_stop_loses_nothing(_: &Containerd) -> Result<()> {
    let ctrd = fresh_containerd()?;
    let result = (|| {
        let cri = ctrd.cri()?;
        let pod = Pod::run(&ctrd, &cri, "ctrd-crash", PEAPOD_HANDLER)?;
        let result = (|| {
            let counter_config = container_config(
                "counter",
                &sh("i=0; while true; do echo line-$i; i=$((i+1)); sleep 0.05; done"),
            );
            let counter = pod.start_running(&cri, &counter_config)?;
            let exits = pod.start_running(
                &cri,
                &container_config(
                    "exits",
                    &sh("while [ ! -p /tmp/go-fifo ]; do sleep 0.1; done; read x < /tmp/go-fifo; exit 5"),
                ),
            )?;
            exec_ok(&cri, &exits, &["mkfifo", "/tmp/go-fifo"])?;
            let exits_pid = container_pid(&cri, &exits)?;
            let stubborn = pod.start_running(
                &cri,
                &container_config("stubborn", &sh("trap '' TERM; sleep 3600 & wait; sleep 3600")),
            )?;
            let (init, app, starting) = app_starting_behind_an_init(&ctrd, &cri, &pod, 4)?;
            let address = ctrd.address();
            let stubborn_id = stubborn.clone();
            let stopping = std::thread::spawn(move || {
                CriClient::connect(address).and_then(|c| c.stop_container(&stubborn_id, Duration::from_secs(30)))
            });
            let before = numbered_lines(&pod, &counter_config);
            ensure!(!before.is_empty(), "the counter logged nothing before the crash");
            ctrd.restart_after(nix::sys::signal::Signal::SIGKILL, || {
                fs::write(format!("/proc/{exits_pid}/root/tmp/go-fifo"), "go\n")?;
                wait_gone(exits_pid, "the container told to exit while containerd is down")
            })?;
            let (started, stopped) = (
                starting.join().expect("start thread"),
                stopping.join().expect("stop thread"),
            );
            ensure!(started.is_err(), "StartContainer succeeded across a containerd crash");
            ensure!(
                stopped.is_err(),
                "StopContainer of the stubborn container returned before its timeout"
            );
            let cri = ctrd.cri()?;

            // run: the log goes on, no line missing.
            let last = *before.last().unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            let after = loop {
                let now = numbered_lines(&pod, &counter_config);
                if now.last().is_some_and(|n| *n > last + 20) {
                    break now;
                }
                ensure!(
                    Instant::now() < deadline,
                    "the counter's log stopped at line-{last} (IO not reattached): {:?}",
                    now.last()
                );
                std::thread::sleep(Duration::from_millis(50));
            };
            let gaps: Vec<(u64, u64)> = after
                .windows(2)
                .filter(|w| w[1] != w[0] + 1)
                .map(|w| (w[0], w[1]))
                .collect();
            ensure!(
                gaps.is_empty() && after[0] == 0,
                "the counter's log lost lines across the crash (first {}, gaps {gaps:?})",
                after[0]
            );

            // exit: reported with its code.
            let s = cri::wait_container_state(
                &cri,
                &exits,
                api::ContainerState::ContainerExited,
                Duration::from_secs(20),
            )?;
            ensure!(
                s.exit_code == 5,
                "the exit while containerd was down: code {}",
                s.exit_code
            );

            // start: created, no process, and a retry runs it.
            let s = cri.container_status(&app, false)?.status.context("app status")?;
            match api::ContainerState::try_from(s.state) {
                Ok(api::ContainerState::ContainerCreated) => {
                    let procs: Vec<_> = ctrd
                        .cgroups_of(&app)
                        .iter()
                        .filter_map(|c| fs::read_to_string(c.join("cgroup.procs")).ok())
                        .filter(|p| !p.trim().is_empty())
                        .collect();
                    ensure!(procs.is_empty(), "the CREATED app has processes: {procs:?}");
                }
                state => bail!("the app whose Start was cut by the crash is {state:?}: {s:?}"),
            }

            // The pod still starts containers once its init container is done. (Not
            // by a second StartContainer of the cut one: containerd 1.6's recovery
            // deleted that task and, with it, the FIFOs CRI would hand the next
            // task, so that Start fails with ENOENT opening them whatever the runtime;
            // the kubelet then replaces the container, as here.)
            cri::wait_container_state(
                &cri,
                &init,
                api::ContainerState::ContainerExited,
                Duration::from_secs(20),
            )?;
            let app2 = pod.start_running(&cri, &container_config("app2", &["sleep", "3600"]))?;

            // stop: still running, the retry ends it.
            let s = cri
                .container_status(&stubborn, false)?
                .status
                .context("stubborn status")?;
            ensure!(
                s.state == api::ContainerState::ContainerRunning as i32,
                "stubborn after the restart: {s:?}"
            );
            cri.stop_container(&stubborn, Duration::from_secs(1))?;
            let s = cri::wait_container_state(&cri, &stubborn, api::ContainerState::ContainerExited, Duration::ZERO)?;
            ensure!(s.exit_code == 137, "stubborn: exit code {}", s.exit_code);
            Ok(vec![counter, exits, stubborn, init, app, app2])
        })();
        let cri = ctrd.cri()?;
        let ids = pod.remove_after(&cri, result)?;
        let mut all: Vec<&str> = ids.iter().map(String::as_str).collect();
        all.push(&pod.id);
        check_cleaned_up(&ctrd, &all)
    })();
    finish_instance(ctrd, result)
}
