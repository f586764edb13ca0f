//! Settling the open records, once per poll: for every record with no CPI call in flight, what its job's
//! state, its deadline, its boot timeout and its attempts say — delete its VM, retry its create, move it to
//! another pool, fail its job, or leave it be.
use super::state::{Daemon, DaemonError};
use crate::launcher::clock::{now, now_f};
use crate::launcher::config::{OnShutdown, PoolId};
use crate::launcher::http;
use crate::launcher::ledger::Record;
use crate::launcher::log;
use crate::launcher::source::JobState;
use crate::launcher::tracked::After;
use std::collections::HashMap;
use std::time::Instant;

impl Daemon {
    /// Decides for every open record that has no call in flight.
    pub(super) fn settle(&mut self, states: &HashMap<String, JobState>, stopping: bool) -> Result<(), DaemonError> {
        let records: Vec<Record> =
            self.ledger.state.open.values().filter(|r| !self.tracked.is_busy(&r.intent.id)).cloned().collect();
        for r in records {
            let state = JobState::of(states, &r.intent.job);
            let Some(pool) = self.pools.named(&r.intent.pool).map(|p| p.id) else {
                continue;
            };
            if state.is_started() {
                self.observe_started(&r, pool);
            }
            if let Some(after) = self.tracked.get_record(&r.intent.id).and_then(|x| x.after.clone()) {
                if r.cid.is_some() {
                    // a delete that failed before: try again
                    self.start_delete(&r, after);
                    continue;
                }
            }
            match &r.cid {
                Some(cid) => self.settle_vm(&r, cid, pool, &state, stopping),
                None => self.settle_pending(&r, pool, &state, stopping)?,
            }
        }
        Ok(())
    }

    /// The time from a job's scheduling to its start, measured once per job.
    fn observe_started(&mut self, r: &Record, pool: PoolId) {
        let job = self.tracked.job(&r.intent.job);
        if std::mem::replace(&mut job.started, true) {
            return;
        }
        if let Some(s) = job.scheduled_at {
            http::lock(&self.shared).metrics.observe(
                "launcher_queue_to_running_seconds",
                &[("pool", self.pools[pool].name())],
                (now_f() - s).max(0.0),
            );
        }
    }

    /// A record with a VM: deleted when its job is over, past its lifetime, warm while draining, or when its
    /// job has not started within the boot timeout (then retried, or the job failed after the last attempt).
    fn settle_vm(&mut self, r: &Record, cid: &str, pool: PoolId, state: &JobState, stopping: bool) {
        let (id, job) = (&r.intent.id, &r.intent.job);
        let conf = &self.pools[pool].conf;
        let (lifetime, boot, attempts) = (conf.max_lifetime_minutes, conf.boot_timeout_seconds, conf.create_attempts);
        let t = now();
        if state.is_finished() {
            log::info(&format!("record={id} job={job} vm={cid} job {}: deleting the VM", state.name));
            self.start_delete(r, After::Close(format!("job {}", state.name)));
        } else if t > r.intent.deadline {
            log::warn(&format!("record={id} job={job} vm={cid} passed its lifetime: deleting"));
            let reason = format!("VM {cid} passed its {lifetime} min lifetime and was deleted");
            if job.is_empty() {
                self.start_delete(r, After::Close("past its lifetime".into()));
            } else {
                let _ = self.source.notify(job, &format!("agent-launcher: {reason}"));
                // its agent goes with the VM: the job is finished, or the build would wait for it
                self.start_delete(r, After::FailJob(reason));
            }
        } else if stopping && self.cfg.on_shutdown == OnShutdown::Drain && job.is_empty() {
            log::info(&format!("record={id} vm={cid} draining: deleting the warm VM"));
            self.start_delete(r, After::Close("drained (warm, no job)".into()));
        } else if !job.is_empty() && !state.is_started() && r.created_at.is_some_and(|c| t > c + boot) {
            let reason = format!("VM {cid} in pool {} did not start the job within {boot} s", self.pools[pool].name());
            log::warn(&format!("record={id} job={job} {reason}"));
            let after = if r.failures + 1 >= attempts { After::FailJob(reason) } else { After::Retry(reason) };
            self.start_delete(r, after);
        }
    }

    /// A record without a VM: closed when its job is over; moved to another pool when its own cannot make
    /// the VM; its job failed after the last attempt; else its next create once the backoff is over.
    fn settle_pending(
        &mut self,
        r: &Record,
        pool: PoolId,
        state: &JobState,
        stopping: bool,
    ) -> Result<(), DaemonError> {
        let (id, job) = (&r.intent.id, &r.intent.job);
        let p = &self.pools[pool];
        let (name, attempts, max_creates) =
            (p.name().to_string(), p.conf.create_attempts, p.conf.limits.max_concurrent_creates);
        let cannot = !p.breaker.allows_create() || !p.host.power.usable() || r.failures >= attempts;
        if state.is_finished() {
            log::info(&format!("record={id} job={job} job {} before its VM was made", state.name));
            return self.close(r, format!("job {}", state.name));
        }
        if !stopping && cannot && self.fail_over(r, pool)? {
            return Ok(()); // moved to another pool
        }
        if r.failures >= attempts {
            let last = r.last_failure.clone().unwrap_or_default();
            let reason =
                format!("agent-launcher could not start a VM in pool {name} after {} attempts: {last}", r.failures);
            if job.is_empty() {
                log::warn(&format!("record={id} warm VM: {reason}"));
            } else {
                self.fail_job(job, &name, &reason);
            }
            return self.close(r, "create failed".into());
        }
        let due = self.tracked.get_record(id).and_then(|x| x.retry_at).is_none_or(|at| Instant::now() >= at);
        if !stopping && due && self.creating_in(&name) < max_creates && self.pools[pool].can_create() {
            self.tracked.record(id).retry_at = None;
            self.start_create(r)?;
        }
        Ok(())
    }
}
