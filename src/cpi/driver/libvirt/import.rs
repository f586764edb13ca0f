//! create_stemcell: a stemcell image into a pool volume (qcow2, raw, or the disk of an OVF/OVA).
use super::*;
use crate::cpi::diskimage::vmdk::VmdkReader;
use crate::cpi::diskimage::Chunk;

impl Libvirt {
    pub(super) fn import_stemcell(&self, image: &Path) -> DriverResult<StemcellCid> {
        self.ensure_pool()?;
        // the family is known only after unpacking; the in-flight marker covers every suffix of this id
        let id = format!("{}{}", StemcellCid::PREFIX, random_hex(STEMCELL_HEX));
        let marker = self.begin(&id)?;
        let work = marker
            .work_dir()
            .context(|| format!("cannot create a work directory in {}", self.cfg.state_dir.display()))?;
        // the disk comes straight out of the archive, inspected first (`with_disk`), into a new volume over the
        // libvirt connection: a qcow2 as it is, a raw image sparse, a VMDK read here into its virtual disk and
        // sent sparse (data and holes) into a raw volume. No file is written on this machine (but a
        // monolithicSparse VMDK whose grains are out of order, spooled unnamed in the work directory).
        let mut settled = true;
        let result = stemcell::with_disk(image, work, |disk| -> DriverResult<StemcellCid> {
            let outcome = crate::cpi::driver::undo::create(format!("create_stemcell {id}"), |undo| {
                let (cid, format) = self.store_disk(disk, &id, work, undo)?;
                self.refresh_pool()?;
                let (_, probed) = self.vol_info(&cid)?.ok_or_else(|| LibvirtError::Vanished { volume: cid.clone() })?;
                if probed != format {
                    return Err(LibvirtError::ProbedFormat { volume: cid.clone(), probed, expected: format }.into());
                }
                StemcellCid::new(cid).map_err(DriverError::other)
            });
            settled = outcome.settled;
            outcome.result
        });
        // a failed import that removed what it made (or made nothing: a refused disk, which never reaches the
        // closure) leaves no marker and no scratch; one that could not is reaped by a later create
        let cid = result.as_ref().map(|c| c.to_string()).unwrap_or_default();
        crate::cpi::driver::undo::Outcome { result, settled }.settle(marker, &cid)
    }

    /// The inspected disk into a new volume `ID-TAG` (recorded in `undo`); returns its name and format.
    fn store_disk<'a>(
        &'a self,
        disk: stemcell::Disk<'_>,
        id: &str,
        work: &Path,
        undo: &mut Undo<'a>,
    ) -> DriverResult<(String, &'static str)> {
        let format = match disk.format {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw | DiskFormat::Vmdk => "raw",
        };
        let cid = format!("{id}-{}", stemcell_tag(disk.family, disk.efi, format));
        self.undo_volume(undo, &cid);
        match disk.format {
            DiskFormat::Vmdk => {
                let mut vmdk = VmdkReader::open(&mut *disk.reader, disk.len, work)?;
                let size = vmdk.virtual_size();
                info!(
                    "reading the {} VMDK ({} MiB virtual) into raw volume {cid}, sparse",
                    vmdk.kind().as_str(),
                    size >> 20
                );
                let vol = self.vol_create_sparse(&cid, size.max(1))?;
                let data = self.upload_chunks(&vol, &mut vmdk)?;
                info!("{} MiB of data uploaded into {cid}", data >> 20);
            }
            // a qcow2 image goes in as it is (libvirt then probes its format), a raw one with its zeros as holes
            _ => {
                let len = disk.len;
                let vol = self.vol_create_sparse(&cid, len.max(1))?;
                info!("uploading {} MiB into volume {cid} (streamed from the image)", len >> 20);
                self.vol_upload(&vol, disk.reader, true)?;
            }
        }
        Ok((cid, format))
    }

    /// Sends a VMDK's virtual disk into the new volume `vol`: runs of data as data, runs of zeros as holes,
    /// in order up to the virtual size (the volume's end). Returns the bytes of data sent.
    fn upload_chunks<R: std::io::Read>(
        &self,
        vol: &crate::cpi::libvirt_rpc::StorageVol,
        vmdk: &mut VmdkReader<R>,
    ) -> DriverResult<u64> {
        const BATCH: usize = 1 << 20;
        let what = || format!("cannot upload into volume {}", vol.name);
        let mut up = self.client()?.vol_upload(vol, 0, 0, true).map_err(|e| error::rpc(what(), e))?;
        let (mut buf, mut hole, mut at, mut data) = (Vec::with_capacity(BATCH), 0u64, 0u64, 0u64);
        while let Some(chunk) = vmdk.next_chunk()? {
            let (offset, len) = match chunk {
                Chunk::Data { offset, bytes } => {
                    if hole > 0 {
                        up.hole(hole).map_err(|e| error::rpc(what(), e))?;
                        hole = 0;
                    }
                    buf.extend_from_slice(bytes);
                    if buf.len() >= BATCH {
                        up.data(&buf).map_err(|e| error::rpc(what(), e))?;
                        buf.clear();
                    }
                    data += bytes.len() as u64;
                    (offset, bytes.len() as u64)
                }
                Chunk::Hole { offset, len } => {
                    if !buf.is_empty() {
                        up.data(&buf).map_err(|e| error::rpc(what(), e))?;
                        buf.clear();
                    }
                    hole += len;
                    (offset, len)
                }
            };
            if offset != at {
                return Err(DriverError::other(format!(
                    "the VMDK reader skipped from {at} to {offset}: refusing to upload a disk out of order"
                )));
            }
            at += len;
        }
        if !buf.is_empty() {
            up.data(&buf).map_err(|e| error::rpc(what(), e))?;
        }
        if hole > 0 {
            up.hole(hole).map_err(|e| error::rpc(what(), e))?;
        }
        up.finish().map_err(|e| error::rpc(what(), e))?;
        Ok(data)
    }
}
