//! Buildkite queue sources: the Stacks API (primary) and the REST builds list (for organisations without it).
//!
//! Both implement [`Source`]. Requests carry the token only in the `Authorization` header; it never appears in
//! a URL, an error or a log line. 5xx answers and transport errors are retried a few times with a short
//! backoff; a 429 or an exhausted `RateLimit-Remaining` becomes [`BkError::RateLimited`] with the wait the
//! server asked for, which the daemon honours before its next request.
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum BkError {
    #[error("{what}: request failed")]
    Http { what: String, source: Box<ureq::Error> },
    /// No (whole) answer within the timeout: the server may or may not have done what was asked.
    #[error("{what}: timed out")]
    Timeout { what: String, source: Box<ureq::Error> },
    #[error("{what}: HTTP {status}: {message}")]
    Status { what: String, status: u16, message: String },
    #[error("{what}: rate limited, retry in {} ms", retry_after.as_millis())]
    RateLimited { what: String, retry_after: Duration },
    #[error("{what}: unexpected response")]
    Decode { what: String, source: serde_json::Error },
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
}

impl BkError {
    fn transport(what: &str, e: ureq::Error) -> BkError {
        match e {
            ureq::Error::Timeout(_) => BkError::Timeout { what: what.into(), source: Box::new(e) },
            e => BkError::Http { what: what.into(), source: Box::new(e) },
        }
    }

    /// Whether the server may have carried out the request although no answer was read (a timeout, a broken
    /// connection, a 5xx): a reservation may then exist that the launcher has not seen.
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, BkError::Timeout { .. } | BkError::Http { .. })
            || matches!(self, BkError::Status { status, .. } if *status >= 500)
    }

    /// How long to wait before the next request, when the server said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            BkError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// A job waiting for an agent.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledJob {
    pub id: String,
    pub priority: i64,
    pub rules: Vec<String>,
    /// RFC 3339, as Buildkite sends it.
    pub scheduled_at: String,
}

/// One poll's view of the queue.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub jobs: Vec<ScheduledJob>,
    pub paused: bool,
}

/// Where work comes from and where its outcome goes.
pub trait Source: Send {
    fn register(&mut self) -> Result<(), BkError>;
    fn deregister(&mut self) -> Result<(), BkError>;
    /// Scheduled jobs, highest priority first, then oldest first.
    fn list(&mut self) -> Result<Listing, BkError>;
    /// Reserves jobs; returns the ones that are now ours.
    fn reserve(&mut self, ids: &[String]) -> Result<Vec<String>, BkError>;
    /// Current states (`scheduled`, `running`, `passed`, `canceled`, …); unknown jobs are absent.
    fn states(&mut self, ids: &[String]) -> Result<HashMap<String, String>, BkError>;
    /// Fails a job the launcher could not run; the detail is shown on the build page.
    fn finish(&mut self, id: &str, exit_status: i32, detail: &str) -> Result<(), BkError>;
    /// Posts a short message to the job on the build page.
    fn notify(&mut self, id: &str, detail: &str) -> Result<(), BkError>;
}

/// Job states after which a job's VM has nothing left to do.
pub fn is_terminal(state: &str) -> bool {
    matches!(
        state,
        "passed"
            | "failed"
            | "canceled"
            | "timed_out"
            | "skipped"
            | "broken"
            | "expired"
            | "finished"
            | "not_run"
            | "waiting_failed"
            | "blocked_failed"
            | "unblocked_failed"
    )
}

/// Job states in which an agent has taken the job.
pub fn is_started(state: &str) -> bool {
    matches!(state, "assigned" | "accepted" | "running" | "canceling" | "timing_out") || is_terminal(state)
}

/// A job's age for sorting: the instant of its `scheduled_at`; a missing or unreadable time counts as the
/// oldest (so such a job is not starved). `f64::total_cmp` keeps the order total.
struct Age(Option<f64>);

