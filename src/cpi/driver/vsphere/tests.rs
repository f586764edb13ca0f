//! Unit tests of the driver's pure parts (config, cloud properties, names).
use super::*;

#[test]
fn ids_and_macs() {
    assert!(valid_id("vm-0123456789abcdef0123", "vm-"));
    assert!(!valid_id("vm-0123", "vm-"));
    assert!(!valid_id("vm-0123456789abcdef012g", "vm-"));
    // the shared scheme: lower-case hex only, as in the other drivers
    assert!(!valid_id("vm-0123456789ABCDEF0123", "vm-"));
    for _ in 0..50 {
        let m = vmware_mac();
        assert!(m.starts_with("00:50:56:") && m.len() == 17, "{m}");
        assert!(u8::from_str_radix(&m[9..11], 16).unwrap() <= 0x3f, "{m}");
    }
}

#[test]
fn ds_paths() {
    assert_eq!(inventory::split_ds_path("[LocalDS_0] vm-1/vm-1.vmx"), Some(("LocalDS_0".into(), "vm-1".into())));
    assert_eq!(inventory::split_ds_path("nope"), None);
}
