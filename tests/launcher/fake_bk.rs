//! A fake Buildkite agent API (the Stacks endpoints) on the shared fake-server skeleton ([`super::fake_http`]),
//! for the launcher tests.
//!
//! It keeps a job store with Buildkite's state machine (scheduled → reserved, hidden until expiry → running →
//! passed/failed/canceled), checks the `Token` auth, knows which stacks are registered (the others get 404
//! `stack not found`, as Buildkite answers), pages the list with cursors, and can be told to pause the queue,
//! answer 429 with `Retry-After`, answer 5xx, stall past the client's timeout (before the answer, or after its
//! headers), or send the paused flag under both of its spellings.
pub use super::fake_http::Fault;
use super::fake_http::{self, Request, Response};
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub rules: Vec<String>,
    pub priority: i64,
    pub scheduled_at: String,
    pub state: String,
    pub reserved_until: Option<Instant>,
    /// The stack that holds the reservation.
    pub reserved_by: Option<String>,
    /// Every stack that ever reserved the job.
    pub reserved_stacks: std::collections::BTreeSet<String>,
    pub reservations: u32,
    /// Reservations that ran out (the job was listed again).
    pub lapses: u32,
    pub finish: Option<(i64, String)>,
    /// What an agent did with the job through the agent API (`/v3/jobs/<id>/…`).
    pub agent: AgentRun,
}

/// One agent's run of a job, as the agent API saw it.
#[derive(Debug, Clone, Default)]
pub struct AgentRun {
    pub name: String,
    pub tags: String,
    /// The job's log (the chunks, in order).
    pub log: String,
    pub exit_status: Option<i64>,
}

#[derive(Default)]
pub struct State {
    pub jobs: BTreeMap<String, Job>,
    pub paused: bool,
    pub faults: VecDeque<Fault>,
    /// (method, path) of every request, in order, and when it came.
    pub calls: Vec<(String, String)>,
    pub call_times: Vec<Instant>,
    /// The query string of every request.
    pub queries: Vec<String>,
    pub notifications: Vec<(String, String)>,
    pub registered: u32,
    pub deregistered: u32,
    pub unauthorized: u32,
    pub seq: u64,
    /// REST: annotations posted, as (build number, body).
    pub annotations: Vec<(u64, String)>,
    /// REST: builds list requests without `created_from`.
    pub rest_unfiltered: u32,
    /// Stack keys registered and not deregistered since.
    pub stacks: std::collections::BTreeSet<String>,
    /// The queue each stack registered for (`queue_key`): a stack lists and reserves only its queue's jobs.
    pub stack_queues: BTreeMap<String, String>,
    /// Send the queue's paused flag as both `dispatch_paused` and `paused` (stacksapi's spelling).
    pub both_paused_fields: bool,
    /// Answer every scheduled-jobs request with this (status, body) instead.
    pub list_override: Option<(u16, String)>,
    /// `GET /v3/metrics/queue` requests (the `check-config --online` probe).
    pub metrics_queue: u32,
    /// The agent API's finish keeps the job `running` (the test then sets the final state itself).
    pub hold_agent_finish: bool,
}

/// The REST API access token the fake accepts (`Bearer`).
pub const REST_TOKEN: &str = "bkua_rest_secret_5678";

#[derive(Clone)]
pub struct FakeBk {
    pub state: Arc<Mutex<State>>,
    pub url: String,
    pub token: String,
}

impl FakeBk {
    pub fn start(token: &str) -> FakeBk {
        let state = Arc::new(Mutex::new(State::default()));
        let slot: Arc<Mutex<Option<FakeBk>>> = Arc::new(Mutex::new(None));
        let s2 = slot.clone();
        let addr = fake_http::start(Arc::new(move |r: &Request| {
            let f = s2.lock().unwrap().clone().expect("the fake is set up before its first request");
            f.handle(r)
        }));
        let fake = FakeBk { state, url: format!("http://{addr}/v3"), token: token.to_string() };
        *slot.lock().unwrap() = Some(fake.clone());
        fake
    }

