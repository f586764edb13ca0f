//! What the loop owns ([`Daemon`]: the config, the pools, the ledger, the source, the state shared with the
//! listener, the tracked jobs and records) and what every phase uses: CPI calls timed and spooled, the
//! context of a call, errors of the source, closing a record.
use super::pools::Pools;
use crate::launcher::config::{Config, PoolId};
use crate::launcher::cpi::{Cpi, CpiError};
use crate::launcher::http::{self, SharedRef};
use crate::launcher::ledger::{Event, Intent, Ledger, LedgerError, Record};
use crate::launcher::log;
use crate::launcher::source::{Source, SourceError, Work};
use crate::launcher::tracked::Tracked;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;

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
    #[error("cannot register with the CI system")]
    Register(#[source] SourceError),
    #[error("cannot read random bytes for a VM secret")]
    Random(#[source] std::io::Error),
}

/// 32 hex characters from the kernel's random source.
pub fn random_hex() -> Result<String, DaemonError> {
    crate::common::ids::try_random_hex(32).map_err(DaemonError::Random)
}

/// What a worker thread reports.
pub(super) enum Msg {
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
        pool: PoolId,
        on: bool,
        res: Result<(), String>,
    },
    /// The `info` probe of a waking host: whether its CPI answered.
    WakeProbed {
        pool: PoolId,
        ok: bool,
    },
    /// The `info` probe of an open breaker's pool.
    Probed {
        pool: PoolId,
        res: Result<(), String>,
    },
    /// The source asked for a poll now (a webhook delivery).
    Wake,
}

/// The running launcher.
pub struct Daemon {
    pub(super) cfg: Config,
    pub(super) pools: Pools,
    pub(super) ledger: Ledger,
    pub(super) source: Box<dyn Source>,
    pub(super) shared: SharedRef,
    pub(super) tx: Sender<Msg>,
    pub(super) rx: Receiver<Msg>,
    /// Per job and per open record: what the loop knows beyond the ledger.
    pub(super) tracked: Tracked,
    pub(super) stop: Arc<AtomicBool>,
    /// No call to the source before then (it asked for a pause, or polls keep failing).
    pub(super) source_wait_until: Option<Instant>,
    /// Polls of the source that failed in a row.
    pub(super) failed_polls: u32,
    /// What `pools.json` holds now.
    pub(super) published: String,
    /// The HTTP listener (it restarts its own accept loop; a new one replaces it if its thread ends).
    pub(super) listener: http::Listener,
    /// When the next try to start a listener whose thread ended is due.
    pub(super) listener_retry_at: Option<Instant>,
    /// The source asked for a poll at once.
    pub(super) poll_now: bool,
}

static CALLS: AtomicU64 = AtomicU64::new(0);

/// The context of a CPI call; its `request_id` is unique per call (it names the call in the CPI's logs).
pub fn cpi_context(cfg: &Config) -> Value {
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    let now = crate::launcher::clock::now();
    json!({"director_uuid": cfg.launcher_id, "request_id": format!("agent-launcher-{now}-{}-{n}", std::process::id())})
}

/// Runs a CPI call and records its latency and errors.
pub(super) fn timed<T>(
    shared: &SharedRef,
    method: &str,
    f: impl FnOnce() -> Result<T, CpiError>,
) -> Result<T, CpiError> {
    let t = Instant::now();
    let r = f();
    let mut s = http::lock(shared);
    s.metrics.observe("launcher_cpi_call_duration_seconds", &[("method", method)], t.elapsed().as_secs_f64());
    if r.is_err() {
        s.metrics.inc("launcher_cpi_errors_total", &[("method", method)], 1.0);
    }
    r
}

/// One pool's CPI with a call context, ready to move to a worker thread.
pub(super) struct Caller {
    pub cpi: Cpi,
    pub ctx: Value,
    pub shared: SharedRef,
}

