//! Unit tests of the driver's pure parts (config, cloud properties, names).
use super::*;

#[test]
fn stemcell_cids() {
    assert_eq!(
        parse_stemcell_cid("sc-0123456789abcdef-os"),
        Some(StemcellKind { family: Family::OpenStack, efi: false, format: "qcow2" })
    );
    assert_eq!(parse_stemcell_cid("sc-0123456789abcdef-osraw").unwrap().format, "raw");
    assert!(parse_stemcell_cid("sc-0123456789abcdef-vsefi").unwrap().efi);
    assert_eq!(parse_stemcell_cid("sc-0123456789abcdef-xx"), None);
    assert_eq!(parse_stemcell_cid("sc-../../etc-os"), None);
    assert_eq!(parse_stemcell_cid("sc-0123456789ABCDEF-os"), None);
}

#[test]
fn ours() {
    assert!(is_ours("disk-0123456789abcde", "disk-", 15));
    assert!(!is_ours("disk-0123456789abcd/", "disk-", 15));
    assert!(!is_ours("disk-../0123456789ab", "disk-", 15));
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
    let c: LibvirtConfig = serde_json::from_value(json!({"virsh": "virsh"})).unwrap();
    assert!(c.validate().unwrap_err().contains("absolute"));
    let c: LibvirtConfig = serde_json::from_value(json!({"domain_type": "xen"})).unwrap();
    assert!(c.validate().is_err());
}

mod commands {
    //! virsh's command logic over the in-process fake transport: the exact argv, in order, no libvirtd.
    use super::*;
    use crate::error::ErrorKind;
    use crate::transport::fake::{fail_stderr, ok, FakeTransport};

    const VM: &str = "vm-0123456789abcdef0123";
    const DISK: &str = "disk-0123456789abcde";

    fn virsh(args: &[&str]) -> Vec<String> {
        let mut v: Vec<String> =
            ["/usr/bin/virsh", "--quiet", "--connect", "qemu:///system"].map(String::from).to_vec();
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    fn expect(f: FakeTransport, args: &[&str], out: crate::transport::Output) -> FakeTransport {
        let argv = virsh(args);
        f.expect(&argv.iter().map(String::as_str).collect::<Vec<_>>(), out)
    }

    fn driver(fake: &FakeTransport, state: &std::path::Path) -> Libvirt {
        let cfg: LibvirtConfig = serde_json::from_value(json!({"state_dir": state, "pool": "p"})).unwrap();
        Libvirt::with_transport(cfg, AgentOptions::default(), std::sync::Arc::new(fake.clone()))
    }

    #[test]
    fn has_vm_asks_domstate_and_tells_not_found_apart() {
        let state = tempfile::tempdir().unwrap();
        let fake = expect(FakeTransport::new(), &["domstate", VM], ok("running\n"));
        let fake =
            expect(fake, &["domstate", VM], fail_stderr(1, "error: failed to get domain 'vm-0123456789abcdef0123'"));
        let fake = expect(fake, &["domstate", VM], fail_stderr(1, "error: failed to connect to the hypervisor"));
        let d = driver(&fake, state.path());
        let vm = VmCid::new(VM).unwrap();
        assert!(d.has_vm(&vm).unwrap());
        assert!(!d.has_vm(&vm).unwrap());
        let e = d.has_vm(&vm).unwrap_err();
        assert!(e.retryable() && e.to_string().contains("failed to connect"), "{e}");
        fake.done();
    }

    #[test]
    fn delete_disk_removes_the_volume_and_its_metadata_and_a_gone_one_is_fine() {
        let state = tempfile::tempdir().unwrap();
        let gone = "error: failed to get vol 'x', specified path 'x' does not exist";
        let fake = expect(FakeTransport::new(), &["vol-delete", "--pool", "p", DISK], ok(""));
        let fake = expect(fake, &["vol-delete", "--pool", "p", &format!("{DISK}.meta.json")], ok(""));
        let fake = expect(fake, &["vol-delete", "--pool", "p", DISK], fail_stderr(1, gone));
        let fake = expect(fake, &["vol-delete", "--pool", "p", &format!("{DISK}.meta.json")], fail_stderr(1, gone));
        let d = driver(&fake, state.path());
        let disk = DiskCid::new(DISK).unwrap();
        d.delete_disk(&disk).unwrap();
        d.delete_disk(&disk).unwrap();
        fake.done();
    }

    #[test]
    fn a_failing_virsh_keeps_its_command_line_and_output() {
        let state = tempfile::tempdir().unwrap();
        let fake = expect(
            FakeTransport::new(),
            &["vol-delete", "--pool", "p", DISK],
            fail_stderr(1, "error: internal error: boom"),
        );
        let e = driver(&fake, state.path()).delete_disk(&DiskCid::new(DISK).unwrap()).unwrap_err();
        let text = e.to_string();
        assert_eq!(e.kind(), ErrorKind::Cloud);
        assert!(text.contains("vol-delete --pool p") && text.contains("internal error: boom"), "{text}");
        fake.done();
    }
}
