//! Hostile input on every method: wrong JSON types in every argument position, enormous and negative numbers,
//! CIDs and metadata full of path tricks, shell metacharacters, markup, NUL, newlines and 4 KB strings,
//! non-UTF-8 bytes on stdin. Expected: a BOSH error object or correct escaping, no effect outside the CPI's
//! own areas, never an internal error (panic). The wrong types need no peer; the values run on every peer.
use crate::peer::{files_below, finish, peer_tests, Peer};
use crate::util::{Cpi, Run};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

peer_tests!(hostile_values_leave_only_errors);

fn hostile_strings() -> Vec<String> {
    let mut v: Vec<String> = [
        "../../../../etc/passwd",
        "../vms",
        "/",
        "a\u{0}b",
        "\"'",
        "x; touch /tmp/vmcpi-hostile-1",
        "$(touch /tmp/vmcpi-hostile-2)",
        "`touch /tmp/vmcpi-hostile-3`",
        "<&>",
        "]]></tag><evil/>",
        "line1\nevil.key = \"1\"\r\n",
        "a\" \nevil2 = \"x",
        "--help",
        "-T",
        "-c",
        "",
        " ",
        "vm-0000000000000000000/../../x",
        "\u{202e}ʇxǝʇ 🚀",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("A".repeat(4096));
    v.push("\"".repeat(4096));
    v
}

fn assert_no_side_effects() {
    for i in 1..=3 {
        assert!(!Path::new(&format!("/tmp/vmcpi-hostile-{i}")).exists(), "a shell ran user data");
    }
}

fn assert_clean(method: &str, r: &Run) {
    assert_eq!(r.status, 0, "{method}: exit status");
    if let Some(msg) = r.response["error"]["message"].as_str() {
        assert!(!msg.contains("internal error in vmcpi"), "{method} panicked: {msg}");
    }
}

/// The calls of every method with `s` in every CID and metadata position.
fn hostile_calls(peer: &dyn Peer, s: &str, vm: &str, disk: &str, sc: &Value) -> Vec<(&'static str, Value)> {
    let create = |agent: &str, sc: &Value, props: Value| peer.create_vm_args(agent, sc, props);
    vec![
        ("has_vm", json!([s])),
        ("delete_vm", json!([s])),
        ("reboot_vm", json!([s])),
        ("get_disks", json!([s])),
        ("attach_disk", json!([vm, s])),
        ("attach_disk", json!([s, disk])),
        ("detach_disk", json!([vm, s])),
        ("detach_disk", json!([s, disk])),
        ("has_disk", json!([s])),
        ("delete_disk", json!([s])),
        ("resize_disk", json!([s, 64])),
        ("update_disk", json!([s, 64, {}])),
        ("set_disk_metadata", json!([s, {"k": "v"}])),
        ("snapshot_disk", json!([s, {}])),
        ("snapshot_disk", json!([disk, {s: s}])),
        ("delete_snapshot", json!([s])),
        ("delete_stemcell", json!([s])),
        ("create_stemcell", json!([s, {}])),
        ("create_stemcell", json!([s, {"name": s, "version": s}])),
        ("create_disk", json!([64, {s: s}, s])),
        ("create_vm", create(s, &json!(s), json!({}))),
        ("create_vm", create("agent", sc, json!({s: s}))),
        ("create_vm", {
            let mut a = create("agent", sc, peer.vm_props(false));
            a[3] = json!({s: {"type": "manual", "ip": s, "netmask": s, "cloud_properties": {"name": s}}});
            a
        }),
        ("set_vm_metadata", json!([s, {"k": "v"}])),
        ("set_vm_metadata", json!([vm, {s: s, "name": s}])),
        ("set_disk_metadata", json!([disk, {s: s}])),
        ("calculate_vm_cloud_properties", json!([{"ram": s, "cpu": s, "ephemeral_disk_size": s}])),
    ]
}

/// Files in the peer's sandbox outside the CPI's own areas.
fn outside(peer: &dyn Peer) -> Option<Vec<PathBuf>> {
    let (root, areas) = peer.sandbox()?;
    Some(files_below(&root).into_iter().filter(|p| !areas.iter().any(|a| p.starts_with(a))).collect())
}

fn hostile_values_leave_only_errors(peer: &dyn Peer) {
    let cpi = Cpi::with_config(&peer.config());
    let img = tempfile::tempdir().unwrap();
    let sc = cpi.ok("create_stemcell", json!([peer.stemcell_image(img.path()), {}]));
    let vm = cpi.ok("create_vm", peer.create_vm_args("agent-hostile", &sc, peer.vm_props(false)))[0]
        .as_str()
        .unwrap()
        .to_string();
    let disk = cpi.ok("create_disk", json!([peer.disk_mib(), {}, vm])).as_str().unwrap().to_string();
    // what is beside the CPI's areas must stay as it is
    if let Some((root, _)) = peer.sandbox() {
        std::fs::write(root.join("outside"), "untouched").unwrap();
    }
    let outside_before = outside(peer);
    let objects_before = peer.objects();
    let mut tried = 0;
    let mut accepted = Vec::new();
    for s in hostile_strings() {
        for (method, args) in hostile_calls(peer, &s, &vm, &disk, &sc) {
            let r = cpi.call(method, args);
            assert_clean(method, &r);
            tried += 1;
            // a create that took the value (as the agent id, a metadata value) made an object: the director
            // deletes it
            let res = &r.response["result"];
            match method {
                "create_vm" if res.is_array() => accepted.push(("delete_vm", res[0].clone())),
                "create_disk" if res.is_string() => accepted.push(("delete_disk", res.clone())),
                "create_stemcell" if res.is_string() => accepted.push(("delete_stemcell", res.clone())),
                "snapshot_disk" if res.is_string() => accepted.push(("delete_snapshot", res.clone())),
                _ => {}
            }
        }
    }
    // enormous, negative and fractional numbers
    for n in [json!(u64::MAX), json!(1u64 << 60), json!(-5), json!(1.5), json!(1e308)] {
        for (method, args) in [
            ("create_disk", json!([n, {}, null])),
            ("resize_disk", json!([disk, n])),
            ("update_disk", json!([disk, n, {}])),
            ("create_vm", peer.create_vm_args("a", &sc, json!({"ram": n, "cpu": n, "disk": n}))),
            ("calculate_vm_cloud_properties", json!([{"ram": n, "cpu": n, "ephemeral_disk_size": n}])),
        ] {
            assert_clean(method, &cpi.call(method, args));
            tried += 1;
        }
    }
    eprintln!(
        "{} hostile: {tried} requests, {} creates accepted the value (as agent id or metadata)",
        peer.name(),
        accepted.len()
    );
    for (method, cid) in &accepted {
        cpi.ok(method, json!([cid]));
    }
    // CIDs that are not this CPI's never reach the hypervisor: the answers say so
    for cid in
        ["../../etc/passwd", "vm-$(touch /tmp/vmcpi-hostile-1)", "vm-`id`;rm -rf /", "vm-\n00", "/dev/sda", "vm-<&>\"'"]
    {
        assert_eq!(cpi.ok("has_vm", json!([cid])), json!(false), "{cid}");
        assert_eq!(cpi.err("delete_vm", json!([cid]))["type"], "Bosh::Clouds::VMNotFound", "{cid}");
        assert_eq!(cpi.err("delete_disk", json!([cid]))["type"], "Bosh::Clouds::DiskNotFound", "{cid}");
        assert_eq!(cpi.ok("has_disk", json!([cid])), json!(false), "{cid}");
        let e = cpi.err("create_vm", peer.create_vm_args("a", &json!(cid), peer.vm_props(false)));
        assert_eq!(
            (e["type"].as_str(), e["ok_to_retry"].as_bool()),
            (Some("Bosh::Clouds::VMCreationFailed"), Some(false)),
            "{cid}"
        );
    }
    assert_no_side_effects();
    // XML specials, quotes and newlines in metadata are kept as data
    let tricky = "<&>]]></tag><evil/>\"'\nevil.key = \"1\"";
    cpi.ok("set_vm_metadata", json!([vm, {"k\"<": tricky, "name": "a\nb"}]));
    peer.assert_metadata_kept(&vm, tricky);
    // the peer holds the test's own objects only (set_disk_metadata writes the disk's metadata beside it)
    let objects_after = peer.objects();
    let gone: Vec<&String> = objects_before.iter().filter(|o| !objects_after.contains(o)).collect();
    assert!(gone.is_empty(), "objects gone: {gone:?}");
    let new: Vec<&String> =
        objects_after.iter().filter(|o| !objects_before.contains(o) && !o.contains(disk.as_str())).collect();
    assert!(new.is_empty(), "objects made: {new:?}");
    // and the VM works
    assert_eq!(cpi.ok("has_vm", json!([vm])), json!(true));
    assert_eq!(cpi.ok("get_disks", json!([vm])), json!([]));
    cpi.ok("attach_disk", json!([vm, disk]));
    assert_eq!(cpi.ok("get_disks", json!([vm])), json!([disk]));
    if let (Some(before), Some(after), Some((root, _))) = (outside_before, outside(peer), peer.sandbox()) {
        assert_eq!(after, before, "files made or removed outside the CPI's areas");
        assert_eq!(std::fs::read_to_string(root.join("outside")).unwrap(), "untouched");
    }
    cpi.ok("delete_vm", json!([vm]));
    cpi.ok("delete_disk", json!([disk]));
    finish(peer, &cpi, &sc, &[]);
}

/// Every method, every argument position, every JSON type: no hypervisor behind the config.
#[test]
fn wrong_types_in_every_argument_position_need_no_peer() {
    let cpi = Cpi::with_config(
        &json!({"driver": {"kind": "libvirt", "uri": "qemu:///nonexistent-hostile", "state_dir": "/var/tmp/vmcpi-test-hostile-state"}}),
    );
    let spec_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("spec");
    let wrong = [
        json!(null),
        json!(true),
        json!(-1),
        json!(0),
        json!(1e308),
        json!(18446744073709551615u64),
        json!("x"),
        json!([]),
        json!({}),
        json!([[[[[]]]]]),
    ];
    let mut tried = 0;
    for entry in std::fs::read_dir(spec_dir).unwrap().flatten() {
        if entry.path().extension().is_none_or(|e| e != "json") {
            continue;
        }
        let spec: Value = serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
        let method = spec["method"].as_str().unwrap();
        let args = spec["request"]["arguments"].as_array().unwrap().clone();
        for i in 0..args.len().max(1) {
            for w in &wrong {
                let mut a = args.clone();
                if a.is_empty() {
                    a.push(w.clone());
                } else {
                    a[i] = w.clone();
                }
                assert_clean(method, &cpi.call(method, Value::Array(a)));
                tried += 1;
            }
        }
        // too few and far too many arguments
        assert_clean(method, &cpi.call(method, json!([])));
        assert_clean(method, &cpi.call(method, Value::Array(vec![json!("x"); 64])));
        tried += 2;
    }
    // the whole request in odd shapes
    for raw in [
        &b"\xff\xfe\xfd"[..],
        b"{\"method\":\"info\",\"arguments\":[],\"x\":\"\xff\"}",
        b"{\"method\":\"info\"}{\"method\":\"info\"}",
        &[b'['; 100_000][..],
    ] {
        let r = cpi.raw(raw);
        assert_clean("raw", &r);
        assert_eq!(r.response["error"]["type"], "Bosh::Clouds::CpiError");
        tried += 1;
    }
    eprintln!("hostile: {tried} wrong-type requests");
    assert_no_side_effects();
}
