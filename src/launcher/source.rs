//! The seam between the launcher loop and a CI system: what the loop asks of it ([`Source`]) and the job
//! model it gets back ([`Listing`], [`ScheduledJob`], [`JobState`]).
//!
//! The loop knows nothing of Buildkite: it lists demand, reserves what it plans to start (a source without
//! reservations says every job is its own), asks how the work of its open records is going, hands each VM
//! what the source grants it through the secret-bearing `/v1/assignment`, and tells the source when a
//! record is closed so that what was made for it (an agent or runner registration) is undone. A new CI
//! system is one more module implementing [`Source`] (and its config); the loop's phases do not change.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::launcher::metrics::Metrics;
use crate::launcher::server::Route;

/// What the loop reads from a source's error enum whose HTTP failures are the variants `Http`, `Timeout`,
/// `Status { status, .. }` and `RateLimited { <wait>, .. }` (Buildkite's and GitHub's): whether the server may
/// have done what was asked although no answer was read (a timeout, a broken connection, a 5xx), how long it
/// asked us to wait, the HTTP status; and the [`SourceError`] the loop gets (a 404 is "not found").
macro_rules! http_source_error {
    ($ty:ident, $wait:ident) => {
        impl $ty {
            /// The server may have done what was asked although no answer was read.
            pub fn is_ambiguous(&self) -> bool {
                matches!(self, $ty::Timeout { .. } | $ty::Http { .. })
                    || matches!(self, $ty::Status { status, .. } if *status >= 500)
            }
            /// How long to wait before the next request, when the server said so.
            pub fn retry_after(&self) -> Option<std::time::Duration> {
                match self {
                    $ty::RateLimited { $wait, .. } => Some(*$wait),
                    _ => None,
                }
            }
            /// The HTTP status of an answer that was an error.
            pub fn status(&self) -> Option<u16> {
                match self {
                    $ty::Status { status, .. } => Some(*status),
                    _ => None,
                }
            }
        }

        impl From<$ty> for $crate::launcher::source::SourceError {
            fn from(e: $ty) -> Self {
                let (ambiguous, wait, not_found) = (e.is_ambiguous(), e.retry_after(), e.status() == Some(404));
                Self::new(e).ambiguous(ambiguous).retry_after(wait).not_found(not_found)
            }
        }
    };
}
pub(crate) use http_source_error;

/// Asks the loop to poll now (a webhook delivery said something changed).
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// A job waiting for an agent.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledJob {
    pub id: String,
    pub priority: i64,
    /// Its agent query rules (`key=value`), matched against the pools' tags.
    pub rules: Vec<String>,
    /// RFC 3339, as the CI system sends it.
    pub scheduled_at: String,
}

/// One poll's view of the demand.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub jobs: Vec<ScheduledJob>,
    pub paused: bool,
}

/// Where a job is, as the loop needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waits for an agent (Buildkite `scheduled`): its reservation is extended while its VM boots.
    Queued,
    /// Neither started nor waiting for an agent (Buildkite `waiting`, `blocked`, `limited`, …).
    Pending,
    /// An agent has taken it.
    Started,
    /// Over: its VM has nothing left to do.
    Finished,
}

/// A job's state: its phase, and its name in the CI system (for logs and ledger reasons: `job canceled`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobState {
    pub phase: Phase,
    pub name: String,
}

impl JobState {
    /// An agent has taken the job (it may be over already).
    pub fn is_started(&self) -> bool {
        matches!(self.phase, Phase::Started | Phase::Finished)
    }

    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    pub fn is_queued(&self) -> bool {
        self.phase == Phase::Queued
    }

    /// The state of a job the source did not report (unknown to it, or not asked).
    pub fn of(states: &HashMap<String, JobState>, job: &str) -> JobState {
        states.get(job).cloned().unwrap_or(JobState { phase: Phase::Pending, name: String::new() })
    }
}

/// The work of one open record: its job and the agent its VM runs.
#[derive(Debug, Clone, Copy)]
pub struct Work<'a> {
    /// Empty for a warm VM without a job.
    pub job: &'a str,
    /// The agent's (runner's) name: pool and record, unique per record.
    pub agent_name: &'a str,
    pub agent_tags: &'a [String],
}

