//! The vmrun driver through the built `vmcpi`, against the VMware test double (src/bin/fake-vmware.rs),
//! locally and over SSH to an OpenSSH server on loopback (started here with `tools/sshd-up.sh`, port 22241):
//! Player's full copies, bootstrap, locks, host keys and SSH credentials, dropped connections, killed creates,
//! the double itself (every method locally and over SSH: `suites::lifecycle`; secrets: `suites::secrets`;
//! processes at once, locally and over SSH: `suites::parallel`). The helpers here serve tests/peer/vmware.rs.
use crate::util::{require_peer, Cpi};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The fake's binary, built by cargo with the tests (`[[bin]] fake-vmware`).
pub fn fake_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fake-vmware"))
}

/// A private VMware "installation": symlinks to the fake and its state directory.
pub struct Fake {
    pub dir: tempfile::TempDir,
}

impl Fake {
    pub fn new() -> Fake {
        let dir = tempfile::Builder::new().prefix("vmcpi-vmrun-").tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for name in ["vmrun", "ovftool", "vmware-vdiskmanager"] {
            std::os::unix::fs::symlink(fake_binary(), bin.join(name)).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("store")).unwrap();
        Fake { dir }
    }
    pub fn bin(&self, name: &str) -> String {
        self.dir.path().join("bin").join(name).display().to_string()
    }
    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }
    pub fn state(&self, name: &str) -> PathBuf {
        self.dir.path().join("bin/fake-vmware-state").join(name)
    }
    pub fn running(&self) -> Vec<String> {
        std::fs::read_to_string(self.state("running")).unwrap_or_default().lines().map(str::to_string).collect()
    }
    /// The driver config: with ovftool + vdiskmanager, or with neither (own import, qemu-img disks).
    pub fn config(&self, vmware_tools: bool, ssh: Option<Value>) -> Value {
        let mut d = json!({
            "kind": "vmrun",
            "vm_store_path": self.store().display().to_string(),
            "vmrun": self.bin("vmrun"),
            "soft_shutdown_timeout_seconds": 5,
            "lock_timeout_seconds": 60,
        });
        if vmware_tools {
            d["ovftool"] = json!(self.bin("ovftool"));
            d["vdiskmanager"] = json!(self.bin("vmware-vdiskmanager"));
        }
        if let Some(s) = ssh {
            d["ssh"] = s;
        }
        json!({"driver": d, "agent": {"mbus": "https://mbus:mbus-secret-pw@0.0.0.0:6868", "ntp": ["0.pool.ntp.org"]}})
    }
}

/// Port of this module's loopback sshd (unique among the project's tests).
pub const SSHD_PORT: u16 = 22241;

/// Starts (or reuses) the loopback sshd with tools/sshd-up.sh; returns its state directory and port.
pub fn sshd() -> Option<(PathBuf, u16)> {
    static UP: OnceLock<bool> = OnceLock::new();
    let dir = PathBuf::from(format!("/tmp/vmcpi-test-sshd-{SSHD_PORT}"));
    let ok = *UP.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/sshd-up.sh");
        Command::new("bash")
            .arg(script)
            .arg(&dir)
            .arg(SSHD_PORT.to_string())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    ok.then_some((dir, SSHD_PORT))
}

/// [`sshd`], or a skip on a laptop (a failure when CI is set).
pub fn require_sshd() -> Option<(PathBuf, u16)> {
    let s = sshd();
    require_peer("OpenSSH server on loopback (tools/sshd-up.sh)", s.is_some()).then_some(s?)
}

pub fn ssh_block(dir: &Path, port: u16, known_hosts: &Path) -> Value {
    json!({
        "host": "127.0.0.1", "port": port, "user": "root",
        "private_key_path": dir.join("id_ed25519").display().to_string(),
        "known_hosts": known_hosts.display().to_string(),
    })
}

