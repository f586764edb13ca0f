//! Starting work: the plan of one listing carried out (reserve, then a new VM, a warm VM's assignment, or a
//! refusal), warm VMs kept up, and a job moved to another pool when its own cannot make its VM.
use super::state::{agent_name, random_hex, Daemon, DaemonError};
use crate::launcher::breaker::Gate;
use crate::launcher::clock::now;
use crate::launcher::config::PoolId;
use crate::launcher::http::{self, Assignment};
use crate::launcher::ledger::{Event, Intent, Record};
use crate::launcher::log;
use crate::launcher::plan::{plan, Capacity, Decision};
use crate::launcher::rules::Rule;
use crate::launcher::source::{Listing, ScheduledJob, Work};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Where a job moves when its pool cannot make its VM.
struct Target {
    pool: PoolId,
    flavor: String,
    cpu: u32,
    ram: u64,
    agent_tags: Vec<String>,
}

impl Daemon {
    /// Plans the listing, wakes hosts for what waits, reserves what is to start, and starts it.
    pub(super) fn start_jobs(&mut self, listing: &Listing) -> Result<(), DaemonError> {
        for p in self.pools.iter_mut() {
            p.info.gate = p.plan_gate();
        }
        let busy = self.tracked.busy_set();
        let decisions =
            plan(&self.cfg, self.pools.as_slice(), &self.ledger.state, &busy, listing, &self.tracked.refused());
        if !self.stop.load(Ordering::SeqCst) {
            self.manage_power(listing, &decisions);
        }
        let to_reserve = self.note_decisions(&decisions);
        if to_reserve.is_empty() || self.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let Some(reserved) = self.reserve(&to_reserve, listing) else {
            return Ok(());
        };
        for d in decisions.into_iter().filter(|d| reserved.contains(&d.job().id)) {
            match d {
                Decision::Start { job, pool, flavor, cpu, ram, agent_tags, ip } => {
                    self.count("launcher_jobs_reserved_total", pool);
                    self.tracked.job(&job.id).rules = Some(job.rules.clone());
                    self.new_vm(pool, &job.id, flavor, cpu, ram, agent_tags, ip)?;
                }
                Decision::Assign { job, pool, record, agent_tags } => {
                    self.assign_warm(&job, pool, &record, agent_tags)?
                }
                Decision::Refuse { job, pool, reason } => {
                    let name = self.pools[pool].name().to_string();
                    self.tracked.job(&job.id).refused = true;
                    self.fail_job(&job.id, &name, &format!("agent-launcher: {reason}"));
                }
                Decision::Wait { .. } => {}
            }
        }
        Ok(())
    }

    fn count(&self, metric: &str, pool: PoolId) {
        http::lock(&self.shared).metrics.inc(metric, &[("pool", self.pools[pool].name())], 1.0);
    }

