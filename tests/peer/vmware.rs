//! The VMware test double (src/bin/fake-vmware.rs) as a peer: the vmrun driver in local mode with ovftool and
//! vmware-vdiskmanager (or over SSH without them), its store (`stemcells/`, `vms/`, `disks/`, `pending/`,
//! `locks/`) and a scratch directory (`tmp_dir`) of its own.
use super::{files_below, files_with_canaries, names, Expected, Hardware, Marker, Peer, Step};
use crate::util::Cpi;
use crate::vmrun::{create_vm_args, require_sshd, ssh_block, stemcell_image, Fake};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct Vmware {
    fake: Fake,
    tmp: tempfile::TempDir,
    /// The driver's `ssh` block when the CPI reaches the host over SSH.
    ssh: Option<Value>,
}

impl Vmware {
    /// Locally, with ovftool and vmware-vdiskmanager.
    pub fn new() -> Vmware {
        Vmware { fake: Fake::new(), tmp: tempfile::tempdir().unwrap(), ssh: None }
    }

    /// Over SSH to the loopback sshd (tools/sshd-up.sh), without ovftool and vmware-vdiskmanager (the CPI's own
    /// import, qemu-img disks); None when sshd cannot start on a laptop (a failure when CI is set).
    pub fn over_ssh() -> Option<Vmware> {
        let (dir, port) = require_sshd()?;
        Some(Vmware { ssh: Some(ssh_block(&dir, port, &dir.join("known_hosts"))), ..Vmware::new() })
    }

    fn vmx(&self, vm: &str) -> PathBuf {
        self.fake.store().join(format!("vms/{vm}/{vm}.vmx"))
    }

    /// The fake tools' command log.
    fn log(&self) -> String {
        std::fs::read_to_string(self.fake.state("log")).unwrap()
    }
}

