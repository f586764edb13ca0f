//! The launcher config's types, their defaults, and what is derived from them (pool ids, stack keys, the
//! tokens, URLs). Reading and checking a file is in [`super`] and [`super::validate`].
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

pub(super) fn invalid(msg: impl Into<String>) -> ConfigError {
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

/// A pool's place in the config (the order of the `[[pool]]` tables): the typed index of the launcher's
/// per-pool records and plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolId(pub usize);

impl std::ops::Index<PoolId> for Vec<Pool> {
    type Output = Pool;
    fn index(&self, id: PoolId) -> &Pool {
        &self[id.0]
    }
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
    /// The pools' ids, in config order.
    pub fn pool_ids(&self) -> impl Iterator<Item = PoolId> {
        (0..self.pools.len()).map(PoolId)
    }

    /// The id of the pool named `name`.
    pub fn pool_id(&self, name: &str) -> Option<PoolId> {
        self.pools.iter().position(|p| p.name == name).map(PoolId)
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
