//! VMDK hosted sparse extents (VMware's "Virtual Disk Format 5.0"): the two kinds stemcells ship.
//!
//! - **streamOptimized**: header (`KDMV`, compressed grains with markers), embedded descriptor, then from
//!   sector `overHead` a sequence of records: a grain marker (`LBA`, compressed size) with its deflate (zlib)
//!   payload padded to a sector, or a metadata marker (grain table, grain directory, footer, end of stream).
//!   [`StreamCheck`] follows that sequence in one forward pass, from a stream that cannot seek (as it lies in a
//!   tar): grains in strictly increasing LBA order on grain boundaries inside the disk, payloads of bounded size,
//!   at most one footer that repeats the header, an end-of-stream marker, and only zeros after it (qemu-img pads).
//!   The grain directory is not needed to read such a stream, so it is not read.
//! - **monolithicSparse**: header, embedded descriptor, grain directory and grain tables, grains. The tables
//!   are read first; when the grains then lie in disk order after them (qemu-img and VMware write them so), the
//!   disk is read in the same forward pass; otherwise the rest of the stream is spooled to an unnamed scratch
//!   file (nothing is left even on SIGKILL) and read from there.
//!
//! The header and the embedded descriptor are checked the same way for both ([`check_descriptor`]): the
//! descriptor is at sector 1 and under 1 MiB; every line is a comment, a `key=value` field, a `ddb.` entry
//! or an extent; there is exactly one extent, `RW|RDONLY <capacity> SPARSE "<plain name>"` (the file itself:
//! never a path, nothing after the name); no parent (`parentCID` other than `ffffffff`, or
//! `parentFileNameHint` anywhere, even in a comment, where qemu's substring search would still find it); a
//! `createType` that matches the header's flags. A file that is not a sparse extent (a text descriptor naming
//! other files, a `COWD` extent) is refused and described.
use super::{read_up_to, shown, Chunk, DiskImageError, Result, MAX_VIRTUAL_SIZE};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const SECTOR: u64 = 512;
/// `gdOffset` of a stream whose grain directory is in its footer.
const GD_AT_END: u64 = u64::MAX;
const FLAG_NL_DETECT: u32 = 1;
const FLAG_REDUNDANT_GT: u32 = 1 << 1;
const FLAG_ZERO_GTE: u32 = 1 << 2;
const FLAG_COMPRESSED: u32 = 1 << 16;
const FLAG_MARKERS: u32 = 1 << 17;
const KNOWN_FLAGS: u32 = FLAG_NL_DETECT | FLAG_REDUNDANT_GT | FLAG_ZERO_GTE | FLAG_COMPRESSED | FLAG_MARKERS;
/// Grains of 4 KiB to 1 MiB (VMware's minimum is 8 sectors; stemcells use 64 KiB).
const MIN_GRAIN: u64 = 8;
const MAX_GRAIN: u64 = 2048;
/// The descriptor: at sector 1, at most 2047 sectors (qemu's and OpenStack's bound: under 1 MiB).
const MAX_DESCRIPTOR_SECTORS: u64 = 2047;
const GTES_PER_GT: u64 = 512;
/// At most this many allocated grains in a monolithicSparse disk (128 GiB of 64 KiB grains; 16 MiB of table).
const MAX_GRAINS: usize = 1 << 21;
/// What a text (non-`KDMV`) file is read for to describe it.
const TEXT_PROBE: usize = 64 << 10;
/// The metadata read into memory before it goes to a scratch file (monolithicSparse).
const MEM_RECORD: usize = 8 << 20;

/// The two kinds of VMDK accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    StreamOptimized,
    MonolithicSparse,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::StreamOptimized => "streamOptimized",
            Kind::MonolithicSparse => "monolithicSparse",
        }
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn refused(found: impl Into<String>) -> DiskImageError {
    DiskImageError::VmdkRefused { found: found.into() }
}

/// A sparse extent header (sector 0, and the footer of a stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    version: u32,
    flags: u32,
    capacity: u64,
    grain: u64,
    desc_offset: u64,
    desc_size: u64,
    gtes_per_gt: u32,
    gd_offset: u64,
    overhead: u64,
    compress: u16,
}

impl Header {
    fn parse(b: &[u8]) -> Header {
        Header {
            version: le32(b, 4),
            flags: le32(b, 8),
            capacity: le64(b, 12),
            grain: le64(b, 20),
            desc_offset: le64(b, 28),
            desc_size: le64(b, 36),
            gtes_per_gt: le32(b, 44),
            gd_offset: le64(b, 56),
            overhead: le64(b, 64),
            compress: u16::from_le_bytes([b[77], b[78]]),
        }
    }

    /// The kind the flags say.
    fn kind(&self) -> Kind {
        if self.flags & FLAG_COMPRESSED != 0 || self.flags & FLAG_MARKERS != 0 {
            Kind::StreamOptimized
        } else {
            Kind::MonolithicSparse
        }
    }

    /// Checks where the descriptor is (it is read next, and checked before the rest of the header).
    fn check_descriptor_place(&self) -> Result<()> {
        if self.desc_offset != 1 || self.desc_size == 0 || self.desc_size > MAX_DESCRIPTOR_SECTORS {
            return Err(DiskImageError::vmdk(
                self.kind(),
                format!(
                    "a descriptor at sector {} of {} sectors (it must be at sector 1, under 1 MiB)",
                    self.desc_offset, self.desc_size
                ),
            ));
        }
        Ok(())
    }

    /// Checks the header of a file of `len` bytes (sector 0 is `b`).
    fn check(&self, b: &[u8], len: u64) -> Result<()> {
        let kind = self.kind();
        let bad = |reason: String| DiskImageError::vmdk(kind, reason);
        if !(1..=3).contains(&self.version) {
            return Err(bad(format!("header version {} (1 to 3 are accepted)", self.version)));
        }
        if self.flags & !KNOWN_FLAGS != 0 {
            return Err(bad(format!("unknown header flags {:#x}", self.flags & !KNOWN_FLAGS)));
        }
        if self.flags & FLAG_NL_DETECT != 0 && &b[73..77] != b"\n \r\n" {
            return Err(bad("its end-of-line check characters are altered (was it copied as text?)".into()));
        }
        let stream = self.flags & FLAG_COMPRESSED != 0 && self.flags & FLAG_MARKERS != 0;
        match kind {
            Kind::StreamOptimized if !stream || self.compress != 1 => {
                return Err(bad(format!(
                    "its header flags {:#x} and compression {} are not those of a stream (compressed grains with markers, deflate)",
                    self.flags, self.compress
                )));
            }
            Kind::MonolithicSparse if self.compress != 0 => {
                return Err(bad(format!("compression {} without compressed grains", self.compress)));
            }
            _ => {}
        }
        if self.capacity == 0 {
            // qemu then reads the embedded descriptor as a descriptor *file*, with extents naming other files
            return Err(refused(
                "a VMDK sparse extent of capacity 0 (a descriptor file in disguise: its extents would be followed)",
            ));
        }
        if self.capacity > MAX_VIRTUAL_SIZE / SECTOR {
            return Err(bad(format!(
                "a capacity of {} sectors (at most {} bytes are accepted)",
                self.capacity, MAX_VIRTUAL_SIZE
            )));
        }
        if !self.grain.is_power_of_two() || !(MIN_GRAIN..=MAX_GRAIN).contains(&self.grain) {
            return Err(bad(format!("a grain of {} sectors (a power of two from 8 to 2048)", self.grain)));
        }
        self.check_descriptor_place()?;
        if self.gtes_per_gt as u64 != GTES_PER_GT {
            return Err(bad(format!("{} grain table entries per table (512)", self.gtes_per_gt)));
        }
        let meta_end = self.desc_offset + self.desc_size;
        if self.overhead < meta_end || self.overhead.saturating_mul(SECTOR) > len {
            return Err(bad(format!("an overhead of {} sectors in a file of {len} bytes", self.overhead)));
        }
        if kind == Kind::MonolithicSparse
            && (self.gd_offset == GD_AT_END
                || self.gd_offset < meta_end
                || self.gd_offset.saturating_mul(SECTOR) >= len)
        {
            return Err(bad(format!("a grain directory at sector {} in a file of {len} bytes", self.gd_offset)));
        }
        Ok(())
    }

