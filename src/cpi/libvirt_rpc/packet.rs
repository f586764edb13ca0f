//! One message on the wire (virnetprotocol.x): a 4-byte length that counts itself, the 24-byte header
//! `virNetMessageHeader { prog, vers, proc, type, serial, status }`, then the body.
//!
//! Reading refuses a length over libvirt's own limit (`VIR_NET_MESSAGE_MAX`, 32 MiB plus the length word)
//! or under the header's size before reading on, and grows the buffer only as bytes arrive, so a peer that
//! announces 32 MiB and sends nothing costs nothing.
use super::xdr::{Decoder, Encoder, XdrError};
use std::io::{self, Read, Write};

/// `REMOTE_PROGRAM` (remote_protocol.x).
pub const REMOTE_PROGRAM: u32 = 0x2000_8086;
/// `QEMU_PROGRAM` (qemu_protocol.x): the monitor and guest agent commands, on the same connection.
pub const QEMU_PROGRAM: u32 = 0x2000_8087;
/// `KEEPALIVE_PROGRAM` (virkeepaliveprotocol.x): "keep".
pub const KEEPALIVE_PROGRAM: u32 = 0x6b65_6570;
/// The version of every program above.
pub const PROTOCOL_VERSION: u32 = 1;
/// `KEEPALIVE_PROC_PING` / `KEEPALIVE_PROC_PONG`.
pub const KEEPALIVE_PING: i32 = 1;
pub const KEEPALIVE_PONG: i32 = 2;

/// `VIR_NET_MESSAGE_MAX`: header and body of one message; the length word is not counted.
pub const MESSAGE_MAX: usize = 33_554_432;
/// `VIR_NET_MESSAGE_HEADER_MAX`.
pub const HEADER_LEN: usize = 24;
/// `VIR_NET_MESSAGE_LEN_MAX`: the length word.
pub const LEN_LEN: usize = 4;
/// `VIR_NET_MESSAGE_LEGACY_PAYLOAD_MAX`: what libvirt's own client puts in one stream packet (every
/// daemon version accepts it).
pub const STREAM_CHUNK: usize = 262_120;

/// `virNetMessageType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Call = 0,
    Reply = 1,
    Message = 2,
    Stream = 3,
    CallWithFds = 4,
    ReplyWithFds = 5,
    StreamHole = 6,
}

impl Kind {
    fn from_i32(v: i32) -> Option<Kind> {
        Some(match v {
            0 => Kind::Call,
            1 => Kind::Reply,
            2 => Kind::Message,
            3 => Kind::Stream,
            4 => Kind::CallWithFds,
            5 => Kind::ReplyWithFds,
            6 => Kind::StreamHole,
            _ => return None,
        })
    }
}

/// `virNetMessageStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok = 0,
    Error = 1,
    Continue = 2,
}

impl Status {
    fn from_i32(v: i32) -> Option<Status> {
        Some(match v {
            0 => Status::Ok,
            1 => Status::Error,
            2 => Status::Continue,
            _ => return None,
        })
    }
}

/// `virNetMessageHeader`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub prog: u32,
    pub vers: u32,
    pub proc_: i32,
    pub kind: Kind,
    pub serial: u32,
    pub status: Status,
}

impl Header {
    /// A call of `proc_` in `prog`.
    pub fn call(prog: u32, proc_: i32, serial: u32) -> Header {
        Header { prog, vers: PROTOCOL_VERSION, proc_, kind: Kind::Call, serial, status: Status::Ok }
    }

    fn encode(&self, e: &mut Encoder) {
        e.u32(self.prog);
        e.u32(self.vers);
        e.i32(self.proc_);
        e.i32(self.kind as i32);
        e.u32(self.serial);
        e.i32(self.status as i32);
    }

    fn decode(d: &mut Decoder<'_>) -> Result<Header, XdrError> {
        let prog = d.u32("the header's program")?;
        let vers = d.u32("the header's version")?;
        let proc_ = d.i32("the header's procedure")?;
        let kind = d.i32("the header's type")?;
        let kind = Kind::from_i32(kind).ok_or(XdrError::Invalid { what: "the message type", value: kind.into() })?;
        let serial = d.u32("the header's serial")?;
        let status = d.i32("the header's status")?;
        let status =
            Status::from_i32(status).ok_or(XdrError::Invalid { what: "the message status", value: status.into() })?;
        Ok(Header { prog, vers, proc_, kind, serial, status })
    }
}

/// A message read from the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    pub header: Header,
    pub body: Vec<u8>,
}

/// Why no packet could be read.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    /// The peer closed the connection: before a message (`mid == false`) or inside one.
    #[error("{}", if *mid { "the peer closed the connection in the middle of a message" } else { "the peer closed the connection" })]
    Closed { mid: bool },
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("a message announces {len} bytes; libvirt's messages are {min} to {max} bytes")]
    Length { len: u64, min: usize, max: usize },
    #[error("bad message header: {0}")]
    Header(XdrError),
}

/// Serialises one message; fails when it would be longer than the peer accepts.
pub fn encode(header: &Header, body: &[u8]) -> Result<Vec<u8>, XdrError> {
    let total = LEN_LEN + HEADER_LEN + body.len();
    if HEADER_LEN + body.len() > MESSAGE_MAX {
        return Err(XdrError::TooLong { what: "a message", len: HEADER_LEN + body.len(), max: MESSAGE_MAX });
    }
    let mut e = Encoder::after(Vec::with_capacity(total));
    e.u32(total as u32);
    header.encode(&mut e);
    e.raw(body);
    Ok(e.into_inner())
}

