//! qcow2 headers (docs/interop/qcow2.txt in QEMU): what must hold before a qcow2 stemcell disk is handed to
//! libvirt or qemu. Refused: a backing file (offset or size set), an external data file (incompatible bit 2,
//! or its header extension), encryption (crypt_method, or the LUKS header extension), the corrupt bit and any
//! incompatible feature bit we do not know, versions other than 2 and 3, and sizes out of bounds. Only the
//! first cluster is read (where the header, its extensions and a backing file name live), at most 2 MiB.
use super::{read_up_to, shown, DiskImageError, Result, MAX_VIRTUAL_SIZE};
use std::io::Read;

/// What a qcow2 header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Qcow2Info {
    pub version: u32,
    pub virtual_size: u64,
    pub cluster_size: u64,
}

const MAGIC: &[u8; 4] = b"QFI\xfb";
/// Incompatible feature bits (version 3).
const DIRTY: u64 = 1 << 0;
const CORRUPT: u64 = 1 << 1;
const DATA_FILE: u64 = 1 << 2;
const COMPRESSION_TYPE: u64 = 1 << 3;
const EXTENDED_L2: u64 = 1 << 4;
const KNOWN_INCOMPATIBLE: u64 = DIRTY | CORRUPT | DATA_FILE | COMPRESSION_TYPE | EXTENDED_L2;
/// Header extension types.
const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_ENCRYPTION: u32 = 0x0537_be77;
const EXT_DATA_FILE: u32 = 0x4441_5441;
/// qemu's limits: clusters of 512 B to 2 MiB, an L1 table of at most 32 MiB, a backing file name of 1023 B.
const MIN_CLUSTER_BITS: u32 = 9;
const MAX_CLUSTER_BITS: u32 = 21;
const MAX_L1_BYTES: u64 = 32 << 20;
const MAX_BACKING_NAME: u64 = 1023;

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

fn invalid(reason: impl Into<String>) -> DiskImageError {
    DiskImageError::Qcow2Invalid(reason.into())
}

/// Reads the first cluster of a qcow2 image of `len` bytes from `r` and checks it; returns what it says and
/// the bytes read (the caller hands them on before the rest of the stream).
pub fn inspect_stream(r: &mut dyn Read, len: u64) -> Result<(Qcow2Info, Vec<u8>)> {
    let mut head = vec![0u8; (64 << 10).min(len) as usize];
    let n = read_up_to(r, &mut head).map_err(DiskImageError::Io)?;
    head.truncate(n);
    if head.len() >= 24 && head.starts_with(MAGIC) {
        let bits = be32(&head, 20);
        if (MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&bits) && (1u64 << bits) > head.len() as u64 {
            let want = (1u64 << bits).min(len) as usize;
            let have = head.len();
            head.resize(want, 0);
            let m = read_up_to(r, &mut head[have..]).map_err(DiskImageError::Io)?;
            head.truncate(have + m);
        }
    }
    let info = inspect(&head, len)?;
    Ok((info, head))
}

/// Checks a qcow2 header; `head` is the image's first bytes (its first cluster, or all of a shorter image),
/// `len` the image's size.
pub fn inspect(head: &[u8], len: u64) -> Result<Qcow2Info> {
    if head.len() < 72 {
        return Err(invalid(format!("its header is cut short ({} bytes)", head.len())));
    }
    if !head.starts_with(MAGIC) {
        return Err(invalid("it does not start with QFI\\xfb"));
    }
    let version = be32(head, 4);
    if version != 2 && version != 3 {
        return Err(invalid(format!("version {version} (only 2 and 3 are accepted)")));
    }
    let cluster_bits = be32(head, 20);
    let size = be64(head, 24);
    refuse_backing_file(head)?;
    refuse_encryption(be32(head, 32))?;
    if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
        return Err(invalid(format!("cluster_bits {cluster_bits} (clusters of 512 B to 2 MiB are accepted)")));
    }
    let cluster = 1u64 << cluster_bits;
    if size == 0 || size > MAX_VIRTUAL_SIZE {
        return Err(invalid(format!("virtual size {size} bytes (1 byte to {MAX_VIRTUAL_SIZE} are accepted)")));
    }
    let (incompatible, ext_start) = if version == 3 { version_3_fields(head, cluster)? } else { (0, 72) };
    if incompatible & CORRUPT != 0 {
        return Err(invalid("it is marked corrupt (incompatible feature bit 1)"));
    }
    let unknown = incompatible & !KNOWN_INCOMPATIBLE;
    if unknown != 0 {
        return Err(DiskImageError::Qcow2Refused {
            found: format!("unknown incompatible features (bits {unknown:#x})"),
        });
    }
    let data_file_name = header_extensions(head, ext_start, cluster, len)?;
    if incompatible & DATA_FILE != 0 || data_file_name.is_some() {
        let name = data_file_name.map(|n| format!(" {n}")).unwrap_or_default();
        return Err(DiskImageError::Qcow2Refused { found: format!("an external data file{name}") });
    }
    check_tables(head, size, cluster_bits, incompatible)?;
    Ok(Qcow2Info { version, virtual_size: size, cluster_size: cluster })
}