    fn grain_bytes(&self) -> u64 {
        self.grain * SECTOR
    }

    /// Sectors of a grain directory (4 bytes per grain table).
    fn gd_entries(&self) -> u64 {
        self.capacity.div_ceil(self.grain).div_ceil(GTES_PER_GT)
    }
}

/// One extent line of a descriptor.
#[derive(Debug)]
struct Extent {
    line: String,
    access: String,
    sectors: Option<u64>,
    kind: String,
    name: Option<Vec<u8>>,
    rest: String,
}

/// A descriptor, parsed without trusting it.
#[derive(Debug, Default)]
struct Descriptor {
    create_types: Vec<String>,
    parent_cid: Option<String>,
    parent_hint: Option<String>,
    extents: Vec<Extent>,
    bad_line: Option<String>,
}

fn unquote(v: &str) -> &str {
    let v = v.trim();
    v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v)
}

fn parse_extent(line: &str) -> Extent {
    let mut it = line.splitn(4, char::is_whitespace).filter(|s| !s.is_empty());
    let access = it.next().unwrap_or_default().to_ascii_uppercase();
    let sectors = it.next().and_then(|s| s.parse().ok());
    let kind = it.next().unwrap_or_default().to_ascii_uppercase();
    // the rest: an optional quoted name, then anything (an offset for FLAT extents)
    let after_kind = line
        .splitn(3, char::is_whitespace)
        .filter(|s| !s.is_empty())
        .nth(2)
        .and_then(|s| s.trim_start().split_once(char::is_whitespace).map(|(_, r)| r.trim()))
        .unwrap_or_default();
    let (name, rest) = match after_kind.strip_prefix('"').and_then(|r| r.split_once('"')) {
        Some((name, rest)) => (Some(name.as_bytes().to_vec()), rest.trim().to_string()),
        None => (None, after_kind.to_string()),
    };
    Extent { line: line.to_string(), access, sectors, kind, name, rest }
}

fn parse_descriptor(text: &[u8]) -> Descriptor {
    let mut d = Descriptor::default();
    let lower = String::from_utf8_lossy(text).to_ascii_lowercase();
    if let Some(at) = lower.find("parentfilenamehint") {
        // the value as the line holds it (in a comment too: qemu's substring search would find it there)
        let line = String::from_utf8_lossy(text)[at..].lines().next().unwrap_or_default().to_string();
        d.parent_hint = Some(line.split_once('=').map(|(_, v)| unquote(v).to_string()).unwrap_or(line));
    }
    for raw in text.split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(raw);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.len() >= 4 && line.as_bytes()[..4].eq_ignore_ascii_case(b"ddb.") {
            continue;
        }
        let first = line.split_whitespace().next().unwrap_or_default().to_ascii_uppercase();
        if ["RW", "RDONLY", "NOACCESS"].contains(&first.as_str()) {
            d.extents.push(parse_extent(line));
            continue;
        }
        match line.split_once('=') {
            Some((k, v)) if !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') => {
                let v = unquote(v).to_string();
                match k.to_ascii_lowercase().as_str() {
                    "createtype" => d.create_types.push(v),
                    "parentcid" => d.parent_cid = Some(v),
                    _ => {}
                }
            }
            _ => {
                if d.bad_line.is_none() {
                    d.bad_line = Some(line.to_string());
                }
            }
        }
    }
    d
}

impl Descriptor {
    /// Why this descriptor is refused (`what`: "a VMDK" or "a VMDK text descriptor"), most telling first;
    /// `None` when it is one accepted SPARSE extent in the file itself, without a parent.
    fn refusal(&self, what: &str) -> Option<String> {
        if let Some(hint) = &self.parent_hint {
            return Some(format!("{what} with a parent (parentFileNameHint=\"{}\")", shown(hint.as_bytes())));
        }
        if let Some(cid) = self.parent_cid.as_deref().filter(|c| !c.eq_ignore_ascii_case("ffffffff")) {
            return Some(format!("{what} with a parent (parentCID={})", shown(cid.as_bytes())));
        }
        match self.extents.len() {
            0 => return Some(format!("{what} with no extent")),
            1 => {}
            n => {
                let lines: Vec<String> = self.extents.iter().map(|e| shown(e.line.as_bytes())).collect();
                return Some(format!("{what} with {n} extents ({})", lines.join("; ")));
            }
        }
        let e = &self.extents[0];
        let naming = |e: &Extent| e.name.as_deref().map(|n| format!(" naming {}", shown(n))).unwrap_or_default();
        if e.kind != "SPARSE" {
            return Some(format!("{what} with a{} {} extent{}", article(&e.kind), shown(e.kind.as_bytes()), naming(e)));
        }
        if let Some(name) = &e.name {
            if name.is_empty()
                || name.contains(&b'/')
                || name.contains(&b'\\')
                || name == b".."
                || name == b"."
                || name.iter().any(|b| b.is_ascii_control())
                || name.len() > 255
            {
                return Some(format!("{what} whose extent names another file ({})", shown(name)));
            }
        } else {
            return Some(format!("{what} with an extent that names no file ({})", shown(e.line.as_bytes())));
        }
        if !e.rest.is_empty() {
            return Some(format!("{what} with an extent with more after its name ({})", shown(e.line.as_bytes())));
        }
        if e.access != "RW" && e.access != "RDONLY" {
            return Some(format!("{what} with a {} extent", shown(e.access.as_bytes())));
        }
        match self.create_types.as_slice() {
            [] => Some(format!("{what} whose descriptor has no createType")),
            [t] if t == "streamOptimized" || t == "monolithicSparse" => {
                if let Some(line) = &self.bad_line {
                    return Some(format!(
                        "{what} with a descriptor line that is not VMDK ({})",
                        shown(line.as_bytes())
                    ));
                }
                None
            }
            [t] => Some(format!("{what} of type {}", shown(t.as_bytes()))),
            _ => Some(format!("{what} with {} createType lines", self.create_types.len())),
        }
    }
}

