//! What the launcher loop knows about each CI job and each ledger record beyond what the ledger
//! holds: one [`Job`] per job id and one [`RecordRun`] per record id, so that everything about one job is in
//! one place and is forgotten at once.
use crate::launcher::config::PoolId;
use crate::launcher::source::ScheduledJob;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// One job this launcher has listed or holds.
#[derive(Debug, Default)]
pub struct Job {
    /// Counted in `launcher_jobs_seen_total` (once).
    pub seen: bool,
    /// Refused (unknown flavor) or failed by this launcher: not planned again.
    pub refused: bool,
    /// Told that it waits for a free IP address (once).
    pub notified: bool,
    /// An agent has taken it (its queue time was measured, once).
    pub started: bool,
    /// When Buildkite scheduled it (Unix seconds).
    pub scheduled_at: Option<f64>,
    /// When it was last reserved (reservations are extended while its VM boots).
    pub reserved_at: Option<Instant>,
    /// A reserve whose answer was lost, and since when: the job is reserved again (idempotent) on the next
    /// polls, until its reservation would have run out.
    pub unsure: Option<(ScheduledJob, Instant)>,
    /// Its agent query rules (to move it to another pool).
    pub rules: Option<Vec<String>>,
    /// Pools it was moved away from (it is not moved back: no ping-pong between two failing pools).
    pub tried: HashSet<PoolId>,
}

/// One open ledger record, as the loop runs it.
#[derive(Debug, Default)]
pub struct RecordRun {
    /// A CPI call (create or delete) is in flight.
    pub busy: bool,
    /// What happens to the record once its VM is deleted.
    pub after: Option<After>,
    /// Its next create_vm attempt waits until then (backoff after a failed attempt).
    pub retry_at: Option<Instant>,
}

/// What happens to a record once its VM is deleted.
#[derive(Debug, Clone)]
pub enum After {
    Close(String),
    Retry(String),
    FailJob(String),
}

/// The jobs and records of the running launcher.
#[derive(Debug, Default)]
pub struct Tracked {
    jobs: HashMap<String, Job>,
    records: HashMap<String, RecordRun>,
}

impl Tracked {
    /// The job `id`, made empty the first time.
    pub fn job(&mut self, id: &str) -> &mut Job {
        self.jobs.entry(id.to_string()).or_default()
    }

    /// The job `id` when it is known.
    pub fn get_job(&self, id: &str) -> Option<&Job> {
        self.jobs.get(id)
    }

    /// The record `id`, made empty the first time.
    pub fn record(&mut self, id: &str) -> &mut RecordRun {
        self.records.entry(id.to_string()).or_default()
    }

    /// The record `id` when it is known.
    pub fn get_record(&self, id: &str) -> Option<&RecordRun> {
        self.records.get(id)
    }

    /// Whether record `id` has a CPI call in flight.
    pub fn is_busy(&self, id: &str) -> bool {
        self.records.get(id).is_some_and(|r| r.busy)
    }

    /// The records with a CPI call in flight.
    pub fn busy(&self) -> impl Iterator<Item = &str> {
        self.records.iter().filter(|(_, r)| r.busy).map(|(id, _)| id.as_str())
    }

    /// The records with a CPI call in flight, as a set.
    pub fn busy_set(&self) -> HashSet<String> {
        self.busy().map(str::to_string).collect()
    }

    /// The jobs that are not planned again.
    pub fn refused(&self) -> HashSet<String> {
        self.jobs.iter().filter(|(_, j)| j.refused).map(|(id, _)| id.clone()).collect()
    }

    /// A record was closed: its job's reservation and the record's backoff no longer matter.
    pub fn forget(&mut self, job: &str, record: &str) {
        if let Some(j) = self.jobs.get_mut(job) {
            j.reserved_at = None;
        }
        if let Some(r) = self.records.get_mut(record) {
            r.retry_at = None;
        }
    }

    /// Forgets lost reserves older than `expiry`; returns the jobs of those that remain.
    pub fn unsure(&mut self, expiry: Duration) -> Vec<ScheduledJob> {
        let mut out = Vec::new();
        for job in self.jobs.values_mut() {
            if job.unsure.as_ref().is_some_and(|(_, t)| t.elapsed() >= expiry) {
                job.unsure = None;
            }
            out.extend(job.unsure.as_ref().map(|(j, _)| j.clone()));
        }
        out
    }

    /// Forgets the jobs not in `keep` (neither listed nor held) and the records that are no longer open, so a
    /// long run stays small. A lost reserve is kept until it expires ([`Tracked::unsure`]).
    pub fn prune(&mut self, keep: &HashSet<&str>, open: impl Fn(&str) -> bool) {
        self.jobs.retain(|id, job| {
            if keep.contains(id.as_str()) {
                return true;
            }
            *job = Job { unsure: job.unsure.take(), ..Job::default() };
            job.unsure.is_some()
        });
        self.records.retain(|id, r| open(id) || r.busy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scheduled(id: &str) -> ScheduledJob {
        ScheduledJob { id: id.into(), priority: 0, rules: vec![], scheduled_at: "2026-01-01T00:00:00Z".into() }
    }

    #[test]
    fn one_place_per_job_and_pruning_forgets_it_whole() {
        let mut t = Tracked::default();
        let j = t.job("a");
        (j.seen, j.refused, j.scheduled_at) = (true, true, Some(1.0));
        j.tried.insert(PoolId(2));
        t.job("b").unsure = Some((scheduled("b"), Instant::now()));
        t.job("c").seen = true;
        t.record("r1").busy = true;
        t.record("r2").retry_at = Some(Instant::now());
        t.record("r3").after = Some(After::Close("x".into()));
        assert_eq!(t.refused(), HashSet::from(["a".to_string()]));
        assert_eq!(t.busy().collect::<Vec<_>>(), ["r1"]);
        t.prune(&HashSet::from(["a"]), |id| id == "r2");
        assert!(t.get_job("a").is_some_and(|j| j.seen && j.tried.contains(&PoolId(2))));
        // b's lost reserve stays (and only that), c is gone
        assert!(t.get_job("b").is_some_and(|j| !j.seen && j.unsure.is_some()));
        assert!(t.get_job("c").is_none());
        // r1 has a call in flight, r2 is open, r3 is closed
        assert!(t.is_busy("r1") && t.get_record("r2").is_some() && t.get_record("r3").is_none());
        assert_eq!(t.unsure(Duration::from_secs(60)).len(), 1);
        assert!(t.unsure(Duration::ZERO).is_empty());
        assert!(t.get_job("b").is_some_and(|j| j.unsure.is_none()));
    }
}
