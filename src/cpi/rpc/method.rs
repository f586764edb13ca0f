//! The request's method and positional arguments, parsed once into [`Method`]. Errors name the argument.
use crate::common::ids::{AgentId, DiskCid, SnapshotCid, StemcellCid, VmCid};
use crate::cpi::agent_settings::Networks;
use crate::cpi::driver::{CreateVm, Metadata, VmResources};
use crate::cpi::rpc::wire::type_name;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::path::PathBuf;

/// One CPI call with typed arguments.
#[derive(Debug, Clone)]
pub enum Method {
    Info,
    CreateStemcell {
        image_path: PathBuf,
        cloud_properties: Map<String, Value>,
    },
    DeleteStemcell(StemcellCid),
    CreateVm(Box<CreateVm>),
    DeleteVm(VmCid),
    HasVm(VmCid),
    RebootVm(VmCid),
    SetVmMetadata(VmCid, Metadata),
    SetDiskMetadata(DiskCid, Metadata),
    CalculateVmCloudProperties(VmResources),
    CreateDisk {
        size_mib: u64,
        cloud_properties: Map<String, Value>,
        vm: Option<VmCid>,
    },
    DeleteDisk(DiskCid),
    ResizeDisk(DiskCid, u64),
    UpdateDisk(DiskCid, u64),
    HasDisk(DiskCid),
    AttachDisk(VmCid, DiskCid),
    DetachDisk(VmCid, DiskCid),
    GetDisks(VmCid),
    SnapshotDisk(DiskCid, Metadata),
    DeleteSnapshot(SnapshotCid),
    /// Deprecated v1 methods that a CPI should refuse with NotSupported (the director then recreates).
    ConfigureNetworks,
}

/// Why a request cannot be turned into a [`Method`].
#[derive(Debug, thiserror::Error)]
pub enum MethodError {
    #[error("unknown method '{0}'")]
    Unknown(String),
    #[error("{method}: argument {index} ({name}) is missing")]
    Missing { method: &'static str, index: usize, name: &'static str },
    #[error("{method}: argument {index} ({name}) is invalid: {reason}")]
    Invalid { method: &'static str, index: usize, name: &'static str, reason: String },
}

/// The names of every method this CPI dispatches (for `--help` and tests).
pub const METHODS: &[&str] = &[
    "info",
    "create_stemcell",
    "delete_stemcell",
    "create_vm",
    "delete_vm",
    "has_vm",
    "reboot_vm",
    "set_vm_metadata",
    "set_disk_metadata",
    "calculate_vm_cloud_properties",
    "create_disk",
    "delete_disk",
    "resize_disk",
    "update_disk",
    "has_disk",
    "attach_disk",
    "detach_disk",
    "get_disks",
    "snapshot_disk",
    "delete_snapshot",
];

struct Args<'a> {
    method: &'static str,
    args: &'a [Value],
}

impl Args<'_> {
    fn req<T: DeserializeOwned>(&self, index: usize, name: &'static str) -> Result<T, MethodError> {
        match self.args.get(index) {
            None => Err(MethodError::Missing { method: self.method, index, name }),
            Some(v) => self.decode(index, name, v),
        }
    }

    /// An optional argument: absent or null gives `None`.
    fn opt<T: DeserializeOwned>(&self, index: usize, name: &'static str) -> Result<Option<T>, MethodError> {
        match self.args.get(index) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => self.decode(index, name, v).map(Some),
        }
    }

    fn decode<T: DeserializeOwned>(&self, index: usize, name: &'static str, v: &Value) -> Result<T, MethodError> {
        T::deserialize(v).map_err(|e| MethodError::Invalid {
            method: self.method,
            index,
            name,
            reason: format!("{e} (got {})", type_name(v)),
        })
    }

    fn object(&self, index: usize, name: &'static str, optional: bool) -> Result<Map<String, Value>, MethodError> {
        match self.args.get(index) {
            None | Some(Value::Null) if optional => Ok(Map::new()),
            None => Err(MethodError::Missing { method: self.method, index, name }),
            Some(Value::Object(m)) => Ok(m.clone()),
            Some(v) => Err(MethodError::Invalid {
                method: self.method,
                index,
                name,
                reason: format!("expected an object, got {}", type_name(v)),
            }),
        }
    }

    /// A size in MiB: a positive integer below 64 TiB.
    fn size(&self, index: usize, name: &'static str) -> Result<u64, MethodError> {
        let v: u64 = self.req(index, name)?;
        if v == 0 || v > 64 * 1024 * 1024 {
            return Err(MethodError::Invalid {
                method: self.method,
                index,
                name,
                reason: format!("{v} MiB is out of range (1 MiB to 64 TiB)"),
            });
        }
        Ok(v)
    }

    /// Metadata values are strings; numbers and booleans are accepted and turned into strings.
    fn metadata(&self, index: usize, name: &'static str) -> Result<Metadata, MethodError> {
        let m = self.object(index, name, false)?;
        let mut out = Metadata::new();
        for (k, v) in m {
            let s = match v {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null => String::new(),
                other => {
                    return Err(MethodError::Invalid {
                        method: self.method,
                        index,
                        name,
                        reason: format!("value of key '{k}' must be a string, got {}", type_name(&other)),
                    })
                }
            };
            out.insert(k, s);
        }
        Ok(out)
    }
}

