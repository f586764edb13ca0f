//! The Stacks API (`/v3/stacks/...`, part of the agent API) with a cluster agent token: register a stack,
//! list its queue's scheduled jobs, reserve them, read their states, finish a job, post notifications.
use super::error::BkError;
use super::http::{enc, json, Http};
use super::queue::{is_uuid_like, outgoing, Queue};
use crate::launcher::source::{tidy, HttpError, Listing, ScheduledJob};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

/// One stack serving one queue.
pub struct Stacks {
    http: Http,
    base: String,
    key: String,
    queue: String,
    page_size: u32,
    max_pages: u32,
    expiry: u32,
    metadata: Value,
}

#[derive(Deserialize)]
struct StacksJob {
    id: String,
    #[serde(default)]
    priority: i64,
    #[serde(default)]
    agent_query_rules: Vec<String>,
    #[serde(default)]
    scheduled_at: String,
}

#[derive(Deserialize, Default)]
struct PageInfo {
    #[serde(default)]
    has_next_page: bool,
    #[serde(default)]
    end_cursor: Option<String>,
}

/// The queue's paused flag: `dispatch_paused` (the API's name), `paused` (stacksapi's), either, both or
/// neither (and `null`); unknown fields are ignored.
#[derive(Deserialize, Default)]
struct ClusterQueue {
    #[serde(default)]
    dispatch_paused: Option<bool>,
    #[serde(default)]
    paused: Option<bool>,
}

impl ClusterQueue {
    fn is_paused(&self) -> bool {
        self.dispatch_paused.unwrap_or(false) || self.paused.unwrap_or(false)
    }
}

#[derive(Deserialize)]
struct JobsPage {
    jobs: Vec<StacksJob>,
    #[serde(default)]
    page_info: PageInfo,
    #[serde(default)]
    cluster_queue: Option<ClusterQueue>,
}

/// One page of `GET stacks/{key}/scheduled-jobs`.
#[derive(Debug, Clone, Default)]
pub struct JobsPageOut {
    /// The page's jobs with a UUID-like id, each once, in [`crate::launcher::source::sort_jobs`] order;
    /// `paused` is the queue's flag.
    pub listing: Listing,
    /// The cursor of the next page, when there is one.
    pub next: Option<String>,
}

/// Decodes one page of scheduled jobs (the paused flag as `dispatch_paused` or `paused`).
pub fn decode_scheduled_jobs(body: &str) -> Result<JobsPageOut, BkError> {
    let page: JobsPage = json("list scheduled jobs", body)?;
    let mut jobs: Vec<ScheduledJob> = page
        .jobs
        .into_iter()
        .filter(|j| is_uuid_like(&j.id))
        .map(|j| ScheduledJob {
            id: j.id,
            priority: j.priority,
            rules: j.agent_query_rules,
            scheduled_at: j.scheduled_at,
        })
        .collect();
    tidy(&mut jobs);
    let next = match (page.page_info.has_next_page, page.page_info.end_cursor) {
        (true, Some(c)) => Some(c),
        _ => None,
    };
    let paused = page.cluster_queue.as_ref().is_some_and(ClusterQueue::is_paused);
    Ok(JobsPageOut { listing: Listing { jobs, paused }, next })
}

/// Decodes a `batch-reserve` answer: the ids that are now ours (`not_reserved` is ignored).
pub fn decode_reserve(body: &str) -> Result<Vec<String>, BkError> {
    #[derive(Deserialize)]
    struct Reserved {
        #[serde(default)]
        reserved: Vec<String>,
    }
    Ok(json::<Reserved>("reserve jobs", body)?.reserved)
}

/// Decodes a `get-states` answer: job id → state.
pub fn decode_states(body: &str) -> Result<HashMap<String, String>, BkError> {
    #[derive(Deserialize)]
    struct States {
        #[serde(default)]
        states: HashMap<String, String>,
    }
    Ok(json::<States>("get job states", body)?.states)
}

impl Stacks {
    /// The stack of the config's first queue.
    pub fn new(cfg: &crate::launcher::config::Config, token: &str) -> Stacks {
        let (queue, key) = cfg.queue_stacks().swap_remove(0);
        Stacks::for_queue(cfg, token, &queue, &key)
    }

