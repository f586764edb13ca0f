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

/// The driver's virsh command logic against the fake transport: which commands run, in which order, and
/// how their answers are read, with no libvirtd.
mod with_fake_virsh {
    use super::*;
    use crate::transport::fake::{ok, FakeTransport};
    use crate::transport::Output;
    use std::sync::Arc;

    fn driver(fake: &FakeTransport, state: &Path) -> Libvirt {
        let cfg: LibvirtConfig = serde_json::from_value(json!({"pool": "p", "state_dir": state})).unwrap();
        let virsh = Virsh::with_transport(Arc::new(fake.clone()), &cfg.virsh, &cfg.uri);
        Libvirt::with_virsh(cfg, AgentOptions::default(), virsh)
    }

    /// Expects `virsh --quiet --connect qemu:///system ARGS…`.
    trait ExpectVirsh {
        fn virsh(self, args: &[&str], output: Output) -> Self;
    }
    impl ExpectVirsh for FakeTransport {
        fn virsh(self, args: &[&str], output: Output) -> Self {
            let mut argv = vec!["/usr/bin/virsh", "--quiet", "--connect", "qemu:///system"];
            argv.extend_from_slice(args);
            self.expect(&argv, output)
        }
    }

    fn err(stderr: &str) -> Output {
        Output { status: 1, stderr: stderr.into(), ..Default::default() }
    }

    const NO_VOL: &str =
        "error: failed to get vol 'x'\nerror: Storage volume not found: no storage vol with matching path 'x'";

    #[test]
    fn delete_vm_stops_undefines_and_removes_its_volumes_tolerating_what_is_gone() {
        let state = tempfile::tempdir().unwrap();
        let vm = VmCid::generate();
        let v = vm.as_str();
        let fake = FakeTransport::new()
            .virsh(
                &["destroy", v],
                err("error: Failed to destroy domain\nerror: Requested operation is not valid: domain is not running"),
            )
            .virsh(&["undefine", v, "--nvram"], ok(""))
            .virsh(&["vol-delete", "--pool", "p", &format!("{v}-root")], ok(""))
            .virsh(&["vol-delete", "--pool", "p", &format!("{v}-ephemeral")], err(NO_VOL))
            .virsh(&["vol-delete", "--pool", "p", &format!("{v}-settings.iso")], ok(""));
        driver(&fake, state.path()).delete_vm(&vm).unwrap();
        fake.done();
    }

    #[test]
    fn a_failing_destroy_stops_delete_vm_and_says_why() {
        let state = tempfile::tempdir().unwrap();
        let vm = VmCid::generate();
        let fake =
            FakeTransport::new().virsh(&["destroy", vm.as_str()], err("error: internal error: QEMU does not answer"));
        let e = driver(&fake, state.path()).delete_vm(&vm).unwrap_err();
        assert!(e.to_string().contains("QEMU does not answer"), "{e}");
        fake.done();
    }

    #[test]
    fn cids_that_are_not_ours_reach_no_command() {
        let state = tempfile::tempdir().unwrap();
        let fake = FakeTransport::new();
        let d = driver(&fake, state.path());
        let vm = VmCid::new("i-0123456789").unwrap();
        assert!(!d.has_vm(&vm).unwrap());
        assert_eq!(d.delete_vm(&vm).unwrap_err().kind(), crate::error::ErrorKind::VmNotFound);
        let disk = DiskCid::new("vol-1").unwrap();
        assert_eq!(d.delete_disk(&disk).unwrap_err().kind(), crate::error::ErrorKind::DiskNotFound);
        assert!(fake.ran().is_empty(), "{:?}", fake.ran());
    }

    #[test]
    fn has_vm_reads_not_found_as_false() {
        let state = tempfile::tempdir().unwrap();
        let vm = VmCid::generate();
        let fake = FakeTransport::new()
            .virsh(&["domstate", vm.as_str()], err("error: failed to get domain 'x'"))
            .virsh(&["domstate", vm.as_str()], ok("running\n"));
        let d = driver(&fake, state.path());
        assert!(!d.has_vm(&vm).unwrap());
        assert!(d.has_vm(&vm).unwrap());
        fake.done();
    }

    /// The next call removes what a killed create_vm left (its marker is no longer locked), then goes on.
    #[test]
    fn the_next_call_reaps_an_interrupted_create_vm() {
        let state = tempfile::tempdir().unwrap();
        let vm = VmCid::generate();
        let v = vm.as_str();
        let inflight = state.path().join("inflight");
        std::fs::create_dir_all(&inflight).unwrap();
        std::fs::write(inflight.join(format!("{v}.lock")), "owner libvirt qemu:///system pool p\n").unwrap();
        let disk = DiskCid::generate(DISK_HEX);
        let fake = FakeTransport::new()
            .virsh(&["destroy", v], err("error: failed to get domain 'x'"))
            .virsh(&["undefine", v, "--nvram"], ok(""))
            .virsh(&["vol-delete", "--pool", "p", &format!("{v}-root")], ok(""))
            .virsh(&["vol-delete", "--pool", "p", &format!("{v}-ephemeral")], err(NO_VOL))
            .virsh(&["vol-delete", "--pool", "p", &format!("{v}-settings.iso")], err(NO_VOL))
            .virsh(&["vol-delete", "--pool", "p", disk.as_str()], ok(""))
            .virsh(&["vol-delete", "--pool", "p", &format!("{disk}.meta.json")], err(NO_VOL));
        driver(&fake, state.path()).delete_disk(&disk).unwrap();
        fake.done();
        assert_eq!(std::fs::read_dir(&inflight).unwrap().count(), 0, "the reaped marker is gone");
    }

    #[test]
    fn a_batch_is_one_quoted_command_string_and_fails_on_any_error() {
        let fake =
            FakeTransport::new().virsh(&["'vol-delete' '--pool' 'p' 'a b'\\''c' ; 'start' 'vm-1'"], ok("")).virsh(
                &["'domstate' 'x' ; 'echo' 'after'"],
                Output {
                    status: 0,
                    stdout: "after".into(),
                    stderr: "error: failed to get domain 'x'\n".into(),
                    ..Default::default()
                },
            );
        let v = Virsh::with_transport(Arc::new(fake.clone()), Path::new("/usr/bin/virsh"), "qemu:///system");
        v.batch(&[virsh::command(["vol-delete", "--pool", "p", "a b'c"]), virsh::command(["start", "vm-1"])]).unwrap();
        // virsh exits 0 (the status of its last command), yet the first one failed
        let e = v.batch(&[virsh::command(["domstate", "x"]), virsh::command(["echo", "after"])]).unwrap_err();
        assert!(virsh::is_not_found(&e), "{e}");
        fake.done();
    }
}
