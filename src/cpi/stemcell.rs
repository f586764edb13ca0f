//! Reading a stemcell's `image` (what `create_stemcell` receives) as a stream, so memory stays flat whatever
//! the image size. [`with_disk`] hands a driver the disk's bytes straight out of the archive (no unpacked copy
//! on disk), with its size from the tar header and, for vSphere stemcells, the OVF descriptor read before it;
//! [`Disk::into_file`] spools them (zero blocks become holes) for a tool that needs a seekable file.
//! [`unpack`] unpacks the whole image into a directory.
//!
//! - OpenStack/KVM stemcells: a gzipped tar holding `root.img` (qcow2 or raw). The agent reads a config
//!   drive; disk hints are resolved by virtio/by-id rules.
//! - vSphere stemcells: a gzipped tar holding `image.ovf`, `image.mf` and a stream-optimised VMDK. The agent
//!   reads the `ENV` file of the first CD-ROM; disk hints are SCSI target numbers. The OVF may ask for EFI.
//! - A bare qcow2 or VMDK file is accepted too (handy from shell pipelines).
//!
//! Every disk [`with_disk`] hands over has been inspected first ([`crate::cpi::diskimage::Checked`]): a VMDK
//! that is not a streamOptimized or monolithicSparse extent of its own, a qcow2 with a backing or data file, a
//! "raw" disk with another format's header never reach a driver, and a stream-optimised VMDK is checked
//! further as the driver reads it. [`unpack`] does no such check: it is for tests and tools, not drivers.
use std::cell::RefCell;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::mpsc::{sync_channel, Receiver};

use crate::cpi::diskimage::{Checked, Declared, DiskImageError};

/// Which agent conventions the stemcell follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    OpenStack,
    Vsphere,
}

