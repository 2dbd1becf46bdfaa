//! A pod's members: what each container is to its pod ([`Role`]: init container,
//! sidecar, app container), the containers a pod declares up front, and the restart
//! policy with its back-off.
//!
//! Roles follow KEP-753: a native sidecar is an init container with `restartPolicy:
//! Always`; it starts in init order but keeps running. Restarts follow kubelet's
//! `ShouldContainerBeRestarted` (`pkg/kubelet/container/helpers.go`), the back-off
//! KEP-4603's decay.

use serde::{Deserialize, Serialize};

/// A pod's `restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    /// Restart every container that exits.
    Always,
    /// Restart containers that exit non-zero.
    OnFailure,
    /// Restart nothing (sidecars excepted).
    Never,
}

impl RestartPolicy {
    /// Whether a container of `role` that exited with `code` is restarted (kubelet's
    /// `ShouldContainerBeRestarted`, and KEP-753 for sidecars): sidecars always, until the
    /// pod completes; init containers when they failed, unless `Never`; app containers
    /// by the policy.
    pub fn restarts(self, role: Role, code: i32, pod_completing: bool) -> bool {
        match role {
            Role::Sidecar => !pod_completing,
            Role::Init => self != RestartPolicy::Never && code != 0,
            Role::App => self == RestartPolicy::Always || (self == RestartPolicy::OnFailure && code != 0),
        }
    }

    /// Back-off before restart number `n + 1` (`n` restarts so far): 1 s doubling up to
    /// 60 s, the decay of KEP-4603 (kubelet's `ReduceDefaultCrashLoopBackOffDecay`; the
    /// older default was 10 s up to 300 s).
    pub fn backoff(n: u32) -> std::time::Duration {
        std::time::Duration::from_secs(1u64 << n.min(6)).min(std::time::Duration::from_secs(60))
    }
}

impl std::str::FromStr for RestartPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "Always" => Ok(RestartPolicy::Always),
            "OnFailure" => Ok(RestartPolicy::OnFailure),
            "Never" => Ok(RestartPolicy::Never),
            other => Err(format!("{other:?} is not Always, OnFailure or Never")),
        }
    }
}

/// What a container is to its pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs to completion before later containers start.
    Init,
    /// Starts before later containers and keeps running (an init container with
    /// `restartPolicy: Always`).
    Sidecar,
    /// An ordinary container.
    App,
}

/// A container the sandbox declares (one of the pod's declared containers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredContainer {
    /// Its name in the pod.
    pub name: String,
    /// Its role.
    pub role: Role,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policy_follows_kubelet_and_kep_753() {
        use RestartPolicy::*;
        // Sidecars restart whatever the policy, until the pod completes.
        assert!(Never.restarts(Role::Sidecar, 0, false));
        assert!(!Always.restarts(Role::Sidecar, 1, true));
        // Init containers: only on failure, never under Never.
        assert!(OnFailure.restarts(Role::Init, 1, false) && Always.restarts(Role::Init, 1, false));
        assert!(!Always.restarts(Role::Init, 0, false) && !Never.restarts(Role::Init, 1, false));
        // App containers by the policy.
        assert!(Always.restarts(Role::App, 0, false));
        assert!(OnFailure.restarts(Role::App, 2, false) && !OnFailure.restarts(Role::App, 0, false));
        assert!(!Never.restarts(Role::App, 2, false));
        let secs = |n| RestartPolicy::backoff(n).as_secs();
        assert_eq!([secs(0), secs(1), secs(5), secs(6), secs(40)], [1, 2, 32, 60, 60]);
        assert_eq!("OnFailure".parse::<RestartPolicy>(), Ok(OnFailure));
        assert!("Sometimes".parse::<RestartPolicy>().unwrap_err().contains("Sometimes"));
    }
}
