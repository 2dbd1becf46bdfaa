//! Probes and lifecycle hooks through `peapod run` (`examples/probes.yaml`): run by the
//! embedded mode's shim with kubelet's rules, seen through `get`, `describe` and `-o
//! json`; refused in CRI mode.

use anyhow::{ensure, Context, Result};

use crate::pods::{delete_and_check, example, uid_of, Cli, Mode};

/// A container's status in `get -o json`: (started, ready, restartCount).
fn container(cli: &Cli, pod: &str, name: &str) -> Result<(bool, bool, i64)> {
    let v = cli.pod_json(pod)?;
    let s = v["status"]["containerStatuses"]
        .as_array()
        .context("containerStatuses")?
        .iter()
        .find(|s| s["name"] == name)
        .with_context(|| format!("no status for {name}"))?
        .clone();
    Ok((
        s["started"].as_bool().unwrap_or(false),
        s["ready"].as_bool().unwrap_or(false),
        s["restartCount"].as_i64().unwrap_or(-1),
    ))
}

/// The pod's condition `kind`: (status, lastTransitionTime).
fn condition(cli: &Cli, pod: &str, kind: &str) -> Result<(String, Option<String>)> {
    let v = cli.pod_json(pod)?;
    let c = v["status"]["conditions"]
        .as_array()
        .context("conditions")?
        .iter()
        .find(|c| c["type"] == kind)
        .with_context(|| format!("no condition {kind}"))?
        .clone();
    Ok((
        c["status"].as_str().unwrap_or_default().to_string(),
        c["lastTransitionTime"].as_str().map(str::to_string),
    ))
}

/// Startup probes hold back readiness and liveness; readiness follows an exec probe
/// (READY 0/2 → 1/2 → 2/2, the Ready condition with its transition time); a failing
/// httpGet liveness probe kills and restarts the container, with kubelet's events.
pub fn probes_gate_readiness_and_restart_the_unhealthy() -> Result<()> {
    let cli = Cli::new(Mode::Embedded)?;
    cli.ok(&["run", "-f", example("probes").to_str().context("path")?])?;
    let uid = uid_of(&cli, "probes")?;
    let result = (|| {
        // web starts once httpd listens (tcpSocket), but is not ready without /tmp/ready;
        // slow is neither started nor ready while its startup probe fails.
        cli.wait_for("web started", || Ok(container(&cli, "probes", "web")?.0.then_some(())))?;
        std::thread::sleep(std::time::Duration::from_secs(2));
        let (web, slow) = (container(&cli, "probes", "web")?, container(&cli, "probes", "slow")?);
        ensure!(web == (true, false, 0), "web (started, ready, restarts): {web:?}");
        ensure!(slow == (false, false, 0), "slow (started, ready, restarts): {slow:?}");
        let row = cli.row("probes")?;
        ensure!(row.0 == "0/2" && row.1 == "Running", "get pods: {row:?}");
        ensure!(condition(&cli, "probes", "Ready")?.0 == "False");

        cli.ok(&["exec", "probes", "-c", "web", "--", "touch", "/tmp/ready"])?;
        cli.wait_for("READY 1/2", || Ok((cli.row("probes")?.0 == "1/2").then_some(())))?;
        ensure!(
            !container(&cli, "probes", "slow")?.1,
            "slow ready before its startup probe passed"
        );

        cli.ok(&["exec", "probes", "-c", "slow", "--", "touch", "/tmp/started"])?;
        cli.wait_for("READY 2/2", || Ok((cli.row("probes")?.0 == "2/2").then_some(())))?;
        let (ready, since) = condition(&cli, "probes", "Ready")?;
        ensure!(ready == "True", "Ready condition: {ready}");
        let since: jiff::Timestamp = since.context("Ready has no lastTransitionTime")?.parse()?;
        let age = jiff::Timestamp::now().duration_since(since);
        ensure!(
            age.as_secs() >= 0 && age.as_secs() < 30,
            "Ready's lastTransitionTime {since} is not the recent transition"
        );
        ensure!(condition(&cli, "probes", "ContainersReady")?.1.is_some());

        // Liveness: /healthz gone → 404 twice → killed and restarted.
        cli.ok(&["exec", "probes", "-c", "web", "--", "rm", "/www/healthz"])?;
        cli.wait_for("web's restart", || {
            Ok((container(&cli, "probes", "web")?.2 == 1).then_some(()))
        })?;
        let d = cli.ok(&["describe", "pod", "probes"])?;
        for want in [
            "Liveness:       http-get http://:8080/healthz delay=0s timeout=1s period=1s #success=1 #failure=2",
            "Readiness:      exec [cat /tmp/ready] delay=0s timeout=1s period=1s #success=1 #failure=3",
            "Startup:        tcp-socket :8080",
            "Unhealthy",
            "Liveness probe failed: HTTP probe failed with statuscode: 404",
            "Container web failed liveness probe, will be restarted",
            "Readiness probe failed: cat: can't open '/tmp/ready': No such file or directory",
        ] {
            ensure!(d.contains(want), "describe lacks {want:?}:\n{d}");
        }
        // The restarted web serves again (its command writes /www/healthz anew) and stays.
        cli.wait_for("web started again", || {
            let (started, _, restarts) = container(&cli, "probes", "web")?;
            Ok((started && restarts == 1).then_some(()))
        })?;
        std::thread::sleep(std::time::Duration::from_secs(3));
        ensure!(
            container(&cli, "probes", "web")?.2 == 1,
            "web restarted again: its liveness probe should pass"
        );
        Ok(())
    })();
    let deleted = delete_and_check(&cli, "probes", &uid);
    result?;
    deleted
}

