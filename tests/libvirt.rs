//! The libvirt driver through the built binary against the real libvirt daemon (qemu:///system): API v1,
//! vSphere-format and EFI stemcells, the error paths, a failed create that leaves nothing, two pools on one
//! state dir, no other program run (every method: `suites::lifecycle`). The
//! helpers here (virsh, configs, images, pool contents) serve the other libvirt tests and tests/peer/libvirt.rs.
use crate::util::{require_peer, Cpi};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub const URI: &str = "qemu:///system";

/// This checkout's name for pool `base` (checkouts share the daemon): `base-TAG`.
pub fn pool_name(base: &str) -> String {
    let tag = crate::util::tag();
    if base.ends_with(&tag) {
        base.to_string()
    } else {
        format!("{base}-{tag}")
    }
}

/// The pool of most tests here.
pub fn main_pool() -> String {
    pool_name("vmcpi-test")
}

pub fn virsh(args: &[&str]) -> (bool, String) {
    let out = Command::new("/usr/bin/virsh").arg("-c").arg(URI).args(args).output().expect("run virsh");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// Whether the libvirt daemon answers (panics in CI when it does not).
pub fn libvirt_available() -> bool {
    static UP: OnceLock<bool> = OnceLock::new();
    let up = *UP.get_or_init(|| Path::new("/usr/bin/virsh").exists() && virsh(&["version"]).0);
    require_peer("libvirt daemon at qemu:///system (run tools/libvirt-up.sh)", up)
}

pub fn config(extra_agent: Value) -> Value {
    config_in(&main_pool(), extra_agent)
}

/// A config for a pool of its own (tests that count what is left in a pool use one each), named after this
/// checkout ([`pool_name`]).
pub fn config_in(pool: &str, extra_agent: Value) -> Value {
    let pool = pool_name(pool);
    let mut agent = json!({"mbus": "nats://nats:nats-password@10.0.0.6:4222", "ntp": ["0.pool.ntp.org"]});
    if let (Value::Object(a), Value::Object(e)) = (&mut agent, extra_agent) {
        a.extend(e);
    }
    json!({
        "driver": {"kind": "libvirt", "uri": URI, "pool": pool, "pool_path": format!("/var/tmp/{pool}-pool"), "domain_type": "qemu", "graphics": false},
        "agent": agent,
    })
}

pub fn cpi() -> Cpi {
    Cpi::with_config(&config(json!({})))
}

/// A gzipped tar holding a 64 MiB qcow2 `root.img` (an OpenStack-format stemcell image).
pub fn openstack_image(dir: &Path) -> PathBuf {
    let root = dir.join("root.img");
    assert!(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&root)
        .arg("64M")
        .status()
        .unwrap()
        .success());
    let image = dir.join("image");
    assert!(Command::new("tar").arg("czf").arg(&image).arg("-C").arg(dir).arg("root.img").status().unwrap().success());
    image
}

/// A gzipped tar with image.ovf + a stream-optimised VMDK (a vSphere-format stemcell image).
pub fn vsphere_image(dir: &Path, efi: bool) -> PathBuf {
    let raw = dir.join("disk.raw");
    assert!(Command::new("qemu-img")
        .args(["create", "-q", "-f", "raw"])
        .arg(&raw)
        .arg("32M")
        .status()
        .unwrap()
        .success());
    crate::util::stream_optimized_vmdk(&raw, &dir.join("image-disk1.vmdk"), ",adapter_type=lsilogic,hwversion=13");
    let firmware = if efi { r#"<vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>"# } else { "" };
    let ovf = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References><File ovf:href="image-disk1.vmdk" ovf:id="file1"/></References>
  <VirtualSystem ovf:id="vm"><VirtualHardwareSection>{firmware}</VirtualHardwareSection></VirtualSystem>
</Envelope>"#
    );
    std::fs::write(dir.join("image.ovf"), ovf).unwrap();
    std::fs::write(dir.join("image.mf"), "SHA1(image.ovf)= 0\n").unwrap();
    let image = dir.join("image");
    assert!(Command::new("tar")
        .arg("czf")
        .arg(&image)
        .arg("-C")
        .arg(dir)
        .args(["image.ovf", "image.mf", "image-disk1.vmdk"])
        .status()
        .unwrap()
        .success());
    image
}

/// Volume names in the test pool.
pub fn volumes() -> Vec<String> {
    volumes_in(&main_pool())
}

pub fn volumes_in(pool: &str) -> Vec<String> {
    let (_, out) = virsh(&["vol-list", "--pool", &pool_name(pool)]);
    out.lines().skip(2).filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect()
}

