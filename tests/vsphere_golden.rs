//! Golden tests of the vSphere SOAP layer, without a server: every request the driver sends is encoded
//! and compared byte for byte with `tests/fixtures/vsphere/request_*.xml`, and responses captured from the
//! simulator (`response_*.xml`) are decoded into bodies and typed faults. Names and metadata carry XML
//! specials everywhere, so escaping is checked in every message. `VMCPI_BLESS=1` rewrites the request
//! fixtures (review the diff before committing).
use std::path::PathBuf;
use vmcpi::driver::vsphere::bootstrap::{self, Bootstrap};
use vmcpi::driver::vsphere::client::ServiceContent;
use vmcpi::driver::vsphere::methods::*;
use vmcpi::driver::vsphere::soap::{decode, Fault, FaultKind, MoRef, SoapError};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vsphere").join(name)
}

fn golden<R: Request>(name: &str, req: &R) {
    let got = String::from_utf8(req.encode()).unwrap();
    // every request must itself be well-formed and decode back to its operation
    let body = decode(200, got.as_bytes()).unwrap_or_else(|e| panic!("{name} is not well-formed: {e}\n{got}"));
    assert_eq!(body.name, R::NAME);
    let path = fixture(&format!("request_{name}.xml"));
    if std::env::var("VMCPI_BLESS").is_ok_and(|v| v == "1") {
        // one element per line keeps fixture diffs readable
        std::fs::write(&path, got.replace("><", ">\n<") + "\n").unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with VMCPI_BLESS=1 to create it)", path.display()));
    assert_eq!(got, want.trim_end().replace(">\n<", "><"), "request {name} differs from {}", path.display());
}

fn m(kind: &str, v: &str) -> MoRef {
    MoRef::new(kind, v)
}

const NASTY: &str = "a&b <c> \"d\" 'e'";

fn vm() -> MoRef {
    m("VirtualMachine", "vm-42")
}

fn auth() -> GuestAuth {
    GuestAuth { user: "vcap".into(), password: "p&ss<word>".into() }
}

#[test]
fn session_and_property_requests() {
    golden("RetrieveServiceContent", &RetrieveServiceContent { this: m("ServiceInstance", "ServiceInstance") });
    golden(
        "Login",
        &Login {
            this: m("SessionManager", "SessionManager"),
            user: "admin@vsphere.local".into(),
            password: "p<&>\"'w".into(),
        },
    );
    golden("Logout", &Logout { this: m("SessionManager", "SessionManager") });
    golden(
        "FindByInventoryPath",
        &FindByInventoryPath { this: m("SearchIndex", "SearchIndex"), path: format!("DC0/vm/{NASTY}") },
    );
    golden(
        "RetrievePropertiesEx",
        &RetrievePropertiesEx {
            this: m("PropertyCollector", "propertyCollector"),
            objects: vec![
                (m("Datastore", "/tmp/ds/local@folder-5"), vec!["name".into(), "summary.freeSpace".into()]),
                (m("Datastore", "datastore-2"), vec!["name".into(), "summary.accessible".into()]),
                (vm(), vec!["config.hardware.device".into()]),
            ],
            follow: vec![],
        },
    );
    // a folder's children and each compute resource's pool, and a datacenter's datastores, in one request
    golden(
        "RetrievePropertiesEx_follow",
        &RetrievePropertiesEx {
            this: m("PropertyCollector", "propertyCollector"),
            objects: vec![(m("Folder", "group-h4"), vec!["childEntity".into()])],
            follow: vec![
                Follow {
                    from: m("Folder", "group-h4"),
                    path: "childEntity".into(),
                    then: None,
                    kind: "ComputeResource".into(),
                    paths: vec!["resourcePool".into()],
                },
                Follow {
                    from: m("Datacenter", "datacenter-2"),
                    path: "hostFolder".into(),
                    then: Some(("Folder".into(), "childEntity".into())),
                    kind: "ComputeResource".into(),
                    paths: vec!["resourcePool".into()],
                },
                Follow {
                    from: m("Datacenter", "datacenter-2"),
                    path: "datastore".into(),
                    then: None,
                    kind: "Datastore".into(),
                    paths: vec!["name".into(), "summary.freeSpace".into()],
                },
            ],
        },
    );
    golden(
        "CreateFilter",
        &CreateFilter {
            this: m("PropertyCollector", "propertyCollector"),
            obj: m("Task", "task-7"),
            paths: vec!["info.state".into(), "info.error".into(), "info.result".into()],
        },
    );
    golden(
        "WaitForUpdatesEx",
        &WaitForUpdatesEx {
            this: m("PropertyCollector", "propertyCollector"),
            version: "3".into(),
            max_wait_seconds: 60,
        },
    );
    golden(
        "ContinueRetrievePropertiesEx",
        &ContinueRetrievePropertiesEx { this: m("PropertyCollector", "propertyCollector"), token: "page&2".into() },
    );
    golden("DestroyPropertyFilter", &DestroyPropertyFilter { this: m("PropertyFilter", "session[x]f") });
}

