//! create_stemcell: an OVF/OVA stemcell into `stemcells/sc-…/`, with ovftool or with qemu-img.
use super::*;
use crate::cpi::diskimage::vmdk::VmdkReader;

impl Vmrun {
    pub(super) fn import_stemcell(&self, image: &Path) -> DriverResult<StemcellCid> {
        // the unpacked image lives in an in-flight work directory: a killed import's scratch is reaped later
        let mut scratch = Scratch(Some(
            self.scratch()
                .begin(&format!("import-{}", random_hex(8)))
                .context(|| "cannot write the scratch marker".into())?,
        ));
        let work = scratch
            .0
            .as_ref()
            .map(|m| m.work_dir().map(Path::to_path_buf))
            .transpose()
            .context(|| "cannot create a scratch directory".into())?
            .ok_or_else(|| DriverError::other("no scratch directory"))?;
        // the disk comes straight out of the archive, inspected first (`with_disk`): to the hypervisor host for
        // ovftool (checked as it passes), or read here into a sparse raw file that qemu-img turns into a
        // monolithic sparse VMDK (qemu-img never parses the stemcell's VMDK)
        stemcell::with_disk(image, &work, |disk| -> DriverResult<StemcellCid> {
            if disk.family != Family::Vsphere {
                return Err(DriverError::invalid(
                    "stemcell",
                    "the vmrun driver imports vSphere stemcells (an OVF with a VMDK); this is an OpenStack image",
                ));
            }
            self.import_disk(disk, &work, &mut scratch)
        })
    }

    fn import_disk(&self, disk: stemcell::Disk<'_>, work: &Path, scratch: &mut Scratch) -> DriverResult<StemcellCid> {
        self.sweep_abandoned()?;
        let cid = StemcellCid::generate(STEMCELL_HEX, "");
        let sc = cid.to_string();
        let dir = self.store(&format!("stemcells/{sc}"));
        let vmx_path = self.stemcell_vmx(&sc);
        let h = self.host();
        let _sc_lock = self.lock(&sc)?;
        self.mark_pending(&sc)?;
        self.tr(|| format!("cannot create {dir}"), self.t.mkdir_all(&dir))?;
        let mut undo = Undo::new(format!("create_stemcell {sc}"));
        self.undo_stemcell(&mut undo, &sc);
        let result = (|| -> DriverResult<()> {
            match &self.cfg.ovftool {
                Some(ovftool) => self.import_with_ovftool(ovftool, disk, &dir, &vmx_path, &sc)?,
                None => self.import_own(disk, work, &dir, &vmx_path, &sc)?,
            }
            let mut v = self.read_vmx(&vmx_path)?;
            // stemcells carry no NICs worth keeping; VMs get theirs at create
            v.remove_prefix("ethernet");
            v.set("displayName", &sc);
            self.write_vmx(&vmx_path, &v)?;
            if self.player() {
                // Player has no snapshots: its VMs are full copies (create_vm)
                return Ok(());
            }
            h.vmrun(&["snapshot", &vmx_path, BASE_SNAPSHOT])?;
            if !h.snapshots(&vmx_path)?.iter().any(|s| s == BASE_SNAPSHOT) {
                return Err(VmrunError::NoBaseSnapshot { vmx: vmx_path.clone() }.into());
            }
            Ok(())
        })();
        result?;
        undo.disarm();
        // the scratch (a spooled disk, as big as the stemcell) goes while the pending entry still covers the
        // stemcell: clearing the entry is the last step before the response, so a kill in between leaves as
        // little time as possible for a stemcell the caller never hears of
        if let Some(m) = scratch.0.take() {
            m.commit();
        }
        self.clear_pending(&sc)?;
        crate::debug!("{sc}: created; from here the response is the only record of it");
        Ok(cid)
    }
}

/// A VMX for a stemcell imported without ovftool, with what current vSphere stemcells declare (hardware
/// v13, EFI when the OVF asks for it, LSI Logic SCSI root disk, SATA CD-ROM).
pub(super) fn own_stemcell_vmx(sc: &str, disk: &str, efi: bool) -> Vmx {
    let mut v = Vmx::default();
    for (k, val) in [
        (".encoding", "UTF-8"),
        ("config.version", "8"),
        ("virtualHW.version", "13"),
        ("displayName", sc),
        ("guestOS", "ubuntu-64"),
        ("numvcpus", "1"),
        ("memSize", "512"),
        ("pciBridge0.present", "TRUE"),
        ("vmci0.present", "TRUE"),
        ("scsi0.present", "TRUE"),
        ("scsi0.virtualDev", "lsilogic"),
        ("scsi0:0.present", "TRUE"),
        ("scsi0:0.fileName", disk),
        ("sata0.present", "TRUE"),
        ("sata0:0.present", "TRUE"),
        ("sata0:0.deviceType", "cdrom-raw"),
        ("sata0:0.startConnected", "FALSE"),
        ("tools.syncTime", "TRUE"),
        ("disk.enableUUID", "TRUE"),
    ] {
        v.set(k, val);
    }
    if efi {
        v.set("firmware", "efi");
    }
    v
}

