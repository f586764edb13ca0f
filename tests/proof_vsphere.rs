//! Issue 6 proofs for the vSphere driver against the simulator (vCenter model): SIGKILL at random points of
//! create_stemcell, create_vm and attach_disk (`VMCPI_KILL_TRIALS` per method, default 3 here;
//! `VMCPI_KILL_TRIALS=100` for the full run), 16 CPI processes at once on one stemcell, hostile CIDs and
//! metadata on every method, and secret canaries on every method and error path. The helpers are the ones of
//! tests/vsphere.rs (the killer, the SOAP session) and tests/proof_vmrun.rs (hostile strings, canaries).
use crate::proof_vmrun::{
    assert_clean, assert_no_side_effects, canary_context, canary_env, files_below, files_with_canaries, hostile_calls,
    hostile_strings, timed, trials, Rng, CANARIES,
};
use crate::util::Cpi;
use crate::vsphere::{call_killed, networks, session, vcsim, Killed};
use crate::vsphere_sim::{stemcell_image, Vcsim};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn create_vm_args(sc: &Value, props: Value) -> Value {
    json!(["agent-1", sc, props, networks(), [], {}])
}

/// Names of the VMs and templates in the CPI's folders.
fn inventory(sim: &Vcsim) -> Vec<String> {
    let s = session(sim, &sim.driver());
    let mut out = Vec::new();
    for folder in ["DC0/vm/vmcpi_vms", "DC0/vm/vmcpi_templates"] {
        let Some(f) = s.find(folder).unwrap() else { continue };
        let children = s.object(&f, &["childEntity"]).unwrap().unwrap();
        if let Some(c) = children.get("childEntity") {
            for m in &c.children {
                if let Some(o) = s.object(&m.as_moref().unwrap(), &["name"]).unwrap() {
                    out.push(format!("{folder}/{}", o.str("name").unwrap_or("?")));
                }
            }
        }
    }
    out.sort();
    out
}

/// Datastore entries of the CPI: VM and stemcell folders, disk files.
fn datastore(sim: &Vcsim) -> Vec<String> {
    let ds = sim.datastore_dir();
    // (the simulator's own inventory has folders DC0_*: not the CPI's)
    let mut out: Vec<String> = std::fs::read_dir(&ds)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "vmcpi_disks" && !n.starts_with("DC0_"))
        .collect();
    out.extend(
        std::fs::read_dir(ds.join("vmcpi_disks"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| format!("vmcpi_disks/{}", e.file_name().to_string_lossy())),
    );
    out.sort();
    out
}

