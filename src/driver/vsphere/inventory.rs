//! Finding things in the vSphere inventory for one CPI call: the datacenter, folders (created on first
//! use), the resource pool, datastores, port groups, VMs and their devices.
use super::client::{ClientError, ObjectContent, Session};
use super::config::VsphereConfig;
use super::methods::Follow;
use super::methods::{CreateFolder, NicBacking};
use super::soap::{FaultKind, MoRef, Node};
use crate::error::{DriverError, DriverResult};
use crate::glob::{glob, Wildcards};
use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;

/// Turns a client error into a driver error with what we were doing.
pub fn ctx_err(what: impl Into<String>) -> impl FnOnce(ClientError) -> DriverError {
    let what = what.into();
    move |e| DriverError::failed(what, e)
}

/// A session plus the datacenter it works in, and what this call has already looked up (the datacenter,
/// folders, networks, the resource pool, the datastores): each is asked for once per call at most.
pub struct Inv<'a> {
    pub s: Session,
    pub cfg: &'a VsphereConfig,
    dc: OnceCell<MoRef>,
    found: RefCell<HashMap<String, MoRef>>,
    stores: RefCell<Option<Vec<(String, MoRef, u64)>>>,
}

/// One virtual device as the server describes it.
#[derive(Debug, Clone)]
pub struct Dev {
    pub key: i32,
    pub kind: String,
    pub controller_key: Option<i32>,
    pub unit: Option<i32>,
    pub bus: Option<i32>,
    pub file: Option<String>,
    pub node: Node,
}

impl Dev {
    fn from_node(n: &Node) -> Option<Dev> {
        let num = |p: &str| n.str_at(p).and_then(|v| v.trim().parse::<i32>().ok());
        Some(Dev {
            key: num("key")?,
            kind: n.kind().to_string(),
            controller_key: num("controllerKey"),
            unit: num("unitNumber"),
            bus: num("busNumber"),
            file: n.str_at("backing/fileName").map(str::to_string),
            node: n.clone(),
        })
    }
    pub fn is_disk(&self) -> bool {
        self.kind == "VirtualDisk"
    }
    pub fn is_scsi_controller(&self) -> bool {
        self.kind.contains("SCSIController") || self.kind.contains("LsiLogic") || self.kind.contains("BusLogic")
    }
    pub fn is_nic(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "VirtualVmxnet3"
                | "VirtualVmxnet2"
                | "VirtualVmxnet"
                | "VirtualE1000"
                | "VirtualE1000e"
                | "VirtualPCNet32"
                | "VirtualSriovEthernetCard"
        )
    }
}

/// A VM's properties the driver needs.
#[derive(Debug, Clone)]
pub struct VmInfo {
    pub vm: MoRef,
    pub devices: Vec<Dev>,
    pub power_state: String,
    /// Datastore holding the VM's files and the folder on it.
    pub datastore: String,
    pub dir: String,
    pub snapshot: Option<MoRef>,
    pub firmware: Option<String>,
    /// `guestinfo.userdata` (base64 agent settings), when read ([`VM_SETTINGS_PROPS`]).
    pub userdata: Option<String>,
}

pub const VM_PROPS: &[&str] =
    &["config.hardware.device", "runtime.powerState", "config.files.vmPathName", "snapshot", "config.firmware"];

/// [`VM_PROPS`] and the extra config, where the agent settings are.
pub const VM_SETTINGS_PROPS: &[&str] = &[
    "config.hardware.device",
    "runtime.powerState",
    "config.files.vmPathName",
    "snapshot",
    "config.firmware",
    "config.extraConfig",
];

const DATASTORE_PROPS: &[&str] = &["name", "summary.freeSpace", "summary.accessible"];

