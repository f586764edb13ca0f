//! The reader of a monolithicSparse VMDK: its tables read first, then its grains in one forward pass, or
//! from a scratch file when they are not in disk order.
use super::header::Header;
use super::reader::{hole_before, Out};
use super::{le32, Kind, FLAG_ZERO_GTE, GTES_PER_GT, MAX_GRAINS, MEM_RECORD, SECTOR};
use crate::cpi::diskimage::{read_up_to, Chunk, DiskImageError, Result};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

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

pub(super) struct MonoReader<R: Read> {
    src: Src<R>,
    /// (file sector, grain number) of every allocated grain, in disk order.
    grains: Vec<(u32, u32)>,
    next: usize,
    grain: Vec<u8>,
    grain_sectors: u64,
    cursor: u64,
    pub(super) cap: u64,
    drained: bool,
}

impl<R: Read> MonoReader<R> {
    pub(super) fn new(r: R, head: Vec<u8>, len: u64, h: Header, scratch: &Path) -> Result<Self> {
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

    pub(super) fn next_chunk(&mut self) -> Result<Option<Chunk<'_>>> {
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
