//! Benchmark of the CPI process and the libvirt driver against the real libvirt daemon. Prints figures; it is
//! not a timed test. Run: `cargo bench --bench libvirt` (needs root, libvirtd: `tools/libvirt-up.sh`);
//! `-- import` runs the imports only (with a 2 GiB qcow2 one, streamed into its volume); `-- create_vm` runs
//! only the create_vm time breakdown (per external process, from the debug log);
//! `VMCPI_BENCH_POOL` names another pool than `vmcpi-bench`, `VMCPI_BIN` another vmcpi build.
//!
//! - whole-process time of `info` against `/bin/true`;
//! - create_vm from a 64 MiB and from a 4 GiB stemcell (a qcow2 overlay: the ratio should stay near 1);
//! - peak RSS of the vmcpi process during create_stemcell of a 64 MiB and a 4 GiB image (must not grow);
//! - import throughput against `tar xzf`, `cp` and `qemu-img convert` of the same bytes;
//! - create_vm against `virt-clone` (Debian package virtinst) of the same image; peak RSS per method;
//! - the methods that write the settings medium (create_vm, attach_disk, detach_disk) and the medium build
//!   alone, in-process. `cargo bench --bench libvirt -- settings` runs only this part.
#[path = "support/cpi.rs"]
mod cpi;

use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn pool() -> String {
    std::env::var("VMCPI_BENCH_POOL").unwrap_or_else(|_| "vmcpi-bench".into())
}

/// One call, checked: its result, the wall time from the request on and the peak RSS of the vmcpi process (KiB).
fn call(config: &Path, method: &str, args: Value) -> (Value, Duration, u64) {
    let o = cpi::call_sampled(config, method, args);
    let (wall, rss) = (o.wall, o.peak_rss_kib);
    (o.ok(method), wall, rss)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time_process(mut cmd: impl FnMut() -> Command, n: usize) -> Duration {
    median(
        (0..n)
            .map(|_| {
                let t = Instant::now();
                let st = cmd().stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap();
                assert!(st.success());
                t.elapsed()
            })
            .collect(),
    )
}

/// A stemcell image (gzipped tar with root.img, raw) of `mib` MiB: zeros with a 1 MiB block of data every 64 MiB.
fn image(dir: &Path, mib: u64) -> PathBuf {
    let root = dir.join("root.img");
    let mut f = std::fs::File::create(&root).unwrap();
    let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let mut written = 0;
    while written < mib {
        f.write_all(&data).unwrap();
        let skip = 63.min(mib - written - 1);
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Current((skip << 20) as i64)).unwrap();
        written += 1 + skip;
    }
    f.set_len(mib << 20).unwrap();
    drop(f);
    let image = dir.join("image");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!("tar cf - -C '{}' root.img | gzip -1 > '{}'", dir.display(), image.display()))
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::remove_file(root).unwrap();
    image
}

fn timed(mut cmd: Command) -> Duration {
    let t = Instant::now();
    let st = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status().expect("run baseline");
    assert!(st.success(), "{cmd:?} failed");
    t.elapsed()
}

