//! create_disk: a persistent disk on the datastore nearest its VM, with an in-flight marker until it exists.
use super::*;

impl Vsphere {
    pub(super) fn make_disk(
        &self,
        size_mib: u64,
        cloud_properties: &Map<String, Value>,
        vm: Option<&VmCid>,
    ) -> DriverResult<DiskCid> {
        let props: DiskProps = crate::driver::props::parse("disk cloud_properties", cloud_properties)?;
        let disk_type = props.r#type.unwrap_or_else(|| "thin".into());
        if !matches!(disk_type.as_str(), "thin" | "preallocated" | "eagerZeroedThick") {
            return Err(DriverError::invalid(
                "disk cloud_properties",
                format!("type must be thin, preallocated or eagerZeroedThick, got {disk_type:?}"),
            ));
        }
        let size_mib = disk_size("disk size", size_mib)?;
        let inv = self.open()?;
        let need = if disk_type == "thin" { 0 } else { size_mib << 20 };
        // near the VM when its datastore qualifies, else the one with the most free space
        let near = match vm {
            Some(vm) => self.find_vm(&inv, vm)?.map(|i| i.datastore),
            None => None,
        };
        let candidates = inv.datastores(&props.datastores)?;
        let ds = match candidates.iter().find(|(n, _, free)| Some(n) == near.as_ref() && *free >= need) {
            Some((n, _, _)) => n.clone(),
            None => inv.pick_datastore(&props.datastores, need)?.0,
        };
        let disk_cid = DiskCid::generate(HEX_LEN);
        let cid = disk_cid.to_string();
        let marker = self.begin(&inv, &cid)?;
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
        let req = CreateVirtualDisk {
            this: Self::vdm(&inv)?,
            name: format!("[{ds}] {}", self.disk_path(&cid)),
            datacenter: inv.dc()?,
            disk_type,
            capacity_kb: size_mib * 1024,
        };
        if let Err(e) = inv.s.run_task(&req, "create disk") {
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
}
