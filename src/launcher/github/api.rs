//! The GitHub REST client with GitHub's rules, so that the launcher never storms the API:
//!
//! - **Conditional requests**: every `GET` answer with an `ETag` is kept, and the next `GET` of that URL sends
//!   `If-None-Match`; a `304` (which does not count against the primary rate limit) gives the kept body back.
//! - **Rate limits**: `x-ratelimit-remaining`/`x-ratelimit-reset` of every answer are kept; at 0 no request is
//!   sent until the reset. A `403`/`429` that says a limit was hit stops every request for what it asks:
//!   `retry-after`; else the reset when `x-ratelimit-remaining` is 0; else a minute, doubling while secondary
//!   limits keep answering (at most 30 minutes). Blocked requests fail at once ([`GhError::RateLimited`]) without
//!   reaching GitHub.
//! - **Pace**: writes (`POST`, `DELETE`) are at least `min_write_interval_ms` apart (GitHub asks for a second);
//!   reads stop at the launcher's own `max_requests_per_minute` ([`Api::budget_left`]); requests are serial.
//! - **Failures**: a `GET` that times out, breaks or answers 5xx is tried twice more (200 ms, 400 ms apart, or
//!   the `retry-after` up to 2 s); a write is not repeated (the caller decides: it may have been done).
//! - The token is only in the `Authorization` header; a `Link` to another host than `api_url` is not followed.
use super::auth::Auth;
use crate::launcher::log;
use crate::launcher::source::HttpError;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Why a request to GitHub failed.
#[derive(Debug, thiserror::Error)]
pub enum GhError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("{what}: GitHub's {} rate limit: no requests for {} s", if *secondary { "secondary" } else { "primary" }, wait.as_secs())]
    RateLimited { what: String, wait: Duration, secondary: bool },
    #[error("{what}: not done in a dry run")]
    ReadOnly { what: String },
}

crate::launcher::source::http_source_error!(GhError, wait);

/// What the client counted (the source's metrics).
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub read_ok: u64,
    pub not_modified: u64,
    pub write_ok: u64,
    pub token: u64,
    pub errors: u64,
    pub limited_primary: u64,
    pub limited_secondary: u64,
    /// Requests refused before sending (blocked by a rate limit).
    pub held_back: u64,
}

/// GitHub's rate-limit headers as last seen, and the block they call for.
#[derive(Debug, Default, Clone)]
pub struct RateState {
    pub remaining: Option<i64>,
    pub limit: Option<i64>,
    /// `x-ratelimit-reset`: Unix seconds.
    pub reset_at: Option<u64>,
    pub blocked_until: Option<Instant>,
    /// Secondary limits hit in a row (the wait doubles).
    secondary_hits: u32,
}

/// The longest block a header may ask for.
const MAX_BLOCK: Duration = Duration::from_secs(3600);

impl RateState {
    /// Reads the headers of an answer (`status` decides whether it says a limit was hit); returns the block
    /// it calls for, as (wait, secondary) when the answer was a rate-limit refusal.
    pub fn observe(
        &mut self,
        status: u16,
        message: &str,
        h: &dyn Fn(&str) -> Option<String>,
        now_unix: u64,
    ) -> Option<(Duration, bool)> {
        let num = |n: &str| h(n).and_then(|v| v.trim().parse::<i64>().ok());
        if let Some(r) = num("x-ratelimit-remaining") {
            self.remaining = Some(r);
        }
        if let Some(l) = num("x-ratelimit-limit") {
            self.limit = Some(l);
        }
        if let Some(r) = num("x-ratelimit-reset").filter(|r| *r >= 0) {
            self.reset_at = Some(r as u64);
        }
        let until_reset = || {
            let secs = self.reset_at.map(|r| r.saturating_sub(now_unix)).unwrap_or(60).max(1);
            Duration::from_secs(secs).min(MAX_BLOCK)
        };
        let retry_after = h("retry-after").and_then(|v| v.trim().parse::<f64>().ok()).filter(|s| s.is_finite());
        let exhausted = num("x-ratelimit-remaining") == Some(0);
        let limited = status == 429
            || (status == 403 && (exhausted || retry_after.is_some() || message.to_lowercase().contains("rate limit")));
        if !limited {
            if (200..300).contains(&status) || status == 304 {
                self.secondary_hits = 0;
            }
            // a success that used the last request of the window: nothing more until it resets
            if exhausted {
                self.blocked_until = Some(Instant::now() + until_reset());
            }
            return None;
        }
        let (wait, secondary) = if let Some(s) = retry_after {
            (Duration::from_secs_f64(s.clamp(1.0, MAX_BLOCK.as_secs_f64())), !exhausted)
        } else if exhausted {
            (until_reset(), false)
        } else {
            // a secondary limit without a hint: a minute, doubling while it keeps answering so
            let w = Duration::from_secs(60u64 << self.secondary_hits.min(5)).min(Duration::from_secs(1800));
            (w, true)
        };
        if secondary {
            self.secondary_hits += 1;
        }
        self.blocked_until = Some(Instant::now() + wait);
        Some((wait, secondary))
    }

