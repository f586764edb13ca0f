//! Unit tests of the driver: its pure parts (config, cloud properties, names), and its command logic against
//! the in-process libvirt daemon ([`crate::cpi::libvirt_rpc::fake`]): which calls are made, in which order, on
//! which objects, and how libvirt's answers and errors are read, with no libvirtd.
use super::*;

#[test]
fn stemcell_cids() {
    assert_eq!(
        parse_stemcell_cid("sc-0123456789abcdef-os"),
        Some(StemcellKind { family: Family::OpenStack, efi: false, format: "qcow2" })
    );
    assert_eq!(parse_stemcell_cid("sc-0123456789abcdef-osraw").unwrap().format, "raw");
    assert!(parse_stemcell_cid("sc-0123456789abcdef-vsefi").unwrap().efi);
    // the CIDs of earlier versions (a qcow2 volume) and of this one (raw) for vSphere stemcells
    assert_eq!(parse_stemcell_cid("sc-0123456789abcdef-vs").unwrap().format, "qcow2");
    assert_eq!(
        parse_stemcell_cid("sc-0123456789abcdef-vsraw"),
        Some(StemcellKind { family: Family::Vsphere, efi: false, format: "raw" })
    );
    assert_eq!(
        parse_stemcell_cid("sc-0123456789abcdef-vsefiraw"),
        Some(StemcellKind { family: Family::Vsphere, efi: true, format: "raw" })
    );
    for tag in STEMCELL_TAGS {
        let k = parse_stemcell_cid(&format!("sc-0123456789abcdef-{tag}")).unwrap();
        assert_eq!(stemcell_tag(k.family, k.efi, k.format), *tag, "every tag is made and read back");
    }
    assert_eq!(parse_stemcell_cid("sc-0123456789abcdef-xx"), None);
    assert_eq!(parse_stemcell_cid("sc-../../etc-os"), None);
    assert_eq!(parse_stemcell_cid("sc-0123456789ABCDEF-os"), None);
}

#[test]
fn ours() {
    assert!(cid::ours("disk-0123456789abcde", "disk-", 15));
    assert!(!cid::ours("disk-0123456789abcd/", "disk-", 15));
    assert!(!cid::ours("disk-../0123456789ab", "disk-", 15));
    assert_eq!(format!("disk-{}", random_hex(15)).len(), 20);
}

#[test]
fn hints() {
    assert_eq!(hint_for(Family::Vsphere, 2), json!("2"));
    assert_eq!(hint_for(Family::OpenStack, 3), json!({"path": "/dev/sdd"}));
}

#[test]
fn config_validation() {
    let c: LibvirtConfig = serde_json::from_value(json!({})).unwrap();
    assert_eq!((c.uri.as_str(), c.pool.as_str(), c.domain_type.as_str()), ("qemu:///system", "default", "kvm"));
    c.validate().unwrap();
    assert!(c.deprecated_keys().is_empty());
    let c: LibvirtConfig = serde_json::from_value(json!({"domain_type": "xen"})).unwrap();
    assert!(c.validate().is_err());
    let c: LibvirtConfig = serde_json::from_value(json!({"state_dir": "relative"})).unwrap();
    assert!(c.validate().unwrap_err().contains("absolute"));
}

/// Relative file parameters of the URI are the config file's neighbours.
#[test]
fn relative_uri_files_are_relative_to_the_config_file() {
    use crate::cpi::libvirt_rpc::uri::{Transport, Uri};
    let base = Path::new("/var/vcap/jobs/vmcpi_cpi/config");
    let mut u = Uri::parse("qemu+ssh://cpi@h/system?keyfile=ssh_key&known_hosts=/etc/kh").unwrap();
    connection::resolve(&mut u, base);
    let Transport::Ssh { keyfile, known_hosts, .. } = &u.transport else { panic!("{u:?}") };
    assert_eq!((keyfile.as_path(), known_hosts.as_path()), (base.join("ssh_key").as_path(), Path::new("/etc/kh")));
    let mut u = Uri::parse("qemu+tls://h/system?pkipath=pki").unwrap();
    connection::resolve(&mut u, base);
    let Transport::Tls { pki, .. } = &u.transport else { panic!("{u:?}") };
    assert_eq!(pki.cacert, base.join("pki/cacert.pem"));
}

