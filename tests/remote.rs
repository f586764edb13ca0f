//! The libvirt driver over `qemu+ssh://` against OpenSSH on loopback (tools/sshd-up.sh), with the host key
//! pinned through a `command=` wrapper; a wrong host key is refused.
use crate::libvirt::{config_in, libvirt_available, openstack_image, volumes_in};
use crate::util::{require_peer, Cpi};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

const PORT: u16 = 22297;
const POOL: &str = "vmcpi-test-remote";

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

fn remote_cpi(command: &Path) -> Cpi {
    let mut cfg = config_in(POOL, json!({}));
    cfg["driver"]["uri"] = json!(format!("qemu+ssh://root@127.0.0.1:{PORT}/system?command={}", command.display()));
    Cpi::with_config(&cfg)
}

#[test]
fn lifecycle_over_qemu_ssh_with_a_pinned_host_key() {
    if !libvirt_available() {
        return;
    }
    let Some(dir) = sshd() else { return };
    let cpi = remote_cpi(&dir.join("ssh"));
    let img_dir = tempfile::tempdir().unwrap();
    let sc = cpi.ok("create_stemcell", json!([openstack_image(img_dir.path()), {}])).as_str().unwrap().to_string();
    let vm = cpi.ok("create_vm", json!(["agent-remote", sc, {"ram": 64}, {}, [], {}]))[0].as_str().unwrap().to_string();
    let disk = cpi.ok("create_disk", json!([16, {}, vm])).as_str().unwrap().to_string();
    assert_eq!(cpi.ok("attach_disk", json!([vm, disk])), json!({"path": "/dev/sdc"}));
    cpi.ok("detach_disk", json!([vm, disk]));
    cpi.ok("delete_vm", json!([vm]));
    cpi.ok("delete_disk", json!([disk]));
    cpi.ok("delete_stemcell", json!([sc]));
    assert!(volumes_in(POOL).is_empty(), "{:?}", volumes_in(POOL));
}

#[test]
fn a_wrong_host_key_is_refused() {
    if !libvirt_available() {
        return;
    }
    let Some(dir) = sshd() else { return };
    // a known_hosts that pins some other key for the same host
    let tmp = tempfile::tempdir().unwrap();
    let other = tmp.path().join("other");
    assert!(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap()
        .success());
    let pubkey = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let pubkey: Vec<&str> = pubkey.split_whitespace().take(2).collect();
    let known = tmp.path().join("known_hosts");
    std::fs::write(&known, format!("[127.0.0.1]:{PORT} {}\n", pubkey.join(" "))).unwrap();
    let wrapper = tmp.path().join("ssh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec ssh -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o BatchMode=yes -i {} \"$@\"\n",
            known.display(),
            dir.join("id_ed25519").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cpi = remote_cpi(&wrapper);
    let e = cpi.err("has_disk", json!(["disk-000000000000000"]));
    assert_eq!(e["type"], "Bosh::Clouds::CloudError");
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("Host key verification failed") || msg.contains("HOST IDENTIFICATION HAS CHANGED"), "{msg}");
}