#[test]
fn inventory_and_file_requests() {
    golden("CreateFolder", &CreateFolder { this: m("Folder", "group-v3"), name: NASTY.into() });
    golden(
        "MakeDirectory",
        &MakeDirectory {
            this: m("FileManager", "FileManager"),
            name: "[ds & 1] vmcpi_disks".into(),
            datacenter: m("Datacenter", "datacenter-2"),
        },
    );
    golden(
        "DeleteDatastoreFile",
        &DeleteDatastoreFile {
            this: m("FileManager", "FileManager"),
            name: "[LocalDS_0] vm-1".into(),
            datacenter: m("Datacenter", "datacenter-2"),
        },
    );
    golden(
        "CreateVirtualDisk",
        &CreateVirtualDisk {
            this: m("VirtualDiskManager", "virtualDiskManager"),
            name: "[LocalDS_0] vmcpi_disks/disk-1.vmdk".into(),
            datacenter: m("Datacenter", "datacenter-2"),
            disk_type: "thin".into(),
            capacity_kb: 2 << 20,
        },
    );
    golden(
        "DeleteVirtualDisk",
        &DeleteVirtualDisk {
            this: m("VirtualDiskManager", "virtualDiskManager"),
            name: "[LocalDS_0] vmcpi_disks/disk-1.vmdk".into(),
            datacenter: m("Datacenter", "datacenter-2"),
        },
    );
    golden(
        "ExtendVirtualDisk",
        &ExtendVirtualDisk {
            this: m("VirtualDiskManager", "virtualDiskManager"),
            name: "[LocalDS_0] vmcpi_disks/disk-1.vmdk".into(),
            datacenter: m("Datacenter", "datacenter-2"),
            new_capacity_kb: 4 << 20,
        },
    );
    golden(
        "AddCustomFieldDef",
        &AddCustomFieldDef { this: m("CustomFieldsManager", "CustomFieldsManager"), name: NASTY.into() },
    );
    golden(
        "SetField",
        &SetField {
            this: m("CustomFieldsManager", "CustomFieldsManager"),
            entity: vm(),
            key: 101,
            value: NASTY.into(),
        },
    );
}

