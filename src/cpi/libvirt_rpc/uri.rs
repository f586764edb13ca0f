//! libvirt connection URIs (<https://libvirt.org/uri.html>, <https://libvirt.org/remote.html>), read into
//! the one transport the client will use:
//!
//! - `qemu:///system`, `qemu:///session` (also `qemu+unix://…`): the local daemon's unix socket;
//! - `qemu+ssh://[user@]host[:port]/system?keyfile=PATH&known_hosts=PATH` (also `+libssh2`, `+libssh`):
//!   SSH with a pinned host key and key authentication;
//! - `qemu+tls://host[:port]/system?pkipath=DIR` (also `qemu://host/system`, libvirt's default for a
//!   URI with a host): TLS with a client certificate, the server's certificate and name checked.
//!
//! Parameters are libvirt's own names; any other is refused with the list of those accepted, because
//! libvirt's others either name a program or socket the client would have to run or trust (`command`,
//! `netcat`, `socket`, `proxy`), or switch a check off (`no_verify`). `tcp` (no encryption, no
//! authentication) and `ext` (runs a local program) are refused too.
use super::error::{Error, Result};
use std::path::PathBuf;

/// How to reach the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// The daemon on this machine.
    Unix,
    Ssh {
        user: String,
        host: String,
        port: u16,
        keyfile: PathBuf,
        known_hosts: PathBuf,
    },
    Tls {
        host: String,
        port: u16,
        pki: Pki,
    },
}

/// The three files of a TLS client, as libvirt lays them out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pki {
    pub cacert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// `pkipath=DIR`: DIR/cacert.pem, DIR/clientcert.pem, DIR/clientkey.pem.
    pub fn in_dir(dir: PathBuf) -> Pki {
        Pki { cacert: dir.join("cacert.pem"), cert: dir.join("clientcert.pem"), key: dir.join("clientkey.pem") }
    }

    /// Without `pkipath`: libvirt's defaults (root: /etc/pki; others: ~/.pki/libvirt).
    fn default_for_user() -> Pki {
        match std::env::var_os("HOME").filter(|_| !is_root()) {
            Some(home) => Pki::in_dir(PathBuf::from(home).join(".pki/libvirt")),
            None => Pki {
                cacert: "/etc/pki/CA/cacert.pem".into(),
                cert: "/etc/pki/libvirt/clientcert.pem".into(),
                key: "/etc/pki/libvirt/private/clientkey.pem".into(),
            },
        }
    }
}

/// `mode=`, libvirt's choice of daemon socket: libvirtd's (`legacy`), the driver's own daemon's (`direct`,
/// `virtqemud-sock`), or whichever exists (`auto`, libvirtd's first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Auto,
    Legacy,
    Direct,
}

/// A parsed connection URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    /// The hypervisor driver: `qemu`.
    pub driver: String,
    /// `/system` or `/session`.
    pub path: String,
    pub transport: Transport,
    pub mode: Mode,
}

pub const SSH_PORT: u16 = 22;
/// libvirt's TLS port (`LIBVIRTD_TLS_PORT`).
pub const TLS_PORT: u16 = 16514;

const SSH_PARAMS: &str = "keyfile, known_hosts, mode, no_tty";
const TLS_PARAMS: &str = "pkipath, mode, no_tty";

fn is_root() -> bool {
    // SAFETY: getuid has no preconditions and cannot fail
    unsafe { libc::getuid() == 0 }
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from)
}

/// Decodes `%XX` escapes (RFC 3986); anything else stays as it is.
fn percent_decode(s: &str, what: &str, uri: &str) -> Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let v = hex
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Error::Uri { uri: uri.to_string(), reason: format!("{what} has a bad %-escape") })?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Error::Uri { uri: uri.to_string(), reason: format!("{what} is not UTF-8") })
}

impl Uri {
    /// The name sent in `CONNECT_OPEN`: the driver URI as the daemon sees it, without transport, host
    /// or parameters (`qemu:///system`).
    pub fn server_name(&self) -> String {
        format!("{}://{}", self.driver, self.path)
    }

    /// What the client connects to, for messages.
    pub fn target(&self) -> String {
        match &self.transport {
            Transport::Unix => self.server_name(),
            Transport::Ssh { user, host, port, .. } => {
                format!("{}+ssh://{user}@{host}:{port}{}", self.driver, self.path)
            }
            Transport::Tls { host, port, .. } => format!("{}+tls://{host}:{port}{}", self.driver, self.path),
        }
    }

