//! Secret canaries on every peer: passwords and keys from the config, the request context, the VM env, a
//! bootstrap's guest password and the peer's own login never appear in stdout, stderr, `log`, VM names or VM
//! metadata, or in any file but the settings medium the agent reads, on any method and error path (debug
//! logging on); a bad config that could echo them hides them too.
use crate::peer::{finish, peer_tests, Peer};
use crate::util::{Cpi, Run};
use serde_json::{json, Value};

peer_tests!(canaries_never_leak_on_any_method_or_error_path);

const CANARIES: &[&str] = &[
    "CANARY-mbus-pw-7f3a9c",
    "CANARY-blobstore-pw-51b2",
    "CANARY-context-secret-c0ffee",
    "CANARY-env-password-9d8e",
    "CANARY-env-private-key-a1b2",
    "CANARY-guest-pw-77aa",
];

fn context() -> Value {
    json!({"director_uuid": "d", "request_id": "cpi-1", "agent": {"blobstore": {"options": {"secret": CANARIES[2]}}}})
}

fn env() -> Value {
    json!({"bosh": {"password": CANARIES[3], "mbus": {"cert": {"private_key": CANARIES[4]}}}})
}

fn canaries_never_leak_on_any_method_or_error_path(peer: &dyn Peer) {
    let own = peer.secrets();
    let canaries: Vec<&str> = CANARIES.iter().copied().chain(own.iter().map(String::as_str)).collect();
    let mut cfg = peer.config();
    cfg["log_level"] = json!("debug");
    cfg["agent"]["mbus"] = json!(peer.mbus(CANARIES[0]));
    cfg["agent"]["blobstore"] = json!({"provider": "dav", "options": {"endpoint": "http://10.0.0.6:25250", "user": "agent", "password": CANARIES[1]}});
    let cpi = Cpi::with_config(&cfg);
    // every call: canaries in the context, none in the output, no panic
    let run = |method: &str, args: Value| -> Run {
        let r = cpi.call_with(method, args, 2, context());
        assert_eq!(r.status, 0, "{method}: exit status");
        let msg = r.response["error"]["message"].as_str().unwrap_or_default();
        assert!(!msg.contains("internal error in vmcpi"), "{method} panicked: {msg}");
        for c in &canaries {
            assert!(!r.stdout.contains(c), "{method}: canary {c} in stdout: {}", r.stdout);
            assert!(!r.stderr.contains(c), "{method}: canary {c} in stderr: {}", r.stderr);
        }
        r
    };
    let checked = |method: &str, args: Value| -> Value { run(method, args).response };
    // creates that succeed (a size the peer takes, a snapshot) made an object: the director deletes it
    let mut made = Vec::new();
    let mut record = |method: &str, response: Value| {
        let res = &response["result"];
        match method {
            "create_vm" if res.is_array() => made.push(("delete_vm", res[0].clone())),
            "snapshot_disk" if res.is_string() => made.push(("delete_snapshot", res.clone())),
            _ => {}
        }
    };
    let img = tempfile::tempdir().unwrap();
    let image = peer.stemcell_image(img.path());
    let sc = checked("create_stemcell", json!([image, {"name": "s", "version": "1"}]))["result"].clone();
    let with_env = |props: Value| {
        let mut a = peer.create_vm_args("agent-canary", &sc, props);
        a[5] = env();
        a
    };
    let vm = checked("create_vm", with_env(peer.vm_props(false)))["result"][0].as_str().unwrap().to_string();
    let d = peer.disk_mib();
    let disk = checked("create_disk", json!([d, {}, vm]))["result"].as_str().unwrap().to_string();
    let ghost_vm = "vm-00000000000000000000";
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
        ("resize_disk", json!([disk, 2 * d])),
        ("calculate_vm_cloud_properties", json!([{"ram": 1, "cpu": 1, "ephemeral_disk_size": 1}])),
        ("snapshot_disk", json!([disk, {}])),
        // error paths
        ("detach_disk", json!([vm, disk])),
        ("resize_disk", json!([disk, 8])),
        ("reboot_vm", json!([ghost_vm])),
        ("attach_disk", json!([ghost_vm, disk])),
        ("delete_stemcell", json!(["sc-nope"])),
        ("create_vm", with_env(json!({"bogus": 1}))),
        ("create_vm", with_env(json!({"ram": 1023}))),
        ("create_vm", with_env(json!({"cpu": 1, "ram": u64::MAX}))),
        ("create_vm", {
            let mut a = with_env(peer.vm_props(false));
            a[1] = json!(peer.ghost_stemcell());
            a
        }),
        ("create_vm", {
            let mut a = with_env(peer.vm_props(false));
            a[1] = json!("sc-nope");
            a
        }),
        ("create_vm", {
            let mut a = with_env(peer.vm_props(false));
            a[3] = json!({"n": {"type": "dynamic", "cloud_properties": {"name": "no-such-network"}}});
            a
        }),
        ("create_disk", json!([CANARIES[0], {}, null])),
        ("create_stemcell", json!(["/nonexistent", {}])),
        ("no_such_method", json!([])),
        ("update_disk", json!([disk, 4 * d, {}])),
    ];
    for (m, a) in calls {
        record(m, checked(m, a));
    }
    // a bootstrap with a guest password: no guest agent or VMware Tools in these guests, so it fails after
    // the VM was made, and the VM is removed
    let mut props = peer.vm_props(false);
    props["bootstrap"] =
        json!({"script": "echo hi", "username": "vcap", "password": CANARIES[5], "max_wait_seconds": 2});
    let vms = peer.vms();
    let r = run("create_vm", with_env(props));
    let e = &r.response["error"];
    assert_eq!(e["type"], "Bosh::Clouds::VMCreationFailed", "{e}");
    assert_eq!(peer.vms(), vms, "the VM of the failed bootstrap is removed");
    if peer.name() == "vmware" {
        // vmrun takes the guest password only as `-gp <password>` on its command line: logged redacted
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains("Guest tools is not running") || msg.contains("was not ready"), "{e}");
        assert!(r.stderr.contains("-gp <redacted>"), "{}", r.stderr);
    }
    // a clone that fails because the stemcell is in use, with the env
    if let Some(undo) = peer.hold_stemcell(sc.as_str().unwrap()) {
        record("create_vm", checked("create_vm", with_env(peer.vm_props(false))));
        undo();
    }
    // configs that fail and might echo a value: hidden
    for bad in peer.bad_configs(&cfg, CANARIES[0]) {
        let bad = Cpi::with_config(&bad);
        for (m, a) in [("info", json!([])), ("has_vm", json!([vm]))] {
            let r = bad.call_with(m, a, 2, context());
            for c in &canaries {
                assert!(!r.stdout.contains(c) && !r.stderr.contains(c), "{m} with a bad config: {c}: {}", r.stdout);
            }
        }
    }
    // VM names, titles, annotations and metadata hold no canary; the agent gets its env and mbus
    let about = peer.describe_vm(&vm);
    for c in &canaries {
        assert!(!about.contains(c), "canary {c} in the VM: {about}");
    }
    let settings = peer.agent_settings(&vm);
    assert!(settings.contains(CANARIES[3]) && settings.contains(CANARIES[0]), "the agent gets its env and mbus");
    // files: only the settings medium holds the env and agent secrets
    let found = peer.files_with(&canaries);
    assert!(found.is_empty(), "canaries outside the settings medium: {found:?}");
    for (method, cid) in made {
        checked(method, json!([cid]));
    }
    checked("delete_vm", json!([vm]));
    checked("delete_disk", json!([disk]));
    finish(peer, &cpi, &sc, &[]);
}
