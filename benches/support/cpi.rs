//! Running the CPI as a director does, shared by the benchmarks that measure it (libvirt, vmrun, vsphere,
//! vsphere_official): one process per call, a JSON request on stdin, the JSON response on stdout, the
//! environment cleared but for a minimal PATH. The binary is this build's `vmcpi`, or `$VMCPI_BIN` (another
//! build: tools/bench-report.sh measures the static release binary, as shipped; or an older commit's).
#![allow(dead_code)]
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The CPI binary measured: `$VMCPI_BIN`, else this build's `vmcpi`.
pub fn vmcpi_bin() -> PathBuf {
    std::env::var_os("VMCPI_BIN").map(PathBuf::from).unwrap_or_else(|| env!("CARGO_BIN_EXE_vmcpi").into())
}

/// `bin --config config` in the environment a director gives a CPI.
pub fn vmcpi(bin: &Path, config: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--config").arg(config).env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    cmd
}

/// One call's request (API v2) as a director sends it.
pub fn request(method: &str, args: Value) -> Vec<u8> {
    json!({"method": method, "arguments": args, "context": {"director_uuid": "bench", "request_id": "bench"}, "api_version": 2})
        .to_string()
        .into_bytes()
}

/// What one CPI process did.
pub struct Outcome {
    /// Whether stdout was a JSON response.
    pub answered: bool,
    pub result: Value,
    /// The BOSH error object, null when the call succeeded.
    pub error: Value,
    pub stderr: String,
    /// The exit status (None when killed by a signal).
    pub status: Option<i32>,
    /// Wall time: of the whole process ([`run`]), or from the request on ([`run_sampled`]).
    pub wall: Duration,
    /// Peak resident set of the process, KiB ([`run_sampled`]; 0 from [`run`]).
    pub peak_rss_kib: u64,
}

impl Outcome {
    /// The result; panics with the error (or the missing response) and the log otherwise.
    pub fn ok(self, method: &str) -> Value {
        assert!(self.answered, "{method}: no JSON response (exit {:?}):\n{}", self.status, self.stderr);
        assert!(self.error.is_null(), "{method} failed: {}\n{}", self.error, self.stderr);
        self.result
    }

    fn new(stdout: &[u8], stderr: &[u8], status: Option<i32>, wall: Duration, peak_rss_kib: u64) -> Outcome {
        let response = serde_json::from_slice::<Value>(stdout).ok().filter(Value::is_object);
        let answered = response.is_some();
        let response = response.unwrap_or_default();
        Outcome {
            answered,
            result: response["result"].clone(),
            error: response["error"].clone(),
            stderr: String::from_utf8_lossy(stderr).into_owned(),
            status,
            wall,
            peak_rss_kib,
        }
    }
}

/// One call of [`vmcpi_bin`] with `config`, timed as a whole process.
pub fn call(config: &Path, method: &str, args: Value) -> Outcome {
    run(vmcpi(&vmcpi_bin(), config), &request(method, args))
}

/// One call of [`vmcpi_bin`] with `config`, its peak RSS sampled ([`run_sampled`]).
pub fn call_sampled(config: &Path, method: &str, args: Value) -> Outcome {
    run_sampled(vmcpi(&vmcpi_bin(), config), &request(method, args))
}

fn spawn(mut cmd: Command) -> Child {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", cmd.get_program().to_string_lossy()))
}

/// Runs `cmd` (a CPI) with `request` on stdin; the wall time is the whole process's, from spawn to exit.
pub fn run(cmd: Command, request: &[u8]) -> Outcome {
    let started = Instant::now();
    let mut child = spawn(cmd);
    // (a CPI that fails early may not read it all)
    let _ = child.stdin.take().unwrap().write_all(request);
    let out = child.wait_with_output().unwrap();
    Outcome::new(&out.stdout, &out.stderr, out.status.code(), started.elapsed(), 0)
}

/// Like [`run`], and samples the process's peak RSS (`VmHWM`) every 5 ms; the wall time is from the request
/// on (a benchmark measures the process start apart).
pub fn run_sampled(cmd: Command, request: &[u8]) -> Outcome {
    let mut child = spawn(cmd);
    let pid = child.id();
    // a short call can exit before the first sample: sample once while it waits for its request
    std::thread::sleep(Duration::from_millis(20));
    let mut hwm = vm_hwm(pid);
    let started = Instant::now();
    let _ = child.stdin.take().unwrap().write_all(request);
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        hwm = hwm.max(vm_hwm(pid));
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let wall = started.elapsed();
    Outcome::new(&stdout.join().unwrap(), &stderr.join().unwrap(), status.code(), wall, hwm)
}

/// Peak resident set (VmHWM) of a live process, in KiB (0 once it is gone).
pub fn vm_hwm(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
