//! The wire protocol through the real binary, with no hypervisor: every reply is one JSON object, exit 0.
use crate::util::{run_raw, Cpi};
use serde_json::json;

fn libvirt_cpi() -> Cpi {
    Cpi::with_config(&json!({"driver": {"kind": "libvirt", "uri": "qemu:///nonexistent-for-tests"}}))
}

#[test]
fn info_reports_formats_and_v2_without_contacting_the_hypervisor() {
    // the URI points nowhere: info must still answer
    let cpi = libvirt_cpi();
    let r = cpi.call_with("info", json!([]), 1, json!({}));
    assert_eq!(r.status, 0);
    assert_eq!(r.response["result"]["api_version"], 2);
    let formats = r.response["result"]["stemcell_formats"].as_array().unwrap();
    assert!(formats.contains(&json!("openstack-qcow2")) && formats.contains(&json!("vsphere-ovf")));
}

#[test]
fn unreadable_input_gives_cpi_error() {
    let cpi = libvirt_cpi();
    for input in [&b""[..], b"{", b"\xff\xfe\x00", b"[1,2]", b"{\"method\": 5}", b"null"] {
        let r = cpi.raw(input);
        assert_eq!(r.status, 0);
        assert_eq!(r.response["error"]["type"], "Bosh::Clouds::CpiError", "input {input:?}");
    }
}

#[test]
fn unknown_method_is_not_implemented() {
    let e = libvirt_cpi().err("current_vm_id", json!([]));
    assert_eq!(e["type"], "Bosh::Clouds::NotImplemented");
    assert!(e["message"].as_str().unwrap().contains("current_vm_id"));
}

#[test]
fn wrong_argument_types_name_the_argument() {
    let cpi = libvirt_cpi();
    let e = cpi.err("create_disk", json!(["ten", {}, null]));
    assert_eq!(e["type"], "Bosh::Clouds::CpiError");
    assert!(e["message"].as_str().unwrap().contains("size"), "{e}");
    let e = cpi.err("attach_disk", json!(["vm-1", 42]));
    assert!(e["message"].as_str().unwrap().contains("disk_cid"), "{e}");
}

