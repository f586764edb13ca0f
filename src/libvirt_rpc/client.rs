//! The client: one connection to a libvirt daemon, calls made one at a time (a call's reply before the
//! next call), each procedure a typed method.
//!
//! Connecting does what libvirt's remote driver does: `AUTH_LIST` (none and polkit are spoken; a daemon
//! that demands SASL gets a clear error), then `CONNECT_OPEN` with the driver URI. A connection that
//! breaks is dropped; the next call makes a new one (at most [`MAX_CONNECTIONS`] per client, so a failed
//! create can still clean up, as the SSH transport allows). Keepalive pings (only sent by daemons to
//! clients that ask for them) are answered; events (never registered) are ignored.
use super::error::{Error, RemoteError, Result};
use super::packet::{
    self, Header, Kind, Packet, PacketError, Status, KEEPALIVE_PING, KEEPALIVE_PONG, KEEPALIVE_PROGRAM,
};
use super::proto::{self as p, auth, Domain, Proc, StoragePool, StorageVol};
use super::transport::{self, Options, Transport};
use super::uri::Uri;
use super::xdr::{from_bytes, to_bytes, Decode, Encode, List};
use std::io;
use std::sync::{Mutex, MutexGuard};

/// How many connections one client makes at most: the first, and one after a loss.
pub const MAX_CONNECTIONS: u32 = 2;

/// How many unrelated messages (events, stale stream packets) a call skips before it gives up.
const MAX_SKIPPED: u32 = 100_000;

/// Makes a new connection (the first, and the one after a loss).
pub type Connector = Box<dyn Fn(&Options) -> Result<Box<dyn Transport>> + Send + Sync>;

/// A libvirt daemon, reached through a [`Transport`].
pub struct Client {
    connector: Option<Connector>,
    name: String,
    opts: Options,
    pub(super) state: Mutex<State>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("name", &self.name).field("reconnects", &self.connector.is_some()).finish()
    }
}

pub(super) struct State {
    pub(super) io: Option<Box<dyn Transport>>,
    pub(super) target: String,
    serial: u32,
    opened: u32,
}

impl State {
    /// The serial of the last call (a stream's packets carry the serial of the call that opened it).
    pub(super) fn serial(&self) -> u32 {
        self.serial
    }
}

/// `virDomainState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainState {
    NoState,
    Running,
    Blocked,
    Paused,
    Shutdown,
    Shutoff,
    Crashed,
    PmSuspended,
    Other(i32),
}

impl DomainState {
    pub fn from_i32(v: i32) -> DomainState {
        match v {
            0 => DomainState::NoState,
            1 => DomainState::Running,
            2 => DomainState::Blocked,
            3 => DomainState::Paused,
            4 => DomainState::Shutdown,
            5 => DomainState::Shutoff,
            6 => DomainState::Crashed,
            7 => DomainState::PmSuspended,
            v => DomainState::Other(v),
        }
    }

    /// Whether a QEMU process exists for the domain (running, blocked, paused, shutting down, suspended).
    pub fn is_active(self) -> bool {
        !matches!(self, DomainState::Shutoff | DomainState::NoState | DomainState::Crashed)
    }
}

/// `virStoragePoolState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolState {
    Inactive,
    Building,
    Running,
    Degraded,
    Inaccessible,
    Other(u32),
}

/// `virStoragePoolInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolInfo {
    pub state: PoolState,
    pub capacity: u64,
    pub allocation: u64,
    pub available: u64,
}

/// `virStorageVolInfo`: `kind` is `virStorageVolType` (0 file, 1 block, 2 dir, 3 network, 4 netdir, 5 ploop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolInfo {
    pub kind: i32,
    pub capacity: u64,
    pub allocation: u64,
}

/// `virDomainBlockJobInfo`: `kind` is `virDomainBlockJobType` (2 copy); the job is ready (a copy mirrors)
/// when `cur == end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockJobInfo {
    pub kind: i32,
    pub bandwidth: u64,
    pub cur: u64,
    pub end: u64,
}

/// `virDomainMetadataType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataKind {
    Description = 0,
    Title = 1,
    /// An element of its own namespace under `<metadata>`: needs a key (prefix) and a URI.
    Element = 2,
}

/// The typed parameters of `virDomainBlockCopy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockCopyParams {
    /// Bytes per second (`bandwidth`).
    pub bandwidth: Option<u64>,
    /// `granularity`, a power of two.
    pub granularity: Option<u32>,
    /// `buf-size`.
    pub buf_size: Option<u64>,
}

