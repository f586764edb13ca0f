//! spec/ replayed against the vSphere driver on the simulator (vCenter model): every request file in its
//! `order`, each response checked against the declared result shape, except where this driver answers
//! differently on purpose (listed in `DEVIATIONS`, with the reason).
use crate::util::{require_peer, Cpi};
use crate::vsphere_sim::{stemcell_image, vcsim_binary, Vcsim};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// Methods whose answer here is an error by design.
const DEVIATIONS: &[(&str, &str, &str)] = &[
    (
        "snapshot_disk",
        "Bosh::Clouds::NotImplemented",
        "vSphere snapshots VMs, not detached disks (NotImplemented, as in vmrun: the director skips it)",
    ),
    ("delete_snapshot", "Bosh::Clouds::NotImplemented", "no disk snapshots are ever made"),
    ("resize_disk", "Bosh::Clouds::NotSupported", "the simulator has no ExtendVirtualDisk_Task (golden-tested)"),
];

fn substitute(v: &Value, vars: &HashMap<String, String>) -> Value {
    match v {
        Value::String(s) if s.starts_with("${") && s.ends_with('}') => {
            Value::String(vars.get(&s[2..s.len() - 1]).cloned().unwrap_or_else(|| panic!("unknown placeholder {s}")))
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| substitute(x, vars)).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), substitute(x, vars))).collect()),
        other => other.clone(),
    }
}

fn shape_ok(shape: &str, res: &Value) -> bool {
    match shape.split(' ').next().unwrap_or_default() {
        "null" => res.is_null(),
        "boolean" => res.is_boolean(),
        "string" => res.as_str().is_some_and(|s| !s.is_empty()),
        "object" => res.is_object(),
        "array" => res.is_array(),
        "disk" => res.as_str().is_some_and(|s| !s.is_empty()) || res.as_object().is_some_and(|o| !o.is_empty()),
        other => panic!("unknown shape {other}"),
    }
}

#[test]
fn vsphere_spec_replay() {
    let bin = vcsim_binary();
    if !require_peer("the vSphere simulator", bin.is_some()) {
        return;
    }
    let sim = Vcsim::start(&bin.unwrap_or_default(), "vpx", false);
    let cpi = Cpi::with_config(&sim.config());
    let dir = tempfile::tempdir().unwrap();
    let mut vars = HashMap::new();
    vars.insert("image_path".to_string(), stemcell_image(dir.path(), false).display().to_string());
    vars.insert("agent_id".to_string(), "spec-agent".to_string());
    vars.insert("snapshot_cid".to_string(), "snap-none".to_string());
    let spec_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("spec");
    let mut specs: Vec<Value> = std::fs::read_dir(&spec_dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap())
        .collect();
    specs.sort_by_key(|s| s["order"].as_u64().unwrap_or(0));
    assert!(specs.len() >= 20, "spec/ has {} files", specs.len());
    for s in specs {
        let method = s["method"].as_str().unwrap();
        let req = substitute(&s["request"], &vars);
        let r = cpi.call_with(method, req["arguments"].clone(), 2, req["context"].clone()).response;
        let shape = s["result"].as_str().unwrap();
        match DEVIATIONS.iter().find(|(m, _, _)| *m == method) {
            Some((_, err, why)) => assert_eq!(r["error"]["type"], *err, "{method} ({why}): {r}"),
            None => match shape.strip_prefix("error ") {
                Some(err) => assert_eq!(r["error"]["type"], err, "{method}: {r}"),
                None => {
                    assert!(r["error"].is_null(), "{method} failed: {r}");
                    assert!(shape_ok(shape, &r["result"]), "{method}: result {} is not {shape}", r["result"]);
                }
            },
        }
        if method == "create_vm" {
            let nets = r["result"][1].as_object().unwrap();
            assert!(nets.values().all(|n| n["mac"].is_string()), "{r}");
        }
        let key = match method {
            "create_stemcell" => Some(("stemcell_cid", r["result"].clone())),
            "create_vm" => Some(("vm_cid", r["result"][0].clone())),
            "create_disk" => Some(("disk_cid", r["result"].clone())),
            _ => None,
        };
        if let Some((k, v)) = key {
            vars.insert(k.to_string(), v.as_str().unwrap().to_string());
        }
    }
}
