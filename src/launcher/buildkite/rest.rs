//! The REST API (`/v2/organizations/{org}/builds`) with an API access token, for organisations without the
//! Stacks API. It has no reservations (two launchers may start a VM for the same job; the agent's
//! `--acquire-job` lets only one run it, the other exits 27) and no way to fail a job: a job the launcher
//! gives up on gets an error annotation on its build and is not retried by this launcher.
use super::error::BkError;
use super::http::{enc, json, Http};
use super::queue::{is_uuid_like, outgoing, Queue};
use crate::launcher::source::{tidy, HttpError, Listing, ScheduledJob};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

pub struct Rest {
    http: Http,
    base: String,
    org: String,
    lookback_hours: u32,
    max_pages: u32,
    /// Job → (pipeline slug, build number), for annotations.
    builds: HashMap<String, (String, u64)>,
}

#[derive(Deserialize)]
struct RestBuild {
    #[serde(default)]
    number: u64,
    #[serde(default)]
    pipeline: Option<RestPipeline>,
    #[serde(default)]
    jobs: Vec<RestJob>,
}

#[derive(Deserialize)]
struct RestPipeline {
    slug: String,
}

#[derive(Deserialize)]
struct RestJob {
    #[serde(default)]
    id: String,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    agent_query_rules: Vec<String>,
    /// A number in some API versions, `{"number": n}` in others.
    #[serde(default)]
    priority: Value,
    #[serde(default)]
    scheduled_at: Option<String>,
}

/// A build from the REST builds list, with what the launcher reads of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Build {
    pub number: u64,
    /// The pipeline's slug.
    pub pipeline: Option<String>,
    pub jobs: Vec<BuildJob>,
}

/// A job of a REST build.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildJob {
    pub id: String,
    /// `script`, `waiter`, `manual`, `trigger`.
    pub kind: String,
    pub state: Option<String>,
    pub rules: Vec<String>,
    /// 0 when absent or not an integer.
    pub priority: i64,
    /// Empty when absent.
    pub scheduled_at: String,
}

impl From<RestJob> for BuildJob {
    fn from(j: RestJob) -> BuildJob {
        BuildJob {
            priority: j.priority.as_i64().or_else(|| j.priority["number"].as_i64()).unwrap_or(0),
            id: j.id,
            kind: j.kind,
            state: j.state,
            rules: j.agent_query_rules,
            scheduled_at: j.scheduled_at.unwrap_or_default(),
        }
    }
}

/// Decodes a page of `GET /v2/organizations/{org}/builds` (a JSON array of builds).
pub fn decode_builds(body: &str) -> Result<Vec<Build>, BkError> {
    let builds: Vec<RestBuild> = json("list builds", body)?;
    Ok(builds
        .into_iter()
        .map(|b| Build {
            number: b.number,
            pipeline: b.pipeline.map(|p| p.slug),
            jobs: b.jobs.into_iter().map(BuildJob::from).collect(),
        })
        .collect())
}

/// The launchable jobs of REST builds (`type == "script"`, state `scheduled`, a UUID-like id), each once, in
/// [`crate::launcher::source::sort_jobs`] order. The REST API has no paused flag (`include_paused` defaults
/// to hiding those jobs).
pub fn scheduled_in(builds: &[Build]) -> Listing {
    let mut jobs: Vec<ScheduledJob> = builds
        .iter()
        .flat_map(|b| &b.jobs)
        .filter(|j| j.kind == "script" && j.state.as_deref() == Some("scheduled") && is_uuid_like(&j.id))
        .map(|j| ScheduledJob {
            id: j.id.clone(),
            priority: j.priority,
            rules: j.rules.clone(),
            scheduled_at: j.scheduled_at.clone(),
        })
        .collect();
    tidy(&mut jobs);
    Listing { jobs, paused: false }
}

/// The `rel="next"` URL of a `Link` header.
pub fn link_next(link: &str) -> Option<String> {
    link_rel(link, "next")
}

/// The URL of relation `rel` (`next`, `prev`, `last`, …) in a `Link` header.
pub fn link_rel(link: &str, rel: &str) -> Option<String> {
    let want = format!("rel=\"{rel}\"");
    link.split(',').find(|p| p.contains(&want)).and_then(|p| {
        let (a, b) = (p.find('<')?, p.find('>')?);
        (a < b).then(|| p[a + 1..b].to_string())
    })
}

