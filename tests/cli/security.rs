//! Seccomp, pod-level sysctls and the refused security fields through `peapod run -f`, in
//! both modes: what a container can do is checked from inside it (its log), the sandbox's
//! filter through `/proc/1/status` in a pod sharing its pid namespace, the host's sysctl
//! from outside. Embedded mode builds the profiles itself (`peapod::security`); under CRI
//! containerd builds them from the profiles the CLI hands it.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};

use crate::pods::{delete_and_check, logs, uid_of, Cli, Mode};

/// A profile that fails `mkdir`/`mkdirat` with ENOSYS (38) and allows the rest.
const MKDIR_ENOSYS: &str = r#"{
  "defaultAction": "SCMP_ACT_ALLOW",
  "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]
}"#;

/// Writes `yaml` as `<name>.yaml` and runs it with Localhost profiles under `root`.
fn run_pod(cli: &Cli, name: &str, yaml: &str, root: &Path) -> Result<std::process::Output> {
    let file = cli.dir.path().join(format!("{name}.yaml"));
    std::fs::write(&file, yaml)?;
    cli.run(&[
        "run",
        "-f",
        file.to_str().context("path")?,
        "--seccomp-profile-root",
        root.to_str().context("root")?,
    ])
}

/// Waits until container `c` of `pod` logged `done`; returns its log.
fn probe(cli: &Cli, pod: &str, c: &str) -> Result<String> {
    cli.wait_for(&format!("{c}'s probe"), || {
        let l = logs(cli, pod, c)?;
        Ok(l.contains("done\n").then_some(l))
    })
}

/// A container running `script` then sleeping, with `sc` as its securityContext.
fn container(name: &str, sc: &str, script: &str) -> String {
    format!("  - name: {name}\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    securityContext: {sc}\n    command: [sh, -c, '{script}; echo done; exec sleep 3600']\n")
}

/// Runs `yaml` (pod `name`), then `check(cli)`; deletes the pod and checks it is gone.
fn with_pod(mode: Mode, name: &str, yaml: &str, root: &Path, check: impl FnOnce(&Cli) -> Result<()>) -> Result<()> {
    let cli = Cli::new(mode)?;
    let out = run_pod(&cli, name, yaml, root)?;
    ensure!(
        out.status.success(),
        "peapod run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let uid = uid_of(&cli, name)?;
    let result = check(&cli);
    let deleted = delete_and_check(&cli, name, &uid);
    result?;
    deleted
}

/// `Seccomp:` of `/proc/<who>/status` in a container's log (`grep` output).
fn seccomp_mode(log: &str, who: &str) -> Option<String> {
    let prefix = format!("/proc/{who}/status:Seccomp:");
    log.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().to_string())
}

