//! The one redactor of vmcpi and agent-launcher: registered secrets are replaced by `<redacted>` where they
//! stand as a whole value — not where they happen to be part of a longer word. With the password `pass`, a
//! message about `driver.password` stays readable, while `user:pass@host`, `-gp pass` and `"pass"` lose it.

/// The placeholder a secret is replaced with.
pub const REDACTED: &str = "<redacted>";

/// Secrets shorter than this are not registered (redacting "1" or "on" would mangle every line).
pub const MIN_LEN: usize = 4;

/// A set of secrets, longest first (so a secret that contains another is replaced whole).
#[derive(Debug, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub const fn new() -> Self {
        Redactor { secrets: Vec::new() }
    }

    /// Registers a secret (trimmed; ignored when shorter than [`MIN_LEN`] characters).
    pub fn add(&mut self, secret: &str) {
        let secret = secret.trim();
        if secret.chars().count() < MIN_LEN || self.secrets.iter().any(|s| s == secret) {
            return;
        }
        self.secrets.push(secret.to_string());
        self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    /// `text` with every whole occurrence of every secret replaced by [`REDACTED`].
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = replace_whole(&out, s);
            }
        }
        out
    }
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Replaces the occurrences of `secret` that are not glued to a letter, digit or `_` on a side where the
/// secret itself starts or ends with one (the `\b` rule of regular expressions).
fn replace_whole(text: &str, secret: &str) -> String {
    let starts_word = secret.chars().next().is_some_and(is_word);
    let ends_word = secret.chars().next_back().is_some_and(is_word);
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (i, _) in text.match_indices(secret) {
        if i < last {
            continue;
        }
        let before = text[..i].chars().next_back();
        let after = text[i + secret.len()..].chars().next();
        let glued = starts_word && before.is_some_and(is_word) || ends_word && after.is_some_and(is_word);
        if !glued {
            out.push_str(&text[last..i]);
            out.push_str(REDACTED);
            last = i + secret.len();
        }
    }
    out.push_str(&text[last..]);
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
        assert_eq!(r.redact("ab cd"), "ab cd", "too short to register");
        assert_eq!(r.redact("[spaced-secret]"), "[<redacted>]");
        let key = "-----BEGIN KEY-----\nAAAA\n-----END KEY-----";
        assert_eq!(super::tests::r(&[key]).redact(&format!("key: {key}\n")), "key: <redacted>\n");
    }
}