/// The `page` query parameter of a URL.
fn link_page(url: &str) -> Option<u64> {
    url.split_once('?')?.1.split('&').find_map(|kv| kv.strip_prefix("page=")).and_then(|v| v.parse().ok())
}

impl Rest {
    pub fn new(cfg: &crate::launcher::config::Config, token: &str) -> Option<Rest> {
        let r = cfg.bk().rest.as_ref()?;
        Some(Rest {
            http: Http::new(format!("Bearer {token}"), Duration::from_millis(cfg.bk().timeout_ms)),
            base: r.endpoint.trim_end_matches('/').to_string(),
            org: r.organization.clone(),
            lookback_hours: r.lookback_hours,
            max_pages: cfg.bk().max_pages.max(1),
            builds: HashMap::new(),
        })
    }

    /// The builds created in the lookback window with one of `states` (all states when empty). The API lists
    /// newest first; so that the oldest jobs are not starved, page 1 is read and then, when there are more,
    /// up to `pages` pages from the oldest end (`rel="last"`, then `rel="prev"`).
    fn builds(&mut self, states: &[&str], pages: u32) -> Result<Vec<Build>, BkError> {
        let from = crate::launcher::clock::now().saturating_sub(u64::from(self.lookback_hours) * 3600);
        let mut url = format!(
            "{}/v2/organizations/{}/builds?per_page=100&created_from={}",
            self.base,
            enc(&self.org),
            enc(&crate::common::rfc3339::format(from))
        );
        for s in states {
            url.push_str(&format!("&state%5B%5D={s}"));
        }
        let first = self.http.request("list builds", "GET", &url, None)?;
        let mut out = decode_builds(&first.body)?;
        // only follow links to the same API (a Link header is data from the server)
        let same_api = |u: Option<String>| u.filter(|u| u.starts_with(&self.base));
        let mut next = same_api(first.link.as_deref().and_then(|l| link_rel(l, "last")));
        for _ in 0..pages {
            let Some(u) = next.take() else { break };
            if link_page(&u).is_some_and(|p| p <= 1) {
                break;
            }
            let r = self.http.request("list builds", "GET", &u, None)?;
            out.extend(decode_builds(&r.body)?);
            next = same_api(r.link.as_deref().and_then(|l| link_rel(l, "prev")));
        }
        for b in &out {
            if let Some(p) = &b.pipeline {
                for j in &b.jobs {
                    self.builds.insert(j.id.clone(), (p.clone(), b.number));
                }
            }
        }
        Ok(out)
    }

    /// Checks the API token (`GET /v2/access-token`) and that it may read builds.
    pub fn check_token(&mut self) -> Result<(), BkError> {
        let url = format!("{}/v2/access-token", self.base);
        let r = self.http.request("check the API token", "GET", &url, None)?;
        let v: Value = json("check the API token", &r.body)?;
        let scopes: Vec<&str> =
            v["scopes"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        if !scopes.contains(&"read_builds") {
            return Err(HttpError::Invalid {
                what: "check the API token".into(),
                message: format!("the token lacks the read_builds scope (it has: {})", scopes.join(", ")),
            }
            .into());
        }
        Ok(())
    }
}

impl Queue for Rest {
    fn register(&mut self) -> Result<(), BkError> {
        Ok(())
    }

    fn deregister(&mut self) -> Result<(), BkError> {
        Ok(())
    }

    fn list(&mut self) -> Result<Listing, BkError> {
        let builds = self.builds(&["scheduled", "running", "failing"], self.max_pages)?;
        Ok(scheduled_in(&builds))
    }

    fn reserve(&mut self, ids: &[String]) -> Result<Vec<String>, BkError> {
        Ok(ids.to_vec())
    }

    fn reserves(&self) -> bool {
        false
    }

    fn states(&mut self, ids: &[String]) -> Result<HashMap<String, String>, BkError> {
        let want: std::collections::HashSet<&String> = ids.iter().collect();
        let mut out = HashMap::new();
        for b in self.builds(&[], self.max_pages.max(5))? {
            for j in b.jobs {
                if want.contains(&j.id) {
                    if let Some(s) = j.state {
                        out.insert(j.id, s);
                    }
                }
            }
        }
        Ok(out)
    }

    fn finish(&mut self, id: &str, _exit_status: i32, detail: &str) -> Result<(), BkError> {
        self.notify(id, detail)
    }

