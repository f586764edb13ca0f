//! The local daemon's unix socket. `/system`: `/var/run/libvirt/libvirt-sock` (libvirtd, or virtproxyd
//! on hosts with modular daemons), else the driver's own daemon (`virtqemud-sock`); `mode=legacy` or
//! `mode=direct` picks one. `/session`: the same
//! names under `$XDG_RUNTIME_DIR/libvirt` (or `~/.cache/libvirt`). The client never starts a daemon.
use super::{fd_readable, Options, Transport};
use crate::cpi::libvirt_rpc::error::{Error, Result};
use crate::cpi::libvirt_rpc::uri::{Mode, Uri};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// A connected unix socket.
#[derive(Debug)]
pub struct Unix {
    s: UnixStream,
    path: PathBuf,
}

/// The sockets to try for `uri`, in order.
pub fn candidates(uri: &Uri) -> Vec<PathBuf> {
    let dir = if uri.path == "/session" {
        match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
            Some(d) => PathBuf::from(d).join("libvirt"),
            None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/libvirt"),
        }
    } else {
        PathBuf::from("/var/run/libvirt")
    };
    let (legacy, direct) = (dir.join("libvirt-sock"), dir.join(format!("virt{}d-sock", uri.driver)));
    match uri.mode {
        Mode::Auto => vec![legacy, direct],
        Mode::Legacy => vec![legacy],
        Mode::Direct => vec![direct],
    }
}

/// Connects to the local daemon for `uri`.
pub fn connect_local(uri: &Uri, opts: &Options) -> Result<Unix> {
    let paths = candidates(uri);
    if let Some(p) = paths.iter().find(|p| p.exists()) {
        return connect(p, opts);
    }
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    Err(Error::Connect {
        target: uri.server_name(),
        reason: format!("no libvirt daemon runs here (no socket at {}); start libvirtd", shown.join(" or ")),
    })
}

/// Connects to the socket at `path`.
pub fn connect(path: &Path, opts: &Options) -> Result<Unix> {
    let target = format!("unix socket {}", path.display());
    let s = UnixStream::connect(path).map_err(|e| {
        let reason = match e.kind() {
            io::ErrorKind::NotFound => "it does not exist (is the libvirt daemon running?)".to_string(),
            io::ErrorKind::PermissionDenied => {
                "permission denied (run as root or as a member of the group that owns the socket)".to_string()
            }
            io::ErrorKind::ConnectionRefused => {
                "connection refused (the socket exists but no daemon listens on it)".to_string()
            }
            _ => e.to_string(),
        };
        Error::Connect { target: target.clone(), reason }
    })?;
    s.set_read_timeout(Some(opts.io_timeout))
        .and_then(|_| s.set_write_timeout(Some(opts.io_timeout)))
        .map_err(|e| Error::Connect { target: target.clone(), reason: format!("cannot set time-outs: {e}") })?;
    Ok(Unix { s, path: path.to_path_buf() })
}

impl Unix {
    /// A socket connected by someone else (tests: one end of a pair, a scripted peer).
    pub fn from_stream(s: UnixStream, name: &str) -> Unix {
        Unix { s, path: PathBuf::from(name) }
    }
}

impl Read for Unix {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.s.read(buf)
    }
}

impl Write for Unix {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.s.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.s.flush()
    }
}

impl Transport for Unix {
    fn target(&self) -> String {
        format!("unix socket {}", self.path.display())
    }
    fn readable(&mut self) -> bool {
        fd_readable(self.s.as_raw_fd())
    }
}
