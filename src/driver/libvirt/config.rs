//! The `driver` section for `kind: libvirt`: what it holds, its defaults and its checks.
use super::*;

/// The `driver` section for `kind: libvirt`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibvirtConfig {
    /// libvirt connection URI. For `qemu+ssh://` pin the host key: `?command=/path/to/pinned-ssh` or
    /// `qemu+libssh2://…?known_hosts=…` (see the README).
    #[serde(default = "default_uri")]
    pub uri: String,
    /// Storage pool holding stemcells, VM volumes and disks.
    #[serde(default = "default_pool")]
    pub pool: String,
    /// When set and the pool does not exist, it is created as a directory pool at this path.
    #[serde(default)]
    pub pool_path: Option<PathBuf>,
    /// `kvm` (hardware virtualisation) or `qemu` (software emulation, e.g. nested hosts).
    #[serde(default = "default_domain_type")]
    pub domain_type: String,
    /// QEMU machine type.
    #[serde(default = "default_machine")]
    pub machine: String,
    /// libvirt network for BOSH networks whose cloud_properties name none.
    #[serde(default = "default_network")]
    pub default_network: String,
    /// A VNC display on 127.0.0.1 for each VM.
    #[serde(default = "yes")]
    pub graphics: bool,
    #[serde(default = "default_virsh")]
    pub virsh: PathBuf,
    #[serde(default = "default_qemu_img")]
    pub qemu_img: PathBuf,
    /// Deprecated and ignored: settings media are written in-process ([`crate::iso9660`]). Still accepted so
    /// that configs written for earlier versions load.
    #[serde(default)]
    pub xorriso: Option<PathBuf>,
    /// In-flight markers of creates and their scratch space (unpacked stemcells): see [`crate::inflight`].
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
}

/// What a request's context (a director's CPI config) may set in a libvirt driver section: where to connect
/// and as whom (`uri`, checked by [`check_context_uri`]), and where VMs go on that host. Everything else — the
/// programs (`virsh`, `qemu_img`, `xorriso`), local paths (`pool_path`, `state_dir`) — comes from the file.
pub const CONTEXT_KEYS: &[&str] = &["kind", "uri", "pool", "default_network", "domain_type", "machine", "graphics"];

/// The URI parameters a context's `uri` may carry: none of them names a program or a file or weakens a check.
/// Refused (by not being here): `command`, `netcat`, `proxy` (programs on either host), `socket`, `keyfile`,
/// `known_hosts`, `pkipath`, `authfile` (files), `no_verify`, `known_hosts_verify`, `tls_priority`
/// (weaker checks), `name` (another URI, unchecked).
const CONTEXT_URI_PARAMS: &[&str] = &["no_tty", "sshauth", "mode"];

/// The transports a context's `uri` may use: none (the local daemon), SSH, TLS and the local socket. Not
/// `ext` (runs the program named by `command`) and not `tcp` (no encryption).
const CONTEXT_URI_TRANSPORTS: &[&str] = &["", "ssh", "libssh2", "libssh", "tls", "unix"];

/// Checks a libvirt URI that comes from a request's context: `qemu[+transport]://[user@][host][:port]/system`
/// (or `/session`), with only [`CONTEXT_URI_PARAMS`]. `Err` names what is not allowed.
pub fn check_context_uri(uri: &str) -> Result<(), String> {
    if uri.chars().any(|c| c.is_control() || c.is_whitespace()) || uri.contains('#') {
        return Err("driver.uri holds whitespace, control characters or a fragment".into());
    }
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Err(format!("driver.uri {uri:?} is not a libvirt URI (driver[+transport]://host/path)"));
    };
    let (hv, transport) = scheme.split_once('+').unwrap_or((scheme, ""));
    if hv != "qemu" {
        return Err(format!("driver.uri: hypervisor driver {hv:?} (only qemu is used by this CPI)"));
    }
    if !CONTEXT_URI_TRANSPORTS.contains(&transport) {
        return Err(format!(
            "driver.uri: transport {transport:?} (allowed: ssh, libssh2, libssh, tls, unix, or none; ext runs a program, tcp is unencrypted)"
        ));
    }
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = before_query.split_at(before_query.find('/').unwrap_or(before_query.len()));
    if !matches!(path, "/system" | "/session") {
        return Err(format!("driver.uri: path {path:?} (only /system or /session)"));
    }
    let (user, hostport) = authority.rsplit_once('@').unwrap_or(("", authority));
    let name_ok = |s: &str, extra: &[char]| {
        !s.starts_with('-') && s.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c) || extra.contains(&c))
    };
    if !name_ok(user, &[]) {
        return Err(format!("driver.uri: user {user:?} (letters, digits, '.', '-', '_'; not starting with '-')"));
    }
    if !name_ok(hostport, &[':', '[', ']']) {
        return Err(format!(
            "driver.uri: host {hostport:?} (a host name or address and a port; not starting with '-')"
        ));
    }
    // libvirt splits the query on '&' and ';' and decodes %XX in names and values
    for param in query.split(['&', ';']).filter(|p| !p.is_empty()) {
        let raw = param.split_once('=').map(|(n, _)| n).unwrap_or(param);
        let name = percent_decode(raw).ok_or_else(|| format!("driver.uri: parameter {raw:?} is not decodable"))?;
        if !CONTEXT_URI_PARAMS.contains(&name.as_str()) {
            return Err(format!(
                "driver.uri parameter {name:?} (a URI from the request context may carry only {})",
                CONTEXT_URI_PARAMS.join(", ")
            ));
        }
    }
    Ok(())
}

