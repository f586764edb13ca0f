//! ISO 9660 images for the settings media, written and read in-process.
//!
//! The writer takes a volume label and a few small files (`path -> bytes`) and lays out an ECMA-119 image
//! with two name extensions, so every system shows the real, lower-case names:
//! - **Rock Ridge** (RRIP 1.10 over SUSP) on the primary tree: `SP` + `ER` on the root (the `ER` in a
//!   continuation area, as it does not fit in the root's record), `PX` (modes, owner root) and `NM` (the real
//!   name) on every record. Linux uses these names by default.
//! - **Joliet** (level 3, UCS-2): a second tree with the real names, for systems without Rock Ridge (and the
//!   label that libblkid, hence udev's `/dev/disk/by-label`, reports).
//!
//! The primary tree's own names are upper-case ISO 9660 level 2 identifiers (`META_DATA.JSON;1`), shown only
//! when both extensions are turned off. Every date in the image is 2000-01-01 00:00:00 UTC and every byte
//! follows from the input, so the same files always give the same image.
//!
//! The reader ([`read_file`], [`label`]) finds one file by path in an image made by this writer or by another
//! (older vmcpi media were written by xorriso): it matches Rock Ridge names, then plain ISO 9660 names (case
//! and version insensitive), then Joliet names. It checks every offset against the image and fails with an
//! [`IsoError`] on anything malformed; it never panics.

/// Size of a logical sector (and block) in the images written and read.
pub const SECTOR: usize = 2048;

/// Every date in a written image: 2000-01-01 00:00:00 UTC.
const DATE_RECORD: [u8; 7] = [100, 1, 1, 0, 0, 0, 0];
const DATE_DESCRIPTOR: &[u8; 16] = b"2000010100000000";
/// Zero sectors after the data, counted in the volume: Linux reads ahead past the last file on optical
/// drives, and mastering tools pad the same way (mkisofs `-pad`).
const PAD_SECTORS: usize = 150;
/// Longest name component: Joliet's limit.
const MAX_NAME: usize = 64;
/// Largest image the writer makes (the settings media are a few KiB).
const MAX_IMAGE: usize = 64 << 20;
/// Bounds on what the reader follows in a foreign image.
const MAX_DESCRIPTORS: usize = 64;
const MAX_CONTINUATIONS: usize = 16;
const MAX_DEPTH: usize = 64;

const FLAG_DIR: u8 = 0x02;
const FLAG_MULTI_EXTENT: u8 = 0x80;

const ER_ID: &[u8] = b"RRIP_1991A";
const ER_DESCRIPTOR: &[u8] = b"THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS";
const ER_SOURCE: &[u8] = b"PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IsoError {
    #[error("invalid volume label {0:?}: 1 to 16 characters of A-Z a-z 0-9 - _ .")]
    Label(String),
    #[error("invalid path {0:?} in the image: components of 1 to 64 printable ASCII characters, not . or .., no ;")]
    Path(String),
    #[error("{0:?} is given twice, or both as a file and as a directory")]
    FileAndDir(String),
    #[error("the files are too large for a settings image ({0} bytes)")]
    TooLarge(usize),
    #[error("not an ISO 9660 image: {0}")]
    NotIso(&'static str),
    #[error("malformed ISO 9660 image: {0}")]
    Malformed(String),
    #[error("{0} is not in the image")]
    NotFound(String),
    #[error("{0} is a directory, not a file")]
    NotAFile(String),
}

fn malformed(what: impl Into<String>) -> IsoError {
    IsoError::Malformed(what.into())
}

// ---------------------------------------------------------------------------------------------------------
// writer

/// A node of the tree being written: a directory (with children) or a file (an index into the input).
struct Node {
    name: String,
    parent: usize,
    children: Vec<usize>,
    file: Option<usize>,
    /// The primary tree's identifier (`NAME.EXT;1` or `DIR`).
    iso_name: Vec<u8>,
}

impl Node {
    fn is_dir(&self) -> bool {
        self.file.is_none()
    }
}

/// Where each directory's extents and each file's data sit, per tree.
struct Layout {
    /// Directories in path-table order, for the primary tree and for the Joliet tree.
    order: [Vec<usize>; 2],
    /// (sector, size in bytes) of each node's directory extent, per tree; files: unused.
    dir_extent: [Vec<(u32, u32)>; 2],
    /// First sector of each file's data.
    file_sector: Vec<u32>,
    path_table: [(u32, u32, u32); 2],
    continuation: u32,
    total: usize,
}

