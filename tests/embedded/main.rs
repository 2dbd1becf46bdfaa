//! The shim without containerd: `containerd-shim-peapod-v2` started and driven through
//! `peapod::embedded` exactly as the `peapod` CLI's embedded mode does.
//!
//! `harness = false`: this binary is also a container init helper (`sandbox::init`).

use peapod_tests::tests;
use std::path::Path;

use anyhow::{ensure, Context, Result};
use oci_spec::runtime::ProcessBuilder;
use peapod::embedded::{Shim, TaskIo};
use peapod_tests::containerd::peapod_shim;
use peapod_tests::{wait_shim_gone, Bundle};

fn sh(script: &str) -> Vec<&str> {
    vec!["sh", "-c", script]
}

fn file_io(dir: &Path, name: &str) -> (TaskIo, std::path::PathBuf) {
    let log = dir.join(format!("{name}.log"));
    let io = TaskIo {
        stdout: format!("file://{}", log.display()),
        stderr: format!("file://{}", log.display()),
        ..Default::default()
    };
    (io, log)
}

fn task_lifecycle_without_containerd() -> Result<()> {
    let b = Bundle::new("emb", &sh("echo hi-from-embedded; exit 4"))?;
    b.write()?;
    let (io, log) = file_io(b.path(), "out");
    let shim = Shim::start(&peapod_shim()?, &b.id, b.path(), None)?;
    let result = (|| {
        let pid = shim.create(&b.id, b.path(), &[], &io)?;
        ensure!(shim.state(&b.id, "")?.pid == pid, "State reports another pid");
        shim.start_task(&b.id, "")?;
        let code = shim.wait(&b.id, "")?;
        ensure!(shim.delete(&b.id, "")? == 4, "Delete's exit status");
        Ok((pid, code))
    })();
    shim.shutdown()?;
    wait_shim_gone(shim.address())?;
    let (pid, code) = result?;
    ensure!(code == 4, "exit status {code}");
    ensure!(
        std::fs::read_to_string(&log)? == "hi-from-embedded\n",
        "log: {:?}",
        std::fs::read_to_string(&log)
    );
    b.assert_clean(Some(nix::unistd::Pid::from_raw(i32::try_from(pid)?)))
}

fn exec_and_kill_without_containerd() -> Result<()> {
    let b = Bundle::new("embexec", &["sleep", "30"])?;
    b.write()?;
    let shim = Shim::start(&peapod_shim()?, &b.id, b.path(), None)?;
    let result = (|| {
        let pid = shim.create(&b.id, b.path(), &[], &TaskIo::default())?;
        shim.start_task(&b.id, "")?;
        let (io, log) = file_io(b.path(), "exec");
        let process = ProcessBuilder::default()
            .args(
                sh("echo exec-out; exit 3")
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            )
            .env(vec!["PATH=/bin".to_string()])
            .cwd("/")
            .build()?;
        shim.exec(&b.id, "e1", &process, &io)?;
        shim.start_task(&b.id, "e1")?;
        let code = shim.wait(&b.id, "e1")?;
        shim.delete(&b.id, "e1")?;
        ensure!(code == 3, "exec exit status {code}");
        ensure!(std::fs::read_to_string(&log)? == "exec-out\n");
        shim.kill(&b.id, "", 9, false)?;
        ensure!(shim.wait(&b.id, "")? == 137, "exit status after SIGKILL");
        shim.delete(&b.id, "")?;
        Ok(pid)
    })();
    shim.shutdown()?;
    wait_shim_gone(shim.address())?;
    let pid = result.context("embedded exec")?;
    b.assert_clean(Some(nix::unistd::Pid::from_raw(i32::try_from(pid)?)))
}

