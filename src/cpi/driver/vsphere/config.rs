//! The `driver` section for `kind: vsphere`, validated once. See `docs/vsphere.md` for an example.
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsphereConfig {
    /// vCenter or ESXi: a host name (`vc.example.com`, HTTPS on 443) or a URL (`https://vc:8443`,
    /// `http://127.0.0.1:8989/sdk`). The SDK path defaults to `/sdk`.
    pub host: String,
    pub user: String,
    /// A [`Secret`](crate::common::secret::Secret): never logged, never in a response (a number is read as one too).
    pub password: crate::common::secret::Secret,
    /// Datacenter name, or its inventory path when it sits in a folder (`emea/DC1`). A standalone ESXi host
    /// has one, `ha-datacenter`.
    pub datacenter: String,
    /// Clusters (or standalone hosts) to place VMs and stemcells in; the first is used. Empty: the first
    /// compute resource of the datacenter.
    #[serde(default)]
    pub clusters: Vec<String>,
    /// A resource pool inside the cluster, as a path below its root pool (`bosh` or `bosh/z1`).
    #[serde(default)]
    pub resource_pool: Option<String>,
    /// Datastore names or patterns (`*` and `?`); the one with the most free space is used. Empty: all
    /// datastores of the datacenter.
    #[serde(default)]
    pub datastores: Vec<String>,
    /// Folder (below the datacenter's VM folder) for VMs, created when missing. Ignored on a standalone
    /// ESXi host, which has no folders.
    #[serde(default = "default_vm_folder")]
    pub vm_folder: String,
    /// Folder for stemcell templates.
    #[serde(default = "default_template_folder")]
    pub template_folder: String,
    /// Datastore directory for persistent disks.
    #[serde(default = "default_disk_folder")]
    pub disk_folder: String,
    /// Port group for BOSH networks whose cloud_properties name none.
    #[serde(default = "default_network")]
    pub default_network: String,
    /// Turns TLS certificate checking off (a warning is logged on every call).
    #[serde(default)]
    pub insecure: bool,
    /// PEM CA bundle to verify the server with, instead of the public roots.
    #[serde(default)]
    pub ca_cert: Option<String>,
    /// Pin of the server certificate: SHA-256 (or SHA-1) fingerprint, hex with or without colons.
    #[serde(default)]
    pub thumbprint: Option<String>,
    /// Guest OS id for VMs built with CreateVM (standalone ESXi).
    #[serde(default = "default_guest_id")]
    pub guest_id: String,
    /// Deprecated and ignored: settings media are written in-process ([`crate::cpi::iso9660`]). Still accepted so
    /// that configs written for earlier versions load.
    #[serde(default)]
    pub xorriso: Option<PathBuf>,
    /// In-flight markers of creates and their scratch space (unpacked stemcells), see [`crate::cpi::inflight`];
    /// one subdirectory per vSphere host and datacenter.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Longest wait for one vSphere task.
    #[serde(default = "default_task_timeout")]
    pub task_timeout_seconds: u64,
    /// Longest wait for one HTTP response (an upload counts from its last byte).
    #[serde(default = "default_http_timeout")]
    pub http_timeout_seconds: u64,
}

/// What a request's context (a director's CPI config) may set in a vSphere driver section: where to connect
/// and as whom, and where VMs, templates and disks go there. Not `insecure`, `ca_cert` or `thumbprint` (how
/// the server is trusted is the file's decision: a context must not weaken it or swap the trust anchor),
/// `state_dir` (a local path) or `xorriso` (a program).
pub const CONTEXT_KEYS: &[&str] = &[
    "kind",
    "host",
    "user",
    "password",
    "datacenter",
    "clusters",
    "resource_pool",
    "datastores",
    "vm_folder",
    "template_folder",
    "disk_folder",
    "default_network",
    "guest_id",
    "task_timeout_seconds",
    "http_timeout_seconds",
];

fn default_vm_folder() -> String {
    "vmcpi_vms".into()
}
fn default_template_folder() -> String {
    "vmcpi_templates".into()
}
fn default_disk_folder() -> String {
    "vmcpi_disks".into()
}
fn default_network() -> String {
    "VM Network".into()
}
fn default_guest_id() -> String {
    "ubuntu64Guest".into()
}
fn default_state_dir() -> PathBuf {
    "/var/tmp/vmcpi/vsphere".into()
}
fn default_task_timeout() -> u64 {
    3600
}
fn default_http_timeout() -> u64 {
    600
}

