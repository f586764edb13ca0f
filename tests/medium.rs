//! Settings media are byte-stable: the same settings always give the same image (golden files).
use crate::util::require_peer;
use std::path::Path;
use vmcpi::medium::{build, read_settings, MediumKind};

const XORRISO: &str = "/usr/bin/xorriso";
const SETTINGS: &[u8] = br#"{"agent_id":"golden","vm":{"name":"vm-golden","id":"vm-golden"},"networks":{},"disks":{"system":"0","persistent":{}},"env":{}}"#;

fn golden(kind: MediumKind, file: &str) {
    if !require_peer("xorriso", Path::new(XORRISO).exists()) {
        return;
    }
    let a = build(kind, SETTINGS, "vm-golden", Path::new(XORRISO)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = build(kind, SETTINGS, "vm-golden", Path::new(XORRISO)).unwrap();
    assert!(a == b, "two builds a second apart differ");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/medium").join(file);
    if std::env::var_os("VMCPI_BLESS").is_some() {
        std::fs::write(&path, &a).unwrap();
    }
    let want = std::fs::read(&path).unwrap();
    assert!(a == want, "{file} changed (set VMCPI_BLESS=1 to accept a deliberate change)");
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join("m.iso");
    std::fs::write(&iso, &a).unwrap();
    assert_eq!(read_settings(kind, &iso, Path::new(XORRISO)).unwrap(), SETTINGS);
}

#[test]
fn config_drive_is_byte_stable() {
    golden(MediumKind::ConfigDrive, "config-drive.iso");
}

#[test]
fn env_cdrom_is_byte_stable() {
    golden(MediumKind::CdromEnv, "env.iso");
}