fn article(word: &str) -> &'static str {
    match word.bytes().next().map(|b| b.to_ascii_uppercase()) {
        Some(b'A' | b'E' | b'I' | b'O' | b'U') => "n",
        _ => "",
    }
}

/// Checks a sparse extent: `head` is its header sector and its descriptor's sectors, `len` the file's size.
/// What the descriptor names comes first (it tells most about a crafted file), then the header's bounds.
fn check_extent(hdr: &Header, head: &[u8], len: u64) -> Result<Kind> {
    let kind = hdr.kind();
    let bytes = &head[512..];
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let text = &bytes[..end];
    let d = parse_descriptor(text);
    if let Some(found) = d.refusal("a VMDK") {
        return Err(refused(found));
    }
    hdr.check(head, len)?;
    // what follows the first NUL is not the descriptor for qemu or VMware (C strings); qemu itself leaves the
    // tail of the old text there when it rewrites the CID shorter. Only lines a parser that did not stop at
    // the NUL would act on are refused.
    let rest: Vec<u8> = bytes[end..].iter().map(|&b| if b == 0 { b'\n' } else { b }).collect();
    let hidden = parse_descriptor(&rest);
    if !hidden.extents.is_empty()
        || !hidden.create_types.is_empty()
        || hidden.parent_cid.is_some()
        || hidden.parent_hint.is_some()
    {
        let line = hidden.extents.first().map(|e| e.line.clone()).unwrap_or_default();
        return Err(refused(format!(
            "a VMDK with descriptor lines after a NUL byte, where some readers would still see them ({})",
            shown(line.as_bytes())
        )));
    }
    let e = &d.extents[0];
    if e.sectors != Some(hdr.capacity) {
        return Err(DiskImageError::vmdk(
            kind,
            format!("its extent is {:?} sectors, its header says {}", e.sectors, hdr.capacity),
        ));
    }
    let said = d.create_types[0].as_str();
    if said != kind.as_str() {
        return Err(DiskImageError::vmdk(
            kind,
            format!("its descriptor says {said} but its header is that of a {}", kind.as_str()),
        ));
    }
    Ok(kind)
}

/// Describes a file that is not a sparse extent (`head`: its first bytes, up to 64 KiB).
fn describe_other(head: &[u8]) -> DiskImageError {
    if head.starts_with(b"COWD") {
        return refused("a VMDK COWD (ESX 2 sparse) extent");
    }
    let text = &head[..head.iter().position(|&b| b == 0).unwrap_or(head.len())];
    let d = parse_descriptor(text);
    let looks_like_text = !d.extents.is_empty() || !d.create_types.is_empty() || head.starts_with(b"# Disk Descriptor");
    if looks_like_text {
        let found = d.refusal("a VMDK text descriptor").unwrap_or_else(|| {
            let name = d.extents[0].name.as_deref().map(shown).unwrap_or_default();
            format!("a VMDK text descriptor (its data would be read from the file it names, {name})")
        });
        return refused(found);
    }
    let shown_head: String = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
    DiskImageError::VmdkInvalid {
        kind: "sparse",
        reason: format!("it does not start with a sparse extent header (KDMV) but with bytes {shown_head}"),
    }
}

/// What a step of [`StreamCheck`] met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    None,
    /// A grain marker: the grain of the virtual disk at sector `lba`.
    GrainStart {
        lba: u64,
    },
    /// Compressed bytes of the current grain: `input[start..end]` of the step's input; `last` when they
    /// are the grain's last.
    Payload {
        start: usize,
        end: usize,
        last: bool,
    },
}

#[derive(Debug)]
enum State {
    /// Collecting the first sector.
    Header,
    /// Not a sparse extent: collecting its head to describe it.
    Other,
    /// Collecting the descriptor (`head` up to `end` bytes).
    Descriptor {
        end: usize,
    },
    /// monolithicSparse: past the descriptor; its tables are checked by the reader that uses them.
    Unchecked,
    /// Up to the first grain marker (`overHead`).
    Skip {
        left: u64,
    },
    Marker {
        have: usize,
    },
    Payload {
        left: u64,
        pad: u64,
    },
    Pad {
        left: u64,
    },
    /// The rest of a metadata marker's sector and its metadata; then a footer when `footer`.
    Meta {
        left: u64,
        footer: bool,
    },
    Footer,
    /// After the end-of-stream marker: zeros only.
    Trailing,
}

/// The forward check of a VMDK stream, fed its bytes in pieces of any size.
pub(crate) struct StreamCheck {
    len: u64,
    pos: u64,
    state: State,
    head: Vec<u8>,
    hdr: Option<Header>,
    marker: [u8; 16],
    next_lba: u64,
    footer_seen: bool,
    /// A grain or metadata marker has been seen.
    records: bool,
}

impl StreamCheck {
    /// A check of a file of `len` bytes.
    pub(crate) fn new(len: u64) -> Self {
        StreamCheck {
            len,
            pos: 0,
            state: State::Header,
            head: Vec::new(),
            hdr: None,
            marker: [0; 16],
            next_lba: 0,
            footer_seen: false,
            records: false,
        }
    }

    pub(crate) fn past_descriptor(&self) -> bool {
        !matches!(self.state, State::Header | State::Other | State::Descriptor { .. })
    }

    /// The kind and the virtual size in bytes (once past the descriptor).
    pub(crate) fn kind_and_capacity(&self) -> (Kind, u64) {
        let h = self.hdr.expect("checked header");
        (h.kind(), h.capacity * SECTOR)
    }

    fn hdr(&self) -> Header {
        self.hdr.expect("checked header")
    }

    fn bad(&self, reason: impl Into<String>) -> DiskImageError {
        let kind = self.hdr.map(|h| h.kind().as_str()).unwrap_or("sparse");
        DiskImageError::VmdkInvalid { kind, reason: reason.into() }
    }

    /// Feeds `input`, ignoring what it holds beyond its structure.
    pub(crate) fn feed(&mut self, mut input: &[u8]) -> Result<()> {
        while !input.is_empty() {
            let (n, _) = self.step(input)?;
            input = &input[n..];
        }
        Ok(())
    }

    /// The stream has ended: fails unless it was complete.
    pub(crate) fn finish(&mut self) -> Result<()> {
        match self.state {
            State::Unchecked | State::Trailing => Ok(()),
            // qemu-img's stream of a disk with no data: its tables at the start, no grain, no marker at all
            State::Marker { have: 0 } if !self.records && self.hdr().gd_offset != GD_AT_END => {
                self.state = State::Trailing;
                Ok(())
            }
            State::Other => Err(describe_other(&self.head)),
            State::Header if self.pos == 0 => Err(self.bad("the file is empty")),
            State::Header if !self.head.starts_with(b"KDMV") && !b"KDMV".starts_with(&self.head) => {
                Err(describe_other(&self.head))
            }
            State::Header => Err(self.bad(format!("the file ends inside its header ({} bytes)", self.pos))),
            State::Descriptor { .. } => {
                Err(self.bad(format!("the file ends inside its descriptor ({} bytes)", self.pos)))
            }
            _ => {
                Err(self
                    .bad(format!("the file ends at byte {} before its end-of-stream marker (cut short?)", self.pos)))
            }
        }
    }