/// (name, reference, free bytes) of the accessible datastores among `found`.
fn usable_datastores(found: &[ObjectContent]) -> Vec<(String, MoRef, u64)> {
    found
        .iter()
        .filter(|o| o.obj.kind == "Datastore" && o.str("summary.accessible") != Some("false"))
        .filter_map(|o| {
            let name = o.str("name")?.to_string();
            let free = o.str("summary.freeSpace").and_then(|v| v.parse().ok()).unwrap_or(0);
            Some((name, o.obj.clone(), free))
        })
        .collect()
}

/// `[ds] dir/file.vmx` → (`ds`, `dir`).
pub fn split_ds_path(p: &str) -> Option<(String, String)> {
    let rest = p.strip_prefix('[')?;
    let (ds, path) = rest.split_once(']')?;
    let path = path.trim();
    let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    Some((ds.to_string(), dir.to_string()))
}

impl VmInfo {
    pub fn from_content(oc: &ObjectContent) -> DriverResult<VmInfo> {
        let devices = oc
            .get("config.hardware.device")
            .map(|d| d.children.iter().filter_map(Dev::from_node).collect())
            .unwrap_or_default();
        let path = oc.str("config.files.vmPathName").unwrap_or_default();
        let (datastore, dir) = split_ds_path(path)
            .ok_or_else(|| DriverError::other(format!("VM {} has no datastore path (got {path:?})", oc.obj.value)))?;
        Ok(VmInfo {
            vm: oc.obj.clone(),
            devices,
            power_state: oc.str("runtime.powerState").unwrap_or("poweredOff").to_string(),
            datastore,
            dir,
            snapshot: oc.get("snapshot").and_then(|s| s.moref_at("currentSnapshot")),
            firmware: oc.str("config.firmware").map(str::to_string),
            // the last entry: vSphere keeps one per key, the simulator appends a key set again
            userdata: oc.get("config.extraConfig").and_then(|x| {
                x.children
                    .iter()
                    .rev()
                    .find(|o| o.str_at("key") == Some("guestinfo.userdata"))
                    .and_then(|o| o.str_at("value"))
                    .map(str::to_string)
            }),
        })
    }

    /// The controller of the root disk (the disk at the lowest unit), where ephemeral and persistent disks
    /// go too: the agent looks for them on the root disk's SCSI host.
    pub fn root_controller(&self) -> Option<i32> {
        let mut disks: Vec<&Dev> = self.devices.iter().filter(|d| d.is_disk()).collect();
        disks.sort_by_key(|d| (d.controller_key, d.unit));
        disks
            .first()
            .and_then(|d| d.controller_key)
            .or_else(|| self.devices.iter().find(|d| d.is_scsi_controller()).map(|d| d.key))
    }

    /// A free unit on `controller` (7 is the controller itself).
    pub fn free_unit(&self, controller: i32, taken: &[i32]) -> Option<i32> {
        (0..16).filter(|u| *u != 7).find(|u| {
            !taken.contains(u)
                && !self.devices.iter().any(|d| d.controller_key == Some(controller) && d.unit == Some(*u))
        })
    }

    pub fn disk_with_file(&self, suffix: &str) -> Option<&Dev> {
        self.devices.iter().find(|d| d.is_disk() && d.file.as_deref().is_some_and(|f| f.ends_with(suffix)))
    }
}

