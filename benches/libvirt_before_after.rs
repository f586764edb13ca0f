//! The libvirt driver before and after it moved onto the RPC client (issue 18), in one run on one daemon:
//! the release build of the last commit that ran `virsh` and `qemu-img` ("before", built here from git
//! unless `VMCPI_BEFORE_BIN` names one) against this tree's release build ("after", or `VMCPI_BIN`). Prints
//! figures; it is not a timed test. Run: `cargo bench --bench libvirt_before_after` (root, libvirtd from
//! `tools/libvirt-up.sh`, strace, qemu-img for making the test images).
//!
//! - create_stemcell of a 2 GiB qcow2 and of a 2 GiB stream-optimised VMDK (each with 256 MiB of data
//!   spread over it, bare image files as `bosh create-env` may pass them), create_vm, create_disk,
//!   attach_disk, detach_disk, delete_vm: whole-process wall time, median of `VMCPI_BENCH_PASSES` (5)
//!   passes, the two builds in turn within each pass;
//! - helper processes per call: the `execve`s of each call's process tree under `strace -f`, less the CPI's
//!   own (goal: 0);
//! - create_vm against QEMU's own start: the same domain destroyed and started again through libvirt
//!   (`virDomainCreate` on one open connection), median of as many starts.
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "support/cpi.rs"]
mod cpi;

/// The last commit whose libvirt driver ran virsh and qemu-img (main before the RPC driver was merged).
const BEFORE_REV: &str = "e55f68f";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// This tree's release build (or `VMCPI_BIN`): `cargo bench` builds it.
fn after_bin() -> PathBuf {
    cpi::vmcpi_bin()
}

fn before_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("VMCPI_BEFORE_BIN") {
        return p.into();
    }
    let rev = std::env::var("VMCPI_BEFORE_REV").unwrap_or_else(|_| BEFORE_REV.into());
    let base = repo().join("target/bench-before").join(&rev);
    let src = base.join("src");
    if !src.join("Cargo.toml").exists() {
        std::fs::create_dir_all(&src).unwrap();
        eprintln!("extracting {rev} into {}", src.display());
        let st = Command::new("sh")
            .arg("-c")
            .arg("git -C \"$1\" archive \"$2\" | tar x -C \"$3\"")
            .args(["sh", repo().to_str().unwrap(), &rev, src.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(st.success(), "git archive {rev} failed");
    }
    build(&src, &base.join("target"))
}

fn build(dir: &Path, target: &Path) -> PathBuf {
    let bin = target.join("release/vmcpi");
    if !bin.exists() {
        eprintln!("building {} (release)", dir.display());
        let st = Command::new("cargo")
            .args(["build", "--release", "--locked", "--bin", "vmcpi"])
            .env("CARGO_TARGET_DIR", target)
            .current_dir(dir)
            .status()
            .unwrap();
        assert!(st.success(), "cargo build in {} failed", dir.display());
    }
    bin
}

/// One CPI call as a director makes it; returns the result and the whole-process wall time.
fn call(bin: &Path, config: &Path, method: &str, args: Value) -> (Value, Duration) {
    let out = cpi::run(cpi::vmcpi(bin, config), &cpi::request(method, args));
    let wall = out.wall;
    (out.ok(method), wall)
}

/// The same call under `strace -f`: the programs its process tree ran besides the CPI itself.
fn helpers(bin: &Path, config: &Path, method: &str, args: Value) -> (Value, Vec<String>) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-e", "trace=execve", "-o"])
        .arg(log.path())
        .arg(bin)
        .arg("--config")
        .arg(config)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    let result = cpi::run(cmd, &cpi::request(method, args)).ok(method);
    let text = std::fs::read_to_string(log.path()).unwrap();
    let bin_s = bin.to_str().unwrap();
    let progs: Vec<String> = text
        .lines()
        .filter(|l| l.contains("execve(\"") && !l.contains("= -1"))
        .filter_map(|l| l.split("execve(\"").nth(1)?.split('"').next().map(str::to_string))
        .filter(|p| p != bin_s)
        .collect();
    (result, progs)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// 256 blocks of 1 MiB of data (compressible text, so the stream-optimised VMDK stays quick to make)
/// spread over `size` bytes; the rest is zero.
fn blocks(size: u64) -> impl Iterator<Item = (u64, Vec<u8>)> {
    let data: Vec<u8> = (0..1u32 << 20).map(|i| b"vmcpi bench data "[(i % 17) as usize] ^ (i >> 12) as u8).collect();
    let step = size / 256;
    (0..256u64).map(move |i| (i * step, data.clone()))
}

/// A bare 2 GiB qcow2 (qemu-img from a sparse raw file) and a bare 2 GiB stream-optimised VMDK.
fn images(dir: &Path) -> (PathBuf, PathBuf) {
    let size = 2u64 << 30;
    let raw = dir.join("disk.raw");
    let f = std::fs::File::create(&raw).unwrap();
    f.set_len(size).unwrap();
    for (at, b) in blocks(size) {
        std::os::unix::fs::FileExt::write_all_at(&f, &b, at).unwrap();
    }
    drop(f);
    let qcow2 = dir.join("bench-2g.qcow2");
    let st = Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow2)
        .status()
        .expect("qemu-img (tools/libvirt-up.sh installs it)");
    assert!(st.success());
    std::fs::remove_file(&raw).unwrap();
    let vmdk = dir.join("bench-2g.vmdk");
    let mut w = vmcpi::diskimage::vmdk::StreamWriter::new(
        std::io::BufWriter::new(std::fs::File::create(&vmdk).unwrap()),
        size,
        "bench-2g.vmdk",
    )
    .unwrap();
    let grain = w.grain_bytes() as usize;
    for (at, b) in blocks(size) {
        for (i, g) in b.chunks(grain).enumerate() {
            w.data(at + (i * grain) as u64, g).unwrap();
        }
    }
    w.finish().unwrap().flush().unwrap();
    (qcow2, vmdk)
}

