//! Container lifecycle hooks (`lifecycle.postStart`, `lifecycle.preStop`), with kubelet's
//! semantics (`pkg/kubelet/lifecycle/handlers.go`, `kuberuntime_container.go`), for a
//! host that supervises its pods itself.
//!
//! - `postStart` runs right after the container started; the container is not started
//!   (nor ready, nor probed) until it returned; a failure kills the container
//!   (`FailedPostStartHook`), which is then restarted by the pod's restart policy.
//! - `preStop` runs before the SIGTERM of a pod's termination (every member's at once,
//!   [`crate::pod::supervisor::terminate`]) and counts against the grace period: the
//!   SIGTERM follows when the hooks returned, and the SIGKILL comes when what is left of
//!   the grace is over, at least 2 s after the hooks (kubelet's
//!   `minimumGracePeriodInSeconds`). A failure is reported (`FailedPreStopHook`) and the
//!   termination goes on.
//!
//! Handlers: `exec` (run by the host in the container; a non-zero exit fails), `httpGet`
//! (only a failed connection fails, not the status, as kubelet), `sleep` (seconds).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::pod::probe::{http_status, HttpGet};

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HookKind {
    /// `lifecycle.postStart`.
    PostStart,
    /// `lifecycle.preStop`.
    PreStop,
}

/// A container's hooks (`lifecycle`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hooks {
    /// `postStart`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_start: Option<Hook>,
    /// `preStop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_stop: Option<Hook>,
}

impl Hooks {
    /// No hook declared.
    pub fn is_empty(&self) -> bool {
        self.post_start.is_none() && self.pre_stop.is_none()
    }
}

/// One hook's handler (`v1.LifecycleHandler`; `tcpSocket` is refused before it gets here,
/// kubelet ignores it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Hook {
    /// `exec`: argv run in the container; exit code 0 is success.
    Exec {
        /// argv, no shell.
        command: Vec<String>,
    },
    /// `httpGet`: a `GET`; only a failed connection fails.
    HttpGet(HttpGet),
    /// `sleep`: waits this many seconds.
    Sleep {
        /// Seconds.
        seconds: u64,
    },
}

impl Hook {
    /// How kubelet's messages name the handler: `Exec lifecycle hook ([cmd args])`,
    /// `HTTP lifecycle hook (/path)`, `Sleep lifecycle hook (5)`.
    pub fn describe(&self) -> String {
        match self {
            Hook::Exec { command } => format!("Exec lifecycle hook ([{}])", command.join(" ")),
            Hook::HttpGet(g) => format!(
                "HTTP lifecycle hook ({})",
                if g.path.is_empty() { "/" } else { &g.path }
            ),
            Hook::Sleep { seconds } => format!("Sleep lifecycle hook ({seconds})"),
        }
    }
}

/// Runs a hook that is no `exec` (the host runs those in the container): `httpGet` from
/// the calling thread's network namespace, `sleep`; either ends by `deadline`.
///
/// Errors: the connection's failure, or the deadline passing first.
pub fn run_network_or_sleep(hook: &Hook, deadline: Instant) -> Result<(), String> {
    let left = deadline.saturating_duration_since(Instant::now());
    match hook {
        Hook::Exec { .. } => Err("an exec hook is run by the host".into()),
        Hook::HttpGet(get) => http_status(get, left.max(Duration::from_millis(1))).map(|_| ()),
        Hook::Sleep { seconds } => {
            let want = Duration::from_secs(*seconds);
            std::thread::sleep(want.min(left));
            if want > left {
                Err(format!("sleep of {seconds}s cut short by the grace period"))
            } else {
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_read_kubernetes_field_names_and_describe_as_kubelet() {
        let h: Hooks = serde_json::from_str(
            r#"{"postStart":{"exec":{"command":["sh","-c","echo hi"]}},"preStop":{"sleep":{"seconds":3}}}"#,
        )
        .unwrap();
        assert_eq!(
            h.post_start.as_ref().unwrap().describe(),
            "Exec lifecycle hook ([sh -c echo hi])"
        );
        assert_eq!(h.pre_stop, Some(Hook::Sleep { seconds: 3 }));
        assert!(serde_json::from_str::<Hooks>(r#"{"prestop":{}}"#).is_err());
        // A sleep is cut at the deadline and says so.
        let t0 = Instant::now();
        let cut = run_network_or_sleep(&Hook::Sleep { seconds: 5 }, t0 + Duration::from_millis(50));
        assert!(cut.is_err() && t0.elapsed() < Duration::from_secs(1));
        assert!(run_network_or_sleep(&Hook::Sleep { seconds: 0 }, t0 + Duration::from_secs(1)).is_ok());
    }
}
