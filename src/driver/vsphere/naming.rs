//! Names: the VM, disk and stemcell CIDs of this driver (the shared scheme of [`crate::ids`], 20 hex digits).

/// Hex digits of every CID this driver makes (`vm-`, `disk-`, `sc-`).
pub(super) const HEX_LEN: usize = 20;

/// Whether `cid` is `<prefix><20 lowercase hex>`: anything else was not made by this CPI.
pub(super) fn valid_id(cid: &str, prefix: &str) -> bool {
    crate::ids::is_generated(cid, prefix, HEX_LEN)
}
