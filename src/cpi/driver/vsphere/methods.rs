//! One typed request per vSphere method the driver calls, each writing its own body through the one
//! envelope writer ([`super::soap::envelope`]). Field order follows the vim25 WSDL sequences: real servers
//! reject elements out of order.
use super::soap::{envelope, MoRef, Node, Xml};

/// A vSphere method call.
pub trait Request {
    /// The SOAP operation name.
    const NAME: &'static str;
    /// Whether the call only reads, so that a connection failure may be retried without doing twice what
    /// the server may already have done.
    const READ_ONLY: bool = false;
    /// Writes the elements inside the operation element.
    fn body(&self, x: &mut Xml);
    /// The whole envelope.
    fn encode(&self) -> Vec<u8> {
        envelope(Self::NAME, |x| self.body(x))
    }
}

macro_rules! this_only {
    ($(#[$doc:meta])* $name:ident, $op:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            pub this: MoRef,
        }
        impl Request for $name {
            const NAME: &'static str = $op;
            fn body(&self, x: &mut Xml) {
                x.moref("_this", &self.this);
            }
        }
    };
}

/// `ServiceInstance.RetrieveServiceContent`.
#[derive(Debug, Clone)]
pub struct RetrieveServiceContent {
    pub this: MoRef,
}
impl Request for RetrieveServiceContent {
    const NAME: &'static str = "RetrieveServiceContent";
    const READ_ONLY: bool = true;
    fn body(&self, x: &mut Xml) {
        x.moref("_this", &self.this);
    }
}
this_only!(/// `SessionManager.Logout`.
    Logout, "Logout");
this_only!(/// `VirtualMachine.PowerOnVM_Task` (no host: the server picks).
    PowerOnVm, "PowerOnVM_Task");
this_only!(/// `VirtualMachine.PowerOffVM_Task` (hard power off).
    PowerOffVm, "PowerOffVM_Task");
this_only!(/// `VirtualMachine.ResetVM_Task` (hard reset).
    ResetVm, "ResetVM_Task");
this_only!(/// `VirtualMachine.RebootGuest` (needs VMware Tools in the guest).
    RebootGuest, "RebootGuest");
this_only!(/// `ManagedEntity.Destroy_Task`.
    Destroy, "Destroy_Task");
this_only!(/// `HttpNfcLease.HttpNfcLeaseComplete`.
    HttpNfcLeaseComplete, "HttpNfcLeaseComplete");

/// `SessionManager.Login`. The password is escaped like any other text and never logged.
#[derive(Clone)]
pub struct Login {
    pub this: MoRef,
    pub user: String,
    pub password: String,
}
impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login").field("user", &self.user).field("password", &"<redacted>").finish()
    }
}
impl Request for Login {
    const NAME: &'static str = "Login";
    fn body(&self, x: &mut Xml) {
        x.moref("_this", &self.this).text("userName", &self.user).text("password", &self.password);
    }
}

/// `SearchIndex.FindByInventoryPath`: an empty reply means "not there".
#[derive(Debug, Clone)]
pub struct FindByInventoryPath {
    pub this: MoRef,
    pub path: String,
}
impl Request for FindByInventoryPath {
    const NAME: &'static str = "FindByInventoryPath";
    const READ_ONLY: bool = true;
    fn body(&self, x: &mut Xml) {
        x.moref("_this", &self.this).text("inventoryPath", &self.path);
    }
}

/// `PropertyCollector.RetrievePropertiesEx` for a list of objects, each with the properties wanted, and
/// the objects one reference away from others ([`Follow`]), all in one request.
#[derive(Debug, Clone)]
pub struct RetrievePropertiesEx {
    pub this: MoRef,
    pub objects: Vec<(MoRef, Vec<String>)>,
    pub follow: Vec<Follow>,
}

/// The objects that `path` of `from` refers to (a datacenter's `datastore`, a folder's `childEntity`),
/// with `paths` of those of type `kind` (`from` itself is reported only when it is in `objects` too).
#[derive(Debug, Clone)]
pub struct Follow {
    pub from: MoRef,
    pub path: String,
    /// A second step from there: (type, path), e.g. (`Folder`, `childEntity`) after a datacenter's
    /// `hostFolder`.
    pub then: Option<(String, String)>,
    pub kind: String,
    pub paths: Vec<String>,
}

