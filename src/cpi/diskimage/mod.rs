//! Stemcell disks, inspected and read from a byte stream before anything else sees them (issue 19: a crafted
//! stemcell must not make a tool read host files; issue 18: VMDKs in process). The checks follow OpenStack's
//! image format inspector (oslo.utils `imageutils.format_inspector`, after CVE-2024-32498), stricter where a
//! stemcell allows it:
//!
//! - **VMDK** ([`vmdk`]): a hosted sparse extent (`KDMV`) whose embedded descriptor says `streamOptimized`
//!   (compressed grains with markers, read in one forward pass) or `monolithicSparse` (grain directory and
//!   tables), with exactly one extent, of type `SPARSE`, that is the file itself, and no parent. Text
//!   descriptors, other create types and extent types, several extents, parents (`parentCID`,
//!   `parentFileNameHint`), a capacity of 0 (qemu then reads the embedded descriptor as a descriptor *file*,
//!   extents and all), absurd sizes and grains outside the disk or on top of each other are refused.
//! - **qcow2** ([`qcow2`]): version 2 or 3 with no backing file, no external data file, no encryption, no
//!   incompatible feature we do not know, and sizes within bounds.
//! - **raw** ([`raw`]): raw is raw. A disk declared raw that begins with another format's header is refused
//!   rather than "probed": libvirt probes the volumes of a pool and would take such a file for what its header
//!   says (with that format's backing chain); nothing here ever turns a raw disk into another format.
//!
//! Allocations are bounded whatever a header says: a disk's virtual size is at most [`MAX_VIRTUAL_SIZE`],
//! a VMDK descriptor at most 1 MiB, a grain at most 1 MiB, a qcow2 header at most its first cluster (2 MiB).
//! No file is ever opened by a name found in an image.
//!
//! Entry points: [`Checked`] wraps a disk stream and refuses a bad disk before its first byte is handed on
//! (every stemcell disk goes through it in [`crate::cpi::stemcell::with_disk`]); [`vmdk::VmdkReader`] turns a VMDK
//! into the runs of data and holes of the virtual disk ([`Chunk`]), for a sparse upload or a sparse raw file
//! ([`vmdk::VmdkReader::write_sparse_raw`]).
use std::io::{self, Read};

pub mod qcow2;
pub mod raw;
pub mod vmdk;

#[cfg(test)]
pub(crate) mod tests;

/// The largest virtual disk accepted (1 TiB): a stemcell's root disk is a few GiB.
pub const MAX_VIRTUAL_SIZE: u64 = 1 << 40;

/// Why a stemcell disk was refused (or could not be read). Every variant but [`DiskImageError::Io`] and
/// [`DiskImageError::Write`] is permanent: the same disk is refused the same way.
#[derive(Debug, thiserror::Error)]
pub enum DiskImageError {
    #[error("cannot read the stemcell disk: {0}")]
    Io(#[source] io::Error),
    #[error("cannot write the converted stemcell disk: {0}")]
    Write(#[source] io::Error),
    /// A VMDK of a kind that is not accepted: `found` says what it is (`a VMDK with a FLAT extent naming …`).
    #[error("stemcell disk is {found}; only streamOptimized or monolithicSparse VMDKs with one SPARSE extent in the file itself and no parent are accepted")]
    VmdkRefused { found: String },
    /// A VMDK of an accepted kind whose structure is broken or out of bounds.
    #[error("stemcell disk is not a valid {kind} VMDK: {reason}")]
    VmdkInvalid { kind: &'static str, reason: String },
    /// A qcow2 image with something that reaches outside it or hides its data.
    #[error("stemcell disk is a qcow2 image with {found}; only a qcow2 image with no backing file, no external data file and no encryption is accepted")]
    Qcow2Refused { found: String },
    #[error("stemcell disk is not a valid qcow2 image: {0}")]
    Qcow2Invalid(String),
    /// A disk declared raw whose first bytes are another format's header.
    #[error("stemcell disk {name} is taken as raw (it is not qcow2) but starts with {found}; a raw disk is only ever used as raw, so it is refused")]
    NotRaw { name: String, found: &'static str },
    /// A disk the consumer cannot take (a monolithicSparse VMDK for an OVF import, which streams).
    #[error("stemcell disk is {found}; {wanted}")]
    Unsupported { found: String, wanted: String },
}

impl DiskImageError {
    fn vmdk(kind: vmdk::Kind, reason: impl Into<String>) -> Self {
        DiskImageError::VmdkInvalid { kind: kind.as_str(), reason: reason.into() }
    }

    /// Whether the error comes from reading or writing (the disk itself may be fine).
    pub fn is_io(&self) -> bool {
        matches!(self, DiskImageError::Io(_) | DiskImageError::Write(_))
    }
}

impl crate::cpi::error::DriverFailure for DiskImageError {
    /// A refusal is permanent, and so is a read of data that is malformed or ends early; another read
    /// error or a write error may pass.
    fn retryable(&self) -> bool {
        match self {
            DiskImageError::Io(e) => crate::cpi::error::io_may_pass(e),
            d => d.is_io(),
        }
    }
}

pub type Result<T> = std::result::Result<T, DiskImageError>;

/// The format of a stemcell disk, as inspection found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Raw,
    Qcow2 { version: u32 },
    Vmdk(vmdk::Kind),
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Format::Raw => f.write_str("raw"),
            Format::Qcow2 { version } => write!(f, "qcow2 (version {version})"),
            Format::Vmdk(k) => write!(f, "{} VMDK", k.as_str()),
        }
    }
}

/// What inspecting a disk found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    pub format: Format,
    /// The size of the virtual disk in bytes.
    pub virtual_size: u64,
}