fn main() {
    let bin = cpi::vmcpi_bin();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cpi.json");
    let pool = pool();
    let cfg = json!({"driver": {"kind": "libvirt", "pool": pool, "pool_path": format!("/var/tmp/{pool}-pool"), "domain_type": "qemu", "graphics": false},
                     "agent": {"mbus": "nats://n:p@10.0.0.1:4222"}});
    std::fs::write(&config, cfg.to_string()).unwrap();
    if std::env::args().any(|a| a == "settings") {
        println!("# vmcpi libvirt benchmark: the settings medium\n");
        settings_medium(&config, dir.path());
        return;
    }
    if std::env::args().skip(1).any(|a| a == "create_vm") {
        println!("# vmcpi libvirt benchmark: create_vm");
        let img_dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let sc = call(&config, "create_stemcell", json!([image(img_dir.path(), 64), {}])).0.clone();
        create_vm_breakdown(&cfg, sc.as_str().unwrap());
        call(&config, "delete_stemcell", json!([sc]));
        return;
    }

    let n = 200;
    // info reads its request from stdin: feed it through a pipe for a fair whole-process figure
    let info_piped = median(
        (0..n)
            .map(|_| {
                let t = Instant::now();
                let mut c = cpi::vmcpi(&bin, &config)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                c.stdin.take().unwrap().write_all(br#"{"method":"info","arguments":[]}"#).unwrap();
                c.wait().unwrap();
                t.elapsed()
            })
            .collect(),
    );
    let true_t = time_process(|| Command::new("/bin/true"), n);
    let (_, _, info_rss) = call(&config, "info", json!([]));

    println!("# vmcpi libvirt benchmark\n");
    println!("| figure | value |\n|---|---|");
    println!("| `info` whole process (median of {n}) | {:.2} ms |", info_piped.as_secs_f64() * 1e3);
    println!("| `/bin/true` whole process (median of {n}) | {:.2} ms |", true_t.as_secs_f64() * 1e3);
    println!("| ratio info / true | {:.2} |", info_piped.as_secs_f64() / true_t.as_secs_f64());
    if std::env::args().skip(1).any(|a| a == "import") {
        imports_only(&config);
        return;
    }

    // import both stemcells, then create VMs from them alternately (and delete each at once), so background
    // load (other VMs, other processes) weighs on both sides alike
    let mut stemcells = Vec::new();
    let mut rss = Vec::new();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir_in("/var/tmp").unwrap()).collect();
    let mut import_4g = Duration::ZERO;
    for (mib, d) in [64u64, 4096].into_iter().zip(&dirs) {
        let img = image(d.path(), mib);
        let (r, import_t, peak) = call(&config, "create_stemcell", json!([img, {}]));
        stemcells.push(r.as_str().unwrap().to_string());
        rss.push(peak);
        import_4g = import_t;
        println!(
            "| create_stemcell {mib} MiB: wall time | {:.2} s ({:.0} MiB/s) |",
            import_t.as_secs_f64(),
            mib as f64 / import_t.as_secs_f64()
        );
        println!("| create_stemcell {mib} MiB: peak RSS of vmcpi | {peak} KiB |");
    }
    let rounds = 7;
    let mut times = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (i, sc) in stemcells.iter().enumerate() {
            let (r, t, _) = call(&config, "create_vm", json!(["bench", sc, {"ram": 64}, {}, [], {}]));
            times[i].push(t);
            call(&config, "delete_vm", json!([r[0].as_str().unwrap()]));
        }
    }
    let results: Vec<(Duration, u64)> = times.into_iter().map(median).zip(rss).collect();
    for (mib, (med, _)) in [64, 4096].iter().zip(&results) {
        println!("| create_vm from the {mib} MiB stemcell (median of {rounds}) | {:.0} ms |", med.as_secs_f64() * 1e3);
    }
    println!("| create_vm ratio 4 GiB / 64 MiB | {:.2} |", results[1].0.as_secs_f64() / results[0].0.as_secs_f64());
    println!("| create_stemcell peak RSS ratio 4 GiB / 64 MiB | {:.2} |", results[1].1 as f64 / results[0].1 as f64);

    // baselines on the same 4 GiB bytes: unpacking alone, a plain copy, a qemu-img conversion
    let big = dirs[1].path();
    let mut tar = Command::new("tar");
    tar.arg("xzf").arg(big.join("image")).arg("-C").arg(big);
    let untar = timed(tar);
    let mut cp = Command::new("cp");
    cp.arg("--sparse=always").arg(big.join("root.img")).arg(big.join("copy.img"));
    let cp_t = timed(cp);
    let mut conv = Command::new("qemu-img");
    conv.args(["convert", "-O", "qcow2"]).arg(big.join("root.img")).arg(big.join("copy.qcow2"));
    let conv_t = timed(conv);
    let mibs = |d: Duration| 4096.0 / d.as_secs_f64();
    println!("| import 4 GiB: vmcpi create_stemcell (gunzip + untar + upload) | {:.0} MiB/s |", mibs(import_4g));
    println!(
        "| baseline: `tar xzf` of the same image | {:.0} MiB/s (ratio {:.2}) |",
        mibs(untar),
        import_4g.as_secs_f64() / untar.as_secs_f64()
    );
    println!("| baseline: `cp --sparse=always` of root.img | {:.0} MiB/s |", mibs(cp_t));
    println!("| baseline: `qemu-img convert -O qcow2` of root.img | {:.0} MiB/s |", mibs(conv_t));

    // virt-clone of the same 4 GiB image (a full copy) against create_vm (an overlay)
    if Path::new("/usr/bin/virt-clone").exists() {
        let (_, vol) = virsh(&["vol-path", "--pool", &pool, &stemcells[1]]);
        let tmpl = "vmcpi-bench-template";
        let xml = format!("<domain type='qemu'><name>{tmpl}</name><memory unit='MiB'>64</memory><os><type arch='x86_64' machine='q35'>hvm</type></os><devices><disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{}'/><target dev='sda' bus='scsi'/></disk></devices></domain>", vol.trim());
        let f = dir.path().join("tmpl.xml");
        std::fs::write(&f, xml).unwrap();
        virsh(&["define", f.to_str().unwrap()]);
        let clone_dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let mut vc = Command::new("virt-clone");
        vc.args(["--connect", "qemu:///system", "--original", tmpl, "--name", "vmcpi-bench-clone", "--file"])
            .arg(clone_dir.path().join("clone.img"));
        let vc_t = timed(vc);
        virsh(&["undefine", "vmcpi-bench-clone"]);
        virsh(&["undefine", tmpl]);
        println!(
            "| virt-clone of a domain on the 4 GiB image (copies it, no start) | {:.0} ms |",
            vc_t.as_secs_f64() * 1e3
        );
        println!(
            "| create_vm from the 4 GiB stemcell (overlay, settings medium, start) | {:.0} ms (ratio {:.2}) |",
            results[1].0.as_secs_f64() * 1e3,
            results[1].0.as_secs_f64() / vc_t.as_secs_f64()
        );
    } else {
        println!("| virt-clone | not installed (Debian package virtinst) |");
    }

    create_vm_breakdown(&cfg, &stemcells[0]);

    // peak RSS of the vmcpi process, per method
    let sc = &stemcells[0];
    let mut peaks = vec![("info", info_rss)];
    let (r, _, p) = call(&config, "create_vm", json!(["bench", sc, {"ram": 64, "disk": 16}, {}, [], {}]));
    peaks.push(("create_vm", p));
    let vm = r[0].as_str().unwrap().to_string();
    let (r, _, p) = call(&config, "create_disk", json!([16, {}, vm]));
    peaks.push(("create_disk", p));
    let disk = r.as_str().unwrap().to_string();
    for (m, args) in [
        ("attach_disk", json!([vm, disk])),
        ("set_vm_metadata", json!([vm, {"name": "bench/0"}])),
        ("set_disk_metadata", json!([disk, {"director": "bench"}])),
        ("get_disks", json!([vm])),
        ("has_vm", json!([vm])),
        ("has_disk", json!([disk])),
        ("reboot_vm", json!([vm])),
        ("detach_disk", json!([vm, disk])),
        ("resize_disk", json!([disk, 32])),
        ("delete_vm", json!([vm])),
        ("delete_disk", json!([disk])),
    ] {
        peaks.push((m, call(&config, m, args).2));
    }
    for sc in &stemcells {
        peaks.push(("delete_stemcell", call(&config, "delete_stemcell", json!([sc])).2));
    }
    peaks.dedup_by_key(|p| p.0);
    println!("\n| method | peak RSS of vmcpi |\n|---|---|");
    for (m, p) in peaks {
        println!("| {m} | {p} KiB |");
    }
    println!();
    settings_medium(&config, dir.path());
}

