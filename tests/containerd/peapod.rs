//! Scenarios only peapod has: the shim's process contract (one shim per pod, ctr's exec,
//! tty, metrics, pause, attach), faults (containerd restarted, shim killed, an exit while
//! containerd is down), and pod semantics (shared namespaces, emptyDir, pod cgroup,
//! KEP-753 start order, termination).

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use peapod_tests::containerd::{Containerd, K8S_NAMESPACE, PEAPOD_HANDLER, PEAPOD_RUNTIME};
use peapod_tests::cri::{self, api, container_config, unique_name, Pod};
use peapod_tests::images::BUSYBOX_IMAGE;
use proto::cri::CriClient;

fn sh(script: &str) -> Vec<&str> {
    vec!["sh", "-c", script]
}

/// Prints the wall clock in microseconds since the epoch, from inside a busybox
/// container (`date` has no sub-second format there; `adjtimex` reads the kernel clock).
const NOW_US: &str = r#"now_us() { adjtimex | awk '/tv_sec/{s=$2} /tv_usec/{u=$2} END{printf "%d%06d\n", s, u}'; }"#;

/// Runs `cmd` in container `id` and returns its stdout, requiring exit code 0.
pub(crate) fn exec_ok(cri: &CriClient, id: &str, cmd: &[&str]) -> Result<String> {
    let out = cri.exec_sync(id, cmd, Duration::from_secs(20))?;
    ensure!(
        out.exit_code == 0,
        "exec {cmd:?} in {id}: exit {} stderr {}",
        out.exit_code,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `containerd-shim-peapod-v2` daemons serving this containerd: (pid, `-id` value).
pub(crate) fn peapod_shims(ctrd: &Containerd) -> Vec<(u32, String)> {
    let address = ctrd.address().to_string_lossy().into_owned();
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_shim = args.first().is_some_and(|a| a.ends_with("containerd-shim-peapod-v2"));
        let ours = args.windows(2).any(|w| w[0] == "-address" && w[1] == address);
        if is_shim && ours && !args.iter().any(|a| a == "start" || a == "delete") {
            let id = args
                .windows(2)
                .find(|w| w[0] == "-id")
                .map(|w| w[1].clone())
                .unwrap_or_default();
            out.push((pid, id));
        }
    }
    out
}

fn ctr_peapod_run_detached(ctrd: &Containerd, id: &str, script: &str) -> Result<()> {
    let out = ctrd.ctr_run_busybox(&["-d"], PEAPOD_RUNTIME, id, &sh(script))?;
    ensure!(
        out.status.success(),
        "ctr run -d {id}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

fn task_status(ctrd: &Containerd, id: &str) -> Result<String> {
    task_column(ctrd, id, 2)
}

/// The host pid of task `id`'s init, from `ctr task ls`.
pub(crate) fn task_pid(ctrd: &Containerd, id: &str) -> Result<u32> {
    let pid = task_column(ctrd, id, 1)?;
    pid.parse().with_context(|| format!("task {id}: pid {pid:?}"))
}

/// Column `n` (0 TASK, 1 PID, 2 STATUS) of task `id`'s line in `ctr task ls`.
fn task_column(ctrd: &Containerd, id: &str, n: usize) -> Result<String> {
    let out = ctrd.ctr_ok(&["task", "ls"])?;
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(n))
        .map(str::to_string)
        .with_context(|| format!("task {id} not listed: {out}"))
}

/// `ctr task exec` (plain and with a terminal), metrics, pause/resume, kill and delete.
pub fn ctr_exec_tty_metrics_pause_resume_kill(ctrd: &Containerd) -> Result<()> {
    let id = unique_name("ctr-ops");
    ctr_peapod_run_detached(ctrd, &id, "sleep 3600")?;
    let result = (|| {
        let out = ctrd.ctr(&[
            "task",
            "exec",
            "--exec-id",
            "e1",
            &id,
            "sh",
            "-c",
            "echo in-exec; exit 4",
        ])?;
        ensure!(out.status.code() == Some(4), "exec exit: {:?}", out.status);
        ensure!(
            String::from_utf8_lossy(&out.stdout) == "in-exec\n",
            "exec stdout {:?}",
            out.stdout
        );

        // ctr wants a real terminal for -t: give it one with script(1).
        let ctr_cmd = format!(
            "ctr --address {} task exec -t --exec-id e2 {id} tty",
            ctrd.address().display()
        );
        let out = std::process::Command::new("script")
            .args(["-qec", &ctr_cmd, "/dev/null"])
            .stdin(std::process::Stdio::null())
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success() && text.contains("/dev/pts/"),
            "tty exec: {:?} {text:?}",
            out.status
        );

        // A background child keeping the exec's stdout open must not keep ctr waiting
        // for it: the bound is far below the child's 120 s, and far above an exec's time
        // even under emulation (TCG on a loaded host takes seconds).
        let begun = Instant::now();
        let out = ctrd.ctr(&["task", "exec", "--exec-id", "e3", &id, "sh", "-c", "sleep 120 &"])?;
        ensure!(out.status.success(), "background exec: {:?}", out.status);
        ensure!(
            begun.elapsed() < Duration::from_secs(60),
            "exec with a background child took {:?}",
            begun.elapsed()
        );

        let metrics = ctrd.ctr_ok(&["task", "metrics", &id])?;
        ensure!(
            metrics.contains("pids.current") && metrics.contains("memory"),
            "metrics: {metrics}"
        );

        ctrd.ctr_ok(&["task", "pause", &id])?;
        ensure!(task_status(ctrd, &id)? == "PAUSED");
        ctrd.ctr_ok(&["task", "resume", &id])?;
        ensure!(task_status(ctrd, &id)? == "RUNNING");

        ctrd.ctr_ok(&["task", "kill", "-s", "SIGKILL", &id])?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while task_status(ctrd, &id)? != "STOPPED" {
            ensure!(Instant::now() < deadline, "task not stopped after SIGKILL");
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = ctrd.ctr(&["task", "delete", &id])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(stderr.contains("137"), "delete should report exit code 137: {stderr}");
        Ok(())
    })();
    let _ = ctrd.ctr(&["task", "delete", "-f", &id]);
    let removed = ctrd.ctr_ok(&["container", "delete", &id]);
    result?;
    removed?;
    ctrd.assert_gone(&[&id])
}

/// `ctr run -d` then `ctr task attach`: output produced after attaching reaches ctr.
pub fn ctr_run_detached_then_attach(ctrd: &Containerd) -> Result<()> {
    let id = unique_name("attach");
    // The task prints until the test, having read a line through attach, creates
    // /attached in its root: attach is then known to be connected, whatever the load (a
    // fixed `sleep 1` before the output lost it once attach took longer in a loaded VM).
    // Bounded (60 s), so a broken attach fails the test rather than hanging it.
    ctr_peapod_run_detached(
        ctrd,
        &id,
        "i=0; while [ ! -e /attached ] && [ $i -lt 600 ]; do echo attached-output; sleep 0.1; i=$((i+1)); done; \
         echo last-line; exit 6",
    )?;
    let result = (|| {
        let mut attach = ctrd.ctr_spawn(&["task", "attach", &id])?;
        let mut stdout = BufReader::new(attach.stdout.take().context("attach stdout")?);
        let mut first = String::new();
        stdout.read_line(&mut first).context("read attach stdout")?;
        let pid = task_pid(ctrd, &id)?;
        let told = fs::write(format!("/proc/{pid}/root/attached"), "").context("create /attached in the task's root");
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).context("read attach stdout")?;
        let status = attach.wait().context("wait for ctr task attach")?;
        told?;
        ensure!(first.trim() == "attached-output", "attach's first line {first:?}");
        ensure!(
            rest.trim_end().ends_with("last-line"),
            "attach stdout after the first line {rest:?}"
        );
        ensure!(status.code() == Some(6), "attach exit {status:?}");
        Ok(())
    })();
    let _ = ctrd.ctr(&["task", "delete", &id]);
    let removed = ctrd.ctr_ok(&["container", "delete", &id]);
    result?;
    removed?;
    ctrd.assert_gone(&[&id])
}

/// A pod with a sandbox and two containers runs in exactly one shim, which exits once
/// the pod is removed.
pub fn one_shim_per_pod_exits_after_removal(ctrd: &Containerd) -> Result<()> {
    let cri = ctrd.cri()?;
    let pod = Pod::run(ctrd, &cri, "oneshim", PEAPOD_HANDLER)?;
    let result = (|| {
        let a = pod.start(&cri, &container_config("a", &["sleep", "3600"]))?;
        let b = pod.start(&cri, &container_config("b", &["sleep", "3600"]))?;
        let shims = peapod_shims(ctrd);
        let for_pod: Vec<_> = shims.iter().filter(|(_, id)| [&pod.id, &a, &b].contains(&id)).collect();
        ensure!(
            for_pod.len() == 1 && for_pod[0].1 == pod.id,
            "want one shim (-id {}) for the pod, have {for_pod:?}",
            pod.id
        );
        Ok((for_pod[0].0, vec![a, b]))
    })();
    // The shim must exit before the leak check, which would find it still running.
    let (shim_pid, ids) = pod.remove_after(&cri, result)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{shim_pid}")).exists() {
        ensure!(
            Instant::now() < deadline,
            "shim {shim_pid} still runs after RemovePodSandbox"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure!(
        !ctrd.shim_socket(K8S_NAMESPACE, &pod.id).exists(),
        "the pod's shim socket is left behind"
    );
    ctrd.assert_gone(&[&pod.id, &ids[0], &ids[1]])
}

pub(crate) fn fresh_containerd() -> Result<Containerd> {
    let ctrd = Containerd::start()?;
    ctrd.import_images()?;
    Ok(ctrd)
}

pub(crate) fn finish_instance(ctrd: Containerd, result: Result<()>) -> Result<()> {
    let result = result.map_err(|e| anyhow::anyhow!("{e:#}\nthis test's containerd log tail:\n{}", ctrd.log_tail()));
    let leftovers = ctrd.assert_no_leftovers();
    let stopped = ctrd.stop();
    result?;
    leftovers?;
    stopped
}

/// containerd restarted while a pod runs: containers keep running, and exec, stop and
/// removal still work afterwards.
pub fn pod_survives_a_containerd_restart(_: &Containerd) -> Result<()> {
    let ctrd = fresh_containerd()?;
    let result = (|| {
        let cri = ctrd.cri()?;
        let pod = Pod::run(&ctrd, &cri, "restart", PEAPOD_HANDLER)?;
        let c = pod.start(&cri, &container_config("c", &sh("echo $$ > /tmp/pid; sleep 3600")))?;
        let before = exec_ok(&cri, &c, &["cat", "/proc/1/stat"])?;
        ctrd.restart(|| Ok(()))?;
        let cri = ctrd.cri()?;
        let after = exec_ok(&cri, &c, &["cat", "/proc/1/stat"])?;
        let start_time = |s: &str| s.split_whitespace().nth(21).map(str::to_string);
        ensure!(start_time(&before) == start_time(&after), "the container restarted");
        cri.stop_container(&c, Duration::from_secs(2))?;
        pod.remove(&cri)?;
        ctrd.assert_gone(&[&pod.id, &c])
    })();
    finish_instance(ctrd, result)
}

/// A container that exits while containerd is down is reported, with its exit code,
/// once containerd is back.
pub fn exit_while_containerd_is_down_is_reported(_: &Containerd) -> Result<()> {
    let ctrd = fresh_containerd()?;
    let result = (|| {
        let cri = ctrd.cri()?;
        let pod = Pod::run(&ctrd, &cri, "downexit", PEAPOD_HANDLER)?;
        let c = pod.start(
            &cri,
            &container_config(
                "c",
                &sh("while [ ! -p /tmp/go-fifo ]; do sleep 0.1; done; read x < /tmp/go-fifo; exit 5"),
            ),
        )?;
        // A FIFO the container blocks on, opened from the host while containerd is down.
        exec_ok(&cri, &c, &["mkfifo", "/tmp/go-fifo"])?;
        let pid = cri
            .container_status(&c, true)?
            .info
            .get("info")
            .and_then(|i| serde_json::from_str::<serde_json::Value>(i).ok())
            .and_then(|v| v["pid"].as_u64())
            .context("no pid in verbose ContainerStatus")?;
        ctrd.restart(|| {
            fs::write(format!("/proc/{pid}/root/tmp/go-fifo"), "go\n")?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::path::Path::new(&format!("/proc/{pid}")).exists() {
                ensure!(
                    Instant::now() < deadline,
                    "container did not exit while containerd was down"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        })?;
        let cri = ctrd.cri()?;
        let status =
            cri::wait_container_state(&cri, &c, api::ContainerState::ContainerExited, Duration::from_secs(20))?;
        ensure!(status.exit_code == 5, "exit code after restart: {}", status.exit_code);
        pod.remove(&cri)?;
        ctrd.assert_gone(&[&pod.id, &c])
    })();
    finish_instance(ctrd, result)
}

/// A SIGKILLed shim: containerd runs `containerd-shim-peapod-v2 delete`, which removes
/// the tasks' processes, cgroups, mounts and state; the pod can still be removed.
pub fn killed_shim_is_cleaned_up_by_delete(_: &Containerd) -> Result<()> {
    let ctrd = fresh_containerd()?;
    let result = (|| {
        let cri = ctrd.cri()?;
        let pod = Pod::run(&ctrd, &cri, "shimkill", PEAPOD_HANDLER)?;
        let c = pod.start(&cri, &container_config("c", &["sleep", "3600"]))?;
        let shims = peapod_shims(&ctrd);
        let (shim_pid, _) = shims
            .iter()
            .find(|(_, id)| *id == pod.id)
            .context("no shim for the pod")?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(*shim_pid)?),
            nix::sys::signal::Signal::SIGKILL,
        )?;
        let status =
            cri::wait_container_state(&cri, &c, api::ContainerState::ContainerExited, Duration::from_secs(20))?;
        // CRI's own task waiter sees the connection close first and records its "unknown"
        // code 255; `delete` answers 137 for the TaskExit containerd then publishes.
        ensure!(
            status.exit_code == 137 || status.exit_code == 255,
            "exit code after the shim died: {}",
            status.exit_code
        );
        let log = fs::read_to_string(ctrd.dir().join("containerd.log"))?;
        ensure!(
            !log.contains("failed to clean up after shim disconnected"),
            "containerd-shim-peapod-v2 delete failed:\n{}",
            ctrd.log_tail()
        );
        // The socket of a SIGKILLed shim may still accept for a moment: `delete` must not
        // take that for a live shim and leave the pod's members to nobody.
        ensure!(
            !log.contains("members are left to it"),
            "delete took the killed shim for a live one:\n{}",
            ctrd.log_tail()
        );
        if log.contains("no shim answered") {
            eprintln!("delete found the killed shim's socket still accepting (handled)");
        }
        pod.remove(&cri)?;
        for id in [&pod.id, &c] {
            let state = format!("/run/peapod/shim/{K8S_NAMESPACE}/containers/{id}");
            ensure!(
                !std::path::Path::new(&state).exists(),
                "peapod state {state} left behind"
            );
        }
        ctrd.assert_gone(&[&pod.id, &c])
    })();
    finish_instance(ctrd, result)
}

pub(crate) fn pod_with(ctrd: &Containerd, cri: &CriClient, name: &str, annotations: &[(&str, &str)]) -> Result<Pod> {
    let mut config = cri::pod_config(ctrd, name)?;
    config
        .annotations
        .extend(annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let id = cri
        .run_pod_sandbox(&config, PEAPOD_HANDLER)
        .with_context(|| format!("run pod {name}"))?;
    let log_dir = std::path::PathBuf::from(&config.log_directory);
    Ok(Pod { id, config, log_dir })
}

pub(crate) fn annotated(name: &str, command: &[&str], annotations: &[(&str, &str)]) -> api::ContainerConfig {
    let mut c = container_config(name, command);
    c.annotations
        .extend(annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    c
}

/// Two containers share one network namespace (one reaches the other on localhost),
/// one IPC namespace and one UTS namespace (the same hostname).
pub fn pod_containers_share_network_ipc_and_hostname(ctrd: &Containerd) -> Result<()> {
    let cri = ctrd.cri()?;
    let pod = Pod::run(ctrd, &cri, "sharing", PEAPOD_HANDLER)?;
    let result = (|| {
        let server = pod.start(
            &cri,
            &container_config(
                "server",
                &sh("mkdir -p /www && echo hello-over-localhost > /www/index.html && httpd -f -p 127.0.0.1:8080 -h /www"),
            ),
        )?;
        let client = pod.start(&cri, &container_config("client", &["sleep", "3600"]))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let body = loop {
            let out = cri.exec_sync(
                &client,
                &["wget", "-q", "-O", "-", "http://127.0.0.1:8080/"],
                // wget fails at once while nothing listens; the time is for a loaded
                // machine (5 s ran out once under a parallel build).
                Duration::from_secs(20),
            )?;
            if out.exit_code == 0 {
                break String::from_utf8_lossy(&out.stdout).into_owned();
            }
            ensure!(
                Instant::now() < deadline,
                "client never reached the server on localhost"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        ensure!(body == "hello-over-localhost\n", "body {body:?}");
        let ns = |id: &str| {
            exec_ok(
                &cri,
                id,
                &sh("readlink /proc/self/ns/net /proc/self/ns/ipc /proc/self/ns/uts; hostname"),
            )
        };
        let (a, b) = (ns(&server)?, ns(&client)?);
        ensure!(a == b, "namespaces or hostname differ:\n{a}\n{b}");
        ensure!(a.ends_with("sharing\n"), "hostname: {a}");
        // POSIX shm: the pod's /dev/shm is one.
        exec_ok(&cri, &server, &sh("echo shared > /dev/shm/seg"))?;
        ensure!(
            exec_ok(&cri, &client, &["cat", "/dev/shm/seg"])? == "shared\n",
            "shm not shared"
        );
        Ok(vec![server, client])
    })();
    pod.remove_and_check_gone(ctrd, &cri, result)?;
    Ok(())
}

/// emptyDir volumes declared on the sandbox: a writer and a reader share a disk one and
/// a Memory one; the Memory one is a single tmpfs of the size limit; both are gone after
/// RemovePodSandbox.
pub fn empty_dirs_are_shared_and_removed_with_the_pod(ctrd: &Containerd) -> Result<()> {
    let cri = ctrd.cri()?;
    let dirs = r#"[{"name":"disk"},{"name":"mem","medium":"Memory","sizeLimit":"8Mi"}]"#;
    let pod = pod_with(ctrd, &cri, "emptydir", &[("io.peapod.empty-dirs", dirs)])?;
    let mounts = r#"[{"name":"disk","mountPath":"/disk"},{"name":"mem","mountPath":"/mem"}]"#;
    let ro_mounts = r#"[{"name":"disk","mountPath":"/disk","readOnly":true},{"name":"mem","mountPath":"/mem"}]"#;
    let host_volume = std::path::PathBuf::from(format!("/run/peapod/shim/{K8S_NAMESPACE}/pods/{}/volumes/mem", pod.id));
    let result = (|| {
        let writer = pod.start(
            &cri,
            &annotated(
                "writer",
                &sh("echo on-disk > /disk/f; echo in-memory > /mem/f; sleep 3600"),
                &[("io.peapod.volume-mounts", mounts)],
            ),
        )?;
        let reader = pod.start(
            &cri,
            &annotated("reader", &["sleep", "3600"], &[("io.peapod.volume-mounts", ro_mounts)]),
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let seen = loop {
            let out = cri.exec_sync(&reader, &["cat", "/disk/f", "/mem/f"], Duration::from_secs(20))?;
            if out.exit_code == 0 {
                break String::from_utf8_lossy(&out.stdout).into_owned();
            }
            ensure!(Instant::now() < deadline, "reader never saw the writer's files");
            std::thread::sleep(Duration::from_millis(100));
        };
        ensure!(seen == "on-disk\nin-memory\n", "reader saw {seen:?}");
        let ro = cri.exec_sync(&reader, &sh("touch /disk/x"), Duration::from_secs(20))?;
        ensure!(ro.exit_code != 0, "readOnly mount was writable");
        // One tmpfs on the host, sized 8 MiB, seen by both containers.
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
        let host = mountinfo
            .lines()
            .filter(|l| l.split(' ').nth(4) == Some(&*host_volume.to_string_lossy()))
            .collect::<Vec<_>>();
        ensure!(
            host.len() == 1 && host[0].contains("tmpfs") && host[0].contains("size=8192k"),
            "host mounts: {host:?}"
        );
        for id in [&writer, &reader] {
            let df = exec_ok(&cri, id, &sh("grep ' /mem ' /proc/mounts"))?;
            ensure!(df.contains("tmpfs") && df.contains("size=8192k"), "{id}: {df}");
        }
        Ok(vec![writer, reader])
    })();
    pod.remove_and_check_gone(ctrd, &cri, result)?;
    ensure!(!host_volume.exists(), "Memory volume left at {}", host_volume.display());
    let disk = format!("/var/lib/peapod/shim/{K8S_NAMESPACE}/pods/{}", pod.id);
    ensure!(!std::path::Path::new(&disk).exists(), "disk volume left at {disk}");
    ensure!(
        !fs::read_to_string("/proc/self/mountinfo")?.contains(&pod.id),
        "a mount of the pod is left"
    );
    Ok(())
}

fn read_cgroup(controller: &str, path: &str, file: &str) -> Result<String> {
    let p = peapod_tests::cgroup_file(controller, path.trim_start_matches('/'), file);
    Ok(fs::read_to_string(&p)
        .with_context(|| format!("read {}", p.display()))?
        .trim()
        .to_string())
}

/// The pod cgroup (the sandbox's parent) gets the pod's limits; container cgroups nest
/// under it with kubelet-style values.
pub fn pod_cgroup_holds_the_pod_limits(ctrd: &Containerd) -> Result<()> {
    let cri = ctrd.cri()?;
    let pod = pod_with(
        ctrd,
        &cri,
        "podcg",
        &[
            ("io.peapod.pod-cpu-limit", "500m"),
            ("io.peapod.pod-memory-limit", "128Mi"),
        ],
    )?;
    let parent = pod.cgroup_parent();
    let result = (|| {
        let mut c = container_config("c", &["sleep", "3600"]);
        c.linux.get_or_insert_with(Default::default).resources = Some(api::LinuxContainerResources {
            cpu_shares: 256,
            cpu_quota: 20_000,
            cpu_period: 100_000,
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        });
        let id = pod.start(&cri, &c)?;
        let v2 = sandbox::cgroups::is_v2();
        let child = format!("{parent}/{id}");
        if v2 {
            ensure!(read_cgroup("", &parent, "memory.max")? == (128u64 << 20).to_string());
            ensure!(read_cgroup("", &parent, "cpu.max")? == "50000 100000");
            ensure!(read_cgroup("", &child, "memory.max")? == (64u64 << 20).to_string());
            ensure!(read_cgroup("", &child, "cpu.max")? == "20000 100000");
            ensure!(read_cgroup("", &child, "cpu.weight")? == sandbox::cgroups::shares_to_weight(256).to_string());
        } else {
            ensure!(read_cgroup("memory", &parent, "memory.limit_in_bytes")? == (128u64 << 20).to_string());
            ensure!(read_cgroup("cpu", &parent, "cpu.cfs_quota_us")? == "50000");
            ensure!(read_cgroup("memory", &child, "memory.limit_in_bytes")? == (64u64 << 20).to_string());
            ensure!(read_cgroup("cpu", &child, "cpu.cfs_quota_us")? == "20000");
            ensure!(read_cgroup("cpu", &child, "cpu.shares")? == "256");
        }
        let procs = read_cgroup("memory", &child, "cgroup.procs")?;
        ensure!(!procs.is_empty(), "no process in the container cgroup");
        Ok(id)
    })();
    pod.remove_and_check_gone(ctrd, &cri, result)?;
    ensure!(
        !peapod_tests::cgroup_file("memory", parent.trim_start_matches('/'), "").exists(),
        "pod cgroup {parent} left behind"
    );
    Ok(())
}

/// The kubelet creates and sizes the pod cgroup (`cgroup_parent`) before
/// `RunPodSandbox`; peapod's pod sizing annotations, which the pod's author writes, must
/// not loosen it: a pod asking for 1Gi and 4 CPUs under a kubelet-made 64Mi, 0.2 CPU pod
/// cgroup keeps the kubelet's limits (peapod writes nothing to a cgroup it did not create).
pub fn pod_annotations_do_not_loosen_the_kubelets_pod_cgroup(ctrd: &Containerd) -> Result<()> {
    let cri = ctrd.cri()?;
    let mut config = cri::pod_config(ctrd, "kubeletcg")?;
    let parent = config.linux.as_ref().context("linux")?.cgroup_parent.clone();
    // The kubelet's part: the pod cgroup, sized.
    let kubelets = oci_spec::runtime::LinuxResourcesBuilder::default()
        .memory(
            oci_spec::runtime::LinuxMemoryBuilder::default()
                .limit(64 << 20)
                .build()?,
        )
        .cpu(
            oci_spec::runtime::LinuxCpuBuilder::default()
                .quota(20_000)
                .period(100_000u64)
                .build()?,
        )
        .build()?;
    sandbox::cgroups::Cgroup::create(parent.trim_start_matches('/'), Some(&kubelets), None)?;
    config.annotations.extend(
        [("io.peapod.pod-memory-limit", "1Gi"), ("io.peapod.pod-cpu-limit", "4")]
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let pod = match cri.run_pod_sandbox(&config, PEAPOD_HANDLER) {
        Ok(id) => Pod {
            id,
            log_dir: std::path::PathBuf::from(&config.log_directory),
            config,
        },
        Err(e) => {
            let _ = peapod_tests::containerd::remove_cgroup(&parent);
            return Err(e).context("run pod kubeletcg");
        }
    };
    let result = (|| {
        let id = pod.start(&cri, &container_config("c", &["sleep", "3600"]))?;
        let (memory, cpu) = if sandbox::cgroups::is_v2() {
            (
                read_cgroup("", &parent, "memory.max")?,
                read_cgroup("", &parent, "cpu.max")?,
            )
        } else {
            (
                read_cgroup("memory", &parent, "memory.limit_in_bytes")?,
                read_cgroup("cpu", &parent, "cpu.cfs_quota_us")?,
            )
        };
        let want_cpu = if sandbox::cgroups::is_v2() {
            "20000 100000"
        } else {
            "20000"
        };
        ensure!(
            memory == (64u64 << 20).to_string() && cpu == want_cpu,
            "the kubelet's pod cgroup {parent} was loosened by the pod's annotations: memory {memory}, cpu {cpu} (want {}, {want_cpu})",
            64u64 << 20
        );
        Ok(id)
    })();
    // Pod::remove removes the pod cgroup as the kubelet does.
    pod.remove_and_check_gone(ctrd, &cri, result)?;
    Ok(())
}

/// All containers created first, then started at once (CRI StartContainer calls in
/// parallel, in any order): init containers run one by one to success, the sidecar
/// starts before any app, and the apps start together. The sandbox declares the order.
pub fn init_then_sidecar_then_apps_when_started_at_once(ctrd: &Containerd) -> Result<()> {
    let cri = ctrd.cri()?;
    let declared = r#"[{"name":"init1","role":"init"},{"name":"init2","role":"init"},{"name":"side","role":"sidecar"},{"name":"app1","role":"app"},{"name":"app2","role":"app"}]"#;
    let pod = pod_with(
        ctrd,
        &cri,
        "order",
        &[
            ("io.peapod.empty-dirs", r#"[{"name":"t"}]"#),
            ("io.peapod.containers", declared),
        ],
    )?;
    let mount = ("io.peapod.volume-mounts", r#"[{"name":"t","mountPath":"/t"}]"#);
    let stamp = |name: &str, then: &str| format!("{NOW_US}; echo \"{name} start $(now_us)\" >> /t/log; {then}");
    let specs = [
        (
            "init1",
            "init",
            stamp("init1", "sleep 0.5; echo \"init1 end $(now_us)\" >> /t/log"),
        ),
        (
            "init2",
            "init",
            stamp("init2", "sleep 0.3; echo \"init2 end $(now_us)\" >> /t/log"),
        ),
        (
            "side",
            "sidecar",
            stamp("side", "sleep 0.5; echo \"side ready $(now_us)\" >> /t/log; sleep 3600"),
        ),
        ("app1", "app", stamp("app1", "sleep 3600")),
        ("app2", "app", stamp("app2", "sleep 3600")),
    ];
    let result = (|| {
        let mut ids = Vec::new();
        for (name, role, script) in &specs {
            let c = annotated(name, &sh(script), &[("io.peapod.role", role), mount]);
            ids.push(pod.create(&cri, &c)?);
        }
        // Start them all at once, as a pod's containers are: the shim orders them.
        let starts: Vec<_> = ids
            .iter()
            .map(|id| {
                let id = id.clone();
                let address = ctrd.address();
                std::thread::spawn(move || CriClient::connect(address).and_then(|c| c.start_container(&id)))
            })
            .collect();
        for s in starts {
            s.join().expect("start thread")?;
        }
        let log_of = || exec_ok(&cri, &ids[4], &["cat", "/t/log"]);
        let deadline = Instant::now() + Duration::from_secs(20);
        let log = loop {
            let log = log_of()?;
            if log.lines().count() >= 8 {
                break log;
            }
            ensure!(Instant::now() < deadline, "log incomplete: {log}");
            std::thread::sleep(Duration::from_millis(100));
        };
        let t: HashMap<String, u64> = log
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((format!("{} {}", f.first()?, f.get(1)?), f.get(2)?.parse().ok()?))
            })
            .collect();
        let at = |k: &str| t.get(k).copied().with_context(|| format!("no {k:?} in {log}"));
        ensure!(
            at("init1 end")? <= at("init2 start")?,
            "init2 started before init1 ended:\n{log}"
        );
        ensure!(
            at("init2 end")? <= at("side start")?,
            "sidecar started before the inits ended:\n{log}"
        );
        // KEP-753 (and the shim) start an app only after the sidecar's process was exec'd,
        // not after its first command ran: an app's first stamp may precede the sidecar's
        // by at most the sidecar shell's own start-up (a few ms; more under emulation).
        let slack_us = if std::env::var_os("PEAPOD_TEST_VM").is_some() {
            500_000
        } else {
            50_000
        };
        for app in ["app1 start", "app2 start"] {
            ensure!(
                at("side start")? <= at(app)? + slack_us,
                "{app} before the sidecar:\n{log}"
            );
        }
        let spread = at("app1 start")?.abs_diff(at("app2 start")?);
        ensure!(
            spread < 500_000,
            "apps started {spread} µs apart: they must not wait for each other\n{log}"
        );
        for (id, (name, role, _)) in ids.iter().zip(&specs) {
            let s = cri.container_status(id, false)?.status.context("status")?;
            if *role == "init" {
                ensure!(
                    s.state == api::ContainerState::ContainerExited as i32 && s.exit_code == 0,
                    "{name}: {s:?}"
                );
            } else {
                ensure!(
                    s.state == api::ContainerState::ContainerRunning as i32,
                    "{name} not running"
                );
            }
        }
        Ok(ids)
    })();
    pod.remove_and_check_gone(ctrd, &cri, result)?;
    Ok(())
}

/// A failed init container makes later Starts fail with FailedPrecondition naming it.
pub fn failed_init_container_blocks_the_app(ctrd: &Containerd) -> Result<()> {
    let cri = ctrd.cri()?;
    let pod = Pod::run(ctrd, &cri, "initfail", PEAPOD_HANDLER)?;
    let result = (|| {
        let init = pod.create(&cri, &annotated("init", &sh("exit 3"), &[("io.peapod.role", "init")]))?;
        let app = pod.create(&cri, &annotated("app", &["sleep", "3600"], &[]))?;
        cri.start_container(&init)?;
        let err = match cri.start_container(&app) {
            Ok(()) => bail!("the app started although its init container failed"),
            Err(e) => format!("{e:#}"),
        };
        ensure!(
            err.contains("init") && err.contains("exited with code 3"),
            "error: {err}"
        );
        Ok(vec![init, app])
    })();
    pod.remove_and_check_gone(ctrd, &cri, result)?;
    Ok(())
}

/// SIGTERM to the sandbox task: every container gets SIGTERM in the same instant (the
/// shim's measured spread is under 5 ms), the one ignoring it is SIGKILLed at the grace
/// period, then the pause process ends.
pub fn sigterm_reaches_all_containers_at_once(ctrd: &Containerd) -> Result<()> {
    let cri = ctrd.cri()?;
    let grace = Duration::from_secs(2);
    let pod = pod_with(ctrd, &cri, "term", &[("io.peapod.grace-period", "2")])?;
    let mut configs = Vec::new();
    let result = (|| {
        let mut ids = Vec::new();
        // Arrival times go to stdout: CRI keeps the logs until the pod is removed, while
        // the pod's volumes go with the sandbox task.
        for name in ["t1", "t2", "t3"] {
            let script = format!("{NOW_US}; trap 'echo \"{name} $(now_us)\"; exit 0' TERM; sleep 3600 & wait");
            let c = annotated(name, &sh(&script), &[]);
            ids.push(pod.start(&cri, &c)?);
            configs.push(c);
        }
        ids.push(pod.start(
            &cri,
            &annotated("stubborn", &sh("trap '' TERM; sleep 3600 & wait; sleep 3600"), &[]),
        )?);
        for id in &ids {
            cri::wait_container_state(&cri, id, api::ContainerState::ContainerRunning, Duration::from_secs(10))?;
        }
        std::thread::sleep(Duration::from_millis(300));
        let begun = Instant::now();
        ctrd.ctr_ok(&["-n", K8S_NAMESPACE, "task", "kill", &pod.id])?;
        let stubborn = cri::wait_container_state(
            &cri,
            &ids[3],
            api::ContainerState::ContainerExited,
            Duration::from_secs(30),
        )?;
        let killed_after = begun.elapsed();
        ensure!(stubborn.exit_code == 137, "stubborn exit code {}", stubborn.exit_code);
        // ±0.5 s on real CPUs; under TCG emulation `ctr` itself takes seconds to start.
        let slack = if std::env::var_os("PEAPOD_TEST_VM").is_some() {
            Duration::from_secs(6)
        } else {
            Duration::from_millis(1500)
        };
        ensure!(
            killed_after >= grace - Duration::from_millis(500) && killed_after <= grace + slack,
            "SIGKILL after {killed_after:?}, grace period {grace:?}"
        );
        for id in &ids[..3] {
            let s = cri::wait_container_state(&cri, id, api::ContainerState::ContainerExited, Duration::from_secs(10))?;
            ensure!(
                s.exit_code == 0,
                "{id} exit code {} (its trap should exit 0)",
                s.exit_code
            );
        }
        // Then the pause process ends (CRI notices asynchronously).
        pod.wait_not_ready(
            &cri,
            Duration::from_secs(10),
            "the pause process still runs after its containers ended",
        )?;
        let mut log = Vec::new();
        for c in &configs {
            log.extend(cri::read_log(&pod.log_path(c))?.into_iter().map(|l| l.message));
        }
        let times: Vec<u64> = log
            .iter()
            .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
            .collect();
        ensure!(times.len() == 3, "trap log: {log:?}");
        let spread_us = ctrd.check_sigterms_sent_at_once(&pod.id)?;
        let trap_spread = times.iter().max().unwrap() - times.iter().min().unwrap();
        eprintln!("SIGTERM delivery spread {spread_us} µs (shim), trap arrival spread {trap_spread} µs");
        ensure!(trap_spread < 250_000, "trap arrival spread {trap_spread} µs: {log:?}");
        Ok(ids)
    })();
    pod.remove_and_check_gone(ctrd, &cri, result)?;
    Ok(())
}

/// kubelet writes the pod's `terminationGracePeriodSeconds` on each container
/// (`io.kubernetes.pod.terminationGracePeriod`), not on the sandbox: a SIGTERM to the
/// sandbox task of such a pod SIGKILLs a container that ignores it at that grace, not at
/// the 30 s default.
pub fn kubelet_grace_on_containers_is_the_pods_grace(ctrd: &Containerd) -> Result<()> {
    let cri = ctrd.cri()?;
    let grace = Duration::from_secs(2);
    let pod = Pod::run(ctrd, &cri, "kgrace", PEAPOD_HANDLER)?;
    let result = (|| {
        let kubelet = [("io.kubernetes.pod.terminationGracePeriod", "2")];
        let polite = pod.start(
            &cri,
            &annotated("polite", &sh("trap 'exit 0' TERM; sleep 3600 & wait"), &kubelet),
        )?;
        let stubborn = pod.start(
            &cri,
            &annotated("stubborn", &sh("trap '' TERM; sleep 3600 & wait; sleep 3600"), &kubelet),
        )?;
        let ids = vec![polite, stubborn];
        for id in &ids {
            cri::wait_container_state(&cri, id, api::ContainerState::ContainerRunning, Duration::from_secs(10))?;
        }
        let begun = Instant::now();
        ctrd.ctr_ok(&["-n", K8S_NAMESPACE, "task", "kill", &pod.id])?;
        // Well below the 30 s default: what it would wait without the containers' value.
        let s = cri::wait_container_state(
            &cri,
            &ids[1],
            api::ContainerState::ContainerExited,
            Duration::from_secs(20),
        )?;
        let killed_after = begun.elapsed();
        ensure!(s.exit_code == 137, "stubborn exit code {}", s.exit_code);
        ensure!(
            killed_after >= grace - Duration::from_millis(500),
            "SIGKILL after {killed_after:?}, before the grace period {grace:?}"
        );
        let s = cri::wait_container_state(
            &cri,
            &ids[0],
            api::ContainerState::ContainerExited,
            Duration::from_secs(10),
        )?;
        ensure!(s.exit_code == 0, "polite exit code {} (its trap exits 0)", s.exit_code);
        Ok(ids)
    })();
    pod.remove_and_check_gone(ctrd, &cri, result)?;
    Ok(())
}

/// Bad pod input fails with an error naming the field, and creates nothing.
pub fn bad_pod_input_is_refused_and_leaves_nothing(ctrd: &Containerd) -> Result<()> {
    let cri = ctrd.cri()?;
    let mut config = cri::pod_config(ctrd, "badpod")?;
    config
        .annotations
        .insert("io.peapod.pod-memory-limit".into(), "lots".into());
    let err = match cri.run_pod_sandbox(&config, PEAPOD_HANDLER) {
        Ok(id) => {
            let _ = cri.stop_pod_sandbox(&id);
            let _ = cri.remove_pod_sandbox(&id);
            bail!("a pod with memory limit \"lots\" was created")
        }
        Err(e) => format!("{e:#}"),
    };
    ensure!(err.contains("io.peapod.pod-memory-limit"), "error: {err}");
    ensure!(
        cri.list_pod_sandbox(None)?.iter().all(|p| p
            .metadata
            .as_ref()
            .is_none_or(|m| m.name != config.metadata.as_ref().unwrap().name)
            || p.state != api::PodSandboxState::SandboxReady as i32),
        "a ready sandbox exists for the refused pod"
    );

    // A sidecar naming a sandbox that does not exist.
    let orphan = unique_name("orphan");
    let missing = unique_name("no-such-sandbox");
    let annotation = format!("io.kubernetes.cri.sandbox-id={missing}");
    let out = ctrd.ctr(&[
        "run",
        "--rm",
        "--runtime",
        PEAPOD_RUNTIME,
        "--annotation",
        &annotation,
        "--annotation",
        "io.peapod.role=sidecar",
        BUSYBOX_IMAGE,
        &orphan,
        "true",
    ])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "a sidecar of a missing sandbox ran");
    ensure!(
        stderr.contains(&missing) && stderr.contains("does not exist"),
        "error: {stderr}"
    );
    let _ = ctrd.ctr(&["container", "delete", &orphan]);
    ctrd.assert_gone(&[&orphan])?;

    let pod = Pod::run(ctrd, &cri, "badctr", PEAPOD_HANDLER)?;
    let result = (|| {
        let cases = [
            (
                annotated("role", &["true"], &[("io.peapod.role", "helper")]),
                "io.peapod.role",
            ),
            (
                annotated(
                    "vol",
                    &["true"],
                    &[("io.peapod.volume-mounts", r#"[{"name":"nope","mountPath":"/x"}]"#)],
                ),
                "no volume \"nope\"",
            ),
        ];
        for (c, want) in cases {
            match pod.start(&cri, &c) {
                Ok(id) => bail!("container {id} was created despite {want}"),
                Err(e) => ensure!(format!("{e:#}").contains(want), "error for {want}: {e:#}"),
            }
        }
        let listed = pod.containers(&cri)?;
        ensure!(
            listed
                .iter()
                .all(|c| c.state != api::ContainerState::ContainerRunning as i32),
            "a refused container runs: {listed:?}"
        );
        Ok(())
    })();
    pod.remove_and_check_gone(ctrd, &cri, result)?;
    Ok(())
}
