//! Volume upload and download over libvirt's streams (virnetprotocol.x, libvirt's
//! remote_daemon_stream.c): the call opens the stream, then packets of the call's serial carry the bytes
//! (`VIR_NET_STREAM`, status continue), skipped ranges (`VIR_NET_STREAM_HOLE` with a `virNetStreamHole`,
//! when the stream was opened sparse), and the end (status ok from the sender, confirmed by the other
//! side with status ok). A failure arrives as status error with a `remote_error`; the client aborts with
//! an empty status-error packet.
//!
//! An [`Upload`] or [`Download`] holds the connection until it ends: no other call can be made meanwhile.
//! Dropping one that did not finish aborts it.
use super::client::{decode, encode, keepalive, recv, remote_error, send, Client, State};
use super::error::{Error, Result};
use super::packet::{Header, Kind, Status, PROTOCOL_VERSION, STREAM_CHUNK};
use super::proto::{self as p, Proc, StorageVol};
use super::xdr::from_bytes;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::MutexGuard;

/// Stream packets sent between two checks for an early error from the server.
const CHECK_EVERY: u64 = 16;

/// An open upload into a volume: [`Upload::data`] and [`Upload::hole`] in order, then [`Upload::finish`].
pub struct Upload<'c> {
    st: MutexGuard<'c, State>,
    proc_: Proc,
    serial: u32,
    sparse: bool,
    sent: u64,
    packets: u64,
    done: bool,
}

/// A piece of a volume read by a [`Download`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    Data(Vec<u8>),
    /// A run of zeros the volume does not store (sparse downloads only).
    Hole(u64),
}

/// An open download from a volume: [`Download::next_chunk`] until `None`.
pub struct Download<'c> {
    st: MutexGuard<'c, State>,
    proc_: Proc,
    serial: u32,
    received: u64,
    done: bool,
}

fn stream_header(proc_: Proc, serial: u32, kind: Kind, status: Status) -> Header {
    Header { prog: proc_.prog, vers: PROTOCOL_VERSION, proc_: proc_.num, kind, serial, status }
}

