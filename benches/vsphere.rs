//! Benchmark of the vSphere driver against the simulator: for each CPI method, the HTTP round trips the
//! built `vmcpi` makes (it logs them) and the wall time of the whole process (median of several runs),
//! for the vCenter and the ESXi model; then the peak RSS of a 4 GiB stemcell import (the CPI logs its own
//! `VmHWM`), and wall time and peak RSS of a 2 GiB stemcell *archive* import (a gzipped tar with OVF + VMDK,
//! as a director hands it over: unpacking and upload both count). Run: `nice -n 15 cargo bench -j 1 --bench
//! vsphere` (`-- import` for the two imports only; `VMCPI_BIN=PATH` measures another vmcpi build, e.g. an
//! older one to compare). Needs `target/vcsim` (or `$VCSIM`).
#[path = "../tests/vsphere_sim.rs"]
mod vsphere_sim;

use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vsphere_sim::{stemcell_image, vcsim_binary, Vcsim};

struct Outcome {
    result: Value,
    error: Value,
    stderr: String,
    wall: Duration,
}

/// The vmcpi under test: this build, or `$VMCPI_BIN` (e.g. a copy of an older build, to compare).
fn vmcpi() -> std::path::PathBuf {
    std::env::var_os("VMCPI_BIN").map(Into::into).unwrap_or_else(|| env!("CARGO_BIN_EXE_vmcpi").into())
}

fn call(config: &Path, method: &str, args: Value) -> Outcome {
    let req = json!({"method": method, "arguments": args, "context": {"director_uuid": "bench"}, "api_version": 2});
    let started = Instant::now();
    let mut child = Command::new(vmcpi())
        .arg("--config")
        .arg(config)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vmcpi");
    child.stdin.take().unwrap().write_all(req.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let wall = started.elapsed();
    let resp: Value = serde_json::from_slice(&out.stdout).expect("JSON response");
    Outcome {
        result: resp["result"].clone(),
        error: resp["error"].clone(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        wall,
    }
}

fn round_trips(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.split("vSphere: ").nth(1).and_then(|r| r.strip_suffix(" HTTP round trips")))
        .unwrap_or("0")
        .to_string()
}

fn row(name: &str, runs: &[Outcome]) {
    let mut walls: Vec<Duration> = runs.iter().map(|o| o.wall).collect();
    walls.sort();
    let median = walls[walls.len() / 2];
    let err = runs
        .iter()
        .find(|o| !o.error.is_null())
        .map(|o| format!("  ({})", o.error["type"].as_str().unwrap_or("error")))
        .unwrap_or_default();
    println!("  {name:<30} {:>5} {:>9.1} ms{err}", round_trips(&runs[0].stderr), median.as_secs_f64() * 1000.0);
}

fn bench_model(bin: &Path, model: &'static str) {
    let sim = Vcsim::start(bin, model, false);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cpi.json");
    std::fs::write(&config, sim.config().to_string()).unwrap();
    let image = stemcell_image(dir.path(), false);
    const N: usize = 5;
    println!("\nvSphere simulator, model {model} (median of {N} runs; wall time = whole CPI process)");
    println!("  {:<30} {:>5} {:>12}", "method", "RTs", "wall");
    let many = |method: &str, args: &dyn Fn() -> Value| -> Vec<Outcome> {
        (0..N).map(|_| call(&config, method, args())).collect()
    };

    let scs = many("create_stemcell", &|| json!([image, {}]));
    let sc = scs[0].result.as_str().expect("stemcell").to_string();
    row("create_stemcell (200 KB image)", &scs);
    let nets = json!({"default": {"type": "manual", "ip": "10.0.0.5", "netmask": "255.255.255.0", "gateway": "10.0.0.1", "cloud_properties": {"name": "VM Network"}}});
    let vms = many("create_vm", &|| json!(["agent", sc, {"cpu": 2, "ram": 1024, "disk": 2048}, nets, [], {}]));
    let vm_ids: Vec<String> = vms.iter().map(|o| o.result[0].as_str().expect("vm").to_string()).collect();
    row("create_vm", &vms);
    let vm = vm_ids[0].clone();
    row("has_vm", &many("has_vm", &|| json!([vm])));
    row("reboot_vm", &many("reboot_vm", &|| json!([vm])));
    let md = json!({"director": "bench", "deployment": "dep", "name": "web/0", "index": "0"});
    row("set_vm_metadata (4 keys)", &many("set_vm_metadata", &|| json!([vm, md])));
    row(
        "calculate_vm_cloud_properties",
        &many("calculate_vm_cloud_properties", &|| json!([{"ram": 1024, "cpu": 1, "ephemeral_disk_size": 1024}])),
    );
    let disks = many("create_disk", &|| json!([1024, {}, vm]));
    let disk_ids: Vec<String> = disks.iter().map(|o| o.result.as_str().expect("disk").to_string()).collect();
    row("create_disk", &disks);
    row("has_disk", &many("has_disk", &|| json!([disk_ids[0]])));
    let attach: Vec<Outcome> = disk_ids.iter().map(|d| call(&config, "attach_disk", json!([vm, d]))).collect();
    row("attach_disk", &attach);
    row("get_disks", &many("get_disks", &|| json!([vm])));
    row("set_disk_metadata", &many("set_disk_metadata", &|| json!([disk_ids[0], {"director": "bench"}])));
    row("resize_disk", &many("resize_disk", &|| json!([disk_ids[0], 2048])));
    let detach: Vec<Outcome> = disk_ids.iter().map(|d| call(&config, "detach_disk", json!([vm, d]))).collect();
    row("detach_disk", &detach);
    let del: Vec<Outcome> = vm_ids.iter().map(|v| call(&config, "delete_vm", json!([v]))).collect();
    row("delete_vm", &del);
    let del: Vec<Outcome> = disk_ids.iter().map(|d| call(&config, "delete_disk", json!([d]))).collect();
    row("delete_disk", &del);
    let del: Vec<Outcome> = scs.iter().map(|s| call(&config, "delete_stemcell", json!([s.result]))).collect();
    row("delete_stemcell", &del);
    row("info", &many("info", &|| json!([])));
}

fn big_import(bin: &Path) {
    let sim = Vcsim::start(bin, "vpx", false);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cpi.json");
    std::fs::write(&config, sim.config().to_string()).unwrap();
    // a bare stream-optimised VMDK of 4 GiB (sparse on disk): the upload streams every byte
    let image = dir.path().join("image-4g.vmdk");
    let mut f = std::fs::File::create(&image).unwrap();
    f.write_all(&vsphere_sim::vmdk(0)).unwrap();
    f.set_len(4 << 30).unwrap();
    let o = call(&config, "create_stemcell", json!([image, {}]));
    assert!(o.error.is_null(), "{}\n{}", o.error, o.stderr);
    let rss = o.stderr.lines().find_map(|l| l.split("peak RSS ").nth(1)).unwrap_or("?");
    let secs = o.wall.as_secs_f64();
    println!(
        "\n4 GiB stemcell import (vCenter model): {} HTTP round trips, {secs:.1} s ({:.0} MiB/s), peak RSS {rss}",
        round_trips(&o.stderr),
        4096.0 / secs
    );
}

/// A vSphere stemcell `image` of `gib` GiB (gzipped tar: image.ovf, image.mf, image-disk1.vmdk), cached in
/// target/bench-images. The VMDK's body is pseudo-random, as the compressed grains of a real stream-optimised
/// VMDK are; gzip cannot shrink it either, so it is written as stored blocks (what gzip -9 makes of such data).
fn archive_image(gib: u64) -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-images");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("vsphere-{gib}g.image"));
    if path.exists() {
        return path;
    }
    let body = gib << 30;
    let mut head = vsphere_sim::vmdk(0);
    let total = head.len() as u64 + body;
    let ovf = vsphere_sim::stemcell_ovf(false, total);
    let tmp = dir.join(format!("vsphere-{gib}g.image.part"));
    let f = std::fs::File::create(&tmp).unwrap();
    let gz = flate2::write::GzEncoder::new(std::io::BufWriter::new(f), flate2::Compression::none());
    let mut t = tar::Builder::new(gz);
    for (name, data) in [("image.ovf", ovf.as_bytes()), ("image.mf", b"SHA1(image.ovf)= 0\n".as_slice())] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        t.append_data(&mut h, name, data).unwrap();
    }
    // the disk: header then pseudo-random bytes (xorshift), streamed into the tar
    struct Noise {
        head: std::io::Cursor<Vec<u8>>,
        left: u64,
        x: u64,
    }
    impl std::io::Read for Noise {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.head.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            let n = (buf.len() as u64).min(self.left) as usize / 8 * 8;
            for c in buf[..n].chunks_exact_mut(8) {
                self.x ^= self.x << 13;
                self.x ^= self.x >> 7;
                self.x ^= self.x << 17;
                c.copy_from_slice(&self.x.to_le_bytes());
            }
            self.left -= n as u64;
            Ok(n)
        }
    }
    use std::io::Read as _;
    head.truncate(512);
    let mut h = tar::Header::new_gnu();
    h.set_size(total);
    h.set_mode(0o644);
    let noise = Noise { head: std::io::Cursor::new(head), left: body, x: 0x9e37_79b9_7f4a_7c15 };
    t.append_data(&mut h, "image-disk1.vmdk", noise.take(total)).unwrap();
    t.into_inner().unwrap().finish().unwrap().into_inner().unwrap().sync_all().unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

