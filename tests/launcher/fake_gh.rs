//! A fake GitHub for the launcher tests, written from GitHub's REST documentation, on the shared fake-server
//! skeleton ([`super::fake_http`]):
//!
//! - workflow runs (`GET /repos/{o}/{r}/actions/runs?status=`) and their jobs (`…/runs/{id}/jobs`), paged with
//!   absolute `Link` URLs; a run is `queued` while all its jobs are, `completed` when all are, else
//!   `in_progress` (a matrix with one job running);
//! - self-hosted runners: list (`?name=`), get, delete (204; 422 while it runs a job), and
//!   `generate-jitconfig` (201 with `runner` and `encoded_jit_config`; 422 without `runner_group_id`; 409 for a
//!   name that exists), at repository and organisation level;
//! - auth: a `Bearer` token, or a GitHub App — `POST /app/installations/{id}/access_tokens` verifies the JWT
//!   (RS256 with the App's public key, `iss`, `iat`/`exp` at most 10 minutes apart) and hands out an
//!   installation token with an `expires_at`;
//! - `ETag` on every `GET` and `304` to a matching `If-None-Match` (a 304 does not count against the rate limit);
//!   `x-ratelimit-*` headers on every answer, a primary limit that runs out (403 with remaining 0), and the
//!   skeleton's faults (429/403 with `Retry-After`, 5xx, stalls);
//! - webhook deliveries: with a target set, every job transition is POSTed as a `workflow_job` event, signed
//!   with `X-Hub-Signature-256`.
//!
//! What GitHub does not document publicly — how a runner talks to the Actions service — is replaced by a small
//! protocol of this fake's own (`/_fake/runner/…`), which the tests' runner simulation and the guest image's
//! stand-in runner speak: the JIT config this fake hands out is base64 JSON naming the fake's URL and a secret
//! for that runner; with it a runner comes online, asks for a job (the fake assigns the oldest queued job whose
//! labels are all the runner's, as GitHub's scheduler does), and reports it completed; then the fake removes the
//! runner, as GitHub removes an ephemeral runner after its job.
use super::fake_http::{self, Fault, Request, Response};
use base64::Engine;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const GH_TOKEN: &str = "github_pat_11TESTTOKEN0123456789_abcdefghijklmnopqrstuvwxyz";
pub const REPO: &str = "acme/app";

#[derive(Debug, Clone)]
pub struct Job {
    pub id: u64,
    pub run_id: u64,
    pub repo: String,
    pub labels: Vec<String>,
    pub status: String,
    pub conclusion: Option<String>,
    pub runner_name: Option<String>,
    pub created_at: String,
    /// What the runner reported as the job's output.
    pub log: String,
}

#[derive(Debug, Clone)]
pub struct Runner {
    pub id: u64,
    pub name: String,
    /// `repo:owner/name` or `org:name`.
    pub scope: String,
    pub labels: Vec<String>,
    pub online: bool,
    pub job: Option<u64>,
    pub secret: String,
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub at: Instant,
    pub status: u16,
    pub conditional: bool,
    pub auth: String,
}

