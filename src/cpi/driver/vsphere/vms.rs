//! Finding VMs, disks and files in the inventory, and powering off and destroying VMs.
use super::*;

impl Vsphere {
    pub(super) fn open(&self) -> DriverResult<Inv<'_>> {
        Inv::open(&self.cfg)
    }

    pub(super) fn disk_path(&self, cid: &str) -> String {
        format!("{}/{cid}.vmdk", self.cfg.disk_folder)
    }

    /// The datastore holding a persistent disk, by looking for its file on each candidate datastore.
    pub(super) fn locate_disk(&self, inv: &Inv, cid: &DiskCid) -> DriverResult<Option<String>> {
        self.locate_disk_except(inv, cid, None)
    }

    fn locate_disk_except(&self, inv: &Inv, cid: &DiskCid, tried: Option<&str>) -> DriverResult<Option<String>> {
        if !valid_id(cid.as_str(), DiskCid::PREFIX) {
            return Ok(None);
        }
        let path = self.disk_path(cid.as_str());
        // every datastore, not only the configured ones: the config may have changed since the disk was made
        for (ds, _, _) in inv.datastores(&["*".to_string()])? {
            if Some(ds.as_str()) == tried {
                continue;
            }
            if inv
                .s
                .file_exists(&self.cfg.datacenter, &ds, &path)
                .map_err(ctx_err(format!("cannot look for disk {cid}")))?
            {
                return Ok(Some(ds));
            }
        }
        Ok(None)
    }

    pub(super) fn find_vm(&self, inv: &Inv, cid: &VmCid) -> DriverResult<Option<VmInfo>> {
        self.find_vm_with(inv, cid, VM_PROPS)
    }

    /// The VM with `paths` read ([`VM_PROPS`] or [`VM_SETTINGS_PROPS`]).
    pub(super) fn find_vm_with(&self, inv: &Inv, cid: &VmCid, paths: &[&str]) -> DriverResult<Option<VmInfo>> {
        if !valid_id(cid.as_str(), VmCid::PREFIX) {
            return Ok(None);
        }
        match inv.find_vm(&self.cfg.vm_folder, cid.as_str())? {
            Some(vm) => inv.vm_info_with(&vm, paths),
            None => {
                // not there: make sure it is not the datacenter that is wrong
                inv.dc()?;
                Ok(None)
            }
        }
    }

    pub(super) fn require_vm(&self, inv: &Inv, cid: &VmCid) -> DriverResult<VmInfo> {
        self.find_vm(inv, cid)?.ok_or_else(|| DriverError::vm_not_found(cid.to_string()))
    }

    /// The datastore holding a persistent disk, trying `near` (the datastore of the VM it goes to)
    /// first: one HEAD when the disk is beside its VM, as create_disk puts it.
    pub(super) fn locate_disk_near(&self, inv: &Inv, cid: &DiskCid, near: &str) -> DriverResult<Option<String>> {
        let path = self.disk_path(cid.as_str());
        if inv
            .s
            .file_exists(&self.cfg.datacenter, near, &path)
            .map_err(ctx_err(format!("cannot look for disk {cid}")))?
        {
            return Ok(Some(near.to_string()));
        }
        self.locate_disk_except(inv, cid, Some(near))
    }

    pub(super) fn file_manager(inv: &Inv) -> DriverResult<MoRef> {
        inv.s.sc.file_manager.clone().ok_or_else(|| DriverError::not_supported("this server has no FileManager"))
    }

    pub(super) fn vdm(inv: &Inv) -> DriverResult<MoRef> {
        inv.s
            .sc
            .virtual_disk_manager
            .clone()
            .ok_or_else(|| DriverError::not_supported("this server has no VirtualDiskManager"))
    }

    /// Deletes a datastore file or folder; a missing one is fine.
    pub(super) fn delete_file(&self, inv: &Inv, ds: &str, path: &str) -> DriverResult<()> {
        let req = DeleteDatastoreFile {
            this: Self::file_manager(inv)?,
            name: format!("[{ds}] {path}"),
            datacenter: inv.dc()?,
        };
        match inv.s.run_task(&req, "delete datastore file") {
            Ok(_) => Ok(()),
            Err(e) if e.is_fault(&FaultKind::FileNotFound) => Ok(()),
            Err(e) => Err(DriverError::failed(format!("cannot delete [{ds}] {path}"), e)),
        }
    }
}

impl Vsphere {
    pub(super) fn power_off(&self, inv: &Inv, vm: &MoRef) -> DriverResult<()> {
        match inv.s.run_task(&PowerOffVm { this: vm.clone() }, "power off") {
            Ok(_) => Ok(()),
            Err(e) if e.is_fault(&FaultKind::InvalidPowerState) || e.is_fault(&FaultKind::InvalidState) => Ok(()),
            Err(e) => Err(DriverError::failed(format!("cannot power off {}", vm.value), e)),
        }
    }

    /// Powers off, detaches persistent disks, destroys, removes the VM's folder. For cleanup and delete_vm.
    pub(super) fn destroy_vm(&self, inv: &Inv, vm: &VmInfo) -> DriverResult<()> {
        if vm.power_state != "poweredOff" {
            self.power_off(inv, &vm.vm)?;
        }
        let persistent: Vec<DeviceChange> = vm
            .devices
            .iter()
            .filter(|d| d.is_disk() && self.persistent_cid(d).is_some())
            .map(|d| DeviceChange {
                operation: Operation::Remove,
                create_file: false,
                device: Device::Existing(d.node.clone()),
            })
            .collect();
        if !persistent.is_empty() {
            let spec = VmConfigSpec { device_change: persistent, ..Default::default() };
            inv.s
                .run_task(&ReconfigVm { this: vm.vm.clone(), spec }, "detach persistent disks")
                .map_err(ctx_err("cannot detach persistent disks"))?;
        }
        match inv.s.run_task(&Destroy { this: vm.vm.clone() }, "destroy VM") {
            Ok(_) => {}
            Err(e) if e.is_fault(&FaultKind::ManagedObjectNotFound) => {}
            Err(e) => return Err(DriverError::failed(format!("cannot destroy {}", vm.vm.value), e)),
        }
        crate::cpi::killpoint::kill_point("vsphere.destroy_vm.destroyed");
        if !vm.dir.is_empty() {
            self.delete_file(inv, &vm.datastore, &vm.dir)?;
        }
        Ok(())
    }

    /// The CID of a persistent disk device (its file is `<disk_folder>/disk-….vmdk`).
    pub(super) fn persistent_cid(&self, d: &Dev) -> Option<String> {
        let f = d.file.as_deref()?;
        let path = f.split_once("] ").map(|(_, p)| p).unwrap_or(f);
        let (dir, file) = path.rsplit_once('/')?;
        let cid = file.strip_suffix(".vmdk")?;
        (dir == self.cfg.disk_folder && valid_id(cid, DiskCid::PREFIX)).then(|| cid.to_string())
    }
}
