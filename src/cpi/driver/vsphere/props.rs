//! The cloud_properties this driver understands (VM and disk) and vSphere's size limits.
use super::*;
use crate::cpi::driver::props::{vm_props, Limits};

/// vSphere's largest VM: 768 vCPUs, 24 TiB of memory, 62 TiB disks.
pub(super) const LIMITS: Limits = Limits {
    max_cpus: MAX_CPUS,
    min_ram_mib: 4,
    max_ram_mib: MAX_RAM_MIB,
    ram_step_mib: 1,
    max_disk_mib: MAX_DISK_MIB,
    max_ram_text: "24 TiB",
    max_disk_text: "62 TiB",
};

vm_props! {
    /// VM `cloud_properties` this driver understands.
    VmProps {
        /// Datastore names or patterns for this VM's files (default: the stemcell's datastore).
        #[serde(default)]
        datastores: Vec<String>,
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DiskProps {
    /// `thin` (default), `preallocated` or `eagerZeroedThick`.
    #[serde(default)]
    pub(super) r#type: DiskType,
    #[serde(default)]
    pub(super) datastores: Vec<String>,
}

/// How a virtual disk's blocks are allocated (vSphere's `diskType` names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) enum DiskType {
    #[default]
    Thin,
    Preallocated,
    EagerZeroedThick,
}

impl DiskType {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            DiskType::Thin => "thin",
            DiskType::Preallocated => "preallocated",
            DiskType::EagerZeroedThick => "eagerZeroedThick",
        }
    }
}

/// vSphere's largest virtual disk (62 TiB), in MiB.
pub(super) const MAX_DISK_MIB: u64 = 62 << 20;
/// vSphere's largest VM: 768 vCPUs, 24 TiB of memory.
pub(super) const MAX_CPUS: u32 = 768;
pub(super) const MAX_RAM_MIB: u64 = 24 << 20;

/// A disk size in MiB, checked against vSphere's limit before any arithmetic on it.
pub(super) fn disk_size(what: &str, mib: u64) -> DriverResult<u64> {
    if mib == 0 || mib > MAX_DISK_MIB {
        return Err(DriverError::invalid(
            what,
            format!("must be between 1 and {MAX_DISK_MIB} MiB (62 TiB), got {mib}"),
        ));
    }
    Ok(mib)
}
