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
