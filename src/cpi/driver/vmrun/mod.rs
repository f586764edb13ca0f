//! The vmrun driver: VMware Workstation, Fusion and Player through `vmrun`, `ovftool` and
//! `vmware-vdiskmanager`, on the CPI's own host or on a POSIX host over SSH ([`crate::cpi::transport`]).
//!
//! The store (`vm_store_path`, on the hypervisor host) is the only state:
//! - `stemcells/sc-<16 hex>/sc-….vmx` — the imported stemcell, with snapshot `vmcpi-base`;
//! - `vms/vm-<20 hex>/vm-….vmx` — a linked clone of it, plus `env.iso` (the agent settings on the stemcell's
//!   own CD-ROM device), `env.json` (the same settings, for later edits) and `ephemeral.vmdk`;
//! - `disks/disk-<15 hex>.vmdk` and `disk-….json` (size and metadata);
//! - `locks/*.lock` — flock files; `pending/<cid>` — a create in progress (see below).
//!
//! Disks sit on SCSI controller 0: root at unit 0, ephemeral at 1, persistent disks at 2 and up (7 is the
//! controller's own id); the vSphere stemcell's agent resolves the unit number given as the disk hint.
//!
//! Concurrency: each VM has a lock held for every change to it; clones of a stemcell are serialised by the
//! stemcell's lock (VMware locks the source while cloning). A process holds at most one VM lock and takes
//! a stemcell lock only inside its VM lock, always in that order, so locks cannot deadlock; every wait is
//! bounded by `lock_timeout_seconds`.
//!
//! Failed creates: create_vm, create_stemcell and create_disk record `pending/<cid>` and hold the CID's lock until they
//! finish. On failure they remove what they made; if even that fails (the host became unreachable, the
//! process was killed), the next create on the store finds the pending entry, sees that nobody holds its
//! lock, and removes it.
mod cleanup;
mod config;
mod create;
mod disks;
pub(crate) mod error;
pub(crate) mod host;
mod import;
mod naming;
mod props;
mod settings;
mod store;
pub mod vmx;

use cleanup::*;
pub use config::{VmrunConfig, CONTEXT_KEYS};
use disks::*;
use error::VmrunError;
use naming::*;
use props::*;

use crate::common::ids::{random_hex, DiskCid, SnapshotCid, StemcellCid, VmCid};
use crate::cpi::agent_settings::{AgentSettings, Networks};
use crate::cpi::config::AgentOptions;
use crate::cpi::driver::undo::Undo;
use crate::cpi::driver::{CallContext, CreateDisk, CreateVm, CreatedVm, Driver, Metadata};
use crate::cpi::error::{Context, DriverError, DriverResult, ErrorKind};
use crate::cpi::inflight::{Inflight, Marker};
use crate::cpi::medium::{self, MediumKind};
use crate::cpi::stemcell::{self, Family};
use crate::cpi::transport::{self, join, Local, LockGuard, Ssh, SshConfig, Transport, TransportError};
use crate::{info, warn};
use host::{Host, BASE_SNAPSHOT};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vmx::Vmx;

/// vSphere stemcells (OVF + stream-optimised VMDK) are what VMware's desktop products run.
pub const STEMCELL_FORMATS: &[&str] = &["vsphere-ovf", "vsphere-ova"];

/// The vmrun backend.
pub struct Vmrun {
    cfg: VmrunConfig,
    agent: AgentOptions,
    t: Box<dyn Transport>,
}

impl Vmrun {
    pub fn new(cfg: VmrunConfig, agent: AgentOptions) -> Self {
        let t: Box<dyn Transport> = match &cfg.ssh {
            Some(s) => Box::new(Ssh::new(s.clone())),
            None => Box::new(Local::new()),
        };
        Vmrun { cfg, agent, t }
    }

    /// The driver over a given transport (the in-process fake in unit tests).
    pub fn with_transport(cfg: VmrunConfig, agent: AgentOptions, t: Box<dyn Transport>) -> Self {
        Vmrun { cfg, agent, t }
    }
}