    pub fn parse(uri: &str) -> Result<Uri> {
        let bad = |reason: String| Error::Uri { uri: uri.to_string(), reason };
        let (scheme, rest) =
            uri.split_once("://").ok_or_else(|| bad("expected DRIVER[+TRANSPORT]://[HOST]/PATH".into()))?;
        let (driver, transport) = match scheme.split_once('+') {
            Some((d, t)) => (d, Some(t)),
            None => (scheme, None),
        };
        if driver.is_empty() || !driver.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) {
            return Err(bad(format!("{driver:?} is not a libvirt driver name")));
        }
        if driver == "test" {
            return Err(bad(
                "the test driver lives inside the client library, not in a daemon; use a daemon's URI".into()
            ));
        }
        let (before_query, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        if before_query.contains('#') || query.is_some_and(|q| q.contains('#')) {
            return Err(bad("a fragment (#…) has no meaning here".into()));
        }
        let (authority, path) = match before_query.find('/') {
            Some(i) => (&before_query[..i], &before_query[i..]),
            None => (before_query, ""),
        };
        let path = percent_decode(path, "the path", uri)?;
        if path != "/system" && path != "/session" {
            return Err(bad(format!("the path must be /system or /session, got {path:?}")));
        }
        let mut params = parse_query(query.unwrap_or(""), uri)?;
        let mode = take_common_params(&mut params, uri)?;
        let authority = parse_authority(authority, uri)?;
        let (user, host, port) = &authority;
        if host.is_empty() && (port.is_some() || user.is_some()) && matches!(transport, None | Some("unix")) {
            return Err(bad("a unix socket URI names no user or port".into()));
        }
        let transport = match (transport, host.is_empty()) {
            (None | Some("unix"), true) => Transport::Unix,
            (Some("unix"), false) => return Err(bad("a unix socket URI names no host".into())),
            (Some("ssh" | "libssh2" | "libssh"), false) => ssh_transport(authority, &params, uri)?,
            (None | Some("tls"), false) => tls_transport(authority, &params, uri)?,
            (Some("ssh" | "libssh2" | "libssh" | "tls"), true) => {
                return Err(bad("this transport needs a host: DRIVER+TRANSPORT://HOST/PATH".into()))
            }
            (Some("tcp"), _) => {
                return Err(bad(
                    "the tcp transport is neither encrypted nor authenticated; use qemu+tls:// or qemu+ssh://".into(),
                ))
            }
            (Some("ext"), _) => return Err(bad("the ext transport runs a local program; it is not supported".into())),
            (Some(t), _) => {
                return Err(bad(format!("unknown transport {t:?} (supported: unix, ssh, libssh2, libssh, tls)")))
            }
        };
        if transport == Transport::Unix {
            if let Some((k, v)) = params.first() {
                return Err(bad(refusal(k, v, "mode, no_tty")));
            }
        }
        Ok(Uri { driver: driver.to_string(), path, transport, mode })
    }
}

/// libvirt's parameters that mean the same on every transport, taken out of `params`: which daemon socket
/// (`mode`), and whether ssh gets a terminal (`no_tty`: it never does here).
fn take_common_params(params: &mut Vec<(String, String)>, uri: &str) -> Result<Mode> {
    let bad = |reason: String| Error::Uri { uri: uri.to_string(), reason };
    let mut mode = Mode::Auto;
    for (k, v) in params.iter() {
        match (k.as_str(), v.as_str()) {
            ("mode", "auto") => mode = Mode::Auto,
            ("mode", "legacy") => mode = Mode::Legacy,
            ("mode", "direct") => mode = Mode::Direct,
            ("mode", other) => return Err(bad(format!("mode must be auto, legacy or direct, got {other:?}"))),
            ("no_tty", "0" | "1") => {}
            ("no_tty", other) => return Err(bad(format!("no_tty must be 0 or 1, got {other:?}"))),
            _ => {}
        }
    }
    params.retain(|(k, _)| k != "mode" && k != "no_tty");
    Ok(mode)
}

/// `ssh://[USER@]HOST[:PORT]` with its parameters; the key, known hosts file and user default as ssh's.
fn ssh_transport(authority: Authority, params: &[(String, String)], uri: &str) -> Result<Transport> {
    let bad = |reason: String| Error::Uri { uri: uri.to_string(), reason };
    let (user, host, port) = authority;
    let mut keyfile = None;
    let mut known_hosts = None;
    for (k, v) in params {
        match k.as_str() {
            "keyfile" => keyfile = Some(PathBuf::from(v)),
            "known_hosts" => known_hosts = Some(PathBuf::from(v)),
            // what libvirt's libssh2 URIs often carry: only the values that mean what the client does anyway
            // are accepted
            "sshauth" if v == "privkey" => {}
            "known_hosts_verify" if v == "normal" => {}
            other => return Err(bad(refusal(other, v, SSH_PARAMS))),
        }
    }
    let keyfile = match keyfile {
        Some(k) => k,
        None => default_key().ok_or_else(|| {
            bad("name the SSH private key with ?keyfile=PATH (no ~/.ssh/id_ed25519, id_ecdsa or id_rsa found)".into())
        })?,
    };
    let known_hosts = match known_hosts {
        Some(k) => k,
        None => home().map(|h| h.join(".ssh/known_hosts")).ok_or_else(|| {
            bad("pin the host's key with ?known_hosts=PATH (there is no home directory to find ~/.ssh/known_hosts in)"
                .into())
        })?,
    };
    let user = match user {
        Some(u) => u,
        None => default_user().ok_or_else(|| bad("name the SSH user: ssh://USER@HOST/…".into()))?,
    };
    Ok(Transport::Ssh { user, host, port: port.unwrap_or(SSH_PORT), keyfile, known_hosts })
}