impl Client {
    /// `STORAGE_VOL_UPLOAD`: opens a stream writing `length` bytes (0: to the volume's end) at `offset`.
    /// `sparse` opens it with `VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM`, so [`Upload::hole`] may skip ranges
    /// (zeros in a new volume), as `virsh vol-upload --sparse` does.
    pub fn vol_upload(&self, vol: &StorageVol, offset: u64, length: u64, sparse: bool) -> Result<Upload<'_>> {
        let flags = if sparse { super::client::flags::VOL_SPARSE_STREAM } else { 0 };
        let (st, serial) = self.open_stream(p::STORAGE_VOL_UPLOAD, vol, offset, length, flags)?;
        Ok(Upload { st, proc_: p::STORAGE_VOL_UPLOAD, serial, sparse, sent: 0, packets: 0, done: false })
    }

    /// `STORAGE_VOL_DOWNLOAD`: opens a stream reading `length` bytes (0: to the end) from `offset`;
    /// `sparse` asks for holes instead of zeros where the volume stores none.
    pub fn vol_download(&self, vol: &StorageVol, offset: u64, length: u64, sparse: bool) -> Result<Download<'_>> {
        let flags = if sparse { super::client::flags::VOL_SPARSE_STREAM } else { 0 };
        let (st, serial) = self.open_stream(p::STORAGE_VOL_DOWNLOAD, vol, offset, length, flags)?;
        Ok(Download { st, proc_: p::STORAGE_VOL_DOWNLOAD, serial, received: 0, done: false })
    }

    /// Uploads everything `src` yields into `vol` from offset 0. With `sparse`, every block of
    /// `hole_granularity` bytes that is all zeros is sent as a hole (a new volume stays unallocated
    /// there). Returns the bytes covered (data and holes).
    pub fn vol_upload_from(&self, vol: &StorageVol, src: &mut dyn Read, sparse: bool) -> Result<u64> {
        const BLOCK: usize = 64 << 10;
        let mut up = self.vol_upload(vol, 0, 0, sparse)?;
        let mut buf = vec![0u8; STREAM_CHUNK.div_ceil(BLOCK) * BLOCK];
        loop {
            let n = read_full(src, &mut buf)
                .map_err(|e| Error::Invalid(format!("cannot read the upload's source: {e}")))?;
            if n == 0 {
                break;
            }
            if !sparse {
                up.data(&buf[..n])?;
                continue;
            }
            // runs of data and of zero blocks, each sent whole
            let mut at = 0;
            while at < n {
                let end = (at + BLOCK).min(n);
                let zero = buf[at..end].iter().all(|b| *b == 0);
                let mut run_end = end;
                while run_end < n {
                    let next = (run_end + BLOCK).min(n);
                    if buf[run_end..next].iter().all(|b| *b == 0) != zero {
                        break;
                    }
                    run_end = next;
                }
                if zero {
                    up.hole((run_end - at) as u64)?;
                } else {
                    up.data(&buf[at..run_end])?;
                }
                at = run_end;
            }
        }
        up.finish()
    }

    /// Downloads `vol` into `dst` from its start: holes become seeks (`dst` stays sparse where the volume
    /// is). Returns the length covered; a trailing hole is only a seek, so a file's length is the caller's
    /// to set (`File::set_len`).
    pub fn vol_download_to<W: Write + Seek>(&self, vol: &StorageVol, dst: &mut W, sparse: bool) -> Result<u64> {
        let mut down = self.vol_download(vol, 0, 0, sparse)?;
        let local = |e: io::Error| Error::Invalid(format!("cannot write the download: {e}"));
        let mut pos = 0u64;
        while let Some(c) = down.next_chunk()? {
            match c {
                Chunk::Data(d) => {
                    dst.write_all(&d).map_err(local)?;
                    pos += d.len() as u64;
                }
                Chunk::Hole(n) => {
                    pos += n;
                    dst.seek(SeekFrom::Start(pos)).map_err(local)?;
                }
            }
        }
        dst.flush().map_err(local)?;
        Ok(pos)
    }

    /// Downloads a small volume whole into memory (holes as zeros); refuses one over `max` bytes without
    /// reading on.
    pub fn vol_download_bytes(&self, vol: &StorageVol, max: usize) -> Result<Vec<u8>> {
        let mut down = self.vol_download(vol, 0, 0, false)?;
        let mut out = Vec::new();
        while let Some(c) = down.next_chunk()? {
            let add = match &c {
                Chunk::Data(d) => d.len(),
                Chunk::Hole(n) => usize::try_from(*n).unwrap_or(usize::MAX),
            };
            if out.len().saturating_add(add) > max {
                return Err(Error::Invalid(format!("volume {} is larger than {max} bytes", vol.name)));
            }
            match c {
                Chunk::Data(d) => out.extend_from_slice(&d),
                Chunk::Hole(n) => out.resize(out.len() + n as usize, 0),
            }
        }
        Ok(out)
    }

    /// Sends the call that opens a stream and waits for its reply; the connection stays locked.
    fn open_stream(
        &self,
        proc_: Proc,
        vol: &StorageVol,
        offset: u64,
        length: u64,
        flags: u32,
    ) -> Result<(MutexGuard<'_, State>, u32)> {
        let args = p::VolTransferArgs { vol: vol.clone(), offset, length, flags };
        let body = encode(&args)?;
        let mut st = self.lock();
        self.ensure(&mut st)?;
        self.roundtrip(&mut st, proc_, &body)?;
        if !st.early.is_empty() {
            crate::debug!("libvirt: {} packet(s) of the {} stream came before its reply", st.early.len(), proc_.name);
        }
        let serial = st.serial();
        Ok((st, serial))
    }
}

