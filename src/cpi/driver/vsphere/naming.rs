//! Names: the VM, disk and stemcell CIDs of this driver (the shared scheme of [`crate::common::ids`], 20 hex digits).
use super::*;

/// Hex digits of every CID this driver makes (`vm-`, `disk-`, `sc-`).
pub(super) const HEX_LEN: usize = 20;

/// The names of in-flight markers: VM, stemcell and disk CIDs. The reaper takes no other name.
pub(super) const MARKER_SHAPES: crate::cpi::inflight::Shapes =
    &[("vm-", HEX_LEN), ("sc-", HEX_LEN), ("disk-", HEX_LEN)];

/// Whether `cid` is `<prefix><20 lowercase hex>`: anything else was not made by this CPI.
pub(super) fn valid_id(cid: &str, prefix: &str) -> bool {
    crate::cpi::driver::cid::ours(cid, prefix, HEX_LEN)
}

/// Refuses a VM CID this driver cannot have made, before anything is contacted.
pub(super) fn check_vm(cid: &VmCid) -> DriverResult<()> {
    crate::cpi::driver::cid::vm(cid)
}

/// Refuses a disk CID this driver cannot have made, before anything is contacted.
pub(super) fn check_disk(cid: &DiskCid) -> DriverResult<()> {
    crate::cpi::driver::cid::disk(cid, HEX_LEN)
}
