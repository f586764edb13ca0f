//! Reading a stemcell's `image` (what `create_stemcell` receives): unpacked as a stream, so memory stays
//! flat whatever the image size, and zero blocks become holes in the output file.
//!
//! - OpenStack/KVM stemcells: a gzipped tar holding `root.img` (qcow2 or raw). The agent reads a config
//!   drive; disk hints are resolved by virtio/by-id rules.
//! - vSphere stemcells: a gzipped tar holding `image.ovf`, `image.mf` and a stream-optimised VMDK. The agent
//!   reads the `ENV` file of the first CD-ROM; disk hints are SCSI target numbers. The OVF may ask for EFI.
//! - A bare qcow2 or VMDK file is accepted too (handy from shell pipelines).
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Which agent conventions the stemcell follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    OpenStack,
    Vsphere,
}

impl Family {
    pub fn medium(self) -> crate::medium::MediumKind {
        match self {
            Family::OpenStack => crate::medium::MediumKind::ConfigDrive,
            Family::Vsphere => crate::medium::MediumKind::CdromEnv,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    Qcow2,
    Raw,
    Vmdk,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
            DiskFormat::Vmdk => "vmdk",
        }
    }
}

/// An unpacked stemcell image; the temporary directory goes away with it.
#[derive(Debug)]
pub struct Unpacked {
    pub family: Family,
    pub disk: PathBuf,
    pub format: DiskFormat,
    pub efi: bool,
    _dir: Option<tempfile::TempDir>,
}

#[derive(Debug, thiserror::Error)]
pub enum StemcellError {
    #[error("cannot read stemcell image {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("stemcell image {0} is neither a gzipped tar, a tar, a qcow2 nor a VMDK file")]
    UnknownFormat(String),
    #[error("stemcell image {path} holds no disk: expected root.img (OpenStack) or an .ovf with its .vmdk (vSphere); found: {found}")]
    NoDisk { path: String, found: String },
    #[error("stemcell OVF {path} is invalid: {reason}")]
    BadOvf { path: String, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StemcellError + '_ {
    move |source| StemcellError::Io { path: path.display().to_string(), source }
}

/// Unpacks `image` into a new temporary directory under `tmp` (the system default when `None`).
pub fn unpack(image: &Path, tmp: Option<&Path>) -> Result<Unpacked, StemcellError> {
    let mut f = File::open(image).map_err(io_err(image))?;
    let mut head = [0u8; 512];
    let n = read_up_to(&mut f, &mut head).map_err(io_err(image))?;
    let head = &head[..n];
    f.seek(SeekFrom::Start(0)).map_err(io_err(image))?;
    if head.starts_with(b"QFI\xfb") {
        return Ok(Unpacked {
            family: Family::OpenStack,
            disk: image.to_path_buf(),
            format: DiskFormat::Qcow2,
            efi: false,
            _dir: None,
        });
    }
    if head.starts_with(b"KDMV") {
        return Ok(Unpacked {
            family: Family::Vsphere,
            disk: image.to_path_buf(),
            format: DiskFormat::Vmdk,
            efi: false,
            _dir: None,
        });
    }
    let reader: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 20, f)))
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Box::new(BufReader::with_capacity(1 << 20, f))
    } else {
        return Err(StemcellError::UnknownFormat(image.display().to_string()));
    };
    let mut b = tempfile::Builder::new();
    b.prefix("vmcpi-stemcell-");
    let dir = match tmp {
        Some(t) => b.tempdir_in(t),
        None => b.tempdir(),
    }
    .map_err(io_err(image))?;
    let mut archive = tar::Archive::new(reader);
    let mut found = Vec::new();
    for entry in archive.entries().map_err(io_err(image))? {
        let mut entry = entry.map_err(io_err(image))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(io_err(image))?.into_owned();
        // flatten: only the file name counts, so "../x" or "/etc/x" can never escape the temp dir
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_string) else { continue };
        found.push(name.clone());
        let wanted = name == "root.img" || name.ends_with(".ovf") || name.ends_with(".vmdk") || name.ends_with(".mf");
        if !wanted || name.starts_with('.') {
            continue;
        }
        let dest = dir.path().join(&name);
        let mut out = File::create(&dest).map_err(io_err(&dest))?;
        let size = entry.header().size().unwrap_or(0);
        crate::info!("unpacking {name} ({} MiB)", size / (1 << 20));
        sparse_copy(&mut entry, &mut out, &name).map_err(io_err(&dest))?;
    }
    finish(image, dir, &found)
}

