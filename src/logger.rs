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
///
/// Stderr is the caller's pipe, and the caller may be gone (a director worker killed mid-task closes its end):
/// a failed write is not an error of the call. The first one turns stderr output off for the rest of the
/// process and the line stays in the `log` buffer. The write happens outside the logger's lock, so nothing
/// that goes wrong while writing (a panic included: the panic hook logs too) can find the lock held by its
/// own thread and wait for it for ever.
pub fn log(level: Level, msg: &str) {
    let line = {
        let mut st = state();
        if level < st.level {
            return;
        }
        let line = format_line(level, &st.secrets.redact(msg));
        st.buffer.push_str(&line);
        if !st.to_stderr {
            return;
        }
        line
    };
    if write_stderr(&line).is_err() {
        state().to_stderr = false;
    }
}

/// Logs from the panic hook: like [`log`], but it never waits for the logger's lock (the panic may have
/// happened while this very thread held it). When the lock is not free at once, a fixed line without the
/// panic's text (which might hold a secret that only the locked redactor knows) goes to stderr.
pub fn log_panic(msg: &str) {
    let line = match STATE.try_lock() {
        Ok(mut st) => panic_line(&mut st, msg),
        Err(std::sync::TryLockError::Poisoned(p)) => panic_line(&mut p.into_inner(), msg),
        Err(std::sync::TryLockError::WouldBlock) => Some(format_line(
            Level::Error,
            "panic while the logger was busy (its text is withheld: it may hold a secret)",
        )),
    };
    if let Some(line) = line {
        let _ = write_stderr(&line);
    }
}

fn panic_line(st: &mut State, msg: &str) -> Option<String> {
    let line = format_line(Level::Error, &st.secrets.redact(msg));
    st.buffer.push_str(&line);
    st.to_stderr.then_some(line)
}

fn format_line(level: Level, redacted: &str) -> String {
    let tag = match level {
        Level::Debug => "DEBUG",
        Level::Info => "INFO",
        Level::Warn => "WARN",
        Level::Error => "ERROR",
    };
    format!("{} [vmcpi] {tag} {redacted}\n", timestamp())
}

/// One line to stderr; an error (EPIPE: the reader is gone) is returned, never a panic (`eprint!` panics).
fn write_stderr(line: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    err.write_all(line.as_bytes()).and_then(|_| err.flush())
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