pub fn domains() -> Vec<String> {
    let (_, out) = virsh(&["list", "--all", "--name"]);
    out.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

/// Domains with a disk in `pool`.
pub fn domains_using(pool: &str) -> Vec<String> {
    let needle = format!("pool='{}'", pool_name(pool));
    domains().into_iter().filter(|d| virsh(&["dumpxml", d]).1.contains(&needle)).collect()
}

fn stemcell(cpi: &Cpi) -> String {
    let dir = tempfile::tempdir().unwrap();
    let image = openstack_image(dir.path());
    cpi.ok("create_stemcell", json!([image, {"name": "bosh-openstack-kvm-ubuntu-jammy-go_agent", "version": "1.0"}]))
        .as_str()
        .unwrap()
        .to_string()
}

fn networks() -> Value {
    json!({"private": {"type": "manual", "ip": "10.0.0.10", "netmask": "255.255.255.0", "gateway": "10.0.0.1", "dns": ["10.0.0.2"], "default": ["dns", "gateway"], "cloud_properties": {"type": "user"}}})
}

#[test]
fn api_v1_shapes_and_settings_rewrite() {
    if !libvirt_available() {
        return;
    }
    let cpi = cpi();
    let sc = stemcell(&cpi);
    let r = cpi.call_with("create_vm", json!(["agent-v1", sc, {"ram": 128}, {}, null, null]), 1, json!({}));
    let vm = r.response["result"].as_str().expect("v1 create_vm returns a string").to_string();
    let disk = cpi.ok("create_disk", json!([64, {}, null])).as_str().unwrap().to_string();
    let r = cpi.call_with("attach_disk", json!([vm, disk]), 1, json!({}));
    assert!(r.response["error"].is_null() && r.response["result"].is_null(), "{}", r.stdout);
    // the settings medium now lists the disk
    let settings = read_settings(&vm, "/ec2/latest/user-data");
    assert_eq!(settings["disks"]["persistent"][&disk], json!({"path": "/dev/sdc"}));
    assert_eq!(settings["agent_id"], "agent-v1");
    cpi.ok("detach_disk", json!([vm, disk]));
    let settings = read_settings(&vm, "/ec2/latest/user-data");
    assert_eq!(settings["disks"]["persistent"], json!({}));
    cpi.ok("delete_vm", json!([vm]));
    cpi.ok("delete_disk", json!([disk]));
    cpi.ok("delete_stemcell", json!([sc]));
}

/// Reads the settings file out of a VM's settings medium.
fn read_settings(vm: &str, inner: &str) -> Value {
    read_settings_in(&main_pool(), vm, inner)
}

/// Reads the settings file `inner` out of the settings medium of `vm` in `pool`.
pub fn read_settings_in(pool: &str, vm: &str, inner: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join("m.iso");
    let (ok, out) =
        virsh(&["vol-download", "--pool", &pool_name(pool), &format!("{vm}-settings.iso"), iso.to_str().unwrap()]);
    assert!(ok, "{out}");
    // vmcpi's own reader: tests/medium.rs checks it against xorriso and libblkid
    let bytes = vmcpi::iso9660::read_file(&std::fs::read(&iso).unwrap(), inner).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn vsphere_stemcell_gets_scsi_hints_and_an_env_cdrom() {
    if !libvirt_available() {
        return;
    }
    let cpi = cpi();
    let dir = tempfile::tempdir().unwrap();
    let image = vsphere_image(dir.path(), false);
    let sc = cpi
        .ok("create_stemcell", json!([image, {"name": "bosh-vsphere-esxi-ubuntu-jammy-go_agent"}]))
        .as_str()
        .unwrap()
        .to_string();
    assert!(sc.ends_with("-vsraw"), "{sc}");
    let (_, vol) = virsh(&["vol-dumpxml", "--pool", &main_pool(), &sc]);
    assert!(vol.contains("<format type='raw'/>"), "the VMDK's disk is in a raw volume: {vol}");
    // sparse: the 32 MiB disk holds no data, and the volume allocates (almost) nothing
    let alloc: u64 =
        vol.split("<allocation unit='bytes'>").nth(1).and_then(|r| r.split('<').next()).unwrap().parse().unwrap();
    assert!(alloc < 1 << 20, "{alloc} bytes allocated: {vol}");
    let vm = cpi.ok("create_vm", json!(["agent-vs", sc, {"ram": 128, "disk": 32}, networks(), [], {}]))[0]
        .as_str()
        .unwrap()
        .to_string();
    let settings = read_settings(&vm, "/env");
    assert_eq!(settings["disks"]["system"], "0");
    assert_eq!(settings["disks"]["ephemeral"], "1");
    let disk = cpi.ok("create_disk", json!([64, {}, vm])).as_str().unwrap().to_string();
    assert_eq!(cpi.ok("attach_disk", json!([vm, disk])), json!("2"));
    let disk2 = cpi.ok("create_disk", json!([64, {"format": "raw"}, vm])).as_str().unwrap().to_string();
    assert_eq!(cpi.ok("attach_disk", json!([vm, disk2])), json!("3"));
    assert_eq!(read_settings(&vm, "/env")["disks"]["persistent"], json!({disk.clone(): "2", disk2.clone(): "3"}));
    cpi.ok("delete_vm", json!([vm]));
    for d in [&disk, &disk2] {
        cpi.ok("delete_disk", json!([d]));
    }
    cpi.ok("delete_stemcell", json!([sc]));
}

#[test]
fn efi_stemcell_boots_with_ovmf() {
    if !libvirt_available() {
        return;
    }
    if !crate::util::require_peer(
        "OVMF firmware (Debian package ovmf)",
        Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd").exists(),
    ) {
        return;
    }
    let cpi = cpi();
    let dir = tempfile::tempdir().unwrap();
    let sc = cpi.ok("create_stemcell", json!([vsphere_image(dir.path(), true), {}])).as_str().unwrap().to_string();
    assert!(sc.ends_with("-vsefiraw"), "{sc}");
    let vm = cpi.ok("create_vm", json!(["agent-efi", sc, {"ram": 256}, {}, [], {}]))[0].as_str().unwrap().to_string();
    let (_, xml) = virsh(&["dumpxml", &vm]);
    assert!(xml.contains("OVMF") && xml.contains("<loader"), "{xml}");
    assert_eq!(virsh(&["domstate", &vm]).1.trim(), "running");
    cpi.ok("delete_vm", json!([vm]));
    assert!(!domains().contains(&vm));
    cpi.ok("delete_stemcell", json!([sc]));
}

#[test]
fn missing_things_give_the_right_errors() {
    if !libvirt_available() {
        return;
    }
    let cpi = cpi();
    let ghost_vm = "vm-00000000000000000000";
    let ghost_disk = "disk-000000000000000";
    assert_eq!(cpi.ok("has_vm", json!([ghost_vm])), json!(false));
    assert_eq!(cpi.err("reboot_vm", json!([ghost_vm]))["type"], "Bosh::Clouds::VMNotFound");
    assert_eq!(cpi.err("attach_disk", json!([ghost_vm, ghost_disk]))["type"], "Bosh::Clouds::VMNotFound");
    assert_eq!(cpi.err("set_vm_metadata", json!([ghost_vm, {"a": "b"}]))["type"], "Bosh::Clouds::VMNotFound");
    assert_eq!(cpi.err("get_disks", json!([ghost_vm]))["type"], "Bosh::Clouds::VMNotFound");
    cpi.ok("delete_vm", json!([ghost_vm]));
    assert_eq!(cpi.ok("has_disk", json!([ghost_disk])), json!(false));
    assert_eq!(cpi.err("set_disk_metadata", json!([ghost_disk, {}]))["type"], "Bosh::Clouds::DiskNotFound");
    assert_eq!(cpi.err("resize_disk", json!([ghost_disk, 100]))["type"], "Bosh::Clouds::DiskNotFound");
    assert_eq!(cpi.err("snapshot_disk", json!([ghost_disk, {}]))["type"], "Bosh::Clouds::DiskNotFound");
    cpi.ok("delete_disk", json!([ghost_disk]));

    let sc = stemcell(&cpi);
    let vm =
        cpi.ok("create_vm", json!(["agent-missing", sc, {"ram": 128}, {}, [], {}]))[0].as_str().unwrap().to_string();
    assert_eq!(cpi.err("attach_disk", json!([vm, ghost_disk]))["type"], "Bosh::Clouds::DiskNotFound");
    // a VM deleted behind the CPI's back
    virsh(&["destroy", &vm]);
    virsh(&["undefine", &vm]);
    assert_eq!(cpi.ok("has_vm", json!([vm])), json!(false));
    assert_eq!(cpi.err("reboot_vm", json!([vm]))["type"], "Bosh::Clouds::VMNotFound");
    cpi.ok("delete_vm", json!([vm]));
    assert!(!volumes().iter().any(|v| v.starts_with(&vm)), "delete_vm cleans what is left: {:?}", volumes());
    cpi.ok("delete_stemcell", json!([sc]));
}

#[test]
fn failed_creates_leave_nothing_and_say_whether_to_retry() {
    if !libvirt_available() {
        return;
    }
    let pool = "vmcpi-test-rollback";
    let cpi = Cpi::with_config(&config_in(pool, json!({})));
    let sc = stemcell(&cpi);
    let before_vols = volumes_in(pool);
    // a typo in cloud_properties: not retryable, named in the message
    let e = cpi.err("create_vm", json!(["a", sc, {"memory": 512}, {}, [], {}]));
    assert_eq!((e["type"].as_str(), e["ok_to_retry"].as_bool()), (Some("Bosh::Clouds::VMCreationFailed"), Some(false)));
    assert!(e["message"].as_str().unwrap().contains("memory"), "{e}");
    // a network that libvirt does not have: fails at start, after volumes and the domain exist
    let e = cpi.err("create_vm", json!(["a", sc, {"ram": 128, "disk": 16}, {"n": {"type": "dynamic", "cloud_properties": {"name": "no-such-network"}}}, [], {}]));
    assert_eq!((e["type"].as_str(), e["ok_to_retry"].as_bool()), (Some("Bosh::Clouds::VMCreationFailed"), Some(false)));
    assert!(e["message"].as_str().unwrap().contains("no-such-network"), "{e}");
    assert_eq!(volumes_in(pool), before_vols, "volumes left behind");
    assert_eq!(domains_using(pool), Vec::<String>::new(), "domain left behind");
    // bootstrap on an image without a guest agent: a clear error, nothing left
    let e = cpi.err(
        "create_vm",
        json!(["a", sc, {"ram": 128, "bootstrap": {"script": "echo hi", "max_wait_seconds": 2}}, {}, [], {}]),
    );
    assert!(e["message"].as_str().unwrap().contains("guest agent"), "{e}");
    assert_eq!(volumes_in(pool), before_vols, "volumes left behind");
    assert_eq!(domains_using(pool), Vec::<String>::new(), "domain left behind");
    cpi.ok("delete_stemcell", json!([sc]));
}

/// Two configs (two pools of the real libvirtd) sharing one state_dir: an interrupted create of config A (its
/// volume made, its marker left unlocked, as a SIGKILL leaves them) is not config B's to reap; B's creates
/// leave A's volume and marker alone, and A's next create removes both.
#[test]
fn two_pools_on_one_state_dir_reap_only_their_own_leftovers() {
    if !libvirt_available() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let config = |pool: &str| {
        let mut c = config_in(pool, json!({}));
        c["driver"]["state_dir"] = json!(state.path());
        c
    };
    let (pool_a, pool_b) = ("vmcpi-test-owner-a", "vmcpi-test-owner-b");
    let a = Cpi::with_config(&config(pool_a));
    let b = Cpi::with_config(&config(pool_b));
    // A's interrupted create_disk: the volume exists, the marker was never removed
    let left = a.ok("create_disk", json!([16, {}, null])).as_str().unwrap().to_string();
    let marker = state.path().join("inflight").join(format!("{left}.lock"));
    std::fs::write(&marker, format!("owner libvirt {URI} pool {}\n", pool_name(pool_a))).unwrap();
    assert!(volumes_in(pool_a).contains(&left));

    // B creates (and deletes) in its own pool: A's leftover stays, and so does its marker
    let made = b.ok("create_disk", json!([16, {}, null])).as_str().unwrap().to_string();
    assert!(volumes_in(pool_b).contains(&made));
    assert!(volumes_in(pool_a).contains(&left), "config B reaped config A's volume {left}");
    assert!(marker.exists(), "config B dropped config A's marker");
    b.ok("delete_disk", json!([made]));

    // A's next create reaps it
    let next = a.ok("create_disk", json!([16, {}, null])).as_str().unwrap().to_string();
    assert!(!volumes_in(pool_a).contains(&left), "config A left its own orphan {left}: {:?}", volumes_in(pool_a));
    assert!(!marker.exists(), "the orphan's marker is gone");
    a.ok("delete_disk", json!([next]));
}

/// Runs one call under `strace -f`, as the director runs it ([`crate::util::cpi_env`]); returns the response
/// and what strace saw: every program executed, and every new process (a clone without CLONE_THREAD, a
/// fork or vfork).
fn call_traced(config: &Path, method: &str, args: Value) -> (Value, Vec<String>, Vec<String>) {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("strace.log");
    let mut cmd = Command::new("/usr/bin/strace");
    cmd.args(["-f", "-qq", "-e", "trace=execve,execveat,clone,clone3,fork,vfork", "-o"])
        .arg(&log)
        .arg(crate::util::cpi_bin())
        .arg("--config")
        .arg(config);
    crate::util::cpi_env(&mut cmd, config);
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run strace");
    let req = json!({"method": method, "arguments": args, "context": {}, "api_version": 2});
    child.stdin.take().unwrap().write_all(req.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{method}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(v["error"].is_null(), "{method}: {v}");
    let trace = std::fs::read_to_string(&log).unwrap();
    let execs = trace.lines().filter(|l| l.contains("execve")).map(str::to_string).collect();
    let processes = trace
        .lines()
        .filter(|l| {
            let call = l.split_whitespace().nth(1).unwrap_or("");
            (call.starts_with("clone(") || call.starts_with("clone3(")) && !l.contains("CLONE_THREAD")
                || call.starts_with("fork(")
                || call.starts_with("vfork(")
        })
        .map(str::to_string)
        .collect();
    (v["result"].clone(), execs, processes)
}

/// The CPI runs no other program, whatever the call: strace sees one execve (strace starting the CPI) and
/// no new process (threads only) in each method that used to run virsh or qemu-img. Helper processes per
/// call: 0 (the benchmark prints the same count).
#[test]
fn the_cpi_runs_no_other_program() {
    if !libvirt_available()
        || !crate::util::require_peer("strace (apt-get install strace)", Path::new("/usr/bin/strace").exists())
    {
        return;
    }
    let started = std::time::Instant::now();
    let cfg = Cpi::with_config(&config_in("vmcpi-test-noexec", json!({})));
    let config = cfg.config.clone();
    let dir = tempfile::tempdir().unwrap();
    let vs = vsphere_image(dir.path(), false);
    let mut calls: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
    let mut call = |method: &str, args: Value| -> Value {
        let (r, execs, procs) = call_traced(&config, method, args);
        calls.push((method.to_string(), execs, procs));
        r
    };
    let sc = call("create_stemcell", json!([vs, {}]));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let nets = json!({"n": {"type": "dynamic", "cloud_properties": {"type": "user", "port_forwards": [{"host": port, "guest": 6868}]}}});
    let vm = call("create_vm", json!(["a", sc, {"ram": 64, "disk": 16}, nets, [], {}]))[0].clone();
    let disk = call("create_disk", json!([16, {}, vm]));
    call("attach_disk", json!([vm, disk]));
    call("set_vm_metadata", json!([vm, {"name": "x/0"}]));
    call("snapshot_disk", json!([disk, {}]));
    call("reboot_vm", json!([vm]));
    call("detach_disk", json!([vm, disk]));
    call("delete_vm", json!([vm]));
    call("delete_disk", json!([disk]));
    call("delete_stemcell", json!([sc]));
    for (method, execs, procs) in &calls {
        assert_eq!(execs.len(), 1, "{method} executed another program: {execs:#?}");
        assert!(execs[0].contains("vmcpi"), "{method}: {execs:?}");
        assert!(procs.is_empty(), "{method} made a process: {procs:#?}");
    }
    // the snapshot left its volume: remove it as the director would
    for v in volumes_in("vmcpi-test-noexec").iter().filter(|v| v.starts_with("snap-")) {
        cfg.ok("delete_snapshot", json!([v]));
    }
    eprintln!("no-exec test: {} calls under strace in {} ms", calls.len(), started.elapsed().as_millis());
}

/// The tripwires every libvirt CPI call runs among are real: in that environment `virsh` and `qemu-img`
/// cannot run, by name or by path (they answer 127 and would be recorded), and PATH is empty.
#[test]
fn the_cpi_environment_has_no_libvirt_tools() {
    let (_, wired) = crate::util::tripwires();
    if !crate::util::require_peer("root (a mount namespace for the tripwires)", unsafe { libc::geteuid() } == 0) {
        return;
    }
    for tool in ["virsh", "qemu-img"] {
        if !Path::new("/usr/bin").join(tool).exists() {
            continue;
        }
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(format!("command -v {tool}; /usr/bin/{tool} --version"));
        crate::util::without_libvirt_tools(&mut cmd, false);
        // a probe the tripwire answers without recording it (so the other tests' check stays clean)
        let out = cmd.env("VMCPI_TRIPWIRE_PROBE", "1").output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(127), "{tool} ran: {stdout}");
        assert_eq!(stdout.trim(), "tripped", "{tool} is not on PATH and its path leads to the tripwire");
    }
    assert!(wired >= 1, "no tool was wired");
}
