//! The errors a driver reports, by kind. [`crate::rpc::dispatch`] is the only place that turns them into
//! `Bosh::Clouds::*` error objects; drivers only say *what* went wrong.
use crate::exec::ExecError;

/// What a driver can report. The message of every variant is a sentence fragment a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("VM {0} not found")]
    VmNotFound(String),
    #[error("disk {0} not found")]
    DiskNotFound(String),
    #[error("disk {disk} is not attached to VM {vm}")]
    DiskNotAttached { vm: String, disk: String },
    #[error("stemcell {0} not found")]
    StemcellNotFound(String),
    #[error("snapshot {0} not found")]
    SnapshotNotFound(String),
    #[error("not supported: {0}")]
    NotSupported(String),
    #[error("not implemented: {0}")]
    NotImplemented(String),
    /// The request itself is wrong (cloud_properties, sizes, …): retrying will not help.
    #[error("invalid {what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("not enough disk space: {0}")]
    NoDiskSpace(String),
    #[error("network {0} not found")]
    NetworkNotFound(String),
    /// A failure of the hypervisor or a tool; `context` says what we were doing.
    #[error("{context}: {source}")]
    Failed {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A failure described by text only.
    #[error("{0}")]
    Other(String),
}

pub type DriverResult<T> = Result<T, DriverError>;

impl DriverError {
    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        DriverError::Invalid { what: what.into(), reason: reason.into() }
    }
    pub fn failed(context: impl Into<String>, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        DriverError::Failed { context: context.into(), source: source.into() }
    }
    /// Whether a create that failed with this error is worth retrying as it is.
    pub fn retryable(&self) -> bool {
        matches!(self, DriverError::Failed { .. } | DriverError::Other(_) | DriverError::NoDiskSpace(_))
    }
}

/// Adds context to an error from a tool or library.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> DriverResult<T>;
}

impl<T, E: Into<Box<dyn std::error::Error + Send + Sync>>> Context<T> for Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> DriverResult<T> {
        self.map_err(|e| DriverError::Failed { context: what(), source: e.into() })
    }
}

impl From<ExecError> for DriverError {
    fn from(e: ExecError) -> Self {
        DriverError::Failed { context: "external command failed".into(), source: Box::new(e) }
    }
}
