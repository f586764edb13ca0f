//! [`VmdkReader`]: a VMDK read as the virtual disk it holds, whichever of the two kinds it is.
use super::check::StreamCheck;
use super::mono::MonoReader;
use super::stream::StreamReader;
use super::Kind;
use crate::cpi::diskimage::{read_up_to, Chunk, DiskImageError, Result};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

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
pub(super) fn hole_before(cursor: &mut u64, offset: u64) -> Option<(u64, u64)> {
    (offset > *cursor).then(|| {
        let h = (*cursor, offset - *cursor);
        *cursor = offset;
        h
    })
}

/// What a reader's loop decided to hand out.
pub(super) enum Out {
    Hole(u64, u64),
    Data(u64, usize),
    End,
}
