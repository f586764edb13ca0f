//! The libvirt driver over its two remote transports, as a director VM reaches its hypervisor:
//! `qemu+ssh://` to OpenSSH on loopback (tools/sshd-up.sh; the host key pinned with `known_hosts=`, the key
//! named with `keyfile=`) and `qemu+tls://` to libvirtd's TLS listener on 127.0.0.1 (the test PKI of
//! tools/libvirt-up.sh, `pkipath=`). A representative lifecycle on each (the full one runs over the unix
//! socket in tests/libvirt.rs), and the refusals: an unknown or changed host key, a key the host does not
//! accept, a certificate of another CA, a client the server does not trust, a URI of earlier versions.
use crate::libvirt::{config_in, libvirt_available, openstack_image, volumes_in};
use crate::util::{require_peer, Cpi};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

const PORT: u16 = 22297;

/// Starts (or reuses) the loopback sshd; returns its state directory.
fn sshd() -> Option<PathBuf> {
    let dir = PathBuf::from(format!("/tmp/vmcpi-test-sshd-{PORT}"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/sshd-up.sh");
    let ok = Command::new("bash")
        .arg(script)
        .arg(&dir)
        .arg(PORT.to_string())
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    require_peer("OpenSSH server on loopback (tools/sshd-up.sh)", ok).then_some(dir)
}

fn ssh_uri(key: &Path, known_hosts: &Path) -> String {
    format!("qemu+ssh://root@127.0.0.1:{PORT}/system?keyfile={}&known_hosts={}", key.display(), known_hosts.display())
}

/// The client PKI directories of tools/libvirt-up.sh.
fn pki(which: &str) -> PathBuf {
    PathBuf::from(std::env::var("LIBVIRT_UP_STATE").unwrap_or_else(|_| "/var/tmp/cpi-testinfra/libvirt".into()))
        .join("pki")
        .join(which)
}

fn tls_up() -> bool {
    let up =
        std::net::TcpStream::connect_timeout(&"127.0.0.1:16514".parse().unwrap(), std::time::Duration::from_secs(2))
            .is_ok();
    require_peer("libvirtd's TLS listener on 127.0.0.1:16514 (tools/libvirt-up.sh)", up)
}

fn tls_uri(which: &str) -> String {
    format!("qemu+tls://127.0.0.1/system?pkipath={}", pki(which).display())
}

fn cpi(pool: &str, uri: &str) -> Cpi {
    let mut cfg = config_in(pool, json!({}));
    cfg["driver"]["uri"] = json!(uri);
    Cpi::with_config(&cfg)
}

fn taken(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_err()
}

/// create_stemcell, create_vm with a port forward, a disk attached, snapshotted and detached, everything
/// deleted: nothing is left in the pool and the forwarded port is free again.
fn lifecycle(pool: &str, uri: &str) {
    let started = std::time::Instant::now();
    let cpi = cpi(pool, uri);
    let img_dir = tempfile::tempdir().unwrap();
    let sc = cpi.ok("create_stemcell", json!([openstack_image(img_dir.path()), {}])).as_str().unwrap().to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let nets = json!({"n": {"type": "dynamic", "cloud_properties": {"type": "user", "port_forwards": [{"host": port, "guest": 6868}]}}});
    let vm =
        cpi.ok("create_vm", json!(["agent-remote", sc, {"ram": 64}, nets, [], {}]))[0].as_str().unwrap().to_string();
    assert!(taken(port), "the VM's QEMU holds the forwarded port {port}");
    let disk = cpi.ok("create_disk", json!([16, {}, vm])).as_str().unwrap().to_string();
    assert_eq!(cpi.ok("attach_disk", json!([vm, disk])), json!({"path": "/dev/sdc"}));
    let snap = cpi.ok("snapshot_disk", json!([disk, {}])).as_str().unwrap().to_string();
    assert!(volumes_in(pool).contains(&snap));
    cpi.ok("detach_disk", json!([vm, disk]));
    cpi.ok("delete_snapshot", json!([snap]));
    cpi.ok("delete_vm", json!([vm]));
    assert!(!taken(port), "delete_vm frees the forwarded port");
    cpi.ok("delete_disk", json!([disk]));
    cpi.ok("delete_stemcell", json!([sc]));
    assert!(volumes_in(pool).is_empty(), "{:?}", volumes_in(pool));
    eprintln!("lifecycle over {}: {} ms", uri.split("://").next().unwrap(), started.elapsed().as_millis());
}

#[test]
fn lifecycle_over_qemu_ssh_with_a_pinned_host_key() {
    if !libvirt_available() {
        return;
    }
    let Some(dir) = sshd() else { return };
    lifecycle("vmcpi-test-ssh", &ssh_uri(&dir.join("id_ed25519"), &dir.join("known_hosts")));
}

#[test]
fn lifecycle_over_qemu_tls_with_client_certificates() {
    if !libvirt_available() || !tls_up() {
        return;
    }
    lifecycle("vmcpi-test-tls", &tls_uri("client"));
}

/// The error of a call through `uri`: a CloudError that is not retried (the same refusal comes again).
fn refused(uri: &str) -> String {
    let e = cpi("vmcpi-test-ssh", uri).err("has_disk", json!(["disk-000000000000000"]));
    assert_eq!(
        (e["type"].as_str(), e["ok_to_retry"].as_bool()),
        (Some("Bosh::Clouds::CloudError"), Some(false)),
        "{e}"
    );
    let msg = e["message"].as_str().unwrap().to_string();
    assert!(msg.starts_with("cannot connect to libvirt at qemu+"), "{msg}");
    msg
}

#[test]
fn an_unknown_or_changed_host_key_a_refused_key_or_certificate_is_a_clear_cloud_error() {
    if !libvirt_available() {
        return;
    }
    let Some(dir) = sshd() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let key = dir.join("id_ed25519");
    // a host that known_hosts does not list
    let empty = tmp.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    let msg = refused(&ssh_uri(&key, &empty));
    assert!(msg.contains("is not in") && msg.contains("SHA256:"), "{msg}");
    // a known_hosts that pins some other key for the same host
    let other = tmp.path().join("other");
    let pubkey = crate::util::fresh_ssh_key(&other);
    let known = tmp.path().join("known_hosts");
    std::fs::write(&known, format!("[127.0.0.1]:{PORT} {pubkey}\n")).unwrap();
    let msg = refused(&ssh_uri(&key, &known));
    assert!(msg.contains("does NOT match"), "{msg}");
    // a key the host does not accept
    let msg = refused(&ssh_uri(&other, &dir.join("known_hosts")));
    assert!(msg.contains("SSH authentication as root"), "{msg}");
    // a key file that is not there (yet: it may be written before the next try)
    let e = cpi("vmcpi-test-ssh", &ssh_uri(&tmp.path().join("nokey"), &dir.join("known_hosts")))
        .err("has_disk", json!(["disk-000000000000000"]));
    assert!(e["message"].as_str().unwrap().contains("does not exist (keyfile=)"), "{e}");

    if tls_up() {
        let msg = refused(&tls_uri("client-wrong-ca"));
        assert!(msg.contains("not signed by the CA"), "{msg}");
        let msg = refused(&tls_uri("client-untrusted"));
        assert!(msg.contains("the server refused our certificate"), "{msg}");
    }

    // a URI of earlier versions, which ran ssh through virsh: refused when the config is read, saying what to write
    let e = cpi(
        "vmcpi-test-ssh",
        &format!("qemu+ssh://root@127.0.0.1:{PORT}/system?command={}", dir.join("ssh").display()),
    )
    .err("has_disk", json!(["disk-000000000000000"]));
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("command") && msg.contains("keyfile=PATH&known_hosts=PATH"), "{e}");
}

/// A request context (a director's CPI config) names another host: the config file's key and known_hosts
/// are used for it, and only a host they pin is reached.
#[test]
fn a_context_uri_uses_the_key_and_known_hosts_of_the_config_file() {
    if !libvirt_available() {
        return;
    }
    let Some(dir) = sshd() else { return };
    // the file pins the host as 127.0.0.1 only
    let tmp = tempfile::tempdir().unwrap();
    let known = tmp.path().join("known_hosts");
    let lines = std::fs::read_to_string(dir.join("known_hosts")).unwrap();
    std::fs::write(&known, lines.lines().filter(|l| l.starts_with("[127.0.0.1]")).collect::<Vec<_>>().join("\n"))
        .unwrap();
    let cpi = cpi("vmcpi-test-ssh", &ssh_uri(&dir.join("id_ed25519"), &known));
    let ctx = |uri: &str| -> Value { json!({"director_uuid": "d", "driver": {"uri": uri}}) };
    let r = cpi.call_with(
        "has_disk",
        json!(["disk-000000000000000"]),
        2,
        ctx(&format!("qemu+libssh2://root@127.0.0.1:{PORT}/system?sshauth=privkey")),
    );
    assert!(r.response["error"].is_null(), "{}", r.stdout);
    // the same host by a name the file does not pin: refused
    let r = cpi.call_with(
        "has_disk",
        json!(["disk-000000000000000"]),
        2,
        ctx(&format!("qemu+ssh://root@localhost:{PORT}/system")),
    );
    let e = &r.response["error"];
    assert!(e["message"].as_str().is_some_and(|m| m.contains("is not in")), "{}", r.stdout);
}

/// What a director VM has, and nothing more: the static release binary runs chrooted in a directory that
/// holds only itself, its config, /etc/hosts, /etc/resolv.conf, /etc/nsswitch.conf, the SSH key and
/// known_hosts (as the job renders them, named relative to the config) and the stemcell image the call names.
/// No /usr, no /lib, no /tmp, no PATH, no ssh, virsh or qemu-img: it drives a whole lifecycle on the host's
/// libvirtd over qemu+ssh://127.0.0.1.
#[test]
fn the_static_binary_alone_in_a_chroot_drives_libvirt_over_ssh() {
    if !libvirt_available() || !require_peer("root (chroot)", unsafe { libc::geteuid() } == 0) {
        return;
    }
    let Some(dir) = sshd() else { return };
    let bin = crate::util::static_cpi_bin();
    let started = std::time::Instant::now();
    let root = tempfile::Builder::new().prefix("vmcpi-chroot-").tempdir_in("/var/tmp").unwrap();
    let r = root.path();
    for d in ["etc", "config", "state", "stemcell"] {
        std::fs::create_dir(r.join(d)).unwrap();
    }
    std::fs::set_permissions(r.join("state"), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::copy(&bin, r.join("vmcpi")).unwrap();
    for f in ["hosts", "resolv.conf", "nsswitch.conf"] {
        let from = Path::new("/etc").join(f);
        if from.exists() {
            std::fs::copy(&from, r.join("etc").join(f)).unwrap();
        }
    }
    std::fs::copy(dir.join("id_ed25519"), r.join("config/ssh_key")).unwrap();
    std::fs::copy(dir.join("known_hosts"), r.join("config/known_hosts")).unwrap();
    let pool = "vmcpi-test-chroot";
    let mut cfg = config_in(pool, json!({}));
    cfg["driver"]["uri"] =
        json!(format!("qemu+ssh://root@127.0.0.1:{PORT}/system?keyfile=ssh_key&known_hosts=known_hosts"));
    cfg["driver"]["state_dir"] = json!("/state");
    std::fs::write(r.join("config/cpi.json"), cfg.to_string()).unwrap();
    let img = tempfile::tempdir().unwrap();
    std::fs::copy(openstack_image(img.path()), r.join("stemcell/image")).unwrap();
    let listing: Vec<String> = walk(r).iter().map(|p| p.strip_prefix(r).unwrap().display().to_string()).collect();
    assert_eq!(
        listing,
        [
            "config/cpi.json",
            "config/known_hosts",
            "config/ssh_key",
            "etc/hosts",
            "etc/nsswitch.conf",
            "etc/resolv.conf",
            "stemcell/image",
            "vmcpi"
        ]
        .iter()
        .filter(|f| r.join(f).exists())
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
    );

    let call = |method: &str, args: Value| -> Value {
        use std::io::Write;
        use std::os::unix::process::CommandExt;
        let root = std::ffi::CString::new(r.as_os_str().as_encoded_bytes()).unwrap();
        let mut cmd = Command::new("/vmcpi");
        cmd.args(["--config", "/config/cpi.json"]).env_clear();
        // SAFETY: chroot and chdir between fork and exec, on a C string made before
        unsafe {
            cmd.pre_exec(move || {
                if libc::chroot(root.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run the chrooted binary");
        let req = json!({"method": method, "arguments": args, "context": {"director_uuid": "d"}, "api_version": 2});
        child.stdin.take().unwrap().write_all(req.to_string().as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{method}: {e}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
        });
        assert!(v["error"].is_null(), "{method} in the chroot failed: {v}");
        v["result"].clone()
    };
    let sc = call("create_stemcell", json!(["/stemcell/image", {}]));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let nets = json!({"n": {"type": "dynamic", "cloud_properties": {"type": "user", "port_forwards": [{"host": port, "guest": 6868}]}}});
    let vm = call("create_vm", json!(["agent-chroot", sc, {"ram": 64, "disk": 16}, nets, [], {}]))[0].clone();
    assert!(taken(port), "the VM's forward is up");
    assert_eq!(call("has_vm", json!([vm])), json!(true));
    let disk = call("create_disk", json!([16, {}, vm]));
    assert_eq!(call("attach_disk", json!([vm, disk])), json!({"path": "/dev/sdc"}));
    call("detach_disk", json!([vm, disk]));
    call("delete_vm", json!([vm]));
    assert_eq!(call("has_vm", json!([vm])), json!(false));
    call("delete_disk", json!([disk]));
    call("delete_stemcell", json!([sc]));
    assert!(volumes_in(pool).is_empty(), "{:?}", volumes_in(pool));
    eprintln!("chrooted static binary over qemu+ssh: lifecycle in {} ms", started.elapsed().as_millis());
}

/// Every file below `dir`, sorted.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}