fn read_full(src: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl State {
    fn io_target(&mut self, doing: &str) -> Result<(&mut (dyn super::transport::Transport + 'static), String)> {
        let target = self.target.clone();
        match self.io.as_mut() {
            Some(io) => Ok((io.as_mut(), target)),
            None => Err(Error::Disconnected { target, doing: doing.to_string(), reason: "not connected".into() }),
        }
    }
}

/// What the stream's packets from the server say.
enum Incoming {
    Data(Vec<u8>),
    Hole(u64),
    /// Status ok: the end (a download's last packet, or the confirmation of our end or abort).
    Ok,
    Failed(Error),
}

/// Reads packets until one of the stream's arrives.
fn next_incoming(st: &mut State, proc_: Proc, serial: u32, doing: &str) -> Result<Incoming> {
    for _ in 0..100_000 {
        if let Some(i) = one_packet(st, proc_, serial, doing)? {
            return Ok(i);
        }
    }
    Err(Error::Protocol { target: st.target.clone(), doing: doing.into(), reason: "100000 unrelated messages".into() })
}

/// Reads one packet: what it says about the stream, `None` when it is about something else (keepalive,
/// an event, another serial).
fn one_packet(st: &mut State, proc_: Proc, serial: u32, doing: &str) -> Result<Option<Incoming>> {
    let early = st.early.pop_front();
    let (io, target) = st.io_target(doing)?;
    let pk = match early {
        Some(pk) => pk,
        None => recv(io, &target, doing)?,
    };
    if keepalive(io, &target, &pk)? {
        return Ok(None);
    }
    let h = pk.header;
    if h.prog != proc_.prog || h.serial != serial {
        return Ok(None);
    }
    Ok(Some(match (h.kind, h.status) {
        (Kind::Stream, Status::Continue) => Incoming::Data(pk.body),
        (Kind::StreamHole, Status::Continue) => {
            let hole: p::StreamHole = decode(&target, proc_, &pk.body)?;
            if hole.length < 0 {
                return Err(Error::Protocol {
                    target,
                    doing: doing.to_string(),
                    reason: format!("a hole of {} bytes", hole.length),
                });
            }
            Incoming::Hole(hole.length as u64)
        }
        (Kind::Stream, Status::Ok) => Incoming::Ok,
        // a stream error, or the error reply libvirtd sends when writing the data failed
        (Kind::Stream | Kind::Reply | Kind::StreamHole, Status::Error) => {
            Incoming::Failed(remote_error(&target, proc_, &pk.body))
        }
        (k, s) => {
            return Err(Error::Protocol {
                target,
                doing: doing.to_string(),
                reason: format!("unexpected {k:?} packet with status {s:?} in a stream"),
            })
        }
    }))
}

/// Drops the connection after a failure that leaves the stream in an unknown state.
/// Sends our end of a stream (`Ok`: finished, `Error`: aborted) and waits, across at most `max` packets of
/// the stream (its data and holes are dropped), for libvirt's answer: `None` when it confirms the end,
/// libvirt's error when it reports one.
fn end_stream(
    st: &mut State,
    proc_: Proc,
    serial: u32,
    status: Status,
    doing: &str,
    max: u32,
) -> Result<Option<Error>> {
    let h = stream_header(proc_, serial, Kind::Stream, status);
    {
        let (io, target) = st.io_target(doing)?;
        send(io, &target, &h, &[], doing)?;
    }
    for _ in 0..max {
        match next_incoming(st, proc_, serial, doing)? {
            Incoming::Ok => return Ok(None),
            Incoming::Failed(e) => return Ok(Some(e)),
            Incoming::Data(_) | Incoming::Hole(_) => continue,
        }
    }
    Err(Error::Protocol { target: st.target.clone(), doing: doing.into(), reason: "no end to the stream".into() })
}

fn poison<T>(st: &mut State, r: Result<T>) -> Result<T> {
    if let Err(e) = &r {
        if !matches!(e, Error::Remote { .. }) {
            st.io = None;
        }
    }
    r
}

impl Upload<'_> {
    /// Bytes (data and holes) sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    fn packet(&mut self, kind: Kind, status: Status, body: &[u8], doing: &str) -> Result<()> {
        let h = stream_header(self.proc_, self.serial, kind, status);
        let (io, target) = self.st.io_target(doing)?;
        send(io, &target, &h, body, doing)
    }

    /// Every few packets: if the server already answered (it does only to report a failure), stop now.
    fn check_early_error(&mut self) -> Result<()> {
        self.packets += 1;
        if !self.packets.is_multiple_of(CHECK_EVERY) {
            return Ok(());
        }
        let readable = !self.st.early.is_empty() || self.st.io.as_mut().is_some_and(|io| io.readable());
        if !readable {
            return Ok(());
        }
        match one_packet(&mut self.st, self.proc_, self.serial, "uploading")? {
            // keepalive, an event: nothing about this upload
            None => Ok(()),
            Some(Incoming::Failed(e)) => {
                self.done = true;
                Err(e)
            }
            Some(_) => {
                self.done = true;
                Err(Error::Protocol {
                    target: self.st.target.clone(),
                    doing: "uploading".into(),
                    reason: "the server answered in the middle of an upload".into(),
                })
            }
        }
    }

    /// Sends `buf` (in packets of libvirt's stream size).
    pub fn data(&mut self, buf: &[u8]) -> Result<()> {
        for chunk in buf.chunks(STREAM_CHUNK) {
            let r =
                self.packet(Kind::Stream, Status::Continue, chunk, "uploading").and_then(|_| self.check_early_error());
            poison(&mut self.st, r)?;
            self.sent += chunk.len() as u64;
        }
        Ok(())
    }

    /// Skips `len` bytes (only in a sparse upload). libvirt seeks over the hole and truncates the
    /// volume's file there (`virFDStreamSendHole`), so the file ends where the stream ends: a sparse
    /// upload covers the volume to its end, a trailing run of zeros as a last hole (as
    /// [`Client::vol_upload_from`] does), and a hole does not keep what a used volume held after it.
    pub fn hole(&mut self, len: u64) -> Result<()> {
        if !self.sparse {
            return Err(Error::Invalid("a hole in an upload that was not opened sparse".into()));
        }
        if len == 0 {
            return Ok(());
        }
        let length = i64::try_from(len).map_err(|_| Error::Invalid(format!("a hole of {len} bytes")))?;
        let body = encode(&p::StreamHole { length, flags: 0 })?;
        let r =
            self.packet(Kind::StreamHole, Status::Continue, &body, "uploading").and_then(|_| self.check_early_error());
        poison(&mut self.st, r)?;
        self.sent += len;
        Ok(())
    }

    /// Ends the upload and waits for libvirt to confirm that everything was written; the bytes covered.
    pub fn finish(mut self) -> Result<u64> {
        self.done = true;
        let r = self.end(Status::Ok, "finishing the upload");
        poison(&mut self.st, r)?;
        Ok(self.sent)
    }

    /// Abandons the upload (what was written stays written).
    pub fn abort(mut self) -> Result<()> {
        self.done = true;
        let r = self.end(Status::Error, "aborting the upload");
        poison(&mut self.st, r)
    }

    fn end(&mut self, status: Status, doing: &str) -> Result<()> {
        // a download's data cannot come here; tolerate and wait for the verdict
        match end_stream(&mut self.st, self.proc_, self.serial, status, doing, 1000)? {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Write for Upload<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.data(buf).map_err(io::Error::other)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            let r = self.end(Status::Error, "aborting the upload");
            let _ = poison(&mut self.st, r);
        }
    }
}

