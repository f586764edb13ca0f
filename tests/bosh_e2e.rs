//! Real BOSH, end to end: the real bosh CLI runs `bosh create-env` with this project's release (built from the
//! working tree without changing it) on a VM that vmcpi's libvirt driver makes from a stemcell with a REAL
//! bosh-agent (tools/test-stemcell), once per stemcell family (OpenStack: config drive + virtio disk ids;
//! vSphere: `env` CD-ROM + SCSI targets). Phases, each timed:
//!   1. create-env: one job whose package the agent compiles on the VM, a 1 GiB persistent disk → "Finished
//!      deploying"; the job's status page (through a loopback port forward) shows it runs, that its persistent
//!      disk (the one vmcpi attached, by its CID) is mounted at /var/vcap/store, and that the NIC has the MAC
//!      vmcpi gave it and the static address, gateway and mask of the manifest's network;
//!   2. redeploy with a 2 GiB disk: the CLI migrates it (create_disk, two disks attached, the agent copies, the
//!      old one detached and deleted) → "Finished deploying", the marker file written before is still there;
//!   3. delete-env: no domain, volume, in-flight marker or port forward is left.
//!
//! It drives tools/create-env.sh (the README's third command), so the command users run is the one tested.
//! The pieces (bosh CLI, bosh-agent, monit source) come from ../shared/tools/bosh or BOSH_CLI / BOSH_AGENT /
//! MONIT_TARBALL; with CI set a missing piece fails the test.
#[path = "util.rs"]
mod util;

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn input(var: &str, file: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| repo().join("..").join("shared/tools/bosh").join(file))
}

fn virsh(args: &[&str]) -> (bool, String) {
    let out =
        Command::new("/usr/bin/virsh").args(["-q", "-c", "qemu:///system"]).args(args).output().expect("run virsh");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

fn pieces_present() -> bool {
    let have = [("BOSH_CLI", "bosh"), ("BOSH_AGENT", "bosh-agent"), ("MONIT_TARBALL", "monit-5.2.5.tar.gz")]
        .iter()
        .all(|(v, f)| input(v, f).is_file())
        && Path::new("/usr/bin/virsh").exists()
        && virsh(&["version"]).0;
    util::require_peer("the real BOSH pieces (bosh CLI, bosh-agent, monit source: ../shared/tools/bosh or BOSH_CLI/BOSH_AGENT/MONIT_TARBALL) and libvirtd", have)
}

struct Family {
    name: &'static str,
    mbus_port: u16,
    status_port: u16,
    work: PathBuf,
    pool: String,
}

/// A port that is free now (the forwards take it a minute later; two checkouts testing at once get different ones).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Family {
    /// Work dir and pool of this checkout's own (its target dir), ports free now.
    fn new(name: &'static str) -> Family {
        let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bosh-e2e").join(name);
        let tag: u32 =
            env!("CARGO_MANIFEST_DIR").bytes().fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619));
        let mbus_port = free_port();
        let status_port = std::iter::repeat_with(free_port).find(|p| *p != mbus_port).unwrap();
        Family { name, mbus_port, status_port, work, pool: format!("vmcpi-e2e-{name}-{:08x}", tag) }
    }

    fn pool(&self) -> String {
        self.pool.clone()
    }

    /// Runs tools/create-env.sh ACTION; returns its output (stdout + stderr), panicking with the tail of it and
    /// of the VM's serial console when it fails.
    fn script(&self, args: &[&str]) -> String {
        let log = self.work.join(format!("{}.log", args.join("-")));
        let f = std::fs::File::create(&log).unwrap();
        let status = Command::new("bash")
            .arg(repo().join("tools/create-env.sh"))
            .args(args)
            .args(["--family", self.name])
            .env("WORK", &self.work)
            .env("VMCPI_BIN", util::static_cpi_bin())
            .env("VMCPI_NO_TOOLS_LOG", self.work.join("no-tools.log"))
            .env("BOSH_CLI", input("BOSH_CLI", "bosh"))
            .env("BOSH_AGENT", input("BOSH_AGENT", "bosh-agent"))
            .env("MONIT_TARBALL", input("MONIT_TARBALL", "monit-5.2.5.tar.gz"))
            .env("MBUS_PORT", self.mbus_port.to_string())
            .env("STATUS_PORT", self.status_port.to_string())
            .env("POOL", &self.pool)
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .status()
            .unwrap();
        let out = std::fs::read_to_string(&log).unwrap_or_default();
        // the CPI (run by the CLI in a namespace where libvirt's tools are tripwires) ran none of them
        let ran = std::fs::read_to_string(self.work.join("no-tools.log")).unwrap_or_default();
        assert!(ran.is_empty(), "{}: the CPI ran a program it must not run:\n{ran}", self.name);
        if !status.success() {
            let serial = std::fs::read_to_string(self.work.join("serial.log")).unwrap_or_default();
            panic!(
                "{}: create-env.sh {args:?} failed ({status}):\n{}\n--- serial console (tail):\n{}",
                self.name,
                tail(&out, 6000),
                tail(&serial, 6000)
            );
        }
        out
    }

    fn state(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.work.join("state.json")).unwrap()).unwrap()
    }

    /// The job's status page through the forwarded port: key → values.
    fn status(&self) -> BTreeMap<String, Vec<String>> {
        let out = Command::new("curl")
            .args(["-fsS", "--max-time", "20", &format!("http://127.0.0.1:{}/cgi-bin/status", self.status_port)])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{}: status page: {}", self.name, String::from_utf8_lossy(&out.stderr));
        eprintln!("{}: status page:\n{text}", self.name);
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                m.entry(k.to_string()).or_default().push(v.to_string());
            }
        }
        m
    }
}

