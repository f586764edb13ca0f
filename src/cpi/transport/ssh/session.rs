//! The connection: opened at the first operation and reused, the host key checked, the user authenticated;
//! after a lost connection one more is allowed.
use super::{Ssh, SshConfig};
use crate::cpi::transport::{base64_nopad, TransportError, TransportResult};
use ssh2::{ErrorCode, Session, Sftp};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many connections one CPI call may open: the first, and one after a drop (for clean-up).
const MAX_CONNECTIONS: u32 = 2;

pub(super) struct Conn {
    sess: Session,
    sftp: Option<Sftp>,
}

pub(super) fn is_disconnect(e: &ssh2::Error) -> bool {
    // LIBSSH2_ERROR_SOCKET_SEND -7, _TIMEOUT -9, _SOCKET_DISCONNECT -13, _SOCKET_TIMEOUT -30,
    // _SOCKET_RECV -43, _BAD_USE -39 (session already dead), _CHANNEL_CLOSED -26, _CHANNEL_EOF_SENT -27
    matches!(e.code(), ErrorCode::Session(-7 | -9 | -13 | -30 | -43 | -26 | -27))
}

impl Ssh {
    pub fn new(cfg: SshConfig) -> Self {
        Ssh { cfg, conn: Mutex::new(None), opened: Mutex::new(0) }
    }

    pub(super) fn target_str(&self) -> String {
        format!("ssh {}@{}:{}", self.cfg.user, self.cfg.host, self.cfg.port)
    }

    pub(super) fn lost(&self, doing: &str, e: impl std::fmt::Display) -> TransportError {
        // drop the dead session: the next operation may open one new connection
        if let Ok(mut c) = self.conn.lock() {
            *c = None;
        }
        TransportError::Disconnected {
            target: self.target_str(),
            doing: doing.to_string(),
            reason: crate::common::logger::redact(&e.to_string()),
        }
    }

    pub(super) fn err(&self, doing: &str, e: ssh2::Error) -> TransportError {
        if is_disconnect(&e) {
            self.lost(doing, e)
        } else {
            TransportError::Io {
                target: self.target_str(),
                op: "use",
                path: doing.to_string(),
                reason: crate::common::logger::redact(&e.to_string()),
            }
        }
    }

    /// The session, connecting first when needed.
    pub(super) fn session(&self) -> TransportResult<Session> {
        let mut guard =
            self.conn.lock().map_err(|_| TransportError::Unsupported("SSH connection state poisoned".into()))?;
        if let Some(c) = guard.as_ref() {
            return Ok(c.sess.clone());
        }
        {
            let mut n =
                self.opened.lock().map_err(|_| TransportError::Unsupported("SSH connection state poisoned".into()))?;
            if *n >= MAX_CONNECTIONS {
                return Err(TransportError::Connect {
                    target: self.target_str(),
                    reason: format!("the connection was lost and {MAX_CONNECTIONS} connections were already opened in this call; giving up"),
                });
            }
            *n += 1;
        }
        let sess = self.connect()?;
        *guard = Some(Conn { sess: sess.clone(), sftp: None });
        Ok(sess)
    }

    pub(super) fn sftp(&self) -> TransportResult<Sftp> {
        let sess = self.session()?;
        let mut guard =
            self.conn.lock().map_err(|_| TransportError::Unsupported("SSH connection state poisoned".into()))?;
        let Some(c) = guard.as_mut() else {
            return Err(self.lost("opening SFTP", "no connection"));
        };
        if c.sftp.is_none() {
            drop(sess);
            let s = c.sess.sftp();
            match s {
                Ok(s) => c.sftp = Some(s),
                Err(e) => {
                    drop(guard);
                    return Err(self.err("opening the SFTP subsystem", e));
                }
            }
        }
        // Sftp is not Clone: hand out a fresh handle bound to the same session
        match c.sftp.take() {
            Some(s) => Ok(s),
            None => Err(self.lost("opening SFTP", "no SFTP session")),
        }
    }

    pub(super) fn give_back(&self, sftp: Sftp) {
        if let Ok(mut g) = self.conn.lock() {
            if let Some(c) = g.as_mut() {
                c.sftp = Some(sftp);
            }
        }
    }