pub struct State {
    pub jobs: BTreeMap<u64, Job>,
    pub runners: BTreeMap<u64, Runner>,
    /// Every runner name ever registered, and how each went: `deleted` (by the API) or `ephemeral` (after its job).
    pub registered: Vec<String>,
    pub removed: Vec<(String, &'static str)>,
    pub calls: Vec<Call>,
    pub faults: VecDeque<Fault>,
    pub seq: u64,
    /// The primary rate limit: remaining in the window, the window's size, and when it resets (Unix seconds).
    pub limit: i64,
    pub remaining: i64,
    pub reset_at: u64,
    /// Webhook target: (url, secret).
    pub webhook: Option<(String, String)>,
    pub deliveries: Vec<(String, u16)>,
    /// The URL a JIT config tells the runner (default: the fake's own).
    pub runner_url: String,
    /// A GitHub App: (iss, installation id, public key DER).
    pub app: Option<(String, u64, Vec<u8>)>,
    /// Installation tokens handed out, with their expiry (Unix seconds).
    pub installation_tokens: Vec<(String, u64)>,
    pub installation_token_ttl: u64,
    pub jwt_refused: u32,
    pub unauthorized: u32,
    /// Runner groups of the organisation.
    pub groups: Vec<u64>,
    /// A runner's `complete` records the conclusion and the log but keeps the job `in_progress` (and the
    /// runner registered) until [`FakeGh::release`]: the guest test sees the VM power off first.
    pub hold_complete: bool,
    /// Every encoded JIT config handed out (the tests look for leaks).
    pub jit_configs: Vec<String>,
}

#[derive(Clone)]
pub struct FakeGh {
    pub state: Arc<Mutex<State>>,
    pub url: String,
}

fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn etag(body: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    format!("W/\"{:016x}\"", h.finish())
}

impl FakeGh {
    pub fn start() -> FakeGh {
        let slot: Arc<Mutex<Option<FakeGh>>> = Arc::new(Mutex::new(None));
        let s2 = slot.clone();
        let addr = fake_http::start(Arc::new(move |r: &Request| {
            let f = s2.lock().unwrap().clone().expect("set up before the first request");
            f.handle(r)
        }));
        let url = format!("http://{addr}");
        let state = State {
            jobs: BTreeMap::new(),
            runners: BTreeMap::new(),
            registered: vec![],
            removed: vec![],
            calls: vec![],
            faults: VecDeque::new(),
            seq: 0,
            limit: 5000,
            remaining: 5000,
            reset_at: now_unix() + 3600,
            webhook: None,
            deliveries: vec![],
            runner_url: url.clone(),
            app: None,
            installation_tokens: vec![],
            installation_token_ttl: 3600,
            jwt_refused: 0,
            unauthorized: 0,
            groups: vec![1],
            hold_complete: false,
            jit_configs: vec![],
        };
        let fake = FakeGh { state: Arc::new(Mutex::new(state)), url };
        *slot.lock().unwrap() = Some(fake.clone());
        fake
    }

    pub fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A workflow run of `n` queued jobs with these labels; returns the job ids (GitHub-sized numbers).
    pub fn add_run(&self, n: usize, labels: &[&str]) -> Vec<u64> {
        let (ids, events) = {
            let mut s = self.st();
            s.seq += 1;
            let run_id = 9_000_000_000 + s.seq;
            let mut ids = vec![];
            for _ in 0..n {
                s.seq += 1;
                let id = 30_000_000_000 + s.seq;
                let t = 1_767_600_000 + s.seq;
                let job = Job {
                    id,
                    run_id,
                    repo: REPO.into(),
                    labels: labels.iter().map(|l| l.to_string()).collect(),
                    status: "queued".into(),
                    conclusion: None,
                    runner_name: None,
                    created_at: format!("2026-01-05T10:{:02}:{:02}Z", (t / 60) % 60, t % 60),
                    log: String::new(),
                };
                s.jobs.insert(id, job);
                ids.push(id);
            }
            let events: Vec<Value> = ids.iter().map(|id| Self::event(&s, *id, "queued")).collect();
            (ids, events)
        };
        for e in events {
            self.deliver(e);
        }
        ids
    }

    pub fn job(&self, id: u64) -> Job {
        self.st().jobs[&id].clone()
    }

    /// Cancels a job (a user cancels its run before any runner took it).
    pub fn cancel(&self, id: u64) {
        let e = {
            let mut s = self.st();
            let j = s.jobs.get_mut(&id).unwrap();
            j.status = "completed".into();
            j.conclusion = Some("cancelled".into());
            Self::event(&s, id, "completed")
        };
        self.deliver(e);
    }

    /// Ends a job whose completion was held (`hold_complete`): completed, its runner removed.
    pub fn release(&self, id: u64) {
        let e = {
            let mut s = self.st();
            let j = s.jobs.get_mut(&id).unwrap();
            j.status = "completed".into();
            let runner = s.runners.values().find(|r| r.job == Some(id)).map(|r| (r.id, r.name.clone()));
            if let Some((rid, name)) = runner {
                s.runners.remove(&rid);
                s.removed.push((name, "ephemeral"));
            }
            Self::event(&s, id, "completed")
        };
        self.deliver(e);
    }

    pub fn fault(&self, f: Fault) {
        self.st().faults.push_back(f);
    }

    /// Requests whose path contains `part`.
    pub fn calls_to(&self, part: &str) -> Vec<Call> {
        self.st().calls.iter().filter(|c| c.path.contains(part)).cloned().collect()
    }

    /// The runners still registered.
    pub fn runner_names(&self) -> Vec<String> {
        self.st().runners.values().map(|r| r.name.clone()).collect()
    }