    /// How long requests are blocked from now.
    pub fn blocked(&self) -> Option<Duration> {
        self.blocked_until.and_then(|t| t.checked_duration_since(Instant::now())).filter(|d| !d.is_zero())
    }

    /// Whether less than a tenth of the hourly budget (at least 50 requests) is left: the source then reads
    /// at most once a minute until the window resets.
    pub fn low(&self, now_unix: u64) -> bool {
        match (self.remaining, self.limit, self.reset_at) {
            (Some(r), Some(l), Some(reset)) => r < (l / 10).max(50) && reset > now_unix,
            _ => false,
        }
    }
}

/// A `GET` answer.
#[derive(Debug, Clone)]
pub struct Got {
    pub body: String,
    /// False when GitHub answered 304 and `body` is the kept one.
    pub fresh: bool,
    /// The `Link: rel="next"` URL (on `api_url`'s host only).
    pub next: Option<String>,
}

/// The most `GET` answers kept for conditional requests.
const CACHE_MAX: usize = 4096;
/// The most bytes read of one answer.
const BODY_MAX: u64 = 16 * 1024 * 1024;

/// The client.
pub struct Api {
    agent: ureq::Agent,
    base: String,
    /// `scheme://host[:port]` of `base`: `Link` URLs elsewhere are not followed.
    origin: String,
    pub auth: Auth,
    cache: HashMap<String, (String, String, Option<String>)>,
    pub rate: RateState,
    last_write: Option<Instant>,
    min_write: Duration,
    window: VecDeque<Instant>,
    per_minute: u32,
    pub stats: Stats,
    pub read_only: bool,
    /// Tries of a `GET` (transport errors and 5xx).
    pub attempts: u32,
}

enum Kind {
    Read,
    Write,
}

fn header(resp: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(|s| s.to_string())
}

/// The message of an error answer: its JSON `message`, else the start of the body.
pub fn error_message(body: &str) -> String {
    crate::launcher::buildkite::error_message(body)
}

fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    format!("{scheme}://{}", rest.split('/').next().unwrap_or(""))
}

