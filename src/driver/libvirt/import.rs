//! create_stemcell: a stemcell image into a pool volume (qcow2, raw, or the disk of an OVF/OVA).
use super::*;

impl Libvirt {
    pub(super) fn import_stemcell(
        &self,
        image: &Path,
        cloud_properties: &Map<String, Value>,
    ) -> DriverResult<StemcellCid> {
        if let Some(name) = cloud_properties.get("name").and_then(Value::as_str) {
            info!(
                "importing stemcell {name} {}",
                cloud_properties.get("version").and_then(Value::as_str).unwrap_or("")
            );
        }
        self.ensure_pool()?;
        // the family is known only after unpacking; the in-flight marker covers every suffix of this id
        let id = format!("{}{}", StemcellCid::PREFIX, random_hex(STEMCELL_HEX));
        let marker = self.begin(&id)?;
        let work = marker
            .work_dir()
            .context(|| format!("cannot create a work directory in {}", self.cfg.state_dir.display()))?;
        let unpacked = stemcell::unpack(image, Some(work)).context(|| "cannot read the stemcell image".into())?;
        let tag = match (unpacked.family, unpacked.efi, unpacked.format) {
            (Family::OpenStack, _, DiskFormat::Raw) => "osraw",
            (Family::OpenStack, _, _) => "os",
            (Family::Vsphere, false, _) => "vs",
            (Family::Vsphere, true, _) => "vsefi",
        };
        let cid = format!("{id}-{tag}");
        // VMDKs (stream-optimised) are converted to qcow2 locally, as a stream, before upload
        let converted;
        let (file, format) = match unpacked.format {
            DiskFormat::Vmdk => {
                let dir = unpacked.disk.parent().map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir);
                let tmp = tempfile::Builder::new()
                    .prefix("vmcpi-convert-")
                    .tempdir_in(&dir)
                    .context(|| "cannot create a temporary directory".into())?;
                let out = tmp.path().join("root.qcow2");
                info!("converting the VMDK to qcow2");
                Cmd::new(&self.cfg.qemu_img)
                    .args(["convert", "-f", "vmdk", "-O", "qcow2"])
                    .arg(&unpacked.disk)
                    .arg(&out)
                    .run()
                    .context(|| "cannot convert the stemcell's VMDK".into())?;
                converted = tmp;
                (converted.path().join("root.qcow2"), "qcow2")
            }
            DiskFormat::Qcow2 => (unpacked.disk.clone(), "qcow2"),
            DiskFormat::Raw => (unpacked.disk.clone(), "raw"),
        };
        let size = std::fs::metadata(&file).context(|| format!("cannot stat {}", file.display()))?.len();
        let mut undo = Undo::new(format!("create_stemcell {cid}"));
        // a raw volume of the file's size receives the bytes; libvirt then probes the real format
        self.undo_volume(&mut undo, &cid);
        self.vol_create(&cid, size.max(1), "raw", None)?;
        info!("uploading {} MiB into volume {cid}", size >> 20);
        self.vol_upload(&cid, &file)?;
        self.refresh_pool()?;
        let (_, probed) = self.vol_info(&cid)?.ok_or_else(|| LibvirtError::Vanished { volume: cid.clone() })?;
        if probed != format {
            return Err(LibvirtError::ProbedFormat { volume: cid, probed, expected: format }.into());
        }
        undo.disarm();
        drop(unpacked);
        let cid = StemcellCid::new(cid).map_err(DriverError::other)?;
        marker.created(cid.as_str());
        Ok(cid)
    }
}