/// RuntimeDefault (what the manifest gets when it says nothing) makes `unshare -U` fail
/// with EPERM; `Unconfined` allows it, and so does `CAP_SYS_ADMIN` under RuntimeDefault,
/// as containerd's profile opens `unshare` to it. The sandbox runs filtered too.
pub fn runtime_default_blocks_user_namespaces_and_unconfined_allows_them(mode: Mode) -> Result<()> {
    // syscall-probe (the busybox image's /bin/syscall-probe) prints `<name>: ok` or
    // `<name>: errno N` for calls busybox cannot make.
    let script = "grep ^Seccomp: /proc/self/status /proc/1/status; unshare -U true 2>&1; echo unshare-rc=$?; \
                  syscall-probe keyctl userfaultfd io_uring_setup";
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: seccomp-default}}\nspec:\n  shareProcessNamespace: true\n  terminationGracePeriodSeconds: 1\n  containers:\n{}{}{}",
        container("dflt", "{}", script),
        container("free", "{seccompProfile: {type: Unconfined}}", script),
        container("admin", "{capabilities: {add: [SYS_ADMIN]}}", script),
    );
    with_pod(mode, "seccomp-default", &yaml, Path::new("/nonexistent"), |cli| {
        let dflt = probe(cli, "seccomp-default", "dflt")?;
        ensure!(
            dflt.contains("Operation not permitted") && dflt.contains("unshare-rc=1"),
            "unshare -U under RuntimeDefault: {dflt:?}"
        );
        ensure!(
            seccomp_mode(&dflt, "self").as_deref() == Some("2"),
            "dflt not filtered: {dflt:?}"
        );
        ensure!(
            dflt.contains("keyctl: errno 1") && dflt.contains("userfaultfd: errno 1"),
            "keyctl and userfaultfd under RuntimeDefault: {dflt:?}"
        );
        // containerd 2.x's profile, which embedded mode transcribes, no longer allows
        // io_uring; containerd 1.6's (CRI mode here) still does.
        if mode == Mode::Embedded {
            ensure!(
                dflt.contains("io_uring_setup: errno 1"),
                "io_uring_setup under RuntimeDefault: {dflt:?}"
            );
        }
        // pid 1 is the pause process: the sandbox has the pod's profile (RuntimeDefault).
        ensure!(
            seccomp_mode(&dflt, "1").as_deref() == Some("2"),
            "sandbox not filtered: {dflt:?}"
        );
        let free = probe(cli, "seccomp-default", "free")?;
        ensure!(free.contains("unshare-rc=0"), "unshare -U under Unconfined: {free:?}");
        ensure!(
            free.contains("keyctl: ok") && free.contains("userfaultfd: ok") && free.contains("io_uring_setup: ok"),
            "keyctl, userfaultfd and io_uring_setup under Unconfined: {free:?}"
        );
        ensure!(
            seccomp_mode(&free, "self").as_deref() == Some("0"),
            "free filtered: {free:?}"
        );
        let admin = probe(cli, "seccomp-default", "admin")?;
        ensure!(
            admin.contains("unshare-rc=0"),
            "unshare -U with CAP_SYS_ADMIN: {admin:?}"
        );
        Ok(())
    })
}

