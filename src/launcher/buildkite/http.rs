//! The HTTP client of both Buildkite APIs, with their rules: the token only in the `Authorization` header,
//! 5xx answers and transport errors retried a few times with a short backoff, and a 429 or an exhausted
//! `RateLimit-Remaining` turned into [`BkError::RateLimited`] with the wait the server asked for.
use super::error::BkError;
use crate::launcher::source::HttpError;
use serde_json::Value;
use std::time::{Duration, Instant};

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

/// What one try of a request came to.
enum Try {
    Done(Result<Reply, BkError>),
    /// A transport error or a 5xx with attempts left: wait this long, then try again.
    Again(Duration),
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
            match self.try_once(what, method, url, body, attempt < self.attempts, backoff) {
                Try::Done(r) => return r,
                Try::Again(wait) => {
                    std::thread::sleep(wait);
                    backoff *= 2;
                }
            }
        }
    }

    fn send(
        &self,
        method: &str,
        url: &str,
        body: Option<&Value>,
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        if method == "GET" {
            return self.agent.get(url).header("Authorization", &self.auth).header("Accept", "application/json").call();
        }
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

    fn try_once(
        &mut self,
        what: &str,
        method: &str,
        url: &str,
        body: Option<&Value>,
        again: bool,
        backoff: Duration,
    ) -> Try {
        let mut resp = match self.send(method, url, body) {
            Ok(r) => r,
            Err(e) => return retry_transport(what, e, again, backoff),
        };
        let status = resp.status().as_u16();
        let limits = Limits::parse(
            header(&resp, "Retry-After").as_deref(),
            header(&resp, "RateLimit-Remaining").as_deref(),
            header(&resp, "RateLimit-Reset").as_deref(),
        );
        self.not_before = limits.exhausted().map(|r| Instant::now() + r);
        let link = header(&resp, "Link");
        // a body that does not arrive is a failed request (never an empty answer): the server may have
        // acted on it, so it is retried like a transport error (every request here may be repeated)
        let text = match resp.body_mut().read_to_string() {
            Ok(t) => t,
            Err(e) => return retry_transport(what, e, again, backoff),
        };
        if status == 429 {
            let wait = limits.after_429();
            self.not_before = Some(Instant::now() + wait);
            return Try::Done(Err(BkError::RateLimited { what: what.into(), retry_after: wait }));
        }
        if status >= 500 {
            if again {
                return Try::Again(limits.retry_after.unwrap_or(backoff).min(Duration::from_secs(2)));
            }
            if let Some(wait) = limits.retry_after {
                self.not_before = Some(Instant::now() + wait);
            }
        }
        if status >= 400 {
            return Try::Done(Err(
                HttpError::Status { what: what.into(), status, message: error_message(&text) }.into()
            ));
        }
        Try::Done(Ok(Reply { status, body: text, link }))
    }
}

/// A request that failed on the way (connect, send, or reading the body): with attempts left, logs it so
/// that the caller tries again after `backoff`; else the error.
fn retry_transport(what: &str, e: ureq::Error, again: bool, backoff: Duration) -> Try {
    let e = BkError::from(HttpError::transport(what, e));
    if !again {
        return Try::Done(Err(e));
    }
    crate::launcher::log::warn(&format!("{}; retrying", crate::launcher::log::chain(&e)));
    Try::Again(backoff)
}

/// Decodes a JSON answer.
pub fn json<T: serde::de::DeserializeOwned>(what: &str, body: &str) -> Result<T, BkError> {
    serde_json::from_str(body).map_err(|source| HttpError::Decode { what: what.into(), source }.into())
}

/// Percent-encodes a query or path value (RFC 3986 unreserved characters pass; `.` too is encoded, as Rails wants).
pub fn enc(s: &str) -> String {
    crate::common::encoding::percent_encode(s, b"-_~")
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
