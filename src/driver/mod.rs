//! The `Driver` trait every backend implements, and the one place a backend is chosen
//! ([`from_config`]). Nothing outside this module matches on the driver kind.
pub mod libvirt;
pub mod vmrun;
pub mod vsphere;

use crate::agent_settings::Networks;
use crate::config::AgentOptions;
use crate::error::DriverResult;
use crate::ids::{AgentId, DiskCid, SnapshotCid, StemcellCid, VmCid};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The `driver` section of `cpi.json`, tagged by `kind`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum DriverConfig {
    /// KVM/QEMU through libvirt (`virsh`), local or `qemu+ssh://`.
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

    /// The stemcell formats this driver imports (answered by `info`, without contacting the hypervisor).
    pub fn stemcell_formats(&self) -> &'static [&'static str] {
        match self {
            DriverConfig::Libvirt(_) => libvirt::STEMCELL_FORMATS,
            DriverConfig::Vsphere(_) => vsphere::STEMCELL_FORMATS,
            DriverConfig::Vmrun(_) => vmrun::STEMCELL_FORMATS,
        }
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
/// mapping and response shapes stay in [`crate::rpc`].
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
    fn calculate_vm_cloud_properties(&self, res: &VmResources) -> DriverResult<Value>;
    fn create_disk(
        &self,
        size_mib: u64,
        cloud_properties: &Map<String, Value>,
        vm: Option<&VmCid>,
    ) -> DriverResult<DiskCid>;
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
    /// Succeeds when the snapshot is already gone.
    fn delete_snapshot(&self, cid: &SnapshotCid) -> DriverResult<()>;
}

/// Builds the configured backend. Does not contact the hypervisor.
pub fn from_config(cfg: &DriverConfig, agent: &AgentOptions) -> Box<dyn Driver> {
    match cfg {
        DriverConfig::Libvirt(c) => Box::new(libvirt::Libvirt::new(c.clone(), agent.clone())),
        DriverConfig::Vsphere(c) => Box::new(vsphere::Vsphere::new(c.clone(), agent.clone())),
        DriverConfig::Vmrun(c) => Box::new(vmrun::Vmrun::new((**c).clone(), agent.clone())),
    }
}
