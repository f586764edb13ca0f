//! TCP port forwards on QEMU user-mode networks: how `bosh create-env` on a laptop or a CI machine with no
//! bridge reaches the agent's mbus (guest port 6868) through the host's loopback.
//!
//! Network cloud_properties `{"type": "user", "port_forwards": [{"host": "127.0.0.1:26868", "guest": 6868}]}`.
//! `host` is `PORT` or `ADDRESS:PORT` (a bare port binds to 127.0.0.1: nothing is exposed beyond the host unless
//! the operator writes another address). The forwards are kept in the domain's vmcpi metadata and added with
//! QEMU's monitor command `hostfwd_add` each time the domain's QEMU process starts (create_vm, and reboot_vm of a
//! stopped VM); a reset keeps the process and so its forwards. Destroying the domain frees the host ports.
//! Where the host's libvirt reports the passt backend (`virsh domcapabilities`), the NIC uses it with libvirt's
//! declarative `<portForward>` instead, and libvirt keeps the forwards itself. Debian 12's libvirt 9.0 is built
//! without passt, so there QEMU's slirp forward is used; it keeps the guest's addresses (10.0.2.15, the host
//! as 10.0.2.2). Under passt the guest gets the host's own address by DHCP: use a dynamic network there.
use serde::Deserialize;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// One forward: a TCP port on the host to a port of the guest's user-mode NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForward {
    pub host: SocketAddr,
    pub guest: u16,
}

impl fmt::Display for PortForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> guest port {}", self.host, self.guest)
    }
}

impl PortForward {
    /// The rule `hostfwd_add` takes: `tcp:127.0.0.1:26868-:6868` (the guest address is the DHCP one).
    pub fn rule(&self) -> String {
        match self.host.ip() {
            IpAddr::V4(a) => format!("tcp:{a}:{}-:{}", self.host.port(), self.guest),
            IpAddr::V6(a) => format!("tcp:[{a}]:{}-:{}", self.host.port(), self.guest),
        }
    }

    /// The text kept in the domain's metadata, read back by [`PortForward::parse_kept`].
    pub fn kept(&self) -> String {
        format!("{}={}", self.host, self.guest)
    }

    pub fn parse_kept(s: &str) -> Option<PortForward> {
        let (h, g) = s.rsplit_once('=')?;
        Some(PortForward { host: h.parse().ok()?, guest: g.parse().ok()? })
    }
}

/// `port_forwards` as written in cloud_properties.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    host: serde_json::Value,
    guest: serde_json::Value,
    #[serde(default)]
    protocol: Option<String>,
}

fn port(v: &serde_json::Value, what: &str) -> Result<u16, String> {
    let n = match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    match n {
        Some(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(format!("{what} must be a TCP port 1 to 65535, got {v}")),
    }
}

fn host(v: &serde_json::Value) -> Result<SocketAddr, String> {
    if let serde_json::Value::Number(_) = v {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port(v, "host")?));
    }
    let s = v.as_str().ok_or_else(|| format!("host must be \"PORT\" or \"ADDRESS:PORT\", got {v}"))?;
    if let Ok(sa) = s.parse::<SocketAddr>() {
        if sa.port() == 0 {
            return Err(format!("host must name a port 1 to 65535, got {s:?}"));
        }
        return Ok(sa);
    }
    if !s.contains(':') {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port(v, "host")?));
    }
    Err(format!("host must be \"PORT\" or \"ADDRESS:PORT\" with an IP address (e.g. \"127.0.0.1:26868\"), got {s:?}"))
}

/// Reads `port_forwards` (absent or null: none). Refuses duplicates of a host port.
pub fn parse(v: Option<&serde_json::Value>) -> Result<Vec<PortForward>, String> {
    let list = match v {
        None | Some(serde_json::Value::Null) => return Ok(Vec::new()),
        Some(serde_json::Value::Array(a)) => a,
        Some(other) => return Err(format!("port_forwards must be a list of {{host, guest}}, got {other}")),
    };
    let mut out: Vec<PortForward> = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let raw: Raw = serde_json::from_value(item.clone())
            .map_err(|e| format!("port_forwards[{i}]: {}", crate::common::logger::redact(&e.to_string())))?;
        if let Some(p) = raw.protocol.as_deref() {
            if !p.eq_ignore_ascii_case("tcp") {
                return Err(format!("port_forwards[{i}]: protocol must be \"tcp\", got {p:?}"));
            }
        }
        let fwd = PortForward {
            host: host(&raw.host).map_err(|e| format!("port_forwards[{i}]: {e}"))?,
            guest: port(&raw.guest, "guest").map_err(|e| format!("port_forwards[{i}]: {e}"))?,
        };
        if out.iter().any(|f| {
            f.host.port() == fwd.host.port()
                && (f.host.ip() == fwd.host.ip() || f.host.ip().is_unspecified() || fwd.host.ip().is_unspecified())
        }) {
            return Err(format!("port_forwards[{i}]: host {} is forwarded twice", fwd.host));
        }
        out.push(fwd);
    }
    Ok(out)
}

/// On a local hypervisor: whether each host address can be bound now (it is free and ours to take), so a
/// busy port fails create_vm before anything is made. (QEMU's own bind decides; this only fails early.)
pub fn check_free(forwards: &[PortForward]) -> Result<(), String> {
    for f in forwards {
        if let Err(e) = std::net::TcpListener::bind(f.host) {
            return Err(format!("host port {} cannot be forwarded: {e}", f.host));
        }
    }
    Ok(())
}

