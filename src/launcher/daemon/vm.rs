//! A record's VM through its pool's CPI: create_vm (announced in the ledger first) and set_vm_metadata, and
//! delete_vm, each on a worker thread, and what their outcomes do to the record; the create_vm arguments.
use super::state::{agent_name, cpi_context, Daemon, DaemonError, Msg};
use crate::launcher::clock::now;
use crate::launcher::config::{Config, Pool};
use crate::launcher::cpi::{self, CpiError};
use crate::launcher::http;
use crate::launcher::ledger::{Event, Intent, Record};
use crate::launcher::log;
use crate::launcher::tracked::After;
use serde_json::{json, Map, Value};
use std::time::{Duration, Instant};

/// The pause before create attempt `failures + 1`: 1 s after the first failure, doubling, at most 60 s.
pub fn create_backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// The context of create_vm: also the stemcell's API version, as the director sends it.
pub fn create_vm_context(cfg: &Config, stemcell_api_version: u32) -> Value {
    let mut ctx = cpi_context(cfg);
    ctx["vm"] = json!({"stemcell": {"api_version": stemcell_api_version}});
    ctx
}

/// The VM's metadata tags (never a secret).
pub fn metadata(launcher_id: &str, intent: &Intent) -> Value {
    json!({
        "agent-launcher": launcher_id,
        "pool": intent.pool,
        "job": if intent.job.is_empty() { "warm" } else { intent.job.as_str() },
        "deadline": intent.deadline.to_string(),
        "name": agent_name(intent),
    })
}

/// The create_vm `cloud_properties` of a record: the pool's, with its flavor's size and properties over them.
fn cloud_properties(pool: &Pool, flavor: &str) -> Map<String, Value> {
    let mut cp = pool.cloud_properties.clone();
    if let Some(f) = pool.flavors.get(flavor) {
        cp.insert("cpu".into(), json!(f.cpu));
        cp.insert("ram".into(), json!(f.ram));
        if f.disk > 0 {
            cp.insert("disk".into(), json!(f.disk));
        }
        for (k, v) in &f.cloud_properties {
            cp.insert(k.clone(), v.clone());
        }
    }
    cp
}

/// create_vm's six arguments for one record. The env tells the guest where to fetch its job and what its
/// source adds (`source_env`: Buildkite's agent endpoint); it never holds a token.
pub fn create_vm_args(
    pool: &Pool,
    intent: &Intent,
    stemcell: &str,
    public_url: &str,
    source_env: &Map<String, Value>,
) -> Value {
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
    let mut launcher = source_env.clone();
    for (k, v) in [
        ("job_id", json!(intent.job)),
        ("agent_tags", json!(intent.agent_tags.join(","))),
        ("agent_name", json!(agent_name(intent))),
        ("assignment_url", json!(format!("{public_url}/v1/assignment"))),
        ("secret", json!(intent.secret)),
        ("deadline", json!(intent.deadline)),
    ] {
        launcher.insert(k.into(), v);
    }
    let env = json!({
        "bosh": {"group": format!("agent-launcher-{}", pool.name), "groups": ["agent-launcher", pool.name]},
        "agent_launcher": launcher,
    });
    json!([intent.id, stemcell, cloud_properties(pool, &intent.flavor), networks, [], env])
}

