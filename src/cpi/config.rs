//! `cpi.json`: the file the BOSH job template renders, validated once.
//!
//! ```json
//! {"driver": {"kind": "libvirt", "uri": "qemu:///system", "pool": "vmcpi"},
//!  "agent": {"mbus": "nats://nats:pw@10.0.0.6:4222", "ntp": ["pool.ntp.org"], "blobstore": {"provider": "dav", "options": {}}},
//!  "log_level": "info"}
//! ```
//! A director with a CPI config sends that CPI's properties inside the request `context`; any `driver`,
//! `agent` or `log_level` key found there is merged over the file's (objects merge key by key), so one
//! director can drive several hypervisors with one job; a context `driver` whose `kind` differs from the
//! file's replaces the file's driver section whole. Unknown fields are refused with their name.
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::Path;

pub use crate::cpi::driver::DriverConfig;

/// The whole CPI configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Which hypervisor and how to reach it; tagged by `kind`.
    pub driver: DriverConfig,
    /// What every BOSH CPI writes into the agent settings.
    #[serde(default)]
    pub agent: AgentOptions,
    /// `debug` also logs every external command and request (secrets redacted).
    #[serde(default)]
    pub log_level: LogLevel,
    /// What reading the file had to say (bosh-vmrun-cpi's names read as vmcpi's): logged with each call.
    #[serde(skip)]
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    #[default]
    Info,
    Warn,
}

/// The `agent` section: written into every VM's agent settings.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentOptions {
    /// Message bus URL the agent listens on (`https://mbus:PW@0.0.0.0:6868` for create-env, `nats://…` for
    /// a director).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mbus: Option<String>,
    #[serde(default)]
    pub ntp: Vec<String>,
    /// `{provider, options}` as the agent expects it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blobstore: Option<Value>,
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path} is not valid JSON: {source}")]
    Json { path: String, source: serde_json::Error },
    #[error("invalid config ({origin}): {message}")]
    Invalid { origin: String, message: String },
    #[error("the request context (a director's CPI config) may not set {message}")]
    Context { message: String },
}

impl Config {
    /// Reads `path`, overlays the request context, registers every secret with the logger, validates.
    pub fn load(path: &Path, context: Option<&Value>) -> Result<Config, ConfigError> {
        let text =
            std::fs::read(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        let value: Value = serde_json::from_slice(&text)
            .map_err(|source| ConfigError::Json { path: path.display().to_string(), source })?;
        let mut cfg = Self::from_value(value, context, &path.display().to_string())?;
        if let Some(dir) = path.parent() {
            // relative file names in the driver section are the config file's neighbours
            let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
            cfg.driver.set_base_dir(&std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()));
        }
        Ok(cfg)
    }

    /// Like [`Config::load`] for an already parsed document (`origin` names it in messages).
    pub fn from_value(mut value: Value, context: Option<&Value>, origin: &str) -> Result<Config, ConfigError> {
        register_secrets(&value);
        let mut origin = origin.to_string();
        if let (Some(Value::Object(ctx)), Value::Object(file)) = (context, &mut value) {
            // the context may say where to connect and as whom; what runs, what is trusted and where local
            // files go are the file's (checked before anything is merged, so nothing of it is ever used)
            if let Some(over) = ctx.get("driver") {
                let Value::Object(over) = over else {
                    return Err(ConfigError::Context { message: "driver: it must be an object".into() });
                };
                let kind = over.get("kind").or_else(|| file.get("driver").and_then(|d| d.get("kind")));
                crate::cpi::driver::check_context(kind.and_then(Value::as_str).unwrap_or(""), over)
                    .map_err(|message| ConfigError::Context { message })?;
            }
            let mut overlaid = false;
            for key in ["driver", "agent", "log_level"] {
                if let Some(over) = ctx.get(key) {
                    register_secrets(over);
                    let base = file.entry(key.to_string()).or_insert(Value::Null);
                    // a CPI config that names another driver kind replaces the file's driver section whole:
                    // the file's keys belong to the other kind
                    let other_kind =
                        key == "driver" && over.get("kind").is_some() && over.get("kind") != base.get("kind");
                    if other_kind {
                        *base = over.clone();
                    } else {
                        let before = base.clone();
                        merge(base, over);
                        if key == "driver" {
                            if let Value::Object(over) = over {
                                crate::cpi::driver::complete_context(&before, over, base);
                            }
                        }
                    }
                    overlaid = true;
                }
            }
            if overlaid {
                origin.push_str(" + request context");
            }
        }
        // a vmrun driver section may use bosh-vmrun-cpi's names (its job properties, rendered by our job)
        let mut notes = Vec::new();
        if let Some(Value::Object(driver)) = value.get_mut("driver") {
            if driver.get("kind").and_then(Value::as_str) == Some("vmrun") {
                notes = crate::cpi::compat::vmrun_driver(driver)
                    .map_err(|message| ConfigError::Invalid { origin: origin.clone(), message })?;
            }
        }
        let mut cfg: Config = serde_json::from_value(value)
            .map_err(|e| ConfigError::Invalid { origin: origin.clone(), message: e.to_string() })?;
        cfg.notes = notes;
        cfg.driver.validate().map_err(|message| ConfigError::Invalid { origin, message })?;
        Ok(cfg)
    }
}

