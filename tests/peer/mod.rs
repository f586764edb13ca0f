//! The test peers behind one trait: the real libvirt daemon, the vSphere simulator and the VMware test double.
//! A [`Peer`] says how to configure the CPI for it, how to make a stemcell image it imports, and what the CPI
//! left on it ([`Peer::leftovers`]); the suites in `tests/suites/` are written once against the trait and
//! run once per peer ([`peer_tests!`]).
use crate::util::{cpi_bin, Cpi};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

pub mod libvirt;
pub mod vmware;
pub mod vsphere;

/// One hypervisor (or its stand-in) the CPI drives, seen from a test.
pub trait Peer {
    /// `libvirt`, `vsphere` or `vmware`, for messages.
    fn name(&self) -> &'static str;
    /// The CPI config: the driver (with a state dir, store and scratch space of this peer's own) and the agent.
    fn config(&self) -> Value;
    /// The agent's mbus URL with `password` in it, in the form this peer's deployments use.
    fn mbus(&self, password: &str) -> String;
    /// Secrets of the peer's own that must never show (a vCenter password).
    fn secrets(&self) -> Vec<String> {
        Vec::new()
    }
    /// Writes a stemcell image this driver imports (a gzipped tar) into `dir`; returns its path.
    fn stemcell_image(&self, dir: &Path) -> String;
    /// cloud_properties of a small VM; `ephemeral` adds an ephemeral disk.
    fn vm_props(&self, ephemeral: bool) -> Value;
    /// create_vm arguments: `agent`, `stemcell`, `cloud_properties`, this peer's networks, no disks, an env.
    fn create_vm_args(&self, agent: &str, stemcell: &Value, cloud_properties: Value) -> Value;
    /// Size of a small persistent disk, MiB.
    fn disk_mib(&self) -> u64;
    /// A well-formed stemcell CID of this driver that names nothing.
    fn ghost_stemcell(&self) -> &'static str;
    /// What the CPI made that is there now (VMs, templates, volumes, VM folders, disk and stemcell files),
    /// sorted; state of the CPI's own (markers, scratch) is not listed here.
    fn objects(&self) -> Vec<String>;
    /// The VM CIDs there are, sorted.
    fn vms(&self) -> Vec<String>;
    /// The VM CIDs that are powered on, sorted.
    fn running(&self) -> Vec<String>;
    /// In-flight records of creates: the file, and the lock a live create holds.
    fn markers(&self) -> Vec<Marker>;
    /// Scratch files of creates (unpacked stemcells) on this machine.
    fn scratch(&self) -> Vec<PathBuf>;
    /// Anything else that must not be there once every object is deleted (a lock a dead process holds).
    fn other_leftovers(&self) -> Vec<String> {
        Vec::new()
    }
    /// Everything that must not be left once the director deleted what it was told about: objects,
    /// markers, scratch files and the rest.
    fn leftovers(&self) -> Vec<String> {
        let mut out = self.objects();
        out.extend(self.markers().iter().map(|m| format!("marker {}", m.path.display())));
        out.extend(self.scratch().iter().map(|p| format!("scratch {}", p.display())));
        out.extend(self.other_leftovers());
        out
    }
    /// The sigkill suite's trials per method when `VMCPI_KILL_TRIALS` is not set.
    fn kill_trials(&self) -> usize;
    /// How long to wait after a kill before the next call.
    fn settle_after_kill(&self) -> Duration {
        Duration::ZERO
    }
    /// Copies of `config` (whose agent section carries `secret`) that must fail, with `secret` also in a value
    /// an error message might echo.
    fn bad_configs(&self, config: &Value, secret: &str) -> Vec<Value>;
    /// The VM as the hypervisor keeps it (domain XML, .vmx, properties): names, titles, metadata.
    fn describe_vm(&self, vm: &str) -> String;
    /// The agent settings the CPI stored for `vm` (the settings medium's bytes, as text).
    fn agent_settings(&self, vm: &str) -> String;
    /// Files on this machine holding one of `canaries`, other than the settings medium the agent reads.
    fn files_with(&self, canaries: &[&str]) -> Vec<String>;
    /// Panics unless metadata `value`, just set on `vm` (under an odd key and as its name), is kept as data:
    /// escaped, no new key or element made of it.
    fn assert_metadata_kept(&self, vm: &str, value: &str);
    /// The directory around the CPI's own areas, and those areas: nothing outside them may change.
    fn sandbox(&self) -> Option<(PathBuf, Vec<PathBuf>)> {
        None
    }
    /// Makes `stemcell` fail to clone until the returned undo runs (VMware holds its lock).
    fn hold_stemcell(&self, stemcell: &str) -> Option<Box<dyn FnOnce()>> {
        let _ = stemcell;
        None
    }
    /// How many CPI processes the parallel suite runs at once.
    fn processes(&self) -> usize {
        16
    }
    /// What the lifecycle suite expects where the drivers differ by design.
    fn expected(&self) -> Expected;
    /// The stemcell image the lifecycle suite imports: [`Peer::stemcell_image`], or a richer one.
    fn lifecycle_stemcell(&self, dir: &Path) -> String {
        self.stemcell_image(dir)
    }
    /// The agent settings the CPI stored for `vm`, parsed.
    fn settings(&self, vm: &str) -> Value;
    /// The VM's CPUs, memory and NICs as the hypervisor has them.
    fn hardware(&self, vm: &str) -> Hardware;
    /// The checks at `step` of the lifecycle suite that only this peer can make (it may call `cpi`).
    fn check(&self, cpi: &Cpi, step: Step<'_>) {
        let _ = (cpi, step);
    }
}

