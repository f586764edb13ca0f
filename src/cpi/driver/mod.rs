//! The `Driver` trait every backend implements, and the one place a backend is chosen
//! ([`from_config`]). Nothing outside this module matches on the driver kind.
pub mod bootstrap;
pub mod cid;
pub mod libvirt;
pub mod props;
pub mod undo;
pub mod vmrun;
pub mod vsphere;

use crate::common::ids::{AgentId, DiskCid, SnapshotCid, StemcellCid, VmCid};
use crate::cpi::agent_settings::Networks;
use crate::cpi::config::AgentOptions;
use crate::cpi::error::DriverResult;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The `driver` section of `cpi.json`, tagged by `kind`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum DriverConfig {
    /// KVM/QEMU through libvirt's RPC protocol, local, `qemu+ssh://` or `qemu+tls://`.
    Libvirt(libvirt::LibvirtConfig),
    /// vCenter or a standalone ESXi host over the vSphere SOAP API.
    Vsphere(vsphere::VsphereConfig),
    /// VMware Workstation, Fusion or Player through `vmrun`/`ovftool`, local or over SSH.
    Vmrun(Box<vmrun::VmrunConfig>),
}

impl DriverConfig {
    /// Checks what serde cannot (ranges, combinations).
    pub fn validate(&self) -> Result<(), String> {
        match self {
            DriverConfig::Libvirt(c) => c.validate(),
            DriverConfig::Vsphere(c) => c.validate(),
            DriverConfig::Vmrun(c) => c.validate(),
        }
    }

    /// The directory relative file names in the section are relative to (the config file's).
    pub fn set_base_dir(&mut self, dir: &Path) {
        if let DriverConfig::Libvirt(c) = self {
            c.base_dir = Some(dir.to_path_buf());
        }
    }

    /// The stemcell formats this driver imports (answered by `info`, without contacting the hypervisor).
    pub fn stemcell_formats(&self) -> &'static [&'static str] {
        match self {
            DriverConfig::Libvirt(_) => libvirt::STEMCELL_FORMATS,
            DriverConfig::Vsphere(_) => vsphere::STEMCELL_FORMATS,
            DriverConfig::Vmrun(_) => vmrun::STEMCELL_FORMATS,
        }
    }
}

/// Checks the `driver` section of a request's context against what a context may set for driver `kind`
/// (each driver's `CONTEXT_KEYS`: where to connect and as whom). `Err` names the first key that is not
/// allowed (`driver.virsh`, `driver.ssh.known_hosts`, `driver.uri parameter "command"`) and says why. A kind
/// that is not a driver's is left to the config's own check, which refuses it.
pub fn check_context(kind: &str, driver: &Map<String, Value>) -> Result<(), String> {
    let allowed = match kind {
        "libvirt" => libvirt::CONTEXT_KEYS,
        "vsphere" => vsphere::config::CONTEXT_KEYS,
        "vmrun" => vmrun::CONTEXT_KEYS,
        _ => return Ok(()),
    };
    let why = "names a program or a local path, weakens TLS or moves the state directory; it belongs in the CPI's own config file";
    for (key, value) in driver {
        if !allowed.contains(&key.as_str()) {
            return Err(format!(
                "driver.{key}: {why} (the context may set only where to connect and as whom: {})",
                allowed.join(", ")
            ));
        }
        if kind == "vmrun" && (key == "ssh" || key == "ssh_tunnel") {
            if let Value::Object(ssh) = value {
                let allowed = crate::cpi::transport::ssh::CONTEXT_KEYS;
                if let Some(k) = ssh.keys().find(|k| !allowed.contains(&k.as_str())) {
                    return Err(format!("driver.{key}.{k}: {why} (the context may set: {})", allowed.join(", ")));
                }
            }
        }
        // the file's vCenter password is for the file's vCenter: a context that names another host names its
        // own credentials too, so a password never goes to a host the file did not choose
        if kind == "vsphere" && key == "host" && !(driver.contains_key("user") && driver.contains_key("password")) {
            return Err("driver.host without driver.user and driver.password: the config file's credentials are \
                 sent only to the config file's host; a CPI config that names another host gives its own"
                .into());
        }
        if kind == "libvirt" && key == "uri" {
            match value {
                Value::String(uri) => libvirt::check_context_uri(uri)?,
                _ => return Err("driver.uri must be a string".into()),
            }
        }
    }
    Ok(())
}

/// After a request context's `driver` (`over`, already checked) was merged over the file's (`file`, as it
/// was): what the context's values need from the file's. A libvirt URI from the context takes the file URI's
/// key and known_hosts (or pkipath), which a context may not name.
pub fn complete_context(file: &Value, over: &Map<String, Value>, merged: &mut Value) {
    if merged.get("kind").and_then(Value::as_str) != Some("libvirt") {
        return;
    }
    if let (Some(Value::String(file_uri)), Some(Value::String(ctx_uri))) = (file.get("uri"), over.get("uri")) {
        merged["uri"] = Value::String(libvirt::inherit_uri_files(file_uri, ctx_uri));
    }
}

