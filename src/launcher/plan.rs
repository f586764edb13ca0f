//! Deciding which scheduled jobs to start where: matching, flavors, capacity, static IPs and placement.
//!
//! [`plan`] is a pure function of the config, the open ledger records, the creates in flight and one
//! listing, so it is unit-tested and benchmarked without any I/O. Jobs are considered in the listing's order
//! (priority, then age); capacity taken by a job earlier in the same plan counts for the later ones.
use crate::launcher::breaker::Gate;
use crate::launcher::config::{Config, Placement, Pool, PoolId};
use crate::launcher::ledger::State;
use crate::launcher::rules::{Match, PoolTags, Rule};
use crate::launcher::source::{Listing, ScheduledJob};
use std::collections::{BTreeSet, HashSet};
use std::net::Ipv4Addr;

/// A pool with what is derived from its config once.
#[derive(Debug, Clone)]
pub struct PoolInfo {
    pub tags: PoolTags,
    /// The static addresses of the pool's network that has them, with that network's name.
    pub ips: Vec<Ipv4Addr>,
    pub ip_network: Option<String>,
    /// The pool's circuit breaker (set by the daemon before each plan): open pools get no jobs.
    pub gate: Gate,
}

impl PoolInfo {
    pub fn new(p: &Pool) -> PoolInfo {
        let (ip_network, ips) = p
            .networks
            .iter()
            .find(|(_, n)| !n.static_ips.is_empty())
            .map(|(name, n)| (Some(name.clone()), n.addresses().unwrap_or_default()))
            .unwrap_or((None, Vec::new()));
        PoolInfo { tags: PoolTags::new(&p.tags, &p.flavor_tag), ips, ip_network, gate: Gate::Closed }
    }
}

impl AsRef<PoolInfo> for PoolInfo {
    fn as_ref(&self) -> &PoolInfo {
        self
    }
}

/// What the plan says to do with one job.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Reserve the job and hand it to this warm VM (an open record with a VM and no job).
    Assign { job: ScheduledJob, pool: PoolId, record: String, agent_tags: Vec<String> },
    /// Reserve the job and create its VM in this pool.
    Start {
        job: ScheduledJob,
        pool: PoolId,
        flavor: String,
        cpu: u32,
        ram: u64,
        agent_tags: Vec<String>,
        ip: Option<String>,
    },
    /// The job cannot run here (unknown flavor): reserve it and finish it with −1 and this reason.
    Refuse { job: ScheduledJob, pool: PoolId, reason: String },
    /// The job matches but must wait; `reason` is `capacity`, `ip`, `paused`, `creates` or `down` (every
    /// matching pool's breaker is open).
    Wait { job: ScheduledJob, pool: PoolId, reason: &'static str },
}

impl Decision {
    pub fn job(&self) -> &ScheduledJob {
        match self {
            Decision::Assign { job, .. }
            | Decision::Start { job, .. }
            | Decision::Refuse { job, .. }
            | Decision::Wait { job, .. } => job,
        }
    }