/// A failed call to the CI system, with what the loop needs to know about it.
#[derive(Debug)]
pub struct SourceError {
    cause: Box<dyn std::error::Error + Send + Sync>,
    ambiguous: bool,
    retry_after: Option<Duration>,
    not_found: bool,
}

impl SourceError {
    pub fn new(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> SourceError {
        SourceError { cause: cause.into(), ambiguous: false, retry_after: None, not_found: false }
    }

    /// The server may have carried out the request although no answer was read (a timeout, a broken
    /// connection, a 5xx): a reservation may then exist that the launcher has not seen.
    pub fn ambiguous(mut self, yes: bool) -> SourceError {
        self.ambiguous = yes;
        self
    }

    /// The server asked for this pause before the next request (a rate limit).
    pub fn retry_after(mut self, wait: Option<Duration>) -> SourceError {
        self.retry_after = wait;
        self
    }

    /// The server answered that what was asked for does not exist (a stack that is not registered).
    pub fn not_found(mut self, yes: bool) -> SourceError {
        self.not_found = yes;
        self
    }

    pub fn is_ambiguous(&self) -> bool {
        self.ambiguous
    }

    pub fn wait(&self) -> Option<Duration> {
        self.retry_after
    }

    pub fn is_not_found(&self) -> bool {
        self.not_found
    }
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.cause.fmt(f)
    }
}

impl std::error::Error for SourceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.source()
    }
}

