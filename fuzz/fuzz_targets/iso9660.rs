//! The ISO 9660 reader on damaged images never panics, and the writer round-trips any settings bytes.
//!
//! The input is used three ways: as an image of its own; as patches (2 bytes of offset, 1 byte of value)
//! applied to the metadata sectors of a valid config drive, which is then read; and as the settings written
//! into a medium and read back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmcpi::iso9660;
use vmcpi::medium::{build, read_settings, MediumKind};

fuzz_target!(|data: &[u8]| {
    let _ = iso9660::label(data);
    let _ = iso9660::read_file(data, "ec2/latest/user-data");

    let mut img = build(MediumKind::ConfigDrive, br#"{"agent_id":"fuzz"}"#, "vm-fuzz").unwrap();
    // the volume descriptors, path tables, continuation area and directories: sectors 16 to 31
    for p in data.chunks_exact(3) {
        let at = 16 * iso9660::SECTOR + (u16::from_le_bytes([p[0], p[1]]) as usize % (16 * iso9660::SECTOR));
        img[at] = p[2];
    }
    let _ = iso9660::label(&img);
    let _ = read_settings(MediumKind::ConfigDrive, &img);
    let _ = read_settings(MediumKind::CdromEnv, &img);

    for kind in [MediumKind::ConfigDrive, MediumKind::CdromEnv] {
        let img = build(kind, data, "vm-fuzz").unwrap();
        assert_eq!(read_settings(kind, &img).unwrap(), data);
    }
});
