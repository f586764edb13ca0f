//! The CPI: what `vmcpi` is made of (each module opens with what it owns).
//! - [`rpc`]: the wire protocol (request in, response out) and the one place errors become BOSH errors.
//! - [`config`]: `cpi.json`, validated once, with the director's context overlay.
//! - [`agent_settings`]: the settings document the BOSH agent reads.
//! - [`medium`]: settings media (CD-ROM `ENV` ISO, OpenStack config drive).
//! - [`iso9660`]: the ISO 9660 writer and reader behind them (Rock Ridge + Joliet, byte-stable).
//! - [`stemcell`]: reading stemcell images (OpenStack `root.img`, vSphere OVF + VMDK).
//! - [`diskimage`]: inspecting and reading disk images (qcow2, VMDK, raw) before anything uses them.
//! - [`driver`]: the `Driver` trait, the one create orchestration and CID check, and the backends.
//! - [`error`]: the one error a driver reports (kind, retry flag, message, cause).
//! - [`compat`]: bosh-vmrun-cpi's setting names, read as vmcpi's.
//! - [`exec`]: running external programs as argv, with failures that keep their output (used by the
//!   transports only).
//! - [`libvirt_rpc`]: libvirt's RPC protocol spoken directly (unix socket, SSH, TLS; no virsh, no libvirt.so).
//! - [`inflight`]: in-flight markers of creates, and the reaping of what killed creates left.
//! - [`statedir`]: state directories on the CPI's host, trusted only when private to this user.
//! - [`transport`]: reaching the hypervisor host, locally or over SSH (argv, files, locks).
//! - [`killpoint`]: named steps at which a test (debug builds only) makes the process die with SIGKILL.
//! - [`timing`]: where a call's time goes (the debug log's `timing:` line).
pub mod agent_settings;
pub mod compat;
pub mod config;
pub mod diskimage;
pub mod driver;
pub mod error;
pub mod exec;
pub mod inflight;
pub mod iso9660;
pub mod killpoint;
pub mod libvirt_rpc;
pub mod medium;
pub mod rpc;
pub mod statedir;
pub mod stemcell;
pub mod timing;
pub mod transport;