const PRIMARY: usize = 0;
const JOLIET: usize = 1;

/// Writes an image labelled `label` holding `files` (absolute or relative paths; directories are implied).
pub fn write(label: &str, files: &[(&str, &[u8])]) -> Result<Vec<u8>, IsoError> {
    write_padded(label, files, PAD_SECTORS)
}

/// [`write`] with `pad` zero sectors after the data instead of [`PAD_SECTORS`] (0: the image ends with its
/// last file, as a virtual drive of exactly the image's size needs no run-out).
pub fn write_padded(label: &str, files: &[(&str, &[u8])], pad: usize) -> Result<Vec<u8>, IsoError> {
    if label.is_empty()
        || label.len() > 16
        || !label.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(IsoError::Label(label.to_string()));
    }
    let data_len: usize = files.iter().map(|(_, d)| d.len()).sum();
    if data_len > MAX_IMAGE {
        return Err(IsoError::TooLarge(data_len));
    }
    let nodes = tree(files)?;
    let layout = layout(&nodes, files, pad);
    let mut img = vec![0u8; layout.total * SECTOR];
    let at = |s: u32| s as usize * SECTOR;

    // volume descriptors: primary, Joliet, terminator
    let pvd = descriptor(PRIMARY, label, &layout);
    img[at(16)..at(17)].copy_from_slice(&pvd);
    let svd = descriptor(JOLIET, label, &layout);
    img[at(17)..at(18)].copy_from_slice(&svd);
    img[at(18)] = 255;
    img[at(18) + 1..at(18) + 6].copy_from_slice(b"CD001");
    img[at(18) + 6] = 1;

    for tree in [PRIMARY, JOLIET] {
        let (l, m, _) = layout.path_table[tree];
        let (le, be) = path_tables(tree, &nodes, &layout);
        img[at(l)..at(l) + le.len()].copy_from_slice(&le);
        img[at(m)..at(m) + be.len()].copy_from_slice(&be);
        for &d in &layout.order[tree] {
            let (sector, size) = layout.dir_extent[tree][d];
            let extent = directory(tree, d, &nodes, &layout, files);
            debug_assert!(extent.len() <= size as usize);
            img[at(sector)..at(sector) + extent.len()].copy_from_slice(&extent);
        }
    }
    // the root's Rock Ridge extension reference (ER), in the continuation area its CE points to
    let er = er_entry();
    img[at(layout.continuation)..at(layout.continuation) + er.len()].copy_from_slice(&er);
    for (i, (_, data)) in files.iter().enumerate() {
        let s = at(layout.file_sector[i]);
        img[s..s + data.len()].copy_from_slice(data);
    }
    Ok(img)
}

/// Builds the node arena (0 = root) from the file paths, checking names.
fn tree(files: &[(&str, &[u8])]) -> Result<Vec<Node>, IsoError> {
    let mut nodes = vec![Node { name: String::new(), parent: 0, children: vec![], file: None, iso_name: vec![0] }];
    for (i, (path, _)) in files.iter().enumerate() {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        if parts.iter().any(|p| {
            p.is_empty()
                || p.len() > MAX_NAME
                || *p == "."
                || *p == ".."
                || !p.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
                || p.contains(';')
        }) {
            return Err(IsoError::Path(path.to_string()));
        }
        let mut cur = 0;
        for (k, part) in parts.iter().enumerate() {
            let last = k + 1 == parts.len();
            let found = nodes[cur].children.iter().copied().find(|&c| nodes[c].name == *part);
            cur = match found {
                Some(c) if last || !nodes[c].is_dir() => return Err(IsoError::FileAndDir(path.to_string())),
                Some(c) => c,
                None => {
                    let id = nodes.len();
                    let file = last.then_some(i);
                    let taken = |n: &[u8]| nodes[cur].children.iter().any(|&c| nodes[c].iso_name == n);
                    let iso_name = iso_name(part, file.is_none(), taken);
                    nodes.push(Node { name: part.to_string(), parent: cur, children: vec![], file, iso_name });
                    nodes[cur].children.push(id);
                    id
                }
            };
        }
    }
    Ok(nodes)
}

