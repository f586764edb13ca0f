//! `cargo bench --bench vmrun`: the vmrun driver through the built `vmcpi`, against the VMware test double.
//!
//! Prints the create_vm time with a 64 MiB and a 4 GiB stemcell (linked clones: the stemcell's size must
//! not matter; the target ratio is ≤ 1.2), and the SSH overhead per call (local vs loopback SSH, with the
//! sshd that `tools/sshd-up.sh /tmp/vmcpi-test-sshd-22241 22241` starts). `VMCPI_BIN` measures another vmcpi
//! build.
#[path = "support/cpi.rs"]
mod cpi;

use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

const RUNS: usize = 5;
/// create_vm runs per stemcell size: the per-call noise on a shared machine (xorriso start-up alone varies
/// from 0.1 to 0.9 s) needs many runs for a stable median.
const LOCAL_RUNS: usize = 15;

fn fake_binary() -> PathBuf {
    // built by cargo with the bench (`[[bin]] fake-vmware`, release profile)
    PathBuf::from(env!("CARGO_BIN_EXE_fake-vmware"))
}

/// One call, checked: its result and the whole process's wall time, ms.
fn call(config: &Path, method: &str, args: Value) -> (Value, u128) {
    let o = cpi::call(config, method, args);
    let ms = o.wall.as_millis();
    (o.ok(method), ms)
}

fn stemcell_image(dir: &Path, capacity_mib: u64, data_mib: u64) -> PathBuf {
    let raw = dir.join("disk.raw");
    {
        let mut f = std::fs::File::create(&raw).expect("raw");
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..data_mib {
            // pseudo-random data: compresses like a real root file system would not
            for b in block.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            f.write_all(&block).expect("write");
        }
        f.set_len(capacity_mib << 20).expect("truncate");
    }
    let vmdk = dir.join("image-disk1.vmdk");
    let st = Command::new("/usr/bin/qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized,adapter_type=lsilogic"])
        .arg(&raw)
        .arg(&vmdk)
        .status()
        .expect("qemu-img");
    assert!(st.success());
    std::fs::remove_file(&raw).expect("rm");
    let ovf = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vmrun/image.ovf"))
        .expect("ovf")
        .replace("__CAPACITY_MIB__", &capacity_mib.to_string());
    let image = dir.join("image");
    let gz = flate2::write::GzEncoder::new(std::fs::File::create(&image).expect("image"), flate2::Compression::fast());
    let mut t = tar::Builder::new(gz);
    for (name, path) in [("image.ovf", None), ("image-disk1.vmdk", Some(&vmdk))] {
        let data = match path {
            Some(p) => std::fs::read(p).expect("read"),
            None => ovf.clone().into_bytes(),
        };
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, name, &data[..]).expect("tar");
    }
    t.into_inner().expect("tar").finish().expect("gz");
    std::fs::remove_file(&vmdk).expect("rm");
    image
}

