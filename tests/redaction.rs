//! Secrets are typed values that print as `<redacted>`; outside text (tool output, API errors) is scrubbed of
//! every registered secret, however short, numbers included; vmcpi's own words are never masked (a masked
//! word would give a common-word secret away). Each case is one that leaked or gave a secret away before.
use crate::util::Cpi;
use crate::vmrun::{create_vm_args, stemcell_image, Fake};
use serde_json::json;

/// A 3-character guest password: it is on vmrun's command line (`-gp`, vmrun's only way to take it), and
/// the debug log shows that command line with `<redacted>` in its place.
#[test]
fn a_short_guest_password_never_reaches_the_log() {
    let fake = Fake::new();
    let mut cfg = fake.config(true, None);
    cfg["log_level"] = json!("debug");
    let cpi = Cpi::with_config(&cfg);
    let img = tempfile::tempdir().unwrap();
    let sc = cpi.ok("create_stemcell", json!([stemcell_image(img.path(), 64, 1).display().to_string(), {}]));
    std::fs::write(fake.state("guest-tools"), "vcap:p7q").unwrap();
    let bootstrap =
        json!({"bootstrap": {"script": "true", "username": "vcap", "password": "p7q", "max_wait_seconds": 20}});
    let r = cpi.call("create_vm", create_vm_args(&sc, bootstrap));
    assert!(r.response["error"].is_null(), "{}", r.response);
    assert!(r.stderr.contains("-gp <redacted>"), "{}", r.stderr);
    for text in [&r.stdout, &r.stderr] {
        assert!(!text.contains("p7q"), "the guest password leaked:\n{text}");
    }
}

/// A numeric password (`"password": 12345678`) is a password: the config loads, and no message holds it.
#[test]
fn a_numeric_password_is_a_secret() {
    let state = tempfile::tempdir().unwrap();
    let cpi = Cpi::with_config(&json!({"driver": {"kind": "vsphere", "host": "https://127.0.0.1:1", "user": "u",
        "password": 12345678, "datacenter": "DC0", "state_dir": state.path(), "http_timeout_seconds": 5},
        "log_level": "debug"}));
    let r = cpi.call("has_vm", json!(["vm-0123456789abcdef0123"]));
    let e = &r.response["error"];
    assert_eq!(e["type"], "Bosh::Clouds::CloudError", "the config is accepted: {e}");
    for text in [&r.stdout, &r.stderr] {
        assert!(!text.contains("12345678"), "the password leaked:\n{text}");
    }
    // the same under SSH: a numeric password and passphrase load as secrets
    let fake = Fake::new();
    let cfg = fake.config(
        true,
        Some(json!({"host": "127.0.0.1", "port": 1, "user": "u", "password": 4711,
        "host_public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKc8", "connect_timeout_seconds": 2})),
    );
    let r = Cpi::with_config(&cfg).call("has_vm", json!(["vm-0123456789abcdef0123"]));
    assert_ne!(r.response["error"]["type"], "Bosh::Clouds::CpiError", "{}", r.response);
    assert!(!r.stdout.contains("4711") && !r.stderr.contains("4711"), "{}\n{}", r.stdout, r.stderr);
}

/// A secret that is an ordinary word (`finished`, the mbus password here) is not masked in vmcpi's own log
/// lines ("has_vm finished in 3 ms" would become "has_vm <redacted> in 3 ms" and give it away), and is
/// still masked where it stands as a value.
#[test]
fn a_common_word_secret_does_not_mask_vmcpis_own_words() {
    let cpi = Cpi::with_config(&json!({"driver": {"kind": "libvirt", "uri": "qemu:///nonexistent-for-tests"},
        "agent": {"mbus": "nats://nats:finished@10.0.0.6:4222"}, "log_level": "debug"}));
    let r = cpi.call("has_vm", json!(["vm-0123456789abcdef0123"]));
    let log = r.response["log"].as_str().unwrap();
    assert!(log.contains("INFO has_vm finished in "), "{log}");
    assert!(!log.contains("<redacted>"), "nothing of this call holds the secret, so nothing is masked:\n{log}");
    assert!(!r.stdout.contains("nats:finished") && !r.stderr.contains("nats:finished"));
    // the same kind of secret in outside text (what the OS said: ENOENT for the missing CA file) is masked
    // there, and vmcpi's own words around it stay
    let cpi = Cpi::with_config(
        &json!({"driver": {"kind": "libvirt", "uri": "qemu+tls://127.0.0.1:1/system?pkipath=/nonexistent-pki"},
        "agent": {"mbus": "nats://nats:directory@10.0.0.6:4222"}}),
    );
    let e = cpi.err("has_vm", json!(["vm-0123456789abcdef0123"]));
    let msg = e["message"].as_str().unwrap();
    assert!(msg.starts_with("cannot connect to libvirt at qemu+tls://127.0.0.1:1/system"), "{msg}");
    assert!(msg.contains("No such file or <redacted> (os error 2)") && !msg.contains("directory"), "{msg}");
}
