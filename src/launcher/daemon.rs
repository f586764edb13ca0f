//! The launcher loop: poll → plan → reserve → intent → create_vm → watch → delete_vm, and recovery on start.
//!
//! One thread owns all state (the ledger, the records in flight); CPI calls run on short-lived worker
//! threads that report back through a channel, so slow creates never stall polling. Every create is preceded
//! by an fsync'd ledger entry, and every VM is deleted when its job ends, is cancelled, never starts, or the
//! VM passes its deadline. On start, [`Daemon::recover`] settles every open record before any new work.
use crate::launcher::breaker::{Breaker, Gate};
use crate::launcher::buildkite::{is_started, is_terminal, sort_jobs, BkError, Listing, ScheduledJob, Source};
use crate::launcher::config::{Config, OnShutdown};
use crate::launcher::cpi::{Cpi, CpiError};
use crate::launcher::http::{self, Assignment, Shared, SharedRef};
use crate::launcher::ledger::{Event, Intent, Ledger, LedgerError, Record};
use crate::launcher::log;
use crate::launcher::plan::{plan, Capacity, Decision, PoolInfo};
use crate::launcher::power::{self, Power};
use crate::launcher::tracked::{After, Tracked};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("ledger")]
    Ledger(#[from] LedgerError),
    #[error("cannot listen on {addr}")]
    Listen { addr: String, source: http::ServeError },
    #[error("stemcell of pool {pool}")]
    Stemcell { pool: String, source: CpiError },
    #[error("stemcell tarball of pool {pool}")]
    Tarball { pool: String, source: crate::launcher::stemcell::TarballError },
    #[error("stemcell image {0} is unreadable")]
    StemcellImage(String, #[source] std::io::Error),
    #[error("cannot register the Buildkite stack")]
    Register(#[source] BkError),
    #[error("cannot read random bytes for a VM secret")]
    Random(#[source] std::io::Error),
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn now_f() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// 32 hex characters from the kernel's random source.
pub fn random_hex() -> Result<String, DaemonError> {
    crate::ids::try_random_hex(32).map_err(DaemonError::Random)
}

/// What a worker thread reports.
enum Msg {
    Created {
        id: String,
        n: u32,
        res: Result<String, CpiError>,
    },
    Deleted {
        id: String,
        res: Result<(), CpiError>,
    },
    /// A power command of a pool finished (`on`: power_on, else power_off).
    PowerDone {
        pool: usize,
        on: bool,
        res: Result<(), String>,
    },
    /// The `info` probe of a waking host: whether its CPI answered.
    WakeProbed {
        pool: usize,
        ok: bool,
    },
    /// The `info` probe of an open breaker's pool.
    Probed {
        pool: usize,
        res: Result<(), String>,
    },
}

/// The running launcher.
pub struct Daemon {
    cfg: Config,
    infos: Vec<PoolInfo>,
    cpis: Vec<Cpi>,
    stemcells: Vec<String>,
    /// Per pool: the stemcell's API version (create_vm's `context.vm.stemcell.api_version`).
    stemcell_api: Vec<u32>,
    ledger: Ledger,
    source: Box<dyn Source>,
    shared: SharedRef,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    /// Per job and per open record: what the loop knows beyond the ledger.
    tracked: Tracked,
    stop: Arc<AtomicBool>,
    bk_wait_until: Option<Instant>,
    /// Polls of the Buildkite API that failed in a row.
    failed_polls: u32,
    /// Per pool: its circuit breaker.
    breakers: Vec<Breaker>,
    /// What `pools.json` holds now.
    published: String,
    /// Per pool: its host's power state, since when, and since when it has been idle (powered on).
    power: Vec<Power>,
    power_since: Vec<Instant>,
    idle_since: Vec<Option<Instant>>,
    /// Per pool: a power command or a wake probe is in flight.
    power_busy: Vec<bool>,
    /// Per pool: no new wake before then (after a host did not come up).
    wake_not_before: Vec<Option<Instant>>,
    /// The HTTP listener (it restarts its own accept loop; a new one replaces it if its thread ends).
    listener: http::Listener,
    /// When the next try to start a listener whose thread ended is due.
    listener_retry_at: Option<Instant>,
}

/// The pools' breaker states of the running launcher, in its ledger directory (read by `status`).
pub const POOLS_FILE: &str = "pools.json";

static CALLS: AtomicU64 = AtomicU64::new(0);

/// The context of a CPI call; its `request_id` is unique per call (it names the call in the CPI's logs).
fn cpi_context(cfg: &Config) -> Value {
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    json!({"director_uuid": cfg.launcher_id, "request_id": format!("agent-launcher-{}-{}-{n}", now(), std::process::id())})
}

/// The context of create_vm: also the stemcell's API version, as the director sends it.
fn create_vm_context(cfg: &Config, stemcell_api_version: u32) -> Value {
    let mut ctx = cpi_context(cfg);
    ctx["vm"] = json!({"stemcell": {"api_version": stemcell_api_version}});
    ctx
}

/// A pool's stemcell API version: configured, else from its tarball's `stemcell.MF`, else 3.
pub fn stemcell_api_version(pool: &crate::launcher::config::Pool) -> u32 {
    pool.stemcell
        .api_version
        .or_else(|| {
            let t = pool.stemcell.tarball.as_ref()?;
            crate::launcher::stemcell::read_manifest(t)
                .ok()
                .flatten()
                .as_deref()
                .and_then(crate::launcher::stemcell::manifest_api_version)
        })
        .unwrap_or(3)
}

/// The pause before create attempt `failures + 1`: 1 s after the first failure, doubling, at most 60 s.
pub fn create_backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// The pause after `failed` polls in a row: the poll interval (at least 1 s), doubling, at most 60 s.
pub fn poll_backoff(interval: Duration, failed: u32) -> Duration {
    let base = interval.max(Duration::from_secs(1));
    base.saturating_mul(1u32 << failed.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// Removes what a previous run left in the spool: files, and the directories of extracted stemcells.
fn sweep_spool(spool: &std::path::Path, dirs_only: bool) {
    for e in std::fs::read_dir(spool).into_iter().flatten().flatten() {
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let _ = if is_dir {
            std::fs::remove_dir_all(e.path())
        } else if !dirs_only {
            std::fs::remove_file(e.path())
        } else {
            Ok(())
        };
    }
}

/// Runs a CPI call and records its latency and errors.
fn timed<T>(shared: &SharedRef, method: &str, f: impl FnOnce() -> Result<T, CpiError>) -> Result<T, CpiError> {
    let t = Instant::now();
    let r = f();
    let mut s = http::lock(shared);
    s.metrics.observe("launcher_cpi_call_duration_seconds", &[("method", method)], t.elapsed().as_secs_f64());
    if r.is_err() {
        s.metrics.inc("launcher_cpi_errors_total", &[("method", method)], 1.0);
    }
    r
}

impl Daemon {
    /// Opens the ledger, binds the listener, makes sure every pool has its stemcell.
    pub fn new(
        cfg: Config,
        source: Box<dyn Source>,
        agent_token: String,
        stop: Arc<AtomicBool>,
    ) -> Result<Daemon, DaemonError> {
        let ledger = Ledger::open(&cfg.ledger_dir)?;
        let cpis: Vec<Cpi> = cfg
            .pools
            .iter()
            .map(|p| Cpi::new(p.cpi.clone(), ledger.spool_dir(), Duration::from_secs(p.cpi_timeout_seconds)))
            .collect();
        let infos = cfg.pools.iter().map(PoolInfo::new).collect();
        let shared: SharedRef = Arc::new(std::sync::Mutex::new(Shared {
            metrics: Default::default(),
            assignments: HashMap::new(),
            last_tick: Instant::now(),
            healthy_within: Duration::from_millis(cfg.poll_interval_ms * 5 + 60_000),
            failed_polls: 0,
            unhealthy_after: cfg.unhealthy_after_failed_polls,
            agent_endpoint: cfg.agent_endpoint(),
            agent_token,
            listener_down: None,
        }));
        let listener = http::serve(&cfg.listen, cfg.tls.as_ref(), cfg.listener.limits(), shared.clone())
            .map_err(|source| DaemonError::Listen { addr: cfg.listen.clone(), source })?;
        log::info(&format!(
            "listening on {}://{} (/metrics, /healthz, /v1/assignment)",
            if cfg.tls.is_some() { "https" } else { "http" },
            listener.addr()
        ));
        let (tx, rx) = channel();
        let mut d = Daemon {
            cfg,
            infos,
            cpis,
            stemcells: Vec::new(),
            stemcell_api: Vec::new(),
            ledger,
            source,
            shared,
            tx,
            rx,
            tracked: Tracked::default(),
            stop,
            bk_wait_until: None,
            failed_polls: 0,
            breakers: Vec::new(),
            published: String::new(),
            power: Vec::new(),
            power_since: Vec::new(),
            idle_since: Vec::new(),
            power_busy: Vec::new(),
            wake_not_before: Vec::new(),
            listener,
            listener_retry_at: None,
        };
        let n = d.cfg.pools.len();
        (d.power_since, d.idle_since) = (vec![Instant::now(); n], vec![None; n]);
        (d.power_busy, d.wake_not_before) = (vec![false; n], vec![None; n]);
        // a managed host that does not answer now is asleep (not failing): it is woken on demand
        d.power = (0..n)
            .map(|i| {
                if d.cfg.pools[i].power_on.is_empty() {
                    return Power::Unmanaged;
                }
                let cpi = d.cpis[i].clone();
                let tag = format!("power-{i}-{}.info", now());
                let ctx = cpi_context(&d.cfg);
                let ok = timed(&d.shared, "info", || cpi.call(&tag, "info", json!([]), &ctx)).is_ok();
                cpi.spool_files(&tag).remove();
                log::info(&format!(
                    "pool={} host is {} at start",
                    d.cfg.pools[i].name,
                    if ok { "on" } else { "off (asleep)" }
                ));
                if ok {
                    Power::On
                } else {
                    Power::Off
                }
            })
            .collect();
        let b = &d.cfg.breaker;
        d.breakers =
            vec![
                Breaker::new(b.failures, Duration::from_secs(b.open_seconds), Duration::from_secs(b.max_open_seconds));
                d.cfg.pools.len()
            ];
        for r in d.ledger.state.open.values() {
            log::add_secret(&r.intent.secret);
            let job = (!r.intent.job.is_empty()).then(|| r.intent.job.clone());
            let a = Assignment { job, agent_tags: r.intent.agent_tags.clone(), name: agent_name(&r.intent) };
            http::lock(&d.shared).assignments.insert(r.intent.secret.clone(), a);
        }
        d.stemcells = d.ensure_stemcells()?;
        d.stemcell_api = d.cfg.pools.iter().map(stemcell_api_version).collect();
        Ok(d)
    }

    /// The stemcell CID of every pool (configured, remembered in the ledger, or uploaded now). A pool whose
    /// stemcell cannot be had (its host is down, its CPI missing) does not stop the launcher: it gets an
    /// empty CID and its breaker starts open, so it is probed and its stemcell uploaded again later.
    fn ensure_stemcells(&mut self) -> Result<Vec<String>, DaemonError> {
        let mut out = Vec::new();
        for i in 0..self.cfg.pools.len() {
            if self.power[i] == Power::Off {
                // asleep: its stemcell is uploaded when it is woken
                out.push(String::new());
                continue;
            }
            match self.ensure_stemcell(i) {
                Ok(cid) => out.push(cid),
                Err(DaemonError::Ledger(e)) => return Err(DaemonError::Ledger(e)),
                Err(e) => {
                    let reason = log::chain(&e);
                    log::error(&format!(
                        "pool={} has no stemcell: {reason}; its breaker opens and it is retried",
                        self.cfg.pools[i].name
                    ));
                    self.breaker_open_now(i, &format!("no stemcell: {reason}"));
                    out.push(String::new());
                }
            }
        }
        Ok(out)
    }

    fn breaker_open_now(&mut self, i: usize, reason: &str) {
        self.breakers[i].open_now(Instant::now(), reason);
        self.breaker_logged(i);
    }

    /// Logs pool `i`'s breaker state after a change, and counts the openings.
    fn breaker_logged(&mut self, i: usize) {
        let b = &self.breakers[i];
        let name = &self.cfg.pools[i].name;
        match b.gate() {
            Gate::Open => {
                log::warn(&format!(
                    "pool={name} breaker open: {}; next probe in {} s",
                    b.reason,
                    b.retry_in(Instant::now())
                ));
                http::lock(&self.shared).metrics.inc("launcher_pool_breaker_opened_total", &[("pool", name)], 1.0);
            }
            Gate::HalfOpen => log::info(&format!("pool={name} breaker half-open: the CPI answers; one create decides")),
            Gate::Closed => log::info(&format!("pool={name} breaker closed")),
        }
    }

    /// Starts the `info` probe of every open breaker whose pause is over (on a worker thread).
    fn start_probes(&mut self) {
        for i in 0..self.breakers.len() {
            if !self.breakers[i].probe_due(Instant::now()) {
                continue;
            }
            self.breakers[i].probe_started();
            let cpi = self.cpis[i].clone();
            let ctx = cpi_context(&self.cfg);
            let (tx, shared) = (self.tx.clone(), self.shared.clone());
            log::info(&format!("pool={} breaker probe: info", self.cfg.pools[i].name));
            std::thread::spawn(move || {
                let tag = format!("probe-{i}-{}.info", now());
                let res = timed(&shared, "info", || cpi.call(&tag, "info", json!([]), &ctx))
                    .map(|_| ())
                    .map_err(|e| format!("info: {}", log::chain(&e)));
                cpi.spool_files(&tag).remove();
                let _ = tx.send(Msg::Probed { pool: i, res });
            });
        }
    }

    /// A probe's outcome; a pool that answers but has no stemcell yet gets it now (this waits for the upload).
    fn probed(&mut self, i: usize, res: Result<(), String>) -> Result<(), DaemonError> {
        let mut res = res;
        if res.is_ok() && self.stemcells.get(i).is_some_and(|s| s.is_empty()) {
            match self.ensure_stemcell(i) {
                Ok(cid) if !cid.is_empty() => self.stemcells[i] = cid,
                Ok(_) => res = Err("no stemcell".into()),
                Err(DaemonError::Ledger(e)) => return Err(DaemonError::Ledger(e)),
                Err(e) => res = Err(format!("no stemcell: {}", log::chain(&e))),
            }
        }
        self.breakers[i].probe_done(Instant::now(), res);
        self.breaker_logged(i);
        Ok(())
    }

    /// Moves a job whose pool cannot make its VM (breaker open, or out of attempts) to another pool that
    /// serves it, is not open and has room: the old record (which has no VM) is closed first, then the new
    /// one is written with a new secret, so a VM that the failed pool might still bring up gets no job.
    /// Returns whether the job was moved.
    fn fail_over(&mut self, r: &Record, from: usize) -> Result<bool, DaemonError> {
        if r.intent.job.is_empty() || r.cid.is_some() {
            return Ok(false);
        }
        let job = self.tracked.get_job(&r.intent.job);
        let rules_text = job.and_then(|j| j.rules.clone()).unwrap_or_else(|| r.intent.agent_tags.clone());
        let tried = job.map(|j| j.tried.clone()).unwrap_or_default();
        let Some(rules) = rules_text.iter().map(|t| crate::launcher::rules::Rule::parse(t)).collect::<Option<Vec<_>>>()
        else {
            return Ok(false);
        };
        let creating = self.creating();
        let mut cap = Capacity::new(&self.cfg, &self.ledger.state, &creating);
        let mut target = None;
        for (i, p) in self.cfg.pools.iter().enumerate() {
            if i == from
                || tried.contains(&i)
                || !self.breakers[i].allows_create()
                || !self.power[i].usable()
                || self.stemcells[i].is_empty()
            {
                continue;
            }
            let Some(m) = self.infos[i].tags.matches_rules(&rules) else {
                continue;
            };
            let Ok((fname, f)) = p.flavor_for(m.flavor.as_deref()) else {
                continue;
            };
            let smallest = p.smallest_flavor().map(|(n, _)| n == fname).unwrap_or(true);
            if cap.refusal(&self.cfg, &self.infos[i], i, f.cpu, f.ram, smallest).is_none() {
                target = Some((i, fname.to_string(), f.cpu, f.ram, m.agent_tags));
                break;
            }
        }
        let Some((to, flavor, cpu, ram, agent_tags)) = target else {
            return Ok(false);
        };
        let ip = cap.take(&self.infos[to], to, cpu, ram);
        let (fname, tname) = (self.cfg.pools[from].name.clone(), self.cfg.pools[to].name.clone());
        log::warn(&format!(
            "record={} job={} failover: pool {fname} cannot make its VM ({}); moving it to pool {tname}",
            r.intent.id,
            r.intent.job,
            if self.breakers[from].gate() == Gate::Open {
                format!("breaker open: {}", self.breakers[from].reason)
            } else {
                format!("{} failed attempts", r.failures)
            }
        ));
        let job = r.intent.job.clone();
        let reserved = self.tracked.get_job(&job).and_then(|j| j.reserved_at);
        self.forget(r);
        self.ledger.append(Event::Closed { id: r.intent.id.clone(), reason: format!("moved to pool {tname}") })?;
        let j = self.tracked.job(&job);
        j.reserved_at = reserved;
        j.tried.insert(from);
        http::lock(&self.shared).metrics.inc(
            "launcher_jobs_failed_over_total",
            &[("pool", &fname), ("to", &tname)],
            1.0,
        );
        self.new_vm(to, &job, flavor, cpu, ram, agent_tags, ip)?;
        Ok(true)
    }

    fn set_power(&mut self, i: usize, p: Power, why: &str) {
        self.power[i] = p;
        self.power_since[i] = Instant::now();
        self.idle_since[i] = None;
        log::info(&format!("pool={} host power {}: {why}", self.cfg.pools[i].name, p.as_str()));
    }

    /// Runs pool `i`'s power_on (`on`) or power_off command on a worker thread.
    fn start_power(&mut self, i: usize, on: bool) {
        let p = &self.cfg.pools[i];
        let (argv, timeout) = if on {
            (p.power_on.clone(), Duration::from_secs(p.boot_grace_seconds))
        } else {
            (p.power_off.clone(), Duration::from_secs(p.cpi_timeout_seconds.min(600)))
        };
        self.power_busy[i] = true;
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            let res = power::run(&argv, timeout).map_err(|e| log::chain(&e));
            let _ = tx.send(Msg::PowerDone { pool: i, on, res });
        });
    }

    fn power_done(&mut self, i: usize, on: bool, res: Result<(), String>) {
        self.power_busy[i] = false;
        match (on, res) {
            (true, Ok(())) => {
                log::info(&format!("pool={} power_on done; waiting for its CPI to answer", self.cfg.pools[i].name))
            }
            (true, Err(e)) => {
                let grace = Duration::from_secs(self.cfg.pools[i].boot_grace_seconds);
                self.wake_not_before[i] = Some(Instant::now() + grace);
                self.set_power(i, Power::Off, &format!("power_on failed: {e}"));
            }
            (false, Ok(())) => self.set_power(i, Power::Off, "power_off done"),
            (false, Err(e)) => {
                // it may still be on: treat it as on (it gets VMs again, and is tried again when idle)
                self.set_power(i, Power::On, &format!("power_off failed: {e}"));
            }
        }
    }

    fn wake_probed(&mut self, i: usize, ok: bool) -> Result<(), DaemonError> {
        self.power_busy[i] = false;
        if !ok || self.power[i] != Power::Waking {
            return Ok(());
        }
        if self.stemcells[i].is_empty() {
            match self.ensure_stemcell(i) {
                Ok(cid) => self.stemcells[i] = cid,
                Err(DaemonError::Ledger(e)) => return Err(DaemonError::Ledger(e)),
                Err(e) => {
                    self.breaker_open_now(i, &format!("no stemcell: {}", log::chain(&e)));
                }
            }
        }
        let secs = self.power_since[i].elapsed().as_secs_f64();
        self.set_power(i, Power::On, &format!("its CPI answers info ({secs:.1} s after power_on)"));
        Ok(())
    }

    /// Power management, once per poll after the plan: wakes a sleeping host for jobs that no awake pool
    /// can take, watches waking hosts until their CPI answers, and powers off hosts idle long enough.
    fn manage_power(&mut self, listing: &Listing, decisions: &[Decision]) {
        let rules_of = |j: &ScheduledJob| {
            j.rules.iter().map(|r| crate::launcher::rules::Rule::parse(r)).collect::<Option<Vec<_>>>()
        };
        // demand that no awake pool can meet: jobs that wait (not for a paused queue or a create slot)
        for d in decisions {
            let Decision::Wait { job, reason, .. } = d else {
                continue;
            };
            if matches!(*reason, "paused" | "creates") {
                continue;
            }
            let Some(rules) = rules_of(job) else { continue };
            let asleep = (0..self.cfg.pools.len()).find(|&i| {
                self.power[i] == Power::Off
                    && !self.power_busy[i]
                    && self.wake_not_before[i].is_none_or(|t| Instant::now() >= t)
                    && self.infos[i].tags.matches_rules(&rules).is_some()
            });
            let already = (0..self.cfg.pools.len())
                .any(|i| self.power[i] == Power::Waking && self.infos[i].tags.matches_rules(&rules).is_some());
            if let (Some(i), false) = (asleep, already) {
                self.set_power(
                    i,
                    Power::Waking,
                    &format!("job {} waits ({reason}) and no awake pool can take it: power_on", job.id),
                );
                self.start_power(i, true);
            }
        }
        // a record left waiting for a VM in a sleeping pool (after a restart) is demand for it too
        for i in 0..self.cfg.pools.len() {
            let name = &self.cfg.pools[i].name;
            let pending = self
                .ledger
                .state
                .open
                .values()
                .any(|r| r.intent.pool == *name && r.cid.is_none() && !self.tracked.is_busy(&r.intent.id));
            if pending
                && self.power[i] == Power::Off
                && !self.power_busy[i]
                && self.wake_not_before[i].is_none_or(|t| Instant::now() >= t)
            {
                self.set_power(i, Power::Waking, "a job waits for a VM here: power_on");
                self.start_power(i, true);
            }
        }
        let held: HashSet<String> = self.ledger.state.open.values().map(|r| r.intent.job.clone()).collect();
        for i in 0..self.cfg.pools.len() {
            let p = self.cfg.pools[i].clone();
            match self.power[i] {
                Power::Waking if !self.power_busy[i] => {
                    if self.power_since[i].elapsed() > Duration::from_secs(p.boot_grace_seconds) {
                        self.wake_not_before[i] = Some(Instant::now() + Duration::from_secs(p.boot_grace_seconds));
                        self.set_power(
                            i,
                            Power::Off,
                            &format!("its CPI did not answer within boot_grace_seconds = {}", p.boot_grace_seconds),
                        );
                        continue;
                    }
                    self.power_busy[i] = true;
                    let cpi = self.cpis[i].clone();
                    let ctx = cpi_context(&self.cfg);
                    let (tx, shared) = (self.tx.clone(), self.shared.clone());
                    std::thread::spawn(move || {
                        let tag = format!("wake-{i}-{}.info", now());
                        let ok = timed(&shared, "info", || cpi.call(&tag, "info", json!([]), &ctx)).is_ok();
                        cpi.spool_files(&tag).remove();
                        let _ = tx.send(Msg::WakeProbed { pool: i, ok });
                    });
                }
                Power::On if !p.power_off.is_empty() => {
                    let has_records = self.ledger.state.open.values().any(|r| r.intent.pool == p.name);
                    let demand = listing.jobs.iter().any(|j| {
                        !held.contains(&j.id)
                            && rules_of(j).is_some_and(|r| self.infos[i].tags.matches_rules(&r).is_some())
                    });
                    if has_records || demand || p.warm > 0 {
                        self.idle_since[i] = None;
                        continue;
                    }
                    let since = *self.idle_since[i].get_or_insert_with(Instant::now);
                    if since.elapsed() >= Duration::from_secs(p.idle_power_off_seconds) {
                        self.set_power(
                            i,
                            Power::Stopping,
                            &format!("no VMs, creates or demand for {} s: power_off", p.idle_power_off_seconds),
                        );
                        self.start_power(i, false);
                    }
                }
                _ => {}
            }
        }
    }

    /// The stemcell CID of pool `i`: configured, remembered in the ledger, or uploaded now.
    fn ensure_stemcell(&mut self, i: usize) -> Result<String, DaemonError> {
        let p = self.cfg.pools[i].clone();
        let p = &p;
        if let Some(cid) = &p.stemcell.cid {
            return Ok(cid.clone());
        }
        let Some(image) = p.stemcell.image.as_ref().or(p.stemcell.tarball.as_ref()) else {
            // validation makes this unreachable; keep the vector aligned with the pools anyway
            return Ok(String::new());
        };
        let meta = std::fs::metadata(image).map_err(|e| DaemonError::StemcellImage(image.display().to_string(), e))?;
        let mtime =
            meta.modified().ok().and_then(|m| m.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs()).unwrap_or(0);
        let key = format!("{}|{}|{}|{}", image.display(), meta.len(), mtime, p.cpi.join(" "));
        // a create_stemcell that a previous run started is settled first: never a second upload
        if let Some(cid) = self.settle_stemcell_attempt(i, &key)? {
            return Ok(cid);
        }
        if let Some((k, cid)) = self.ledger.state.stemcells.get(&p.name) {
            if *k == key {
                return Ok(cid.clone());
            }
        }
        // images extracted by interrupted runs (settled above) are of no use now
        sweep_spool(&self.ledger.spool_dir(), true);
        log::info(&format!("pool={} create_stemcell from {}", p.name, image.display()));
        // a tarball is unpacked like the director does: its `image` plus the manifest's cloud_properties
        let extracted = match &p.stemcell.tarball {
            Some(t) => Some(
                crate::launcher::stemcell::extract(t, &self.ledger.spool_dir(), &p.stemcell.cloud_properties)
                    .map_err(|source| DaemonError::Tarball { pool: p.name.clone(), source })?,
            ),
            None => None,
        };
        let (path, props) = match &extracted {
            Some(e) => (e.image.clone(), e.cloud_properties.clone()),
            None => (image.clone(), p.stemcell.cloud_properties.clone()),
        };
        let tag = format!("stemcell-{}-{}", p.name, now());
        let cpi = self.cpis[i].clone();
        let ctx = cpi_context(&self.cfg);
        self.ledger.append(Event::StemcellAttempt { pool: p.name.clone(), key: key.clone(), tag: tag.clone() })?;
        let res =
            timed(&self.shared, "create_stemcell", || cpi.call(&tag, "create_stemcell", json!([path, props]), &ctx));
        drop(extracted);
        cpi.spool_files(&tag).remove();
        let cid = res.map_err(|source| DaemonError::Stemcell { pool: p.name.clone(), source })?;
        let Some(cid) = cid.as_str().filter(|c| !c.is_empty()).map(String::from) else {
            let output = cid.to_string();
            return Err(DaemonError::Stemcell {
                pool: p.name.clone(),
                source: CpiError::NoResponse {
                    method: "create_stemcell".into(),
                    status: "no stemcell CID in the result".into(),
                    output,
                },
            });
        };
        self.ledger.append(Event::Stemcell { pool: p.name.clone(), key, cid: cid.clone() })?;
        log::info(&format!("pool={} stemcell={cid}", p.name));
        Ok(cid)
    }

    /// Settles a create_stemcell of pool `i` that a previous run started and did not see finish: waits while
    /// it runs, then takes its CID when it is for the current image (`key`), or deletes the stemcell when the
    /// image has changed since. `None` when there was no such call or it made no stemcell.
    fn settle_stemcell_attempt(&mut self, i: usize, key: &str) -> Result<Option<String>, DaemonError> {
        let p = self.cfg.pools[i].clone();
        let Some((k, tag)) = self.ledger.state.stemcell_attempts.get(&p.name).cloned() else {
            return Ok(None);
        };
        let cpi = self.cpis[i].clone();
        let files = cpi.spool_files(&tag);
        if !files.exists() {
            return Ok(None);
        }
        let t = Instant::now();
        if files.running() {
            log::info(&format!("pool={} waiting for the create_stemcell of a previous run to finish", p.name));
        }
        while files.running() && t.elapsed() < Duration::from_secs(p.cpi_timeout_seconds) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let cid = match files.outcome("create_stemcell", "recovered") {
            Ok(v) => v.as_str().filter(|c| !c.is_empty()).map(String::from),
            Err(e) => {
                log::warn(&format!("pool={} interrupted create_stemcell made no stemcell: {}", p.name, log::chain(&e)));
                None
            }
        };
        files.remove();
        let Some(cid) = cid else { return Ok(None) };
        if k == key {
            log::info(&format!("pool={} stemcell={cid} recovered from an interrupted create_stemcell", p.name));
            self.ledger.append(Event::Stemcell { pool: p.name.clone(), key: k, cid: cid.clone() })?;
            return Ok(Some(cid));
        }
        log::warn(&format!("pool={} stemcell={cid} from an interrupted upload of an older image: deleting it", p.name));
        let dtag = format!("{tag}.delete_stemcell");
        let ctx = cpi_context(&self.cfg);
        if let Err(e) =
            timed(&self.shared, "delete_stemcell", || cpi.call(&dtag, "delete_stemcell", json!([cid]), &ctx))
        {
            log::warn(&format!("pool={} delete_stemcell {cid} failed: {}; delete it by hand", p.name, log::chain(&e)));
        }
        cpi.spool_files(&dtag).remove();
        Ok(None)
    }

    /// Tags a VM (best effort: not every CPI supports metadata), waiting for the call.
    fn set_metadata_now(&self, pi: usize, intent: &Intent, cid: &str, tag: &str) {
        let cpi = self.cpis[pi].clone();
        let ctx = cpi_context(&self.cfg);
        let md = metadata(&self.cfg.launcher_id, intent);
        if let Err(e) =
            timed(&self.shared, "set_vm_metadata", || cpi.call(tag, "set_vm_metadata", json!([cid, md]), &ctx))
        {
            log::warn(&format!("record={} vm={cid} set_vm_metadata failed: {}", intent.id, log::chain(&e)));
        }
        cpi.spool_files(tag).remove();
    }

    fn pool_index(&self, name: &str) -> Option<usize> {
        self.cfg.pools.iter().position(|p| p.name == name)
    }

    /// Settles every open record before new work: finished or crashed creates are read back from the spool,
    /// VMs that do not exist are retried, and everything else is adopted and watched by the loop.
    pub fn recover(&mut self) -> Result<(), DaemonError> {
        let open: Vec<Record> = self.ledger.state.open.values().cloned().collect();
        if !open.is_empty() {
            log::info(&format!("recovering {} open ledger records", open.len()));
        }
        for r in &open {
            let id = &r.intent.id;
            let Some(i) = self.pool_index(&r.intent.pool) else {
                log::warn(&format!(
                    "record={id} job={} pool={} is no longer configured; its VM {} must be deleted by hand",
                    r.intent.job,
                    r.intent.pool,
                    r.cid.as_deref().unwrap_or("-")
                ));
                continue;
            };
            if r.cid.is_none() && r.attempts > r.failures {
                let files = self.cpis[i].spool_files(&format!("{id}-{}.create_vm", r.attempts));
                if !files.exists() {
                    self.ledger.append(Event::AttemptFailed {
                        id: id.clone(),
                        n: r.attempts,
                        reason: "the launcher stopped before create_vm ran".into(),
                    })?;
                    continue;
                }
                let t = Instant::now();
                while files.running() && t.elapsed() < Duration::from_secs(self.cfg.pools[i].cpi_timeout_seconds) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let outcome = files.outcome("create_vm", "recovered").and_then(|v| {
                    crate::launcher::cpi::vm_cid(&v).ok_or_else(|| CpiError::NoResponse {
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
                        self.set_metadata_now(
                            i,
                            &r.intent,
                            &cid,
                            &format!("{id}-{}.recovered.set_vm_metadata", r.attempts),
                        );
                    }
                    Err(e) => {
                        log::warn(&format!(
                            "record={id} job={} interrupted create_vm failed: {}",
                            r.intent.job,
                            log::chain(&e)
                        ));
                        self.ledger.append(Event::AttemptFailed {
                            id: id.clone(),
                            n: r.attempts,
                            reason: e.to_string(),
                        })?;
                    }
                }
                files.remove();
            }
        }
        // every interrupted create is settled; what is left in the spool are calls of a previous run whose
        // outcome no longer matters (has_vm, set_vm_metadata, delete_vm: all are repeated as needed)
        sweep_spool(&self.ledger.spool_dir(), false);
        // VMs with a CID: ask the CPI whether they exist; a VM that is gone before its job started is retried
        let with_vm: Vec<Record> = self.ledger.state.open.values().filter(|r| r.cid.is_some()).cloned().collect();
        let jobs: Vec<String> = with_vm.iter().map(|r| r.intent.job.clone()).filter(|j| !j.is_empty()).collect();
        let states = if jobs.is_empty() { HashMap::new() } else { self.source.states(&jobs).unwrap_or_default() };
        for r in with_vm {
            let (Some(i), Some(cid)) = (self.pool_index(&r.intent.pool), r.cid.clone()) else {
                continue;
            };
            let state = states.get(&r.intent.job).map(String::as_str).unwrap_or("");
            if is_terminal(state) {
                // its job is over: whether or not the VM still exists, delete_vm settles it
                log::info(&format!(
                    "record={} job={} vm={cid} job {state} while the launcher was away: deleting",
                    r.intent.id, r.intent.job
                ));
                self.start_delete(&r, After::Close(format!("job {state}")));
                continue;
            }
            let cpi = self.cpis[i].clone();
            let tag = format!("{}.has_vm", r.intent.id);
            let ctx = cpi_context(&self.cfg);
            let exists = timed(&self.shared, "has_vm", || cpi.call(&tag, "has_vm", json!([cid]), &ctx));
            cpi.spool_files(&tag).remove();
            match exists {
                // has_vm may be wrong: a started job is running on that VM, so keep it
                Ok(Value::Bool(false)) if !is_started(state) => {
                    log::warn(&format!(
                        "record={} job={} vm={cid} does not exist (has_vm false); deleting to be sure and retrying",
                        r.intent.id, r.intent.job
                    ));
                    self.start_delete(&r, After::Retry(format!("VM {cid} disappeared before its job started")));
                }
                Ok(_) => log::info(&format!(
                    "record={} job={} vm={cid} adopted (job {})",
                    r.intent.id,
                    r.intent.job,
                    if state.is_empty() { "state unknown" } else { state }
                )),
                Err(e) => {
                    log::warn(&format!("record={} vm={cid} has_vm failed: {}; adopting", r.intent.id, log::chain(&e)))
                }
            }
        }
        Ok(())
    }

    /// The main loop, until SIGTERM (and, with `on_shutdown = "drain"`, until every VM is gone).
    pub fn run(&mut self) -> Result<(), DaemonError> {
        self.source.register().map_err(DaemonError::Register)?;
        log::info(&format!(
            "stack {} registered on queue {}",
            self.cfg.queue_stacks().iter().map(|(_, k)| k.as_str()).collect::<Vec<_>>().join(", "),
            self.cfg.queue_stacks().iter().map(|(q, _)| q.as_str()).collect::<Vec<_>>().join(", ")
        ));
        self.recover()?;
        let interval = Duration::from_millis(self.cfg.poll_interval_ms);
        let mut next_poll = Instant::now();
        let mut stopping_logged = false;
        loop {
            let stopping = self.stop.load(Ordering::SeqCst);
            if stopping && !stopping_logged {
                log::info(&format!("SIGTERM: taking no new work; on_shutdown = {:?}", self.cfg.on_shutdown));
                stopping_logged = true;
            }
            if stopping && self.tracked.busy().next().is_none() {
                let drained = self.ledger.state.open.values().all(|r| r.cid.is_none());
                if self.cfg.on_shutdown == OnShutdown::Leave || drained {
                    break;
                }
            }
            self.watch_listener();
            let wait = next_poll.saturating_duration_since(Instant::now()).min(Duration::from_millis(200));
            if let Ok(msg) = self.rx.recv_timeout(wait) {
                self.handle(msg)?;
                while let Ok(m) = self.rx.try_recv() {
                    self.handle(m)?;
                }
            }
            if Instant::now() >= next_poll {
                let t = Instant::now();
                self.poll(stopping)?;
                next_poll = Instant::now() + interval;
                let mut s = http::lock(&self.shared);
                s.last_tick = Instant::now();
                s.metrics.observe("launcher_poll_duration_seconds", &[], t.elapsed().as_secs_f64());
            }
        }
        match self.source.deregister() {
            Ok(()) => log::info("stack deregistered"),
            Err(e) => log::warn(&format!("deregister failed: {}", log::chain(&e))),
        }
        Ok(())
    }

    fn bk_error(&mut self, call: &str, e: &BkError) {
        log::warn(&format!("buildkite {call}: {}", log::chain(e)));
        http::lock(&self.shared).metrics.inc("launcher_buildkite_errors_total", &[("call", call)], 1.0);
        if let Some(w) = e.retry_after() {
            self.bk_wait_until = Some(Instant::now() + w);
        }
    }

    fn bk_ready(&self) -> bool {
        self.bk_wait_until.is_none_or(|t| Instant::now() >= t)
    }

    /// Counts a poll whose Buildkite calls failed (or succeeded): the next poll waits longer after each
    /// failure in a row, and `/healthz` turns 503 after `unhealthy_after_failed_polls` of them.
    fn poll_outcome(&mut self, ok: bool) {
        if ok {
            self.failed_polls = 0;
        } else {
            self.failed_polls += 1;
            let wait = poll_backoff(Duration::from_millis(self.cfg.poll_interval_ms), self.failed_polls);
            let until = Instant::now() + wait;
            self.bk_wait_until = Some(self.bk_wait_until.map_or(until, |t| t.max(until)));
            if self.failed_polls == self.cfg.unhealthy_after_failed_polls {
                log::error(&format!(
                    "{} polls of the Buildkite API failed in a row: /healthz now answers 503",
                    self.failed_polls
                ));
            }
        }
        let mut s = http::lock(&self.shared);
        s.failed_polls = self.failed_polls;
        s.metrics.set("launcher_buildkite_consecutive_failed_polls", &[], f64::from(self.failed_polls));
    }

    /// One poll: settle records, then plan and start new jobs.
    fn poll(&mut self, stopping: bool) -> Result<(), DaemonError> {
        // a SIGTERM that came while the loop waited counts for this poll already
        let stopping = stopping || self.stop.load(Ordering::SeqCst);
        if !self.bk_ready() {
            return Ok(());
        }
        let jobs: Vec<String> =
            self.ledger.state.open.values().map(|r| r.intent.job.clone()).filter(|j| !j.is_empty()).collect();
        let states = if jobs.is_empty() {
            HashMap::new()
        } else {
            match self.source.states(&jobs) {
                Ok(s) => s,
                Err(e) => {
                    self.bk_error("get-states", &e);
                    self.poll_outcome(false);
                    return Ok(());
                }
            }
        };
        self.settle(&states, stopping)?;
        self.extend_reservations(&states);
        let mut listing = if stopping {
            self.poll_outcome(true);
            Listing::default()
        } else {
            match self.source.list() {
                Ok(l) => {
                    self.poll_outcome(true);
                    self.prune(&l);
                    l
                }
                Err(e) => {
                    self.bk_error("list", &e);
                    self.poll_outcome(false);
                    Listing::default()
                }
            }
        };
        // jobs of a reserve whose answer was lost are hidden from the list while that reservation holds:
        // they are planned (and reserved, idempotently) again until the reservation would have run out
        let expiry = Duration::from_secs(u64::from(self.cfg.buildkite.reservation_expiry_seconds));
        let unsure = self.tracked.unsure(expiry);
        if !stopping && !unsure.is_empty() {
            let listed: HashSet<String> = listing.jobs.iter().map(|j| j.id.clone()).collect();
            listing
                .jobs
                .extend(unsure.into_iter().filter(|j| !listed.contains(&j.id) && !self.ledger.state.has_job(&j.id)));
            sort_jobs(&mut listing.jobs);
        }
        http::lock(&self.shared).metrics.set("launcher_queue_paused", &[], if listing.paused { 1.0 } else { 0.0 });
        for j in &listing.jobs {
            if let Some(t) = crate::rfc3339::parse(&j.scheduled_at) {
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

    /// Forgets per-job bookkeeping of jobs that are neither listed nor held, so a long run stays small.
    fn prune(&mut self, listing: &Listing) {
        let mut keep: HashSet<&str> = listing.jobs.iter().map(|j| j.id.as_str()).collect();
        keep.extend(self.ledger.state.open.values().map(|r| r.intent.job.as_str()));
        let open = &self.ledger.state.open;
        self.tracked.prune(&keep, |id| open.contains_key(id));
    }

    /// Decides for every open record that has no call in flight.
    fn settle(&mut self, states: &HashMap<String, String>, stopping: bool) -> Result<(), DaemonError> {
        let records: Vec<Record> =
            self.ledger.state.open.values().filter(|r| !self.tracked.is_busy(&r.intent.id)).cloned().collect();
        let t = now();
        for r in records {
            let id = r.intent.id.clone();
            let state = states.get(&r.intent.job).map(String::as_str).unwrap_or("");
            let Some(pi) = self.pool_index(&r.intent.pool) else {
                continue;
            };
            let pool = self.cfg.pools[pi].clone();
            if is_started(state) {
                let job = self.tracked.job(&r.intent.job);
                if !std::mem::replace(&mut job.started, true) {
                    if let Some(s) = job.scheduled_at {
                        http::lock(&self.shared).metrics.observe(
                            "launcher_queue_to_running_seconds",
                            &[("pool", &pool.name)],
                            (now_f() - s).max(0.0),
                        );
                    }
                }
            }
            if let Some(after) = self.tracked.get_record(&id).and_then(|x| x.after.clone()) {
                if r.cid.is_some() {
                    // a delete that failed before: try again
                    self.start_delete(&r, after);
                    continue;
                }
            }
            match &r.cid {
                Some(cid) => {
                    if is_terminal(state) {
                        log::info(&format!("record={id} job={} vm={cid} job {state}: deleting the VM", r.intent.job));
                        self.start_delete(&r, After::Close(format!("job {state}")));
                    } else if t > r.intent.deadline {
                        log::warn(&format!("record={id} job={} vm={cid} passed its lifetime: deleting", r.intent.job));
                        let reason =
                            format!("VM {cid} passed its {} min lifetime and was deleted", pool.max_lifetime_minutes);
                        if r.intent.job.is_empty() {
                            self.start_delete(&r, After::Close("past its lifetime".into()));
                        } else {
                            let _ = self.source.notify(&r.intent.job, &format!("agent-launcher: {reason}"));
                            // its agent goes with the VM: the job is finished, or the build would wait for it
                            self.start_delete(&r, After::FailJob(reason));
                        }
                    } else if stopping && self.cfg.on_shutdown == OnShutdown::Drain && r.intent.job.is_empty() {
                        log::info(&format!("record={id} vm={cid} draining: deleting the warm VM"));
                        self.start_delete(&r, After::Close("drained (warm, no job)".into()));
                    } else if !r.intent.job.is_empty()
                        && !is_started(state)
                        && r.created_at.is_some_and(|c| t > c + pool.boot_timeout_seconds)
                    {
                        let reason = format!(
                            "VM {cid} in pool {} did not start the job within {} s",
                            pool.name, pool.boot_timeout_seconds
                        );
                        log::warn(&format!("record={id} job={} {reason}", r.intent.job));
                        let after = if r.failures + 1 >= pool.create_attempts {
                            After::FailJob(reason)
                        } else {
                            After::Retry(reason)
                        };
                        self.start_delete(&r, after);
                    }
                }
                None => {
                    if is_terminal(state) {
                        log::info(&format!("record={id} job={} job {state} before its VM was made", r.intent.job));
                        self.ledger.append(Event::Closed { id, reason: format!("job {state}") })?;
                    } else if !stopping
                        && (!self.breakers[pi].allows_create()
                            || !self.power[pi].usable()
                            || r.failures >= pool.create_attempts)
                        && self.fail_over(&r, pi)?
                    {
                        // moved to another pool
                    } else if r.failures >= pool.create_attempts {
                        let reason = format!(
                            "agent-launcher could not start a VM in pool {} after {} attempts: {}",
                            pool.name,
                            r.failures,
                            r.last_failure.clone().unwrap_or_default()
                        );
                        if r.intent.job.is_empty() {
                            log::warn(&format!("record={id} warm VM: {reason}"));
                        } else {
                            self.fail_job(&r.intent.job, &pool.name, &reason);
                        }
                        self.ledger.append(Event::Closed { id, reason: "create failed".into() })?;
                    } else if !stopping
                        && self.tracked.get_record(&id).and_then(|x| x.retry_at).is_none_or(|at| Instant::now() >= at)
                    {
                        let creating = self.creating()[pi];
                        if creating < pool.limits.max_concurrent_creates
                            && self.breakers[pi].allows_create()
                            && self.power[pi].usable()
                            && !self.stemcells[pi].is_empty()
                        {
                            self.tracked.record(&id).retry_at = None;
                            self.start_create(&r)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Reserves again the jobs whose VM has not started them yet, before the reservation runs out (after a
    /// restart, at once), so that a slow boot does not hand the job to another stack.
    fn extend_reservations(&mut self, states: &HashMap<String, String>) {
        let half = Duration::from_secs(u64::from(self.cfg.buildkite.reservation_expiry_seconds).div_ceil(2));
        let due: Vec<String> = self
            .ledger
            .state
            .open
            .values()
            .map(|r| &r.intent.job)
            .filter(|j| states.get(*j).is_some_and(|s| s == "scheduled"))
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
            Err(e) => self.bk_error("reserve", &e),
        }
    }

    /// Starts a new listener when the thread of the old one has ended (a bug: its accept loop restarts
    /// itself); until then `/healthz` has nobody to answer it, and the log says why every 5 s.
    fn watch_listener(&mut self) {
        if !self.listener.is_finished() || self.listener_retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let (listen, tls) = (&self.cfg.listen, self.cfg.tls.as_ref());
        match http::serve(listen, tls, self.cfg.listener.limits(), self.shared.clone()) {
            Ok(l) => {
                log::error(&format!("the HTTP listener's thread had ended: a new one listens on {}", l.addr()));
                http::lock(&self.shared).listener_down = None;
                self.listener = l;
                self.listener_retry_at = None;
            }
            Err(e) => {
                log::error(&format!(
                    "the HTTP listener's thread has ended and a new one cannot start: {}; trying again in 5 s",
                    log::chain(&e)
                ));
                self.listener_retry_at = Some(Instant::now() + Duration::from_secs(5));
            }
        }
        http::lock(&self.shared).metrics.inc("launcher_listener_failures_total", &[], 1.0);
    }

    fn fail_job(&mut self, job: &str, pool: &str, reason: &str) {
        log::warn(&format!("job={job} pool={pool} finishing with -1: {reason}"));
        // a source that cannot fail a job (REST) lists it again: this launcher does not retry it
        self.tracked.job(job).refused = true;
        http::lock(&self.shared).metrics.inc("launcher_jobs_failed_total", &[("pool", pool)], 1.0);
        if let Err(e) = self.source.finish(job, -1, reason) {
            self.bk_error("finish", &e);
        }
    }

    /// create_vm calls in flight per pool.
    fn creating(&self) -> Vec<u32> {
        let mut v = vec![0; self.cfg.pools.len()];
        for id in self.tracked.busy() {
            if let Some(r) = self.ledger.state.open.get(id) {
                if r.cid.is_none() {
                    if let Some(i) = self.pool_index(&r.intent.pool) {
                        v[i] += 1;
                    }
                }
            }
        }
        v
    }

    fn start_jobs(&mut self, listing: &Listing) -> Result<(), DaemonError> {
        for (info, b) in self.infos.iter_mut().zip(&self.breakers) {
            info.gate = b.gate();
        }
        for (i, s) in self.stemcells.iter().enumerate() {
            if s.is_empty() || !self.power[i].usable() {
                self.infos[i].gate = Gate::Open;
            }
        }
        let busy: HashSet<String> = self.tracked.busy().map(str::to_string).collect();
        let decisions = plan(&self.cfg, &self.infos, &self.ledger.state, &busy, listing, &self.tracked.refused());
        if !self.stop.load(Ordering::SeqCst) {
            self.manage_power(listing, &decisions);
        }
        let mut to_reserve = Vec::new();
        let mut waiting: HashMap<(String, &'static str), f64> = HashMap::new();
        for d in &decisions {
            let (job, pool) = match d {
                Decision::Start { job, pool, .. }
                | Decision::Refuse { job, pool, .. }
                | Decision::Wait { job, pool, .. }
                | Decision::Assign { job, pool, .. } => (job, *pool),
            };
            if !std::mem::replace(&mut self.tracked.job(&job.id).seen, true) {
                http::lock(&self.shared).metrics.inc(
                    "launcher_jobs_seen_total",
                    &[("pool", &self.cfg.pools[pool].name)],
                    1.0,
                );
            }
            match d {
                Decision::Start { job, .. } | Decision::Refuse { job, .. } | Decision::Assign { job, .. } => {
                    to_reserve.push(job.id.clone())
                }
                Decision::Wait { job, pool, reason } => {
                    *waiting.entry((self.cfg.pools[*pool].name.clone(), reason)).or_default() += 1.0;
                    if *reason == "ip" && !std::mem::replace(&mut self.tracked.job(&job.id).notified, true) {
                        let msg = format!(
                            "agent-launcher: waiting for a free IP address in pool {}",
                            self.cfg.pools[*pool].name
                        );
                        log::info(&format!("job={} {msg}", job.id));
                        if let Err(e) = self.source.notify(&job.id, &msg) {
                            self.bk_error("notify", &e);
                        }
                    }
                }
            }
        }
        {
            let mut s = http::lock(&self.shared);
            s.metrics.clear("launcher_jobs_waiting");
            for ((pool, reason), n) in &waiting {
                s.metrics.set("launcher_jobs_waiting", &[("pool", pool), ("reason", reason)], *n);
            }
        }
        if to_reserve.is_empty() || self.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let reserved: HashSet<String> = match self.source.reserve(&to_reserve) {
            Ok(r) => {
                for j in &to_reserve {
                    self.tracked.job(j).unsure = None;
                }
                for j in &r {
                    self.tracked.job(j).reserved_at = Some(Instant::now());
                }
                r.into_iter().collect()
            }
            Err(e) => {
                self.bk_error("reserve", &e);
                if e.is_ambiguous() {
                    // the server may have reserved them: reconcile on the next poll
                    for j in listing.jobs.iter().filter(|j| to_reserve.contains(&j.id)) {
                        self.tracked.job(&j.id).unsure.get_or_insert_with(|| (j.clone(), Instant::now()));
                    }
                }
                return Ok(());
            }
        };
        for d in decisions {
            match d {
                Decision::Start { job, pool, flavor, cpu, ram, agent_tags, ip } if reserved.contains(&job.id) => {
                    http::lock(&self.shared).metrics.inc(
                        "launcher_jobs_reserved_total",
                        &[("pool", &self.cfg.pools[pool].name)],
                        1.0,
                    );
                    self.tracked.job(&job.id).rules = Some(job.rules.clone());
                    self.new_vm(pool, &job.id, flavor, cpu, ram, agent_tags, ip)?;
                }
                Decision::Assign { job, pool, record, agent_tags } if reserved.contains(&job.id) => {
                    let name = self.cfg.pools[pool].name.clone();
                    {
                        let mut s = http::lock(&self.shared);
                        s.metrics.inc("launcher_jobs_reserved_total", &[("pool", &name)], 1.0);
                        s.metrics.inc("launcher_jobs_launched_total", &[("pool", &name)], 1.0);
                    }
                    // the VM's lifetime starts again with its job (a long-idle warm VM would cut it short)
                    let deadline = now() + self.cfg.pools[pool].lifetime_secs();
                    self.ledger.append(Event::Assigned {
                        id: record.clone(),
                        job: job.id.clone(),
                        agent_tags: agent_tags.clone(),
                        at: now(),
                        deadline: Some(deadline),
                    })?;
                    let Some(r) = self.ledger.state.open.get(&record).cloned() else {
                        continue;
                    };
                    log::info(&format!(
                        "job={} pool={name} assigned to warm record={record} vm={}",
                        job.id,
                        r.cid.as_deref().unwrap_or("-")
                    ));
                    let a = Assignment { job: Some(job.id.clone()), agent_tags, name: agent_name(&r.intent) };
                    http::lock(&self.shared).assignments.insert(r.intent.secret.clone(), a);
                    self.update_metadata(&r);
                }
                Decision::Refuse { job, pool, reason } if reserved.contains(&job.id) => {
                    let name = self.cfg.pools[pool].name.clone();
                    self.tracked.job(&job.id).refused = true;
                    self.fail_job(&job.id, &name, &format!("agent-launcher: {reason}"));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Writes the intent for a new VM (for `job`, or warm when `job` is empty) and starts its create.
    #[expect(clippy::too_many_arguments, reason = "one call site per kind of VM; a struct would only rename them")]
    fn new_vm(
        &mut self,
        pool: usize,
        job: &str,
        flavor: String,
        cpu: u32,
        ram: u64,
        agent_tags: Vec<String>,
        ip: Option<String>,
    ) -> Result<(), DaemonError> {
        let p = &self.cfg.pools[pool];
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
            secret: secret.clone(),
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
        let a = Assignment {
            job: (!job.is_empty()).then(|| job.to_string()),
            agent_tags: intent.agent_tags.clone(),
            name: agent_name(&intent),
        };
        http::lock(&self.shared).assignments.insert(secret, a);
        if let Some(r) = self.ledger.state.open.get(&intent.id).cloned() {
            self.start_create(&r)?;
        }
        Ok(())
    }

    /// Keeps `warm` idle VMs per pool (booting ones count), within capacity.
    fn replenish_warm(&mut self) -> Result<(), DaemonError> {
        for (i, p) in self.cfg.pools.clone().iter().enumerate() {
            if p.warm == 0
                || !self.power[i].usable()
                || self.breakers[i].gate() != Gate::Closed
                || self.stemcells[i].is_empty()
            {
                continue;
            }
            let have =
                self.ledger.state.open.values().filter(|r| r.intent.pool == p.name && r.intent.job.is_empty()).count()
                    as u32;
            let Ok((fname, f)) = p.flavor_for(None) else {
                continue;
            };
            let (fname, cpu, ram) = (fname.to_string(), f.cpu, f.ram);
            for _ in have..p.warm {
                let mut cap = Capacity::new(&self.cfg, &self.ledger.state, &self.creating());
                let smallest = p.smallest_flavor().map(|(n, _)| n == fname).unwrap_or(true);
                if cap.refusal(&self.cfg, &self.infos[i], i, cpu, ram, smallest).is_some() {
                    break;
                }
                let ip = cap.take(&self.infos[i], i, cpu, ram);
                let tags = p.tags.iter().filter(|t| !t.ends_with("=*")).cloned().collect();
                self.new_vm(i, "", fname.clone(), cpu, ram, tags, ip)?;
            }
        }
        Ok(())
    }

    /// Re-tags a VM after a warm assignment (best effort: not every CPI supports metadata).
    fn update_metadata(&self, r: &Record) {
        let (Some(pi), Some(cid)) = (self.pool_index(&r.intent.pool), r.cid.clone()) else {
            return;
        };
        let cpi = self.cpis[pi].clone();
        let ctx = cpi_context(&self.cfg);
        let shared = self.shared.clone();
        let md = metadata(&self.cfg.launcher_id, &r.intent);
        let tag = format!("{}.assign.set_vm_metadata", r.intent.id);
        std::thread::spawn(move || {
            if let Err(e) =
                timed(&shared, "set_vm_metadata", || cpi.call(&tag, "set_vm_metadata", json!([cid, md]), &ctx))
            {
                log::warn(&format!("vm={cid} set_vm_metadata failed: {}", log::chain(&e)));
            }
            cpi.spool_files(&tag).remove();
        });
    }

    /// Writes the attempt to the ledger, then runs create_vm (and set_vm_metadata) on a worker thread.
    fn start_create(&mut self, r: &Record) -> Result<(), DaemonError> {
        let Some(pi) = self.pool_index(&r.intent.pool) else {
            return Ok(());
        };
        let n = r.attempts + 1;
        self.ledger.append(Event::Attempt { id: r.intent.id.clone(), n })?;
        self.tracked.record(&r.intent.id).busy = true;
        self.breakers[pi].create_started();
        let pool = self.cfg.pools[pi].clone();
        let cpi = self.cpis[pi].clone();
        let intent = r.intent.clone();
        let stemcell = self.stemcells.get(pi).cloned().unwrap_or_default();
        let ctx = create_vm_context(&self.cfg, self.stemcell_api.get(pi).copied().unwrap_or(3));
        let mctx = cpi_context(&self.cfg);
        let (tx, shared) = (self.tx.clone(), self.shared.clone());
        let public_url = self.cfg.public_url();
        let launcher_id = self.cfg.launcher_id.clone();
        let endpoint = self.cfg.agent_endpoint();
        log::info(&format!("record={} job={} pool={} create_vm attempt {n}", intent.id, intent.job, pool.name));
        std::thread::spawn(move || {
            let args = create_vm_args(&pool, &intent, &stemcell, &public_url, &endpoint);
            let tag = format!("{}-{n}.create_vm", intent.id);
            let res = timed(&shared, "create_vm", || cpi.call(&tag, "create_vm", args, &ctx)).and_then(|v| {
                crate::launcher::cpi::vm_cid(&v).ok_or_else(|| CpiError::NoResponse {
                    method: "create_vm".into(),
                    status: "no VM CID in the result".into(),
                    output: v.to_string(),
                })
            });
            if let Ok(cid) = &res {
                let md = metadata(&launcher_id, &intent);
                let mtag = format!("{}-{n}.set_vm_metadata", intent.id);
                if let Err(e) =
                    timed(&shared, "set_vm_metadata", || cpi.call(&mtag, "set_vm_metadata", json!([cid, md]), &mctx))
                {
                    log::warn(&format!("record={} vm={cid} set_vm_metadata failed: {}", intent.id, log::chain(&e)));
                }
                cpi.spool_files(&mtag).remove();
            }
            let _ = tx.send(Msg::Created { id: intent.id.clone(), n, res });
        });
        Ok(())
    }

    fn start_delete(&mut self, r: &Record, after: After) {
        let (Some(pi), Some(cid)) = (self.pool_index(&r.intent.pool), r.cid.clone()) else {
            return;
        };
        let run = self.tracked.record(&r.intent.id);
        (run.after, run.busy) = (Some(after), true);
        let cpi = self.cpis[pi].clone();
        let ctx = cpi_context(&self.cfg);
        let (tx, shared, id) = (self.tx.clone(), self.shared.clone(), r.intent.id.clone());
        log::info(&format!("record={id} job={} vm={cid} delete_vm", r.intent.job));
        std::thread::spawn(move || {
            let tag = format!("{id}.delete_vm");
            let res = timed(&shared, "delete_vm", || cpi.call(&tag, "delete_vm", json!([cid]), &ctx)).map(|_| ());
            cpi.spool_files(&tag).remove();
            let _ = tx.send(Msg::Deleted { id, res });
        });
    }

    fn handle(&mut self, msg: Msg) -> Result<(), DaemonError> {
        match msg {
            Msg::Probed { pool, res } => self.probed(pool, res)?,
            Msg::PowerDone { pool, on, res } => self.power_done(pool, on, res),
            Msg::WakeProbed { pool, ok } => self.wake_probed(pool, ok)?,
            Msg::Created { id, n, res } => {
                self.tracked.record(&id).busy = false;
                let Some(r) = self.ledger.state.open.get(&id).cloned() else {
                    return Ok(());
                };
                let pi = self.pool_index(&r.intent.pool);
                if let Some(i) = pi {
                    let changed = match &res {
                        Ok(_) => self.breakers[i].success(),
                        Err(e) => self.breakers[i].failure(Instant::now(), &format!("create_vm: {}", log::chain(e))),
                    };
                    if changed {
                        self.breaker_logged(i);
                    }
                }
                let files = pi.map(|i| self.cpis[i].spool_files(&format!("{id}-{n}.create_vm")));
                match res {
                    Ok(cid) => {
                        self.ledger.append(Event::Created { id: id.clone(), cid: cid.clone(), at: now() })?;
                        log::info(&format!("record={id} job={} vm={cid} created", r.intent.job));
                        http::lock(&self.shared).metrics.inc(
                            "launcher_jobs_launched_total",
                            &[("pool", &r.intent.pool)],
                            1.0,
                        );
                    }
                    Err(e) => {
                        let leak = matches!(e, CpiError::NoResponse { .. } | CpiError::Timeout { .. });
                        log::warn(&format!(
                            "record={id} job={} create_vm attempt {n} failed: {}{}",
                            r.intent.job,
                            log::chain(&e),
                            if leak {
                                " (the CPI gave no answer: a VM may have been left behind on its host)"
                            } else {
                                ""
                            }
                        ));
                        self.ledger.append(Event::AttemptFailed { id: id.clone(), n, reason: e.to_string() })?;
                        self.tracked.record(&id).retry_at = Some(Instant::now() + create_backoff(r.failures + 1));
                    }
                }
                if let Some(f) = files {
                    f.remove();
                }
            }
            Msg::Deleted { id, res } => {
                self.tracked.record(&id).busy = false;
                let Some(r) = self.ledger.state.open.get(&id).cloned() else {
                    return Ok(());
                };
                match res {
                    Ok(()) => {}
                    Err(e) if e.is_vm_not_found() => {}
                    Err(e) => {
                        log::warn(&format!(
                            "record={id} vm={} delete_vm failed: {}; will retry",
                            r.cid.as_deref().unwrap_or("-"),
                            log::chain(&e)
                        ));
                        return Ok(());
                    }
                }
                log::info(&format!("record={id} job={} vm={} deleted", r.intent.job, r.cid.as_deref().unwrap_or("-")));
                match self.tracked.record(&id).after.take().unwrap_or(After::Close("deleted".into())) {
                    After::Close(reason) => {
                        self.forget(&r);
                        self.ledger.append(Event::Closed { id, reason })?;
                    }
                    After::Retry(reason) => {
                        self.ledger.append(Event::AttemptFailed { id: id.clone(), n: r.attempts, reason })?;
                        self.tracked.record(&id).retry_at = Some(Instant::now() + create_backoff(r.failures + 1));
                    }
                    After::FailJob(reason) => {
                        if !r.intent.job.is_empty() {
                            self.fail_job(&r.intent.job, &r.intent.pool, &format!("agent-launcher: {reason}"));
                        }
                        self.forget(&r);
                        self.ledger.append(Event::Closed { id, reason })?;
                    }
                }
            }
        }
        Ok(())
    }

    fn forget(&mut self, r: &Record) {
        self.tracked.forget(&r.intent.job, &r.intent.id);
        http::lock(&self.shared).assignments.remove(&r.intent.secret);
    }

    /// The breakers as `status` shows them, written to `<ledger_dir>/pools.json` when they change.
    fn publish_breakers(&mut self) {
        let now_i = Instant::now();
        let pools: Map<String, Value> = self
            .cfg
            .pools
            .iter()
            .zip(&self.breakers)
            .enumerate()
            .map(|(i, (p, b))| {
                (
                    p.name.clone(),
                    json!({
                        "breaker": b.gate().as_str(),
                        "reason": if b.gate() == Gate::Closed { String::new() } else { log::redact(&b.reason) },
                        "next_probe_in_seconds": if b.gate() == Gate::Open { b.retry_in(now_i) } else { 0 },
                        "opened_total": b.opened_total,
                        "power": self.power.get(i).map(|p| p.as_str()).unwrap_or("unmanaged"),
                    }),
                )
            })
            .collect();
        {
            let mut s = http::lock(&self.shared);
            s.metrics.clear("launcher_pool_breaker");
            s.metrics.clear("launcher_pool_power");
            for (p, pw) in self.cfg.pools.iter().zip(&self.power) {
                if *pw != Power::Unmanaged {
                    for st in [Power::On, Power::Off, Power::Waking, Power::Stopping] {
                        s.metrics.set(
                            "launcher_pool_power",
                            &[("pool", &p.name), ("state", st.as_str())],
                            if *pw == st { 1.0 } else { 0.0 },
                        );
                    }
                }
            }
            for (p, b) in self.cfg.pools.iter().zip(&self.breakers) {
                for g in [Gate::Closed, Gate::HalfOpen, Gate::Open] {
                    s.metrics.set(
                        "launcher_pool_breaker",
                        &[("pool", &p.name), ("state", g.as_str())],
                        if b.gate() == g { 1.0 } else { 0.0 },
                    );
                }
            }
        }
        let text = json!({"launcher": self.cfg.launcher_id, "pid": std::process::id(), "pools": pools}).to_string();
        if text != self.published {
            let path = self.cfg.ledger_dir.join(POOLS_FILE);
            let tmp = self.cfg.ledger_dir.join(format!("{POOLS_FILE}.tmp"));
            if std::fs::write(&tmp, &text).and_then(|_| std::fs::rename(&tmp, &path)).is_ok() {
                self.published = text;
            }
        }
    }

    fn update_gauges(&mut self) {
        self.publish_breakers();
        let creating = self.creating();
        let cap = Capacity::new(&self.cfg, &self.ledger.state, &creating);
        let mut s = http::lock(&self.shared);
        let m = &mut s.metrics;
        for name in ["launcher_vms", "launcher_capacity_used", "launcher_capacity_limit", "launcher_ip_addresses"] {
            m.clear(name);
        }
        for (i, p) in self.cfg.pools.iter().enumerate() {
            let mut by_state: HashMap<&str, f64> = HashMap::from([
                ("creating", 0.0),
                ("running", 0.0),
                ("deleting", 0.0),
                ("pending", 0.0),
                ("warm", 0.0),
            ]);
            for r in self.ledger.state.open.values().filter(|r| r.intent.pool == p.name) {
                let st = match (&r.cid, self.tracked.is_busy(&r.intent.id)) {
                    (None, true) => "creating",
                    (None, false) => "pending",
                    (Some(_), true) => "deleting",
                    (Some(_), false) if r.intent.job.is_empty() => "warm",
                    (Some(_), false) => "running",
                };
                *by_state.entry(st).or_default() += 1.0;
            }
            for (st, n) in by_state {
                m.set("launcher_vms", &[("pool", &p.name), ("state", st)], n);
            }
            let (vms, cpu, ram, ips) = cap.used(i);
            for (res, used, limit) in [
                ("vms", vms as f64, p.limits.max_vms as f64),
                ("cpu", cpu as f64, p.limits.cpu as f64),
                ("ram_mb", ram as f64, p.limits.ram_mb as f64),
            ] {
                m.set("launcher_capacity_used", &[("pool", &p.name), ("resource", res)], used);
                m.set("launcher_capacity_limit", &[("pool", &p.name), ("resource", res)], limit);
            }
            if !self.infos[i].ips.is_empty() {
                m.set("launcher_ip_addresses", &[("pool", &p.name), ("state", "used")], ips as f64);
                m.set(
                    "launcher_ip_addresses",
                    &[("pool", &p.name), ("state", "free")],
                    (self.infos[i].ips.len() - ips) as f64,
                );
            }
        }
    }
}

/// The VM's metadata tags (never a secret).
fn metadata(launcher_id: &str, intent: &Intent) -> Value {
    json!({
        "agent-launcher": launcher_id,
        "pool": intent.pool,
        "job": if intent.job.is_empty() { "warm" } else { intent.job.as_str() },
        "deadline": intent.deadline.to_string(),
        "name": agent_name(intent),
    })
}

/// The agent's name: pool and record (whose id starts with the job's first 8 characters).
pub fn agent_name(i: &Intent) -> String {
    format!("{}-{}", i.pool, i.id)
}

/// create_vm's six arguments for one record. The env tells the guest where to fetch its job and token; it
/// never contains the Buildkite token itself.
pub fn create_vm_args(
    pool: &crate::launcher::config::Pool,
    intent: &Intent,
    stemcell: &str,
    public_url: &str,
    endpoint: &str,
) -> Value {
    let mut cp = pool.cloud_properties.clone();
    if let Some(f) = pool.flavors.get(&intent.flavor) {
        cp.insert("cpu".into(), json!(f.cpu));
        cp.insert("ram".into(), json!(f.ram));
        if f.disk > 0 {
            cp.insert("disk".into(), json!(f.disk));
        }
        for (k, v) in &f.cloud_properties {
            cp.insert(k.clone(), v.clone());
        }
    }
    let mut networks = Map::new();
    for (name, n) in &pool.networks {
        let mut net =
            json!({"type": n.kind, "cloud_properties": n.cloud_properties, "dns": n.dns, "default": n.default});
        if !n.static_ips.is_empty() {
            net["ip"] = json!(intent.ip);
            net["netmask"] = json!(n.netmask);
            net["gateway"] = json!(n.gateway);
        }
        if n.default.is_empty() && pool.networks.len() == 1 {
            net["default"] = json!(["dns", "gateway"]);
        }
        networks.insert(name.clone(), net);
    }
    let env = json!({
        "bosh": {"group": format!("agent-launcher-{}", pool.name), "groups": ["agent-launcher", pool.name]},
        "agent_launcher": {
            "job_id": intent.job,
            "agent_tags": intent.agent_tags.join(","),
            "agent_name": agent_name(intent),
            "endpoint": endpoint,
            "assignment_url": format!("{public_url}/v1/assignment"),
            "secret": intent.secret,
            "deadline": intent.deadline,
        }
    });
    json!([intent.id, stemcell, cp, networks, [], env])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn create_vm_arguments_for_a_static_ip_and_a_flavor() {
        let cfg = Config::parse(
            r#"
launcher_id = "l1"
ledger_dir = "/tmp/x"
listen = "127.0.0.1:9595"
[buildkite]
token_env = "BK"
queue = "vm"
stack_key = "s"
[[pool]]
name = "p"
tags = ["queue=vm"]
cpi = ["/bin/cpi"]
stemcell = { cid = "sc" }
cloud_properties = { root_disk = 4096, cpu = 99 }
networks.n = { type = "manual", static_ips = ["10.0.0.5"], netmask = "255.255.255.0", gateway = "10.0.0.1", dns = ["10.0.0.2"], cloud_properties = { type = "user" } }
flavors.big = { cpu = 4, ram = 2048, disk = 100, cloud_properties = { nested = true } }
"#,
            Path::new("t.toml"),
        )
        .unwrap();
        let intent = Intent {
            id: "abcd1234-0001".into(),
            job: "j-1".into(),
            pool: "p".into(),
            flavor: "big".into(),
            cpu: 4,
            ram: 2048,
            ip: Some("10.0.0.5".into()),
            deadline: 1_000,
            secret: "s3cret-value".into(),
            agent_tags: vec!["queue=vm".into(), "os=linux".into()],
            at: 1,
        };
        let args =
            create_vm_args(&cfg.pools[0], &intent, "sc", "http://10.0.0.1:9595", "https://agent.buildkite.com/v3");
        assert_eq!(
            args,
            json!([
                "abcd1234-0001",
                "sc",
                {"root_disk": 4096, "cpu": 4, "ram": 2048, "disk": 100, "nested": true},
                {"n": {"type": "manual", "ip": "10.0.0.5", "netmask": "255.255.255.0", "gateway": "10.0.0.1", "dns": ["10.0.0.2"],
                       "default": ["dns", "gateway"], "cloud_properties": {"type": "user"}}},
                [],
                {"bosh": {"group": "agent-launcher-p", "groups": ["agent-launcher", "p"]},
                 "agent_launcher": {"job_id": "j-1", "agent_tags": "queue=vm,os=linux", "agent_name": "p-abcd1234-0001",
                                    "endpoint": "https://agent.buildkite.com/v3", "assignment_url": "http://10.0.0.1:9595/v1/assignment",
                                    "secret": "s3cret-value", "deadline": 1000}}
            ])
        );
        // one request id per call; create_vm's context names the stemcell's API version
        let (c1, c2) = (cpi_context(&cfg), cpi_context(&cfg));
        assert_ne!(c1["request_id"], c2["request_id"]);
        assert_eq!(create_vm_context(&cfg, stemcell_api_version(&cfg.pools[0]))["vm"]["stemcell"]["api_version"], 3);
        let md = metadata("l1", &intent);
        assert_eq!(
            md,
            json!({"agent-launcher": "l1", "pool": "p", "job": "j-1", "deadline": "1000", "name": "p-abcd1234-0001"})
        );
        assert!(!md.to_string().contains("s3cret"), "no secret in VM metadata");
    }

    #[test]
    fn backoffs_double_and_are_capped() {
        let s = Duration::from_secs;
        assert_eq!([1, 2, 3, 7, 40].map(create_backoff), [s(1), s(2), s(4), s(60), s(60)]);
        assert_eq!(poll_backoff(Duration::from_millis(100), 1), s(1));
        assert_eq!(poll_backoff(s(1), 3), s(4));
        assert_eq!(poll_backoff(s(5), 2), s(10));
        assert_eq!(poll_backoff(s(1), 30), s(60));
    }
}
