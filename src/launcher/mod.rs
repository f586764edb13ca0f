//! `agent-launcher`: one fresh VM per CI job, made through any BOSH CPI executable.
//!
//! - [`clock`]: the wall clock (a leaf every module may use).
//! - [`config`]: the TOML config, validated once.
//! - [`source`]: the seam between the loop and a CI system (demand, reservations, job states, what a VM is
//!   granted), and the job model.
//! - [`buildkite`]: Buildkite as a source (Stacks API, REST API) and its HTTP rules (retries, rate limits).
//! - [`rules`]: agent query rule matching, as Buildkite does it.
//! - [`breaker`]: per-pool circuit breakers (failover while a pool's CPI keeps failing).
//! - [`plan`]: which job starts in which pool, with flavors, capacity, static IPs and placement.
//! - [`power`]: host power management (power_on/power_off commands, idle power-off).
//! - [`cpi`]: the CPI client, one process per call like the BOSH director, spooled to disk.
//! - [`ledger`]: the fsync'd intent log that makes restarts leak-free.
//! - [`daemon`]: the loop and the recovery on start, in rooms (one record per pool; a file per phase).
//! - [`http`] and [`metrics`]: `/metrics`, `/healthz` and the VM assignment endpoint; [`server`]: the
//!   HTTP/1.1 server under them (hyper, TLS, limits, a listener that survives its failures).
//! - [`status`]: the human-readable views (`status`, `--dry-run`).
//! - [`stemcell`]: stemcell tarballs (the `image` and the `cloud_properties` of `stemcell.MF`).
pub mod breaker;
pub mod buildkite;
pub mod clock;
pub mod config;
pub mod cpi;
pub mod daemon;
pub mod http;
pub mod ledger;
pub mod log;
pub mod metrics;
pub mod plan;
pub mod power;
pub mod rules;
pub mod server;
pub mod source;
pub mod status;
pub mod stemcell;
pub mod tracked;
