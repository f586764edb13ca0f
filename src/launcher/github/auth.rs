//! How the launcher authenticates to GitHub: a fine-grained personal access token, or a GitHub App — a JWT
//! signed RS256 with the App's private key, exchanged for an installation access token (one hour), which is
//! renewed five minutes before it expires (and at once when the API answers 401).
//!
//! The private key is read from a file the launcher's user alone may read (like the token files), as GitHub
//! hands it out (`BEGIN RSA PRIVATE KEY`, PKCS#1) or as PKCS#8, through rustls' PEM reader, and used by `ring`
//! (already the launcher's TLS provider): no other crypto crate. Every secret — the token, each line of the
//! key, every JWT and installation token — is registered with the log's redactor before it is used.
use crate::launcher::log;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use std::path::Path;
use std::time::{Duration, Instant};

/// Why a GitHub credential cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the GitHub App private key {path}: {why}")]
    Key { path: String, why: String },
    #[error("signing the GitHub App's JWT failed")]
    Sign,
}

/// The App's key, ready to sign.
pub struct AppKey {
    key: RsaKeyPair,
}

impl std::fmt::Debug for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppKey(<redacted>)")
    }
}

impl AppKey {
    /// Reads a PEM private key (PKCS#1 `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY`); its lines become secrets of
    /// the log.
    pub fn from_pem(pem: &[u8], path: &Path) -> Result<AppKey, AuthError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::PrivateKeyDer;
        let err = |why: String| AuthError::Key { path: path.display().to_string(), why };
        for line in String::from_utf8_lossy(pem).lines().filter(|l| !l.starts_with("-----")) {
            log::add_secret(line);
        }
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| err(format!("holds no PEM private key ({e:?})")))?;
        let key = match &der {
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            _ => return Err(err("is not an RSA key (GitHub App keys are RSA)".into())),
        }
        .map_err(|e| err(format!("is not a usable RSA key: {e}")))?;
        Ok(AppKey { key })
    }

    /// Reads the key file, refused when others may read or change it (the token files' rule).
    pub fn read(path: &Path) -> Result<AppKey, crate::launcher::config::ConfigError> {
        let text = crate::launcher::config::read_token_file(path)?;
        AppKey::from_pem(text.as_bytes(), path)
            .map_err(|e| crate::launcher::config::ConfigError::Invalid(log::chain(&e)))
    }

    /// A JWT for the App `iss` (its client ID, or its numeric app ID), valid from a minute ago (clock drift) for
    /// nine minutes (GitHub takes at most ten), signed RS256.
    pub fn jwt(&self, iss: &str, now: u64) -> Result<String, AuthError> {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let iss = if !iss.is_empty() && iss.bytes().all(|b| b.is_ascii_digit()) {
            serde_json::Value::from(iss.parse::<u64>().unwrap_or(0))
        } else {
            serde_json::Value::from(iss)
        };
        let claims = serde_json::json!({"iat": now.saturating_sub(60), "exp": now + 540, "iss": iss});
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{payload}");
        let mut sig = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), signing_input.as_bytes(), &mut sig)
            .map_err(|_| AuthError::Sign)?;
        let jwt = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig));
        log::add_secret(&jwt);
        Ok(jwt)
    }

    /// The public key (DER `RSAPublicKey`), for tests that verify what was signed.
    pub fn public_der(&self) -> Vec<u8> {
        use ring::signature::KeyPair;
        self.key.public_key().as_ref().to_vec()
    }
}

/// The credentials of every request.
#[derive(Debug)]
pub enum Auth {
    /// A fine-grained personal access token (or any token GitHub takes as `Bearer`).
    Token(String),
    App(Box<App>),
}

/// A GitHub App installation.
#[derive(Debug)]
pub struct App {
    pub iss: String,
    pub installation_id: u64,
    pub key: AppKey,
    /// The installation access token and when to renew it.
    pub token: Option<(String, Instant)>,
}

/// An installation token is renewed this long before it expires.
pub const RENEW_BEFORE: Duration = Duration::from_secs(300);

impl App {
    /// The current installation token, unless it is missing or due for renewal.
    pub fn current(&self) -> Option<&str> {
        self.token.as_ref().filter(|(_, renew_at)| Instant::now() < *renew_at).map(|(t, _)| t.as_str())
    }

