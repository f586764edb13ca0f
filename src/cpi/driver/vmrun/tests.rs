//! Unit tests of the driver's pure parts (config, cloud properties, names).
use super::import::own_stemcell_vmx;
use super::*;

fn cfg(v: Value) -> Result<VmrunConfig, String> {
    let c: VmrunConfig = serde_json::from_value(v).map_err(|e| e.to_string())?;
    c.validate().map(|_| c)
}

#[test]
fn config_validation() {
    let c = cfg(json!({"vm_store_path": "/vms"})).unwrap();
    assert_eq!((c.vmrun.as_str(), c.host_type.as_str(), c.soft_shutdown_timeout_seconds), ("/usr/bin/vmrun", "ws", 30));
    assert!(cfg(json!({"vm_store_path": "vms"})).unwrap_err().contains("absolute"));
    assert!(cfg(json!({"vm_store_path": "C:\\vms"})).unwrap_err().contains("Windows"));
    assert!(cfg(json!({"vm_store_path": "/vms", "vmrun": "vmrun"})).unwrap_err().contains("absolute"));
    assert!(cfg(json!({"vm_store_path": "/vms", "host_type": "esx"})).unwrap_err().contains("host_type"));
    assert!(cfg(json!({"vm_store_path": "/vms", "host_type": "player"})).unwrap_err().contains("ovftool"));
    assert!(cfg(json!({"vm_store_path": "/vms", "default_network": "vmnetX"})).is_err());
    assert!(cfg(json!({"vm_store_path": "/vms", "vmrun_bin": "/x"})).unwrap_err().contains("vmrun_bin"));
}

#[test]
fn example_config_is_valid() {
    let v: Value = serde_json::from_str(include_str!("../../../../examples/vmrun-cpi.json")).unwrap();
    let cfg = crate::cpi::config::Config::from_value(v, None, "examples/vmrun-cpi.json").unwrap();
    assert!(matches!(cfg.driver, crate::cpi::driver::DriverConfig::Vmrun(_)));
}

#[test]
fn macs_are_in_vmware_static_range() {
    for _ in 0..50 {
        let m = vmware_mac();
        assert!(m.starts_with("00:50:56:") && m.len() == 17);
        assert!(u8::from_str_radix(&m[9..11], 16).unwrap() <= 0x3f, "{m}");
    }
}

#[test]
fn networks() {
    assert_eq!(nic_connection("nat").unwrap(), ("nat", None));
    assert_eq!(nic_connection("vmnet8").unwrap(), ("custom", Some("vmnet8".into())));
    assert!(nic_connection("vmnet").is_err());
    assert!(nic_connection("eth0").is_err());
}

#[test]
fn settings_iso_reuses_the_stemcell_cdrom() {
    let mut v = own_stemcell_vmx("sc-1", "d.vmdk", true);
    Vmrun::attach_settings_iso(&mut v);
    assert_eq!(v.get("sata0:0.fileName"), Some("env.iso"));
    assert_eq!(v.get("sata0:0.deviceType"), Some("cdrom-image"));
    assert_eq!(v.get("firmware"), Some("efi"));
    assert!(v.get("ide1:0.deviceType").is_none());
    let mut bare = Vmx::parse("scsi0:0.fileName = \"x.vmdk\"\n");
    Vmrun::attach_settings_iso(&mut bare);
    assert_eq!(bare.cdrom_device().as_deref(), Some("sata0:0"));
}

mod commands {
    //! The vmrun command logic over the in-process fake transport: the exact argv, in order, no VMware.
    use super::*;
    use crate::cpi::transport::fake::{fail, ok, FakeTransport};

    const VM: &str = "vm-0123456789abcdef0123";
    const VMX: &str = "/store/vms/vm-0123456789abcdef0123/vm-0123456789abcdef0123.vmx";

    fn driver(fake: &FakeTransport) -> Vmrun {
        let cfg = cfg(json!({"vm_store_path": "/store", "vmrun": "/usr/bin/vmrun"})).unwrap();
        Vmrun::with_transport(cfg, AgentOptions::default(), Box::new(fake.clone()))
    }

    fn vm() -> VmCid {
        VmCid::new(VM).unwrap()
    }

    #[test]
    fn reboot_of_a_running_vm_is_a_soft_reset() {
        let fake = FakeTransport::new()
            .file(VMX, b"")
            .expect(&["/usr/bin/vmrun", "-T", "ws", "list"], ok(&format!("Total running VMs: 1\n{VMX}\n")))
            .expect(&["/usr/bin/vmrun", "-T", "ws", "reset", VMX, "soft"], ok(""));
        driver(&fake).reboot_vm(&vm()).unwrap();
        fake.done();
    }

    #[test]
    fn a_failed_soft_reset_falls_back_to_a_hard_one() {
        let fake = FakeTransport::new()
            .file(VMX, b"")
            .expect(&["/usr/bin/vmrun", "-T", "ws", "list"], ok(&format!("Total running VMs: 1\n{VMX}\n")))
            .expect(
                &["/usr/bin/vmrun", "-T", "ws", "reset", VMX, "soft"],
                fail(255, "Error: VMware Tools are not running"),
            )
            .expect(&["/usr/bin/vmrun", "-T", "ws", "reset", VMX, "hard"], ok(""));
        driver(&fake).reboot_vm(&vm()).unwrap();
        fake.done();
    }

    #[test]
    fn reboot_of_a_stopped_vm_starts_it_and_a_path_prefix_is_not_a_match() {
        // a VM whose path merely starts with ours is another VM: ours is stopped
        let fake = FakeTransport::new()
            .file(VMX, b"")
            .expect(&["/usr/bin/vmrun", "-T", "ws", "list"], ok(&format!("Total running VMs: 1\n{VMX}.bak\n")))
            .expect(&["/usr/bin/vmrun", "-T", "ws", "start", VMX, "nogui"], ok(""));
        driver(&fake).reboot_vm(&vm()).unwrap();
        fake.done();
    }

    #[test]
    fn garbage_from_vmrun_list_is_an_error_not_a_stopped_vm() {
        let fake =
            FakeTransport::new().file(VMX, b"").expect(&["/usr/bin/vmrun", "-T", "ws", "list"], ok("something else\n"));
        let e = driver(&fake).reboot_vm(&vm()).unwrap_err();
        assert!(e.to_string().contains("unexpected `vmrun list` output"), "{e}");
        fake.done();
    }

    #[test]
    fn a_vm_that_is_not_in_the_store_runs_no_command() {
        let fake = FakeTransport::new();
        let d = driver(&fake);
        assert!(!d.has_vm(&vm()).unwrap());
        assert_eq!(d.reboot_vm(&vm()).unwrap_err().kind(), ErrorKind::VmNotFound);
        assert!(fake.ran().is_empty());
    }
}
