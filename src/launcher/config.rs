//! The launcher's TOML config: read once, validated once, then used as typed values.
//!
//! TOML (not JSON like `cpi.json`) because operators edit this file by hand and want comments; the format is
//! documented with a complete example in `examples/launcher/agent-launcher.toml` and `docs/launcher.md`.
//! The Buildkite token is never part of this file: it names a file or an environment variable that holds it.
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Why a config cannot be used. Messages name the field that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid launcher config")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read the Buildkite token from {0}")]
    Token(String, #[source] std::io::Error),
    #[error("the Buildkite token in {0} is empty")]
    EmptyToken(String),
    #[error(
        "the token file {path} may be read or changed by others (mode {mode:o}, owner uid {uid}): \
         chmod 600 {path}, owned by the launcher's user or root"
    )]
    OpenTokenFile { path: String, mode: u32, uid: u32 },
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Names this launcher in VM metadata and on the stack; two launchers must not share one.
    pub launcher_id: String,
    /// Directory of the durable ledger (intents, CIDs, stemcells, IP leases) and the CPI call spool.
    pub ledger_dir: PathBuf,
    /// `host:port` of the HTTP listener: `/metrics`, `/healthz` and the VM assignment endpoint.
    pub listen: String,
    /// The URL a VM uses to reach the listener (default: `http://<listen>`).
    #[serde(default)]
    pub public_url: Option<String>,
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    /// `/healthz` answers 503 after this many polls of the Buildkite API in a row have failed.
    #[serde(default = "default_unhealthy_after")]
    pub unhealthy_after_failed_polls: u32,
    /// Serve the listener over HTTPS with this certificate (PEM, the chain) and key (PEM).
    #[serde(default)]
    pub tls: Option<Tls>,
    /// What the listener allows its clients.
    #[serde(default)]
    pub listener: ListenerLimits,
    /// What SIGTERM does with running VMs: `leave` them to the next start, or `drain` (wait for their jobs).
    #[serde(default)]
    pub on_shutdown: OnShutdown,
    /// How a job that several pools can serve is placed: `spread` (least used pool) or `pack` (most used).
    #[serde(default)]
    pub placement: Placement,
    #[serde(default)]
    pub limits: GlobalLimits,
    /// The per-pool circuit breakers (failover to other pools while a pool's CPI keeps failing).
    #[serde(default)]
    pub breaker: BreakerConfig,
    pub buildkite: Buildkite,
    #[serde(rename = "pool")]
    pub pools: Vec<Pool>,
}

fn default_poll_ms() -> u64 {
    1000
}
fn default_unhealthy_after() -> u32 {
    3
}

/// The listener's certificate and key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// The listener's limits on its clients (`[listener]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerLimits {
    /// Connections open at once; more wait in the kernel's backlog until one closes.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How long a client may take for a TLS handshake, a request's headers, its body, and how long a
    /// kept-alive connection may sit idle, in seconds.
    #[serde(default = "default_listener_timeout")]
    pub timeout_seconds: u64,
}

fn default_max_connections() -> usize {
    256
}
fn default_listener_timeout() -> u64 {
    10
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits { max_connections: default_max_connections(), timeout_seconds: default_listener_timeout() }
    }
}

impl ListenerLimits {
    pub fn limits(&self) -> crate::launcher::server::Limits {
        crate::launcher::server::Limits {
            max_connections: self.max_connections,
            timeout: std::time::Duration::from_secs(self.timeout_seconds),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnShutdown {
    #[default]
    Leave,
    Drain,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    #[default]
    Spread,
    Pack,
}

/// Limits over all pools together (0 = no limit).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalLimits {
    #[serde(default)]
    pub max_vms: u32,
    #[serde(default)]
    pub cpu: u32,
    #[serde(default)]
    pub ram_mb: u64,
}

/// When a pool's circuit breaker opens and how long it stays open before a probe.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// create_vm failures in a row that open a pool's breaker.
    #[serde(default = "default_breaker_failures")]
    pub failures: u32,
    /// How long an open breaker waits before its first probe; doubles on every reopening …
    #[serde(default = "default_breaker_open")]
    pub open_seconds: u64,
    /// … up to this.
    #[serde(default = "default_breaker_max_open")]
    pub max_open_seconds: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: default_breaker_failures(),
            open_seconds: default_breaker_open(),
            max_open_seconds: default_breaker_max_open(),
        }
    }
}

fn default_breaker_failures() -> u32 {
    3
}
fn default_breaker_open() -> u64 {
    30
}
fn default_breaker_max_open() -> u64 {
    600
}

/// Which Buildkite API lists the work.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    #[default]
    Stacks,
    Rest,
}