impl Download<'_> {
    /// Bytes (data and holes) received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The next piece of the volume; `None` at its end (the stream is then closed).
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        if self.done {
            return Ok(None);
        }
        let r = next_incoming(&mut self.st, self.proc_, self.serial, "downloading");
        match poison(&mut self.st, r) {
            Ok(Incoming::Data(d)) if d.is_empty() => {
                // the end of the data: say we are finished, libvirt confirms
                self.done = true;
                let r = self.close(Status::Ok, "finishing the download");
                poison(&mut self.st, r)?;
                Ok(None)
            }
            Ok(Incoming::Data(d)) => {
                self.received += d.len() as u64;
                Ok(Some(Chunk::Data(d)))
            }
            Ok(Incoming::Hole(n)) => {
                self.received += n;
                Ok(Some(Chunk::Hole(n)))
            }
            Ok(Incoming::Ok) => {
                self.done = true;
                Ok(None)
            }
            Ok(Incoming::Failed(e)) => {
                self.done = true;
                Err(e)
            }
            Err(e) => {
                self.done = true;
                Err(e)
            }
        }
    }

    fn close(&mut self, status: Status, doing: &str) -> Result<()> {
        // data still in flight before libvirt sees our end is read and dropped
        match end_stream(&mut self.st, self.proc_, self.serial, status, doing, 1_000_000)? {
            Some(e) if status == Status::Error => {
                // an abort that libvirt reports as an error is still the end of the stream
                crate::debug!("libvirt: download aborted: {e}");
                Ok(())
            }
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Download<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            let r = self.close(Status::Error, "aborting the download");
            let _ = poison(&mut self.st, r);
        }
    }
}

/// Decodes a hole packet's body (for the fuzz target).
pub fn parse_hole(body: &[u8]) -> Option<i64> {
    from_bytes::<p::StreamHole>(body).ok().map(|h| h.length)
}