fn archive_import(bin: &Path, gib: u64) {
    let image = archive_image(gib);
    let sim = Vcsim::start(bin, "vpx", false);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cpi.json");
    std::fs::write(&config, sim.config().to_string()).unwrap();
    // three runs (the datastore keeps each stemcell: delete it before the next run)
    let mut runs: Vec<Outcome> = (0..3)
        .map(|_| {
            let o = call(&config, "create_stemcell", json!([image, {}]));
            assert!(o.error.is_null(), "{}\n{}", o.error, o.stderr);
            let d = call(&config, "delete_stemcell", json!([o.result]));
            assert!(d.error.is_null(), "{}", d.error);
            o
        })
        .collect();
    runs.sort_by_key(|o| o.wall);
    let o = &runs[1];
    let rss = o.stderr.lines().find_map(|l| l.split("peak RSS ").nth(1)).unwrap_or("?");
    let secs = o.wall.as_secs_f64();
    let all: Vec<String> = runs.iter().map(|o| format!("{:.1}", o.wall.as_secs_f64())).collect();
    println!(
        "\n{gib} GiB stemcell archive import (gzipped tar, OVF + VMDK; vCenter model): {secs:.1} s median of [{}] s ({:.0} MiB/s), peak RSS {rss}",
        all.join(", "),
        (gib * 1024) as f64 / secs
    );
}

fn main() {
    let Some(bin) = vcsim_binary() else {
        eprintln!("vcsim not found: bash tools/vcsim/build.sh target/vcsim");
        std::process::exit(if std::env::var("CI").is_ok() { 1 } else { 0 });
    };
    let only_import = std::env::args().skip(1).any(|a| a == "import");
    if !only_import {
        bench_model(&bin, "vpx");
        bench_model(&bin, "esx");
    }
    big_import(&bin);
    archive_import(&bin, 2);
}
