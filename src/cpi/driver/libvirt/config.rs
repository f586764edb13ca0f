//! The `driver` section for `kind: libvirt`: what it holds, its defaults and its checks.
use super::*;

/// The `driver` section for `kind: libvirt`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibvirtConfig {
    /// libvirt connection URI: `qemu:///system`, `qemu:///session`,
    /// `qemu+ssh://user@host[:port]/system?keyfile=PATH&known_hosts=PATH` (the host key pinned) or
    /// `qemu+tls://host/system?pkipath=DIR`. Relative paths are relative to the config file's directory.
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
    /// Deprecated and ignored: vmcpi speaks libvirt's protocol itself ([`crate::cpi::libvirt_rpc`]). Still
    /// accepted (with a warning in the log) so that configs written for earlier versions load.
    #[serde(default)]
    pub virsh: Option<PathBuf>,
    /// Deprecated and ignored: disk images are read in-process ([`crate::cpi::diskimage`]).
    #[serde(default)]
    pub qemu_img: Option<PathBuf>,
    /// Deprecated and ignored: settings media are written in-process ([`crate::cpi::iso9660`]).
    #[serde(default)]
    pub xorriso: Option<PathBuf>,
    /// In-flight markers of creates and their scratch space (unpacked stemcells): see [`crate::cpi::inflight`].
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The config file's directory: relative `keyfile=`, `known_hosts=` and `pkipath=` are relative to it.
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
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

/// The URI parameters and transports of earlier versions that ran `virsh` (and through it `ssh` or `nc`),
/// with what to write instead. The full check is the client's ([`crate::cpi::libvirt_rpc::uri`]), at connect.
fn check_uri(uri: &str) -> Result<(), String> {
    let (scheme, rest) = uri.split_once("://").unwrap_or((uri, ""));
    let query = rest.split_once('?').map(|(_, q)| q).unwrap_or("");
    for param in query.split(['&', ';']).filter(|p| !p.is_empty()) {
        let (raw, value) = param.split_once('=').unwrap_or((param, ""));
        let name = percent_decode(raw).unwrap_or_default();
        let instead = match name.as_str() {
            "command" => "vmcpi speaks libvirt's protocol over its own SSH connection and runs no ssh program: pin the host with keyfile=PATH&known_hosts=PATH instead (the BOSH job writes both from pinned_ssh.private_key and pinned_ssh.known_hosts)",
            "netcat" | "proxy" | "socket" => "vmcpi runs no program on either host that a URI names: on the host it starts virt-ssh-helper, or netcat on the daemon's socket, as libvirt does; choose the daemon with mode=legacy or mode=direct",
            "no_verify" => "the server's certificate is always checked: give the CA in pkipath=DIR (cacert.pem)",
            _ => continue,
        };
        return Err(format!("driver.uri: parameter {name}={value:?} is not supported: {instead}"));
    }
    if scheme.ends_with("+ext") {
        return Err(
            "driver.uri: the ext transport runs a local program; use qemu+ssh:// with keyfile= and known_hosts=".into(),
        );
    }
    if scheme.ends_with("+tcp") {
        return Err("driver.uri: the tcp transport is neither encrypted nor authenticated; use qemu+tls:// (pkipath=DIR) or qemu+ssh://".into());
    }
    Ok(())
}

