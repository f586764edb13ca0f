//! What GitHub says is wanted: the repositories in scope, their scans (in turn, within the budget) and the
//! webhook's deliveries merged into the queued jobs and the jobs the launcher's runners took.
use super::api::GhError;
use super::auth::Auth;
use super::demand::{listing_key, Queued, Taken};
use super::scan;
use super::{GitHub, Scope};
use crate::launcher::log;
use crate::launcher::rules::job_label_rules;
use crate::launcher::source::{HttpError, ScheduledJob};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a webhook's word about a job outweighs the REST scans.
const HOOK_TTL: Duration = Duration::from_secs(900);
/// A job a webhook said is queued stays demand until a scan that started this long after the delivery has
/// not seen it (the REST lists may lag the event).
const HOOK_GRACE: Duration = Duration::from_secs(30);
/// How often an organisation's repositories are listed again (when the config does not name them).
const REPOS_EVERY: Duration = Duration::from_secs(600);

impl GitHub {
    /// The repositories whose jobs the launcher serves (`owner/repo`).
    pub(super) fn repo_list(&mut self) -> Result<Vec<String>, GhError> {
        match &self.scope {
            Scope::Repo(r) => Ok(vec![r.clone()]),
            Scope::Org { org, repos } if !repos.is_empty() => Ok(repos.iter().map(|r| format!("{org}/{r}")).collect()),
            Scope::Org { org, .. } => {
                if let Some((list, at)) = &self.discovered {
                    if at.elapsed() < REPOS_EVERY {
                        return Ok(list.clone());
                    }
                }
                let org = org.clone();
                let (path, key) = match self.api.auth {
                    Auth::App(_) => ("/installation/repositories?per_page=100".to_string(), "repositories"),
                    Auth::Token(_) => (format!("/orgs/{org}/repos?per_page=100"), ""),
                };
                let items = if key.is_empty() {
                    // /orgs/{org}/repos answers a bare array
                    let got = self.api.get("list the organisation's repositories", &path)?;
                    serde_json::from_str::<Vec<Value>>(&got.body).map_err(|source| HttpError::Decode {
                        what: "list the organisation's repositories".into(),
                        source,
                    })?
                } else {
                    scan::pages(&mut self.api, "list the installation's repositories", &path, key)?.0
                };
                let prefix = format!("{}/", org.to_lowercase());
                let list: Vec<String> = items
                    .iter()
                    .filter_map(|r| r["full_name"].as_str())
                    .filter(|n| n.to_lowercase().starts_with(&prefix))
                    .map(String::from)
                    .collect();
                self.discovered = Some((list.clone(), Instant::now()));
                Ok(list)
            }
        }
    }

    /// Whether a repository (`owner/repo`, from a webhook) is served.
    pub(super) fn scope_filter(&self) -> Arc<dyn Fn(&str) -> bool + Send + Sync> {
        match &self.scope {
            Scope::Repo(r) => {
                let r = r.to_lowercase();
                Arc::new(move |repo: &str| repo.to_lowercase() == r)
            }
            Scope::Org { org, repos } => {
                let (org, repos): (String, Vec<String>) =
                    (org.to_lowercase(), repos.iter().map(|r| r.to_lowercase()).collect());
                Arc::new(move |repo: &str| {
                    let repo = repo.to_lowercase();
                    repo.split_once('/')
                        .is_some_and(|(o, r)| o == org && (repos.is_empty() || repos.iter().any(|x| x == r)))
                })
            }
        }
    }

    /// Takes the webhook's deliveries into account.
    pub(super) fn drain_hooks(&mut self) {
        if let Some(inbox) = &self.inbox {
            for (e, at) in inbox.drain() {
                let keep = match self.hooks.get(&e.id) {
                    // a late `queued` or `in_progress` does not undo a `completed`
                    Some((old, _)) => !(old.action == "completed" && e.action != "completed"),
                    None => true,
                };
                if keep {
                    self.hooks.insert(e.id, (e, at));
                }
            }
        }
        self.hooks.retain(|_, (_, at)| at.elapsed() < HOOK_TTL);
    }