/// In CRI mode nothing would run the probes (the CLI is no kubelet): refused by name,
/// before anything exists.
pub fn probes_are_refused_in_cri_mode() -> Result<()> {
    let cli = Cli::new(Mode::Cri)?;
    let out = cli.run(&["run", "-f", example("probes").to_str().context("path")?])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "run with probes succeeded under CRI");
    ensure!(
        err.contains("container \"web\": livenessProbe: probes and lifecycle hooks run only in embedded mode"),
        "error: {err}"
    );
    ensure!(
        cli.ok(&["get", "pods"])?.lines().all(|l| !l.starts_with("probes ")),
        "a pod was listed"
    );
    cli.assert_no_runtime_leftovers()
}

/// The pid of pod `uid`'s process running `cmdline` (NUL-separated words, as
/// `/proc/PID/cmdline` has them).
fn pod_process(uid: &str, cmdline: &str) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_string_lossy().parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let cgroup = std::fs::read_to_string(e.path().join("cgroup")).ok()?;
        (cmd == cmdline.as_bytes() && cgroup.contains(&format!("pod-{uid}"))).then_some(pid)
    })
}

/// A gRPC health server (tonic-health, the reference implementation's Rust port) listening
/// on `port` in the network namespace of `pid`, on a thread of its own: `SERVING` until
/// told otherwise through the returned sender (`false`: NOT_SERVING), stopped when the
/// sender is dropped.
fn health_server(pid: i32, port: u16) -> Result<(std::sync::mpsc::Sender<bool>, std::thread::JoinHandle<Result<()>>)> {
    let (tx, rx) = std::sync::mpsc::channel::<bool>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
    let handle = std::thread::spawn(move || -> Result<()> {
        let setup = (|| -> Result<std::net::TcpListener> {
            let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let l = std::net::TcpListener::bind(("0.0.0.0", port))?;
            l.set_nonblocking(true)?;
            Ok(l)
        })();
        let listener = match setup {
            Ok(l) => {
                let _ = ready_tx.send(Ok(()));
                l
            }
            Err(e) => {
                let _ = ready_tx.send(Err(anyhow::anyhow!("{e:#}")));
                return Ok(());
            }
        };
        // A current-thread runtime: everything runs on this thread, in the pod's netns.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async move {
            let (reporter, service) = tonic_health::server::health_reporter();
            reporter
                .set_service_status("", tonic_health::ServingStatus::Serving)
                .await;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            // Commands from the test, forwarded from a blocking receiver.
            let (cmd_tx, mut cmd_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
            std::thread::spawn(move || {
                for serving in rx {
                    if cmd_tx.send(serving).is_err() {
                        return;
                    }
                }
            });
            tokio::spawn(async move {
                while let Some(serving) = cmd_rx.recv().await {
                    let status = if serving {
                        tonic_health::ServingStatus::Serving
                    } else {
                        tonic_health::ServingStatus::NotServing
                    };
                    reporter.set_service_status("", status).await;
                }
                let _ = stop_tx.send(());
            });
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), async {
                    let _ = stop_rx.await;
                })
                .await?;
            Ok(())
        })
    });
    ready_rx.recv()??;
    Ok((tx, handle))
}

/// A grpc readiness probe against a real gRPC health server in the pod's network
/// namespace: SERVING makes the container ready, NOT_SERVING unready, with kubelet's
/// message in describe.
pub fn grpc_probe_follows_a_real_health_server() -> Result<()> {
    const PORT: u16 = 50_551;
    let cli = Cli::new(Mode::Embedded)?;
    let manifest = cli.dir.path().join("grpc.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: grpc}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sleep, '3517']\n    readinessProbe: {{grpc: {{port: {PORT}}}, periodSeconds: 1, failureThreshold: 1}}\n"
        ),
    )?;
    cli.ok(&["run", "-f", manifest.to_str().context("path")?])?;
    let uid = uid_of(&cli, "grpc")?;
    let result = (|| {
        // Nothing listens yet: not ready, and the refused connection is the message.
        std::thread::sleep(std::time::Duration::from_secs(2));
        ensure!(cli.row("grpc")?.0 == "0/1", "ready with no server");
        let pid = cli.wait_for("the app's process", || Ok(pod_process(&uid, "sleep\u{0}3517\u{0}")))?;
        let (tx, server) = health_server(pid, PORT)?;
        let checked = (|| {
            cli.wait_for("READY 1/1", || Ok((cli.row("grpc")?.0 == "1/1").then_some(())))?;
            tx.send(false)?;
            cli.wait_for("READY 0/1", || Ok((cli.row("grpc")?.0 == "0/1").then_some(())))?;
            let d = cli.ok(&["describe", "pod", "grpc"])?;
            for want in [
                "Readiness probe failed: error: failed to connect service at",
                "Readiness probe failed: service unhealthy (responded with \"NOT_SERVING\")",
            ] {
                ensure!(d.contains(want), "describe lacks {want:?}:\n{d}");
            }
            Ok(())
        })();
        drop(tx);
        server
            .join()
            .map_err(|_| anyhow::anyhow!("the health server panicked"))??;
        checked
    })();
    let deleted = delete_and_check(&cli, "grpc", &uid);
    result?;
    deleted
}

