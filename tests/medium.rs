//! Settings media: byte-stable (golden files), what other ISO 9660 readers see in them (libblkid's label, as
//! udev's `/dev/disk/by-label` shows it; xorriso's Rock Ridge listing and extraction), and media written by
//! earlier versions (with xorriso) still read. A real guest kernel mounting them is in `guest.rs`.
use crate::util::require_peer;
use std::path::Path;
use std::process::Command;
use vmcpi::medium::{build, read_settings, MediumKind};

const SETTINGS: &[u8] = br#"{"agent_id":"golden","vm":{"name":"vm-golden","id":"vm-golden"},"networks":{},"disks":{"system":"0","persistent":{}},"env":{}}"#;
const BLKID: &str = "/usr/sbin/blkid";
const XORRISO: &str = "/usr/bin/xorriso";

fn fixture(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/medium").join(file)
}

fn golden(kind: MediumKind, file: &str) {
    let a = build(kind, SETTINGS, "vm-golden").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = build(kind, SETTINGS, "vm-golden").unwrap();
    assert!(a == b, "two builds a second apart differ");
    let path = fixture(file);
    if std::env::var_os("VMCPI_BLESS").is_some() {
        std::fs::write(&path, &a).unwrap();
    }
    let want = std::fs::read(&path).unwrap();
    assert!(a == want, "{file} changed (set VMCPI_BLESS=1 to accept a deliberate change)");
    assert_eq!(read_settings(kind, &a).unwrap(), SETTINGS);
}

#[test]
fn config_drive_is_byte_stable() {
    golden(MediumKind::ConfigDrive, "config-drive.iso");
}

#[test]
fn env_cdrom_is_byte_stable() {
    golden(MediumKind::CdromEnv, "env.iso");
}

/// Media that earlier versions wrote with xorriso (Rock Ridge with its own layout for the config drive, plain
/// ISO 9660 `ENV;1` for the CD-ROM) still give their settings: attach_disk on a VM created before rewrites
/// its medium from them.
#[test]
fn media_written_by_xorriso_are_still_read() {
    for (kind, file) in
        [(MediumKind::ConfigDrive, "xorriso-config-drive.iso"), (MediumKind::CdromEnv, "xorriso-env.iso")]
    {
        let img = std::fs::read(fixture(file)).unwrap();
        assert_eq!(read_settings(kind, &img).unwrap(), SETTINGS, "{file}");
    }
}

fn write_temp(dir: &Path, kind: MediumKind) -> std::path::PathBuf {
    let p = dir.join("m.iso");
    std::fs::write(&p, build(kind, SETTINGS, "vm-golden").unwrap()).unwrap();
    p
}

/// libblkid (what udev runs to make `/dev/disk/by-label/config-2`) finds an ISO 9660 file system with the
/// label the agent looks for.
#[test]
fn blkid_sees_the_label() {
    if !require_peer("blkid (util-linux)", Path::new(BLKID).exists()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (kind, label) in [(MediumKind::ConfigDrive, "config-2"), (MediumKind::CdromEnv, "ENV")] {
        let iso = write_temp(dir.path(), kind);
        let out = Command::new(BLKID).args(["-p", "-o", "export"]).arg(&iso).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "blkid failed: {text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.lines().any(|l| l == "TYPE=iso9660"), "{text}");
        assert!(text.lines().any(|l| l == format!("LABEL={label}")), "{text}");
        assert!(text.lines().any(|l| l == r"VERSION=Joliet\ Extension"), "{text}");
    }
}

/// xorriso (libisofs, an independent reader) lists the real names with Rock Ridge modes and owner, reads the
/// Joliet tree, and extracts the same bytes.
#[test]
fn xorriso_reads_names_modes_and_content() {
    if !require_peer("xorriso (tools/packages.sh --tests)", Path::new(XORRISO).exists()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (kind, names) in [
        (MediumKind::ConfigDrive, &["/ec2", "/ec2/latest", "/ec2/latest/meta-data.json", "/ec2/latest/user-data"][..]),
        (MediumKind::CdromEnv, &["/env"][..]),
    ] {
        let iso = write_temp(dir.path(), kind);
        for tree in ["rockridge", "joliet"] {
            let mut cmd = Command::new(XORRISO);
            cmd.args(["-no_rc", "-abort_on", "NEVER", "-report_about", "WARNING"]);
            if tree == "joliet" {
                cmd.args(["-rockridge", "off", "-joliet", "on"]);
            }
            let out = cmd.arg("-indev").arg(&iso).args(["-find", "/", "-exec", "lsdl", "--"]).output().unwrap();
            let listing = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{stderr}");
            assert!(!stderr.contains("WARNING") && !stderr.contains("FAILURE"), "{tree}: {stderr}");
            let mut got: Vec<&str> = listing
                .lines()
                .filter_map(|l| l.rsplit_once(" '").map(|(_, n)| n.trim_end_matches('\'')))
                .filter(|n| *n != "/")
                .collect();
            got.sort();
            assert_eq!(got, names, "{tree}: {listing}");
            if tree == "rockridge" {
                for l in listing.lines().filter(|l| l.ends_with("'/env'") || l.ends_with("user-data'")) {
                    assert!(l.starts_with("-rw-r--r--    1 0        0 "), "{l}");
                }
            }
        }
        let out_file = dir.path().join("settings.json");
        let st = Command::new(XORRISO)
            .args(["-no_rc", "-report_about", "SORRY", "-osirrox", "on", "-indev"])
            .arg(&iso)
            .args(["-extract", kind.settings_path()])
            .arg(&out_file)
            .output()
            .unwrap();
        assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
        assert_eq!(std::fs::read(&out_file).unwrap(), SETTINGS);
        std::fs::remove_file(&out_file).unwrap();
    }
}
