//! One way of reaching Buildkite's queue ([`Queue`]: a stack of the Stacks API, several of them, or the REST
//! API), Buildkite's job states as the loop sees them, and the rules of text sent to Buildkite.
use super::error::BkError;
use crate::launcher::log;
use crate::launcher::source::{JobState, Listing, Phase};
use std::collections::HashMap;

/// One way of reaching Buildkite's queue: a stack of the Stacks API, several of them, or the REST API.
pub trait Queue: Send {
    fn register(&mut self) -> Result<(), BkError>;
    fn deregister(&mut self) -> Result<(), BkError>;
    /// Scheduled jobs, highest priority first, then oldest first.
    fn list(&mut self) -> Result<Listing, BkError>;
    /// Reserves jobs; returns the ones that are now ours.
    fn reserve(&mut self, ids: &[String]) -> Result<Vec<String>, BkError>;
    /// Whether [`Queue::reserve`] reserves anything (the REST API cannot).
    fn reserves(&self) -> bool {
        true
    }
    /// Current states (`scheduled`, `running`, `passed`, `canceled`, …); unknown jobs are absent.
    fn states(&mut self, ids: &[String]) -> Result<HashMap<String, String>, BkError>;
    /// Fails a job the launcher could not run; the detail is shown on the build page.
    fn finish(&mut self, id: &str, exit_status: i32, detail: &str) -> Result<(), BkError>;
    /// Posts a short message to the job on the build page.
    fn notify(&mut self, id: &str, detail: &str) -> Result<(), BkError>;
    /// Checks the token with read-only requests.
    fn check(&mut self) -> Result<(), BkError>;
}

/// Job states after which a job's VM has nothing left to do.
pub fn is_terminal(state: &str) -> bool {
    matches!(
        state,
        "passed"
            | "failed"
            | "canceled"
            | "timed_out"
            | "skipped"
            | "broken"
            | "expired"
            | "finished"
            | "not_run"
            | "waiting_failed"
            | "blocked_failed"
            | "unblocked_failed"
    )
}

/// Job states in which an agent has taken the job.
pub fn is_started(state: &str) -> bool {
    matches!(state, "assigned" | "accepted" | "running" | "canceling" | "timing_out") || is_terminal(state)
}

/// A Buildkite job state as the loop sees it.
pub fn job_state(name: String) -> JobState {
    let phase = if is_terminal(&name) {
        Phase::Finished
    } else if is_started(&name) {
        Phase::Started
    } else if name == "scheduled" {
        Phase::Queued
    } else {
        Phase::Pending
    };
    JobState { phase, name }
}

pub(super) fn is_uuid_like(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// Text for Buildkite (a job's finish detail, a notification, an annotation): CPI errors and other outside
/// text pass through the launcher's redactor (tokens and VM secrets become `<redacted>`), then are cut to
/// `max` characters (after redacting, so a cut never leaves part of a secret).
pub(super) fn outgoing(detail: &str, max: usize) -> String {
    log::redact(detail).chars().take(max).collect()
}

/// Job ids of the decoders' tests (UUID-like, in the order the API would sort them by age).
#[cfg(test)]
pub(super) mod test_ids {
    pub const J1: &str = "b63254c0-3271-4a98-8270-7cfbd6c2f14e";
    pub const J2: &str = "00000002-0000-4000-8000-000000000002";
    pub const J3: &str = "00000003-0000-4000-8000-000000000003";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_for_buildkite_is_redacted_before_it_is_cut() {
        let secret = "0123456789abcdef0123456789abcdef";
        crate::launcher::log::add_secret(secret);
        let text = format!("{}{{\"secret\":\"{secret}\"}}", "x".repeat(240));
        let out = outgoing(&text, 256);
        assert!(!out.contains(&secret[..8]), "{out}");
        assert!(out.ends_with("{\"secret\":\"<reda"), "{out}");
        assert_eq!(outgoing(&format!("create_vm failed: {secret}"), 4000), "create_vm failed: <redacted>");
    }

    #[test]
    fn encoding_and_states() {
        assert_eq!(super::super::http::enc("a.b c/_-"), "a%2Eb%20c%2F_-");
        assert!(is_terminal("canceled") && is_terminal("passed") && !is_terminal("running"));
        assert!(is_started("running") && !is_started("scheduled"));
        assert!(is_uuid_like("b63254c0-3271-4a98-8270-7cfbd6c2f14e") && !is_uuid_like("../x"));
        // as the loop sees them
        let phase = |s: &str| job_state(s.into()).phase;
        assert_eq!(
            ["scheduled", "waiting", "", "running", "canceling", "canceled", "passed"].map(phase),
            [
                Phase::Queued,
                Phase::Pending,
                Phase::Pending,
                Phase::Started,
                Phase::Started,
                Phase::Finished,
                Phase::Finished
            ]
        );
    }
}
