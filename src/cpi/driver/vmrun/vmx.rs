//! A `.vmx` file as an ordered list of lines: every key we do not touch stays, in its place, with its value
//! byte for byte; comments and blank lines stay too. (bosh-vmrun-cpi rewrote the file through a Go struct
//! and so dropped keys it did not model, `firmware = "efi"` among them.)
//!
//! Syntax: `key = "value"` per line; keys are case-insensitive for VMware, so lookups are too. Values use
//! VMware's `|XX` hex escape for bytes that cannot appear between quotes (`"` is `|22`, `|` is `|7C`).

#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    Entry { key: String, value: String },
    Raw(String),
}

/// An editable `.vmx`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Vmx {
    lines: Vec<Line>,
}

fn decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'|'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            let hex = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
            out.push(hex(bytes[i + 1]) * 16 + hex(bytes[i + 2]));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '"' | '|' => out.push_str(&format!("|{:02X}", c as u32)),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("|{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

impl Vmx {
    /// Reads a `.vmx`. Lines that are not `key = value` are kept verbatim.
    pub fn parse(text: &str) -> Vmx {
        let mut lines = Vec::new();
        // split on LF only: a raw line keeps any CR it has, so parse/render round-trips exactly
        // (str::lines would eat one CR per round; found by fuzzing)
        let mut raws: Vec<&str> = text.split('\n').collect();
        if raws.last() == Some(&"") {
            raws.pop();
        }
        for raw in raws {
            let t = raw.trim();
            if t.is_empty() || t.starts_with('#') {
                lines.push(Line::Raw(raw.to_string()));
                continue;
            }
            match t.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    let v = v.trim();
                    let v = v.strip_prefix('"').and_then(|x| x.strip_suffix('"')).unwrap_or(v);
                    lines.push(Line::Entry { key: k.trim().to_string(), value: decode(v) });
                }
                _ => lines.push(Line::Raw(raw.to_string())),
            }
        }
        Vmx { lines }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.lines.iter().find_map(|l| match l {
            Line::Entry { key: k, value } if k.eq_ignore_ascii_case(key) => Some(value.as_str()),
            _ => None,
        })
    }

    /// Sets a key: in place when it exists, appended otherwise.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        for l in &mut self.lines {
            if let Line::Entry { key: k, value: v } = l {
                if k.eq_ignore_ascii_case(key) {
                    *v = value;
                    return;
                }
            }
        }
        self.lines.push(Line::Entry { key: key.to_string(), value });
    }

    pub fn remove(&mut self, key: &str) -> bool {
        let before = self.lines.len();
        self.lines.retain(|l| !matches!(l, Line::Entry { key: k, .. } if k.eq_ignore_ascii_case(key)));
        before != self.lines.len()
    }

    /// Removes every key starting with `prefix` (case-insensitive); returns how many.
    pub fn remove_prefix(&mut self, prefix: &str) -> usize {
        let p = prefix.to_ascii_lowercase();
        let before = self.lines.len();
        self.lines.retain(|l| !matches!(l, Line::Entry { key: k, .. } if k.to_ascii_lowercase().starts_with(&p)));
        before - self.lines.len()
    }

    /// Every (key, value) in file order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.lines.iter().filter_map(|l| match l {
            Line::Entry { key, value } => Some((key.as_str(), value.as_str())),
            Line::Raw(_) => None,
        })
    }

    /// Whether `key` is set to TRUE (VMware booleans are case-insensitive "TRUE"/"FALSE").
    pub fn is_true(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// The file text, one `key = "value"` per line, ending in a newline.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for l in &self.lines {
            match l {
                Line::Entry { key, value } => {
                    s.push_str(key);
                    s.push_str(" = \"");
                    s.push_str(&encode(value));
                    s.push_str("\"\n");
                }
                Line::Raw(r) => {
                    s.push_str(r);
                    s.push('\n');
                }
            }
        }
        s
    }

    /// The first optical drive's device (`sata0:0`, `ide1:0`, …) in file order.
    pub fn cdrom_device(&self) -> Option<String> {
        self.entries().find_map(|(k, v)| {
            let dev = k.strip_suffix(".deviceType").or_else(|| k.strip_suffix(".devicetype"))?;
            let is_cd = v.to_ascii_lowercase().contains("cdrom");
            let is_bus = ["ide", "sata", "scsi", "nvme"].iter().any(|b| dev.to_ascii_lowercase().starts_with(b));
            (is_cd && is_bus && dev.contains(':')).then(|| dev.to_string())
        })
    }

    /// SCSI disks on controller `ctl`: (unit, fileName) for each present `scsiN:U.fileName`.
    pub fn scsi_disks(&self, ctl: u32) -> Vec<(u32, String)> {
        let prefix = format!("scsi{ctl}:");
        let mut out: Vec<(u32, String)> = self
            .entries()
            .filter_map(|(k, v)| {
                let rest = k.to_ascii_lowercase();
                let rest = rest.strip_prefix(&prefix)?.strip_suffix(".filename")?.to_string();
                let unit: u32 = rest.parse().ok()?;
                let dev = format!("{prefix}{unit}");
                let is_cd =
                    self.get(&format!("{dev}.deviceType")).is_some_and(|t| t.to_ascii_lowercase().contains("cdrom"));
                let present = self.get(&format!("{dev}.present")).is_none_or(|p| p.eq_ignore_ascii_case("true"));
                (present && !is_cd).then(|| (unit, v.to_string()))
            })
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carriage_returns_survive_round_trips() {
        for text in ["\r\r\r\n", ".\r", "a = \"b\"\r\n# c\r\n"] {
            let once = Vmx::parse(text).render();
            assert_eq!(Vmx::parse(&once).render(), once, "{text:?}");
        }
    }

    const STEMCELL: &str = r#".encoding = "UTF-8"
config.version = "8"
virtualHW.version = "13"
firmware = "efi"
# a comment ovftool does not write, kept anyway
nvram = "sc.nvram"
scsi0.present = "TRUE"
scsi0.virtualDev = "lsilogic"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "sc-disk1.vmdk"
sata0.present = "TRUE"
sata0:0.present = "TRUE"
sata0:0.deviceType = "cdrom-raw"
sata0:0.startConnected = "FALSE"
guestinfo.note = "a |22quoted|22 |7C pipe"
"#;

    #[test]
    fn round_trip_is_byte_exact_and_keeps_unknown_keys() {
        let v = Vmx::parse(STEMCELL);
        assert_eq!(v.render(), STEMCELL);
        assert_eq!(v.get("FIRMWARE"), Some("efi"));
        assert_eq!(v.get("guestinfo.note"), Some("a \"quoted\" | pipe"));
    }

    #[test]
    fn edits_keep_order() {
        let mut v = Vmx::parse(STEMCELL);
        v.set("numvcpus", "2");
        v.set("scsi0:0.fileName", "vm-cl1.vmdk");
        v.set("displayName", "say \"hi\"\n");
        assert!(v.remove("nvram"));
        assert_eq!(v.remove_prefix("sata0:0."), 3);
        let text = v.render();
        assert!(text.contains("firmware = \"efi\"\n# a comment"));
        assert!(text.contains("scsi0:0.fileName = \"vm-cl1.vmdk\"\nsata0.present"));
        assert!(text.ends_with("numvcpus = \"2\"\ndisplayName = \"say |22hi|22|0A\"\n"), "{text}");
        assert_eq!(Vmx::parse(&text).get("displayname"), Some("say \"hi\"\n"));
    }

    #[test]
    fn devices() {
        let mut v = Vmx::parse(STEMCELL);
        assert_eq!(v.cdrom_device().as_deref(), Some("sata0:0"));
        v.set("scsi0:2.present", "TRUE");
        v.set("scsi0:2.fileName", "/store/disks/disk-1.vmdk");
        v.set("scsi0:3.present", "FALSE");
        v.set("scsi0:3.fileName", "old.vmdk");
        assert_eq!(
            v.scsi_disks(0),
            vec![(0, "sc-disk1.vmdk".to_string()), (2, "/store/disks/disk-1.vmdk".to_string())]
        );
        assert_eq!(Vmx::parse("ide1:0.deviceType = \"atapi-cdrom\"\n").cdrom_device().as_deref(), Some("ide1:0"));
        assert_eq!(Vmx::parse("garbage line\n=x\n").render(), "garbage line\n=x\n");
    }
}