    fn event(s: &State, id: u64, action: &str) -> Value {
        let j = &s.jobs[&id];
        json!({"action": action, "repository": {"full_name": j.repo, "name": j.repo.split('/').nth(1)},
               "workflow_job": {"id": j.id, "run_id": j.run_id, "status": j.status, "conclusion": j.conclusion,
                                "labels": j.labels, "runner_name": j.runner_name, "created_at": j.created_at}})
    }

    /// POSTs a `workflow_job` delivery to the webhook target, signed, when one is set.
    fn deliver(&self, event: Value) {
        let target = self.st().webhook.clone();
        let Some((url, secret)) = target else { return };
        let body = event.to_string();
        let sig = vmcpi::launcher::github::webhook::sign(secret.as_bytes(), body.as_bytes());
        let status = post(&url, &[("X-GitHub-Event", "workflow_job"), ("X-Hub-Signature-256", &sig)], &body).0;
        self.st().deliveries.push((event["action"].as_str().unwrap_or("").to_string(), status));
    }

    fn rate_headers(s: &State) -> String {
        format!(
            "x-ratelimit-limit: {}\r\nx-ratelimit-remaining: {}\r\nx-ratelimit-used: {}\r\nx-ratelimit-reset: {}\r\nx-ratelimit-resource: core\r\n",
            s.limit,
            s.remaining.max(0),
            s.limit - s.remaining.max(0),
            s.reset_at
        )
    }

    fn handle(&self, r: &Request) -> Response {
        let mut resp = self.route(r);
        let mut s = self.st();
        let conditional = r.header("if-none-match").is_some();
        s.calls.push(Call {
            method: r.method.clone(),
            path: r.path.clone(),
            at: Instant::now(),
            status: resp.status,
            conditional,
            auth: r.auth().to_string(),
        });
        if !r.path.starts_with("/_fake/") && !resp.headers.contains("x-ratelimit-remaining") {
            resp.headers.push_str(&Self::rate_headers(&s));
        }
        resp
    }