/// What the caller told us about itself, from the request.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// CPI API version of this call (1 when the caller sent none).
    pub api_version: u32,
    /// `context.vm.stemcell.api_version`: 2 and above means the agent reads full settings at boot only.
    pub stemcell_api_version: Option<u32>,
    pub director_uuid: Option<String>,
    pub request_id: Option<String>,
}

/// create_vm's arguments, typed.
#[derive(Debug, Clone)]
pub struct CreateVm {
    pub agent_id: AgentId,
    pub stemcell: StemcellCid,
    pub cloud_properties: Map<String, Value>,
    pub networks: Networks,
    pub disk_cids: Vec<DiskCid>,
    pub env: Value,
}

/// create_disk's arguments, typed.
#[derive(Debug, Clone, Copy)]
pub struct CreateDisk<'a> {
    pub size_mib: u64,
    pub cloud_properties: &'a Map<String, Value>,
    /// The VM the disk is meant for (a locality hint).
    pub vm: Option<&'a VmCid>,
}

/// What create_vm made: the CID and the networks (with MACs) for the v2 result.
#[derive(Debug, Clone)]
pub struct CreatedVm {
    pub cid: VmCid,
    pub networks: Networks,
}

/// calculate_vm_cloud_properties' argument.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmResources {
    pub ram: u64,
    pub cpu: u64,
    pub ephemeral_disk_size: u64,
}

pub type Metadata = BTreeMap<String, String>;

/// Everything a backend must do. Methods map one to one onto CPI methods; the wire protocol, error
/// mapping and response shapes stay in [`crate::cpi::rpc`].
///
/// What every driver agrees on (checked in this module's tests): a CID that does not have the shape of the ones
/// the driver makes ([`crate::common::ids::is_generated`]) is refused before the hypervisor is contacted — `has_*` answer
/// false, the others VmNotFound/DiskNotFound; sizes are checked by [`props::Limits`] in create_vm and
/// calculate_vm_cloud_properties alike; a driver without disk snapshots answers [`no_disk_snapshots`].
pub trait Driver {
    fn create_stemcell(&self, image: &Path, cloud_properties: &Map<String, Value>) -> DriverResult<StemcellCid>;
    /// Must succeed when the stemcell is already gone.
    fn delete_stemcell(&self, cid: &StemcellCid) -> DriverResult<()>;
    /// Returns a powered-on VM; on failure leaves nothing behind.
    fn create_vm(&self, ctx: &CallContext, req: &CreateVm) -> DriverResult<CreatedVm>;
    /// Detaches (never deletes) persistent disks; succeeds when the VM is already gone.
    fn delete_vm(&self, cid: &VmCid) -> DriverResult<()>;
    fn has_vm(&self, cid: &VmCid) -> DriverResult<bool>;
    fn reboot_vm(&self, cid: &VmCid) -> DriverResult<()>;
    fn set_vm_metadata(&self, cid: &VmCid, metadata: &Metadata) -> DriverResult<()>;
    /// The sizes this driver accepts (cloud_properties checks and calculate_vm_cloud_properties).
    fn limits(&self) -> &'static props::Limits;
    fn calculate_vm_cloud_properties(&self, res: &VmResources) -> DriverResult<Value> {
        self.limits().calculate(res)
    }
    fn create_disk(&self, req: &CreateDisk<'_>) -> DriverResult<DiskCid>;
    /// Succeeds when the disk is already gone.
    fn delete_disk(&self, cid: &DiskCid) -> DriverResult<()>;
    fn resize_disk(&self, cid: &DiskCid, new_size_mib: u64) -> DriverResult<()>;
    fn has_disk(&self, cid: &DiskCid) -> DriverResult<bool>;
    /// Attaches and returns the disk hint the stemcell's agent resolves; the settings medium is refreshed.
    fn attach_disk(&self, ctx: &CallContext, vm: &VmCid, disk: &DiskCid) -> DriverResult<Value>;
    fn detach_disk(&self, vm: &VmCid, disk: &DiskCid) -> DriverResult<()>;
    fn get_disks(&self, vm: &VmCid) -> DriverResult<Vec<DiskCid>>;
    fn set_disk_metadata(&self, cid: &DiskCid, metadata: &Metadata) -> DriverResult<()>;
    fn snapshot_disk(&self, cid: &DiskCid, metadata: &Metadata) -> DriverResult<SnapshotCid>;
    /// Succeeds when the snapshot is already gone. By default, the answer of a driver that makes none.
    fn delete_snapshot(&self, cid: &SnapshotCid) -> DriverResult<()> {
        Err(no_disk_snapshots(&format!("delete_snapshot of {cid}: this driver makes no disk snapshots")))
    }
}

/// Builds the configured backend. Does not contact the hypervisor.
pub fn from_config(cfg: &DriverConfig, agent: &AgentOptions) -> Box<dyn Driver> {
    match cfg {
        DriverConfig::Libvirt(c) => Box::new(libvirt::Libvirt::new(c.clone(), agent.clone())),
        DriverConfig::Vsphere(c) => Box::new(vsphere::Vsphere::new(c.clone(), agent.clone())),
        DriverConfig::Vmrun(c) => Box::new(vmrun::Vmrun::new((**c).clone(), agent.clone())),
    }
}

/// The answer of a driver that makes no disk snapshots: `NotImplemented`, which the director takes as "this CPI
/// has no snapshots" and skips (NotSupported would fail the deploy).
pub fn no_disk_snapshots(why: &str) -> crate::cpi::error::DriverError {
    crate::cpi::error::DriverError::not_implemented(why)
}

#[cfg(test)]
mod tests {
    //! The behaviour the drivers agree on, checked on all three without a hypervisor: each call below is
    //! answered before anything is contacted (the configs point at a closed loopback port and a missing tool).
    use super::*;
    use crate::cpi::error::ErrorKind;
    use serde_json::json;

