//! The `driver` section for `kind: libvirt`: what it holds, its defaults and its checks.
use super::*;

/// The `driver` section for `kind: libvirt`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibvirtConfig {
    /// libvirt connection URI. For `qemu+ssh://` pin the host key: `?command=/path/to/pinned-ssh` or
    /// `qemu+libssh2://…?known_hosts=…` (see the README).
    #[serde(default = "default_uri")]
    pub uri: String,
    /// Storage pool holding stemcells, VM volumes and disks.
    #[serde(default = "default_pool")]
    pub pool: String,
    /// When set and the pool does not exist, it is created as a directory pool at this path.
    #[serde(default)]
    pub pool_path: Option<PathBuf>,
    /// `kvm` (hardware virtualisation) or `qemu` (software emulation, e.g. nested hosts).
    #[serde(default = "default_domain_type")]
    pub domain_type: String,
    /// QEMU machine type.
    #[serde(default = "default_machine")]
    pub machine: String,
    /// libvirt network for BOSH networks whose cloud_properties name none.
    #[serde(default = "default_network")]
    pub default_network: String,
    /// A VNC display on 127.0.0.1 for each VM.
    #[serde(default = "yes")]
    pub graphics: bool,
    #[serde(default = "default_virsh")]
    pub virsh: PathBuf,
    #[serde(default = "default_qemu_img")]
    pub qemu_img: PathBuf,
    /// Deprecated and ignored: settings media are written in-process ([`crate::iso9660`]). Still accepted so
    /// that configs written for earlier versions load.
    #[serde(default)]
    pub xorriso: Option<PathBuf>,
    /// In-flight markers of creates and their scratch space (unpacked stemcells): see [`crate::inflight`].
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
}

pub(super) fn default_state_dir() -> PathBuf {
    "/var/tmp/vmcpi".into()
}

pub(super) fn default_uri() -> String {
    "qemu:///system".into()
}
pub(super) fn default_pool() -> String {
    "default".into()
}
pub(super) fn default_domain_type() -> String {
    "kvm".into()
}
pub(super) fn default_machine() -> String {
    "q35".into()
}
pub(super) fn default_network() -> String {
    "default".into()
}
pub(super) fn yes() -> bool {
    true
}
pub(super) fn default_virsh() -> PathBuf {
    "/usr/bin/virsh".into()
}
pub(super) fn default_qemu_img() -> PathBuf {
    "/usr/bin/qemu-img".into()
}

impl LibvirtConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !matches!(self.domain_type.as_str(), "kvm" | "qemu") {
            return Err(format!("driver.domain_type must be \"kvm\" or \"qemu\", got {:?}", self.domain_type));
        }
        if self.pool.is_empty() || self.pool.contains('/') {
            return Err(format!("driver.pool must be a storage pool name, got {:?}", self.pool));
        }
        for (name, p) in [("virsh", &self.virsh), ("qemu_img", &self.qemu_img)] {
            if !p.is_absolute() {
                return Err(format!(
                    "driver.{name} must be an absolute path (the director runs the CPI with a minimal PATH), got {}",
                    p.display()
                ));
            }
        }
        for (name, p) in [("pool_path", self.pool_path.as_ref()), ("state_dir", Some(&self.state_dir))] {
            if let Some(p) = p {
                if !p.is_absolute() {
                    return Err(format!("driver.{name} must be an absolute path, got {}", p.display()));
                }
            }
        }
        Ok(())
    }
}
