//! libvirt over SSH: the project's SSH transport ([`crate::cpi::transport::ssh`]: host key pinned against
//! `known_hosts`, key authentication) opens a channel that runs the host's proxy to its daemon, and the
//! channel's stdin/stdout carry the RPC stream.
//!
//! The command on the host does what libvirt's own `qemu+ssh` transport does in its default ("auto")
//! proxy mode: `virt-ssh-helper URI` when the host has it, else netcat on the daemon's socket (`-q0`
//! when that netcat needs it to exit at EOF). Unlike libvirt, the script is constant and the two values
//! it needs (the driver URI and the socket path, both from a closed set) are positional parameters,
//! quoted in the one place that quotes ([`crate::cpi::transport::posix_quote`]).
use super::{Options, Transport};
use crate::cpi::libvirt_rpc::error::{Error, Result};
use crate::cpi::libvirt_rpc::uri::{Mode, Transport as Kind, Uri};
use crate::cpi::transport::ssh::{Ssh, SshConfig};
use crate::cpi::transport::Transport as _;
use std::io::{self, Read, Write};

/// The host-side proxy: `$1` the driver URI, `$2` the daemon's socket directory (empty for `/session`:
/// the user's runtime directory on the host), `$3` the socket's name.
pub const PROXY_SCRIPT: &str = r#"sock=${2:-${XDG_RUNTIME_DIR:-$HOME/.cache}/libvirt}/$3
if command -v virt-ssh-helper >/dev/null 2>&1; then exec virt-ssh-helper "$1"; fi
if nc -q 2>&1 | grep "requires an argument" >/dev/null 2>&1; then exec nc -q0 -U "$sock"; fi
exec nc -U "$sock""#;

/// The argv run on the host for `uri`.
pub fn proxy_argv(uri: &Uri) -> Vec<String> {
    let dir = if uri.path == "/system" { "/var/run/libvirt" } else { "" };
    let sock = match uri.mode {
        Mode::Direct => format!("virt{}d-sock", uri.driver),
        Mode::Auto | Mode::Legacy => "libvirt-sock".to_string(),
    };
    ["sh", "-c", PROXY_SCRIPT, "vmcpi-libvirt-proxy"]
        .iter()
        .map(|s| s.to_string())
        .chain([uri.server_name(), dir.to_string(), sock])
        .collect()
}

/// The daemon's byte stream on an SSH channel.
pub struct SshStream {
    // the session lives as long as the channel
    _ssh: Ssh,
    ch: ssh2::Channel,
    target: String,
}

/// Connects over SSH to the host `uri` names and starts the proxy there.
pub fn connect(uri: &Uri, opts: &Options) -> Result<SshStream> {
    let Kind::Ssh { user, host, port, keyfile, known_hosts } = &uri.transport else {
        return Err(Error::Invalid("not an SSH URI".into()));
    };
    let cfg = SshConfig {
        host: host.clone(),
        port: *port,
        user: user.clone(),
        private_key: None,
        private_key_path: Some(keyfile.clone()),
        private_key_passphrase: None,
        password: None,
        known_hosts: Some(known_hosts.clone()),
        host_public_key: None,
        platform: "linux".into(),
        connect_timeout_seconds: opts.connect_timeout.as_secs().max(1),
        command_timeout_seconds: opts.io_timeout.as_secs().max(1),
    };
    cfg.validate().map_err(|reason| Error::Uri { uri: uri.target(), reason })?;
    let missing = |p: &std::path::Path| if p.exists() { "is not a file" } else { "does not exist" };
    if !keyfile.is_file() {
        return Err(Error::Connect {
            target: uri.target(),
            reason: format!("the SSH key {} {} (keyfile=)", keyfile.display(), missing(keyfile)),
        });
    }
    if !known_hosts.is_file() {
        return Err(Error::Connect {
            target: uri.target(),
            reason: format!(
                "the known_hosts file {} {}: pin the host's key in one (`ssh-keyscan -p {port} {host}`) and name it with known_hosts=",
                known_hosts.display(),
                missing(known_hosts)
            ),
        });
    }
    let ssh = Ssh::new(cfg);
    let ch = ssh.exec_stream(&proxy_argv(uri))?;
    Ok(SshStream { target: ssh.target(), _ssh: ssh, ch })
}