    /// Consumes a first part of `input` (never nothing, unless `input` is empty) and says what it met.
    pub(crate) fn step(&mut self, input: &[u8]) -> Result<(usize, Event)> {
        if input.is_empty() {
            return Ok((0, Event::None));
        }
        let (n, ev) = self.step_inner(input)?;
        self.pos += n as u64;
        Ok((n, ev))
    }

    fn step_inner(&mut self, input: &[u8]) -> Result<(usize, Event)> {
        match self.state {
            State::Header => {
                let n = input.len().min(512 - self.head.len());
                self.head.extend_from_slice(&input[..n]);
                if self.head.len() >= 4 && &self.head[..4] != b"KDMV" {
                    self.state = State::Other;
                    return Ok((n, Event::None));
                }
                if self.head.len() == 512 {
                    if &self.head[..4] != b"KDMV" {
                        self.state = State::Other;
                        return Ok((n, Event::None));
                    }
                    let h = Header::parse(&self.head);
                    h.check_descriptor_place()?;
                    self.hdr = Some(h);
                    self.state = State::Descriptor { end: ((h.desc_offset + h.desc_size) * SECTOR) as usize };
                }
                Ok((n, Event::None))
            }
            State::Other => {
                let n = input.len().min(TEXT_PROBE - self.head.len());
                self.head.extend_from_slice(&input[..n]);
                if self.head.len() == TEXT_PROBE {
                    return Err(describe_other(&self.head));
                }
                Ok((n, Event::None))
            }
            State::Descriptor { end } => {
                let n = input.len().min(end - self.head.len());
                self.head.extend_from_slice(&input[..n]);
                if self.head.len() == end {
                    let h = self.hdr();
                    check_extent(&h, &self.head, self.len)?;
                    self.head = Vec::new();
                    self.state = match h.kind() {
                        Kind::MonolithicSparse => State::Unchecked,
                        Kind::StreamOptimized => {
                            let left = h.overhead * SECTOR - end as u64;
                            if left == 0 {
                                State::Marker { have: 0 }
                            } else {
                                State::Skip { left }
                            }
                        }
                    };
                }
                Ok((n, Event::None))
            }
            State::Unchecked => Ok((input.len(), Event::None)),
            State::Skip { left } => {
                let n = (input.len() as u64).min(left);
                self.state = if n == left { State::Marker { have: 0 } } else { State::Skip { left: left - n } };
                Ok((n as usize, Event::None))
            }
            State::Marker { have } => {
                // 12 bytes say a grain (size > 0) or a metadata marker (size 0, then its type)
                let want = if have >= 12 && le32(&self.marker, 8) == 0 { 16 } else { 12 };
                let n = input.len().min(want - have);
                self.marker[have..have + n].copy_from_slice(&input[..n]);
                let have = have + n;
                self.state = State::Marker { have };
                if have < 12 {
                    return Ok((n, Event::None));
                }
                let val = le64(&self.marker, 0);
                let size = le32(&self.marker, 8) as u64;
                let start = self.pos - (have - n) as u64;
                self.records = true;
                if size > 0 {
                    return Ok((n, self.grain_marker(val, size, start)?));
                }
                if have < 16 {
                    return Ok((n, Event::None));
                }
                self.meta_marker(val, le32(&self.marker, 12), start)?;
                Ok((n, Event::None))
            }
            State::Payload { left, pad } => {
                let n = (input.len() as u64).min(left) as usize;
                let last = n as u64 == left;
                self.state = if !last {
                    State::Payload { left: left - n as u64, pad }
                } else if pad == 0 {
                    State::Marker { have: 0 }
                } else {
                    State::Pad { left: pad }
                };
                Ok((n, Event::Payload { start: 0, end: n, last }))
            }
            State::Pad { left } => {
                let n = (input.len() as u64).min(left);
                self.state = if n == left { State::Marker { have: 0 } } else { State::Pad { left: left - n } };
                Ok((n as usize, Event::None))
            }
            State::Meta { left, footer } => {
                let n = (input.len() as u64).min(left);
                self.state = if n < left {
                    State::Meta { left: left - n, footer }
                } else if footer {
                    self.head.clear();
                    State::Footer
                } else {
                    State::Marker { have: 0 }
                };
                Ok((n as usize, Event::None))
            }
            State::Footer => {
                let n = input.len().min(512 - self.head.len());
                self.head.extend_from_slice(&input[..n]);
                if self.head.len() == 512 {
                    self.check_footer()?;
                    self.head = Vec::new();
                    self.state = State::Marker { have: 0 };
                }
                Ok((n, Event::None))
            }
            State::Trailing => {
                if let Some(i) = input.iter().position(|&b| b != 0) {
                    return Err(self
                        .bad(format!("it has data after its end-of-stream marker (at byte {})", self.pos + i as u64)));
                }
                Ok((input.len(), Event::None))
            }
        }
    }

    /// A grain marker at byte `start`.
    fn grain_marker(&mut self, lba: u64, size: u64, start: u64) -> Result<Event> {
        let h = self.hdr();
        if self.footer_seen {
            return Err(self.bad(format!("a grain (sector {lba}) follows its footer")));
        }
        if !lba.is_multiple_of(h.grain) {
            return Err(self.bad(format!("the grain at sector {lba} is not on a grain boundary ({} sectors)", h.grain)));
        }
        if lba >= h.capacity {
            return Err(self.bad(format!("a grain at sector {lba}, outside the disk ({} sectors)", h.capacity)));
        }
        if lba < self.next_lba {
            return Err(self.bad(format!(
                "the grain at sector {lba} overlaps or comes before the one before it (the next could start at sector {})",
                self.next_lba
            )));
        }
        // deflate never grows data by more than a little: twice the grain is far beyond any encoder
        let max = 2 * h.grain_bytes() + SECTOR;
        if size > max {
            return Err(self.bad(format!("the grain at sector {lba} claims {size} compressed bytes (at most {max})")));
        }
        let record = (12 + size).div_ceil(SECTOR) * SECTOR;
        if start + record > self.len {
            return Err(
                self.bad(format!("the grain at sector {lba} runs past the end of the file ({} bytes)", self.len))
            );
        }
        self.next_lba = lba + h.grain;
        self.state = State::Payload { left: size, pad: record - 12 - size };
        Ok(Event::GrainStart { lba })
    }

    /// A metadata marker at byte `start`.
    fn meta_marker(&mut self, val: u64, ty: u32, start: u64) -> Result<()> {
        let h = self.hdr();
        if self.footer_seen && ty != 0 {
            return Err(self.bad("only the end-of-stream marker may follow its footer"));
        }
        match ty {
            0 => {
                if h.gd_offset == GD_AT_END && !self.footer_seen {
                    return Err(self.bad("it has no footer, and its header puts the grain directory in one"));
                }
                // the rest of the marker's sector is zeros, as everything after it
                self.state = State::Trailing;
            }
            1 | 2 => {
                let max = if ty == 1 { GTES_PER_GT * 4 / SECTOR } else { (h.gd_entries() * 4).div_ceil(SECTOR) };
                if val == 0 || val > max {
                    let what = if ty == 1 { "grain table" } else { "grain directory" };
                    return Err(self.bad(format!("a {what} marker of {val} sectors (at most {max})")));
                }
                self.state = State::Meta { left: SECTOR - 16 + val * SECTOR, footer: false };
            }
            3 => {
                if self.footer_seen {
                    return Err(self.bad("it has two footers"));
                }
                self.state = State::Meta { left: SECTOR - 16, footer: true };
            }
            t => return Err(self.bad(format!("an unknown marker type {t} at byte {start}"))),
        }
        Ok(())
    }