impl Method {
    /// Types the arguments of `method`. Extra trailing arguments are ignored (API v3 adds some).
    pub fn parse(method: &str, args: &[Value]) -> Result<Method, MethodError> {
        let name: &'static str = METHODS
            .iter()
            .copied()
            .chain(["configure_networks"])
            .find(|m| *m == method)
            .ok_or_else(|| MethodError::Unknown(method.to_string()))?;
        let a = Args { method: name, args };
        Ok(match name {
            "info" => Method::Info,
            "create_stemcell" => Method::CreateStemcell {
                image_path: {
                    let p: String = a.req(0, "image_path")?;
                    if p.is_empty() || p.contains('\0') {
                        return Err(MethodError::Invalid {
                            method: name,
                            index: 0,
                            name: "image_path",
                            reason: "must be a non-empty path".into(),
                        });
                    }
                    PathBuf::from(p)
                },
                cloud_properties: a.object(1, "cloud_properties", true)?,
            },
            "delete_stemcell" => Method::DeleteStemcell(a.req(0, "stemcell_cid")?),
            "create_vm" => Method::CreateVm(Box::new(CreateVm {
                agent_id: a.req::<AgentId>(0, "agent_id")?,
                stemcell: a.req::<StemcellCid>(1, "stemcell_cid")?,
                cloud_properties: a.object(2, "cloud_properties", true)?,
                networks: a.opt::<Networks>(3, "networks")?.unwrap_or_default(),
                disk_cids: a.opt::<Vec<DiskCid>>(4, "disk_cids")?.unwrap_or_default(),
                env: Value::Object(a.object(5, "env", true)?),
            })),
            "delete_vm" => Method::DeleteVm(a.req(0, "vm_cid")?),
            "has_vm" => Method::HasVm(a.req(0, "vm_cid")?),
            "reboot_vm" => Method::RebootVm(a.req(0, "vm_cid")?),
            "set_vm_metadata" => Method::SetVmMetadata(a.req(0, "vm_cid")?, a.metadata(1, "metadata")?),
            "set_disk_metadata" => Method::SetDiskMetadata(a.req(0, "disk_cid")?, a.metadata(1, "metadata")?),
            "calculate_vm_cloud_properties" => Method::CalculateVmCloudProperties(a.req(0, "vm_resources")?),
            "create_disk" => Method::CreateDisk {
                size_mib: a.size(0, "size")?,
                cloud_properties: a.object(1, "cloud_properties", true)?,
                vm: a.opt(2, "vm_cid")?,
            },
            "delete_disk" => Method::DeleteDisk(a.req(0, "disk_cid")?),
            "resize_disk" => Method::ResizeDisk(a.req(0, "disk_cid")?, a.size(1, "new_size")?),
            "update_disk" => Method::UpdateDisk(a.req(0, "disk_cid")?, a.size(1, "new_size")?),
            "has_disk" => Method::HasDisk(a.req(0, "disk_cid")?),
            "attach_disk" => Method::AttachDisk(a.req(0, "vm_cid")?, a.req(1, "disk_cid")?),
            "detach_disk" => Method::DetachDisk(a.req(0, "vm_cid")?, a.req(1, "disk_cid")?),
            "get_disks" => Method::GetDisks(a.req(0, "vm_cid")?),
            "snapshot_disk" => Method::SnapshotDisk(a.req(0, "disk_cid")?, {
                // the director sends metadata; old callers may send nothing
                if a.args.get(1).is_some_and(|v| !v.is_null()) {
                    a.metadata(1, "metadata")?
                } else {
                    Metadata::new()
                }
            }),
            "delete_snapshot" => Method::DeleteSnapshot(a.req(0, "snapshot_cid")?),
            "configure_networks" => Method::ConfigureNetworks,
            _ => return Err(MethodError::Unknown(method.to_string())),
        })
    }

