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

/// A request to a CI system's HTTP API that failed, as every source's error enum holds it (`Http(HttpError)`)
/// beside the failures of its own (its rate limit, ...). `what` is the request in words (`list jobs`).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The request broke on the way (connect, send, or reading the answer).
    #[error("{what}: request failed")]
    Transport { what: String, source: Box<ureq::Error> },
    /// No (whole) answer within the timeout: the server may or may not have done what was asked.
    #[error("{what}: timed out")]
    Timeout { what: String, source: Box<ureq::Error> },
    /// An error answer (4xx, 5xx), with the message the server gave.
    #[error("{what}: HTTP {status}: {message}")]
    Status { what: String, status: u16, message: String },
    /// An answer that is not the JSON expected.
    #[error("{what}: unexpected answer")]
    Decode { what: String, source: serde_json::Error },
    /// A request that cannot be made as asked, or an answer without what it must hold.
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
}

impl HttpError {
    /// A request that failed on the way: a timeout is [`HttpError::Timeout`], anything else [`HttpError::Transport`].
    pub fn transport(what: &str, e: ureq::Error) -> HttpError {
        match e {
            ureq::Error::Timeout(_) => HttpError::Timeout { what: what.into(), source: Box::new(e) },
            e => HttpError::Transport { what: what.into(), source: Box::new(e) },
        }
    }

    /// The server may have done what was asked although no answer was read (a timeout, a broken
    /// connection, a 5xx).
    pub fn is_ambiguous(&self) -> bool {
        match self {
            HttpError::Transport { .. } | HttpError::Timeout { .. } => true,
            HttpError::Status { status, .. } => *status >= 500,
            HttpError::Decode { .. } | HttpError::Invalid { .. } => false,
        }
    }

    /// The HTTP status of an answer that was an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// What the loop reads from a source's error enum whose variants are `Http(HttpError)`, `RateLimited { <wait>,
/// .. }` and its own (Buildkite's and GitHub's): whether the server may have done what was asked although no
/// answer was read, how long it asked us to wait, the HTTP status; and the [`SourceError`] the loop gets (a
/// 404 is "not found").
macro_rules! http_source_error {
    ($ty:ident, $wait:ident) => {
        impl $ty {
            /// The failed request, when the failure was one of [`HttpError`](crate::launcher::source::HttpError).
            pub fn http(&self) -> Option<&$crate::launcher::source::HttpError> {
                match self {
                    $ty::Http(e) => Some(e),
                    _ => None,
                }
            }
            /// The server may have done what was asked although no answer was read.
            pub fn is_ambiguous(&self) -> bool {
                self.http().is_some_and(|e| e.is_ambiguous())
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
                self.http().and_then(|e| e.status())
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

    /// A source's error enum as Buildkite's and GitHub's are made.
    #[derive(Debug, thiserror::Error)]
    enum TestError {
        #[error(transparent)]
        Http(#[from] HttpError),
        #[error("{what}: wait {} s", wait.as_secs())]
        RateLimited { what: String, wait: Duration },
    }
    http_source_error!(TestError, wait);

    #[test]
    fn http_errors_read_once_and_tell_the_loop_what_it_needs() {
        use crate::launcher::log::chain;
        let timeout = TestError::from(HttpError::transport("list jobs", ureq::Error::Timeout(ureq::Timeout::Global)));
        assert!(matches!(timeout, TestError::Http(HttpError::Timeout { .. })));
        let cause = ureq::Error::Timeout(ureq::Timeout::Global).to_string();
        assert_eq!(chain(&timeout), format!("list jobs: timed out: {cause}"));
        assert!(timeout.is_ambiguous() && timeout.status().is_none() && timeout.retry_after().is_none());
        let broken = TestError::from(HttpError::transport("reserve jobs", ureq::Error::ConnectionFailed));
        assert!(matches!(broken, TestError::Http(HttpError::Transport { .. })) && broken.is_ambiguous());
        let cause = ureq::Error::ConnectionFailed.to_string();
        assert_eq!(chain(&SourceError::from(broken)), format!("reserve jobs: request failed: {cause}"));

        let status = |status| {
            TestError::from(HttpError::Status { what: "list jobs".into(), status, message: "Unauthorized".into() })
        };
        assert_eq!(chain(&status(401)), "list jobs: HTTP 401: Unauthorized");
        assert!(!status(401).is_ambiguous() && status(503).is_ambiguous() && status(401).status() == Some(401));
        let gone = SourceError::from(status(404));
        assert!(gone.is_not_found() && !gone.is_ambiguous() && gone.wait().is_none());
        assert!(!SourceError::from(status(401)).is_not_found());

        let source = serde_json::from_str::<Value>("{").unwrap_err();
        let decode = TestError::from(HttpError::Decode { what: "get job states".into(), source });
        let cause = serde_json::from_str::<Value>("{").unwrap_err().to_string();
        assert_eq!(chain(&decode), format!("get job states: unexpected answer: {cause}"));
        assert!(!decode.is_ambiguous() && decode.status().is_none());
        let invalid = TestError::from(HttpError::Invalid { what: "finish job".into(), message: "bad job id".into() });
        assert_eq!(chain(&SourceError::from(invalid)), "finish job: bad job id");

        let limited =
            SourceError::from(TestError::RateLimited { what: "list jobs".into(), wait: Duration::from_secs(3) });
        assert_eq!(limited.wait(), Some(Duration::from_secs(3)));
        assert!(!limited.is_ambiguous() && !limited.is_not_found());
        assert_eq!(chain(&limited), "list jobs: wait 3 s");
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
