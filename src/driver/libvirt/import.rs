//! create_stemcell: a stemcell image into a pool volume (qcow2, raw, or the disk of an OVF/OVA).
use super::*;
use crate::diskimage::vmdk::VmdkReader;

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
        // the disk comes straight out of the archive, inspected first (`with_disk`): a qcow2 streams into its
        // volume through virsh's stdin; a VMDK is read here into a sparse raw file (qemu-img never parses a
        // VMDK: it only turns our raw file into qcow2); a raw image (mostly zeros) is spooled for a sparse upload
        let mut settled = true;
        let result = stemcell::with_disk(image, work, |disk| -> DriverResult<String> {
            let tag = match (disk.family, disk.efi, disk.format) {
                (Family::OpenStack, _, DiskFormat::Raw) => "osraw",
                (Family::OpenStack, _, _) => "os",
                (Family::Vsphere, false, _) => "vs",
                (Family::Vsphere, true, _) => "vsefi",
            };
            let cid = format!("{id}-{tag}");
            let mut undo = Undo::new(format!("create_stemcell {cid}"));
            let stored = self.store_disk(disk, &cid, work, &mut undo).and_then(|format| {
                self.refresh_pool()?;
                let (_, probed) = self.vol_info(&cid)?.ok_or_else(|| LibvirtError::Vanished { volume: cid.clone() })?;
                if probed != format {
                    return Err(LibvirtError::ProbedFormat { volume: cid.clone(), probed, expected: format }.into());
                }
                Ok(())
            });
            match stored {
                Ok(()) => {
                    undo.disarm();
                    Ok(cid)
                }
                Err(e) => {
                    settled = undo.run();
                    Err(e)
                }
            }
        });
        // a failed import that removed what it made (or made nothing: a refused disk) leaves no marker and no
        // scratch; one that could not is reaped by a later create
        let cid = match result {
            Ok(cid) => cid,
            Err(e) => {
                if settled {
                    marker.commit();
                }
                return Err(e);
            }
        };
        let cid = StemcellCid::new(cid).map_err(DriverError::other)?;
        marker.created(cid.as_str());
        Ok(cid)
    }

    /// The inspected disk into volume `cid` (recorded in `undo`); returns the volume's format.
    fn store_disk<'a>(
        &'a self,
        disk: stemcell::Disk<'_>,
        cid: &str,
        work: &Path,
        undo: &mut Undo<'a>,
    ) -> DriverResult<&'static str> {
        match disk.format {
            DiskFormat::Qcow2 if disk.path.is_none() => {
                let len = disk.len;
                // a raw volume of the file's size receives the bytes; libvirt then probes the real format
                self.undo_volume(undo, cid);
                self.vol_create(cid, len.max(1), "raw", None)?;
                info!("uploading {} MiB into volume {cid} (streamed from the image)", len >> 20);
                self.vol_upload_stream(cid, len, disk.reader)?;
                Ok("qcow2")
            }
            DiskFormat::Vmdk => {
                let mut vmdk = VmdkReader::open(&mut *disk.reader, disk.len, work)?;
                let raw = work.join("root.raw");
                let out = work.join("root.qcow2");
                let file = std::fs::File::create(&raw).context(|| format!("cannot create {}", raw.display()))?;
                info!(
                    "reading the {} VMDK ({} MiB virtual) into a sparse raw file",
                    vmdk.kind().as_str(),
                    vmdk.virtual_size() >> 20
                );
                let data = vmdk.write_sparse_raw(&file)?;
                drop(file);
                info!("{} MiB of data; converting the raw file to qcow2", data >> 20);
                Cmd::new(&self.cfg.qemu_img)
                    .args(["convert", "-f", "raw", "-O", "qcow2"])
                    .arg(&raw)
                    .arg(&out)
                    .run()
                    .context(|| "cannot convert the stemcell's disk to qcow2".into())?;
                let _ = std::fs::remove_file(&raw);
                self.upload_file(cid, &out, undo)?;
                Ok("qcow2")
            }
            format => {
                let file = disk.into_file(work)?;
                self.upload_file(cid, &file, undo)?;
                Ok(if format == DiskFormat::Qcow2 { "qcow2" } else { "raw" })
            }
        }
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
