//! Raw disks: raw is raw. A disk taken as raw (a `root.img` that is not qcow2) whose first bytes are the
//! header of another image format is refused: whatever reads the volume next (libvirt probes the formats of a
//! pool's volumes; qemu probes a disk of unknown format) could take it for that format, with that format's
//! backing files and extents. A raw disk that passes is never handed on as anything but raw.

/// How much of the head [`check`] looks at: ISO 9660's volume descriptor lies at 32 KiB.
pub const HEAD: usize = 32 * 1024 + 512;

/// Refuses a raw disk (`head`: its first bytes, up to [`HEAD`]) that starts with another format's header.
pub fn check(name: &str, head: &[u8]) -> super::Result<()> {
    match foreign_format(head) {
        Some(found) => Err(super::DiskImageError::NotRaw { name: super::shown(name.as_bytes()), found }),
        None => Ok(()),
    }
}

/// The format whose header `head` begins with, among those qemu or libvirt would detect.
pub fn foreign_format(head: &[u8]) -> Option<&'static str> {
    const MAGICS: &[(&[u8], &str)] = &[
        (b"QFI\xfb", "a qcow2 header (QFI\\xfb)"),
        (b"KDMV", "a VMDK sparse extent header (KDMV)"),
        (b"COWD", "a VMDK COWD (ESX sparse) header"),
        (b"# Disk DescriptorFile", "a VMDK descriptor"),
        (b"QED\0", "a QED header"),
        (b"conectix", "a VHD header (conectix)"),
        (b"vhdxfile", "a VHDX header (vhdxfile)"),
        (b"LUKS\xba\xbe", "a LUKS header"),
        (b"Bochs Virtual HD Image", "a Bochs image header"),
        (b"#!/bin/sh\n#V2.0 Format", "a cloop image header"),
        (b"WithoutFreeSpace", "a Parallels (ploop) header"),
        (b"WithouFreSpacExt", "a Parallels (ploop) header"),
    ];
    if let Some((_, what)) = MAGICS.iter().find(|(m, _)| head.starts_with(m)) {
        return Some(what);
    }
    // a VMDK descriptor need not start with its comment line: any text with a createType is one
    let text_head = &head[..head.len().min(4096)];
    if !text_head.contains(&0) && text_head.windows(11).any(|w| w.eq_ignore_ascii_case(b"createType=")) {
        return Some("a VMDK descriptor (createType=…)");
    }
    // VirtualBox VDI: signature 0xbeda107f at 0x40
    if head.len() >= 0x44 && head[0x40..0x44] == 0xbeda_107fu32.to_le_bytes() {
        return Some("a VDI header");
    }
    if head.len() >= 32769 + 5 && &head[32769..32774] == b"CD001" {
        return Some("an ISO 9660 volume descriptor");
    }
    None
}