impl PartialEq for Age {
    fn eq(&self, other: &Age) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Age {}

impl PartialOrd for Age {
    fn partial_cmp(&self, other: &Age) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Age {
    fn cmp(&self, other: &Age) -> std::cmp::Ordering {
        match (self.0, other.0) {
            (Some(a), Some(b)) => a.total_cmp(&b),
            (a, b) => a.is_some().cmp(&b.is_some()),
        }
    }
}

/// Sorts jobs: priority descending, then scheduled_at ascending (as instants, not as strings:
/// `10:00:01Z` is older than `10:00:01.500Z`), then by the text and the id so that the order is total.
pub fn sort_jobs(jobs: &mut [ScheduledJob]) {
    jobs.sort_by_cached_key(|j| {
        (
            std::cmp::Reverse(j.priority),
            Age(crate::rfc3339::parse(&j.scheduled_at)),
            j.scheduled_at.clone(),
            j.id.clone(),
        )
    });
}

/// Drops jobs listed twice (pages are not a snapshot; the first sighting wins), then sorts.
fn tidy(jobs: &mut Vec<ScheduledJob>) {
    let mut seen = std::collections::HashSet::new();
    jobs.retain(|j| seen.insert(j.id.clone()));
    sort_jobs(jobs);
}

fn is_uuid_like(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// Percent-encodes a query or path value (RFC 3986 unreserved characters pass; `.` too is encoded, as Rails wants).
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'~' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An HTTP client with Buildkite's retry and rate-limit rules.
pub struct Http {
    agent: ureq::Agent,
    auth: String,
    not_before: Option<Instant>,
    pub attempts: u32,
}

/// A response that was not an error.
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub link: Option<String>,
}

fn header(resp: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(|s| s.to_string())
}

/// The longest wait the launcher takes from a server's header.
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// A wait in seconds (`"2"`, `"0.5"`), clamped to 0..=1 h; `None` when it is not a number (`NaN` included).
fn parse_seconds(v: &str) -> Option<Duration> {
    let s = v.trim().parse::<f64>().ok()?;
    if s.is_nan() {
        return None;
    }
    Some(Duration::from_secs_f64(s.clamp(0.0, MAX_WAIT.as_secs_f64())))
}

/// `Retry-After` in seconds. (The HTTP-date form is not used by Buildkite and reads as absent.)
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    parse_seconds(v)
}

/// The rate-limit headers of one response.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// `Retry-After`.
    pub retry_after: Option<Duration>,
    /// `RateLimit-Remaining`.
    pub remaining: Option<i64>,
    /// `RateLimit-Reset`: time until the window resets.
    pub reset: Option<Duration>,
}

impl Limits {
    /// Reads `Retry-After`, `RateLimit-Remaining` and `RateLimit-Reset` (absent or unreadable → `None`).
    pub fn parse(retry_after: Option<&str>, remaining: Option<&str>, reset: Option<&str>) -> Limits {
        Limits {
            retry_after: retry_after.and_then(parse_retry_after),
            remaining: remaining.and_then(|v| v.trim().parse::<i64>().ok()),
            reset: reset.and_then(parse_seconds),
        }
    }

    /// How long to hold off even after a success: the window is used up until it resets.
    pub fn exhausted(&self) -> Option<Duration> {
        match (self.remaining, self.reset) {
            (Some(0), Some(r)) => Some(r),
            _ => None,
        }
    }

    /// How long to wait after a 429: `Retry-After`, else `RateLimit-Reset`, else 1 s.
    pub fn after_429(&self) -> Duration {
        self.retry_after.or(self.reset).unwrap_or(Duration::from_secs(1))
    }
}

/// The message of an error answer: its JSON `message`, else the start of the body.
pub fn error_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(String::from))
        .unwrap_or_else(|| body.chars().take(200).collect())
}

impl Http {
    /// `auth` is the whole `Authorization` header value.
    pub fn new(auth: String, timeout: Duration) -> Http {
        let agent: ureq::Agent =
            ureq::Agent::config_builder().timeout_global(Some(timeout)).http_status_as_error(false).build().into();
        Http { agent, auth, not_before: None, attempts: 3 }
    }

