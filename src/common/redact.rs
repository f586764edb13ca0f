//! The one redactor of vmcpi and agent-launcher: registered secrets are replaced by `<redacted>` where they
//! stand as a whole value — not where they happen to be part of a longer word. With the password `pass`, a
//! message about `driver.password` stays readable, while `user:pass@host`, `-gp pass` and `"pass"` lose it.
//!
//! Every secret is registered, however short. All of them are masked in outside text ([`Redactor::redact`]:
//! tool output, API errors, parse errors that echo input) and in command-line arguments
//! ([`Redactor::redact_arg`]). A caller that scrubs text that is partly its own (vmcpi's logger) chooses
//! which secrets apply and which byte ranges are its own words ([`Redactor::redact_where`]): secrets shorter
//! than [`MIN_LEN`] and secrets of digits only are [`ambiguous`] — they may equal one of its own words or
//! numbers (a duration, a size, `ws`), where masking them would give them away.
use std::ops::Range;

/// The placeholder a secret is replaced with.
pub const REDACTED: &str = "<redacted>";

/// Secrets shorter than this (and secrets of digits only) are ambiguous (see the module's text).
pub const MIN_LEN: usize = 4;

/// A set of secrets, longest first (so a secret that contains another is replaced whole).
#[derive(Debug, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

/// Whether a secret is short or a number, so that it could be mistaken for a word or number of one's own.
pub fn ambiguous(secret: &str) -> bool {
    secret.chars().count() < MIN_LEN || secret.bytes().all(|b| b.is_ascii_digit())
}

impl Redactor {
    pub const fn new() -> Self {
        Redactor { secrets: Vec::new() }
    }

