//! Task-service errors and their ttrpc codes, in one place: containerd decides on the
//! code (NotFound, AlreadyExists, InvalidArgument, FailedPrecondition, Unimplemented), so
//! [`ServiceError::code`] is the one function that chooses it, for every variant
//! (rust-extensions `crates/shim/src/error.rs`). Errors of the layers below keep their
//! type (`#[from]`), so a call site only says `?` and the message still names the field
//! or path and the cause.

use containerd_shim_protos::ttrpc::{self, Code};
use proto::annotations::AnnotationError;
use proto::podsandbox::ConfigError;
use sandbox::pod::supervisor::GateError;
use sandbox::pod::{PauseError, PodError};
use sandbox::spec::SpecError;
use sandbox::sys::SysError;

/// A failed Task API call.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No such task or exec process.
    #[error("{0}: not found")]
    NotFound(String),
    /// The id is taken.
    #[error("{0}: already exists")]
    AlreadyExists(String),
    /// The request is malformed or names bad values.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The process is not in a state that allows the call.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// peapod does not implement the call.
    #[error("unimplemented: {0}")]
    Unimplemented(String),
    /// The bundle's OCI spec, or a spec read from annotations, is invalid (names the field).
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The pod's resources (annotations, volumes, pod cgroup) could not be set up or removed.
    #[error(transparent)]
    Pod(#[from] PodError),
    /// The pod's start gate refused the task (KEP-753 ordering).
    #[error(transparent)]
    Gate(#[from] GateError),
    /// The sandbox runtime failed.
    #[error(transparent)]
    Container(#[from] sandbox::Error),
    /// The process's stdio could not be set up.
    #[error(transparent)]
    Io(#[from] crate::io::IoError),
    /// The container's metrics could not be encoded for Stats.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// An Exec request's `spec` is not an OCI `Process` in JSON.
    #[error("exec {exec_id}: spec is not an OCI process")]
    ExecSpec {
        /// The exec id.
        exec_id: String,
        /// Cause, from the JSON parser.
        #[source]
        source: serde_json::Error,
    },
    /// An Update request's `resources` are not OCI `LinuxResources` in JSON.
    #[error("update {id}: resources are not OCI LinuxResources")]
    Resources {
        /// The task id.
        id: String,
        /// Cause, from the JSON parser.
        #[source]
        source: serde_json::Error,
    },
    /// A peapod or CRI annotation of the request or the bundle is malformed or out of
    /// bounds (names the key).
    #[error(transparent)]
    Annotation(#[from] AnnotationError),
    /// A container's annotations do not place it in a pod (names the key).
    #[error("container {id}")]
    Member {
        /// The task id.
        id: String,
        /// Cause.
        #[source]
        source: AnnotationError,
    },
    /// Signalling an exec'd process failed.
    #[error("kill exec {exec_id}")]
    KillExec {
        /// The exec id.
        exec_id: String,
        /// Cause (`pidfd_send_signal`).
        #[source]
        source: SysError,
    },
    /// Resizing a process's terminal failed.
    #[error("task {id}: resize the terminal of {}", if exec_id.is_empty() { "init" } else { exec_id })]
    ResizePty {
        /// The task id.
        id: String,
        /// The exec id, empty for the task's init.
        exec_id: String,
        /// Cause (`TIOCSWINSZ`).
        #[source]
        source: SysError,
    },
    /// CreateSandbox's options (CRI's `PodSandboxConfig`) or netns are refused (names
    /// the field).
    #[error(transparent)]
    SandboxConfig(#[from] ConfigError),
    /// The pod's pause process cannot be run (no static `peapod-pause`, its root).
    #[error(transparent)]
    Pause(#[from] PauseError),
    /// Anything else.
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    /// The ttrpc status code containerd acts on: what the caller got wrong
    /// (InvalidArgument), what is missing or taken (NotFound, AlreadyExists), what the
    /// state forbids (FailedPrecondition), what peapod does not do (Unimplemented), and
    /// Internal for failures of the host.
    pub fn code(&self) -> Code {
        match self {
            Self::NotFound(_) => Code::NOT_FOUND,
            Self::AlreadyExists(_) => Code::ALREADY_EXISTS,
            Self::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            Self::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            Self::Unimplemented(_) => Code::UNIMPLEMENTED,
            Self::Spec(_) => Code::INVALID_ARGUMENT,
            Self::Pod(e) => match e {
                PodError::Io { .. } | PodError::Cgroup { .. } => Code::INTERNAL,
            },
            Self::Gate(e) => match e {
                GateError::NotFound { .. } => Code::NOT_FOUND,
                GateError::Failed { .. } => Code::FAILED_PRECONDITION,
            },
            Self::Container(e) => match e {
                sandbox::Error::Spec(_) => Code::INVALID_ARGUMENT,
                sandbox::Error::AlreadyExists { .. } => Code::ALREADY_EXISTS,
                sandbox::Error::NotFound { .. } => Code::NOT_FOUND,
                sandbox::Error::InvalidStatus { .. } => Code::FAILED_PRECONDITION,
                // Setup errors from init are the user's process or spec (missing binary…).
                sandbox::Error::Init { .. } => Code::FAILED_PRECONDITION,
                _ => Code::INTERNAL,
            },
            Self::Io(_) => Code::INVALID_ARGUMENT,
            Self::Annotation(_) | Self::Member { .. } | Self::ExecSpec { .. } | Self::Resources { .. } => {
                Code::INVALID_ARGUMENT
            }
            Self::SandboxConfig(e) => match e {
                ConfigError::Unsupported { .. } => Code::UNIMPLEMENTED,
                ConfigError::TypeUrl { .. } | ConfigError::Decode { .. } | ConfigError::Invalid { .. } => {
                    Code::INVALID_ARGUMENT
                }
            },
            // The node lacks the static pause binary: the host's setup, not the request.
            Self::Pause(e) => match e {
                PauseError::NotFound { .. } | PauseError::Dynamic { .. } => Code::FAILED_PRECONDITION,
                PauseError::Read { .. } | PauseError::Root { .. } => Code::INTERNAL,
            },
            Self::Metrics(_) | Self::KillExec { .. } | Self::ResizePty { .. } | Self::Internal(_) => Code::INTERNAL,
        }
    }
}

impl From<ServiceError> for ttrpc::Error {
    fn from(e: ServiceError) -> Self {
        let message = sandbox::error::chain(&e);
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_error() -> SpecError {
        sandbox::spec::validate_id("-bad").unwrap_err()
    }

    #[test]
    fn typed_errors_keep_the_codes_containerd_sees() {
        assert_eq!(ServiceError::from(spec_error()).code(), Code::INVALID_ARGUMENT);
        let grace = proto::annotations::parse_grace_seconds("soon").unwrap_err();
        assert_eq!(ServiceError::from(grace).code(), Code::INVALID_ARGUMENT);
        let io = PodError::Io {
            id: "p".into(),
            op: "create",
            path: "/x".into(),
            source: std::io::Error::other("boom"),
        };
        assert_eq!(ServiceError::from(io).code(), Code::INTERNAL);
        let failed = GateError::Failed {
            name: "a".into(),
            id: "a-1".into(),
            blocker: "i".into(),
            code: 1,
        };
        assert_eq!(ServiceError::from(failed).code(), Code::FAILED_PRECONDITION);
        assert_eq!(
            ServiceError::from(GateError::NotFound { id: "a-1".into() }).code(),
            Code::NOT_FOUND
        );
    }

    #[test]
    fn messages_name_the_field_and_the_cause() {
        let e = ServiceError::from(spec_error());
        let status = match ttrpc::Error::from(e) {
            ttrpc::Error::RpcStatus(s) => s,
            other => panic!("{other:?}"),
        };
        assert_eq!(status.code(), Code::INVALID_ARGUMENT);
        assert!(
            status.message.contains("id") && status.message.contains("\"-bad\" must match"),
            "{}",
            status.message
        );

        let source = serde_json::from_str::<u32>("x").unwrap_err();
        let e = ServiceError::ExecSpec {
            exec_id: "e1".into(),
            source,
        };
        let msg = sandbox::error::chain(&e);
        assert!(
            msg.starts_with("exec e1: spec") && msg.contains("expected value"),
            "{msg}"
        );
    }
}