    pub fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a scheduled job; ids are UUID-shaped and scheduled_at increases with each call.
    pub fn add_job(&self, rules: &[&str], priority: i64) -> String {
        let mut s = self.st();
        s.seq += 1;
        let n = s.seq;
        let id = format!("{:08x}-0000-4000-8000-{:012x}", n, n);
        let at = format!("2026-01-05T10:{:02}:{:02}.000Z", (n / 60) % 60, n % 60);
        s.jobs.insert(
            id.clone(),
            Job {
                id: id.clone(),
                rules: rules.iter().map(|r| r.to_string()).collect(),
                priority,
                scheduled_at: at,
                state: "scheduled".into(),
                reserved_until: None,
                reserved_by: None,
                reserved_stacks: Default::default(),
                reservations: 0,
                lapses: 0,
                finish: None,
                agent: AgentRun::default(),
            },
        );
        id
    }

    pub fn set_state(&self, id: &str, state: &str) {
        if let Some(j) = self.st().jobs.get_mut(id) {
            j.state = state.into();
        }
    }

    pub fn job(&self, id: &str) -> Job {
        self.st().jobs[id].clone()
    }

    pub fn fault(&self, path: &str, status: u16, retry_after: Option<u32>, stall_ms: u64) {
        self.st().faults.push_back(Fault { path: path.into(), status, retry_after, stall_ms, ..Default::default() });
    }

    /// A normal answer with extra headers for the next request whose path contains `path`.
    pub fn headers(&self, path: &str, headers: &str) {
        self.st().faults.push_back(Fault { path: path.into(), headers: headers.into(), ..Default::default() });
    }

    /// The next request whose path contains `path` is carried out and its headers sent; the body follows after
    /// `ms` (a reply lost in transit, as the client sees it when `ms` is past its timeout).
    pub fn stall_body(&self, path: &str, ms: u64) {
        self.st().faults.push_back(Fault { path: path.into(), body_stall_ms: ms, ..Default::default() });
    }

    fn handle(&self, r: &Request) -> Response {
        let body: Value = r.json();
        let (status, extra, resp, body_stall_ms) = self.route(&r.method, &r.path, &r.query, r.auth(), &body);
        let text = match resp {
            Answer::Json(v) => v.map(|v| v.to_string()).unwrap_or_default(),
            Answer::Raw(t) => t,
        };
        Response { status, headers: extra, body: text, body_stall_ms }
    }