impl VsphereConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.host.trim().is_empty() {
            return Err("driver.host must name the vCenter or ESXi host".into());
        }
        if self.datacenter.is_empty() || self.datacenter.starts_with('/') || self.datacenter.ends_with('/') {
            return Err(format!(
                "driver.datacenter must be a datacenter name or inventory path (\"DC1\", \"emea/DC1\"), got {:?}",
                self.datacenter
            ));
        }
        if self.user.is_empty() {
            return Err("driver.user must not be empty".into());
        }
        if self.insecure && (self.ca_cert.is_some() || self.thumbprint.is_some()) {
            return Err("driver.insecure contradicts driver.ca_cert / driver.thumbprint: set only one".into());
        }
        if let Some(t) = &self.thumbprint {
            super::tls::Thumbprint::parse(t)?;
        }
        for (name, f) in [
            ("vm_folder", &self.vm_folder),
            ("template_folder", &self.template_folder),
            ("disk_folder", &self.disk_folder),
        ] {
            if f.is_empty() || f.starts_with('/') || f.split('/').any(|p| p.is_empty() || p == "..") {
                return Err(format!("driver.{name} must be a relative path like \"bosh/vms\", got {f:?}"));
            }
        }
        if !self.state_dir.is_absolute() {
            return Err(format!("driver.state_dir must be an absolute path, got {}", self.state_dir.display()));
        }
        if self.task_timeout_seconds == 0 || self.http_timeout_seconds == 0 {
            return Err("driver.task_timeout_seconds and driver.http_timeout_seconds must be positive".into());
        }
        Ok(())
    }

    /// This vCenter's and datacenter's directory below `state_dir`: markers of one vCenter are never reaped
    /// through another.
    pub fn inflight_dir(&self) -> PathBuf {
        let key: String = format!("{}_{}", self.base_url(), self.datacenter)
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' })
            .collect();
        self.state_dir.join(key)
    }

    /// `scheme://host[:port]` without a path.
    pub fn base_url(&self) -> String {
        let h = self.host.trim().trim_end_matches('/');
        let with_scheme = if h.contains("://") { h.to_string() } else { format!("https://{h}") };
        match with_scheme.find("://").map(|i| i + 3).and_then(|i| with_scheme[i..].find('/').map(|j| i + j)) {
            Some(p) => with_scheme[..p].to_string(),
            None => with_scheme,
        }
    }

    /// The SDK endpoint (`…/sdk` unless the host URL has a path).
    pub fn sdk_url(&self) -> String {
        let h = self.host.trim().trim_end_matches('/');
        let base = self.base_url();
        let path = h.find("://").map(|i| &h[i + 3..]).unwrap_or(h).find('/').map(|j| {
            let start = h.find("://").map(|i| i + 3).unwrap_or(0) + j;
            &h[start..]
        });
        format!("{base}{}", path.filter(|p| !p.is_empty()).unwrap_or("/sdk"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(host: &str) -> VsphereConfig {
        serde_json::from_value(serde_json::json!({"host": host, "user": "u", "password": "p", "datacenter": "DC0"}))
            .unwrap()
    }

    #[test]
    fn urls() {
        assert_eq!(cfg("vc.example.com").sdk_url(), "https://vc.example.com/sdk");
        assert_eq!(cfg("http://127.0.0.1:8989/sdk").sdk_url(), "http://127.0.0.1:8989/sdk");
        assert_eq!(cfg("http://127.0.0.1:8989/sdk").base_url(), "http://127.0.0.1:8989");
        assert_eq!(cfg("https://vc:8443/").sdk_url(), "https://vc:8443/sdk");
    }

    #[test]
    fn validation() {
        assert!(cfg("vc").validate().is_ok());
        let mut c = cfg("vc");
        c.insecure = true;
        c.thumbprint = Some("00".repeat(32));
        assert!(c.validate().unwrap_err().contains("contradicts"));
        let mut c = cfg("vc");
        c.vm_folder = "../x".into();
        assert!(c.validate().is_err());
    }

    #[test]
    fn the_example_config_is_valid() {
        let v: serde_json::Value = serde_json::from_str(include_str!("../../../../examples/vsphere-cpi.json")).unwrap();
        let cfg = crate::cpi::config::Config::from_value(v, None, "examples/vsphere-cpi.json").unwrap();
        match cfg.driver {
            crate::cpi::driver::DriverConfig::Vsphere(c) => assert_eq!(c.sdk_url(), "https://vcenter.example.com/sdk"),
            _ => panic!("not a vsphere config"),
        }
    }
}