    fn route(&self, r: &Request) -> Response {
        if let Some(rest) = r.path.strip_prefix("/_fake/runner/") {
            return self.runner_protocol(rest, r);
        }
        let fault = fake_http::take_fault(&mut self.st().faults, &r.path);
        let mut extra = Response::default();
        if let Some(f) = fault {
            let limited = f.status == 429 || f.status == 403;
            let msg = if limited {
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
            } else {
                "injected"
            };
            if let Some(resp) = fake_http::inject(f, &json!({"message": msg}), &mut extra) {
                return resp;
            }
        }
        // the window of the primary rate limit
        {
            let mut s = self.st();
            if now_unix() >= s.reset_at {
                s.remaining = s.limit;
                s.reset_at = now_unix() + 3600;
            }
            if s.remaining <= 0 && !r.path.starts_with("/app/installations/") {
                let body = json!({"message": "API rate limit exceeded for installation. If you reach out to GitHub Support for help, please include the request ID."});
                return Response { status: 403, headers: extra.headers, body: body.to_string(), body_stall_ms: 0 };
            }
        }
        if r.method == "POST" && r.path.starts_with("/app/installations/") {
            return self.installation_token(r);
        }
        if !self.authorized(r.auth()) {
            self.st().unauthorized += 1;
            return Response::json(
                401,
                &json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}),
            );
        }
        let mut out = self.api(r);
        if r.method == "GET" && out.status == 200 {
            let tag = etag(&out.body);
            if r.header("if-none-match") == Some(tag.as_str()) {
                // a 304 does not count against the primary rate limit
                out = Response { status: 304, body: String::new(), ..Default::default() };
            } else {
                self.st().remaining -= 1;
            }
            out.headers.push_str(&format!("ETag: {tag}\r\n"));
        } else {
            self.st().remaining -= 1;
        }
        out.headers.push_str(&extra.headers);
        out.body_stall_ms = extra.body_stall_ms;
        out
    }

    fn authorized(&self, auth: &str) -> bool {
        let Some(t) = auth.strip_prefix("Bearer ") else { return false };
        let s = self.st();
        if s.app.is_some() {
            return s.installation_tokens.iter().any(|(tok, exp)| tok == t && *exp > now_unix());
        }
        t == GH_TOKEN
    }

    /// `POST /app/installations/{id}/access_tokens`: the JWT must verify with the App's public key.
    fn installation_token(&self, r: &Request) -> Response {
        let mut s = self.st();
        let Some((iss, inst, der)) = s.app.clone() else {
            return Response::json(404, &json!({"message": "Not Found"}));
        };
        let refuse = |s: &mut State, why: &str| {
            s.jwt_refused += 1;
            Response::json(401, &json!({"message": format!("A JSON web token could not be decoded ({why})")}))
        };
        let Some(jwt) = r.auth().strip_prefix("Bearer ") else { return refuse(&mut s, "no bearer") };
        let parts: Vec<&str> = jwt.split('.').collect();
        if parts.len() != 3 {
            return refuse(&mut s, "not three parts");
        }
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (Ok(h), Ok(p), Ok(sig)) = (b64.decode(parts[0]), b64.decode(parts[1]), b64.decode(parts[2])) else {
            return refuse(&mut s, "not base64url");
        };
        let header: Value = serde_json::from_slice(&h).unwrap_or(Value::Null);
        let claims: Value = serde_json::from_slice(&p).unwrap_or(Value::Null);
        let public = ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, der);
        if header["alg"] != "RS256" || public.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig).is_err() {
            return refuse(&mut s, "bad signature");
        }
        let (iat, exp, now) = (claims["iat"].as_u64().unwrap_or(0), claims["exp"].as_u64().unwrap_or(0), now_unix());
        let iss_ok = claims["iss"].as_str() == Some(iss.as_str())
            || claims["iss"].as_u64().map(|n| n.to_string()) == Some(iss.clone());
        if !iss_ok || exp <= now || iat > now + 60 || exp - iat > 600 {
            return refuse(&mut s, "claims");
        }
        let wanted: u64 = r.path.split('/').nth(3).and_then(|x| x.parse().ok()).unwrap_or(0);
        if wanted != inst {
            return Response::json(404, &json!({"message": "Not Found"}));
        }
        s.seq += 1;
        let token = format!("ghs_installation_token_{:08}", s.seq);
        let expires = now + s.installation_token_ttl;
        s.installation_tokens.push((token.clone(), expires));
        let at = time_rfc3339(expires);
        Response::json(
            201,
            &json!({"token": token, "expires_at": at, "permissions": {"administration": "write", "actions": "read"}}),
        )
    }

    fn runs_of(s: &State) -> BTreeMap<u64, (String, usize)> {
        let mut runs: BTreeMap<u64, Vec<&Job>> = BTreeMap::new();
        for j in s.jobs.values() {
            runs.entry(j.run_id).or_default().push(j);
        }
        runs.into_iter()
            .map(|(id, jobs)| {
                let st = if jobs.iter().all(|j| j.status == "queued") {
                    "queued"
                } else if jobs.iter().all(|j| j.status == "completed") {
                    "completed"
                } else {
                    "in_progress"
                };
                // updated_at moves with every change of its jobs
                let stamp = jobs.iter().map(|j| j.status.len() + j.runner_name.as_ref().map_or(0, |n| n.len())).sum();
                (id, (st.to_string(), stamp))
            })
            .collect()
    }

    /// A page of `items` with GitHub's `Link` header (absolute URLs).
    fn page(&self, r: &Request, key: &str, items: Vec<Value>) -> Response {
        let per_page: usize = r.param("per_page").and_then(|v| v.parse().ok()).unwrap_or(30).clamp(1, 100);
        let page: usize = r.param("page").and_then(|v| v.parse().ok()).unwrap_or(1).max(1);
        let total = items.len();
        let body: Vec<Value> = items.into_iter().skip((page - 1) * per_page).take(per_page).collect();
        let mut resp = Response::json(200, &json!({"total_count": total, key: body}));
        if page * per_page < total {
            let q: Vec<&str> = r.query.split('&').filter(|kv| !kv.starts_with("page=") && !kv.is_empty()).collect();
            let next = format!("{}{}?{}&page={}", self.url, r.path, q.join("&"), page + 1);
            resp.headers.push_str(&format!("Link: <{next}>; rel=\"next\"\r\n"));
        }
        resp
    }

    fn runner_json(r: &Runner) -> Value {
        json!({"id": r.id, "name": r.name, "os": "Linux", "status": if r.online { "online" } else { "offline" },
               "busy": r.job.is_some(), "ephemeral": true,
               "labels": r.labels.iter().map(|l| json!({"name": l, "type": "custom"})).collect::<Vec<_>>()})
    }

    fn api(&self, r: &Request) -> Response {
        let path = r.path.as_str();
        let (scope, rest) = if let Some(p) = path.strip_prefix(&format!("/repos/{REPO}")) {
            (format!("repo:{REPO}"), p.to_string())
        } else if let Some(p) = path.strip_prefix("/orgs/acme") {
            ("org:acme".to_string(), p.to_string())
        } else if path == "/installation/repositories" {
            return self.page(r, "repositories", vec![json!({"full_name": REPO})]);
        } else {
            return Response::json(404, &json!({"message": "Not Found"}));
        };
        let not_found = Response::json(404, &json!({"message": "Not Found"}));
        let mut s = self.st();
        match (r.method.as_str(), rest.as_str()) {
            ("GET", "") => Response::json(200, &json!({"full_name": REPO})),
            ("GET", "/repos") => Response::json(200, &json!([{"full_name": REPO}])),
            ("GET", "/actions/runs") if scope.starts_with("repo:") => {
                let want = r.param("status").unwrap_or("");
                let runs: Vec<Value> = Self::runs_of(&s)
                    .into_iter()
                    .filter(|(_, (st, _))| want.is_empty() || st == want)
                    .rev()
                    .map(|(id, (st, stamp))| json!({"id": id, "status": st, "run_attempt": 1, "updated_at": format!("2026-01-05T10:00:00.{stamp:03}Z")}))
                    .collect();
                drop(s);
                self.page(r, "workflow_runs", runs)
            }
            ("GET", p) if p.starts_with("/actions/runs/") && p.ends_with("/jobs") => {
                let run: u64 = p.split('/').nth(3).and_then(|x| x.parse().ok()).unwrap_or(0);
                let jobs: Vec<Value> = s
                    .jobs
                    .values()
                    .filter(|j| j.run_id == run)
                    .map(|j| {
                        json!({"id": j.id, "run_id": j.run_id, "status": j.status, "conclusion": j.conclusion,
                                    "labels": j.labels, "runner_name": j.runner_name, "created_at": j.created_at,
                                    "name": format!("job {}", j.id)})
                    })
                    .collect();
                drop(s);
                self.page(r, "jobs", jobs)
            }
            ("GET", "/actions/runners") => {
                let name = r.param("name").map(String::from);
                let list: Vec<Value> = s
                    .runners
                    .values()
                    .filter(|x| x.scope == scope && name.as_ref().is_none_or(|n| *n == x.name))
                    .map(Self::runner_json)
                    .collect();
                drop(s);
                self.page(r, "runners", list)
            }
            ("GET", p) if p.starts_with("/actions/runner-groups/") => {
                let id: u64 = p.rsplit('/').next().and_then(|x| x.parse().ok()).unwrap_or(0);
                if s.groups.contains(&id) {
                    Response::json(200, &json!({"id": id, "name": "Default"}))
                } else {
                    not_found
                }
            }
            ("GET" | "DELETE", p) if p.starts_with("/actions/runners/") => {
                let id: u64 = p.rsplit('/').next().and_then(|x| x.parse().ok()).unwrap_or(0);
                let Some(runner) = s.runners.get(&id).filter(|x| x.scope == scope).cloned() else { return not_found };
                if r.method == "GET" {
                    return Response::json(200, &Self::runner_json(&runner));
                }
                if runner.job.is_some() {
                    return Response::json(
                        422,
                        &json!({"message": format!("Bad request - Runner \"{}\" is still running a job\"", runner.name)}),
                    );
                }
                s.runners.remove(&id);
                s.removed.push((runner.name, "deleted"));
                Response { status: 204, ..Default::default() }
            }
            ("POST", "/actions/runners/generate-jitconfig") => {
                let b = r.json();
                let name = b["name"].as_str().unwrap_or("").to_string();
                let Some(group) = b["runner_group_id"].as_u64() else {
                    return Response::json(
                        422,
                        &json!({"message": "Invalid request.\n\nInvalid input: object is missing required key: runner_group_id."}),
                    );
                };
                let labels: Vec<String> = b["labels"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|l| l.as_str().map(String::from)).collect())
                    .unwrap_or_default();
                if name.is_empty() || name.len() > 64 || labels.is_empty() || labels.len() > 100 {
                    return Response::json(422, &json!({"message": "Validation Failed"}));
                }
                let work_folder = b["work_folder"].as_str().unwrap_or("_work");
                if work_folder.starts_with('/') || work_folder.contains("..") {
                    return Response::json(422, &json!({"message": "Validation Failed: work_folder"}));
                }
                if (scope.starts_with("repo:") && group != 1) || !s.groups.contains(&group) {
                    return Response::json(404, &json!({"message": "Not Found"}));
                }
                if s.runners.values().any(|x| x.scope == scope && x.name == name) {
                    return Response::json(
                        409,
                        &json!({"message": format!("Already exists - A runner with the name {name} already exists.")}),
                    );
                }
                s.seq += 1;
                let id = 100 + s.seq;
                let secret = format!("runner-secret-{id}-{}", s.seq * 7919);
                let runner = Runner {
                    id,
                    name: name.clone(),
                    scope: scope.clone(),
                    labels: labels.clone(),
                    online: false,
                    job: None,
                    secret: secret.clone(),
                };
                let cfg = json!({"fake_github": s.runner_url, "runner_id": id, "runner_name": name, "secret": secret});
                let encoded = base64::engine::general_purpose::STANDARD.encode(cfg.to_string());
                let json = Self::runner_json(&runner);
                s.jit_configs.push(encoded.clone());
                s.runners.insert(id, runner);
                s.registered.push(name);
                Response::json(201, &json!({"runner": json, "encoded_jit_config": encoded}))
            }
            _ => not_found,
        }
    }

    /// The fake's own runner protocol (a stand-in for the runner's session with the Actions service).
    fn runner_protocol(&self, op: &str, r: &Request) -> Response {
        let b = r.json();
        let id = b["runner_id"].as_u64().unwrap_or(0);
        let secret = b["secret"].as_str().unwrap_or("");
        let (resp, event) = {
            let mut s = self.st();
            let Some(runner) = s.runners.get(&id).filter(|x| x.secret == secret).cloned() else {
                // the registration is gone (deleted by the launcher): a real runner exits then too
                return Response::json(404, &json!({"message": "runner registration not found"}));
            };
            match op {
                "session" => {
                    s.runners.get_mut(&id).unwrap().online = true;
                    (Response::json(200, &json!({"runner_id": id, "name": runner.name})), None)
                }
                "acquire" => {
                    if let Some(j) = runner.job {
                        return Response::json(200, &json!({"job_id": j}));
                    }
                    let lower: Vec<String> = runner.labels.iter().map(|l| l.to_lowercase()).collect();
                    let pick = s
                        .jobs
                        .values()
                        .filter(|j| j.status == "queued" && j.labels.iter().all(|l| lower.contains(&l.to_lowercase())))
                        .min_by_key(|j| (j.created_at.clone(), j.id))
                        .map(|j| j.id);
                    match pick {
                        None => (Response { status: 204, ..Default::default() }, None),
                        Some(jid) => {
                            let j = s.jobs.get_mut(&jid).unwrap();
                            j.status = "in_progress".into();
                            j.runner_name = Some(runner.name.clone());
                            s.runners.get_mut(&id).unwrap().job = Some(jid);
                            (Response::json(200, &json!({"job_id": jid})), Some(Self::event(&s, jid, "in_progress")))
                        }
                    }
                }
                "complete" => {
                    let Some(jid) = runner.job else { return Response::json(409, &json!({"message": "no job"})) };
                    let hold = s.hold_complete;
                    let j = s.jobs.get_mut(&jid).unwrap();
                    j.conclusion = Some(b["conclusion"].as_str().unwrap_or("success").to_string());
                    j.log = b["log"].as_str().unwrap_or("").to_string();
                    if hold {
                        return Response::json(200, &json!({"job_id": jid}));
                    }
                    j.status = "completed".into();
                    // an ephemeral runner is removed after its job
                    s.runners.remove(&id);
                    s.removed.push((runner.name.clone(), "ephemeral"));
                    (Response::json(200, &json!({"job_id": jid})), Some(Self::event(&s, jid, "completed")))
                }
                _ => (Response::json(404, &json!({"message": "unknown"})), None),
            }
        };
        if let Some(e) = event {
            self.deliver(e);
        }
        resp
    }
}

/// Unix seconds as RFC 3339 (UTC).
pub fn time_rfc3339(t: u64) -> String {
    let days = t / 86400;
    let secs = t % 86400;
    // civil from days (Howard Hinnant's algorithm)
    let z = days as i64 + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, (secs / 60) % 60, secs % 60)
}

/// A plain HTTP POST (for webhook deliveries and the runner protocol): (status, body).
pub fn post(url: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let Ok(mut s) = std::net::TcpStream::connect(host) else { return (0, String::new()) };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    if write!(s, "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}", body.len()).is_err() {
        return (0, String::new());
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}
