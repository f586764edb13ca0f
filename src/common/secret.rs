//! [`Secret`]: a password, passphrase, key or token held by a config type. It prints as `<redacted>` however
//! it is formatted (`{}`, `{:?}`, inside a derived `Debug`), so none of vmcpi's own messages can hold one;
//! the value itself is reached only through [`Secret::expose`], where it is handed to what needs it (a
//! login, an SSH handshake, a guest tool). Reading one registers it with the logger, whose scrubbing of
//! outside text (tool output, API errors) then hides it too, however short it is.
use serde::{Deserialize, Deserializer};
use std::fmt;

/// A secret value. Deserialised from a string or a number (`"password": 12345678` is a password too).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps (and registers) a secret.
    pub fn new(value: impl Into<String>) -> Secret {
        let value = value.into();
        crate::common::logger::add_secret(&value);
        // a PEM key: each of its lines too, in case a tool prints one of them
        for line in value.lines().filter(|l| !l.starts_with("-----")) {
            crate::common::logger::add_secret(line);
        }
        Secret(value)
    }

    /// The value, for what needs it. Never format it into a message.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret::new(s)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret::new(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(crate::common::redact::REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(crate::common::redact::REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret::new(v))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Secret, E> {
                Ok(Secret::new(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Cfg {
        #[allow(dead_code)]
        user: String,
        password: Secret,
    }

    #[test]
    fn prints_redacted_and_reads_strings_and_numbers() {
        for (json, value) in [
            (r#"{"user": "u", "password": "hunter22"}"#, "hunter22"),
            (r#"{"user": "u", "password": 12345678}"#, "12345678"),
            (r#"{"user": "u", "password": -7}"#, "-7"),
            (r#"{"user": "u", "password": 1.5}"#, "1.5"),
        ] {
            let c: Cfg = serde_json::from_str(json).unwrap();
            assert_eq!(c.password.expose(), value);
            for shown in [format!("{c:?}"), format!("{}", c.password), format!("{:?}", c.password)] {
                assert!(!shown.contains(value) && shown.contains("<redacted>"), "{shown}");
            }
        }
        // a wrong type is named without its value
        let e = serde_json::from_str::<Cfg>(r#"{"user": "u", "password": [true]}"#).unwrap_err().to_string();
        assert!(e.contains("a string or a number"), "{e}");
    }
}