/// `%XX` decoding of a URI component; `None` for a bad escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

pub(super) fn default_state_dir() -> PathBuf {
    "/var/tmp/vmcpi".into()
}

pub(super) fn default_uri() -> String {
    "qemu:///system".into()
}
pub(super) fn default_pool() -> String {
    "default".into()
}
pub(super) fn default_domain_type() -> String {
    "kvm".into()
}
pub(super) fn default_machine() -> String {
    "q35".into()
}
pub(super) fn default_network() -> String {
    "default".into()
}
pub(super) fn yes() -> bool {
    true
}
pub(super) fn default_virsh() -> PathBuf {
    "/usr/bin/virsh".into()
}
pub(super) fn default_qemu_img() -> PathBuf {
    "/usr/bin/qemu-img".into()
}

impl LibvirtConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !matches!(self.domain_type.as_str(), "kvm" | "qemu") {
            return Err(format!("driver.domain_type must be \"kvm\" or \"qemu\", got {:?}", self.domain_type));
        }
        if self.pool.is_empty() || self.pool.contains('/') {
            return Err(format!("driver.pool must be a storage pool name, got {:?}", self.pool));
        }
        for (name, p) in [("virsh", &self.virsh), ("qemu_img", &self.qemu_img)] {
            if !p.is_absolute() {
                return Err(format!(
                    "driver.{name} must be an absolute path (the director runs the CPI with a minimal PATH), got {}",
                    p.display()
                ));
            }
        }
        for (name, p) in [("pool_path", self.pool_path.as_ref()), ("state_dir", Some(&self.state_dir))] {
            if let Some(p) = p {
                if !p.is_absolute() {
                    return Err(format!("driver.{name} must be an absolute path, got {}", p.display()));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_uris_say_where_and_as_whom_only() {
        for ok in [
            "qemu:///system",
            "qemu:///session",
            "qemu+ssh://root@hv2.example.com:2222/system",
            "qemu+libssh2://u@h/system?sshauth=privkey&no_tty=1",
            "qemu+tls://[::1]:16514/system?mode=direct;no_tty=1",
            "qemu+unix:///system",
        ] {
            assert_eq!(check_context_uri(ok), Ok(()), "{ok}");
        }
        for (bad, says) in [
            ("qemu+ssh://h/system?command=/x", "command"),
            ("qemu+ssh://h/system?no_tty=1&%63ommand=/x", "command"),
            ("qemu+ssh://h/system?%6", "decodable"),
            ("qemu+ext:///system?command=/x", "ext"),
            ("qemu+tcp://h/system", "tcp"),
            ("qemu:///embed?root=/x", "embed"),
            ("test:///etc/passwd", "test"),
            ("qemu+ssh://-oProxyCommand=x/system", "-oProxyCommand"),
            ("qemu+ssh://-l@h/system", "-l"),
            ("qemu+ssh://h/system#x", "fragment"),
            ("qemu+ssh://h/system?name=test:///etc/passwd", "name"),
            ("qemu", "not a libvirt URI"),
        ] {
            let e = check_context_uri(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
