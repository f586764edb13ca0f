//! The client: one connection to a libvirt daemon, calls made one at a time (a call's reply before the
//! next call), each procedure a typed method.
//!
//! Connecting does what libvirt's remote driver does: `AUTH_LIST` (none and polkit are spoken; a daemon
//! that demands SASL gets a clear error), then `CONNECT_OPEN` with the driver URI. A connection that
//! breaks is dropped; the next call makes a new one (at most [`MAX_CONNECTIONS`] per client, so a failed
//! create can still clean up, as the SSH transport allows). Keepalive pings (only sent by daemons to
//! clients that ask for them) are answered; events (never registered) are ignored.
//!
//! Here the connection and the call; the procedures by what they act on in `host.rs` (the connection),
//! `domain.rs` and `storage.rs`; one message on the wire in `wire.rs`; the values they take and give in
//! `types.rs` and [`flags`].
mod domain;
pub mod flags;
mod host;
mod storage;
mod types;
mod wire;

use super::error::{Error, Result};
use super::packet::Header;
use super::packet::Packet;
use super::proto::{self as p, auth, Proc};
use super::transport::{self, Options, Transport};
use super::uri::Uri;
use super::xdr::{Decode, Encode};
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
pub use types::{BlockCopyParams, BlockJobInfo, DomainState, MetadataKind, PoolInfo, PoolState, VolInfo};
use wire::await_reply;
pub(in crate::cpi::libvirt_rpc) use wire::{decode, encode, keepalive, recv, remote_error, send};

/// How many connections one client makes at most: the first, and one after a loss.
pub const MAX_CONNECTIONS: u32 = 2;

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
    /// Packets of the stream the last call opened that came before the call's reply (libvirtd's event
    /// loop may queue a download's first data before its worker queues the reply); the stream reads
    /// them first.
    pub(super) early: VecDeque<Packet>,
}

impl State {
    /// A connection's state before its first call: `io` when it is already open (counted as made), else
    /// `target` names where it will go.
    fn new(io: Option<Box<dyn Transport>>, target: String) -> State {
        let target = io.as_ref().map_or(target, |io| io.target());
        let opened = u32::from(io.is_some());
        State { io, target, serial: 0, opened, early: VecDeque::new() }
    }

    /// The serial of the last call (a stream's packets carry the serial of the call that opened it).
    pub(super) fn serial(&self) -> u32 {
        self.serial
    }
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
            state: Mutex::new(State::new(None, target.to_string())),
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
            state: Mutex::new(State::new(Some(io), String::new())),
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
        st.early.clear();
        let Some(io) = st.io.as_mut() else {
            return Err(Error::Disconnected {
                target,
                doing: format!("calling {}", proc_.name),
                reason: "not connected".into(),
            });
        };
        let r = send(io.as_mut(), &target, &header, body, proc_.name)
            .and_then(|_| await_reply(io.as_mut(), &target, proc_, serial, &mut st.early));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_can_be_shared_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Client>();
    }
}