    pub fn pool(&self) -> PoolId {
        match self {
            Decision::Assign { pool, .. }
            | Decision::Start { pool, .. }
            | Decision::Refuse { pool, .. }
            | Decision::Wait { pool, .. } => *pool,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Usage {
    vms: u32,
    cpu: u32,
    ram: u64,
    creating: u32,
    ips: BTreeSet<Ipv4Addr>,
}

impl Usage {
    fn add(&mut self, cpu: u32, ram: u64) {
        self.vms += 1;
        self.cpu += cpu;
        self.ram += ram;
    }
}

/// Capacity in use, per pool and in total.
#[derive(Debug, Clone)]
pub struct Capacity {
    pools: Vec<Usage>,
    total: Usage,
}

impl Capacity {
    /// From the open records; `busy` holds the records with a CPI call in flight (those without a VM yet
    /// are creates, which count against `max_concurrent_creates`).
    pub fn new(cfg: &Config, state: &State, busy: &HashSet<String>) -> Capacity {
        let mut pools = vec![Usage::default(); cfg.pools.len()];
        let mut total = Usage::default();
        for r in state.open.values() {
            if let Some(id) = cfg.pool_id(&r.intent.pool) {
                let u = &mut pools[id.0];
                u.add(r.intent.cpu, r.intent.ram);
                if let Some(ip) = r.intent.ip.as_ref().and_then(|s| s.parse().ok()) {
                    u.ips.insert(ip);
                }
                if busy.contains(&r.intent.id) && r.cid.is_none() {
                    u.creating += 1;
                }
            }
            total.add(r.intent.cpu, r.intent.ram);
        }
        Capacity { pools, total }
    }

    /// VMs, CPUs, RAM and static addresses in use in a pool.
    pub fn used(&self, pool: PoolId) -> (u32, u32, u64, usize) {
        let u = &self.pools[pool.0];
        (u.vms, u.cpu, u.ram, u.ips.len())
    }

    /// Why a VM of this size does not fit in pool `id` now (`None` when it fits).
    pub fn refusal(
        &self,
        cfg: &Config,
        info: &PoolInfo,
        id: PoolId,
        cpu: u32,
        ram: u64,
        smallest: bool,
    ) -> Option<&'static str> {
        let p = &cfg.pools[id];
        let (u, l, g) = (&self.pools[id.0], &p.limits, &cfg.limits);
        let over = |limit: u64, used: u64, add: u64| limit > 0 && used + add > limit;
        if over(l.max_vms.into(), u.vms.into(), 1) || over(g.max_vms.into(), self.total.vms.into(), 1) {
            return Some("capacity");
        }
        if over(l.cpu.into(), u.cpu.into(), cpu.into())
            || over(l.ram_mb, u.ram, ram)
            || over(g.cpu.into(), self.total.cpu.into(), cpu.into())
            || over(g.ram_mb, self.total.ram, ram)
        {
            return Some("capacity");
        }
        if l.reserve_smallest && !smallest {
            if let Some((_, s)) = p.smallest_flavor() {
                let (c2, r2) = (u64::from(cpu) + u64::from(s.cpu), ram + s.ram);
                if over(l.cpu.into(), u.cpu.into(), c2)
                    || over(l.ram_mb, u.ram, r2)
                    || over(l.max_vms.into(), u.vms.into(), 2)
                {
                    return Some("capacity");
                }
            }
        }
        if u.creating >= l.max_concurrent_creates || (info.gate == Gate::HalfOpen && u.creating >= 1) {
            return Some("creates");
        }
        if !info.ips.is_empty() && info.ips.iter().all(|ip| u.ips.contains(ip)) {
            return Some("ip");
        }
        None
    }

    /// Takes room for a VM of this size in pool `id`, and its static address when the pool has them.
    pub fn take(&mut self, info: &PoolInfo, id: PoolId, cpu: u32, ram: u64) -> Option<String> {
        let u = &mut self.pools[id.0];
        u.add(cpu, ram);
        u.creating += 1;
        self.total.add(cpu, ram);
        let ip = info.ips.iter().find(|ip| !u.ips.contains(ip)).copied();
        if let Some(ip) = ip {
            u.ips.insert(ip);
        }
        ip.map(|i| i.to_string())
    }

    /// Fill ratio of a pool, for spread/pack (the tightest of its limits; VM count when it has none).
    fn fill(&self, p: &Pool, id: PoolId) -> f64 {
        let u = &self.pools[id.0];
        let mut r: f64 = 0.0;
        let mut any = false;
        for (used, limit) in [
            (u.vms as f64, p.limits.max_vms as f64),
            (u.cpu as f64, p.limits.cpu as f64),
            (u.ram as f64, p.limits.ram_mb as f64),
        ] {
            if limit > 0.0 {
                r = r.max(used / limit);
                any = true;
            }
        }
        if any {
            r
        } else {
            u.vms as f64 / 1e6
        }
    }
}

/// Where a job that no warm VM takes could start: the best pool by placement, else why it waits (the
/// first pool's reason, `ip` before others), else why it is refused.
struct Placing {
    best: Option<(PoolId, f64, String, u32, u64, Vec<String>)>,
    wait: Option<(PoolId, &'static str)>,
    refusal: Option<(PoolId, String)>,
}

/// One plan: the config, the pools' derived infos, and the capacity taken so far.
struct Planner<'a, P> {
    cfg: &'a Config,
    infos: &'a [P],
    cap: Capacity,
    /// Idle warm VMs per pool: (record, flavor), oldest first.
    warm: Vec<Vec<(String, String)>>,
}

impl<P: AsRef<PoolInfo>> Planner<'_, P> {
    fn info(&self, id: PoolId) -> &PoolInfo {
        self.infos[id.0].as_ref()
    }

    fn decide(&mut self, job: &ScheduledJob, paused: bool) -> Option<Decision> {
        let rules = job.rules.iter().map(|r| Rule::parse(r)).collect::<Option<Vec<Rule>>>()?;
        let matches: Vec<(PoolId, Match)> = (0..self.infos.len())
            .map(PoolId)
            .filter_map(|id| self.info(id).tags.matches_rules(&rules).map(|m| (id, m)))
            .collect();
        let first = matches.first()?.0;
        // pools whose breaker is open take nothing: the job goes to another pool, or waits (unreserved)
        let matches: Vec<_> = matches.into_iter().filter(|(id, _)| self.info(*id).gate != Gate::Open).collect();
        let job = job.clone();
        let Some(&(first_open, _)) = matches.first() else {
            return Some(Decision::Wait { job, pool: first, reason: "down" });
        };
        if paused {
            return Some(Decision::Wait { job, pool: first_open, reason: "paused" });
        }
        // a warm VM of the right flavor takes the job without a create
        if let Some((pool, record, agent_tags)) = self.warm_vm(&matches) {
            return Some(Decision::Assign { job, pool, record, agent_tags });
        }
        let p = self.place(&matches);
        match (p.best, p.wait, p.refusal) {
            (Some((pool, _, flavor, cpu, ram, agent_tags)), _, _) => {
                let ip = self.cap.take(self.infos[pool.0].as_ref(), pool, cpu, ram);
                Some(Decision::Start { job, pool, flavor, cpu, ram, agent_tags, ip })
            }
            (None, Some((pool, reason)), _) => Some(Decision::Wait { job, pool, reason }),
            (None, None, Some((pool, reason))) => Some(Decision::Refuse { job, pool, reason }),
            (None, None, None) => None,
        }
    }

    /// The first matching pool's idle warm VM of the job's flavor, taken.
    fn warm_vm(&mut self, matches: &[(PoolId, Match)]) -> Option<(PoolId, String, Vec<String>)> {
        matches.iter().find_map(|(id, m)| {
            let (fname, _) = self.cfg.pools[*id].flavor_for(m.flavor.as_deref()).ok()?;
            let k = self.warm[id.0].iter().position(|(_, f)| f == fname)?;
            Some((*id, self.warm[id.0].remove(k).0, m.agent_tags.clone()))
        })
    }

    fn place(&self, matches: &[(PoolId, Match)]) -> Placing {
        let mut out = Placing { best: None, wait: None, refusal: None };
        for (id, m) in matches {
            let p = &self.cfg.pools[*id];
            let (fname, f) = match p.flavor_for(m.flavor.as_deref()) {
                Ok(x) => x,
                Err(reason) => {
                    out.refusal.get_or_insert((*id, reason));
                    continue;
                }
            };
            let smallest = p.smallest_flavor().map(|(n, _)| n == fname).unwrap_or(true);
            if let Some(why) = self.cap.refusal(self.cfg, self.info(*id), *id, f.cpu, f.ram, smallest) {
                // "ip" is the most specific reason to show; keep the first pool's otherwise
                if out.wait.is_none() || why == "ip" {
                    out.wait = Some((*id, why));
                }
                continue;
            }
            let fill = self.cap.fill(p, *id);
            let better = match (&out.best, self.cfg.placement) {
                (None, _) => true,
                (Some(b), Placement::Spread) => fill < b.1,
                (Some(b), Placement::Pack) => fill > b.1,
            };
            if better {
                out.best = Some((*id, fill, fname.to_string(), f.cpu, f.ram, m.agent_tags.clone()));
            }
        }
        out
    }
}

/// Decides, for every listed job that no open record holds, whether to start, refuse or wait.
/// `infos` are the pools' derived infos in config order (or records that hold them).
/// `skip` holds jobs already handled (refused) that may still be listed.
/// `busy` holds the records with a CPI call in flight (creates count against `max_concurrent_creates`;
/// a warm VM that is being deleted cannot take a job).
pub fn plan<P: AsRef<PoolInfo>>(
    cfg: &Config,
    infos: &[P],
    state: &State,
    busy: &HashSet<String>,
    listing: &Listing,
    skip: &HashSet<String>,
) -> Vec<Decision> {
    let mut warm: Vec<Vec<(String, String)>> = vec![Vec::new(); cfg.pools.len()];
    for r in state.open.values() {
        let Some(id) = cfg.pool_id(&r.intent.pool) else { continue };
        if !busy.contains(&r.intent.id) && r.intent.job.is_empty() && r.cid.is_some() {
            warm[id.0].push((r.intent.id.clone(), r.intent.flavor.clone()));
        }
    }
    let mut planner = Planner { cfg, infos, cap: Capacity::new(cfg, state, busy), warm };
    let held: HashSet<&str> = state.open.values().map(|r| r.intent.job.as_str()).collect();
    listing
        .jobs
        .iter()
        .filter(|job| !held.contains(job.id.as_str()) && !skip.contains(&job.id))
        .filter_map(|job| planner.decide(job, listing.paused))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launcher::ledger::{Intent, Record};
    const A: PoolId = PoolId(0);
    const B: PoolId = PoolId(1);

    fn cfg(extra: &str) -> Config {
        use crate::launcher::config::testing::{config, pool};
        let a = pool(
            "a",
            r#"networks.n = { type = "manual", static_ips = ["10.0.0.1-10.0.0.2"], netmask = "255.255.255.0" }
flavors.small = { cpu = 1, ram = 1024 }
flavors.large = { cpu = 4, ram = 4096 }
limits = { cpu = 6, max_concurrent_creates = 10, reserve_smallest = true }"#,
        );
        let b = pool(
            "b",
            r#"networks.n = { type = "dynamic" }
flavors.small = { cpu = 1, ram = 1024 }
limits = { max_vms = 3, max_concurrent_creates = 10 }"#,
        );
        config(extra, &(a + &b))
    }

    fn job(id: &str, rules: &[&str]) -> ScheduledJob {
        ScheduledJob {
            id: id.into(),
            priority: 0,
            rules: rules.iter().map(|s| s.to_string()).collect(),
            scheduled_at: String::new(),
        }
    }

    fn open(pool: &str, cpu: u32, ip: Option<&str>) -> Record {
        Record {
            intent: Intent {
                id: format!("r-{pool}-{cpu}-{ip:?}"),
                job: format!("j-{cpu}-{ip:?}"),
                pool: pool.into(),
                flavor: "x".into(),
                cpu,
                ram: 1,
                ip: ip.map(String::from),
                deadline: 0,
                secret: String::new(),
                agent_tags: vec![],
                at: 0,
            },
            attempts: 1,
            failures: 0,
            cid: Some("vm".into()),
            created_at: None,
            last_failure: None,
        }
    }

    fn run(c: &Config, state: &State, jobs: Vec<ScheduledJob>) -> Vec<Decision> {
        let infos: Vec<PoolInfo> = c.pools.iter().map(PoolInfo::new).collect();
        plan(c, &infos, state, &HashSet::new(), &Listing { jobs, paused: false }, &HashSet::new())
    }

    #[test]
    fn spread_flavors_and_refusal() {
        let c = cfg("");
        let d = run(
            &c,
            &State::default(),
            vec![
                job("1", &["queue=vm"]),
                job("2", &["queue=vm"]),
                job("3", &["queue=vm", "flavor=huge"]),
                job("4", &["queue=other"]),
            ],
        );
        assert_eq!(d.len(), 3, "{d:?}");
        // spread: both pools start empty; the first goes to a, the next to the emptier b
        assert!(
            matches!(&d[0], Decision::Start { pool: A, ip: Some(ip), flavor, .. } if ip == "10.0.0.1" && flavor == "small")
        );
        assert!(matches!(&d[1], Decision::Start { pool: B, ip: None, .. }));
        assert!(matches!(&d[2], Decision::Refuse { reason, .. } if reason.contains("huge")), "{:?}", d[2]);
    }

    #[test]
    fn pack_fills_the_first_pool_until_ips_run_out() {
        let c = cfg("placement = \"pack\"");
        let mut st = State::default();
        st.open.insert("x".into(), open("a", 1, Some("10.0.0.1")));
        let d = run(&c, &st, vec![job("1", &["queue=vm"]), job("2", &["queue=vm"]), job("3", &["queue=vm"])]);
        assert!(matches!(&d[0], Decision::Start { pool: A, ip: Some(ip), .. } if ip == "10.0.0.2"), "{d:?}");
        // pool a has no address left: b takes the rest
        assert!(matches!(&d[1], Decision::Start { pool: B, .. }), "{d:?}");
    }

    #[test]
    fn waits_for_ips_and_keeps_the_small_reserve() {
        let c = cfg("");
        let mut st = State::default();
        st.open.insert("x".into(), open("a", 1, Some("10.0.0.1")));
        st.open.insert("y".into(), open("a", 1, Some("10.0.0.2")));
        // b is full too
        for k in 0..3 {
            st.open.insert(format!("b{k}"), open("b", 1, None));
        }
        let d = run(&c, &st, vec![job("1", &["queue=vm"])]);
        assert!(matches!(&d[0], Decision::Wait { reason: "ip", pool: A, .. }), "{d:?}");
        // reserve_smallest: with 2 of 6 CPUs used, a large (4) would leave no room for a small (1)
        let mut st = State::default();
        st.open.insert("x".into(), open("a", 2, None));
        let d = run(&c, &st, vec![job("1", &["queue=vm", "flavor=large"]), job("2", &["queue=vm"])]);
        assert!(matches!(&d[0], Decision::Wait { reason: "capacity", .. }), "{d:?}");
        assert!(matches!(&d[1], Decision::Start { .. }), "{d:?}");
    }

    #[test]
    fn warm_vms_of_the_right_flavor_take_jobs_first() {
        let c = cfg("");
        let mut st = State::default();
        let mut w = open("b", 1, None);
        w.intent.job = String::new();
        w.intent.flavor = "small".into();
        st.open.insert(w.intent.id.clone(), w.clone());
        let d = run(
            &c,
            &st,
            vec![job("1", &["queue=vm", "flavor=large"]), job("2", &["queue=vm"]), job("3", &["queue=vm"])],
        );
        assert!(matches!(&d[0], Decision::Start { flavor, .. } if flavor == "large"), "{d:?}");
        assert!(matches!(&d[1], Decision::Assign { record, pool: B, .. } if *record == w.intent.id), "{d:?}");
        assert!(matches!(&d[2], Decision::Start { .. }), "{d:?}");
        // a warm VM that is being deleted takes nothing
        let infos: Vec<PoolInfo> = c.pools.iter().map(PoolInfo::new).collect();
        let busy: HashSet<String> = [w.intent.id.clone()].into();
        let d = plan(
            &c,
            &infos,
            &st,
            &busy,
            &Listing { jobs: vec![job("2", &["queue=vm"])], paused: false },
            &HashSet::new(),
        );
        assert!(matches!(&d[0], Decision::Start { .. }), "{d:?}");
    }

    #[test]
    fn open_breakers_send_jobs_elsewhere_and_half_open_creates_one_at_a_time() {
        let c = cfg("");
        let mut infos: Vec<PoolInfo> = c.pools.iter().map(PoolInfo::new).collect();
        infos[0].gate = Gate::Open;
        let l = Listing { jobs: vec![job("1", &["queue=vm"]), job("2", &["queue=vm"])], paused: false };
        let d = plan(&c, &infos, &State::default(), &HashSet::new(), &l, &HashSet::new());
        assert!(d.iter().all(|d| matches!(d, Decision::Start { pool: B, .. })), "{d:?}");
        infos[1].gate = Gate::Open;
        let d = plan(&c, &infos, &State::default(), &HashSet::new(), &l, &HashSet::new());
        assert!(d.iter().all(|d| matches!(d, Decision::Wait { reason: "down", .. })), "{d:?}");
        infos[0].gate = Gate::HalfOpen;
        let d = plan(&c, &infos, &State::default(), &HashSet::new(), &l, &HashSet::new());
        assert!(matches!(&d[0], Decision::Start { pool: A, .. }), "{d:?}");
        assert!(matches!(&d[1], Decision::Wait { reason: "creates", pool: A, .. }), "{d:?}");
    }

    #[test]
    fn paused_queue_starts_nothing_and_held_jobs_are_skipped() {
        let c = cfg("");
        let infos: Vec<PoolInfo> = c.pools.iter().map(PoolInfo::new).collect();
        let l = Listing { jobs: vec![job("1", &["queue=vm"])], paused: true };
        let d = plan(&c, &infos, &State::default(), &HashSet::new(), &l, &HashSet::new());
        assert!(matches!(&d[0], Decision::Wait { reason: "paused", .. }));
        let mut st = State::default();
        let mut r = open("a", 1, None);
        r.intent.job = "1".into();
        st.open.insert("x".into(), r);
        assert!(run(&c, &st, vec![job("1", &["queue=vm"])]).is_empty());
    }
}
