//! libvirt's RPC protocol from a hostile daemon: the framing, every reply type the client decodes, and
//! the whole client (handshake, calls, a volume download) reading `data` as everything the peer sends.
//! Nothing may panic, and nothing may allocate more than the input could justify (the decoders check every
//! length against the bytes left before allocating).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::io::{self, Read, Write};
use vmcpi::libvirt_rpc::transport::Transport;
use vmcpi::libvirt_rpc::{packet, proto, stream, xdr, Client, RemoteError, StorageVol};

/// A peer that says `data` and swallows whatever the client sends.
struct Replay(io::Cursor<Vec<u8>>);

impl Read for Replay {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}
impl Write for Replay {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
impl Transport for Replay {
    fn target(&self) -> String {
        "fuzz".into()
    }
}

fuzz_target!(|data: &[u8]| {
    // the framing, and each body as every reply type
    if let Ok((pk, used)) = packet::parse(data) {
        assert!(used <= data.len());
        for p in proto::ALL {
            let _ = proto::decode_reply(*p, &pk.body);
        }
        let _ = xdr::from_bytes::<RemoteError>(&pk.body);
        let _ = stream::parse_hole(&pk.body);
    }
    let _ = packet::read(&mut &data[..]);
    for p in proto::ALL {
        let _ = proto::decode_reply(*p, data);
    }
    let _ = xdr::from_bytes::<RemoteError>(data);

    // the client, with `data` as the daemon's side of the conversation
    if let Ok(c) = Client::over(Box::new(Replay(io::Cursor::new(data.to_vec()))), "qemu:///system") {
        let _ = c.domain_lookup("vm");
        let _ = c.list_domains(0);
        let vol = StorageVol { pool: "p".into(), name: "v".into(), key: "/p/v".into() };
        let _ = c.vol_download_bytes(&vol, 1 << 20);
        let mut sink = io::Cursor::new(Vec::new());
        let _ = c.vol_download_to(&vol, &mut sink, true);
        let _ = c.hostname();
    }
});
