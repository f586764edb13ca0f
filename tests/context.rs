//! The request context (a director's CPI config) may say where to connect and as whom, nothing else: a
//! context key that names a program or a local path, weakens TLS or moves the state directory is refused
//! with a CpiError naming it, and nothing runs. Each case below is one the CPI ran as root before.
use crate::util::Cpi;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A script that records each run in a file beside it: the proof that a context made the CPI run it.
struct Canary {
    dir: tempfile::TempDir,
    script: PathBuf,
}

impl Canary {
    fn new() -> Canary {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("evil.sh");
        let ran = dir.path().join("ran");
        std::fs::write(&script, format!("#!/bin/sh\necho \"$0 $*\" >> '{}'\nexit 1\n", ran.display())).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        Canary { dir, script }
    }
    fn path(&self) -> &str {
        self.script.to_str().unwrap()
    }
    fn assert_never_ran(&self) {
        let ran = self.dir.path().join("ran");
        assert!(!ran.exists(), "the canary ran: {}", std::fs::read_to_string(&ran).unwrap_or_default());
    }
}

/// Calls `method` with `context` and expects a CpiError that names `key`.
fn refused(cpi: &Cpi, method: &str, args: Value, context: Value, key: &str) {
    let r = cpi.call_with(method, args, 2, context.clone());
    let e = &r.response["error"];
    assert_eq!(e["type"], "Bosh::Clouds::CpiError", "context {context}: {}", r.response);
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains(key), "context {context}: the message should name {key}: {msg}");
}

/// Calls `info` with `context` and expects it to be accepted.
fn accepted(cpi: &Cpi, context: Value) {
    let r = cpi.call_with("info", json!([]), 2, context.clone());
    assert!(r.response["error"].is_null(), "context {context} should be accepted: {}", r.response);
}

const VM: &str = "vm-0123456789abcdef0123";

fn state_dir(tmp: &Path) -> String {
    let d = tmp.join("state");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    d.display().to_string()
}

#[test]
fn libvirt_context_may_not_name_programs_paths_or_uri_parameters() {
    let canary = Canary::new();
    let tmp = tempfile::tempdir().unwrap();
    let cpi = Cpi::with_config(&json!({"driver": {"kind": "libvirt", "uri": "qemu:///nonexistent-for-tests",
        "state_dir": state_dir(tmp.path())}}));
    let evil = canary.path();
    for (driver, key) in [
        (json!({"virsh": evil}), "driver.virsh"),
        (json!({"qemu_img": evil}), "driver.qemu_img"),
        (json!({"xorriso": evil}), "driver.xorriso"),
        (json!({"state_dir": "/tmp"}), "driver.state_dir"),
        (json!({"pool_path": "/etc"}), "driver.pool_path"),
        (json!({"kind": "libvirt", "virsh": evil}), "driver.virsh"),
        (json!({"uri": format!("qemu+ssh://nobody@127.0.0.1/system?command={evil}")}), "command"),
        (json!({"uri": format!("qemu+ssh://127.0.0.1/system?no_tty=1&%63ommand={evil}")}), "command"),
        (json!({"uri": format!("qemu+ssh://127.0.0.1/system?no_tty=1;command={evil}")}), "command"),
        (json!({"uri": format!("qemu+ext:///system?command={evil}")}), "ext"),
        (json!({"uri": "qemu+unix:///system?socket=/tmp/evil.sock"}), "socket"),
        (json!({"uri": "qemu+ssh://127.0.0.1/system?keyfile=/root/.ssh/other"}), "keyfile"),
        (json!({"uri": "qemu+libssh2://127.0.0.1/system?known_hosts=/tmp/kh"}), "known_hosts"),
        (json!({"uri": "qemu+libssh2://127.0.0.1/system?known_hosts_verify=ignore"}), "known_hosts_verify"),
        (json!({"uri": "qemu+tls://127.0.0.1/system?pkipath=/tmp/pki"}), "pkipath"),
        (json!({"uri": "qemu+tls://127.0.0.1/system?no_verify=1"}), "no_verify"),
        (json!({"uri": format!("qemu+ssh://127.0.0.1/system?proxy=netcat&netcat={evil}")}), "proxy"),
        (json!({"uri": "qemu+tcp://127.0.0.1/system"}), "tcp"),
        (json!({"uri": "qemu:///embed?root=/tmp/x"}), "embed"),
        (json!({"uri": "test:///etc/passwd"}), "test"),
        (json!({"uri": "qemu+ssh://-oProxyCommand=sh/system"}), "-oProxyCommand"),
    ] {
        refused(&cpi, "has_vm", json!([VM]), json!({"director_uuid": "d", "driver": driver}), key);
    }
    canary.assert_never_ran();
    // where to connect and as whom, and how VMs are placed there: accepted
    accepted(
        &cpi,
        json!({"driver": {"uri": "qemu+ssh://root@hv2.example.com:2222/system?no_tty=1", "pool": "p2",
        "default_network": "n", "domain_type": "qemu", "machine": "pc", "graphics": false}}),
    );
    accepted(&cpi, json!({"driver": {"kind": "libvirt", "uri": "qemu+libssh2://u@h/system?sshauth=privkey"}}));
    accepted(&cpi, json!({"agent": {"ntp": ["ntp.example.com"]}, "log_level": "debug"}));
}