#[test]
fn missing_or_invalid_config_still_answers_json() {
    let r = run_raw(std::path::Path::new("/nonexistent/cpi.json"), br#"{"method":"info","arguments":[]}"#, &[]);
    assert_eq!(r.response["error"]["type"], "Bosh::Clouds::CpiError");
    assert!(r.response["error"]["message"].as_str().unwrap().contains("/nonexistent/cpi.json"));
    let cpi = Cpi::with_config(&json!({"driver": {"kind": "libvirt", "uri": "x", "typo_field": 1}}));
    let e = cpi.err("info", json!([]));
    assert!(e["message"].as_str().unwrap().contains("typo_field"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cpi.json");
    std::fs::write(&p, "{not json").unwrap();
    let r = run_raw(&p, br#"{"method":"info"}"#, &[]);
    assert!(r.response["error"]["message"].as_str().unwrap().contains("not valid JSON"));
}

#[test]
fn update_disk_and_configure_networks_are_not_supported() {
    let cpi = libvirt_cpi();
    assert_eq!(cpi.err("update_disk", json!(["disk-0123456789abcde", 2048, {}]))["type"], "Bosh::Clouds::NotSupported");
    assert_eq!(cpi.err("configure_networks", json!(["vm", {}]))["type"], "Bosh::Clouds::NotSupported");
}

#[test]
fn a_panic_still_answers_json() {
    let mut cpi = libvirt_cpi();
    cpi.envs.push(("VMCPI_DEBUG_PANIC".into(), "has_vm".into()));
    let r = cpi.call("has_vm", json!(["vm-00000000000000000000"]));
    assert_eq!(r.status, 0);
    assert_eq!(r.response["error"]["type"], "Bosh::Clouds::CloudError");
    assert!(r.response["error"]["message"].as_str().unwrap().contains("internal error"));
}

#[test]
fn hypervisor_unreachable_is_a_cloud_error_that_says_where() {
    // a libvirt host over SSH on a loopback port where nothing listens
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    crate::util::fresh_ssh_key(&key);
    let known = dir.path().join("known_hosts");
    std::fs::write(&known, "").unwrap();
    let uri = format!("qemu+ssh://root@127.0.0.1:1/system?keyfile={}&known_hosts={}", key.display(), known.display());
    let cpi = Cpi::with_config(&json!({"driver": {"kind": "libvirt", "uri": uri}}));
    let e = cpi.err("has_disk", json!(["disk-0123456789abcde"]));
    assert_eq!(e["type"], "Bosh::Clouds::CloudError");
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("127.0.0.1:1") && msg.contains("cannot connect"), "{e}");
}

/// A request of `len` bytes: `info` with an argument array of zeros (`[0,0,…]`, the cheapest text for the
/// most JSON values).
fn zeros_request(len: usize) -> Vec<u8> {
    let head = br#"{"method":"info","context":{},"api_version":2,"arguments":[0"#;
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(head);
    while v.len() + 2 + 2 <= len {
        v.extend_from_slice(b",0");
    }
    v.extend_from_slice(b"]}");
    v
}

/// A request over the size cap (16 MiB) is refused after reading just past the cap; one under the cap but
/// made of millions of tiny values is refused before it is parsed: neither makes the CPI take more than a
/// few dozen MiB (a 64 MiB `[0,0,…]` request took 1.1 GB before).
#[test]
fn huge_requests_are_refused_with_bounded_memory() {
    const LIMIT: u64 = 64 << 20;
    let cpi = libvirt_cpi();
    let (r, peak) = crate::util::run_measured(&cpi.config, zeros_request((64 << 20) - 16));
    eprintln!("64 MiB of [0,0,…]: peak RSS {} MiB", peak >> 20);
    assert_eq!(r["error"]["type"], "Bosh::Clouds::CpiError", "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("16 MiB"), "the message names the cap: {msg}");
    assert!(peak < LIMIT, "a 64 MiB request took {} MiB", peak >> 20);
    let (r, peak) = crate::util::run_measured(&cpi.config, zeros_request((16 << 20) - 64));
    eprintln!("16 MiB of [0,0,…]: peak RSS {} MiB", peak >> 20);
    assert_eq!(r["error"]["type"], "Bosh::Clouds::CpiError", "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("JSON values"), "the message says what is too many: {msg}");
    assert!(peak < LIMIT, "a 16 MiB request of zeros took {} MiB", peak >> 20);
    // a big request of the ordinary kind (a long string) is still read and answered
    let mut ok = br#"{"method":"info","arguments":[""#.to_vec();
    ok.extend(std::iter::repeat_n(b'x', 8 << 20));
    ok.extend_from_slice(br#""]}"#);
    let (r, peak) = crate::util::run_measured(&cpi.config, ok);
    eprintln!("8 MiB string: peak RSS {} MiB", peak >> 20);
    assert!(r["error"].is_null(), "{r}");
    assert!(peak < LIMIT, "an 8 MiB request took {} MiB", peak >> 20);
}

/// A caller that closed its end of stderr (a director worker killed mid-task): the CPI still answers, a panic
/// included. Before the fix the first log line panicked on EPIPE while the logger's lock was held, and the
/// panic hook waited for that lock for ever (tests/suites/caller_gone.rs runs every method this way on every peer).
#[test]
fn a_closed_stderr_never_hangs_the_cpi() {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let cpi = libvirt_cpi();
    for (panic, method) in [(None, "has_vm"), (Some("has_vm"), "has_vm"), (None, "info")] {
        let mut cmd = Command::new(crate::util::cpi_bin());
        cmd.arg("--config").arg(&cpi.config).env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        if let Some(m) = panic {
            cmd.env("VMCPI_DEBUG_PANIC", m);
        }
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let req = json!({"method": method, "arguments": ["vm-00000000000000000000"], "context": {}, "api_version": 2});
        child.stdin.take().unwrap().write_all(req.to_string().as_bytes()).unwrap();
        drop(child.stderr.take());
        let started = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > std::time::Duration::from_secs(30) {
                let wchan = std::fs::read_to_string(format!("/proc/{}/wchan", child.id())).unwrap_or_default();
                child.kill().unwrap();
                panic!("{method} (panic: {panic:?}) with stderr closed still runs after 30 s, waiting in {wchan}");
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut out = String::new();
        child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let r: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{method}: {e}: {out:?}"));
        assert!(r["log"].is_string() && r.get("result").is_some(), "{r}");
        if panic.is_some() {
            assert!(r["error"]["message"].as_str().unwrap().contains("internal error"), "{r}");
            assert!(r["log"].as_str().unwrap().contains("panic"), "the panic is in the response's log: {r}");
        }
    }
}
