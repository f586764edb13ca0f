//! The byte streams the client speaks over, behind one trait: the local unix socket ([`unix`]), a
//! command's stdin/stdout on an SSH channel ([`ssh`]) and TLS over TCP ([`tls`]). The client itself only
//! reads and writes; anything that is a [`Transport`] works (the tests use a unix socket to a scripted
//! peer).
use super::error::Result;
use super::uri::{Transport as Kind, Uri};
use std::io::{Read, Write};
use std::time::Duration;

pub mod ssh;
pub mod tls;
pub mod unix;

/// A connected byte stream to a libvirt daemon.
pub trait Transport: Read + Write + Send {
    /// What this is connected to, for messages ("unix socket /run/libvirt/libvirt-sock", …).
    fn target(&self) -> String;

    /// Whether a read would return at once (bytes or EOF are waiting). Used during an upload to notice a
    /// server error early; `false` when the transport cannot tell (then the error is seen at the end).
    fn readable(&mut self) -> bool {
        false
    }

    /// What the far side said when the stream ended unexpectedly (an SSH command's stderr), if anything.
    fn diagnostics(&mut self) -> Option<String> {
        None
    }
}

/// Limits of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Establishing the connection (TCP, SSH or TLS handshake).
    pub connect_timeout: Duration,
    /// Longest wait for any one read or write: a daemon that stops answering fails the call after it.
    pub io_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options { connect_timeout: Duration::from_secs(20), io_timeout: Duration::from_secs(600) }
    }
}

/// Connects to what `uri` names.
pub fn connect(uri: &Uri, opts: &Options) -> Result<Box<dyn Transport>> {
    Ok(match &uri.transport {
        Kind::Unix => Box::new(unix::connect_local(uri, opts)?),
        Kind::Ssh { .. } => Box::new(ssh::connect(uri, opts)?),
        Kind::Tls { host, port, pki } => Box::new(tls::connect(host, *port, host, pki, opts)?),
    })
}

/// Whether `fd` has bytes (or EOF) to read right now.
pub(crate) fn fd_readable(fd: std::os::fd::RawFd) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, zero timeout
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
}
