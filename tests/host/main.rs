//! Privileged host suite: the sandbox crate's container lifecycle against the real kernel,
//! as root. Each test checks an observable effect from inside the container and/or from
//! the host, and that nothing is left behind.
//!
//! `harness = false`: this binary is also the container init helper (see
//! `sandbox::init`), so `main` dispatches to it before running tests.

use peapod_tests::tests;
use std::fs;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use nix::sys::signal::Signal;
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxDeviceBuilder, LinuxDeviceType, LinuxMemoryBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder, MountBuilder, PosixRlimitBuilder,
    PosixRlimitType, ProcessBuilder, UserBuilder,
};
use peapod_tests::seccomp;
use peapod_tests::*;
use sandbox::cgroups;
use sandbox::{Error, Status, Stdio};

fn sh(script: &str) -> Vec<&str> {
    vec!["sh", "-c", script]
}

fn runs_a_process_and_reports_its_exit_code() -> Result<()> {
    let b = Bundle::new("exitcode", &sh("echo hello; echo oops >&2; exit 3"))?;
    let out = b.run()?;
    ensure!(out.code == 3, "exit code {out:?}");
    ensure!(out.stdout == "hello\n", "{out:?}");
    ensure!(out.stderr == "oops\n", "{out:?}");
    Ok(())
}

fn create_blocks_before_exec_until_start() -> Result<()> {
    let b = Bundle::new("blocked", &sh("echo ran"))?;
    let (r, w) = pipe()?;
    let mut c = b.create(Stdio {
        stdout: Some(w),
        ..Default::default()
    })?;
    let pid = c.pid().context("pid")?;
    ensure!(c.status() == Status::Created, "status {:?}", c.status());
    // Init is parked in our sealed binary (seen through its detached overlay, so not
    // under its host path), not yet the container's program.
    let exe = fs::read_link(format!("/proc/{pid}/exe"))?;
    let ours = std::env::current_exe()?;
    ensure!(
        exe != ours && exe.file_name() == ours.file_name(),
        "init exe before start: {exe:?} (we are {ours:?})"
    );
    let out = reader(r);
    std::thread::sleep(Duration::from_millis(100));
    ensure!(!out.is_finished(), "the program produced output before start");
    c.start()?;
    ensure!(c.wait()? == 0);
    ensure!(out.join().unwrap()? == "ran\n");
    c.delete(false)?;
    b.assert_clean(Some(pid))
}

fn namespaces_are_private_and_hostname_is_set() -> Result<()> {
    let b = Bundle::new(
        "ns",
        // busybox readlink takes one file at a time.
        &sh("echo $$; hostname; for n in net ipc uts; do readlink /proc/self/ns/$n; done; cat /proc/self/cgroup"),
    )?;
    let out = b.run()?;
    let lines: Vec<&str> = out.stdout.lines().collect();
    ensure!(lines.len() >= 6, "output: {out:?}");
    ensure!(lines[0] == "1", "container shell is not PID 1: {out:?}");
    ensure!(lines[1] == "peapod", "hostname: {out:?}");
    for (i, ns) in ["net", "ipc", "uts"].iter().enumerate() {
        let host = fs::read_link(format!("/proc/self/ns/{ns}"))?;
        ensure!(
            lines[2 + i].starts_with(&format!("{ns}:[")) && lines[2 + i] != host.to_string_lossy(),
            "{ns} namespace is the host's or missing: {out:?}"
        );
    }
    // In its own cgroup namespace the container sees itself at the root.
    for l in &lines[5..] {
        ensure!(l.ends_with(":/"), "cgroup namespace not rooted at the container: {l}");
    }
    Ok(())
}

fn joins_a_namespace_by_path() -> Result<()> {
    let a = Bundle::new("nsowner", &["sleep", "30"])?;
    let mut ca = a.create(Stdio::default())?;
    ca.start()?;
    let apid = ca.pid().context("pid")?;
    let a_net = fs::read_link(format!("/proc/{apid}/ns/net"))?;

    let mut b = Bundle::new("nsjoiner", &sh("readlink /proc/self/ns/net"))?;
    let path = format!("/proc/{apid}/ns/net");
    let linux = b.spec.linux_mut().as_mut().unwrap();
    let mut nss = linux.namespaces().clone().unwrap();
    nss.retain(|n| n.typ() != LinuxNamespaceType::Network);
    nss.push(
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Network)
            .path(path)
            .build()?,
    );
    linux.set_namespaces(Some(nss));
    let out = b.run();
    ca.kill(Signal::SIGKILL, false)?;
    ensure!(ca.wait()? == 137);
    ca.delete(false)?;
    a.assert_clean(Some(apid))?;
    let out = out?;
    ensure!(
        out.stdout.trim() == a_net.to_string_lossy(),
        "joined {:?}, wanted {a_net:?}",
        out.stdout
    );
    Ok(())
}

/// A container without a pid namespace (a Kubernetes `hostPID: true` pod's): when its init
/// dies, what it started must not live on in the host's pid namespace. containerd's runc
/// shim kills every process of the container's cgroup then (`runc.ShouldKillAllOnExit`,
/// containerd's `TestContainerKillInitPidHost`); in a pid namespace the kernel does it.
fn host_pid_container_children_die_with_init() -> Result<()> {
    let mut b = Bundle::new("hostpid", &sh("sleep 300 & wait"))?;
    let linux = b.spec.linux_mut().as_mut().unwrap();
    let mut nss = linux.namespaces().clone().unwrap();
    nss.retain(|n| n.typ() != LinuxNamespaceType::Pid);
    linux.set_namespaces(Some(nss));
    let mut c = b.start(Stdio::default())?;
    let init = c.pid().context("pid")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let child = loop {
        if let Some(p) = c.pids()?.into_iter().find(|p| *p != init) {
            break p;
        }
        ensure!(Instant::now() < deadline, "the background sleep never appeared");
        std::thread::sleep(Duration::from_millis(10));
    };
    c.kill(Signal::SIGKILL, false)?;
    let code = c.wait()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let left = loop {
        let left = c.pids()?;
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // Clean up whatever the runtime left before judging.
    let _ = c.kill(Signal::SIGKILL, true);
    b.delete(c, true)?;
    ensure!(code == 137, "init exit code {code}");
    ensure!(
        left.is_empty(),
        "processes of the host-pid container outlived its init (the background sleep is {child}): {left:?}"
    );
    Ok(())
}

fn unknown_namespace_path_is_refused_and_leaves_nothing() -> Result<()> {
    let mut b = Bundle::new("badns", &["true"])?;
    let linux = b.spec.linux_mut().as_mut().unwrap();
    let mut nss = linux.namespaces().clone().unwrap();
    nss.retain(|n| n.typ() != LinuxNamespaceType::Network);
    nss.push(
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Network)
            .path("/run/netns/does-not-exist")
            .build()?,
    );
    linux.set_namespaces(Some(nss));
    let err = b.create(Stdio::default()).err().context("create succeeded")?;
    let msg = err.to_string();
    ensure!(
        msg.contains("linux.namespaces[net].path") && msg.contains("does-not-exist"),
        "{msg}"
    );
    b.assert_clean(None)
}