impl Family {
    pub fn medium(self) -> crate::cpi::medium::MediumKind {
        match self {
            Family::OpenStack => crate::cpi::medium::MediumKind::ConfigDrive,
            Family::Vsphere => crate::cpi::medium::MediumKind::CdromEnv,
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
    #[error("cannot spool {name} to {dir}: {source}")]
    Spool { name: String, dir: String, source: std::io::Error },
    /// The disk was refused by inspection, or could not be read while being inspected.
    #[error(transparent)]
    Disk(#[from] DiskImageError),
}

impl StemcellError {
    /// Whether reading the same image again may succeed: a file that is no stemcell, or a malformed or
    /// truncated one, fails the same way every time; a read or spool error of the machine may pass.
    pub fn retryable(&self) -> bool {
        match self {
            StemcellError::Io { source, .. } | StemcellError::Spool { source, .. } => {
                crate::cpi::error::io_may_pass(source)
            }
            StemcellError::UnknownFormat(_) | StemcellError::NoDisk { .. } | StemcellError::BadOvf { .. } => false,
            StemcellError::Disk(d) => crate::cpi::error::DriverFailure::retryable(d),
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StemcellError + '_ {
    move |source| StemcellError::Io { path: path.display().to_string(), source }
}

/// An OVF descriptor larger than this is not a stemcell's (they are a few KiB).
const OVF_MAX: u64 = 16 << 20;

/// The disk of a stemcell image as [`with_disk`] hands it over: its bytes as a stream (read them to the end:
/// the archive's checksum is verified then), its size, and what the image says about it.
pub struct Disk<'a> {
    pub family: Family,
    pub format: DiskFormat,
    pub efi: bool,
    /// The OVF descriptor of a vSphere archive, as it is in the image; `None` for a bare VMDK or an OpenStack image.
    pub ovf: Option<String>,
    /// The disk's file name in the image (a plain name: no directory part, never `..`).
    pub name: String,
    /// Its size in bytes (the tar header's, or the file's).
    pub len: u64,
    /// Set when the disk is a file already: a bare qcow2/VMDK image, or a VMDK that came before its OVF in
    /// the archive (spooled, since its OVF is needed first).
    pub path: Option<PathBuf>,
    /// What inspecting the disk found: its format (a VMDK's kind) and its virtual size.
    pub image: crate::cpi::diskimage::Info,
    /// The disk's bytes, checked as they pass ([`Checked`]).
    pub reader: &'a mut dyn Read,
}

/// A disk before it is inspected: what the image says about it.
struct Meta {
    family: Family,
    format: DiskFormat,
    efi: bool,
    ovf: Option<String>,
    name: String,
    len: u64,
    path: Option<PathBuf>,
}

fn declared(format: DiskFormat) -> Declared {
    match format {
        DiskFormat::Qcow2 => Declared::Qcow2,
        DiskFormat::Raw => Declared::Raw,
        DiskFormat::Vmdk => Declared::Vmdk,
    }
}

/// Inspects the disk `reader` yields and calls `f` with it: a refused disk never reaches `f`, and when `f`
/// fails because the disk was refused as it passed (a stream-optimised VMDK broken in the middle), the
/// refusal is the error, whatever `f` made of the failed read.
fn hand_over<T, E>(m: Meta, reader: &mut dyn Read, f: impl FnOnce(Disk<'_>) -> Result<T, E>) -> Result<T, E>
where
    E: From<StemcellError>,
{
    let mut checked = Checked::new(declared(m.format), &m.name, m.len, reader).map_err(StemcellError::from)?;
    let image = checked.info();
    let disk = Disk {
        family: m.family,
        format: m.format,
        efi: m.efi,
        ovf: m.ovf,
        name: m.name,
        len: m.len,
        path: m.path,
        image,
        reader: &mut checked,
    };
    match f(disk) {
        Err(e) => Err(match checked.refusal() {
            Some(refusal) => StemcellError::from(refusal).into(),
            None => e,
        }),
        ok => ok,
    }
}

impl std::fmt::Debug for Disk<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk")
            .field("family", &self.family)
            .field("format", &self.format)
            .field("efi", &self.efi)
            .field("name", &self.name)
            .field("len", &self.len)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Disk<'_> {
    /// The disk as a file, for tools that need to seek (qemu-img reading a VMDK): its path when it is one
    /// already, else the stream spooled into `dir` (holes for zero blocks).
    pub fn into_file(self, dir: &Path) -> Result<PathBuf, StemcellError> {
        if let Some(p) = self.path {
            return Ok(p);
        }
        spool(self.reader, dir, &self.name, self.len)
    }
}

fn spool(r: &mut dyn Read, dir: &Path, name: &str, len: u64) -> Result<PathBuf, StemcellError> {
    let dest = dir.join(name);
    let err = |source| StemcellError::Spool { name: name.to_string(), dir: dir.display().to_string(), source };
    let mut out = File::create(&dest).map_err(err)?;
    crate::info!("spooling {name} ({} MiB) to {}", len >> 20, dir.display());
    sparse_copy(r, &mut out, name).map_err(err)?;
    Ok(dest)
}

/// Opens `image` and calls `f` with its disk, streamed straight out of the archive where the image allows:
/// a gzipped (or plain) tar holding `root.img` (OpenStack), or an OVF followed by its VMDK (vSphere). A VMDK
/// that comes *before* its OVF is spooled into `spool` first (the OVF is needed to use it); a bare qcow2 or
/// VMDK file is handed over as it is. Unpacking runs on a second thread, ahead of `f` by at most a few MiB.
pub fn with_disk<T, E>(image: &Path, spool_dir: &Path, f: impl FnOnce(Disk<'_>) -> Result<T, E>) -> Result<T, E>
where
    E: From<StemcellError>,
{
    let mut file = File::open(image).map_err(io_err(image))?;
    let mut head = [0u8; 512];
    let n = read_up_to(&mut file, &mut head).map_err(io_err(image))?;
    let head = &head[..n];
    file.seek(SeekFrom::Start(0)).map_err(io_err(image))?;
    if let Some(m) = bare_disk(&file, head, image)? {
        // unbuffered: consumers read in large pieces, and a buffer would copy every byte once more
        let mut r = file;
        return hand_over(m, &mut r, f);
    }
    let raw: Box<dyn Read + Send> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 20, file)))
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Box::new(file)
    } else {
        return Err(StemcellError::UnknownFormat(image.display().to_string()).into());
    };
    from_archive(image, spool_dir, raw, f)
}

/// What a bare qcow2 or VMDK file (not an archive) is, from its first bytes `head`; `None` for anything else.
fn bare_disk(file: &File, head: &[u8], image: &Path) -> Result<Option<Meta>, StemcellError> {
    let (family, format) = if head.starts_with(b"QFI\xfb") {
        (Family::OpenStack, DiskFormat::Qcow2)
    } else if head.starts_with(b"KDMV") {
        (Family::Vsphere, DiskFormat::Vmdk)
    } else {
        return Ok(None);
    };
    let len = file.metadata().map_err(io_err(image))?.len();
    let name = image.file_name().and_then(|n| n.to_str()).unwrap_or("disk").to_string();
    Ok(Some(Meta { family, format, efi: false, ovf: None, name, len, path: Some(image.to_path_buf()) }))
}

/// [`with_disk`] for a tar archive (`raw`: its bytes, already inflated): the disk is handed over as its entry
/// passes, or, when it came before its OVF, from where it was spooled.
fn from_archive<T, E>(
    image: &Path,
    spool_dir: &Path,
    raw: Box<dyn Read + Send>,
    f: impl FnOnce(Disk<'_>) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<StemcellError>,
{
    let shared = Rc::new(RefCell::new(ReadAhead::new(raw)));
    let mut archive = tar::Archive::new(Shared(shared.clone()));
    let mut found = Vec::new();
    // (name, text, what it says) of the first OVF; (name, path, size) of VMDKs spooled before it
    let mut ovf: Option<(String, String, OvfInfo)> = None;
    let mut spooled: Vec<(String, PathBuf, u64)> = Vec::new();
    for entry in archive.entries().map_err(io_err(image))? {
        let mut entry = entry.map_err(io_err(image))?;
        if !is_file(&entry) {
            continue;
        }
        let path = entry.path().map_err(io_err(image))?.into_owned();
        // flatten: only the file name counts, so "../x" or "/etc/x" never names anything outside the image
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_string) else { continue };
        found.push(name.clone());
        if name.starts_with('.') {
            continue;
        }
        // the entry's size: a pax header's or a GNU sparse file's real size where the archive has one
        let len = entry.size();
        if name == "root.img" {
            let mut magic = [0u8; 4];
            let got = read_up_to(&mut entry, &mut magic).map_err(io_err(image))?;
            let format = if magic[..got] == *b"QFI\xfb" { DiskFormat::Qcow2 } else { DiskFormat::Raw };
            let mut r = Tail::new(io::Cursor::new(magic[..got].to_vec()).chain(entry), &shared, &name, len);
            let m = Meta { family: Family::OpenStack, format, efi: false, ovf: None, name, len, path: None };
            return hand_over(m, &mut r, f);
        }
        if name.ends_with(".ovf") && ovf.is_none() {
            let (text, info) = read_ovf(&mut entry, &name, len, image)?;
            let disk_spooled = spooled.iter().any(|(n, _, _)| *n == info.disk_href);
            ovf = Some((name, text, info));
            if disk_spooled {
                break;
            }
            continue;
        }
        if name.ends_with(".vmdk") {
            match &ovf {
                Some((_, text, info)) if info.disk_href == name => {
                    let mut r = Tail::new(entry, &shared, &name, len);
                    let (efi, ovf) = (info.efi, Some(text.clone()));
                    let m = Meta { family: Family::Vsphere, format: DiskFormat::Vmdk, efi, ovf, name, len, path: None };
                    return hand_over(m, &mut r, f);
                }
                // not the OVF's disk
                Some(_) => continue,
                None => {
                    crate::info!("{name} comes before the OVF in the image: it is spooled, not streamed");
                    let p = spool_checked(&mut entry, spool_dir, &name, len)?;
                    spooled.push((name, p, len));
                }
            }
        }
    }
    drop(archive);
    let (m, path) = spooled_disk(image, found, ovf, spooled)?;
    let mut r = File::open(&path).map_err(io_err(&path))?;
    hand_over(m, &mut r, f)
}

/// Reads the OVF entry `name` of `len` bytes and what it says; refuses one too large, malformed, or whose
/// disk is not a plain file name.
fn read_ovf(entry: &mut dyn Read, name: &str, len: u64, image: &Path) -> Result<(String, OvfInfo), StemcellError> {
    if len > OVF_MAX {
        return Err(StemcellError::BadOvf { path: name.to_string(), reason: format!("{len} bytes is too large") });
    }
    let mut text = String::new();
    entry.read_to_string(&mut text).map_err(io_err(image))?;
    let info = parse_ovf(&text).map_err(|reason| StemcellError::BadOvf { path: name.to_string(), reason })?;
    if info.disk_href.contains('/') || info.disk_href.starts_with('.') {
        return Err(bad_href(name, &info.disk_href));
    }
    Ok((text, info))
}

/// Spools the VMDK entry `name` into `spool_dir`, checked as it is spooled: a refused disk is never written
/// out whole (what was written is removed, and the refusal is the error).
fn spool_checked(entry: &mut dyn Read, spool_dir: &Path, name: &str, len: u64) -> Result<PathBuf, StemcellError> {
    let mut checked = Checked::new(Declared::Vmdk, name, len, entry)?;
    match spool(&mut checked, spool_dir, name, len) {
        Ok(p) => Ok(p),
        Err(e) => {
            let _ = std::fs::remove_file(spool_dir.join(name));
            Err(checked.refusal().map(StemcellError::from).unwrap_or(e))
        }
    }
}

/// After the whole archive: the disk its OVF names among the VMDKs spooled before it, and where it is.
fn spooled_disk(
    image: &Path,
    found: Vec<String>,
    ovf: Option<(String, String, OvfInfo)>,
    spooled: Vec<(String, PathBuf, u64)>,
) -> Result<(Meta, PathBuf), StemcellError> {
    let Some((ovf_name, text, info)) = ovf else {
        return Err(StemcellError::NoDisk {
            path: image.display().to_string(),
            found: if found.is_empty() { "nothing".into() } else { found.join(", ") },
        });
    };
    let Some((name, path, len)) = spooled.into_iter().find(|(n, _, _)| *n == info.disk_href) else {
        return Err(bad_href(&ovf_name, &info.disk_href));
    };
    let m = Meta {
        family: Family::Vsphere,
        format: DiskFormat::Vmdk,
        efi: info.efi,
        ovf: Some(text),
        name,
        len,
        path: Some(path.clone()),
    };
    Ok((m, path))
}

/// A regular file, or a GNU sparse one (`tar -S`, or the tar crate's default for files with holes): the
/// tar reader fills its holes with zeros.
fn is_file<R: Read>(entry: &tar::Entry<'_, R>) -> bool {
    let t = entry.header().entry_type();
    t.is_file() || t.is_gnu_sparse()
}

fn bad_href(ovf: &str, href: &str) -> StemcellError {
    StemcellError::BadOvf { path: ovf.to_string(), reason: format!("its disk file '{href}' is not in the image") }
}

/// The archive's bytes, shared between the tar reader and [`Tail`] (one thread: `Rc`).
struct Shared(Rc<RefCell<ReadAhead>>);

impl Read for Shared {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

/// One archive entry's bytes. At its end it reads the rest of the archive (what follows is small: padding,
/// the end blocks, a manifest) so that gzip's checksum is verified before the consumer sees the end: an
/// upload of a corrupt image fails before it is completed. A short entry (a truncated archive) is an error.
struct Tail<'a, R> {
    inner: R,
    rest: &'a Rc<RefCell<ReadAhead>>,
    name: String,
    len: u64,
    seen: u64,
}

impl<'a, R: Read> Tail<'a, R> {
    fn new(inner: R, rest: &'a Rc<RefCell<ReadAhead>>, name: &str, len: u64) -> Self {
        Tail { inner, rest, name: name.to_string(), len, seen: 0 }
    }
}

impl<R: Read> Read for Tail<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        self.seen += n as u64;
        if n == 0 {
            if self.seen < self.len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the image ends inside {} ({} of {} bytes)", self.name, self.seen, self.len),
                ));
            }
            io::copy(&mut *self.rest.borrow_mut(), &mut io::sink())?;
        }
        Ok(n)
    }
}

