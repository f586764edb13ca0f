//! Logging for one CPI call: lines go to stderr as they happen and are kept for the response's `log`.
//!
//! Every line, every error message and the response `log` pass through [`redact`], which replaces each
//! registered secret (passwords, keys, tokens, URL credentials found in the config and the request), where it
//! stands as a whole value, with `<redacted>` ([`crate::redact`], shared with agent-launcher). Secrets are
//! registered once, when the config and the request are parsed.
use crate::redact::Redactor;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

struct State {
    level: Level,
    secrets: Redactor,
    buffer: String,
    to_stderr: bool,
}

static STATE: Mutex<State> =
    Mutex::new(State { level: Level::Info, secrets: Redactor::new(), buffer: String::new(), to_stderr: true });

fn state() -> std::sync::MutexGuard<'static, State> {
    // a panic while logging must not make every later log call panic too
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sets the minimum level that is written.
pub fn set_level(level: Level) {
    state().level = level;
}

/// Turns stderr output on or off (tests of the library keep stderr quiet).
pub fn set_stderr(on: bool) {
    state().to_stderr = on;
}

/// Registers a secret: from now on it never appears in log lines, messages or the response.
/// Strings shorter than 4 characters are not registered (redacting "1" or "on" would mangle every line).
pub fn add_secret(secret: &str) {
    state().secrets.add(secret);
}

/// Replaces every registered secret in `text`.
pub fn redact(text: &str) -> String {
    state().secrets.redact(text)
}

/// Writes one log line (redacted) to stderr and to the `log` buffer.
pub fn log(level: Level, msg: &str) {
    let mut st = state();
    if level < st.level {
        return;
    }
    let tag = match level {
        Level::Debug => "DEBUG",
        Level::Info => "INFO",
        Level::Warn => "WARN",
        Level::Error => "ERROR",
    };
    let line = format!("{} [vmcpi] {tag} {}\n", timestamp(), st.secrets.redact(msg));
    if st.to_stderr {
        eprint!("{line}");
    }
    st.buffer.push_str(&line);
}

/// Takes the collected `log` text (already redacted).
pub fn take_buffer() -> String {
    std::mem::take(&mut state().buffer)
}

/// RFC 3339 UTC timestamp with milliseconds, computed without a date crate.
pub fn timestamp() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        now.subsec_millis()
    )
}

// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[macro_export]
macro_rules! debug { ($($t:tt)*) => { $crate::logger::log($crate::logger::Level::Debug, &format!($($t)*)) } }
#[macro_export]
macro_rules! info { ($($t:tt)*) => { $crate::logger::log($crate::logger::Level::Info, &format!($($t)*)) } }
#[macro_export]
macro_rules! warn { ($($t:tt)*) => { $crate::logger::log($crate::logger::Level::Warn, &format!($($t)*)) } }

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_longest_first() {
        let mut secrets = Redactor::new();
        secrets.add("hunter2");
        secrets.add("hunter2-long");
        assert_eq!(secrets.redact("a hunter2-long b hunter2"), "a <redacted> b <redacted>");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_778), (2026, 11, 21));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