fn finish(image: &Path, dir: tempfile::TempDir, found: &[String]) -> Result<Unpacked, StemcellError> {
    let root = dir.path().join("root.img");
    if root.is_file() {
        let format = if file_starts_with(&root, b"QFI\xfb") { DiskFormat::Qcow2 } else { DiskFormat::Raw };
        return Ok(Unpacked { family: Family::OpenStack, disk: root, format, efi: false, _dir: Some(dir) });
    }
    if let Some(ovf) = found.iter().find(|n| n.ends_with(".ovf")) {
        let ovf_path = dir.path().join(ovf);
        let text = std::fs::read_to_string(&ovf_path).map_err(io_err(&ovf_path))?;
        let info = parse_ovf(&text).map_err(|reason| StemcellError::BadOvf { path: ovf.clone(), reason })?;
        let disk = dir.path().join(&info.disk_href);
        if info.disk_href.contains('/') || !disk.is_file() {
            return Err(StemcellError::BadOvf {
                path: ovf.clone(),
                reason: format!("its disk file '{}' is not in the image", info.disk_href),
            });
        }
        return Ok(Unpacked {
            family: Family::Vsphere,
            disk,
            format: DiskFormat::Vmdk,
            efi: info.efi,
            _dir: Some(dir),
        });
    }
    Err(StemcellError::NoDisk {
        path: image.display().to_string(),
        found: if found.is_empty() { "nothing".into() } else { found.join(", ") },
    })
}

/// What we need from an OVF descriptor.
#[derive(Debug, PartialEq, Eq)]
pub struct OvfInfo {
    pub disk_href: String,
    pub efi: bool,
}

/// Reads the first disk file reference and the firmware (`vmw:Config vmw:key="firmware" vmw:value="efi"`).
pub fn parse_ovf(text: &str) -> Result<OvfInfo, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(text);
    let mut disk_href = None;
    let mut efi = false;
    loop {
        match reader.read_event() {
            Err(e) => return Err(format!("XML error at byte {}: {e}", reader.buffer_position())),
            Ok(Event::Eof) => break,
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => {
                let local = e.local_name();
                let attr = |want: &[u8]| -> Option<String> {
                    e.attributes()
                        .flatten()
                        .find(|a| a.key.local_name().as_ref() == want)
                        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
                };
                match local.as_ref() {
                    b"File" if disk_href.is_none() => disk_href = attr(b"href"),
                    b"Config"
                        if attr(b"key").as_deref() == Some("firmware") && attr(b"value").as_deref() == Some("efi") =>
                    {
                        efi = true
                    }
                    _ => {}
                }
            }
            Ok(_) => {}
        }
    }
    let disk_href = disk_href.ok_or("no <File ovf:href=…> reference")?;
    Ok(OvfInfo { disk_href, efi })
}

