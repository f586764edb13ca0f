//! XDR (RFC 4506) as libvirt's RPC protocol uses it: big-endian 4-byte units; `hyper` in 8 bytes; counted
//! strings and opaques padded to a multiple of 4; an optional value (`T *` in the .x files) as a 4-byte
//! 0/1 before the value; `char` and `unsigned char` in 4 bytes like `int`.
//!
//! The decoder is for bytes from the network: every length is checked against the limit the .x file
//! declares and against the bytes actually left in the message *before* anything is allocated, so a
//! hostile length costs nothing.
use std::fmt;

/// Longest string either side may send: `VIR_NET_MESSAGE_STRING_MAX` (virnetprotocol.x). libvirt's own
/// `REMOTE_STRING_MAX` (remote_protocol.x) is the same 4 MiB in current releases.
pub const STRING_MAX: usize = 4_194_304;

/// A message that is not what the protocol allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XdrError {
    #[error("the message ends early: {what} needs {need} bytes, {left} are left")]
    Short { what: &'static str, need: usize, left: usize },
    #[error("{what} is {len} long, over the protocol's limit of {max}")]
    TooLong { what: &'static str, len: usize, max: usize },
    #[error("{what} is not valid UTF-8")]
    Utf8 { what: &'static str },
    #[error("{what} has the invalid value {value}")]
    Invalid { what: &'static str, value: i64 },
    #[error("{left} unexpected bytes follow the message body")]
    Trailing { left: usize },
}

/// Writes XDR into a growing buffer.
#[derive(Debug, Default)]
pub struct Encoder {
    buf: Vec<u8>,
}

fn pad(len: usize) -> usize {
    (4 - len % 4) % 4
}

impl Encoder {
    pub fn new() -> Self {
        Encoder { buf: Vec::new() }
    }

    /// An encoder whose output follows `prefix` (a packet header, say).
    pub fn after(prefix: Vec<u8>) -> Self {
        Encoder { buf: prefix }
    }

    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_bits().to_be_bytes());
    }
    pub fn bool(&mut self, v: bool) {
        self.i32(i32::from(v));
    }

    /// `opaque x<max>`: the length, the bytes, the padding.
    pub fn opaque(&mut self, what: &'static str, v: &[u8], max: usize) -> Result<(), XdrError> {
        if v.len() > max {
            return Err(XdrError::TooLong { what, len: v.len(), max });
        }
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
        self.buf.extend(std::iter::repeat_n(0, pad(v.len())));
        Ok(())
    }

    /// `opaque x[N]`: the bytes and the padding, no length.
    pub fn fixed_opaque(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
        self.buf.extend(std::iter::repeat_n(0, pad(v.len())));
    }

    /// `string x<max>`.
    pub fn string(&mut self, what: &'static str, v: &str, max: usize) -> Result<(), XdrError> {
        self.opaque(what, v.as_bytes(), max)
    }

    /// Bytes written as they are (a stream packet's payload).
    pub fn raw(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
}

/// Reads XDR from one message body.
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl fmt::Debug for Decoder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder").field("len", &self.buf.len()).field("pos", &self.pos).finish()
    }
}