/// Lifecycle hooks: postStart runs before the container counts as started (the app waits
/// for the file it writes); a failing postStart kills and restarts its container with
/// kubelet's `FailedPostStartHook`; at deletion preStop runs before the SIGTERM and its
/// time counts against the grace period (SIGKILL at the grace, not the grace after it).
pub fn lifecycle_hooks_run_around_the_container() -> Result<()> {
    let cli = Cli::new(Mode::Embedded)?;
    let out = cli.dir.path().join("out");
    std::fs::create_dir(&out)?;
    let manifest = cli.dir.path().join("hooks.yaml");
    std::fs::write(
        &manifest,
        format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: hooks}}
spec:
  terminationGracePeriodSeconds: 8
  volumes: [{{name: out, hostPath: {{path: {out}}}}}]
  containers:
  - name: app
    image: busybox
    imagePullPolicy: IfNotPresent
    volumeMounts: [{{name: out, mountPath: /out}}]
    command:
    - sh
    - -c
    - |
      while [ ! -f /tmp/hooked ]; do sleep 0.1; done
      echo "saw $(cat /tmp/hooked)"
      trap 'echo "term $(date +%s)" >> /out/log' TERM
      while true; do sleep 0.2; done
    lifecycle:
      postStart: {{exec: {{command: [sh, -c, 'echo from-post-start > /tmp/hooked']}}}}
      preStop: {{exec: {{command: [sh, -c, 'echo "prestop $(date +%s)" >> /out/log; sleep 4']}}}}
  - name: bad
    image: busybox
    imagePullPolicy: IfNotPresent
    volumeMounts: [{{name: out, mountPath: /out}}]
    command: [sleep, '3600']
    lifecycle:
      postStart: {{exec: {{command: [sh, -c, 'echo no; exit 3']}}}}
      preStop: {{exec: {{command: [sh, -c, 'echo prestop >> /out/bad']}}}}
"#,
            out = out.display()
        ),
    )?;
    cli.ok(&["run", "-f", manifest.to_str().context("path")?])?;
    let uid = uid_of(&cli, "hooks")?;
    let result = (|| {
        cli.wait_for("the app to see the hook's file", || {
            Ok(crate::pods::logs(&cli, "hooks", "app")?
                .contains("saw from-post-start")
                .then_some(()))
        })?;
        ensure!(
            container(&cli, "hooks", "app")?.0,
            "app not started after its postStart hook"
        );
        // bad: killed after its hook failed (its preStop, SIGTERM, SIGKILL at the grace, as
        // kubelet's killContainer), then restarted.
        let wait = std::time::Instant::now();
        while container(&cli, "hooks", "bad")?.2 < 1 {
            ensure!(
                wait.elapsed().as_secs() < 60,
                "bad was not restarted after its postStart failed"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let bad = std::fs::read_to_string(out.join("bad")).unwrap_or_default();
        ensure!(
            bad.starts_with("prestop\n"),
            "bad's preStop hook did not run before the kill that its failed postStart called for: {bad:?}"
        );
        let d = cli.ok(&["describe", "pod", "hooks"])?;
        let want = format!(
            "Exec lifecycle hook ([sh -c echo no; exit 3]) for Container \"bad\" in Pod \"hooks_default({uid})\" failed - error: command 'sh -c echo no; exit 3' exited with 3: no"
        );
        ensure!(
            d.contains("FailedPostStartHook") && d.contains(&want),
            "describe lacks {want:?}:\n{d}"
        );
        Ok(())
    })();
    // preStop (4 s) then SIGTERM, which the app ignores: SIGKILL 8 s after the hook began.
    let t0 = std::time::Instant::now();
    let deleted = delete_and_check(&cli, "hooks", &uid);
    let took = t0.elapsed();
    result?;
    deleted?;
    let log = std::fs::read_to_string(out.join("log"))?;
    let times: Vec<(&str, i64)> = log
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(what, t)| Some((what, t.parse().ok()?)))
        .collect();
    ensure!(
        times.len() == 2 && times[0].0 == "prestop" && times[1].0 == "term",
        "want the preStop hook, then the SIGTERM: {log:?}"
    );
    ensure!(
        times[1].1 - times[0].1 >= 4,
        "SIGTERM before the hook returned: {log:?}"
    );
    ensure!(
        took.as_secs_f64() >= 7.0 && took.as_secs_f64() < 11.0,
        "delete took {took:?}: the hook's 4 s must count against the 8 s grace (not 12 s)"
    );
    Ok(())
}
