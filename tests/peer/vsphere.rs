//! The vSphere simulator (vCenter model) as a peer: one simulator per test with its own datastore directory
//! and state dir; the inventory is read with the driver's own SOAP client. Its login password is a secret
//! that must never show.
use super::{files_below, files_with_canaries, inflight_markers, Marker, Peer};
use crate::vsphere::{custom_values, networks, session, vcsim, vm_props};
use crate::vsphere_sim::{stemcell_image, Vcsim};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The simulator's login password.
const PASSWORD: &str = "CANARY-vcenter-pw-3e4f";
const VMS: &str = "DC0/vm/vmcpi_vms";
const TEMPLATES: &str = "DC0/vm/vmcpi_templates";

pub struct Vsphere {
    sim: Vcsim,
}

impl Vsphere {
    /// A fresh simulator; None when it is missing on a laptop (a failure when CI is set).
    pub fn new() -> Option<Vsphere> {
        let bin = vcsim()?;
        Some(Vsphere { sim: Vcsim::start_with(&bin, "vpx", false, PASSWORD) })
    }

    /// Names (folder/name) of the VMs and templates in the CPI's folders.
    fn inventory(&self) -> Vec<String> {
        let s = session(&self.sim, &self.sim.driver());
        let mut out = Vec::new();
        for folder in [VMS, TEMPLATES] {
            let Some(f) = s.find(folder).unwrap() else { continue };
            let children = s.object(&f, &["childEntity"]).unwrap().unwrap();
            if let Some(c) = children.get("childEntity") {
                for m in &c.children {
                    if let Some(o) = s.object(&m.as_moref().unwrap(), &["name"]).unwrap() {
                        out.push(format!("{folder}/{}", o.str("name").unwrap_or("?")));
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// The CPI's datastore entries: VM and stemcell folders, disk files.
    fn datastore(&self) -> Vec<String> {
        let ds = self.sim.datastore_dir();
        // (the simulator's own inventory has folders DC0_*: not the CPI's)
        let mut out: Vec<String> = super::names(&ds)
            .into_iter()
            .filter(|n| n != "vmcpi_disks" && !n.starts_with("DC0_"))
            .map(|n| format!("[datastore] {n}"))
            .collect();
        out.extend(super::names(&ds.join("vmcpi_disks")).into_iter().map(|n| format!("[datastore] vmcpi_disks/{n}")));
        out.sort();
        out
    }

    /// The state dir's subdirectory `sub` of every vCenter and datacenter.
    fn state_sub(&self, sub: &str) -> Vec<PathBuf> {
        super::names(&self.sim.dir.path().join("state"))
            .into_iter()
            .map(|d| self.sim.dir.path().join("state").join(d).join(sub))
            .collect()
    }
}

impl Peer for Vsphere {
    fn name(&self) -> &'static str {
        "vsphere"
    }

    fn config(&self) -> Value {
        self.sim.config()
    }

    fn mbus(&self, password: &str) -> String {
        format!("nats://nats:{password}@10.0.0.6:4222")
    }

    fn secrets(&self) -> Vec<String> {
        vec![PASSWORD.to_string()]
    }

    fn stemcell_image(&self, dir: &Path) -> String {
        stemcell_image(dir, false).display().to_string()
    }

    fn vm_props(&self, ephemeral: bool) -> Value {
        if ephemeral {
            json!({"cpu": 1, "ram": 512, "disk": 512})
        } else {
            json!({"cpu": 1, "ram": 512})
        }
    }

    fn create_vm_args(&self, agent: &str, stemcell: &Value, cloud_properties: Value) -> Value {
        json!([agent, stemcell, cloud_properties, networks(), [], {}])
    }

    fn disk_mib(&self) -> u64 {
        256
    }

    fn ghost_stemcell(&self) -> &'static str {
        "sc-00000000000000000000"
    }

    fn objects(&self) -> Vec<String> {
        let mut out = self.inventory();
        out.extend(self.datastore());
        out.sort();
        out
    }

    fn vms(&self) -> Vec<String> {
        let prefix = format!("{VMS}/");
        self.inventory().into_iter().filter_map(|n| n.strip_prefix(&prefix).map(str::to_string)).collect()
    }

    fn running(&self) -> Vec<String> {
        let s = session(&self.sim, &self.sim.driver());
        self.vms()
            .into_iter()
            .filter(|vm| {
                vm_props(&s, "DC0", Some("vmcpi_vms"), vm, &["runtime.powerState"])
                    .is_some_and(|p| p.str("runtime.powerState") == Some("poweredOn"))
            })
            .collect()
    }

    fn markers(&self) -> Vec<Marker> {
        self.state_sub("inflight").iter().flat_map(|d| inflight_markers(d)).collect()
    }

    fn scratch(&self) -> Vec<PathBuf> {
        self.state_sub("work").iter().flat_map(|d| files_below(d)).collect()
    }

    fn kill_trials(&self) -> usize {
        3
    }

    /// A wrong password that contains the real one, and a datacenter named by the secret.
    fn bad_configs(&self, config: &Value, secret: &str) -> Vec<Value> {
        let mut wrong = config.clone();
        wrong["driver"]["password"] = json!(format!("{PASSWORD}-wrong"));
        let mut dc = config.clone();
        dc["driver"]["datacenter"] = json!(secret);
        vec![wrong, dc]
    }

    /// Name, custom values, annotation and extraConfig, and the inventory's names.
    fn describe_vm(&self, vm: &str) -> String {
        let s = session(&self.sim, &self.sim.driver());
        let p = vm_props(
            &s,
            "DC0",
            Some("vmcpi_vms"),
            vm,
            &["name", "customValue", "config.annotation", "config.extraConfig"],
        )
        .unwrap_or_else(|| panic!("{vm} not found"));
        format!("{p:?}\n{:?}", self.inventory())
    }

    /// The VM's `guestinfo.userdata` (checked to be the JSON on its settings ISO too).
    fn agent_settings(&self, vm: &str) -> String {
        crate::vsphere::settings(&self.sim, vm).to_string()
    }

    /// The datastore (the env-*.iso the agent reads may hold them) and the state dir (the kept session).
    fn files_with(&self, canaries: &[&str]) -> Vec<String> {
        let mut out = files_with_canaries(&self.sim.datastore_dir(), &["env-*"], canaries);
        out.extend(files_with_canaries(&self.sim.dir.path().join("state"), &[], canaries));
        out
    }

    /// XML specials and newlines go through escaped and come back as they were.
    fn assert_metadata_kept(&self, vm: &str, value: &str) {
        let values = custom_values(&session(&self.sim, &self.sim.driver()), vm);
        assert!(values.iter().any(|v| v == value), "{values:?}");
    }

    /// The simulator's directory: its datastore and the CPI's state dir are the CPI's areas.
    fn sandbox(&self) -> Option<(PathBuf, Vec<PathBuf>)> {
        let root = self.sim.dir.path().to_path_buf();
        Some((root.clone(), vec![root.join("ds"), root.join("state")]))
    }
}