/// Per method and build: wall times of every pass, and the helper programs of the traced pass.
#[derive(Default)]
struct Figures {
    times: std::collections::BTreeMap<(&'static str, usize), Vec<Duration>>,
    helpers: std::collections::BTreeMap<(&'static str, usize), Vec<String>>,
}

const METHODS: [&str; 8] = [
    "create_stemcell qcow2",
    "create_stemcell vmdk",
    "create_vm",
    "create_disk",
    "attach_disk",
    "detach_disk",
    "delete_disk",
    "delete_vm",
];

/// One lifecycle with `bin`: every method once, timed into `f` (or traced, for the helper processes).
fn lifecycle(bin: &Path, config: &Path, imgs: &(PathBuf, PathBuf), build: usize, traced: bool, f: &mut Figures) {
    let mut run = |method: &'static str, name: &str, args: Value| -> Value {
        if traced {
            let (r, progs) = helpers(bin, config, name, args);
            f.helpers.insert((method, build), progs);
            r
        } else {
            let (r, t) = call(bin, config, name, args);
            f.times.entry((method, build)).or_default().push(t);
            r
        }
    };
    let sc = run("create_stemcell qcow2", "create_stemcell", json!([imgs.0, {}]));
    let sc_vmdk = run("create_stemcell vmdk", "create_stemcell", json!([imgs.1, {}]));
    let vm = run(
        "create_vm",
        "create_vm",
        json!(["agent-bench", sc, {"cpu": 1, "ram": 256, "disk": 0}, {"default": {"type": "dynamic", "cloud_properties": {"type": "user"}}}, [], {}]),
    );
    let vm = vm[0].clone();
    let disk = run("create_disk", "create_disk", json!([64, {}, vm]));
    run("attach_disk", "attach_disk", json!([vm, disk]));
    run("detach_disk", "detach_disk", json!([vm, disk]));
    run("delete_disk", "delete_disk", json!([disk]));
    run("delete_vm", "delete_vm", json!([vm]));
    for s in [sc, sc_vmdk] {
        call(bin, config, "delete_stemcell", json!([s]));
    }
}

/// QEMU's own start through libvirt: a domain like create_vm's, destroyed and started again `n` times on
/// one open connection.
fn qemu_start(after: &Path, config: &Path, img: &Path, n: usize) -> Duration {
    let (sc, _) = call(after, config, "create_stemcell", json!([img, {}]));
    let (vm, _) = call(
        after,
        config,
        "create_vm",
        json!(["agent-bench", sc, {"cpu": 1, "ram": 256, "disk": 0}, {"default": {"type": "dynamic", "cloud_properties": {"type": "user"}}}, [], {}]),
    );
    let name = vm[0].as_str().unwrap().to_string();
    let c = vmcpi::libvirt_rpc::Client::connect("qemu:///system").unwrap();
    let dom = c.domain_lookup(&name).unwrap();
    let mut starts = Vec::new();
    for _ in 0..n {
        c.domain_destroy(&dom, 0).unwrap();
        let t = Instant::now();
        c.domain_start(&dom).unwrap();
        starts.push(t.elapsed());
    }
    drop(c);
    call(after, config, "delete_vm", json!([name]));
    call(after, config, "delete_stemcell", json!([sc]));
    median(starts)
}

fn main() {
    let passes: usize = std::env::var("VMCPI_BENCH_PASSES").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let builds = [("before (virsh, qemu-img)", before_bin()), ("after (RPC, in-process)", after_bin())];
    let pool = std::env::var("VMCPI_BENCH_POOL").unwrap_or_else(|_| "vmcpi-bench-ba".into());
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let config = dir.path().join("cpi.json");
    let cfg = json!({"driver": {"kind": "libvirt", "uri": "qemu:///system", "pool": pool,
                                "pool_path": format!("/var/tmp/{pool}-pool"), "domain_type": "qemu", "graphics": false,
                                "state_dir": dir.path().join("state")},
                     "agent": {"mbus": "nats://n:p@127.0.0.1:4222"}});
    std::fs::write(&config, cfg.to_string()).unwrap();
    eprintln!("making a 2 GiB qcow2 and a 2 GiB stream-optimised VMDK");
    let imgs = images(dir.path());
    let mut f = Figures::default();
    for (i, (_, bin)) in builds.iter().enumerate() {
        lifecycle(bin, &config, &imgs, i, true, &mut f);
    }
    for pass in 0..passes {
        for (i, (name, bin)) in builds.iter().enumerate() {
            eprintln!("pass {}/{passes}: {name}", pass + 1);
            lifecycle(bin, &config, &imgs, i, false, &mut f);
        }
    }
    let start = qemu_start(&builds[1].1, &config, &imgs.0, passes.max(5));

    println!("# vmcpi libvirt driver: before and after the RPC client\n");
    println!(
        "{} passes, the two release builds in turn; whole-process wall time, median in ms; helper processes per call under `strace -f`.\n",
        passes
    );
    println!("| method | before ms | after ms | before helpers | after helpers |\n|---|---|---|---|---|");
    for m in METHODS {
        let t = |b: usize| f.times.get(&(m, b)).map(|v| ms(median(v.clone()))).unwrap_or_default();
        let h = |b: usize| {
            let progs = f.helpers.get(&(m, b)).cloned().unwrap_or_default();
            let mut names: Vec<String> =
                progs.iter().map(|p| p.rsplit('/').next().unwrap_or(p).to_string()).collect::<Vec<_>>();
            names.sort();
            names.dedup();
            if progs.is_empty() {
                "0".to_string()
            } else {
                format!("{} ({})", progs.len(), names.join(", "))
            }
        };
        println!("| {m} | {} | {} | {} | {} |", t(0), t(1), h(0), h(1));
    }
    let create_after = median(f.times[&("create_vm", 1)].clone());
    println!(
        "\ncreate_vm (after): {} ms; QEMU's own start through libvirt (virDomainCreate of the same domain, median of {}): {} ms; difference {} ms (goal: within 50 ms)",
        ms(create_after),
        passes.max(5),
        ms(start),
        ms(create_after.saturating_sub(start))
    );
}
