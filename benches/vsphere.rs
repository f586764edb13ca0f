//! Benchmark of the vSphere driver against the simulator: for each CPI method, the HTTP round trips the
//! built `vmcpi` makes (it logs them; the last of the runs, which found the session an earlier call kept)
//! and the wall time of the whole process (median of several runs),
//! for the vCenter and the ESXi model; then the peak RSS of a 4 GiB stemcell import (the CPI logs its own
//! `VmHWM`), and wall time and peak RSS of a 2 GiB stemcell *archive* import (a gzipped tar with OVF + VMDK,
//! as a director hands it over: unpacking and upload both count). Run: `nice -n 15 cargo bench -j 1 --bench
//! vsphere` (`-- import` for the two imports only; `VMCPI_BIN=PATH` measures another vmcpi build). Needs
//! `target/vcsim` (or `$VCSIM`).
//!
//! First, requests on the wire: the simulator behind `countproxy` (an HTTPS proxy that counts requests),
//! each CPI method done by vmcpi (a warm call, with the session another call left in `state_dir`, and the
//! cold first call, without it) and by `govmomi-steps` (the same steps through govmomi, one session per
//! step), all in one run on one simulator; a Markdown table between `<!-- wire -->` markers. Needs
//! `target/countproxy` and `target/govmomi-steps` (built on first use: `bash tools/vcsim/build.sh target/NAME
//! tools/vcsim/NAME`). The simulator is the patched one where it can be built (as for the tests:
//! `VMCPI_VCSIM=stock` for the stock one).
#[path = "support/countproxy.rs"]
mod countproxy;
#[path = "support/cpi.rs"]
mod cpi;
#[path = "../tests/vsphere_sim.rs"]
mod vsphere_sim;

use countproxy::CountProxy;
use cpi::{call, Outcome};

use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use vsphere_sim::{stemcell_image, vcsim_binary, Vcsim};

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
    // the last run's round trips: the steady state, with the session an earlier call kept
    let last = runs.last().map(|o| o.stderr.as_str()).unwrap_or_default();
    println!("  {name:<30} {:>5} {:>9.1} ms{err}", round_trips(last), median.as_secs_f64() * 1000.0);
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
    // a bare stream-optimised VMDK padded with zeros to 4 GiB (sparse on disk; qemu-img pads after the end of
    // stream too): the upload streams every byte, checked as it passes
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

/// One row of the wire table: vmcpi warm and cold, govmomi.
struct Wire {
    op: &'static str,
    warm: u32,
    cold: u32,
    govmomi: u32,
    detail: String,
}

