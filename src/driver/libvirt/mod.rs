//! The libvirt driver: KVM/QEMU (or any libvirt hypervisor) through `virsh`, locally or over `qemu+ssh://`.
//!
//! Layout in one storage pool:
//! - stemcell `sc-<16 hex>-<os|osraw|vs|vsefi>`: the imported image (qcow2, or raw for `osraw`); the suffix
//!   records the stemcell family (OpenStack or vSphere conventions), EFI, and the volume format;
//! - VM `vm-<20 hex>`: domain of that name, volumes `<vm>-root` (qcow2 overlay on the stemcell, no copy),
//!   `<vm>-ephemeral`, `<vm>-settings.iso` (the settings medium, a fixed-size volume);
//! - disk `disk-<15 hex>` (20 characters, so it fits a disk serial and the agent's by-id lookup), with its
//!   metadata in `<disk>.meta.json`; snapshot `snap-<15 hex>`, a full copy of the disk.
//!
//! Disks sit on one virtio-scsi controller: root at SCSI target 0, ephemeral at 1, persistent disks at 2+.
//! vSphere-family agents resolve the target number as the disk hint; OpenStack-family agents find the disk
//! by its serial (the CID) under /dev/disk/by-id, with the device path as fallback.
mod bootstrap;
mod cleanup;
mod config;
mod create;
mod disks;
pub mod domain;
pub(crate) mod error;
mod import;
mod naming;
pub mod portfwd;
mod props;
mod settings;
mod storage;
mod virsh;

pub use config::{check_context_uri, LibvirtConfig, CONTEXT_KEYS};
use error::LibvirtError;
use naming::*;
use props::*;

use crate::agent_settings::{AgentSettings, Network, Networks};
use crate::config::AgentOptions;
use crate::driver::undo::Undo;
use crate::driver::{CallContext, CreateVm, CreatedVm, Driver, Metadata, VmResources};
use crate::error::{Context, DriverError, DriverResult};
use crate::exec::Cmd;
use crate::ids::{random_hex, DiskCid, SnapshotCid, StemcellCid, VmCid};
use crate::inflight::{Inflight, Marker};
use crate::medium::{self, MediumKind};
use crate::stemcell::{self, DiskFormat, Family};
use crate::{info, warn};
use domain::{DomainSpec, Nic, NicSource, ScsiDisk};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use virsh::Virsh;

/// Formats `info` reports: OpenStack/KVM images and vSphere OVF images both import.
pub const STEMCELL_FORMATS: &[&str] = &["openstack-qcow2", "openstack-raw", "vsphere-ovf", "vsphere-ova"];

/// The libvirt backend.
pub struct Libvirt {
    cfg: LibvirtConfig,
    agent: AgentOptions,
    virsh: Virsh,
    inflight: Inflight,
}

impl Libvirt {
    pub fn new(cfg: LibvirtConfig, agent: AgentOptions) -> Self {
        let virsh = Virsh::new(&cfg.virsh, &cfg.uri);
        Self::with_virsh(cfg, agent, virsh)
    }

    /// The driver with its virsh on a given transport (unit tests: the fake transport).
    fn with_virsh(cfg: LibvirtConfig, agent: AgentOptions, virsh: Virsh) -> Self {
        // markers say where their volumes live: another config sharing the state_dir leaves them alone
        let inflight =
            Inflight::new(&cfg.state_dir, MARKER_SHAPES).owned_by(&format!("libvirt {} pool {}", cfg.uri, cfg.pool));
        Libvirt { cfg, agent, virsh, inflight }
    }
}

impl Driver for Libvirt {
    fn create_stemcell(&self, image: &Path, cloud_properties: &Map<String, Value>) -> DriverResult<StemcellCid> {
        self.import_stemcell(image, cloud_properties)
    }

    fn delete_stemcell(&self, cid: &StemcellCid) -> DriverResult<()> {
        self.reap();
        if parse_stemcell_cid(cid.as_str()).is_none() {
            return Err(DriverError::stemcell_not_found(format!("{cid} (not a stemcell CID of this CPI)")));
        }
        if !self.vol_delete(cid.as_str())? {
            info!("stemcell {cid} was already gone");
        }
        Ok(())
    }