    /// The method's wire name.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Info => "info",
            Method::CreateStemcell { .. } => "create_stemcell",
            Method::DeleteStemcell(_) => "delete_stemcell",
            Method::CreateVm(_) => "create_vm",
            Method::DeleteVm(_) => "delete_vm",
            Method::HasVm(_) => "has_vm",
            Method::RebootVm(_) => "reboot_vm",
            Method::SetVmMetadata(..) => "set_vm_metadata",
            Method::SetDiskMetadata(..) => "set_disk_metadata",
            Method::CalculateVmCloudProperties(_) => "calculate_vm_cloud_properties",
            Method::CreateDisk { .. } => "create_disk",
            Method::DeleteDisk(_) => "delete_disk",
            Method::ResizeDisk(..) => "resize_disk",
            Method::UpdateDisk(..) => "update_disk",
            Method::HasDisk(_) => "has_disk",
            Method::AttachDisk(..) => "attach_disk",
            Method::DetachDisk(..) => "detach_disk",
            Method::GetDisks(_) => "get_disks",
            Method::SnapshotDisk(..) => "snapshot_disk",
            Method::DeleteSnapshot(_) => "delete_snapshot",
            Method::ConfigureNetworks => "configure_networks",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(method: &str, args: Value) -> String {
        Method::parse(method, args.as_array().unwrap()).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_argument() {
        assert!(err("delete_vm", json!([])).contains("vm_cid"));
        assert!(err("delete_vm", json!([3])).contains("vm_cid"));
        assert!(err("delete_vm", json!([""])).contains("must not be empty"));
        assert!(err("create_disk", json!(["big", {}, null])).contains("size"));
        assert!(err("create_disk", json!([0, {}, null])).contains("out of range"));
        assert!(err("create_vm", json!(["a", "s", {}, {"n": 3}, [], {}])).contains("networks"));
        assert!(err("create_vm", json!(["a", "s", [], {}, [], {}])).contains("cloud_properties"));
        assert!(err("set_vm_metadata", json!(["vm", {"k": [1]}])).contains("'k'"));
        assert!(err("calculate_vm_cloud_properties", json!([{"ram": 1, "cpu": 1}])).contains("ephemeral_disk_size"));
        assert!(err("frobnicate", json!([])).contains("unknown method"));
    }

    #[test]
    fn every_method_parses_with_good_arguments() {
        let good = json!({
            "info": [], "create_stemcell": ["/tmp/image", {}], "delete_stemcell": ["sc"],
            "create_vm": ["agent", "sc", {}, {"net": {"type": "dynamic"}}, ["d"], {"bosh": {}}],
            "delete_vm": ["vm"], "has_vm": ["vm"], "reboot_vm": ["vm"],
            "set_vm_metadata": ["vm", {"a": "b", "n": 1}], "set_disk_metadata": ["d", {}],
            "calculate_vm_cloud_properties": [{"ram": 1024, "cpu": 2, "ephemeral_disk_size": 2048}],
            "create_disk": [1024, {}, "vm"], "delete_disk": ["d"], "resize_disk": ["d", 2048],
            "update_disk": ["d", 2048, {}], "has_disk": ["d"], "attach_disk": ["vm", "d"],
            "detach_disk": ["vm", "d"], "get_disks": ["vm"], "snapshot_disk": ["d", {}],
            "delete_snapshot": ["s"]
        });
        for m in METHODS {
            let args = good[*m].as_array().unwrap_or_else(|| panic!("no args for {m}"));
            let parsed = Method::parse(m, args).unwrap_or_else(|e| panic!("{m}: {e}"));
            assert_eq!(parsed.name(), *m);
        }
    }

    #[test]
    fn extra_arguments_are_ignored_and_nulls_are_optional() {
        assert!(Method::parse("create_stemcell", &[json!("/x"), json!({}), json!({"tags": {}})]).is_ok());
        assert!(Method::parse("create_disk", &[json!(10), json!(null)]).is_ok());
        let m =
            Method::parse("create_vm", &[json!("a"), json!("s"), json!(null), json!(null), json!(null), json!(null)])
                .unwrap();
        let Method::CreateVm(c) = m else { panic!() };
        assert!(c.networks.is_empty() && c.disk_cids.is_empty());
    }
}