/// The primary tree's identifier: upper-case d-characters, `NAME.EXT;1` for files (at most 30 characters
/// before `;1`), `NAME` for directories (at most 31). A name that another in the directory already `taken`
/// ends in a number instead (`A_RATHER_LONG_NAME1.JSON;1`).
fn iso_name(name: &str, dir: bool, taken: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let d = |c: u8| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { b'_' };
    let (stem, ext, room) = match name.rfind('.') {
        _ if dir => (name, "", 31),
        Some(p) if p > 0 => (&name[..p], &name[p + 1..], 29),
        _ => (name, "", 29),
    };
    let ext: Vec<u8> = ext.bytes().map(d).take(8).collect();
    let stem: Vec<u8> = stem.bytes().map(d).collect();
    let room = room - ext.len();
    let make = |suffix: &str| -> Vec<u8> {
        let keep = stem.len().min(room - suffix.len());
        let mut out = stem[..keep].to_vec();
        out.extend(suffix.bytes());
        if !dir {
            out.push(b'.');
            out.extend(&ext);
            out.extend(b";1");
        }
        out
    };
    let mut out = make("");
    let mut n = 0u32;
    while taken(&out) {
        n += 1;
        out = make(&n.to_string());
    }
    out
}

fn joliet_name(node: &Node) -> Vec<u8> {
    let mut s = node.name.clone();
    if !node.is_dir() {
        s.push_str(";1");
    }
    s.encode_utf16().flat_map(|u| u.to_be_bytes()).collect()
}

/// A node's identifier in `tree`; the ordering key of its directory's records.
fn ident(tree: usize, node: &Node) -> Vec<u8> {
    if tree == PRIMARY {
        node.iso_name.clone()
    } else {
        joliet_name(node)
    }
}

/// ECMA-119 9.3 order: by name, then extension, each padded with spaces; then by version.
fn cmp_ident(tree: usize, a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    if tree == JOLIET {
        return a.cmp(b);
    }
    let split = |x: &[u8]| -> (Vec<u8>, Vec<u8>) {
        let x = x.split(|&c| c == b';').next().unwrap_or_default();
        match x.iter().position(|&c| c == b'.') {
            Some(p) => (x[..p].to_vec(), x[p + 1..].to_vec()),
            None => (x.to_vec(), vec![]),
        }
    };
    let padded = |a: &[u8], b: &[u8]| {
        let n = a.len().max(b.len());
        let pa = a.iter().copied().chain(std::iter::repeat(b' ')).take(n);
        let pb = b.iter().copied().chain(std::iter::repeat(b' ')).take(n);
        pa.cmp(pb)
    };
    let ((an, ae), (bn, be)) = (split(a), split(b));
    padded(&an, &bn).then_with(|| padded(&ae, &be)).then_with(|| a.cmp(b))
}

fn sorted_children(tree: usize, d: usize, nodes: &[Node]) -> Vec<usize> {
    let mut c = nodes[d].children.clone();
    c.sort_by(|&x, &y| cmp_ident(tree, &ident(tree, &nodes[x]), &ident(tree, &nodes[y])));
    c
}

/// Directories in path-table order: by level, then by parent's number, then by name.
fn dir_order(tree: usize, nodes: &[Node]) -> Vec<usize> {
    let mut order = vec![0];
    let mut i = 0;
    while i < order.len() {
        let d = order[i];
        order.extend(sorted_children(tree, d, nodes).into_iter().filter(|&c| nodes[c].is_dir()));
        i += 1;
    }
    order
}

fn sectors(bytes: usize) -> usize {
    bytes.div_ceil(SECTOR)
}

fn layout(nodes: &[Node], files: &[(&str, &[u8])], pad: usize) -> Layout {
    let order = [dir_order(PRIMARY, nodes), dir_order(JOLIET, nodes)];
    let mut next: u32 = 19;
    let mut path_table = [(0, 0, 0); 2];
    for tree in [PRIMARY, JOLIET] {
        let size: usize = order[tree].iter().map(|&d| path_record_len(ident_for_path(tree, d, nodes).len())).sum();
        let n = sectors(size) as u32;
        path_table[tree] = (next, next + n, size as u32);
        next += 2 * n;
    }
    let continuation = next;
    next += 1;
    let mut dir_extent = [vec![(0, 0); nodes.len()], vec![(0, 0); nodes.len()]];
    for tree in [PRIMARY, JOLIET] {
        for &d in &order[tree] {
            let size = records(tree, d, nodes).iter().fold(0, |pos, &len| place(pos, len) + len);
            let n = sectors(size).max(1);
            dir_extent[tree][d] = (next, (n * SECTOR) as u32);
            next += n as u32;
        }
    }
    let mut file_sector = vec![0; files.len()];
    for (i, (_, data)) in files.iter().enumerate() {
        file_sector[i] = next;
        next += sectors(data.len()) as u32;
    }
    Layout { order, dir_extent, file_sector, path_table, continuation, total: next as usize + pad.min(PAD_SECTORS) }
}

