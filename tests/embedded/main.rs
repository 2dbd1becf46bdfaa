//! The shim without containerd: `containerd-shim-peapod-v2` started and driven through
//! `shim::embedded` exactly as the `peapod` CLI's embedded mode does.
//!
//! `harness = false`: this binary is also a container init helper (`sandbox::init`).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use libtest_mimic::{Arguments, Trial};
use oci_spec::runtime::ProcessBuilder;
use peapod_tests::containerd::peapod_shim;
use peapod_tests::{require_root, Bundle};
use shim::embedded::{Shim, TaskIo};

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

/// Waits until the shim serving `address` has exited and removed its socket.
fn wait_shim_gone(address: &str) -> Result<()> {
    let path = shim::start::socket_path(address).to_path_buf();
    let deadline = Instant::now() + Duration::from_secs(10);
    while path.exists() {
        ensure!(
            Instant::now() < deadline,
            "shim socket {} still there after Shutdown",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn task_lifecycle_without_containerd() -> Result<()> {
    let b = Bundle::new("emb", &sh("echo hi-from-embedded; exit 4"))?;
    b.write()?;
    let (io, log) = file_io(b.path(), "out");
    let shim = Shim::start(&peapod_shim()?, &b.id, b.path())?;
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
    let shim = Shim::start(&peapod_shim()?, &b.id, b.path())?;
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

macro_rules! tests {
    ($($f:ident),* $(,)?) => {
        vec![$((stringify!($f), $f as fn() -> Result<()>)),*]
    };
}

fn main() {
    sandbox::init::run_if_requested();
    let args = Arguments::from_args();
    let root = require_root().map_err(|e| format!("{e:#}"));
    let trials = tests![task_lifecycle_without_containerd, exec_and_kill_without_containerd]
        .into_iter()
        .map(|(name, f)| {
            let root = root.clone();
            Trial::test(name, move || {
                root?;
                f().map_err(|e| format!("{e:#}").into())
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    if let Err(e) = peapod_tests::sweep_test_cgroups() {
        eprintln!("suite leak check failed: {e:#}");
        std::process::exit(101);
    }
    conclusion.exit();
}
