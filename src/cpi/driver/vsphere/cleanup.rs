//! "A create that dies leaves nothing": in-flight markers of creates, and the reaping of what killed calls made.
use super::*;

impl Vsphere {
    /// Records the new VM `name` (object `vm`) in `undo`: destroyed when the create fails.
    pub(super) fn undo_vm<'a>(&'a self, inv: &'a Inv, undo: &mut Undo<'a>, name: &str, vm: &MoRef) {
        let vm = vm.clone();
        undo.push(format!("{name} ({})", vm.value), move || {
            inv.vm_info(&vm).and_then(|i| i.map(|i| self.destroy_vm(inv, &i)).transpose()).map(|_| ())
        });
    }

    /// Records the stemcell, VM or disk `cid` in `undo`: whatever of it exists is removed when the create
    /// fails (found by name, as the reaper does).
    pub(super) fn undo_leftovers<'a>(&'a self, inv: &'a Inv, undo: &mut Undo<'a>, cid: &str) {
        let cid = cid.to_string();
        undo.push(cid.clone(), move || self.remove_leftovers(inv, &cid).map(|_| ()));
    }

    /// Reaps what killed creates left, then writes and holds the in-flight marker of `cid`. It reaches the
    /// disk while the call looks things up: [`Vsphere::durable`] before anything is made.
    pub(super) fn begin(&self, inv: &Inv, cid: &str) -> DriverResult<Marker> {
        self.reap(inv);
        self.inflight.begin_syncing(cid).map_err(|e| self.marker_err(e))
    }

    /// Waits until `marker` is on disk: called right before the create's first request that makes something.
    pub(super) fn durable(&self, marker: &Marker) -> DriverResult<()> {
        marker.durable().map_err(|e| self.marker_err(e))
    }

    fn marker_err(&self, e: std::io::Error) -> DriverError {
        DriverError::failed(format!("cannot write the in-flight marker in {}", self.cfg.state_dir.display()), e)
    }

    /// Deletes everything of creates whose process died (SIGKILL, power loss) before answering. vSphere
    /// finishes a task after its client died, so a marker whose object is not there yet is kept for
    /// `ORPHAN_GRACE` before it is dropped.
    pub(super) fn reap(&self, inv: &Inv) {
        const ORPHAN_GRACE: std::time::Duration = std::time::Duration::from_secs(600);
        for (cid, marker) in self.inflight.orphans() {
            match self.remove_leftovers(inv, &cid) {
                Ok(true) => {
                    warn!("{cid}: its create was interrupted (the process died); removed what it left");
                    marker.commit();
                }
                Ok(false) if self.marker_age(&cid).is_none_or(|a| a > ORPHAN_GRACE) => {
                    crate::debug!("{cid}: interrupted create left nothing; marker removed");
                    marker.commit()
                }
                Ok(false) => {
                    // the dead process's scratch (an unpacked stemcell, as big as the image) goes now
                    marker.clear_work();
                    crate::debug!("{cid}: interrupted create has left nothing yet; marker kept for a while")
                }
                Err(e) => warn!(
                    "{cid}: could not remove what an interrupted create left ({e}); will retry on the next create"
                ),
            }
        }
    }

    /// How long ago the marker of `cid` was written (the layout is [`crate::cpi::inflight`]'s).
    pub(super) fn marker_age(&self, cid: &str) -> Option<std::time::Duration> {
        let p = self.cfg.inflight_dir().join("inflight").join(format!("{cid}.lock"));
        std::fs::metadata(p).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok())
    }

    /// Removes the VM, stemcell or disk `cid`; `Ok(false)` when there was nothing.
    pub(super) fn remove_leftovers(&self, inv: &Inv, cid: &str) -> DriverResult<bool> {
        if valid_id(cid, VmCid::PREFIX) || valid_id(cid, StemcellCid::PREFIX) {
            let folder = if cid.starts_with("vm-") { &self.cfg.vm_folder } else { &self.cfg.template_folder };
            return match inv.find_vm(folder, cid)?.map(|vm| inv.vm_info(&vm)).transpose()?.flatten() {
                Some(info) => self.destroy_vm(inv, &info).map(|_| true),
                None => Ok(false),
            };
        }
        if valid_id(cid, DiskCid::PREFIX) {
            let disk = DiskCid::new(cid).map_err(DriverError::other)?;
            let Some(ds) = self.locate_disk(inv, &disk)? else { return Ok(false) };
            let req = DeleteVirtualDisk {
                this: Self::vdm(inv)?,
                name: format!("[{ds}] {}", self.disk_path(cid)),
                datacenter: inv.dc()?,
            };
            inv.s.run_task(&req, "delete disk").map_err(ctx_err(format!("cannot delete disk {cid}")))?;
            return Ok(true);
        }
        Ok(false)
    }
}
