//! The real libvirt daemon (qemu:///system) as a peer: a storage pool and a state dir per suite
//! (`vmcpi-test-peer-<suite>`), emptied when the peer is made, so that what an earlier, failed run left is not
//! counted as this run's leak.
use super::{files_below, files_with_canaries, inflight_markers, Expected, Hardware, Marker, Peer, Step};
use crate::libvirt::{config_in, domains_using, libvirt_available, openstack_image, read_settings_in, virsh};
use crate::util::Cpi;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

pub struct Libvirt {
    pool: String,
    state: PathBuf,
}

impl Libvirt {
    /// The peer for the suite at `module` (its last path segment names the pool); None when libvirtd is
    /// missing on a laptop (a failure when CI is set).
    pub fn new(module: &str) -> Option<Libvirt> {
        if !libvirt_available() {
            return None;
        }
        let pool = crate::libvirt::pool_name(&format!("vmcpi-test-peer-{}", module.rsplit("::").next().unwrap()));
        let state = PathBuf::from(format!("/var/tmp/{pool}-state"));
        let _ = std::fs::remove_dir_all(&state);
        let peer = Libvirt { pool, state };
        for d in peer.vms() {
            virsh(&["destroy", &d]);
            virsh(&["undefine", &d, "--nvram"]);
        }
        for v in peer.volumes() {
            virsh(&["vol-delete", "--pool", &peer.pool, &v]);
        }
        Some(peer)
    }

    fn volumes(&self) -> Vec<String> {
        let (ok, out) = virsh(&["vol-list", "--pool", &self.pool]);
        if !ok {
            return Vec::new();
        }
        let mut v: Vec<String> =
            out.lines().skip(2).filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect();
        v.sort();
        v
    }
}

