//! The vSphere driver: vCenter or a standalone ESXi host over the vSphere Web Services SOAP API, spoken
//! directly with `ureq` and `quick-xml`.
//!
//! Layers: [`soap`] (envelope writer, body-or-fault decoding), [`methods`] (one typed request per call),
//! [`client`] (HTTP, session cookie, property reads, task waiting with WaitForUpdatesEx, datastore files),
//! [`tls`], [`inventory`] (finding things), [`import`] (stemcells through ImportVApp + NFC), [`bootstrap`]
//! (guest operations). Every CPI call logs in, works, and logs out.
//!
//! Names: stemcell `sc-<20 hex>` (a VM in the template folder, with snapshot `initial` on vCenter); VM
//! `vm-<20 hex>` in the VM folder, its settings in `[ds] <vm>/env.json` + `env-<8 hex>.iso` (the first
//! CD-ROM); disk `disk-<20 hex>`, the file `[ds] <disk_folder>/<cid>.vmdk` with its metadata in
//! `<cid>.meta.json` beside it.
//!
//! On vCenter a VM is a linked clone of the stemcell's snapshot (`createNewChildDiskBacking`). A standalone
//! ESXi host has no CloneVM, so there the VM is built with CreateVM and a root disk that is a child of the
//! stemcell's disk. CPU, memory, NICs, the ephemeral disk and the CD-ROM are set by one reconfigure, then
//! the VM is powered on. Persistent disks go on the root disk's SCSI controller; the hint is the unit
//! number, which vSphere stemcells' agents resolve as the SCSI target.
pub mod bootstrap;
pub mod client;
pub mod config;
pub mod import;
pub mod inventory;
pub mod methods;
pub mod soap;
pub mod tls;

pub use config::VsphereConfig;

use crate::agent_settings::{random_mac, AgentSettings, Networks};
use crate::config::AgentOptions;
use crate::driver::{CallContext, CreateVm, CreatedVm, Driver, Metadata, VmResources};
use crate::error::{DriverError, DriverResult};
use crate::ids::{random_hex, DiskCid, SnapshotCid, StemcellCid, VmCid};
use crate::inflight::{Inflight, Marker};
use crate::medium::{self, MediumKind};
use crate::{info, warn};
use client::ClientError;
use inventory::{ctx_err, Dev, Inv, VmInfo};
use methods::*;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use soap::{FaultKind, MoRef, Node};
use std::path::Path;

/// Formats `info` reports.
pub const STEMCELL_FORMATS: &[&str] = &["vsphere-ovf", "vsphere-ova"];

/// VM `cloud_properties` this driver understands.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct VmProps {
    #[serde(default = "one")]
    cpu: u32,
    /// MiB.
    #[serde(default = "default_ram")]
    ram: u64,
    /// Ephemeral disk, MiB (0: none).
    #[serde(default)]
    disk: u64,
    /// Datastore names or patterns for this VM's files (default: the stemcell's datastore).
    #[serde(default)]
    datastores: Vec<String>,
    #[serde(default)]
    bootstrap: Option<bootstrap::Bootstrap>,
}

