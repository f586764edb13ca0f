//! The launcher's runners on GitHub: the list (and the removal of those no open record holds), a record's
//! JIT runner config, the removal of one runner.
use super::api::{self, GhError};
use super::demand::Seen;
use super::scan::{self, RunnerInfo};
use super::{GitHub, Scope};
use crate::launcher::log;
use crate::launcher::source::HttpError;
use serde_json::{json, Map, Value};
use std::time::Instant;

impl GitHub {
    /// Reads the runners list; runners of this launcher's names that no open record holds are removed.
    pub(super) fn refresh_runners(&mut self) -> Result<(), GhError> {
        let at = Instant::now();
        let path = self.runners_path();
        let (launcher_id, pools) = (self.launcher_id.clone(), self.pools.clone());
        let (listed, whole) = scan::runners(&mut self.api, &path, &|n| GitHub::ours(&launcher_id, &pools, n))?;
        if !whole {
            // a runner not among the pages read may well be there: nothing is concluded from its absence
            for (name, r) in listed {
                self.registered.entry(name.clone()).or_insert(at);
                if r.busy && self.live.contains(&name) {
                    self.spent.entry(name.clone()).or_insert(at);
                }
                self.runners.insert(name, r);
            }
            return Ok(());
        }
        for (name, since) in &self.registered {
            if *since < at && !listed.contains_key(name) {
                // GitHub removed it (an ephemeral runner goes after its job)
                self.gone.insert(name.clone());
                if self.live.contains(name) {
                    self.spent.entry(name.clone()).or_insert(at);
                }
            }
        }
        for (name, r) in &listed {
            self.registered.entry(name.clone()).or_insert(at);
            self.gone.remove(name);
            if r.busy && self.live.contains(name) {
                self.spent.entry(name.clone()).or_insert(at);
            }
        }
        self.runners = listed;
        self.runners_at = Some(at);
        if self.live_known && !self.api.read_only {
            let stale: Vec<(String, u64)> = self
                .runners
                .iter()
                .filter(|(n, r)| !self.live.contains(*n) && !r.busy)
                .map(|(n, r)| (n.clone(), r.id))
                .collect();
            for (name, id) in stale {
                log::info(&format!("runner {name} (id {id}) belongs to no open record: removing it"));
                self.remove_runner(&name, id, "stale")?;
            }
        }
        Ok(())
    }

    /// Deletes a runner registration; Ok(false) when GitHub refuses because it runs a job.
    pub(super) fn remove_runner(&mut self, name: &str, id: u64, why: &'static str) -> Result<bool, GhError> {
        let path = format!("{}/{id}", self.runners_path());
        let (status, body) = self.api.write(&format!("remove runner {name}"), "DELETE", &path, None)?;
        match status {
            200..=299 | 404 => {
                self.runners.remove(name);
                self.registered.remove(name);
                self.gone.insert(name.to_string());
                *self.removed.entry(why).or_default() += 1;
                Ok(true)
            }
            409 | 422 => {
                log::info(&format!("runner {name}: GitHub keeps it ({}): it runs a job", api::error_message(&body)));
                Ok(false)
            }
            _ => Err(HttpError::Status {
                what: format!("remove runner {name}"),
                status,
                message: api::error_message(&body),
            }
            .into()),
        }
    }

    /// What the runners list says of a runner.
    pub(super) fn seen(&self, name: &str) -> Seen {
        if self.gone.contains(name) {
            return Seen::Gone;
        }
        match self.runners.get(name) {
            Some(r) if r.busy => Seen::Busy,
            Some(_) => Seen::Idle,
            None => match (self.registered.get(name), self.runners_at) {
                (Some(since), Some(at)) if at > *since => Seen::Gone,
                _ => Seen::None,
            },
        }
    }

    /// Makes a JIT runner config for a record.
    pub(super) fn mint(&mut self, name: &str, labels: &[String]) -> Result<Map<String, Value>, GhError> {
        let path = format!("{}/generate-jitconfig", self.runners_path());
        let body = json!({"name": name, "runner_group_id": self.runner_group_id, "labels": labels, "work_folder": self.work_folder});
        let what = format!("make the JIT runner config of {name}");
        let mut conflict_seen = false;
        loop {
            let (status, text) = self.api.write(&what, "POST", &path, Some(&body))?;
            match status {
                200 | 201 => {
                    let v: Value = serde_json::from_str(&text)
                        .map_err(|source| HttpError::Decode { what: what.clone(), source })?;
                    let cfg = v["encoded_jit_config"].as_str().filter(|c| !c.is_empty()).ok_or_else(|| {
                        HttpError::Invalid {
                            what: what.clone(),
                            message: "the answer has no encoded_jit_config".into(),
                        }
                    })?;
                    log::add_secret(cfg);
                    let id = v["runner"]["id"].as_u64().unwrap_or(0);
                    self.registered.insert(name.to_string(), Instant::now());
                    self.gone.remove(name);
                    self.done.remove(name);
                    self.spent.remove(name);
                    self.runners.remove(name);
                    log::info(&format!("runner {name} (id {id}) registered with labels {}", labels.join(",")));
                    return Ok(Map::from_iter([
                        ("source".to_string(), json!("github")),
                        ("jitconfig".to_string(), json!(cfg)),
                        ("runner_name".to_string(), json!(name)),
                        ("runner_id".to_string(), json!(id)),
                        ("labels".to_string(), json!(labels)),
                    ]));
                }
                // a runner of that name exists (a create whose answer was lost): it is ours and unused
                409 if !conflict_seen => {
                    conflict_seen = true;
                    let found = self.find_runner(name)?;
                    match found {
                        Some(r) if r.busy => {
                            return Err(HttpError::Invalid {
                                what,
                                message: "a runner of that name already runs a job".into(),
                            }
                            .into())
                        }
                        Some(r) => {
                            self.remove_runner(name, r.id, "released")?;
                        }
                        None => {}
                    }
                }
                s => {
                    let hint = match s {
                        403 | 404 => format!(
                            " (the credentials need {}; and runner_group_id {} must exist)",
                            self.permission_hint(),
                            self.runner_group_id
                        ),
                        _ => String::new(),
                    };
                    return Err(HttpError::Status {
                        what,
                        status: s,
                        message: format!("{}{hint}", api::error_message(&text)),
                    }
                    .into());
                }
            }
        }
    }

    /// A runner by name (`?name=`).
    pub(super) fn find_runner(&mut self, name: &str) -> Result<Option<RunnerInfo>, GhError> {
        let path = format!("{}?name={name}", self.runners_path());
        let (found, _) = scan::runners(&mut self.api, &path, &|n| n == name)?;
        Ok(found.get(name).copied())
    }

    pub(super) fn permission_hint(&self) -> &'static str {
        match self.scope {
            Scope::Repo(_) => {
                "the repository permission \"Administration: read and write\" (App or fine-grained token)"
            }
            Scope::Org { .. } => "the organisation permission \"Self-hosted runners: read and write\"",
        }
    }
}
