//! The agent settings document (bosh-agent `settings/settings.go`): built from the create_vm arguments and
//! the config's `agent` section, kept up to date by attach/detach, delivered by [`crate::cpi::medium`].
use crate::cpi::config::AgentOptions;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One BOSH network as create_vm receives it. Fields we do not use are kept and passed to the agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Network {
    /// `manual` (the default), `dynamic` or `vip`.
    #[serde(rename = "type", default = "manual")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netmask: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default: Vec<String>,
    /// Driver-specific: which libvirt network / port group / vmnet the NIC joins.
    #[serde(default)]
    pub cloud_properties: Map<String, Value>,
    /// The MAC the CPI gave this network's NIC (the agent maps settings to NICs by MAC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

fn manual() -> String {
    "manual".to_string()
}

impl Network {
    /// A vip network is not configured on an interface and gets no NIC.
    pub fn needs_nic(&self) -> bool {
        self.kind != "vip"
    }
}

pub type Networks = BTreeMap<String, Network>;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VmRef {
    pub name: String,
    pub id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Disks {
    pub system: Value,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub ephemeral: Value,
    #[serde(default)]
    pub persistent: BTreeMap<String, Value>,
}

/// What the agent reads at boot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgentSettings {
    pub agent_id: String,
    pub vm: VmRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mbus: Option<String>,
    #[serde(default)]
    pub ntp: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blobstore: Option<Value>,
    pub networks: Networks,
    pub disks: Disks,
    #[serde(default)]
    pub env: Value,
}

impl AgentSettings {
    /// Settings for a new VM. `networks` must already carry the MACs the driver chose.
    pub fn new(agent_id: &str, vm_cid: &str, agent: &AgentOptions, networks: Networks, env: Value) -> Self {
        AgentSettings {
            agent_id: agent_id.to_string(),
            vm: VmRef { name: vm_cid.to_string(), id: vm_cid.to_string() },
            mbus: agent.mbus.clone(),
            ntp: agent.ntp.clone(),
            blobstore: agent.blobstore.clone(),
            networks,
            disks: Disks::default(),
            env: if env.is_null() { Value::Object(Map::new()) } else { env },
        }
    }

    pub fn attach_persistent(&mut self, disk_cid: &str, hint: Value) {
        self.disks.persistent.insert(disk_cid.to_string(), hint);
    }

    pub fn detach_persistent(&mut self, disk_cid: &str) {
        self.disks.persistent.remove(disk_cid);
    }

    /// The JSON the agent reads (compact, keys in a fixed order: the medium is byte-stable).
    pub fn to_json(&self) -> Vec<u8> {
        // serialization of these types cannot fail: all keys are strings
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// A random MAC address in a vendor range: the three `prefix` bytes, then three random bytes of which the first
/// is masked with `mask` (VMware reserves only part of its range for manually assigned addresses).
fn mac_in(prefix: [u8; 3], mask: u8) -> String {
    let hex = crate::common::ids::random_hex(6);
    let fourth = u8::from_str_radix(&hex[0..2], 16).unwrap_or(0) & mask;
    format!("{:02x}:{:02x}:{:02x}:{fourth:02x}:{}:{}", prefix[0], prefix[1], prefix[2], &hex[2..4], &hex[4..6])
}

/// A MAC address in QEMU/KVM's locally administered range `52:54:00:xx:xx:xx` (the libvirt driver).
pub fn qemu_mac() -> String {
    mac_in([0x52, 0x54, 0x00], 0xff)
}

/// A MAC address in VMware's range for static (manually assigned) addresses, `00:50:56:00:00:00`–
/// `00:50:56:3f:ff:ff` (the vmrun and vSphere drivers).
pub fn vmware_mac() -> String {
    mac_in([0x00, 0x50, 0x56], 0x3f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn network_keeps_unknown_fields_and_defaults_to_manual() {
        let n: Network =
            serde_json::from_value(json!({"ip": "10.0.0.5", "routes": [1], "cloud_properties": {}})).unwrap();
        assert_eq!(n.kind, "manual");
        let back = serde_json::to_value(&n).unwrap();
        assert_eq!(back["routes"], json!([1]));
    }

    #[test]
    fn settings_roundtrip_and_disks() {
        let agent = AgentOptions { mbus: Some("nats://x".into()), ntp: vec!["ntp".into()], blobstore: None };
        let mut s = AgentSettings::new("agent-1", "vm-1", &agent, Networks::new(), Value::Null);
        s.disks.system = json!("0");
        s.attach_persistent("disk-1", json!("2"));
        let parsed = AgentSettings::from_json(&s.to_json()).unwrap();
        assert_eq!(parsed, s);
        s.detach_persistent("disk-1");
        assert!(s.disks.persistent.is_empty());
        assert_eq!(serde_json::to_value(&s).unwrap()["env"], json!({}));
    }

    #[test]
    fn mac_format() {
        let m = qemu_mac();
        assert!(m.starts_with("52:54:00:") && m.len() == 17, "{m}");
        for _ in 0..50 {
            let m = vmware_mac();
            assert!(m.starts_with("00:50:56:") && m.len() == 17, "{m}");
            assert!(u8::from_str_radix(&m[9..11], 16).unwrap() <= 0x3f, "{m}");
        }
    }
}
