//! The reader of a streamOptimized VMDK: its grains inflated one at a time as the check passes them.
use super::check::{Event, StreamCheck};
use super::header::Header;
use super::reader::{hole_before, Out};
use super::{Kind, SECTOR};
use crate::cpi::diskimage::{read_up_to, Chunk, DiskImageError, Result};
use std::io::Read;

pub(super) struct StreamReader<R: Read> {
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
    pub(super) cap: u64,
}

impl<R: Read> StreamReader<R> {
    pub(super) fn new(r: R, check: StreamCheck, rest: Vec<u8>, hdr: Header) -> Self {
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

    pub(super) fn next_chunk(&mut self) -> Result<Option<Chunk<'_>>> {
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
