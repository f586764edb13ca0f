//! Buildkite as the launcher's [`Source`]: the Stacks API (primary, one stack per queue) or the REST builds
//! list (for organisations without it), behind one [`Queue`] trait, adapted to the seam by [`Buildkite`].
//!
//! - [`http`]: the HTTP client and Buildkite's rules (retries, rate limits); [`error`]: [`BkError`].
//! - [`queue`]: the [`Queue`] trait and Buildkite's job states.
//! - [`stacks`]: the Stacks API; [`multi`]: several queues, a stack each; [`rest`]: the REST API.
//!
//! Requests carry the token only in the `Authorization` header; it never appears in a URL, an error or a
//! log line. A VM is handed the agent endpoint and the cluster agent token at `/v1/assignment`
//! ([`Source::grant`]), never in its settings.
mod error;
mod http;
mod multi;
mod queue;
mod rest;
mod stacks;

pub use error::BkError;
pub use http::{error_message, parse_retry_after, Http, Limits, Reply};
pub use multi::MultiSource;
pub use queue::{is_started, is_terminal, job_state, Queue};
pub use rest::{decode_builds, link_next, link_rel, scheduled_in, Build, BuildJob, Rest};
pub use stacks::{decode_reserve, decode_scheduled_jobs, decode_states, JobsPageOut, Stacks};

use crate::launcher::config::{Config, ConfigError, SourceKind};
use crate::launcher::log;
use crate::launcher::source::{JobState, Listing, Source, SourceError, Work};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::time::Duration;

/// Buildkite behind the launcher's seam: a [`Queue`], and what a VM's agent is handed.
pub struct Buildkite {
    queue: Box<dyn Queue>,
    /// The agent token's check per queue, when the queue itself is read with another token (REST).
    agent_checks: Vec<Stacks>,
    describe: String,
    expiry: Duration,
    agent_endpoint: String,
    agent_token: String,
}

impl Buildkite {
    /// The source the config names, with its tokens read (and registered as secrets of the log).
    pub fn open(cfg: &Config) -> Result<Buildkite, ConfigError> {
        let token = cfg.token()?;
        log::add_secret(&token);
        let stacks = cfg.queue_stacks();
        let mut agent_checks = Vec::new();
        let queue: Box<dyn Queue> = match cfg.buildkite.source {
            SourceKind::Stacks if stacks.len() > 1 => Box::new(MultiSource::new(
                stacks
                    .iter()
                    .map(|(q, key)| (q.clone(), Box::new(Stacks::for_queue(cfg, &token, q, key)) as _))
                    .collect(),
            )),
            SourceKind::Stacks => Box::new(Stacks::new(cfg, &token)),
            SourceKind::Rest => {
                let api_token = cfg.rest_token()?;
                log::add_secret(&api_token);
                agent_checks = stacks.iter().map(|(q, key)| Stacks::for_queue(cfg, &token, q, key)).collect();
                Box::new(
                    Rest::new(cfg, &api_token)
                        .ok_or_else(|| ConfigError::Invalid("no [buildkite.rest] section".into()))?,
                )
            }
        };
        let names = |f: fn(&(String, String)) -> &str| stacks.iter().map(f).collect::<Vec<_>>().join(", ");
        Ok(Buildkite {
            queue,
            agent_checks,
            describe: format!("stack {} on queue {}", names(|s| s.1.as_str()), names(|s| s.0.as_str())),
            expiry: Duration::from_secs(u64::from(cfg.buildkite.reservation_expiry_seconds)),
            agent_endpoint: cfg.agent_endpoint(),
            agent_token: token,
        })
    }
}

impl Source for Buildkite {
    fn name(&self) -> &'static str {
        "buildkite"
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn register(&mut self) -> Result<(), SourceError> {
        Ok(self.queue.register()?)
    }

    fn deregister(&mut self) -> Result<(), SourceError> {
        Ok(self.queue.deregister()?)
    }

    fn check(&mut self) -> Result<(), SourceError> {
        for s in &mut self.agent_checks {
            s.check_token()?;
        }
        Ok(self.queue.check()?)
    }

    fn list(&mut self) -> Result<Listing, SourceError> {
        Ok(self.queue.list()?)
    }

    fn reserve(&mut self, ids: &[String]) -> Result<Vec<String>, SourceError> {
        Ok(self.queue.reserve(ids)?)
    }

    fn reservation(&self) -> Option<Duration> {
        self.queue.reserves().then_some(self.expiry)
    }

    fn states(&mut self, work: &[Work<'_>]) -> Result<HashMap<String, JobState>, SourceError> {
        let ids: Vec<String> = work.iter().filter(|w| !w.job.is_empty()).map(|w| w.job.to_string()).collect();
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        Ok(self.queue.states(&ids)?.into_iter().map(|(id, s)| (id, job_state(s))).collect())
    }

    fn fail(&mut self, job: &str, detail: &str) -> Result<(), SourceError> {
        Ok(self.queue.finish(job, -1, detail)?)
    }

    fn notify(&mut self, job: &str, detail: &str) -> Result<(), SourceError> {
        Ok(self.queue.notify(job, detail)?)
    }

    fn vm_env(&self) -> Map<String, Value> {
        Map::from_iter([("endpoint".to_string(), json!(self.agent_endpoint))])
    }

    fn grant(&mut self, _work: &Work<'_>) -> Result<Map<String, Value>, SourceError> {
        // every agent of the cluster queue runs with the cluster's agent token
        Ok(Map::from_iter([
            ("endpoint".to_string(), json!(self.agent_endpoint)),
            ("token".to_string(), json!(self.agent_token)),
        ]))
    }

    fn release(&mut self, _work: &Work<'_>) -> Result<(), SourceError> {
        // an agent started with --acquire-job disconnects when its job ends: nothing is left registered
        Ok(())
    }
}