impl Request for RetrievePropertiesEx {
    const NAME: &'static str = "RetrievePropertiesEx";
    const READ_ONLY: bool = true;
    fn body(&self, x: &mut Xml) {
        x.moref("_this", &self.this).open("specSet");
        // one propSet per type, with the union of the wanted paths
        let mut types: Vec<(&str, Vec<&str>)> = Vec::new();
        let wanted = self
            .objects
            .iter()
            .map(|(o, p)| (o.kind.as_str(), p))
            .chain(self.follow.iter().map(|f| (f.kind.as_str(), &f.paths)));
        for (kind, paths) in wanted {
            let entry = match types.iter_mut().find(|(t, _)| *t == kind) {
                Some(e) => e,
                None => {
                    types.push((kind, Vec::new()));
                    let last = types.len() - 1;
                    &mut types[last]
                }
            };
            for p in paths {
                if !entry.1.contains(&p.as_str()) {
                    entry.1.push(p);
                }
            }
        }
        for (t, paths) in &types {
            x.open("propSet").text("type", t);
            for p in paths {
                x.text("pathSet", p);
            }
            x.close("propSet");
        }
        for (obj, _) in &self.objects {
            x.open("objectSet").moref("obj", obj).bool("skip", false);
            for (i, f) in self.follow.iter().enumerate().filter(|(_, f)| &f.from == obj) {
                f.write_traversal(i, x);
            }
            x.close("objectSet");
        }
        for (i, f) in self.follow.iter().enumerate() {
            if !self.objects.iter().any(|(o, _)| o == &f.from) {
                x.open("objectSet").moref("obj", &f.from).bool("skip", true);
                f.write_traversal(i, x);
                x.close("objectSet");
            }
        }
        x.close("specSet").open("options").close("options");
    }
}

impl Follow {
    fn write_traversal(&self, i: usize, x: &mut Xml) {
        x.open_typed("selectSet", "TraversalSpec")
            .text("name", &format!("follow{i}"))
            .text("type", &self.from.kind)
            .text("path", &self.path)
            .bool("skip", false);
        if let Some((kind, path)) = &self.then {
            x.open_typed("selectSet", "TraversalSpec")
                .text("name", &format!("follow{i}then"))
                .text("type", kind)
                .text("path", path)
                .bool("skip", false)
                .close("selectSet");
        }
        x.close("selectSet");
    }
}

/// `PropertyCollector.ContinueRetrievePropertiesEx`: the next page of a RetrievePropertiesEx result.
#[derive(Debug, Clone)]
pub struct ContinueRetrievePropertiesEx {
    pub this: MoRef,
    pub token: String,
}
impl Request for ContinueRetrievePropertiesEx {
    const NAME: &'static str = "ContinueRetrievePropertiesEx";
    const READ_ONLY: bool = true;
    fn body(&self, x: &mut Xml) {
        x.moref("_this", &self.this).text("token", &self.token);
    }
}

/// `PropertyCollector.CreateFilter` watching `paths` of one object (a task or an NFC lease).
#[derive(Debug, Clone)]
pub struct CreateFilter {
    pub this: MoRef,
    pub obj: MoRef,
    pub paths: Vec<String>,
}
impl Request for CreateFilter {
    const NAME: &'static str = "CreateFilter";
    fn body(&self, x: &mut Xml) {
        x.moref("_this", &self.this).open("spec").open("propSet").text("type", &self.obj.kind);
        for p in &self.paths {
            x.text("pathSet", p);
        }
        x.close("propSet").open("objectSet").moref("obj", &self.obj).bool("skip", false).close("objectSet");
        x.close("spec").bool("partialUpdates", false);
    }
}

this_only!(/// `PropertyFilter.DestroyPropertyFilter`.
    DestroyPropertyFilter, "DestroyPropertyFilter");

/// `PropertyCollector.WaitForUpdatesEx`: blocks on the server until something watched changes.
#[derive(Debug, Clone)]
pub struct WaitForUpdatesEx {
    pub this: MoRef,
    pub version: String,
    pub max_wait_seconds: u32,
}
impl Request for WaitForUpdatesEx {
    const NAME: &'static str = "WaitForUpdatesEx";
    const READ_ONLY: bool = true;
    fn body(&self, x: &mut Xml) {
        x.moref("_this", &self.this).text("version", &self.version);
        x.open("options").num("maxWaitSeconds", self.max_wait_seconds).close("options");
    }
}

