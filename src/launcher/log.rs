//! The launcher's log: one line per event on stderr, `time level key=value… message`, easy to grep by
//! `job=` or `vm=`. Every line passes through a redactor that knows the tokens and VM secrets.
use crate::common::redact::Redactor;
use std::io::Write;
use std::sync::Mutex;

static SECRETS: Mutex<Redactor> = Mutex::new(Redactor::new());

/// Registers a secret: it never appears in a log line from now on.
pub fn add_secret(secret: &str) {
    SECRETS.lock().unwrap_or_else(|p| p.into_inner()).add(secret);
}

/// Replaces every registered secret, where it stands as a whole value, with `<redacted>` (the redactor vmcpi
/// uses too: [`crate::common::redact`]).
pub fn redact(text: &str) -> String {
    SECRETS.lock().unwrap_or_else(|p| p.into_inner()).redact(text)
}

fn line(level: &str, msg: &str) {
    let now = crate::common::logger::timestamp();
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{now} {level} {}", redact(msg));
}

pub fn info(msg: &str) {
    line("INFO", msg);
}
pub fn warn(msg: &str) {
    line("WARN", msg);
}
pub fn error(msg: &str) {
    line("ERROR", msg);
}

/// An error with its whole source chain, joined with ": ".
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}