/// The CLI's RuntimeDefault profile (`peapod::security::runtime_default`, containerd's)
/// in a task run by the embedded shim: `unshare -U` fails with EPERM in the container and
/// in a process exec'd into it, while the same bundle without `linux.seccomp` may unshare.
fn runtime_default_profile_blocks_user_namespaces_in_embedded_tasks() -> Result<()> {
    let script = "grep ^Seccomp: /proc/self/status; unshare -U true 2>&1; echo rc=$?; exec sleep 30";
    let run = |name: &str, filtered: bool| -> Result<(String, i32, String)> {
        let mut b = Bundle::new(name, &sh(script))?;
        if filtered {
            let bounding = b
                .spec
                .process()
                .as_ref()
                .and_then(|p| p.capabilities().as_ref())
                .and_then(|c| c.bounding().clone())
                .unwrap_or_default();
            let profile = peapod::security::runtime_default(&bounding);
            b.spec.linux_mut().as_mut().context("linux")?.set_seccomp(Some(profile));
        }
        b.write()?;
        let (io, log) = file_io(b.path(), "out");
        let shim = Shim::start(&peapod_shim()?, &b.id, b.path(), None)?;
        let result = (|| {
            let pid = shim.create(&b.id, b.path(), &[], &io)?;
            shim.start_task(&b.id, "")?;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !std::fs::read_to_string(&log)?.contains("rc=") {
                ensure!(
                    std::time::Instant::now() < deadline,
                    "no output: {:?}",
                    std::fs::read_to_string(&log)
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let (eio, elog) = file_io(b.path(), "exec");
            let process = ProcessBuilder::default()
                .args(sh("unshare -U true").iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .env(vec!["PATH=/bin".to_string()])
                .cwd("/")
                .build()?;
            shim.exec(&b.id, "e1", &process, &eio)?;
            shim.start_task(&b.id, "e1")?;
            let code = i32::try_from(shim.wait(&b.id, "e1")?)?;
            shim.delete(&b.id, "e1")?;
            shim.kill(&b.id, "", 9, false)?;
            shim.wait(&b.id, "")?;
            shim.delete(&b.id, "")?;
            Ok((pid, code, std::fs::read_to_string(&elog)?))
        })();
        shim.shutdown()?;
        wait_shim_gone(shim.address())?;
        let (pid, code, exec_out) = result?;
        let out = std::fs::read_to_string(&log)?;
        b.assert_clean(Some(nix::unistd::Pid::from_raw(i32::try_from(pid)?)))?;
        Ok((out, code, exec_out))
    };
    let (out, exec_code, exec_out) = run("embsecd", true)?;
    ensure!(
        out.contains("Seccomp:\t2") && out.contains("Operation not permitted") && out.contains("rc=1"),
        "unshare -U under RuntimeDefault: {out:?}"
    );
    ensure!(
        exec_code == 1 && exec_out.contains("Operation not permitted"),
        "exec'd unshare -U under RuntimeDefault: {exec_code} {exec_out:?}"
    );
    let (out, exec_code, _) = run("embsecu", false)?;
    ensure!(
        out.contains("Seccomp:\t0") && out.contains("rc=0") && exec_code == 0,
        "unshare -U without a filter: {out:?}, exec {exec_code}"
    );
    Ok(())
}

/// CNI ADD gives a network namespace an address on peapod's bridge and brings `lo` up;
/// DEL releases the address.
fn cni_attaches_and_releases_a_pod_network() -> Result<()> {
    use peapod::cni::Network;
    let name = format!("peapod-cni-{}", std::process::id());
    let ip = |args: &[&str]| std::process::Command::new("ip").args(args).output();
    let bridge_before = std::path::Path::new("/sys/class/net/peapod0").exists();
    ensure!(ip(&["netns", "add", &name])?.status.success(), "ip netns add {name}");
    let netns = format!("/run/netns/{name}");
    let result = (|| {
        let net = Network::peapod_default();
        let att = net.add(&name, &netns, "eth0")?;
        Network::loopback().add(&name, &netns, "lo")?;
        let addr = att.ip.clone().context("no IPv4 address from CNI")?;
        ensure!(addr.starts_with("10.89.0."), "address {addr}");
        let out = ip(&["netns", "exec", &name, "ip", "-o", "addr"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(text.contains(&format!("eth0    inet {addr}/24")), "{text}");
        ensure!(text.contains("lo    inet 127.0.0.1/8"), "lo not up: {text}");
        let reserved = std::path::Path::new(peapod::cni::IPAM_DIR).join("peapod").join(&addr);
        let owner = std::fs::read_to_string(&reserved).unwrap_or_default();
        ensure!(
            owner.lines().next() == Some(name.as_str()),
            "no IPAM reservation for {name} at {}: {owner:?}",
            reserved.display()
        );
        net.del(&name, &netns, "eth0", Some(&att.result))?;
        Network::loopback().del(&name, &netns, "lo", None)?;
        ensure!(!reserved.exists(), "DEL left the reservation {}", reserved.display());
        Ok(())
    })();
    let _ = ip(&["netns", "del", &name]);
    if !bridge_before {
        let _ = ip(&["link", "del", "peapod0"]);
    }
    result?;
    ensure!(!std::path::Path::new(&netns).exists(), "netns {netns} left behind");
    Ok(())
}

fn main() {
    sandbox::init::run_if_requested();
    let tests = tests![
        task_lifecycle_without_containerd,
        exec_and_kill_without_containerd,
        runtime_default_profile_blocks_user_namespaces_in_embedded_tasks,
        cni_attaches_and_releases_a_pod_network
    ];
    peapod_tests::run_privileged_suite(tests, peapod_tests::sweep_test_cgroups);
}