/// The methods that (re)write the settings medium, from a 64 MiB stemcell, and the medium build alone.
fn settings_medium(config: &Path, dir: &Path) {
    let sub = dir.join("settings");
    std::fs::create_dir_all(&sub).unwrap();
    let img = image(&sub, 64);
    let sc = call(config, "create_stemcell", json!([img, {}])).0.as_str().unwrap().to_string();
    let rounds = 15;
    let (mut create, mut attach, mut detach) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (r, t, _) = call(config, "create_vm", json!(["bench", sc, {"ram": 64}, {}, [], {}]));
        create.push(t);
        let vm = r[0].as_str().unwrap().to_string();
        let disk = call(config, "create_disk", json!([16, {}, vm])).0.as_str().unwrap().to_string();
        attach.push(call(config, "attach_disk", json!([vm, disk])).1);
        detach.push(call(config, "detach_disk", json!([vm, disk])).1);
        call(config, "delete_vm", json!([vm]));
        call(config, "delete_disk", json!([disk]));
    }
    call(config, "delete_stemcell", json!([sc]));
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("| figure | value |\n|---|---|");
    println!("| create_vm, 64 MiB stemcell (median of {rounds}) | {:.0} ms |", ms(median(create)));
    println!("| attach_disk, running VM (median of {rounds}) | {:.0} ms |", ms(median(attach)));
    println!("| detach_disk, running VM (median of {rounds}) | {:.0} ms |", ms(median(detach)));
    let settings = serde_json::to_vec(&json!({"agent_id": "bench", "vm": {"name": "vm-bench"}, "networks": {},
        "disks": {"system": "0", "ephemeral": "1", "persistent": {}}, "env": {"bosh": {"group": "bench"}}}))
    .unwrap();
    for kind in [vmcpi::medium::MediumKind::ConfigDrive, vmcpi::medium::MediumKind::CdromEnv] {
        let n = 50;
        let times: Vec<Duration> = (0..n)
            .map(|_| {
                let t = Instant::now();
                build_medium(kind, &settings);
                t.elapsed()
            })
            .collect();
        println!(
            "| settings medium {kind:?} built alone (median of {n}) | {:.0} µs |",
            median(times).as_secs_f64() * 1e6
        );
    }
}