/// The driver's command logic against the in-process daemon.
mod with_fake_daemon {
    use super::*;
    use crate::cpi::error::ErrorKind;
    use crate::cpi::libvirt_rpc::code;
    use crate::cpi::libvirt_rpc::fake::{Dom, FakeDaemon, Volume};

    const POOL: &str = "p";

    fn driver(fake: &FakeDaemon, state: &Path) -> Libvirt {
        let cfg: LibvirtConfig =
            serde_json::from_value(json!({"pool": POOL, "state_dir": state, "domain_type": "qemu"})).unwrap();
        let f = fake.clone();
        let conn = Connection::with("qemu:///system", Box::new(move || f.client()));
        Libvirt::with_connection(cfg, AgentOptions::default(), conn)
    }

    fn daemon() -> FakeDaemon {
        FakeDaemon::new().with_pool(POOL)
    }

    fn add_vol(fake: &FakeDaemon, name: &str, format: &str) {
        let v = Volume { format: format.into(), capacity: 1 << 20, ..Default::default() };
        fake.model().pools.get_mut(POOL).unwrap().volumes.insert(name.into(), v);
    }

    fn add_domain(fake: &FakeDaemon, name: &str, running: bool) {
        let xml = format!("<domain type=\"qemu\"><name>{name}</name><devices></devices></domain>");
        let d = Dom { xml, id: running.then_some(7), ..Default::default() };
        fake.model().domains.insert(name.into(), d);
    }

    fn calls(fake: &FakeDaemon) -> Vec<String> {
        fake.take_calls()
    }

    #[test]
    fn delete_vm_stops_undefines_and_removes_its_volumes_tolerating_what_is_gone() {
        let state = tempfile::tempdir().unwrap();
        let fake = daemon();
        let vm = VmCid::generate();
        let v = vm.as_str();
        add_domain(&fake, v, false);
        add_vol(&fake, &format!("{v}-root"), "qcow2");
        add_vol(&fake, &format!("{v}-settings.iso"), "raw");
        add_vol(&fake, "disk-0123456789abcde", "qcow2");
        driver(&fake, state.path()).delete_vm(&vm).unwrap();
        assert_eq!(
            calls(&fake),
            [
                format!("DOMAIN_LOOKUP_BY_NAME {v}"),
                format!("DOMAIN_DESTROY_FLAGS {v}"),
                format!("DOMAIN_UNDEFINE_FLAGS {v}"),
                format!("STORAGE_POOL_LOOKUP_BY_NAME {POOL}"),
                format!("STORAGE_VOL_LOOKUP_BY_NAME {v}-root"),
                format!("STORAGE_VOL_DELETE {v}-root"),
                format!("STORAGE_VOL_LOOKUP_BY_NAME {v}-ephemeral"),
                format!("STORAGE_VOL_LOOKUP_BY_NAME {v}-settings.iso"),
                format!("STORAGE_VOL_DELETE {v}-settings.iso"),
                "CONNECT_CLOSE".to_string(),
            ]
        );
        assert!(fake.domains().is_empty());
        assert_eq!(fake.volumes(POOL), ["disk-0123456789abcde"], "the persistent disk stays");
        // again: nothing left, still a success
        driver(&fake, state.path()).delete_vm(&vm).unwrap();
    }