/// Where a record of `len` bytes goes in a directory whose records so far end at `pos`: records never cross
/// a sector boundary.
fn place(pos: usize, len: usize) -> usize {
    if pos / SECTOR != (pos + len - 1) / SECTOR {
        (pos / SECTOR + 1) * SECTOR
    } else {
        pos
    }
}

/// Lengths of the records of directory `d` in `tree`, in order (`.`, `..`, children).
fn records(tree: usize, d: usize, nodes: &[Node]) -> Vec<usize> {
    let mut out = vec![self_record_len(tree, d, nodes), dot_record_len(tree)];
    for c in sorted_children(tree, d, nodes) {
        let su = if tree == PRIMARY { rock_ridge(c, nodes).len() } else { 0 };
        out.push(record_len(ident(tree, &nodes[c]).len(), su));
    }
    out
}

fn self_record_len(tree: usize, d: usize, nodes: &[Node]) -> usize {
    match (tree, d) {
        (PRIMARY, 0) => record_len(1, root_su(0, nodes).len()),
        (PRIMARY, _) => record_len(1, PX_LEN),
        _ => record_len(1, 0),
    }
}

fn dot_record_len(tree: usize) -> usize {
    record_len(1, if tree == PRIMARY { PX_LEN } else { 0 })
}

fn record_len(name_len: usize, su_len: usize) -> usize {
    let base = 33 + name_len + id_padding(name_len);
    let len = base + su_len;
    len + len % 2
}

/// The padding byte after a file identifier of even length (so the system use field starts at an even
/// offset).
fn id_padding(name_len: usize) -> usize {
    usize::from(name_len.is_multiple_of(2))
}

fn path_record_len(name_len: usize) -> usize {
    8 + name_len + name_len % 2
}

/// A directory's identifier in the path table (the root's is one zero byte).
fn ident_for_path(tree: usize, d: usize, nodes: &[Node]) -> Vec<u8> {
    if d == 0 {
        vec![0]
    } else {
        ident(tree, &nodes[d])
    }
}

fn put_both16(b: &mut [u8], v: u16) {
    b[..2].copy_from_slice(&v.to_le_bytes());
    b[2..4].copy_from_slice(&v.to_be_bytes());
}

fn put_both32(b: &mut [u8], v: u32) {
    b[..4].copy_from_slice(&v.to_le_bytes());
    b[4..8].copy_from_slice(&v.to_be_bytes());
}

fn both32(v: u32) -> [u8; 8] {
    let mut b = [0; 8];
    put_both32(&mut b, v);
    b
}

/// A directory record (ECMA-119 9.1) with `su` as its system use field.
fn record(extent: u32, size: u32, dir: bool, name: &[u8], su: &[u8]) -> Vec<u8> {
    let len = record_len(name.len(), su.len());
    let mut r = vec![0u8; len];
    r[0] = len as u8;
    put_both32(&mut r[2..10], extent);
    put_both32(&mut r[10..18], size);
    r[18..25].copy_from_slice(&DATE_RECORD);
    r[25] = if dir { FLAG_DIR } else { 0 };
    put_both16(&mut r[28..32], 1);
    r[32] = name.len() as u8;
    r[33..33 + name.len()].copy_from_slice(name);
    let su_at = 33 + name.len() + id_padding(name.len());
    r[su_at..su_at + su.len()].copy_from_slice(su);
    r
}

const PX_LEN: usize = 36;

/// Rock Ridge `PX`: mode, links, owner and group root.
fn px(mode: u32, links: u32) -> Vec<u8> {
    let mut e = vec![b'P', b'X', PX_LEN as u8, 1];
    e.extend(both32(mode));
    e.extend(both32(links));
    e.extend(both32(0));
    e.extend(both32(0));
    e
}

fn links(d: usize, nodes: &[Node]) -> u32 {
    2 + nodes[d].children.iter().filter(|&&c| nodes[c].is_dir()).count() as u32
}

fn px_of(n: usize, nodes: &[Node]) -> Vec<u8> {
    if nodes[n].is_dir() {
        px(0o040755, links(n, nodes))
    } else {
        px(0o100644, 1)
    }
}

