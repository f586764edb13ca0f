//! The one connection of a CPI call to the libvirt daemon: opened by the first call that needs it (a CID that
//! is not ours, `info` or a refused request never connects), closed (`CONNECT_CLOSE`) when the driver is
//! dropped at the end of the call. Relative `keyfile=`, `known_hosts=` and `pkipath=` in the URI are
//! relative to the config file's directory (where the BOSH job renders them).
use crate::cpi::error::{DriverError, DriverResult};
use crate::cpi::libvirt_rpc::{self, transport, uri, Client, Options};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// Makes the client of a call (tests: a client over a scripted daemon).
pub type Connect = Box<dyn Fn() -> libvirt_rpc::Result<Client> + Send + Sync>;

pub struct Connection {
    uri: String,
    connect: Connect,
    client: OnceLock<Client>,
    opened: AtomicU32,
}

impl Connection {
    /// A connection to `uri`, with relative file parameters taken from `base`.
    pub fn to_uri(uri: &str, base: Option<&Path>) -> Connection {
        let (text, base) = (uri.to_string(), base.map(Path::to_path_buf));
        Connection::with(uri, Box::new(move || connect(&text, base.as_deref())))
    }

    /// A connection made by `connect` (tests).
    pub fn with(uri: &str, connect: Connect) -> Connection {
        Connection { uri: uri.to_string(), connect, client: OnceLock::new(), opened: AtomicU32::new(0) }
    }

    /// The client, connecting on first use.
    pub fn get(&self) -> DriverResult<&Client> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        self.opened.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let c = (self.connect)().map_err(|e| connect_error(&self.uri, e))?;
        crate::debug!("libvirt: connected to {} in {} ms", c.target(), started.elapsed().as_millis());
        let _ = self.client.set(c);
        Ok(self.client.get().expect("just set"))
    }

    /// How many times this call connected (0 or 1; tests).
    pub fn opened(&self) -> u32 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Closes the connection if one was made.
    pub fn close(&mut self) {
        if let Some(c) = self.client.take() {
            if let Err(e) = c.close() {
                crate::debug!("libvirt: closing the connection: {e}");
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.close();
    }
}

/// A connection error as the director sees it: the URI and what went wrong. A refused host key, certificate
/// or authentication, or a URI that cannot be used, fails the same way again; a daemon that does not answer
/// or a lost connection may pass.
fn connect_error(uri: &str, e: libvirt_rpc::Error) -> DriverError {
    use libvirt_rpc::Error as E;
    let permanent = match &e {
        E::Uri { .. } | E::Tls { .. } | E::Auth { .. } | E::Invalid(_) => true,
        E::Ssh(t) => matches!(
            t,
            crate::cpi::transport::TransportError::HostKeyUnknown { .. }
                | crate::cpi::transport::TransportError::HostKeyMismatch { .. }
                | crate::cpi::transport::TransportError::Auth { .. }
                | crate::cpi::transport::TransportError::Unsupported(_)
        ),
        E::Remote { error, .. } => {
            matches!(error.code, libvirt_rpc::code::AUTH_FAILED | libvirt_rpc::code::ACCESS_DENIED)
        }
        _ => false,
    };
    DriverError::failed(format!("cannot connect to libvirt at {}", crate::common::logger::redact(uri)), e)
        .with_retry(!permanent)
}

/// Connects to `text`, the file parameters resolved against `base`.
pub fn connect(text: &str, base: Option<&Path>) -> libvirt_rpc::Result<Client> {
    let mut parsed = uri::Uri::parse(text)?;
    if let Some(base) = base {
        resolve(&mut parsed, base);
    }
    let (name, target) = (parsed.server_name(), parsed.target());
    Client::with_connector(
        &name,
        &target,
        Options::default(),
        Box::new(move |o: &Options| transport::connect(&parsed, o)),
    )
}

/// Makes relative file parameters of `u` relative to `base`.
pub fn resolve(u: &mut uri::Uri, base: &Path) {
    let abs = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    match &mut u.transport {
        uri::Transport::Unix => {}
        uri::Transport::Ssh { keyfile, known_hosts, .. } => {
            abs(keyfile);
            abs(known_hosts);
        }
        uri::Transport::Tls { pki, .. } => {
            abs(&mut pki.cacert);
            abs(&mut pki.cert);
            abs(&mut pki.key);
        }
    }
}