    /// Registers a secret (trimmed; an empty one is ignored).
    pub fn add(&mut self, secret: &str) {
        let secret = secret.trim();
        if secret.is_empty() || self.secrets.iter().any(|s| s == secret) {
            return;
        }
        self.secrets.push(secret.to_string());
        self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    /// Outside text with every whole occurrence of every secret (ambiguous ones too) replaced by [`REDACTED`].
    pub fn redact(&self, text: &str) -> String {
        self.redact_where(text, &[], |_| true)
    }

    /// One command-line argument: `<redacted>` when it is a secret itself (however short: an argument is a
    /// whole token), else [`Redactor::redact`] of it (`--password=…`).
    pub fn redact_arg(&self, arg: &str) -> String {
        if self.secrets.iter().any(|s| s == arg.trim()) {
            REDACTED.to_string()
        } else {
            self.redact(arg)
        }
    }

    /// `text` with the whole occurrences of the secrets for which `applies` holds replaced, except those that
    /// lie entirely inside one of the `protected` byte ranges (the caller's own words).
    pub fn redact_where(&self, text: &str, protected: &[Range<usize>], applies: impl Fn(&str) -> bool) -> String {
        // every match of every secret (longest first), then the ones that do not overlap an earlier one
        let mut hits: Vec<Range<usize>> = Vec::new();
        for s in self.secrets.iter().filter(|s| applies(s)) {
            for r in whole_matches(text, s) {
                let own = protected.iter().any(|p| p.start <= r.start && r.end <= p.end);
                if !own && !hits.iter().any(|h| h.start < r.end && r.start < h.end) {
                    hits.push(r);
                }
            }
        }
        if hits.is_empty() {
            return text.to_string();
        }
        hits.sort_by_key(|h| h.start);
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for h in hits {
            out.push_str(&text[last..h.start]);
            out.push_str(REDACTED);
            last = h.end;
        }
        out.push_str(&text[last..]);
        out
    }
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The occurrences of `secret` in `text` that are not glued to a letter, digit or `_` on a side where the
/// secret itself starts or ends with one (the `\b` rule of regular expressions).
fn whole_matches(text: &str, secret: &str) -> Vec<Range<usize>> {
    let starts_word = secret.chars().next().is_some_and(is_word);
    let ends_word = secret.chars().next_back().is_some_and(is_word);
    let mut out = Vec::new();
    let mut last = 0;
    for (i, _) in text.match_indices(secret) {
        if i < last {
            continue;
        }
        let before = text[..i].chars().next_back();
        let after = text[i + secret.len()..].chars().next();
        let glued = starts_word && before.is_some_and(is_word) || ends_word && after.is_some_and(is_word);
        if !glued {
            out.push(i..i + secret.len());
            last = i + secret.len();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(secrets: &[&str]) -> Redactor {
        let mut r = Redactor::new();
        secrets.iter().for_each(|s| r.add(s));
        r
    }

    #[test]
    fn whole_values_only() {
        let r = r(&["pass"]);
        assert_eq!(
            r.redact("driver.password: wrong user name or password"),
            "driver.password: wrong user name or password"
        );
        assert_eq!(r.redact("https://u:pass@vc/sdk"), "https://u:<redacted>@vc/sdk");
        assert_eq!(r.redact(r#"{"password":"pass"}"#), r#"{"password":"<redacted>"}"#);
        assert_eq!(
            r.redact("vmrun -gu vcap -gp pass listProcessesInGuest"),
            "vmrun -gu vcap -gp <redacted> listProcessesInGuest"
        );
        assert_eq!(r.redact("pass"), "<redacted>");
        assert_eq!(r.redact("pass pass"), "<redacted> <redacted>");
    }

    #[test]
    fn secrets_with_symbols_and_nested_secrets() {
        let r = r(&["p&ss<word>", "hunter22", "hunter22-long", "ab", " spaced-secret "]);
        assert_eq!(r.redact("x p&ss<word>y"), "x <redacted>y");
        assert_eq!(r.redact("hunter22-long and hunter22"), "<redacted> and <redacted>");
        // short secrets are registered too: outside text loses them where they stand whole
        assert_eq!(r.redact("ab cd"), "<redacted> cd");
        assert_eq!(r.redact("abc"), "abc");
        assert_eq!(r.redact("[spaced-secret]"), "[<redacted>]");
        let key = "-----BEGIN KEY-----\nAAAA\n-----END KEY-----";
        assert_eq!(super::tests::r(&[key]).redact(&format!("key: {key}\n")), "key: <redacted>\n");
    }

    #[test]
    fn short_and_numeric_secrets_in_outside_text_and_arguments() {
        let r = r(&["p7q", "12345678", "9"]);
        assert_eq!(
            r.redact("vmrun -gu vcap -gp p7q runProgramInGuest"),
            "vmrun -gu vcap -gp <redacted> runProgramInGuest"
        );
        assert_eq!(
            r.redact("error: bad password 12345678 (code 9)"),
            "error: bad password <redacted> (code <redacted>)"
        );
        // whole tokens only: inside a longer word or number nothing happens
        assert_eq!(r.redact("p7qx 1234567890 x9y"), "p7qx 1234567890 x9y");
        assert_eq!(r.redact_arg("p7q"), "<redacted>");
        assert_eq!(r.redact_arg("--password=12345678"), "--password=<redacted>");
        assert_eq!(r.redact_arg("p7q2"), "p7q2");
    }

    #[test]
    fn protected_spans_and_ambiguous_secrets() {
        let r = r(&["finished", "3", "hunter22"]);
        let text = "has_vm finished in 3 ms: tool said finished hunter22";
        // "has_vm", " finished in ", " ms: " are vmcpi's own words here; the rest is an argument
        let own = [0..0, 6..19, 20..25];
        assert_eq!(
            r.redact_where(text, &own, |s| !ambiguous(s)),
            "has_vm finished in 3 ms: tool said <redacted> <redacted>",
            "own words stay, the ambiguous 3 stays in the log's safety net, a secret in an argument goes"
        );
        assert_eq!(
            r.redact_where(text, &own, |_| true),
            "has_vm finished in <redacted> ms: tool said <redacted> <redacted>"
        );
        // a secret that straddles own words and an argument is masked
        let r2 = super::tests::r(&["in 3 ms"]);
        assert_eq!(
            r2.redact_where("done in 3 ms", std::slice::from_ref(&(0..8)), |s| !ambiguous(s)),
            "done <redacted>"
        );
    }
}