impl<'a> Decoder<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Decoder { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, what: &'static str, n: usize) -> Result<&'a [u8], XdrError> {
        if n > self.left() {
            return Err(XdrError::Short { what, need: n, left: self.left() });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], XdrError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(what, N)?);
        Ok(a)
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, XdrError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }
    pub fn i32(&mut self, what: &'static str) -> Result<i32, XdrError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }
    pub fn u64(&mut self, what: &'static str) -> Result<u64, XdrError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }
    pub fn i64(&mut self, what: &'static str) -> Result<i64, XdrError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }
    pub fn f64(&mut self, what: &'static str) -> Result<f64, XdrError> {
        Ok(f64::from_bits(self.u64(what)?))
    }
    /// XDR booleans are 0 or 1; anything else is refused (RFC 4506 §4.4).
    pub fn bool(&mut self, what: &'static str) -> Result<bool, XdrError> {
        match self.i32(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(XdrError::Invalid { what, value: v.into() }),
        }
    }

    /// A length word, checked against `max` and against what is left (each item at least `min_item`
    /// bytes), before the caller allocates anything for it.
    pub fn count(&mut self, what: &'static str, max: usize, min_item: usize) -> Result<usize, XdrError> {
        let n = self.u32(what)? as usize;
        if n > max {
            return Err(XdrError::TooLong { what, len: n, max });
        }
        let need = n.saturating_mul(min_item);
        if need > self.left() {
            return Err(XdrError::Short { what, need, left: self.left() });
        }
        Ok(n)
    }

    /// `opaque x<max>` as a slice of the message.
    pub fn opaque_ref(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], XdrError> {
        let n = self.count(what, max, 1)?;
        let v = self.take(what, n)?;
        self.take(what, pad(n))?;
        Ok(v)
    }

    pub fn opaque(&mut self, what: &'static str, max: usize) -> Result<Vec<u8>, XdrError> {
        self.opaque_ref(what, max).map(<[u8]>::to_vec)
    }

    /// `opaque x[N]`.
    pub fn fixed_opaque<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], XdrError> {
        let v = self.array::<N>(what)?;
        self.take(what, pad(N))?;
        Ok(v)
    }

    /// `string x<max>`, which must be UTF-8 (libvirt sends names, XML and messages).
    pub fn string(&mut self, what: &'static str, max: usize) -> Result<String, XdrError> {
        let v = self.opaque_ref(what, max)?;
        std::str::from_utf8(v).map(str::to_string).map_err(|_| XdrError::Utf8 { what })
    }

    /// The 0/1 word of an optional value (`T *`).
    pub fn present(&mut self, what: &'static str) -> Result<bool, XdrError> {
        self.bool(what)
    }

    /// Everything left (a stream packet's payload).
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }

    /// Fails when bytes are left over: a body longer than its type is not the type.
    pub fn finish(&self) -> Result<(), XdrError> {
        match self.left() {
            0 => Ok(()),
            left => Err(XdrError::Trailing { left }),
        }
    }
}

/// A type with an XDR encoding.
pub trait Encode {
    fn encode(&self, e: &mut Encoder) -> Result<(), XdrError>;
}

/// A type read from XDR.
pub trait Decode: Sized {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, XdrError>;
}

/// Decodes a whole body as `T`: nothing may be left over.
pub fn from_bytes<T: Decode>(bytes: &[u8]) -> Result<T, XdrError> {
    let mut d = Decoder::new(bytes);
    let v = T::decode(&mut d)?;
    d.finish()?;
    Ok(v)
}

/// Encodes `v` on its own.
pub fn to_bytes<T: Encode + ?Sized>(v: &T) -> Result<Vec<u8>, XdrError> {
    let mut e = Encoder::new();
    v.encode(&mut e)?;
    Ok(e.into_inner())
}

impl Encode for () {
    fn encode(&self, _: &mut Encoder) -> Result<(), XdrError> {
        Ok(())
    }
}
impl Decode for () {
    fn decode(_: &mut Decoder<'_>) -> Result<Self, XdrError> {
        Ok(())
    }
}

macro_rules! scalar {
    ($t:ty, $m:ident, $what:literal) => {
        impl Encode for $t {
            fn encode(&self, e: &mut Encoder) -> Result<(), XdrError> {
                e.$m(*self);
                Ok(())
            }
        }
        impl Decode for $t {
            fn decode(d: &mut Decoder<'_>) -> Result<Self, XdrError> {
                d.$m($what)
            }
        }
    };
}
scalar!(u32, u32, "an unsigned int");
scalar!(i32, i32, "an int");
scalar!(u64, u64, "an unsigned hyper");
scalar!(i64, i64, "a hyper");
scalar!(f64, f64, "a double");

/// `remote_nonnull_string`.
impl Encode for String {
    fn encode(&self, e: &mut Encoder) -> Result<(), XdrError> {
        e.string("a string", self, STRING_MAX)
    }
}
impl Decode for String {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, XdrError> {
        d.string("a string", STRING_MAX)
    }
}

