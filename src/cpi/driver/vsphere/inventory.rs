//! Finding things in the vSphere inventory for one CPI call: the datacenter, folders (created on first
//! use), the resource pool, datastores, port groups, VMs and their devices.
use super::client::{ClientError, ObjectContent, Session};
use super::config::VsphereConfig;
use super::methods::Follow;
use super::methods::{CreateFolder, NicBacking};
use super::soap::{FaultKind, MoRef, Node};
use crate::common::glob::{glob, Wildcards};
use crate::cpi::error::{DriverError, DriverResult};
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
    /// The datacenter, known for sure in this call (looked up, or remembered and checked).
    dc: OnceCell<MoRef>,
    /// The datacenter the session file remembers, not checked yet in this call.
    dc_hint: RefCell<Option<MoRef>>,
    found: RefCell<HashMap<String, MoRef>>,
    /// Paths this call will look up ([`Inv::expect`]), for [`Inv::prefetch`] to check what the session file
    /// remembers of them.
    expected: RefCell<Vec<String>>,
    stores: RefCell<Option<Vec<(String, MoRef, u64)>>>,
    /// The resource pool found by [`Inv::prefetch`] (`Some(None)`: searched, none there).
    pool: OnceCell<Option<MoRef>>,
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

/// What a read asks of a remembered datacenter to check it ([`Inv::dc_checked`]), and of a remembered
/// folder or port group ([`Inv::prefetch`]).
const DC_CHECK: &[&str] = &["name", "parent"];
const PATH_CHECK: &[&str] = &["name", "parent"];

