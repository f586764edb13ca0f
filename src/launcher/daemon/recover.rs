//! Recovery on start, before any new work: every create a previous run left unfinished is read back from
//! the spool (its CID adopted, or the attempt counted as failed), then every VM with a CID is checked — its
//! job over: deleted; gone before its job started: deleted to be sure and retried; otherwise adopted.
use super::state::{Daemon, DaemonError};
use super::stemcells::sweep_spool;
use crate::launcher::clock::now;
use crate::launcher::config::PoolId;
use crate::launcher::cpi::{self, CpiError};
use crate::launcher::ledger::{Event, Record};
use crate::launcher::log;
use crate::launcher::source::{JobState, Work};
use crate::launcher::tracked::After;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

impl Daemon {
    /// Settles every open record before new work: finished or crashed creates are read back from the spool,
    /// VMs that do not exist are retried, and everything else is adopted and watched by the loop.
    pub fn recover(&mut self) -> Result<(), DaemonError> {
        let open: Vec<Record> = self.ledger.state.open.values().cloned().collect();
        if !open.is_empty() {
            log::info(&format!("recovering {} open ledger records", open.len()));
        }
        for r in &open {
            let Some(pool) = self.pools.named(&r.intent.pool).map(|p| p.id) else {
                log::warn(&format!(
                    "record={} job={} pool={} is no longer configured; its VM {} must be deleted by hand",
                    r.intent.id,
                    r.intent.job,
                    r.intent.pool,
                    r.cid.as_deref().unwrap_or("-")
                ));
                continue;
            };
            if r.cid.is_none() && r.attempts > r.failures {
                self.recover_create(r, pool)?;
            }
        }
        // every interrupted create is settled; what is left in the spool are calls of a previous run whose
        // outcome no longer matters (has_vm, set_vm_metadata, delete_vm: all are repeated as needed)
        sweep_spool(&self.ledger.spool_dir(), false);
        self.check_vms();
        Ok(())
    }

    /// The create_vm of attempt `r.attempts`, interrupted by the end of the previous run: waits while its
    /// CPI still runs, then records the VM it made (and tags it) or the failure.
    fn recover_create(&mut self, r: &Record, pool: PoolId) -> Result<(), DaemonError> {
        let id = &r.intent.id;
        let files = self.pools[pool].cpi.spool_files(&format!("{id}-{}.create_vm", r.attempts));
        if !files.exists() {
            let reason = "the launcher stopped before create_vm ran".into();
            self.ledger.append(Event::AttemptFailed { id: id.clone(), n: r.attempts, reason })?;
            return Ok(());
        }
        let (t, timeout) = (Instant::now(), Duration::from_secs(self.pools[pool].conf.cpi_timeout_seconds));
        while files.running() && t.elapsed() < timeout {
            std::thread::sleep(Duration::from_millis(50));
        }
        let outcome = files.outcome("create_vm", "recovered").and_then(|v| {
            cpi::vm_cid(&v).ok_or_else(|| CpiError::NoResponse {
                method: "create_vm".into(),
                status: "recovered".into(),
                output: v.to_string(),
            })
        });
        match outcome {
            Ok(cid) => {
                log::info(&format!(
                    "record={id} job={} vm={cid} recovered from an interrupted create_vm",
                    r.intent.job
                ));
                self.ledger.append(Event::Created { id: id.clone(), cid: cid.clone(), at: now() })?;
                // the run that made it was killed before it could tag it
                self.set_metadata_now(r, &cid, &format!("{id}-{}.recovered.set_vm_metadata", r.attempts));
            }
            Err(e) => {
                log::warn(&format!(
                    "record={id} job={} interrupted create_vm failed: {}",
                    r.intent.job,
                    log::chain(&e)
                ));
                self.ledger.append(Event::AttemptFailed { id: id.clone(), n: r.attempts, reason: e.to_string() })?;
            }
        }
        files.remove();
        Ok(())
    }

    /// Asks the CPI whether each VM with a CID exists; a VM that is gone before its job started is retried.
    fn check_vms(&mut self) {
        let with_vm: Vec<Record> = self.ledger.state.open.values().filter(|r| r.cid.is_some()).cloned().collect();
        let names: Vec<String> = with_vm.iter().map(|r| super::state::agent_name(&r.intent)).collect();
        let work: Vec<Work<'_>> = with_vm
            .iter()
            .zip(&names)
            .filter(|(r, _)| !r.intent.job.is_empty())
            .map(|(r, name)| Work { job: &r.intent.job, agent_name: name, agent_tags: &r.intent.agent_tags })
            .collect();
        let states = if work.is_empty() { Default::default() } else { self.source.states(&work).unwrap_or_default() };
        for r in &with_vm {
            let (Some(pool), Some(cid)) = (self.pools.named(&r.intent.pool).map(|p| p.id), r.cid.clone()) else {
                continue;
            };
            let state = JobState::of(&states, &r.intent.job);
            let (id, job) = (&r.intent.id, &r.intent.job);
            if state.is_finished() {
                // its job is over: whether or not the VM still exists, delete_vm settles it
                log::info(&format!(
                    "record={id} job={job} vm={cid} job {} while the launcher was away: deleting",
                    state.name
                ));
                self.start_delete(r, After::Close(format!("job {}", state.name)));
                continue;
            }
            match self.caller(pool).call(&format!("{id}.has_vm"), "has_vm", json!([cid])) {
                // has_vm may be wrong: a started job is running on that VM, so keep it
                Ok(Value::Bool(false)) if !state.is_started() => {
                    log::warn(&format!(
                        "record={id} job={job} vm={cid} does not exist (has_vm false); deleting to be sure and retrying"
                    ));
                    self.start_delete(r, After::Retry(format!("VM {cid} disappeared before its job started")));
                }
                Ok(_) => {
                    let known = if state.name.is_empty() { "state unknown" } else { &state.name };
                    log::info(&format!("record={id} job={job} vm={cid} adopted (job {known})"))
                }
                Err(e) => log::warn(&format!("record={id} vm={cid} has_vm failed: {}; adopting", log::chain(&e))),
            }
        }
    }
}