/// The URI a request's context gives, completed with the files of the config file's URI: a context names
/// where to connect and as whom, never a file (see [`check_context_uri`]), so an SSH or TLS URI from it uses
/// the file's `keyfile=`/`known_hosts=` (or `pkipath=`) when it has the same transport. The file's
/// known_hosts still decides which host keys are accepted: the context reaches only hosts the operator pinned.
pub fn inherit_uri_files(file_uri: &str, context_uri: &str) -> String {
    fn transport(uri: &str) -> &str {
        match uri.split_once("://").map(|(s, _)| s.split_once('+').map(|(_, t)| t).unwrap_or("")) {
            Some("ssh" | "libssh2" | "libssh") => "ssh",
            Some("tls") => "tls",
            Some("") if !uri.split_once("://").is_some_and(|(_, r)| r.starts_with('/')) => "tls",
            _ => "",
        }
    }
    let kind = transport(context_uri);
    if kind.is_empty() || transport(file_uri) != kind {
        return context_uri.to_string();
    }
    let names: &[&str] = if kind == "ssh" { &["keyfile", "known_hosts"] } else { &["pkipath"] };
    let params = |uri: &str| -> Vec<(String, String)> {
        let query = uri.split_once('?').map(|(_, q)| q).unwrap_or("");
        query
            .split(['&', ';'])
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').unwrap_or((p, "")))
            .map(|(k, v)| (percent_decode(k).unwrap_or_default(), v.to_string()))
            .collect()
    };
    let theirs = params(context_uri);
    let mut out = context_uri.to_string();
    for (k, v) in params(file_uri) {
        if names.contains(&k.as_str()) && !theirs.iter().any(|(t, _)| *t == k) {
            out.push(if out.contains('?') { '&' } else { '?' });
            out.push_str(&format!("{k}={v}"));
        }
    }
    out
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

impl LibvirtConfig {
    /// The deprecated keys this config sets (each ignored, with a warning in the log).
    pub fn deprecated_keys(&self) -> Vec<&'static str> {
        [("virsh", self.virsh.is_some()), ("qemu_img", self.qemu_img.is_some()), ("xorriso", self.xorriso.is_some())]
            .into_iter()
            .filter_map(|(k, set)| set.then_some(k))
            .collect()
    }

    pub fn validate(&self) -> Result<(), String> {
        if !matches!(self.domain_type.as_str(), "kvm" | "qemu") {
            return Err(format!("driver.domain_type must be \"kvm\" or \"qemu\", got {:?}", self.domain_type));
        }
        if self.pool.is_empty() || self.pool.contains('/') {
            return Err(format!("driver.pool must be a storage pool name, got {:?}", self.pool));
        }
        check_uri(&self.uri)?;
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
    fn a_context_uri_uses_the_files_of_the_config_files_uri() {
        let file = "qemu+ssh://cpi@hv1/system?keyfile=ssh_key&known_hosts=known_hosts";
        assert_eq!(
            inherit_uri_files(file, "qemu+ssh://cpi@hv2/system"),
            "qemu+ssh://cpi@hv2/system?keyfile=ssh_key&known_hosts=known_hosts"
        );
        assert_eq!(
            inherit_uri_files(file, "qemu+libssh2://cpi@hv2:2222/system?no_tty=1"),
            "qemu+libssh2://cpi@hv2:2222/system?no_tty=1&keyfile=ssh_key&known_hosts=known_hosts"
        );
        // another transport, or the local socket: nothing to take
        assert_eq!(inherit_uri_files(file, "qemu+tls://hv2/system"), "qemu+tls://hv2/system");
        assert_eq!(inherit_uri_files(file, "qemu:///system"), "qemu:///system");
        assert_eq!(inherit_uri_files("qemu:///system", "qemu+ssh://h/system"), "qemu+ssh://h/system");
        let tls = "qemu+tls://hv1/system?pkipath=/var/vcap/jobs/vmcpi_cpi/config/pki";
        assert_eq!(
            inherit_uri_files(tls, "qemu://hv2/system"),
            "qemu://hv2/system?pkipath=/var/vcap/jobs/vmcpi_cpi/config/pki"
        );
        assert_eq!(inherit_uri_files(tls, "qemu+tls://hv2/system?mode=direct").matches("pkipath").count(), 1);
    }

    #[test]
    fn uris_of_earlier_versions_say_what_to_write_instead() {
        let cfg = |uri: &str| -> LibvirtConfig { serde_json::from_value(serde_json::json!({"uri": uri})).unwrap() };
        let e = cfg("qemu+ssh://cpi@h/system?command=pinned-ssh").validate().unwrap_err();
        assert!(e.contains("command") && e.contains("keyfile=PATH&known_hosts=PATH"), "{e}");
        let e = cfg("qemu+ssh://cpi@h/system?no_tty=1&%63ommand=/x").validate().unwrap_err();
        assert!(e.contains("keyfile="), "{e}");
        assert!(cfg("qemu+ssh://h/system?netcat=/bin/nc").validate().unwrap_err().contains("mode=legacy"));
        assert!(cfg("qemu+tcp://h/system").validate().unwrap_err().contains("qemu+tls://"));
        assert!(cfg("qemu+ext:///system?command=/x").validate().is_err());
        cfg("qemu+ssh://cpi@h/system?keyfile=ssh_key&known_hosts=known_hosts").validate().unwrap();
        cfg("qemu+tls://h/system?pkipath=/etc/pki/vmcpi").validate().unwrap();
        // the programs of earlier versions: accepted, named as deprecated, used nowhere
        let c: LibvirtConfig = serde_json::from_value(
            serde_json::json!({"virsh": "virsh", "qemu_img": "/usr/bin/qemu-img", "xorriso": "/x"}),
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.deprecated_keys(), ["virsh", "qemu_img", "xorriso"]);
    }

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
