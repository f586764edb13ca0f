//! Names: stemcell, VM and disk CIDs and what they say, and the disk hints the agent resolves.
use super::*;

/// Suffixes of stemcell CIDs: family, firmware and volume format.
pub(super) const STEMCELL_TAGS: &[&str] = &["os", "osraw", "vs", "vsefi"];

/// What a stemcell CID says about the stemcell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct StemcellKind {
    pub(super) family: Family,
    pub(super) efi: bool,
    /// Format of the stemcell volume (the backing format of every VM's overlay).
    pub(super) format: &'static str,
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
        _ => None,
    }
}

pub(super) fn is_ours(cid: &str, prefix: &str, hex_len: usize) -> bool {
    cid.strip_prefix(prefix)
        .is_some_and(|h| h.len() == hex_len && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}
pub(super) fn valid_vm(cid: &VmCid) -> bool {
    is_ours(cid.as_str(), "vm-", 20)
}
pub(super) fn valid_disk(cid: &DiskCid) -> bool {
    is_ours(cid.as_str(), "disk-", 15)
}

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