/// A vSphere-style stemcell `image`: a gzipped tar of image.ovf, image.mf and a stream-optimised VMDK of
/// `capacity_mib` holding `data_mib` of non-zero data.
pub fn stemcell_image(dir: &Path, capacity_mib: u64, data_mib: u64) -> PathBuf {
    stemcell_image_with(dir, capacity_mib, data_mib, |ovf| ovf)
}

/// [`stemcell_image`] with its OVF descriptor changed by `edit`.
pub fn stemcell_image_with(dir: &Path, capacity_mib: u64, data_mib: u64, edit: impl Fn(String) -> String) -> PathBuf {
    let raw = dir.join("disk.raw");
    {
        let mut f = std::fs::File::create(&raw).unwrap();
        let block: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8 | 1).collect();
        for _ in 0..data_mib {
            f.write_all(&block).unwrap();
        }
        f.set_len(capacity_mib << 20).unwrap();
    }
    let vmdk = dir.join("image-disk1.vmdk");
    crate::util::stream_optimized_vmdk(&raw, &vmdk, ",adapter_type=lsilogic,hwversion=13");
    std::fs::remove_file(&raw).unwrap();
    let ovf = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vmrun/image.ovf"))
        .unwrap()
        .replace("__CAPACITY_MIB__", &capacity_mib.to_string());
    let ovf = edit(ovf);
    let image = dir.join("image");
    let gz = flate2::write::GzEncoder::new(std::fs::File::create(&image).unwrap(), flate2::Compression::fast());
    let mut t = tar::Builder::new(gz);
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, name, data).unwrap();
    };
    add("image.ovf", ovf.as_bytes());
    add("image.mf", b"SHA1(image.ovf)= 0\n");
    add("image-disk1.vmdk", &std::fs::read(&vmdk).unwrap());
    t.into_inner().unwrap().finish().unwrap();
    std::fs::remove_file(&vmdk).unwrap();
    image
}

pub fn create_vm_args(stemcell: &Value, cloud_properties: Value) -> Value {
    json!([
        "agent-0f1e", stemcell, cloud_properties,
        {"default": {"type": "manual", "ip": "10.0.0.5", "netmask": "255.255.255.0", "gateway": "10.0.0.1", "default": ["dns", "gateway"], "cloud_properties": {"name": "vmnet8"}},
         "second": {"type": "dynamic", "cloud_properties": {}}},
        [],
        {"bosh": {"password": "vm-secret-password-1"}}
    ])
}

fn vmx_of(store: &Path, vm: &str) -> String {
    std::fs::read_to_string(store.join(format!("vms/{vm}/{vm}.vmx"))).unwrap()
}

