//! The launcher's HTTP listener: `/metrics`, `/healthz`, and `/v1/assignment` for the VMs.
//!
//! A VM authenticates at `/v1/assignment` with `Authorization: Bearer <secret>`, the per-VM secret the
//! launcher put into its create_vm `env`. The answer tells it which job to acquire, the agent tags, the agent
//! endpoint and the agent token; a warm VM that has no job yet gets `204` and asks again. So the Buildkite
//! token is never in a VM's settings or metadata, and each VM can only ever learn its own job.
use crate::launcher::metrics::Metrics;
use serde_json::json;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
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
    pub agent_endpoint: String,
    pub agent_token: String,
}

pub type SharedRef = Arc<Mutex<Shared>>;

pub fn lock(s: &SharedRef) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Binds the listener and serves it on a thread; returns the bound address.
pub fn serve(addr: &str, shared: SharedRef) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new().name("http".into()).spawn(move || {
        for stream in listener.incoming().flatten() {
            let shared = shared.clone();
            // one short-lived thread per connection: requests are tiny and rare
            let _ = std::thread::Builder::new().name("http-conn".into()).spawn(move || {
                let _ = handle(stream, &shared);
            });
        }
    })?;
    Ok(local)
}

fn respond(mut s: &TcpStream, status: &str, ctype: &str, body: &str) -> std::io::Result<()> {
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    s.flush()
}

fn handle(stream: TcpStream, shared: &SharedRef) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(&stream);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let mut auth = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("authorization") {
                auth = Some(v.trim().to_string());
            }
        }
    }
    let mut parts = first.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => {
            let body = lock(shared).metrics.render();
            respond(&stream, "200 OK", "text/plain; version=0.0.4", &body)
        }
        ("GET", "/healthz") => {
            let ok = {
                let s = lock(shared);
                s.last_tick.elapsed() < s.healthy_within
            };
            if ok {
                respond(&stream, "200 OK", "text/plain", "ok\n")
            } else {
                respond(&stream, "503 Service Unavailable", "text/plain", "the main loop is stuck\n")
            }
        }
        ("GET", "/v1/assignment") => {
            let secret = auth.as_deref().and_then(|a| a.strip_prefix("Bearer ")).unwrap_or("").trim().to_string();
            let s = lock(shared);
            match s.assignments.get(&secret).filter(|_| !secret.is_empty()) {
                None => respond(&stream, "401 Unauthorized", "application/json", "{\"message\":\"unknown VM secret\"}"),
                Some(Assignment { job: None, .. }) => respond(&stream, "204 No Content", "application/json", ""),
                Some(Assignment { job: Some(job), agent_tags, name }) => {
                    let body = json!({
                        "job_id": job,
                        "agent_tags": agent_tags.join(","),
                        "agent_name": name,
                        "endpoint": s.agent_endpoint,
                        "token": s.agent_token,
                    });
                    respond(&stream, "200 OK", "application/json", &body.to_string())
                }
            }
        }
        _ => respond(&stream, "404 Not Found", "text/plain", "not found\n"),
    }
}
