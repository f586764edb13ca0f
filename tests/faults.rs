//! Fault injection: the CPI is killed with SIGKILL at random points of create_stemcell, create_vm and
//! attach_disk; then the director's clean-up runs (delete what was returned, nothing otherwise), and nothing
//! may be left: no domain, no volume, no in-flight marker, no scratch file. Leftovers of a killed create are
//! reaped by the next create or delete of any CPI process.
//! Trials per method: `VMCPI_KILL_TRIALS` (default 8 in the suite; `VMCPI_KILL_TRIALS=100` for the full run).
use crate::libvirt::{config_in, domains_using, libvirt_available, openstack_image, volumes_in};
use crate::util::{cpi_bin, Cpi};
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const POOL: &str = "vmcpi-test-faults";
const STATE: &str = "/var/tmp/vmcpi-test-faults-state";

fn trials() -> usize {
    std::env::var("VMCPI_KILL_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(8)
}

/// A small xorshift generator: kill points differ per trial and per run.
struct Rng(u64);
impl Rng {
    fn new() -> Self {
        Rng(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Runs one call and SIGKILLs it after `after`; returns the result when it finished first.
fn call_killed(config: &Path, method: &str, args: Value, after: Duration) -> Option<Value> {
    let req = json!({"method": method, "arguments": args, "context": {}, "api_version": 2}).to_string();
    let mut child = Command::new(cpi_bin())
        .arg("--config")
        .arg(config)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(req.as_bytes()).unwrap();
    let deadline = Instant::now() + after;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert!(v["error"].is_null(), "{method}: {v}");
            return Some(v["result"].clone());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    // it may have finished between the last check and the kill: then its answer counts
    let out = child.wait_with_output().unwrap();
    match serde_json::from_slice::<Value>(&out.stdout) {
        Ok(v) => {
            assert!(v["error"].is_null(), "{method}: {v}");
            Some(v["result"].clone())
        }
        Err(_) => None,
    }
}

#[test]
fn sigkill_at_random_points_leaves_nothing_behind() {
    if !libvirt_available() {
        return;
    }
    let _ = std::fs::remove_dir_all(STATE);
    // start from an empty pool: what an earlier, failed run left must not be counted as this run's leak
    for v in volumes_in(POOL) {
        crate::libvirt::virsh(&["vol-delete", "--pool", POOL, &v]);
    }
    let mut cfg = config_in(POOL, json!({}));
    cfg["driver"]["state_dir"] = json!(STATE);
    let cpi = Cpi::with_config(&cfg);
    let config = cpi.config.clone();
    let dir = tempfile::tempdir().unwrap();
    let image = openstack_image(dir.path());
    let base_sc = cpi.ok("create_stemcell", json!([image, {}])).as_str().unwrap().to_string();
    let mut rng = Rng::new();
    let n = trials();
    let (mut killed, mut finished) = (0, 0);
    for i in 0..n {
        // create_stemcell: ~0.3 s
        match call_killed(&config, "create_stemcell", json!([image, {}]), Duration::from_millis(rng.below(400))) {
            Some(sc) => {
                finished += 1;
                cpi.ok("delete_stemcell", json!([sc]));
            }
            None => killed += 1,
        }
        // create_vm: ~0.7 s
        match call_killed(
            &config,
            "create_vm",
            json!([format!("agent-{i}"), base_sc, {"ram": 64, "disk": 16}, {}, [], {}]),
            Duration::from_millis(rng.below(900)),
        ) {
            Some(r) => {
                finished += 1;
                cpi.ok("delete_vm", json!([r[0]]));
            }
            None => killed += 1,
        }
        // attach_disk: VM and disk were returned, so the director deletes both afterwards
        let vm = cpi.ok("create_vm", json!(["agent-attach", base_sc, {"ram": 64}, {}, [], {}]))[0].clone();
        let disk = cpi.ok("create_disk", json!([16, {}, vm])).clone();
        match call_killed(&config, "attach_disk", json!([vm, disk]), Duration::from_millis(rng.below(900))) {
            Some(_) => finished += 1,
            None => killed += 1,
        }
        cpi.ok("delete_vm", json!([vm]));
        cpi.ok("delete_disk", json!([disk]));
    }
    // the last clean-up call also reaps what the last killed create left; a tool the killed process had
    // started may still be finishing (it holds the marker until then), so later calls reap that
    cpi.ok("delete_stemcell", json!([base_sc]));
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_dir(Path::new(STATE).join("inflight")).map(|d| d.count()).unwrap_or(0) > 0
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(500));
        cpi.ok("delete_snapshot", json!(["snap-000000000000000"]));
    }
    eprintln!("fault injection: {} trials, {killed} killed mid-call, {finished} finished first", 3 * n);
    assert!(killed > 0, "no call was killed: the kill points are too late");
    assert_eq!(volumes_in(POOL), Vec::<String>::new(), "volumes left behind");
    assert_eq!(domains_using(POOL), Vec::<String>::new(), "domains left behind");
    let leftovers: Vec<_> = ["inflight", "work"]
        .iter()
        .flat_map(|d| std::fs::read_dir(Path::new(STATE).join(d)).into_iter().flatten().flatten().map(|e| e.path()))
        .collect();
    assert!(leftovers.is_empty(), "markers or scratch files left: {leftovers:?}");
}