fn wire_comparison(bin: &Path) {
    let (Some(proxy_bin), Some(steps)) = (countproxy::go_tool("countproxy"), countproxy::go_tool("govmomi-steps"))
    else {
        eprintln!(
            "target/countproxy or target/govmomi-steps missing: bash tools/vcsim/build.sh target/NAME tools/vcsim/NAME"
        );
        std::process::exit(if std::env::var("CI").is_ok() { 1 } else { 0 });
    };
    let sim = Vcsim::start(bin, "vpx", false);
    let dir = tempfile::tempdir().unwrap();
    let proxy = CountProxy::start(&proxy_bin, &sim.url.replace("/sdk", ""), dir.path());
    let pem = std::fs::read_to_string(&proxy.cert).unwrap();
    let mut cfg = sim.config();
    cfg["driver"]["host"] = json!(format!("{}/sdk", proxy.url));
    cfg["driver"]["ca_cert"] = json!(pem);
    let state = dir.path().join("state");
    cfg["driver"]["state_dir"] = json!(state);
    let config = dir.path().join("cpi.json");
    std::fs::write(&config, cfg.to_string()).unwrap();
    let image = stemcell_image(dir.path(), false);
    // govmomi-steps imports the same OVF and disk, unpacked
    let ovf_dir = dir.path().join("ovf");
    std::fs::create_dir(&ovf_dir).unwrap();
    let disk = vsphere_sim::vmdk(200_000);
    std::fs::write(ovf_dir.join("image.ovf"), vsphere_sim::stemcell_ovf(false, disk.len() as u64)).unwrap();
    std::fs::write(ovf_dir.join("image-disk1.vmdk"), &disk).unwrap();
    let gov_url = proxy.url.replace("https://", &format!("https://user:{}@", sim.password)) + "/sdk";

    let vmcpi = |method: &str, args: Value, cold: bool| -> (Value, u32, String) {
        if cold {
            let _ = std::fs::remove_dir_all(state.join("sessions"));
        }
        proxy.take();
        let o = call(&config, method, args);
        let (n, ops) = proxy.take();
        assert!(o.error.is_null(), "vmcpi {method}: {}\n{}", o.error, o.stderr);
        (o.result, n, ops)
    };
    let govmomi = |args: &[&str]| -> (String, u32, String) {
        proxy.take();
        let out = Command::new(&steps)
            .args(["-url", &gov_url, "-ca"])
            .arg(&proxy.cert)
            .args(["-dc", "DC0"])
            .args(args)
            .output()
            .expect("run govmomi-steps");
        let (n, ops) = proxy.take();
        assert!(out.status.success(), "govmomi-steps {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        (String::from_utf8_lossy(&out.stdout).trim().to_string(), n, ops)
    };
    let mut rows: Vec<Wire> = Vec::new();
    let mut row =
        |op: &'static str, cold: &(Value, u32, String), warm: &(Value, u32, String), g: &(String, u32, String)| {
            rows.push(Wire {
                op,
                warm: warm.1,
                cold: cold.1,
                govmomi: g.1,
                detail: format!("vmcpi warm: {}; govmomi: {}", warm.2, g.2),
            });
        };

    let c = vmcpi("create_stemcell", json!([image, {}]), true);
    let w = vmcpi("create_stemcell", json!([image, {}]), false);
    let g = govmomi(&["create_stemcell", "gm-sc", ovf_dir.to_str().unwrap()]);
    row("create_stemcell", &c, &w, &g);
    let (sc1, sc2) = (c.0.as_str().unwrap().to_string(), w.0.as_str().unwrap().to_string());
    let nets = json!({"default": {"type": "manual", "ip": "10.0.0.5", "netmask": "255.255.255.0", "gateway": "10.0.0.1", "cloud_properties": {"name": "VM Network"}}});
    let props = json!({"cpu": 2, "ram": 1024, "disk": 1024});
    let c = vmcpi("create_vm", json!(["agent", sc1, props, nets, [], {}]), true);
    let w = vmcpi("create_vm", json!(["agent", sc1, props, nets, [], {}]), false);
    let g = govmomi(&["create_vm", "gm-vm", "gm-sc"]);
    row("create_vm", &c, &w, &g);
    let (vm1, vm2) = (c.0[0].as_str().unwrap().to_string(), w.0[0].as_str().unwrap().to_string());
    let c = vmcpi("has_vm", json!([vm1]), true);
    let w = vmcpi("has_vm", json!([vm1]), false);
    let g = govmomi(&["has_vm", "gm-vm"]);
    assert_eq!((&c.0, &w.0, g.0.as_str()), (&json!(true), &json!(true), "true"));
    row("has_vm", &c, &w, &g);
    let md = json!({"director": "bench", "deployment": "dep", "name": "web/0", "index": "0"});
    let c = vmcpi("set_vm_metadata", json!([vm1, md]), true);
    let w = vmcpi("set_vm_metadata", json!([vm2, md]), false);
    let g = govmomi(&["set_vm_metadata", "gm-vm", "director=bench", "deployment=dep", "name=web/0", "index=0"]);
    row("set_vm_metadata (4 keys)", &c, &w, &g);
    let c = vmcpi("create_disk", json!([1024, {}, vm1]), true);
    let w = vmcpi("create_disk", json!([1024, {}, vm2]), false);
    let g = govmomi(&["create_disk", "gm-disk", "1024", "gm-vm"]);
    row("create_disk", &c, &w, &g);
    let (d1, d2) = (c.0.as_str().unwrap().to_string(), w.0.as_str().unwrap().to_string());
    let c = vmcpi("attach_disk", json!([vm1, d1]), true);
    let w = vmcpi("attach_disk", json!([vm2, d2]), false);
    let g = govmomi(&["attach_disk", "gm-vm", "gm-disk"]);
    row("attach_disk", &c, &w, &g);
    let c = vmcpi("detach_disk", json!([vm1, d1]), true);
    let w = vmcpi("detach_disk", json!([vm2, d2]), false);
    let g = govmomi(&["detach_disk", "gm-vm", "gm-disk"]);
    row("detach_disk", &c, &w, &g);
    let c = vmcpi("delete_vm", json!([vm1]), true);
    let w = vmcpi("delete_vm", json!([vm2]), false);
    let g = govmomi(&["delete_vm", "gm-vm"]);
    row("delete_vm", &c, &w, &g);
    let c = vmcpi("delete_disk", json!([d1]), true);
    let w = vmcpi("delete_disk", json!([d2]), false);
    let g = govmomi(&["delete_disk", "gm-disk"]);
    row("delete_disk", &c, &w, &g);
    let c = vmcpi("delete_stemcell", json!([sc1]), true);
    let w = vmcpi("delete_stemcell", json!([sc2]), false);
    let g = govmomi(&["delete_stemcell", "gm-sc"]);
    row("delete_stemcell", &c, &w, &g);

    println!("<!-- wire -->");
    println!("| operation | vmcpi requests | govmomi requests | ratio | vmcpi cold first call |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        let ratio = r.warm as f64 / r.govmomi.max(1) as f64;
        let mark = if ratio <= 0.5 { "" } else { " (above 0.5)" };
        println!("| {} | {} | {} | {ratio:.2}{mark} | {} |", r.op, r.warm, r.govmomi, r.cold);
    }
    println!("<!-- /wire -->");
    println!(
        "\nRequests seen by the proxy (POST /sdk by SOAP operation; PUT/HEAD/GET are datastore and NFC transfers):"
    );
    for r in &rows {
        println!("  {}: {}", r.op, r.detail);
    }
}