/// The Buildkite connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Buildkite {
    #[serde(default)]
    pub source: SourceKind,
    /// Agent API base (Stacks API and the agents' endpoint).
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// The agent API base the VMs' agents use, when they reach it by another URL than the launcher (a proxy,
    /// another network); default: `endpoint`.
    #[serde(default)]
    pub agent_endpoint: Option<String>,
    /// The cluster agent token (`bkct_…`), read from this file …
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// … or from this environment variable.
    #[serde(default)]
    pub token_env: Option<String>,
    /// The cluster queue key this launcher serves (`_default` for the cluster's default queue) …
    #[serde(default)]
    pub queue: String,
    /// … or several queues (Stacks API only), each served by its own stack `<stack_key>-<queue>`.
    #[serde(default)]
    pub queues: Vec<String>,
    /// The stack key (≤ 80 bytes of `[A-Za-z0-9_-]`).
    pub stack_key: String,
    #[serde(default = "default_expiry")]
    pub reservation_expiry_seconds: u32,
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    #[serde(default = "default_max_pages")]
    pub max_pages: u32,
    /// HTTP timeout of one request.
    #[serde(default = "default_http_timeout")]
    pub timeout_ms: u64,
    /// REST source only: the API base, the organisation, and the API token (file or env var).
    #[serde(default)]
    pub rest: Option<RestSource>,
    /// Accept `http://` endpoints on other hosts than this machine's loopback (the tokens then cross the
    /// network in clear text; a warning says so at every start).
    #[serde(default)]
    pub allow_http: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestSource {
    #[serde(default = "default_rest_endpoint")]
    pub endpoint: String,
    pub organization: String,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub token_env: Option<String>,
    /// Only builds created in this many hours are listed (the API refuses deep pages without a filter).
    #[serde(default = "default_lookback")]
    pub lookback_hours: u32,
}

fn default_endpoint() -> String {
    "https://agent.buildkite.com/v3".into()
}
fn default_rest_endpoint() -> String {
    "https://api.buildkite.com".into()
}
fn default_lookback() -> u32 {
    24
}
fn default_expiry() -> u32 {
    900
}
fn default_page_size() -> u32 {
    1000
}
fn default_max_pages() -> u32 {
    2
}
fn default_http_timeout() -> u64 {
    10_000
}

/// One pool: a kind of VM made by one CPI for the jobs whose rules it serves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    pub name: String,
    /// The agent tags this pool's VMs have (`queue=…`, `os=linux`, `arch=*` to serve any value of a key).
    pub tags: Vec<String>,
    /// The CPI executable and its arguments, run like the BOSH director runs it.
    pub cpi: Vec<String>,
    pub stemcell: Stemcell,
    /// Base `cloud_properties` for create_vm; the flavor's values are merged over them.
    #[serde(default)]
    pub cloud_properties: Map<String, Value>,
    /// The create_vm networks, by name.
    pub networks: BTreeMap<String, NetworkConfig>,
    pub flavors: BTreeMap<String, Flavor>,
    /// The flavor for jobs that do not name one (default: the smallest).
    #[serde(default)]
    pub default_flavor: Option<String>,
    /// The job tag that picks a flavor.
    #[serde(default = "default_flavor_tag")]
    pub flavor_tag: String,
    #[serde(default)]
    pub limits: PoolLimits,
    /// VMs booted ahead of demand.
    #[serde(default)]
    pub warm: u32,
    /// Hard lifetime of a VM; the sweep deletes it after this (fractions allowed: 0.5 = 30 s).
    #[serde(default = "default_lifetime")]
    pub max_lifetime_minutes: f64,
    /// A VM whose job has not started this long after create_vm returned counts as failed to boot.
    #[serde(default = "default_boot_timeout")]
    pub boot_timeout_seconds: u64,
    /// create_vm attempts per job before the job is finished with −1.
    #[serde(default = "default_attempts")]
    pub create_attempts: u32,
    /// A CPI call running longer than this is killed (its outcome is then unknown: a possible leak).
    #[serde(default = "default_cpi_timeout")]
    pub cpi_timeout_seconds: u64,
    /// Host power management: the command (argv) that powers the pool's host on (Wake-on-LAN, IPMI, …) …
    #[serde(default)]
    pub power_on: Vec<String>,
    /// … and the one that powers it off (e.g. ssh to shut it down); needs `power_on`.
    #[serde(default)]
    pub power_off: Vec<String>,
    /// How long a woken host may take until its CPI answers `info`.
    #[serde(default = "default_boot_grace")]
    pub boot_grace_seconds: u64,
    /// A host with no VMs, no creates and no waiting demand this long is powered off.
    #[serde(default = "default_idle_off")]
    pub idle_power_off_seconds: u64,
}

fn default_boot_grace() -> u64 {
    300
}
fn default_idle_off() -> u64 {
    1800
}

fn default_cpi_timeout() -> u64 {
    1800
}

fn default_flavor_tag() -> String {
    "flavor".into()
}
fn default_lifetime() -> f64 {
    180.0
}
fn default_boot_timeout() -> u64 {
    600
}
fn default_attempts() -> u32 {
    3
}

