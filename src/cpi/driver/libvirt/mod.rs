//! The libvirt driver: KVM/QEMU (or any libvirt hypervisor) through libvirt's own RPC protocol
//! ([`crate::cpi::libvirt_rpc`]), over the local socket, `qemu+ssh://` or `qemu+tls://`: one connection per CPI
//! call, no child process, no libvirt library, no `virsh` or `qemu-img` on this machine.
//!
//! Layout in one storage pool:
//! - stemcell `sc-<16 hex>-<os|osraw|vs|vsefi|vsraw|vsefiraw>`: the imported image (qcow2, or raw for the
//!   `raw` suffixes); the suffix records the stemcell family (OpenStack or vSphere conventions), EFI, and the
//!   volume format (`vs`/`vsefi`: qcow2, made by earlier versions);
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
pub mod connection;
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

pub use config::{check_context_uri, inherit_uri_files, LibvirtConfig, CONTEXT_KEYS};
use error::LibvirtError;
use naming::*;
use props::*;

use crate::common::ids::{random_hex, DiskCid, SnapshotCid, StemcellCid, VmCid};
use crate::cpi::agent_settings::{AgentSettings, Network, Networks};
use crate::cpi::config::AgentOptions;
use crate::cpi::driver::undo::Undo;
use crate::cpi::driver::{CallContext, CreateDisk, CreateVm, CreatedVm, Driver, Metadata};
use crate::cpi::error::{Context, DriverError, DriverResult};
use crate::cpi::inflight::{Inflight, Marker};
use crate::cpi::libvirt_rpc::{code, MetadataKind, StoragePool};
use crate::cpi::medium::{self, MediumKind};
use crate::cpi::stemcell::{self, DiskFormat, Family};
use crate::{info, warn};
use connection::Connection;
use domain::{DomainSpec, Nic, NicSource, ScsiDisk};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Formats `info` reports: OpenStack/KVM images and vSphere OVF images both import.
pub const STEMCELL_FORMATS: &[&str] = &["openstack-qcow2", "openstack-raw", "vsphere-ovf", "vsphere-ova"];

/// The libvirt backend.
pub struct Libvirt {
    cfg: LibvirtConfig,
    agent: AgentOptions,
    inflight: Inflight,
    conn: Connection,
    /// The storage pool's handle, once looked up.
    pool: Mutex<Option<StoragePool>>,
}

impl Libvirt {
    pub fn new(cfg: LibvirtConfig, agent: AgentOptions) -> Self {
        for key in cfg.deprecated_keys() {
            warn!("config: driver.{key} is deprecated and ignored: vmcpi speaks libvirt's protocol and reads disk images itself, and runs no {key}");
        }
        let conn = Connection::to_uri(&cfg.uri, cfg.base_dir.as_deref());
        Self::with_connection(cfg, agent, conn)
    }

    /// The driver over a given connection (tests: a scripted daemon).
    pub fn with_connection(cfg: LibvirtConfig, agent: AgentOptions, conn: Connection) -> Self {
        // markers say where their volumes live: another config sharing the state_dir leaves them alone
        let inflight =
            Inflight::new(&cfg.state_dir, MARKER_SHAPES).owned_by(&format!("libvirt {} pool {}", cfg.uri, cfg.pool));
        Libvirt { cfg, agent, inflight, conn, pool: Mutex::new(None) }
    }

    /// How many connections this driver made (0 or 1; tests).
    pub fn connections(&self) -> u32 {
        self.conn.opened()
    }
}

impl Driver for Libvirt {
    fn create_stemcell(&self, image: &Path, _cloud_properties: &Map<String, Value>) -> DriverResult<StemcellCid> {
        self.import_stemcell(image)
    }

    fn delete_stemcell(&self, cid: &StemcellCid) -> DriverResult<()> {
        if parse_stemcell_cid(cid.as_str()).is_none() {
            return Err(DriverError::stemcell_not_found(format!("{cid} (not a stemcell CID of this CPI)")));
        }
        self.reap();
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
        crate::cpi::driver::undo::create(format!("create_vm {cid}"), |undo| self.create_vm_inner(req, kind, &cid, undo))
            .settle(marker, cid.as_str())
    }

    fn delete_vm(&self, cid: &VmCid) -> DriverResult<()> {
        cid::vm(cid)?;
        self.reap();
        let vm = cid.as_str();
        // undefining forgets the attached persistent disks: they stay in the pool, untouched
        if !self.destroy_and_undefine(vm)? {
            info!("domain {vm} was already gone; removing what is left of it");
        }
        for v in [format!("{vm}-root"), format!("{vm}-ephemeral"), Self::medium_volume(vm)] {
            self.vol_delete(&v)?;
        }
        Ok(())
    }