/// An optional value (`remote_string` is `Option<String>`).
impl<T: Encode> Encode for Option<T> {
    fn encode(&self, e: &mut Encoder) -> Result<(), XdrError> {
        match self {
            None => {
                e.u32(0);
                Ok(())
            }
            Some(v) => {
                e.u32(1);
                v.encode(e)
            }
        }
    }
}
impl<T: Decode> Decode for Option<T> {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, XdrError> {
        if d.present("an optional value")? {
            T::decode(d).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// `remote_uuid`: `opaque[16]`.
impl Encode for [u8; 16] {
    fn encode(&self, e: &mut Encoder) -> Result<(), XdrError> {
        e.fixed_opaque(self);
        Ok(())
    }
}
impl Decode for [u8; 16] {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, XdrError> {
        d.fixed_opaque::<16>("a UUID")
    }
}

/// A variable-length array `T x<MAX>`, its limit in its type. `MIN` is the fewest bytes one item takes on
/// the wire, so a count is checked against the message before the vector is made.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct List<T, const MAX: usize, const MIN: usize = 4>(pub Vec<T>);

impl<T: Encode, const MAX: usize, const MIN: usize> Encode for List<T, MAX, MIN> {
    fn encode(&self, e: &mut Encoder) -> Result<(), XdrError> {
        if self.0.len() > MAX {
            return Err(XdrError::TooLong { what: "a list", len: self.0.len(), max: MAX });
        }
        e.u32(self.0.len() as u32);
        self.0.iter().try_for_each(|v| v.encode(e))
    }
}
impl<T: Decode, const MAX: usize, const MIN: usize> Decode for List<T, MAX, MIN> {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, XdrError> {
        let n = d.count("a list", MAX, MIN)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(T::decode(d)?);
        }
        Ok(List(v))
    }
}

/// Declares a struct of the .x files with its field order as the wire order, and its XDR codec.
macro_rules! xdr_struct {
    ($(#[$m:meta])* pub struct $name:ident { $( $(#[$fm:meta])* pub $f:ident : $t:ty ),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name { $( $(#[$fm])* pub $f: $t ),* }
        impl $crate::cpi::libvirt_rpc::xdr::Encode for $name {
            #[allow(unused_variables)]
            fn encode(&self, e: &mut $crate::cpi::libvirt_rpc::xdr::Encoder) -> Result<(), $crate::cpi::libvirt_rpc::xdr::XdrError> {
                $( self.$f.encode(e)?; )*
                Ok(())
            }
        }
        impl $crate::cpi::libvirt_rpc::xdr::Decode for $name {
            #[allow(unused_variables)]
            fn decode(d: &mut $crate::cpi::libvirt_rpc::xdr::Decoder<'_>) -> Result<Self, $crate::cpi::libvirt_rpc::xdr::XdrError> {
                Ok($name { $( $f: <$t as $crate::cpi::libvirt_rpc::xdr::Decode>::decode(d)? ),* })
            }
        }
    };
}
pub(crate) use xdr_struct;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_are_big_endian_in_4_or_8_bytes() {
        let mut e = Encoder::new();
        e.u32(0x0102_0304);
        e.i32(-2);
        e.u64(0x0102_0304_0506_0708);
        e.i64(-1);
        e.bool(true);
        e.f64(1.5);
        let b = e.into_inner();
        assert_eq!(&b[..4], &[1, 2, 3, 4]);
        assert_eq!(&b[4..8], &[0xff, 0xff, 0xff, 0xfe]);
        assert_eq!(&b[8..16], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&b[16..24], &[0xff; 8]);
        assert_eq!(&b[24..28], &[0, 0, 0, 1]);
        assert_eq!(&b[28..36], &1.5f64.to_bits().to_be_bytes());
        let mut d = Decoder::new(&b);
        assert_eq!(d.u32("u").unwrap(), 0x0102_0304);
        assert_eq!(d.i32("i").unwrap(), -2);
        assert_eq!(d.u64("u").unwrap(), 0x0102_0304_0506_0708);
        assert_eq!(d.i64("i").unwrap(), -1);
        assert!(d.bool("b").unwrap());
        assert_eq!(d.f64("d").unwrap(), 1.5);
        d.finish().unwrap();
    }

    #[test]
    fn strings_are_counted_and_padded() {
        for (s, wire) in [
            ("", vec![0, 0, 0, 0]),
            ("a", vec![0, 0, 0, 1, b'a', 0, 0, 0]),
            ("abcd", vec![0, 0, 0, 4, b'a', b'b', b'c', b'd']),
            ("abcde", vec![0, 0, 0, 5, b'a', b'b', b'c', b'd', b'e', 0, 0, 0]),
        ] {
            assert_eq!(to_bytes(&s.to_string()).unwrap(), wire, "{s:?}");
            assert_eq!(from_bytes::<String>(&wire).unwrap(), s);
        }
        assert_eq!(to_bytes(&Some("x".to_string())).unwrap(), [0, 0, 0, 1, 0, 0, 0, 1, b'x', 0, 0, 0]);
        assert_eq!(to_bytes(&None::<String>).unwrap(), [0, 0, 0, 0]);
        assert_eq!(from_bytes::<Option<String>>(&[0, 0, 0, 0]).unwrap(), None);
    }

    #[test]
    fn hostile_lengths_are_refused_before_allocating() {
        // a 4 GiB string in an 8-byte message
        let e = from_bytes::<String>(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4]).unwrap_err();
        assert!(matches!(e, XdrError::TooLong { len: 0xffff_ffff, max: STRING_MAX, .. }), "{e}");
        // within the limit, but longer than the message
        let e = from_bytes::<String>(&[0, 0, 0x10, 0, b'a']).unwrap_err();
        assert!(matches!(e, XdrError::Short { need: 4096, left: 1, .. }), "{e}");
        // a list of a billion items in a few bytes
        let e = from_bytes::<List<u32, 16384>>(&[0x40, 0, 0, 0, 0, 0, 0, 1]).unwrap_err();
        assert!(matches!(e, XdrError::TooLong { .. }), "{e}");
        let e = from_bytes::<List<u32, 16384>>(&[0, 0, 0x40, 0, 0, 0, 0, 1]).unwrap_err();
        assert!(matches!(e, XdrError::Short { need: 65536, left: 4, .. }), "{e}");
        // a string that is not UTF-8, a boolean that is neither 0 nor 1, bytes left over
        assert!(matches!(from_bytes::<String>(&[0, 0, 0, 1, 0xff, 0, 0, 0]), Err(XdrError::Utf8 { .. })));
        assert!(matches!(from_bytes::<Option<u32>>(&[0, 0, 0, 2, 0, 0, 0, 0]), Err(XdrError::Invalid { .. })));
        assert!(matches!(from_bytes::<u32>(&[0, 0, 0, 1, 0]), Err(XdrError::Trailing { left: 1 })));
        // a truncated scalar, a missing pad
        assert!(matches!(from_bytes::<u64>(&[0, 0, 0]), Err(XdrError::Short { .. })));
        assert!(matches!(from_bytes::<String>(&[0, 0, 0, 1, b'a']), Err(XdrError::Short { .. })));
    }