fn one() -> u32 {
    1
}
fn default_ram() -> u64 {
    1024
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiskProps {
    /// `thin` (default), `preallocated` or `eagerZeroedThick`.
    #[serde(default)]
    r#type: Option<String>,
    #[serde(default)]
    datastores: Vec<String>,
}

/// vSphere's largest virtual disk (62 TiB), in MiB.
const MAX_DISK_MIB: u64 = 62 << 20;
/// vSphere's largest VM: 768 vCPUs, 24 TiB of memory.
const MAX_CPUS: u32 = 768;
const MAX_RAM_MIB: u64 = 24 << 20;

/// A disk size in MiB, checked against vSphere's limit before any arithmetic on it.
fn disk_size(what: &str, mib: u64) -> DriverResult<u64> {
    if mib == 0 || mib > MAX_DISK_MIB {
        return Err(DriverError::invalid(what, format!("must be between 1 and {MAX_DISK_MIB} MiB (62 TiB), got {mib}")));
    }
    Ok(mib)
}

fn valid_id(cid: &str, prefix: &str) -> bool {
    cid.strip_prefix(prefix).is_some_and(|h| h.len() == 20 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// vSphere's range for manually assigned MACs: `00:50:56:00:00:00`–`00:50:56:3f:ff:ff`.
fn vmware_mac() -> String {
    let m = random_mac([0x00, 0x50, 0x56]);
    let fourth = u8::from_str_radix(&m[9..11], 16).unwrap_or(0) & 0x3f;
    format!("{}{fourth:02x}{}", &m[..9], &m[11..])
}

pub struct Vsphere {
    cfg: VsphereConfig,
    agent: AgentOptions,
    inflight: Inflight,
}

impl Vsphere {
    pub fn new(cfg: VsphereConfig, agent: AgentOptions) -> Self {
        crate::logger::add_secret(&cfg.password);
        // the reaper looks for VMs in these folders: markers of a config with other folders are not its own
        let owner = format!("vsphere {} datacenter {} vm_folder {} template_folder {} disk_folder {}", cfg.base_url(), cfg.datacenter, cfg.vm_folder, cfg.template_folder, cfg.disk_folder);
        let inflight = Inflight::new(&cfg.inflight_dir()).owned_by(&owner);
        Vsphere { cfg, agent, inflight }
    }

    /// Reaps what killed creates left, then writes and holds the in-flight marker of `cid`.
    fn begin(&self, inv: &Inv, cid: &str) -> DriverResult<Marker> {
        self.reap(inv);
        self.inflight.begin(cid).map_err(|e| DriverError::failed(format!("cannot write the in-flight marker in {}", self.cfg.state_dir.display()), e))
    }

    /// Deletes everything of creates whose process died (SIGKILL, power loss) before answering. vSphere
    /// finishes a task after its client died, so a marker whose object is not there yet is kept for
    /// `ORPHAN_GRACE` before it is dropped.
    fn reap(&self, inv: &Inv) {
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
                Err(e) => warn!("{cid}: could not remove what an interrupted create left ({e}); will retry on the next create"),
            }
        }
    }

    /// How long ago the marker of `cid` was written (the layout is [`crate::inflight`]'s).
    fn marker_age(&self, cid: &str) -> Option<std::time::Duration> {
        let p = self.cfg.inflight_dir().join("inflight").join(format!("{cid}.lock"));
        std::fs::metadata(p).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok())
    }

    /// Removes the VM, stemcell or disk `cid`; `Ok(false)` when there was nothing.
    fn remove_leftovers(&self, inv: &Inv, cid: &str) -> DriverResult<bool> {
        if valid_id(cid, "vm-") || valid_id(cid, "sc-") {
            let folder = if cid.starts_with("vm-") { &self.cfg.vm_folder } else { &self.cfg.template_folder };
            return match inv.find_vm(folder, cid)?.map(|vm| inv.vm_info(&vm)).transpose()?.flatten() {
                Some(info) => self.destroy_vm(inv, &info).map(|_| true),
                None => Ok(false),
            };
        }
        if valid_id(cid, "disk-") {
            let disk = DiskCid::new(cid).map_err(DriverError::Other)?;
            let Some(ds) = self.locate_disk(inv, &disk)? else { return Ok(false) };
            let req = DeleteVirtualDisk { this: Self::vdm(inv)?, name: format!("[{ds}] {}", self.disk_path(cid)), datacenter: inv.dc.clone() };
            inv.s.run_task(&req, "delete disk").map_err(ctx_err(format!("cannot delete disk {cid}")))?;
            return Ok(true);
        }
        Ok(false)
    }

    fn open(&self) -> DriverResult<Inv<'_>> {
        Inv::open(&self.cfg)
    }

    fn disk_path(&self, cid: &str) -> String {
        format!("{}/{cid}.vmdk", self.cfg.disk_folder)
    }

    /// The datastore holding a persistent disk, by looking for its file on each candidate datastore.
    fn locate_disk(&self, inv: &Inv, cid: &DiskCid) -> DriverResult<Option<String>> {
        if !valid_id(cid.as_str(), "disk-") {
            return Ok(None);
        }
        let path = self.disk_path(cid.as_str());
        // every datastore, not only the configured ones: the config may have changed since the disk was made
        for (ds, _, _) in inv.datastores(&["*".to_string()])? {
            if inv.s.file_exists(&self.cfg.datacenter, &ds, &path).map_err(ctx_err(format!("cannot look for disk {cid}")))? {
                return Ok(Some(ds));
            }
        }
        Ok(None)
    }

    fn find_vm(&self, inv: &Inv, cid: &VmCid) -> DriverResult<Option<VmInfo>> {
        if !valid_id(cid.as_str(), "vm-") {
            return Ok(None);
        }
        match inv.find_vm(&self.cfg.vm_folder, cid.as_str())? {
            Some(vm) => inv.vm_info(&vm),
            None => Ok(None),
        }
    }

    fn require_vm(&self, inv: &Inv, cid: &VmCid) -> DriverResult<VmInfo> {
        self.find_vm(inv, cid)?.ok_or_else(|| DriverError::VmNotFound(cid.to_string()))
    }

    fn file_manager(inv: &Inv) -> DriverResult<MoRef> {
        inv.s.sc.file_manager.clone().ok_or_else(|| DriverError::NotSupported("this server has no FileManager".into()))
    }

    fn vdm(inv: &Inv) -> DriverResult<MoRef> {
        inv.s.sc.virtual_disk_manager.clone().ok_or_else(|| DriverError::NotSupported("this server has no VirtualDiskManager".into()))
    }

    /// Deletes a datastore file or folder; a missing one is fine.
    fn delete_file(&self, inv: &Inv, ds: &str, path: &str) -> DriverResult<()> {
        let req = DeleteDatastoreFile { this: Self::file_manager(inv)?, name: format!("[{ds}] {path}"), datacenter: inv.dc.clone() };
        match inv.s.run_task(&req, "delete datastore file") {
            Ok(_) => Ok(()),
            Err(e) if e.is_fault(&FaultKind::FileNotFound) => Ok(()),
            Err(e) => Err(DriverError::failed(format!("cannot delete [{ds}] {path}"), e)),
        }
    }

    /// Writes the settings (JSON + a fresh ISO) into the VM's folder and returns the ISO path.
    fn write_settings(&self, inv: &Inv, info_ds: &str, dir: &str, settings: &AgentSettings) -> DriverResult<String> {
        let json = settings.to_json();
        let iso = medium::build(MediumKind::CdromEnv, &json, &settings.vm.name, &self.cfg.xorriso).map_err(|e| DriverError::failed("cannot build the settings ISO", e))?;
        let name = format!("{dir}/env-{}.iso", random_hex(8));
        inv.s.put_file(&self.cfg.datacenter, info_ds, &format!("{dir}/env.json"), &json).map_err(ctx_err("cannot upload the agent settings"))?;
        inv.s.put_file(&self.cfg.datacenter, info_ds, &name, &iso).map_err(ctx_err("cannot upload the settings ISO"))?;
        Ok(format!("[{info_ds}] {name}"))
    }

    fn read_settings(&self, inv: &Inv, vm: &VmInfo) -> DriverResult<AgentSettings> {
        let bytes = inv
            .s
            .get_file(&self.cfg.datacenter, &vm.datastore, &format!("{}/env.json", vm.dir))
            .map_err(ctx_err("cannot download the agent settings"))?
            .ok_or_else(|| DriverError::Other(format!("VM {} has no {}/env.json on [{}]: was it made by this CPI?", vm.vm.value, vm.dir, vm.datastore)))?;
        AgentSettings::from_json(&bytes).map_err(|e| DriverError::failed("the VM's agent settings are not valid JSON", e))
    }

    /// Points the first CD-ROM at a new settings ISO and removes the old one.
    fn refresh_settings(&self, inv: &Inv, vm: &VmInfo, settings: &AgentSettings) -> DriverResult<()> {
        let iso = self.write_settings(inv, &vm.datastore, &vm.dir, settings)?;
        let cd = vm.devices.iter().find(|d| d.kind == "VirtualCdrom").ok_or_else(|| DriverError::Other(format!("VM {} has no CD-ROM for its settings", vm.vm.value)))?;
        let old = cd.file.clone();
        let dev = Device::Cdrom { key: cd.key, controller_key: cd.controller_key.unwrap_or(200), unit: cd.unit.unwrap_or(0), iso };
        let spec = VmConfigSpec { device_change: vec![DeviceChange { operation: Operation::Edit, create_file: false, device: dev }], extra_config: guestinfo(settings), ..Default::default() };
        inv.s.run_task(&ReconfigVm { this: vm.vm.clone(), spec }, "change settings ISO").map_err(ctx_err("cannot change the settings ISO"))?;
        if let Some((ds, path)) = old.as_deref().and_then(|o| o.strip_prefix('[')).and_then(|o| o.split_once("] ")) {
            if path.ends_with(".iso") && path.contains("/env-") {
                self.delete_file(inv, ds, path)?;
            }
        }
        Ok(())
    }

    fn power_off(&self, inv: &Inv, vm: &MoRef) -> DriverResult<()> {
        match inv.s.run_task(&PowerOffVm { this: vm.clone() }, "power off") {
            Ok(_) => Ok(()),
            Err(e) if e.is_fault(&FaultKind::InvalidPowerState) || e.is_fault(&FaultKind::InvalidState) => Ok(()),
            Err(e) => Err(DriverError::failed(format!("cannot power off {}", vm.value), e)),
        }
    }

    /// Powers off, detaches persistent disks, destroys, removes the VM's folder. For cleanup and delete_vm.
    fn destroy_vm(&self, inv: &Inv, vm: &VmInfo) -> DriverResult<()> {
        if vm.power_state != "poweredOff" {
            self.power_off(inv, &vm.vm)?;
        }
        let persistent: Vec<DeviceChange> = vm
            .devices
            .iter()
            .filter(|d| d.is_disk() && self.persistent_cid(d).is_some())
            .map(|d| DeviceChange { operation: Operation::Remove, create_file: false, device: Device::Existing(d.node.clone()) })
            .collect();
        if !persistent.is_empty() {
            let spec = VmConfigSpec { device_change: persistent, ..Default::default() };
            inv.s.run_task(&ReconfigVm { this: vm.vm.clone(), spec }, "detach persistent disks").map_err(ctx_err("cannot detach persistent disks"))?;
        }
        match inv.s.run_task(&Destroy { this: vm.vm.clone() }, "destroy VM") {
            Ok(_) => {}
            Err(e) if e.is_fault(&FaultKind::ManagedObjectNotFound) => {}
            Err(e) => return Err(DriverError::failed(format!("cannot destroy {}", vm.vm.value), e)),
        }
        if !vm.dir.is_empty() {
            self.delete_file(inv, &vm.datastore, &vm.dir)?;
        }
        Ok(())
    }

    /// The CID of a persistent disk device (its file is `<disk_folder>/disk-….vmdk`).
    fn persistent_cid(&self, d: &Dev) -> Option<String> {
        let f = d.file.as_deref()?;
        let path = f.split_once("] ").map(|(_, p)| p).unwrap_or(f);
        let (dir, file) = path.rsplit_once('/')?;
        let cid = file.strip_suffix(".vmdk")?;
        (dir == self.cfg.disk_folder && valid_id(cid, "disk-")).then(|| cid.to_string())
    }

    fn create_vm_inner(&self, inv: &Inv, req: &CreateVm, props: &VmProps, name: &str, made: &mut Option<MoRef>) -> DriverResult<CreatedVm> {
        if !valid_id(req.stemcell.as_str(), "sc-") {
            return Err(DriverError::StemcellNotFound(req.stemcell.to_string()));
        }
        let sc = inv.find_vm(&self.cfg.template_folder, req.stemcell.as_str())?.ok_or_else(|| DriverError::StemcellNotFound(req.stemcell.to_string()))?;
        let sc = inv.vm_info(&sc)?.ok_or_else(|| DriverError::StemcellNotFound(req.stemcell.to_string()))?;
        // networks first: a missing port group fails before anything is made
        let mut networks: Networks = req.networks.clone();
        let mut nics = Vec::new();
        for (i, (net_name, net)) in networks.iter_mut().enumerate() {
            if !net.needs_nic() {
                continue;
            }
            let pg = net.cloud_properties.get("name").and_then(Value::as_str).unwrap_or(&self.cfg.default_network).to_string();
            let backing = inv.network(&pg).map_err(|e| match e {
                DriverError::NetworkNotFound(m) => DriverError::NetworkNotFound(format!("{m}, wanted by BOSH network {net_name}")),
                e => e,
            })?;
            let mac = vmware_mac();
            net.mac = Some(mac.clone());
            nics.push(Device::Nic { key: -200 - i as i32, backing, mac });
        }
        let pool = inv.resource_pool()?;
        let folder = inv.vm_folder()?;
        let ds = if props.datastores.is_empty() {
            None
        } else {
            Some(inv.pick_datastore(&props.datastores, props.disk << 20)?)
        };
        let vm = if inv.vcenter() {
            let snapshot = sc.snapshot.clone().ok_or_else(|| DriverError::Other(format!("stemcell {} has no snapshot to clone from: upload it again", req.stemcell)))?;
            let clone = CloneVm { this: sc.vm.clone(), folder, name: name.to_string(), pool, datastore: ds.as_ref().map(|d| d.1.clone()), snapshot: Some(snapshot) };
            let r = inv.s.run_task(&clone, "clone stemcell").map_err(ctx_err(format!("cannot clone stemcell {}", req.stemcell)))?;
            r.as_ref().and_then(Node::as_moref).ok_or_else(|| DriverError::Other("CloneVM_Task returned no VM".into()))?
        } else {
            let ds_name = ds.as_ref().map(|d| d.0.clone()).unwrap_or_else(|| sc.datastore.clone());
            let parent = sc.devices.iter().filter(|d| d.is_disk()).min_by_key(|d| d.unit).and_then(|d| d.file.clone());
            let parent = parent.ok_or_else(|| DriverError::Other(format!("stemcell {} has no disk", req.stemcell)))?;
            let config = VmConfigSpec {
                name: Some(name.to_string()),
                guest_id: Some(self.cfg.guest_id.clone()),
                vm_path_name: Some(format!("[{ds_name}] {name}/{name}.vmx")),
                firmware: sc.firmware.clone(),
                device_change: vec![
                    DeviceChange::add(Device::ScsiController { key: -100, bus: 0 }),
                    DeviceChange::create(Device::Disk { key: -101, controller_key: -100, unit: 0, capacity_kb: 0, file_name: format!("[{ds_name}] {name}/{name}.vmdk"), parent: Some(parent) }),
                ],
                ..Default::default()
            };
            let r = inv.s.run_task(&methods::CreateVm { this: folder, config, pool }, "create VM").map_err(ctx_err("cannot create the VM"))?;
            r.as_ref().and_then(Node::as_moref).ok_or_else(|| DriverError::Other("CreateVM_Task returned no VM".into()))?
        };
        *made = Some(vm.clone());
        let info = inv.vm_info(&vm)?.ok_or_else(|| DriverError::Other(format!("the new VM {} vanished", vm.value)))?;
        let controller = info.root_controller().ok_or_else(|| DriverError::Other(format!("VM {name} has no SCSI controller for its disks")))?;
        let mut changes: Vec<DeviceChange> = info
            .devices
            .iter()
            .filter(|d| d.is_nic())
            .map(|d| DeviceChange { operation: Operation::Remove, create_file: false, device: Device::Existing(d.node.clone()) })
            .collect();
        changes.extend(nics.into_iter().map(DeviceChange::add));
        let mut settings = AgentSettings::new(req.agent_id.as_str(), name, &self.agent, networks.clone(), req.env.clone());
        settings.vm.id = vm.value.clone();
        let root_unit = info.devices.iter().filter(|d| d.is_disk() && d.controller_key == Some(controller)).filter_map(|d| d.unit).min().unwrap_or(0);
        settings.disks.system = json!(root_unit.to_string());
        if props.disk > 0 {
            let unit = info.free_unit(controller, &[]).ok_or_else(|| DriverError::Other("no free SCSI unit for the ephemeral disk".into()))?;
            let file = format!("[{}] {}/{name}-ephemeral.vmdk", info.datastore, info.dir);
            changes.push(DeviceChange::create(Device::Disk { key: -300, controller_key: controller, unit, capacity_kb: props.disk * 1024, file_name: file, parent: None }));
            settings.disks.ephemeral = json!(unit.to_string());
        }
        let iso = self.write_settings(inv, &info.datastore, &info.dir, &settings)?;
        let cdrom = match info.devices.iter().find(|d| d.kind == "VirtualCdrom") {
            Some(cd) => DeviceChange { operation: Operation::Edit, create_file: false, device: Device::Cdrom { key: cd.key, controller_key: cd.controller_key.unwrap_or(200), unit: cd.unit.unwrap_or(0), iso } },
            None => {
                let ide = info.devices.iter().filter(|d| d.kind == "VirtualIDEController").find(|c| info.devices.iter().filter(|d| d.controller_key == Some(c.key)).count() < 2);
                let ide = ide.ok_or_else(|| DriverError::Other(format!("VM {name} has no free IDE slot for the settings CD-ROM")))?;
                let unit = (0..2).find(|u| !info.devices.iter().any(|d| d.controller_key == Some(ide.key) && d.unit == Some(*u))).unwrap_or(0);
                DeviceChange::add(Device::Cdrom { key: -400, controller_key: ide.key, unit, iso })
            }
        };
        changes.push(cdrom);
        let spec = VmConfigSpec { num_cpus: Some(props.cpu), memory_mb: Some(props.ram), device_change: changes, extra_config: guestinfo(&settings), ..Default::default() };
        inv.s.run_task(&ReconfigVm { this: vm.clone(), spec }, "configure VM").map_err(ctx_err(format!("cannot configure {name}")))?;
        inv.s.run_task(&PowerOnVm { this: vm.clone() }, "power on").map_err(ctx_err(format!("cannot power on {name}")))?;
        if let Some(b) = &props.bootstrap {
            bootstrap::run(&inv.s, &vm, b)?;
        }
        let cid = VmCid::new(name).map_err(DriverError::Other)?;
        Ok(CreatedVm { cid, networks })
    }
}