fn capabilities_and_no_new_privs_apply() -> Result<()> {
    let b = Bundle::new("caps", &["cat", "/proc/self/status"])?;
    let out = b.run()?;
    let st = proc_status(&out.stdout);
    // No `linux.seccomp`, no filter.
    ensure!(st["Seccomp"] == "0", "Seccomp {} without a profile", st["Seccomp"]);
    let want = format!("{:016x}", cap_mask(&default_caps()));
    ensure!(st["CapEff"] == want, "CapEff {} want {want}", st["CapEff"]);
    ensure!(st["CapBnd"] == want, "CapBnd {} want {want}", st["CapBnd"]);
    ensure!(st["CapAmb"] == "0000000000000000", "CapAmb {}", st["CapAmb"]);
    ensure!(st["CapInh"] == "0000000000000000", "CapInh {}", st["CapInh"]);
    ensure!(st["NoNewPrivs"] == "1", "NoNewPrivs {}", st["NoNewPrivs"]);
    // No ignored or blocked signal leaks from the runtime (Rust ignores SIGPIPE).
    ensure!(st["SigIgn"] == "0000000000000000", "SigIgn {}", st["SigIgn"]);
    ensure!(st["SigBlk"] == "0000000000000000", "SigBlk {}", st["SigBlk"]);
    Ok(())
}

fn user_groups_rlimits_and_umask_apply() -> Result<()> {
    let mut b = Bundle::new(
        "user",
        &sh("grep -E '^(Uid|Gid|Groups):' /proc/self/status; ulimit -n; umask; cat /proc/self/oom_score_adj"),
    )?;
    let p = b.spec.process_mut().as_mut().unwrap();
    p.set_user(
        UserBuilder::default()
            .uid(1000u32)
            .gid(1001u32)
            .additional_gids(vec![10u32, 20])
            .umask(0o027u32)
            .build()?,
    );
    p.set_rlimits(Some(vec![PosixRlimitBuilder::default()
        .typ(PosixRlimitType::RlimitNofile)
        .soft(512u64)
        .hard(700u64)
        .build()?]));
    p.set_oom_score_adj(Some(500));
    let out = b.run()?;
    let lines: Vec<&str> = out.stdout.lines().collect();
    ensure!(lines.len() == 6, "{out:?}");
    ensure!(lines[0].split_whitespace().skip(1).all(|v| v == "1000"), "{}", lines[0]);
    ensure!(lines[1].split_whitespace().skip(1).all(|v| v == "1001"), "{}", lines[1]);
    ensure!(
        lines[2].split_whitespace().skip(1).collect::<Vec<_>>() == ["10", "20"],
        "{}",
        lines[2]
    );
    ensure!(lines[3] == "512", "ulimit -n {}", lines[3]);
    ensure!(lines[4] == "0027", "umask {}", lines[4]);
    ensure!(lines[5] == "500", "oom_score_adj {}", lines[5]);
    Ok(())
}

fn lowering_oom_score_adj_is_reported_clearly() -> Result<()> {
    let mut b = Bundle::new("oomadj", &["cat", "/proc/self/oom_score_adj"])?;
    b.spec.process_mut().as_mut().unwrap().set_oom_score_adj(Some(-500));
    // Where the kernel allows lowering (the VM), it must apply; where it refuses (these
    // hosts, EACCES), the error must say what and why, and nothing may be left.
    let allowed = fs::write("/proc/self/oom_score_adj", "-1").is_ok();
    let _ = fs::write("/proc/self/oom_score_adj", "0");
    if allowed {
        let out = b.run()?;
        ensure!(out.stdout.trim() == "-500", "{out:?}");
        return Ok(());
    }
    let err = b
        .create(Stdio::default())
        .err()
        .context("create succeeded although the kernel refuses")?;
    let msg = err.to_string();
    ensure!(
        msg.contains("process.oomScoreAdj -500") && msg.contains("EACCES") && msg.contains("restrict_oom_score_adj"),
        "{msg}"
    );
    b.assert_clean(None)
}

fn masked_and_readonly_paths_hold() -> Result<()> {
    let b = Bundle::new(
        "masked",
        &sh("wc -c < /proc/timer_list; echo 1 > /proc/sys/kernel/domainname && echo wrote || echo refused; ls /sys/firmware | wc -l; touch /sys/x 2>/dev/null && echo sys-rw || echo sys-ro"),
    )?;
    // Masked for the container, readable on the host.
    ensure!(
        !fs::read("/proc/timer_list")?.is_empty(),
        "/proc/timer_list is empty on the host"
    );
    let out = b.run()?;
    let lines: Vec<&str> = out.stdout.lines().collect();
    ensure!(lines == ["0", "refused", "0", "sys-ro"], "{out:?}");
    Ok(())
}

fn readonly_root_refuses_writes() -> Result<()> {
    let mut b = Bundle::new(
        "roroot",
        &sh("touch /newfile && echo wrote || echo refused; touch /tmp/x && echo tmp-wrote || echo tmp-refused"),
    )?;
    b.spec.root_mut().as_mut().unwrap().set_readonly(Some(true));
    let out = b.run()?;
    ensure!(out.stdout == "refused\ntmp-refused\n", "{out:?}");
    Ok(())
}