impl Daemon {
    /// Writes the attempt to the ledger, then runs create_vm (and set_vm_metadata) on a worker thread.
    pub(super) fn start_create(&mut self, r: &Record) -> Result<(), DaemonError> {
        let Some(pool) = self.pools.named(&r.intent.pool) else {
            return Ok(());
        };
        let id = pool.id;
        let n = r.attempts + 1;
        self.ledger.append(Event::Attempt { id: r.intent.id.clone(), n })?;
        self.tracked.record(&r.intent.id).busy = true;
        let pool = &mut self.pools[id];
        pool.breaker.create_started();
        log::info(&format!("record={} job={} pool={} create_vm attempt {n}", r.intent.id, r.intent.job, pool.name()));
        let (conf, stemcell) = (pool.conf.clone(), pool.stemcell.clone());
        let mut caller = self.caller(id);
        let mctx = std::mem::replace(&mut caller.ctx, create_vm_context(&self.cfg, stemcell.api_version));
        let (tx, intent, launcher_id) = (self.tx.clone(), r.intent.clone(), self.cfg.launcher_id.clone());
        let args = create_vm_args(&conf, &intent, &stemcell.cid, &self.cfg.public_url(), &self.source.vm_env());
        std::thread::spawn(move || {
            let tag = format!("{}-{n}.create_vm", intent.id);
            let res = caller.call_kept(&tag, "create_vm", args).and_then(|v| {
                cpi::vm_cid(&v).ok_or_else(|| CpiError::NoResponse {
                    method: "create_vm".into(),
                    status: "no VM CID in the result".into(),
                    output: v.to_string(),
                })
            });
            if let Ok(cid) = &res {
                caller.ctx = mctx;
                let (md, mtag) = (metadata(&launcher_id, &intent), format!("{}-{n}.set_vm_metadata", intent.id));
                if let Err(e) = caller.call(&mtag, "set_vm_metadata", json!([cid, md])) {
                    log::warn(&format!("record={} vm={cid} set_vm_metadata failed: {}", intent.id, log::chain(&e)));
                }
            }
            let _ = tx.send(Msg::Created { id: intent.id.clone(), n, res });
        });
        Ok(())
    }

    /// A create_vm finished: the breaker learns of it, the ledger gets the CID or the failure (then the
    /// record waits before its next attempt), and its spool files go.
    pub(super) fn created(&mut self, id: String, n: u32, res: Result<String, CpiError>) -> Result<(), DaemonError> {
        self.tracked.record(&id).busy = false;
        let Some(r) = self.ledger.state.open.get(&id).cloned() else {
            return Ok(());
        };
        let pool = self.pools.named(&r.intent.pool).map(|p| p.id);
        if let Some(p) = pool {
            let p = &mut self.pools[p];
            let changed = match &res {
                Ok(_) => p.breaker.success(),
                Err(e) => p.breaker.failure(Instant::now(), &format!("create_vm: {}", log::chain(e))),
            };
            if changed {
                p.breaker_changed(&self.shared);
            }
        }
        match res {
            Ok(cid) => {
                self.ledger.append(Event::Created { id: id.clone(), cid: cid.clone(), at: now() })?;
                log::info(&format!("record={id} job={} vm={cid} created", r.intent.job));
                http::lock(&self.shared).metrics.inc("launcher_jobs_launched_total", &[("pool", &r.intent.pool)], 1.0);
            }
            Err(e) => {
                let leak = matches!(e, CpiError::NoResponse { .. } | CpiError::Timeout { .. });
                log::warn(&format!(
                    "record={id} job={} create_vm attempt {n} failed: {}{}",
                    r.intent.job,
                    log::chain(&e),
                    if leak { " (the CPI gave no answer: a VM may have been left behind on its host)" } else { "" }
                ));
                self.ledger.append(Event::AttemptFailed { id: id.clone(), n, reason: e.to_string() })?;
                self.tracked.record(&id).retry_at = Some(Instant::now() + create_backoff(r.failures + 1));
            }
        }
        if let Some(p) = pool {
            self.pools[p].cpi.spool_files(&format!("{id}-{n}.create_vm")).remove();
        }
        Ok(())
    }

    /// Runs delete_vm on a worker thread; `after` says what happens to the record once the VM is gone.
    pub(super) fn start_delete(&mut self, r: &Record, after: After) {
        let (Some(pool), Some(cid)) = (self.pools.named(&r.intent.pool).map(|p| p.id), r.cid.clone()) else {
            return;
        };
        let run = self.tracked.record(&r.intent.id);
        (run.after, run.busy) = (Some(after), true);
        let (caller, tx, id) = (self.caller(pool), self.tx.clone(), r.intent.id.clone());
        log::info(&format!("record={id} job={} vm={cid} delete_vm", r.intent.job));
        std::thread::spawn(move || {
            let res = caller.call(&format!("{id}.delete_vm"), "delete_vm", json!([cid])).map(|_| ());
            let _ = tx.send(Msg::Deleted { id, res });
        });
    }