    fn check_footer(&mut self) -> Result<()> {
        let h = self.hdr();
        if &self.head[..4] != b"KDMV" {
            return Err(self.bad("its footer is not a sparse extent header"));
        }
        let f = Header::parse(&self.head);
        let same = Header { gd_offset: h.gd_offset, ..f } == h;
        if !same {
            return Err(self.bad("its footer does not repeat its header (only the grain directory may differ)"));
        }
        self.footer_seen = true;
        Ok(())
    }
}

/// A VMDK read as the virtual disk it holds: [`VmdkReader::next_chunk`] yields its runs of data and holes in
/// order, from offset 0 to the virtual size, each grain's bytes as they come out of the stream (never more
/// than one grain in memory). Grains that are all zeros become holes.
///
/// For a sparse upload (libvirt's stream upload with holes) send each [`Chunk::Data`] as data and each
/// [`Chunk::Hole`] as a hole; for a file, [`VmdkReader::write_sparse_raw`].
pub struct VmdkReader<R: Read> {
    inner: Inner<R>,
}

enum Inner<R: Read> {
    Stream(Box<StreamReader<R>>),
    Mono(Box<MonoReader<R>>),
}

impl<R: Read> VmdkReader<R> {
    /// Reads and checks the header and descriptor of the VMDK of `len` bytes that `r` yields; a
    /// monolithicSparse disk's tables too. `scratch` is where a monolithicSparse disk whose grains are not in
    /// disk order is spooled (an unnamed file: nothing is ever left there). No other file is opened.
    pub fn open(mut r: R, len: u64, scratch: &Path) -> Result<Self> {
        let mut check = StreamCheck::new(len);
        let mut head = Vec::new();
        let mut rest = Vec::new();
        let mut buf = vec![0u8; 4096];
        while !check.past_descriptor() {
            let n = read_up_to(&mut r, &mut buf).map_err(DiskImageError::Io)?;
            if n == 0 {
                check.finish()?;
                break;
            }
            let mut used = 0;
            while used < n && !check.past_descriptor() {
                used += check.step(&buf[used..n])?.0;
            }
            head.extend_from_slice(&buf[..used]);
            rest.extend_from_slice(&buf[used..n]);
        }
        let (kind, _) = check.kind_and_capacity();
        let hdr = check.hdr();
        let inner = match kind {
            Kind::StreamOptimized => Inner::Stream(Box::new(StreamReader::new(r, check, rest, hdr))),
            Kind::MonolithicSparse => {
                head.extend_from_slice(&rest);
                Inner::Mono(Box::new(MonoReader::new(r, head, len, hdr, scratch)?))
            }
        };
        Ok(VmdkReader { inner })
    }

    pub fn kind(&self) -> Kind {
        match &self.inner {
            Inner::Stream(_) => Kind::StreamOptimized,
            Inner::Mono(_) => Kind::MonolithicSparse,
        }
    }

    /// The size of the virtual disk in bytes.
    pub fn virtual_size(&self) -> u64 {
        match &self.inner {
            Inner::Stream(s) => s.cap,
            Inner::Mono(m) => m.cap,
        }
    }

    /// The next run of the virtual disk; `None` after the last (the whole input has then been read).
    pub fn next_chunk(&mut self) -> Result<Option<Chunk<'_>>> {
        match &mut self.inner {
            Inner::Stream(s) => s.next_chunk(),
            Inner::Mono(m) => m.next_chunk(),
        }
    }

    /// Writes the virtual disk into `out` as a sparse raw file (data written, holes left as holes); returns
    /// the bytes of data written.
    pub fn write_sparse_raw(&mut self, out: &File) -> Result<u64> {
        let size = self.virtual_size();
        let mut written = 0;
        while let Some(c) = self.next_chunk()? {
            if let Chunk::Data { offset, bytes } = c {
                out.write_all_at(bytes, offset).map_err(DiskImageError::Write)?;
                written += bytes.len() as u64;
            }
        }
        out.set_len(size).map_err(DiskImageError::Write)?;
        Ok(written)
    }
}

/// Where a reader is in its output: `cursor` bytes of the virtual disk are out.
fn hole_before(cursor: &mut u64, offset: u64) -> Option<(u64, u64)> {
    (offset > *cursor).then(|| {
        let h = (*cursor, offset - *cursor);
        *cursor = offset;
        h
    })
}

/// What a reader's loop decided to hand out.
enum Out {
    Hole(u64, u64),
    Data(u64, usize),
    End,
}

struct StreamReader<R: Read> {
    r: R,
    check: StreamCheck,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    done: bool,
    inflate: flate2::Decompress,
    grain: Vec<u8>,
    grain_lba: u64,
    out: usize,
    stream_end: bool,
    /// A whole grain is in `grain`.
    ready: bool,
    cursor: u64,
    cap: u64,
}

impl<R: Read> StreamReader<R> {
    fn new(r: R, check: StreamCheck, rest: Vec<u8>, hdr: Header) -> Self {
        let mut buf = rest;
        let end = buf.len();
        buf.resize(end.max(256 << 10), 0);
        StreamReader {
            r,
            check,
            buf,
            start: 0,
            end,
            eof: false,
            done: false,
            inflate: flate2::Decompress::new(true),
            grain: vec![0u8; hdr.grain_bytes() as usize],
            grain_lba: 0,
            out: 0,
            stream_end: false,
            ready: false,
            cursor: 0,
            cap: hdr.capacity * SECTOR,
        }
    }

    fn bad(&self, reason: String) -> DiskImageError {
        DiskImageError::vmdk(Kind::StreamOptimized, reason)
    }

    /// Inflates `input` (compressed bytes of the current grain) into `grain`.
    fn inflate(&mut self, mut input: &[u8]) -> Result<()> {
        while !input.is_empty() && !self.stream_end {
            let (in0, out0) = (self.inflate.total_in(), self.inflate.total_out());
            let status =
                self.inflate.decompress(input, &mut self.grain[self.out..], flate2::FlushDecompress::None).map_err(
                    |e| self.bad(format!("the grain at sector {}: corrupt compressed data ({e})", self.grain_lba)),
                )?;
            let used = (self.inflate.total_in() - in0) as usize;
            let made = (self.inflate.total_out() - out0) as usize;
            input = &input[used..];
            self.out += made;
            if status == flate2::Status::StreamEnd {
                // what follows the deflate stream inside the payload is padding
                self.stream_end = true;
            } else if used == 0 && made == 0 {
                let why = if self.out == self.grain.len() { "inflates to more than a grain" } else { "is corrupt" };
                return Err(self.bad(format!("the grain at sector {} {why}", self.grain_lba)));
            }
        }
        Ok(())
    }

