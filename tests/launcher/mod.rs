//! agent-launcher tests: the built binary against a fake Buildkite (Stacks API) and a scriptable fake CPI
//! (`fake_cpi.pl`), plus the real `vmcpi` on libvirt.
mod crash;
pub mod fake_bk;
mod fleet;
mod flow;
mod guest;
mod hardening;
mod libvirt;
mod listener;
mod outside;

use fake_bk::FakeBk;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const TOKEN: &str = "bkct_test_secret_token_1234";

pub fn launcher_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agent-launcher"))
}

pub fn fake_cpi_argv(state: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/launcher/fake_cpi.pl");
    format!("[\"/usr/bin/perl\", \"{}\", \"{}\"]", script.display(), state.display())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A test setup: a temp dir with the fake CPI's state, the ledger and the config.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub bk: FakeBk,
    pub port: u16,
    pub config: PathBuf,
}

impl Setup {
    pub fn cpi_dir(&self) -> PathBuf {
        self.dir.path().join("cpi")
    }

    /// Writes a config; `pools` is TOML for the `[[pool]]` tables ({CPI} is replaced by the fake CPI argv).
    pub fn new(globals: &str, pools: &str) -> Setup {
        // the fake CPI is a perl script (JSON::PP ships with Debian's `perl` package)
        let perl_ok = Command::new("/usr/bin/perl").args(["-MJSON::PP", "-e", "1"]).status().is_ok_and(|s| s.success());
        assert!(perl_ok, "the launcher tests need /usr/bin/perl with JSON::PP (Debian package perl) for the fake CPI");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("cpi")).unwrap();
        std::fs::create_dir_all(dir.path().join("cpi2")).unwrap();
        let bk = FakeBk::start(TOKEN);
        let port = free_port();
        // {CPI2}: a second fake CPI with its own state, standing for a second host
        let pools = pools
            .replace("{CPI}", &fake_cpi_argv(&dir.path().join("cpi")))
            .replace("{CPI2}", &fake_cpi_argv(&dir.path().join("cpi2")));
        let text = format!(
            r#"launcher_id = "test-launcher"
ledger_dir = "{ledger}"
listen = "127.0.0.1:{port}"
poll_interval_ms = 100
{globals}
[buildkite]
endpoint = "{url}"
token_env = "BK_TOKEN"
queue = "vm"
stack_key = "test-stack"
reservation_expiry_seconds = 2
timeout_ms = 1000
{pools}"#,
            ledger = dir.path().join("ledger").display(),
            url = bk.url,
        );
        let config = dir.path().join("launcher.toml");
        std::fs::write(&config, text).unwrap();
        Setup { dir, bk, port, config }
    }

    pub fn spawn(&self) -> Launcher {
        self.spawn_with(|_| {})
    }

    /// [`Setup::spawn`] with a last word on the command (a resource limit, say).
    pub fn spawn_with(&self, f: impl FnOnce(&mut Command)) -> Launcher {
        let log = self.dir.path().join("launcher.log");
        let err = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let mut cmd = Command::new(launcher_bin());
        cmd.args(["run", "--config"])
            .arg(&self.config)
            .env("BK_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::from(err));
        f(&mut cmd);
        Launcher { child: cmd.spawn().unwrap() }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("launcher.log")).unwrap_or_default()
    }

    pub fn script(&self, v: Value) {
        std::fs::write(self.cpi_dir().join("script.json"), v.to_string()).unwrap();
    }

    /// Lines of the fake CPI's call log.
    pub fn calls(&self) -> Vec<Vec<String>> {
        std::fs::read_to_string(self.cpi_dir().join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.split(' ').map(String::from).collect())
            .collect()
    }

    /// Successful create_vm calls per job.
    pub fn creates_by_job(&self) -> std::collections::BTreeMap<String, usize> {
        let mut m = std::collections::BTreeMap::new();
        for c in self.calls() {
            if c[0] == "create_vm" {
                *m.entry(c[2].clone()).or_insert(0) += 1;
            }
        }
        m
    }

    /// VMs the fake CPI still has: (cid, job).
    pub fn vms(&self) -> Vec<(String, String)> {
        self.vms_in(&self.cpi_dir())
    }

    /// VMs of the fake CPI whose state is in `dir`.
    pub fn vms_in(&self, dir: &Path) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir.join("vms")).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(cid) = name.strip_suffix(".json").filter(|n| !n.ends_with(".meta")) {
                let args: Value =
                    serde_json::from_str(&std::fs::read_to_string(e.path()).unwrap_or_default()).unwrap_or(Value::Null);
                out.push((cid.to_string(), args[5]["agent_launcher"]["job_id"].as_str().unwrap_or("").to_string()));
            }
        }
        out
    }

    pub fn http_get(&self, path: &str, bearer: Option<&str>) -> (u16, String) {
        http_get(self.port, path, bearer)
    }

    /// Plays the part of the VMs' agents: a job whose VM exists starts running, then passes after `run_ms`.
    pub fn agents(&self, run_ms: u64) -> Agents {
        self.agents_in(self.cpi_dir(), run_ms)
    }

    /// The same for the VMs of the fake CPI whose state is in `cpi` (a second host).
    pub fn agents_in(&self, cpi: PathBuf, run_ms: u64) -> Agents {
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, bk) = (stop.clone(), self.bk.clone());
        let handle = std::thread::spawn(move || {
            let mut started: std::collections::HashMap<String, Instant> = Default::default();
            while !s2.load(Ordering::SeqCst) {
                for e in std::fs::read_dir(cpi.join("vms")).into_iter().flatten().flatten() {
                    let name = e.file_name().to_string_lossy().to_string();
                    if !name.ends_with(".json") || name.ends_with(".meta.json") {
                        continue;
                    }
                    let Ok(text) = std::fs::read_to_string(e.path()) else {
                        continue;
                    };
                    let args: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    let job = args[5]["agent_launcher"]["job_id"].as_str().unwrap_or("").to_string();
                    let mut st = bk.st();
                    if let Some(j) = st.jobs.get_mut(&job) {
                        if j.state == "scheduled" {
                            j.state = "running".into();
                            started.insert(job.clone(), Instant::now());
                        }
                    }
                }
                {
                    let mut st = bk.st();
                    for (job, t) in &started {
                        if t.elapsed() > Duration::from_millis(run_ms) {
                            if let Some(j) = st.jobs.get_mut(job) {
                                if j.state == "running" {
                                    j.state = "passed".into();
                                }
                            }
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(30));
            }
        });
        Agents { stop, handle: Some(handle) }
    }
}

