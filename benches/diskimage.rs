//! Reading a stemcell's VMDK in process: a 2 GiB (virtual) stream-optimised VMDK made by qemu-img, read as a
//! stream (as it comes out of a stemcell archive) into the runs of a sparse raw disk, against
//! `qemu-img convert -f vmdk -O raw` of the same file. Prints MiB/s of virtual disk and of data.
//!
//! `cargo bench --bench diskimage` (release build). The image is made once and kept in target/bench-images.
//! Needs qemu-img.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use vmcpi::diskimage::vmdk::VmdkReader;
use vmcpi::diskimage::Chunk;

const VIRTUAL: u64 = 2 << 30;

/// A raw disk of 2 GiB shaped like a stemcell's root disk: 40 % holes, the rest in 64 KiB blocks of text-like
/// data (compresses about 4:1) and of binary-like data (about 1.3:1); and its stream-optimised VMDK.
fn image() -> (PathBuf, u64) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-images");
    std::fs::create_dir_all(&dir).unwrap();
    let vmdk = dir.join("disk-2g-stream-optimized.vmdk");
    let data_file = dir.join("disk-2g-stream-optimized.data");
    if let (true, Ok(d)) = (vmdk.exists(), std::fs::read_to_string(&data_file)) {
        return (vmdk, d.trim().parse().unwrap());
    }
    let raw = dir.join("disk-2g.raw.part");
    let f = std::fs::File::create(&raw).unwrap();
    f.set_len(VIRTUAL).unwrap();
    use std::os::unix::fs::FileExt;
    let words: Vec<&[u8]> =
        [&b"bosh "[..], b"agent ", b"/var/vcap/", b"stemcell ", b"ubuntu ", b"jammy ", b"lib", b".so.6 ", b"\n"]
            .to_vec();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut data = 0u64;
    let mut block = vec![0u8; 65536];
    for i in 0..VIRTUAL / 65536 {
        match next() % 10 {
            0..=3 => continue,
            4..=6 => {
                let mut at = 0;
                while at < block.len() {
                    let w = words[(next() % words.len() as u64) as usize];
                    let n = w.len().min(block.len() - at);
                    block[at..at + n].copy_from_slice(&w[..n]);
                    at += n;
                }
            }
            _ => {
                for c in block.chunks_mut(8) {
                    // bytes of a few bits of entropy each, like machine code and tables
                    let r = next();
                    for (j, b) in c.iter_mut().enumerate() {
                        *b = ((r >> (j * 8)) as u8) & 0x3f;
                    }
                }
            }
        }
        f.write_all_at(&block, i * 65536).unwrap();
        data += 65536;
    }
    drop(f);
    let part = dir.join("disk-2g-stream-optimized.vmdk.part");
    let st = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized"])
        .arg(&raw)
        .arg(&part)
        .status()
        .expect("qemu-img");
    assert!(st.success());
    std::fs::remove_file(&raw).unwrap();
    std::fs::rename(&part, &vmdk).unwrap();
    std::fs::write(&data_file, data.to_string()).unwrap();
    (vmdk, data)
}

/// A reader that is only a reader (no seek), as a tar entry is.
struct Stream(std::fs::File);

impl std::io::Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

fn mib_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs.max(1e-9)
}

fn main() {
    if Command::new("qemu-img").arg("--version").output().is_err() {
        println!("diskimage bench: qemu-img is not installed; nothing measured");
        return;
    }
    let (vmdk, data) = image();
    let len = std::fs::metadata(&vmdk).unwrap().len();
    let out_dir = tempfile::tempdir_in(Path::new(env!("CARGO_MANIFEST_DIR")).join("target")).unwrap();
    println!("2 GiB (virtual) stream-optimised VMDK: {} MiB file, {} MiB of data", len >> 20, data >> 20);
    let mut best = [f64::MAX; 4];
    let mut data_seen = 0;
    for _ in 0..3 {
        // the runs only (what a sparse upload sends)
        let t = Instant::now();
        let mut r = VmdkReader::open(Stream(std::fs::File::open(&vmdk).unwrap()), len, out_dir.path()).unwrap();
        let mut bytes = 0u64;
        while let Some(c) = r.next_chunk().unwrap() {
            if let Chunk::Data { bytes: b, .. } = c {
                bytes += b.len() as u64;
            }
        }
        best[0] = best[0].min(t.elapsed().as_secs_f64());
        data_seen = bytes;
        // a sparse raw file
        let raw = out_dir.path().join("ours.raw");
        let t = Instant::now();
        let mut r = VmdkReader::open(Stream(std::fs::File::open(&vmdk).unwrap()), len, out_dir.path()).unwrap();
        let f = std::fs::File::create(&raw).unwrap();
        r.write_sparse_raw(&f).unwrap();
        f.sync_all().unwrap();
        best[1] = best[1].min(t.elapsed().as_secs_f64());
        // qemu-img, the same file to a sparse raw file
        let theirs = out_dir.path().join("qemu.raw");
        let t = Instant::now();
        let st = Command::new("qemu-img")
            .args(["convert", "-f", "vmdk", "-O", "raw"])
            .arg(&vmdk)
            .arg(&theirs)
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::File::open(&theirs).unwrap().sync_all().unwrap();
        best[2] = best[2].min(t.elapsed().as_secs_f64());
        // qemu-img decoding only: into its null block driver
        let t = Instant::now();
        let st = Command::new("qemu-img")
            .args(["convert", "-n", "-f", "vmdk"])
            .arg(&vmdk)
            .args(["--target-image-opts", &format!("driver=null-co,size={VIRTUAL}")])
            .status()
            .unwrap();
        assert!(st.success());
        best[3] = best[3].min(t.elapsed().as_secs_f64());
    }
    let same = Command::new("cmp").arg(out_dir.path().join("ours.raw")).arg(out_dir.path().join("qemu.raw")).status();
    assert!(same.unwrap().success(), "our raw file differs from qemu-img's");
    println!("best of 3, release build; MiB/s of virtual disk (of data in parentheses):");
    for (what, secs) in [
        ("vmcpi VmdkReader, runs only (a sparse upload's input)", best[0]),
        ("qemu-img convert -f vmdk into its null driver (decoding only)", best[3]),
        ("vmcpi VmdkReader → sparse raw file", best[1]),
        ("qemu-img convert -f vmdk -O raw → sparse raw file", best[2]),
    ] {
        println!("  {what}: {secs:.2} s, {:.0} MiB/s ({:.0} MiB/s)", mib_s(VIRTUAL, secs), mib_s(data_seen, secs));
    }
    println!("  (the raw files are byte-identical)");
}