/// libvirt's flag values (libvirt-domain.h, libvirt-storage.h, libvirt-qemu.h) for the calls here.
pub mod flags {
    /// `virDomainModificationImpact` / `virDomainDeviceModifyFlags` (attach, detach, update, metadata).
    pub const AFFECT_CURRENT: u32 = 0;
    pub const AFFECT_LIVE: u32 = 1;
    pub const AFFECT_CONFIG: u32 = 2;
    /// `VIR_DOMAIN_DEVICE_MODIFY_FORCE` (update device: eject a locked CD-ROM).
    pub const DEVICE_MODIFY_FORCE: u32 = 4;
    /// `virDomainUndefineFlagsValues`.
    pub const UNDEFINE_MANAGED_SAVE: u32 = 1;
    pub const UNDEFINE_SNAPSHOTS_METADATA: u32 = 2;
    pub const UNDEFINE_NVRAM: u32 = 4;
    pub const UNDEFINE_KEEP_NVRAM: u32 = 8;
    pub const UNDEFINE_CHECKPOINTS_METADATA: u32 = 16;
    /// `virDomainXMLFlags`.
    pub const XML_SECURE: u32 = 1;
    pub const XML_INACTIVE: u32 = 2;
    /// `virDomainDefineFlags`.
    pub const DEFINE_VALIDATE: u32 = 1;
    /// `virConnectListAllDomainsFlags`.
    pub const LIST_DOMAINS_ACTIVE: u32 = 1;
    pub const LIST_DOMAINS_INACTIVE: u32 = 2;
    pub const LIST_DOMAINS_PERSISTENT: u32 = 4;
    pub const LIST_DOMAINS_TRANSIENT: u32 = 8;
    pub const LIST_DOMAINS_RUNNING: u32 = 16;
    pub const LIST_DOMAINS_PAUSED: u32 = 32;
    pub const LIST_DOMAINS_SHUTOFF: u32 = 64;
    /// `virStorageVolCreateFlags`.
    pub const VOL_CREATE_PREALLOC_METADATA: u32 = 1;
    pub const VOL_CREATE_REFLINK: u32 = 2;
    pub const VOL_CREATE_VALIDATE: u32 = 4;
    /// `virStorageVolResizeFlags`.
    pub const VOL_RESIZE_ALLOCATE: u32 = 1;
    pub const VOL_RESIZE_DELTA: u32 = 2;
    pub const VOL_RESIZE_SHRINK: u32 = 4;
    /// `virStorageVolUploadFlags` / `virStorageVolDownloadFlags`.
    pub const VOL_SPARSE_STREAM: u32 = 1;
    /// `virStoragePoolBuildFlags`.
    pub const POOL_BUILD_NEW: u32 = 0;
    pub const POOL_BUILD_NO_OVERWRITE: u32 = 4;
    /// `virDomainBlockCopyFlags`.
    pub const BLOCK_COPY_SHALLOW: u32 = 1;
    pub const BLOCK_COPY_REUSE_EXT: u32 = 2;
    pub const BLOCK_COPY_TRANSIENT_JOB: u32 = 4;
    /// `virDomainBlockJobAbortFlags`.
    pub const BLOCK_JOB_ABORT_ASYNC: u32 = 1;
    pub const BLOCK_JOB_ABORT_PIVOT: u32 = 2;
    /// `VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP`.
    pub const MONITOR_HMP: u32 = 1;
    /// `virDomainQemuAgentCommandTimeoutValues` (else seconds).
    pub const AGENT_TIMEOUT_BLOCK: i32 = -2;
    pub const AGENT_TIMEOUT_DEFAULT: i32 = -1;
    pub const AGENT_TIMEOUT_NOWAIT: i32 = 0;
}

impl Client {
    /// Connects to `uri` (see [`super::uri`]) and opens it; errors come at once.
    pub fn connect(uri: &str) -> Result<Client> {
        Client::connect_with(uri, Options::default())
    }

    pub fn connect_with(uri: &str, opts: Options) -> Result<Client> {
        let parsed = Uri::parse(uri)?;
        let (name, target) = (parsed.server_name(), parsed.target());
        Client::with_connector(&name, &target, opts, Box::new(move |o: &Options| transport::connect(&parsed, o)))
    }

    /// A client whose connections `connector` makes (any [`Transport`]), opening `name`
    /// (`qemu:///system`); `target` names the peer in messages until the first connection names itself.
    /// Connects at once.
    pub fn with_connector(name: &str, target: &str, opts: Options, connector: Connector) -> Result<Client> {
        let client = Client {
            name: name.to_string(),
            state: Mutex::new(State { io: None, target: target.to_string(), serial: 0, opened: 0 }),
            connector: Some(connector),
            opts,
        };
        {
            let mut st = client.lock();
            client.ensure(&mut st)?;
        }
        Ok(client)
    }

    /// Speaks over a stream someone else connected (any [`Transport`]), opening `name`
    /// (`qemu:///system`). Such a client cannot reconnect.
    pub fn over(io: Box<dyn Transport>, name: &str) -> Result<Client> {
        let client = Client {
            name: name.to_string(),
            state: Mutex::new(State { target: io.target(), io: Some(io), serial: 0, opened: 1 }),
            connector: None,
            opts: Options::default(),
        };
        {
            let mut st = client.lock();
            if let Err(e) = client.handshake(&mut st) {
                st.io = None;
                return Err(e);
            }
        }
        Ok(client)
    }

    /// The driver URI this client opened (`qemu:///system`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the client is connected to, for messages.
    pub fn target(&self) -> String {
        self.lock().target.clone()
    }

