//! [`StreamWriter`]: writes a streamOptimized VMDK (tests, benchmarks, fuzzing seeds).
use super::{FLAG_COMPRESSED, FLAG_MARKERS, FLAG_NL_DETECT, FLAG_REDUNDANT_GT, GD_AT_END, GTES_PER_GT, SECTOR};
use crate::cpi::diskimage::MAX_VIRTUAL_SIZE;
use std::io::Write;

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
