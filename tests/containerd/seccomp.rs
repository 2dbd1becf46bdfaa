//! seccomp through CRI (issue 13): the profiles the kubelet sends for a Pod's
//! `seccompProfile` give the same result under the `runc` handler and under `peapod`.
//!
//! containerd 1.6 turns CRI's `SecurityProfile` into the spec's `linux.seccomp`
//! (`pkg/cri/server/container_create_linux.go`, `generateSeccompSpecOpts`): its default
//! profile for `RuntimeDefault` (and for the deprecated `seccomp_profile_path`
//! `docker/default`), the JSON file named by `localhost_ref` for `Localhost`, nothing for
//! `Unconfined`, for no profile at all, and for a privileged container. The runtime
//! applies it to the container's init and to every exec. What each test checks is seen
//! from inside the container (`Seccomp:` in `/proc/self/status`, the error a blocked call
//! gets) and, for the sandbox, from the host (`/proc/<pause pid>/status`).
//!
//! The critest cases are those of kubernetes-sigs/cri-tools
//! `pkg/validate/security_context_linux.go` (`Context("SeccompProfilePath")`).

use anyhow::{ensure, Context, Result};
use peapod_tests::containerd::{Containerd, PEAPOD_HANDLER};
use peapod_tests::cri::{self, api, container_config, container_security, pod_security, seccomp, Pod, ProfileDir};
use std::time::Duration;

use super::Runtime;

/// `unshare(CLONE_NEWUSER)` from busybox, then its exit code: the user-namespace entry
/// point of CVE-2022-0185 and CVE-2024-1086, blocked by containerd's default profile
/// (`unshare` needs CAP_SYS_ADMIN there) and allowed to root without it otherwise.
const UNSHARE_USER: &str = "unshare -U true; echo \"unshare -U: $?\"";

/// The other calls containerd's default profile refuses to a container without
/// CAP_SYS_ADMIN, made by the busybox image's `/bin/syscall-probe`: `keyctl` (keyrings, the
/// class of CVE-2022-0185's neighbours) and `userfaultfd` (in its unprivileged user-mode
/// form), each printed as `<name>: ok` or `<name>: errno N`. (`io_uring_setup` is left
/// out here: containerd 1.6's default profile still allows it; the CLI tier checks it
/// under the profile peapod transcribes from containerd 2.3.)
const PROBE: &str = "syscall-probe keyctl userfaultfd";

/// Prints the `Seccomp:` line of the shell's own status (0 off, 2 filter).
const SECCOMP_LINE: &str = "grep '^Seccomp:' /proc/self/status";

/// How long a container's probe script may take to log its last line.
const LOG_TIMEOUT: Duration = Duration::from_secs(10);