/// Refuses a backing file (its offset or size set), naming it when the header holds its name.
fn refuse_backing_file(head: &[u8]) -> Result<()> {
    let backing_offset = be64(head, 8);
    let backing_size = be32(head, 16) as u64;
    if backing_offset != 0 || backing_size != 0 {
        let end = backing_offset.checked_add(backing_size.min(MAX_BACKING_NAME));
        let name = match end {
            Some(end) if backing_offset > 0 && end <= head.len() as u64 && backing_size > 0 => {
                format!(" {}", shown(&head[backing_offset as usize..end as usize]))
            }
            _ => String::new(),
        };
        return Err(DiskImageError::Qcow2Refused { found: format!("a backing file{name}") });
    }
    Ok(())
}

/// Refuses encryption (`crypt_method` other than 0).
fn refuse_encryption(crypt: u32) -> Result<()> {
    if crypt != 0 {
        let how = match crypt {
            1 => "AES",
            2 => "LUKS",
            _ => "unknown",
        };
        return Err(DiskImageError::Qcow2Refused { found: format!("encryption ({how}, crypt_method {crypt})") });
    }
    Ok(())
}

/// The fields a version 3 header adds, checked: its incompatible features and where its extensions start.
fn version_3_fields(head: &[u8], cluster: u64) -> Result<(u64, u64)> {
    if head.len() < 104 {
        return Err(invalid(format!("its version 3 header is cut short ({} bytes)", head.len())));
    }
    let incompatible = be64(head, 72);
    let refcount_order = be32(head, 96);
    let header_len = be32(head, 100) as u64;
    if refcount_order > 6 {
        return Err(invalid(format!("refcount_order {refcount_order} (at most 6)")));
    }
    if header_len < 104 || header_len > cluster || !header_len.is_multiple_of(8) {
        return Err(invalid(format!("header_length {header_len}")));
    }
    Ok((incompatible, header_len))
}

/// Walks the header extensions from `at` up to the end marker, all in the first cluster; refuses an
/// encryption header extension, and returns the name of an external data file if one is named.
fn header_extensions(head: &[u8], mut at: u64, cluster: u64, len: u64) -> Result<Option<String>> {
    let mut data_file_name = None;
    let limit = (head.len() as u64).min(cluster);
    loop {
        if at + 8 > limit {
            if limit < cluster && limit == len {
                return Err(invalid("the image ends inside its header extensions"));
            }
            return Err(invalid("its header extensions run past the first cluster"));
        }
        let ty = be32(head, at as usize);
        let ext_len = be32(head, at as usize + 4) as u64;
        let data = at + 8;
        let end = data + ext_len;
        if end > limit {
            return Err(invalid(format!("header extension {ty:#x} of {ext_len} bytes runs past the first cluster")));
        }
        match ty {
            EXT_END => return Ok(data_file_name),
            EXT_ENCRYPTION => {
                return Err(DiskImageError::Qcow2Refused { found: "an encryption header extension".into() });
            }
            EXT_DATA_FILE => data_file_name = Some(shown(&head[data as usize..end as usize])),
            EXT_BACKING_FORMAT => {}
            _ => {}
        }
        at = end.div_ceil(8) * 8;
    }
}

/// Checks that the L1 table covers the virtual `size` and stays within qemu's bound, and that the L1 and
/// refcount tables start on cluster boundaries.
fn check_tables(head: &[u8], size: u64, cluster_bits: u32, incompatible: u64) -> Result<()> {
    let l1_size = be32(head, 36) as u64;
    let l1_offset = be64(head, 40);
    let refcount_offset = be64(head, 48);
    let cluster = 1u64 << cluster_bits;
    let l2_bits = cluster_bits - if incompatible & EXTENDED_L2 != 0 { 4 } else { 3 };
    let per_l1 = 1u64 << (cluster_bits + l2_bits);
    let needed = size.div_ceil(per_l1);
    if l1_size < needed || l1_size * 8 > MAX_L1_BYTES {
        return Err(invalid(format!("an L1 table of {l1_size} entries for a virtual size of {size} bytes")));
    }
    for (what, off) in [("L1 table", l1_offset), ("refcount table", refcount_offset)] {
        if off == 0 || !off.is_multiple_of(cluster) {
            return Err(invalid(format!("its {what} offset {off} is not a cluster boundary")));
        }
    }
    Ok(())
}
