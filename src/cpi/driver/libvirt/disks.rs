//! Persistent disk helpers: live snapshots of disks in use.
use super::*;
use crate::cpi::libvirt_rpc::{flags, BlockCopyParams};

/// Longest wait for QEMU to copy a disk in use into its snapshot.
const COPY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

impl Libvirt {
    /// Copies a disk that a running domain uses into the new volume `snap` (qcow2, `cap` bytes) with a
    /// block copy job: QEMU mirrors the disk into it until both are equal, then the job ends and leaves the
    /// copy apart (`virsh blockcopy --reuse-external --transient-job --wait --finish`).
    pub(super) fn snapshot_live(&self, disk: &DiskCid, snap: &str, cap: u64) -> DriverResult<()> {
        let c = self.client()?;
        let running =
            c.list_domains(flags::LIST_DOMAINS_RUNNING).map_err(|e| error::rpc("cannot list running domains", e))?;
        for dom in running.iter().filter(|d| cid::ours(&d.name, VmCid::PREFIX, VmCid::HEX_LEN)) {
            let Ok(cid) = VmCid::new(dom.name.as_str()) else { continue };
            let Ok((dom, info)) = self.dumpxml(&cid) else { continue };
            let Some(dev) =
                info.disks.iter().find(|d| d.volume.as_deref() == Some(disk.as_str())).and_then(|d| d.dev.clone())
            else {
                continue;
            };
            let vm = dom.name.as_str();
            let mut undo = Undo::new(format!("snapshot_disk {snap}"));
            self.undo_volume(&mut undo, snap);
            let vol = self.vol_create(snap, cap, "qcow2", None)?;
            let path = c.vol_path(&vol).map_err(|e| error::rpc(format!("cannot find volume {snap}"), e))?;
            let dest = domain::copy_target_xml(&path, "qcow2");
            let what = || format!("cannot copy {disk} (attached to {vm} as {dev}) into snapshot {snap}");
            c.domain_block_copy(
                &dom,
                &dev,
                &dest,
                BlockCopyParams::default(),
                flags::BLOCK_COPY_REUSE_EXT | flags::BLOCK_COPY_TRANSIENT_JOB,
            )
            .map_err(|e| error::rpc(what(), e))?;
            let copied =
                c.block_job_wait_ready(&dom, &dev, COPY_TIMEOUT).and_then(|_| c.block_job_abort(&dom, &dev, 0));
            if let Err(e) = copied {
                // the job is abandoned before its target volume is removed
                let _ = c.block_job_abort(&dom, &dev, 0);
                return Err(error::rpc(what(), e));
            }
            undo.disarm();
            return Ok(());
        }
        Err(LibvirtError::LockedElsewhere { disk: disk.to_string() }.into())
    }
}