    fn has_vm(&self, cid: &VmCid) -> DriverResult<bool> {
        if !cid.is_generated() {
            return Ok(false);
        }
        Ok(self.domain_opt(cid.as_str())?.is_some())
    }

    fn reboot_vm(&self, cid: &VmCid) -> DriverResult<()> {
        let (dom, info) = self.dumpxml(cid)?;
        let c = self.client()?;
        if info.running {
            c.domain_reset(&dom).map_err(|e| self.domain_error(cid, "cannot reset", e))?;
        } else {
            c.domain_start(&dom).map_err(|e| self.domain_error(cid, "cannot start", e))?;
            // a new QEMU process: its forwards are added again (a reset keeps them)
            self.apply_forwards(&dom, &info.forwards)?;
        }
        Ok(())
    }

    fn set_vm_metadata(&self, cid: &VmCid, metadata: &Metadata) -> DriverResult<()> {
        let (dom, info) = self.dumpxml(cid)?;
        let c = self.client()?;
        let scope = Self::scope(info.running);
        let xml = domain::tags_xml(metadata);
        c.domain_set_metadata(&dom, MetadataKind::Element, Some(&xml), Some("vmcpitags"), Some(domain::TAGS_NS), scope)
            .map_err(|e| self.domain_error(cid, "cannot set the metadata of", e))?;
        let title = metadata.get("name").cloned().or_else(|| {
            Some(format!("{}/{}", metadata.get("instance_group").or(metadata.get("job"))?, metadata.get("index")?))
        });
        if let Some(t) = title {
            let t: String = t.chars().map(|c| if c.is_control() { ' ' } else { c }).take(200).collect();
            c.domain_set_metadata(&dom, MetadataKind::Title, Some(&t), None, None, scope)
                .map_err(|e| self.domain_error(cid, "cannot set the title of", e))?;
        }
        Ok(())
    }

