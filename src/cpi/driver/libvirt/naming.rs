//! Names: stemcell, VM and disk CIDs and what they say, and the disk hints the agent resolves.
use super::*;

/// Suffixes of stemcell CIDs: family, firmware and volume format. `vs`/`vsefi` (qcow2) are the CIDs of
/// vSphere stemcells imported by earlier versions (through qemu-img); they keep working.
pub(super) const STEMCELL_TAGS: &[&str] = &["os", "osraw", "vs", "vsefi", "vsraw", "vsefiraw"];

/// What a stemcell CID says about the stemcell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct StemcellKind {
    pub(super) family: Family,
    pub(super) efi: bool,
    /// Format of the stemcell volume (the backing format of every VM's overlay).
    pub(super) format: &'static str,
}

/// The suffix of a new stemcell CID.
pub(super) fn stemcell_tag(family: Family, efi: bool, format: &str) -> &'static str {
    match (family, efi, format) {
        (Family::OpenStack, _, "raw") => "osraw",
        (Family::OpenStack, _, _) => "os",
        (Family::Vsphere, false, "raw") => "vsraw",
        (Family::Vsphere, true, "raw") => "vsefiraw",
        (Family::Vsphere, false, _) => "vs",
        (Family::Vsphere, true, _) => "vsefi",
    }
}

pub(super) fn parse_stemcell_cid(cid: &str) -> Option<StemcellKind> {
    let rest = cid.strip_prefix("sc-")?;
    let (hex, tag) = rest.split_once('-')?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        return None;
    }
    match tag {
        "os" => Some(StemcellKind { family: Family::OpenStack, efi: false, format: "qcow2" }),
        "osraw" => Some(StemcellKind { family: Family::OpenStack, efi: false, format: "raw" }),
        "vs" => Some(StemcellKind { family: Family::Vsphere, efi: false, format: "qcow2" }),
        "vsefi" => Some(StemcellKind { family: Family::Vsphere, efi: true, format: "qcow2" }),
        "vsraw" => Some(StemcellKind { family: Family::Vsphere, efi: false, format: "raw" }),
        "vsefiraw" => Some(StemcellKind { family: Family::Vsphere, efi: true, format: "raw" }),
        _ => None,
    }
}

/// Hex digits of the disk and stemcell CIDs this driver makes (kept: the volumes of existing pools).
pub(super) const DISK_HEX: usize = 15;
pub(super) const STEMCELL_HEX: usize = 16;

/// The names of in-flight markers: VM, disk, stemcell (its id, before the family suffix is known) and
/// snapshot CIDs. The reaper takes no other name.
pub(super) const MARKER_SHAPES: crate::cpi::inflight::Shapes = &[
    (VmCid::PREFIX, VmCid::HEX_LEN),
    (DiskCid::PREFIX, DISK_HEX),
    (StemcellCid::PREFIX, STEMCELL_HEX),
    (SnapshotCid::PREFIX, SnapshotCid::HEX_LEN),
];

pub(super) use crate::cpi::driver::cid;

pub(super) fn family_name(f: Family) -> &'static str {
    match f {
        Family::OpenStack => "openstack",
        Family::Vsphere => "vsphere",
    }
}

/// The disk hint the stemcell's agent resolves for SCSI target `target`.
pub(super) fn hint_for(family: Family, target: u32) -> Value {
    match family {
        // scsi resolver: the target number on the root disk's controller
        Family::Vsphere => json!(target.to_string()),
        // virtio resolver: by-id (serial = CID) first, then this path
        Family::OpenStack => json!({ "path": format!("/dev/{}", domain::dev_name(target)) }),
    }
}

/// The serial of a VM's ephemeral disk (20 characters, like a disk CID): `eph-` and 16 hex digits of the VM's.
pub(super) fn ephemeral_serial(vm: &str) -> String {
    format!("eph-{}", vm.trim_start_matches("vm-").chars().take(16).collect::<String>())
}
