//! The vSphere simulator as a peer: one simulator per test with its own datastore directory and state dir,
//! a vCenter (the CPI's VMs and stemcells in folders of its own) or a standalone ESXi host (no folders); the
//! inventory is read with the driver's own SOAP client. Its login password is a secret that must never show.
use super::{files_below, files_with_canaries, inflight_markers, Expected, Hardware, Marker, Peer, Step};
use crate::util::Cpi;
use crate::vsphere::{custom_values, networks, session, vcsim, vm_props};
use crate::vsphere_sim::{stemcell_image, Vcsim};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The simulator's login password.
const PASSWORD: &str = "CANARY-vcenter-pw-3e4f";

pub struct Vsphere {
    sim: Vcsim,
}

impl Vsphere {
    /// A fresh simulator of a vCenter; None when it is missing on a laptop (a failure when CI is set).
    pub fn new() -> Option<Vsphere> {
        Self::start("vpx")
    }

    /// A fresh simulator of a standalone ESXi host (datacenter `ha-datacenter`, no folders).
    pub fn esxi() -> Option<Vsphere> {
        Self::start("esx")
    }

    fn start(model: &'static str) -> Option<Vsphere> {
        let bin = vcsim()?;
        Some(Vsphere { sim: Vcsim::start_with(&bin, model, false, PASSWORD) })
    }

    fn vcenter(&self) -> bool {
        self.sim.model == "vpx"
    }

