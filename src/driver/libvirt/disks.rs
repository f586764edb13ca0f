//! Persistent disk helpers: live snapshots of disks in use.
use super::*;

impl Libvirt {
    /// Copies a disk that a running domain uses with a libvirt block copy job into a new volume.
    pub(super) fn snapshot_live(&self, disk: &DiskCid, snap: &str) -> DriverResult<()> {
        let running =
            self.virsh.run(["list", "--name", "--state-running"]).context(|| "cannot list running domains".into())?;
        for vm in running.lines().map(str::trim).filter(|n| is_ours(n, "vm-", 20)) {
            let Ok(cid) = VmCid::new(vm) else { continue };
            let Ok(info) = self.dumpxml(&cid) else { continue };
            let Some(dev) =
                info.disks.iter().find(|d| d.volume.as_deref() == Some(disk.as_str())).and_then(|d| d.dev.clone())
            else {
                continue;
            };
            let (cap, _) =
                self.vol_info(disk.as_str())?.ok_or_else(|| DriverError::disk_not_found(disk.to_string()))?;
            let mut undo = Undo::new(format!("snapshot_disk {snap}"));
            self.undo_volume(&mut undo, snap);
            self.vol_create(snap, cap, "qcow2", None)?;
            let path = self
                .virsh
                .run(["vol-path", "--pool", self.pool(), snap])
                .context(|| format!("cannot find volume {snap}"))?;
            self.virsh
                .run([
                    "blockcopy",
                    vm,
                    dev.as_str(),
                    "--dest",
                    path.trim(),
                    "--format",
                    "qcow2",
                    "--reuse-external",
                    "--wait",
                    "--finish",
                    "--transient-job",
                ])
                .context(|| format!("cannot copy {disk} (attached to {vm} as {dev}) into snapshot {snap}"))?;
            undo.disarm();
            return Ok(());
        }
        Err(LibvirtError::LockedElsewhere { disk: disk.to_string() }.into())
    }
}