    /// The grain's payload is complete: checks that it inflated to the grain (or to the end of the disk).
    fn grain_done(&mut self) -> Result<()> {
        if !self.stream_end {
            let mut probe = [0u8; 1];
            let status = self.inflate.decompress(&[], &mut probe, flate2::FlushDecompress::Finish).map_err(|e| {
                self.bad(format!("the grain at sector {}: corrupt compressed data ({e})", self.grain_lba))
            })?;
            if self.inflate.total_out() as usize != self.out {
                return Err(self.bad(format!("the grain at sector {} inflates to more than a grain", self.grain_lba)));
            }
            if status != flate2::Status::StreamEnd {
                return Err(self.bad(format!("the grain at sector {}: its compressed data ends early", self.grain_lba)));
            }
        }
        let want = self.grain.len().min((self.cap - self.grain_lba * SECTOR) as usize);
        if self.out != want && self.out != self.grain.len() {
            return Err(
                self.bad(format!("the grain at sector {} inflates to {} bytes, not {want}", self.grain_lba, self.out))
            );
        }
        self.ready = true;
        Ok(())
    }

    fn next_chunk(&mut self) -> Result<Option<Chunk<'_>>> {
        let out = loop {
            if self.ready {
                let offset = self.grain_lba * SECTOR;
                if let Some((o, l)) = hole_before(&mut self.cursor, offset) {
                    break Out::Hole(o, l);
                }
                self.ready = false;
                let n = self.grain.len().min((self.cap - offset) as usize);
                if self.grain[..n].iter().all(|&b| b == 0) {
                    continue;
                }
                self.cursor = offset + n as u64;
                break Out::Data(offset, n);
            }
            if self.done {
                match hole_before(&mut self.cursor, self.cap) {
                    Some((o, l)) => break Out::Hole(o, l),
                    None => break Out::End,
                }
            }
            if self.start == self.end {
                if self.eof {
                    self.check.finish()?;
                    self.done = true;
                    continue;
                }
                let n = read_up_to(&mut self.r, &mut self.buf).map_err(DiskImageError::Io)?;
                self.start = 0;
                self.end = n;
                self.eof = n < self.buf.len();
                continue;
            }
            let at = self.start;
            let (n, ev) = self.check.step(&self.buf[at..self.end])?;
            self.start += n;
            match ev {
                Event::None => {}
                Event::GrainStart { lba } => {
                    self.inflate.reset(true);
                    self.grain_lba = lba;
                    self.out = 0;
                    self.stream_end = false;
                }
                Event::Payload { start, end, last } => {
                    let payload = std::mem::take(&mut self.buf);
                    let r = self.inflate(&payload[at + start..at + end]);
                    self.buf = payload;
                    r?;
                    if last {
                        self.grain_done()?;
                    }
                }
            }
        };
        Ok(match out {
            Out::Hole(offset, len) => Some(Chunk::Hole { offset, len }),
            Out::Data(offset, n) => Some(Chunk::Data { offset, bytes: &self.grain[..n] }),
            Out::End => None,
        })
    }
}

/// Bytes recorded from the start of a stream, so that a reader can read back: in memory up to
/// [`MEM_RECORD`], then in an unnamed scratch file.
enum Record {
    Off,
    Mem(Vec<u8>),
    File { f: File, len: u64 },
}

/// A forward stream that a reader can also read back in, while it records ([`Src::read_at`]).
struct Src<R: Read> {
    r: R,
    pos: u64,
    len: u64,
    rec: Record,
    scratch: PathBuf,
    /// The whole rest of the stream is in the record: every read comes from there.
    spooled: bool,
}

impl<R: Read> Src<R> {
    fn record(&mut self, data: &[u8]) -> Result<()> {
        if let Record::Mem(m) = &mut self.rec {
            if m.len() + data.len() <= MEM_RECORD {
                m.extend_from_slice(data);
                return Ok(());
            }
            let f = tempfile::tempfile_in(&self.scratch).map_err(DiskImageError::Write)?;
            let mem = std::mem::take(m);
            write_sparse_at(&f, &mem, 0)?;
            self.rec = Record::File { f, len: mem.len() as u64 };
        }
        if let Record::File { f, len } = &mut self.rec {
            write_sparse_at(f, data, *len)?;
            *len += data.len() as u64;
        }
        Ok(())
    }

    /// Reads forward up to `to` (recording what passes).
    fn skip_to(&mut self, to: u64) -> Result<()> {
        let mut buf = vec![0u8; (64 << 10).min(to - self.pos) as usize];
        while self.pos < to {
            let n = (to - self.pos).min(buf.len() as u64) as usize;
            self.fill(&mut buf[..n])?;
        }
        Ok(())
    }

    /// Reads exactly `buf` from the stream at `pos` (recording it).
    fn fill(&mut self, buf: &mut [u8]) -> Result<()> {
        let n = read_up_to(&mut self.r, buf).map_err(DiskImageError::Io)?;
        if n < buf.len() {
            return Err(DiskImageError::vmdk(
                Kind::MonolithicSparse,
                format!("the file ends at byte {} (its header says it holds more)", self.pos + n as u64),
            ));
        }
        if !matches!(self.rec, Record::Off) {
            self.record(buf)?;
        }
        self.pos += n as u64;
        Ok(())
    }

    /// Reads `buf.len()` bytes at `off` of the stream: forward, or back in the record.
    fn read_at(&mut self, off: u64, buf: &mut [u8]) -> Result<()> {
        let end = off + buf.len() as u64;
        if end > self.len {
            return Err(DiskImageError::vmdk(
                Kind::MonolithicSparse,
                format!("it reads bytes {off}..{end} of a file of {} bytes", self.len),
            ));
        }
        let back = if off < self.pos { (self.pos.min(end) - off) as usize } else { 0 };
        if back > 0 {
            match &mut self.rec {
                Record::Mem(m) => buf[..back].copy_from_slice(&m[off as usize..off as usize + back]),
                Record::File { f, len } => {
                    if f.metadata().map_err(DiskImageError::Write)?.len() < *len {
                        f.set_len(*len).map_err(DiskImageError::Write)?;
                    }
                    f.read_exact_at(&mut buf[..back], off).map_err(DiskImageError::Write)?;
                }
                Record::Off => {
                    return Err(DiskImageError::vmdk(Kind::MonolithicSparse, "it needs to be read back (internal)"));
                }
            }
        }
        if back < buf.len() {
            self.skip_to(off.max(self.pos))?;
            self.fill(&mut buf[back..])?;
        }
        Ok(())
    }

    /// Stops recording: what is read from here on is only read forward.
    fn forward_only(&mut self) {
        self.rec = Record::Off;
    }

