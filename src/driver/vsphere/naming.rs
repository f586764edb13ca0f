//! Names: VM and disk CIDs and the MACs VMs get.
use super::*;

pub(super) fn valid_id(cid: &str, prefix: &str) -> bool {
    cid.strip_prefix(prefix).is_some_and(|h| h.len() == 20 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// vSphere's range for manually assigned MACs: `00:50:56:00:00:00`–`00:50:56:3f:ff:ff`.
pub(super) fn vmware_mac() -> String {
    let m = random_mac([0x00, 0x50, 0x56]);
    let fourth = u8::from_str_radix(&m[9..11], 16).unwrap_or(0) & 0x3f;
    format!("{}{fourth:02x}{}", &m[..9], &m[11..])
}