/// The system use field of a child's record in the primary tree: `PX` and `NM`.
fn rock_ridge(n: usize, nodes: &[Node]) -> Vec<u8> {
    let name = nodes[n].name.as_bytes();
    let mut su = px_of(n, nodes);
    su.extend([b'N', b'M', (5 + name.len()) as u8, 1, 0]);
    su.extend(name);
    su
}

/// The root's `.` system use field: `SP`, `CE` (pointing at the `ER`) and `PX`.
fn root_su(continuation: u32, nodes: &[Node]) -> Vec<u8> {
    let mut su = vec![b'S', b'P', 7, 1, 0xBE, 0xEF, 0];
    su.extend([b'C', b'E', 28, 1]);
    su.extend(both32(continuation));
    su.extend(both32(0));
    su.extend(both32(er_entry().len() as u32));
    su.extend(px_of(0, nodes));
    su
}

fn er_entry() -> Vec<u8> {
    let mut e = vec![b'E', b'R', (8 + ER_ID.len() + ER_DESCRIPTOR.len() + ER_SOURCE.len()) as u8, 1];
    e.extend([ER_ID.len() as u8, ER_DESCRIPTOR.len() as u8, ER_SOURCE.len() as u8, 1]);
    e.extend(ER_ID);
    e.extend(ER_DESCRIPTOR);
    e.extend(ER_SOURCE);
    e
}

/// The extent of directory `d` in `tree`.
fn directory(tree: usize, d: usize, nodes: &[Node], layout: &Layout, files: &[(&str, &[u8])]) -> Vec<u8> {
    let (sector, size) = layout.dir_extent[tree][d];
    let (psector, psize) = layout.dir_extent[tree][nodes[d].parent];
    let mut recs = Vec::new();
    let (self_su, dot_su) = match tree {
        PRIMARY if d == 0 => (root_su(layout.continuation, nodes), px_of(0, nodes)),
        PRIMARY => (px_of(d, nodes), px_of(nodes[d].parent, nodes)),
        _ => (vec![], vec![]),
    };
    recs.push(record(sector, size, true, &[0], &self_su));
    recs.push(record(psector, psize, true, &[1], &dot_su));
    for c in sorted_children(tree, d, nodes) {
        let n = &nodes[c];
        let su = if tree == PRIMARY { rock_ridge(c, nodes) } else { vec![] };
        let (extent, size) = match n.file {
            Some(i) => (layout.file_sector[i], files[i].1.len() as u32),
            None => layout.dir_extent[tree][c],
        };
        recs.push(record(extent, size, n.is_dir(), &ident(tree, n), &su));
    }
    let mut out = Vec::new();
    for r in recs {
        let at = place(out.len(), r.len());
        out.resize(at, 0);
        out.extend(r);
    }
    out
}

/// The path tables of `tree`: (little-endian L table, big-endian M table).
fn path_tables(tree: usize, nodes: &[Node], layout: &Layout) -> (Vec<u8>, Vec<u8>) {
    let order = &layout.order[tree];
    let number = |d: usize| order.iter().position(|&x| x == d).map_or(1, |p| p as u16 + 1);
    let (mut le, mut be) = (Vec::new(), Vec::new());
    for &d in order {
        let name = ident_for_path(tree, d, nodes);
        let extent = layout.dir_extent[tree][d].0;
        let parent = number(nodes[d].parent);
        for (out, big) in [(&mut le, false), (&mut be, true)] {
            out.push(name.len() as u8);
            out.push(0);
            out.extend(if big { extent.to_be_bytes() } else { extent.to_le_bytes() });
            out.extend(if big { parent.to_be_bytes() } else { parent.to_le_bytes() });
            out.extend(&name);
            if name.len() % 2 == 1 {
                out.push(0);
            }
        }
    }
    (le, be)
}

/// A text field of a volume descriptor: ASCII padded with spaces, or UCS-2 (Joliet) padded with spaces.
fn text(field: &mut [u8], s: &str, tree: usize) {
    if tree == PRIMARY {
        field.fill(b' ');
        field[..s.len()].copy_from_slice(s.as_bytes());
    } else {
        for pair in field.chunks_mut(2) {
            pair[0] = 0;
            if pair.len() == 2 {
                pair[1] = b' ';
            }
        }
        for (i, u) in s.encode_utf16().enumerate() {
            field[2 * i..2 * i + 2].copy_from_slice(&u.to_be_bytes());
        }
    }
}