    /// The inventory folder of the CPI's VMs (on vCenter one of its own, on ESXi the host's only one).
    fn vm_folder(&self) -> Option<&'static str> {
        self.vcenter().then_some("vmcpi_vms")
    }

    /// The inventory folder of the CPI's stemcells.
    fn template_folder(&self) -> Option<&'static str> {
        self.vcenter().then_some("vmcpi_templates")
    }

    fn folder_path(&self, folder: Option<&str>) -> String {
        match folder {
            Some(f) => format!("{}/vm/{f}", self.sim.datacenter()),
            None => format!("{}/vm", self.sim.datacenter()),
        }
    }

    /// Whether a name in the inventory or on the datastore is one of the simulator's own VMs (`DC0_H0_VM0`,
    /// `ha-host_VM0`).
    fn simulators_own(name: &str) -> bool {
        name.starts_with("DC0_") || name.starts_with("ha-host_")
    }

    /// Names (folder/name) of the VMs and templates in the CPI's folders.
    fn inventory(&self) -> Vec<String> {
        let s = session(&self.sim, &self.sim.driver());
        let mut folders = vec![self.folder_path(self.vm_folder()), self.folder_path(self.template_folder())];
        folders.dedup();
        let mut out = Vec::new();
        for folder in folders {
            let Some(f) = s.find(&folder).unwrap() else { continue };
            let children = s.object(&f, &["childEntity"]).unwrap().unwrap();
            if let Some(c) = children.get("childEntity") {
                for m in &c.children {
                    if let Some(o) = s.object(&m.as_moref().unwrap(), &["name"]).unwrap() {
                        let name = o.str("name").unwrap_or("?");
                        if !Self::simulators_own(name) {
                            out.push(format!("{folder}/{name}"));
                        }
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
        let mut out: Vec<String> = super::names(&ds)
            .into_iter()
            .filter(|n| n != "vmcpi_disks" && !Self::simulators_own(n))
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

    /// Properties `paths` of the CPI's VM `vm`.
    fn vm(&self, vm: &str, paths: &[&str]) -> Option<vmcpi::driver::vsphere::client::ObjectContent> {
        vm_props(&session(&self.sim, &self.sim.driver()), self.sim.datacenter(), self.vm_folder(), vm, paths)
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
        let prefix = format!("{}/", self.folder_path(self.vm_folder()));
        self.inventory()
            .into_iter()
            .filter_map(|n| n.strip_prefix(&prefix).filter(|n| n.starts_with("vm-")).map(str::to_string))
            .collect()
    }

    fn running(&self) -> Vec<String> {
        self.vms()
            .into_iter()
            .filter(|vm| {
                self.vm(vm, &["runtime.powerState"]).is_some_and(|p| p.str("runtime.powerState") == Some("poweredOn"))
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
        let p = self
            .vm(vm, &["name", "customValue", "config.annotation", "config.extraConfig"])
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

    /// XML specials and newlines go through escaped and come back as they were (vCenter).
    fn assert_metadata_kept(&self, vm: &str, value: &str) {
        let values = custom_values(&session(&self.sim, &self.sim.driver()), vm);
        assert!(values.iter().any(|v| v == value), "{values:?}");
    }

    /// The simulator's directory: its datastore and the CPI's state dir are the CPI's areas.
    fn sandbox(&self) -> Option<(PathBuf, Vec<PathBuf>)> {
        let root = self.sim.dir.path().to_path_buf();
        Some((root.clone(), vec![root.join("ds"), root.join("state")]))
    }

    /// On vCenter also a second network, on a distributed port group, and a vip network (no NIC).
    fn expected(&self) -> Expected {
        let mut networks = networks();
        if self.vcenter() {
            networks["dvs"] = json!({"type": "dynamic", "cloud_properties": {"name": "DC0_DVPG0"}});
            networks["public"] = json!({"type": "vip", "ip": "192.0.2.10"});
        }
        Expected {
            formats: &["vsphere-ovf", "vsphere-ova"],
            stemcell_name: "bosh-vsphere-esxi-ubuntu-jammy-go_agent",
            networks,
            mac_prefix: "00:50:56:",
            ram_step: 1,
            system_disk: json!("0"),
            first_disk: json!("2"),
            snapshots: false,
            // the simulator has no ExtendVirtualDisk
            grows_disks: false,
        }
    }

    /// With its CD-ROM on SATA, as current stemcells have it (which the simulator refuses).
    fn lifecycle_stemcell(&self, dir: &Path) -> String {
        stemcell_image(dir, true).display().to_string()
    }

    /// `guestinfo.userdata` (checked to be the JSON on its settings ISO too).
    fn settings(&self, vm: &str) -> Value {
        crate::vsphere::settings(&self.sim, vm)
    }

    fn hardware(&self, vm: &str) -> Hardware {
        let p = self
            .vm(vm, &["config.hardware.numCPU", "config.hardware.memoryMB", "config.hardware.device"])
            .unwrap_or_else(|| panic!("{vm} not found"));
        let number = |path: &str| p.str(path).unwrap_or_else(|| panic!("no {path}")).parse().unwrap();
        let devices = &p.get("config.hardware.device").unwrap().children;
        let macs = devices.iter().filter_map(|d| d.str_at("macAddress")).map(str::to_string).collect();
        Hardware { cpus: number("config.hardware.numCPU"), ram_mib: number("config.hardware.memoryMB"), macs }
    }

    fn check(&self, cpi: &Cpi, step: Step<'_>) {
        let s = session(&self.sim, &self.sim.driver());
        let dc = self.sim.datacenter();
        match step {
            Step::Stemcell { stemcell, log } => {
                // OVF + VMDK through ImportVApp and the NFC lease; the SATA controller the simulator refuses is
                // dropped deliberately, and the CPI says so
                assert!(log.contains("importing without"), "{log}");
                assert!(log.contains("% uploaded"), "progress must be reported: {log}");
                let sc = vm_props(&s, dc, self.template_folder(), stemcell, &["snapshot"]).expect("stemcell VM");
                assert_eq!(
                    sc.get("snapshot").is_some(),
                    self.vcenter(),
                    "a snapshot for linked clones, on vCenter only"
                );
            }
            Step::Vm { vm, networks, settings } => {
                let p = self.vm(vm, &["config.hardware.device", "config.extraConfig"]).unwrap();
                let devices = &p.get("config.hardware.device").unwrap().children;
                let nics: Vec<_> = devices.iter().filter(|d| d.kind() == "VirtualVmxnet3").collect();
                assert_eq!(nics.len(), if self.vcenter() { 2 } else { 1 }, "one NIC per non-vip network");
                if self.vcenter() {
                    let dvs_mac = networks["dvs"]["mac"].as_str().unwrap();
                    let dvs = nics.iter().find(|n| n.str_at("macAddress") == Some(dvs_mac)).unwrap();
                    assert_eq!(
                        dvs.at("backing").unwrap().kind(),
                        "VirtualEthernetCardDistributedVirtualPortBackingInfo"
                    );
                    assert!(networks["public"]["mac"].is_null(), "vip networks get no NIC");
                }
                let cd = devices.iter().find(|d| d.kind() == "VirtualCdrom").expect("CD-ROM");
                let iso = cd.str_at("backing/fileName").unwrap();
                assert!(iso.contains(&format!("{vm}/env-")) && iso.ends_with(".iso"), "{iso}");
                let iso_file = self.sim.datastore_dir().join(iso.split_once("] ").unwrap().1);
                assert!(std::fs::metadata(&iso_file).unwrap().len() > 0, "settings ISO uploaded");
                let disks: Vec<_> = devices.iter().filter(|d| d.kind() == "VirtualDisk").collect();
                assert_eq!(disks.len(), 2, "root + ephemeral");
                assert!(disks.iter().any(|d| d.str_at("capacityInKB") == Some("2097152")), "ephemeral of 2 GiB");
                if self.sim.patched() {
                    let file = disks
                        .iter()
                        .filter_map(|d| d.str_at("backing/fileName"))
                        .find(|f| f.contains("-ephemeral.vmdk"));
                    let file =
                        self.sim.datastore_dir().join(file.expect("ephemeral disk file").split_once("] ").unwrap().1);
                    let vmdk = std::fs::read_to_string(&file).unwrap();
                    assert!(vmdk.contains("RW 4194304 "), "the ephemeral disk file is 2 GiB: {vmdk}");
                }
                // newer agents read the same settings from guestinfo first
                let extra: Vec<(&str, &str)> = p
                    .get("config.extraConfig")
                    .unwrap()
                    .children
                    .iter()
                    .filter_map(|o| Some((o.str_at("key")?, o.str_at("value")?)))
                    .collect();
                assert!(extra.iter().any(|(k, _)| *k == "guestinfo.userdata"), "{extra:?}");
                assert!(extra.contains(&("guestinfo.userdata.encoding", "base64")), "{extra:?}");
                assert_eq!(settings["disks"]["ephemeral"], "1");
            }
            Step::Metadata { vm } => {
                if self.vcenter() {
                    let values = custom_values(&s, vm);
                    for v in ["zookeeper/0", "again", "dep"] {
                        assert!(values.iter().any(|x| x == v), "{v}: {values:?}");
                    }
                } else {
                    let p = self.vm(vm, &["config.annotation"]).unwrap();
                    let annotation = "deployment: dep\ndirector: again\nindex: 0\nname: zookeeper/0\nodd: <&>\"'\n";
                    assert_eq!(p.str("config.annotation"), Some(annotation));
                }
            }
            // the patched simulator keeps a disk's capacity in its descriptor (in 512-byte sectors), as vSphere does
            Step::Disk { disk, mib } if self.sim.patched() => {
                let descriptor = self.sim.datastore_dir().join(format!("vmcpi_disks/{disk}.vmdk"));
                let vmdk = std::fs::read_to_string(descriptor).unwrap();
                assert!(vmdk.contains(&format!("RW {} ", mib * 2048)), "a disk of {mib} MiB: {vmdk}");
            }
            Step::Attached { disk, .. } => {
                let e = cpi.err("resize_disk", json!([disk, 4096]));
                assert_eq!(e["type"], "Bosh::Clouds::NotSupported", "the simulator has no ExtendVirtualDisk: {e}");
            }
            Step::DiskMetadata { disk } => {
                let meta = self.sim.datastore_dir().join(format!("vmcpi_disks/{disk}.meta.json"));
                let meta: Value = serde_json::from_slice(&std::fs::read(meta).unwrap()).unwrap();
                assert_eq!(meta["instance_id"], "x&y");
            }
            _ => {}
        }
    }
}