impl Peer for Libvirt {
    fn name(&self) -> &'static str {
        "libvirt"
    }

    fn config(&self) -> Value {
        let mut cfg = config_in(&self.pool, json!({}));
        cfg["driver"]["state_dir"] = json!(self.state);
        cfg
    }

    fn mbus(&self, password: &str) -> String {
        format!("nats://nats:{password}@10.0.0.6:4222")
    }

    fn stemcell_image(&self, dir: &Path) -> String {
        openstack_image(dir).display().to_string()
    }

    fn vm_props(&self, ephemeral: bool) -> Value {
        if ephemeral {
            json!({"ram": 64, "disk": 16})
        } else {
            json!({"ram": 64})
        }
    }

    fn create_vm_args(&self, agent: &str, stemcell: &Value, cloud_properties: Value) -> Value {
        json!([agent, stemcell, cloud_properties, {}, [], {}])
    }

    fn disk_mib(&self) -> u64 {
        16
    }

    fn ghost_stemcell(&self) -> &'static str {
        "sc-0000000000000000-os"
    }

    fn objects(&self) -> Vec<String> {
        let mut out: Vec<String> = self.volumes().into_iter().map(|v| format!("volume {v}")).collect();
        out.extend(self.vms().into_iter().map(|d| format!("domain {d}")));
        out.sort();
        out
    }

    /// Domains with a disk in this peer's pool.
    fn vms(&self) -> Vec<String> {
        let mut v = domains_using(&self.pool);
        v.sort();
        v
    }

    fn running(&self) -> Vec<String> {
        let (_, out) = virsh(&["list", "--name"]);
        let running: Vec<&str> = out.lines().map(str::trim).collect();
        self.vms().into_iter().filter(|d| running.contains(&d.as_str())).collect()
    }

    fn markers(&self) -> Vec<Marker> {
        inflight_markers(&self.state.join("inflight"))
    }

    fn scratch(&self) -> Vec<PathBuf> {
        files_below(&self.state.join("work"))
    }

    fn kill_trials(&self) -> usize {
        8
    }

    fn bad_configs(&self, config: &Value, secret: &str) -> Vec<Value> {
        let mut c = config.clone();
        c["driver"]["domain_type"] = json!(secret);
        vec![c]
    }

    fn describe_vm(&self, vm: &str) -> String {
        let (ok, xml) = virsh(&["dumpxml", vm]);
        assert!(ok, "{xml}");
        xml
    }

    fn agent_settings(&self, vm: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let iso = dir.path().join("m.iso");
        let (ok, out) =
            virsh(&["vol-download", "--pool", &self.pool, &format!("{vm}-settings.iso"), iso.to_str().unwrap()]);
        assert!(ok, "{out}");
        String::from_utf8_lossy(&std::fs::read(iso).unwrap()).into_owned()
    }

    /// The pool's files (the settings media may hold them) and the state dir.
    fn files_with(&self, canaries: &[&str]) -> Vec<String> {
        let mut out =
            files_with_canaries(Path::new(&format!("/var/tmp/{}-pool", self.pool)), &["*-settings.iso"], canaries);
        out.extend(files_with_canaries(&self.state, &[], canaries));
        out
    }

    fn assert_metadata_kept(&self, vm: &str, _value: &str) {
        let xml = self.describe_vm(vm);
        assert!(xml.contains("&lt;&amp;&gt;") && !xml.contains("<evil/>"), "{xml}");
    }

    fn expected(&self) -> Expected {
        Expected {
            formats: &["openstack-qcow2", "openstack-raw", "vsphere-ovf", "vsphere-ova"],
            stemcell_name: "bosh-openstack-kvm-ubuntu-jammy-go_agent",
            networks: json!({"default": {"type": "manual", "ip": "10.0.0.10", "netmask": "255.255.255.0", "gateway": "10.0.0.1", "dns": ["10.0.0.2"], "default": ["dns", "gateway"], "cloud_properties": {"type": "user"}}}),
            mac_prefix: "52:54:00:",
            ram_step: 1,
            system_disk: json!("/dev/sda"),
            first_disk: json!({"path": "/dev/sdc"}),
            snapshots: true,
            grows_disks: true,
        }
    }

    /// The OpenStack settings file on the VM's config drive.
    fn settings(&self, vm: &str) -> Value {
        read_settings_in(&self.pool, vm, "/ec2/latest/user-data")
    }

    /// From the domain XML.
    fn hardware(&self, vm: &str) -> Hardware {
        let xml = self.describe_vm(vm);
        let element = |name: &str| -> u64 {
            let start = xml.find(&format!("<{name}")).unwrap_or_else(|| panic!("no <{name}>: {xml}"));
            let text = xml[start..].split_once('>').unwrap().1.split('<').next().unwrap();
            text.trim().parse().unwrap()
        };
        assert!(xml.contains("<memory unit='KiB'>"), "{xml}");
        let macs = xml.split("<mac address='").skip(1).map(|r| r.split('\'').next().unwrap().to_string()).collect();
        Hardware { cpus: element("vcpu"), ram_mib: element("memory") / 1024, macs }
    }

    fn check(&self, _cpi: &Cpi, step: Step<'_>) {
        match step {
            Step::Stemcell { stemcell, .. } => assert!(stemcell.ends_with("-os"), "an OpenStack stemcell: {stemcell}"),
            Step::Vm { vm, settings, .. } => {
                // the agent finds the ephemeral disk by its serial (Linux names virtio-scsi disks in the order
                // their probes finish)
                let serial: String = vm.trim_start_matches("vm-").chars().take(16).collect();
                let by_id = format!("/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_eph-{serial}");
                assert_eq!(settings["disks"]["ephemeral"], json!(by_id), "{settings}");
            }
            Step::Metadata { vm } => {
                let xml = self.describe_vm(vm);
                assert!(xml.contains("<title>zookeeper/0</title>"), "the name is the title: {xml}");
                assert!(xml.contains("&lt;&amp;&gt;"), "metadata values are escaped: {xml}");
            }
            Step::Disk { disk, .. } => assert_eq!(disk.len(), 20, "{disk}"),
            Step::DiskMetadata { disk } => {
                let meta = format!("volume {disk}.meta.json");
                assert!(self.objects().contains(&meta), "{meta}: {:?}", self.objects());
            }
            Step::Grown { disk, mib } => {
                let (_, info) = virsh(&["vol-info", "--pool", &self.pool, disk]);
                assert!(info.contains(&format!("{:.2} GiB", mib as f64 / 1024.0)), "{info}");
            }
            _ => {}
        }
    }
}