/// The settings for agents with the `VsphereGuestInfo` source (stemcells built since 2026), which read
/// `guestinfo.userdata` before the CD-ROM; older agents ignore it.
fn guestinfo(settings: &AgentSettings) -> Vec<(String, String)> {
    vec![("guestinfo.userdata".into(), base64(&settings.to_json())), ("guestinfo.userdata.encoding".into(), "base64".into())]
}

pub use crate::encoding::base64;

impl Vsphere {
    fn import_stemcell(&self, inv: &Inv, image: &Path, name: &str, marker: &Marker) -> DriverResult<()> {
        let work = marker.work_dir().map_err(|e| DriverError::failed(format!("cannot create a work directory in {}", self.cfg.state_dir.display()), e))?;
        let unpacked = crate::stemcell::unpack(image, Some(work)).map_err(|e| DriverError::failed("cannot read the stemcell image", e))?;
        if unpacked.family != crate::stemcell::Family::Vsphere {
            return Err(DriverError::invalid("stemcell", "this driver imports vSphere stemcells (vsphere-ovf); the image holds an OpenStack root.img"));
        }
        let img = import::ovf_for(&unpacked.disk, unpacked.efi)?;
        let size = std::fs::metadata(&unpacked.disk).map(|m| m.len()).unwrap_or(0);
        let pool = inv.resource_pool()?;
        let (ds_name, ds) = inv.pick_datastore(&[], size)?;
        let folder = inv.template_folder()?;
        info!("importing stemcell as {name} on datastore {ds_name}");
        let vm = import::import(&inv.s, &img, name, &pool, &ds, &folder)?;
        if inv.vcenter() {
            // linked clones grow child disks on this snapshot; a standalone host uses the disk directly
            inv.s.run_task(&CreateSnapshot { this: vm, name: "initial".into() }, "snapshot stemcell").map_err(ctx_err("cannot snapshot the stemcell"))?;
        }
        Ok(())
    }
}