/// A vSphere stemcell `image` of `gib` GiB (gzipped tar: image.ovf, image.mf, image-disk1.vmdk), cached in
/// target/bench-images. The VMDK is a well-formed stream-optimised one (vmcpi checks its structure as it
/// streams) whose grain payloads are pseudo-random, as the compressed grains of a real stream-optimised VMDK
/// are; gzip cannot shrink it either, so it is written as stored blocks (what gzip -9 makes of such data).
fn archive_image(gib: u64) -> std::path::PathBuf {
    use vmcpi::diskimage::vmdk::StreamWriter;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-images");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("vsphere-{gib}g-v2.image"));
    if path.exists() {
        return path;
    }
    // one 64 KiB record per grain (12 bytes of marker, the rest payload), and the tables after them
    let capacity = gib << 30;
    let grains = capacity >> 16;
    let frame = StreamWriter::new(Vec::new(), capacity, "image-disk1.vmdk").unwrap().finish().unwrap().len() as u64;
    let total = frame + (grains << 16);
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
    // the disk, written record by record as the tar reads it
    struct Noise {
        w: Option<StreamWriter<Vec<u8>>>,
        out: Vec<u8>,
        at: usize,
        next: u64,
        grains: u64,
        payload: Vec<u8>,
        x: u64,
    }
    impl std::io::Read for Noise {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            while self.at == self.out.len() {
                let Some(w) = self.w.as_mut() else { return Ok(0) };
                if self.next < self.grains {
                    for c in self.payload.chunks_mut(8) {
                        self.x ^= self.x << 13;
                        self.x ^= self.x >> 7;
                        self.x ^= self.x << 17;
                        c.copy_from_slice(&self.x.to_le_bytes()[..c.len()]);
                    }
                    w.record(self.next << 16, &self.payload)?;
                    self.next += 1;
                    self.out = std::mem::take(w.get_mut());
                } else {
                    self.out = self.w.take().unwrap().finish()?;
                }
                self.at = 0;
            }
            let n = buf.len().min(self.out.len() - self.at);
            buf[..n].copy_from_slice(&self.out[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }
    let mut w = StreamWriter::new(Vec::new(), capacity, "image-disk1.vmdk").unwrap();
    let head = std::mem::take(w.get_mut());
    let noise = Noise {
        w: Some(w),
        out: head,
        at: 0,
        next: 0,
        grains,
        payload: vec![0u8; 65536 - 12],
        x: 0x9e37_79b9_7f4a_7c15,
    };
    let mut h = tar::Header::new_gnu();
    h.set_size(total);
    h.set_mode(0o644);
    t.append_data(&mut h, "image-disk1.vmdk", noise).unwrap();
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
        wire_comparison(&bin);
        if std::env::var("VMCPI_BENCH_WIRE_ONLY").is_ok() {
            return;
        }
        bench_model(&bin, "vpx");
        bench_model(&bin, "esx");
    }
    big_import(&bin);
    archive_import(&bin, 2);
}
