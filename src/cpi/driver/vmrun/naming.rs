//! Names in the store: CIDs, the paths they live at, and the MACs VMs get.
use super::*;

/// Hex digits of the CIDs this driver makes (kept: the disks and stemcells of existing stores).
pub(super) const DISK_HEX: usize = 15;
pub(super) const STEMCELL_HEX: usize = 16;

pub(super) use crate::cpi::agent_settings::vmware_mac;
/// The shared CID scheme ([`crate::common::ids::is_generated`]).
pub(super) use crate::cpi::driver::cid;

impl Vmrun {
    pub(super) fn store(&self, rest: &str) -> String {
        join(&self.cfg.vm_store_path, rest)
    }
    pub(super) fn stemcell_vmx(&self, sc: &str) -> String {
        self.store(&format!("stemcells/{sc}/{sc}.vmx"))
    }
    pub(super) fn vm_dir(&self, vm: &str) -> String {
        self.store(&format!("vms/{vm}"))
    }
    pub(super) fn vm_vmx(&self, vm: &str) -> String {
        self.store(&format!("vms/{vm}/{vm}.vmx"))
    }
    pub(super) fn disk_path(&self, disk: &str) -> String {
        self.store(&format!("disks/{disk}.vmdk"))
    }
    pub(super) fn disk_record(&self, disk: &str) -> String {
        self.store(&format!("disks/{disk}.json"))
    }
}

impl Vmrun {
    pub(super) fn check_vm(&self, cid: &VmCid) -> DriverResult<String> {
        cid::vm(cid)?;
        let vmx = self.vm_vmx(cid.as_str());
        if !self.tr(|| format!("cannot look for {vmx}"), self.t.exists(&vmx))? {
            return Err(DriverError::vm_not_found(cid.to_string()));
        }
        Ok(vmx)
    }

    pub(super) fn check_disk(&self, cid: &DiskCid) -> DriverResult<String> {
        cid::disk(cid, DISK_HEX)?;
        let p = self.disk_path(cid.as_str());
        if !self.tr(|| format!("cannot look for {p}"), self.t.exists(&p))? {
            return Err(DriverError::disk_not_found(cid.to_string()));
        }
        Ok(p)
    }
}