impl Caller {
    /// Runs `method`, timed; its spool files are removed after (its outcome does not need to survive a crash).
    pub fn call(&self, tag: &str, method: &str, args: Value) -> Result<Value, CpiError> {
        let r = self.call_kept(tag, method, args);
        self.cpi.spool_files(tag).remove();
        r
    }

    /// Runs `method`, timed, and leaves its spool files for the caller to remove once the outcome is safe.
    pub fn call_kept(&self, tag: &str, method: &str, args: Value) -> Result<Value, CpiError> {
        timed(&self.shared, method, || self.cpi.call(tag, method, args, &self.ctx))
    }
}

/// The agent's name: pool and record (whose id starts with the job's first 8 characters).
pub fn agent_name(i: &Intent) -> String {
    format!("{}-{}", i.pool, i.id)
}

impl Daemon {
    /// Pool `id`'s CPI with a fresh context.
    pub(super) fn caller(&self, id: PoolId) -> Caller {
        Caller { cpi: self.pools[id].cpi.clone(), ctx: cpi_context(&self.cfg), shared: self.shared.clone() }
    }

    /// Logs a failed call to the source and honours the pause it asked for.
    pub(super) fn source_error(&mut self, call: &str, e: &SourceError) {
        let name = self.source.name();
        log::warn(&format!("{name} {call}: {}", log::chain(e)));
        let mut s = http::lock(&self.shared);
        s.metrics.inc("launcher_source_errors_total", &[("source", name), ("call", call)], 1.0);
        // the name of the first launcher versions, kept for the dashboards that read it
        if name == "buildkite" {
            s.metrics.inc("launcher_buildkite_errors_total", &[("call", call)], 1.0);
        }
        drop(s);
        if let Some(w) = e.wait() {
            self.source_wait_until = Some(Instant::now() + w);
        }
    }

    /// Whether the source may be called now.
    pub(super) fn source_ready(&self) -> bool {
        self.source_wait_until.is_none_or(|t| Instant::now() >= t)
    }

    /// Fails a job the launcher could not run (finishes it with −1 where the source can).
    pub(super) fn fail_job(&mut self, job: &str, pool: &str, reason: &str) {
        log::warn(&format!("job={job} pool={pool} finishing with -1: {reason}"));
        // a source that cannot fail a job (REST) lists it again: this launcher does not retry it
        self.tracked.job(job).refused = true;
        http::lock(&self.shared).metrics.inc("launcher_jobs_failed_total", &[("pool", pool)], 1.0);
        if let Err(e) = self.source.fail(job, reason) {
            self.source_error("finish", &e);
        }
    }

    /// The record's job no longer has a reservation to extend, its backoff ends, and its VM's assignment
    /// is gone.
    pub(super) fn forget(&mut self, r: &Record) {
        self.tracked.forget(&r.intent.job, &r.intent.id);
        http::lock(&self.shared).assignments.remove(&r.intent.secret);
    }

    /// Closes a record (its VM deleted, or never made): forgets it, writes it to the ledger, and lets the
    /// source undo what it granted the record's VM.
    pub(super) fn close(&mut self, r: &Record, reason: String) -> Result<(), DaemonError> {
        self.forget(r);
        self.ledger.append(Event::Closed { id: r.intent.id.clone(), reason })?;
        self.release(r);
        Ok(())
    }

    /// Lets the source undo what it granted the record's VM (a record with a job only).
    pub(super) fn release(&mut self, r: &Record) {
        if !r.intent.job.is_empty() {
            let name = agent_name(&r.intent);
            let work = Work { job: &r.intent.job, agent_name: &name, agent_tags: &r.intent.agent_tags };
            if let Err(e) = self.source.release(&work) {
                self.source_error("release", &e);
            }
        }
    }

    /// create_vm calls in flight in a pool.
    pub(super) fn creating_in(&self, pool: &str) -> u32 {
        let open = &self.ledger.state.open;
        self.tracked.busy().filter_map(|id| open.get(id)).filter(|r| r.cid.is_none() && r.intent.pool == pool).count()
            as u32
    }
}
