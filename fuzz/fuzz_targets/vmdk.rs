//! The VMDK reader and the stream check on hostile input: never a panic, never an allocation a header asks
//! for, and what they accept is a well-formed disk. The input is read as a VMDK of its own, and applied as
//! patches (2 bytes of offset, 1 byte of value) to a valid stream-optimised VMDK (the header, descriptor,
//! grain markers and tables). Seeds: qemu-img's streamOptimized and monolithicSparse images.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::io::Read;
use vmcpi::diskimage::vmdk::{StreamWriter, VmdkReader};
use vmcpi::diskimage::{Checked, Chunk, Declared, MAX_VIRTUAL_SIZE};

fn read(bytes: &[u8]) {
    let scratch = std::env::temp_dir();
    if let Ok(mut r) = VmdkReader::open(bytes, bytes.len() as u64, &scratch) {
        let size = r.virtual_size();
        assert!(size > 0 && size <= MAX_VIRTUAL_SIZE);
        let mut at = 0;
        loop {
            match r.next_chunk() {
                Ok(Some(Chunk::Data { offset, bytes })) => {
                    assert!(offset == at && !bytes.is_empty() && bytes.len() <= 1 << 20);
                    at += bytes.len() as u64;
                }
                Ok(Some(Chunk::Hole { offset, len })) => {
                    assert!(offset == at && len > 0);
                    at += len;
                }
                Ok(None) => {
                    assert_eq!(at, size);
                    break;
                }
                Err(_) => break,
            }
        }
    }
    let mut inner = bytes;
    if let Ok(mut c) = Checked::new(Declared::Vmdk, "fuzz.vmdk", bytes.len() as u64, &mut inner) {
        let mut out = Vec::new();
        if c.read_to_end(&mut out).is_ok() {
            assert!(out == bytes);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    read(data);
    static BASE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let mut v = BASE
        .get_or_init(|| {
            let mut w = StreamWriter::new(Vec::new(), 1 << 20, "fuzz.vmdk").unwrap();
            w.data(0, &[1u8; 4000]).unwrap();
            w.data(5 << 16, b"grain five").unwrap();
            w.finish().unwrap()
        })
        .clone();
    // the patched bytes: the header, the descriptor and everything after the grains' start
    for p in data.chunks_exact(3) {
        let off = u16::from_le_bytes([p[0], p[1]]) as usize;
        let at = if off < 0x8000 { off % (21 * 512) } else { 128 * 512 + off % (v.len() - 128 * 512) };
        v[at] = p[2];
    }
    read(&v);
});
