//! create_stemcell: the OVF import into the template folder, and its snapshot.
use super::*;

impl Vsphere {
    pub(super) fn import_stemcell(&self, inv: &Inv, image: &Path, name: &str, marker: &Marker) -> DriverResult<()> {
        let work = marker.work_dir().map_err(|e| {
            DriverError::failed(format!("cannot create a work directory in {}", self.cfg.state_dir.display()), e)
        })?;
        // the VMDK streams from the archive into the NFC lease; `work` holds only a VMDK that comes before
        // its OVF in the archive
        let vm = crate::cpi::stemcell::with_disk(image, work, |disk| -> DriverResult<MoRef> {
            if disk.family != crate::cpi::stemcell::Family::Vsphere {
                return Err(DriverError::invalid(
                    "stemcell",
                    "this driver imports vSphere stemcells (vsphere-ovf); the image holds an OpenStack root.img",
                ));
            }
            import::check_streamable(&disk)?;
            let descriptor = import::descriptor_for(&disk);
            // the placement read also checks the template folder the session file remembers
            inv.expect([inv.folder_path_of(&self.cfg.template_folder)]);
            let pool = inv.resource_pool()?;
            let (ds_name, ds) = inv.pick_datastore(&[], disk.len)?;
            let folder = inv.template_folder()?;
            info!("importing stemcell as {name} on datastore {ds_name}");
            self.durable(marker)?;
            let upload = import::Upload { name: &disk.name, len: disk.len, reader: disk.reader };
            import::import(&inv.s, &descriptor, upload, name, &pool, &ds, &folder)
        })?;
        if inv.vcenter() {
            // linked clones grow child disks on this snapshot; a standalone host uses the disk directly
            inv.s
                .run_task(&CreateSnapshot { this: vm, name: "initial".into() }, "snapshot stemcell")
                .map_err(ctx_err("cannot snapshot the stemcell"))?;
        }
        Ok(())
    }
}

/// Peak resident memory of this process (`VmHWM`), for the import log line.
pub(super) fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

impl Vsphere {
    pub(super) fn upload_stemcell(
        &self,
        image: &Path,
        _cloud_properties: &Map<String, Value>,
    ) -> DriverResult<StemcellCid> {
        let inv = self.open()?;
        let cid = StemcellCid::generate(HEX_LEN, "");
        let name = cid.to_string();
        let marker = self.begin(&inv, &name)?;
        let outcome = crate::cpi::driver::undo::create(format!("create_stemcell {name}"), |undo| {
            self.undo_leftovers(&inv, undo, &name);
            self.import_stemcell(&inv, image, &name, &marker)
        });
        // log out first: the marker goes only when nothing but writing the response is left to do
        drop(inv);
        if outcome.result.is_ok() {
            let rss = peak_rss_kib().map(|k| format!("{} MiB", k / 1024)).unwrap_or_else(|| "unknown".into());
            info!("stemcell import done, peak RSS {rss}");
        }
        outcome.settle(marker, &name)?;
        Ok(cid)
    }
}