    /// Spools the rest of the stream into the record's scratch file.
    fn spool_rest(&mut self) -> Result<()> {
        if let Record::Mem(m) = &mut self.rec {
            let f = tempfile::tempfile_in(&self.scratch).map_err(DiskImageError::Write)?;
            let mem = std::mem::take(m);
            write_sparse_at(&f, &mem, 0)?;
            self.rec = Record::File { f, len: mem.len() as u64 };
        }
        let mut buf = vec![0u8; 1 << 20];
        while self.pos < self.len {
            let n = (self.len - self.pos).min(buf.len() as u64) as usize;
            self.fill(&mut buf[..n])?;
        }
        self.drain()?;
        if let Record::File { f, len } = &self.rec {
            f.set_len(*len).map_err(DiskImageError::Write)?;
        }
        self.spooled = true;
        Ok(())
    }

    /// Reads the rest of the stream (so an archive's checksum is checked), keeping nothing.
    fn drain(&mut self) -> Result<()> {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = read_up_to(&mut self.r, &mut buf).map_err(DiskImageError::Io)?;
            if n == 0 {
                return Ok(());
            }
            self.pos += n as u64;
        }
    }

    /// Reads at `off` from the spooled record (every read once spooled).
    fn read_spooled(&mut self, off: u64, buf: &mut [u8]) -> Result<()> {
        match &self.rec {
            Record::File { f, .. } => f.read_exact_at(buf, off).map_err(DiskImageError::Write),
            Record::Mem(m) => {
                buf.copy_from_slice(&m[off as usize..off as usize + buf.len()]);
                Ok(())
            }
            Record::Off => Err(DiskImageError::vmdk(Kind::MonolithicSparse, "it is not spooled (internal)")),
        }
    }
}

/// Writes `data` at `off` of `f`, leaving its zero blocks as holes.
fn write_sparse_at(f: &File, data: &[u8], off: u64) -> Result<()> {
    for (i, block) in data.chunks(64 << 10).enumerate() {
        if block.iter().any(|&b| b != 0) {
            f.write_all_at(block, off + (i as u64) * (64 << 10)).map_err(DiskImageError::Write)?;
        }
    }
    Ok(())
}

struct MonoReader<R: Read> {
    src: Src<R>,
    /// (file sector, grain number) of every allocated grain, in disk order.
    grains: Vec<(u32, u32)>,
    next: usize,
    grain: Vec<u8>,
    grain_sectors: u64,
    cursor: u64,
    cap: u64,
    drained: bool,
}

impl<R: Read> MonoReader<R> {
    fn new(r: R, head: Vec<u8>, len: u64, h: Header, scratch: &Path) -> Result<Self> {
        let bad = |reason: String| DiskImageError::vmdk(Kind::MonolithicSparse, reason);
        let pos = head.len() as u64;
        let mut src = Src { r, pos, len, rec: Record::Mem(head), scratch: scratch.to_path_buf(), spooled: false };
        let meta_end = h.desc_offset + h.desc_size;
        // the grain directory: one sector number of a grain table per 512 grains
        let entries = h.gd_entries();
        let mut gd = vec![0u8; (entries * 4) as usize];
        src.read_at(h.gd_offset * SECTOR, &mut gd)?;
        let mut tables: Vec<(u64, u64)> = Vec::new();
        for (i, e) in gd.chunks_exact(4).enumerate() {
            let sector = le32(e, 0) as u64;
            if sector == 0 {
                continue;
            }
            if sector < meta_end || (sector + 4) * SECTOR > len {
                return Err(bad(format!("grain table {i} at sector {sector}, outside the file's tables")));
            }
            tables.push((sector, i as u64));
        }
        tables.sort_unstable();
        if let Some(w) = tables.windows(2).find(|w| w[1].0 < w[0].0 + 4) {
            return Err(bad(format!(
                "grain tables {} and {} overlap (sectors {} and {})",
                w[0].1, w[1].1, w[0].0, w[1].0
            )));
        }
        let grains_total = h.capacity.div_ceil(h.grain);
        let cap = h.capacity * SECTOR;
        let mut grains: Vec<(u32, u32)> = Vec::new();
        let mut gt = vec![0u8; (GTES_PER_GT * 4) as usize];
        for &(sector, i) in &tables {
            src.read_at(sector * SECTOR, &mut gt)?;
            for (j, e) in gt.chunks_exact(4).enumerate() {
                let s = le32(e, 0) as u64;
                let g = i * GTES_PER_GT + j as u64;
                if s == 0 || (s == 1 && h.flags & FLAG_ZERO_GTE != 0) {
                    continue;
                }
                if g >= grains_total {
                    return Err(bad(format!("grain table {i} has an entry past the disk's end (grain {g})")));
                }
                let need = h.grain_bytes().min(cap - g * h.grain_bytes());
                if s < h.overhead || s * SECTOR + need > len {
                    return Err(bad(format!(
                        "grain {g} (disk sector {}) lies at sector {s}, outside the file's grains (sectors {} to {})",
                        g * h.grain,
                        h.overhead,
                        len / SECTOR
                    )));
                }
                if grains.len() == MAX_GRAINS {
                    return Err(bad(format!("more than {MAX_GRAINS} grains")));
                }
                let s32 = u32::try_from(s).map_err(|_| bad(format!("grain {g} at sector {s}")))?;
                grains.push((s32, g as u32));
            }
        }
        // no two grains share bytes of the file
        grains.sort_unstable();
        if let Some(w) = grains.windows(2).find(|w| (w[1].0 as u64) < w[0].0 as u64 + h.grain) {
            return Err(bad(format!(
                "grains {} and {} overlap in the file (sectors {} and {})",
                w[0].1, w[1].1, w[0].0, w[1].0
            )));
        }
        // in disk order after the tables: one forward pass; else the rest is spooled and read from there
        let in_order = grains.windows(2).all(|w| w[0].1 < w[1].1);
        let after = grains.first().is_none_or(|g| g.0 as u64 * SECTOR >= src.pos);
        if in_order && after {
            src.forward_only();
        } else {
            crate::info!("the VMDK's grains are not in disk order: spooling it to scratch space first");
            src.spool_rest()?;
            grains.sort_unstable_by_key(|g| g.1);
        }
        Ok(MonoReader {
            src,
            grains,
            next: 0,
            grain: vec![0u8; h.grain_bytes() as usize],
            grain_sectors: h.grain,
            cursor: 0,
            cap,
            drained: false,
        })
    }

    fn next_chunk(&mut self) -> Result<Option<Chunk<'_>>> {
        let out = loop {
            let Some(&(s, g)) = self.grains.get(self.next) else {
                if !self.drained {
                    self.src.drain()?;
                    self.drained = true;
                }
                match hole_before(&mut self.cursor, self.cap) {
                    Some((o, l)) => break Out::Hole(o, l),
                    None => break Out::End,
                }
            };
            let offset = g as u64 * self.grain_sectors * SECTOR;
            if let Some((o, l)) = hole_before(&mut self.cursor, offset) {
                break Out::Hole(o, l);
            }
            self.next += 1;
            let n = (self.grain.len() as u64).min(self.cap - offset) as usize;
            let mut buf = std::mem::take(&mut self.grain);
            let r = if self.src.spooled {
                self.src.read_spooled(s as u64 * SECTOR, &mut buf[..n])
            } else {
                self.src.read_at(s as u64 * SECTOR, &mut buf[..n])
            };
            self.grain = buf;
            r?;
            if self.grain[..n].iter().all(|&b| b == 0) {
                continue;
            }
            self.cursor = offset + n as u64;
            break Out::Data(offset, n);
        };
        Ok(match out {
            Out::Hole(offset, len) => Some(Chunk::Hole { offset, len }),
            Out::Data(offset, n) => Some(Chunk::Data { offset, bytes: &self.grain[..n] }),
            Out::End => None,
        })
    }
}