    fn create_vm(&self, _ctx: &CallContext, req: &CreateVm) -> DriverResult<CreatedVm> {
        let kind = parse_stemcell_cid(req.stemcell.as_str()).ok_or_else(|| {
            DriverError::stemcell_not_found(format!("{} (not a stemcell CID of this CPI)", req.stemcell))
        })?;
        let cid = VmCid::generate();
        info!("creating {cid} from {}", req.stemcell);
        let marker = self.begin(cid.as_str())?;
        let mut undo = Undo::new(format!("create_vm {cid}"));
        match self.create_vm_inner(req, kind, &cid, &mut undo) {
            Ok(created) => {
                undo.disarm();
                marker.created(cid.as_str());
                Ok(created)
            }
            Err(e) => {
                // what could not be removed now stays in flight for the reaper
                if undo.run() {
                    marker.commit();
                }
                Err(e)
            }
        }
    }

    fn delete_vm(&self, cid: &VmCid) -> DriverResult<()> {
        self.reap();
        if !valid_vm(cid) {
            return Err(DriverError::vm_not_found(format!("{cid} (not a VM CID of this CPI)")));
        }
        let vm = cid.as_str();
        match self.virsh.run_opt(["destroy", vm]) {
            Ok(_) => {}
            Err(e) if e.output().contains("not running") => {}
            Err(e) => return Err(DriverError::failed(format!("cannot stop {vm}"), e)),
        }
        // undefining forgets the attached persistent disks: they stay in the pool, untouched
        if self.virsh.run_opt(["undefine", vm, "--nvram"]).context(|| format!("cannot undefine {vm}"))?.is_none() {
            info!("domain {vm} was already gone; removing what is left of it");
        }
        for v in [format!("{vm}-root"), format!("{vm}-ephemeral"), Self::medium_volume(vm)] {
            self.vol_delete(&v)?;
        }
        Ok(())
    }

    fn has_vm(&self, cid: &VmCid) -> DriverResult<bool> {
        if !valid_vm(cid) {
            return Ok(false);
        }
        Ok(self.virsh.run_opt(["domstate", cid.as_str()]).context(|| format!("cannot query {cid}"))?.is_some())
    }

    fn reboot_vm(&self, cid: &VmCid) -> DriverResult<()> {
        let info = self.dumpxml(cid)?;
        if info.running {
            self.virsh.run(["reset", cid.as_str()]).context(|| format!("cannot reset {cid}"))?;
        } else {
            self.virsh.run(["start", cid.as_str()]).context(|| format!("cannot start {cid}"))?;
            // a new QEMU process: its forwards are added again (a reset keeps them)
            self.apply_forwards(cid.as_str(), &info.forwards)?;
        }
        Ok(())
    }

    fn set_vm_metadata(&self, cid: &VmCid, metadata: &Metadata) -> DriverResult<()> {
        let info = self.dumpxml(cid)?;
        let scope = Self::scope(info.running);
        let xml = domain::tags_xml(metadata);
        let mut args =
            vec!["metadata", cid.as_str(), "--uri", domain::TAGS_NS, "--key", "vmcpitags", "--set", xml.as_str()];
        args.extend(scope);
        self.virsh.run(&args).context(|| format!("cannot set metadata of {cid}"))?;
        let title = metadata.get("name").cloned().or_else(|| {
            Some(format!("{}/{}", metadata.get("instance_group").or(metadata.get("job"))?, metadata.get("index")?))
        });
        if let Some(t) = title {
            let t: String = t.chars().map(|c| if c.is_control() { ' ' } else { c }).take(200).collect();
            let mut args = vec!["desc", cid.as_str(), "--title", "--new-desc", t.as_str()];
            args.extend(scope);
            self.virsh.run(&args).context(|| format!("cannot set the title of {cid}"))?;
        }
        Ok(())
    }

    fn calculate_vm_cloud_properties(&self, res: &VmResources) -> DriverResult<Value> {
        LIMITS.calculate(res)
    }

    fn create_disk(
        &self,
        size_mib: u64,
        cloud_properties: &Map<String, Value>,
        vm: Option<&VmCid>,
    ) -> DriverResult<DiskCid> {
        let props: DiskProps = crate::driver::props::parse("disk cloud_properties", cloud_properties)?;
        let format = props.format.unwrap_or_else(|| "qcow2".into());
        if !matches!(format.as_str(), "qcow2" | "raw") {
            return Err(DriverError::invalid(
                "disk cloud_properties",
                format!("format must be qcow2 or raw, got {format:?}"),
            ));
        }
        if let Some(vm) = vm {
            // one host: the locality hint needs no action
            crate::debug!("create_disk for {vm}");
        }
        self.ensure_pool()?;
        let cid = DiskCid::generate(DISK_HEX);
        let marker = self.begin(cid.as_str())?;
        self.vol_create(cid.as_str(), size_mib << 20, &format, None)?;
        marker.created(cid.as_str());
        Ok(cid)
    }