/// Copies `r` into `w`, turning runs of zero blocks into holes; logs progress every GiB.
pub fn sparse_copy(r: &mut impl Read, w: &mut File, what: &str) -> std::io::Result<u64> {
    const BLOCK: usize = 1 << 16;
    let mut buf = vec![0u8; BLOCK];
    let mut total: u64 = 0;
    let mut pending_hole: u64 = 0;
    let mut next_report: u64 = 1 << 30;
    loop {
        let n = read_up_to(r, &mut buf)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|&b| b == 0) {
            pending_hole += n as u64;
        } else {
            if pending_hole > 0 {
                w.seek(SeekFrom::Current(pending_hole as i64))?;
                pending_hole = 0;
            }
            w.write_all(&buf[..n])?;
        }
        total += n as u64;
        if total >= next_report {
            crate::info!("{what}: {} GiB done", total >> 30);
            next_report += 1 << 30;
        }
        if n < BLOCK {
            // short read only happens at EOF with read_up_to
            break;
        }
    }
    w.set_len(total)?;
    Ok(total)
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn file_starts_with(p: &Path, magic: &[u8]) -> bool {
    let mut b = vec![0u8; magic.len()];
    File::open(p).and_then(|mut f| f.read_exact(&mut b)).is_ok() && b == magic
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tgz(files: &[(&str, &[u8])]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let gz = flate2::write::GzEncoder::new(f.reopen().unwrap(), flate2::Compression::fast());
        let mut t = tar::Builder::new(gz);
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            // raw name bytes: the tar crate refuses to write `..`, a hostile archive has them anyway
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            t.append(&h, *data).unwrap();
        }
        t.into_inner().unwrap().finish().unwrap();
        f
    }

    #[test]
    fn openstack_raw_and_qcow2() {
        let mut raw = vec![0u8; 300_000];
        raw[299_999] = 7;
        let f = tgz(&[("./root.img", &raw)]);
        let u = unpack(f.path(), None).unwrap();
        assert_eq!((u.family, u.format), (Family::OpenStack, DiskFormat::Raw));
        assert_eq!(std::fs::read(&u.disk).unwrap(), raw);
        let f = tgz(&[("root.img", b"QFI\xfb\0\0\0\x03rest")]);
        assert_eq!(unpack(f.path(), None).unwrap().format, DiskFormat::Qcow2);
    }

    #[test]
    fn vsphere_ovf_with_efi_and_escape_attempts() {
        let ovf = br#"<?xml version="1.0"?><Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:vmw="http://www.vmware.com/schema/ovf"><References><File ovf:href="image-disk1.vmdk" ovf:id="file1"/></References><VirtualSystem><VirtualHardwareSection><vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/></VirtualHardwareSection></VirtualSystem></Envelope>"#;
        let f = tgz(&[("image.ovf", ovf), ("image.mf", b"SHA1(x)=y"), ("../../image-disk1.vmdk", b"KDMVdata")]);
        let u = unpack(f.path(), None).unwrap();
        assert_eq!((u.family, u.format, u.efi), (Family::Vsphere, DiskFormat::Vmdk, true));
        assert!(u.disk.starts_with(std::env::temp_dir()));
    }

    #[test]
    fn clear_errors() {
        let f = tgz(&[("README", b"hi")]);
        let e = unpack(f.path(), None).unwrap_err().to_string();
        assert!(e.contains("README") && e.contains("root.img"), "{e}");
        let mut junk = tempfile::NamedTempFile::new().unwrap();
        junk.write_all(b"hello").unwrap();
        assert!(matches!(unpack(junk.path(), None), Err(StemcellError::UnknownFormat(_))));
        assert!(matches!(unpack(Path::new("/nonexistent"), None), Err(StemcellError::Io { .. })));
        assert!(parse_ovf("<Envelope><File/></Envelope>").is_err());
        assert!(parse_ovf("<Envelope><File ").is_err());
    }

    #[test]
    fn sparse_copy_makes_holes() {
        use std::os::unix::fs::MetadataExt;
        let data = vec![0u8; 8 << 20];
        let mut out = tempfile::tempfile().unwrap();
        assert_eq!(sparse_copy(&mut &data[..], &mut out, "t").unwrap(), 8 << 20);
        let md = out.metadata().unwrap();
        assert_eq!(md.len(), 8 << 20);
        assert!(md.blocks() * 512 < 1 << 20, "{} blocks", md.blocks());
    }
}
