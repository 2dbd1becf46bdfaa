//! The shim's exec and IO path under stress: many short execs at once on a loaded machine
//! (the lost exit, the class of containerd#6771), containerd's
//! `TestContainerExecLargeOutputWithTTY`, and a shim that stays responsive while a
//! container closes its stdout or forks until `pids.max`.

use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use peapod_tests::containerd::{Containerd, K8S_NAMESPACE, PEAPOD_HANDLER};
use peapod_tests::cri::{container_config, Pod};

/// Busy-loop threads, one per CPU, until dropped: the machine is loaded, so the shim's
/// threads (reaper, ttrpc workers, finishers) wait for a CPU between any two steps.
struct CpuLoad {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuLoad {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let cpus = std::thread::available_parallelism().map_or(2, usize::from);
        let threads = (0..cpus)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for CpuLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Many execs that end within microseconds of their start, in parallel in several pods
/// on a loaded machine, each answered with its exit code and output: the lost
/// exit (200 pods, an `exec echo ok` right after each start; one exec never returned, its
/// exit never reached containerd). Per pod: a container is started and at once exec'd
/// into (CRI ExecSync, as `crictl exec`), then `EXECS_PER_POD` more `echo ok` execs from
/// three threads through CRI and one through the Task API (`ctr task exec`), all pods at
/// once, with a busy-loop thread per CPU. An exec whose exit is lost fails its ExecSync at
/// its timeout (10 s; an `echo` takes milliseconds) or leaves `ctr` waiting (killed at
/// 20 s); every failure is listed with the counts. `EXEC_STORM_PODS` (default 4) and
/// `EXEC_STORM_EXECS_PER_POD` (default 40) scale it up by hand.
pub fn short_execs_in_parallel_in_several_pods_all_report_their_exit(ctrd: &Containerd) -> Result<()> {
    let pods = env_count("EXEC_STORM_PODS", 4);
    let per_pod = env_count("EXEC_STORM_EXECS_PER_POD", 40);
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let load = CpuLoad::start();
    let begun = Instant::now();
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..pods)
            .map(|p| {
                let failures = failures.clone();
                let done = done.clone();
                s.spawn(move || exec_storm_pod(ctrd, p, per_pod, &failures, &done))
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err(anyhow::anyhow!("pod worker panicked"))))
            .collect()
    });
    drop(load);
    let took = begun.elapsed();
    let failures = failures.lock().unwrap().clone();
    let done = done.load(Ordering::SeqCst);
    eprintln!(
        "exec storm: {pods} pods, {done} execs answered, {} failed, in {took:?}",
        failures.len()
    );
    for r in results {
        r?;
    }
    ensure!(
        failures.is_empty(),
        "{} of {} execs failed (lost exits time out): {}",
        failures.len(),
        done + failures.len(),
        failures.join("; ")
    );
    Ok(())
}

