//! The reader: one file found by path in an image made by this writer or another.
use super::{id_padding, malformed, IsoError, FLAG_DIR, SECTOR};

/// Bounds on what the reader follows in a foreign image.
const MAX_DESCRIPTORS: usize = 64;
const MAX_CONTINUATIONS: usize = 16;
const MAX_DEPTH: usize = 64;
const FLAG_MULTI_EXTENT: u8 = 0x80;

/// A directory record read from an image.
#[derive(Debug, Clone, Copy)]
struct Record {
    extent: u32,
    size: u32,
    flags: u8,
    /// Byte range of the file identifier in the image.
    name: (usize, usize),
    /// Byte range of the system use field in the image.
    su: (usize, usize),
}

/// The parts of an image the reader uses.
struct Volume<'a> {
    img: &'a [u8],
    label: String,
    primary_root: Record,
    joliet_root: Option<Record>,
    /// Bytes to skip at the start of each system use field (the root's `SP`), when Rock Ridge is present.
    rock_skip: Option<usize>,
}

/// The label (volume identifier) of an image: Joliet's when it has one, else the primary descriptor's,
/// without trailing spaces.
pub fn label(img: &[u8]) -> Result<String, IsoError> {
    Ok(Volume::open(img)?.label)
}

/// The bytes of the file at `path` (`/ec2/latest/user-data`, `env`) in `img`.
pub fn read_file(img: &[u8], path: &str) -> Result<Vec<u8>, IsoError> {
    let vol = Volume::open(img)?;
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() || parts.len() > MAX_DEPTH {
        return Err(IsoError::Path(path.to_string()));
    }
    let mut found = vol.lookup(vol.primary_root, &parts, false)?;
    if found.is_none() {
        if let Some(root) = vol.joliet_root {
            found = vol.lookup(root, &parts, true)?;
        }
    }
    let rec = found.ok_or_else(|| IsoError::NotFound(path.to_string()))?;
    if rec.flags & FLAG_DIR != 0 {
        return Err(IsoError::NotAFile(path.to_string()));
    }
    if rec.flags & FLAG_MULTI_EXTENT != 0 {
        return Err(malformed(format!("{path} has several extents, which this reader does not support")));
    }
    let (start, end) = vol.extent(rec).ok_or_else(|| malformed(format!("{path} extends past the end of the image")))?;
    Ok(img[start..end].to_vec())
}

impl<'a> Volume<'a> {
    fn open(img: &'a [u8]) -> Result<Self, IsoError> {
        if img.len() < 17 * SECTOR {
            return Err(IsoError::NotIso("shorter than its volume descriptors"));
        }
        let mut primary = None;
        let mut joliet = None;
        for i in 0..MAX_DESCRIPTORS {
            let at = (16 + i) * SECTOR;
            let Some(d) = img.get(at..at + SECTOR) else {
                return Err(malformed("the volume descriptors run past the end of the image"));
            };
            if &d[1..6] != b"CD001" {
                return Err(if i == 0 {
                    IsoError::NotIso("no CD001 volume descriptor at sector 16")
                } else {
                    malformed(format!("volume descriptor {} has no CD001 identifier", 16 + i))
                });
            }
            match d[0] {
                1 if primary.is_none() => primary = Some(at),
                2 if joliet.is_none() && d[88] == b'%' && d[89] == b'/' && matches!(d[90], b'@' | b'C' | b'E') => {
                    joliet = Some(at)
                }
                255 => break,
                _ => {}
            }
            if i + 1 == MAX_DESCRIPTORS {
                return Err(malformed("no volume descriptor set terminator"));
            }
        }
        let primary = primary.ok_or(IsoError::NotIso("no primary volume descriptor"))?;
        let block = u16::from_le_bytes([img[primary + 128], img[primary + 129]]);
        if block as usize != SECTOR {
            return Err(malformed(format!("logical block size {block}, this reader supports {SECTOR}")));
        }
        let root_at = |d: usize| -> Result<Record, IsoError> {
            let rec = parse_record(img, d + 156, d + 190)?.ok_or_else(|| malformed("empty root directory record"))?;
            if rec.flags & FLAG_DIR == 0 {
                return Err(malformed("the root directory record is not a directory"));
            }
            Ok(rec)
        };
        let primary_root = root_at(primary)?;
        let joliet_root = joliet.map(root_at).transpose()?;
        let label = match joliet {
            Some(j) => {
                let units: Vec<u16> = img[j + 40..j + 72].chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
                String::from_utf16_lossy(&units).trim_end_matches([' ', '\0']).to_string()
            }
            None => String::from_utf8_lossy(&img[primary + 40..primary + 72]).trim_end_matches([' ', '\0']).to_string(),
        };
        let mut vol = Volume { img, label, primary_root, joliet_root, rock_skip: None };
        vol.rock_skip = vol.find_sp()?;
        Ok(vol)
    }

