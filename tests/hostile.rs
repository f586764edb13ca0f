//! Hostile input for every method: wrong JSON types in every argument position, enormous numbers, CIDs and
//! metadata full of path tricks, shell metacharacters, markup, NUL, newlines and 4 KB strings, non-UTF-8
//! bytes on stdin. Expected: a BOSH error object or correct escaping, no effect outside the CPI's store,
//! never an internal error (panic).
use crate::libvirt::{config_in, libvirt_available, openstack_image, virsh};
use crate::util::Cpi;
use serde_json::{json, Value};
use std::path::Path;

fn hostile_strings() -> Vec<String> {
    let mut v: Vec<String> = [
        "../../../../etc/passwd",
        "/",
        "a\u{0}b",
        "\"'",
        "x; touch /tmp/vmcpi-hostile-1",
        "$(touch /tmp/vmcpi-hostile-2)",
        "`touch /tmp/vmcpi-hostile-3`",
        "<&>",
        "]]></tag><evil/>",
        "line1\nline2\r\n",
        "--help",
        "-c",
        "",
        " ",
        "\u{202e}ʇxǝʇ 🚀",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("A".repeat(4096));
    v
}

fn assert_no_side_effects() {
    for i in 1..=3 {
        assert!(!Path::new(&format!("/tmp/vmcpi-hostile-{i}")).exists(), "a shell ran user data");
    }
}

fn assert_clean(method: &str, r: &crate::util::Run) {
    assert_eq!(r.status, 0, "{method}: exit status");
    if let Some(msg) = r.response["error"]["message"].as_str() {
        assert!(!msg.contains("internal error in vmcpi"), "{method} panicked: {msg}");
    }
}

/// Every method, every argument position, every JSON type: no hypervisor behind the config.
#[test]
fn wrong_types_in_every_argument_position() {
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
                let r = cpi.call(method, Value::Array(a));
                assert_clean(method, &r);
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

/// Hostile CIDs and metadata against the real daemon: errors or escaping, nothing outside the pool.
#[test]
fn hostile_values_against_libvirt() {
    if !libvirt_available() {
        return;
    }
    let pool = "vmcpi-test-hostile";
    let cpi = Cpi::with_config(&config_in(pool, json!({})));
    let dir = tempfile::tempdir().unwrap();
    let sc = cpi.ok("create_stemcell", json!([openstack_image(dir.path()), {}])).as_str().unwrap().to_string();
    let vm =
        cpi.ok("create_vm", json!(["agent-hostile", sc, {"ram": 64}, {}, [], {}]))[0].as_str().unwrap().to_string();
    let disk = cpi.ok("create_disk", json!([16, {}, null])).as_str().unwrap().to_string();
    let mut tried = 0;
    for s in hostile_strings() {
        for (method, args) in [
            ("has_vm", json!([s])),
            ("delete_vm", json!([s])),
            ("reboot_vm", json!([s])),
            ("get_disks", json!([s])),
            ("attach_disk", json!([vm, s])),
            ("attach_disk", json!([s, disk])),
            ("detach_disk", json!([vm, s])),
            ("has_disk", json!([s])),
            ("delete_disk", json!([s])),
            ("resize_disk", json!([s, 64])),
            ("set_disk_metadata", json!([s, {"k": "v"}])),
            ("snapshot_disk", json!([s, {}])),
            ("delete_snapshot", json!([s])),
            ("delete_stemcell", json!([s])),
            ("create_vm", json!([s, s, {}, {}, [], {}])),
            ("create_vm", json!(["agent", sc, {"ram": 64}, {s.clone(): {"cloud_properties": {"name": s}}}, [], {}])),
            ("create_stemcell", json!([s, {}])),
            ("set_vm_metadata", json!([vm, {s.clone(): s, "name": s}])),
            ("set_disk_metadata", json!([disk, {s.clone(): s}])),
        ] {
            let r = cpi.call(method, args);
            assert_clean(method, &r);
            tried += 1;
        }
    }
    // metadata goes through escaped, and the domain stays intact
    cpi.ok("set_vm_metadata", json!([vm, {"k\"<": "<&>]]></tag><evil/>", "name": "a\nb"}]));
    let (ok, xml) = virsh(&["dumpxml", &vm]);
    assert!(ok && xml.contains("&lt;&amp;&gt;") && !xml.contains("<evil/>"), "{xml}");
    // enormous numbers
    for n in [json!(u64::MAX), json!(1u64 << 60), json!(-5), json!(1.5)] {
        assert_clean("create_disk", &cpi.call("create_disk", json!([n, {}, null])));
        assert_clean("resize_disk", &cpi.call("resize_disk", json!([disk, n])));
        assert_clean(
            "create_vm",
            &cpi.call("create_vm", json!(["a", sc, {"ram": n, "cpu": n, "disk": n}, {}, [], {}])),
        );
        tried += 3;
    }
    eprintln!("hostile: {tried} hostile requests against libvirt");
    cpi.ok("delete_vm", json!([vm]));
    cpi.ok("delete_disk", json!([disk]));
    cpi.ok("delete_stemcell", json!([sc]));
    assert_eq!(crate::libvirt::volumes_in(pool), Vec::<String>::new(), "only the test's own volumes, all deleted");
    assert_no_side_effects();
}
