//! [`StreamCheck`]: the forward check of a VMDK's structure, fed its bytes in pieces of any size.
use super::descriptor::{check_extent, describe_other};
use super::header::Header;
use super::{le32, le64, Kind, GD_AT_END, GTES_PER_GT, SECTOR, TEXT_PROBE};
use crate::cpi::diskimage::{DiskImageError, Result};
use std::ops::Range;

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
    /// Up to the first grain marker (`overHead`); its grain directory and tables are read on the way when the
    /// header puts them there ([`HeadTables`]).
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

/// Sectors of a grain table.
const GT_SECTORS: u64 = GTES_PER_GT * 4 / SECTOR;

/// The grain directory and grain tables of a stream whose header places them before its first record, read
/// as they pass (whole sectors, from `head`) to learn the last grain record they name.
///
/// qemu-img writes streams so: its tables filled in before `overHead`, its grains after, and no end-of-stream
/// marker at all (it zero-fills each grain's 64 KiB before writing the compressed record over its start, so
/// a compressible last grain leaves zero sectors that read as one; an incompressible one, whose record is
/// longer than the grain, leaves none). Such a file may end right after a record; the tables then say
/// whether that record is the last, so that a file cut at a record boundary is still refused.
#[derive(Debug)]
struct HeadTables {
    /// The sectors of the grain directory.
    gd: Range<u64>,
    /// Its bytes so far.
    gd_bytes: Vec<u8>,
    /// The first sector of each grain table it names, in file order (once it is whole).
    gts: Option<Vec<u64>>,
    /// The first of `gts` not yet read whole.
    next: usize,
    /// The largest grain sector the tables name (0: none).
    last: u64,
}

impl HeadTables {
    /// The tables of `h`, when its grain directory lies between `meta_end` and `overHead` (sectors).
    fn new(h: &Header, meta_end: u64) -> Option<Self> {
        let sectors = (h.gd_entries() * 4).div_ceil(SECTOR);
        let end = h.gd_offset.checked_add(sectors)?;
        (h.gd_offset != GD_AT_END && h.gd_offset >= meta_end && end <= h.overhead).then(|| HeadTables {
            gd: h.gd_offset..end,
            gd_bytes: Vec::new(),
            gts: None,
            next: 0,
            last: 0,
        })
    }

    /// Sector `k` (`s`, 512 bytes) has passed; false when the tables cannot be read in one pass (a grain
    /// table that is not wholly after the directory and before `overHead`, or two that overlap).
    fn sector(&mut self, k: u64, s: &[u8], h: &Header) -> bool {
        if self.gd.contains(&k) {
            self.gd_bytes.extend_from_slice(s);
            if k + 1 == self.gd.end {
                let entries = self.gd_bytes.chunks_exact(4).take(h.gd_entries() as usize);
                let mut gts: Vec<u64> = entries.map(|e| le32(e, 0) as u64).filter(|&gt| gt != 0).collect();
                if gts.iter().any(|&gt| gt < self.gd.end || gt + GT_SECTORS > h.overhead) {
                    return false;
                }
                gts.sort_unstable();
                gts.dedup();
                if gts.windows(2).any(|w| w[1] < w[0] + GT_SECTORS) {
                    return false;
                }
                self.gts = Some(gts);
                self.gd_bytes = Vec::new();
            }
            return true;
        }
        if let Some(&gt) = self.gts.as_ref().and_then(|g| g.get(self.next)) {
            if (gt..gt + GT_SECTORS).contains(&k) {
                // 0: no grain; 1: a zeroed grain (flag bit 2), no record either
                let named = s.chunks_exact(4).map(|e| le32(e, 0) as u64).filter(|&g| g > 1);
                self.last = named.fold(self.last, u64::max);
                if k + 1 == gt + GT_SECTORS {
                    self.next += 1;
                }
            }
        }
        true
    }

    /// The last grain sector the tables name, once every sector before `overHead` has passed; `None` when
    /// they were not all read.
    fn last(&self) -> Option<u64> {
        let gts = self.gts.as_ref()?;
        (self.next == gts.len()).then_some(self.last)
    }
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
    /// The sector of the last grain marker (0: none yet).
    last_grain_at: u64,
    /// The grain directory and tables before `overHead`, while they pass.
    tables: Option<HeadTables>,
    /// The last grain sector they name, once they have passed whole.
    tables_last: Option<u64>,
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
            last_grain_at: 0,
            tables: None,
            tables_last: None,
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

