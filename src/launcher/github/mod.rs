//! GitHub Actions as the launcher's [`Source`]: one just-in-time runner on one fresh VM per queued workflow
//! job, for a repository or an organisation, on github.com or GitHub Enterprise Server.
//!
//! - [`auth`]: a fine-grained token, or a GitHub App (RS256 JWT → installation token, renewed).
//! - [`api`]: the REST client with GitHub's rules (ETags, rate limits, paced writes, no storms).
//! - [`scan`]: the queued jobs and the runners, read conditionally and within the budget.
//! - [`demand`]: which record's runner is still needed, for which queued job (GitHub has no reservations).
//! - [`webhook`]: the optional `workflow_job` webhook (HMAC-checked), which lowers latency; polling reconciles.
//! - `poll.rs`: the repositories in scope, the scans and deliveries merged into the queued jobs and the
//!   jobs the launcher's runners took; `runners.rs`: the runners list, a record's JIT config, removals.
//!
//! A record's VM is handed, at `/v1/assignment`, a JIT runner config made for it
//! (`POST …/actions/runners/generate-jitconfig`: its name `<launcher_id>-<pool>-<record>`, the runner group,
//! the pool's labels) — never in its settings or metadata. The runner runs one job and GitHub removes it; the
//! launcher removes what is left (a runner that never connected, one whose job went elsewhere or was
//! cancelled) when the record closes, and at every runners listing any runner of its own names that no open
//! record holds (after a `kill -9`, say).
pub mod api;
pub mod auth;
pub mod demand;
mod poll;
mod runners;
pub mod scan;
pub mod webhook;

use crate::launcher::config::{read_token, read_token_file, Config, ConfigError, GitHub as GhConfig};
use crate::launcher::log;
use crate::launcher::metrics::Metrics;
use crate::launcher::rules::tag_label;
use crate::launcher::server::Route;
use crate::launcher::source::{
    tidy, HttpError, JobState, Listing, Phase, ScheduledJob, Source, SourceError, Wake, Work,
};
use api::{Api, GhError};
use auth::{App, AppKey, Auth};
use demand::{decide, job_id, Queued, Rec, Spent, Verdict};
use scan::{RepoScan, RunnerInfo};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use webhook::{HookJob, Inbox};

/// Where the runners live and whose jobs they serve.
#[derive(Debug, Clone)]
enum Scope {
    Repo(String),
    Org { org: String, repos: Vec<String> },
}

/// GitHub behind the launcher's seam.
pub struct GitHub {
    api: Api,
    launcher_id: String,
    pools: Vec<String>,
    scope: Scope,
    runner_group_id: u64,
    work_folder: String,
    poll_every: Duration,
    last_refresh: Option<Instant>,
    /// `states` refreshed in this poll: `list` uses what it read.
    fresh: bool,
    repos: BTreeMap<String, RepoScan>,
    /// The repositories of an organisation scope as last listed, and when.
    discovered: Option<(Vec<String>, Instant)>,
    cursor: usize,
    /// The runners of this launcher's names, and when the list was read.
    runners: HashMap<String, RunnerInfo>,
    runners_at: Option<Instant>,
    /// Runners known to have been registered (made here, or seen listed), since when.
    registered: HashMap<String, Instant>,
    /// Runners removed (by GitHub after their job, or by the launcher).
    gone: HashSet<String>,
    /// Runners whose job is over: GitHub removes such an ephemeral runner itself (and the sweep any it left).
    done: HashSet<String>,
    /// Runners that took a job (seen busy, or removed by GitHub), since when: until the jobs lists show which
    /// job, each still holds a queued one (see [`demand`]).
    spent: HashMap<String, Instant>,
    /// The closed records whose runners took a job that the jobs lists did not show yet.
    spent_closed: Vec<Spent>,
    /// The runner names and job keys of the open records.
    live: HashSet<String>,
    held: HashSet<String>,
    live_known: bool,
    /// The queued jobs no open record claims (the listing).
    unclaimed: Vec<Queued>,
    inbox: Option<Arc<Inbox>>,
    webhook_secret: Option<Arc<Vec<u8>>>,
    hooks: HashMap<u64, (HookJob, Instant)>,
    /// Jobs whose labels cannot be served (logged once).
    unservable: HashSet<u64>,
    removed: BTreeMap<&'static str, u64>,
}