fn build_medium(kind: vmcpi::medium::MediumKind, settings: &[u8]) -> Vec<u8> {
    vmcpi::medium::build(kind, settings, "vm-bench").unwrap()
}

/// A stemcell image whose root.img is a qcow2 holding `mib` MiB of pseudo-random data (as incompressible as
/// a real image's compressed clusters), as a gzipped tar written with stored blocks (what gzip makes of it).
fn qcow2_image(dir: &Path, mib: u64) -> PathBuf {
    let raw = dir.join("data.raw");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&raw).unwrap());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for c in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&block).unwrap();
    }
    drop(f);
    let root = dir.join("root.img");
    let st = Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "qcow2"]).arg(&raw).arg(&root).status();
    assert!(st.unwrap().success());
    std::fs::remove_file(raw).unwrap();
    let image = dir.join("image");
    let gz = flate2::write::GzEncoder::new(std::fs::File::create(&image).unwrap(), flate2::Compression::none());
    let mut t = tar::Builder::new(gz);
    // a plain entry, as stemcell builders write (older vmcpi builds read no GNU sparse entries)
    t.sparse(false);
    t.append_path_with_name(&root, "root.img").unwrap();
    t.into_inner().unwrap().finish().unwrap();
    std::fs::remove_file(root).unwrap();
    image
}

/// create_stemcell only: a raw image (64 MiB and 4 GiB, mostly holes: spooled, then uploaded sparse) and a
/// 2 GiB qcow2 (streamed into its volume through virsh's stdin), each deleted again.
fn imports_only(config: &Path) {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir_in("/var/tmp").unwrap()).collect();
    let images = [
        ("raw 64 MiB", 64, image(dirs[0].path(), 64)),
        ("raw 4 GiB (mostly holes)", 4096, image(dirs[1].path(), 4096)),
        ("qcow2 2 GiB of data", 2048, qcow2_image(dirs[2].path(), 2048)),
    ];
    for (what, mib, img) in &images {
        let (r, t, peak) = call(config, "create_stemcell", json!([img, {}]));
        let sc = r.as_str().unwrap().to_string();
        let size = std::fs::metadata(img).unwrap().len() >> 20;
        println!(
            "| create_stemcell {what} (image {size} MiB): wall time, peak RSS | {:.2} s ({:.0} MiB/s), {peak} KiB |",
            t.as_secs_f64(),
            *mib as f64 / t.as_secs_f64()
        );
        call(config, "delete_stemcell", json!([sc]));
    }
}

