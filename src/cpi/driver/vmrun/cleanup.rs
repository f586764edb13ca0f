//! "A create that dies leaves nothing": the undo step of a failed create ([`Undo`]), pending entries, the sweep of abandoned creates and
//! the scratch space of imports.
//!
//! Why vmrun does not use the in-flight markers of [`crate::cpi::inflight`] for its VMs and stemcells, as libvirt
//! and vSphere do: those markers live in the CPI's own `state_dir` and are held with a local `flock`, so
//! they cover what one machine's CPI processes make. vmrun's VMs, disks and stemcells live in a store on the
//! VMware host, which is often another machine reached over SSH and may be driven by CPIs on several
//! machines (a workstation's create-env and a director). The record of a create in progress must sit
//! beside what it covers and be locked where it is, so that any CPI that reaches that host sees it: hence
//! `pending/<cid>` in the host's store, under the store's own lock (the transport's `lock`, taken on the
//! host). The import's local scratch space (an unpacked stemcell on the CPI's machine) is local, and uses
//! the in-flight markers.
use super::*;

/// A scratch marker that is committed (its work directory and marker removed) when the import ends in
/// any way but SIGKILL.
pub(super) struct Scratch(pub(super) Option<Marker>);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(m) = self.0.take() {
            m.commit();
        }
    }
}