    pub fn request(&mut self, what: &str, method: &str, url: &str, body: Option<&Value>) -> Result<Reply, BkError> {
        if let Some(t) = self.not_before {
            let now = Instant::now();
            if t > now {
                return Err(BkError::RateLimited { what: what.into(), retry_after: t - now });
            }
        }
        let mut backoff = Duration::from_millis(200);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let req = match method {
                "GET" => {
                    self.agent.get(url).header("Authorization", &self.auth).header("Accept", "application/json").call()
                }
                _ => {
                    let b = body.map(|b| b.to_string()).unwrap_or_default();
                    let r = match method {
                        "PUT" => self.agent.put(url),
                        _ => self.agent.post(url),
                    };
                    let r = r
                        .header("Authorization", &self.auth)
                        .header("Accept", "application/json")
                        .header("Content-Type", "application/json");
                    if b.is_empty() {
                        r.send_empty()
                    } else {
                        r.send(b.as_str())
                    }
                }
            };
            let mut resp = match req {
                Ok(r) => r,
                Err(e) => {
                    retry_transport(what, e, attempt < self.attempts, &mut backoff)?;
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let limits = Limits::parse(
                header(&resp, "Retry-After").as_deref(),
                header(&resp, "RateLimit-Remaining").as_deref(),
                header(&resp, "RateLimit-Reset").as_deref(),
            );
            let retry_after = limits.retry_after;
            self.not_before = limits.exhausted().map(|r| Instant::now() + r);
            let link = header(&resp, "Link");
            // a body that does not arrive is a failed request (never an empty answer): the server may have
            // acted on it, so it is retried like a transport error (every request here may be repeated)
            let text = match resp.body_mut().read_to_string() {
                Ok(t) => t,
                Err(e) => {
                    retry_transport(what, e, attempt < self.attempts, &mut backoff)?;
                    continue;
                }
            };
            if status == 429 {
                let wait = limits.after_429();
                self.not_before = Some(Instant::now() + wait);
                return Err(BkError::RateLimited { what: what.into(), retry_after: wait });
            }
            if status >= 500 {
                if attempt < self.attempts {
                    std::thread::sleep(retry_after.unwrap_or(backoff).min(Duration::from_secs(2)));
                    backoff *= 2;
                    continue;
                }
                if let Some(wait) = retry_after {
                    self.not_before = Some(Instant::now() + wait);
                }
            }
            if status >= 400 {
                return Err(BkError::Status { what: what.into(), status, message: error_message(&text) });
            }
            return Ok(Reply { status, body: text, link });
        }
    }
}

/// A request that failed on the way (connect, send, or reading the body): with attempts left, logs it and
/// waits `backoff` (then doubled) so the caller tries again; else the error.
fn retry_transport(what: &str, e: ureq::Error, again: bool, backoff: &mut Duration) -> Result<(), BkError> {
    let e = BkError::transport(what, e);
    if !again {
        return Err(e);
    }
    crate::launcher::log::warn(&format!("{}; retrying", crate::launcher::log::chain(&e)));
    std::thread::sleep(*backoff);
    *backoff *= 2;
    Ok(())
}

fn json<T: serde::de::DeserializeOwned>(what: &str, body: &str) -> Result<T, BkError> {
    serde_json::from_str(body).map_err(|source| BkError::Decode { what: what.into(), source })
}

/// The Stacks API (`/v3/stacks/...`) with a cluster agent token.
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
    /// The page's jobs with a UUID-like id, each once, in [`sort_jobs`] order; `paused` is the queue's flag.
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
    pub fn new(cfg: &crate::launcher::config::Config, token: &str) -> Stacks {
        let (queue, key) = cfg.queue_stacks().swap_remove(0);
        Stacks::for_queue(cfg, token, &queue, &key)
    }