fn dir_names(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .map(|r| r.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn vmrun_player_makes_full_copies_with_ovftool() {
    let fake = Fake::new();
    let mut cfg = fake.config(true, None);
    cfg["driver"]["host_type"] = json!("player");
    let cpi = Cpi::with_config(&cfg);
    let img_dir = tempfile::tempdir().unwrap();
    let sc = cpi.ok("create_stemcell", json!([stemcell_image(img_dir.path(), 64, 1).display().to_string(), {}]));
    let vm = cpi.ok("create_vm", create_vm_args(&sc, json!({"disk": 256})))[0].as_str().unwrap().to_string();
    let vmx = vmx_of(&fake.store(), &vm);
    assert!(
        vmx.contains(&format!("scsi0:0.fileName = \"{vm}-disk1.vmdk\"")) && vmx.contains("firmware = \"efi\""),
        "{vmx}"
    );
    let disk = cpi.ok("create_disk", json!([64, {}, vm]));
    assert_eq!(cpi.ok("attach_disk", json!([vm, disk])), json!("2"));
    cpi.ok("delete_vm", json!([vm]));
    // full copies do not need their stemcell
    cpi.ok("delete_stemcell", json!([sc]));
    cpi.ok("delete_disk", json!([disk]));
    let log = std::fs::read_to_string(fake.state("log")).unwrap();
    assert!(log.contains("vmrun -T player start") && !log.contains(" clone ") && !log.contains(" snapshot "), "{log}");
}

/// A stemcell's OVF may carry `vmw:ExtraConfig`: raw .vmx keys (a serial port into a host file, shared
/// folders, isolation switches). ovftool writes them only with `--allowExtraConfig`, which vmcpi passes only
/// when the config file says `allow_extra_config: true`; by default they are skipped.
#[test]
fn vmrun_stemcell_extra_config_needs_an_opt_in() {
    let fake = Fake::new();
    let img = tempfile::tempdir().unwrap();
    let image = stemcell_image_with(img.path(), 64, 1, |ovf| {
        ovf.replace(
            "</VirtualHardwareSection>",
            "<vmw:ExtraConfig ovf:required=\"false\" vmw:key=\"serial0.fileName\" vmw:value=\"/etc/shadow\"/>\n</VirtualHardwareSection>",
        )
    });
    for opt_in in [None, Some(false), Some(true)] {
        let mut cfg = fake.config(true, None);
        if let Some(v) = opt_in {
            cfg["driver"]["allow_extra_config"] = json!(v);
        }
        std::fs::create_dir_all(fake.state("")).unwrap();
        std::fs::write(fake.state("log"), "").unwrap();
        let cpi = Cpi::with_config(&cfg);
        let sc = cpi.ok("create_stemcell", json!([image.display().to_string(), {}]));
        let sc = sc.as_str().unwrap();
        let vmx = std::fs::read_to_string(fake.store().join(format!("stemcells/{sc}/{sc}.vmx"))).unwrap();
        let log = std::fs::read_to_string(fake.state("log")).unwrap();
        let ovftool = log.lines().find(|l| l.contains("--sourceType=OVF")).unwrap_or_else(|| panic!("{log}"));
        let allowed = opt_in == Some(true);
        assert_eq!(vmx.contains("serial0.fileName"), allowed, "{opt_in:?}: {vmx}");
        assert_eq!(ovftool.contains("--allowExtraConfig"), allowed, "{opt_in:?}: {ovftool}");
        cpi.ok("delete_stemcell", json!([sc]));
    }
}

#[test]
fn vmrun_bootstrap_runs_the_script_in_the_guest() {
    let fake = Fake::new();
    let cpi = Cpi::with_config(&fake.config(true, None));
    let img_dir = tempfile::tempdir().unwrap();
    let sc = cpi.ok("create_stemcell", json!([stemcell_image(img_dir.path(), 64, 1).display().to_string(), {}]));
    std::fs::write(fake.state("guest-tools"), "vcap:c1oudc0w").unwrap();
    let r = cpi.ok("create_vm", create_vm_args(&sc, json!({"bootstrap": {"script": "touch /tmp/x", "username": "vcap", "password": "c1oudc0w", "ready_process": "bosh-agent"}})));
    let log = std::fs::read_to_string(fake.state("guest-log")).unwrap();
    assert!(log.starts_with("/bin/bash /tmp/vmcpi-bootstrap-"), "{log}");
    let copied: Vec<String> = dir_names(&fake.state("guest-fs"));
    assert_eq!(copied.len(), 1);
    assert_eq!(std::fs::read_to_string(fake.state("guest-fs").join(&copied[0])).unwrap(), "touch /tmp/x");
    // a failing script fails the create and removes the VM
    std::fs::write(fake.state("guest-exit"), "3").unwrap();
    let e = cpi.err(
        "create_vm",
        create_vm_args(&sc, json!({"bootstrap": {"script": "exit 3", "username": "vcap", "password": "c1oudc0w"}})),
    );
    assert!(e["message"].as_str().unwrap().contains("non-zero exit code: 3"), "{e}");
    assert_eq!(dir_names(&fake.store().join("vms")), vec![r[0].as_str().unwrap().to_string()]);
}

#[test]
fn vmrun_failed_create_leaves_nothing_and_names_the_lock() {
    let fake = Fake::new();
    let cpi = Cpi::with_config(&fake.config(true, None));
    let img_dir = tempfile::tempdir().unwrap();
    let sc = cpi.ok("create_stemcell", json!([stemcell_image(img_dir.path(), 64, 1).display().to_string(), {}]));
    let sc_id = sc.as_str().unwrap();
    // the stemcell VM is open elsewhere (VMware's GUI holds its lock): the clone fails like vmrun fails
    let lock = fake.store().join(format!("stemcells/{sc_id}/{sc_id}.vmx.lck"));
    std::fs::create_dir(&lock).unwrap();
    let e = cpi.err("create_vm", create_vm_args(&sc, json!({})));
    assert!(e["message"].as_str().unwrap().contains("The file is already in use"), "{e}");
    assert_eq!(dir_names(&fake.store().join("vms")), Vec::<String>::new());
    assert_eq!(dir_names(&fake.store().join("pending")), Vec::<String>::new());
    std::fs::remove_dir(&lock).unwrap();
    // bad input fails before anything is made
    let e = cpi.err("create_vm", create_vm_args(&sc, json!({"ram": 1023})));
    assert!(e["message"].as_str().unwrap().contains("multiple of 4"), "{e}");
    let mut args = create_vm_args(&sc, json!({}));
    args[3]["default"]["cloud_properties"] = json!({"name": "eth0"});
    assert!(cpi.err("create_vm", args)["message"].as_str().unwrap().contains("vmnetN"));
    assert!(cpi.err("create_vm", create_vm_args(&json!("sc-0000000000000000"), json!({})))["message"]
        .as_str()
        .unwrap()
        .contains("stemcell sc-0000000000000000 not found"));
    assert_eq!(dir_names(&fake.store().join("vms")), Vec::<String>::new());
}

#[test]
fn vmrun_lock_waits_are_bounded_locally_and_over_ssh() {
    let fake = Fake::new();
    let mut configs = vec![fake.config(true, None)];
    if let Some((dir, port)) = require_sshd() {
        configs.push(fake.config(false, Some(ssh_block(&dir, port, &dir.join("known_hosts")))));
    }
    let img_dir = tempfile::tempdir().unwrap();
    let first = Cpi::with_config(&configs[0]);
    let sc = first.ok("create_stemcell", json!([stemcell_image(img_dir.path(), 64, 1).display().to_string(), {}]));
    let vm = first.ok("create_vm", create_vm_args(&sc, json!({})))[0].as_str().unwrap().to_string();
    // another CPI call holds the VM's lock (an flock, as vmcpi takes it)
    let held = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(fake.store().join(format!("locks/{vm}.lock")))
        .unwrap();
    held.try_lock().unwrap();
    for mut cfg in configs {
        cfg["driver"]["lock_timeout_seconds"] = json!(1);
        let cpi = Cpi::with_config(&cfg);
        let started = Instant::now();
        let e = cpi.err("reboot_vm", json!([vm]));
        assert!(
            e["message"].as_str().unwrap().contains(&format!(
                "timed out after 1 s waiting for lock {}",
                fake.store().join(format!("locks/{vm}.lock")).display()
            )),
            "{e}"
        );
        assert!(started.elapsed() < Duration::from_secs(15));
    }
    drop(held);
    first.ok("reboot_vm", json!([vm]));
    first.ok("delete_vm", json!([vm]));
}

#[test]
fn vmrun_wrong_or_unknown_host_key_is_refused() {
    let Some((dir, port)) = require_sshd() else { return };
    let fake = Fake::new();
    let kdir = tempfile::tempdir().unwrap();
    let other_pub = crate::util::fresh_ssh_key(&kdir.path().join("other"));
    let wrong = kdir.path().join("known_hosts_wrong");
    std::fs::write(&wrong, format!("[127.0.0.1]:{port} {other_pub}")).unwrap();
    let cpi = Cpi::with_config(&fake.config(false, Some(ssh_block(&dir, port, &wrong))));
    let e = cpi.err("has_vm", json!(["vm-00000000000000000000"]));
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("does NOT match") && msg.contains("SHA256:"), "{msg}");
    let empty = kdir.path().join("known_hosts_empty");
    std::fs::write(&empty, "").unwrap();
    let cpi = Cpi::with_config(&fake.config(false, Some(ssh_block(&dir, port, &empty))));
    let msg = cpi.err("has_vm", json!(["vm-00000000000000000000"]))["message"].as_str().unwrap().to_string();
    assert!(msg.contains("is not in") && msg.contains("ssh-keyscan") && msg.contains("SHA256:"), "{msg}");
    // the inline form is checked too
    let mut ssh = ssh_block(&dir, port, &empty);
    ssh.as_object_mut().unwrap().remove("known_hosts");
    ssh["host_public_key"] = json!(other_pub);
    let cpi = Cpi::with_config(&fake.config(false, Some(ssh)));
    assert!(cpi.err("has_vm", json!(["vm-00000000000000000000"]))["message"]
        .as_str()
        .unwrap()
        .contains("does NOT match"));
    assert!(!fake.state("log").exists(), "nothing may run on a host whose key did not match");
}

#[test]
fn vmrun_ssh_credentials_inline_key_rsa_and_password() {
    let Some((dir, port)) = require_sshd() else { return };
    let fake = Fake::new();
    let probe = json!(["vm-00000000000000000000"]);
    // the key inline, as BOSH job properties carry it
    let mut ssh = ssh_block(&dir, port, &dir.join("known_hosts"));
    ssh.as_object_mut().unwrap().remove("private_key_path");
    ssh["private_key"] = json!(std::fs::read_to_string(dir.join("id_ed25519")).unwrap());
    let r = Cpi::with_config(&fake.config(false, Some(ssh))).call("has_vm", probe.clone());
    assert_eq!(r.response["result"], json!(false), "{}", r.response);
    assert!(!r.stderr.contains("PRIVATE KEY"), "{}", r.stderr);
    // an RSA key either works (libssh2 with rsa-sha2) or the error says why and what to use
    let mut ssh = ssh_block(&dir, port, &dir.join("known_hosts"));
    ssh["private_key_path"] = json!(dir.join("id_rsa").display().to_string());
    let r = Cpi::with_config(&fake.config(false, Some(ssh))).call("has_vm", probe.clone());
    if !r.response["error"].is_null() {
        let msg = r.response["error"]["message"].as_str().unwrap();
        assert!(msg.contains("SHA-1") && msg.contains("ed25519"), "{msg}");
    }
    // this sshd allows no passwords: a clear authentication error, the password never shown
    let mut ssh = ssh_block(&dir, port, &dir.join("known_hosts"));
    ssh.as_object_mut().unwrap().remove("private_key_path");
    ssh["password"] = json!("not-the-password-42");
    let r = Cpi::with_config(&fake.config(false, Some(ssh))).call("has_vm", probe);
    let msg = r.response["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("SSH authentication as root") && msg.contains("failed"), "{}", r.response);
    assert!(!r.stdout.contains("not-the-password-42") && !r.stderr.contains("not-the-password-42"));
}

/// A TCP proxy in front of sshd that can cut every connection and refuse new ones.
struct Proxy {
    port: u16,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    refuse: Arc<AtomicBool>,
}

impl Proxy {
    fn start(target: u16) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let refuse = Arc::new(AtomicBool::new(false));
        let (c2, r2) = (conns.clone(), refuse.clone());
        std::thread::spawn(move || {
            for client in l.incoming().flatten() {
                if r2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { continue };
                c2.lock().unwrap().extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                for (mut a, mut b) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = a.read(&mut buf) {
                            if n == 0 || b.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = b.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy { port, conns, refuse }
    }
    fn cut(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

fn wait_for(p: &Path, secs: u64) {
    let t = Instant::now();
    while !p.exists() {
        assert!(t.elapsed() < Duration::from_secs(secs), "{} did not appear", p.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn vmrun_dropped_connection_mid_create_leaves_nothing() {
    let Some((dir, port)) = require_sshd() else { return };
    let fake = Fake::new();
    let proxy = Proxy::start(port);
    let host_pub = std::fs::read_to_string(dir.join("ssh_host_ed25519_key.pub")).unwrap();
    let kh = fake.dir.path().join("known_hosts");
    std::fs::write(
        &kh,
        format!("[127.0.0.1]:{} {}\n", proxy.port, host_pub.split_whitespace().take(2).collect::<Vec<_>>().join(" ")),
    )
    .unwrap();
    let cpi = Arc::new(Cpi::with_config(&fake.config(false, Some(ssh_block(&dir, proxy.port, &kh)))));
    let img_dir = tempfile::tempdir().unwrap();
    let sc = cpi.ok("create_stemcell", json!([stemcell_image(img_dir.path(), 64, 1).display().to_string(), {}]));
    let started_marker = fake.state("hooks/started-clone");

    // 1. the connection drops while vmrun clone runs; the CPI reconnects once and removes the half-made VM
    std::fs::write(fake.state("hooks/delay-clone"), "5").unwrap();
    let (c, s) = (cpi.clone(), sc.clone());
    let call = std::thread::spawn(move || c.call("create_vm", create_vm_args(&s, json!({}))));
    wait_for(&started_marker, 30);
    proxy.cut();
    let r = call.join().unwrap();
    let msg = r.response["error"]["message"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("connection") && msg.contains("lost"), "{}", r.response);
    eprintln!("create_vm with the connection cut: {msg}");
    assert_eq!(dir_names(&fake.store().join("vms")), Vec::<String>::new(), "half-made VM left behind\n{}", r.stderr);
    assert_eq!(dir_names(&fake.store().join("pending")), Vec::<String>::new());

    // 2. the host stays unreachable, so clean-up fails too; the next create_vm removes the leftovers
    std::fs::remove_file(&started_marker).unwrap();
    let (c, s) = (cpi.clone(), sc.clone());
    let call = std::thread::spawn(move || c.call("create_vm", create_vm_args(&s, json!({}))));
    wait_for(&started_marker, 30);
    proxy.refuse.store(true, Ordering::SeqCst);
    proxy.cut();
    let r = call.join().unwrap();
    assert!(r.response["error"]["message"].as_str().unwrap_or_default().contains("lost"), "{}", r.response);
    // the remote clone was killed with the connection (no vmrun left running on the host)
    std::thread::sleep(Duration::from_millis(300));
    let pid = std::fs::read_to_string(&started_marker).unwrap();
    assert!(!Path::new(&format!("/proc/{}", pid.trim())).exists(), "the remote vmrun clone still runs");
    assert_eq!(dir_names(&fake.store().join("pending")).len(), 1, "the failed create must be recorded");
    proxy.refuse.store(false, Ordering::SeqCst);
    std::fs::remove_file(fake.state("hooks/delay-clone")).unwrap();
    let vm = cpi.ok("create_vm", create_vm_args(&sc, json!({})))[0].as_str().unwrap().to_string();
    assert_eq!(dir_names(&fake.store().join("vms")), vec![vm]);
    assert_eq!(dir_names(&fake.store().join("pending")), Vec::<String>::new());
}

#[test]
fn vmrun_fake_fails_like_vmware() {
    let fake = Fake::new();
    let vmrun = fake.bin("vmrun");
    let run = |args: &[&str]| {
        let o = Command::new(&vmrun).args(args).output().unwrap();
        (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned())
    };
    assert_eq!(run(&["-T", "ws", "list"]), (0, "Total running VMs: 0\n".into()));
    let vmx = fake.store().join("a/a.vmx").display().to_string();
    let (code, out) = run(&["-T", "ws", "start", &vmx, "nogui"]);
    assert_eq!(code, 255);
    assert!(out.starts_with("Error: Cannot open VM: "), "{out}");
    std::fs::create_dir_all(fake.store().join("a")).unwrap();
    std::fs::write(&vmx, "memsize = \"512\"\nscsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"missing.vmdk\"\n")
        .unwrap();
    let (code, out) = run(&["start", &vmx]);
    assert_eq!(code, 255);
    assert!(out.contains("Cannot open the disk") && out.contains("missing.vmdk"), "{out}");
    std::fs::write(&vmx, "memsize = \"512\"\n").unwrap();
    assert_eq!(run(&["stop", &vmx, "hard"]), (255, "Error: The virtual machine needs to be powered on\n".into()));
    assert_eq!(run(&["start", &vmx, "nogui"]).0, 0);
    assert_eq!(run(&["list"]).1, format!("Total running VMs: 1\n{vmx}\n"));
    assert_eq!(run(&["deleteVM", &vmx]).0, 255);
    // an offline edit of a running VM's .vmx is lost at power-off; writeVariable persists
    std::fs::write(&vmx, "memsize = \"512\"\nedited = \"offline\"\n").unwrap();
    assert_eq!(run(&["writeVariable", &vmx, "runtimeConfig", "guestinfo.x", "y"]).0, 0);
    assert_eq!(run(&["stop", &vmx, "soft"]).1, "Error: Guest tools is not running.\n");
    assert_eq!(run(&["stop", &vmx, "hard"]).0, 0);
    let text = std::fs::read_to_string(&vmx).unwrap();
    assert!(!text.contains("offline") && text.contains("guestinfo.x = \"y\""), "{text}");
    // a linked clone needs the snapshot; a locked source cannot be cloned
    let dst = fake.store().join("b/b.vmx").display().to_string();
    assert!(run(&["clone", &vmx, &dst, "linked", "-snapshot=s1"]).1.contains("Invalid snapshot name"));
    std::fs::create_dir(format!("{vmx}.lck")).unwrap();
    assert_eq!(run(&["snapshot", &vmx, "s1"]).1, "Error: The file is already in use\n");
    assert_eq!(run(&["-T", "player", "clone", &vmx, &dst, "linked"]).0, 255);
    assert_eq!(run(&["frobnicate"]).0, 255);
}

#[test]
fn vmrun_killed_create_vm_is_removed_by_the_next_create() {
    let fake = Fake::new();
    let cpi = Cpi::with_config(&fake.config(true, None));
    let img_dir = tempfile::tempdir().unwrap();
    let sc = cpi.ok("create_stemcell", json!([stemcell_image(img_dir.path(), 64, 1).display().to_string(), {}]));
    std::fs::write(fake.state("hooks/delay-clone"), "20").unwrap();
    let req =
        json!({"method": "create_vm", "arguments": create_vm_args(&sc, json!({})), "context": {}, "api_version": 2});
    let mut child = Command::new(crate::util::cpi_bin())
        .arg("--config")
        .arg(&cpi.config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(req.to_string().as_bytes()).unwrap();
    wait_for(&fake.state("hooks/started-clone"), 30);
    child.kill().unwrap();
    child.wait().unwrap();
    // the vmrun clone it ran does not outlive it (stopped at once, not after its 20 s); the store holds a
    // half-made VM and its pending entry
    let pid = std::fs::read_to_string(fake.state("hooks/started-clone")).unwrap();
    let t = Instant::now();
    while Path::new(&format!("/proc/{}", pid.trim())).exists() {
        assert!(t.elapsed() < Duration::from_secs(5), "the vmrun clone outlived the killed CPI");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(dir_names(&fake.store().join("vms")).len(), 1);
    assert_eq!(dir_names(&fake.store().join("pending")).len(), 1);
    std::fs::remove_file(fake.state("hooks/delay-clone")).unwrap();
    let vm = cpi.ok("create_vm", create_vm_args(&sc, json!({})))[0].as_str().unwrap().to_string();
    assert_eq!(dir_names(&fake.store().join("vms")), vec![vm]);
    assert_eq!(dir_names(&fake.store().join("pending")), Vec::<String>::new());
}