/// The primary (type 1) or Joliet supplementary (type 2) volume descriptor.
fn descriptor(tree: usize, label: &str, layout: &Layout) -> Vec<u8> {
    let mut v = vec![0u8; SECTOR];
    v[0] = if tree == PRIMARY { 1 } else { 2 };
    v[1..6].copy_from_slice(b"CD001");
    v[6] = 1;
    text(&mut v[8..40], "", tree); // system identifier
    text(&mut v[40..72], label, tree);
    put_both32(&mut v[80..88], layout.total as u32);
    if tree == JOLIET {
        v[88..91].copy_from_slice(b"%/E"); // UCS-2 level 3
    }
    put_both16(&mut v[120..124], 1); // volume set size
    put_both16(&mut v[124..128], 1); // volume sequence number
    put_both16(&mut v[128..132], SECTOR as u16);
    let (l, m, size) = layout.path_table[tree];
    put_both32(&mut v[132..140], size);
    v[140..144].copy_from_slice(&l.to_le_bytes());
    v[148..152].copy_from_slice(&m.to_be_bytes());
    let (sector, dsize) = layout.dir_extent[tree][0];
    let root = record(sector, dsize, true, &[0], &[]);
    v[156..190].copy_from_slice(&root);
    text(&mut v[190..318], "", tree); // volume set
    text(&mut v[318..446], "", tree); // publisher
    text(&mut v[446..574], "VMCPI", tree); // data preparer
    text(&mut v[574..702], "", tree); // application
    text(&mut v[702..739], "", tree); // copyright file
    text(&mut v[739..776], "", tree); // abstract file
    text(&mut v[776..813], "", tree); // bibliographic file
    for (i, date) in [DATE_DESCRIPTOR, DATE_DESCRIPTOR, b"0000000000000000", b"0000000000000000"].iter().enumerate() {
        let at = 813 + 17 * i;
        v[at..at + 16].copy_from_slice(*date);
        v[at + 16] = 0; // GMT
    }
    v[881] = 1; // file structure version
    v
}

// ---------------------------------------------------------------------------------------------------------
// reader

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

    const FILES: &[(&str, &[u8])] = &[
        ("ec2/latest/user-data", br#"{"agent_id":"a"}"#),
        ("ec2/latest/meta-data.json", br#"{"instance-id":"vm-1"}"#),
        ("env", b"{}"),
    ];

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
    fn the_same_files_give_the_same_bytes() {
        assert!(write("ENV", FILES).unwrap() == write("ENV", FILES).unwrap());
        assert!(write("ENV", FILES).unwrap() != write("ENV2", FILES).unwrap());
    }

    #[test]
    fn large_files_and_many_entries() {
        let big: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let names: Vec<String> = (0..120).map(|i| format!("dir/a-rather-long-file-name-number-{i:03}.json")).collect();
        let mut files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), b"x".as_slice())).collect();
        files.push(("big", &big));
        files.push(("empty", b""));
        let img = write("many", &files).unwrap();
        assert_eq!(read_file(&img, "big").unwrap(), big);
        assert_eq!(read_file(&img, "empty").unwrap(), b"");
        for n in &names {
            assert_eq!(read_file(&img, n).unwrap(), b"x", "{n}");
        }
    }

    #[test]
    fn names_that_map_alike_stay_apart() {
        let files: &[(&str, &[u8])] = &[("a-b", b"1"), ("a_b", b"2"), ("A-B", b"3"), ("dir.x/a.b", b"4")];
        let img = write("ok", files).unwrap();
        for (path, data) in files {
            assert_eq!(read_file(&img, path).unwrap(), *data, "{path}");
        }
    }

    #[test]
    fn bad_input_to_the_writer() {
        assert!(matches!(write("", FILES), Err(IsoError::Label(_))));
        assert!(matches!(write("a label that is far too long", FILES), Err(IsoError::Label(_))));
        assert!(matches!(write("ok", &[("a//b", b"")]), Err(IsoError::Path(_))));
        assert!(matches!(write("ok", &[("a/../b", b"")]), Err(IsoError::Path(_))));
        assert!(matches!(write("ok", &[("a;1", b"")]), Err(IsoError::Path(_))));
        assert!(matches!(write("ok", &[("\u{e9}", b"")]), Err(IsoError::Path(_))));
        assert!(matches!(write("ok", &[("a", b""), ("a/b", b"")]), Err(IsoError::FileAndDir(_))));
        assert!(matches!(write("ok", &[("a/b", b""), ("a", b"")]), Err(IsoError::FileAndDir(_))));
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
