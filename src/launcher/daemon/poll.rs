//! One poll: the states of the open records' jobs, settling the records, extending reservations, the
//! listing (with the jobs of reserves whose answer was lost), probes, starting jobs, warm VMs and gauges;
//! and the pace of polls after failures.
use super::state::{Daemon, DaemonError};
use crate::launcher::http;
use crate::launcher::ledger::Record;
use crate::launcher::log;
use crate::launcher::source::{sort_jobs, JobState, Listing, Work};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The pause after `failed` polls in a row: the poll interval (at least 1 s), doubling, at most 60 s.
pub fn poll_backoff(interval: Duration, failed: u32) -> Duration {
    let base = interval.max(Duration::from_secs(1));
    base.saturating_mul(1u32 << failed.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// The work of the records that hold a job, with their agents' names.
fn work_of<'a>(records: &'a [Record], names: &'a [String]) -> Vec<Work<'a>> {
    records
        .iter()
        .zip(names)
        .filter(|(r, _)| !r.intent.job.is_empty())
        .map(|(r, name)| Work { job: &r.intent.job, agent_name: name, agent_tags: &r.intent.agent_tags })
        .collect()
}

impl Daemon {
    /// One poll: settle records, then plan and start new jobs.
    pub(super) fn poll(&mut self, stopping: bool) -> Result<(), DaemonError> {
        // a SIGTERM that came while the loop waited counts for this poll already
        let stopping = stopping || self.stop.load(Ordering::SeqCst);
        if !self.source_ready() {
            return Ok(());
        }
        let Some(states) = self.states() else {
            self.poll_outcome(false);
            return Ok(());
        };
        self.settle(&states, stopping)?;
        self.retry_grants();
        self.extend_reservations(&states);
        let listing = self.listing(stopping);
        http::lock(&self.shared).metrics.set("launcher_queue_paused", &[], if listing.paused { 1.0 } else { 0.0 });
        for j in &listing.jobs {
            if let Some(t) = crate::common::rfc3339::parse(&j.scheduled_at) {
                self.tracked.job(&j.id).scheduled_at.get_or_insert(t);
            }
        }
        if !stopping {
            self.start_probes();
        }
        self.start_jobs(&listing)?;
        if !stopping && !listing.paused {
            self.replenish_warm()?;
        }
        self.update_gauges();
        Ok(())
    }

    /// The states of the open records' jobs; `None` when the source failed.
    fn states(&mut self) -> Option<HashMap<String, JobState>> {
        let records: Vec<Record> = self.ledger.state.open.values().cloned().collect();
        let names: Vec<String> = records.iter().map(|r| super::state::agent_name(&r.intent)).collect();
        let work = work_of(&records, &names);
        if work.is_empty() {
            return Some(HashMap::new());
        }
        match self.source.states(&work) {
            Ok(s) => Some(s),
            Err(e) => {
                self.source_error("get-states", &e);
                None
            }
        }
    }

    /// This poll's listing (nothing while stopping), with the jobs of a reserve whose answer was lost.
    fn listing(&mut self, stopping: bool) -> Listing {
        if stopping {
            self.poll_outcome(true);
            return Listing::default();
        }
        let mut listing = match self.source.list() {
            Ok(l) => {
                self.poll_outcome(true);
                self.prune(&l);
                l
            }
            Err(e) => {
                self.source_error("list", &e);
                self.poll_outcome(false);
                Listing::default()
            }
        };
        // jobs of a reserve whose answer was lost are hidden from the list while that reservation holds:
        // they are planned (and reserved, idempotently) again until the reservation would have run out
        let unsure = self.tracked.unsure(self.source.reservation().unwrap_or_default());
        if !unsure.is_empty() {
            let listed: HashSet<String> = listing.jobs.iter().map(|j| j.id.clone()).collect();
            listing
                .jobs
                .extend(unsure.into_iter().filter(|j| !listed.contains(&j.id) && !self.ledger.state.has_job(&j.id)));
            sort_jobs(&mut listing.jobs);
        }
        listing
    }

    /// Counts a poll whose calls to the source failed (or succeeded): the next poll waits longer after each
    /// failure in a row, and `/healthz` turns 503 after `unhealthy_after_failed_polls` of them.
    fn poll_outcome(&mut self, ok: bool) {
        if ok {
            self.failed_polls = 0;
        } else {
            self.failed_polls += 1;
            let wait = poll_backoff(Duration::from_millis(self.cfg.poll_interval_ms), self.failed_polls);
            let until = Instant::now() + wait;
            self.source_wait_until = Some(self.source_wait_until.map_or(until, |t| t.max(until)));
            if self.failed_polls == self.cfg.unhealthy_after_failed_polls {
                log::error(&format!(
                    "{} polls of the {} API failed in a row: /healthz now answers 503",
                    self.failed_polls,
                    http::source_title(self.source.name())
                ));
            }
        }
        let name = self.source.name();
        let mut s = http::lock(&self.shared);
        s.failed_polls = self.failed_polls;
        let n = f64::from(self.failed_polls);
        s.metrics.set("launcher_source_consecutive_failed_polls", &[("source", name)], n);
        if name == "buildkite" {
            s.metrics.set("launcher_buildkite_consecutive_failed_polls", &[], n);
        }
    }

    /// Forgets per-job bookkeeping of jobs that are neither listed nor held, so a long run stays small.
    fn prune(&mut self, listing: &Listing) {
        let mut keep: HashSet<&str> = listing.jobs.iter().map(|j| j.id.as_str()).collect();
        keep.extend(self.ledger.state.open.values().map(|r| r.intent.job.as_str()));
        let open = &self.ledger.state.open;
        self.tracked.prune(&keep, |id| open.contains_key(id));
    }

    /// Reserves again the jobs whose VM has not started them yet, before the reservation runs out (after a
    /// restart, at once), so that a slow boot does not hand the job to another stack.
    fn extend_reservations(&mut self, states: &HashMap<String, JobState>) {
        let Some(expiry) = self.source.reservation() else { return };
        let half = Duration::from_secs(expiry.as_secs().div_ceil(2));
        let due: Vec<String> = self
            .ledger
            .state
            .open
            .values()
            .map(|r| &r.intent.job)
            .filter(|j| states.get(*j).is_some_and(JobState::is_queued))
            .filter(|j| self.tracked.get_job(j).and_then(|j| j.reserved_at).is_none_or(|t| t.elapsed() >= half))
            .cloned()
            .collect();
        if due.is_empty() {
            return;
        }
        match self.source.reserve(&due) {
            Ok(ok) => {
                for j in ok {
                    self.tracked.job(&j).reserved_at = Some(Instant::now());
                }
            }
            Err(e) => self.source_error("reserve", &e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_backoffs_double_and_are_capped() {
        let s = Duration::from_secs;
        assert_eq!(poll_backoff(Duration::from_millis(100), 1), s(1));
        assert_eq!(poll_backoff(s(1), 3), s(4));
        assert_eq!(poll_backoff(s(5), 2), s(10));
        assert_eq!(poll_backoff(s(1), 30), s(60));
    }
}
