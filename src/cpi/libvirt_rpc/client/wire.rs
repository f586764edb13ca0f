//! One message on the wire: encoding a call, sending it, reading the reply (skipping events and stale
//! stream packets, keeping those of the stream the call opens, answering keepalive pings), and libvirt's
//! error in an error reply.
use crate::cpi::libvirt_rpc::error::{Error, RemoteError, Result};
use crate::cpi::libvirt_rpc::packet::{
    self, Header, Kind, Packet, PacketError, Status, KEEPALIVE_PING, KEEPALIVE_PONG, KEEPALIVE_PROGRAM,
};
use crate::cpi::libvirt_rpc::proto::Proc;
use crate::cpi::libvirt_rpc::transport::Transport;
use crate::cpi::libvirt_rpc::xdr::{from_bytes, to_bytes, Decode, Encode};
use std::collections::VecDeque;
use std::io;

/// How many unrelated messages (events, stale stream packets) a call skips before it gives up.
const MAX_SKIPPED: u32 = 100_000;
/// Stream packets kept while waiting for the reply that opens the stream. libvirtd sends a stream's packets
/// one at a time (the next when the last was written), so only a worker thread slow to queue the reply lets
/// more than one through; this bounds what a daemon can make the client hold (64 × 256 KiB).
const MAX_EARLY: usize = 64;

pub(in crate::cpi::libvirt_rpc) fn encode<A: Encode + ?Sized>(args: &A) -> Result<Vec<u8>> {
    to_bytes(args).map_err(|e| Error::Invalid(format!("the request cannot be sent: {e}")))
}

pub(in crate::cpi::libvirt_rpc) fn decode<R: Decode>(target: &str, proc_: Proc, body: &[u8]) -> Result<R> {
    from_bytes(body).map_err(|e| Error::Protocol {
        target: target.to_string(),
        doing: proc_.name.to_string(),
        reason: format!("the reply does not decode: {e}"),
    })
}

pub(in crate::cpi::libvirt_rpc) fn send(
    io: &mut dyn Transport,
    target: &str,
    h: &Header,
    body: &[u8],
    doing: &str,
) -> Result<()> {
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
pub(in crate::cpi::libvirt_rpc) fn recv(io: &mut dyn Transport, target: &str, doing: &str) -> Result<Packet> {
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
pub(in crate::cpi::libvirt_rpc) fn keepalive(io: &mut dyn Transport, target: &str, pk: &Packet) -> Result<bool> {
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
pub(in crate::cpi::libvirt_rpc) fn remote_error(target: &str, proc_: Proc, body: &[u8]) -> Error {
    match from_bytes::<RemoteError>(body) {
        Ok(error) => Error::Remote { procedure: proc_.name, error: Box::new(error) },
        Err(e) => Error::Protocol {
            target: target.to_string(),
            doing: proc_.name.to_string(),
            reason: format!("the error reply does not decode: {e}"),
        },
    }
}

/// Waits for the reply to call `serial`, skipping events and packets of streams that ended; packets of the
/// stream this call opens that come before its reply go to `early`, in order.
pub(super) fn await_reply(
    io: &mut dyn Transport,
    target: &str,
    proc_: Proc,
    serial: u32,
    early: &mut VecDeque<Packet>,
) -> Result<Vec<u8>> {
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
            // the stream this call opens, ahead of the reply
            Kind::Stream | Kind::StreamHole if ours => {
                if early.len() >= MAX_EARLY {
                    return Err(Error::Protocol {
                        target: target.into(),
                        doing,
                        reason: format!("more than {MAX_EARLY} stream packets before the reply"),
                    });
                }
                early.push_back(pk);
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
