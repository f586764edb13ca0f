//! create_disk: a persistent disk on the datastore nearest its VM, with an in-flight marker until it exists.
use super::*;

impl Vsphere {
    pub(super) fn make_disk(
        &self,
        size_mib: u64,
        cloud_properties: &Map<String, Value>,
        vm: Option<&VmCid>,
    ) -> DriverResult<DiskCid> {
        let props: DiskProps = crate::cpi::driver::props::parse("disk cloud_properties", cloud_properties)?;
        let disk_type = props.r#type;
        let size_mib = disk_size("disk size", size_mib)?;
        let inv = self.open()?;
        let disk_cid = DiskCid::generate(HEX_LEN);
        let cid = disk_cid.to_string();
        // the marker reaches the disk while the datastore is chosen
        let marker = self.begin(&inv, &cid)?;
        let ds = match self.disk_datastore(&inv, &props.datastores, disk_type == DiskType::Thin, size_mib, vm) {
            Ok(ds) => ds,
            Err(e) => {
                drop(inv);
                marker.commit();
                return Err(e);
            }
        };
        self.durable(&marker)?;
        let req = CreateVirtualDisk {
            this: Self::vdm(&inv)?,
            name: format!("[{ds}] {}", self.disk_path(&cid)),
            datacenter: inv.dc()?,
            disk_type: disk_type.as_str().to_string(),
            capacity_kb: size_mib * 1024,
        };
        // the disk folder is there but for the first disk on a datastore: made only when the create says so
        let mut created = inv.s.run_task(&req, "create disk");
        if created.as_ref().is_err_and(|e| {
            e.is_fault(&FaultKind::FileNotFound) || e.is_fault(&FaultKind::Other("CannotCreateFile".into()))
        }) {
            let fm = Self::file_manager(&inv)?;
            match inv.s.call(&MakeDirectory {
                this: fm,
                name: format!("[{ds}] {}", self.cfg.disk_folder),
                datacenter: inv.dc()?,
            }) {
                Ok(_) => {}
                Err(e) if e.is_fault(&FaultKind::FileAlreadyExists) => {}
                Err(e) => return Err(DriverError::failed(format!("cannot create [{ds}] {}", self.cfg.disk_folder), e)),
            }
            created = inv.s.run_task(&req, "create disk");
        }
        if let Err(e) = created {
            let cleaned = self.remove_leftovers(&inv, &cid).is_ok();
            drop(inv);
            if cleaned {
                marker.commit();
            }
            return Err(DriverError::failed(format!("cannot create disk {cid} on {ds}"), e));
        }
        drop(inv);
        info!("created disk {cid} ({size_mib} MiB) on {ds}");
        marker.created(&cid);
        Ok(disk_cid)
    }

    /// The datastore for a new disk: the VM's when it matches `patterns` and has room, else the one with the
    /// most free space. The VM's path is read with the datastores, in one request.
    fn disk_datastore(
        &self,
        inv: &Inv,
        patterns: &[String],
        thin: bool,
        size_mib: u64,
        vm: Option<&VmCid>,
    ) -> DriverResult<String> {
        let need = if thin { 0 } else { size_mib << 20 };
        let vm = match vm.filter(|v| valid_id(v.as_str(), VmCid::PREFIX)) {
            Some(vm) => inv.find_vm(&self.cfg.vm_folder, vm.as_str())?,
            None => None,
        };
        let near = match vm {
            Some(vm) => inv
                .prefetch(&[(vm, &["config.files.vmPathName"])], false)?
                .first()
                .and_then(|o| o.str("config.files.vmPathName"))
                .and_then(inventory::split_ds_path)
                .map(|(ds, _)| ds),
            None => None,
        };
        let candidates = inv.datastores(patterns)?;
        Ok(match candidates.iter().find(|(n, _, free)| Some(n) == near.as_ref() && *free >= need) {
            Some((n, _, _)) => n.clone(),
            None => inv.pick_datastore(patterns, need)?.0,
        })
    }
}