    /// Closes the connection (`CONNECT_CLOSE`), telling the daemon it may free what the client held.
    pub fn close(self) -> Result<()> {
        let mut st = self.lock();
        if st.io.is_none() {
            return Ok(());
        }
        let r = self.roundtrip(&mut st, p::CONNECT_CLOSE, &[]).map(|_| ());
        st.io = None;
        match r {
            // the daemon closes the connection after the reply; a proxy (virt-ssh-helper) may end before
            // passing the reply on: closed either way
            Err(e) if e.is_disconnect() => Ok(()),
            r => r,
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // a panic while the lock was held leaves the connection in an unknown state: drop it
        self.state.lock().unwrap_or_else(|poisoned| {
            let mut st = poisoned.into_inner();
            st.io = None;
            st
        })
    }

    /// Makes the connection when there is none (the first time, or once after a loss).
    pub(super) fn ensure(&self, st: &mut State) -> Result<()> {
        if st.io.is_some() {
            return Ok(());
        }
        let Some(connector) = &self.connector else {
            return Err(Error::Disconnected {
                target: st.target.clone(),
                doing: "starting a call".into(),
                reason: "the connection is closed and this client was not made from a URI, so it cannot reconnect"
                    .into(),
            });
        };
        if st.opened >= MAX_CONNECTIONS {
            return Err(Error::Connect {
                target: st.target.clone(),
                reason: format!(
                    "the connection was lost and this client already made {MAX_CONNECTIONS} connections; giving up"
                ),
            });
        }
        st.opened += 1;
        let started = std::time::Instant::now();
        let io = connector(&self.opts)?;
        st.target = io.target();
        st.io = Some(io);
        if let Err(e) = self.handshake(st) {
            st.io = None;
            return Err(e);
        }
        crate::debug!("libvirt: connected to {} in {} ms", st.target, started.elapsed().as_millis());
        Ok(())
    }

    /// Authentication (none or polkit), then `CONNECT_OPEN`.
    fn handshake(&self, st: &mut State) -> Result<()> {
        let reply = self.roundtrip(st, p::AUTH_LIST, &[])?;
        let types: p::AuthListRet = decode(&st.target, p::AUTH_LIST, &reply)?;
        let types = types.types.0;
        if types.is_empty() || types.contains(&auth::NONE) {
            // nothing to do
        } else if types.contains(&auth::POLKIT) {
            let reply = self.roundtrip(st, p::AUTH_POLKIT, &[])?;
            let r: p::IntRet = decode(&st.target, p::AUTH_POLKIT, &reply)?;
            if r.value == 0 {
                return Err(Error::Auth {
                    target: st.target.clone(),
                    reason: "polkit did not authorise this client".into(),
                });
            }
        } else if types.contains(&auth::SASL) {
            return Err(Error::Auth {
                target: st.target.clone(),
                reason: "the daemon requires SASL authentication, which vmcpi does not speak: set auth_unix_rw (unix socket, access by the socket's permissions), auth_tls (TLS, the client certificate is the identity) to \"none\" in libvirtd.conf, or use qemu+ssh://".into(),
            });
        } else {
            return Err(Error::Auth {
                target: st.target.clone(),
                reason: format!("the daemon offers only authentication types {types:?}, none of which vmcpi speaks"),
            });
        }
        let args = p::ConnectOpenArgs { name: Some(self.name.clone()), flags: 0 };
        match self.roundtrip(st, p::CONNECT_OPEN, &encode(&args)?) {
            Ok(_) => Ok(()),
            Err(Error::Remote { error, .. })
                if matches!(error.code, super::error::code::AUTH_FAILED | super::error::code::ACCESS_DENIED) =>
            {
                Err(Error::Auth { target: st.target.clone(), reason: error.to_string() })
            }
            Err(e) => Err(e),
        }
    }

    /// Sends a call and waits for its reply on the current connection (which must exist). Any failure but
    /// libvirt's own error drops the connection: its state is unknown.
    pub(super) fn roundtrip(&self, st: &mut State, proc_: Proc, body: &[u8]) -> Result<Vec<u8>> {
        st.serial = st.serial.wrapping_add(1);
        let serial = st.serial;
        let header = Header::call(proc_.prog, proc_.num, serial);
        let target = st.target.clone();
        let Some(io) = st.io.as_mut() else {
            return Err(Error::Disconnected {
                target,
                doing: format!("calling {}", proc_.name),
                reason: "not connected".into(),
            });
        };
        let r = send(io.as_mut(), &target, &header, body, proc_.name)
            .and_then(|_| await_reply(io.as_mut(), &target, proc_, serial));
        if let Err(e) = &r {
            if !matches!(e, Error::Remote { .. }) {
                st.io = None;
            }
        }
        r
    }

    /// Calls `proc_` with `args` and decodes its reply as `R`.
    fn call<A: Encode, R: Decode>(&self, proc_: Proc, args: &A) -> Result<R> {
        let body = encode(args)?;
        let mut st = self.lock();
        self.ensure(&mut st)?;
        let started = std::time::Instant::now();
        let reply = self.roundtrip(&mut st, proc_, &body);
        match &reply {
            Ok(_) => crate::debug!("libvirt: {} ({} µs)", proc_.name, started.elapsed().as_micros()),
            Err(e) => crate::debug!("libvirt: {} failed ({} µs): {e}", proc_.name, started.elapsed().as_micros()),
        }
        let reply = reply?;
        let r = decode(&st.target, proc_, &reply);
        if r.is_err() {
            st.io = None;
        }
        r
    }

    /// Like [`Client::call`], but `Ok(None)` when libvirt says the object does not exist.
    fn call_opt<A: Encode, R: Decode>(&self, proc_: Proc, args: &A) -> Result<Option<R>> {
        match self.call(proc_, args) {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

pub(super) fn encode<A: Encode + ?Sized>(args: &A) -> Result<Vec<u8>> {
    to_bytes(args).map_err(|e| Error::Invalid(format!("the request cannot be sent: {e}")))
}

pub(super) fn decode<R: Decode>(target: &str, proc_: Proc, body: &[u8]) -> Result<R> {
    from_bytes(body).map_err(|e| Error::Protocol {
        target: target.to_string(),
        doing: proc_.name.to_string(),
        reason: format!("the reply does not decode: {e}"),
    })
}

pub(super) fn send(io: &mut dyn Transport, target: &str, h: &Header, body: &[u8], doing: &str) -> Result<()> {
    let bytes = packet::encode(h, body).map_err(|e| Error::Invalid(format!("{doing}: {e}")))?;
    let r = io.write_all(&bytes).and_then(|_| io.flush());
    r.map_err(|e| io_lost(io, target, &format!("sending {doing}"), e))
}

fn io_lost(io: &mut dyn Transport, target: &str, doing: &str, e: io::Error) -> Error {
    let reason = match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "no progress within the time-out".to_string(),
        _ => e.to_string(),
    };
    let reason = match io.diagnostics() {
        Some(d) => format!("{reason}; {d}"),
        None => reason,
    };
    Error::Disconnected { target: target.to_string(), doing: doing.to_string(), reason }
}

/// Reads the next message, as a client error.
pub(super) fn recv(io: &mut dyn Transport, target: &str, doing: &str) -> Result<Packet> {
    match packet::read(io) {
        Ok(p) => Ok(p),
        Err(PacketError::Io(e)) => Err(io_lost(io, target, doing, e)),
        Err(e @ PacketError::Closed { .. }) => {
            Err(io_lost(io, target, doing, io::Error::new(io::ErrorKind::UnexpectedEof, e.to_string())))
        }
        Err(e) => Err(Error::Protocol { target: target.to_string(), doing: doing.to_string(), reason: e.to_string() }),
    }
}

/// Answers a keepalive ping; true when `pk` was keepalive traffic.
pub(super) fn keepalive(io: &mut dyn Transport, target: &str, pk: &Packet) -> Result<bool> {
    if pk.header.prog != KEEPALIVE_PROGRAM {
        return Ok(false);
    }
    if pk.header.proc_ == KEEPALIVE_PING {
        let pong = Header {
            prog: KEEPALIVE_PROGRAM,
            vers: packet::PROTOCOL_VERSION,
            proc_: KEEPALIVE_PONG,
            kind: Kind::Message,
            serial: 0,
            status: Status::Ok,
        };
        send(io, target, &pong, &[], "a keepalive answer")?;
    }
    Ok(true)
}

/// libvirt's error in an error reply.
pub(super) fn remote_error(target: &str, proc_: Proc, body: &[u8]) -> Error {
    match from_bytes::<RemoteError>(body) {
        Ok(error) => Error::Remote { procedure: proc_.name, error: Box::new(error) },
        Err(e) => Error::Protocol {
            target: target.to_string(),
            doing: proc_.name.to_string(),
            reason: format!("the error reply does not decode: {e}"),
        },
    }
}

/// Waits for the reply to call `serial`, skipping events and stale stream packets.
fn await_reply(io: &mut dyn Transport, target: &str, proc_: Proc, serial: u32) -> Result<Vec<u8>> {
    let doing = format!("waiting for the reply to {}", proc_.name);
    for _ in 0..MAX_SKIPPED {
        let pk = recv(io, target, &doing)?;
        if keepalive(io, target, &pk)? {
            continue;
        }
        let h = pk.header;
        let ours = h.prog == proc_.prog && h.serial == serial;
        match h.kind {
            Kind::Reply | Kind::ReplyWithFds if ours => {
                if h.kind == Kind::ReplyWithFds {
                    return Err(Error::Protocol {
                        target: target.into(),
                        doing,
                        reason: "the reply passes file descriptors, which this client never asks for".into(),
                    });
                }
                return match h.status {
                    Status::Ok => Ok(pk.body),
                    Status::Error => Err(remote_error(target, proc_, &pk.body)),
                    Status::Continue => Err(Error::Protocol {
                        target: target.into(),
                        doing,
                        reason: "a reply with the status of a stream packet".into(),
                    }),
                };
            }
            // events (none registered), packets of a stream that ended
            Kind::Message | Kind::Stream | Kind::StreamHole => continue,
            Kind::Reply | Kind::ReplyWithFds if h.serial != serial => continue,
            _ => {
                return Err(Error::Protocol {
                    target: target.into(),
                    doing,
                    reason: format!(
                        "unexpected message (program {:#x}, procedure {}, type {:?}, serial {})",
                        h.prog, h.proc_, h.kind, h.serial
                    ),
                })
            }
        }
    }
    Err(Error::Protocol { target: target.into(), doing, reason: format!("{MAX_SKIPPED} unrelated messages") })
}

// ---- the procedures -----------------------------------------------------------------------------

impl Client {
    /// `CONNECT_GET_VERSION`: the hypervisor's version (QEMU 7.2.0 is 7002000).
    pub fn hypervisor_version(&self) -> Result<u64> {
        Ok(self.call::<_, p::VersionRet>(p::CONNECT_GET_VERSION, &())?.version)
    }

    /// `CONNECT_GET_LIB_VERSION`: the daemon's libvirt version (9.0.0 is 9000000).
    pub fn lib_version(&self) -> Result<u64> {
        Ok(self.call::<_, p::VersionRet>(p::CONNECT_GET_LIB_VERSION, &())?.version)
    }

    /// `CONNECT_GET_HOSTNAME`.
    pub fn hostname(&self) -> Result<String> {
        Ok(self.call::<_, p::HostnameRet>(p::CONNECT_GET_HOSTNAME, &())?.hostname)
    }

    /// `CONNECT_GET_DOMAIN_CAPABILITIES` for a virtualisation type (`kvm`, `qemu`), the rest defaulted.
    pub fn domain_capabilities(&self, virttype: Option<&str>) -> Result<String> {
        let args = p::DomainCapabilitiesArgs {
            emulatorbin: None,
            arch: None,
            machine: None,
            virttype: virttype.map(str::to_string),
            flags: 0,
        };
        Ok(self.call::<_, p::StringRet>(p::CONNECT_GET_DOMAIN_CAPABILITIES, &args)?.value)
    }

    /// `CONNECT_LIST_ALL_DOMAINS` with `flags::LIST_DOMAINS_*` (0: all).
    pub fn list_domains(&self, flags: u32) -> Result<Vec<Domain>> {
        let r: p::ListAllDomainsRet =
            self.call(p::CONNECT_LIST_ALL_DOMAINS, &p::ListAllArgs { need_results: 1, flags })?;
        Ok(r.domains.0)
    }

    /// `CONNECT_LIST_ALL_STORAGE_POOLS` (flags 0: all).
    pub fn list_pools(&self, flags: u32) -> Result<Vec<StoragePool>> {
        let r: p::ListAllPoolsRet =
            self.call(p::CONNECT_LIST_ALL_STORAGE_POOLS, &p::ListAllArgs { need_results: 1, flags })?;
        Ok(r.pools.0)
    }

    // -- domains

    /// `DOMAIN_LOOKUP_BY_NAME`.
    pub fn domain_lookup(&self, name: &str) -> Result<Domain> {
        Ok(self.call::<_, p::DomainRet>(p::DOMAIN_LOOKUP_BY_NAME, &p::NameArgs { name: name.into() })?.dom)
    }

    /// `DOMAIN_LOOKUP_BY_NAME`, `None` when there is no such domain.
    pub fn domain_lookup_opt(&self, name: &str) -> Result<Option<Domain>> {
        Ok(self
            .call_opt::<_, p::DomainRet>(p::DOMAIN_LOOKUP_BY_NAME, &p::NameArgs { name: name.into() })?
            .map(|r| r.dom))
    }

    /// `DOMAIN_LOOKUP_BY_UUID`.
    pub fn domain_lookup_uuid(&self, uuid: [u8; 16]) -> Result<Domain> {
        Ok(self.call::<_, p::DomainRet>(p::DOMAIN_LOOKUP_BY_UUID, &p::UuidArgs { uuid })?.dom)
    }

    /// `DOMAIN_DEFINE_XML_FLAGS` (`flags::DEFINE_VALIDATE` checks the XML against libvirt's schema).
    pub fn domain_define_xml(&self, xml: &str, flags: u32) -> Result<Domain> {
        Ok(self.call::<_, p::DomainRet>(p::DOMAIN_DEFINE_XML_FLAGS, &p::XmlFlagsArgs { xml: xml.into(), flags })?.dom)
    }

    /// `DOMAIN_CREATE_WITH_FLAGS`: starts a defined domain; the handle back carries its id.
    pub fn domain_start(&self, dom: &Domain) -> Result<Domain> {
        let args = p::DomainFlagsArgs { dom: dom.clone(), flags: 0 };
        Ok(self.call::<_, p::DomainRet>(p::DOMAIN_CREATE_WITH_FLAGS, &args)?.dom)
    }

    /// `DOMAIN_DESTROY_FLAGS` (0: kill QEMU after a grace period, as `virsh destroy`).
    pub fn domain_destroy(&self, dom: &Domain, flags: u32) -> Result<()> {
        self.call(p::DOMAIN_DESTROY_FLAGS, &p::DomainFlagsArgs { dom: dom.clone(), flags })
    }

    /// `DOMAIN_UNDEFINE_FLAGS` with `flags::UNDEFINE_*` (`virsh undefine --nvram` is `UNDEFINE_NVRAM`).
    pub fn domain_undefine(&self, dom: &Domain, flags: u32) -> Result<()> {
        self.call(p::DOMAIN_UNDEFINE_FLAGS, &p::DomainFlagsArgs { dom: dom.clone(), flags })
    }

    /// `DOMAIN_GET_XML_DESC` with `flags::XML_*` (`virsh dumpxml` is 0).
    pub fn domain_xml(&self, dom: &Domain, flags: u32) -> Result<String> {
        Ok(self.call::<_, p::StringRet>(p::DOMAIN_GET_XML_DESC, &p::DomainFlagsArgs { dom: dom.clone(), flags })?.value)
    }

    /// `DOMAIN_GET_STATE`: the state and its reason (`virDomain*Reason`).
    pub fn domain_state(&self, dom: &Domain) -> Result<(DomainState, i32)> {
        let r: p::DomainStateRet =
            self.call(p::DOMAIN_GET_STATE, &p::DomainFlagsArgs { dom: dom.clone(), flags: 0 })?;
        Ok((DomainState::from_i32(r.state), r.reason))
    }

    /// `DOMAIN_SET_METADATA`: `value` None removes it. An [`MetadataKind::Element`] needs `key` (the XML
    /// prefix) and `uri` (its namespace); flags `AFFECT_*` (`virsh metadata … --config --live`).
    pub fn domain_set_metadata(
        &self,
        dom: &Domain,
        kind: MetadataKind,
        value: Option<&str>,
        key: Option<&str>,
        uri: Option<&str>,
        flags: u32,
    ) -> Result<()> {
        let args = p::SetMetadataArgs {
            dom: dom.clone(),
            kind: kind as i32,
            metadata: value.map(str::to_string),
            key: key.map(str::to_string),
            uri: uri.map(str::to_string),
            flags,
        };
        self.call(p::DOMAIN_SET_METADATA, &args)
    }

    /// `DOMAIN_GET_METADATA`; `None` when there is none (`VIR_ERR_NO_DOMAIN_METADATA`).
    pub fn domain_metadata(
        &self,
        dom: &Domain,
        kind: MetadataKind,
        uri: Option<&str>,
        flags: u32,
    ) -> Result<Option<String>> {
        let args = p::GetMetadataArgs { dom: dom.clone(), kind: kind as i32, uri: uri.map(str::to_string), flags };
        match self.call::<_, p::StringRet>(p::DOMAIN_GET_METADATA, &args) {
            Ok(r) => Ok(Some(r.value)),
            Err(e) if e.code() == Some(super::error::code::NO_DOMAIN_METADATA) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `DOMAIN_ATTACH_DEVICE_FLAGS` (flags `AFFECT_*`).
    pub fn domain_attach_device(&self, dom: &Domain, xml: &str, flags: u32) -> Result<()> {
        self.call(p::DOMAIN_ATTACH_DEVICE_FLAGS, &p::DeviceArgs { dom: dom.clone(), xml: xml.into(), flags })
    }

    /// `DOMAIN_DETACH_DEVICE_FLAGS` (flags `AFFECT_*`). A live detach returns when the guest was asked;
    /// the device may go later.
    pub fn domain_detach_device(&self, dom: &Domain, xml: &str, flags: u32) -> Result<()> {
        self.call(p::DOMAIN_DETACH_DEVICE_FLAGS, &p::DeviceArgs { dom: dom.clone(), xml: xml.into(), flags })
    }

    /// `DOMAIN_UPDATE_DEVICE_FLAGS` (`virsh change-media` sends a CD-ROM's XML with or without its source;
    /// flags `AFFECT_*` | `DEVICE_MODIFY_FORCE`).
    pub fn domain_update_device(&self, dom: &Domain, xml: &str, flags: u32) -> Result<()> {
        self.call(p::DOMAIN_UPDATE_DEVICE_FLAGS, &p::DeviceArgs { dom: dom.clone(), xml: xml.into(), flags })
    }

    /// `DOMAIN_REBOOT` (asks the guest; flags `virDomainRebootFlagValues`, 0: the hypervisor's choice).
    pub fn domain_reboot(&self, dom: &Domain, flags: u32) -> Result<()> {
        self.call(p::DOMAIN_REBOOT, &p::DomainFlagsArgs { dom: dom.clone(), flags })
    }

    /// `DOMAIN_RESET`: a hard reset, the QEMU process stays (and with it its port forwards).
    pub fn domain_reset(&self, dom: &Domain) -> Result<()> {
        self.call(p::DOMAIN_RESET, &p::DomainFlagsArgs { dom: dom.clone(), flags: 0 })
    }

    /// `DOMAIN_HAS_MANAGED_SAVE_IMAGE`.
    pub fn domain_has_managed_save(&self, dom: &Domain) -> Result<bool> {
        let r: p::IntRet =
            self.call(p::DOMAIN_HAS_MANAGED_SAVE_IMAGE, &p::DomainFlagsArgs { dom: dom.clone(), flags: 0 })?;
        Ok(r.value != 0)
    }

    /// `DOMAIN_BLOCK_COPY`: starts copying disk `disk` (target name or source path) of a running domain
    /// into what `destxml` (a `<disk>`) describes; flags `BLOCK_COPY_*` (`virsh blockcopy
    /// --reuse-external --transient-job` is `REUSE_EXT | TRANSIENT_JOB`). Poll [`Client::block_job_info`]
    /// until `cur == end`, then [`Client::block_job_abort`] (0: keep the copy apart, `--finish`; `PIVOT`:
    /// switch to it).
    pub fn domain_block_copy(
        &self,
        dom: &Domain,
        disk: &str,
        destxml: &str,
        params: BlockCopyParams,
        flags: u32,
    ) -> Result<()> {
        let mut list = Vec::new();
        if let Some(v) = params.bandwidth {
            list.push(p::TypedParam { field: "bandwidth".into(), value: p::TypedValue::ULLong(v) });
        }
        if let Some(v) = params.granularity {
            list.push(p::TypedParam { field: "granularity".into(), value: p::TypedValue::UInt(v) });
        }
        if let Some(v) = params.buf_size {
            list.push(p::TypedParam { field: "buf-size".into(), value: p::TypedValue::ULLong(v) });
        }
        let args = p::BlockCopyArgs {
            dom: dom.clone(),
            path: disk.into(),
            destxml: destxml.into(),
            params: List(list),
            flags,
        };
        self.call(p::DOMAIN_BLOCK_COPY, &args)
    }

    /// `DOMAIN_GET_BLOCK_JOB_INFO` (bytes): `None` when no job runs on `disk`.
    pub fn block_job_info(&self, dom: &Domain, disk: &str) -> Result<Option<BlockJobInfo>> {
        // VIR_DOMAIN_BLOCK_JOB_INFO_BANDWIDTH_BYTES: bandwidth in bytes/s, not MiB/s
        let args = p::BlockJobArgs { dom: dom.clone(), path: disk.into(), flags: 1 };
        let r: p::BlockJobInfoRet = self.call(p::DOMAIN_GET_BLOCK_JOB_INFO, &args)?;
        Ok((r.found != 0).then_some(BlockJobInfo { kind: r.kind, bandwidth: r.bandwidth, cur: r.cur, end: r.end }))
    }

    /// Polls [`Client::block_job_info`] until the job on `disk` is ready (`cur == end`: a copy now
    /// mirrors), for at most `timeout`: what `virsh blockcopy --wait` does before `--finish` (then
    /// [`Client::block_job_abort`] with 0) or `--pivot`.
    pub fn block_job_wait_ready(&self, dom: &Domain, disk: &str, timeout: std::time::Duration) -> Result<BlockJobInfo> {
        let deadline = std::time::Instant::now() + timeout;
        let mut delay = std::time::Duration::from_millis(10);
        loop {
            match self.block_job_info(dom, disk)? {
                Some(j) if j.end > 0 && j.cur == j.end => return Ok(j),
                Some(j) if std::time::Instant::now() >= deadline => {
                    return Err(Error::Job(format!(
                        "the job on {disk} of {} is not ready after {} s ({} of {} bytes)",
                        dom.name,
                        timeout.as_secs(),
                        j.cur,
                        j.end
                    )))
                }
                Some(_) => {}
                None => {
                    return Err(Error::Job(format!(
                        "the job on {disk} of {} ended before it was ready (it failed: see the daemon's log)",
                        dom.name
                    )))
                }
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(std::time::Duration::from_millis(500));
        }
    }

    /// `DOMAIN_BLOCK_JOB_ABORT` (flags `BLOCK_JOB_ABORT_*`).
    pub fn block_job_abort(&self, dom: &Domain, disk: &str, flags: u32) -> Result<()> {
        self.call(p::DOMAIN_BLOCK_JOB_ABORT, &p::BlockJobArgs { dom: dom.clone(), path: disk.into(), flags })
    }

    /// `QEMU_PROC_DOMAIN_MONITOR_COMMAND`: a monitor command, HMP (`hostfwd_add …`) or QMP (JSON). QEMU
    /// answers an HMP command that failed with text, not an error.
    pub fn qemu_monitor_command(&self, dom: &Domain, cmd: &str, hmp: bool) -> Result<String> {
        let args =
            p::MonitorCommandArgs { dom: dom.clone(), cmd: cmd.into(), flags: u32::from(hmp) * flags::MONITOR_HMP };
        Ok(self.call::<_, p::StringRet>(p::QEMU_DOMAIN_MONITOR_COMMAND, &args)?.value)
    }

    /// `QEMU_PROC_DOMAIN_AGENT_COMMAND`: a guest agent command (JSON); `timeout` in seconds or
    /// `flags::AGENT_TIMEOUT_*`. `None` when the agent returned nothing.
    pub fn qemu_agent_command(&self, dom: &Domain, cmd: &str, timeout: i32) -> Result<Option<String>> {
        let args = p::AgentCommandArgs { dom: dom.clone(), cmd: cmd.into(), timeout, flags: 0 };
        Ok(self.call::<_, p::AgentCommandRet>(p::QEMU_DOMAIN_AGENT_COMMAND, &args)?.result)
    }

    // -- storage pools

    /// `STORAGE_POOL_LOOKUP_BY_NAME`.
    pub fn pool_lookup(&self, name: &str) -> Result<StoragePool> {
        Ok(self.call::<_, p::PoolRet>(p::STORAGE_POOL_LOOKUP_BY_NAME, &p::NameArgs { name: name.into() })?.pool)
    }

    /// `STORAGE_POOL_LOOKUP_BY_NAME`, `None` when there is no such pool.
    pub fn pool_lookup_opt(&self, name: &str) -> Result<Option<StoragePool>> {
        Ok(self
            .call_opt::<_, p::PoolRet>(p::STORAGE_POOL_LOOKUP_BY_NAME, &p::NameArgs { name: name.into() })?
            .map(|r| r.pool))
    }

    /// `STORAGE_POOL_DEFINE_XML` (`virsh pool-define-as NAME dir --target PATH` defines
    /// `<pool type='dir'><name>NAME</name><target><path>PATH</path></target></pool>`).
    pub fn pool_define_xml(&self, xml: &str) -> Result<StoragePool> {
        Ok(self.call::<_, p::PoolRet>(p::STORAGE_POOL_DEFINE_XML, &p::XmlFlagsArgs { xml: xml.into(), flags: 0 })?.pool)
    }

    /// `STORAGE_POOL_BUILD` (a directory pool: makes its directory; `flags::POOL_BUILD_*`).
    pub fn pool_build(&self, pool: &StoragePool, flags: u32) -> Result<()> {
        self.call(p::STORAGE_POOL_BUILD, &p::PoolFlagsArgs { pool: pool.clone(), flags })
    }

    /// `STORAGE_POOL_CREATE`: starts a defined pool (`virsh pool-start`).
    pub fn pool_start(&self, pool: &StoragePool) -> Result<()> {
        self.call(p::STORAGE_POOL_CREATE, &p::PoolFlagsArgs { pool: pool.clone(), flags: 0 })
    }

    /// `STORAGE_POOL_DESTROY`: stops a pool (its volumes stay).
    pub fn pool_stop(&self, pool: &StoragePool) -> Result<()> {
        self.call(p::STORAGE_POOL_DESTROY, &p::PoolArgs { pool: pool.clone() })
    }

    /// `STORAGE_POOL_UNDEFINE`.
    pub fn pool_undefine(&self, pool: &StoragePool) -> Result<()> {
        self.call(p::STORAGE_POOL_UNDEFINE, &p::PoolArgs { pool: pool.clone() })
    }

    /// `STORAGE_POOL_REFRESH`: re-reads the pool's volumes (formats, sizes).
    pub fn pool_refresh(&self, pool: &StoragePool) -> Result<()> {
        self.call(p::STORAGE_POOL_REFRESH, &p::PoolFlagsArgs { pool: pool.clone(), flags: 0 })
    }

    /// `STORAGE_POOL_GET_INFO`.
    pub fn pool_info(&self, pool: &StoragePool) -> Result<PoolInfo> {
        let r: p::PoolInfoRet = self.call(p::STORAGE_POOL_GET_INFO, &p::PoolArgs { pool: pool.clone() })?;
        let state = match r.state {
            0 => PoolState::Inactive,
            1 => PoolState::Building,
            2 => PoolState::Running,
            3 => PoolState::Degraded,
            4 => PoolState::Inaccessible,
            v => PoolState::Other(v),
        };
        Ok(PoolInfo { state, capacity: r.capacity, allocation: r.allocation, available: r.available })
    }

    /// `STORAGE_POOL_GET_XML_DESC`.
    pub fn pool_xml(&self, pool: &StoragePool) -> Result<String> {
        Ok(self
            .call::<_, p::StringRet>(p::STORAGE_POOL_GET_XML_DESC, &p::PoolFlagsArgs { pool: pool.clone(), flags: 0 })?
            .value)
    }

    /// `STORAGE_POOL_SET_AUTOSTART`.
    pub fn pool_set_autostart(&self, pool: &StoragePool, autostart: bool) -> Result<()> {
        self.call(
            p::STORAGE_POOL_SET_AUTOSTART,
            &p::PoolAutostartArgs { pool: pool.clone(), autostart: i32::from(autostart) },
        )
    }

    /// `STORAGE_POOL_LIST_ALL_VOLUMES`.
    pub fn pool_volumes(&self, pool: &StoragePool) -> Result<Vec<StorageVol>> {
        let args = p::ListAllVolumesArgs { pool: pool.clone(), need_results: 1, flags: 0 };
        Ok(self.call::<_, p::ListAllVolumesRet>(p::STORAGE_POOL_LIST_ALL_VOLUMES, &args)?.vols.0)
    }

    // -- storage volumes

    /// `STORAGE_VOL_LOOKUP_BY_NAME`.
    pub fn vol_lookup(&self, pool: &StoragePool, name: &str) -> Result<StorageVol> {
        let args = p::VolLookupArgs { pool: pool.clone(), name: name.into() };
        Ok(self.call::<_, p::VolRet>(p::STORAGE_VOL_LOOKUP_BY_NAME, &args)?.vol)
    }

    /// `STORAGE_VOL_LOOKUP_BY_NAME`, `None` when there is no such volume.
    pub fn vol_lookup_opt(&self, pool: &StoragePool, name: &str) -> Result<Option<StorageVol>> {
        let args = p::VolLookupArgs { pool: pool.clone(), name: name.into() };
        Ok(self.call_opt::<_, p::VolRet>(p::STORAGE_VOL_LOOKUP_BY_NAME, &args)?.map(|r| r.vol))
    }

    /// `STORAGE_VOL_CREATE_XML` (`virsh vol-create-as` sends `<volume>` with name, capacity, target
    /// format and an optional `<backingStore>`; flags `VOL_CREATE_*`).
    pub fn vol_create_xml(&self, pool: &StoragePool, xml: &str, flags: u32) -> Result<StorageVol> {
        let args = p::VolCreateArgs { pool: pool.clone(), xml: xml.into(), flags };
        Ok(self.call::<_, p::VolRet>(p::STORAGE_VOL_CREATE_XML, &args)?.vol)
    }

    /// `STORAGE_VOL_CREATE_XML_FROM`: a new volume holding a copy of `from` (`virsh vol-clone`).
    pub fn vol_create_xml_from(
        &self,
        pool: &StoragePool,
        xml: &str,
        from: &StorageVol,
        flags: u32,
    ) -> Result<StorageVol> {
        let args = p::VolCreateFromArgs { pool: pool.clone(), xml: xml.into(), clonevol: from.clone(), flags };
        Ok(self.call::<_, p::VolRet>(p::STORAGE_VOL_CREATE_XML_FROM, &args)?.vol)
    }

    /// `STORAGE_VOL_DELETE` (flags 0).
    pub fn vol_delete(&self, vol: &StorageVol) -> Result<()> {
        self.call(p::STORAGE_VOL_DELETE, &p::VolFlagsArgs { vol: vol.clone(), flags: 0 })
    }

    /// `STORAGE_VOL_GET_XML_DESC`.
    pub fn vol_xml(&self, vol: &StorageVol) -> Result<String> {
        Ok(self
            .call::<_, p::StringRet>(p::STORAGE_VOL_GET_XML_DESC, &p::VolFlagsArgs { vol: vol.clone(), flags: 0 })?
            .value)
    }

    /// `STORAGE_VOL_GET_INFO`.
    pub fn vol_info(&self, vol: &StorageVol) -> Result<VolInfo> {
        let r: p::VolInfoRet = self.call(p::STORAGE_VOL_GET_INFO, &p::VolArgs { vol: vol.clone() })?;
        Ok(VolInfo { kind: r.kind, capacity: r.capacity, allocation: r.allocation })
    }

    /// `STORAGE_VOL_GET_PATH`.
    pub fn vol_path(&self, vol: &StorageVol) -> Result<String> {
        Ok(self.call::<_, p::StringRet>(p::STORAGE_VOL_GET_PATH, &p::VolArgs { vol: vol.clone() })?.value)
    }

    /// `STORAGE_VOL_RESIZE` to `capacity` bytes (flags `VOL_RESIZE_*`; shrinking needs `SHRINK`).
    pub fn vol_resize(&self, vol: &StorageVol, capacity: u64, flags: u32) -> Result<()> {
        self.call(p::STORAGE_VOL_RESIZE, &p::VolResizeArgs { vol: vol.clone(), capacity, flags })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_can_be_shared_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Client>();
    }

    #[test]
    fn domain_states() {
        assert_eq!(DomainState::from_i32(1), DomainState::Running);
        assert!(DomainState::from_i32(3).is_active());
        assert!(!DomainState::from_i32(5).is_active());
        assert_eq!(DomainState::from_i32(99), DomainState::Other(99));
    }
}
