//! "A create that dies leaves nothing": the create rollback, pending entries, the sweep of abandoned creates and
//! the scratch space of imports.
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

/// What create_vm made so far, undone in reverse when it fails.
pub(super) struct Rollback<'a> {
    pub(super) d: &'a Vmrun,
    pub(super) vm: String,
    pub(super) armed: bool,
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if self.armed {
            warn!("create of {} failed: removing what was made", self.vm);
            if let Err(e) = self.d.destroy_vm_files(&self.vm) {
                warn!("could not clean up {} ({e}); the next create_vm on this store removes it", self.vm);
            }
        }
    }
}

impl Vmrun {
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

    /// Scratch space of stemcell imports on the CPI's host: `<tmp_dir>/vmcpi-vmrun-scratch`, with in-flight
    /// markers ([`crate::inflight`]) so that what a killed import unpacked is found and removed.
    pub(super) fn scratch(&self) -> Inflight {
        Inflight::new(&self.cfg.tmp_dir.clone().unwrap_or_else(std::env::temp_dir).join("vmcpi-vmrun-scratch"))
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
            .filter(|n| is_ours(n, "vm-", 20) || is_ours(n, "sc-", 16))
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
                Ok(_g) => {
                    warn!("{cid}: a create that failed without cleaning up left it behind; removing it");
                    let removed = if cid.starts_with("vm-") {
                        self.destroy_vm_files(cid)
                    } else {
                        self.tr(
                            || format!("cannot remove {cid}"),
                            self.t.remove_dir_all(&self.store(&format!("stemcells/{cid}"))),
                        )
                        .and_then(|_| self.clear_pending(cid))
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
