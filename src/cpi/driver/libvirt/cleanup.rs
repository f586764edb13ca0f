//! "A create that dies leaves nothing": the undo steps of a failed create ([`Undo`]) and the in-flight
//! markers of creates that were killed.
use super::*;

impl Libvirt {
    /// Records volume `name` in `undo`: deleted when the create fails.
    pub(super) fn undo_volume<'a>(&'a self, undo: &mut Undo<'a>, name: &str) {
        let name = name.to_string();
        undo.push(format!("volume {name}"), move || self.vol_delete(&name).map(|_| ()));
    }

    /// Records domain `vm` in `undo`: stopped and undefined when the create fails.
    pub(super) fn undo_domain<'a>(&'a self, undo: &mut Undo<'a>, vm: &str) {
        let vm = vm.to_string();
        undo.push(format!("domain {vm}"), move || self.destroy_and_undefine(&vm).map(|_| ()));
    }

    /// Starts a create: reaps what killed processes left, then marks `cid` in flight.
    pub(super) fn begin(&self, cid: &str) -> DriverResult<Marker> {
        self.reap();
        self.inflight
            .begin(cid)
            .context(|| format!("cannot write the in-flight marker in {}", self.cfg.state_dir.display()))
    }

    /// Deletes everything of creates whose process died (SIGKILL, power loss) before answering.
    pub(super) fn reap(&self) {
        for (cid, marker) in self.inflight.orphans() {
            warn!("{cid}: its create was interrupted (the process died); removing what it left");
            let done = if cid.starts_with("vm-") {
                self.destroy_and_undefine(&cid).is_ok()
                    && [format!("{cid}-root"), format!("{cid}-ephemeral"), Self::medium_volume(&cid)]
                        .iter()
                        .all(|v| self.vol_delete(v).is_ok())
            } else if cid.starts_with("disk-") {
                self.vol_delete(&cid).is_ok() && self.vol_delete(&format!("{cid}.meta.json")).is_ok()
            } else if cid.starts_with("sc-") {
                // the marker has the id; the volume name adds the family suffix
                STEMCELL_TAGS.iter().all(|t| self.vol_delete(&format!("{cid}-{t}")).is_ok())
            } else {
                // a snapshot: the only other name the reaper takes (MARKER_SHAPES)
                self.vol_delete(&cid).is_ok()
            };
            if done {
                marker.commit();
            } else {
                warn!("{cid}: could not remove everything; will retry on the next create");
            }
        }
    }
}