/// One run of a virtual disk, in order from offset 0 to the virtual size: bytes, or a hole (zeros).
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk<'a> {
    Data { offset: u64, bytes: &'a [u8] },
    Hole { offset: u64, len: u64 },
}

/// A name or path from an image, fit for a message: control characters escaped, at most 200 characters.
pub(crate) fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == 200 {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Reads until `buf` is full or the stream ends; the count read.
pub(crate) fn read_up_to(r: &mut (impl Read + ?Sized), buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A stemcell disk's stream, checked: [`Checked::new`] reads and checks the disk's headers (refusing a bad
/// disk before anything is handed on), and reading it yields the disk's bytes unchanged, its head replayed.
/// A stream-optimised VMDK is checked further as it passes (markers, grain order and bounds, footer, end of
/// stream): a violation is a read error, and [`Checked::refusal`] holds the reason. Grain payloads are not
/// inflated here ([`vmdk::VmdkReader`] does that); a monolithicSparse VMDK's tables are checked by the reader
/// that uses them.
pub struct Checked<'r> {
    inner: &'r mut dyn Read,
    head: Vec<u8>,
    head_pos: usize,
    info: Info,
    vmdk: Option<vmdk::StreamCheck>,
    refusal: Option<DiskImageError>,
}

/// The declared format of a disk, as the stemcell's layout says it (root.img: qcow2 by its magic, else raw;
/// an OVF's disk or a bare `KDMV` file: VMDK).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared {
    Raw,
    Qcow2,
    Vmdk,
}

impl<'r> Checked<'r> {
    /// Reads the head of `inner` (a disk of `len` bytes named `name`, declared `declared`) and checks it.
    pub fn new(declared: Declared, name: &str, len: u64, inner: &'r mut dyn Read) -> Result<Self> {
        let (info, head, vmdk) = match declared {
            Declared::Raw => {
                let mut head = vec![0u8; raw::HEAD.min(len as usize)];
                let n = read_up_to(inner, &mut head).map_err(DiskImageError::Io)?;
                head.truncate(n);
                raw::check(name, &head)?;
                (Info { format: Format::Raw, virtual_size: len }, head, None)
            }
            Declared::Qcow2 => {
                let (q, head) = qcow2::inspect_stream(inner, len)?;
                (Info { format: Format::Qcow2 { version: q.version }, virtual_size: q.virtual_size }, head, None)
            }
            Declared::Vmdk => {
                let mut check = vmdk::StreamCheck::new(len);
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !check.past_descriptor() {
                    let n = read_up_to(inner, &mut buf).map_err(DiskImageError::Io)?;
                    if n == 0 {
                        check.finish()?;
                        break;
                    }
                    check.feed(&buf[..n])?;
                    head.extend_from_slice(&buf[..n]);
                }
                let (kind, capacity) = check.kind_and_capacity();
                let info = Info { format: Format::Vmdk(kind), virtual_size: capacity };
                (info, head, (kind == vmdk::Kind::StreamOptimized).then_some(check))
            }
        };
        crate::info!("{name}: {}, virtual size {} MiB", info.format, info.virtual_size >> 20);
        Ok(Checked { inner, head, head_pos: 0, info, vmdk, refusal: None })
    }

    pub fn info(&self) -> Info {
        self.info
    }

    /// Why reading failed, when the disk itself was refused as it passed.
    pub fn refusal(&mut self) -> Option<DiskImageError> {
        self.refusal.take()
    }

    fn refuse(&mut self, e: DiskImageError) -> io::Error {
        let err = io::Error::new(io::ErrorKind::InvalidData, e.to_string());
        self.refusal = Some(e);
        err
    }
}

impl Read for Checked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.head_pos < self.head.len() {
            let n = buf.len().min(self.head.len() - self.head_pos);
            buf[..n].copy_from_slice(&self.head[self.head_pos..self.head_pos + n]);
            self.head_pos += n;
            return Ok(n);
        }
        if let Some(e) = &self.refusal {
            return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
        }
        let n = self.inner.read(buf)?;
        if let Some(check) = self.vmdk.as_mut() {
            let r = if n == 0 { check.finish() } else { check.feed(&buf[..n]) };
            if let Err(e) = r {
                return Err(self.refuse(e));
            }
        }
        Ok(n)
    }
}
