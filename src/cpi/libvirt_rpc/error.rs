//! The client's errors: libvirt's own (`remote_error`: its code, domain and message, kept whole) and the
//! connection's (URI, transport, TLS, authentication, protocol). [`Error::is_not_found`] tells "no such
//! domain/volume/pool" apart, so the driver can treat a missing object as gone.
use super::xdr::{Decode, Decoder, XdrError};
use crate::cpi::transport::TransportError;
use std::fmt;

/// libvirt's error codes (`virErrorNumber` in virterror.h) that the client and the driver look at.
pub mod code {
    pub const INTERNAL_ERROR: i32 = 1;
    pub const NO_SUPPORT: i32 = 3;
    pub const INVALID_ARG: i32 = 8;
    pub const OPERATION_FAILED: i32 = 9;
    pub const XML_ERROR: i32 = 27;
    pub const DOM_EXIST: i32 = 28;
    pub const OPERATION_DENIED: i32 = 29;
    pub const SYSTEM_ERROR: i32 = 38;
    pub const RPC: i32 = 39;
    pub const NO_DOMAIN: i32 = 42;
    pub const NO_NETWORK: i32 = 43;
    pub const AUTH_FAILED: i32 = 45;
    pub const NO_STORAGE_POOL: i32 = 49;
    pub const NO_STORAGE_VOL: i32 = 50;
    pub const OPERATION_INVALID: i32 = 55;
    pub const CONFIG_UNSUPPORTED: i32 = 67;
    pub const OPERATION_TIMEOUT: i32 = 68;
    pub const NO_DOMAIN_SNAPSHOT: i32 = 72;
    pub const ARGUMENT_UNSUPPORTED: i32 = 74;
    pub const NO_DOMAIN_METADATA: i32 = 80;
    pub const BLOCK_COPY_ACTIVE: i32 = 83;
    pub const OPERATION_UNSUPPORTED: i32 = 84;
    pub const AGENT_UNRESPONSIVE: i32 = 86;
    pub const RESOURCE_BUSY: i32 = 87;
    pub const ACCESS_DENIED: i32 = 88;
    pub const STORAGE_VOL_EXIST: i32 = 90;
    pub const XML_INVALID_SCHEMA: i32 = 92;
    pub const AUTH_UNAVAILABLE: i32 = 94;
    pub const AGENT_UNSYNCED: i32 = 97;
    pub const DEVICE_MISSING: i32 = 99;
    pub const AGENT_COMMAND_TIMEOUT: i32 = 106;
}

/// `remote_error` (remote_protocol.x; `virNetMessageError` in virnetprotocol.x): what libvirt reported.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RemoteError {
    /// `virErrorNumber` (see [`code`]).
    pub code: i32,
    /// `virErrorDomain`: the libvirt subsystem that raised it.
    pub domain: i32,
    pub message: Option<String>,
    pub level: i32,
    pub str1: Option<String>,
    pub str2: Option<String>,
    pub str3: Option<String>,
    pub int1: i32,
    pub int2: i32,
}

/// `remote_nonnull_domain`/`remote_nonnull_network` inside an error: read and dropped (libvirt marks them
/// unused).
fn skip_named_uuid(d: &mut Decoder<'_>, with_id: bool) -> Result<(), XdrError> {
    if d.present("the error's object")? {
        String::decode(d)?;
        <[u8; 16]>::decode(d)?;
        if with_id {
            d.i32("the error's domain id")?;
        }
    }
    Ok(())
}

impl Decode for RemoteError {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, XdrError> {
        let code = d.i32("the error code")?;
        let domain = d.i32("the error domain")?;
        let message = Option::<String>::decode(d)?;
        let level = d.i32("the error level")?;
        skip_named_uuid(d, true)?;
        let str1 = Option::<String>::decode(d)?;
        let str2 = Option::<String>::decode(d)?;
        let str3 = Option::<String>::decode(d)?;
        let int1 = d.i32("the error's int1")?;
        let int2 = d.i32("the error's int2")?;
        skip_named_uuid(d, false)?;
        Ok(RemoteError { code, domain, message, level, str1, str2, str3, int1, int2 })
    }
}

impl RemoteError {
    /// Whether libvirt says the domain, volume, pool or network does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self.code, code::NO_DOMAIN | code::NO_STORAGE_VOL | code::NO_STORAGE_POOL | code::NO_NETWORK)
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.message.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
            Some(m) => write!(f, "{m} (libvirt error {})", self.code),
            None => write!(f, "libvirt error {} (no message)", self.code),
        }
    }
}