/// What the lifecycle suite (`tests/suites/lifecycle.rs`) expects of a driver where drivers differ by design.
pub struct Expected {
    /// `info`'s stemcell_formats.
    pub formats: &'static [&'static str],
    /// The stemcell's name in create_stemcell (a family the driver imports).
    pub stemcell_name: &'static str,
    /// create_vm's networks: a manual network `default`, and any others the peer has.
    pub networks: Value,
    /// How every MAC the CPI gives a NIC starts.
    pub mac_prefix: &'static str,
    /// The step memory sizes are rounded up to, MiB.
    pub ram_step: u64,
    /// The system disk's hint in the agent settings.
    pub system_disk: Value,
    /// The first persistent disk's hint (attach_disk's answer and the agent settings' entry).
    pub first_disk: Value,
    /// Whether snapshot_disk makes snapshots (otherwise it answers NotImplemented).
    pub snapshots: bool,
    /// Whether resize_disk grows a detached disk (otherwise it answers NotSupported).
    pub grows_disks: bool,
}

/// A VM as the hypervisor has it.
#[derive(Debug)]
pub struct Hardware {
    pub cpus: u64,
    pub ram_mib: u64,
    /// The MACs of its NICs.
    pub macs: Vec<String>,
}

/// A point of the lifecycle suite at which a peer checks what only it can see ([`Peer::check`]).
pub enum Step<'a> {
    /// create_stemcell answered `stemcell`; `log` is its stderr.
    Stemcell { stemcell: &'a str, log: &'a str },
    /// create_vm made `vm` with `networks`; `settings` are the agent settings stored for it.
    Vm { vm: &'a str, networks: &'a Value, settings: &'a Value },
    /// set_vm_metadata set [`metadata`], then [`metadata_again`].
    Metadata { vm: &'a str },
    /// create_disk made `disk` of `mib`.
    Disk { disk: &'a str, mib: u64 },
    /// `disk` is attached to `vm`, which runs.
    Attached { vm: &'a str, disk: &'a str },
    /// set_disk_metadata set [`disk_metadata`] on `disk`.
    DiskMetadata { disk: &'a str },
    /// resize_disk grew the detached `disk` to `mib`.
    Grown { disk: &'a str, mib: u64 },
    /// A persistent disk is attached to `vm` again, just before delete_vm; `stemcell` is the VM's.
    BeforeDeleteVm { vm: &'a str, stemcell: &'a str },
    /// delete_vm left the persistent `disk` that was attached.
    VmDeleted { disk: &'a str },
    /// Everything was deleted.
    Done,
}

/// The lifecycle's set_vm_metadata: XML and YAML specials in a value, the name the VM's title takes.
pub fn metadata() -> Value {
    json!({"director": "d & <co>", "name": "zookeeper/0", "index": "0", "odd": "<&>\"'"})
}

/// The lifecycle's second set_vm_metadata: a new value for a key, a new key, the specials again (libvirt
/// replaces the tags, vSphere adds to its custom values).
pub fn metadata_again() -> Value {
    json!({"director": "again", "deployment": "dep", "odd": "<&>\"'"})
}

/// The lifecycle's set_disk_metadata.
pub fn disk_metadata() -> Value {
    json!({"director": "bosh-init", "instance_id": "x&y"})
}

/// One test per peer for a suite `$run: fn(&dyn Peer)`: `libvirt`, `vsphere`, `vmware`, so that a failure
/// names the suite (the module) and the peer.
macro_rules! peer_tests {
    ($run:ident) => {
        #[test]
        fn libvirt() {
            if let Some(p) = crate::peer::libvirt::Libvirt::new(module_path!()) {
                $run(&p)
            }
        }
        #[test]
        fn vsphere() {
            if let Some(p) = crate::peer::vsphere::Vsphere::new() {
                $run(&p)
            }
        }
        #[test]
        fn vmware() {
            $run(&crate::peer::vmware::Vmware::new())
        }
    };
}
pub(crate) use peer_tests;

/// An in-flight record: its file, and the file a live create holds locked (often the same).
pub struct Marker {
    pub path: PathBuf,
    pub lock: PathBuf,
}

impl Marker {
    /// Whether a process (or a tool it started) holds the lock now.
    pub fn held(&self) -> bool {
        std::fs::OpenOptions::new().write(true).open(&self.lock).is_ok_and(|f| f.try_lock().is_err())
    }

    /// Makes the record look `by` older (a grace period that has passed).
    pub fn age(&self, by: Duration) {
        let f = std::fs::OpenOptions::new().write(true).open(&self.path).unwrap();
        f.set_modified(SystemTime::now() - by).unwrap();
    }
}

/// Markers `<dir>/*.lock` of [`vmcpi::inflight`], each its own lock.
pub fn inflight_markers(dir: &Path) -> Vec<Marker> {
    files_below(dir).into_iter().map(|p| Marker { lock: p.clone(), path: p }).collect()
}

/// Every file below `dir` (recursively), sorted.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Names in a directory, sorted (none when it does not exist).
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Files below `dir` holding one of `canaries` in their name or bytes; the bytes of files named by `allowed`
/// (a name, or a pattern with one `*`) are not read.
pub fn files_with_canaries(dir: &Path, allowed: &[&str], canaries: &[&str]) -> Vec<String> {
    let allowed_name = |name: &str| {
        allowed.iter().any(|a| match a.split_once('*') {
            Some((pre, post)) => name.len() >= pre.len() + post.len() && name.starts_with(pre) && name.ends_with(post),
            None => name == *a,
        })
    };
    let mut out = Vec::new();
    for p in files_below(dir) {
        let path_text = p.display().to_string();
        out.extend(canaries.iter().filter(|c| path_text.contains(*c)).map(|_| format!("{path_text} (name)")));
        if allowed_name(&p.file_name().unwrap().to_string_lossy()) {
            continue;
        }
        let Ok(data) = nonzero_data(&p) else { continue };
        // (std's substring search is built optimised; the canaries are ASCII, which a lossy conversion keeps)
        let text = String::from_utf8_lossy(&data);
        out.extend(canaries.iter().filter(|c| text.contains(*c)).map(|c| format!("{path_text}: {c}")));
    }
    out
}

/// The bytes of a file without its runs of zeros (disk images of up to a GiB are mostly zeros; a canary is
/// not). Comparing a block with zeros is a `memcmp`, fast in a debug build, where a substring search over a
/// whole disk image takes seconds.
fn nonzero_data(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    const BLOCK: usize = 64 << 10;
    let zeros = vec![0u8; BLOCK];
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; BLOCK];
    let mut out = Vec::new();
    loop {
        let mut n = 0;
        while n < BLOCK {
            match f.read(&mut buf[n..])? {
                0 => break,
                k => n += k,
            }
        }
        if n == 0 {
            return Ok(out);
        }
        if buf[..n] == zeros[..n] {
            // a separator: what stood on either side was not adjacent
            if out.last() != Some(&0) {
                out.push(0);
            }
        } else {
            out.extend_from_slice(&buf[..n]);
        }
    }
}

/// Trials per method of the sigkill suite: `VMCPI_KILL_TRIALS`, else the peer's default.
pub fn trials(default: usize) -> usize {
    std::env::var("VMCPI_KILL_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A small xorshift generator: kill points differ per trial and per run.
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Self {
        Rng(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Runs one call like the director does and SIGKILLs it after `after`, then waits `settle`. Ok(result) when it
/// answered first (it may finish between the last look and the kill: then its answer counts), Err(its log)
/// otherwise.
pub fn call_killed(
    config: &Path,
    method: &str,
    args: Value,
    after: Duration,
    settle: Duration,
) -> Result<Value, String> {
    let req = json!({"method": method, "arguments": args, "context": {}, "api_version": 2}).to_string();
    let mut cmd = Command::new(cpi_bin());
    cmd.arg("--config").arg(config);
    crate::util::cpi_env(&mut cmd, config);
    if let Ok(t) = std::env::var("TMPDIR") {
        cmd.env("TMPDIR", t);
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(req.as_bytes()).unwrap();
    let deadline = Instant::now() + after;
    while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let killed = child.kill().is_ok();
    let out = child.wait_with_output().unwrap();
    if killed {
        std::thread::sleep(settle);
    }
    match serde_json::from_slice::<Value>(&out.stdout) {
        Ok(v) => {
            assert!(v["error"].is_null(), "{method}: {v}");
            Ok(v["result"].clone())
        }
        Err(_) => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// Runs one call with the kill point `step` set ([`vmcpi::killpoint`], `VMCPI_TEST_KILL_AT`): Err(its log)
/// when the process died there by SIGKILL, Ok(result) when it answered (it never reached the step).
pub fn call_killed_at(config: &Path, method: &str, args: Value, step: &str) -> Result<Value, String> {
    use std::os::unix::process::ExitStatusExt;
    let req = json!({"method": method, "arguments": args, "context": {}, "api_version": 2}).to_string();
    let mut cmd = Command::new(cpi_bin());
    cmd.arg("--config").arg(config);
    crate::util::cpi_env(&mut cmd, config);
    cmd.env(vmcpi::killpoint::ENV, step);
    if let Ok(t) = std::env::var("TMPDIR") {
        cmd.env("TMPDIR", t);
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(req.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    match out.status.signal() {
        Some(libc::SIGKILL) => Err(log),
        Some(s) => panic!("{method} died of signal {s} (not the kill point {step}):\n{log}"),
        None => {
            let v: Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("{method}: no JSON response ({e}):\n{log}"));
            assert!(v["error"].is_null(), "{method}: {v}");
            Ok(v["result"].clone())
        }
    }
}

/// Times one uninterrupted call.
pub fn timed(cpi: &Cpi, method: &str, args: Value) -> (Value, u64) {
    let t = Instant::now();
    let r = cpi.ok(method, args);
    (r, t.elapsed().as_millis() as u64)
}

/// The CIDs that killed calls had completed when they died: the driver logs the moment just before its
/// in-flight record goes and the response becomes the only record of the object (whenever the record may be
/// gone, the line is there; a CID killed between the two is also reaped, so its delete may find nothing).
pub fn created_but_unanswered(logs: &[String]) -> Vec<String> {
    const CREATED: &str = ": created; from here the response is the only record of it";
    logs.iter()
        .flat_map(|l| l.lines())
        .filter_map(|l| l.find(CREATED).map(|i| l[..i].rsplit(' ').next().unwrap_or_default().to_string()))
        .collect()
}

/// The director's delete for a CID.
pub fn delete_method(cid: &str) -> &'static str {
    match cid.split('-').next() {
        Some("sc") => "delete_stemcell",
        Some("disk") => "delete_disk",
        Some("snap") => "delete_snapshot",
        _ => "delete_vm",
    }
}

/// The logs (of killed calls) that name the CID in each of `leftovers`.
pub fn logs_naming(leftovers: &[String], logs: &[String]) -> Vec<String> {
    leftovers
        .iter()
        .filter_map(|n| {
            let last = n.rsplit(['/', ' ']).next()?;
            let cid = last.split('.').next()?.split('-').take(2).collect::<Vec<_>>().join("-");
            (cid.len() > 8).then_some(cid)
        })
        .flat_map(|cid| logs.iter().filter(move |l| l.contains(&cid)).cloned())
        .collect()
}

/// The end of every suite: waits until no tool of a killed call holds a marker, lets a create reap what
/// dead processes left, deletes the stemcell, and checks that nothing is left, markers included once their
/// grace period (vSphere keeps the marker of a create that left nothing yet for ten minutes) has passed.
pub fn finish(peer: &dyn Peer, cpi: &Cpi, stemcell: &Value, logs: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        // looked at before the reaping create: when none was held, that create saw every marker free
        let held = peer.markers().iter().any(Marker::held);
        let vm = cpi.ok("create_vm", peer.create_vm_args("agent-reaper", stemcell, peer.vm_props(false)))[0].clone();
        cpi.ok("delete_vm", json!([vm]));
        if !held || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    cpi.ok("delete_stemcell", json!([stemcell]));
    let mut left = peer.objects();
    left.extend(peer.scratch().iter().map(|p| format!("scratch {}", p.display())));
    left.extend(peer.other_leftovers());
    assert!(
        left.is_empty(),
        "{}: left behind: {left:?}\nlogs of killed calls naming them: {:#?}",
        peer.name(),
        logs_naming(&left, logs)
    );
    let markers = peer.markers();
    for m in &markers {
        assert!(!m.held(), "{}: {} is still locked", peer.name(), m.lock.display());
        m.age(Duration::from_secs(660));
    }
    if !markers.is_empty() {
        eprintln!(
            "{}: {} unlocked markers of creates that left nothing, past their grace period",
            peer.name(),
            markers.len()
        );
        let d = cpi.ok("create_disk", json!([peer.disk_mib(), {}, null]));
        cpi.ok("delete_disk", json!([d]));
    }
    assert_eq!(peer.leftovers(), Vec::<String>::new(), "{}: left behind", peer.name());
}
