//! What the CPI and the launcher share; nothing here knows either of them.
//! - [`logger`]: stderr + `log` logging with secret redaction.
//! - [`redact`]: the one redactor (whole values) of vmcpi and agent-launcher.
//! - [`vocabulary`]: the words of vmcpi's own messages (collected by build.rs), which the log's safety net
//!   never masks.
//! - [`secret`]: `Secret`, the type of every password, key and token a config holds (prints `<redacted>`).
//! - [`ids`]: CID newtypes and the shared CID scheme.
//! - [`rfc3339`]: RFC 3339 timestamps, parsed and written.
//! - [`glob`]: the one wildcard matcher (`*`, and `?` where asked).
//! - [`encoding`]: base64 and percent-encoding.
pub mod encoding;
pub mod glob;
pub mod ids;
pub mod logger;
pub mod redact;
pub mod rfc3339;
pub mod secret;
pub mod vocabulary;