fn secret_text(file: Option<&std::path::Path>, env: Option<&str>) -> Result<String, ConfigError> {
    let s = read_token(file, env)?;
    log::add_secret(&s);
    Ok(s)
}

impl GitHub {
    /// The source the config names, with its credentials read (and registered as secrets of the log).
    pub fn open(cfg: &Config) -> Result<GitHub, ConfigError> {
        let g = cfg.github.as_ref().ok_or_else(|| ConfigError::Invalid("no [github] section".into()))?;
        let auth = match (&g.private_key_file, &g.app_id, g.installation_id) {
            (Some(key), Some(iss), Some(installation_id)) => {
                Auth::App(Box::new(App { iss: iss.clone(), installation_id, key: AppKey::read(key)?, token: None }))
            }
            _ => Auth::Token(secret_text(g.token_file.as_deref(), g.token_env.as_deref())?),
        };
        let webhook_secret = match (&g.webhook_secret_file, &g.webhook_secret_env) {
            (None, None) => None,
            (f, e) => {
                let s = match f {
                    Some(f) => read_token_file(f)?.trim().to_string(),
                    None => secret_text(None, e.as_deref())?,
                };
                if s.len() < 16 {
                    return Err(ConfigError::Invalid(
                        "github: the webhook secret is shorter than 16 characters: use a long random string".into(),
                    ));
                }
                log::add_secret(&s);
                Some(Arc::new(s.into_bytes()))
            }
        };
        Ok(GitHub::with(cfg, g, auth, webhook_secret))
    }

    fn with(cfg: &Config, g: &GhConfig, auth: Auth, webhook_secret: Option<Arc<Vec<u8>>>) -> GitHub {
        let scope = match (&g.repository, &g.organization) {
            (Some(r), _) => Scope::Repo(r.clone()),
            (None, o) => Scope::Org { org: o.clone().unwrap_or_default(), repos: g.repositories.clone() },
        };
        let api = Api::new(
            &g.api_url,
            auth,
            Duration::from_millis(g.timeout_ms),
            Duration::from_millis(g.min_write_interval_ms),
            g.max_requests_per_minute,
        );
        GitHub {
            api,
            launcher_id: cfg.launcher_id.clone(),
            pools: cfg.pools.iter().map(|p| p.name.clone()).collect(),
            scope,
            runner_group_id: g.runner_group_id,
            work_folder: g.work_folder.clone(),
            poll_every: Duration::from_millis(g.poll_interval_ms),
            last_refresh: None,
            fresh: false,
            repos: BTreeMap::new(),
            discovered: None,
            cursor: 0,
            runners: HashMap::new(),
            runners_at: None,
            registered: HashMap::new(),
            gone: HashSet::new(),
            done: HashSet::new(),
            spent: HashMap::new(),
            spent_closed: Vec::new(),
            live: HashSet::new(),
            held: HashSet::new(),
            live_known: false,
            unclaimed: Vec::new(),
            inbox: webhook_secret.as_ref().map(|_| Arc::new(Inbox::default())),
            webhook_secret,
            hooks: HashMap::new(),
            unservable: HashSet::new(),
            removed: BTreeMap::new(),
        }
    }

    /// The runner name of a record's agent name.
    fn runner_name(&self, agent_name: &str) -> String {
        format!("{}-{agent_name}", self.launcher_id)
    }

    /// Whether a runner name is one this launcher gives: `<launcher_id>-<one of its pools>-<record id>`.
    fn ours(launcher_id: &str, pools: &[String], name: &str) -> bool {
        let Some(rest) = name.strip_prefix(launcher_id).and_then(|r| r.strip_prefix('-')) else { return false };
        pools.iter().any(|p| {
            rest.strip_prefix(p.as_str()).and_then(|r| r.strip_prefix('-')).is_some_and(|record| {
                let (a, b) = record.rsplit_once('-').unwrap_or(("", ""));
                !a.is_empty()
                    && a.len() <= 8
                    && !a.contains('-')
                    && b.len() == 8
                    && b.bytes().all(|c| c.is_ascii_hexdigit())
            })
        })
    }

