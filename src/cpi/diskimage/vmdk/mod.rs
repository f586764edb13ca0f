//! VMDK hosted sparse extents (VMware's "Virtual Disk Format 5.0"): the two kinds stemcells ship.
//!
//! - **streamOptimized**: header (`KDMV`, compressed grains with markers), embedded descriptor, then from
//!   sector `overHead` a sequence of records: a grain marker (`LBA`, compressed size) with its deflate (zlib)
//!   payload padded to a sector, or a metadata marker (grain table, grain directory, footer, end of stream).
//!   [`StreamCheck`] follows that sequence in one forward pass, from a stream that cannot seek (as it lies in a
//!   tar): grains in strictly increasing LBA order on grain boundaries inside the disk, payloads of bounded size,
//!   at most one footer that repeats the header, an end-of-stream marker, and only zeros after it. qemu-img
//!   writes no marker at all: its grain directory and tables are filled in before `overHead`, and its file ends
//!   with its last grain record (or with the zeroed rest of that grain's 64 KiB, which reads as a marker). Such
//!   a stream may end after a record without a marker when its tables, read as they pass, name no grain after
//!   that record; otherwise the grain directory is not needed to read a stream, so it is not read.
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
//!
//! The parts: [`header`] (the sparse extent header), [`descriptor`] (the embedded descriptor and what is
//! refused in it), [`check`] (the forward check of a stream, [`StreamCheck`]), [`reader`] ([`VmdkReader`],
//! over [`stream`] for streamOptimized and [`mono`] for monolithicSparse) and [`writer`] ([`StreamWriter`]).
use super::DiskImageError;

mod check;
mod descriptor;
mod header;
mod mono;
mod reader;
mod stream;
mod writer;

pub(crate) use check::StreamCheck;
pub use reader::VmdkReader;
pub use writer::StreamWriter;

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