/// `inner` read ahead by a thread in 256 KiB pieces, at most four in flight: unpacking (gunzip and its
/// checksum) runs while the consumer uploads, and memory stays about a MiB whatever the size.
struct ReadAhead {
    rx: Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

impl ReadAhead {
    fn new(mut inner: Box<dyn Read + Send>) -> Self {
        let (tx, rx) = sync_channel(4);
        // the thread ends at the end of the input, on an error, or when the reader is dropped (send fails)
        let spawned = std::thread::Builder::new().name("unpack".into()).spawn(move || loop {
            let mut buf = vec![0u8; 256 << 10];
            match read_up_to(&mut inner, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.send(Ok(buf)).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    break;
                }
            }
        });
        if let Err(e) = spawned {
            // no thread: the reader reports it on first use
            let (tx, rx) = sync_channel(1);
            let _ = tx.send(Err(e));
            return ReadAhead { rx, cur: Vec::new(), pos: 0, done: false };
        }
        ReadAhead { rx, cur: Vec::new(), pos: 0, done: false }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.cur = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                // the thread has finished: end of input
                Err(_) => self.done = true,
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
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
pub fn sparse_copy(r: &mut (impl Read + ?Sized), w: &mut File, what: &str) -> std::io::Result<u64> {
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

fn read_up_to(r: &mut (impl Read + ?Sized), buf: &mut [u8]) -> std::io::Result<usize> {
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

    const OVF: &[u8] = br#"<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"><References><File ovf:href="image-disk1.vmdk" ovf:id="file1"/></References></Envelope>"#;

    /// (family, format, ovf?, name, len, spooled path?, bytes read) of what `with_disk` hands over.
    type Seen = (Family, DiskFormat, bool, String, u64, Option<PathBuf>, Vec<u8>);

    fn seen(image: &Path, spool: &Path) -> Result<Seen, StemcellError> {
        with_disk(image, spool, |d| -> Result<Seen, StemcellError> {
            let mut bytes = Vec::new();
            d.reader.read_to_end(&mut bytes).map_err(io_err(image))?;
            Ok((d.family, d.format, d.ovf.is_some(), d.name, d.len, d.path, bytes))
        })
    }

    #[test]
    fn openstack_raw_and_qcow2() {
        let spool = tempfile::tempdir().unwrap();
        let mut raw = vec![0u8; 300_000];
        raw[299_999] = 7;
        let f = tgz(&[("./root.img", &raw)]);
        let (family, format, _, name, _, path, bytes) = seen(f.path(), spool.path()).unwrap();
        assert_eq!((family, format, name.as_str(), path), (Family::OpenStack, DiskFormat::Raw, "root.img", None));
        assert!(bytes == raw);
        let f = tgz(&[("root.img", &crate::cpi::diskimage::tests::tiny_qcow2(1 << 20, 512))]);
        assert_eq!(seen(f.path(), spool.path()).unwrap().1, DiskFormat::Qcow2);
    }

    /// Entry names that climb out (`../../x`, `/etc/x`) count by their file name only: a VMDK spooled before
    /// its OVF lands in the spool directory, and nothing is written anywhere else.
    #[test]
    fn vsphere_ovf_with_efi_and_escape_attempts() {
        let ovf = br#"<?xml version="1.0"?><Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:vmw="http://www.vmware.com/schema/ovf"><References><File ovf:href="image-disk1.vmdk" ovf:id="file1"/></References><VirtualSystem><VirtualHardwareSection><vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/></VirtualHardwareSection></VirtualSystem></Envelope>"#;
        let disk = crate::cpi::diskimage::tests::noise_stream_vmdk(3);
        let top = tempfile::tempdir().unwrap();
        let spool = top.path().join("a/b");
        std::fs::create_dir_all(&spool).unwrap();
        for name in ["../../image-disk1.vmdk", "/tmp/image-disk1.vmdk"] {
            for vmdk_first in [false, true] {
                let mut files = vec![("image.ovf", &ovf[..]), ("image.mf", &b"SHA1(x)=y"[..])];
                let at = if vmdk_first { 0 } else { files.len() };
                files.insert(at, (name, &disk[..]));
                let f = tgz(&files);
                let (efi, path, bytes) = with_disk(f.path(), &spool, |d| -> Result<_, StemcellError> {
                    let mut bytes = Vec::new();
                    d.reader.read_to_end(&mut bytes).map_err(io_err(f.path()))?;
                    assert_eq!(
                        (d.family, d.format, d.name.as_str()),
                        (Family::Vsphere, DiskFormat::Vmdk, "image-disk1.vmdk")
                    );
                    Ok((d.efi, d.path, bytes))
                })
                .unwrap();
                assert!(efi && bytes == disk, "{name}");
                if let Some(p) = path {
                    assert!(vmdk_first && p.starts_with(&spool), "{name}: spooled to {}", p.display());
                }
                assert!(
                    !top.path().join("image-disk1.vmdk").exists() && !top.path().join("a/image-disk1.vmdk").exists()
                );
            }
        }
    }

    #[test]
    fn clear_errors() {
        let spool = tempfile::tempdir().unwrap();
        let f = tgz(&[("README", b"hi")]);
        let e = seen(f.path(), spool.path()).unwrap_err().to_string();
        assert!(e.contains("README") && e.contains("root.img"), "{e}");
        let mut junk = tempfile::NamedTempFile::new().unwrap();
        junk.write_all(b"hello").unwrap();
        assert!(matches!(seen(junk.path(), spool.path()), Err(StemcellError::UnknownFormat(_))));
        assert!(matches!(seen(Path::new("/nonexistent"), spool.path()), Err(StemcellError::Io { .. })));
        assert!(parse_ovf("<Envelope><File/></Envelope>").is_err());
        assert!(parse_ovf("<Envelope><File ").is_err());
    }

    #[test]
    fn the_disk_streams_out_of_the_archive() {
        let spool = tempfile::tempdir().unwrap();
        let disk = crate::cpi::diskimage::tests::noise_stream_vmdk(45);
        let qcow2 = crate::cpi::diskimage::tests::tiny_qcow2(1 << 30, 300);
        // OVF first (as stemcells are built): the VMDK streams, nothing is written to the spool directory
        let f = tgz(&[("image.ovf", OVF), ("image.mf", b"x"), ("image-disk1.vmdk", &disk)]);
        let (family, format, ovf, name, len, path, bytes) = seen(f.path(), spool.path()).unwrap();
        assert_eq!(
            (family, format, ovf, name.as_str(), len, path),
            (Family::Vsphere, DiskFormat::Vmdk, true, "image-disk1.vmdk", disk.len() as u64, None)
        );
        assert!(bytes == disk);
        assert_eq!(std::fs::read_dir(spool.path()).unwrap().count(), 0);
        // VMDK first: it is spooled, then handed over as a file
        let f = tgz(&[("image-disk1.vmdk", &disk), ("image.ovf", OVF)]);
        let (_, _, ovf, _, _, path, bytes) = seen(f.path(), spool.path()).unwrap();
        assert!(ovf && bytes == disk);
        assert_eq!(path.unwrap(), spool.path().join("image-disk1.vmdk"));
        // root.img: qcow2 or raw by its first bytes, which still reach the reader
        let f = tgz(&[("root.img", &qcow2)]);
        let (family, format, _, _, len, path, bytes) = seen(f.path(), spool.path()).unwrap();
        assert_eq!(
            (family, format, len, path, &bytes[..]),
            (Family::OpenStack, DiskFormat::Qcow2, 300, None, &qcow2[..])
        );
        let f = tgz(&[("root.img", b"ab")]);
        assert_eq!(seen(f.path(), spool.path()).unwrap().1, DiskFormat::Raw);
        // a bare image is its own file
        let mut bare = tempfile::NamedTempFile::new().unwrap();
        bare.write_all(&disk).unwrap();
        let (_, format, ovf, _, _, path, bytes) = seen(bare.path(), spool.path()).unwrap();
        assert_eq!(path.as_deref(), Some(bare.path()));
        assert!(format == DiskFormat::Vmdk && !ovf && path.is_some() && bytes == disk);
    }

    #[test]
    fn a_gnu_sparse_entry_streams_with_its_holes_filled() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root.img");
        let mut f = File::create(&root).unwrap();
        f.write_all(&crate::cpi::diskimage::tests::tiny_qcow2(1 << 30, 512)).unwrap();
        f.seek(SeekFrom::Start(8 << 20)).unwrap();
        f.write_all(b"end").unwrap();
        drop(f);
        let image = dir.path().join("image");
        let gz = flate2::write::GzEncoder::new(File::create(&image).unwrap(), flate2::Compression::fast());
        let mut t = tar::Builder::new(gz);
        t.sparse(true);
        t.append_path_with_name(&root, "root.img").unwrap();
        t.into_inner().unwrap().finish().unwrap();
        let mut a = tar::Archive::new(flate2::read::GzDecoder::new(File::open(&image).unwrap()));
        assert!(a.entries().unwrap().next().unwrap().unwrap().header().entry_type().is_gnu_sparse());
        let (family, format, _, _, len, _, bytes) = seen(&image, dir.path()).unwrap();
        assert_eq!((family, format, len), (Family::OpenStack, DiskFormat::Qcow2, (8 << 20) + 3));
        assert!(bytes == std::fs::read(&root).unwrap());
    }

    #[test]
    fn a_corrupt_or_truncated_archive_fails_before_the_end_of_the_disk() {
        let spool = tempfile::tempdir().unwrap();
        let disk = crate::cpi::diskimage::tests::noise_stream_vmdk(30);
        let f = tgz(&[("image.ovf", OVF), ("image-disk1.vmdk", &disk)]);
        let good = std::fs::read(f.path()).unwrap();
        // gzip's CRC (the trailer's first 4 bytes) no longer matches: the reader errs instead of ending
        let mut bad = good.clone();
        let at = bad.len() - 8;
        bad[at] ^= 0xff;
        let corrupt = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(corrupt.path(), &bad).unwrap();
        assert!(matches!(seen(corrupt.path(), spool.path()), Err(StemcellError::Io { .. })));
        // cut inside the disk
        let cut = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(cut.path(), &good[..good.len() / 2]).unwrap();
        assert!(seen(cut.path(), spool.path()).is_err());
        // an OVF whose disk is not in the image
        let f = tgz(&[("image.ovf", OVF), ("other.vmdk", b"KDMV")]);
        let e = seen(f.path(), spool.path()).unwrap_err().to_string();
        assert!(e.contains("image-disk1.vmdk") && e.contains("not in the image"), "{e}");
        let f = tgz(&[("README", b"hi")]);
        assert!(matches!(seen(f.path(), spool.path()), Err(StemcellError::NoDisk { .. })));
    }

    #[test]
    fn a_refused_disk_never_reaches_the_driver_and_a_late_refusal_is_the_error() {
        let spool = tempfile::tempdir().unwrap();
        let flat = b"# Disk DescriptorFile\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"/etc/passwd\" 0\n";
        let never = |d: Disk<'_>| -> Result<(), StemcellError> { panic!("handed over: {d:?}") };
        for files in [
            vec![("image.ovf", OVF), ("image-disk1.vmdk", &flat[..])],
            // before its OVF: refused while it would be spooled, and nothing stays in the spool directory
            vec![("image-disk1.vmdk", &flat[..]), ("image.ovf", OVF)],
        ] {
            let f = tgz(&files);
            let e = with_disk(f.path(), spool.path(), never).unwrap_err();
            assert!(matches!(e, StemcellError::Disk(DiskImageError::VmdkRefused { .. })), "{e}");
            assert!(e.to_string().contains("FLAT extent naming /etc/passwd"), "{e}");
            assert_eq!(std::fs::read_dir(spool.path()).unwrap().count(), 0);
        }
        let f = tgz(&[("root.img", b"KDMV\x01\0\0\0 a VMDK called raw")]);
        assert!(matches!(
            with_disk(f.path(), spool.path(), never),
            Err(StemcellError::Disk(DiskImageError::NotRaw { .. }))
        ));
        let f = tgz(&[("root.img", &crate::cpi::diskimage::tests::tiny_qcow2(1 << 50, 512))]);
        assert!(matches!(
            with_disk(f.path(), spool.path(), never),
            Err(StemcellError::Disk(DiskImageError::Qcow2Invalid(_)))
        ));
        // a stream broken after its head: the driver's read fails, whatever it makes of that the refusal wins
        let mut disk = crate::cpi::diskimage::tests::noise_stream_vmdk(4);
        disk[128 * 512] = 1; // the first grain's LBA: not on a grain boundary
        let f = tgz(&[("image.ovf", OVF), ("image-disk1.vmdk", &disk)]);
        let e = with_disk(f.path(), spool.path(), |d| -> Result<(), StemcellError> {
            assert_eq!(d.image.virtual_size, 5 * 65536);
            let mut sink = Vec::new();
            d.reader.read_to_end(&mut sink).map_err(|_| StemcellError::UnknownFormat("the driver's own".into()))?;
            panic!("read to the end")
        })
        .unwrap_err();
        assert!(e.to_string().contains("not on a grain boundary"), "{e}");
        let d: crate::cpi::error::DriverError = e.into();
        assert!(!d.retryable());
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