fn median(mut v: Vec<u128>) -> u128 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn create_vms(config: &Path, sc: &Value) -> u128 {
    let mut times = Vec::new();
    let mut vms = Vec::new();
    for _ in 0..RUNS {
        let (r, ms) = call(
            config,
            "create_vm",
            json!(["agent", sc, {"cpu": 1, "ram": 512, "disk": 1024}, {"default": {"type": "dynamic", "cloud_properties": {}}}, [], {}]),
        );
        times.push(ms);
        vms.push(r[0].clone());
    }
    for vm in vms {
        call(config, "delete_vm", json!([vm]));
    }
    median(times)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let work = tempfile::Builder::new().prefix("vmcpi-bench-").tempdir().expect("tempdir");
    let bin = work.path().join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let fake = fake_binary();
    for n in ["vmrun", "ovftool", "vmware-vdiskmanager"] {
        std::os::unix::fs::symlink(&fake, bin.join(n)).expect("symlink");
    }
    let store = work.path().join("store");
    let config = |ssh: Option<Value>| -> PathBuf {
        let mut d = json!({"kind": "vmrun", "vm_store_path": store.display().to_string(),
            "vmrun": bin.join("vmrun").display().to_string(), "ovftool": bin.join("ovftool").display().to_string(),
            "vdiskmanager": bin.join("vmware-vdiskmanager").display().to_string()});
        let name = if let Some(s) = ssh {
            d["ssh"] = s;
            "cpi-ssh.json"
        } else {
            "cpi.json"
        };
        let p = work.path().join(name);
        std::fs::write(&p, json!({"driver": d}).to_string()).expect("config");
        p
    };
    let local = config(None);

    println!("vmrun driver benchmark (VMware test double; medians, run counts shown; each call is one vmcpi process)");
    let mut stemcells = Vec::new();
    for (label, cap, data) in [("64 MiB", 64u64, 16u64), ("4 GiB", 4096, 256)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = stemcell_image(dir.path(), cap, data);
        let size = std::fs::metadata(&image).map(|m| m.len()).unwrap_or(0);
        let (sc, import_ms) = call(&local, "create_stemcell", json!([image.display().to_string(), {}]));
        println!("  create_stemcell, {label} stemcell ({data} MiB of data, image {} MiB): {import_ms} ms", size >> 20);
        stemcells.push((label, sc));
    }
    // interleaved, so a busy neighbour on a shared machine slows both series alike
    let mut times: Vec<Vec<u128>> = vec![Vec::new(), Vec::new()];
    let mut vms = Vec::new();
    for _ in 0..LOCAL_RUNS {
        for (i, (_, sc)) in stemcells.iter().enumerate() {
            let (r, ms) = call(
                &local,
                "create_vm",
                json!(["agent", sc, {"cpu": 1, "ram": 512, "disk": 1024}, {"default": {"type": "dynamic", "cloud_properties": {}}}, [], {}]),
            );
            times[i].push(ms);
            vms.push(r[0].clone());
        }
    }
    for vm in vms {
        call(&local, "delete_vm", json!([vm]));
    }
    let medians: Vec<u128> = times.into_iter().map(median).collect();
    for ((label, _), ms) in stemcells.iter().zip(&medians) {
        println!("  create_vm, {label} stemcell, local: {ms} ms (median of {LOCAL_RUNS})");
    }
    let results: Vec<(Value, u128)> = stemcells.iter().map(|(_, sc)| sc.clone()).zip(medians).collect();
    let ratio = results[1].1 as f64 / results[0].1.max(1) as f64;
    println!(
        "  create_vm ratio 4 GiB / 64 MiB: {ratio:.2} (target <= 1.2: {})",
        if ratio <= 1.2 { "met" } else { "NOT met" }
    );

    let (dir, port) = ("/tmp/vmcpi-test-sshd-22241".to_string(), "22241".to_string());
    let up = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/sshd-up.sh"))
        .args([&dir, &port])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    match up.then_some((dir, port)) {
        None => println!("  SSH overhead: skipped (tools/sshd-up.sh could not start sshd on 127.0.0.1:22241)"),
        Some((dir, port)) => {
            let dir = PathBuf::from(dir);
            let ssh = config(Some(
                json!({"host": "127.0.0.1", "port": port.parse::<u16>().expect("port"), "user": "root",
                "private_key_path": dir.join("id_ed25519").display().to_string(), "known_hosts": dir.join("known_hosts").display().to_string()}),
            ));
            let sc = &results[0].0;
            let probe = json!(["vm-00000000000000000000"]);
            let l: Vec<u128> = (0..RUNS * 2).map(|_| call(&local, "has_vm", probe.clone()).1).collect();
            let s: Vec<u128> = (0..RUNS * 2).map(|_| call(&ssh, "has_vm", probe.clone()).1).collect();
            let (l, s) = (median(l), median(s));
            println!("  has_vm (1 file check, median of {}): local {l} ms, ssh {s} ms -> SSH overhead per call {} ms (connect + handshake + auth + SFTP)", RUNS * 2, s.saturating_sub(l));
            let lc = create_vms(&local, sc);
            let sc_ms = create_vms(&ssh, sc);
            println!("  create_vm (64 MiB stemcell, median of {RUNS}): local {lc} ms, ssh {sc_ms} ms -> SSH overhead {} ms (one connection; 2 lock holders, clone, vdiskmanager, the .vmx mv, start: 6 SSH execs)", sc_ms.saturating_sub(lc));
        }
    }
}