/// `Folder.CreateFolder`.
#[derive(Debug, Clone)]
pub struct CreateFolder {
    pub this: MoRef,
    pub name: String,
}
impl Request for CreateFolder {
    const NAME: &'static str = "CreateFolder";
    fn body(&self, x: &mut Xml) {
        x.moref("_this", &self.this).text("name", &self.name);
    }
}

/// `OvfManager.CreateImportSpec`: thin disks, the VM named `entity_name`.
#[derive(Debug, Clone)]
pub struct CreateImportSpec {
    pub this: MoRef,
    pub ovf_descriptor: String,
    pub resource_pool: MoRef,
    pub datastore: MoRef,
    pub entity_name: String,
}
impl Request for CreateImportSpec {
    const NAME: &'static str = "CreateImportSpec";
    fn body(&self, x: &mut Xml) {
        x.moref("_this", &self.this).text("ovfDescriptor", &self.ovf_descriptor);
        x.moref("resourcePool", &self.resource_pool).moref("datastore", &self.datastore);
        x.open("cisp").text("locale", "").text("deploymentOption", "").text("entityName", &self.entity_name);
        x.text("diskProvisioning", "thin").close("cisp");
    }
}

/// `ResourcePool.ImportVApp` with the spec CreateImportSpec returned, written back as received.
#[derive(Debug, Clone)]
pub struct ImportVApp {
    pub this: MoRef,
    pub spec: Node,
    pub folder: Option<MoRef>,
    pub host: Option<MoRef>,
}
impl Request for ImportVApp {
    const NAME: &'static str = "ImportVApp";
    fn body(&self, x: &mut Xml) {
        x.moref("_this", &self.this).node("spec", &self.spec);
        if let Some(f) = &self.folder {
            x.moref("folder", f);
        }
        if let Some(h) = &self.host {
            x.moref("host", h);
        }
    }
}

/// `HttpNfcLease.HttpNfcLeaseProgress`.
#[derive(Debug, Clone)]
pub struct HttpNfcLeaseProgress {
    pub this: MoRef,
    pub percent: u32,
}
impl Request for HttpNfcLeaseProgress {
    const NAME: &'static str = "HttpNfcLeaseProgress";
    fn body(&self, x: &mut Xml) {
        x.moref("_this", &self.this).num("percent", self.percent);
    }
}

/// `HttpNfcLease.HttpNfcLeaseAbort` with the reason shown in vCenter's task list.
#[derive(Debug, Clone)]
pub struct HttpNfcLeaseAbort {
    pub this: MoRef,
    pub reason: String,
}
impl Request for HttpNfcLeaseAbort {
    const NAME: &'static str = "HttpNfcLeaseAbort";
    fn body(&self, x: &mut Xml) {
        x.moref("_this", &self.this);
        x.open_typed("fault", "LocalizedMethodFault")
            .open_typed("fault", "SystemError")
            .text("reason", &self.reason)
            .close("fault");
        x.text("localizedMessage", &self.reason).close("fault");
    }
}

/// `VirtualMachine.CreateSnapshot_Task` (no memory, no quiescing: the stemcell VM never runs).
#[derive(Debug, Clone)]
pub struct CreateSnapshot {
    pub this: MoRef,
    pub name: String,
}
impl Request for CreateSnapshot {
    const NAME: &'static str = "CreateSnapshot_Task";
    fn body(&self, x: &mut Xml) {
        x.moref("_this", &self.this).text("name", &self.name).bool("memory", false).bool("quiesce", false);
    }
}

/// `VirtualMachine.CloneVM_Task`: a linked clone (child disks on the snapshot's disks) when `snapshot`
/// is given. Size, devices and power state are set afterwards by reconfigure and power-on.
#[derive(Debug, Clone)]
pub struct CloneVm {
    pub this: MoRef,
    pub folder: MoRef,
    pub name: String,
    pub pool: MoRef,
    pub datastore: Option<MoRef>,
    pub snapshot: Option<MoRef>,
}
impl Request for CloneVm {
    const NAME: &'static str = "CloneVM_Task";
    fn body(&self, x: &mut Xml) {
        x.moref("_this", &self.this).moref("folder", &self.folder).text("name", &self.name);
        x.open("spec").open("location");
        if let Some(ds) = &self.datastore {
            x.moref("datastore", ds);
        }
        if self.snapshot.is_some() {
            x.text("diskMoveType", "createNewChildDiskBacking");
        }
        x.moref("pool", &self.pool).close("location");
        x.bool("template", false).bool("powerOn", false);
        if let Some(s) = &self.snapshot {
            x.moref("snapshot", s);
        }
        x.close("spec");
    }
}

