//! A client for libvirt's RPC protocol, spoken directly: no libvirt library, no `virsh`, no child process
//! on this machine (over SSH the host runs its own `virt-ssh-helper`, as libvirt's `qemu+ssh` does).
//!
//! - [`xdr`]: the XDR codec, with the protocol's limits on everything read;
//! - [`packet`]: framing (length word, `virNetMessageHeader`), programs and the 32 MiB message limit;
//! - [`proto`]: the procedures (numbers from remote_protocol.x / qemu_protocol.x) and their structs;
//! - [`error`]: libvirt's `remote_error` (code, domain, message) and the connection's errors;
//! - [`uri`]: `qemu:///system`, `qemu+ssh://…`, `qemu+tls://…`, parameters checked;
//! - [`transport`]: unix socket, SSH channel, TLS, behind one trait;
//! - [`client`]: connect, authenticate, open; one typed method per procedure;
//! - [`stream`]: volume upload (sparse, with holes) and download.
//!
//! ```no_run
//! # fn main() -> Result<(), vmcpi::libvirt_rpc::Error> {
//! use vmcpi::libvirt_rpc::Client;
//! let c = Client::connect("qemu:///system")?;
//! if let Some(dom) = c.domain_lookup_opt("vm-1")? {
//!     println!("{:?}", c.domain_state(&dom)?);
//! }
//! # Ok(()) }
//! ```
pub mod client;
pub mod error;
pub mod fake;
pub mod packet;
pub mod proto;
pub mod stream;
pub mod transport;
pub mod uri;
pub mod xdr;

pub use client::{
    flags, BlockCopyParams, BlockJobInfo, Client, Connector, DomainState, MetadataKind, PoolInfo, PoolState, VolInfo,
};
pub use error::{code, Error, RemoteError, Result};
pub use proto::{Domain, StoragePool, StorageVol};
pub use stream::{Chunk, Download, Upload};
pub use transport::Options;