/// `tls://HOST[:PORT]` with its `pkipath` (libvirt's default files without).
fn tls_transport(authority: Authority, params: &[(String, String)], uri: &str) -> Result<Transport> {
    let bad = |reason: String| Error::Uri { uri: uri.to_string(), reason };
    let (user, host, port) = authority;
    if user.is_some() {
        return Err(bad("a TLS URI names no user (the client certificate is the identity)".into()));
    }
    let mut pki = None;
    for (k, v) in params {
        match k.as_str() {
            "pkipath" => pki = Some(Pki::in_dir(PathBuf::from(v))),
            other => return Err(bad(refusal(other, v, TLS_PARAMS))),
        }
    }
    Ok(Transport::Tls { host, port: port.unwrap_or(TLS_PORT), pki: pki.unwrap_or_else(Pki::default_for_user) })
}

fn refusal(key: &str, value: &str, accepted: &str) -> String {
    let why = match key {
        "command" | "netcat" | "proxy" | "socket" | "name" => {
            " (it chooses a program, socket or daemon the client would have to run or trust)"
        }
        "no_verify" | "no_tty" | "known_hosts_verify" | "sshauth" => {
            " (the host key is always checked, with key authentication)"
        }
        _ => "",
    };
    format!("parameter {key}={value:?} is not supported{why}; accepted here: {accepted}")
}

fn parse_query(q: &str, uri: &str) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    // libvirt splits on '&' and ';' alike
    for part in q.split(['&', ';']).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let k = percent_decode(k, "a parameter name", uri)?;
        let v = percent_decode(&v.replace('+', " "), "a parameter value", uri)?;
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(Error::Uri { uri: uri.to_string(), reason: format!("parameter {k} is given twice") });
        }
        out.push((k, v));
    }
    Ok(out)
}

/// A URI's user, host (empty: none) and port.
type Authority = (Option<String>, String, Option<u16>);

/// `[user@]host[:port]`, the host possibly `[IPv6]`.
fn parse_authority(a: &str, uri: &str) -> Result<Authority> {
    let bad = |reason: &str| Error::Uri { uri: uri.to_string(), reason: reason.to_string() };
    let (user, hostport) = match a.rsplit_once('@') {
        Some((u, h)) => {
            if u.contains(':') {
                return Err(bad("passwords in URIs are not supported (use keyfile=)"));
            }
            let u = percent_decode(u, "the user", uri)?;
            if u.is_empty() || !u.bytes().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c)) {
                return Err(bad("the user name may hold letters, digits, '.', '_' and '-'"));
            }
            (Some(u), h)
        }
        None => (None, a),
    };
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(|| bad("an IPv6 host needs its closing ']'"))?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("the host in [...] must be an IPv6 address"));
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| bad("expected :PORT after the host"))?),
        };
        (h.to_string(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (percent_decode(h, "the host", uri)?, Some(p)),
            None => (percent_decode(hostport, "the host", uri)?, None),
        }
    };
    if !host.bytes().all(|c| c.is_ascii_alphanumeric() || b".-_:".contains(&c)) {
        return Err(bad("the host must be a name or an IP address"));
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(bad("the port must be 1 to 65535")),
        },
    };
    Ok((user, host, port))
}

fn default_key() -> Option<PathBuf> {
    let home = home()?;
    ["id_ed25519", "id_ecdsa", "id_rsa"].iter().map(|k| home.join(".ssh").join(k)).find(|p| p.is_file())
}

