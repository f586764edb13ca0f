//! Domain, device, volume and pool XML, written with quick-xml (never by string concatenation), and the
//! domain and volume XML libvirt returns, read back.
use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;

/// Namespace of the element where the driver keeps what it must know about a VM.
pub const VM_NS: &str = "https://github.com/vmcpi/vmcpi/xmlns/vm/1";
/// Namespace of the element holding set_vm_metadata's tags.
pub const TAGS_NS: &str = "https://github.com/vmcpi/vmcpi/xmlns/tags/1";

/// One disk on the virtio-scsi controller, at SCSI target `target` (unit 0).
#[derive(Debug, Clone, PartialEq)]
pub struct ScsiDisk {
    pub pool: String,
    pub volume: String,
    pub format: String,
    pub target: u32,
    pub serial: Option<String>,
}

impl ScsiDisk {
    /// `sda`, `sdb`, … `sdz`, `sdaa` …: only a name; the `<address>` places the disk.
    pub fn dev(&self) -> String {
        dev_name(self.target)
    }
}

pub fn dev_name(index: u32) -> String {
    let mut n = index as i64;
    let mut s = Vec::new();
    loop {
        s.push(b'a' + (n % 26) as u8);
        n = n / 26 - 1;
        if n < 0 {
            break;
        }
    }
    s.reverse();
    format!("sd{}", String::from_utf8_lossy(&s))
}

