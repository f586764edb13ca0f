//! The real libvirt daemon (qemu:///system) as a peer: a storage pool and a state dir per suite
//! (`vmcpi-test-peer-<suite>`), emptied when the peer is made, so that what an earlier, failed run left is not
//! counted as this run's leak.
use super::{files_below, files_with_canaries, inflight_markers, Marker, Peer};
use crate::libvirt::{config_in, domains_using, libvirt_available, openstack_image, virsh};
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
}