fn parse_props<T: serde::de::DeserializeOwned>(what: &str, m: &Map<String, Value>) -> DriverResult<T> {
    serde_json::from_value(Value::Object(m.clone())).map_err(|e| DriverError::invalid(what, e.to_string()))
}

/// Peak resident memory of this process (`VmHWM`), for the import log line.
fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

impl Driver for Vsphere {
    fn create_stemcell(&self, image: &Path, _cloud_properties: &Map<String, Value>) -> DriverResult<StemcellCid> {
        let inv = self.open()?;
        let name = format!("sc-{}", random_hex(20));
        let marker = self.begin(&inv, &name)?;
        let result = self.import_stemcell(&inv, image, &name, &marker);
        let settled = match &result {
            Ok(()) => true,
            Err(_) => match self.remove_leftovers(&inv, &name) {
                Ok(_) => true,
                // the marker stays: the next create removes the rest
                Err(e) => {
                    warn!("cleanup of {name} failed: {e}");
                    false
                }
            },
        };
        // log out first: the marker goes only when nothing but writing the response is left to do
        drop(inv);
        if result.is_ok() {
            let rss = peak_rss_kib().map(|k| format!("{} MiB", k / 1024)).unwrap_or_else(|| "unknown".into());
            info!("stemcell import done, peak RSS {rss}");
        }
        if settled {
            marker.commit();
        }
        result?;
        StemcellCid::new(name).map_err(DriverError::Other)
    }

