//! Proof inside a real guest: a tiny Linux (tools/tiny-guest) boots from a VM made by create_vm and prints
//! on its serial console what it read from the settings medium and which disks it sees.
use crate::libvirt::{cpi, libvirt_available, openstack_image, virsh, vsphere_image};
use crate::util::require_peer;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Builds the tiny guest once (kernel + initrd from Debian packages) into /var/tmp.
fn tiny_guest() -> Option<PathBuf> {
    static BUILT: OnceLock<Option<PathBuf>> = OnceLock::new();
    let built = BUILT
        .get_or_init(|| {
            let out = PathBuf::from("/var/tmp/vmcpi-tiny-guest");
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/tiny-guest/build.sh");
            let ok = Command::new("bash").arg(script).arg(&out).status().map(|s| s.success()).unwrap_or(false);
            ok.then_some(out)
        })
        .clone();
    if require_peer("the tiny guest (tools/tiny-guest/build.sh needs apt-get download)", built.is_some()) {
        built
    } else {
        None
    }
}

fn wait_shut_off(vm: &str) {
    let deadline = Instant::now() + Duration::from_secs(240);
    while Instant::now() < deadline {
        if virsh(&["domstate", vm]).1.trim() == "shut off" {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("{vm} did not power off within 240 s");
}

/// The settings document the guest printed between `TINY-GUEST: <what> <dev> BEGIN/END`.
fn printed_settings(log: &str, what: &str) -> Value {
    let begin = format!("TINY-GUEST: {what} ");
    let mut lines = log.lines().skip_while(|l| !(l.starts_with(&begin) && l.ends_with("BEGIN")));
    lines.next().unwrap_or_else(|| panic!("guest printed no {what}:\n{log}"));
    let body: String = lines.take_while(|l| !l.starts_with("TINY-GUEST:")).collect::<Vec<_>>().join("\n");
    serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("guest printed invalid settings ({e}):\n{log}"))
}

fn block_line<'a>(log: &'a str, scsi: &str) -> Option<&'a str> {
    log.lines().find(|l| l.starts_with("TINY-GUEST: block ") && l.contains(&format!("scsi={scsi} ")))
}

fn boot_and_check(image: PathBuf, what: &str) {
    let Some(tg) = tiny_guest() else { return };
    let cpi = cpi();
    let sc = cpi.ok("create_stemcell", json!([image, {}])).as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let serial = dir.path().join("serial.log");
    let props = json!({
        "ram": 256, "disk": 64,
        "kernel": tg.join("vmlinuz"), "initrd": tg.join("initrd.img"),
        "cmdline": "console=ttyS0 panic=1 quiet loglevel=3",
        "serial_log": serial,
    });
    let nets = json!({"private": {"type": "manual", "ip": "10.1.0.5", "netmask": "255.255.255.0", "gateway": "10.1.0.1", "cloud_properties": {"type": "user"}}});
    let created =
        cpi.ok("create_vm", json!(["agent-in-guest", sc, props, nets, [], {"bosh": {"group": "guest-test"}}]));
    let vm = created[0].as_str().unwrap().to_string();
    let mac = created[1]["private"]["mac"].as_str().unwrap().to_string();

    // first boot: the settings written by create_vm
    wait_shut_off(&vm);
    let log = std::fs::read_to_string(&serial).unwrap();
    let s = printed_settings(&log, what);
    assert_eq!(s["agent_id"], "agent-in-guest", "{log}");
    assert_eq!(s["vm"]["name"], vm.as_str());
    assert_eq!(s["networks"]["private"]["ip"], "10.1.0.5");
    assert_eq!(s["networks"]["private"]["mac"], mac.as_str());
    assert_eq!(s["env"]["bosh"]["group"], "guest-test");
    assert!(block_line(&log, "0:0:0:0").is_some(), "root disk: {log}");
    let eph = block_line(&log, "0:0:1:0").unwrap_or_else(|| panic!("ephemeral disk not at SCSI target 1:\n{log}"));
    match &s["disks"]["ephemeral"] {
        // vSphere stemcells: the SCSI target
        Value::String(t) if t == "1" => {}
        // OpenStack stemcells: the udev link of the disk's serial, which names it whatever order the probes end in
        Value::String(p) => {
            let serial = p
                .strip_prefix("/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_")
                .unwrap_or_else(|| panic!("ephemeral hint {p}"));
            assert!(
                eph.contains(&format!("serial={serial}")),
                "the ephemeral hint names the disk at target 1: {p} vs {eph}"
            );
        }
        other => panic!("ephemeral hint {other}"),
    }

    // attach a persistent disk, boot again: the guest sees the disk where the hint says
    let disk = cpi.ok("create_disk", json!([32, {}, vm])).as_str().unwrap().to_string();
    let hint = cpi.ok("attach_disk", json!([vm, disk]));
    std::fs::remove_file(&serial).unwrap();
    cpi.ok("reboot_vm", json!([vm]));
    wait_shut_off(&vm);
    let log = std::fs::read_to_string(&serial).unwrap();
    let s = printed_settings(&log, what);
    assert_eq!(s["disks"]["persistent"][&disk], hint, "{log}");
    let line = block_line(&log, "0:0:2:0").unwrap_or_else(|| panic!("persistent disk not at SCSI target 2:\n{log}"));
    assert!(line.contains(&format!("serial={disk}")), "the disk's serial is its CID: {line}");
    match &hint {
        // vSphere stemcells: the hint is the SCSI target number
        Value::String(t) => assert_eq!(t, "2"),
        // OpenStack stemcells: the agent finds the disk by its serial under /dev/disk/by-id (checked above:
        // the disk at target 2 carries the CID as its serial); the path is only the agent's fallback. Linux
        // names virtio-scsi disks in the order their probes finish, so the guest's own name for the disk is
        // not always the fallback (seen once in this test): only its form is checked here.
        other => {
            let path = other["path"].as_str().unwrap_or_else(|| panic!("hint without a path: {other}"));
            let dev = path.strip_prefix("/dev/sd").unwrap_or_else(|| panic!("hint path {path}"));
            assert!(dev.len() == 1 && dev.chars().all(|c| c.is_ascii_lowercase()), "hint path {path}");
            assert!(log.contains(&format!("TINY-GUEST: block {} ", &path[5..])), "no {path} in the guest: {log}");
        }
    }
    cpi.ok("delete_vm", json!([vm]));
    cpi.ok("delete_disk", json!([disk]));
    cpi.ok("delete_stemcell", json!([sc]));
}

#[test]
fn openstack_stemcell_guest_reads_its_config_drive() {
    if !libvirt_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    boot_and_check(openstack_image(dir.path()), "user-data");
}

#[test]
fn vsphere_stemcell_guest_reads_its_env_cdrom() {
    if !libvirt_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    boot_and_check(vsphere_image(dir.path(), false), "env");
}
