//! One record per pool: its config, what the planner derives from it, its CPI, its stemcell, its circuit
//! breaker and its host's power, looked up by [`PoolId`] or by name.
use crate::launcher::breaker::{Breaker, Gate};
use crate::launcher::config::{self, Config, PoolId};
use crate::launcher::cpi::Cpi;
use crate::launcher::http::{self, SharedRef};
use crate::launcher::log;
use crate::launcher::plan::PoolInfo;
use crate::launcher::power::Power;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A pool's host, as far as the launcher knows.
#[derive(Debug)]
pub struct Host {
    pub power: Power,
    /// Since when it is in `power`.
    pub since: Instant,
    /// Since when it has been idle while on (no VMs, creates or demand).
    pub idle_since: Option<Instant>,
    /// A power command or a wake probe is in flight.
    pub busy: bool,
    /// No new wake before then (after a host did not come up).
    pub wake_not_before: Option<Instant>,
}

impl Host {
    pub fn new(power: Power) -> Host {
        Host { power, since: Instant::now(), idle_since: None, busy: false, wake_not_before: None }
    }

    /// A sleeping host that may be woken now.
    pub fn can_wake(&self) -> bool {
        self.power == Power::Off && !self.busy && self.wake_not_before.is_none_or(|t| Instant::now() >= t)
    }
}

/// The pool's stemcell as the launcher has it.
#[derive(Debug, Clone)]
pub struct Stemcell {
    /// Empty while the pool has none (its host asleep, its upload failed).
    pub cid: String,
    /// create_vm's `context.vm.stemcell.api_version`.
    pub api_version: u32,
}

/// One pool of the running launcher.
pub struct Pool {
    pub id: PoolId,
    pub conf: config::Pool,
    /// Tags and addresses, and the gate the planner sees.
    pub info: PoolInfo,
    pub cpi: Cpi,
    pub stemcell: Stemcell,
    pub breaker: Breaker,
    pub host: Host,
}

impl AsRef<PoolInfo> for Pool {
    fn as_ref(&self) -> &PoolInfo {
        &self.info
    }
}

impl Pool {
    pub fn name(&self) -> &str {
        &self.conf.name
    }

    /// Its host takes VMs and it has its stemcell.
    pub fn ready(&self) -> bool {
        self.host.power.usable() && !self.stemcell.cid.is_empty()
    }

    /// A create may start here now.
    pub fn can_create(&self) -> bool {
        self.breaker.allows_create() && self.ready()
    }

    /// The gate the planner sees: the breaker's, and open while the pool is not ready.
    pub fn plan_gate(&self) -> Gate {
        if self.ready() {
            self.breaker.gate()
        } else {
            Gate::Open
        }
    }

    /// Opens the breaker now (the pool cannot have its stemcell).
    pub fn open_breaker(&mut self, reason: &str, shared: &SharedRef) {
        self.breaker.open_now(Instant::now(), reason);
        self.breaker_changed(shared);
    }

    /// Logs the breaker's state after a change, and counts the openings.
    pub fn breaker_changed(&self, shared: &SharedRef) {
        let (b, name) = (&self.breaker, self.name());
        match b.gate() {
            Gate::Open => {
                log::warn(&format!(
                    "pool={name} breaker open: {}; next probe in {} s",
                    b.reason,
                    b.retry_in(Instant::now())
                ));
                http::lock(shared).metrics.inc("launcher_pool_breaker_opened_total", &[("pool", name)], 1.0);
            }
            Gate::HalfOpen => log::info(&format!("pool={name} breaker half-open: the CPI answers; one create decides")),
            Gate::Closed => log::info(&format!("pool={name} breaker closed")),
        }
    }

    pub fn set_power(&mut self, p: Power, why: &str) {
        self.host.power = p;
        self.host.since = Instant::now();
        self.host.idle_since = None;
        log::info(&format!("pool={} host power {}: {why}", self.name(), p.as_str()));
    }
}

/// Every pool, in config order.
pub struct Pools(Vec<Pool>);

impl Pools {
    /// The pools of `cfg` with their CPIs (spooled to `spool`), closed breakers, no stemcell yet, and the
    /// host power `power` says each has at start.
    pub fn new(cfg: &Config, spool: PathBuf, mut power: impl FnMut(&Cpi, &config::Pool) -> Power) -> Pools {
        let b = &cfg.breaker;
        let breaker =
            Breaker::new(b.failures, Duration::from_secs(b.open_seconds), Duration::from_secs(b.max_open_seconds));
        Pools(
            cfg.pool_ids()
                .map(|id| {
                    let conf = cfg.pools[id].clone();
                    let cpi = Cpi::new(conf.cpi.clone(), spool.clone(), Duration::from_secs(conf.cpi_timeout_seconds));
                    Pool {
                        id,
                        info: PoolInfo::new(&conf),
                        host: Host::new(power(&cpi, &conf)),
                        stemcell: Stemcell { cid: String::new(), api_version: 3 },
                        breaker: breaker.clone(),
                        cpi,
                        conf,
                    }
                })
                .collect(),
        )
    }

    /// The pool named `name`.
    pub fn named(&self, name: &str) -> Option<&Pool> {
        self.0.iter().find(|p| p.conf.name == name)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Pool> {
        self.0.iter()
    }

    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Pool> {
        self.0.iter_mut()
    }

    pub fn ids(&self) -> impl Iterator<Item = PoolId> {
        (0..self.0.len()).map(PoolId)
    }

    pub fn as_slice(&self) -> &[Pool] {
        &self.0
    }
}

impl std::ops::Index<PoolId> for Pools {
    type Output = Pool;
    fn index(&self, id: PoolId) -> &Pool {
        &self.0[id.0]
    }
}

impl std::ops::IndexMut<PoolId> for Pools {
    fn index_mut(&mut self, id: PoolId) -> &mut Pool {
        &mut self.0[id.0]
    }
}
