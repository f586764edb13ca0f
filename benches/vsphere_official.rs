//! vmcpi next to the official BOSH vSphere CPI (cloudfoundry/bosh-vsphere-cpi-release, Ruby, unmodified), the
//! CPI users would otherwise pick: the same lifecycle (create_stemcell, create_vm, has_vm, create_disk,
//! attach_disk, set_vm_metadata, detach_disk, delete_vm, delete_disk, delete_stemcell), one process per call as
//! a director runs them, both CPIs on one patched simulator (govmomi 0.24's vcsim, vCenter model, with the
//! fidelity patches the official CPI needs) behind `countproxy`, which counts every HTTP request. Per method:
//! requests, median wall time of the warm passes, ratios; then the first lifecycle on the fresh simulator (the
//! official CPI's telemetry stall in its first create_stemcell) apart, the goals, and where vmcpi's time goes
//! in one create_vm and one attach_disk.
//!
//! Run: `cargo bench --bench vsphere_official` (release build; `tools/bench-report.sh` runs it and puts the
//! table into README.md). Needs `../shared/tools/vsphere-cpi` beside the repository (`$VSPHERE_CPI_KIT`
//! elsewhere): the official CPI is set up from it into `target/vsphere-cpi` (`$VSPHERE_CPI`: another
//! `bin/vsphere_cpi`) and the patched simulator built into `target/vcsim-patched` (`$VCSIM_PATCHED`), both on
//! first use, as is `target/countproxy`. Environment: `VMCPI_BIN` (another vmcpi build), `VMCPI_BENCH_PASSES`
//! (warm passes, default 5), `VMCPI_BENCH_SEED_TELEMETRY=1` (set the vCenter option the official CPI's first
//! create_stemcell otherwise spends ~95 s creating: no telemetry figure then), `VMCPI_BENCH_NETNS=0` (run on
//! the host's network instead of a private network namespace with only loopback, which the bench enters by
//! itself as root: the official CPI's create_vm first tries the ESXi host's name, which must fail at once
//! without a DNS query leaving the machine).
#[path = "support/countproxy.rs"]
mod countproxy;
#[path = "support/cpi.rs"]
mod cpi;
#[path = "../tests/vsphere_sim.rs"]
mod vsphere_sim;

use countproxy::CountProxy;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const METHODS: [&str; 10] = [
    "create_stemcell",
    "create_vm",
    "has_vm",
    "create_disk",
    "attach_disk",
    "set_vm_metadata",
    "detach_disk",
    "delete_vm",
    "delete_disk",
    "delete_stemcell",
];

/// Per method, the requests no client can avoid on this simulator, and which. Assumed: the session is
/// kept (no login), a task is done when first read (as here; a real vCenter may need more reads), and what
/// does not change between calls (the datacenter, folders, port groups, custom attribute keys) is known;
/// the CPI's own objects are found by name (a CID is a name), and what changes (a VM's devices, power
/// state, the datastores' free space) is read.
const FLOOR: [(&str, u32, &str); 10] = [
    (
        "create_stemcell",
        8,
        "placement read (pool, datastores' free space), CreateImportSpec, ImportVApp, the lease's read, the disk upload, HttpNfcLeaseComplete, the snapshot and its task's read",
    ),
    (
        "create_vm",
        10,
        "find the stemcell, read it (snapshot, devices) with placement, clone and its task's read, read the clone, upload the settings ISO, reconfigure and its task's read, power on and its task's read",
    ),
    ("has_vm", 1, "find the VM"),
    ("create_disk", 4, "find the VM, read its path with the datastores, create the disk and its task's read"),
    (
        "attach_disk",
        5,
        "find the VM, read its devices and settings, upload the settings ISO, reconfigure and its task's read (vmcpi also checks that the disk is beside the VM first: one HEAD, rather than a reconfigure that fails in vCenter's task list when it is not)",
    ),
    (
        "set_vm_metadata",
        7,
        "find the VM, read the attribute definitions (a remembered key would follow a renamed attribute), one SetField per key (5 keys)",
    ),
    (
        "detach_disk",
        5,
        "find the VM, read its devices and settings, upload the settings ISO, reconfigure and its task's read",
    ),
    (
        "delete_vm",
        8,
        "find the VM, read it (power state, disks, folder), power off, destroy, delete its folder (the settings ISOs), each with its task's read",
    ),
    (
        "delete_disk",
        5,
        "read the datastores, find the disk's (HEAD), delete it and its task's read, look for its metadata file (HEAD)",
    ),
    ("delete_stemcell", 3, "find it, destroy it and its task's read"),
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn kit() -> PathBuf {
    std::env::var_os("VSPHERE_CPI_KIT").map(PathBuf::from).unwrap_or_else(|| root().join("../shared/tools/vsphere-cpi"))
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).map(PathBuf::from)
}

