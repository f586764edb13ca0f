//! Every CPI method on every peer, in the order BOSH calls them: a stemcell, a VM from it (its hardware, NICs
//! and agent settings as the hypervisor has them), metadata, a persistent disk attached (idempotently),
//! snapshotted, detached, resized, attached again when the VM is deleted (the disk survives), then everything
//! deleted twice (the second delete finds nothing and succeeds) and nothing left. What only one driver can
//! show is checked by its peer at each [`Step`]. Besides one test per peer: vSphere on a standalone ESXi
//! host, and the vmrun driver over SSH without ovftool and vmware-vdiskmanager.
use crate::peer::vmware::Vmware;
use crate::peer::vsphere::Vsphere;
use crate::peer::{disk_metadata, metadata, metadata_again, peer_tests, Peer, Step};
use crate::util::Cpi;
use serde_json::json;

peer_tests!(every_method);

#[test]
fn vsphere_esxi() {
    if let Some(p) = Vsphere::esxi() {
        every_method(&p)
    }
}

#[test]
fn vmware_ssh() {
    if let Some(p) = Vmware::over_ssh() {
        every_method(&p)
    }
}

const AGENT: &str = "agent-lifecycle";
const GUEST_PASSWORD: &str = "guest-secret-pw";
/// The persistent disk's size, MiB.
const DISK: u64 = 1024;

/// A CID of the same kind and length as `cid` that names nothing.
fn ghost(cid: &str) -> String {
    let (kind, id) = cid.split_once('-').unwrap();
    format!("{kind}-{}", "0".repeat(id.len()))
}

/// What the CPI made (on the peer) that names `cid`.
fn named(peer: &dyn Peer, cid: &str) -> Vec<String> {
    peer.objects().into_iter().filter(|o| o.contains(cid)).collect()
}