    /// REST v2: `GET {org}/builds` (one build per job, newest first, `state[]`, `per_page` ≤ 100, `page`,
    /// `Link`) and `POST {org}/pipelines/{p}/builds/{n}/annotations`.
    fn rest(&self, method: &str, rest: &str, query: &str, auth: &str, body: &Value) -> (u16, String, Option<Value>) {
        if auth != format!("Bearer {REST_TOKEN}") {
            self.st().unauthorized += 1;
            return (401, String::new(), Some(json!({"message": "Authentication required"})));
        }
        let mut s = self.st();
        let (org, op) = rest.split_once('/').unwrap_or((rest, ""));
        if method == "POST" && op.ends_with("/annotations") {
            let number = op.split('/').nth(3).and_then(|n| n.parse().ok()).unwrap_or(0);
            s.annotations.push((number, body["body"].as_str().unwrap_or("").to_string()));
            return (201, String::new(), Some(json!({"id": "a"})));
        }
        if method != "GET" || op != "builds" {
            return (404, String::new(), Some(json!({"message": "not found"})));
        }
        let params: Vec<(String, String)> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.replace("%5B%5D", "[]"), v.to_string()))
            .collect();
        let get = |k: &str| params.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
        if get("created_from").is_none() {
            s.rest_unfiltered += 1;
        }
        let states: Vec<String> = params.iter().filter(|(k, _)| k == "state[]").map(|(_, v)| v.clone()).collect();
        let per_page: usize = get("per_page").and_then(|v| v.parse().ok()).unwrap_or(30).min(100);
        let page: usize = get("page").and_then(|v| v.parse().ok()).unwrap_or(1).max(1);
        let build_state = |j: &Job| match j.state.as_str() {
            "scheduled" | "running" | "passed" | "failed" | "canceled" => j.state.clone(),
            _ => "running".to_string(),
        };
        let mut builds: Vec<(u64, &Job)> = s
            .jobs
            .values()
            .map(|j| (u64::from_str_radix(&j.id[..8], 16).unwrap_or(0), j))
            .filter(|(_, j)| states.is_empty() || states.contains(&build_state(j)))
            .collect();
        builds.sort_by_key(|b| std::cmp::Reverse(b.0));
        let total = builds.len();
        let items: Vec<Value> = builds
            .iter()
            .skip((page - 1) * per_page)
            .take(per_page)
            .map(|(n, j)| {
                json!({"id": format!("build-{n}"), "number": n, "state": build_state(j), "pipeline": {"slug": "app"},
                       "jobs": [{"id": j.id, "type": "script", "state": j.state, "agent_query_rules": j.rules, "priority": {"number": j.priority}, "scheduled_at": j.scheduled_at}]})
            })
            .collect();
        // Buildkite's Link header: first/prev/next/last, each only when it points elsewhere
        let pages = total.div_ceil(per_page).max(1);
        let base = format!("{}/v2/organizations/{org}/builds", self.url.trim_end_matches("/v3"));
        let q: Vec<String> = params
            .iter()
            .filter(|(k, _)| k != "page")
            .map(|(k, v)| format!("{}={v}", k.replace("[]", "%5B%5D")))
            .collect();
        let link = |p: usize, rel: &str| format!("<{base}?{}&page={p}>; rel=\"{rel}\"", q.join("&"));
        let mut links = Vec::new();
        if page > 1 {
            links.push(link(1, "first"));
            links.push(link(page - 1, "prev"));
        }
        if page < pages {
            links.push(link(page + 1, "next"));
            links.push(link(pages, "last"));
        }
        let extra = if links.is_empty() { String::new() } else { format!("Link: {}\r\n", links.join(", ")) };
        (200, extra, Some(Value::Array(items)))
    }

    fn route(&self, method: &str, path: &str, query: &str, auth: &str, body: &Value) -> (u16, String, Answer, u64) {
        let fault = {
            let mut s = self.st();
            s.calls.push((method.to_string(), path.to_string()));
            s.call_times.push(Instant::now());
            s.queries.push(query.to_string());
            fake_http::take_fault(&mut s.faults, path)
        };
        let mut extra = Response::default();
        if let Some(f) = fault {
            let injected =
                json!({"message": "injected", "scope": "list-scheduled-jobs", "limit": 10, "current": 11, "reset": 1});
            if let Some(r) = fake_http::inject(f, &injected, &mut extra) {
                return (r.status, r.headers, Answer::Raw(r.body), 0);
            }
        }
        let (headers, body_stall) = (extra.headers, extra.body_stall_ms);
        if path.ends_with("/scheduled-jobs") {
            if let Some((status, text)) = self.st().list_override.clone() {
                return (status, headers, Answer::Raw(text), body_stall);
            }
        }
        let (status, extra, body) = self.answer(method, path, query, auth, body);
        (status, format!("{headers}{extra}"), Answer::Json(body), body_stall)
    }

    fn answer(&self, method: &str, path: &str, query: &str, auth: &str, body: &Value) -> (u16, String, Option<Value>) {
        if let Some(rest) = path.strip_prefix("/v2/organizations/") {
            return self.rest(method, rest, query, auth, body);
        }
        if path == "/v2/access-token" {
            if auth != format!("Bearer {REST_TOKEN}") {
                self.st().unauthorized += 1;
                return (401, String::new(), Some(json!({"message": "Authentication required"})));
            }
            return (200, String::new(), Some(json!({"uuid": "t", "scopes": ["read_builds", "write_builds"]})));
        }
        if auth != format!("Token {}", self.token) {
            self.st().unauthorized += 1;
            return (401, String::new(), Some(json!({"message": "Authentication required"})));
        }
        if path == "/v3/metrics/queue" {
            self.st().metrics_queue += 1;
            return (
                200,
                String::new(),
                Some(
                    json!({"agents": {"idle": 0, "busy": 0, "total": 0}, "jobs": {"scheduled": 0, "running": 0, "waiting": 0}, "organization": {"slug": "acme"}}),
                ),
            );
        }
        if let Some(rest) = path.strip_prefix("/v3/jobs/") {
            return self.agent_api(method, rest, auth, body);
        }
        let rest = match path.strip_prefix("/v3/stacks/") {
            Some(r) => r,
            None => return (404, String::new(), Some(json!({"message": "not found"}))),
        };
        let mut s = self.st();
        let now = Instant::now();
        for j in s.jobs.values_mut() {
            if j.reserved_until.is_some_and(|t| t <= now) {
                j.reserved_until = None;
                j.reserved_by = None;
                j.lapses += 1;
            }
        }
        if rest == "register" {
            s.registered += 1;
            if let Some(k) = body["key"].as_str() {
                s.stacks.insert(k.to_string());
                if let Some(q) = body["queue_key"].as_str() {
                    s.stack_queues.insert(k.to_string(), q.to_string());
                }
            }
            let code = if s.registered == 1 { 201 } else { 200 };
            return (code, String::new(), Some(json!({"key": body["key"], "type": "custom", "state": "connected"})));
        }
        let (key, op) = rest.split_once('/').unwrap_or((rest, ""));
        if !s.stacks.contains(key) {
            return (404, String::new(), Some(json!({"message": "stack not found"})));
        }
        // a job belongs to the queue of its `queue=` rule (none: the default queue)
        let stack_queue = s.stack_queues.get(key).cloned();
        let of_queue = |j: &Job| {
            let q = j.rules.iter().find_map(|r| r.strip_prefix("queue=")).unwrap_or("_default");
            stack_queue.as_deref().is_none_or(|sq| sq == q)
        };
        match (method, op) {
            ("POST", "deregister") => {
                s.deregistered += 1;
                s.stacks.remove(key);
                (204, String::new(), None)
            }
            ("GET", "scheduled-jobs") => {
                let q: BTreeMap<&str, &str> = query.split('&').filter_map(|kv| kv.split_once('=')).collect();
                let limit: usize = q.get("limit").and_then(|v| v.parse().ok()).unwrap_or(1000);
                let after: usize = q.get("after").and_then(|v| v.parse().ok()).unwrap_or(0);
                let mut list: Vec<&Job> = s
                    .jobs
                    .values()
                    .filter(|j| j.state == "scheduled" && j.reserved_until.is_none() && of_queue(j))
                    .collect();
                list.sort_by(|a, b| a.scheduled_at.cmp(&b.scheduled_at));
                let page: Vec<Value> = list
                    .iter()
                    .skip(after)
                    .take(limit)
                    .map(|j| json!({"id": j.id, "priority": j.priority, "agent_query_rules": j.rules, "scheduled_at": j.scheduled_at, "pipeline": {"slug": "app"}, "build": {"number": 1}}))
                    .collect();
                let more = list.len() > after + limit;
                (
                    200,
                    String::new(),
                    Some(
                        json!({"jobs": page, "page_info": {"has_next_page": more, "end_cursor": (after + limit).to_string()}, 
                    "cluster_queue": if s.both_paused_fields { json!({"id": "q", "dispatch_paused": s.paused, "paused": s.paused}) } else { json!({"id": "q", "dispatch_paused": s.paused}) }}),
                    ),
                )
            }
            ("PUT", "scheduled-jobs/batch-reserve") => {
                let secs = body["reservation_expiry_seconds"].as_u64().unwrap_or(300);
                let (mut ok, mut not) = (vec![], vec![]);
                for id in body["job_uuids"].as_array().cloned().unwrap_or_default() {
                    let id = id.as_str().unwrap_or("").to_string();
                    match s.jobs.get_mut(&id) {
                        // a stack reserving its own reserved job extends the reservation; another
                        // stack's reservation is not taken
                        Some(j)
                            if j.state == "scheduled"
                                && of_queue(j)
                                && j.reserved_by.as_deref().is_none_or(|k| k == key) =>
                        {
                            j.reserved_until = Some(now + Duration::from_secs(secs));
                            j.reserved_by = Some(key.to_string());
                            j.reserved_stacks.insert(key.to_string());
                            j.reservations += 1;
                            ok.push(id);
                        }
                        _ => not.push(id),
                    }
                }
                (200, String::new(), Some(json!({"reserved": ok, "not_reserved": not})))
            }
            ("POST", "jobs/get-states") => {
                let mut states = serde_json::Map::new();
                for id in body["job_uuids"].as_array().cloned().unwrap_or_default() {
                    if let Some(j) = s.jobs.get(id.as_str().unwrap_or("")) {
                        states.insert(j.id.clone(), json!(j.state));
                    }
                }
                (200, String::new(), Some(json!({"states": states})))
            }
            ("POST", "notifications") => {
                for n in body["notifications"].as_array().cloned().unwrap_or_default() {
                    s.notifications
                        .push((n["job_uuid"].as_str().unwrap_or("").into(), n["detail"].as_str().unwrap_or("").into()));
                }
                (200, String::new(), Some(json!({"errors": []})))
            }
            ("POST", op) if op.starts_with("jobs/") && op.ends_with("/finish") => {
                let id = op.trim_start_matches("jobs/").trim_end_matches("/finish").to_string();
                match s.jobs.get_mut(&id) {
                    Some(j) if j.finish.is_none() => {
                        j.finish = Some((
                            body["exit_status"].as_i64().unwrap_or(0),
                            body["detail"].as_str().unwrap_or("").into(),
                        ));
                        j.state = "failed".into();
                        (200, String::new(), Some(json!({})))
                    }
                    Some(_) => (422, String::new(), Some(json!({"message": "job already finished"}))),
                    None => (404, String::new(), Some(json!({"message": "no such job"}))),
                }
            }
            _ => (404, String::new(), Some(json!({"message": "not found"}))),
        }
    }
}

