//! Reading the demand and the runners from the REST API, conditionally and within the budget.
//!
//! For each repository of the scope: the workflow runs that are `queued` and those `in_progress` (a run with
//! one job running is `in_progress` while its other jobs wait: a matrix), then the jobs of each run that may
//! hold queued jobs — a new run, a run whose `updated_at` moved, a run that had queued jobs last time, or one
//! not read for a minute. Every `GET` is conditional (a 304 costs no rate limit), repositories are read in
//! turn, and a scan that runs out of the launcher's own request budget goes on where it stopped on the next
//! poll (what was read stays in use).
use super::api::{Api, GhError};
use super::demand::{Queued, Taken};
use crate::launcher::log;
use crate::launcher::source::HttpError;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// A job as a run's jobs list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSeen {
    pub id: u64,
    pub status: String,
    pub conclusion: Option<String>,
    /// Lower case.
    pub labels: Vec<String>,
    pub runner_name: Option<String>,
    pub created_at: String,
}

/// One workflow run.
#[derive(Debug, Clone, Default)]
struct RunScan {
    updated_at: String,
    /// `updated_at` when its jobs were read.
    jobs_updated_at: Option<String>,
    jobs: Vec<JobSeen>,
    fetched: Option<Instant>,
}

/// One repository.
#[derive(Debug, Clone, Default)]
pub struct RepoScan {
    runs: BTreeMap<u64, RunScan>,
    /// When its last scan started and ended (a webhook's queued job not seen by a scan that started well after
    /// it is dropped).
    pub started: Option<Instant>,
    pub done: Option<Instant>,
}

/// How long the jobs of an `in_progress` run may go unread.
const RESCAN: Duration = Duration::from_secs(60);
/// Pages of one list read at most (runners: [`RUNNER_PAGES`]).
const MAX_PAGES: usize = 10;
/// Pages of the runners list read at most (10,000 runners).
pub const RUNNER_PAGES: usize = 100;

fn decode(what: &str, body: &str) -> Result<Value, GhError> {
    serde_json::from_str(body).map_err(|source| HttpError::Decode { what: what.into(), source }.into())
}

/// Every page of a list (`key`: the array in each page), up to [`MAX_PAGES`]; whether the list was read to
/// its end.
pub fn pages(api: &mut Api, what: &str, first: &str, key: &str) -> Result<(Vec<Value>, bool), GhError> {
    pages_up_to(api, what, first, key, MAX_PAGES)
}

fn pages_up_to(api: &mut Api, what: &str, first: &str, key: &str, max: usize) -> Result<(Vec<Value>, bool), GhError> {
    let mut items = Vec::new();
    let mut url = first.to_string();
    for page in 1..=max {
        let got = api.get(what, &url)?;
        let v = decode(what, &got.body)?;
        let arr = v[key].as_array().ok_or_else(|| HttpError::Invalid {
            what: what.into(),
            message: format!("the answer has no {key} array"),
        })?;
        items.extend(arr.iter().cloned());
        match got.next {
            Some(n) if page < max => url = n,
            Some(_) => {
                log::warn(&format!("{what}: more than {max} pages: the rest is not read"));
                return Ok((items, false));
            }
            None => break,
        }
    }
    Ok((items, true))
}

fn job_seen(j: &Value) -> Option<JobSeen> {
    Some(JobSeen {
        id: j["id"].as_u64()?,
        status: j["status"].as_str()?.to_string(),
        conclusion: j["conclusion"].as_str().map(String::from),
        labels: j["labels"].as_array()?.iter().filter_map(|l| l.as_str().map(str::to_lowercase)).collect(),
        runner_name: j["runner_name"].as_str().filter(|n| !n.is_empty()).map(String::from),
        created_at: j["created_at"].as_str().unwrap_or("").to_string(),
    })
}

