//! The vSphere driver through the built `vmcpi` binary against the vSphere simulator: faults, TLS, secrets,
//! the kept session and remembered inventory (every method on vCenter and ESXi: `suites::lifecycle`). The
//! simulator is inspected with the driver's own SOAP client to check what the CPI made; the helpers here serve
//! tests/peer/vsphere.rs too.
use crate::util::{require_peer, Cpi};
use crate::vsphere_sim::{stemcell_image, vcsim_binary, Vcsim};
use serde_json::{json, Value};
use std::path::PathBuf;
use vmcpi::driver::vsphere::client::{ObjectContent, Session};
use vmcpi::driver::vsphere::methods::Destroy;
use vmcpi::driver::vsphere::VsphereConfig;

pub(crate) fn vcsim() -> Option<PathBuf> {
    let bin = vcsim_binary();
    require_peer("the vSphere simulator (bash tools/vcsim/build.sh target/vcsim)", bin.is_some())
        .then_some(bin)
        .flatten()
}

pub(crate) fn session(sim: &Vcsim, driver: &Value) -> Session {
    let _ = sim;
    let mut d = driver.clone();
    d.as_object_mut().unwrap().remove("kind");
    let cfg: VsphereConfig = serde_json::from_value(d).unwrap();
    Session::connect(&cfg).unwrap()
}

pub(crate) fn vm_props(
    s: &Session,
    dc: &str,
    folder: Option<&str>,
    name: &str,
    paths: &[&str],
) -> Option<ObjectContent> {
    let path = match folder {
        Some(f) => format!("{dc}/vm/{f}/{name}"),
        None => format!("{dc}/vm/{name}"),
    };
    let vm = s.find(&path).unwrap()?;
    s.object(&vm, paths).unwrap()
}

/// The values of the custom attributes of `vm` in the vCenter model's VM folder.
pub(crate) fn custom_values(s: &Session, vm: &str) -> Vec<String> {
    let p = vm_props(s, "DC0", Some("vmcpi_vms"), vm, &["customValue"]).unwrap();
    p.get("customValue").unwrap().children.iter().filter_map(|c| c.str_at("value").map(str::to_string)).collect()
}

pub(crate) fn networks() -> Value {
    json!({"default": {"type": "manual", "ip": "10.0.0.5", "netmask": "255.255.255.0", "gateway": "10.0.0.1", "dns": ["8.8.8.8"], "default": ["dns", "gateway"], "cloud_properties": {"name": "VM Network"}}})
}

fn create_vm(cpi: &Cpi, sc: &str, props: Value) -> (String, Value) {
    let r =
        cpi.ok("create_vm", json!(["agent-1", sc, props, networks(), [], {"bosh": {"password": "guest-secret-pw"}}]));
    (r[0].as_str().unwrap().to_string(), r[1].clone())
}

/// The agent settings the VM has: its `guestinfo.userdata` (the settings ISO carries the same JSON).
pub(crate) fn settings(sim: &Vcsim, vm: &str) -> Value {
    let s = session(sim, &sim.driver());
    let folder = (sim.model == "vpx").then_some("vmcpi_vms");
    let p = vm_props(&s, sim.datacenter(), folder, vm, &["config.extraConfig"]).expect("VM exists");
    let userdata = p
        .get("config.extraConfig")
        .unwrap()
        .children
        .iter()
        .rev()
        .find(|o| o.str_at("key") == Some("guestinfo.userdata"))
        .and_then(|o| o.str_at("value"))
        .expect("guestinfo.userdata")
        .to_string();
    let json = vmcpi::encoding::unbase64(&userdata).unwrap();
    // the medium in the drive holds the same JSON
    let devices = vm_props(&s, sim.datacenter(), folder, vm, &["config.hardware.device"]).unwrap();
    let cd = devices.get("config.hardware.device").and_then(|d| {
        d.children.iter().find(|d| d.kind() == "VirtualCdrom")?.str_at("backing/fileName").map(str::to_string)
    });
    let iso = sim.datastore_dir().join(cd.expect("CD-ROM with a medium").split_once("] ").unwrap().1);
    let medium = std::fs::read(&iso).unwrap();
    assert!(
        medium.windows(json.len()).any(|w| w == json.as_slice()),
        "{} holds the settings: {}",
        iso.display(),
        String::from_utf8_lossy(&json)
    );
    serde_json::from_slice(&json).unwrap()
}

