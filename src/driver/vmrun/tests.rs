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
    let v: Value = serde_json::from_str(include_str!("../../../examples/vmrun-cpi.json")).unwrap();
    let cfg = crate::config::Config::from_value(v, None, "examples/vmrun-cpi.json").unwrap();
    assert!(matches!(cfg.driver, crate::driver::DriverConfig::Vmrun(_)));
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