/// `Folder.CreateVM_Task` (the standalone-ESXi path: no CloneVM there).
#[derive(Debug, Clone)]
pub struct CreateVm {
    pub this: MoRef,
    pub config: VmConfigSpec,
    pub pool: MoRef,
}
impl Request for CreateVm {
    const NAME: &'static str = "CreateVM_Task";
    fn body(&self, x: &mut Xml) {
        x.moref("_this", &self.this);
        self.config.write("config", x);
        x.moref("pool", &self.pool);
    }
}

/// `VirtualMachine.ReconfigVM_Task`.
#[derive(Debug, Clone)]
pub struct ReconfigVm {
    pub this: MoRef,
    pub spec: VmConfigSpec,
}
impl Request for ReconfigVm {
    const NAME: &'static str = "ReconfigVM_Task";
    fn body(&self, x: &mut Xml) {
        x.moref("_this", &self.this);
        self.spec.write("spec", x);
    }
}

/// `FileManager.MakeDirectory` (parents created; an existing directory is fine for the caller).
#[derive(Debug, Clone)]
pub struct MakeDirectory {
    pub this: MoRef,
    pub name: String,
    pub datacenter: MoRef,
}
impl Request for MakeDirectory {
    const NAME: &'static str = "MakeDirectory";
    fn body(&self, x: &mut Xml) {
        x.moref("_this", &self.this)
            .text("name", &self.name)
            .moref("datacenter", &self.datacenter)
            .bool("createParentDirectories", true);
    }
}

/// `FileManager.DeleteDatastoreFile_Task` (a file or a whole directory).
#[derive(Debug, Clone)]
pub struct DeleteDatastoreFile {
    pub this: MoRef,
    pub name: String,
    pub datacenter: MoRef,
}
impl Request for DeleteDatastoreFile {
    const NAME: &'static str = "DeleteDatastoreFile_Task";
    fn body(&self, x: &mut Xml) {
        x.moref("_this", &self.this).text("name", &self.name).moref("datacenter", &self.datacenter);
    }
}

/// `VirtualDiskManager.CreateVirtualDisk_Task`: a thin (or `disk_type`) lsiLogic disk.
#[derive(Debug, Clone)]
pub struct CreateVirtualDisk {
    pub this: MoRef,
    pub name: String,
    pub datacenter: MoRef,
    pub disk_type: String,
    pub capacity_kb: u64,
}
impl Request for CreateVirtualDisk {
    const NAME: &'static str = "CreateVirtualDisk_Task";
    fn body(&self, x: &mut Xml) {
        x.moref("_this", &self.this).text("name", &self.name).moref("datacenter", &self.datacenter);
        x.open_typed("spec", "FileBackedVirtualDiskSpec")
            .text("diskType", &self.disk_type)
            .text("adapterType", "lsiLogic");
        x.num("capacityKb", self.capacity_kb).close("spec");
    }
}

/// `VirtualDiskManager.DeleteVirtualDisk_Task`.
#[derive(Debug, Clone)]
pub struct DeleteVirtualDisk {
    pub this: MoRef,
    pub name: String,
    pub datacenter: MoRef,
}
impl Request for DeleteVirtualDisk {
    const NAME: &'static str = "DeleteVirtualDisk_Task";
    fn body(&self, x: &mut Xml) {
        x.moref("_this", &self.this).text("name", &self.name).moref("datacenter", &self.datacenter);
    }
}

/// `VirtualDiskManager.ExtendVirtualDisk_Task` (grow only).
#[derive(Debug, Clone)]
pub struct ExtendVirtualDisk {
    pub this: MoRef,
    pub name: String,
    pub datacenter: MoRef,
    pub new_capacity_kb: u64,
}
impl Request for ExtendVirtualDisk {
    const NAME: &'static str = "ExtendVirtualDisk_Task";
    fn body(&self, x: &mut Xml) {
        x.moref("_this", &self.this).text("name", &self.name).moref("datacenter", &self.datacenter);
        x.num("newCapacityKb", self.new_capacity_kb).bool("eagerZero", false);
    }
}

