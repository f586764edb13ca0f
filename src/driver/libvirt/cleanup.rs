//! "A create that dies leaves nothing": the rollback of a failed create and the in-flight markers of
//! creates that were killed.
use super::*;

/// Undo list for create_stemcell / create_vm: what was made, removed in reverse on failure.
pub(super) struct Rollback<'a> {
    pub(super) virsh: &'a Virsh,
    pub(super) pool: &'a str,
    pub(super) volumes: Vec<String>,
    pub(super) domain: Option<String>,
    pub(super) armed: bool,
}

impl<'a> Rollback<'a> {
    pub(super) fn new(virsh: &'a Virsh, pool: &'a str) -> Self {
        Rollback { virsh, pool, volumes: Vec::new(), domain: None, armed: true }
    }
    pub(super) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(d) = &self.domain {
            warn!("cleaning up after failed create: domain {d}");
            let _ = self.virsh.run_opt(["destroy", d.as_str()]);
            if let Err(e) = self.virsh.run_opt(["undefine", d.as_str(), "--nvram"]) {
                warn!("could not undefine {d}: {e}");
            }
        }
        for v in self.volumes.iter().rev() {
            warn!("cleaning up after failed create: volume {v}");
            if let Err(e) = self.virsh.run_opt(["vol-delete", "--pool", self.pool, v.as_str()]) {
                warn!("could not delete volume {v}: {e}");
            }
        }
    }
}

impl Libvirt {
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
                let _ = self.virsh.run_opt(["destroy", cid.as_str()]);
                self.virsh.run_opt(["undefine", cid.as_str(), "--nvram"]).is_ok()
                    && [format!("{cid}-root"), format!("{cid}-ephemeral"), Self::medium_volume(&cid)]
                        .iter()
                        .all(|v| self.vol_delete(v).is_ok())
            } else if cid.starts_with("disk-") {
                self.vol_delete(&cid).is_ok() && self.vol_delete(&format!("{cid}.meta.json")).is_ok()
            } else if cid.starts_with("sc-") {
                // the marker has the id; the volume name adds the family suffix
                STEMCELL_TAGS.iter().all(|t| self.vol_delete(&format!("{cid}-{t}")).is_ok())
            } else {
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
