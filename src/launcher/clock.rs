//! The wall clock as the launcher stores it (Unix seconds in the ledger, fractional seconds for latencies):
//! a leaf that every other launcher module may use.
use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in whole seconds (0 for a clock before 1970).
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Unix time in seconds with a fraction (0.0 for a clock before 1970).
pub fn now_f() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}