/// A CI system the launcher serves: where demand comes from and where outcomes go.
pub trait Source: Send {
    /// What it is, for log lines and metrics (`buildkite`).
    fn name(&self) -> &'static str;
    /// What registering announces (`stack s1 on queue vm`), for log lines.
    fn describe(&self) -> String;
    /// Announces the launcher before the first poll (Buildkite: registers its stacks).
    fn register(&mut self) -> Result<(), SourceError>;
    fn deregister(&mut self) -> Result<(), SourceError>;
    /// Checks the credentials with read-only requests (`check-config --online`).
    fn check(&mut self) -> Result<(), SourceError>;
    /// The jobs waiting for an agent, in [`sort_jobs`] order.
    fn list(&mut self) -> Result<Listing, SourceError>;
    /// Reserves jobs for this launcher; returns those that are now its own. A source without
    /// reservations returns them all (and [`Source::reservation`] is `None`).
    fn reserve(&mut self, ids: &[String]) -> Result<Vec<String>, SourceError>;
    /// How long a reservation holds (the loop reserves again at half of it while a VM boots).
    fn reservation(&self) -> Option<Duration>;
    /// The states of the jobs of open records, by job id; unknown jobs are absent.
    fn states(&mut self, work: &[Work<'_>]) -> Result<HashMap<String, JobState>, SourceError>;
    /// Fails a job the launcher could not run; the detail is shown to its users.
    fn fail(&mut self, job: &str, detail: &str) -> Result<(), SourceError>;
    /// Posts a short message to the job for its users.
    fn notify(&mut self, job: &str, detail: &str) -> Result<(), SourceError>;
    /// The keys a VM's create_vm `env` gets beside the launcher's own (never a secret: the env is in the
    /// VM's settings, which the CPI may log).
    fn vm_env(&self) -> Map<String, Value>;
    /// What the VM of `work` is handed at `/v1/assignment` beside its job, tags and name, once it has a
    /// job: Buildkite's agent endpoint and token, or a credential made for this one VM.
    fn grant(&mut self, work: &Work<'_>) -> Result<Map<String, Value>, SourceError>;
    /// The record of `work` is closed (its VM deleted or never made), or its VM is being made again: undoes
    /// what [`Source::grant`] made.
    fn release(&mut self, work: &Work<'_>) -> Result<(), SourceError>;
    /// Routes the source adds to the launcher's listener (GitHub: its webhook); `wake` makes the loop poll at
    /// once. Called whenever a listener starts.
    fn routes(&self, _wake: Wake) -> Vec<Route> {
        Vec::new()
    }
    /// Sets the source's own metrics (after every poll).
    fn metrics(&mut self, _m: &mut Metrics) {}
    /// From now on the source only reads (`--dry-run`): calls that change something are not made.
    fn read_only(&mut self) {}
}

/// A job's age as a sort key: its `scheduled_at` as an instant, in the order of `f64::total_cmp` (the IEEE
/// 754 total order as an integer); a missing or unreadable time sorts first, as the oldest (so such a job is
/// not starved).
fn age(scheduled_at: &str) -> Option<i64> {
    let bits = crate::common::rfc3339::parse(scheduled_at)?.to_bits() as i64;
    Some(bits ^ (((bits >> 63) as u64) >> 1) as i64)
}

/// Sorts jobs: priority descending, then scheduled_at ascending (as instants, not as strings:
/// `10:00:01Z` is older than `10:00:01.500Z`), then by the text and the id so that the order is total.
pub fn sort_jobs(jobs: &mut [ScheduledJob]) {
    jobs.sort_by_cached_key(|j| {
        (std::cmp::Reverse(j.priority), age(&j.scheduled_at), j.scheduled_at.clone(), j.id.clone())
    });
}

/// Drops jobs listed twice (pages are not a snapshot; the first sighting wins), then sorts.
pub fn tidy(jobs: &mut Vec<ScheduledJob>) {
    let mut seen = std::collections::HashSet::new();
    jobs.retain(|j| seen.insert(j.id.clone()));
    sort_jobs(jobs);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listed job without rules.
    fn j(id: &str, priority: i64, scheduled_at: &str) -> ScheduledJob {
        ScheduledJob { id: id.into(), priority, rules: vec![], scheduled_at: scheduled_at.into() }
    }

    #[test]
    fn order_is_priority_then_age() {
        let mut v = vec![
            j("a", 0, "2026-01-01T00:00:02Z"),
            j("b", 5, "2026-01-01T00:00:03Z"),
            j("c", 0, "2026-01-01T00:00:01Z"),
        ];
        sort_jobs(&mut v);
        assert_eq!(v.iter().map(|j| j.id.as_str()).collect::<String>(), "bca");
    }

    #[test]
    fn order_compares_instants_not_text() {
        // as text, "…01.500Z" < "…01Z" < "…00+00:00"; as instants it is the other way round
        let mut v = vec![
            j("a", 0, "2026-01-05T10:00:01.500Z"),
            j("b", 0, "2026-01-05T10:00:01Z"),
            j("c", 0, "2026-01-05T10:00:00+00:00"),
            j("d", 1, "2026-01-05T11:00:00Z"),
        ];
        sort_jobs(&mut v);
        assert_eq!(v.iter().map(|j| j.id.as_str()).collect::<String>(), "dcba");
        // a missing or unreadable time counts as oldest; ties fall back to the text, then the id
        let mut v = vec![
            j("a", 0, "2026-01-05T10:00:00Z"),
            j("c", 0, "garbage"),
            j("b", 0, ""),
            j("e", 0, "2026-01-05T10:00:00.000Z"),
            j("d", 0, "2026-01-05T10:00:00.000Z"),
        ];
        sort_jobs(&mut v);
        assert_eq!(v.iter().map(|j| j.id.as_str()).collect::<String>(), "bcdea");
    }

    #[test]
    fn errors_keep_what_the_loop_needs_and_read_as_their_cause() {
        #[derive(Debug, thiserror::Error)]
        #[error("reserve jobs: timed out")]
        struct Timeout(#[source] std::io::Error);
        let e = SourceError::new(Timeout(std::io::Error::other("deadline")))
            .ambiguous(true)
            .retry_after(Some(Duration::from_secs(2)));
        assert!(e.is_ambiguous() && !e.is_not_found());
        assert_eq!(e.wait(), Some(Duration::from_secs(2)));
        assert_eq!(crate::launcher::log::chain(&e), "reserve jobs: timed out: deadline");
        let states = HashMap::from([("j".to_string(), JobState { phase: Phase::Finished, name: "passed".into() })]);
        assert!(JobState::of(&states, "j").is_started() && JobState::of(&states, "j").is_finished());
        let unknown = JobState::of(&states, "k");
        assert!(!unknown.is_started() && !unknown.is_queued() && unknown.name.is_empty());
    }
}