fn dev_has_default_nodes_and_spec_devices() -> Result<()> {
    let mut b = Bundle::new(
        "dev",
        &sh("ls /dev | sort | tr '\\n' ' '; echo; ls -ln /dev/mydev; echo x > /dev/null && echo null-ok"),
    )?;
    let dev = LinuxDeviceBuilder::default()
        .path("/dev/mydev")
        .typ(LinuxDeviceType::C)
        .major(1)
        .minor(5)
        .file_mode(0o600u32)
        .uid(7u32)
        .gid(8u32)
        .build()?;
    b.spec.linux_mut().as_mut().unwrap().set_devices(Some(vec![dev]));
    let out = b.run()?;
    let lines: Vec<&str> = out.stdout.lines().collect();
    for want in [
        "null", "zero", "full", "random", "urandom", "tty", "fd", "stdin", "stdout", "stderr", "ptmx", "pts", "shm",
        "mqueue", "mydev",
    ] {
        ensure!(
            lines[0].split(' ').any(|n| n == want),
            "/dev lacks {want}: {}",
            lines[0]
        );
    }
    let f: Vec<&str> = lines[1].split_whitespace().collect();
    ensure!(
        f[0] == "crw-------" && f[2] == "7" && f[3] == "8" && f[4] == "1," && f[5] == "5",
        "mydev: {}",
        lines[1]
    );
    ensure!(lines[2] == "null-ok", "{out:?}");
    Ok(())
}

fn bind_mounts_honour_their_options() -> Result<()> {
    let host = tempfile::tempdir()?;
    fs::write(host.path().join("in"), "from-host")?;
    let mut b = Bundle::new(
        "bind",
        &sh("cat /ro/in; touch /ro/x 2>/dev/null && echo ro-wrote || echo ro-refused; echo from-container > /rw/out"),
    )?;
    let bind = |dest: &str, opts: &[&str]| {
        MountBuilder::default()
            .destination(dest)
            .typ("bind")
            .source(host.path())
            .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .build()
    };
    let mounts = b.spec.mounts_mut().as_mut().unwrap();
    mounts.push(bind("/ro", &["rbind", "ro", "nosuid", "nodev"])?);
    mounts.push(bind("/rw", &["rbind", "rw"])?);
    let out = b.run()?;
    ensure!(out.stdout == "from-hostro-refused\n", "{out:?}");
    ensure!(fs::read_to_string(host.path().join("out"))? == "from-container\n");
    Ok(())
}

fn namespaced_sysctls_apply_inside_only() -> Result<()> {
    let mut b = Bundle::new("sysctl", &["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"])?;
    b.spec.linux_mut().as_mut().unwrap().set_sysctl(Some(
        [("net.ipv4.ip_unprivileged_port_start".to_string(), "80".to_string())].into(),
    ));
    let host_before = fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")?;
    let out = b.run()?;
    ensure!(out.stdout.trim() == "80", "{out:?}");
    ensure!(
        fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")? == host_before,
        "host sysctl changed"
    );
    Ok(())
}

fn cgroup_limits_are_applied() -> Result<()> {
    let mut b = Bundle::new("limits", &["sleep", "30"])?;
    let res = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64 * 1024 * 1024i64)
                .swap(64 * 1024 * 1024i64)
                .reservation(32 * 1024 * 1024i64)
                .build()?,
        )
        .cpu(
            LinuxCpuBuilder::default()
                .shares(512u64)
                .quota(50_000i64)
                .period(100_000u64)
                .cpus("0")
                .build()?,
        )
        .pids(LinuxPidsBuilder::default().limit(32i64).build()?)
        .build()?;
    let mut res = res;
    if cgroups::is_v2() {
        // kubelet's MemoryQoS and swap settings come this way; written last, so
        // `pids.max` here wins over `pids.limit` above (runc's order).
        res.set_unified(Some(
            [("memory.high", "50331648"), ("pids.max", "7")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
        ));
    }
    b.spec.linux_mut().as_mut().unwrap().set_resources(Some(res));
    let c = b.create(Stdio::default())?;
    let cg = b.cgroup_path();
    let read = |ctrl: &str, file: &str| fs::read_to_string(cgroup_file(ctrl, &cg, file)).map(|s| s.trim().to_string());
    let result = (|| -> Result<()> {
        if cgroups::is_v2() {
            ensure!(read("memory", "memory.max")? == "67108864");
            ensure!(read("memory", "memory.swap.max")? == "0");
            ensure!(read("memory", "memory.low")? == "33554432");
            ensure!(read("cpu", "cpu.weight")? == cgroups::shares_to_weight(512).to_string());
            ensure!(read("cpu", "cpu.max")? == "50000 100000");
            ensure!(read("memory", "memory.high")? == "50331648");
            ensure!(read("pids", "pids.max")? == "7");
            ensure!(read("cpuset", "cpuset.cpus")? == "0");
        } else {
            ensure!(read("memory", "memory.limit_in_bytes")? == "67108864");
            ensure!(read("memory", "memory.soft_limit_in_bytes")? == "33554432");
            // memory+swap, where the kernel accounts swap (swapaccount).
            if let Ok(memsw) = read("memory", "memory.memsw.limit_in_bytes") {
                ensure!(memsw == "67108864", "memory.memsw.limit_in_bytes {memsw}");
            }
            ensure!(read("cpu", "cpu.shares")? == "512");
            ensure!(read("cpu", "cpu.cfs_quota_us")? == "50000");
            ensure!(read("cpu", "cpu.cfs_period_us")? == "100000");
            ensure!(read("pids", "pids.max")? == "32");
            ensure!(read("cpuset", "cpuset.cpus")? == "0");
        }
        let pid = c.pid().context("pid")?;
        ensure!(
            c.pids()?.contains(&pid),
            "init {pid} not in its cgroup: {:?}",
            c.pids()?
        );
        Ok(())
    })();
    let pid = c.pid();
    c.delete(true)?;
    result?;
    b.assert_clean(pid)
}

/// Creates bundle `name` with `res`, expects the create to fail with an error that names
/// `field` and to leave nothing behind, and returns the error.
fn refused_resources(name: &str, res: LinuxResources, field: &str) -> Result<anyhow::Error> {
    let mut b = Bundle::new(name, &["true"])?;
    b.spec.linux_mut().as_mut().unwrap().set_resources(Some(res));
    let err = b
        .create(Stdio::default())
        .err()
        .with_context(|| format!("create {name} succeeded"))?;
    ensure!(format!("{err:#}").contains(field), "{field} is not named: {err:#}");
    b.assert_clean(None)?;
    Ok(err)
}

