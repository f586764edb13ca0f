//! What goes wrong talking to Buildkite, and what the loop learns of it through the source seam.
use crate::launcher::source::SourceError;
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

    /// Whether the server may have carried out the request although no answer was read (a timeout, a broken
    /// connection, a 5xx): a reservation may then exist that the launcher has not seen.
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, BkError::Timeout { .. } | BkError::Http { .. })
            || matches!(self, BkError::Status { status, .. } if *status >= 500)
    }

    /// How long to wait before the next request, when the server said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            BkError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

impl From<BkError> for SourceError {
    fn from(e: BkError) -> SourceError {
        let (ambiguous, wait) = (e.is_ambiguous(), e.retry_after());
        // the Stacks API answers 404 to a stack that is not registered
        let not_found = matches!(e, BkError::Status { status: 404, .. });
        SourceError::new(e).ambiguous(ambiguous).retry_after(wait).not_found(not_found)
    }
}