    fn notify(&mut self, id: &str, detail: &str) -> Result<(), BkError> {
        let Some((pipeline, number)) = self.builds.get(id).cloned() else {
            return Err(HttpError::Invalid {
                what: "annotate build".into(),
                message: format!("build of job {id} is unknown"),
            }
            .into());
        };
        let url = format!(
            "{}/v2/organizations/{}/pipelines/{}/builds/{number}/annotations",
            self.base,
            enc(&self.org),
            enc(&pipeline)
        );
        let detail = outgoing(detail, 4000);
        let body = json!({"body": format!("agent-launcher, job {id}: {detail}"), "style": "error", "context": format!("agent-launcher-{id}")});
        self.http.request("annotate build", "POST", &url, Some(&body)).map(|_| ())
    }

    fn check(&mut self) -> Result<(), BkError> {
        self.check_token()
    }
}

#[cfg(test)]
mod tests {
    use super::super::queue::test_ids::{J1, J2, J3};
    use super::*;

    #[test]
    fn links_and_dates() {
        let l = r#"<https://api.buildkite.com/v2/organizations/acme/builds?page=3&per_page=100>; rel="next", <https://api.buildkite.com/v2/x?page=6>; rel="last""#;
        assert_eq!(
            link_next(l).as_deref(),
            Some("https://api.buildkite.com/v2/organizations/acme/builds?page=3&per_page=100")
        );
        assert_eq!(link_next(r#"<https://x/?page=1>; rel="first""#), None);
        let l = r#"<https://x/b?page=1&per_page=100>; rel="first", <https://x/b?per_page=100&page=2>; rel="prev", <https://x/b?page=9>; rel="last""#;
        assert_eq!(link_rel(l, "last").as_deref(), Some("https://x/b?page=9"));
        assert_eq!(link_rel(l, "prev").as_deref().and_then(link_page), Some(2));
        assert_eq!(link_rel(l, "next"), None);
        assert_eq!(link_page("https://x/b?per_page=100"), None);
    }

    #[test]
    fn decodes_rest_builds() {
        // the docs' example element, the fake's `{"number": n}` priority, a waiter and a running job
        let body = format!(
            r#"[{{"id":"f62a1b4d-0000","number":42,"state":"scheduled","created_at":"2026-01-05T10:00:00.000Z","pipeline":{{"slug":"app"}},
                 "jobs":[{{"id":"{J1}","type":"script","name":"test","state":"scheduled","agent_query_rules":["queue=vm-linux","flavor=large"],
                           "priority":0,"cluster_queue_id":"c","web_url":"https://buildkite.com/acme/app/builds/42#b632","scheduled_at":"2026-01-05T10:00:01.000Z","runnable_at":"2026-01-05T10:00:02.000Z"}},
                         {{"id":"w","type":"waiter"}}]}},
                {{"number":43,"pipeline":{{"slug":"lib"}},"jobs":[{{"id":"{J2}","type":"script","state":"scheduled","priority":{{"number":3}},"scheduled_at":"2026-01-05T10:00:09.000Z"}},
                                                              {{"id":"{J3}","type":"script","state":"running","priority":9}}]}},
                {{"number":44,"jobs":[{{"id":"{J1}","type":"script","state":"scheduled","priority":0,"scheduled_at":"2026-01-05T10:00:01.000Z"}}]}}]"#
        );
        let b = decode_builds(&body).unwrap();
        assert_eq!(b.len(), 3);
        assert_eq!((b[0].number, b[0].pipeline.as_deref(), b[0].jobs.len()), (42, Some("app"), 2));
        assert_eq!(
            b[0].jobs[1],
            BuildJob {
                id: "w".into(),
                kind: "waiter".into(),
                state: None,
                rules: vec![],
                priority: 0,
                scheduled_at: String::new()
            }
        );
        assert_eq!((b[1].jobs[0].priority, b[1].jobs[1].priority), (3, 9));
        assert_eq!(b[2].pipeline, None);
        // launchable: script + scheduled; listed once though it is on two pages; priority first
        let l = scheduled_in(&b);
        assert_eq!(l.jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), [J2, J1]);
        assert_eq!(l.jobs[1].rules, ["queue=vm-linux", "flavor=large"]);
        assert!(!l.paused);

        assert!(decode_builds("[]").unwrap().is_empty());
        assert!(decode_builds(r#"{"message":"Listing builds this deep is not supported."}"#).is_err());
        assert!(decode_builds(r#"[{"pipeline":{}}]"#).is_err());
    }
}
