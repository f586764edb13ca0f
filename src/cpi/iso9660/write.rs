//! The writer: a volume label and a few small files laid out as an ECMA-119 image with Rock Ridge and Joliet.
use super::{id_padding, IsoError, FLAG_DIR, SECTOR};

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

const ER_ID: &[u8] = b"RRIP_1991A";
const ER_DESCRIPTOR: &[u8] = b"THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS";
const ER_SOURCE: &[u8] = b"PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.";

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

pub(super) fn both32(v: u32) -> [u8; 8] {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpi::iso9660::tests::FILES;
    use crate::cpi::iso9660::{read_file, IsoError};

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
}
