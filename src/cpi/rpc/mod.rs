//! The CPI wire protocol: one JSON request on stdin, one JSON response on stdout.
pub mod dispatch;
pub mod method;
pub mod wire;

pub use dispatch::handle;