/// Where create_vm's time goes: the external processes it runs (from its debug log, which names each
/// command and how long it took) and the rest, in the CPI process itself; medians of several rounds.
fn create_vm_breakdown(cfg: &Value, sc: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cpi-debug.json");
    let mut cfg = cfg.clone();
    cfg["log_level"] = json!("debug");
    std::fs::write(&config, cfg.to_string()).unwrap();
    let rounds = 7;
    let mut steps: Vec<(String, Vec<Duration>)> = Vec::new();
    let mut totals = Vec::new();
    let mut processes = 0;
    for _ in 0..rounds {
        let o = cpi::call(&config, "create_vm", json!(["bench", sc, {"ram": 64, "disk": 16}, {}, [], {}]));
        totals.push(o.wall);
        let log = o.stderr.clone();
        let vm = o.ok("create_vm");
        let mut names = Vec::new();
        let mut times = Vec::new();
        let mut batch = None;
        for line in log.lines() {
            if let Some(b) = line.split("virsh: one process for ").nth(1) {
                batch = Some(b.to_string());
                continue;
            }
            // programs run by exec::Cmd log `exec: CMDLINE` and `exec: done in N ms, …`; through the
            // transport, `run: CMDLINE` and `run: exit S after N ms`
            let Some(rest) = line.split("exec: ").nth(1).or_else(|| line.split("] DEBUG run: ").nth(1)) else {
                continue;
            };
            let done = rest
                .strip_prefix("done in ")
                .or_else(|| rest.strip_prefix("exit ").and_then(|r| r.split(" after ").nth(1)));
            if let Some(ms) = done.and_then(|r| r.split(' ').next()) {
                times.push(Duration::from_millis(ms.parse().unwrap_or(0)));
            } else {
                names.push(step_name(rest, batch.take().as_deref()));
            }
        }
        processes = names.len();
        for (i, (name, t)) in names.into_iter().zip(times).enumerate() {
            match steps.get_mut(i) {
                Some((_, v)) => v.push(t),
                None => steps.push((name, vec![t])),
            }
        }
        call(&config, "delete_vm", json!([vm[0]]));
    }
    println!("\n## create_vm time breakdown (64 MiB stemcell, with an ephemeral disk; medians of {rounds})\n");
    println!("| step | time |\n|---|---|");
    let mut sum = Duration::ZERO;
    for (name, v) in steps {
        let m = median(v);
        sum += m;
        println!("| {name} | {:.0} ms |", m.as_secs_f64() * 1e3);
    }
    let total = median(totals);
    println!("| in the vmcpi process (the rest) | {:.0} ms |", total.saturating_sub(sum).as_secs_f64() * 1e3);
    println!("| create_vm whole process | {:.0} ms |", total.as_secs_f64() * 1e3);
    println!("| external processes per create_vm | {processes} |");
}

/// A short name for a logged command line: the program and, for virsh, its command (a batch logs its
/// commands on the line before: `batch` is that line's list).
fn step_name(cmdline: &str, batch: Option<&str>) -> String {
    let program = cmdline.split(' ').next().unwrap_or("").rsplit('/').next().unwrap_or("").to_string();
    match (program.as_str(), batch) {
        ("virsh", Some(b)) => format!("virsh {b}"),
        // `virsh --quiet --connect URI command …`
        ("virsh", None) => format!("virsh {}", cmdline.split(' ').nth(4).unwrap_or("")),
        _ => program,
    }
}

fn virsh(args: &[&str]) -> (bool, String) {
    let out = Command::new("virsh").arg("-c").arg("qemu:///system").args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}