#[test]
fn vsphere_faults() {
    let Some(bin) = vcsim() else { return };
    let sim = Vcsim::start(&bin, "vpx", false);
    let tmp = tempfile::tempdir().unwrap();
    let image = stemcell_image(tmp.path(), false);

    // wrong password: a clear message, and the password appears nowhere
    let mut cfg = sim.config();
    cfg["driver"]["password"] = json!("wrong-password-123");
    let bad = Cpi::with_config(&cfg);
    let run = bad.call("has_vm", json!(["vm-00000000000000000000"]));
    let msg = run.response["error"]["message"].as_str().unwrap();
    assert!(msg.contains("wrong user name or password"), "{msg}");
    assert!(!run.stdout.contains("wrong-password-123") && !run.stderr.contains("wrong-password-123"));

    // nobody listening: a clear message after a few quick attempts, no hang
    let mut cfg = sim.config();
    cfg["driver"]["host"] = json!("http://127.0.0.1:9/sdk");
    let started = std::time::Instant::now();
    let run = Cpi::with_config(&cfg).call("has_vm", json!(["vm-00000000000000000000"]));
    let msg = run.response["error"]["message"].as_str().unwrap();
    assert!(msg.contains("cannot reach vSphere at http://127.0.0.1:9/sdk"), "{msg}");
    assert!(run.stderr.contains("trying again (3/3)"), "{}", run.stderr);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));

    // missing datacenter
    let mut cfg = sim.config();
    cfg["driver"]["datacenter"] = json!("NoSuchDC");
    let e = Cpi::with_config(&cfg).err("has_disk", json!(["disk-00000000000000000000"]));
    assert!(e["message"].as_str().unwrap().contains("datacenter \"NoSuchDC\" not found"), "{e}");

    // missing datastore
    let mut cfg = sim.config();
    cfg["driver"]["datastores"] = json!(["nope-*"]);
    let e = Cpi::with_config(&cfg).err("create_disk", json!([1024, {}, null]));
    assert!(e["message"].as_str().unwrap().contains("no accessible datastore matches"), "{e}");

    let cpi = Cpi::with_config(&sim.config());
    let sc = cpi.ok("create_stemcell", json!([image, {}])).as_str().unwrap().to_string();

    // missing network: VMCreationFailed naming the port group, nothing left behind
    let nets = json!({"private": {"type": "manual", "ip": "10.0.0.9", "netmask": "255.255.255.0", "cloud_properties": {"name": "no-such-portgroup"}}});
    let e = cpi.err("create_vm", json!(["agent-1", sc, {"cpu": 1, "ram": 512}, nets, [], {}]));
    assert_eq!(e["type"], "Bosh::Clouds::VMCreationFailed");
    assert!(e["message"].as_str().unwrap().contains("no-such-portgroup"), "{e}");
    // a failure after the clone (guest operations are missing in the simulator) removes the VM again
    let props = json!({"cpu": 1, "ram": 512, "bootstrap": {"script": "echo hi", "username": "vcap", "password": "guest-pw-456", "max_wait_seconds": 5}});
    let run = cpi.call("create_vm", json!(["agent-1", sc, props, networks(), [], {}]));
    assert_eq!(run.response["error"]["type"], "Bosh::Clouds::VMCreationFailed", "{}", run.response);
    assert!(run.stderr.contains("removing vm-"), "{}", run.stderr);
    assert!(!run.stdout.contains("guest-pw-456") && !run.stderr.contains("guest-pw-456"));
    let s = session(&sim, &sim.driver());
    let folder = s.find("DC0/vm/vmcpi_vms").unwrap().unwrap();
    let children = s.object(&folder, &["childEntity"]).unwrap().unwrap();
    assert!(
        children.get("childEntity").is_none_or(|c| c.children.is_empty()),
        "leftover VMs: {:?}",
        children.get("childEntity")
    );

    // a VM deleted behind the CPI's back
    let (vm, _) = create_vm(&cpi, &sc, json!({"cpu": 1, "ram": 512}));
    let vm_ref = s.find(&format!("DC0/vm/vmcpi_vms/{vm}")).unwrap().unwrap();
    let _ = s.run_task(&vmcpi::driver::vsphere::methods::PowerOffVm { this: vm_ref.clone() }, "power off");
    s.run_task(&Destroy { this: vm_ref }, "destroy").unwrap();
    assert_eq!(cpi.ok("has_vm", json!([vm])), json!(false));
    assert_eq!(cpi.err("reboot_vm", json!([vm]))["type"], "Bosh::Clouds::VMNotFound");
    assert_eq!(cpi.err("set_vm_metadata", json!([vm, {"a": "b"}]))["type"], "Bosh::Clouds::VMNotFound");
    assert_eq!(cpi.err("get_disks", json!([vm]))["type"], "Bosh::Clouds::VMNotFound");
    let disk = cpi.ok("create_disk", json!([512, {}, null])).as_str().unwrap().to_string();
    assert_eq!(cpi.err("attach_disk", json!([vm, disk]))["type"], "Bosh::Clouds::VMNotFound");
    cpi.ok("delete_vm", json!([vm]));
    // unknown disk and malformed ids
    let e = cpi.err("attach_disk", json!([vm, "disk-ffffffffffffffffffff"]));
    assert_eq!(e["type"], "Bosh::Clouds::VMNotFound");
    assert_eq!(
        cpi.err("set_disk_metadata", json!(["disk-ffffffffffffffffffff", {}]))["type"],
        "Bosh::Clouds::DiskNotFound"
    );
    assert_eq!(cpi.ok("has_vm", json!(["../../etc"])), json!(false));
    // a stemcell that is gone
    let e =
        cpi.err("create_vm", json!(["agent-1", "sc-00000000000000000000", {"cpu": 1, "ram": 512}, networks(), [], {}]));
    assert_eq!(
        (e["type"].as_str(), e["ok_to_retry"].as_bool()),
        (Some("Bosh::Clouds::VMCreationFailed"), Some(false)),
        "{e}"
    );
    assert!(e["message"].as_str().unwrap().contains("stemcell sc-00000000000000000000 not found"), "{e}");
    // sizes beyond vSphere's limits are refused before any arithmetic (no overflow, no internal error)
    let e = cpi.err("create_disk", json!([63u64 << 20, {}, null]));
    assert_eq!(e["type"], "Bosh::Clouds::CpiError", "{e}");
    assert!(e["message"].as_str().unwrap().contains("62 TiB"), "{e}");
    let e =
        cpi.err("create_vm", json!(["agent-1", sc, {"cpu": 1, "ram": u64::MAX, "disk": u64::MAX}, networks(), [], {}]));
    assert_eq!(
        (e["type"].as_str(), e["ok_to_retry"].as_bool()),
        (Some("Bosh::Clouds::VMCreationFailed"), Some(false)),
        "{e}"
    );
    let e = cpi.err("resize_disk", json!(["disk-ffffffffffffffffffff", 63u64 << 20]));
    assert_eq!(e["type"], "Bosh::Clouds::CpiError", "{e}");
    let e = cpi.err("create_vm", json!(["agent-1", sc, {"cpu": 1, "ram": 512, "bootstrap": {"script": "x", "username": "u", "password": "p", "interpreter": 7}}, networks(), [], {}]));
    assert!(e["message"].as_str().unwrap().contains("cloud_properties.bootstrap"), "{e}");
    // bad cloud_properties name the field
    let e = cpi.err("create_vm", json!(["agent-1", sc, {"cpu": 1, "rma": 512}, networks(), [], {}]));
    assert!(e["message"].as_str().unwrap().contains("rma"), "{e}");
    cpi.ok("delete_disk", json!([disk]));
}

