//! The cloud_properties this driver understands: VM, network and disk.
use super::*;
use crate::driver::props::{default_cpu, default_ram, Limits};

/// QEMU/KVM's limits as this driver applies them: 512 vCPUs, 16 MiB to 16 TiB of memory, 64 TiB disks.
pub(super) const LIMITS: Limits = Limits {
    max_cpus: 512,
    min_ram_mib: 16,
    max_ram_mib: 16 << 20,
    ram_step_mib: 1,
    max_disk_mib: 64 << 20,
    max_ram_text: "16 TiB",
    max_disk_text: "64 TiB",
};

/// VM `cloud_properties` this driver understands.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VmProps {
    /// vCPUs.
    #[serde(default = "default_cpu")]
    pub(super) cpu: u32,
    /// RAM in MiB.
    #[serde(default = "default_ram")]
    pub(super) ram: u64,
    /// Ephemeral disk in MiB (0: none; the agent then partitions the root disk).
    #[serde(default)]
    pub(super) disk: u64,
    /// Root disk size in MiB (default: the stemcell's size; larger grows the overlay).
    #[serde(default)]
    pub(super) root_disk: Option<u64>,
    /// Direct kernel boot (kernel path on the hypervisor host), e.g. for test images.
    #[serde(default)]
    pub(super) kernel: Option<String>,
    #[serde(default)]
    pub(super) initrd: Option<String>,
    #[serde(default)]
    pub(super) cmdline: Option<String>,
    /// File on the hypervisor host that receives the serial console.
    #[serde(default)]
    pub(super) serial_log: Option<String>,
    /// Script run in the guest after boot (QEMU guest agent).
    #[serde(default)]
    pub(super) bootstrap: Option<bootstrap::Bootstrap>,
}

/// Network `cloud_properties`: at most one of `name` (libvirt network), `bridge` (host bridge), or
/// `type: user` (QEMU user-mode networking, no host set-up).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NetProps {
    pub(super) name: Option<String>,
    pub(super) bridge: Option<String>,
    #[serde(rename = "type")]
    pub(super) kind: Option<String>,
    /// `type: user` only: `[{host: "127.0.0.1:26868", guest: 6868}, …]` (see `portfwd`).
    #[serde(default)]
    pub(super) port_forwards: Option<Value>,
}

/// Disk `cloud_properties`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DiskProps {
    /// `qcow2` (default, thin) or `raw`.
    #[serde(default)]
    pub(super) format: Option<String>,
}
