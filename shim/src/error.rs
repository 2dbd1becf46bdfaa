//! Task-service errors and their ttrpc codes, in one place: containerd decides on the
//! code (NotFound, AlreadyExists, InvalidArgument, FailedPrecondition, Unimplemented), so
//! each error carries the right one (rust-extensions `crates/shim/src/error.rs`).

use containerd_shim_protos::ttrpc::{self, Code};

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
    /// The sandbox runtime failed.
    #[error(transparent)]
    Container(#[from] sandbox::Error),
    /// The pod's start gate refused the task (KEP-753 ordering).
    #[error(transparent)]
    Gate(#[from] sandbox::supervisor::GateError),
    /// The process's stdio could not be set up.
    #[error(transparent)]
    Io(#[from] crate::io::IoError),
    /// The container's metrics could not be encoded for Stats.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// Anything else.
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    /// The ttrpc status code containerd acts on.
    pub fn code(&self) -> Code {
        match self {
            Self::NotFound(_) => Code::NOT_FOUND,
            Self::AlreadyExists(_) => Code::ALREADY_EXISTS,
            Self::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            Self::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            Self::Unimplemented(_) => Code::UNIMPLEMENTED,
            Self::Container(e) => match e {
                sandbox::Error::Spec(_) => Code::INVALID_ARGUMENT,
                sandbox::Error::AlreadyExists { .. } => Code::ALREADY_EXISTS,
                sandbox::Error::NotFound { .. } => Code::NOT_FOUND,
                sandbox::Error::InvalidStatus { .. } => Code::FAILED_PRECONDITION,
                // Setup errors from init are the user's process or spec (missing binary…).
                sandbox::Error::Init { .. } => Code::FAILED_PRECONDITION,
                _ => Code::INTERNAL,
            },
            Self::Gate(e) => match e {
                sandbox::supervisor::GateError::NotFound { .. } => Code::NOT_FOUND,
                sandbox::supervisor::GateError::Failed { .. } => Code::FAILED_PRECONDITION,
            },
            Self::Io(_) => Code::INVALID_ARGUMENT,
            Self::Metrics(_) | Self::Internal(_) => Code::INTERNAL,
        }
    }
}

impl From<ServiceError> for ttrpc::Error {
    fn from(e: ServiceError) -> Self {
        let message = sandbox::init::chain(&e);
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), message))
    }
}