/// Scratch files and markers in the state dir (per vCenter/datacenter subdirectory).
fn state_files(sim: &Vcsim, sub: &str) -> Vec<PathBuf> {
    std::fs::read_dir(sim.dir.path().join("state"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|d| files_below(&d.path().join(sub)))
        .collect()
}

#[test]
fn proof_vsphere_sigkill_at_random_points_leaves_nothing() {
    let Some(bin) = vcsim() else { return };
    let sim = Vcsim::start(&bin, "vpx", false);
    let cpi = Cpi::with_config(&sim.config());
    let mut debug = sim.config();
    debug["log_level"] = json!("debug");
    let debug = Cpi::with_config(&debug);
    let tmp = tempfile::tempdir().unwrap();
    let image = stemcell_image(tmp.path(), false);
    // how long each call takes when left alone: the kill points spread over 0..1.2 times that
    let (sc, t_sc) = timed(&cpi, "create_stemcell", json!([image, {}]));
    let (r, t_vm) = timed(&cpi, "create_vm", create_vm_args(&sc, json!({"cpu": 1, "ram": 512, "disk": 512})));
    let disk = cpi.ok("create_disk", json!([256, {}, r[0]]));
    let (_, t_at) = timed(&cpi, "attach_disk", json!([r[0], disk]));
    cpi.ok("delete_vm", json!([r[0]]));
    cpi.ok("delete_disk", json!([disk]));
    let mut rng = Rng::new();
    let n = trials(3);
    let (mut killed, mut finished, mut late) = (0, 0, 0);
    let mut logs: Vec<String> = Vec::new();
    // what the director was told about (or, for the microsecond window after a create finished and before
    // it answered, what the killed process's log names as made): it deletes those
    let (mut vms, mut scs) = (Vec::new(), Vec::new());
    let started = Instant::now();
    for _ in 0..n {
        let mut tally = |k: Killed, list: Option<&mut Vec<String>>, cid_of: fn(&Value) -> String| match k {
            Killed::Answered(r) => {
                finished += 1;
                if let Some(l) = list {
                    l.push(cid_of(&r))
                }
            }
            Killed::AfterFinishing(cid) => {
                late += 1;
                if let Some(l) = list {
                    l.push(cid)
                }
            }
            Killed::MidWay(log) => {
                killed += 1;
                logs.push(log)
            }
        };
        let k = call_killed(
            &debug.config,
            "create_stemcell",
            json!([image, {}]),
            Duration::from_millis(rng.below(t_sc * 6 / 5)),
        );
        tally(k, Some(&mut scs), |r| r.as_str().unwrap().to_string());
        let k = call_killed(
            &debug.config,
            "create_vm",
            create_vm_args(&sc, json!({"cpu": 1, "ram": 512, "disk": 512})),
            Duration::from_millis(rng.below(t_vm * 6 / 5)),
        );
        tally(k, Some(&mut vms), |r| r[0].as_str().unwrap().to_string());
        // VM and disk were returned, so the director deletes both afterwards
        let vm = cpi.ok("create_vm", create_vm_args(&sc, json!({"cpu": 1, "ram": 512})))[0].clone();
        let disk = cpi.ok("create_disk", json!([256, {}, vm]));
        let k = call_killed(
            &debug.config,
            "attach_disk",
            json!([vm, disk]),
            Duration::from_millis(rng.below(t_at * 6 / 5)),
        );
        tally(k, None, |_| String::new());
        cpi.ok("delete_vm", json!([vm]));
        cpi.ok("delete_disk", json!([disk]));
    }
    // a killed CPI's xorriso may still run for a moment, holding the marker it inherited; then the next
    // create reaps, and the director deletes what it was told about
    std::thread::sleep(Duration::from_secs(1));
    let reaper = debug.call("create_disk", json!([256, {}, null]));
    cpi.ok("delete_disk", json!([reaper.response["result"]]));
    for vm in &vms {
        cpi.ok("delete_vm", json!([vm]));
    }
    for s in scs.iter().chain([&sc.as_str().unwrap().to_string()]) {
        cpi.ok("delete_stemcell", json!([s]));
    }
    eprintln!(
        "vsphere fault injection: {} trials ({n} per method), {killed} killed mid-call, {finished} finished first, {late} killed between finishing and answering, {} s (untouched: create_stemcell {t_sc} ms, create_vm {t_vm} ms, attach_disk {t_at} ms)",
        3 * n,
        started.elapsed().as_secs()
    );
    assert!(killed > 0, "no call was killed: the kill points are too late");
    let diag = |names: &[String]| -> Vec<String> {
        names
            .iter()
            .flat_map(|n| logs.iter().filter(move |l| l.contains(n.rsplit('/').next().unwrap().get(..20).unwrap_or(n))))
            .cloned()
            .collect()
    };
    let inv = inventory(&sim);
    assert!(
        inv.is_empty(),
        "VMs or templates left: {inv:?}\nkiller logs:\n{:?}\nreaper:\n{}",
        diag(&inv),
        reaper.stderr
    );
    let ds = datastore(&sim);
    assert!(ds.is_empty(), "datastore files left: {ds:?}\nkiller logs:\n{:?}\nreaper:\n{}", diag(&ds), reaper.stderr);
    let work = state_files(&sim, "work");
    assert!(work.is_empty(), "scratch files left: {work:?}");
    // markers whose create never made anything stay for a grace period (vSphere may still be finishing the
    // dead process's task); none is locked and, as checked above, none has anything left behind
    let markers = state_files(&sim, "inflight");
    eprintln!("vsphere fault injection: {} unlocked in-flight markers of creates that left nothing (kept for the grace period)", markers.len());
    for m in &markers {
        let f = std::fs::OpenOptions::new().write(true).open(m).unwrap();
        assert!(f.try_lock().is_ok(), "{} is still locked", m.display());
        // after the grace period the next create drops them: age them by 11 minutes
        f.set_modified(std::time::SystemTime::now() - Duration::from_secs(660)).unwrap();
    }
    let d = cpi.ok("create_disk", json!([256, {}, null]));
    cpi.ok("delete_disk", json!([d]));
    assert_eq!(state_files(&sim, "inflight"), Vec::<PathBuf>::new(), "markers left after the grace period");
    assert_eq!(datastore(&sim), Vec::<String>::new());
}

#[test]
fn proof_vsphere_sixteen_parallel_create_attach_delete() {
    let Some(bin) = vcsim() else { return };
    let sim = Vcsim::start(&bin, "vpx", false);
    let tmp = tempfile::tempdir().unwrap();
    let image = stemcell_image(tmp.path(), false);
    let cpi = Arc::new(Cpi::with_config(&sim.config()));
    let sc = cpi.ok("create_stemcell", json!([image, {}]));
    let started = Instant::now();
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let (cpi, sc) = (cpi.clone(), sc.clone());
            std::thread::spawn(move || {
                let vm = cpi.ok("create_vm", create_vm_args(&sc, json!({"cpu": 1, "ram": 512, "disk": 512})))[0]
                    .as_str()
                    .unwrap()
                    .to_string();
                let disk = cpi.ok("create_disk", json!([256, {}, vm])).as_str().unwrap().to_string();
                cpi.ok("attach_disk", json!([vm, disk]));
                assert_eq!(cpi.ok("get_disks", json!([vm])), json!([disk]));
                (vm, disk)
            })
        })
        .collect();
    let made: Vec<(String, String)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut vms: Vec<String> = made.iter().map(|m| format!("DC0/vm/vmcpi_vms/{}", m.0)).collect();
    vms.sort();
    vms.dedup();
    assert_eq!(vms.len(), 16);
    let inv: Vec<String> = inventory(&sim).into_iter().filter(|n| n.contains("vmcpi_vms")).collect();
    assert_eq!(inv, vms, "the VM folder holds exactly the 16 VMs");
    let handles: Vec<_> = made
        .into_iter()
        .map(|(vm, disk)| {
            let cpi = cpi.clone();
            std::thread::spawn(move || {
                cpi.ok("delete_vm", json!([vm]));
                assert_eq!(cpi.ok("has_vm", json!([vm])), json!(false));
                // the persistent disk survives its VM
                assert_eq!(cpi.ok("has_disk", json!([disk])), json!(true));
                cpi.ok("delete_disk", json!([disk]));
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    eprintln!(
        "vsphere: 16 processes create_vm + create_disk + attach_disk + delete: {} ms",
        started.elapsed().as_millis()
    );
    cpi.ok("delete_stemcell", json!([sc]));
    assert_eq!(inventory(&sim), Vec::<String>::new());
    assert_eq!(datastore(&sim), Vec::<String>::new());
    assert_eq!(state_files(&sim, "work"), Vec::<PathBuf>::new());
}

#[test]
fn proof_vsphere_hostile_cids_and_metadata() {
    let Some(bin) = vcsim() else { return };
    let sim = Vcsim::start(&bin, "vpx", false);
    let tmp = tempfile::tempdir().unwrap();
    let image = stemcell_image(tmp.path(), false);
    let cpi = Cpi::with_config(&sim.config());
    let sc = cpi.ok("create_stemcell", json!([image, {}]));
    let vm = cpi.ok("create_vm", create_vm_args(&sc, json!({"cpu": 1, "ram": 512})))[0].as_str().unwrap().to_string();
    let disk = cpi.ok("create_disk", json!([256, {}, vm])).as_str().unwrap().to_string();
    let before = (inventory(&sim), datastore(&sim));
    let outside: Vec<PathBuf> = files_below(sim.dir.path())
        .into_iter()
        .filter(|p| !p.starts_with(sim.dir.path().join("ds")) && !p.starts_with(sim.dir.path().join("state")))
        .collect();
    let mut tried = 0;
    let mut accepted = Vec::new();
    for s in hostile_strings() {
        for (method, args) in hostile_calls(&s, &vm, &disk, &sc, |agent, sc, props| {
            let mut a = create_vm_args(sc, props);
            a[0] = json!(agent);
            if a[2].as_object().is_some_and(|o| o.is_empty()) {
                a[2] = json!({"cpu": 1, "ram": 512});
            }
            a
        }) {
            let r = cpi.call(method, args);
            assert_clean(method, &r);
            tried += 1;
            let res = &r.response["result"];
            match method {
                "create_vm" if res.is_array() => accepted.push(("delete_vm", res[0].clone())),
                "create_disk" if res.is_string() => accepted.push(("delete_disk", res.clone())),
                "create_stemcell" if res.is_string() => accepted.push(("delete_stemcell", res.clone())),
                _ => {}
            }
        }
    }
    for n in [json!(u64::MAX), json!(1u64 << 60), json!(-5), json!(1.5), json!(1e308)] {
        for (method, args) in [
            ("create_disk", json!([n, {}, null])),
            ("resize_disk", json!([disk, n])),
            ("update_disk", json!([disk, n, {}])),
            ("create_vm", create_vm_args(&sc, json!({"ram": n, "cpu": n, "disk": n}))),
            ("calculate_vm_cloud_properties", json!([{"ram": n, "cpu": n, "ephemeral_disk_size": n}])),
        ] {
            assert_clean(method, &cpi.call(method, args));
            tried += 1;
        }
    }
    eprintln!(
        "vsphere hostile: {tried} requests, {} creates accepted the value (as agent id or metadata)",
        accepted.len()
    );
    for (method, cid) in &accepted {
        cpi.ok(method, json!([cid]));
    }
    assert_no_side_effects();
    // the inventory and the datastore hold the test's own objects only, the VM is intact
    // (set_disk_metadata on the test's own disk writes its metadata file beside it)
    let ds_after: Vec<String> =
        datastore(&sim).into_iter().filter(|n| *n != format!("vmcpi_disks/{disk}.meta.json")).collect();
    assert_eq!((inventory(&sim), ds_after), before);
    let after: Vec<PathBuf> = files_below(sim.dir.path())
        .into_iter()
        .filter(|p| !p.starts_with(sim.dir.path().join("ds")) && !p.starts_with(sim.dir.path().join("state")))
        .collect();
    assert_eq!(after, outside, "files made outside the datastore and state dir");
    // XML specials and newlines in metadata go through escaped and come back as they were
    let tricky = "<&>]]></tag><evil/>\"'\nline2";
    cpi.ok("set_vm_metadata", json!([vm, {"k\"<": tricky, "name": "a/0"}]));
    let s = session(&sim, &sim.driver());
    let p = crate::vsphere::vm_props(&s, "DC0", Some("vmcpi_vms"), &vm, &["customValue"]).unwrap();
    let values: Vec<String> =
        p.get("customValue").unwrap().children.iter().filter_map(|c| c.str_at("value").map(str::to_string)).collect();
    assert!(values.iter().any(|v| v == tricky), "{values:?}");
    assert_eq!(cpi.ok("has_vm", json!([vm])), json!(true));
    cpi.ok("attach_disk", json!([vm, disk]));
    assert_eq!(cpi.ok("get_disks", json!([vm])), json!([disk]));
    cpi.ok("delete_vm", json!([vm]));
    cpi.ok("delete_disk", json!([disk]));
    cpi.ok("delete_stemcell", json!([sc]));
    assert_eq!(inventory(&sim), Vec::<String>::new());
    assert_eq!(datastore(&sim), Vec::<String>::new());
}

#[test]
fn proof_vsphere_secret_canaries_on_every_method_and_error_path() {
    let Some(bin) = vcsim() else { return };
    // the vCenter password is a canary too
    let vc_pw = "CANARY-vcenter-pw-3e4f";
    let sim = Vcsim::start_with(&bin, "vpx", false, vc_pw);
    let mut cfg = sim.config();
    cfg["log_level"] = json!("debug");
    cfg["agent"]["mbus"] = json!(format!("nats://nats:{}@10.0.0.6:4222", CANARIES[0]));
    cfg["agent"]["blobstore"] = json!({"provider": "dav", "options": {"endpoint": "http://10.0.0.6:25250", "user": "agent", "password": CANARIES[1]}});
    let cpi = Cpi::with_config(&cfg);
    let checked = |method: &str, args: Value| -> Value {
        let r = cpi.call_with(method, args, 2, canary_context());
        assert_clean(method, &r);
        for c in CANARIES.iter().chain([&vc_pw]) {
            assert!(!r.stdout.contains(c), "{method}: canary {c} in stdout: {}", r.stdout);
            assert!(!r.stderr.contains(c), "{method}: canary {c} in stderr: {}", r.stderr);
        }
        r.response
    };
    let tmp = tempfile::tempdir().unwrap();
    let image = stemcell_image(tmp.path(), false);
    let sc = checked("create_stemcell", json!([image, {"name": "s", "version": "1"}]))["result"].clone();
    let with_env = |props: Value| {
        let mut a = create_vm_args(&sc, props);
        a[5] = canary_env();
        a
    };
    let vm = checked("create_vm", with_env(json!({"cpu": 1, "ram": 512})))["result"][0].as_str().unwrap().to_string();
    let disk = checked("create_disk", json!([256, {}, vm]))["result"].as_str().unwrap().to_string();
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
        ("resize_disk", json!([disk, 512])),
        ("calculate_vm_cloud_properties", json!([{"ram": 1, "cpu": 1, "ephemeral_disk_size": 1}])),
        ("snapshot_disk", json!([disk, {}])),
        // error paths
        ("detach_disk", json!([vm, disk])),
        ("resize_disk", json!([disk, 8])),
        ("reboot_vm", json!(["vm-00000000000000000000"])),
        ("attach_disk", json!(["vm-00000000000000000000", disk])),
        ("delete_stemcell", json!(["sc-nope"])),
        ("create_vm", with_env(json!({"bogus": 1}))),
        ("create_vm", with_env(json!({"cpu": 1, "ram": u64::MAX}))),
        ("create_vm", {
            let mut a = with_env(json!({"cpu": 1, "ram": 512}));
            a[1] = json!("sc-00000000000000000000");
            a
        }),
        ("create_vm", {
            let mut a = with_env(json!({"cpu": 1, "ram": 512}));
            a[3]["default"]["cloud_properties"] = json!({"name": "no-such-portgroup"});
            a
        }),
        // a failure after the clone (no guest operations in the simulator), with a guest password
        (
            "create_vm",
            with_env(
                json!({"cpu": 1, "ram": 512, "bootstrap": {"script": "echo hi", "username": "vcap", "password": CANARIES[5], "max_wait_seconds": 2}}),
            ),
        ),
        ("create_disk", json!([CANARIES[0], {}, null])),
        ("create_stemcell", json!(["/nonexistent", {}])),
        ("no_such_method", json!([])),
        ("update_disk", json!([disk, 1024, {}])),
    ];
    for (m, a) in calls {
        checked(m, a);
    }
    // a wrong vCenter password that contains the canary
    let mut wrong = cfg.clone();
    wrong["driver"]["password"] = json!(format!("{vc_pw}-wrong"));
    let r = Cpi::with_config(&wrong).call_with("has_vm", json!([vm]), 2, canary_context());
    assert!(!r.stdout.contains(vc_pw) && !r.stderr.contains(vc_pw));
    // VM names, annotations and custom values hold no canary
    let s = session(&sim, &sim.driver());
    let p = crate::vsphere::vm_props(
        &s,
        "DC0",
        Some("vmcpi_vms"),
        &vm,
        &["name", "customValue", "config.annotation", "config.extraConfig"],
    )
    .unwrap();
    let text = format!("{p:?}");
    for c in CANARIES.iter().chain([&vc_pw]) {
        assert!(!text.contains(c), "canary {c} in the VM's properties");
    }
    for n in inventory(&sim) {
        assert!(!CANARIES.iter().any(|c| n.contains(c)), "{n}");
    }
    // files: only the settings medium (the env-*.iso the agent reads) holds the env and agent secrets
    let iso = std::fs::read_dir(sim.datastore_dir().join(&vm))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("env-"))
        .expect("settings ISO");
    let settings = std::fs::read(&iso).unwrap();
    let has = |c: &str| settings.windows(c.len()).any(|w| w == c.as_bytes());
    assert!(has(CANARIES[3]) && has(CANARIES[0]), "the agent gets its env and mbus");
    let found = files_with_canaries(&sim.datastore_dir(), &["env-*"]);
    assert!(found.is_empty(), "canaries outside the settings medium: {found:?}");
    let found = files_with_canaries(&sim.dir.path().join("state"), &[]);
    assert!(found.is_empty(), "canaries in the state dir: {found:?}");
    // the kept vSphere session holds a cookie, never the password
    let sessions: Vec<_> = std::fs::read_dir(sim.dir.path().join("state/sessions")).unwrap().flatten().collect();
    assert!(!sessions.is_empty(), "the session is kept in the state dir");
    for f in sessions {
        let data = std::fs::read(f.path()).unwrap();
        assert!(!data.windows(vc_pw.len()).any(|w| w == vc_pw.as_bytes()), "the password in {:?}", f.path());
    }
    checked("delete_vm", json!([vm]));
    checked("delete_disk", json!([disk]));
    checked("delete_stemcell", json!([sc]));
    assert_eq!(inventory(&sim), Vec::<String>::new());
}
