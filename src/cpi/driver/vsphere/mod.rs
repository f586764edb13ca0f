//! The vSphere driver: vCenter or a standalone ESXi host over the vSphere Web Services SOAP API, spoken
//! directly with `ureq` and `quick-xml`.
//!
//! Layers: [`soap`] (envelope writer, body-or-fault decoding), [`methods`] (one typed request per call),
//! [`client`] (HTTP, session cookie, property reads, task waiting with WaitForUpdatesEx, datastore files),
//! [`tls`], [`inventory`] (finding things), [`import`] (stemcells through ImportVApp + NFC), [`bootstrap`]
//! (guest operations), [`session`] (the session kept in `state_dir` between CPI processes: a warm call
//! sends no login and no logout).
//!
//! Names: stemcell `sc-<20 hex>` (a VM in the template folder, with snapshot `initial` on vCenter); VM
//! `vm-<20 hex>` in the VM folder, its settings in `guestinfo.userdata` and `[ds] <vm>/env-a.iso` or `env-b.iso` (the first
//! CD-ROM); disk `disk-<20 hex>`, the file `[ds] <disk_folder>/<cid>.vmdk` with its metadata in
//! `<cid>.meta.json` beside it.
//!
//! On vCenter a VM is a linked clone of the stemcell's snapshot (`createNewChildDiskBacking`). A standalone
//! ESXi host has no CloneVM, so there the VM is built with CreateVM and a root disk that is a child of the
//! stemcell's disk. CPU, memory, NICs, the ephemeral disk and the CD-ROM are set by one reconfigure, then
//! the VM is powered on. Persistent disks go on the root disk's SCSI controller; the hint is the unit
//! number, which vSphere stemcells' agents resolve as the SCSI target.
pub mod bootstrap;
mod cleanup;
pub mod client;
pub mod config;
mod create;
mod disks;
pub(crate) mod error;
pub mod import;
pub mod inventory;
mod metadata;
pub mod methods;
mod naming;
mod props;
pub mod session;
mod settings;
pub mod soap;
mod stemcell;
mod tcp;
pub mod tls;
mod vms;

pub use config::VsphereConfig;
use error::VsphereError;
use naming::*;
use props::*;
use settings::*;

use crate::common::ids::{DiskCid, SnapshotCid, StemcellCid, VmCid};
use crate::cpi::agent_settings::{vmware_mac, AgentSettings, Networks};
use crate::cpi::config::AgentOptions;
use crate::cpi::driver::undo::Undo;
use crate::cpi::driver::{CallContext, CreateDisk, CreateVm, CreatedVm, Driver, Metadata};
use crate::cpi::error::{DriverError, DriverResult, ErrorKind};
use crate::cpi::inflight::{Inflight, Marker};
use crate::cpi::medium::{self, MediumKind};
use crate::{info, warn};
use client::ClientError;
use inventory::{ctx_err, Dev, Inv, VmInfo, VM_PROPS, VM_SETTINGS_PROPS};
use methods::*;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use soap::{FaultKind, MoRef, Node};
use std::path::Path;

/// Formats `info` reports.
pub const STEMCELL_FORMATS: &[&str] = &["vsphere-ovf", "vsphere-ova"];

pub struct Vsphere {
    cfg: VsphereConfig,
    agent: AgentOptions,
    inflight: Inflight,
}

impl Vsphere {
    pub fn new(cfg: VsphereConfig, agent: AgentOptions) -> Self {
        // the reaper looks for VMs in these folders: markers of a config with other folders are not its own
        let owner = format!(
            "vsphere {} datacenter {} vm_folder {} template_folder {} disk_folder {}",
            cfg.base_url(),
            cfg.datacenter,
            cfg.vm_folder,
            cfg.template_folder,
            cfg.disk_folder
        );
        let inflight = Inflight::new(&cfg.inflight_dir(), MARKER_SHAPES).owned_by(&owner);
        Vsphere { cfg, agent, inflight }
    }
}

pub use crate::common::encoding::base64;

impl Driver for Vsphere {
    fn create_stemcell(&self, image: &Path, _cloud_properties: &Map<String, Value>) -> DriverResult<StemcellCid> {
        self.upload_stemcell(image, _cloud_properties)
    }

