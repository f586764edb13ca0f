//! [`StreamCheck`]: the forward check of a VMDK's structure, fed its bytes in pieces of any size.
use super::descriptor::{check_extent, describe_other};
use super::header::Header;
use super::{le32, le64, Kind, GD_AT_END, GTES_PER_GT, SECTOR, TEXT_PROBE};
use crate::cpi::diskimage::{DiskImageError, Result};

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
        let n = match self.state {
            State::Header => self.take_header(input)?,
            State::Other => self.take_other(input)?,
            State::Descriptor { end } => self.take_descriptor(input, end)?,
            State::Unchecked => input.len(),
            State::Skip { left } => {
                let n = (input.len() as u64).min(left);
                self.state = if n == left { State::Marker { have: 0 } } else { State::Skip { left: left - n } };
                n as usize
            }
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