/// A profile that allows everything but what `syscalls` (a JSON array of OCI
/// `linux.seccomp.syscalls` entries) says.
fn allow_all_but(syscalls: &str) -> String {
    format!(r#"{{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {syscalls}}}"#)
}

/// Starts a container named `name` in `pod` running `script`, then `echo end` on stdout
/// and on stderr and a long sleep (to exec into), with `secure` applied to its security
/// context. Returns its id and its log up to both `end`s as `<stream>: <message>` lines,
/// stdout's first, then stderr's: each stream keeps its order, but containerd copies them
/// from separate pipes, so how they interleave in the log is not the order of the writes.
fn probe(
    cri: &cri::CriClient,
    pod: &Pod,
    name: &str,
    script: &str,
    secure: impl FnOnce(&mut api::LinuxContainerSecurityContext),
) -> Result<(String, Vec<String>)> {
    let full = format!("{script}; echo end; echo end >&2; exec sleep 3600");
    let mut config = container_config(name, &["sh", "-c", &full]);
    secure(container_security(&mut config));
    let id = pod.start(cri, &config)?;
    let ended = |log: &[cri::LogLine]| {
        ["stdout", "stderr"]
            .iter()
            .all(|s| log.iter().any(|l| l.stream == *s && l.message == "end"))
    };
    let log = pod.wait_log(&config, ended, LOG_TIMEOUT)?;
    let lines = ["stdout", "stderr"]
        .iter()
        .flat_map(|s| log.iter().filter(move |l| l.stream == *s))
        .map(|l| format!("{}: {}", l.stream, l.message))
        .collect();
    Ok((id, lines))
}

/// `lines` has a line equal to `want`.
fn has(lines: &[String], want: &str) -> bool {
    lines.iter().any(|l| l == want)
}

/// A pod config for `name` with `profile` as the sandbox's seccomp profile.
fn pod_with_profile(
    ctrd: &Containerd,
    name: &str,
    profile: Option<api::SecurityProfile>,
) -> Result<api::PodSandboxConfig> {
    let mut config = cri::pod_config(ctrd, name)?;
    pod_security(&mut config).seccomp = profile;
    Ok(config)
}

/// `RuntimeDefault` on the sandbox and the container: the container's processes run
/// under a filter (`Seccomp: 2`), `unshare -U` fails with EPERM, and the pause process is
/// filtered too (seen from the host).
pub fn cri_seccomp_runtime_default_blocks_user_namespaces(ctrd: &Containerd, rt: &Runtime) -> Result<()> {
    let cri = ctrd.cri()?;
    let config = pod_with_profile(ctrd, "sc-default", Some(seccomp::runtime_default()))?;
    let pod = Pod::run_config(&cri, config, rt.handler)?;
    let result = (|| {
        let pause = cri::sandbox_pid(&cri, &pod.id)?;
        let mode = cri::seccomp_mode(pause)?;
        ensure!(mode == "2", "the pause process {pause} has Seccomp: {mode}, want 2");
        let (id, log) = probe(
            &cri,
            &pod,
            "c",
            &format!("{SECCOMP_LINE}; {UNSHARE_USER}; {PROBE}"),
            |sc| {
                sc.seccomp = Some(seccomp::runtime_default());
            },
        )?;
        ensure!(has(&log, "stdout: Seccomp:\t2"), "container not filtered: {log:#?}");
        ensure!(
            has(&log, "stdout: keyctl: errno 1") && has(&log, "stdout: userfaultfd: errno 1"),
            "keyctl and userfaultfd were not refused with EPERM: {log:#?}"
        );
        ensure!(
            has(&log, "stdout: unshare -U: 1")
                && log
                    .iter()
                    .any(|l| l.starts_with("stderr: unshare:") && l.ends_with("Operation not permitted")),
            "unshare -U was not refused with EPERM: {log:#?}"
        );
        Ok(id)
    })();
    pod.remove_and_check_gone(ctrd, &cri, result)?;
    Ok(())
}

/// `Unconfined` on the sandbox and the container: no filter anywhere (`Seccomp: 0`), and
/// root without CAP_SYS_ADMIN may create a user namespace and call `keyctl` and
/// `userfaultfd`.
pub fn cri_seccomp_unconfined_allows_user_namespaces(ctrd: &Containerd, rt: &Runtime) -> Result<()> {
    let cri = ctrd.cri()?;
    let config = pod_with_profile(ctrd, "sc-unconf", Some(seccomp::unconfined()))?;
    let pod = Pod::run_config(&cri, config, rt.handler)?;
    let result = (|| {
        let pause = cri::sandbox_pid(&cri, &pod.id)?;
        let mode = cri::seccomp_mode(pause)?;
        ensure!(mode == "0", "the pause process {pause} has Seccomp: {mode}, want 0");
        let (id, log) = probe(
            &cri,
            &pod,
            "c",
            &format!("{SECCOMP_LINE}; {UNSHARE_USER}; {PROBE}"),
            |sc| {
                sc.seccomp = Some(seccomp::unconfined());
            },
        )?;
        ensure!(
            log == [
                "stdout: Seccomp:\t0",
                "stdout: unshare -U: 0",
                "stdout: keyctl: ok",
                "stdout: userfaultfd: ok",
                "stdout: end",
                "stderr: end"
            ],
            "want no filter and unshare -U allowed: {log:#?}"
        );
        Ok(id)
    })();
    pod.remove_and_check_gone(ctrd, &cri, result)?;
    Ok(())
}

/// A process exec'd into a `RuntimeDefault` container (CRI `ExecSync`) runs under the
/// container's filter: `Seccomp: 2` in its own status, `unshare -U` refused.
pub fn cri_seccomp_exec_into_a_runtime_default_container_is_filtered(ctrd: &Containerd, rt: &Runtime) -> Result<()> {
    let cri = ctrd.cri()?;
    let pod = Pod::run(ctrd, &cri, "sc-exec", rt.handler)?;
    let result = (|| {
        let mut config = container_config("c", &["sleep", "3600"]);
        container_security(&mut config).seccomp = Some(seccomp::runtime_default());
        let id = pod.start_running(&cri, &config)?;
        let out = cri::exec(&cri, &id, &["sh", "-c", &format!("{SECCOMP_LINE}; unshare -U true")])?;
        ensure!(
            out.exit_code == 1
                && out.stdout == "Seccomp:\t2\n"
                && out.stderr.starts_with("unshare:")
                && out.stderr.trim_end().ends_with("Operation not permitted"),
            "exec not filtered: {out:?}"
        );
        Ok(id)
    })();
    pod.remove_and_check_gone(ctrd, &cri, result)?;
    Ok(())
}

/// A `Localhost` profile that allows everything but `mkdir`, which gets errno 38 (ENOSYS,
/// the profile's `errnoRet`): busybox's `mkdir` reports "Function not implemented" and
/// other writes still work.
pub fn cri_seccomp_localhost_profile_returns_its_errno(ctrd: &Containerd, rt: &Runtime) -> Result<()> {
    let profiles = ProfileDir::new()?;
    let profile = profiles.write(
        "mkdir-enosys.json",
        &allow_all_but(r#"[{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]"#),
    )?;
    let cri = ctrd.cri()?;
    let pod = Pod::run(ctrd, &cri, "sc-errno", rt.handler)?;
    let result = (|| {
        let script = format!("{SECCOMP_LINE}; mkdir /tmp/d; echo \"mkdir: $?\"; touch /tmp/f && echo touched");
        let (id, log) = probe(&cri, &pod, "c", &script, |sc| {
            sc.seccomp = Some(seccomp::localhost(&profile));
        })?;
        ensure!(
            log == [
                "stdout: Seccomp:\t2",
                "stdout: mkdir: 1",
                "stdout: touched",
                "stdout: end",
                "stderr: mkdir: can't create directory '/tmp/d': Function not implemented",
                "stderr: end",
            ],
            "want mkdir refused with ENOSYS and touch allowed: {log:#?}"
        );
        Ok(id)
    })();
    pod.remove_and_check_gone(ctrd, &cri, result)?;
    profiles.remove()
}

/// A `Localhost` profile with an argument filter: `personality(PER_LINUX32)` (0x0008,
/// busybox `linux32`) gets EPERM, `personality(PER_LINUX)` (0, busybox `linux64`) is
/// allowed.
pub fn cri_seccomp_localhost_profile_filters_personality_by_argument(ctrd: &Containerd, rt: &Runtime) -> Result<()> {
    let profiles = ProfileDir::new()?;
    let profile = profiles.write(
        "personality-linux32.json",
        &allow_all_but(
            r#"[{"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}]"#,
        ),
    )?;
    let cri = ctrd.cri()?;
    let pod = Pod::run(ctrd, &cri, "sc-args", rt.handler)?;
    let result = (|| {
        let script = "linux32 true; echo \"linux32: $?\"; linux64 true; echo \"linux64: $?\"";
        let (id, log) = probe(&cri, &pod, "c", script, |sc| {
            sc.seccomp = Some(seccomp::localhost(&profile));
        })?;
        ensure!(
            has(&log, "stdout: linux32: 1")
                && log
                    .iter()
                    .any(|l| l.starts_with("stderr: linux32:") && l.ends_with("Operation not permitted"))
                && has(&log, "stdout: linux64: 0"),
            "want personality(0x8) refused and personality(0) allowed: {log:#?}"
        );
        Ok(id)
    })();
    pod.remove_and_check_gone(ctrd, &cri, result)?;
    profiles.remove()
}

/// critest's `Localhost` cases: a profile blocking `chmod`/`fchmodat` makes `chmod 400 /`
/// fail with EPERM; a profile blocking `sethostname` blocks it even with CAP_SYS_ADMIN
/// added, while `Unconfined` with CAP_SYS_ADMIN may set the hostname.
pub fn cri_seccomp_critest_localhost_profiles_block_chmod_and_sethostname(
    ctrd: &Containerd,
    rt: &Runtime,
) -> Result<()> {
    let profiles = ProfileDir::new()?;
    let chmod = profiles.write(
        "block-chmod.json",
        &allow_all_but(r#"[{"names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO"}]"#),
    )?;
    let hostname = profiles.write(
        "block-host-name.json",
        &allow_all_but(r#"[{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO"}]"#),
    )?;
    let cri = ctrd.cri()?;
    let pod = Pod::run(ctrd, &cri, "sc-critest", rt.handler)?;
    let result = (|| {
        let start = |name: &str, profile: api::SecurityProfile, sys_admin: bool| {
            let mut config = container_config(name, &["sleep", "3600"]);
            let sc = container_security(&mut config);
            sc.seccomp = Some(profile);
            if sys_admin {
                sc.capabilities = Some(api::Capability {
                    add_capabilities: vec!["SYS_ADMIN".into()],
                    ..Default::default()
                });
            }
            pod.start_running(&cri, &config)
        };
        let chmod_id = start("chmod", seccomp::localhost(&chmod), false)?;
        let out = cri::exec(&cri, &chmod_id, &["chmod", "400", "/"])?;
        ensure!(
            out.exit_code != 0 && out.stderr.contains("Operation not permitted"),
            "chmod 400 / under the chmod-blocking profile: {out:?}"
        );

        let blocked = start("blocked", seccomp::localhost(&hostname), true)?;
        let out = cri::exec(&cri, &blocked, &["hostname", "ANewHostName"])?;
        ensure!(
            out.exit_code != 0 && out.stderr.contains("Operation not permitted"),
            "hostname with CAP_SYS_ADMIN under the sethostname-blocking profile: {out:?}"
        );
        let name = cri::exec(&cri, &blocked, &["hostname"])?;
        ensure!(name.stdout == "sc-critest\n", "the hostname changed: {name:?}");

        let unconfined = start("unconfined", seccomp::unconfined(), true)?;
        let out = cri::exec(&cri, &unconfined, &["sh", "-c", "hostname ANewHostName && hostname"])?;
        ensure!(
            out.exit_code == 0 && out.stdout == "ANewHostName\n",
            "hostname with CAP_SYS_ADMIN, Unconfined: {out:?}"
        );
        Ok(vec![chmod_id, blocked, unconfined])
    })();
    pod.remove_and_check_gone(ctrd, &cri, result)?;
    profiles.remove()
}

/// critest's default cases: an empty `SecurityProfile` (type 0, `RuntimeDefault`) and the
/// deprecated `seccomp_profile_path: docker/default` both give containerd's default
/// profile (`Seccomp: 2`, `unshare -U` refused); no profile at all is unconfined.
pub fn cri_seccomp_critest_docker_default_is_runtime_default_and_nil_is_unconfined(
    ctrd: &Containerd,
    rt: &Runtime,
) -> Result<()> {
    let cri = ctrd.cri()?;
    let pod = Pod::run(ctrd, &cri, "sc-dockerdef", rt.handler)?;
    let result = (|| {
        let script = format!("{SECCOMP_LINE}; {UNSHARE_USER}");
        let (empty, empty_log) = probe(&cri, &pod, "empty", &script, |sc| {
            sc.seccomp = Some(api::SecurityProfile::default());
        })?;
        #[allow(deprecated)]
        let (docker, docker_log) = probe(&cri, &pod, "docker", &script, |sc| {
            sc.seccomp_profile_path = "docker/default".into();
        })?;
        let (nil, nil_log) = probe(&cri, &pod, "nil", &script, |sc| sc.seccomp = None)?;
        for (what, log) in [("SecurityProfile{}", &empty_log), ("docker/default", &docker_log)] {
            ensure!(
                has(log, "stdout: Seccomp:\t2") && has(log, "stdout: unshare -U: 1"),
                "{what} is not the default profile: {log:#?}"
            );
        }
        ensure!(
            nil_log
                == [
                    "stdout: Seccomp:\t0",
                    "stdout: unshare -U: 0",
                    "stdout: end",
                    "stderr: end"
                ],
            "no profile is not unconfined: {nil_log:#?}"
        );
        Ok(vec![empty, docker, nil])
    })();
    pod.remove_and_check_gone(ctrd, &cri, result)?;
    Ok(())
}

/// critest's privileged case: a privileged container ignores its `Localhost` profile
/// (containerd sends no `linux.seccomp`): its init has `Seccomp: 0` and the blocked
/// `sethostname` works.
pub fn cri_seccomp_privileged_container_ignores_its_profile(ctrd: &Containerd, rt: &Runtime) -> Result<()> {
    let profiles = ProfileDir::new()?;
    let hostname = profiles.write(
        "block-host-name.json",
        &allow_all_but(r#"[{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO"}]"#),
    )?;
    let cri = ctrd.cri()?;
    let mut config = cri::pod_config(ctrd, "sc-priv")?;
    pod_security(&mut config).privileged = true;
    let pod = Pod::run_config(&cri, config, rt.handler)?;
    let result = (|| {
        let mut config = container_config("c", &["sleep", "3600"]);
        let sc = container_security(&mut config);
        sc.privileged = true;
        sc.seccomp = Some(seccomp::localhost(&hostname));
        let id = pod.start_running(&cri, &config)?;
        let out = cri::exec(
            &cri,
            &id,
            &[
                "sh",
                "-c",
                "grep '^Seccomp:' /proc/1/status && hostname ANewHostName && hostname",
            ],
        )?;
        ensure!(
            out.exit_code == 0 && out.stdout == "Seccomp:\t0\nANewHostName\n",
            "the privileged container is filtered: {out:?}"
        );
        Ok(id)
    })();
    pod.remove_and_check_gone(ctrd, &cri, result)?;
    profiles.remove()
}

/// A `Localhost` profile that is missing or not JSON fails `CreateContainer` (containerd
/// reads it: "cannot load seccomp profile" / "decoding seccomp profile failed", naming the
/// file) and leaves nothing: the pod lists no container, and the name is free again for a
/// container with a good profile.
pub fn cri_seccomp_bad_localhost_profile_fails_create_and_leaves_nothing(
    ctrd: &Containerd,
    rt: &Runtime,
) -> Result<()> {
    let profiles = ProfileDir::new()?;
    let missing = profiles.path().join("missing.json");
    let malformed = profiles.write("malformed.json", r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": ["#)?;
    let good = profiles.write("good.json", &allow_all_but("[]"))?;
    let cri = ctrd.cri()?;
    let pod = Pod::run(ctrd, &cri, "sc-bad", rt.handler)?;
    let result = (|| {
        let config = |profile: &std::path::Path| {
            let mut config = container_config("c", &["sleep", "3600"]);
            container_security(&mut config).seccomp = Some(seccomp::localhost(profile));
            config
        };
        for (profile, want) in [
            (&missing, "cannot load seccomp profile"),
            (&malformed, "decoding seccomp profile failed"),
        ] {
            let err = match pod.create(&cri, &config(profile)) {
                Ok(id) => anyhow::bail!("CreateContainer with {} succeeded: {id}", profile.display()),
                Err(e) => format!("{e:#}"),
            };
            ensure!(
                err.contains(want) && err.contains(&*profile.to_string_lossy()),
                "CreateContainer with {}: want {want:?} naming the file, got: {err}",
                profile.display()
            );
            let listed = pod.containers(&cri)?;
            ensure!(listed.is_empty(), "a failed create left containers: {listed:?}");
        }
        let id = pod
            .create(&cri, &config(&good))
            .context("the name is not free after the failed creates")?;
        Ok(id)
    })();
    pod.remove_and_check_gone(ctrd, &cri, result)?;
    profiles.remove()
}

/// A `Localhost` profile that is JSON but names an unknown action or comparison operator
/// passes containerd (it copies the strings into `linux.seccomp`) and reaches the runtime,
/// which refuses it when the task is created, in `StartContainer`: the error names the
/// bad value (and, from peapod, its field), CRI reports the container exited with reason `StartError`, and once removed
/// nothing of it is left (no task, shim state, cgroup or mount).
pub fn cri_seccomp_unknown_action_or_operator_fails_start_and_leaves_nothing(
    ctrd: &Containerd,
    rt: &Runtime,
) -> Result<()> {
    let profiles = ProfileDir::new()?;
    let action = profiles.write(
        "unknown-action.json",
        &allow_all_but(r#"[{"names": ["mkdir"], "action": "SCMP_ACT_BOGUS"}]"#),
    )?;
    let operator = profiles.write(
        "unknown-operator.json",
        &allow_all_but(
            r#"[{"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_BOGUS"}]}]"#,
        ),
    )?;
    let cri = ctrd.cri()?;
    let pod = Pod::run(ctrd, &cri, "sc-badrt", rt.handler)?;
    let result = (|| {
        let mut ids = Vec::new();
        for (name, profile, bad, field) in [
            ("action", &action, "SCMP_ACT_BOGUS", "linux.seccomp.syscalls[0].action"),
            (
                "operator",
                &operator,
                "SCMP_CMP_BOGUS",
                "linux.seccomp.syscalls[0].args[0].op",
            ),
        ] {
            let mut config = container_config(name, &["sleep", "3600"]);
            container_security(&mut config).seccomp = Some(seccomp::localhost(profile));
            let id = pod.create(&cri, &config)?;
            ids.push(id.clone());
            let err = match cri.start_container(&id) {
                Ok(()) => anyhow::bail!("StartContainer with an unknown {name} succeeded"),
                Err(e) => format!("{e:#}"),
            };
            ensure!(
                err.contains(bad),
                "StartContainer with {bad}: the error does not name it: {err}"
            );
            // runc names the value only ("string SCMP_ACT_BOGUS is not a valid action for
            // seccomp"); peapod names the field too, in the OCI JSON spelling.
            ensure!(
                rt.handler != PEAPOD_HANDLER || err.contains(field),
                "StartContainer with {bad}: the error does not name {field}: {err}"
            );
            let status = cri::wait_container_state(&cri, &id, api::ContainerState::ContainerExited, Duration::ZERO)?;
            ensure!(
                status.reason == "StartError",
                "container with {bad}: reason {:?}, message {:?}",
                status.reason,
                status.message
            );
            cri.remove_container(&id)?;
            ctrd.assert_gone(&[&id])?;
        }
        Ok(ids)
    })();
    pod.remove_and_check_gone(ctrd, &cri, result)?;
    profiles.remove()
}
