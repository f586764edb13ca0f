//! Logging for one CPI call: lines go to stderr as they happen and are kept for the response's `log`.
//!
//! Every line, every error message and the response `log` pass through [`redact`], which replaces each
//! registered secret (passwords, keys, tokens, URL credentials found in the config and the request), where it
//! stands as a whole value, with `<redacted>` ([`crate::redact`], shared with agent-launcher). Secrets are
//! registered once, when the config and the request are parsed.
use crate::redact::Redactor;
use std::sync::Mutex;

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
    crate::rfc3339::now_millis()
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
}
