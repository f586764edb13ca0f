//! The optional webhook: `POST /v1/github/webhook` takes GitHub's `workflow_job` deliveries, so that a queued
//! job gets its VM without waiting for the next REST poll, and a runner's job is seen starting and ending at
//! once. Polling goes on and reconciles: a delivery can be lost, late or repeated.
//!
//! A delivery counts only when its `X-Hub-Signature-256` is the HMAC-SHA256 of its body with the webhook's
//! secret (checked in constant time by `ring::hmac::verify`); anything else is answered 401 and dropped. The
//! body is bounded by the route ([`MAX_BODY`]), the events kept are bounded ([`MAX_EVENTS`]), events of
//! repositories outside the launcher's scope are ignored, and the handler only queues the event and wakes the
//! loop (it runs on the listener's thread).
use crate::launcher::server::{Reply, Request, Route};
use crate::launcher::source::Wake;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The path of the webhook.
pub const PATH: &str = "/v1/github/webhook";
/// The largest delivery taken (a `workflow_job` delivery is a few KiB).
pub const MAX_BODY: usize = 1024 * 1024;
/// The most events waiting for the loop (the oldest go first).
pub const MAX_EVENTS: usize = 10_000;

/// A `workflow_job` delivery, as the loop needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct HookJob {
    /// `queued`, `in_progress`, `completed` or `waiting`.
    pub action: String,
    pub id: u64,
    pub run_id: u64,
    /// `owner/repo`.
    pub repo: String,
    pub status: String,
    pub conclusion: Option<String>,
    /// Lower case.
    pub labels: Vec<String>,
    pub runner_name: Option<String>,
    pub created_at: String,
}

/// Counts by outcome.
#[derive(Debug, Default, Clone)]
pub struct HookStats {
    pub accepted: u64,
    pub ignored: u64,
    pub bad_signature: u64,
    pub malformed: u64,
    pub dropped: u64,
}

/// Deliveries waiting for the loop.
#[derive(Debug, Default)]
pub struct Inbox {
    events: Mutex<VecDeque<(HookJob, Instant)>>,
    pub stats: Mutex<HookStats>,
}

impl Inbox {
    fn push(&self, e: HookJob) {
        let mut q = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= MAX_EVENTS {
            q.pop_front();
            self.stats.lock().unwrap_or_else(|p| p.into_inner()).dropped += 1;
        }
        q.push_back((e, Instant::now()));
    }

    /// The events since the last call, oldest first.
    pub fn drain(&self) -> Vec<(HookJob, Instant)> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect()
    }

    fn count(&self, f: impl FnOnce(&mut HookStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// Whether `header` (`sha256=<hex>`) is the HMAC-SHA256 of `body` with `secret`, compared in constant time.
pub fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else { return false };
    if hex.len() != 64 {
        return false;
    }
    let Some(tag) =
        (0..32).map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()).collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    ring::hmac::verify(&key, body, &tag).is_ok()
}

/// The `X-Hub-Signature-256` of `body` (for tests and the fake GitHub).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, body);
    format!("sha256={}", tag.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Reads a `workflow_job` delivery; `None` when it is not one the launcher can use.
pub fn parse(body: &[u8]) -> Option<HookJob> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let j = &v["workflow_job"];
    let text = |x: &Value| x.as_str().map(String::from);
    Some(HookJob {
        action: text(&v["action"])?,
        id: j["id"].as_u64()?,
        run_id: j["run_id"].as_u64().unwrap_or(0),
        repo: text(&v["repository"]["full_name"])?,
        status: text(&j["status"]).unwrap_or_default(),
        conclusion: text(&j["conclusion"]),
        labels: j["labels"].as_array()?.iter().filter_map(|l| l.as_str().map(str::to_lowercase)).collect(),
        runner_name: text(&j["runner_name"]).filter(|n| !n.is_empty()),
        created_at: text(&j["created_at"]).unwrap_or_default(),
    })
}

/// The webhook's route: `in_scope` says whether a repository (`owner/repo`) is the launcher's.
pub fn route(
    secret: Arc<Vec<u8>>,
    inbox: Arc<Inbox>,
    in_scope: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    wake: Wake,
) -> Route {
    Route::post(PATH, MAX_BODY, move |r: &Request<'_>| {
        if !verify(&secret, r.body, r.header("x-hub-signature-256")) {
            inbox.count(|s| s.bad_signature += 1);
            return Reply::new(401, "application/json", "{\"message\":\"bad or missing X-Hub-Signature-256\"}");
        }
        match r.header("x-github-event").unwrap_or("") {
            "ping" => {
                inbox.count(|s| s.ignored += 1);
                Reply::text(200, "pong\n")
            }
            "workflow_job" => match parse(r.body) {
                None => {
                    inbox.count(|s| s.malformed += 1);
                    Reply::new(400, "application/json", "{\"message\":\"not a workflow_job delivery\"}")
                }
                Some(e) if !in_scope(&e.repo) => {
                    inbox.count(|s| s.ignored += 1);
                    Reply::text(202, "ignored: not a repository of this launcher\n")
                }
                Some(e) => {
                    inbox.push(e);
                    inbox.count(|s| s.accepted += 1);
                    wake();
                    Reply::text(202, "accepted\n")
                }
            },
            _ => {
                inbox.count(|s| s.ignored += 1);
                Reply::text(202, "ignored: only workflow_job events are used\n")
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_as_githubs_docs_give_them() {
        // the test vector of GitHub's "Validating webhook deliveries"
        let secret = b"It's a Secret to Everybody";
        let want = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(secret, b"Hello, World!"), want);
        assert!(verify(secret, b"Hello, World!", Some(want)));
        assert!(verify(secret, b"Hello, World!", Some(&want.to_uppercase().replace("SHA256=", "sha256="))));
        for bad in [
            None,
            Some(""),
            Some("sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),
            Some("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e18"),
            Some("sha256=757107"),
            Some("sha256=zz7107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),
            Some("sha256=é57107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1"),
        ] {
            assert!(!verify(secret, b"Hello, World!", bad), "{bad:?}");
        }
        assert!(!verify(b"another secret", b"Hello, World!", Some(want)));
        assert!(!verify(secret, b"Hello, World?", Some(want)));
    }

    #[test]
    fn deliveries_are_read_for_what_the_loop_needs() {
        let body = br#"{"action":"in_progress","repository":{"full_name":"acme/app"},
            "workflow_job":{"id":30433642,"run_id":5,"status":"in_progress","conclusion":null,
            "labels":["self-hosted","Linux"],"runner_name":"l1-linux-3043364-0a1b2c3d","created_at":"2026-01-05T10:00:00Z"}}"#;
        let e = parse(body).unwrap();
        assert_eq!((e.action.as_str(), e.id, e.run_id, e.repo.as_str()), ("in_progress", 30433642, 5, "acme/app"));
        assert_eq!(e.labels, vec!["self-hosted", "linux"]);
        assert_eq!(e.runner_name.as_deref(), Some("l1-linux-3043364-0a1b2c3d"));
        assert_eq!(e.conclusion, None);
        assert!(parse(b"{}").is_none());
        assert!(parse(b"not json").is_none());
        assert!(parse(
            br#"{"action":"queued","repository":{"full_name":"a/b"},"workflow_job":{"id":"x","labels":[]}}"#
        )
        .is_none());
    }
}
