//! Logging for one CPI call: lines go to stderr as they happen and are kept for the response's `log`.
//!
//! Secrets are registered when the config and the request are parsed (passwords, keys, tokens, URL
//! credentials; the config's are [`crate::common::secret::Secret`]s, which print as `<redacted>`). Outside text —
//! tool output, API errors, parse errors that echo input — is scrubbed of all of them with [`redact`]
//! where it is turned into a message ([`crate::common::redact`], shared with agent-launcher).
//!
//! A safety net ([`safety_net`], and the log macros through [`log_fmt`]) then masks what may have slipped
//! through, in a way that cannot mask vmcpi's own words (a masked own word would give the secret away: with
//! the secret `finished`, "has_vm finished in 3 ms" must not become "has_vm <redacted> in 3 ms"): it takes
//! only secrets that hold a word found in none of vmcpi's own string literals ([`crate::common::vocabulary`]) and
//! that are neither short nor a number ([`crate::common::redact::ambiguous`]); the log macros also leave the
//! literal text of their format string alone. The other secrets are masked at the sources only.
use crate::common::redact::Redactor;
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

/// Registers a secret: from now on it is scrubbed from outside text, command lines and log arguments.
pub fn add_secret(secret: &str) {
    state().secrets.add(secret);
}

/// Outside text (tool output, an API error, a parse error that echoes input) with every registered secret
/// replaced where it stands whole, however short.
pub fn redact(text: &str) -> String {
    state().secrets.redact(text)
}

/// One command-line argument for display: `<redacted>` when it is a registered secret.
pub fn redact_arg(arg: &str) -> String {
    state().secrets.redact_arg(arg)
}

/// Writes one log line of vmcpi's own text to stderr and to the `log` buffer, as it is.
pub fn log(level: Level, msg: &str) {
    write(level, |_| msg.to_string());
}

/// Writes one log line made by `format!(fmt, …)`: the literal text of `fmt` is vmcpi's own and stays as it
/// is; what the arguments put between it passes the safety net (see the module's text).
pub fn log_fmt(level: Level, fmt: &'static str, msg: &str) {
    write(level, |r| r.redact_where(msg, &own_spans(fmt, msg).unwrap_or_default(), net_takes));
}

/// vmcpi's own text (an error message, whose outside parts were scrubbed where they entered) with the
/// secrets that cannot be mistaken for its own words masked: the last guard before it is written out.
pub fn safety_net(text: &str) -> String {
    state().secrets.redact_where(text, &[], net_takes)
}

/// Whether the safety net takes a secret: not short, not a number, and holding a word that vmcpi's own
/// messages never use.
fn net_takes(secret: &str) -> bool {
    !crate::common::redact::ambiguous(secret) && !crate::common::vocabulary::all_own_words(secret)
}

/// Formats one line under the logger's lock and writes it to stderr outside it.
///
/// Stderr is the caller's pipe, and the caller may be gone (a director worker killed mid-task closes its end):
/// a failed write is not an error of the call. The first one turns stderr output off for the rest of the
/// process; the line stays in the `log` buffer. `eprint!` would panic there, and the panic hook logs too: with
/// the lock held by this very thread it would wait for it for ever (a CPI asleep in `futex_do_wait`, holding
/// its in-flight marker's lock, before this was fixed).
fn write(level: Level, text: impl FnOnce(&Redactor) -> String) {
    let line = {
        let mut st = state();
        if level < st.level {
            return;
        }
        let line = format_line(level, &text(&st.secrets));
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

/// Logs from the panic hook, the panic's text scrubbed of every secret like outside text ([`redact`]). It never
/// waits for the logger's lock (the panic may have happened while this very thread held it): when the lock is
/// not free at once, a fixed line without the panic's text (which might hold a secret that only the locked
/// redactor knows) goes to stderr.
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

fn format_line(level: Level, text: &str) -> String {
    let tag = match level {
        Level::Debug => "DEBUG",
        Level::Info => "INFO",
        Level::Warn => "WARN",
        Level::Error => "ERROR",
    };
    format!("{} [vmcpi] {tag} {text}\n", timestamp())
}

/// One line to stderr; an error (EPIPE: the reader is gone) is returned, never a panic.
fn write_stderr(line: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    err.write_all(line.as_bytes()).and_then(|_| err.flush())
}

/// The literal pieces of a format string (`{{`/`}}` unescaped), split at its placeholders.
fn literal_pieces(fmt: &str) -> Vec<String> {
    let mut pieces = vec![String::new()];
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                pieces.last_mut().unwrap_or(&mut String::new()).push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                pieces.last_mut().unwrap_or(&mut String::new()).push('}');
            }
            '{' => {
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                }
                pieces.push(String::new());
            }
            c => pieces.last_mut().unwrap_or(&mut String::new()).push(c),
        }
    }
    pieces
}