    fn connect(&self) -> TransportResult<Session> {
        let cfg = &self.cfg;
        let target = self.target_str();
        let started = Instant::now();
        let conn_err = |reason: String| TransportError::Connect { target: target.clone(), reason };
        let addrs: Vec<_> = (cfg.host.as_str(), cfg.port)
            .to_socket_addrs()
            .map_err(|e| {
                conn_err(format!("cannot resolve {}: {}", cfg.host, crate::common::logger::redact(&e.to_string())))
            })?
            .collect();
        let timeout = Duration::from_secs(cfg.connect_timeout_seconds);
        let mut last = String::from("no address");
        let mut tcp = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = format!("{a}: {e}"),
            }
        }
        let tcp = tcp.ok_or_else(|| conn_err(last))?;
        let _ = tcp.set_nodelay(true);
        let mut sess = Session::new().map_err(|e| conn_err(crate::common::logger::redact(&e.to_string())))?;
        sess.set_tcp_stream(tcp);
        sess.set_timeout((cfg.connect_timeout_seconds * 1000).min(u64::from(u32::MAX)) as u32);
        sess.handshake().map_err(|e| {
            conn_err(format!("SSH handshake failed: {}", crate::common::logger::redact(&e.to_string())))
        })?;
        self.check_host_key(&sess)?;
        self.authenticate(&sess)?;
        sess.set_timeout((cfg.command_timeout_seconds * 1000).min(u64::from(u32::MAX)) as u32);
        crate::debug!("{target}: connected in {} ms", started.elapsed().as_millis());
        Ok(sess)
    }

    fn check_host_key(&self, sess: &Session) -> TransportResult<()> {
        let cfg = &self.cfg;
        let target = self.target_str();
        let (key, _kind) = sess.host_key().ok_or_else(|| TransportError::Connect {
            target: target.clone(),
            reason: "the server sent no host key".into(),
        })?;
        let fingerprint = match sess.host_key_hash(ssh2::HashType::Sha256) {
            Some(h) => format!("SHA256:{}", base64_nopad(h)),
            None => "unknown fingerprint".into(),
        };
        if let Some(inline) = &cfg.host_public_key {
            let want = inline.split_whitespace().nth(1).unwrap_or("").trim_end_matches('=');
            if base64_nopad(key) == want {
                return Ok(());
            }
            return Err(TransportError::HostKeyMismatch {
                target,
                fingerprint,
                known_hosts: "driver.ssh.host_public_key".into(),
            });
        }
        let Some(path) = &cfg.known_hosts else {
            return Err(TransportError::Unsupported("driver.ssh has no known_hosts and no host_public_key".into()));
        };
        let shown = path.display().to_string();
        let mut kh = sess.known_hosts().map_err(|e| TransportError::Connect {
            target: target.clone(),
            reason: crate::common::logger::redact(&e.to_string()),
        })?;
        kh.read_file(path, ssh2::KnownHostFileKind::OpenSSH).map_err(|e| TransportError::Io {
            target: "the local host".into(),
            op: "read known_hosts",
            path: shown.clone(),
            reason: crate::common::logger::redact(&e.to_string()),
        })?;
        match kh.check_port(&cfg.host, cfg.port, key) {
            ssh2::CheckResult::Match => Ok(()),
            ssh2::CheckResult::Mismatch => {
                Err(TransportError::HostKeyMismatch { target, fingerprint, known_hosts: shown })
            }
            ssh2::CheckResult::NotFound => Err(TransportError::HostKeyUnknown {
                target,
                host: cfg.host.clone(),
                port: cfg.port,
                fingerprint,
                known_hosts: shown,
            }),
            ssh2::CheckResult::Failure => {
                Err(TransportError::Connect { target, reason: format!("cannot check the host key against {shown}") })
            }
        }
    }

    fn authenticate(&self, sess: &Session) -> TransportResult<()> {
        let cfg = &self.cfg;
        let pass = cfg.private_key_passphrase.as_ref().map(|p| p.expose());
        let result = if let Some(key) = &cfg.private_key {
            sess.userauth_pubkey_memory(&cfg.user, None, key.expose(), pass)
        } else if let Some(p) = &cfg.private_key_path {
            sess.userauth_pubkey_file(&cfg.user, None, p, pass)
        } else if let Some(pw) = &cfg.password {
            sess.userauth_password(&cfg.user, pw.expose())
        } else {
            return Err(TransportError::Unsupported("driver.ssh has no credentials".into()));
        };
        let auth_err =
            |reason: String| TransportError::Auth { target: self.target_str(), user: cfg.user.clone(), reason };
        if let Err(e) = result {
            let mut reason = crate::common::logger::redact(&e.to_string());
            let rsa = cfg
                .private_key
                .as_ref()
                .map(|k| k.expose())
                .is_some_and(|k| k.contains("BEGIN RSA") || k.contains("ssh-rsa"))
                || cfg.private_key_path.as_ref().is_some_and(|p| p.to_string_lossy().contains("rsa"));
            if rsa {
                reason.push_str(" (an RSA key: libssh2 may sign with SHA-1 (ssh-rsa), which OpenSSH 8.8 and later refuse; use an ed25519 key)");
            }
            return Err(auth_err(reason));
        }
        if !sess.authenticated() {
            return Err(auth_err("the server did not accept the credentials".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpi::transport::ssh::tests::cfg;
    use crate::cpi::transport::Transport;
    use serde_json::json;

    #[test]
    fn connection_refused_is_clear() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let t = Ssh::new(cfg(
            json!({"host": "127.0.0.1", "port": port, "user": "u", "password": "p", "known_hosts": "/kh", "connect_timeout_seconds": 2}),
        ));
        let e = t.exists("/").unwrap_err();
        assert!(matches!(e, TransportError::Connect { .. }), "{e}");
        assert!(e.to_string().contains(&port.to_string()), "{e}");
    }
}