impl Driver for Vmrun {
    fn create_stemcell(&self, image: &Path, _cloud_properties: &Map<String, Value>) -> DriverResult<StemcellCid> {
        self.import_stemcell(image)
    }

    fn delete_stemcell(&self, cid: &StemcellCid) -> DriverResult<()> {
        self.remove_stemcell(cid)
    }

    fn create_vm(&self, _ctx: &CallContext, req: &CreateVm) -> DriverResult<CreatedVm> {
        let mut cloud_properties = req.cloud_properties.clone();
        for note in crate::cpi::compat::vm_cloud_properties(&mut cloud_properties, true)
            .map_err(|e| DriverError::invalid("VM cloud_properties", e))?
        {
            info!("{note}");
        }
        let props: VmProps = crate::cpi::driver::props::parse("VM cloud_properties", &cloud_properties)?;
        LIMITS.check(props.cpu, props.ram, props.disk)?;
        if let Some(b) = &props.bootstrap {
            b.check_script_path()?;
            b.login()?;
        }
        let sc = req.stemcell.as_str();
        if !cid::ours(sc, StemcellCid::PREFIX, STEMCELL_HEX)
            || !self.tr(|| "cannot look for the stemcell".into(), self.t.exists(&self.stemcell_vmx(sc)))?
        {
            return Err(DriverError::stemcell_not_found(sc.to_string()));
        }
        // network errors first: nothing is made for a request that cannot work
        let mut networks = req.networks.clone();
        self.add_nics(&mut Vmx::default(), &mut networks.clone())?;
        self.sweep_abandoned()?;
        let cid = VmCid::generate();
        let vm = cid.to_string();
        info!("creating {vm} from {sc}");
        let _vm_lock = self.lock(&vm)?;
        self.mark_pending(&vm)?;
        let mut undo = Undo::new(format!("create_vm {vm}"));
        self.undo_vm(&mut undo, &vm);
        self.create_vm_inner(req, &vm, &props, &mut networks)?;
        self.clear_pending(&vm)?;
        undo.disarm();
        crate::debug!("{vm}: created; from here the response is the only record of it");
        Ok(CreatedVm { cid, networks })
    }

    fn delete_vm(&self, cid: &VmCid) -> DriverResult<()> {
        cid::vm(cid)?;
        let _lock = self.lock(cid.as_str())?;
        if !self.tr(|| "cannot look for the VM".into(), self.t.exists(&self.vm_dir(cid.as_str())))? {
            info!("{cid} was already gone");
            self.forget_lock(cid.as_str());
            return Ok(());
        }
        self.destroy_vm_files(cid.as_str())?;
        self.forget_lock(cid.as_str());
        Ok(())
    }

    fn has_vm(&self, cid: &VmCid) -> DriverResult<bool> {
        if !cid.is_generated() {
            return Ok(false);
        }
        let vmx = self.vm_vmx(cid.as_str());
        self.tr(|| format!("cannot look for {vmx}"), self.t.exists(&vmx))
    }

    fn reboot_vm(&self, cid: &VmCid) -> DriverResult<()> {
        let vmx = self.check_vm(cid)?;
        let _lock = self.lock(cid.as_str())?;
        let h = self.host();
        if !h.is_running(&vmx)? {
            return h.start(&vmx);
        }
        let soft = h.vmrun_raw(
            None,
            &["reset", &vmx, "soft"],
            Some(Duration::from_secs(self.cfg.soft_shutdown_timeout_seconds)),
        )?;
        if !soft.success() {
            info!("soft reset of {cid} failed ({}), resetting hard", soft.message());
            h.vmrun(&["reset", &vmx, "hard"])?;
        }
        Ok(())
    }