impl Vmrun {
    pub(super) fn remove_stemcell(&self, cid: &StemcellCid) -> DriverResult<()> {
        let sc = cid.as_str();
        cid::stemcell(cid, STEMCELL_HEX)?;
        let dir = self.store(&format!("stemcells/{sc}"));
        let vmx = self.stemcell_vmx(sc);
        let _lock = self.lock(sc)?;
        if !self.tr(|| format!("cannot look for {vmx}"), self.t.exists(&vmx))? {
            info!("stemcell {sc} was already gone");
            self.tr(|| format!("cannot remove {dir}"), self.t.remove_dir_all(&dir))?;
            self.forget_lock(sc);
            return Ok(());
        }
        // a create in progress may be cloning it right now (its .vmx does not name the stemcell yet)
        let pending = if self.player() {
            Vec::new()
        } else {
            self.tr(|| "cannot list pending creates".into(), self.t.list_dir(&self.store("pending")))?
        };
        let creating: Vec<String> =
            pending.into_iter().filter(|n| cid::ours(n, VmCid::PREFIX, VmCid::HEX_LEN)).collect();
        let paths: Vec<String> = creating.iter().map(|vm| join(&self.store("locks"), &format!("{vm}.lock"))).collect();
        let held = self.tr(|| "cannot check pending creates".into(), self.t.held(&paths))?;
        if let Some((vm, _)) = creating.iter().zip(held).find(|(_, h)| *h) {
            return Err(DriverError::transient(format!(
                "create_vm of {vm} is in progress and may be cloning {sc}; retry delete_stemcell when it has finished"
            )));
        }
        // linked clones need their parent: refuse while any VM uses it
        let mut users = Vec::new();
        for vm in self.tr(|| "cannot list VMs".into(), self.t.list_dir(&self.store("vms")))? {
            if let Ok(v) = self.read_vmx(&self.vm_vmx(&vm)) {
                if v.get("vmcpi.stemcell") == Some(sc) {
                    users.push(vm);
                }
            }
        }
        if !users.is_empty() && !self.player() {
            return Err(VmrunError::StemcellInUse { stemcell: sc.to_string(), clones: users }.into());
        }
        self.host().vmrun(&["deleteVM", &vmx])?;
        self.tr(|| format!("cannot remove {dir}"), self.t.remove_dir_all(&dir))?;
        self.forget_lock(sc);
        Ok(())
    }
    /// ovftool runs on the hypervisor host: the OVF and its disk go there first.
    fn import_with_ovftool(
        &self,
        ovftool: &str,
        disk: stemcell::Disk<'_>,
        dir: &str,
        vmx_path: &str,
        sc: &str,
    ) -> DriverResult<()> {
        let h = self.host();
        let import = join(dir, "import");
        self.tr(|| format!("cannot create {import}"), self.t.mkdir_all(&import))?;
        let descriptor = disk.ovf.as_deref().ok_or_else(|| DriverError::invalid("stemcell", "no .ovf in the image"))?;
        let ovf = join(&import, "image.ovf");
        self.tr(|| "cannot upload the OVF".into(), self.t.write(&ovf, descriptor.as_bytes()))?;
        let name = disk.name.clone();
        info!("uploading {name} ({} MiB)", disk.len >> 20);
        self.tr(|| format!("cannot upload {name}"), self.t.upload_stream(disk.reader, &name, &join(&import, &name)))?;
        // the OVF is the stemcell's: its raw .vmx keys (vmw:ExtraConfig) only with the opt-in
        let mut argv: Vec<String> = vec![ovftool.into(), "--sourceType=OVF".into(), "--targetType=VMX".into()];
        if self.cfg.allow_extra_config {
            argv.push("--allowExtraConfig".into());
        }
        argv.extend(["--acceptAllEulas".into(), format!("--name={sc}"), ovf, vmx_path.to_string()]);
        h.tool(argv, "ovftool could not import the stemcell")?;
        self.tr(|| format!("cannot remove {import}"), self.t.remove_dir_all(&import))?;
        Ok(())
    }

    /// Our own import: the VMDK → a sparse raw file → a monolithic sparse VMDK, and a VMX like ovftool's.
    fn import_own(
        &self,
        disk: stemcell::Disk<'_>,
        work: &Path,
        dir: &str,
        vmx_path: &str,
        sc: &str,
    ) -> DriverResult<()> {
        // our own import: the VMDK → a sparse raw file → a monolithic sparse VMDK, and a VMX like
        // ovftool's
        let efi = disk.efi;
        let tmp = tempfile::Builder::new()
            .prefix("vmcpi-vmdk-")
            .tempdir_in(work)
            .context(|| "cannot create a temporary directory".into())?;
        let mut vmdk = VmdkReader::open(&mut *disk.reader, disk.len, tmp.path())?;
        let raw = tmp.path().join("disk.raw");
        let file = std::fs::File::create(&raw).context(|| format!("cannot create {}", raw.display()))?;
        info!(
            "reading the {} VMDK ({} MiB virtual) into a sparse raw file (no ovftool configured)",
            vmdk.kind().as_str(),
            vmdk.virtual_size() >> 20
        );
        vmdk.write_sparse_raw(&file)?;
        drop(file);
        let converted = tmp.path().join("disk.vmdk");
        // qemu-img runs on this machine (the disk is here), through the same process seam as every tool: the
        // local transport, and the host's tool errors (a full disk is NoDiskSpace)
        let local = crate::cpi::transport::local::Local::new();
        let mut argv = vec![self.cfg.local_qemu_img.display().to_string()];
        argv.extend(["convert", "-q", "-f", "raw", "-O", "vmdk", "-o"].map(String::from));
        argv.push("adapter_type=lsilogic,subformat=monolithicSparse".into());
        argv.extend([raw.display().to_string(), converted.display().to_string()]);
        super::host::Host { t: &local, cfg: &self.cfg }.tool(argv, "cannot convert the stemcell's disk")?;
        let _ = std::fs::remove_file(&raw);
        let disk_name = format!("{sc}-disk1.vmdk");
        self.tr(|| "cannot upload the stemcell disk".into(), self.t.upload(&converted, &join(dir, &disk_name)))?;
        self.write_vmx(vmx_path, &own_stemcell_vmx(sc, &disk_name, efi))?;
        Ok(())
    }
}