    /// Keeps a new installation token that expires at `expires_at` (RFC 3339, as GitHub answers; unreadable:
    /// an hour, GitHub's lifetime); it is renewed [`RENEW_BEFORE`] that.
    pub fn keep(&mut self, token: String, expires_at: &str, now: f64) {
        log::add_secret(&token);
        let left = crate::common::rfc3339::parse(expires_at).map(|t| t - now).unwrap_or(3600.0).clamp(0.0, 3600.0);
        let renew_in = Duration::from_secs_f64(left).saturating_sub(RENEW_BEFORE);
        self.token = Some((token, Instant::now() + renew_in));
    }

    /// Forgets the token (the API refused it).
    pub fn drop_token(&mut self) {
        self.token = None;
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A 2048-bit RSA key in PKCS#1 PEM, as GitHub hands App keys out, made by openssl for the test (no key is
    /// kept in the repository).
    pub fn test_key(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("app.pem");
        let out = std::process::Command::new("openssl")
            .args(["genrsa", "-traditional", "-out"])
            .arg(&path)
            .arg("2048")
            .output()
            .expect("openssl (Debian package openssl) makes the test's RSA key");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    #[test]
    fn jwts_are_rs256_with_the_claims_github_wants() {
        let dir = tempfile::tempdir().unwrap();
        let path = test_key(dir.path());
        let pem = std::fs::read(&path).unwrap();
        assert!(String::from_utf8_lossy(&pem).contains("BEGIN RSA PRIVATE KEY"), "PKCS#1 as GitHub gives it");
        let key = AppKey::read(&path).unwrap();
        let jwt = key.jwt("123456", 1_700_000_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header, serde_json::json!({"alg": "RS256", "typ": "JWT"}));
        let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims, serde_json::json!({"iat": 1_699_999_940u64, "exp": 1_700_000_540u64, "iss": 123456}));
        let claims = key.jwt("Iv1.abc", 10).unwrap();
        assert!(claims.split('.').nth(1).is_some_and(
            |p| String::from_utf8_lossy(&URL_SAFE_NO_PAD.decode(p).unwrap()).contains("\"iss\":\"Iv1.abc\"")
        ));
        // the signature verifies with the key's public half
        let public =
            ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, key.public_der());
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        public.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig).unwrap();
        // the JWT and the key's lines are secrets of the log
        assert!(!log::redact(&jwt).contains(parts[2]));
        let line = String::from_utf8_lossy(&pem).lines().nth(1).unwrap().to_string();
        assert_eq!(log::redact(&line), crate::common::redact::REDACTED);
        // the same key as PKCS#8
        let p8 = dir.path().join("app8.pem");
        let out = std::process::Command::new("openssl")
            .args(["pkcs8", "-topk8", "-nocrypt", "-in"])
            .arg(&path)
            .arg("-out")
            .arg(&p8)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(AppKey::from_pem(&std::fs::read(&p8).unwrap(), &p8).is_ok());
    }

    #[test]
    fn bad_keys_are_refused_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        for (text, want) in [
            ("not a key", "holds no PEM private key"),
            ("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n", "not a usable RSA key"),
        ] {
            let e = AppKey::from_pem(text.as_bytes(), &p).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("k.pem"), "{e}");
        }
        // an EC key is not an App key
        let out = std::process::Command::new("openssl")
            .args(["ecparam", "-genkey", "-name", "prime256v1", "-noout"])
            .output()
            .unwrap();
        let e = AppKey::from_pem(&out.stdout, &p).unwrap_err().to_string();
        assert!(e.contains("not an RSA key"), "{e}");
        // the file's permissions are checked like a token file's
        std::fs::write(&p, "x").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(AppKey::read(&p).unwrap_err().to_string().contains("chmod 600"));
    }

    #[test]
    fn installation_tokens_are_renewed_before_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let key = AppKey::read(&test_key(dir.path())).unwrap();
        let mut app = App { iss: "1".into(), installation_id: 2, key, token: None };
        assert!(app.current().is_none());
        // expires in an hour: current until 55 minutes from now
        app.keep(
            "ghs_first_token_value".into(),
            "2026-01-01T01:00:00Z",
            crate::common::rfc3339::parse("2026-01-01T00:00:00Z").unwrap(),
        );
        assert_eq!(app.current(), Some("ghs_first_token_value"));
        assert_eq!(log::redact("t=ghs_first_token_value"), "t=<redacted>");
        // expires in four minutes: due for renewal at once
        app.keep(
            "ghs_second_token".into(),
            "2026-01-01T00:04:00Z",
            crate::common::rfc3339::parse("2026-01-01T00:00:00Z").unwrap(),
        );
        assert!(app.current().is_none());
        app.keep("ghs_third_token".into(), "garbage", 0.0);
        assert_eq!(app.current(), Some("ghs_third_token"));
        app.drop_token();
        assert!(app.current().is_none());
    }
}
