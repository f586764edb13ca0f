//! vmcpi: a BOSH CPI for the hypervisors that teams run themselves.
//!
//! Crate map (each module opens with what it owns):
//! - [`rpc`]: the wire protocol (request in, response out) and the one place errors become BOSH errors.
//! - [`config`]: `cpi.json`, validated once, with the director's context overlay.
//! - [`ids`]: CID newtypes.
//! - [`agent_settings`]: the settings document the BOSH agent reads.
//! - [`medium`]: settings media (CD-ROM `ENV` ISO, OpenStack config drive).
//! - [`iso9660`]: the ISO 9660 writer and reader behind them (Rock Ridge + Joliet, byte-stable).
//! - [`stemcell`]: reading stemcell images (OpenStack `root.img`, vSphere OVF + VMDK).
//! - [`driver`]: the `Driver` trait and the backends.
//! - [`compat`]: bosh-vmrun-cpi's setting names, read as vmcpi's.
//! - [`exec`]: running external programs as argv, with failures that keep their output.
//! - [`launcher`]: the `agent-launcher` daemon (one VM per CI job through any BOSH CPI).
//! - [`transport`]: reaching the hypervisor host, locally or over SSH (argv, files, locks).
//! - [`logger`]: stderr + `log` logging with secret redaction.
//! - [`redact`]: the one redactor (whole values) of vmcpi and agent-launcher.
pub mod agent_settings;
pub mod compat;
pub mod config;
pub mod diskimage;
pub mod driver;
pub mod encoding;
pub mod error;
pub mod exec;
pub mod ids;
pub mod inflight;
pub mod iso9660;
pub mod launcher;
pub mod logger;
pub mod medium;
pub mod redact;
pub mod rfc3339;
pub mod rpc;
pub mod stemcell;
pub mod transport;