/// `CustomFieldsManager.AddCustomFieldDef` for virtual machines.
#[derive(Debug, Clone)]
pub struct AddCustomFieldDef {
    pub this: MoRef,
    pub name: String,
}
impl Request for AddCustomFieldDef {
    const NAME: &'static str = "AddCustomFieldDef";
    fn body(&self, x: &mut Xml) {
        x.moref("_this", &self.this).text("name", &self.name).text("moType", "VirtualMachine");
    }
}

/// `CustomFieldsManager.SetField`.
#[derive(Debug, Clone)]
pub struct SetField {
    pub this: MoRef,
    pub entity: MoRef,
    pub key: i32,
    pub value: String,
}
impl Request for SetField {
    const NAME: &'static str = "SetField";
    fn body(&self, x: &mut Xml) {
        x.moref("_this", &self.this).moref("entity", &self.entity).num("key", self.key).text("value", &self.value);
    }
}

/// Guest credentials (`NamePasswordAuthentication`); Debug never shows the password.
#[derive(Clone)]
pub struct GuestAuth {
    pub user: String,
    pub password: String,
}
impl std::fmt::Debug for GuestAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestAuth").field("user", &self.user).field("password", &"<redacted>").finish()
    }
}
impl GuestAuth {
    fn write(&self, x: &mut Xml) {
        x.open_typed("auth", "NamePasswordAuthentication").bool("interactiveSession", false);
        x.text("username", &self.user).text("password", &self.password).close("auth");
    }
}

/// `GuestProcessManager.StartProgramInGuest`.
#[derive(Debug, Clone)]
pub struct StartProgramInGuest {
    pub this: MoRef,
    pub vm: MoRef,
    pub auth: GuestAuth,
    pub program: String,
    pub arguments: String,
}
impl Request for StartProgramInGuest {
    const NAME: &'static str = "StartProgramInGuest";
    fn body(&self, x: &mut Xml) {
        x.moref("_this", &self.this).moref("vm", &self.vm);
        self.auth.write(x);
        x.open_typed("spec", "GuestProgramSpec")
            .text("programPath", &self.program)
            .text("arguments", &self.arguments)
            .close("spec");
    }
}

/// `GuestProcessManager.ListProcessesInGuest` (all processes when `pids` is empty).
#[derive(Debug, Clone)]
pub struct ListProcessesInGuest {
    pub this: MoRef,
    pub vm: MoRef,
    pub auth: GuestAuth,
    pub pids: Vec<i64>,
}
impl Request for ListProcessesInGuest {
    const NAME: &'static str = "ListProcessesInGuest";
    const READ_ONLY: bool = true;
    fn body(&self, x: &mut Xml) {
        x.moref("_this", &self.this).moref("vm", &self.vm);
        self.auth.write(x);
        for p in &self.pids {
            x.num("pids", p);
        }
    }
}

/// The subset of `VirtualMachineConfigSpec` the driver sends, in WSDL order.
#[derive(Debug, Clone, Default)]
pub struct VmConfigSpec {
    pub name: Option<String>,
    pub guest_id: Option<String>,
    pub annotation: Option<String>,
    /// `files.vmPathName`, e.g. `[ds1]` (the server picks the folder).
    pub vm_path_name: Option<String>,
    pub num_cpus: Option<u32>,
    pub memory_mb: Option<u64>,
    pub device_change: Vec<DeviceChange>,
    pub extra_config: Vec<(String, String)>,
    pub firmware: Option<String>,
}