fn tail(s: &str, n: usize) -> &str {
    let mut i = s.len().saturating_sub(n);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

fn one<'a>(m: &'a BTreeMap<String, Vec<String>>, k: &str) -> &'a str {
    m.get(k).and_then(|v| v.first()).map(String::as_str).unwrap_or("")
}

fn port_free(p: u16) -> bool {
    TcpListener::bind(("127.0.0.1", p)).is_ok()
}

fn phase_done(f: &Family, what: &str, t: Instant) {
    let _ =
        writeln!(std::io::stderr(), "bosh e2e {}: {what} finished after {:.0} s", f.name, t.elapsed().as_secs_f64());
}

fn run(f: Family) {
    if !pieces_present() {
        return;
    }
    let _ = std::fs::remove_dir_all(&f.work);
    std::fs::create_dir_all(&f.work).unwrap();
    let mut times = Vec::new();

    // 1. create-env
    let t = Instant::now();
    let out = f.script(&["up", "--disk-size", "1024"]);
    times.push(("create-env", t.elapsed()));
    phase_done(&f, "create-env", t);
    assert!(out.contains("Finished deploying"), "{}: no \"Finished deploying\":\n{}", f.name, tail(&out, 4000));
    let state = f.state();
    let vm = state["current_vm_cid"].as_str().expect("current_vm_cid").to_string();
    let disk1 = state["disks"][0]["cid"].as_str().expect("disk cid").to_string();
    let s = f.status();
    assert_eq!(one(&s, "job"), "running");
    assert!(one(&s, "package").starts_with("compiled-on="), "the package was compiled on the VM: {s:?}");
    assert_eq!(one(&s, "store"), "mounted", "persistent disk at /var/vcap/store: {s:?}");
    assert!(
        s.get("store_disk_id").into_iter().flatten().any(|id| id.contains(&disk1)),
        "the mounted disk is {disk1} (by its id): {s:?}"
    );
    let size1: u64 = one(&s, "store_size_mib").parse().unwrap();
    assert!((800..=1100).contains(&size1), "a 1 GiB disk: {s:?}");
    let marker = one(&s, "marker").to_string();
    assert_eq!(marker.len(), 16, "the job wrote its marker: {s:?}");
    // the network the guest uses is the one vmcpi gave it: the MAC of the domain's NIC, the manifest's address
    let (_, xml) = virsh(&["dumpxml", &vm]);
    let mac = xml
        .split("<mac address='")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .expect("a NIC MAC in the domain XML")
        .to_string();
    let nic = s
        .get("nic")
        .into_iter()
        .flatten()
        .find(|n| n.contains(&format!("mac={mac}")))
        .unwrap_or_else(|| panic!("{}: no NIC with MAC {mac}: {s:?}", f.name));
    assert!(nic.ends_with("addr=10.0.2.15/24"), "static address from the settings: {nic}");
    assert_eq!(one(&s, "default_route"), "10.0.2.2", "gateway from the settings");

    // 2. a bigger persistent disk: the CLI migrates it
    let t = Instant::now();
    let out = f.script(&["up", "--disk-size", "2048"]);
    times.push(("migrate disk", t.elapsed()));
    phase_done(&f, "redeploy with a bigger disk (migration)", t);
    assert!(out.contains("Finished deploying"), "{}: redeploy:\n{}", f.name, tail(&out, 4000));
    let state = f.state();
    let disk2 = state["disks"][0]["cid"].as_str().expect("disk cid").to_string();
    assert_ne!(disk1, disk2, "a new disk");
    assert_eq!(state["disks"].as_array().map(Vec::len), Some(1), "one disk left in the state: {state}");
    let s = f.status();
    assert_eq!(one(&s, "store"), "mounted");
    assert!(
        s.get("store_disk_id").into_iter().flatten().any(|id| id.contains(&disk2)),
        "the new disk is mounted: {s:?}"
    );
    let size2: u64 = one(&s, "store_size_mib").parse().unwrap();
    assert!(size2 > size1 + 700, "the disk grew: {size1} → {size2}");
    assert_eq!(one(&s, "marker"), marker, "the file written before the migration is still there");
    let (_, vols) = virsh(&["vol-list", &f.pool()]);
    assert!(!vols.contains(&disk1), "the old disk was deleted: {vols}");
    assert!(vols.contains(&disk2));

    // 3. delete-env: nothing left
    let t = Instant::now();
    let out = f.script(&["down"]);
    times.push(("delete-env", t.elapsed()));
    phase_done(&f, "delete-env", t);
    assert!(out.contains("Finished deleting deployment"), "{}: delete-env:\n{}", f.name, tail(&out, 4000));
    let needle = format!("pool='{}'", f.pool());
    let (_, names) = virsh(&["list", "--all", "--name"]);
    let left: Vec<&str> =
        names.lines().map(str::trim).filter(|d| !d.is_empty() && virsh(&["dumpxml", d]).1.contains(&needle)).collect();
    assert!(left.is_empty(), "domains left: {left:?}");
    assert!(
        !virsh(&["pool-info", &f.pool()]).0,
        "the pool was emptied (and so removed by the script): {}",
        virsh(&["vol-list", &f.pool()]).1
    );
    let markers: Vec<_> = std::fs::read_dir(f.work.join("cpi-state"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    let inflight: Vec<_> =
        markers.iter().filter(|p| std::fs::read_dir(p).map(|mut d| d.next().is_some()).unwrap_or(true)).collect();
    assert!(inflight.is_empty(), "in-flight markers left: {inflight:?}");
    assert!(port_free(f.mbus_port) && port_free(f.status_port), "the forwarded ports are free again");

    let summary: Vec<String> = times.iter().map(|(p, d)| format!("{p} {:.0} s", d.as_secs_f64())).collect();
    // straight to the process's stderr (the test harness captures only print!/eprint!): CI shows the phases
    let _ = writeln!(std::io::stderr(), "bosh e2e {}: {}", f.name, summary.join(", "));
}

#[test]
fn openstack_family_create_env_migrate_delete() {
    run(Family::new("openstack"));
}

#[test]
fn vsphere_family_create_env_migrate_delete() {
    run(Family::new("vsphere"));
}