/// Everything that can go wrong between the client and libvirt.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection URI cannot be used (malformed, or a transport or parameter the client refuses).
    #[error("libvirt URI {uri:?}: {reason}")]
    Uri { uri: String, reason: String },
    #[error("cannot connect to {target}: {reason}")]
    Connect { target: String, reason: String },
    /// The SSH layer: host key unknown or mismatched, authentication, a lost connection.
    #[error(transparent)]
    Ssh(#[from] TransportError),
    /// TLS set-up or the handshake: certificates, the server's name, the server refusing ours.
    #[error("TLS with {target}: {reason}")]
    Tls { target: String, reason: String },
    /// The server demands an authentication the client does not speak, or refused ours.
    #[error("authentication with {target}: {reason}")]
    Auth { target: String, reason: String },
    /// libvirt answered `procedure` with an error.
    #[error("{procedure}: {error}")]
    Remote { procedure: &'static str, error: Box<RemoteError> },
    /// The connection broke; a new call makes a new connection (once).
    #[error("the connection to {target} was lost while {doing}: {reason}")]
    Disconnected { target: String, doing: String, reason: String },
    /// The peer sent something that is not libvirt's protocol (or more than it allows).
    #[error("protocol error from {target} during {doing}: {reason}")]
    Protocol { target: String, doing: String, reason: String },
    /// A block job that failed or did not become ready in time.
    #[error("block job: {0}")]
    Job(String),
    /// A request the client refuses to send (too long, a hole in a stream that is not sparse, …).
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// libvirt's error, when the server answered with one.
    pub fn remote(&self) -> Option<&RemoteError> {
        match self {
            Error::Remote { error, .. } => Some(error.as_ref()),
            _ => None,
        }
    }

    /// libvirt's error code, when the server answered with one.
    pub fn code(&self) -> Option<i32> {
        self.remote().map(|e| e.code)
    }

    /// Whether libvirt said the domain, volume, pool or network does not exist
    /// (`VIR_ERR_NO_DOMAIN` 42, `VIR_ERR_NO_STORAGE_POOL` 49, `VIR_ERR_NO_STORAGE_VOL` 50, `VIR_ERR_NO_NETWORK` 43).
    pub fn is_not_found(&self) -> bool {
        self.remote().is_some_and(RemoteError::is_not_found)
    }

    /// Whether the connection was lost (the next call reconnects).
    pub fn is_disconnect(&self) -> bool {
        matches!(self, Error::Disconnected { .. } | Error::Ssh(TransportError::Disconnected { .. }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpi::libvirt_rpc::xdr::{from_bytes, Encoder};

    fn wire(code: i32, message: Option<&str>, with_dom: bool) -> Vec<u8> {
        let mut e = Encoder::new();
        e.i32(code);
        e.i32(10); // VIR_FROM_QEMU
        match message {
            Some(m) => {
                e.u32(1);
                e.string("m", m, 100).unwrap();
            }
            None => e.u32(0),
        }
        e.i32(2); // VIR_ERR_ERROR
        if with_dom {
            e.u32(1);
            e.string("n", "vm-1", 100).unwrap();
            e.fixed_opaque(&[1; 16]);
            e.i32(3);
        } else {
            e.u32(0);
        }
        e.u32(1);
        e.string("s", "str1", 100).unwrap();
        e.u32(0);
        e.u32(0);
        e.i32(-1);
        e.i32(0);
        e.u32(0);
        e.into_inner()
    }

    #[test]
    fn remote_errors_keep_code_and_message() {
        let r: RemoteError =
            from_bytes(&wire(42, Some("Domain not found: no domain with matching name 'x'"), false)).unwrap();
        assert_eq!(r.code, code::NO_DOMAIN);
        assert_eq!(r.domain, 10);
        assert_eq!(r.str1.as_deref(), Some("str1"));
        assert!(r.is_not_found());
        assert_eq!(r.to_string(), "Domain not found: no domain with matching name 'x' (libvirt error 42)");
        let e = Error::Remote { procedure: "domain lookup by name", error: Box::new(r) };
        assert!(e.is_not_found());
        assert_eq!(e.code(), Some(42));
        // the unused domain member is read past, a missing message still says something
        let r: RemoteError = from_bytes(&wire(9, None, true)).unwrap();
        assert!(!r.is_not_found());
        assert_eq!(r.to_string(), "libvirt error 9 (no message)");
        for c in [code::NO_STORAGE_VOL, code::NO_STORAGE_POOL, code::NO_NETWORK] {
            assert!(from_bytes::<RemoteError>(&wire(c, Some("gone"), false)).unwrap().is_not_found());
        }
    }

    #[test]
    fn a_truncated_error_is_a_protocol_error() {
        let w = wire(42, Some("gone"), true);
        for cut in 0..w.len() {
            assert!(from_bytes::<RemoteError>(&w[..cut]).is_err(), "cut at {cut}");
        }
    }
}