    fn delete_disk(&self, cid: &DiskCid) -> DriverResult<()> {
        self.reap();
        if !valid_disk(cid) {
            return Err(DriverError::disk_not_found(format!("{cid} (not a disk CID of this CPI)")));
        }
        if !self.vol_delete(cid.as_str())? {
            info!("disk {cid} was already gone");
        }
        self.vol_delete(&format!("{cid}.meta.json"))?;
        Ok(())
    }

    fn resize_disk(&self, cid: &DiskCid, new_size_mib: u64) -> DriverResult<()> {
        if !valid_disk(cid) {
            return Err(DriverError::disk_not_found(cid.to_string()));
        }
        let (cap, _) = self.vol_info(cid.as_str())?.ok_or_else(|| DriverError::disk_not_found(cid.to_string()))?;
        let new = new_size_mib << 20;
        if new < cap {
            return Err(DriverError::not_supported(format!(
                "disk {cid} is {} MiB; shrinking to {new_size_mib} MiB would lose data",
                cap >> 20
            )));
        }
        if new == cap {
            return Ok(());
        }
        let size = format!("{new}b");
        self.virsh
            .run(["vol-resize", "--pool", self.pool(), cid.as_str(), size.as_str()])
            .context(|| format!("cannot resize {cid} (detach it first)"))?;
        Ok(())
    }

    fn has_disk(&self, cid: &DiskCid) -> DriverResult<bool> {
        Ok(valid_disk(cid) && self.vol_info(cid.as_str())?.is_some())
    }

    fn attach_disk(&self, _ctx: &CallContext, vm: &VmCid, disk: &DiskCid) -> DriverResult<Value> {
        let info = self.dumpxml(vm)?;
        let family = Self::family_of(&info, vm)?;
        if !valid_disk(disk) {
            return Err(DriverError::disk_not_found(format!("{disk} (not a disk CID of this CPI)")));
        }
        let (_, format) = self.vol_info(disk.as_str())?.ok_or_else(|| DriverError::disk_not_found(disk.to_string()))?;
        if let Some(d) = info.disks.iter().find(|d| d.volume.as_deref() == Some(disk.as_str())) {
            info!("{disk} is already attached to {vm}");
            return Ok(hint_for(family, d.target.unwrap_or(2)));
        }
        let used: Vec<u32> =
            info.disks.iter().filter(|d| d.bus.as_deref() == Some("scsi")).filter_map(|d| d.target).collect();
        let target = (2..=255)
            .find(|t| !used.contains(t))
            .ok_or_else(|| LibvirtError::NoFreeScsiTarget { vm: vm.to_string() })?;
        let dev = ScsiDisk {
            pool: self.pool().into(),
            volume: disk.to_string(),
            format,
            target,
            serial: Some(disk.to_string()),
        };
        let f = disk_xml_file(&dev)?;
        self.hotplug("attach-device", vm, &f, info.running).context(|| format!("cannot attach {disk} to {vm}"))?;
        // the settings medium names the disk: an attachment it does not show is undone
        let mut undo = Undo::new(format!("attach_disk {disk} to {vm}"));
        undo.push(format!("the attachment of {disk}"), || {
            self.hotplug("detach-device", vm, &f, info.running).context(|| format!("cannot detach {disk} from {vm}"))
        });
        let hint = hint_for(family, target);
        let mut s = self.read_medium(vm.as_str(), family.medium())?;
        s.attach_persistent(disk.as_str(), hint.clone());
        self.write_medium(vm.as_str(), family.medium(), &s, false)?;
        self.reload_medium(vm.as_str(), &info)?;
        undo.disarm();
        Ok(hint)
    }