fn bad_cgroup_value_fails_and_leaves_nothing() -> Result<()> {
    // Valid syntax, but no such CPUs: only the kernel can refuse it.
    let res = LinuxResourcesBuilder::default()
        .cpu(LinuxCpuBuilder::default().cpus("0-4095").build()?)
        .build()?;
    let err = refused_resources("badcg", res, "linux.resources.cpu.cpus")?;
    ensure!(
        matches!(err.downcast_ref::<Error>(), Some(Error::Cgroup { .. })),
        "{err:#}"
    );
    // A value peapod refuses before the kernel sees it (the spec's validation).
    let res = LinuxResourcesBuilder::default()
        .memory(LinuxMemoryBuilder::default().limit(64 << 20).swap(32 << 20).build()?)
        .build()?;
    refused_resources("badcg2", res, "linux.resources.memory")?;
    // A unified key that is not a file name of the cgroup (refused on v2 by its name, on
    // v1 because v1 has no unified hierarchy): nothing outside the cgroup is written.
    let mut res = LinuxResourcesBuilder::default().build()?;
    res.set_unified(Some([("../../../escape".to_string(), "1".to_string())].into()));
    refused_resources("badcg3", res, "linux.resources.unified")?;
    Ok(())
}

fn oom_kill_is_observed() -> Result<()> {
    // A shell variable of 64 MiB in a 16 MiB cgroup without swap.
    let mut b = Bundle::new(
        "oom",
        &sh("x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo survived"),
    )?;
    let res = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(16 * 1024 * 1024i64)
                .swap(16 * 1024 * 1024i64)
                .build()?,
        )
        .build()?;
    b.spec.linux_mut().as_mut().unwrap().set_resources(Some(res));
    let mut c = b.create(Stdio::default())?;
    let mut watch = c.cgroup()?.watch_oom()?;
    c.start()?;
    let code = c.wait()?;
    let kills = watch.wait(Duration::from_secs(10));
    let stats = c.stats()?;
    let pid = c.pid();
    c.delete(false)?;
    ensure!(kills >= 1, "no OOM notification (exit code {code})");
    ensure!(stats.oom_kills >= 1, "stats: {stats:?}");
    ensure!(code == 137, "exit code {code}: the shell should have been OOM-killed");
    b.assert_clean(pid)
}

