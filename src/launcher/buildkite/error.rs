//! What goes wrong talking to Buildkite, and what the loop learns of it through the source seam.
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum BkError {
    #[error("{what}: request failed")]
    Http { what: String, source: Box<ureq::Error> },
    /// No (whole) answer within the timeout: the server may or may not have done what was asked.
    #[error("{what}: timed out")]
    Timeout { what: String, source: Box<ureq::Error> },
    #[error("{what}: HTTP {status}: {message}")]
    Status { what: String, status: u16, message: String },
    #[error("{what}: rate limited, retry in {} ms", retry_after.as_millis())]
    RateLimited { what: String, retry_after: Duration },
    #[error("{what}: unexpected response")]
    Decode { what: String, source: serde_json::Error },
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
}

impl BkError {
    pub(super) fn transport(what: &str, e: ureq::Error) -> BkError {
        match e {
            ureq::Error::Timeout(_) => BkError::Timeout { what: what.into(), source: Box::new(e) },
            e => BkError::Http { what: what.into(), source: Box::new(e) },
        }
    }
}

crate::launcher::source::http_source_error!(BkError, retry_after);