    fn set_vm_metadata(&self, cid: &VmCid, metadata: &Metadata) -> DriverResult<()> {
        let vmx = self.check_vm(cid)?;
        let _lock = self.lock(cid.as_str())?;
        let mut pairs: Vec<(String, String)> = metadata
            .iter()
            .map(|(k, v)| {
                let key: String = k
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
                    .collect();
                (format!("guestinfo.bosh.{key}"), v.chars().filter(|c| !c.is_control()).take(1024).collect())
            })
            .collect();
        let name = metadata.get("name").cloned().or_else(|| {
            Some(format!("{}/{}", metadata.get("instance_group").or(metadata.get("job"))?, metadata.get("index")?))
        });
        if let Some(n) = name {
            pairs.push((
                "displayName".into(),
                format!("{n} ({cid})").chars().filter(|c| !c.is_control()).take(200).collect(),
            ));
        }
        let h = self.host();
        if h.is_running(&vmx)? {
            // a running VM's .vmx is VMware's: change it through vmrun, which persists runtimeConfig
            h.write_variables(&vmx, &pairs)?;
        } else {
            let mut v = self.read_vmx(&vmx)?;
            for (k, val) in &pairs {
                v.set(k, val.clone());
            }
            self.write_vmx(&vmx, &v)?;
        }
        Ok(())
    }