impl Read for SshStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.ch.read(buf)
    }
}

impl Write for SshStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.ch.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.ch.flush()
    }
}

impl Transport for SshStream {
    fn target(&self) -> String {
        self.target.clone()
    }

    fn diagnostics(&mut self) -> Option<String> {
        // the proxy has ended (its stdout closed): what it printed, and how it exited
        let mut err = Vec::new();
        let _ = self.ch.stderr().take(4096).read_to_end(&mut err);
        let _ = self.ch.wait_close();
        let status = self.ch.exit_status().ok().filter(|s| *s != 0);
        let text = String::from_utf8_lossy(&err).trim().to_string();
        match (text.is_empty(), status) {
            (true, None) => None,
            (true, Some(s)) => Some(format!("the proxy on the host exited with status {s}")),
            (false, None) => Some(format!("the proxy on the host said: {text}")),
            (false, Some(s)) => Some(format!("the proxy on the host exited with status {s}: {text}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    fn fake(dir: &std::path::Path, name: &str, body: &str) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Runs the proxy argv as the host's shell would, with PATH limited to `dir`.
    fn run(dir: &std::path::Path, uri: &str) -> String {
        let argv = proxy_argv(&Uri::parse(uri).unwrap());
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("exec {}", crate::cpi::transport::posix_quote(&argv)))
            .env_clear()
            .env("PATH", dir)
            .env("HOME", "/home/u")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn bin_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for tool in ["grep", "sh"] {
            let real = ["/usr/bin", "/bin"].iter().map(|b| std::path::Path::new(b).join(tool)).find(|p| p.exists());
            std::os::unix::fs::symlink(real.unwrap(), d.path().join(tool)).unwrap();
        }
        d
    }

    #[test]
    fn the_host_runs_virt_ssh_helper_when_it_has_it() {
        let d = bin_dir();
        fake(d.path(), "virt-ssh-helper", r#"echo "helper $*""#);
        fake(d.path(), "nc", r#"echo "nc $*""#);
        let k = "qemu+ssh://u@h/system?keyfile=/k&known_hosts=/kh";
        assert_eq!(run(d.path(), k), "helper qemu:///system\n");
    }

    #[test]
    fn else_netcat_on_the_daemon_socket_as_libvirt_does() {
        let d = bin_dir();
        // OpenBSD netcat needs -q0 to exit at EOF; it says so when -q has no argument
        fake(
            d.path(),
            "nc",
            r#"[ "$1" = -q ] && { echo "nc: option requires an argument -- 'q'" >&2; exit 1; }; echo "nc $*""#,
        );
        assert_eq!(
            run(d.path(), "qemu+ssh://u@h/system?keyfile=/k&known_hosts=/kh"),
            "nc -q0 -U /var/run/libvirt/libvirt-sock\n"
        );
        assert_eq!(
            run(d.path(), "qemu+ssh://u@h/session?keyfile=/k&known_hosts=/kh"),
            "nc -q0 -U /home/u/.cache/libvirt/libvirt-sock\n"
        );
        assert_eq!(
            run(d.path(), "qemu+ssh://u@h/system?keyfile=/k&known_hosts=/kh&mode=direct"),
            "nc -q0 -U /var/run/libvirt/virtqemud-sock\n"
        );
        let d = bin_dir();
        fake(d.path(), "nc", r#"[ "$1" = -q ] && { echo "nc: invalid option -- 'q'" >&2; exit 1; }; echo "nc $*""#);
        assert_eq!(
            run(d.path(), "qemu+ssh://u@h/system?keyfile=/k&known_hosts=/kh"),
            "nc -U /var/run/libvirt/libvirt-sock\n"
        );
    }
}
