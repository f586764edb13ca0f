//! The `ssh` block of a driver config, and what a request's context may set in it.
use serde::Deserialize;
use std::path::PathBuf;

/// The `ssh` block of a driver config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshConfig {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub user: String,
    /// The private key itself (OpenSSH or PEM format), as BOSH job properties carry it.
    #[serde(default)]
    pub private_key: Option<crate::common::secret::Secret>,
    /// Or the path of the private key on the CPI's host.
    #[serde(default)]
    pub private_key_path: Option<PathBuf>,
    #[serde(default)]
    pub private_key_passphrase: Option<crate::common::secret::Secret>,
    #[serde(default)]
    pub password: Option<crate::common::secret::Secret>,
    /// known_hosts file on the CPI's host holding the host's key (`[host]:port` entries for other ports).
    #[serde(default)]
    pub known_hosts: Option<PathBuf>,
    /// Or the host's public key inline: `ssh-ed25519 AAAA…` (what `ssh-keyscan` prints after the host name).
    #[serde(default)]
    pub host_public_key: Option<String>,
    /// `linux` or `darwin`; `windows` is refused (not supported yet).
    #[serde(default = "default_platform")]
    pub platform: String,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_seconds: u64,
    /// Upper bound for any single wait on the connection (a command's output, a lock).
    #[serde(default = "default_command_timeout")]
    pub command_timeout_seconds: u64,
}

/// What a request's context may set in an `ssh` block (and bosh-vmrun-cpi's `ssh_tunnel`): the host, as whom
/// (inline key or password), and the host's key inline. Not `known_hosts` or `private_key_path`: files on
/// the CPI's host.
pub const CONTEXT_KEYS: &[&str] = &[
    "host",
    "port",
    "user",
    "username",
    "private_key",
    "private_key_passphrase",
    "password",
    "host_public_key",
    "platform",
    "connect_timeout_seconds",
    "command_timeout_seconds",
];

fn default_port() -> u16 {
    22
}
fn default_platform() -> String {
    "linux".into()
}
fn default_connect_timeout() -> u64 {
    20
}
fn default_command_timeout() -> u64 {
    3600
}

/// What a Windows user sees.
pub const WINDOWS_REFUSED: &str = "Windows hypervisor hosts are not supported over SSH yet: vmcpi quotes commands for a POSIX shell and uses POSIX paths, flock and perl on the host. Run vmcpi on the Windows host itself is not supported either; use a Linux or macOS host (see docs/vmrun.md, \"Windows\", for the plan)";

impl SshConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.host.is_empty() || self.user.is_empty() {
            return Err("driver.ssh.host and driver.ssh.user must not be empty".into());
        }
        match self.platform.as_str() {
            "linux" | "darwin" => {}
            "windows" => return Err(WINDOWS_REFUSED.into()),
            other => return Err(format!("driver.ssh.platform must be \"linux\" or \"darwin\", got {other:?}")),
        }
        let auths = [self.private_key.is_some(), self.private_key_path.is_some(), self.password.is_some()];
        if auths.iter().filter(|b| **b).count() != 1 {
            return Err("driver.ssh needs exactly one of private_key, private_key_path, password".into());
        }
        if self.known_hosts.is_some() == self.host_public_key.is_some() {
            return Err(format!(
                "driver.ssh needs exactly one of known_hosts (a file) or host_public_key (\"ssh-ed25519 AAAA…\"): vmcpi always checks the host key; get it with `ssh-keyscan -p {} {}`",
                self.port, self.host
            ));
        }
        if let Some(k) = &self.host_public_key {
            if k.split_whitespace().count() < 2 {
                return Err("driver.ssh.host_public_key must look like \"ssh-ed25519 AAAA…\"".into());
            }
        }
        if self.connect_timeout_seconds == 0 || self.command_timeout_seconds == 0 {
            return Err("driver.ssh timeouts must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::cpi::transport::ssh::tests::cfg;
    use serde_json::json;

    #[test]
    fn config_validation() {
        let ok = cfg(json!({"host": "h", "user": "u", "private_key_path": "/k", "known_hosts": "/kh"}));
        ok.validate().unwrap();
        assert_eq!(ok.port, 22);
        let e = cfg(json!({"host": "h", "user": "u", "private_key_path": "/k"})).validate().unwrap_err();
        assert!(e.contains("ssh-keyscan"), "{e}");
        let e = cfg(json!({"host": "h", "user": "u", "password": "p", "private_key": "k", "known_hosts": "/kh"}))
            .validate()
            .unwrap_err();
        assert!(e.contains("exactly one"), "{e}");
        let e = cfg(json!({"host": "h", "user": "u", "password": "p", "known_hosts": "/kh", "platform": "windows"}))
            .validate()
            .unwrap_err();
        assert!(e.contains("Windows"), "{e}");
    }
}