fn exec_joins_the_running_container() -> Result<()> {
    let b = Bundle::new("exec", &["sleep", "30"])?;
    let mut c = b.start(Stdio::default())?;
    let (r, w) = pipe()?;
    let proc = ProcessBuilder::default()
        .args(sh("hostname; readlink /proc/self/ns/pid; cat /proc/self/cgroup | md5sum; cat /proc/1/cgroup | md5sum; cat /proc/1/cmdline | tr '\\0' ' '; echo; id -u; echo $FOO; pwd; exit 5").iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .env(vec!["FOO=bar".to_string(), "PATH=/bin".to_string()])
        .cwd("/tmp")
        .user(UserBuilder::default().uid(65534u32).gid(65534u32).build()?)
        .build()?;
    let out = reader(r);
    let init_pidns = fs::read_link(format!("/proc/{}/ns/pid", c.pid().context("pid")?))?;
    let e = c.exec(
        &proc,
        Stdio {
            stdout: Some(w),
            ..Default::default()
        },
    )?;
    let code = e.wait()?;
    let out = out.join().unwrap()?;
    let missing = ProcessBuilder::default()
        .args(vec!["no-such-program".to_string()])
        .cwd("/")
        .build()?;
    let err = c
        .exec(&missing, Stdio::default())
        .err()
        .context("exec of a missing program succeeded")?;
    c.kill(Signal::SIGKILL, false)?;
    c.wait()?;
    b.delete(c, false)?;
    let lines: Vec<&str> = out.lines().collect();
    ensure!(code == 5, "exec exit code {code}");
    ensure!(lines.len() == 8, "{lines:?}");
    // Same cgroup as init, seen from inside (the exec may exit before the host looks).
    ensure!(
        lines[2] == lines[3],
        "exec'd process is not in init's cgroup: {lines:?}"
    );
    let pidns = init_pidns.to_string_lossy();
    ensure!(
        [lines[0], lines[1], lines[4], lines[5], lines[6], lines[7]]
            == ["peapod", pidns.as_ref(), "sleep 30 ", "65534", "bar", "/tmp"],
        "{lines:?}"
    );
    ensure!(
        err.to_string().contains("no-such-program") && err.to_string().contains("not found in $PATH"),
        "{err}"
    );
    Ok(())
}

fn terminal_processes_get_a_pty_from_the_container() -> Result<()> {
    let mut b = Bundle::new(
        "tty",
        &sh("tty; [ -t 0 ] && echo stdin-is-tty; [ -c /dev/console ] && echo console; : > /init-done; sleep 30"),
    )?;
    b.spec.process_mut().as_mut().unwrap().set_terminal(Some(true));
    // Init's lines must be out before it is killed: the exec below can finish first.
    let init_done = b.path().join("rootfs/init-done");
    let mut c = b.create(Stdio::default())?;
    let init_console = console_reader(c.take_console().context("no console for a terminal container")?);
    c.start()?;
    let size = oci_spec::runtime::BoxBuilder::default()
        .height(40u64)
        .width(120u64)
        .build()?;
    let proc = ProcessBuilder::default()
        .args(
            sh("tty; stty size; exit 3")
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .terminal(true)
        .console_size(size)
        .cwd("/")
        .build()?;
    let mut e = c.exec(&proc, Stdio::default())?;
    let exec_console = console_reader(e.take_console().context("no console for a terminal exec")?);
    let code = e.wait()?;
    let exec_out = exec_console.join().unwrap()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !init_done.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    c.kill(Signal::SIGKILL, true)?;
    c.wait()?;
    let init_out = init_console.join().unwrap()?;
    b.delete(c, false)?;
    let init_lines: Vec<&str> = init_out.lines().collect();
    ensure!(
        init_lines.len() == 3
            && init_lines[0].starts_with("/dev/pts/")
            && init_lines[1..] == ["stdin-is-tty", "console"],
        "init: {init_out:?}"
    );
    let exec_lines: Vec<&str> = exec_out.lines().collect();
    ensure!(
        exec_lines.len() == 2 && exec_lines[0].starts_with("/dev/pts/") && exec_lines[1] == "40 120",
        "exec: {exec_out:?}"
    );
    ensure!(
        exec_lines[0] != init_lines[0],
        "exec and init share a pty: {exec_lines:?}"
    );
    ensure!(code == 3, "exec exit code {code}");
    Ok(())
}

fn pause_and_resume_freeze_the_cgroup() -> Result<()> {
    let b = Bundle::new("pause", &["sleep", "30"])?;
    let mut c = b.start(Stdio::default())?;
    let cg = b.cgroup_path();
    let pid = c.pid().context("pid")?;
    let result = (|| {
        let frozen = || -> Result<bool> {
            Ok(if cgroups::is_v2() {
                fs::read_to_string(cgroup_file("", &cg, "cgroup.events"))?.contains("frozen 1")
            } else {
                fs::read_to_string(cgroup_file("freezer", &cg, "freezer.state"))?.trim() == "FROZEN"
            })
        };
        let proc_state = || -> Result<String> {
            let st = fs::read_to_string(format!("/proc/{pid}/stat"))?;
            Ok(st[st.rfind(')').unwrap() + 2..][..1].to_string())
        };
        // Until sleep sleeps, a thawed task may briefly read R.
        let wait_sleeping = || -> Result<()> {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while proc_state()? != "S" {
                ensure!(
                    std::time::Instant::now() < deadline,
                    "state {} instead of S",
                    proc_state()?
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        };
        wait_sleeping()?;
        c.pause()?;
        let paused = (c.status(), frozen()?);
        ensure!(paused == (Status::Paused, true), "after pause: {paused:?}");
        c.resume()?;
        let resumed = (c.status(), frozen()?);
        ensure!(resumed == (Status::Running, false), "after resume: {resumed:?}");
        wait_sleeping()
    })();
    c.kill(Signal::SIGKILL, false)?;
    c.wait()?;
    c.delete(false)?;
    b.assert_clean(Some(pid))?;
    result
}

fn update_changes_resources_of_a_running_container() -> Result<()> {
    let b = Bundle::new("update", &["sleep", "30"])?;
    let mut c = b.start(Stdio::default())?;
    let res = LinuxResourcesBuilder::default()
        .memory(LinuxMemoryBuilder::default().limit(32 * 1024 * 1024i64).build()?)
        .pids(LinuxPidsBuilder::default().limit(10i64).build()?)
        .build()?;
    let stats = c
        .update(&res)
        .map_err(anyhow::Error::from)
        .and_then(|()| Ok(c.stats()?));
    b.delete(c, true)?;
    let stats = stats?;
    ensure!(stats.memory_limit == Some(32 * 1024 * 1024), "{stats:?}");
    ensure!(stats.pids_limit == Some(10), "{stats:?}");
    Ok(())
}

fn stats_report_cpu_memory_and_pids() -> Result<()> {
    let b = Bundle::new(
        "stats",
        &sh("i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 30"),
    )?;
    let c = b.start(Stdio::default())?;
    let stats = (|| -> Result<sandbox::cgroups::Stats> {
        let mut stats = c.stats()?;
        for _ in 0..100 {
            if stats.cpu_usage_ns > 10_000_000 {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            stats = c.stats()?;
        }
        Ok(stats)
    })();
    b.delete(c, true)?;
    let stats = stats?;
    ensure!(stats.cpu_usage_ns > 10_000_000, "{stats:?}");
    ensure!(stats.memory_usage > 0 && stats.pids_current >= 1, "{stats:?}");
    Ok(())
}

fn kill_all_reaches_every_process_and_signals_map_to_128_plus_n() -> Result<()> {
    let b = Bundle::new(
        "killall",
        &sh("sleep 30 & sleep 30 & trap 'exit 7' TERM; while true; do sleep 1; done"),
    )?;
    let mut c = b.start(Stdio::default())?;
    for _ in 0..100 {
        if c.pids()?.len() >= 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = c.pids()?.len();
    c.kill(Signal::SIGKILL, true)?;
    let code = c.wait()?;
    let after = c.pids()?;
    b.delete(c, false)?;
    ensure!(before >= 4, "expected shell, two sleeps and a loop sleep; saw {before}");
    ensure!(code == 137, "exit code {code}");
    ensure!(after.is_empty(), "survivors: {after:?}");

    // A trapped SIGTERM to init runs the trap: exit code 7.
    let b = Bundle::new("term", &sh("trap 'exit 7' TERM; while true; do sleep 0.1; done"))?;
    let mut c = b.start(Stdio::default())?;
    std::thread::sleep(Duration::from_millis(200));
    c.kill(Signal::SIGTERM, false)?;
    let code = c.wait()?;
    b.delete(c, true)?;
    ensure!(code == 7, "exit code after trapped SIGTERM: {code}");
    Ok(())
}

fn no_host_fd_leaks_into_the_container() -> Result<()> {
    // A deliberately inheritable fd in the runtime process must not reach the container.
    let leak = nix::fcntl::open(
        "/etc/hostname",
        nix::fcntl::OFlag::O_RDONLY,
        nix::sys::stat::Mode::empty(),
    )?;
    let b = Bundle::new("fds", &sh("ls /proc/self/fd | tr '\\n' ' '"))?;
    let out = b.run();
    drop(leak);
    let out = out?;
    let fds: Vec<&str> = out.stdout.split_whitespace().collect();
    // 0-2, plus the directory fd `ls` itself opened.
    ensure!(fds.len() == 4 && fds[..3] == ["0", "1", "2"], "fds inside: {fds:?}");
    Ok(())
}

fn runtime_binary_cannot_be_overwritten_from_the_container() -> Result<()> {
    let b = Bundle::new("exe", &["true"])?;
    let c = b.create(Stdio::default())?;
    let pid = c.pid().context("pid")?;
    // What a malicious container would do (CVE-2019-5736): write through /proc/<init>/exe.
    let res = fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/exe"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"pwned"));
    let our_exe = std::env::current_exe()?;
    let intact = fs::read(&our_exe)?.get(..4) == Some(b"\x7fELF".as_slice());
    c.delete(true)?;
    b.assert_clean(Some(pid))?;
    let err = res.err().context("writing the init's exe succeeded")?;
    // EROFS: the read-only overlay seal. EPERM would be the memfd copy, which is only
    // for kernels without overlayfs or the new mount API: not this one.
    ensure!(
        err.raw_os_error() == Some(libc::EROFS),
        "writing /proc/<init>/exe failed with {err}, not EROFS: is the overlay seal in use?"
    );
    ensure!(intact, "our binary was modified");
    Ok(())
}

/// The spawn behind every create and exec puts its child straight into a cgroup v2
/// directory (`CLONE_INTO_CGROUP`): on a v2 host the hierarchy at `/sys/fs/cgroup`, on a
/// hybrid one the unified hierarchy at `/sys/fs/cgroup/unified`.
fn spawned_helpers_are_born_in_their_v2_cgroup() -> Result<()> {
    use std::os::fd::AsFd;
    let root = if cgroups::is_v2() {
        "/sys/fs/cgroup"
    } else {
        "/sys/fs/cgroup/unified"
    };
    ensure!(
        std::path::Path::new(root).join("cgroup.procs").exists(),
        "no cgroup v2 hierarchy at {root}: CLONE_INTO_CGROUP cannot be tested"
    );
    let name = format!("peapod-test-clone-into-{}", std::process::id());
    let dir = std::path::Path::new(root).join(&name);
    fs::create_dir(&dir)?;
    let result = (|| {
        let cgroup = nix::fcntl::open(
            &dir,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        let cat = nix::fcntl::open(
            "/bin/cat",
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        let null = fs::File::open("/dev/null")?;
        let (r, w) = pipe()?;
        let (pid, in_cgroup) = sandbox::sys::spawn_with_fds(
            cat.as_fd(),
            &[c"cat", c"/proc/self/cgroup"],
            &[],
            &[null.as_fd(), w.as_fd(), null.as_fd()],
            Some(cgroup.as_fd()),
        )?;
        drop(w);
        let out = reader(r).join().unwrap()?;
        nix::sys::wait::waitpid(pid, None)?;
        ensure!(in_cgroup, "the kernel took no CLONE_INTO_CGROUP");
        ensure!(
            out.lines().any(|l| l == format!("0::/{name}")),
            "the child's /proc/self/cgroup:\n{out}"
        );
        Ok(())
    })();
    let removed = fs::remove_dir(&dir);
    result?;
    removed.with_context(|| format!("rmdir {}", dir.display()))?;
    ensure!(!dir.exists(), "leak: {} left", dir.display());
    Ok(())
}

fn init_errors_carry_their_cause_and_leave_nothing() -> Result<()> {
    let b = Bundle::new("noprog", &["/no/such/program"])?;
    let err = b
        .create(Stdio::default())
        .err()
        .context("create of a missing program succeeded")?;
    let msg = err.to_string();
    ensure!(
        msg.contains("process: process.args[0]: /no/such/program") && msg.contains("No such file"),
        "{msg}"
    );
    b.assert_clean(None)?;

    let mut b = Bundle::new("badfs", &["true"])?;
    b.spec.mounts_mut().as_mut().unwrap().push(
        MountBuilder::default()
            .destination("/x")
            .typ("nosuchfs")
            .source("none")
            .build()?,
    );
    let err = b
        .create(Stdio::default())
        .err()
        .context("create with an unknown fs type succeeded")?;
    let msg = format!("{err:#}");
    ensure!(
        msg.contains("rootfs") && msg.contains("nosuchfs") && msg.contains("No such device"),
        "{msg}"
    );
    b.assert_clean(None)?;

    let b = Bundle::new("norootfs", &["true"])?;
    fs::remove_dir_all(b.path().join("rootfs"))?;
    let err = b
        .create(Stdio::default())
        .err()
        .context("create without rootfs succeeded")?;
    ensure!(err.to_string().contains("root.path"), "{err}");
    b.assert_clean(None)
}

fn rootfs_layers_are_mounted_and_unmounted() -> Result<()> {
    let lower = tempfile::tempdir()?;
    busybox_rootfs(lower.path())?;
    let b = Bundle::new("overlay", &sh("echo layered > /hello; cat /hello"))?;
    fs::remove_dir_all(b.path().join("rootfs"))?;
    fs::create_dir(b.path().join("rootfs"))?;
    let upper = b.path().join("upper");
    let work = b.path().join("work");
    fs::create_dir(&upper)?;
    fs::create_dir(&work)?;
    b.write()?;
    let (r, w) = pipe()?;
    let mut c = sandbox::Container::create(
        &b.config(),
        sandbox::CreateOptions {
            id: b.id.clone(),
            bundle: b.path().to_path_buf(),
            rootfs_mounts: vec![sandbox::RootfsMount {
                fstype: "overlay".into(),
                source: "overlay".into(),
                options: vec![
                    format!("lowerdir={}", lower.path().display()),
                    format!("upperdir={}", upper.display()),
                    format!("workdir={}", work.display()),
                ],
            }],
            stdio: Stdio {
                stdout: Some(w),
                ..Default::default()
            },
            spec: None,
        },
    )?;
    let out = reader(r);
    let mounted = sandbox::container::is_mounted(&b.path().join("rootfs"));
    c.start()?;
    let code = c.wait()?;
    b.delete(c, false)?;
    ensure!(mounted, "overlay was not mounted on rootfs");
    ensure!(code == 0 && out.join().unwrap()? == "layered\n");
    ensure!(
        fs::read_to_string(upper.join("hello"))? == "layered\n",
        "write did not land in the upper dir"
    );
    ensure!(!lower.path().join("hello").exists(), "write reached the lower layer");
    Ok(())
}

fn delete_from_a_loaded_state_cleans_up() -> Result<()> {
    let b = Bundle::new("reload", &sh("sleep 30 & sleep 30"))?;
    let c = b.start(Stdio::default())?;
    let pid = c.pid();
    drop(c);
    // As `containerd-shim-peapod-v2 delete` would, from state alone.
    let c = sandbox::Container::load(&b.config(), &b.id)?;
    ensure!(c.status() == Status::Running, "loaded status {:?}", c.status());
    c.delete(true)?;
    b.assert_clean(pid)
}

fn only_cgroup_ancestors_peapod_created_are_removed() -> Result<()> {
    let mut b = Bundle::new("cgowner", &["true"])?;
    let keep = format!("peapod-test/{}-keep", b.id);
    let own = format!("peapod-test/{}-own", b.id);
    let kept = cgroups::Cgroup::create(&keep, None, None)?;
    b.spec
        .linux_mut()
        .as_mut()
        .unwrap()
        .set_cgroups_path(Some(format!("/{keep}/c").into()));
    let first = b.run();
    let keep_survived = kept.exists();
    b.spec
        .linux_mut()
        .as_mut()
        .unwrap()
        .set_cgroups_path(Some(format!("/{own}/x/c").into()));
    let second = b.run();
    kept.destroy(Duration::from_secs(1), None)?;
    ensure!(first?.code == 0 && second?.code == 0);
    ensure!(keep_survived, "the pre-existing parent {keep} was removed");
    ensure!(
        !cgroups::exists_anywhere(&own),
        "{own}, created for the container, was left behind"
    );
    Ok(())
}

fn deleting_a_container_keeps_a_sibling_s_empty_cgroup() -> Result<()> {
    let mut b = Bundle::new("cgsibling", &["sleep", "30"])?;
    let parent = format!("peapod-test/{}-parent", b.id);
    b.spec
        .linux_mut()
        .as_mut()
        .unwrap()
        .set_cgroups_path(Some(format!("/{parent}/a").into()));
    // The container creates (and so owns) the parent; a sibling appears after it, empty,
    // as another container's cgroup does while it is being set up.
    let c = b.start(Stdio::default())?;
    let sibling = cgroups::Cgroup::create(&format!("{parent}/sibling"), None, None)?;
    let deleted = b.delete(c, true);
    let survived = sibling.exists();
    sibling.destroy(Duration::from_secs(1), None)?;
    let parent_gone = cgroups::rmdir_everywhere(&parent);
    deleted?;
    ensure!(survived, "deleting the container removed its sibling's empty cgroup");
    ensure!(parent_gone, "the parent could not be removed once empty");
    Ok(())
}

fn duplicate_ids_are_refused() -> Result<()> {
    let b = Bundle::new("dup", &["sleep", "30"])?;
    let c = b.create(Stdio::default())?;
    let err = b.create(Stdio::default()).err().context("second create succeeded")?;
    b.delete(c, true)?;
    ensure!(
        matches!(err.downcast_ref::<Error>(), Some(Error::AlreadyExists { .. })),
        "{err:#}"
    );
    Ok(())
}

// seccomp (`linux.seccomp`, sandbox::seccomp): each profile's effect seen from inside the
// container, the filter seen from the host, bad profiles refused by field.

/// `Seccomp` and `Seccomp_filters` of `/proc/<pid>/status` text.
fn seccomp_status(status: &str) -> (String, String) {
    let st = proc_status(status);
    (
        st.get("Seccomp").cloned().unwrap_or_default(),
        st.get("Seccomp_filters").cloned().unwrap_or_default(),
    )
}

fn seccomp_errno_rule_returns_the_chosen_errno() -> Result<()> {
    let mut b = Bundle::new(
        "sc-errno",
        &sh("unshare -U true; echo unshare=$?; grep -E '^Seccomp(_filters)?:' /proc/self/status; mkdir /tmp/d && echo made"),
    )?;
    seccomp::set(&mut b.spec, seccomp::errno_for(&["unshare"], seccomp::EDQUOT)?)?;
    let out = b.run()?;
    ensure!(
        out.stderr.contains(seccomp::EDQUOT_TEXT),
        "unshare was not refused with EDQUOT: {out:?}"
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    ensure!(
        lines.len() == 4 && lines[0] == "unshare=1" && lines[3] == "made",
        "{out:?}"
    );
    let (mode, filters) = seccomp_status(&out.stdout);
    ensure!(
        mode == "2" && filters == "1",
        "Seccomp {mode}, Seccomp_filters {filters}: {out:?}"
    );
    Ok(())
}

fn seccomp_argument_filter_refuses_one_personality_value_only() -> Result<()> {
    let mut b = Bundle::new(
        "sc-args",
        &sh("linux32 true; echo linux32=$?; linux64 true; echo linux64=$?"),
    )?;
    seccomp::set(&mut b.spec, seccomp::personality_refused(seccomp::PER_LINUX32)?)?;
    let out = b.run()?;
    ensure!(out.stdout == "linux32=1\nlinux64=0\n", "{out:?}");
    ensure!(out.stderr.contains("Operation not permitted"), "{out:?}");
    Ok(())
}

fn seccomp_default_errno_ret_answers_unlisted_syscalls() -> Result<()> {
    let mut b = Bundle::new(
        "sc-default",
        &sh("mkdir /tmp/d; echo mkdir=$?; echo > /tmp/f && echo wrote"),
    )?;
    seccomp::set(&mut b.spec, seccomp::all_but(&["mkdir", "mkdirat"])?)?;
    let out = b.run()?;
    ensure!(out.stdout == "mkdir=1\nwrote\n", "{out:?}");
    ensure!(
        out.stderr.contains(seccomp::ETXTBSY_TEXT),
        "mkdir did not get defaultErrnoRet: {out:?}"
    );
    Ok(())
}

fn seccomp_log_action_does_not_block() -> Result<()> {
    let mut b = Bundle::new(
        "sc-log",
        &sh("mkdir /tmp/d && echo made; grep -E '^Seccomp:' /proc/self/status"),
    )?;
    seccomp::set(&mut b.spec, seccomp::log_only(&["mkdir", "mkdirat"])?)?;
    let out = b.run()?;
    ensure!(out.stdout == "made\nSeccomp:\t2\n", "{out:?}");
    Ok(())
}

fn seccomp_filters_init_and_exec_d_processes_seen_from_the_host() -> Result<()> {
    let mut b = Bundle::new("sc-exec", &["sleep", "30"])?;
    seccomp::set(&mut b.spec, seccomp::errno_for(&["unshare"], seccomp::EDQUOT)?)?;
    let mut c = b.start(Stdio::default())?;
    let pid = c.pid().context("pid")?;
    let compile_us = c.timings().seccomp_us;
    let (mode, filters) = seccomp_status(&fs::read_to_string(format!("/proc/{pid}/status"))?);
    let (r, w) = pipe()?;
    let (er, ew) = pipe()?;
    // The exec'd process asks for no no_new_privs: the filter loads before its caps drop.
    let proc = ProcessBuilder::default()
        .args(
            sh("unshare -U true; echo unshare=$?; grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status")
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .env(vec!["PATH=/bin".to_string()])
        .cwd("/")
        .no_new_privileges(false)
        .build()?;
    let out = reader(r);
    let err = reader(er);
    let e = c.exec(
        &proc,
        Stdio {
            stdout: Some(w),
            stderr: Some(ew),
            ..Default::default()
        },
    );
    let code: Result<i32> = e.map_err(anyhow::Error::from).and_then(|e| Ok(e.wait()?));
    c.kill(Signal::SIGKILL, false)?;
    c.wait()?;
    b.delete(c, false)?;
    let code = code?;
    let (out, err) = (out.join().unwrap()?, err.join().unwrap()?);
    ensure!(
        mode == "2" && filters == "1",
        "init on the host: Seccomp {mode}, Seccomp_filters {filters}"
    );
    ensure!(compile_us > 0, "create timings report no seccomp compilation");
    ensure!(code == 0, "exec exit {code}: {out:?} {err:?}");
    ensure!(out == "unshare=1\nNoNewPrivs:\t0\nSeccomp:\t2\n", "{out:?} {err:?}");
    ensure!(
        err.contains(seccomp::EDQUOT_TEXT),
        "exec'd unshare was not filtered: {err:?}"
    );
    Ok(())
}

fn seccomp_loads_before_the_caps_drop_without_no_new_privs() -> Result<()> {
    let mut b = Bundle::new(
        "sc-nonroot",
        &sh("unshare -U true; echo unshare=$?; grep -E '^(Uid|CapEff|NoNewPrivs|Seccomp):' /proc/self/status"),
    )?;
    seccomp::set(&mut b.spec, seccomp::errno_for(&["unshare"], seccomp::EDQUOT)?)?;
    let p = b.spec.process_mut().as_mut().context("process")?;
    p.set_no_new_privileges(Some(false));
    p.set_user(UserBuilder::default().uid(1000u32).gid(1000u32).build()?);
    // No capability at all (oci-spec's default set is not empty).
    let none = oci_spec::runtime::Capabilities::new();
    p.set_capabilities(Some(
        oci_spec::runtime::LinuxCapabilitiesBuilder::default()
            .bounding(none.clone())
            .effective(none.clone())
            .permitted(none.clone())
            .inheritable(none.clone())
            .ambient(none)
            .build()?,
    ));
    let out = b.run()?;
    let st = proc_status(&out.stdout);
    ensure!(out.stdout.starts_with("unshare=1\n"), "{out:?}");
    ensure!(
        st["Uid"].starts_with("1000") && st["CapEff"] == "0000000000000000" && st["NoNewPrivs"] == "0",
        "not an unprivileged process: {out:?}"
    );
    ensure!(st["Seccomp"] == "2", "{out:?}");
    ensure!(out.stderr.contains(seccomp::EDQUOT_TEXT), "{out:?}");
    Ok(())
}

fn bad_seccomp_profiles_fail_create_naming_the_field_and_leave_nothing() -> Result<()> {
    let call = |action: &str, op: &str| {
        serde_json::json!({"names": ["personality"], "action": action,
            "args": [{"index": 0, "value": 8, "op": op}]})
    };
    let ok = call("SCMP_ACT_ERRNO", "SCMP_CMP_EQ");
    let cases = [
        (
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [ok, call("SCMP_ACT_BOGUS", "SCMP_CMP_EQ")]}),
            "linux.seccomp.syscalls[1].action: unknown variant",
        ),
        (
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [call("SCMP_ACT_ERRNO", "SCMP_CMP_LIKE")]}),
            "linux.seccomp.syscalls[0].args[0].op: unknown variant",
        ),
        (
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [ok, call("SCMP_ACT_NOTIFY", "SCMP_CMP_EQ")]}),
            "linux.seccomp.syscalls[1].action: SCMP_ACT_NOTIFY is not supported",
        ),
        (
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/seccomp-agent.sock"}),
            "linux.seccomp.listenerPath",
        ),
    ];
    for (profile, want) in cases {
        let b = Bundle::new("sc-bad", &["true"])?;
        fs::write(
            b.path().join("config.json"),
            seccomp::with_raw_profile(&b.spec, profile)?,
        )?;
        let err = sandbox::Container::create(
            &b.config(),
            sandbox::CreateOptions {
                id: b.id.clone(),
                bundle: b.path().to_path_buf(),
                ..Default::default()
            },
        )
        .err()
        .with_context(|| format!("create with a bad profile succeeded ({want})"))?;
        let msg = format!("{err:#}");
        ensure!(msg.contains(want), "error does not name {want:?}: {msg}");
        b.assert_clean(None)?;
        ensure!(
            !b.config().state_root.exists() || fs::read_dir(b.config().state_root)?.next().is_none(),
            "state left for a refused profile"
        );
    }
    Ok(())
}

fn main() {
    sandbox::init::run_if_requested();
    let tests = tests![
        host_pid_container_children_die_with_init,
        runs_a_process_and_reports_its_exit_code,
        create_blocks_before_exec_until_start,
        namespaces_are_private_and_hostname_is_set,
        joins_a_namespace_by_path,
        unknown_namespace_path_is_refused_and_leaves_nothing,
        capabilities_and_no_new_privs_apply,
        user_groups_rlimits_and_umask_apply,
        lowering_oom_score_adj_is_reported_clearly,
        masked_and_readonly_paths_hold,
        readonly_root_refuses_writes,
        dev_has_default_nodes_and_spec_devices,
        bind_mounts_honour_their_options,
        namespaced_sysctls_apply_inside_only,
        cgroup_limits_are_applied,
        bad_cgroup_value_fails_and_leaves_nothing,
        oom_kill_is_observed,
        exec_joins_the_running_container,
        terminal_processes_get_a_pty_from_the_container,
        pause_and_resume_freeze_the_cgroup,
        update_changes_resources_of_a_running_container,
        stats_report_cpu_memory_and_pids,
        kill_all_reaches_every_process_and_signals_map_to_128_plus_n,
        no_host_fd_leaks_into_the_container,
        runtime_binary_cannot_be_overwritten_from_the_container,
        spawned_helpers_are_born_in_their_v2_cgroup,
        init_errors_carry_their_cause_and_leave_nothing,
        rootfs_layers_are_mounted_and_unmounted,
        delete_from_a_loaded_state_cleans_up,
        only_cgroup_ancestors_peapod_created_are_removed,
        deleting_a_container_keeps_a_sibling_s_empty_cgroup,
        duplicate_ids_are_refused,
        seccomp_errno_rule_returns_the_chosen_errno,
        seccomp_argument_filter_refuses_one_personality_value_only,
        seccomp_default_errno_ret_answers_unlisted_syscalls,
        seccomp_log_action_does_not_block,
        seccomp_filters_init_and_exec_d_processes_seen_from_the_host,
        seccomp_loads_before_the_caps_drop_without_no_new_privs,
        bad_seccomp_profiles_fail_create_naming_the_field_and_leave_nothing,
    ];
    run_privileged_suite(tests, || {
        sweep_test_cgroups()?;
        assert_no_children()
    });
}