impl Peer for Vmware {
    fn name(&self) -> &'static str {
        "vmware"
    }

    fn config(&self) -> Value {
        let mut cfg = self.fake.config(self.ssh.is_none(), self.ssh.clone());
        cfg["driver"]["tmp_dir"] = json!(self.tmp.path());
        cfg
    }

    fn mbus(&self, password: &str) -> String {
        format!("https://mbus:{password}@0.0.0.0:6868")
    }

    fn stemcell_image(&self, dir: &Path) -> String {
        stemcell_image(dir, 64, 1).display().to_string()
    }

    fn vm_props(&self, ephemeral: bool) -> Value {
        if ephemeral {
            json!({"disk": 512})
        } else {
            json!({})
        }
    }

    fn create_vm_args(&self, agent: &str, stemcell: &Value, cloud_properties: Value) -> Value {
        let mut a = create_vm_args(stemcell, cloud_properties);
        a[0] = json!(agent);
        a
    }

    fn disk_mib(&self) -> u64 {
        256
    }

    fn ghost_stemcell(&self) -> &'static str {
        "sc-0000000000000000"
    }

    fn objects(&self) -> Vec<String> {
        ["stemcells", "vms", "disks"]
            .iter()
            .flat_map(|d| names(&self.fake.store().join(d)).into_iter().map(move |n| format!("{d}/{n}")))
            .collect()
    }

    fn vms(&self) -> Vec<String> {
        names(&self.fake.store().join("vms"))
    }

    fn running(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .fake
            .running()
            .iter()
            .filter_map(|vmx| Path::new(vmx).file_stem().map(|s| s.to_string_lossy().into_owned()))
            .collect();
        v.sort();
        v
    }

    /// Pending entries (their lock is the CID's lock in `locks/`) and the scratch markers of imports.
    fn markers(&self) -> Vec<Marker> {
        let store = self.fake.store();
        let mut out: Vec<Marker> = names(&store.join("pending"))
            .into_iter()
            .map(|cid| Marker { path: store.join("pending").join(&cid), lock: store.join(format!("locks/{cid}.lock")) })
            .collect();
        out.extend(super::inflight_markers(&self.tmp.path().join("vmcpi-vmrun-scratch/inflight")));
        out
    }

    /// Everything in `tmp_dir` but the markers.
    fn scratch(&self) -> Vec<PathBuf> {
        let markers = self.tmp.path().join("vmcpi-vmrun-scratch/inflight");
        files_below(self.tmp.path()).into_iter().filter(|p| !p.starts_with(&markers)).collect()
    }

    /// VMs left running, and lock files (they stay, made once per CID) that a dead process's tool still holds.
    fn other_leftovers(&self) -> Vec<String> {
        let mut out: Vec<String> = self.fake.running().into_iter().map(|vmx| format!("running {vmx}")).collect();
        for l in files_below(&self.fake.store().join("locks")) {
            if (Marker { path: l.clone(), lock: l.clone() }).held() {
                out.push(format!("held lock {}", l.display()));
            }
        }
        out
    }

    fn kill_trials(&self) -> usize {
        4
    }

    /// A killed CPI's tools get SIGTERM from their wrapper once its stdin closes; that lands before the next
    /// call sweeps (a sweep racing a tool still writing is the one leak seen once and not reproduced).
    fn settle_after_kill(&self) -> Duration {
        Duration::from_millis(200)
    }

    fn bad_configs(&self, config: &Value, secret: &str) -> Vec<Value> {
        let mut c = config.clone();
        c["driver"]["default_network"] = json!(secret);
        vec![c]
    }

    fn describe_vm(&self, vm: &str) -> String {
        std::fs::read_to_string(self.vmx(vm)).unwrap()
    }

    fn agent_settings(&self, vm: &str) -> String {
        std::fs::read_to_string(self.fake.store().join(format!("vms/{vm}/env.json"))).unwrap()
    }

    /// The settings medium (env.iso; env.json is the same settings kept for later edits) may hold them. vmrun
    /// takes a guest password only as `-gp <password>` on its command line, which the fake's command log
    /// records (the CPI's own log shows `-gp <redacted>`): that argument is not counted, anything else is.
    fn files_with(&self, canaries: &[&str]) -> Vec<String> {
        let mut out = files_with_canaries(self.fake.dir.path(), &["env.iso", "env.json", "log"], canaries);
        out.extend(files_with_canaries(self.tmp.path(), &[], canaries));
        let log = self.fake.state("log");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let words: Vec<&str> = text.split_whitespace().collect();
        let rest: Vec<&str> =
            words.iter().enumerate().filter(|(i, _)| *i == 0 || words[i - 1] != "-gp").map(|(_, w)| *w).collect();
        let rest = rest.join(" ");
        out.extend(canaries.iter().filter(|c| rest.contains(*c)).map(|c| format!("{}: {c}", log.display())));
        out
    }

    fn assert_metadata_kept(&self, vm: &str, _value: &str) {
        let vmx = self.describe_vm(vm);
        for line in vmx.lines() {
            assert!(!line.starts_with("evil"), "a metadata value became a .vmx key: {line}");
        }
        assert!(vmx.contains("guestinfo.bosh."), "metadata was written: {vmx}");
    }

    /// The fake's directory: the store and the fake's own `bin/` are the CPI's (and VMware's) areas.
    fn sandbox(&self) -> Option<(PathBuf, Vec<PathBuf>)> {
        let root = self.fake.dir.path().to_path_buf();
        Some((root.clone(), vec![self.fake.store(), root.join("bin")]))
    }

    /// VMware holds the stemcell VM's lock (`<vmx>.lck`, as the GUI does when the VM is open).
    fn hold_stemcell(&self, stemcell: &str) -> Option<Box<dyn FnOnce()>> {
        let lock = self.fake.store().join(format!("stemcells/{stemcell}/{stemcell}.vmx.lck"));
        std::fs::create_dir(&lock).unwrap();
        Some(Box::new(move || std::fs::remove_dir(&lock).unwrap()))
    }

    /// Over SSH, eight: sshd starts dropping handshakes beyond ten at once (its default MaxStartups).
    fn processes(&self) -> usize {
        if self.ssh.is_some() {
            8
        } else {
            16
        }
    }

    fn expected(&self) -> Expected {
        Expected {
            formats: &["vsphere-ovf", "vsphere-ova"],
            stemcell_name: "bosh-vsphere-esxi-ubuntu-jammy-go_agent",
            networks: create_vm_args(&json!(null), json!({}))[3].clone(),
            mac_prefix: "00:50:56:",
            ram_step: 4,
            system_disk: json!("0"),
            first_disk: json!("2"),
            snapshots: false,
            grows_disks: true,
        }
    }

    /// `env.json` beside the VM (the settings medium's JSON, kept for later edits).
    fn settings(&self, vm: &str) -> Value {
        serde_json::from_str(&self.agent_settings(vm)).unwrap()
    }

    /// From the .vmx.
    fn hardware(&self, vm: &str) -> Hardware {
        let vmx = self.describe_vm(vm);
        let value = |key: &str| -> Option<&str> {
            vmx.lines().find_map(|l| {
                l.strip_prefix(key)?.trim_start().strip_prefix("= ")?.trim().strip_prefix('"')?.strip_suffix('"')
            })
        };
        let number = |key: &str| value(key).unwrap_or_else(|| panic!("no {key}: {vmx}")).parse().unwrap();
        let macs = (0..10).filter_map(|i| value(&format!("ethernet{i}.address"))).map(str::to_string).collect();
        Hardware { cpus: number("numvcpus"), ram_mib: number("memSize"), macs }
    }

    fn check(&self, cpi: &Cpi, step: Step<'_>) {
        let store = self.fake.store();
        match step {
            Step::Stemcell { stemcell: sc, .. } => {
                let vmx = std::fs::read_to_string(store.join(format!("stemcells/{sc}/{sc}.vmx"))).unwrap();
                assert!(vmx.contains("firmware = \"efi\""), "{vmx}");
                let vmsd = std::fs::read_to_string(store.join(format!("stemcells/{sc}/{sc}.vmsd"))).unwrap();
                assert!(vmsd.contains("vmcpi-base"), "the snapshot linked clones start from: {vmsd}");
            }
            Step::Vm { vm, networks, settings } => {
                let vmx = self.describe_vm(vm);
                // untouched stemcell keys survive, in place
                for keep in [
                    "firmware = \"efi\"",
                    "virtualHW.version = \"13\"",
                    "disk.enableUUID = \"TRUE\"",
                    "scsi0.virtualDev = \"lsilogic\"",
                ] {
                    assert!(vmx.contains(keep), "{keep} lost:\n{vmx}");
                }
                // the settings ISO sits on the stemcell's own SATA CD-ROM; no second CD-ROM
                assert!(
                    vmx.contains("sata0:0.fileName = \"env.iso\"")
                        && vmx.contains("sata0:0.deviceType = \"cdrom-image\""),
                    "{vmx}"
                );
                assert!(!vmx.contains("ide1:0"), "{vmx}");
                let mac = networks["default"]["mac"].as_str().unwrap();
                assert!(
                    vmx.contains(&format!("ethernet0.address = \"{mac}\""))
                        && vmx.contains("ethernet0.vnet = \"vmnet8\""),
                    "{vmx}"
                );
                assert!(vmx.contains("scsi0:1.fileName = \"ephemeral.vmdk\""), "{vmx}");
                assert_eq!(settings["disks"], json!({"system": "0", "ephemeral": "1", "persistent": {}}));
                assert!(std::fs::metadata(store.join(format!("vms/{vm}/env.iso"))).unwrap().len() > 0);
            }
            Step::Metadata { vm } => {
                let vmx = self.describe_vm(vm);
                assert!(
                    vmx.contains("guestinfo.bosh.deployment = \"dep\"")
                        && vmx.contains(&format!("displayName = \"zookeeper/0 ({vm})\"")),
                    "{vmx}"
                );
            }
            Step::Attached { vm, disk } => {
                // the metadata written through vmrun while running survived the stop/start of attach
                let vmx = self.describe_vm(vm);
                assert!(
                    vmx.contains("guestinfo.bosh.deployment = \"dep\"") && vmx.contains("firmware = \"efi\""),
                    "{vmx}"
                );
                let e = cpi.err("resize_disk", json!([disk, 2048]));
                assert!(e["message"].as_str().unwrap().contains("in use by a running VM"), "{e}");
            }
            Step::BeforeDeleteVm { vm, stemcell, .. } => {
                // a linked clone needs its stemcell
                let e = cpi.err("delete_stemcell", json!([stemcell]));
                assert!(e["message"].as_str().unwrap().contains(vm), "{e}");
            }
            Step::VmDeleted { disk, .. } => {
                assert!(
                    store.join(format!("disks/{disk}.vmdk")).is_file(),
                    "delete_vm must not delete persistent disks"
                );
            }
            Step::Done => {
                assert_eq!(
                    names(&store.join("locks")),
                    Vec::<String>::new(),
                    "lock files of deleted things are removed"
                );
                let log = self.log();
                if self.ssh.is_none() {
                    assert!(log.contains("ovftool --sourceType=OVF --targetType=VMX"), "{log}");
                    assert!(log.contains("vmware-vdiskmanager -c -s 1024MB -a lsilogic -t 0"), "{log}");
                    assert!(log.contains(" linked -snapshot=vmcpi-base -cloneName=vm-"), "{log}");
                } else {
                    assert!(!log.contains("ovftool") && !log.contains("vdiskmanager"), "{log}");
                }
            }
            _ => {}
        }
    }
}