impl FakeBk {
    /// The part of the agent API one `buildkite-agent start --acquire-job` uses: `PUT acquire` (a scheduled job,
    /// reserved or not), `PUT start`, `POST chunks` (`content`), `PUT finish` (`exit_status`: 0 passes).
    fn agent_api(&self, method: &str, rest: &str, auth: &str, body: &Value) -> (u16, String, Option<Value>) {
        let mut s = self.st();
        if auth != format!("Token {}", self.token) {
            s.unauthorized += 1;
            return (401, String::new(), Some(json!({"message": "Authentication required"})));
        }
        let (id, op) = rest.split_once('/').unwrap_or((rest, ""));
        let hold = s.hold_agent_finish;
        let Some(j) = s.jobs.get_mut(id) else {
            return (404, String::new(), Some(json!({"message": "no such job"})));
        };
        let conflict = |m: &str| (422, String::new(), Some(json!({"message": m})));
        match (method, op) {
            ("PUT", "acquire") if j.state == "scheduled" => {
                j.state = "assigned".into();
                j.reserved_until = None;
                j.agent.name = body["agent_name"].as_str().unwrap_or("").into();
                j.agent.tags = body["tags"].as_str().unwrap_or("").into();
                (200, String::new(), Some(json!({"id": id, "state": "assigned"})))
            }
            ("PUT", "acquire") => conflict("the job cannot be acquired"),
            ("PUT", "start") if j.state == "assigned" => {
                j.state = "running".into();
                (200, String::new(), Some(json!({"id": id, "state": "running"})))
            }
            ("POST", "chunks") if j.state == "running" => {
                j.agent.log.push_str(body["content"].as_str().unwrap_or(""));
                (200, String::new(), Some(json!({})))
            }
            ("PUT", "finish") if j.state == "running" && j.agent.exit_status.is_none() => {
                let code = body["exit_status"].as_i64().unwrap_or(-1);
                j.agent.exit_status = Some(code);
                if !hold {
                    j.state = if code == 0 { "passed" } else { "failed" }.into();
                }
                (200, String::new(), Some(json!({"id": id, "state": j.state})))
            }
            ("PUT" | "POST", "start" | "chunks" | "finish") => conflict("the job is not in a state for that"),
            _ => (404, String::new(), Some(json!({"message": "not found"}))),
        }
    }
}

/// A reply body: JSON from the job store, or a raw text (`list_override`).
enum Answer {
    Json(Option<Value>),
    Raw(String),
}
