//! The cloud_properties this driver understands: VM, network and disk.
use super::*;
use crate::cpi::driver::props::{vm_props, Limits};

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

vm_props! {
    /// VM `cloud_properties` this driver understands.
    VmProps {
    /// Root disk size in MiB (default: the stemcell's size; larger grows the overlay).
    #[serde(default)]
    root_disk: Option<u64>,
    /// Direct kernel boot (kernel path on the hypervisor host), e.g. for test images.
    #[serde(default)]
    kernel: Option<String>,
    #[serde(default)]
    initrd: Option<String>,
    #[serde(default)]
    cmdline: Option<String>,
    /// File on the hypervisor host that receives the serial console.
    #[serde(default)]
    serial_log: Option<String>,
    }
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
    pub(super) format: VolumeFormat,
}

/// The format of a persistent disk's volume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum VolumeFormat {
    #[default]
    Qcow2,
    Raw,
}

impl VolumeFormat {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            VolumeFormat::Qcow2 => "qcow2",
            VolumeFormat::Raw => "raw",
        }
    }
}