/// Deep merge: objects merge key by key, anything else is replaced.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// Whether a key names a secret (password, token, private key, …).
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "passwd", "secret", "token", "private_key", "privatekey", "credential", "api_key", "access_key"]
        .iter()
        .any(|w| k.contains(w))
        || k == "key"
        || k.ends_with("_key") && !k.ends_with("public_key") && !k.ends_with("host_key")
}

/// Registers every secret found in a JSON document: values (strings and numbers) under secret-looking
/// keys, and the credentials of every URL with a `user:password@` part. The config's own secrets are
/// [`crate::common::secret::Secret`]s as well; this catches the ones in free-form parts (the agent's blobstore
/// options, a VM's env, a CPI config's properties).
pub fn register_secrets(v: &Value) {
    walk(v, None);
    fn walk(v: &Value, key: Option<&str>) {
        match v {
            Value::String(s) => {
                if key.is_some_and(is_secret_key) {
                    crate::common::logger::add_secret(s);
                    // PEM keys: also every line, in case one line of it is printed
                    for line in s.lines().filter(|l| !l.starts_with("-----")) {
                        crate::common::logger::add_secret(line);
                    }
                }
                register_url_credentials(s);
            }
            // a number under a secret key is a secret too (`"password": 12345678`)
            Value::Number(n) if key.is_some_and(is_secret_key) => crate::common::logger::add_secret(&n.to_string()),
            Value::Array(a) => a.iter().for_each(|x| walk(x, key)),
            Value::Object(m) => m.iter().for_each(|(k, x)| walk(x, Some(k))),
            _ => {}
        }
    }
}

/// `scheme://user:password@host` → registers `password` and `user:password`.
pub fn register_url_credentials(s: &str) {
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let after = &rest[i + 3..];
        let end = after.find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace()).unwrap_or(after.len());
        let authority = &after[..end];
        if let Some(at) = authority.rfind('@') {
            let userinfo = &authority[..at];
            if let Some((_, pw)) = userinfo.split_once(':') {
                crate::common::logger::add_secret(pw);
                crate::common::logger::add_secret(userinfo);
            }
        }
        rest = &after[end..];
    }
}