/// Whether `virsh domcapabilities` lists passt among the interface backends (libvirt reports
/// `<interface><enum name='backendType'><value>passt</value>…` when it was built with passt; Debian 12's 9.0
/// reports no interface backends at all).
pub fn passt_in_domcapabilities(xml: &str) -> bool {
    use quick_xml::events::Event;
    let mut r = quick_xml::Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    let mut in_backend_enum = false;
    loop {
        match r.read_event() {
            Ok(Event::Start(e)) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if name == "enum" && path.last().map(String::as_str) == Some("interface") {
                    in_backend_enum = e
                        .attributes()
                        .flatten()
                        .any(|a| a.key.as_ref() == b"name" && a.value.as_ref() == b"backendType");
                }
                path.push(name);
            }
            Ok(Event::End(_)) => {
                let closed = path.pop();
                in_backend_enum &= closed.as_deref() != Some("enum");
            }
            Ok(Event::Text(t))
                if in_backend_enum
                    && path.last().map(String::as_str) == Some("value")
                    && t.unescape().is_ok_and(|v| v.trim() == "passt") =>
            {
                return true;
            }
            Ok(Event::Eof) | Err(_) => return false,
            _ => {}
        }
    }
}

/// The NIC alias (and so QEMU's netdev id, `host<alias>`) of the `index`th user-mode NIC.
pub fn alias(index: usize) -> String {
    format!("ua-vmcpi-user{index}")
}

pub fn netdev(alias: &str) -> String {
    format!("host{alias}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn forms_and_defaults() {
        let f = parse(Some(&json!([{"host": "127.0.0.1:26868", "guest": 6868}, {"host": 8080, "guest": "80"}, {"host": "2222", "guest": 22, "protocol": "TCP"}, {"host": "[::1]:2223", "guest": 22}]))).unwrap();
        assert_eq!(f[0].rule(), "tcp:127.0.0.1:26868-:6868");
        assert_eq!(f[1].rule(), "tcp:127.0.0.1:8080-:80", "a bare port binds to loopback");
        assert_eq!(f[2].host, "127.0.0.1:2222".parse().unwrap());
        assert_eq!(f[3].rule(), "tcp:[::1]:2223-:22");
        for x in &f {
            assert_eq!(PortForward::parse_kept(&x.kept()).as_ref(), Some(x));
        }
        assert!(parse(None).unwrap().is_empty());
        assert!(parse(Some(&json!(null))).unwrap().is_empty());
    }

    #[test]
    fn bad_values_are_refused_with_their_place() {
        for (v, want) in [
            (json!({"host": 1, "guest": 2}), "must be a list"),
            (json!([{"host": 0, "guest": 22}]), "port_forwards[0]: host must be a TCP port"),
            (json!([{"host": "127.0.0.1:0", "guest": 22}]), "port 1 to 65535"),
            (json!([{"host": 70000, "guest": 22}]), "1 to 65535"),
            (json!([{"host": 2222, "guest": -1}]), "guest must be a TCP port"),
            (json!([{"host": 2222}]), "missing field `guest`"),
            (json!([{"host": 2222, "guest": 22, "extra": 1}]), "unknown field `extra`"),
            (json!([{"host": 2222, "guest": 22, "protocol": "udp"}]), "protocol must be \"tcp\""),
            (json!([{"host": "localhost:2222", "guest": 22}]), "with an IP address"),
            (json!([{"host": "a; rm -rf /", "guest": 22}]), "host must be a TCP port"),
            (
                json!([{"host": 2222, "guest": 22}, {"host": "127.0.0.1:2222", "guest": 23}]),
                "port_forwards[1]: host 127.0.0.1:2222 is forwarded twice",
            ),
            (
                json!([{"host": "0.0.0.0:2222", "guest": 22}, {"host": "127.0.0.1:2222", "guest": 23}]),
                "forwarded twice",
            ),
        ] {
            let e = parse(Some(&v)).unwrap_err();
            assert!(e.contains(want), "{v}: {e}");
        }
    }

    #[test]
    fn passt_is_seen_only_as_an_interface_backend() {
        let with = "<domainCapabilities><devices><interface supported='yes'><enum name='backendType'><value>default</value><value>passt</value></enum></interface></devices></domainCapabilities>";
        assert!(passt_in_domcapabilities(with));
        // libvirt 9.0 (Debian 12): no interface element at all
        let debian12 = "<domainCapabilities><devices><rng supported='yes'><enum name='backendModel'><value>random</value></enum></rng></devices></domainCapabilities>";
        assert!(!passt_in_domcapabilities(debian12));
        let elsewhere = "<domainCapabilities><devices><tpm><enum name='backendModel'><value>passt</value></enum></tpm><interface supported='yes'><enum name='backendType'><value>default</value></enum></interface></devices></domainCapabilities>";
        assert!(!passt_in_domcapabilities(elsewhere));
        assert!(!passt_in_domcapabilities("not xml <<<"));
    }

    #[test]
    fn a_busy_port_is_seen() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = PortForward { host: l.local_addr().unwrap(), guest: 22 };
        let e = check_free(&[busy]).unwrap_err();
        assert!(e.contains("cannot be forwarded"), "{e}");
        drop(l);
    }
}