#[test]
fn vm_requests() {
    golden("PowerOnVM_Task", &PowerOnVm { this: vm() });
    golden("PowerOffVM_Task", &PowerOffVm { this: vm() });
    golden("ResetVM_Task", &ResetVm { this: vm() });
    golden("RebootGuest", &RebootGuest { this: vm() });
    golden("Destroy_Task", &Destroy { this: vm() });
    golden("CreateSnapshot_Task", &CreateSnapshot { this: vm(), name: "initial".into() });
    // the linked clone: child disks on the stemcell snapshot
    golden(
        "CloneVM_Task",
        &CloneVm {
            this: m("VirtualMachine", "vm-sc"),
            folder: m("Folder", "group-v9"),
            name: "vm-0123456789abcdef0123".into(),
            pool: m("ResourcePool", "resgroup-26"),
            datastore: Some(m("Datastore", "datastore-2")),
            snapshot: Some(m("VirtualMachineSnapshot", "snapshot-12")),
        },
    );
    // the ESXi path: CreateVM with a root disk that is a child of the stemcell's disk
    let config = VmConfigSpec {
        name: Some("vm-0123456789abcdef0123".into()),
        guest_id: Some("ubuntu64Guest".into()),
        vm_path_name: Some("[LocalDS_0] vm-0123456789abcdef0123/vm-0123456789abcdef0123.vmx".into()),
        firmware: Some("efi".into()),
        device_change: vec![
            DeviceChange::add(Device::ScsiController { key: -100, bus: 0 }),
            DeviceChange::create(Device::Disk {
                key: -101,
                controller_key: -100,
                unit: 0,
                capacity_kb: 0,
                file_name: "[LocalDS_0] vm-0123456789abcdef0123/vm-0123456789abcdef0123.vmdk".into(),
                parent: Some("[LocalDS_0] sc-0123456789abcdef0123/disk-0.vmdk".into()),
            }),
        ],
        ..Default::default()
    };
    golden(
        "CreateVM_Task",
        &CreateVm { this: m("Folder", "ha-folder-vm"), config, pool: m("ResourcePool", "ha-root-pool") },
    );
    // the one reconfigure of create_vm: size, NICs (standard and distributed), ephemeral disk, settings CD-ROM
    let spec = VmConfigSpec {
        num_cpus: Some(2),
        memory_mb: Some(4096),
        device_change: vec![
            DeviceChange { operation: Operation::Remove, create_file: false, device: Device::Existing(old_nic()) },
            DeviceChange::add(Device::Nic {
                key: -200,
                backing: NicBacking::Standard { name: "VM Network & <lab>".into(), network: m("Network", "network-7") },
                mac: "00:50:56:01:02:03".into(),
            }),
            DeviceChange::add(Device::Nic {
                key: -201,
                backing: NicBacking::Distributed {
                    switch_uuid: "fe 2d 01".into(),
                    portgroup_key: "dvportgroup-9".into(),
                },
                mac: "00:50:56:01:02:04".into(),
            }),
            DeviceChange::create(Device::Disk {
                key: -300,
                controller_key: 1000,
                unit: 1,
                capacity_kb: 3 << 20,
                file_name: "[LocalDS_0] vm-1/vm-1-ephemeral.vmdk".into(),
                parent: None,
            }),
            DeviceChange {
                operation: Operation::Edit,
                create_file: false,
                device: Device::Cdrom {
                    key: 3002,
                    controller_key: 201,
                    unit: 0,
                    iso: "[LocalDS_0] vm-1/env-0a1b2c3d.iso".into(),
                },
            },
        ],
        extra_config: vec![("vmcpi.note".into(), NASTY.into())],
        ..Default::default()
    };
    golden("ReconfigVM_Task", &ReconfigVm { this: vm(), spec });
    // attach: an existing disk file on the root disk's controller, no file operation
    let attach = VmConfigSpec {
        device_change: vec![DeviceChange::add(Device::Disk {
            key: -1,
            controller_key: 1000,
            unit: 2,
            capacity_kb: 0,
            file_name: "[LocalDS_0] vmcpi_disks/disk-1.vmdk".into(),
            parent: None,
        })],
        annotation: Some("director: d & <co>\n".into()),
        ..Default::default()
    };
    golden("ReconfigVM_Task_attach", &ReconfigVm { this: vm(), spec: attach });
}

fn old_nic() -> vmcpi::driver::vsphere::soap::Node {
    let doc = br#"<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><e:Body><R xmlns="urn:vim25"><device xsi:type="VirtualE1000"><key>4000</key><backing xsi:type="VirtualEthernetCardNetworkBackingInfo"><deviceName>VM Network</deviceName><network type="Network">network-7</network></backing><macAddress>00:0c:29:aa:bb:cc</macAddress></device></R></e:Body></e:Envelope>"#;
    decode(200, doc).unwrap().children[0].clone()
}

#[test]
fn import_requests() {
    let ovf = vmcpi::driver::vsphere::import::generated_ovf("image-disk1.vmdk", 200_512, 10 << 20, true);
    golden(
        "CreateImportSpec",
        &CreateImportSpec {
            this: m("OvfManager", "OvfManager"),
            ovf_descriptor: ovf,
            resource_pool: m("ResourcePool", "resgroup-26"),
            datastore: m("Datastore", "/tmp/ds/local@folder-5"),
            entity_name: "sc-0123456789abcdef0123".into(),
        },
    );
    // the spec CreateImportSpec returned goes back to ImportVApp exactly as received (xsi:types kept)
    let resp = decode(200, &std::fs::read(fixture("response_create_import_spec.xml")).unwrap()).unwrap();
    let spec = resp.at("returnval/importSpec").unwrap().clone();
    assert_eq!(spec.kind(), "VirtualMachineImportSpec");
    assert_eq!(resp.str_at("returnval/fileItem/path"), Some("image-disk1.vmdk"));
    golden(
        "ImportVApp",
        &ImportVApp { this: m("ResourcePool", "resgroup-26"), spec, folder: Some(m("Folder", "group-v9")), host: None },
    );
    golden("HttpNfcLeaseProgress", &HttpNfcLeaseProgress { this: m("HttpNfcLease", "lease-1"), percent: 45 });
    golden("HttpNfcLeaseComplete", &HttpNfcLeaseComplete { this: m("HttpNfcLease", "lease-1") });
    golden(
        "HttpNfcLeaseAbort",
        &HttpNfcLeaseAbort {
            this: m("HttpNfcLease", "lease-1"),
            reason: "uploading image-disk1.vmdk failed: <timeout> & more".into(),
        },
    );
}

