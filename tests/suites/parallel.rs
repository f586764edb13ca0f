//! Sixteen CPI processes at once on every peer, all from one stemcell: create_vm, then (all together)
//! set_vm_metadata defining the same new keys, create_disk, attach_disk, get_disks; then delete_vm and
//! delete_disk, again all at once. Every VM is distinct and there, every disk lands on its own VM, the
//! persistent disks survive their VMs, and nothing is left. Also the vmrun driver over SSH, each process
//! with a connection of its own (eight there: [`Peer::processes`]).
use crate::peer::vmware::Vmware;
use crate::peer::{finish, peer_tests, Peer};
use crate::util::Cpi;
use serde_json::json;
use std::sync::{Arc, Barrier};
use std::time::Instant;

peer_tests!(processes_at_once_create_attach_delete);

#[test]
fn vmware_ssh() {
    if let Some(p) = Vmware::over_ssh() {
        processes_at_once_create_attach_delete(&p)
    }
}

fn processes_at_once_create_attach_delete(peer: &dyn Peer) {
    let n = peer.processes();
    let cpi = Arc::new(Cpi::with_config(&peer.config()));
    let img = tempfile::tempdir().unwrap();
    let sc = cpi.ok("create_stemcell", json!([peer.stemcell_image(img.path()), {}]));
    let started = Instant::now();
    let together = Arc::new(Barrier::new(n));
    let disk_mib = peer.disk_mib();
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (cpi, together) = (cpi.clone(), together.clone());
            let args = peer.create_vm_args(&format!("agent-par-{i}"), &sc, peer.vm_props(true));
            std::thread::spawn(move || {
                let created = cpi.call("create_vm", args);
                // all define the same new metadata keys at once (vSphere: the custom attributes, where the others
                // get DuplicateName); a failed create still meets the others here, then fails
                together.wait();
                let vm = created.response["result"][0]
                    .as_str()
                    .unwrap_or_else(|| panic!("create_vm failed: {}\n{}", created.response, created.stderr))
                    .to_string();
                cpi.ok(
                    "set_vm_metadata",
                    json!([vm, {"deployment": "par", "name": format!("{vm}/0"), "index": "0", "created_at": "now"}]),
                );
                let disk = cpi.ok("create_disk", json!([disk_mib, {}, vm])).as_str().unwrap().to_string();
                cpi.ok("attach_disk", json!([vm, disk]));
                assert_eq!(cpi.ok("get_disks", json!([vm])), json!([disk]));
                (vm, disk)
            })
        })
        .collect();
    let made: Vec<(String, String)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut vms: Vec<String> = made.iter().map(|m| m.0.clone()).collect();
    vms.sort();
    vms.dedup();
    assert_eq!(vms.len(), n, "distinct VMs");
    assert_eq!(peer.vms(), vms, "the peer holds exactly the {n} VMs");
    assert_eq!(peer.running(), vms, "all of them running");
    for (vm, disk) in &made {
        assert_eq!(cpi.ok("has_vm", json!([vm])), json!(true));
        assert_eq!(cpi.ok("get_disks", json!([vm])), json!([disk]));
        // each VM's own definition (domain XML, .vmx, properties) names it: no create wrote another's
        assert!(peer.describe_vm(vm).contains(vm.as_str()), "{vm}: {}", peer.describe_vm(vm));
    }
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
        "{}: {n} processes create_vm + set_vm_metadata + create_disk + attach_disk + delete: {} ms",
        peer.name(),
        started.elapsed().as_millis()
    );
    assert_eq!(peer.vms(), Vec::<String>::new());
    finish(peer, &cpi, &sc, &[]);
}
