//! The launcher's HTTP listener: `/metrics`, `/healthz`, and `/v1/assignment` for the VMs.
//!
//! A VM authenticates at `/v1/assignment` with `Authorization: Bearer <secret>`, the per-VM secret the
//! launcher put into its create_vm `env`. The answer tells it which job to acquire, the agent tags, the agent
//! endpoint and the agent token; a warm VM that has no job yet gets `204` and asks again. So the Buildkite
//! token is never in a VM's settings or metadata, and each VM can only ever learn its own job.
//!
//! The HTTP/1.1 parsing is `tiny_http`'s (a malformed request gets its 4xx/5xx answer from there), with HTTPS
//! when the config has a `tls` certificate and key. A few worker threads answer from the shared state.
use crate::launcher::metrics::Metrics;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a VM may learn about its job.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// `None` for a warm VM that has no job yet.
    pub job: Option<String>,
    pub agent_tags: Vec<String>,
    pub name: String,
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
    pub agent_endpoint: String,
    pub agent_token: String,
}

pub type SharedRef = Arc<Mutex<Shared>>;

pub fn lock(s: &SharedRef) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot read {path}")]
    Read { path: std::path::PathBuf, source: std::io::Error },
    #[error("cannot listen")]
    Bind(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("{0} is not an IP address")]
    NotIp(String),
}

/// Threads answering requests (tiny_http reads and parses them on its own threads).
const WORKERS: usize = 4;

/// Binds the listener (HTTPS with `tls`) and serves it on worker threads; returns the bound address.
pub fn serve(
    addr: &str,
    tls: Option<&crate::launcher::config::Tls>,
    shared: SharedRef,
) -> Result<std::net::SocketAddr, ServeError> {
    let server = match tls {
        None => tiny_http::Server::http(addr),
        Some(t) => {
            let read = |p: &std::path::Path| {
                std::fs::read(p).map_err(|source| ServeError::Read { path: p.to_path_buf(), source })
            };
            tiny_http::Server::https(
                addr,
                tiny_http::SslConfig { certificate: read(&t.cert_file)?, private_key: read(&t.key_file)? },
            )
        }
    }
    .map_err(ServeError::Bind)?;
    let local = server.server_addr().to_ip().ok_or_else(|| ServeError::NotIp(addr.to_string()))?;
    let server = Arc::new(server);
    for i in 0..WORKERS {
        let (server, shared) = (server.clone(), shared.clone());
        std::thread::Builder::new()
            .name(format!("http-{i}"))
            .spawn(move || {
                for req in server.incoming_requests() {
                    let (status, ctype, body) = answer(req.method(), req.url(), bearer(&req).as_deref(), &shared);
                    let mut resp = tiny_http::Response::from_string(body).with_status_code(status);
                    if let Ok(h) = tiny_http::Header::from_bytes("Content-Type", ctype) {
                        resp.add_header(h);
                    }
                    let _ = req.respond(resp);
                }
            })
            .map_err(|e| ServeError::Bind(Box::new(e)))?;
    }
    Ok(local)
}

/// The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive).
fn bearer(req: &tiny_http::Request) -> Option<String> {
    let v = req.headers().iter().find(|h| h.field.equiv("Authorization"))?.value.as_str().trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
}

/// Compares in time independent of where the inputs differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The answer to one request: status, content type, body.
pub fn answer(
    method: &tiny_http::Method,
    url: &str,
    bearer: Option<&str>,
    shared: &SharedRef,
) -> (u16, &'static str, String) {
    use tiny_http::Method;
    let path = url.split('?').next().unwrap_or("");
    let known = matches!(path, "/metrics" | "/healthz" | "/v1/assignment");
    if !known {
        return (404, "text/plain", "not found\n".into());
    }
    if !matches!(method, Method::Get | Method::Head) {
        return (405, "text/plain", "method not allowed\n".into());
    }
    match path {
        "/metrics" => (200, "text/plain; version=0.0.4", lock(shared).metrics.render()),
        "/healthz" => {
            let s = lock(shared);
            if s.last_tick.elapsed() >= s.healthy_within {
                (503, "text/plain", "the main loop is stuck\n".into())
            } else if s.failed_polls >= s.unhealthy_after {
                (503, "text/plain", format!("{} consecutive failed polls of the Buildkite API\n", s.failed_polls))
            } else {
                (200, "text/plain", "ok\n".into())
            }
        }
        _ => {
            let secret = bearer.unwrap_or("");
            let s = lock(shared);
            let found = if secret.is_empty() {
                None
            } else {
                s.assignments.iter().find(|(k, _)| same(k, secret)).map(|(_, a)| a)
            };
            match found {
                None => (401, "application/json", "{\"message\":\"unknown VM secret\"}".into()),
                Some(Assignment { job: None, .. }) => (204, "application/json", String::new()),
                Some(Assignment { job: Some(job), agent_tags, name }) => {
                    let body = json!({
                        "job_id": job,
                        "agent_tags": agent_tags.join(","),
                        "agent_name": name,
                        "endpoint": s.agent_endpoint,
                        "token": s.agent_token,
                    });
                    (200, "application/json", body.to_string())
                }
            }
        }
    }
}
