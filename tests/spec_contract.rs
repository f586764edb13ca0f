//! The contract in spec/: every request there parses, and replayed in order through the built binary against
//! libvirt, every response has the shape its file declares.
use crate::libvirt::{cpi, libvirt_available, openstack_image};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

fn specs() -> Vec<Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("spec");
    let mut all: Vec<Value> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect();
    all.sort_by_key(|s| s["order"].as_u64().unwrap());
    all
}

#[test]
fn spec_covers_every_method_and_parses() {
    let all = specs();
    let names: Vec<&str> = all.iter().map(|s| s["method"].as_str().unwrap()).collect();
    for m in vmcpi::rpc::method::METHODS {
        assert!(names.contains(m), "spec/ has no file for {m}");
    }
    for s in &all {
        let req = &s["request"];
        let args = req["arguments"].as_array().unwrap();
        vmcpi::rpc::method::Method::parse(req["method"].as_str().unwrap(), args)
            .unwrap_or_else(|e| panic!("{}: {e}", s["method"]));
        assert!(s["response"].get("log").is_some() && s["response"].get("result").is_some());
    }
}

fn substitute(v: &Value, vars: &HashMap<String, String>) -> Value {
    match v {
        Value::String(s) if s.starts_with("${") => {
            Value::String(vars.get(&s[2..s.len() - 1]).cloned().unwrap_or_else(|| panic!("unknown placeholder {s}")))
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| substitute(x, vars)).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), substitute(x, vars))).collect()),
        other => other.clone(),
    }
}

fn check_shape(method: &str, shape: &str, r: &Value) {
    if let Some(err_type) = shape.strip_prefix("error ") {
        assert_eq!(r["error"]["type"], err_type, "{method}: {r}");
        return;
    }
    assert!(r["error"].is_null(), "{method} failed: {r}");
    let res = &r["result"];
    let ok = match shape.split(' ').next().unwrap() {
        "null" => res.is_null(),
        "boolean" => res.is_boolean(),
        "string" => res.as_str().is_some_and(|s| !s.is_empty()),
        "object" => res.is_object(),
        "array" => res.is_array(),
        "disk" => (res.is_string() && res != "") || res.as_object().is_some_and(|o| !o.is_empty()),
        other => panic!("unknown shape {other}"),
    };
    assert!(ok, "{method}: result {res} is not {shape}");
    if method == "create_vm" {
        assert!(res[0].is_string() && res[1]["private"]["mac"].is_string(), "{res}");
    }
}

#[test]
fn spec_replays_against_libvirt() {
    if !libvirt_available() {
        return;
    }
    let cpi = cpi();
    let dir = tempfile::tempdir().unwrap();
    let mut vars = HashMap::new();
    vars.insert("image_path".to_string(), openstack_image(dir.path()).display().to_string());
    vars.insert("agent_id".to_string(), "spec-agent".to_string());
    for s in specs() {
        let method = s["method"].as_str().unwrap();
        let req = substitute(&s["request"], &vars);
        let r = cpi.call_with(method, req["arguments"].clone(), 2, req["context"].clone()).response;
        check_shape(method, s["result"].as_str().unwrap(), &r);
        let key = match method {
            "create_stemcell" => Some(("stemcell_cid", r["result"].clone())),
            "create_vm" => Some(("vm_cid", r["result"][0].clone())),
            "create_disk" => Some(("disk_cid", r["result"].clone())),
            "snapshot_disk" => Some(("snapshot_cid", r["result"].clone())),
            _ => None,
        };
        if let Some((k, v)) = key {
            vars.insert(k.to_string(), v.as_str().unwrap().to_string());
        }
    }
}