/// Writes a stream-optimised VMDK as VMware does (grain directory at the end: grain table and grain
/// directory markers, a footer, the end-of-stream marker), one forward pass. For tests, benchmarks and
/// fuzzing seeds: the images it makes are read by qemu-img and by [`VmdkReader`] alike.
pub struct StreamWriter<W: std::io::Write> {
    w: W,
    capacity: u64,
    pos: u64,
    /// Sector of each grain's record (0: none).
    gt: Vec<u32>,
    next: u64,
}

const WRITER_GRAIN: u64 = 128;
const WRITER_OVERHEAD: u64 = 128;

impl<W: std::io::Write> StreamWriter<W> {
    /// Starts a disk of `capacity` bytes (a multiple of 512, at most [`MAX_VIRTUAL_SIZE`]) whose descriptor
    /// names `name`: writes the header and the descriptor.
    pub fn new(mut w: W, capacity: u64, name: &str) -> std::io::Result<Self> {
        assert!(capacity.is_multiple_of(SECTOR) && capacity > 0 && capacity <= MAX_VIRTUAL_SIZE, "capacity {capacity}");
        let sectors = capacity / SECTOR;
        let mut head = writer_header(sectors, GD_AT_END);
        let desc = format!(
            "# Disk DescriptorFile\nversion=1\nCID=7a3f9c21\nparentCID=ffffffff\ncreateType=\"streamOptimized\"\n\n# Extent description\nRW {sectors} SPARSE \"{name}\"\n\n# The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\nddb.virtualHWVersion = \"13\"\n"
        );
        assert!(desc.len() < 20 * 512 && !name.contains(['"', '/', '\n']), "descriptor name {name:?}");
        head.extend_from_slice(desc.as_bytes());
        head.resize((WRITER_OVERHEAD * SECTOR) as usize, 0);
        w.write_all(&head)?;
        let grains = sectors.div_ceil(WRITER_GRAIN) as usize;
        Ok(StreamWriter { w, capacity: sectors, pos: head.len() as u64, gt: vec![0; grains], next: 0 })
    }

    /// What is written to (to take out what has been written so far, for instance).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.w
    }

    /// The grain size in bytes (64 KiB).
    pub fn grain_bytes(&self) -> u64 {
        WRITER_GRAIN * SECTOR
    }

    /// Writes the grain at byte `offset` of the disk (a grain boundary after the last one written), `data`
    /// at most a grain (and no further than the disk's end), compressed.
    pub fn data(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut grain = data.to_vec();
        let want = (self.grain_bytes()).min(self.capacity * SECTOR - offset) as usize;
        assert!(grain.len() <= want, "{} bytes at {offset}", grain.len());
        grain.resize(want, 0);
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&grain)?;
        self.record(offset, &e.finish()?)
    }

    /// Writes a grain record whose payload is `payload` as given (not compressed here).
    pub fn record(&mut self, offset: u64, payload: &[u8]) -> std::io::Result<()> {
        let lba = offset / SECTOR;
        assert!(
            offset.is_multiple_of(self.grain_bytes()) && lba >= self.next && lba < self.capacity,
            "grain at {offset}"
        );
        assert!(!payload.is_empty() && payload.len() as u64 <= 2 * self.grain_bytes(), "payload {}", payload.len());
        self.gt[(lba / WRITER_GRAIN) as usize] = u32::try_from(self.pos / SECTOR).expect("a disk under 2 TiB");
        let mut rec = Vec::with_capacity(payload.len() + 512);
        rec.extend_from_slice(&lba.to_le_bytes());
        rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        rec.extend_from_slice(payload);
        rec.resize(rec.len().div_ceil(512) * 512, 0);
        self.w.write_all(&rec)?;
        self.pos += rec.len() as u64;
        self.next = lba + WRITER_GRAIN;
        Ok(())
    }

    /// Writes the grain tables, the grain directory, the footer and the end-of-stream marker.
    pub fn finish(mut self) -> std::io::Result<W> {
        let mut gd = Vec::new();
        let gt = std::mem::take(&mut self.gt);
        for table in gt.chunks(GTES_PER_GT as usize) {
            self.marker(4, 1)?;
            gd.push((self.pos / SECTOR) as u32);
            let mut t: Vec<u8> = table.iter().flat_map(|s| s.to_le_bytes()).collect();
            t.resize((GTES_PER_GT * 4) as usize, 0);
            self.w.write_all(&t)?;
            self.pos += t.len() as u64;
        }
        let gd_sectors = (gd.len() as u64 * 4).div_ceil(SECTOR);
        self.marker(gd_sectors, 2)?;
        let gd_at = self.pos / SECTOR;
        let mut g: Vec<u8> = gd.iter().flat_map(|s| s.to_le_bytes()).collect();
        g.resize((gd_sectors * SECTOR) as usize, 0);
        self.w.write_all(&g)?;
        self.pos += g.len() as u64;
        self.marker(1, 3)?;
        self.w.write_all(&writer_header(self.capacity, gd_at))?;
        self.pos += SECTOR;
        self.marker(0, 0)?;
        Ok(self.w)
    }

    fn marker(&mut self, val: u64, ty: u32) -> std::io::Result<()> {
        let mut m = [0u8; 512];
        m[0..8].copy_from_slice(&val.to_le_bytes());
        m[12..16].copy_from_slice(&ty.to_le_bytes());
        self.w.write_all(&m)?;
        self.pos += SECTOR;
        Ok(())
    }
}

/// The header [`StreamWriter`] writes (and repeats in its footer with the grain directory's place).
fn writer_header(sectors: u64, gd: u64) -> Vec<u8> {
    let mut v = vec![0u8; 512];
    v[0..4].copy_from_slice(b"KDMV");
    v[4..8].copy_from_slice(&3u32.to_le_bytes());
    v[8..12].copy_from_slice(&(FLAG_NL_DETECT | FLAG_REDUNDANT_GT | FLAG_COMPRESSED | FLAG_MARKERS).to_le_bytes());
    v[12..20].copy_from_slice(&sectors.to_le_bytes());
    v[20..28].copy_from_slice(&WRITER_GRAIN.to_le_bytes());
    v[28..36].copy_from_slice(&1u64.to_le_bytes());
    v[36..44].copy_from_slice(&20u64.to_le_bytes());
    v[44..48].copy_from_slice(&(GTES_PER_GT as u32).to_le_bytes());
    v[56..64].copy_from_slice(&gd.to_le_bytes());
    v[64..72].copy_from_slice(&WRITER_OVERHEAD.to_le_bytes());
    v[73..77].copy_from_slice(b"\n \r\n");
    v[77..79].copy_from_slice(&1u16.to_le_bytes());
    v
}