/// The key under which the session file remembers the datacenter: its path, when it is a plain name at
/// the top of the inventory (one in a folder, or with characters that paths escape, is looked up anew).
fn dc_key(cfg: &VsphereConfig) -> Option<&str> {
    let n = cfg.datacenter.as_str();
    (!n.is_empty() && !n.contains(['/', '%'])).then_some(n)
}

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
                DriverError::invalid("driver.user or driver.password", crate::common::logger::redact(&e.to_string()))
            }
            e => DriverError::failed("cannot connect to vSphere", e),
        })?;
        crate::cpi::timing::mark("session");
        let dc_hint = dc_key(cfg).and_then(|k| s.remembered.get(k)).filter(|m| m.kind == "Datacenter").cloned();
        Ok(Inv {
            s,
            cfg,
            dc: OnceCell::new(),
            dc_hint: RefCell::new(dc_hint),
            found: RefCell::new(HashMap::new()),
            expected: RefCell::new(Vec::new()),
            stores: RefCell::new(None),
            pool: OnceCell::new(),
        })
    }

    /// The datacenter, known for sure: looked up (once per call) unless a read already checked the one the
    /// session file remembers; a wrong `driver.datacenter` is a config error. A lookup that finds another
    /// object than the remembered one (or none) updates the file.
    pub fn dc(&self) -> DriverResult<MoRef> {
        if let Some(dc) = self.dc.get() {
            return Ok(dc.clone());
        }
        let dc = self
            .s
            .find(&self.cfg.datacenter)
            .map_err(ctx_err("cannot look up the datacenter"))?
            .filter(|m| m.kind == "Datacenter");
        let remembered = dc_key(self.cfg).and_then(|k| self.s.remembered.get(k));
        if let (Some(key), Some(store)) = (dc_key(self.cfg), self.s.store()) {
            if remembered != dc.as_ref() {
                store.remember(key, dc.as_ref());
            }
        }
        self.dc_hint.borrow_mut().take();
        let dc = dc.ok_or_else(|| {
            DriverError::invalid(
                "driver.datacenter",
                format!("datacenter {:?} not found on {}", self.cfg.datacenter, self.cfg.host),
            )
        })?;
        Ok(self.dc.get_or_init(|| dc).clone())
    }

    /// The datacenter for a read that can check it on the way: `(dc, true)` when it is the one the session
    /// file remembers and this call has not checked yet (the read must include `(dc, DC_CHECK)` and hand
    /// its result to [`Inv::dc_checked`]); `(dc, false)` when it is known for sure.
    fn dc_for_read(&self) -> DriverResult<(MoRef, bool)> {
        if let Some(dc) = self.dc.get() {
            return Ok((dc.clone(), false));
        }
        if let Some(hint) = self.dc_hint.borrow().clone() {
            return Ok((hint, true));
        }
        Ok((self.dc()?, false))
    }

    /// After a read that included `(dc, DC_CHECK)` of a remembered datacenter: `true` when it is still the
    /// configured one (a datacenter of that name right below the root folder), which is then known for the
    /// rest of the call; else it is dropped and the next [`Inv::dc`] looks it up.
    fn dc_checked(&self, dc: &MoRef, found: &[ObjectContent]) -> bool {
        self.dc_hint.borrow_mut().take();
        let ok = found.iter().any(|o| {
            &o.obj == dc
                && o.str("name") == Some(self.cfg.datacenter.as_str())
                && o.get("parent").and_then(Node::as_moref).as_ref() == Some(&self.s.sc.root_folder)
        });
        if ok {
            let _ = self.dc.set(dc.clone());
        } else {
            crate::debug!("the remembered datacenter {} is no longer {}; looking it up", dc.value, self.cfg.datacenter);
        }
        ok
    }

    /// `FindByInventoryPath` for things that do not come and go during a call (folders, networks, pools):
    /// asked once per call, and not at all when [`Inv::prefetch`] checked what the session file remembers.
    /// What is looked up is remembered for later calls, where it can be ([`Inv::rememberable`]).
    fn find_once(&self, path: &str, what: &str) -> DriverResult<Option<MoRef>> {
        if let Some(m) = self.found.borrow().get(path) {
            return Ok(Some(m.clone()));
        }
        let m = self.s.find(path).map_err(ctx_err(format!("cannot look up {what}")))?;
        if let Some(m) = &m {
            self.found.borrow_mut().insert(path.to_string(), m.clone());
        }
        self.remember(path, m.as_ref());
        Ok(m)
    }

    /// Writes `obj` for `path` into the session file when it can be remembered and is not already.
    fn remember(&self, path: &str, obj: Option<&MoRef>) {
        if let (Some(store), Some(_)) = (self.s.store(), self.rememberable(path)) {
            if self.s.remembered.get(path) != obj {
                store.remember(path, obj);
            }
        }
    }

    /// The paths this call will look up (the VM or template folder, the port groups): [`Inv::prefetch`]
    /// checks in its read what the session file remembers of them (name and parent of each level), so that
    /// [`Inv::find_once`] needs no request for them.
    pub fn expect(&self, paths: impl IntoIterator<Item = String>) {
        self.expected.borrow_mut().extend(paths);
    }

    /// The folder or port group path `folder`'s VMs are made in, for [`Inv::expect`].
    pub fn folder_path_of(&self, folder: &str) -> String {
        self.folder_path(folder)
    }

    /// The path of a port group, for [`Inv::expect`] and [`Inv::network`].
    pub fn network_path(&self, name: &str) -> String {
        format!("{}/network/{name}", self.cfg.datacenter)
    }

    /// Whether the session file may remember `path`: the datacenter's VM or network folder, or an object
    /// below them, all plain names (no `%`, which inventory paths use for escapes), in a datacenter it
    /// remembers. Returns the datacenter's property for that folder, its path and the names below it.
    fn rememberable<'p>(&self, path: &'p str) -> Option<(&'static str, String, Vec<&'p str>)> {
        let dc = dc_key(self.cfg)?;
        let rest = path.strip_prefix(dc)?.strip_prefix('/')?;
        let (root, tail) = rest.split_once('/').unwrap_or((rest, ""));
        let prop = match root {
            "vm" => "vmFolder",
            "network" => "networkFolder",
            _ => return None,
        };
        let parts: Vec<&str> = if tail.is_empty() { Vec::new() } else { tail.split('/').collect() };
        if parts.iter().any(|p| p.is_empty() || p.contains('%')) {
            return None;
        }
        Some((prop, format!("{dc}/{root}"), parts))
    }

    /// For an expected `path`: the datacenter property of its root folder, and each level below it with the
    /// object the session file remembers for it; `None` when a level is not remembered.
    #[allow(clippy::type_complexity)]
    fn remembered_chain(&self, path: &str) -> Option<(&'static str, String, Vec<(String, MoRef)>)> {
        let (prop, root, parts) = self.rememberable(path)?;
        let mut chain = Vec::new();
        let mut at = root.clone();
        for part in parts {
            at = format!("{at}/{part}");
            chain.push((at.clone(), self.s.remembered.get(&at)?.clone()));
        }
        Some((prop, root, chain))
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
    /// A remembered datacenter this call has not checked yet is checked in the same read.
    pub fn vm_info_with(&self, vm: &MoRef, paths: &[&str]) -> DriverResult<Option<VmInfo>> {
        let hint = self.dc_hint.borrow().clone();
        let mut objects: Vec<(MoRef, &[&str])> = vec![(vm.clone(), paths)];
        if let Some(dc) = &hint {
            objects.push((dc.clone(), DC_CHECK));
        }
        let found = self.s.properties(&objects).map_err(ctx_err(format!("cannot read VM {}", vm.value)))?;
        if let Some(dc) = &hint {
            self.dc_checked(dc, &found);
        }
        match found.iter().find(|o| &o.obj == vm) {
            Some(oc) => Ok(Some(VmInfo::from_content(oc)?)),
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
        self.remember(&path, Some(&parent));
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

    /// Whether the resource pool is found by [`Inv::prefetch`]'s batched read (no resource pool below the
    /// cluster, and a cluster, if any, right in the host folder), rather than by its inventory path.
    fn pool_in_batch(&self) -> bool {
        self.cfg.resource_pool.is_none() && self.cfg.clusters.first().is_none_or(|c| !c.contains('/'))
    }

    /// The resource pool for new VMs.
    pub fn resource_pool(&self) -> DriverResult<MoRef> {
        let dc = &self.cfg.datacenter;
        if self.pool_in_batch() {
            if self.pool.get().is_none() {
                self.prefetch(&[], true)?;
            }
            match (self.pool.get().cloned().flatten(), self.cfg.clusters.first()) {
                (Some(pool), _) => return Ok(pool),
                (None, None) => {
                    return Err(DriverError::other(format!(
                        "datacenter {dc} has no cluster or host: set driver.clusters"
                    )))
                }
                // not right in the host folder: by its path below
                (None, Some(_)) => {}
            }
        }
        let compute = match self.cfg.clusters.first() {
            Some(c) => format!("{dc}/host/{c}"),
            None => return Err(DriverError::other("driver.resource_pool needs driver.clusters")),
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

    /// Reads `objects` in one request together with what placement needs and this call does not know yet:
    /// the datacenter's datastores (name, free space) and, with `pool` where [`Inv::pool_in_batch`], the
    /// host folder's compute resources with their names and root pools (the configured cluster's, or the
    /// first one's, is the resource pool). Returns the properties of `objects` (those that exist).
    pub fn prefetch(&self, objects: &[(MoRef, &[&str])], pool: bool) -> DriverResult<Vec<ObjectContent>> {
        let want_pool = pool && self.pool_in_batch() && self.pool.get().is_none();
        let want_stores = self.stores.borrow().is_none();
        let chains: Vec<_> = std::mem::take(&mut *self.expected.borrow_mut())
            .into_iter()
            .filter(|p| !self.found.borrow().contains_key(p))
            .filter_map(|p| self.remembered_chain(&p))
            .collect();
        if !want_pool && !want_stores && chains.is_empty() {
            return self.s.properties(objects).map_err(ctx_err("cannot read properties"));
        }
        let (dc, check) = self.dc_for_read()?;
        let follow = |path: &str, then: Option<(&str, &str)>, kind: &str, paths: &[&str]| Follow {
            from: dc.clone(),
            path: path.into(),
            then: then.map(|(k, p)| (k.to_string(), p.to_string())),
            kind: kind.into(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
        };
        let mut dc_paths: Vec<&str> = Vec::new();
        if check {
            dc_paths.extend(DC_CHECK);
        }
        if want_pool {
            dc_paths.push("hostFolder");
        }
        for (prop, _, _) in &chains {
            if !dc_paths.contains(prop) {
                dc_paths.push(prop);
            }
        }
        let mut wanted: Vec<(MoRef, &[&str])> = objects.to_vec();
        if !dc_paths.is_empty() {
            wanted.push((dc.clone(), &dc_paths));
        }
        for (_, _, chain) in &chains {
            for (_, m) in chain {
                if !wanted.iter().any(|(w, _)| w == m) {
                    wanted.push((m.clone(), PATH_CHECK));
                }
            }
        }
        let mut follows = Vec::new();
        if want_pool {
            follows.push(follow("hostFolder", None, "Folder", &["childEntity"]));
            follows.push(follow(
                "hostFolder",
                Some(("Folder", "childEntity")),
                "ComputeResource",
                &["name", "resourcePool"],
            ));
        }
        if want_stores {
            follows.push(follow("datastore", None, "Datastore", DATASTORE_PROPS));
        }
        let found = self.s.properties_with(&wanted, &follows).map_err(ctx_err("cannot read the inventory"))?;
        if check && !self.dc_checked(&dc, &found) {
            // read again from the datacenter looked up anew (the remembered paths below it are not checked)
            return self.prefetch(objects, pool);
        }
        // a remembered folder or port group is the one at its path when every level still has its name and
        // its parent: then no lookup
        let dc_props = found.iter().find(|o| o.obj == dc);
        for (prop, root, chain) in &chains {
            let Some(mut parent) = dc_props.and_then(|o| o.get(prop)?.as_moref()) else { continue };
            self.found.borrow_mut().insert(root.clone(), parent.clone());
            let mut ok = Vec::new();
            for (path, m) in chain {
                let name = path.rsplit('/').next();
                let here = found.iter().any(|o| {
                    &o.obj == m
                        && o.str("name") == name
                        && o.get("parent").and_then(Node::as_moref) == Some(parent.clone())
                });
                if !here {
                    crate::debug!("the remembered {path} ({}) moved or is gone; looking it up", m.value);
                    break;
                }
                ok.push((path.clone(), m.clone()));
                parent = m.clone();
            }
            if ok.len() == chain.len() {
                self.found.borrow_mut().extend(ok);
            }
        }
        if want_stores {
            *self.stores.borrow_mut() = Some(usable_datastores(&found));
        }
        if want_pool {
            let _ = self.pool.set(Self::root_pool(&found, &dc, self.cfg.clusters.first().map(String::as_str))?);
        }
        Ok(found.into_iter().filter(|o| objects.iter().any(|(m, _)| m == &o.obj)).collect())
    }

    /// From a [`Inv::prefetch`] read: the root pool of the compute resource (cluster or host) called `name`
    /// right in the datacenter's host folder, or of the first one there; `None` when there is none.
    fn root_pool(found: &[ObjectContent], dc: &MoRef, name: Option<&str>) -> DriverResult<Option<MoRef>> {
        let host_folder = found.iter().find(|o| &o.obj == dc).and_then(|o| o.get("hostFolder")?.as_moref());
        let children = host_folder.and_then(|hf| found.iter().find(|o| o.obj == hf)).and_then(|o| o.get("childEntity"));
        let named = |m: &MoRef| match name {
            None => true,
            Some(n) => found.iter().any(|o| &o.obj == m && o.str("name") == Some(n)),
        };
        let Some(compute) = children.and_then(|n| {
            n.children.iter().filter_map(Node::as_moref).find(|m| m.kind.ends_with("ComputeResource") && named(m))
        }) else {
            return Ok(None);
        };
        let rp = found.iter().find(|o| o.obj == compute).and_then(|o| o.get("resourcePool")?.as_moref());
        rp.map(Some)
            .ok_or_else(|| DriverError::other(format!("compute resource {} has no resource pool", compute.value)))
    }

    /// Every accessible datastore of the datacenter with its free bytes: one request (after the
    /// datacenter), once per call.
    fn all_datastores(&self) -> DriverResult<Vec<(String, MoRef, u64)>> {
        if self.stores.borrow().is_none() {
            self.prefetch(&[], false)?;
        }
        Ok(self.stores.borrow().clone().unwrap_or_default())
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
        let path = self.network_path(name);
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
