//! Views for people: `agent-launcher status` (what the ledger holds) and `--dry-run` (what a poll would do).
use crate::launcher::clock::now;
use crate::launcher::config::Config;
use crate::launcher::ledger::{self, LedgerError, State};
use crate::launcher::plan::{plan, Decision, PoolInfo};
use crate::launcher::source::{JobState, Source, SourceError, Work};
use std::collections::HashSet;
use std::fmt::Write;

/// The ledger as text: stemcells, then one line per open record.
pub fn render_status(cfg: &Config, state: &State) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "launcher {} — ledger {}", cfg.launcher_id, cfg.ledger_dir.display());
    for (pool, (_, cid)) in &state.stemcells {
        let _ = writeln!(out, "stemcell  pool={pool} cid={cid}");
    }
    render_pools(cfg, &mut out);
    if state.open.is_empty() {
        let _ = writeln!(out, "no open records (no VMs)");
    }
    let t = now();
    for r in state.open.values() {
        let i = &r.intent;
        let phase = match &r.cid {
            Some(_) if i.job.is_empty() => "warm",
            Some(_) => "vm",
            None if r.attempts > r.failures => "creating",
            None => "pending",
        };
        let left = i.deadline.saturating_sub(t);
        let _ = writeln!(
            out,
            "{phase:<8}  record={} job={} pool={} flavor={} vm={} ip={} attempts={} failures={} deadline_in={}m{}",
            i.id,
            if i.job.is_empty() { "-" } else { &i.job },
            i.pool,
            i.flavor,
            r.cid.as_deref().unwrap_or("-"),
            i.ip.as_deref().unwrap_or("-"),
            r.attempts,
            r.failures,
            left / 60,
            r.last_failure.as_ref().map(|f| format!(" last_failure={f:?}")).unwrap_or_default()
        );
    }
    // a CPI's error text (last_failure, a breaker's reason) may echo a VM's secret
    let mut secrets = crate::common::redact::Redactor::new();
    state.open.values().for_each(|r| secrets.add(&r.intent.secret));
    secrets.redact(&out)
}

