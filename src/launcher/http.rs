//! The launcher's HTTP listener: `/metrics`, `/healthz`, and `/v1/assignment` for the VMs.
//!
//! A VM authenticates at `/v1/assignment` with `Authorization: Bearer <secret>`, the per-VM secret the
//! launcher put into its create_vm `env`. The answer tells it which job to acquire, the agent tags, and what
//! the job's source grants it (Buildkite: the agent endpoint and token); a warm VM that has no job yet gets
//! `204` and asks again. So the Buildkite token is never in a VM's settings or metadata, and each VM can
//! only ever learn its own job.
//!
//! The server itself (hyper, TLS, limits, keeping the listener alive) is [`crate::launcher::server`]; this
//! module is the launcher's table of routes, answered from the state shared with the daemon loop, and what
//! the listener's failures do to `/healthz`. A new route is one more [`Route`] in [`routes`]
//! ([`Route::post`] for one that takes a body, with its size limit).
use crate::launcher::log;
use crate::launcher::metrics::Metrics;
use crate::launcher::server::{self, Event, Limits, Reply, Request, Route};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use crate::launcher::server::ServeError;

/// What a VM may learn about its job.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// `None` for a warm VM that has no job yet.
    pub job: Option<String>,
    pub agent_tags: Vec<String>,
    pub name: String,
    /// What the job's source grants the VM (Buildkite: the agent endpoint and token), answered with the job.
    pub grant: serde_json::Map<String, serde_json::Value>,
}

/// State shared between the daemon loop and the listener.
pub struct Shared {
    pub metrics: Metrics,
    /// By per-VM secret.
    pub assignments: HashMap<String, Assignment>,
    pub last_tick: Instant,
    pub healthy_within: Duration,
    /// Polls of the Buildkite API that failed in a row, and how many make the launcher unhealthy.
    pub failed_polls: u32,
    pub unhealthy_after: u32,
    /// Why the listener is not accepting connections, while it is not (`/healthz` answers 503).
    pub listener_down: Option<String>,
}

pub type SharedRef = Arc<Mutex<Shared>>;

pub fn lock(s: &SharedRef) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// The listener, bound and serving.
pub struct Listener {
    server: server::Server,
}

impl Listener {
    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.addr
    }

    /// Whether the listener's thread has ended (only a bug ends it; the daemon then starts a new one).
    pub fn is_finished(&self) -> bool {
        self.server.is_finished()
    }
}

/// Binds the listener (HTTPS with `tls`) and serves [`routes`] on a thread of its own.
pub fn serve(
    addr: &str,
    tls: Option<&crate::launcher::config::Tls>,
    limits: Limits,
    shared: SharedRef,
) -> Result<Listener, ServeError> {
    let tls = tls.map(|t| server::tls_config(&t.cert_file, &t.key_file)).transpose()?;
    let s = shared.clone();
    let on_event: server::OnEvent = Arc::new(move |e: Event<'_>| match e {
        Event::AcceptFailing { error, count, pause } => log::warn(&format!(
            "listener: cannot accept connections ({count}x): {error}; trying again every {} ms \
             (raise the open files limit, or lower listener.max_connections)",
            pause.as_millis()
        )),
        Event::Down { reason, pause } => {
            log::error(&format!(
                "the HTTP listener stopped: {reason}; /healthz answers 503 until it listens again \
                 (binding it again in {} s)",
                pause.as_secs()
            ));
            let mut g = lock(&s);
            g.listener_down = Some(reason.to_string());
            g.metrics.inc("launcher_listener_failures_total", &[], 1.0);
        }
        Event::BindFailed { error, pause } => {
            log::error(&format!("the HTTP listener cannot bind again: {error}; next try in {} s", pause.as_secs()))
        }
        Event::Up { addr } => {
            log::info(&format!("the HTTP listener listens again on {addr}"));
            lock(&s).listener_down = None;
        }
    });
    let server = server::start(addr, tls, limits, routes(shared), on_event)?;
    Ok(Listener { server })
}

/// Compares in time independent of where the inputs differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the launcher serves.
pub fn routes(shared: SharedRef) -> Vec<Route> {
    let (m, h, a) = (shared.clone(), shared.clone(), shared);
    vec![
        Route::get("/metrics", move |_| Reply::new(200, "text/plain; version=0.0.4", lock(&m).metrics.render())),
        Route::get("/healthz", move |_| healthz(&lock(&h))),
        Route::get("/v1/assignment", move |r| assignment(r, &lock(&a))),
    ]
}

fn healthz(s: &Shared) -> Reply {
    if let Some(why) = &s.listener_down {
        Reply::text(503, format!("the listener is not accepting connections: {why}\n"))
    } else if s.last_tick.elapsed() >= s.healthy_within {
        Reply::text(503, "the main loop is stuck\n")
    } else if s.failed_polls >= s.unhealthy_after {
        Reply::text(503, format!("{} consecutive failed polls of the Buildkite API\n", s.failed_polls))
    } else {
        Reply::text(200, "ok\n")
    }
}

/// A VM's assignment, by the per-VM secret of its `Authorization: Bearer` header (never the query string).
fn assignment(r: &Request<'_>, s: &Shared) -> Reply {
    let secret = r.bearer().unwrap_or("");
    let found =
        if secret.is_empty() { None } else { s.assignments.iter().find(|(k, _)| same(k, secret)).map(|(_, a)| a) };
    match found {
        None => Reply::new(401, "application/json", "{\"message\":\"unknown VM secret\"}"),
        Some(Assignment { job: None, .. }) => Reply::new(204, "application/json", ""),
        Some(Assignment { job: Some(job), agent_tags, name, grant }) => {
            let mut body = grant.clone();
            body.insert("job_id".into(), json!(job));
            body.insert("agent_tags".into(), json!(agent_tags.join(",")));
            body.insert("agent_name".into(), json!(name));
            Reply::new(200, "application/json", serde_json::Value::Object(body).to_string())
        }
    }
}
