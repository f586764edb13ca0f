//! What goes wrong talking to Buildkite, and what the loop learns of it through the source seam.
use crate::launcher::source::HttpError;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum BkError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("{what}: rate limited, retry in {} ms", retry_after.as_millis())]
    RateLimited { what: String, retry_after: Duration },
}

crate::launcher::source::http_source_error!(BkError, retry_after);
