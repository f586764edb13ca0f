//! What the launcher shows of itself after every poll: the gauges of `/metrics` (VMs by state, capacity,
//! addresses, breakers, host power) and `<ledger_dir>/pools.json`, which `agent-launcher status` reads.
use super::state::Daemon;
use crate::launcher::breaker::Gate;
use crate::launcher::http;
use crate::launcher::log;
use crate::launcher::metrics::Metrics;
use crate::launcher::plan::Capacity;
use crate::launcher::power::Power;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::time::Instant;

/// The pools' breaker states of the running launcher, in its ledger directory (read by `status`).
pub const POOLS_FILE: &str = "pools.json";

/// Sets one gauge per state of `states`: 1 for `current`, 0 for the others.
fn one_hot(m: &mut Metrics, name: &str, pool: &str, states: &[&str], current: &str) {
    for st in states {
        m.set(name, &[("pool", pool), ("state", st)], if *st == current { 1.0 } else { 0.0 });
    }
}

impl Daemon {
    /// The breakers as `status` shows them, written to `<ledger_dir>/pools.json` when they change, and the
    /// breaker and power gauges.
    fn publish_breakers(&mut self) {
        let now_i = Instant::now();
        let pools: Map<String, Value> = self
            .pools
            .iter()
            .map(|p| {
                let b = &p.breaker;
                let state = json!({
                    "breaker": b.gate().as_str(),
                    "reason": if b.gate() == Gate::Closed { String::new() } else { log::redact(&b.reason) },
                    "next_probe_in_seconds": if b.gate() == Gate::Open { b.retry_in(now_i) } else { 0 },
                    "opened_total": b.opened_total,
                    "power": p.host.power.as_str(),
                });
                (p.name().to_string(), state)
            })
            .collect();
        {
            let mut s = http::lock(&self.shared);
            s.metrics.clear("launcher_pool_breaker");
            s.metrics.clear("launcher_pool_power");
            let powers = [Power::On, Power::Off, Power::Waking, Power::Stopping].map(Power::as_str);
            let gates = [Gate::Closed, Gate::HalfOpen, Gate::Open].map(Gate::as_str);
            for p in self.pools.iter() {
                if p.host.power != Power::Unmanaged {
                    one_hot(&mut s.metrics, "launcher_pool_power", p.name(), &powers, p.host.power.as_str());
                }
            }
            for p in self.pools.iter() {
                one_hot(&mut s.metrics, "launcher_pool_breaker", p.name(), &gates, p.breaker.gate().as_str());
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

    /// The open records of each pool by state (`launcher_vms`).
    fn vms_by_state(&self, pool: &str) -> HashMap<&'static str, f64> {
        let mut by_state: HashMap<&str, f64> =
            ["creating", "running", "deleting", "pending", "warm"].into_iter().map(|s| (s, 0.0)).collect();
        for r in self.ledger.state.open.values().filter(|r| r.intent.pool == pool) {
            let st = match (&r.cid, self.tracked.is_busy(&r.intent.id)) {
                (None, true) => "creating",
                (None, false) => "pending",
                (Some(_), true) => "deleting",
                (Some(_), false) if r.intent.job.is_empty() => "warm",
                (Some(_), false) => "running",
            };
            *by_state.entry(st).or_default() += 1.0;
        }
        by_state
    }

    pub(super) fn update_gauges(&mut self) {
        self.publish_breakers();
        let cap = Capacity::new(&self.cfg, &self.ledger.state, &self.tracked.busy_set());
        let by_pool: Vec<_> = self.pools.iter().map(|p| self.vms_by_state(p.name())).collect();
        let mut s = http::lock(&self.shared);
        let m = &mut s.metrics;
        for name in ["launcher_vms", "launcher_capacity_used", "launcher_capacity_limit", "launcher_ip_addresses"] {
            m.clear(name);
        }
        for (p, by_state) in self.pools.iter().zip(by_pool) {
            let (name, limits) = (p.name(), &p.conf.limits);
            for (st, n) in by_state {
                m.set("launcher_vms", &[("pool", name), ("state", st)], n);
            }
            let (vms, cpu, ram, ips) = cap.used(p.id);
            for (res, used, limit) in [
                ("vms", vms as f64, limits.max_vms as f64),
                ("cpu", cpu as f64, limits.cpu as f64),
                ("ram_mb", ram as f64, limits.ram_mb as f64),
            ] {
                m.set("launcher_capacity_used", &[("pool", name), ("resource", res)], used);
                m.set("launcher_capacity_limit", &[("pool", name), ("resource", res)], limit);
            }
            if !p.info.ips.is_empty() {
                m.set("launcher_ip_addresses", &[("pool", name), ("state", "used")], ips as f64);
                m.set("launcher_ip_addresses", &[("pool", name), ("state", "free")], (p.info.ips.len() - ips) as f64);
            }
        }
    }
}