    fn detach_disk(&self, vm: &VmCid, disk: &DiskCid) -> DriverResult<()> {
        let info = self.dumpxml(vm)?;
        let family = Self::family_of(&info, vm)?;
        let Some(d) = info.disks.iter().find(|d| d.volume.as_deref() == Some(disk.as_str())) else {
            return Err(DriverError::disk_not_attached(vm, disk));
        };
        let dev = ScsiDisk {
            pool: d.pool.clone().unwrap_or_else(|| self.pool().into()),
            volume: disk.to_string(),
            format: d.format.clone().unwrap_or_else(|| "qcow2".into()),
            target: d.target.unwrap_or(2),
            serial: d.serial.clone(),
        };
        let f = disk_xml_file(&dev)?;
        self.hotplug("detach-device", vm, &f, info.running).context(|| format!("cannot detach {disk} from {vm}"))?;
        let mut s = self.read_medium(vm.as_str(), family.medium())?;
        s.detach_persistent(disk.as_str());
        self.write_medium(vm.as_str(), family.medium(), &s, false)?;
        self.reload_medium(vm.as_str(), &info)
    }

    fn get_disks(&self, vm: &VmCid) -> DriverResult<Vec<DiskCid>> {
        let info = self.dumpxml(vm)?;
        Ok(info
            .disks
            .iter()
            .filter_map(|d| d.volume.as_deref())
            .filter(|v| is_ours(v, "disk-", 15))
            .filter_map(|v| DiskCid::new(v).ok())
            .collect())
    }

    fn set_disk_metadata(&self, cid: &DiskCid, metadata: &Metadata) -> DriverResult<()> {
        if !self.has_disk(cid)? {
            return Err(DriverError::disk_not_found(cid.to_string()));
        }
        let name = format!("{cid}.meta.json");
        let body = serde_json::to_vec_pretty(metadata).context(|| "cannot encode metadata".into())?;
        let mut tmp = tempfile::NamedTempFile::new().context(|| "cannot write a temporary file".into())?;
        std::io::Write::write_all(&mut tmp, &body).context(|| "cannot write a temporary file".into())?;
        self.vol_delete(&name)?;
        self.vol_create(&name, body.len() as u64, "raw", None)?;
        self.vol_upload(&name, tmp.path())
    }

    fn snapshot_disk(&self, cid: &DiskCid, metadata: &Metadata) -> DriverResult<SnapshotCid> {
        if !self.has_disk(cid)? {
            return Err(DriverError::disk_not_found(cid.to_string()));
        }
        let snap_cid = SnapshotCid::generate();
        let snap = snap_cid.as_str();
        let marker = self.begin(snap)?;
        info!("snapshot of {cid} as {snap} ({} metadata keys)", metadata.len());
        match self.virsh.run(["vol-clone", "--pool", self.pool(), cid.as_str(), snap]) {
            Ok(_) => {}
            // attached to a running VM: QEMU holds the image lock, so let QEMU copy it (block job)
            Err(e) if e.output().contains("lock") => self.snapshot_live(cid, snap)?,
            Err(e) => return Err(DriverError::failed(format!("cannot copy {cid} into snapshot {snap}"), e)),
        }
        marker.created(snap);
        Ok(snap_cid)
    }

    fn delete_snapshot(&self, cid: &SnapshotCid) -> DriverResult<()> {
        self.reap();
        if !is_ours(cid.as_str(), "snap-", 15) {
            return Err(DriverError::snapshot_not_found(format!("{cid} (not a snapshot CID of this CPI)")));
        }
        self.vol_delete(cid.as_str())?;
        Ok(())
    }
}

/// The XML of a disk device in a temporary file, for `attach-device` / `detach-device`.
fn disk_xml_file(dev: &ScsiDisk) -> DriverResult<tempfile::NamedTempFile> {
    let mut f =
        tempfile::Builder::new().suffix(".xml").tempfile().context(|| "cannot write a temporary file".into())?;
    std::io::Write::write_all(&mut f, domain::disk_xml(dev).as_bytes())
        .context(|| "cannot write a temporary file".into())?;
    Ok(f)
}

impl Libvirt {
    /// `virsh attach-device` / `detach-device` of the device in `xml`, on the config and, when the domain
    /// runs, live.
    fn hotplug(
        &self,
        verb: &str,
        vm: &VmCid,
        xml: &tempfile::NamedTempFile,
        running: bool,
    ) -> Result<(), crate::exec::ExecError> {
        self.virsh.cmd().args([verb, vm.as_str()]).arg(xml.path()).args(Self::scope(running)).run().map(|_| ())
    }
}

#[cfg(test)]
mod tests;