    /// The stack `key` serving `queue`.
    pub fn for_queue(cfg: &crate::launcher::config::Config, token: &str, queue: &str, key: &str) -> Stacks {
        let b = &cfg.buildkite;
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

/// Several queues, one stack (source) each, seen by the daemon as one source: the lists are merged, and each
/// job's calls go to the stack that listed it (a job not listed by this run, after a restart, is tried on
/// each stack in turn). A paused queue's jobs are left out of the list; the listing is `paused` only when
/// every queue is. A queue whose list fails is skipped for that poll while the others are listed.
pub struct MultiSource {
    sources: Vec<(String, Box<dyn Source>)>,
    owner: HashMap<String, usize>,
}

impl MultiSource {
    pub fn new(sources: Vec<(String, Box<dyn Source>)>) -> MultiSource {
        MultiSource { sources, owner: HashMap::new() }
    }

    /// The source indexes to try for a job: its owner, else every source.
    fn route(&self, id: &str) -> Vec<usize> {
        match self.owner.get(id) {
            Some(i) => vec![*i],
            None => (0..self.sources.len()).collect(),
        }
    }
}

impl Source for MultiSource {
    fn register(&mut self) -> Result<(), BkError> {
        for (_, s) in &mut self.sources {
            s.register()?;
        }
        Ok(())
    }

    fn deregister(&mut self) -> Result<(), BkError> {
        let mut first = Ok(());
        for (_, s) in &mut self.sources {
            if let Err(e) = s.deregister() {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    fn list(&mut self) -> Result<Listing, BkError> {
        let mut out = Listing { jobs: Vec::new(), paused: true };
        let mut last_err = None;
        let mut any = false;
        for (i, (queue, s)) in self.sources.iter_mut().enumerate() {
            match s.list() {
                Ok(l) => {
                    any = true;
                    if l.paused {
                        continue;
                    }
                    out.paused = false;
                    for j in &l.jobs {
                        self.owner.insert(j.id.clone(), i);
                    }
                    out.jobs.extend(l.jobs);
                }
                Err(e) => {
                    crate::launcher::log::warn(&format!(
                        "buildkite list of queue {queue}: {}",
                        crate::launcher::log::chain(&e)
                    ));
                    last_err = Some(e);
                }
            }
        }
        match (any, last_err) {
            (false, Some(e)) => Err(e),
            _ => {
                tidy(&mut out.jobs);
                Ok(out)
            }
        }
    }

    fn reserve(&mut self, ids: &[String]) -> Result<Vec<String>, BkError> {
        let mut out = Vec::new();
        let mut by: Vec<Vec<String>> = vec![Vec::new(); self.sources.len()];
        let mut unknown = Vec::new();
        for id in ids {
            match self.owner.get(id) {
                Some(i) => by[*i].push(id.clone()),
                None => unknown.push(id.clone()),
            }
        }
        for (i, batch) in by.iter().enumerate() {
            if !batch.is_empty() {
                out.extend(self.sources[i].1.reserve(batch)?);
            }
        }
        for (i, (_, s)) in self.sources.iter_mut().enumerate() {
            if unknown.is_empty() {
                break;
            }
            let got = s.reserve(&unknown)?;
            unknown.retain(|j| !got.contains(j));
            for j in &got {
                self.owner.insert(j.clone(), i);
            }
            out.extend(got);
        }
        Ok(out)
    }

    fn states(&mut self, ids: &[String]) -> Result<HashMap<String, String>, BkError> {
        let mut out = HashMap::new();
        let mut left: Vec<String> = ids.to_vec();
        for (_, s) in &mut self.sources {
            if left.is_empty() {
                break;
            }
            out.extend(s.states(&left)?);
            left.retain(|j| !out.contains_key(j));
        }
        Ok(out)
    }

    fn finish(&mut self, id: &str, exit_status: i32, detail: &str) -> Result<(), BkError> {
        let mut res = Ok(());
        for i in self.route(id) {
            res = self.sources[i].1.finish(id, exit_status, detail);
            if res.is_ok() {
                break;
            }
        }
        res
    }

    fn notify(&mut self, id: &str, detail: &str) -> Result<(), BkError> {
        let mut res = Ok(());
        for i in self.route(id) {
            res = self.sources[i].1.notify(id, detail);
            if res.is_ok() {
                break;
            }
        }
        res
    }
}

impl Source for Stacks {
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
            return Err(BkError::Invalid { what: "finish job".into(), message: format!("bad job id {id:?}") });
        }
        let detail = outgoing(detail, 4000);
        let url = self.url(&format!("/jobs/{}/finish", enc(id)));
        match self.http.request(
            "finish job",
            "POST",
            &url,
            Some(&json!({"exit_status": exit_status, "detail": detail})),
        ) {
            // finished already (at most once per job): nothing left to do
            Err(BkError::Status { status: 422, .. }) => Ok(()),
            r => r.map(|_| ()),
        }
    }

    fn notify(&mut self, id: &str, detail: &str) -> Result<(), BkError> {
        let detail = outgoing(detail, 256);
        let url = self.url("/notifications");
        self.http
            .request(
                "post notification",
                "POST",
                &url,
                Some(&json!({"notifications": [{"job_uuid": id, "detail": detail}]})),
            )
            .map(|_| ())
    }
}

/// Text for Buildkite (a job's finish detail, a notification, an annotation): CPI errors and other outside
/// text pass through the launcher's redactor (tokens and VM secrets become `<redacted>`), then are cut to
/// `max` characters (after redacting, so a cut never leaves part of a secret).
fn outgoing(detail: &str, max: usize) -> String {
    crate::launcher::log::redact(detail).chars().take(max).collect()
}

/// The REST API (`/v2/organizations/{org}/builds`) with an API access token, for organisations without the
/// Stacks API. It has no reservations (two launchers may start a VM for the same job; the agent's
/// `--acquire-job` lets only one run it, the other exits 27) and no way to fail a job: a job the launcher
/// gives up on gets an error annotation on its build and is not retried by this launcher.
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

/// Decodes a page of `GET /v2/organizations/{org}/builds` (a JSON array of builds).
pub fn decode_builds(body: &str) -> Result<Vec<Build>, BkError> {
    let builds: Vec<RestBuild> = json("list builds", body)?;
    Ok(builds
        .into_iter()
        .map(|b| Build {
            number: b.number,
            pipeline: b.pipeline.map(|p| p.slug),
            jobs: b
                .jobs
                .into_iter()
                .map(|j| BuildJob {
                    priority: j.priority.as_i64().or_else(|| j.priority["number"].as_i64()).unwrap_or(0),
                    id: j.id,
                    kind: j.kind,
                    state: j.state,
                    rules: j.agent_query_rules,
                    scheduled_at: j.scheduled_at.unwrap_or_default(),
                })
                .collect(),
        })
        .collect())
}

/// The launchable jobs of REST builds (`type == "script"`, state `scheduled`, a UUID-like id), each once, in
/// [`sort_jobs`] order. The REST API has no paused flag (`include_paused` defaults to hiding those jobs).
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
        let r = cfg.buildkite.rest.as_ref()?;
        Some(Rest {
            http: Http::new(format!("Bearer {token}"), Duration::from_millis(cfg.buildkite.timeout_ms)),
            base: r.endpoint.trim_end_matches('/').to_string(),
            org: r.organization.clone(),
            lookback_hours: r.lookback_hours,
            max_pages: cfg.buildkite.max_pages.max(1),
            builds: HashMap::new(),
        })
    }

    /// The builds created in the lookback window with one of `states` (all states when empty). The API lists
    /// newest first; so that the oldest jobs are not starved, page 1 is read and then, when there are more,
    /// up to `pages` pages from the oldest end (`rel="last"`, then `rel="prev"`).
    fn builds(&mut self, states: &[&str], pages: u32) -> Result<Vec<Build>, BkError> {
        let from = crate::launcher::daemon::now().saturating_sub(u64::from(self.lookback_hours) * 3600);
        let mut url = format!(
            "{}/v2/organizations/{}/builds?per_page=100&created_from={}",
            self.base,
            enc(&self.org),
            enc(&crate::rfc3339::format(from))
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
}

impl Rest {
    /// Checks the API token (`GET /v2/access-token`) and that it may read builds.
    pub fn check_token(&mut self) -> Result<(), BkError> {
        let url = format!("{}/v2/access-token", self.base);
        let r = self.http.request("check the API token", "GET", &url, None)?;
        let v: Value = json("check the API token", &r.body)?;
        let scopes: Vec<&str> =
            v["scopes"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        if !scopes.contains(&"read_builds") {
            return Err(BkError::Invalid {
                what: "check the API token".into(),
                message: format!("the token lacks the read_builds scope (it has: {})", scopes.join(", ")),
            });
        }
        Ok(())
    }
}

impl Source for Rest {
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
            return Err(BkError::Invalid {
                what: "annotate build".into(),
                message: format!("build of job {id} is unknown"),
            });
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_for_buildkite_is_redacted_before_it_is_cut() {
        let secret = "0123456789abcdef0123456789abcdef";
        crate::launcher::log::add_secret(secret);
        let text = format!("{}{{\"secret\":\"{secret}\"}}", "x".repeat(240));
        let out = outgoing(&text, 256);
        assert!(!out.contains(&secret[..8]), "{out}");
        assert!(out.ends_with("{\"secret\":\"<reda"), "{out}");
        assert_eq!(outgoing(&format!("create_vm failed: {secret}"), 4000), "create_vm failed: <redacted>");
    }

    /// A listed job without rules.
    fn j(id: &str, priority: i64, scheduled_at: &str) -> ScheduledJob {
        ScheduledJob { id: id.into(), priority, rules: vec![], scheduled_at: scheduled_at.into() }
    }

    #[test]
    fn order_is_priority_then_age() {
        let mut v = vec![
            j("a", 0, "2026-01-01T00:00:02Z"),
            j("b", 5, "2026-01-01T00:00:03Z"),
            j("c", 0, "2026-01-01T00:00:01Z"),
        ];
        sort_jobs(&mut v);
        assert_eq!(v.iter().map(|j| j.id.as_str()).collect::<String>(), "bca");
    }

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

    const J1: &str = "b63254c0-3271-4a98-8270-7cfbd6c2f14e";
    const J2: &str = "00000002-0000-4000-8000-000000000002";
    const J3: &str = "00000003-0000-4000-8000-000000000003";

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
            assert!(matches!(decode_scheduled_jobs(bad), Err(BkError::Decode { .. })), "{bad}");
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
        assert_eq!(ids(&l), [J2, J1]);
        assert_eq!(l.jobs[1].rules, ["queue=vm-linux", "flavor=large"]);
        assert!(!l.paused);

        assert!(decode_builds("[]").unwrap().is_empty());
        assert!(decode_builds(r#"{"message":"Listing builds this deep is not supported."}"#).is_err());
        assert!(decode_builds(r#"[{"pipeline":{}}]"#).is_err());
    }

    #[test]
    fn rate_limit_headers() {
        let s = Duration::from_secs;
        assert_eq!(parse_retry_after(" 2 "), Some(s(2)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("-3"), Some(s(0)));
        assert_eq!(parse_retry_after("1e9"), Some(s(3600)));
        assert_eq!(parse_retry_after("inf"), Some(s(3600)));
        // `NaN` parses as an f64 and used to reach Duration::from_secs_f64, which panics
        for v in ["NaN", "nan", "-NaN", "", "Wed, 21 Oct 2015 07:28:00 GMT", "2s"] {
            assert_eq!(parse_retry_after(v), None, "{v}");
        }

        let l = Limits::parse(None, Some("0"), Some("1"));
        assert_eq!((l.exhausted(), l.after_429()), (Some(s(1)), s(1)));
        let l = Limits::parse(Some("7"), Some("0"), Some("42"));
        assert_eq!((l.exhausted(), l.after_429()), (Some(s(42)), s(7)));
        let l = Limits::parse(None, Some("3"), Some("42"));
        assert_eq!((l.remaining, l.exhausted(), l.after_429()), (Some(3), None, s(42)));
        let l = Limits::parse(Some("NaN"), Some("0"), Some("NaN"));
        assert_eq!((l.exhausted(), l.after_429()), (None, s(1)));
        assert_eq!(Limits::parse(None, None, None), Limits::default());

        assert_eq!(error_message(r#"{"message":"job already finished"}"#), "job already finished");
        assert_eq!(error_message("<html>Bad Gateway</html>"), "<html>Bad Gateway</html>");
        assert_eq!(error_message(&"é".repeat(300)).chars().count(), 200);
    }

    #[test]
    fn order_compares_instants_not_text() {
        // as text, "…01.500Z" < "…01Z" < "…00+00:00"; as instants it is the other way round
        let mut v = vec![
            j("a", 0, "2026-01-05T10:00:01.500Z"),
            j("b", 0, "2026-01-05T10:00:01Z"),
            j("c", 0, "2026-01-05T10:00:00+00:00"),
            j("d", 1, "2026-01-05T11:00:00Z"),
        ];
        sort_jobs(&mut v);
        assert_eq!(v.iter().map(|j| j.id.as_str()).collect::<String>(), "dcba");
        // a missing or unreadable time counts as oldest; ties fall back to the text, then the id
        let mut v = vec![
            j("a", 0, "2026-01-05T10:00:00Z"),
            j("c", 0, "garbage"),
            j("b", 0, ""),
            j("e", 0, "2026-01-05T10:00:00.000Z"),
            j("d", 0, "2026-01-05T10:00:00.000Z"),
        ];
        sort_jobs(&mut v);
        assert_eq!(v.iter().map(|j| j.id.as_str()).collect::<String>(), "bcdea");
    }

    #[test]
    fn encoding_and_states() {
        assert_eq!(enc("a.b c/_-"), "a%2Eb%20c%2F_-");
        assert!(is_terminal("canceled") && is_terminal("passed") && !is_terminal("running"));
        assert!(is_started("running") && !is_started("scheduled"));
        assert!(is_uuid_like("b63254c0-3271-4a98-8270-7cfbd6c2f14e") && !is_uuid_like("../x"));
    }
}