    fn delete_stemcell(&self, cid: &StemcellCid) -> DriverResult<()> {
        if !valid_id(cid.as_str(), "sc-") {
            warn!("stemcell {cid} is not one of ours; nothing to delete");
            return Ok(());
        }
        let inv = self.open()?;
        match inv.find_vm(&self.cfg.template_folder, cid.as_str())? {
            Some(vm) => match inv.vm_info(&vm)? {
                Some(info) => self.destroy_vm(&inv, &info),
                None => Ok(()),
            },
            None => {
                info!("stemcell {cid} is already gone");
                Ok(())
            }
        }
    }

    fn create_vm(&self, _ctx: &CallContext, req: &CreateVm) -> DriverResult<CreatedVm> {
        // the bootstrap block is read on its own, so that a mistake in it is reported as such
        let mut top = req.cloud_properties.clone();
        // bosh-vmrun-cpi's names for the bootstrap keys are read as ours
        for note in crate::compat::vm_cloud_properties(&mut top, false).map_err(|e| DriverError::invalid("VM cloud_properties", e))? {
            info!("{note}");
        }
        let bootstrap = top.remove("bootstrap");
        let mut props: VmProps = parse_props("VM cloud_properties", &top)?;
        if let Some(b) = bootstrap.filter(|b| !b.is_null()) {
            props.bootstrap = Some(serde_json::from_value(b).map_err(|e| DriverError::invalid("VM cloud_properties.bootstrap", e.to_string()))?);
        }
        if props.cpu == 0 || props.cpu > MAX_CPUS || props.ram < 4 || props.ram > MAX_RAM_MIB {
            return Err(DriverError::invalid("VM cloud_properties", format!("cpu must be 1 to {MAX_CPUS} and ram 4 to {MAX_RAM_MIB} MiB")));
        }
        if props.disk > 0 {
            disk_size("VM cloud_properties.disk", props.disk)?;
        }
        let inv = self.open()?;
        let name = format!("vm-{}", random_hex(20));
        let marker = self.begin(&inv, &name)?;
        let mut made = None;
        match self.create_vm_inner(&inv, req, &props, &name, &mut made) {
            Ok(vm) => {
                drop(inv);
                info!("created VM {name}");
                marker.commit();
                Ok(vm)
            }
            Err(e) => {
                let cleaned = match made {
                    Some(vm) => {
                        warn!("create_vm failed, removing {name}: {e}");
                        match inv.vm_info(&vm).and_then(|i| i.map(|i| self.destroy_vm(&inv, &i)).transpose()) {
                            Ok(_) => true,
                            Err(c) => {
                                warn!("cleanup of {name} failed: {c}");
                                false
                            }
                        }
                    }
                    None => true,
                };
                drop(inv);
                if cleaned {
                    marker.commit();
                }
                Err(e)
            }
        }
    }

