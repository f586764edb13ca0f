//! The embedded descriptor: parsed without trusting it, and refused unless it is one SPARSE extent in the
//! file itself with no parent.
use super::header::Header;
use super::{refused, Kind};
use crate::cpi::diskimage::{shown, DiskImageError, Result};

/// One extent line of a descriptor.
#[derive(Debug)]
struct Extent {
    line: String,
    access: String,
    sectors: Option<u64>,
    kind: String,
    name: Option<Vec<u8>>,
    rest: String,
}

/// A descriptor, parsed without trusting it.
#[derive(Debug, Default)]
struct Descriptor {
    create_types: Vec<String>,
    parent_cid: Option<String>,
    parent_hint: Option<String>,
    extents: Vec<Extent>,
    bad_line: Option<String>,
}

fn unquote(v: &str) -> &str {
    let v = v.trim();
    v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v)
}

fn parse_extent(line: &str) -> Extent {
    let mut it = line.splitn(4, char::is_whitespace).filter(|s| !s.is_empty());
    let access = it.next().unwrap_or_default().to_ascii_uppercase();
    let sectors = it.next().and_then(|s| s.parse().ok());
    let kind = it.next().unwrap_or_default().to_ascii_uppercase();
    // the rest: an optional quoted name, then anything (an offset for FLAT extents)
    let after_kind = line
        .splitn(3, char::is_whitespace)
        .filter(|s| !s.is_empty())
        .nth(2)
        .and_then(|s| s.trim_start().split_once(char::is_whitespace).map(|(_, r)| r.trim()))
        .unwrap_or_default();
    let (name, rest) = match after_kind.strip_prefix('"').and_then(|r| r.split_once('"')) {
        Some((name, rest)) => (Some(name.as_bytes().to_vec()), rest.trim().to_string()),
        None => (None, after_kind.to_string()),
    };
    Extent { line: line.to_string(), access, sectors, kind, name, rest }
}

fn parse_descriptor(text: &[u8]) -> Descriptor {
    let mut d = Descriptor::default();
    let lower = String::from_utf8_lossy(text).to_ascii_lowercase();
    if let Some(at) = lower.find("parentfilenamehint") {
        // the value as the line holds it (in a comment too: qemu's substring search would find it there)
        let line = String::from_utf8_lossy(text)[at..].lines().next().unwrap_or_default().to_string();
        d.parent_hint = Some(line.split_once('=').map(|(_, v)| unquote(v).to_string()).unwrap_or(line));
    }
    for raw in text.split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(raw);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.len() >= 4 && line.as_bytes()[..4].eq_ignore_ascii_case(b"ddb.") {
            continue;
        }
        let first = line.split_whitespace().next().unwrap_or_default().to_ascii_uppercase();
        if ["RW", "RDONLY", "NOACCESS"].contains(&first.as_str()) {
            d.extents.push(parse_extent(line));
            continue;
        }
        match line.split_once('=') {
            Some((k, v)) if !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') => {
                let v = unquote(v).to_string();
                match k.to_ascii_lowercase().as_str() {
                    "createtype" => d.create_types.push(v),
                    "parentcid" => d.parent_cid = Some(v),
                    _ => {}
                }
            }
            _ => {
                if d.bad_line.is_none() {
                    d.bad_line = Some(line.to_string());
                }
            }
        }
    }
    d
}