impl Vmrun {
    /// Records VM `vm` (its directory, registration and pending entry) in `undo`: removed when the create
    /// fails. What cannot be removed then keeps its pending entry, and the next create on this store sweeps it.
    pub(super) fn undo_vm<'a>(&'a self, undo: &mut Undo<'a>, vm: &str) {
        let vm = vm.to_string();
        undo.push(format!("VM {vm}"), move || self.destroy_vm_files(&vm));
    }

    /// Records stemcell `sc` (its directory and pending entry) in `undo`, like [`Vmrun::undo_vm`].
    pub(super) fn undo_stemcell<'a>(&'a self, undo: &mut Undo<'a>, sc: &str) {
        let sc = sc.to_string();
        undo.push(format!("stemcell {sc}"), move || self.remove_stemcell_files(&sc));
    }

    /// Records disk `disk` (its VMDK, record and pending entry) in `undo`, like [`Vmrun::undo_vm`].
    pub(super) fn undo_disk<'a>(&'a self, undo: &mut Undo<'a>, disk: &str) {
        let disk = disk.to_string();
        undo.push(format!("disk {disk}"), move || self.remove_disk_files(&disk));
    }

    /// Removes a disk's VMDK (a single growable file: `-t 0`) and its record, then its pending entry.
    pub(super) fn remove_disk_files(&self, disk: &str) -> DriverResult<()> {
        let path = self.disk_path(disk);
        self.tr(|| format!("cannot remove {path}"), self.t.remove_file(&path))?;
        self.tr(|| "cannot remove the disk record".into(), self.t.remove_file(&self.disk_record(disk)))?;
        self.clear_pending(disk)
    }

    /// Removes a stemcell's directory, then its pending entry.
    pub(super) fn remove_stemcell_files(&self, sc: &str) -> DriverResult<()> {
        self.tr(|| format!("cannot remove {sc}"), self.t.remove_dir_all(&self.store(&format!("stemcells/{sc}"))))?;
        self.clear_pending(sc)
    }

    /// Stops (if running), deletes the VM with vmrun, removes its directory and pending entry. Persistent
    /// disks are detached from the .vmx first: `vmrun deleteVM` deletes every disk the VM references.
    pub(super) fn destroy_vm_files(&self, vm: &str) -> DriverResult<()> {
        let h = self.host();
        let vmx = self.vm_vmx(vm);
        if self.tr(|| format!("cannot look for {vmx}"), self.t.exists(&vmx))? {
            h.stop(&vmx, false)?;
            let mut v = self.read_vmx(&vmx)?;
            let disks_dir = self.store("disks/");
            let mut detached = 0;
            for (unit, file) in v.scsi_disks(0) {
                if file.starts_with(&disks_dir) {
                    v.remove_prefix(&format!("scsi0:{unit}."));
                    detached += 1;
                }
            }
            if detached > 0 {
                info!("detaching {detached} persistent disk(s) from {vm} before deleting it");
                self.write_vmx(&vmx, &v)?;
            }
            h.vmrun(&["deleteVM", &vmx])?;
        }
        self.tr(|| format!("cannot remove {vm}"), self.t.remove_dir_all(&self.vm_dir(vm)))?;
        self.clear_pending(vm)
    }

    /// Scratch space of stemcell imports on the CPI's host: `<tmp_dir>/vmcpi-vmrun-scratch` (a state
    /// directory, checked like one: [`crate::cpi::statedir`]), with in-flight markers ([`crate::cpi::inflight`]) so
    /// that what a killed import unpacked is found and removed.
    pub(super) fn scratch(&self) -> Inflight {
        // $TMPDIR comes from the CPI's caller: its real path is used (on macOS it lies below the link /var),
        // since a state directory is reached through no link ([`crate::cpi::statedir`])
        let tmp = self.cfg.tmp_dir.clone().unwrap_or_else(|| {
            let t = std::env::temp_dir();
            t.canonicalize().unwrap_or(t)
        });
        Inflight::new(&tmp.join("vmcpi-vmrun-scratch"), &[("import-", 8)])
    }

    /// Records a create in progress (`pending/<cid>`); the caller holds the CID's lock until it is done.
    pub(super) fn mark_pending(&self, cid: &str) -> DriverResult<()> {
        let dir = self.store("pending");
        self.tr(|| format!("cannot create {dir}"), self.t.mkdir_all(&dir))?;
        self.tr(
            || "cannot record the pending create".into(),
            self.t.write(&join(&dir, cid), format!("created by pid {}\n", std::process::id()).as_bytes()),
        )
    }

    pub(super) fn clear_pending(&self, cid: &str) -> DriverResult<()> {
        self.tr(
            || format!("cannot clear the pending entry of {cid}"),
            self.t.remove_file(&self.store(&format!("pending/{cid}"))),
        )
        .map(|_| ())
    }

    /// Removes creates (VMs and stemcells) that failed without cleaning up: their pending entry is there
    /// and nobody holds their lock (the process that made them is gone).
    pub(super) fn sweep_abandoned(&self) -> DriverResult<()> {
        // unpacked stemcells of imports that were killed (their scratch marker is no longer locked)
        for (id, marker) in self.scratch().orphans() {
            warn!("{id}: a stemcell import was killed; removing its scratch files");
            marker.commit();
        }
        let pending: Vec<String> = self
            .tr(|| "cannot list pending creates".into(), self.t.list_dir(&self.store("pending")))?
            .into_iter()
            .filter(|n| {
                cid::ours(n, VmCid::PREFIX, VmCid::HEX_LEN)
                    || cid::ours(n, StemcellCid::PREFIX, STEMCELL_HEX)
                    || cid::ours(n, DiskCid::PREFIX, DISK_HEX)
            })
            .collect();
        let lock_path = |cid: &str| join(&self.store("locks"), &format!("{cid}.lock"));
        // one probe for all entries: most belong to creates still running in other processes
        let held = self.tr(
            || "cannot check pending creates".into(),
            self.t.held(&pending.iter().map(|c| lock_path(c)).collect::<Vec<_>>()),
        )?;
        for (cid, _) in pending.iter().zip(held).filter(|(_, h)| !h) {
            let path = lock_path(cid);
            match self.t.lock(&path, Duration::ZERO) {
                // the create may have finished (pending entry cleared, lock let go) since the listing: with
                // the lock held, an entry that is still there belongs to a create that died
                Ok(_g)
                    if !self.tr(
                        || "cannot check a pending create".into(),
                        self.t.exists(&self.store(&format!("pending/{cid}"))),
                    )? => {}
                Ok(_g) => {
                    warn!("{cid}: a create that failed without cleaning up left it behind; removing it");
                    let removed = if cid.starts_with("vm-") {
                        self.destroy_vm_files(cid)
                    } else if cid.starts_with("disk-") {
                        let removed = self.remove_disk_files(cid);
                        self.forget_lock(cid);
                        removed
                    } else {
                        self.remove_stemcell_files(cid)
                    };
                    if let Err(e) = removed {
                        warn!("could not remove abandoned {cid}: {e}");
                    }
                }
                Err(TransportError::LockTimeout { .. }) => {}
                Err(e) => return Err(DriverError::failed(format!("cannot check pending create {cid}"), e)),
            }
        }
        Ok(())
    }
}