    fn delete_stemcell(&self, cid: &StemcellCid) -> DriverResult<()> {
        if !valid_id(cid.as_str(), StemcellCid::PREFIX) {
            warn!("stemcell {cid} is not one of ours; nothing to delete");
            return Ok(());
        }
        let inv = self.open()?;
        let Some(vm) = inv.find_vm(&self.cfg.template_folder, cid.as_str())? else {
            info!("stemcell {cid} is already gone");
            return Ok(());
        };
        // a stemcell is never powered on, has no persistent disks and no files but its own, which
        // Destroy_Task removes with it: one task, no property read. One that someone powered on goes the
        // long way (power off, destroy, remove its folder).
        match inv.s.run_task(&Destroy { this: vm.clone() }, "destroy stemcell") {
            Ok(_) => Ok(()),
            Err(e) if e.is_fault(&FaultKind::ManagedObjectNotFound) => Ok(()),
            Err(e) if e.is_fault(&FaultKind::InvalidPowerState) || e.is_fault(&FaultKind::InvalidState) => {
                info!("stemcell {cid} cannot be destroyed as it is ({e}); powering it off first");
                match inv.vm_info(&vm)? {
                    Some(info) => self.destroy_vm(&inv, &info),
                    None => Ok(()),
                }
            }
            Err(e) => Err(DriverError::failed(format!("cannot destroy stemcell {cid}"), e)),
        }
    }

    fn create_vm(&self, _ctx: &CallContext, req: &CreateVm) -> DriverResult<CreatedVm> {
        // the bootstrap block is read on its own, so that a mistake in it is reported as such
        let mut top = req.cloud_properties.clone();
        // bosh-vmrun-cpi's names for the bootstrap keys are read as ours
        for note in crate::cpi::compat::vm_cloud_properties(&mut top, false)
            .map_err(|e| DriverError::invalid("VM cloud_properties", e))?
        {
            info!("{note}");
        }
        let bootstrap = top.remove("bootstrap");
        let mut props: VmProps = crate::cpi::driver::props::parse("VM cloud_properties", &top)?;
        if let Some(b) = bootstrap.filter(|b| !b.is_null()) {
            props.bootstrap = Some(serde_json::from_value(b).map_err(|e| {
                DriverError::invalid("VM cloud_properties.bootstrap", crate::common::logger::redact(&e.to_string()))
            })?);
        }
        LIMITS.check(props.cpu, props.ram, props.disk)?;
        if !valid_id(req.stemcell.as_str(), StemcellCid::PREFIX) {
            return Err(DriverError::stemcell_not_found(format!("{} (not a stemcell CID of this CPI)", req.stemcell)));
        }
        let inv = self.open()?;
        let cid = VmCid::generate();
        let name = cid.to_string();
        let marker = self.begin(&inv, &name)?;
        let outcome = crate::cpi::driver::undo::create(format!("create_vm {name}"), |undo| {
            self.create_vm_inner(&inv, req, &props, &cid, &marker, undo)
        });
        if outcome.result.is_ok() {
            info!("created VM {name}");
            crate::cpi::killpoint::kill_point("vsphere.create_vm.done");
        }
        // log out first: the marker goes only when nothing but writing the response is left to do
        drop(inv);
        crate::cpi::killpoint::kill_point("vsphere.create_vm.session_closed");
        outcome.settle(marker, &name)
    }

    fn delete_vm(&self, cid: &VmCid) -> DriverResult<()> {
        check_vm(cid)?;
        let inv = self.open()?;
        match self.find_vm(&inv, cid)? {
            Some(vm) => self.destroy_vm(&inv, &vm),
            None => {
                info!("VM {cid} is already gone");
                Ok(())
            }
        }
    }

    fn has_vm(&self, cid: &VmCid) -> DriverResult<bool> {
        if check_vm(cid).is_err() {
            return Ok(false);
        }
        let inv = self.open()?;
        if inv.find_vm(&self.cfg.vm_folder, cid.as_str())?.is_some() {
            return Ok(true);
        }
        // not there: make sure it is not the datacenter that is wrong
        inv.dc()?;
        Ok(false)
    }

    fn reboot_vm(&self, cid: &VmCid) -> DriverResult<()> {
        check_vm(cid)?;
        let inv = self.open()?;
        let vm = self.require_vm(&inv, cid)?;
        if vm.power_state == "poweredOff" {
            return inv
                .s
                .run_task(&PowerOnVm { this: vm.vm.clone() }, "power on")
                .map(|_| ())
                .map_err(ctx_err(format!("cannot power on {cid}")));
        }
        match inv.s.call(&RebootGuest { this: vm.vm.clone() }) {
            Ok(_) => Ok(()),
            Err(e) => {
                info!("soft reboot of {cid} not possible ({e}); resetting");
                inv.s
                    .run_task(&ResetVm { this: vm.vm.clone() }, "reset")
                    .map(|_| ())
                    .map_err(ctx_err(format!("cannot reset {cid}")))
            }
        }
    }