    /// The `SP` entry at the start of the root's `.` record: Rock Ridge (SUSP) is in use.
    fn find_sp(&self) -> Result<Option<usize>, IsoError> {
        let Some((start, end)) = self.extent(self.primary_root) else {
            return Err(malformed("the root directory extends past the end of the image"));
        };
        let Some(dot) = parse_record(self.img, start, end.min(start + SECTOR))? else { return Ok(None) };
        let su = &self.img[dot.su.0..dot.su.1];
        Ok((su.len() >= 7 && &su[..2] == b"SP" && su[2] >= 7 && su[4] == 0xBE && su[5] == 0xEF).then(|| su[6] as usize))
    }

    /// Byte range of a record's data, if it lies inside the image.
    fn extent(&self, rec: Record) -> Option<(usize, usize)> {
        let start = (rec.extent as usize).checked_mul(SECTOR)?;
        let end = start.checked_add(rec.size as usize)?;
        (end <= self.img.len()).then_some((start, end))
    }

    /// Walks `parts` from `root`; `Ok(None)` when a component is missing.
    fn lookup(&self, root: Record, parts: &[&str], joliet: bool) -> Result<Option<Record>, IsoError> {
        let mut cur = root;
        for (k, part) in parts.iter().enumerate() {
            if cur.flags & FLAG_DIR == 0 {
                return Ok(None);
            }
            let (start, end) =
                self.extent(cur).ok_or_else(|| malformed("a directory extends past the end of the image"))?;
            let mut next = None;
            let mut pos = start;
            while pos < end {
                let sector_end = ((pos / SECTOR) + 1) * SECTOR;
                match parse_record(self.img, pos, end.min(sector_end))? {
                    None => pos = sector_end,
                    Some(rec) => {
                        pos += self.img[pos] as usize;
                        let id = &self.img[rec.name.0..rec.name.1];
                        if id == [0] || id == [1] {
                            continue;
                        }
                        if self.name_matches(&rec, part, joliet)? {
                            next = Some(rec);
                            break;
                        }
                    }
                }
            }
            match next {
                Some(rec) => cur = rec,
                None => return Ok(None),
            }
            if k + 1 == parts.len() {
                return Ok(Some(cur));
            }
        }
        Ok(Some(cur))
    }

    fn name_matches(&self, rec: &Record, want: &str, joliet: bool) -> Result<bool, IsoError> {
        let id = &self.img[rec.name.0..rec.name.1];
        if joliet {
            if !id.len().is_multiple_of(2) {
                return Err(malformed("a Joliet name of odd length"));
            }
            let units: Vec<u16> = id.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            let name = String::from_utf16(&units).map_err(|_| malformed("a Joliet name that is not UCS-2"))?;
            return Ok(strip_version(&name) == want);
        }
        if let Some(nm) = self.rock_name(rec)? {
            return Ok(nm == want.as_bytes());
        }
        let name = String::from_utf8_lossy(id);
        Ok(strip_version(&name).eq_ignore_ascii_case(want))
    }