impl RepoScan {
    /// Reads the repository's queued and in-progress runs and the jobs that may be queued. Stops early (Ok
    /// false) when the budget is spent; what was read is kept either way.
    pub fn scan(&mut self, api: &mut Api, repo: &str) -> Result<bool, GhError> {
        let started = Instant::now();
        let mut listed: BTreeMap<u64, String> = BTreeMap::new();
        for status in ["queued", "in_progress"] {
            if api.budget_left() < 2 {
                return Ok(false);
            }
            let what = format!("list {status} workflow runs of {repo}");
            let url = format!("/repos/{repo}/actions/runs?status={status}&per_page=100");
            let (runs, _) = pages(api, &what, &url, "workflow_runs")?;
            for r in runs {
                if let Some(id) = r["id"].as_u64() {
                    listed.insert(id, r["updated_at"].as_str().unwrap_or("").to_string());
                }
            }
        }
        // runs no longer queued or in progress are over: their jobs are no demand
        self.runs.retain(|id, _| listed.contains_key(id));
        for (id, updated_at) in listed {
            let run = self.runs.entry(id).or_default();
            run.updated_at = updated_at;
            let had_queued = run.jobs.iter().any(|j| j.status == "queued");
            let due = run.fetched.is_none()
                || run.jobs_updated_at.as_deref() != Some(run.updated_at.as_str())
                || had_queued
                || run.fetched.is_some_and(|t| t.elapsed() >= RESCAN);
            if !due {
                continue;
            }
            if api.budget_left() < 1 {
                return Ok(false);
            }
            let what = format!("list the jobs of run {id} of {repo}");
            let (jobs, _) = pages(api, &what, &format!("/repos/{repo}/actions/runs/{id}/jobs?per_page=100"), "jobs")?;
            run.jobs = jobs.iter().filter_map(job_seen).collect();
            run.jobs_updated_at = Some(run.updated_at.clone());
            run.fetched = Some(Instant::now());
        }
        self.started = Some(started);
        self.done = Some(Instant::now());
        Ok(true)
    }

    /// Its queued jobs.
    pub fn queued<'a>(&'a self, repo: &'a str) -> impl Iterator<Item = (Queued, Option<Instant>)> + 'a {
        self.runs.iter().flat_map(move |(run_id, r)| {
            r.jobs.iter().filter(|j| j.status == "queued").map(move |j| {
                (
                    Queued {
                        id: j.id,
                        run_id: *run_id,
                        repo: repo.to_string(),
                        labels: j.labels.clone(),
                        created_at: j.created_at.clone(),
                        read_at: r.fetched,
                    },
                    r.fetched,
                )
            })
        })
    }

    /// The jobs its runs show on runners whose names `ours` accepts, by runner name, with when they were read.
    pub fn taken(&self, ours: &dyn Fn(&str) -> bool, into: &mut HashMap<String, (Taken, Option<Instant>)>) {
        for r in self.runs.values() {
            for j in &r.jobs {
                let Some(name) = j.runner_name.as_deref().filter(|n| ours(n)) else { continue };
                if j.status != "in_progress" && j.status != "completed" {
                    continue;
                }
                let t = Taken { job: j.id, status: j.status.clone(), conclusion: j.conclusion.clone() };
                let keep = into.get(name).is_none_or(|(old, _)| old.status != "completed");
                if keep {
                    into.insert(name.to_string(), (t, r.fetched));
                }
            }
        }
    }

    /// When a job was last read here (for webhook events that may be newer).
    pub fn read_at(&self, job: u64) -> Option<Instant> {
        self.runs.values().find(|r| r.jobs.iter().any(|j| j.id == job)).and_then(|r| r.fetched)
    }
}

/// A runner of the scope, as the runners list shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunnerInfo {
    pub id: u64,
    pub online: bool,
    pub busy: bool,
}

/// The runners list: those whose names `ours` accepts, by name, and whether the whole list was read (a
/// runner missing from a list that was not is not gone).
pub fn runners(
    api: &mut Api,
    path: &str,
    ours: &dyn Fn(&str) -> bool,
) -> Result<(HashMap<String, RunnerInfo>, bool), GhError> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let (items, whole) =
        pages_up_to(api, "list runners", &format!("{path}{sep}per_page=100"), "runners", RUNNER_PAGES)?;
    let map = items
        .iter()
        .filter_map(|r| {
            let name = r["name"].as_str()?;
            ours(name).then(|| {
                (
                    name.to_string(),
                    RunnerInfo {
                        id: r["id"].as_u64().unwrap_or(0),
                        online: r["status"].as_str() == Some("online"),
                        busy: r["busy"].as_bool().unwrap_or(false),
                    },
                )
            })
        })
        .collect();
    Ok((map, whole))
}