/// The stemcell a pool boots: an existing CID, or a tarball or image uploaded once with create_stemcell.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stemcell {
    #[serde(default)]
    pub cid: Option<String>,
    /// A stemcell tarball (`bosh-….tgz`): its `image` and `stemcell.MF` cloud_properties go to create_stemcell.
    #[serde(default)]
    pub tarball: Option<PathBuf>,
    /// A stemcell image file (the `image` inside a stemcell tarball), passed to create_stemcell as it is.
    #[serde(default)]
    pub image: Option<PathBuf>,
    /// The stemcell's `cloud_properties` (over those of the tarball's `stemcell.MF`).
    #[serde(default)]
    pub cloud_properties: Map<String, Value>,
    /// The stemcell's `api_version`, sent to create_vm as `context.vm.stemcell.api_version` (default: the
    /// `api_version` of a tarball's `stemcell.MF`, else 3).
    #[serde(default)]
    pub api_version: Option<u32>,
}

/// Pool limits (0 = no limit).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolLimits {
    #[serde(default)]
    pub max_vms: u32,
    #[serde(default = "default_concurrent")]
    pub max_concurrent_creates: u32,
    #[serde(default)]
    pub cpu: u32,
    #[serde(default)]
    pub ram_mb: u64,
    /// Keep room for one VM of the smallest flavor: a bigger flavor may not take the last of the budget.
    #[serde(default)]
    pub reserve_smallest: bool,
}

impl Default for PoolLimits {
    fn default() -> Self {
        PoolLimits {
            max_vms: 0,
            max_concurrent_creates: default_concurrent(),
            cpu: 0,
            ram_mb: 0,
            reserve_smallest: false,
        }
    }
}

fn default_concurrent() -> u32 {
    2
}

/// A VM size. `cpu`, `ram` (MiB) and `disk` (MiB) go into `cloud_properties` as the BOSH CPIs name them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flavor {
    pub cpu: u32,
    pub ram: u64,
    #[serde(default)]
    pub disk: u64,
    /// More `cloud_properties` for this flavor.
    #[serde(default)]
    pub cloud_properties: Map<String, Value>,
}

/// One create_vm network. A manual network with `static_ips` gets one address per VM from the launcher.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    #[serde(rename = "type", default = "default_net_type")]
    pub kind: String,
    /// Address ranges `a.b.c.d-a.b.c.e` or single addresses.
    #[serde(default)]
    pub static_ips: Vec<String>,
    #[serde(default)]
    pub netmask: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub dns: Vec<String>,
    #[serde(default)]
    pub default: Vec<String>,
    #[serde(default)]
    pub cloud_properties: Map<String, Value>,
}

fn default_net_type() -> String {
    "dynamic".into()
}

impl NetworkConfig {
    /// Every address of the static ranges, in order.
    pub fn addresses(&self) -> Result<Vec<Ipv4Addr>, ConfigError> {
        let mut out = Vec::new();
        for r in &self.static_ips {
            let (a, b) = match r.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (r.trim(), r.trim()),
            };
            let a: Ipv4Addr = a.parse().map_err(|_| invalid(format!("static_ips: {a:?} is not an IPv4 address")))?;
            let b: Ipv4Addr = b.parse().map_err(|_| invalid(format!("static_ips: {b:?} is not an IPv4 address")))?;
            let (a, b) = (u32::from(a), u32::from(b));
            if b < a || b - a > 65_535 {
                return Err(invalid(format!("static_ips: range {r:?} is reversed or larger than 65536 addresses")));
            }
            out.extend((a..=b).map(Ipv4Addr::from));
        }
        Ok(out)
    }
}

impl Pool {
    /// The lifetime in whole seconds (at least 1).
    pub fn lifetime_secs(&self) -> u64 {
        ((self.max_lifetime_minutes * 60.0).round() as u64).max(1)
    }

    /// The smallest flavor (by RAM, then CPU); a validated pool has at least one.
    pub fn smallest_flavor(&self) -> Option<(&str, &Flavor)> {
        self.flavors.iter().min_by_key(|(_, f)| (f.ram, f.cpu)).map(|(n, f)| (n.as_str(), f))
    }

