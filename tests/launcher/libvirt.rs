//! The launcher driving the real `vmcpi` with its libvirt driver on the machine's libvirtd.
use super::*;
use crate::util::{cpi_bin, require_peer, Cpi};
use serde_json::json;

fn libvirt_available() -> bool {
    Command::new("virsh")
        .args(["-c", "qemu:///system", "version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn launcher_with_vmcpi_on_libvirt_creates_and_deletes_a_real_vm() {
    if !require_peer("libvirtd at qemu:///system (start it with tools/libvirt-up.sh)", libvirt_available()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // a stemcell tarball as bosh.io ships them: `image` (here a bare qcow2, which vmcpi accepts) + stemcell.MF
    let image = dir.path().join("image");
    let st = Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&image).arg("64M").status().unwrap();
    assert!(st.success());
    std::fs::write(
        dir.path().join("stemcell.MF"),
        "---\nname: test\nversion: '1'\ncloud_properties:\n  infrastructure: openstack\n  disk_format: qcow2\n",
    )
    .unwrap();
    let tarball = dir.path().join("stemcell.tgz");
    let st = Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(dir.path())
        .args(["image", "stemcell.MF"])
        .status()
        .unwrap();
    assert!(st.success());
    let cpi_cfg = json!({"driver": {"kind": "libvirt", "uri": "qemu:///system", "pool": "vmcpi-launcher-test", "pool_path": "/var/tmp/vmcpi-launcher-test-pool", "domain_type": "qemu", "graphics": false},
                         "agent": {"mbus": "nats://nats:secret@10.0.0.1:4222"}});
    let cpi_json = dir.path().join("cpi.json");
    std::fs::write(&cpi_json, cpi_cfg.to_string()).unwrap();
    let pool = format!(
        r#"
[[pool]]
name = "libvirt"
tags = ["queue=vm", "os=linux"]
cpi = ["{bin}", "--config", "{cfg}"]
stemcell = {{ tarball = "{image}" }}
networks.default = {{ type = "dynamic", cloud_properties = {{ type = "user" }} }}
flavors.small = {{ cpu = 1, ram = 128 }}
"#,
        bin = cpi_bin().display(),
        cfg = cpi_json.display(),
        image = tarball.display()
    );
    let s = Setup::new("", &pool);
    let j = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    let mut l = s.spawn();
    let ledger = || {
        let out = Command::new(launcher_bin()).args(["status", "--config"]).arg(&s.config).output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    wait_for(120, "the VM to be created", &|| s.log(), || {
        s.log().contains(&format!("job={j} vm=")) && s.log().contains(" created")
    });
    let cid =
        s.log().split(&format!("job={j} vm=")).nth(1).and_then(|r| r.split_whitespace().next()).unwrap().to_string();
    let cpi = Cpi::at(&cpi_json);
    assert_eq!(cpi.ok("has_vm", json!([cid])), json!(true), "{}", s.log());
    assert!(ledger().contains(&cid));
    // the stemcell was uploaded once and remembered
    assert!(ledger().contains("stemcell  pool=libvirt cid="), "{}", ledger());
    s.bk.set_state(&j, "passed");
    wait_for(120, "the VM to be deleted", &|| s.log(), || s.log().contains(&format!("vm={cid} deleted")));
    assert_eq!(cpi.ok("has_vm", json!([cid])), json!(false));
    l.signal("TERM");
    assert_eq!(l.wait_exit(Duration::from_secs(20)), Some(0), "{}", s.log());
    // a restart reuses the stemcell from the ledger instead of uploading it again
    let n = s.log().matches("create_stemcell").count();
    let mut l = s.spawn();
    std::thread::sleep(Duration::from_millis(1500));
    l.signal("TERM");
    assert_eq!(l.wait_exit(Duration::from_secs(20)), Some(0), "{}", s.log());
    assert_eq!(s.log().matches("create_stemcell").count(), n, "{}", s.log());
    if let Some(sc) = ledger().split("cid=").nth(1).and_then(|r| r.split_whitespace().next()) {
        cpi.ok("delete_stemcell", json!([sc]));
    }
}