    fn drivers() -> Vec<(&'static str, Box<dyn Driver>)> {
        let agent = AgentOptions::default();
        let cfg = |v: Value| -> DriverConfig { serde_json::from_value(v).unwrap() };
        vec![
            (
                "libvirt",
                from_config(
                    &cfg(
                        json!({"kind": "libvirt", "uri": "qemu+tls://127.0.0.1:1/system", "virsh": "/nonexistent/virsh"}),
                    ),
                    &agent,
                ),
            ),
            (
                "vsphere",
                from_config(
                    &cfg(
                        json!({"kind": "vsphere", "host": "https://127.0.0.1:1/sdk", "user": "u", "password": "p", "datacenter": "DC0"}),
                    ),
                    &agent,
                ),
            ),
            (
                "vmrun",
                from_config(
                    &cfg(
                        json!({"kind": "vmrun", "vm_store_path": "/nonexistent/vmcpi-store", "vmrun": "/nonexistent/vmrun"}),
                    ),
                    &agent,
                ),
            ),
        ]
    }

    #[test]
    fn malformed_cids_are_refused_before_the_hypervisor_is_contacted() {
        for (name, d) in drivers() {
            for bad in ["../../etc/passwd", "vm-0123456789ABCDEF0123", "vm-$(id)", "VM-0123456789abcdef0123"] {
                let vm = VmCid::new(bad).unwrap();
                assert!(!d.has_vm(&vm).unwrap(), "{name} has_vm {bad}");
                let e = d.reboot_vm(&vm).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::VmNotFound, "{name} reboot_vm {bad}: {e}");
                let e = d.get_disks(&vm).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::VmNotFound, "{name} get_disks {bad}: {e}");
                let e = d.delete_vm(&vm).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::VmNotFound, "{name} delete_vm {bad}: {e}");
                let disk = DiskCid::new(bad.replace("vm-", "disk-")).unwrap();
                assert!(!d.has_disk(&disk).unwrap(), "{name} has_disk {bad}");
                let e = d.delete_disk(&disk).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::DiskNotFound, "{name} delete_disk {bad}: {e}");
                let e = d.set_disk_metadata(&disk, &Metadata::new()).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::DiskNotFound, "{name} set_disk_metadata {bad}: {e}");
            }
        }
    }

    #[test]
    fn drivers_without_disk_snapshots_answer_not_implemented() {
        let disk = DiskCid::new("disk-0123456789abcde").unwrap();
        for (name, d) in drivers().into_iter().filter(|(n, _)| *n != "libvirt") {
            let e = d.snapshot_disk(&disk, &Metadata::new()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::NotImplemented, "{name}: {e}");
            let e = d.delete_snapshot(&SnapshotCid::new("snap-0123456789abcde").unwrap()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::NotImplemented, "{name}: {e}");
        }
    }

    #[test]
    fn calculate_vm_cloud_properties_validates_in_every_driver() {
        let res = |cpu, ram, disk| VmResources { cpu, ram, ephemeral_disk_size: disk };
        for (name, d) in drivers() {
            let v = d.calculate_vm_cloud_properties(&res(2, 2048, 4096)).unwrap();
            assert_eq!(v, json!({"cpu": 2, "ram": 2048, "disk": 4096}), "{name}");
            for bad in
                [res(0, 1024, 0), res(1, 0, 0), res(1 << 40, 1024, 0), res(1, u64::MAX, 0), res(1, 1024, u64::MAX)]
            {
                let e = d.calculate_vm_cloud_properties(&bad).unwrap_err();
                assert_eq!((e.kind(), e.retryable()), (ErrorKind::Invalid, false), "{name} {bad:?}: {e}");
            }
        }
    }
}