    /// A delete_vm finished: a VM that is gone (or was not found) settles its record as `after` said; any
    /// other failure is retried by the next settle.
    pub(super) fn deleted(&mut self, id: String, res: Result<(), CpiError>) -> Result<(), DaemonError> {
        self.tracked.record(&id).busy = false;
        let Some(r) = self.ledger.state.open.get(&id).cloned() else {
            return Ok(());
        };
        let vm = r.cid.as_deref().unwrap_or("-");
        match res {
            Ok(()) => {}
            Err(e) if e.is_vm_not_found() => {}
            Err(e) => {
                log::warn(&format!("record={id} vm={vm} delete_vm failed: {}; will retry", log::chain(&e)));
                return Ok(());
            }
        }
        log::info(&format!("record={id} job={} vm={vm} deleted", r.intent.job));
        match self.tracked.record(&id).after.take().unwrap_or(After::Close("deleted".into())) {
            After::Close(reason) => self.close(&r, reason)?,
            After::Retry(reason) => {
                self.ledger.append(Event::AttemptFailed { id: id.clone(), n: r.attempts, reason })?;
                self.tracked.record(&id).retry_at = Some(Instant::now() + create_backoff(r.failures + 1));
            }
            After::FailJob(reason) => {
                if !r.intent.job.is_empty() {
                    self.fail_job(&r.intent.job, &r.intent.pool, &format!("agent-launcher: {reason}"));
                }
                self.close(&r, reason)?;
            }
        }
        Ok(())
    }

    /// Re-tags a VM after a warm assignment (best effort: not every CPI supports metadata).
    pub(super) fn update_metadata(&self, r: &Record) {
        let (Some(pool), Some(cid)) = (self.pools.named(&r.intent.pool), r.cid.clone()) else {
            return;
        };
        let caller = self.caller(pool.id);
        let md = metadata(&self.cfg.launcher_id, &r.intent);
        let tag = format!("{}.assign.set_vm_metadata", r.intent.id);
        std::thread::spawn(move || {
            if let Err(e) = caller.call(&tag, "set_vm_metadata", json!([cid, md])) {
                log::warn(&format!("vm={cid} set_vm_metadata failed: {}", log::chain(&e)));
            }
        });
    }

    /// Tags a VM (best effort: not every CPI supports metadata), waiting for the call.
    pub(super) fn set_metadata_now(&self, r: &Record, cid: &str, tag: &str) {
        let Some(pool) = self.pools.named(&r.intent.pool) else { return };
        let md = metadata(&self.cfg.launcher_id, &r.intent);
        if let Err(e) = self.caller(pool.id).call(tag, "set_vm_metadata", json!([cid, md])) {
            log::warn(&format!("record={} vm={cid} set_vm_metadata failed: {}", r.intent.id, log::chain(&e)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launcher::daemon::stemcells::stemcell_api_version;

    #[test]
    fn create_vm_arguments_for_a_static_ip_and_a_flavor() {
        use crate::launcher::config::testing::{config, pool};
        let p = pool(
            "p",
            r#"cloud_properties = { root_disk = 4096, cpu = 99 }
networks.n = { type = "manual", static_ips = ["10.0.0.5"], netmask = "255.255.255.0", gateway = "10.0.0.1", dns = ["10.0.0.2"], cloud_properties = { type = "user" } }
flavors.big = { cpu = 4, ram = 2048, disk = 100, cloud_properties = { nested = true } }"#,
        );
        let cfg = config("", &p);
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
        let env = Map::from_iter([("endpoint".to_string(), json!("https://agent.buildkite.com/v3"))]);
        let args = create_vm_args(&cfg.pools[0], &intent, "sc", "http://10.0.0.1:9595", &env);
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
        let api = stemcell_api_version(&cfg.pools[0], None);
        assert_eq!(create_vm_context(&cfg, api)["vm"]["stemcell"]["api_version"], 3);
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
    }
}