fn default_user() -> Option<String> {
    if is_root() {
        return Some("root".into());
    }
    ["USER", "LOGNAME"].iter().find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Uri {
        Uri::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }
    fn err(s: &str) -> String {
        Uri::parse(s).expect_err(s).to_string()
    }

    #[test]
    fn local_uris() {
        let u = ok("qemu:///system");
        assert_eq!((u.driver.as_str(), u.path.as_str(), &u.transport), ("qemu", "/system", &Transport::Unix));
        assert_eq!(u.server_name(), "qemu:///system");
        assert_eq!(ok("qemu+unix:///session").server_name(), "qemu:///session");
        assert!(err("qemu:///system?socket=/tmp/evil").contains("parameter socket=\"/tmp/evil\" is not supported"));
        assert_eq!(ok("qemu:///system?mode=direct&no_tty=1").mode, Mode::Direct);
        assert_eq!(ok("qemu:///system").mode, Mode::Auto);
        assert!(err("qemu:///system?mode=proxy").contains("auto, legacy or direct"));
        assert!(err("qemu:///embed?root=/x").contains("/system or /session"));
        assert!(err("qemu+unix://host/system").contains("names no host"));
        assert!(err("test:///default").contains("test driver"));
        assert!(err("qemu:/system").contains("expected"));
    }

    #[test]
    fn ssh_uris() {
        let u = ok("qemu+ssh://ops@10.1.2.3:2222/system?keyfile=/k/id&known_hosts=/k/kh");
        assert_eq!(
            u.transport,
            Transport::Ssh {
                user: "ops".into(),
                host: "10.1.2.3".into(),
                port: 2222,
                keyfile: "/k/id".into(),
                known_hosts: "/k/kh".into()
            }
        );
        assert_eq!(u.server_name(), "qemu:///system");
        assert_eq!(u.target(), "qemu+ssh://ops@10.1.2.3:2222/system");
        // libvirt's libssh2 URIs as the README used to show them
        let u = ok("qemu+libssh2://root@h/system?keyfile=/k&known_hosts=/kh&sshauth=privkey&no_tty=1");
        assert!(matches!(u.transport, Transport::Ssh { port: 22, .. }));
        let u = ok("qemu+ssh://root@[::1]:22/system?keyfile=/k%20x&known_hosts=/kh");
        assert!(
            matches!(&u.transport, Transport::Ssh { host, keyfile, .. } if host == "::1" && keyfile.to_str() == Some("/k x"))
        );
        for (uri, want) in [
            ("qemu+ssh://root@h/system?keyfile=/k&known_hosts=/kh&command=/tmp/x", "chooses a program"),
            ("qemu+ssh://root@h/system?keyfile=/k&known_hosts=/kh&netcat=nc", "chooses a program"),
            ("qemu+ssh://root@h/system?keyfile=/k&known_hosts=/kh&socket=/s", "chooses a program"),
            ("qemu+ssh://root@h/system?keyfile=/k&known_hosts=/kh&no_verify=1", "always checked"),
            ("qemu+ssh://root@h/system?keyfile=/k&known_hosts=/kh&sshauth=agent", "always checked"),
            ("qemu+ssh://root@h/system?keyfile=/k&keyfile=/j&known_hosts=/kh", "twice"),
            ("qemu+ssh://root:pw@h/system?keyfile=/k", "passwords"),
            ("qemu+ssh://ro$ot@h/system?keyfile=/k&known_hosts=/kh", "user name"),
            ("qemu+ssh://root@h;rm/system?keyfile=/k&known_hosts=/kh", "name or an IP"),
            ("qemu+ssh://root@h:0/system?keyfile=/k&known_hosts=/kh", "port"),
            ("qemu+ssh://root@h:99999/system?keyfile=/k&known_hosts=/kh", "port"),
            ("qemu+ssh:///system", "needs a host"),
            ("qemu+ssh://root@h/system?keyfile=/k%zz", "%-escape"),
            // libvirt reads ';' as '&': the second parameter is seen, and refused
            ("qemu+ssh://root@h/system?keyfile=/k;command=/x&known_hosts=/kh", "chooses a program"),
            ("qemu+ssh://root@h/system?keyfile=/k&known_hosts=/kh&%63ommand=/x", "chooses a program"),
        ] {
            let e = err(uri);
            assert!(e.contains(want), "{uri}: {e}");
        }
    }

    #[test]
    fn tls_uris() {
        let u = ok("qemu+tls://127.0.0.1/system?pkipath=/p");
        assert_eq!(
            u.transport,
            Transport::Tls { host: "127.0.0.1".into(), port: 16514, pki: Pki::in_dir("/p".into()) }
        );
        assert!(
            matches!(Pki::in_dir("/p".into()), Pki { cacert, cert, key } if cacert.ends_with("cacert.pem") && cert.ends_with("clientcert.pem") && key.ends_with("clientkey.pem"))
        );
        // a host without a transport is TLS, as in libvirt
        assert!(matches!(ok("qemu://h:1234/system").transport, Transport::Tls { port: 1234, .. }));
        assert!(err("qemu+tls://h/system?no_verify=1").contains("not supported"));
        assert!(err("qemu+tls://u@h/system").contains("names no user"));
        assert!(err("qemu+tcp://h/system").contains("neither encrypted"));
        assert!(err("qemu+ext:///system?command=/bin/sh").contains("runs a local program"));
        assert!(err("qemu+foo://h/system").contains("unknown transport"));
    }
}