    #[test]
    fn a_failing_destroy_stops_delete_vm_and_says_what_libvirt_said() {
        let state = tempfile::tempdir().unwrap();
        let fake = daemon();
        let vm = VmCid::generate();
        add_domain(&fake, vm.as_str(), true);
        add_vol(&fake, &format!("{vm}-root"), "qcow2");
        fake.fail("DOMAIN_DESTROY_FLAGS", Some(vm.as_str()), code::INTERNAL_ERROR, "QEMU does not answer", 1);
        let e = driver(&fake, state.path()).delete_vm(&vm).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("QEMU does not answer") && text.contains("libvirt error 1"), "{text}");
        assert!(text.contains(&format!("cannot stop {vm}")), "{text}");
        assert!(e.retryable(), "an internal error may pass");
        assert_eq!(fake.domains(), [vm.to_string()], "nothing was undefined");
        assert_eq!(fake.volumes(POOL), [format!("{vm}-root")], "nothing was deleted");
    }

    #[test]
    fn cids_that_are_not_ours_reach_no_connection() {
        let state = tempfile::tempdir().unwrap();
        let fake = daemon();
        let d = driver(&fake, state.path());
        let vm = VmCid::new("i-0123456789").unwrap();
        assert!(!d.has_vm(&vm).unwrap());
        assert_eq!(d.delete_vm(&vm).unwrap_err().kind(), ErrorKind::VmNotFound);
        assert_eq!(d.reboot_vm(&vm).unwrap_err().kind(), ErrorKind::VmNotFound);
        let disk = DiskCid::new("vol-1").unwrap();
        assert_eq!(d.delete_disk(&disk).unwrap_err().kind(), ErrorKind::DiskNotFound);
        assert!(!d.has_disk(&disk).unwrap());
        let sc = StemcellCid::new("ami-1").unwrap();
        assert_eq!(d.delete_stemcell(&sc).unwrap_err().kind(), ErrorKind::StemcellNotFound);
        assert_eq!(d.connections(), 0);
        drop(d);
        assert_eq!(fake.model().connections, 0, "no connection was made");
        assert!(calls(&fake).is_empty());
    }

    #[test]
    fn one_connection_per_call_closed_at_the_end() {
        let state = tempfile::tempdir().unwrap();
        let fake = daemon();
        let d = driver(&fake, state.path());
        let vm = VmCid::generate();
        assert!(!d.has_vm(&vm).unwrap());
        add_domain(&fake, vm.as_str(), true);
        assert!(d.has_vm(&vm).unwrap());
        assert!(!d.has_disk(&DiskCid::generate(DISK_HEX)).unwrap());
        assert_eq!(d.connections(), 1);
        assert_eq!(fake.model().closed, 0);
        drop(d);
        let m = fake.model();
        assert_eq!((m.connections, m.closed), (1, 1), "one connection, closed when the call ends");
    }

    #[test]
    fn not_found_codes_become_the_bosh_errors() {
        let state = tempfile::tempdir().unwrap();
        let fake = daemon();
        let d = driver(&fake, state.path());
        let vm = VmCid::generate();
        let disk = DiskCid::generate(DISK_HEX);
        assert_eq!(d.reboot_vm(&vm).unwrap_err().kind(), ErrorKind::VmNotFound);
        assert_eq!(d.get_disks(&vm).unwrap_err().kind(), ErrorKind::VmNotFound);
        assert_eq!(d.set_vm_metadata(&vm, &Metadata::new()).unwrap_err().kind(), ErrorKind::VmNotFound);
        assert_eq!(d.resize_disk(&disk, 10).unwrap_err().kind(), ErrorKind::DiskNotFound);
        assert_eq!(d.snapshot_disk(&disk, &Metadata::new()).unwrap_err().kind(), ErrorKind::DiskNotFound);
        assert_eq!(d.set_disk_metadata(&disk, &Metadata::new()).unwrap_err().kind(), ErrorKind::DiskNotFound);
        // a domain that goes between the lookup and the reset (libvirt's NO_DOMAIN) is VmNotFound too
        add_domain(&fake, vm.as_str(), true);
        fake.fail("DOMAIN_RESET", None, code::NO_DOMAIN, "Domain not found: no domain with matching uuid", 1);
        assert_eq!(d.reboot_vm(&vm).unwrap_err().kind(), ErrorKind::VmNotFound);
        // a pool that is not there: volumes in it are not there either, and create_disk says how to make it
        let fake = FakeDaemon::new();
        let d = driver(&fake, state.path());
        assert!(!d.has_disk(&disk).unwrap());
        d.delete_disk(&disk).unwrap();
        let e = d.create_disk(&CreateDisk { size_mib: 16, cloud_properties: &Map::new(), vm: None }).unwrap_err();
        assert!(e.to_string().contains("storage pool p does not exist"), "{e}");
    }

    #[test]
    fn a_missing_pool_is_made_from_pool_path_and_started() {
        let state = tempfile::tempdir().unwrap();
        let fake = FakeDaemon::new();
        let cfg: LibvirtConfig = serde_json::from_value(
            json!({"pool": "newpool", "pool_path": "/var/tmp/newpool", "state_dir": state.path()}),
        )
        .unwrap();
        let f = fake.clone();
        let d = Libvirt::with_connection(
            cfg,
            AgentOptions::default(),
            Connection::with("qemu:///system", Box::new(move || f.client())),
        );
        let disk = d.create_disk(&CreateDisk { size_mib: 16, cloud_properties: &Map::new(), vm: None }).unwrap();
        let c = calls(&fake);
        assert_eq!(
            &c[..6],
            [
                "STORAGE_POOL_LOOKUP_BY_NAME newpool",
                "STORAGE_POOL_DEFINE_XML newpool",
                "STORAGE_POOL_BUILD newpool",
                "STORAGE_POOL_CREATE newpool",
                "STORAGE_POOL_SET_AUTOSTART newpool",
                &format!("STORAGE_VOL_CREATE_XML {disk}"),
            ],
            "{c:?}"
        );
        let m = fake.model();
        assert_eq!(m.pools["newpool"].path, "/var/tmp/newpool");
        assert!(m.pools["newpool"].active && m.pools["newpool"].volumes.contains_key(disk.as_str()));
        assert_eq!(m.pools["newpool"].volumes[disk.as_str()].capacity, 16 << 20);
    }

    #[test]
    fn has_vm_reads_not_found_as_false() {
        let state = tempfile::tempdir().unwrap();
        let fake = daemon();
        let vm = VmCid::generate();
        let d = driver(&fake, state.path());
        assert!(!d.has_vm(&vm).unwrap());
        add_domain(&fake, vm.as_str(), false);
        assert!(d.has_vm(&vm).unwrap());
        // another error is an error, not a "no"
        fake.fail("DOMAIN_LOOKUP_BY_NAME", None, code::INTERNAL_ERROR, "cannot read the state", 1);
        assert!(d.has_vm(&vm).unwrap_err().to_string().contains("cannot read the state"));
    }

    /// The next call removes what a killed create_vm left (its marker is no longer locked), then goes on.
    #[test]
    fn the_next_call_reaps_an_interrupted_create_vm() {
        let state = tempfile::tempdir().unwrap();
        let fake = daemon();
        let vm = VmCid::generate();
        let v = vm.as_str();
        let inflight = state.path().join("inflight");
        std::fs::create_dir_all(&inflight).unwrap();
        std::fs::write(inflight.join(format!("{v}.lock")), "owner libvirt qemu:///system pool p\n").unwrap();
        add_domain(&fake, v, true);
        add_vol(&fake, &format!("{v}-root"), "qcow2");
        let disk = DiskCid::generate(DISK_HEX);
        add_vol(&fake, disk.as_str(), "qcow2");
        driver(&fake, state.path()).delete_disk(&disk).unwrap();
        let c = calls(&fake);
        assert_eq!(
            &c[..3],
            [
                format!("DOMAIN_LOOKUP_BY_NAME {v}"),
                format!("DOMAIN_DESTROY_FLAGS {v}"),
                format!("DOMAIN_UNDEFINE_FLAGS {v}")
            ],
            "{c:?}"
        );
        assert!(c.contains(&format!("STORAGE_VOL_DELETE {v}-root")), "{c:?}");
        assert!(c.contains(&format!("STORAGE_VOL_DELETE {disk}")), "{c:?}");
        assert!(fake.domains().is_empty() && fake.volumes(POOL).is_empty());
        assert_eq!(std::fs::read_dir(&inflight).unwrap().count(), 0, "the reaped marker is gone");
    }

    fn networks(forward_port: u16) -> Networks {
        serde_json::from_value(json!({"private": {"type": "dynamic", "cloud_properties": {"type": "user",
            "port_forwards": [{"host": format!("127.0.0.1:{forward_port}"), "guest": 6868}]}}}))
        .unwrap()
    }

    fn create_req(stemcell: &str, props: Value, nets: Networks) -> CreateVm {
        CreateVm {
            agent_id: crate::common::ids::AgentId::new("agent-1").unwrap(),
            stemcell: StemcellCid::new(stemcell).unwrap(),
            cloud_properties: props.as_object().unwrap().clone(),
            networks: nets,
            disk_cids: vec![],
            env: json!({}),
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    /// A medium that does not read (its volume descriptors lost) fails the detach before anything changes: the
    /// disk stays attached and the error says what was read.
    fn detach_with_a_damaged_medium_changes_nothing(
        fake: &FakeDaemon,
        d: &Libvirt,
        vm: &str,
        vm_cid: &VmCid,
        disk: &DiskCid,
    ) {
        let medium = format!("{vm}-settings.iso");
        let good =
            std::mem::take(&mut fake.model().pools.get_mut(POOL).unwrap().volumes.get_mut(&medium).unwrap().data);
        let mut damaged = good.clone();
        damaged[..17 * 2048].fill(0);
        fake.model().pools.get_mut(POOL).unwrap().volumes.get_mut(&medium).unwrap().data = damaged;
        let e = d.detach_disk(vm_cid, disk).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&format!("bytes read from volume {medium}, the first non-zero at byte 34816")), "{msg}");
        assert!(!e.retryable(), "{msg}");
        assert_eq!(d.get_disks(vm_cid).unwrap(), std::slice::from_ref(disk), "still attached");
        fake.model().pools.get_mut(POOL).unwrap().volumes.get_mut(&medium).unwrap().data = good;
    }

    #[test]
    fn create_vm_makes_volumes_a_domain_its_forwards_and_settings_then_attach_and_detach_rewrite_them() {
        let state = tempfile::tempdir().unwrap();
        let fake = daemon();
        let sc = "sc-0123456789abcdef-vsraw";
        add_vol(&fake, sc, "raw");
        let d = driver(&fake, state.path());
        let port = free_port();
        let created = d
            .create_vm(
                &CallContext::default(),
                &create_req(sc, json!({"cpu": 1, "ram": 64, "disk": 16}), networks(port)),
            )
            .unwrap();
        let vm = created.cid.to_string();
        let c = calls(&fake);
        let want_order = [
            format!("STORAGE_VOL_LOOKUP_BY_NAME {sc}"),
            "CONNECT_GET_DOMAIN_CAPABILITIES".to_string(),
            format!("STORAGE_VOL_CREATE_XML {vm}-root"),
            format!("STORAGE_VOL_CREATE_XML {vm}-ephemeral"),
            format!("STORAGE_VOL_CREATE_XML {vm}-settings.iso"),
            format!("STORAGE_VOL_UPLOAD {vm}-settings.iso"),
            format!("DOMAIN_DEFINE_XML_FLAGS {vm}"),
            format!("DOMAIN_CREATE_WITH_FLAGS {vm}"),
            format!("QEMU_DOMAIN_MONITOR_COMMAND {vm}"),
        ];
        let mut at = 0;
        for w in &want_order {
            at += c[at..].iter().position(|x| x == w).unwrap_or_else(|| panic!("{w} missing after {at}: {c:?}")) + 1;
        }
        {
            let m = fake.model();
            let pool = &m.pools[POOL];
            let root = &pool.volumes[&format!("{vm}-root")];
            assert_eq!(
                (root.format.as_str(), root.backing.as_deref()),
                ("qcow2", Some(format!("/fake/{POOL}/{sc}").as_str()))
            );
            let medium = &pool.volumes[&format!("{vm}-settings.iso")];
            assert_eq!(medium.capacity, settings::MEDIUM_CAPACITY);
            assert!(medium.holes > 0 && medium.uploaded < settings::MEDIUM_CAPACITY, "the medium went up sparse");
            let dom = &m.domains[&vm];
            assert!(dom.id.is_some(), "started");
            assert_eq!(dom.monitor, [format!("hostfwd_add hostua-vmcpi-user0 tcp:127.0.0.1:{port}-:6868")]);
            assert!(dom.xml.contains("<vmcpi:family>vsphere</vmcpi:family>"), "{}", dom.xml);
        }
        // the settings on the medium: vSphere-family hints
        let s = d.read_medium(&vm, MediumKind::CdromEnv).unwrap();
        let sj: Value = serde_json::from_slice(&s.to_json()).unwrap();
        assert_eq!((sj["disks"]["system"].clone(), sj["disks"]["ephemeral"].clone()), (json!("0"), json!("1")));

        // attach: a SCSI disk at target 2, named in the medium; again: the same hint, nothing done
        let vm_cid = VmCid::new(vm.as_str()).unwrap();
        let disk =
            d.create_disk(&CreateDisk { size_mib: 16, cloud_properties: &Map::new(), vm: Some(&vm_cid) }).unwrap();
        assert_eq!(d.attach_disk(&CallContext::default(), &vm_cid, &disk).unwrap(), json!("2"));
        assert_eq!(d.attach_disk(&CallContext::default(), &vm_cid, &disk).unwrap(), json!("2"));
        assert_eq!(d.get_disks(&vm_cid).unwrap(), std::slice::from_ref(&disk));
        let s: Value = serde_json::from_slice(&d.read_medium(&vm, MediumKind::CdromEnv).unwrap().to_json()).unwrap();
        assert_eq!(s["disks"]["persistent"][disk.as_str()], json!("2"));
        let c = calls(&fake);
        assert_eq!(c.iter().filter(|x| x.starts_with("DOMAIN_ATTACH_DEVICE_FLAGS")).count(), 1, "{c:?}");
        assert_eq!(c.iter().filter(|x| x.starts_with("DOMAIN_UPDATE_DEVICE_FLAGS")).count(), 2, "eject, insert: {c:?}");
        detach_with_a_damaged_medium_changes_nothing(&fake, &d, &vm, &vm_cid, &disk);
        // detach: gone from the domain and the medium
        d.detach_disk(&vm_cid, &disk).unwrap();
        assert!(d.get_disks(&vm_cid).unwrap().is_empty());
        let s: Value = serde_json::from_slice(&d.read_medium(&vm, MediumKind::CdromEnv).unwrap().to_json()).unwrap();
        assert_eq!(s["disks"]["persistent"], json!({}));
        assert_eq!(d.detach_disk(&vm_cid, &disk).unwrap_err().kind(), ErrorKind::DiskNotAttached);

        // reboot of a running VM resets it; of a stopped one starts it and adds its forwards again
        d.reboot_vm(&vm_cid).unwrap();
        assert_eq!(fake.model().domains[&vm].resets, 1);
        fake.model().domains.get_mut(&vm).unwrap().id = None;
        d.reboot_vm(&vm_cid).unwrap();
        assert_eq!(fake.model().domains[&vm].monitor.len(), 2);

        // metadata: the tags element and the title, escaped
        let md: Metadata = [("name".to_string(), "zookeeper/0".to_string()), ("odd".into(), "<&>".into())].into();
        d.set_vm_metadata(&vm_cid, &md).unwrap();
        {
            let m = fake.model();
            let dom = &m.domains[&vm];
            assert_eq!(dom.title.as_deref(), Some("zookeeper/0"));
            assert!(dom.metadata[domain::TAGS_NS].contains("&lt;&amp;&gt;"), "{:?}", dom.metadata);
        }
        d.delete_vm(&vm_cid).unwrap();
        assert_eq!(fake.volumes(POOL), [disk.to_string(), sc.to_string()]);
    }

    #[test]
    fn a_create_vm_that_fails_at_start_leaves_nothing_and_names_the_network() {
        let state = tempfile::tempdir().unwrap();
        let fake = daemon();
        let sc = "sc-0123456789abcdef-os";
        add_vol(&fake, sc, "qcow2");
        fake.fail(
            "DOMAIN_CREATE_WITH_FLAGS",
            None,
            code::NO_NETWORK,
            "Network not found: no network with matching name 'no-such-network'",
            1,
        );
        let d = driver(&fake, state.path());
        let nets: Networks =
            serde_json::from_value(json!({"n": {"type": "dynamic", "cloud_properties": {"name": "no-such-network"}}}))
                .unwrap();
        let e =
            d.create_vm(&CallContext::default(), &create_req(sc, json!({"ram": 64, "disk": 16}), nets)).unwrap_err();
        assert_eq!((e.kind(), e.retryable()), (ErrorKind::NetworkNotFound, false), "{e}");
        assert!(e.to_string().contains("no-such-network"), "{e}");
        assert_eq!(fake.volumes(POOL), [sc], "the volumes went");
        assert!(fake.domains().is_empty(), "the domain went");
        assert_eq!(std::fs::read_dir(state.path().join("inflight")).unwrap().count(), 0, "no marker left");
        // a stemcell that is not there: StemcellNotFound, before anything is made
        let e = d
            .create_vm(
                &CallContext::default(),
                &create_req("sc-1111111111111111-os", json!({"ram": 64}), Networks::default()),
            )
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::StemcellNotFound);
    }

    /// A gzipped tar: an OVF and a stream-optimised VMDK of `size` bytes with data in a few grains.
    fn vsphere_image(dir: &Path, size: u64) -> (std::path::PathBuf, Vec<u8>) {
        let mut w = crate::cpi::diskimage::vmdk::StreamWriter::new(Vec::new(), size, "image-disk1.vmdk").unwrap();
        let mut want = vec![0u8; size as usize];
        for (g, byte) in [(0u64, 1u8), (5, 7), (6, 9)] {
            let at = g * 65536;
            w.data(at, &[byte; 65536]).unwrap();
            want[at as usize..at as usize + 65536].fill(byte);
        }
        let vmdk = w.finish().unwrap();
        let ovf = r#"<?xml version="1.0"?><Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"><References><File ovf:href="image-disk1.vmdk" ovf:id="file1"/></References><VirtualSystem ovf:id="vm"><VirtualHardwareSection/></VirtualSystem></Envelope>"#;
        let path = dir.join("image");
        let gz = flate2::write::GzEncoder::new(std::fs::File::create(&path).unwrap(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        for (name, bytes) in [("image.ovf", ovf.as_bytes()), ("image-disk1.vmdk", &vmdk[..])] {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, name, bytes).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
        (path, want)
    }

    #[test]
    fn a_vmdk_goes_up_sparse_into_a_raw_volume_with_no_file_written() {
        let state = tempfile::tempdir().unwrap();
        let img = tempfile::tempdir().unwrap();
        let fake = daemon();
        let size = 4 << 20;
        let (image, want) = vsphere_image(img.path(), size);
        let d = driver(&fake, state.path());
        let sc = d.create_stemcell(&image, &Map::new()).unwrap();
        assert!(sc.as_str().ends_with("-vsraw"), "{sc}");
        let m = fake.model();
        let v = &m.pools[POOL].volumes[sc.as_str()];
        assert_eq!((v.format.as_str(), v.capacity), ("raw", size));
        assert!(v.data.len() <= size as usize && want.starts_with(&v.data), "the volume holds the virtual disk");
        assert_eq!(v.data.iter().filter(|b| **b != 0).count(), 3 * 65536);
        assert_eq!((v.uploaded, v.holes), (3 * 65536, size - 3 * 65536), "data and holes, to the volume's end");
        drop(m);
        let c = calls(&fake);
        assert!(
            c.contains(&format!("STORAGE_VOL_UPLOAD {sc}")) && c.contains(&format!("STORAGE_POOL_REFRESH {POOL}")),
            "{c:?}"
        );
        let work = state.path().join("work");
        assert!(std::fs::read_dir(&work).map(|d| d.count()).unwrap_or(0) == 0, "nothing left in {}", work.display());
    }

    #[test]
    fn an_image_libvirt_probes_as_another_format_is_refused_and_removed() {
        let state = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let fake = daemon();
        // a qcow2 root.img that libvirt (here: the fake's probe) reads as raw
        let root = crate::cpi::diskimage::tests::tiny_qcow2(1 << 20, 4096);
        let image = dir.path().join("image");
        let gz = flate2::write::GzEncoder::new(std::fs::File::create(&image).unwrap(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(root.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "root.img", &root[..]).unwrap();
        tar.into_inner().unwrap().finish().unwrap();
        let d = driver(&fake, state.path());
        // an OpenStack qcow2: probed as qcow2, accepted
        let sc = d.create_stemcell(&image, &Map::new()).unwrap();
        assert!(sc.as_str().ends_with("-os"), "{sc}");
        assert_eq!(fake.model().pools[POOL].volumes[sc.as_str()].data, root);
        // the same bytes, probed as something else: refused, the volume goes
        fake.model().probe_as = Some("vmdk".into());
        let e = d.create_stemcell(&image, &Map::new()).unwrap_err();
        assert!(e.to_string().contains("was probed as vmdk, expected qcow2"), "{e}");
        assert!(!e.retryable());
        fake.model().probe_as = None;
        // a refresh libvirt refuses for good: not retried for minutes, the volume goes, the error says why
        fake.fail("STORAGE_POOL_REFRESH", None, code::NO_SUPPORT, "refresh is not supported", 1);
        let e = d.create_stemcell(&image, &Map::new()).unwrap_err();
        assert!(e.to_string().contains("refresh is not supported"), "{e}");
        // a busy pool (another upload): retried until it passes
        fake.fail("STORAGE_POOL_REFRESH", None, code::INTERNAL_ERROR, "pool 'p' has asynchronous jobs running.", 2);
        let sc2 = d.create_stemcell(&image, &Map::new()).unwrap();
        assert_eq!(
            fake.volumes(POOL),
            [sc.to_string(), sc2.to_string()]
                .into_iter()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>(),
            "the failed imports left nothing"
        );
    }

    #[test]
    fn snapshots_clone_the_volume_or_copy_a_disk_in_use() {
        let state = tempfile::tempdir().unwrap();
        let fake = daemon();
        let d = driver(&fake, state.path());
        let disk = d.create_disk(&CreateDisk { size_mib: 16, cloud_properties: &Map::new(), vm: None }).unwrap();
        let snap = d.snapshot_disk(&disk, &Metadata::new()).unwrap();
        let c = calls(&fake);
        assert!(c.contains(&format!("STORAGE_VOL_CREATE_XML_FROM {snap} from {disk}")), "{c:?}");
        // attached to a running VM: qemu-img cannot take the lock, QEMU copies it
        let vm = VmCid::generate();
        let xml = format!(
            "<domain type=\"qemu\"><name>{vm}</name><devices><disk type=\"volume\" device=\"disk\"><source pool=\"{POOL}\" volume=\"{disk}\"/><target dev=\"sdc\" bus=\"scsi\"/></disk></devices></domain>"
        );
        fake.model().domains.insert(vm.to_string(), Dom { xml, id: Some(3), ..Default::default() });
        fake.fail(
            "STORAGE_VOL_CREATE_XML_FROM",
            None,
            code::INTERNAL_ERROR,
            "qemu-img: Failed to get shared \"write\" lock",
            1,
        );
        let snap2 = d.snapshot_disk(&disk, &Metadata::new()).unwrap();
        let c = calls(&fake);
        for w in [
            format!("STORAGE_VOL_CREATE_XML {snap2}"),
            format!("DOMAIN_BLOCK_COPY {vm}"),
            format!("DOMAIN_GET_BLOCK_JOB_INFO {vm}"),
            format!("DOMAIN_BLOCK_JOB_ABORT {vm}"),
        ] {
            assert!(c.contains(&w), "{w}: {c:?}");
        }
        assert!(fake.volumes(POOL).contains(&snap2.to_string()));
        d.delete_snapshot(&snap).unwrap();
        d.delete_snapshot(&snap).unwrap();
        assert!(!fake.volumes(POOL).contains(&snap.to_string()));
    }

    #[test]
    fn disk_metadata_goes_into_a_new_volume_each_time_and_resize_grows_only() {
        let state = tempfile::tempdir().unwrap();
        let fake = daemon();
        let d = driver(&fake, state.path());
        let disk = d
            .create_disk(&CreateDisk {
                size_mib: 16,
                cloud_properties: &json!({"format": "raw"}).as_object().unwrap().clone(),
                vm: None,
            })
            .unwrap();
        assert_eq!(fake.model().pools[POOL].volumes[disk.as_str()].format, "raw");
        for v in ["a", "b"] {
            d.set_disk_metadata(&disk, &[("k".to_string(), v.to_string())].into()).unwrap();
        }
        let meta = fake.model().pools[POOL].volumes[&format!("{disk}.meta.json")].data.clone();
        assert_eq!(serde_json::from_slice::<Value>(&meta).unwrap(), json!({"k": "b"}));
        d.resize_disk(&disk, 32).unwrap();
        assert_eq!(fake.model().pools[POOL].volumes[disk.as_str()].capacity, 32 << 20);
        assert_eq!(d.resize_disk(&disk, 8).unwrap_err().kind(), ErrorKind::NotSupported);
        d.resize_disk(&disk, 32).unwrap();
        d.delete_disk(&disk).unwrap();
        assert!(fake.volumes(POOL).is_empty(), "the disk and its metadata went");
    }

    #[test]
    fn a_full_pool_is_no_disk_space_and_a_refused_request_is_not_retried() {
        let state = tempfile::tempdir().unwrap();
        let fake = daemon();
        let d = driver(&fake, state.path());
        fake.fail("STORAGE_VOL_CREATE_XML", None, code::SYSTEM_ERROR, "cannot allocate: No space left on device", 1);
        let e = d.create_disk(&CreateDisk { size_mib: 16, cloud_properties: &Map::new(), vm: None }).unwrap_err();
        assert_eq!((e.kind(), e.retryable()), (ErrorKind::NoDiskSpace, true), "{e}");
        fake.fail("STORAGE_VOL_CREATE_XML", None, code::XML_ERROR, "XML error: bad capacity", 1);
        let e = d.create_disk(&CreateDisk { size_mib: 16, cloud_properties: &Map::new(), vm: None }).unwrap_err();
        assert!(!e.retryable() && e.to_string().contains("libvirt error 27"), "{e}");
    }
}
