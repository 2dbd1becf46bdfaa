//! kubelet's image pull back-off, for an embedded pod that waits for an image.
//!
//! kubelet makes sure of a container's image at each sync of its pod
//! (`pkg/kubelet/images/image_manager.go`, `EnsureImageExists`): a failed pull leaves the
//! container Waiting with reason `ErrImagePull` and the pull's error, and starts a
//! back-off per image (`flowcontrol.NewBackOff(backOffPeriod, MaxContainerBackOff)` in
//! `pkg/kubelet/kubelet.go`: 10 s, doubled after each failure, at most 300 s). A sync
//! within the back-off does not pull: the container is Waiting `ImagePullBackOff`,
//! `Back-off pulling image "<ref>"`, with a `BackOff` event. Once the image is there,
//! the containers are created and started.
//!
//! peapod's pod waits the same way with no daemon: `run` creates the pod (sandbox,
//! network, volumes) without its containers, records what it waits for in the pod's
//! `pulls.json` ([`PullState`]) and leaves a process of the CLI's own binary behind
//! (`peapod pull-back-off`, see [`crate::runner::spawn_puller`]) that runs [`wait`]:
//! [`SHOWN_AS_ERR_IMAGE_PULL`] after a failure the reason becomes `ImagePullBackOff`, at
//! the back-off's end it tries again, and once every image is in the store it creates and
//! starts the pod's containers and exits. `delete` ends it first. `ErrImageNeverPull`
//! (`Never` with a missing image) never pulls; each round looks whether the image has
//! arrived in the store (`peapod image import`), as each kubelet sync does.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::imagepull::{ImageWait, Pulled, ERR_IMAGE_PULL, IMAGE_PULL_BACK_OFF};
use crate::podstatus::PodEvent;

/// The first back-off after a failed pull (kubelet's `backOffPeriod`).
pub const INITIAL_BACK_OFF: Duration = Duration::from_secs(10);

/// The longest back-off (kubelet's `MaxContainerBackOff`).
pub const MAX_BACK_OFF: Duration = Duration::from_secs(300);

/// How long after a failed pull its reason stays `ErrImagePull` before it turns into
/// `ImagePullBackOff`: kubelet's next sync of the pod, which in practice comes within a
/// second or two (the failed sync's status update wakes it).
pub const SHOWN_AS_ERR_IMAGE_PULL: Duration = Duration::from_secs(1);

/// How many events `pulls.json` keeps (the oldest go first): a pod that waits for hours
/// is retried every 5 minutes, each round adding a few (the API server expires events
/// after an hour).
pub const MAX_EVENTS: usize = 100;

/// What an embedded pod's images came to: `<state>/pods/<key>/pulls.json`, written by
/// `run` and by the process that waits out the back-off, read by `get` and `describe`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullState {
    /// The images the pod waits for; empty once its containers were created.
    pub waiting: Vec<ImageWait>,
    /// kubelet's image events, oldest first, at most [`MAX_EVENTS`].
    pub events: Vec<PodEvent>,
    /// When the last attempt failed.
    pub failed_at: Option<jiff::Timestamp>,
    /// The back-off after it, in seconds (10, doubled after each failure, at most 300).
    pub back_off_secs: u64,
    /// Why the containers could not be created once the images were there (kubelet's
    /// `CreateContainerError`); the waiting then ends.
    pub failure: Option<String>,
}

/// A failure to read or write `pulls.json`, naming it.
#[derive(Debug, thiserror::Error)]
pub enum PullStateError {
    /// Reading or writing the file failed.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Its contents are not a [`PullState`].
    #[error("{}: not a pull state", path.display())]
    Parse {
        /// The file.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
}

impl PullState {
    /// The state at `path`; `None` when there is none (the pod never waited nor pulled).
    ///
    /// Errors: [`PullStateError`] for a file that cannot be read or parsed.
    pub fn load(path: &Path) -> Result<Option<PullState>, PullStateError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(PullStateError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| PullStateError::Parse {
                path: path.to_path_buf(),
                source,
            })
    }