#[test]
fn vsphere_tls_verification() {
    let Some(bin) = vcsim() else { return };
    let sim = Vcsim::start(&bin, "vpx", true);
    assert!(sim.url.starts_with("https://"), "{}", sim.url);
    let pem = std::fs::read_to_string(sim.cert.as_ref().unwrap()).unwrap();
    let probe = json!(["vm-00000000000000000000"]);

    // verification is on by default: a self-signed server is refused
    let e = Cpi::with_config(&sim.config()).err("has_vm", probe.clone());
    assert!(
        e["message"].as_str().unwrap().to_lowercase().contains("certificate")
            || e["message"].as_str().unwrap().contains("UnknownIssuer"),
        "{e}"
    );

    // a CA bundle
    let mut cfg = sim.config();
    cfg["driver"]["ca_cert"] = json!(pem);
    assert_eq!(Cpi::with_config(&cfg).ok("has_vm", probe.clone()), json!(false));

    // a thumbprint pin, right and wrong
    let der = match ureq::tls::parse_pem(pem.as_bytes()).next().unwrap().unwrap() {
        ureq::tls::PemItem::Certificate(c) => c.der().to_vec(),
        _ => panic!("no certificate"),
    };
    let mut cfg = sim.config();
    cfg["driver"]["thumbprint"] = json!(vmcpi::driver::vsphere::tls::sha256_hex(&der));
    assert_eq!(Cpi::with_config(&cfg).ok("has_vm", probe.clone()), json!(false));
    cfg["driver"]["thumbprint"] = json!("00".repeat(32));
    let e = Cpi::with_config(&cfg).err("has_vm", probe.clone());
    assert!(e["message"].as_str().unwrap().contains("does not match driver.thumbprint"), "{e}");

    // insecure works and says so
    let mut cfg = sim.config();
    cfg["driver"]["insecure"] = json!(true);
    let run = Cpi::with_config(&cfg).call("has_vm", probe);
    assert_eq!(run.response["result"], json!(false), "{}", run.response);
    assert!(run.stderr.contains("NOT checked"), "{}", run.stderr);

    // and a stemcell import over HTTPS (the lease URL says https://*/nfc/…)
    let tmp = tempfile::tempdir().unwrap();
    let image = stemcell_image(tmp.path(), false);
    let mut cfg = sim.config();
    cfg["driver"]["ca_cert"] = json!(pem);
    let sc = Cpi::with_config(&cfg).ok("create_stemcell", json!([image, {}]));
    assert!(sc.as_str().unwrap().starts_with("sc-"));
}