    #[test]
    fn the_encoder_refuses_what_the_peer_would() {
        let big = "x".repeat(STRING_MAX + 1);
        assert!(matches!(to_bytes(&big), Err(XdrError::TooLong { .. })));
        let l: List<u32, 2> = List(vec![1, 2, 3]);
        assert!(matches!(to_bytes(&l), Err(XdrError::TooLong { .. })));
    }

    xdr_struct! {
        /// A struct as the .x files declare them.
        pub struct Sample {
            pub name: String,
            pub uuid: [u8; 16],
            pub id: i32,
            pub note: Option<String>,
            pub list: List<u64, 4, 8>,
        }
    }

    #[test]
    fn structs_round_trip_in_field_order() {
        let s = Sample {
            name: "vm-1".into(),
            uuid: [7; 16],
            id: -1,
            note: Some("n".into()),
            list: List(vec![1, u64::MAX]),
        };
        let b = to_bytes(&s).unwrap();
        assert_eq!(b.len(), 8 + 16 + 4 + 12 + 4 + 16);
        assert_eq!(&b[..8], &[0, 0, 0, 4, b'v', b'm', b'-', b'1']);
        assert_eq!(from_bytes::<Sample>(&b).unwrap(), s);
        for cut in 0..b.len() {
            assert!(from_bytes::<Sample>(&b[..cut]).is_err(), "cut at {cut}");
        }
    }
}