/// A Localhost profile under `--seccomp-profile-root` is applied (mkdir fails with the
/// profile's ENOSYS); a privileged container naming the same profile runs unfiltered; the
/// pod's namespaced sysctls reach the containers and not the host.
pub fn localhost_profiles_apply_privileged_ignores_them_and_pod_sysctls_apply(mode: Mode) -> Result<()> {
    let root = tempfile::tempdir()?;
    std::fs::create_dir(root.path().join("profiles"))?;
    std::fs::write(root.path().join("profiles/mkdir-enosys.json"), MKDIR_ENOSYS)?;
    let host_before = std::fs::read_to_string("/proc/sys/kernel/shm_rmid_forced")?;
    let want = if host_before.trim() == "1" { "0" } else { "1" };
    let local = "{seccompProfile: {type: Localhost, localhostProfile: profiles/mkdir-enosys.json}}";
    let script =
        "grep -H ^Seccomp: /proc/self/status; cat /proc/sys/kernel/shm_rmid_forced; mkdir /tmp/d 2>&1; echo mkdir-rc=$?";
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: seccomp-local}}\nspec:\n  terminationGracePeriodSeconds: 1\n  securityContext:\n    sysctls: [{{name: kernel.shm_rmid_forced, value: \"{want}\"}}]\n  containers:\n{}{}",
        container("local", local, script),
        container(
            "priv",
            "{privileged: true, seccompProfile: {type: Localhost, localhostProfile: profiles/mkdir-enosys.json}}",
            script
        ),
    );
    with_pod(mode, "seccomp-local", &yaml, root.path(), |cli| {
        let local = probe(cli, "seccomp-local", "local")?;
        ensure!(
            local.contains("Function not implemented") && local.contains("mkdir-rc=1"),
            "mkdir under the Localhost profile: {local:?}"
        );
        ensure!(seccomp_mode(&local, "self").as_deref() == Some("2"), "{local:?}");
        ensure!(
            local.lines().any(|l| l == want),
            "kernel.shm_rmid_forced in the pod is not {want}: {local:?}"
        );
        let privileged = probe(cli, "seccomp-local", "priv")?;
        ensure!(
            privileged.contains("mkdir-rc=0") && seccomp_mode(&privileged, "self").as_deref() == Some("0"),
            "a privileged container must ignore the profile: {privileged:?}"
        );
        let host = std::fs::read_to_string("/proc/sys/kernel/shm_rmid_forced")?;
        ensure!(
            host == host_before,
            "the host's kernel.shm_rmid_forced changed: {host:?}"
        );
        Ok(())
    })
}

/// Bad profiles and refused security fields fail `run` naming the field (and the file),
/// and leave no pod, state or containerd object behind.
pub fn bad_security_contexts_fail_by_field_and_create_nothing(mode: Mode) -> Result<()> {
    let cli = Cli::new(mode)?;
    let root = tempfile::tempdir()?;
    std::fs::write(
        root.path().join("broken.json"),
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"#,
    )?;
    std::fs::write(
        root.path().join("unknown-action.json"),
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_EXPLODE"}]}"#,
    )?;
    let local = |file: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: bad}}\nspec:\n  containers:\n  - {{name: c, image: busybox, imagePullPolicy: IfNotPresent, securityContext: {{seccompProfile: {{type: Localhost, localhostProfile: \"{file}\"}}}}}}\n"
        )
    };
    let pod = |spec: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: bad}}\nspec:\n{spec}  containers: [{{name: c, image: busybox, imagePullPolicy: IfNotPresent}}]\n")
    };
    let field = "spec.containers[0].securityContext.seccompProfile.localhostProfile";
    let cases: Vec<(String, Vec<&str>)> = vec![
        (local("missing.json"), vec![field, "missing.json", "cannot read"]),
        (
            local("broken.json"),
            vec![field, "broken.json", "not a seccomp profile"],
        ),
        (
            local("unknown-action.json"),
            vec![field, "unknown-action.json", "syscalls[0].action", "SCMP_ACT_EXPLODE"],
        ),
        (local("/etc/passwd"), vec![field, "relative path without '..'"]),
        (local("../x.json"), vec![field, "relative path without '..'"]),
        (pod("  hostUsers: false\n"), vec!["spec.hostUsers", "user namespaces"]),
        (
            pod("  securityContext: {seLinuxOptions: {level: \"s0:c1,c2\"}}\n"),
            vec!["spec.securityContext.seLinuxOptions", "SELinux"],
        ),
        (
            pod("  securityContext: {sysctls: [{name: vm.swappiness, value: \"1\"}]}\n"),
            vec!["spec.securityContext.sysctls[0].name", "not a namespaced sysctl"],
        ),
        (
            pod("  securityContext: {seccompProfile: {type: Strict}}\n"),
            vec!["spec.securityContext.seccompProfile.type"],
        ),
    ];
    for (yaml, wants) in cases {
        let out = run_pod(&cli, "bad", &yaml, root.path())?;
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            bail!("peapod ran {yaml:?}");
        }
        ensure!(out.status.code() == Some(1), "exit {:?} for {wants:?}", out.status);
        for want in &wants {
            ensure!(err.contains(want), "error for {yaml:?} lacks {want:?}: {err}");
        }
        let pods = cli.state().join("pods");
        ensure!(
            std::fs::read_dir(&pods).map(|d| d.count()).unwrap_or(0) == 0,
            "a refused pod left state in {}",
            pods.display()
        );
        let listed = cli.run(&["get", "pods"])?;
        ensure!(
            listed.stdout.is_empty(),
            "a refused pod was left: {}",
            String::from_utf8_lossy(&listed.stdout)
        );
    }
    cli.assert_no_runtime_leftovers()
}