    /// The Rock Ridge name (`NM` entries, following `CE` continuations) of a record, if it has one.
    fn rock_name(&self, rec: &Record) -> Result<Option<Vec<u8>>, IsoError> {
        let Some(skip) = self.rock_skip else { return Ok(None) };
        let mut name: Option<Vec<u8>> = None;
        let mut area = (rec.su.0.saturating_add(skip).min(rec.su.1), rec.su.1);
        for _ in 0..=MAX_CONTINUATIONS {
            let mut ce = None;
            let mut pos = area.0;
            while pos + 4 <= area.1 {
                let e = &self.img[pos..area.1];
                let len = e[2] as usize;
                if len < 4 || len > e.len() {
                    break; // padding or a damaged entry: ignore the rest of the area, as Linux does
                }
                match &e[..2] {
                    b"NM" if len >= 5 => {
                        let flags = e[4];
                        if flags & 0x06 == 0 {
                            name.get_or_insert_with(Vec::new).extend(&e[5..len]);
                        }
                    }
                    b"CE" if len >= 28 => {
                        let le = |o: usize| u32::from_le_bytes([e[o], e[o + 1], e[o + 2], e[o + 3]]) as usize;
                        let (block, offset, size) = (le(4), le(12), le(20));
                        let start = block.checked_mul(SECTOR).and_then(|b| b.checked_add(offset));
                        let end = start.and_then(|s| s.checked_add(size));
                        match (start, end) {
                            (Some(s), Some(t)) if t <= self.img.len() => ce = Some((s, t)),
                            _ => return Err(malformed("a Rock Ridge continuation area past the end of the image")),
                        }
                    }
                    b"ST" => break,
                    _ => {}
                }
                pos += len;
            }
            match ce {
                Some(next) => area = next,
                None => return Ok(name),
            }
        }
        Err(malformed("too many Rock Ridge continuation areas"))
    }
}

fn strip_version(name: &str) -> &str {
    let base = name.split(';').next().unwrap_or(name);
    base.strip_suffix('.').unwrap_or(base)
}