    /// Writes the state to `path` atomically (a sibling temporary file renamed over it),
    /// so a reader never sees half of it.
    ///
    /// Errors: [`PullStateError::Io`].
    pub fn save(&self, path: &Path) -> Result<(), PullStateError> {
        let io = |source| PullStateError::Io {
            path: path.to_path_buf(),
            source,
        };
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(self).expect("a pull state serializes");
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Takes in one attempt's outcome at `now`: its events, what still waits, and after
    /// a failure the next back-off (10 s the first time, then doubled, at most 300 s).
    pub fn record(&mut self, pulled: Pulled, now: jiff::Timestamp) {
        self.add_events(pulled.events);
        self.waiting = pulled.waiting;
        if self.waiting.is_empty() {
            self.failed_at = None;
            return;
        }
        self.failed_at = Some(now);
        self.back_off_secs = match self.back_off_secs {
            0 => INITIAL_BACK_OFF.as_secs(),
            b => (b * 2).min(MAX_BACK_OFF.as_secs()),
        };
    }

    /// Appends `events`, dropping the oldest beyond [`MAX_EVENTS`].
    pub fn add_events(&mut self, events: Vec<PodEvent>) {
        self.events.extend(events);
        let extra = self.events.len().saturating_sub(MAX_EVENTS);
        self.events.drain(..extra);
    }

    /// kubelet's next sync after a failure: each image a pull may still bring is in
    /// back-off (`ImagePullBackOff`, `Back-off pulling image "<ref>"`, with kubelet's
    /// `BackOff` event and its containers' `Error: ImagePullBackOff`). Returns whether
    /// anything changed.
    pub fn back_off(&mut self, now: jiff::Timestamp) -> bool {
        let mut events = Vec::new();
        for w in self.waiting.iter_mut().filter(|w| w.reason == ERR_IMAGE_PULL) {
            w.reason = IMAGE_PULL_BACK_OFF.to_string();
            w.message = format!("Back-off pulling image {:?}", w.image);
            events.push(PodEvent {
                time: now,
                warning: false,
                reason: "BackOff".into(),
                message: w.message.clone(),
            });
            events.push(PodEvent {
                time: now,
                warning: true,
                reason: "Failed".into(),
                message: format!("Error: {IMAGE_PULL_BACK_OFF}"),
            });
        }
        let changed = !events.is_empty();
        self.add_events(events);
        changed
    }

    /// The image container `name` waits for, if any.
    pub fn wait_of(&self, name: &str) -> Option<&ImageWait> {
        self.waiting.iter().find(|w| w.containers.iter().any(|c| c == name))
    }

    /// When the next attempt is due: the back-off after the last failure (now when none
    /// failed).
    fn next_attempt(&self) -> Option<jiff::Timestamp> {
        let failed = self.failed_at?;
        let secs = i64::try_from(self.back_off_secs).unwrap_or(i64::MAX);
        failed.checked_add(jiff::SignedDuration::from_secs(secs)).ok()
    }
}

/// Why [`wait`] stopped before the pod's containers were created.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// `pulls.json` could not be read or written.
    #[error("pull state")]
    State(#[from] PullStateError),
    /// The pod has no `pulls.json` (deleted, or it never waited).
    #[error("{}: no pull state: the pod waits for no image", path.display())]
    NoState {
        /// The file looked for.
        path: std::path::PathBuf,
    },
    /// An attempt could not look at the images at all (a reference or store error: no
    /// retry mends it).
    #[error("make sure of the images: {0}")]
    Attempt(String),
}

/// Waits out the back-off recorded in `path` and tries again until no image is missing,
/// then calls `start` (never when the state waits for nothing to begin with) (create and start the pod's containers; its error is recorded as
/// the pod's `CreateContainerError`, and ends the wait). `attempt` makes sure of the
/// pod's images once; `sleep` waits (a test passes a fake clock's).
///
/// Errors: [`WaitError`]; the state is left as it was then.
pub fn wait(
    path: &Path,
    mut attempt: impl FnMut() -> Result<Pulled, String>,
    start: impl FnOnce() -> Result<(), String>,
    now: &dyn Fn() -> jiff::Timestamp,
    sleep: &dyn Fn(Duration),
) -> Result<(), WaitError> {
    let load = || {
        PullState::load(path)?.ok_or_else(|| WaitError::NoState {
            path: path.to_path_buf(),
        })
    };
    let sleep_until = |t: jiff::Timestamp| {
        let left = t.duration_since(now());
        if left.is_positive() {
            sleep(left.unsigned_abs());
        }
    };
    let mut state = load()?;
    if state.waiting.is_empty() {
        // Nothing to wait for: the containers were created already.
        return Ok(());
    }
    while !state.waiting.is_empty() {
        if let Some(failed) = state.failed_at {
            sleep_until(failed + jiff::SignedDuration::try_from(SHOWN_AS_ERR_IMAGE_PULL).expect("1 s"));
            if state.back_off(now()) {
                state.save(path)?;
            }
        }
        if let Some(due) = state.next_attempt() {
            sleep_until(due);
        }
        let pulled = attempt().map_err(WaitError::Attempt)?;
        // Re-read: nothing else writes the state while this process lives, but a `delete`
        // may have removed it; a missing file ends the wait.
        state = load()?;
        state.record(pulled, now());
        state.save(path)?;
    }
    let result = start();
    let mut state = load()?;
    if let Err(e) = result {
        state.add_events(vec![PodEvent {
            time: now(),
            warning: true,
            reason: "Failed".into(),
            message: format!("Error: {e}"),
        }]);
        state.failure = Some(e);
    }
    state.save(path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};

    fn wait_for(image: &str, reason: &str) -> ImageWait {
        ImageWait {
            image: image.into(),
            containers: vec!["app".into()],
            reason: reason.into(),
            message: "ErrImagePull: x: not found".into(),
        }
    }

    fn pulled(waiting: Vec<ImageWait>) -> Pulled {
        Pulled {
            waiting,
            events: Vec::new(),
        }
    }

    #[test]
    fn back_off_starts_at_10_s_doubles_and_stops_at_300_s() {
        let mut s = PullState::default();
        let t = jiff::Timestamp::UNIX_EPOCH;
        let mut seen = Vec::new();
        for _ in 0..8 {
            s.record(pulled(vec![wait_for("x", ERR_IMAGE_PULL)]), t);
            seen.push(s.back_off_secs);
        }
        assert_eq!(seen, [10, 20, 40, 80, 160, 300, 300, 300]);
        s.record(pulled(Vec::new()), t);
        assert!(s.waiting.is_empty() && s.failed_at.is_none());
    }

    #[test]
    fn a_sync_after_the_failure_turns_err_image_pull_into_image_pull_back_off_with_kubelets_events() {
        let mut s = PullState::default();
        let never = ImageWait {
            reason: crate::imagepull::ERR_IMAGE_NEVER_PULL.into(),
            ..wait_for("n", "")
        };
        s.record(
            pulled(vec![wait_for("r/x:1", ERR_IMAGE_PULL), never.clone()]),
            jiff::Timestamp::UNIX_EPOCH,
        );
        assert!(s.back_off(jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(s.waiting[0].reason, IMAGE_PULL_BACK_OFF);
        assert_eq!(s.waiting[0].message, "Back-off pulling image \"r/x:1\"");
        // Never is not backed off: it stays as it was.
        assert_eq!(s.waiting[1], never);
        let events: Vec<(bool, &str, &str)> = s
            .events
            .iter()
            .map(|e| (e.warning, e.reason.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            events,
            [
                (false, "BackOff", "Back-off pulling image \"r/x:1\""),
                (true, "Failed", "Error: ImagePullBackOff")
            ]
        );
        assert!(
            !s.back_off(jiff::Timestamp::UNIX_EPOCH),
            "a second sync changes nothing"
        );
        assert_eq!(s.wait_of("app").map(|w| w.image.as_str()), Some("r/x:1"));
        assert!(s.wait_of("other").is_none());
    }

    #[test]
    fn events_keep_the_newest_hundred() {
        let mut s = PullState::default();
        let ev = |i: usize| PodEvent {
            time: jiff::Timestamp::UNIX_EPOCH,
            warning: false,
            reason: "Pulling".into(),
            message: i.to_string(),
        };
        s.add_events((0..150).map(ev).collect());
        assert_eq!(s.events.len(), MAX_EVENTS);
        assert_eq!(s.events[0].message, "50");
    }

    /// The whole wait on a fake clock: two failed attempts, then the image; the sleeps
    /// are the back-offs, and the containers start once.
    #[test]
    fn wait_sleeps_the_back_offs_then_starts_the_containers_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pulls.json");
        let clock = Cell::new(jiff::Timestamp::UNIX_EPOCH);
        let mut first = PullState::default();
        first.record(pulled(vec![wait_for("x", ERR_IMAGE_PULL)]), clock.get());
        first.save(&path).unwrap();
        let slept = RefCell::new(Vec::new());
        let attempts = Cell::new(0);
        let started = Cell::new(0);
        wait(
            &path,
            || {
                attempts.set(attempts.get() + 1);
                // Each attempt sees the state in back-off.
                let s = PullState::load(&path).unwrap().unwrap();
                assert_eq!(s.waiting[0].reason, IMAGE_PULL_BACK_OFF);
                Ok(pulled(if attempts.get() < 3 {
                    vec![wait_for("x", ERR_IMAGE_PULL)]
                } else {
                    Vec::new()
                }))
            },
            || {
                started.set(started.get() + 1);
                Ok(())
            },
            &|| clock.get(),
            &|d| {
                slept.borrow_mut().push(d.as_secs());
                clock.set(clock.get() + jiff::SignedDuration::try_from(d).unwrap());
            },
        )
        .unwrap();
        assert_eq!((attempts.get(), started.get()), (3, 1));
        // 1 s shown as ErrImagePull, the rest of each back-off: 10, 20, 40.
        assert_eq!(*slept.borrow(), [1, 9, 1, 19, 1, 39]);
        let end = PullState::load(&path).unwrap().unwrap();
        assert!(end.waiting.is_empty() && end.failure.is_none(), "{end:?}");
    }

    #[test]
    fn a_start_that_fails_is_recorded_and_ends_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pulls.json");
        let mut first = PullState::default();
        first.record(pulled(vec![wait_for("x", ERR_IMAGE_PULL)]), jiff::Timestamp::UNIX_EPOCH);
        first.save(&path).unwrap();
        wait(
            &path,
            || Ok(pulled(Vec::new())),
            || Err("container app: shim refused".into()),
            &jiff::Timestamp::now,
            &|_| {},
        )
        .unwrap();
        let end = PullState::load(&path).unwrap().unwrap();
        assert_eq!(end.failure.as_deref(), Some("container app: shim refused"));
        assert_eq!(end.events.last().unwrap().message, "Error: container app: shim refused");
        // No state: the pod was deleted.
        std::fs::remove_file(&path).unwrap();
        let err = wait(
            &path,
            || panic!("attempted"),
            || panic!("started"),
            &jiff::Timestamp::now,
            &|_| {},
        );
        assert!(matches!(err, Err(WaitError::NoState { .. })), "{err:?}");
    }
}