    fn ours_fn(&self) -> impl Fn(&str) -> bool + '_ {
        move |n: &str| GitHub::ours(&self.launcher_id, &self.pools, n)
    }

    /// The verdicts of the open records `recs`, and the queued jobs that neither they nor the runners of closed
    /// records that took a job the lists do not show yet ([`Spent`]) claim.
    fn claim<'a>(&'a self, queued: &[Queued], mut recs: Vec<Rec<'a>>) -> (Vec<Verdict>, Vec<Queued>) {
        let open = recs.len();
        recs.extend(self.spent_closed.iter().map(Spent::rec));
        let (mut verdicts, unclaimed) = decide(queued, &recs);
        verdicts.truncate(open);
        (verdicts, unclaimed)
    }

    fn runners_path(&self) -> String {
        match &self.scope {
            Scope::Repo(r) => format!("/repos/{r}/actions/runners"),
            Scope::Org { org, .. } => format!("/orgs/{org}/actions/runners"),
        }
    }
}

impl Source for GitHub {
    fn name(&self) -> &'static str {
        "github"
    }

    fn describe(&self) -> String {
        match &self.scope {
            Scope::Repo(r) => format!("GitHub repository {r} (repository runners) at {}", self.api.base()),
            Scope::Org { org, repos } => format!(
                "GitHub organisation {org} (runner group {}; repositories: {}) at {}",
                self.runner_group_id,
                if repos.is_empty() { "all the credentials can see".to_string() } else { repos.join(", ") },
                self.api.base()
            ),
        }
    }

    fn register(&mut self) -> Result<(), SourceError> {
        Ok(())
    }

    fn deregister(&mut self) -> Result<(), SourceError> {
        Ok(())
    }

    fn check(&mut self) -> Result<(), SourceError> {
        let hint = self.permission_hint();
        let with_hint = |e: GhError| -> SourceError {
            match e.status() {
                Some(401 | 403 | 404) => SourceError::new(HttpError::Invalid {
                    what: "check the credentials".into(),
                    message: format!("{} (needs {hint}, and \"Actions: read\")", log::chain(&e)),
                }),
                _ => e.into(),
            }
        };
        let runners = format!("{}?per_page=1", self.runners_path());
        self.api.get("list runners", &runners).map_err(with_hint)?;
        if let Scope::Org { org, .. } = &self.scope {
            let group = format!("/orgs/{org}/actions/runner-groups/{}", self.runner_group_id);
            self.api.get(&format!("read runner group {}", self.runner_group_id), &group).map_err(with_hint)?;
        }
        let repos = self.repo_list().map_err(with_hint)?;
        if let Some(r) = repos.first() {
            self.api
                .get(&format!("list the workflow runs of {r}"), &format!("/repos/{r}/actions/runs?per_page=1"))
                .map_err(with_hint)?;
        }
        Ok(())
    }

    fn list(&mut self) -> Result<Listing, SourceError> {
        self.drain_hooks();
        if !std::mem::take(&mut self.fresh) {
            // no open record holds a job: every queued job is demand, but for those that runners of closed
            // records took before the lists showed it
            self.refresh()?;
            self.live_known = true;
            let queued = self.queued();
            self.spent_closed.retain(|s| s.may_hold(&queued));
            self.unclaimed = self.claim(&queued, Vec::new()).1;
        }
        let unclaimed = std::mem::take(&mut self.unclaimed);
        let mut jobs: Vec<ScheduledJob> = unclaimed.iter().filter_map(|q| self.scheduled(q)).collect();
        self.unclaimed = unclaimed;
        tidy(&mut jobs);
        Ok(Listing { jobs, paused: false })
    }

    fn reserve(&mut self, ids: &[String]) -> Result<Vec<String>, SourceError> {
        // GitHub has no reservations: a VM's runner takes whichever queued job fits it (see `demand`)
        Ok(ids.to_vec())
    }

    fn reservation(&self) -> Option<Duration> {
        None
    }

    fn states(&mut self, work: &[Work<'_>]) -> Result<HashMap<String, JobState>, SourceError> {
        self.drain_hooks();
        let names: Vec<String> = work.iter().map(|w| self.runner_name(w.agent_name)).collect();
        for (w, n) in work.iter().zip(&names) {
            self.live.insert(n.clone());
            self.held.insert(w.job.to_string());
        }
        self.refresh()?;
        self.fresh = true;
        self.live_known = true;
        let queued = self.queued();
        self.spent_closed.retain(|s| s.may_hold(&queued));
        let taken = self.taken();
        let recs: Vec<Rec<'_>> = work
            .iter()
            .zip(&names)
            .map(|(w, n)| Rec {
                key: w.job,
                labels: w.agent_tags.iter().map(|t| tag_label(t).to_lowercase()).collect(),
                taken: taken.get(n),
                runner: self.seen(n),
                spent_at: self.spent.get(n).copied(),
            })
            .collect();
        let (verdicts, unclaimed) = self.claim(&queued, recs);
        self.unclaimed = unclaimed;
        let mut out = HashMap::new();
        for ((w, name), v) in work.iter().zip(&names).zip(verdicts) {
            let state = match v {
                Verdict::Started(why) => JobState { phase: Phase::Started, name: why },
                Verdict::Finished(why) => {
                    self.done.insert(name.clone());
                    JobState { phase: Phase::Finished, name: why }
                }
                Verdict::Waiting(job) => JobState {
                    phase: Phase::Queued,
                    name: if job_id(w.job) == Some(job) { "queued".into() } else { format!("queued (for job {job})") },
                },
                Verdict::Surplus(why) => match self.runners.get(name).copied() {
                    Some(r) if !self.api.read_only => match self.remove_runner(name, r.id, "surplus") {
                        Ok(true) => JobState { phase: Phase::Finished, name: format!("not needed: {why}") },
                        Ok(false) => JobState { phase: Phase::Started, name: "runner busy".into() },
                        Err(e) => {
                            log::warn(&format!("runner {name}: {}; trying again on the next poll", log::chain(&e)));
                            JobState { phase: Phase::Queued, name: "surplus, removal pending".into() }
                        }
                    },
                    _ => JobState { phase: Phase::Finished, name: format!("not needed: {why}") },
                },
            };
            out.insert(w.job.to_string(), state);
        }
        Ok(out)
    }

    fn fail(&mut self, job: &str, detail: &str) -> Result<(), SourceError> {
        log::warn(&format!(
            "job={job}: GitHub has no way for a runner manager to fail a job; it stays queued until GitHub times it out: {detail}"
        ));
        Ok(())
    }

    fn notify(&mut self, job: &str, detail: &str) -> Result<(), SourceError> {
        log::info(&format!("job={job}: {detail}"));
        Ok(())
    }

    fn vm_env(&self) -> Map<String, Value> {
        Map::from_iter([("source".to_string(), json!("github"))])
    }

    fn grant(&mut self, work: &Work<'_>) -> Result<Map<String, Value>, SourceError> {
        let name = self.runner_name(work.agent_name);
        self.live.insert(name.clone());
        self.held.insert(work.job.to_string());
        let labels: Vec<String> = work.agent_tags.iter().map(|t| tag_label(t)).collect();
        if self.last_refresh.is_none() {
            // a restart: what GitHub knows of this record's runner decides (below)
            self.refresh()?;
        }
        if let Some(t) = self.taken().get(&name) {
            log::info(&format!("runner {name} already took job {} ({}): its VM had its config", t.job, t.status));
            return Ok(Map::from_iter([
                ("source".to_string(), json!("github")),
                ("runner_name".to_string(), json!(name)),
            ]));
        }
        // a runner of that name from before (a launcher restarted): running its job, or never connected
        if let Some(r) = self.runners.get(&name).copied() {
            if r.busy || r.online {
                log::info(&format!(
                    "runner {name} is already {}: its VM has its config",
                    if r.busy { "running a job" } else { "online" }
                ));
                return Ok(Map::from_iter([
                    ("source".to_string(), json!("github")),
                    ("runner_name".to_string(), json!(name)),
                ]));
            }
            self.remove_runner(&name, r.id, "released")?;
        }
        Ok(self.mint(&name, &labels)?)
    }

    fn release(&mut self, work: &Work<'_>) -> Result<(), SourceError> {
        let name = self.runner_name(work.agent_name);
        self.live.remove(&name);
        self.held.remove(work.job);
        if let Some(at) = self.spent.remove(&name) {
            let labels = work.agent_tags.iter().map(|t| tag_label(t).to_lowercase()).collect();
            self.spent_closed.push(Spent { key: work.job.to_string(), labels, at });
        }
        if self.gone.contains(&name) || self.done.remove(&name) {
            // gone, or its job is over: GitHub removes an ephemeral runner itself, and the next runners
            // listing removes what it left (it belongs to no open record then): no write here
            return Ok(());
        }
        let id = self.runners.get(&name).map(|r| r.id);
        let id = match id {
            Some(id) => Some(id),
            None if self.registered.contains_key(&name) => self.find_runner(&name)?.map(|r| r.id),
            None => None,
        };
        match id {
            Some(id) => {
                if self.remove_runner(&name, id, "released")? {
                    log::info(&format!("runner {name} removed"));
                }
                Ok(())
            }
            None => {
                self.registered.remove(&name);
                Ok(())
            }
        }
    }

    fn routes(&self, wake: Wake) -> Vec<Route> {
        match (&self.webhook_secret, &self.inbox) {
            (Some(secret), Some(inbox)) => {
                vec![webhook::route(secret.clone(), inbox.clone(), self.scope_filter(), wake)]
            }
            _ => Vec::new(),
        }
    }

    fn metrics(&mut self, m: &mut Metrics) {
        let s = &self.api.stats;
        let req = "launcher_github_requests_total";
        for (kind, outcome, n) in [
            ("read", "ok", s.read_ok),
            ("read", "not_modified", s.not_modified),
            ("write", "ok", s.write_ok),
            ("token", "made", s.token),
            ("any", "error", s.errors),
            ("any", "held_back", s.held_back),
        ] {
            m.set(req, &[("kind", kind), ("outcome", outcome)], n as f64);
        }
        m.set("launcher_github_rate_limited_total", &[("limit", "primary")], s.limited_primary as f64);
        m.set("launcher_github_rate_limited_total", &[("limit", "secondary")], s.limited_secondary as f64);
        m.set("launcher_github_rate_limit_remaining", &[], self.api.rate.remaining.map(|r| r as f64).unwrap_or(-1.0));
        for why in ["released", "surplus", "stale"] {
            m.set(
                "launcher_github_runners_removed_total",
                &[("why", why)],
                *self.removed.get(why).unwrap_or(&0) as f64,
            );
        }
        if let Some(inbox) = &self.inbox {
            let h = inbox.stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
            for (outcome, n) in [
                ("accepted", h.accepted),
                ("ignored", h.ignored),
                ("bad_signature", h.bad_signature),
                ("malformed", h.malformed),
                ("dropped", h.dropped),
            ] {
                m.set("launcher_github_webhook_deliveries_total", &[("outcome", outcome)], n as f64);
            }
        }
    }

    fn read_only(&mut self) {
        self.api.read_only = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_names_of_this_launcher_only() {
        let pools = vec!["linux".to_string(), "gpu-big".to_string()];
        for (name, ours) in [
            ("l1-linux-3043364-0a1b2c3d", true),
            ("l1-gpu-big-warm-0a1b2c3d", true),
            ("l1-linux-30433642.2-0a1b2c3d", false),
            ("l1-linux-3043.2-0a1b2c3d", true),
            ("l1-2-linux-3043364-0a1b2c3d", false),
            ("l1-linux-3043364-0a1b2c3", false),
            ("l1-linux-3043364-0a1b2c3g", false),
            ("l1-other-3043364-0a1b2c3d", false),
            ("l10-linux-3043364-0a1b2c3d", false),
            ("my-laptop", false),
        ] {
            assert_eq!(GitHub::ours("l1", &pools, name), ours, "{name}");
        }
    }
}
