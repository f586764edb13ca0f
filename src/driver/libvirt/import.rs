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
        // the disk comes straight out of the archive: a qcow2 streams into its volume through virsh's stdin;
        // a raw image (mostly zeros) and a VMDK (qemu-img needs to seek in it) are spooled into `work` first
        let cid = stemcell::with_disk(image, work, |disk| -> DriverResult<String> {
            let tag = match (disk.family, disk.efi, disk.format) {
                (Family::OpenStack, _, DiskFormat::Raw) => "osraw",
                (Family::OpenStack, _, _) => "os",
                (Family::Vsphere, false, _) => "vs",
                (Family::Vsphere, true, _) => "vsefi",
            };
            let cid = format!("{id}-{tag}");
            let mut undo = Undo::new(format!("create_stemcell {cid}"));
            let format = match disk.format {
                DiskFormat::Qcow2 if disk.path.is_none() => {
                    let len = disk.len;
                    // a raw volume of the file's size receives the bytes; libvirt then probes the real format
                    self.undo_volume(&mut undo, &cid);
                    self.vol_create(&cid, len.max(1), "raw", None)?;
                    info!("uploading {} MiB into volume {cid} (streamed from the image)", len >> 20);
                    self.vol_upload_stream(&cid, len, disk.reader)?;
                    "qcow2"
                }
                DiskFormat::Vmdk => {
                    let vmdk = disk.into_file(work)?;
                    let out = work.join("root.qcow2");
                    info!("converting the VMDK to qcow2");
                    Cmd::new(&self.cfg.qemu_img)
                        .args(["convert", "-f", "vmdk", "-O", "qcow2"])
                        .arg(&vmdk)
                        .arg(&out)
                        .run()
                        .context(|| "cannot convert the stemcell's VMDK".into())?;
                    self.upload_file(&cid, &out, &mut undo)?;
                    "qcow2"
                }
                format => {
                    let file = disk.into_file(work)?;
                    self.upload_file(&cid, &file, &mut undo)?;
                    if format == DiskFormat::Qcow2 {
                        "qcow2"
                    } else {
                        "raw"
                    }
                }
            };
            self.refresh_pool()?;
            let (_, probed) = self.vol_info(&cid)?.ok_or_else(|| LibvirtError::Vanished { volume: cid.clone() })?;
            if probed != format {
                return Err(LibvirtError::ProbedFormat { volume: cid, probed, expected: format }.into());
            }
            undo.disarm();
            Ok(cid)
        })?;
        let cid = StemcellCid::new(cid).map_err(DriverError::other)?;
        marker.created(cid.as_str());
        Ok(cid)
    }

    /// A raw volume of the file's size, and the file uploaded into it (sparse).
    fn upload_file<'a>(&'a self, cid: &str, file: &Path, undo: &mut Undo<'a>) -> DriverResult<()> {
        let size = std::fs::metadata(file).context(|| format!("cannot stat {}", file.display()))?.len();
        // a raw volume of the file's size receives the bytes; libvirt then probes the real format
        self.undo_volume(undo, cid);
        self.vol_create(cid, size.max(1), "raw", None)?;
        info!("uploading {} MiB into volume {cid}", size >> 20);
        self.vol_upload(cid, file)
    }
}