/// The running launcher's breakers and host power, one line per pool (none before its first poll).
fn render_pools(cfg: &Config, out: &mut String) {
    let Some(pools) = std::fs::read_to_string(cfg.ledger_dir.join(crate::launcher::daemon::POOLS_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    else {
        return;
    };
    for p in &cfg.pools {
        let b = &pools["pools"][&p.name];
        let Some(g) = b["breaker"].as_str() else { continue };
        let _ = write!(out, "pool      {} breaker={g}", p.name);
        if g == "open" {
            let _ = write!(out, " next_probe_in={}s", b["next_probe_in_seconds"]);
        }
        if let Some(pw) = b["power"].as_str().filter(|p| *p != "unmanaged") {
            let _ = write!(out, " power={pw}");
        }
        if let Some(r) = b["reason"].as_str().filter(|r| !r.is_empty()) {
            let _ = write!(out, " reason={r:?}");
        }
        let _ = writeln!(out);
    }
}

pub fn status(cfg: &Config) -> Result<String, LedgerError> {
    Ok(render_status(cfg, &ledger::read(&cfg.ledger_dir)?))
}

/// One poll without side effects: lists jobs and states (read-only calls) and says what would be done. No CPI
/// call and no reservation. A source that lists only once registered (the Stacks API answers 404 when no
/// launcher runs) is registered for the dry run and deregistered after it.
pub fn dry_run(cfg: &Config, source: &mut dyn Source) -> Result<Vec<String>, DryRunError> {
    source.read_only();
    match dry_run_once(cfg, source) {
        Err(DryRunError::Source(e)) if e.is_not_found() => {
            source.register()?;
            let out = dry_run_once(cfg, source);
            let gone = source.deregister();
            let mut out = out?;
            gone?;
            out.insert(0, format!("{} was not registered (no launcher running): registered for this dry run and deregistered after it", source.describe()));
            Ok(out)
        }
        r => r,
    }
}

fn dry_run_once(cfg: &Config, source: &mut dyn Source) -> Result<Vec<String>, DryRunError> {
    let state = ledger::read(&cfg.ledger_dir)?;
    let names: Vec<String> = state.open.values().map(|r| format!("{}-{}", r.intent.pool, r.intent.id)).collect();
    let work: Vec<Work<'_>> = state
        .open
        .values()
        .zip(&names)
        .filter(|(r, _)| !r.intent.job.is_empty())
        .map(|(r, name)| Work { job: &r.intent.job, agent_name: name, agent_tags: &r.intent.agent_tags })
        .collect();
    let states = if work.is_empty() { Default::default() } else { source.states(&work)? };
    let mut out = Vec::new();
    let t = now();
    for r in state.open.values() {
        let st = JobState::of(&states, &r.intent.job);
        let Some(cid) = &r.cid else { continue };
        if st.is_finished() {
            out.push(format!("would delete_vm vm={cid} record={} job={} (job {})", r.intent.id, r.intent.job, st.name));
        } else if t > r.intent.deadline {
            out.push(format!(
                "would delete_vm vm={cid} record={} job={} (past its lifetime)",
                r.intent.id, r.intent.job
            ));
        }
    }
    let listing = source.list()?;
    if listing.paused {
        out.push("queue is paused: would start nothing".into());
    }
    let infos: Vec<PoolInfo> = cfg.pools.iter().map(PoolInfo::new).collect();
    for d in plan(cfg, &infos, &state, &HashSet::new(), &listing, &HashSet::new()) {
        would(cfg, &d, &mut out);
    }
    Ok(out)
}

/// What a decision would do, as lines of the dry run.
fn would(cfg: &Config, d: &Decision, out: &mut Vec<String>) {
    let (job, pool) = (&d.job().id, &cfg.pools[d.pool()].name);
    match d {
        Decision::Assign { record, .. } => {
            out.push(format!("would reserve job={job} pool={pool} and assign it to warm VM record={record}"))
        }
        Decision::Start { flavor, ip, .. } => {
            out.push(format!("would reserve job={job} pool={pool} flavor={flavor}"));
            out.push(format!(
                "would create_vm job={job} pool={pool} flavor={flavor} ip={}",
                ip.as_deref().unwrap_or("-")
            ));
        }
        Decision::Refuse { reason, .. } => {
            out.push(format!("would reserve job={job} pool={pool} and finish it with -1: {reason}"))
        }
        Decision::Wait { reason, .. } => out.push(format!("would wait job={job} pool={pool} ({reason})")),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DryRunError {
    #[error("ledger")]
    Ledger(#[from] LedgerError),
    #[error("the CI source")]
    Source(#[from] SourceError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launcher::ledger::{Intent, Record};

    /// A CPI error that echoed a VM's secret (its last failure) is shown without the secret.
    #[test]
    fn status_redacts_the_secrets_of_open_records() {
        use crate::launcher::config::testing::{config, pool};
        let linux = pool("linux", "networks.default = { type = \"dynamic\" }\nflavors.small = { cpu = 1, ram = 512 }");
        let cfg = config("", &linux);
        let secret = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";
        let intent = Intent {
            id: "r1".into(),
            job: "j1".into(),
            pool: "linux".into(),
            flavor: "small".into(),
            cpu: 1,
            ram: 512,
            ip: None,
            deadline: 0,
            secret: secret.into(),
            agent_tags: vec![],
            at: 0,
        };
        let mut state = State::default();
        state.open.insert(
            "r1".into(),
            Record {
                intent,
                attempts: 1,
                failures: 1,
                cid: None,
                created_at: None,
                last_failure: Some(format!("create_vm: bad env {{\"secret\":\"{secret}\"}}")),
            },
        );
        let out = render_status(&cfg, &state);
        assert!(out.contains("last_failure=") && out.contains("<redacted>"), "{out}");
        assert!(!out.contains(secret), "{out}");
    }
}
