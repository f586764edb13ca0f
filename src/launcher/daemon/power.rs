//! Host power, once per poll after the plan: a sleeping host is woken for jobs that no awake pool can take
//! (and for records left waiting in its pool), a waking host is used once its CPI answers `info` within its
//! boot grace, and a host idle long enough is powered off. The commands run on worker threads.
use super::pools::Pool;
use super::state::{cpi_context, timed, Daemon, DaemonError, Msg};
use crate::launcher::clock::now;
use crate::launcher::config::{self, Config, PoolId};
use crate::launcher::cpi::Cpi;
use crate::launcher::http::SharedRef;
use crate::launcher::log;
use crate::launcher::plan::Decision;
use crate::launcher::power::{self, Power};
use crate::launcher::rules::Rule;
use crate::launcher::source::{Listing, ScheduledJob};
use serde_json::json;
use std::collections::HashSet;
use std::time::{Duration, Instant};

fn rules_of(j: &ScheduledJob) -> Option<Vec<Rule>> {
    j.rules.iter().map(|r| Rule::parse(r)).collect()
}

/// A pool's host power at start: unmanaged without `power_on`; otherwise on when its CPI answers `info`
/// now, else asleep (not failing: it is woken on demand).
pub(super) fn host_at_start(cfg: &Config, shared: &SharedRef, cpi: &Cpi, pool: &config::Pool) -> Power {
    if pool.power_on.is_empty() {
        return Power::Unmanaged;
    }
    let (tag, ctx) = (format!("power-{}-{}.info", pool.name, now()), cpi_context(cfg));
    let ok = timed(shared, "info", || cpi.call(&tag, "info", json!([]), &ctx)).is_ok();
    cpi.spool_files(&tag).remove();
    log::info(&format!("pool={} host is {} at start", pool.name, if ok { "on" } else { "off (asleep)" }));
    if ok {
        Power::On
    } else {
        Power::Off
    }
}

