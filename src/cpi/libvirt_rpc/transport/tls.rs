//! libvirt over TLS (`qemu+tls://`), with rustls: the server's certificate must chain to the CA in
//! `cacert.pem` and name the host the URI names; the client shows `clientcert.pem` (key in
//! `clientkey.pem`). After the handshake libvirtd checks the client's certificate and address and sends
//! one byte, 1, when it accepts them (libvirt's `virNetClientSetTLSSession`); anything else is a refusal.
use super::{fd_readable, Options, Transport};
use crate::cpi::libvirt_rpc::error::{Error, Result};
use crate::cpi::libvirt_rpc::uri::Pki;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

/// A TLS session with a libvirt daemon.
pub struct Tls {
    s: StreamOwned<ClientConnection, TcpStream>,
    target: String,
}

fn read_certs(path: &Path, what: &str, target: &str) -> Result<Vec<CertificateDer<'static>>> {
    let tls = |reason: String| Error::Tls { target: target.to_string(), reason };
    let pem = std::fs::read(path).map_err(|e| tls(format!("cannot read {what} {}: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| tls(format!("{what} {} is not PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(tls(format!("{what} {} holds no certificate", path.display())));
    }
    Ok(certs)
}

/// The client configuration from the three files of `pki`.
pub fn config(pki: &Pki, target: &str) -> Result<ClientConfig> {
    let tls = |reason: String| Error::Tls { target: target.to_string(), reason };
    let mut roots = RootCertStore::empty();
    for c in read_certs(&pki.cacert, "the CA certificate", target)? {
        roots.add(c).map_err(|e| tls(format!("the CA certificate {} is not usable: {e}", pki.cacert.display())))?;
    }
    let chain = read_certs(&pki.cert, "the client certificate", target)?;
    let key_pem =
        std::fs::read(&pki.key).map_err(|e| tls(format!("cannot read the client key {}: {e}", pki.key.display())))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| tls(format!("the client key {} is not a PEM private key: {e}", pki.key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| tls(format!("the client certificate {} and key do not go together: {e}", pki.cert.display())))
}

/// Explains a handshake failure in the terms of the files involved.
fn explain(e: &io::Error, host: &str, pki: &Pki) -> String {
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::InvalidCertificate(c)) => {
            use rustls::CertificateError as C;
            match c {
                C::UnknownIssuer | C::BadSignature => {
                    format!("the server's certificate is not signed by the CA in {} ({c:?})", pki.cacert.display())
                }
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    format!("the server's certificate is not valid for the name {host:?} ({c:?})")
                }
                C::Expired | C::ExpiredContext { .. } => format!("the server's certificate has expired ({c:?})"),
                C::NotValidYet | C::NotValidYetContext { .. } => {
                    format!("the server's certificate is not valid yet ({c:?})")
                }
                other => format!("the server's certificate is refused: {other:?}"),
            }
        }
        Some(rustls::Error::AlertReceived(a)) => {
            format!("the server refused the connection (TLS alert {a:?}); is {} signed by its CA?", pki.cert.display())
        }
        Some(other) => other.to_string(),
        None => e.to_string(),
    }
}

/// Connects to `host:port` (`name` is the name the server's certificate must carry: the URI's host).
pub fn connect(host: &str, port: u16, name: &str, pki: &Pki, opts: &Options) -> Result<Tls> {
    let target = format!("{host}:{port}");
    let conn_err = |reason: String| Error::Connect { target: target.clone(), reason };
    let tls_err = |reason: String| Error::Tls { target: target.clone(), reason };
    let cfg = config(pki, &target)?;
    let server_name = ServerName::try_from(name.to_string())
        .map_err(|_| tls_err(format!("{name:?} is not a host name or IP address")))?;
    let addrs: Vec<_> =
        (host, port).to_socket_addrs().map_err(|e| conn_err(format!("cannot resolve {host}: {e}")))?.collect();
    let mut last = String::from("the host has no address");
    let mut tcp = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, opts.connect_timeout) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) if addrs.len() > 1 => last = format!("{a}: {e}"),
            Err(e) => last = e.to_string(),
        }
    }
    let mut tcp = tcp.ok_or_else(|| conn_err(last))?;
    let _ = tcp.set_nodelay(true);
    tcp.set_read_timeout(Some(opts.connect_timeout))
        .and_then(|_| tcp.set_write_timeout(Some(opts.connect_timeout)))
        .map_err(|e| conn_err(format!("cannot set time-outs: {e}")))?;
    let mut conn = ClientConnection::new(Arc::new(cfg), server_name).map_err(|e| tls_err(e.to_string()))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| tls_err(explain(&e, name, pki)))?;
    }
    let mut s = StreamOwned::new(conn, tcp);
    // libvirtd's verdict on our certificate and address: one byte, 1
    let mut ok = [0u8; 1];
    match s.read(&mut ok) {
        Ok(1) if ok[0] == 1 => {}
        Ok(_) => {
            return Err(tls_err(format!(
                "the server refused our certificate {} or our address (it closed the connection after the handshake)",
                pki.cert.display()
            )))
        }
        Err(e) => {
            let why = if e.kind() == io::ErrorKind::UnexpectedEof {
                "it closed the connection after the handshake".to_string()
            } else {
                explain(&e, name, pki)
            };
            return Err(tls_err(format!(
                "the server refused our certificate {} or our address ({why})",
                pki.cert.display()
            )));
        }
    }
    s.sock
        .set_read_timeout(Some(opts.io_timeout))
        .and_then(|_| s.sock.set_write_timeout(Some(opts.io_timeout)))
        .map_err(|e| conn_err(format!("cannot set time-outs: {e}")))?;
    Ok(Tls { s, target: format!("TLS {target}") })
}

impl Read for Tls {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.s.read(buf)
    }
}

impl Write for Tls {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.s.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.s.flush()
    }
}

impl Transport for Tls {
    fn target(&self) -> String {
        self.target.clone()
    }
    fn readable(&mut self) -> bool {
        fd_readable(self.s.sock.as_raw_fd())
    }
}
