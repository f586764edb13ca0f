//! The `driver` section for `kind: vmrun`: what it holds, its defaults and its checks.
use super::*;

/// The `driver` section for `kind: vmrun`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmrunConfig {
    /// Absolute directory on the hypervisor host holding stemcells, VMs and disks.
    pub vm_store_path: String,
    /// `vmrun` on the hypervisor host.
    #[serde(default = "default_vmrun")]
    pub vmrun: String,
    /// `ovftool` on the hypervisor host; without it stemcells are imported by vmcpi itself (qemu-img).
    #[serde(default)]
    pub ovftool: Option<String>,
    /// Lets a stemcell's OVF set raw .vmx keys (`vmw:ExtraConfig`: serial ports into host files, shared
    /// folders, isolation switches) through `ovftool --allowExtraConfig`. Off by default: only for
    /// stemcells you trust. Never from a request's context ([`CONTEXT_KEYS`]).
    #[serde(default)]
    pub allow_extra_config: bool,
    /// `vmware-vdiskmanager` on the hypervisor host; without it disks are made with `qemu_img`.
    #[serde(default)]
    pub vdiskmanager: Option<String>,
    /// `qemu-img` on the hypervisor host (disks, when there is no vdiskmanager).
    #[serde(default = "default_qemu_img")]
    pub qemu_img: String,
    /// `qemu-img` on the CPI's host (stemcell conversion, when there is no ovftool).
    #[serde(default = "default_local_qemu_img")]
    pub local_qemu_img: PathBuf,
    /// Deprecated and ignored: settings media are written in-process ([`crate::cpi::iso9660`]). Still accepted so
    /// that configs written for earlier versions load.
    #[serde(default)]
    pub xorriso: Option<PathBuf>,
    /// `ws` (Workstation), `fusion` or `player`: passed to vmrun as `-T`.
    #[serde(default = "default_host_type")]
    pub host_type: String,
    /// Network for BOSH networks whose cloud_properties name none: `nat`, `bridged`, `hostonly` or a
    /// `vmnetN` name.
    #[serde(default = "default_network")]
    pub default_network: String,
    #[serde(default = "default_start_timeout")]
    pub start_timeout_seconds: u64,
    #[serde(default = "default_soft_shutdown_timeout")]
    pub soft_shutdown_timeout_seconds: u64,
    /// Longest wait for another CPI call's lock on a VM or stemcell.
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout_seconds: u64,
    /// Reach the hypervisor host over SSH instead of running the tools locally.
    #[serde(default)]
    pub ssh: Option<SshConfig>,
    /// Where stemcell images are unpacked on the CPI's host (default: $TMPDIR or /tmp).
    #[serde(default)]
    pub tmp_dir: Option<PathBuf>,
}

/// What a request's context (a director's CPI config) may set in a vmrun driver section: which host (its
/// `ssh` block, see [`crate::cpi::transport::ssh::CONTEXT_KEYS`]), the host type, networks and time-outs, and
/// bosh-vmrun-cpi's names for those. Not the programs (`vmrun`, `ovftool`, `vdiskmanager`, `qemu_img`,
/// `local_qemu_img`, `xorriso` and bosh-vmrun-cpi's `*_bin_path`) or paths (`vm_store_path`, `tmp_dir`,
/// `stemcell_store_path`): those come from the file.
pub const CONTEXT_KEYS: &[&str] = &[
    "kind",
    "ssh",
    "ssh_tunnel",
    "host_type",
    "default_network",
    "start_timeout_seconds",
    "soft_shutdown_timeout_seconds",
    "lock_timeout_seconds",
    "vm_start_max_wait_seconds",
    "vm_soft_shutdown_max_wait_seconds",
    "enable_human_readable_name",
    "use_linked_cloning",
];

pub(super) fn default_vmrun() -> String {
    "/usr/bin/vmrun".into()
}
pub(super) fn default_qemu_img() -> String {
    "/usr/bin/qemu-img".into()
}
pub(super) fn default_local_qemu_img() -> PathBuf {
    "/usr/bin/qemu-img".into()
}
pub(super) fn default_host_type() -> String {
    "ws".into()
}
pub(super) fn default_network() -> String {
    "nat".into()
}
pub(super) fn default_start_timeout() -> u64 {
    300
}
pub(super) fn default_soft_shutdown_timeout() -> u64 {
    30
}
pub(super) fn default_lock_timeout() -> u64 {
    600
}

impl VmrunConfig {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(s) = &self.ssh {
            s.validate()?;
        }
        let windows = |p: &str| p.len() >= 2 && p.as_bytes()[1] == b':' || p.contains('\\');
        if windows(&self.vm_store_path) {
            return Err(transport::ssh::WINDOWS_REFUSED.into());
        }
        if !self.vm_store_path.starts_with('/') || self.vm_store_path.trim_end_matches('/').is_empty() {
            return Err(format!(
                "driver.vm_store_path must be an absolute directory other than /, got {:?}",
                self.vm_store_path
            ));
        }
        let host_tools = [
            ("vmrun", Some(&self.vmrun)),
            ("ovftool", self.ovftool.as_ref()),
            ("vdiskmanager", self.vdiskmanager.as_ref()),
            ("qemu_img", Some(&self.qemu_img)),
        ];
        for (name, p) in host_tools {
            if let Some(p) = p {
                if !p.starts_with('/') {
                    return Err(format!("driver.{name} must be an absolute path on the hypervisor host (the director runs the CPI with a minimal PATH), got {p:?}"));
                }
            }
        }
        if !self.local_qemu_img.is_absolute() {
            return Err(format!(
                "driver.local_qemu_img must be an absolute path, got {}",
                self.local_qemu_img.display()
            ));
        }
        if !matches!(self.host_type.as_str(), "ws" | "fusion" | "player") {
            return Err(format!("driver.host_type must be \"ws\", \"fusion\" or \"player\", got {:?}", self.host_type));
        }
        if self.host_type == "player" && self.ovftool.is_none() {
            return Err("driver.host_type \"player\" needs driver.ovftool: Player has no snapshots or clones, so VMs are full copies made by ovftool".into());
        }
        if self.start_timeout_seconds == 0 || self.soft_shutdown_timeout_seconds == 0 || self.lock_timeout_seconds == 0
        {
            return Err("driver timeouts must be positive".into());
        }
        nic_connection(&self.default_network).map_err(|e| format!("driver.default_network: {e}"))?;
        Ok(())
    }
}
