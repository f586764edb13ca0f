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
//! - [`libvirt_rpc`]: libvirt's RPC protocol spoken directly (unix socket, SSH, TLS; no virsh, no libvirt.so).
//! - [`inflight`]: in-flight markers of creates, and the reaping of what killed creates left.
//! - [`statedir`]: state directories on the CPI's host, trusted only when private to this user.
//! - [`transport`]: reaching the hypervisor host, locally or over SSH (argv, files, locks).
//! - [`killpoint`]: named steps at which a test (debug builds only) makes the process die with SIGKILL.
//! - [`logger`]: stderr + `log` logging with secret redaction.
//! - [`redact`]: the one redactor (whole values) of vmcpi and agent-launcher.
//! - [`timing`]: where a call's time goes (the debug log's `timing:` line).
//! - [`vocabulary`]: the words of vmcpi's own messages (collected by build.rs), which the log's safety net never masks.
//! - [`glob`]: the one wildcard matcher (`*`, and `?` where asked) of vmcpi and agent-launcher.
//! - [`secret`]: `Secret`, the type of every password, key and token a config holds (prints `<redacted>`).
pub mod agent_settings;
pub mod compat;
pub mod config;
pub mod diskimage;
pub mod driver;
pub mod encoding;
pub mod error;
pub mod exec;
pub mod glob;
pub mod ids;
pub mod inflight;
pub mod iso9660;
pub mod killpoint;
pub mod launcher;
pub mod libvirt_rpc;
pub mod logger;
pub mod medium;
pub mod redact;
pub mod rfc3339;
pub mod rpc;
pub mod secret;
pub mod statedir;
pub mod stemcell;
pub mod timing;
pub mod transport;
pub mod vocabulary;