    fn limits(&self) -> &'static crate::cpi::driver::props::Limits {
        &LIMITS
    }

    fn create_disk(&self, req: &CreateDisk<'_>) -> DriverResult<DiskCid> {
        let CreateDisk { size_mib, cloud_properties, vm: _ } = *req;
        let _props: DiskProps = crate::cpi::driver::props::parse("disk cloud_properties", cloud_properties)?;
        if size_mib == 0 || size_mib > 8 << 20 {
            return Err(DriverError::invalid("disk size", format!("must be 1 MiB to 8 TiB, got {size_mib} MiB")));
        }
        self.sweep_abandoned()?;
        let cid = DiskCid::generate(DISK_HEX);
        let disk = cid.as_str();
        let dir = self.store("disks");
        self.tr(|| format!("cannot create {dir}"), self.t.mkdir_all(&dir))?;
        // like a VM: a pending entry under the disk's lock, so a kill between vmware-vdiskmanager and the
        // disk's record leaves nothing that the next create's sweep does not remove
        let _disk_lock = self.lock(disk)?;
        self.mark_pending(disk)?;
        let mut undo = Undo::new(format!("create_disk {disk}"));
        self.undo_disk(&mut undo, disk);
        self.host().create_vmdk(&self.disk_path(disk), size_mib)?;
        self.write_disk_record(disk, &DiskRecord { size_mib, metadata: Metadata::new() })?;
        self.clear_pending(disk)?;
        undo.disarm();
        // disks are not locked after their create (attach/detach lock the VM): the file goes with the lock held
        self.forget_lock(disk);
        crate::debug!("{disk}: created; from here the response is the only record of it");
        Ok(cid)
    }

    fn delete_disk(&self, cid: &DiskCid) -> DriverResult<()> {
        if !cid.is_generated(DISK_HEX) {
            return Err(DriverError::disk_not_found(format!("{cid} (not a disk CID of this CPI)")));
        }
        let path = match self.check_disk(cid) {
            Ok(p) => p,
            Err(e) if e.kind() == ErrorKind::DiskNotFound => {
                info!("{cid} was already gone");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if self.tr(|| "cannot check the disk lock".into(), self.t.exists(&format!("{path}.lck")))? {
            return Err(
                VmrunError::DiskInUse { disk: cid.to_string(), lock: format!("{path}.lck"), when: "first" }.into()
            );
        }
        self.tr(|| format!("cannot remove {path}"), self.t.remove_file(&path))?;
        self.tr(|| "cannot remove the disk record".into(), self.t.remove_file(&self.disk_record(cid.as_str())))?;
        Ok(())
    }

    fn resize_disk(&self, cid: &DiskCid, new_size_mib: u64) -> DriverResult<()> {
        let path = self.check_disk(cid)?;
        let mut rec = self.read_disk_record(cid.as_str())?;
        if new_size_mib < rec.size_mib {
            return Err(DriverError::not_supported(format!(
                "shrinking {cid} from {} to {new_size_mib} MiB",
                rec.size_mib
            )));
        }
        if new_size_mib == rec.size_mib {
            return Ok(());
        }
        if self.tr(|| "cannot check the disk lock".into(), self.t.exists(&format!("{path}.lck")))? {
            return Err(VmrunError::DiskInUse {
                disk: cid.to_string(),
                lock: format!("{path}.lck"),
                when: "before resizing",
            }
            .into());
        }
        self.host().grow_vmdk(&path, new_size_mib)?;
        rec.size_mib = new_size_mib;
        self.write_disk_record(cid.as_str(), &rec)
    }

    fn has_disk(&self, cid: &DiskCid) -> DriverResult<bool> {
        match self.check_disk(cid) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::DiskNotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn attach_disk(&self, _ctx: &CallContext, vm: &VmCid, disk: &DiskCid) -> DriverResult<Value> {
        let vmx = self.check_vm(vm)?;
        let path = self.check_disk(disk)?;
        let _lock = self.lock(vm.as_str())?;
        let current = self.read_vmx(&vmx)?;
        if let Some((unit, _)) = current.scsi_disks(0).into_iter().find(|(_, f)| *f == path) {
            info!("{disk} is already attached to {vm}");
            return Ok(json!(unit.to_string()));
        }
        let mut settings = self.read_settings(vm.as_str())?;
        let unit = self.edit_stopped(&vmx, |v| {
            let used: Vec<u32> = v.scsi_disks(0).into_iter().map(|(u, _)| u).collect();
            let unit = PERSISTENT_UNITS
                .into_iter()
                .find(|u| !used.contains(u))
                .ok_or_else(|| VmrunError::NoFreeUnit { vm: vm.to_string() })?;
            v.set(&format!("scsi0:{unit}.present"), "TRUE");
            v.set(&format!("scsi0:{unit}.fileName"), path.clone());
            v.set(&format!("scsi0:{unit}.mode"), "independent-persistent");
            settings.attach_persistent(disk.as_str(), json!(unit.to_string()));
            // the settings change with the .vmx, while the VM is off
            Ok((unit, self.settings_files(vm.as_str(), &settings)?))
        })?;
        Ok(json!(unit.to_string()))
    }

    fn detach_disk(&self, vm: &VmCid, disk: &DiskCid) -> DriverResult<()> {
        let vmx = self.check_vm(vm)?;
        let _lock = self.lock(vm.as_str())?;
        let path = self.disk_path(disk.as_str());
        if !self.read_vmx(&vmx)?.scsi_disks(0).iter().any(|(_, f)| *f == path) {
            return Err(DriverError::disk_not_attached(vm, disk));
        }
        let mut settings = self.read_settings(vm.as_str())?;
        self.edit_stopped(&vmx, |v| {
            if let Some((unit, _)) = v.scsi_disks(0).into_iter().find(|(_, f)| *f == path) {
                v.remove_prefix(&format!("scsi0:{unit}."));
            }
            settings.detach_persistent(disk.as_str());
            Ok(((), self.settings_files(vm.as_str(), &settings)?))
        })
    }

    fn get_disks(&self, vm: &VmCid) -> DriverResult<Vec<DiskCid>> {
        let vmx = self.check_vm(vm)?;
        let disks_dir = self.store("disks/");
        Ok(self
            .read_vmx(&vmx)?
            .scsi_disks(0)
            .into_iter()
            .filter_map(|(_, f)| f.strip_prefix(&disks_dir)?.strip_suffix(".vmdk").map(str::to_string))
            .filter(|c| cid::ours(c, DiskCid::PREFIX, DISK_HEX))
            .filter_map(|c| DiskCid::new(c).ok())
            .collect())
    }

    fn set_disk_metadata(&self, cid: &DiskCid, metadata: &Metadata) -> DriverResult<()> {
        self.check_disk(cid)?;
        let mut rec = self.read_disk_record(cid.as_str())?;
        rec.metadata = metadata.clone();
        self.write_disk_record(cid.as_str(), &rec)
    }

    fn snapshot_disk(&self, cid: &DiskCid, _metadata: &Metadata) -> DriverResult<SnapshotCid> {
        Err(super::no_disk_snapshots(&format!(
            "snapshot_disk of {cid}: vmrun snapshots whole VMs, not single disks, and copying an attached disk under a running VM is not consistent"
        )))
    }
}

#[cfg(test)]
mod tests;