impl VmConfigSpec {
    pub fn write(&self, name: &str, x: &mut Xml) {
        x.open(name).opt_text("name", self.name.as_deref()).opt_text("guestId", self.guest_id.as_deref());
        x.opt_text("annotation", self.annotation.as_deref());
        if let Some(p) = &self.vm_path_name {
            x.open("files").text("vmPathName", p).close("files");
        }
        if let Some(n) = self.num_cpus {
            x.num("numCPUs", n);
        }
        if let Some(m) = self.memory_mb {
            x.num("memoryMB", m);
        }
        for c in &self.device_change {
            c.write(x);
        }
        for (k, v) in &self.extra_config {
            x.open("extraConfig").text("key", k).typed_text("value", "xsd:string", v).close("extraConfig");
        }
        x.opt_text("firmware", self.firmware.as_deref());
        x.close(name);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Add,
    Remove,
    Edit,
}

/// One `VirtualDeviceConfigSpec`.
#[derive(Debug, Clone)]
pub struct DeviceChange {
    pub operation: Operation,
    /// `create` makes a new disk file; `None` attaches or detaches an existing one.
    pub create_file: bool,
    pub device: Device,
}

impl DeviceChange {
    pub fn add(device: Device) -> DeviceChange {
        DeviceChange { operation: Operation::Add, create_file: false, device }
    }
    pub fn create(device: Device) -> DeviceChange {
        DeviceChange { operation: Operation::Add, create_file: true, device }
    }
    fn write(&self, x: &mut Xml) {
        x.open("deviceChange").text(
            "operation",
            match self.operation {
                Operation::Add => "add",
                Operation::Remove => "remove",
                Operation::Edit => "edit",
            },
        );
        if self.create_file {
            x.text("fileOperation", "create");
        }
        self.device.write(x);
        x.close("deviceChange");
    }
}

/// How a NIC reaches its network.
#[derive(Debug, Clone, PartialEq)]
pub enum NicBacking {
    /// A standard port group (`Network`).
    Standard { name: String, network: MoRef },
    /// A distributed port group.
    Distributed { switch_uuid: String, portgroup_key: String },
}

/// The devices the driver builds; `Existing` writes back a device as the server described it.
#[derive(Debug, Clone)]
pub enum Device {
    Disk { key: i32, controller_key: i32, unit: i32, capacity_kb: u64, file_name: String, parent: Option<String> },
    Nic { key: i32, backing: NicBacking, mac: String },
    Cdrom { key: i32, controller_key: i32, unit: i32, iso: String },
    ScsiController { key: i32, bus: i32 },
    Existing(Node),
}

impl Device {
    fn write(&self, x: &mut Xml) {
        match self {
            Device::Disk { key, controller_key, unit, capacity_kb, file_name, parent } => {
                x.open_typed("device", "VirtualDisk").num("key", key);
                x.open_typed("backing", "VirtualDiskFlatVer2BackingInfo")
                    .text("fileName", file_name)
                    .text("diskMode", "persistent");
                x.bool("thinProvisioned", true);
                if let Some(p) = parent {
                    x.open_typed("parent", "VirtualDiskFlatVer2BackingInfo")
                        .text("fileName", p)
                        .text("diskMode", "persistent")
                        .close("parent");
                }
                x.close("backing").num("controllerKey", controller_key).num("unitNumber", unit);
                if *capacity_kb > 0 {
                    x.num("capacityInKB", capacity_kb);
                }
                x.close("device");
            }
            Device::Nic { key, backing, mac } => {
                x.open_typed("device", "VirtualVmxnet3").num("key", key);
                match backing {
                    NicBacking::Standard { name, network } => {
                        x.open_typed("backing", "VirtualEthernetCardNetworkBackingInfo")
                            .text("deviceName", name)
                            .moref("network", network);
                    }
                    NicBacking::Distributed { switch_uuid, portgroup_key } => {
                        x.open_typed("backing", "VirtualEthernetCardDistributedVirtualPortBackingInfo").open("port");
                        x.text("switchUuid", switch_uuid).text("portgroupKey", portgroup_key).close("port");
                    }
                }
                x.close("backing");
                x.open("connectable")
                    .bool("startConnected", true)
                    .bool("allowGuestControl", true)
                    .bool("connected", true)
                    .close("connectable");
                x.text("addressType", "manual").text("macAddress", mac).close("device");
            }
            Device::Cdrom { key, controller_key, unit, iso } => {
                x.open_typed("device", "VirtualCdrom").num("key", key);
                // deviceInfo is optional for vSphere; vcsim dereferences it when editing a device
                x.open("deviceInfo")
                    .text("label", "CD/DVD drive 1")
                    .text("summary", "BOSH agent settings")
                    .close("deviceInfo");
                x.open_typed("backing", "VirtualCdromIsoBackingInfo").text("fileName", iso).close("backing");
                // the agent ejects the medium after reading it: keep the guest from disconnecting it
                x.open("connectable")
                    .bool("startConnected", true)
                    .bool("allowGuestControl", false)
                    .bool("connected", true)
                    .close("connectable");
                x.num("controllerKey", controller_key).num("unitNumber", unit).close("device");
            }
            Device::ScsiController { key, bus } => {
                x.open_typed("device", "ParaVirtualSCSIController").num("key", key).num("busNumber", bus);
                x.text("sharedBus", "noSharing").close("device");
            }
            Device::Existing(n) => {
                x.node("device", n);
            }
        }
    }
}