    fn delete_vm(&self, cid: &VmCid) -> DriverResult<()> {
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
        let inv = self.open()?;
        Ok(valid_id(cid.as_str(), "vm-") && inv.find_vm(&self.cfg.vm_folder, cid.as_str())?.is_some())
    }

    fn reboot_vm(&self, cid: &VmCid) -> DriverResult<()> {
        let inv = self.open()?;
        let vm = self.require_vm(&inv, cid)?;
        if vm.power_state == "poweredOff" {
            return inv.s.run_task(&PowerOnVm { this: vm.vm.clone() }, "power on").map(|_| ()).map_err(ctx_err(format!("cannot power on {cid}")));
        }
        match inv.s.call(&RebootGuest { this: vm.vm.clone() }) {
            Ok(_) => Ok(()),
            Err(e) => {
                info!("soft reboot of {cid} not possible ({e}); resetting");
                inv.s.run_task(&ResetVm { this: vm.vm.clone() }, "reset").map(|_| ()).map_err(ctx_err(format!("cannot reset {cid}")))
            }
        }
    }

    fn set_vm_metadata(&self, cid: &VmCid, metadata: &Metadata) -> DriverResult<()> {
        let inv = self.open()?;
        let vm = self.require_vm(&inv, cid)?;
        let cfm = inv.s.sc.custom_fields_manager.clone();
        let Some(cfm) = cfm.filter(|_| inv.vcenter()) else {
            // a standalone host has no custom attributes: the annotation (Notes) carries the metadata as
            // `key: value` lines, merged with what earlier calls wrote
            let old = inv.s.object(&vm.vm, &["config.annotation"]).map_err(ctx_err(format!("cannot read the annotation of {cid}")))?;
            let mut merged: Metadata = old
                .and_then(|o| o.str("config.annotation").map(str::to_string))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split_once(": ").map(|(k, v)| (k.to_string(), v.to_string())))
                .collect();
            for (k, v) in metadata {
                merged.insert(k.replace(['\n', ':'], " "), v.replace('\n', " "));
            }
            let notes: String = merged.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
            let spec = VmConfigSpec { annotation: Some(notes), ..Default::default() };
            inv.s.run_task(&ReconfigVm { this: vm.vm.clone(), spec }, "set annotation").map_err(ctx_err(format!("cannot set the annotation of {cid}")))?;
            return Ok(());
        };
        let read_fields = || -> DriverResult<Vec<(String, i32)>> {
            let oc = inv.s.object(&cfm, &["field"]).map_err(ctx_err("cannot read custom attribute definitions"))?;
            Ok(oc
                .and_then(|o| o.get("field").cloned())
                .map(|f| {
                    f.children
                        .iter()
                        .filter(|d| d.str_at("managedObjectType").is_none_or(|t| t == "VirtualMachine"))
                        .filter_map(|d| Some((d.str_at("name")?.to_string(), d.str_at("key")?.parse().ok()?)))
                        .collect()
                })
                .unwrap_or_default())
        };
        let mut fields = read_fields()?;
        for (k, v) in metadata {
            let key = match fields.iter().find(|(n, _)| n == k) {
                Some((_, key)) => *key,
                None => match inv.s.call(&AddCustomFieldDef { this: cfm.clone(), name: k.clone() }) {
                    Ok(n) => n.str_at("returnval/key").and_then(|s| s.parse().ok()).ok_or_else(|| DriverError::Other("AddCustomFieldDef returned no key".into()))?,
                    Err(e) if e.is_fault(&FaultKind::DuplicateName) => {
                        fields = read_fields()?;
                        fields.iter().find(|(n, _)| n == k).map(|(_, key)| *key).ok_or_else(|| DriverError::Other(format!("custom attribute {k} exists but cannot be read")))?
                    }
                    Err(e) => return Err(DriverError::failed(format!("cannot define custom attribute {k}"), e)),
                },
            };
            inv.s.call(&SetField { this: cfm.clone(), entity: vm.vm.clone(), key, value: v.clone() }).map_err(ctx_err(format!("cannot set custom attribute {k} on {cid}")))?;
        }
        Ok(())
    }

    fn calculate_vm_cloud_properties(&self, res: &VmResources) -> DriverResult<Value> {
        Ok(json!({"cpu": res.cpu, "ram": res.ram, "disk": res.ephemeral_disk_size}))
    }

    fn create_disk(&self, size_mib: u64, cloud_properties: &Map<String, Value>, vm: Option<&VmCid>) -> DriverResult<DiskCid> {
        let props: DiskProps = parse_props("disk cloud_properties", cloud_properties)?;
        let disk_type = props.r#type.unwrap_or_else(|| "thin".into());
        if !matches!(disk_type.as_str(), "thin" | "preallocated" | "eagerZeroedThick") {
            return Err(DriverError::invalid("disk cloud_properties", format!("type must be thin, preallocated or eagerZeroedThick, got {disk_type:?}")));
        }
        let size_mib = disk_size("disk size", size_mib)?;
        let inv = self.open()?;
        let need = if disk_type == "thin" { 0 } else { size_mib << 20 };
        // near the VM when its datastore qualifies, else the one with the most free space
        let near = match vm {
            Some(vm) => self.find_vm(&inv, vm)?.map(|i| i.datastore),
            None => None,
        };
        let candidates = inv.datastores(&props.datastores)?;
        let ds = match candidates.iter().find(|(n, _, free)| Some(n) == near.as_ref() && *free >= need) {
            Some((n, _, _)) => n.clone(),
            None => inv.pick_datastore(&props.datastores, need)?.0,
        };
        let cid = format!("disk-{}", random_hex(20));
        let marker = self.begin(&inv, &cid)?;
        let fm = Self::file_manager(&inv)?;
        match inv.s.call(&MakeDirectory { this: fm, name: format!("[{ds}] {}", self.cfg.disk_folder), datacenter: inv.dc.clone() }) {
            Ok(_) => {}
            Err(e) if e.is_fault(&FaultKind::FileAlreadyExists) => {}
            Err(e) => return Err(DriverError::failed(format!("cannot create [{ds}] {}", self.cfg.disk_folder), e)),
        }
        let req = CreateVirtualDisk { this: Self::vdm(&inv)?, name: format!("[{ds}] {}", self.disk_path(&cid)), datacenter: inv.dc.clone(), disk_type, capacity_kb: size_mib * 1024 };
        if let Err(e) = inv.s.run_task(&req, "create disk") {
            let cleaned = self.remove_leftovers(&inv, &cid).is_ok();
            drop(inv);
            if cleaned {
                marker.commit();
            }
            return Err(DriverError::failed(format!("cannot create disk {cid} on {ds}"), e));
        }
        drop(inv);
        info!("created disk {cid} ({size_mib} MiB) on {ds}");
        marker.commit();
        DiskCid::new(cid).map_err(DriverError::Other)
    }

    fn delete_disk(&self, cid: &DiskCid) -> DriverResult<()> {
        let inv = self.open()?;
        let Some(ds) = self.locate_disk(&inv, cid)? else {
            info!("disk {cid} is already gone");
            return Ok(());
        };
        let req = DeleteVirtualDisk { this: Self::vdm(&inv)?, name: format!("[{ds}] {}", self.disk_path(cid.as_str())), datacenter: inv.dc.clone() };
        match inv.s.run_task(&req, "delete disk") {
            Ok(_) => {}
            Err(e) if e.is_fault(&FaultKind::FileNotFound) => {}
            Err(e) => return Err(DriverError::failed(format!("cannot delete disk {cid}"), e)),
        }
        self.delete_file(&inv, &ds, &format!("{}/{cid}.meta.json", self.cfg.disk_folder))
    }

    fn resize_disk(&self, cid: &DiskCid, new_size_mib: u64) -> DriverResult<()> {
        let new_size_mib = disk_size("new disk size", new_size_mib)?;
        let inv = self.open()?;
        let ds = self.locate_disk(&inv, cid)?.ok_or_else(|| DriverError::DiskNotFound(cid.to_string()))?;
        let req = ExtendVirtualDisk { this: Self::vdm(&inv)?, name: format!("[{ds}] {}", self.disk_path(cid.as_str())), datacenter: inv.dc.clone(), new_capacity_kb: new_size_mib * 1024 };
        match inv.s.run_task(&req, "extend disk") {
            Ok(_) => Ok(()),
            Err(e @ ClientError::Soap { .. }) if e.is_fault(&FaultKind::MethodNotFound) || e.is_fault(&FaultKind::NotSupported) => {
                Err(DriverError::NotSupported(format!("resize_disk: the server cannot extend virtual disks ({e}); the director copies the disk instead")))
            }
            Err(e) => Err(DriverError::failed(format!("cannot resize disk {cid} to {new_size_mib} MiB"), e)),
        }
    }

    fn has_disk(&self, cid: &DiskCid) -> DriverResult<bool> {
        let inv = self.open()?;
        Ok(self.locate_disk(&inv, cid)?.is_some())
    }

    fn attach_disk(&self, _ctx: &CallContext, vm: &VmCid, disk: &DiskCid) -> DriverResult<Value> {
        let inv = self.open()?;
        let info = self.require_vm(&inv, vm)?;
        if let Some(d) = info.devices.iter().find(|d| d.is_disk() && self.persistent_cid(d).as_deref() == Some(disk.as_str())) {
            info!("disk {disk} is already attached to {vm}");
            return Ok(json!(d.unit.unwrap_or(0).to_string()));
        }
        let ds = self.locate_disk(&inv, disk)?.ok_or_else(|| DriverError::DiskNotFound(disk.to_string()))?;
        let controller = info.root_controller().ok_or_else(|| DriverError::Other(format!("VM {vm} has no SCSI controller")))?;
        let unit = info.free_unit(controller, &[]).ok_or_else(|| DriverError::Other(format!("VM {vm} has no free SCSI unit for disk {disk}")))?;
        let dev = Device::Disk { key: -1, controller_key: controller, unit, capacity_kb: 0, file_name: format!("[{ds}] {}", self.disk_path(disk.as_str())), parent: None };
        let spec = VmConfigSpec { device_change: vec![DeviceChange::add(dev)], ..Default::default() };
        inv.s.run_task(&ReconfigVm { this: info.vm.clone(), spec }, "attach disk").map_err(ctx_err(format!("cannot attach disk {disk} to {vm}")))?;
        let hint = json!(unit.to_string());
        let mut settings = self.read_settings(&inv, &info)?;
        settings.attach_persistent(disk.as_str(), hint.clone());
        let info = inv.vm_info(&info.vm)?.ok_or_else(|| DriverError::VmNotFound(vm.to_string()))?;
        self.refresh_settings(&inv, &info, &settings)?;
        Ok(hint)
    }

    fn detach_disk(&self, vm: &VmCid, disk: &DiskCid) -> DriverResult<()> {
        let inv = self.open()?;
        let info = self.require_vm(&inv, vm)?;
        let dev = info
            .devices
            .iter()
            .find(|d| d.is_disk() && self.persistent_cid(d).as_deref() == Some(disk.as_str()))
            .ok_or_else(|| DriverError::DiskNotAttached { vm: vm.to_string(), disk: disk.to_string() })?;
        let change = DeviceChange { operation: Operation::Remove, create_file: false, device: Device::Existing(dev.node.clone()) };
        let spec = VmConfigSpec { device_change: vec![change], ..Default::default() };
        inv.s.run_task(&ReconfigVm { this: info.vm.clone(), spec }, "detach disk").map_err(ctx_err(format!("cannot detach disk {disk} from {vm}")))?;
        let mut settings = self.read_settings(&inv, &info)?;
        settings.detach_persistent(disk.as_str());
        self.refresh_settings(&inv, &info, &settings)
    }

    fn get_disks(&self, vm: &VmCid) -> DriverResult<Vec<DiskCid>> {
        let inv = self.open()?;
        let info = self.require_vm(&inv, vm)?;
        info.devices.iter().filter(|d| d.is_disk()).filter_map(|d| self.persistent_cid(d)).map(|c| DiskCid::new(c).map_err(DriverError::Other)).collect()
    }

    fn set_disk_metadata(&self, cid: &DiskCid, metadata: &Metadata) -> DriverResult<()> {
        let inv = self.open()?;
        let ds = self.locate_disk(&inv, cid)?.ok_or_else(|| DriverError::DiskNotFound(cid.to_string()))?;
        let body = serde_json::to_vec(metadata).map_err(|e| DriverError::failed("cannot encode disk metadata", e))?;
        inv.s.put_file(&self.cfg.datacenter, &ds, &format!("{}/{cid}.meta.json", self.cfg.disk_folder), &body).map_err(ctx_err(format!("cannot write metadata of {cid}")))
    }

    fn snapshot_disk(&self, _cid: &DiskCid, _metadata: &Metadata) -> DriverResult<SnapshotCid> {
        Err(DriverError::NotSupported(
            "snapshot_disk: vSphere snapshots whole VMs, not detached virtual disks (first-class disks would be needed), and the simulator cannot prove it; disable snapshots for this CPI".into(),
        ))
    }

    fn delete_snapshot(&self, _cid: &SnapshotCid) -> DriverResult<()> {
        Err(DriverError::NotSupported("delete_snapshot: this CPI makes no disk snapshots".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_macs() {
        assert!(valid_id("vm-0123456789abcdef0123", "vm-"));
        assert!(!valid_id("vm-0123", "vm-"));
        assert!(!valid_id("vm-0123456789abcdef012g", "vm-"));
        for _ in 0..50 {
            let m = vmware_mac();
            assert!(m.starts_with("00:50:56:") && m.len() == 17, "{m}");
            assert!(u8::from_str_radix(&m[9..11], 16).unwrap() <= 0x3f, "{m}");
        }
    }

    #[test]
    fn base64_vectors() {
        for (i, o) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64(i.as_bytes()), o);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn ds_paths() {
        assert_eq!(inventory::split_ds_path("[LocalDS_0] vm-1/vm-1.vmx"), Some(("LocalDS_0".into(), "vm-1".into())));
        assert_eq!(inventory::split_ds_path("nope"), None);
    }
}