    fn set_vm_metadata(&self, cid: &VmCid, metadata: &Metadata) -> DriverResult<()> {
        check_vm(cid)?;
        self.write_vm_metadata(cid, metadata)
    }

    fn limits(&self) -> &'static crate::cpi::driver::props::Limits {
        &LIMITS
    }

    fn create_disk(&self, req: &CreateDisk<'_>) -> DriverResult<DiskCid> {
        let CreateDisk { size_mib, cloud_properties, vm } = *req;
        self.make_disk(size_mib, cloud_properties, vm)
    }

    fn delete_disk(&self, cid: &DiskCid) -> DriverResult<()> {
        check_disk(cid)?;
        let inv = self.open()?;
        let Some(ds) = self.locate_disk(&inv, cid)? else {
            info!("disk {cid} is already gone");
            return Ok(());
        };
        let req = DeleteVirtualDisk {
            this: Self::vdm(&inv)?,
            name: format!("[{ds}] {}", self.disk_path(cid.as_str())),
            datacenter: inv.dc()?,
        };
        match inv.s.run_task(&req, "delete disk") {
            Ok(_) => {}
            Err(e) if e.is_fault(&FaultKind::FileNotFound) => {}
            Err(e) => return Err(DriverError::failed(format!("cannot delete disk {cid}"), e)),
        }
        // the metadata file exists only when set_disk_metadata wrote one: a HEAD is cheaper than a delete task
        let meta = format!("{}/{cid}.meta.json", self.cfg.disk_folder);
        if inv
            .s
            .file_exists(&self.cfg.datacenter, &ds, &meta)
            .map_err(ctx_err(format!("cannot look for the metadata of {cid}")))?
        {
            self.delete_file(&inv, &ds, &meta)?;
        }
        Ok(())
    }

    fn resize_disk(&self, cid: &DiskCid, new_size_mib: u64) -> DriverResult<()> {
        check_disk(cid)?;
        let new_size_mib = disk_size("new disk size", new_size_mib)?;
        let inv = self.open()?;
        let ds = self.locate_disk(&inv, cid)?.ok_or_else(|| DriverError::disk_not_found(cid.to_string()))?;
        let req = ExtendVirtualDisk {
            this: Self::vdm(&inv)?,
            name: format!("[{ds}] {}", self.disk_path(cid.as_str())),
            datacenter: inv.dc()?,
            new_capacity_kb: new_size_mib * 1024,
        };
        match inv.s.run_task(&req, "extend disk") {
            Ok(_) => Ok(()),
            Err(e @ ClientError::Soap { .. })
                if e.is_fault(&FaultKind::MethodNotFound) || e.is_fault(&FaultKind::NotSupported) =>
            {
                Err(DriverError::not_supported(format!(
                    "resize_disk: the server cannot extend virtual disks ({e}); the director copies the disk instead"
                )))
            }
            Err(e) => Err(DriverError::failed(format!("cannot resize disk {cid} to {new_size_mib} MiB"), e)),
        }
    }

    fn has_disk(&self, cid: &DiskCid) -> DriverResult<bool> {
        if check_disk(cid).is_err() {
            return Ok(false);
        }
        let inv = self.open()?;
        Ok(self.locate_disk(&inv, cid)?.is_some())
    }

    fn attach_disk(&self, _ctx: &CallContext, vm: &VmCid, disk: &DiskCid) -> DriverResult<Value> {
        check_vm(vm)?;
        check_disk(disk)?;
        let inv = self.open()?;
        let info =
            self.find_vm_with(&inv, vm, VM_SETTINGS_PROPS)?.ok_or_else(|| DriverError::vm_not_found(vm.to_string()))?;
        if let Some(d) =
            info.devices.iter().find(|d| d.is_disk() && self.persistent_cid(d).as_deref() == Some(disk.as_str()))
        {
            info!("disk {disk} is already attached to {vm}");
            return Ok(json!(d.unit.unwrap_or(0).to_string()));
        }
        let ds = self
            .locate_disk_near(&inv, disk, &info.datastore)?
            .ok_or_else(|| DriverError::disk_not_found(disk.to_string()))?;
        let controller =
            info.root_controller().ok_or_else(|| DriverError::other(format!("VM {vm} has no SCSI controller")))?;
        let unit = info
            .free_unit(controller, &[])
            .ok_or_else(|| DriverError::other(format!("VM {vm} has no free SCSI unit for disk {disk}")))?;
        let dev = Device::Disk {
            key: -1,
            controller_key: controller,
            unit,
            capacity_kb: 0,
            file_name: format!("[{ds}] {}", self.disk_path(disk.as_str())),
            parent: None,
        };
        let hint = json!(unit.to_string());
        let mut settings = self.read_settings(&inv, &info)?;
        settings.attach_persistent(disk.as_str(), hint.clone());
        crate::cpi::timing::mark("lookups");
        // the disk, the new settings medium and guestinfo in one reconfigure
        let SettingsChange { cdrom, extra_config, legacy } = self.settings_change(&inv, &info, &settings)?;
        crate::cpi::timing::mark("settings ISO");
        let spec =
            VmConfigSpec { device_change: vec![DeviceChange::add(dev), cdrom], extra_config, ..Default::default() };
        inv.s
            .run_task(&ReconfigVm { this: info.vm.clone(), spec }, "attach disk")
            .map_err(ctx_err(format!("cannot attach disk {disk} to {vm}")))?;
        if let Some((ds, path)) = legacy {
            self.delete_file(&inv, &ds, &path)?;
        }
        Ok(hint)
    }

    fn detach_disk(&self, vm: &VmCid, disk: &DiskCid) -> DriverResult<()> {
        check_vm(vm)?;
        if !valid_id(disk.as_str(), DiskCid::PREFIX) {
            return Err(DriverError::disk_not_attached(vm, disk));
        }
        let inv = self.open()?;
        let info =
            self.find_vm_with(&inv, vm, VM_SETTINGS_PROPS)?.ok_or_else(|| DriverError::vm_not_found(vm.to_string()))?;
        let dev = info
            .devices
            .iter()
            .find(|d| d.is_disk() && self.persistent_cid(d).as_deref() == Some(disk.as_str()))
            .ok_or_else(|| DriverError::disk_not_attached(vm, disk))?;
        let change = DeviceChange {
            operation: Operation::Remove,
            create_file: false,
            device: Device::Existing(dev.node.clone()),
        };
        let mut settings = self.read_settings(&inv, &info)?;
        settings.detach_persistent(disk.as_str());
        let SettingsChange { cdrom, extra_config, legacy } = self.settings_change(&inv, &info, &settings)?;
        let spec = VmConfigSpec { device_change: vec![cdrom, change], extra_config, ..Default::default() };
        inv.s
            .run_task(&ReconfigVm { this: info.vm.clone(), spec }, "detach disk")
            .map_err(ctx_err(format!("cannot detach disk {disk} from {vm}")))?;
        if let Some((ds, path)) = legacy {
            self.delete_file(&inv, &ds, &path)?;
        }
        Ok(())
    }

    fn get_disks(&self, vm: &VmCid) -> DriverResult<Vec<DiskCid>> {
        check_vm(vm)?;
        let inv = self.open()?;
        let info = self.require_vm(&inv, vm)?;
        info.devices
            .iter()
            .filter(|d| d.is_disk())
            .filter_map(|d| self.persistent_cid(d))
            .map(|c| DiskCid::new(c).map_err(DriverError::other))
            .collect()
    }

    fn set_disk_metadata(&self, cid: &DiskCid, metadata: &Metadata) -> DriverResult<()> {
        check_disk(cid)?;
        let inv = self.open()?;
        let ds = self.locate_disk(&inv, cid)?.ok_or_else(|| DriverError::disk_not_found(cid.to_string()))?;
        let body = serde_json::to_vec(metadata).map_err(|e| DriverError::failed("cannot encode disk metadata", e))?;
        inv.s
            .put_file(&self.cfg.datacenter, &ds, &format!("{}/{cid}.meta.json", self.cfg.disk_folder), &body)
            .map_err(ctx_err(format!("cannot write metadata of {cid}")))
    }

    fn snapshot_disk(&self, cid: &DiskCid, _metadata: &Metadata) -> DriverResult<SnapshotCid> {
        Err(super::no_disk_snapshots(&format!(
            "snapshot_disk of {cid}: vSphere snapshots whole VMs, not detached virtual disks (first-class disks would be needed), and the simulator cannot prove it"
        )))
    }
}

#[cfg(test)]
mod tests;