/// Writes one message (length, header, body) and flushes it.
pub fn write(w: &mut dyn Write, header: &Header, body: &[u8]) -> io::Result<()> {
    let bytes = encode(header, body).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    w.write_all(&bytes)?;
    w.flush()
}

/// Checks a length word: it counts itself, the header and the body.
pub fn check_len(len: u32) -> Result<usize, PacketError> {
    let len = len as usize;
    if !(LEN_LEN + HEADER_LEN..=LEN_LEN + MESSAGE_MAX).contains(&len) {
        return Err(PacketError::Length { len: len as u64, min: LEN_LEN + HEADER_LEN, max: LEN_LEN + MESSAGE_MAX });
    }
    Ok(len)
}

/// Reads one whole message.
pub fn read(r: &mut dyn Read) -> Result<Packet, PacketError> {
    let mut lenb = [0u8; 4];
    read_exact(r, &mut lenb, false)?;
    let len = check_len(u32::from_be_bytes(lenb))?;
    let want = (len - LEN_LEN) as u64;
    // grows as bytes arrive (at most the checked length), never allocated up front
    let mut rest = Vec::with_capacity((want as usize).min(1 << 16));
    let got = r.take(want).read_to_end(&mut rest).map_err(|e| closed_or(e, true))?;
    if (got as u64) < want {
        return Err(PacketError::Closed { mid: true });
    }
    parse_after_len(rest)
}

fn closed_or(e: io::Error, mid: bool) -> PacketError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
            PacketError::Closed { mid }
        }
        _ => PacketError::Io(e),
    }
}

fn read_exact(r: &mut dyn Read, buf: &mut [u8], mid: bool) -> Result<(), PacketError> {
    let mut at = 0;
    while at < buf.len() {
        match r.read(&mut buf[at..]) {
            Ok(0) => return Err(PacketError::Closed { mid: mid || at > 0 }),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(closed_or(e, mid || at > 0)),
        }
    }
    Ok(())
}

fn parse_after_len(mut rest: Vec<u8>) -> Result<Packet, PacketError> {
    let mut d = Decoder::new(&rest);
    let header = Header::decode(&mut d).map_err(PacketError::Header)?;
    rest.drain(..HEADER_LEN);
    Ok(Packet { header, body: rest })
}

/// Parses the first message in `bytes` (what [`read`] does, without I/O): the packet and the bytes it
/// took. For the fuzz target and tests.
pub fn parse(bytes: &[u8]) -> Result<(Packet, usize), PacketError> {
    if bytes.len() < LEN_LEN {
        return Err(PacketError::Closed { mid: !bytes.is_empty() });
    }
    let len = check_len(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))?;
    if bytes.len() < len {
        return Err(PacketError::Closed { mid: true });
    }
    Ok((parse_after_len(bytes[LEN_LEN..len].to_vec())?, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_round_trips() {
        let h = Header::call(REMOTE_PROGRAM, 23, 7);
        let bytes = encode(&h, &[1, 2, 3, 4]).unwrap();
        assert_eq!(bytes.len(), 32);
        assert_eq!(&bytes[..4], &[0, 0, 0, 32]);
        assert_eq!(&bytes[4..8], &[0x20, 0, 0x80, 0x86]);
        let (p, used) = parse(&bytes).unwrap();
        assert_eq!(used, 32);
        assert_eq!(p.header, h);
        assert_eq!(p.body, [1, 2, 3, 4]);
        let p = read(&mut &bytes[..]).unwrap();
        assert_eq!(p.header, h);
    }

    #[test]
    fn lengths_outside_libvirts_limits_are_refused_before_reading_on() {
        for len in [0u32, 3, 27, (LEN_LEN + MESSAGE_MAX + 1) as u32, u32::MAX] {
            let mut bytes = len.to_be_bytes().to_vec();
            bytes.extend_from_slice(&[0; 64]);
            let e = read(&mut &bytes[..]).unwrap_err();
            assert!(matches!(e, PacketError::Length { .. }), "{len}: {e}");
            assert!(e.to_string().contains("33554436"), "{e}");
        }
        // the largest legal message is accepted as a length (and then found to be truncated)
        let mut bytes = ((LEN_LEN + MESSAGE_MAX) as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&encode(&Header::call(1, 1, 1), &[]).unwrap()[4..]);
        assert!(matches!(read(&mut &bytes[..]), Err(PacketError::Closed { mid: true })));
    }

    #[test]
    fn a_closed_or_damaged_stream_is_named() {
        assert!(matches!(read(&mut &[][..]), Err(PacketError::Closed { mid: false })));
        assert!(matches!(read(&mut &[0, 0][..]), Err(PacketError::Closed { mid: true })));
        let mut bytes = encode(&Header::call(1, 1, 1), &[9; 8]).unwrap();
        bytes.truncate(bytes.len() - 1);
        assert!(matches!(read(&mut &bytes[..]), Err(PacketError::Closed { mid: true })));
        // an unknown message type and status
        let mut bytes = encode(&Header::call(1, 1, 1), &[]).unwrap();
        bytes[19] = 9;
        assert!(matches!(read(&mut &bytes[..]), Err(PacketError::Header(XdrError::Invalid { value: 9, .. }))));
        let mut bytes = encode(&Header::call(1, 1, 1), &[]).unwrap();
        bytes[27] = 3;
        assert!(matches!(read(&mut &bytes[..]), Err(PacketError::Header(XdrError::Invalid { value: 3, .. }))));
    }

    #[test]
    fn a_message_over_the_limit_is_not_sent() {
        let body = vec![0u8; MESSAGE_MAX - HEADER_LEN + 1];
        assert!(encode(&Header::call(1, 1, 1), &body).is_err());
        assert!(encode(&Header::call(1, 1, 1), &body[1..]).is_ok());
    }
}