/// The record starting at `pos` (which must end by `limit`); `None` for a zero length byte (padding up to the
/// next sector).
fn parse_record(img: &[u8], pos: usize, limit: usize) -> Result<Option<Record>, IsoError> {
    let len = *img.get(pos).ok_or_else(|| malformed("a directory record past the end of the image"))? as usize;
    if len == 0 {
        return Ok(None);
    }
    if len < 34 || pos + len > limit || pos + len > img.len() {
        return Err(malformed(format!("a directory record of {len} bytes at byte {pos}")));
    }
    let r = &img[pos..pos + len];
    let name_len = r[32] as usize;
    if name_len == 0 || 33 + name_len > len {
        return Err(malformed(format!("a file identifier of {name_len} bytes in a record of {len} at byte {pos}")));
    }
    let su_start = 33 + name_len + id_padding(name_len);
    let le = |o: usize| u32::from_le_bytes([r[o], r[o + 1], r[o + 2], r[o + 3]]);
    Ok(Some(Record {
        extent: le(2),
        size: le(10),
        flags: r[25],
        name: (pos + 33, pos + 33 + name_len),
        su: (pos + su_start.min(len), pos + len),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpi::iso9660::tests::FILES;
    use crate::cpi::iso9660::write::{both32, write};

    #[test]
    fn round_trip_by_every_kind_of_name() {
        let img = write("config-2", FILES).unwrap();
        assert_eq!(img.len() % SECTOR, 0);
        assert_eq!(label(&img).unwrap(), "config-2");
        for (path, data) in FILES {
            assert_eq!(read_file(&img, path).unwrap(), *data, "{path}");
            assert_eq!(read_file(&img, &format!("/{path}")).unwrap(), *data, "{path}");
        }
        // primary names (no Rock Ridge: an image without SP) and Joliet names reach the same files
        let vol = Volume::open(&img).unwrap();
        assert_eq!(vol.rock_skip, Some(0));
        let plain = Volume { rock_skip: None, ..vol };
        let rec = plain.lookup(plain.primary_root, &["EC2", "LATEST", "META_DATA.JSON"], false).unwrap().unwrap();
        assert_eq!(rec.size as usize, FILES[1].1.len());
        let vol = Volume::open(&img).unwrap();
        let rec = vol.lookup(vol.joliet_root.unwrap(), &["ec2", "latest", "user-data"], true).unwrap().unwrap();
        assert_eq!(rec.size as usize, FILES[0].1.len());
    }

    #[test]
    fn missing_files_and_directories() {
        let img = write("config-2", FILES).unwrap();
        assert_eq!(read_file(&img, "ec2/latest"), Err(IsoError::NotAFile("ec2/latest".into())));
        assert_eq!(read_file(&img, "ec2/nope"), Err(IsoError::NotFound("ec2/nope".into())));
        assert_eq!(read_file(&img, "env/x"), Err(IsoError::NotFound("env/x".into())));
        assert!(matches!(read_file(&img, "/"), Err(IsoError::Path(_))));
    }

    #[test]
    fn foreign_and_malformed_images_give_errors() {
        assert_eq!(read_file(&[], "env"), Err(IsoError::NotIso("shorter than its volume descriptors")));
        assert!(matches!(read_file(&vec![0; 40 * SECTOR], "env"), Err(IsoError::NotIso(_))));
        let good = write("ENV", FILES).unwrap();
        // cut anywhere: an error or (cut inside the padding) the file, never a panic
        for cut in (0..good.len()).step_by(512) {
            let _ = read_file(&good[..cut], "env");
        }
        let mut bad = good.clone();
        bad[16 * SECTOR + 129] = 0; // block size 2048 -> 0
        assert!(matches!(read_file(&bad, "env"), Err(IsoError::Malformed(_))));
        let mut bad = good.clone();
        bad[16 * SECTOR + 156 + 2..16 * SECTOR + 156 + 6].copy_from_slice(&u32::MAX.to_le_bytes()); // root extent
        assert!(matches!(read_file(&bad, "env"), Err(IsoError::Malformed(_))));
        let mut bad = good.clone();
        bad[18 * SECTOR] = 3; // terminator gone: descriptors run on into the path tables
        assert!(matches!(read_file(&bad, "env"), Err(IsoError::Malformed(_))));
    }

    #[test]
    fn a_continuation_loop_is_cut_short() {
        let mut img = write("config-2", FILES).unwrap();
        let vol = Volume::open(&img).unwrap();
        let root = vol.extent(vol.primary_root).unwrap().0;
        let dot = parse_record(&img, root, root + SECTOR).unwrap().unwrap();
        // make the root's CE point at itself
        let ce = dot.su.0 + 7;
        assert_eq!(&img[ce..ce + 2], b"CE");
        let (block, offset) = ((ce / SECTOR) as u32, (ce % SECTOR) as u32);
        img[ce + 4..ce + 12].copy_from_slice(&both32(block));
        img[ce + 12..ce + 20].copy_from_slice(&both32(offset));
        img[ce + 20..ce + 28].copy_from_slice(&both32(28));
        let vol = Volume::open(&img).unwrap();
        let dot = parse_record(&img, root, root + SECTOR).unwrap().unwrap();
        assert_eq!(vol.rock_name(&dot), Err(malformed("too many Rock Ridge continuation areas")));
    }

    /// Every byte of the metadata set to a few values in turn: the reader returns (an error or bytes) and
    /// never panics or loops.
    #[test]
    fn corrupting_any_metadata_byte_never_panics() {
        let good = write("config-2", FILES).unwrap();
        let vol = Volume::open(&good).unwrap();
        let meta_end = (vol.extent(vol.primary_root).unwrap().0 / SECTOR + 6) * SECTOR;
        let mut img = good.clone();
        for pos in 16 * SECTOR..meta_end {
            for v in [0x00, 0x01, 0x22, 0x80, 0xFF] {
                let old = img[pos];
                img[pos] = v;
                for path in ["ec2/latest/user-data", "env"] {
                    let _ = read_file(&img, path);
                }
                img[pos] = old;
            }
        }
    }
}