    /// The flavor a job asks for (by tag), or the default one; `Err` names the unknown flavor.
    pub fn flavor_for(&self, requested: Option<&str>) -> Result<(&str, &Flavor), String> {
        let name = match requested.or(self.default_flavor.as_deref()) {
            Some(n) => n,
            None => return self.smallest_flavor().ok_or_else(|| "pool has no flavors".to_string()),
        };
        self.flavors.get_key_value(name).map(|(n, f)| (n.as_str(), f)).ok_or_else(|| {
            format!(
                "unknown flavor {name:?}; pool {} offers: {}",
                self.name,
                self.flavors.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Config::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.into(), source: Box::new(e) })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let key_ok = |s: &str| {
            !s.is_empty() && s.len() <= 80 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !key_ok(&self.launcher_id) {
            return Err(invalid("launcher_id must be 1 to 80 characters of [A-Za-z0-9_-]"));
        }
        if !key_ok(&self.buildkite.stack_key) {
            return Err(invalid("buildkite.stack_key must be 1 to 80 characters of [A-Za-z0-9_-]"));
        }
        if self.buildkite.token_file.is_some() == self.buildkite.token_env.is_some() {
            return Err(invalid("buildkite: set exactly one of token_file and token_env"));
        }
        if self.buildkite.queue.is_empty() == self.buildkite.queues.is_empty() {
            return Err(invalid(
                "buildkite: set exactly one of queue and queues (use _default for the cluster's default queue)",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (q, key) in self.queue_stacks() {
            if q.is_empty() || !seen.insert(q.clone()) {
                return Err(invalid(format!("buildkite.queues: {q:?} is empty or listed twice")));
            }
            if !key_ok(&key) {
                return Err(invalid(format!("buildkite.queues: the stack key {key:?} of queue {q:?} must be 1 to 80 characters of [A-Za-z0-9_-]")));
            }
        }
        if self.buildkite.queues.len() > 1 && self.buildkite.source == SourceKind::Rest {
            return Err(invalid("buildkite.queues: several queues need source = \"stacks\""));
        }
        for (key, url) in self.cleartext_endpoints() {
            if !self.buildkite.allow_http {
                return Err(invalid(format!(
                    "{key} {url:?} would send a token in clear text: use https://, or set allow_http = true in \
                     [buildkite] to accept that (http:// needs no opt-in only on this machine's loopback: \
                     127.0.0.1, [::1], localhost)"
                )));
            }
        }
        for (key, v) in
            [("endpoint", Some(&self.buildkite.endpoint)), ("agent_endpoint", self.buildkite.agent_endpoint.as_ref())]
        {
            let Some(v) = v else { continue };
            let ep = v.trim_end_matches('/');
            if !(ep.starts_with("https://") || ep.starts_with("http://")) || !ep.ends_with("/v3") {
                return Err(invalid(format!(
                    "buildkite.{key} {v:?} must be an http(s) URL ending in /v3, like https://agent.buildkite.com/v3"
                )));
            }
        }
        if let Some(r) = &self.buildkite.rest {
            if !(r.endpoint.starts_with("https://") || r.endpoint.starts_with("http://")) {
                return Err(invalid(format!(
                    "buildkite.rest.endpoint {:?} must be an http(s) URL, like https://api.buildkite.com",
                    r.endpoint
                )));
            }
        }
        for (q, _) in self.queue_stacks() {
            let served = format!("queue={q}");
            if !self.pools.iter().any(|p| p.tags.iter().any(|t| *t == served || t == "queue=*")) {
                return Err(invalid(format!(
                    "no pool has the tag {served}: the launcher would serve no job of queue {q:?}"
                )));
            }
        }
        if self.unhealthy_after_failed_polls == 0 {
            return Err(invalid("unhealthy_after_failed_polls must be at least 1"));
        }
        if !(1..=1000).contains(&self.buildkite.page_size) {
            return Err(invalid("buildkite.page_size must be 1 to 1000"));
        }
        if !(1..=3600).contains(&self.buildkite.reservation_expiry_seconds) {
            return Err(invalid("buildkite.reservation_expiry_seconds must be 1 to 3600"));
        }
        if self.buildkite.source == SourceKind::Rest {
            match &self.buildkite.rest {
                None => return Err(invalid("buildkite.source = \"rest\" needs a [buildkite.rest] section")),
                Some(r) if r.token_file.is_some() == r.token_env.is_some() => {
                    return Err(invalid("buildkite.rest: set exactly one of token_file and token_env"))
                }
                Some(_) => {}
            }
        }
        if !(1..=65536).contains(&self.listener.max_connections) || !(1..=3600).contains(&self.listener.timeout_seconds)
        {
            return Err(invalid("listener: max_connections must be 1 to 65536 and timeout_seconds 1 to 3600"));
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(format!("listen: {:?} is not host:port with a numeric host", self.listen)));
        }
        if self.breaker.failures == 0
            || self.breaker.open_seconds == 0
            || self.breaker.max_open_seconds < self.breaker.open_seconds
        {
            return Err(invalid(
                "breaker: failures and open_seconds must be positive, max_open_seconds at least open_seconds",
            ));
        }
        if self.poll_interval_ms < 100 {
            return Err(invalid("poll_interval_ms must be at least 100"));
        }
        if self.pools.is_empty() {
            return Err(invalid("no [[pool]] is configured"));
        }
        let mut names = std::collections::BTreeSet::new();
        for p in &self.pools {
            if !key_ok(&p.name) || !names.insert(p.name.as_str()) {
                return Err(invalid(format!("pool name {:?} is empty, not [A-Za-z0-9_-] or used twice", p.name)));
            }
            let ctx = |m: String| invalid(format!("pool {}: {m}", p.name));
            if p.cpi.is_empty() || !Path::new(&p.cpi[0]).is_absolute() {
                return Err(ctx("cpi must start with the absolute path of the CPI executable".into()));
            }
            for t in &p.tags {
                if crate::launcher::rules::Rule::parse(t).is_none() {
                    return Err(ctx(format!("tag {t:?} is not key=value")));
                }
            }
            if !p.tags.iter().any(|t| t.starts_with("queue=")) {
                return Err(ctx(
                    "tags need a queue=… tag (clustered agents can only acquire jobs of their queue)".into()
                ));
            }
            let sources = [p.stemcell.cid.is_some(), p.stemcell.image.is_some(), p.stemcell.tarball.is_some()];
            if sources.iter().filter(|x| **x).count() != 1 {
                return Err(ctx("stemcell needs exactly one of cid, tarball and image".into()));
            }
            if p.flavors.is_empty() {
                return Err(ctx("needs at least one [pool.flavors.NAME]".into()));
            }
            for (n, f) in &p.flavors {
                if f.cpu == 0 || f.ram == 0 {
                    return Err(ctx(format!("flavor {n}: cpu and ram must be positive")));
                }
            }
            if let Some(d) = &p.default_flavor {
                if !p.flavors.contains_key(d) {
                    return Err(ctx(format!("default_flavor {d:?} is not one of the flavors")));
                }
            }
            if p.networks.is_empty() {
                return Err(ctx("needs at least one network".into()));
            }
            for (n, net) in &p.networks {
                if !matches!(net.kind.as_str(), "manual" | "dynamic") {
                    return Err(ctx(format!("network {n}: type must be manual or dynamic")));
                }
                let addrs = net.addresses().map_err(|e| ctx(format!("network {n}: {e}")))?;
                if !addrs.is_empty() && (net.kind != "manual" || net.netmask.is_none()) {
                    return Err(ctx(format!("network {n}: static_ips need type = \"manual\" and a netmask")));
                }
            }
            if p.networks.values().filter(|n| !n.static_ips.is_empty()).count() > 1 {
                return Err(ctx("only one network per pool can have static_ips".into()));
            }
            for (what, argv) in [("power_on", &p.power_on), ("power_off", &p.power_off)] {
                if !argv.is_empty() && !Path::new(&argv[0]).is_absolute() {
                    return Err(ctx(format!(
                        "{what} must start with the absolute path of the command (it runs as argv, not through a shell)"
                    )));
                }
            }
            if !p.power_off.is_empty() && p.power_on.is_empty() {
                return Err(ctx("power_off needs power_on (a host powered off must be woken again)".into()));
            }
            if p.boot_grace_seconds == 0 || p.idle_power_off_seconds == 0 {
                return Err(ctx("boot_grace_seconds and idle_power_off_seconds must be positive".into()));
            }
            if p.cpi_timeout_seconds == 0 {
                return Err(ctx("cpi_timeout_seconds must be positive".into()));
            }
            if p.limits.max_concurrent_creates == 0 {
                return Err(ctx("limits.max_concurrent_creates must be at least 1".into()));
            }
            if p.create_attempts == 0 || !(p.max_lifetime_minutes > 0.0 && p.max_lifetime_minutes < 1e7) {
                return Err(ctx("create_attempts and max_lifetime_minutes must be positive".into()));
            }
        }
        Ok(())
    }

    /// The Buildkite endpoints (`buildkite.endpoint`, `buildkite.agent_endpoint`, `buildkite.rest.endpoint`)
    /// that are plain `http://` to a host other than this machine's loopback.
    pub fn cleartext_endpoints(&self) -> Vec<(&'static str, &str)> {
        let b = &self.buildkite;
        [
            ("buildkite.endpoint", Some(b.endpoint.as_str())),
            ("buildkite.agent_endpoint", b.agent_endpoint.as_deref()),
            ("buildkite.rest.endpoint", b.rest.as_ref().map(|r| r.endpoint.as_str())),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .filter(|(_, v)| v.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("http://")) && !loopback_url(v))
        .collect()
    }

    /// What an operator should know about a config that is accepted: `http://` endpoints allowed by
    /// `allow_http`.
    pub fn warnings(&self) -> Vec<String> {
        self.cleartext_endpoints()
            .into_iter()
            .map(|(k, v)| {
                format!("{k} {v:?} is plain http: the token crosses the network in clear text (allow_http = true)")
            })
            .collect()
    }

    /// The queues this launcher serves with their stack keys: `queue` with `stack_key`, or every one of
    /// `queues` with `<stack_key>-<queue>` (one queue in `queues` keeps `stack_key` as it is).
    pub fn queue_stacks(&self) -> Vec<(String, String)> {
        let b = &self.buildkite;
        if b.queues.is_empty() {
            return vec![(b.queue.clone(), b.stack_key.clone())];
        }
        if b.queues.len() == 1 {
            return vec![(b.queues[0].clone(), b.stack_key.clone())];
        }
        b.queues.iter().map(|q| (q.clone(), format!("{}-{q}", b.stack_key))).collect()
    }

    /// Reads the Buildkite token named by the config. The value is only ever passed to the HTTP client.
    pub fn token(&self) -> Result<String, ConfigError> {
        read_token(self.buildkite.token_file.as_deref(), self.buildkite.token_env.as_deref())
    }

    /// Reads the REST API token (REST source only).
    pub fn rest_token(&self) -> Result<String, ConfigError> {
        match &self.buildkite.rest {
            Some(r) => read_token(r.token_file.as_deref(), r.token_env.as_deref()),
            None => Err(invalid("no [buildkite.rest] section")),
        }
    }

    /// The agent API base the VMs' agents are given.
    pub fn agent_endpoint(&self) -> String {
        self.buildkite.agent_endpoint.clone().unwrap_or_else(|| self.buildkite.endpoint.clone())
    }

    /// The URL that VMs use to reach the assignment endpoint.
    pub fn public_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{}", self.listen))
            .trim_end_matches('/')
            .to_string()
    }

    /// What `check-config` checks beyond the file itself: every CPI is an executable file, every stemcell
    /// file exists (a tarball has an `image`), the TLS certificate and key load, and the listen address is free.
    pub fn check_local(&self) -> Result<(), ConfigError> {
        use std::os::unix::fs::PermissionsExt;
        for p in &self.pools {
            let cpi = Path::new(&p.cpi[0]);
            let meta =
                std::fs::metadata(cpi).map_err(|e| invalid(format!("pool {}: cpi {}: {e}", p.name, cpi.display())))?;
            if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
                return Err(invalid(format!("pool {}: cpi {} is not executable", p.name, cpi.display())));
            }
            for (what, argv) in [("power_on", &p.power_on), ("power_off", &p.power_off)] {
                let Some(cmd) = argv.first() else { continue };
                let ok = std::fs::metadata(cmd).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
                if !ok {
                    return Err(invalid(format!("pool {}: {what} command {cmd} is not an executable file", p.name)));
                }
            }
            if let Some(t) = &p.stemcell.tarball {
                crate::launcher::stemcell::probe(t)
                    .map_err(|e| invalid(format!("pool {}: {}", p.name, crate::launcher::log::chain(&e))))?;
            }
            if let Some(i) = &p.stemcell.image {
                std::fs::File::open(i)
                    .map_err(|e| invalid(format!("pool {}: stemcell image {}: {e}", p.name, i.display())))?;
            }
        }
        if let Some(t) = &self.tls {
            crate::launcher::server::tls_config(&t.cert_file, &t.key_file)
                .map_err(|e| invalid(format!("tls: {}", crate::launcher::log::chain(&e))))?;
        }
        std::net::TcpListener::bind(&self.listen)
            .map_err(|e| invalid(format!("listen: cannot bind {}: {e} (is another launcher running?)", self.listen)))?;
        Ok(())
    }
}

/// Whether a URL's host is this machine's loopback (127.0.0.0/8, ::1, `localhost`): what is sent there does
/// not leave the machine.
pub fn loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A token file's contents, when only its owner (the launcher's user or root) may read or change it.
fn read_token_file(f: &Path) -> Result<String, ConfigError> {
    use std::os::unix::fs::MetadataExt;
    let path = f.display().to_string();
    let meta = std::fs::metadata(f).map_err(|e| ConfigError::Token(path.clone(), e))?;
    // SAFETY: geteuid has no preconditions and cannot fail
    let me = unsafe { libc::geteuid() };
    if meta.mode() & 0o077 != 0 || (meta.uid() != me && meta.uid() != 0) {
        return Err(ConfigError::OpenTokenFile { path, mode: meta.mode() & 0o7777, uid: meta.uid() });
    }
    std::fs::read_to_string(f).map_err(|e| ConfigError::Token(path, e))
}

fn read_token(file: Option<&Path>, env: Option<&str>) -> Result<String, ConfigError> {
    let (token, from) = match (file, env) {
        (Some(f), _) => (read_token_file(f)?, f.display().to_string()),
        (None, Some(v)) => (
            std::env::var(v).map_err(|_| {
                ConfigError::Token(
                    format!("${v}"),
                    std::io::Error::new(std::io::ErrorKind::NotFound, "variable not set"),
                )
            })?,
            format!("${v}"),
        ),
        (None, None) => return Err(invalid("no token source")),
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(ConfigError::EmptyToken(from));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
launcher_id = "t1"
ledger_dir = "/tmp/l"
listen = "127.0.0.1:0"
[buildkite]
token_env = "BK"
queue = "vm"
stack_key = "s1"
[[pool]]
name = "linux"
tags = ["queue=vm", "os=linux"]
cpi = ["/bin/cpi", "--config", "/etc/cpi.json"]
stemcell = { cid = "sc-1" }
networks.default = { type = "manual", static_ips = ["10.0.0.10-10.0.0.12", "10.0.0.20"], netmask = "255.255.255.0", gateway = "10.0.0.1" }
flavors.small = { cpu = 1, ram = 512 }
flavors.large = { cpu = 4, ram = 4096, disk = 10240 }
"#;

    fn parse(t: &str) -> Result<Config, ConfigError> {
        Config::parse(t, Path::new("x.toml"))
    }

    #[test]
    fn agent_endpoint_defaults_to_endpoint_and_must_be_an_agent_api_url() {
        assert_eq!(parse(GOOD).unwrap().agent_endpoint(), "https://agent.buildkite.com/v3");
        let with =
            GOOD.replace("stack_key = \"s1\"", "stack_key = \"s1\"\nagent_endpoint = \"https://10.0.2.2:8443/v3\"");
        assert_eq!(parse(&with).unwrap().agent_endpoint(), "https://10.0.2.2:8443/v3");
        let bad = GOOD.replace("stack_key = \"s1\"", "stack_key = \"s1\"\nagent_endpoint = \"10.0.2.2:8080\"");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.contains("buildkite.agent_endpoint"), "{e}");
    }

    #[test]
    fn good_config_parses_with_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.buildkite.endpoint, "https://agent.buildkite.com/v3");
        assert_eq!(c.pools[0].limits.max_concurrent_creates, 2);
        assert_eq!(c.pools[0].smallest_flavor().unwrap().0, "small");
        assert_eq!(c.pools[0].flavor_for(None).unwrap().0, "small");
        assert_eq!(c.pools[0].flavor_for(Some("large")).unwrap().1.cpu, 4);
        let e = c.pools[0].flavor_for(Some("huge")).unwrap_err();
        assert!(e.contains("\"huge\"") && e.contains("large, small"), "{e}");
        let ips = c.pools[0].networks["default"].addresses().unwrap();
        assert_eq!(
            ips.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
            ["10.0.0.10", "10.0.0.11", "10.0.0.12", "10.0.0.20"]
        );
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases = [
            (GOOD.replace("stack_key = \"s1\"", "stack_key = \"s 1\""), "stack_key"),
            (
                GOOD.replace("token_env = \"BK\"", "token_env = \"BK\"\ntoken_file = \"/x\""),
                "exactly one of token_file",
            ),
            (GOOD.replace("\"/bin/cpi\"", "\"cpi\""), "absolute path"),
            (GOOD.replace("\"queue=vm\", ", ""), "queue="),
            (GOOD.replace("10.0.0.12\"", "10.0.0.9\""), "reversed"),
            (GOOD.replace("stemcell = { cid = \"sc-1\" }", "stemcell = { }"), "exactly one of cid, tarball and image"),
            (GOOD.replace("ram = 512", "ram = 0"), "positive"),
            (GOOD.replace("listen = \"127.0.0.1:0\"", "listen = \"localhost\""), "listen"),
            (GOOD.replace("launcher_id", "launcher_idx"), "unknown field"),
        ];
        for (text, want) in cases {
            let e = parse(&text).unwrap_err();
            let msg = format!("{e}: {}", std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default());
            assert!(msg.contains(want), "want {want:?} in {msg:?}");
        }
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let c = parse(include_str!("../../examples/launcher/agent-launcher.toml")).unwrap();
        assert_eq!(c.pools.len(), 2);
        assert_eq!(c.pools[0].networks["default"].addresses().unwrap().len(), 50);
        assert_eq!(c.pools[0].flavor_for(None).unwrap().0, "small");
    }

    /// The example says it shows every key: it does, and the docs say what new users trip over.
    #[test]
    fn the_example_and_the_docs_show_every_key() {
        let example = include_str!("../../examples/launcher/agent-launcher.toml");
        let keys = [
            "launcher_id",
            "ledger_dir",
            "listen",
            "public_url",
            "poll_interval_ms",
            "on_shutdown",
            "placement",
            "unhealthy_after_failed_polls",
            "tls",
            "cert_file",
            "key_file",
            "[listener]",
            "max_connections",
            "timeout_seconds",
            "allow_http",
            "[limits]",
            "[buildkite]",
            "source",
            "endpoint",
            "agent_endpoint",
            "token_file",
            "token_env",
            "queue",
            "queues",
            "stack_key",
            "reservation_expiry_seconds",
            "page_size",
            "max_pages",
            "timeout_ms",
            "[buildkite.rest]",
            "organization",
            "lookback_hours",
            "[[pool]]",
            "name",
            "tags",
            "cpi",
            "stemcell",
            "tarball",
            "image",
            "api_version",
            "cloud_properties",
            "networks",
            "static_ips",
            "flavors",
            "default_flavor",
            "flavor_tag",
            "limits",
            "max_concurrent_creates",
            "reserve_smallest",
            "warm",
            "max_lifetime_minutes",
            "boot_timeout_seconds",
            "create_attempts",
            "cpi_timeout_seconds",
            "[breaker]",
            "power_on",
            "power_off",
            "boot_grace_seconds",
            "idle_power_off_seconds",
            "failures",
            "open_seconds",
            "max_open_seconds",
        ];
        for k in keys {
            assert!(example.contains(k), "the example config does not show {k}");
        }
        let docs = include_str!("../../docs/launcher.md");
        for want in [
            "must end in `/v3`",
            "cleared environment",
            "stack_key",
            "drain",
            "warm VMs",
            "unhealthy_after_failed_polls",
            "--online",
        ] {
            assert!(docs.contains(want), "docs/launcher.md does not say {want:?}");
        }
    }

    #[test]
    fn several_queues_get_a_stack_each() {
        let two = GOOD
            .replace("queue = \"vm\"", "queues = [\"vm\", \"gpu\"]")
            .replace("\"queue=vm\", \"os=linux\"", "\"queue=*\", \"os=linux\"");
        let c = parse(&two).unwrap();
        assert_eq!(
            c.queue_stacks(),
            [("vm".to_string(), "s1-vm".to_string()), ("gpu".to_string(), "s1-gpu".to_string())]
        );
        assert_eq!(parse(GOOD).unwrap().queue_stacks(), [("vm".to_string(), "s1".to_string())]);
        for (text, want) in [
            (GOOD.replace("queue = \"vm\"", "queue = \"vm\"\nqueues = [\"a\"]"), "exactly one of queue and queues"),
            (GOOD.replace("queue = \"vm\"", "queues = [\"vm\", \"gpu\"]"), "queue=gpu"),
            (GOOD.replace("queue = \"vm\"", "queues = [\"vm\", \"vm\"]"), "listed twice"),
            (GOOD.replace("queue = \"vm\"", "queues = [\"vm\", \"a b\"]"), "stack key"),
        ] {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(want), "want {want:?} in {e:?}");
        }
    }

    #[test]
    fn power_commands_are_checked() {
        let with = |extra: &str| {
            parse(&GOOD.replace(
                "flavors.small = { cpu = 1, ram = 512 }",
                &format!("flavors.small = {{ cpu = 1, ram = 512 }}\n{extra}"),
            ))
        };
        let e = with("power_off = [\"/usr/bin/true\"]").unwrap_err().to_string();
        assert!(e.contains("power_off needs power_on"), "{e}");
        let e = with("power_on = [\"wakeonlan\", \"aa:bb\"]").unwrap_err().to_string();
        assert!(e.contains("absolute path"), "{e}");
        let e = with("power_on = [\"/usr/bin/true\"]\nidle_power_off_seconds = 0").unwrap_err().to_string();
        assert!(e.contains("must be positive"), "{e}");
        let mut c = with("power_on = [\"/no/such/wakeonlan\"]").unwrap();
        assert_eq!(c.pools[0].boot_grace_seconds, 300);
        assert_eq!(c.pools[0].idle_power_off_seconds, 1800);
        c.pools[0].cpi = vec!["/bin/true".into()];
        let e = c.check_local().unwrap_err().to_string();
        assert!(e.contains("power_on command /no/such/wakeonlan"), "{e}");
    }

    #[test]
    fn token_comes_from_file_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tok");
        std::fs::write(&f, "bkct_secret\n").unwrap();
        let mut c = parse(GOOD).unwrap();
        c.buildkite.token_env = None;
        c.buildkite.token_file = Some(f.clone());
        // written with the umask's 0644: others may read it
        let e = c.token().unwrap_err();
        assert!(matches!(e, ConfigError::OpenTokenFile { mode: 0o644, .. }), "{e}");
        assert!(e.to_string().contains(&format!("chmod 600 {}", f.display())), "{e}");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(c.token().unwrap(), "bkct_secret");
        std::fs::write(&f, "  \n").unwrap();
        assert!(matches!(c.token(), Err(ConfigError::EmptyToken(_))));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(c.token(), Err(ConfigError::OpenTokenFile { .. })));
    }

    #[test]
    fn plain_http_endpoints_need_loopback_or_allow_http() {
        for url in ["http://127.0.0.1:8080/v3", "http://127.9.9.9/v3", "http://[::1]:80/v3", "HTTP://LocalHost/v3"] {
            assert!(loopback_url(url), "{url}");
        }
        for url in [
            "http://10.0.2.2:8080/v3",
            "http://127.0.0.1@evil.example/v3",
            "http://localhost.example/v3",
            "http://[::2]/v3",
            "http://128.0.0.1/v3",
        ] {
            assert!(!loopback_url(url), "{url}");
        }
        let with = |line: &str| parse(&GOOD.replace("stack_key = \"s1\"", &format!("stack_key = \"s1\"\n{line}")));
        assert!(with("endpoint = \"http://127.0.0.1:9/v3\"").unwrap().warnings().is_empty());
        assert!(with("endpoint = \"https://agent.example/v3\"").unwrap().warnings().is_empty());
        for line in [
            "endpoint = \"http://agent.example/v3\"",
            "agent_endpoint = \"http://10.0.2.2:8080/v3\"",
            "source = \"rest\"\nrest = { organization = \"o\", token_env = \"R\", endpoint = \"http://api.example\" }",
        ] {
            let e = with(line).unwrap_err().to_string();
            assert!(e.contains("clear text") && e.contains("allow_http = true"), "{line}: {e}");
            let c = with(&format!("allow_http = true\n{line}")).unwrap();
            assert_eq!(c.warnings().len(), 1, "{line}");
            assert!(c.warnings()[0].contains("clear text"), "{:?}", c.warnings());
        }
    }
}