pub struct Agents {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Agents {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

pub fn http_get(port: u16, path: &str, bearer: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let auth = bearer.map(|b| format!("Authorization: Bearer {b}\r\n")).unwrap_or_default();
    // a listener that refuses the request (TLS on that port) may reset the connection before it is written
    if write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").is_err() {
        return (0, String::new());
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// A running launcher process; killed on drop.
pub struct Launcher {
    pub child: Child,
}

impl Launcher {
    pub fn signal(&self, sig: &str) {
        Command::new("/bin/kill").args(["-s", sig, &self.child.id().to_string()]).status().unwrap();
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let t = Instant::now();
        while t.elapsed() < within {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it is true, panicking with `what` (and the launcher log) after `secs`.
pub fn wait_for(secs: u64, what: &str, log: &dyn Fn() -> String, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out waiting for {what}\nlauncher log:\n{}", log());
}

pub const POOL: &str = r#"
[[pool]]
name = "linux"
tags = ["queue=vm", "os=linux"]
cpi = {CPI}
stemcell = { cid = "sc-fake" }
networks.default = { type = "dynamic", cloud_properties = { type = "user" } }
flavors.small = { cpu = 1, ram = 512 }
flavors.large = { cpu = 2, ram = 1024 }
limits = { max_vms = 4, max_concurrent_creates = 4 }
create_attempts = 2
boot_timeout_seconds = 30
"#;