fn every_method(peer: &dyn Peer) {
    let x = peer.expected();
    let config = peer.config();
    let cpi = Cpi::with_config(&config);
    let info = cpi.ok("info", json!([]));
    assert_eq!(info["stemcell_formats"], json!(x.formats), "{info}");

    let dir = tempfile::tempdir().unwrap();
    let image = peer.lifecycle_stemcell(dir.path());
    let run = cpi.call("create_stemcell", json!([image, {"name": x.stemcell_name, "version": "1.0"}]));
    assert!(run.response["error"].is_null(), "{}\n{}", run.response, run.stderr);
    let sc = run.response["result"].as_str().unwrap().to_string();
    assert!(sc.starts_with("sc-"), "{sc}");
    peer.check(&cpi, Step::Stemcell { stemcell: &sc, log: &run.stderr });

    // create_vm: sizes, a NIC per network with the MAC in the answer, an ephemeral disk, the agent's settings
    let env = json!({"bosh": {"password": GUEST_PASSWORD, "group": "g"}});
    let created = cpi.ok("create_vm", json!([AGENT, sc, {"cpu": 2, "ram": 1024, "disk": 2048}, x.networks, [], env]));
    let vm = created[0].as_str().unwrap().to_string();
    let nets = &created[1];
    let mac = nets["default"]["mac"].as_str().unwrap_or_else(|| panic!("no MAC: {created}")).to_string();
    assert!(mac.starts_with(x.mac_prefix), "{created}");
    assert_eq!(nets["default"]["ip"], x.networks["default"]["ip"], "{created}");
    let hw = peer.hardware(&vm);
    assert_eq!((hw.cpus, hw.ram_mib), (2, 1024), "{hw:?}");
    assert!(hw.macs.contains(&mac), "{hw:?}");
    assert_eq!(peer.running(), vec![vm.clone()]);
    let settings = peer.settings(&vm);
    assert_eq!(settings["agent_id"], AGENT);
    assert_eq!(settings["networks"]["default"]["mac"], json!(mac));
    assert_eq!(settings["disks"]["system"], x.system_disk, "{settings}");
    assert!(settings["disks"]["ephemeral"].is_string(), "{settings}");
    assert_eq!(settings["disks"]["persistent"], json!({}));
    assert_eq!(settings["mbus"], config["agent"]["mbus"]);
    assert_eq!(settings["env"]["bosh"]["password"], GUEST_PASSWORD);
    peer.check(&cpi, Step::Vm { vm: &vm, networks: nets, settings: &settings });
    assert_eq!(cpi.ok("has_vm", json!([vm])), json!(true));
    assert_eq!(cpi.ok("has_vm", json!([ghost(&vm)])), json!(false));

    cpi.ok("set_vm_metadata", json!([vm, metadata()]));
    cpi.ok("set_vm_metadata", json!([vm, metadata_again()]));
    peer.check(&cpi, Step::Metadata { vm: &vm });
    let ram = 1023u64.div_ceil(x.ram_step) * x.ram_step;
    assert_eq!(
        cpi.ok("calculate_vm_cloud_properties", json!([{"ram": 1023, "cpu": 2, "ephemeral_disk_size": 4096}])),
        json!({"cpu": 2, "ram": ram, "disk": 4096})
    );

    // a persistent disk: attached (twice: the same hint), in the settings, snapshotted, detached, resized
    let disk = cpi.ok("create_disk", json!([DISK, {}, vm])).as_str().unwrap().to_string();
    assert!(disk.starts_with("disk-"), "{disk}");
    assert_eq!(cpi.ok("has_disk", json!([disk])), json!(true));
    assert_eq!(cpi.ok("has_disk", json!([ghost(&disk)])), json!(false));
    peer.check(&cpi, Step::Disk { disk: &disk, mib: DISK });
    let hint = cpi.ok("attach_disk", json!([vm, disk]));
    assert_eq!(hint, x.first_disk);
    assert_eq!(cpi.ok("attach_disk", json!([vm, disk])), hint, "attach is idempotent (create-env re-attaches)");
    assert_eq!(cpi.ok("get_disks", json!([vm])), json!([disk]));
    assert_eq!(peer.settings(&vm)["disks"]["persistent"], json!({disk.clone(): hint}));
    assert_eq!(peer.running(), vec![vm.clone()], "the VM runs again after attach");
    peer.check(&cpi, Step::Attached { vm: &vm, disk: &disk });
    cpi.ok("set_disk_metadata", json!([disk, disk_metadata()]));
    peer.check(&cpi, Step::DiskMetadata { disk: &disk });
    if x.snapshots {
        let snap = cpi.ok("snapshot_disk", json!([disk, {"deployment": "d"}])).as_str().unwrap().to_string();
        assert!(!named(peer, &snap).is_empty(), "{snap}: {:?}", peer.objects());
        cpi.ok("delete_snapshot", json!([snap]));
        assert_eq!(named(peer, &snap), Vec::<String>::new());
        cpi.ok("delete_snapshot", json!([snap]));
    } else {
        // the answer of every driver without disk snapshots: NotImplemented, which the director skips
        let e = cpi.err("snapshot_disk", json!([disk, {"deployment": "d"}]));
        assert_eq!(e["type"], "Bosh::Clouds::NotImplemented", "{e}");
    }
    cpi.ok("reboot_vm", json!([vm]));
    assert_eq!(peer.running(), vec![vm.clone()]);
    cpi.ok("detach_disk", json!([vm, disk]));
    assert_eq!(cpi.ok("get_disks", json!([vm])), json!([]));
    assert_eq!(peer.settings(&vm)["disks"]["persistent"], json!({}));
    assert_eq!(cpi.err("detach_disk", json!([vm, disk]))["type"], "Bosh::Clouds::DiskNotAttached");
    if x.grows_disks {
        cpi.ok("resize_disk", json!([disk, 2 * DISK]));
        peer.check(&cpi, Step::Grown { disk: &disk, mib: 2 * DISK });
    } else {
        let e = cpi.err("resize_disk", json!([disk, 2 * DISK]));
        assert_eq!(e["type"], "Bosh::Clouds::NotSupported", "{e}");
    }
    assert_eq!(cpi.err("resize_disk", json!([disk, DISK / 2]))["type"], "Bosh::Clouds::NotSupported");

    // delete_vm with the persistent disk attached: the disk survives, the VM's own files do not
    cpi.ok("attach_disk", json!([vm, disk]));
    peer.check(&cpi, Step::BeforeDeleteVm { vm: &vm, stemcell: &sc });
    cpi.ok("delete_vm", json!([vm]));
    assert_eq!(cpi.ok("has_vm", json!([vm])), json!(false));
    assert_eq!(cpi.ok("has_disk", json!([disk])), json!(true), "delete_vm keeps persistent disks");
    assert_eq!(named(peer, &vm), Vec::<String>::new(), "what the VM had is gone");
    assert_eq!(peer.running(), Vec::<String>::new());
    peer.check(&cpi, Step::VmDeleted { disk: &disk });
    cpi.ok("delete_vm", json!([vm]));

    cpi.ok("delete_disk", json!([disk]));
    assert_eq!(cpi.ok("has_disk", json!([disk])), json!(false));
    assert_eq!(named(peer, &disk), Vec::<String>::new());
    cpi.ok("delete_disk", json!([disk]));
    cpi.ok("delete_stemcell", json!([sc]));
    assert_eq!(named(peer, &sc), Vec::<String>::new());
    cpi.ok("delete_stemcell", json!([sc]));
    assert_eq!(peer.leftovers(), Vec::<String>::new(), "{}: left behind", peer.name());
    peer.check(&cpi, Step::Done);
}