#[derive(Debug, Clone, PartialEq)]
pub enum NicSource {
    Network(String),
    Bridge(String),
    User,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Nic {
    pub mac: String,
    pub source: NicSource,
    /// Host port forwards of a user-mode NIC (see `portfwd`); the NIC then gets the alias that names its
    /// QEMU netdev.
    pub forwards: Vec<super::portfwd::PortForward>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DirectBoot {
    pub kernel: String,
    pub initrd: Option<String>,
    pub cmdline: Option<String>,
}

/// Everything create_vm puts into a domain.
#[derive(Debug, Clone)]
pub struct DomainSpec {
    pub name: String,
    pub domain_type: String,
    pub machine: String,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub efi: bool,
    pub direct_boot: Option<DirectBoot>,
    pub disks: Vec<ScsiDisk>,
    /// Settings medium: pool + volume of the ISO, on the first SATA CD-ROM.
    pub cdrom: Option<(String, String)>,
    pub nics: Vec<Nic>,
    pub serial_log: Option<String>,
    pub graphics: bool,
    /// User-mode NICs with forwards use libvirt's passt backend and declarative `<portForward>` (when the
    /// host's libvirt has it) instead of forwards added to the running QEMU (kept in the metadata).
    pub passt: bool,
    /// Text kept in our own metadata element: stemcell CID and family.
    pub stemcell: String,
    pub family: String,
}

type W = Writer<Vec<u8>>;

fn start(w: &mut W, name: &str, attrs: &[(&str, &str)]) -> std::io::Result<()> {
    let mut e = BytesStart::new(name);
    for (k, v) in attrs {
        e.push_attribute((*k, *v));
    }
    w.write_event(Event::Start(e))
}
fn end(w: &mut W, name: &str) -> std::io::Result<()> {
    w.write_event(Event::End(BytesEnd::new(name)))
}
fn empty(w: &mut W, name: &str, attrs: &[(&str, &str)]) -> std::io::Result<()> {
    let mut e = BytesStart::new(name);
    for (k, v) in attrs {
        e.push_attribute((*k, *v));
    }
    w.write_event(Event::Empty(e))
}
fn text_el(w: &mut W, name: &str, attrs: &[(&str, &str)], text: &str) -> std::io::Result<()> {
    start(w, name, attrs)?;
    w.write_event(Event::Text(BytesText::new(text)))?;
    end(w, name)
}

fn finish(w: W) -> String {
    String::from_utf8(w.into_inner()).unwrap_or_default()
}

/// The full domain definition (`DOMAIN_DEFINE_XML_FLAGS`).
pub fn domain_xml(s: &DomainSpec) -> String {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    // writing into a Vec cannot fail
    let _ = write_domain(&mut w, s);
    finish(w)
}

fn write_domain(w: &mut W, s: &DomainSpec) -> std::io::Result<()> {
    start(w, "domain", &[("type", s.domain_type.as_str())])?;
    text_el(w, "name", &[], &s.name)?;
    start(w, "metadata", &[])?;
    start(w, "vmcpi:vm", &[("xmlns:vmcpi", VM_NS)])?;
    text_el(w, "vmcpi:stemcell", &[], &s.stemcell)?;
    text_el(w, "vmcpi:family", &[], &s.family)?;
    for (i, n) in s.nics.iter().enumerate().filter(|_| !s.passt) {
        for f in &n.forwards {
            text_el(w, "vmcpi:forward", &[("nic", super::portfwd::alias(i).as_str())], &f.kept())?;
        }
    }
    end(w, "vmcpi:vm")?;
    end(w, "metadata")?;
    text_el(w, "memory", &[("unit", "MiB")], &s.memory_mib.to_string())?;
    text_el(w, "vcpu", &[], &s.vcpus.to_string())?;
    write_os(w, s)?;
    start(w, "features", &[])?;
    empty(w, "acpi", &[])?;
    empty(w, "apic", &[])?;
    end(w, "features")?;
    empty(w, "clock", &[("offset", "utc")])?;
    text_el(w, "on_poweroff", &[], "destroy")?;
    text_el(w, "on_reboot", &[], "restart")?;
    text_el(w, "on_crash", &[], "restart")?;
    start(w, "devices", &[])?;
    empty(w, "controller", &[("type", "scsi"), ("index", "0"), ("model", "virtio-scsi")])?;
    for d in &s.disks {
        write_disk(w, d)?;
    }
    if let Some((pool, vol)) = &s.cdrom {
        start(w, "disk", &[("type", "volume"), ("device", "cdrom")])?;
        empty(w, "driver", &[("name", "qemu"), ("type", "raw")])?;
        empty(w, "source", &[("pool", pool.as_str()), ("volume", vol.as_str())])?;
        empty(w, "target", &[("dev", "sdzz"), ("bus", "sata")])?;
        empty(w, "readonly", &[])?;
        empty(w, "address", &[("type", "drive"), ("controller", "0"), ("bus", "0"), ("target", "0"), ("unit", "0")])?;
        end(w, "disk")?;
    }
    write_nics(w, s)?;
    write_consoles(w, s)?;
    start(w, "rng", &[("model", "virtio")])?;
    text_el(w, "backend", &[("model", "random")], "/dev/urandom")?;
    end(w, "rng")?;
    end(w, "devices")?;
    end(w, "domain")
}

fn write_os(w: &mut W, s: &DomainSpec) -> std::io::Result<()> {
    if s.efi {
        start(w, "os", &[("firmware", "efi")])?;
    } else {
        start(w, "os", &[])?;
    }
    text_el(w, "type", &[("arch", "x86_64"), ("machine", s.machine.as_str())], "hvm")?;
    if let Some(b) = &s.direct_boot {
        text_el(w, "kernel", &[], &b.kernel)?;
        if let Some(i) = &b.initrd {
            text_el(w, "initrd", &[], i)?;
        }
        if let Some(c) = &b.cmdline {
            text_el(w, "cmdline", &[], c)?;
        }
    } else {
        empty(w, "boot", &[("dev", "hd")])?;
    }
    end(w, "os")?;
    Ok(())
}

fn write_nics(w: &mut W, s: &DomainSpec) -> std::io::Result<()> {
    for (i, n) in s.nics.iter().enumerate() {
        let (kind, src): (&str, Option<(&str, &str)>) = match &n.source {
            NicSource::Network(name) => ("network", Some(("network", name.as_str()))),
            NicSource::Bridge(name) => ("bridge", Some(("bridge", name.as_str()))),
            NicSource::User => ("user", None),
        };
        start(w, "interface", &[("type", kind)])?;
        if let Some(a) = src {
            empty(w, "source", &[a])?;
        }
        empty(w, "mac", &[("address", n.mac.as_str())])?;
        empty(w, "model", &[("type", "virtio")])?;
        if !n.forwards.is_empty() && s.passt {
            empty(w, "backend", &[("type", "passt")])?;
            for f in &n.forwards {
                let (addr, host, guest) = (f.host.ip().to_string(), f.host.port().to_string(), f.guest.to_string());
                start(w, "portForward", &[("proto", "tcp"), ("address", addr.as_str())])?;
                empty(w, "range", &[("start", host.as_str()), ("to", guest.as_str())])?;
                end(w, "portForward")?;
            }
        } else if !n.forwards.is_empty() {
            empty(w, "alias", &[("name", super::portfwd::alias(i).as_str())])?;
        }
        end(w, "interface")?;
    }
    Ok(())
}

/// The serial console (a log file or a pty), the guest agent's channel and the optional VNC display.
fn write_consoles(w: &mut W, s: &DomainSpec) -> std::io::Result<()> {
    match &s.serial_log {
        Some(path) => {
            start(w, "serial", &[("type", "file")])?;
            empty(w, "source", &[("path", path.as_str())])?;
            empty(w, "target", &[("port", "0")])?;
            end(w, "serial")?;
        }
        None => {
            start(w, "serial", &[("type", "pty")])?;
            empty(w, "target", &[("port", "0")])?;
            end(w, "serial")?;
        }
    }
    start(w, "channel", &[("type", "unix")])?;
    empty(w, "target", &[("type", "virtio"), ("name", "org.qemu.guest_agent.0")])?;
    end(w, "channel")?;
    if s.graphics {
        empty(w, "graphics", &[("type", "vnc"), ("autoport", "yes"), ("listen", "127.0.0.1")])?;
    }
    Ok(())
}

fn write_disk(w: &mut W, d: &ScsiDisk) -> std::io::Result<()> {
    start(w, "disk", &[("type", "volume"), ("device", "disk")])?;
    empty(w, "driver", &[("name", "qemu"), ("type", d.format.as_str()), ("discard", "unmap")])?;
    empty(w, "source", &[("pool", d.pool.as_str()), ("volume", d.volume.as_str())])?;
    empty(w, "target", &[("dev", d.dev().as_str()), ("bus", "scsi")])?;
    if let Some(s) = &d.serial {
        text_el(w, "serial", &[], s)?;
    }
    let t = d.target.to_string();
    empty(
        w,
        "address",
        &[("type", "drive"), ("controller", "0"), ("bus", "0"), ("target", t.as_str()), ("unit", "0")],
    )?;
    end(w, "disk")
}

/// One disk device, for attaching and detaching.
pub fn disk_xml(d: &ScsiDisk) -> String {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    let _ = write_disk(&mut w, d);
    finish(w)
}

/// The settings medium's CD-ROM: with its volume (insert) or empty (eject), at target `dev` on SATA, at
/// the `address` it has (libvirt refuses an update that would move it).
pub fn cdrom_xml(medium: Option<(&str, &str)>, dev: &str, address: &[(String, String)]) -> String {
    let mut w = Writer::new(Vec::new());
    let _ = (|| -> std::io::Result<()> {
        let kind = if medium.is_some() { "volume" } else { "file" };
        start(&mut w, "disk", &[("type", kind), ("device", "cdrom")])?;
        empty(&mut w, "driver", &[("name", "qemu"), ("type", "raw")])?;
        if let Some((pool, vol)) = medium {
            empty(&mut w, "source", &[("pool", pool), ("volume", vol)])?;
        }
        empty(&mut w, "target", &[("dev", dev), ("bus", "sata")])?;
        empty(&mut w, "readonly", &[])?;
        if !address.is_empty() {
            let attrs: Vec<(&str, &str)> = address.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            empty(&mut w, "address", &attrs)?;
        }
        end(&mut w, "disk")
    })();
    finish(w)
}

/// The target of a block copy: the file at `path` in `format`.
pub fn copy_target_xml(path: &str, format: &str) -> String {
    let mut w = Writer::new(Vec::new());
    let _ = (|| -> std::io::Result<()> {
        start(&mut w, "disk", &[("type", "file")])?;
        empty(&mut w, "source", &[("file", path)])?;
        empty(&mut w, "driver", &[("type", format)])?;
        end(&mut w, "disk")
    })();
    finish(w)
}

/// A new volume of `bytes` in `format`; `backing` (path, format) makes it an overlay on another volume.
/// `sparse`: nothing allocated up front (libvirt otherwise allocates a raw volume's whole capacity).
pub fn volume_xml(name: &str, bytes: u64, format: &str, backing: Option<(&str, &str)>, sparse: bool) -> String {
    let mut w = Writer::new(Vec::new());
    let cap = bytes.to_string();
    let _ = (|| -> std::io::Result<()> {
        start(&mut w, "volume", &[])?;
        text_el(&mut w, "name", &[], name)?;
        text_el(&mut w, "capacity", &[("unit", "bytes")], &cap)?;
        if sparse {
            text_el(&mut w, "allocation", &[("unit", "bytes")], "0")?;
        }
        start(&mut w, "target", &[])?;
        empty(&mut w, "format", &[("type", format)])?;
        end(&mut w, "target")?;
        if let Some((path, fmt)) = backing {
            start(&mut w, "backingStore", &[])?;
            text_el(&mut w, "path", &[], path)?;
            empty(&mut w, "format", &[("type", fmt)])?;
            end(&mut w, "backingStore")?;
        }
        end(&mut w, "volume")
    })();
    finish(w)
}

/// A directory storage pool at `path`.
pub fn pool_xml(name: &str, path: &str) -> String {
    let mut w = Writer::new(Vec::new());
    let _ = (|| -> std::io::Result<()> {
        start(&mut w, "pool", &[("type", "dir")])?;
        text_el(&mut w, "name", &[], name)?;
        start(&mut w, "target", &[])?;
        text_el(&mut w, "path", &[], path)?;
        end(&mut w, "target")?;
        end(&mut w, "pool")
    })();
    finish(w)
}

/// `<tags><tag name="k">v</tag>…</tags>`, the metadata element of set_vm_metadata.
pub fn tags_xml(tags: &std::collections::BTreeMap<String, String>) -> String {
    let mut w = Writer::new(Vec::new());
    let _ = (|| -> std::io::Result<()> {
        start(&mut w, "tags", &[])?;
        for (k, v) in tags {
            text_el(&mut w, "tag", &[("name", k.as_str())], v)?;
        }
        end(&mut w, "tags")
    })();
    finish(w)
}

/// What the driver reads back from a domain's XML.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct DomainInfo {
    pub running: bool,
    pub family: Option<String>,
    pub disks: Vec<AttachedDisk>,
    /// Port forwards kept in the vmcpi metadata: (NIC alias, forward).
    pub forwards: Vec<(String, super::portfwd::PortForward)>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct AttachedDisk {
    pub device: String,
    pub pool: Option<String>,
    pub volume: Option<String>,
    pub file: Option<String>,
    pub dev: Option<String>,
    pub bus: Option<String>,
    pub format: Option<String>,
    pub target: Option<u32>,
    pub serial: Option<String>,
    /// The attributes of its `<address>` (a device update must repeat them).
    pub address: Vec<(String, String)>,
}

fn xml_attr(e: &BytesStart, k: &[u8]) -> Option<String> {
    e.attributes().flatten().find(|a| a.key.as_ref() == k).and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

impl AttachedDisk {
    /// What an element inside this `<disk>` says about it.
    fn read_element(&mut self, name: &str, e: &BytesStart) {
        let attr = xml_attr;
        match name {
            "source" => {
                self.pool = attr(e, b"pool").or(self.pool.take());
                self.volume = attr(e, b"volume").or(self.volume.take());
                self.file = attr(e, b"file").or(self.file.take());
            }
            "target" => {
                self.dev = attr(e, b"dev");
                self.bus = attr(e, b"bus");
            }
            "driver" => self.format = attr(e, b"type"),
            "address" => {
                self.target = attr(e, b"target").and_then(|t| t.parse().ok());
                self.address = e
                    .attributes()
                    .flatten()
                    .filter_map(|a| {
                        let k = String::from_utf8_lossy(a.key.as_ref()).into_owned();
                        Some((k, a.unescape_value().ok()?.into_owned()))
                    })
                    .collect();
            }
            _ => {}
        }
    }
}

/// Parses the parts of a domain definition the driver needs.
pub fn parse_domain(xml: &str) -> Result<DomainInfo, String> {
    let mut r = quick_xml::Reader::from_str(xml);
    let mut info = DomainInfo::default();
    let mut path: Vec<String> = Vec::new();
    let mut cur: Option<AttachedDisk> = None;
    let mut fwd_nic: Option<String> = None;
    let attr = xml_attr;
    loop {
        let ev = r.read_event().map_err(|e| format!("domain XML: {e}"))?;
        match ev {
            Event::Eof => break,
            Event::Start(ref e) | Event::Empty(ref e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                let is_empty = matches!(ev, Event::Empty(_));
                match name.as_str() {
                    "domain" if path.is_empty() => info.running = attr(e, b"id").is_some_and(|id| id != "-1"),
                    "disk" if path.last().map(String::as_str) == Some("devices") => {
                        cur =
                            Some(AttachedDisk { device: attr(e, b"device").unwrap_or_default(), ..Default::default() })
                    }
                    "forward" if path.iter().any(|p| p == "metadata") => fwd_nic = attr(e, b"nic"),
                    other => {
                        if let Some(d) = cur.as_mut() {
                            d.read_element(other, e);
                        }
                    }
                }
                if !is_empty {
                    path.push(name);
                }
            }
            Event::Text(t) => {
                let text = t.unescape().map_err(|e| format!("domain XML: {e}"))?.into_owned();
                match path.last().map(String::as_str) {
                    Some("family") if path.iter().any(|p| p == "metadata") => info.family = Some(text),
                    Some("forward") if path.iter().any(|p| p == "metadata") => {
                        if let (Some(nic), Some(f)) = (fwd_nic.take(), super::portfwd::PortForward::parse_kept(&text)) {
                            info.forwards.push((nic, f));
                        }
                    }
                    Some("serial") => {
                        if let Some(d) = cur.as_mut() {
                            d.serial = Some(text)
                        }
                    }
                    _ => {}
                }
            }
            Event::End(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                path.pop();
                if name == "disk" {
                    if let Some(d) = cur.take() {
                        info.disks.push(d);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

/// Reads `<capacity>` and `<format type=…>` from a volume's XML.
pub fn parse_volume(xml: &str) -> Result<(u64, String), String> {
    let mut r = quick_xml::Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    let (mut cap, mut fmt) = (None, None);
    loop {
        match r.read_event().map_err(|e| format!("volume XML: {e}"))? {
            Event::Eof => break,
            Event::Start(e) => path.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned()),
            Event::Empty(e) if e.local_name().as_ref() == b"format" && path == ["volume", "target"] => {
                fmt = e
                    .attributes()
                    .flatten()
                    .find(|a| a.key.as_ref() == b"type")
                    .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()));
            }
            Event::Text(t) if path == ["volume", "capacity"] => {
                cap = t.unescape().ok().and_then(|v| v.trim().parse().ok());
            }
            Event::End(_) => {
                path.pop();
            }
            _ => {}
        }
    }
    Ok((cap.ok_or("volume XML has no capacity")?, fmt.unwrap_or_else(|| "raw".into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DomainSpec {
        DomainSpec {
            name: "vm-1".into(),
            domain_type: "qemu".into(),
            machine: "q35".into(),
            memory_mib: 512,
            vcpus: 2,
            efi: false,
            direct_boot: None,
            disks: vec![ScsiDisk {
                pool: "p".into(),
                volume: "vm-1-root".into(),
                format: "qcow2".into(),
                target: 0,
                serial: None,
            }],
            cdrom: Some(("p".into(), "vm-1-settings.iso".into())),
            nics: vec![Nic {
                mac: "52:54:00:00:00:01".into(),
                source: NicSource::Network("a&b<c>".into()),
                forwards: vec![],
            }],
            serial_log: None,
            graphics: false,
            passt: false,
            stemcell: "sc-1".into(),
            family: "openstack".into(),
        }
    }

    #[test]
    fn user_nic_forwards_by_hostfwd_or_by_passt() {
        use crate::cpi::driver::libvirt::portfwd::PortForward;
        let mut s = spec();
        let fwd = PortForward { host: "127.0.0.1:26868".parse().unwrap(), guest: 6868 };
        s.nics = vec![Nic { mac: "52:54:00:00:00:02".into(), source: NicSource::User, forwards: vec![fwd.clone()] }];
        // without passt: an alias names QEMU's netdev; the forward is kept in the metadata and read back
        let xml = domain_xml(&s);
        assert!(xml.contains(r#"<alias name="ua-vmcpi-user0"/>"#), "{xml}");
        assert!(!xml.contains("passt") && !xml.contains("portForward"), "{xml}");
        let info = parse_domain(&xml).unwrap();
        assert_eq!(info.forwards, vec![("ua-vmcpi-user0".to_string(), fwd.clone())]);
        // with passt: libvirt's declarative form, nothing to add at run time
        s.passt = true;
        let xml = domain_xml(&s);
        assert!(xml.contains(r#"<backend type="passt"/>"#), "{xml}");
        assert!(
            xml.contains(r#"<portForward proto="tcp" address="127.0.0.1">"#)
                && xml.contains(r#"<range start="26868" to="6868"/>"#),
            "{xml}"
        );
        assert!(parse_domain(&xml).unwrap().forwards.is_empty(), "{xml}");
    }

    #[test]
    fn golden_domain_xml() {
        let xml = domain_xml(&spec());
        let golden = include_str!("../../../../tests/fixtures/libvirt/domain.xml");
        assert_eq!(xml.trim(), golden.trim(), "domain XML changed:\n{xml}");
    }

    #[test]
    fn escapes_and_reads_back() {
        let xml = domain_xml(&spec());
        assert!(xml.contains("a&amp;b&lt;c&gt;"));
        let info = parse_domain(&xml).unwrap();
        assert_eq!(info.family.as_deref(), Some("openstack"));
        assert_eq!(info.disks.len(), 2);
        assert_eq!(info.disks[0].volume.as_deref(), Some("vm-1-root"));
        assert_eq!(info.disks[0].target, Some(0));
        assert_eq!(info.disks[1].device, "cdrom");
        assert!(!info.running);
        let running = xml.replacen("<domain type=\"qemu\">", "<domain type='qemu' id='7'>", 1);
        assert!(parse_domain(&running).unwrap().running);
    }

    #[test]
    fn dev_names() {
        assert_eq!(dev_name(0), "sda");
        assert_eq!(dev_name(25), "sdz");
        assert_eq!(dev_name(26), "sdaa");
    }

    #[test]
    fn tags_are_escaped() {
        let mut t = std::collections::BTreeMap::new();
        t.insert("k\"".to_string(), "<v&>".to_string());
        assert_eq!(tags_xml(&t), "<tags><tag name=\"k&quot;\">&lt;v&amp;&gt;</tag></tags>");
    }

    #[test]
    fn volume_pool_and_cdrom_xml_are_escaped() {
        assert_eq!(
            volume_xml("v<1>", 1024, "qcow2", Some(("/p/a&b", "raw")), false),
            "<volume><name>v&lt;1&gt;</name><capacity unit=\"bytes\">1024</capacity><target><format type=\"qcow2\"/></target><backingStore><path>/p/a&amp;b</path><format type=\"raw\"/></backingStore></volume>"
        );
        assert!(volume_xml("m", 8, "raw", None, true).contains("<allocation unit=\"bytes\">0</allocation>"));
        assert_eq!(
            pool_xml("p'", "/var/tmp/x y"),
            "<pool type=\"dir\"><name>p&apos;</name><target><path>/var/tmp/x y</path></target></pool>"
        );
        let info = parse_domain(&domain_xml(&spec())).unwrap();
        let cd = info.disks.iter().find(|d| d.device == "cdrom").unwrap();
        assert_eq!(
            cdrom_xml(Some(("p", "vm-1-settings.iso")), "sdzz", &cd.address),
            "<disk type=\"volume\" device=\"cdrom\"><driver name=\"qemu\" type=\"raw\"/><source pool=\"p\" volume=\"vm-1-settings.iso\"/><target dev=\"sdzz\" bus=\"sata\"/><readonly/><address type=\"drive\" controller=\"0\" bus=\"0\" target=\"0\" unit=\"0\"/></disk>"
        );
        assert!(!cdrom_xml(None, "sdzz", &[]).contains("source"));
    }

    #[test]
    fn volume_xml_is_read() {
        let x = "<volume type='file'><name>a</name><capacity unit='bytes'>10485760</capacity><target><path>/p/a</path><format type='qcow2'/></target><backingStore><format type='raw'/></backingStore></volume>";
        assert_eq!(parse_volume(x).unwrap(), (10_485_760, "qcow2".to_string()));
    }
}
