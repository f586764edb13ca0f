//! The sparse extent header: sector 0 of the file, and the footer of a stream.
use super::{le32, le64, refused, Kind};
use super::{FLAG_COMPRESSED, FLAG_MARKERS, FLAG_NL_DETECT, GD_AT_END, GTES_PER_GT, KNOWN_FLAGS};
use super::{MAX_DESCRIPTOR_SECTORS, MAX_GRAIN, MIN_GRAIN, SECTOR};
use crate::cpi::diskimage::{DiskImageError, Result, MAX_VIRTUAL_SIZE};

/// A sparse extent header (sector 0, and the footer of a stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) version: u32,
    pub(super) flags: u32,
    pub(super) capacity: u64,
    pub(super) grain: u64,
    pub(super) desc_offset: u64,
    pub(super) desc_size: u64,
    pub(super) gtes_per_gt: u32,
    pub(super) gd_offset: u64,
    pub(super) overhead: u64,
    pub(super) compress: u16,
}

impl Header {
    pub(super) fn parse(b: &[u8]) -> Header {
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
    pub(super) fn kind(&self) -> Kind {
        if self.flags & FLAG_COMPRESSED != 0 || self.flags & FLAG_MARKERS != 0 {
            Kind::StreamOptimized
        } else {
            Kind::MonolithicSparse
        }
    }

    /// Checks where the descriptor is (it is read next, and checked before the rest of the header).
    pub(super) fn check_descriptor_place(&self) -> Result<()> {
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
    pub(super) fn check(&self, b: &[u8], len: u64) -> Result<()> {
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

    pub(super) fn grain_bytes(&self) -> u64 {
        self.grain * SECTOR
    }

    /// Sectors of a grain directory (4 bytes per grain table).
    pub(super) fn gd_entries(&self) -> u64 {
        self.capacity.div_ceil(self.grain).div_ceil(GTES_PER_GT)
    }
}