/// Convenience for tests and tools: an object from pairs.
pub fn object(pairs: &[(&str, Value)]) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        m.insert((*k).to_string(), v.clone());
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_named() {
        let err = Config::from_value(json!({"driver": {"kind": "libvirt"}, "agnet": {}}), None, "t").unwrap_err();
        assert!(err.to_string().contains("agnet"), "{err}");
        let err = Config::from_value(json!({"driver": {"kind": "libvirt", "pol": "x"}}), None, "t").unwrap_err();
        assert!(err.to_string().contains("pol"), "{err}");
        let err = Config::from_value(json!({"driver": {"kind": "hyperv"}}), None, "t").unwrap_err();
        assert!(err.to_string().contains("hyperv"), "{err}");
    }

    /// `xorriso` is no longer used, but configs written for earlier versions name it: they still load.
    #[test]
    fn the_deprecated_xorriso_key_is_accepted_by_every_driver() {
        for driver in [
            json!({"kind": "libvirt", "xorriso": "/usr/bin/xorriso"}),
            json!({"kind": "vmrun", "vm_store_path": "/vms", "xorriso": "xorriso"}),
            json!({"kind": "vsphere", "host": "vc", "user": "u", "password": "p", "datacenter": "dc",
                   "datastores": ["ds"], "clusters": ["c"], "xorriso": "/opt/x/xorriso"}),
        ] {
            let cfg =
                Config::from_value(json!({"driver": driver.clone(), "agent": {"mbus": "nats://a:b@c"}}), None, "t");
            assert!(cfg.is_ok(), "{driver}: {:?}", cfg.err());
        }
    }

    #[test]
    fn context_overrides_file() {
        let ctx = json!({"director_uuid": "d", "driver": {"pool": "other"}, "agent": {"ntp": ["ctx"]}});
        let cfg = Config::from_value(
            json!({"driver": {"kind": "libvirt", "pool": "file"}, "agent": {"mbus": "nats://a:b@c"}}),
            Some(&ctx),
            "t",
        )
        .unwrap();
        match &cfg.driver {
            DriverConfig::Libvirt(l) => assert_eq!(l.pool, "other"),
            #[allow(unreachable_patterns)]
            _ => panic!("wrong driver"),
        }
        assert_eq!(cfg.agent.ntp, vec!["ctx".to_string()]);
        assert_eq!(cfg.agent.mbus.as_deref(), Some("nats://a:b@c"));
    }

    #[test]
    fn context_with_another_driver_kind_replaces_the_driver_section() {
        let ctx = json!({"driver": {"kind": "libvirt", "uri": "qemu+ssh://h/system"}});
        let cfg = Config::from_value(json!({"driver": {"kind": "libvirt", "pool": "file"}}), Some(&ctx), "t").unwrap();
        let DriverConfig::Libvirt(l) = &cfg.driver else { panic!("wrong driver") };
        assert_eq!((l.pool.as_str(), l.uri.as_str()), ("file", "qemu+ssh://h/system"));
        let merged = json!({"kind": "other", "x": 1});
        let mut base = json!({"driver": {"kind": "libvirt", "pool": "file"}});
        let err = Config::from_value(base.take(), Some(&json!({"driver": merged})), "t").unwrap_err().to_string();
        // replaced whole: the complaint is about the unknown kind, not about libvirt's `pool`
        assert!(err.contains("other") && !err.contains("pool"), "{err}");
    }

    #[test]
    fn the_context_may_not_name_programs() {
        let file = json!({"driver": {"kind": "libvirt"}});
        for (ctx, says) in [
            (json!({"driver": {"virsh": "/x/evil.sh"}}), "driver.virsh"),
            (json!({"driver": {"kind": "vmrun", "vm_store_path": "/v", "vmrun": "/x"}}), "driver.vm_store_path"),
            (json!({"driver": {"kind": "vsphere", "insecure": true}}), "driver.insecure"),
            (json!({"driver": {"uri": "qemu+ssh://h/system?command=/x"}}), "command"),
            (json!({"driver": "qemu:///system"}), "object"),
            (json!({"driver": {"kind": "vsphere", "host": "https://elsewhere/sdk"}}), "driver.host without"),
            (json!({"driver": {"kind": "vsphere", "host": "https://elsewhere/sdk", "user": "u"}}), "credentials"),
        ] {
            let err = Config::from_value(file.clone(), Some(&ctx), "t").unwrap_err().to_string();
            assert!(err.contains(says) && err.contains("request context"), "{ctx}: {err}");
        }
        // the file itself may set them
        let file = json!({"driver": {"kind": "libvirt", "virsh": "/opt/virsh", "state_dir": "/srv/vmcpi"}});
        assert!(Config::from_value(file, Some(&json!({"driver": {"pool": "p"}})), "t").is_ok());
        // another vCenter with its own credentials
        let file = json!({"driver": {"kind": "vsphere", "host": "https://vc/sdk", "user": "a", "password": "b",
            "datacenter": "DC0"}});
        let ctx = json!({"driver": {"host": "https://vc2/sdk", "user": "c", "password": "d"}});
        match Config::from_value(file, Some(&ctx), "t").unwrap().driver {
            DriverConfig::Vsphere(c) => assert_eq!(c.host, "https://vc2/sdk"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn secret_keys() {
        assert!(is_secret_key("password"));
        assert!(is_secret_key("private_key"));
        assert!(is_secret_key("access_key"));
        assert!(!is_secret_key("public_key"));
        assert!(!is_secret_key("name"));
    }
}