    /// Reads the runners and the demand again when the last read is older than the poll interval (a minute
    /// while less than a tenth of the hourly rate limit is left).
    pub(super) fn refresh(&mut self) -> Result<(), GhError> {
        let every = if self.api.rate.low(crate::launcher::clock::now()) {
            self.poll_every.max(Duration::from_secs(60))
        } else {
            self.poll_every
        };
        if self.last_refresh.is_some_and(|t| t.elapsed() < every) {
            return Ok(());
        }
        self.last_refresh = Some(Instant::now());
        self.refresh_runners()?;
        let repos = self.repo_list()?;
        if repos.is_empty() {
            return Ok(());
        }
        self.repos.retain(|r, _| repos.contains(r));
        // every repository in turn, from where the last scan stopped, while the budget lasts
        for k in 0..repos.len() {
            let repo = &repos[(self.cursor + k) % repos.len()];
            let scan = self.repos.entry(repo.clone()).or_default();
            if !scan.scan(&mut self.api, repo)? {
                self.cursor = (self.cursor + k) % repos.len();
                return Ok(());
            }
        }
        Ok(())
    }

    /// The demand: queued jobs of the scans, with what webhooks said since.
    pub(super) fn queued(&self) -> Vec<Queued> {
        let mut by_id: BTreeMap<u64, Queued> = BTreeMap::new();
        for (repo, scan) in &self.repos {
            for (q, read_at) in scan.queued(repo) {
                // a delivery newer than the scan says the job is no longer queued
                let overruled = self
                    .hooks
                    .get(&q.id)
                    .is_some_and(|(h, at)| h.action != "queued" && read_at.is_none_or(|r| *at > r));
                if !overruled {
                    by_id.insert(q.id, q);
                }
            }
        }
        for (id, (h, at)) in &self.hooks {
            if h.action != "queued" || by_id.contains_key(id) {
                continue;
            }
            let scanned_after = self
                .repos
                .iter()
                .find(|(r, _)| r.eq_ignore_ascii_case(&h.repo))
                .and_then(|(_, s)| s.started)
                .is_some_and(|t| t > *at + HOOK_GRACE);
            let later = self.repos.values().any(|s| s.read_at(*id).is_some());
            if !scanned_after && !later {
                by_id.insert(
                    *id,
                    Queued {
                        id: *id,
                        run_id: h.run_id,
                        repo: h.repo.clone(),
                        labels: h.labels.clone(),
                        created_at: h.created_at.clone(),
                        read_at: Some(*at),
                    },
                );
            }
        }
        let mut v: Vec<Queued> = by_id.into_values().collect();
        v.sort_by(|a, b| {
            let t = |q: &Queued| crate::common::rfc3339::parse(&q.created_at).unwrap_or(0.0);
            t(a).total_cmp(&t(b)).then(a.id.cmp(&b.id))
        });
        v
    }

    /// The jobs runners of this launcher took, by runner name (scans and webhooks; the newest word wins).
    pub(super) fn taken(&self) -> HashMap<String, Taken> {
        let mut seen: HashMap<String, (Taken, Option<Instant>)> = HashMap::new();
        let ours = self.ours_fn();
        for scan in self.repos.values() {
            scan.taken(&ours, &mut seen);
        }
        for (h, at) in self.hooks.values() {
            let Some(name) = h.runner_name.as_deref().filter(|n| ours(n)) else { continue };
            if h.action != "in_progress" && h.action != "completed" {
                continue;
            }
            let newer = seen.get(name).is_none_or(|(old, read)| {
                old.status != "completed" && (h.action == "completed" || read.is_none_or(|r| *at > r))
            });
            if newer {
                let t = Taken { job: h.id, status: h.action.clone(), conclusion: h.conclusion.clone() };
                seen.insert(name.to_string(), (t, Some(*at)));
            }
        }
        seen.into_iter().map(|(k, (t, _))| (k, t)).collect()
    }

    /// The listing key of a queued job, or `None` for a job whose labels cannot be served (logged once).
    pub(super) fn scheduled(&mut self, q: &Queued) -> Option<ScheduledJob> {
        let Some(rules) = job_label_rules(&q.labels) else {
            if self.unservable.insert(q.id) {
                log::warn(&format!(
                    "job={} of {}: runs-on labels {:?} cannot be served (a * or a trailing = in a label: GitHub takes labels literally)",
                    q.id, q.repo, q.labels
                ));
            }
            return None;
        };
        Some(ScheduledJob { id: listing_key(q.id, &self.held), priority: 0, rules, scheduled_at: q.created_at.clone() })
    }
}