#[test]
fn vsphere_context_may_not_weaken_tls_or_move_the_state_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let cpi = Cpi::with_config(&json!({"driver": {"kind": "vsphere", "host": "https://127.0.0.1:1", "user": "u",
        "password": "p", "datacenter": "DC0", "state_dir": state_dir(tmp.path())}}));
    for (driver, key) in [
        (json!({"insecure": true}), "driver.insecure"),
        (json!({"thumbprint": "00".repeat(32)}), "driver.thumbprint"),
        (json!({"ca_cert": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"}), "driver.ca_cert"),
        (json!({"state_dir": "/tmp"}), "driver.state_dir"),
        (json!({"xorriso": "/bin/sh"}), "driver.xorriso"),
        (
            json!({"kind": "vsphere", "host": "vc2", "user": "u", "password": "p", "datacenter": "d", "insecure": true}),
            "driver.insecure",
        ),
    ] {
        refused(&cpi, "has_vm", json!([VM]), json!({"driver": driver}), key);
    }
    accepted(
        &cpi,
        json!({"driver": {"host": "vc2.example.com", "user": "other", "password": "pw",
        "datacenter": "DC1", "clusters": ["c"], "resource_pool": "rp", "datastores": ["ds*"], "vm_folder": "v",
        "template_folder": "t", "disk_folder": "d", "default_network": "n", "guest_id": "g",
        "task_timeout_seconds": 60, "http_timeout_seconds": 60}}),
    );
}

#[test]
fn vmrun_context_may_not_name_programs_or_paths() {
    let canary = Canary::new();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    // a VM whose reboot runs `vmrun list`: the program a context would choose
    std::fs::create_dir_all(store.join(format!("vms/{VM}"))).unwrap();
    std::fs::write(store.join(format!("vms/{VM}/{VM}.vmx")), "displayName = \"x\"\n").unwrap();
    let cpi = Cpi::with_config(&json!({"driver": {"kind": "vmrun", "vm_store_path": store,
        "vmrun": "/nonexistent/vmrun", "tmp_dir": state_dir(tmp.path())}}));
    let evil = canary.path();
    for (driver, key) in [
        (json!({"vmrun": evil}), "driver.vmrun"),
        (json!({"vmrun_bin_path": evil}), "driver.vmrun_bin_path"),
        (json!({"ovftool": evil}), "driver.ovftool"),
        (json!({"ovftool_bin_path": evil}), "driver.ovftool_bin_path"),
        (json!({"vdiskmanager": evil}), "driver.vdiskmanager"),
        (json!({"qemu_img": evil}), "driver.qemu_img"),
        (json!({"local_qemu_img": evil}), "driver.local_qemu_img"),
        (json!({"xorriso": evil}), "driver.xorriso"),
        (json!({"tmp_dir": "/tmp"}), "driver.tmp_dir"),
        (json!({"allow_extra_config": true}), "driver.allow_extra_config"),
        (json!({"vm_store_path": "/etc"}), "driver.vm_store_path"),
        (json!({"stemcell_store_path": "/etc"}), "driver.stemcell_store_path"),
        (json!({"ssh": {"host": "h", "user": "u", "known_hosts": "/tmp/kh"}}), "driver.ssh.known_hosts"),
        (
            json!({"ssh": {"host": "h", "user": "u", "private_key_path": "/root/.ssh/id"}}),
            "driver.ssh.private_key_path",
        ),
        (
            json!({"ssh_tunnel": {"host": "h", "username": "u", "private_key_path": "/x"}}),
            "driver.ssh_tunnel.private_key_path",
        ),
    ] {
        refused(&cpi, "reboot_vm", json!([VM]), json!({"driver": driver}), key);
    }
    canary.assert_never_ran();
    accepted(
        &cpi,
        json!({"driver": {"ssh": {"host": "h", "port": 2222, "user": "u", "password": "pw",
        "host_public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKc8", "platform": "linux",
        "connect_timeout_seconds": 5, "command_timeout_seconds": 60}, "host_type": "fusion",
        "default_network": "nat", "start_timeout_seconds": 10, "soft_shutdown_timeout_seconds": 10,
        "lock_timeout_seconds": 10}}),
    );
}