#[test]
fn vsphere_password_with_xml_specials_never_shows() {
    let Some(bin) = vcsim() else { return };
    // XML specials in the password prove the Login body is escaped; debug logging shows every call
    let canary = "Canary&<Pw>\"'-7f3a9";
    let sim = Vcsim::start_with(&bin, "vpx", false, canary);
    let mut cfg = sim.config();
    cfg["log_level"] = json!("debug");
    let cpi = Cpi::with_config(&cfg);
    let tmp = tempfile::tempdir().unwrap();
    let image = stemcell_image(tmp.path(), false);
    let mut outputs = Vec::new();
    let sc_run = cpi.call("create_stemcell", json!([image, {}]));
    assert!(sc_run.response["error"].is_null(), "{}", sc_run.response);
    let sc = sc_run.response["result"].as_str().unwrap().to_string();
    outputs.push(sc_run);
    let vm_run = cpi.call("create_vm", json!(["agent-1", sc, {"cpu": 1, "ram": 512}, networks(), [], {}]));
    let vm = vm_run.response["result"][0].as_str().unwrap().to_string();
    outputs.push(vm_run);
    outputs.push(cpi.call("set_vm_metadata", json!([vm, {"k": "v"}])));
    outputs.push(cpi.call("delete_vm", json!([vm])));
    // a wrong password (its own state_dir: the session kept in the first is keyed by URL and user)
    let mut wrong = cfg.clone();
    wrong["driver"]["password"] = json!(format!("{canary}-wrong"));
    let other_state = tempfile::tempdir().unwrap();
    wrong["driver"]["state_dir"] = json!(other_state.path());
    outputs.push(Cpi::with_config(&wrong).call("has_vm", json!([vm])));
    for run in &outputs {
        assert!(run.stderr.contains(" -> HTTP "), "debug logging is on");
        for needle in [canary, "Canary&amp;", "Canary&"] {
            assert!(
                !run.stdout.contains(needle) && !run.stderr.contains(needle),
                "password leaked:\n{}\n{}",
                run.stdout,
                run.stderr
            );
        }
    }
}