    /// The stack `key` serving `queue`.
    pub fn for_queue(cfg: &crate::launcher::config::Config, token: &str, queue: &str, key: &str) -> Stacks {
        let b = cfg.bk();
        Stacks {
            http: Http::new(format!("Token {token}"), Duration::from_millis(b.timeout_ms)),
            base: b.endpoint.trim_end_matches('/').to_string(),
            key: key.to_string(),
            queue: queue.to_string(),
            page_size: b.page_size,
            max_pages: b.max_pages,
            expiry: b.reservation_expiry_seconds,
            metadata: json!({"launcher_id": cfg.launcher_id, "pools": cfg.pools.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(",")}),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/stacks/{}{}", self.base, enc(&self.key), path)
    }

    /// Checks the agent token against the API without side effects (`GET metrics/queue` of the queue).
    pub fn check_token(&mut self) -> Result<(), BkError> {
        let url = format!("{}/metrics/queue?name={}", self.base, enc(&self.queue));
        self.http.request("check the agent token", "GET", &url, None).map(|_| ())
    }
}

impl Queue for Stacks {
    fn register(&mut self) -> Result<(), BkError> {
        let url = format!("{}/stacks/register", self.base);
        let body = json!({"key": self.key, "type": "custom", "queue_key": self.queue, "metadata": self.metadata});
        self.http.request("register stack", "POST", &url, Some(&body)).map(|_| ())
    }

    fn deregister(&mut self) -> Result<(), BkError> {
        let url = self.url("/deregister");
        self.http.request("deregister stack", "POST", &url, None).map(|_| ())
    }

    fn list(&mut self) -> Result<Listing, BkError> {
        let mut out = Listing::default();
        let mut after: Option<String> = None;
        for _ in 0..self.max_pages.max(1) {
            let mut url =
                format!("{}?queue_key={}&limit={}", self.url("/scheduled-jobs"), enc(&self.queue), self.page_size);
            if let Some(a) = &after {
                url.push_str(&format!("&after={}", enc(a)));
            }
            let r = self.http.request("list scheduled jobs", "GET", &url, None)?;
            let page = decode_scheduled_jobs(&r.body)?;
            out.paused |= page.listing.paused;
            out.jobs.extend(page.listing.jobs);
            match page.next {
                Some(c) => after = Some(c),
                None => break,
            }
        }
        // pages are not a snapshot: a job can show up twice
        tidy(&mut out.jobs);
        Ok(out)
    }

    fn reserve(&mut self, ids: &[String]) -> Result<Vec<String>, BkError> {
        let mut reserved = Vec::new();
        for chunk in ids.chunks(1000) {
            let body = json!({"job_uuids": chunk, "reservation_expiry_seconds": self.expiry});
            let url = self.url("/scheduled-jobs/batch-reserve");
            // the HTTP layer already repeats a reserve whose answer was lost (reserving again is idempotent
            // for the same stack); a last ambiguous failure is reconciled by the daemon on its next poll
            let r = self.http.request("reserve jobs", "PUT", &url, Some(&body))?;
            reserved.extend(decode_reserve(&r.body)?);
        }
        Ok(reserved)
    }

    fn states(&mut self, ids: &[String]) -> Result<HashMap<String, String>, BkError> {
        let mut out = HashMap::new();
        for chunk in ids.chunks(1000) {
            let url = self.url("/jobs/get-states");
            let r = self.http.request("get job states", "POST", &url, Some(&json!({"job_uuids": chunk})))?;
            out.extend(decode_states(&r.body)?);
        }
        Ok(out)
    }

    fn finish(&mut self, id: &str, exit_status: i32, detail: &str) -> Result<(), BkError> {
        if !is_uuid_like(id) {
            return Err(HttpError::Invalid { what: "finish job".into(), message: format!("bad job id {id:?}") }.into());
        }
        let detail = outgoing(detail, 4000);
        let url = self.url(&format!("/jobs/{}/finish", enc(id)));
        let body = json!({"exit_status": exit_status, "detail": detail});
        match self.http.request("finish job", "POST", &url, Some(&body)) {
            // finished already (at most once per job): nothing left to do
            Err(e) if e.status() == Some(422) => Ok(()),
            r => r.map(|_| ()),
        }
    }

    fn notify(&mut self, id: &str, detail: &str) -> Result<(), BkError> {
        let detail = outgoing(detail, 256);
        let url = self.url("/notifications");
        let body = json!({"notifications": [{"job_uuid": id, "detail": detail}]});
        self.http.request("post notification", "POST", &url, Some(&body)).map(|_| ())
    }

    fn check(&mut self) -> Result<(), BkError> {
        self.check_token()
    }
}

#[cfg(test)]
mod tests {
    use super::super::queue::test_ids::{J1, J2, J3};
    use super::*;