impl Daemon {
    /// Runs pool `id`'s power_on (`on`) or power_off command on a worker thread.
    fn start_power(&mut self, id: PoolId, on: bool) {
        let p = &mut self.pools[id];
        let (argv, timeout) = if on {
            (p.conf.power_on.clone(), Duration::from_secs(p.conf.boot_grace_seconds))
        } else {
            (p.conf.power_off.clone(), Duration::from_secs(p.conf.cpi_timeout_seconds.min(600)))
        };
        p.host.busy = true;
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            let res = power::run(&argv, timeout).map_err(|e| log::chain(&e));
            let _ = tx.send(Msg::PowerDone { pool: id, on, res });
        });
    }

    /// Wakes pool `id`'s host: power_on, then its CPI is probed until it answers.
    fn wake(&mut self, id: PoolId, why: &str) {
        self.pools[id].set_power(Power::Waking, why);
        self.start_power(id, true);
    }

    pub(super) fn power_done(&mut self, id: PoolId, on: bool, res: Result<(), String>) {
        let p = &mut self.pools[id];
        p.host.busy = false;
        match (on, res) {
            (true, Ok(())) => log::info(&format!("pool={} power_on done; waiting for its CPI to answer", p.name())),
            (true, Err(e)) => {
                p.host.wake_not_before = Some(Instant::now() + Duration::from_secs(p.conf.boot_grace_seconds));
                p.set_power(Power::Off, &format!("power_on failed: {e}"));
            }
            (false, Ok(())) => p.set_power(Power::Off, "power_off done"),
            // it may still be on: treat it as on (it gets VMs again, and is tried again when idle)
            (false, Err(e)) => p.set_power(Power::On, &format!("power_off failed: {e}")),
        }
    }

    /// A waking host's CPI answered (or not) its `info`: once it answers, the pool gets its stemcell (when
    /// it has none yet) and VMs.
    pub(super) fn wake_probed(&mut self, id: PoolId, ok: bool) -> Result<(), DaemonError> {
        self.pools[id].host.busy = false;
        if !ok || self.pools[id].host.power != Power::Waking {
            return Ok(());
        }
        if self.pools[id].stemcell.cid.is_empty() {
            match self.ensure_stemcell(id) {
                Ok(_) => {}
                Err(DaemonError::Ledger(e)) => return Err(DaemonError::Ledger(e)),
                Err(e) => self.pools[id].open_breaker(&format!("no stemcell: {}", log::chain(&e)), &self.shared),
            }
        }
        let secs = self.pools[id].host.since.elapsed().as_secs_f64();
        self.pools[id].set_power(Power::On, &format!("its CPI answers info ({secs:.1} s after power_on)"));
        Ok(())
    }

    /// Power management, once per poll after the plan.
    pub(super) fn manage_power(&mut self, listing: &Listing, decisions: &[Decision]) {
        self.wake_for_jobs(decisions);
        self.wake_for_records();
        let held: HashSet<String> = self.ledger.state.open.values().map(|r| r.intent.job.clone()).collect();
        for id in self.pools.ids().collect::<Vec<_>>() {
            match self.pools[id].host.power {
                Power::Waking if !self.pools[id].host.busy => self.watch_waking(id),
                Power::On if !self.pools[id].conf.power_off.is_empty() => self.watch_idle(id, listing, &held),
                _ => {}
            }
        }
    }

    /// Demand that no awake pool can meet: jobs that wait (not for a paused queue or a create slot) and
    /// that a sleeping pool serves, when no pool that serves them is waking already.
    fn wake_for_jobs(&mut self, decisions: &[Decision]) {
        for d in decisions {
            let Decision::Wait { job, reason, .. } = d else { continue };
            if matches!(*reason, "paused" | "creates") {
                continue;
            }
            let Some(rules) = rules_of(job) else { continue };
            let serves = |p: &&Pool| p.info.tags.matches_rules(&rules).is_some();
            let asleep = self.pools.iter().filter(serves).find(|p| p.host.can_wake()).map(|p| p.id);
            let already = self.pools.iter().filter(serves).any(|p| p.host.power == Power::Waking);
            if let (Some(id), false) = (asleep, already) {
                self.wake(id, &format!("job {} waits ({reason}) and no awake pool can take it: power_on", job.id));
            }
        }
    }

    /// A record left waiting for a VM in a sleeping pool (after a restart) is demand for it too.
    fn wake_for_records(&mut self) {
        for id in self.pools.ids().collect::<Vec<_>>() {
            let name = self.pools[id].name();
            let pending = self
                .ledger
                .state
                .open
                .values()
                .any(|r| r.intent.pool == name && r.cid.is_none() && !self.tracked.is_busy(&r.intent.id));
            if pending && self.pools[id].host.can_wake() {
                self.wake(id, "a job waits for a VM here: power_on");
            }
        }
    }

    /// A waking host: given up after its boot grace, else its CPI is asked `info` on a worker thread.
    fn watch_waking(&mut self, id: PoolId) {
        let p = &mut self.pools[id];
        let grace = p.conf.boot_grace_seconds;
        if p.host.since.elapsed() > Duration::from_secs(grace) {
            p.host.wake_not_before = Some(Instant::now() + Duration::from_secs(grace));
            p.set_power(Power::Off, &format!("its CPI did not answer within boot_grace_seconds = {grace}"));
            return;
        }
        p.host.busy = true;
        let (caller, tx) = (self.caller(id), self.tx.clone());
        std::thread::spawn(move || {
            let ok = caller.call(&format!("wake-{}-{}.info", id.0, now()), "info", json!([])).is_ok();
            let _ = tx.send(Msg::WakeProbed { pool: id, ok });
        });
    }

    /// A host that is on: powered off after `idle_power_off_seconds` without records, demand or warm VMs.
    fn watch_idle(&mut self, id: PoolId, listing: &Listing, held: &HashSet<String>) {
        let p = &self.pools[id];
        let has_records = self.ledger.state.open.values().any(|r| r.intent.pool == p.name());
        let demand = listing
            .jobs
            .iter()
            .any(|j| !held.contains(&j.id) && rules_of(j).is_some_and(|r| p.info.tags.matches_rules(&r).is_some()));
        let idle_off = p.conf.idle_power_off_seconds;
        let p = &mut self.pools[id];
        if has_records || demand || p.conf.warm > 0 {
            p.host.idle_since = None;
            return;
        }
        let since = *p.host.idle_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= Duration::from_secs(idle_off) {
            p.set_power(Power::Stopping, &format!("no VMs, creates or demand for {idle_off} s: power_off"));
            self.start_power(id, false);
        }
    }
}