/// Where the literal pieces of `fmt` stand in `msg` (its formatted text): the first at the start, the last
/// at the end, each other one at its leftmost place after the one before. `None` when they cannot be found
/// (then all of `msg` counts as arguments).
fn own_spans(fmt: &str, msg: &str) -> Option<Vec<std::ops::Range<usize>>> {
    let pieces = literal_pieces(fmt);
    let (first, rest) = pieces.split_first()?;
    if !msg.starts_with(first.as_str()) {
        return None;
    }
    let mut spans = Vec::with_capacity(pieces.len());
    spans.push(0..first.len());
    let mut at = first.len();
    for (i, p) in rest.iter().enumerate() {
        let start = if i + 1 == rest.len() {
            // the last piece ends the message
            let s = msg.len().checked_sub(p.len())?;
            (s >= at && msg[s..] == **p).then_some(s)?
        } else {
            at + msg.get(at..)?.find(p.as_str())?
        };
        spans.push(start..start + p.len());
        at = start + p.len();
    }
    Some(spans)
}

/// Takes the collected `log` text (already redacted).
pub fn take_buffer() -> String {
    std::mem::take(&mut state().buffer)
}

/// RFC 3339 UTC timestamp with milliseconds, computed without a date crate.
pub fn timestamp() -> String {
    crate::common::rfc3339::now_millis()
}

#[macro_export]
macro_rules! debug { ($fmt:literal $($t:tt)*) => { $crate::common::logger::log_fmt($crate::common::logger::Level::Debug, $fmt, &format!($fmt $($t)*)) } }
#[macro_export]
macro_rules! info { ($fmt:literal $($t:tt)*) => { $crate::common::logger::log_fmt($crate::common::logger::Level::Info, $fmt, &format!($fmt $($t)*)) } }
#[macro_export]
macro_rules! warn { ($fmt:literal $($t:tt)*) => { $crate::common::logger::log_fmt($crate::common::logger::Level::Warn, $fmt, &format!($fmt $($t)*)) } }

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_words_are_the_literal_pieces() {
        assert_eq!(literal_pieces("{} finished in {} ms"), ["", " finished in ", " ms"]);
        assert_eq!(literal_pieces("{{x}} {a:>5} {}"), ["{x} ", " ", ""]);
        let msg = format!("{} finished in {} ms", "has_vm", 3);
        assert_eq!(own_spans("{} finished in {} ms", &msg), Some(vec![0..0, 6..19, 20..23]));
        // an argument that holds a literal piece itself: the later arguments take the rest
        let msg = format!("{}: {}", "a: b", "c");
        assert_eq!(own_spans("{}: {}", &msg), Some(vec![0..0, 1..3, 7..7]));
        assert_eq!(own_spans("no args", "no args"), Some(std::iter::once(0..7).collect()));
        assert_eq!(own_spans("x{}y", "something else"), None);
        let mut r = Redactor::new();
        r.add("finished");
        r.add("zq-long-secret-9x");
        let msg = format!("{} finished in {} ms ({})", "has_vm", 3, "tool said finished and zq-long-secret-9x");
        let own = own_spans("{} finished in {} ms ({})", &msg).unwrap();
        // the net takes no secret made of vmcpi's own words (`finished` is masked where outside text enters)
        assert_eq!(
            r.redact_where(&msg, &own, net_takes),
            "has_vm finished in 3 ms (tool said finished and <redacted>)"
        );
    }

    #[test]
    fn redacts_longest_first() {
        let mut secrets = Redactor::new();
        secrets.add("hunter2");
        secrets.add("hunter2-long");
        assert_eq!(secrets.redact("a hunter2-long b hunter2"), "a <redacted> b <redacted>");
    }
}