/// The patched simulator: `$VCSIM_PATCHED`, else `target/vcsim-patched` (built when missing or stale).
fn patched_vcsim() -> Option<PathBuf> {
    if let Some(p) = env_path("VCSIM_PATCHED") {
        return p.is_file().then_some(p);
    }
    vsphere_sim::vcsim_patched_binary()
}

/// The official CPI's launcher: `$VSPHERE_CPI`, else `target/vsphere-cpi/bin/vsphere_cpi` (set up when missing).
fn official_cpi() -> Option<PathBuf> {
    if let Some(p) = env_path("VSPHERE_CPI") {
        return p.is_file().then_some(p);
    }
    let dest = root().join("target/vsphere-cpi");
    countproxy::built_by("tools/vcsim/official-cpi.sh", dest.join("bin/vsphere_cpi"), &[&dest])
}

/// Runs the bench again inside a new network namespace with only loopback (root, `unshare` and `ip`
/// needed); returns when that is not possible or not wanted, so that the bench runs here.
fn enter_private_network() {
    if std::env::var_os("VMCPI_BENCH_IN_NETNS").is_some() || std::env::var("VMCPI_BENCH_NETNS").is_ok_and(|v| v == "0")
    {
        return;
    }
    let works = Command::new("unshare")
        .args(["-n", "ip", "link", "set", "lo", "up"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        eprintln!("note: no private network namespace (needs root, unshare and ip): running on the host's network");
        return;
    }
    let me = std::env::current_exe().expect("own path");
    let status = Command::new("unshare")
        .args(["-n", "sh", "-c", r#"ip link set lo up && exec "$0" "$@""#])
        .arg(me)
        .args(std::env::args_os().skip(1))
        .env("VMCPI_BENCH_IN_NETNS", "1")
        .status()
        .expect("run the bench in a network namespace");
    std::process::exit(status.code().unwrap_or(1));
}

/// One CPI process: what it answered, how long it took, what went over the wire.
struct Call {
    result: Value,
    error: Option<String>,
    stderr: String,
    wall: Duration,
    requests: u32,
    ops: String,
}

#[derive(Clone, Copy, PartialEq)]
enum Cpi {
    Official,
    Vmcpi,
}

struct Runner {
    proxy: CountProxy,
    official: PathBuf,
    official_cfg: PathBuf,
    vmcpi: PathBuf,
    vmcpi_cfg: PathBuf,
    /// vmcpi's config, logging at debug level (for the time breakdown)
    vmcpi_debug_cfg: PathBuf,
}

impl Runner {
    fn call(&self, cpi: Cpi, method: &str, args: Value) -> Call {
        self.call_with(cpi, method, args, false)
    }

    fn call_with(&self, cpi: Cpi, method: &str, args: Value, debug: bool) -> Call {
        let cmd = match cpi {
            Cpi::Official => {
                let mut c = Command::new(&self.official);
                c.arg(&self.official_cfg);
                c
            }
            Cpi::Vmcpi => cpi::vmcpi(&self.vmcpi, if debug { &self.vmcpi_debug_cfg } else { &self.vmcpi_cfg }),
        };
        self.proxy.take();
        let o = cpi::run(cmd, &cpi::request(method, args));
        let (requests, ops) = self.proxy.take();
        let (result, error) = if !o.answered {
            let last: Vec<&str> = o.stderr.lines().rev().take(5).collect();
            (Value::Null, Some(format!("no JSON response (exit {:?}): {}", o.status, last.join(" | "))))
        } else if o.error.is_null() {
            (o.result, None)
        } else {
            (Value::Null, Some(format!("{}: {}", o.error["type"], o.error["message"])))
        };
        Call { result, error, stderr: o.stderr, wall: o.wall, requests, ops }
    }
}

/// One CPI's lifecycle: its calls in order, or the first failure.
struct Pass {
    calls: Vec<(&'static str, Call)>,
    failed: Option<String>,
}

/// What a lifecycle made so far (the arguments of its next calls).
#[derive(Default)]
struct Made {
    stemcell: Option<Value>,
    vm: Option<Value>,
    disk: Option<Value>,
}

fn args_for(method: &str, image: &Path, made: &Made) -> Value {
    let nets = json!({"default": {"type": "manual", "ip": "10.0.0.5", "netmask": "255.255.255.0", "gateway": "10.0.0.1", "dns": ["10.0.0.2"], "default": ["dns", "gateway"], "cloud_properties": {"name": "VM Network"}}});
    let (sc, vm, disk) = (&made.stemcell, &made.vm, &made.disk);
    match method {
        "create_stemcell" => json!([image, {"name": "bosh-vsphere-esxi-ubuntu-jammy-go_agent", "version": "1.0"}]),
        "create_vm" => json!(["agent-bench", sc, {"cpu": 2, "ram": 1024, "disk": 1024}, nets, [], {}]),
        "has_vm" | "delete_vm" => json!([vm]),
        "create_disk" => json!([1024, {}, vm]),
        "attach_disk" | "detach_disk" => json!([vm, disk]),
        "set_vm_metadata" => {
            json!([vm, {"director": "bench", "deployment": "dep", "name": "web/0", "index": "0", "job": "web"}])
        }
        "delete_disk" => json!([disk]),
        "delete_stemcell" => json!([sc]),
        _ => unreachable!("{method}"),
    }
}

/// Checks a call's answer and keeps what later calls need; `Err` says what is wrong.
fn take_result(method: &str, call: &Call, made: &mut Made) -> Result<(), String> {
    if let Some(e) = &call.error {
        return Err(e.clone());
    }
    let r = &call.result;
    let ok = match method {
        "create_stemcell" => r.is_string().then(|| made.stemcell = Some(r.clone())).is_some(),
        // v2: [cid, networks]
        "create_vm" => {
            let cid = if r.is_array() { &r[0] } else { r };
            cid.is_string().then(|| made.vm = Some(cid.clone())).is_some()
        }
        "has_vm" => r == &json!(true),
        "create_disk" => r.is_string().then(|| made.disk = Some(r.clone())).is_some(),
        "attach_disk" => r.is_string() || r.is_object() || r.is_null(),
        _ => r.is_null(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("unexpected result {r}"))
    }
}

/// Both lifecycles, call by call in turn (`first` goes first at each method), so that both see the same load.
fn lifecycle_pair(run: &Runner, image: &Path, first: Cpi) -> (Pass, Pass) {
    let order = if first == Cpi::Official { [Cpi::Official, Cpi::Vmcpi] } else { [Cpi::Vmcpi, Cpi::Official] };
    let mut passes = [Pass { calls: vec![], failed: None }, Pass { calls: vec![], failed: None }];
    let mut made = [Made::default(), Made::default()];
    for method in METHODS {
        for (i, cpi) in order.iter().enumerate() {
            if passes[i].failed.is_some() {
                continue;
            }
            let call = run.call(*cpi, method, args_for(method, image, &made[i]));
            if let Err(e) = take_result(method, &call, &mut made[i]) {
                passes[i].failed = Some(format!("{method}: {e}"));
            }
            passes[i].calls.push((method, call));
        }
    }
    let [a, b] = passes;
    if first == Cpi::Official {
        (a, b)
    } else {
        (b, a)
    }
}

/// A lifecycle run by one CPI alone (the first one on the fresh simulator).
fn lifecycle(run: &Runner, image: &Path, cpi: Cpi) -> Pass {
    let mut pass = Pass { calls: vec![], failed: None };
    let mut made = Made::default();
    for method in METHODS {
        let call = run.call(cpi, method, args_for(method, image, &made));
        let res = take_result(method, &call, &mut made);
        pass.calls.push((method, call));
        if let Err(e) = res {
            pass.failed = Some(format!("{method}: {e}"));
            break;
        }
    }
    pass
}

fn median(mut v: Vec<Duration>) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "?".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| format!("{:.0} GiB", kb as f64 / 1048576.0))
        .unwrap_or_else(|| "?".into());
    format!("{cores} cores ({cpu}), {mem}")
}

/// Per method over the warm passes: requests (the same in every pass, else the median) and median wall.
struct Stat {
    requests: u32,
    spread: (u32, u32),
    wall: Duration,
    ops: String,
}

fn stats(passes: &[Pass], method: &str) -> Stat {
    let calls: Vec<&Call> =
        passes.iter().flat_map(|p| p.calls.iter().filter(|(m, _)| *m == method).map(|(_, c)| c)).collect();
    let mut reqs: Vec<u32> = calls.iter().map(|c| c.requests).collect();
    reqs.sort();
    Stat {
        requests: reqs.get(reqs.len() / 2).copied().unwrap_or(0),
        spread: (reqs.first().copied().unwrap_or(0), reqs.last().copied().unwrap_or(0)),
        wall: median(calls.iter().map(|c| c.wall).collect()),
        ops: calls.last().map(|c| c.ops.clone()).unwrap_or_default(),
    }
}

fn lifecycle_wall(p: &Pass) -> Duration {
    p.calls.iter().map(|(_, c)| c.wall).sum()
}

fn lifecycle_requests(p: &Pass) -> u32 {
    p.calls.iter().map(|(_, c)| c.requests).sum()
}

/// Median wall time of `n` runs of a program that does nothing (`/bin/true`) and of vmcpi's `info` (config
/// read, no request): what any one-process-per-call CPI pays before and after its work.
fn process_floor(run: &Runner, n: usize) -> (Duration, Duration) {
    let walls = |f: &dyn Fn() -> Duration| median((0..n).map(|_| f()).collect());
    let t = walls(&|| {
        let started = Instant::now();
        let _ = Command::new("/bin/true").stdin(Stdio::null()).status();
        started.elapsed()
    });
    let info = walls(&|| run.call(Cpi::Vmcpi, "info", json!([])).wall);
    (t, info)
}

/// A number from `key <number>` in `text`.
fn number_after(text: &str, key: &str) -> Option<f64> {
    text.split(key).nth(1)?.split_whitespace().next()?.trim_end_matches([',', ';']).parse().ok()
}

/// One call of `method` broken down from vmcpi's debug log (`timing:` and `wire:` lines): process start and
/// exit, the steps in the process, each request's round trip, our own work; and the floor: `floor_requests`
/// requests at the call's median round trip, connecting once, and a process that does nothing.
/// Returns (connecting, the median round trip) of the call, in ms.
fn breakdown(
    run: &Runner,
    method: &str,
    args: Value,
    floor_requests: u32,
    bin_true: Duration,
) -> Result<(f64, f64), String> {
    const RUNS: usize = 7;
    let mut calls: Vec<Call> = Vec::new();
    for _ in 0..RUNS {
        let c = run.call_with(Cpi::Vmcpi, method, args.clone(), true);
        if let Some(e) = &c.error {
            return Err(format!("{method}: {e}"));
        }
        calls.push(c);
        // attach and detach alternate, so that every attach finds the disk detached
        if method == "attach_disk" {
            let d = run.call(Cpi::Vmcpi, "detach_disk", args.clone());
            if let Some(e) = d.error {
                return Err(format!("detach_disk: {e}"));
            }
        }
    }
    calls.sort_by_key(|c| c.wall);
    let fastest = calls[0].wall;
    let c = &calls[RUNS / 2];
    let timing = c.stderr.lines().find_map(|l| l.split("timing: ").nth(1)).unwrap_or("").to_string();
    let wire = c.stderr.lines().find_map(|l| l.split("wire: ").nth(1)).unwrap_or("").to_string();
    let iso = c.stderr.lines().find_map(|l| l.split("settings ISO: ").nth(1)).unwrap_or("").to_string();
    let in_process = number_after(&timing, "in process ").unwrap_or(0.0);
    let on_wire = number_after(&timing, "on the wire")
        .or_else(|| timing.split(" on the wire").next()?.rsplit(' ').next()?.parse().ok());
    let ours = number_after(&timing, "ours ").unwrap_or(0.0);
    let wall = c.wall.as_secs_f64() * 1000.0;
    // round trips in the order sent: the first one connects (TCP and TLS)
    let rtts: Vec<f64> = wire
        .split(" (ms")
        .next()
        .unwrap_or("")
        .split(", ")
        .filter_map(|w| w.rsplit(' ').next()?.parse().ok())
        .collect();
    let mut rest: Vec<f64> = rtts.iter().skip(1).copied().collect();
    rest.sort_by(f64::total_cmp);
    let median_rtt = rest.get(rest.len() / 2).copied().unwrap_or(0.0);
    let connect = rtts.first().map(|f| (f - median_rtt).max(0.0)).unwrap_or(0.0);
    let true_ms = bin_true.as_secs_f64() * 1000.0;
    let floor = true_ms + connect + floor_requests as f64 * median_rtt;
    println!(
        "\n{method}: {} requests; whole process {wall:.1} ms (the median of {RUNS}; fastest {:.1} ms)",
        c.requests,
        fastest.as_secs_f64() * 1000.0
    );
    println!("  process start and exit: {:.1} ms (whole process − in process)", wall - in_process);
    println!("  in process: {timing}");
    println!("  round trips: {wire}");
    if !iso.is_empty() {
        println!("  settings ISO: {iso}");
    }
    println!(
        "  ours (in process, not waiting for an answer): {ours:.2} ms; on the wire {:.2} ms",
        on_wire.unwrap_or(0.0)
    );
    println!(
        "  floor: {floor_requests} requests × {median_rtt:.2} ms (this call's median round trip) + connecting {connect:.2} ms + a process that does nothing {true_ms:.2} ms = {floor:.1} ms; vmcpi {wall:.1} ms = {:.2}× the floor",
        wall / floor.max(1e-9)
    );
    Ok((connect, median_rtt))
}

fn main() {
    enter_private_network();
    let Some(vcsim) = patched_vcsim() else {
        eprintln!(
            "the patched simulator cannot be built: is the vsphere-cpi kit at {}? (VSPHERE_CPI_KIT)",
            kit().display()
        );
        std::process::exit(1);
    };
    let Some(official) = official_cpi() else {
        eprintln!(
            "the official vSphere CPI cannot be set up: is the vsphere-cpi kit at {}? (VSPHERE_CPI_KIT)",
            kit().display()
        );
        std::process::exit(1);
    };
    let Some(proxy_bin) = countproxy::go_tool("countproxy") else {
        eprintln!(
            "target/countproxy cannot be built: bash tools/vcsim/build.sh target/countproxy tools/vcsim/countproxy"
        );
        std::process::exit(1);
    };
    let passes: usize = std::env::var("VMCPI_BENCH_PASSES").ok().and_then(|v| v.parse().ok()).unwrap_or(5).max(1);
    let seed = std::env::var("VMCPI_BENCH_SEED_TELEMETRY").is_ok_and(|v| v == "1");
    let load_before = loadavg();

    // the simulator's datastores in memory where there is a tmpfs: its disk stands in for a vCenter's
    // storage and is no part of either CPI, and a disk shared with other jobs makes its file operations
    // (the clone's files, the settings ISO, the stemcell's disk) stall at random
    let sim_dir = match std::fs::metadata("/dev/shm").map(|m| m.is_dir()) {
        Ok(true) => tempfile::tempdir_in("/dev/shm").unwrap(),
        _ => tempfile::tempdir().unwrap(),
    };
    let sim = vsphere_sim::Vcsim::start_in(&vcsim, "vpx", false, "pass", sim_dir);
    // the CPIs' own files (vmcpi's state_dir, the official CPI's unpacked stemcell) on the ordinary disk
    let dir = tempfile::tempdir().unwrap();
    let proxy = CountProxy::start(&proxy_bin, &sim.url.replace("/sdk", ""), dir.path());
    // the official CPI's config for this simulator (the kit's cpi-config.sh): cluster DC0_C0, datastore
    // ^LocalDS_0$, folders BOSH_VMs/BOSH_Templates/BOSH_Disks, TLS verified against the proxy's certificate
    let out = Command::new("bash")
        .arg(kit().join("cpi-config.sh"))
        .arg(proxy.host_port())
        .arg(&proxy.cert)
        .env("VC_PASSWORD", &sim.password)
        .output()
        .expect("cpi-config.sh");
    assert!(out.status.success(), "cpi-config.sh: {}", String::from_utf8_lossy(&out.stderr));
    let official_cfg = dir.path().join("official.json");
    std::fs::write(&official_cfg, &out.stdout).unwrap();
    // vmcpi's: the same placement (cluster, datastore), its own folders, TLS verified the same way
    let pem = std::fs::read_to_string(&proxy.cert).unwrap();
    let mut cfg = sim.config();
    cfg["driver"]["host"] = json!(format!("{}/sdk", proxy.url));
    cfg["driver"]["ca_cert"] = json!(pem);
    cfg["driver"]["clusters"] = json!(["DC0_C0"]);
    cfg["driver"]["datastores"] = json!(["LocalDS_0"]);
    cfg["driver"]["state_dir"] = json!(dir.path().join("state"));
    let vmcpi_cfg = dir.path().join("vmcpi.json");
    std::fs::write(&vmcpi_cfg, cfg.to_string()).unwrap();
    cfg["log_level"] = json!("debug");
    let vmcpi_debug_cfg = dir.path().join("vmcpi-debug.json");
    std::fs::write(&vmcpi_debug_cfg, cfg.to_string()).unwrap();
    let run = Runner { proxy, official, official_cfg, vmcpi: cpi::vmcpi_bin(), vmcpi_cfg, vmcpi_debug_cfg };
    let image = vsphere_sim::stemcell_image(dir.path(), false);

    if seed {
        let st = Command::new("python3")
            .arg(kit().join("seed-telemetry-option.py"))
            .arg(run.proxy.host_port())
            .arg(&run.proxy.cert)
            .args(["user", &sim.password])
            .status()
            .expect("seed-telemetry-option.py");
        assert!(st.success(), "seed-telemetry-option.py failed");
        run.proxy.take();
    }

    println!("vmcpi next to the official vSphere CPI: one process per call, one patched simulator (vCenter model) behind countproxy");
    println!("machine: {}; load average before: {load_before}", machine());
    eprintln!("bench: first lifecycle of each CPI on the fresh simulator (the official CPI's first create_stemcell may take ~100 s)");
    // first lifecycles: the official CPI on a vCenter it has never seen, then vmcpi without a session
    let first_official = lifecycle(&run, &image, Cpi::Official);
    let first_vmcpi = lifecycle(&run, &image, Cpi::Vmcpi);
    let mut failures: Vec<String> = Vec::new();
    for (name, p) in [("official", &first_official), ("vmcpi", &first_vmcpi)] {
        if let Some(f) = &p.failed {
            failures.push(format!("{name}, first lifecycle: {f}"));
        }
    }
    let mut official: Vec<Pass> = Vec::new();
    let mut vmcpi: Vec<Pass> = Vec::new();
    for i in 0..passes {
        eprintln!("bench: warm pass {}/{passes}", i + 1);
        let (o, v) = lifecycle_pair(&run, &image, if i % 2 == 0 { Cpi::Official } else { Cpi::Vmcpi });
        for (name, p) in [("official", &o), ("vmcpi", &v)] {
            if let Some(f) = &p.failed {
                failures.push(format!("{name}, warm pass {}: {f}", i + 1));
            }
        }
        official.push(o);
        vmcpi.push(v);
    }
    let load_after = loadavg();

    let mut table = String::new();
    table += "| method | official CPI: requests | vmcpi: requests | ratio | official CPI: time | vmcpi: time | vmcpi faster |\n";
    table += "|---|---|---|---|---|---|---|\n";
    let (mut o_req, mut v_req) = (0, 0);
    let mut worst: (f64, &str) = (0.0, "");
    for m in METHODS {
        let (o, v) = (stats(&official, m), stats(&vmcpi, m));
        o_req += o.requests;
        v_req += v.requests;
        let ratio = v.requests as f64 / o.requests.max(1) as f64;
        if ratio > worst.0 {
            worst = (ratio, m);
        }
        let vary = |s: &Stat| {
            if s.spread.0 != s.spread.1 {
                format!(" ({}–{})", s.spread.0, s.spread.1)
            } else {
                String::new()
            }
        };
        table += &format!(
            "| {m} | {}{} | {}{} | {ratio:.2} | {} | {} | {:.0}× |\n",
            o.requests,
            vary(&o),
            v.requests,
            vary(&v),
            ms(o.wall),
            ms(v.wall),
            o.wall.as_secs_f64() / v.wall.as_secs_f64().max(1e-9)
        );
    }
    // the lifecycle row is the sum of the rows above (each a median); the median of the passes' own sums,
    // which a stall in any one call moves, is printed below it
    let o_wall: Duration = METHODS.iter().map(|m| stats(&official, m).wall).sum();
    let v_wall: Duration = METHODS.iter().map(|m| stats(&vmcpi, m).wall).sum();
    let (o_pass, v_pass) =
        (median(official.iter().map(lifecycle_wall).collect()), median(vmcpi.iter().map(lifecycle_wall).collect()));
    let req_ratio = v_req as f64 / o_req.max(1) as f64;
    let speed = o_wall.as_secs_f64() / v_wall.as_secs_f64().max(1e-9);
    table += &format!(
        "| **lifecycle** | **{o_req}** | **{v_req}** | **{req_ratio:.2}** | **{}** | **{}** | **{speed:.0}×** |\n",
        ms(o_wall),
        ms(v_wall)
    );
    println!("\n<!-- official -->\n{table}<!-- /official -->");
    println!(
        "\nWall: whole process (start to exit), median of {passes} warm passes; lifecycle: the sum of the medians (the median of the passes' own sums: official CPI {}, vmcpi {}, {:.0}×). Requests: every HTTP request the proxy saw during the call (SOAP, PBM, datastore and NFC transfers). Load average before: {load_before}; after: {load_after}.",
        ms(o_pass),
        ms(v_pass),
        o_pass.as_secs_f64() / v_pass.as_secs_f64().max(1e-9)
    );
    let first = |p: &Pass| {
        format!(
            "{} requests, {}{}",
            lifecycle_requests(p),
            ms(lifecycle_wall(p)),
            p.failed.as_ref().map(|f| format!(" (failed at {f})")).unwrap_or_default()
        )
    };
    let sc_first = first_official.calls.first().map(|(_, c)| c);
    println!("\nFirst lifecycle on the fresh simulator (not in the medians):");
    println!("  official CPI: {}", first(&first_official));
    if let Some(c) = sc_first {
        let warm = stats(&official, "create_stemcell");
        println!(
            "  official CPI's first create_stemcell: {} and {} requests (warm: {} and {}){}",
            ms(c.wall),
            c.requests,
            ms(warm.wall),
            warm.requests,
            if seed {
                " — telemetry option seeded beforehand (VMCPI_BENCH_SEED_TELEMETRY=1)".to_string()
            } else {
                format!(
                    "; of that, the telemetry thread's retries of the missing option config.SDDC.cpi: about {} (QueryOptions ×{})",
                    ms(c.wall.saturating_sub(warm.wall)),
                    c.ops.matches("QueryOptions").count()
                )
            }
        );
    }
    println!("  vmcpi, no session yet (the official CPI made the custom attributes already): {}", first(&first_vmcpi));

    println!("\nGoals (warm passes, this run):");
    let mark = |ok: bool| if ok { "met" } else { "NOT met" };
    println!("  requests over the lifecycle ≤ 0.20× the official CPI's: {req_ratio:.3} — {}", mark(req_ratio <= 0.2));
    println!("  requests per method ≤ 0.35×: worst {:.3} ({}) — {}", worst.0, worst.1, mark(worst.0 <= 0.35));
    println!("  ≥ 150× faster over the lifecycle: {speed:.0}× — {}", mark(speed >= 150.0));

    println!(
        "\nThe floor: requests no client can avoid per call (see FLOOR in benches/vsphere_official.rs), and vmcpi's:"
    );
    println!("<!-- floor -->");
    println!("| method | floor | vmcpi | above the floor | the floor's requests |");
    println!("|---|---|---|---|---|");
    let mut floor_total = 0;
    for (m, floor, what) in FLOOR {
        let v = stats(&vmcpi, m).requests;
        floor_total += floor;
        println!("| {m} | {floor} | {v} | {} | {what} |", v as i64 - floor as i64);
    }
    println!("| **lifecycle** | **{floor_total}** | **{v_req}** | **{}** | |", v_req as i64 - floor_total as i64);
    println!("<!-- /floor -->");

    println!("\nEach pass's calls (ms), vmcpi then the official CPI:");
    for (name, ps) in [("vmcpi", &vmcpi), ("official", &official)] {
        for (i, p) in ps.iter().enumerate() {
            let walls: Vec<String> =
                p.calls.iter().map(|(_, c)| format!("{:.1}", c.wall.as_secs_f64() * 1000.0)).collect();
            println!("  {name} pass {}: {} = {}", i + 1, walls.join(" "), ms(lifecycle_wall(p)));
        }
    }

    println!("\nRequests per call on the wire (last warm pass):");
    for m in METHODS {
        println!("  {m}: official: {}", stats(&official, m).ops);
        println!("  {m}: vmcpi: {}", stats(&vmcpi, m).ops);
    }

    // where vmcpi's time goes: a stemcell and a VM of its own, a disk to attach
    let (bin_true, info) = process_floor(&run, 21);
    println!(
        "\nWhere vmcpi's time goes (warm session, debug log, {}; load average {}):",
        run.vmcpi.display(),
        loadavg()
    );
    println!(
        "  a process that does nothing (/bin/true): {}; vmcpi `info` (config read, no request): {} (medians of 21)",
        ms(bin_true),
        ms(info)
    );
    let mut made = Made::default();
    let setup = ["create_stemcell", "create_vm", "create_disk"].iter().try_for_each(|m| {
        let c = run.call(Cpi::Vmcpi, m, args_for(m, &image, &made));
        take_result(m, &c, &mut made).map_err(|e| format!("{m}: {e}"))
    });
    let broke = setup
        .and_then(|_| breakdown(&run, "create_vm", args_for("create_vm", &image, &made), FLOOR[1].1, bin_true))
        .and_then(|_| breakdown(&run, "attach_disk", args_for("attach_disk", &image, &made), FLOOR[4].1, bin_true));
    let mut time_floor = String::new();
    match broke {
        Ok((connect, rtt)) => {
            // what any one-process-per-call CPI needs on this simulator at the least, and what that allows
            let per_call = bin_true.as_secs_f64() * 1000.0 + connect;
            let floor_ms = METHODS.len() as f64 * per_call + floor_total as f64 * rtt;
            println!(
                "\nThe lifecycle's time floor on this simulator, this run: 10 × ({:.2} ms a process + {connect:.2} ms connecting) + {floor_total} requests × {rtt:.2} ms (attach_disk's median round trip) ≈ {floor_ms:.0} ms; vmcpi's lifecycle {} is {:.2}× that; the official CPI's {} is {:.0}× that floor, the most any CPI could be faster here",
                bin_true.as_secs_f64() * 1000.0,
                ms(v_wall),
                v_wall.as_secs_f64() * 1000.0 / floor_ms.max(1e-9),
                ms(o_wall),
                o_wall.as_secs_f64() * 1000.0 / floor_ms.max(1e-9)
            );
            time_floor = format!(
                "In time, a call on this simulator cannot take less than a process start, a TLS connection and the \
                round trips of its requests: about {floor_ms:.0} ms for the lifecycle in this run, of which vmcpi took {:.2}× \
                and which the official CPI took {:.0}× ([docs/vsphere.md](docs/vsphere.md#where-a-calls-time-goes)).",
                v_wall.as_secs_f64() * 1000.0 / floor_ms.max(1e-9),
                o_wall.as_secs_f64() * 1000.0 / floor_ms.max(1e-9)
            );
        }
        Err(e) => failures.push(format!("vmcpi, time breakdown: {e}")),
    }

    // the block tools/bench-report.sh puts into README.md
    let telemetry = match (seed, first_official.calls.first()) {
        (false, Some((_, c))) => format!(
            " On a vCenter it had never seen, the official CPI's first create_stemcell took {} ({} requests): its telemetry thread retries a missing vCenter option with back-off before creating it.",
            ms(c.wall),
            c.requests
        ),
        _ => String::new(),
    };
    let now = vmcpi::rfc3339::now_millis();
    println!("\n<!-- readme:official -->");
    print!("{table}");
    println!(
        "\nMeasured {} UTC by `tools/bench-report.sh` (`cargo bench --bench vsphere_official`): the 10 calls of a VM's life, each CPI \
        unmodified and run as a director runs it (one process per call, the calls of the two in turn), against one govmomi 0.24 \
        simulator (vCenter model, with the patches the official CPI needs) behind an HTTPS proxy that counts every request \
        (SOAP, storage policy, datastore and disk transfers). Time: the whole process, median of {passes} passes after a \
        first one (lifecycle: their sum; the median of the passes' own sums gives {:.0}×); vmcpi: {}. The official CPI: cloudfoundry/bosh-vsphere-cpi-release (`bin/vsphere_cpi`, \
        Ruby 3.1 from Debian). Machine: {}, load average {load_before} before and {load_after} after (other jobs ran beside it).{telemetry} \
        vmcpi's requests are within {} of the floor, the requests no client can avoid ({} in all; [docs/vsphere.md](docs/vsphere.md#figures)).\n",
        now.get(..16).unwrap_or(&now).replace('T', " "),
        o_pass.as_secs_f64() / v_pass.as_secs_f64().max(1e-9),
        if env_path("VMCPI_BIN").is_some() { "the static release binary, as shipped" } else { "the release build" },
        machine(),
        v_req as i64 - floor_total as i64,
        floor_total
    );
    println!("{time_floor}");
    println!("<!-- /readme:official -->");

    if !failures.is_empty() {
        println!("\nFAILED calls:");
        for f in &failures {
            println!("  {f}");
        }
        std::process::exit(1);
    }
}