/// SOAP operations a debug-logging call sent (`<op> -> HTTP …` lines), in order.
fn ops(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.split_once(" -> HTTP ").map(|(head, _)| head.rsplit(' ').next().unwrap_or("").to_string()))
        .collect()
}

/// The session files in a state_dir.
fn session_files(state: &std::path::Path) -> Vec<PathBuf> {
    std::fs::read_dir(state.join("sessions"))
        .map(|r| r.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect())
        .unwrap_or_default()
}

/// Issue 12: the session outlives the CPI process. The first call logs in and keeps the cookie in
/// `state_dir` (0600, no password); the next makes no Login and no Logout; a session the server no longer
/// knows (the cookie of a logged-out session, a damaged file, garbage) costs one new login and the call
/// succeeds; parallel processes share one session; a malformed CID makes no request at all.
#[test]
fn vsphere_session_is_kept_between_calls() {
    let Some(bin) = vcsim() else { return };
    let pw = "Session-pw-canary-61c2";
    let sim = Vcsim::start_with(&bin, "vpx", false, pw);
    let mut cfg = sim.config();
    cfg["log_level"] = json!("debug");
    let state = sim.dir.path().join("state");
    let cpi = Cpi::with_config(&cfg);
    let probe = json!(["vm-00000000000000000000"]);

    // cold: service content and login, no logout; the file is 0600 and holds no password
    let run = cpi.call("has_vm", probe.clone());
    assert_eq!(run.response["result"], json!(false), "{}", run.response);
    let first = ops(&run.stderr);
    assert_eq!(first.iter().filter(|o| *o == "Login").count(), 1, "{first:?}");
    assert!(!first.contains(&"Logout".to_string()), "{first:?}");
    let files = session_files(&state);
    assert_eq!(files.len(), 1, "{files:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777, 0o600);
    let saved = std::fs::read_to_string(&files[0]).unwrap();
    assert!(!saved.contains(pw), "the password is never kept: {saved}");
    let cookie = serde_json::from_str::<Value>(&saved).unwrap()["cookie"].as_str().unwrap().to_string();
    assert!(!cookie.is_empty());
    assert!(!run.stderr.contains(&cookie) && !run.stdout.contains(&cookie), "the cookie is never logged");

    // warm: no service content, no login, no logout: the first request is the check
    let run = cpi.call("has_vm", probe.clone());
    assert_eq!(run.response["result"], json!(false), "{}", run.response);
    let warm = ops(&run.stderr);
    for op in ["RetrieveServiceContent", "Login", "Logout"] {
        assert!(!warm.contains(&op.to_string()), "{op} in a warm call: {warm:?}");
    }
    assert!(!run.stderr.contains(&cookie), "the cookie is never logged");

    // the server forgets the session (logged out behind the CPI's back): one new login, then success
    {
        let s = session(&sim, &sim.driver());
        // log the kept session out by presenting its cookie
        let body = vmcpi::driver::vsphere::methods::Logout { this: s.sc.session_manager.clone() };
        let req = vmcpi::driver::vsphere::methods::Request::encode(&body);
        let resp = ureq::post(&sim.url)
            .header("Cookie", &format!("vmware_soap_session={cookie}"))
            .header("Content-Type", "text/xml")
            .send(&req[..])
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }
    let run = cpi.call("has_vm", probe.clone());
    assert_eq!(run.response["result"], json!(false), "{}", run.response);
    let relogged = ops(&run.stderr);
    assert_eq!(relogged.iter().filter(|o| *o == "Login").count(), 1, "{relogged:?}");
    assert!(!relogged.contains(&"RetrieveServiceContent".to_string()), "{relogged:?}");
    let fresh = std::fs::read_to_string(&files[0]).unwrap();
    assert!(!fresh.contains(&cookie), "the file holds the new session");
    assert_eq!(std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777, 0o600);
    // and the next call uses it
    let run = cpi.call("has_vm", probe.clone());
    assert!(!ops(&run.stderr).contains(&"Login".to_string()));

    // damaged files of every kind: no panic, one login, success, a good file again
    let valid = std::fs::read(&files[0]).unwrap();
    let mut wrong_cookie: Value = serde_json::from_slice(&valid).unwrap();
    wrong_cookie["cookie"] = json!("not-a-session-of-this-server");
    let mut bad_sc: Value = serde_json::from_slice(&valid).unwrap();
    bad_sc["service_content"] = json!({"root_folder": 7});
    let damaged: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"{".to_vec(),
        b"\xff\xfe\x00garbage".to_vec(),
        valid[..valid.len() / 2].to_vec(),
        b"[1,2,3]".to_vec(),
        wrong_cookie.to_string().into_bytes(),
        bad_sc.to_string().into_bytes(),
        br#"{"url":"x","user":"user","cookie":"a\r\nInjected: 1","service_content":{}}"#.to_vec(),
        vec![b'{'; 200_000],
    ];
    for (i, bytes) in damaged.iter().enumerate() {
        std::fs::write(&files[0], bytes).unwrap();
        let run = cpi.call("has_vm", probe.clone());
        assert_eq!(run.response["result"], json!(false), "damage {i}: {}\n{}", run.response, run.stderr);
        assert!(!run.stderr.contains("panicked"), "damage {i}: {}", run.stderr);
        let logins = ops(&run.stderr).iter().filter(|o| *o == "Login").count();
        assert_eq!(logins, 1, "damage {i}: {:?}", ops(&run.stderr));
        let again: Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
        assert!(again["cookie"].as_str().is_some_and(|c| !c.is_empty()), "damage {i}: the file is rewritten");
    }

    // parallel processes: from no file, and from a dead session, one login in all; the file stays whole
    for start in ["none", "dead"] {
        match start {
            "none" => std::fs::remove_file(&files[0]).unwrap(),
            _ => std::fs::write(&files[0], wrong_cookie.to_string()).unwrap(),
        }
        let cpi = std::sync::Arc::new(Cpi::with_config(&cfg));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let cpi = cpi.clone();
                let probe = probe.clone();
                std::thread::spawn(move || cpi.call("has_vm", probe))
            })
            .collect();
        let runs: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let mut logins = 0;
        for run in &runs {
            assert_eq!(run.response["result"], json!(false), "{start}: {}\n{}", run.response, run.stderr);
            logins += ops(&run.stderr).iter().filter(|o| *o == "Login").count();
        }
        assert_eq!(logins, 1, "{start}: one process logs in, the others take its session");
        let whole: Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
        assert!(whole["cookie"].is_string());
        assert_eq!(session_files(&state).len(), 1);
    }

    // a malformed CID: refused before any request (no login, not even a kept session's check)
    std::fs::remove_file(&files[0]).unwrap();
    for (method, args) in [
        ("has_vm", json!(["../../etc"])),
        ("delete_vm", json!(["vm-../x"])),
        ("reboot_vm", json!(["vm-ZZZZ"])),
        ("set_vm_metadata", json!(["vm-1", {"a": "b"}])),
        ("get_disks", json!(["vm"])),
        ("has_disk", json!(["disk-../../x"])),
        ("delete_disk", json!(["disk-xyz"])),
        ("attach_disk", json!(["vm-00000000000000000000", "disk-bad"])),
        ("detach_disk", json!(["vm-00000000000000000000", "disk-bad"])),
        ("set_disk_metadata", json!(["disk-bad", {}])),
        ("resize_disk", json!(["disk-bad", 10])),
        ("delete_stemcell", json!(["sc-bad"])),
        ("create_vm", json!(["a", "sc-bad", {}, networks(), [], {}])),
    ] {
        let run = cpi.call(method, args);
        assert!(ops(&run.stderr).is_empty(), "{method} sent requests: {:?}", ops(&run.stderr));
        assert!(session_files(&state).is_empty(), "{method} logged in");
    }
}