    fn ids(l: &Listing) -> Vec<&str> {
        l.jobs.iter().map(|j| j.id.as_str()).collect()
    }

    #[test]
    fn decodes_a_scheduled_jobs_page() {
        // the shape of the docs' table and of tests/launcher/fake_bk.rs, plus a duplicate and a bad id
        let body = format!(
            r#"{{"jobs":[
              {{"id":"{J2}","priority":0,"agent_query_rules":["queue=vm-linux"],"scheduled_at":"2026-01-05T10:00:02.000Z","pipeline":{{"slug":"app","uuid":"u"}},"build":{{"uuid":"b","number":42,"branch":"main"}},"step":{{"key":"test"}}}},
              {{"id":"{J1}","priority":5,"agent_query_rules":["queue=vm-linux","flavor=large"],"scheduled_at":"2026-01-05T10:00:03.000Z"}},
              {{"id":"{J3}","priority":0,"agent_query_rules":[],"scheduled_at":"2026-01-05T10:00:01.000Z"}},
              {{"id":"../etc","priority":9}},
              {{"id":"{J2}","priority":0,"scheduled_at":"2026-01-05T10:00:02.000Z"}}],
             "page_info":{{"has_next_page":true,"end_cursor":"1000"}},"cluster_queue":{{"id":"q","dispatch_paused":false}}}}"#
        );
        let p = decode_scheduled_jobs(&body).unwrap();
        assert_eq!(ids(&p.listing), [J1, J3, J2]);
        assert_eq!(p.listing.jobs[0].rules, ["queue=vm-linux", "flavor=large"]);
        assert!(!p.listing.paused);
        assert_eq!(p.next.as_deref(), Some("1000"));

        // last page; stacksapi's `paused` spelling; fields absent
        let p = decode_scheduled_jobs(&format!(r#"{{"jobs":[{{"id":"{J1}"}}],"page_info":{{"has_next_page":false,"end_cursor":"9"}},"cluster_queue":{{"paused":true}}}}"#)).unwrap();
        assert!(p.listing.paused && p.next.is_none());
        assert_eq!(
            p.listing.jobs[0],
            ScheduledJob { id: J1.into(), priority: 0, rules: vec![], scheduled_at: String::new() }
        );
        assert!(decode_scheduled_jobs(r#"{"jobs":[],"page_info":{"has_next_page":true}}"#).unwrap().next.is_none());
        // both spellings in one reply (a serde alias made that a "duplicate field" error), null, unknown fields
        for (cq, paused) in [
            (r#"{"dispatch_paused":false,"paused":false}"#, false),
            (r#"{"dispatch_paused":true,"paused":true}"#, true),
            (r#"{"dispatch_paused":false,"paused":true}"#, true),
            (r#"{"dispatch_paused":null,"id":"q","new_field":{"x":1}}"#, false),
            ("null", false),
        ] {
            let p = decode_scheduled_jobs(&format!(r#"{{"jobs":[],"cluster_queue":{cq},"extra":[1]}}"#))
                .unwrap_or_else(|e| panic!("{cq}: {e:?}"));
            assert_eq!(p.listing.paused, paused, "{cq}");
        }

        for bad in [
            "",
            "{}",
            "[]",
            r#"{"message":"Authentication required"}"#,
            r#"{"jobs":[{"priority":1}]}"#,
            r#"{"jobs":[{"id":7}]}"#,
        ] {
            assert!(matches!(decode_scheduled_jobs(bad), Err(BkError::Http(HttpError::Decode { .. }))), "{bad}");
        }
    }

    #[test]
    fn decodes_reserve_and_states() {
        let r = decode_reserve(&format!(r#"{{"reserved":["{J1}","{J2}"],"not_reserved":["{J3}"]}}"#)).unwrap();
        assert_eq!(r, [J1, J2]);
        assert!(decode_reserve(r#"{"not_reserved":[]}"#).unwrap().is_empty());
        assert!(decode_reserve(r#"{"reserved":[1]}"#).is_err());
        assert!(decode_reserve("").is_err());

        let s = decode_states(&format!(r#"{{"states":{{"{J1}":"running","{J2}":"canceled"}}}}"#)).unwrap();
        assert_eq!((s[J1].as_str(), s[J2].as_str(), s.len()), ("running", "canceled", 2));
        assert!(decode_states("{}").unwrap().is_empty());
        assert!(decode_states(r#"{"states":{"x":null}}"#).is_err());
        assert!(decode_states(r#"{"states":[]}"#).is_err());
    }
}