impl Api {
    pub fn new(base: &str, auth: Auth, timeout: Duration, min_write: Duration, per_minute: u32) -> Api {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .user_agent(concat!("agent-launcher/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let base = base.trim_end_matches('/').to_string();
        Api {
            agent,
            origin: origin_of(&base),
            base,
            auth,
            cache: HashMap::new(),
            rate: RateState::default(),
            last_write: None,
            min_write,
            window: VecDeque::new(),
            per_minute,
            stats: Stats::default(),
            read_only: false,
            attempts: 3,
        }
    }

    /// The API base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Requests the launcher still allows itself in the current minute.
    pub fn budget_left(&mut self) -> u32 {
        let minute_ago = Instant::now().checked_sub(Duration::from_secs(60));
        while self.window.front().is_some_and(|t| minute_ago.is_some_and(|m| *t < m)) {
            self.window.pop_front();
        }
        self.per_minute.saturating_sub(self.window.len() as u32)
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        }
    }

    fn blocked(&mut self, what: &str) -> Result<(), GhError> {
        if let Some(wait) = self.rate.blocked() {
            self.stats.held_back += 1;
            return Err(GhError::RateLimited { what: what.into(), wait, secondary: false });
        }
        Ok(())
    }

    /// The `Authorization` value; an App's installation token is made (or renewed) first.
    fn authorization(&mut self, what: &str) -> Result<String, GhError> {
        match &self.auth {
            Auth::Token(t) => return Ok(format!("Bearer {t}")),
            Auth::App(app) => {
                if let Some(t) = app.current() {
                    return Ok(format!("Bearer {t}"));
                }
            }
        }
        self.installation_token(what)?;
        match &self.auth {
            Auth::App(app) if app.token.is_some() => {
                Ok(format!("Bearer {}", app.token.as_ref().map(|(t, _)| t.as_str()).unwrap_or_default()))
            }
            _ => Err(HttpError::Invalid { what: what.into(), message: "no installation token".into() }.into()),
        }
    }

    /// Exchanges a JWT for an installation access token.
    fn installation_token(&mut self, what: &str) -> Result<(), GhError> {
        let Auth::App(app) = &self.auth else { return Ok(()) };
        let now = crate::launcher::clock::now();
        let jwt = app
            .key
            .jwt(&app.iss, now)
            .map_err(|e| HttpError::Invalid { what: what.into(), message: log::chain(&e) })?;
        let url = format!("{}/app/installations/{}/access_tokens", self.base, app.installation_id);
        let what_t = format!("{what}: installation access token");
        self.blocked(&what_t)?;
        self.window.push_back(Instant::now());
        let resp = self
            .agent
            .post(&url)
            .header("Authorization", &format!("Bearer {jwt}"))
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
            .send_empty();
        self.stats.token += 1;
        let (status, body) = self.finish(&what_t, resp, "POST")?;
        if status != 201 && status != 200 {
            let message = match status {
                401 => format!(
                    "{} (is app_id the App's client ID or app ID, and the key its private key?)",
                    error_message(&body)
                ),
                404 => format!(
                    "{} (no installation {} of this App: check installation_id)",
                    error_message(&body),
                    match &self.auth {
                        Auth::App(a) => a.installation_id,
                        _ => 0,
                    }
                ),
                _ => error_message(&body),
            };
            self.stats.errors += 1;
            return Err(HttpError::Status { what: what_t, status, message }.into());
        }
        let v: Value =
            serde_json::from_str(&body).map_err(|source| HttpError::Decode { what: what_t.clone(), source })?;
        let token = v["token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| HttpError::Invalid { what: what_t.clone(), message: "the answer has no token".into() })?;
        if let Auth::App(app) = &mut self.auth {
            app.keep(token.to_string(), v["expires_at"].as_str().unwrap_or(""), crate::launcher::clock::now_f());
        }
        Ok(())
    }

    /// Reads an answer's status and body, keeping its rate-limit headers; a rate-limit refusal is an error.
    fn finish(
        &mut self,
        what: &str,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        _method: &str,
    ) -> Result<(u16, String), GhError> {
        let mut resp = resp.map_err(|e| HttpError::transport(what, e))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(BODY_MAX)
            .read_to_string()
            .map_err(|e| HttpError::transport(what, e))?;
        let headers: Vec<(String, String)> =
            ["x-ratelimit-remaining", "x-ratelimit-limit", "x-ratelimit-reset", "retry-after"]
                .iter()
                .filter_map(|n| header(&resp, n).map(|v| (n.to_string(), v)))
                .collect();
        let h = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let message = if status >= 400 { error_message(&body) } else { String::new() };
        if let Some((wait, secondary)) = self.rate.observe(status, &message, &h, crate::launcher::clock::now()) {
            if secondary {
                self.stats.limited_secondary += 1;
            } else {
                self.stats.limited_primary += 1;
            }
            log::warn(&format!(
                "{what}: GitHub's {} rate limit (HTTP {status}: {message}); no requests for {} s",
                if secondary { "secondary" } else { "primary" },
                wait.as_secs()
            ));
            return Err(GhError::RateLimited { what: what.into(), wait, secondary });
        }
        Ok((status, body))
    }

    fn send(
        &mut self,
        what: &str,
        method: &str,
        url: &str,
        body: Option<&Value>,
        kind: Kind,
        etag: Option<&str>,
    ) -> Result<(u16, String, Option<String>, Option<String>), GhError> {
        self.blocked(what)?;
        if let Kind::Write = kind {
            if self.read_only {
                return Err(GhError::ReadOnly { what: what.into() });
            }
            if let Some(t) = self.last_write {
                let next = t + self.min_write;
                if let Some(d) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
            }
        }
        let auth = self.authorization(what)?;
        self.blocked(what)?;
        self.window.push_back(Instant::now());
        let resp = match method {
            "POST" => with_headers(self.agent.post(url), &auth, None)
                .header("Content-Type", "application/json")
                .send(body.map(|v| v.to_string()).unwrap_or_default().as_str()),
            "DELETE" => with_headers(self.agent.delete(url), &auth, None).call(),
            _ => with_headers(self.agent.get(url), &auth, etag).call(),
        };
        if let Kind::Write = kind {
            self.last_write = Some(Instant::now());
        }
        let (etag_h, link) = match &resp {
            Ok(r) => (header(r, "etag"), header(r, "link")),
            Err(_) => (None, None),
        };
        let (status, text) = self.finish(what, resp, method)?;
        if status == 401 {
            if let Auth::App(app) = &mut self.auth {
                app.drop_token();
            }
        }
        Ok((status, text, etag_h, link))
    }

    /// A `GET` (conditional when an answer of this URL is kept), tried again on transport errors and 5xx.
    pub fn get(&mut self, what: &str, path: &str) -> Result<Got, GhError> {
        let url = self.url(path);
        if !url.starts_with(&self.origin) {
            return Err(
                HttpError::Invalid { what: what.into(), message: format!("{url} is not on {}", self.origin) }.into()
            );
        }
        let mut backoff = Duration::from_millis(200);
        let mut retried_auth = false;
        for attempt in 1..=self.attempts.max(1) {
            let kept = self.cache.get(&url).map(|(e, _, _)| e.clone());
            let last = attempt == self.attempts.max(1);
            match self.send(what, "GET", &url, None, Kind::Read, kept.as_deref()) {
                Ok((304, _, _, _)) if kept.is_some() => {
                    self.stats.not_modified += 1;
                    let (_, body, next) = self.cache.get(&url).cloned().unwrap_or_default();
                    return Ok(Got { body, fresh: false, next });
                }
                Ok((401, _, _, _)) if matches!(self.auth, Auth::App(_)) && !retried_auth => {
                    // the installation token was refused (revoked, expired early): a new one, once
                    retried_auth = true;
                }
                Ok((s, text, etag, link)) if (200..300).contains(&s) => {
                    self.stats.read_ok += 1;
                    let next = link
                        .as_deref()
                        .and_then(crate::launcher::buildkite::link_next)
                        .filter(|n| n.starts_with(&self.origin));
                    if let Some(e) = etag {
                        if self.cache.len() >= CACHE_MAX {
                            self.cache.clear();
                        }
                        self.cache.insert(url.clone(), (e, text.clone(), next.clone()));
                    }
                    return Ok(Got { body: text, fresh: true, next });
                }
                Ok((s, text, _, _)) if s >= 500 && !last => {
                    log::warn(&format!("{what}: HTTP {s}: {}; trying again", error_message(&text)));
                    std::thread::sleep(backoff);
                    backoff *= 2;
                }
                Ok((s, text, _, _)) => {
                    self.stats.errors += 1;
                    return Err(
                        HttpError::Status { what: what.into(), status: s, message: error_message(&text) }.into()
                    );
                }
                Err(e @ GhError::Http(HttpError::Transport { .. } | HttpError::Timeout { .. })) if !last => {
                    log::warn(&format!("{}; trying again", log::chain(&e)));
                    std::thread::sleep(backoff);
                    backoff *= 2;
                }
                Err(e) => {
                    if !matches!(e, GhError::RateLimited { .. }) {
                        self.stats.errors += 1;
                    }
                    return Err(e);
                }
            }
        }
        self.stats.errors += 1;
        Err(HttpError::Invalid { what: what.into(), message: "no answer after retries".into() }.into())
    }

    /// A `GET` of a JSON answer.
    pub fn get_json(&mut self, what: &str, path: &str) -> Result<(Value, Got), GhError> {
        let got = self.get(what, path)?;
        let v = serde_json::from_str(&got.body).map_err(|source| HttpError::Decode { what: what.into(), source })?;
        Ok((v, got))
    }

    /// A write (`POST` with a JSON body, or `DELETE`), paced, never repeated here; returns the status and body
    /// of any answer that is not a rate-limit refusal.
    pub fn write(
        &mut self,
        what: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, String), GhError> {
        let url = self.url(path);
        let mut retried_auth = false;
        loop {
            let r = self.send(what, method, &url, body, Kind::Write, None);
            match r {
                Ok((401, _, _, _)) if matches!(self.auth, Auth::App(_)) && !retried_auth => retried_auth = true,
                Ok((s, text, _, _)) => {
                    if s < 400 {
                        self.stats.write_ok += 1;
                    } else {
                        self.stats.errors += 1;
                    }
                    return Ok((s, text));
                }
                Err(e) => {
                    if !matches!(e, GhError::RateLimited { .. } | GhError::ReadOnly { .. }) {
                        self.stats.errors += 1;
                    }
                    return Err(e);
                }
            }
        }
    }
}

/// The headers of every request.
fn with_headers<B>(b: ureq::RequestBuilder<B>, auth: &str, etag: Option<&str>) -> ureq::RequestBuilder<B> {
    let b = b
        .header("Authorization", auth)
        .header("Accept", "application/vnd.github+json")
        .header("X-GitHub-Api-Version", "2022-11-28");
    match etag {
        Some(e) => b.header("If-None-Match", e),
        None => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdrs<'a>(list: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |n: &str| list.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string())
    }

    #[test]
    fn rate_limit_answers_say_how_long_to_wait() {
        let now = 1_700_000_000;
        let s = Duration::from_secs;
        let mut r = RateState::default();
        // a plain success: counts kept, no block
        assert_eq!(
            r.observe(
                200,
                "",
                &hdrs(&[
                    ("x-ratelimit-remaining", "4999"),
                    ("x-ratelimit-limit", "5000"),
                    ("x-ratelimit-reset", "1700000300")
                ]),
                now
            ),
            None
        );
        assert_eq!((r.remaining, r.limit, r.reset_at), (Some(4999), Some(5000), Some(1_700_000_300)));
        assert!(r.blocked().is_none() && !r.low(now));
        // primary: 403 with remaining 0 waits for the reset
        let w = r.observe(
            403,
            "API rate limit exceeded for installation",
            &hdrs(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1700000042")]),
            now,
        );
        assert_eq!(w, Some((s(42), false)));
        assert!(r.blocked().is_some_and(|b| b > s(40)));
        // secondary with retry-after: that long
        let mut r = RateState::default();
        assert_eq!(r.observe(429, "secondary", &hdrs(&[("retry-after", "7")]), now), Some((s(7), true)));
        // secondary without a hint: a minute, doubling
        let mut r = RateState::default();
        let msg = "You have exceeded a secondary rate limit";
        assert_eq!(r.observe(403, msg, &hdrs(&[]), now), Some((s(60), true)));
        assert_eq!(r.observe(403, msg, &hdrs(&[]), now), Some((s(120), true)));
        assert_eq!(r.observe(200, "", &hdrs(&[]), now), None);
        assert_eq!(r.observe(403, msg, &hdrs(&[]), now), Some((s(60), true)), "a success resets the doubling");
        // a 403 that is not about limits is an ordinary error
        let mut r = RateState::default();
        assert_eq!(
            r.observe(403, "Resource not accessible by integration", &hdrs(&[("x-ratelimit-remaining", "4000")]), now),
            None
        );
        assert!(r.blocked().is_none());
        // a success that used the window up blocks until the reset
        assert_eq!(
            r.observe(200, "", &hdrs(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1700000005")]), now),
            None
        );
        assert!(r.blocked().is_some_and(|b| b <= s(5)));
        // unreadable values are ignored; huge waits are capped at an hour
        let mut r = RateState::default();
        assert_eq!(
            r.observe(429, "", &hdrs(&[("retry-after", "NaN"), ("x-ratelimit-remaining", "x")]), now),
            Some((s(60), true))
        );
        let mut r = RateState::default();
        assert_eq!(r.observe(429, "", &hdrs(&[("retry-after", "1e12")]), now), Some((s(3600), true)));
        // low budget: under a tenth (at least 50) left before the reset
        let mut r = RateState::default();
        r.observe(
            200,
            "",
            &hdrs(&[
                ("x-ratelimit-remaining", "400"),
                ("x-ratelimit-limit", "5000"),
                ("x-ratelimit-reset", "1700000300"),
            ]),
            now,
        );
        assert!(r.low(now) && !r.low(1_700_000_301));
    }

    #[test]
    fn links_elsewhere_are_not_followed() {
        assert_eq!(origin_of("https://ghe.example.com/api/v3"), "https://ghe.example.com");
        assert_eq!(origin_of("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        let mut api = Api::new(
            "http://127.0.0.1:1/api/v3",
            Auth::Token("t".into()),
            Duration::from_millis(100),
            Duration::ZERO,
            10,
        );
        let e = api.get("list", "https://evil.example/x").unwrap_err();
        assert!(e.to_string().contains("is not on http://127.0.0.1:1"), "{e}");
        assert_eq!(api.budget_left(), 10, "nothing was sent");
    }
}