    /// Counts the plan's jobs (seen once, waiting by reason), tells a job waiting for an address so (once),
    /// and returns the jobs to reserve.
    fn note_decisions(&mut self, decisions: &[Decision]) -> Vec<String> {
        let mut to_reserve = Vec::new();
        let mut waiting: HashMap<(PoolId, &'static str), f64> = HashMap::new();
        for d in decisions {
            let (job, pool) = (d.job(), d.pool());
            if !std::mem::replace(&mut self.tracked.job(&job.id).seen, true) {
                self.count("launcher_jobs_seen_total", pool);
            }
            let Decision::Wait { reason, .. } = d else {
                to_reserve.push(job.id.clone());
                continue;
            };
            *waiting.entry((pool, reason)).or_default() += 1.0;
            if *reason == "ip" && !std::mem::replace(&mut self.tracked.job(&job.id).notified, true) {
                let msg = format!("agent-launcher: waiting for a free IP address in pool {}", self.pools[pool].name());
                log::info(&format!("job={} {msg}", job.id));
                if let Err(e) = self.source.notify(&job.id, &msg) {
                    self.source_error("notify", &e);
                }
            }
        }
        let mut s = http::lock(&self.shared);
        s.metrics.clear("launcher_jobs_waiting");
        for ((pool, reason), n) in waiting {
            s.metrics.set("launcher_jobs_waiting", &[("pool", self.pools[pool].name()), ("reason", reason)], n);
        }
        to_reserve
    }

    /// Reserves jobs; `None` when the reserve failed (a reserve whose answer was lost is reconciled on the
    /// next polls: the server may have made it).
    fn reserve(&mut self, ids: &[String], listing: &Listing) -> Option<HashSet<String>> {
        match self.source.reserve(ids) {
            Ok(r) => {
                for j in ids {
                    self.tracked.job(j).unsure = None;
                }
                for j in &r {
                    self.tracked.job(j).reserved_at = Some(Instant::now());
                }
                Some(r.into_iter().collect())
            }
            Err(e) => {
                self.source_error("reserve", &e);
                if e.is_ambiguous() {
                    for j in listing.jobs.iter().filter(|j| ids.contains(&j.id)) {
                        self.tracked.job(&j.id).unsure.get_or_insert_with(|| (j.clone(), Instant::now()));
                    }
                }
                None
            }
        }
    }

    /// What the source grants the VM of `intent` once it has a job (nothing without one; logged and empty
    /// when the source fails: the VM then cannot start its job and is retried after `boot_timeout_seconds`).
    pub(super) fn grant(&mut self, intent: &Intent) -> Map<String, Value> {
        if intent.job.is_empty() {
            return Map::new();
        }
        let name = agent_name(intent);
        let work = Work { job: &intent.job, agent_name: &name, agent_tags: &intent.agent_tags };
        self.source.grant(&work).unwrap_or_else(|e| {
            self.source_error("grant", &e);
            Map::new()
        })
    }

    /// Makes a record's VM assignment known to the listener.
    pub(super) fn publish_assignment(&mut self, intent: &Intent) {
        let grant = self.grant(intent);
        let job = (!intent.job.is_empty()).then(|| intent.job.clone());
        let a = Assignment { job, agent_tags: intent.agent_tags.clone(), name: agent_name(intent), grant };
        http::lock(&self.shared).assignments.insert(intent.secret.clone(), a);
    }

    /// Hands a reserved job to a warm VM: the ledger says so (with a whole lifetime for the job), the VM's
    /// assignment answers with the job, and the VM is tagged again.
    fn assign_warm(
        &mut self,
        job: &ScheduledJob,
        pool: PoolId,
        record: &str,
        agent_tags: Vec<String>,
    ) -> Result<(), DaemonError> {
        self.count("launcher_jobs_reserved_total", pool);
        self.count("launcher_jobs_launched_total", pool);
        // the VM's lifetime starts again with its job (a long-idle warm VM would cut it short)
        let deadline = now() + self.pools[pool].conf.lifetime_secs();
        self.ledger.append(Event::Assigned {
            id: record.to_string(),
            job: job.id.clone(),
            agent_tags,
            at: now(),
            deadline: Some(deadline),
        })?;
        let Some(r) = self.ledger.state.open.get(record).cloned() else {
            return Ok(());
        };
        log::info(&format!(
            "job={} pool={} assigned to warm record={record} vm={}",
            job.id,
            self.pools[pool].name(),
            r.cid.as_deref().unwrap_or("-")
        ));
        self.publish_assignment(&r.intent);
        self.update_metadata(&r);
        Ok(())
    }

    /// Writes the intent for a new VM (for `job`, or warm when `job` is empty) and starts its create.
    #[expect(clippy::too_many_arguments, reason = "one call site per kind of VM; a struct would only rename them")]
    pub(super) fn new_vm(
        &mut self,
        pool: PoolId,
        job: &str,
        flavor: String,
        cpu: u32,
        ram: u64,
        agent_tags: Vec<String>,
        ip: Option<String>,
    ) -> Result<(), DaemonError> {
        let p = &self.pools[pool].conf;
        let secret = random_hex()?;
        log::add_secret(&secret);
        let prefix: String = if job.is_empty() { "warm".into() } else { job.chars().take(8).collect() };
        let intent = Intent {
            id: format!("{prefix}-{}", &random_hex()?[..8]),
            job: job.to_string(),
            pool: p.name.clone(),
            flavor,
            cpu,
            ram,
            ip,
            deadline: now() + p.lifetime_secs(),
            secret,
            agent_tags,
            at: now(),
        };
        log::info(&format!(
            "job={} pool={} flavor={} {}; intent record={}{}",
            if job.is_empty() { "-" } else { job },
            p.name,
            intent.flavor,
            if job.is_empty() { "warm VM" } else { "reserved" },
            intent.id,
            intent.ip.as_ref().map(|i| format!(" ip={i}")).unwrap_or_default()
        ));
        self.ledger.append(Event::Intent(intent.clone()))?;
        self.publish_assignment(&intent);
        if let Some(r) = self.ledger.state.open.get(&intent.id).cloned() {
            self.start_create(&r)?;
        }
        Ok(())
    }

    /// Keeps `warm` idle VMs per pool (booting ones count), within capacity.
    pub(super) fn replenish_warm(&mut self) -> Result<(), DaemonError> {
        for id in self.pools.ids().collect::<Vec<_>>() {
            let p = &self.pools[id];
            if p.conf.warm == 0 || !p.ready() || p.breaker.gate() != Gate::Closed {
                continue;
            }
            let have = self.ledger.state.open.values().filter(|r| r.intent.pool == p.name() && r.intent.job.is_empty());
            let have = have.count() as u32;
            let Ok((fname, f)) = p.conf.flavor_for(None) else {
                continue;
            };
            let (fname, cpu, ram) = (fname.to_string(), f.cpu, f.ram);
            let smallest = p.conf.smallest_flavor().map(|(n, _)| n == fname).unwrap_or(true);
            let tags: Vec<String> = p.conf.tags.iter().filter(|t| !t.ends_with("=*")).cloned().collect();
            for _ in have..self.pools[id].conf.warm {
                let mut cap = Capacity::new(&self.cfg, &self.ledger.state, &self.tracked.busy_set());
                let info = &self.pools[id].info;
                if cap.refusal(&self.cfg, info, id, cpu, ram, smallest).is_some() {
                    break;
                }
                let ip = cap.take(info, id, cpu, ram);
                self.new_vm(id, "", fname.clone(), cpu, ram, tags.clone(), ip)?;
            }
        }
        Ok(())
    }

    /// The first other pool that serves the job, was not tried, can create and has room.
    fn failover_target(&self, r: &Record, from: PoolId, cap: &Capacity) -> Option<Target> {
        let job = self.tracked.get_job(&r.intent.job);
        let rules_text = job.and_then(|j| j.rules.clone()).unwrap_or_else(|| r.intent.agent_tags.clone());
        let rules = rules_text.iter().map(|t| Rule::parse(t)).collect::<Option<Vec<_>>>()?;
        let tried = job.map(|j| j.tried.clone()).unwrap_or_default();
        self.pools.iter().filter(|p| p.id != from && !tried.contains(&p.id) && p.can_create()).find_map(|p| {
            let m = p.info.tags.matches_rules(&rules)?;
            let (fname, f) = p.conf.flavor_for(m.flavor.as_deref()).ok()?;
            let smallest = p.conf.smallest_flavor().map(|(n, _)| n == fname).unwrap_or(true);
            cap.refusal(&self.cfg, &p.info, p.id, f.cpu, f.ram, smallest).is_none().then(|| Target {
                pool: p.id,
                flavor: fname.to_string(),
                cpu: f.cpu,
                ram: f.ram,
                agent_tags: m.agent_tags,
            })
        })
    }

    /// Moves a job whose pool cannot make its VM (breaker open, or out of attempts) to another pool that
    /// serves it, is not open and has room: the old record (which has no VM) is closed first, then the new
    /// one is written with a new secret, so a VM that the failed pool might still bring up gets no job.
    /// Returns whether the job was moved.
    pub(super) fn fail_over(&mut self, r: &Record, from: PoolId) -> Result<bool, DaemonError> {
        if r.intent.job.is_empty() || r.cid.is_some() {
            return Ok(false);
        }
        let mut cap = Capacity::new(&self.cfg, &self.ledger.state, &self.tracked.busy_set());
        let Some(to) = self.failover_target(r, from, &cap) else {
            return Ok(false);
        };
        let ip = cap.take(&self.pools[to.pool].info, to.pool, to.cpu, to.ram);
        let (fname, tname) = (self.pools[from].name().to_string(), self.pools[to.pool].name().to_string());
        let b = &self.pools[from].breaker;
        let why = if b.gate() == Gate::Open {
            format!("breaker open: {}", b.reason)
        } else {
            format!("{} failed attempts", r.failures)
        };
        log::warn(&format!(
            "record={} job={} failover: pool {fname} cannot make its VM ({why}); moving it to pool {tname}",
            r.intent.id, r.intent.job
        ));
        let job = r.intent.job.clone();
        let reserved = self.tracked.get_job(&job).and_then(|j| j.reserved_at);
        self.close(r, format!("moved to pool {tname}"))?;
        let j = self.tracked.job(&job);
        j.reserved_at = reserved;
        j.tried.insert(from);
        let labels = [("pool", fname.as_str()), ("to", tname.as_str())];
        http::lock(&self.shared).metrics.inc("launcher_jobs_failed_over_total", &labels, 1.0);
        self.new_vm(to.pool, &job, to.flavor, to.cpu, to.ram, to.agent_tags, ip)?;
        Ok(true)
    }
}
