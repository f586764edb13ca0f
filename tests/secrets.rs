//! Secret canaries: passwords and keys from the config, the request context and the VM env never appear in
//! stdout, stderr, `log`, VM names or VM metadata, on any method and error path (debug logging on).
use crate::libvirt::{config, libvirt_available, openstack_image, virsh};
use crate::util::Cpi;
use serde_json::{json, Value};

const CANARIES: &[&str] = &[
    "CANARY-mbus-pw-7f3a9c",
    "CANARY-blobstore-pw-51b2",
    "CANARY-context-secret-c0ffee",
    "CANARY-env-password-9d8e",
    "CANARY-env-private-key-a1b2",
];

fn canary_cpi() -> Cpi {
    let mut cfg = config(json!({
        "mbus": format!("nats://nats:{}@10.0.0.6:4222", CANARIES[0]),
        "blobstore": {"provider": "dav", "options": {"endpoint": "http://10.0.0.6:25250", "user": "agent", "password": CANARIES[1]}},
    }));
    cfg["log_level"] = json!("debug");
    Cpi::with_config(&cfg)
}

fn context() -> Value {
    json!({"director_uuid": "d", "request_id": "cpi-1", "agent": {"blobstore": {"options": {"secret": CANARIES[2]}}}})
}

fn env() -> Value {
    json!({"bosh": {"password": CANARIES[3], "mbus": {"cert": {"private_key": CANARIES[4]}}}})
}

fn check(cpi: &Cpi, method: &str, args: Value) -> Value {
    let r = cpi.call_with(method, args, 2, context());
    for c in CANARIES {
        assert!(!r.stdout.contains(c), "{method}: canary {c} in stdout: {}", r.stdout);
        assert!(!r.stderr.contains(c), "{method}: canary {c} in stderr: {}", r.stderr);
    }
    r.response
}

#[test]
fn canaries_never_leak_on_any_method_or_error_path() {
    if !libvirt_available() {
        return;
    }
    let cpi = canary_cpi();
    let dir = tempfile::tempdir().unwrap();
    let image = openstack_image(dir.path());
    let sc = check(&cpi, "create_stemcell", json!([image, {}]))["result"].as_str().unwrap().to_string();
    let vm = check(&cpi, "create_vm", json!(["agent-canary", sc, {"ram": 64}, {}, [], env()]))["result"][0]
        .as_str()
        .unwrap()
        .to_string();
    let disk = check(&cpi, "create_disk", json!([16, {}, vm]))["result"].as_str().unwrap().to_string();
    let calls = [
        ("info", json!([])),
        ("has_vm", json!([vm])),
        ("set_vm_metadata", json!([vm, {"name": "canary/0", "director": "d"}])),
        ("attach_disk", json!([vm, disk])),
        ("get_disks", json!([vm])),
        ("set_disk_metadata", json!([disk, {"director": "d"}])),
        ("reboot_vm", json!([vm])),
        ("detach_disk", json!([vm, disk])),
        ("has_disk", json!([disk])),
        ("resize_disk", json!([disk, 32])),
        ("calculate_vm_cloud_properties", json!([{"ram": 1, "cpu": 1, "ephemeral_disk_size": 1}])),
        // error paths
        ("detach_disk", json!([vm, disk])),
        ("resize_disk", json!([disk, 8])),
        ("reboot_vm", json!(["vm-00000000000000000000"])),
        ("create_vm", json!(["a", sc, {"bogus": 1}, {}, [], env()])),
        ("create_vm", json!(["a", "sc-nope", {}, {}, [], env()])),
        ("create_vm", json!(["a", sc, {"ram": 64}, {"n": {"cloud_properties": {"name": "missing-net"}}}, [], env()])),
        ("create_disk", json!([CANARIES[0], {}, null])),
        ("no_such_method", json!([])),
        ("update_disk", json!([disk, 64, {}])),
    ];
    for (m, args) in calls {
        check(&cpi, m, args);
    }
    // VM name, title and metadata hold no secret
    let (_, xml) = virsh(&["dumpxml", &vm]);
    for c in CANARIES {
        assert!(!xml.contains(c), "canary {c} in the domain XML");
    }
    check(&cpi, "delete_vm", json!([vm]));
    check(&cpi, "delete_disk", json!([disk]));
    check(&cpi, "delete_stemcell", json!([sc]));
    // a bad config that echoes values still hides them
    let mut bad = config(json!({"mbus": format!("nats://n:{}@h:1", CANARIES[0])}));
    bad["driver"]["domain_type"] = json!(CANARIES[0]);
    let r = Cpi::with_config(&bad).call("info", json!([]));
    assert!(!r.stdout.contains(CANARIES[0]) && !r.stderr.contains(CANARIES[0]), "{}", r.stdout);
}