    pub(super) fn hdr(&self) -> Header {
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
            // qemu-img's layout: its tables at the start, grains, and no end-of-stream marker
            State::Marker { have: 0 } if !self.footer_seen && self.hdr().gd_offset != GD_AT_END => {
                self.end_without_marker()?;
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
        let n = match self.state {
            State::Header => self.take_header(input)?,
            State::Other => self.take_other(input)?,
            State::Descriptor { end } => self.take_descriptor(input, end)?,
            State::Unchecked => input.len(),
            State::Skip { left } => self.take_skip(input, left),
            State::Marker { have } => return self.take_marker(input, have),
            State::Payload { left, pad } => return Ok(self.take_payload(input, left, pad)),
            State::Pad { left } => {
                let n = (input.len() as u64).min(left);
                self.state = if n == left { State::Marker { have: 0 } } else { State::Pad { left: left - n } };
                n as usize
            }
            State::Meta { left, footer } => self.take_meta(input, left, footer),
            State::Footer => self.take_footer(input)?,
            State::Trailing => {
                if let Some(i) = input.iter().position(|&b| b != 0) {
                    return Err(self
                        .bad(format!("it has data after its end-of-stream marker (at byte {})", self.pos + i as u64)));
                }
                input.len()
            }
        };
        Ok((n, Event::None))
    }

    /// Collects the first sector; once whole, parses it as a header and checks where its descriptor is.
    fn take_header(&mut self, input: &[u8]) -> Result<usize> {
        let n = input.len().min(512 - self.head.len());
        self.head.extend_from_slice(&input[..n]);
        if self.head.len() >= 4 && &self.head[..4] != b"KDMV" {
            self.state = State::Other;
            return Ok(n);
        }
        if self.head.len() == 512 {
            if &self.head[..4] != b"KDMV" {
                self.state = State::Other;
                return Ok(n);
            }
            let h = Header::parse(&self.head);
            h.check_descriptor_place()?;
            self.hdr = Some(h);
            self.state = State::Descriptor { end: ((h.desc_offset + h.desc_size) * SECTOR) as usize };
        }
        Ok(n)
    }

    /// Collects the head of a file that is not a sparse extent, up to [`TEXT_PROBE`], to describe it.
    fn take_other(&mut self, input: &[u8]) -> Result<usize> {
        let n = input.len().min(TEXT_PROBE - self.head.len());
        self.head.extend_from_slice(&input[..n]);
        if self.head.len() == TEXT_PROBE {
            return Err(describe_other(&self.head));
        }
        Ok(n)
    }

    /// Collects the descriptor up to byte `end`; once whole, checks the extent and goes on to the records.
    fn take_descriptor(&mut self, input: &[u8], end: usize) -> Result<usize> {
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
                    self.tables = HeadTables::new(&h, end as u64 / SECTOR);
                    if left == 0 {
                        State::Marker { have: 0 }
                    } else {
                        State::Skip { left }
                    }
                }
            };
        }
        Ok(n)
    }

    /// Passes what lies before `overHead` (`left` bytes of it), reading the grain directory and tables there
    /// a sector at a time when the header puts them there.
    fn take_skip(&mut self, input: &[u8], left: u64) -> usize {
        let mut n = (input.len() as u64).min(left) as usize;
        if self.tables.is_some() {
            n = n.min(SECTOR as usize - self.head.len());
            self.head.extend_from_slice(&input[..n]);
            if self.head.len() == SECTOR as usize {
                let (h, k) = (self.hdr(), (self.pos + n as u64) / SECTOR - 1);
                if !self.tables.as_mut().is_some_and(|t| t.sector(k, &self.head, &h)) {
                    self.tables = None;
                }
                self.head.clear();
            }
        }
        if n as u64 == left {
            self.tables_last = self.tables.take().and_then(|t| t.last());
            self.head = Vec::new();
            self.state = State::Marker { have: 0 };
        } else {
            self.state = State::Skip { left: left - n as u64 };
        }
        n
    }

    /// The stream ends after a record (or before the first) with no end-of-stream marker, as qemu-img ends
    /// its streams: fine when the grain tables before `overHead` name no grain after the last record (or,
    /// when they could not be read, when there is no record at all).
    fn end_without_marker(&self) -> Result<()> {
        let at = self.pos;
        match self.tables_last {
            Some(last) if last == self.last_grain_at => Ok(()),
            Some(last) if last > self.last_grain_at => Err(self.bad(format!(
                "the file ends at byte {at}, but its grain tables place a grain at byte {} (cut short?)",
                last * SECTOR
            ))),
            Some(last) => Err(self.bad(format!(
                "its grain tables place no grain after byte {}, but a grain record starts at byte {}",
                last * SECTOR,
                self.last_grain_at * SECTOR
            ))),
            None if !self.records => Ok(()),
            None => Err(self.bad(format!("the file ends at byte {at} before its end-of-stream marker (cut short?)"))),
        }
    }

    /// Collects a marker (`have` bytes of it so far) and acts on it once whole.
    fn take_marker(&mut self, input: &[u8], have: usize) -> Result<(usize, Event)> {
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

    /// Passes compressed bytes of the current grain (`left` of them, then `pad` bytes of padding).
    fn take_payload(&mut self, input: &[u8], left: u64, pad: u64) -> (usize, Event) {
        let n = (input.len() as u64).min(left) as usize;
        let last = n as u64 == left;
        self.state = if !last {
            State::Payload { left: left - n as u64, pad }
        } else if pad == 0 {
            State::Marker { have: 0 }
        } else {
            State::Pad { left: pad }
        };
        (n, Event::Payload { start: 0, end: n, last })
    }

    /// Passes the rest of a metadata marker's sector and its metadata (`left` bytes), then a footer or a marker.
    fn take_meta(&mut self, input: &[u8], left: u64, footer: bool) -> usize {
        let n = (input.len() as u64).min(left);
        self.state = if n < left {
            State::Meta { left: left - n, footer }
        } else if footer {
            self.head.clear();
            State::Footer
        } else {
            State::Marker { have: 0 }
        };
        n as usize
    }

    /// Collects the footer; once whole, checks that it repeats the header.
    fn take_footer(&mut self, input: &[u8]) -> Result<usize> {
        let n = input.len().min(512 - self.head.len());
        self.head.extend_from_slice(&input[..n]);
        if self.head.len() == 512 {
            self.check_footer()?;
            self.head = Vec::new();
            self.state = State::Marker { have: 0 };
        }
        Ok(n)
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
        self.last_grain_at = start / SECTOR;
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
