//! TLS for the vSphere connection. Verification is on by default (the Mozilla roots, or the config's CA
//! bundle in their place). A certificate thumbprint pin (SHA-256, or the SHA-1 form vSphere shows) replaces
//! chain verification with an exact match of the server's leaf certificate, on every connection: a ureq
//! connector of our own does the TLS handshake with a pinning verifier. `insecure` turns checking off and
//! logs a warning on every call.
use super::config::VsphereConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;
use ureq::tls::{RootCerts, TlsConfig};
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, Transport, TransportAdapter,
};

/// Every request of the agent ends within `http_timeout_seconds`, end to end: connecting, sending, the
/// response's headers and its body together (ureq's global timeout, counted per request). A server that
/// sends headers and then stalls, or drips a byte at a time, gets no longer. Transfers of unbounded length
/// (the NFC upload of a stemcell disk) lift the global limit for their request
/// ([`super::client::Session::put_stream`]); for them the per-read and per-write timeouts bound the stall
/// instead: no single read or write may wait longer than `http_timeout_seconds`.
fn builder(http_timeout_seconds: u64) -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
    let t = Duration::from_secs(http_timeout_seconds);
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(t))
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(t))
        .timeout_per_read(Some(t))
        .timeout_per_write(Some(t))
        .max_idle_connections_per_host(4)
}

/// An agent that accepts exactly the server certificate with fingerprint `pin`.
pub fn pinned_agent(pin: &str, http_timeout_seconds: u64) -> Result<ureq::Agent, String> {
    let pin = Thumbprint::parse(pin)?;
    let config = builder(http_timeout_seconds).build();
    let connector = super::tcp::DeadlineTcp.chain(PinnedTls { config: Arc::new(pinned_client_config(pin)?) });
    Ok(ureq::Agent::with_parts(config, connector, DefaultResolver::default()))
}

/// Builds the HTTP agent for `cfg`.
pub fn agent(cfg: &VsphereConfig) -> Result<ureq::Agent, String> {
    if let Some(pin) = &cfg.thumbprint {
        return pinned_agent(pin, cfg.http_timeout_seconds);
    }
    let builder = builder(cfg.http_timeout_seconds);
    let tls = if cfg.insecure {
        crate::warn!("driver.insecure is set: the vSphere server's TLS certificate is NOT checked; set ca_cert or thumbprint instead");
        TlsConfig::builder().disable_verification(true).build()
    } else if let Some(pem) = &cfg.ca_cert {
        let certs: Vec<_> = ureq::tls::parse_pem(pem.as_bytes())
            .filter_map(|i| match i {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            return Err("driver.ca_cert holds no PEM certificate".into());
        }
        TlsConfig::builder().root_certs(RootCerts::new_with_certs(&certs)).build()
    } else {
        TlsConfig::builder().root_certs(RootCerts::WebPki).build()
    };
    let config = builder.tls_config(tls).build();
    // ureq's own connectors with its TCP layer replaced by one that keeps the request's deadline
    use ureq::unversioned::transport::{ConnectProxyConnector, RustlsConnector};
    let connector = ConnectProxyConnector::default().chain(super::tcp::DeadlineTcp).chain(RustlsConnector::default());
    Ok(ureq::Agent::with_parts(config, connector, DefaultResolver::default()))
}

/// A certificate fingerprint: 20 bytes (SHA-1) or 32 bytes (SHA-256).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thumbprint {
    Sha1([u8; 20]),
    Sha256([u8; 32]),
}

impl Thumbprint {
    /// Hex with or without `:` separators, any case.
    pub fn parse(s: &str) -> Result<Thumbprint, String> {
        let hex: String = s.chars().filter(|c| *c != ':' && !c.is_whitespace()).collect();
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect::<Option<Vec<u8>>>()
            .filter(|_| hex.len() & 1 == 0)
            .ok_or_else(|| format!("driver.thumbprint {s:?} is not hex"))?;
        match bytes.len() {
            20 => Ok(Thumbprint::Sha1(bytes.try_into().map_err(|_| "length")?)),
            32 => Ok(Thumbprint::Sha256(bytes.try_into().map_err(|_| "length")?)),
            n => Err(format!(
                "driver.thumbprint must be a SHA-1 (20 bytes) or SHA-256 (32 bytes) fingerprint, got {n} bytes"
            )),
        }
    }

    pub fn matches(&self, der: &[u8]) -> bool {
        match self {
            Thumbprint::Sha1(p) => ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der).as_ref() == p,
            Thumbprint::Sha256(p) => ring::digest::digest(&ring::digest::SHA256, der).as_ref() == p,
        }
    }
}

/// Hex SHA-256 of a certificate, as an operator would paste it into `thumbprint`.
pub fn sha256_hex(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[derive(Debug)]
struct PinVerifier {
    pin: Thumbprint,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.pin.matches(end_entity.as_ref()) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "server certificate does not match driver.thumbprint (its SHA-256 is {})",
                sha256_hex(end_entity.as_ref())
            )))
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.provider.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.provider.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn pinned_client_config(pin: Thumbprint) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinVerifier { pin, provider }))
        .with_no_client_auth();
    Ok(cfg)
}

/// The TLS layer used with a thumbprint pin.
#[derive(Debug)]
struct PinnedTls {
    config: Arc<ClientConfig>,
}

impl<In: Transport> Connector<In> for PinnedTls {
    type Out = Either<In, PinnedTransport>;

    fn connect(&self, details: &ConnectionDetails, chained: Option<In>) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else { return Ok(None) };
        if details.uri.scheme_str() != Some("https") {
            return Ok(Some(Either::A(transport)));
        }
        let host = details.uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
        let name = ServerName::try_from(host).map_err(|_| ureq::Error::Tls("invalid server name"))?;
        let mut conn =
            ClientConnection::new(self.config.clone(), name).map_err(|e| ureq::Error::Io(std::io::Error::other(e)))?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        conn.complete_io(&mut sock)?;
        let buffers = LazyBuffers::new(details.config.input_buffer_size(), details.config.output_buffer_size());
        Ok(Some(Either::B(PinnedTransport { buffers, stream: StreamOwned { conn, sock } })))
    }
}

struct PinnedTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl std::fmt::Debug for PinnedTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PinnedTransport")
    }
}

impl Transport for PinnedTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }
    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }
    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }
    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }
    fn is_tls(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints() {
        let sha1 = "AB:".repeat(19) + "AB";
        assert!(matches!(Thumbprint::parse(&sha1), Ok(Thumbprint::Sha1(_))));
        assert!(matches!(Thumbprint::parse(&"0f".repeat(32)), Ok(Thumbprint::Sha256(_))));
        assert!(Thumbprint::parse("zz").is_err());
        assert!(Thumbprint::parse("abc").is_err());
        assert!(Thumbprint::parse("abcd").unwrap_err().contains("2 bytes"));
        let der = b"not really a certificate";
        let hex = sha256_hex(der);
        assert!(Thumbprint::parse(&hex).unwrap().matches(der));
        assert!(!Thumbprint::parse(&hex).unwrap().matches(b"other"));
    }
}