    fn limits(&self) -> &'static crate::cpi::driver::props::Limits {
        &LIMITS
    }

    fn create_disk(&self, req: &CreateDisk<'_>) -> DriverResult<DiskCid> {
        let CreateDisk { size_mib, cloud_properties, vm } = *req;
        let format = crate::cpi::driver::props::parse::<DiskProps>("disk cloud_properties", cloud_properties)?.format;
        if let Some(vm) = vm {
            // one host: the locality hint needs no action
            crate::debug!("create_disk for {vm}");
        }
        let cid = DiskCid::generate(DISK_HEX);
        let marker = self.begin(cid.as_str())?;
        self.ensure_pool()?;
        self.vol_create(cid.as_str(), size_mib << 20, format.as_str(), None)?;
        marker.created(cid.as_str());
        Ok(cid)
    }

    fn delete_disk(&self, cid: &DiskCid) -> DriverResult<()> {
        cid::disk(cid, DISK_HEX)?;
        self.reap();
        if !self.vol_delete(cid.as_str())? {
            info!("disk {cid} was already gone");
        }
        self.vol_delete(&format!("{cid}.meta.json"))?;
        Ok(())
    }

    fn resize_disk(&self, cid: &DiskCid, new_size_mib: u64) -> DriverResult<()> {
        cid::disk(cid, DISK_HEX)?;
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
        let vol = self.vol_opt(cid.as_str())?.ok_or_else(|| DriverError::disk_not_found(cid.to_string()))?;
        self.client()?
            .vol_resize(&vol, new, 0)
            .map_err(|e| error::rpc(format!("cannot resize {cid} (detach it first)"), e))?;
        Ok(())
    }

    fn has_disk(&self, cid: &DiskCid) -> DriverResult<bool> {
        Ok(cid.is_generated(DISK_HEX) && self.vol_info(cid.as_str())?.is_some())
    }

    fn attach_disk(&self, _ctx: &CallContext, vm: &VmCid, disk: &DiskCid) -> DriverResult<Value> {
        let (dom, info) = self.dumpxml(vm)?;
        let family = Self::family_of(&info, vm)?;
        cid::disk(disk, DISK_HEX)?;
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
            pool: self.pool_name().into(),
            volume: disk.to_string(),
            format,
            target,
            serial: Some(disk.to_string()),
        };
        let xml = domain::disk_xml(&dev);
        let c = self.client()?;
        let scope = Self::scope(info.running);
        c.domain_attach_device(&dom, &xml, scope)
            .map_err(|e| self.domain_error(vm, &format!("cannot attach {disk} to"), e))?;
        // the settings medium names the disk: an attachment it does not show is undone
        let mut undo = Undo::new(format!("attach_disk {disk} to {vm}"));
        undo.push(format!("the attachment of {disk}"), || {
            c.domain_detach_device(&dom, &xml, scope)
                .map_err(|e| error::rpc(format!("cannot detach {disk} from {vm}"), e))
        });
        let hint = hint_for(family, target);
        let mut s = self.read_medium(vm.as_str(), family.medium())?;
        s.attach_persistent(disk.as_str(), hint.clone());
        self.write_medium(vm.as_str(), family.medium(), &s)?;
        self.reload_medium(&dom, &info)?;
        undo.disarm();
        Ok(hint)
    }

    fn detach_disk(&self, vm: &VmCid, disk: &DiskCid) -> DriverResult<()> {
        let (dom, info) = self.dumpxml(vm)?;
        let family = Self::family_of(&info, vm)?;
        let Some(d) = info.disks.iter().find(|d| d.volume.as_deref() == Some(disk.as_str())) else {
            return Err(DriverError::disk_not_attached(vm, disk));
        };
        let dev = ScsiDisk {
            pool: d.pool.clone().unwrap_or_else(|| self.pool_name().into()),
            volume: disk.to_string(),
            format: d.format.clone().unwrap_or_else(|| "qcow2".into()),
            target: d.target.unwrap_or(2),
            serial: d.serial.clone(),
        };
        // the medium is read first: when it cannot be, the disk stays attached and nothing changed
        let mut s = self.read_medium(vm.as_str(), family.medium())?;
        self.client()?
            .domain_detach_device(&dom, &domain::disk_xml(&dev), Self::scope(info.running))
            .map_err(|e| self.domain_error(vm, &format!("cannot detach {disk} from"), e))?;
        s.detach_persistent(disk.as_str());
        self.write_medium(vm.as_str(), family.medium(), &s)?;
        self.reload_medium(&dom, &info)
    }

    fn get_disks(&self, vm: &VmCid) -> DriverResult<Vec<DiskCid>> {
        let (_, info) = self.dumpxml(vm)?;
        Ok(info
            .disks
            .iter()
            .filter_map(|d| d.volume.as_deref())
            .filter(|v| cid::ours(v, DiskCid::PREFIX, DISK_HEX))
            .filter_map(|v| DiskCid::new(v).ok())
            .collect())
    }

    fn set_disk_metadata(&self, cid: &DiskCid, metadata: &Metadata) -> DriverResult<()> {
        if !self.has_disk(cid)? {
            return Err(DriverError::disk_not_found(cid.to_string()));
        }
        let name = format!("{cid}.meta.json");
        let body = serde_json::to_vec_pretty(metadata)
            .map_err(|e| DriverError::failed("cannot encode metadata", e).with_retry(false))?;
        // a new volume each time: an upload goes into new volumes only
        self.vol_delete(&name)?;
        let vol = self.vol_create_sparse(&name, body.len() as u64)?;
        self.vol_upload(&vol, &mut body.as_slice(), false)?;
        Ok(())
    }

    fn snapshot_disk(&self, cid: &DiskCid, metadata: &Metadata) -> DriverResult<SnapshotCid> {
        cid::disk(cid, DISK_HEX)?;
        let (cap, format) = self.vol_info(cid.as_str())?.ok_or_else(|| DriverError::disk_not_found(cid.to_string()))?;
        let snap_cid = SnapshotCid::generate();
        let snap = snap_cid.as_str();
        let marker = self.begin(snap)?;
        info!("snapshot of {cid} as {snap} ({} metadata keys)", metadata.len());
        let (c, pool) = (self.client()?, self.pool()?);
        let from = self.vol_opt(cid.as_str())?.ok_or_else(|| DriverError::disk_not_found(cid.to_string()))?;
        match c.vol_create_xml_from(&pool, &domain::volume_xml(snap, cap, &format, None, false), &from, 0) {
            Ok(_) => {}
            // attached to a running VM: QEMU holds the image lock, so let QEMU copy it (block job)
            Err(e) if e.remote().and_then(|r| r.message.as_deref()).is_some_and(|m| m.contains("lock")) => {
                // libvirt may leave the half-made volume behind
                self.vol_delete(snap)?;
                self.snapshot_live(cid, snap, cap)?
            }
            Err(e) => return Err(error::rpc(format!("cannot copy {cid} into snapshot {snap}"), e)),
        }
        marker.created(snap);
        Ok(snap_cid)
    }

    fn delete_snapshot(&self, cid: &SnapshotCid) -> DriverResult<()> {
        cid::snapshot(cid)?;
        self.reap();
        self.vol_delete(cid.as_str())?;
        Ok(())
    }
}

impl Libvirt {
    /// A failed call on domain `vm` (`what` reads "cannot … {vm}"): VmNotFound when libvirt says it is gone.
    fn domain_error(&self, vm: &VmCid, what: &str, e: crate::cpi::libvirt_rpc::Error) -> DriverError {
        if e.code() == Some(code::NO_DOMAIN) {
            return DriverError::vm_not_found(vm.to_string());
        }
        error::rpc(format!("{what} {vm}"), e)
    }
}

#[cfg(test)]
mod tests;