/// Guest operations: the simulator has none, so these messages are the proof of the bootstrap.
#[test]
fn guest_operation_requests() {
    let b = Bootstrap {
        script: "echo 'ready' > /tmp/x && touch \"/tmp/<y>\"".into(),
        interpreter: "/bin/bash".into(),
        username: Some("vcap".into()),
        password: Some("p&ss<word>".into()),
        ready_process: Some("bosh-agent".into()),
        min_wait_seconds: 0,
        max_wait_seconds: 60,
        script_path: None,
    };
    let pm = m("GuestProcessManager", "guestOperationsProcessManager");
    golden("StartProgramInGuest", &bootstrap::start_request(&pm, &vm(), &b));
    golden("ListProcessesInGuest", &bootstrap::list_request(&pm, &vm(), &b, vec![]));
    golden("ListProcessesInGuest_pid", &bootstrap::list_request(&pm, &vm(), &b, vec![4242]));
    let _ = auth();
    assert!(
        !format!("{:?}", bootstrap::start_request(&pm, &vm(), &b)).contains("p&ss"),
        "Debug must not show the guest password"
    );
    assert!(!format!("{:?}", Login { this: pm.clone(), user: "u".into(), password: "hunter22".into() })
        .contains("hunter22"));
}

fn response(name: &str, status: u16) -> Result<vmcpi::driver::vsphere::soap::Node, SoapError> {
    decode(status, &std::fs::read(fixture(name)).unwrap())
}

#[test]
fn decodes_captured_responses() {
    let sc = response("response_service_content.xml", 200).unwrap();
    let sc = ServiceContent::from_node(sc.child("returnval").unwrap()).unwrap();
    assert!(sc.is_vcenter());
    assert_eq!(sc.property_collector, m("PropertyCollector", "propertyCollector"));
    assert!(sc.virtual_disk_manager.is_some() && sc.ovf_manager.is_some() && sc.custom_fields_manager.is_some());

    match response("response_login_invalid.xml", 500) {
        Err(SoapError::Fault(f)) => assert_eq!(f.kind, FaultKind::InvalidLogin),
        other => panic!("{other:?}"),
    }
    match response("response_object_not_found.xml", 500) {
        Err(SoapError::Fault(f)) => assert_eq!(f.kind, FaultKind::ManagedObjectNotFound),
        other => panic!("{other:?}"),
    }
    let dc = response("response_find_datacenter.xml", 200).unwrap();
    assert_eq!(dc.moref_at("returnval").map(|r| r.kind), Some("Datacenter".to_string()));
    assert!(
        response("response_find_nothing.xml", 200).unwrap().child("returnval").is_none(),
        "a missing path is an empty reply"
    );

    // without a session RetrievePropertiesEx answers 200 with the fault in missingSet
    let r = response("response_retrieve_not_authenticated.xml", 200).unwrap();
    let f = r.at("returnval/objects/missingSet/fault").map(Fault::from_localized).unwrap();
    assert_eq!(f.kind, FaultKind::NotAuthenticated);

    // a task that failed, seen through WaitForUpdatesEx; the fault type comes from a locally declared prefix
    let w = response("response_wait_task_error.xml", 200).unwrap();
    let os = w.at("returnval/filterSet/objectSet").unwrap();
    let state = os.children_named("changeSet").find(|c| c.str_at("name") == Some("info.state")).unwrap();
    assert_eq!(state.str_at("val"), Some("error"));
    let err = os.children_named("changeSet").find(|c| c.str_at("name") == Some("info.error")).unwrap();
    assert_eq!(Fault::from_localized(err.child("val").unwrap()).kind, FaultKind::FileNotFound);
}