impl<'a> Inv<'a> {
    /// The session (the saved one, or a new login). The datacenter is looked up when first needed.
    pub fn open(cfg: &'a VsphereConfig) -> DriverResult<Inv<'a>> {
        let s = Session::open(cfg).map_err(|e| match e {
            // retrying will not help: the config is wrong
            e @ ClientError::InvalidLogin { .. } => {
                DriverError::invalid("driver.user or driver.password", crate::logger::redact(&e.to_string()))
            }
            e => DriverError::failed("cannot connect to vSphere", e),
        })?;
        Ok(Inv { s, cfg, dc: OnceCell::new(), found: RefCell::new(HashMap::new()), stores: RefCell::new(None) })
    }

    /// The datacenter (looked up once per call); a wrong `driver.datacenter` is a config error.
    pub fn dc(&self) -> DriverResult<MoRef> {
        if let Some(dc) = self.dc.get() {
            return Ok(dc.clone());
        }
        let dc = self
            .s
            .find(&self.cfg.datacenter)
            .map_err(ctx_err("cannot look up the datacenter"))?
            .filter(|m| m.kind == "Datacenter");
        let dc = dc.ok_or_else(|| {
            DriverError::invalid(
                "driver.datacenter",
                format!("datacenter {:?} not found on {}", self.cfg.datacenter, self.cfg.host),
            )
        })?;
        Ok(self.dc.get_or_init(|| dc).clone())
    }

    /// `FindByInventoryPath` for things that do not come and go during a call (folders, networks, pools):
    /// asked once per call.
    fn find_once(&self, path: &str, what: &str) -> DriverResult<Option<MoRef>> {
        if let Some(m) = self.found.borrow().get(path) {
            return Ok(Some(m.clone()));
        }
        let m = self.s.find(path).map_err(ctx_err(format!("cannot look up {what}")))?;
        if let Some(m) = &m {
            self.found.borrow_mut().insert(path.to_string(), m.clone());
        }
        Ok(m)
    }

    pub fn vcenter(&self) -> bool {
        self.s.sc.is_vcenter()
    }

    /// Inventory path of a folder below the datacenter's VM folder (a standalone host has no folders).
    fn folder_path(&self, folder: &str) -> String {
        if self.vcenter() {
            format!("{}/vm/{folder}", self.cfg.datacenter)
        } else {
            format!("{}/vm", self.cfg.datacenter)
        }
    }

    /// Finds a VM (or stemcell template) by name in `folder`.
    pub fn find_vm(&self, folder: &str, name: &str) -> DriverResult<Option<MoRef>> {
        let path = format!("{}/{name}", self.folder_path(folder));
        let found = self.s.find(&path).map_err(ctx_err(format!("cannot look up {name}")))?;
        Ok(found.filter(|m| m.kind == "VirtualMachine"))
    }

    pub fn vm_info(&self, vm: &MoRef) -> DriverResult<Option<VmInfo>> {
        self.vm_info_with(vm, VM_PROPS)
    }

    /// A VM's properties, `paths` being [`VM_PROPS`] or [`VM_SETTINGS_PROPS`].
    pub fn vm_info_with(&self, vm: &MoRef, paths: &[&str]) -> DriverResult<Option<VmInfo>> {
        match self.s.object(vm, paths).map_err(ctx_err(format!("cannot read VM {}", vm.value)))? {
            Some(oc) => Ok(Some(VmInfo::from_content(&oc)?)),
            None => Ok(None),
        }
    }

    /// The folder, created (with its parents) when missing. Safe against a parallel CPI creating it.
    pub fn ensure_folder(&self, folder: &str) -> DriverResult<MoRef> {
        let path = self.folder_path(folder);
        if let Some(f) = self.find_once(&path, &format!("folder {path}"))? {
            return Ok(f);
        }
        let root = format!("{}/vm", self.cfg.datacenter);
        let mut parent = self
            .find_once(&root, "the VM folder")?
            .ok_or_else(|| DriverError::other(format!("datacenter {} has no VM folder", self.cfg.datacenter)))?;
        let mut so_far = root;
        for part in folder.split('/') {
            so_far = format!("{so_far}/{part}");
            parent = match self.s.call(&CreateFolder { this: parent.clone(), name: part.to_string() }) {
                Ok(n) => {
                    n.moref_at("returnval").ok_or_else(|| DriverError::other("CreateFolder returned no folder"))?
                }
                Err(e) if e.is_fault(&FaultKind::DuplicateName) => self
                    .s
                    .find(&so_far)
                    .map_err(ctx_err("cannot look up folder"))?
                    .ok_or_else(|| DriverError::other(format!("folder {so_far} exists but cannot be found")))?,
                Err(e) => return Err(DriverError::failed(format!("cannot create folder {so_far}"), e)),
            };
        }
        self.found.borrow_mut().insert(path, parent.clone());
        Ok(parent)
    }

    /// The VM folder to create VMs in (the datacenter's on a standalone host).
    pub fn vm_folder(&self) -> DriverResult<MoRef> {
        if self.vcenter() {
            self.ensure_folder(&self.cfg.vm_folder)
        } else {
            self.ensure_folder("")
        }
    }

    pub fn template_folder(&self) -> DriverResult<MoRef> {
        if self.vcenter() {
            self.ensure_folder(&self.cfg.template_folder)
        } else {
            self.ensure_folder("")
        }
    }

    /// The resource pool for new VMs.
    pub fn resource_pool(&self) -> DriverResult<MoRef> {
        let dc = &self.cfg.datacenter;
        let compute = match self.cfg.clusters.first() {
            Some(c) => format!("{dc}/host/{c}"),
            None => {
                return match &self.cfg.resource_pool {
                    None => self.first_pool(),
                    Some(_) => Err(DriverError::other("driver.resource_pool needs driver.clusters")),
                };
            }
        };
        let path = match &self.cfg.resource_pool {
            Some(rp) => format!("{compute}/Resources/{rp}"),
            None => format!("{compute}/Resources"),
        };
        self.find_once(&path, "the resource pool")?.ok_or_else(|| {
            DriverError::other(format!(
                "resource pool {path} not found (check driver.clusters and driver.resource_pool)"
            ))
        })
    }

    /// The root pool of the first compute resource (cluster or host) in the datacenter's host folder. One
    /// request (after the datacenter) reads the host folder's children, their pools and the datastores,
    /// which placement needs next.
    fn first_pool(&self) -> DriverResult<MoRef> {
        let dc_name = &self.cfg.datacenter;
        let dc = self.dc()?;
        let follow = |path: &str, then: Option<(&str, &str)>, kind: &str, paths: &[&str]| Follow {
            from: dc.clone(),
            path: path.into(),
            then: then.map(|(k, p)| (k.to_string(), p.to_string())),
            kind: kind.into(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
        };
        let found = self
            .s
            .properties_with(
                &[(dc.clone(), &["hostFolder"])],
                &[
                    follow("hostFolder", None, "Folder", &["childEntity"]),
                    follow("hostFolder", Some(("Folder", "childEntity")), "ComputeResource", &["resourcePool"]),
                    follow("datastore", None, "Datastore", DATASTORE_PROPS),
                ],
            )
            .map_err(ctx_err("cannot list compute resources"))?;
        if self.stores.borrow().is_none() {
            *self.stores.borrow_mut() = Some(usable_datastores(&found));
        }
        let host_folder = found.iter().find(|o| o.obj == dc).and_then(|o| o.get("hostFolder")?.as_moref());
        let children = host_folder.and_then(|hf| found.iter().find(|o| o.obj == hf)).and_then(|o| o.get("childEntity"));
        let first = children
            .and_then(|n| n.children.iter().filter_map(Node::as_moref).find(|m| m.kind.ends_with("ComputeResource")));
        let first = first.ok_or_else(|| {
            DriverError::other(format!("datacenter {dc_name} has no cluster or host: set driver.clusters"))
        })?;
        let rp = found.iter().find(|o| o.obj == first).and_then(|o| o.get("resourcePool")?.as_moref());
        rp.ok_or_else(|| DriverError::other(format!("compute resource {} has no resource pool", first.value)))
    }

    /// Every accessible datastore of the datacenter with its free bytes: one request (after the
    /// datacenter), once per call.
    fn all_datastores(&self) -> DriverResult<Vec<(String, MoRef, u64)>> {
        if let Some(all) = self.stores.borrow().as_ref() {
            return Ok(all.clone());
        }
        let dc = self.dc()?;
        let follow = Follow {
            from: dc,
            path: "datastore".into(),
            then: None,
            kind: "Datastore".into(),
            paths: DATASTORE_PROPS.iter().map(|p| p.to_string()).collect(),
        };
        let found = self.s.properties_with(&[], &[follow]).map_err(ctx_err("cannot read datastores"))?;
        let all = usable_datastores(&found);
        *self.stores.borrow_mut() = Some(all.clone());
        Ok(all)
    }

    /// Datastores matching `patterns` (the config's when empty), with free bytes, most free first.
    pub fn datastores(&self, patterns: &[String]) -> DriverResult<Vec<(String, MoRef, u64)>> {
        let patterns = if patterns.is_empty() { &self.cfg.datastores } else { patterns };
        let all = self.all_datastores()?;
        if all.is_empty() {
            return Err(DriverError::other(format!("datacenter {} has no accessible datastores", self.cfg.datacenter)));
        }
        let mut found: Vec<(String, MoRef, u64)> = all
            .into_iter()
            .filter(|(name, _, _)| {
                patterns.is_empty() || patterns.iter().any(|p| glob(p, name, Wildcards::StarAndQuestion))
            })
            .collect();
        if found.is_empty() {
            return Err(DriverError::other(format!(
                "no accessible datastore matches {:?} in datacenter {} (check driver.datastores)",
                patterns, self.cfg.datacenter
            )));
        }
        found.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        Ok(found)
    }

    /// The datastore with the most free space that has room for `bytes`.
    pub fn pick_datastore(&self, patterns: &[String], bytes: u64) -> DriverResult<(String, MoRef)> {
        let all = self.datastores(patterns)?;
        match all.iter().find(|(_, _, free)| *free >= bytes) {
            Some((n, m, _)) => Ok((n.clone(), m.clone())),
            None => Err(DriverError::no_disk_space(format!(
                "no datastore matching {:?} has {} MiB free",
                if patterns.is_empty() { &self.cfg.datastores } else { patterns },
                bytes >> 20
            ))),
        }
    }

    /// The NIC backing for a port group name: a standard network or a distributed port group.
    pub fn network(&self, name: &str) -> DriverResult<NicBacking> {
        let path = format!("{}/network/{name}", self.cfg.datacenter);
        let net = self.find_once(&path, &format!("network {name}"))?;
        let net = net.ok_or_else(|| {
            DriverError::network_not_found(format!(
                "{name} (no port group of that name in datacenter {})",
                self.cfg.datacenter
            ))
        })?;
        if net.kind != "DistributedVirtualPortgroup" {
            return Ok(NicBacking::Standard { name: name.to_string(), network: net });
        }
        let pg = self
            .s
            .object(&net, &["key", "config.distributedVirtualSwitch"])
            .map_err(ctx_err(format!("cannot read port group {name}")))?;
        let pg = pg.ok_or_else(|| DriverError::network_not_found(name.to_string()))?;
        let key = pg.str("key").unwrap_or_default().to_string();
        let dvs = pg
            .get("config.distributedVirtualSwitch")
            .and_then(Node::as_moref)
            .ok_or_else(|| DriverError::other(format!("port group {name} has no switch")))?;
        let sw = self.s.object(&dvs, &["uuid"]).map_err(ctx_err("cannot read the distributed switch"))?;
        let uuid = sw
            .and_then(|o| o.str("uuid").map(str::to_string))
            .ok_or_else(|| DriverError::other(format!("switch of port group {name} has no uuid")))?;
        Ok(NicBacking::Distributed { switch_uuid: uuid, portgroup_key: key })
    }

    /// A datastore's inventory reference by name.
    pub fn datastore_ref(&self, name: &str) -> DriverResult<Option<MoRef>> {
        self.s
            .find(&format!("{}/datastore/{name}", self.cfg.datacenter))
            .map_err(ctx_err(format!("cannot look up datastore {name}")))
    }
}