fn exec_storm_pod(
    ctrd: &Containerd,
    p: usize,
    per_pod: usize,
    failures: &Mutex<Vec<String>>,
    done: &std::sync::atomic::AtomicUsize,
) -> Result<()> {
    let cri = ctrd.cri()?;
    let pod = Pod::run(ctrd, &cri, &format!("storm{p}"), PEAPOD_HANDLER)?;
    let result = (|| {
        let config = container_config("app", &["sleep", "3600"]);
        let id = pod.start(&cri, &config)?;
        let fail = |what: String| failures.lock().unwrap().push(what);
        let check = |n: usize, r: proto::cri::Result<peapod_tests::cri::api::ExecSyncResponse>| match r {
            Ok(out) if out.exit_code == 0 && out.stdout == b"ok\n" => {
                done.fetch_add(1, Ordering::SeqCst);
            }
            Ok(out) => fail(format!(
                "pod {p} exec {n}: exit {} stdout {:?} stderr {:?}",
                out.exit_code,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )),
            Err(e) => fail(format!("pod {p} exec {n}: {e:#}")),
        };
        // Right after StartContainer, as in the issue.
        check(0, cri.exec_sync(&id, &["echo", "ok"], Duration::from_secs(10)));
        std::thread::scope(|s| {
            for t in 0..3 {
                let id = &id;
                let check = &check;
                s.spawn(move || {
                    let Ok(cri) = ctrd.cri() else {
                        return fail(format!("pod {p}: CRI connect"));
                    };
                    for n in (t..per_pod).step_by(4) {
                        check(n + 1, cri.exec_sync(id, &["echo", "ok"], Duration::from_secs(10)));
                    }
                });
            }
            let id = &id;
            s.spawn(move || {
                for n in (3..per_pod).step_by(4) {
                    let exec_id = format!("storm-{p}-{n}");
                    match ctr_exec_bounded(ctrd, id, &exec_id, Duration::from_secs(20)) {
                        Ok((0, out)) if out == "ok\n" => {
                            done.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok((code, out)) => fail(format!("pod {p} ctr exec {exec_id}: exit {code} stdout {out:?}")),
                        Err(e) => fail(format!("pod {p} ctr exec {exec_id}: {e:#}")),
                    }
                }
            });
        });
        Ok(id)
    })();
    pod.remove_and_check_gone(ctrd, &cri, result).map(|_| ())
}

/// `ctr task exec --exec-id <exec_id> <id> echo ok` in CRI's namespace, killed after
/// `limit`: (exit code, stdout), or an error naming the hang.
fn ctr_exec_bounded(ctrd: &Containerd, id: &str, exec_id: &str, limit: Duration) -> Result<(i32, String)> {
    let mut child = ctrd.ctr_spawn(&[
        "--namespace",
        K8S_NAMESPACE,
        "task",
        "exec",
        "--exec-id",
        exec_id,
        id,
        "echo",
        "ok",
    ])?;
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            let mut out = String::new();
            std::io::Read::read_to_string(&mut child.stdout.take().context("ctr stdout")?, &mut out)?;
            return Ok((status.code().unwrap_or(-1), out));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("no exit within {limit:?}: ctr task exec hangs");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `ctr run -d` of busybox `sleep 3600` as `id` with containerd runtime `runtime`.
fn ctr_run_sleeper(ctrd: &Containerd, runtime: &str, id: &str) -> Result<()> {
    let out = ctrd.ctr_run_busybox(&["-d"], runtime, id, &["sleep", "3600"])?;
    ensure!(
        out.status.success(),
        "ctr run -d {id}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// The process spec of container `id` as containerd stores it (`ctr containers info`),
/// what containerd's Go client's `container.Spec()` returns.
fn container_process_spec(ctrd: &Containerd, id: &str) -> Result<serde_json::Value> {
    let info: serde_json::Value = serde_json::from_str(&ctrd.ctr_ok(&["containers", "info", id])?)?;
    info["Spec"]["process"]
        .as_object()
        .cloned()
        .map(serde_json::Value::Object)
        .with_context(|| format!("no Spec.process in ctr containers info {id}"))
}

/// The end of a scenario on a `ctr run -d` container: kill, delete the task and the
/// container whatever `result`, and check nothing is left.
fn remove_ctr_container<T>(ctrd: &Containerd, id: &str, result: Result<T>) -> Result<T> {
    let _ = ctrd.ctr(&["task", "kill", "-s", "SIGKILL", id]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ctrd.ctr(&["task", "delete", id]).is_ok_and(|o| !o.status.success()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let removed = ctrd.ctr_ok(&["container", "delete", id]);
    let value = result?;
    removed?;
    ctrd.assert_gone(&[id])?;
    Ok(value)
}

/// containerd's `TestContainerExecLargeOutputWithTTY` (v1.6.20
/// `integration/client/container_test.go`) through the Task API on the shim's socket, as
/// containerd's Go client makes the calls: the container's own process spec (no
/// `terminal` in it) with `sh -c 'seq -s " " 1000000'`, a terminal asked for in the
/// request only, stdout through a FIFO; Exec, Start, Wait, Delete, repeated with the same
/// exec id. Each run must exit 0 and its output end with `999999 1000000` (6.9 MB through
/// the pty). Peapod used to take the spec's `terminal: false`, run the process on
/// /dev/null and never open the FIFO. Runs for runc's shim too, the baseline. Five rounds
/// (containerd's test does 100) keep it near a second per runtime.
pub fn exec_with_tty_large_output_repeated_with_the_same_exec_id(ctrd: &Containerd, runtime: &str) -> Result<()> {
    let id = peapod_tests::cri::unique_name("tty-large");
    ctr_run_sleeper(ctrd, runtime, &id)?;
    let result = (|| {
        let mut spec = container_process_spec(ctrd, &id)?;
        ensure!(
            spec["terminal"] != true,
            "the container's spec asks for a terminal: {spec}"
        );
        spec["args"] = serde_json::json!(["sh", "-c", "seq -s \" \" 1000000"]);
        let socket = ctrd.shim_socket("default", &id);
        let task = peapod_tests::task_api::TaskApi::connect(&socket, ctrd.version().is_2x())?;
        let fifo_dir = tempfile::tempdir()?;
        let exec_id = "large-output-exec";
        for round in 0..5 {
            let fifo = fifo_dir.path().join(format!("stdout-{round}"));
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
            let reader = {
                let fifo = fifo.clone();
                std::thread::spawn(move || -> Result<Vec<u8>> {
                    let mut out = Vec::new();
                    std::io::Read::read_to_end(&mut std::fs::File::open(&fifo)?, &mut out)?;
                    Ok(out)
                })
            };
            let fifo_s = fifo.to_string_lossy();
            let ran = (|| {
                task.exec(&id, exec_id, &spec, true, "", &fifo_s, "")?;
                task.start(&id, exec_id)?;
                let code = task.wait(&id, exec_id, Duration::from_secs(60))?;
                task.delete(&id, exec_id)?;
                Ok::<_, anyhow::Error>(code)
            })();
            if ran.is_err() {
                // Unblock the reader if the shim never opened the FIFO.
                let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
            }
            let code = ran.with_context(|| format!("round {round}"))?;
            let out = reader.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
            let text = String::from_utf8_lossy(&out);
            let tail = &text[text.len().saturating_sub(40)..];
            ensure!(code == 0, "round {round}: exit {code}; output ends {tail:?}");
            ensure!(
                text.trim_end().ends_with("999999 1000000"),
                "round {round}: {} bytes, ending {tail:?}",
                out.len()
            );
        }
        Ok(())
    })();
    remove_ctr_container(ctrd, &id, result)
}

/// Times `n` Task API `State` and `Pids` calls for task `id` on `socket`, each with a
/// 1 s deadline; returns the slowest.
fn slowest_task_calls(task: &peapod_tests::task_api::TaskApi, id: &str, n: usize) -> Result<Duration> {
    let mut slowest = Duration::ZERO;
    for i in 0..n {
        let begun = Instant::now();
        task.state(id, "", Duration::from_secs(1))
            .with_context(|| format!("State call {i}"))?;
        task.pids(id, Duration::from_secs(1))
            .with_context(|| format!("Pids call {i}"))?;
        slowest = slowest.max(begun.elapsed() / 2);
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(slowest)
}

/// A container that closes its stdout and stderr at once and lives on: the shim's copiers
/// see end-of-file while the process runs. The shim keeps answering (State and Pids, each
/// within 1 s, 20 times), an exec into the container still returns its output, and the
/// container's SIGKILL exit (137) is reported to containerd within 10 s.
pub fn container_closing_its_stdout_early_leaves_the_shim_responsive(ctrd: &Containerd) -> Result<()> {
    let id = peapod_tests::cri::unique_name("closed-stdout");
    let out = ctrd.ctr_run_busybox(
        &["-d"],
        peapod_tests::containerd::PEAPOD_RUNTIME,
        &id,
        &["sh", "-c", "echo before; exec >&- 2>&-; sleep 3600"],
    )?;
    ensure!(
        out.status.success(),
        "ctr run -d: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result = (|| {
        let task = peapod_tests::task_api::TaskApi::connect(&ctrd.shim_socket("default", &id), ctrd.version().is_2x())?;
        // Until the shell has closed them: its only descendant is then `sleep`.
        std::thread::sleep(Duration::from_millis(200));
        let slowest = slowest_task_calls(&task, &id, 20)?;
        ensure!(slowest < Duration::from_secs(1), "slowest Task call {slowest:?}");
        let out = ctrd.ctr(&["task", "exec", "--exec-id", "after-close", &id, "echo", "exec-ok"])?;
        ensure!(
            out.status.success() && out.stdout == b"exec-ok\n",
            "exec after the close: {:?} {:?}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
        ctrd.ctr_ok(&["task", "kill", "-s", "SIGKILL", &id])?;
        let code = task
            .wait(&id, "", Duration::from_secs(10))
            .context("Wait after SIGKILL")?;
        ensure!(code == 137, "exit status {code} after SIGKILL");
        Ok(())
    })();
    remove_ctr_container(ctrd, &id, result)
}

/// The race behind the lost exec, made certain: containerd opens its end of an
/// exec's stdout FIFO in a goroutine of its own (containerd/fifo's `OpenFifo` with
/// `O_NONBLOCK`), which on a loaded machine may run only after an `echo` has started,
/// written and exited. Here the harness is that client, through the Task API on the
/// shim's socket: Exec and Start `echo ok` with a stdout FIFO whose reader opens 100 ms
/// later; the reader must get `ok` and Wait exit 0. runc's shim passes (its Start blocks
/// until the reader is there). Peapod's used to write into the FIFO before any reader had
/// it open and close it: the kernel dropped the bytes, and containerd's blocking open
/// then waited forever for a writer (`crictl exec` hung 17 minutes in the issue).
pub fn exec_output_reaches_a_late_fifo_reader(ctrd: &Containerd, runtime: &str) -> Result<()> {
    let id = peapod_tests::cri::unique_name("late-reader");
    ctr_run_sleeper(ctrd, runtime, &id)?;
    let result = (|| {
        let mut spec = container_process_spec(ctrd, &id)?;
        spec["args"] = serde_json::json!(["echo", "ok"]);
        let task = peapod_tests::task_api::TaskApi::connect(&ctrd.shim_socket("default", &id), ctrd.version().is_2x())?;
        let dir = tempfile::tempdir()?;
        for round in 0..3 {
            let fifo = dir.path().join(format!("stdout-{round}"));
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
            // Set once Wait has answered: from then on the output is in the FIFO or lost.
            // No fixed deadline before that: under TCG (the VM tier) runc's exec alone
            // takes seconds.
            let waited = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let reader = {
                let fifo = fifo.clone();
                let waited = waited.clone();
                std::thread::spawn(move || -> Result<Vec<u8>> {
                    std::thread::sleep(Duration::from_millis(100));
                    // Non-blocking, so the test cannot hang where containerd did: with no
                    // writer, a read returns end-of-file at once.
                    let mut f = std::fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_NONBLOCK)
                        .open(&fifo)?;
                    let mut got = Vec::new();
                    let mut buf = [0u8; 64];
                    let mut waited_at = None;
                    while got != b"ok\n" {
                        if waited_at.is_none() && waited.load(std::sync::atomic::Ordering::SeqCst) {
                            waited_at = Some(Instant::now());
                        }
                        match std::io::Read::read(&mut f, &mut buf) {
                            // End-of-file: no writer has the FIFO open. Before Wait answered
                            // that may be a writer still to come; after it, none will.
                            Ok(0) if waited_at.is_some() => break,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                            // A writer holds the FIFO without writing: a shim may still be
                            // copying after it reported the exit, so give it some time.
                            Err(e)
                                if e.kind() == std::io::ErrorKind::WouldBlock
                                    && waited_at.is_some_and(|t| t.elapsed() > Duration::from_secs(10)) =>
                            {
                                break
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(e) => return Err(e.into()),
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Ok(got)
                })
            };
            let exec_id = format!("late-{round}");
            let ran = (|| {
                // stderr into the same FIFO: runc's shim needs one (containerd's client
                // always gives both), and `echo` writes none.
                let path = fifo.to_string_lossy();
                task.exec(&id, &exec_id, &spec, false, "", &path, &path)?;
                task.start(&id, &exec_id)?;
                let code = task.wait(&id, &exec_id, Duration::from_secs(60));
                waited.store(true, std::sync::atomic::Ordering::SeqCst);
                let code = code?;
                task.delete(&id, &exec_id)?;
                Ok::<_, anyhow::Error>(code)
            })();
            // Whatever happened above, the reader must stop.
            waited.store(true, std::sync::atomic::Ordering::SeqCst);
            let got = reader.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
            let code = ran.with_context(|| format!("round {round}"))?;
            ensure!(code == 0, "round {round}: exit {code}");
            ensure!(
                got == b"ok\n",
                "round {round}: the late reader got {:?}: output lost, and containerd's blocking open would wait \
                 forever",
                String::from_utf8_lossy(&got)
            );
        }
        Ok(())
    })();
    remove_ctr_container(ctrd, &id, result)
}

/// An exec'd process that a real-time signal ends (SIGRTMIN+6, 40 on Linux with glibc;
/// the shell sends it to itself: a pid namespace's init would ignore it) reports exit
/// status 128 + 40 = 168, as runc's shim does. peapod's reaper used to decode wait statuses
/// with `nix`, which refuses real-time signal numbers: the child was reaped, its exit
/// dropped, and Wait never answered.
pub fn exec_ended_by_a_real_time_signal_reports_it(ctrd: &Containerd, runtime: &str) -> Result<()> {
    let id = peapod_tests::cri::unique_name("rt-signal");
    ctr_run_sleeper(ctrd, runtime, &id)?;
    let result = (|| {
        let signal = libc::SIGRTMIN() + 6;
        let mut spec = container_process_spec(ctrd, &id)?;
        spec["args"] = serde_json::json!(["sh", "-c", format!("kill -{signal} $$; sleep 60")]);
        let task = peapod_tests::task_api::TaskApi::connect(&ctrd.shim_socket("default", &id), ctrd.version().is_2x())?;
        task.exec(&id, "rt", &spec, false, "", "", "")?;
        task.start(&id, "rt")?;
        let code = task
            .wait(&id, "rt", Duration::from_secs(20))
            .context("Wait for the exec")?;
        task.delete(&id, "rt")?;
        ensure!(
            i32::try_from(code)? == 128 + signal,
            "exit status {code}, not 128 + {signal}"
        );
        Ok(())
    })();
    remove_ctr_container(ctrd, &id, result)
}

/// A Kill with a real-time signal (SIGRTMIN+3, 37 with glibc: what systemd images stop on,
/// and what containerd's CRI sends for their `StopSignal`) reaches the container's init,
/// whose trap exits 3; Wait reports 3. peapod used to refuse every number nix's `Signal`
/// cannot name ("invalid argument: signal 37"), so such a container never saw its stop
/// signal and was killed at the end of its grace period.
pub fn kill_with_a_real_time_signal_reaches_the_container(ctrd: &Containerd, runtime: &str) -> Result<()> {
    let id = peapod_tests::cri::unique_name("rt-kill");
    let signal = libc::SIGRTMIN() + 3;
    let script = format!("trap 'exit 3' {signal}; sleep 3600 & wait");
    let out = ctrd.ctr_run_busybox(&["-d"], runtime, &id, &["sh", "-c", &script])?;
    ensure!(
        out.status.success(),
        "ctr run -d {id}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let result = (|| {
        let task = peapod_tests::task_api::TaskApi::connect(&ctrd.shim_socket("default", &id), ctrd.version().is_2x())?;
        // Until the shell has set its trap.
        std::thread::sleep(Duration::from_millis(300));
        ctrd.ctr_ok(&["task", "kill", "-s", &signal.to_string(), &id])?;
        let code = task
            .wait(&id, "", Duration::from_secs(20))
            .with_context(|| format!("Wait after signal {signal}"))?;
        ensure!(code == 3, "exit status {code} after signal {signal}, not the trap's 3");
        Ok(())
    })();
    remove_ctr_container(ctrd, &id, result)
}

/// A container whose processes fork until its pod's `pids.max` (32 on the pod cgroup, as
/// kubelet's `podPidsLimit` sets it; written between RunPodSandbox and CreateContainer),
/// the limit then lowered to what runs, so no fork is left: the shim keeps answering (State and Pids, each within 1 s, 20 times), an
/// ExecSync into the full cgroup answers (fails or succeeds) within its 10 s timeout
/// rather than hanging, and removing the pod kills every process and leaves nothing.
pub fn container_forking_until_pids_max_leaves_the_shim_responsive(ctrd: &Containerd) -> Result<()> {
    let cri = ctrd.cri()?;
    let pod = Pod::run(ctrd, &cri, "forker", PEAPOD_HANDLER)?;
    let result = (|| {
        let parent = pod.cgroup_parent();
        let pids_max = peapod_tests::cgroup_file("pids", &parent, "pids.max");
        std::fs::write(&pids_max, "32").with_context(|| format!("write {}", pids_max.display()))?;
        let id = pod.start_running(&cri, &container_config("forker", &["sleep", "3600"]))?;
        // busybox's sh exits when a fork fails: the forking runs as an exec, whose
        // children stay (reparented to the container's init) and fill the cgroup.
        let forked = cri.exec_sync(
            &id,
            &["sh", "-c", "while :; do sleep 3600 & done"],
            Duration::from_secs(10),
        );
        let forked = forked?;
        ensure!(
            String::from_utf8_lossy(&forked.stderr).contains("can't fork"),
            "the forking exec ended without hitting pids.max: {forked:?}"
        );
        // Full: its shell has exited meanwhile, so no fork is left to anyone.
        let current = std::fs::read_to_string(pids_max.with_file_name("pids.current"))?;
        std::fs::write(&pids_max, current.trim())?;
        let task = peapod_tests::task_api::TaskApi::connect(
            &ctrd.shim_socket(K8S_NAMESPACE, &pod.id),
            ctrd.version().is_2x(),
        )?;
        let slowest = slowest_task_calls(&task, &id, 20)?;
        ensure!(slowest < Duration::from_secs(1), "slowest Task call {slowest:?}");
        let begun = Instant::now();
        let exec = cri.exec_sync(&id, &["echo", "ok"], Duration::from_secs(10));
        ensure!(
            begun.elapsed() < Duration::from_secs(15),
            "ExecSync into the full cgroup took {:?}: {exec:?}",
            begun.elapsed()
        );
        eprintln!("ExecSync into the full cgroup: {exec:?} in {:?}", begun.elapsed());
        Ok(vec![id])
    })();
    pod.remove_and_check_gone(ctrd, &cri, result).map(drop)
}