/// The datacenter's reference is remembered in the session file: a warm call looks nothing up for it, and
/// checks it in a read it makes anyway. A remembered reference that is wrong (another object, one that no
/// longer exists) costs a lookup and the call succeeds; the file then holds the right one.
#[test]
fn vsphere_remembered_datacenter() {
    let Some(bin) = vcsim() else { return };
    let sim = Vcsim::start(&bin, "vpx", false);
    let mut cfg = sim.config();
    cfg["log_level"] = json!("debug");
    let state = sim.dir.path().join("state");
    let cpi = Cpi::with_config(&cfg);
    let remembered = || -> Value {
        let files = session_files(&state);
        let saved: Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
        saved["inventory"]["DC0"].clone()
    };
    let finds = |stderr: &str| ops(stderr).iter().filter(|o| *o == "FindByInventoryPath").count();
    let gone = json!(["disk-00000000000000000000"]);

    // cold: looked up and remembered
    let run = cpi.call("delete_disk", gone.clone());
    assert!(run.response["error"].is_null(), "{}", run.response);
    let dc = remembered();
    assert_eq!(dc["kind"], "Datacenter", "{dc}");
    // warm: no lookup at all
    let run = cpi.call("delete_disk", gone.clone());
    assert!(run.response["error"].is_null(), "{}", run.response);
    assert_eq!(finds(&run.stderr), 0, "{:?}", ops(&run.stderr));

    let tmp = tempfile::tempdir().unwrap();
    let image = stemcell_image(tmp.path(), false);
    let sc = cpi.ok("create_stemcell", json!([image, {}])).as_str().unwrap().to_string();
    let (vm, _) = create_vm(&cpi, &sc, json!({"cpu": 1, "ram": 512, "disk": 1024}));
    // the folders and the port group are remembered too: a warm create_vm looks up its stemcell only
    let saved: Value = serde_json::from_slice(&std::fs::read(&session_files(&state)[0]).unwrap()).unwrap();
    for path in ["DC0/vm/vmcpi_vms", "DC0/vm/vmcpi_templates", "DC0/network/VM Network"] {
        assert!(saved["inventory"][path]["value"].is_string(), "{path}: {saved}");
    }
    let run = cpi.call("create_vm", json!(["agent-2", sc, {"cpu": 1, "ram": 512}, networks(), [], {}]));
    assert!(run.response["error"].is_null(), "{}\n{}", run.response, run.stderr);
    assert_eq!(finds(&run.stderr), 1, "{:?}", ops(&run.stderr));
    let vm2 = run.response["result"][0].as_str().unwrap().to_string();
    // remembered wrongly (another folder, a network that is gone, the wrong kind): looked up, right again
    let mut saved = saved.clone();
    saved["inventory"]["DC0/vm/vmcpi_vms"] = saved["inventory"]["DC0/vm/vmcpi_templates"].clone();
    saved["inventory"]["DC0/network/VM Network"] = json!({"kind": "Network", "value": "network-999"});
    saved["inventory"]["DC0/vm/vmcpi_templates"] = json!({"kind": "Datacenter", "value": dc["value"]});
    std::fs::write(&session_files(&state)[0], saved.to_string()).unwrap();
    let run = cpi.call("create_vm", json!(["agent-3", sc, {"cpu": 1, "ram": 512}, networks(), [], {}]));
    assert!(run.response["error"].is_null(), "{}\n{}", run.response, run.stderr);
    let vm3 = run.response["result"][0].as_str().unwrap().to_string();
    assert_eq!(cpi.ok("has_vm", json!([vm3])), json!(true), "made in the configured folder");
    let run = cpi.call("create_stemcell", json!([image, {}]));
    assert!(run.response["error"].is_null(), "{}\n{}", run.response, run.stderr);
    let sc2 = run.response["result"].as_str().unwrap().to_string();
    let s = session(&sim, &sim.driver());
    assert!(vm_props(&s, "DC0", Some("vmcpi_templates"), &sc2, &["name"]).is_some(), "made in the template folder");
    let fixed: Value = serde_json::from_slice(&std::fs::read(&session_files(&state)[0]).unwrap()).unwrap();
    for path in ["DC0/vm/vmcpi_vms", "DC0/vm/vmcpi_templates", "DC0/network/VM Network"] {
        assert_ne!(fixed["inventory"][path], saved["inventory"][path], "{path} is remembered right again");
    }
    for v in [&vm2, &vm3] {
        cpi.ok("delete_vm", json!([v]));
    }
    cpi.ok("delete_stemcell", json!([sc2]));
    // wrong references: the root folder posing as a datacenter, and an object that does not exist
    for wrong in
        [json!({"kind": "Datacenter", "value": "group-d1"}), json!({"kind": "Datacenter", "value": "datacenter-999"})]
    {
        let files = session_files(&state);
        let mut saved: Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
        saved["inventory"]["DC0"] = wrong.clone();
        std::fs::write(&files[0], saved.to_string()).unwrap();
        // a placement read (create_disk, no VM) and a VM read (create_disk next to a VM) check it
        let run = cpi.call("create_disk", json!([1024, {}, null]));
        assert!(run.response["error"].is_null(), "{wrong}: {}\n{}", run.response, run.stderr);
        assert_eq!(remembered(), dc, "{wrong}: the file holds the right reference again");
        let disk = run.response["result"].as_str().unwrap().to_string();
        cpi.ok("delete_disk", json!([disk]));
    }
    // delete_vm checks it with its read of the VM, then deletes the VM's folder in that datacenter
    let files = session_files(&state);
    let mut saved: Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    saved["inventory"]["DC0"] = json!({"kind": "Datacenter", "value": "datacenter-999"});
    std::fs::write(&files[0], saved.to_string()).unwrap();
    let run = cpi.call("delete_vm", json!([vm]));
    assert!(run.response["error"].is_null(), "{}\n{}", run.response, run.stderr);
    assert!(!sim.datastore_dir().join(&vm).exists(), "VM folder removed");
    assert_eq!(remembered(), dc);
    assert_eq!(cpi.ok("has_vm", json!([vm])), json!(false));

    // a stemcell that someone powered on is powered off and destroyed
    let s = session(&sim, &sim.driver());
    let sc_ref = s.find(&format!("DC0/vm/vmcpi_templates/{sc}")).unwrap().unwrap();
    s.run_task(&vmcpi::driver::vsphere::methods::PowerOnVm { this: sc_ref }, "power on").unwrap();
    cpi.ok("delete_stemcell", json!([sc]));
    assert!(vm_props(&s, "DC0", Some("vmcpi_templates"), &sc, &["name"]).is_none());
}
