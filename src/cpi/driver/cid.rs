//! The one check of the CIDs a driver is given. Every driver names what it creates with the shared scheme
//! of [`crate::common::ids`] (a prefix and lowercase hex digits from the kernel's random source); a CID of another
//! shape was not made by this CPI, names nothing on the hypervisor and may be hostile (paths, shell
//! syntax), so it is refused here, before anything is contacted, with the error the director expects for
//! a missing thing. Names read back from the hypervisor (a pool's volumes, a folder's VMs) are filtered
//! with [`ours`].
use crate::common::ids::{DiskCid, SnapshotCid, StemcellCid, VmCid};
use crate::cpi::error::{DriverError, DriverResult};

/// Whether `name` is `<prefix><hex_len lowercase hex digits>`.
pub use crate::common::ids::is_generated as ours;

/// A VM CID this CPI can have made (`vm-<20 hex>`), else VMNotFound.
pub fn vm(cid: &VmCid) -> DriverResult<()> {
    refuse(cid.is_generated(), || DriverError::vm_not_found(format!("{cid} (not a VM CID of this CPI)")))
}

/// A disk CID this CPI can have made (`disk-<hex_len hex>`: 15 in libvirt and vmrun, 20 in vSphere), else
/// DiskNotFound.
pub fn disk(cid: &DiskCid, hex_len: usize) -> DriverResult<()> {
    refuse(cid.is_generated(hex_len), || DriverError::disk_not_found(format!("{cid} (not a disk CID of this CPI)")))
}

/// A stemcell CID this CPI can have made (`sc-<hex_len hex>`, without a suffix), else StemcellNotFound.
pub fn stemcell(cid: &StemcellCid, hex_len: usize) -> DriverResult<()> {
    refuse(ours(cid.as_str(), StemcellCid::PREFIX, hex_len), || {
        DriverError::stemcell_not_found(format!("{cid} (not a stemcell CID of this CPI)"))
    })
}

/// A snapshot CID this CPI can have made (`snap-<15 hex>`), else SnapshotNotFound.
pub fn snapshot(cid: &SnapshotCid) -> DriverResult<()> {
    refuse(cid.is_generated(), || DriverError::snapshot_not_found(format!("{cid} (not a snapshot CID of this CPI)")))
}

fn refuse(ok: bool, err: impl FnOnce() -> DriverError) -> DriverResult<()> {
    if ok {
        Ok(())
    } else {
        Err(err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpi::error::ErrorKind;

    #[test]
    fn only_the_shapes_this_cpi_makes_pass() {
        assert!(vm(&VmCid::generate()).is_ok());
        assert!(disk(&DiskCid::generate(15), 15).is_ok());
        assert!(stemcell(&StemcellCid::generate(16, ""), 16).is_ok());
        assert!(snapshot(&SnapshotCid::generate()).is_ok());
        for bad in ["vm-../../etc/passwd", "vm-0123456789abcdef012", "vm-0123456789ABCDEF0123", "vm-$(reboot)", ""] {
            let e = vm(&VmCid::new(bad).unwrap_or_else(|_| VmCid::new("x").unwrap())).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::VmNotFound, "{bad}");
            assert!(!e.retryable());
        }
        assert_eq!(disk(&DiskCid::generate(15), 20).unwrap_err().kind(), ErrorKind::DiskNotFound);
        assert_eq!(stemcell(&StemcellCid::generate(16, "-vs"), 16).unwrap_err().kind(), ErrorKind::StemcellNotFound);
        assert_eq!(snapshot(&SnapshotCid::new("snap-1").unwrap()).unwrap_err().kind(), ErrorKind::SnapshotNotFound);
    }
}