impl Descriptor {
    /// Why this descriptor is refused (`what`: "a VMDK" or "a VMDK text descriptor"), most telling first;
    /// `None` when it is one accepted SPARSE extent in the file itself, without a parent.
    fn refusal(&self, what: &str) -> Option<String> {
        if let Some(hint) = &self.parent_hint {
            return Some(format!("{what} with a parent (parentFileNameHint=\"{}\")", shown(hint.as_bytes())));
        }
        if let Some(cid) = self.parent_cid.as_deref().filter(|c| !c.eq_ignore_ascii_case("ffffffff")) {
            return Some(format!("{what} with a parent (parentCID={})", shown(cid.as_bytes())));
        }
        match self.extents.len() {
            0 => return Some(format!("{what} with no extent")),
            1 => {}
            n => {
                let lines: Vec<String> = self.extents.iter().map(|e| shown(e.line.as_bytes())).collect();
                return Some(format!("{what} with {n} extents ({})", lines.join("; ")));
            }
        }
        let e = &self.extents[0];
        let naming = |e: &Extent| e.name.as_deref().map(|n| format!(" naming {}", shown(n))).unwrap_or_default();
        if e.kind != "SPARSE" {
            return Some(format!("{what} with a{} {} extent{}", article(&e.kind), shown(e.kind.as_bytes()), naming(e)));
        }
        if let Some(name) = &e.name {
            if name.is_empty()
                || name.contains(&b'/')
                || name.contains(&b'\\')
                || name == b".."
                || name == b"."
                || name.iter().any(|b| b.is_ascii_control())
                || name.len() > 255
            {
                return Some(format!("{what} whose extent names another file ({})", shown(name)));
            }
        } else {
            return Some(format!("{what} with an extent that names no file ({})", shown(e.line.as_bytes())));
        }
        if !e.rest.is_empty() {
            return Some(format!("{what} with an extent with more after its name ({})", shown(e.line.as_bytes())));
        }
        if e.access != "RW" && e.access != "RDONLY" {
            return Some(format!("{what} with a {} extent", shown(e.access.as_bytes())));
        }
        match self.create_types.as_slice() {
            [] => Some(format!("{what} whose descriptor has no createType")),
            [t] if t == "streamOptimized" || t == "monolithicSparse" => {
                if let Some(line) = &self.bad_line {
                    return Some(format!(
                        "{what} with a descriptor line that is not VMDK ({})",
                        shown(line.as_bytes())
                    ));
                }
                None
            }
            [t] => Some(format!("{what} of type {}", shown(t.as_bytes()))),
            _ => Some(format!("{what} with {} createType lines", self.create_types.len())),
        }
    }
}

fn article(word: &str) -> &'static str {
    match word.bytes().next().map(|b| b.to_ascii_uppercase()) {
        Some(b'A' | b'E' | b'I' | b'O' | b'U') => "n",
        _ => "",
    }
}

/// Checks a sparse extent: `head` is its header sector and its descriptor's sectors, `len` the file's size.
/// What the descriptor names comes first (it tells most about a crafted file), then the header's bounds.
pub(super) fn check_extent(hdr: &Header, head: &[u8], len: u64) -> Result<Kind> {
    let kind = hdr.kind();
    let bytes = &head[512..];
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let text = &bytes[..end];
    let d = parse_descriptor(text);
    if let Some(found) = d.refusal("a VMDK") {
        return Err(refused(found));
    }
    hdr.check(head, len)?;
    // what follows the first NUL is not the descriptor for qemu or VMware (C strings); qemu itself leaves the
    // tail of the old text there when it rewrites the CID shorter. Only lines a parser that did not stop at
    // the NUL would act on are refused.
    let rest: Vec<u8> = bytes[end..].iter().map(|&b| if b == 0 { b'\n' } else { b }).collect();
    let hidden = parse_descriptor(&rest);
    if !hidden.extents.is_empty()
        || !hidden.create_types.is_empty()
        || hidden.parent_cid.is_some()
        || hidden.parent_hint.is_some()
    {
        let line = hidden.extents.first().map(|e| e.line.clone()).unwrap_or_default();
        return Err(refused(format!(
            "a VMDK with descriptor lines after a NUL byte, where some readers would still see them ({})",
            shown(line.as_bytes())
        )));
    }
    let e = &d.extents[0];
    if e.sectors != Some(hdr.capacity) {
        return Err(DiskImageError::vmdk(
            kind,
            format!("its extent is {:?} sectors, its header says {}", e.sectors, hdr.capacity),
        ));
    }
    let said = d.create_types[0].as_str();
    if said != kind.as_str() {
        return Err(DiskImageError::vmdk(
            kind,
            format!("its descriptor says {said} but its header is that of a {}", kind.as_str()),
        ));
    }
    Ok(kind)
}

/// Describes a file that is not a sparse extent (`head`: its first bytes, up to 64 KiB).
pub(super) fn describe_other(head: &[u8]) -> DiskImageError {
    if head.starts_with(b"COWD") {
        return refused("a VMDK COWD (ESX 2 sparse) extent");
    }
    let text = &head[..head.iter().position(|&b| b == 0).unwrap_or(head.len())];
    let d = parse_descriptor(text);
    let looks_like_text = !d.extents.is_empty() || !d.create_types.is_empty() || head.starts_with(b"# Disk Descriptor");
    if looks_like_text {
        let found = d.refusal("a VMDK text descriptor").unwrap_or_else(|| {
            let name = d.extents[0].name.as_deref().map(shown).unwrap_or_default();
            format!("a VMDK text descriptor (its data would be read from the file it names, {name})")
        });
        return refused(found);
    }
    let shown_head: String = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
    DiskImageError::VmdkInvalid {
        kind: "sparse",
        reason: format!("it does not start with a sparse extent header (KDMV) but with bytes {shown_head}"),
    }
}
