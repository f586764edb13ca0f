//! The cloud_properties this driver understands: VM, network and disk.
use super::*;
use crate::cpi::driver::props::{vm_props, Limits};

/// VMware Workstation's limits: 128 vCPUs, 128 GiB of memory in steps of 4 MiB, 8 TiB disks.
pub(super) const LIMITS: Limits = Limits {
    max_cpus: 128,
    min_ram_mib: 4,
    max_ram_mib: 128 << 10,
    ram_step_mib: 4,
    max_disk_mib: 8 << 20,
    max_ram_text: "128 GiB",
    max_disk_text: "8 TiB",
};

vm_props! {
    /// VM `cloud_properties`.
    VmProps {}
}

pub(super) use crate::cpi::driver::bootstrap::Bootstrap;

/// Network `cloud_properties`: `name` is `nat`, `bridged`, `hostonly` or a `vmnetN`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NetProps {
    #[serde(default)]
    pub(super) name: Option<String>,
}

/// Disk `cloud_properties` (none are understood yet; unknown keys are refused).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DiskProps {}

/// (`connectionType`, `vnet`) for a network name.
pub(super) fn nic_connection(name: &str) -> Result<(&'static str, Option<String>), String> {
    match name {
        "nat" => Ok(("nat", None)),
        "bridged" => Ok(("bridged", None)),
        "hostonly" => Ok(("hostonly", None)),
        n if n
            .strip_prefix("vmnet")
            .is_some_and(|d| !d.is_empty() && d.len() <= 3 && d.bytes().all(|b| b.is_ascii_digit())) =>
        {
            Ok(("custom", Some(n.to_string())))
        }
        n if n.starts_with('/') && !n.contains(['"', '\n']) => Ok(("custom", Some(n.to_string()))),
        other => {
            Err(format!("network name must be nat, bridged, hostonly, vmnetN or a vmnet device path, got {other:?}"))
        }
    }
}
