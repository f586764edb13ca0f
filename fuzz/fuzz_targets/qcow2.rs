//! The qcow2 header check on hostile input: never a panic, and what it accepts has no backing file, no
//! external data file, no encryption and a bounded size. The input is read as an image of its own and applied
//! as patches (1 byte of offset into the first 256 bytes, 1 byte of value) to a valid header.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmcpi::diskimage::{qcow2, MAX_VIRTUAL_SIZE};

fn check(head: &[u8]) {
    let mut r = head;
    if let Ok((info, replay)) = qcow2::inspect_stream(&mut r, head.len() as u64) {
        assert!(head.starts_with(&replay));
        assert!(info.version == 2 || info.version == 3);
        assert!(info.virtual_size > 0 && info.virtual_size <= MAX_VIRTUAL_SIZE);
        let backing_offset = u64::from_be_bytes(head[8..16].try_into().unwrap());
        let backing_size = u32::from_be_bytes(head[16..20].try_into().unwrap());
        let crypt = u32::from_be_bytes(head[32..36].try_into().unwrap());
        assert!(backing_offset == 0 && backing_size == 0 && crypt == 0);
        if info.version == 3 {
            assert_eq!(head[79] & 0b110, 0, "the data file and corrupt bits are refused");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut v = vec![0u8; 4096];
    v[0..4].copy_from_slice(b"QFI\xfb");
    v[4..8].copy_from_slice(&3u32.to_be_bytes());
    v[20..24].copy_from_slice(&16u32.to_be_bytes());
    v[24..32].copy_from_slice(&(1u64 << 30).to_be_bytes());
    v[36..40].copy_from_slice(&2u32.to_be_bytes());
    v[40..48].copy_from_slice(&0x30000u64.to_be_bytes());
    v[48..56].copy_from_slice(&0x10000u64.to_be_bytes());
    v[56..60].copy_from_slice(&1u32.to_be_bytes());
    v[96..100].copy_from_slice(&4u32.to_be_bytes());
    v[100..104].copy_from_slice(&104u32.to_be_bytes());
    // a backing format extension, then the end
    v[104..112].copy_from_slice(&[0xe2, 0x79, 0x2a, 0xca, 0, 0, 0, 3]);
    v[112..115].copy_from_slice(b"raw");
    for p in data.chunks_exact(2) {
        v[p[0] as usize] = p[1];
    }
    check(&v);
});
